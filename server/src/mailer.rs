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
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};
use sealpost_relay::{Relay, RelayConfig, Security, SetupError, TrustedRoots};
pub use sealpost_relay::{RelayError, SendError};

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
                let extra_pem = match &settings.ca_file {
                    Some(path) => {
                        Some(std::fs::read(path).map_err(|error| MailError::Settings {
                            key: "smtp.ca_file",
                            problem: format!("cannot read {}: {error}", path.display()),
                        })?)
                    }
                    None => None,
                };
                let config = RelayConfig {
                    host: host.clone(),
                    port: settings.port,
                    security: match settings.security {
                        SmtpSecurity::Starttls => Security::StartTls,
                        SmtpSecurity::Tls => Security::Tls,
                        SmtpSecurity::None => Security::Plain,
                    },
                    credentials: match (&settings.username, &settings.password) {
                        (Some(user), Some(password)) => {
                            Some((user.clone(), password.expose().to_owned()))
                        }
                        _ => None,
                    },
                    timeout: Duration::from_secs(settings.timeout_seconds),
                    roots: TrustedRoots::System { extra_pem },
                };
                Transport::Relay(Relay::new(&config).map_err(|error| match error {
                    SetupError::Roots(problem) => {
                        MailError::Settings { key: "smtp.ca_file", problem }
                    }
                    SetupError::Host(problem) => MailError::Settings { key: "smtp.host", problem },
                })?)
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
        match &self.transport {
            Transport::Relay(relay) => relay.send_raw(envelope_from, &[to], email).await,
            Transport::Pickup { transport, dir } => {
                let address = |text: &str| {
                    text.parse::<lettre::Address>()
                        .map_err(|error| SendError::Permanent(format!("address {text:?}: {error}")))
                };
                let envelope = Envelope::new(Some(address(envelope_from)?), vec![address(to)?])
                    .map_err(|error| SendError::Permanent(error.to_string()))?;
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
    use std::io;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

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
