//! The per-node object cache between Mounts and a secret store, shared by every backend: what
//! turns "one GET per object per pod per rotation poll" into one GET per identity, object and
//! version per TTL. A backend plugs in with a [`Fetcher`]: its entry key (the proven identity's
//! key, the endpoint, the object and the version), what a read needs, how it reads, and its
//! error type.
//!
//! Entries are served only to a request whose key is equal, and every backend puts the proven
//! identity in its key: an entry one identity read is never served to another, whatever it asks
//! for. "Latest" reads live `latest_ttl` (30 s by default), so a rotation is seen within that;
//! pinned versions and the version a "latest" read returned ([`Fetcher::pinned_alias`]) live
//! `pinned_ttl` (10 min); listings live `versions_ttl`.
//!
//! Concurrent identical requests are coalesced: one read runs (in its own task, under the
//! deadline of the requester that started it) and every waiter gets its answer, so 100 pods
//! mounting the same object cost one GET. A waiter with more time than that read had is not
//! failed by its deadline: when the shared read ends in an error at its deadline, the waiter
//! reads again under its own (at most [`MAX_FLIGHTS_PER_LOOKUP`] times). Reads of one endpoint (a vault, a KMS or OOS endpoint) are bounded by a
//! semaphore. A throttled answer is given to every waiter as is (no waiter retries on its own),
//! and until its retry-after passes new reads in its throttle scope ([`Fetcher::throttle_scope`]:
//! the endpoint for Key Vault, whose limits are per vault; the endpoint and identity for Alibaba
//! Cloud, whose limits are per account) wait for it (or fail at once with [`Fetcher::throttled`]
//! when it is past their deadline) instead of adding to the storm.
//!
//! Errors: transient ones (throttling, outages, deadlines) and refused identities are not
//! cached. Authoritative answers about an object for an identity ([`CacheError::is_authoritative`]:
//! not found, forbidden, disabled) are cached for `negative_ttl` (5 s by default): the same read
//! gives the same answer until someone changes the store, and a crash-looping Deployment naming
//! a missing secret would otherwise cost one GET per pod per kubelet retry. Being per identity,
//! a cached refusal never affects another identity.
//!
//! Values are dropped (and so zeroized, where the backend's value zeroizes) on expiry (swept at
//! most once a second on use), on eviction (least recently used first, beyond `max_entries`)
//! and on [`Cache::clear`]. Never logs a value; counters and observer calls carry no object,
//! endpoint or identity name.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::lru::{Lru, lock};

/// How long entries live and how much the cache holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a "latest version" read is served from the cache.
    pub latest_ttl: Duration,
    /// How long a pinned version (or the version a "latest" read returned) is served.
    pub pinned_ttl: Duration,
    /// How long a version listing is served.
    pub versions_ttl: Duration,
    /// How long authoritative refusals (not found, forbidden, disabled) are served (0: not
    /// cached).
    pub negative_ttl: Duration,
    /// At most this many entries are kept (least recently used first out).
    pub max_entries: usize,
    /// At most this many reads of one endpoint run at once, unless the backend says otherwise
    /// for that endpoint ([`Fetcher::concurrency`]).
    pub per_endpoint_concurrency: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            latest_ttl: Duration::from_secs(30),
            pinned_ttl: Duration::from_secs(10 * 60),
            versions_ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            max_entries: 4096,
            per_endpoint_concurrency: 8,
        }
    }
}

/// How a lookup was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// From a cached entry (a value or a cached refusal).
    Hit,
    /// By joining a read already in flight.
    Coalesced,
    /// By a new read.
    Miss,
}

impl Lookup {
    /// `hit`, `coalesced` or `miss`, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Coalesced => "coalesced",
            Self::Miss => "miss",
        }
    }
}

/// Which TTL an entry gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The newest version, which may change at any time: `latest_ttl`.
    Latest,
    /// One version, which never changes: `pinned_ttl`.
    Pinned,
    /// A listing of versions: `versions_ttl`.
    Listing,
}

/// What the cache needs to know of a backend's errors.
pub trait CacheError: Clone + Send + Sync + 'static {
    /// Whether the store answered authoritatively about the object for this identity (missing,
    /// forbidden, disabled): cached for `negative_ttl`.
    fn is_authoritative(&self) -> bool;
    /// Whether a later read may succeed (throttling, an outage, the deadline). Readers retry
    /// these until the next retry would pass their deadline, so a shared read that failed so
    /// under an earlier deadline says nothing to a waiter with more time.
    fn is_transient(&self) -> bool;
    /// How long the store asked to wait (a throttled answer): until then, new reads of the
    /// endpoint wait or fail at once.
    fn retry_after(&self) -> Option<Duration>;
    /// A fixed name for metrics (`not_found`, `throttled`, …).
    fn metric_label(&self) -> &'static str;
}

/// A backend's reads, as the cache makes them.
pub trait Fetcher: Send + Sync + 'static {
    /// What an entry is about: the proven identity's key, the endpoint, the object and the
    /// version. Equal keys must read the same thing as the same principal.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;
    /// What a read needs besides the key: the proven credential, names as the class spells
    /// them. Cloned for the read's task.
    type Request: Clone + Send + Sync + 'static;
    /// A read's answer (cheap to clone: an `Arc`).
    type Value: Clone + Send + Sync + 'static;
    /// A failed read.
    type Error: CacheError;
    /// The object type, for metrics.
    type Kind: Copy + Send + Sync + 'static;
    /// What one throttled answer holds back: every read in the same scope waits out its
    /// retry-after.
    type ThrottleScope: Clone + Eq + Hash + Send + Sync + 'static;

    /// The endpoint (host) the read goes to: reads of one endpoint share a concurrency bound.
    fn endpoint<'k>(&self, key: &'k Self::Key) -> &'k str;
    /// The throttle scope of `key`'s read.
    fn throttle_scope(&self, key: &Self::Key) -> Self::ThrottleScope;
    /// The object type, for metrics.
    fn kind(&self, key: &Self::Key) -> Self::Kind;
    /// Which TTL a successful read gets.
    fn freshness(&self, key: &Self::Key) -> Freshness;
    /// How many reads of `key`'s endpoint may run at once; `None` for the settings' default.
    fn concurrency(&self, _key: &Self::Key) -> Option<usize> {
        None
    }
    /// Reads, retrying transient failures as the backend does, until `deadline` at the latest.
    fn fetch(
        &self,
        key: &Self::Key,
        request: &Self::Request,
        deadline: Instant,
    ) -> impl Future<Output = Result<Self::Value, Self::Error>> + Send;
    /// Another key `value` also answers (the pinned version a "latest" read returned), cached
    /// for `pinned_ttl` unless already cached.
    fn pinned_alias(&self, key: &Self::Key, value: &Self::Value) -> Option<Self::Key>;
    /// The error of a read not sent because the endpoint asked to wait `retry_after` longer
    /// than the deadline allows.
    fn throttled(
        &self,
        key: &Self::Key,
        request: &Self::Request,
        retry_after: Duration,
    ) -> Self::Error;
    /// The error of a lookup whose deadline passed while waiting (for the endpoint, a permit,
    /// or a read in flight).
    fn deadline_exceeded(&self, key: &Self::Key, request: &Self::Request) -> Self::Error;
    /// The error of a lookup whose read ended without an answer (its task panicked).
    fn abandoned(&self, key: &Self::Key, request: &Self::Request) -> Self::Error;
}

/// Receives the cache's events, for metrics. Labels are fixed names only.
pub trait CacheObserver<K>: Send + Sync {
    /// One lookup and how it was served.
    fn lookup(&self, outcome: Lookup);
    /// One read (all its attempts): `result` is `ok` or [`CacheError::metric_label`]. Reads
    /// refused at once because the endpoint is throttling are reported as `throttled` with no
    /// time.
    fn remote_call(&self, kind: K, result: &'static str, took: Duration);
}

/// Counts since the cache was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from an entry.
    pub hits: u64,
    /// Lookups that joined a read in flight.
    pub coalesced: u64,
    /// Lookups that started a read.
    pub misses: u64,
    /// Reads made (each with its retries).
    pub vault_calls: u64,
    /// Reads that failed.
    pub vault_failures: u64,
    /// Reads not sent because the endpoint asked to wait past the reader's deadline.
    pub throttled_without_call: u64,
    /// Entries held now.
    pub entries: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    coalesced: AtomicU64,
    misses: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    throttled_without_call: AtomicU64,
}

/// Coalescing, bounded, per-identity cache of one backend's reads. Cloning shares the cache.
pub struct Cache<F: Fetcher> {
    inner: Arc<Inner<F>>,
}

impl<F: Fetcher> Clone for Cache<F> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<F: Fetcher> fmt::Debug for Cache<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("settings", &self.inner.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner<F: Fetcher> {
    fetcher: F,
    settings: CacheSettings,
    observer: Option<Arc<dyn CacheObserver<F::Kind>>>,
    counters: Counters,
    state: Mutex<State<F>>,
}

type Answer<F> = Result<<F as Fetcher>::Value, <F as Fetcher>::Error>;

struct State<F: Fetcher> {
    ready: Lru<F::Key, Ready<F>>,
    flights: HashMap<F::Key, Arc<Flight<F>>>,
    gates: HashMap<String, Gate>,
    throttled: HashMap<F::ThrottleScope, Instant>,
    last_sweep: Instant,
}

struct Ready<F: Fetcher> {
    answer: Answer<F>,
    expires: Instant,
}

/// A read in flight; its answer is published once.
struct Flight<F: Fetcher> {
    answer: watch::Sender<Option<Answer<F>>>,
    /// The deadline its read runs under: its starter's.
    deadline: Instant,
}

/// How many reads one lookup may start or join: a waiter whose shared read failed at that
/// read's (earlier) deadline reads again under its own, and another short-deadline requester
/// may have started that one too.
const MAX_FLIGHTS_PER_LOOKUP: usize = 3;

/// One endpoint's concurrency bound.
struct Gate {
    permits: Arc<Semaphore>,
    limit: usize,
}

/// How many endpoint gates (and throttle scopes) are kept before idle ones are dropped.
const MAX_GATES: usize = 4096;
/// How often expired entries are swept (on use).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl<F: Fetcher> Cache<F> {
    /// A cache reading through `fetcher`, reporting to `observer` when there is one.
    pub fn new(
        fetcher: F,
        settings: CacheSettings,
        observer: Option<Arc<dyn CacheObserver<F::Kind>>>,
    ) -> Self {
        let capacity = settings.max_entries.max(1);
        Self {
            inner: Arc::new(Inner {
                fetcher,
                settings,
                observer,
                counters: Counters::default(),
                state: Mutex::new(State {
                    ready: Lru::new(capacity),
                    flights: HashMap::new(),
                    gates: HashMap::new(),
                    throttled: HashMap::new(),
                    last_sweep: Instant::now(),
                }),
            }),
        }
    }

    /// The settings in effect.
    pub fn settings(&self) -> &CacheSettings {
        &self.inner.settings
    }

    /// The backend's reader.
    pub fn fetcher(&self) -> &F {
        &self.inner.fetcher
    }

    /// The answer for `key`: from the cache, by joining an identical read in flight, or by a new
    /// read with `request`. Fails at `deadline` at the latest.
    pub async fn get(
        &self,
        key: F::Key,
        request: F::Request,
        deadline: Instant,
    ) -> Result<F::Value, F::Error> {
        self.inner.lookup(key, request, deadline).await
    }

    /// The counts so far.
    pub fn stats(&self) -> CacheStats {
        let counters = &self.inner.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheStats {
            hits: read(&counters.hits),
            coalesced: read(&counters.coalesced),
            misses: read(&counters.misses),
            vault_calls: read(&counters.calls),
            vault_failures: read(&counters.failures),
            throttled_without_call: read(&counters.throttled_without_call),
            entries: lock(&self.inner.state).ready.len() as u64,
        }
    }

    /// Drops every cached entry. Reads in flight finish and are cached.
    pub fn clear(&self) {
        let dropped = lock(&self.inner.state).ready.clear();
        drop(dropped);
    }

    /// Drops expired entries now (they are also swept on use).
    pub fn purge_expired(&self) {
        let dropped = {
            let mut state = lock(&self.inner.state);
            let now = Instant::now();
            state.last_sweep = now;
            state.ready.drain_where(|_, ready| ready.expires <= now)
        };
        drop(dropped);
    }
}

impl<F: Fetcher> Inner<F> {
    async fn lookup(
        self: &Arc<Self>,
        key: F::Key,
        request: F::Request,
        deadline: Instant,
    ) -> Answer<F> {
        let mut flights = 0;
        loop {
            flights += 1;
            let (answer, read_deadline) = self.lookup_once(&key, &request, deadline).await;
            // A shared read that ran out of its starter's earlier deadline (it failed in a way
            // a later read may not: the readers give up on those only when the next retry
            // would pass their deadline) says nothing about this waiter, which still has time:
            // it reads again under its own deadline.
            let cut_short = answer.as_ref().err().is_some_and(CacheError::is_transient)
                && read_deadline < deadline
                && Instant::now() < deadline;
            if !cut_short || flights >= MAX_FLIGHTS_PER_LOOKUP {
                return answer;
            }
        }
    }

    /// One lookup: the cached answer, or the answer of the read in flight (joined or started);
    /// with the deadline that read ran under (this lookup's own for a cached answer).
    async fn lookup_once(
        self: &Arc<Self>,
        key: &F::Key,
        request: &F::Request,
        deadline: Instant,
    ) -> (Answer<F>, Instant) {
        let (mut receiver, read_deadline, outcome, expired, task) = {
            let mut state = lock(&self.state);
            let now = Instant::now();
            let expired = if state.last_sweep + SWEEP_EVERY <= now {
                state.last_sweep = now;
                state.ready.drain_where(|_, ready| ready.expires <= now)
            } else {
                Vec::new()
            };
            let cached = state
                .ready
                .get(key)
                .filter(|ready| ready.expires > now)
                .map(|ready| ready.answer.clone());
            if let Some(answer) = cached {
                drop(state);
                drop(expired);
                self.count(Lookup::Hit);
                return (answer, deadline);
            }
            match state.flights.get(key) {
                Some(flight) => (
                    flight.answer.subscribe(),
                    flight.deadline,
                    Lookup::Coalesced,
                    expired,
                    None,
                ),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    let flight = Arc::new(Flight {
                        answer: sender,
                        deadline,
                    });
                    state.flights.insert(key.clone(), Arc::clone(&flight));
                    let task = Task {
                        inner: Arc::clone(self),
                        key: key.clone(),
                        flight,
                        done: false,
                    };
                    (receiver, deadline, Lookup::Miss, expired, Some(task))
                }
            }
        };
        drop(expired);
        // Counted before the read starts, so a lookup is always reported before its read.
        self.count(outcome);
        if let Some(task) = task {
            tokio::spawn(task.run(request.clone(), deadline));
        }
        let answer =
            match tokio::time::timeout_at(deadline, receiver.wait_for(Option::is_some)).await {
                Ok(Ok(answer)) => answer
                    .clone()
                    .unwrap_or_else(|| Err(self.fetcher.abandoned(key, request))),
                // The read's task ended without an answer (it panicked).
                Ok(Err(_closed)) => Err(self.fetcher.abandoned(key, request)),
                Err(_elapsed) => Err(self.fetcher.deadline_exceeded(key, request)),
            };
        (answer, read_deadline)
    }

    fn count(&self, outcome: Lookup) {
        let counter = match outcome {
            Lookup::Hit => &self.counters.hits,
            Lookup::Coalesced => &self.counters.coalesced,
            Lookup::Miss => &self.counters.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = &self.observer {
            observer.lookup(outcome);
        }
    }

    /// The endpoint's permits, and until when `key`'s throttle scope is held back.
    fn gate(&self, key: &F::Key) -> (Arc<Semaphore>, Option<Instant>) {
        let endpoint = self.fetcher.endpoint(key);
        let scope = self.fetcher.throttle_scope(key);
        let limit = self
            .fetcher
            .concurrency(key)
            .unwrap_or(self.settings.per_endpoint_concurrency)
            .max(1);
        let mut state = lock(&self.state);
        let now = Instant::now();
        if state.throttled.len() >= MAX_GATES {
            state.throttled.retain(|_, until| *until > now);
        }
        let throttled_until = state.throttled.get(&scope).copied();
        let gates = &mut state.gates;
        if gates.len() >= MAX_GATES && !gates.contains_key(endpoint) {
            gates.retain(|_, gate| {
                Arc::strong_count(&gate.permits) > 1
                    || gate.permits.available_permits() < gate.limit
            });
        }
        let gate = gates.entry(endpoint.to_owned()).or_insert_with(|| Gate {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        });
        (Arc::clone(&gate.permits), throttled_until)
    }

    /// The read behind a miss: waits out the endpoint's throttling (or fails at once when that
    /// is past `deadline`), takes a permit of the endpoint's semaphore, reads.
    async fn fetch(&self, key: &F::Key, request: &F::Request, deadline: Instant) -> Answer<F> {
        let kind = self.fetcher.kind(key);
        let (permits, throttled_until) = self.gate(key);
        if let Some(until) = throttled_until.filter(|until| *until > Instant::now()) {
            if until >= deadline {
                self.counters
                    .throttled_without_call
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(observer) = &self.observer {
                    observer.remote_call(kind, "throttled", Duration::ZERO);
                }
                let wait = until.saturating_duration_since(Instant::now());
                return Err(self.fetcher.throttled(key, request, wait));
            }
            tokio::time::sleep_until(until).await;
        }
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, permits.acquire_owned()).await
        else {
            return Err(self.fetcher.deadline_exceeded(key, request));
        };
        let started = Instant::now();
        let answer = self.fetcher.fetch(key, request, deadline).await;
        let took = started.elapsed();
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let result = match &answer {
            Ok(_) => "ok",
            Err(error) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                error.metric_label()
            }
        };
        if let Some(observer) = &self.observer {
            observer.remote_call(kind, result, took);
        }
        if let Err(error) = &answer
            && let Some(wait) = error.retry_after()
        {
            let until = Instant::now() + wait;
            let scope = self.fetcher.throttle_scope(key);
            let mut state = lock(&self.state);
            let held = state.throttled.entry(scope).or_insert(until);
            *held = (*held).max(until);
        }
        answer
    }

    /// Caches `answer` for `key` (and under its pinned alias too), and ends the flight.
    fn finish(&self, key: &F::Key, flight: &Arc<Flight<F>>, answer: &Answer<F>) {
        let now = Instant::now();
        let settings = &self.settings;
        let mut dropped = Vec::new();
        {
            let mut state = lock(&self.state);
            if state
                .flights
                .get(key)
                .is_some_and(|current| Arc::ptr_eq(current, flight))
            {
                state.flights.remove(key);
            }
            let ttl = match answer {
                Ok(_) => match self.fetcher.freshness(key) {
                    Freshness::Latest => settings.latest_ttl,
                    Freshness::Pinned => settings.pinned_ttl,
                    Freshness::Listing => settings.versions_ttl,
                },
                Err(error) if error.is_authoritative() => settings.negative_ttl,
                Err(_) => Duration::ZERO,
            };
            if !ttl.is_zero() {
                dropped.extend(state.ready.insert(
                    key.clone(),
                    Ready {
                        answer: answer.clone(),
                        expires: now + ttl,
                    },
                ));
            }
            if let Ok(value) = answer
                && !settings.pinned_ttl.is_zero()
                && let Some(pinned) = self.fetcher.pinned_alias(key, value)
                && state.ready.peek(&pinned).is_none()
            {
                dropped.extend(state.ready.insert(
                    pinned,
                    Ready {
                        answer: answer.clone(),
                        expires: now + settings.pinned_ttl,
                    },
                ));
            }
        }
        drop(dropped);
        flight.answer.send_replace(Some(answer.clone()));
    }
}

/// The task that reads for a flight. If it ends without an answer (a panic), dropping it
/// removes the flight so that the next lookup reads again, and waiters see the channel close.
struct Task<F: Fetcher> {
    inner: Arc<Inner<F>>,
    key: F::Key,
    flight: Arc<Flight<F>>,
    done: bool,
}

impl<F: Fetcher> Task<F> {
    async fn run(mut self, request: F::Request, deadline: Instant) {
        let answer = self.inner.fetch(&self.key, &request, deadline).await;
        self.inner.finish(&self.key, &self.flight, &answer);
        self.done = true;
    }
}

impl<F: Fetcher> Drop for Task<F> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = lock(&self.inner.state);
        if state
            .flights
            .get(&self.key)
            .is_some_and(|current| Arc::ptr_eq(current, &self.flight))
        {
            state.flights.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicUsize;

    /// A fetcher over an in-memory store that counts its reads.
    #[derive(Default)]
    struct Counting {
        reads: AtomicUsize,
        delay: Duration,
        /// Names whose reads fail, with the error.
        failing: Mutex<HashMap<String, TestError>>,
        /// Names whose next read fails, with the error.
        failing_once: Mutex<HashMap<String, TestError>>,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum TestError {
        Missing,
        Throttled(Duration),
        Outage,
        Deadline,
        Abandoned,
        /// Refused credentials: neither authoritative about the object nor transient.
        Refused,
    }

    impl CacheError for TestError {
        fn is_authoritative(&self) -> bool {
            matches!(self, Self::Missing)
        }
        fn is_transient(&self) -> bool {
            matches!(self, Self::Throttled(_) | Self::Outage | Self::Deadline)
        }
        fn retry_after(&self) -> Option<Duration> {
            match self {
                Self::Throttled(wait) => Some(*wait),
                _ => None,
            }
        }
        fn metric_label(&self) -> &'static str {
            "failed"
        }
    }

    /// (identity, endpoint, name, version or latest)
    type TestKey = (String, String, String, Option<String>);

    impl Fetcher for Counting {
        type Key = TestKey;
        type Request = ();
        type Value = Arc<String>;
        type Error = TestError;
        type Kind = &'static str;
        type ThrottleScope = String;

        fn endpoint<'k>(&self, key: &'k TestKey) -> &'k str {
            &key.1
        }
        fn throttle_scope(&self, key: &TestKey) -> String {
            key.1.clone()
        }
        fn kind(&self, _key: &TestKey) -> &'static str {
            "test"
        }
        fn freshness(&self, key: &TestKey) -> Freshness {
            if key.3.is_some() {
                Freshness::Pinned
            } else {
                Freshness::Latest
            }
        }
        async fn fetch(
            &self,
            key: &TestKey,
            _request: &(),
            deadline: Instant,
        ) -> Result<Arc<String>, TestError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            // As the backends' readers do, the read gives up at its deadline.
            if tokio::time::timeout_at(deadline, tokio::time::sleep(self.delay))
                .await
                .is_err()
            {
                return Err(TestError::Deadline);
            }
            if let Some(error) = lock(&self.failing_once).remove(&key.2) {
                return Err(error);
            }
            if let Some(error) = lock(&self.failing).get(&key.2) {
                return Err(error.clone());
            }
            Ok(Arc::new(format!(
                "{}@{}",
                key.2,
                key.3.as_deref().unwrap_or("v9")
            )))
        }
        fn pinned_alias(&self, key: &TestKey, _value: &Arc<String>) -> Option<TestKey> {
            key.3.is_none().then(|| {
                (
                    key.0.clone(),
                    key.1.clone(),
                    key.2.clone(),
                    Some("v9".into()),
                )
            })
        }
        fn throttled(&self, _key: &TestKey, _request: &(), wait: Duration) -> TestError {
            TestError::Throttled(wait)
        }
        fn deadline_exceeded(&self, _key: &TestKey, _request: &()) -> TestError {
            TestError::Deadline
        }
        fn abandoned(&self, _key: &TestKey, _request: &()) -> TestError {
            TestError::Abandoned
        }
    }

    fn key(identity: &str, name: &str, version: Option<&str>) -> TestKey {
        (
            identity.into(),
            "endpoint".into(),
            name.into(),
            version.map(Into::into),
        )
    }

    fn cache(delay: Duration) -> Cache<Counting> {
        Cache::new(
            Counting {
                delay,
                ..Counting::default()
            },
            CacheSettings::default(),
            None,
        )
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_identical_reads_are_one_read_and_identities_never_share() {
        let cache = cache(Duration::from_millis(100));
        let reads = (0..50).map(|i| {
            let identity = if i % 2 == 0 { "a" } else { "b" };
            cache.get(key(identity, "db", None), (), soon())
        });
        let answers = futures::future::join_all(reads).await;
        assert!(
            answers
                .iter()
                .all(|a| a.as_deref() == Ok(&"db@v9".to_owned()))
        );
        assert_eq!(
            cache.fetcher().reads.load(Ordering::SeqCst),
            2,
            "one per identity"
        );
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.coalesced), (2, 48));
        // The latest read is also the pinned version's entry.
        cache
            .get(key("a", "db", Some("v9")), (), soon())
            .await
            .unwrap();
        assert_eq!(cache.fetcher().reads.load(Ordering::SeqCst), 2);
        assert_eq!(cache.stats().hits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn latest_entries_expire_and_refusals_are_cached_briefly() {
        let cache = cache(Duration::ZERO);
        cache.get(key("a", "db", None), (), soon()).await.unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        cache.get(key("a", "db", None), (), soon()).await.unwrap();
        assert_eq!(cache.fetcher().reads.load(Ordering::SeqCst), 2);

        lock(&cache.fetcher().failing).insert("gone".into(), TestError::Missing);
        lock(&cache.fetcher().failing).insert("down".into(), TestError::Outage);
        for _ in 0..3 {
            assert_eq!(
                cache.get(key("a", "gone", None), (), soon()).await,
                Err(TestError::Missing)
            );
            assert_eq!(
                cache.get(key("a", "down", None), (), soon()).await,
                Err(TestError::Outage)
            );
        }
        assert_eq!(cache.fetcher().reads.load(Ordering::SeqCst), 2 + 1 + 3);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(cache.get(key("a", "gone", None), (), soon()).await.is_err());
        assert_eq!(cache.fetcher().reads.load(Ordering::SeqCst), 2 + 2 + 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_endpoint_is_not_called_again_before_its_retry_after() {
        let cache = cache(Duration::ZERO);
        lock(&cache.fetcher().failing)
            .insert("hot".into(), TestError::Throttled(Duration::from_secs(20)));
        assert!(cache.get(key("a", "hot", None), (), soon()).await.is_err());
        // Another object on the same endpoint, with a deadline before the retry-after: refused
        // without a read.
        let short = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            cache.get(key("a", "db", None), (), short).await,
            Err(TestError::Throttled(wait)) if wait > Duration::from_secs(19)
        ));
        assert_eq!(cache.fetcher().reads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats().throttled_without_call, 1);
        // With time to wait, the read waits for the retry-after, then goes.
        let started = Instant::now();
        cache.get(key("a", "db", None), (), soon()).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(19));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_fails_at_its_deadline_while_the_read_goes_on() {
        let cache = cache(Duration::from_secs(10));
        let short = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            cache.get(key("a", "slow", None), (), short).await,
            Err(TestError::Deadline)
        );
    }

    /// Regression: a coalesced read ran under the deadline of the requester that started it,
    /// so a pod with two minutes left failed with the error of one that had a second.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_with_more_time_reads_again_when_the_shared_read_ran_out_of_its_own() {
        let cache = Arc::new(cache(Duration::from_secs(3)));
        let short = Instant::now() + Duration::from_secs(1);
        let long = Instant::now() + Duration::from_secs(30);
        let hurried = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.get(key("a", "db", None), (), short).await })
        };
        tokio::task::yield_now().await;
        let patient = cache.get(key("a", "db", None), (), long).await;
        assert_eq!(hurried.await.unwrap(), Err(TestError::Deadline));
        assert_eq!(patient.unwrap().as_str(), "db@v9");
        assert_eq!(
            cache.fetcher().reads.load(Ordering::SeqCst),
            2,
            "joined, then its own"
        );

        // A read that fails in a way no later read fixes is shared as it is: no second read.
        lock(&cache.fetcher().failing).insert("gone".into(), TestError::Refused);
        let sooner = Instant::now() + Duration::from_secs(10);
        let later = Instant::now() + Duration::from_secs(30);
        let first = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.get(key("a", "gone", None), (), sooner).await })
        };
        tokio::task::yield_now().await;
        let second = cache.get(key("a", "gone", None), (), later).await;
        assert_eq!(first.await.unwrap(), Err(TestError::Refused));
        assert_eq!(second, Err(TestError::Refused));
        assert_eq!(cache.fetcher().reads.load(Ordering::SeqCst), 3);
    }

    /// Regression: the readers give up on an outage or a throttled endpoint as soon as the
    /// next retry would pass their deadline, seconds before it; a waiter with more time got
    /// that failure too, because only a failure at the starter's very deadline counted as cut
    /// short.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_with_more_time_reads_again_when_the_shared_read_gave_up_early() {
        let cache = Arc::new(cache(Duration::from_secs(1)));
        lock(&cache.fetcher().failing_once).insert("db".into(), TestError::Outage);
        let hurried_deadline = Instant::now() + Duration::from_secs(20);
        let hurried = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.get(key("a", "db", None), (), hurried_deadline).await })
        };
        tokio::task::yield_now().await;
        let long = Instant::now() + Duration::from_secs(60);
        let patient = cache.get(key("a", "db", None), (), long).await;
        assert_eq!(hurried.await.unwrap(), Err(TestError::Outage));
        assert_eq!(patient.unwrap().as_str(), "db@v9");
        assert_eq!(
            cache.fetcher().reads.load(Ordering::SeqCst),
            2,
            "joined, then its own"
        );
        assert!(
            Instant::now() < hurried_deadline,
            "the shared read failed early"
        );
    }
}
