//! The cache of unwrapped local KEKs, and single-flight unwrap.
//!
//! Decrypt looks a KEK up by its wrapped form, compared byte for byte, and uses the entry only
//! if its key version matches too: no digest is computed on a hit, which is every steady-state
//! Decrypt. On a miss, exactly one provider unwrap runs per distinct (version, wrapped KEK) —
//! named by its [`CacheKey`] while in flight — no matter how many Decrypts wait for it; the
//! unwrap runs in its own task, so a caller that gives up does not cancel it for the others.
//! The cache is a bounded LRU; an evicted KEK is zeroized when its last user finishes.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::kek::Kek;
use crate::provider::ProviderError;

/// SHA-256 of a key version and a wrapped KEK: the name of one local KEK while it is being
/// unwrapped (single-flight), computed only on a cache miss.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The cache key of `wrapped` under `version`, length-prefixed so no two pairs collide.
    pub fn new(version: &str, wrapped: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update((version.len() as u64).to_be_bytes());
        hasher.update(version.as_bytes());
        hasher.update(wrapped);
        Self(hasher.finalize().into())
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({})", hex::encode(&self.0[..6]))
    }
}

type UnwrapResult<V> = Result<V, ProviderError>;

struct Entry<V> {
    version: Box<str>,
    kek: V,
}

struct State<V> {
    /// Keyed by the wrapped KEK; an entry serves only requests naming the same version.
    entries: LruCache<Box<[u8]>, Entry<V>>,
    in_flight: HashMap<CacheKey, watch::Receiver<Option<UnwrapResult<V>>>>,
}

/// Counters since start; read by tests, /metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to wait for an unwrap (their own or a shared one).
    pub misses: u64,
    /// Provider unwraps started.
    pub unwraps: u64,
    /// KEKs pushed out by the LRU bound.
    pub evictions: u64,
}

/// A bounded LRU of unwrapped KEKs with single-flight unwrap. The same cache holds what the
/// key service decrypted for Azure's Go plugin records (see `legacy`): any cheaply cloned value.
pub struct KekCache<V = Arc<Kek>> {
    state: Arc<Mutex<State<V>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    unwraps: Arc<AtomicU64>,
    evictions: Arc<AtomicU64>,
}

impl<V: Clone + Send + Sync + 'static> KekCache<V> {
    /// A cache holding at most `capacity` KEKs.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                entries: LruCache::new(capacity),
                in_flight: HashMap::new(),
            })),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            unwraps: Arc::new(AtomicU64::new(0)),
            evictions: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Adds a KEK this process made itself, so Decrypt of fresh ciphertext never unwraps.
    pub fn insert(&self, version: &str, wrapped: &[u8], kek: V) {
        push(
            &mut lock(&self.state),
            version,
            wrapped,
            kek,
            &self.evictions,
        );
    }

    /// Drops every cached KEK (revocation). In-flight unwraps finish but are not cached.
    pub fn clear(&self) {
        let mut state = lock(&self.state);
        state.entries.clear();
        state.in_flight.clear();
    }

    /// Returns the KEK for `wrapped` under `version`, from the cache or by running `unwrap` —
    /// once, however many callers miss on the same pair at the same time.
    pub async fn get_or_unwrap<F, Fut>(
        &self,
        version: &str,
        wrapped: &[u8],
        unwrap: F,
    ) -> UnwrapResult<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = UnwrapResult<V>> + Send + 'static,
    {
        let mut receiver = {
            let mut state = lock(&self.state);
            if let Some(entry) = state.entries.get(wrapped)
                && *entry.version == *version
            {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(entry.kek.clone());
            }
            self.misses.fetch_add(1, Ordering::Relaxed);
            let key = CacheKey::new(version, wrapped);
            match state.in_flight.get(&key) {
                Some(receiver) => receiver.clone(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    state.in_flight.insert(key, receiver.clone());
                    let name = (key, version.into(), wrapped.into());
                    self.spawn_unwrap(name, unwrap(), sender);
                    receiver
                }
            }
        };
        match receiver.wait_for(Option::is_some).await {
            Ok(result) => result.clone().unwrap_or_else(unreachable_empty),
            Err(_) => Err(ProviderError::Unavailable {
                operation: "unwrap".into(),
                source: Arc::new(std::io::Error::other(
                    "the unwrap task ended without a result",
                )),
            }),
        }
    }

    fn spawn_unwrap<Fut>(
        &self,
        (key, version, wrapped): (CacheKey, Box<str>, Box<[u8]>),
        unwrap: Fut,
        sender: watch::Sender<Option<UnwrapResult<V>>>,
    ) where
        Fut: Future<Output = UnwrapResult<V>> + Send + 'static,
    {
        let flight = Flight {
            state: Arc::clone(&self.state),
            evictions: Arc::clone(&self.evictions),
            key,
            version,
            wrapped,
            sender,
            landed: false,
        };
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // If the unwrap panics (or the runtime drops this task), `flight` is dropped
            // unlanded and its Drop ends the flight with an error.
            let mut flight = flight;
            let result = unwrap.await;
            flight.land(result);
        });
    }

    /// Counters since start.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            unwraps: self.unwraps.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// KEKs cached now.
    pub fn len(&self) -> usize {
        lock(&self.state).entries.len()
    }

    /// Whether no KEK is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One unwrap in flight: ending it removes its in-flight entry and hands the result to its
/// waiters. It ends however the unwrap task ends — with a result, or when the task panics or is
/// dropped — so no waiter is left without an answer and the next miss on the same KEK starts a
/// new unwrap instead of finding a flight that never lands.
struct Flight<V: Clone> {
    state: Arc<Mutex<State<V>>>,
    evictions: Arc<AtomicU64>,
    key: CacheKey,
    version: Box<str>,
    wrapped: Box<[u8]>,
    sender: watch::Sender<Option<UnwrapResult<V>>>,
    landed: bool,
}

impl<V: Clone> Flight<V> {
    fn land(&mut self, result: UnwrapResult<V>) {
        self.landed = true;
        {
            let mut state = lock(&self.state);
            // Only the flight that is still registered may fill the cache: after clear()
            // (revocation) a late result must not bring a KEK back.
            let still_wanted = state
                .in_flight
                .get(&self.key)
                .is_some_and(|receiver| receiver.same_channel(&self.sender.subscribe()));
            if still_wanted {
                state.in_flight.remove(&self.key);
                if let Ok(kek) = &result {
                    push(
                        &mut state,
                        &self.version,
                        &self.wrapped,
                        kek.clone(),
                        &self.evictions,
                    );
                }
            }
        }
        let _ = self.sender.send(Some(result));
    }
}

impl<V: Clone> Drop for Flight<V> {
    fn drop(&mut self) {
        if !self.landed {
            tracing::error!(
                version = %self.version,
                "an unwrap ended without a result (it panicked or was cancelled); its waiters \
                 get an error and the next request tries again"
            );
            self.land(Err(ProviderError::Unavailable {
                operation: "unwrap".into(),
                source: Arc::new(std::io::Error::other("the unwrap ended without a result")),
            }));
        }
    }
}

/// Caches `kek` as the KEK of `wrapped` under `version`, counting an eviction when the LRU bound
/// pushes another KEK out (replacing the entry for the same wrapped KEK is not one).
fn push<V>(state: &mut State<V>, version: &str, wrapped: &[u8], kek: V, evictions: &AtomicU64) {
    let entry = Entry {
        version: version.into(),
        kek,
    };
    let evicted = state.entries.push(wrapped.into(), entry);
    if evicted.is_some_and(|(evicted_key, _)| *evicted_key != *wrapped) {
        evictions.fetch_add(1, Ordering::Relaxed);
    }
}

fn unreachable_empty<V>() -> UnwrapResult<V> {
    // wait_for(Option::is_some) only returns a Some value.
    Err(ProviderError::Misconfigured {
        reason: "single-flight result missing".into(),
    })
}

fn lock<V>(state: &Mutex<State<V>>) -> MutexGuard<'_, State<V>> {
    // The state is consistent after any panic (every mutation is a single call), so a poisoned
    // lock is safe to keep using.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn kek() -> Arc<Kek> {
        Arc::new(Kek::new(SecretKey::generate().unwrap()))
    }

    #[tokio::test]
    async fn concurrent_misses_for_one_kek_cost_one_unwrap() {
        let cache = Arc::new(KekCache::new(NonZeroUsize::new(8).unwrap()));
        let (release, released) = watch::channel(false);
        let mut waiters = Vec::new();
        for _ in 0..100 {
            let cache = Arc::clone(&cache);
            let mut released = released.clone();
            waiters.push(tokio::spawn(async move {
                cache
                    .get_or_unwrap("1", b"wrapped", move || async move {
                        let _ = released.wait_for(|r| *r).await;
                        Ok(kek())
                    })
                    .await
            }));
        }
        while cache.stats().misses < 100 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        let stats = cache.stats();
        assert_eq!((stats.unwraps, stats.misses), (1, 100));
        cache
            .get_or_unwrap("1", b"wrapped", || async { unreachable_empty() })
            .await
            .unwrap();
        assert_eq!(cache.stats().hits, 1);
    }

    #[tokio::test]
    async fn a_failed_unwrap_is_not_cached() {
        let cache = KekCache::new(NonZeroUsize::new(8).unwrap());
        let failed = cache
            .get_or_unwrap("1", b"wrapped", || async {
                Err(ProviderError::UnwrapFailed {
                    version: "1".into(),
                })
            })
            .await;
        assert!(failed.is_err());
        assert!(
            cache
                .get_or_unwrap("1", b"wrapped", || async { Ok(kek()) })
                .await
                .is_ok()
        );
        assert_eq!(cache.stats().unwraps, 2);
    }

    #[tokio::test]
    async fn the_lru_bound_evicts_the_least_recently_used() {
        let cache = KekCache::new(NonZeroUsize::new(2).unwrap());
        cache.insert("1", &[0], kek());
        cache.insert("1", &[1], kek());
        cache
            .get_or_unwrap("1", &[0], || async { unreachable_empty() })
            .await
            .unwrap();
        cache.insert("1", &[2], kek());
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.stats().evictions, 1);
        assert!(
            cache
                .get_or_unwrap("1", &[1], || async { unreachable_empty() })
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn an_entry_serves_only_the_version_it_was_unwrapped_with() {
        let cache = KekCache::new(NonZeroUsize::new(8).unwrap());
        cache.insert("1", b"wrapped", kek());
        let other_version = cache
            .get_or_unwrap("2", b"wrapped", || async {
                Err(ProviderError::UnwrapFailed {
                    version: "2".into(),
                })
            })
            .await;
        assert!(other_version.is_err());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.unwraps), (0, 1, 1));
        cache
            .get_or_unwrap("1", b"wrapped", || async { unreachable_empty() })
            .await
            .unwrap();
        assert_eq!(cache.stats().hits, 1);
    }

    /// Regression: an unwrap that panicked left its in-flight entry behind, so every later
    /// Decrypt of the same KEK joined a flight that had already ended and failed, forever.
    #[tokio::test]
    async fn a_panicking_unwrap_fails_its_waiters_and_the_next_miss_unwraps_again() {
        let cache = Arc::new(KekCache::new(NonZeroUsize::new(8).unwrap()));
        let (release, released) = watch::channel(false);
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let cache = Arc::clone(&cache);
                let mut released = released.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_unwrap("1", b"wrapped", move || async move {
                            let _ = released.wait_for(|r| *r).await;
                            panic!("the provider panicked (a test)");
                        })
                        .await
                })
            })
            .collect();
        while cache.stats().misses < 4 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        for waiter in waiters {
            let result = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
                .await
                .expect("a waiter hung")
                .unwrap();
            assert!(
                matches!(result, Err(ProviderError::Unavailable { .. })),
                "{:?}",
                result.err()
            );
        }
        let again = cache
            .get_or_unwrap("1", b"wrapped", || async { Ok(kek()) })
            .await;
        assert!(again.is_ok(), "{:?}", again.err());
        assert_eq!(cache.stats().unwraps, 2);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn cache_keys_separate_version_from_wrapped_bytes() {
        assert_ne!(CacheKey::new("1", b"2x"), CacheKey::new("12", b"x"));
    }
}
