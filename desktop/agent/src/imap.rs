//! The IMAP operations the agent needs, each with a timeout, over TLS.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto::{MailboxDatum, Response, Status};
use futures_util::TryStreamExt;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
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
    /// The TLS handshake refused the server's certificate: what is wrong
    /// with it and what to do.
    #[error("the mail server {0} {1}")]
    Certificate(String, String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the mail server's name {0:?} is not valid for TLS")]
    ServerName(String),
    #[error("the mail server refused the login for {0}: check the address and password")]
    Login(String),
    /// The server's own words are in the message, not kept as a source,
    /// so error chains do not print them twice.
    #[error("{}", command_failure(command, error))]
    Command { command: &'static str, error: async_imap::error::Error },
    #[error("IMAP {0} timed out; the agent reconnects and tries again")]
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
    /// Whether literals may follow without waiting for the server's go-ahead
    /// (RFC 7888), so many APPENDs travel in one round trip.
    literal_plus: bool,
    /// Numbers the tags of commands written past async-imap (pipelined APPENDs).
    pipelined_tags: u64,
}

/// A message to APPEND, with the flags and date it should carry.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub flags: &'a [String],
    /// `INTERNALDATE` in the form APPEND takes.
    pub internal_date: Option<&'a str>,
    pub content: &'a [u8],
}

/// A folder with a role (RFC 6154).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialFolder {
    Trash,
    Sent,
}

impl SpecialFolder {
    /// Names servers and clients give the folder when they do not mark it.
    fn usual_names(self) -> &'static [&'static str] {
        match self {
            Self::Trash => &["Trash", "Deleted Items", "Deleted Messages"],
            Self::Sent => &["Sent", "Sent Items", "Sent Messages"],
        }
    }
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
        .map_err(|error| ImapError::Command { command, error })
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
            .map_err(|error| match crate::tls::certificate_problem(&error) {
                Some(problem) => ImapError::Certificate(address.clone(), problem),
                None => ImapError::Connect(address, error),
            })?;
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
        let mut this = Self {
            session,
            uidplus: false,
            can_move: false,
            trash: None,
            literal_plus: false,
            pipelined_tags: 0,
        };
        let capabilities = timed("CAPABILITY", this.session.capabilities()).await?;
        this.uidplus = capabilities.has_str("UIDPLUS");
        this.can_move = capabilities.has_str("MOVE");
        this.literal_plus = capabilities.has_str("LITERAL+");
        Ok(this)
    }

    /// Whether [`Self::remove`] expunges exactly the messages given
    /// (UIDPLUS), rather than moving them or only marking them.
    pub fn removes_exactly(&self) -> bool {
        self.uidplus
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

    /// The folders that can hold messages, INBOX first, then by name.
    pub async fn folders(&mut self) -> Result<Vec<String>, ImapError> {
        let names: Vec<_> = timed("LIST", async {
            self.session.list(Some(""), Some("*")).await?.try_collect().await
        })
        .await?;
        let mut folders: Vec<String> = names
            .iter()
            .filter(|name| {
                !name.attributes().iter().any(|attribute| {
                    matches!(attribute, async_imap::types::NameAttribute::NoSelect)
                })
            })
            .map(|name| name.name().to_owned())
            .collect();
        folders.sort_by_key(|folder| (folder != "INBOX", folder.to_lowercase()));
        Ok(folders)
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
        let fetches = self.uid_fetch(&uid_set(uids), "(UID BODY.PEEK[])").await?;
        let mut messages: Vec<(u32, Vec<u8>)> =
            fetches.into_iter().filter_map(|fetch| Some((fetch.uid?, fetch.body?))).collect();
        messages.sort_by_key(|(uid, _)| *uid);
        Ok(messages)
    }

    /// UIDs of the selected folder from `first` on.
    pub async fn uids_from(&mut self, first: u32) -> Result<Vec<u32>, ImapError> {
        let found = self.uid_search(&format!("UID {}:*", first.max(1))).await?;
        let mut uids: Vec<u32> = found.into_iter().filter(|uid| *uid >= first).collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// Header sections, flags and internal dates of `uids`, without marking them read.
    pub async fn fetch_headers(&mut self, uids: &[u32]) -> Result<Vec<HeaderFetch>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let fetches =
            self.uid_fetch(&uid_set(uids), "(UID FLAGS INTERNALDATE BODY.PEEK[HEADER])").await?;
        let mut headers: Vec<HeaderFetch> = fetches
            .into_iter()
            .filter_map(|fetch| {
                let deleted = fetch.flags.iter().any(|flag| flag.eq_ignore_ascii_case("\\Deleted"));
                Some(HeaderFetch {
                    uid: fetch.uid?,
                    flags: fetch.flags.into_iter().filter(|flag| kept_flag(flag)).collect(),
                    deleted,
                    internal_date: fetch.internal_date,
                    header: fetch.header.unwrap_or_default(),
                })
            })
            .collect();
        headers.sort_by_key(|fetch| fetch.uid);
        Ok(headers)
    }

    /// UIDs whose header `name` contains `value`.
    pub async fn search_header(&mut self, name: &str, value: &str) -> Result<Vec<u32>, ImapError> {
        let query = format!("HEADER {name} \"{}\"", value.replace(['"', '\\'], ""));
        let found = self.uid_search(&query).await?;
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// For each of `values`, the UIDs (ascending) whose header field `name`
    /// is exactly that value: one SEARCH and one FETCH for all of them.
    pub async fn find_by_header(
        &mut self,
        name: &str,
        values: &[&str],
    ) -> Result<HashMap<String, Vec<u32>>, ImapError> {
        let mut found: HashMap<String, Vec<u32>> = HashMap::new();
        if values.is_empty() {
            return Ok(found);
        }
        // SEARCH keys are ANDed; `OR a b` is binary, so n keys take n-1 ORs in front.
        let keys: Vec<String> = values
            .iter()
            .map(|value| format!("HEADER {name} \"{}\"", value.replace(['"', '\\'], "")))
            .collect();
        let query = format!("{}{}", "OR ".repeat(keys.len() - 1), keys.join(" "));
        let matches = self.uid_search(&query).await?;
        if matches.is_empty() {
            return Ok(found);
        }
        let mut uids: Vec<u32> = matches.into_iter().collect();
        uids.sort_unstable();
        let items = format!("(UID BODY.PEEK[HEADER.FIELDS ({name})])");
        let fetches = self.uid_fetch(&uid_set(&uids), &items).await?;
        // SEARCH matches substrings; only exact values count.
        let wanted: HashSet<&str> = values.iter().copied().collect();
        for fetch in &fetches {
            let (Some(uid), Some(header)) = (fetch.uid, fetch.header.as_deref()) else { continue };
            if let Some(value) = header_value(header, name).filter(|v| wanted.contains(v.as_str()))
            {
                found.entry(value).or_default().push(uid);
            }
        }
        for copies in found.values_mut() {
            copies.sort_unstable();
        }
        Ok(found)
    }

    /// APPENDs every message to `folder`. With LITERAL+ all are written
    /// before any answer is read: one round trip for the lot instead of two
    /// per message.
    pub async fn append_all(
        &mut self,
        folder: &str,
        messages: &[NewMessage<'_>],
    ) -> Result<(), ImapError> {
        if !self.literal_plus {
            for message in messages {
                let flags = format!("({})", message.flags.join(" "));
                let date = message.internal_date.map(|date| format!("\"{date}\""));
                timed(
                    "APPEND",
                    self.session.append(folder, Some(&flags), date.as_deref(), message.content),
                )
                .await?;
            }
            return Ok(());
        }
        let mailbox = quoted(folder);
        let mut tags = Vec::with_capacity(messages.len());
        for message in messages {
            self.pipelined_tags += 1;
            let tag = format!("SPA{}", self.pipelined_tags);
            let date =
                message.internal_date.map_or_else(String::new, |date| format!(" \"{date}\""));
            let command = format!(
                "{tag} APPEND {mailbox} ({}){date} {{{}+}}\r\n",
                message.flags.join(" "),
                message.content.len()
            );
            let stream = self.session.get_mut();
            let write = async {
                stream.write_all(command.as_bytes()).await?;
                stream.write_all(message.content).await?;
                stream.write_all(b"\r\n").await
            };
            tokio::time::timeout(COMMAND_TIMEOUT, write)
                .await
                .map_err(|_| ImapError::Timeout("APPEND"))?
                .map_err(|error| ImapError::Command { command: "APPEND", error: error.into() })?;
            tags.push(tag);
        }
        tokio::time::timeout(COMMAND_TIMEOUT, self.session.get_mut().flush())
            .await
            .map_err(|_| ImapError::Timeout("APPEND"))?
            .map_err(|error| ImapError::Command { command: "APPEND", error: error.into() })?;
        // Every answer is read, even after a refusal, so the connection stays in step.
        let mut refused = None;
        let mut answered = 0;
        while answered < tags.len() {
            let response = timed("APPEND", async {
                self.session.read_response().await?.ok_or(async_imap::error::Error::ConnectionLost)
            })
            .await?;
            if let Response::Done { tag, status, outcome } = response.parsed()
                && tags.contains(&tag.0)
            {
                answered += 1;
                if *status != Status::Ok && refused.is_none() {
                    let reason =
                        outcome.information.as_deref().unwrap_or("no reason given").to_owned();
                    refused = Some(match status {
                        Status::No => async_imap::error::Error::No(reason),
                        _ => async_imap::error::Error::Bad(reason),
                    });
                }
            }
        }
        match refused {
            Some(error) => Err(ImapError::Command { command: "APPEND", error }),
            None => Ok(()),
        }
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
        let store = format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)");
        self.checked("UID STORE", &store, |_| {}).await?;
        if self.uidplus {
            self.checked("UID EXPUNGE", &format!("UID EXPUNGE {set}"), |_| {}).await?;
        }
        Ok(())
    }

    /// The folder marked \Trash (RFC 6154), else one named "Trash".
    async fn trash_folder(&mut self) -> Result<String, ImapError> {
        if let Some(trash) = &self.trash {
            return Ok(trash.clone());
        }
        let trash = self.special_folder(SpecialFolder::Trash).await?;
        self.trash = Some(trash.clone());
        Ok(trash)
    }

    /// The folder marked for `kind` (RFC 6154), else the first existing
    /// folder with one of the usual names, else the first usual name.
    pub async fn special_folder(&mut self, kind: SpecialFolder) -> Result<String, ImapError> {
        use async_imap::types::NameAttribute;
        let names: Vec<_> = timed("LIST", async {
            self.session.list(Some(""), Some("*")).await?.try_collect().await
        })
        .await?;
        let marked = names.iter().find(|name| {
            name.attributes().iter().any(|attribute| match kind {
                SpecialFolder::Trash => matches!(attribute, NameAttribute::Trash),
                SpecialFolder::Sent => matches!(attribute, NameAttribute::Sent),
            })
        });
        if let Some(marked) = marked {
            return Ok(marked.name().to_owned());
        }
        let usual = kind.usual_names();
        let existing = usual
            .iter()
            .find(|wanted| names.iter().any(|name| name.name().eq_ignore_ascii_case(wanted)));
        Ok(existing.unwrap_or(&usual[0]).to_string())
    }

    /// Creates `folder` unless it exists.
    pub async fn ensure_folder(&mut self, folder: &str) -> Result<(), ImapError> {
        let existing: Vec<_> = timed("LIST", async {
            self.session.list(Some(""), Some(&quoted(folder))).await?.try_collect().await
        })
        .await?;
        if existing.is_empty() {
            timed("CREATE", self.session.create(folder)).await?;
            // Clients show subscribed folders only.
            let _ = timed("SUBSCRIBE", self.session.subscribe(folder)).await;
        }
        Ok(())
    }

    /// Adds `flags` (system flags or keywords) to `uids` of the selected folder.
    pub async fn add_flags(&mut self, uids: &[u32], flags: &[&str]) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let command = format!("UID STORE {} +FLAGS.SILENT ({})", uid_set(uids), flags.join(" "));
        self.checked("UID STORE", &command, |_| {}).await?;
        Ok(())
    }

    /// IDLEs on the selected folder until the server reports a change or
    /// `max` passes (keep it under the 29 minutes servers allow). Returns the
    /// session and whether something changed.
    pub async fn wait_for_change(self, max: Duration) -> Result<(Self, bool), ImapError> {
        let Self { session, uidplus, can_move, trash, literal_plus, pipelined_tags } = self;
        let mut idle = session.idle();
        timed("IDLE", idle.init()).await?;
        // What start-up time is measured to: the agent is now waiting for mail.
        tracing::debug!("IDLE established");
        let (wait, interrupt) = idle.wait_with_timeout(max);
        let response = wait.await.map_err(|error| ImapError::Command { command: "IDLE", error })?;
        // Dropping the handle interrupts the wait, so it lives until here.
        drop(interrupt);
        let session = timed("DONE", idle.done()).await?;
        Ok((
            Self { session, uidplus, can_move, trash, literal_plus, pipelined_tags },
            matches!(response, IdleResponse::NewData(_)),
        ))
    }

    /// Runs `command` and returns its untagged answers, failing unless the
    /// server completes it with OK. async-imap's own SEARCH, FETCH, STORE
    /// and EXPUNGE stop at the completion without looking at it, so a NO
    /// or BAD would read as "nothing found" or "done": a refused header
    /// fetch would move the cursor past notifications never swapped, and a
    /// refused STORE or EXPUNGE would count a placeholder as removed.
    async fn checked(
        &mut self,
        name: &'static str,
        command: &str,
        mut on_answer: impl FnMut(&Response<'_>) + Send,
    ) -> Result<(), ImapError> {
        use async_imap::error::Error;
        timed(name, async {
            let tag = self.session.run_command(command).await?;
            loop {
                let response = self.session.read_response().await?.ok_or(Error::ConnectionLost)?;
                if let Response::Done { tag: done, status, outcome } = response.parsed()
                    && *done == tag
                {
                    let reason =
                        || outcome.information.as_deref().unwrap_or("no reason given").to_owned();
                    return match status {
                        Status::Ok => Ok(()),
                        Status::No => Err(Error::No(reason())),
                        _ => Err(Error::Bad(reason())),
                    };
                }
                on_answer(response.parsed());
            }
        })
        .await
    }

    /// UID SEARCH with `criteria`, checked.
    async fn uid_search(&mut self, criteria: &str) -> Result<HashSet<u32>, ImapError> {
        let mut found = HashSet::new();
        self.checked("UID SEARCH", &format!("UID SEARCH {criteria}"), |answer| {
            if let Response::MailboxData(MailboxDatum::Search(uids)) = answer {
                found.extend(uids.iter().copied());
            }
        })
        .await?;
        Ok(found)
    }

    /// UID FETCH of `items` for `set`, checked.
    async fn uid_fetch(&mut self, set: &str, items: &str) -> Result<Vec<Fetched>, ImapError> {
        let mut fetched = Vec::new();
        self.checked("UID FETCH", &format!("UID FETCH {set} {items}"), |answer| {
            fetched.extend(Fetched::of(answer));
        })
        .await?;
        Ok(fetched)
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

/// A UID set with runs written as ranges (`1:500,502`), keeping commands
/// short for thousands of UIDs.
fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let uids = sorted;
    let mut parts = Vec::new();
    let mut index = 0;
    while index < uids.len() {
        let start = uids[index];
        let mut end = start;
        while index + 1 < uids.len() && uids[index + 1] == end + 1 {
            index += 1;
            end = uids[index];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}:{end}") });
        index += 1;
    }
    parts.join(",")
}

/// A mailbox name as an IMAP quoted string.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The unfolded value of header field `name` in a fetched header block.
fn header_value(header: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(header);
    let prefix = format!("{}:", name.to_ascii_lowercase());
    let mut lines = text.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if !line.to_ascii_lowercase().starts_with(&prefix) {
            continue;
        }
        let mut value = line[prefix.len()..].trim().to_owned();
        while let Some(next) = lines.next_if(|next| next.starts_with([' ', '\t'])) {
            value.push(' ');
            value.push_str(next.trim());
        }
        return Some(value);
    }
    None
}

/// Flags a copy should carry: everything but `\Recent` (server-managed) and
/// `\Deleted` (a placeholder being removed).
/// What went wrong with a command, and what happens or helps next.
fn command_failure(command: &str, error: &async_imap::error::Error) -> String {
    use async_imap::error::Error;
    match error {
        Error::No(text) if text.to_ascii_lowercase().contains("quota") => format!(
            "the mail server refused IMAP {command} because the mailbox is full ({text}); \
             delete or archive some mail, and the agent finishes what it started"
        ),
        Error::No(text) => format!(
            "the mail server refused IMAP {command} ({text}); the agent tries again later, \
             and if this persists, ask whoever runs the mail server"
        ),
        Error::Bad(text) => format!(
            "the mail server did not accept IMAP {command} ({text}); the agent tries again \
             later, and if this persists, ask whoever runs the mail server"
        ),
        // async-imap reports an answer it cannot parse as an I/O error
        // whose text names the parsing; there is no kind of its own.
        Error::Io(io) if io.to_string().contains("during parsing of") => format!(
            "the mail server answered IMAP {command} with something that is not IMAP; the \
             agent reconnects and tries again, and if this persists, ask whoever runs the \
             mail server"
        ),
        Error::ConnectionLost => format!(
            "the mail server closed the connection during IMAP {command}; the agent \
             reconnects and tries again"
        ),
        Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => format!(
            "the mail server closed the connection in the middle of its answer to IMAP \
             {command}; the agent reconnects and tries again"
        ),
        other => format!(
            "IMAP {command} failed: {other}; the agent reconnects and tries again \
             (if this persists, check the mail server's address and whether it is up)"
        ),
    }
}

/// What one FETCH answer carried, of what the agent asks for.
#[derive(Debug, Default)]
struct Fetched {
    uid: Option<u32>,
    flags: Vec<String>,
    /// As the server wrote it, which is the form APPEND takes.
    internal_date: Option<String>,
    /// `BODY[HEADER]` or `BODY[HEADER.FIELDS (…)]`.
    header: Option<Vec<u8>>,
    /// `BODY[]`.
    body: Option<Vec<u8>>,
}

impl Fetched {
    fn of(response: &Response<'_>) -> Option<Self> {
        use async_imap::imap_proto::{AttributeValue, MessageSection, SectionPath};
        let Response::Fetch(_, attributes) = response else { return None };
        let mut fetched = Self::default();
        for attribute in attributes {
            match attribute {
                AttributeValue::Uid(uid) => fetched.uid = Some(*uid),
                AttributeValue::Flags(flags) => {
                    fetched.flags = flags.iter().map(|flag| flag.to_string()).collect();
                }
                AttributeValue::InternalDate(date) => {
                    fetched.internal_date = Some(date.to_string());
                }
                AttributeValue::BodySection {
                    section: Some(SectionPath::Full(MessageSection::Header)),
                    data,
                    ..
                }
                | AttributeValue::Rfc822Header(data) => {
                    fetched.header = data.as_ref().map(|data| data.to_vec());
                }
                AttributeValue::BodySection { section: None, data, .. }
                | AttributeValue::Rfc822(data) => {
                    fetched.body = data.as_ref().map(|data| data.to_vec());
                }
                _ => {}
            }
        }
        Some(fetched)
    }
}

/// Whether a flag goes along with a swapped message: not `\Recent`, which
/// only the server sets, nor `\Deleted`.
fn kept_flag(flag: &str) -> bool {
    !flag.eq_ignore_ascii_case("\\Recent") && !flag.eq_ignore_ascii_case("\\Deleted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_write_runs_as_ranges() {
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_set(&[9, 4, 4, 5]), "4:5,9");
        assert_eq!(uid_set(&[42]), "42");
        let many: Vec<u32> = (1..=10_000).collect();
        assert_eq!(uid_set(&many), "1:10000");
    }

    #[test]
    fn header_values_are_found_unfolded_and_case_blind() {
        let header = b"Subject: hi\r\nx-sealpost-swapped: abc\r\n def\r\nTo: a@b\r\n\r\n";
        assert_eq!(header_value(header, "X-Sealpost-Swapped").as_deref(), Some("abc def"));
        assert_eq!(header_value(header, "Cc"), None);
    }

    #[test]
    fn mailbox_names_are_quoted() {
        assert_eq!(quoted("INBOX"), "\"INBOX\"");
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
