//! The vault's objects — keys here, secrets and certificates through the same [`Collection`] —
//! with their names, versions, attributes and the soft-deleted state.
//!
//! Names are case-insensitive (as in Key Vault) but keep the spelling they were created with.
//! "Latest" is the most recently created version. A soft-deleted name keeps all its versions
//! until recovered or purged, and blocks re-creation with 409 ObjectIsDeletedButRecoverable.
//! The store holds no locks of its own and does no crypto: callers generate material first and
//! run operations on an `Arc` of the material after releasing the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::crypto::{KeyMaterial, fill_random};
use crate::error::ServiceError;
use crate::model::{KeyOp, KeyType, ObjectKind};

/// The mutable attributes of a version (keys, secrets and certificates alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Whether the version may be used (private-key operations and secret reads refuse a
    /// disabled version).
    pub enabled: bool,
    /// Not-before, unix seconds.
    pub nbf: Option<i64>,
    /// Expiry, unix seconds.
    pub exp: Option<i64>,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Last update, unix seconds.
    pub updated: i64,
}

impl Attributes {
    /// Enabled, no validity window, created and updated `now`.
    pub fn created_at(now: i64) -> Self {
        Self {
            enabled: true,
            nbf: None,
            exp: None,
            created: now,
            updated: now,
        }
    }
}

/// One version of a key.
#[derive(Debug, Clone)]
pub struct KeyVersion {
    /// The key name as created.
    pub name: String,
    /// 32 lowercase hex digits.
    pub version: String,
    /// The key type.
    pub kty: KeyType,
    /// The private material (shared so operations run without the store's lock).
    pub material: Arc<KeyMaterial>,
    /// Permitted operations.
    pub key_ops: Vec<KeyOp>,
    /// Attributes.
    pub attributes: Attributes,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Whether the key backs a certificate (its lifetime is the certificate's).
    pub managed: bool,
}

impl KeyVersion {
    /// A new enabled version with a fresh random version id.
    pub fn new(
        name: &str,
        kty: KeyType,
        material: KeyMaterial,
        key_ops: Vec<KeyOp>,
        now: i64,
    ) -> Result<Self, ServiceError> {
        Ok(Self {
            name: name.to_owned(),
            version: new_version()?,
            kty,
            material: Arc::new(material),
            key_ops,
            attributes: Attributes::created_at(now),
            tags: BTreeMap::new(),
            managed: false,
        })
    }

    /// The key size in bits.
    pub fn bits(&self) -> usize {
        self.material.bits()
    }
}

/// A vault object version the store can hold: keys, secrets and certificates.
pub trait Versioned: Clone {
    /// Which kind of object (selects the error codes).
    const KIND: ObjectKind;
    /// The name as created.
    fn name(&self) -> &str;
    /// Renames (a new version takes the spelling of the first).
    fn set_name(&mut self, name: &str);
    /// The version id.
    fn version(&self) -> &str;
    /// The attributes.
    fn attributes(&self) -> &Attributes;
    /// The attributes, mutable.
    fn attributes_mut(&mut self) -> &mut Attributes;
}

/// Implements [`Versioned`] for a version type with `name`, `version` and `attributes` fields.
macro_rules! versioned {
    ($version:ty, $kind:expr) => {
        impl $crate::store::Versioned for $version {
            const KIND: $crate::model::ObjectKind = $kind;
            fn name(&self) -> &str {
                &self.name
            }
            fn set_name(&mut self, name: &str) {
                name.clone_into(&mut self.name);
            }
            fn version(&self) -> &str {
                &self.version
            }
            fn attributes(&self) -> &$crate::store::Attributes {
                &self.attributes
            }
            fn attributes_mut(&mut self) -> &mut $crate::store::Attributes {
                &mut self.attributes
            }
        }
    };
}
pub(crate) use versioned;

versioned!(KeyVersion, ObjectKind::Key);

/// A soft-deleted object: all its versions.
#[derive(Debug, Clone)]
pub struct Deleted<T> {
    /// Its versions, oldest first.
    pub versions: Vec<T>,
    /// When it was deleted, unix seconds.
    pub deleted_date: i64,
    /// When it would be purged, unix seconds.
    pub scheduled_purge_date: i64,
}

impl<T> Deleted<T> {
    /// The latest version.
    pub fn latest(&self) -> Option<&T> {
        self.versions.last()
    }
}

/// A soft-deleted key.
pub type DeletedKey = Deleted<KeyVersion>;

/// All objects of one kind in one vault.
#[derive(Debug)]
pub struct Collection<T> {
    live: BTreeMap<String, Vec<T>>,
    deleted: BTreeMap<String, Deleted<T>>,
}

impl<T> Default for Collection<T> {
    fn default() -> Self {
        Self {
            live: BTreeMap::new(),
            deleted: BTreeMap::new(),
        }
    }
}

/// All keys of one vault.
pub type Store = Collection<KeyVersion>;

/// A fresh version id: 32 lowercase hex digits.
pub fn new_version() -> Result<String, ServiceError> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes).map_err(ServiceError::from)?;
    Ok(hex::encode(bytes))
}

/// Whether `name` is a valid object name: 1-127 characters of `0-9a-zA-Z-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn not_found<T: Versioned>(name: &str, version: Option<&str>) -> ServiceError {
    ServiceError::not_found(T::KIND, name, version)
}

fn deleted_not_found<T: Versioned>(name: &str) -> ServiceError {
    ServiceError::deleted_not_found(T::KIND, name)
}

impl<T: Versioned> Collection<T> {
    /// Adds a version (create, import, rotate, set). A soft-deleted name answers 409. A version
    /// created in the same second as the one before gets a later `created` (and `updated`), so
    /// sorting by creation time — as the CSI provider does — is never ambiguous.
    pub fn add_version(&mut self, mut version: T) -> Result<T, ServiceError> {
        let key = fold(version.name());
        if self.deleted.contains_key(&key) {
            return Err(ServiceError::deleted_but_recoverable(
                T::KIND,
                version.name(),
            ));
        }
        let versions = self.live.entry(key).or_default();
        if let Some(first) = versions.first() {
            let name = first.name().to_owned();
            version.set_name(&name);
        }
        if let Some(last) = versions.last() {
            let after = last.attributes().created + 1;
            let attributes = version.attributes_mut();
            if attributes.created < after {
                attributes.created = after;
                attributes.updated = attributes.updated.max(after);
            }
        }
        versions.push(version.clone());
        Ok(version)
    }

    /// Whether a live object has this name.
    pub fn contains(&self, name: &str) -> bool {
        self.live.contains_key(&fold(name))
    }

    /// A version of a live object; `None` or an empty version means the latest.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<&T, ServiceError> {
        let versions = self
            .live
            .get(&fold(name))
            .ok_or_else(|| not_found::<T>(name, version.filter(|v| !v.is_empty())))?;
        match version.filter(|v| !v.is_empty()) {
            None => versions.last().ok_or_else(|| not_found::<T>(name, None)),
            Some(wanted) => versions
                .iter()
                .find(|v| v.version().eq_ignore_ascii_case(wanted))
                .ok_or_else(|| not_found::<T>(name, Some(wanted))),
        }
    }

    /// The same as [`Collection::get`], mutable.
    pub fn get_mut(&mut self, name: &str, version: Option<&str>) -> Result<&mut T, ServiceError> {
        let versions = self
            .live
            .get_mut(&fold(name))
            .ok_or_else(|| not_found::<T>(name, version.filter(|v| !v.is_empty())))?;
        match version.filter(|v| !v.is_empty()) {
            None => versions
                .last_mut()
                .ok_or_else(|| not_found::<T>(name, None)),
            Some(wanted) => versions
                .iter_mut()
                .find(|v| v.version().eq_ignore_ascii_case(wanted))
                .ok_or_else(|| not_found::<T>(name, Some(wanted))),
        }
    }

    /// Removes one version of a live object (a creation that was abandoned); the name goes
    /// when its last version does.
    pub fn remove_version(&mut self, name: &str, version: &str) {
        let key = fold(name);
        if let Some(versions) = self.live.get_mut(&key) {
            versions.retain(|v| !v.version().eq_ignore_ascii_case(version));
            if versions.is_empty() {
                self.live.remove(&key);
            }
        }
    }

    /// The latest version of every live object, by name.
    pub fn latest_versions(&self) -> Vec<&T> {
        self.live.values().filter_map(|v| v.last()).collect()
    }

    /// Every version of a live object, oldest first.
    pub fn versions(&self, name: &str) -> Result<&[T], ServiceError> {
        self.live
            .get(&fold(name))
            .map(Vec::as_slice)
            .ok_or_else(|| not_found::<T>(name, None))
    }

    /// Soft-deletes an object (all its versions).
    pub fn delete(
        &mut self,
        name: &str,
        now: i64,
        retention_days: u32,
    ) -> Result<Deleted<T>, ServiceError> {
        let versions = self
            .live
            .remove(&fold(name))
            .ok_or_else(|| not_found::<T>(name, None))?;
        let deleted = Deleted {
            versions,
            deleted_date: now,
            scheduled_purge_date: now + i64::from(retention_days) * 86_400,
        };
        self.deleted.insert(fold(name), deleted.clone());
        Ok(deleted)
    }

    /// A soft-deleted object.
    pub fn get_deleted(&self, name: &str) -> Result<&Deleted<T>, ServiceError> {
        self.deleted
            .get(&fold(name))
            .ok_or_else(|| deleted_not_found::<T>(name))
    }

    /// Every soft-deleted object, by name.
    pub fn all_deleted(&self) -> Vec<&Deleted<T>> {
        self.deleted.values().collect()
    }

    /// Recovers a soft-deleted object; answers its latest version.
    pub fn recover(&mut self, name: &str) -> Result<T, ServiceError> {
        let deleted = self
            .deleted
            .remove(&fold(name))
            .ok_or_else(|| deleted_not_found::<T>(name))?;
        let latest = deleted
            .latest()
            .cloned()
            .ok_or_else(|| deleted_not_found::<T>(name))?;
        self.live.insert(fold(name), deleted.versions);
        Ok(latest)
    }

    /// Purges a soft-deleted object for good.
    pub fn purge(&mut self, name: &str) -> Result<(), ServiceError> {
        self.deleted
            .remove(&fold(name))
            .map(|_| ())
            .ok_or_else(|| deleted_not_found::<T>(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn version(name: &str) -> KeyVersion {
        let material = KeyMaterial::oct(Zeroizing::new(vec![1; 32])).unwrap();
        KeyVersion::new(
            name,
            KeyType::OctHsm,
            material,
            KeyType::OctHsm.default_ops(),
            1,
        )
        .unwrap()
    }

    #[test]
    fn versions_are_32_lowercase_hex() {
        let v = new_version().unwrap();
        assert_eq!(v.len(), 32);
        assert!(
            v.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn latest_is_the_newest_and_names_are_case_insensitive() {
        let mut store = Store::default();
        let first = store.add_version(version("Kek")).unwrap();
        let second = store.add_version(version("kek")).unwrap();
        assert_eq!(second.name, "Kek");
        assert_eq!(store.get("KEK", None).unwrap().version, second.version);
        assert_eq!(store.get("kek", Some("")).unwrap().version, second.version);
        assert_eq!(
            store.get("kek", Some(&first.version)).unwrap().version,
            first.version
        );
        assert_eq!(
            store.get("kek", Some("0")).unwrap_err().code(),
            "KeyNotFound"
        );
    }

    #[test]
    fn soft_delete_blocks_the_name_until_recovered_or_purged() {
        let mut store = Store::default();
        store.add_version(version("kek")).unwrap();
        store.delete("kek", 10, 90).unwrap();
        assert_eq!(store.get("kek", None).unwrap_err().code(), "KeyNotFound");
        let conflict = store.add_version(version("kek")).unwrap_err();
        assert_eq!(conflict.status().as_u16(), 409);
        assert_eq!(conflict.inner_code(), Some("ObjectIsDeletedButRecoverable"));
        store.recover("kek").unwrap();
        assert!(store.get("kek", None).is_ok());
        store.delete("kek", 11, 90).unwrap();
        store.purge("kek").unwrap();
        assert!(store.add_version(version("kek")).is_ok());
    }

    #[test]
    fn names_are_validated() {
        assert!(valid_name("kube-kms-1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a_b"));
        assert!(!valid_name(&"a".repeat(128)));
    }
}
