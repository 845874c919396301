//! [`MailStack`]: a real Dovecot (IMAP, IMAPS, LMTP) and Postfix (SMTP,
//! delivering into Dovecot over LMTP) as child processes on random loopback
//! ports, with a fresh directory, fresh users and a certificate rustls accepts.
//!
//! Postfix accepts mail only for the stack's own users: an unknown recipient
//! is refused at RCPT time and every other domain is refused as relaying, and
//! even its default transport discards, so nothing can leave the machine.
//! Both servers run in their own process groups and are killed when the stack
//! is dropped, also when a test panics.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use futures_util::TryStreamExt;
use rustls::pki_types::ServerName;
use tempfile::TempDir;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const DOMAIN: &str = "example.test";
/// Longest wait for a server to open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest any single IMAP command may take.
const IMAP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a killed server's ports to close.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Special-use folders every mailbox gets, as desktop clients create them.
const SPECIAL_USE: &[(&str, &str)] = &[
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailUser {
    pub address: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxMessage {
    pub uid: u32,
    pub flags: Vec<String>,
    /// INTERNALDATE as RFC 3339.
    pub internal_date: Option<String>,
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    smtp: u16,
    imap: u16,
    imaps: u16,
    lmtp: u16,
    /// Dovecot's authentication service, which Postfix asks to check SMTP AUTH.
    auth: u16,
    /// Postfix with TLS from the first byte (submissions).
    smtps: u16,
}

/// How a stack differs from the default one.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// The capabilities IMAP announces after login, instead of Dovecot's
    /// own list: to stand in for servers that lack an extension.
    pub imap_capability: Option<String>,
    /// A domain (not the stack's own) whose mail Postfix accepts for any
    /// local part and then discards: a sink for sending at volume.
    pub discard_domain: Option<String>,
    /// Addresses (with their `+` variants) and domains (accepted for any
    /// local part) that Postfix hands to an SMTP server on 127.0.0.1 at
    /// this port: the Sealpost server's listener, as Postfix in front of it
    /// does in production.
    pub route_to_sealpost: Option<(Vec<String>, u16)>,
}

/// Dovecot's post-login capabilities without UIDPLUS (and with MOVE).
pub const CAPABILITIES_WITHOUT_UIDPLUS: &str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE \
SORT THREAD=REFERENCES MULTIAPPEND UNSELECT CHILDREN NAMESPACE CONDSTORE ESEARCH LIST-STATUS \
SPECIAL-USE LITERAL+ MOVE";

pub struct MailStack {
    users: Vec<MailUser>,
    ports: Ports,
    ca_pem: String,
    /// Trusts only `ca_pem`, so every IMAP read also checks the certificate.
    tls: TlsConnector,
    /// Unique to this stack and part of both servers' greetings: proves that
    /// a port answering is ours, not a leftover or parallel instance's.
    banner: String,
    postfix_config: PathBuf,
    postfix_log: PathBuf,
    dovecot: Mutex<Option<Child>>,
    postfix: Mutex<Option<Child>>,
    // Dropped last: the children are gone before their files are.
    dir: TempDir,
}

impl MailStack {
    /// Starts a stack with one mailbox per local part, on fresh ports.
    /// Ports picked at random may be taken by another test before the servers
    /// bind them; then the start is retried on new ports.
    pub async fn start(local_parts: &[&str]) -> Result<MailStack> {
        Self::start_with(local_parts, &StackOptions::default()).await
    }

    /// As [`Self::start`], with Dovecot set up as `options` say.
    pub async fn start_with(local_parts: &[&str], options: &StackOptions) -> Result<MailStack> {
        crate::start_with_retries(|| Self::start_once(local_parts, options)).await
    }

    async fn start_once(local_parts: &[&str], options: &StackOptions) -> Result<MailStack> {
        let dir = tempfile::Builder::new().prefix("sealpost-mailstack-").tempdir()?;
        // Dovecot's and Postfix's unprivileged processes must reach their files.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let ports = free_ports()?;
        let users: Vec<MailUser> = local_parts
            .iter()
            .map(|local| MailUser {
                address: format!("{}@{DOMAIN}", local.to_lowercase()),
                password: format!("pw-{:016x}", rand::random::<u64>()),
            })
            .collect();
        let banner = format!("sealpost-{:016x}", rand::random::<u64>());
        let ca_pem = write_certificates(dir.path())?;
        std::fs::write(dir.path().join("ca.pem"), &ca_pem)?;
        let tls = tls_connector(&ca_pem)?;
        write_dovecot_config(dir.path(), ports, &users, &banner, options)?;
        let (postfix_config, postfix_log) =
            write_postfix_config(dir.path(), ports, &users, &banner, options)?;

        let dovecot = spawn_dovecot(dir.path())?;
        let stack = MailStack {
            users,
            ports,
            ca_pem,
            tls,
            banner,
            postfix_config,
            postfix_log,
            dovecot: Mutex::new(Some(dovecot)),
            postfix: Mutex::new(None),
            dir,
        };
        stack.start_postfix()?;
        // IMAP first: its greeting carries the banner.
        let dovecot_ports = [ports.imap, ports.imaps, ports.lmtp];
        stack
            .wait_until_serving(&dovecot_ports, &stack.dovecot, "Dovecot")
            .await
            .with_context(|| format!("Dovecot log:\n{}", stack.dovecot_log()))?;
        stack
            .wait_until_serving(&[ports.smtp], &stack.postfix, "Postfix")
            .await
            .with_context(|| format!("Postfix log:\n{}", stack.postfix_log()))?;
        Ok(stack)
    }

    pub fn domain(&self) -> &str {
        DOMAIN
    }

    /// Postfix's SMTP port: plain, STARTTLS offered, AUTH after STARTTLS.
    pub fn smtp_addr(&self) -> SocketAddr {
        loopback(self.ports.smtp)
    }

    /// Postfix with implicit TLS (the stack's certificate), AUTH offered.
    /// It opens with the SMTP port, which [`Self::start`] waits for.
    pub fn smtps_addr(&self) -> SocketAddr {
        loopback(self.ports.smtps)
    }

    pub fn imap_addr(&self) -> SocketAddr {
        loopback(self.ports.imap)
    }

    pub fn imaps_addr(&self) -> SocketAddr {
        loopback(self.ports.imaps)
    }

    pub fn lmtp_addr(&self) -> SocketAddr {
        loopback(self.ports.lmtp)
    }

    /// The CA that signed the IMAPS and SMTP STARTTLS certificate (for
    /// `localhost` and 127.0.0.1).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// How the agent reaches `local_part_or_address`'s mailbox: IMAPS on
    /// 127.0.0.1, trusting the stack's CA.
    pub fn agent_account(&self, local_part_or_address: &str) -> sealpost_agent::ImapAccount {
        let user = self.user(local_part_or_address);
        sealpost_agent::ImapAccount {
            host: "127.0.0.1".into(),
            port: self.ports.imaps,
            username: user.address.clone(),
            security: sealpost_agent::imap::MailSecurity::Tls,
            password: user.password.clone(),
            ca_pem: Some(self.ca_pem.as_bytes().to_vec()),
        }
    }

    /// How the agent sends as `local_part_or_address`: SMTPS (implicit TLS,
    /// AUTH with the mailbox password) on 127.0.0.1, trusting the stack's CA.
    pub fn smtp_account(&self, local_part_or_address: &str) -> sealpost_agent::smtp::SmtpAccount {
        let user = self.user(local_part_or_address);
        sealpost_agent::smtp::SmtpAccount {
            host: "127.0.0.1".into(),
            port: self.ports.smtps,
            security: sealpost_agent::imap::MailSecurity::Tls,
            username: user.address.clone(),
            password: user.password.clone(),
            ca_pem: Some(self.ca_pem.as_bytes().to_vec()),
        }
    }

    /// The same CA as a PEM file, for programs configured with a path.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn users(&self) -> &[MailUser] {
        &self.users
    }

    /// A user by local part or full address.
    pub fn user(&self, local_part_or_address: &str) -> &MailUser {
        let wanted = local_part_or_address.to_lowercase();
        self.users
            .iter()
            .find(|user| {
                user.address == wanted || user.address.split('@').next() == Some(wanted.as_str())
            })
            .unwrap_or_else(|| panic!("the mail stack has no user {local_part_or_address}"))
    }

    /// Every message in `mailbox`, oldest first, read over IMAPS.
    pub async fn messages(&self, address: &str, mailbox: &str) -> Result<Vec<MailboxMessage>> {
        let mut session = self.imap_session(address).await?;
        let selected =
            timed(session.select(mailbox)).await?.with_context(|| format!("SELECT {mailbox}"))?;
        let mut messages = Vec::new();
        if selected.exists > 0 {
            let fetches: Vec<_> = timed(async {
                session
                    .fetch("1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
                    .await?
                    .try_collect()
                    .await
            })
            .await?
            .context("FETCH")?;
            for fetch in &fetches {
                // Another client changing flags meanwhile (an agent swapping)
                // makes the server interleave unsolicited FETCH (FLAGS)
                // responses, without UID or body: they are not messages.
                let (Some(uid), Some(body)) = (fetch.uid, fetch.body()) else { continue };
                messages.push(MailboxMessage {
                    uid,
                    flags: fetch.flags().map(|flag| flag_name(&flag)).collect(),
                    internal_date: fetch.internal_date().map(|date| date.to_rfc3339()),
                    raw: body.to_vec(),
                });
            }
        }
        let _ = timed(session.logout()).await;
        messages.sort_by_key(|message| message.uid);
        Ok(messages)
    }

    /// Waits until `mailbox` holds at least `count` messages and returns them all.
    pub async fn wait_for_messages(
        &self,
        address: &str,
        mailbox: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<MailboxMessage>> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages(address, mailbox).await?;
            if messages.len() >= count {
                return Ok(messages);
            }
            if Instant::now() >= deadline {
                let found: String = messages.iter().map(describe).collect();
                bail!(
                    "{address}'s {mailbox} holds {} messages after {timeout:?}, expected {count}:\n{found}Postfix log:\n{}",
                    messages.len(),
                    self.postfix_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The newest message in `mailbox` that `wanted` accepts, waiting for it.
    pub async fn wait_for_email(
        &self,
        address: &str,
        mailbox: &str,
        wanted: impl Fn(&[u8]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        self.wait_for_email_after(address, mailbox, 0, wanted, timeout).await
    }

    /// As [`Self::wait_for_email`], among messages with a UID above
    /// `after_uid` only: what arrived after [`Self::last_uid`] was read.
    pub async fn wait_for_email_after(
        &self,
        address: &str,
        mailbox: &str,
        after_uid: u32,
        wanted: impl Fn(&[u8]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages(address, mailbox).await?;
            let newest_wanted =
                messages.into_iter().rev().filter(|m| m.uid > after_uid).find(|m| wanted(&m.raw));
            if let Some(message) = newest_wanted {
                return Ok(message.raw);
            }
            if Instant::now() >= deadline {
                bail!(
                    "nothing expected arrived in {address}'s {mailbox} within {timeout:?}\nPostfix log:\n{}",
                    self.postfix_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The highest UID in `mailbox` now (0 when empty).
    pub async fn last_uid(&self, address: &str, mailbox: &str) -> Result<u32> {
        Ok(self.messages(address, mailbox).await?.last().map_or(0, |message| message.uid))
    }

    /// APPENDs a raw message with flags such as `\Seen`.
    pub async fn append(
        &self,
        address: &str,
        mailbox: &str,
        raw: &[u8],
        flags: &[&str],
    ) -> Result<()> {
        let mut session = self.imap_session(address).await?;
        let flags = format!("({})", flags.join(" "));
        timed(session.append(mailbox, Some(&flags), None, raw))
            .await?
            .with_context(|| format!("APPEND to {mailbox}"))?;
        let _ = timed(session.logout()).await;
        Ok(())
    }

    /// Adds flags such as `\\Seen` to one message, as a mail client would.
    pub async fn add_flags(
        &self,
        address: &str,
        mailbox: &str,
        uid: u32,
        flags: &[&str],
    ) -> Result<()> {
        let mut session = self.imap_session(address).await?;
        timed(session.select(mailbox)).await?.with_context(|| format!("SELECT {mailbox}"))?;
        let query = format!("+FLAGS ({})", flags.join(" "));
        timed(async {
            session.uid_store(uid.to_string(), &query).await?.try_collect::<Vec<_>>().await
        })
        .await?
        .context("UID STORE")?;
        let _ = timed(session.logout()).await;
        Ok(())
    }

    /// Kills Postfix so connections to [`Self::smtp_addr`] are refused; Dovecot keeps running.
    pub async fn suspend_smtp(&self) -> Result<()> {
        kill_group(&self.postfix);
        wait_until_refused(self.smtp_addr(), "Postfix").await
    }

    /// Starts Postfix again on the same port, with the queue it had.
    pub async fn resume_smtp(&self) -> Result<()> {
        self.start_postfix()?;
        self.wait_until_serving(&[self.ports.smtp], &self.postfix, "Postfix")
            .await
            .with_context(|| format!("Postfix log:\n{}", self.postfix_log()))
    }

    /// Whether Postfix logs `needle` within `timeout`. Its log is written by
    /// a separate logging process, after the SMTP reply the client already
    /// has, so a log line must be waited for, not just read.
    pub async fn postfix_logged(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.postfix_log().contains(needle) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Waits until Postfix's queue is empty: everything it accepted has been
    /// delivered to Dovecot (or bounced), so counting messages in a mailbox
    /// afterwards counts all of them.
    pub async fn wait_until_delivered(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let output = tokio::process::Command::new("/usr/sbin/postqueue")
                .arg("-c")
                .arg(&self.postfix_config)
                .arg("-j")
                .output()
                .await
                .context("cannot run postqueue")?;
            if !output.status.success() {
                bail!("postqueue failed: {}", String::from_utf8_lossy(&output.stderr));
            }
            if output.stdout.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "Postfix still holds mail after {timeout:?}:\n{}",
                    String::from_utf8_lossy(&output.stdout)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Postfix's log and anything it wrote to stderr, for failure messages.
    pub fn postfix_log(&self) -> String {
        let stderr = self.dir.path().join("postfix/stderr.log");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.postfix_log).unwrap_or_default(),
            std::fs::read_to_string(stderr).unwrap_or_default()
        )
    }

    fn dovecot_log(&self) -> String {
        let read = |name: &str| {
            std::fs::read_to_string(self.dir.path().join("dovecot").join(name)).unwrap_or_default()
        };
        format!("{}{}", read("dovecot.log"), read("stderr.log"))
    }

    /// Kills Dovecot and starts it again on the same ports and mailboxes, as
    /// a server restart does to connected clients.
    pub async fn restart_imap(&self) -> Result<()> {
        kill_group(&self.dovecot);
        wait_until_refused(self.imaps_addr(), "Dovecot").await?;
        let child = spawn_dovecot(self.dir.path())?;
        *self.dovecot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(child);
        let ports = [self.ports.imap, self.ports.imaps, self.ports.lmtp];
        self.wait_until_serving(&ports, &self.dovecot, "Dovecot")
            .await
            .with_context(|| format!("Dovecot log:\n{}", self.dovecot_log()))
    }

    fn start_postfix(&self) -> Result<()> {
        // -d: stay in the foreground, so the child is the master itself.
        let child = Command::new("/usr/lib/postfix/sbin/master")
            .arg("-d")
            .arg("-c")
            .arg(&self.postfix_config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(self.dir.path().join("postfix/stderr.log"))?))
            .process_group(0)
            .spawn()
            .context("cannot start Postfix (is postfix installed? cargo xtask test installs it)")?;
        *self.postfix.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(child);
        Ok(())
    }

    /// Polls until every port accepts connections and the first one greets
    /// with this stack's banner, then checks the child still runs. A port
    /// held by someone else would otherwise look ready while our child dies
    /// on it; each server binds all its ports before it serves any, so one
    /// greeting of ours vouches for the rest.
    async fn wait_until_serving(
        &self,
        ports: &[u16],
        child: &Mutex<Option<Child>>,
        name: &str,
    ) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        for &port in ports {
            loop {
                check_running(child, name)?;
                if TcpStream::connect(loopback(port)).await.is_ok() {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("{name} did not open port {port} within {START_TIMEOUT:?}");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if let Some(&port) = ports.first() {
            let greeting = tokio::time::timeout(START_TIMEOUT, greeting(loopback(port)))
                .await
                .with_context(|| format!("{name} sent no greeting on port {port}"))??;
            if !greeting.contains(&self.banner) {
                bail!("port {port} is not {name}'s of this stack; it greets with {greeting:?}");
            }
        }
        check_running(child, name)
    }

    async fn imap_session(
        &self,
        address: &str,
    ) -> Result<async_imap::Session<TlsStream<TcpStream>>> {
        let user = self.user(address);
        let tcp =
            timed(TcpStream::connect(self.imaps_addr())).await?.context("connect to IMAPS")?;
        let localhost = ServerName::try_from("localhost").context("server name")?;
        let stream = timed(self.tls.connect(localhost, tcp))
            .await?
            .context("TLS handshake with Dovecot's IMAPS port")?;
        let mut client = async_imap::Client::new(stream);
        timed(client.read_response())
            .await?
            .context("IMAP greeting")?
            .context("IMAP closed before its greeting")?;
        timed(client.login(&user.address, &user.password))
            .await?
            .map_err(|(error, _)| error)
            .with_context(|| format!("IMAP login as {}", user.address))
    }
}

impl Drop for MailStack {
    fn drop(&mut self) {
        kill_group(&self.postfix);
        kill_group(&self.dovecot);
        // Worker processes that share the listening sockets die a moment
        // after the group leader; only then do the ports refuse.
        let ports = self.ports;
        let deadline = Instant::now() + STOP_TIMEOUT;
        for port in [ports.smtp, ports.imap, ports.imaps, ports.lmtp] {
            while Instant::now() < deadline
                && std::net::TcpStream::connect_timeout(&loopback(port), STOP_TIMEOUT).is_ok()
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if std::env::var_os("SEALPOST_KEEP_MAILSTACK").is_some() {
            eprintln!("mail stack kept in {}", self.dir.path().display());
            self.dir.disable_cleanup(true);
        }
    }
}

/// SIGKILL to the child's whole process group (Dovecot and Postfix both
/// fork workers), then reaps the child. State is throwaway, so no grace.
/// The signal goes out as a system call rather than through a `kill`
/// program, which slim images lack.
fn kill_group(child: &Mutex<Option<Child>>) {
    let taken = child.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    if let Some(mut child) = taken {
        crate::process::kill_process_group(&mut child);
    }
}

/// Fails if the child has exited.
fn check_running(child: &Mutex<Option<Child>>, name: &str) -> Result<()> {
    let mut child = child.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match child.as_mut().map(Child::try_wait).transpose()?.flatten() {
        Some(status) => bail!("{name} exited during start-up ({status})"),
        None => Ok(()),
    }
}

/// The first line a server sends on a new connection.
async fn greeting(addr: SocketAddr) -> Result<String> {
    let mut reader = tokio::io::BufReader::new(TcpStream::connect(addr).await?);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    Ok(line.trim_end().to_owned())
}

/// A client configuration trusting only the stack's own CA.
fn tls_connector(ca_pem: &str) -> Result<TlsConnector> {
    let config = sealpost_agent::tls::client_config(Some(ca_pem.as_bytes()))?;
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn timed<F: std::future::Future>(future: F) -> Result<F::Output> {
    tokio::time::timeout(IMAP_TIMEOUT, future)
        .await
        .with_context(|| format!("IMAP command timed out after {IMAP_TIMEOUT:?}"))
}

/// One line per message for failure reports: UID, flags and subject.
fn describe(message: &MailboxMessage) -> String {
    let text = String::from_utf8_lossy(&message.raw);
    let subject = text
        .lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| line.strip_prefix("Subject:"))
        .unwrap_or(" (no subject)");
    format!("  UID {} {:?}:{subject}\n", message.uid, message.flags)
}

fn flag_name(flag: &async_imap::types::Flag<'_>) -> String {
    use async_imap::types::Flag;
    match flag {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent => "\\Recent".into(),
        Flag::MayCreate => "\\*".into(),
        Flag::Custom(name) => name.to_string(),
    }
}

/// A killed server's port closes with its last process; waits until it refuses.
async fn wait_until_refused(address: SocketAddr, name: &str) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(address).await.is_ok() {
        if Instant::now() >= deadline {
            bail!("{name} still accepts connections after being killed");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn spawn_dovecot(root: &Path) -> Result<Child> {
    Command::new("dovecot")
        .arg("-F")
        .arg("-c")
        .arg(root.join("dovecot/dovecot.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(root.join("dovecot/stderr.log"))?))
        .process_group(0)
        .spawn()
        .context("cannot start dovecot (is dovecot-imapd installed? cargo xtask test installs it)")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Four distinct free ports, all held at once while being picked.
/// The relay domains and transports `options` ask for: domains relayed (so
/// accepted for any local part) and then discarded, and what goes to the
/// Sealpost server's listener.
fn routes(options: &StackOptions) -> String {
    let mut relayed = Vec::new();
    let mut transports = Vec::new();
    if let Some(domain) = &options.discard_domain {
        relayed.push(domain.clone());
        transports.push(format!("{domain}=discard:"));
    }
    if let Some((routed, port)) = &options.route_to_sealpost {
        for entry in routed {
            if !entry.contains('@') {
                relayed.push(entry.clone());
            }
            transports.push(format!("{entry}=smtp:[127.0.0.1]:{port}"));
        }
    }
    let mut lines = String::new();
    if !relayed.is_empty() {
        lines.push_str(&format!("relay_domains = {}\n", relayed.join(", ")));
    }
    if !transports.is_empty() {
        // `+` variants (VERP addresses) match their base address.
        lines.push_str("recipient_delimiter = +\n");
        lines.push_str(&format!("transport_maps = inline:{{ {} }}\n", transports.join(", ")));
    }
    lines
}

fn free_ports() -> Result<Ports> {
    let listeners: Vec<TcpListener> = (0..6)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<_>>()?;
    let port = |index: usize| -> Result<u16> { Ok(listeners[index].local_addr()?.port()) };
    Ok(Ports {
        smtp: port(0)?,
        imap: port(1)?,
        imaps: port(2)?,
        lmtp: port(3)?,
        auth: port(4)?,
        smtps: port(5)?,
    })
}

/// A CA and a leaf for localhost/127.0.0.1 signed by it (a self-signed CA
/// certificate used as the server's own is refused by rustls). Returns the CA.
fn write_certificates(root: &Path) -> Result<String> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Sealpost test mail CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;

    let dir = root.join("dovecot");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cert.pem"), format!("{}{}", leaf.pem(), ca.pem()))?;
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem())?;
    Ok(ca.pem())
}

fn system_id(file: &str, name: &str) -> Result<u32> {
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(name)).then(|| fields.nth(1)?.parse().ok()).flatten()
        })
        .with_context(|| format!("no {name} in {file}: is the Debian package installed?"))
}

fn write_dovecot_config(
    root: &Path,
    ports: Ports,
    users: &[MailUser],
    banner: &str,
    options: &StackOptions,
) -> Result<()> {
    let dir = root.join("dovecot");
    let homes = root.join("mail");
    std::fs::create_dir_all(&homes)?;
    std::fs::set_permissions(&homes, std::fs::Permissions::from_mode(0o755))?;
    let uid = system_id("/etc/passwd", "dovecot")?;
    let gid = system_id("/etc/group", "dovecot")?;
    for user in users {
        let home = homes.join(&user.address);
        std::fs::create_dir_all(&home)?;
        std::os::unix::fs::chown(&home, Some(uid), Some(gid))?;
    }
    let passwd: String = users
        .iter()
        .map(|user| format!("{}:{{PLAIN}}{}::::::\n", user.address, user.password))
        .collect();
    std::fs::write(dir.join("passwd"), passwd)?;
    let mailboxes: String = SPECIAL_USE
        .iter()
        .map(|(name, use_)| {
            format!("  mailbox {name} {{\n    special_use = {use_}\n    auto = subscribe\n  }}\n")
        })
        .collect();
    let dir_text = dir.display();
    let config = format!(
        r#"# Generated for one test mail stack.
protocols = imap lmtp
listen = 127.0.0.1
base_dir = {dir_text}/run
state_dir = {dir_text}/state
log_path = {dir_text}/dovecot.log
info_log_path = {dir_text}/dovecot.log
ssl = yes
ssl_cert = <{dir_text}/cert.pem
ssl_key = <{dir_text}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
login_greeting = Dovecot {banner} ready.
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir_text}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={homes}/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {auth}
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@{DOMAIN}
}}
{capability}"#,
        capability = options.imap_capability.as_ref().map_or_else(String::new, |list| {
            format!("protocol imap {{\n  imap_capability = {list}\n}}\n")
        }),
        homes = homes.display(),
        imap = ports.imap,
        imaps = ports.imaps,
        lmtp = ports.lmtp,
        auth = ports.auth,
    );
    std::fs::write(dir.join("dovecot.conf"), config)?;
    Ok(())
}

/// Writes main.cf, master.cf and the mailbox map; returns the config
/// directory and the log file.
fn write_postfix_config(
    root: &Path,
    ports: Ports,
    users: &[MailUser],
    banner: &str,
    options: &StackOptions,
) -> Result<(PathBuf, PathBuf)> {
    let config = root.join("postfix");
    let queue = root.join("postfix-queue");
    let data = root.join("postfix-data");
    let log = config.join("postfix.log");
    std::fs::create_dir_all(&config)?;
    let postfix_uid = system_id("/etc/passwd", "postfix")?;
    let postdrop_gid = system_id("/etc/group", "postdrop")?;
    let make_dir = |path: &Path, uid: u32, gid: u32, mode: u32| -> Result<()> {
        std::fs::create_dir_all(path)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    make_dir(&queue, 0, 0, 0o755)?;
    make_dir(&queue.join("pid"), 0, 0, 0o755)?;
    for private in [
        "incoming", "active", "deferred", "bounce", "defer", "trace", "flush", "hold", "corrupt",
        "saved", "private",
    ] {
        make_dir(&queue.join(private), postfix_uid, 0, 0o700)?;
    }
    make_dir(&queue.join("maildrop"), postfix_uid, postdrop_gid, 0o730)?;
    make_dir(&queue.join("public"), postfix_uid, postdrop_gid, 0o710)?;
    make_dir(&data, postfix_uid, 0, 0o700)?;

    let mailboxes: String =
        users.iter().map(|user| format!("{} {}/\n", user.address, user.address)).collect();
    std::fs::write(config.join("vmailbox"), mailboxes)?;
    let main_cf = format!(
        "# Generated for one test mail stack: local delivery only, nothing relayed.
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_maps = texthash:{config}/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
default_transport = discard:tests never relay
relay_transport = discard:tests never relay
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtpd_banner = $myhostname ESMTP {banner}
# STARTTLS offered (the stack's CA-signed certificate) and SMTP AUTH checked
# by Dovecot, only over TLS: the path a production relay takes.
smtpd_tls_cert_file = {certs}/cert.pem
smtpd_tls_key_file = {certs}/key.pem
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{auth}
biff = no
maillog_file = {log}
maillog_file_prefixes = {root}
{discard}",
        queue = queue.display(),
        data = data.display(),
        certs = root.join("dovecot").display(),
        auth = ports.auth,
        config = config.display(),
        lmtp = ports.lmtp,
        log = log.display(),
        root = root.display(),
        discard = routes(options),
    );
    std::fs::write(config.join("main.cf"), main_cf)?;
    let master_cf = format!(
        "# service type private unpriv chroot wakeup maxproc command
127.0.0.1:{smtp} inet n - n - - smtpd
127.0.0.1:{smtps} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
pickup     fifo  n - n 60   1 pickup
cleanup    unix  n - n -    0 cleanup
qmgr       fifo  n - n 300  1 qmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
verify     unix  - - n -    1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -    - proxymap
proxywrite unix  - - n -    1 proxymap
smtp       unix  - - n -    - smtp
relay      unix  - - n -    - smtp
showq      unix  n - n -    - showq
error      unix  - - n -    - error
retry      unix  - - n -    - error
discard    unix  - - n -    - discard
lmtp       unix  - - n -    - lmtp
tlsmgr     unix  - - n 1000? 1 tlsmgr
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
",
        smtp = ports.smtp,
        smtps = ports.smtps,
    );
    std::fs::write(config.join("master.cf"), master_cf)?;
    // Postfix waits about two seconds for files changed within the last second.
    let a_minute_ago = SystemTime::now() - Duration::from_secs(60);
    for file in ["main.cf", "master.cf", "vmailbox"] {
        std::fs::File::options().write(true).open(config.join(file))?.set_modified(a_minute_ago)?;
    }
    Ok((config, log))
}
