//! The vocabulary of the service: vault kinds, key types, key operations, per-identity key
//! permissions and the REST operations the emulator counts and can fault.
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
}

impl KeyType {
    /// Parses a `kty` as the service spells it.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "RSA" => Some(Self::Rsa),
            "RSA-HSM" => Some(Self::RsaHsm),
            "oct-HSM" => Some(Self::OctHsm),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::RsaHsm => "RSA-HSM",
            Self::OctHsm => "oct-HSM",
        }
    }

    /// Whether the key lives in an HSM (selects the throttling budget).
    pub fn is_hsm(self) -> bool {
        !matches!(self, Self::Rsa)
    }

    /// Whether the key is RSA.
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa | Self::RsaHsm)
    }

    /// Whether a vault of `kind` holds keys of this type.
    pub fn allowed_in(self, kind: VaultKind) -> bool {
        match kind {
            VaultKind::KeyVault => self.is_rsa(),
            VaultKind::ManagedHsm => matches!(self, Self::RsaHsm | Self::OctHsm),
        }
    }

    /// The default key size in bits.
    pub fn default_size(self) -> u32 {
        match self {
            Self::Rsa | Self::RsaHsm => 2048,
            Self::OctHsm => 256,
        }
    }

    /// The key sizes the service accepts for this type.
    pub fn sizes(self) -> &'static [u32] {
        match self {
            Self::Rsa | Self::RsaHsm => &[2048, 3072, 4096],
            Self::OctHsm => &[128, 192, 256],
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

/// A key permission of an access policy (what an identity may do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Permission {
    /// `get`
    Get,
    /// `list`
    List,
    /// `create`
    Create,
    /// `import`
    Import,
    /// `update`
    Update,
    /// `delete`
    Delete,
    /// `recover`
    Recover,
    /// `purge`
    Purge,
    /// `rotate`
    Rotate,
    /// `wrapKey`
    WrapKey,
    /// `unwrapKey`
    UnwrapKey,
    /// `encrypt`
    Encrypt,
    /// `decrypt`
    Decrypt,
}

impl Permission {
    /// Every permission, as granted to an identity registered without a list.
    pub const ALL: [Permission; 13] = [
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
    ];

    /// Parses a permission, case-insensitively (`unwrapKey`, `unwrapkey`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|permission| permission.as_str().eq_ignore_ascii_case(text))
    }

    /// The access-policy spelling.
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
    pub const ALL: [Operation; 20] = [
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
    fn key_types_follow_the_service() {
        assert!(KeyType::Rsa.allowed_in(VaultKind::KeyVault));
        assert!(!KeyType::OctHsm.allowed_in(VaultKind::KeyVault));
        assert!(KeyType::OctHsm.allowed_in(VaultKind::ManagedHsm));
        assert!(!KeyType::Rsa.allowed_in(VaultKind::ManagedHsm));
    }
}
