//! Matching bounces to the notification that caused them.
//!
//! Every notification leaves with its own envelope sender (VERP): the
//! configured bounce address with `+b<outbox id>-<mac>` added to its local
//! part, where the mac is an HMAC of the id under a key all instances share
//! (see [`crate::secrets`]). A bounce comes back to that address, so the recipient it is
//! about is known without trusting anything inside the bounce, and nobody can
//! mark someone else's notification as bounced by guessing ids.
//!
//! The inbound listener that receives bounces hands each one to
//! [`BounceMatcher::match_bounce`] with the address it was delivered to.

use std::path::Path;

use data_encoding::BASE32_DNSSEC;
use hmac::{Hmac, Mac};
use mail_parser::MimeHeaders;
use sha2::Sha256;

use crate::auth::constant_time_eq;
use crate::secrets::{KeyError, shared_key};
use crate::store::Store;

const KEY_NAME: &str = "verp";
/// Where versions that kept the key in a file kept it.
const LEGACY_KEY_FILE: &str = "secrets/verp.key";
/// Bytes of HMAC kept in the address: 80 bits make forging infeasible while
/// keeping the local part short (16 characters of base32).
const MAC_BYTES: usize = 10;

#[derive(Clone)]
pub struct BounceMatcher {
    key: [u8; 32],
    local: String,
    domain: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerpError {
    #[error("VERP key: {0}")]
    Key(#[from] KeyError),
    #[error("the bounce address {0:?} is not local@domain")]
    Address(String),
}

/// A bounce report matched to one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    pub outbox_id: i64,
    /// The enhanced status code, e.g. `5.1.1`.
    pub status: Option<String>,
    /// What the refusing server said.
    pub diagnostic: Option<String>,
}

impl Bounce {
    /// One line for the sender's delivery report.
    pub fn describe(&self) -> String {
        match (&self.status, &self.diagnostic) {
            (Some(status), Some(diagnostic)) => format!("bounced ({status}): {diagnostic}"),
            (Some(status), None) => format!("bounced ({status})"),
            (None, Some(diagnostic)) => format!("bounced: {diagnostic}"),
            (None, None) => "bounced".to_owned(),
        }
    }
}

impl BounceMatcher {
    /// With the key all instances share (see [`shared_key`]).
    pub async fn load_or_generate(
        store: &dyn Store,
        data_dir: &Path,
        bounce_address: &str,
    ) -> Result<Self, VerpError> {
        let key = shared_key(store, KEY_NAME, &data_dir.join(LEGACY_KEY_FILE)).await?;
        Self::new(key, bounce_address)
    }

    pub fn new(key: [u8; 32], bounce_address: &str) -> Result<Self, VerpError> {
        let (local, domain) = bounce_address
            .rsplit_once('@')
            .filter(|(local, domain)| !local.is_empty() && !domain.is_empty())
            .ok_or_else(|| VerpError::Address(bounce_address.to_owned()))?;
        Ok(Self { key, local: local.to_lowercase(), domain: domain.to_lowercase() })
    }

    /// The envelope sender for one notification.
    pub fn envelope_sender(&self, outbox_id: i64) -> String {
        format!("{}+b{outbox_id}-{}@{}", self.local, self.mac(outbox_id), self.domain)
    }

    /// The outbox id a bounce address stands for, if it is one of ours and its mac is right.
    pub fn outbox_id(&self, address: &str) -> Option<i64> {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>').to_lowercase();
        let (local, domain) = address.rsplit_once('@')?;
        if domain != self.domain {
            return None;
        }
        let tag = local.strip_prefix(&self.local)?.strip_prefix("+b")?;
        let (id, mac) = tag.split_once('-')?;
        let id: i64 = id.parse().ok()?;
        let expected = self.mac(id);
        // Compare in constant time: the mac is the only secret in the address.
        constant_time_eq(expected.as_bytes(), mac.as_bytes()).then_some(id)
    }

    fn mac(&self, outbox_id: i64) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(format!("sealpost-verp:{outbox_id}").as_bytes());
        BASE32_DNSSEC.encode(&mac.finalize().into_bytes()[..MAC_BYTES])
    }

    /// Matches a message delivered to `envelope_recipient`: `Some` when the
    /// address is a valid VERP address of ours and the message is a delivery
    /// status notification reporting a permanent failure. Delay warnings,
    /// auto-replies and anything else are `None`.
    pub fn match_bounce(&self, envelope_recipient: &str, raw: &[u8]) -> Option<Bounce> {
        let outbox_id = self.outbox_id(envelope_recipient)?;
        let report = delivery_status(raw)?;
        report.failed.then_some(Bounce {
            outbox_id,
            status: report.status,
            diagnostic: report.diagnostic,
        })
    }
}

struct DeliveryStatus {
    failed: bool,
    status: Option<String>,
    diagnostic: Option<String>,
}

/// Reads the `message/delivery-status` part of an RFC 3464 report.
fn delivery_status(raw: &[u8]) -> Option<DeliveryStatus> {
    let message = sealpost_reader::parse_message(raw)?;
    let part = message.parts.iter().find(|part| {
        part.content_type().is_some_and(|content_type| {
            content_type.ctype().eq_ignore_ascii_case("message")
                && content_type.subtype().is_some_and(|sub| {
                    sub.eq_ignore_ascii_case("delivery-status")
                        || sub.eq_ignore_ascii_case("global-delivery-status")
                })
        })
    })?;
    let text = String::from_utf8_lossy(part.contents());
    let fields = unfold_fields(&text);
    let field = |name: &str| {
        fields
            .iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
            .next_back()
    };
    let action = field("Action").unwrap_or_default().to_ascii_lowercase();
    let status = field("Status");
    let failed = action.starts_with("failed")
        || (action.is_empty() && status.as_deref().is_some_and(|s| s.starts_with('5')));
    let diagnostic = field("Diagnostic-Code").map(|code| {
        // "smtp; 550 5.1.1 <x>: Recipient address rejected": drop the type prefix.
        match code.split_once(';') {
            Some((kind, rest)) if !kind.contains(' ') => rest.trim().to_owned(),
            _ => code,
        }
    });
    Some(DeliveryStatus { failed, status, diagnostic })
}

/// `Name: value` fields of a delivery-status body (per-message and
/// per-recipient groups alike), continuation lines joined.
fn unfold_fields(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> BounceMatcher {
        BounceMatcher::new([7; 32], "Bounces@Clinic.example").expect("valid address")
    }

    /// A fixture with its placeholder envelope address replaced by a real one.
    fn fixture(name: &str, outbox_id: i64) -> (String, Vec<u8>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bounces").join(name);
        let text = std::fs::read_to_string(&path).expect("fixture exists");
        let address = matcher().envelope_sender(outbox_id);
        (address.clone(), text.replace("VERP_ADDRESS", &address).into_bytes())
    }

    #[test]
    fn envelope_senders_round_trip_and_resist_forgery() {
        let matcher = matcher();
        let address = matcher.envelope_sender(42);
        assert!(address.starts_with("bounces+b42-") && address.ends_with("@clinic.example"));
        assert_eq!(matcher.outbox_id(&address), Some(42));
        assert_eq!(matcher.outbox_id(&format!("<{}>", address.to_uppercase())), Some(42));
        let forged = address.replace("+b42-", "+b43-");
        assert_eq!(matcher.outbox_id(&forged), None);
        assert_eq!(matcher.outbox_id(&address.replace("clinic.example", "other.example")), None);
        let other_key = BounceMatcher::new([8; 32], "bounces@clinic.example").expect("valid");
        assert_eq!(other_key.outbox_id(&address), None);
        assert_eq!(matcher.outbox_id("bounces@clinic.example"), None);
    }

    #[test]
    fn permanent_failures_from_common_servers_are_matched() {
        for (name, status, diagnostic_part) in [
            ("postfix-user-unknown.eml", "5.1.1", "User unknown in virtual mailbox table"),
            ("exchange-recipient-not-found.eml", "5.1.10", "RESOLVER.ADR.RecipientNotFound"),
            ("gmail-no-such-user.eml", "5.1.1", "The email account that you tried to reach"),
        ] {
            let (address, raw) = fixture(name, 17);
            let bounce = matcher().match_bounce(&address, &raw).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(bounce.outbox_id, 17, "{name}");
            assert_eq!(bounce.status.as_deref(), Some(status), "{name}");
            let diagnostic = bounce.diagnostic.unwrap_or_default();
            assert!(diagnostic.contains(diagnostic_part), "{name}: {diagnostic}");
        }
    }

    #[test]
    fn delays_auto_replies_and_forged_addresses_are_not_bounces() {
        for name in ["postfix-delayed.eml", "out-of-office.eml"] {
            let (address, raw) = fixture(name, 5);
            assert_eq!(matcher().match_bounce(&address, &raw), None, "{name}");
        }
        let (address, raw) = fixture("postfix-user-unknown.eml", 5);
        let forged = address.replace("+b5-", "+b6-");
        assert_eq!(matcher().match_bounce(&forged, &raw), None);
    }
}
