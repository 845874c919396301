//! Outgoing automated mail (verification codes) through the configured relay.
//!
//! With no relay configured, messages are written as `.eml` files to
//! `<data_dir>/mail-pickup/` instead, so a server on embedded defaults works
//! and an operator can see exactly what would have been sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
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
                let tls_parameters = || {
                    TlsParameters::new(host.clone()).map_err(|error| MailError::Settings {
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
