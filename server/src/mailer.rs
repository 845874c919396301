//! Outgoing mail through the configured relay: automated mail (verification
//! codes) and the notifications the outbox sends.
//!
//! With no relay configured, messages are written as `.eml` files to
//! `<data_dir>/mail-pickup/` instead, so a server on embedded defaults works
//! and an operator can see exactly what would have been sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::settings::{SmtpSecurity, SmtpSettings};
use sealpost_proto::api::HeaderField;

#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Relay(AsyncSmtpTransport<Tokio1Executor>),
    Pickup { dir: PathBuf, transport: AsyncFileTransport<Tokio1Executor> },
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid mail setting {key}: {problem}")]
    Settings { key: &'static str, problem: String },
    #[error("cannot build the email: {0}")]
    Build(String),
    #[error("the SMTP relay did not accept the email: {0}")]
    Relay(#[from] lettre::transport::smtp::Error),
    #[error("cannot write the email to the pickup directory: {0}")]
    Pickup(#[from] lettre::transport::file::Error),
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
    fn from_relay(error: &lettre::transport::smtp::Error) -> Self {
        if error.is_permanent() {
            Self::Permanent(error.to_string())
        } else {
            Self::Temporary(error.to_string())
        }
    }
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
                        let problem =
                            |problem: String| MailError::Settings { key: "smtp.ca_file", problem };
                        let pem = std::fs::read(path).map_err(|error| {
                            problem(format!("cannot read {}: {error}", path.display()))
                        })?;
                        Some(Certificate::from_pem(&pem).map_err(|error| {
                            problem(format!("{} is not a PEM certificate: {error}", path.display()))
                        })?)
                    }
                    None => None,
                };
                let tls_parameters = || {
                    let mut builder = TlsParameters::builder(host.clone());
                    if let Some(root) = extra_root.clone() {
                        builder = builder.add_root_certificate(root);
                    }
                    builder.build_rustls().map_err(|error| MailError::Settings {
                        key: "smtp.host",
                        problem: error.to_string(),
                    })
                };
                let tls = match settings.security {
                    SmtpSecurity::Starttls => Tls::Required(tls_parameters()?),
                    SmtpSecurity::Tls => Tls::Wrapper(tls_parameters()?),
                    SmtpSecurity::None => Tls::None,
                };
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
                        .port(settings.port)
                        .tls(tls)
                        .timeout(Some(Duration::from_secs(settings.timeout_seconds)));
                if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
                    builder = builder
                        .credentials(Credentials::new(user.clone(), password.expose().to_owned()));
                }
                Transport::Relay(builder.build())
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
            Transport::Relay(transport) => {
                let response = transport
                    .send_raw(&envelope, email)
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
            Transport::Relay(transport) => {
                transport.send(message).await?;
            }
            Transport::Pickup { transport, .. } => {
                transport.send(message).await?;
            }
        }
        Ok(())
    }
}
