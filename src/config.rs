//! One validated configuration from three sources, with one precedence:
//! command-line flag > environment variable > config file (YAML) > built-in default.
//!
//! Raw values from every source are strings until [`Config::resolve`] checks them all in one
//! place, so every bad value is refused at start with the setting's name (as YAML key, flag and
//! environment variable) and what is allowed. Environment variable names appear only in this
//! module. No setting takes a secret: secrets come from files named here, never from the
//! command line.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use azure_access::auth::{AuthMode, AuthSettings, ManagedId, SecretSource};
use azure_access::cloud::CloudName;
use clap::Args;
use serde::Deserialize;

use crate::envelope::kek::RotationPolicy;
use crate::provider::azure::client::WrapAlgorithm;
use crate::provider::azure::key_id::{KeyRef, is_valid_version, parse_vault_url};
use crate::provider::azure::{AzureConfig, DecryptOnlyKey, KeyVersionChoice};
use crate::provider::guard::GuardPolicy;
use crate::provider::pkcs11::{PinSource, Pkcs11Config, TokenSelector, is_valid_key_label};

/// Longest socket path the kernel accepts (`sun_path` is 108 bytes including the NUL).
const MAX_SOCKET_PATH_LEN: usize = 107;

/// Configuration flags shared by `serve` and `keys`. Every flag can also be given as an
/// environment variable or a key in the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// YAML config file. Flags and environment variables override what it says.
    #[arg(long, env = "KUBE_KMS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Unix socket kube-apiserver connects to [default: $XDG_RUNTIME_DIR/kube-kms/kms.sock, or
    /// /tmp/kube-kms-$UID/kms.sock].
    #[arg(long, env = "KUBE_KMS_SOCKET", value_name = "PATH")]
    pub socket: Option<String>,
    /// Permission bits of the socket: 0600 (owner only) or 0660 (owner and group) [default: 0600].
    #[arg(long, env = "KUBE_KMS_SOCKET_MODE", value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// Group given the socket (a name from /etc/group or a numeric gid), so that kube-apiserver
    /// can connect as a member of it; implies socket mode 0660 [default: none].
    #[arg(long, env = "KUBE_KMS_SOCKET_GROUP", value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Refuse to start as root (true or false; the flag alone means true) [default: false, which
    /// runs as root with a loud warning].
    #[arg(
        long,
        env = "KUBE_KMS_REFUSE_ROOT",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub refuse_root: Option<String>,
    /// Directory for kube-kms's own state [default: $XDG_STATE_HOME/kube-kms, or
    /// ~/.local/state/kube-kms].
    #[arg(long, env = "KUBE_KMS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<String>,
    /// Key provider: `local` (a key ring on this host; for development and tests only),
    /// `pkcs11` (a key on a PKCS#11 token) or `azure` (Azure Key Vault or Managed HSM)
    /// [default: local].
    #[arg(long, env = "KUBE_KMS_PROVIDER", value_name = "KIND")]
    pub provider: Option<String>,
    /// Key ring directory of the local provider [default: <state-dir>/local-keys].
    #[arg(long, env = "KUBE_KMS_LOCAL_KEY_DIR", value_name = "DIR")]
    pub local_key_dir: Option<String>,
    /// PKCS#11 module (shared library) of the pkcs11 provider, an absolute path.
    #[arg(long, env = "KUBE_KMS_PKCS11_MODULE", value_name = "PATH")]
    pub pkcs11_module: Option<String>,
    /// Label of the PKCS#11 token (or --pkcs11-slot).
    #[arg(long, env = "KUBE_KMS_PKCS11_TOKEN_LABEL", value_name = "LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// Slot id of the PKCS#11 token (or --pkcs11-token-label).
    #[arg(long, env = "KUBE_KMS_PKCS11_SLOT", value_name = "ID")]
    pub pkcs11_slot: Option<String>,
    /// File holding the token's user PIN (or --pkcs11-pin-env). No flag takes the PIN itself.
    #[arg(long, env = "KUBE_KMS_PKCS11_PIN_FILE", value_name = "FILE")]
    pub pkcs11_pin_file: Option<String>,
    /// Name of an environment variable holding the token's user PIN, e.g. KUBE_KMS_PKCS11_PIN.
    #[arg(long, env = "KUBE_KMS_PKCS11_PIN_ENV", value_name = "NAME")]
    pub pkcs11_pin_env: Option<String>,
    /// Label of the PKCS#11 key that wraps new KEKs.
    #[arg(long, env = "KUBE_KMS_PKCS11_KEY_LABEL", value_name = "LABEL")]
    pub pkcs11_key_label: Option<String>,
    /// Labels of earlier PKCS#11 keys, kept to decrypt only, comma-separated.
    #[arg(
        long,
        env = "KUBE_KMS_PKCS11_DECRYPT_ONLY_KEY_LABELS",
        value_name = "LABEL,..."
    )]
    pub pkcs11_decrypt_only_key_labels: Option<String>,
    /// Key Vault or Managed HSM URL, e.g. https://myvault.vault.azure.net/.
    #[arg(long, env = "KUBE_KMS_AZURE_VAULT_URL", value_name = "URL")]
    pub azure_vault_url: Option<String>,
    /// Name of the key that wraps new KEKs.
    #[arg(long, env = "KUBE_KMS_AZURE_KEY_NAME", value_name = "NAME")]
    pub azure_key_name: Option<String>,
    /// `latest` (follow new versions) or a 32-hex version to pin [default: latest].
    #[arg(long, env = "KUBE_KMS_AZURE_KEY_VERSION", value_name = "VERSION")]
    pub azure_key_version: Option<String>,
    /// Keys kept to decrypt only, comma-separated: https://{vault}/keys/{name}[/{version}].
    #[arg(long, env = "KUBE_KMS_AZURE_DECRYPT_ONLY_KEYS", value_name = "URL,...")]
    pub azure_decrypt_only_keys: Option<String>,
    /// Wrapping algorithm for Managed HSM oct-HSM keys: A256KW or CKM_AES_KEY_WRAP_PAD (RSA keys
    /// always use RSA-OAEP-256) [default: A256KW].
    #[arg(long, env = "KUBE_KMS_AZURE_OCT_WRAP_ALGORITHM", value_name = "ALG")]
    pub azure_oct_wrap_algorithm: Option<String>,
    /// Authentication: auto, workload-identity, managed-identity, client-secret,
    /// client-certificate, azure-cli or azure-json [default: auto].
    #[arg(long, env = "KUBE_KMS_AZURE_AUTH", value_name = "MODE")]
    pub azure_auth: Option<String>,
    /// Entra ID tenant (directory) id [default: AZURE_TENANT_ID].
    #[arg(long, env = "KUBE_KMS_AZURE_TENANT_ID", value_name = "ID")]
    pub azure_tenant_id: Option<String>,
    /// Application (client) id [default: AZURE_CLIENT_ID].
    #[arg(long, env = "KUBE_KMS_AZURE_CLIENT_ID", value_name = "GUID")]
    pub azure_client_id: Option<String>,
    /// A user-assigned managed identity, by client id.
    #[arg(
        long,
        env = "KUBE_KMS_AZURE_MANAGED_IDENTITY_CLIENT_ID",
        value_name = "GUID"
    )]
    pub azure_managed_identity_client_id: Option<String>,
    /// A user-assigned managed identity, by object (principal) id.
    #[arg(
        long,
        env = "KUBE_KMS_AZURE_MANAGED_IDENTITY_OBJECT_ID",
        value_name = "GUID"
    )]
    pub azure_managed_identity_object_id: Option<String>,
    /// A user-assigned managed identity, by ARM resource id.
    #[arg(
        long,
        env = "KUBE_KMS_AZURE_MANAGED_IDENTITY_RESOURCE_ID",
        value_name = "ID"
    )]
    pub azure_managed_identity_resource_id: Option<String>,
    /// Workload identity's projected token file [default: AZURE_FEDERATED_TOKEN_FILE].
    #[arg(long, env = "KUBE_KMS_AZURE_FEDERATED_TOKEN_FILE", value_name = "FILE")]
    pub azure_federated_token_file: Option<String>,
    /// File holding the client secret. No flag takes the secret itself.
    #[arg(long, env = "KUBE_KMS_AZURE_CLIENT_SECRET_FILE", value_name = "FILE")]
    pub azure_client_secret_file: Option<String>,
    /// Name of an environment variable holding the client secret [default: AZURE_CLIENT_SECRET].
    #[arg(long, env = "KUBE_KMS_AZURE_CLIENT_SECRET_ENV", value_name = "NAME")]
    pub azure_client_secret_env: Option<String>,
    /// Client certificate: PEM (certificate and RSA private key) or PFX.
    #[arg(
        long,
        env = "KUBE_KMS_AZURE_CLIENT_CERTIFICATE_FILE",
        value_name = "FILE"
    )]
    pub azure_client_certificate_file: Option<String>,
    /// File holding the client certificate's password, if it has one.
    #[arg(
        long,
        env = "KUBE_KMS_AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub azure_client_certificate_password_file: Option<String>,
    /// AKS's cloud-provider file [default: /etc/kubernetes/azure.json].
    #[arg(long, env = "KUBE_KMS_AZURE_JSON", value_name = "FILE")]
    pub azure_json: Option<String>,
    /// Cloud: public, china, usgovernment or custom [default: azure.json's, else public].
    #[arg(long, env = "KUBE_KMS_AZURE_CLOUD", value_name = "CLOUD")]
    pub azure_cloud: Option<String>,
    /// Entra ID authority, overriding the cloud's, e.g. https://login.microsoftonline.com.
    #[arg(long, env = "KUBE_KMS_AZURE_AUTHORITY_HOST", value_name = "URL")]
    pub azure_authority_host: Option<String>,
    /// Key Vault DNS suffix of a custom cloud, e.g. vault.azure.net.
    #[arg(long, env = "KUBE_KMS_AZURE_VAULT_SUFFIX", value_name = "DNS")]
    pub azure_vault_suffix: Option<String>,
    /// Managed HSM DNS suffix of a custom cloud, e.g. managedhsm.azure.net.
    #[arg(long, env = "KUBE_KMS_AZURE_MANAGED_HSM_SUFFIX", value_name = "DNS")]
    pub azure_managed_hsm_suffix: Option<String>,
    /// Extra CA certificates (PEM) trusted for Key Vault and Entra ID, besides the system's.
    #[arg(long, env = "KUBE_KMS_AZURE_CA_FILE", value_name = "FILE")]
    pub azure_ca_file: Option<String>,
    /// Time one Key Vault operation may take, retries included [default: 2s].
    #[arg(long, env = "KUBE_KMS_AZURE_CALL_DEADLINE", value_name = "DURATION")]
    pub azure_call_deadline: Option<String>,
    /// Time a TCP and TLS connection may take [default: 1s].
    #[arg(long, env = "KUBE_KMS_AZURE_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub azure_connect_timeout: Option<String>,
    /// Time one HTTP attempt may take [default: 2s].
    #[arg(long, env = "KUBE_KMS_AZURE_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub azure_request_timeout: Option<String>,
    /// Accept an authentication challenge whose resource is not a parent domain of the vault
    /// (emulators, private DNS names); true or false [default: false].
    #[arg(
        long,
        env = "KUBE_KMS_AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK",
        value_name = "BOOL"
    )]
    pub azure_insecure_skip_challenge_resource_check: Option<String>,
    /// How often the remote key is read for a new version, e.g. 30s, 1m [default: 1m].
    #[arg(long, env = "KUBE_KMS_REFRESH_INTERVAL", value_name = "DURATION")]
    pub refresh_interval: Option<String>,
    /// Encryptions after which a local KEK is replaced [default: 2097152].
    #[arg(long, env = "KUBE_KMS_KEK_MAX_ENCRYPTIONS", value_name = "N")]
    pub kek_max_encryptions: Option<String>,
    /// Age after which a local KEK is replaced, e.g. 24h, 7d [default: 7d].
    #[arg(long, env = "KUBE_KMS_KEK_MAX_AGE", value_name = "DURATION")]
    pub kek_max_age: Option<String>,
    /// Unwrapped KEKs kept in memory [default: 1000].
    #[arg(long, env = "KUBE_KMS_CACHE_SIZE", value_name = "N")]
    pub cache_size: Option<String>,
    /// The longest one call to the key service may take, retries included; keep it inside
    /// kube-apiserver's 3 s call timeout [default: 2500ms].
    #[arg(long, env = "KUBE_KMS_REMOTE_TIMEOUT", value_name = "DURATION")]
    pub remote_timeout: Option<String>,
    /// Unwraps of distinct KEKs sent to the key service at once [default: 8].
    #[arg(long, env = "KUBE_KMS_MAX_CONCURRENT_UNWRAPS", value_name = "N")]
    pub max_concurrent_unwraps: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "KUBE_KMS_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log level: error, warn, info, debug or trace [default: info].
    #[arg(long, env = "KUBE_KMS_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Address of /healthz, /readyz and /metrics: host:port, or "off" [default: 127.0.0.1:8790].
    #[arg(long, env = "KUBE_KMS_HEALTH_ADDRESS", value_name = "HOST:PORT")]
    pub health_address: Option<String>,
}

/// The config file, as written. Unknown keys are refused so a typo is not silently ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket: Option<Scalar>,
    socket_mode: Option<Scalar>,
    socket_group: Option<Scalar>,
    refuse_root: Option<Scalar>,
    state_dir: Option<Scalar>,
    provider: Option<Scalar>,
    local: Option<LocalFileConfig>,
    pkcs11: Option<Pkcs11FileConfig>,
    azure: Option<AzureFileConfig>,
    refresh_interval: Option<Scalar>,
    kek_max_encryptions: Option<Scalar>,
    kek_max_age: Option<Scalar>,
    cache_size: Option<Scalar>,
    remote_timeout: Option<Scalar>,
    max_concurrent_unwraps: Option<Scalar>,
    log_format: Option<Scalar>,
    log_level: Option<Scalar>,
    health_address: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalFileConfig {
    key_dir: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pkcs11FileConfig {
    module: Option<Scalar>,
    token_label: Option<Scalar>,
    slot: Option<Scalar>,
    pin_file: Option<Scalar>,
    pin_env: Option<Scalar>,
    key_label: Option<Scalar>,
    decrypt_only_key_labels: Option<ScalarList>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AzureFileConfig {
    vault_url: Option<Scalar>,
    key_name: Option<Scalar>,
    key_version: Option<Scalar>,
    decrypt_only_keys: Option<ScalarList>,
    oct_wrap_algorithm: Option<Scalar>,
    auth: Option<Scalar>,
    tenant_id: Option<Scalar>,
    client_id: Option<Scalar>,
    managed_identity_client_id: Option<Scalar>,
    managed_identity_object_id: Option<Scalar>,
    managed_identity_resource_id: Option<Scalar>,
    federated_token_file: Option<Scalar>,
    client_secret_file: Option<Scalar>,
    client_secret_env: Option<Scalar>,
    client_certificate_file: Option<Scalar>,
    client_certificate_password_file: Option<Scalar>,
    azure_json: Option<Scalar>,
    cloud: Option<Scalar>,
    authority_host: Option<Scalar>,
    vault_suffix: Option<Scalar>,
    managed_hsm_suffix: Option<Scalar>,
    ca_file: Option<Scalar>,
    call_deadline: Option<Scalar>,
    connect_timeout: Option<Scalar>,
    request_timeout: Option<Scalar>,
    insecure_skip_challenge_resource_check: Option<Scalar>,
}

/// A YAML list of scalars, or one string of comma-separated items (as flags and environment
/// variables give lists), kept as one comma-separated text.
#[derive(Debug, Clone)]
struct ScalarList(String);

impl<'de> Deserialize<'de> for ScalarList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ScalarList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of strings, or one comma-separated string")
            }
            fn visit_str<E>(self, value: &str) -> Result<ScalarList, E> {
                Ok(ScalarList(value.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ScalarList, A::Error> {
                let mut items = Vec::new();
                while let Some(Scalar(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(ScalarList(items.join(",")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A YAML scalar of any type, kept as its text so that one validator checks every source.
#[derive(Debug, Clone)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or number")
            }
            fn visit_str<E>(self, value: &str) -> Result<Scalar, E> {
                Ok(Scalar(value.to_owned()))
            }
            fn visit_i64<E>(self, value: i64) -> Result<Scalar, E> {
                Ok(Scalar(value.to_string()))
            }
            fn visit_u64<E>(self, value: u64) -> Result<Scalar, E> {
                Ok(Scalar(value.to_string()))
            }
            fn visit_f64<E>(self, value: f64) -> Result<Scalar, E> {
                Ok(Scalar(value.to_string()))
            }
            fn visit_bool<E>(self, value: bool) -> Result<Scalar, E> {
                Ok(Scalar(value.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Which key provider wraps local KEKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    /// The local key ring: for development and tests only.
    Local {
        /// The key ring directory.
        key_dir: PathBuf,
    },
    /// A key on a PKCS#11 token.
    Pkcs11(Pkcs11Config),
    /// A key in Azure Key Vault or Managed HSM.
    Azure(Box<AzureConfig>),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration. Built once at start-up; never changed afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The socket kube-apiserver connects to.
    pub socket: PathBuf,
    /// The socket's permission bits.
    pub socket_mode: u32,
    /// The group id given the socket (and a directory kube-kms creates for it), if any.
    pub socket_group: Option<u32>,
    /// Whether to refuse to start as root.
    pub refuse_root: bool,
    /// kube-kms's state directory.
    pub state_dir: PathBuf,
    /// The key provider.
    pub provider: ProviderConfig,
    /// How often the provider is asked for its current key.
    pub refresh_interval: Duration,
    /// When local KEKs are replaced.
    pub rotation: RotationPolicy,
    /// How many unwrapped KEKs are kept.
    pub cache_size: NonZeroUsize,
    /// Deadlines, unwrap concurrency and the circuit breaker around the key service.
    pub guard: GuardPolicy,
    /// Log format.
    pub log_format: LogFormat,
    /// Log level (a tracing level name).
    pub log_level: String,
    /// Where /healthz, /readyz and /metrics listen; `None` when turned off.
    pub health_address: Option<std::net::SocketAddr>,
}

/// A configuration value that cannot be used, or a config file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong (the parser names the key and line).
        reason: String,
    },
    /// A setting has a value that is not allowed.
    Invalid {
        /// The setting, as YAML key, flag and environment variable.
        setting: String,
        /// The value given (never a secret: no setting holds one).
        value: String,
        /// What is allowed.
        expected: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { path, reason } => {
                write!(f, "config file {}: {reason}", path.display())
            }
            Self::Invalid {
                setting,
                value,
                expected,
            } => {
                write!(
                    f,
                    "{setting}: {value:?} is not allowed; expected {expected}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A setting's three names, for error messages.
struct Setting {
    key: &'static str,
    flag: &'static str,
    env: &'static str,
}

impl Setting {
    /// The setting's names, as error messages and warnings show them.
    fn names(&self) -> String {
        format!("{} (--{} / {})", self.key, self.flag, self.env)
    }

    fn invalid(&self, value: &str, expected: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            setting: self.names(),
            value: value.to_owned(),
            expected: expected.into(),
        }
    }
}

macro_rules! setting {
    ($key:literal, $flag:literal, $env:literal) => {
        Setting {
            key: $key,
            flag: $flag,
            env: $env,
        }
    };
}

const SOCKET: Setting = setting!("socket", "socket", "KUBE_KMS_SOCKET");
const SOCKET_MODE: Setting = setting!("socket_mode", "socket-mode", "KUBE_KMS_SOCKET_MODE");
const SOCKET_GROUP: Setting = setting!("socket_group", "socket-group", "KUBE_KMS_SOCKET_GROUP");
const REFUSE_ROOT: Setting = setting!("refuse_root", "refuse-root", "KUBE_KMS_REFUSE_ROOT");
/// The names of the `refuse_root` setting as messages show them, for
/// [`grpc_uds::hardening::check_root`] (a test holds it equal to the setting's own names).
pub const REFUSE_ROOT_NAMES: &str = "refuse_root (--refuse-root / KUBE_KMS_REFUSE_ROOT)";
const STATE_DIR: Setting = setting!("state_dir", "state-dir", "KUBE_KMS_STATE_DIR");
const PROVIDER: Setting = setting!("provider", "provider", "KUBE_KMS_PROVIDER");
const LOCAL_KEY_DIR: Setting = setting!("local.key_dir", "local-key-dir", "KUBE_KMS_LOCAL_KEY_DIR");
const PKCS11_MODULE: Setting = setting!("pkcs11.module", "pkcs11-module", "KUBE_KMS_PKCS11_MODULE");
const PKCS11_TOKEN_LABEL: Setting = setting!(
    "pkcs11.token_label",
    "pkcs11-token-label",
    "KUBE_KMS_PKCS11_TOKEN_LABEL"
);
const PKCS11_SLOT: Setting = setting!("pkcs11.slot", "pkcs11-slot", "KUBE_KMS_PKCS11_SLOT");
const PKCS11_PIN_FILE: Setting = setting!(
    "pkcs11.pin_file",
    "pkcs11-pin-file",
    "KUBE_KMS_PKCS11_PIN_FILE"
);
const PKCS11_PIN_ENV: Setting = setting!(
    "pkcs11.pin_env",
    "pkcs11-pin-env",
    "KUBE_KMS_PKCS11_PIN_ENV"
);
const PKCS11_KEY_LABEL: Setting = setting!(
    "pkcs11.key_label",
    "pkcs11-key-label",
    "KUBE_KMS_PKCS11_KEY_LABEL"
);
const PKCS11_DECRYPT_ONLY_KEY_LABELS: Setting = setting!(
    "pkcs11.decrypt_only_key_labels",
    "pkcs11-decrypt-only-key-labels",
    "KUBE_KMS_PKCS11_DECRYPT_ONLY_KEY_LABELS"
);
const AZURE_VAULT_URL: Setting = setting!(
    "azure.vault_url",
    "azure-vault-url",
    "KUBE_KMS_AZURE_VAULT_URL"
);
const AZURE_KEY_NAME: Setting = setting!(
    "azure.key_name",
    "azure-key-name",
    "KUBE_KMS_AZURE_KEY_NAME"
);
const AZURE_KEY_VERSION: Setting = setting!(
    "azure.key_version",
    "azure-key-version",
    "KUBE_KMS_AZURE_KEY_VERSION"
);
const AZURE_DECRYPT_ONLY_KEYS: Setting = setting!(
    "azure.decrypt_only_keys",
    "azure-decrypt-only-keys",
    "KUBE_KMS_AZURE_DECRYPT_ONLY_KEYS"
);
const AZURE_OCT_WRAP_ALGORITHM: Setting = setting!(
    "azure.oct_wrap_algorithm",
    "azure-oct-wrap-algorithm",
    "KUBE_KMS_AZURE_OCT_WRAP_ALGORITHM"
);
const AZURE_AUTH: Setting = setting!("azure.auth", "azure-auth", "KUBE_KMS_AZURE_AUTH");
const AZURE_TENANT_ID: Setting = setting!(
    "azure.tenant_id",
    "azure-tenant-id",
    "KUBE_KMS_AZURE_TENANT_ID"
);
const AZURE_CLIENT_ID: Setting = setting!(
    "azure.client_id",
    "azure-client-id",
    "KUBE_KMS_AZURE_CLIENT_ID"
);
const AZURE_MANAGED_IDENTITY_CLIENT_ID: Setting = setting!(
    "azure.managed_identity_client_id",
    "azure-managed-identity-client-id",
    "KUBE_KMS_AZURE_MANAGED_IDENTITY_CLIENT_ID"
);
const AZURE_MANAGED_IDENTITY_OBJECT_ID: Setting = setting!(
    "azure.managed_identity_object_id",
    "azure-managed-identity-object-id",
    "KUBE_KMS_AZURE_MANAGED_IDENTITY_OBJECT_ID"
);
const AZURE_MANAGED_IDENTITY_RESOURCE_ID: Setting = setting!(
    "azure.managed_identity_resource_id",
    "azure-managed-identity-resource-id",
    "KUBE_KMS_AZURE_MANAGED_IDENTITY_RESOURCE_ID"
);
const AZURE_FEDERATED_TOKEN_FILE: Setting = setting!(
    "azure.federated_token_file",
    "azure-federated-token-file",
    "KUBE_KMS_AZURE_FEDERATED_TOKEN_FILE"
);
const AZURE_CLIENT_SECRET_FILE: Setting = setting!(
    "azure.client_secret_file",
    "azure-client-secret-file",
    "KUBE_KMS_AZURE_CLIENT_SECRET_FILE"
);
const AZURE_CLIENT_SECRET_ENV: Setting = setting!(
    "azure.client_secret_env",
    "azure-client-secret-env",
    "KUBE_KMS_AZURE_CLIENT_SECRET_ENV"
);
const AZURE_CLIENT_CERTIFICATE_FILE: Setting = setting!(
    "azure.client_certificate_file",
    "azure-client-certificate-file",
    "KUBE_KMS_AZURE_CLIENT_CERTIFICATE_FILE"
);
const AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE: Setting = setting!(
    "azure.client_certificate_password_file",
    "azure-client-certificate-password-file",
    "KUBE_KMS_AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE"
);
const AZURE_JSON: Setting = setting!("azure.azure_json", "azure-json", "KUBE_KMS_AZURE_JSON");
const AZURE_CLOUD: Setting = setting!("azure.cloud", "azure-cloud", "KUBE_KMS_AZURE_CLOUD");
const AZURE_AUTHORITY_HOST: Setting = setting!(
    "azure.authority_host",
    "azure-authority-host",
    "KUBE_KMS_AZURE_AUTHORITY_HOST"
);
const AZURE_VAULT_SUFFIX: Setting = setting!(
    "azure.vault_suffix",
    "azure-vault-suffix",
    "KUBE_KMS_AZURE_VAULT_SUFFIX"
);
const AZURE_MANAGED_HSM_SUFFIX: Setting = setting!(
    "azure.managed_hsm_suffix",
    "azure-managed-hsm-suffix",
    "KUBE_KMS_AZURE_MANAGED_HSM_SUFFIX"
);
const AZURE_CA_FILE: Setting = setting!("azure.ca_file", "azure-ca-file", "KUBE_KMS_AZURE_CA_FILE");
const AZURE_CALL_DEADLINE: Setting = setting!(
    "azure.call_deadline",
    "azure-call-deadline",
    "KUBE_KMS_AZURE_CALL_DEADLINE"
);
const AZURE_CONNECT_TIMEOUT: Setting = setting!(
    "azure.connect_timeout",
    "azure-connect-timeout",
    "KUBE_KMS_AZURE_CONNECT_TIMEOUT"
);
const AZURE_REQUEST_TIMEOUT: Setting = setting!(
    "azure.request_timeout",
    "azure-request-timeout",
    "KUBE_KMS_AZURE_REQUEST_TIMEOUT"
);
const AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK: Setting = setting!(
    "azure.insecure_skip_challenge_resource_check",
    "azure-insecure-skip-challenge-resource-check",
    "KUBE_KMS_AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK"
);
const REFRESH_INTERVAL: Setting = setting!(
    "refresh_interval",
    "refresh-interval",
    "KUBE_KMS_REFRESH_INTERVAL"
);
const KEK_MAX_ENCRYPTIONS: Setting = setting!(
    "kek_max_encryptions",
    "kek-max-encryptions",
    "KUBE_KMS_KEK_MAX_ENCRYPTIONS"
);
const KEK_MAX_AGE: Setting = setting!("kek_max_age", "kek-max-age", "KUBE_KMS_KEK_MAX_AGE");
const CACHE_SIZE: Setting = setting!("cache_size", "cache-size", "KUBE_KMS_CACHE_SIZE");
const REMOTE_TIMEOUT: Setting = setting!(
    "remote_timeout",
    "remote-timeout",
    "KUBE_KMS_REMOTE_TIMEOUT"
);
const MAX_CONCURRENT_UNWRAPS: Setting = setting!(
    "max_concurrent_unwraps",
    "max-concurrent-unwraps",
    "KUBE_KMS_MAX_CONCURRENT_UNWRAPS"
);
const LOG_FORMAT: Setting = setting!("log_format", "log-format", "KUBE_KMS_LOG_FORMAT");
const LOG_LEVEL: Setting = setting!("log_level", "log-level", "KUBE_KMS_LOG_LEVEL");
const HEALTH_ADDRESS: Setting = setting!(
    "health_address",
    "health-address",
    "KUBE_KMS_HEALTH_ADDRESS"
);

/// Where the operations endpoints listen unless configured: loopback only.
pub const DEFAULT_HEALTH_ADDRESS: &str = "127.0.0.1:8790";

/// The environment a default depends on, read once so tests can supply their own.
#[derive(Debug, Clone, Default)]
pub struct DefaultsEnv {
    /// $XDG_RUNTIME_DIR.
    pub runtime_dir: Option<PathBuf>,
    /// $XDG_STATE_HOME.
    pub state_home: Option<PathBuf>,
    /// $HOME.
    pub home: Option<PathBuf>,
    /// This process's user id.
    pub uid: Option<u32>,
}

impl DefaultsEnv {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        let path = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            runtime_dir: path("XDG_RUNTIME_DIR"),
            state_home: path("XDG_STATE_HOME"),
            home: path("HOME"),
            uid: grpc_uds::socket::current_uid(),
        }
    }

    fn default_state_dir(&self) -> PathBuf {
        match (&self.state_home, &self.home) {
            (Some(state), _) => state.join("kube-kms"),
            (None, Some(home)) => home.join(".local/state/kube-kms"),
            (None, None) => PathBuf::from("kube-kms-state"),
        }
    }

    fn default_socket(&self) -> PathBuf {
        match &self.runtime_dir {
            Some(runtime) => runtime.join("kube-kms/kms.sock"),
            None => {
                let uid = self
                    .uid
                    .map_or_else(|| "unknown".to_owned(), |uid| uid.to_string());
                PathBuf::from(format!("/tmp/kube-kms-{uid}/kms.sock"))
            }
        }
    }
}

impl Config {
    /// Reads the config file named by `args` (if any) and resolves every setting.
    pub fn load(args: &ConfigArgs, env: &DefaultsEnv) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::resolve(args, &file, env)
    }

    /// Parses config file text (used by `load` and by the tests of deploy/ examples).
    pub fn from_yaml(
        yaml: &str,
        args: &ConfigArgs,
        env: &DefaultsEnv,
    ) -> Result<Self, ConfigError> {
        let file = parse_file(yaml, Path::new("<inline>"))?;
        Self::resolve(args, &file, env)
    }

    fn resolve(
        args: &ConfigArgs,
        file: &FileConfig,
        env: &DefaultsEnv,
    ) -> Result<Self, ConfigError> {
        let pick = |flag: &Option<String>, file: &Option<Scalar>| {
            flag.clone()
                .or_else(|| file.as_ref().map(|scalar| scalar.0.clone()))
        };
        let local_key_dir_file = file.local.as_ref().and_then(|local| local.key_dir.clone());

        let state_dir = match pick(&args.state_dir, &file.state_dir) {
            Some(dir) => parse_path(&STATE_DIR, &dir)?,
            None => env.default_state_dir(),
        };
        let socket = match pick(&args.socket, &file.socket) {
            Some(path) => parse_socket_path(&path)?,
            None => env.default_socket(),
        };
        let socket_group = match pick(&args.socket_group, &file.socket_group) {
            Some(group) => Some(parse_socket_group(&group, Path::new(GROUP_FILE))?),
            None => None,
        };
        let socket_mode = match (pick(&args.socket_mode, &file.socket_mode), socket_group) {
            (Some(mode), group) => match parse_socket_mode(&mode)? {
                0o600 if group.is_some() => {
                    return Err(SOCKET_MODE.invalid(
                        &mode,
                        "\"0660\" with socket_group (0600 would shut the group out)",
                    ));
                }
                mode => mode,
            },
            (None, Some(_)) => 0o660,
            (None, None) => 0o600,
        };
        let refuse_root = match pick(&args.refuse_root, &file.refuse_root) {
            Some(value) => parse_bool(&REFUSE_ROOT, &value)?,
            None => false,
        };
        let provider = match pick(&args.provider, &file.provider).as_deref() {
            None | Some("local") => ProviderConfig::Local {
                key_dir: match pick(&args.local_key_dir, &local_key_dir_file) {
                    Some(dir) => parse_path(&LOCAL_KEY_DIR, &dir)?,
                    None => state_dir.join("local-keys"),
                },
            },
            Some("pkcs11") => ProviderConfig::Pkcs11(resolve_pkcs11(
                args,
                &file.pkcs11.clone().unwrap_or_default(),
            )?),
            Some("azure") => ProviderConfig::Azure(Box::new(resolve_azure(
                args,
                &file.azure.clone().unwrap_or_default(),
            )?)),
            Some(other) => {
                return Err(PROVIDER.invalid(other, "\"local\", \"pkcs11\" or \"azure\""));
            }
        };
        let refresh_interval = match pick(&args.refresh_interval, &file.refresh_interval) {
            Some(value) => parse_duration_in(
                &REFRESH_INTERVAL,
                &value,
                Duration::from_millis(10),
                Duration::from_secs(24 * 3600),
            )?,
            None => Duration::from_secs(60),
        };
        let max_encryptions = match pick(&args.kek_max_encryptions, &file.kek_max_encryptions) {
            Some(value) => parse_number_in(
                &KEK_MAX_ENCRYPTIONS,
                &value,
                1,
                RotationPolicy::MAX_ENCRYPTIONS_LIMIT,
            )?,
            None => RotationPolicy::DEFAULT.max_encryptions,
        };
        let max_age = match pick(&args.kek_max_age, &file.kek_max_age) {
            Some(value) => parse_duration_in(
                &KEK_MAX_AGE,
                &value,
                Duration::from_secs(1),
                Duration::from_secs(90 * 24 * 3600),
            )?,
            None => RotationPolicy::DEFAULT.max_age,
        };
        let cache_size = match pick(&args.cache_size, &file.cache_size) {
            Some(value) => parse_number_in(&CACHE_SIZE, &value, 1, 1_000_000)?,
            None => 1000,
        };
        let call_deadline = match pick(&args.remote_timeout, &file.remote_timeout) {
            Some(value) => parse_duration_in(
                &REMOTE_TIMEOUT,
                &value,
                Duration::from_millis(100),
                Duration::from_secs(10),
            )?,
            None => GuardPolicy::DEFAULT.call_deadline,
        };
        let max_concurrent_unwraps =
            match pick(&args.max_concurrent_unwraps, &file.max_concurrent_unwraps) {
                Some(value) => parse_number_in(&MAX_CONCURRENT_UNWRAPS, &value, 1, 256)?,
                None => GuardPolicy::DEFAULT.max_concurrent_unwraps as u64,
            };
        let guard = GuardPolicy {
            call_deadline,
            max_concurrent_unwraps: usize::try_from(max_concurrent_unwraps).unwrap_or(8),
            ..GuardPolicy::DEFAULT
        };
        let log_format = match pick(&args.log_format, &file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(LOG_FORMAT.invalid(other, "\"text\" or \"json\"")),
        };
        let log_level = match pick(&args.log_level, &file.log_level) {
            None => "info".to_owned(),
            Some(level)
                if ["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) =>
            {
                level
            }
            Some(other) => {
                return Err(LOG_LEVEL.invalid(&other, "error, warn, info, debug or trace"));
            }
        };
        let health_address = match pick(&args.health_address, &file.health_address).as_deref() {
            // YAML 1.1 reads an unquoted `off` (or `no`) as the boolean false.
            Some(value) if ["off", "false"].contains(&value.to_ascii_lowercase().as_str()) => None,
            Some(value) => Some(value.parse().map_err(|_| {
                HEALTH_ADDRESS.invalid(
                    value,
                    "an IP address and port such as 127.0.0.1:8790, or \"off\"",
                )
            })?),
            None => DEFAULT_HEALTH_ADDRESS.parse().ok(),
        };
        Ok(Self {
            health_address,
            socket,
            socket_mode,
            socket_group,
            refuse_root,
            state_dir,
            provider,
            refresh_interval,
            rotation: RotationPolicy {
                max_encryptions,
                max_age,
            },
            cache_size: NonZeroUsize::new(usize::try_from(cache_size).unwrap_or(1000))
                .unwrap_or(NonZeroUsize::MIN),
            guard,
            log_format,
            log_level,
        })
    }
}

impl Config {
    /// The settings that weaken security, one sentence each naming the setting, the danger and
    /// the fix; `serve` logs each at warn when it starts. Refused settings are errors in
    /// [`Config::resolve`]; these are allowed because a test rig or a special deployment may
    /// need them. Reads the mode of secret files, never their contents (a file that cannot be
    /// inspected is left to the provider that reads it to report).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(address) = self.health_address
            && !address.ip().is_loopback()
        {
            warnings.push(format!(
                "{}: {address} is not a loopback address, so /healthz, /readyz and /metrics \
                 (key ids, refresh state, request counts) are open to the network; use \
                 127.0.0.1:PORT unless something off this host must scrape them",
                HEALTH_ADDRESS.names()
            ));
        }
        if self.refresh_interval < Duration::from_secs(1) {
            warnings.push(format!(
                "{}: {} reads the key service more than once a second, which costs quota and \
                 invites throttling; a minute is usual",
                REFRESH_INTERVAL.names(),
                format_duration(self.refresh_interval)
            ));
        }
        let mut secret_files = Vec::new();
        match &self.provider {
            ProviderConfig::Local { .. } => {}
            ProviderConfig::Pkcs11(pkcs11) => {
                if let PinSource::File(path) = &pkcs11.pin {
                    secret_files.push((&PKCS11_PIN_FILE, path.as_path()));
                }
            }
            ProviderConfig::Azure(azure) => {
                if azure.insecure_skip_challenge_resource_check {
                    warnings.push(format!(
                        "{} is on: the plugin sends its Entra ID token to whatever resource the \
                         vault's authentication challenge names, so a spoofed vault can obtain \
                         a token for another service; turn it off outside emulators and tests",
                        AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK.names()
                    ));
                }
                if let Some(SecretSource::File(path)) = &azure.auth.client_secret {
                    secret_files.push((&AZURE_CLIENT_SECRET_FILE, path.as_path()));
                }
                if let Some(path) = &azure.auth.client_certificate_file {
                    secret_files.push((&AZURE_CLIENT_CERTIFICATE_FILE, path.as_path()));
                }
                if let Some(SecretSource::File(path)) = &azure.auth.client_certificate_password {
                    secret_files.push((&AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE, path.as_path()));
                }
            }
        }
        for (setting, path) in secret_files {
            use std::os::unix::fs::PermissionsExt;
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let mode = meta.permissions().mode();
            if mode & 0o044 != 0 {
                let who = if mode & 0o004 != 0 {
                    "every user"
                } else {
                    "its group"
                };
                warnings.push(format!(
                    "{}: {} has mode {:04o}, so {who} can read the secret in it; chmod 600 it \
                     (or 400; in Kubernetes, set the volume's defaultMode)",
                    setting.names(),
                    path.display(),
                    mode & 0o7777
                ));
            }
        }
        warnings
    }
}

/// The `pkcs11:` settings, checked together: one token selector, one PIN source, valid and
/// distinct key labels.
fn resolve_pkcs11(args: &ConfigArgs, file: &Pkcs11FileConfig) -> Result<Pkcs11Config, ConfigError> {
    let pick = |flag: &Option<String>, file: &Option<Scalar>| {
        flag.clone()
            .or_else(|| file.as_ref().map(|scalar| scalar.0.clone()))
    };
    let required = |setting: &Setting, what: &str| {
        setting.invalid("", format!("{what} (required by provider pkcs11)"))
    };
    let module = match pick(&args.pkcs11_module, &file.module) {
        Some(path) if Path::new(&path).is_absolute() => parse_path(&PKCS11_MODULE, &path)?,
        Some(path) => {
            return Err(PKCS11_MODULE.invalid(
                &path,
                "an absolute path to the module, e.g. /usr/lib/softhsm/libsofthsm2.so",
            ));
        }
        None => {
            return Err(required(
                &PKCS11_MODULE,
                "the PKCS#11 module's absolute path",
            ));
        }
    };
    let token = match (
        pick(&args.pkcs11_token_label, &file.token_label),
        pick(&args.pkcs11_slot, &file.slot),
    ) {
        (Some(label), None) if !label.is_empty() && label.len() <= 32 => {
            TokenSelector::Label(label)
        }
        (Some(label), None) => {
            return Err(PKCS11_TOKEN_LABEL.invalid(&label, "a token label of 1 to 32 bytes"));
        }
        (None, Some(slot)) => TokenSelector::Slot(
            slot.trim()
                .parse()
                .map_err(|_| PKCS11_SLOT.invalid(&slot, "a slot id (a whole number)"))?,
        ),
        (Some(label), Some(_)) => {
            return Err(
                PKCS11_TOKEN_LABEL.invalid(&label, "either a token label or pkcs11.slot, not both")
            );
        }
        (None, None) => {
            return Err(required(
                &PKCS11_TOKEN_LABEL,
                "a token label, or pkcs11.slot",
            ));
        }
    };
    let pin = match (
        pick(&args.pkcs11_pin_file, &file.pin_file),
        pick(&args.pkcs11_pin_env, &file.pin_env),
    ) {
        (Some(path), None) => PinSource::File(parse_path(&PKCS11_PIN_FILE, &path)?),
        (None, Some(name)) => {
            let valid = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                // The value is not echoed: someone may have put the PIN itself here.
                return Err(PKCS11_PIN_ENV.invalid(
                    "(not shown)",
                    "the NAME of an environment variable that holds the PIN \
                     ([A-Za-z_][A-Za-z0-9_]*), never the PIN itself",
                ));
            }
            PinSource::Env(name)
        }
        (Some(path), Some(_)) => {
            return Err(
                PKCS11_PIN_FILE.invalid(&path, "either a PIN file or pkcs11.pin_env, not both")
            );
        }
        (None, None) => return Err(required(&PKCS11_PIN_FILE, "a PIN file, or pkcs11.pin_env")),
    };
    let label_rule = "printable ASCII without spaces, 1 to 128 bytes";
    let key_label = match pick(&args.pkcs11_key_label, &file.key_label) {
        Some(label) if is_valid_key_label(&label) => label,
        Some(label) => return Err(PKCS11_KEY_LABEL.invalid(&label, label_rule)),
        None => {
            return Err(required(
                &PKCS11_KEY_LABEL,
                "the label of the key that wraps new KEKs",
            ));
        }
    };
    let listed = args
        .pkcs11_decrypt_only_key_labels
        .clone()
        .or_else(|| {
            file.decrypt_only_key_labels
                .as_ref()
                .map(|list| list.0.clone())
        })
        .unwrap_or_default();
    let mut decrypt_only_key_labels: Vec<String> = Vec::new();
    for label in listed
        .split(',')
        .map(str::trim)
        .filter(|label| !label.is_empty())
    {
        if !is_valid_key_label(label) {
            return Err(PKCS11_DECRYPT_ONLY_KEY_LABELS.invalid(label, label_rule));
        }
        if label == key_label || decrypt_only_key_labels.iter().any(|seen| seen == label) {
            return Err(PKCS11_DECRYPT_ONLY_KEY_LABELS.invalid(
                label,
                "labels that appear once and differ from pkcs11.key_label",
            ));
        }
        decrypt_only_key_labels.push(label.to_owned());
    }
    Ok(Pkcs11Config {
        module,
        token,
        pin,
        key_label,
        decrypt_only_key_labels,
    })
}

/// The `azure:` settings, checked together: a vault URL and key name, a version choice,
/// decrypt-only keys, one way to authenticate, a cloud, and the transport's timeouts.
fn resolve_azure(args: &ConfigArgs, file: &AzureFileConfig) -> Result<AzureConfig, ConfigError> {
    let pick = |flag: &Option<String>, file: &Option<Scalar>| {
        flag.clone()
            .or_else(|| file.as_ref().map(|scalar| scalar.0.clone()))
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    let required = |setting: &Setting, what: &str| {
        setting.invalid("", format!("{what} (required by provider azure)"))
    };
    let path = |setting: &Setting, value: Option<String>| -> Result<Option<PathBuf>, ConfigError> {
        value.map(|value| parse_path(setting, &value)).transpose()
    };
    let guid = |setting: &Setting, value: Option<String>| -> Result<Option<String>, ConfigError> {
        match value {
            Some(value) if is_guid(&value) => Ok(Some(value.to_ascii_lowercase())),
            Some(value) => Err(setting.invalid(
                &value,
                "a GUID such as 00000000-0000-0000-0000-000000000000",
            )),
            None => Ok(None),
        }
    };

    let vault_url = pick(&args.azure_vault_url, &file.vault_url).ok_or_else(|| {
        required(
            &AZURE_VAULT_URL,
            "the vault's URL, e.g. https://myvault.vault.azure.net/",
        )
    })?;
    parse_vault_url(&vault_url).map_err(|reason| AZURE_VAULT_URL.invalid(&vault_url, reason))?;
    let key_name = pick(&args.azure_key_name, &file.key_name)
        .ok_or_else(|| required(&AZURE_KEY_NAME, "the name of the key that wraps new KEKs"))?;
    let key = KeyRef::new(&vault_url, &key_name)
        .map_err(|reason| AZURE_KEY_NAME.invalid(&key_name, reason))?;
    let key_version = match pick(&args.azure_key_version, &file.key_version) {
        None => KeyVersionChoice::Latest,
        Some(version) if version == "latest" => KeyVersionChoice::Latest,
        Some(version) if is_valid_version(&version) => KeyVersionChoice::Pinned(version),
        Some(version) => {
            return Err(AZURE_KEY_VERSION.invalid(
                &version,
                "\"latest\" or a key version (32 lowercase hex digits)",
            ));
        }
    };
    let listed = args
        .azure_decrypt_only_keys
        .clone()
        .or_else(|| file.decrypt_only_keys.as_ref().map(|list| list.0.clone()))
        .unwrap_or_default();
    let mut decrypt_only_keys: Vec<DecryptOnlyKey> = Vec::new();
    for entry in listed.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (old, version) = KeyRef::parse_key_url(entry)
            .map_err(|reason| AZURE_DECRYPT_ONLY_KEYS.invalid(entry, reason))?;
        let entry_key = DecryptOnlyKey { key: old, version };
        if entry_key.key == key || decrypt_only_keys.contains(&entry_key) {
            return Err(AZURE_DECRYPT_ONLY_KEYS.invalid(
                entry,
                "keys that appear once and differ from azure.vault_url/azure.key_name (every \
                 version of that key already decrypts)",
            ));
        }
        decrypt_only_keys.push(entry_key);
    }
    let oct_wrap_algorithm =
        match pick(&args.azure_oct_wrap_algorithm, &file.oct_wrap_algorithm).as_deref() {
            None | Some("A256KW") => WrapAlgorithm::A256Kw,
            Some("CKM_AES_KEY_WRAP_PAD") => WrapAlgorithm::CkmAesKeyWrapPad,
            Some(other) => {
                return Err(AZURE_OCT_WRAP_ALGORITHM.invalid(
                    other,
                    "A256KW or CKM_AES_KEY_WRAP_PAD (RSA keys always use RSA-OAEP-256)",
                ));
            }
        };

    let mode = match pick(&args.azure_auth, &file.auth) {
        None => AuthMode::Auto,
        Some(mode) => {
            AuthMode::parse(&mode).ok_or_else(|| AZURE_AUTH.invalid(&mode, AuthMode::ACCEPTED))?
        }
    };
    let tenant_id = match pick(&args.azure_tenant_id, &file.tenant_id) {
        Some(tenant) if is_guid(&tenant) || is_dns_name(&tenant) => Some(tenant),
        Some(tenant) => {
            return Err(AZURE_TENANT_ID.invalid(
                &tenant,
                "a tenant GUID or domain, e.g. contoso.onmicrosoft.com",
            ));
        }
        None => None,
    };
    let client_id = guid(
        &AZURE_CLIENT_ID,
        pick(&args.azure_client_id, &file.client_id),
    )?;
    let managed = [
        guid(
            &AZURE_MANAGED_IDENTITY_CLIENT_ID,
            pick(
                &args.azure_managed_identity_client_id,
                &file.managed_identity_client_id,
            ),
        )?
        .map(ManagedId::ClientId),
        guid(
            &AZURE_MANAGED_IDENTITY_OBJECT_ID,
            pick(
                &args.azure_managed_identity_object_id,
                &file.managed_identity_object_id,
            ),
        )?
        .map(ManagedId::ObjectId),
        match pick(
            &args.azure_managed_identity_resource_id,
            &file.managed_identity_resource_id,
        ) {
            Some(id)
                if id.starts_with("/subscriptions/")
                    && id.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Some(ManagedId::ResourceId(id))
            }
            Some(id) => {
                return Err(AZURE_MANAGED_IDENTITY_RESOURCE_ID.invalid(
                    &id,
                    "an ARM resource id, /subscriptions/…/userAssignedIdentities/{name}",
                ));
            }
            None => None,
        },
    ];
    let mut managed = managed.into_iter().flatten();
    let managed_identity = managed.next();
    if managed.next().is_some() {
        return Err(AZURE_MANAGED_IDENTITY_CLIENT_ID.invalid(
            "(several)",
            "one of azure.managed_identity_client_id, _object_id or _resource_id",
        ));
    }
    let client_secret = match (
        pick(&args.azure_client_secret_file, &file.client_secret_file),
        pick(&args.azure_client_secret_env, &file.client_secret_env),
    ) {
        (Some(path), None) => Some(SecretSource::File(parse_path(
            &AZURE_CLIENT_SECRET_FILE,
            &path,
        )?)),
        (None, Some(name)) => {
            let valid = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                // Not echoed: someone may have put the secret itself here.
                return Err(AZURE_CLIENT_SECRET_ENV.invalid(
                    "(not shown)",
                    "the NAME of an environment variable that holds the secret \
                     ([A-Za-z_][A-Za-z0-9_]*), never the secret itself",
                ));
            }
            Some(SecretSource::Env(name))
        }
        (Some(path), Some(_)) => {
            return Err(AZURE_CLIENT_SECRET_FILE.invalid(
                &path,
                "either a secret file or azure.client_secret_env, not both",
            ));
        }
        (None, None) => None,
    };
    let auth = AuthSettings {
        mode,
        tenant_id,
        client_id,
        managed_identity,
        federated_token_file: path(
            &AZURE_FEDERATED_TOKEN_FILE,
            pick(&args.azure_federated_token_file, &file.federated_token_file),
        )?,
        client_secret,
        client_certificate_file: path(
            &AZURE_CLIENT_CERTIFICATE_FILE,
            pick(
                &args.azure_client_certificate_file,
                &file.client_certificate_file,
            ),
        )?,
        client_certificate_password: path(
            &AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE,
            pick(
                &args.azure_client_certificate_password_file,
                &file.client_certificate_password_file,
            ),
        )?
        .map(SecretSource::File),
        azure_json: path(&AZURE_JSON, pick(&args.azure_json, &file.azure_json))?
            .unwrap_or_else(|| PathBuf::from(azure_access::auth::DEFAULT_AZURE_JSON)),
    };

    let cloud = match pick(&args.azure_cloud, &file.cloud) {
        None => None,
        Some(name) => Some(
            CloudName::parse(&name)
                .ok_or_else(|| AZURE_CLOUD.invalid(&name, CloudName::ACCEPTED))?,
        ),
    };
    let authority_host = match pick(&args.azure_authority_host, &file.authority_host) {
        None => None,
        Some(url) => {
            parse_vault_url(&url).map_err(|_| {
                AZURE_AUTHORITY_HOST.invalid(
                    &url,
                    "an https URL without a path, e.g. https://login.microsoftonline.com",
                )
            })?;
            Some(url.trim_end_matches('/').to_owned())
        }
    };
    let suffix = |setting: &Setting, value: Option<String>| match value {
        None => Ok(None),
        Some(value) => {
            let trimmed = value.trim_start_matches('.').to_ascii_lowercase();
            if is_dns_name(&trimmed) {
                Ok(Some(trimmed))
            } else {
                Err(setting.invalid(&value, "a DNS suffix such as vault.azure.net"))
            }
        }
    };
    let vault_suffix = suffix(
        &AZURE_VAULT_SUFFIX,
        pick(&args.azure_vault_suffix, &file.vault_suffix),
    )?;
    let managed_hsm_suffix = suffix(
        &AZURE_MANAGED_HSM_SUFFIX,
        pick(&args.azure_managed_hsm_suffix, &file.managed_hsm_suffix),
    )?;
    if cloud == Some(CloudName::Custom) {
        if authority_host.is_none() {
            return Err(required(
                &AZURE_AUTHORITY_HOST,
                "the authority of azure.cloud custom",
            ));
        }
        if vault_suffix.is_none() {
            return Err(required(
                &AZURE_VAULT_SUFFIX,
                "the vault DNS suffix of azure.cloud custom",
            ));
        }
    }

    let duration =
        |setting: &Setting, value: Option<String>, min: u64, max: u64, default: Duration| {
            match value {
                Some(value) => parse_duration_in(
                    setting,
                    &value,
                    Duration::from_millis(min),
                    Duration::from_millis(max),
                ),
                None => Ok(default),
            }
        };
    let defaults = azure_access::client::TransportOptions::default();
    let mut retry = azure_access::retry::RetryPolicy::DEFAULT;
    retry.deadline = duration(
        &AZURE_CALL_DEADLINE,
        pick(&args.azure_call_deadline, &file.call_deadline),
        100,
        30_000,
        retry.deadline,
    )?;
    let transport = azure_access::client::TransportOptions {
        ca_file: path(&AZURE_CA_FILE, pick(&args.azure_ca_file, &file.ca_file))?,
        connect_timeout: duration(
            &AZURE_CONNECT_TIMEOUT,
            pick(&args.azure_connect_timeout, &file.connect_timeout),
            10,
            30_000,
            defaults.connect_timeout,
        )?,
        request_timeout: duration(
            &AZURE_REQUEST_TIMEOUT,
            pick(&args.azure_request_timeout, &file.request_timeout),
            10,
            60_000,
            defaults.request_timeout,
        )?,
    };
    let insecure_skip_challenge_resource_check = match pick(
        &args.azure_insecure_skip_challenge_resource_check,
        &file.insecure_skip_challenge_resource_check,
    )
    .as_deref()
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(
                AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK.invalid(other, "true or false")
            );
        }
    };
    Ok(AzureConfig {
        key,
        key_version,
        decrypt_only_keys,
        oct_wrap_algorithm,
        auth,
        cloud,
        authority_host,
        vault_suffix,
        managed_hsm_suffix,
        transport,
        retry,
        insecure_skip_challenge_resource_check,
    })
}

/// Whether `value` is a GUID: 8-4-4-4-12 hex digits.
fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `value` is a DNS name of at least two labels.
fn is_dns_name(value: &str) -> bool {
    value.len() <= 253
        && value.contains('.')
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::File {
        path: path.into(),
        reason: error.to_string(),
    })?;
    parse_file(&text, path)
}

fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_saphyr::from_str(text).map_err(|error| ConfigError::File {
        path: path.into(),
        reason: error.to_string(),
    })
}

fn parse_path(setting: &Setting, value: &str) -> Result<PathBuf, ConfigError> {
    if value.is_empty() || value.contains('\0') {
        return Err(setting.invalid(value, "a non-empty path"));
    }
    Ok(PathBuf::from(value))
}

fn parse_socket_path(value: &str) -> Result<PathBuf, ConfigError> {
    let value = value.strip_prefix("unix://").unwrap_or(value);
    let path = parse_path(&SOCKET, value)?;
    if value.len() > MAX_SOCKET_PATH_LEN {
        return Err(SOCKET.invalid(
            value,
            format!("a path of at most {MAX_SOCKET_PATH_LEN} bytes (a kernel limit)"),
        ));
    }
    if value.starts_with('@') {
        return Err(SOCKET.invalid(
            value,
            "a file system path (abstract sockets have no permissions)",
        ));
    }
    Ok(path)
}

fn parse_socket_mode(value: &str) -> Result<u32, ConfigError> {
    match value.trim_start_matches("0o") {
        "0600" | "600" => Ok(0o600),
        "0660" | "660" => Ok(0o660),
        _ => Err(SOCKET_MODE.invalid(value, "\"0600\" or \"0660\" (quote it in YAML)")),
    }
}

/// Where group names are looked up (NSS sources other than this file are not consulted; give a
/// numeric gid for a group that lives only in LDAP or similar).
const GROUP_FILE: &str = "/etc/group";

/// A group name from `group_file` or a numeric gid.
fn parse_socket_group(value: &str, group_file: &Path) -> Result<u32, ConfigError> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse()
            .map_err(|_| SOCKET_GROUP.invalid(value, "a gid below 2^32"));
    }
    let valid_name = !value.is_empty()
        && value.len() <= 32
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !valid_name {
        return Err(SOCKET_GROUP.invalid(value, "a group name or a numeric gid"));
    }
    let groups = std::fs::read_to_string(group_file).unwrap_or_default();
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            Some((name, gid))
        })
        .find_map(|(name, gid)| (name == value).then_some(gid))
        .ok_or_else(|| {
            SOCKET_GROUP.invalid(
                value,
                format!(
                    "a group listed in {} (or a numeric gid)",
                    group_file.display()
                ),
            )
        })
}

fn parse_bool(setting: &Setting, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(setting.invalid(value, "true or false")),
    }
}

fn parse_number_in(setting: &Setting, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    value
        .trim()
        .replace('_', "")
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| setting.invalid(value, format!("a whole number from {min} to {max}")))
}

fn parse_duration_in(
    setting: &Setting,
    value: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    parse_duration(value)
        .filter(|d| (min..=max).contains(d))
        .ok_or_else(|| {
            setting.invalid(
                value,
                format!(
                    "a duration from {} to {} with a unit (ms, s, m, h, d), e.g. 30s or 5m",
                    format_duration(min),
                    format_duration(max)
                ),
            )
        })
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `7d`.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60 * 1000,
        "h" => 3600 * 1000,
        "d" => 24 * 3600 * 1000,
        _ => return None,
    };
    number.checked_mul(millis).map(Duration::from_millis)
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    let units = [
        (24 * 3600 * 1000, "d"),
        (3600 * 1000, "h"),
        (60 * 1000, "m"),
        (1000, "s"),
    ];
    for (size, unit) in units {
        if millis >= size && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> DefaultsEnv {
        DefaultsEnv {
            runtime_dir: None,
            state_home: None,
            home: Some("/home/op".into()),
            uid: Some(1000),
        }
    }

    fn error_of(yaml: &str, args: &ConfigArgs) -> String {
        Config::from_yaml(yaml, args, &env())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_need_no_root_and_no_arguments() {
        let config = Config::load(&ConfigArgs::default(), &env()).unwrap();
        assert_eq!(config.socket, PathBuf::from("/tmp/kube-kms-1000/kms.sock"));
        assert_eq!(
            config.state_dir,
            PathBuf::from("/home/op/.local/state/kube-kms")
        );
        assert_eq!(
            config.provider,
            ProviderConfig::Local {
                key_dir: "/home/op/.local/state/kube-kms/local-keys".into()
            }
        );
        assert_eq!(config.socket_mode, 0o600);
        assert_eq!(config.refresh_interval, Duration::from_secs(60));
        assert_eq!(config.rotation, RotationPolicy::DEFAULT);
        assert_eq!(config.cache_size.get(), 1000);
        assert_eq!(
            config.health_address,
            Some("127.0.0.1:8790".parse().unwrap())
        );

        let runtime = DefaultsEnv {
            runtime_dir: Some("/run/user/1000".into()),
            ..env()
        };
        let config = Config::load(&ConfigArgs::default(), &runtime).unwrap();
        assert_eq!(
            config.socket,
            PathBuf::from("/run/user/1000/kube-kms/kms.sock")
        );
    }

    #[test]
    fn flags_and_environment_override_the_file() {
        let yaml = "socket: /var/run/kms/file.sock\nrefresh_interval: 5m\ncache_size: 10\n\
                    local:\n  key_dir: /keys\n";
        let args = ConfigArgs {
            socket: Some("unix:///run/flag.sock".into()),
            ..Default::default()
        };
        let config = Config::from_yaml(yaml, &args, &env()).unwrap();
        assert_eq!(config.socket, PathBuf::from("/run/flag.sock"));
        assert_eq!(config.refresh_interval, Duration::from_secs(300));
        assert_eq!(config.cache_size.get(), 10);
        assert_eq!(
            config.provider,
            ProviderConfig::Local {
                key_dir: "/keys".into()
            }
        );

        let off = ConfigArgs {
            health_address: Some("off".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::from_yaml(yaml, &off, &env())
                .unwrap()
                .health_address,
            None
        );
    }

    /// Each dangerous setting is warned about, and none of the defaults is.
    #[test]
    fn dangerous_settings_are_warned_about_and_safe_defaults_are_not() {
        use std::os::unix::fs::PermissionsExt;
        let warnings = |yaml: &str| {
            Config::from_yaml(yaml, &ConfigArgs::default(), &env())
                .unwrap()
                .warnings()
        };
        let one = |yaml: &str, names: &str| {
            let found = warnings(yaml);
            assert_eq!(found.len(), 1, "{yaml}: {found:#?}");
            assert!(found[0].contains(names), "{yaml}: {found:#?}");
            found.into_iter().next().unwrap()
        };
        assert_eq!(warnings(""), Vec::<String>::new());
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, "s3cret\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path.display().to_string()
        };
        let (private, group, world) = (
            file("private", 0o600),
            file("group", 0o640),
            file("world", 0o644),
        );
        let azure = |extra: &str| {
            format!(
                "provider: azure\nazure:\n  vault_url: https://kv.vault.azure.net\n  \
                 key_name: kek\n{extra}"
            )
        };
        let pkcs11 = |pin: &str| {
            format!(
                "provider: pkcs11\npkcs11:\n  module: /usr/lib/softhsm/libsofthsm2.so\n  \
                 token_label: t\n  pin_file: {pin}\n  key_label: kek\n"
            )
        };
        assert_eq!(warnings(&azure("")), Vec::<String>::new());
        assert_eq!(
            warnings(&azure(&format!("  client_secret_file: {private}\n"))),
            Vec::<String>::new()
        );
        assert_eq!(warnings(&pkcs11(&private)), Vec::<String>::new());
        for safe in [
            "health_address: 127.0.0.1:9000",
            "health_address: \"[::1]:9000\"",
            "health_address: off",
            "refresh_interval: 1s",
        ] {
            assert_eq!(warnings(safe), Vec::<String>::new(), "{safe}");
        }

        assert!(one("health_address: 0.0.0.0:8790", "health_address").contains("0.0.0.0:8790"));
        one("health_address: 10.1.2.3:8790", "health_address");
        assert!(one("refresh_interval: 999ms", "refresh_interval").contains("999ms"));
        one(
            &azure("  insecure_skip_challenge_resource_check: true\n"),
            "azure.insecure_skip_challenge_resource_check",
        );
        let shown = one(
            &azure(&format!("  client_secret_file: {world}\n")),
            "azure.client_secret_file",
        );
        assert!(
            shown.contains("0644") && shown.contains("every user") && !shown.contains("s3cret"),
            "{shown}"
        );
        let shown = one(
            &azure(&format!("  client_secret_file: {group}\n")),
            "azure.client_secret_file",
        );
        assert!(
            shown.contains("0640") && shown.contains("its group"),
            "{shown}"
        );
        one(
            &azure(&format!("  client_certificate_file: {world}\n")),
            "azure.client_certificate_file",
        );
        one(&pkcs11(&world), "pkcs11.pin_file");
        one(&pkcs11(&group), "pkcs11.pin_file");
        // Settings that do not name a file, or name one that is missing, warn about nothing.
        assert_eq!(warnings(&pkcs11("/nonexistent/pin")), Vec::<String>::new());
    }

    /// Regression: YAML 1.1 reads an unquoted `off` as the boolean false, and `health_address:
    /// off` in a config file was refused as "false".
    #[test]
    fn health_address_off_in_a_file_turns_the_listener_off_quoted_or_not() {
        let dir = tempfile::tempdir().unwrap();
        for line in [
            "health_address: off",
            "health_address: \"off\"",
            "health_address: 'off'",
            "health_address: false",
            "health_address: Off",
            "health_address: OFF",
        ] {
            let file = dir.path().join("kube-kms.yaml");
            std::fs::write(&file, format!("{line}\n")).unwrap();
            let args = ConfigArgs {
                config: Some(file),
                ..Default::default()
            };
            let config =
                Config::load(&args, &env()).unwrap_or_else(|error| panic!("{line}: {error}"));
            assert_eq!(config.health_address, None, "{line}");
        }
        for refused in ["health_address: on", "health_address: true"] {
            let error = error_of(refused, &ConfigArgs::default());
            assert!(error.contains("health_address"), "{refused}: {error}");
        }
        let flag = ConfigArgs {
            health_address: Some("false".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::from_yaml("", &flag, &env()).unwrap().health_address,
            None
        );
    }

    #[test]
    fn every_bad_value_names_its_setting_and_what_is_allowed() {
        let cases = [
            (
                "refresh_interval: soon",
                "refresh_interval (--refresh-interval / KUBE_KMS_REFRESH_INTERVAL)",
            ),
            ("refresh_interval: 0s", "a duration from 10ms to 1d"),
            ("kek_max_encryptions: 0", "kek_max_encryptions"),
            ("kek_max_encryptions: 4294967297", "from 1 to 4294967296"),
            ("kek_max_age: 100d", "kek_max_age"),
            ("cache_size: -1", "cache_size"),
            ("remote_timeout: 20s", "a duration from 100ms to 10s"),
            ("max_concurrent_unwraps: 0", "max_concurrent_unwraps"),
            ("provider: aws", "provider (--provider / KUBE_KMS_PROVIDER)"),
            ("socket_mode: \"0666\"", "\"0600\" or \"0660\""),
            ("log_format: xml", "\"text\" or \"json\""),
            ("log_level: loud", "error, warn, info, debug or trace"),
            ("socket: \"@abstract\"", "abstract sockets"),
            ("health_address: localhost", "an IP address and port"),
        ];
        for (yaml, expected) in cases {
            let error = error_of(yaml, &ConfigArgs::default());
            assert!(error.contains(expected), "{yaml}: {error}");
        }
        let long = format!("socket: /{}", "a".repeat(120));
        assert!(error_of(&long, &ConfigArgs::default()).contains("at most 107 bytes"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let error = error_of("refresh_intervall: 1m", &ConfigArgs::default());
        assert!(error.contains("refresh_intervall"), "{error}");
        let error = error_of("local:\n  keydir: /x\n", &ConfigArgs::default());
        assert!(error.contains("keydir"), "{error}");
    }

    #[test]
    fn durations_parse_and_format_symmetrically() {
        for (text, duration) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7200)),
            ("7d", Duration::from_secs(7 * 86400)),
        ] {
            assert_eq!(parse_duration(text), Some(duration));
            assert_eq!(format_duration(duration), text);
        }
        for bad in ["", "5", "m", "5 m", "1.5s", "-1s", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_missing_config_file_is_named() {
        let args = ConfigArgs {
            config: Some("/nonexistent/kube-kms.yaml".into()),
            ..Default::default()
        };
        let error = Config::load(&args, &env()).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/kube-kms.yaml"), "{error}");
    }

    const PKCS11_YAML: &str = "provider: pkcs11\npkcs11:\n  \
        module: /usr/lib/softhsm/libsofthsm2.so\n  token_label: kube-kms\n  \
        pin_file: /etc/kube-kms/pin\n  key_label: kek-2\n  \
        decrypt_only_key_labels: [kek-1, kek-0]\n";

    #[test]
    fn pkcs11_settings_come_from_the_file_flags_and_environment() {
        let config = Config::from_yaml(PKCS11_YAML, &ConfigArgs::default(), &env()).unwrap();
        let expected = Pkcs11Config {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token: TokenSelector::Label("kube-kms".into()),
            pin: PinSource::File("/etc/kube-kms/pin".into()),
            key_label: "kek-2".into(),
            decrypt_only_key_labels: vec!["kek-1".into(), "kek-0".into()],
        };
        assert_eq!(config.provider, ProviderConfig::Pkcs11(expected.clone()));

        // Rotation by flags: a new current label, the old ones decrypt-only; the PIN from a
        // variable whose name is given; the token by slot.
        let yaml = PKCS11_YAML
            .replace("  pin_file: /etc/kube-kms/pin\n", "")
            .replace("  token_label: kube-kms\n", "");
        let args = ConfigArgs {
            pkcs11_key_label: Some("kek-3".into()),
            pkcs11_decrypt_only_key_labels: Some("kek-2, kek-1".into()),
            pkcs11_pin_env: Some("KUBE_KMS_PKCS11_PIN".into()),
            pkcs11_slot: Some("7".into()),
            ..Default::default()
        };
        let config = Config::from_yaml(&yaml, &args, &env()).unwrap();
        assert_eq!(
            config.provider,
            ProviderConfig::Pkcs11(Pkcs11Config {
                token: TokenSelector::Slot(7),
                pin: PinSource::Env("KUBE_KMS_PKCS11_PIN".into()),
                key_label: "kek-3".into(),
                decrypt_only_key_labels: vec!["kek-2".into(), "kek-1".into()],
                ..expected
            })
        );
    }

    #[test]
    fn every_bad_pkcs11_value_names_its_setting() {
        let without = |line: &str| PKCS11_YAML.replace(line, "");
        let with = |from: &str, to: &str| PKCS11_YAML.replace(from, to);
        let cases = [
            (
                without("  module: /usr/lib/softhsm/libsofthsm2.so\n"),
                "pkcs11.module (--pkcs11-module / KUBE_KMS_PKCS11_MODULE)",
            ),
            (
                with("/usr/lib/softhsm/libsofthsm2.so", "libsofthsm2.so"),
                "an absolute path",
            ),
            (without("  token_label: kube-kms\n"), "pkcs11.token_label"),
            (
                with("token_label: kube-kms", "token_label: kube-kms\n  slot: 1"),
                "not both",
            ),
            (
                with(
                    "token_label: kube-kms",
                    &format!("token_label: {}", "t".repeat(33)),
                ),
                "1 to 32 bytes",
            ),
            (with("token_label: kube-kms", "slot: first"), "pkcs11.slot"),
            (
                without("  pin_file: /etc/kube-kms/pin\n"),
                "pkcs11.pin_file",
            ),
            (
                with(
                    "pin_file: /etc/kube-kms/pin",
                    "pin_file: /p\n  pin_env: PIN",
                ),
                "not both",
            ),
            (
                with("key_label: kek-2", "key_label: kek two"),
                "pkcs11.key_label",
            ),
            (without("  key_label: kek-2\n"), "pkcs11.key_label"),
            (
                with("[kek-1, kek-0]", "[kek-1, kek-2]"),
                "differ from pkcs11.key_label",
            ),
            (with("[kek-1, kek-0]", "[kek-1, kek-1]"), "appear once"),
            (
                with("provider: pkcs11", "provider: hsm"),
                "\"local\", \"pkcs11\" or \"azure\"",
            ),
            (
                with("key_label: kek-2", "key_label: kek-2\n  pin: 1234"),
                "pin",
            ),
        ];
        for (yaml, expected) in cases {
            let error = error_of(&yaml, &ConfigArgs::default());
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn socket_group_takes_a_name_or_gid_and_implies_0660() {
        let groups = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(groups.path(), "root:x:0:\nkube-kms:x:993:apiserver\nbad\n").unwrap();
        assert_eq!(parse_socket_group("kube-kms", groups.path()), Ok(993));
        assert_eq!(parse_socket_group("root", groups.path()), Ok(0));
        assert_eq!(parse_socket_group(" 4242 ", groups.path()), Ok(4242));
        for bad in ["", "nosuchgroup", "a b", "x:y", "99999999999"] {
            let error = parse_socket_group(bad, groups.path())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("socket_group (--socket-group"),
                "{bad}: {error}"
            );
        }

        let config = Config::from_yaml("socket_group: 4242", &ConfigArgs::default(), &env());
        let config = config.unwrap();
        assert_eq!(
            (config.socket_group, config.socket_mode),
            (Some(4242), 0o660)
        );
        let error = error_of(
            "socket_group: 4242\nsocket_mode: \"0600\"",
            &ConfigArgs::default(),
        );
        assert!(error.contains("0600 would shut the group out"), "{error}");
        let config = Config::load(&ConfigArgs::default(), &env()).unwrap();
        assert_eq!((config.socket_group, config.socket_mode), (None, 0o600));
    }

    #[test]
    fn refuse_root_names_are_the_settings_own() {
        assert_eq!(REFUSE_ROOT_NAMES, REFUSE_ROOT.names());
    }

    #[test]
    fn refuse_root_is_a_boolean_from_any_source() {
        let config = Config::load(&ConfigArgs::default(), &env()).unwrap();
        assert!(!config.refuse_root);
        let config = Config::from_yaml("refuse_root: true", &ConfigArgs::default(), &env());
        assert!(config.unwrap().refuse_root);
        let args = ConfigArgs {
            refuse_root: Some("false".into()),
            ..Default::default()
        };
        assert!(
            !Config::from_yaml("refuse_root: true", &args, &env())
                .unwrap()
                .refuse_root
        );
        let error = error_of("refuse_root: maybe", &ConfigArgs::default());
        assert!(
            error.contains("refuse_root (--refuse-root / KUBE_KMS_REFUSE_ROOT)"),
            "{error}"
        );
    }

    #[test]
    fn a_pin_given_where_a_variable_name_belongs_is_not_echoed() {
        let yaml = PKCS11_YAML.replace("pin_file: /etc/kube-kms/pin", "pin_env: \"123456\"");
        let error = error_of(&yaml, &ConfigArgs::default());
        assert!(error.contains("pkcs11.pin_env"), "{error}");
        assert!(!error.contains("123456"), "{error}");
    }

    const AZURE_YAML: &str = "provider: azure\nazure:\n  \
        vault_url: https://kv.vault.azure.net/\n  key_name: kek\n  \
        client_id: 0b3c4e1a-0000-4000-8000-000000000001\n  \
        tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47\n  \
        client_secret_file: /etc/kube-kms/secret\n";

    fn azure_of(config: Config) -> AzureConfig {
        match config.provider {
            ProviderConfig::Azure(azure) => *azure,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn azure_settings_come_from_the_file_flags_and_environment() {
        let azure =
            azure_of(Config::from_yaml(AZURE_YAML, &ConfigArgs::default(), &env()).unwrap());
        assert_eq!(azure.key.host(), "kv.vault.azure.net");
        assert_eq!(azure.key.name(), "kek");
        assert_eq!(azure.key_version, KeyVersionChoice::Latest);
        assert_eq!(azure.auth.mode, AuthMode::Auto);
        assert_eq!(
            azure.auth.client_secret,
            Some(SecretSource::File("/etc/kube-kms/secret".into()))
        );
        assert_eq!(
            azure.auth.azure_json,
            PathBuf::from("/etc/kubernetes/azure.json")
        );
        assert_eq!(azure.retry.deadline, Duration::from_secs(2));
        assert_eq!(azure.transport.connect_timeout, Duration::from_secs(1));
        assert_eq!(azure.oct_wrap_algorithm, WrapAlgorithm::A256Kw);
        assert!(!azure.insecure_skip_challenge_resource_check);

        let version = "0123456789abcdef0123456789abcdef";
        let yaml = format!(
            "{AZURE_YAML}  decrypt_only_keys:\n    - https://old.vault.azure.net/keys/kek\n    \
             - https://kv.vault.azure.net/keys/older/{version}\n  cloud: china\n  \
             ca_file: /etc/kube-kms/ca.pem\n  call_deadline: 1500ms\n"
        )
        .replace("kv.vault.azure.net/\n", "kv.vault.azure.cn/\n");
        let args = ConfigArgs {
            azure_key_version: Some(version.into()),
            azure_auth: Some("managed-identity".into()),
            azure_managed_identity_resource_id: Some(
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kms".into(),
            ),
            azure_oct_wrap_algorithm: Some("CKM_AES_KEY_WRAP_PAD".into()),
            azure_insecure_skip_challenge_resource_check: Some("true".into()),
            ..Default::default()
        };
        let azure = azure_of(Config::from_yaml(&yaml, &args, &env()).unwrap());
        assert_eq!(azure.key_version, KeyVersionChoice::Pinned(version.into()));
        assert_eq!(azure.auth.mode, AuthMode::ManagedIdentity);
        assert!(matches!(
            azure.auth.managed_identity,
            Some(ManagedId::ResourceId(_))
        ));
        assert_eq!(azure.decrypt_only_keys.len(), 2);
        assert_eq!(azure.decrypt_only_keys[0].key.host(), "old.vault.azure.net");
        assert_eq!(azure.decrypt_only_keys[0].version, None);
        assert_eq!(azure.decrypt_only_keys[1].version.as_deref(), Some(version));
        assert_eq!(azure.retry.deadline, Duration::from_millis(1500));
        assert_eq!(
            azure.transport.ca_file,
            Some(PathBuf::from("/etc/kube-kms/ca.pem"))
        );
        assert_eq!(azure.oct_wrap_algorithm, WrapAlgorithm::CkmAesKeyWrapPad);
        assert!(azure.insecure_skip_challenge_resource_check);
        // The China cloud setting resolves to the China hosts.
        assert_eq!(azure.cloud, Some(CloudName::China));
        let cloud = azure.effective_cloud(None).unwrap();
        assert_eq!(cloud.authority_host(), "https://login.chinacloudapi.cn");
        assert_eq!(cloud.vault_suffix(), "vault.azure.cn");
        assert_eq!(cloud.managed_hsm_suffix(), "managedhsm.azure.cn");
        assert!(cloud.owns_host(azure.key.host()));
    }

    #[test]
    fn every_bad_azure_value_names_its_setting() {
        let without = |line: &str| AZURE_YAML.replace(line, "");
        let with = |from: &str, to: &str| AZURE_YAML.replace(from, to);
        let cases = [
            (
                without("  vault_url: https://kv.vault.azure.net/\n"),
                "azure.vault_url (--azure-vault-url / KUBE_KMS_AZURE_VAULT_URL)",
            ),
            (
                with("https://kv.vault.azure.net/", "http://kv.vault.azure.net/"),
                "an https URL",
            ),
            (without("  key_name: kek\n"), "azure.key_name"),
            (
                with("key_name: kek", "key_name: k_e_k"),
                "letters, digits and dashes",
            ),
            (
                format!("{AZURE_YAML}  key_version: v2\n"),
                "\"latest\" or a key version",
            ),
            (
                format!("{AZURE_YAML}  decrypt_only_keys: [https://kv.vault.azure.net/keys/kek]\n"),
                "differ from azure.vault_url/azure.key_name",
            ),
            (
                format!(
                    "{AZURE_YAML}  decrypt_only_keys: [https://kv.vault.azure.net/secrets/x]\n"
                ),
                "azure.decrypt_only_keys",
            ),
            (format!("{AZURE_YAML}  auth: password\n"), "azure.auth"),
            (
                with(
                    "client_id: 0b3c4e1a-0000-4000-8000-000000000001",
                    "client_id: app",
                ),
                "a GUID",
            ),
            (
                with(
                    "tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47",
                    "tenant_id: \"x y\"",
                ),
                "azure.tenant_id",
            ),
            (format!("{AZURE_YAML}  client_secret_env: S\n"), "not both"),
            (format!("{AZURE_YAML}  cloud: mars\n"), "azure.cloud"),
            (
                format!("{AZURE_YAML}  cloud: custom\n"),
                "azure.authority_host",
            ),
            (
                format!("{AZURE_YAML}  cloud: custom\n  authority_host: https://login.example\n"),
                "azure.vault_suffix",
            ),
            (
                format!("{AZURE_YAML}  authority_host: https://login.example/tenant\n"),
                "without a path",
            ),
            (
                format!("{AZURE_YAML}  call_deadline: 2\n"),
                "azure.call_deadline",
            ),
            (
                format!("{AZURE_YAML}  connect_timeout: 0s\n"),
                "azure.connect_timeout",
            ),
            (
                format!("{AZURE_YAML}  oct_wrap_algorithm: RSA1_5\n"),
                "A256KW or CKM_AES_KEY_WRAP_PAD",
            ),
            (
                format!("{AZURE_YAML}  insecure_skip_challenge_resource_check: maybe\n"),
                "true or false",
            ),
            (
                format!(
                    "{AZURE_YAML}  managed_identity_client_id: 0b3c4e1a-0000-4000-8000-000000000002\n  \
                     managed_identity_object_id: 0b3c4e1a-0000-4000-8000-000000000003\n"
                ),
                "one of azure.managed_identity_client_id",
            ),
            (
                format!("{AZURE_YAML}  client_secret: hunter2\n"),
                "client_secret",
            ),
        ];
        for (yaml, expected) in cases {
            let error = error_of(&yaml, &ConfigArgs::default());
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn a_secret_given_where_a_variable_name_belongs_is_not_echoed() {
        let yaml = AZURE_YAML.replace(
            "client_secret_file: /etc/kube-kms/secret",
            "client_secret_env: \"Zx8~q.secret-value\"",
        );
        let error = error_of(&yaml, &ConfigArgs::default());
        assert!(error.contains("azure.client_secret_env"), "{error}");
        assert!(!error.contains("secret-value"), "{error}");
    }
}
