//! Faults between the agent or the server and the services they talk to.
//!
//! - [`FlakyProxy`] forwards TCP to a real service and can go down (every
//!   connection cut, new ones closed at once) and come back, as a flapping
//!   network or a restarting server does, or move to another service.
//! - [`ImapFront`] terminates TLS with a certificate of a chosen kind
//!   ([`CertificateKind`]: valid, for another host, expired, or from an issuer
//!   nobody trusts) and, when given one, forwards the plain IMAP inside to a
//!   real Dovecot, answering chosen commands badly ([`ImapFault`]): the mail
//!   servers that say NO, BAD, garbage or stop half-way.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A TCP forwarder to `target` that can be taken down and brought back,
/// or pointed elsewhere.
pub struct FlakyProxy {
    addr: SocketAddr,
    state: watch::Sender<ProxyState>,
    accepted: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy)]
struct ProxyState {
    up: bool,
    target: SocketAddr,
    /// Changes with the target, ending the connections to the old one.
    epoch: u64,
}

impl FlakyProxy {
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (state, watching) = watch::channel(ProxyState { up: true, target, epoch: 0 });
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let accept_loop = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut watching = watching.clone();
                let at_start = *watching.borrow_and_update();
                if !at_start.up {
                    // Down: the connection opens and closes at once, as
                    // with a server that is restarting.
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(at_start.target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watching.wait_for(|now| !now.up || now.epoch != at_start.epoch) => {}
                    }
                });
            }
        });
        Ok(Self { addr, state, accepted, accept_loop })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cuts every open connection; new ones are closed as they arrive.
    pub fn go_down(&self) {
        self.state.send_modify(|state| state.up = false);
    }

    pub fn come_back(&self) {
        self.state.send_modify(|state| state.up = true);
    }

    /// Sends new connections to `target`, cutting those to the old one.
    pub fn redirect(&self, target: SocketAddr) {
        self.state.send_modify(|state| {
            state.target = target;
            state.epoch += 1;
        });
    }

    /// Connections accepted so far, refused ones included: how often the
    /// clients tried.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.go_down();
        self.accept_loop.abort();
    }
}

/// The certificate a TLS endpoint presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateKind {
    /// For localhost and 127.0.0.1, from [`ImapFront::ca_pem`]'s CA.
    Valid,
    /// From the same CA, but for another host name.
    WrongHost,
    /// From the same CA, for localhost, but expired last month.
    Expired,
    /// For localhost, but signed by a CA of its own that no client is given.
    UnknownIssuer,
}

/// How an [`ImapFront`] mistreats commands whose line contains its text
/// (case-insensitive); every other command reaches Dovecot untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImapFault {
    /// APPEND is refused as over quota, and nothing is stored.
    RefuseAppend,
    /// The command is answered BAD without reaching the server.
    Bad(&'static str),
    /// The command is answered with a line that is not IMAP.
    Garbage(&'static str),
    /// The answer stops half-way and the connection closes.
    CloseMidResponse(&'static str),
    /// The answer announces a literal longer than what follows, then the
    /// server falls silent with the connection open.
    ShortLiteral(&'static str),
}

impl ImapFault {
    fn applies_to(&self, command_line: &str) -> bool {
        let line = command_line.to_ascii_uppercase();
        match self {
            Self::RefuseAppend => line.contains(" APPEND "),
            Self::Bad(text)
            | Self::Garbage(text)
            | Self::CloseMidResponse(text)
            | Self::ShortLiteral(text) => line.contains(&text.to_ascii_uppercase()),
        }
    }
}

/// The quota answer of [`ImapFault::RefuseAppend`], as Dovecot words it.
pub const OVER_QUOTA: &str = "NO [OVERQUOTA] Quota exceeded (mailbox for user is full)";
/// The mailbox APPENDs are redirected to under [`ImapFault::RefuseAppend`]:
/// it does not exist, so the server stores nothing.
const NO_SUCH_MAILBOX: &str = "\"Sealpost-Fault-No-Such-Mailbox\"";

/// IMAP over TLS on loopback in front of a plain IMAP backend, or a bare
/// TLS endpoint that closes after the handshake when there is none.
pub struct ImapFront {
    addr: SocketAddr,
    ca_pem: String,
    fault: Arc<Mutex<Option<ImapFault>>>,
    faults_applied: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

impl ImapFront {
    pub async fn start(certificate: CertificateKind, backend: Option<SocketAddr>) -> Result<Self> {
        let (ca_pem, chain, key) = certificate_of(certificate)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let fault: Arc<Mutex<Option<ImapFault>>> = Arc::default();
        let faults_applied = Arc::new(AtomicUsize::new(0));
        let (shared_fault, applied) = (fault.clone(), faults_applied.clone());
        let accept_loop = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, fault, applied) =
                    (acceptor.clone(), shared_fault.clone(), applied.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(client).await else { return };
                    let Some(backend) = backend else { return };
                    let Ok(server) = TcpStream::connect(backend).await else { return };
                    let _ = relay_imap(tls, server, fault, applied).await;
                });
            }
        });
        Ok(Self { addr, ca_pem, fault, faults_applied, accept_loop })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The CA that signed the front's certificate (but for
    /// [`CertificateKind::UnknownIssuer`]).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Mistreats matching commands from now on (`None`: none), on open
    /// connections too.
    pub fn set_fault(&self, fault: Option<ImapFault>) {
        *self.fault.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = fault;
    }

    /// How many commands the fault has hit so far.
    pub fn faults_applied(&self) -> usize {
        self.faults_applied.load(Ordering::SeqCst)
    }
}

impl Drop for ImapFront {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// What the client side tells the server side about the next answer.
#[derive(Debug, Default)]
struct Pending {
    /// Tags whose completion is replaced by [`OVER_QUOTA`].
    over_quota: Vec<String>,
    /// The next answer is cut half-way and the connection closed.
    close_mid_response: bool,
}

type Shared<T> = Arc<tokio::sync::Mutex<T>>;

async fn relay_imap<C>(
    client: C,
    server: TcpStream,
    fault: Arc<Mutex<Option<ImapFault>>>,
    applied: Arc<AtomicUsize>,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, mut server_write) = server.into_split();
    let client_write: Shared<_> = Arc::new(tokio::sync::Mutex::new(client_write));
    let pending: Shared<Pending> = Arc::default();

    let to_client = {
        let (client_write, pending) = (client_write.clone(), pending.clone());
        async move {
            let mut server_read = BufReader::new(server_read);
            loop {
                let Some(mut unit) = read_answer(&mut server_read).await? else { return Ok(()) };
                let mut pending = pending.lock().await;
                let mut client = client_write.lock().await;
                if pending.close_mid_response {
                    client.write_all(&unit[..unit.len() / 2]).await?;
                    client.flush().await?;
                    return client.shutdown().await;
                }
                let text = String::from_utf8_lossy(&unit).into_owned();
                if let Some(at) =
                    pending.over_quota.iter().position(|tag| text.starts_with(&format!("{tag} ")))
                {
                    let tag = pending.over_quota.remove(at);
                    unit = format!("{tag} {OVER_QUOTA}\r\n").into_bytes();
                }
                client.write_all(&unit).await?;
                client.flush().await?;
            }
        }
    };
    let to_server = async move {
        let mut client_read = BufReader::new(client_read);
        let mut line = Vec::new();
        loop {
            line.clear();
            if client_read.read_until(b'\n', &mut line).await? == 0 {
                return Ok(());
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            let tag = text.split(' ').next().unwrap_or("*").to_owned();
            let current = fault.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
            match current.filter(|fault| fault.applies_to(&text)) {
                None => server_write.write_all(&line).await?,
                Some(ImapFault::RefuseAppend) => {
                    applied.fetch_add(1, Ordering::SeqCst);
                    pending.lock().await.over_quota.push(tag);
                    server_write.write_all(redirect_append(&text).as_bytes()).await?;
                }
                Some(ImapFault::CloseMidResponse(_)) => {
                    applied.fetch_add(1, Ordering::SeqCst);
                    pending.lock().await.close_mid_response = true;
                    server_write.write_all(&line).await?;
                }
                Some(ImapFault::Bad(_)) => {
                    applied.fetch_add(1, Ordering::SeqCst);
                    let answer = format!("{tag} BAD Error in IMAP command: unknown arguments\r\n");
                    answer_client(&client_write, answer.as_bytes()).await?;
                    continue;
                }
                Some(ImapFault::Garbage(_)) => {
                    applied.fetch_add(1, Ordering::SeqCst);
                    let answer = b"* \x01\x02 ))(( not IMAP at all \xff\xfe {9x}\r\n";
                    answer_client(&client_write, answer).await?;
                    continue;
                }
                Some(ImapFault::ShortLiteral(_)) => {
                    applied.fetch_add(1, Ordering::SeqCst);
                    let answer = b"* 1 FETCH (UID 1 BODY[HEADER] {4096}\r\nSubject: only this";
                    answer_client(&client_write, answer).await?;
                    // Silent from here on, connection open: the client's timeout must act.
                    std::future::pending::<()>().await;
                }
            }
            // A literal follows its line (at once with LITERAL+, after the
            // server's go-ahead otherwise) and goes through untouched.
            if let Some(length) = literal_length(&line) {
                let mut literal = vec![0; length];
                client_read.read_exact(&mut literal).await?;
                server_write.write_all(&literal).await?;
            }
        }
    };
    tokio::select! {
        result = to_client => result,
        result = to_server => result,
    }
}

async fn answer_client<W: AsyncWrite + Unpin>(
    client: &tokio::sync::Mutex<W>,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut client = client.lock().await;
    client.write_all(bytes).await?;
    client.flush().await
}

/// One answer line from the server with the literals it announces (`{n}`
/// at a line's end) and the rest of the line after each, so a literal is
/// never split from its line.
async fn read_answer<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut unit = Vec::new();
    loop {
        let start = unit.len();
        if reader.read_until(b'\n', &mut unit).await? == 0 {
            return Ok((!unit.is_empty()).then_some(unit));
        }
        let Some(length) = literal_length(&unit[start..]) else { return Ok(Some(unit)) };
        let mut literal = vec![0; length];
        reader.read_exact(&mut literal).await?;
        unit.extend_from_slice(&literal);
    }
}

fn literal_length(line: &[u8]) -> Option<usize> {
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let inner = line.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    inner[open + 1..].trim_end_matches('+').parse().ok()
}

/// `tag APPEND <mailbox> …` with the mailbox replaced by one that does not exist.
fn redirect_append(line: &str) -> String {
    let Some(at) = line.to_ascii_uppercase().find(" APPEND ") else { return line.to_owned() };
    let (head, rest) = line.split_at(at + " APPEND ".len());
    let after_mailbox = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"').map_or("", |end| &quoted[end + 1..])
    } else {
        rest.find(' ').map_or("", |end| &rest[end..])
    };
    format!("{head}{NO_SUCH_MAILBOX}{after_mailbox}")
}

type CertificateChain = (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A fresh CA's PEM and, signed by it (or by a stranger), a leaf of `kind`.
fn certificate_of(kind: CertificateKind) -> Result<CertificateChain> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let make_ca = |name: &str| -> Result<(String, rcgen::Issuer<'static, KeyPair>)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // A name of its own: a client that trusts another fault CA must not
        // take this one for it.
        let name = format!("{name} {:08x}", rand::random::<u32>());
        params.distinguished_name.push(DnType::CommonName, name);
        let certificate = params.self_signed(&key)?;
        Ok((certificate.pem(), rcgen::Issuer::new(params, key)))
    };
    let (ca_pem, trusted) = make_ca("Sealpost test fault CA")?;
    let names = match kind {
        CertificateKind::WrongHost => vec!["mail.elsewhere.test".to_owned()],
        _ => vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
    };
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.distinguished_name.push(DnType::CommonName, "Sealpost fault front");
    if kind == CertificateKind::Expired {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(400);
        params.not_after = now - time::Duration::days(35);
    }
    let leaf = if kind == CertificateKind::UnknownIssuer {
        let (_, stranger) = make_ca("Nobody's CA")?;
        params.signed_by(&key, &stranger)?
    } else {
        params.signed_by(&key, &trusted)?
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((ca_pem, vec![leaf.der().clone()], key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_read_from_the_end_of_a_line() {
        assert_eq!(literal_length(b"A1 APPEND INBOX (\\Seen) {12+}\r\n"), Some(12));
        assert_eq!(literal_length(b"* 1 FETCH (BODY[HEADER] {345}\r\n"), Some(345));
        assert_eq!(literal_length(b"A2 OK done\r\n"), None);
    }

    #[test]
    fn appends_are_redirected_to_a_missing_mailbox() {
        assert_eq!(
            redirect_append("SPA1 APPEND \"INBOX\" (\\Seen) {10+}\r\n"),
            format!("SPA1 APPEND {NO_SUCH_MAILBOX} (\\Seen) {{10+}}\r\n")
        );
        assert_eq!(
            redirect_append("A3 APPEND Sent (\\Seen) {4}\r\n"),
            format!("A3 APPEND {NO_SUCH_MAILBOX} (\\Seen) {{4}}\r\n")
        );
    }
}
