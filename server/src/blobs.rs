//! Message content, one file per message under `<data_dir>/messages/`.
//!
//! Content is written to a temporary file while it is hashed and counted,
//! synced, then renamed into place: a crash leaves either nothing or the whole
//! message, never a truncated one. Metadata lives in the [`crate::store`].

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::files::sync_dir;
use sealpost_proto::{ContentDigest, MessageId};

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the message is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload was interrupted: {0}")]
    Upload(String),
    #[error("message storage failed at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: ContentDigest,
    pub size: u64,
    /// The first [`HEAD_BYTES`] bytes, kept while streaming: enough for the
    /// header section, which notifications repeat, without reading the file back.
    pub head: Vec<u8>,
}

/// How much of an upload [`StoredBlob::head`] keeps.
pub const HEAD_BYTES: usize = 256 * 1024;

impl BlobStore {
    pub fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.join("messages") }
    }

    /// Spreads files over 1024 directories by the id's first two characters.
    fn path_of(&self, id: &MessageId) -> PathBuf {
        self.root.join(&id.as_str()[..2]).join(format!("{id}.eml"))
    }

    pub async fn write<S, E>(
        &self,
        id: &MessageId,
        mut chunks: S,
        limit: u64,
    ) -> Result<StoredBlob, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.path_of(id);
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        let io = |source| BlobError::Io { path: path.clone(), source };
        tokio::fs::create_dir_all(&dir).await.map_err(io)?;
        let temporary = dir.join(format!(".{id}.partial"));
        let result = async {
            let mut file = tokio::fs::File::create(&temporary).await.map_err(io)?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut head = Vec::new();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|error| BlobError::Upload(error.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(BlobError::TooLarge { limit });
                }
                hasher.update(&chunk);
                let room = HEAD_BYTES.saturating_sub(head.len());
                head.extend_from_slice(&chunk[..room.min(chunk.len())]);
                file.write_all(&chunk).await.map_err(io)?;
            }
            file.sync_all().await.map_err(io)?;
            Ok(StoredBlob {
                digest: ContentDigest::from_bytes(hasher.finalize().into()),
                size,
                head,
            })
        }
        .await;
        match result {
            Ok(stored) => {
                tokio::fs::rename(&temporary, &path).await.map_err(io)?;
                let dir_for_sync = dir.clone();
                tokio::task::spawn_blocking(move || sync_dir(&dir_for_sync))
                    .await
                    .map_err(|error| io(std::io::Error::other(error)))?
                    .map_err(io)?;
                Ok(stored)
            }
            Err(error) => {
                let _ = tokio::fs::remove_file(&temporary).await;
                Err(error)
            }
        }
    }

    /// Reads small content (up to tens of kilobytes) whole, on the calling
    /// thread: from the page cache that takes microseconds, less than handing
    /// the read to the blocking pool and back; from disk, one short wait.
    pub fn read_small(&self, id: &MessageId) -> Result<Bytes, BlobError> {
        let path = self.path_of(id);
        match std::fs::read(&path) {
            Ok(content) => Ok(Bytes::from(content)),
            Err(source) => Err(BlobError::Io { path, source }),
        }
    }

    pub async fn open(&self, id: &MessageId) -> Result<tokio::fs::File, BlobError> {
        let path = self.path_of(id);
        tokio::fs::File::open(&path).await.map_err(|source| BlobError::Io { path, source })
    }

    /// Removes content whose metadata could not be recorded.
    pub async fn remove(&self, id: &MessageId) {
        let _ = tokio::fs::remove_file(self.path_of(id)).await;
    }
}
