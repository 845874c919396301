//! Notification-signing keys, kept in `<data_dir>/signing-keys/`.
//!
//! Each key is a PKCS#8 PEM file named after its key id; the file `active`
//! names the key that signs new notifications. Older keys stay published in
//! `/.well-known/sealpost` so notifications they signed still verify after a
//! rotation.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use sealpost_proto::KeyId;
use sealpost_proto::api::PublicSigningKey;
use sealpost_proto::notification::{NotificationSigner, encode_public_key};

use crate::files::write_private_file;

const ACTIVE_FILE: &str = "active";

#[derive(Clone)]
pub struct SigningKeys {
    active: NotificationSigner,
    published: Vec<PublicSigningKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot use the signing key directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not an Ed25519 PKCS#8 PEM private key")]
    Malformed { path: PathBuf },
    #[error("{path} names key {key_id}, but there is no {key_id}.pem beside it")]
    MissingActive { path: PathBuf, key_id: String },
}

impl SigningKeys {
    /// Loads the keys, generating the first one when the directory is empty.
    pub fn load_or_generate(data_dir: &Path) -> Result<Self, SigningKeyError> {
        let dir = data_dir.join("signing-keys");
        if !dir.join(ACTIVE_FILE).exists() {
            rotate(data_dir)?;
        }
        Self::load(&dir)
    }

    fn load(dir: &Path) -> Result<Self, SigningKeyError> {
        let io = |source| SigningKeyError::Io { path: dir.to_owned(), source };
        let active_path = dir.join(ACTIVE_FILE);
        let active_id = std::fs::read_to_string(&active_path).map_err(io)?.trim().to_owned();
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|ext| ext == "pem") {
                let pem = std::fs::read_to_string(&path).map_err(io)?;
                let key = SigningKey::from_pkcs8_pem(&pem)
                    .map_err(|_| SigningKeyError::Malformed { path: path.clone() })?;
                keys.push(key);
            }
        }
        let signers: Vec<NotificationSigner> =
            keys.into_iter().map(NotificationSigner::new).collect();
        let active =
            signers
                .iter()
                .find(|signer| signer.key_id().as_str() == active_id)
                .cloned()
                .ok_or(SigningKeyError::MissingActive { path: active_path, key_id: active_id })?;
        let mut published: Vec<PublicSigningKey> = signers
            .iter()
            .map(|signer| PublicSigningKey {
                key_id: signer.key_id().to_string(),
                algorithm: "ed25519".into(),
                public_key: encode_public_key(&signer.verifying_key()),
                active: signer.key_id() == active.key_id(),
            })
            .collect();
        published.sort_by(|a, b| b.active.cmp(&a.active).then(a.key_id.cmp(&b.key_id)));
        Ok(Self { active, published })
    }

    pub fn active(&self) -> &NotificationSigner {
        &self.active
    }

    pub fn published(&self) -> &[PublicSigningKey] {
        &self.published
    }
}

/// Generates a new key and makes it the active one; returns its id.
pub fn rotate(data_dir: &Path) -> Result<KeyId, SigningKeyError> {
    let dir = data_dir.join("signing-keys");
    let key = SigningKey::from_bytes(&rand::random());
    let key_id = KeyId::for_public_key(&key.verifying_key());
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| SigningKeyError::Malformed { path: dir.clone() })?;
    let io = |source| SigningKeyError::Io { path: dir.clone(), source };
    write_private_file(&dir.join(format!("{key_id}.pem")), pem.as_bytes()).map_err(io)?;
    // The key file is durable before `active` points at it, so a crash never
    // leaves `active` naming a key that does not exist.
    write_private_file(&dir.join(ACTIVE_FILE), format!("{key_id}\n").as_bytes()).map_err(io)?;
    Ok(key_id)
}
