//! The registered agent put together: configuration, keyring secrets, state,
//! search index, swapper and one watcher per folder. The headless binary
//! and the desktop app both drive this.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use sealpost_proto::api::WellKnown;
use sealpost_proto::notification::TrustedServer;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, AgentPaths, ConfigError};
use crate::imap::{ImapAccount, MailboxSession};
use crate::index::{IndexError, IndexedMessage, SearchIndex};
use crate::journal::{OutgoingRecord, OutgoingState};
use crate::outbox::{OutboxReport, OutboxWatcher};
use crate::policy::{Policy, PolicyError};
use crate::secrets::{SecretError, Secrets};
use crate::send::{Draft, NO_SMTP_SERVER, SendError, Sender, hand_over};
use crate::server::{ServerClient, ServerError};
use crate::smtp::SmtpSender;
use crate::state::{
    AgentState, ConnectionState, KeptRecord, RejectedRecord, StateError, SwapRecord, now_unix,
};
use crate::swap::{FolderReport, SWAPPED_HEADER, SwapError, Swapper};
use crate::watch::Watcher;

/// How many messages one fetch brings when rebuilding the index.
const REINDEX_BATCH: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secrets(#[from] SecretError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Swap(#[from] SwapError),
    #[error(transparent)]
    Send(#[from] SendError),
    /// A policy file that cannot be used stops the agent: half a policy
    /// silently ignored would leave the computer unlike IT configured it.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(
        "the pinned signing keys in {0} are unusable: {1}; register this computer again (in the Sealpost app: Settings, Sign out, then set it up; headless: `sealpost-agent register`)"
    )]
    PinnedKeys(PathBuf, String),
    #[error(
        "another Sealpost agent already watches this mailbox from {0} (the desktop app or `sealpost-agent run`); stop it first"
    )]
    AlreadyRunning(PathBuf),
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error(
        "your organization does not allow copies of secure messages on this computer \
         (set in {origin}), so there is no local search and attachments are not saved; \
         the messages themselves are in your mailbox"
    )]
    LocalCopiesOff { origin: String },
    #[error("cannot delete {path}, which the IT policy does not allow to keep: {source}")]
    RemoveLocalCopy { path: PathBuf, source: std::io::Error },
}

/// Refuses what would keep a copy of a secure message on this computer
/// (the search index, a saved attachment) when this computer's policy
/// forbids it; read at each use, so a new policy applies at once.
pub fn ensure_local_copies_allowed() -> Result<(), AgentError> {
    match Policy::load_system()? {
        Some(policy) if !Policy::allows_local_copies(Some(&policy)) => {
            Err(AgentError::LocalCopiesOff { origin: policy.origin })
        }
        _ => Ok(()),
    }
}

/// The local search index, unless the system's policy forbids local copies.
pub async fn open_search_index(paths: &AgentPaths) -> Result<SearchIndex, AgentError> {
    ensure_local_copies_allowed()?;
    Ok(SearchIndex::open(&paths.index_db()).await?)
}

/// Deletes the search index and its journal files: the policy forbids
/// keeping it, including one built before the policy arrived.
fn remove_search_index(paths: &AgentPaths) -> Result<(), AgentError> {
    let index = paths.index_db();
    for suffix in ["", "-wal", "-shm"] {
        let mut path = index.clone().into_os_string();
        path.push(suffix);
        let path = PathBuf::from(path);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "search index deleted: the IT policy does not allow local copies")
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(AgentError::RemoveLocalCopy { path, source }),
        }
    }
    Ok(())
}

/// What `run --once` did.
#[derive(Debug)]
pub struct OnceReport {
    pub folders: Vec<(String, FolderReport)>,
    pub outbox: OutboxReport,
}

pub struct Agent {
    pub config: AgentConfig,
    paths: AgentPaths,
    state: Arc<AgentState>,
    /// `None` when the IT policy forbids local copies of secure messages.
    index: Option<Arc<SearchIndex>>,
    swapper: Arc<Swapper>,
    sender: Arc<Sender>,
    server: ServerClient,
    account: ImapAccount,
    /// The index file did not exist: rebuild it from the mailbox.
    index_was_missing: bool,
    /// Held while this agent lives: one watcher per mailbox on this computer.
    _lock: File,
}

impl Agent {
    /// Takes the mailbox lock and loads the secrets of `config`, the
    /// registration read from `paths`.
    pub async fn open(
        paths: &AgentPaths,
        mut config: AgentConfig,
        secrets: Secrets,
    ) -> Result<Self, AgentError> {
        let lock = take_lock(paths)?;
        let policy = Policy::load_system()?;
        if let Some(policy) = &policy {
            policy.apply(&mut config);
        }
        let password = secrets.mailbox_password().await?;
        let well_known = WellKnown {
            api_version: sealpost_proto::api::API_VERSION,
            origin: config.server.origin.clone(),
            signing_keys: config.server.signing_keys.clone(),
            mail: None,
        };
        let trusted = TrustedServer::from_well_known(&well_known)
            .map_err(|error| AgentError::PinnedKeys(paths.config_file(), error.to_string()))?;
        let server = server_client(&config, &secrets).await?;
        let index_was_missing = !paths.index_db().exists();
        let index = if Policy::allows_local_copies(policy.as_ref()) {
            Some(Arc::new(SearchIndex::open(&paths.index_db()).await?))
        } else {
            remove_search_index(paths)?;
            None
        };
        let state = Arc::new(AgentState::open(&paths.state_db()).await?);
        let mut swapper = Swapper::new(server.clone(), trusted, &config.email);
        if let Some(index) = &index {
            swapper = swapper.with_index(index.clone());
        }
        let swapper = Arc::new(swapper);
        // Without a usable mail server the agent still swaps; sending says why it cannot.
        let smtp = match config.smtp_account(password.clone())? {
            Some(account) => SmtpSender::new(&account).map_err(|error| error.to_string()),
            None => Err(NO_SMTP_SERVER.to_owned()),
        };
        let account = config.imap_account(password)?;
        let sender =
            Sender::new(server.clone(), smtp, account.clone(), state.clone(), &config.email)
                .with_sent_folder(config.sent_folder.clone());
        Ok(Self {
            config,
            paths: paths.clone(),
            state,
            index,
            swapper,
            sender: Arc::new(sender),
            server,
            account,
            index_was_missing,
            _lock: lock,
        })
    }

    fn watcher(&self, folder: &str) -> Watcher {
        Watcher::new(self.account.clone(), self.swapper.clone(), folder)
            .with_state(self.state.clone())
    }

    fn outbox_watcher(&self) -> OutboxWatcher {
        OutboxWatcher::new(
            self.account.clone(),
            self.sender.clone(),
            self.server.clone(),
            self.config.outbox_folder(),
            &self.config.folders,
        )
        .with_index(self.index.clone())
    }

    /// What sends secure messages for this account.
    pub fn sender(&self) -> &Arc<Sender> {
        &self.sender
    }

    /// Processes what is pending in every watched folder and the Outbox, once.
    pub async fn run_once(&self) -> Result<OnceReport, AgentError> {
        let mut session = MailboxSession::connect(&self.account).await.map_err(SwapError::from)?;
        self.rebuild_index_if_lost(&mut session).await?;
        let mut folders = Vec::new();
        for folder in &self.config.folders {
            let report = self.watcher(folder).pass(&mut session).await?;
            folders.push((folder.clone(), report));
        }
        let outbox = self.outbox_watcher().pass(&mut session).await?;
        session.logout().await;
        Ok(OnceReport { folders, outbox })
    }

    /// Watches every folder until `shutdown` is cancelled.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), AgentError> {
        self.state.clear_connections().await?;
        if self.index_was_missing && self.index.is_some() {
            match MailboxSession::connect(&self.account).await {
                Ok(mut session) => {
                    self.rebuild_index_if_lost(&mut session).await?;
                    session.logout().await;
                }
                // The watchers retry the connection; the index waits for `reindex`.
                Err(error) => tracing::warn!(%error, "could not rebuild the search index now"),
            }
        }
        let mut watchers: Vec<_> = self
            .config
            .folders
            .iter()
            .map(|folder| {
                let watcher = self.watcher(folder);
                let shutdown = shutdown.clone();
                tokio::spawn(async move { watcher.run(shutdown).await })
            })
            .collect();
        let outbox = self.outbox_watcher();
        let stop_outbox = shutdown.clone();
        watchers.push(tokio::spawn(async move { outbox.run(stop_outbox).await }));
        for watcher in watchers {
            if let Err(error) = watcher.await {
                tracing::error!(%error, "a folder watcher stopped unexpectedly");
            }
        }
        self.state.clear_connections().await?;
        Ok(())
    }

    async fn rebuild_index_if_lost(&self, session: &mut MailboxSession) -> Result<(), AgentError> {
        if self.index_was_missing && self.index.is_some() {
            let count = self.rebuild_index_on(session, &|_, _| {}).await?;
            tracing::info!(count, "search index rebuilt from the mailbox");
        }
        Ok(())
    }

    /// Re-indexes every swapped message in the watched folders from the
    /// mailbox; `progress` hears (done, total) per folder batch.
    pub async fn rebuild_index(
        &self,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<usize, AgentError> {
        let mut session = MailboxSession::connect(&self.account).await.map_err(SwapError::from)?;
        let count = self.rebuild_index_on(&mut session, progress).await?;
        session.logout().await;
        Ok(count)
    }

    async fn rebuild_index_on(
        &self,
        session: &mut MailboxSession,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<usize, AgentError> {
        let Some(index) = &self.index else {
            return Err(AgentError::LocalCopiesOff { origin: Policy::system_origin() });
        };
        let mut indexed = 0;
        for folder in &self.config.folders {
            session.select(folder).await.map_err(SwapError::from)?;
            let uids = session.search_header(SWAPPED_HEADER, "").await.map_err(SwapError::from)?;
            for batch in uids.chunks(REINDEX_BATCH) {
                let fetched = session.fetch_messages(batch).await.map_err(SwapError::from)?;
                let found: Vec<(u32, String, &[u8])> = fetched
                    .iter()
                    .filter_map(|(uid, raw)| Some((*uid, swapped_message_id(raw)?, raw.as_slice())))
                    .collect();
                let entries: Vec<IndexedMessage<'_>> = found
                    .iter()
                    .map(|(uid, message_id, raw)| IndexedMessage {
                        message_id,
                        folder,
                        uid: *uid,
                        raw,
                    })
                    .collect();
                // One transaction per batch: a rebuild of many thousands stays quick.
                index.add_all(&entries, now_unix()).await?;
                indexed += entries.len();
                progress(indexed, uids.len());
            }
        }
        Ok(indexed)
    }

    pub fn paths(&self) -> &AgentPaths {
        &self.paths
    }

    pub fn state(&self) -> &Arc<AgentState> {
        &self.state
    }

    /// The server client, for calls outside swapping and sending (recall, slips).
    pub fn server(&self) -> &ServerClient {
        &self.server
    }
}

/// How [`send_draft`] left a message.
#[derive(Debug, Clone)]
pub enum SendOutcome {
    /// Sent, given up on, or kept for a later attempt (see its state).
    Done(Box<OutgoingRecord>),
    /// Handed to the agent of another process, which had not finished
    /// within the wait; its journal entry has this client key.
    HandedOver { client_key: String },
}

/// Sends `draft` from this computer: with `sender` when this process runs
/// the agent; else with an agent opened here for the purpose; else, when
/// another process's agent holds the mailbox (the app, the service), by
/// handing it over through the Outbox folder and following its journal
/// entry for up to `wait`.
pub async fn send_draft(
    paths: &AgentPaths,
    sender: Option<&Sender>,
    draft: &Draft,
    wait: std::time::Duration,
) -> Result<SendOutcome, AgentError> {
    if let Some(sender) = sender {
        return Ok(SendOutcome::Done(Box::new(send_with(sender, draft).await?)));
    }
    let config = AgentConfig::load(paths)?;
    let secrets = Secrets::os_keyring(&config.email).await?;
    match Agent::open(paths, config.clone(), secrets.clone()).await {
        Ok(agent) => Ok(SendOutcome::Done(Box::new(send_with(agent.sender(), draft).await?))),
        Err(AgentError::AlreadyRunning(_)) => {
            let account = config.imap_account(secrets.mailbox_password().await?)?;
            let client_key = hand_over(&account, config.outbox_folder(), draft).await?;
            tracing::info!(%client_key, folder = config.outbox_folder(), "draft handed to the running Sealpost agent through the Outbox folder");
            let state = AgentState::open(&paths.state_db()).await?;
            let deadline = std::time::Instant::now() + wait;
            loop {
                if let Some(record) = state.outgoing_by_client_key(&client_key).await?
                    && record.state != OutgoingState::Queued
                {
                    return Ok(SendOutcome::Done(Box::new(record)));
                }
                if std::time::Instant::now() >= deadline {
                    return Ok(SendOutcome::HandedOver { client_key });
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        Err(error) => Err(error),
    }
}

async fn send_with(sender: &Sender, draft: &Draft) -> Result<OutgoingRecord, AgentError> {
    let id = sender.queue(draft, None).await?;
    sender.send_due().await?;
    sender.state().outgoing(id).await?.ok_or_else(|| {
        AgentError::Send(SendError::Draft("the journal lost the message being sent".into()))
    })
}

/// The server client of a registration, with its stored tokens (refreshed
/// ones are stored back), for a command that does not run the agent.
pub async fn server_client(
    config: &AgentConfig,
    secrets: &Secrets,
) -> Result<ServerClient, AgentError> {
    let tokens = secrets.device_tokens().await?;
    let (rotated, stored) = (secrets.clone(), secrets.clone());
    Ok(ServerClient::new(&config.server.url, config.ca_pem()?.as_deref(), tokens)?
        .on_tokens_rotated(move |tokens| {
            if let Err(error) = rotated.set_device_tokens_blocking(tokens) {
                tracing::error!(%error, "could not store the refreshed device token; the next start needs a new registration");
            }
        })
        .with_stored_tokens(move || stored.device_tokens_blocking().ok()))
}

/// The Sealpost message id a swapped-in message carries in its first header.
fn swapped_message_id(raw: &[u8]) -> Option<String> {
    let line = raw.split(|byte| *byte == b'\n').next()?;
    let (name, value) = std::str::from_utf8(line).ok()?.split_once(':')?;
    if !name.eq_ignore_ascii_case(SWAPPED_HEADER) {
        return None;
    }
    Some(value.trim().to_owned()).filter(|id| !id.is_empty())
}

pub(crate) fn take_lock(paths: &AgentPaths) -> Result<File, AgentError> {
    paths.create()?;
    let path = paths.lock_file();
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| AgentError::Lock { path: path.clone(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(AgentError::AlreadyRunning(paths.dir.clone()))
        }
        Err(std::fs::TryLockError::Error(source)) => Err(AgentError::Lock { path, source }),
    }
}

/// Whether an agent holds this data directory's lock right now.
fn agent_running(paths: &AgentPaths) -> bool {
    let Ok(file) = File::options().write(true).open(paths.lock_file()) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// How many of the newest swaps [`Status`] lists.
pub const RECENT_SWAPS: u32 = 10;

/// Everything `sealpost-agent status` shows; read without the keyring.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub email: String,
    pub device_id: String,
    pub device_name: String,
    pub server: String,
    pub imap: String,
    pub folders: Vec<String>,
    pub data_dir: PathBuf,
    /// Whether an agent (this binary or the app) is watching right now.
    pub running: bool,
    pub connections: Vec<ConnectionState>,
    pub swapped_total: u64,
    pub last_swap: Option<SwapRecord>,
    /// The newest swaps, newest first, up to [`RECENT_SWAPS`].
    pub recent: Vec<SwapRecord>,
    /// Placeholders waiting for the server to come back.
    pub pending: Vec<KeptRecord>,
    /// Placeholders that will not be swapped, with the reason.
    pub failed: Vec<KeptRecord>,
    /// Notifications refused as possible phishing.
    pub rejected: Vec<RejectedRecord>,
    pub indexed: u64,
    /// The folder whose drafts are sent securely.
    pub outbox_folder: String,
    /// Secure messages on their way out (sending, or waiting to retry).
    pub sending: u64,
    /// The newest secure messages that could not be sent, with the reason,
    /// up to [`RECENT_SWAPS`]; and how many there are in all.
    pub not_sent: Vec<OutgoingRecord>,
    pub not_sent_total: u64,
}

impl Status {
    pub async fn read(paths: &AgentPaths) -> Result<Self, AgentError> {
        let index = if paths.index_db().exists() {
            Some(SearchIndex::open(&paths.index_db()).await?)
        } else {
            None
        };
        Self::read_with_index(paths, index.as_ref()).await
    }

    /// As [`Status::read`], counting with a search index the caller keeps
    /// open instead of opening it again.
    pub async fn read_with_index(
        paths: &AgentPaths,
        index: Option<&SearchIndex>,
    ) -> Result<Self, AgentError> {
        let mut config = AgentConfig::load(paths)?;
        Policy::load_system()?.inspect(|policy| policy.apply(&mut config));
        let state = AgentState::open(&paths.state_db()).await?;
        let running = agent_running(paths);
        let (recent, swapped_total) = state.recent_swaps(RECENT_SWAPS).await?;
        let (pending, failed) = state.kept().await?.into_iter().partition(|kept| kept.temporary);
        let indexed = match index {
            Some(index) => index.count().await?,
            None => 0,
        };
        let (not_sent, not_sent_total, sending) = state.outgoing_summary(RECENT_SWAPS).await?;
        Ok(Self {
            outbox_folder: config.outbox_folder().to_owned(),
            sending,
            not_sent,
            not_sent_total,
            email: config.email,
            device_id: config.device_id,
            device_name: config.device_name,
            server: config.server.url,
            imap: format!("{}:{}", config.imap.host, config.imap.port),
            folders: config.folders,
            data_dir: paths.dir.clone(),
            running,
            connections: if running { state.connections().await? } else { Vec::new() },
            swapped_total,
            last_swap: recent.first().cloned(),
            recent,
            pending,
            failed,
            rejected: state.rejected().await?,
            indexed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_swapped_marker_only_from_the_first_line() {
        assert_eq!(
            swapped_message_id(b"X-Sealpost-Swapped: msg_1\r\nFrom: a@b\r\n").as_deref(),
            Some("msg_1")
        );
        assert_eq!(swapped_message_id(b"x-sealpost-swapped:msg_2\n").as_deref(), Some("msg_2"));
        assert_eq!(swapped_message_id(b"From: a@b\r\nX-Sealpost-Swapped: msg_1\r\n"), None);
        assert_eq!(swapped_message_id(b"X-Sealpost-Swapped: \r\n"), None);
    }

    #[test]
    fn one_agent_per_data_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = AgentPaths::new(dir.path());
        assert!(!agent_running(&paths));
        let lock = take_lock(&paths).expect("first lock");
        assert!(agent_running(&paths));
        let error = take_lock(&paths).expect_err("second agent refused");
        assert!(error.to_string().contains("stop it first"), "{error}");
        drop(lock);
        assert!(!agent_running(&paths));
    }
}
