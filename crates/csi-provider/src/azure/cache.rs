//! The per-node object cache between Mounts and Key Vault: what turns "one GET per object per
//! pod per rotation poll" into one GET per identity, object and version per TTL.
//!
//! Entries are keyed by (identity, vault host, object type, name, version-or-latest): an entry
//! is only ever served to a request whose identity was proven (by
//! [`super::identity::IdentityResolver`]) to be the one that read it — never to another
//! identity, whatever it asks for. "Latest" reads live `latest_ttl` (30 s by default), so a
//! rotation is seen within that; pinned versions and the versions a "latest" read returned live
//! `pinned_ttl` (10 min); version listings live `versions_ttl`.
//!
//! Concurrent identical requests are coalesced: one vault read runs (in its own task, under the
//! first requester's deadline) and every waiter gets its answer, so 100 pods mounting the same
//! object cost one GET. Reads of one vault are bounded by a per-vault semaphore. A throttled
//! answer is given to every waiter as is (no waiter retries on its own), and until its
//! Retry-After passes new reads of that vault wait for it (or fail at once with
//! [`VaultError::Throttled`] when it is past their deadline) instead of adding to the storm.
//!
//! Errors: transient ones (throttling, outages, deadlines) and refused identities (401) are not
//! cached. Authoritative answers about an object for an identity — not found, forbidden,
//! disabled — are cached for `negative_ttl` (5 s by default): the same read gives the same
//! answer until someone changes the vault, and a crash-looping Deployment naming a missing
//! secret would otherwise cost one GET per pod per kubelet retry. Being per identity, a cached
//! refusal never affects another identity; 5 s is short next to kubelet's mount retry backoff.
//!
//! Values are zeroized when the last reference to them goes ([`Fetched`] holds a secret's value
//! in a zeroizing buffer): entries are dropped on expiry (swept at most once a second on use),
//! on eviction (least recently used first, beyond `max_entries`) and on [`ObjectCache::clear`].
//! Never logs an object's value; counters and observer calls carry no object or vault name.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::fetched::{Fetched, VersionItem};
use super::identity::{IdentityKey, Lru, ResolvedIdentity, lock};
use super::spec::{ObjectKind, VaultName};
use super::vault::{ObjectRef, VaultError, VaultReader, VersionRef};

/// How long entries live and how much the cache holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a "latest version" read is served from the cache.
    pub latest_ttl: Duration,
    /// How long a pinned version (or the version a "latest" read returned) is served.
    pub pinned_ttl: Duration,
    /// How long a version listing is served.
    pub versions_ttl: Duration,
    /// How long "not found", "forbidden" and "disabled" answers are served (0: not cached).
    pub negative_ttl: Duration,
    /// At most this many entries are kept (least recently used first out).
    pub max_entries: usize,
    /// At most this many reads of one vault run at once.
    pub per_vault_concurrency: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            latest_ttl: Duration::from_secs(30),
            pinned_ttl: Duration::from_secs(10 * 60),
            versions_ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            max_entries: 4096,
            per_vault_concurrency: 8,
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
    /// By a new vault read.
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

/// Receives the cache's events, for metrics. Labels are fixed names only.
pub trait CacheObserver: Send + Sync {
    /// One lookup and how it was served.
    fn lookup(&self, outcome: Lookup);
    /// One vault read (all its attempts): `result` is `ok` or [`VaultError::metric_label`].
    /// Reads refused at once because the vault is throttling are reported as `throttled`
    /// with no time.
    fn vault_call(&self, kind: ObjectKind, result: &'static str, took: Duration);
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
    /// Vault reads made (each with its retries).
    pub vault_calls: u64,
    /// Vault reads that failed.
    pub vault_failures: u64,
    /// Reads not sent because the vault asked to wait past the reader's deadline.
    pub throttled_without_call: u64,
    /// Entries held now.
    pub entries: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    coalesced: AtomicU64,
    misses: AtomicU64,
    vault_calls: AtomicU64,
    vault_failures: AtomicU64,
    throttled_without_call: AtomicU64,
}

/// Coalescing, bounded, per-identity cache of vault reads. Cloning shares the cache.
#[derive(Clone)]
pub struct ObjectCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache")
            .field("settings", &self.inner.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    reader: VaultReader,
    settings: CacheSettings,
    observer: Option<Arc<dyn CacheObserver>>,
    counters: Counters,
    state: Mutex<State>,
}

struct State {
    ready: Lru<Key, Ready>,
    flights: HashMap<Key, Arc<Flight>>,
    vaults: HashMap<String, VaultGate>,
    last_sweep: Instant,
}

/// What an entry is about. Names and versions are lowercase (Key Vault compares them so).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    identity: IdentityKey,
    vault_host: String,
    kind: ObjectKind,
    name: String,
    version: VersionRef,
}

/// A cached or awaited answer.
#[derive(Clone)]
enum Value {
    Object(Arc<Fetched>),
    Versions(Arc<Vec<VersionItem>>),
}

type Answer = Result<Value, VaultError>;

struct Ready {
    answer: Answer,
    expires: Instant,
}

/// A read in flight; its answer is published once.
struct Flight {
    answer: watch::Sender<Option<Answer>>,
}

/// One vault's concurrency bound and throttling state.
struct VaultGate {
    permits: Arc<Semaphore>,
    throttled_until: Option<Instant>,
}

/// How many vault gates are kept before idle ones are dropped.
const MAX_VAULT_GATES: usize = 4096;
/// How often expired entries are swept (on use).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl ObjectCache {
    /// A cache reading through `reader`.
    pub fn new(reader: VaultReader, settings: CacheSettings) -> Self {
        Self::build(reader, settings, None)
    }

    /// A cache reading through `reader` and reporting to `observer` (for metrics).
    pub fn with_observer(
        reader: VaultReader,
        settings: CacheSettings,
        observer: Arc<dyn CacheObserver>,
    ) -> Self {
        Self::build(reader, settings, Some(observer))
    }

    fn build(
        reader: VaultReader,
        settings: CacheSettings,
        observer: Option<Arc<dyn CacheObserver>>,
    ) -> Self {
        let capacity = settings.max_entries.max(1);
        Self {
            inner: Arc::new(Inner {
                reader,
                settings,
                observer,
                counters: Counters::default(),
                state: Mutex::new(State {
                    ready: Lru::new(capacity),
                    flights: HashMap::new(),
                    vaults: HashMap::new(),
                    last_sweep: Instant::now(),
                }),
            }),
        }
    }

    /// The settings in effect.
    pub fn settings(&self) -> &CacheSettings {
        &self.inner.settings
    }

    /// `version` (the latest when `None`) of object `name` of `kind` in `vault`, as `identity`:
    /// from the cache, by joining an identical read in flight, or by a new vault read.
    pub async fn get(
        &self,
        identity: &ResolvedIdentity,
        vault: &VaultName,
        kind: ObjectKind,
        name: &str,
        version: Option<&str>,
        deadline: Instant,
    ) -> Result<Arc<Fetched>, VaultError> {
        let version = version.map_or(VersionRef::Latest, |v| {
            VersionRef::Pinned(v.to_ascii_lowercase())
        });
        match self
            .inner
            .lookup(identity, vault, kind, name, version, deadline)
            .await?
        {
            Value::Object(fetched) => Ok(fetched),
            // Never: a listing is cached under VersionRef::Listing only.
            Value::Versions(_) => Err(self.inner.mixed_up(identity, vault, kind, name)),
        }
    }

    /// Every version of object `name` of `kind` in `vault`, as `identity` (cached like
    /// [`ObjectCache::get`], for `versions_ttl`).
    pub async fn versions(
        &self,
        identity: &ResolvedIdentity,
        vault: &VaultName,
        kind: ObjectKind,
        name: &str,
        deadline: Instant,
    ) -> Result<Vec<VersionItem>, VaultError> {
        match self
            .inner
            .lookup(identity, vault, kind, name, VersionRef::Listing, deadline)
            .await?
        {
            Value::Versions(items) => Ok(items.as_ref().clone()),
            // Never: an object is cached under a version only.
            Value::Object(_) => Err(self.inner.mixed_up(identity, vault, kind, name)),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> CacheStats {
        let counters = &self.inner.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheStats {
            hits: read(&counters.hits),
            coalesced: read(&counters.coalesced),
            misses: read(&counters.misses),
            vault_calls: read(&counters.vault_calls),
            vault_failures: read(&counters.vault_failures),
            throttled_without_call: read(&counters.throttled_without_call),
            entries: lock(&self.inner.state).ready.len() as u64,
        }
    }

    /// Drops (and so zeroizes, once no Mount holds them) every cached entry. Reads in flight
    /// finish and are cached.
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

impl Inner {
    /// The error for an entry of the wrong shape (a bug; never served as a value).
    fn mixed_up(
        &self,
        identity: &ResolvedIdentity,
        vault: &VaultName,
        kind: ObjectKind,
        name: &str,
    ) -> VaultError {
        VaultError::Malformed {
            object: ObjectRef {
                vault_host: VaultReader::vault_host(identity, vault),
                kind,
                name: name.to_owned(),
                version: VersionRef::Latest,
            },
            reason: "the cache held another kind of entry",
            source: None,
        }
    }

    async fn lookup(
        self: &Arc<Self>,
        identity: &ResolvedIdentity,
        vault: &VaultName,
        kind: ObjectKind,
        name: &str,
        version: VersionRef,
        deadline: Instant,
    ) -> Answer {
        let key = Key {
            identity: identity.key().clone(),
            vault_host: VaultReader::vault_host(identity, vault),
            kind,
            name: name.to_ascii_lowercase(),
            version,
        };
        let (mut receiver, outcome, expired, task) = {
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
                .get(&key)
                .filter(|ready| ready.expires > now)
                .map(|ready| ready.answer.clone());
            if let Some(answer) = cached {
                drop(state);
                drop(expired);
                self.count(Lookup::Hit);
                return answer;
            }
            match state.flights.get(&key) {
                Some(flight) => (flight.answer.subscribe(), Lookup::Coalesced, expired, None),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    let flight = Arc::new(Flight { answer: sender });
                    state.flights.insert(key.clone(), Arc::clone(&flight));
                    let task = Task {
                        inner: Arc::clone(self),
                        key: key.clone(),
                        flight,
                        done: false,
                    };
                    (receiver, Lookup::Miss, expired, Some(task))
                }
            }
        };
        drop(expired);
        // Counted before the read starts, so a lookup is always reported before its read.
        self.count(outcome);
        if let Some(task) = task {
            tokio::spawn(task.run(identity.clone(), vault.clone(), name.to_owned(), deadline));
        }
        let object = || ObjectRef {
            vault_host: key.vault_host.clone(),
            kind,
            name: name.to_owned(),
            version: key.version.clone(),
        };
        match tokio::time::timeout_at(deadline, receiver.wait_for(Option::is_some)).await {
            Ok(Ok(answer)) => answer.clone().unwrap_or_else(|| {
                Err(VaultError::Unavailable {
                    object: object(),
                    status: None,
                    source: None,
                })
            }),
            // The read's task ended without an answer (it panicked).
            Ok(Err(_closed)) => Err(VaultError::Unavailable {
                object: object(),
                status: None,
                source: None,
            }),
            Err(_elapsed) => Err(VaultError::DeadlineExceeded {
                object: object(),
                attempts: 0,
            }),
        }
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

    /// The vault read behind a miss: waits out the vault's throttling (or fails at once when
    /// that is past `deadline`), takes a permit of the vault's semaphore, reads.
    async fn fetch(
        &self,
        key: &Key,
        identity: &ResolvedIdentity,
        vault: &VaultName,
        name: &str,
        deadline: Instant,
    ) -> Answer {
        let object = || ObjectRef {
            vault_host: key.vault_host.clone(),
            kind: key.kind,
            name: name.to_owned(),
            version: key.version.clone(),
        };
        let (permits, throttled_until) = {
            let mut state = lock(&self.state);
            let State { vaults, .. } = &mut *state;
            if vaults.len() >= MAX_VAULT_GATES && !vaults.contains_key(&key.vault_host) {
                let now = Instant::now();
                let limit = self.settings.per_vault_concurrency.max(1);
                vaults.retain(|_, gate| {
                    Arc::strong_count(&gate.permits) > 1
                        || gate.permits.available_permits() < limit
                        || gate.throttled_until.is_some_and(|until| until > now)
                });
            }
            let gate = vaults
                .entry(key.vault_host.clone())
                .or_insert_with(|| VaultGate {
                    permits: Arc::new(Semaphore::new(self.settings.per_vault_concurrency.max(1))),
                    throttled_until: None,
                });
            (Arc::clone(&gate.permits), gate.throttled_until)
        };
        if let Some(until) = throttled_until.filter(|until| *until > Instant::now()) {
            if until >= deadline {
                self.counters
                    .throttled_without_call
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(observer) = &self.observer {
                    observer.vault_call(key.kind, "throttled", Duration::ZERO);
                }
                return Err(VaultError::Throttled {
                    object: object(),
                    retry_after: Some(until - Instant::now()),
                    source: None,
                });
            }
            tokio::time::sleep_until(until).await;
        }
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, permits.acquire_owned()).await
        else {
            return Err(VaultError::DeadlineExceeded {
                object: object(),
                attempts: 0,
            });
        };
        let started = Instant::now();
        let answer = match key.version {
            VersionRef::Listing => self
                .reader
                .versions(identity, vault, key.kind, name, deadline)
                .await
                .map(|items| Value::Versions(Arc::new(items))),
            VersionRef::Latest => self
                .reader
                .get(identity, vault, key.kind, name, None, deadline)
                .await
                .map(|fetched| Value::Object(Arc::new(fetched))),
            VersionRef::Pinned(ref version) => self
                .reader
                .get(identity, vault, key.kind, name, Some(version), deadline)
                .await
                .map(|fetched| Value::Object(Arc::new(fetched))),
        };
        let took = started.elapsed();
        self.counters.vault_calls.fetch_add(1, Ordering::Relaxed);
        let result = match &answer {
            Ok(_) => "ok",
            Err(error) => {
                self.counters.vault_failures.fetch_add(1, Ordering::Relaxed);
                error.metric_label()
            }
        };
        if let Some(observer) = &self.observer {
            observer.vault_call(key.kind, result, took);
        }
        if let Err(error) = &answer
            && let Some(wait) = error.retry_after()
        {
            let until = Instant::now() + wait;
            let mut state = lock(&self.state);
            if let Some(gate) = state.vaults.get_mut(&key.vault_host) {
                gate.throttled_until =
                    Some(gate.throttled_until.map_or(until, |old| old.max(until)));
            }
        }
        answer
    }

    /// Caches `answer` for `key` (and a "latest" read's value under its version too), and
    /// ends the flight.
    fn finish(&self, key: &Key, flight: &Arc<Flight>, answer: &Answer) {
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
            let ttl = match (answer, &key.version) {
                (Ok(_), VersionRef::Latest) => settings.latest_ttl,
                (Ok(_), VersionRef::Pinned(_)) => settings.pinned_ttl,
                (Ok(_), VersionRef::Listing) => settings.versions_ttl,
                (Err(error), _) if error.is_authoritative() => settings.negative_ttl,
                (Err(_), _) => Duration::ZERO,
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
            if let (Ok(Value::Object(fetched)), VersionRef::Latest) = (answer, &key.version)
                && !settings.pinned_ttl.is_zero()
            {
                let pinned = Key {
                    version: VersionRef::Pinned(fetched.version().to_ascii_lowercase()),
                    ..key.clone()
                };
                if state.ready.peek(&pinned).is_none() {
                    dropped.extend(state.ready.insert(
                        pinned,
                        Ready {
                            answer: answer.clone(),
                            expires: now + settings.pinned_ttl,
                        },
                    ));
                }
            }
        }
        drop(dropped);
        flight.answer.send_replace(Some(answer.clone()));
    }
}

/// The task that reads for a flight. If it ends without an answer (a panic), dropping it
/// removes the flight so that the next lookup reads again, and waiters see the channel close.
struct Task {
    inner: Arc<Inner>,
    key: Key,
    flight: Arc<Flight>,
    done: bool,
}

impl Task {
    async fn run(
        mut self,
        identity: ResolvedIdentity,
        vault: VaultName,
        name: String,
        deadline: Instant,
    ) {
        let answer = self
            .inner
            .fetch(&self.key, &identity, &vault, &name, deadline)
            .await;
        self.inner.finish(&self.key, &self.flight, &answer);
        self.done = true;
    }
}

impl Drop for Task {
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
