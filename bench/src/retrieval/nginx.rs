//! nginx, the Debian package, serving files over TLS from a directory of its
//! own: the peer the server's retrieval is measured against.
//!
//! It runs in the foreground from a temporary prefix (configuration, pid,
//! logs, temporary paths, certificate) on a free loopback port, in its own
//! process group so its workers die with it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use super::load::Endpoint;

/// Where Debian installs it.
pub const BINARY: &str = "/usr/sbin/nginx";
/// Longest wait for nginx to serve after starting.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the configuration depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct NginxConfig {
    /// The prefix: configuration, pid, logs and temporary files live here.
    pub dir: PathBuf,
    /// The files served, by name.
    pub root: PathBuf,
    pub listen: SocketAddr,
    /// A master running as root hands requests to workers running as the
    /// `user` directive says (`nobody` by default), who could not read the
    /// private temporary directory: so they run as root too.
    pub as_root: bool,
}

impl NginxConfig {
    /// `nginx.conf`: static files over TLS with keep-alive connections that
    /// last the whole measurement, no access log.
    pub fn render(&self) -> String {
        let dir = self.dir.display();
        let root = self.root.display();
        let user = if self.as_root { "user root root;\n" } else { "" };
        format!(
            "# Generated for one benchmark run.
daemon off;
master_process on;
worker_processes auto;
{user}pid {dir}/nginx.pid;
lock_file {dir}/nginx.lock;
error_log {dir}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{
        message/rfc822 eml;
    }}
    default_type application/octet-stream;

    server {{
        listen {listen} ssl;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        root {root};
        location / {{
        }}
    }}
}}
",
            listen = self.listen,
        )
    }
}

/// A running nginx; killed with its workers when dropped.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    /// Its self-signed certificate (PEM), for clients to trust.
    pub cert_pem: String,
    dir: TempDir,
}

impl Nginx {
    /// Serves the files in `root` over TLS on a free loopback port, and waits
    /// until `probe` (a path under `root`) answers.
    pub async fn start(root: &Path, probe: &str) -> Result<Self> {
        if !Path::new(BINARY).is_file() {
            bail!("{BINARY} does not exist: install the Debian package nginx-light or nginx");
        }
        sealpost_harness::start_with_retries(|| Self::start_once(root, probe)).await
    }

    async fn start_once(root: &Path, probe: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("sealpost-bench-nginx-").tempdir()?;
        let cert_pem = write_certificate(dir.path())?;
        let listen = {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            listener.local_addr()?
        };
        let config = NginxConfig {
            dir: dir.path().to_owned(),
            root: root.to_owned(),
            listen,
            as_root: rustix::process::geteuid().is_root(),
        };
        let config_file = dir.path().join("nginx.conf");
        std::fs::write(&config_file, config.render())?;
        let child = Command::new(BINARY)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config_file)
            // Before the configuration is read, errors go here instead of /var/log.
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("stderr.log"))?))
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {BINARY}"))?;
        let mut nginx = Self { child, addr: listen, cert_pem, dir };
        nginx.wait_until_serving(probe).await.with_context(|| nginx.logs())?;
        Ok(nginx)
    }

    async fn wait_until_serving(&mut self, probe: &str) -> Result<()> {
        let endpoint = Endpoint::new(self.addr, self.cert_pem.as_bytes(), probe, None)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("nginx exited during start-up ({status})");
            }
            let answer = endpoint.fetch_once().await;
            match answer {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() >= deadline => {
                    return Err(
                        error.context(format!("nginx did not serve within {START_TIMEOUT:?}"))
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Its error log and standard error, for a failure's context.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("nginx error.log:\n{}\nnginx stderr:\n{}", read("error.log"), read("stderr.log"))
    }

    /// The worker processes' pids, to tell how many served.
    pub fn workers(&self) -> usize {
        let master = self.child.id().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
        entries
            .filter_map(Result::ok)
            .filter(|entry| {
                let status =
                    std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
                status.lines().any(|line| {
                    line.strip_prefix("PPid:").is_some_and(|ppid| ppid.trim() == master)
                })
            })
            .count()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process_group};
        // nginx leads its own group (`process_group(0)`): its pid is the group's id.
        if let Some(group) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            let _ = kill_process_group(group, Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for localhost and 127.0.0.1 with an ECDSA P-256
/// key, as the server generates its own, so both handshakes cost the same.
fn write_certificate(dir: &Path) -> Result<String> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let cert_pem = certified.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem)?;
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem())?;
    Ok(cert_pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(as_root: bool) -> NginxConfig {
        NginxConfig {
            dir: PathBuf::from("/tmp/prefix"),
            root: PathBuf::from("/tmp/prefix/www"),
            listen: SocketAddr::from(([127, 0, 0, 1], 40123)),
            as_root,
        }
    }

    #[test]
    fn configuration_keeps_everything_inside_the_prefix() {
        let text = config(false).render();
        for line in [
            "daemon off;",
            "worker_processes auto;",
            "pid /tmp/prefix/nginx.pid;",
            "error_log /tmp/prefix/error.log warn;",
            "access_log off;",
            "sendfile on;",
            "keepalive_requests 10000000;",
            "client_body_temp_path /tmp/prefix/client_body;",
            "proxy_temp_path /tmp/prefix/proxy;",
            "fastcgi_temp_path /tmp/prefix/fastcgi;",
            "uwsgi_temp_path /tmp/prefix/uwsgi;",
            "scgi_temp_path /tmp/prefix/scgi;",
            "listen 127.0.0.1:40123 ssl;",
            "ssl_certificate /tmp/prefix/cert.pem;",
            "ssl_certificate_key /tmp/prefix/key.pem;",
            "root /tmp/prefix/www;",
        ] {
            assert!(text.lines().any(|l| l.trim() == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("user "), "{text}");
        // Every `{` has its `}`.
        assert_eq!(text.matches('{').count(), text.matches('}').count(), "{text}");
    }

    #[test]
    fn workers_run_as_root_only_under_a_root_master() {
        assert!(config(true).render().lines().any(|line| line == "user root root;"));
    }
}
