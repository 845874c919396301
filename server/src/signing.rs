//! Notification-signing keys, kept in the database so that every server
//! instance signs with the same active key and publishes the same set.
//!
//! The active key signs new notifications. Older keys stay published in
//! `/.well-known/sealpost` so notifications they signed still verify after a
//! rotation. Keys kept as files in `<data_dir>/signing-keys/` by earlier
//! versions (PKCS#8 PEM files named after their key id, and the file
//! `active`) are taken into the database on first start, so nothing signed
//! before stops verifying.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use sealpost_proto::KeyId;
use sealpost_proto::api::PublicSigningKey;
use sealpost_proto::notification::{NotificationSigner, encode_public_key};
use time::OffsetDateTime;

use crate::store::{Store, StoreError, StoredSigningKey};

const ACTIVE_FILE: &str = "active";

#[derive(Clone)]
pub struct SigningKeys {
    active: NotificationSigner,
    published: Vec<PublicSigningKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read the signing key directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{what} is not an Ed25519 PKCS#8 PEM private key")]
    Malformed { what: String },
    #[error("{path} names key {key_id}, but there is no {key_id}.pem beside it")]
    MissingActive { path: PathBuf, key_id: String },
    #[error("the database holds signing keys but none is active")]
    NoActive,
    #[error("signing keys: {0}")]
    Store(#[from] StoreError),
}

impl SigningKeys {
    /// The keys in the database. On first start they are the key files of
    /// an earlier version, if `data_dir` has them, or else one new key;
    /// instances starting together agree on one.
    pub async fn load_or_generate(
        store: &dyn Store,
        data_dir: &Path,
    ) -> Result<Self, SigningKeyError> {
        if store.signing_keys().await?.is_empty() {
            let now = OffsetDateTime::now_utc();
            let dir = data_dir.join("signing-keys");
            let mut first = match read_key_files(&dir)? {
                Some(files) => files,
                None => vec![new_key(now)?],
            };
            // The active key last, as adding a key makes it the active one.
            first.sort_by_key(|key| key.active);
            let mut keys = first.into_iter();
            if let Some(key) = keys.next() {
                store.add_signing_key(&key, true).await?;
            }
            for key in keys {
                store.add_signing_key(&key, false).await?;
            }
        }
        Self::from_stored(&store.signing_keys().await?)
    }

    fn from_stored(stored: &[StoredSigningKey]) -> Result<Self, SigningKeyError> {
        let mut signers = Vec::with_capacity(stored.len());
        let mut active = None;
        for key in stored {
            let signer = NotificationSigner::new(decode(&key.pkcs8_pem, &key.key_id)?);
            if key.active {
                active = Some(signer.clone());
            }
            signers.push(signer);
        }
        let active = active.ok_or(SigningKeyError::NoActive)?;
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
pub async fn rotate(store: &dyn Store) -> Result<KeyId, SigningKeyError> {
    let key = new_key(OffsetDateTime::now_utc())?;
    store.add_signing_key(&key, false).await?;
    KeyId::parse(&key.key_id).map_err(|_| SigningKeyError::Malformed { what: key.key_id })
}

fn new_key(now: OffsetDateTime) -> Result<StoredSigningKey, SigningKeyError> {
    let key = SigningKey::from_bytes(&rand::random());
    let key_id = KeyId::for_public_key(&key.verifying_key()).to_string();
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| SigningKeyError::Malformed { what: format!("new key {key_id}") })?;
    Ok(StoredSigningKey { key_id, pkcs8_pem: pem.to_string(), created_at: now, active: true })
}

fn decode(pem: &str, what: &str) -> Result<SigningKey, SigningKeyError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|_| SigningKeyError::Malformed { what: what.into() })
}

/// The keys an earlier version kept in `dir`, if it has any.
fn read_key_files(dir: &Path) -> Result<Option<Vec<StoredSigningKey>>, SigningKeyError> {
    let io = |source| SigningKeyError::Io { path: dir.to_owned(), source };
    let active_path = dir.join(ACTIVE_FILE);
    let active_id = match std::fs::read_to_string(&active_path) {
        Ok(text) => text.trim().to_owned(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io(error)),
    };
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "pem") {
            continue;
        }
        let pem = std::fs::read_to_string(&path).map_err(io)?;
        let key = decode(&pem, &path.display().to_string())?;
        let key_id = KeyId::for_public_key(&key.verifying_key()).to_string();
        let created_at = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .map(OffsetDateTime::from)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        let active = key_id == active_id;
        keys.push(StoredSigningKey { key_id, pkcs8_pem: pem, created_at, active });
    }
    if !keys.iter().any(|key| key.active) {
        return Err(SigningKeyError::MissingActive { path: active_path, key_id: active_id });
    }
    Ok(Some(keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    async fn store(dir: &Path) -> SqliteStore {
        let url = format!("sqlite://{}", dir.join("test.db").display());
        SqliteStore::open(&url).await.expect("open store")
    }

    #[tokio::test]
    async fn the_first_start_makes_one_key_and_later_starts_load_it() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(dir.path()).await;
        let first = SigningKeys::load_or_generate(&store, dir.path()).await.expect("first");
        let again = SigningKeys::load_or_generate(&store, dir.path()).await.expect("again");
        assert_eq!(first.published(), again.published());
        assert_eq!(first.published().len(), 1);
        assert_eq!(first.active().key_id(), again.active().key_id());
    }

    #[tokio::test]
    async fn a_rotation_signs_with_the_new_key_and_keeps_the_old_one_published() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(dir.path()).await;
        let before = SigningKeys::load_or_generate(&store, dir.path()).await.expect("keys");
        let new_id = rotate(&store).await.expect("rotate");
        let after = SigningKeys::load_or_generate(&store, dir.path()).await.expect("keys");
        assert_eq!(after.active().key_id(), &new_id);
        let ids: Vec<_> = after.published().iter().map(|key| key.key_id.clone()).collect();
        assert_eq!(ids, [new_id.to_string(), before.active().key_id().to_string()]);
        assert!(after.published()[0].active && !after.published()[1].active);
    }

    #[tokio::test]
    async fn key_files_of_an_earlier_version_are_taken_in_with_their_active_key() {
        let dir = tempfile::tempdir().expect("dir");
        let keys_dir = dir.path().join("signing-keys");
        std::fs::create_dir_all(&keys_dir).expect("dir");
        let mut ids = Vec::new();
        for _ in 0..2 {
            let key = new_key(OffsetDateTime::now_utc()).expect("key");
            std::fs::write(keys_dir.join(format!("{}.pem", key.key_id)), &key.pkcs8_pem)
                .expect("write");
            ids.push(key.key_id);
        }
        std::fs::write(keys_dir.join(ACTIVE_FILE), format!("{}\n", ids[0])).expect("write");
        let store = store(dir.path()).await;
        let keys = SigningKeys::load_or_generate(&store, dir.path()).await.expect("keys");
        assert_eq!(keys.active().key_id().to_string(), ids[0]);
        assert_eq!(keys.published().len(), 2);
    }
}
