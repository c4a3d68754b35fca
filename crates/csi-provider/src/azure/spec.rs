//! An Azure Key Vault mount, validated: the SecretProviderClass parameters and object fields
//! Azure's provider accepts (same names, defaults and precedence), plus kube-kms's additions
//! (several vaults in one class, `jmesPath`, `tls` output, a PFX password).
//!
//! Parameters and objects are attacker-influenced input: nothing here makes a network call or
//! reads a file, and every bad value is a [`SpecError`] naming the object and the field.

use std::collections::BTreeMap;
use std::fmt;

use azure_access::cloud::CloudName;
use serde::Deserialize;
use serde::de::IgnoredAny;

pub use crate::class::SpecError;
use crate::class::{MAX_OBJECTS, MAX_OUTPUT_FILES};
use crate::files::{self, quoted};
use crate::jmes::{self, MAX_JSON_FIELDS};

/// A vault's name (`keyvaultName`): 3–24 of `[-A-Za-z0-9]`, as Key Vault allows. Its host is
/// `<name>.<the cloud's vault suffix>`; nothing else in a request names a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultName(pub(crate) String);

impl VaultName {
    /// The name, lowercase (vault names are case-insensitive in DNS).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which cloud the class names (`cloudName`, `cloudEnvFileName`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudChoice {
    /// `cloudName` absent or empty: the provider's `--cloud-name`.
    ProviderDefault,
    /// A cloud by name: AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud (case-insensitive).
    Named(azure_access::cloud::CloudName),
    /// `cloudName: AzureStackCloud` with `cloudEnvFileName`: a JSON file on the node (name,
    /// activeDirectoryEndpoint, keyVaultEndpoint, keyVaultDNSSuffix), read by the provider
    /// under its `--cloud-env-dir` only.
    EnvironmentFile(String),
}

/// How the provider authenticates to Entra ID for this mount, as Azure's provider chooses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityMode {
    /// No mode flag and `clientID` set: the pod's service-account token for
    /// `api://AzureADTokenExchange` is a client assertion for application `client_id`.
    WorkloadIdentity {
        /// `clientID`.
        client_id: String,
    },
    /// No mode flag and no `clientID`: `clientid` / `clientsecret` from nodePublishSecretRef.
    ServicePrincipal,
    /// `useVMManagedIdentity: "true"`: the node's managed identity from IMDS.
    VmManagedIdentity {
        /// `userAssignedIdentityID`; `None` for the system-assigned identity.
        user_assigned_client_id: Option<String>,
    },
    /// `usePodIdentity: "true"` (AAD Pod Identity, deprecated): a token from the NMI on the node.
    PodIdentity,
    /// `useAzureTokenProxy: "true"` (AKS identity binding): the pod's token for
    /// `api://AKSIdentityBinding`, exchanged through the token proxy.
    TokenProxy {
        /// `clientID`: the managed identity's client id.
        client_id: String,
    },
}

/// A validated Azure mount: the class's parameters and its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureMountSpec {
    /// `keyvaultName`: the vault objects come from unless they name their own.
    pub vault: VaultName,
    /// `tenantID` (or the deprecated `tenantId`).
    pub tenant_id: String,
    /// `cloudName` / `cloudEnvFileName`.
    pub cloud: CloudChoice,
    /// The identity mode and its ids.
    pub identity: IdentityMode,
    /// `objects`, in the class's order (files and versions are returned in this order).
    pub objects: Vec<ObjectSpec>,
}

/// `objectType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `secret`: a secret's value (or a certificate's backing secret: key and chain).
    Secret,
    /// `key`: a key's public half, as PKIX PEM.
    Key,
    /// `cert`: a certificate's leaf, as PEM.
    Cert,
}

impl ObjectKind {
    /// The name Azure's provider uses (in object_version ids and errors).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Key => "key",
            Self::Cert => "cert",
        }
    }
}

/// `objectFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFormat {
    /// `pem` (default): a certificate-backed secret becomes PKCS#8 key then chain.
    Pem,
    /// `pfx`: a certificate-backed secret's PFX passes through (base64 text, or binary with
    /// `objectEncoding: base64`). Secrets only.
    Pfx,
    /// `tls` (kube-kms): a certificate-backed secret becomes a directory with `tls.crt` (leaf,
    /// then intermediates), `tls.key` (PKCS#8) and `ca.crt` (every certificate after the leaf).
    /// Secrets only, and one version (not with `objectVersionHistory` above 1).
    Tls,
}

/// `objectEncoding` (secrets only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectEncoding {
    /// `utf-8` (default): the value as stored.
    Utf8,
    /// `base64`: the value is standard base64; the file holds the decoded bytes.
    Base64,
    /// `hex`: the value is hex; the file holds the decoded bytes.
    Hex,
}

/// One `jmesPath` entry: a field of a JSON secret written to its own file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonField {
    /// The JMESPath expression (compiled and checked when the spec is built).
    pub path: String,
    /// The file the field is written to (a relative path, checked like an alias).
    pub alias: String,
}

/// One object of `objects`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// `objectName`.
    pub name: String,
    /// `objectType`.
    pub kind: ObjectKind,
    /// `objectAlias`: the file's path (may hold `/`); `None` writes to `name`.
    pub alias: Option<String>,
    /// `objectVersion`: `None` (empty or `latest`) for the newest version.
    pub version: Option<String>,
    /// `objectVersionHistory`: more than 1 writes up to that many enabled versions, newest
    /// first, as `<file>/0`, `<file>/1`, … (0 and 1 both mean one version; at most
    /// [`MAX_VERSION_HISTORY`]).
    pub version_history: u32,
    /// `objectFormat`.
    pub format: ObjectFormat,
    /// `objectEncoding`.
    pub encoding: ObjectEncoding,
    /// `filePermission`, parsed as octal; `None` uses the request's permission.
    pub mode: Option<u32>,
    /// `keyvaultName` on the object (kube-kms): this object's vault instead of the class's.
    pub vault: Option<VaultName>,
    /// `jmesPath` (kube-kms, the shape AWS's and Alibaba's providers use): fields of a JSON
    /// secret, each to its own file, besides the secret's own file. Only on a secret with
    /// `objectFormat: pem` and one version.
    pub json_fields: Vec<JsonField>,
    /// `pfxPasswordSecretName` (kube-kms): with `objectFormat: pfx`, the name of a secret in the
    /// same vault whose value becomes the mounted PFX's password.
    pub pfx_password_secret: Option<String>,
}

impl ObjectSpec {
    /// The file the object is written to: its alias, else its name.
    pub fn file_name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }

    /// The object's vault: its own `keyvaultName`, else the class's.
    pub fn vault<'a>(&'a self, class: &'a AzureMountSpec) -> &'a VaultName {
        self.vault.as_ref().unwrap_or(&class.vault)
    }
}

/// The class parameters an Azure mount reads, as a SecretProviderClass spells them.
pub mod params {
    /// The vault objects come from (required).
    pub const KEYVAULT_NAME: &str = "keyvaultName";
    /// The Entra ID tenant (required; this spelling first).
    pub const TENANT_ID: &str = "tenantID";
    /// The deprecated spelling of [`TENANT_ID`], read when that is empty.
    pub const TENANT_ID_DEPRECATED: &str = "tenantId";
    /// The cloud; empty for the provider's `--cloud-name`.
    pub const CLOUD_NAME: &str = "cloudName";
    /// The cloud environment file of `cloudName: AzureStackCloud`.
    pub const CLOUD_ENV_FILE_NAME: &str = "cloudEnvFileName";
    /// The workload identity's (or the token proxy's managed identity's) client ID.
    pub const CLIENT_ID: &str = "clientID";
    /// AAD Pod Identity (deprecated).
    pub const USE_POD_IDENTITY: &str = "usePodIdentity";
    /// The node's managed identity.
    pub const USE_VM_MANAGED_IDENTITY: &str = "useVMManagedIdentity";
    /// AKS identity binding through the token proxy.
    pub const USE_AZURE_TOKEN_PROXY: &str = "useAzureTokenProxy";
    /// The node's user-assigned identity's client ID (with `useVMManagedIdentity`).
    pub const USER_ASSIGNED_IDENTITY_ID: &str = "userAssignedIdentityID";
    /// The objects to mount: YAML, `array:` of strings each holding one object's fields.
    pub const OBJECTS: &str = "objects";
}

/// The fields of one object in `objects`. Any other field is ignored, as Azure's provider
/// ignores it.
pub mod fields {
    /// Shared with every backend: `objectName`, `objectType` (`secret`, `key` or `cert`,
    /// case-sensitive), `objectAlias`, `objectVersion` (empty or `latest` for the newest) and
    /// (kube-kms) `jmesPath`.
    pub use crate::class::fields::{
        JMES_PATH, OBJECT_ALIAS, OBJECT_NAME, OBJECT_TYPE, OBJECT_VERSION,
    };

    /// How many versions to write, newest first, as `<file>/0`, `<file>/1`, …
    pub const OBJECT_VERSION_HISTORY: &str = "objectVersionHistory";
    /// `pem`, `pfx` or (kube-kms) `tls`.
    pub const OBJECT_FORMAT: &str = "objectFormat";
    /// `utf-8`, `base64` or `hex` (secrets only).
    pub const OBJECT_ENCODING: &str = "objectEncoding";
    /// The file's mode, octal.
    pub const FILE_PERMISSION: &str = "filePermission";
    /// (kube-kms) The object's own vault.
    pub const KEYVAULT_NAME: &str = "keyvaultName";
    /// (kube-kms) The secret whose value becomes the mounted PFX's password.
    pub const PFX_PASSWORD_SECRET_NAME: &str = "pfxPasswordSecretName";

    /// Every field an object is read for.
    pub const ALL: &[&str] = &[
        OBJECT_NAME,
        OBJECT_TYPE,
        OBJECT_ALIAS,
        OBJECT_VERSION,
        OBJECT_VERSION_HISTORY,
        OBJECT_FORMAT,
        OBJECT_ENCODING,
        FILE_PERMISSION,
        KEYVAULT_NAME,
        JMES_PATH,
        PFX_PASSWORD_SECRET_NAME,
    ];
}

/// The highest `objectVersionHistory`: each version is a vault call and a file per mount.
pub const MAX_VERSION_HISTORY: u32 = 100;

/// The names of the files a `tls` object writes in its directory.
pub const TLS_FILES: [&str; 3] = ["tls.crt", "tls.key", "ca.crt"];

impl AzureMountSpec {
    /// Validates a mount's parameters (the class's, overlaid with the volume's attributes) with
    /// the names, defaults and precedence of Azure's provider; every value is trimmed first.
    ///
    /// Checked in this order: `keyvaultName`, `tenantID` (then the deprecated `tenantId`),
    /// `cloudName` and `cloudEnvFileName`, the identity mode, then `objects` one by one, then
    /// the files the objects write together (unique, and none inside another). Where Azure's
    /// provider would fail only at fetch time, or write a file nobody can read, this refuses
    /// before any vault call.
    pub fn from_parameters(parameters: &BTreeMap<String, String>) -> Result<Self, SpecError> {
        let parameters = Parameters(parameters);
        let get = |key| parameters.get(key);

        let vault = match get(params::KEYVAULT_NAME) {
            "" => {
                return Err(parameter(
                    params::KEYVAULT_NAME,
                    "keyvaultName is not provided",
                ));
            }
            name => parse_vault_name(name).map_err(|reason| {
                parameter(params::KEYVAULT_NAME, format!("keyvaultName: {reason}"))
            })?,
        };
        let tenant_id = parse_tenant(parameters)?;
        let cloud = parse_cloud(get(params::CLOUD_NAME), get(params::CLOUD_ENV_FILE_NAME))?;
        let identity = parse_identity(parameters)?;
        let objects = parse_objects(get(params::OBJECTS))?;
        check_outputs(&objects)?;
        Ok(AzureMountSpec {
            vault,
            tenant_id,
            cloud,
            identity,
            objects,
        })
    }
}

impl ObjectSpec {
    /// The paths this object's files are written at, in the volume: its file (alias or name);
    /// with `objectVersionHistory` above 1, `<file>/0` … `<file>/<n-1>` instead; with
    /// `objectFormat: tls`, `<file>/tls.crt`, `<file>/tls.key` and `<file>/ca.crt` instead; and
    /// each `jmesPath` alias besides. (The provider's `<file>.crt` / `<file>.key` option adds
    /// more, decided when the content is rendered.)
    pub fn output_paths(&self) -> Vec<String> {
        self.outputs().into_iter().map(|(path, _)| path).collect()
    }

    /// How many paths [`ObjectSpec::output_paths`] returns, without building them.
    fn output_count(&self) -> usize {
        let own = if self.version_history > 1 {
            self.version_history as usize
        } else if self.format == ObjectFormat::Tls {
            TLS_FILES.len()
        } else {
            1
        };
        own + self.json_fields.len()
    }

    /// The output paths, each with the field that names it.
    fn outputs(&self) -> Vec<(String, &'static str)> {
        let file = self.file_name();
        let field = if self.alias.is_some() {
            fields::OBJECT_ALIAS
        } else {
            fields::OBJECT_NAME
        };
        let mut paths = Vec::with_capacity(self.output_count());
        if self.version_history > 1 {
            paths.extend((0..self.version_history).map(|i| (format!("{file}/{i}"), field)));
        } else if self.format == ObjectFormat::Tls {
            paths.extend(
                TLS_FILES
                    .iter()
                    .map(|name| (format!("{file}/{name}"), field)),
            );
        } else {
            paths.push((file.to_owned(), field));
        }
        paths.extend(
            self.json_fields
                .iter()
                .map(|json| (json.alias.clone(), fields::JMES_PATH)),
        );
        paths
    }
}

/// The mount's parameters, read trimmed.
#[derive(Clone, Copy)]
struct Parameters<'a>(&'a BTreeMap<String, String>);

impl<'a> Parameters<'a> {
    /// The value of `key`, trimmed as Azure's provider trims it; empty when absent.
    fn get(self, key: &str) -> &'a str {
        self.0.get(key).map_or("", |value| value.trim())
    }
}

fn parameter(key: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::Parameter {
        key,
        reason: reason.into(),
    }
}

/// `keyvaultName`, as Azure's provider checks it (3–24 of `[-A-Za-z0-9]`), lowercase.
fn parse_vault_name(name: &str) -> Result<VaultName, String> {
    if (3..=24).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(VaultName(name.to_ascii_lowercase()))
    } else {
        Err(format!(
            "Invalid vault name: {}, must match [-a-zA-Z0-9]{{3,24}}",
            quoted(name)
        ))
    }
}

/// A Key Vault object name: 1–127 of `[0-9a-zA-Z-]`.
fn is_object_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `tenantID`, else the deprecated `tenantId`: a tenant GUID or domain (or `adfs`), in the
/// characters Entra ID tenant IDs have (`[0-9A-Za-z.-]`, as azidentity checks them): the
/// value becomes a path segment of the authority URL.
fn parse_tenant(parameters: Parameters<'_>) -> Result<String, SpecError> {
    let get = |key| parameters.get(key);
    let (key, tenant) = match get(params::TENANT_ID) {
        "" => (
            params::TENANT_ID_DEPRECATED,
            get(params::TENANT_ID_DEPRECATED),
        ),
        tenant => (params::TENANT_ID, tenant),
    };
    if tenant.is_empty() {
        return Err(parameter(
            params::TENANT_ID,
            "tenantId is not provided (set tenantID)",
        ));
    }
    let valid = tenant.len() <= 256
        && !tenant.starts_with('.')
        && !tenant.contains("..")
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(tenant.to_owned())
    } else {
        Err(parameter(
            key,
            format!(
                "{key}: {} is not a tenant ID: expected a GUID or a domain such as \
                 contoso.onmicrosoft.com",
                quoted(tenant)
            ),
        ))
    }
}

/// `cloudName` (any case, the names go-autorest knows) and, for Azure Stack, `cloudEnvFileName`.
/// `cloudEnvFileName` with any other cloud is ignored, as Azure's provider ignores it.
fn parse_cloud(name: &str, env_file: &str) -> Result<CloudChoice, SpecError> {
    let named = |cloud| Ok(CloudChoice::Named(cloud));
    match name.to_ascii_lowercase().as_str() {
        "" => Ok(CloudChoice::ProviderDefault),
        "azurepubliccloud" | "azurecloud" => named(CloudName::Public),
        "azureusgovernmentcloud" | "azureusgovernment" => named(CloudName::UsGovernment),
        "azurechinacloud" => named(CloudName::China),
        "azuregermancloud" => Err(parameter(
            params::CLOUD_NAME,
            "cloudName AzureGermanCloud is no longer served: Microsoft Cloud Deutschland closed \
             in October 2021 (its regions moved to AzurePublicCloud)",
        )),
        "azurestackcloud" if env_file.is_empty() => Err(parameter(
            params::CLOUD_ENV_FILE_NAME,
            "cloudEnvFileName is not provided: cloudName AzureStackCloud reads its endpoints \
             from that file",
        )),
        "azurestackcloud" => Ok(CloudChoice::EnvironmentFile(env_file.to_owned())),
        _ => Err(parameter(
            params::CLOUD_NAME,
            format!(
                "cloudName {} is not valid: expected AzurePublicCloud, AzureUSGovernmentCloud, \
                 AzureChinaCloud or AzureStackCloud (any case)",
                quoted(name)
            ),
        )),
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it; empty is false, as Azure's provider
/// defaults it.
fn parse_go_bool(key: &'static str, text: &str) -> Result<bool, SpecError> {
    match text {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        _ => Err(parameter(
            key,
            format!(
                "failed to parse {key} flag: {} is not a boolean (true or false)",
                quoted(text)
            ),
        )),
    }
}

/// A client ID (`clientID`, `userAssignedIdentityID`): a GUID in practice; letters, digits and
/// `-` are all it may hold, since it is sent as a form and query parameter.
fn parse_client_id(key: &'static str, text: &str) -> Result<String, SpecError> {
    if (1..=64).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(text.to_owned())
    } else {
        Err(parameter(
            key,
            format!(
                "{key}: {} is not a client ID: expected a GUID such as \
                 00000000-0000-0000-0000-000000000000",
                quoted(text)
            ),
        ))
    }
}

/// The identity mode as Azure's provider picks it: at most one of `usePodIdentity`,
/// `useVMManagedIdentity` and `useAzureTokenProxy`; none is workload identity when `clientID`
/// is set, else a service principal from nodePublishSecretRef. An ID a mode does not use is not
/// checked.
fn parse_identity(parameters: Parameters<'_>) -> Result<IdentityMode, SpecError> {
    let get = |key| parameters.get(key);
    let flags = [
        params::USE_POD_IDENTITY,
        params::USE_VM_MANAGED_IDENTITY,
        params::USE_AZURE_TOKEN_PROXY,
    ];
    let mut enabled = Vec::new();
    for key in flags {
        if parse_go_bool(key, get(key))? {
            enabled.push(key);
        }
    }
    if let [first, second, ..] = enabled[..] {
        let which = if enabled.len() == 2 {
            format!("{first} and {second} are both true")
        } else {
            format!("{} are all true", enabled.join(", "))
        };
        return Err(parameter(
            second,
            format!("only one identity mode can be enabled at a time ({which})"),
        ));
    }
    let client_id = get(params::CLIENT_ID);
    match enabled.first().copied() {
        Some(params::USE_POD_IDENTITY) => Ok(IdentityMode::PodIdentity),
        Some(params::USE_VM_MANAGED_IDENTITY) => {
            let user_assigned = match get(params::USER_ASSIGNED_IDENTITY_ID) {
                "" => None,
                id => Some(parse_client_id(params::USER_ASSIGNED_IDENTITY_ID, id)?),
            };
            Ok(IdentityMode::VmManagedIdentity {
                user_assigned_client_id: user_assigned,
            })
        }
        Some(_) if client_id.is_empty() => Err(parameter(
            params::CLIENT_ID,
            "clientID is not provided: useAzureTokenProxy needs the managed identity's client ID",
        )),
        Some(_) => Ok(IdentityMode::TokenProxy {
            client_id: parse_client_id(params::CLIENT_ID, client_id)?,
        }),
        None if client_id.is_empty() => Ok(IdentityMode::ServicePrincipal),
        None => Ok(IdentityMode::WorkloadIdentity {
            client_id: parse_client_id(params::CLIENT_ID, client_id)?,
        }),
    }
}

/// The YAML options for `objects`: no source snippet in errors (a message names a line and a
/// column, and does not repeat the class).
fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    options
}

/// `objects` as Azure's provider reads it: a YAML mapping whose `array` lists strings.
#[derive(Deserialize)]
struct StringArray {
    #[serde(default)]
    array: Option<Vec<Option<String>>>,
}

/// The common mistake of writing `array:` items as mappings instead of strings.
#[derive(Deserialize)]
struct ArrayOfMappings {
    #[serde(rename = "array")]
    _array: Vec<BTreeMap<String, IgnoredAny>>,
}

/// Whether `text` is YAML of shape `T` (to say what a failed parse looked like).
fn parses_as<T: serde::de::DeserializeOwned>(text: &str) -> bool {
    serde_saphyr::from_str_with_options::<T>(text, yaml_options()).is_ok()
}

/// A YAML error's message, without the parser's advice to its own callers.
fn yaml_error(error: &serde_saphyr::Error) -> String {
    error
        .to_string()
        .replace(", set DuplicateKeyPolicy in Options if acceptable", "")
}

/// `objects`, parsed and each object validated.
fn parse_objects(text: &str) -> Result<Vec<ObjectSpec>, SpecError> {
    if text.is_empty() {
        return Err(parameter(params::OBJECTS, "objects is not set"));
    }
    let parsed: Option<StringArray> = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|error| {
            let cause = if parses_as::<Vec<IgnoredAny>>(text) {
                "objects is a bare YAML list; write it as a mapping whose `array:` lists one YAML \
                 string per object"
                    .to_owned()
            } else if parses_as::<ArrayOfMappings>(text) {
                "each item of `array:` must be a string holding the object's YAML (write `- |` \
                 and indent the object's fields under it)"
                    .to_owned()
            } else {
                yaml_error(&error)
            };
            parameter(
                params::OBJECTS,
                format!("failed to yaml unmarshal objects, error: {cause}"),
            )
        })?;
    let items = parsed.and_then(|parsed| parsed.array).unwrap_or_default();
    if items.is_empty() {
        return Err(parameter(
            params::OBJECTS,
            "objects array is empty: list at least one object under `array:`",
        ));
    }
    if items.len() > MAX_OBJECTS {
        return Err(parameter(
            params::OBJECTS,
            format!(
                "objects lists {} objects, more than the {MAX_OBJECTS} one class may mount",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_object(index, item.as_deref().unwrap_or("")))
        .collect()
}

/// One object's fields as written; everything else in its mapping is ignored.
#[derive(Default, Deserialize)]
struct RawObject {
    #[serde(rename = "objectName")]
    name: Option<String>,
    #[serde(rename = "objectType")]
    kind: Option<String>,
    #[serde(rename = "objectAlias")]
    alias: Option<String>,
    #[serde(rename = "objectVersion")]
    version: Option<String>,
    #[serde(rename = "objectVersionHistory")]
    version_history: Option<String>,
    #[serde(rename = "objectFormat")]
    format: Option<String>,
    #[serde(rename = "objectEncoding")]
    encoding: Option<String>,
    #[serde(rename = "filePermission")]
    mode: Option<String>,
    #[serde(rename = "keyvaultName")]
    vault: Option<String>,
    #[serde(rename = "jmesPath")]
    json_fields: Option<Vec<RawJsonField>>,
    #[serde(rename = "pfxPasswordSecretName")]
    pfx_password_secret: Option<String>,
}

/// One `jmesPath` entry as written (kube-kms's own field: unknown keys are refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJsonField {
    path: Option<String>,
    #[serde(rename = "objectAlias")]
    alias: Option<String>,
}

/// A field's value, trimmed as Azure's provider trims it; absent and null are empty.
fn trimmed(value: &Option<String>) -> &str {
    value.as_deref().map_or("", str::trim)
}

/// An object's alias, a `jmesPath` alias: no `..` anywhere (Azure's provider's own rule), then
/// the driver's path rules.
fn check_alias(field: &str, alias: &str) -> Result<(), String> {
    if alias.contains("..") {
        return Err(format!(
            "{field}: {}: file name must not contain '..'",
            quoted(alias)
        ));
    }
    files::check_path(alias).map_err(|error| format!("{field}: {error}"))
}

/// One item of `objects`, validated on its own.
fn parse_object(index: usize, text: &str) -> Result<ObjectSpec, SpecError> {
    let unnamed = |field, reason: String| SpecError::Object {
        index,
        name: None,
        field,
        reason,
    };
    let raw: Option<RawObject> = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|error| {
            unnamed(
                params::OBJECTS,
                format!(
                    "unmarshal failed for keyVaultObjects at index {index}, error: {}",
                    yaml_error(&error)
                ),
            )
        })?;
    let raw = raw.unwrap_or_default();

    let name = trimmed(&raw.name);
    if name.is_empty() {
        return Err(unnamed(
            fields::OBJECT_NAME,
            "objectName is not provided".to_owned(),
        ));
    }
    if !is_object_name(name) {
        return Err(unnamed(
            fields::OBJECT_NAME,
            format!(
                "objectName: {} is not a Key Vault object name: 1-127 of [0-9a-zA-Z-]",
                quoted(name)
            ),
        ));
    }
    let error = |field, reason: String| SpecError::Object {
        index,
        name: Some(name.to_owned()),
        field,
        reason,
    };

    let kind = match trimmed(&raw.kind) {
        "secret" => ObjectKind::Secret,
        "key" => ObjectKind::Key,
        "cert" => ObjectKind::Cert,
        other => {
            let what = if other.is_empty() {
                "objectType is not provided".to_owned()
            } else if ["secret", "key", "cert"].contains(&other.to_ascii_lowercase().as_str()) {
                format!("objectType {}: the type is case-sensitive", quoted(other))
            } else {
                format!("objectType {}", quoted(other))
            };
            return Err(error(
                fields::OBJECT_TYPE,
                format!("Invalid vaultObjectTypes. Should be secret, key, or cert ({what})"),
            ));
        }
    };

    let alias = match trimmed(&raw.alias) {
        "" => None,
        alias => {
            check_alias(fields::OBJECT_ALIAS, alias)
                .map_err(|reason| error(fields::OBJECT_ALIAS, reason))?;
            Some(alias.to_owned())
        }
    };

    let version = match trimmed(&raw.version) {
        "" | "latest" => None,
        version if version.len() <= 64 && version.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Some(version.to_owned())
        }
        version => {
            return Err(error(
                fields::OBJECT_VERSION,
                format!(
                    "objectVersion: {} is not a version: expected letters and digits (Key \
                     Vault's are 32 hexadecimal characters), or empty or \"latest\" for the \
                     newest",
                    quoted(version)
                ),
            ));
        }
    };

    let version_history = match trimmed(&raw.version_history) {
        "" => 0,
        text if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            match text.parse::<u32>() {
                Ok(count) if count <= MAX_VERSION_HISTORY => count,
                _ => {
                    return Err(error(
                        fields::OBJECT_VERSION_HISTORY,
                        format!(
                            "objectVersionHistory: {} is more than the {MAX_VERSION_HISTORY} \
                             versions one object may write",
                            quoted(text)
                        ),
                    ));
                }
            }
        }
        text => {
            return Err(error(
                fields::OBJECT_VERSION_HISTORY,
                format!(
                    "objectVersionHistory: {} is not a number of versions (0 or more)",
                    quoted(text)
                ),
            ));
        }
    };

    let format = match trimmed(&raw.format).to_ascii_lowercase().as_str() {
        "" | "pem" => ObjectFormat::Pem,
        "pfx" => ObjectFormat::Pfx,
        "tls" => ObjectFormat::Tls,
        _ => {
            return Err(error(
                fields::OBJECT_FORMAT,
                format!(
                    "invalid objectFormat: {}, should be PEM, PFX or TLS",
                    quoted(trimmed(&raw.format))
                ),
            ));
        }
    };
    if kind != ObjectKind::Secret {
        let only_secret = match format {
            ObjectFormat::Pem => None,
            ObjectFormat::Pfx => {
                Some("objectFormat: PFX format only supported for objectType: secret")
            }
            ObjectFormat::Tls => {
                Some("objectFormat: TLS format only supported for objectType: secret")
            }
        };
        if let Some(reason) = only_secret {
            return Err(error(fields::OBJECT_FORMAT, reason.to_owned()));
        }
    }
    if format == ObjectFormat::Tls && version_history > 1 {
        return Err(error(
            fields::OBJECT_FORMAT,
            "objectFormat tls cannot be combined with objectVersionHistory above 1".to_owned(),
        ));
    }

    let encoding_text = trimmed(&raw.encoding);
    let encoding = if encoding_text.is_empty() {
        ObjectEncoding::Utf8
    } else if kind != ObjectKind::Secret {
        return Err(error(
            fields::OBJECT_ENCODING,
            "objectEncoding only supported for objectType: secret".to_owned(),
        ));
    } else {
        match encoding_text.to_ascii_lowercase().as_str() {
            "utf-8" => ObjectEncoding::Utf8,
            "base64" => ObjectEncoding::Base64,
            "hex" => ObjectEncoding::Hex,
            _ => {
                return Err(error(
                    fields::OBJECT_ENCODING,
                    format!(
                        "invalid objectEncoding: {}, should be hex, base64 or utf-8",
                        quoted(encoding_text)
                    ),
                ));
            }
        }
    };

    let mode = match trimmed(&raw.mode) {
        "" => None,
        text => Some(
            files::parse_mode(text)
                .map_err(|bad| error(fields::FILE_PERMISSION, bad.to_string()))?,
        ),
    };

    let vault =
        match trimmed(&raw.vault) {
            "" => None,
            vault => Some(parse_vault_name(vault).map_err(|reason| {
                error(fields::KEYVAULT_NAME, format!("keyvaultName: {reason}"))
            })?),
        };

    let json_fields = match &raw.json_fields {
        None => Vec::new(),
        Some(entries) => parse_json_fields(entries, kind, format, version_history)
            .map_err(|reason| error(fields::JMES_PATH, reason))?,
    };

    let pfx_password_secret = match trimmed(&raw.pfx_password_secret) {
        "" => None,
        _ if format != ObjectFormat::Pfx => {
            return Err(error(
                fields::PFX_PASSWORD_SECRET_NAME,
                "pfxPasswordSecretName needs objectFormat: pfx".to_owned(),
            ));
        }
        secret if is_object_name(secret) => Some(secret.to_owned()),
        secret => {
            return Err(error(
                fields::PFX_PASSWORD_SECRET_NAME,
                format!(
                    "pfxPasswordSecretName: {} is not a Key Vault secret name: 1-127 of \
                     [0-9a-zA-Z-]",
                    quoted(secret)
                ),
            ));
        }
    };

    Ok(ObjectSpec {
        name: name.to_owned(),
        kind,
        alias,
        version,
        version_history,
        format,
        encoding,
        mode,
        vault,
        json_fields,
        pfx_password_secret,
    })
}

/// `jmesPath`: secrets read as JSON (so `objectFormat: pem`, one version), each entry a path
/// that compiles and an alias the driver accepts.
fn parse_json_fields(
    entries: &[RawJsonField],
    kind: ObjectKind,
    format: ObjectFormat,
    version_history: u32,
) -> Result<Vec<JsonField>, String> {
    if kind != ObjectKind::Secret {
        return Err("jmesPath is only supported for objectType: secret".to_owned());
    }
    if format != ObjectFormat::Pem {
        return Err(
            "jmesPath needs objectFormat pem: the fields are read from the secret's value as JSON"
                .to_owned(),
        );
    }
    if version_history > 1 {
        return Err("jmesPath cannot be combined with objectVersionHistory above 1".to_owned());
    }
    if entries.len() > MAX_JSON_FIELDS {
        return Err(format!(
            "jmesPath has {} entries, more than the {MAX_JSON_FIELDS} one object may have",
            entries.len()
        ));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let path = trimmed(&entry.path);
            if path.is_empty() {
                return Err(format!("jmesPath[{i}].path is not provided"));
            }
            jmes::check_expression(path)
                .map_err(|reason| format!("jmesPath[{i}].path {}: {reason}", quoted(path)))?;
            let alias = trimmed(&entry.alias);
            if alias.is_empty() {
                return Err(format!("jmesPath[{i}].objectAlias is not provided"));
            }
            check_alias(&format!("jmesPath[{i}].objectAlias"), alias)?;
            Ok(JsonField {
                path: path.to_owned(),
                alias: alias.to_owned(),
            })
        })
        .collect()
}

/// The files all objects write: each passes the driver's path rules, no two objects write the
/// same path, and no path is a directory another path would need to be a file.
fn check_outputs(objects: &[ObjectSpec]) -> Result<(), SpecError> {
    let describe = |index: usize| format!("object {index} ({:?})", objects[index].name);
    let conflict = |index: usize, field, reason| SpecError::Object {
        index,
        name: Some(objects[index].name.clone()),
        field,
        reason,
    };
    let total: usize = objects.iter().map(ObjectSpec::output_count).sum();
    if total > MAX_OUTPUT_FILES {
        return Err(parameter(
            params::OBJECTS,
            format!(
                "objects write {total} files, more than the {MAX_OUTPUT_FILES} one mount may \
                 write"
            ),
        ));
    }

    let mut owners: BTreeMap<String, (usize, &'static str)> = BTreeMap::new();
    for (index, object) in objects.iter().enumerate() {
        for (path, field) in object.outputs() {
            files::check_path(&path)
                .map_err(|bad| conflict(index, field, format!("{field}: {bad}")))?;
            if let Some(&(other, _)) = owners.get(&path) {
                let whose = if other == index {
                    "this object".to_owned()
                } else {
                    describe(other)
                };
                return Err(conflict(
                    index,
                    field,
                    format!("{field}: {} is also written by {whose}", quoted(&path)),
                ));
            }
            owners.insert(path, (index, field));
        }
    }

    for (path, &(index, field)) in &owners {
        let ancestors = path.match_indices('/').map(|(slash, _)| &path[..slash]);
        for ancestor in ancestors {
            if let Some(&(other, other_field)) = owners.get(ancestor) {
                // Reported on the later object, naming the earlier one.
                let error = if index >= other {
                    let whose = if index == other {
                        "this object".to_owned()
                    } else {
                        describe(other)
                    };
                    conflict(
                        index,
                        field,
                        format!(
                            "{field}: {} would be inside {}, a file {whose} writes",
                            quoted(path),
                            quoted(ancestor)
                        ),
                    )
                } else {
                    conflict(
                        other,
                        other_field,
                        format!(
                            "{other_field}: {} would be a directory holding {}, a file {} writes",
                            quoted(ancestor),
                            quoted(path),
                            describe(index)
                        ),
                    )
                };
                return Err(error);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "0e3a1c4d-5b6f-4a7b-8c9d-0e1f2a3b4c5d";

    /// `objects` as a class writes it: `array:` of block strings, one per object.
    fn objects(items: &[&str]) -> String {
        let mut yaml = String::from("array:\n");
        for item in items {
            yaml.push_str("  - |\n");
            for line in item.lines() {
                yaml.push_str("    ");
                yaml.push_str(line);
                yaml.push('\n');
            }
        }
        yaml
    }

    fn class(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut parameters: BTreeMap<String, String> = [
            ("keyvaultName", "kv-prod"),
            ("tenantID", TENANT),
            ("clientID", CLIENT),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        parameters.insert(
            "objects".to_owned(),
            objects(&["objectName: db-password\nobjectType: secret"]),
        );
        for (key, value) in pairs {
            parameters.insert((*key).to_owned(), (*value).to_owned());
        }
        parameters
    }

    fn without(key: &str) -> BTreeMap<String, String> {
        let mut parameters = class(&[]);
        parameters.remove(key);
        parameters
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<AzureMountSpec, SpecError> {
        AzureMountSpec::from_parameters(&class(pairs))
    }

    fn parse_objects_of(items: &[&str]) -> Result<AzureMountSpec, SpecError> {
        parse(&[("objects", &objects(items))])
    }

    fn error(result: Result<AzureMountSpec, SpecError>) -> String {
        match result {
            Ok(spec) => panic!("parsed: {spec:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn object(item: &str) -> ObjectSpec {
        let mut spec = parse_objects_of(&[item]).unwrap();
        spec.objects.remove(0)
    }

    #[test]
    fn a_class_like_azures_documentation_parses() {
        let spec = parse(&[
            ("usePodIdentity", "false"),
            ("useVMManagedIdentity", "false"),
            ("cloudName", ""),
            (
                "objects",
                "array:\n  - |\n    objectName: secret1\n    objectType: secret\n    \
                 objectVersion: \"\"\n  - |\n    objectName: key1\n    objectType: key\n    \
                 objectVersion: \"\"\n",
            ),
        ])
        .unwrap();
        assert_eq!(spec.vault.as_str(), "kv-prod");
        assert_eq!(spec.tenant_id, TENANT);
        assert_eq!(spec.cloud, CloudChoice::ProviderDefault);
        assert_eq!(
            spec.identity,
            IdentityMode::WorkloadIdentity {
                client_id: CLIENT.to_owned()
            }
        );
        let names: Vec<_> = spec
            .objects
            .iter()
            .map(|o| (o.name.as_str(), o.kind))
            .collect();
        assert_eq!(
            names,
            [("secret1", ObjectKind::Secret), ("key1", ObjectKind::Key)]
        );
    }

    #[test]
    fn an_object_with_no_options_gets_azures_defaults() {
        assert_eq!(
            object("objectName: db-password\nobjectType: secret"),
            ObjectSpec {
                name: "db-password".to_owned(),
                kind: ObjectKind::Secret,
                alias: None,
                version: None,
                version_history: 0,
                format: ObjectFormat::Pem,
                encoding: ObjectEncoding::Utf8,
                mode: None,
                vault: None,
                json_fields: Vec::new(),
                pfx_password_secret: None,
            }
        );
    }

    #[test]
    fn every_field_is_read() {
        let parsed = object(
            "objectName: web-cert\nobjectType: secret\nobjectAlias: certs/web.pfx\n\
             objectVersion: 0123456789abcdef0123456789abcdef\nobjectVersionHistory: 1\n\
             objectFormat: PFX\nobjectEncoding: Base64\nfilePermission: \"0440\"\n\
             keyvaultName: Other-Vault\npfxPasswordSecretName: web-cert-password",
        );
        assert_eq!(
            parsed,
            ObjectSpec {
                name: "web-cert".to_owned(),
                kind: ObjectKind::Secret,
                alias: Some("certs/web.pfx".to_owned()),
                version: Some("0123456789abcdef0123456789abcdef".to_owned()),
                version_history: 1,
                format: ObjectFormat::Pfx,
                encoding: ObjectEncoding::Base64,
                mode: Some(0o440),
                vault: Some(VaultName("other-vault".to_owned())),
                json_fields: Vec::new(),
                pfx_password_secret: Some("web-cert-password".to_owned()),
            }
        );
        let json = object(
            "objectName: db\nobjectType: secret\njmesPath:\n  - path: username\n    \
             objectAlias: db-user\n  - path: \"creds[0].password\"\n    objectAlias: db-pass",
        );
        assert_eq!(
            json.json_fields,
            [
                JsonField {
                    path: "username".to_owned(),
                    alias: "db-user".to_owned()
                },
                JsonField {
                    path: "creds[0].password".to_owned(),
                    alias: "db-pass".to_owned()
                },
            ]
        );
    }

    #[test]
    fn each_known_field_is_checked() {
        // A bad value in each field of `fields::ALL` is refused naming that field: the list and
        // the parser agree.
        let bad = |field: &str| match field {
            fields::OBJECT_NAME => "objectName: a_b\nobjectType: secret".to_owned(),
            fields::OBJECT_TYPE => "objectName: n\nobjectType: blob".to_owned(),
            fields::JMES_PATH => {
                "objectName: n\nobjectType: secret\njmesPath:\n  - path: \"a[\"\n    objectAlias: x"
                    .to_owned()
            }
            fields::PFX_PASSWORD_SECRET_NAME => {
                "objectName: n\nobjectType: secret\nobjectFormat: pfx\npfxPasswordSecretName: a.b"
                    .to_owned()
            }
            other => format!("objectName: n\nobjectType: secret\n{other}: \"../bad value\""),
        };
        for field in fields::ALL {
            match parse_objects_of(&[&bad(field)]) {
                Err(SpecError::Object { field: named, .. }) => assert_eq!(named, *field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_value_is_trimmed() {
        let spec = parse(&[
            ("keyvaultName", "  KV-Prod \n"),
            ("tenantID", &format!(" {TENANT}\t")),
            ("clientID", ""),
            ("usePodIdentity", " true "),
            (
                "objects",
                &objects(&[
                    "objectName: \" db \"\nobjectType: \" secret \"\nobjectAlias: \" a/b \"",
                ]),
            ),
        ])
        .unwrap();
        assert_eq!(spec.vault.as_str(), "kv-prod");
        assert_eq!(spec.tenant_id, TENANT);
        assert_eq!(spec.identity, IdentityMode::PodIdentity);
        assert_eq!(spec.objects[0].name, "db");
        assert_eq!(spec.objects[0].alias.as_deref(), Some("a/b"));
    }

    #[test]
    fn keyvault_name_is_required_and_checked_as_azure_checks_it() {
        assert_eq!(
            error(AzureMountSpec::from_parameters(&without("keyvaultName"))),
            "keyvaultName is not provided"
        );
        assert_eq!(
            error(parse(&[("keyvaultName", "  ")])),
            "keyvaultName is not provided"
        );
        for bad in [
            "ab",
            "abcdefghijklmnopqrstuvwxy",
            "my_vault",
            "kv.prod",
            "kv prod",
            "kv/x",
        ] {
            assert_eq!(
                error(parse(&[("keyvaultName", bad)])),
                format!(
                    "keyvaultName: Invalid vault name: {bad:?}, must match [-a-zA-Z0-9]{{3,24}}"
                )
            );
        }
        for good in ["abc", "abcdefghijklmnopqrstuvwx", "-a-", "KV1"] {
            assert!(parse(&[("keyvaultName", good)]).is_ok(), "{good}");
        }
    }

    #[test]
    fn tenant_id_wins_over_the_deprecated_tenant_id() {
        let spec = parse(&[("tenantId", "deprecated.example.com")]).unwrap();
        assert_eq!(spec.tenant_id, TENANT);
    }

    #[test]
    fn the_deprecated_tenant_id_is_read_when_tenant_id_is_empty() {
        let spec = parse(&[("tenantID", " "), ("tenantId", "contoso.onmicrosoft.com")]).unwrap();
        assert_eq!(spec.tenant_id, "contoso.onmicrosoft.com");
        let spec = parse(&[("tenantID", ""), ("tenantId", "adfs")]).unwrap();
        assert_eq!(spec.tenant_id, "adfs");
    }

    #[test]
    fn a_tenant_is_required_and_may_not_bend_the_authority_url() {
        assert_eq!(
            error(AzureMountSpec::from_parameters(&without("tenantID"))),
            "tenantId is not provided (set tenantID)"
        );
        for bad in ["a/b", "..", ".x", "x..y", "t?x=1", "t#", "t%2F", "t x"] {
            assert!(
                error(parse(&[("tenantID", bad)])).starts_with("tenantID: "),
                "{bad}"
            );
        }
        assert!(
            error(parse(&[("tenantID", ""), ("tenantId", "a/b")])).starts_with("tenantId: "),
            "the message names the key the value came from"
        );
    }

    #[test]
    fn cloud_names_are_azures_in_any_case() {
        let table: &[(&str, CloudChoice)] = &[
            ("", CloudChoice::ProviderDefault),
            ("AzurePublicCloud", CloudChoice::Named(CloudName::Public)),
            ("azurepubliccloud", CloudChoice::Named(CloudName::Public)),
            ("AzureCloud", CloudChoice::Named(CloudName::Public)),
            (
                "AZUREUSGOVERNMENTCLOUD",
                CloudChoice::Named(CloudName::UsGovernment),
            ),
            (
                "AzureUSGovernment",
                CloudChoice::Named(CloudName::UsGovernment),
            ),
            ("AzureChinaCloud", CloudChoice::Named(CloudName::China)),
        ];
        for (name, cloud) in table {
            assert_eq!(
                &parse(&[("cloudName", name)]).unwrap().cloud,
                cloud,
                "{name}"
            );
        }
    }

    #[test]
    fn azure_stack_reads_its_cloud_env_file() {
        let spec = parse(&[
            ("cloudName", "AzureStackCloud"),
            ("cloudEnvFileName", " /etc/kubernetes/azurestackcloud.json "),
        ])
        .unwrap();
        assert_eq!(
            spec.cloud,
            CloudChoice::EnvironmentFile("/etc/kubernetes/azurestackcloud.json".to_owned())
        );
        assert_eq!(
            error(parse(&[("cloudName", "azurestackcloud")])),
            "cloudEnvFileName is not provided: cloudName AzureStackCloud reads its endpoints \
             from that file"
        );
        // With another cloud the file is ignored, as Azure's provider ignores it.
        let spec = parse(&[
            ("cloudName", "AzureChinaCloud"),
            ("cloudEnvFileName", "x.json"),
        ]);
        assert_eq!(spec.unwrap().cloud, CloudChoice::Named(CloudName::China));
    }

    #[test]
    fn retired_and_unknown_clouds_are_refused() {
        assert!(error(parse(&[("cloudName", "AzureGermanCloud")])).contains("October 2021"));
        assert_eq!(
            error(parse(&[("cloudName", "public")])),
            "cloudName \"public\" is not valid: expected AzurePublicCloud, \
             AzureUSGovernmentCloud, AzureChinaCloud or AzureStackCloud (any case)"
        );
    }

    #[test]
    fn the_identity_mode_follows_azures_precedence() {
        let vm = |id: Option<&str>| IdentityMode::VmManagedIdentity {
            user_assigned_client_id: id.map(str::to_owned),
        };
        let table: Vec<(Vec<(&str, &str)>, IdentityMode)> = vec![
            (
                vec![],
                IdentityMode::WorkloadIdentity {
                    client_id: CLIENT.to_owned(),
                },
            ),
            (vec![("clientID", "")], IdentityMode::ServicePrincipal),
            (vec![("usePodIdentity", "true")], IdentityMode::PodIdentity),
            (vec![("useVMManagedIdentity", "True")], vm(None)),
            (
                vec![
                    ("useVMManagedIdentity", "1"),
                    ("userAssignedIdentityID", CLIENT),
                ],
                vm(Some(CLIENT)),
            ),
            (
                vec![("useAzureTokenProxy", "t")],
                IdentityMode::TokenProxy {
                    client_id: CLIENT.to_owned(),
                },
            ),
            (
                vec![
                    ("usePodIdentity", "false"),
                    ("useVMManagedIdentity", "F"),
                    ("useAzureTokenProxy", "0"),
                    ("clientID", ""),
                ],
                IdentityMode::ServicePrincipal,
            ),
            // An ID the mode does not use is not checked.
            (
                vec![("usePodIdentity", "true"), ("clientID", "not/a/guid")],
                IdentityMode::PodIdentity,
            ),
        ];
        for (pairs, mode) in table {
            assert_eq!(parse(&pairs).unwrap().identity, mode, "{pairs:?}");
        }
    }

    #[test]
    fn identity_flags_parse_as_go_parse_bool() {
        for text in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool("k", text), Ok(true), "{text}");
        }
        for text in ["", "0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool("k", text), Ok(false), "{text}");
        }
        for text in ["yes", "no", "on", "tRUE", "2", "y"] {
            assert!(parse_go_bool("k", text).is_err(), "{text}");
        }
        assert_eq!(
            error(parse(&[("useVMManagedIdentity", "yes")])),
            "failed to parse useVMManagedIdentity flag: \"yes\" is not a boolean (true or false)"
        );
    }

    #[test]
    fn only_one_identity_mode_can_be_enabled() {
        assert_eq!(
            error(parse(&[
                ("usePodIdentity", "true"),
                ("useVMManagedIdentity", "true")
            ])),
            "only one identity mode can be enabled at a time (usePodIdentity and \
             useVMManagedIdentity are both true)"
        );
        assert_eq!(
            error(parse(&[
                ("usePodIdentity", "1"),
                ("useVMManagedIdentity", "1"),
                ("useAzureTokenProxy", "1")
            ])),
            "only one identity mode can be enabled at a time (usePodIdentity, \
             useVMManagedIdentity, useAzureTokenProxy are all true)"
        );
    }

    #[test]
    fn the_token_proxy_needs_a_client_id() {
        assert_eq!(
            error(parse(&[("useAzureTokenProxy", "true"), ("clientID", " ")])),
            "clientID is not provided: useAzureTokenProxy needs the managed identity's client ID"
        );
    }

    #[test]
    fn client_ids_in_use_are_checked() {
        assert!(
            error(parse(&[("clientID", "a b")]))
                .starts_with("clientID: \"a b\" is not a client ID")
        );
        assert!(
            error(parse(&[
                ("useVMManagedIdentity", "true"),
                ("userAssignedIdentityID", "x&y=1")
            ]))
            .starts_with("userAssignedIdentityID: ")
        );
    }

    #[test]
    fn objects_must_be_set_and_hold_at_least_one_object() {
        assert_eq!(
            error(AzureMountSpec::from_parameters(&without("objects"))),
            "objects is not set"
        );
        assert_eq!(error(parse(&[("objects", " \n")])), "objects is not set");
        for empty in ["array: []", "array:", "other: 1", "# nothing", "---"] {
            assert_eq!(
                error(parse(&[("objects", empty)])),
                "objects array is empty: list at least one object under `array:`",
                "{empty:?}"
            );
        }
    }

    #[test]
    fn a_bare_yaml_list_is_refused_like_azure() {
        let bare = "- |\n  objectName: a\n  objectType: secret\n";
        assert_eq!(
            error(parse(&[("objects", bare)])),
            "failed to yaml unmarshal objects, error: objects is a bare YAML list; write it as a \
             mapping whose `array:` lists one YAML string per object"
        );
    }

    #[test]
    fn array_items_written_as_mappings_get_a_hint() {
        assert_eq!(
            error(parse(&[(
                "objects",
                "array:\n  - objectName: a\n    objectType: secret\n"
            )])),
            "failed to yaml unmarshal objects, error: each item of `array:` must be a string \
             holding the object's YAML (write `- |` and indent the object's fields under it)"
        );
    }

    #[test]
    fn a_repeated_object_field_is_refused_as_go_yaml_refuses_it() {
        let message = error(parse_objects_of(&["objectName: a\nobjectName: b"]));
        assert_eq!(
            message,
            "object 0: unmarshal failed for keyVaultObjects at index 0, error: duplicate mapping \
             key: objectName at line 2, column 1"
        );
    }

    #[test]
    fn objects_that_are_not_yaml_of_strings_are_refused() {
        for bad in [
            "array: [a, [b]]",
            "array:\n  - objectName: a\n    objectType: secret\n",
            "array: {a: b}",
            "just a string",
            "array: [\"unterminated",
            "array: x\narray: y",
        ] {
            let message = error(parse(&[("objects", bad)]));
            assert!(
                message.starts_with("failed to yaml unmarshal objects, error: "),
                "{bad:?}: {message}"
            );
        }
    }

    #[test]
    fn an_object_that_is_not_a_yaml_mapping_is_refused_with_its_index() {
        let message = error(parse_objects_of(&[
            "objectName: a\nobjectType: secret",
            "[1, 2]",
        ]));
        assert!(
            message
                .starts_with("object 1: unmarshal failed for keyVaultObjects at index 1, error: "),
            "{message}"
        );
        let message = error(parse_objects_of(&["objectName: [a]"]));
        assert!(
            message.starts_with("object 0: unmarshal failed"),
            "{message}"
        );
        let message = error(parse_objects_of(&["objectName: a\nobjectName: b"]));
        assert!(
            message.starts_with("object 0: unmarshal failed"),
            "{message}"
        );
    }

    #[test]
    fn an_empty_or_null_object_has_no_object_name() {
        for item in ["", "~", "null", "# comment only"] {
            assert_eq!(
                error(parse(&[(
                    "objects",
                    &format!("array:\n  - {item:?}\n  - |\n    x: 1\n")
                )])),
                "object 0: objectName is not provided",
                "{item:?}"
            );
        }
        assert_eq!(
            error(parse(&[("objects", "array:\n  -\n")])),
            "object 0: objectName is not provided"
        );
    }

    #[test]
    fn unknown_object_fields_are_ignored_like_azure() {
        let parsed = object(
            "objectName: a\nobjectType: secret\nobjectNotAfter: 2026-01-01\nobjectname: typo\n\
             nested:\n  list: [1, {x: y}]",
        );
        assert_eq!(parsed.name, "a");
    }

    #[test]
    fn a_file_permission_written_without_quotes_is_read_as_octal_text() {
        assert_eq!(
            object("objectName: a\nobjectType: secret\nfilePermission: 0755").mode,
            Some(0o755)
        );
        assert_eq!(
            object("objectName: a\nobjectType: secret\nfilePermission: 644").mode,
            Some(0o644)
        );
        assert_eq!(
            object("objectName: a\nobjectType: secret\nfilePermission: \"\"").mode,
            None
        );
    }

    #[test]
    fn version_history_is_a_number_up_to_the_limit() {
        let history = |text: &str| {
            parse_objects_of(&[&format!(
                "objectName: a\nobjectType: secret\nobjectVersionHistory: {text}"
            )])
            .map(|mut spec| spec.objects.remove(0).version_history)
        };
        assert_eq!(history("5").unwrap(), 5);
        assert_eq!(history("\"5\"").unwrap(), 5);
        assert_eq!(history("0").unwrap(), 0);
        assert_eq!(history("100").unwrap(), 100);
        assert_eq!(
            error(history("101").map(|_| unreachable!())),
            "object 0 (\"a\"): objectVersionHistory: \"101\" is more than the 100 versions one \
             object may write"
        );
        for bad in ["-1", "1.5", "many", "0x10", "99999999999999999999"] {
            assert!(
                matches!(
                    history(bad),
                    Err(SpecError::Object {
                        field: "objectVersionHistory",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn object_versions_are_a_version_id_or_the_newest() {
        let version = |text: &str| {
            parse_objects_of(&[&format!(
                "objectName: a\nobjectType: secret\nobjectVersion: {text}"
            )])
            .map(|mut spec| spec.objects.remove(0).version)
        };
        assert_eq!(version("\"\"").unwrap(), None);
        assert_eq!(version("latest").unwrap(), None);
        assert_eq!(
            version("4a0fd3b1c2d94e8f9a1b2c3d4e5f6a7b")
                .unwrap()
                .as_deref(),
            Some("4a0fd3b1c2d94e8f9a1b2c3d4e5f6a7b")
        );
        for bad in ["a/b", "../x", "v?api-version=1", "v 1", &"a".repeat(65)] {
            assert!(
                matches!(
                    version(bad),
                    Err(SpecError::Object {
                        field: "objectVersion",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn object_errors_read_like_azures() {
        let table: &[(&str, &str)] = &[
            ("objectType: secret", "object 0: objectName is not provided"),
            (
                "objectName: db password\nobjectType: secret",
                "object 0: objectName: \"db password\" is not a Key Vault object name: 1-127 of \
                 [0-9a-zA-Z-]",
            ),
            (
                "objectName: db-password",
                "object 0 (\"db-password\"): Invalid vaultObjectTypes. Should be secret, key, or \
                 cert (objectType is not provided)",
            ),
            (
                "objectName: db-password\nobjectType: Secret",
                "object 0 (\"db-password\"): Invalid vaultObjectTypes. Should be secret, key, or \
                 cert (objectType \"Secret\": the type is case-sensitive)",
            ),
            (
                "objectName: db-password\nobjectType: certificate",
                "object 0 (\"db-password\"): Invalid vaultObjectTypes. Should be secret, key, or \
                 cert (objectType \"certificate\")",
            ),
            (
                "objectName: db-password\nobjectType: secret\nobjectEncoding: rot13",
                "object 0 (\"db-password\"): invalid objectEncoding: \"rot13\", should be hex, \
                 base64 or utf-8",
            ),
            (
                "objectName: k\nobjectType: key\nobjectEncoding: base64",
                "object 0 (\"k\"): objectEncoding only supported for objectType: secret",
            ),
            (
                "objectName: c\nobjectType: cert\nobjectFormat: der",
                "object 0 (\"c\"): invalid objectFormat: \"der\", should be PEM, PFX or TLS",
            ),
            (
                "objectName: c\nobjectType: cert\nobjectFormat: pfx",
                "object 0 (\"c\"): objectFormat: PFX format only supported for objectType: secret",
            ),
            (
                "objectName: c\nobjectType: cert\nobjectFormat: TLS",
                "object 0 (\"c\"): objectFormat: TLS format only supported for objectType: secret",
            ),
            (
                "objectName: c\nobjectType: secret\nobjectFormat: tls\nobjectVersionHistory: 2",
                "object 0 (\"c\"): objectFormat tls cannot be combined with \
                 objectVersionHistory above 1",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectAlias: ../etc/passwd",
                "object 0 (\"s\"): objectAlias: \"../etc/passwd\": file name must not contain '..'",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectAlias: a..b",
                "object 0 (\"s\"): objectAlias: \"a..b\": file name must not contain '..'",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectAlias: /etc/passwd",
                "object 0 (\"s\"): objectAlias: invalid file path \"/etc/passwd\": must be a \
                 relative path",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectAlias: a//b",
                "object 0 (\"s\"): objectAlias: invalid file path \"a//b\": must be in clean \
                 form: no empty or '.' elements and no trailing '/'",
            ),
            (
                "objectName: s\nobjectType: secret\nfilePermission: \"0999\"",
                "object 0 (\"s\"): filePermission \"0999\" is not an octal file mode of at most \
                 0777, e.g. \"0644\"",
            ),
            (
                "objectName: s\nobjectType: secret\nkeyvaultName: a_b",
                "object 0 (\"s\"): keyvaultName: Invalid vault name: \"a_b\", must match \
                 [-a-zA-Z0-9]{3,24}",
            ),
            (
                "objectName: s\nobjectType: secret\npfxPasswordSecretName: s-password",
                "object 0 (\"s\"): pfxPasswordSecretName needs objectFormat: pfx",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectFormat: pfx\npfxPasswordSecretName: \
                 a/b",
                "object 0 (\"s\"): pfxPasswordSecretName: \"a/b\" is not a Key Vault secret \
                 name: 1-127 of [0-9a-zA-Z-]",
            ),
        ];
        for (item, expected) in table {
            assert_eq!(&error(parse_objects_of(&[item])), expected, "{item:?}");
        }
    }

    #[test]
    fn object_errors_name_the_objects_position() {
        let message = error(parse_objects_of(&[
            "objectName: a\nobjectType: secret",
            "objectName: b\nobjectType: secret",
            "objectName: db-password\nobjectType: secret\nobjectEncoding: rot13",
        ]));
        assert!(
            message.starts_with("object 2 (\"db-password\"): "),
            "{message}"
        );
    }

    #[test]
    fn format_and_encoding_are_case_insensitive() {
        let parsed =
            object("objectName: s\nobjectType: secret\nobjectFormat: Pem\nobjectEncoding: HEX");
        assert_eq!(
            (parsed.format, parsed.encoding),
            (ObjectFormat::Pem, ObjectEncoding::Hex)
        );
        let parsed = object("objectName: s\nobjectType: secret\nobjectEncoding: UTF-8");
        assert_eq!(parsed.encoding, ObjectEncoding::Utf8);
        let parsed = object("objectName: s\nobjectType: secret\nobjectFormat: tls");
        assert_eq!(parsed.format, ObjectFormat::Tls);
    }

    #[test]
    fn jmes_path_entries_are_checked() {
        let jmes = |extra: &str, entries: &str| {
            error(parse_objects_of(&[&format!(
                "objectName: db\nobjectType: secret\n{extra}jmesPath:\n{entries}"
            )]))
        };
        let one = "  - path: user\n    objectAlias: user\n";
        assert_eq!(
            error(parse_objects_of(&[&format!(
                "objectName: k\nobjectType: key\njmesPath:\n{one}"
            )])),
            "object 0 (\"k\"): jmesPath is only supported for objectType: secret"
        );
        assert_eq!(
            jmes("objectFormat: pfx\n", one),
            "object 0 (\"db\"): jmesPath needs objectFormat pem: the fields are read from the \
             secret's value as JSON"
        );
        assert_eq!(
            jmes("objectVersionHistory: 3\n", one),
            "object 0 (\"db\"): jmesPath cannot be combined with objectVersionHistory above 1"
        );
        assert_eq!(
            jmes("", "  - objectAlias: user\n"),
            "object 0 (\"db\"): jmesPath[0].path is not provided"
        );
        assert_eq!(
            jmes("", "  - path: user\n"),
            "object 0 (\"db\"): jmesPath[0].objectAlias is not provided"
        );
        assert!(
            jmes("", &format!("{one}  - path: \"a[\"\n    objectAlias: b\n"))
                .starts_with("object 0 (\"db\"): jmesPath[1].path \"a[\": does not compile: "),
        );
        assert_eq!(
            jmes("", "  - path: user\n    objectAlias: ../user\n"),
            "object 0 (\"db\"): jmesPath[0].objectAlias: \"../user\": file name must not \
             contain '..'"
        );
        let message = jmes("", "  - path: user\n    objectAlias: u\n    alias: x\n");
        assert!(
            message.starts_with("object 0: unmarshal failed"),
            "{message}"
        );
        let deep = format!(
            "  - path: \"{}a{}\"\n    objectAlias: u\n",
            "(".repeat(33),
            ")".repeat(33)
        );
        assert!(jmes("", &deep).contains("has more than 32 brackets"));
        let long = format!("  - path: \"{}\"\n    objectAlias: u\n", "a".repeat(1025));
        assert!(jmes("", &long).contains("is longer than the 1024 bytes"));
    }

    #[test]
    fn the_deepest_jmes_path_allowed_compiles_on_a_small_stack() {
        // Tokio's worker threads have 2 MiB; leave room and check at 256 KiB, unoptimized.
        let worst = [
            format!("{}a{}", "(".repeat(32), ")".repeat(32)),
            format!("{}a", "!".repeat(32)),
            "a[*].".repeat(32) + "a",
            format!("{}a{}", "[".repeat(32), "]".repeat(32)),
            format!("{}a{}", "{b:".repeat(32), "}".repeat(32)),
            format!("a{}", "[?b".repeat(32)),
        ];
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                for path in worst {
                    let _ = jmes::check_expression(&path);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn duplicate_aliases_name_both_objects() {
        assert_eq!(
            error(parse_objects_of(&[
                "objectName: a\nobjectType: secret\nobjectAlias: shared",
                "objectName: b\nobjectType: secret",
                "objectName: c\nobjectType: secret\nobjectAlias: shared",
            ])),
            "object 2 (\"c\"): objectAlias: \"shared\" is also written by object 0 (\"a\")"
        );
        // An alias equal to another object's name is the same file.
        assert_eq!(
            error(parse_objects_of(&[
                "objectName: a\nobjectType: secret",
                "objectName: b\nobjectType: secret\nobjectAlias: a",
            ])),
            "object 1 (\"b\"): objectAlias: \"a\" is also written by object 0 (\"a\")"
        );
        // The same object twice (two types of one name) writes one file twice.
        assert_eq!(
            error(parse_objects_of(&[
                "objectName: web\nobjectType: cert",
                "objectName: web\nobjectType: key",
            ])),
            "object 1 (\"web\"): objectName: \"web\" is also written by object 0 (\"web\")"
        );
    }

    #[test]
    fn an_alias_inside_another_objects_file_names_both() {
        assert_eq!(
            error(parse_objects_of(&[
                "objectName: a\nobjectType: secret",
                "objectName: b\nobjectType: secret\nobjectAlias: a/b",
            ])),
            "object 1 (\"b\"): objectAlias: \"a/b\" would be inside \"a\", a file object 0 \
             (\"a\") writes"
        );
        assert_eq!(
            error(parse_objects_of(&[
                "objectName: b\nobjectType: secret\nobjectAlias: a/b/c",
                "objectName: a\nobjectType: secret",
            ])),
            "object 1 (\"a\"): objectName: \"a\" would be a directory holding \"a/b/c\", a file \
             object 0 (\"b\") writes"
        );
    }

    #[test]
    fn version_history_tls_and_json_files_take_part_in_the_checks() {
        let history = object("objectName: s\nobjectType: secret\nobjectVersionHistory: 3");
        assert_eq!(history.output_paths(), ["s/0", "s/1", "s/2"]);
        let tls = object(
            "objectName: web\nobjectType: secret\nobjectFormat: tls\nobjectAlias: certs/web",
        );
        assert_eq!(
            tls.output_paths(),
            ["certs/web/tls.crt", "certs/web/tls.key", "certs/web/ca.crt"]
        );
        let json = object(
            "objectName: db\nobjectType: secret\njmesPath:\n  - path: user\n    objectAlias: db-user",
        );
        assert_eq!(json.output_paths(), ["db", "db-user"]);

        assert_eq!(
            error(parse_objects_of(&[
                "objectName: s\nobjectType: secret\nobjectVersionHistory: 2",
                "objectName: t\nobjectType: secret\nobjectAlias: s/1",
            ])),
            "object 1 (\"t\"): objectAlias: \"s/1\" is also written by object 0 (\"s\")"
        );
        assert_eq!(
            error(parse_objects_of(&[
                "objectName: web\nobjectType: secret\nobjectFormat: tls",
                "objectName: k\nobjectType: secret\nobjectAlias: web/tls.key",
            ])),
            "object 1 (\"k\"): objectAlias: \"web/tls.key\" is also written by object 0 (\"web\")"
        );
        assert_eq!(
            error(parse_objects_of(&[
                "objectName: db\nobjectType: secret\njmesPath:\n  - path: user\n    objectAlias: db",
            ])),
            "object 0 (\"db\"): jmesPath: \"db\" is also written by this object"
        );
        assert_eq!(
            error(parse_objects_of(&[
                "objectName: db\nobjectType: secret\njmesPath:\n  - path: user\n    objectAlias: \
                 db/user",
            ])),
            "object 0 (\"db\"): jmesPath: \"db/user\" would be inside \"db\", a file this \
             object writes"
        );
    }

    #[test]
    fn a_history_path_past_the_drivers_limits_is_refused() {
        let alias = vec!["d".repeat(255); 16].join("/");
        assert_eq!(alias.len(), 4095);
        let message = error(parse_objects_of(&[&format!(
            "objectName: s\nobjectType: secret\nobjectAlias: {alias}\nobjectVersionHistory: 2"
        )]));
        assert!(
            message.ends_with("must be at most 4096 bytes long"),
            "{message}"
        );
    }

    #[test]
    fn the_object_count_and_file_count_are_bounded() {
        let item = "objectName: s\nobjectType: secret";
        let many = vec![item; MAX_OBJECTS + 1];
        assert_eq!(
            error(parse_objects_of(&many)),
            "objects lists 1001 objects, more than the 1000 one class may mount"
        );
        let items: Vec<String> = (0..101)
            .map(|i| format!("objectName: s{i}\nobjectType: secret\nobjectVersionHistory: 100"))
            .collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        assert_eq!(
            error(parse_objects_of(&items)),
            "objects write 10100 files, more than the 10000 one mount may write"
        );
    }

    #[test]
    fn errors_do_not_repeat_the_class() {
        let secretish = "line-one-of-a-pasted-blob";
        let message = error(parse(&[(
            "objects",
            &format!("array:\n  - |\n    objectName: a\n  - x\nunterminated: \"{secretish}\n"),
        )]));
        assert!(!message.contains(secretish), "{message}");
        let long = "x".repeat(5000);
        let message = error(parse_objects_of(&[&format!(
            "objectName: a\nobjectType: {long}"
        )]));
        assert!(message.len() < 300, "{message}");
    }
}
