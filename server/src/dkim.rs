//! DKIM signatures (RFC 6376) on the raw bytes of outgoing notifications.
//!
//! Notifications are written by `proto` as complete emails, so they are signed
//! as bytes: relaxed/relaxed canonicalization, `rsa-sha256` for RSA keys (what
//! every receiver verifies) or `ed25519-sha256` (RFC 8463) for Ed25519 keys.
//! Besides the usual headers the signature covers the `X-Sealpost-*` fields,
//! and `From` is signed once more than it occurs so no second From can be
//! added in transit without breaking the signature.

use data_encoding::BASE64;
use ed25519_dalek::Signer;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest, Sha256};

use crate::settings::DkimSettings;

/// Headers signed when present, in this order.
const SIGNED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "reply-to",
    "mime-version",
    "content-type",
    "list-unsubscribe",
    "x-sealpost-version",
    "x-sealpost-message-id",
    "x-sealpost-origin",
    "x-sealpost-recipient",
    "x-sealpost-content-sha256",
    "x-sealpost-key-id",
    "x-sealpost-signature",
];

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("dkim.private_key_file {path}: {problem}")]
    Key { path: String, problem: String },
}

pub struct DkimSigner {
    domain: String,
    selector: String,
    key: SigningKey,
}

// One key per server: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum SigningKey {
    Rsa(RsaPrivateKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl DkimSigner {
    /// The signer the settings describe, or `None` when DKIM is not configured.
    pub fn from_settings(settings: &DkimSettings) -> Result<Option<Self>, DkimError> {
        let (Some(domain), Some(selector), Some(path)) =
            (&settings.domain, &settings.selector, &settings.private_key_file)
        else {
            return Ok(None);
        };
        let key_error =
            |problem: String| DkimError::Key { path: path.display().to_string(), problem };
        let pem = std::fs::read_to_string(path).map_err(|error| key_error(error.to_string()))?;
        let key = parse_key(&pem).ok_or_else(|| {
            key_error(
                "not an RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8) private key in PEM form".into(),
            )
        })?;
        if let SigningKey::Rsa(rsa) = &key
            && rsa::traits::PublicKeyParts::size(rsa) < 128
        {
            return Err(key_error(
                "RSA keys shorter than 1024 bits are refused by receivers".into(),
            ));
        }
        Ok(Some(Self { domain: domain.to_lowercase(), selector: selector.clone(), key }))
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The DNS TXT record receivers look up, as `(name, value)`.
    pub fn dns_record(&self) -> (String, String) {
        let (kind, public) = match &self.key {
            SigningKey::Rsa(key) => (
                "rsa",
                key.to_public_key()
                    .to_public_key_der()
                    .map(|der| BASE64.encode(der.as_bytes()))
                    .unwrap_or_default(),
            ),
            SigningKey::Ed25519(key) => ("ed25519", BASE64.encode(key.verifying_key().as_bytes())),
        };
        (
            format!("{}._domainkey.{}", self.selector, self.domain),
            format!("v=DKIM1; k={kind}; p={public}"),
        )
    }

    /// `email` with a `DKIM-Signature` header field in front. `email` must use
    /// CRLF line endings, as everything `proto` writes does.
    pub fn sign(&self, email: &[u8], timestamp: i64) -> Vec<u8> {
        let (header, body) = crate::header_fields::split_message(email);
        let fields = header_fields(header);
        let body_hash = BASE64.encode(&Sha256::digest(canonical_body(body)));

        let mut signed_names = Vec::new();
        let mut signed = Vec::new();
        for name in SIGNED_HEADERS {
            // Occurrences are signed from the bottom up (RFC 6376 §5.4.2).
            for field in fields.iter().rev().filter(|f| f.name.eq_ignore_ascii_case(name)) {
                signed.extend_from_slice(canonical_header(field.raw).as_bytes());
                signed_names.push(*name);
            }
        }
        // One more "from" than there are From fields: adding one breaks the signature.
        signed_names.push("from");

        let algorithm = match self.key {
            SigningKey::Rsa(_) => "rsa-sha256",
            SigningKey::Ed25519(_) => "ed25519-sha256",
        };
        let unsigned = format!(
            "DKIM-Signature: v=1; a={algorithm}; c=relaxed/relaxed; d={}; s={};\r\n\tt={timestamp}; h={};\r\n\tbh={body_hash};\r\n\tb=",
            self.domain,
            self.selector,
            signed_names.join(":"),
        );
        // The signature header itself is hashed with an empty b= and no final CRLF.
        signed.extend_from_slice(canonical_header(&unsigned).trim_end_matches("\r\n").as_bytes());
        let digest = Sha256::digest(&signed);
        let signature = match &self.key {
            SigningKey::Rsa(key) => key.sign(Pkcs1v15Sign::new::<Sha256>(), &digest).expect(
                "a PKCS#1 v1.5 signature of a SHA-256 digest fits any key of 1024 bits or more",
            ),
            SigningKey::Ed25519(key) => key.sign(&digest).to_bytes().to_vec(),
        };
        let mut out = Vec::with_capacity(email.len() + unsigned.len() + 400);
        out.extend_from_slice(unsigned.as_bytes());
        out.extend_from_slice(fold_base64(&BASE64.encode(&signature)).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(email);
        out
    }
}

fn parse_key(pem: &str) -> Option<SigningKey> {
    if let Ok(key) = RsaPrivateKey::from_pkcs8_pem(pem) {
        return Some(SigningKey::Rsa(key));
    }
    if let Ok(key) = RsaPrivateKey::from_pkcs1_pem(pem) {
        return Some(SigningKey::Rsa(key));
    }
    ed25519_dalek::SigningKey::from_pkcs8_pem(pem).ok().map(SigningKey::Ed25519)
}

/// A header field as signed: its whole text.
struct Field<'a> {
    name: &'a str,
    raw: &'a str,
}

/// The header's fields. Header fields are ASCII in everything Sealpost
/// writes; a field that is not UTF-8 is left unsigned rather than guessed at.
fn header_fields(header: &[u8]) -> Vec<Field<'_>> {
    crate::header_fields::header_fields(header)
        .into_iter()
        .filter_map(|field| {
            Some(Field { name: field.name, raw: std::str::from_utf8(field.raw).ok()? })
        })
        .collect()
}

/// Relaxed header canonicalization (RFC 6376 §3.4.2).
fn canonical_header(raw: &str) -> String {
    let (name, value) = raw.split_once(':').unwrap_or((raw, ""));
    let unfolded = value.replace("\r\n", "");
    let mut collapsed = String::with_capacity(unfolded.len());
    let mut in_space = false;
    for character in unfolded.chars() {
        if character == ' ' || character == '\t' {
            in_space = true;
        } else {
            if in_space && !collapsed.is_empty() {
                collapsed.push(' ');
            }
            in_space = false;
            collapsed.push(character);
        }
    }
    format!("{}:{collapsed}\r\n", name.trim().to_ascii_lowercase())
}

/// Relaxed body canonicalization (RFC 6376 §3.4.4).
fn canonical_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut in_space = false;
        let mut canonical = Vec::with_capacity(line.len());
        for &byte in line {
            if byte == b' ' || byte == b'\t' {
                in_space = true;
            } else {
                if in_space {
                    canonical.push(b' ');
                }
                in_space = false;
                canonical.push(byte);
            }
        }
        out.extend_from_slice(&canonical);
        out.extend_from_slice(b"\r\n");
    }
    // The split above adds one line after a final CRLF; then drop every
    // trailing empty line. An empty body canonicalizes to nothing.
    while out.ends_with(b"\r\n") && (out.len() == 2 || out.ends_with(b"\r\n\r\n")) {
        out.truncate(out.len() - 2);
    }
    out
}

/// Long signatures on several lines, so no header line exceeds 78 characters.
fn fold_base64(signature: &str) -> String {
    let mut folded = String::with_capacity(signature.len() + signature.len() / 70 * 3);
    for (index, chunk) in signature.as_bytes().chunks(70).enumerate() {
        if index > 0 {
            folded.push_str("\r\n\t");
        }
        folded.push_str(std::str::from_utf8(chunk).unwrap_or_default());
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_canonicalization_follows_the_rfc_examples() {
        // RFC 6376 §3.4.6.
        assert_eq!(canonical_header("A: X\r\n"), "a:X\r\n");
        assert_eq!(canonical_header("B : Y\t\r\n\tZ  \r\n"), "b:Y Z\r\n");
        assert_eq!(canonical_body(b" C \r\nD \t E\r\n\r\n\r\n"), b" C\r\nD E\r\n");
        assert_eq!(canonical_body(b""), b"");
        assert_eq!(canonical_body(b"\r\n\r\n"), b"");
        assert_eq!(canonical_body(b"no final newline"), b"no final newline\r\n");
    }

    #[test]
    fn an_ed25519_signature_verifies_against_its_own_canonical_form() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let signer = DkimSigner {
            domain: "clinic.example".into(),
            selector: "s1".into(),
            key: SigningKey::Ed25519(key),
        };
        let email = b"From: a@clinic.example\r\nTo: b@x.example\r\nSubject: hi\r\n\r\nbody\r\n";
        let signed = signer.sign(email, 1_800_000_000);
        let text = String::from_utf8(signed.clone()).expect("ASCII");
        assert!(text.starts_with(
            "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=clinic.example; s=s1;"
        ));
        assert!(text.contains("h=from:to:subject:from;"));
        assert!(signed.ends_with(email));
        assert_eq!(signer.dns_record().0, "s1._domainkey.clinic.example");
    }
}
