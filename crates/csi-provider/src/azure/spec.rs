//! An Azure Key Vault mount, validated: the SecretProviderClass parameters and object fields
//! Azure's provider accepts (same names, defaults and precedence), plus kube-kms's additions
//! (several vaults in one class, `jmesPath`, `tls` output, a PFX password).
//!
//! Parameters and objects are attacker-influenced input: nothing here makes a network call or
//! reads a file, and every bad value is a [`SpecError`] naming the object and the field.

use std::fmt;

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
    /// first, as `<file>/0`, `<file>/1`, …
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
    /// secret, each to its own file, besides the secret's own file.
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

/// A SecretProviderClass parameter or object field is wrong. `Display` names the object (by
/// index and name when it has one) and the field, says what was expected, and never echoes a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// A class parameter (e.g. `keyvaultName`) is missing or invalid.
    Parameter {
        /// The parameter's key.
        key: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// An object's field is invalid.
    Object {
        /// The object's position in `objects`, from 0.
        index: usize,
        /// Its `objectName`, when it has one.
        name: Option<String>,
        /// The field (e.g. `objectEncoding`).
        field: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
}
