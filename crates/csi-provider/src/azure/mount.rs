//! One Azure Mount from start to end: validate the class, prove the pod's identity, fetch every
//! object (concurrently, through the coalescing cache), turn each into files, and answer with
//! every file and version — or with one error naming the object that failed. All or nothing: a
//! Mount that fails returns no file, so the driver leaves the pod's volume as it was.
//!
//! Never writes a file, never logs secret content, and makes no vault call before the class is
//! valid and the identity is proven.

use std::sync::Arc;

use futures::future::try_join_all;
use secrecy::SecretString;
use tokio::time::Instant;

use crate::errors::{MountError, ObjectFailure};
use crate::files::{Mounted, ObjectVersion, OutputFile};
use crate::request::MountInput;

use super::cache::ObjectCache;
use super::content::{RenderOptions, object_version, render};
use super::fetched::{Fetched, VersionItem};
use super::identity::{IdentityResolver, ResolvedIdentity};
use super::spec::{AzureMountSpec, ObjectFormat, ObjectKind, ObjectSpec, VaultName};

/// The Azure Key Vault backend.
pub struct AzureBackend {
    identities: IdentityResolver,
    cache: ObjectCache,
    render: RenderOptions,
}

impl std::fmt::Debug for AzureBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureBackend").finish_non_exhaustive()
    }
}

impl AzureBackend {
    /// A backend resolving identities with `identities`, reading through `cache` and rendering
    /// files with `render`.
    pub fn new(identities: IdentityResolver, cache: ObjectCache, render: RenderOptions) -> Self {
        Self {
            identities,
            cache,
            render,
        }
    }

    /// Serves one Mount: every requested object's files and versions, or the first error.
    pub async fn mount(
        &self,
        input: &MountInput,
        deadline: Instant,
    ) -> Result<Mounted, MountError> {
        let spec = AzureMountSpec::from_parameters(&input.parameters)?;
        let identity = self.identities.resolve(&spec, input, deadline).await?;
        let objects = spec.objects.iter().map(|object| {
            self.mount_object(&spec, object, &identity, input.default_mode, deadline)
        });
        let objects = try_join_all(objects).await.inspect_err(|error| {
            if error.is_token_refused_by_vault() {
                // The next Mount proves the identity again rather than reuse the refused token.
                self.identities.forget(&identity);
            }
        })?;
        let mut mounted = Mounted::default();
        for (files, versions) in objects {
            mounted.files.extend(files);
            mounted.versions.extend(versions);
        }
        Ok(mounted)
    }

    /// One object's files and versions; an error names the object.
    async fn mount_object(
        &self,
        spec: &AzureMountSpec,
        object: &ObjectSpec,
        identity: &ResolvedIdentity,
        default_mode: u32,
        deadline: Instant,
    ) -> Result<(Vec<OutputFile>, Vec<ObjectVersion>), MountError> {
        let fail = |failure: ObjectFailure| MountError::object(object, failure);
        let vault = object.vault(spec);
        let other_vault = object.vault.as_ref().filter(|own| *own != &spec.vault);
        let mode = object.mode.unwrap_or(default_mode);
        let password = match &object.pfx_password_secret {
            Some(name) if object.format == ObjectFormat::Pfx => Some(
                self.password(identity, vault, name, deadline)
                    .await
                    .map_err(fail)?,
            ),
            _ => None,
        };
        let mut files = Vec::new();
        let mut versions = Vec::new();
        if object.version_history <= 1 {
            let fetched = self
                .cache
                .get(
                    identity,
                    vault,
                    object.kind,
                    &object.name,
                    object.version.as_deref(),
                    deadline,
                )
                .await
                .map_err(|error| fail(ObjectFailure::Vault(error)))?;
            files.extend(
                render(
                    object,
                    &fetched,
                    object.file_name(),
                    mode,
                    &self.render,
                    password.as_ref(),
                )
                .map_err(|error| fail(ObjectFailure::Content(error)))?,
            );
            versions.push(object_version(object, &fetched, None, other_vault));
            return Ok((files, versions));
        }
        let listed = self
            .cache
            .versions(identity, vault, object.kind, &object.name, deadline)
            .await
            .map_err(|error| fail(ObjectFailure::Vault(error)))?;
        let chosen =
            history(&listed, object.version.as_deref(), object.version_history).map_err(fail)?;
        for (index, version) in chosen.iter().enumerate() {
            let fetched = self
                .cache
                .get(
                    identity,
                    vault,
                    object.kind,
                    &object.name,
                    Some(version),
                    deadline,
                )
                .await
                .map_err(|error| fail(ObjectFailure::Vault(error)))?;
            let file = format!("{}/{index}", object.file_name());
            files.extend(
                render(
                    object,
                    &fetched,
                    &file,
                    mode,
                    &self.render,
                    password.as_ref(),
                )
                .map_err(|error| fail(ObjectFailure::Content(error)))?,
            );
            versions.push(object_version(object, &fetched, Some(index), other_vault));
        }
        Ok((files, versions))
    }

    /// The value of secret `name` in `vault`, as a PFX password.
    async fn password(
        &self,
        identity: &ResolvedIdentity,
        vault: &VaultName,
        name: &str,
        deadline: Instant,
    ) -> Result<SecretString, ObjectFailure> {
        let fetched: Arc<Fetched> = self
            .cache
            .get(identity, vault, ObjectKind::Secret, name, None, deadline)
            .await
            .map_err(ObjectFailure::PfxPassword)?;
        match fetched.as_ref() {
            Fetched::Secret(secret) => Ok(SecretString::from(secret.value.as_str().to_owned())),
            _ => Err(ObjectFailure::PfxPasswordNotASecret),
        }
    }
}

/// The versions Azure's provider writes for `objectVersionHistory: count`: enabled versions,
/// newest first by creation time, starting at `start` (or the newest), at most `count`.
fn history(
    listed: &[VersionItem],
    start: Option<&str>,
    count: u32,
) -> Result<Vec<String>, ObjectFailure> {
    let mut enabled: Vec<&VersionItem> = listed.iter().filter(|item| item.enabled).collect();
    // Newest first; ties (same second) by version id, so the order never depends on the listing.
    enabled.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| b.version.cmp(&a.version))
    });
    let first = match start {
        None => 0,
        Some(version) => enabled
            .iter()
            .position(|item| item.version.eq_ignore_ascii_case(version))
            .ok_or_else(|| ObjectFailure::VersionNotInHistory {
                version: version.to_owned(),
            })?,
    };
    let chosen: Vec<String> = enabled
        .iter()
        .skip(first)
        .take(count as usize)
        .map(|item| item.version.clone())
        .collect();
    if chosen.is_empty() {
        return Err(ObjectFailure::NoEnabledVersion);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(version: &str, enabled: bool, created: i64) -> VersionItem {
        VersionItem {
            version: version.to_owned(),
            enabled,
            created,
        }
    }

    #[test]
    fn history_is_enabled_versions_newest_first_from_the_start_version() {
        let listed = [
            item("a", true, 10),
            item("d", true, 40),
            item("b", false, 20),
            item("c", true, 30),
        ];
        assert_eq!(history(&listed, None, 2).unwrap(), ["d", "c"]);
        assert_eq!(history(&listed, None, 10).unwrap(), ["d", "c", "a"]);
        assert_eq!(history(&listed, Some("C"), 5).unwrap(), ["c", "a"]);
        assert!(matches!(
            history(&listed, Some("b"), 2),
            Err(ObjectFailure::VersionNotInHistory { version }) if version == "b"
        ));
        assert!(matches!(
            history(&[item("x", false, 1)], None, 3),
            Err(ObjectFailure::NoEnabledVersion)
        ));
    }
}
