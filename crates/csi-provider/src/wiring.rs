//! The production wiring of the Azure backend: the provider's settings become the identity
//! resolver, the vault reader and the object cache that [`AzureBackend`] mounts through, with
//! the cache reporting to [`Metrics`]. `main` and the tests both build the backend here, so the
//! tests run the stack production runs.
//!
//! Never reads a secret: the settings hold paths, names, addresses and durations only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_access::client::{InsecureOverrides, ResolveOverride, TransportOptions};
use azure_access::cloud::{Cloud, CloudName};

use crate::azure::cache::{CacheObserver, CacheSettings, Lookup, ObjectCache};
use crate::azure::content::RenderOptions;
use crate::azure::identity::{IdentityResolver, IdentitySettings};
use crate::azure::mount::AzureBackend;
use crate::azure::spec::ObjectKind;
use crate::azure::vault::{VaultReader, VaultSettings};
use crate::metrics::Metrics;

/// The Azure backend's settings, from the provider's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `--cloud-name`: the cloud of classes that set no `cloudName`.
    pub cloud_name: String,
    /// `--cloud-env-dir`: where `cloudEnvFileName` files must be.
    pub cloud_env_dir: PathBuf,
    /// `--construct-pem-chain`.
    pub construct_pem_chain: bool,
    /// `--write-cert-and-key-in-separate-files`.
    pub separate_cert_and_key_files: bool,
    /// `--cache-latest-ttl`.
    pub cache_latest_ttl: Duration,
    /// `--cache-pinned-ttl`.
    pub cache_pinned_ttl: Duration,
    /// `--vault-concurrency`: concurrent reads per vault.
    pub vault_concurrency: usize,
    /// `--ca-file`: extra CA certificates.
    pub ca_file: Option<PathBuf>,
    /// `--insecure-resolve`: `SUFFIX=ADDR` overrides, for tests and emulators only.
    pub insecure_resolve: Vec<String>,
    /// `--insecure-imds-endpoint`: the VM managed identity endpoint's base URL, for tests and
    /// emulators only.
    pub insecure_imds_endpoint: Option<String>,
    /// `--insecure-skip-challenge-resource-check`, for tests and emulators only.
    pub insecure_skip_challenge_resource_check: bool,
}

impl Default for Settings {
    /// The provider's flags' defaults.
    fn default() -> Self {
        Self {
            cloud_name: "AzurePublicCloud".to_owned(),
            cloud_env_dir: PathBuf::from("/etc/kubernetes"),
            construct_pem_chain: true,
            separate_cert_and_key_files: false,
            cache_latest_ttl: Duration::from_secs(30),
            cache_pinned_ttl: Duration::from_secs(10 * 60),
            vault_concurrency: 8,
            ca_file: None,
            insecure_resolve: Vec::new(),
            insecure_imds_endpoint: None,
            insecure_skip_challenge_resource_check: false,
        }
    }
}

/// A setting that cannot be used; the message names the flag and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError(pub String);

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingsError {}

/// Builds the Azure backend from `settings`, reporting cache lookups and vault reads to
/// `metrics`.
pub fn azure_backend(
    settings: &Settings,
    metrics: Arc<Metrics>,
) -> Result<AzureBackend, SettingsError> {
    let cloud = CloudName::parse(&settings.cloud_name)
        .filter(|name| *name != CloudName::Custom)
        .and_then(Cloud::known)
        .ok_or_else(|| {
            SettingsError(format!(
                "--cloud-name {:?} is not a cloud kube-kms knows: use AzurePublicCloud, \
                 AzureChinaCloud or AzureUSGovernmentCloud (a custom cloud is a class's \
                 cloudName AzureStackCloud with cloudEnvFileName)",
                settings.cloud_name
            ))
        })?;
    let mut resolve = Vec::new();
    for entry in &settings.insecure_resolve {
        resolve.push(
            ResolveOverride::parse(entry)
                .map_err(|error| SettingsError(format!("--insecure-resolve: {error}")))?,
        );
    }
    let insecure = InsecureOverrides {
        resolve,
        imds_endpoint: settings.insecure_imds_endpoint.clone(),
    };
    let transport = TransportOptions {
        ca_file: settings.ca_file.clone(),
        ..TransportOptions::default()
    };
    let identities = IdentityResolver::new(IdentitySettings {
        cloud_env_dir: Some(settings.cloud_env_dir.clone()),
        transport: transport.clone(),
        insecure: insecure.clone(),
        ..IdentitySettings::new(cloud)
    })
    .map_err(|error| SettingsError(format!("cannot set up identities: {error}")))?;
    let reader = VaultReader::new(VaultSettings {
        transport,
        insecure,
        insecure_skip_challenge_resource_check: settings.insecure_skip_challenge_resource_check,
        ..VaultSettings::default()
    })
    .map_err(|error| SettingsError(format!("cannot set up Key Vault access: {error}")))?;
    let cache = ObjectCache::with_observer(
        reader,
        CacheSettings {
            latest_ttl: settings.cache_latest_ttl,
            pinned_ttl: settings.cache_pinned_ttl,
            per_endpoint_concurrency: settings.vault_concurrency,
            ..CacheSettings::default()
        },
        Arc::new(MetricsObserver(metrics)),
    );
    let render = RenderOptions {
        construct_pem_chain: settings.construct_pem_chain,
        separate_cert_and_key_files: settings.separate_cert_and_key_files,
    };
    Ok(AzureBackend::new(identities, cache, render))
}

/// Reports the cache's lookups and vault reads as metrics.
struct MetricsObserver(Arc<Metrics>);

impl CacheObserver for MetricsObserver {
    fn lookup(&self, outcome: Lookup) {
        self.0.record_lookup(outcome.as_str());
    }

    fn vault_call(&self, kind: ObjectKind, result: &'static str, took: Duration) {
        self.0.record_vault_call(kind.as_str(), result, took);
    }
}
