//! The `azure:` settings, checked together, one small function per concern: the key (vault URL,
//! name, version choice, decrypt-only keys, wrapping algorithm), authentication (mode, tenant,
//! client, managed identity, where the secret or certificate is), the cloud (name, authority,
//! DNS suffixes) and the transport (timeouts, extra CA, the challenge check). Values are
//! trimmed and a blank one counts as not given. Never takes or echoes a secret: only the files
//! or variable names it is read from, and a value given where a variable name belongs is
//! refused without being shown.

use std::path::PathBuf;
use std::time::Duration;

use azure_access::auth::{AuthMode, AuthSettings, ManagedId, SecretSource};
use azure_access::client::TransportOptions;
use azure_access::cloud::CloudName;
use azure_access::retry::RetryPolicy;

use super::ConfigError;
use super::settings::{
    AZURE_AUTH, AZURE_AUTHORITY_HOST, AZURE_CA_FILE, AZURE_CALL_DEADLINE,
    AZURE_CLIENT_CERTIFICATE_FILE, AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE, AZURE_CLIENT_ID,
    AZURE_CLIENT_SECRET_ENV, AZURE_CLIENT_SECRET_FILE, AZURE_CLOUD, AZURE_CONNECT_TIMEOUT,
    AZURE_DECRYPT_ONLY_KEYS, AZURE_FEDERATED_TOKEN_FILE,
    AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK, AZURE_JSON, AZURE_KEY_NAME, AZURE_KEY_VERSION,
    AZURE_LEGACY_CLUSTER_SEED_FILE, AZURE_LEGACY_KEY_VERSIONS, AZURE_MANAGED_HSM_SUFFIX,
    AZURE_MANAGED_IDENTITY_CLIENT_ID, AZURE_MANAGED_IDENTITY_OBJECT_ID,
    AZURE_MANAGED_IDENTITY_RESOURCE_ID, AZURE_OCT_WRAP_ALGORITHM, AZURE_REQUEST_TIMEOUT,
    AZURE_SELF_TEST_INTERVAL, AZURE_TENANT_ID, AZURE_VAULT_SUFFIX, AZURE_VAULT_URL, Setting,
    Sources, duration_in, parse_env_name, parse_path,
};
use crate::envelope::legacy;
use crate::provider::LegacyCiphertext;
use crate::provider::azure::client::WrapAlgorithm;
use crate::provider::azure::key_id::{KeyRef, is_valid_version, parse_vault_url};
use crate::provider::azure::{AzureConfig, DecryptOnlyKey, KeyVersionChoice};

/// A required setting that no source gives.
fn required(setting: &Setting, what: &str) -> ConfigError {
    setting.invalid("", format!("{what} (required by provider azure)"))
}

/// The setting's trimmed value checked by `parse`, or `None` when no source gives it.
fn parse<T>(
    setting: &Setting,
    sources: Sources<'_>,
    parse: impl FnOnce(&Setting, &str) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    setting
        .trimmed(sources)
        .map(|value| parse(setting, value))
        .transpose()
}

/// Every `azure:` setting.
pub(super) fn resolve(sources: Sources<'_>) -> Result<AzureConfig, ConfigError> {
    let key = key(sources)?;
    let key_version = key_version(sources)?;
    let decrypt_only_keys = decrypt_only_keys(sources, &key)?;
    let legacy_key_versions = legacy_key_versions(sources)?;
    let oct_wrap_algorithm = oct_wrap_algorithm(sources)?;
    let auth = auth(sources)?;
    let cloud = cloud(sources)?;
    let (retry, transport) = transport(sources)?;
    let self_test_interval = parse(
        &AZURE_SELF_TEST_INTERVAL,
        sources,
        duration_in(Duration::ZERO, Duration::from_secs(24 * 3600)),
    )?
    .unwrap_or(AzureConfig::DEFAULT_SELF_TEST_INTERVAL);
    let insecure_skip_challenge_resource_check = insecure_skip_challenge_resource_check(sources)?;
    Ok(AzureConfig {
        key,
        key_version,
        decrypt_only_keys,
        oct_wrap_algorithm,
        legacy_key_versions,
        auth,
        cloud: cloud.name,
        authority_host: cloud.authority_host,
        vault_suffix: cloud.vault_suffix,
        managed_hsm_suffix: cloud.managed_hsm_suffix,
        transport,
        retry,
        self_test_interval,
        insecure_skip_challenge_resource_check,
    })
}

// The key.

/// `azure.vault_url` and `azure.key_name`: the key that wraps new KEKs.
fn key(sources: Sources<'_>) -> Result<KeyRef, ConfigError> {
    let vault_url = AZURE_VAULT_URL.trimmed(sources).ok_or_else(|| {
        required(
            &AZURE_VAULT_URL,
            "the vault's URL, e.g. https://myvault.vault.azure.net/",
        )
    })?;
    parse_vault_url(vault_url).map_err(|reason| AZURE_VAULT_URL.invalid(vault_url, reason))?;
    let key_name = AZURE_KEY_NAME
        .trimmed(sources)
        .ok_or_else(|| required(&AZURE_KEY_NAME, "the name of the key that wraps new KEKs"))?;
    KeyRef::new(vault_url, key_name).map_err(|reason| AZURE_KEY_NAME.invalid(key_name, reason))
}

/// `azure.key_version`: latest (the default) or a pinned version.
fn key_version(sources: Sources<'_>) -> Result<KeyVersionChoice, ConfigError> {
    match AZURE_KEY_VERSION.trimmed(sources) {
        None | Some("latest") => Ok(KeyVersionChoice::Latest),
        Some(version) if is_valid_version(version) => {
            Ok(KeyVersionChoice::Pinned(version.to_owned()))
        }
        Some(version) => Err(AZURE_KEY_VERSION.invalid(
            version,
            "\"latest\" or a key version (32 lowercase hex digits)",
        )),
    }
}

/// `azure.decrypt_only_keys`: key URLs, each once, none the current key.
fn decrypt_only_keys(
    sources: Sources<'_>,
    key: &KeyRef,
) -> Result<Vec<DecryptOnlyKey>, ConfigError> {
    let listed = AZURE_DECRYPT_ONLY_KEYS.raw(sources).unwrap_or_default();
    let mut keys: Vec<DecryptOnlyKey> = Vec::new();
    for entry in listed.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (old, version) = KeyRef::parse_key_url(entry)
            .map_err(|reason| AZURE_DECRYPT_ONLY_KEYS.invalid(entry, reason))?;
        let entry_key = DecryptOnlyKey { key: old, version };
        if entry_key.key == *key || keys.contains(&entry_key) {
            return Err(AZURE_DECRYPT_ONLY_KEYS.invalid(
                entry,
                "keys that appear once and differ from azure.vault_url/azure.key_name (every \
                 version of that key already decrypts)",
            ));
        }
        keys.push(entry_key);
    }
    Ok(keys)
}

/// `azure.legacy_key_versions`: versions of `azure.key_name` (32 lowercase hex each, each once)
/// that Azure's Go KMS plugin encrypted with.
fn legacy_key_versions(sources: Sources<'_>) -> Result<Vec<String>, ConfigError> {
    let listed = AZURE_LEGACY_KEY_VERSIONS.raw(sources).unwrap_or_default();
    let mut versions: Vec<String> = Vec::new();
    for entry in listed.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if !is_valid_version(entry) || versions.iter().any(|v| v == entry) {
            return Err(AZURE_LEGACY_KEY_VERSIONS.invalid(
                entry,
                "versions of azure.key_name, 32 lowercase hex digits each, each listed once",
            ));
        }
        versions.push(entry.to_owned());
    }
    Ok(versions)
}

/// `azure.legacy_cluster_seed_file`: the seed file of the Go plugin's cluster-seed mode, read
/// and checked now (its Key Vault record is decrypted when the first record needs it). Its key
/// version must be one kube-kms reads Go plugin records with: listed in
/// `azure.legacy_key_versions`.
pub(super) fn legacy_cluster_seed(
    sources: Sources<'_>,
) -> Result<Option<LegacyCiphertext>, ConfigError> {
    let setting = &AZURE_LEGACY_CLUSTER_SEED_FILE;
    let Some(path) = parse(setting, sources, parse_path)? else {
        return Ok(None);
    };
    let shown = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|error| {
        setting.invalid(
            &shown,
            format!("a readable file, the Go plugin's --encrypted-cluster-seed-file ({error})"),
        )
    })?;
    let (record, version) = legacy::parse_seed_file(&bytes)
        .map_err(|error| setting.invalid(&shown, error.to_string()))?;
    if !legacy_key_versions(sources)?.contains(&version) {
        return Err(setting.invalid(
            &shown,
            format!(
                "a seed encrypted with a version listed in azure.legacy_key_versions (this one \
                 names {version}: add it there)"
            ),
        ));
    }
    Ok(Some(record))
}

/// `azure.oct_wrap_algorithm`, A256KW by default.
fn oct_wrap_algorithm(sources: Sources<'_>) -> Result<WrapAlgorithm, ConfigError> {
    match AZURE_OCT_WRAP_ALGORITHM.trimmed(sources) {
        None | Some("A256KW") => Ok(WrapAlgorithm::A256Kw),
        Some("CKM_AES_KEY_WRAP_PAD") => Ok(WrapAlgorithm::CkmAesKeyWrapPad),
        Some(other) => Err(AZURE_OCT_WRAP_ALGORITHM.invalid(
            other,
            "A256KW or CKM_AES_KEY_WRAP_PAD (RSA keys always use RSA-OAEP-256)",
        )),
    }
}

// Authentication.

/// Every authentication setting.
fn auth(sources: Sources<'_>) -> Result<AuthSettings, ConfigError> {
    let mode = parse(&AZURE_AUTH, sources, |setting, mode| {
        AuthMode::parse(mode).ok_or_else(|| setting.invalid(mode, AuthMode::ACCEPTED))
    })?
    .unwrap_or(AuthMode::Auto);
    let tenant_id = parse(&AZURE_TENANT_ID, sources, parse_tenant)?;
    let client_id = parse(&AZURE_CLIENT_ID, sources, parse_guid)?;
    let managed_identity = managed_identity(sources)?;
    let client_secret = client_secret(sources)?;
    let path = |setting: &Setting| parse(setting, sources, parse_path);
    Ok(AuthSettings {
        mode,
        tenant_id,
        client_id,
        managed_identity,
        federated_token_file: path(&AZURE_FEDERATED_TOKEN_FILE)?,
        client_secret,
        client_certificate_file: path(&AZURE_CLIENT_CERTIFICATE_FILE)?,
        client_certificate_password: path(&AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE)?
            .map(SecretSource::File),
        azure_json: path(&AZURE_JSON)?
            .unwrap_or_else(|| PathBuf::from(azure_access::auth::DEFAULT_AZURE_JSON)),
    })
}

/// A tenant GUID or domain.
fn parse_tenant(setting: &Setting, tenant: &str) -> Result<String, ConfigError> {
    if is_guid(tenant) || is_dns_name(tenant) {
        Ok(tenant.to_owned())
    } else {
        Err(setting.invalid(
            tenant,
            "a tenant GUID or domain, e.g. contoso.onmicrosoft.com",
        ))
    }
}

/// A GUID, in lowercase.
fn parse_guid(setting: &Setting, value: &str) -> Result<String, ConfigError> {
    if is_guid(value) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(setting.invalid(value, "a GUID such as 00000000-0000-0000-0000-000000000000"))
    }
}

/// At most one of `azure.managed_identity_client_id`, `_object_id` and `_resource_id`.
fn managed_identity(sources: Sources<'_>) -> Result<Option<ManagedId>, ConfigError> {
    let managed = [
        parse(&AZURE_MANAGED_IDENTITY_CLIENT_ID, sources, parse_guid)?.map(ManagedId::ClientId),
        parse(&AZURE_MANAGED_IDENTITY_OBJECT_ID, sources, parse_guid)?.map(ManagedId::ObjectId),
        parse(
            &AZURE_MANAGED_IDENTITY_RESOURCE_ID,
            sources,
            |setting, id| {
                if id.starts_with("/subscriptions/") && id.bytes().all(|b| b.is_ascii_graphic()) {
                    Ok(ManagedId::ResourceId(id.to_owned()))
                } else {
                    Err(setting.invalid(
                        id,
                        "an ARM resource id, /subscriptions/…/userAssignedIdentities/{name}",
                    ))
                }
            },
        )?,
    ];
    let mut managed = managed.into_iter().flatten();
    let managed_identity = managed.next();
    if managed.next().is_some() {
        return Err(AZURE_MANAGED_IDENTITY_CLIENT_ID.invalid(
            "(several)",
            "one of azure.managed_identity_client_id, _object_id or _resource_id",
        ));
    }
    Ok(managed_identity)
}

/// `azure.client_secret_file` or `azure.client_secret_env`, at most one.
fn client_secret(sources: Sources<'_>) -> Result<Option<SecretSource>, ConfigError> {
    match (
        AZURE_CLIENT_SECRET_FILE.trimmed(sources),
        AZURE_CLIENT_SECRET_ENV.trimmed(sources),
    ) {
        (Some(path), None) => Ok(Some(SecretSource::File(parse_path(
            &AZURE_CLIENT_SECRET_FILE,
            path,
        )?))),
        (None, Some(name)) => Ok(Some(SecretSource::Env(parse_env_name(
            &AZURE_CLIENT_SECRET_ENV,
            name,
            "secret",
        )?))),
        (Some(path), Some(_)) => Err(AZURE_CLIENT_SECRET_FILE.invalid(
            path,
            "either a secret file or azure.client_secret_env, not both",
        )),
        (None, None) => Ok(None),
    }
}

// The cloud.

/// The cloud settings, resolved.
struct CloudSettings {
    name: Option<CloudName>,
    authority_host: Option<String>,
    vault_suffix: Option<String>,
    managed_hsm_suffix: Option<String>,
}

/// `azure.cloud`, `azure.authority_host` and the DNS suffixes; a custom cloud needs an
/// authority and a vault suffix.
fn cloud(sources: Sources<'_>) -> Result<CloudSettings, ConfigError> {
    let name = parse(&AZURE_CLOUD, sources, |setting, name| {
        CloudName::parse(name).ok_or_else(|| setting.invalid(name, CloudName::ACCEPTED))
    })?;
    let authority_host = parse(&AZURE_AUTHORITY_HOST, sources, |setting, url| {
        parse_vault_url(url).map_err(|_| {
            setting.invalid(
                url,
                "an https URL without a path, e.g. https://login.microsoftonline.com",
            )
        })?;
        Ok(url.trim_end_matches('/').to_owned())
    })?;
    let vault_suffix = parse(&AZURE_VAULT_SUFFIX, sources, parse_dns_suffix)?;
    let managed_hsm_suffix = parse(&AZURE_MANAGED_HSM_SUFFIX, sources, parse_dns_suffix)?;
    if name == Some(CloudName::Custom) {
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
    Ok(CloudSettings {
        name,
        authority_host,
        vault_suffix,
        managed_hsm_suffix,
    })
}

/// A DNS suffix, in lowercase without a leading dot.
fn parse_dns_suffix(setting: &Setting, value: &str) -> Result<String, ConfigError> {
    let trimmed = value.trim_start_matches('.').to_ascii_lowercase();
    if is_dns_name(&trimmed) {
        Ok(trimmed)
    } else {
        Err(setting.invalid(value, "a DNS suffix such as vault.azure.net"))
    }
}

// The transport.

/// `azure.call_deadline`, `azure.ca_file`, `azure.connect_timeout` and
/// `azure.request_timeout`, on top of the retry policy's and transport's defaults.
fn transport(sources: Sources<'_>) -> Result<(RetryPolicy, TransportOptions), ConfigError> {
    let duration = |setting: &Setting, min: u64, max: u64, default: Duration| {
        Ok::<_, ConfigError>(
            parse(
                setting,
                sources,
                duration_in(Duration::from_millis(min), Duration::from_millis(max)),
            )?
            .unwrap_or(default),
        )
    };
    let defaults = TransportOptions::default();
    let mut retry = RetryPolicy::DEFAULT;
    retry.deadline = duration(&AZURE_CALL_DEADLINE, 100, 30_000, retry.deadline)?;
    let transport = TransportOptions {
        ca_file: parse(&AZURE_CA_FILE, sources, parse_path)?,
        connect_timeout: duration(&AZURE_CONNECT_TIMEOUT, 10, 30_000, defaults.connect_timeout)?,
        request_timeout: duration(&AZURE_REQUEST_TIMEOUT, 10, 60_000, defaults.request_timeout)?,
    };
    Ok((retry, transport))
}

/// `azure.insecure_skip_challenge_resource_check`, false by default.
fn insecure_skip_challenge_resource_check(sources: Sources<'_>) -> Result<bool, ConfigError> {
    match AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK.trimmed(sources) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => {
            Err(AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK.invalid(other, "true or false"))
        }
    }
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
    value.contains('.') && azure_access::cloud::is_dns_name(value)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::test_support::{env, error_of};
    use super::super::{Config, ConfigArgs, ProviderConfig};
    use super::*;

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
        assert_eq!(azure.self_test_interval, Duration::from_secs(600));
        assert!(!azure.insecure_skip_challenge_resource_check);

        let version = "0123456789abcdef0123456789abcdef";
        let yaml = format!(
            "{AZURE_YAML}  decrypt_only_keys:\n    - https://old.vault.azure.net/keys/kek\n    \
             - https://kv.vault.azure.net/keys/older/{version}\n  cloud: china\n  \
             ca_file: /etc/kube-kms/ca.pem\n  call_deadline: 1500ms\n  \
             self_test_interval: 1h\n"
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
        assert_eq!(azure.self_test_interval, Duration::from_secs(3600));
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
                format!("{AZURE_YAML}  self_test_interval: 2d\n"),
                "azure.self_test_interval",
            ),
            (
                format!("{AZURE_YAML}  self_test_interval: 10\n"),
                "azure.self_test_interval",
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

    #[test]
    fn legacy_key_versions_are_32_hex_each_listed_once() {
        let version = "0123456789abcdef0123456789abcdef";
        let other = "fedcba9876543210fedcba9876543210";
        let yaml = format!("{AZURE_YAML}  legacy_key_versions: [{version}, {other}]\n");
        let azure = azure_of(Config::from_yaml(&yaml, &ConfigArgs::default(), &env()).unwrap());
        assert_eq!(azure.legacy_key_versions, [version, other]);
        let args = ConfigArgs {
            azure_legacy_key_versions: Some(format!("{other}, {version}")),
            ..Default::default()
        };
        let azure = azure_of(Config::from_yaml(AZURE_YAML, &args, &env()).unwrap());
        assert_eq!(azure.legacy_key_versions, [other, version]);
        let default =
            azure_of(Config::from_yaml(AZURE_YAML, &ConfigArgs::default(), &env()).unwrap());
        assert!(default.legacy_key_versions.is_empty());
        for bad in [
            format!("[{version}, {version}]"),
            "[latest]".to_owned(),
            "[ABC]".to_owned(),
        ] {
            let yaml = format!("{AZURE_YAML}  legacy_key_versions: {bad}\n");
            let error = error_of(&yaml, &ConfigArgs::default());
            assert!(error.contains("azure.legacy_key_versions"), "{error}");
        }
    }

    #[test]
    fn the_legacy_cluster_seed_file_is_read_at_load_and_must_name_a_listed_version() {
        let version = "0123456789abcdef0123456789abcdef";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seed.json");
        std::fs::write(
            &file,
            crate::envelope::legacy::tests_support::seed_file(version),
        )
        .unwrap();
        let with = |versions: &str, path: &std::path::Path| {
            format!(
                "{AZURE_YAML}  legacy_key_versions: [{versions}]\n  \
                 legacy_cluster_seed_file: {}\n",
                path.display()
            )
        };
        let config =
            Config::from_yaml(&with(version, &file), &ConfigArgs::default(), &env()).unwrap();
        let seed = config.legacy_cluster_seed.expect("the seed's record");
        assert_eq!(seed.rsa, [0xa5; 256]);
        assert!(
            Config::from_yaml(AZURE_YAML, &ConfigArgs::default(), &env())
                .unwrap()
                .legacy_cluster_seed
                .is_none()
        );

        let other = "fedcba9876543210fedcba9876543210";
        let error = error_of(&with(other, &file), &ConfigArgs::default());
        assert!(error.contains("azure.legacy_cluster_seed_file"), "{error}");
        assert!(
            error.contains(&format!("names {version}: add it")),
            "{error}"
        );

        let missing = dir.path().join("missing.json");
        let error = error_of(&with(version, &missing), &ConfigArgs::default());
        assert!(error.contains("azure.legacy_cluster_seed_file"), "{error}");
        assert!(error.contains("a readable file"), "{error}");

        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, b"{\"Ciphertext\": 1}").unwrap();
        let error = error_of(&with(version, &garbage), &ConfigArgs::default());
        assert!(error.contains("not a cluster seed file"), "{error}");
    }
}
