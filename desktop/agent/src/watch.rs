//! Watching a folder: swap what is there, then IDLE until something arrives.
//!
//! The watcher keeps a cursor per folder (UIDVALIDITY and the next UID to
//! look at), persisted in [`AgentState`] when it has one, so after the first
//! pass, and after a restart, only new messages are fetched. A placeholder
//! kept because the server was unavailable stays behind the cursor and is
//! tried again on a growing timer even when the mailbox is quiet. IDLE is
//! re-issued before the 29 minutes servers allow. Any error drops the
//! connection and reconnects with a growing pause, so a restarted mail server
//! or a network change is survived.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::imap::{ImapAccount, MailboxSession};
use crate::state::{AgentState, FolderCursor, now_unix};
use crate::swap::{FolderReport, SwapError, Swapper};

/// Under the 29 minutes after which servers may drop an idle client.
const IDLE_MAX: Duration = Duration::from_secs(28 * 60);
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(60);
/// Retrying placeholders kept while the server was unavailable.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(5 * 60);

pub struct Watcher {
    account: ImapAccount,
    swapper: Arc<Swapper>,
    folder: String,
    state: Option<Arc<AgentState>>,
}

impl Watcher {
    pub fn new(account: ImapAccount, swapper: Arc<Swapper>, folder: &str) -> Self {
        Self { account, swapper, folder: folder.to_owned(), state: None }
    }

    /// Persists the cursor, what each pass did and the connection state.
    pub fn with_state(mut self, state: Arc<AgentState>) -> Self {
        self.state = Some(state);
        self
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut cursor = self.load_cursor().await;
        let mut pause = RECONNECT_FIRST;
        while !shutdown.is_cancelled() {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.session(&mut cursor, &mut pause) => outcome,
            };
            match outcome {
                // The session ended without an error only on shutdown.
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(folder = %self.folder, %error, retry_in = ?pause, "mailbox connection lost; reconnecting");
                    self.set_connection("reconnecting", Some(&error.to_string())).await;
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// One pass over the folder from the persisted cursor, on `session`:
    /// what `run --once` does for each folder.
    pub async fn pass(&self, session: &mut MailboxSession) -> Result<FolderReport, SwapError> {
        let mut cursor = self.load_cursor().await;
        self.pass_from(session, &mut cursor).await
    }

    async fn pass_from(
        &self,
        session: &mut MailboxSession,
        cursor: &mut Option<FolderCursor>,
    ) -> Result<FolderReport, SwapError> {
        let first = cursor.map_or(1, |c| c.next_uid);
        let mut report = self.swapper.process_folder_from(session, &self.folder, first).await?;
        // A new UIDVALIDITY means the UIDs were renumbered: start over.
        if cursor.is_some_and(|c| c.uid_validity != report.uid_validity) {
            tracing::info!(folder = %self.folder, "the folder's UIDs were renumbered; scanning it again");
            if let Some(state) = &self.state
                && let Err(error) = state.reset_folder(&self.folder).await
            {
                tracing::warn!(folder = %self.folder, %error, "could not reset the folder's records");
            }
            report = self.swapper.process_folder_from(session, &self.folder, 1).await?;
        }
        if !(report.swapped.is_empty() && report.rejected.is_empty() && report.kept.is_empty()) {
            tracing::info!(folder = %self.folder, swapped = report.swapped.len(), rejected = report.rejected.len(), kept = report.kept.len(), "pass done");
        }
        *cursor =
            Some(FolderCursor { uid_validity: report.uid_validity, next_uid: report.next_uid });
        if let Some(state) = &self.state
            && let Err(error) = state.record_pass(&self.folder, &report, now_unix()).await
        {
            // The mailbox is the source of truth: a lost record only means
            // the next start looks at a few messages again.
            tracing::warn!(folder = %self.folder, %error, "could not record the pass");
        }
        Ok(report)
    }

    /// One connection: passes over the folder, IDLE between them.
    async fn session(
        &self,
        cursor: &mut Option<FolderCursor>,
        reconnect_pause: &mut Duration,
    ) -> Result<(), SwapError> {
        let mut session = MailboxSession::connect(&self.account).await?;
        self.set_connection("connected", None).await;
        *reconnect_pause = RECONNECT_FIRST;
        let mut retry = RETRY_FIRST;
        loop {
            let report = self.pass_from(&mut session, cursor).await?;
            let wait = if report.has_temporary() {
                let wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
                wait
            } else {
                retry = RETRY_FIRST;
                IDLE_MAX
            };
            let (next, _changed) = session.wait_for_change(wait).await?;
            session = next;
        }
    }

    async fn load_cursor(&self) -> Option<FolderCursor> {
        let state = self.state.as_ref()?;
        state.cursor(&self.folder).await.unwrap_or_else(|error| {
            tracing::warn!(folder = %self.folder, %error, "could not read the folder's cursor; scanning it all");
            None
        })
    }

    async fn set_connection(&self, state_name: &str, detail: Option<&str>) {
        if let Some(state) = &self.state
            && let Err(error) =
                state.set_connection(&self.folder, state_name, detail, now_unix()).await
        {
            tracing::warn!(folder = %self.folder, %error, "could not record the connection state");
        }
    }
}
