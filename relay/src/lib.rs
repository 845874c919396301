//! Handing email to an SMTP server, as a mail program does: plain,
//! STARTTLS or TLS from the first byte, AUTH when given credentials, and the
//! connections messages went over kept open for the next ones. The server's
//! relay (notifications, codes) and the desktop agent's own outgoing server
//! both send through it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
pub use lettre::transport::smtp::response::Response;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain text: only for a relay on the same host or network.
    Plain,
    /// STARTTLS, required.
    StartTls,
    /// TLS from the first byte.
    Tls,
}

/// Which certificate authorities the server's certificate may chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedRoots {
    /// The system's, and these PEM certificates too.
    System { extra_pem: Option<Vec<u8>> },
    /// Only these PEM certificates (an organization's own CA).
    Only(Vec<u8>),
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// User name and password for AUTH.
    pub credentials: Option<(String, String)>,
    /// For connecting (through TLS and AUTH), and for each message.
    pub timeout: Duration,
    pub roots: TrustedRoots,
}

/// A setting the relay cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("the trusted certificates are unusable: {0}")]
    Roots(String),
    #[error("{0}")]
    Host(String),
}

/// What is wrong with a certificate the TLS handshake refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateProblem {
    OtherHost,
    Expired,
    NotValidYet,
    UnknownIssuer,
    Other,
}

impl CertificateProblem {
    /// The problem, when `error` or an error it wraps is a refused
    /// certificate. I/O errors hold the TLS error inside, sometimes
    /// several deep, without naming it as their source.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        use rustls::CertificateError as Refused;
        let mut current = Some(error);
        while let Some(error) = current {
            let mut inner = error;
            while let Some(wrapped) = inner.downcast_ref::<io::Error>().and_then(io::Error::get_ref)
            {
                inner = wrapped;
            }
            if let Some(rustls::Error::InvalidCertificate(refused)) =
                inner.downcast_ref::<rustls::Error>()
            {
                return Some(match refused {
                    Refused::NotValidForName | Refused::NotValidForNameContext { .. } => {
                        Self::OtherHost
                    }
                    Refused::Expired | Refused::ExpiredContext { .. } => Self::Expired,
                    Refused::NotValidYet | Refused::NotValidYetContext { .. } => Self::NotValidYet,
                    Refused::UnknownIssuer => Self::UnknownIssuer,
                    _ => Self::Other,
                });
            }
            current = error.source();
        }
        None
    }

    /// What the server did, to follow "the server".
    pub fn what(self) -> &'static str {
        match self {
            Self::OtherHost => "presented a certificate for another host name",
            Self::Expired => "presented an expired certificate",
            Self::NotValidYet => "presented a certificate that is not valid yet",
            Self::UnknownIssuer => {
                "presented a certificate from an issuer that is not trusted (self-signed, or a private CA)"
            }
            Self::Other => "presented a certificate that was refused",
        }
    }

    /// What helps, for whoever configures the connection.
    pub fn advice(self) -> &'static str {
        match self {
            Self::OtherHost => {
                "use a host name the certificate lists, or ask the server's administrator for a certificate for this name"
            }
            Self::Expired => {
                "ask the server's administrator to renew it (or check this computer's date and time)"
            }
            Self::NotValidYet => "check this computer's date and time",
            Self::UnknownIssuer => {
                "if the server uses a private CA, configure that CA's certificate as trusted (ca_file)"
            }
            Self::Other => "ask the server's administrator",
        }
    }
}

/// An error's text with the certificate's problem and what helps put first,
/// when that is what failed.
fn explained(error: &(dyn std::error::Error + 'static)) -> String {
    match CertificateProblem::of(error) {
        Some(problem) => {
            format!("the server {}; {} ({error})", problem.what(), problem.advice())
        }
        None => error.to_string(),
    }
}

/// Why the relay did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{}", explained(.0))]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("cannot connect: {}", explained(.0))]
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
pub struct Relay(Arc<RelayInner>);

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
    pub fn new(config: &RelayConfig) -> Result<Self, SetupError> {
        let security = match config.security {
            Security::Plain => RelaySecurity::None,
            Security::StartTls => {
                let mut builder = TlsParameters::builder(config.host.clone());
                let extra = match &config.roots {
                    TrustedRoots::System { extra_pem } => extra_pem.as_deref(),
                    TrustedRoots::Only(pem) => {
                        builder = builder.certificate_store(CertificateStore::None);
                        Some(pem.as_slice())
                    }
                };
                if let Some(pem) = extra {
                    let root = Certificate::from_pem(pem).map_err(|error| {
                        SetupError::Roots(format!("not a PEM certificate: {error}"))
                    })?;
                    builder = builder.add_root_certificate(root);
                }
                RelaySecurity::Starttls(
                    builder.build_rustls().map_err(|error| SetupError::Host(error.to_string()))?,
                )
            }
            Security::Tls => {
                let (connector, name) = implicit_tls(&config.host, &config.roots)?;
                RelaySecurity::Implicit { connector, name }
            }
        };
        Ok(Self(Arc::new(RelayInner {
            host: config.host.clone(),
            port: config.port,
            security,
            credentials: config
                .credentials
                .as_ref()
                .map(|(user, password)| Credentials::new(user.clone(), password.clone())),
            timeout: config.timeout,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
        })))
    }

    /// Hands a complete email over for `to`, from the envelope sender
    /// `from` (empty: the null sender of bounces and auto-replies). Returns
    /// the server's answer (which names its queue id).
    pub async fn send_raw(
        &self,
        from: &str,
        to: &[&str],
        email: &[u8],
    ) -> Result<String, SendError> {
        let address = |text: &str| {
            text.parse::<lettre::Address>()
                .map_err(|error| SendError::Permanent(format!("address {text:?}: {error}")))
        };
        let recipients = to.iter().map(|to| address(to)).collect::<Result<Vec<_>, _>>()?;
        let from = if from.is_empty() { None } else { Some(address(from)?) };
        let envelope = Envelope::new(from, recipients)
            .map_err(|error| SendError::Permanent(error.to_string()))?;
        let response =
            self.send(&envelope, email).await.map_err(|error| SendError::from_relay(&error))?;
        Ok(format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" ")))
    }

    /// Sends one message on an idle connection, or a new one. A reused
    /// connection the relay has meanwhile closed (or is closing: 421) fails
    /// before the message is accepted, so the message is tried once more on a
    /// new connection. A slow relay is not: the message may be in its queue.
    pub async fn send(&self, envelope: &Envelope, email: &[u8]) -> Result<Response, RelayError> {
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

/// TLS from the first byte to `host`, trusting `roots`.
fn implicit_tls(
    host: &str,
    roots: &TrustedRoots,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), SetupError> {
    let mut store = rustls::RootCertStore::empty();
    let extra = match roots {
        TrustedRoots::System { extra_pem } => {
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            extra_pem.as_deref()
        }
        TrustedRoots::Only(pem) => Some(pem.as_slice()),
    };
    if let Some(pem) = extra {
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|error| SetupError::Roots(error.to_string()))?;
            store.add(certificate).map_err(|error| SetupError::Roots(error.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| SetupError::Host(error.to_string()))?
    .with_root_certificates(store)
    .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|error| SetupError::Host(format!("{host:?} is not a host name: {error}")))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_found_inside_nested_io_errors() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        let nested = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, refused));
        assert_eq!(CertificateProblem::of(&nested), Some(CertificateProblem::Expired));
        let text = RelayError::Connect(nested).to_string();
        assert!(text.contains("expired certificate") && text.contains("renew"), "{text}");

        let plain = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(CertificateProblem::of(&plain), None);
        assert_eq!(RelayError::Connect(plain).to_string(), "cannot connect: refused");
    }
}
