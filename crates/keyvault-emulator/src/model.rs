//! The vocabulary of the service: vault kinds, object kinds (keys, secrets, certificates), key
//! types and curves, key operations, per-identity permissions and the REST operations the
//! emulator counts and can fault.
//!
//! Every name here is spelled as on the wire; parsing is case-insensitive where the service is.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which service the emulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VaultKind {
    /// Azure Key Vault: RSA and RSA-HSM keys; resource `https://vault.azure.net`.
    #[default]
    KeyVault,
    /// Azure Managed HSM: RSA-HSM and oct-HSM keys; resource `https://managedhsm.azure.net`.
    ManagedHsm,
}

impl VaultKind {
    /// The token resource (audience) of the public cloud.
    pub fn default_resource(self) -> &'static str {
        match self {
            Self::KeyVault => "https://vault.azure.net",
            Self::ManagedHsm => "https://managedhsm.azure.net",
        }
    }

    /// The word the service uses in messages ("key vault" / "managed HSM").
    pub fn noun(self) -> &'static str {
        match self {
            Self::KeyVault => "key vault",
            Self::ManagedHsm => "managed HSM",
        }
    }
}

/// A key type (`kty`) the emulator can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    /// Software-protected RSA (Key Vault only).
    #[serde(rename = "RSA")]
    Rsa,
    /// HSM-protected RSA.
    #[serde(rename = "RSA-HSM")]
    RsaHsm,
    /// HSM-protected AES (Managed HSM only).
    #[serde(rename = "oct-HSM")]
    OctHsm,
    /// Software-protected elliptic curve (Key Vault only).
    #[serde(rename = "EC")]
    Ec,
    /// HSM-protected elliptic curve.
    #[serde(rename = "EC-HSM")]
    EcHsm,
}

impl KeyType {
    /// Parses a `kty` as the service spells it.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "RSA" => Some(Self::Rsa),
            "RSA-HSM" => Some(Self::RsaHsm),
            "oct-HSM" => Some(Self::OctHsm),
            "EC" => Some(Self::Ec),
            "EC-HSM" => Some(Self::EcHsm),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::RsaHsm => "RSA-HSM",
            Self::OctHsm => "oct-HSM",
            Self::Ec => "EC",
            Self::EcHsm => "EC-HSM",
        }
    }

    /// Whether the key lives in an HSM (selects the throttling budget).
    pub fn is_hsm(self) -> bool {
        !matches!(self, Self::Rsa | Self::Ec)
    }

    /// Whether the key is RSA.
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa | Self::RsaHsm)
    }

    /// Whether the key is an elliptic curve key.
    pub fn is_ec(self) -> bool {
        matches!(self, Self::Ec | Self::EcHsm)
    }

    /// The HSM-protected form of the type (what `"Hsm": true` on import asks for).
    pub fn hsm(self) -> Self {
        match self {
            Self::Rsa => Self::RsaHsm,
            Self::Ec => Self::EcHsm,
            other => other,
        }
    }

    /// Whether a vault of `kind` holds keys of this type.
    pub fn allowed_in(self, kind: VaultKind) -> bool {
        match kind {
            VaultKind::KeyVault => self.is_rsa() || self.is_ec(),
            VaultKind::ManagedHsm => matches!(self, Self::RsaHsm | Self::OctHsm | Self::EcHsm),
        }
    }

    /// The default key size in bits (for EC: of the default curve, P-256).
    pub fn default_size(self) -> u32 {
        match self {
            Self::Rsa | Self::RsaHsm => 2048,
            Self::OctHsm | Self::Ec | Self::EcHsm => 256,
        }
    }

    /// The key sizes the service accepts for this type (for EC: the curves' sizes).
    pub fn sizes(self) -> &'static [u32] {
        match self {
            Self::Rsa | Self::RsaHsm => &[2048, 3072, 4096],
            Self::OctHsm => &[128, 192, 256],
            Self::Ec | Self::EcHsm => &[256, 384, 521],
        }
    }

    /// The key operations a new key gets when the request names none.
    pub fn default_ops(self) -> Vec<KeyOp> {
        match self {
            Self::Rsa | Self::RsaHsm => vec![
                KeyOp::Encrypt,
                KeyOp::Decrypt,
                KeyOp::Sign,
                KeyOp::Verify,
                KeyOp::WrapKey,
                KeyOp::UnwrapKey,
            ],
            Self::OctHsm => vec![
                KeyOp::Encrypt,
                KeyOp::Decrypt,
                KeyOp::WrapKey,
                KeyOp::UnwrapKey,
            ],
            Self::Ec | Self::EcHsm => vec![KeyOp::Sign, KeyOp::Verify],
        }
    }
}

/// An elliptic curve (`crv`) of EC keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Curve {
    /// NIST P-256.
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384.
    #[serde(rename = "P-384")]
    P384,
    /// NIST P-521.
    #[serde(rename = "P-521")]
    P521,
}

impl Curve {
    /// Parses a `crv` as the service spells it.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "P-256" => Some(Self::P256),
            "P-384" => Some(Self::P384),
            "P-521" => Some(Self::P521),
            _ => None,
        }
    }

    /// The curve of a key size (256, 384, 521).
    pub fn of_size(bits: u32) -> Option<Self> {
        match bits {
            256 => Some(Self::P256),
            384 => Some(Self::P384),
            521 => Some(Self::P521),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// The field size in bits.
    pub fn bits(self) -> usize {
        match self {
            Self::P256 => 256,
            Self::P384 => 384,
            Self::P521 => 521,
        }
    }

    /// The length in bytes of a coordinate or private scalar (`x`, `y`, `d`).
    pub fn coordinate_len(self) -> usize {
        self.bits().div_ceil(8)
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three kinds of vault object; each has its own names, versions and soft-deleted state,
/// and its own error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// `/keys`
    Key,
    /// `/secrets`
    Secret,
    /// `/certificates`
    Certificate,
}

impl ObjectKind {
    /// The capitalised noun of messages ("Key", "Secret", "Certificate").
    pub fn title(self) -> &'static str {
        match self {
            Self::Key => "Key",
            Self::Secret => "Secret",
            Self::Certificate => "Certificate",
        }
    }

    /// The lowercase noun of messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Secret => "secret",
            Self::Certificate => "certificate",
        }
    }

    /// The 404 error code (`KeyNotFound`, `SecretNotFound`, `CertificateNotFound`).
    pub fn not_found_code(self) -> &'static str {
        match self {
            Self::Key => "KeyNotFound",
            Self::Secret => "SecretNotFound",
            Self::Certificate => "CertificateNotFound",
        }
    }

    /// The collection path segment (`keys`, `secrets`, `certificates`).
    pub fn collection(self) -> &'static str {
        match self {
            Self::Key => "keys",
            Self::Secret => "secrets",
            Self::Certificate => "certificates",
        }
    }

    /// The soft-deleted collection path segment (`deletedkeys`, ...).
    pub fn deleted_collection(self) -> &'static str {
        match self {
            Self::Key => "deletedkeys",
            Self::Secret => "deletedsecrets",
            Self::Certificate => "deletedcertificates",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JWK key operation (`key_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyOp {
    /// `encrypt`
    #[serde(rename = "encrypt")]
    Encrypt,
    /// `decrypt`
    #[serde(rename = "decrypt")]
    Decrypt,
    /// `sign`
    #[serde(rename = "sign")]
    Sign,
    /// `verify`
    #[serde(rename = "verify")]
    Verify,
    /// `wrapKey`
    #[serde(rename = "wrapKey")]
    WrapKey,
    /// `unwrapKey`
    #[serde(rename = "unwrapKey")]
    UnwrapKey,
    /// `import`
    #[serde(rename = "import")]
    Import,
    /// `export`
    #[serde(rename = "export")]
    Export,
}

impl KeyOp {
    /// Parses a key operation, case-insensitively.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "encrypt" => Self::Encrypt,
            "decrypt" => Self::Decrypt,
            "sign" => Self::Sign,
            "verify" => Self::Verify,
            "wrapkey" => Self::WrapKey,
            "unwrapkey" => Self::UnwrapKey,
            "import" => Self::Import,
            "export" => Self::Export,
            _ => return None,
        })
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::Sign => "sign",
            Self::Verify => "verify",
            Self::WrapKey => "wrapKey",
            Self::UnwrapKey => "unwrapKey",
            Self::Import => "import",
            Self::Export => "export",
        }
    }
}

/// A permission of an access policy (what an identity may do): key permissions are spelled as
/// before (`get`, `unwrapKey`); secret and certificate permissions carry their list's name
/// (`secrets/get`, `certificates/create`), as the three lists of an access policy do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// keys `get`
    #[serde(rename = "get")]
    Get,
    /// keys `list`
    #[serde(rename = "list")]
    List,
    /// keys `create`
    #[serde(rename = "create")]
    Create,
    /// keys `import`
    #[serde(rename = "import")]
    Import,
    /// keys `update`
    #[serde(rename = "update")]
    Update,
    /// keys `delete`
    #[serde(rename = "delete")]
    Delete,
    /// keys `recover`
    #[serde(rename = "recover")]
    Recover,
    /// keys `purge`
    #[serde(rename = "purge")]
    Purge,
    /// keys `rotate`
    #[serde(rename = "rotate")]
    Rotate,
    /// keys `wrapKey`
    #[serde(rename = "wrapKey")]
    WrapKey,
    /// keys `unwrapKey`
    #[serde(rename = "unwrapKey")]
    UnwrapKey,
    /// keys `encrypt`
    #[serde(rename = "encrypt")]
    Encrypt,
    /// keys `decrypt`
    #[serde(rename = "decrypt")]
    Decrypt,
    /// secrets `get`
    #[serde(rename = "secrets/get")]
    SecretGet,
    /// secrets `list`
    #[serde(rename = "secrets/list")]
    SecretList,
    /// secrets `set`
    #[serde(rename = "secrets/set")]
    SecretSet,
    /// secrets `delete`
    #[serde(rename = "secrets/delete")]
    SecretDelete,
    /// secrets `recover`
    #[serde(rename = "secrets/recover")]
    SecretRecover,
    /// secrets `purge`
    #[serde(rename = "secrets/purge")]
    SecretPurge,
    /// certificates `get`
    #[serde(rename = "certificates/get")]
    CertificateGet,
    /// certificates `list`
    #[serde(rename = "certificates/list")]
    CertificateList,
    /// certificates `create`
    #[serde(rename = "certificates/create")]
    CertificateCreate,
    /// certificates `import`
    #[serde(rename = "certificates/import")]
    CertificateImport,
    /// certificates `update`
    #[serde(rename = "certificates/update")]
    CertificateUpdate,
    /// certificates `delete`
    #[serde(rename = "certificates/delete")]
    CertificateDelete,
    /// certificates `recover`
    #[serde(rename = "certificates/recover")]
    CertificateRecover,
    /// certificates `purge`
    #[serde(rename = "certificates/purge")]
    CertificatePurge,
}

impl Permission {
    /// Every permission, as granted to an identity registered without a list.
    pub const ALL: [Permission; 27] = [
        Self::Get,
        Self::List,
        Self::Create,
        Self::Import,
        Self::Update,
        Self::Delete,
        Self::Recover,
        Self::Purge,
        Self::Rotate,
        Self::WrapKey,
        Self::UnwrapKey,
        Self::Encrypt,
        Self::Decrypt,
        Self::SecretGet,
        Self::SecretList,
        Self::SecretSet,
        Self::SecretDelete,
        Self::SecretRecover,
        Self::SecretPurge,
        Self::CertificateGet,
        Self::CertificateList,
        Self::CertificateCreate,
        Self::CertificateImport,
        Self::CertificateUpdate,
        Self::CertificateDelete,
        Self::CertificateRecover,
        Self::CertificatePurge,
    ];

    /// Parses a permission, case-insensitively (`unwrapKey`, `keys/unwrapkey`, `secrets/get`).
    pub fn parse(text: &str) -> Option<Self> {
        let text = match text.get(..5) {
            Some(prefix) if prefix.eq_ignore_ascii_case("keys/") => &text[5..],
            _ => text,
        };
        Self::ALL
            .into_iter()
            .find(|permission| permission.as_str().eq_ignore_ascii_case(text))
    }

    /// The access-policy spelling (admin API and [`Permission::parse`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Create => "create",
            Self::Import => "import",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Recover => "recover",
            Self::Purge => "purge",
            Self::Rotate => "rotate",
            Self::WrapKey => "wrapKey",
            Self::UnwrapKey => "unwrapKey",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::SecretGet => "secrets/get",
            Self::SecretList => "secrets/list",
            Self::SecretSet => "secrets/set",
            Self::SecretDelete => "secrets/delete",
            Self::SecretRecover => "secrets/recover",
            Self::SecretPurge => "secrets/purge",
            Self::CertificateGet => "certificates/get",
            Self::CertificateList => "certificates/list",
            Self::CertificateCreate => "certificates/create",
            Self::CertificateImport => "certificates/import",
            Self::CertificateUpdate => "certificates/update",
            Self::CertificateDelete => "certificates/delete",
            Self::CertificateRecover => "certificates/recover",
            Self::CertificatePurge => "certificates/purge",
        }
    }

    /// The access policy's list the permission belongs to: `keys`, `secrets` or
    /// `certificates`.
    pub fn list_name(self) -> &'static str {
        match self.as_str().split_once('/') {
            Some((list, _)) => list,
            None => "keys",
        }
    }

    /// The permission's name within its list (`get`, `unwrapKey`), as the 403 message says it.
    pub fn verb(self) -> &'static str {
        match self.as_str().split_once('/') {
            Some((_, verb)) => verb,
            None => self.as_str(),
        }
    }
}

/// An operation the emulator serves: the unit of call counters and of fault rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `POST /keys/{n}/create`
    CreateKey,
    /// `PUT /keys/{n}`
    ImportKey,
    /// `GET /keys/{n}/{v}`
    GetKey,
    /// `PATCH /keys/{n}/{v}`
    UpdateKey,
    /// `GET /keys`
    ListKeys,
    /// `GET /keys/{n}/versions`
    ListKeyVersions,
    /// `POST /keys/{n}/rotate`
    RotateKey,
    /// `DELETE /keys/{n}`
    DeleteKey,
    /// `GET /deletedkeys/{n}`
    GetDeletedKey,
    /// `GET /deletedkeys`
    ListDeletedKeys,
    /// `POST /deletedkeys/{n}/recover`
    RecoverKey,
    /// `DELETE /deletedkeys/{n}`
    PurgeKey,
    /// `POST /keys/{n}/{v}/wrapkey`
    WrapKey,
    /// `POST /keys/{n}/{v}/unwrapkey`
    UnwrapKey,
    /// `POST /keys/{n}/{v}/encrypt`
    Encrypt,
    /// `POST /keys/{n}/{v}/decrypt`
    Decrypt,
    /// `GET /secrets/{n}/{v}`
    GetSecret,
    /// `PUT /secrets/{n}`
    SetSecret,
    /// `PATCH /secrets/{n}/{v}`
    UpdateSecret,
    /// `GET /secrets`
    ListSecrets,
    /// `GET /secrets/{n}/versions`
    ListSecretVersions,
    /// `DELETE /secrets/{n}`
    DeleteSecret,
    /// `GET /deletedsecrets/{n}` (needs secrets list, as the service says)
    GetDeletedSecret,
    /// `GET /deletedsecrets`
    ListDeletedSecrets,
    /// `POST /deletedsecrets/{n}/recover`
    RecoverSecret,
    /// `DELETE /deletedsecrets/{n}`
    PurgeSecret,
    /// `POST /certificates/{n}/create`
    CreateCertificate,
    /// `POST /certificates/{n}/import`
    ImportCertificate,
    /// `GET /certificates/{n}/{v}`
    GetCertificate,
    /// `PATCH /certificates/{n}/{v}`
    UpdateCertificate,
    /// `GET /certificates`
    ListCertificates,
    /// `GET /certificates/{n}/versions`
    ListCertificateVersions,
    /// `GET /certificates/{n}/pending`
    GetCertificateOperation,
    /// `PATCH /certificates/{n}/pending` (cancel)
    UpdateCertificateOperation,
    /// `DELETE /certificates/{n}/pending`
    DeleteCertificateOperation,
    /// `POST /certificates/{n}/pending/merge`
    MergeCertificate,
    /// `GET /certificates/{n}/policy`
    GetCertificatePolicy,
    /// `PATCH /certificates/{n}/policy`
    UpdateCertificatePolicy,
    /// `DELETE /certificates/{n}`
    DeleteCertificate,
    /// `GET /deletedcertificates/{n}`
    GetDeletedCertificate,
    /// `GET /deletedcertificates`
    ListDeletedCertificates,
    /// `POST /deletedcertificates/{n}/recover`
    RecoverCertificate,
    /// `DELETE /deletedcertificates/{n}`
    PurgeCertificate,
    /// `GET /{tenant}/v2.0/.well-known/openid-configuration`
    OpenIdConfiguration,
    /// `POST /{tenant}/oauth2/v2.0/token`
    EntraToken,
    /// `GET /metadata/identity/oauth2/token` (IMDS form)
    ImdsToken,
    /// The App Service `IDENTITY_ENDPOINT` form.
    AppServiceToken,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 47] = [
        Self::CreateKey,
        Self::ImportKey,
        Self::GetKey,
        Self::UpdateKey,
        Self::ListKeys,
        Self::ListKeyVersions,
        Self::RotateKey,
        Self::DeleteKey,
        Self::GetDeletedKey,
        Self::ListDeletedKeys,
        Self::RecoverKey,
        Self::PurgeKey,
        Self::WrapKey,
        Self::UnwrapKey,
        Self::Encrypt,
        Self::Decrypt,
        Self::GetSecret,
        Self::SetSecret,
        Self::UpdateSecret,
        Self::ListSecrets,
        Self::ListSecretVersions,
        Self::DeleteSecret,
        Self::GetDeletedSecret,
        Self::ListDeletedSecrets,
        Self::RecoverSecret,
        Self::PurgeSecret,
        Self::CreateCertificate,
        Self::ImportCertificate,
        Self::GetCertificate,
        Self::UpdateCertificate,
        Self::ListCertificates,
        Self::ListCertificateVersions,
        Self::GetCertificateOperation,
        Self::UpdateCertificateOperation,
        Self::DeleteCertificateOperation,
        Self::MergeCertificate,
        Self::GetCertificatePolicy,
        Self::UpdateCertificatePolicy,
        Self::DeleteCertificate,
        Self::GetDeletedCertificate,
        Self::ListDeletedCertificates,
        Self::RecoverCertificate,
        Self::PurgeCertificate,
        Self::OpenIdConfiguration,
        Self::EntraToken,
        Self::ImdsToken,
        Self::AppServiceToken,
    ];

    /// The snake_case name used by the admin API and in counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateKey => "create_key",
            Self::ImportKey => "import_key",
            Self::GetKey => "get_key",
            Self::UpdateKey => "update_key",
            Self::ListKeys => "list_keys",
            Self::ListKeyVersions => "list_key_versions",
            Self::RotateKey => "rotate_key",
            Self::DeleteKey => "delete_key",
            Self::GetDeletedKey => "get_deleted_key",
            Self::ListDeletedKeys => "list_deleted_keys",
            Self::RecoverKey => "recover_key",
            Self::PurgeKey => "purge_key",
            Self::WrapKey => "wrap_key",
            Self::UnwrapKey => "unwrap_key",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::GetSecret => "get_secret",
            Self::SetSecret => "set_secret",
            Self::UpdateSecret => "update_secret",
            Self::ListSecrets => "list_secrets",
            Self::ListSecretVersions => "list_secret_versions",
            Self::DeleteSecret => "delete_secret",
            Self::GetDeletedSecret => "get_deleted_secret",
            Self::ListDeletedSecrets => "list_deleted_secrets",
            Self::RecoverSecret => "recover_secret",
            Self::PurgeSecret => "purge_secret",
            Self::CreateCertificate => "create_certificate",
            Self::ImportCertificate => "import_certificate",
            Self::GetCertificate => "get_certificate",
            Self::UpdateCertificate => "update_certificate",
            Self::ListCertificates => "list_certificates",
            Self::ListCertificateVersions => "list_certificate_versions",
            Self::GetCertificateOperation => "get_certificate_operation",
            Self::UpdateCertificateOperation => "update_certificate_operation",
            Self::DeleteCertificateOperation => "delete_certificate_operation",
            Self::MergeCertificate => "merge_certificate",
            Self::GetCertificatePolicy => "get_certificate_policy",
            Self::UpdateCertificatePolicy => "update_certificate_policy",
            Self::DeleteCertificate => "delete_certificate",
            Self::GetDeletedCertificate => "get_deleted_certificate",
            Self::ListDeletedCertificates => "list_deleted_certificates",
            Self::RecoverCertificate => "recover_certificate",
            Self::PurgeCertificate => "purge_certificate",
            Self::OpenIdConfiguration => "openid_configuration",
            Self::EntraToken => "entra_token",
            Self::ImdsToken => "imds_token",
            Self::AppServiceToken => "app_service_token",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == text)
    }

    /// Whether the operation is a Key Vault REST call (challenged, throttled by the vault).
    pub fn is_vault(self) -> bool {
        !matches!(
            self,
            Self::OpenIdConfiguration | Self::EntraToken | Self::ImdsToken | Self::AppServiceToken
        )
    }

    /// The kind of vault object the operation works on (`None`: an identity endpoint).
    pub fn object_kind(self) -> Option<ObjectKind> {
        if !self.is_vault() {
            return None;
        }
        let name = self.as_str();
        Some(if name.contains("secret") {
            ObjectKind::Secret
        } else if name.contains("certificate") {
            ObjectKind::Certificate
        } else {
            ObjectKind::Key
        })
    }

    /// The permission the identity needs.
    pub fn permission(self) -> Option<Permission> {
        Some(match self {
            Self::CreateKey => Permission::Create,
            Self::ImportKey => Permission::Import,
            Self::GetKey => Permission::Get,
            Self::UpdateKey => Permission::Update,
            Self::ListKeys | Self::ListKeyVersions | Self::ListDeletedKeys => Permission::List,
            Self::RotateKey => Permission::Rotate,
            Self::DeleteKey => Permission::Delete,
            Self::GetDeletedKey => Permission::Get,
            Self::RecoverKey => Permission::Recover,
            Self::PurgeKey => Permission::Purge,
            Self::WrapKey => Permission::WrapKey,
            Self::UnwrapKey => Permission::UnwrapKey,
            Self::Encrypt => Permission::Encrypt,
            Self::Decrypt => Permission::Decrypt,
            Self::GetSecret => Permission::SecretGet,
            Self::SetSecret => Permission::SecretSet,
            Self::UpdateSecret => Permission::SecretSet,
            Self::ListSecrets => Permission::SecretList,
            Self::ListSecretVersions => Permission::SecretList,
            Self::DeleteSecret => Permission::SecretDelete,
            Self::GetDeletedSecret => Permission::SecretList,
            Self::ListDeletedSecrets => Permission::SecretList,
            Self::RecoverSecret => Permission::SecretRecover,
            Self::PurgeSecret => Permission::SecretPurge,
            Self::CreateCertificate => Permission::CertificateCreate,
            Self::ImportCertificate => Permission::CertificateImport,
            Self::GetCertificate => Permission::CertificateGet,
            Self::UpdateCertificate => Permission::CertificateUpdate,
            Self::ListCertificates => Permission::CertificateList,
            Self::ListCertificateVersions => Permission::CertificateList,
            Self::GetCertificateOperation => Permission::CertificateGet,
            Self::UpdateCertificateOperation => Permission::CertificateUpdate,
            Self::DeleteCertificateOperation => Permission::CertificateDelete,
            Self::MergeCertificate => Permission::CertificateCreate,
            Self::GetCertificatePolicy => Permission::CertificateGet,
            Self::UpdateCertificatePolicy => Permission::CertificateUpdate,
            Self::DeleteCertificate => Permission::CertificateDelete,
            Self::GetDeletedCertificate => Permission::CertificateGet,
            Self::ListDeletedCertificates => Permission::CertificateList,
            Self::RecoverCertificate => Permission::CertificateRecover,
            Self::PurgeCertificate => Permission::CertificatePurge,
            _ => return None,
        })
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.as_str()), Some(op));
        }
        for permission in Permission::ALL {
            assert_eq!(Permission::parse(permission.as_str()), Some(permission));
        }
        assert_eq!(Permission::parse("UNWRAPKEY"), Some(Permission::UnwrapKey));
        assert_eq!(KeyOp::parse("wrapKey"), Some(KeyOp::WrapKey));
    }

    #[test]
    fn permissions_name_their_access_policy_list() {
        for permission in Permission::ALL {
            let json = serde_json::to_value(permission).unwrap();
            assert_eq!(json, permission.as_str());
            assert_eq!(
                serde_json::from_value::<Permission>(json).unwrap(),
                permission
            );
        }
        assert_eq!(Permission::parse("keys/get"), Some(Permission::Get));
        assert_eq!(
            Permission::parse("Secrets/Get"),
            Some(Permission::SecretGet)
        );
        let get = Permission::SecretGet;
        assert_eq!((get.list_name(), get.verb()), ("secrets", "get"));
        let unwrap = Permission::UnwrapKey;
        assert_eq!((unwrap.list_name(), unwrap.verb()), ("keys", "unwrapKey"));
    }

    #[test]
    fn operations_know_their_object_kind_and_permission() {
        assert_eq!(Operation::GetSecret.object_kind(), Some(ObjectKind::Secret));
        assert_eq!(
            Operation::MergeCertificate.object_kind(),
            Some(ObjectKind::Certificate)
        );
        assert_eq!(Operation::UnwrapKey.object_kind(), Some(ObjectKind::Key));
        assert_eq!(Operation::EntraToken.object_kind(), None);
        assert_eq!(
            Operation::UpdateSecret.permission(),
            Some(Permission::SecretSet)
        );
        assert_eq!(
            Operation::GetDeletedSecret.permission(),
            Some(Permission::SecretList)
        );
        for op in Operation::ALL {
            assert_eq!(op.permission().is_some(), op.is_vault(), "{op}");
        }
    }

    #[test]
    fn key_types_follow_the_service() {
        assert!(KeyType::Rsa.allowed_in(VaultKind::KeyVault));
        assert!(!KeyType::OctHsm.allowed_in(VaultKind::KeyVault));
        assert!(KeyType::OctHsm.allowed_in(VaultKind::ManagedHsm));
        assert!(!KeyType::Rsa.allowed_in(VaultKind::ManagedHsm));
        assert!(KeyType::Ec.allowed_in(VaultKind::KeyVault));
        assert!(!KeyType::Ec.allowed_in(VaultKind::ManagedHsm));
        assert!(KeyType::EcHsm.allowed_in(VaultKind::ManagedHsm));
        assert_eq!(Curve::of_size(521).map(Curve::coordinate_len), Some(66));
    }
}
