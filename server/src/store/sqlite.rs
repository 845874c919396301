//! The embedded store: one SQLite file in WAL mode.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqliteExecutor, SqlitePool};
use time::OffsetDateTime;
use tokio::sync::{Mutex, MutexGuard, mpsc, oneshot};

use super::values::{conflict, from_unix, optional_from_unix, rate_limited, unix, window_full};
use super::{
    AccountRecord, CodeCheck, DeviceKind, DeviceRecord, DirectoryChanges, DirectoryRecord,
    MessageRecord, MessageSummary, NewDirectoryEntry, NewMail, NewNotification, NotificationRecord,
    OutboxEntry, OutboxState, RateLimited, RelayLogRecord, ReplyAddressRecord, RetrievalRecord,
    Store, StoreError, StoreResult, StoredSigningKey, TokenHashes,
};
use crate::auth::constant_time_eq;
use crate::ids::{AccountId, DeviceId};
use crate::read_cache::{Generation, ReadCache};
use sealpost_proto::{ContentDigest, MessageId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    /// For the reads nearly every request makes.
    readers: Readers,
    /// Writes committed together with those waiting at the same time.
    group_writes: mpsc::UnboundedSender<PendingWrite>,
    /// The device and account behind each access token hash that a request
    /// has shown, dropped whenever any device changes.
    callers: Arc<ReadCache<[u8; 32], (DeviceRecord, AccountRecord)>>,
    /// Messages as read; dropped when recalled, their only change.
    messages: Arc<ReadCache<MessageId, MessageRecord>>,
}

/// Kept callers at most: a few hundred bytes each.
const CALLERS_KEPT: usize = 10_000;
/// Kept messages at most, counting each recipient as one more: a few
/// megabytes at worst.
const MESSAGES_KEPT_WEIGHT: usize = 20_000;

/// Read-only connections for the reads nearly every request makes.
const READERS: usize = 4;

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and migrates it.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed row (a stored message, a retrieval record)
            // survives power loss, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A file on this machine does not drop connections: checking each
            // one before use would add a round trip to its thread.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let readers = Readers::open(&options.clone().read_only(true), READERS).await?;
        let writer = SqliteConnection::connect_with(&options).await?;
        let (group_writes, queue) = mpsc::unbounded_channel();
        // Ends when the store is dropped, with the last sender.
        tokio::spawn(commit_in_groups(writer, queue));
        Ok(Self {
            pool,
            readers,
            group_writes,
            callers: Arc::new(ReadCache::new(CALLERS_KEPT)),
            messages: Arc::new(ReadCache::new(MESSAGES_KEPT_WEIGHT)),
        })
    }

    /// Runs `write`, which may change devices, to its end even if the caller
    /// stops waiting, then drops the kept callers: cancelled between its
    /// commit and the invalidation, it would leave a revoked device admitted.
    async fn write_devices<T: Send + 'static>(
        &self,
        write: impl Future<Output = StoreResult<T>> + Send + 'static,
    ) -> StoreResult<T> {
        let callers = self.callers.clone();
        tokio::spawn(async move {
            let outcome = write.await;
            callers.invalidate();
            outcome
        })
        .await
        .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }

    /// Runs `write`, which changes message `id`, to its end even if the
    /// caller stops waiting, then drops the kept copy of that message.
    async fn write_message<T: Send + 'static>(
        &self,
        id: &MessageId,
        write: impl Future<Output = StoreResult<T>> + Send + 'static,
    ) -> StoreResult<T> {
        let (messages, id) = (self.messages.clone(), id.clone());
        tokio::spawn(async move {
            let outcome = write.await;
            messages.forget(&id);
            outcome
        })
        .await
        .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }

    fn keep_message(&self, read_at: Generation, message: &MessageRecord) {
        let weight = 1 + message.recipients.len();
        self.messages.keep(read_at, message.id.clone(), message.clone(), weight);
    }

    /// Has `write` committed together with the others waiting, and returns
    /// once it is durable.
    async fn write_in_group(&self, write: GroupWrite) -> StoreResult<()> {
        let (committed, outcome) = oneshot::channel();
        self.group_writes
            .send(PendingWrite { write, committed })
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        outcome.await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }
}

/// Connections kept out of the pool. Each connection has a thread of its
/// own, and the pool checks every connection returned to it with a round
/// trip to that thread: for a one-statement read, twice the work. Only
/// single statements outside transactions run here, so a read abandoned
/// half-way (its request cancelled) leaves nothing behind for the next.
struct Readers {
    connections: Vec<Mutex<SqliteConnection>>,
    next: AtomicUsize,
}

impl Readers {
    async fn open(options: &SqliteConnectOptions, count: usize) -> StoreResult<Self> {
        let mut connections = Vec::with_capacity(count);
        for _ in 0..count {
            connections.push(Mutex::new(SqliteConnection::connect_with(options).await?));
        }
        Ok(Self { connections, next: AtomicUsize::new(0) })
    }

    /// A free connection, or else the next in turn once it is free.
    async fn get(&self) -> MutexGuard<'_, SqliteConnection> {
        for connection in &self.connections {
            if let Ok(free) = connection.try_lock() {
                return free;
            }
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[turn].lock().await
    }
}

/// Most writes one commit takes: three bound values per sent mark stay far
/// below SQLite's limit on a statement's variables.
const GROUP_COMMIT_MAX: usize = 512;

/// A small write that many requests make at once. Each must be durable
/// before its caller goes on, and with `synchronous = FULL` every commit
/// waits for the disk: one commit for all the writes waiting at the time
/// costs one flush instead of one each. Each kind is written with one
/// statement for the whole group, as every statement is a round trip to the
/// connection's thread.
enum GroupWrite {
    Retrieval(RetrievalRow),
    NotificationSent(SentMark),
}

struct RetrievalRow {
    message_id: String,
    account_id: String,
    device_id: String,
    at: i64,
}

struct SentMark {
    id: i64,
    relay_answer: String,
    at: i64,
}

struct PendingWrite {
    write: GroupWrite,
    committed: oneshot::Sender<StoreResult<()>>,
}

/// Commits whatever writes are waiting, again and again, on a connection
/// of its own: while one commit waits for the disk, the next group gathers.
async fn commit_in_groups(
    mut connection: SqliteConnection,
    mut queue: mpsc::UnboundedReceiver<PendingWrite>,
) {
    let mut group = Vec::with_capacity(GROUP_COMMIT_MAX);
    while queue.recv_many(&mut group, GROUP_COMMIT_MAX).await > 0 {
        // Under load, requests running right now are about to add writes of
        // their own: letting them run first makes one commit of what would
        // be several. Idle, the runtime comes straight back here.
        tokio::task::yield_now().await;
        while group.len() < GROUP_COMMIT_MAX {
            match queue.try_recv() {
                Ok(pending) => group.push(pending),
                Err(_) => break,
            }
        }
        let writes: Vec<&GroupWrite> = group.iter().map(|pending| &pending.write).collect();
        if commit_together(&mut connection, &writes).await.is_ok() {
            for pending in group.drain(..) {
                let _ = pending.committed.send(Ok(()));
            }
        } else {
            // One failing write must not fail the others: each on its own.
            for pending in group.drain(..) {
                let outcome = commit_together(&mut connection, &[&pending.write]).await;
                let _ = pending.committed.send(outcome);
            }
        }
    }
}

async fn commit_together(
    connection: &mut SqliteConnection,
    writes: &[&GroupWrite],
) -> StoreResult<()> {
    let mut retrievals = Vec::new();
    let mut sent = Vec::new();
    for write in writes {
        match write {
            GroupWrite::Retrieval(row) => retrievals.push(row),
            GroupWrite::NotificationSent(mark) => sent.push(mark),
        }
    }
    match (retrievals.is_empty(), sent.is_empty()) {
        (false, false) => {
            let mut tx = connection.begin().await?;
            insert_retrievals(&mut *tx, &retrievals).await?;
            mark_sent(&mut *tx, &sent).await?;
            tx.commit().await?;
        }
        // One statement is a transaction of its own.
        (false, true) => insert_retrievals(connection, &retrievals).await?,
        (true, false) => mark_sent(connection, &sent).await?,
        (true, true) => {}
    }
    Ok(())
}

async fn insert_retrievals<'e>(
    executor: impl SqliteExecutor<'e>,
    rows: &[&RetrievalRow],
) -> StoreResult<()> {
    let rows: Vec<_> = rows
        .iter()
        .map(|row| {
            (row.message_id.as_str(), row.account_id.as_str(), row.device_id.as_str(), row.at)
        })
        .collect();
    sqlx::query(
        "INSERT INTO retrievals (message_id, account_id, device_id, retrieved_at)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?)",
    )
    .bind(group_as_json(&rows)?)
    .execute(executor)
    .await?;
    Ok(())
}

async fn mark_sent<'e>(executor: impl SqliteExecutor<'e>, marks: &[&SentMark]) -> StoreResult<()> {
    // A VALUES list, not `json_each`: joined to a table-valued function the
    // planner scans the whole outbox for every group.
    let mut query = QueryBuilder::<Sqlite>::new("WITH settled (id, relay_answer, updated_at) AS (");
    query.push_values(marks, |mut values, mark| {
        values.push_bind(mark.id).push_bind(mark.relay_answer.as_str()).push_bind(mark.at);
    });
    query.push(
        ") UPDATE outbox SET state = 'sent', relay_answer = settled.relay_answer, last_error = NULL,
             updated_at = settled.updated_at
         FROM settled WHERE outbox.id = settled.id AND outbox.state = 'queued'",
    );
    query.build().persistent(false).execute(executor).await?;
    Ok(())
}

/// A group's rows as one JSON array of arrays, for `json_each`: one bound
/// value, so one statement, prepared once, whatever the group's size.
fn group_as_json(rows: &impl serde::Serialize) -> StoreResult<String> {
    serde_json::to_string(rows)
        .map_err(|error| StoreError::Database(sqlx::Error::Encode(Box::new(error))))
}

fn account_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<AccountRecord> {
    Ok(AccountRecord {
        id: AccountId::from_stored(row.try_get("id")?),
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        created_at: from_unix(row.try_get("created_at")?)?,
    })
}

fn device_from_row(row: &SqliteRow) -> StoreResult<DeviceRecord> {
    let revoked_at: Option<i64> = row.try_get("revoked_at")?;
    Ok(DeviceRecord {
        id: DeviceId::from_stored(row.try_get("id")?),
        account_id: AccountId::from_stored(row.try_get("account_id")?),
        kind: DeviceKind::parse(row.try_get("kind")?)?,
        name: row.try_get("name")?,
        access_expires_at: from_unix(row.try_get("access_expires_at")?)?,
        refresh_expires_at: from_unix(row.try_get("refresh_expires_at")?)?,
        created_at: from_unix(row.try_get("created_at")?)?,
        revoked_at: revoked_at.map(from_unix).transpose()?,
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
fn caller_from_row(row: &SqliteRow) -> StoreResult<(DeviceRecord, AccountRecord)> {
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
/// [`message_joins`]; named apart from a device's and account's.
macro_rules! message_columns {
    () => {
        "m.id AS message_id, m.sender_account_id, s.email AS sender_email, m.content_sha256,
         m.size, m.created_at AS message_created_at, m.subject, m.expires_at, m.recalled_at,
         m.header_message_id, m.client_key,
         (SELECT json_group_array(r.email ORDER BY r.rowid) FROM message_recipients r
          WHERE r.message_id = m.id) AS recipients"
    };
}

/// The sender's account, for [`message_columns`].
macro_rules! message_joins {
    () => {
        "LEFT JOIN accounts s ON s.id = m.sender_account_id"
    };
}

fn message_from_row(row: &SqliteRow, id: &MessageId) -> StoreResult<MessageRecord> {
    let recipients: String = row.try_get("recipients")?;
    let recipients: Vec<String> = serde_json::from_str(&recipients)
        .map_err(|_| StoreError::Corrupt(format!("message {id} has recipients {recipients:?}")))?;
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
        recipients,
        subject: row.try_get("subject")?,
        expires_at: optional_from_unix(row.try_get("expires_at")?)?,
        recalled_at: optional_from_unix(row.try_get("recalled_at")?)?,
        header_message_id: row.try_get("header_message_id")?,
        client_key: row.try_get("client_key")?,
    })
}

impl SqliteStore {
    /// Whether an import row would change the entry's groups.
    async fn groups_differ(
        &self,
        tx: &mut sqlx::SqliteConnection,
        entry: &NewDirectoryEntry,
    ) -> StoreResult<bool> {
        let Some(groups) = &entry.groups else { return Ok(false) };
        let mut stored: Vec<String> =
            sqlx::query_scalar("SELECT name FROM directory_groups WHERE email = ? ORDER BY name")
                .bind(&entry.email)
                .fetch_all(&mut *tx)
                .await?;
        stored.dedup();
        let mut wanted = groups.clone();
        wanted.sort();
        wanted.dedup();
        Ok(stored != wanted)
    }
}

fn directory_from_row(row: &SqliteRow) -> StoreResult<DirectoryRecord> {
    Ok(DirectoryRecord {
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        updated_at: from_unix(row.try_get("updated_at")?)?,
    })
}

/// Mailbox lists: [`message_columns`] and the sender's name.
fn summaries_from_rows(rows: &[SqliteRow]) -> StoreResult<Vec<MessageSummary>> {
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("message_id")?;
            let id = MessageId::parse(&id)
                .map_err(|_| StoreError::Corrupt(format!("message id {id:?}")))?;
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

/// The columns [`device_from_row`] reads; a macro so queries stay static strings.
macro_rules! device_columns {
    () => {
        "id, account_id, kind, name, access_expires_at, refresh_expires_at, created_at, revoked_at"
    };
}

#[async_trait]
impl Store for SqliteStore {
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
            "INSERT INTO accounts (id, email, display_name, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
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
        let row = sqlx::query("SELECT * FROM accounts WHERE email = ?")
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
            "INSERT INTO verification_codes (email, code_hash, expires_at, attempts) VALUES (?, ?, ?, 0)
             ON CONFLICT (email) DO UPDATE SET code_hash = excluded.code_hash,
                 expires_at = excluded.expires_at, attempts = 0",
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
        // Counting the attempt first, inside the transaction, makes the check
        // and the count one step: concurrent guesses serialise on the row.
        let counted = sqlx::query(
            "UPDATE verification_codes SET attempts = attempts + 1
             WHERE email = ? AND expires_at > ? AND attempts < ?
             RETURNING code_hash",
        )
        .bind(email)
        .bind(unix(now))
        .bind(i64::from(max_attempts))
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match counted {
            None => CodeCheck::NoValidCode,
            Some(row) => {
                let stored: Vec<u8> = row.try_get("code_hash")?;
                if constant_time_eq(&stored, &code_hash) {
                    sqlx::query("DELETE FROM verification_codes WHERE email = ?")
                        .bind(email)
                        .execute(&mut *tx)
                        .await?;
                    CodeCheck::Accepted
                } else {
                    CodeCheck::Rejected
                }
            }
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
            "INSERT INTO devices (id, account_id, kind, name, access_hash, access_expires_at, refresh_hash,
                                  refresh_expires_at, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        if let Some(caller) = self.callers.get(&access_hash) {
            return Ok(Some(caller));
        }
        let read_at = self.callers.generation();
        let row = sqlx::query(concat!(
            "SELECT ",
            caller_columns!(),
            " FROM devices d JOIN accounts a ON a.id = d.account_id WHERE d.access_hash = ?"
        ))
        .bind(&access_hash[..])
        .fetch_optional(&mut *self.readers.get().await)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let caller = caller_from_row(&row)?;
        self.callers.keep(read_at, access_hash, caller.clone(), 1);
        Ok(Some(caller))
    }

    async fn rotate_tokens(
        &self,
        refresh_hash: [u8; 32],
        tokens: &TokenHashes,
        now: OffsetDateTime,
    ) -> StoreResult<Option<DeviceRecord>> {
        let pool = self.pool.clone();
        let tokens = tokens.clone();
        self.write_devices(async move {
            let row = sqlx::query(concat!(
                "UPDATE devices SET access_hash = ?, access_expires_at = ?, refresh_hash = ?, refresh_expires_at = ?
                 WHERE refresh_hash = ? AND refresh_expires_at > ? AND revoked_at IS NULL
                 RETURNING ",
                device_columns!()
            ))
            .bind(&tokens.access_hash[..])
            .bind(unix(tokens.access_expires_at))
            .bind(&tokens.refresh_hash[..])
            .bind(unix(tokens.refresh_expires_at))
            .bind(&refresh_hash[..])
            .bind(unix(now))
            .fetch_optional(&pool)
            .await?;
            row.as_ref().map(device_from_row).transpose()
        })
        .await
    }

    async fn devices_of(&self, account_id: &AccountId) -> StoreResult<Vec<DeviceRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE account_id = ? ORDER BY created_at, id"
        ))
        .bind(account_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    async fn revoke_device(
        &self,
        account_id: &AccountId,
        device_id: &DeviceId,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let pool = self.pool.clone();
        let (account_id, device_id) = (account_id.clone(), device_id.clone());
        self.write_devices(async move {
            let result = sqlx::query(
                "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND account_id = ?",
            )
            .bind(unix(now))
            .bind(device_id.as_str())
            .bind(account_id.as_str())
            .execute(&pool)
            .await?;
            Ok(result.rows_affected() == 1)
        })
        .await
    }

    async fn revoke_devices(
        &self,
        account_id: &AccountId,
        kind: Option<DeviceKind>,
        keep: Option<&DeviceId>,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        let pool = self.pool.clone();
        let account_id = account_id.clone();
        let keep = keep.map(|id| id.as_str().to_owned()).unwrap_or_default();
        self.write_devices(async move {
            let result = sqlx::query(
                "UPDATE devices SET revoked_at = ?
                 WHERE account_id = ? AND revoked_at IS NULL AND id != ? AND (? IS NULL OR kind = ?)",
            )
            .bind(unix(now))
            .bind(account_id.as_str())
            .bind(keep)
            .bind(kind.map(DeviceKind::as_str))
            .bind(kind.map(DeviceKind::as_str))
            .execute(&pool)
            .await?;
            Ok(result.rows_affected())
        })
        .await
    }

    async fn set_password_hash(&self, account_id: &AccountId, hash: &str) -> StoreResult<()> {
        let pool = self.pool.clone();
        let (account_id, hash) = (account_id.clone(), hash.to_owned());
        // Kept callers carry their account: dropped with the device writes.
        self.write_devices(async move {
            sqlx::query("UPDATE accounts SET password_hash = ? WHERE id = ?")
                .bind(hash)
                .bind(account_id.as_str())
                .execute(&pool)
                .await?;
            Ok(())
        })
        .await
    }

    async fn insert_message(
        &self,
        message: &MessageRecord,
        answers: &[String],
        notifications: &[NewNotification],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO messages (id, sender_account_id, content_sha256, size, created_at, subject,
                                   expires_at, header_message_id, client_key)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(message.id.as_str())
        .bind(message.sender_account_id.as_str())
        .bind(message.content_sha256.to_hex())
        .bind(i64::try_from(message.size).map_err(|_| StoreError::Corrupt("size overflows".into()))?)
        .bind(unix(message.created_at))
        .bind(&message.subject)
        .bind(message.expires_at.map(unix))
        .bind(&message.header_message_id)
        .bind(&message.client_key)
        .execute(&mut *tx)
        .await
        .map_err(conflict)?;
        for recipient in &message.recipients {
            sqlx::query(
                "INSERT OR IGNORE INTO message_recipients (message_id, email) VALUES (?, ?)",
            )
            .bind(message.id.as_str())
            .bind(recipient)
            .execute(&mut *tx)
            .await?;
        }
        let now = unix(message.created_at);
        for answered in answers {
            sqlx::query(
                "INSERT OR IGNORE INTO replies (message_id, email, reply_id, replied_at)
                 SELECT m.id, r.email, ?, ? FROM messages m
                   JOIN message_recipients r ON r.message_id = m.id AND r.email = ?
                  WHERE m.header_message_id = ?",
            )
            .bind(message.id.as_str())
            .bind(now)
            .bind(&message.sender_email)
            .bind(answered)
            .execute(&mut *tx)
            .await?;
        }
        for notification in notifications {
            sqlx::query(
                "INSERT INTO outbox (message_id, recipient, email, state, next_attempt_at, created_at, updated_at)
                 VALUES (?, ?, ?, 'queued', ?, ?, ?)",
            )
            .bind(message.id.as_str())
            .bind(&notification.recipient)
            .bind(&notification.email)
            .bind(now)
            .bind(now)
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
            " WHERE m.sender_account_id = ? AND m.client_key = ?"
        ))
        .bind(account_id.as_str())
        .bind(client_key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let id = MessageId::parse(row.try_get("message_id")?)
                .map_err(|_| StoreError::Corrupt("a message id does not parse".into()))?;
            message_from_row(&row, &id)
        })
        .transpose()
    }

    async fn recall_message(
        &self,
        id: &MessageId,
        at: OffsetDateTime,
    ) -> StoreResult<OffsetDateTime> {
        let (pool, message_id) = (self.pool.clone(), id.clone());
        self.write_message(id, async move {
            let mut tx = pool.begin().await?;
            let recalled_at: i64 = sqlx::query_scalar(
                "UPDATE messages SET recalled_at = COALESCE(recalled_at, ?) WHERE id = ?
                 RETURNING recalled_at",
            )
            .bind(unix(at))
            .bind(message_id.as_str())
            .fetch_one(&mut *tx)
            .await?;
            // Notifications not sent yet would announce what nobody can read.
            sqlx::query(
                "UPDATE outbox SET state = 'failed', last_error = 'recalled by the sender before it was sent',
                                   updated_at = ?
                  WHERE message_id = ? AND state = 'queued'",
            )
            .bind(unix(at))
            .bind(message_id.as_str())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            from_unix(recalled_at)
        })
        .await
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
              WHERE r.email = ? AND m.recalled_at >= ?
              ORDER BY m.recalled_at, m.id LIMIT ?",
        )
        .bind(email)
        .bind(unix(since))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id = MessageId::parse(row.try_get("id")?)
                    .map_err(|_| StoreError::Corrupt("a message id does not parse".into()))?;
                Ok((id, from_unix(row.try_get("recalled_at")?)?))
            })
            .collect()
    }

    async fn messages_to_purge(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<MessageId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE content_removed_at IS NULL AND expires_at <= ?1
             UNION
             SELECT id FROM messages WHERE content_removed_at IS NULL AND recalled_at IS NOT NULL
             LIMIT ?2",
        )
        .bind(unix(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|id| {
                MessageId::parse(id)
                    .map_err(|_| StoreError::Corrupt(format!("message id {id:?} does not parse")))
            })
            .collect()
    }

    async fn mark_content_removed(&self, id: &MessageId, at: OffsetDateTime) -> StoreResult<()> {
        sqlx::query("UPDATE messages SET content_removed_at = ? WHERE id = ?")
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
        let mut tx = self.pool.begin().await?;
        for recipient in recipients {
            sqlx::query(
                "INSERT OR IGNORE INTO outbox (message_id, recipient, email, state, attempts,
                                               next_attempt_at, created_at, updated_at, relay_answer)
                 VALUES (?, ?, x'', 'sent', 1, ?, ?, ?, ?)",
            )
            .bind(id.as_str())
            .bind(recipient)
            .bind(unix(at))
            .bind(unix(at))
            .bind(unix(at))
            .bind(relay_answer)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn replies_to(&self, id: &MessageId) -> StoreResult<Vec<(String, OffsetDateTime)>> {
        let rows = sqlx::query("SELECT email, replied_at FROM replies WHERE message_id = ?")
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("email")?, from_unix(row.try_get("replied_at")?)?)))
            .collect()
    }

    async fn message(&self, id: &MessageId) -> StoreResult<Option<MessageRecord>> {
        if let Some(message) = self.messages.get(id) {
            return Ok(Some(message));
        }
        let read_at = self.messages.generation();
        // One statement, recipients as a JSON array: each statement is a
        // round trip to the connection's thread.
        let row = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m ",
            message_joins!(),
            " WHERE m.id = ?"
        ))
        .bind(id.as_str())
        .fetch_optional(&mut *self.readers.get().await)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let message = message_from_row(&row, id)?;
        self.keep_message(read_at, &message);
        Ok(Some(message))
    }

    async fn device_and_message(
        &self,
        access_hash: [u8; 32],
        id: &MessageId,
    ) -> StoreResult<(Option<(DeviceRecord, AccountRecord)>, Option<MessageRecord>)> {
        // Every retrieval makes both look-ups: from what is kept, else with
        // one statement, one round trip to the connection's thread.
        if let (Some(caller), Some(message)) =
            (self.callers.get(&access_hash), self.messages.get(id))
        {
            return Ok((Some(caller), Some(message)));
        }
        let (callers_read_at, messages_read_at) =
            (self.callers.generation(), self.messages.generation());
        let row = sqlx::query(concat!(
            "SELECT ",
            caller_columns!(),
            ", ",
            message_columns!(),
            " FROM devices d JOIN accounts a ON a.id = d.account_id
              LEFT JOIN messages m ON m.id = ? ",
            message_joins!(),
            " WHERE d.access_hash = ?"
        ))
        .bind(id.as_str())
        .bind(&access_hash[..])
        .fetch_optional(&mut *self.readers.get().await)
        .await?;
        let Some(row) = row else { return Ok((None, None)) };
        let message_found: Option<String> = row.try_get("message_id")?;
        let message = match message_found {
            Some(_) => Some(message_from_row(&row, id)?),
            None => None,
        };
        let caller = caller_from_row(&row)?;
        self.callers.keep(callers_read_at, access_hash, caller.clone(), 1);
        if let Some(message) = &message {
            self.keep_message(messages_read_at, message);
        }
        Ok((Some(caller), message))
    }

    async fn received_messages(&self, email: &str, limit: u32) -> StoreResult<Vec<MessageSummary>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            ", s.display_name AS sender_name FROM message_recipients mine
              JOIN messages m ON m.id = mine.message_id ",
            message_joins!(),
            " WHERE mine.email = ? ORDER BY m.created_at DESC, m.id DESC LIMIT ?"
        ))
        .bind(email)
        .bind(limit)
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
            " WHERE m.sender_account_id = ? ORDER BY m.created_at DESC, m.id DESC LIMIT ?"
        ))
        .bind(account_id.as_str())
        .bind(limit)
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
        self.write_in_group(GroupWrite::Retrieval(RetrievalRow {
            message_id: message_id.as_str().to_owned(),
            account_id: account_id.as_str().to_owned(),
            device_id: device_id.as_str().to_owned(),
            at: unix(at),
        }))
        .await
    }

    async fn retrievals(&self, message_id: &MessageId) -> StoreResult<Vec<RetrievalRecord>> {
        let rows = sqlx::query(
            "SELECT a.email, d.id AS device_id, d.kind AS device_kind, d.name AS device_name, r.retrieved_at
             FROM retrievals r JOIN accounts a ON a.id = r.account_id JOIN devices d ON d.id = r.device_id
             WHERE r.message_id = ? ORDER BY r.id",
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
        // One statement: selecting and leasing cannot interleave with another claimer.
        let rows = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, updated_at = ?
             WHERE id IN (SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?
                          ORDER BY next_attempt_at, id LIMIT ?)
             RETURNING id, message_id, envelope_sender, recipient, email, attempts, created_at",
        )
        .bind(unix(lease_until))
        .bind(unix(now))
        .bind(unix(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut entries = rows
            .iter()
            .map(|row| {
                let message_id: Option<String> = row.try_get("message_id")?;
                let message_id = message_id
                    .map(|id| {
                        MessageId::parse(&id)
                            .map_err(|_| StoreError::Corrupt(format!("message id {id:?}")))
                    })
                    .transpose()?;
                Ok(OutboxEntry {
                    id: row.try_get("id")?,
                    message_id,
                    envelope_sender: row.try_get("envelope_sender")?,
                    recipient: row.try_get("recipient")?,
                    email: row.try_get("email")?,
                    attempts: row.try_get::<i64, _>("attempts")?.try_into().unwrap_or(u32::MAX),
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
            "UPDATE outbox SET next_attempt_at = ? WHERE id = ? AND attempts = ? AND state = 'queued'",
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
        self.write_in_group(GroupWrite::NotificationSent(SentMark {
            id,
            relay_answer: relay_answer.to_owned(),
            at: unix(at),
        }))
        .await
    }

    async fn mark_notification_retry(
        &self,
        id: i64,
        error: &str,
        retry_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET next_attempt_at = ?, last_error = ?, updated_at = ?
             WHERE id = ? AND state = 'queued'",
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
            "UPDATE outbox SET state = 'failed', last_error = ?, updated_at = ?
             WHERE id = ? AND state = 'queued'",
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
            "UPDATE outbox SET state = 'bounced', last_error = ?, updated_at = ? WHERE id = ?",
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
            "SELECT id, recipient, state, attempts, next_attempt_at, updated_at, relay_answer, last_error
             FROM outbox WHERE message_id = ? ORDER BY id",
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
                    attempts: row.try_get::<i64, _>("attempts")?.try_into().unwrap_or(u32::MAX),
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
        for entry in entries {
            let existing: Option<Option<String>> =
                sqlx::query_scalar("SELECT name FROM directory WHERE email = ?")
                    .bind(&entry.email)
                    .fetch_optional(&mut *tx)
                    .await?;
            match existing {
                Some(name) if name == entry.name && !self.groups_differ(&mut tx, entry).await? => {
                    changes.unchanged += 1;
                }
                found => {
                    sqlx::query(
                        "INSERT INTO directory (email, name, updated_at) VALUES (?, ?, ?)
                         ON CONFLICT (email) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at",
                    )
                    .bind(&entry.email)
                    .bind(&entry.name)
                    .bind(unix(now))
                    .execute(&mut *tx)
                    .await?;
                    if let Some(groups) = &entry.groups {
                        sqlx::query("DELETE FROM directory_groups WHERE email = ?")
                            .bind(&entry.email)
                            .execute(&mut *tx)
                            .await?;
                        for group in groups {
                            sqlx::query(
                                "INSERT OR IGNORE INTO directory_groups (name, email) VALUES (?, ?)",
                            )
                            .bind(group)
                            .bind(&entry.email)
                            .execute(&mut *tx)
                            .await?;
                        }
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
            "SELECT email, name, updated_at FROM directory ORDER BY email LIMIT ? OFFSET ?",
        )
        .bind(limit)
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM directory").fetch_one(&self.pool).await?;
        let entries = rows.iter().map(directory_from_row).collect::<StoreResult<_>>()?;
        Ok((entries, u64::try_from(total).unwrap_or(0)))
    }

    async fn directory_entry(&self, email: &str) -> StoreResult<Option<DirectoryRecord>> {
        let row = sqlx::query("SELECT email, name, updated_at FROM directory WHERE email = ?")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(directory_from_row).transpose()
    }

    async fn remove_directory_entry(&self, email: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM directory WHERE email = ?")
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn directory_group(&self, name: &str) -> StoreResult<Vec<DirectoryRecord>> {
        let rows = sqlx::query(
            "SELECT d.email, d.name, d.updated_at FROM directory_groups g
               JOIN directory d ON d.email = g.email
              WHERE g.name = ? ORDER BY d.email",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(directory_from_row).collect()
    }

    async fn queue_mail(&self, mails: &[NewMail], now: OffsetDateTime) -> StoreResult<Vec<i64>> {
        let now = unix(now);
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(mails.len());
        for mail in mails {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO outbox (recipient, envelope_sender, email, state, next_attempt_at, created_at, updated_at)
                 VALUES (?, ?, ?, 'queued', ?, ?, ?) RETURNING id",
            )
            .bind(&mail.recipient)
            .bind(&mail.envelope_sender)
            .bind(&mail.email)
            .bind(now)
            .bind(now)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn issue_reply_addresses(
        &self,
        member_email: &str,
        thread: &str,
        candidates: &[(String, String)],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let mut addresses = Vec::with_capacity(candidates.len());
        for (correspondent, candidate) in candidates {
            let address: String = sqlx::query_scalar(
                "INSERT INTO reply_addresses (address, member_email, correspondent, thread, created_at)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (member_email, correspondent, thread) DO UPDATE SET address = address
                 RETURNING address",
            )
            .bind(candidate)
            .bind(member_email)
            .bind(correspondent)
            .bind(thread)
            .bind(unix(now))
            .fetch_one(&mut *tx)
            .await?;
            addresses.push(address);
        }
        tx.commit().await?;
        Ok(addresses)
    }

    async fn reply_address(&self, address: &str) -> StoreResult<Option<ReplyAddressRecord>> {
        let row = sqlx::query(
            "SELECT address, member_email, correspondent, thread, created_at, disabled_at
               FROM reply_addresses WHERE address = ?",
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
                disabled_at: row
                    .try_get::<Option<i64>, _>("disabled_at")?
                    .map(from_unix)
                    .transpose()?,
            })
        })
        .transpose()
    }

    async fn disable_reply_address(&self, address: &str, at: OffsetDateTime) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE reply_addresses SET disabled_at = COALESCE(disabled_at, ?) WHERE address = ?",
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
               FROM relay_log ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
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
        // One writer at a time: two copies of the same mail arriving
        // together must not both be answered.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT sent_at FROM auto_replies WHERE recipient = ?")
                .bind(recipient)
                .fetch_optional(&mut *tx)
                .await?;
        if last.is_some_and(|last| last > unix(not_since)) {
            return Ok(false);
        }
        // Each sender is answered once a week at most, so the senders
        // answered within the hour are the answers sent within it.
        let last_hour: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM auto_replies WHERE sent_at > ?")
                .bind(unix(now) - 3600)
                .fetch_one(&mut *tx)
                .await?;
        if last_hour >= i64::from(hourly_cap) {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO auto_replies (recipient, sent_at) VALUES (?, ?)
             ON CONFLICT (recipient) DO UPDATE SET sent_at = excluded.sent_at",
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
            "INSERT INTO organization (id, overrides, updated_at) VALUES (1, ?, ?)
             ON CONFLICT (id) DO UPDATE SET overrides = excluded.overrides, updated_at = excluded.updated_at",
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
        sqlx::query(
            "INSERT INTO shared_secrets (name, value, created_at) VALUES (?, ?, ?)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(unix(now))
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar("SELECT value FROM shared_secrets WHERE name = ?")
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
                    active: row.try_get::<i64, _>("active")? == 1,
                })
            })
            .collect()
    }

    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        only_if_none: bool,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if only_if_none {
            let stored: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys").fetch_one(&mut *tx).await?;
            if stored > 0 {
                return Ok(false);
            }
        }
        sqlx::query("UPDATE signing_keys SET active = 0 WHERE active = 1")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (key_id, pkcs8_pem, created_at, active) VALUES (?, ?, ?, 1)",
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
        // means this event was refused: one statement decides and counts.
        let (count, ends_at): (i64, i64) = sqlx::query_as(
            "INSERT INTO rate_limits (key, window_ends_at, count) VALUES (?1, ?2 + ?3, 1)
             ON CONFLICT (key) DO UPDATE SET
                 count = CASE WHEN rate_limits.window_ends_at <= ?2 THEN 1
                              ELSE MIN(rate_limits.count + 1, ?4 + 1) END,
                 window_ends_at = CASE WHEN rate_limits.window_ends_at <= ?2
                                       THEN excluded.window_ends_at
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
            "SELECT count, window_ends_at FROM rate_limits WHERE key = ? AND window_ends_at > ?",
        )
        .bind(key)
        .bind(unix(now))
        .fetch_optional(&self.pool)
        .await?;
        window_full(window, limit)
    }

    async fn forget_rate_limits(&self, now: OffsetDateTime) -> StoreResult<u64> {
        Ok(sqlx::query("DELETE FROM rate_limits WHERE window_ends_at <= ?")
            .bind(unix(now))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn put_content(&self, id: &MessageId, content: &[u8]) -> StoreResult<()> {
        sqlx::query("INSERT INTO message_content (message_id, content) VALUES (?, ?)")
            .bind(id.as_str())
            .bind(content)
            .execute(&self.pool)
            .await
            .map_err(conflict)?;
        Ok(())
    }

    async fn content(&self, id: &MessageId) -> StoreResult<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT content FROM message_content WHERE message_id = ?")
            .bind(id.as_str())
            .fetch_optional(&mut *self.readers.get().await)
            .await?)
    }

    async fn remove_content(&self, id: &MessageId) -> StoreResult<()> {
        sqlx::query("DELETE FROM message_content WHERE message_id = ?")
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
