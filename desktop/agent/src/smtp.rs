//! Sending through the user's own mail server (SMTP submission with the
//! mailbox's password), as their mail program would: the notifications of
//! the secure messages they send leave from their own address and server.

use std::time::Duration;

use sealpost_proto::api::MailSecurity;
use sealpost_relay::{Relay, RelayConfig, Security, SendError, TrustedRoots};

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
    relay: Relay,
    server: String,
}

impl SmtpSender {
    pub fn new(account: &SmtpAccount) -> Result<Self, SmtpError> {
        let server = format!("{}:{}", account.host, account.port);
        let config = RelayConfig {
            host: account.host.clone(),
            port: account.port,
            security: match account.security {
                MailSecurity::Tls => Security::Tls,
                MailSecurity::StartTls => Security::StartTls,
            },
            credentials: Some((account.username.clone(), account.password.clone())),
            timeout: SEND_TIMEOUT,
            // As for IMAP: a configured CA replaces the system's roots.
            roots: match &account.ca_pem {
                Some(pem) => TrustedRoots::Only(pem.clone()),
                None => TrustedRoots::System { extra_pem: None },
            },
        };
        let relay = Relay::new(&config).map_err(|error| SmtpError::Setup {
            server: server.clone(),
            reason: error.to_string(),
        })?;
        Ok(Self { relay, server })
    }

    /// Hands `email` over for `to`, from `from` (the envelope; the headers
    /// are the email's own). Returns the server's answer, which names its
    /// queue id.
    pub async fn send(&self, from: &str, to: &[String], email: &[u8]) -> Result<String, SmtpError> {
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        self.relay.send_raw(from, &to, email).await.map_err(|error| match error {
            SendError::Temporary(reason) => {
                SmtpError::Temporary { server: self.server.clone(), reason }
            }
            SendError::Permanent(reason) => {
                SmtpError::Permanent { server: self.server.clone(), reason }
            }
        })
    }
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender").field("server", &self.server).finish_non_exhaustive()
    }
}
