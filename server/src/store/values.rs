//! Conversions both stores make alike: times as Unix seconds, rate-limit
//! windows, and what a unique violation means.

use time::OffsetDateTime;

use super::{RateLimited, StoreError, StoreResult};

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
