//! Watching a folder: swap what is there, then IDLE until something arrives.
//!
//! The watcher keeps a cursor per folder (UIDVALIDITY and the next UID to
//! look at), so after the first pass only new messages are fetched; a
//! notification the server could not serve stays behind the cursor and is
//! tried again. IDLE is re-issued before the 29 minutes servers allow. Any
//! error drops the connection and reconnects with a growing pause, so a
//! restarted mail server or a network change is survived.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::imap::{ImapAccount, MailboxSession};
use crate::swap::{SwapError, Swapper};

/// Under the 29 minutes after which servers may drop an idle client.
const IDLE_MAX: Duration = Duration::from_secs(28 * 60);
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(60);

pub struct Watcher {
    account: ImapAccount,
    swapper: Arc<Swapper>,
    folder: String,
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    uid_validity: u32,
    next_uid: u32,
}

impl Watcher {
    pub fn new(account: ImapAccount, swapper: Arc<Swapper>, folder: &str) -> Self {
        Self { account, swapper, folder: folder.to_owned() }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut cursor: Option<Cursor> = None;
        let mut pause = RECONNECT_FIRST;
        while !shutdown.is_cancelled() {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.session(&mut cursor) => outcome,
            };
            match outcome {
                // The session ended without an error only on shutdown.
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(folder = %self.folder, %error, retry_in = ?pause, "mailbox connection lost; reconnecting");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// One connection: passes over the folder, IDLE between them.
    async fn session(&self, cursor: &mut Option<Cursor>) -> Result<(), SwapError> {
        let mut session = MailboxSession::connect(&self.account).await?;
        loop {
            let first = cursor.map_or(1, |c| c.next_uid);
            let report =
                self.swapper.process_folder_from(&mut session, &self.folder, first).await?;
            // A new UIDVALIDITY means the UIDs were renumbered: start over.
            let report = match cursor {
                Some(c) if c.uid_validity != report.uid_validity => {
                    self.swapper.process_folder_from(&mut session, &self.folder, 1).await?
                }
                _ => report,
            };
            if report.swapped + report.rejected + report.deferred > 0 {
                tracing::info!(folder = %self.folder, swapped = report.swapped, rejected = report.rejected, deferred = report.deferred, "pass done");
            }
            *cursor = Some(Cursor { uid_validity: report.uid_validity, next_uid: report.next_uid });
            let (next, _changed) = session.wait_for_change(IDLE_MAX).await?;
            session = next;
        }
    }
}
