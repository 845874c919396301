//! [`ServerProcess`]: the real `sealpost-server` binary as a child process;
//! and what the harness's other helper processes (displays, WebDriver
//! servers) share: their own process groups, free ports, waiting until ready.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a helper process (an X server, a WebDriver server) may take to
/// start serving.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `sealpost-server serve`, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// The banner lines it printed at start (listening, origin, fingerprint, …).
    pub banner: Vec<String>,
    pub base_url: String,
    pub origin: String,
    pub fingerprint: String,
}

/// Starts something listening on a port found free, up to three times: the
/// port may be taken by someone else before it binds. The last error if all fail.
pub async fn start_with_retries<T, Start>(
    mut start_once: impl FnMut() -> Start,
) -> anyhow::Result<T>
where
    Start: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut outcome = start_once().await;
    for _ in 1..3 {
        if outcome.is_ok() {
            break;
        }
        outcome = start_once().await;
    }
    outcome
}

/// A child process leading its own group, killed with all it started when
/// dropped: every way out of a launch that started it cleans up by itself.
pub(crate) struct GroupChild(pub(crate) Child);

impl Drop for GroupChild {
    fn drop(&mut self) {
        kill_process_group(&mut self.0);
    }
}

/// Spawns `command` as the leader of a new process group, with no input or
/// output but `stderr`; `cannot` is the error's context when it fails to start.
pub(crate) fn spawn_in_group(
    command: &mut Command,
    stderr: Stdio,
    cannot: &str,
) -> anyhow::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .context(cannot.to_owned())
}

/// Waits until `ready()` says `child` (called `what`) serves; kills it when
/// it exits first or takes longer than [`START_TIMEOUT`].
pub(crate) fn wait_until_ready(
    child: &mut Child,
    what: &str,
    ready: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{what} exited at start ({status})");
        }
        if started.elapsed() > START_TIMEOUT {
            kill_process_group(child);
            bail!("{what} was not ready within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `COUNT` distinct loopback ports that were free a moment ago. Another
/// process may take one before ours binds it: start on them with
/// [`start_with_retries`].
pub(crate) fn free_ports<const COUNT: usize>() -> anyhow::Result<[u16; COUNT]> {
    // All held open together, so that the system hands out distinct ports.
    let listeners = (0..COUNT)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("probing for a free loopback port")?;
    let mut ports = [0; COUNT];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Kills `child` and whatever it started: it must lead its own process
/// group (spawned with `process_group(0)`), whose id is then its pid.
pub(crate) fn kill_process_group(child: &mut std::process::Child) {
    use rustix::process::{Pid, Signal, kill_process_group};
    if let Some(group) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
        let _ = kill_process_group(group, Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A binary of this workspace: the path in `$env_var` (set by `cargo xtask
/// test`, which builds it once), else the debug build of `package`, brought
/// up to date with `cargo build` first.
pub fn workspace_binary(env_var: &str, package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin, "--manifest-path"])
        .arg(&manifest)
        .status()
        .with_context(|| format!("running cargo build for {package}"))?;
    if !status.success() {
        bail!("cargo build -p {package} failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    Ok(target.join("debug").join(bin))
}

impl ServerProcess {
    /// The binary to run: `$SEALPOST_SERVER_BIN`, or the workspace's debug
    /// build, brought up to date with `cargo build` first.
    pub fn binary() -> anyhow::Result<PathBuf> {
        workspace_binary("SEALPOST_SERVER_BIN", "sealpost-server", "sealpost-server")
    }

    /// Runs `binary serve` with `args` and `env`, and waits for its banner.
    pub fn start(
        binary: &Path,
        working_dir: &Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(working_dir);
        Self::start_command(command)
    }

    /// Runs `command`, a server started some other way (as another user,
    /// from an installed package), and waits for its banner.
    pub fn start_command(mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (lines_tx, lines_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut banner = Vec::new();
        let field = |banner: &[String], name: &str| {
            banner
                .iter()
                .find_map(|line| line.trim().strip_prefix(name).map(|rest| rest.trim().to_owned()))
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => banner.push(line),
                Err(_) => {
                    let _ = child.kill();
                    bail!("the server did not finish starting; it printed: {banner:#?}");
                }
            }
            // `mail` is the banner's last line.
            if field(&banner, "mail").is_some() {
                let base_url = field(&banner, "listening").context("no `listening` line")?;
                let origin = field(&banner, "origin").context("no `origin` line")?;
                let fingerprint = field(&banner, "fingerprint").context("no `fingerprint` line")?;
                return Ok(Self { child, banner, base_url, origin, fingerprint });
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the server to stop (SIGTERM) and waits for its exit status.
    pub fn terminate(mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        // A system call rather than the `kill` program, which slim images lack.
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .context("the server's process id")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .context("sending SIGTERM")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("the server did not stop within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
