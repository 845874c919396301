//! Message content: small content in the database, larger content in an
//! object store (a directory, or an S3-compatible bucket), so that every
//! server instance on one database reaches all of it.
//!
//! Most messages are small (a few kilobytes of text): kept in the database
//! ([`Store::put_content`]), they cost one row, no object and no round trip
//! to a second service. Content above `storage.inline_max_bytes` (attachments)
//! would bloat the database and its backups: it goes to the object store
//! under `<2 chars>/<id>.eml`, the layout content had when it was files in
//! `<data_dir>/messages/`, so content stored before stays readable.
//!
//! An upload is hashed and counted as it streams in. Up to the threshold it
//! is buffered; past it, a multipart upload starts and the rest streams into
//! it. The object appears only when the upload completes, so a reader never
//! sees part of one; a failed upload (too large, interrupted, storage error,
//! or the request dropped) is aborted, so nothing is left behind. Content is
//! written before the message's row: when recording the message fails, its
//! caller [`BlobStore::remove`]s the content again.
//!
//! Reading: small content is read whole (and kept in memory, see below);
//! larger content is streamed from the object store to the response. Content
//! found in neither place is [`BlobError::Missing`]: an answer that says so,
//! never an empty message.
//!
//! Small content is kept in memory as it is written and read: each
//! recipient's agent fetches a message moments after its notification
//! arrives, and content never changes once stored. Other instances may keep
//! content this one removed; they never serve it, since only a message whose
//! record says it is readable is read, and its content is removed only once
//! it is not (or was never recorded).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientOptions, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart,
};
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

use crate::read_cache::ReadCache;
use crate::settings::{StorageBackend, StorageSettings};
use crate::store::{Store, StoreError};
use sealpost_proto::{ContentDigest, MessageId};

#[derive(Clone)]
pub struct BlobStore {
    /// Content up to `inline_max` bytes.
    store: Arc<dyn Store>,
    /// Larger content, and content stored before content was kept inline.
    objects: Arc<dyn ObjectStore>,
    inline_max: u64,
    /// Small content, by message: a few thousand messages at most.
    kept: Arc<ReadCache<MessageId, Bytes>>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("objects", &self.objects.to_string())
            .field("inline_max", &self.inline_max)
            .finish_non_exhaustive()
    }
}

/// Content up to this size is small: read whole (never streamed) and kept in
/// memory, wherever it is stored.
pub const SMALL_CONTENT: u64 = 64 * 1024;

/// Kept small content at most, in bytes.
const CONTENT_KEPT_BYTES: usize = 8 * 1024 * 1024;

/// Parts of a multipart upload: S3's smallest (but for the last part).
const PART_BYTES: usize = 5 * 1024 * 1024;

/// Parts of one upload sent at the same time: what one upload holds in
/// memory is about this many parts plus the one being filled.
const PARTS_IN_FLIGHT: usize = 2;

/// Content read from a file is streamed in chunks of this size.
const STREAM_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the message is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload was interrupted: {0}")]
    Upload(String),
    /// The message is recorded but its content is in neither the database
    /// nor the object store: deleted behind the server's back, or the
    /// object store is not the one the content was written to.
    #[error("the content of message {id} is missing from storage")]
    Missing { id: MessageId },
    #[error("the object store failed for message {id}: {source}")]
    Storage {
        id: MessageId,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the database failed to store or read the content of message {id}: {source}")]
    Database {
        id: MessageId,
        #[source]
        source: StoreError,
    },
}

impl BlobError {
    fn storage(
        id: &MessageId,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Storage { id: id.clone(), source: source.into() }
    }

    fn database(id: &MessageId, source: StoreError) -> Self {
        Self::Database { id: id.clone(), source }
    }
}

/// The object store could not be set up from `[storage]`.
#[derive(Debug, thiserror::Error)]
pub enum StorageSetupError {
    #[error("cannot create the message directory {path} (storage.path): {source}")]
    Directory { path: PathBuf, source: std::io::Error },
    #[error("storage: {0}")]
    ObjectStore(#[from] object_store::Error),
}

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: ContentDigest,
    pub size: u64,
    /// The first [`HEAD_BYTES`] bytes, kept while streaming: enough for the
    /// header section, which notifications repeat, without reading the content back.
    pub head: Vec<u8>,
}

/// How much of an upload [`StoredBlob::head`] keeps.
pub const HEAD_BYTES: usize = 256 * 1024;

/// A message's content, as [`BlobStore::open`] hands it out.
pub enum Content {
    /// Small content, whole.
    Whole(Bytes),
    /// Larger content, streamed from the object store.
    Stream(BoxStream<'static, Result<Bytes, BlobError>>),
}

impl BlobStore {
    /// Content up to `inline_max` bytes in `store`, larger content in `objects`.
    pub fn new(store: Arc<dyn Store>, objects: Arc<dyn ObjectStore>, inline_max: u64) -> Self {
        Self { store, objects, inline_max, kept: Arc::new(ReadCache::new(CONTENT_KEPT_BYTES)) }
    }

    /// The store `[storage]` describes; the filesystem backend's directory
    /// defaults to `<data_dir>/messages` (and is made if missing).
    pub fn from_settings(
        settings: &StorageSettings,
        data_dir: &Path,
        store: Arc<dyn Store>,
    ) -> Result<Self, StorageSetupError> {
        let objects: Arc<dyn ObjectStore> = match settings.backend {
            StorageBackend::Filesystem => {
                let path = settings.path.clone().unwrap_or_else(|| data_dir.join("messages"));
                std::fs::create_dir_all(&path).map_err(|source| StorageSetupError::Directory {
                    path: path.clone(),
                    source,
                })?;
                // Synced as each object is put in place, as an S3 service does.
                Arc::new(LocalFileSystem::new_with_prefix(&path)?.with_fsync(true))
            }
            StorageBackend::S3 => {
                let s3 = &settings.s3;
                // Large content streams to slow clients for minutes: no
                // limit on a whole request, only on each wait for data.
                let client = ClientOptions::new()
                    .with_timeout_disabled()
                    .with_read_timeout(std::time::Duration::from_secs(60))
                    .with_allow_http(s3.allow_http);
                let mut builder = AmazonS3Builder::new()
                    .with_client_options(client)
                    .with_bucket_name(s3.bucket.clone().unwrap_or_default())
                    .with_region(&s3.region);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder
                        .with_endpoint(endpoint.trim_end_matches('/'))
                        .with_virtual_hosted_style_request(false);
                }
                if let (Some(key_id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                    builder =
                        builder.with_access_key_id(key_id).with_secret_access_key(secret.expose());
                }
                let bucket: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
                match s3.prefix.as_deref().map(|prefix| prefix.trim_matches('/')) {
                    Some(prefix) if !prefix.is_empty() => {
                        Arc::new(PrefixStore::new(bucket, ObjectPath::from(prefix)))
                    }
                    _ => bucket,
                }
            }
        };
        Ok(Self::new(store, objects, settings.inline_max_bytes))
    }

    /// Spreads objects over 1024 prefixes by the id's first two characters.
    pub fn location(id: &MessageId) -> ObjectPath {
        ObjectPath::from(format!("{}/{id}.eml", &id.as_str()[..2]))
    }

    /// Stores the content `chunks` bring: in the database up to the
    /// threshold, else in the object store. Nothing is left of a failed
    /// write (more than `limit` bytes, an interrupted stream, a storage error).
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
        let kept_from = self.kept.generation();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut head = Vec::new();
        // Up to the threshold; then handed to the upload.
        let mut buffered: Vec<Bytes> = Vec::new();
        let mut upload: Option<Upload> = None;
        let streamed = async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|error| BlobError::Upload(error.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(BlobError::TooLarge { limit });
                }
                hasher.update(&chunk);
                let room = HEAD_BYTES.saturating_sub(head.len());
                head.extend_from_slice(&chunk[..room.min(chunk.len())]);
                if upload.is_none() && size > self.inline_max {
                    upload = Some(self.start_upload(id).await?);
                }
                match upload.as_mut() {
                    Some(upload) => {
                        for earlier in buffered.drain(..) {
                            upload.put(earlier).await?;
                        }
                        upload.put(chunk).await?;
                    }
                    None => buffered.push(chunk),
                }
            }
            Ok(())
        }
        .await;
        if let Err(error) = streamed {
            if let Some(upload) = upload {
                upload.abort().await;
            }
            return Err(error);
        }
        match upload {
            Some(upload) => upload.finish().await?,
            None => {
                let content: Vec<u8> = buffered.concat();
                self.store
                    .put_content(id, &content)
                    .await
                    .map_err(|e| BlobError::database(id, e))?;
            }
        }
        if size <= SMALL_CONTENT {
            // Small content is all in `head`.
            self.kept.keep(kept_from, id.clone(), Bytes::copy_from_slice(&head), head.len());
        }
        Ok(StoredBlob { digest: ContentDigest::from_bytes(hasher.finalize().into()), size, head })
    }

    async fn start_upload(&self, id: &MessageId) -> Result<Upload, BlobError> {
        let upload = self
            .objects
            .put_multipart(&Self::location(id))
            .await
            .map_err(|error| BlobError::storage(id, error))?;
        let writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        Ok(Upload { id: id.clone(), writer: Some(writer) })
    }

    /// The content of a message of `size` bytes, as recorded: small content
    /// whole, larger content as a stream from the object store.
    pub async fn open(&self, id: &MessageId, size: u64) -> Result<Content, BlobError> {
        if size <= self.inline_max || size <= SMALL_CONTENT {
            return self.read_all(id, size).await.map(Content::Whole);
        }
        match self.object(id).await {
            Ok(object) => Ok(Content::Stream(object_stream(id, object, size)?)),
            // Stored in the database while the threshold was higher.
            Err(BlobError::Missing { .. }) => self
                .inline(id)
                .await?
                .map(Content::Whole)
                .ok_or(BlobError::Missing { id: id.clone() }),
            Err(error) => Err(error),
        }
    }

    /// The whole content of a message of `size` bytes, for reading it here
    /// (the Secure Message Center shows and unpacks it).
    pub async fn read_all(&self, id: &MessageId, size: u64) -> Result<Bytes, BlobError> {
        if let Some(content) = self.kept.get(id) {
            return Ok(content);
        }
        let read_at = self.kept.generation();
        let content = if size <= self.inline_max {
            match self.inline(id).await? {
                Some(content) => content,
                // Stored before content was kept in the database.
                None => self.object_bytes(id).await?,
            }
        } else {
            match self.object_bytes(id).await {
                // Stored in the database while the threshold was higher.
                Err(BlobError::Missing { .. }) => {
                    self.inline(id).await?.ok_or(BlobError::Missing { id: id.clone() })?
                }
                other => other?,
            }
        };
        if content.len() as u64 <= SMALL_CONTENT {
            self.kept.keep(read_at, id.clone(), content.clone(), content.len());
        }
        Ok(content)
    }

    /// Content kept in the database, if any.
    async fn inline(&self, id: &MessageId) -> Result<Option<Bytes>, BlobError> {
        let content =
            self.store.content(id).await.map_err(|error| BlobError::database(id, error))?;
        Ok(content.map(Bytes::from))
    }

    async fn object(&self, id: &MessageId) -> Result<GetResult, BlobError> {
        self.objects.get(&Self::location(id)).await.map_err(|error| match error {
            object_store::Error::NotFound { .. } => BlobError::Missing { id: id.clone() },
            error => BlobError::storage(id, error),
        })
    }

    async fn object_bytes(&self, id: &MessageId) -> Result<Bytes, BlobError> {
        let object = self.object(id).await?;
        object.bytes().await.map_err(|error| BlobError::storage(id, error))
    }

    /// Deletes a message's content from the database and the object store;
    /// deleting content that is not there is no error.
    pub async fn delete(&self, id: &MessageId) -> Result<(), BlobError> {
        let removed_inline = self.store.remove_content(id).await;
        let removed_object = match self.objects.delete(&Self::location(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(BlobError::storage(id, error)),
        };
        // After the deletions: a read under way may have seen the content.
        self.kept.forget(id);
        removed_inline.map_err(|error| BlobError::database(id, error))?;
        removed_object
    }

    /// Removes content whose metadata could not be recorded; a failure is
    /// logged (the content is orphaned, under its message id).
    pub async fn remove(&self, id: &MessageId) {
        if let Err(error) = self.delete(id).await {
            tracing::warn!(message_id = %id, %error, "could not remove unrecorded content");
        }
    }
}

/// `object`'s bytes, which must be the `size` recorded for message `id`.
fn object_stream(
    id: &MessageId,
    object: GetResult,
    size: u64,
) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
    if object.meta.size != size {
        return Err(BlobError::storage(
            id,
            format!("the object is {} bytes where {size} were stored", object.meta.size),
        ));
    }
    let chunks: BoxStream<'static, std::io::Result<Bytes>> = match object.payload {
        // A local file: read by tokio in large chunks.
        GetResultPayload::File(file, _) => {
            ReaderStream::with_capacity(tokio::fs::File::from_std(file), STREAM_CHUNK).boxed()
        }
        GetResultPayload::Stream(stream) => stream.map_err(std::io::Error::from).boxed(),
    };
    let id = id.clone();
    // The response is under way: the client sees it cut short, the log why.
    Ok(chunks
        .map_err(move |error| {
            tracing::error!(message_id = %id, %error, "streaming message content failed");
            BlobError::storage(&id, error)
        })
        .boxed())
}

/// A multipart upload under way: aborted unless finished, also when the
/// write is cancelled (its future dropped mid-way).
struct Upload {
    id: MessageId,
    /// Taken when the upload ends.
    writer: Option<WriteMultipart>,
}

impl Upload {
    fn ended(&self) -> BlobError {
        BlobError::storage(&self.id, "the upload has already ended")
    }

    async fn put(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        let Some(writer) = self.writer.as_mut() else { return Err(self.ended()) };
        // Waits while enough parts are on their way.
        let ready = writer.wait_for_capacity(PARTS_IN_FLIGHT).await;
        ready.map_err(|error| BlobError::storage(&self.id, error))?;
        writer.put(chunk);
        Ok(())
    }

    async fn finish(mut self) -> Result<(), BlobError> {
        let Some(writer) = self.writer.take() else { return Err(self.ended()) };
        // Aborts the upload itself when a part or the completion fails.
        writer.finish().await.map_err(|error| BlobError::storage(&self.id, error))?;
        Ok(())
    }

    async fn abort(mut self) {
        if let Some(writer) = self.writer.take() {
            abort_upload(writer, self.id.clone()).await;
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(abort_upload(writer, self.id.clone()));
        }
    }
}

async fn abort_upload(mut writer: WriteMultipart, id: MessageId) {
    // Parts on their way land first, so none arrives after the abort.
    let _ = writer.wait_for_capacity(0).await;
    if let Err(error) = writer.abort().await {
        tracing::warn!(message_id = %id, %error, "could not abort a content upload");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    struct Fixture {
        blobs: BlobStore,
        store: Arc<dyn Store>,
        objects: Arc<dyn ObjectStore>,
        root: PathBuf,
        _dir: tempfile::TempDir,
    }

    /// A SQLite store and a directory for objects, with the default threshold.
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("sealpost.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.expect("store"));
        let root = dir.path().join("messages");
        let settings = StorageSettings { path: Some(root.clone()), ..StorageSettings::default() };
        let blobs = BlobStore::from_settings(&settings, dir.path(), store.clone()).expect("blobs");
        let objects = blobs.objects.clone();
        Fixture { blobs, store, objects, root, _dir: dir }
    }

    fn inline_max() -> usize {
        StorageSettings::default().inline_max_bytes as usize
    }

    async fn store(blobs: &BlobStore, content: &[u8]) -> MessageId {
        let id = MessageId::generate();
        let chunks =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(content))]);
        blobs.write(&id, chunks, u64::MAX).await.expect("write");
        id
    }

    /// Every file under `dir`, temporary and partial ones included.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .flatten()
            .flat_map(
                |entry| {
                    if entry.path().is_dir() { files(&entry.path()) } else { vec![entry.path()] }
                },
            )
            .collect()
    }

    async fn objects(objects: &Arc<dyn ObjectStore>) -> Vec<String> {
        objects
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list")
    }

    async fn read(blobs: &BlobStore, id: &MessageId, size: usize) -> Result<Vec<u8>, BlobError> {
        match blobs.open(id, size as u64).await? {
            Content::Whole(bytes) => Ok(bytes.to_vec()),
            Content::Stream(stream) => {
                let chunks: Vec<Bytes> = stream.try_collect().await?;
                Ok(chunks.concat())
            }
        }
    }

    /// `total` bytes of a recognisable pattern in chunks of 64 KiB, then the
    /// error `fail` if given.
    fn chunks(
        total: usize,
        fail: Option<&'static str>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        let content = pattern(total);
        let pieces: Vec<Result<Bytes, std::io::Error>> = content
            .chunks(64 * 1024)
            .map(|piece| Ok(Bytes::copy_from_slice(piece)))
            .chain(fail.map(|error| Err(std::io::Error::other(error))))
            .collect();
        futures_util::stream::iter(pieces)
    }

    fn pattern(total: usize) -> Vec<u8> {
        (0..total).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn small_content_is_kept_in_the_database_and_not_in_the_object_store() {
        let f = fixture().await;
        let content = b"Subject: small\r\n\r\nbody".to_vec();
        let id = store(&f.blobs, &content).await;
        assert_eq!(f.store.content(&id).await.expect("read"), Some(content.clone()));
        assert!(objects(&f.objects).await.is_empty());
        assert!(files(&f.root).is_empty(), "{:?}", files(&f.root));
        assert_eq!(read(&f.blobs, &id, content.len()).await.expect("read"), content);

        // Exactly at the threshold is still small.
        let at_threshold = pattern(inline_max());
        let id = store(&f.blobs, &at_threshold).await;
        assert!(f.store.content(&id).await.expect("read").is_some());
        assert!(objects(&f.objects).await.is_empty());
    }

    #[tokio::test]
    async fn large_content_is_in_the_object_store_and_not_in_the_database() {
        let f = fixture().await;
        let id = MessageId::generate();
        let size = 12 * 1024 * 1024 + 17;
        let stored = f.blobs.write(&id, chunks(size, None), u64::MAX).await.expect("write");
        assert_eq!(stored.size, size as u64);
        assert_eq!(stored.digest, ContentDigest::of(&pattern(size)));
        assert_eq!(stored.head, pattern(size)[..HEAD_BYTES]);
        assert_eq!(f.store.content(&id).await.expect("read"), None);
        let expected = format!("{}/{id}.eml", &id.as_str()[..2]);
        assert_eq!(objects(&f.objects).await, vec![expected.clone()]);
        assert_eq!(files(&f.root), vec![f.root.join(&expected)], "no partial file left");
        assert!(matches!(f.blobs.open(&id, size as u64).await, Ok(Content::Stream(_))));
        assert!(read(&f.blobs, &id, size).await.expect("read") == pattern(size));
        assert!(f.blobs.read_all(&id, size as u64).await.expect("read") == pattern(size));

        // Just over the threshold goes to the object store too.
        let just_over = pattern(inline_max() + 1);
        let id = store(&f.blobs, &just_over).await;
        assert_eq!(f.store.content(&id).await.expect("read"), None);
        assert_eq!(objects(&f.objects).await.len(), 2);
        assert_eq!(read(&f.blobs, &id, just_over.len()).await.expect("read"), just_over);
    }

    #[tokio::test]
    async fn refused_and_interrupted_uploads_leave_nothing() {
        let f = fixture().await;
        let cases = [
            ("too large, small", chunks(1000, None), 500, "larger than the limit"),
            ("too large, past the threshold", chunks(8 * 1024 * 1024, None), 7_000_000, "limit"),
            ("interrupted, small", chunks(1000, Some("connection reset")), u64::MAX, "reset"),
            (
                "interrupted after some MiB",
                chunks(11 * 1024 * 1024, Some("connection reset")),
                u64::MAX,
                "interrupted: connection reset",
            ),
        ];
        for (name, chunks, limit, expected) in cases {
            let id = MessageId::generate();
            let error = f.blobs.write(&id, chunks, limit).await.expect_err(name);
            assert!(error.to_string().contains(expected), "{name}: {error}");
            assert_eq!(f.store.content(&id).await.expect("read"), None, "{name}");
            assert!(objects(&f.objects).await.is_empty(), "{name}");
            assert!(files(&f.root).is_empty(), "{name}: {:?}", files(&f.root));
        }
    }

    #[tokio::test]
    async fn a_write_dropped_mid_way_leaves_nothing() {
        let f = fixture().await;
        let id = MessageId::generate();
        // Some MiB arrive, then the stream waits forever; the write is dropped.
        let stream = chunks(7 * 1024 * 1024, None).chain(futures_util::stream::pending());
        let write = f.blobs.write(&id, stream, u64::MAX);
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(500), write).await;
        assert!(timed_out.is_err(), "the write waits for more");
        for _ in 0..100 {
            if files(&f.root).is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(files(&f.root).is_empty(), "{:?}", files(&f.root));
    }

    #[tokio::test]
    async fn remove_deletes_both_and_forgets_kept_content() {
        let f = fixture().await;
        let small = store(&f.blobs, b"Subject: kept\r\n\r\nbody").await;
        let large_content = pattern(200 * 1024);
        let large = store(&f.blobs, &large_content).await;
        // Kept: read even with the row gone behind the store's back.
        f.store.remove_content(&small).await.expect("remove the row");
        assert_eq!(read(&f.blobs, &small, 21).await.expect("kept"), b"Subject: kept\r\n\r\nbody");
        for (id, size) in [(&small, 21), (&large, large_content.len())] {
            f.blobs.remove(id).await;
            assert_eq!(f.store.content(id).await.expect("read"), None);
            let error = read(&f.blobs, id, size).await.expect_err("removed");
            assert!(matches!(error, BlobError::Missing { .. }), "{error}");
        }
        assert!(objects(&f.objects).await.is_empty());
        assert!(files(&f.root).is_empty());
        // Removing again is no error.
        f.blobs.delete(&large).await.expect("nothing to delete");
    }

    #[tokio::test]
    async fn a_missing_object_is_a_clear_error() {
        let f = fixture().await;
        let content = pattern(300 * 1024);
        let id = store(&f.blobs, &content).await;
        std::fs::remove_file(f.root.join(BlobStore::location(&id).as_ref())).expect("delete");
        let error = read(&f.blobs, &id, content.len()).await.expect_err("missing");
        assert!(matches!(&error, BlobError::Missing { id: missing } if *missing == id), "{error}");
        assert_eq!(
            error.to_string(),
            format!("the content of message {id} is missing from storage")
        );
        let error = f.blobs.read_all(&id, content.len() as u64).await.expect_err("missing");
        assert!(matches!(error, BlobError::Missing { .. }), "{error}");
        // A small message whose row is gone, and which was never a file.
        let never = MessageId::generate();
        assert!(matches!(read(&f.blobs, &never, 10).await, Err(BlobError::Missing { .. })));
    }

    #[tokio::test]
    async fn content_stored_as_files_before_this_change_still_reads() {
        let f = fixture().await;
        for size in [100, 50 * 1024, 2 * 1024 * 1024] {
            let id = MessageId::generate();
            let content = pattern(size);
            let dir = f.root.join(&id.as_str()[..2]);
            std::fs::create_dir_all(&dir).expect("dir");
            std::fs::write(dir.join(format!("{id}.eml")), &content).expect("old file");
            assert!(read(&f.blobs, &id, size).await.expect("read") == content, "{size} bytes");
            assert!(f.blobs.read_all(&id, size as u64).await.expect("read") == content);
            f.blobs.remove(&id).await;
            assert!(!dir.join(format!("{id}.eml")).exists());
        }
    }

    #[tokio::test]
    async fn content_stored_under_another_threshold_still_reads() {
        let f = fixture().await;
        let content = pattern(100 * 1024);
        let id = store(&f.blobs, &content).await;
        assert!(objects(&f.objects).await.len() == 1);
        // The threshold raised: the object is found all the same.
        let raised = BlobStore::new(f.store.clone(), f.objects.clone(), 1024 * 1024);
        assert!(read(&raised, &id, content.len()).await.expect("read") == content);
        // Content kept in the database under it reads with the default again.
        let inline = store(&raised, &content).await;
        assert!(f.store.content(&inline).await.expect("read").is_some());
        assert!(read(&f.blobs, &inline, content.len()).await.expect("read") == content);
        assert!(f.blobs.read_all(&inline, content.len() as u64).await.expect("read") == content);
    }

    #[tokio::test]
    async fn small_content_read_is_kept_and_large_content_is_not() {
        let f = fixture().await;
        let small = store(&f.blobs, &[b'a'; 100]).await;
        let large = store(&f.blobs, &vec![b'b'; SMALL_CONTENT as usize + 1]).await;
        // A store started afresh finds the content but keeps nothing yet.
        let blobs = BlobStore::new(f.store.clone(), f.objects.clone(), SMALL_CONTENT);
        assert_eq!(read(&blobs, &small, 100).await.expect("small").len(), 100);
        assert_eq!(
            read(&blobs, &large, SMALL_CONTENT as usize + 1).await.expect("large").len(),
            SMALL_CONTENT as usize + 1
        );
        f.store.remove_content(&small).await.expect("remove the row");
        std::fs::remove_file(f.root.join(BlobStore::location(&large).as_ref())).expect("remove");
        assert_eq!(read(&blobs, &small, 100).await.expect("kept").len(), 100);
        assert!(
            read(&blobs, &large, SMALL_CONTENT as usize + 1).await.is_err(),
            "large content is read from storage each time"
        );
    }
}
