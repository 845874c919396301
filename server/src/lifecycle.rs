//! The end of a message's life: the content of recalled and expired
//! messages is deleted, so nothing readable outlives the sender's choice.
//! Retrieval is refused from the moment of recall or expiry (see
//! `MessageRecord::unreadable_at`); this only reclaims the storage.

use std::time::Duration;

use sealpost_proto::MessageId;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::store::StoreResult;

/// How often expired content is looked for.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Messages handled per query; a step continues until none are left.
const PURGE_BATCH: u32 = 500;

/// Deletes a message's content for good and records it gone; returns
/// whether it did. When the object store fails, nothing is recorded and
/// the purge tries again later.
pub async fn remove_content(state: &AppState, id: &MessageId) -> StoreResult<bool> {
    if let Err(error) = state.blobs.delete(id).await {
        tracing::warn!(message_id = %id, %error, "content not deleted; trying again later");
        return Ok(false);
    }
    state.store.mark_content_removed(id, state.clock.now()).await?;
    Ok(true)
}

/// Deletes the content of recalled and expired messages: every
/// [`PURGE_INTERVAL`] in the server, by hand in tests.
#[derive(Clone)]
pub struct Purger(AppState);

impl Purger {
    pub fn new(state: AppState) -> Self {
        Self(state)
    }

    /// Deletes the content of every message recalled, or expired by now;
    /// returns how many.
    pub async fn step(&self) -> StoreResult<usize> {
        let state = &self.0;
        // Ended rate-limit windows are of no more use either.
        state.store.forget_rate_limits(state.clock.now()).await?;
        let mut purged = 0;
        loop {
            let due = state.store.messages_to_purge(state.clock.now(), PURGE_BATCH).await?;
            if due.is_empty() {
                return Ok(purged);
            }
            let mut removed = 0;
            for id in &due {
                if remove_content(state, id).await? {
                    removed += 1;
                }
            }
            purged += removed;
            tracing::info!(count = removed, "content of expired or recalled messages deleted");
            if removed < due.len() {
                // The rest at the next step, rather than the failed ones again now.
                return Ok(purged);
            }
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.step().await {
                tracing::error!(%error, "could not delete expired content; retrying later");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(PURGE_INTERVAL) => {}
            }
        }
    }
}
