//! The config file as written: YAML parsed into raw text per key, checked later in one place with
//! the flags' values. Unknown keys are refused so a typo is not silently ignored. The file
//! structs' field names are the YAML keys; a test in `settings.rs` holds each `Setting`'s key to
//! them. Never logs or echoes the file's contents beyond the parser's own error (which names a
//! key and line); no key holds a secret.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// The config file, as written. Unknown keys are refused so a typo is not silently ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) socket: Option<Scalar>,
    pub(super) socket_mode: Option<Scalar>,
    pub(super) socket_group: Option<Scalar>,
    pub(super) refuse_root: Option<Scalar>,
    pub(super) state_dir: Option<Scalar>,
    pub(super) provider: Option<Scalar>,
    pub(super) local: Option<LocalFileConfig>,
    pub(super) pkcs11: Option<Pkcs11FileConfig>,
    pub(super) azure: Option<AzureFileConfig>,
    pub(super) refresh_interval: Option<Scalar>,
    pub(super) kek_max_encryptions: Option<Scalar>,
    pub(super) kek_max_age: Option<Scalar>,
    pub(super) cache_size: Option<Scalar>,
    pub(super) remote_timeout: Option<Scalar>,
    pub(super) max_concurrent_unwraps: Option<Scalar>,
    pub(super) log_format: Option<Scalar>,
    pub(super) log_level: Option<Scalar>,
    pub(super) health_address: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LocalFileConfig {
    pub(super) key_dir: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Pkcs11FileConfig {
    pub(super) module: Option<Scalar>,
    pub(super) token_label: Option<Scalar>,
    pub(super) slot: Option<Scalar>,
    pub(super) pin_file: Option<Scalar>,
    pub(super) pin_env: Option<Scalar>,
    pub(super) key_label: Option<Scalar>,
    pub(super) decrypt_only_key_labels: Option<ScalarList>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AzureFileConfig {
    pub(super) vault_url: Option<Scalar>,
    pub(super) key_name: Option<Scalar>,
    pub(super) key_version: Option<Scalar>,
    pub(super) legacy_key_versions: Option<ScalarList>,
    pub(super) legacy_cluster_seed_file: Option<Scalar>,
    pub(super) decrypt_only_keys: Option<ScalarList>,
    pub(super) oct_wrap_algorithm: Option<Scalar>,
    pub(super) auth: Option<Scalar>,
    pub(super) tenant_id: Option<Scalar>,
    pub(super) client_id: Option<Scalar>,
    pub(super) managed_identity_client_id: Option<Scalar>,
    pub(super) managed_identity_object_id: Option<Scalar>,
    pub(super) managed_identity_resource_id: Option<Scalar>,
    pub(super) federated_token_file: Option<Scalar>,
    pub(super) client_secret_file: Option<Scalar>,
    pub(super) client_secret_env: Option<Scalar>,
    pub(super) client_certificate_file: Option<Scalar>,
    pub(super) client_certificate_password_file: Option<Scalar>,
    pub(super) azure_json: Option<Scalar>,
    pub(super) cloud: Option<Scalar>,
    pub(super) authority_host: Option<Scalar>,
    pub(super) vault_suffix: Option<Scalar>,
    pub(super) managed_hsm_suffix: Option<Scalar>,
    pub(super) ca_file: Option<Scalar>,
    pub(super) call_deadline: Option<Scalar>,
    pub(super) connect_timeout: Option<Scalar>,
    pub(super) request_timeout: Option<Scalar>,
    pub(super) self_test_interval: Option<Scalar>,
    pub(super) insecure_skip_challenge_resource_check: Option<Scalar>,
}

/// A YAML list of scalars, or one string of comma-separated items (as flags and environment
/// variables give lists), kept as one comma-separated text.
#[derive(Debug, Clone)]
pub(super) struct ScalarList(String);

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
pub(super) struct Scalar(String);

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

impl ScalarList {
    /// The items as one comma-separated text.
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

impl Scalar {
    /// The scalar's text.
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

pub(super) fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::File {
        path: path.into(),
        reason: error.to_string(),
    })?;
    parse_file(&text, path)
}

pub(super) fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_saphyr::from_str(text).map_err(|error| ConfigError::File {
        path: path.into(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::ConfigArgs;
    use super::super::test_support::error_of;

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let error = error_of("refresh_intervall: 1m", &ConfigArgs::default());
        assert!(error.contains("refresh_intervall"), "{error}");
        let error = error_of("local:\n  keydir: /x\n", &ConfigArgs::default());
        assert!(error.contains("keydir"), "{error}");
    }
}
