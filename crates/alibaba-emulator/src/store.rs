//! What the emulated services hold: KMS secrets (versions with data, data type and version
//! stages, owned by an account) and OOS secret parameters (numbered versions of a value), with
//! the rules the services apply when versions are added — a stage belongs to one version at a
//! time, and a new `ACSCurrent` version pushes the old one to `ACSPrevious`.
//!
//! Values live in zeroizing strings and never appear in `Debug` output or errors.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::clock::{self, now_secs};
use crate::error::EmulatorError;

/// The stage a read gets when it names neither a version nor a stage.
pub const ACS_CURRENT: &str = "ACSCurrent";
/// The stage the previous current version takes.
pub const ACS_PREVIOUS: &str = "ACSPrevious";

/// How a secret version's data is returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// `SecretData` is the text as stored.
    #[default]
    Text,
    /// `SecretData` is standard base64 of the bytes.
    Binary,
}

impl DataType {
    /// `text` or `binary`, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Binary => "binary",
        }
    }
}

/// One version of a secret to store.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretVersionSpec {
    /// The version id; `v1`, `v2`, … in order when absent.
    #[serde(default)]
    pub version_id: Option<String>,
    /// The data: text, or (for [`DataType::Binary`]) standard base64 of the bytes.
    pub data: String,
    /// Text or binary.
    #[serde(default)]
    pub data_type: DataType,
    /// The version's stages; `["ACSCurrent"]` when absent (an empty list: no stage).
    #[serde(default)]
    pub stages: Option<Vec<String>>,
}

impl fmt::Debug for SecretVersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretVersionSpec")
            .field("version_id", &self.version_id)
            .field("data", &"[redacted]")
            .field("data_type", &self.data_type)
            .field("stages", &self.stages)
            .finish()
    }
}

impl SecretVersionSpec {
    /// A text version.
    pub fn text(data: &str) -> Self {
        Self {
            data: data.to_owned(),
            ..Self::default()
        }
    }

    /// A binary version (stored as standard base64, as the API returns it).
    pub fn binary(bytes: &[u8]) -> Self {
        Self {
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
            data_type: DataType::Binary,
            ..Self::default()
        }
    }

    /// Names the version.
    pub fn id(mut self, version_id: &str) -> Self {
        self.version_id = Some(version_id.to_owned());
        self
    }

    /// Sets the stages.
    pub fn stages(mut self, stages: &[&str]) -> Self {
        self.stages = Some(stages.iter().map(|s| (*s).to_owned()).collect());
        self
    }
}

/// A secret to store (replacing any secret of that name in that account).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// The owning account; the emulator's default account when absent.
    #[serde(default)]
    pub account_id: Option<String>,
    /// `Generic` (default), `Rds`, `Redis`, `RAMCredentials`, `ECS`, `PolarDB`.
    #[serde(default)]
    pub secret_type: Option<String>,
    /// The versions, oldest first.
    pub versions: Vec<SecretVersionSpec>,
}

impl SecretSpec {
    /// A secret with one text version `v1` at `ACSCurrent`.
    pub fn text(data: &str) -> Self {
        Self {
            versions: vec![SecretVersionSpec::text(data)],
            ..Self::default()
        }
    }

    /// A secret with one binary version `v1` at `ACSCurrent`.
    pub fn binary(bytes: &[u8]) -> Self {
        Self {
            versions: vec![SecretVersionSpec::binary(bytes)],
            ..Self::default()
        }
    }

    /// A secret with these versions.
    pub fn versions(versions: Vec<SecretVersionSpec>) -> Self {
        Self {
            versions,
            ..Self::default()
        }
    }

    /// Places the secret in another account (for cross-account reads by ARN).
    pub fn in_account(mut self, account_id: &str) -> Self {
        self.account_id = Some(account_id.to_owned());
        self
    }
}

/// A stored secret version.
#[derive(Clone)]
pub struct StoredVersion {
    /// The version id.
    pub version_id: String,
    /// The data as the API returns it (base64 for binary).
    pub data: Zeroizing<String>,
    /// Text or binary.
    pub data_type: DataType,
    /// Its stages.
    pub stages: Vec<String>,
    /// Creation time (Unix seconds).
    pub created: i64,
}

/// A stored secret.
#[derive(Clone)]
pub struct Secret {
    /// The owning account.
    pub account_id: String,
    /// The name.
    pub name: String,
    /// The secret type.
    pub secret_type: String,
    /// Creation time (Unix seconds).
    pub created: i64,
    /// Versions, oldest first.
    pub versions: Vec<StoredVersion>,
}

impl Secret {
    /// The version carrying `stage`.
    pub fn by_stage(&self, stage: &str) -> Option<&StoredVersion> {
        self.versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
    }

    /// The version named `id`.
    pub fn by_id(&self, id: &str) -> Option<&StoredVersion> {
        self.versions.iter().find(|v| v.version_id == id)
    }
}

/// What a control call reports about a secret (never its data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// The owning account.
    pub account_id: String,
    /// The name.
    pub name: String,
    /// `acs:kms:<region>:<account>:secret/<name>`.
    pub arn: String,
    /// The secret type.
    pub secret_type: String,
    /// The versions, oldest first.
    pub versions: Vec<SecretVersionInfo>,
}

/// One version in a [`SecretInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersionInfo {
    /// The version id.
    pub version_id: String,
    /// Text or binary.
    pub data_type: DataType,
    /// Its stages.
    pub stages: Vec<String>,
    /// `yyyy-MM-ddTHH:mm:ssZ`.
    pub create_time: String,
}

impl SecretInfo {
    fn of(secret: &Secret, region: &str) -> Self {
        Self {
            account_id: secret.account_id.clone(),
            name: secret.name.clone(),
            arn: secret_arn(region, &secret.account_id, &secret.name),
            secret_type: secret.secret_type.clone(),
            versions: secret
                .versions
                .iter()
                .map(|v| SecretVersionInfo {
                    version_id: v.version_id.clone(),
                    data_type: v.data_type,
                    stages: v.stages.clone(),
                    create_time: clock::format_utc(v.created),
                })
                .collect(),
        }
    }
}

/// `acs:kms:<region>:<account>:secret/<name>`.
pub fn secret_arn(region: &str, account: &str, name: &str) -> String {
    format!("acs:kms:{region}:{account}:secret/{name}")
}

/// `acs:oos:<region>:<account>:secretparameter/<name>`.
pub fn parameter_arn(region: &str, account: &str, name: &str) -> String {
    format!("acs:oos:{region}:{account}:secretparameter/{name}")
}

/// Splits `acs:<service>:<region>:<account>:<kind>/<name>` into account and name.
/// `None` when `text` is no ARN of that service and kind; `Some(Err(()))` when it is one but
/// malformed.
pub fn parse_resource_arn<'a>(
    text: &'a str,
    service: &str,
    kind: &str,
) -> Option<Result<(&'a str, &'a str), ()>> {
    let rest = text.strip_prefix("acs:")?;
    let rest = rest.strip_prefix(service)?.strip_prefix(':')?;
    let mut parts = rest.splitn(3, ':');
    let (Some(_region), Some(account), Some(resource)) = (parts.next(), parts.next(), parts.next())
    else {
        return Some(Err(()));
    };
    match resource
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix('/'))
    {
        Some(name) if !name.is_empty() && !account.is_empty() => Some(Ok((account, name))),
        _ => Some(Err(())),
    }
}

/// The account and name a request's name parameter designates: an ARN of `service`/`kind`
/// names both, a plain name is in the caller's account; `None` for a malformed ARN.
pub fn designated(
    text: &str,
    service: &str,
    kind: &str,
    caller_account: &str,
) -> Option<(String, String)> {
    match parse_resource_arn(text, service, kind) {
        None => Some((caller_account.to_owned(), text.to_owned())),
        Some(Ok((account, name))) => Some((account.to_owned(), name.to_owned())),
        Some(Err(())) => None,
    }
}

/// A secret parameter to store (replacing any parameter of that name in that account).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSpec {
    /// The owning account; the emulator's default account when absent.
    #[serde(default)]
    pub account_id: Option<String>,
    /// The values of versions 1, 2, … (at most 100).
    pub versions: Vec<String>,
    /// A description.
    #[serde(default)]
    pub description: Option<String>,
    /// The KMS key that encrypts it (`alias/acs/oos` by default).
    #[serde(default)]
    pub key_id: Option<String>,
}

impl fmt::Debug for ParameterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParameterSpec")
            .field("account_id", &self.account_id)
            .field(
                "versions",
                &format_args!("[{} redacted]", self.versions.len()),
            )
            .field("description", &self.description)
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl ParameterSpec {
    /// A parameter with one version.
    pub fn value(value: &str) -> Self {
        Self {
            versions: vec![value.to_owned()],
            ..Self::default()
        }
    }

    /// A parameter with these versions (1, 2, …).
    pub fn versions(values: &[&str]) -> Self {
        Self {
            versions: values.iter().map(|v| (*v).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// Places the parameter in another account.
    pub fn in_account(mut self, account_id: &str) -> Self {
        self.account_id = Some(account_id.to_owned());
        self
    }
}

/// A stored parameter.
#[derive(Clone)]
pub struct Parameter {
    /// The owning account.
    pub account_id: String,
    /// The name.
    pub name: String,
    /// `p-` + 32 hex.
    pub id: String,
    /// A description.
    pub description: String,
    /// The KMS key id.
    pub key_id: String,
    /// Creation time.
    pub created: i64,
    /// Last update time.
    pub updated: i64,
    /// Values of versions 1, 2, …
    pub versions: Vec<Zeroizing<String>>,
}

/// What a control call reports about a parameter (never its values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterInfo {
    /// The owning account.
    pub account_id: String,
    /// The name.
    pub name: String,
    /// The id.
    pub id: String,
    /// The latest version number.
    pub latest_version: u32,
}

impl ParameterInfo {
    fn of(parameter: &Parameter) -> Self {
        Self {
            account_id: parameter.account_id.clone(),
            name: parameter.name.clone(),
            id: parameter.id.clone(),
            latest_version: u32::try_from(parameter.versions.len()).unwrap_or(u32::MAX),
        }
    }
}

/// OOS's reserved name prefixes.
const RESERVED_PREFIXES: &[&str] = &["ALIYUN", "ACS", "ALIBABA", "ALICLOUD", "OOS"];

/// Checks an OOS parameter name: 1-180 letters, digits, `-`, `_` or `/`, not starting with a
/// reserved prefix.
pub fn check_parameter_name(name: &str) -> Result<(), EmulatorError> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/'));
    let upper = name.to_ascii_uppercase();
    if name.is_empty() || name.len() > 180 || !valid_chars {
        return Err(EmulatorError::Invalid(format!(
            "parameter name {name:?}: 1-180 letters, digits, '-', '_' or '/'"
        )));
    }
    if RESERVED_PREFIXES.iter().any(|p| upper.starts_with(p)) {
        return Err(EmulatorError::Invalid(format!(
            "parameter name {name:?} starts with a reserved prefix"
        )));
    }
    Ok(())
}

/// Secrets and parameters, keyed by (account, name).
#[derive(Default)]
pub struct Store {
    secrets: BTreeMap<(String, String), Secret>,
    parameters: BTreeMap<(String, String), Parameter>,
}

fn key(account: &str, name: &str) -> (String, String) {
    (account.to_owned(), name.to_owned())
}

fn check_version(spec: &SecretVersionSpec) -> Result<(), EmulatorError> {
    if spec.data_type == DataType::Binary
        && base64::engine::general_purpose::STANDARD
            .decode(&spec.data)
            .is_err()
    {
        return Err(EmulatorError::Invalid(
            "binary secret data must be standard base64".to_owned(),
        ));
    }
    Ok(())
}

impl Store {
    /// Stores a secret, replacing one of the same name in the same account.
    pub fn put_secret(
        &mut self,
        account: &str,
        name: &str,
        spec: &SecretSpec,
        region: &str,
    ) -> Result<SecretInfo, EmulatorError> {
        if name.is_empty() || name.len() > 192 {
            return Err(EmulatorError::Invalid(
                "secret names have 1-192 characters".to_owned(),
            ));
        }
        if spec.versions.is_empty() {
            return Err(EmulatorError::Invalid(
                "a secret needs at least one version".to_owned(),
            ));
        }
        let now = now_secs();
        let mut versions: Vec<StoredVersion> = Vec::with_capacity(spec.versions.len());
        for (index, version) in spec.versions.iter().enumerate() {
            check_version(version)?;
            let version_id = version
                .version_id
                .clone()
                .unwrap_or_else(|| format!("v{}", index + 1));
            if versions.iter().any(|v| v.version_id == version_id) {
                return Err(EmulatorError::Invalid(format!(
                    "version id {version_id} appears twice"
                )));
            }
            let stages = version
                .stages
                .clone()
                .unwrap_or_else(|| vec![ACS_CURRENT.to_owned()]);
            for stage in &stages {
                if versions.iter().any(|v| v.stages.contains(stage)) {
                    return Err(EmulatorError::Invalid(format!(
                        "stage {stage} is on two versions"
                    )));
                }
            }
            versions.push(StoredVersion {
                version_id,
                data: Zeroizing::new(version.data.clone()),
                data_type: version.data_type,
                stages,
                created: now,
            });
        }
        let secret = Secret {
            account_id: account.to_owned(),
            name: name.to_owned(),
            secret_type: spec
                .secret_type
                .clone()
                .unwrap_or_else(|| "Generic".to_owned()),
            created: now,
            versions,
        };
        let info = SecretInfo::of(&secret, region);
        self.secrets.insert(key(account, name), secret);
        Ok(info)
    }

    /// Adds a version as PutSecretValue does: its stages (default `ACSCurrent`) leave the
    /// versions that had them, and when it takes `ACSCurrent` the old current version becomes
    /// `ACSPrevious`.
    pub fn add_secret_version(
        &mut self,
        account: &str,
        name: &str,
        spec: &SecretVersionSpec,
        region: &str,
    ) -> Result<SecretInfo, EmulatorError> {
        check_version(spec)?;
        let secret = self
            .secrets
            .get_mut(&key(account, name))
            .ok_or_else(|| EmulatorError::NotFound(format!("secret {name}")))?;
        let version_id = spec
            .version_id
            .clone()
            .unwrap_or_else(|| format!("v{}", secret.versions.len() + 1));
        if secret.by_id(&version_id).is_some() {
            return Err(EmulatorError::Invalid(format!(
                "version id {version_id} exists"
            )));
        }
        let stages = spec
            .stages
            .clone()
            .unwrap_or_else(|| vec![ACS_CURRENT.to_owned()]);
        let takes_current = stages.iter().any(|s| s == ACS_CURRENT);
        let old_current = secret.by_stage(ACS_CURRENT).map(|v| v.version_id.clone());
        for version in &mut secret.versions {
            version.stages.retain(|s| !stages.contains(s));
            if takes_current {
                version.stages.retain(|s| s != ACS_PREVIOUS);
                if Some(&version.version_id) == old_current.as_ref() {
                    version.stages.push(ACS_PREVIOUS.to_owned());
                }
            }
        }
        secret.versions.push(StoredVersion {
            version_id,
            data: Zeroizing::new(spec.data.clone()),
            data_type: spec.data_type,
            stages,
            created: now_secs(),
        });
        Ok(SecretInfo::of(secret, region))
    }

    /// A secret.
    pub fn secret(&self, account: &str, name: &str) -> Option<&Secret> {
        self.secrets.get(&key(account, name))
    }

    /// What a control call reports about a secret.
    pub fn secret_info(&self, account: &str, name: &str, region: &str) -> Option<SecretInfo> {
        self.secret(account, name)
            .map(|secret| SecretInfo::of(secret, region))
    }

    /// Deletes a secret; whether it existed.
    pub fn delete_secret(&mut self, account: &str, name: &str) -> bool {
        self.secrets.remove(&key(account, name)).is_some()
    }

    /// Stores a parameter, replacing one of the same name in the same account.
    pub fn put_parameter(
        &mut self,
        account: &str,
        name: &str,
        spec: &ParameterSpec,
    ) -> Result<ParameterInfo, EmulatorError> {
        check_parameter_name(name)?;
        if spec.versions.is_empty() || spec.versions.len() > 100 {
            return Err(EmulatorError::Invalid(
                "a parameter has 1 to 100 versions".to_owned(),
            ));
        }
        let now = now_secs();
        let parameter = Parameter {
            account_id: account.to_owned(),
            name: name.to_owned(),
            id: format!("p-{}", hex::encode(clock::random_bytes::<16>()?)),
            description: spec.description.clone().unwrap_or_default(),
            key_id: spec
                .key_id
                .clone()
                .unwrap_or_else(|| "alias/acs/oos".to_owned()),
            created: now,
            updated: now,
            versions: spec
                .versions
                .iter()
                .map(|v| Zeroizing::new(v.clone()))
                .collect(),
        };
        let info = ParameterInfo::of(&parameter);
        self.parameters.insert(key(account, name), parameter);
        Ok(info)
    }

    /// Adds a version (UpdateSecretParameter): the new value becomes the latest.
    pub fn add_parameter_version(
        &mut self,
        account: &str,
        name: &str,
        value: &str,
    ) -> Result<ParameterInfo, EmulatorError> {
        let parameter = self
            .parameters
            .get_mut(&key(account, name))
            .ok_or_else(|| EmulatorError::NotFound(format!("parameter {name}")))?;
        if parameter.versions.len() >= 100 {
            return Err(EmulatorError::Invalid(
                "a parameter has at most 100 versions".to_owned(),
            ));
        }
        parameter.versions.push(Zeroizing::new(value.to_owned()));
        parameter.updated = now_secs();
        Ok(ParameterInfo::of(parameter))
    }

    /// A parameter.
    pub fn parameter(&self, account: &str, name: &str) -> Option<&Parameter> {
        self.parameters.get(&key(account, name))
    }

    /// What a control call reports about a parameter.
    pub fn parameter_info(&self, account: &str, name: &str) -> Option<ParameterInfo> {
        self.parameter(account, name).map(ParameterInfo::of)
    }

    /// Deletes a parameter; whether it existed.
    pub fn delete_parameter(&mut self, account: &str, name: &str) -> bool {
        self.parameters.remove(&key(account, name)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(store: &Store, name: &str) -> Vec<(String, Vec<String>)> {
        store
            .secret("1", name)
            .unwrap()
            .versions
            .iter()
            .map(|v| (v.version_id.clone(), v.stages.clone()))
            .collect()
    }

    #[test]
    fn a_new_current_version_pushes_the_old_one_to_previous() {
        let mut store = Store::default();
        store
            .put_secret("1", "db", &SecretSpec::text("one"), "r")
            .unwrap();
        store
            .add_secret_version("1", "db", &SecretVersionSpec::text("two"), "r")
            .unwrap();
        store
            .add_secret_version("1", "db", &SecretVersionSpec::text("three"), "r")
            .unwrap();
        assert_eq!(
            stages(&store, "db"),
            vec![
                ("v1".to_owned(), vec![]),
                ("v2".to_owned(), vec![ACS_PREVIOUS.to_owned()]),
                ("v3".to_owned(), vec![ACS_CURRENT.to_owned()]),
            ]
        );
        store
            .add_secret_version(
                "1",
                "db",
                &SecretVersionSpec::text("staged")
                    .id("next")
                    .stages(&["Pending"]),
                "r",
            )
            .unwrap();
        let secret = store.secret("1", "db").unwrap();
        assert_eq!(secret.by_stage(ACS_CURRENT).unwrap().version_id, "v3");
        assert_eq!(secret.by_stage("Pending").unwrap().version_id, "next");
    }

    #[test]
    fn stored_secrets_are_checked() {
        let mut store = Store::default();
        let twice = SecretSpec::versions(vec![
            SecretVersionSpec::text("a").id("x"),
            SecretVersionSpec::text("b").id("x").stages(&[]),
        ]);
        assert!(store.put_secret("1", "s", &twice, "r").is_err());
        let shared_stage = SecretSpec::versions(vec![
            SecretVersionSpec::text("a"),
            SecretVersionSpec::text("b"),
        ]);
        assert!(store.put_secret("1", "s", &shared_stage, "r").is_err());
        let bad_binary = SecretSpec::versions(vec![SecretVersionSpec {
            data: "not base64!".to_owned(),
            data_type: DataType::Binary,
            ..SecretVersionSpec::default()
        }]);
        assert!(store.put_secret("1", "s", &bad_binary, "r").is_err());
        let info = store
            .put_secret("1", "s", &SecretSpec::binary(&[0, 255]), "cn-x")
            .unwrap();
        assert_eq!(info.arn, "acs:kms:cn-x:1:secret/s");
        assert_eq!(&*store.secret("1", "s").unwrap().versions[0].data, "AP8=");
    }

    #[test]
    fn arns_parse() {
        assert_eq!(
            parse_resource_arn("acs:kms:cn-hangzhou:123:secret/db", "kms", "secret"),
            Some(Ok(("123", "db")))
        );
        assert_eq!(
            parse_resource_arn("acs:kms:cn-hangzhou:123:secret/", "kms", "secret"),
            Some(Err(()))
        );
        assert_eq!(
            parse_resource_arn("acs:kms:cn-hangzhou:123:key/k", "kms", "secret"),
            Some(Err(()))
        );
        assert_eq!(parse_resource_arn("db", "kms", "secret"), None);
        assert_eq!(
            parse_resource_arn(
                "acs:oos:cn-hangzhou:9:secretparameter/a/b",
                "oos",
                "secretparameter"
            ),
            Some(Ok(("9", "a/b")))
        );
    }

    #[test]
    fn parameter_names_and_versions_are_checked() {
        assert!(check_parameter_name("db-password_1").is_ok());
        assert!(check_parameter_name("path/to/p").is_ok());
        for bad in [
            "",
            "has space",
            "AliyunX",
            "acs-x",
            "oos_x",
            &"x".repeat(181),
        ] {
            assert!(check_parameter_name(bad).is_err(), "{bad}");
        }
        let mut store = Store::default();
        store
            .put_parameter("1", "p", &ParameterSpec::versions(&["a", "b"]))
            .unwrap();
        let info = store.add_parameter_version("1", "p", "c").unwrap();
        assert_eq!(info.latest_version, 3);
        assert!(store.add_parameter_version("1", "q", "c").is_err());
    }

    #[test]
    fn specs_never_show_values() {
        let spec = SecretSpec::text("hunter2");
        assert!(!format!("{spec:?}").contains("hunter2"));
        let spec = ParameterSpec::value("hunter2");
        assert!(!format!("{spec:?}").contains("hunter2"));
    }
}
