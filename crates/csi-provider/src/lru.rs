//! The bounded maps behind every per-node cache of the provider (credentials, vault clients,
//! fetched objects, ServiceAccount annotations): at most `capacity` entries, the least recently
//! used dropped first, every operation O(1) (the `lru` crate's list-backed map).
//!
//! Values leaving a map (replaced, evicted, expired, cleared) are handed back to the caller, never
//! dropped inside: they may hold credentials or secret contents whose drop zeroizes them, and the
//! caller drops them outside its lock. Holds no policy: what expires and when is the caller's.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A map of at most `capacity` entries that drops the least recently used one when full.
pub(crate) struct Lru<K: Hash + Eq, V> {
    entries: ::lru::LruCache<K, V>,
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    /// An empty map holding at most `capacity` (at least 1) entries.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: ::lru::LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// The entry for `key`, marked as used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    /// The entry for `key`, not marked as used.
    pub(crate) fn peek(&self, key: &K) -> Option<&V> {
        self.entries.peek(key)
    }

    /// Inserts or replaces; returns the replaced and evicted values, for the caller to drop
    /// (outside its lock).
    pub(crate) fn insert(&mut self, key: K, value: V) -> Vec<V> {
        let replaced_or_evicted = self.entries.push(key, value);
        replaced_or_evicted
            .map(|(_, old)| old)
            .into_iter()
            .collect()
    }

    /// Removes `key`'s entry.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.pop(key)
    }

    /// Removes the entries `drop_it` picks; returns them for the caller to drop.
    pub(crate) fn drain_where(&mut self, mut drop_it: impl FnMut(&K, &V) -> bool) -> Vec<V> {
        let doomed: Vec<K> = self
            .entries
            .iter()
            .filter(|(key, value)| drop_it(key, value))
            .map(|(key, _)| key.clone())
            .collect();
        doomed
            .iter()
            .filter_map(|key| self.entries.pop(key))
            .collect()
    }

    /// How many entries there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Removes every entry; returns them for the caller to drop.
    pub(crate) fn clear(&mut self) -> Vec<V> {
        let mut all = Vec::with_capacity(self.entries.len());
        while let Some((_, value)) = self.entries.pop_lru() {
            all.push(value);
        }
        all
    }
}

/// Locks `mutex`; a panic elsewhere while it was held leaves these maps consistent (every
/// operation on them completes or does not start), so a poisoned lock is used as it is.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lru_drops_the_least_recently_used_entry() {
        let mut lru = Lru::new(2);
        assert!(lru.insert("a", 1).is_empty());
        assert!(lru.insert("b", 2).is_empty());
        assert_eq!(lru.get(&"a"), Some(&1));
        assert_eq!(lru.insert("c", 3), vec![2], "b was used least recently");
        assert_eq!(lru.insert("a", 10), vec![1], "a replaced");
        assert_eq!(lru.peek(&"c"), Some(&3));
        assert_eq!(lru.drain_where(|_, value| *value > 5), vec![10]);
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.clear(), vec![3]);
    }
}
