//! The real `sealpost-agent` binary with its own data directory, and a
//! private OS keyring for it: a D-Bus session bus with GNOME Keyring's
//! Secret Service, unlocked, in a temporary home.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::mailstack::MailStack;
use crate::process::workspace_binary;

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A session bus and an unlocked Secret Service of its own; both stop when
/// dropped.
pub struct KeyringSession {
    bus_address: String,
    bus: Child,
    keyring: Child,
    dir: TempDir,
}

impl KeyringSession {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sealpost-keyring-").tempdir()?;
        let socket = dir.path().join("bus");
        let bus_address = format!("unix:path={}", socket.display());
        // A bus of its own with no service activation: the machine's Secret
        // Service must never be started behind the test's back.
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, bus_config(&bus_address))?;
        let bus = Command::new("dbus-daemon")
            .args(["--nofork", "--nopidfile"])
            .arg(format!("--config-file={}", config.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context(
                "starting dbus-daemon (Debian package dbus-daemon; `cargo xtask test` installs it)",
            )?;
        wait_until(|| socket.exists(), "the session bus socket").await?;

        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .envs(session_env(dir.path(), &bus_address))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting gnome-keyring-daemon (Debian package gnome-keyring; `cargo xtask test` installs it)")?;
        // The login keyring is created with, and unlocked by, this password.
        let mut stdin = keyring.stdin.take().context("keyring stdin")?;
        stdin.write_all(b"sealpost-test-keyring").await?;
        drop(stdin);
        let session = Self { bus_address, bus, keyring, dir };
        session.wait_for_secret_service().await?;
        Ok(session)
    }

    async fn wait_for_secret_service(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let output = Command::new("dbus-send")
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .envs(self.env())
                .output()
                .await
                .context("running dbus-send (Debian package dbus-bin)")?;
            if String::from_utf8_lossy(&output.stdout).contains("boolean true") {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("GNOME Keyring did not take the Secret Service name on the test bus");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The environment a process needs to use this keyring.
    pub fn env(&self) -> Vec<(String, String)> {
        session_env(self.dir.path(), &self.bus_address)
    }

    /// Stops the Secret Service (the bus stays): the keyring becomes unavailable.
    pub async fn stop_secret_service(&mut self) {
        let _ = self.keyring.kill().await;
    }
}

impl Drop for KeyringSession {
    fn drop(&mut self) {
        let _ = self.keyring.start_kill();
        let _ = self.bus.start_kill();
    }
}

fn bus_config(address: &str) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>{address}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#
    )
}

fn session_env(home: &Path, bus_address: &str) -> Vec<(String, String)> {
    vec![
        ("DBUS_SESSION_BUS_ADDRESS".into(), bus_address.into()),
        ("HOME".into(), home.display().to_string()),
        ("XDG_DATA_HOME".into(), home.join("data").display().to_string()),
        ("XDG_RUNTIME_DIR".into(), home.display().to_string()),
    ]
}

async fn wait_until(ready: impl Fn() -> bool, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > START_TIMEOUT {
            bail!("{what} did not appear within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// What one command printed.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CliOutput {
    /// Fails with everything printed unless the command succeeded.
    pub fn expect_success(self, what: &str) -> Self {
        assert!(self.success, "{what} failed ({:?}):\n{}\n{}", self.code, self.stdout, self.stderr);
        self
    }
}

/// `sealpost-agent` with a fresh data directory, using `env` (a keyring
/// session's, usually) and no system policy.
pub struct AgentCli {
    binary: PathBuf,
    env: Vec<(String, String)>,
    data_dir: TempDir,
}

impl AgentCli {
    pub fn new(env: Vec<(String, String)>) -> anyhow::Result<Self> {
        let binary =
            workspace_binary("SEALPOST_AGENT_BIN", "sealpost-agent-cli", "sealpost-agent")?;
        let data_dir = tempfile::Builder::new().prefix("sealpost-agent-").tempdir()?;
        Ok(Self { binary, env, data_dir })
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SEALPOST_AGENT_DIR", self.data_dir.path())
            // The machine's own policy file must not steer the tests.
            .env("SEALPOST_POLICY_FILE", self.data_dir.path().join("no-policy.toml"))
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs one command to its end, with `stdin` as its input.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<CliOutput> {
        let started = Instant::now();
        let mut command = self.command(args);
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().context("starting sealpost-agent")?;
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            input.write_all(text.as_bytes()).await?;
        }
        let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .context("sealpost-agent did not finish within 120 s")??;
        Ok(CliOutput {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        })
    }

    /// `register` for `address` on `stack` against the server at
    /// `server_url`, trusting `trusted_pem` (server certificate + mail CA).
    pub async fn register(
        &self,
        stack: &MailStack,
        address: &str,
        server_url: &str,
        trusted_pem: &[u8],
        extra: &[&str],
    ) -> anyhow::Result<CliOutput> {
        let password = stack.user(address).password.clone();
        self.register_with_password(stack, address, &password, server_url, trusted_pem, extra).await
    }

    /// As [`Self::register`], typing `password` as the mailbox password.
    pub async fn register_with_password(
        &self,
        stack: &MailStack,
        address: &str,
        password: &str,
        server_url: &str,
        trusted_pem: &[u8],
        extra: &[&str],
    ) -> anyhow::Result<CliOutput> {
        let ca_file = self.data_dir.path().join("trusted.pem");
        std::fs::write(&ca_file, trusted_pem)?;
        let port = stack.imaps_addr().port().to_string();
        let ca = ca_file.display().to_string();
        let mut args = vec![
            "register",
            "--email",
            address,
            "--password-stdin",
            "--server",
            server_url,
            "--imap-host",
            "localhost",
            "--imap-port",
            &port,
            "--ca-file",
            &ca,
        ];
        args.extend_from_slice(extra);
        self.run(&args, Some(&format!("{password}\n"))).await
    }
}

/// Stops a running `sealpost-agent run` as a service manager does
/// (SIGTERM) and checks that it exits cleanly within 10 s.
pub async fn stop_gracefully(child: &mut Child) {
    let pid = child.id().expect("running");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid"),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stops on SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
}
