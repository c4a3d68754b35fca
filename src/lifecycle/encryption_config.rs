//! kube-apiserver's EncryptionConfiguration (`apiserver.config.k8s.io/v1`), read for what the
//! census and `migrate` need: which resources each rule covers and, in order, its providers —
//! the first one writes, every one listed reads.
//!
//! Never reads a key: the `secret` of an aescbc, aesgcm or secretbox key is not even parsed (the
//! struct has no field for it), so no error or report can show one.

use std::path::Path;

use serde::Deserialize;

use super::stored_value::StoredValue;

/// A KMS provider's API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KmsApi {
    /// `apiVersion: v1` (the default when the field is absent).
    V1,
    /// `apiVersion: v2`.
    V2,
}

/// One entry of a rule's `providers` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// `kms`.
    Kms {
        /// v1 or v2.
        api: KmsApi,
        /// `name`, which is in every value it writes.
        name: String,
    },
    /// `aescbc`, with its keys' names in order.
    AesCbc(Vec<String>),
    /// `aesgcm`, with its keys' names in order.
    AesGcm(Vec<String>),
    /// `secretbox`, with its keys' names in order.
    Secretbox(Vec<String>),
    /// `identity`: plaintext.
    Identity,
}

impl Provider {
    /// How reports name it: `kms v2 "kube-kms"`, `aescbc`, `identity`.
    pub fn describe(&self) -> String {
        match self {
            Self::Kms { api, name } => {
                let api = match api {
                    KmsApi::V1 => "v1",
                    KmsApi::V2 => "v2",
                };
                format!("kms {api} {name:?}")
            }
            Self::AesCbc(_) => "aescbc".to_owned(),
            Self::AesGcm(_) => "aesgcm".to_owned(),
            Self::Secretbox(_) => "secretbox".to_owned(),
            Self::Identity => "identity".to_owned(),
        }
    }

    /// Whether this entry reads `value`; for a keyed provider, the position of its key too
    /// (0 is the key that writes).
    fn reads(&self, value: &StoredValue) -> Option<usize> {
        let keyed = |keys: &[String], key: &str| keys.iter().position(|k| k == key);
        match (self, value) {
            (Self::Kms { api, name }, StoredValue::KmsV2(record)) => {
                (*api == KmsApi::V2 && *name == record.provider).then_some(0)
            }
            (Self::Kms { api, name }, StoredValue::KmsV1 { provider, .. }) => {
                (*api == KmsApi::V1 && name == provider).then_some(0)
            }
            (Self::AesCbc(keys), StoredValue::AesCbc { key })
            | (Self::AesGcm(keys), StoredValue::AesGcm { key })
            | (Self::Secretbox(keys), StoredValue::Secretbox { key }) => keyed(keys, key),
            (Self::Identity, StoredValue::Identity(_)) => Some(0),
            _ => None,
        }
    }
}

/// Where a stored value stands against the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placement {
    /// Written by the rule's first provider (and its first key): nothing to do.
    Written,
    /// Readable, but under a provider (or key) that no longer writes: `migrate` rewrites it.
    /// For plaintext this means the resource should be encrypted and is not yet.
    Readable,
    /// Under a provider the rule does not list: kube-apiserver cannot read it any more.
    Unreadable,
}

impl Placement {
    /// The name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Written => "written-by-first-provider",
            Self::Readable => "readable-not-first-provider",
            Self::Unreadable => "provider-not-in-file",
        }
    }
}

/// One `resources` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `resources`: `secrets`, `deployments.apps`, `*.apps`, `*.` (the core group), `*.*`.
    pub resources: Vec<String>,
    /// `providers`, in order.
    pub providers: Vec<Provider>,
}

impl Rule {
    fn covers(&self, resource: &str, group: &str) -> bool {
        let full = super::stored_value::resource_name(group, resource);
        self.resources.iter().any(|pattern| {
            pattern == &full
                || pattern == "*.*"
                || pattern
                    .strip_prefix("*.")
                    .is_some_and(|wanted| wanted == group)
        })
    }
}

/// The parsed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionConfig {
    /// Its rules, in order: the first that covers a resource applies.
    pub rules: Vec<Rule>,
}

/// An EncryptionConfiguration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionConfigError {
    /// The file (or `<inline>`).
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for EncryptionConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionConfiguration {}: {}", self.path, self.reason)
    }
}

impl std::error::Error for EncryptionConfigError {}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFile {
    api_version: String,
    kind: String,
    #[serde(default)]
    resources: Vec<RawRule>,
}

#[derive(Deserialize)]
struct RawRule {
    resources: Vec<String>,
    providers: Vec<RawProvider>,
}

#[derive(Deserialize)]
struct RawProvider {
    kms: Option<RawKms>,
    aescbc: Option<RawKeys>,
    aesgcm: Option<RawKeys>,
    secretbox: Option<RawKeys>,
    identity: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKms {
    name: String,
    api_version: Option<String>,
}

#[derive(Deserialize)]
struct RawKeys {
    keys: Vec<RawKey>,
}

/// A key's name only: the `secret` beside it is skipped unread.
#[derive(Deserialize)]
struct RawKey {
    name: String,
}

impl EncryptionConfig {
    /// Reads the file at `path`.
    pub fn load(path: &Path) -> Result<Self, EncryptionConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| EncryptionConfigError {
            path: path.display().to_string(),
            reason: format!("cannot read it: {error}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a file; `path` only names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, EncryptionConfigError> {
        let error = |reason: String| EncryptionConfigError {
            path: path.to_owned(),
            reason,
        };
        let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
            // The parser's message names the line; it never holds a secret because no field
            // this struct reads is one, but keep only its first line.
            error(format!(
                "not an EncryptionConfiguration: {}",
                e.to_string().lines().next().unwrap_or_default()
            ))
        })?;
        if raw.kind != "EncryptionConfiguration" || raw.api_version != "apiserver.config.k8s.io/v1"
        {
            return Err(error(format!(
                "kind {:?} apiVersion {:?}; expected kind EncryptionConfiguration, apiVersion \
                 apiserver.config.k8s.io/v1",
                raw.kind, raw.api_version
            )));
        }
        let mut rules = Vec::new();
        for rule in raw.resources {
            let mut providers = Vec::new();
            for provider in rule.providers {
                let names = |keys: RawKeys| keys.keys.into_iter().map(|k| k.name).collect();
                let parsed = match provider {
                    RawProvider {
                        kms: Some(kms),
                        aescbc: None,
                        aesgcm: None,
                        secretbox: None,
                        identity: None,
                    } => Provider::Kms {
                        api: match kms.api_version.as_deref() {
                            None | Some("v1") => KmsApi::V1,
                            Some("v2") => KmsApi::V2,
                            Some(other) => {
                                return Err(error(format!(
                                    "kms {:?} has apiVersion {other:?}; v1 or v2 expected",
                                    kms.name
                                )));
                            }
                        },
                        name: kms.name,
                    },
                    RawProvider {
                        kms: None,
                        aescbc: Some(keys),
                        aesgcm: None,
                        secretbox: None,
                        identity: None,
                    } => Provider::AesCbc(names(keys)),
                    RawProvider {
                        kms: None,
                        aescbc: None,
                        aesgcm: Some(keys),
                        secretbox: None,
                        identity: None,
                    } => Provider::AesGcm(names(keys)),
                    RawProvider {
                        kms: None,
                        aescbc: None,
                        aesgcm: None,
                        secretbox: Some(keys),
                        identity: None,
                    } => Provider::Secretbox(names(keys)),
                    RawProvider {
                        kms: None,
                        aescbc: None,
                        aesgcm: None,
                        secretbox: None,
                        identity: Some(_),
                    } => Provider::Identity,
                    _ => {
                        return Err(error(
                            "each providers entry holds exactly one of kms, aescbc, aesgcm, \
                             secretbox, identity"
                                .to_owned(),
                        ));
                    }
                };
                providers.push(parsed);
            }
            if providers.is_empty() {
                return Err(error(format!(
                    "the rule for {:?} lists no providers",
                    rule.resources
                )));
            }
            rules.push(Rule {
                resources: rule.resources,
                providers,
            });
        }
        Ok(Self { rules })
    }

    /// The rule that applies to `resource` in `group` (the first that covers it), if any.
    pub fn rule_for(&self, resource: &str, group: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.covers(resource, group))
    }

    /// Where `value` of `resource` stands: a resource no rule covers is read and written by
    /// identity alone. `None` for a corrupt value, which no provider reads.
    pub fn placement(&self, resource: &str, group: &str, value: &StoredValue) -> Option<Placement> {
        if matches!(value, StoredValue::Corrupt { .. }) {
            return None;
        }
        let identity = [Provider::Identity];
        let providers = self
            .rule_for(resource, group)
            .map_or(&identity[..], |rule| &rule.providers[..]);
        Some(
            match providers
                .iter()
                .enumerate()
                .find_map(|(index, p)| p.reads(value).map(|key| (index, key)))
            {
                Some((0, 0)) => Placement::Written,
                Some(_) => Placement::Readable,
                None => Placement::Unreadable,
            },
        )
    }

    /// Every resource the file names explicitly (not by a wildcard), as `resource[.group]`.
    pub fn named_resources(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .rules
            .iter()
            .flat_map(|rule| rule.resources.iter())
            .filter(|name| !name.starts_with('*'))
            .cloned()
            .collect();
        names.dedup();
        names
    }

    /// Whether kube-apiserver encrypts `resource` in `group`: the first rule that covers it
    /// writes with a provider other than identity.
    pub fn encrypts(&self, resource: &str, group: &str) -> bool {
        self.rule_for(resource, group).is_some_and(|rule| {
            rule.providers
                .first()
                .is_some_and(|p| *p != Provider::Identity)
        })
    }

    /// Every resource pattern of every rule whose first provider encrypts (not identity): what
    /// `migrate` rewrites, wildcards included.
    pub fn encrypted_patterns(&self) -> Vec<String> {
        let mut patterns = Vec::new();
        for rule in &self.rules {
            if rule.providers.first() != Some(&Provider::Identity) {
                for pattern in &rule.resources {
                    if !patterns.contains(pattern) {
                        patterns.push(pattern.clone());
                    }
                }
            }
        }
        patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::stored_value::{DekSourceType, KmsV2Record, PlainEncoding, RecordStyle};

    const FILE: &str = "\
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, configmaps]
    providers:
      - kms:
          apiVersion: v2
          name: kube-kms
          endpoint: unix:///var/run/kube-kms/kms.sock
          timeout: 3s
      - aescbc:
          keys:
            - name: key1
              secret: c2VjcmV0IGlzIHNlY3VyZQ==
      - identity: {}
  - resources: ['*.apps']
    providers:
      - kms:
          name: old-v1
          endpoint: unix:///old.sock
  - resources: ['*.*']
    providers:
      - identity: {}
";

    fn v2(provider: &str) -> StoredValue {
        StoredValue::KmsV2(KmsV2Record {
            provider: provider.into(),
            key_id: "k".into(),
            style: RecordStyle::Other,
            dek_source_type: DekSourceType::AesGcmKey,
        })
    }

    #[test]
    fn rules_apply_first_match_and_first_provider_writes() {
        let config = EncryptionConfig::parse(FILE, "<test>").unwrap();
        let plain = StoredValue::Identity(PlainEncoding::Protobuf);
        let cbc = StoredValue::AesCbc { key: "key1".into() };
        assert_eq!(
            config.placement("secrets", "", &v2("kube-kms")),
            Some(Placement::Written)
        );
        assert_eq!(
            config.placement("secrets", "", &cbc),
            Some(Placement::Readable)
        );
        assert_eq!(
            config.placement("secrets", "", &plain),
            Some(Placement::Readable)
        );
        assert_eq!(
            config.placement("secrets", "", &v2("gone")),
            Some(Placement::Unreadable)
        );
        // *.apps: kms v1 only, so plaintext there cannot be read.
        assert_eq!(
            config.placement("deployments", "apps", &plain),
            Some(Placement::Unreadable)
        );
        assert_eq!(
            config.placement(
                "deployments",
                "apps",
                &StoredValue::KmsV1 {
                    provider: "old-v1".into(),
                    kube_kms_version: None
                }
            ),
            Some(Placement::Written)
        );
        assert_eq!(
            config.placement("pods", "", &plain),
            Some(Placement::Written)
        );
        assert_eq!(
            config.placement(
                "pods",
                "",
                &StoredValue::Corrupt {
                    reason: String::new()
                }
            ),
            None
        );
        assert_eq!(config.named_resources(), ["secrets", "configmaps"]);
        assert_eq!(
            config.encrypted_patterns(),
            ["secrets", "configmaps", "*.apps"]
        );
        assert!(config.encrypts("secrets", ""));
        assert!(config.encrypts("deployments", "apps"));
        assert!(!config.encrypts("events", ""), "*.* is identity");
    }

    /// Kubernetes' own example: an identity rule ahead of a wildcard exempts what it names.
    #[test]
    fn an_earlier_identity_rule_exempts_a_resource_from_a_later_wildcard() {
        let config = EncryptionConfig::parse(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
             - resources: [events]\n  providers:\n  - identity: {}\n\
             - resources: ['*.*']\n  providers:\n  - kms:\n      apiVersion: v2\n      \
             name: kube-kms\n      endpoint: unix:///k.sock\n",
            "<test>",
        )
        .unwrap();
        assert_eq!(config.encrypted_patterns(), ["*.*"]);
        assert!(!config.encrypts("events", ""));
        assert!(config.encrypts("secrets", ""));
        assert!(config.encrypts("widgets", "example.com"));
    }

    #[test]
    fn secrets_never_reach_an_error_or_the_parsed_form() {
        let config = EncryptionConfig::parse(FILE, "<test>").unwrap();
        assert!(!format!("{config:?}").contains("c2VjcmV0"));
        let broken = FILE.replace("apiVersion: v2", "apiVersion: v3");
        let error = EncryptionConfig::parse(&broken, "<test>")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("v3") && !error.contains("c2VjcmV0"),
            "{error}"
        );
        let wrong_kind = FILE.replace("kind: EncryptionConfiguration", "kind: Secret");
        assert!(EncryptionConfig::parse(&wrong_kind, "<test>").is_err());
    }
}
