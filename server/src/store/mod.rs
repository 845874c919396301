//! Persistent state behind one interface, [`Store`].
//!
//! The server holds an `Arc<dyn Store>` and never names a database. SQLite
//! ([`sqlite::SqliteStore`]) is the embedded default; a PostgreSQL store for
//! several server instances implements the same trait with its own migrations.
//! Each method is one unit of work: where it checks and writes, it does both
//! in one transaction.

pub mod sqlite;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub id: AccountId,
    pub email: String,
    pub display_name: Option<String>,
    pub password_hash: Option<String>,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub account_id: AccountId,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalRecord {
    pub account_email: String,
    pub device_id: DeviceId,
    pub device_name: String,
    pub retrieved_at: OffsetDateTime,
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

    /// Revokes one of the account's devices; false when it has no such device.
    async fn revoke_device(
        &self,
        account_id: &AccountId,
        device_id: &DeviceId,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    async fn insert_message(&self, message: &MessageRecord) -> StoreResult<()>;

    async fn message(&self, id: &MessageId) -> StoreResult<Option<MessageRecord>>;

    async fn record_retrieval(
        &self,
        message_id: &MessageId,
        account_id: &AccountId,
        device_id: &DeviceId,
        at: OffsetDateTime,
    ) -> StoreResult<()>;

    async fn retrievals(&self, message_id: &MessageId) -> StoreResult<Vec<RetrievalRecord>>;

    /// Cheap round trip for the health check.
    async fn ping(&self) -> StoreResult<()>;
}
