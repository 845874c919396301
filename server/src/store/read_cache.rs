//! Records the embedded store has read, kept for the next request that asks
//! for them. The embedded store is the only writer of its database, so it
//! knows exactly when a kept record stops being true and drops it then.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

/// Kept records up to a total weight; full, it starts over empty.
pub struct ReadCache<K, V> {
    max_weight: usize,
    inner: Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    /// Advanced by every invalidation: a record read before it may be stale.
    generation: u64,
    weight: usize,
    entries: HashMap<K, V>,
}

/// When a read began, for [`ReadCache::keep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

impl<K: Hash + Eq, V: Clone> ReadCache<K, V> {
    pub fn new(max_weight: usize) -> Self {
        Self {
            max_weight,
            inner: Mutex::new(Inner { generation: 0, weight: 0, entries: HashMap::new() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.lock().entries.get(key).cloned()
    }

    /// To be taken before reading the database for a record to [`keep`](Self::keep).
    pub fn generation(&self) -> Generation {
        Generation(self.lock().generation)
    }

    /// Keeps `value`, read from the database after `read_at` was taken,
    /// unless the records were invalidated since: the read may have seen the
    /// state before the write that invalidated them.
    pub fn keep(&self, read_at: Generation, key: K, value: V, weight: usize) {
        let mut inner = self.lock();
        if inner.generation != read_at.0 || weight > self.max_weight {
            return;
        }
        if inner.weight + weight > self.max_weight {
            inner.entries.clear();
            inner.weight = 0;
        }
        if inner.entries.insert(key, value).is_none() {
            inner.weight += weight;
        }
    }

    /// Drops every record: called after each committed write that may change one.
    pub fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
        inner.weight = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_record_is_found_until_invalidated() {
        let cache = ReadCache::new(10);
        let read_at = cache.generation();
        cache.keep(read_at, "a", 1, 1);
        assert_eq!(cache.get(&"a"), Some(1));
        cache.invalidate();
        assert_eq!(cache.get(&"a"), None);
    }

    #[test]
    fn a_record_read_before_an_invalidation_is_not_kept() {
        let cache = ReadCache::new(10);
        let read_at = cache.generation();
        // A write commits and invalidates while the read is under way.
        cache.invalidate();
        cache.keep(read_at, "a", 1, 1);
        assert_eq!(cache.get(&"a"), None);
        let read_again = cache.generation();
        cache.keep(read_again, "a", 2, 1);
        assert_eq!(cache.get(&"a"), Some(2));
    }

    #[test]
    fn a_full_cache_starts_over_and_an_oversized_record_is_not_kept() {
        let cache = ReadCache::new(3);
        let read_at = cache.generation();
        cache.keep(read_at, "a", 1, 2);
        cache.keep(read_at, "b", 2, 1);
        cache.keep(read_at, "c", 3, 1);
        assert_eq!((cache.get(&"a"), cache.get(&"b"), cache.get(&"c")), (None, None, Some(3)));
        cache.keep(read_at, "d", 4, 4);
        assert_eq!(cache.get(&"d"), None);
    }
}
