//! Outages a test causes on purpose, with real components: a small file
//! system that runs full ([`Tmpfs`]), a database another process holds
//! locked ([`LockedDatabase`]), and the real server binary killed and
//! started again on the same data ([`RestartableServer`]), at a moment
//! [`received_everything_sent`] tells.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sealpost_proto::api::{CodeRequest, DeviceCredential, DeviceTokens, EnrollDevice};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::client::ApiClient;
use crate::process::ServerProcess;

/// A tmpfs of a fixed size mounted on a temporary directory, unmounted
/// when dropped: a disk that really runs full. Mounting needs root, which
/// the tests have (CI included); without it [`Tmpfs::mount`] fails saying so.
pub struct Tmpfs {
    path: PathBuf,
    filler: PathBuf,
    /// The directory mounted on, when made for it.
    _dir: Option<TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `8m`) on a
    /// new temporary directory.
    pub fn mount(size: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sealpost-tmpfs-").tempdir()?;
        let mut tmpfs = Self::mount_on(dir.path(), size)?;
        tmpfs._dir = Some(dir);
        Ok(tmpfs)
    }

    /// Mounts a tmpfs of `size` on the directory `path`, hiding what it holds
    /// until dropped.
    pub fn mount_on(path: &Path, size: &str) -> anyhow::Result<Self> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(path)
            .output()
            .context("running mount (util-linux)")?;
        if !output.status.success() {
            bail!(
                "cannot mount a {size} tmpfs on {} to fill a disk for real: {}. These tests \
                 must run as root (CI does).",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let filler = path.join("filler");
        Ok(Self { path: path.to_owned(), filler, _dir: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the file system to its last byte with one file; the bytes written.
    pub fn fill(&self) -> anyhow::Result<u64> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .context("creating the filler file")?;
        let mut written = 0u64;
        // Large pieces first, then down to single bytes for the last ones.
        for piece in [1 << 20, 64 << 10, 4 << 10, 1] {
            let chunk = vec![0x5a; piece];
            loop {
                match file.write(&chunk) {
                    Ok(0) => break,
                    Ok(count) => written += count as u64,
                    Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
                    Err(error) => return Err(error).context("writing the filler file"),
                }
            }
        }
        Ok(written)
    }

    /// Frees the space [`Self::fill`] took.
    pub fn free(&self) -> anyhow::Result<()> {
        std::fs::remove_file(&self.filler).context("removing the filler file")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process killed a moment ago may still hold a file there.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A database held under a write lock by another process (the `sqlite3`
/// or `psql` command-line program) until [`LockedDatabase::release`].
pub struct LockedDatabase {
    child: tokio::process::Child,
    input: tokio::process::ChildStdin,
}

impl LockedDatabase {
    /// `BEGIN EXCLUSIVE` on the SQLite file `database`: no other connection
    /// may write until released (in WAL mode, readers still read).
    pub async fn sqlite(database: &Path) -> anyhow::Result<Self> {
        let mut command = tokio::process::Command::new("sqlite3");
        command.arg("-bail").arg(database);
        // Waits for a write under way to end, then holds the lock.
        Self::hold(command, ".timeout 10000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n").await
    }

    /// `LOCK TABLE table IN ACCESS EXCLUSIVE MODE` on the PostgreSQL
    /// database at `url`: nobody reads or writes the table until released.
    pub async fn postgres(url: &str, table: &str) -> anyhow::Result<Self> {
        let psql = || {
            let mut command = tokio::process::Command::new("psql");
            command.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url]);
            command
        };
        let mut child = psql()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting psql (Debian package postgresql-client)")?;
        let mut input = child.stdin.take().context("psql's input")?;
        input
            .write_all(format!("BEGIN;\nLOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n").as_bytes())
            .await?;
        input.flush().await?;
        // psql buffers what it prints into a pipe: the lock is seen from another session.
        let granted = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = '{table}' AND l.mode = 'AccessExclusiveLock' AND l.granted"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let output = psql().args(["-c", &granted]).output().await.context("running psql")?;
            if String::from_utf8_lossy(&output.stdout).trim() == "1" {
                return Ok(Self { child, input });
            }
            if Instant::now() > deadline {
                bail!("the lock on {table} was not granted within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `command`, writes `script` to it and waits for the `locked` it
    /// prints once the lock is held.
    async fn hold(mut command: tokio::process::Command, script: &str) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let mut input = child.stdin.take().context("the lock holder's input")?;
        input.write_all(script.as_bytes()).await?;
        input.flush().await?;
        let stdout = child.stdout.take().context("the lock holder's output")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
        let line = line.context("the lock was not taken within 20 s")??;
        if line.as_deref() != Some("locked") {
            let _ = child.kill().await;
            let output = child.wait_with_output().await?;
            bail!("taking the lock failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(Self { child, input })
    }

    /// Commits (nothing was changed) and waits for the program to end.
    pub async fn release(mut self) -> anyhow::Result<()> {
        self.input.write_all(b"COMMIT;\n").await?;
        drop(self.input);
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .context("the lock holder did not end")??;
        if !status.success() {
            bail!("the lock holder failed: {status}");
        }
        Ok(())
    }
}

/// Runs `sql` on the SQLite file `database` with the `sqlite3` program (a
/// reader or writer besides the server); what it printed, trimmed.
pub fn sqlite_query(database: &Path, sql: &str) -> anyhow::Result<String> {
    let output = Command::new("sqlite3")
        .args(["-bail", "-cmd", ".timeout 10000"])
        .arg(database)
        .arg(sql)
        .output()
        .context("running sqlite3 (Debian package sqlite3)")?;
    if !output.status.success() {
        bail!("sqlite3 {sql:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The real `sealpost-server` binary on embedded defaults in a data
/// directory of its own (SQLite, content files under `messages/`, mail
/// written to `mail-pickup/`), which a test kills and starts again.
pub struct RestartableServer {
    binary: PathBuf,
    env: Vec<(&'static str, String)>,
    process: Option<ServerProcess>,
    api: ApiClient,
    cert_pem: Vec<u8>,
    dir: TempDir,
}

impl RestartableServer {
    /// Starts the server with `env` as its settings (`SEALPOST_…` variables)
    /// on top of a free port and embedded defaults.
    pub fn start(env: &[(&'static str, String)]) -> anyhow::Result<Self> {
        sealpost_server::install_crypto_provider();
        let binary = ServerProcess::binary()?;
        let dir = tempfile::Builder::new().prefix("sealpost-restartable-").tempdir()?;
        let mut env = env.to_vec();
        env.push(("SEALPOST_SERVER__LISTEN", "127.0.0.1:0".into()));
        let process = ServerProcess::start(&binary, dir.path(), &[], &env)?;
        let cert_pem = std::fs::read(dir.path().join("sealpost-data/tls/cert.pem"))?;
        let api = ApiClient::new(&process.base_url, &cert_pem)?;
        Ok(Self { binary, env, process: Some(process), api, cert_pem, dir })
    }

    /// A client for the running server (a new one after each restart: the port changes).
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// The port the running server listens on.
    pub fn port(&self) -> anyhow::Result<u16> {
        let process = self.process.as_ref().context("the server is not running")?;
        let port = process.base_url.rsplit(':').next().and_then(|port| port.parse().ok());
        port.with_context(|| format!("no port in {}", process.base_url))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("sealpost-data")
    }

    pub fn database(&self) -> PathBuf {
        self.data_dir().join("sealpost.db")
    }

    pub fn origin(&self) -> anyhow::Result<&str> {
        Ok(&self.process.as_ref().context("the server is not running")?.origin)
    }

    /// SIGKILL: no graceful shutdown, requests in flight are cut off.
    pub fn kill(&mut self) {
        // Dropping a ServerProcess kills it and reaps it.
        drop(self.process.take());
    }

    /// Starts the server again on the same data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let process = ServerProcess::start(&self.binary, self.dir.path(), &[], &self.env)?;
        self.api = ApiClient::new(&process.base_url, &self.cert_pem)?;
        self.process = Some(process);
        Ok(())
    }

    /// The emails written to the pickup directory so far, oldest first.
    pub fn picked_up(&self) -> Vec<Vec<u8>> {
        let Ok(entries) = std::fs::read_dir(self.data_dir().join("mail-pickup")) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "eml"))
            .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
            .collect();
        files.sort();
        files.into_iter().filter_map(|(_, path)| std::fs::read(path).ok()).collect()
    }

    /// Registers a device for `email` with the code the server mails to
    /// the pickup directory.
    pub async fn register(&self, email: &str) -> anyhow::Result<DeviceTokens> {
        let origin = self.origin()?.to_owned();
        let before = self.picked_up().len();
        self.api
            .post_json("/api/v1/verification-codes", &CodeRequest { email: email.into() }, None)
            .await?
            .expect_status(202)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let code = loop {
            let code = self
                .picked_up()
                .iter()
                .skip(before)
                .find_map(|raw| sealpost_proto::verification::find_code(raw, &origin));
            if let Some(code) = code {
                break code;
            }
            if Instant::now() > deadline {
                bail!("no verification email for {email} in the pickup directory");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let request = EnrollDevice {
            email: email.into(),
            device_name: "fault test".into(),
            credential: DeviceCredential::Code(code),
        };
        Ok(self.api.post_json("/api/v1/devices", &request, None).await?.expect_status(201)?.json())
    }
}

/// Whether the server on loopback `port` has read every byte its clients
/// sent: the kernel holds nothing unread on its side of any connection and
/// nothing unsent on the clients' side, and there is at least one. Read
/// from `/proc/net/tcp` (loopback, IPv4).
pub fn received_everything_sent(port: u16) -> anyhow::Result<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    let port_of = |address: &str| {
        address.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok())
    };
    let mut connections = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl, local address, remote address, state, tx_queue:rx_queue, …
        let [_, local, remote, state, queues, ..] = fields[..] else { continue };
        // 01: established.
        if state != "01" {
            continue;
        }
        let (unsent, unread) = queues.split_once(':').context("tx_queue:rx_queue")?;
        let (unsent, unread) = (u64::from_str_radix(unsent, 16)?, u64::from_str_radix(unread, 16)?);
        if port_of(local) == Some(port) {
            connections += 1;
            if unread > 0 {
                return Ok(false);
            }
        } else if port_of(remote) == Some(port) && unsent > 0 {
            return Ok(false);
        }
    }
    Ok(connections > 0)
}
