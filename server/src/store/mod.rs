//! Persistent state behind one interface, [`Store`].
//!
//! The server holds an `Arc<dyn Store>` and never names a database. SQLite
//! ([`sqlite::SqliteStore`]) is the embedded default; a PostgreSQL store for
//! several server instances implements the same trait with its own migrations.
//! Each method is one unit of work: where it checks and writes, it does both
//! in one transaction.

pub mod postgres;
pub mod sqlite;
mod values;

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::ids::{AccountId, DeviceId};
use sealpost_proto::{ContentDigest, MessageId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A failure that is no bug: the database could not take the request now,
/// and the same request succeeds once the cause is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Locked by another writer for longer than a request waits, out of
    /// connections, restarting or unreachable: retrying soon helps.
    Busy,
    /// The disk holding the database is full: retrying helps once space is freed.
    DiskFull,
}

impl StoreError {
    /// Which [`Outage`] this failure is, if it is one.
    pub fn outage(&self) -> Option<Outage> {
        match self {
            Self::Database(error) => values::outage(error),
            _ => None,
        }
    }
}

/// Opens and migrates the database at `url`: `sqlite://PATH` for the
/// embedded store, `postgres://…` for one that several instances share
/// (with at most `max_connections` connections from this instance).
pub async fn open(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url, max_connections).await?))
    } else {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub id: AccountId,
    pub email: String,
    pub display_name: Option<String>,
    pub password_hash: Option<String>,
    pub created_at: OffsetDateTime,
}

/// What a device is: a desktop agent (bearer tokens with refresh), or a
/// browser signed in to the Secure Message Center (a session cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Agent,
    Browser,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Browser => "browser",
        }
    }

    pub fn parse(text: &str) -> StoreResult<Self> {
        match text {
            "agent" => Ok(Self::Agent),
            "browser" => Ok(Self::Browser),
            other => Err(StoreError::Corrupt(format!("unknown device kind {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub account_id: AccountId,
    pub kind: DeviceKind,
    pub name: String,
    pub access_expires_at: OffsetDateTime,
    pub refresh_expires_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// Hashes and expiry times of a device's token pair.
#[derive(Debug, Clone)]
pub struct TokenHashes {
    pub access_hash: [u8; 32],
    pub access_expires_at: OffsetDateTime,
    pub refresh_hash: [u8; 32],
    pub refresh_expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// The code matched and is now used up.
    Accepted,
    /// Wrong code; it stays valid for the remaining attempts.
    Rejected,
    /// No code outstanding for the address, or it expired or ran out of attempts.
    NoValidCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: MessageId,
    pub sender_account_id: AccountId,
    pub sender_email: String,
    pub content_sha256: ContentDigest,
    pub size: u64,
    pub created_at: OffsetDateTime,
    pub recipients: Vec<String>,
    /// The Subject of the stored MIME, for lists.
    pub subject: Option<String>,
    /// When it stops being readable; `None`: never.
    pub expires_at: Option<OffsetDateTime>,
    /// When its sender recalled it.
    pub recalled_at: Option<OffsetDateTime>,
    /// The stored MIME's Message-ID, without angle brackets.
    pub header_message_id: Option<String>,
    /// The uploading client's key for this upload.
    pub client_key: Option<String>,
}

impl MessageRecord {
    /// Whether `account` may see the message: its sender and its recipients only.
    pub fn is_visible_to(&self, account: &AccountRecord) -> bool {
        self.sender_account_id == account.id || self.recipients.contains(&account.email)
    }

    /// Why nobody can read it any more, if so: recalled, or expired at `now`.
    pub fn unreadable_at(&self, now: OffsetDateTime) -> Option<Unreadable> {
        if let Some(at) = self.recalled_at {
            return Some(Unreadable::Recalled(at));
        }
        self.expires_at.filter(|at| *at <= now).map(Unreadable::Expired)
    }
}

/// Why a message's content is no longer served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    Recalled(OffsetDateTime),
    Expired(OffsetDateTime),
}

/// A message as a mailbox lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSummary {
    pub id: MessageId,
    pub sender_email: String,
    pub sender_name: Option<String>,
    pub subject: Option<String>,
    pub size: u64,
    pub created_at: OffsetDateTime,
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalRecord {
    pub account_email: String,
    pub device_id: DeviceId,
    pub device_kind: DeviceKind,
    pub device_name: String,
    pub retrieved_at: OffsetDateTime,
}

/// A recognised correspondent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRecord {
    pub email: String,
    pub name: Option<String>,
    /// When it was added or last renamed.
    pub updated_at: OffsetDateTime,
}

/// A correspondent to add, or to rename when listed already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDirectoryEntry {
    pub email: String,
    pub name: Option<String>,
    /// Groups the entry belongs to (normalised); an import replaces them
    /// when the file has a group column.
    pub groups: Option<Vec<String>>,
}

/// A masked address: who it belongs to, whom it was issued to, and for
/// which conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAddressRecord {
    pub address: String,
    pub member_email: String,
    pub correspondent: String,
    pub thread: String,
    pub created_at: OffsetDateTime,
    pub disabled_at: Option<OffsetDateTime>,
}

/// Mail for the outbox that is not a secure message's notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    pub recipient: String,
    /// `Some("")` for the null sender; `None` for the row's VERP address.
    pub envelope_sender: Option<String>,
    pub email: Vec<u8>,
}

/// One decision about mail to a masked address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLogRecord {
    pub at: OffsetDateTime,
    pub address: String,
    pub envelope_sender: String,
    pub from_address: Option<String>,
    pub member_email: Option<String>,
    pub decision: String,
    pub reason: String,
    pub header_message_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectoryChanges {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// A notification to queue with its message: the complete email for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub recipient: String,
    pub email: Vec<u8>,
}

/// A queued notification claimed for one sending attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    /// The secure message notified; none for masked mail and auto-replies.
    pub message_id: Option<MessageId>,
    /// As [`NewMail::envelope_sender`].
    pub envelope_sender: Option<String>,
    pub recipient: String,
    pub email: Vec<u8>,
    /// Attempts started so far, this one included.
    pub attempts: u32,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Queued,
    Sent,
    Failed,
    Bounced,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Bounced => "bounced",
        }
    }

    pub fn parse(text: &str) -> StoreResult<Self> {
        Ok(match text {
            "queued" => Self::Queued,
            "sent" => Self::Sent,
            "failed" => Self::Failed,
            "bounced" => Self::Bounced,
            other => return Err(StoreError::Corrupt(format!("unknown outbox state {other:?}"))),
        })
    }
}

/// What the outbox knows about one recipient's notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    pub outbox_id: i64,
    pub recipient: String,
    pub state: OutboxState,
    pub attempts: u32,
    pub next_attempt_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub relay_answer: Option<String>,
    pub last_error: Option<String>,
}

/// A notification-signing key as stored: every instance signs with the
/// active one and publishes them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub key_id: String,
    /// The Ed25519 private key, PKCS#8 PEM.
    pub pkcs8_pem: String,
    pub created_at: OffsetDateTime,
    pub active: bool,
}

/// The answer to a counted event: allowed, or refused until the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimited {
    Allowed,
    RefusedUntil(OffsetDateTime),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_account(
        &self,
        email: &str,
        display_name: Option<&str>,
        password_hash: Option<&str>,
    ) -> StoreResult<AccountRecord>;

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<AccountRecord>>;

    /// Stores a new code for the address, replacing any earlier one.
    async fn put_code(
        &self,
        email: &str,
        code_hash: [u8; 32],
        expires_at: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Compares and counts one attempt atomically, so parallel guesses cannot
    /// exceed `max_attempts`.
    async fn check_code(
        &self,
        email: &str,
        code_hash: [u8; 32],
        max_attempts: u32,
        now: OffsetDateTime,
    ) -> StoreResult<CodeCheck>;

    async fn create_device(
        &self,
        account_id: &AccountId,
        kind: DeviceKind,
        name: &str,
        tokens: &TokenHashes,
    ) -> StoreResult<DeviceRecord>;

    /// The device and its account for an access token hash, revoked or not.
    async fn device_by_access_hash(
        &self,
        access_hash: [u8; 32],
    ) -> StoreResult<Option<(DeviceRecord, AccountRecord)>>;

    /// Replaces the token pair of the device holding `refresh_hash`, if that
    /// refresh token is current, unexpired and its device not revoked.
    async fn rotate_tokens(
        &self,
        refresh_hash: [u8; 32],
        tokens: &TokenHashes,
        now: OffsetDateTime,
    ) -> StoreResult<Option<DeviceRecord>>;

    async fn devices_of(&self, account_id: &AccountId) -> StoreResult<Vec<DeviceRecord>>;

    /// Revokes the account's devices (only those of `kind`, when given),
    /// except `keep`; returns how many were revoked.
    async fn revoke_devices(
        &self,
        account_id: &AccountId,
        kind: Option<DeviceKind>,
        keep: Option<&DeviceId>,
        now: OffsetDateTime,
    ) -> StoreResult<u64>;

    /// Replaces the account's password hash.
    async fn set_password_hash(&self, account_id: &AccountId, hash: &str) -> StoreResult<()>;

    /// Revokes one of the account's devices; false when it has no such device.
    async fn revoke_device(
        &self,
        account_id: &AccountId,
        device_id: &DeviceId,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// Stores a message and queues its notifications in one transaction, so
    /// a stored message never lacks the notifications it was stored with.
    /// Also records the message as the sender's reply to each stored
    /// message whose Message-ID is in `answers` and that was sent to them.
    async fn insert_message(
        &self,
        message: &MessageRecord,
        answers: &[String],
        notifications: &[NewNotification],
    ) -> StoreResult<()>;

    /// The message `account_id` stored with this client key, if any.
    async fn message_by_client_key(
        &self,
        account_id: &AccountId,
        client_key: &str,
    ) -> StoreResult<Option<MessageRecord>>;

    /// Marks the message recalled at `at` (a second recall keeps the first
    /// time) and returns when it was recalled.
    async fn recall_message(
        &self,
        id: &MessageId,
        at: OffsetDateTime,
    ) -> StoreResult<OffsetDateTime>;

    /// Messages to `email` recalled at or after `since`, oldest recall first.
    async fn recalls_for(
        &self,
        email: &str,
        since: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<(MessageId, OffsetDateTime)>>;

    /// Messages recalled, or expired at `now`, whose content is still kept.
    async fn messages_to_purge(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<MessageId>>;

    async fn mark_content_removed(&self, id: &MessageId, at: OffsetDateTime) -> StoreResult<()>;

    /// Records notifications the sender's own mail server accepted (kept
    /// as sent outbox rows with no email, so the delivery slip reads one
    /// table); recipients already recorded stay as they are.
    async fn record_sender_notified(
        &self,
        id: &MessageId,
        recipients: &[String],
        relay_answer: &str,
        at: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Each recipient's first reply to the message: (address, when).
    async fn replies_to(&self, id: &MessageId) -> StoreResult<Vec<(String, OffsetDateTime)>>;

    async fn message(&self, id: &MessageId) -> StoreResult<Option<MessageRecord>>;

    /// For a request about one message: the device and account behind
    /// `access_hash` (as [`Store::device_by_access_hash`]) and the message
    /// (as [`Store::message`]), which a store may look up together. With no
    /// such device, the message is not looked up.
    async fn device_and_message(
        &self,
        access_hash: [u8; 32],
        id: &MessageId,
    ) -> StoreResult<(Option<(DeviceRecord, AccountRecord)>, Option<MessageRecord>)> {
        let Some(device) = self.device_by_access_hash(access_hash).await? else {
            return Ok((None, None));
        };
        Ok((Some(device), self.message(id).await?))
    }

    /// The newest messages sent to `email`, at most `limit`.
    async fn received_messages(&self, email: &str, limit: u32) -> StoreResult<Vec<MessageSummary>>;

    /// The newest messages `account_id` sent, at most `limit`.
    async fn sent_messages(
        &self,
        account_id: &AccountId,
        limit: u32,
    ) -> StoreResult<Vec<MessageSummary>>;

    async fn record_retrieval(
        &self,
        message_id: &MessageId,
        account_id: &AccountId,
        device_id: &DeviceId,
        at: OffsetDateTime,
    ) -> StoreResult<()>;

    async fn retrievals(&self, message_id: &MessageId) -> StoreResult<Vec<RetrievalRecord>>;

    /// Claims up to `limit` queued notifications due at `now` for one attempt
    /// each: their attempt count goes up and they are not due again before
    /// `lease_until`, so an attempt cut short by a crash is retried then.
    async fn claim_due_notifications(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<OutboxEntry>>;

    /// Extends to `lease_until` the lease of a notification claimed with
    /// `attempts` attempts: false when another worker has claimed it since
    /// (its attempts went up) or it is settled, so this one must leave it.
    async fn renew_notification_lease(
        &self,
        id: i64,
        attempts: u32,
        lease_until: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// When the next queued notification falls due, if any is queued.
    async fn next_notification_due(&self) -> StoreResult<Option<OffsetDateTime>>;

    async fn mark_notification_sent(
        &self,
        id: i64,
        relay_answer: &str,
        at: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Keeps the notification queued until `retry_at`, recording why this attempt failed.
    async fn mark_notification_retry(
        &self,
        id: i64,
        error: &str,
        retry_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> StoreResult<()>;

    async fn mark_notification_failed(
        &self,
        id: i64,
        error: &str,
        at: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Records a bounce report for a sent (or still queued) notification;
    /// false when there is no such notification.
    async fn mark_notification_bounced(
        &self,
        id: i64,
        report: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;

    async fn notifications_of(
        &self,
        message_id: &MessageId,
    ) -> StoreResult<Vec<NotificationRecord>>;

    /// Counts by state, for metrics.
    async fn outbox_counts(&self) -> StoreResult<Vec<(OutboxState, u64)>>;

    /// Adds or renames directory entries in one transaction; returns how
    /// many were added, renamed and already as given.
    async fn import_directory(
        &self,
        entries: &[NewDirectoryEntry],
        now: OffsetDateTime,
    ) -> StoreResult<DirectoryChanges>;

    /// Entries by address, from `offset`, and the directory's size.
    async fn directory_page(
        &self,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<DirectoryRecord>, u64)>;

    async fn directory_entry(&self, email: &str) -> StoreResult<Option<DirectoryRecord>>;

    /// False when the address is not in the directory.
    async fn remove_directory_entry(&self, email: &str) -> StoreResult<bool>;

    /// The addresses in the directory group `name`, with their names.
    async fn directory_group(&self, name: &str) -> StoreResult<Vec<DirectoryRecord>>;

    /// Queues mail that belongs to no secure message; returns the row ids.
    async fn queue_mail(&self, mails: &[NewMail], now: OffsetDateTime) -> StoreResult<Vec<i64>>;

    /// The address for each (member, correspondent, thread), in the order
    /// of `candidates` (correspondent, candidate address): the one issued
    /// before, or the candidate, stored now. One transaction for all.
    async fn issue_reply_addresses(
        &self,
        member_email: &str,
        thread: &str,
        candidates: &[(String, String)],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<String>>;

    async fn reply_address(&self, address: &str) -> StoreResult<Option<ReplyAddressRecord>>;

    /// Stops a masked address taking mail from `at` on (a second call keeps
    /// the first time); false when there is no such address.
    async fn disable_reply_address(&self, address: &str, at: OffsetDateTime) -> StoreResult<bool>;

    async fn record_relay_decision(&self, record: &RelayLogRecord) -> StoreResult<()>;

    /// The newest decisions first, at most `limit`.
    async fn relay_log(&self, limit: u32) -> StoreResult<Vec<RelayLogRecord>>;

    /// Claims the right to send one automated answer to `recipient` now:
    /// false when one went to them after `not_since`, or when `hourly_cap`
    /// answers went out in the hour before `now`.
    async fn claim_auto_reply(
        &self,
        recipient: &str,
        not_since: OffsetDateTime,
        hourly_cap: u32,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// The organization settings changed through the admin API (a JSON document).
    async fn organization_overrides(&self) -> StoreResult<Option<String>>;

    async fn save_organization_overrides(&self, json: &str, at: OffsetDateTime) -> StoreResult<()>;

    /// The secret named `name` that every instance on this database shares:
    /// the one stored, or else `candidate`, stored now. Two instances
    /// starting together end up with the same one.
    async fn shared_secret(
        &self,
        name: &str,
        candidate: &[u8],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<u8>>;

    /// The notification-signing keys, the active one first, then newest first.
    async fn signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>>;

    /// Stores `key` as the active signing key (the others stay published).
    /// With `only_if_none`, stores nothing and returns false when any key
    /// is stored already, so instances starting together make one key.
    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        only_if_none: bool,
    ) -> StoreResult<bool>;

    /// Counts one event for `key` in its fixed window, which starts with
    /// the first event and lasts `window`; refuses (counting nothing) when
    /// the window already holds `limit` events. Shared by all instances.
    async fn hit_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> StoreResult<RateLimited>;

    /// Whether `key` could take one more event now, without counting one.
    async fn check_rate_limit(
        &self,
        key: &str,
        limit: u32,
        now: OffsetDateTime,
    ) -> StoreResult<RateLimited>;

    /// Forgets windows that ended at or before `now`; returns how many.
    async fn forget_rate_limits(&self, now: OffsetDateTime) -> StoreResult<u64>;

    /// Keeps a small message's content in the database (written before its
    /// message row, as content in object storage is).
    async fn put_content(&self, id: &MessageId, content: &[u8]) -> StoreResult<()>;

    /// The content kept by [`Store::put_content`], if any.
    async fn content(&self, id: &MessageId) -> StoreResult<Option<Vec<u8>>>;

    /// Removes kept content; removing none is no error.
    async fn remove_content(&self, id: &MessageId) -> StoreResult<()>;

    /// Cheap round trip for the health check.
    async fn ping(&self) -> StoreResult<()>;
}
