//! The store for several server instances: one PostgreSQL database.
//!
//! Its tables are the embedded store's, times in Unix seconds as there.
//! Nothing is kept in the process: other instances change the same rows,
//! and a device revoked through one of them must be refused by every
//! instance at once. Writes that read before they write either are one
//! statement, lock the rows they read, or hold a transaction-scoped
//! advisory lock that serialises them across instances.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Row};
use time::OffsetDateTime;

use super::values::{conflict, from_unix, optional_from_unix, rate_limited, unix, window_full};
use super::{
    AccountRecord, CodeCheck, DeviceKind, DeviceRecord, DirectoryChanges, DirectoryRecord,
    MessageRecord, MessageSummary, NewDirectoryEntry, NewMail, NewNotification, NotificationRecord,
    OutboxEntry, OutboxState, RateLimited, RelayLogRecord, ReplyAddressRecord, RetrievalRecord,
    Store, StoreError, StoreResult, StoredSigningKey, TokenHashes,
};
use crate::auth::constant_time_eq;
use crate::ids::{AccountId, DeviceId};
use sealpost_proto::{ContentDigest, MessageId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Keys of the advisory locks (`pg_advisory_xact_lock`) that serialise one
/// kind of write across instances; held until the transaction ends. One
/// key space for the whole database: "SEAL" and a number.
const AUTO_REPLY_LOCK: i64 = 0x5345_414c_0001;
const SIGNING_KEY_LOCK: i64 = 0x5345_414c_0002;
const DIRECTORY_LOCK: i64 = 0x5345_414c_0003;

/// How long a statement waits for a lock (a table locked by maintenance,
/// a row another instance holds) before its request is refused as busy,
/// as the embedded store's busy timeout; a connection from the pool is
/// waited for twice as long. A request never hangs on the database.
const DATABASE_WAIT: Duration = Duration::from_secs(5);

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL) with at most
    /// `max_connections`, and migrates it. Instances starting together
    /// migrate one after another (the migrator holds a lock).
    pub async fn open(url: &str, max_connections: u32) -> StoreResult<Self> {
        // Without the lock timeout below: an instance waits for as long as
        // another one takes to migrate.
        let mut migrating = PgConnection::connect(url).await?;
        MIGRATOR.run(&mut migrating).await?;
        migrating.close().await?;
        let options = PgConnectOptions::from_str(url)?
            .options([("lock_timeout", format!("{}ms", DATABASE_WAIT.as_millis()))]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(DATABASE_WAIT * 2)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

/// Takes the advisory lock `key` until the end of the transaction on `connection`.
async fn lock(connection: &mut PgConnection, key: i64) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(connection).await?;
    Ok(())
}

fn message_id(text: &str) -> StoreResult<MessageId> {
    MessageId::parse(text).map_err(|_| StoreError::Corrupt(format!("message id {text:?}")))
}

fn count(value: i64) -> u32 {
    value.try_into().unwrap_or(u32::MAX)
}

fn account_from_row(row: &PgRow) -> StoreResult<AccountRecord> {
    Ok(AccountRecord {
        id: AccountId::from_stored(row.try_get("id")?),
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        created_at: from_unix(row.try_get("created_at")?)?,
    })
}

/// The columns [`device_from_row`] reads; a macro so queries stay static strings.
macro_rules! device_columns {
    () => {
        "id, account_id, kind, name, access_expires_at, refresh_expires_at, created_at, revoked_at"
    };
}

fn device_from_row(row: &PgRow) -> StoreResult<DeviceRecord> {
    Ok(DeviceRecord {
        id: DeviceId::from_stored(row.try_get("id")?),
        account_id: AccountId::from_stored(row.try_get("account_id")?),
        kind: DeviceKind::parse(row.try_get("kind")?)?,
        name: row.try_get("name")?,
        access_expires_at: from_unix(row.try_get("access_expires_at")?)?,
        refresh_expires_at: from_unix(row.try_get("refresh_expires_at")?)?,
        created_at: from_unix(row.try_get("created_at")?)?,
        revoked_at: optional_from_unix(row.try_get("revoked_at")?)?,
    })
}

/// The columns [`caller_from_row`] reads, from `devices d JOIN accounts a`.
macro_rules! caller_columns {
    () => {
        "d.id, d.account_id, d.kind, d.name, d.access_expires_at, d.refresh_expires_at,
         d.created_at, d.revoked_at,
         a.email, a.display_name, a.password_hash, a.created_at AS account_created_at"
    };
}

/// The device behind a token and its account.
fn caller_from_row(row: &PgRow) -> StoreResult<(DeviceRecord, AccountRecord)> {
    let device = device_from_row(row)?;
    let account = AccountRecord {
        id: device.account_id.clone(),
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        created_at: from_unix(row.try_get("account_created_at")?)?,
    };
    Ok((device, account))
}

/// The columns [`message_from_row`] reads, from `messages m` and
/// [`message_joins`]; named apart from a device's and account's. The
/// recipients come as an array in the order they were given.
macro_rules! message_columns {
    () => {
        "m.id AS message_id, m.sender_account_id, s.email AS sender_email, m.content_sha256,
         m.size, m.created_at AS message_created_at, m.subject, m.expires_at, m.recalled_at,
         m.header_message_id, m.client_key,
         ARRAY(SELECT r.email FROM message_recipients r WHERE r.message_id = m.id
               ORDER BY r.position) AS recipients"
    };
}

/// The sender's account, for [`message_columns`].
macro_rules! message_joins {
    () => {
        "LEFT JOIN accounts s ON s.id = m.sender_account_id"
    };
}

fn message_from_row(row: &PgRow, id: &MessageId) -> StoreResult<MessageRecord> {
    let digest: String = row.try_get("content_sha256")?;
    let size: i64 = row.try_get("size")?;
    Ok(MessageRecord {
        id: id.clone(),
        sender_account_id: AccountId::from_stored(row.try_get("sender_account_id")?),
        sender_email: row.try_get("sender_email")?,
        content_sha256: ContentDigest::parse_hex(&digest)
            .map_err(|_| StoreError::Corrupt(format!("message {id} has digest {digest:?}")))?,
        size: u64::try_from(size)
            .map_err(|_| StoreError::Corrupt(format!("message {id} has size {size}")))?,
        created_at: from_unix(row.try_get("message_created_at")?)?,
        recipients: row.try_get("recipients")?,
        subject: row.try_get("subject")?,
        expires_at: optional_from_unix(row.try_get("expires_at")?)?,
        recalled_at: optional_from_unix(row.try_get("recalled_at")?)?,
        header_message_id: row.try_get("header_message_id")?,
        client_key: row.try_get("client_key")?,
    })
}

/// Mailbox lists: [`message_columns`] and the sender's name.
fn summaries_from_rows(rows: &[PgRow]) -> StoreResult<Vec<MessageSummary>> {
    rows.iter()
        .map(|row| {
            let id = message_id(row.try_get("message_id")?)?;
            let message = message_from_row(row, &id)?;
            Ok(MessageSummary {
                id,
                sender_email: message.sender_email,
                sender_name: row.try_get("sender_name")?,
                subject: message.subject,
                size: message.size,
                created_at: message.created_at,
                recipients: message.recipients,
            })
        })
        .collect()
}

fn directory_from_row(row: &PgRow) -> StoreResult<DirectoryRecord> {
    Ok(DirectoryRecord {
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        updated_at: from_unix(row.try_get("updated_at")?)?,
    })
}

/// Whether an import row would change the entry's groups.
async fn groups_differ(tx: &mut PgConnection, entry: &NewDirectoryEntry) -> StoreResult<bool> {
    let Some(groups) = &entry.groups else { return Ok(false) };
    let mut stored: Vec<String> =
        sqlx::query_scalar("SELECT name FROM directory_groups WHERE email = $1")
            .bind(&entry.email)
            .fetch_all(&mut *tx)
            .await?;
    stored.sort();
    stored.dedup();
    let mut wanted = groups.clone();
    wanted.sort();
    wanted.dedup();
    Ok(stored != wanted)
}

#[async_trait]
impl Store for PgStore {
    async fn create_account(
        &self,
        email: &str,
        display_name: Option<&str>,
        password_hash: Option<&str>,
    ) -> StoreResult<AccountRecord> {
        let record = AccountRecord {
            id: AccountId::generate(),
            email: email.to_owned(),
            display_name: display_name.map(str::to_owned),
            password_hash: password_hash.map(str::to_owned),
            created_at: OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        };
        sqlx::query(
            "INSERT INTO accounts (id, email, display_name, password_hash, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(record.id.as_str())
        .bind(&record.email)
        .bind(&record.display_name)
        .bind(&record.password_hash)
        .bind(unix(record.created_at))
        .execute(&self.pool)
        .await
        .map_err(conflict)?;
        Ok(record)
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<AccountRecord>> {
        let row = sqlx::query(
            "SELECT id, email, display_name, password_hash, created_at FROM accounts
             WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn put_code(
        &self,
        email: &str,
        code_hash: [u8; 32],
        expires_at: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO verification_codes (email, code_hash, expires_at, attempts)
             VALUES ($1, $2, $3, 0)
             ON CONFLICT (email) DO UPDATE SET code_hash = EXCLUDED.code_hash,
                 expires_at = EXCLUDED.expires_at, attempts = 0",
        )
        .bind(email)
        .bind(&code_hash[..])
        .bind(unix(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn check_code(
        &self,
        email: &str,
        code_hash: [u8; 32],
        max_attempts: u32,
        now: OffsetDateTime,
    ) -> StoreResult<CodeCheck> {
        let mut tx = self.pool.begin().await?;
        // Counting the attempt first locks the row until the transaction
        // ends: a concurrent guess waits, then sees this one counted (or
        // the code gone), so parallel guesses cannot exceed the attempts.
        let counted: Option<Vec<u8>> = sqlx::query_scalar(
            "UPDATE verification_codes SET attempts = attempts + 1
             WHERE email = $1 AND expires_at > $2 AND attempts < $3
             RETURNING code_hash",
        )
        .bind(email)
        .bind(unix(now))
        .bind(i64::from(max_attempts))
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match counted {
            None => CodeCheck::NoValidCode,
            Some(stored) if constant_time_eq(&stored, &code_hash) => {
                sqlx::query("DELETE FROM verification_codes WHERE email = $1")
                    .bind(email)
                    .execute(&mut *tx)
                    .await?;
                CodeCheck::Accepted
            }
            Some(_) => CodeCheck::Rejected,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn create_device(
        &self,
        account_id: &AccountId,
        kind: DeviceKind,
        name: &str,
        tokens: &TokenHashes,
    ) -> StoreResult<DeviceRecord> {
        let record = DeviceRecord {
            id: DeviceId::generate(),
            account_id: account_id.clone(),
            kind,
            name: name.to_owned(),
            access_expires_at: tokens.access_expires_at,
            refresh_expires_at: tokens.refresh_expires_at,
            created_at: OffsetDateTime::now_utc(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO devices (id, account_id, kind, name, access_hash, access_expires_at,
                                  refresh_hash, refresh_expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(record.id.as_str())
        .bind(account_id.as_str())
        .bind(kind.as_str())
        .bind(name)
        .bind(&tokens.access_hash[..])
        .bind(unix(tokens.access_expires_at))
        .bind(&tokens.refresh_hash[..])
        .bind(unix(tokens.refresh_expires_at))
        .bind(unix(record.created_at))
        .execute(&self.pool)
        .await?;
        Ok(record)
    }

    async fn device_by_access_hash(
        &self,
        access_hash: [u8; 32],
    ) -> StoreResult<Option<(DeviceRecord, AccountRecord)>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            caller_columns!(),
            " FROM devices d JOIN accounts a ON a.id = d.account_id WHERE d.access_hash = $1"
        ))
        .bind(&access_hash[..])
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(caller_from_row).transpose()
    }

    async fn rotate_tokens(
        &self,
        refresh_hash: [u8; 32],
        tokens: &TokenHashes,
        now: OffsetDateTime,
    ) -> StoreResult<Option<DeviceRecord>> {
        // One statement: a concurrent rotation with the same refresh token
        // waits for the row, then finds its hash replaced and rotates nothing.
        let row = sqlx::query(concat!(
            "UPDATE devices SET access_hash = $1, access_expires_at = $2, refresh_hash = $3,
                                refresh_expires_at = $4
             WHERE refresh_hash = $5 AND refresh_expires_at > $6 AND revoked_at IS NULL
             RETURNING ",
            device_columns!()
        ))
        .bind(&tokens.access_hash[..])
        .bind(unix(tokens.access_expires_at))
        .bind(&tokens.refresh_hash[..])
        .bind(unix(tokens.refresh_expires_at))
        .bind(&refresh_hash[..])
        .bind(unix(now))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    async fn devices_of(&self, account_id: &AccountId) -> StoreResult<Vec<DeviceRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE account_id = $1 ORDER BY created_at, id"
        ))
        .bind(account_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    async fn revoke_devices(
        &self,
        account_id: &AccountId,
        kind: Option<DeviceKind>,
        keep: Option<&DeviceId>,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        let result = sqlx::query(
            "UPDATE devices SET revoked_at = $1
             WHERE account_id = $2 AND revoked_at IS NULL AND id <> $3
               AND ($4::text IS NULL OR kind = $4)",
        )
        .bind(unix(now))
        .bind(account_id.as_str())
        .bind(keep.map_or("", DeviceId::as_str))
        .bind(kind.map(DeviceKind::as_str))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn set_password_hash(&self, account_id: &AccountId, hash: &str) -> StoreResult<()> {
        sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(account_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revoke_device(
        &self,
        account_id: &AccountId,
        device_id: &DeviceId,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE devices SET revoked_at = COALESCE(revoked_at, $1)
             WHERE id = $2 AND account_id = $3",
        )
        .bind(unix(now))
        .bind(device_id.as_str())
        .bind(account_id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn insert_message(
        &self,
        message: &MessageRecord,
        answers: &[String],
        notifications: &[NewNotification],
    ) -> StoreResult<()> {
        let size = i64::try_from(message.size)
            .map_err(|_| StoreError::Corrupt("size overflows".into()))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO messages (id, sender_account_id, content_sha256, size, created_at, subject,
                                   expires_at, header_message_id, client_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(message.id.as_str())
        .bind(message.sender_account_id.as_str())
        .bind(message.content_sha256.to_hex())
        .bind(size)
        .bind(unix(message.created_at))
        .bind(&message.subject)
        .bind(message.expires_at.map(unix))
        .bind(&message.header_message_id)
        .bind(&message.client_key)
        .execute(&mut *tx)
        .await
        .map_err(conflict)?;
        // Each list in one statement: the database may be a round trip away.
        // A recipient given twice is kept at its first position.
        if !message.recipients.is_empty() {
            sqlx::query(
                "INSERT INTO message_recipients (message_id, email, position)
                 SELECT $1, email, position
                   FROM unnest($2::text[]) WITH ORDINALITY AS given (email, position)
                  ORDER BY position
                 ON CONFLICT DO NOTHING",
            )
            .bind(message.id.as_str())
            .bind(&message.recipients)
            .execute(&mut *tx)
            .await?;
        }
        let now = unix(message.created_at);
        if !answers.is_empty() {
            sqlx::query(
                "INSERT INTO replies (message_id, email, reply_id, replied_at)
                 SELECT m.id, r.email, $1, $2 FROM messages m
                   JOIN message_recipients r ON r.message_id = m.id AND r.email = $3
                  WHERE m.header_message_id = ANY($4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(message.id.as_str())
            .bind(now)
            .bind(&message.sender_email)
            .bind(answers)
            .execute(&mut *tx)
            .await?;
        }
        if !notifications.is_empty() {
            let recipients: Vec<&str> =
                notifications.iter().map(|n| n.recipient.as_str()).collect();
            let emails: Vec<&[u8]> = notifications.iter().map(|n| n.email.as_slice()).collect();
            // In the order given, so their ids are too.
            sqlx::query(
                "INSERT INTO outbox (message_id, recipient, email, state, next_attempt_at,
                                     created_at, updated_at)
                 SELECT $1, recipient, email, 'queued', $4, $4, $4
                   FROM unnest($2::text[], $3::bytea[]) WITH ORDINALITY
                        AS given (recipient, email, position)
                  ORDER BY position",
            )
            .bind(message.id.as_str())
            .bind(&recipients)
            .bind(&emails)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn message_by_client_key(
        &self,
        account_id: &AccountId,
        client_key: &str,
    ) -> StoreResult<Option<MessageRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m ",
            message_joins!(),
            " WHERE m.sender_account_id = $1 AND m.client_key = $2"
        ))
        .bind(account_id.as_str())
        .bind(client_key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| message_from_row(&row, &message_id(row.try_get("message_id")?)?)).transpose()
    }

    async fn recall_message(
        &self,
        id: &MessageId,
        at: OffsetDateTime,
    ) -> StoreResult<OffsetDateTime> {
        let mut tx = self.pool.begin().await?;
        let recalled_at: i64 = sqlx::query_scalar(
            "UPDATE messages SET recalled_at = COALESCE(recalled_at, $1) WHERE id = $2
             RETURNING recalled_at",
        )
        .bind(unix(at))
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        // Notifications not sent yet would announce what nobody can read.
        sqlx::query(
            "UPDATE outbox SET state = 'failed',
                               last_error = 'recalled by the sender before it was sent',
                               updated_at = $1
              WHERE message_id = $2 AND state = 'queued'",
        )
        .bind(unix(at))
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        from_unix(recalled_at)
    }

    async fn recalls_for(
        &self,
        email: &str,
        since: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<(MessageId, OffsetDateTime)>> {
        let rows = sqlx::query(
            "SELECT m.id, m.recalled_at FROM message_recipients r
               JOIN messages m ON m.id = r.message_id
              WHERE r.email = $1 AND m.recalled_at >= $2
              ORDER BY m.recalled_at, m.id LIMIT $3",
        )
        .bind(email)
        .bind(unix(since))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((message_id(row.try_get("id")?)?, from_unix(row.try_get("recalled_at")?)?))
            })
            .collect()
    }

    async fn messages_to_purge(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<MessageId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE content_removed_at IS NULL AND expires_at <= $1
             UNION
             SELECT id FROM messages WHERE content_removed_at IS NULL AND recalled_at IS NOT NULL
             LIMIT $2",
        )
        .bind(unix(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|id| message_id(id)).collect()
    }

    async fn mark_content_removed(&self, id: &MessageId, at: OffsetDateTime) -> StoreResult<()> {
        sqlx::query("UPDATE messages SET content_removed_at = $1 WHERE id = $2")
            .bind(unix(at))
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn record_sender_notified(
        &self,
        id: &MessageId,
        recipients: &[String],
        relay_answer: &str,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        if recipients.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO outbox (message_id, recipient, email, state, attempts, next_attempt_at,
                                 created_at, updated_at, relay_answer)
             SELECT $1, recipient, ''::bytea, 'sent', 1, $3, $3, $3, $4
               FROM unnest($2::text[]) WITH ORDINALITY AS given (recipient, position)
              ORDER BY position
             ON CONFLICT DO NOTHING",
        )
        .bind(id.as_str())
        .bind(recipients)
        .bind(unix(at))
        .bind(relay_answer)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn replies_to(&self, id: &MessageId) -> StoreResult<Vec<(String, OffsetDateTime)>> {
        let rows = sqlx::query("SELECT email, replied_at FROM replies WHERE message_id = $1")
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("email")?, from_unix(row.try_get("replied_at")?)?)))
            .collect()
    }

    async fn message(&self, id: &MessageId) -> StoreResult<Option<MessageRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m ",
            message_joins!(),
            " WHERE m.id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| message_from_row(&row, id)).transpose()
    }

    async fn device_and_message(
        &self,
        access_hash: [u8; 32],
        id: &MessageId,
    ) -> StoreResult<(Option<(DeviceRecord, AccountRecord)>, Option<MessageRecord>)> {
        // Every retrieval makes both look-ups: one round trip.
        let row = sqlx::query(concat!(
            "SELECT ",
            caller_columns!(),
            ", ",
            message_columns!(),
            " FROM devices d JOIN accounts a ON a.id = d.account_id
              LEFT JOIN messages m ON m.id = $1 ",
            message_joins!(),
            " WHERE d.access_hash = $2"
        ))
        .bind(id.as_str())
        .bind(&access_hash[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok((None, None)) };
        let message_found: Option<String> = row.try_get("message_id")?;
        let message = match message_found {
            Some(_) => Some(message_from_row(&row, id)?),
            None => None,
        };
        Ok((Some(caller_from_row(&row)?), message))
    }

    async fn received_messages(&self, email: &str, limit: u32) -> StoreResult<Vec<MessageSummary>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            ", s.display_name AS sender_name FROM message_recipients mine
              JOIN messages m ON m.id = mine.message_id ",
            message_joins!(),
            " WHERE mine.email = $1 ORDER BY m.created_at DESC, m.id DESC LIMIT $2"
        ))
        .bind(email)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        summaries_from_rows(&rows)
    }

    async fn sent_messages(
        &self,
        account_id: &AccountId,
        limit: u32,
    ) -> StoreResult<Vec<MessageSummary>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            ", s.display_name AS sender_name FROM messages m ",
            message_joins!(),
            " WHERE m.sender_account_id = $1 ORDER BY m.created_at DESC, m.id DESC LIMIT $2"
        ))
        .bind(account_id.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        summaries_from_rows(&rows)
    }

    async fn record_retrieval(
        &self,
        message_id: &MessageId,
        account_id: &AccountId,
        device_id: &DeviceId,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO retrievals (message_id, account_id, device_id, retrieved_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(message_id.as_str())
        .bind(account_id.as_str())
        .bind(device_id.as_str())
        .bind(unix(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn retrievals(&self, message_id: &MessageId) -> StoreResult<Vec<RetrievalRecord>> {
        let rows = sqlx::query(
            "SELECT a.email, d.id AS device_id, d.kind AS device_kind, d.name AS device_name,
                    r.retrieved_at
               FROM retrievals r JOIN accounts a ON a.id = r.account_id
               JOIN devices d ON d.id = r.device_id
              WHERE r.message_id = $1 ORDER BY r.id",
        )
        .bind(message_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RetrievalRecord {
                    account_email: row.try_get("email")?,
                    device_id: DeviceId::from_stored(row.try_get("device_id")?),
                    device_kind: DeviceKind::parse(row.try_get("device_kind")?)?,
                    device_name: row.try_get("device_name")?,
                    retrieved_at: from_unix(row.try_get("retrieved_at")?)?,
                })
            })
            .collect()
    }

    async fn claim_due_notifications(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<OutboxEntry>> {
        // One statement, and rows another instance is claiming right now are
        // skipped, not waited for: no row is claimed twice, and instances
        // claiming together each get rows of their own.
        let rows = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, updated_at = $2
             WHERE id IN (SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= $2
                          ORDER BY next_attempt_at, id LIMIT $3
                          FOR UPDATE SKIP LOCKED)
             RETURNING id, message_id, envelope_sender, recipient, email, attempts, created_at",
        )
        .bind(unix(lease_until))
        .bind(unix(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut entries = rows
            .iter()
            .map(|row| {
                let message_id: Option<&str> = row.try_get("message_id")?;
                Ok(OutboxEntry {
                    id: row.try_get("id")?,
                    message_id: message_id.map(self::message_id).transpose()?,
                    envelope_sender: row.try_get("envelope_sender")?,
                    recipient: row.try_get("recipient")?,
                    email: row.try_get("email")?,
                    attempts: count(row.try_get("attempts")?),
                    created_at: from_unix(row.try_get("created_at")?)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        entries.sort_by_key(|entry| entry.id);
        Ok(entries)
    }

    async fn renew_notification_lease(
        &self,
        id: i64,
        attempts: u32,
        lease_until: OffsetDateTime,
    ) -> StoreResult<bool> {
        let renewed = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1 WHERE id = $2 AND attempts = $3 AND state = 'queued'",
        )
        .bind(unix(lease_until))
        .bind(id)
        .bind(i64::from(attempts))
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn next_notification_due(&self) -> StoreResult<Option<OffsetDateTime>> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'queued'")
                .fetch_one(&self.pool)
                .await?;
        next.map(from_unix).transpose()
    }

    async fn mark_notification_sent(
        &self,
        id: i64,
        relay_answer: &str,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET state = 'sent', relay_answer = $1, last_error = NULL, updated_at = $2
             WHERE id = $3 AND state = 'queued'",
        )
        .bind(relay_answer)
        .bind(unix(at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_notification_retry(
        &self,
        id: i64,
        error: &str,
        retry_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1, last_error = $2, updated_at = $3
             WHERE id = $4 AND state = 'queued'",
        )
        .bind(unix(retry_at))
        .bind(error)
        .bind(unix(at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_notification_failed(
        &self,
        id: i64,
        error: &str,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET state = 'failed', last_error = $1, updated_at = $2
             WHERE id = $3 AND state = 'queued'",
        )
        .bind(error)
        .bind(unix(at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_notification_bounced(
        &self,
        id: i64,
        report: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE outbox SET state = 'bounced', last_error = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(report)
        .bind(unix(at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn notifications_of(
        &self,
        message_id: &MessageId,
    ) -> StoreResult<Vec<NotificationRecord>> {
        let rows = sqlx::query(
            "SELECT id, recipient, state, attempts, next_attempt_at, updated_at, relay_answer,
                    last_error
               FROM outbox WHERE message_id = $1 ORDER BY id",
        )
        .bind(message_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(NotificationRecord {
                    outbox_id: row.try_get("id")?,
                    recipient: row.try_get("recipient")?,
                    state: OutboxState::parse(row.try_get("state")?)?,
                    attempts: count(row.try_get("attempts")?),
                    next_attempt_at: from_unix(row.try_get("next_attempt_at")?)?,
                    updated_at: from_unix(row.try_get("updated_at")?)?,
                    relay_answer: row.try_get("relay_answer")?,
                    last_error: row.try_get("last_error")?,
                })
            })
            .collect()
    }

    async fn outbox_counts(&self) -> StoreResult<Vec<(OutboxState, u64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS count FROM outbox GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let count: i64 = row.try_get("count")?;
                Ok((OutboxState::parse(row.try_get("state")?)?, count.try_into().unwrap_or(0)))
            })
            .collect()
    }

    async fn import_directory(
        &self,
        entries: &[NewDirectoryEntry],
        now: OffsetDateTime,
    ) -> StoreResult<DirectoryChanges> {
        let mut changes = DirectoryChanges::default();
        let mut tx = self.pool.begin().await?;
        // One import at a time: each reads an entry before it writes it, and
        // two imports of overlapping files would otherwise count an entry
        // added twice, or lock entries in opposite orders.
        lock(&mut tx, DIRECTORY_LOCK).await?;
        for entry in entries {
            let existing: Option<Option<String>> =
                sqlx::query_scalar("SELECT name FROM directory WHERE email = $1")
                    .bind(&entry.email)
                    .fetch_optional(&mut *tx)
                    .await?;
            match existing {
                Some(name) if name == entry.name && !groups_differ(&mut tx, entry).await? => {
                    changes.unchanged += 1;
                }
                found => {
                    sqlx::query(
                        "INSERT INTO directory (email, name, updated_at) VALUES ($1, $2, $3)
                         ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name,
                             updated_at = EXCLUDED.updated_at",
                    )
                    .bind(&entry.email)
                    .bind(&entry.name)
                    .bind(unix(now))
                    .execute(&mut *tx)
                    .await?;
                    if let Some(groups) = &entry.groups {
                        sqlx::query("DELETE FROM directory_groups WHERE email = $1")
                            .bind(&entry.email)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query(
                            "INSERT INTO directory_groups (name, email)
                             SELECT name, $2 FROM unnest($1::text[]) AS given (name)
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(groups)
                        .bind(&entry.email)
                        .execute(&mut *tx)
                        .await?;
                    }
                    if found.is_some() {
                        changes.updated += 1;
                    } else {
                        changes.added += 1;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(changes)
    }

    async fn directory_page(
        &self,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<DirectoryRecord>, u64)> {
        let rows = sqlx::query(
            "SELECT email, name, updated_at FROM directory ORDER BY email LIMIT $1 OFFSET $2",
        )
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM directory").fetch_one(&self.pool).await?;
        let entries = rows.iter().map(directory_from_row).collect::<StoreResult<_>>()?;
        Ok((entries, u64::try_from(total).unwrap_or(0)))
    }

    async fn directory_entry(&self, email: &str) -> StoreResult<Option<DirectoryRecord>> {
        let row = sqlx::query("SELECT email, name, updated_at FROM directory WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(directory_from_row).transpose()
    }

    async fn remove_directory_entry(&self, email: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM directory WHERE email = $1")
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn directory_group(&self, name: &str) -> StoreResult<Vec<DirectoryRecord>> {
        let rows = sqlx::query(
            "SELECT d.email, d.name, d.updated_at FROM directory_groups g
               JOIN directory d ON d.email = g.email
              WHERE g.name = $1 ORDER BY d.email",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(directory_from_row).collect()
    }

    async fn queue_mail(&self, mails: &[NewMail], now: OffsetDateTime) -> StoreResult<Vec<i64>> {
        if mails.is_empty() {
            return Ok(Vec::new());
        }
        let recipients: Vec<&str> = mails.iter().map(|m| m.recipient.as_str()).collect();
        let senders: Vec<Option<&str>> =
            mails.iter().map(|m| m.envelope_sender.as_deref()).collect();
        let emails: Vec<&[u8]> = mails.iter().map(|m| m.email.as_slice()).collect();
        // Rows are numbered in the order given, so the ids in ascending
        // order are the mails' in theirs.
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO outbox (recipient, envelope_sender, email, state, next_attempt_at,
                                 created_at, updated_at)
             SELECT recipient, sender, email, 'queued', $4, $4, $4
               FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY
                    AS given (recipient, sender, email, position)
              ORDER BY position
             RETURNING id",
        )
        .bind(&recipients)
        .bind(&senders)
        .bind(&emails)
        .bind(unix(now))
        .fetch_all(&self.pool)
        .await?;
        ids.sort_unstable();
        Ok(ids)
    }

    async fn issue_reply_addresses(
        &self,
        member_email: &str,
        thread: &str,
        candidates: &[(String, String)],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<String>> {
        // Written in one order whatever the order given, so two issues for
        // the same conversation never wait for each other's rows in turn.
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| candidates[a].0.cmp(&candidates[b].0));
        let mut addresses = vec![String::new(); candidates.len()];
        let mut tx = self.pool.begin().await?;
        for index in order {
            let (correspondent, candidate) = &candidates[index];
            addresses[index] = sqlx::query_scalar(
                "INSERT INTO reply_addresses (address, member_email, correspondent, thread,
                                              created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (member_email, correspondent, thread)
                     DO UPDATE SET address = reply_addresses.address
                 RETURNING address",
            )
            .bind(candidate)
            .bind(member_email)
            .bind(correspondent)
            .bind(thread)
            .bind(unix(now))
            .fetch_one(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(addresses)
    }

    async fn reply_address(&self, address: &str) -> StoreResult<Option<ReplyAddressRecord>> {
        let row = sqlx::query(
            "SELECT address, member_email, correspondent, thread, created_at, disabled_at
               FROM reply_addresses WHERE address = $1",
        )
        .bind(address)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ReplyAddressRecord {
                address: row.try_get("address")?,
                member_email: row.try_get("member_email")?,
                correspondent: row.try_get("correspondent")?,
                thread: row.try_get("thread")?,
                created_at: from_unix(row.try_get("created_at")?)?,
                disabled_at: optional_from_unix(row.try_get("disabled_at")?)?,
            })
        })
        .transpose()
    }

    async fn disable_reply_address(&self, address: &str, at: OffsetDateTime) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE reply_addresses SET disabled_at = COALESCE(disabled_at, $1) WHERE address = $2",
        )
        .bind(unix(at))
        .bind(address)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn record_relay_decision(&self, record: &RelayLogRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO relay_log (at, address, envelope_sender, from_address, member_email,
                                    decision, reason, header_message_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(unix(record.at))
        .bind(&record.address)
        .bind(&record.envelope_sender)
        .bind(&record.from_address)
        .bind(&record.member_email)
        .bind(&record.decision)
        .bind(&record.reason)
        .bind(&record.header_message_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn relay_log(&self, limit: u32) -> StoreResult<Vec<RelayLogRecord>> {
        let rows = sqlx::query(
            "SELECT at, address, envelope_sender, from_address, member_email, decision, reason,
                    header_message_id
               FROM relay_log ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RelayLogRecord {
                    at: from_unix(row.try_get("at")?)?,
                    address: row.try_get("address")?,
                    envelope_sender: row.try_get("envelope_sender")?,
                    from_address: row.try_get("from_address")?,
                    member_email: row.try_get("member_email")?,
                    decision: row.try_get("decision")?,
                    reason: row.try_get("reason")?,
                    header_message_id: row.try_get("header_message_id")?,
                })
            })
            .collect()
    }

    async fn claim_auto_reply(
        &self,
        recipient: &str,
        not_since: OffsetDateTime,
        hourly_cap: u32,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // One claim at a time across instances: two copies of the same mail
        // arriving together must not both be answered, and the hourly count
        // must include every answer claimed before.
        lock(&mut tx, AUTO_REPLY_LOCK).await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT sent_at FROM auto_replies WHERE recipient = $1")
                .bind(recipient)
                .fetch_optional(&mut *tx)
                .await?;
        if last.is_some_and(|last| last > unix(not_since)) {
            return Ok(false);
        }
        // Each sender is answered once a week at most, so the senders
        // answered within the hour are the answers sent within it.
        let last_hour: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM auto_replies WHERE sent_at > $1")
                .bind(unix(now) - 3600)
                .fetch_one(&mut *tx)
                .await?;
        if last_hour >= i64::from(hourly_cap) {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO auto_replies (recipient, sent_at) VALUES ($1, $2)
             ON CONFLICT (recipient) DO UPDATE SET sent_at = EXCLUDED.sent_at",
        )
        .bind(recipient)
        .bind(unix(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn organization_overrides(&self) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT overrides FROM organization WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn save_organization_overrides(&self, json: &str, at: OffsetDateTime) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO organization (id, overrides, updated_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET overrides = EXCLUDED.overrides,
                 updated_at = EXCLUDED.updated_at",
        )
        .bind(json)
        .bind(unix(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn shared_secret(
        &self,
        name: &str,
        candidate: &[u8],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<u8>> {
        // An instance inserting at the same time waits for the first insert
        // to commit, then inserts nothing, and reads the first one's secret.
        sqlx::query(
            "INSERT INTO shared_secrets (name, value, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(unix(now))
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar("SELECT value FROM shared_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>> {
        let rows = sqlx::query(
            "SELECT key_id, pkcs8_pem, created_at, active FROM signing_keys
             ORDER BY active DESC, created_at DESC, key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredSigningKey {
                    key_id: row.try_get("key_id")?,
                    pkcs8_pem: row.try_get("pkcs8_pem")?,
                    created_at: from_unix(row.try_get("created_at")?)?,
                    active: row.try_get("active")?,
                })
            })
            .collect()
    }

    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        only_if_none: bool,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // One at a time across instances: of instances starting together
        // only the first finds no key, and rotations do not both deactivate
        // the same key and then collide on the active one.
        lock(&mut tx, SIGNING_KEY_LOCK).await?;
        if only_if_none {
            let stored: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys)")
                .fetch_one(&mut *tx)
                .await?;
            if stored {
                return Ok(false);
            }
        }
        sqlx::query("UPDATE signing_keys SET active = FALSE WHERE active")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (key_id, pkcs8_pem, created_at, active)
             VALUES ($1, $2, $3, TRUE)",
        )
        .bind(&key.key_id)
        .bind(&key.pkcs8_pem)
        .bind(unix(key.created_at))
        .execute(&mut *tx)
        .await
        .map_err(conflict)?;
        tx.commit().await?;
        Ok(true)
    }

    async fn hit_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> StoreResult<RateLimited> {
        // The count stops one past the limit, so a count above the limit
        // means this event was refused: one statement decides and counts,
        // concurrent hits on one key waiting for each other's row.
        let (count, ends_at): (i64, i64) = sqlx::query_as(
            "INSERT INTO rate_limits (key, window_ends_at, count) VALUES ($1, $2 + $3, 1)
             ON CONFLICT (key) DO UPDATE SET
                 count = CASE WHEN rate_limits.window_ends_at <= $2 THEN 1
                              ELSE LEAST(rate_limits.count + 1, $4 + 1) END,
                 window_ends_at = CASE WHEN rate_limits.window_ends_at <= $2
                                       THEN EXCLUDED.window_ends_at
                                       ELSE rate_limits.window_ends_at END
             RETURNING count, window_ends_at",
        )
        .bind(key)
        .bind(unix(now))
        .bind(window.whole_seconds())
        .bind(i64::from(limit))
        .fetch_one(&self.pool)
        .await?;
        rate_limited(count, ends_at, limit)
    }

    async fn check_rate_limit(
        &self,
        key: &str,
        limit: u32,
        now: OffsetDateTime,
    ) -> StoreResult<RateLimited> {
        let window: Option<(i64, i64)> = sqlx::query_as(
            "SELECT count, window_ends_at FROM rate_limits WHERE key = $1 AND window_ends_at > $2",
        )
        .bind(key)
        .bind(unix(now))
        .fetch_optional(&self.pool)
        .await?;
        window_full(window, limit)
    }

    async fn forget_rate_limits(&self, now: OffsetDateTime) -> StoreResult<u64> {
        Ok(sqlx::query("DELETE FROM rate_limits WHERE window_ends_at <= $1")
            .bind(unix(now))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn put_content(&self, id: &MessageId, content: &[u8]) -> StoreResult<()> {
        sqlx::query("INSERT INTO message_content (message_id, content) VALUES ($1, $2)")
            .bind(id.as_str())
            .bind(content)
            .execute(&self.pool)
            .await
            .map_err(conflict)?;
        Ok(())
    }

    async fn content(&self, id: &MessageId) -> StoreResult<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT content FROM message_content WHERE message_id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn remove_content(&self, id: &MessageId) -> StoreResult<()> {
        sqlx::query("DELETE FROM message_content WHERE message_id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
