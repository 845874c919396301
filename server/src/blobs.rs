//! Message content, one file per message under `<data_dir>/messages/`.
//!
//! Content is written to a temporary file while it is hashed and counted,
//! synced, then renamed into place: a crash leaves either nothing or the whole
//! message, never a truncated one. Metadata lives in the [`crate::store`].
//!
//! Small content is kept in memory as it is written and read: each recipient's
//! agent fetches a message moments after its notification arrives, and the
//! file never changes once in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::files::sync_dir;
use crate::read_cache::ReadCache;
use sealpost_proto::{ContentDigest, MessageId};

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    /// Small content, by message: a few thousand messages at most.
    kept: Arc<ReadCache<MessageId, Bytes>>,
}

/// Content up to this size is small: read whole with [`BlobStore::read_small`]
/// and kept in memory.
pub const SMALL_CONTENT: u64 = 64 * 1024;

/// Kept small content at most, in bytes.
const CONTENT_KEPT_BYTES: usize = 8 * 1024 * 1024;

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
        Self { root: data_dir.join("messages"), kept: Arc::new(ReadCache::new(CONTENT_KEPT_BYTES)) }
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
        let kept_from = self.kept.generation();
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
                if stored.size <= SMALL_CONTENT {
                    let content = Bytes::copy_from_slice(&stored.head);
                    self.kept.keep(kept_from, id.clone(), content, stored.head.len());
                }
                Ok(stored)
            }
            Err(error) => {
                let _ = tokio::fs::remove_file(&temporary).await;
                Err(error)
            }
        }
    }

    /// Small content (up to [`SMALL_CONTENT`]) whole: kept, or read on the
    /// calling thread: from the page cache that takes microseconds, less than
    /// handing the read to the blocking pool and back; from disk, one short wait.
    pub fn read_small(&self, id: &MessageId) -> Result<Bytes, BlobError> {
        if let Some(content) = self.kept.get(id) {
            return Ok(content);
        }
        let read_at = self.kept.generation();
        let path = self.path_of(id);
        match std::fs::read(&path) {
            Ok(content) => {
                let content = Bytes::from(content);
                if content.len() as u64 <= SMALL_CONTENT {
                    self.kept.keep(read_at, id.clone(), content.clone(), content.len());
                }
                Ok(content)
            }
            Err(source) => Err(BlobError::Io { path, source }),
        }
    }

    /// The whole content of a message of `size` bytes, for reading it here
    /// (the Secure Message Center shows and unpacks it).
    pub async fn read_all(&self, id: &MessageId, size: u64) -> Result<Bytes, BlobError> {
        if size <= SMALL_CONTENT {
            return self.read_small(id);
        }
        let path = self.path_of(id);
        match tokio::fs::read(&path).await {
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
        self.kept.forget(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(blobs: &BlobStore, content: &[u8]) -> MessageId {
        let id = MessageId::generate();
        let chunks =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(content))]);
        blobs.write(&id, chunks, u64::MAX).await.expect("write");
        id
    }

    #[tokio::test]
    async fn small_content_is_kept_as_written_until_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let blobs = BlobStore::new(dir.path());
        let id = store(&blobs, b"Subject: kept\r\n\r\nbody").await;
        std::fs::remove_file(blobs.path_of(&id)).expect("remove the file behind the store's back");
        assert_eq!(&blobs.read_small(&id).expect("kept")[..], b"Subject: kept\r\n\r\nbody");
        blobs.remove(&id).await;
        assert!(matches!(blobs.read_small(&id), Err(BlobError::Io { .. })));
    }

    #[tokio::test]
    async fn small_content_read_from_disk_is_kept_and_large_content_is_not() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = BlobStore::new(dir.path());
        let small = store(&writer, &[b'a'; 100]).await;
        let large = store(&writer, &vec![b'b'; SMALL_CONTENT as usize + 1]).await;
        // A store started afresh finds the files but keeps nothing yet.
        let blobs = BlobStore::new(dir.path());
        assert_eq!(blobs.read_small(&small).expect("small").len(), 100);
        assert_eq!(blobs.read_small(&large).expect("large").len(), SMALL_CONTENT as usize + 1);
        std::fs::remove_file(blobs.path_of(&small)).expect("remove");
        std::fs::remove_file(blobs.path_of(&large)).expect("remove");
        assert_eq!(blobs.read_small(&small).expect("kept").len(), 100);
        assert!(blobs.read_small(&large).is_err(), "large content is read from disk each time");
    }
}
