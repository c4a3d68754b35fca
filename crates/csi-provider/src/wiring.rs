//! The production wiring of both backends: the provider's settings become the identity
//! resolver, the reader and the object cache that [`AzureBackend`] or [`AlibabaBackend`] mounts
//! through, with the cache reporting to [`Metrics`]. `main` and the tests both build the backend
//! here, so the tests run the stack production runs.
//!
//! Never reads a secret: the settings hold paths, names, addresses and durations, and the one
//! secret the Alibaba backend may be given (the provider's own AccessKey secret, from the
//! environment) is passed in by `main`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_access::client::{InsecureOverrides, ResolveOverride, TransportOptions};
use azure_access::cloud::{Cloud, CloudName};
use secrecy::SecretString;

use crate::alibaba::cache::Reader;
use crate::alibaba::client::{AlibabaClient, ClientSettings, ECS_METADATA_ORIGIN};
use crate::alibaba::identity::{
    DEFAULT_OIDC_TOKEN_FILE, DEFAULT_SESSION_NAME, IdentityResolver as AlibabaIdentities,
    IdentitySettings as AlibabaIdentitySettings, oidc_provider_arn,
};
use crate::alibaba::kube::{IN_CLUSTER_TOKEN_FILE, KubeSettings, KubernetesServiceAccounts};
use crate::alibaba::mount::AlibabaBackend;
use crate::alibaba::spec::{ObjectType, RoleArn, SpecSettings};

use crate::azure::cache::{CacheObserver, CacheSettings, Lookup, ObjectCache};
use crate::azure::content::RenderOptions;
use crate::azure::identity::{IdentityResolver, IdentitySettings};
use crate::azure::mount::AzureBackend;
use crate::azure::spec::ObjectKind;
use crate::azure::vault::{VaultReader, VaultSettings};
use crate::metrics::Metrics;
use crate::service::Backend;

/// Which secret store a provider process serves, and under which provider name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Azure Key Vault, provider `azure`.
    Azure,
    /// Alibaba Cloud KMS Secrets Manager and OOS secret parameters, provider `alibabacloud`.
    Alibabacloud,
}

impl Provider {
    /// The name SecretProviderClasses give in `spec.provider`, and the socket's base name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Azure => "azure",
            Self::Alibabacloud => "alibabacloud",
        }
    }

    /// `azure` or `alibabacloud`.
    pub fn parse(text: &str) -> Result<Self, SettingsError> {
        match text {
            "azure" => Ok(Self::Azure),
            "alibabacloud" => Ok(Self::Alibabacloud),
            other => Err(SettingsError(format!(
                "--provider {other:?} is not a provider kube-kms serves: use azure or alibabacloud"
            ))),
        }
    }
}

/// The provider's settings, from its flags: the Azure backend's, and those both backends share
/// (cache TTLs, `--ca-file`, `--insecure-resolve`).
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
    /// `--vault-concurrency`: concurrent reads per vault (Azure).
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

/// The Alibaba backend's settings, from the provider's flags and the environment variables
/// Alibaba's provider reads (`ALICLOUD_*`, `ACCESS_KEY_ID`).
#[derive(Clone)]
pub struct AlibabaSettings {
    /// `--region`: the region of classes that set none.
    pub region: String,
    /// `--max-concurrent-kms-secret-pulls`: concurrent reads per KMS endpoint.
    pub kms_concurrency: usize,
    /// `--max-concurrent-oos-secret-pulls`: concurrent reads per OOS endpoint.
    pub oos_concurrency: usize,
    /// `--sts-endpoint`.
    pub sts_endpoint: String,
    /// `--kms-endpoint-suffix`: DNS suffixes a class's `kmsEndpoint` may name besides
    /// `aliyuncs.com`.
    pub kms_endpoint_suffixes: Vec<String>,
    /// `ALICLOUD_ROLE_ARN`.
    pub role_arn: Option<String>,
    /// `ALICLOUD_OIDC_PROVIDER_ARN`.
    pub oidc_provider_arn: Option<String>,
    /// `ALICLOUD_ACCOUNT_ID` (with the cluster id, builds the OIDC provider ARN).
    pub account_id: Option<String>,
    /// `ALICLOUD_CLUSTER_ID`.
    pub cluster_id: Option<String>,
    /// `ALICLOUD_OIDC_TOKEN_FILE`.
    pub oidc_token_file: PathBuf,
    /// `ALICLOUD_ROLE_SESSION_NAME`.
    pub role_session_name: String,
    /// `ALICLOUD_ROLE_SESSION_EXPIRATION`.
    pub role_session_expiration: Duration,
    /// `ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `SECRET_ACCESS_KEY` (read by `main` from the environment only, never a flag).
    pub access_key_secret: Option<SecretString>,
    /// `--ecs-ram-role`: whether the ECS instance's RAM role is lent to pods.
    pub ecs_ram_role: bool,
    /// `--insecure-ecs-metadata-endpoint`: the ECS metadata service's base URL, for tests and
    /// emulators only.
    pub insecure_ecs_metadata_endpoint: Option<String>,
    /// `--kube-api-url`: where ServiceAccounts' `ack.alibabacloud.com/role-arn` annotations are
    /// read; `None`: not read (a pod's role then comes from `podServiceAccountRoleArn` only).
    pub kube_api_url: Option<String>,
    /// `--kube-token-file`: the provider's own service-account token, for the Kubernetes API.
    pub kube_token_file: PathBuf,
    /// `--kube-ca-file`: the cluster's CA, when that file exists.
    pub kube_ca_file: Option<PathBuf>,
}

impl Default for AlibabaSettings {
    /// The provider's flags' defaults, with no environment.
    fn default() -> Self {
        Self {
            region: "cn-hangzhou".to_owned(),
            kms_concurrency: 10,
            oos_concurrency: 10,
            sts_endpoint: "sts.aliyuncs.com".to_owned(),
            kms_endpoint_suffixes: Vec::new(),
            role_arn: None,
            oidc_provider_arn: None,
            account_id: None,
            cluster_id: None,
            oidc_token_file: PathBuf::from(DEFAULT_OIDC_TOKEN_FILE),
            role_session_name: DEFAULT_SESSION_NAME.to_owned(),
            role_session_expiration: Duration::from_secs(3600),
            access_key_id: None,
            access_key_secret: None,
            ecs_ram_role: true,
            insecure_ecs_metadata_endpoint: None,
            kube_api_url: None,
            kube_token_file: PathBuf::from(IN_CLUSTER_TOKEN_FILE),
            kube_ca_file: None,
        }
    }
}

impl std::fmt::Debug for AlibabaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlibabaSettings")
            .field("region", &self.region)
            .field("kms_concurrency", &self.kms_concurrency)
            .field("oos_concurrency", &self.oos_concurrency)
            .field("sts_endpoint", &self.sts_endpoint)
            .field("kms_endpoint_suffixes", &self.kms_endpoint_suffixes)
            .field("role_arn", &self.role_arn)
            .field("oidc_provider_arn", &self.oidc_provider_arn)
            .field("oidc_token_file", &self.oidc_token_file)
            .field("role_session_name", &self.role_session_name)
            .field("role_session_expiration", &self.role_session_expiration)
            .field("access_key_id", &self.access_key_id.is_some())
            .field("access_key_secret", &self.access_key_secret.is_some())
            .field("ecs_ram_role", &self.ecs_ram_role)
            .field("kube_api_url", &self.kube_api_url)
            .field("kube_token_file", &self.kube_token_file)
            .field("kube_ca_file", &self.kube_ca_file)
            .finish_non_exhaustive()
    }
}

/// The `--insecure-resolve` overrides.
fn resolve_overrides(settings: &Settings) -> Result<Vec<ResolveOverride>, SettingsError> {
    settings
        .insecure_resolve
        .iter()
        .map(|entry| {
            ResolveOverride::parse(entry)
                .map_err(|error| SettingsError(format!("--insecure-resolve: {error}")))
        })
        .collect()
}

/// The backend `provider` names, built from the settings.
pub fn backend(
    provider: Provider,
    settings: &Settings,
    alibaba: &AlibabaSettings,
    metrics: Arc<Metrics>,
) -> Result<Backend, SettingsError> {
    Ok(match provider {
        Provider::Azure => Backend::Azure(Arc::new(azure_backend(settings, metrics)?)),
        Provider::Alibabacloud => {
            Backend::Alibaba(Arc::new(alibaba_backend(settings, alibaba, metrics)?))
        }
    })
}

/// Builds the Alibaba backend from the shared `settings` and `alibaba`'s, reporting cache
/// lookups and reads to `metrics`. No remote call.
pub fn alibaba_backend(
    settings: &Settings,
    alibaba: &AlibabaSettings,
    metrics: Arc<Metrics>,
) -> Result<AlibabaBackend, SettingsError> {
    let nonempty = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let role_arn = nonempty(&alibaba.role_arn)
        .map(|arn| RoleArn::parse(&arn))
        .transpose()
        .map_err(|reason| SettingsError(format!("ALICLOUD_ROLE_ARN: {reason}")))?;
    let spec = SpecSettings {
        default_region: alibaba.region.trim().to_ascii_lowercase(),
        endpoint_suffixes: alibaba
            .kms_endpoint_suffixes
            .iter()
            .map(|suffix| suffix.trim().trim_matches('.').to_ascii_lowercase())
            .collect(),
    };
    // The default region must make a valid class on its own.
    let probe = std::collections::BTreeMap::from([(
        "objects".to_owned(),
        "- objectName: probe".to_owned(),
    )]);
    crate::alibaba::spec::AlibabaMountSpec::from_parameters(&probe, &spec)
        .map_err(|error| SettingsError(format!("--region {:?}: {error}", alibaba.region)))?;
    if let Some(bad) = spec.endpoint_suffixes.iter().find(|suffix| {
        suffix.split('.').count() < 2
            || !suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
    }) {
        return Err(SettingsError(format!(
            "--kms-endpoint-suffix {bad:?} is not a DNS suffix of at least two labels"
        )));
    }
    let client = AlibabaClient::new(ClientSettings {
        transport: TransportOptions {
            ca_file: settings.ca_file.clone(),
            ..TransportOptions::default()
        },
        insecure: InsecureOverrides {
            resolve: resolve_overrides(settings)?,
            imds_endpoint: None,
        },
        sts_endpoint: alibaba.sts_endpoint.trim().to_owned(),
        ecs_metadata_endpoint: alibaba
            .insecure_ecs_metadata_endpoint
            .clone()
            .unwrap_or_else(|| ECS_METADATA_ORIGIN.to_owned()),
        ..ClientSettings::default()
    })
    .map_err(|error| SettingsError(format!("cannot set up Alibaba Cloud access: {error}")))?;
    let client = Arc::new(client);
    let service_accounts = match &alibaba.kube_api_url {
        Some(url) => {
            let reader = KubernetesServiceAccounts::new(KubeSettings {
                api_url: url.clone(),
                token_file: alibaba.kube_token_file.clone(),
                ca_file: alibaba.kube_ca_file.clone(),
                ttl: Duration::from_secs(30),
            })
            .map_err(|error| SettingsError(format!("--kube-api-url: {error}")))?;
            Some(Arc::new(reader) as Arc<dyn crate::alibaba::identity::ServiceAccountRoles>)
        }
        None => None,
    };
    let identities = AlibabaIdentities::new(
        AlibabaIdentitySettings {
            role_arn,
            oidc_provider_arn: oidc_provider_arn(
                alibaba.oidc_provider_arn.as_deref(),
                alibaba.account_id.as_deref(),
                alibaba.cluster_id.as_deref(),
            ),
            oidc_token_file: alibaba.oidc_token_file.clone(),
            access_key_id: nonempty(&alibaba.access_key_id),
            access_key_secret: alibaba.access_key_secret.clone(),
            role_session_name: alibaba.role_session_name.clone(),
            role_session_duration: alibaba.role_session_expiration,
            allow_ecs_ram_role: alibaba.ecs_ram_role,
            service_accounts,
            ..AlibabaIdentitySettings::default()
        },
        Arc::clone(&client),
    );
    let cache = crate::cache::Cache::new(
        Reader::new(client, alibaba.kms_concurrency, alibaba.oos_concurrency),
        CacheSettings {
            latest_ttl: settings.cache_latest_ttl,
            pinned_ttl: settings.cache_pinned_ttl,
            ..CacheSettings::default()
        },
        Some(Arc::new(MetricsObserver(metrics))),
    );
    Ok(AlibabaBackend::new(spec, identities, cache))
}

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
    let insecure = InsecureOverrides {
        resolve: resolve_overrides(settings)?,
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

impl crate::cache::CacheObserver<ObjectType> for MetricsObserver {
    fn lookup(&self, outcome: Lookup) {
        self.0.record_lookup(outcome.as_str());
    }

    fn remote_call(&self, kind: ObjectType, result: &'static str, took: Duration) {
        self.0.record_vault_call(kind.as_str(), result, took);
    }
}
