//! The agent's persistent state: where each folder's next pass starts, which
//! placeholders were kept and why, what was swapped and rejected, and what
//! each watcher is doing.
//!
//! It lives in its own SQLite file next to the search index. The running
//! agent writes it; `sealpost-agent status` (another process) reads it, so
//! the file uses WAL and every write is one short transaction.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

use crate::swap::FolderReport;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/state");

/// How many swaps the history keeps.
const SWAP_HISTORY: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the agent's state database: {}", database_failure(.0))]
    Database(#[from] sqlx::Error),
    #[error("the agent's state database could not be upgraded: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// What went wrong with one of the agent's own SQLite files, for people: a
/// full disk says so and what to do, as the agent cannot mend that itself.
pub(crate) fn database_failure(error: &sqlx::Error) -> String {
    let full = match error {
        // SQLITE_FULL (an extended result code's low byte), or
        // SQLITE_IOERR_SHMSIZE: no room to enlarge the WAL's index file.
        sqlx::Error::Database(database) => database
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == 13 || code == 4874),
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    };
    if full {
        "the disk holding the agent's data directory is full. Free some space on it: the \
         mailbox is unharmed, and the agent catches up by itself once there is room"
            .to_owned()
    } else {
        error.to_string()
    }
}

/// Where a folder's next pass starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderCursor {
    pub uid_validity: u32,
    pub next_uid: u32,
}

/// A watcher's connection, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ConnectionState {
    pub folder: String,
    /// `connected` or `reconnecting`.
    pub state: String,
    /// The error that caused the reconnect.
    pub detail: Option<String>,
    pub since: i64,
}

/// A placeholder that was not swapped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct KeptRecord {
    pub folder: String,
    #[sqlx(try_from = "i64")]
    pub uid: u32,
    pub message_id: String,
    pub reason: String,
    /// Whether the agent keeps retrying it.
    pub temporary: bool,
    pub first_seen: i64,
    pub last_tried: i64,
    #[sqlx(try_from = "i64")]
    pub attempts: u32,
}

/// A notification that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RejectedRecord {
    pub folder: String,
    #[sqlx(try_from = "i64")]
    pub uid: u32,
    pub reason: String,
    pub seen_at: i64,
}

/// A secure message swapped in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SwapRecord {
    pub folder: String,
    pub message_id: String,
    pub swapped_at: i64,
}

pub struct AgentState {
    pub(crate) pool: SqlitePool,
}

impl AgentState {
    /// Opens (creating if needed) the state file.
    pub async fn open(path: &Path) -> Result<Self, StateError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The running agent and `status` may touch the file at once.
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(2).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn cursor(&self, folder: &str) -> Result<Option<FolderCursor>, StateError> {
        let row = sqlx::query("SELECT uid_validity, next_uid FROM folder_cursors WHERE folder = ?")
            .bind(folder)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(FolderCursor {
                uid_validity: u32_of(row.try_get("uid_validity")?),
                next_uid: u32_of(row.try_get("next_uid")?),
            })
        })
        .transpose()
    }

    /// Records one pass over `folder`: its cursor, what was swapped, kept and
    /// rejected. A kept placeholder that is swapped later loses its record.
    pub async fn record_pass(
        &self,
        folder: &str,
        report: &FolderReport,
        now: i64,
    ) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO folder_cursors (folder, uid_validity, next_uid, updated_at)
             VALUES (?, ?, ?, ?)
             ON CONFLICT (folder) DO UPDATE SET uid_validity = excluded.uid_validity,
                 next_uid = excluded.next_uid, updated_at = excluded.updated_at",
        )
        .bind(folder)
        .bind(i64::from(report.uid_validity))
        .bind(i64::from(report.next_uid))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for swapped in &report.swapped {
            sqlx::query("INSERT INTO swaps (folder, message_id, swapped_at) VALUES (?, ?, ?)")
                .bind(folder)
                .bind(&swapped.message_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM kept_placeholders WHERE message_id = ?")
                .bind(&swapped.message_id)
                .execute(&mut *tx)
                .await?;
        }
        if !report.swapped.is_empty() {
            sqlx::query("DELETE FROM swaps WHERE id <= (SELECT MAX(id) FROM swaps) - ?")
                .bind(SWAP_HISTORY)
                .execute(&mut *tx)
                .await?;
        }
        for kept in &report.kept {
            sqlx::query(
                "INSERT INTO kept_placeholders
                     (folder, uid, message_id, reason, temporary, first_seen, last_tried, attempts)
                 VALUES (?, ?, ?, ?, ?, ?, ?, 1)
                 ON CONFLICT (folder, uid) DO UPDATE SET reason = excluded.reason,
                     temporary = excluded.temporary, last_tried = excluded.last_tried,
                     attempts = attempts + 1",
            )
            .bind(folder)
            .bind(i64::from(kept.uid))
            .bind(&kept.message_id)
            .bind(&kept.reason)
            .bind(kept.temporary)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for rejected in &report.rejected {
            sqlx::query(
                "INSERT INTO rejected_notifications (folder, uid, reason, seen_at)
                 VALUES (?, ?, ?, ?)
                 ON CONFLICT (folder, uid) DO UPDATE SET reason = excluded.reason",
            )
            .bind(folder)
            .bind(i64::from(rejected.uid))
            .bind(&rejected.reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Asks for the kept placeholder `uid` in `folder` to be looked at
    /// again: the folder's cursor goes back to it, so the next pass (a
    /// watcher started after this) tries it and what follows it again; the
    /// swap is idempotent, so nothing is done twice. False when no such
    /// placeholder is kept.
    pub async fn retry_kept(&self, folder: &str, uid: u32) -> Result<bool, StateError> {
        let mut tx = self.pool.begin().await?;
        let kept: Option<i64> =
            sqlx::query_scalar("SELECT uid FROM kept_placeholders WHERE folder = ? AND uid = ?")
                .bind(folder)
                .bind(i64::from(uid))
                .fetch_optional(&mut *tx)
                .await?;
        if kept.is_none() {
            return Ok(false);
        }
        sqlx::query("UPDATE folder_cursors SET next_uid = MIN(next_uid, ?) WHERE folder = ?")
            .bind(i64::from(uid))
            .bind(folder)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Forgets `folder`'s cursor and records after its UIDs were renumbered
    /// (a new UIDVALIDITY): the old UIDs name other messages now.
    pub async fn reset_folder(&self, folder: &str) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        for statement in [
            "DELETE FROM folder_cursors WHERE folder = ?",
            "DELETE FROM kept_placeholders WHERE folder = ?",
            "DELETE FROM rejected_notifications WHERE folder = ?",
        ] {
            sqlx::query(statement).bind(folder).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_connection(
        &self,
        folder: &str,
        state: &str,
        detail: Option<&str>,
        now: i64,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO connections (folder, state, detail, since) VALUES (?, ?, ?, ?)
             ON CONFLICT (folder) DO UPDATE SET
                 since = CASE WHEN connections.state = excluded.state THEN connections.since
                              ELSE excluded.since END,
                 state = excluded.state, detail = excluded.detail",
        )
        .bind(folder)
        .bind(state)
        .bind(detail)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the watchers' connection states (the agent stopped).
    pub async fn clear_connections(&self) -> Result<(), StateError> {
        sqlx::query("DELETE FROM connections").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn connections(&self) -> Result<Vec<ConnectionState>, StateError> {
        Ok(sqlx::query_as("SELECT folder, state, detail, since FROM connections ORDER BY folder")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn kept(&self) -> Result<Vec<KeptRecord>, StateError> {
        Ok(sqlx::query_as(
            "SELECT folder, uid, message_id, reason, temporary, first_seen, last_tried, attempts
             FROM kept_placeholders ORDER BY first_seen, folder, uid",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn rejected(&self) -> Result<Vec<RejectedRecord>, StateError> {
        Ok(sqlx::query_as(
            "SELECT folder, uid, reason, seen_at FROM rejected_notifications
             ORDER BY seen_at, folder, uid",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The `limit` most recent swaps, newest first, and how many are recorded.
    pub async fn recent_swaps(&self, limit: u32) -> Result<(Vec<SwapRecord>, u64), StateError> {
        let swaps = sqlx::query_as(
            "SELECT folder, message_id, swapped_at FROM swaps ORDER BY id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM swaps").fetch_one(&self.pool).await?;
        Ok((swaps, u64::try_from(total).unwrap_or_default()))
    }
}

pub(crate) fn u32_of(value: i64) -> u32 {
    u32::try_from(value).unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swap::{KeptPlaceholder, RejectedNotification, SwappedMessage};

    async fn state() -> (tempfile::TempDir, AgentState) {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = AgentState::open(&dir.path().join("state.db")).await.expect("open");
        (dir, state)
    }

    fn kept(uid: u32, message_id: &str, temporary: bool) -> KeptPlaceholder {
        KeptPlaceholder {
            uid,
            message_id: message_id.into(),
            reason: format!("reason for {message_id}"),
            temporary,
        }
    }

    #[tokio::test]
    async fn a_pass_moves_the_cursor_and_records_what_happened() {
        let (dir, state) = state().await;
        assert_eq!(state.cursor("INBOX").await.expect("cursor"), None);
        let report = FolderReport {
            swapped: vec![SwappedMessage { message_id: "m1".into(), uid: 10 }],
            rejected: vec![RejectedNotification { uid: 4, reason: "bad signature".into() }],
            kept: vec![kept(5, "m2", true), kept(6, "m3", false)],
            examined: 3,
            uid_validity: 77,
            next_uid: 5,
        };
        state.record_pass("INBOX", &report, 100).await.expect("record");
        // Kept again on the next pass: one record, one more attempt.
        let again = FolderReport { kept: vec![kept(5, "m2", true)], ..report.clone() };
        state
            .record_pass("INBOX", &FolderReport { swapped: vec![], ..again }, 160)
            .await
            .expect("record");
        drop(state);

        // Another process (status) reads what the agent wrote.
        let state = AgentState::open(&dir.path().join("state.db")).await.expect("reopen");
        assert_eq!(
            state.cursor("INBOX").await.expect("cursor"),
            Some(FolderCursor { uid_validity: 77, next_uid: 5 })
        );
        let records = state.kept().await.expect("kept");
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].uid, records[0].attempts, records[0].last_tried), (5, 2, 160));
        assert!(!records[1].temporary);
        assert_eq!(state.rejected().await.expect("rejected")[0].reason, "bad signature");
        let (swaps, total) = state.recent_swaps(10).await.expect("swaps");
        assert_eq!((swaps[0].message_id.as_str(), total), ("m1", 1));

        // Swapped later: the kept record goes.
        let swapped = FolderReport {
            swapped: vec![SwappedMessage { message_id: "m2".into(), uid: 11 }],
            uid_validity: 77,
            next_uid: 12,
            ..FolderReport::default()
        };
        state.record_pass("INBOX", &swapped, 200).await.expect("record");
        let records = state.kept().await.expect("kept");
        assert_eq!(records.iter().map(|r| r.message_id.as_str()).collect::<Vec<_>>(), ["m3"]);

        state.reset_folder("INBOX").await.expect("reset");
        assert_eq!(state.cursor("INBOX").await.expect("cursor"), None);
        assert!(state.kept().await.expect("kept").is_empty());
    }

    #[tokio::test]
    async fn connection_state_keeps_its_since_while_unchanged() {
        let (_dir, state) = state().await;
        state.set_connection("INBOX", "connected", None, 10).await.expect("set");
        state.set_connection("INBOX", "connected", None, 20).await.expect("set");
        assert_eq!(state.connections().await.expect("read")[0].since, 10);
        state.set_connection("INBOX", "reconnecting", Some("refused"), 30).await.expect("set");
        let connection = &state.connections().await.expect("read")[0];
        assert_eq!((connection.state.as_str(), connection.since), ("reconnecting", 30));
        assert_eq!(connection.detail.as_deref(), Some("refused"));
        state.clear_connections().await.expect("clear");
        assert!(state.connections().await.expect("read").is_empty());
    }

    #[tokio::test]
    async fn a_retry_moves_the_cursor_back_to_the_kept_placeholder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = AgentState::open(&dir.path().join("state.db")).await.expect("open");
        let report = FolderReport {
            uid_validity: 7,
            next_uid: 40,
            kept: vec![kept(12, "m1", false)],
            ..FolderReport::default()
        };
        state.record_pass("INBOX", &report, 1).await.expect("record");
        assert!(!state.retry_kept("INBOX", 13).await.expect("retry"), "nothing kept at 13");
        assert_eq!(state.cursor("INBOX").await.expect("cursor").map(|c| c.next_uid), Some(40));
        assert!(state.retry_kept("INBOX", 12).await.expect("retry"));
        assert_eq!(state.cursor("INBOX").await.expect("cursor").map(|c| c.next_uid), Some(12));
    }
}
