//! The census: every value under kube-apiserver's etcd prefix, classified
//! ([`super::stored_value`]) and counted per resource × provider × key, each key named from
//! kube-kms's configuration ([`super::known_keys`]) and, given kube-apiserver's
//! EncryptionConfiguration, placed against it ([`super::encryption_config`]).
//!
//! Only counts are kept — at most one entry per distinct (resource, format, provider, key)
//! and a few sample keys of corrupt values — so memory stays flat however many objects etcd
//! holds. Never decrypts and never keeps a value past its page.

use std::collections::BTreeMap;

use super::encryption_config::{EncryptionConfig, Placement};
use super::etcd::{Etcd, EtcdError, next_key};
use super::known_keys::{KeyNaming, KeyRole, KnownKeys};
use super::progress::Progress;
use super::stored_value::{self, RecordStyle, StoredValue, classify};

/// Corrupt values whose keys are kept for the report.
pub const CORRUPT_SAMPLES: usize = 20;

/// One line of the census: how many objects of a resource are stored one way.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    /// `resource[.group]`.
    pub resource: String,
    /// `kms-v2`, `kms-v1`, `aescbc`, `aesgcm`, `secretbox`, `identity`, `corrupt`.
    pub format: &'static str,
    /// The KMS provider name, or the aescbc/aesgcm/secretbox key name; empty otherwise.
    pub provider: String,
    /// The key_id (KMS v2, and kube-kms KMS v1 where the configuration gives it); the plaintext
    /// encoding for identity; empty otherwise.
    pub key: String,
    /// Which plugin's record (`kube-kms`, `azure-plugin`, `other`) for KMS; empty otherwise.
    pub style: &'static str,
}

/// What is known about one key_id (or, for a kube-kms v1 record whose key_id the
/// configuration cannot give, one key version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTally {
    /// The key_id, when known.
    pub key_id: Option<String>,
    /// The key version from kube-kms's annotations, when the records carry one.
    pub version: Option<String>,
    /// What the key is.
    pub naming: KeyNaming,
    /// Objects under it.
    pub objects: u64,
    /// Of those, records in kube-kms's format, Azure's Go plugin's, any other plugin's.
    pub by_style: BTreeMap<&'static str, u64>,
}

impl KeyTally {
    fn new(key_id: Option<String>, version: Option<&str>) -> Self {
        Self {
            key_id,
            version: version.map(str::to_owned),
            naming: KeyNaming::unknown(),
            objects: 0,
            by_style: BTreeMap::new(),
        }
    }

    /// Counts one record named `naming`. Records under one key_id can be named differently (a
    /// Go plugin record carries no version annotation; kube-kms's does): the key takes the first
    /// naming that knows it, so every object under it counts against that key.
    fn count(&mut self, naming: KeyNaming, version: Option<&str>, style: &'static str) {
        if self.naming.role == KeyRole::Unknown && naming.role != KeyRole::Unknown {
            self.naming = naming;
            if let Some(version) = version {
                self.version = Some(version.to_owned());
            }
        }
        self.objects += 1;
        *self.by_style.entry(style).or_default() += 1;
    }
}

/// A value that could not be classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptSample {
    /// Its etcd key (lossy UTF-8).
    pub key: String,
    /// Why.
    pub reason: String,
}

/// Everything counted.
#[derive(Debug, Default)]
pub struct Tally {
    /// Values read.
    pub scanned: u64,
    /// Per resource × format × provider × key.
    pub rows: BTreeMap<RowKey, u64>,
    /// Per key.
    pub keys: BTreeMap<String, KeyTally>,
    /// Values that could not be classified.
    pub corrupt: u64,
    /// The first of them.
    pub corrupt_samples: Vec<CorruptSample>,
    /// With an EncryptionConfiguration: per resource × provider description × placement.
    pub placements: BTreeMap<(String, String, Placement), u64>,
    /// Objects this configuration cannot read: corrupt, kube-kms and Azure Go plugin records
    /// under key_ids it does not name, providers the EncryptionConfiguration no longer lists.
    pub unreadable: u64,
    /// Objects to re-encrypt (and not unreadable): under a decrypt-only key or an earlier key
    /// version, or not written by the EncryptionConfiguration's first provider.
    pub pending: u64,
    /// Objects under a version of the configured key when the current version is not known.
    pub undecided: u64,
    /// By index of a configured decrypt-only key: kube-kms KMS v1 records that may be under it
    /// rather than under the key they are counted for (a v1 record names only a key version).
    pub possibly_under: BTreeMap<usize, u64>,
}

impl Tally {
    /// Counts one etcd entry. `path` is its key with the prefix removed.
    pub fn add(
        &mut self,
        key: &[u8],
        path: &[u8],
        value: &[u8],
        known: &KnownKeys,
        encryption: Option<&EncryptionConfig>,
    ) {
        self.scanned += 1;
        let (group, resource) = stored_value::group_resource(path)
            .unwrap_or_else(|| (String::new(), "(unparsable key)".to_owned()));
        let resource_name = stored_value::resource_name(&group, &resource);
        let stored = classify(value);
        let mut role = None;
        let (provider, row_key, style) = match &stored {
            StoredValue::KmsV2(record) => {
                let version = match &record.style {
                    RecordStyle::KubeKms { key_version } => Some(key_version.as_str()),
                    _ => None,
                };
                let naming = known.name(&record.key_id, version);
                role = Some((naming.role, record.style.name()));
                let tally = self
                    .keys
                    .entry(record.key_id.clone())
                    .or_insert_with(|| KeyTally::new(Some(record.key_id.clone()), version));
                tally.count(naming, version, record.style.name());
                (
                    record.provider.clone(),
                    record.key_id.clone(),
                    record.style.name(),
                )
            }
            StoredValue::KmsV1 {
                provider,
                kube_kms_version,
            } => match kube_kms_version {
                Some(version) => {
                    let (key_id, naming, possibly_under) = known.name_v1(version);
                    role = Some((naming.role, "kube-kms"));
                    for index in possibly_under {
                        *self.possibly_under.entry(index).or_default() += 1;
                    }
                    let slot = key_id
                        .clone()
                        .unwrap_or_else(|| format!("version {version}"));
                    let tally = self
                        .keys
                        .entry(slot.clone())
                        .or_insert_with(|| KeyTally::new(key_id, Some(version)));
                    tally.count(naming, Some(version), "kube-kms");
                    (provider.clone(), slot, "kube-kms")
                }
                None => (provider.clone(), String::new(), "other"),
            },
            StoredValue::AesCbc { key }
            | StoredValue::AesGcm { key }
            | StoredValue::Secretbox { key } => (key.clone(), String::new(), ""),
            StoredValue::Identity(encoding) => (String::new(), encoding.name().to_owned(), ""),
            StoredValue::Corrupt { reason } => {
                self.corrupt += 1;
                if self.corrupt_samples.len() < CORRUPT_SAMPLES {
                    self.corrupt_samples.push(CorruptSample {
                        key: String::from_utf8_lossy(key).into_owned(),
                        reason: reason.clone(),
                    });
                }
                (String::new(), String::new(), "")
            }
        };
        let placement = encryption.and_then(|e| e.placement(&resource, &group, &stored));
        if let Some(placement) = placement {
            let described = describe_stored(&stored);
            *self
                .placements
                .entry((resource_name.clone(), described, placement))
                .or_default() += 1;
        }
        // Each object counts once, the worst first.
        let corrupt = matches!(stored, StoredValue::Corrupt { .. });
        if corrupt
            || placement == Some(Placement::Unreadable)
            // kube-kms reads its own records and Azure's Go plugin's only under key_ids it
            // names (the Go plugin's through azure.legacy_key_versions).
            || matches!(role, Some((KeyRole::Unknown, "kube-kms" | "azure-plugin")))
        {
            self.unreadable += 1;
        } else if matches!(
            role,
            Some((KeyRole::DecryptOnly | KeyRole::EarlierVersion, _))
        ) || placement == Some(Placement::Readable)
        {
            self.pending += 1;
        } else if matches!(role, Some((KeyRole::ConfiguredKey, _))) {
            self.undecided += 1;
        }
        *self
            .rows
            .entry(RowKey {
                resource: resource_name,
                format: stored.format_name(),
                provider,
                key: row_key,
                style,
            })
            .or_default() += 1;
    }

    /// Objects under keys with `role`, counting only kube-kms's own records when
    /// `kube_kms_only`.
    pub fn objects_with_role(&self, role: KeyRole, kube_kms_only: bool) -> u64 {
        self.keys
            .values()
            .filter(|key| key.naming.role == role)
            .map(|key| {
                if kube_kms_only {
                    key.by_style.get("kube-kms").copied().unwrap_or(0)
                } else {
                    key.objects
                }
            })
            .sum()
    }

    /// Objects with `placement` against the EncryptionConfiguration.
    pub fn objects_placed(&self, placement: Placement) -> u64 {
        self.placements
            .iter()
            .filter(|((_, _, placed), _)| *placed == placement)
            .map(|(_, count)| count)
            .sum()
    }
}

/// How a stored value's provider is named against the EncryptionConfiguration.
fn describe_stored(value: &StoredValue) -> String {
    match value {
        StoredValue::KmsV2(record) => format!("kms v2 {:?}", record.provider),
        StoredValue::KmsV1 { provider, .. } => format!("kms v1 {provider:?}"),
        StoredValue::AesCbc { key } => format!("aescbc key {key:?}"),
        StoredValue::AesGcm { key } => format!("aesgcm key {key:?}"),
        StoredValue::Secretbox { key } => format!("secretbox key {key:?}"),
        StoredValue::Identity(_) => "identity (plaintext)".to_owned(),
        StoredValue::Corrupt { .. } => "corrupt".to_owned(),
    }
}

/// What to read.
#[derive(Debug, Clone)]
pub struct CensusOptions {
    /// kube-apiserver's `--etcd-prefix`, e.g. `/registry`.
    pub prefix: String,
    /// Keys per Range call.
    pub page_size: u32,
}

/// The census as read, with where it was read from.
#[derive(Debug)]
pub struct Census {
    /// The endpoint read.
    pub endpoint: String,
    /// The prefix read.
    pub prefix: String,
    /// etcd's revision when the census started.
    pub revision: i64,
    /// What was counted.
    pub tally: Tally,
}

/// Reads every key under `options.prefix` page by page and counts it.
pub async fn run(
    etcd: &mut Etcd,
    options: &CensusOptions,
    known: &KnownKeys,
    encryption: Option<&EncryptionConfig>,
) -> Result<Census, EtcdError> {
    let prefix = format!("{}/", options.prefix.trim_end_matches('/'));
    let prefix = prefix.as_bytes();
    let (total, revision) = etcd.count(prefix).await?;
    let progress = Progress::new("census", Some(total));
    let mut tally = Tally::default();
    let mut start = prefix.to_vec();
    loop {
        let (entries, more) = etcd.page(prefix, &start, options.page_size).await?;
        let Some(last) = entries.last() else { break };
        start = next_key(&last.key);
        for entry in &entries {
            let path = entry.key.strip_prefix(prefix).unwrap_or(&entry.key);
            tally.add(&entry.key, path, &entry.value, known, encryption);
        }
        progress.advance(u64::try_from(entries.len()).unwrap_or(0));
        if tally.scanned > total {
            progress.set_total(tally.scanned);
        }
        if !more {
            break;
        }
    }
    progress.finish();
    Ok(Census {
        endpoint: etcd.endpoint().to_owned(),
        prefix: options.prefix.clone(),
        revision,
        tally,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prost::Message;

    use super::*;
    use crate::config::{Config, ConfigArgs, DefaultsEnv};
    use crate::envelope::format;
    use crate::lifecycle::stored_value::{
        AZURE_PLUGIN_VERSION_ANNOTATION, EncryptedObject, KMS_V1_PREFIX, KMS_V2_PREFIX,
    };
    use crate::provider::azure::key_id::KeyRef;

    const V1: &str = "0123456789abcdef0123456789abcdef";
    const V2: &str = "fedcba9876543210fedcba9876543210";

    fn azure_keys(yaml_tail: &str) -> KnownKeys {
        let yaml = format!(
            "provider: azure\nazure:\n  vault_url: https://kv.vault.azure.net/\n  key_name: kek\n  \
             key_version: {V2}\n{yaml_tail}"
        );
        let config =
            Config::from_yaml(&yaml, &ConfigArgs::default(), &DefaultsEnv::default()).unwrap();
        KnownKeys::from_config(&config, None)
    }

    fn v2(key_id: &str, annotations: HashMap<String, Vec<u8>>) -> Vec<u8> {
        let object = EncryptedObject {
            encrypted_data: vec![7; 40],
            key_id: key_id.to_owned(),
            encrypted_dek_source: vec![1; 61],
            annotations,
            encrypted_dek_source_type: 1,
        };
        [KMS_V2_PREFIX, b"kms:", &object.encode_to_vec()].concat()
    }

    fn go_plugin(key_id: &str) -> Vec<u8> {
        v2(
            key_id,
            HashMap::from([
                (AZURE_PLUGIN_VERSION_ANNOTATION.to_owned(), b"1".to_vec()),
                (
                    "algorithm.azure.akv.io".to_owned(),
                    b"RSA-OAEP-256".to_vec(),
                ),
            ]),
        )
    }

    fn v1(version: &str) -> Vec<u8> {
        let blob = [format::v1_header(version, &[5; 60]).as_slice(), &[0; 40]].concat();
        let length = u16::try_from(blob.len()).unwrap().to_be_bytes();
        [KMS_V1_PREFIX, b"kms:", &length, &blob, b"data"].concat()
    }

    fn add(tally: &mut Tally, known: &KnownKeys, value: &[u8]) {
        tally.add(b"/registry/secrets/a/b", b"secrets/a/b", value, known, None);
    }

    fn kek() -> KeyRef {
        KeyRef::new("https://kv.vault.azure.net/", "kek").unwrap()
    }

    /// Regression: a Go plugin record under a version left out of azure.legacy_key_versions
    /// cannot be read, and the census said nothing was pending.
    #[test]
    fn a_go_plugin_record_under_a_version_this_configuration_does_not_read_is_unreadable() {
        let known = azure_keys("");
        let mut tally = Tally::default();
        add(&mut tally, &known, &go_plugin(&kek().key_id(V1)));
        assert_eq!(tally.unreadable, 1);

        let known = azure_keys(&format!("  legacy_key_versions: [{V1}]\n"));
        let mut tally = Tally::default();
        add(&mut tally, &known, &go_plugin(&kek().key_id(V1)));
        assert_eq!((tally.unreadable, tally.pending), (0, 1));
    }

    /// Regression: the first record of a key_id decided its naming for every later one, so a
    /// Go plugin record seen first made kube-kms's records under a decrypt-only key "unknown"
    /// and the key looked unused.
    #[test]
    fn records_of_one_key_id_count_under_the_key_any_of_them_names() {
        let gone = KeyRef::new("https://old.vault.azure.net/", "gone").unwrap();
        let known =
            azure_keys("  decrypt_only_keys: [\"https://old.vault.azure.net/keys/gone\"]\n");
        let key_id = gone.key_id(V1);
        let mut tally = Tally::default();
        add(&mut tally, &known, &go_plugin(&key_id));
        add(
            &mut tally,
            &known,
            &v2(&key_id, format::annotations(V1, &[9; 60])),
        );
        let key = &tally.keys[&key_id];
        assert_eq!(key.naming.role, KeyRole::DecryptOnly);
        assert_eq!(key.naming.configured, Some(1));
        assert_eq!(key.objects, 2);
        assert_eq!(key.version.as_deref(), Some(V1));
        // Each record is accounted by its own naming: the Go plugin's cannot be read.
        assert_eq!((tally.unreadable, tally.pending), (1, 1));
    }

    #[test]
    fn a_v1_record_counts_as_possibly_under_each_decrypt_only_key_for_every_version() {
        let known =
            azure_keys("  decrypt_only_keys: [\"https://old.vault.azure.net/keys/gone\"]\n");
        let mut tally = Tally::default();
        add(&mut tally, &known, &v1(V1));
        add(&mut tally, &known, &v1(V2));
        assert_eq!(
            tally.possibly_under,
            BTreeMap::from([(1, 1)]),
            "the current version is the configured key's own"
        );
    }
}
