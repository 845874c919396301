//! The server's idea of "now", which tests can move forward or back.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// Wall-clock time plus an offset that only tests change, so token expiry and
/// clock skew can be tested without sleeping.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_seconds: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        now + time::Duration::seconds(self.offset_seconds.load(Ordering::Relaxed))
    }

    pub fn advance(&self, by: std::time::Duration) {
        let seconds = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.offset_seconds.fetch_add(seconds, Ordering::Relaxed);
    }

    /// Moves the clock back, as a server whose clock is behind its clients'.
    pub fn rewind(&self, by: std::time::Duration) {
        let seconds = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.offset_seconds.fetch_sub(seconds, Ordering::Relaxed);
    }
}

/// `2026-11-29 14:05 UTC`: how pages and messages for people show a time.
pub fn human_date(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    at.to_offset(time::UtcOffset::UTC).format(format).unwrap_or_default()
}
