//! Sending through the user's own mail server (SMTP submission with the
//! mailbox's password), as their mail program would: the notifications of
//! the secure messages they send leave from their own address and server.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sealpost_proto::api::MailSecurity;

/// Longest one message may take to hand over, connection included.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and as whom the agent sends mail.
#[derive(Debug, Clone)]
pub struct SmtpAccount {
    pub host: String,
    pub port: u16,
    /// Implicit TLS (465) or STARTTLS (587); never plain text.
    pub security: MailSecurity,
    pub username: String,
    pub password: String,
    /// A PEM CA to trust instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// Why the mail server did not take a message, split by whether trying
/// again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpError {
    /// Unreachable, timed out, or a 4xx answer: try again later.
    #[error("the mail server {server} did not take the message for now: {reason}")]
    Temporary { server: String, reason: String },
    /// A 5xx answer (an address refused, the login refused): it will not change.
    #[error("the mail server {server} refused the message: {reason}")]
    Permanent { server: String, reason: String },
    #[error("cannot set up sending through {server}: {reason}")]
    Setup { server: String, reason: String },
}

impl SmtpError {
    pub fn is_temporary(&self) -> bool {
        matches!(self, Self::Temporary { .. })
    }
}

/// The user's outgoing mail server, with connections kept for the next message.
#[derive(Clone)]
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
}

impl SmtpSender {
    pub fn new(account: &SmtpAccount) -> Result<Self, SmtpError> {
        let server = format!("{}:{}", account.host, account.port);
        let setup = |reason: String| SmtpError::Setup { server: server.clone(), reason };
        let mut parameters = TlsParameters::builder(account.host.clone());
        if let Some(pem) = &account.ca_pem {
            // As for IMAP: a configured CA replaces the system's roots.
            let root = Certificate::from_pem(pem)
                .map_err(|error| setup(format!("the CA bundle is not PEM: {error}")))?;
            parameters =
                parameters.certificate_store(CertificateStore::None).add_root_certificate(root);
        }
        let parameters = parameters.build_rustls().map_err(|error| setup(error.to_string()))?;
        let tls = match account.security {
            MailSecurity::Tls => Tls::Wrapper(parameters),
            MailSecurity::StartTls => Tls::Required(parameters),
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&account.host)
            .port(account.port)
            .tls(tls)
            .credentials(Credentials::new(account.username.clone(), account.password.clone()))
            .timeout(Some(SEND_TIMEOUT))
            .build();
        Ok(Self { transport, server })
    }

    /// Hands `email` over for `to`, from `from` (the envelope; the headers
    /// are the email's own). Returns the server's answer, which names its
    /// queue id.
    pub async fn send(&self, from: &str, to: &[String], email: &[u8]) -> Result<String, SmtpError> {
        let permanent =
            |reason: String| SmtpError::Permanent { server: self.server.clone(), reason };
        let address = |text: &str| {
            text.parse::<lettre::Address>()
                .map_err(|error| permanent(format!("{text:?} is not an address: {error}")))
        };
        let recipients = to.iter().map(|to| address(to)).collect::<Result<Vec<_>, _>>()?;
        let envelope = Envelope::new(Some(address(from)?), recipients)
            .map_err(|error| permanent(error.to_string()))?;
        let sent = tokio::time::timeout(SEND_TIMEOUT, self.transport.send_raw(&envelope, email));
        let response = match sent.await {
            Err(_) => {
                return Err(SmtpError::Temporary {
                    server: self.server.clone(),
                    reason: format!("no answer within {SEND_TIMEOUT:?}"),
                });
            }
            Ok(Err(error)) if error.is_permanent() => return Err(permanent(error.to_string())),
            Ok(Err(error)) => {
                return Err(SmtpError::Temporary {
                    server: self.server.clone(),
                    reason: error.to_string(),
                });
            }
            Ok(Ok(response)) => response,
        };
        Ok(format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" ")))
    }
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender").field("server", &self.server).finish_non_exhaustive()
    }
}
