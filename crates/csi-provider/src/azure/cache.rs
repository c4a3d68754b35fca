//! The Azure backend's instance of the shared object cache ([`crate::cache`]): entries keyed by
//! (identity, vault host, object type, name, version-or-latest-or-listing), names and versions
//! compared lowercase as Key Vault compares them, a "latest" read also cached under the version
//! it returned, and reads through [`VaultReader`].
//!
//! An entry is only ever served to a request whose identity was proven (by
//! [`super::identity::IdentityResolver`]) to be the one that read it. Everything about TTLs,
//! coalescing, per-vault concurrency, throttling and negative caching is the shared cache's.
//! Never logs an object's value; observer calls carry no object or vault name.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cache::{Cache, CacheError, Fetcher, Freshness};
pub use crate::cache::{CacheSettings, CacheStats, Lookup};

use super::fetched::{Fetched, VersionItem};
use super::identity::{IdentityKey, ResolvedIdentity};
use super::spec::{ObjectKind, VaultName};
use super::vault::{ObjectRef, VaultError, VaultReader, VersionRef};

/// Receives the cache's events, for metrics. Labels are fixed names only.
pub trait CacheObserver: Send + Sync {
    /// One lookup and how it was served.
    fn lookup(&self, outcome: Lookup);
    /// One vault read (all its attempts): `result` is `ok` or [`VaultError::metric_label`].
    /// Reads refused at once because the vault is throttling are reported as `throttled`
    /// with no time.
    fn vault_call(&self, kind: ObjectKind, result: &'static str, took: Duration);
}

/// An Azure observer as the shared cache reports to it.
struct Observed(Arc<dyn CacheObserver>);

impl crate::cache::CacheObserver<ObjectKind> for Observed {
    fn lookup(&self, outcome: Lookup) {
        self.0.lookup(outcome);
    }

    fn remote_call(&self, kind: ObjectKind, result: &'static str, took: Duration) {
        self.0.vault_call(kind, result, took);
    }
}

impl CacheError for VaultError {
    fn is_authoritative(&self) -> bool {
        VaultError::is_authoritative(self)
    }

    fn is_transient(&self) -> bool {
        VaultError::is_transient(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        VaultError::retry_after(self)
    }

    fn metric_label(&self) -> &'static str {
        VaultError::metric_label(self)
    }
}

/// What an entry is about. Names and versions are lowercase (Key Vault compares them so).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    identity: IdentityKey,
    vault_host: String,
    kind: ObjectKind,
    name: String,
    version: VersionRef,
}

/// A read as the Mount asked for it: the proven identity, the vault and the name as spelled.
#[derive(Clone)]
pub struct Request {
    identity: ResolvedIdentity,
    vault: VaultName,
    name: String,
}

/// A cached or awaited answer.
#[derive(Clone)]
pub enum Value {
    /// One object version.
    Object(Arc<Fetched>),
    /// A version listing.
    Versions(Arc<Vec<VersionItem>>),
}

/// Key Vault reads, as the shared cache makes them.
pub struct VaultFetcher {
    reader: VaultReader,
}

impl VaultFetcher {
    fn object(key: &Key, request: &Request) -> ObjectRef {
        ObjectRef {
            vault_host: key.vault_host.clone(),
            kind: key.kind,
            name: request.name.clone(),
            version: key.version.clone(),
        }
    }
}

impl Fetcher for VaultFetcher {
    type Key = Key;
    type Request = Request;
    type Value = Value;
    type Error = VaultError;
    type Kind = ObjectKind;
    /// Key Vault's limits are per vault: one identity's 429 holds back every read of the vault.
    type ThrottleScope = String;

    fn endpoint<'k>(&self, key: &'k Key) -> &'k str {
        &key.vault_host
    }

    fn throttle_scope(&self, key: &Key) -> String {
        key.vault_host.clone()
    }

    fn kind(&self, key: &Key) -> ObjectKind {
        key.kind
    }

    fn freshness(&self, key: &Key) -> Freshness {
        match key.version {
            VersionRef::Latest => Freshness::Latest,
            VersionRef::Pinned(_) => Freshness::Pinned,
            VersionRef::Listing => Freshness::Listing,
        }
    }

    async fn fetch(
        &self,
        key: &Key,
        request: &Request,
        deadline: Instant,
    ) -> Result<Value, VaultError> {
        let Request {
            identity,
            vault,
            name,
        } = request;
        match &key.version {
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
            VersionRef::Pinned(version) => self
                .reader
                .get(identity, vault, key.kind, name, Some(version), deadline)
                .await
                .map(|fetched| Value::Object(Arc::new(fetched))),
        }
    }

    fn pinned_alias(&self, key: &Key, value: &Value) -> Option<Key> {
        match (value, &key.version) {
            (Value::Object(fetched), VersionRef::Latest) => Some(Key {
                version: VersionRef::Pinned(fetched.version().to_ascii_lowercase()),
                ..key.clone()
            }),
            _ => None,
        }
    }

    fn throttled(&self, key: &Key, request: &Request, retry_after: Duration) -> VaultError {
        VaultError::Throttled {
            object: Self::object(key, request),
            retry_after: Some(retry_after),
            source: None,
        }
    }

    fn deadline_exceeded(&self, key: &Key, request: &Request) -> VaultError {
        VaultError::DeadlineExceeded {
            object: Self::object(key, request),
            attempts: 0,
        }
    }

    fn abandoned(&self, key: &Key, request: &Request) -> VaultError {
        VaultError::Unavailable {
            object: Self::object(key, request),
            status: None,
            source: None,
        }
    }
}

/// Coalescing, bounded, per-identity cache of vault reads. Cloning shares the cache.
#[derive(Clone)]
pub struct ObjectCache {
    cache: Cache<VaultFetcher>,
}

impl fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache")
            .field("settings", self.settings())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ObjectCache {
    /// A cache reading through `reader`.
    pub fn new(reader: VaultReader, settings: CacheSettings) -> Self {
        Self {
            cache: Cache::new(VaultFetcher { reader }, settings, None),
        }
    }

    /// A cache reading through `reader` and reporting to `observer` (for metrics).
    pub fn with_observer(
        reader: VaultReader,
        settings: CacheSettings,
        observer: Arc<dyn CacheObserver>,
    ) -> Self {
        Self {
            cache: Cache::new(
                VaultFetcher { reader },
                settings,
                Some(Arc::new(Observed(observer))),
            ),
        }
    }

    /// The settings in effect.
    pub fn settings(&self) -> &CacheSettings {
        self.cache.settings()
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
        let (key, request) = Self::read(identity, vault, kind, name, version);
        match self
            .cache
            .get(key.clone(), request.clone(), deadline)
            .await?
        {
            Value::Object(fetched) => Ok(fetched),
            // Never: a listing is cached under VersionRef::Listing only.
            Value::Versions(_) => Err(mixed_up(&key, &request)),
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
        let (key, request) = Self::read(identity, vault, kind, name, VersionRef::Listing);
        match self
            .cache
            .get(key.clone(), request.clone(), deadline)
            .await?
        {
            Value::Versions(items) => Ok(items.as_ref().clone()),
            // Never: an object is cached under a version only.
            Value::Object(_) => Err(mixed_up(&key, &request)),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Drops (and so zeroizes, once no Mount holds them) every cached entry. Reads in flight
    /// finish and are cached.
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// Drops expired entries now (they are also swept on use).
    pub fn purge_expired(&self) {
        self.cache.purge_expired();
    }

    fn read(
        identity: &ResolvedIdentity,
        vault: &VaultName,
        kind: ObjectKind,
        name: &str,
        version: VersionRef,
    ) -> (Key, Request) {
        let key = Key {
            identity: identity.key().clone(),
            vault_host: VaultReader::vault_host(identity, vault),
            kind,
            name: name.to_ascii_lowercase(),
            version,
        };
        let request = Request {
            identity: identity.clone(),
            vault: vault.clone(),
            name: name.to_owned(),
        };
        (key, request)
    }
}

/// The error for an entry of the wrong shape (a bug; never served as a value).
fn mixed_up(key: &Key, request: &Request) -> VaultError {
    VaultError::Malformed {
        object: ObjectRef {
            version: VersionRef::Latest,
            ..VaultFetcher::object(key, request)
        },
        reason: "the cache held another kind of entry",
        source: None,
    }
}
