//! The command-line flags (and their environment variables) of every setting, as clap reads
//! them: raw strings, checked only later in one place with the config file's values. The
//! spellings come from the `Setting` constants in `settings.rs`; only the help text lives here.
//! No flag takes a secret: secrets come from files or environment variables named by a flag.

use std::path::PathBuf;

use clap::Args;

use super::settings::*;

/// Configuration flags shared by `serve` and `keys`. Every flag can also be given as an
/// environment variable or a key in the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// YAML config file. Flags and environment variables override what it says.
    #[arg(long = CONFIG_FLAG, env = CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Unix socket kube-apiserver connects to [default: $XDG_RUNTIME_DIR/kube-kms/kms.sock, or
    /// /tmp/kube-kms-$UID/kms.sock].
    #[arg(long = SOCKET.flag, env = SOCKET.env, value_name = "PATH")]
    pub socket: Option<String>,
    /// Permission bits of the socket: 0600 (owner only) or 0660 (owner and group) [default: 0600].
    #[arg(long = SOCKET_MODE.flag, env = SOCKET_MODE.env, value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// Group given the socket (a name from /etc/group or a numeric gid), so that kube-apiserver
    /// can connect as a member of it; implies socket mode 0660 [default: none].
    #[arg(long = SOCKET_GROUP.flag, env = SOCKET_GROUP.env, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Refuse to start as root (true or false; the flag alone means true) [default: false, which
    /// runs as root with a loud warning].
    #[arg(
        long = REFUSE_ROOT.flag, env = REFUSE_ROOT.env,
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub refuse_root: Option<String>,
    /// Directory for kube-kms's own state [default: $XDG_STATE_HOME/kube-kms, or
    /// ~/.local/state/kube-kms].
    #[arg(long = STATE_DIR.flag, env = STATE_DIR.env, value_name = "DIR")]
    pub state_dir: Option<String>,
    /// Key provider: `local` (a key ring on this host; for development and tests only),
    /// `pkcs11` (a key on a PKCS#11 token) or `azure` (Azure Key Vault or Managed HSM)
    /// [default: local].
    #[arg(long = PROVIDER.flag, env = PROVIDER.env, value_name = "KIND")]
    pub provider: Option<String>,
    /// Key ring directory of the local provider [default: <state-dir>/local-keys].
    #[arg(long = LOCAL_KEY_DIR.flag, env = LOCAL_KEY_DIR.env, value_name = "DIR")]
    pub local_key_dir: Option<String>,
    /// PKCS#11 module (shared library) of the pkcs11 provider, an absolute path.
    #[arg(long = PKCS11_MODULE.flag, env = PKCS11_MODULE.env, value_name = "PATH")]
    pub pkcs11_module: Option<String>,
    /// Label of the PKCS#11 token (or --pkcs11-slot).
    #[arg(long = PKCS11_TOKEN_LABEL.flag, env = PKCS11_TOKEN_LABEL.env, value_name = "LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// Slot id of the PKCS#11 token (or --pkcs11-token-label).
    #[arg(long = PKCS11_SLOT.flag, env = PKCS11_SLOT.env, value_name = "ID")]
    pub pkcs11_slot: Option<String>,
    /// File holding the token's user PIN (or --pkcs11-pin-env). No flag takes the PIN itself.
    #[arg(long = PKCS11_PIN_FILE.flag, env = PKCS11_PIN_FILE.env, value_name = "FILE")]
    pub pkcs11_pin_file: Option<String>,
    /// Name of an environment variable holding the token's user PIN, e.g. KUBE_KMS_PKCS11_PIN.
    #[arg(long = PKCS11_PIN_ENV.flag, env = PKCS11_PIN_ENV.env, value_name = "NAME")]
    pub pkcs11_pin_env: Option<String>,
    /// Label of the PKCS#11 key that wraps new KEKs.
    #[arg(long = PKCS11_KEY_LABEL.flag, env = PKCS11_KEY_LABEL.env, value_name = "LABEL")]
    pub pkcs11_key_label: Option<String>,
    /// Labels of earlier PKCS#11 keys, kept to decrypt only, comma-separated.
    #[arg(
        long = PKCS11_DECRYPT_ONLY_KEY_LABELS.flag, env = PKCS11_DECRYPT_ONLY_KEY_LABELS.env,
        value_name = "LABEL,..."
    )]
    pub pkcs11_decrypt_only_key_labels: Option<String>,
    /// Key Vault or Managed HSM URL, e.g. https://myvault.vault.azure.net/.
    #[arg(long = AZURE_VAULT_URL.flag, env = AZURE_VAULT_URL.env, value_name = "URL")]
    pub azure_vault_url: Option<String>,
    /// Name of the key that wraps new KEKs.
    #[arg(long = AZURE_KEY_NAME.flag, env = AZURE_KEY_NAME.env, value_name = "NAME")]
    pub azure_key_name: Option<String>,
    /// `latest` (follow new versions) or a 32-hex version to pin [default: latest].
    #[arg(long = AZURE_KEY_VERSION.flag, env = AZURE_KEY_VERSION.env, value_name = "VERSION")]
    pub azure_key_version: Option<String>,
    /// Keys kept to decrypt only, comma-separated: https://{vault}/keys/{name}[/{version}].
    #[arg(long = AZURE_DECRYPT_ONLY_KEYS.flag, env = AZURE_DECRYPT_ONLY_KEYS.env, value_name = "URL,...")]
    pub azure_decrypt_only_keys: Option<String>,
    /// Versions of the key that Azure's Go KMS plugin encrypted with, comma-separated (32-hex
    /// each): read its records until they are re-encrypted.
    #[arg(long = AZURE_LEGACY_KEY_VERSIONS.flag, env = AZURE_LEGACY_KEY_VERSIONS.env, value_name = "VERSION,...")]
    pub azure_legacy_key_versions: Option<String>,
    /// The cluster seed file of Azure's Go KMS plugin's cluster-seed mode
    /// (--encrypted-cluster-seed-file): read its records until they are re-encrypted.
    #[arg(long = AZURE_LEGACY_CLUSTER_SEED_FILE.flag, env = AZURE_LEGACY_CLUSTER_SEED_FILE.env, value_name = "PATH")]
    pub azure_legacy_cluster_seed_file: Option<String>,
    /// Wrapping algorithm for Managed HSM oct-HSM keys: A256KW or CKM_AES_KEY_WRAP_PAD (RSA keys
    /// always use RSA-OAEP-256) [default: A256KW].
    #[arg(long = AZURE_OCT_WRAP_ALGORITHM.flag, env = AZURE_OCT_WRAP_ALGORITHM.env, value_name = "ALG")]
    pub azure_oct_wrap_algorithm: Option<String>,
    /// Authentication: auto, workload-identity, managed-identity, client-secret,
    /// client-certificate, azure-cli or azure-json [default: auto].
    #[arg(long = AZURE_AUTH.flag, env = AZURE_AUTH.env, value_name = "MODE")]
    pub azure_auth: Option<String>,
    /// Entra ID tenant (directory) id [default: AZURE_TENANT_ID].
    #[arg(long = AZURE_TENANT_ID.flag, env = AZURE_TENANT_ID.env, value_name = "ID")]
    pub azure_tenant_id: Option<String>,
    /// Application (client) id [default: AZURE_CLIENT_ID].
    #[arg(long = AZURE_CLIENT_ID.flag, env = AZURE_CLIENT_ID.env, value_name = "GUID")]
    pub azure_client_id: Option<String>,
    /// A user-assigned managed identity, by client id.
    #[arg(
        long = AZURE_MANAGED_IDENTITY_CLIENT_ID.flag, env = AZURE_MANAGED_IDENTITY_CLIENT_ID.env,
        value_name = "GUID"
    )]
    pub azure_managed_identity_client_id: Option<String>,
    /// A user-assigned managed identity, by object (principal) id.
    #[arg(
        long = AZURE_MANAGED_IDENTITY_OBJECT_ID.flag, env = AZURE_MANAGED_IDENTITY_OBJECT_ID.env,
        value_name = "GUID"
    )]
    pub azure_managed_identity_object_id: Option<String>,
    /// A user-assigned managed identity, by ARM resource id.
    #[arg(
        long = AZURE_MANAGED_IDENTITY_RESOURCE_ID.flag, env = AZURE_MANAGED_IDENTITY_RESOURCE_ID.env,
        value_name = "ID"
    )]
    pub azure_managed_identity_resource_id: Option<String>,
    /// Workload identity's projected token file [default: AZURE_FEDERATED_TOKEN_FILE].
    #[arg(long = AZURE_FEDERATED_TOKEN_FILE.flag, env = AZURE_FEDERATED_TOKEN_FILE.env, value_name = "FILE")]
    pub azure_federated_token_file: Option<String>,
    /// File holding the client secret. No flag takes the secret itself.
    #[arg(long = AZURE_CLIENT_SECRET_FILE.flag, env = AZURE_CLIENT_SECRET_FILE.env, value_name = "FILE")]
    pub azure_client_secret_file: Option<String>,
    /// Name of an environment variable holding the client secret [default: AZURE_CLIENT_SECRET].
    #[arg(long = AZURE_CLIENT_SECRET_ENV.flag, env = AZURE_CLIENT_SECRET_ENV.env, value_name = "NAME")]
    pub azure_client_secret_env: Option<String>,
    /// Client certificate: PEM (certificate and RSA private key) or PFX.
    #[arg(
        long = AZURE_CLIENT_CERTIFICATE_FILE.flag, env = AZURE_CLIENT_CERTIFICATE_FILE.env,
        value_name = "FILE"
    )]
    pub azure_client_certificate_file: Option<String>,
    /// File holding the client certificate's password, if it has one.
    #[arg(
        long = AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE.flag, env = AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE.env,
        value_name = "FILE"
    )]
    pub azure_client_certificate_password_file: Option<String>,
    /// AKS's cloud-provider file [default: /etc/kubernetes/azure.json].
    #[arg(long = AZURE_JSON.flag, env = AZURE_JSON.env, value_name = "FILE")]
    pub azure_json: Option<String>,
    /// Cloud: public, china, usgovernment or custom [default: azure.json's, else public].
    #[arg(long = AZURE_CLOUD.flag, env = AZURE_CLOUD.env, value_name = "CLOUD")]
    pub azure_cloud: Option<String>,
    /// Entra ID authority, overriding the cloud's, e.g. https://login.microsoftonline.com.
    #[arg(long = AZURE_AUTHORITY_HOST.flag, env = AZURE_AUTHORITY_HOST.env, value_name = "URL")]
    pub azure_authority_host: Option<String>,
    /// Key Vault DNS suffix of a custom cloud, e.g. vault.azure.net.
    #[arg(long = AZURE_VAULT_SUFFIX.flag, env = AZURE_VAULT_SUFFIX.env, value_name = "DNS")]
    pub azure_vault_suffix: Option<String>,
    /// Managed HSM DNS suffix of a custom cloud, e.g. managedhsm.azure.net.
    #[arg(long = AZURE_MANAGED_HSM_SUFFIX.flag, env = AZURE_MANAGED_HSM_SUFFIX.env, value_name = "DNS")]
    pub azure_managed_hsm_suffix: Option<String>,
    /// Extra CA certificates (PEM) trusted for Key Vault and Entra ID, besides the system's.
    #[arg(long = AZURE_CA_FILE.flag, env = AZURE_CA_FILE.env, value_name = "FILE")]
    pub azure_ca_file: Option<String>,
    /// Time one Key Vault operation may take, retries included [default: 2s].
    #[arg(long = AZURE_CALL_DEADLINE.flag, env = AZURE_CALL_DEADLINE.env, value_name = "DURATION")]
    pub azure_call_deadline: Option<String>,
    /// Time a TCP and TLS connection may take [default: 1s].
    #[arg(long = AZURE_CONNECT_TIMEOUT.flag, env = AZURE_CONNECT_TIMEOUT.env, value_name = "DURATION")]
    pub azure_connect_timeout: Option<String>,
    /// Time one HTTP attempt may take [default: 2s].
    #[arg(long = AZURE_REQUEST_TIMEOUT.flag, env = AZURE_REQUEST_TIMEOUT.env, value_name = "DURATION")]
    pub azure_request_timeout: Option<String>,
    /// How often a refresh also wraps and unwraps a test KEK, proving the identity may still
    /// wrap and unwrap (at once after any failure; other refreshes only read the key)
    /// [default: 10m].
    #[arg(long = AZURE_SELF_TEST_INTERVAL.flag, env = AZURE_SELF_TEST_INTERVAL.env, value_name = "DURATION")]
    pub azure_self_test_interval: Option<String>,
    /// Accept an authentication challenge whose resource is not a parent domain of the vault
    /// (emulators, private DNS names); true or false [default: false].
    #[arg(
        long = AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK.flag, env = AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK.env,
        value_name = "BOOL"
    )]
    pub azure_insecure_skip_challenge_resource_check: Option<String>,
    /// How often the remote key is read for a new version, e.g. 30s, 1m [default: 1m].
    #[arg(long = REFRESH_INTERVAL.flag, env = REFRESH_INTERVAL.env, value_name = "DURATION")]
    pub refresh_interval: Option<String>,
    /// Encryptions after which a local KEK is replaced [default: 2097152].
    #[arg(long = KEK_MAX_ENCRYPTIONS.flag, env = KEK_MAX_ENCRYPTIONS.env, value_name = "N")]
    pub kek_max_encryptions: Option<String>,
    /// Age after which a local KEK is replaced, e.g. 24h, 7d [default: 7d].
    #[arg(long = KEK_MAX_AGE.flag, env = KEK_MAX_AGE.env, value_name = "DURATION")]
    pub kek_max_age: Option<String>,
    /// Unwrapped KEKs kept in memory [default: 1000].
    #[arg(long = CACHE_SIZE.flag, env = CACHE_SIZE.env, value_name = "N")]
    pub cache_size: Option<String>,
    /// The longest one call to the key service may take, retries included; keep it inside
    /// kube-apiserver's 3 s call timeout [default: 2500ms].
    #[arg(long = REMOTE_TIMEOUT.flag, env = REMOTE_TIMEOUT.env, value_name = "DURATION")]
    pub remote_timeout: Option<String>,
    /// Unwraps of distinct KEKs sent to the key service at once [default: 8].
    #[arg(long = MAX_CONCURRENT_UNWRAPS.flag, env = MAX_CONCURRENT_UNWRAPS.env, value_name = "N")]
    pub max_concurrent_unwraps: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long = LOG_FORMAT.flag, env = LOG_FORMAT.env, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log level: error, warn, info, debug or trace [default: info].
    #[arg(long = LOG_LEVEL.flag, env = LOG_LEVEL.env, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Address of /healthz, /readyz and /metrics: host:port, or "off" [default: 127.0.0.1:8790].
    #[arg(long = HEALTH_ADDRESS.flag, env = HEALTH_ADDRESS.env, value_name = "HOST:PORT")]
    pub health_address: Option<String>,
}
