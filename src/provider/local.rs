//! The local key ring: versioned 256-bit root keys in files on this host. For development and
//! tests only — the root key sits on the same disk as everything else, so anyone who can read
//! the key ring directory can decrypt every Secret. Production uses a key service.
//!
//! Layout: a directory (mode 0700) of files `v{N}.key` (mode 0600), N = 1, 2, 3…; the highest
//! N is the current version. Each file is `KKMS-LK1` ‖ 16-byte random id ‖ 32-byte key. The
//! key_id of a version is the lowercase hex SHA-256 of a label, the version number and the
//! random id, so a key ring recreated from scratch never repeats a key_id. A wrapped KEK is
//! `nonce ‖ AES-256-GCM(root key, KEK) ‖ tag` with the version bound as associated data. The
//! file `newest-version` records the highest version the ring ever had: a removed current key
//! file then stops the plugin (also across restarts) instead of making an older key_id current
//! again, and a version number is never written twice.
//!
//! This module never writes a key file over another one and never loosens a permission.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{KeyIdentity, KeyProvider, KeyVersion, ProviderError, ProviderHealth};
use crate::crypto::{GcmKey, KEY_LEN, Nonce, SecretKey, fill_random};

const FILE_MAGIC: &[u8; 8] = b"KKMS-LK1";
const ID_LEN: usize = 16;
const FILE_LEN: usize = FILE_MAGIC.len() + ID_LEN + KEY_LEN;
const KEY_ID_LABEL: &[u8] = b"kube-kms/local-key/v1\0";
const WRAP_AAD_LABEL: &[u8] = b"kube-kms/local-wrap/v1\0";
/// Holds the highest version the key ring ever had, in decimal.
const NEWEST_FILE: &str = "newest-version";

/// One version as `kube-kms keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRingEntry {
    /// The version number (1, 2, …).
    pub version: u32,
    /// The key_id kube-apiserver sees for this version.
    pub key_id: String,
    /// When the key file was written, if the file system records it.
    pub created: Option<SystemTime>,
}

struct RootKey {
    key_version: KeyVersion,
    gcm: GcmKey,
}

/// The local key provider: a key ring directory loaded into memory.
pub struct LocalKeyRing {
    dir: PathBuf,
    keys: RwLock<Arc<BTreeMap<u32, RootKey>>>,
}

impl LocalKeyRing {
    /// Opens the key ring in `dir`, creating the directory (0700) and a first key version when
    /// there is none, so that a fresh machine needs no set-up step.
    pub fn open_or_create(dir: &Path) -> Result<Self, ProviderError> {
        ensure_private_dir(dir)?;
        if scan(dir)?.is_empty() {
            let version = write_next_key(dir)?;
            tracing::info!(dir = %dir.display(), version, "created a new local key ring");
        }
        let ring = Self {
            dir: dir.to_owned(),
            keys: RwLock::new(Arc::new(BTreeMap::new())),
        };
        ring.reload()?;
        Ok(ring)
    }

    /// Adds a new key version to the key ring in `dir` and returns it. A running plugin moves
    /// to it at its next refresh (or SIGHUP); older versions keep decrypting.
    pub fn rotate(dir: &Path) -> Result<KeyRingEntry, ProviderError> {
        ensure_private_dir(dir)?;
        let version = write_next_key(dir)?;
        list(dir)?
            .into_iter()
            .find(|entry| entry.version == version)
            .ok_or_else(|| ProviderError::Misconfigured {
                reason: format!(
                    "key version {version} vanished from {} after writing",
                    dir.display()
                ),
            })
    }

    fn reload(&self) -> Result<KeyVersion, ProviderError> {
        let mut keys = BTreeMap::new();
        for (version, path) in scan(&self.dir)? {
            let (id, key) = read_key_file(&path)?;
            let key_version = KeyVersion::new(&key_id(version, &id), &version.to_string())?;
            keys.insert(
                version,
                RootKey {
                    key_version,
                    gcm: key.gcm(),
                },
            );
        }
        let current = keys
            .values()
            .next_back()
            .map(|root| root.key_version.clone())
            .ok_or_else(|| ProviderError::Misconfigured {
                reason: format!(
                    "key ring {} holds no key files; run `kube-kms keys rotate` to create one",
                    self.dir.display()
                ),
            })?;
        let newest = keys.keys().next_back().copied().unwrap_or(0);
        let recorded = read_newest_mark(&self.dir)?;
        let loaded = self.snapshot().keys().next_back().copied();
        if let Some(previous) = recorded.max(loaded).filter(|v| *v > newest) {
            // A key_id never flips back: a removed current version is an operator's mistake
            // (or a revocation the local provider does not model), not a rotation. The mark
            // on disk catches it across restarts, the loaded ring if the mark went too.
            return Err(ProviderError::Misconfigured {
                reason: format!(
                    "key version {previous} disappeared from {}; kube-kms never returns to an \
                     older key_id — restore v{previous}.key, or run `kube-kms keys rotate`",
                    self.dir.display()
                ),
            });
        }
        if recorded.is_none_or(|recorded| recorded < newest) {
            // A ring written before the mark existed, or a key file copied in by hand.
            raise_newest_mark(&self.dir, newest)?;
        }
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
        Ok(current)
    }

    fn snapshot(&self) -> Arc<BTreeMap<u32, RootKey>> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

#[async_trait]
impl KeyProvider for LocalKeyRing {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn identity(&self) -> Option<KeyIdentity> {
        let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        Some(KeyIdentity::Local { dir })
    }

    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        self.reload()
    }

    async fn current_key(&self) -> Option<KeyVersion> {
        self.snapshot()
            .values()
            .next_back()
            .map(|root| root.key_version.clone())
    }

    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        let keys = self.snapshot();
        let root = parse_version(key.version())
            .and_then(|version| keys.get(&version))
            .filter(|root| root.key_version == *key)
            .ok_or_else(|| ProviderError::UnknownKeyVersion {
                version: key.version().into(),
            })?;
        let mut wrapped = Vec::new();
        // A root key seals across restarts and replicas: its nonces are random, not counted.
        root.gcm
            .seal_into(
                Nonce::random()?,
                &wrap_aad(key.version()),
                kek.expose(),
                &mut wrapped,
            )
            .map_err(|error| ProviderError::Misconfigured {
                reason: error.to_string(),
            })?;
        Ok(wrapped)
    }

    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        let keys = self.snapshot();
        let root = parse_version(version)
            .and_then(|number| keys.get(&number))
            .ok_or_else(|| ProviderError::UnknownKeyVersion {
                version: version.into(),
            })?;
        let kek = root
            .gcm
            .open(&wrap_aad(version), wrapped)
            .ok()
            .and_then(|bytes| SecretKey::from_slice(&bytes))
            .ok_or_else(|| ProviderError::UnwrapFailed {
                version: version.into(),
            })?;
        Ok(kek)
    }

    async fn health(&self) -> ProviderHealth {
        ProviderHealth::Ok
    }
}

/// Lists the versions in the key ring at `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<KeyRingEntry>, ProviderError> {
    scan(dir)?
        .into_iter()
        .map(|(version, path)| {
            let (id, _key) = read_key_file(&path)?;
            let created = fs::metadata(&path).and_then(|meta| meta.modified()).ok();
            Ok(KeyRingEntry {
                version,
                key_id: key_id(version, &id),
                created,
            })
        })
        .collect()
}

/// Parses a version name as written by this provider: a decimal number without leading zeros.
fn parse_version(version: &str) -> Option<u32> {
    let well_formed = !version.is_empty()
        && version.len() <= 10
        && version.bytes().all(|b| b.is_ascii_digit())
        && !version.starts_with('0');
    if well_formed {
        version.parse().ok()
    } else {
        None
    }
}

fn key_id(version: u32, id: &[u8; ID_LEN]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(KEY_ID_LABEL);
    hasher.update(version.to_string().as_bytes());
    hasher.update(b"\0");
    hasher.update(id);
    hex::encode(hasher.finalize())
}

fn wrap_aad(version: &str) -> Vec<u8> {
    [WRAP_AAD_LABEL, version.as_bytes()].concat()
}

fn io_error(action: &str, path: &Path, error: io::Error) -> ProviderError {
    ProviderError::Misconfigured {
        reason: format!("cannot {action} {}: {error}", path.display()),
    }
}

/// Creates `dir` with mode 0700, or checks that an existing one is a directory that only its
/// owner can enter. Never changes the mode of a directory it did not create.
fn ensure_private_dir(dir: &Path) -> Result<(), ProviderError> {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(ProviderError::Misconfigured {
            reason: format!(
                "key ring path {} exists and is not a directory",
                dir.display()
            ),
        }),
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => Err(ProviderError::Misconfigured {
            reason: format!(
                "key ring directory {} has mode {:04o}; it must be reachable by its owner only \
                 (chmod 700 {})",
                dir.display(),
                meta.permissions().mode() & 0o7777,
                dir.display()
            ),
        }),
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(|e| io_error("create", parent, e))?;
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_error("create key ring directory", dir, e))
        }
        Err(error) => Err(io_error("inspect key ring directory", dir, error)),
    }
}

/// The key files in `dir` by version. Other names are ignored (temporary files start with '.').
fn scan(dir: &Path) -> Result<BTreeMap<u32, PathBuf>, ProviderError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("read key ring directory", dir, e))?;
    let mut found = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("read key ring directory", dir, e))?;
        let name = entry.file_name();
        let version = name
            .to_str()
            .and_then(|name| name.strip_prefix('v')?.strip_suffix(".key"))
            .and_then(parse_version);
        if let Some(version) = version {
            found.insert(version, entry.path());
        }
    }
    Ok(found)
}

fn read_key_file(path: &Path) -> Result<([u8; ID_LEN], SecretKey), ProviderError> {
    let mut file = fs::File::open(path).map_err(|e| io_error("open key file", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| io_error("inspect key file", path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(ProviderError::Misconfigured {
            reason: format!(
                "key file {} has mode {:04o}; it must be readable by its owner only (chmod 600 {})",
                path.display(),
                meta.permissions().mode() & 0o7777,
                path.display()
            ),
        });
    }
    let mut contents = Zeroizing::new(Vec::with_capacity(FILE_LEN + 1));
    Read::by_ref(&mut file)
        .take(FILE_LEN as u64 + 1)
        .read_to_end(&mut contents)
        .map_err(|e| io_error("read key file", path, e))?;
    if contents.len() != FILE_LEN || !contents.starts_with(FILE_MAGIC) {
        return Err(ProviderError::Misconfigured {
            reason: format!(
                "key file {} is not a kube-kms local key ({} bytes; expected {FILE_LEN} starting \
                 with {:?})",
                path.display(),
                contents.len(),
                String::from_utf8_lossy(FILE_MAGIC)
            ),
        });
    }
    let (id, key) = contents[FILE_MAGIC.len()..].split_at(ID_LEN);
    let id: [u8; ID_LEN] = id.try_into().map_err(|_| ProviderError::Random)?;
    let key = SecretKey::from_slice(key).ok_or(ProviderError::Random)?;
    Ok((id, key))
}

/// Writes the next version's key file without ever replacing an existing one: the key is
/// written to a temporary file, synced, then hard-linked to its final name (which fails if
/// another writer got there first).
fn write_next_key(dir: &Path) -> Result<u32, ProviderError> {
    let present = scan(dir)?.keys().next_back().copied();
    let next = present
        .max(read_newest_mark(dir)?)
        .map_or(1, |last| last + 1);
    let key = SecretKey::generate()?;
    let mut id = [0u8; ID_LEN];
    fill_random(&mut id)?;
    let mut contents = Zeroizing::new(Vec::with_capacity(FILE_LEN));
    contents.extend_from_slice(FILE_MAGIC);
    contents.extend_from_slice(&id);
    contents.extend_from_slice(key.expose());

    let temporary = dir.join(format!(".v{next}.key.{}.tmp", std::process::id()));
    let final_path = dir.join(format!("v{next}.key"));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(&contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::hard_link(&temporary, &final_path));
    let _ = fs::remove_file(&temporary);
    written.map_err(|e| io_error("write key file", &final_path, e))?;
    raise_newest_mark(dir, next)?;
    if let Ok(directory) = fs::File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok(next)
}

/// The highest version the key ring records having had, if it records one.
fn read_newest_mark(dir: &Path) -> Result<Option<u32>, ProviderError> {
    let path = dir.join(NEWEST_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            parse_version(text.trim())
                .map(Some)
                .ok_or_else(|| ProviderError::Misconfigured {
                    reason: format!(
                        "{} holds {:?}, not a key version number; restore it or write the highest \
                     version the ring ever had",
                        path.display(),
                        text.trim()
                    ),
                })
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error("read", &path, error)),
    }
}

/// Records `version` as the highest the ring ever had, unless a higher one is recorded: written
/// to a temporary file and renamed over the old mark, so a reader sees one whole number.
fn raise_newest_mark(dir: &Path, version: u32) -> Result<(), ProviderError> {
    if read_newest_mark(dir)?.is_some_and(|recorded| recorded >= version) {
        return Ok(());
    }
    let path = dir.join(NEWEST_FILE);
    let temporary = dir.join(format!(".{NEWEST_FILE}.{}.tmp", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            writeln!(file, "{version}")?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, &path));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written.map_err(|e| io_error("write", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (tempfile::TempDir, PathBuf) {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("keys");
        (temp, dir)
    }

    #[tokio::test]
    async fn first_open_creates_a_private_ring_with_one_version() {
        let (_temp, dir) = ring();
        let provider = LocalKeyRing::open_or_create(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let file = fs::metadata(dir.join("v1.key")).unwrap();
        assert_eq!(file.permissions().mode() & 0o777, 0o600);
        assert_eq!(file.len() as usize, FILE_LEN);
        let current = provider.current_key().await.unwrap();
        assert_eq!(current.version(), "1");
        assert_eq!(current.key_id().len(), 64);
    }

    #[tokio::test]
    async fn wrap_unwrap_round_trip_and_wrong_version_fails() {
        let (_temp, dir) = ring();
        let provider = LocalKeyRing::open_or_create(&dir).unwrap();
        let v1 = provider.current_key().await.unwrap();
        LocalKeyRing::rotate(&dir).unwrap();
        let v2 = provider.refresh().await.unwrap();
        assert_eq!(v2.version(), "2");
        assert_ne!(v1.key_id(), v2.key_id());

        let kek = SecretKey::generate().unwrap();
        let wrapped = provider.wrap(&v1, &kek).await.unwrap();
        let unwrapped = provider.unwrap("1", &wrapped).await.unwrap();
        assert_eq!(unwrapped.expose(), kek.expose());
        assert!(matches!(
            provider.unwrap("2", &wrapped).await,
            Err(ProviderError::UnwrapFailed { .. })
        ));
        for bad in ["3", "01", "", "1 ", "-1", "99999999999", "v1"] {
            assert!(
                matches!(
                    provider.unwrap(bad, &wrapped).await,
                    Err(ProviderError::UnknownKeyVersion { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn removing_the_current_version_never_flips_the_key_id_back() {
        let (_temp, dir) = ring();
        let provider = LocalKeyRing::open_or_create(&dir).unwrap();
        LocalKeyRing::rotate(&dir).unwrap();
        let v2 = provider.refresh().await.unwrap();
        fs::remove_file(dir.join("v2.key")).unwrap();
        let error = provider.refresh().await.unwrap_err().to_string();
        assert!(error.contains("key version 2 disappeared"), "{error}");
        assert_eq!(provider.current_key().await.unwrap(), v2);
        let v3 = LocalKeyRing::rotate(&dir).unwrap();
        assert_eq!(v3.version, 3, "a version number is never written twice");
        let current = provider.refresh().await.unwrap();
        assert_eq!(current.version(), "3");
        assert_ne!(current.key_id(), v2.key_id());
    }

    /// Regression: the loaded ring alone guarded against a flip-back, so a restart after the
    /// current key file was removed served the previous version's key_id again.
    #[tokio::test]
    async fn a_restart_after_the_current_version_was_removed_never_flips_the_key_id_back() {
        let (_temp, dir) = ring();
        let v1 = LocalKeyRing::open_or_create(&dir)
            .unwrap()
            .current_key()
            .await
            .unwrap();
        let v2 = LocalKeyRing::rotate(&dir).unwrap();
        fs::remove_file(dir.join("v2.key")).unwrap();
        let error = LocalKeyRing::open_or_create(&dir)
            .err()
            .expect("a restart refuses the older version")
            .to_string();
        assert!(error.contains("key version 2 disappeared"), "{error}");
        let v3 = LocalKeyRing::rotate(&dir).unwrap();
        let current = LocalKeyRing::open_or_create(&dir)
            .unwrap()
            .current_key()
            .await
            .unwrap();
        assert_eq!(current.version(), "3");
        assert!(current.key_id() != v1.key_id() && current.key_id() != v2.key_id);
        assert_eq!(current.key_id(), v3.key_id);
    }

    #[test]
    fn a_ring_written_before_the_mark_gets_one_on_open() {
        let (_temp, dir) = ring();
        LocalKeyRing::open_or_create(&dir).unwrap();
        LocalKeyRing::rotate(&dir).unwrap();
        fs::remove_file(dir.join(NEWEST_FILE)).unwrap();
        LocalKeyRing::open_or_create(&dir).unwrap();
        assert_eq!(read_newest_mark(&dir).unwrap(), Some(2));
        fs::write(dir.join(NEWEST_FILE), "two\n").unwrap();
        let error = LocalKeyRing::open_or_create(&dir)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("not a key version number"), "{error}");
    }

    #[test]
    fn a_recreated_ring_never_repeats_a_key_id() {
        let (_temp, dir) = ring();
        LocalKeyRing::open_or_create(&dir).unwrap();
        let first = list(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        LocalKeyRing::open_or_create(&dir).unwrap();
        let second = list(&dir).unwrap();
        assert_eq!(first[0].version, second[0].version);
        assert_ne!(first[0].key_id, second[0].key_id);
    }

    #[test]
    fn loose_permissions_are_refused_with_the_fix() {
        let (_temp, dir) = ring();
        LocalKeyRing::open_or_create(&dir).unwrap();
        fs::set_permissions(dir.join("v1.key"), fs::Permissions::from_mode(0o644)).unwrap();
        let error = LocalKeyRing::open_or_create(&dir)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("chmod 600"), "{error}");

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let error = LocalKeyRing::open_or_create(&dir)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("chmod 700"), "{error}");
    }

    #[test]
    fn a_truncated_key_file_is_named_in_the_error() {
        let (_temp, dir) = ring();
        LocalKeyRing::open_or_create(&dir).unwrap();
        fs::write(dir.join("v1.key"), b"KKMS-LK1short").unwrap();
        let error = LocalKeyRing::open_or_create(&dir)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("v1.key") && error.contains("13 bytes"),
            "{error}"
        );
    }
}
