//! Fixed-window counters per key (an address or a client IP).
//!
//! In memory, per server process: enough for one instance; several instances
//! behind a balancer each count separately, so their effective limit is a
//! multiple (noted in ARCHITECTURE.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

/// The caller must wait this long before the key is allowed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one event for `key`; refuses when the window is full.
    pub fn hit(&self, key: &str) -> Result<(), RetryAfter> {
        self.hit_at(key, Instant::now())
    }

    /// Whether `key` could take one more event, without counting one.
    pub fn check(&self, key: &str) -> Result<(), RetryAfter> {
        let now = Instant::now();
        let windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match windows.get(key) {
            Some((start, count)) if now < *start + self.window && *count >= self.limit => {
                Err(RetryAfter(*start + self.window - now))
            }
            _ => Ok(()),
        }
    }

    fn hit_at(&self, key: &str, now: Instant) -> Result<(), RetryAfter> {
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget expired windows now and then so the map cannot grow without bound.
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now < *start + self.window);
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now >= entry.0 + self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            return Err(RetryAfter(entry.0 + self.window - now));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_window_ends() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let start = Instant::now();
        assert!(limiter.hit_at("k", start).is_ok());
        assert!(limiter.hit_at("k", start).is_ok());
        let refused = limiter.hit_at("k", start + Duration::from_secs(10));
        assert_eq!(refused, Err(RetryAfter(Duration::from_secs(50))));
        assert!(limiter.hit_at("other", start).is_ok(), "keys are independent");
        assert!(limiter.hit_at("k", start + Duration::from_secs(61)).is_ok());
    }
}
