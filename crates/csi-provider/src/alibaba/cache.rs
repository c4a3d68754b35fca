//! The Alibaba backend's instance of the shared object cache ([`crate::cache`]): entries keyed
//! by (identity, endpoint, object type, name, version selector), reads through
//! [`AlibabaClient::read`], a KMS `--max-concurrent-kms-secret-pulls` and an OOS
//! `--max-concurrent-oos-secret-pulls` bound per endpoint, and a read of the current version
//! also cached under the version it returned (a KMS `VersionId`, an OOS `ParameterVersion`).
//!
//! An entry is only ever served to a request whose identity key is equal: the identity was
//! proven by [`super::identity::IdentityResolver`] for that request, or (an AccessKey) the key
//! holds its secret's digest. Never logs a value; observer calls carry no name.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::client::{AlibabaClient, AlibabaError, Credentials, Fetched, ObjectRef, ReadFailure};
use super::identity::{IdentityKey, ResolvedIdentity};
use super::spec::{ObjectSpec, ObjectType, VersionSelector};
use crate::cache::{Cache, CacheError, Fetcher, Freshness};

impl CacheError for AlibabaError {
    fn is_authoritative(&self) -> bool {
        AlibabaError::is_authoritative(self)
    }

    fn is_transient(&self) -> bool {
        AlibabaError::is_transient(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        AlibabaError::retry_after(self)
    }

    fn metric_label(&self) -> &'static str {
        AlibabaError::metric_label(self)
    }
}

/// What an entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    identity: IdentityKey,
    endpoint: String,
    kind: ObjectType,
    name: String,
    version: VersionSelector,
}

/// A read as the Mount asks for it: the proven credentials and the object.
#[derive(Clone)]
pub struct ReadRequest {
    credentials: Arc<Credentials>,
    object: ObjectRef,
}

impl ReadRequest {
    /// The key and the request of reading `object` as `identity`.
    pub fn of(identity: &ResolvedIdentity, object: &ObjectSpec) -> (Key, ReadRequest) {
        let key = Key {
            identity: identity.key().clone(),
            endpoint: object.endpoint.clone(),
            kind: object.kind,
            name: object.name.clone(),
            version: object.version.clone(),
        };
        let request = ReadRequest {
            credentials: Arc::clone(identity.credentials()),
            object: ObjectRef {
                endpoint: object.endpoint.clone(),
                kind: object.kind,
                name: object.name.clone(),
                version: object.version.clone(),
            },
        };
        (key, request)
    }

    fn failed(&self, failure: ReadFailure) -> AlibabaError {
        AlibabaError {
            object: self.object.clone(),
            failure,
        }
    }
}

/// KMS and OOS reads, as the shared cache makes them.
pub struct Reader {
    client: Arc<AlibabaClient>,
    kms_concurrency: usize,
    oos_concurrency: usize,
}

impl Reader {
    /// Reads through `client`, at most `kms_concurrency` (`oos_concurrency`) at once per KMS
    /// (OOS) endpoint.
    pub fn new(client: Arc<AlibabaClient>, kms_concurrency: usize, oos_concurrency: usize) -> Self {
        Self {
            client,
            kms_concurrency,
            oos_concurrency,
        }
    }
}

impl Fetcher for Reader {
    type Key = Key;
    type Request = ReadRequest;
    type Value = Arc<Fetched>;
    type Error = AlibabaError;
    type Kind = ObjectType;
    /// Alibaba Cloud's limits are per account: one identity's throttling holds back only its own
    /// reads of the endpoint, never another identity's (another account's).
    type ThrottleScope = (String, IdentityKey);

    fn endpoint<'k>(&self, key: &'k Key) -> &'k str {
        &key.endpoint
    }

    fn throttle_scope(&self, key: &Key) -> (String, IdentityKey) {
        (key.endpoint.clone(), key.identity.clone())
    }

    fn kind(&self, key: &Key) -> ObjectType {
        key.kind
    }

    fn freshness(&self, key: &Key) -> Freshness {
        if key.version.is_pinned() {
            Freshness::Pinned
        } else {
            Freshness::Latest
        }
    }

    fn concurrency(&self, key: &Key) -> Option<usize> {
        Some(match key.kind {
            ObjectType::Kms => self.kms_concurrency,
            ObjectType::Oos => self.oos_concurrency,
        })
    }

    async fn fetch(
        &self,
        _key: &Key,
        request: &ReadRequest,
        deadline: Instant,
    ) -> Result<Arc<Fetched>, AlibabaError> {
        self.client
            .read(&request.credentials, &request.object, deadline)
            .await
            .map(Arc::new)
    }

    fn pinned_alias(&self, key: &Key, value: &Arc<Fetched>) -> Option<Key> {
        if key.version.is_pinned() {
            return None;
        }
        let version = match key.kind {
            ObjectType::Kms => VersionSelector::Kms {
                id: Some(value.version.clone()),
                stage: None,
            },
            ObjectType::Oos => VersionSelector::Oos(value.version.parse().ok()?),
        };
        Some(Key {
            version,
            ..key.clone()
        })
    }

    fn throttled(&self, _key: &Key, request: &ReadRequest, retry_after: Duration) -> AlibabaError {
        request.failed(ReadFailure::Throttled {
            retry_after: Some(retry_after),
            answer: None,
        })
    }

    fn deadline_exceeded(&self, _key: &Key, request: &ReadRequest) -> AlibabaError {
        request.failed(ReadFailure::DeadlineExceeded(0))
    }

    fn abandoned(&self, _key: &Key, request: &ReadRequest) -> AlibabaError {
        request.failed(ReadFailure::Unavailable {
            answer: None,
            source: None,
        })
    }
}

/// Coalescing, bounded, per-identity cache of KMS and OOS reads.
pub type ObjectCache = Cache<Reader>;
