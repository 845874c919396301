//! The link in a notification: it opens the message in the Secure Message
//! Center and proves that whoever follows it received the notification at
//! that recipient's address, so a new recipient registers with a name and
//! a password only.
//!
//! The token is an HMAC of the message id and the recipient's address under
//! a key kept in the database: nothing is stored per link, the
//! address does not appear in the URL, and a token made for one recipient
//! (or one message) matches no other.

use std::path::Path;

use data_encoding::BASE64URL_NOPAD;
use hmac::{Hmac, Mac};
use sealpost_proto::MessageId;
use sha2::Sha256;

use crate::auth::constant_time_eq;
use crate::secrets::{KeyError, shared_key};
use crate::store::Store;

const KEY_NAME: &str = "link";
/// Where versions that kept the key in a file kept it.
const LEGACY_KEY_FILE: &str = "secrets/link.key";
/// Bytes of HMAC in the link: 128 bits cannot be guessed, and keep the URL short.
const TOKEN_BYTES: usize = 16;

#[derive(Clone)]
pub struct LinkKey {
    key: [u8; 32],
}

impl LinkKey {
    /// The key all instances share (see [`shared_key`]).
    pub async fn load_or_generate(store: &dyn Store, data_dir: &Path) -> Result<Self, KeyError> {
        Ok(Self { key: shared_key(store, KEY_NAME, &data_dir.join(LEGACY_KEY_FILE)).await? })
    }

    /// The token for `recipient`'s link to `message`.
    pub fn token(&self, message: &MessageId, recipient: &str) -> String {
        BASE64URL_NOPAD.encode(&self.mac(message, recipient)[..TOKEN_BYTES])
    }

    /// Which of `recipients` the token was made for, if any.
    pub fn recipient<'a>(
        &self,
        message: &MessageId,
        recipients: &'a [String],
        token: &str,
    ) -> Option<&'a str> {
        let presented = BASE64URL_NOPAD.decode(token.as_bytes()).ok()?;
        if presented.len() != TOKEN_BYTES {
            return None;
        }
        // Every recipient is compared, in constant time each: how long the
        // answer takes says nothing about who the token is for.
        let mut found = None;
        for recipient in recipients {
            let expected = self.mac(message, recipient);
            if constant_time_eq(&expected[..TOKEN_BYTES], &presented) {
                found = Some(recipient.as_str());
            }
        }
        found
    }

    fn mac(&self, message: &MessageId, recipient: &str) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(b"sealpost link v1\0");
        mac.update(message.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(recipient.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_its_own_message_for_its_own_recipient_only() {
        let key = LinkKey { key: [7; 32] };
        let message = MessageId::generate();
        let other_message = MessageId::generate();
        let recipients = vec!["alice@example.test".to_owned(), "bob@example.test".to_owned()];
        let alices = key.token(&message, "alice@example.test");
        assert_eq!(key.recipient(&message, &recipients, &alices), Some("alice@example.test"));
        let bobs = key.token(&message, "bob@example.test");
        assert_eq!(key.recipient(&message, &recipients, &bobs), Some("bob@example.test"));
        assert_eq!(key.recipient(&other_message, &recipients, &alices), None);
        assert_eq!(key.recipient(&message, &recipients[1..], &alices), None);
        let other_key = LinkKey { key: [8; 32] };
        assert_eq!(other_key.recipient(&message, &recipients, &alices), None);
        for garbage in ["", "x", &alices[..alices.len() - 1], "!!!!!!!!!!!!!!!!!!!!!!"] {
            assert_eq!(key.recipient(&message, &recipients, garbage), None, "{garbage:?}");
        }
    }
}
