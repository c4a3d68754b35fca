//! The PKCS#11 provider: local KEKs wrapped by a key that lives on a hardware (or SoftHSM)
//! token, reached through the token vendor's PKCS#11 module with the `cryptoki` crate.
//!
//! The configuration names the module, the token (by label or slot), where the user PIN comes
//! from (a file or the name of an environment variable, never a flag) and the key labels: one
//! current label that wraps new KEKs and any number of decrypt-only labels kept after a
//! rotation. A key label names either one AES-256 secret key — wrapping with
//! CKM_AES_KEY_WRAP_PAD when the token and key allow it, AES-GCM otherwise — or one RSA key
//! pair (≥ 2048 bits), wrapping with CKM_RSA_PKCS_OAEP (SHA-256, or SHA-1 on tokens such as
//! SoftHSM 2.6 that reject SHA-256 OAEP parameters). The key version written into the
//! annotations is the key label; the key_id is the lowercase hex SHA-256 of the token's and the
//! key's identity (see [`key_id`]), so it changes whenever the configured key does.
//!
//! This module never resolves a key version outside its configuration: a label read from etcd
//! that is not configured is [`ProviderError::UnknownKeyVersion`] without a single call to the
//! token. It never logs or formats the PIN or key bytes, never logs in again with a PIN the
//! token has refused (tokens lock out after a few tries), and never calls the token on an async
//! worker thread: every PKCS#11 call runs under `spawn_blocking`.

mod admin;
mod mechanism;
mod token;
mod wrapping;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{KeyIdentity, KeyProvider, KeyVersion, ProviderError, ProviderHealth};
use crate::crypto::SecretKey;

pub use admin::{ConfiguredKey, NewKeyType, create_key, list_keys};
pub use token::TokenCounters;
use token::{ResolvedKey, Token};

/// The longest key label accepted: printable ASCII without spaces, so that it can travel as
/// the key version in the annotations.
pub const MAX_KEY_LABEL_LEN: usize = 128;
/// The longest PIN read from a file or an environment variable, in bytes.
pub const MAX_PIN_LEN: usize = 255;
const KEY_ID_LABEL: &[u8] = b"kube-kms/pkcs11-key/v1\0";
/// How long a wrap or unwrap may wait for the token, inside kube-apiserver's 3 s call timeout.
const CALL_DEADLINE: Duration = Duration::from_secs(2);
/// How long a refresh (which may log in and look keys up) may take.
const REFRESH_DEADLINE: Duration = Duration::from_secs(20);

/// Which token on the module to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token whose label is this (PKCS#11 labels are at most 32 bytes, blank-padded).
    Label(String),
    /// The token in this slot. SoftHSM renumbers slots; prefer a label there.
    Slot(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(label) => write!(f, "token {label:?}"),
            Self::Slot(slot) => write!(f, "the token in slot {slot}"),
        }
    }
}

/// Where the user PIN is read from. Holds a path or a variable name, never the PIN itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN; one trailing newline is ignored.
    File(PathBuf),
    /// The name of an environment variable holding the PIN.
    Env(String),
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "PIN file {}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// The PKCS#11 provider's validated configuration (built by `config.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library), an absolute path.
    pub module: PathBuf,
    /// Which token.
    pub token: TokenSelector,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// The label of the key that wraps new KEKs.
    pub key_label: String,
    /// Labels of earlier keys, kept to unwrap KEKs they wrapped; never used to wrap.
    pub decrypt_only_key_labels: Vec<String>,
}

impl Pkcs11Config {
    /// Every configured label, the current one first.
    fn labels(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key_label.as_str())
            .chain(self.decrypt_only_key_labels.iter().map(String::as_str))
    }

    /// Whether `version` (read from etcd) is one of the configured labels.
    fn is_configured(&self, version: &str) -> bool {
        self.labels().any(|label| label == version)
    }
}

/// Whether `label` can be a key label: 1..=128 printable ASCII bytes without spaces.
pub fn is_valid_key_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_KEY_LABEL_LEN
        && label.bytes().all(|b| b.is_ascii_graphic())
}

/// The user PIN. Zeroized on drop; its `Debug` never shows it; it has no `Display`.
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Reads the PIN from `source`. Errors name the file or variable, never its contents.
    pub fn read(source: &PinSource) -> Result<Self, ProviderError> {
        let text = match source {
            PinSource::File(path) => read_pin_file(path)?,
            PinSource::Env(name) => match std::env::var(name) {
                Ok(value) => Zeroizing::new(value),
                Err(std::env::VarError::NotPresent) => {
                    return Err(misconfigured(format!(
                        "the PIN variable {name} is not set in kube-kms's environment"
                    )));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(misconfigured(format!(
                        "the PIN variable {name} is not valid UTF-8"
                    )));
                }
            },
        };
        if text.is_empty() || text.len() > MAX_PIN_LEN {
            return Err(misconfigured(format!(
                "the {source} holds {} bytes; a PIN is 1..={MAX_PIN_LEN} bytes",
                text.len()
            )));
        }
        Ok(Self(text))
    }

    /// The PIN in the form cryptoki logs in with (itself zeroized on drop).
    fn auth_pin(&self) -> cryptoki::types::AuthPin {
        cryptoki::types::AuthPin::from(self.0.as_str())
    }

    /// Constant-time comparison, to recognise a PIN the token already refused.
    fn same_as(&self, other: &Pin) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.as_bytes().ct_eq(other.0.as_bytes()))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin([redacted])")
    }
}

fn read_pin_file(path: &Path) -> Result<Zeroizing<String>, ProviderError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    let mut file = std::fs::File::open(path)
        .map_err(|e| misconfigured(format!("cannot open PIN file {}: {e}", path.display())))?;
    if let Ok(meta) = file.metadata()
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:04o}", meta.permissions().mode() & 0o7777),
            "the PIN file is readable by other users; chmod 600 it"
        );
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_PIN_LEN + 3));
    Read::by_ref(&mut file)
        .take(MAX_PIN_LEN as u64 + 3)
        .read_to_end(&mut bytes)
        .map_err(|e| misconfigured(format!("cannot read PIN file {}: {e}", path.display())))?;
    let trimmed = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(&bytes);
    let text = std::str::from_utf8(trimmed).map_err(|_| {
        misconfigured(format!(
            "PIN file {} is not valid UTF-8 text",
            path.display()
        ))
    })?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn misconfigured(reason: String) -> ProviderError {
    ProviderError::Misconfigured { reason }
}

/// The key_id of a key on a token: lowercase hex SHA-256 of a label and, each prefixed with
/// its length as a 32-bit big-endian number, the token's serial number and label, the key
/// label, the key's CKA_ID and a public fingerprint of the key (an AES key's CKA_CHECK_VALUE
/// when the token has one, an RSA key's modulus and exponent). Never the PIN, never key bytes.
pub fn key_id(
    token_serial: &str,
    token_label: &str,
    key_label: &str,
    cka_id: &[u8],
    fingerprint: &[u8],
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(KEY_ID_LABEL);
    for field in [
        token_serial.as_bytes(),
        token_label.as_bytes(),
        key_label.as_bytes(),
        cka_id,
        fingerprint,
    ] {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        hasher.update(len.to_be_bytes());
        hasher.update(field);
    }
    hex::encode(hasher.finalize())
}

/// What the provider knows without calling the token.
#[derive(Default)]
struct Status {
    /// The current key as of the last successful refresh.
    current: Option<KeyVersion>,
    /// Why the last refresh failed, if it did, and whether the token said the key is gone.
    refresh_failure: Option<(String, bool)>,
    /// Why the last token call failed for lack of the token, cleared by the next success.
    token_fault: Option<String>,
}

/// The PKCS#11 key provider.
pub struct Pkcs11Provider {
    inner: Arc<Inner>,
}

struct Inner {
    config: Pkcs11Config,
    token: Token,
    status: Mutex<Status>,
}

impl Pkcs11Provider {
    /// Loads the module, finds the token, logs in and resolves the configured keys. Fails when
    /// the current key cannot wrap; a missing decrypt-only key is only logged.
    pub async fn open(config: Pkcs11Config) -> Result<Self, ProviderError> {
        let provider = Self::new(config);
        provider.refresh().await?;
        Ok(provider)
    }

    /// A provider that has not reached the token yet: the first `refresh` (or wrap, or unwrap)
    /// loads the module and logs in. [`Pkcs11Provider::open`] is what the plugin uses.
    pub fn new(config: Pkcs11Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                token: Token::new(&config),
                config,
                status: Mutex::new(Status::default()),
            }),
        }
    }

    /// The configuration this provider was opened with.
    pub fn config(&self) -> &Pkcs11Config {
        &self.inner.config
    }

    /// Counters of token activity, for metrics and for tests that prove a request did not
    /// reach the token.
    pub fn counters(&self) -> TokenCounters {
        self.inner.token.counters()
    }

    async fn blocking<T, F>(
        &self,
        operation: String,
        deadline: Duration,
        work: F,
    ) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, ProviderError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let task = tokio::task::spawn_blocking(move || work(&inner));
        let result = match tokio::time::timeout(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(ProviderError::Unavailable {
                operation: operation.clone(),
                source: Arc::new(join),
            }),
            Err(elapsed) => Err(ProviderError::Unavailable {
                operation: operation.clone(),
                source: Arc::new(elapsed),
            }),
        };
        let mut status = self.lock_status();
        match &result {
            Err(ProviderError::Unavailable { .. }) => {
                status.token_fault = result.as_ref().err().map(ToString::to_string);
            }
            Err(ProviderError::Misconfigured { reason }) if reason.contains("PIN") => {
                status.token_fault = Some(reason.clone());
            }
            _ => status.token_fault = None,
        }
        result
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.inner
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Resolves `label` (which the caller has checked is configured) on the token.
    fn resolve(&self, label: &str, fresh: bool) -> Result<Arc<ResolvedKey>, ProviderError> {
        self.token
            .run(&format!("look up key {label:?}"), |session| {
                session.resolve(label, fresh)
            })
    }
}

#[async_trait]
impl KeyProvider for Pkcs11Provider {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    /// A refresh may log in and look keys up: it gets its own deadline, not one call's.
    fn refresh_budget(&self) -> Option<std::time::Duration> {
        Some(REFRESH_DEADLINE)
    }

    fn identity(&self) -> Option<KeyIdentity> {
        let config = &self.inner.config;
        Some(KeyIdentity::Pkcs11 {
            module: config.module.clone(),
            token: config.token.to_string(),
            key_label: config.key_label.clone(),
        })
    }

    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        let label = self.inner.config.key_label.clone();
        let result = self
            .blocking(
                format!("refresh key {label:?}"),
                REFRESH_DEADLINE,
                move |inner| {
                    let current = inner.resolve(&label, true)?;
                    if current.wrap_mechanism().is_none() {
                        return Err(misconfigured(format!(
                            "key {label:?} on {} can neither wrap (CKA_WRAP with \
                             CKM_AES_KEY_WRAP_PAD) nor encrypt (CKA_ENCRYPT with AES-GCM or \
                             RSA-OAEP); create it with `kube-kms keys create`",
                            inner.token.describe()
                        )));
                    }
                    for old in &inner.config.decrypt_only_key_labels {
                        if let Err(error) = inner.resolve(old, true) {
                            tracing::warn!(
                                key_label = %old,
                                %error,
                                "a decrypt-only key is not usable; KEKs it wrapped will not unwrap"
                            );
                        }
                    }
                    Ok(current.version.clone())
                },
            )
            .await;
        let mut status = self.lock_status();
        match &result {
            Ok(version) => {
                status.current = Some(version.clone());
                status.refresh_failure = None;
            }
            Err(error) => {
                let revoked = matches!(error, ProviderError::Revoked { .. });
                status.refresh_failure = Some((error.to_string(), revoked));
            }
        }
        result
    }

    async fn current_key(&self) -> Option<KeyVersion> {
        self.lock_status().current.clone()
    }

    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        if key.version() != self.inner.config.key_label {
            return Err(ProviderError::UnknownKeyVersion {
                version: key.version().into(),
            });
        }
        let key = key.clone();
        let kek = kek.clone();
        self.blocking(
            format!("wrap with key {:?}", key.version()),
            CALL_DEADLINE,
            move |inner| {
                inner
                    .token
                    .run(&format!("wrap with key {:?}", key.version()), |session| {
                        let resolved = session.resolve(key.version(), false)?;
                        if resolved.version != key {
                            // The token's key changed since the envelope read it: the caller
                            // must refresh first, or its key_id would name another key.
                            return Err(token::Failure::Provider(
                                ProviderError::UnknownKeyVersion {
                                    version: key.version().into(),
                                },
                            ));
                        }
                        wrapping::wrap(session, &resolved, &kek)
                    })
            },
        )
        .await
    }

    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        self.check_unwrap(version, wrapped)?;
        let version = version.to_owned();
        let wrapped = wrapped.to_vec();
        self.blocking(
            format!("unwrap with key {version:?}"),
            CALL_DEADLINE,
            move |inner| {
                let parsed = wrapping::parse(&version, &wrapped)?;
                inner
                    .token
                    .run(&format!("unwrap with key {version:?}"), |session| {
                        let resolved = session.resolve(&version, false)?;
                        wrapping::unwrap(session, &resolved, &parsed)
                    })
            },
        )
        .await
    }

    fn check_unwrap(&self, version: &str, wrapped: &[u8]) -> Result<(), ProviderError> {
        // Attacker input: resolved within the configuration, before anything reaches the token.
        if !self.inner.config.is_configured(version) {
            return Err(ProviderError::UnknownKeyVersion {
                version: version.into(),
            });
        }
        wrapping::parse(version, wrapped).map(|_| ())
    }

    async fn health(&self) -> ProviderHealth {
        let status = self.lock_status();
        match (&status.refresh_failure, &status.token_fault) {
            (Some((reason, true)), _) => ProviderHealth::Revoked {
                reason: reason.clone(),
            },
            (Some((reason, false)), _) | (None, Some(reason)) => ProviderHealth::Degraded {
                reason: reason.clone(),
            },
            (None, None) => ProviderHealth::Ok,
        }
    }
}

impl fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Pkcs11Config {
        Pkcs11Config {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token: TokenSelector::Label("kube-kms".into()),
            pin: PinSource::Env("KUBE_KMS_TEST_PIN_THAT_IS_NOT_SET".into()),
            key_label: "kek-2".into(),
            decrypt_only_key_labels: vec!["kek-1".into()],
        }
    }

    #[test]
    fn only_configured_labels_are_key_versions() {
        let config = config();
        assert!(config.is_configured("kek-2"));
        assert!(config.is_configured("kek-1"));
        for outside in ["kek-3", "", "kek-1 ", "KEK-1", "kek", "kek-10"] {
            assert!(!config.is_configured(outside), "{outside:?}");
        }
    }

    #[test]
    fn key_labels_must_be_printable_ascii_without_spaces() {
        assert!(is_valid_key_label("kube-kms-kek-2025.1"));
        for bad in ["", "a b", "é", "tab\t", &"x".repeat(129)] {
            assert!(!is_valid_key_label(bad), "{bad:?}");
        }
        assert!(is_valid_key_label(&"x".repeat(128)));
    }

    #[test]
    fn key_id_is_lowercase_hex_sha256_and_every_field_counts() {
        let base = key_id("serial", "token", "kek-1", b"\x01", b"kcv");
        assert_eq!(base.len(), 64);
        assert!(
            base.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(base, key_id("serial", "token", "kek-1", b"\x01", b"kcv"));
        let changed = [
            key_id("serial2", "token", "kek-1", b"\x01", b"kcv"),
            key_id("serial", "token2", "kek-1", b"\x01", b"kcv"),
            key_id("serial", "token", "kek-2", b"\x01", b"kcv"),
            key_id("serial", "token", "kek-1", b"\x02", b"kcv"),
            key_id("serial", "token", "kek-1", b"\x01", b"kcw"),
            // Length prefixes: moving a byte from one field to the next changes the id.
            key_id("seria", "ltoken", "kek-1", b"\x01", b"kcv"),
        ];
        for other in changed {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn the_pin_is_read_from_a_file_without_its_newline_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "s3cret-PIN\n").unwrap();
        let pin = Pin::read(&PinSource::File(path.clone())).unwrap();
        assert_eq!(pin.0.as_str(), "s3cret-PIN");
        assert!(!format!("{pin:?}").contains("s3cret"));

        std::fs::write(&path, "s3cret-PIN\r\n").unwrap();
        let same = Pin::read(&PinSource::File(path.clone())).unwrap();
        assert!(pin.same_as(&same));
        std::fs::write(&path, "other").unwrap();
        assert!(!pin.same_as(&Pin::read(&PinSource::File(path.clone())).unwrap()));

        std::fs::write(&path, "\n").unwrap();
        let error = Pin::read(&PinSource::File(path.clone()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("0 bytes"), "{error}");
        let error = Pin::read(&PinSource::File(dir.path().join("missing")))
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing"), "{error}");
    }

    #[test]
    fn a_missing_pin_variable_is_named() {
        let error = Pin::read(&PinSource::Env("KUBE_KMS_TEST_PIN_THAT_IS_NOT_SET".into()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("KUBE_KMS_TEST_PIN_THAT_IS_NOT_SET"),
            "{error}"
        );
    }
}
