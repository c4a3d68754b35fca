//! What every SecretProviderClass has, whichever backend reads it: the error that names a bad
//! parameter or object field ([`SpecError`]), the limits on what one class may ask for, and the
//! object fields Azure's and Alibaba's providers spell alike.
//!
//! A class is attacker input (anyone who may write one in a namespace): the limits keep one
//! class from costing the node unbounded vault calls, files or memory, and no error here echoes a
//! parameter that may hold a credential.

use std::fmt;

/// The object fields both providers' classes spell alike.
pub mod fields {
    /// The store object's name (required).
    pub const OBJECT_NAME: &str = "objectName";
    /// The kind of store object (`secret`, `key`, `cert` for Key Vault; `kms`, `oos` for
    /// Alibaba Cloud).
    pub const OBJECT_TYPE: &str = "objectType";
    /// The file's path in the volume, instead of the name.
    pub const OBJECT_ALIAS: &str = "objectAlias";
    /// A version; empty (or `latest` for Key Vault) for the newest.
    pub const OBJECT_VERSION: &str = "objectVersion";
    /// Fields of a JSON secret, each to its own file: a list of `{path, objectAlias}`.
    pub const JMES_PATH: &str = "jmesPath";
}

/// The most objects one class may list: each is at least one store read per mount.
pub const MAX_OBJECTS: usize = 1000;

/// The most files one class's objects may name (versions, `tls` files and `jmesPath` fields
/// included); the driver takes at most 4 MiB of them in one response anyway.
pub const MAX_OUTPUT_FILES: usize = 10_000;

/// A SecretProviderClass parameter or object field is wrong. `Display` names the object (by
/// index and name when it has one) and the field, says what was expected, and never echoes a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// A class parameter (e.g. `keyvaultName`) is missing or invalid.
    Parameter {
        /// The parameter's key.
        key: &'static str,
        /// The whole message, naming the key (in Azure's provider's words where it has them):
        /// what is wrong and what is expected.
        reason: String,
    },
    /// An object's field is invalid.
    Object {
        /// The object's position in `objects`, from 0.
        index: usize,
        /// Its `objectName`, when it has a valid one.
        name: Option<String>,
        /// The field (e.g. `objectEncoding`).
        field: &'static str,
        /// The message after the object's position and name, naming the field (in Azure's
        /// provider's words where it has them): what is wrong and what is expected.
        reason: String,
    },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parameter { reason, .. } => f.write_str(reason),
            Self::Object {
                index,
                name: Some(name),
                reason,
                ..
            } => write!(f, "object {index} ({name:?}): {reason}"),
            Self::Object {
                index,
                name: None,
                reason,
                ..
            } => write!(f, "object {index}: {reason}"),
        }
    }
}

impl std::error::Error for SpecError {}
