//! Outgoing mail through the configured relay: automated mail (verification
//! codes) and the notifications the outbox sends.
//!
//! With no relay configured, messages are written as `.eml` files to
//! `<data_dir>/mail-pickup/` instead, so a server on embedded defaults works
//! and an operator can see exactly what would have been sent.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::settings::{SmtpSecurity, SmtpSettings};
use sealpost_proto::api::HeaderField;

#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Relay(Relay),
    Pickup { dir: PathBuf, transport: AsyncFileTransport<Tokio1Executor> },
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid mail setting {key}: {problem}")]
    Settings { key: &'static str, problem: String },
    #[error("cannot build the email: {0}")]
    Build(String),
    #[error("the SMTP relay did not accept the email: {0}")]
    Relay(#[from] RelayError),
    #[error("cannot write the email to the pickup directory: {0}")]
    Pickup(#[from] lettre::transport::file::Error),
}

/// Why the relay did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Why a notification was not handed to the relay, split by whether trying
/// again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Connection refused, timeout, a 4xx answer: try again later.
    #[error("{0}")]
    Temporary(String),
    /// A 5xx answer or an address the relay can never accept.
    #[error("{0}")]
    Permanent(String),
}

impl SendError {
    fn from_relay(error: &RelayError) -> Self {
        match error {
            RelayError::Smtp(smtp) if smtp.is_permanent() => Self::Permanent(error.to_string()),
            _ => Self::Temporary(error.to_string()),
        }
    }
}

/// Connections kept open for the next message, at most.
const MAX_IDLE: usize = 16;
/// A connection unused for longer is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The SMTP relay, with the connections messages went over kept open for the
/// next ones: one per message sent at the same time.
#[derive(Clone)]
struct Relay(Arc<RelayInner>);

struct RelayInner {
    host: String,
    port: u16,
    security: RelaySecurity,
    credentials: Option<Credentials>,
    /// For connecting (through TLS and AUTH), and for each message.
    timeout: Duration,
    hello: ClientId,
    idle: Mutex<Vec<IdleConnection>>,
}

enum RelaySecurity {
    None,
    Starttls(TlsParameters),
    /// TLS from the first byte.
    Implicit {
        connector: tokio_rustls::TlsConnector,
        name: ServerName<'static>,
    },
}

struct IdleConnection {
    connection: AsyncSmtpConnection,
    since: Instant,
}

impl Relay {
    /// Sends one message on an idle connection, or a new one. A reused
    /// connection the relay has meanwhile closed (or is closing: 421) fails
    /// before the message is accepted, so the message is tried once more on a
    /// new connection. A slow relay is not: the message may be in its queue.
    async fn send(&self, envelope: &Envelope, email: &[u8]) -> Result<Response, RelayError> {
        if let Some(connection) = self.idle_connection() {
            match self.send_on(connection, envelope, email).await {
                Err(RelayError::Smtp(error)) if !error.is_permanent() && !error.is_client() => {
                    tracing::debug!(%error, "a reused relay connection failed; sending on a new one");
                }
                outcome => return outcome,
            }
        }
        let connection = self.connect().await?;
        self.send_on(connection, envelope, email).await
    }

    async fn send_on(
        &self,
        mut connection: AsyncSmtpConnection,
        envelope: &Envelope,
        email: &[u8],
    ) -> Result<Response, RelayError> {
        let timeout = self.0.timeout;
        let response = tokio::time::timeout(timeout, connection.send(envelope, email))
            .await
            .map_err(|_| RelayError::Timeout(timeout))??;
        // After a refusal lettre has already ended the session; keep only live ones.
        if !connection.has_broken() {
            let mut idle = self.0.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(IdleConnection { connection, since: Instant::now() });
            }
        }
        Ok(response)
    }

    /// The most recently used idle connection that is not too old.
    fn idle_connection(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.0.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|parked| parked.since.elapsed() < IDLE_TIMEOUT);
        idle.pop().map(|parked| parked.connection)
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, RelayError> {
        let timeout = self.0.timeout;
        tokio::time::timeout(timeout, self.open())
            .await
            .map_err(|_| RelayError::Timeout(timeout))?
    }

    /// Connects, greets, secures and authenticates.
    async fn open(&self) -> Result<AsyncSmtpConnection, RelayError> {
        let relay = &self.0;
        let tcp = TcpStream::connect((relay.host.as_str(), relay.port))
            .await
            .map_err(RelayError::Connect)?;
        // Each message ends with a short write (the final dot) right after the
        // body: Nagle's algorithm would hold it until the relay acknowledged
        // the body, which a receiver delays by 40 ms or more.
        tcp.set_nodelay(true).map_err(RelayError::Connect)?;
        let mut connection = match &relay.security {
            RelaySecurity::Implicit { connector, name } => {
                let tls =
                    connector.connect(name.clone(), tcp).await.map_err(RelayError::Connect)?;
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(ImplicitTls(tls)),
                    &relay.hello,
                )
                .await?
            }
            RelaySecurity::None | RelaySecurity::Starttls(_) => {
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &relay.hello).await?
            }
        };
        if let RelaySecurity::Starttls(parameters) = &relay.security {
            connection.starttls(parameters.clone(), &relay.hello).await?;
        }
        if let Some(credentials) = &relay.credentials {
            connection.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(connection)
    }
}

/// A connection with TLS from the first byte, handed to lettre, which only
/// opens such connections itself.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// TLS from the first byte to `host`, trusting the system's roots and `extra_root`.
fn implicit_tls(
    host: &str,
    extra_root: Option<&[u8]>,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), MailError> {
    let problem = |problem: String| MailError::Settings { key: "smtp.host", problem };
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(pem) = extra_root {
        let bad_ca_file = |error: &dyn std::fmt::Display| MailError::Settings {
            key: "smtp.ca_file",
            problem: error.to_string(),
        };
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|error| bad_ca_file(&error))?;
            roots.add(certificate).map_err(|error| bad_ca_file(&error))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| problem(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|error| problem(format!("{host:?} is not a host name: {error}")))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// A plain-text automated email.
pub struct OutgoingMail<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    pub text_body: &'a str,
    pub headers: &'a [HeaderField],
}

impl Mailer {
    pub fn new(settings: &SmtpSettings, data_dir: &Path) -> Result<Self, MailError> {
        let from = Mailbox::new(
            Some(settings.from_name.clone()),
            settings.from_address.parse().map_err(|error| MailError::Settings {
                key: "smtp.from_address",
                problem: format!("{error}"),
            })?,
        );
        let transport = match &settings.host {
            None => {
                let dir = data_dir.join("mail-pickup");
                std::fs::create_dir_all(&dir).map_err(|error| MailError::Settings {
                    key: "server.data_dir",
                    problem: format!("cannot create {}: {error}", dir.display()),
                })?;
                Transport::Pickup { transport: AsyncFileTransport::new(&dir), dir }
            }
            Some(host) => {
                let extra_root = match &settings.ca_file {
                    Some(path) => {
                        Some(std::fs::read(path).map_err(|error| MailError::Settings {
                            key: "smtp.ca_file",
                            problem: format!("cannot read {}: {error}", path.display()),
                        })?)
                    }
                    None => None,
                };
                let security = match settings.security {
                    SmtpSecurity::Starttls => {
                        let mut builder = TlsParameters::builder(host.clone());
                        if let Some(pem) = &extra_root {
                            let root = Certificate::from_pem(pem).map_err(|error| {
                                let path = settings.ca_file.as_deref().unwrap_or(Path::new(""));
                                MailError::Settings {
                                    key: "smtp.ca_file",
                                    problem: format!(
                                        "{} is not a PEM certificate: {error}",
                                        path.display()
                                    ),
                                }
                            })?;
                            builder = builder.add_root_certificate(root);
                        }
                        RelaySecurity::Starttls(builder.build_rustls().map_err(|error| {
                            MailError::Settings { key: "smtp.host", problem: error.to_string() }
                        })?)
                    }
                    SmtpSecurity::Tls => {
                        let (connector, name) = implicit_tls(host, extra_root.as_deref())?;
                        RelaySecurity::Implicit { connector, name }
                    }
                    SmtpSecurity::None => RelaySecurity::None,
                };
                let credentials = match (&settings.username, &settings.password) {
                    (Some(user), Some(password)) => {
                        Some(Credentials::new(user.clone(), password.expose().to_owned()))
                    }
                    _ => None,
                };
                Transport::Relay(Relay(Arc::new(RelayInner {
                    host: host.clone(),
                    port: settings.port,
                    security,
                    credentials,
                    timeout: Duration::from_secs(settings.timeout_seconds),
                    hello: ClientId::default(),
                    idle: Mutex::new(Vec::new()),
                })))
            }
        };
        Ok(Self { from, transport })
    }

    /// Where mail goes, for the start-up banner.
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Relay(_) => "SMTP relay".to_owned(),
            Transport::Pickup { dir, .. } => {
                format!("no SMTP relay configured: mail is written to {}", dir.display())
            }
        }
    }

    /// Hands a complete email to the relay for one recipient, with its own
    /// envelope sender. Returns the relay's answer (Postfix names its queue id
    /// there), or the pickup file's name when no relay is configured.
    pub async fn send_raw(
        &self,
        envelope_from: &str,
        to: &str,
        email: &[u8],
    ) -> Result<String, SendError> {
        let address = |text: &str| {
            text.parse::<lettre::Address>()
                .map_err(|error| SendError::Permanent(format!("address {text:?}: {error}")))
        };
        let envelope = Envelope::new(Some(address(envelope_from)?), vec![address(to)?])
            .map_err(|error| SendError::Permanent(error.to_string()))?;
        match &self.transport {
            Transport::Relay(relay) => {
                let response = relay
                    .send(&envelope, email)
                    .await
                    .map_err(|error| SendError::from_relay(&error))?;
                Ok(format!(
                    "{} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                ))
            }
            Transport::Pickup { transport, dir } => {
                let id = transport
                    .send_raw(&envelope, email)
                    .await
                    .map_err(|error| SendError::Temporary(error.to_string()))?;
                Ok(format!("written to {}", dir.join(format!("{id}.eml")).display()))
            }
        }
    }

    pub async fn send(&self, mail: OutgoingMail<'_>) -> Result<(), MailError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|error| MailError::Build(format!("recipient {}: {error}", mail.to)))?;
        let mut builder = Message::builder().from(self.from.clone()).to(to).subject(mail.subject);
        for field in mail.headers {
            let name = HeaderName::new_from_ascii(field.name.clone())
                .map_err(|_| MailError::Build(format!("header name {:?}", field.name)))?;
            builder = builder.raw_header(HeaderValue::new(name, field.value.clone()));
        }
        let message = builder
            .singlepart(SinglePart::plain(mail.text_body.to_owned()))
            .map_err(|error| MailError::Build(error.to_string()))?;
        match &self.transport {
            Transport::Relay(relay) => {
                relay.send(message.envelope(), &message.formatted()).await?;
            }
            Transport::Pickup { transport, .. } => {
                transport.send(message).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    /// A relay that accepts everything and counts its connections; with
    /// `hang_up_after_each`, it closes every connection once a message is in.
    async fn fake_relay(hang_up_after_each: bool) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, hang_up_after_each));
            }
        });
        (port, connections)
    }

    async fn serve(stream: TcpStream, hang_up_after_each: bool) -> io::Result<()> {
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        writer.write_all(b"220 fake ESMTP\r\n").await?;
        let mut in_data = false;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    writer.write_all(b"250 2.0.0 Ok: queued as FAKE\r\n").await?;
                    if hang_up_after_each {
                        return Ok(());
                    }
                }
                continue;
            }
            let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
            let answer: &[u8] = match verb.as_str() {
                "EHLO" => b"250-fake\r\n250 8BITMIME\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go ahead\r\n"
                }
                "QUIT" => {
                    writer.write_all(b"221 bye\r\n").await?;
                    return Ok(());
                }
                _ => b"250 ok\r\n",
            };
            writer.write_all(answer).await?;
        }
    }

    fn mailer(port: u16) -> Mailer {
        let settings = SmtpSettings {
            host: Some("127.0.0.1".into()),
            port,
            security: SmtpSecurity::None,
            timeout_seconds: 5,
            ..SmtpSettings::default()
        };
        Mailer::new(&settings, Path::new("/nonexistent")).expect("mailer")
    }

    const EMAIL: &[u8] =
        b"From: a@example.test\r\nTo: b@example.test\r\nSubject: x\r\n\r\nHello\r\n";

    #[tokio::test]
    async fn messages_one_after_another_share_a_connection() {
        let (port, connections) = fake_relay(false).await;
        let mailer = mailer(port);
        for _ in 0..3 {
            let answer =
                mailer.send_raw("a@example.test", "b@example.test", EMAIL).await.expect("sent");
            assert!(answer.starts_with("250"), "{answer}");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_relay_closed_is_replaced_without_failing_the_message() {
        let (port, connections) = fake_relay(true).await;
        let mailer = mailer(port);
        for _ in 0..3 {
            mailer.send_raw("a@example.test", "b@example.test", EMAIL).await.expect("sent");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_unreachable_relay_is_a_temporary_failure() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("address").port()
        };
        let error = mailer(port).send_raw("a@example.test", "b@example.test", EMAIL).await;
        assert!(matches!(error, Err(SendError::Temporary(_))), "{error:?}");
    }
}
