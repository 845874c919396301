//! The notification outbox worker.
//!
//! Notifications are rows in the database before anything is sent (they are
//! queued in the same transaction that stores their message). The worker
//! claims due rows, hands each to the relay with its own VERP envelope sender,
//! and records the outcome: sent (with the relay's answer, which names its
//! queue id), retry later (temporary failure, waiting longer each time), or
//! failed (a permanent refusal, or temporary failures for too long).
//!
//! A claim leases the row: if the process dies mid-attempt, the row falls due
//! again when the lease ends. Delivery is therefore at least once; a duplicate
//! can only follow a crash between the relay's acceptance and the database
//! update.
//!
//! [`Outbox::step`] runs one round and reports what happened, so tests drain
//! the queue deterministically; [`Outbox::run`] loops until shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bounces::BounceMatcher;
use crate::clock::Clock;
use crate::mailer::SendError;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::organization::Organization;
use crate::settings::OutboxSettings;
use crate::store::{OutboxEntry, Store, StoreResult};

/// How many rows one step claims at most.
const BATCH: u32 = 256;
/// The longest the worker sleeps without looking at the queue, so rows
/// queued by another process are not missed for long.
const IDLE_POLL: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Outbox(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    /// The relay in use now: admins may change it while notifications wait.
    organization: Arc<Organization>,
    bounces: BounceMatcher,
    clock: Clock,
    metrics: Metrics,
    settings: OutboxSettings,
    /// Signalled when rows are queued, so the worker starts at once.
    queued: Notify,
    /// How long one attempt may take before its row is due again.
    lease: Duration,
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    pub sent: usize,
    pub retried: usize,
    pub failed: usize,
}

impl StepReport {
    pub fn attempts(&self) -> usize {
        self.sent + self.retried + self.failed
    }
}

enum Outcome {
    Sent,
    Retry,
    Failed,
    /// Another worker claimed it after this one's lease ran out.
    LeftToAnother,
}

impl Outbox {
    pub fn new(
        store: Arc<dyn Store>,
        organization: Arc<Organization>,
        bounces: BounceMatcher,
        clock: Clock,
        metrics: Metrics,
        settings: OutboxSettings,
        smtp_timeout: Duration,
    ) -> Self {
        let lease = settings.lease_seconds.map_or(
            // Connect, greet, send: each step may take the full timeout.
            smtp_timeout * 3 + Duration::from_secs(60),
            Duration::from_secs,
        );
        Self(Arc::new(Inner {
            store,
            organization,
            bounces,
            clock,
            metrics,
            settings,
            queued: Notify::new(),
            lease,
        }))
    }

    /// Tells the worker rows were queued.
    pub fn wake(&self) {
        self.0.queued.notify_one();
    }

    /// Attempts every notification due now, `concurrency` at a time.
    pub async fn step(&self) -> StoreResult<StepReport> {
        let inner = &self.0;
        let now = inner.clock.now();
        let lease_until = now + inner.lease;
        let mut report = StepReport::default();
        loop {
            let entries = inner.store.claim_due_notifications(now, lease_until, BATCH).await?;
            if entries.is_empty() {
                return Ok(report);
            }
            let concurrency = usize::try_from(inner.settings.concurrency).unwrap_or(1);
            let mut outcomes = futures_util::stream::iter(entries)
                .map(|entry| self.attempt(entry, lease_until))
                .buffer_unordered(concurrency);
            while let Some(outcome) = outcomes.next().await {
                match outcome? {
                    Outcome::Sent => report.sent += 1,
                    Outcome::Retry => report.retried += 1,
                    Outcome::Failed => report.failed += 1,
                    Outcome::LeftToAnother => {}
                }
            }
        }
    }

    /// Sends one claimed notification, leased until `leased_until`.
    async fn attempt(
        &self,
        entry: OutboxEntry,
        leased_until: OffsetDateTime,
    ) -> StoreResult<Outcome> {
        let inner = &self.0;
        // A batch is attempted `concurrency` at a time: behind a slow relay
        // the last of it starts late. With half the lease gone, it is
        // renewed first, so no other instance takes the row while this one
        // sends it; if one already has, it is theirs.
        let now = inner.clock.now();
        let outcome = if now + inner.lease / 2 > leased_until
            && !inner
                .store
                .renew_notification_lease(entry.id, entry.attempts, now + inner.lease)
                .await?
        {
            tracing::info!(outbox = entry.id, "notification taken over by another worker");
            Outcome::LeftToAnother
        } else {
            self.send(entry).await?
        };
        let label = match outcome {
            Outcome::Sent => "sent",
            Outcome::Retry => "retry",
            Outcome::Failed => "failed",
            Outcome::LeftToAnother => "taken_over",
        };
        inner.metrics.notifications.get_or_create(&OutcomeLabels { outcome: label }).inc();
        Ok(outcome)
    }

    async fn send(&self, entry: OutboxEntry) -> StoreResult<Outcome> {
        let inner = &self.0;
        let envelope_from = match &entry.envelope_sender {
            Some(sender) => sender.clone(),
            None => inner.bounces.envelope_sender(entry.id),
        };
        let mailer = inner.organization.current().mailer.clone();
        let result = mailer.send_raw(&envelope_from, &entry.recipient, &entry.email).await;
        let now = inner.clock.now();
        let outcome = match result {
            Ok(answer) => {
                inner.store.mark_notification_sent(entry.id, &answer, now).await?;
                tracing::info!(message_id = ?entry.message_id, recipient = %entry.recipient, relay = %answer, "notification sent");
                Outcome::Sent
            }
            Err(SendError::Permanent(reason)) => {
                inner.store.mark_notification_failed(entry.id, &reason, now).await?;
                tracing::warn!(message_id = ?entry.message_id, recipient = %entry.recipient, %reason, "notification refused");
                Outcome::Failed
            }
            Err(SendError::Temporary(reason)) => {
                let give_up_after = time::Duration::hours(
                    i64::try_from(inner.settings.give_up_after_hours).unwrap_or(i64::MAX / 3600),
                );
                if now - entry.created_at >= give_up_after {
                    let reason = format!(
                        "gave up after {} attempts over {} hours; last error: {reason}",
                        entry.attempts, inner.settings.give_up_after_hours
                    );
                    inner.store.mark_notification_failed(entry.id, &reason, now).await?;
                    tracing::warn!(message_id = ?entry.message_id, recipient = %entry.recipient, %reason, "notification abandoned");
                    Outcome::Failed
                } else {
                    let wait = retry_delay(&inner.settings, entry.attempts);
                    inner.store.mark_notification_retry(entry.id, &reason, now + wait, now).await?;
                    tracing::warn!(message_id = ?entry.message_id, recipient = %entry.recipient, %reason, retry_in = ?wait, "notification deferred");
                    Outcome::Retry
                }
            }
        };
        Ok(outcome)
    }

    /// Whether `address` is one of the VERP addresses notifications leave with.
    pub fn is_bounce_address(&self, address: &str) -> bool {
        self.0.bounces.outbox_id(address).is_some()
    }

    /// Records a bounce delivered to `envelope_recipient` (one of the VERP
    /// addresses notifications leave with). Returns whether it matched a
    /// notification; delay warnings, auto-replies and forged addresses don't.
    pub async fn record_bounce(&self, envelope_recipient: &str, raw: &[u8]) -> StoreResult<bool> {
        let Some(bounce) = self.0.bounces.match_bounce(envelope_recipient, raw) else {
            return Ok(false);
        };
        let recorded = self
            .0
            .store
            .mark_notification_bounced(bounce.outbox_id, &bounce.describe(), self.0.clock.now())
            .await?;
        if recorded {
            tracing::warn!(outbox = bounce.outbox_id, report = %bounce.describe(), "notification bounced");
            self.0.metrics.notifications.get_or_create(&OutcomeLabels { outcome: "bounced" }).inc();
        }
        Ok(recorded)
    }

    /// Sends until `shutdown` is cancelled: a step whenever rows are queued
    /// or fall due. A database error is logged and retried after a pause.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let pause = match self.step().await {
                Ok(_) => self.until_next_due().await,
                Err(error) => {
                    tracing::error!(%error, "outbox step failed; retrying shortly");
                    IDLE_POLL
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.0.queued.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn until_next_due(&self) -> Duration {
        match self.0.store.next_notification_due().await {
            Ok(Some(due)) => {
                let wait = due - self.0.clock.now();
                Duration::try_from(wait).unwrap_or(Duration::ZERO).min(IDLE_POLL)
            }
            Ok(None) | Err(_) => IDLE_POLL,
        }
    }
}

/// `retry_initial_seconds`, doubled for each further attempt, at most `retry_max_seconds`.
fn retry_delay(settings: &OutboxSettings, attempts: u32) -> time::Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    let seconds = settings
        .retry_initial_seconds
        .saturating_mul(1u64 << doublings)
        .min(settings.retry_max_seconds);
    time::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_the_cap() {
        let settings = OutboxSettings {
            retry_initial_seconds: 60,
            retry_max_seconds: 3600,
            ..OutboxSettings::default()
        };
        let waits: Vec<i64> =
            (1..=9).map(|attempt| retry_delay(&settings, attempt).whole_seconds()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(retry_delay(&settings, u32::MAX).whole_seconds(), 3600);
    }
}
