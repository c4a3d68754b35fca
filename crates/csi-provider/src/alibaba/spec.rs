//! An Alibaba Cloud mount, validated: the SecretProviderClass parameters and object fields
//! Alibaba's provider (`csi-secrets-store-provider-alibabacloud`) reads, with its names,
//! defaults and file naming — `region`, `pathTranslation`, `usePodServiceAccountToken`, and
//! `objects` as a plain YAML list of `objectName`, `objectType` (`kms`, the default, or `oos`),
//! `objectAlias`, `objectVersion`, `objectVersionLabel`, `jmesPath`, `kmsEndpoint` and
//! `crossAccountRoleArn` — plus `podServiceAccountRoleArn`, kube-kms's way to name the pod's
//! RAM role in the class instead of on its ServiceAccount.
//!
//! Everything here is attacker input (anyone who can write a SecretProviderClass): nothing
//! makes a network call, every bad value is a [`SpecError`] naming the object and the field,
//! and an endpoint is only ever a host under `aliyuncs.com` (or a suffix the operator allowed),
//! never a URL a class chooses.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::IgnoredAny;

pub use crate::class::SpecError;
use crate::class::{MAX_OBJECTS, MAX_OUTPUT_FILES};
use crate::files::{self, quoted};
use crate::jmes::{self, MAX_JSON_FIELDS};

/// The class parameters an Alibaba mount reads.
pub mod params {
    /// The region of the default endpoints; empty for the provider's `--region`.
    pub const REGION: &str = "region";
    /// The character that replaces `/` in file names (`_` by default); `False` for none.
    pub const PATH_TRANSLATION: &str = "pathTranslation";
    /// `"true"`: act as the pod's own RAM role (RRSA), with its service-account token.
    pub const USE_POD_SERVICE_ACCOUNT_TOKEN: &str = "usePodServiceAccountToken";
    /// (kube-kms) The pod's RAM role, instead of its ServiceAccount's
    /// `ack.alibabacloud.com/role-arn` annotation.
    pub const POD_SERVICE_ACCOUNT_ROLE_ARN: &str = "podServiceAccountRoleArn";
    /// The objects: a YAML list of mappings.
    pub const OBJECTS: &str = "objects";
}

/// The fields of one object. Names match case-insensitively, as Alibaba's provider's decoder
/// matches them; any other field is ignored, as it ignores it.
pub mod fields {
    /// The fields both providers' classes spell alike: `objectName` (a name or an ARN here),
    /// `objectType` (`kms`, the default, or `oos`), `objectAlias`, `objectVersion` (KMS: a
    /// `VersionId`; OOS, kube-kms: a `ParameterVersion` 1-100), `jmesPath`.
    pub use crate::class::fields::{
        JMES_PATH, OBJECT_ALIAS, OBJECT_NAME, OBJECT_TYPE, OBJECT_VERSION,
    };

    /// KMS: a `VersionStage` (`ACSCurrent`, `ACSPrevious`, a custom stage).
    pub const OBJECT_VERSION_LABEL: &str = "objectVersionLabel";
    /// KMS: the endpoint host instead of `kms-vpc.<region>.aliyuncs.com`.
    pub const KMS_ENDPOINT: &str = "kmsEndpoint";
    /// A RAM role in another account, assumed with the mount's identity for this object.
    pub const CROSS_ACCOUNT_ROLE_ARN: &str = "crossAccountRoleArn";
    /// A `jmesPath` entry's expression.
    pub const PATH: &str = "path";

    /// Every field an object is read for.
    pub const ALL: &[&str] = &[
        OBJECT_NAME,
        OBJECT_TYPE,
        OBJECT_ALIAS,
        OBJECT_VERSION,
        OBJECT_VERSION_LABEL,
        JMES_PATH,
        KMS_ENDPOINT,
        CROSS_ACCOUNT_ROLE_ARN,
    ];
}

/// The longest `objectName` (a name or an ARN), in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// The longest `objectVersion` or `objectVersionLabel`, in bytes.
pub const MAX_VERSION_BYTES: usize = 128;
/// The highest OOS `ParameterVersion`.
pub const MAX_PARAMETER_VERSION: u32 = 100;
/// The DNS suffix every endpoint must be under, besides the operator's allowed suffixes.
pub const ALIBABA_CLOUD_SUFFIX: &str = "aliyuncs.com";

/// How the provider reads classes: its settings, not the class's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecSettings {
    /// The region of classes without `region` (`--region`).
    pub default_region: String,
    /// DNS suffixes a `kmsEndpoint` may be under besides `aliyuncs.com` (lowercase, no dot at
    /// either end).
    pub endpoint_suffixes: Vec<String>,
}

impl Default for SpecSettings {
    fn default() -> Self {
        Self {
            default_region: "cn-hangzhou".to_owned(),
            endpoint_suffixes: Vec::new(),
        }
    }
}

/// `objectType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    /// `kms`: a KMS Secrets Manager secret (`GetSecretValue`).
    Kms,
    /// `oos`: an OOS secret parameter (`GetSecretParameter`).
    Oos,
}

impl ObjectType {
    /// `kms` or `oos`, as classes spell it (also the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kms => "kms",
            Self::Oos => "oos",
        }
    }
}

/// A RAM role's ARN, `acs:ram::<account id>:role/<role name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleArn(String);

impl RoleArn {
    /// Parses a role ARN: `acs:ram::`, an account id of digits, `:role/`, a role name of
    /// letters, digits, `.`, `-` and `_` (1-64; RAM names are case-insensitive, kept as given).
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "{} is not a RAM role ARN like acs:ram::1234567890123456:role/my-role",
                quoted(text)
            )
        };
        let rest = text.strip_prefix("acs:ram::").ok_or_else(expected)?;
        let (account, role) = rest.split_once(":role/").ok_or_else(expected)?;
        let account_ok =
            (1..=32).contains(&account.len()) && account.bytes().all(|b| b.is_ascii_digit());
        let role_ok = (1..=64).contains(&role.len())
            && role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if account_ok && role_ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(expected())
        }
    }

    /// The ARN.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which version of an object a read asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VersionSelector {
    /// KMS: `VersionStage` ACSCurrent (nothing sent); OOS: the latest version.
    Latest,
    /// KMS: `VersionId` and/or `VersionStage` as the class gives them.
    Kms {
        /// `objectVersion`.
        id: Option<String>,
        /// `objectVersionLabel`.
        stage: Option<String>,
    },
    /// OOS: one `ParameterVersion`.
    Oos(u32),
}

impl VersionSelector {
    /// Whether the selector names one version that never changes (a KMS `VersionId`, an OOS
    /// version): cached as pinned.
    pub fn is_pinned(&self) -> bool {
        matches!(self, Self::Kms { id: Some(_), .. } | Self::Oos(_))
    }
}

/// One `jmesPath` entry: a field of a JSON secret written to its own file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonField {
    /// The JMESPath expression (compiled and checked when the spec is built).
    pub path: String,
    /// `objectAlias` as written.
    pub alias: String,
    /// The file's path in the volume (the alias, translated).
    pub file: String,
}

/// One validated object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// `objectName`: a name or an ARN, as written (sent as `SecretName` / `Name`).
    pub name: String,
    /// `objectType`.
    pub kind: ObjectType,
    /// `objectAlias`, when set.
    pub alias: Option<String>,
    /// `objectVersion` and `objectVersionLabel`, as the read asks for them.
    pub version: VersionSelector,
    /// `objectVersion` as written (for error messages), empty when unset.
    pub version_text: String,
    /// `jmesPath`.
    pub json_fields: Vec<JsonField>,
    /// The endpoint host the object is read from.
    pub endpoint: String,
    /// `crossAccountRoleArn`.
    pub cross_account_role: Option<RoleArn>,
    /// The file's path in the volume: the alias or the name, translated (also the object's id
    /// in object_version, as Alibaba's provider reports it).
    pub file: String,
}

/// A validated Alibaba mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlibabaMountSpec {
    /// `region` (or the provider's default), lowercase.
    pub region: String,
    /// `pathTranslation`: the character `/` becomes in file names; `None` when off.
    pub path_translation: Option<char>,
    /// `usePodServiceAccountToken`.
    pub use_pod_service_account_token: bool,
    /// `podServiceAccountRoleArn`.
    pub pod_role: Option<RoleArn>,
    /// `objects`, in the class's order (files and versions are returned in this order).
    pub objects: Vec<ObjectSpec>,
}

fn parameter(key: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::Parameter {
        key,
        reason: reason.into(),
    }
}

impl AlibabaMountSpec {
    /// Validates a mount's parameters (the class's, overlaid with the volume's attributes) with
    /// the names and defaults of Alibaba's provider, before any call: `region`,
    /// `pathTranslation`, `usePodServiceAccountToken` and `podServiceAccountRoleArn`, then
    /// `objects` one by one, then the files they write together (each a path the driver
    /// accepts, none written twice, none inside another).
    pub fn from_parameters(
        parameters: &BTreeMap<String, String>,
        settings: &SpecSettings,
    ) -> Result<Self, SpecError> {
        let get = |key: &str| parameters.get(key).map_or("", String::as_str);
        let region = match get(params::REGION).trim() {
            "" => settings.default_region.clone(),
            region => region.to_owned(),
        };
        let region = parse_region(&region).map_err(|reason| {
            parameter(
                params::REGION,
                format!("region {}: {reason}", quoted(&region)),
            )
        })?;
        let path_translation = parse_translation(get(params::PATH_TRANSLATION))?;
        let use_pod_service_account_token = match get(params::USE_POD_SERVICE_ACCOUNT_TOKEN).trim()
        {
            "" => false,
            text if text.eq_ignore_ascii_case("true") => true,
            text if text.eq_ignore_ascii_case("false") => false,
            text => {
                return Err(parameter(
                    params::USE_POD_SERVICE_ACCOUNT_TOKEN,
                    format!(
                        "usePodServiceAccountToken {} must be \"true\" or \"false\"",
                        quoted(text)
                    ),
                ));
            }
        };
        let pod_role = match get(params::POD_SERVICE_ACCOUNT_ROLE_ARN).trim() {
            "" => None,
            text => Some(RoleArn::parse(text).map_err(|reason| {
                parameter(
                    params::POD_SERVICE_ACCOUNT_ROLE_ARN,
                    format!("podServiceAccountRoleArn: {reason}"),
                )
            })?),
        };
        let context = Context {
            region: &region,
            translation: path_translation,
            settings,
        };
        let objects = parse_objects(get(params::OBJECTS), &context)?;
        check_outputs(&objects)?;
        Ok(Self {
            region,
            path_translation,
            use_pod_service_account_token,
            pod_role,
            objects,
        })
    }
}

/// A region id: what a DNS label holds (lowercase letters, digits, `-`), as it goes into a
/// host name.
fn parse_region(region: &str) -> Result<String, String> {
    let region = region.to_ascii_lowercase();
    let ok = (1..=63).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    if ok {
        Ok(region)
    } else {
        Err("is not a region id like cn-hangzhou".to_owned())
    }
}

/// `pathTranslation` as Alibaba's provider reads it: empty for `_`, `False` (any case) for
/// none, otherwise exactly one character (one byte: ASCII, and not a control character).
fn parse_translation(text: &str) -> Result<Option<char>, SpecError> {
    if text.is_empty() {
        return Ok(Some('_'));
    }
    if text.eq_ignore_ascii_case("false") {
        return Ok(None);
    }
    match text.as_bytes() {
        [byte] if byte.is_ascii() && !byte.is_ascii_control() => Ok(Some(char::from(*byte))),
        _ => Err(parameter(
            params::PATH_TRANSLATION,
            format!(
                "pathTranslation {} must be either 'False' or a single character string",
                quoted(text)
            ),
        )),
    }
}

/// What objects are read against.
struct Context<'a> {
    region: &'a str,
    translation: Option<char>,
    settings: &'a SpecSettings,
}

impl Context<'_> {
    /// A file name as Alibaba's provider derives it: `/` replaced by the translation
    /// character, or, with translation off, leading `/` removed.
    fn file_name(&self, name: &str) -> String {
        match self.translation {
            Some(with) => name.replace('/', with.encode_utf8(&mut [0; 4])),
            None => name.trim_start_matches('/').to_owned(),
        }
    }

    fn default_endpoint(&self, kind: ObjectType) -> String {
        format!(
            "{}-vpc.{}.{ALIBABA_CLOUD_SUFFIX}",
            kind.as_str(),
            self.region
        )
    }
}

/// One YAML value of an object's field.
#[derive(Deserialize)]
#[serde(untagged)]
enum Value {
    /// `null`, `~` or nothing: as if absent.
    Null,
    Text(String),
    List(Vec<BTreeMap<String, Value>>),
    Other(IgnoredAny),
}

/// What a YAML error says about the class, without quoting it: where parsing stopped, and
/// whether a key was repeated.
fn yaml_problem(error: &serde_saphyr::Error) -> String {
    let what = if error.to_string().contains("uplicate") {
        "a field is given twice"
    } else {
        "not YAML of the expected shape"
    };
    match error.location() {
        Some(at) => format!("{what} (line {}, column {})", at.line(), at.column()),
        None => what.to_owned(),
    }
}

/// `objects`: a YAML list of mappings, each validated.
fn parse_objects(text: &str, context: &Context<'_>) -> Result<Vec<ObjectSpec>, SpecError> {
    if text.trim().is_empty() {
        return Err(parameter(params::OBJECTS, "objects is not set"));
    }
    let items: Option<Vec<Option<BTreeMap<String, Value>>>> =
        serde_saphyr::from_str_with_options(text, serde_saphyr::options! { with_snippet: false })
            .map_err(|error| {
            let cause = if text.trim_start().starts_with("array:") {
                "objects is Azure's `array:` of strings; Alibaba's provider reads a plain \
                     YAML list of objects (`- objectName: ...`)"
                    .to_owned()
            } else {
                yaml_problem(&error)
            };
            parameter(
                params::OBJECTS,
                format!("failed to load SecretProviderClass objects: {cause}"),
            )
        })?;
    let items = items.unwrap_or_default();
    let count = items.len();
    let refusal = match count {
        0 => Some("objects is an empty list: list at least one object".to_owned()),
        n if n > MAX_OBJECTS => Some(format!(
            "objects lists {n} objects, more than the {MAX_OBJECTS} one class may mount"
        )),
        _ => None,
    };
    if let Some(reason) = refusal {
        return Err(parameter(params::OBJECTS, reason));
    }
    let mut objects = Vec::with_capacity(count);
    for (index, item) in items.into_iter().enumerate() {
        objects.push(parse_object(index, item.unwrap_or_default(), context)?);
    }
    Ok(objects)
}

/// An object's (or a `jmesPath` entry's) fields, looked up case-insensitively.
struct Fields {
    by_name: BTreeMap<String, Value>,
}

impl Fields {
    /// Keys folded to lowercase; a field given twice (in two spellings) is refused.
    fn new(raw: BTreeMap<String, Value>) -> Result<Self, String> {
        let mut by_name = BTreeMap::new();
        for (key, value) in raw {
            let folded = key.to_ascii_lowercase();
            if by_name.insert(folded, value).is_some() {
                return Err(format!(
                    "{} is given twice (field names ignore case)",
                    quoted(&key)
                ));
            }
        }
        Ok(Self { by_name })
    }

    /// A text field, trimmed; absent, null and empty are `None`.
    fn text(&mut self, field: &'static str) -> Result<Option<String>, String> {
        match self.by_name.remove(&field.to_ascii_lowercase()) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Text(text)) => {
                let text = text.trim();
                Ok((!text.is_empty()).then(|| text.to_owned()))
            }
            Some(_) => Err(format!("{field} must be a string")),
        }
    }

    /// A list of mappings; absent and null are empty.
    fn list(&mut self, field: &'static str) -> Result<Vec<BTreeMap<String, Value>>, String> {
        match self.by_name.remove(&field.to_ascii_lowercase()) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::List(list)) => Ok(list),
            Some(_) => Err(format!("{field} must be a list of {{path, objectAlias}}")),
        }
    }
}

/// One object, validated on its own.
fn parse_object(
    index: usize,
    raw: BTreeMap<String, Value>,
    context: &Context<'_>,
) -> Result<ObjectSpec, SpecError> {
    let unnamed = |field, reason: String| SpecError::Object {
        index,
        name: None,
        field,
        reason,
    };
    let mut raw = Fields::new(raw).map_err(|reason| unnamed(params::OBJECTS, reason))?;
    let name = raw
        .text(fields::OBJECT_NAME)
        .map_err(|reason| unnamed(fields::OBJECT_NAME, reason))?
        .ok_or_else(|| {
            unnamed(
                fields::OBJECT_NAME,
                "objectName: Object name must be specified".into(),
            )
        })?;
    if name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(unnamed(
            fields::OBJECT_NAME,
            format!(
                "objectName {} must be at most {MAX_NAME_BYTES} bytes without control characters",
                quoted(&name)
            ),
        ));
    }
    let named = |field, reason: String| SpecError::Object {
        index,
        name: Some(name.clone()),
        field,
        reason,
    };
    let text = |raw: &mut Fields, field| raw.text(field).map_err(|reason| named(field, reason));

    let kind = match text(&mut raw, fields::OBJECT_TYPE)?.as_deref() {
        None | Some("kms") => ObjectType::Kms,
        Some("oos") => ObjectType::Oos,
        Some(other) => {
            return Err(named(
                fields::OBJECT_TYPE,
                format!(
                    "objectType: unsupported object type {}, only support \"kms\" and \"oos\"",
                    quoted(other)
                ),
            ));
        }
    };
    if name.starts_with("acs:") {
        check_object_arn(&name, kind).map_err(|reason| named(fields::OBJECT_NAME, reason))?;
    }
    let alias = text(&mut raw, fields::OBJECT_ALIAS)?;
    let version_text = text(&mut raw, fields::OBJECT_VERSION)?;
    let label = text(&mut raw, fields::OBJECT_VERSION_LABEL)?;
    for (field, value) in [
        (fields::OBJECT_VERSION, &version_text),
        (fields::OBJECT_VERSION_LABEL, &label),
    ] {
        if let Some(value) = value
            && (value.len() > MAX_VERSION_BYTES || value.chars().any(char::is_control))
        {
            return Err(named(
                field,
                format!(
                    "{field} {} must be at most {MAX_VERSION_BYTES} bytes without control \
                     characters",
                    quoted(value)
                ),
            ));
        }
    }
    let version = match kind {
        ObjectType::Kms if version_text.is_none() && label.is_none() => VersionSelector::Latest,
        ObjectType::Kms => VersionSelector::Kms {
            id: version_text.clone(),
            stage: label,
        },
        // objectVersionLabel is a KMS version stage: an oos parameter has none, and Alibaba's
        // provider ignores the field there, so a class that sets it still mounts.
        ObjectType::Oos => match &version_text {
            None => VersionSelector::Latest,
            Some(text) => VersionSelector::Oos(
                parse_parameter_version(text)
                    .map_err(|reason| named(fields::OBJECT_VERSION, reason))?,
            ),
        },
    };
    let kms_endpoint = text(&mut raw, fields::KMS_ENDPOINT)?;
    let endpoint = match (kind, kms_endpoint) {
        (ObjectType::Kms, Some(host)) => check_endpoint(&host, context.settings)
            .map_err(|reason| named(fields::KMS_ENDPOINT, reason))?,
        // kmsEndpoint is for kms objects; on an oos object Alibaba's provider ignores it.
        (kind, _) => context.default_endpoint(kind),
    };
    let cross_account_role = text(&mut raw, fields::CROSS_ACCOUNT_ROLE_ARN)?
        .map(|arn| {
            RoleArn::parse(&arn).map_err(|reason| {
                named(
                    fields::CROSS_ACCOUNT_ROLE_ARN,
                    format!("crossAccountRoleArn: {reason}"),
                )
            })
        })
        .transpose()?;
    let entries = raw
        .list(fields::JMES_PATH)
        .map_err(|reason| named(fields::JMES_PATH, reason))?;
    let json_fields =
        parse_json_fields(entries, context).map_err(|reason| named(fields::JMES_PATH, reason))?;
    let file = context.file_name(alias.as_deref().unwrap_or(&name));
    Ok(ObjectSpec {
        name,
        kind,
        alias,
        version,
        version_text: version_text.unwrap_or_default(),
        json_fields,
        endpoint,
        cross_account_role,
        file,
    })
}

/// An ARN as `objectName`: `acs:<service>:<region>:<account>:<resource>`, of the object type's
/// service (`kms` with `secret/<name>`, `oos` with `secretparameter/<name>`).
fn check_object_arn(name: &str, kind: ObjectType) -> Result<(), String> {
    let sections: Vec<&str> = name.splitn(5, ':').collect();
    let (service, resource) = match kind {
        ObjectType::Kms => ("kms", "secret/"),
        ObjectType::Oos => ("oos", "secretparameter/"),
    };
    match sections.as_slice() {
        ["acs", found, _region, account, rest]
            if *found == service
                && account.bytes().all(|b| b.is_ascii_digit())
                && rest.len() > resource.len()
                && rest.starts_with(resource) =>
        {
            Ok(())
        }
        ["acs", found, _, _, _] if *found != service => Err(format!(
            "objectName: Invalid service in ARN: {} (an objectType {} object's ARN is \
             acs:{service}:<region>:<account>:{resource}<name>)",
            quoted(found),
            kind.as_str()
        )),
        _ => Err(format!(
            "objectName: Invalid ARN format in object name: {} (expected \
             acs:{service}:<region>:<account>:{resource}<name>)",
            quoted(name)
        )),
    }
}

/// An OOS `ParameterVersion`: an integer from 1 to [`MAX_PARAMETER_VERSION`].
fn parse_parameter_version(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|version| (1..=MAX_PARAMETER_VERSION).contains(version))
        .ok_or_else(|| {
            format!(
                "objectVersion {} of an oos parameter must be a ParameterVersion from 1 to \
                 {MAX_PARAMETER_VERSION}",
                quoted(text)
            )
        })
}

/// A `kmsEndpoint`: a DNS host name (no scheme, port or path) under `aliyuncs.com` or an
/// allowed suffix. Returned lowercase.
fn check_endpoint(host: &str, settings: &SpecSettings) -> Result<String, String> {
    let lower = host.to_ascii_lowercase();
    if !azure_access::cloud::is_dns_name(&lower) {
        return Err(format!(
            "kmsEndpoint {} must be a host name such as kms-vpc.cn-hangzhou.aliyuncs.com (no \
             scheme, port or path)",
            quoted(host)
        ));
    }
    let under = |suffix: &str| {
        lower
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
    };
    if under(ALIBABA_CLOUD_SUFFIX)
        || settings
            .endpoint_suffixes
            .iter()
            .any(|suffix| under(suffix))
    {
        Ok(lower)
    } else {
        Err(format!(
            "kmsEndpoint {} is not under {ALIBABA_CLOUD_SUFFIX}{}: the provider only sends \
             credentials to Alibaba Cloud endpoints",
            quoted(host),
            if settings.endpoint_suffixes.is_empty() {
                String::new()
            } else {
                format!(" or {}", settings.endpoint_suffixes.join(", "))
            }
        ))
    }
}

/// `jmesPath`: each entry an expression that compiles (within the size and depth limits) and an
/// alias; the alias's file translated like an object's.
fn parse_json_fields(
    entries: Vec<BTreeMap<String, Value>>,
    context: &Context<'_>,
) -> Result<Vec<JsonField>, String> {
    if entries.len() > MAX_JSON_FIELDS {
        return Err(format!(
            "jmesPath has {} entries, more than the {MAX_JSON_FIELDS} one object may have",
            entries.len()
        ));
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let mut entry =
                Fields::new(entry).map_err(|reason| format!("jmesPath[{i}]: {reason}"))?;
            let path = entry
                .text(fields::PATH)
                .map_err(|reason| format!("jmesPath[{i}]: {reason}"))?
                .ok_or_else(|| format!("jmesPath[{i}]: Path must be specified for JMES object"))?;
            jmes::check_expression(&path)
                .map_err(|reason| format!("jmesPath[{i}].path {}: {reason}", quoted(&path)))?;
            let alias = entry
                .text(fields::OBJECT_ALIAS)
                .map_err(|reason| format!("jmesPath[{i}]: {reason}"))?
                .ok_or_else(|| {
                    format!("jmesPath[{i}]: Object alias must be specified for JMES object")
                })?;
            Ok(JsonField {
                file: context.file_name(&alias),
                path,
                alias,
            })
        })
        .collect()
}

/// The files all objects write: each a path the driver accepts, no path written twice (an
/// object's file, a `jmesPath` file), none inside another.
fn check_outputs(objects: &[ObjectSpec]) -> Result<(), SpecError> {
    let total: usize = objects.iter().map(|o| 1 + o.json_fields.len()).sum();
    if total > MAX_OUTPUT_FILES {
        return Err(parameter(
            params::OBJECTS,
            format!(
                "objects write {total} files, more than the {MAX_OUTPUT_FILES} one mount may write"
            ),
        ));
    }
    let mut written: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, object) in objects.iter().enumerate() {
        let fail = |field, reason| SpecError::Object {
            index,
            name: Some(object.name.clone()),
            field,
            reason,
        };
        let own_field = if object.alias.is_some() {
            fields::OBJECT_ALIAS
        } else {
            fields::OBJECT_NAME
        };
        let files = std::iter::once((object.file.as_str(), own_field)).chain(
            object
                .json_fields
                .iter()
                .map(|json| (json.file.as_str(), fields::JMES_PATH)),
        );
        for (path, field) in files {
            files::check_path(path).map_err(|bad| fail(field, format!("{field}: {bad}")))?;
            if let Some(&other) = written.get(path) {
                let what = match field {
                    fields::OBJECT_ALIAS => "duplicate object alias",
                    fields::JMES_PATH => "duplicate JMES path object alias",
                    _ => "duplicate object name",
                };
                let whose = if other == index {
                    "this object".to_owned()
                } else {
                    format!("object {other} ({:?})", objects[other].name)
                };
                return Err(fail(
                    field,
                    format!("{what}: file {} is also written by {whose}", quoted(path)),
                ));
            }
            written.insert(path, index);
        }
    }
    for (path, &index) in &written {
        for (slash, _) in path.match_indices('/') {
            if let Some(&other) = written.get(&path[..slash]) {
                return Err(SpecError::Object {
                    index,
                    name: Some(objects[index].name.clone()),
                    field: fields::OBJECT_ALIAS,
                    reason: format!(
                        "file {} would be inside {}, a file object {other} ({:?}) writes",
                        quoted(path),
                        quoted(&path[..slash]),
                        objects[other].name
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(objects: &str, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut parameters = BTreeMap::from([("objects".to_owned(), objects.to_owned())]);
        for (key, value) in pairs {
            parameters.insert((*key).to_owned(), (*value).to_owned());
        }
        parameters
    }

    fn parse_with(objects: &str, pairs: &[(&str, &str)]) -> Result<AlibabaMountSpec, SpecError> {
        AlibabaMountSpec::from_parameters(&class(objects, pairs), &SpecSettings::default())
    }

    fn parse(objects: &str) -> Result<AlibabaMountSpec, SpecError> {
        parse_with(objects, &[])
    }

    fn one(objects: &str) -> ObjectSpec {
        parse(objects).unwrap().objects.remove(0)
    }

    fn error(result: Result<AlibabaMountSpec, SpecError>) -> (&'static str, String) {
        match result {
            Ok(spec) => panic!("parsed: {spec:?}"),
            Err(SpecError::Parameter { key, reason }) => (key, reason),
            Err(error @ SpecError::Object { field, .. }) => (field, error.to_string()),
        }
    }

    #[test]
    fn alibabas_readme_example_parses_with_its_defaults() {
        let spec = parse(
            "- objectName: \"MySecret\"\n  objectType: \"kms\"\n  objectAlias: \"MySecretKMS\"\n\
             - objectName: \"MySecret\"\n  objectType: \"oos\"\n  objectAlias: \"MySecretOOS\"\n\
             - objectName: \"test\"\n  jmesPath:\n    - path: \"username\"\n      objectAlias: \
             \"MySecretUsername\"\n    - path: \"password\"\n      objectAlias: \"MySecretPassword\"\n",
        )
        .unwrap();
        assert_eq!(spec.region, "cn-hangzhou");
        assert_eq!(spec.path_translation, Some('_'));
        assert!(!spec.use_pod_service_account_token);
        let [kms, oos, json] = spec.objects.as_slice() else {
            panic!("{spec:?}")
        };
        assert_eq!(kms.kind, ObjectType::Kms);
        assert_eq!(kms.endpoint, "kms-vpc.cn-hangzhou.aliyuncs.com");
        assert_eq!(kms.file, "MySecretKMS");
        assert_eq!(oos.kind, ObjectType::Oos);
        assert_eq!(oos.endpoint, "oos-vpc.cn-hangzhou.aliyuncs.com");
        assert_eq!(json.kind, ObjectType::Kms, "the default type");
        assert_eq!(json.file, "test");
        assert_eq!(
            json.json_fields
                .iter()
                .map(|f| (f.path.as_str(), f.file.as_str()))
                .collect::<Vec<_>>(),
            [
                ("username", "MySecretUsername"),
                ("password", "MySecretPassword")
            ]
        );
    }

    #[test]
    fn region_sets_the_default_endpoints_and_is_checked() {
        let spec = parse_with(
            "- objectName: a\n- objectName: b\n  objectType: oos",
            &[("region", " cn-Shanghai ")],
        )
        .unwrap();
        assert_eq!(spec.region, "cn-shanghai");
        assert_eq!(spec.objects[0].endpoint, "kms-vpc.cn-shanghai.aliyuncs.com");
        assert_eq!(spec.objects[1].endpoint, "oos-vpc.cn-shanghai.aliyuncs.com");
        for bad in ["evil.com/x", "a.b", "-x", "a b"] {
            assert_eq!(
                error(parse_with("- objectName: a", &[("region", bad)])).0,
                "region"
            );
        }
        let settings = SpecSettings {
            default_region: "ap-southeast-1".into(),
            ..SpecSettings::default()
        };
        let spec =
            AlibabaMountSpec::from_parameters(&class("- objectName: a", &[]), &settings).unwrap();
        assert_eq!(
            spec.objects[0].endpoint,
            "kms-vpc.ap-southeast-1.aliyuncs.com"
        );
    }

    #[test]
    fn path_translation_replaces_slashes_as_alibabas_provider_does() {
        let objects = "- objectName: My/Path/Secret\n- objectName: x\n  objectAlias: /a/b";
        let files = |pairs: &[(&str, &str)]| -> Vec<String> {
            parse_with(objects, pairs)
                .unwrap()
                .objects
                .into_iter()
                .map(|o| o.file)
                .collect()
        };
        assert_eq!(files(&[]), ["My_Path_Secret", "_a_b"]);
        assert_eq!(
            files(&[("pathTranslation", "-")]),
            ["My-Path-Secret", "-a-b"]
        );
        assert_eq!(
            files(&[("pathTranslation", "False")]),
            ["My/Path/Secret", "a/b"]
        );
        assert_eq!(
            files(&[("pathTranslation", "false")]),
            ["My/Path/Secret", "a/b"]
        );
        for bad in ["__", "\t", "é"] {
            let (key, reason) = error(parse_with(objects, &[("pathTranslation", bad)]));
            assert_eq!(key, "pathTranslation");
            assert!(reason.contains("single character"), "{reason}");
        }
    }

    #[test]
    fn versions_labels_and_their_types() {
        let kms = one("- objectName: db\n  objectVersion: v1\n  objectVersionLabel: ACSPrevious");
        assert_eq!(
            kms.version,
            VersionSelector::Kms {
                id: Some("v1".into()),
                stage: Some("ACSPrevious".into())
            }
        );
        assert!(kms.version.is_pinned());
        let staged = one("- objectName: db\n  objectVersionLabel: ACSPrevious");
        assert!(!staged.version.is_pinned());
        assert_eq!(one("- objectName: db").version, VersionSelector::Latest);
        let oos = one("- objectName: p\n  objectType: oos\n  objectVersion: '3'");
        assert_eq!(oos.version, VersionSelector::Oos(3));
        for bad in ["0", "101", "v1", "-1"] {
            let (field, reason) = error(parse(&format!(
                "- objectName: p\n  objectType: oos\n  objectVersion: '{bad}'"
            )));
            assert_eq!(field, "objectVersion", "{reason}");
            assert!(reason.contains("ParameterVersion"), "{reason}");
        }
        // A stage or a KMS endpoint on an oos object is ignored, as Alibaba's provider ignores
        // them: the class mounts the parameter's latest version from the OOS endpoint.
        let oos = one(
            "- objectName: p\n  objectType: oos\n  objectVersionLabel: ACSCurrent\n  \
             kmsEndpoint: kms.example.aliyuncs.com",
        );
        assert_eq!(oos.version, VersionSelector::Latest);
        assert!(oos.endpoint.starts_with("oos-vpc."), "{}", oos.endpoint);
    }

    #[test]
    fn field_names_match_without_case_and_unknown_fields_are_ignored() {
        let object = one("- objectname: db\n  OBJECTALIAS: file\n  colour: blue");
        assert_eq!((object.name.as_str(), object.file.as_str()), ("db", "file"));
        let (_, reason) = error(parse("- objectName: a\n  objectname: b"));
        assert!(reason.contains("given twice"), "{reason}");
    }

    #[test]
    fn every_object_error_names_the_object_and_the_field() {
        let table: &[(&str, &str, &str)] = &[
            (
                "- objectAlias: x",
                "objectName",
                "Object name must be specified",
            ),
            (
                "- objectName: a\n  objectType: secret",
                "objectType",
                "unsupported object type",
            ),
            (
                "- objectName: a\n  objectType: KMS",
                "objectType",
                "only support",
            ),
            ("- objectName: [1]", "objectName", "must be a string"),
            (
                "- objectName: a\n  objectVersion: 3",
                "objectVersion",
                "must be a string",
            ),
            (
                "- objectName: acs:oos:cn-hangzhou:123:secretparameter/x",
                "objectName",
                "Invalid service in ARN",
            ),
            (
                "- objectName: acs:kms:cn-hangzhou",
                "objectName",
                "Invalid ARN format",
            ),
            (
                "- objectName: a\n  kmsEndpoint: https://kms.cn-hangzhou.aliyuncs.com",
                "kmsEndpoint",
                "no scheme",
            ),
            (
                "- objectName: a\n  kmsEndpoint: kms.evil.example",
                "kmsEndpoint",
                "not under aliyuncs.com",
            ),
            (
                "- objectName: a\n  kmsEndpoint: aliyuncs.com",
                "kmsEndpoint",
                "not under",
            ),
            (
                "- objectName: a\n  kmsEndpoint: evilaliyuncs.com",
                "kmsEndpoint",
                "not under",
            ),
            (
                "- objectName: a\n  kmsEndpoint: 169.254.169.254",
                "kmsEndpoint",
                "not under",
            ),
            (
                "- objectName: a\n  crossAccountRoleArn: arn:aws:iam::1:role/x",
                "crossAccountRoleArn",
                "RAM role ARN",
            ),
            (
                "- objectName: a\n  jmesPath: x",
                "jmesPath",
                "must be a list",
            ),
            (
                "- objectName: a\n  jmesPath:\n    - objectAlias: u",
                "jmesPath",
                "Path must be specified",
            ),
            (
                "- objectName: a\n  jmesPath:\n    - path: u",
                "jmesPath",
                "Object alias must be specified",
            ),
            (
                "- objectName: a\n  jmesPath:\n    - path: 'a.['\n      objectAlias: u",
                "jmesPath",
                "does not compile",
            ),
            (
                "- objectName: a\n  objectAlias: ../etc/passwd\n  pathTranslation: x",
                "objectAlias",
                "'..'",
            ),
            (
                "- objectName: a\n- objectName: a",
                "objectName",
                "duplicate object name",
            ),
            (
                "- objectName: a\n  objectAlias: f\n- objectName: b\n  objectAlias: f",
                "objectAlias",
                "duplicate object alias",
            ),
            (
                "- objectName: a\n  jmesPath:\n    - {path: x, objectAlias: a}",
                "jmesPath",
                "duplicate JMES path object alias",
            ),
        ];
        for (objects, field, needle) in table {
            let (found, reason) = error(parse_with(objects, &[("pathTranslation", "False")]));
            assert_eq!(found, *field, "{objects}: {reason}");
            assert!(reason.contains(needle), "{objects}: {reason}");
            assert!(
                reason.starts_with("object 0") || reason.starts_with("object 1 ("),
                "{reason}"
            );
        }
    }

    #[test]
    fn translated_names_that_collide_are_refused_and_paths_cannot_nest() {
        let (field, reason) = error(parse("- objectName: a/b\n- objectName: a_b"));
        assert_eq!(field, "objectName");
        assert!(reason.contains("duplicate object name"), "{reason}");
        let (_, reason) = error(parse_with(
            "- objectName: a\n- objectName: a/b",
            &[("pathTranslation", "False")],
        ));
        assert!(reason.contains("would be inside"), "{reason}");
        // A kms and an oos object of the same name need aliases, as Alibaba's README says.
        assert!(parse("- objectName: s\n- objectName: s\n  objectType: oos").is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let (key, reason) = error(parse(""));
        assert_eq!((key, reason.as_str()), ("objects", "objects is not set"));
        assert_eq!(error(parse("[]")).0, "objects");
        let (_, reason) = error(parse("array:\n  - |\n    objectName: a\n"));
        assert!(reason.contains("plain YAML list"), "{reason}");
        assert_eq!(error(parse("- a: [")).0, "objects");
        for (value, expected) in [
            ("true", true),
            ("TRUE", true),
            ("false", false),
            ("", false),
        ] {
            let spec =
                parse_with("- objectName: a", &[("usePodServiceAccountToken", value)]).unwrap();
            assert_eq!(spec.use_pod_service_account_token, expected, "{value}");
        }
        assert_eq!(
            error(parse_with(
                "- objectName: a",
                &[("usePodServiceAccountToken", "yes")]
            ))
            .0,
            "usePodServiceAccountToken"
        );
        let spec = parse_with(
            "- objectName: a",
            &[(
                "podServiceAccountRoleArn",
                "acs:ram::1234567890123456:role/app",
            )],
        )
        .unwrap();
        assert_eq!(
            spec.pod_role.map(|arn| arn.0),
            Some("acs:ram::1234567890123456:role/app".to_owned())
        );
        assert_eq!(
            error(parse_with(
                "- objectName: a",
                &[("podServiceAccountRoleArn", "role/app")]
            ))
            .0,
            "podServiceAccountRoleArn"
        );
    }

    #[test]
    fn arn_names_cross_account_roles_and_allowed_endpoints() {
        let object = one(
            "- objectName: acs:kms:cn-hangzhou:2222:secret/shared\n  crossAccountRoleArn: \
             acs:ram::2222:role/reader\n  kmsEndpoint: KST-1.CryptoService.KMS.aliyuncs.com",
        );
        assert_eq!(object.file, "acs:kms:cn-hangzhou:2222:secret_shared");
        assert_eq!(object.endpoint, "kst-1.cryptoservice.kms.aliyuncs.com");
        assert_eq!(
            object.cross_account_role.map(|arn| arn.0),
            Some("acs:ram::2222:role/reader".to_owned())
        );
        one("- objectName: acs:oos:cn-hangzhou:2222:secretparameter/p\n  objectType: oos");
        let settings = SpecSettings {
            endpoint_suffixes: vec!["kms.internal.example".into()],
            ..SpecSettings::default()
        };
        let spec = AlibabaMountSpec::from_parameters(
            &class(
                "- objectName: a\n  kmsEndpoint: a.kms.internal.example",
                &[],
            ),
            &settings,
        )
        .unwrap();
        assert_eq!(spec.objects[0].endpoint, "a.kms.internal.example");
    }

    #[test]
    fn jmespath_expressions_are_bounded() {
        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        let (_, reason) = error(parse(&format!(
            "- objectName: a\n  jmesPath:\n    - path: '{deep}'\n      objectAlias: u"
        )));
        assert!(reason.contains("has more than 32 brackets"), "{reason}");
        let long = "a".repeat(jmes::MAX_JMESPATH_BYTES + 1);
        let (_, reason) = error(parse(&format!(
            "- objectName: a\n  jmesPath:\n    - path: {long}\n      objectAlias: u"
        )));
        assert!(reason.contains("longer"), "{reason}");
    }

    #[test]
    fn limits_are_enforced() {
        let many: String = (0..=MAX_OBJECTS)
            .map(|i| format!("- objectName: o{i}\n"))
            .collect();
        let (key, reason) = error(parse(&many));
        assert_eq!(key, "objects");
        assert!(reason.contains("more than"), "{reason}");
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            error(parse(&format!("- objectName: {long}"))).0,
            "objectName"
        );
    }
}
