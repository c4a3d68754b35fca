//! Which key_ids kube-kms's own configuration can name, and what each one is: the current key
//! version, a key kept to decrypt only, another version of the configured key, or unknown to
//! this configuration. Built from the validated [`Config`] alone — the key service is never
//! contacted:
//!
//! - local key ring: every version's key_id is read from the key ring's files (the newest is
//!   current, older ones decrypt only);
//! - Azure: a key_id is the SHA-256 of the versioned key URL, so a pinned version and every
//!   versioned decrypt-only key are known up front; a record's own `version.kube-kms.io`
//!   annotation names any other version, and is believed only when hashing it with a configured
//!   key gives the record's key_id. With `key_version: latest` the current version is not known
//!   without asking Key Vault: [`KnownKeys::from_config`] takes it as `current_key_id` (what
//!   `kube-kms probe` and Status report) and otherwise says so;
//! - PKCS#11: a key_id needs the token's serial and the key's fingerprint, so keys are named by
//!   the label in the record's version annotation (current label, decrypt-only labels).
//!
//! An annotation is attacker input: it is only ever compared with, or hashed together with,
//! names from the configuration.

use std::collections::HashMap;

use crate::config::{Config, ProviderConfig};
use crate::provider::azure::key_id::{KeyRef, is_valid_version};
use crate::provider::azure::{AzureConfig, KeyVersionChoice};
use crate::provider::local;
use crate::provider::pkcs11::Pkcs11Config;

/// What a key is to this configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyRole {
    /// The key version kube-kms encrypts with now.
    Current,
    /// Another version of the configured key: kube-kms still decrypts it, and nothing new is
    /// written with it.
    EarlierVersion,
    /// A version of the configured key when the current version is not known (`key_version:
    /// latest` without `--current-key-id`).
    ConfiguredKey,
    /// A key the configuration keeps to decrypt only.
    DecryptOnly,
    /// A key_id this configuration does not name: kube-kms with it cannot decrypt.
    Unknown,
}

impl KeyRole {
    /// The role's name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::EarlierVersion => "earlier-version",
            Self::ConfiguredKey => "configured-key",
            Self::DecryptOnly => "decrypt-only",
            Self::Unknown => "unknown",
        }
    }
}

/// A key the configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredKey {
    /// Current or decrypt-only.
    pub role: KeyRole,
    /// What it is, e.g. "local key ring version 2".
    pub description: String,
    /// Its key_id when the configuration alone gives it.
    pub key_id: Option<String>,
    /// How to retire it once no object uses it.
    pub retire: String,
}

/// What one record's key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNaming {
    /// Its role.
    pub role: KeyRole,
    /// What it is.
    pub description: String,
    /// The configured key it belongs to (an index into [`KnownKeys::configured`]).
    pub configured: Option<usize>,
}

impl KeyNaming {
    pub(crate) fn unknown() -> Self {
        Self {
            role: KeyRole::Unknown,
            description: "unknown to this configuration".to_owned(),
            configured: None,
        }
    }
}

/// Where the current key_id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentSource {
    /// kube-kms's configuration names it.
    Configuration,
    /// `--current-key-id`.
    Flag,
    /// Nothing names it.
    Unknown,
}

impl CurrentSource {
    /// The name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Configuration => "configuration",
            Self::Flag => "flag",
            Self::Unknown => "unknown",
        }
    }
}

enum Provider {
    Local {
        /// Version number → index into `configured`.
        versions: HashMap<String, usize>,
    },
    Azure {
        /// The configured key (index 0 in `configured`).
        key: KeyRef,
        /// Decrypt-only keys of any version: the key and its index in `configured`.
        any_version: Vec<(KeyRef, usize)>,
        /// Decrypt-only keys pinned to one version: (version, index).
        pinned: Vec<(String, usize)>,
    },
    Pkcs11 {
        /// Label → index into `configured`.
        labels: HashMap<String, usize>,
    },
}

/// The key_ids and key names kube-kms's configuration knows.
pub struct KnownKeys {
    provider_kind: &'static str,
    provider: Provider,
    configured: Vec<ConfiguredKey>,
    by_key_id: HashMap<String, usize>,
    current_key_id: Option<String>,
    current_source: CurrentSource,
    notes: Vec<String>,
}

impl KnownKeys {
    /// The keys `config` names. `current_key_id` (from `--current-key-id`) names the current
    /// version where the configuration cannot (Azure `key_version: latest`), and overrides the
    /// configuration's with a note where both exist and differ.
    pub fn from_config(config: &Config, current_key_id: Option<&str>) -> Self {
        let mut known = match &config.provider {
            ProviderConfig::Local { key_dir } => Self::local(key_dir),
            ProviderConfig::Azure(azure) => {
                Self::azure(azure, config.legacy_cluster_seed.is_some())
            }
            ProviderConfig::Pkcs11(pkcs11) => Self::pkcs11(pkcs11),
        };
        if let Some(flag) = current_key_id {
            match &known.current_key_id {
                Some(configured) if configured != flag => known.notes.push(format!(
                    "--current-key-id {flag} differs from the configuration's current key_id \
                     {configured}; the census takes --current-key-id as current"
                )),
                _ => {}
            }
            if known.current_source != CurrentSource::Configuration
                || known.current_key_id.as_deref() != Some(flag)
            {
                known.current_key_id = Some(flag.to_owned());
                known.current_source = CurrentSource::Flag;
                if let Some(current) = known.configured.first_mut()
                    && current.role == KeyRole::Current
                    && current.key_id.is_none()
                {
                    current.key_id = Some(flag.to_owned());
                }
            }
        }
        known
    }

    fn empty(kind: &'static str, provider: Provider) -> Self {
        Self {
            provider_kind: kind,
            provider,
            configured: Vec::new(),
            by_key_id: HashMap::new(),
            current_key_id: None,
            current_source: CurrentSource::Unknown,
            notes: Vec::new(),
        }
    }

    fn add(&mut self, key: ConfiguredKey) -> usize {
        let index = self.configured.len();
        if let Some(key_id) = &key.key_id {
            self.by_key_id.entry(key_id.clone()).or_insert(index);
        }
        self.configured.push(key);
        index
    }

    fn local(key_dir: &std::path::Path) -> Self {
        let mut known = Self::empty(
            "local",
            Provider::Local {
                versions: HashMap::new(),
            },
        );
        let entries = match local::list(key_dir) {
            Ok(entries) => entries,
            Err(error) => {
                known.notes.push(format!(
                    "the local key ring {} cannot be read ({error}); no key_id is named",
                    key_dir.display()
                ));
                return known;
            }
        };
        if entries.is_empty() {
            known.notes.push(format!(
                "the local key ring {} holds no keys; no key_id is named",
                key_dir.display()
            ));
        }
        // Current (the newest) first, then older versions, newest to oldest.
        for (position, entry) in entries.iter().rev().enumerate() {
            let role = if position == 0 {
                KeyRole::Current
            } else {
                KeyRole::DecryptOnly
            };
            let index = known.add(ConfiguredKey {
                role,
                description: format!("local key ring version {}", entry.version),
                key_id: Some(entry.key_id.clone()),
                retire: format!(
                    "delete v{}.key from {}, keeping a backup until you are sure",
                    entry.version,
                    key_dir.display()
                ),
            });
            if let Provider::Local { versions } = &mut known.provider {
                versions.insert(entry.version.to_string(), index);
            }
            if position == 0 {
                known.current_key_id = Some(entry.key_id.clone());
                known.current_source = CurrentSource::Configuration;
            }
        }
        known
    }

    fn azure(azure: &AzureConfig, reads_cluster_seed_records: bool) -> Self {
        let key = azure.key.clone();
        let mut known = Self::empty(
            "azure",
            Provider::Azure {
                key: key.clone(),
                any_version: Vec::new(),
                pinned: Vec::new(),
            },
        );
        match &azure.key_version {
            KeyVersionChoice::Pinned(version) => {
                let key_id = key.key_id(version);
                known.current_key_id = Some(key_id.clone());
                known.current_source = CurrentSource::Configuration;
                known.add(ConfiguredKey {
                    role: KeyRole::Current,
                    description: format!(
                        "Key Vault key {:?} version {version} in {}",
                        key.name(),
                        key.host()
                    ),
                    key_id: Some(key_id),
                    retire: String::new(),
                });
            }
            KeyVersionChoice::Latest => {
                known.notes.push(format!(
                    "azure.key_version is latest: which version of key {:?} is current is not \
                     known without asking Key Vault; pass --current-key-id (the key_id `kube-kms \
                     probe` prints) to have it named",
                    key.name()
                ));
                known.add(ConfiguredKey {
                    role: KeyRole::Current,
                    description: format!(
                        "Key Vault key {:?} in {}, its latest version",
                        key.name(),
                        key.host()
                    ),
                    key_id: None,
                    retire: String::new(),
                });
            }
        }
        for old in &azure.decrypt_only_keys {
            let (description, key_id) = match &old.version {
                Some(version) => (
                    format!(
                        "Key Vault key {:?} version {version} in {}",
                        old.key.name(),
                        old.key.host()
                    ),
                    Some(old.key.key_id(version)),
                ),
                None => (
                    format!(
                        "Key Vault key {:?} in {}, every version",
                        old.key.name(),
                        old.key.host()
                    ),
                    None,
                ),
            };
            let url = match &old.version {
                Some(version) => old.key.version_url(version),
                None => format!("https://{}/keys/{}", old.key.host(), old.key.name()),
            };
            let index = known.add(ConfiguredKey {
                role: KeyRole::DecryptOnly,
                description,
                key_id,
                retire: format!(
                    "remove {url} from azure.decrypt_only_keys, then disable or delete it in the \
                     vault"
                ),
            });
            if let Provider::Azure {
                any_version,
                pinned,
                ..
            } = &mut known.provider
            {
                match &old.version {
                    Some(version) => pinned.push((version.clone(), index)),
                    None => any_version.push((old.key.clone(), index)),
                }
            }
        }
        // Azure's Go KMS plugin's records: read while these settings name their keys.
        for version in &azure.legacy_key_versions {
            known.add(ConfiguredKey {
                role: KeyRole::DecryptOnly,
                description: format!(
                    "Key Vault key {:?} version {version} in {}, Azure Go KMS plugin records",
                    key.name(),
                    key.host()
                ),
                key_id: Some(key.key_id(version)),
                retire: format!(
                    "remove {version} from azure.legacy_key_versions (and kube-kms's Key Vault \
                     decrypt permission, once no version is left there)"
                ),
            });
        }
        if reads_cluster_seed_records {
            known.add(ConfiguredKey {
                role: KeyRole::DecryptOnly,
                description: "the Azure Go KMS plugin's cluster seed \
                              (azure.legacy_cluster_seed_file)"
                    .to_owned(),
                key_id: Some(crate::envelope::legacy::CLUSTER_SEED_KEY_ID.to_owned()),
                retire: "remove azure.legacy_cluster_seed_file, then the seed file".to_owned(),
            });
        }
        known
    }

    fn pkcs11(pkcs11: &Pkcs11Config) -> Self {
        let mut known = Self::empty(
            "pkcs11",
            Provider::Pkcs11 {
                labels: HashMap::new(),
            },
        );
        known.notes.push(
            "PKCS#11 key_ids depend on the token, which the census does not open: records are \
             named by the key label in their version annotation"
                .to_owned(),
        );
        let labels = std::iter::once((pkcs11.key_label.as_str(), KeyRole::Current)).chain(
            pkcs11
                .decrypt_only_key_labels
                .iter()
                .map(|label| (label.as_str(), KeyRole::DecryptOnly)),
        );
        for (label, role) in labels {
            let index = known.add(ConfiguredKey {
                role,
                description: format!("PKCS#11 key {label:?}"),
                key_id: None,
                retire: format!(
                    "remove {label:?} from pkcs11.decrypt_only_key_labels, then destroy the key \
                     on the token"
                ),
            });
            if let Provider::Pkcs11 { labels } = &mut known.provider {
                labels.insert(label.to_owned(), index);
            }
        }
        known
    }

    /// `local`, `azure` or `pkcs11`.
    pub fn provider_kind(&self) -> &'static str {
        self.provider_kind
    }

    /// The keys the configuration names, the current one first.
    pub fn configured(&self) -> &[ConfiguredKey] {
        &self.configured
    }

    /// The current key_id, if known.
    pub fn current_key_id(&self) -> Option<&str> {
        self.current_key_id.as_deref()
    }

    /// Where the current key_id came from.
    pub fn current_source(&self) -> CurrentSource {
        self.current_source
    }

    /// What the reader should know about how keys were named.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Names a KMS v2 record's key from its key_id and, if it is kube-kms's, the key version
    /// in its annotations.
    pub fn name(&self, key_id: &str, kube_kms_version: Option<&str>) -> KeyNaming {
        if self.current_key_id.as_deref() == Some(key_id) {
            // --current-key-id may name a key the configuration keeps to decrypt only (a probe
            // of a server not yet reloaded): its records then count against that key, so its
            // verdict can never say it is unused.
            if let Some(&index) = self.by_key_id.get(key_id) {
                return KeyNaming {
                    role: KeyRole::Current,
                    description: self.configured[index].description.clone(),
                    configured: Some(index),
                };
            }
            let index = self.configured.first().map(|_| 0);
            let description = match (&self.provider, kube_kms_version) {
                (Provider::Azure { key, .. }, Some(version)) if key.key_id(version) == key_id => {
                    format!(
                        "Key Vault key {:?} version {version} in {}",
                        key.name(),
                        key.host()
                    )
                }
                _ => self.configured.first().map_or_else(
                    || "the current key (--current-key-id)".to_owned(),
                    |key| key.description.clone(),
                ),
            };
            return KeyNaming {
                role: KeyRole::Current,
                description,
                configured: index,
            };
        }
        if let Some(&index) = self.by_key_id.get(key_id) {
            let key = &self.configured[index];
            let role = match key.role {
                // A key_id the configuration names as current, overridden by the flag.
                KeyRole::Current => KeyRole::EarlierVersion,
                role => role,
            };
            return KeyNaming {
                role,
                description: key.description.clone(),
                configured: Some(index),
            };
        }
        let Some(version) = kube_kms_version else {
            return KeyNaming::unknown();
        };
        match &self.provider {
            Provider::Local { .. } => KeyNaming::unknown(),
            Provider::Azure {
                key, any_version, ..
            } => {
                if !is_valid_version(version) {
                    return KeyNaming::unknown();
                }
                if key.key_id(version) == key_id {
                    let role = if self.current_key_id.is_some() {
                        KeyRole::EarlierVersion
                    } else {
                        KeyRole::ConfiguredKey
                    };
                    return KeyNaming {
                        role,
                        description: format!(
                            "Key Vault key {:?} version {version} in {}",
                            key.name(),
                            key.host()
                        ),
                        configured: Some(0),
                    };
                }
                any_version
                    .iter()
                    .find(|(old, _)| old.key_id(version) == key_id)
                    .map_or_else(KeyNaming::unknown, |(old, index)| KeyNaming {
                        role: KeyRole::DecryptOnly,
                        description: format!(
                            "Key Vault key {:?} version {version} in {}",
                            old.name(),
                            old.host()
                        ),
                        configured: Some(*index),
                    })
            }
            Provider::Pkcs11 { labels } => {
                labels
                    .get(version)
                    .map_or_else(KeyNaming::unknown, |&index| {
                        let key = &self.configured[index];
                        let role = match key.role {
                            // The current label under another key_id than --current-key-id:
                            // the key behind the label was replaced.
                            KeyRole::Current if self.current_key_id.is_some() => {
                                KeyRole::EarlierVersion
                            }
                            role => role,
                        };
                        KeyNaming {
                            role,
                            description: key.description.clone(),
                            configured: Some(index),
                        }
                    })
            }
        }
    }

    /// Names the key of a kube-kms KMS v1 record, which carries only the key version. Returns
    /// the key_id where the configuration gives one, the naming, and the decrypt-only keys the
    /// record may be under instead.
    ///
    /// Azure follows the provider's own order (`provider::azure`'s candidates): a decrypt-only
    /// key pinned at exactly this version, else the configured key, whose earlier versions it
    /// reads. A version of the configured key cannot be told from one of a decrypt-only key kept
    /// for every version without asking Key Vault, so those keys are returned as possible: a
    /// verdict must not call them unused.
    pub fn name_v1(&self, version: &str) -> (Option<String>, KeyNaming, Vec<usize>) {
        match &self.provider {
            Provider::Local { versions } => match versions.get(version) {
                Some(&index) => {
                    let key_id = self.configured[index].key_id.clone();
                    let naming = key_id.as_deref().map_or_else(KeyNaming::unknown, |key_id| {
                        self.name(key_id, Some(version))
                    });
                    (key_id, naming, Vec::new())
                }
                None => (None, KeyNaming::unknown(), Vec::new()),
            },
            Provider::Azure {
                key,
                any_version,
                pinned,
            } => {
                if !is_valid_version(version) {
                    return (None, KeyNaming::unknown(), Vec::new());
                }
                if let Some(key_id) = pinned
                    .iter()
                    .find(|(pinned_version, _)| pinned_version == version)
                    .and_then(|&(_, index)| self.configured[index].key_id.clone())
                {
                    let naming = self.name(&key_id, Some(version));
                    return (Some(key_id), naming, Vec::new());
                }
                let key_id = key.key_id(version);
                let naming = self.name(&key_id, Some(version));
                let possible = if naming.role == KeyRole::Current {
                    // The current version is the configured key's own.
                    Vec::new()
                } else {
                    any_version.iter().map(|&(_, index)| index).collect()
                };
                (Some(key_id), naming, possible)
            }
            Provider::Pkcs11 { .. } => (None, self.name("", Some(version)), Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigArgs, DefaultsEnv};

    const V1: &str = "0123456789abcdef0123456789abcdef";
    const V2: &str = "fedcba9876543210fedcba9876543210";

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, &ConfigArgs::default(), &DefaultsEnv::default()).unwrap()
    }

    fn azure(version: &str, decrypt_only: &str) -> Config {
        config(&format!(
            "provider: azure\nazure:\n  vault_url: https://kv.vault.azure.net/\n  key_name: kek\n  \
             key_version: {version}\n  decrypt_only_keys: {decrypt_only}\n"
        ))
    }

    fn kek() -> KeyRef {
        KeyRef::new("https://kv.vault.azure.net/", "kek").unwrap()
    }

    /// Regression: Go plugin records under azure.legacy_key_versions were "unknown to this
    /// configuration" (which says kube-kms cannot read them) although kube-kms reads them.
    #[test]
    fn go_plugin_versions_and_its_cluster_seed_are_decrypt_only_keys_with_how_to_retire_them() {
        let dir = tempfile::tempdir().unwrap();
        let seed_file = dir.path().join("seed.json");
        std::fs::write(
            &seed_file,
            crate::envelope::legacy::tests_support::seed_file(V1),
        )
        .unwrap();
        let known = KnownKeys::from_config(
            &config(&format!(
                "provider: azure\nazure:\n  vault_url: https://kv.vault.azure.net/\n  \
                 key_name: kek\n  key_version: {V2}\n  legacy_key_versions: [{V1}]\n  \
                 legacy_cluster_seed_file: {}\n",
                seed_file.display()
            )),
            None,
        );
        let go_version = known.name(&kek().key_id(V1), None);
        assert_eq!(go_version.role, KeyRole::DecryptOnly);
        assert!(
            go_version.description.contains("Azure Go KMS plugin"),
            "{go_version:?}"
        );
        let seed = known.name("1", None);
        assert_eq!(seed.role, KeyRole::DecryptOnly);
        let retire = &known.configured()[seed.configured.unwrap()].retire;
        assert!(
            retire.contains("azure.legacy_cluster_seed_file"),
            "{retire}"
        );
    }

    #[test]
    fn a_pinned_azure_version_is_current_and_other_versions_are_earlier() {
        let old = KeyRef::new("https://old.vault.azure.net/", "gone").unwrap();
        let known = KnownKeys::from_config(
            &azure(V2, &format!("https://old.vault.azure.net/keys/gone/{V1}")),
            None,
        );
        assert_eq!(known.current_key_id(), Some(kek().key_id(V2).as_str()));
        assert_eq!(known.current_source(), CurrentSource::Configuration);
        assert_eq!(known.name(&kek().key_id(V2), None).role, KeyRole::Current);
        assert_eq!(
            known.name(&kek().key_id(V1), Some(V1)).role,
            KeyRole::EarlierVersion
        );
        let old_naming = known.name(&old.key_id(V1), None);
        assert_eq!(old_naming.role, KeyRole::DecryptOnly);
        assert_eq!(old_naming.configured, Some(1));
        // The annotation is believed only when it hashes to the record's key_id.
        assert_eq!(known.name("not-a-hash", Some(V1)).role, KeyRole::Unknown);
        assert_eq!(
            known.name(&kek().key_id(V1), Some("../../x")).role,
            KeyRole::Unknown
        );
    }

    #[test]
    fn latest_needs_the_current_key_id_from_the_flag() {
        let plain = KnownKeys::from_config(&azure("latest", "\"\""), None);
        assert_eq!(plain.current_key_id(), None);
        assert_eq!(plain.current_source(), CurrentSource::Unknown);
        assert!(plain.notes()[0].contains("--current-key-id"));
        assert_eq!(
            plain.name(&kek().key_id(V1), Some(V1)).role,
            KeyRole::ConfiguredKey
        );

        let flagged = KnownKeys::from_config(&azure("latest", "\"\""), Some(&kek().key_id(V2)));
        assert_eq!(flagged.current_source(), CurrentSource::Flag);
        assert_eq!(
            flagged.name(&kek().key_id(V2), Some(V2)).role,
            KeyRole::Current
        );
        assert_eq!(
            flagged.name(&kek().key_id(V1), Some(V1)).role,
            KeyRole::EarlierVersion
        );
        let (key_id, naming, possible) = flagged.name_v1(V1);
        assert_eq!(key_id, Some(kek().key_id(V1)));
        assert_eq!(naming.role, KeyRole::EarlierVersion);
        assert!(possible.is_empty(), "no decrypt-only key could hold it");
    }

    /// Regression: a v1 record was always credited to the configured key, so a decrypt-only
    /// key pinned at the record's version was called unused although kube-kms reads the record
    /// with it.
    #[test]
    fn a_v1_record_of_a_pinned_decrypt_only_version_is_that_keys() {
        let gone = KeyRef::new("https://old.vault.azure.net/", "gone").unwrap();
        let known = KnownKeys::from_config(
            &azure(V2, &format!("https://old.vault.azure.net/keys/gone/{V1}")),
            None,
        );
        let (key_id, naming, possible) = known.name_v1(V1);
        assert_eq!(key_id, Some(gone.key_id(V1)));
        assert_eq!(naming.role, KeyRole::DecryptOnly);
        assert_eq!(naming.configured, Some(1));
        assert!(possible.is_empty());
    }

    /// A v1 record names only a version: one the configured key does not pin may as well be a
    /// version of a decrypt-only key kept for every version, which must then not look unused.
    #[test]
    fn a_v1_record_may_be_under_a_decrypt_only_key_kept_for_every_version() {
        let known =
            KnownKeys::from_config(&azure(V2, "https://old.vault.azure.net/keys/gone"), None);
        let (key_id, naming, possible) = known.name_v1(V1);
        assert_eq!(key_id, Some(kek().key_id(V1)));
        assert_eq!(naming.role, KeyRole::EarlierVersion);
        assert_eq!(possible, vec![1]);
        let (_, current, possible) = known.name_v1(V2);
        assert_eq!(current.role, KeyRole::Current);
        assert!(
            possible.is_empty(),
            "the current version is the configured key's"
        );
    }

    /// Regression: --current-key-id naming a decrypt-only key (a probe of a server not yet
    /// reloaded) credited its records to the configured key, and the key was called unused.
    #[test]
    fn a_current_key_id_that_names_a_decrypt_only_key_credits_that_key() {
        let gone = KeyRef::new("https://old.vault.azure.net/", "gone").unwrap();
        let known = KnownKeys::from_config(
            &azure(V2, &format!("https://old.vault.azure.net/keys/gone/{V1}")),
            Some(&gone.key_id(V1)),
        );
        let naming = known.name(&gone.key_id(V1), None);
        assert_eq!(naming.role, KeyRole::Current);
        assert_eq!(naming.configured, Some(1));
        assert!(
            naming.description.contains("gone"),
            "{}",
            naming.description
        );
    }

    #[test]
    fn an_unversioned_decrypt_only_key_is_named_through_the_annotation() {
        let old = KeyRef::new("https://old.vault.azure.net/", "gone").unwrap();
        let known =
            KnownKeys::from_config(&azure(V2, "https://old.vault.azure.net/keys/gone"), None);
        let naming = known.name(&old.key_id(V1), Some(V1));
        assert_eq!(naming.role, KeyRole::DecryptOnly);
        assert!(naming.description.contains(V1), "{}", naming.description);
        assert_eq!(known.name(&old.key_id(V1), None).role, KeyRole::Unknown);
    }

    #[test]
    fn pkcs11_keys_are_named_by_label() {
        let known = KnownKeys::from_config(
            &config(
                "provider: pkcs11\npkcs11:\n  module: /usr/lib/softhsm/libsofthsm2.so\n  \
                 token_label: t\n  pin_env: PIN\n  key_label: kek-2\n  \
                 decrypt_only_key_labels: kek-1\n",
            ),
            None,
        );
        assert_eq!(known.name("x", Some("kek-2")).role, KeyRole::Current);
        assert_eq!(known.name("y", Some("kek-1")).role, KeyRole::DecryptOnly);
        assert_eq!(known.name("z", Some("kek-0")).role, KeyRole::Unknown);
        assert_eq!(known.name_v1("kek-1").1.role, KeyRole::DecryptOnly);
    }

    #[test]
    fn a_local_key_ring_names_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        local::LocalKeyRing::rotate(&keys).unwrap();
        local::LocalKeyRing::rotate(&keys).unwrap();
        let entries = local::list(&keys).unwrap();
        let known = KnownKeys::from_config(
            &config(&format!("local:\n  key_dir: {}\n", keys.display())),
            None,
        );
        assert_eq!(known.current_key_id(), Some(entries[1].key_id.as_str()));
        assert_eq!(known.name(&entries[1].key_id, None).role, KeyRole::Current);
        let old = known.name(&entries[0].key_id, Some("1"));
        assert_eq!(old.role, KeyRole::DecryptOnly);
        assert_eq!(old.description, "local key ring version 1");
        assert_eq!(
            known.name_v1("1").0.as_deref(),
            Some(entries[0].key_id.as_str())
        );
        assert_eq!(known.name_v1("7").1.role, KeyRole::Unknown);

        let missing = KnownKeys::from_config(&config("local:\n  key_dir: /nonexistent\n"), None);
        assert_eq!(missing.current_key_id(), None);
        assert!(missing.notes()[0].contains("/nonexistent"));
    }
}
