//! The vault's keys: names, versions, attributes and the soft-deleted state.
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
use crate::model::{KeyOp, KeyType};

/// The mutable attributes of a key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Whether the version may be used (private-key operations refuse a disabled version).
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
            attributes: Attributes {
                enabled: true,
                nbf: None,
                exp: None,
                created: now,
                updated: now,
            },
            tags: BTreeMap::new(),
        })
    }

    /// The key size in bits.
    pub fn bits(&self) -> usize {
        self.material.bits()
    }
}

/// A soft-deleted key.
#[derive(Debug, Clone)]
pub struct DeletedKey {
    /// Its versions, oldest first.
    pub versions: Vec<KeyVersion>,
    /// When it was deleted, unix seconds.
    pub deleted_date: i64,
    /// When it would be purged, unix seconds.
    pub scheduled_purge_date: i64,
}

impl DeletedKey {
    /// The latest version.
    pub fn latest(&self) -> Option<&KeyVersion> {
        self.versions.last()
    }
}

/// All keys of one vault.
#[derive(Debug, Default)]
pub struct Store {
    live: BTreeMap<String, Vec<KeyVersion>>,
    deleted: BTreeMap<String, DeletedKey>,
}

/// A fresh version id: 32 lowercase hex digits.
pub fn new_version() -> Result<String, ServiceError> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes).map_err(ServiceError::from)?;
    Ok(hex::encode(bytes))
}

/// Whether `name` is a valid key name: 1-127 characters of `0-9a-zA-Z-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl Store {
    /// Adds a version (create, import, rotate). A soft-deleted name answers 409.
    pub fn add_version(&mut self, mut version: KeyVersion) -> Result<KeyVersion, ServiceError> {
        let key = fold(&version.name);
        if self.deleted.contains_key(&key) {
            return Err(ServiceError::deleted_but_recoverable(&version.name));
        }
        let versions = self.live.entry(key).or_default();
        if let Some(first) = versions.first() {
            version.name = first.name.clone();
        }
        versions.push(version.clone());
        Ok(version)
    }

    /// A version of a live key; `None` or an empty version means the latest.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<&KeyVersion, ServiceError> {
        let versions = self
            .live
            .get(&fold(name))
            .ok_or_else(|| ServiceError::key_not_found(name, version))?;
        match version.filter(|v| !v.is_empty()) {
            None => versions
                .last()
                .ok_or_else(|| ServiceError::key_not_found(name, None)),
            Some(wanted) => versions
                .iter()
                .find(|v| v.version.eq_ignore_ascii_case(wanted))
                .ok_or_else(|| ServiceError::key_not_found(name, Some(wanted))),
        }
    }

    /// The same as [`Store::get`], mutable.
    pub fn get_mut(
        &mut self,
        name: &str,
        version: Option<&str>,
    ) -> Result<&mut KeyVersion, ServiceError> {
        let versions = self
            .live
            .get_mut(&fold(name))
            .ok_or_else(|| ServiceError::key_not_found(name, version))?;
        match version.filter(|v| !v.is_empty()) {
            None => versions
                .last_mut()
                .ok_or_else(|| ServiceError::key_not_found(name, None)),
            Some(wanted) => versions
                .iter_mut()
                .find(|v| v.version.eq_ignore_ascii_case(wanted))
                .ok_or_else(|| ServiceError::key_not_found(name, Some(wanted))),
        }
    }

    /// The latest version of every live key, by name.
    pub fn latest_versions(&self) -> Vec<&KeyVersion> {
        self.live.values().filter_map(|v| v.last()).collect()
    }

    /// Every version of a live key, oldest first.
    pub fn versions(&self, name: &str) -> Result<&[KeyVersion], ServiceError> {
        self.live
            .get(&fold(name))
            .map(Vec::as_slice)
            .ok_or_else(|| ServiceError::key_not_found(name, None))
    }

    /// Soft-deletes a key.
    pub fn delete(
        &mut self,
        name: &str,
        now: i64,
        retention_days: u32,
    ) -> Result<DeletedKey, ServiceError> {
        let versions = self
            .live
            .remove(&fold(name))
            .ok_or_else(|| ServiceError::key_not_found(name, None))?;
        let deleted = DeletedKey {
            versions,
            deleted_date: now,
            scheduled_purge_date: now + i64::from(retention_days) * 86_400,
        };
        self.deleted.insert(fold(name), deleted.clone());
        Ok(deleted)
    }

    /// A soft-deleted key.
    pub fn get_deleted(&self, name: &str) -> Result<&DeletedKey, ServiceError> {
        self.deleted
            .get(&fold(name))
            .ok_or_else(|| ServiceError::deleted_key_not_found(name))
    }

    /// Every soft-deleted key, by name.
    pub fn deleted_keys(&self) -> Vec<&DeletedKey> {
        self.deleted.values().collect()
    }

    /// Recovers a soft-deleted key; answers its latest version.
    pub fn recover(&mut self, name: &str) -> Result<KeyVersion, ServiceError> {
        let deleted = self
            .deleted
            .remove(&fold(name))
            .ok_or_else(|| ServiceError::deleted_key_not_found(name))?;
        let latest = deleted
            .latest()
            .cloned()
            .ok_or_else(|| ServiceError::deleted_key_not_found(name))?;
        self.live.insert(fold(name), deleted.versions);
        Ok(latest)
    }

    /// Purges a soft-deleted key for good.
    pub fn purge(&mut self, name: &str) -> Result<(), ServiceError> {
        self.deleted
            .remove(&fold(name))
            .map(|_| ())
            .ok_or_else(|| ServiceError::deleted_key_not_found(name))
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
