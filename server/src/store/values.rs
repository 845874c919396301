//! Conversions both stores make alike: times as Unix seconds, rate-limit
//! windows, and what a unique violation or an outage means.

use time::OffsetDateTime;

use super::{Outage, RateLimited, StoreError, StoreResult};

/// The outcome of a rate-limit count of `count` in a window ending at
/// `ends_at`: the count stops one past the limit, so a count above it
/// means the event was refused.
pub(crate) fn rate_limited(count: i64, ends_at: i64, limit: u32) -> StoreResult<RateLimited> {
    if count > i64::from(limit) {
        Ok(RateLimited::RefusedUntil(from_unix(ends_at)?))
    } else {
        Ok(RateLimited::Allowed)
    }
}

/// Whether a window, as read (count, end), if still open, takes one more event.
pub(crate) fn window_full(window: Option<(i64, i64)>, limit: u32) -> StoreResult<RateLimited> {
    match window {
        // As full as the last refused hit would leave it.
        Some((count, ends_at)) if count >= i64::from(limit) => {
            rate_limited(i64::from(limit) + 1, ends_at, limit)
        }
        _ => Ok(RateLimited::Allowed),
    }
}

pub(crate) fn unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

pub(crate) fn optional_from_unix(seconds: Option<i64>) -> StoreResult<Option<OffsetDateTime>> {
    seconds.map(from_unix).transpose()
}

pub(crate) fn from_unix(seconds: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {seconds} out of range")))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A unique violation is a conflict; anything else, a database error.
pub(crate) fn conflict(error: sqlx::Error) -> StoreError {
    if is_unique_violation(&error) { StoreError::Conflict } else { error.into() }
}

/// The outage `error` is, if any: a lock held too long, no connection to
/// be had or a full disk, on either database.
pub(crate) fn outage(error: &sqlx::Error) -> Option<Outage> {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Some(Outage::Busy)
        }
        sqlx::Error::Database(database) => {
            if let Some(sqlite) = database.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                sqlite_outage(sqlite)
            } else {
                database.code().and_then(|state| postgres_outage(&state))
            }
        }
        _ => None,
    }
}

fn sqlite_outage(error: &sqlx::sqlite::SqliteError) -> Option<Outage> {
    use sqlx::error::DatabaseError;
    // An extended result code; its low byte is the primary one.
    let code: i32 = error.code()?.parse().ok()?;
    match code & 0xff {
        // SQLITE_BUSY, SQLITE_LOCKED: another connection (another process)
        // held the lock for longer than the busy timeout.
        5 | 6 => Some(Outage::Busy),
        // SQLITE_FULL: the disk (or the file system's quota) is full.
        13 => Some(Outage::DiskFull),
        // SQLITE_IOERR_SHMSIZE: no room to enlarge the WAL's index file.
        _ if code == 4874 => Some(Outage::DiskFull),
        _ => None,
    }
}

/// By SQLSTATE: disk full; lock and statement timeouts, serialization
/// failures and deadlocks; too many connections, shutdown, start-up and
/// the connection exceptions of class 08.
fn postgres_outage(state: &str) -> Option<Outage> {
    match state {
        "53100" => Some(Outage::DiskFull),
        "55P03" | "57014" | "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03" => {
            Some(Outage::Busy)
        }
        state if state.starts_with("08") => Some(Outage::Busy),
        _ => None,
    }
}
