//! [`S3Server`]: a real S3-compatible service (s3s-fs) on loopback, keeping
//! its objects as files in a temporary directory, with one bucket made. It
//! checks every request's signature against its one key pair, as a real
//! service does, so the server's S3 client is tested as it will run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use sealpost_server::settings::{Secret, Settings, StorageBackend};
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// Serves until dropped.
pub struct S3Server {
    address: SocketAddr,
    root: PathBuf,
    accept: JoinHandle<()>,
    _dir: TempDir,
}

const BUCKET: &str = "sealpost-test";
const ACCESS_KEY_ID: &str = "sealpost-test-key";
const SECRET_ACCESS_KEY: &str = "sealpost-test-secret-0123456789";

impl S3Server {
    /// Listens on 127.0.0.1, port 0, in the current runtime.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sealpost-s3-").tempdir()?;
        let root = dir.path().join("s3");
        // A bucket is a directory of s3s-fs's root.
        std::fs::create_dir_all(root.join(BUCKET)).context("making the bucket")?;
        let root = root.canonicalize()?;
        let files = s3s_fs::FileSystem::new(&root)
            .map_err(|error| anyhow::anyhow!("the s3s-fs root: {error:?}"))?;
        let mut builder = S3ServiceBuilder::new(files);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY_ID, SECRET_ACCESS_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            let connections = ConnectionBuilder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let connection = connections
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        Ok(Self { address, root, accept, _dir: dir })
    }

    /// `http://127.0.0.1:PORT`: buckets are addressed by path.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn access_key_id(&self) -> &str {
        ACCESS_KEY_ID
    }

    pub fn secret_access_key(&self) -> &str {
        SECRET_ACCESS_KEY
    }

    /// Points `settings` at this service and its bucket, with its keys.
    pub fn configure(&self, settings: &mut Settings) {
        let storage = &mut settings.storage;
        storage.backend = StorageBackend::S3;
        storage.s3.bucket = Some(self.bucket().to_owned());
        storage.s3.endpoint = Some(self.endpoint());
        storage.s3.region = "us-east-1".into();
        storage.s3.access_key_id = Some(self.access_key_id().to_owned());
        storage.s3.secret_access_key = Some(Secret::new(self.secret_access_key()));
        storage.s3.allow_http = true;
    }

    /// The keys of the objects in the bucket, sorted.
    pub fn objects(&self) -> Vec<String> {
        let bucket = self.root.join(BUCKET);
        let mut keys: Vec<String> = files(&bucket)
            .iter()
            .filter_map(|path| path.strip_prefix(&bucket).ok())
            .map(|key| key.to_string_lossy().replace('\\', "/"))
            .collect();
        keys.sort();
        keys
    }

    /// What multipart uploads neither completed nor aborted left: their
    /// state and parts, and files the service was writing.
    pub fn unfinished_uploads(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| {
                name.starts_with(".upload")
                    || name.starts_with(".tmp.")
                    || name.contains(".upload-")
            })
            .collect();
        names.sort();
        names
    }

    /// Where the object `key` is kept, to change it behind the server's back.
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() { files(&path) } else { vec![path] }
        })
        .collect()
}
