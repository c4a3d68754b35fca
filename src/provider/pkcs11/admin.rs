//! `kube-kms keys` for the PKCS#11 provider: create the configured key on the token, and list
//! the configured keys with their key_ids and wrapping mechanisms.
//!
//! These are one-shot operator commands, not part of the serving path. Creating a key never
//! replaces or touches an existing object: a label that is already taken is refused. The keys
//! created are token objects that never leave it (CKA_SENSITIVE, not CKA_EXTRACTABLE). Listing
//! looks up only the configured labels.

use std::sync::Arc;

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::{Session, UserType};

use super::token::{
    Failure, Mechanisms, TokenIdentity, find_slot, initialised_module, is_rv, resolve_key,
};
use super::{Pin, Pkcs11Config};
use crate::crypto::fill_random;
use crate::provider::ProviderError;

/// The kind of key `kube-kms keys create` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKeyType {
    /// An AES-256 secret key (wraps with CKM_AES_KEY_WRAP_PAD, or AES-GCM).
    Aes256,
    /// An RSA key pair of this many bits (wraps with CKM_RSA_PKCS_OAEP).
    Rsa(u32),
}

/// A configured key as `kube-kms keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredKey {
    /// The key label (the key version in the annotations).
    pub label: String,
    /// Whether this is the key that wraps new KEKs (else decrypt-only).
    pub current: bool,
    /// The key_id, when the key was found.
    pub key_id: Option<String>,
    /// The key's type and mechanism, or why it cannot be used.
    pub detail: String,
}

struct Opened {
    session: Session,
    identity: TokenIdentity,
    mechanisms: Mechanisms,
    description: String,
}

fn open(config: &Pkcs11Config, read_write: bool) -> Result<Opened, ProviderError> {
    let pkcs11 = initialised_module(&config.module)?;
    let slot = find_slot(&pkcs11, &config.token, &config.module)?;
    let failed = |operation: &str, error: cryptoki::error::Error| ProviderError::Unavailable {
        operation: operation.to_owned(),
        source: Arc::new(error),
    };
    let info = pkcs11
        .get_token_info(slot)
        .map_err(|e| failed("read token information", e))?;
    let identity = TokenIdentity {
        serial: info.serial_number().to_owned(),
        label: info.label().to_owned(),
    };
    let description = format!("token {:?} (serial {})", identity.label, identity.serial);
    if info.user_pin_locked() {
        return Err(ProviderError::Misconfigured {
            reason: format!("the user PIN of {description} is locked"),
        });
    }
    let pin = Pin::read(&config.pin)?;
    let session = if read_write {
        pkcs11.open_rw_session(slot)
    } else {
        pkcs11.open_ro_session(slot)
    }
    .map_err(|e| failed("open a session", e))?;
    match session.login(UserType::User, Some(&pin.auth_pin())) {
        Ok(()) => {}
        Err(error) if is_rv(&error, RvError::UserAlreadyLoggedIn) => {}
        Err(error) => {
            return Err(ProviderError::Misconfigured {
                reason: format!(
                    "cannot log in to {description} with the PIN from the {}: {error}",
                    config.pin
                ),
            });
        }
    }
    Ok(Opened {
        session,
        identity,
        mechanisms: Mechanisms::query(&pkcs11, slot),
        description,
    })
}

fn into_provider_error(failure: Failure, operation: &str) -> ProviderError {
    match failure {
        Failure::Provider(error) => error,
        Failure::Token(error) => ProviderError::Unavailable {
            operation: operation.to_owned(),
            source: Arc::new(error),
        },
    }
}

/// Creates the key named by `config.key_label` on the token, with a random CKA_ID, and
/// returns it as `keys list` would show it. Refuses a label that any object already has.
pub async fn create_key(
    config: &Pkcs11Config,
    kind: NewKeyType,
) -> Result<ConfiguredKey, ProviderError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || create_key_blocking(&config, kind))
        .await
        .map_err(|join| ProviderError::Unavailable {
            operation: "create a key".into(),
            source: Arc::new(join),
        })?
}

fn create_key_blocking(
    config: &Pkcs11Config,
    kind: NewKeyType,
) -> Result<ConfiguredKey, ProviderError> {
    let opened = open(config, true)?;
    let session = &opened.session;
    let label = config.key_label.as_str();
    let taken = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| into_provider_error(e.into(), "look for an existing key"))?;
    if !taken.is_empty() {
        return Err(ProviderError::Misconfigured {
            reason: format!(
                "{} already holds {} object(s) labelled {label:?}; a new key needs a new label \
                 (set pkcs11.key_label and move the old one to decrypt_only_key_labels)",
                opened.description,
                taken.len()
            ),
        });
    }
    let mut id = vec![0u8; 16];
    fill_random(&mut id)?;
    let common = [
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    let private = [
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
    ];
    let generated = match kind {
        NewKeyType::Aes256 => {
            let template: Vec<Attribute> = common
                .iter()
                .chain(&private)
                .cloned()
                .chain([
                    Attribute::ValueLen(32.into()),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ])
                .collect();
            session
                .generate_key(&Mechanism::AesKeyGen, &template)
                .map(|_| ())
        }
        NewKeyType::Rsa(bits) => {
            let public: Vec<Attribute> = common
                .iter()
                .cloned()
                .chain([
                    Attribute::ModulusBits(u64::from(bits).into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    Attribute::Encrypt(true),
                    Attribute::Wrap(true),
                    Attribute::Verify(false),
                ])
                .collect();
            let private: Vec<Attribute> = common
                .iter()
                .chain(&private)
                .cloned()
                .chain([
                    Attribute::Decrypt(true),
                    Attribute::Unwrap(true),
                    Attribute::Sign(false),
                ])
                .collect();
            session
                .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
                .map(|_| ())
        }
    };
    generated.map_err(|error| ProviderError::Misconfigured {
        reason: format!(
            "{} could not generate the key labelled {label:?}: {error}",
            opened.description
        ),
    })?;
    tracing::info!(token = %opened.description, key_label = label, "created a key on the token");
    Ok(describe(&opened, label, true))
}

/// The configured keys (current first) as found on the token.
pub async fn list_keys(config: &Pkcs11Config) -> Result<Vec<ConfiguredKey>, ProviderError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let opened = open(&config, false)?;
        Ok(config
            .labels()
            .enumerate()
            .map(|(index, label)| describe(&opened, label, index == 0))
            .collect())
    })
    .await
    .map_err(|join| ProviderError::Unavailable {
        operation: "list keys".into(),
        source: Arc::new(join),
    })?
}

fn describe(opened: &Opened, label: &str, current: bool) -> ConfiguredKey {
    match resolve_key(
        &opened.session,
        &opened.identity,
        opened.mechanisms,
        &opened.description,
        label,
    ) {
        Ok(key) => ConfiguredKey {
            label: label.to_owned(),
            current,
            key_id: Some(key.version.key_id().to_owned()),
            detail: key.describe(),
        },
        Err(failure) => ConfiguredKey {
            label: label.to_owned(),
            current,
            key_id: None,
            detail: into_provider_error(failure, "look up the key").to_string(),
        },
    }
}
