//! The 32-byte keys every server instance must share: the key of
//! notification links and the key of VERP return paths. They live in the
//! database; a key file an earlier version kept in the data directory is
//! taken in on first start, so links and return paths made before stay valid.

use std::path::Path;

use time::OffsetDateTime;

use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{what} must hold exactly 32 bytes")]
    Malformed { what: String },
    #[error("key {name}: {source}")]
    Store { name: String, source: StoreError },
}

/// The key named `name`: the one in the database, else the one in
/// `legacy_file` if it exists, else a new random one; stored either way.
pub async fn shared_key(
    store: &dyn Store,
    name: &str,
    legacy_file: &Path,
) -> Result<[u8; 32], KeyError> {
    let candidate = match std::fs::read(legacy_file) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            rand::random::<[u8; 32]>().into()
        }
        Err(source) => {
            return Err(KeyError::Io { path: legacy_file.display().to_string(), source });
        }
    };
    let stored = store
        .shared_secret(name, &candidate, OffsetDateTime::now_utc())
        .await
        .map_err(|source| KeyError::Store { name: name.to_owned(), source })?;
    stored.try_into().map_err(|_| KeyError::Malformed { what: format!("the stored key {name}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn a_key_is_made_once_and_a_key_file_of_an_earlier_version_is_taken_in() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let store = SqliteStore::open(&url).await.expect("store");
        let absent = dir.path().join("absent.key");
        let made = shared_key(&store, "made", &absent).await.expect("key");
        assert_eq!(shared_key(&store, "made", &absent).await.expect("again"), made);

        let file = dir.path().join("link.key");
        std::fs::write(&file, [7u8; 32]).expect("write");
        assert_eq!(shared_key(&store, "link", &file).await.expect("key"), [7; 32]);
        std::fs::remove_file(&file).expect("remove");
        assert_eq!(shared_key(&store, "link", &file).await.expect("stored"), [7; 32]);

        std::fs::write(&file, [1u8; 5]).expect("write");
        assert!(matches!(
            shared_key(&store, "short", &file).await,
            Err(KeyError::Malformed { .. })
        ));
    }
}
