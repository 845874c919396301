//! The IMAP operations the agent needs, each with a timeout, over TLS.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::Flag;
use futures_util::TryStreamExt;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::tls::{TlsError, client_config};
pub use sealpost_proto::api::MailSecurity;

/// Longest any single IMAP command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and as whom the agent reads mail.
#[derive(Debug, Clone)]
pub struct ImapAccount {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    /// Implicit TLS (port 993 usually) or STARTTLS (143).
    pub security: MailSecurity,
    /// A PEM CA to trust instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot reach the mail server {0}: {1}")]
    Connect(String, std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the mail server's name {0:?} is not valid for TLS")]
    ServerName(String),
    #[error("the mail server refused the login for {0}: check the address and password")]
    Login(String),
    #[error("IMAP {command} failed: {source}")]
    Command { command: &'static str, source: async_imap::error::Error },
    #[error("IMAP {0} timed out")]
    Timeout(&'static str),
    #[error("the mail server closed the connection before greeting")]
    NoGreeting,
}

/// A message's envelope data as the swap needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFetch {
    pub uid: u32,
    /// System and keyword flags, without `\Recent` and `\Deleted`.
    pub flags: Vec<String>,
    /// Marked `\Deleted`: on its way out, by the user or by a swap on a
    /// server without UIDPLUS.
    pub deleted: bool,
    /// `INTERNALDATE` in the form APPEND takes (`"01-Jan-2026 10:00:00 +0000"`).
    pub internal_date: Option<String>,
    pub header: Vec<u8>,
}

/// One logged-in IMAP connection.
pub struct MailboxSession {
    session: async_imap::Session<TlsStream<TcpStream>>,
    /// Whether UID EXPUNGE can remove exactly chosen messages (RFC 4315).
    uidplus: bool,
    /// Whether UID MOVE exists (RFC 6851): the fallback without UIDPLUS.
    can_move: bool,
    /// Where removed messages go without UIDPLUS, found on first need.
    trash: Option<String>,
}

/// What SELECT reports about a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderStatus {
    pub uid_validity: u32,
    /// The UID the next message delivered will get (at least).
    pub uid_next: u32,
}

async fn timed<T>(
    command: &'static str,
    future: impl Future<Output = async_imap::error::Result<T>>,
) -> Result<T, ImapError> {
    tokio::time::timeout(COMMAND_TIMEOUT, future)
        .await
        .map_err(|_| ImapError::Timeout(command))?
        .map_err(|source| ImapError::Command { command, source })
}

impl MailboxSession {
    /// Connects with implicit TLS, or upgrades a plain connection with
    /// STARTTLS; either way nothing is sent in clear but the greeting and
    /// the STARTTLS command itself.
    pub async fn connect(account: &ImapAccount) -> Result<Self, ImapError> {
        let address = format!("{}:{}", account.host, account.port);
        let mut tcp = tokio::time::timeout(COMMAND_TIMEOUT, TcpStream::connect(&address))
            .await
            .map_err(|_| ImapError::Timeout("connect"))?
            .map_err(|error| ImapError::Connect(address.clone(), error))?;
        if account.security == MailSecurity::StartTls {
            let mut plain = async_imap::Client::new(tcp);
            read_greeting(&mut plain, &account.host).await?;
            timed("STARTTLS", plain.run_command_and_check_ok("STARTTLS", None)).await?;
            tcp = plain.into_inner();
        }
        let connector = TlsConnector::from(Arc::new(client_config(account.ca_pem.as_deref())?));
        let name = ServerName::try_from(account.host.clone())
            .map_err(|_| ImapError::ServerName(account.host.clone()))?;
        let tls = tokio::time::timeout(COMMAND_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| ImapError::Timeout("TLS handshake"))?
            .map_err(|error| ImapError::Connect(address, error))?;
        let mut client = async_imap::Client::new(tls);
        // After STARTTLS the server sends no second greeting.
        if account.security == MailSecurity::Tls {
            read_greeting(&mut client, &account.host).await?;
        }
        let session = tokio::time::timeout(
            COMMAND_TIMEOUT,
            client.login(&account.username, &account.password),
        )
        .await
        .map_err(|_| ImapError::Timeout("LOGIN"))?
        .map_err(|_| ImapError::Login(account.username.clone()))?;
        let mut this = Self { session, uidplus: false, can_move: false, trash: None };
        let capabilities = timed("CAPABILITY", this.session.capabilities()).await?;
        this.uidplus = capabilities.has_str("UIDPLUS");
        this.can_move = capabilities.has_str("MOVE");
        Ok(this)
    }

    /// Selects `folder` read-write; returns its UIDVALIDITY.
    pub async fn select(&mut self, folder: &str) -> Result<u32, ImapError> {
        Ok(self.select_status(folder).await?.uid_validity)
    }

    /// Selects `folder` read-write.
    pub async fn select_status(&mut self, folder: &str) -> Result<FolderStatus, ImapError> {
        let mailbox = timed("SELECT", self.session.select(folder)).await?;
        Ok(FolderStatus {
            uid_validity: mailbox.uid_validity.unwrap_or(0),
            uid_next: mailbox.uid_next.unwrap_or(1),
        })
    }

    /// The whole message `uid` of the selected folder, without marking it read.
    pub async fn fetch_message(&mut self, uid: u32) -> Result<Option<Vec<u8>>, ImapError> {
        Ok(self.fetch_messages(&[uid]).await?.into_iter().next().map(|(_, raw)| raw))
    }

    /// Whole messages of the selected folder by UID, without marking them read.
    pub async fn fetch_messages(&mut self, uids: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = uid_set(uids);
        let fetches: Vec<_> = timed("UID FETCH", async {
            self.session.uid_fetch(&set, "(UID BODY.PEEK[])").await?.try_collect().await
        })
        .await?;
        let mut messages: Vec<(u32, Vec<u8>)> =
            fetches.iter().filter_map(|fetch| Some((fetch.uid?, fetch.body()?.to_vec()))).collect();
        messages.sort_by_key(|(uid, _)| *uid);
        Ok(messages)
    }

    /// UIDs of the selected folder from `first` on.
    pub async fn uids_from(&mut self, first: u32) -> Result<Vec<u32>, ImapError> {
        let found: HashSet<u32> =
            timed("UID SEARCH", self.session.uid_search(format!("UID {}:*", first.max(1)))).await?;
        let mut uids: Vec<u32> = found.into_iter().filter(|uid| *uid >= first).collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// Header sections, flags and internal dates of `uids`, without marking them read.
    pub async fn fetch_headers(&mut self, uids: &[u32]) -> Result<Vec<HeaderFetch>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = uid_set(uids);
        let fetches: Vec<_> = timed("UID FETCH", async {
            self.session
                .uid_fetch(&set, "(UID FLAGS INTERNALDATE BODY.PEEK[HEADER])")
                .await?
                .try_collect()
                .await
        })
        .await?;
        let mut headers: Vec<HeaderFetch> = fetches
            .iter()
            .filter_map(|fetch| {
                Some(HeaderFetch {
                    uid: fetch.uid?,
                    flags: fetch.flags().filter_map(|flag| flag_text(&flag)).collect(),
                    deleted: fetch.flags().any(|flag| flag == Flag::Deleted),
                    internal_date: fetch
                        .internal_date()
                        .map(|date| date.format("%d-%b-%Y %H:%M:%S %z").to_string()),
                    header: fetch.header().unwrap_or_default().to_vec(),
                })
            })
            .collect();
        headers.sort_by_key(|fetch| fetch.uid);
        Ok(headers)
    }

    /// UIDs whose header `name` contains `value`.
    pub async fn search_header(&mut self, name: &str, value: &str) -> Result<Vec<u32>, ImapError> {
        let query = format!("HEADER {name} \"{}\"", value.replace(['"', '\\'], ""));
        let found: HashSet<u32> = timed("UID SEARCH", self.session.uid_search(query)).await?;
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable();
        Ok(uids)
    }

    pub async fn append(
        &mut self,
        folder: &str,
        flags: &[String],
        internal_date: Option<&str>,
        message: &[u8],
    ) -> Result<(), ImapError> {
        let flags = format!("({})", flags.join(" "));
        let date = internal_date.map(|date| format!("\"{date}\""));
        timed("APPEND", self.session.append(folder, Some(&flags), date.as_deref(), message)).await
    }

    /// Removes exactly `uids` from the selected folder, never with a
    /// folder-wide EXPUNGE that would also remove messages the user marked
    /// deleted: UID STORE \Deleted + UID EXPUNGE of those UIDs (UIDPLUS);
    /// without UIDPLUS, UID MOVE to the Trash folder; without either, a
    /// copy in Trash and the originals marked \Deleted for the user's
    /// client to expunge.
    pub async fn remove(&mut self, uids: &[u32]) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let set = uid_set(uids);
        if !self.uidplus {
            let trash = self.trash_folder().await?;
            if self.can_move {
                return timed("UID MOVE", self.session.uid_mv(&set, &trash)).await;
            }
            timed("UID COPY", self.session.uid_copy(&set, &trash)).await?;
        }
        timed("UID STORE", async {
            self.session
                .uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        if self.uidplus {
            timed("UID EXPUNGE", async {
                self.session.uid_expunge(&set).await?.try_collect::<Vec<_>>().await
            })
            .await?;
        }
        Ok(())
    }

    /// The folder marked \Trash (RFC 6154), else one named "Trash".
    async fn trash_folder(&mut self) -> Result<String, ImapError> {
        if let Some(trash) = &self.trash {
            return Ok(trash.clone());
        }
        let names: Vec<_> = timed("LIST", async {
            self.session.list(Some(""), Some("*")).await?.try_collect().await
        })
        .await?;
        let marked = names.iter().find(|name| {
            name.attributes()
                .iter()
                .any(|attribute| matches!(attribute, async_imap::types::NameAttribute::Trash))
        });
        let trash = marked.map_or_else(|| "Trash".to_owned(), |name| name.name().to_owned());
        self.trash = Some(trash.clone());
        Ok(trash)
    }

    /// IDLEs on the selected folder until the server reports a change or
    /// `max` passes (keep it under the 29 minutes servers allow). Returns the
    /// session and whether something changed.
    pub async fn wait_for_change(self, max: Duration) -> Result<(Self, bool), ImapError> {
        let Self { session, uidplus, can_move, trash } = self;
        let mut idle = session.idle();
        timed("IDLE", idle.init()).await?;
        // What start-up time is measured to: the agent is now waiting for mail.
        tracing::debug!("IDLE established");
        let (wait, interrupt) = idle.wait_with_timeout(max);
        let response =
            wait.await.map_err(|source| ImapError::Command { command: "IDLE", source })?;
        // Dropping the handle interrupts the wait, so it lives until here.
        drop(interrupt);
        let session = timed("DONE", idle.done()).await?;
        Ok((
            Self { session, uidplus, can_move, trash },
            matches!(response, IdleResponse::NewData(_)),
        ))
    }

    pub async fn logout(mut self) {
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.session.logout()).await;
    }
}

async fn read_greeting<T>(client: &mut async_imap::Client<T>, host: &str) -> Result<(), ImapError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    tokio::time::timeout(COMMAND_TIMEOUT, client.read_response())
        .await
        .map_err(|_| ImapError::Timeout("greeting"))?
        .map_err(|error| ImapError::Connect(host.to_owned(), error))?
        .ok_or(ImapError::NoGreeting)?;
    Ok(())
}

fn uid_set(uids: &[u32]) -> String {
    uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Flags a copy should carry: everything but `\Recent` (server-managed) and
/// `\Deleted` (a placeholder being removed).
fn flag_text(flag: &Flag<'_>) -> Option<String> {
    Some(match flag {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Custom(name) => name.to_string(),
        Flag::Deleted | Flag::Recent | Flag::MayCreate => return None,
    })
}
