//! Records read from storage, kept for the next request that asks for them.
//! Only an owner that is the sole writer of what it keeps may use one: it
//! knows exactly when a kept record stops being true and drops it then (the
//! embedded store its database, the blob store its files).

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
    /// Each record with its weight.
    entries: HashMap<K, (V, usize)>,
}

/// When a read began, for [`ReadCache::keep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

impl<K, V> std::fmt::Debug for ReadCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache").field("max_weight", &self.max_weight).finish_non_exhaustive()
    }
}

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
        self.lock().entries.get(key).map(|(value, _)| value.clone())
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
        if let Some((_, replaced)) = inner.entries.remove(&key) {
            inner.weight -= replaced;
        }
        if inner.weight + weight > self.max_weight {
            inner.entries.clear();
            inner.weight = 0;
        }
        inner.entries.insert(key, (value, weight));
        inner.weight += weight;
    }

    /// Drops one record: called after a write that changes only it. A read
    /// under way may have seen it before the write, so none of those is kept.
    pub fn forget(&self, key: &K) {
        let mut inner = self.lock();
        inner.generation += 1;
        if let Some((_, weight)) = inner.entries.remove(key) {
            inner.weight -= weight;
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

    #[test]
    fn a_forgotten_record_gives_back_its_weight_and_reads_under_way_are_not_kept() {
        let cache = ReadCache::new(3);
        let read_at = cache.generation();
        cache.keep(read_at, "a", 1, 2);
        cache.keep(read_at, "b", 2, 1);
        cache.forget(&"a");
        assert_eq!((cache.get(&"a"), cache.get(&"b")), (None, Some(2)));
        cache.keep(read_at, "a", 1, 2);
        assert_eq!(cache.get(&"a"), None, "read before the forget");
        let read_again = cache.generation();
        cache.keep(read_again, "c", 3, 2);
        assert_eq!((cache.get(&"b"), cache.get(&"c")), (Some(2), Some(3)), "room was given back");
        cache.keep(read_again, "c", 4, 2);
        assert_eq!(
            (cache.get(&"b"), cache.get(&"c")),
            (Some(2), Some(4)),
            "a replaced record is not counted twice"
        );
    }
}
