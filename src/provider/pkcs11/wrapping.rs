//! How a local KEK is wrapped on a PKCS#11 token, and the bytes that travel in the annotations.
//!
//! ```text
//! wrapped KEK = mechanism(1) ‖ payload
//!   0x01 CKM_AES_KEY_WRAP_PAD (RFC 5649)       payload = 40 bytes
//!   0x02 CKM_AES_GCM                           payload = iv(12) ‖ ciphertext(32) ‖ tag(16)
//!        AAD = "kube-kms/pkcs11-wrap/v1\0" ‖ key label
//!   0x03 CKM_RSA_PKCS_OAEP, SHA-256, MGF1-SHA-256, no label   payload = modulus length
//!   0x04 CKM_RSA_PKCS_OAEP, SHA-1, MGF1-SHA-1, no label       payload = modulus length
//! ```
//!
//! The mechanism byte is read from etcd, so it is attacker input: it is checked against the
//! key's type and every length is checked before the token sees anything, and a wrapped KEK
//! that does not unwrap is [`ProviderError::UnwrapFailed`] whatever the token's reason. The GCM
//! IV comes from the OS CSPRNG, never from the caller. Unwrapped key bytes go straight into a
//! zeroizing buffer and then into a [`SecretKey`]; the temporary token objects that carry a
//! KEK through C_WrapKey and C_UnwrapKey are session objects, destroyed before returning.

use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::{Zeroize, Zeroizing};

use super::mechanism::WrapMechanism;
use super::token::{Failure, KeyHandles, ResolvedKey, TokenSession, is_rv};
use crate::crypto::{KEY_LEN, NONCE_LEN, SecretKey, TAG_LEN, fill_random};
use crate::provider::ProviderError;

const GCM_AAD_LABEL: &[u8] = b"kube-kms/pkcs11-wrap/v1\0";
/// RFC 5649 output for a 32-byte key: one 8-byte integrity block plus the key.
const KEY_WRAP_PAD_LEN: usize = KEY_LEN + 8;
const GCM_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;
/// The longest RSA payload accepted (RSA-8192).
const MAX_RSA_LEN: usize = 1024;

/// A wrapped KEK whose mechanism byte and length have been checked.
#[derive(Debug)]
pub(super) struct Wrapped {
    version: String,
    mechanism: WrapMechanism,
    payload: Vec<u8>,
}

fn unwrap_failed(version: &str) -> ProviderError {
    ProviderError::UnwrapFailed {
        version: version.into(),
    }
}

/// Checks the mechanism byte and the length a wrapped KEK must have. No token call.
pub(super) fn parse(version: &str, wrapped: &[u8]) -> Result<Wrapped, ProviderError> {
    let (&tag, payload) = wrapped
        .split_first()
        .ok_or_else(|| unwrap_failed(version))?;
    let mechanism = WrapMechanism::from_tag(tag).ok_or_else(|| unwrap_failed(version))?;
    let length_ok = match mechanism {
        WrapMechanism::AesKeyWrapPad => payload.len() == KEY_WRAP_PAD_LEN,
        WrapMechanism::AesGcm => payload.len() == GCM_LEN,
        WrapMechanism::RsaOaepSha256 | WrapMechanism::RsaOaepSha1 => {
            (256..=MAX_RSA_LEN).contains(&payload.len())
        }
    };
    if !length_ok {
        return Err(unwrap_failed(version));
    }
    Ok(Wrapped {
        version: version.to_owned(),
        mechanism,
        payload: payload.to_vec(),
    })
}

fn gcm_aad(label: &str) -> Vec<u8> {
    [GCM_AAD_LABEL, label.as_bytes()].concat()
}

/// Wraps `kek` under `key` with the key's preferred mechanism.
pub(super) fn wrap(
    token: &TokenSession<'_>,
    key: &ResolvedKey,
    kek: &SecretKey,
) -> Result<Vec<u8>, Failure> {
    let session = token.session;
    let mechanism = key.wrap_mechanism().ok_or_else(|| {
        Failure::Provider(ProviderError::Misconfigured {
            reason: format!("key {:?} cannot wrap", key.version.version()),
        })
    })?;
    let mut wrapped = vec![mechanism.tag()];
    match (mechanism, key.handles) {
        (WrapMechanism::AesKeyWrapPad, KeyHandles::Aes { key: aes, .. }) => {
            let object = import_kek(session, kek)?;
            let result = session.wrap_key(&Mechanism::AesKeyWrapPad, aes, object);
            let _ = session.destroy_object(object);
            wrapped.extend_from_slice(&result?);
        }
        (WrapMechanism::AesGcm, KeyHandles::Aes { key: aes, .. }) => {
            let mut iv = [0u8; NONCE_LEN];
            fill_random(&mut iv).map_err(ProviderError::from)?;
            let aad = gcm_aad(key.version.version());
            let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())?;
            let sealed = session.encrypt(&Mechanism::AesGcm(params), aes, kek.expose())?;
            wrapped.extend_from_slice(&iv);
            wrapped.extend_from_slice(&sealed);
        }
        (
            WrapMechanism::RsaOaepSha256 | WrapMechanism::RsaOaepSha1,
            KeyHandles::Rsa { public, .. },
        ) => {
            let mechanism = Mechanism::RsaPkcsOaep(mechanism.oaep_params());
            wrapped.extend_from_slice(&session.encrypt(&mechanism, public, kek.expose())?);
        }
        _ => {
            return Err(Failure::Provider(ProviderError::Misconfigured {
                reason: format!(
                    "{} does not fit key {:?}",
                    mechanism.name(),
                    key.version.version()
                ),
            }));
        }
    }
    Ok(wrapped)
}

/// Unwraps `wrapped` with `key`. A mechanism byte that does not fit the key, a wrong length
/// or a token that rejects the bytes is [`ProviderError::UnwrapFailed`].
pub(super) fn unwrap(
    token: &TokenSession<'_>,
    key: &ResolvedKey,
    wrapped: &Wrapped,
) -> Result<SecretKey, Failure> {
    let session = token.session;
    let failed = || Failure::Provider(unwrap_failed(&wrapped.version));
    let plain: Result<Zeroizing<Vec<u8>>, CryptokiError> = match (wrapped.mechanism, key.handles) {
        (WrapMechanism::AesKeyWrapPad, KeyHandles::Aes { key: aes, .. }) => {
            unwrap_to_bytes(session, aes, &wrapped.payload)
        }
        (WrapMechanism::AesGcm, KeyHandles::Aes { key: aes, .. }) => {
            let (iv, sealed) = wrapped.payload.split_at(NONCE_LEN);
            let mut iv = <[u8; NONCE_LEN]>::try_from(iv).map_err(|_| failed())?;
            let aad = gcm_aad(&wrapped.version);
            let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())?;
            session
                .decrypt(&Mechanism::AesGcm(params), aes, sealed)
                .map(Zeroizing::new)
        }
        (
            mechanism @ (WrapMechanism::RsaOaepSha256 | WrapMechanism::RsaOaepSha1),
            KeyHandles::Rsa {
                private,
                modulus_len,
                ..
            },
        ) => {
            if wrapped.payload.len() != modulus_len {
                return Err(failed());
            }
            let mechanism = Mechanism::RsaPkcsOaep(mechanism.oaep_params());
            session
                .decrypt(&mechanism, private, &wrapped.payload)
                .map(Zeroizing::new)
        }
        _ => return Err(failed()),
    };
    match plain {
        Ok(bytes) => SecretKey::from_slice(&bytes).ok_or_else(failed),
        Err(error) if rejects_input(&error) => Err(failed()),
        Err(error) => Err(Failure::Token(error)),
    }
}

/// Whether the token's answer means "these bytes do not unwrap with this key".
fn rejects_input(error: &CryptokiError) -> bool {
    [
        RvError::EncryptedDataInvalid,
        RvError::EncryptedDataLenRange,
        RvError::WrappedKeyInvalid,
        RvError::WrappedKeyLenRange,
        RvError::DataInvalid,
        RvError::DataLenRange,
        // SoftHSM answers a failed AES key unwrap or GCM tag check with this.
        RvError::GeneralError,
    ]
    .into_iter()
    .any(|rv| is_rv(error, rv))
}

/// Imports `kek` as a short-lived session object that C_WrapKey can wrap.
fn import_kek(session: &Session, kek: &SecretKey) -> Result<ObjectHandle, Failure> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Value(kek.expose().to_vec()),
    ];
    let object = session.create_object(&template);
    for attribute in &mut template {
        if let Attribute::Value(bytes) = attribute {
            bytes.zeroize();
        }
    }
    Ok(object?)
}

/// C_UnwrapKey into a session object, reads its value and destroys it.
fn unwrap_to_bytes(
    session: &Session,
    key: ObjectHandle,
    payload: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptokiError> {
    let object = session.unwrap_key(
        &Mechanism::AesKeyWrapPad,
        key,
        payload,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ],
    )?;
    let attributes = session.get_attributes(object, &[AttributeType::Value]);
    let _ = session.destroy_object(object);
    let mut value = Zeroizing::new(Vec::new());
    for attribute in attributes? {
        if let Attribute::Value(mut bytes) = attribute {
            value.extend_from_slice(&bytes);
            bytes.zeroize();
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_before_the_token_sees_anything() {
        let cases: [(&[u8], bool); 9] = [
            (&[], false),
            (&[0x01], false),
            (&[0x01; 41], true),
            (&[0x01; 42], false),
            (&[0x02; 61], true),
            (&[0x02; 60], false),
            (&[0x03; 257], true),
            (&[0x04; 255], false),
            (&[0x05; 41], false),
        ];
        for (wrapped, accepted) in cases {
            let parsed = parse("kek-1", wrapped);
            assert_eq!(parsed.is_ok(), accepted, "{} bytes", wrapped.len());
            if let Err(error) = parsed {
                assert!(matches!(error, ProviderError::UnwrapFailed { .. }));
            }
        }
    }
}
