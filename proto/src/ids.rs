//! Identifiers that travel on the wire, each parsed once into a type.

use std::fmt;

use data_encoding::{BASE32_DNSSEC, HEXLOWER_PERMISSIVE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A secure message's id: 128 random bits written as 26 characters of
/// lowercase base32hex (`0-9a-v`), so it is safe in URLs, file names and
/// email local parts alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Sealpost message id: expected 26 characters of 0-9 and a-v")]
pub struct InvalidMessageId;

impl MessageId {
    pub const LEN: usize = 26;

    /// A fresh id from the operating system's random number generator.
    pub fn generate() -> Self {
        Self::from_random_bytes(rand::random())
    }

    pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
        Self(BASE32_DNSSEC.encode(&bytes))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidMessageId> {
        let decoded = BASE32_DNSSEC.decode(text.as_bytes()).map_err(|_| InvalidMessageId)?;
        // Re-encoding rejects non-canonical spellings, so one id has one text.
        if decoded.len() != 16 || BASE32_DNSSEC.encode(&decoded) != text {
            return Err(InvalidMessageId);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for MessageId {
    type Error = InvalidMessageId;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<MessageId> for String {
    fn from(id: MessageId) -> Self {
        id.0
    }
}

/// The SHA-256 of a stored message's bytes, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentDigest([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 digest: expected 64 hex digits")]
pub struct InvalidDigest;

impl ContentDigest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// Accepts either case; mail servers have been seen upper-casing header values.
    pub fn parse_hex(text: &str) -> Result<Self, InvalidDigest> {
        let bytes = HEXLOWER_PERMISSIVE.decode(text.as_bytes()).map_err(|_| InvalidDigest)?;
        Ok(Self(bytes.try_into().map_err(|_| InvalidDigest)?))
    }
}

impl fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentDigest({})", self.to_hex())
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Names one notification-signing key, so keys can rotate: the first 8 bytes
/// of the SHA-256 of the raw public key, as 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Sealpost key id: expected 16 lowercase hex digits")]
pub struct InvalidKeyId;

impl KeyId {
    pub fn for_public_key(key: &ed25519_dalek::VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        Self(data_encoding::HEXLOWER.encode(&digest[..8]))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidKeyId> {
        let valid = text.len() == 16
            && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid { Ok(Self(text.to_owned())) } else { Err(InvalidKeyId) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for KeyId {
    type Error = InvalidKeyId;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_26_chars_and_round_trip() {
        let id = MessageId::generate();
        assert_eq!(id.as_str().len(), MessageId::LEN);
        assert_eq!(MessageId::parse(id.as_str()), Ok(id.clone()));
        assert_ne!(MessageId::generate(), id);
    }

    #[test]
    fn message_id_rejects_other_spellings() {
        let id = MessageId::generate();
        assert!(MessageId::parse(&id.as_str().to_uppercase()).is_err());
        assert!(MessageId::parse(&id.as_str()[1..]).is_err());
        assert!(MessageId::parse("zzzzzzzzzzzzzzzzzzzzzzzzzz").is_err());
    }

    #[test]
    fn digest_hex_round_trips_in_either_case() {
        let digest = ContentDigest::of(b"hello");
        assert_eq!(ContentDigest::parse_hex(&digest.to_hex().to_uppercase()), Ok(digest));
        assert!(ContentDigest::parse_hex("abc").is_err());
    }
}
