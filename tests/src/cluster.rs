//! [`ServerCluster`]: several real `sealpost-server` processes as a
//! scaled-out deployment runs them behind a load balancer. They share one
//! PostgreSQL, one content directory (the filesystem object store), one
//! TLS certificate and key, one public origin and one mail relay (a
//! [`MailCapture`]); each has its own data directory and port.
//!
//! [`MixedLoad`] drives such a cluster as many users at once would, spread
//! over its running instances, and keeps a ledger of what the servers
//! acknowledged so tests can check afterwards that nothing was lost or
//! doubled.

pub mod mixed_load;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sealpost_proto::api::{PublicSigningKey, WellKnown};
use tempfile::TempDir;

use crate::client::ApiClient;
use crate::mail_capture::MailCapture;
use crate::postgres::PostgresServer;
use crate::process::ServerProcess;

pub use mixed_load::{LoadReport, MixedLoad, NotificationTally};

/// The origin every instance announces: the load balancer's, as clients
/// and notifications know the service.
pub const CLUSTER_ORIGIN: &str = "https://sealpost.test";

/// Where the instances keep their records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterDatabase {
    /// One PostgreSQL for all instances.
    Postgres,
    /// The embedded SQLite of a single instance (for comparison only).
    Sqlite,
}

/// How the instances start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOrder {
    /// Each once the one before it serves.
    OneAfterAnother,
    /// All at once, on an empty database: they must agree on one signing key.
    Together,
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub instances: usize,
    pub database: ClusterDatabase,
    pub start: StartOrder,
    /// `outbox.lease_seconds`: how long a claimed notification waits for
    /// the instance that claimed it before another may send it.
    pub lease_seconds: u64,
    /// `smtp.timeout_seconds` (the lease must exceed it).
    pub smtp_timeout_seconds: u64,
    /// `outbox.concurrency`: notifications each instance hands to the relay at once.
    pub outbox_concurrency: u32,
    /// The instances' log filter (`RUST_LOG`).
    pub log_filter: String,
    /// Further settings for every instance, as `SEALPOST_SECTION__KEY` variables.
    pub env: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            instances: 2,
            database: ClusterDatabase::Postgres,
            start: StartOrder::Together,
            lease_seconds: 15,
            smtp_timeout_seconds: 5,
            outbox_concurrency: 8,
            log_filter: "warn".into(),
            env: Vec::new(),
        }
    }
}

/// One server process and a client for it.
struct Instance {
    /// `None` once killed.
    process: Mutex<Option<ServerProcess>>,
    api: ApiClient,
    base_url: String,
    pid: u32,
}

/// Running instances, stopped (SIGKILL) when dropped, then their database
/// and directories.
pub struct ServerCluster {
    // Fields drop in this order: the servers before what they use.
    instances: Vec<Instance>,
    postgres: Option<PostgresServer>,
    capture: MailCapture,
    options: ClusterOptions,
    cert_pem: Vec<u8>,
    origin: String,
    storage_dir: PathBuf,
    dir: TempDir,
}

impl ServerCluster {
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        sealpost_server::install_crypto_provider();
        if options.instances == 0 {
            bail!("a cluster needs at least one instance");
        }
        if options.database == ClusterDatabase::Sqlite && options.instances > 1 {
            bail!("instances cannot share an SQLite database: use ClusterDatabase::Postgres");
        }
        let binary = ServerProcess::binary()?;
        let dir = tempfile::Builder::new().prefix("sealpost-cluster-").tempdir()?;
        let capture = MailCapture::start().await.context("the mail capture")?;
        let postgres = match options.database {
            ClusterDatabase::Postgres => Some(PostgresServer::start().await?),
            ClusterDatabase::Sqlite => None,
        };
        let storage_dir = dir.path().join("objects");
        std::fs::create_dir_all(&storage_dir)?;
        let (cert_file, key_file) = write_certificate(dir.path())?;
        let config = config_toml(
            &options,
            postgres.as_ref().map(PostgresServer::url).as_deref(),
            &storage_dir,
            (&cert_file, &key_file),
            capture.port(),
        );
        let config_file = dir.path().join("sealpost.toml");
        std::fs::write(&config_file, config)?;
        let cert_pem = std::fs::read(&cert_file)?;

        let mut env = vec![
            ("SEALPOST_SERVER__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("RUST_LOG".to_owned(), options.log_filter.clone()),
        ];
        env.extend(options.env.iter().cloned());
        let launch = |index: usize| {
            let binary = binary.clone();
            let work = dir.path().join(format!("instance-{index}"));
            let config_file = config_file.clone();
            let env = env.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<ServerProcess> {
                std::fs::create_dir_all(&work)?;
                let env: Vec<(&str, String)> =
                    env.iter().map(|(key, value)| (key.as_str(), value.clone())).collect();
                let config = config_file.to_str().context("a non-UTF-8 temporary path")?;
                ServerProcess::start(&binary, &work, &["--config", config], &env)
                    .with_context(|| format!("starting instance {index}"))
            })
        };
        let mut processes = Vec::with_capacity(options.instances);
        match options.start {
            StartOrder::OneAfterAnother => {
                for index in 0..options.instances {
                    processes.push(launch(index).await??);
                }
            }
            StartOrder::Together => {
                let launches: Vec<_> = (0..options.instances).map(launch).collect();
                for started in futures_util::future::join_all(launches).await {
                    processes.push(started??);
                }
            }
        }
        let mut instances = Vec::with_capacity(processes.len());
        let origin = processes[0].origin.clone();
        for (index, process) in processes.into_iter().enumerate() {
            if process.origin != origin {
                bail!("instance {index} announces {}, instance 0 {origin}", process.origin);
            }
            instances.push(Instance {
                api: ApiClient::new(&process.base_url, &cert_pem)?,
                base_url: process.base_url.clone(),
                pid: process.pid(),
                process: Mutex::new(Some(process)),
            });
        }
        Ok(Self { instances, postgres, capture, options, cert_pem, origin, storage_dir, dir })
    }

    /// How many instances were started (killed ones included).
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// A client for instance `index` (it fails once the instance is killed).
    pub fn api(&self, index: usize) -> &ApiClient {
        &self.instances[index].api
    }

    /// `https://127.0.0.1:PORT` of instance `index`.
    pub fn base_url(&self, index: usize) -> &str {
        &self.instances[index].base_url
    }

    /// The process id of instance `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.is_running(index).then(|| self.instances[index].pid)
    }

    /// How many sockets instance `index` has open now (its connections and
    /// listeners), read from `/proc`; `None` once it is gone.
    pub fn open_sockets(&self, index: usize) -> Option<usize> {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid(index)?)).ok()?;
        let sockets = fds
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count();
        Some(sockets)
    }

    /// The highest resident memory instance `index` has had, in MiB
    /// (`VmHWM`); `None` once it is gone.
    pub fn peak_rss_mib(&self, index: usize) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid(index)?)).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib as f64 / 1024.0)
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.instances[index].process.lock().expect("instance lock").is_some()
    }

    /// The indexes of the instances still running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.len()).filter(|index| self.is_running(*index)).collect()
    }

    /// Kills instance `index` with SIGKILL (no graceful shutdown: requests
    /// in flight and notifications it claimed are cut off) and waits for it
    /// to be gone. Whether it was running.
    pub fn kill(&self, index: usize) -> bool {
        let process = self.instances[index].process.lock().expect("instance lock").take();
        // Dropping a ServerProcess kills it (SIGKILL) and reaps it.
        process.map(drop).is_some()
    }

    /// The origin every instance announces ([`CLUSTER_ORIGIN`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The certificate all instances serve (PEM).
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    /// The relay every instance mails through.
    pub fn capture(&self) -> &MailCapture {
        &self.capture
    }

    /// The content directory every instance shares (the filesystem object store).
    pub fn storage_dir(&self) -> &Path {
        &self.storage_dir
    }

    /// The data directory of instance `index`.
    pub fn data_dir(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("instance-{index}")).join("sealpost-data")
    }

    /// The shared PostgreSQL (none on SQLite).
    pub fn postgres(&self) -> Option<&PostgresServer> {
        self.postgres.as_ref()
    }

    /// Runs `sql` on the shared database with psql (PostgreSQL only).
    pub async fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.postgres
            .as_ref()
            .context("this cluster runs on SQLite, not PostgreSQL")?
            .psql(sql)
            .await
    }

    /// Notifications waiting to be sent or retried.
    pub async fn queued_notifications(&self) -> anyhow::Result<u64> {
        let count = self.psql("SELECT count(*) FROM outbox WHERE state = 'queued'").await?;
        count.parse().with_context(|| format!("psql said {count:?}"))
    }

    /// Waits until the outbox has no queued notification; the number queued
    /// when `timeout` ran out otherwise.
    pub async fn wait_until_outbox_drained(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let queued = self.queued_notifications().await?;
            if queued == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{queued} notifications still queued after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The signing keys instance `index` publishes at `/.well-known/sealpost`.
    pub async fn signing_keys(&self, index: usize) -> anyhow::Result<Vec<PublicSigningKey>> {
        let response = self.api(index).get("/.well-known/sealpost", None).await?;
        let document: WellKnown = response.expect_status(200)?.json();
        Ok(document.signing_keys)
    }
}

/// A self-signed certificate for every name the instances are reached by,
/// written once for all of them; the paths of the certificate and the key.
fn write_certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let host = CLUSTER_ORIGIN.trim_start_matches("https://").to_owned();
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), host];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem())?;
    std::fs::write(&key_file, certified.signing_key.serialize_pem())?;
    let mut permissions = std::fs::metadata(&key_file)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    std::fs::set_permissions(&key_file, permissions)?;
    Ok((cert_file, key_file))
}

/// The configuration file every instance reads: what they share, and
/// limits a load from one address does not trip over.
fn config_toml(
    options: &ClusterOptions,
    database_url: Option<&str>,
    storage_dir: &Path,
    (cert_file, key_file): (&Path, &Path),
    relay_port: u16,
) -> String {
    let quoted = |path: &Path| format!("{:?}", path.display().to_string());
    let database = database_url.map_or_else(String::new, |url| format!("url = {url:?}\n"));
    format!(
        "[server]\npublic_url = {CLUSTER_ORIGIN:?}\n\n\
         [tls]\ncert_file = {cert}\nkey_file = {key}\n\n\
         [database]\n{database}\n\
         [storage]\nbackend = \"filesystem\"\npath = {storage}\n\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {relay_port}\nsecurity = \"none\"\n\
         from_address = \"sealpost@example.test\"\ntimeout_seconds = {timeout}\n\n\
         [outbox]\nconcurrency = {concurrency}\nlease_seconds = {lease}\n\n\
         [limits]\ncode_requests_per_address_per_hour = 1000000\n\
         code_requests_per_ip_per_hour = 1000000\n\
         failed_logins_per_address_per_15_minutes = 1000000\n\
         failed_logins_per_ip_per_15_minutes = 1000000\n\n\
         [branding]\norganization_name = \"Example Clinic\"\n",
        cert = quoted(cert_file),
        key = quoted(key_file),
        storage = quoted(storage_dir),
        timeout = options.smtp_timeout_seconds,
        concurrency = options.outbox_concurrency,
        lease = options.lease_seconds,
    )
}
