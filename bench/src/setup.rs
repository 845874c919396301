//! What the measurements run against: the real mail stack (Postfix in front
//! of Dovecot) and the real `sealpost-server` binary over TLS, on loopback
//! with fresh state, plus registered agents.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sealpost_harness::{
    AgentCli, ApiClient, KeyringSession, MailStack, ServerProcess, StackOptions,
};
use sealpost_proto::api::{DeviceTokens, StoredMessage};
use sealpost_proto::notification::{EmailEnvelope, compose_email};
use tokio::io::AsyncBufReadExt;

/// The binaries under measurement, built by `cargo xtask bench`.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub server: PathBuf,
    pub agent: PathBuf,
}

impl Binaries {
    /// From `SEALPOST_SERVER_BIN` and `SEALPOST_AGENT_BIN`.
    pub fn from_env() -> Result<Self> {
        let path = |name: &str| -> Result<PathBuf> {
            let path = std::env::var_os(name).map(PathBuf::from).with_context(|| {
                format!("{name} is not set; run the benchmarks with `cargo xtask bench`")
            })?;
            if !path.is_file() {
                bail!("{name} names {}, which does not exist", path.display());
            }
            Ok(path)
        };
        Ok(Self { server: path("SEALPOST_SERVER_BIN")?, agent: path("SEALPOST_AGENT_BIN")? })
    }
}

/// The account that stores the secure messages the measurements deliver.
pub const SENDER: &str = "sender@example.test";

/// A mail stack and a server relaying to it, with `sender@` registered.
pub struct Deployment {
    pub stack: MailStack,
    pub server: ServerProcess,
    pub api: ApiClient,
    /// The server's self-signed certificate (PEM).
    pub server_cert: Vec<u8>,
    pub sender: DeviceTokens,
    dir: tempfile::TempDir,
}

impl Deployment {
    /// Starts the stack with mailboxes for `sender` and `local_parts`, and the
    /// server with `extra_env` (`SEALPOST_SECTION__KEY` settings) on top of
    /// limits a benchmark does not trip over.
    pub async fn start(
        binaries: &Binaries,
        local_parts: &[&str],
        stack_options: &StackOptions,
        extra_env: &[(&str, String)],
    ) -> Result<Self> {
        let mut users = vec!["sender"];
        users.extend_from_slice(local_parts);
        let stack = MailStack::start_with(&users, stack_options).await?;
        let dir = tempfile::Builder::new().prefix("sealpost-bench-").tempdir()?;
        let mut env = vec![
            ("SEALPOST_SERVER__LISTEN", "127.0.0.1:0".to_owned()),
            ("SEALPOST_SMTP__HOST", "127.0.0.1".to_owned()),
            ("SEALPOST_SMTP__PORT", stack.smtp_addr().port().to_string()),
            ("SEALPOST_SMTP__SECURITY", "none".to_owned()),
            ("SEALPOST_MESSAGES__MAX_RECIPIENTS", "20000".to_owned()),
            ("SEALPOST_LIMITS__CODE_REQUESTS_PER_ADDRESS_PER_HOUR", "100000".to_owned()),
            ("SEALPOST_LIMITS__CODE_REQUESTS_PER_IP_PER_HOUR", "100000".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        env.extend(extra_env.iter().map(|(key, value)| (*key, value.clone())));
        let server = ServerProcess::start(&binaries.server, dir.path(), &[], &env)?;
        let server_cert = std::fs::read(dir.path().join("sealpost-data/tls/cert.pem"))
            .context("reading the server's generated certificate")?;
        let api = ApiClient::new(&server.base_url, &server_cert)?;
        let (sender, _code) =
            api.register_via_inbox(&stack, &server.origin, SENDER, "bench sender").await?;
        Ok(Self { stack, server, api, server_cert, sender, dir })
    }

    /// The server's data directory (its SQLite database, blobs, TLS files).
    pub fn server_data_dir(&self) -> PathBuf {
        self.dir.path().join("sealpost-data")
    }

    /// Certificates an agent must trust: the server's and the mail stack's CA.
    pub fn trusted_pem(&self) -> Vec<u8> {
        let mut trusted = self.server_cert.clone();
        trusted.extend_from_slice(self.stack.ca_pem().as_bytes());
        trusted
    }

    /// Stores `mime` for `recipients` without having the server mail the
    /// notifications: the measurement sends them itself.
    pub async fn store(&self, recipients: &[&str], mime: Vec<u8>) -> Result<StoredMessage> {
        let response = self.api.upload(&self.sender.access_token, recipients, mime).await?;
        Ok(response.expect_status(201)?.json())
    }

    /// Stores `mime` and has the server queue each recipient's notification.
    pub async fn store_and_notify(
        &self,
        recipients: &[&str],
        mime: Vec<u8>,
    ) -> Result<StoredMessage> {
        let response =
            self.api.upload_with(&self.sender.access_token, recipients, mime, true).await?;
        Ok(response.expect_status(201)?.json())
    }

    /// Registers an agent for `address` with its own keyring and data
    /// directory, watching `folders` (INBOX when empty).
    pub async fn register_agent(&self, address: &str, folders: &[&str]) -> Result<RegisteredAgent> {
        let keyring = KeyringSession::start().await?;
        let cli = AgentCli::new(keyring.env())?;
        let extra: Vec<&str> = folders.iter().flat_map(|folder| ["--folder", *folder]).collect();
        let output = cli
            .register(&self.stack, address, &self.server.base_url, &self.trusted_pem(), &extra)
            .await?;
        if !output.success {
            bail!("registering {address} failed: {}{}", output.stdout, output.stderr);
        }
        Ok(RegisteredAgent { cli, _keyring: keyring })
    }
}

/// An agent registered against a [`Deployment`].
pub struct RegisteredAgent {
    pub cli: AgentCli,
    _keyring: KeyringSession,
}

/// The notification email for `stored`'s first recipient, as the sender's
/// own mail system writes it from the upload's answer.
pub fn notification_email(stored: &StoredMessage, subject: &str, sequence: u64) -> Vec<u8> {
    let issued = &stored.notifications[0];
    let envelope = EmailEnvelope {
        from: (Some("Bench Sender".into()), SENDER.into()),
        to: vec![(None, issued.recipient.clone())],
        cc: vec![],
        subject: subject.to_owned(),
        date: 1_795_000_000 + i64::try_from(sequence).unwrap_or(0),
        message_id: format!("<bench.{sequence}.{}@example.test>", stored.message_id),
        in_reply_to: None,
        references: vec![],
    };
    compose_email(&envelope, issued)
}

/// A `sealpost-agent` process whose log lines are read as they come, each
/// with the moment it arrived.
pub struct RunningAgent {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<(Instant, String)>,
    pub started: Instant,
}

/// The agent's log line once a watched folder waits for mail.
pub const IDLE_ESTABLISHED: &str = "IDLE established";

impl RunningAgent {
    /// Starts `sealpost-agent args…` with debug logging of its IMAP sessions.
    pub fn spawn(cli: &AgentCli, args: &[&str]) -> Result<Self> {
        let mut command = cli.command(args);
        command.env("RUST_LOG", "info,sealpost_agent::imap=debug").env("NO_COLOR", "1");
        let started = Instant::now();
        let mut child = command.spawn().context("starting sealpost-agent")?;
        let stderr = child.stderr.take().context("the agent's stderr")?;
        let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines, started })
    }

    pub fn pid(&self) -> Result<u32> {
        self.child.id().context("the agent has exited")
    }

    /// The next log line containing `needle`, and when it came.
    pub async fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        // What it logged instead, for the error.
        let mut recent = std::collections::VecDeque::new();
        loop {
            let problem = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some((at, line))) if line.contains(needle) => return Ok(at),
                Ok(Some((_, line))) => {
                    if recent.len() == 10 {
                        recent.pop_front();
                    }
                    recent.push_back(line);
                    continue;
                }
                Ok(None) => "exited before logging",
                Err(_) => "did not log",
            };
            let recent = Vec::from(recent).join("\n  ");
            bail!("the agent {problem} {needle:?} within {timeout:?}; its last lines:\n  {recent}");
        }
    }

    /// Forgets the lines logged so far.
    pub fn drain(&mut self) {
        while self.lines.try_recv().is_ok() {}
    }

    /// Waits for the process to end by itself.
    pub async fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .with_context(|| format!("the agent did not finish within {timeout:?}"))?
            .context("waiting for the agent")
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
