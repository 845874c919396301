//! The notification email, format version 1 (specified in `NOTIFICATION.md`).
//!
//! The server signs four fields (message id, origin, recipient, content
//! digest) with Ed25519 and writes them as `X-Sealpost-*` header fields next to
//! a placeholder body. The agent parses those fields back out of a raw email,
//! tolerating what mail servers do to headers on the way, and verifies them
//! against the keys it pinned from `/.well-known/sealpost`.

use std::collections::HashMap;

use data_encoding::BASE64URL_NOPAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use mail_parser::{HeaderName, MessageParser};

use crate::api::{HeaderField, IssuedNotification, WellKnown};
use crate::{ContentDigest, KeyId, MessageId};

/// The version written in `X-Sealpost-Version`.
pub const FORMAT_VERSION: u32 = 1;

pub const HEADER_VERSION: &str = "X-Sealpost-Version";
pub const HEADER_MESSAGE_ID: &str = "X-Sealpost-Message-Id";
pub const HEADER_ORIGIN: &str = "X-Sealpost-Origin";
pub const HEADER_RECIPIENT: &str = "X-Sealpost-Recipient";
pub const HEADER_CONTENT_SHA256: &str = "X-Sealpost-Content-SHA256";
pub const HEADER_KEY_ID: &str = "X-Sealpost-Key-Id";
pub const HEADER_SIGNATURE: &str = "X-Sealpost-Signature";

/// Every notification header field name, in the order they are written.
pub const HEADERS: [&str; 7] = [
    HEADER_VERSION,
    HEADER_MESSAGE_ID,
    HEADER_ORIGIN,
    HEADER_RECIPIENT,
    HEADER_CONTENT_SHA256,
    HEADER_KEY_ID,
    HEADER_SIGNATURE,
];

/// Separates the signed bytes of a notification from any other use of the key.
const SIGNING_CONTEXT: &str = "sealpost-notification";

/// The fields a notification asserts, before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub message_id: MessageId,
    /// `https://host[:port]`, normalised by [`normalize_origin`].
    pub origin: String,
    /// The address this notification was issued for, normalised by [`normalize_address`].
    pub recipient: String,
    pub content_sha256: ContentDigest,
}

/// A notification with its key id and Ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNotification {
    pub version: u32,
    pub fields: Notification,
    pub key_id: KeyId,
    pub signature: [u8; 64],
}

/// Signs notifications with the server's active key.
#[derive(Clone)]
pub struct NotificationSigner {
    key: SigningKey,
    key_id: KeyId,
}

impl NotificationSigner {
    pub fn new(key: SigningKey) -> Self {
        let key_id = KeyId::for_public_key(&key.verifying_key());
        Self { key, key_id }
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn sign(&self, fields: Notification) -> SignedNotification {
        let signed_bytes = canonical_bytes(FORMAT_VERSION, &fields, &self.key_id);
        let signature = self.key.sign(&signed_bytes).to_bytes();
        SignedNotification {
            version: FORMAT_VERSION,
            fields,
            key_id: self.key_id.clone(),
            signature,
        }
    }
}

/// The exact bytes the signature covers: one `name:value` line per field, in
/// a fixed order, after a context line. Values are already normalised, and
/// none can contain a newline, so the encoding is unambiguous.
fn canonical_bytes(version: u32, fields: &Notification, key_id: &KeyId) -> Vec<u8> {
    format!(
        "{SIGNING_CONTEXT}\nversion:{version}\nmessage-id:{}\norigin:{}\nrecipient:{}\ncontent-sha256:{}\nkey-id:{}\n",
        fields.message_id,
        fields.origin,
        fields.recipient,
        fields.content_sha256.to_hex(),
        key_id,
    )
    .into_bytes()
}

/// Base64url (no padding) of a public key, as published in `/.well-known/sealpost`.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    BASE64URL_NOPAD.encode(key.as_bytes())
}

/// The organization's wording around every placeholder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Branding {
    pub organization_name: String,
    /// e.g. "Sent by ABC Medical, 123 ABC Street, Beverly Hills, CA 90210, call (555) 555-7323".
    pub footer: String,
    pub legal_disclaimer: String,
    pub secure_message_disclaimer: String,
}

/// What the placeholder body says about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder<'a> {
    pub sender_name: Option<&'a str>,
    pub sender_address: &'a str,
    /// Where the recipient reads the message in the Secure Message Center.
    pub read_url: &'a str,
    pub branding: &'a Branding,
}

impl SignedNotification {
    /// The `X-Sealpost-*` header fields, in the order the spec lists them.
    pub fn header_fields(&self) -> Vec<HeaderField> {
        let values = [
            self.version.to_string(),
            self.fields.message_id.to_string(),
            self.fields.origin.clone(),
            self.fields.recipient.clone(),
            self.fields.content_sha256.to_hex(),
            self.key_id.to_string(),
            BASE64URL_NOPAD.encode(&self.signature),
        ];
        HEADERS
            .iter()
            .zip(values)
            .map(|(name, value)| HeaderField { name: (*name).to_owned(), value })
            .collect()
    }

    /// Checks this notification against the server the caller trusts and the
    /// address the caller reads mail for.
    ///
    /// The checks run in a fixed order so the error names the first thing
    /// that is wrong: origin, key, signature, then recipient.
    pub fn verify(&self, trusted: &TrustedServer, recipient: &str) -> Result<(), VerifyError> {
        if self.fields.origin != trusted.origin {
            return Err(VerifyError::WrongOrigin {
                expected: trusted.origin.clone(),
                found: self.fields.origin.clone(),
            });
        }
        let key = trusted
            .keys
            .get(&self.key_id)
            .ok_or_else(|| VerifyError::UnknownKey(self.key_id.clone()))?;
        let signed_bytes = canonical_bytes(self.version, &self.fields, &self.key_id);
        // `verify_strict` rejects small-order keys and non-canonical
        // signatures, so one notification has exactly one valid signature.
        key.verify_strict(&signed_bytes, &Signature::from_bytes(&self.signature))
            .map_err(|_| VerifyError::BadSignature)?;
        let expected =
            normalize_address(recipient).unwrap_or_else(|| recipient.trim().to_lowercase());
        if self.fields.recipient != expected {
            return Err(VerifyError::WrongRecipient {
                expected,
                found: self.fields.recipient.clone(),
            });
        }
        Ok(())
    }
}

/// Builds what the sender needs to mail one recipient: headers and placeholder bodies.
///
/// The subject, addresses and threading headers stay the sender's own; only
/// the body is the placeholder, and it carries no advertising.
pub fn issue(signed: &SignedNotification, placeholder: &Placeholder<'_>) -> IssuedNotification {
    IssuedNotification {
        recipient: signed.fields.recipient.clone(),
        headers: signed.header_fields(),
        text_body: placeholder_text(placeholder),
        html_body: placeholder_html(placeholder),
    }
}

fn sender_line(placeholder: &Placeholder<'_>) -> String {
    match placeholder.sender_name.map(str::trim).filter(|name| !name.is_empty()) {
        Some(name) => format!("{name} <{}>", placeholder.sender_address),
        None => placeholder.sender_address.to_owned(),
    }
}

/// The organization's paragraphs under the link, skipping the empty ones.
fn branding_paragraphs(branding: &Branding) -> Vec<&str> {
    [&branding.secure_message_disclaimer, &branding.footer, &branding.legal_disclaimer]
        .into_iter()
        .map(|text| text.trim())
        .filter(|text| !text.is_empty())
        .collect()
}

fn placeholder_text(placeholder: &Placeholder<'_>) -> String {
    let mut text = format!(
        "{} sent you a secure message.\r\n\r\nRead it in the Secure Message Center:\r\n{}\r\n",
        sender_line(placeholder),
        placeholder.read_url,
    );
    for paragraph in branding_paragraphs(placeholder.branding) {
        text.push_str("\r\n");
        text.push_str(&paragraph.replace('\n', "\r\n"));
        text.push_str("\r\n");
    }
    text
}

fn placeholder_html(placeholder: &Placeholder<'_>) -> String {
    let url = escape_html(placeholder.read_url);
    let mut html = format!(
        "<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\"></head>\
         <body style=\"font-family:sans-serif;line-height:1.5\">\r\n\
         <p>{} sent you a secure message.</p>\r\n\
         <p><a href=\"{url}\">Read it in the Secure Message Center</a></p>\r\n",
        escape_html(&sender_line(placeholder)),
    );
    for paragraph in branding_paragraphs(placeholder.branding) {
        html.push_str("<p style=\"color:#555;font-size:small\">");
        html.push_str(&escape_html(paragraph).replace('\n', "<br>"));
        html.push_str("</p>\r\n");
    }
    html.push_str("</body></html>\r\n");
    html
}

fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The sender's side of a notification email: who, to whom, the subject and
/// threading headers, all kept as the sender wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailEnvelope {
    /// Display name and address.
    pub from: (Option<String>, String),
    pub to: Vec<(Option<String>, String)>,
    pub cc: Vec<(Option<String>, String)>,
    pub subject: String,
    /// Seconds since the Unix epoch.
    pub date: i64,
    /// With or without angle brackets.
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
}

/// The headers of a sender's message that its notifications repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderHeaders {
    /// The display name on the message's From, if it names the sender's own address.
    pub from_name: Option<String>,
    pub to: Vec<(Option<String>, String)>,
    pub cc: Vec<(Option<String>, String)>,
    pub subject: Option<String>,
    /// Seconds since the Unix epoch.
    pub date: Option<i64>,
    /// Without angle brackets, as are the threading ids.
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
}

impl SenderHeaders {
    /// Reads them from the start of a raw message; what is missing or
    /// unreadable stays empty. A From naming another address than
    /// `sender_email` lends no display name.
    pub fn parse(head: &[u8], sender_email: &str) -> Self {
        let Some(message) = MessageParser::default().parse_headers(head) else {
            return Self::default();
        };
        let from_name = message
            .from()
            .and_then(mail_parser::Address::first)
            .filter(|from| from.address().is_some_and(|a| a.eq_ignore_ascii_case(sender_email)))
            .and_then(|from| from.name())
            .map(printable);
        // An id with control characters in it is no id anyone can name, and
        // one longer than a header line is no id at all.
        let id = |id: &str| {
            (!id.contains(char::is_control) && id.len() <= MAX_ID_BYTES).then(|| id.to_owned())
        };
        let ids = |value: &mail_parser::HeaderValue<'_>| -> Vec<String> {
            value
                .as_text_list()
                .map(|ids| ids.iter().filter_map(|text| id(text)).collect())
                .unwrap_or_default()
        };
        // Every notification repeats these, once per recipient: a message
        // listing thousands of people or ids must not make each of them a
        // message of hundreds of kilobytes.
        let mut to = address_pairs(message.to());
        to.truncate(MAX_LISTED_ADDRESSES);
        let mut cc = address_pairs(message.cc());
        cc.truncate(MAX_LISTED_ADDRESSES - to.len());
        let mut references = ids(message.references());
        if references.len() > MAX_REFERENCES {
            // The root and the newest ids are the ones threading uses.
            references.drain(1..=references.len() - MAX_REFERENCES);
        }
        Self {
            from_name: from_name.map(|name| truncated(name, MAX_NAME_CHARS)),
            to,
            cc,
            subject: message
                .subject()
                .map(|subject| truncated(printable(subject), MAX_SUBJECT_CHARS)),
            date: message.date().map(mail_parser::DateTime::to_timestamp),
            message_id: message.message_id().and_then(id),
            in_reply_to: ids(message.in_reply_to()).pop(),
            references,
        }
    }
}

/// How many To and Cc addresses (together) a notification repeats: as many
/// as one message may have recipients.
pub const MAX_LISTED_ADDRESSES: usize = 500;
/// How many References a notification repeats: the root and the newest.
pub const MAX_REFERENCES: usize = 20;
/// The longest subject a notification repeats, in characters.
pub const MAX_SUBJECT_CHARS: usize = 1000;
const MAX_NAME_CHARS: usize = 200;
/// The longest message id kept: a header line's length.
const MAX_ID_BYTES: usize = 998;

/// `text` cut to at most `max` characters.
fn truncated(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_owned(),
        None => text,
    }
}

/// `text` with each control character (a NUL or a line break decoded from
/// an encoded word, say) as a space: it goes into headers and lists, and
/// databases refuse some of them.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// (display name, address) of each address in a header. Names are made
/// [`printable`]; an address with a control character in it is no address
/// anyone can be mailed at, and is left out.
pub fn address_pairs(list: Option<&mail_parser::Address<'_>>) -> Vec<(Option<String>, String)> {
    list.map(|list| {
        list.iter()
            .filter_map(|addr| {
                let address = addr.address().filter(|a| !a.contains(char::is_control))?;
                Some((addr.name().map(printable), address.to_owned()))
            })
            .collect()
    })
    .unwrap_or_default()
}

impl EmailEnvelope {
    /// The envelope of every notification of one message: From is always
    /// `sender_email` (with the message's display name for it, else
    /// `account_name`), To, Cc, Subject and threading as the sender wrote
    /// them. `fallback_message_id` serves a message without one.
    pub fn of_message(
        headers: &SenderHeaders,
        sender_email: &str,
        account_name: Option<&str>,
        recipients: &[String],
        date: i64,
        fallback_message_id: String,
    ) -> Self {
        let from_name = headers.from_name.clone().or_else(|| account_name.map(str::to_owned));
        // Without To or Cc in the message, every recipient is named openly: the
        // sender listed them, and an email with no visible recipient looks like spam.
        let to = if headers.to.is_empty() && headers.cc.is_empty() {
            recipients.iter().map(|address| (None, address.clone())).collect()
        } else {
            headers.to.clone()
        };
        Self {
            from: (from_name, sender_email.to_owned()),
            to,
            cc: headers.cc.clone(),
            subject: headers.subject.clone().unwrap_or_default(),
            date,
            message_id: headers.message_id.clone().unwrap_or(fallback_message_id),
            in_reply_to: headers.in_reply_to.clone(),
            references: headers.references.clone(),
        }
    }
}

/// Writes a complete notification email: the envelope's headers, the
/// `X-Sealpost-*` fields and the placeholder as `multipart/alternative`.
pub fn compose_email(envelope: &EmailEnvelope, notification: &IssuedNotification) -> Vec<u8> {
    /// A bare address when there is no display name: `"" <a@b>` reads as a
    /// forgery to some filters.
    fn address(name: Option<&String>, address: &str) -> Address<'static> {
        match name.filter(|name| !name.trim().is_empty()) {
            Some(name) => Address::new_address(Some(name.clone()), address.to_owned()),
            None => Address::new_address(None::<String>, address.to_owned()),
        }
    }
    fn addresses(list: &[(Option<String>, String)]) -> Address<'static> {
        Address::new_list(list.iter().map(|(name, addr)| address(name.as_ref(), addr)).collect())
    }
    fn bare_id(id: &str) -> String {
        id.trim().trim_start_matches('<').trim_end_matches('>').to_owned()
    }

    let (from_name, from_address) = &envelope.from;
    let mut builder = MessageBuilder::new()
        .from(address(from_name.as_ref(), from_address))
        .to(addresses(&envelope.to))
        .subject(envelope.subject.clone())
        .date(envelope.date)
        .message_id(bare_id(&envelope.message_id));
    if !envelope.cc.is_empty() {
        builder = builder.cc(addresses(&envelope.cc));
    }
    if let Some(parent) = &envelope.in_reply_to {
        builder = builder.in_reply_to(bare_id(parent));
    }
    if !envelope.references.is_empty() {
        builder = builder
            .references(envelope.references.iter().map(|id| bare_id(id)).collect::<Vec<_>>());
    }
    for field in &notification.headers {
        builder = builder.header(field.name.clone(), Raw::new(field.value.clone()));
    }
    builder
        .text_body(notification.text_body.clone())
        .html_body(notification.html_body.clone())
        .write_to_vec()
        .unwrap_or_else(|error| unreachable!("writing into a Vec cannot fail: {error}"))
}

/// A server the verifier trusts: its origin and its signing keys.
#[derive(Debug, Clone)]
pub struct TrustedServer {
    pub origin: String,
    pub keys: HashMap<KeyId, VerifyingKey>,
}

impl TrustedServer {
    /// Pins the origin and every published key of a `/.well-known/sealpost`
    /// document, checking that each key id really names its key.
    pub fn from_well_known(doc: &WellKnown) -> Result<Self, ParseError> {
        let origin = normalize_origin(&doc.origin).ok_or_else(|| {
            malformed("origin", format!("{:?} is not an https origin", doc.origin))
        })?;
        let mut keys = HashMap::new();
        for published in &doc.signing_keys {
            if !published.algorithm.eq_ignore_ascii_case("ed25519") {
                return Err(malformed(
                    "signing_keys",
                    format!("algorithm {:?} is not ed25519", published.algorithm),
                ));
            }
            let key = decode_public_key(&published.public_key).ok_or_else(|| {
                malformed(
                    "signing_keys",
                    format!("key {} is not an Ed25519 public key", published.key_id),
                )
            })?;
            let key_id = KeyId::for_public_key(&key);
            if key_id.as_str() != published.key_id {
                return Err(malformed(
                    "signing_keys",
                    format!(
                        "key id {} does not match its key (expected {key_id})",
                        published.key_id
                    ),
                ));
            }
            keys.insert(key_id, key);
        }
        if keys.is_empty() {
            return Err(malformed(
                "signing_keys",
                "the server publishes no signing key".to_owned(),
            ));
        }
        Ok(Self { origin, keys })
    }
}

fn decode_public_key(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = decode_base64_lenient(text)?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

fn malformed(field: &'static str, reason: String) -> ParseError {
    ParseError::MalformedField { field, reason }
}

/// Reads the `X-Sealpost-*` fields of a raw RFC 5322 message.
///
/// Only the top-level header section counts, so a notification quoted or
/// attached inside another message is not mistaken for one. Field names match
/// case-insensitively; folded lines, RFC 2047 encoded words and whitespace
/// that mail servers insert into long values are undone. A field repeated
/// with the same value is accepted (some relays duplicate headers); repeated
/// with different values it is an error.
pub fn parse(raw: &[u8]) -> Result<SignedNotification, ParseError> {
    let mut values: [Option<String>; HEADERS.len()] = Default::default();
    for (name, value) in top_level_header_text(raw) {
        let Some(index) = HEADERS.iter().position(|known| known.eq_ignore_ascii_case(&name)) else {
            continue;
        };
        match &values[index] {
            Some(previous) if *previous != value => {
                return Err(ParseError::DuplicateField(HEADERS[index]));
            }
            _ => values[index] = Some(value),
        }
    }
    if values.iter().all(Option::is_none) {
        return Err(ParseError::NotANotification);
    }
    if let Some(index) = values.iter().position(|value| value.as_deref().is_none_or(str::is_empty))
    {
        return Err(ParseError::MissingField(HEADERS[index]));
    }
    let [version, message_id, origin, recipient, content_sha256, key_id, signature] =
        values.map(Option::unwrap_or_default);

    if version != FORMAT_VERSION.to_string() {
        return Err(ParseError::UnsupportedVersion(version));
    }
    let message_id = MessageId::parse(&without_whitespace(&message_id).to_ascii_lowercase())
        .map_err(|error| malformed(HEADER_MESSAGE_ID, error.to_string()))?;
    let origin = normalize_origin(&without_whitespace(&origin))
        .ok_or_else(|| malformed(HEADER_ORIGIN, format!("{origin:?} is not an https origin")))?;
    let recipient = normalize_address(&recipient).ok_or_else(|| {
        malformed(HEADER_RECIPIENT, format!("{recipient:?} is not an email address"))
    })?;
    let content_sha256 = ContentDigest::parse_hex(&without_whitespace(&content_sha256))
        .map_err(|error| malformed(HEADER_CONTENT_SHA256, error.to_string()))?;
    let key_id = KeyId::parse(&without_whitespace(&key_id).to_ascii_lowercase())
        .map_err(|error| malformed(HEADER_KEY_ID, error.to_string()))?;
    let signature: [u8; 64] = decode_base64_lenient(&signature)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| malformed(HEADER_SIGNATURE, "expected 64 bytes of base64url".to_owned()))?;

    Ok(SignedNotification {
        version: FORMAT_VERSION,
        fields: Notification { message_id, origin, recipient, content_sha256 },
        key_id,
        signature,
    })
}

/// The top-level header fields of a raw email as (name, text) pairs: values
/// unfolded, RFC 2047 encoded words decoded, surrounding whitespace trimmed.
pub(crate) fn top_level_header_text(raw: &[u8]) -> Vec<(String, String)> {
    // mail-parser applies the default (text) parser to unregistered fields
    // only once at least one field is registered; registering Subject as text
    // (its usual parser anyway) switches that on.
    let parser = MessageParser::new().header_text(HeaderName::Subject).default_header_text();
    let Some(message) = parser.parse_headers(raw) else {
        return Vec::new();
    };
    message
        .headers()
        .iter()
        .map(|header| {
            (
                header.name.as_str().to_owned(),
                header.value.as_text().unwrap_or_default().trim().to_owned(),
            )
        })
        .collect()
}

fn without_whitespace(text: &str) -> String {
    text.chars().filter(|character| !character.is_whitespace()).collect()
}

/// Decodes base64url without padding, also accepting the standard alphabet,
/// padding and embedded whitespace that some mail systems produce.
fn decode_base64_lenient(text: &str) -> Option<Vec<u8>> {
    let normalized: String = text
        .chars()
        .filter(|character| !character.is_whitespace() && *character != '=')
        .map(|character| match character {
            '+' => '-',
            '/' => '_',
            other => other,
        })
        .collect();
    BASE64URL_NOPAD.decode(normalized.as_bytes()).ok()
}

/// Lowercases and trims an address; `None` when it is not `local@domain`.
///
/// Lowercasing the local part is a deliberate simplification: every mail
/// system Sealpost meets treats it case-insensitively, and one address must
/// have one spelling for signatures and authorization to agree.
pub fn normalize_address(address: &str) -> Option<String> {
    let address = address.trim();
    let (local, domain) = address.rsplit_once('@')?;
    let valid_local = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"<>()[],;:\\\"@".contains(c));
    let valid_domain = !domain.is_empty()
        && domain.len() <= 253
        && !domain.starts_with(['.', '-'])
        && !domain.ends_with(['.', '-'])
        && !domain.contains("..")
        && domain.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    (valid_local && valid_domain).then(|| address.to_lowercase())
}

/// `https://host[:port]` in lowercase, default port and trailing slash removed.
///
/// Only `https` is accepted: notifications are trusted through the server's
/// TLS identity, and an origin reached over plain HTTP would undo that.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim();
    const SCHEME: &str = "https://";
    // `get` and `split_at_checked` refuse to cut inside a multi-byte character.
    let (scheme, rest) = origin.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) || rest.is_empty() {
        return None;
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest).to_ascii_lowercase();
    let (host, port) = split_host_port(&authority)?;
    let host_valid = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && !host.starts_with(['.', '-'])
            && !host.contains("..")
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    if !host_valid {
        return None;
    }
    Some(match port {
        None | Some(443) => format!("https://{host}"),
        Some(port) => format!("https://{host}:{port}"),
    })
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 literal.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let port_start = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => colon,
        _ => return Some((authority, None)),
    };
    let port_text = &authority[port_start + 1..];
    if port_text.is_empty() || !port_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port_text.parse().ok().filter(|port| *port != 0)?;
    Some((&authority[..port_start], Some(port)))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the message has no X-Sealpost headers: it is not a Sealpost notification")]
    NotANotification,
    #[error("the header {0} is missing")]
    MissingField(&'static str),
    #[error("the header {0} appears more than once with different values")]
    DuplicateField(&'static str),
    #[error("the header {field} is malformed: {reason}")]
    MalformedField { field: &'static str, reason: String },
    #[error("notification format version {0} is not supported")]
    UnsupportedVersion(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the notification names origin {found}, but this agent trusts {expected}")]
    WrongOrigin { expected: String, found: String },
    #[error("signed with key {0}, which the trusted server does not publish")]
    UnknownKey(KeyId),
    #[error("the signature does not match the notification's fields")]
    BadSignature,
    #[error("the notification was issued for {found}, not for {expected}")]
    WrongRecipient { expected: String, found: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PublicSigningKey;

    fn signer(seed: u8) -> NotificationSigner {
        NotificationSigner::new(SigningKey::from_bytes(&[seed; 32]))
    }

    #[test]
    fn control_characters_decoded_from_headers_never_reach_the_fields() {
        let head = b"From: =?utf-8?q?Ann=00Lee?= <ann@example.org>\r\n\
            Subject: =?utf-8?q?Results=00for=0Ayou?=\r\n\
            Message-ID: <=?utf-8?q?a=00b?=@example.org>\r\n\
            References: <ok@example.org>\r\n\r\n";
        let headers = SenderHeaders::parse(head, "ann@example.org");
        assert_eq!(headers.subject.as_deref(), Some("Results for you"));
        assert_eq!(headers.from_name.as_deref(), Some("Ann Lee"));
        assert!(headers.message_id.is_none_or(|id| !id.contains(char::is_control)));
        assert_eq!(headers.references, ["ok@example.org"]);
    }

    #[test]
    fn enormous_headers_are_cut_to_what_a_notification_may_repeat() {
        let cc: Vec<String> = (0..2000).map(|n| format!("p{n}@example.org")).collect();
        let references: Vec<String> = (0..100).map(|n| format!("<r{n}@example.org>")).collect();
        let head = format!(
            "To: a@example.org, b@example.org\r\nCc: {}\r\nSubject: {}\r\nReferences: {}\r\n\
             Message-ID: <{}@example.org>\r\n\r\n",
            cc.join(", "),
            "é".repeat(5000),
            references.join(" "),
            "x".repeat(2000),
        );
        let headers = SenderHeaders::parse(head.as_bytes(), "ann@example.org");
        assert_eq!((headers.to.len(), headers.cc.len()), (2, MAX_LISTED_ADDRESSES - 2));
        assert_eq!(headers.subject.map(|s| s.chars().count()), Some(MAX_SUBJECT_CHARS));
        assert_eq!(headers.references.len(), MAX_REFERENCES);
        assert_eq!(headers.references[0], "r0@example.org");
        assert_eq!(headers.references[MAX_REFERENCES - 1], "r99@example.org");
        assert_eq!(headers.references[1], "r81@example.org");
        assert_eq!(headers.message_id, None);
    }

    #[test]
    fn line_breaks_in_recipients_names_never_reach_the_fields() {
        let head = b"To: =?utf-8?q?Pat=0D=0ABcc:_x@example.org?= <pat@example.org>,\r\n \
            \"Lee\rX: y\" <lee@example.org>\r\n\
            Cc: =?utf-8?b?Q2Fyb2wNClgtSW5qZWN0ZWQ6IHllcw==?= <carol@example.org>\r\n\r\n";
        let headers = SenderHeaders::parse(head, "ann@example.org");
        let names: Vec<&str> =
            headers.to.iter().chain(&headers.cc).filter_map(|(name, _)| name.as_deref()).collect();
        assert_eq!(names.len(), 3, "{headers:?}");
        assert!(names.iter().all(|name| !name.contains(char::is_control)), "{names:?}");
        assert!(headers.to.iter().all(|(_, address)| !address.contains(char::is_control)));
    }

    fn fields() -> Notification {
        Notification {
            message_id: MessageId::from_random_bytes([7; 16]),
            origin: "https://sealpost.example.org".to_owned(),
            recipient: "alice@example.org".to_owned(),
            content_sha256: ContentDigest::of(b"secure content"),
        }
    }

    fn trusted(signers: &[&NotificationSigner]) -> TrustedServer {
        TrustedServer::from_well_known(&WellKnown {
            api_version: 1,
            origin: "https://SEALPOST.example.org:443/".to_owned(),
            signing_keys: signers
                .iter()
                .map(|signer| PublicSigningKey {
                    key_id: signer.key_id().to_string(),
                    algorithm: "ed25519".to_owned(),
                    public_key: encode_public_key(&signer.verifying_key()),
                    active: true,
                })
                .collect(),
            mail: None,
        })
        .expect("valid well-known document")
    }

    fn email_with_headers(headers: &[HeaderField]) -> Vec<u8> {
        let mut email =
            String::from("From: a@example.org\r\nTo: alice@example.org\r\nSubject: Hi\r\n");
        for field in headers {
            email.push_str(&format!("{}: {}\r\n", field.name, field.value));
        }
        email.push_str("\r\nplaceholder\r\n");
        email.into_bytes()
    }

    #[test]
    fn signed_headers_parse_and_verify() {
        let signer = signer(1);
        let signed = signer.sign(fields());
        let parsed = parse(&email_with_headers(&signed.header_fields())).expect("parses");
        assert_eq!(parsed, signed);
        parsed.verify(&trusted(&[&signer]), " Alice@Example.org ").expect("verifies");
    }

    #[test]
    fn verification_names_the_first_failing_check() {
        let (active, other) = (signer(1), signer(2));
        let signed = active.sign(fields());
        let server = trusted(&[&active]);

        let mut wrong_origin = signed.clone();
        wrong_origin.fields.origin = "https://evil.example".to_owned();
        assert!(matches!(
            wrong_origin.verify(&server, "alice@example.org"),
            Err(VerifyError::WrongOrigin { .. })
        ));

        assert_eq!(
            signed.verify(&trusted(&[&other]), "alice@example.org"),
            Err(VerifyError::UnknownKey(active.key_id().clone()))
        );

        let mut tampered = signed.clone();
        tampered.fields.content_sha256 = ContentDigest::of(b"other content");
        assert_eq!(tampered.verify(&server, "alice@example.org"), Err(VerifyError::BadSignature));

        assert!(matches!(
            signed.verify(&server, "bob@example.org"),
            Err(VerifyError::WrongRecipient { .. })
        ));
    }

    #[test]
    fn rotated_keys_keep_old_notifications_valid() {
        let (old, new) = (signer(1), signer(2));
        let signed = old.sign(fields());
        signed
            .verify(&trusted(&[&new, &old]), "alice@example.org")
            .expect("old key still published");
    }

    #[test]
    fn placeholder_carries_sender_link_and_branding_but_no_subject() {
        let branding = Branding {
            organization_name: "ABC Medical".to_owned(),
            footer: "Sent by ABC Medical, 123 ABC Street".to_owned(),
            legal_disclaimer: "Confidential <legal>".to_owned(),
            secure_message_disclaimer: "This message was sent securely.".to_owned(),
        };
        let placeholder = Placeholder {
            sender_name: Some("Dr. Who"),
            sender_address: "who@abc.example",
            read_url: "https://sealpost.example.org/read/abc?x=1&y=2",
            branding: &branding,
        };
        let issued = issue(&signer(1).sign(fields()), &placeholder);
        assert_eq!(issued.recipient, "alice@example.org");
        assert_eq!(issued.headers.len(), HEADERS.len());
        for text in [
            "Dr. Who <who@abc.example>",
            placeholder.read_url,
            "123 ABC Street",
            "Confidential <legal>",
            "sent securely",
        ] {
            assert!(issued.text_body.contains(text), "text body lacks {text:?}");
        }
        assert!(
            issued.html_body.contains("href=\"https://sealpost.example.org/read/abc?x=1&amp;y=2\"")
        );
        assert!(issued.html_body.contains("Confidential &lt;legal&gt;"));
        assert!(issued.html_body.contains("Dr. Who &lt;who@abc.example&gt;"));
    }

    #[test]
    fn composed_email_round_trips_through_the_parser() {
        let signer = signer(3);
        let branding = Branding::default();
        let issued = issue(
            &signer.sign(fields()),
            &Placeholder {
                sender_name: None,
                sender_address: "s@example.org",
                read_url: "https://x",
                branding: &branding,
            },
        );
        let email = compose_email(
            &EmailEnvelope {
                from: (None, "s@example.org".to_owned()),
                to: vec![(Some("Alice".to_owned()), "alice@example.org".to_owned())],
                cc: vec![(None, "carol@example.org".to_owned())],
                subject: "Résultats trimestriels".to_owned(),
                date: 1_795_000_000,
                message_id: "<m1@example.org>".to_owned(),
                in_reply_to: Some("<m0@example.org>".to_owned()),
                references: vec!["<m0@example.org>".to_owned()],
            },
            &issued,
        );
        let parsed_mail = MessageParser::new().parse(&email).expect("valid email");
        assert_eq!(parsed_mail.subject(), Some("Résultats trimestriels"));
        assert_eq!(parsed_mail.message_id(), Some("m1@example.org"));
        assert_eq!(parsed_mail.in_reply_to().as_text(), Some("m0@example.org"));
        parse(&email)
            .expect("parses")
            .verify(&trusted(&[&signer]), "alice@example.org")
            .expect("verifies");
    }

    #[test]
    fn addresses_normalise_to_one_spelling() {
        assert_eq!(normalize_address("  Alice@Example.ORG "), Some("alice@example.org".to_owned()));
        for bad in [
            "",
            "alice",
            "@example.org",
            "alice@",
            "a b@example.org",
            "<a@example.org>",
            "a@exa mple.org",
            "a@.example",
        ] {
            assert_eq!(normalize_address(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn origins_normalise_to_one_spelling() {
        assert_eq!(
            normalize_origin("HTTPS://Mail.Example.org:443/"),
            Some("https://mail.example.org".to_owned())
        );
        assert_eq!(
            normalize_origin("https://localhost:8443"),
            Some("https://localhost:8443".to_owned())
        );
        assert_eq!(normalize_origin("https://[::1]:8443"), Some("https://[::1]:8443".to_owned()));
        assert_eq!(normalize_origin("https://127.0.0.1"), Some("https://127.0.0.1".to_owned()));
        for bad in [
            "http://example.org",
            "https://",
            "https://example.org/path",
            "https://a:b",
            "https://x:0",
            "https://u@x",
            "example.org",
            "https:/\u{fffd}host",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn well_known_keys_must_match_their_ids() {
        let signer = signer(1);
        let mut doc = WellKnown {
            api_version: 1,
            origin: "https://x.example".to_owned(),
            signing_keys: vec![PublicSigningKey {
                key_id: "0000000000000000".to_owned(),
                algorithm: "ed25519".to_owned(),
                public_key: encode_public_key(&signer.verifying_key()),
                active: true,
            }],
            mail: None,
        };
        assert!(TrustedServer::from_well_known(&doc).is_err());
        doc.signing_keys[0].key_id = signer.key_id().to_string();
        assert!(TrustedServer::from_well_known(&doc).is_ok());
        doc.origin = "http://x.example".to_owned();
        assert!(TrustedServer::from_well_known(&doc).is_err());
    }
}
