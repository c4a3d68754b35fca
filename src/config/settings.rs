//! Every setting's names, defined once, and the one way a raw value is chosen and parsed.
//!
//! A [`Setting`] constant is the single source of a setting's YAML key, long flag and
//! environment variable: the clap attributes in `args.rs` take their spellings from it, its
//! accessors say which `ConfigArgs` and file field hold it, and a test checks that the file
//! parser accepts the key and clap accepts the flag. [`Setting::raw`] is the one precedence
//! (flag > environment variable > config file; the caller supplies the default) and the typed
//! parsers here take the `Setting` so every error names it. Environment variable names appear
//! only in this module. This module never reads a secret: no setting holds one, and a parser
//! that may be handed one by mistake must not echo it.

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::args::ConfigArgs;
use super::duration::{format_duration, parse_duration};
use super::file::FileConfig;

/// One setting: its three names and where each source holds it.
pub(crate) struct Setting {
    /// The YAML key, `section.name` for a key inside a section.
    pub(crate) key: &'static str,
    /// The long flag, without the leading dashes.
    pub(crate) flag: &'static str,
    /// The environment variable.
    pub(crate) env: &'static str,
    /// The value given as a flag or environment variable (clap folds the two together).
    arg: fn(&ConfigArgs) -> Option<&str>,
    /// The value given in the config file.
    file: fn(&FileConfig) -> Option<&str>,
}

/// The raw sources every setting is read from.
#[derive(Clone, Copy)]
pub(super) struct Sources<'a> {
    pub(super) args: &'a ConfigArgs,
    pub(super) file: &'a FileConfig,
}

impl Setting {
    /// The setting's names, as error messages and warnings show them.
    pub(crate) fn names(&self) -> String {
        format!("{} (--{} / {})", self.key, self.flag, self.env)
    }

    /// A refusal of `value` for this setting, saying what is allowed.
    pub(super) fn invalid(&self, value: &str, expected: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            setting: self.names(),
            value: value.to_owned(),
            expected: expected.into(),
        }
    }

    /// The one precedence: the flag (or, failing it, the environment variable), else the config
    /// file; `None` when no source gives the setting, so the caller's default applies.
    pub(super) fn raw<'a>(&self, sources: Sources<'a>) -> Option<&'a str> {
        (self.arg)(sources.args).or_else(|| (self.file)(sources.file))
    }

    /// [`Setting::raw`] with surrounding blanks removed, a blank value counting as not given
    /// (how the `azure.*` settings have always been read).
    pub(super) fn trimmed<'a>(&self, sources: Sources<'a>) -> Option<&'a str> {
        self.raw(sources)
            .map(str::trim)
            .filter(|value| !value.is_empty())
    }

    /// The setting's value checked by `parse`, or `None` when no source gives it.
    pub(super) fn parse<T>(
        &self,
        sources: Sources<'_>,
        parse: impl FnOnce(&Self, &str) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        self.raw(sources)
            .map(|value| parse(self, value))
            .transpose()
    }
}

/// Defines a setting: its YAML key as the file structs' field path (`socket`, `azure.vault_url`),
/// the `ConfigArgs` field, the flag and the environment variable.
macro_rules! setting {
    ($field:ident, $arg:ident, $flag:literal, $env:literal) => {
        Setting {
            key: stringify!($field),
            flag: $flag,
            env: $env,
            arg: |args| args.$arg.as_deref(),
            file: |file| file.$field.as_ref().map(|value| value.as_str()),
        }
    };
    ($section:ident . $field:ident, $arg:ident, $flag:literal, $env:literal) => {
        Setting {
            key: concat!(stringify!($section), ".", stringify!($field)),
            flag: $flag,
            env: $env,
            arg: |args| args.$arg.as_deref(),
            file: |file| {
                file.$section
                    .as_ref()?
                    .$field
                    .as_ref()
                    .map(|value| value.as_str())
            },
        }
    };
}

pub(crate) const SOCKET: Setting = setting!(socket, socket, "socket", "KUBE_KMS_SOCKET");
pub(crate) const SOCKET_MODE: Setting = setting!(
    socket_mode,
    socket_mode,
    "socket-mode",
    "KUBE_KMS_SOCKET_MODE"
);
pub(crate) const SOCKET_GROUP: Setting = setting!(
    socket_group,
    socket_group,
    "socket-group",
    "KUBE_KMS_SOCKET_GROUP"
);
pub(crate) const REFUSE_ROOT: Setting = setting!(
    refuse_root,
    refuse_root,
    "refuse-root",
    "KUBE_KMS_REFUSE_ROOT"
);
pub(crate) const STATE_DIR: Setting =
    setting!(state_dir, state_dir, "state-dir", "KUBE_KMS_STATE_DIR");
pub(crate) const PROVIDER: Setting = setting!(provider, provider, "provider", "KUBE_KMS_PROVIDER");
pub(crate) const LOCAL_KEY_DIR: Setting = setting!(
    local.key_dir,
    local_key_dir,
    "local-key-dir",
    "KUBE_KMS_LOCAL_KEY_DIR"
);
pub(crate) const PKCS11_MODULE: Setting = setting!(
    pkcs11.module,
    pkcs11_module,
    "pkcs11-module",
    "KUBE_KMS_PKCS11_MODULE"
);
pub(crate) const PKCS11_TOKEN_LABEL: Setting = setting!(
    pkcs11.token_label,
    pkcs11_token_label,
    "pkcs11-token-label",
    "KUBE_KMS_PKCS11_TOKEN_LABEL"
);
pub(crate) const PKCS11_SLOT: Setting = setting!(
    pkcs11.slot,
    pkcs11_slot,
    "pkcs11-slot",
    "KUBE_KMS_PKCS11_SLOT"
);
pub(crate) const PKCS11_PIN_FILE: Setting = setting!(
    pkcs11.pin_file,
    pkcs11_pin_file,
    "pkcs11-pin-file",
    "KUBE_KMS_PKCS11_PIN_FILE"
);
pub(crate) const PKCS11_PIN_ENV: Setting = setting!(
    pkcs11.pin_env,
    pkcs11_pin_env,
    "pkcs11-pin-env",
    "KUBE_KMS_PKCS11_PIN_ENV"
);
pub(crate) const PKCS11_KEY_LABEL: Setting = setting!(
    pkcs11.key_label,
    pkcs11_key_label,
    "pkcs11-key-label",
    "KUBE_KMS_PKCS11_KEY_LABEL"
);
pub(crate) const PKCS11_DECRYPT_ONLY_KEY_LABELS: Setting = setting!(
    pkcs11.decrypt_only_key_labels,
    pkcs11_decrypt_only_key_labels,
    "pkcs11-decrypt-only-key-labels",
    "KUBE_KMS_PKCS11_DECRYPT_ONLY_KEY_LABELS"
);
pub(crate) const AZURE_VAULT_URL: Setting = setting!(
    azure.vault_url,
    azure_vault_url,
    "azure-vault-url",
    "KUBE_KMS_AZURE_VAULT_URL"
);
pub(crate) const AZURE_KEY_NAME: Setting = setting!(
    azure.key_name,
    azure_key_name,
    "azure-key-name",
    "KUBE_KMS_AZURE_KEY_NAME"
);
pub(crate) const AZURE_KEY_VERSION: Setting = setting!(
    azure.key_version,
    azure_key_version,
    "azure-key-version",
    "KUBE_KMS_AZURE_KEY_VERSION"
);
pub(crate) const AZURE_DECRYPT_ONLY_KEYS: Setting = setting!(
    azure.decrypt_only_keys,
    azure_decrypt_only_keys,
    "azure-decrypt-only-keys",
    "KUBE_KMS_AZURE_DECRYPT_ONLY_KEYS"
);
pub(crate) const AZURE_LEGACY_KEY_VERSIONS: Setting = setting!(
    azure.legacy_key_versions,
    azure_legacy_key_versions,
    "azure-legacy-key-versions",
    "KUBE_KMS_AZURE_LEGACY_KEY_VERSIONS"
);
pub(crate) const AZURE_LEGACY_CLUSTER_SEED_FILE: Setting = setting!(
    azure.legacy_cluster_seed_file,
    azure_legacy_cluster_seed_file,
    "azure-legacy-cluster-seed-file",
    "KUBE_KMS_AZURE_LEGACY_CLUSTER_SEED_FILE"
);
pub(crate) const AZURE_OCT_WRAP_ALGORITHM: Setting = setting!(
    azure.oct_wrap_algorithm,
    azure_oct_wrap_algorithm,
    "azure-oct-wrap-algorithm",
    "KUBE_KMS_AZURE_OCT_WRAP_ALGORITHM"
);
pub(crate) const AZURE_AUTH: Setting =
    setting!(azure.auth, azure_auth, "azure-auth", "KUBE_KMS_AZURE_AUTH");
pub(crate) const AZURE_TENANT_ID: Setting = setting!(
    azure.tenant_id,
    azure_tenant_id,
    "azure-tenant-id",
    "KUBE_KMS_AZURE_TENANT_ID"
);
pub(crate) const AZURE_CLIENT_ID: Setting = setting!(
    azure.client_id,
    azure_client_id,
    "azure-client-id",
    "KUBE_KMS_AZURE_CLIENT_ID"
);
pub(crate) const AZURE_MANAGED_IDENTITY_CLIENT_ID: Setting = setting!(
    azure.managed_identity_client_id,
    azure_managed_identity_client_id,
    "azure-managed-identity-client-id",
    "KUBE_KMS_AZURE_MANAGED_IDENTITY_CLIENT_ID"
);
pub(crate) const AZURE_MANAGED_IDENTITY_OBJECT_ID: Setting = setting!(
    azure.managed_identity_object_id,
    azure_managed_identity_object_id,
    "azure-managed-identity-object-id",
    "KUBE_KMS_AZURE_MANAGED_IDENTITY_OBJECT_ID"
);
pub(crate) const AZURE_MANAGED_IDENTITY_RESOURCE_ID: Setting = setting!(
    azure.managed_identity_resource_id,
    azure_managed_identity_resource_id,
    "azure-managed-identity-resource-id",
    "KUBE_KMS_AZURE_MANAGED_IDENTITY_RESOURCE_ID"
);
pub(crate) const AZURE_FEDERATED_TOKEN_FILE: Setting = setting!(
    azure.federated_token_file,
    azure_federated_token_file,
    "azure-federated-token-file",
    "KUBE_KMS_AZURE_FEDERATED_TOKEN_FILE"
);
pub(crate) const AZURE_CLIENT_SECRET_FILE: Setting = setting!(
    azure.client_secret_file,
    azure_client_secret_file,
    "azure-client-secret-file",
    "KUBE_KMS_AZURE_CLIENT_SECRET_FILE"
);
pub(crate) const AZURE_CLIENT_SECRET_ENV: Setting = setting!(
    azure.client_secret_env,
    azure_client_secret_env,
    "azure-client-secret-env",
    "KUBE_KMS_AZURE_CLIENT_SECRET_ENV"
);
pub(crate) const AZURE_CLIENT_CERTIFICATE_FILE: Setting = setting!(
    azure.client_certificate_file,
    azure_client_certificate_file,
    "azure-client-certificate-file",
    "KUBE_KMS_AZURE_CLIENT_CERTIFICATE_FILE"
);
pub(crate) const AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE: Setting = setting!(
    azure.client_certificate_password_file,
    azure_client_certificate_password_file,
    "azure-client-certificate-password-file",
    "KUBE_KMS_AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE"
);
pub(crate) const AZURE_JSON: Setting = setting!(
    azure.azure_json,
    azure_json,
    "azure-json",
    "KUBE_KMS_AZURE_JSON"
);
pub(crate) const AZURE_CLOUD: Setting = setting!(
    azure.cloud,
    azure_cloud,
    "azure-cloud",
    "KUBE_KMS_AZURE_CLOUD"
);
pub(crate) const AZURE_AUTHORITY_HOST: Setting = setting!(
    azure.authority_host,
    azure_authority_host,
    "azure-authority-host",
    "KUBE_KMS_AZURE_AUTHORITY_HOST"
);
pub(crate) const AZURE_VAULT_SUFFIX: Setting = setting!(
    azure.vault_suffix,
    azure_vault_suffix,
    "azure-vault-suffix",
    "KUBE_KMS_AZURE_VAULT_SUFFIX"
);
pub(crate) const AZURE_MANAGED_HSM_SUFFIX: Setting = setting!(
    azure.managed_hsm_suffix,
    azure_managed_hsm_suffix,
    "azure-managed-hsm-suffix",
    "KUBE_KMS_AZURE_MANAGED_HSM_SUFFIX"
);
pub(crate) const AZURE_CA_FILE: Setting = setting!(
    azure.ca_file,
    azure_ca_file,
    "azure-ca-file",
    "KUBE_KMS_AZURE_CA_FILE"
);
pub(crate) const AZURE_CALL_DEADLINE: Setting = setting!(
    azure.call_deadline,
    azure_call_deadline,
    "azure-call-deadline",
    "KUBE_KMS_AZURE_CALL_DEADLINE"
);
pub(crate) const AZURE_CONNECT_TIMEOUT: Setting = setting!(
    azure.connect_timeout,
    azure_connect_timeout,
    "azure-connect-timeout",
    "KUBE_KMS_AZURE_CONNECT_TIMEOUT"
);
pub(crate) const AZURE_REQUEST_TIMEOUT: Setting = setting!(
    azure.request_timeout,
    azure_request_timeout,
    "azure-request-timeout",
    "KUBE_KMS_AZURE_REQUEST_TIMEOUT"
);
pub(crate) const AZURE_SELF_TEST_INTERVAL: Setting = setting!(
    azure.self_test_interval,
    azure_self_test_interval,
    "azure-self-test-interval",
    "KUBE_KMS_AZURE_SELF_TEST_INTERVAL"
);
pub(crate) const AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK: Setting = setting!(
    azure.insecure_skip_challenge_resource_check,
    azure_insecure_skip_challenge_resource_check,
    "azure-insecure-skip-challenge-resource-check",
    "KUBE_KMS_AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK"
);
pub(crate) const REFRESH_INTERVAL: Setting = setting!(
    refresh_interval,
    refresh_interval,
    "refresh-interval",
    "KUBE_KMS_REFRESH_INTERVAL"
);
pub(crate) const KEK_MAX_ENCRYPTIONS: Setting = setting!(
    kek_max_encryptions,
    kek_max_encryptions,
    "kek-max-encryptions",
    "KUBE_KMS_KEK_MAX_ENCRYPTIONS"
);
pub(crate) const KEK_MAX_AGE: Setting = setting!(
    kek_max_age,
    kek_max_age,
    "kek-max-age",
    "KUBE_KMS_KEK_MAX_AGE"
);
pub(crate) const CACHE_SIZE: Setting =
    setting!(cache_size, cache_size, "cache-size", "KUBE_KMS_CACHE_SIZE");
pub(crate) const REMOTE_TIMEOUT: Setting = setting!(
    remote_timeout,
    remote_timeout,
    "remote-timeout",
    "KUBE_KMS_REMOTE_TIMEOUT"
);
pub(crate) const MAX_CONCURRENT_UNWRAPS: Setting = setting!(
    max_concurrent_unwraps,
    max_concurrent_unwraps,
    "max-concurrent-unwraps",
    "KUBE_KMS_MAX_CONCURRENT_UNWRAPS"
);
pub(crate) const LOG_FORMAT: Setting =
    setting!(log_format, log_format, "log-format", "KUBE_KMS_LOG_FORMAT");
pub(crate) const LOG_LEVEL: Setting =
    setting!(log_level, log_level, "log-level", "KUBE_KMS_LOG_LEVEL");
pub(crate) const HEALTH_ADDRESS: Setting = setting!(
    health_address,
    health_address,
    "health-address",
    "KUBE_KMS_HEALTH_ADDRESS"
);

/// The names of the `refuse_root` setting as messages show them, for
/// [`grpc_uds::hardening::check_root`] (a test holds it equal to the setting's own names).
pub const REFUSE_ROOT_NAMES: &str = "refuse_root (--refuse-root / KUBE_KMS_REFUSE_ROOT)";

/// The config file's own flag and environment variable (it is not a key in the file).
pub(crate) const CONFIG_FLAG: &str = "config";
/// See [`CONFIG_FLAG`].
pub(crate) const CONFIG_ENV: &str = "KUBE_KMS_CONFIG";

/// Every setting, in the order `--help` lists them.
#[cfg(test)]
pub(super) const ALL: &[&Setting] = &[
    &SOCKET,
    &SOCKET_MODE,
    &SOCKET_GROUP,
    &REFUSE_ROOT,
    &STATE_DIR,
    &PROVIDER,
    &LOCAL_KEY_DIR,
    &PKCS11_MODULE,
    &PKCS11_TOKEN_LABEL,
    &PKCS11_SLOT,
    &PKCS11_PIN_FILE,
    &PKCS11_PIN_ENV,
    &PKCS11_KEY_LABEL,
    &PKCS11_DECRYPT_ONLY_KEY_LABELS,
    &AZURE_VAULT_URL,
    &AZURE_KEY_NAME,
    &AZURE_KEY_VERSION,
    &AZURE_DECRYPT_ONLY_KEYS,
    &AZURE_LEGACY_KEY_VERSIONS,
    &AZURE_LEGACY_CLUSTER_SEED_FILE,
    &AZURE_OCT_WRAP_ALGORITHM,
    &AZURE_AUTH,
    &AZURE_TENANT_ID,
    &AZURE_CLIENT_ID,
    &AZURE_MANAGED_IDENTITY_CLIENT_ID,
    &AZURE_MANAGED_IDENTITY_OBJECT_ID,
    &AZURE_MANAGED_IDENTITY_RESOURCE_ID,
    &AZURE_FEDERATED_TOKEN_FILE,
    &AZURE_CLIENT_SECRET_FILE,
    &AZURE_CLIENT_SECRET_ENV,
    &AZURE_CLIENT_CERTIFICATE_FILE,
    &AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE,
    &AZURE_JSON,
    &AZURE_CLOUD,
    &AZURE_AUTHORITY_HOST,
    &AZURE_VAULT_SUFFIX,
    &AZURE_MANAGED_HSM_SUFFIX,
    &AZURE_CA_FILE,
    &AZURE_CALL_DEADLINE,
    &AZURE_CONNECT_TIMEOUT,
    &AZURE_REQUEST_TIMEOUT,
    &AZURE_SELF_TEST_INTERVAL,
    &AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK,
    &REFRESH_INTERVAL,
    &KEK_MAX_ENCRYPTIONS,
    &KEK_MAX_AGE,
    &CACHE_SIZE,
    &REMOTE_TIMEOUT,
    &MAX_CONCURRENT_UNWRAPS,
    &LOG_FORMAT,
    &LOG_LEVEL,
    &HEALTH_ADDRESS,
];

/// A non-empty path without NUL bytes.
pub(super) fn parse_path(setting: &Setting, value: &str) -> Result<PathBuf, ConfigError> {
    if value.is_empty() || value.contains('\0') {
        return Err(setting.invalid(value, "a non-empty path"));
    }
    Ok(PathBuf::from(value))
}

/// `true` or `false`.
pub(super) fn parse_bool(setting: &Setting, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(setting.invalid(value, "true or false")),
    }
}

/// A parser of whole numbers from `min` to `max`; `_` may group digits.
pub(super) fn number_in(
    min: u64,
    max: u64,
) -> impl FnOnce(&Setting, &str) -> Result<u64, ConfigError> {
    move |setting, value| {
        value
            .trim()
            .replace('_', "")
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| setting.invalid(value, format!("a whole number from {min} to {max}")))
    }
}

/// A parser of durations with a unit (see [`parse_duration`]) from `min` to `max`.
pub(super) fn duration_in(
    min: Duration,
    max: Duration,
) -> impl FnOnce(&Setting, &str) -> Result<Duration, ConfigError> {
    move |setting, value| {
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
}

/// The name of an environment variable that holds a secret (`what`). The value is never echoed
/// in the error: someone may have put the secret itself here.
pub(super) fn parse_env_name(
    setting: &Setting,
    value: &str,
    what: &str,
) -> Result<String, ConfigError> {
    let valid = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(setting.invalid(
            "(not shown)",
            format!(
                "the NAME of an environment variable that holds the {what} \
                 ([A-Za-z_][A-Za-z0-9_]*), never the {what} itself"
            ),
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::{Args, Parser};

    use super::*;

    #[test]
    fn refuse_root_names_are_the_settings_own() {
        assert_eq!(REFUSE_ROOT_NAMES, REFUSE_ROOT.names());
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConfigArgs,
    }

    /// Each setting's flag is one clap accepts and fills the field the setting reads, and each
    /// setting's YAML key is one the file parser accepts and fills the field the setting reads;
    /// clap has no flag that is not a setting (besides the config file's own).
    #[test]
    fn every_setting_is_read_from_its_own_flag_and_file_key() {
        for setting in ALL {
            let args = Cli::try_parse_from(["serve", &format!("--{}", setting.flag), "given"])
                .unwrap_or_else(|error| panic!("--{}: {error}", setting.flag))
                .args;
            assert_eq!((setting.arg)(&args), Some("given"), "--{}", setting.flag);

            let yaml = match setting.key.split_once('.') {
                Some((section, key)) => format!("{section}:\n  {key}: given\n"),
                None => format!("{}: given\n", setting.key),
            };
            let file = super::super::file::parse_file(&yaml, std::path::Path::new("<test>"))
                .unwrap_or_else(|error| panic!("{}: {error}", setting.key));
            assert_eq!((setting.file)(&file), Some("given"), "{}", setting.key);
        }

        let command = ConfigArgs::augment_args(clap::Command::new("serve"));
        let mut flags: Vec<(String, String)> = command
            .get_arguments()
            .map(|arg| {
                let env = arg.get_env().and_then(|env| env.to_str()).unwrap_or("");
                (arg.get_long().unwrap_or("").to_owned(), env.to_owned())
            })
            .collect();
        flags.sort();
        let mut expected: Vec<(String, String)> = ALL
            .iter()
            .map(|setting| (setting.flag.to_owned(), setting.env.to_owned()))
            .chain([(CONFIG_FLAG.to_owned(), CONFIG_ENV.to_owned())])
            .collect();
        expected.sort();
        assert_eq!(flags, expected);
    }
}
