//! One Alibaba Mount from start to end: validate the class, prove the pod's identity (and each
//! object's cross-account role), fetch every object concurrently through the coalescing cache,
//! and answer with every file and version — the value (a binary secret decoded), one file per
//! `jmesPath` field, names translated, mode the request's — or with one error naming the object
//! that failed. All or nothing, as Alibaba's provider: a failed Mount returns no file.
//!
//! Object versions are reported as Alibaba's provider reports them: the id is the file's path,
//! the version the KMS `VersionId` (a `jmesPath` file carries its secret's). An OOS parameter's
//! version is its `ParameterVersion` (Alibaba's provider reports the constant `v1`; the driver
//! only records it, so the real version is the more useful answer).
//!
//! Never writes a file, never logs secret content, and makes no call before the class is valid.

use futures::future::try_join_all;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::cache::{ObjectCache, ReadRequest};
use super::client::ReadFailure;
use super::identity::{IdentityResolver, ResolvedIdentity};
use super::spec::{AlibabaMountSpec, ObjectSpec, SpecSettings};
use crate::errors::{MountError, ObjectFailure};
use crate::files::Mounted;
use crate::files::{ObjectVersion, OutputFile};
use crate::request::MountInput;

/// The Alibaba Cloud backend.
pub struct AlibabaBackend {
    spec: SpecSettings,
    identities: IdentityResolver,
    cache: ObjectCache,
}

impl std::fmt::Debug for AlibabaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlibabaBackend")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl AlibabaBackend {
    /// A backend reading classes with `spec`, resolving identities with `identities` and
    /// reading through `cache`.
    pub fn new(spec: SpecSettings, identities: IdentityResolver, cache: ObjectCache) -> Self {
        Self {
            spec,
            identities,
            cache,
        }
    }

    /// The object cache (for its counters).
    pub fn cache(&self) -> &ObjectCache {
        &self.cache
    }

    /// The identity resolver.
    pub fn identities(&self) -> &IdentityResolver {
        &self.identities
    }

    /// Serves one Mount: every requested object's files and versions, or the first error.
    pub async fn mount(
        &self,
        input: &MountInput,
        deadline: Instant,
    ) -> Result<Mounted, MountError> {
        let spec = AlibabaMountSpec::from_parameters(&input.parameters, &self.spec)?;
        let identity = self.identities.resolve(&spec, input, deadline).await?;
        let objects = spec
            .objects
            .iter()
            .map(|object| self.mount_object(object, &identity, input.default_mode, deadline));
        // All or nothing: the first failure fails the Mount.
        let (files, versions): (Vec<_>, Vec<_>) = try_join_all(objects).await?.into_iter().unzip();
        Ok(Mounted {
            files: files.into_iter().flatten().collect(),
            versions: versions.into_iter().flatten().collect(),
        })
    }

    /// One object's files and versions; an error names the object.
    async fn mount_object(
        &self,
        object: &ObjectSpec,
        identity: &ResolvedIdentity,
        mode: u32,
        deadline: Instant,
    ) -> Result<(Vec<OutputFile>, Vec<ObjectVersion>), MountError> {
        let fail = |failure| MountError::Object {
            kind: object.kind.as_str(),
            name: object.name.clone(),
            version: object.version_text.clone(),
            failure,
        };
        let cross;
        let identity = match &object.cross_account_role {
            Some(role) => {
                cross = self
                    .identities
                    .cross_account(identity, role, deadline)
                    .await
                    .map_err(|error| fail(ObjectFailure::CrossAccount(error)))?;
                &cross
            }
            None => identity,
        };
        let (key, request) = ReadRequest::of(identity, object);
        let fetched = match self.cache.get(key, request, deadline).await {
            Ok(fetched) => fetched,
            Err(error) => {
                if matches!(error.failure, ReadFailure::Unauthorized(_)) {
                    // Credentials STS issued may be revoked (or expire) early: prove again.
                    self.identities.forget(identity);
                }
                return Err(fail(ObjectFailure::Alibaba(Box::new(error))));
            }
        };
        let mut files = vec![OutputFile {
            path: object.file.clone(),
            mode,
            contents: Zeroizing::new(fetched.value.to_vec()),
        }];
        let mut versions = vec![ObjectVersion {
            id: object.file.clone(),
            version: fetched.version.clone(),
        }];
        for field in &object.json_fields {
            let contents = crate::jmes::extract(&fetched.value, &field.path)
                .map_err(|error| fail(ObjectFailure::JsonField(error)))?;
            files.push(OutputFile {
                path: field.file.clone(),
                mode,
                contents,
            });
            versions.push(ObjectVersion {
                id: field.file.clone(),
                version: fetched.version.clone(),
            });
        }
        Ok((files, versions))
    }
}
