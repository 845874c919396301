//! Fixed-window counters per key (an address or a client IP), kept in the
//! database so that every server instance behind a balancer counts the
//! same events: the limit holds for the whole service, not per instance.

use std::time::Duration;

use time::OffsetDateTime;

use crate::store::{RateLimited, Store, StoreError};

/// One kind of limit: at most `limit` events per key in a window of `window`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Tells this limit's counters apart from another's for the same key.
    name: &'static str,
    limit: u32,
    window: time::Duration,
}

/// The caller must wait this long before the key is allowed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("rate limited for {:?}", .0.0)]
    Refused(RetryAfter),
    #[error("rate limit: {0}")]
    Store(#[from] StoreError),
}

impl RateLimit {
    pub fn new(name: &'static str, limit: u32, window: Duration) -> Self {
        let window = time::Duration::try_from(window).unwrap_or(time::Duration::HOUR);
        Self { name, limit, window }
    }

    /// Counts one event for `key`; refuses when the window is full.
    pub async fn hit(
        &self,
        store: &dyn Store,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<(), LimitError> {
        let answer = store.hit_rate_limit(&self.counter(key), self.limit, self.window, now).await?;
        refusal(answer, now)
    }

    /// Whether `key` could take one more event, without counting one.
    pub async fn check(
        &self,
        store: &dyn Store,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<(), LimitError> {
        let answer = store.check_rate_limit(&self.counter(key), self.limit, now).await?;
        refusal(answer, now)
    }

    fn counter(&self, key: &str) -> String {
        format!("{}:{key}", self.name)
    }
}

fn refusal(answer: RateLimited, now: OffsetDateTime) -> Result<(), LimitError> {
    match answer {
        RateLimited::Allowed => Ok(()),
        RateLimited::RefusedUntil(until) => {
            let wait = Duration::try_from(until - now).unwrap_or(Duration::ZERO);
            Err(LimitError::Refused(RetryAfter(wait)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn refuses_past_the_limit_until_the_window_ends() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let store = SqliteStore::open(&url).await.expect("store");
        let limit = RateLimit::new("test", 2, Duration::from_secs(60));
        let other = RateLimit::new("other", 2, Duration::from_secs(60));
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let at = |seconds: i64| start + time::Duration::seconds(seconds);
        assert!(limit.hit(&store, "k", start).await.is_ok());
        assert!(limit.check(&store, "k", start).await.is_ok());
        assert!(limit.hit(&store, "k", start).await.is_ok());
        for refused in
            [limit.hit(&store, "k", at(10)).await, limit.check(&store, "k", at(10)).await]
        {
            match refused {
                Err(LimitError::Refused(retry)) => {
                    assert_eq!(retry, RetryAfter(Duration::from_secs(50)))
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        assert!(limit.hit(&store, "other key", at(10)).await.is_ok(), "keys are independent");
        assert!(other.hit(&store, "k", at(10)).await.is_ok(), "limits are independent");
        assert!(limit.hit(&store, "k", at(61)).await.is_ok(), "a new window");
    }
}
