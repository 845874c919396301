//! The Outbox folder and the other work of a running agent besides swapping:
//! drafts any mail client saves or moves into the Outbox folder are sent
//! securely ([`crate::send`]), journal entries left by a crash or an outage
//! are resumed, and the copies of messages their senders recalled are
//! replaced when the organization asks for it.
//!
//! The watcher IDLEs on the Outbox folder, so a draft is taken moments after
//! it arrives; it wakes earlier when a journal entry falls due.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use sealpost_proto::api::RecalledCopies;
use sealpost_proto::notification::{SenderHeaders, address_pairs};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::imap::{ImapAccount, MailboxSession, NewMessage};
use crate::index::SearchIndex;
use crate::journal::{DraftSource, OutgoingRecord};
use crate::send::{Draft, FAILED_KEYWORD, SendError, Sender};
use crate::server::ServerClient;
use crate::state::now_unix;
use crate::swap::SWAPPED_HEADER;

/// Marks the notice that took the place of a recalled message.
pub const RECALLED_HEADER: &str = "X-Sealpost-Recalled";

const IDLE_MAX: Duration = Duration::from_secs(28 * 60);
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(60);
/// How often a running agent asks the server about recalls.
const RECALL_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Drafts fetched at once from the Outbox.
const DRAFT_BATCH: usize = 20;

/// What one pass did.
#[derive(Debug, Default)]
pub struct OutboxReport {
    /// Journal entries that ended (sent or given up) or were retried.
    pub outgoing: Vec<OutgoingRecord>,
    /// Copies of recalled messages replaced by a notice.
    pub recalled: usize,
}

pub struct OutboxWatcher {
    account: ImapAccount,
    sender: Arc<Sender>,
    server: ServerClient,
    index: Option<Arc<SearchIndex>>,
    folder: String,
    /// Where swapped copies may be, for recalls.
    watched: Vec<String>,
    last_recall_check: Mutex<Option<Instant>>,
}

impl OutboxWatcher {
    pub fn new(
        account: ImapAccount,
        sender: Arc<Sender>,
        server: ServerClient,
        folder: &str,
        watched: &[String],
    ) -> Self {
        Self {
            account,
            sender,
            server,
            index: None,
            folder: folder.to_owned(),
            watched: watched.to_vec(),
            last_recall_check: Mutex::new(None),
        }
    }

    pub fn with_index(mut self, index: Option<Arc<SearchIndex>>) -> Self {
        self.index = index;
        self
    }

    /// Runs until `shutdown` is cancelled, reconnecting after any error.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut pause = RECONNECT_FIRST;
        while !shutdown.is_cancelled() {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.session(&mut pause) => outcome,
            };
            if let Err(error) = outcome {
                tracing::warn!(folder = %self.folder, %error, retry_in = ?pause, "Outbox connection lost; reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(RECONNECT_MAX);
            }
        }
    }

    async fn session(&self, reconnect_pause: &mut Duration) -> Result<(), SendError> {
        let mut session = MailboxSession::connect(&self.account).await?;
        *reconnect_pause = RECONNECT_FIRST;
        loop {
            self.pass_on(&mut session, false).await?;
            let wait = self.until_due().await;
            session.select(&self.folder).await?;
            let (next, _changed) = session.wait_for_change(wait).await?;
            session = next;
        }
    }

    /// Until the next journal entry or recall check falls due.
    async fn until_due(&self) -> Duration {
        let mut wait = IDLE_MAX.min(RECALL_INTERVAL);
        if let Ok(Some(due)) = self.sender.state().next_outgoing_due().await {
            let seconds = u64::try_from(due - now_unix()).unwrap_or(0);
            wait = wait.min(Duration::from_secs(seconds.max(1)));
        }
        wait
    }

    /// Takes the Outbox's drafts, sends what is due and applies recalls:
    /// what `run --once` does.
    pub async fn pass(&self, session: &mut MailboxSession) -> Result<OutboxReport, SendError> {
        self.pass_on(session, true).await
    }

    async fn pass_on(
        &self,
        session: &mut MailboxSession,
        check_recalls: bool,
    ) -> Result<OutboxReport, SendError> {
        self.take_drafts(session).await?;
        let outgoing = self.sender.send_due_on(session).await?;
        let recalled = if check_recalls || self.recall_check_due().await {
            match self.apply_recalls(session).await {
                Ok(count) => count,
                Err(error) => {
                    // The server may be down: sending went on; recalls wait.
                    tracing::warn!(%error, "could not check for recalled messages");
                    0
                }
            }
        } else {
            0
        };
        Ok(OutboxReport { outgoing, recalled })
    }

    async fn recall_check_due(&self) -> bool {
        let mut last = self.last_recall_check.lock().await;
        match *last {
            Some(at) if at.elapsed() < RECALL_INTERVAL => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    /// Writes every draft in the Outbox that is not marked failed to the
    /// journal; a draft that cannot be read is marked and the user told.
    /// Drafts the journal already holds (being sent, or sent and about to
    /// leave the Outbox) are not fetched again.
    async fn take_drafts(&self, session: &mut MailboxSession) -> Result<(), SendError> {
        session.ensure_folder(&self.folder).await?;
        let status = session.select_status(&self.folder).await?;
        let journaled =
            self.sender.state().journaled_drafts(&self.folder, status.uid_validity).await?;
        let uids: Vec<u32> = session
            .uids_from(1)
            .await?
            .into_iter()
            .filter(|uid| !journaled.contains(uid))
            .collect();
        let waiting: Vec<u32> = session
            .fetch_headers(&uids)
            .await?
            .into_iter()
            .filter(|fetch| !fetch.deleted && !fetch.flags.iter().any(|f| f == FAILED_KEYWORD))
            .map(|fetch| fetch.uid)
            .collect();
        for batch in waiting.chunks(DRAFT_BATCH) {
            for (uid, raw) in session.fetch_messages(batch).await? {
                let source = DraftSource {
                    folder: self.folder.clone(),
                    uid_validity: status.uid_validity,
                    uid,
                };
                match Draft::parse(raw.clone()) {
                    Ok(draft) => {
                        self.sender.queue(&draft, Some(&source)).await?;
                    }
                    Err(SendError::Draft(reason)) => {
                        let subject = SenderHeaders::parse(&raw, "").subject.unwrap_or_default();
                        self.sender.reject(session, &raw, &subject, &source, &reason).await?;
                        session.select(&self.folder).await?;
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// Asks the server which messages to this account were recalled since
    /// the last look; when the organization wants their copies replaced,
    /// puts a short notice in each copy's place and forgets its text.
    async fn apply_recalls(&self, session: &mut MailboxSession) -> Result<usize, SendError> {
        let state = self.sender.state();
        let since = state.recall_since().await?.unwrap_or(0);
        let feed = self.server.recalls(since).await?;
        let mut replaced = 0;
        if feed.copies == RecalledCopies::Replace && !feed.recalled.is_empty() {
            let ids: Vec<&str> = feed.recalled.iter().map(|r| r.message_id.as_str()).collect();
            for folder in &self.watched {
                replaced += replace_recalled(session, folder, &ids).await?;
            }
            if let Some(index) = &self.index {
                for id in &ids {
                    if let Err(error) = index.remove(id).await {
                        tracing::warn!(message_id = %id, %error, "could not remove a recalled message from the search index");
                    }
                }
            }
        }
        state.set_recall_since(feed.next_since).await?;
        Ok(replaced)
    }
}

/// Replaces the swapped copies of `ids` in `folder` with a notice; returns
/// how many. The notice goes in first, found again by its header, so a
/// crash leaves the copy, the notice or both, and the next look finishes.
async fn replace_recalled(
    session: &mut MailboxSession,
    folder: &str,
    ids: &[&str],
) -> Result<usize, SendError> {
    session.select(folder).await?;
    let copies = session.find_by_header(SWAPPED_HEADER, ids).await?;
    if copies.is_empty() {
        return Ok(0);
    }
    let notices = session.find_by_header(RECALLED_HEADER, ids).await?;
    let mut replaced = 0;
    for (message_id, uids) in &copies {
        if !notices.contains_key(message_id) {
            let Some(first) = session.fetch_headers(&uids[..1]).await?.into_iter().next() else {
                continue;
            };
            let notice = recall_notice(message_id, &first.header);
            let message = NewMessage {
                flags: &first.flags,
                internal_date: first.internal_date.as_deref(),
                content: &notice,
            };
            session.append_all(folder, &[message]).await?;
        }
        session.remove(uids).await?;
        replaced += 1;
        tracing::info!(%message_id, %folder, "a recalled message was replaced by a notice");
    }
    Ok(replaced)
}

/// The short notice kept instead of a recalled message: its subject,
/// sender, recipients, date and Message-ID, and what happened.
fn recall_notice(message_id: &str, header: &[u8]) -> Vec<u8> {
    let parsed = mail_parser::MessageParser::default().parse_headers(header);
    let headers = SenderHeaders::parse(header, "");
    let from = parsed
        .as_ref()
        .map(|message| address_pairs(message.from()))
        .unwrap_or_default()
        .into_iter()
        .next();
    let pairs = |list: &[(Option<String>, String)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(name, address)| (name.clone().unwrap_or_default(), address.clone()))
            .collect()
    };
    let mut builder = MessageBuilder::new()
        .header(RECALLED_HEADER, Raw::new(message_id))
        .subject(headers.subject.clone().unwrap_or_default())
        .date(headers.date.unwrap_or_else(now_unix))
        .text_body(
            "The sender recalled this secure message. Its content is no longer available.\r\n",
        );
    if let Some((name, address)) = from {
        builder = builder.from((name.unwrap_or_default(), address));
    }
    if !headers.to.is_empty() {
        builder = builder.to(pairs(&headers.to));
    }
    if !headers.cc.is_empty() {
        builder = builder.cc(pairs(&headers.cc));
    }
    if let Some(id) = &headers.message_id {
        builder = builder.message_id(id.clone());
    }
    builder.write_to_vec().unwrap_or_default()
}
