//! Opens a certificate's backing PFX the way golang.org/x/crypto/pkcs12 `ToPEM(pfx, "")` does,
//! which is what Azure's provider calls: the same PFXs open, the same ones fail, and the bags
//! come out in the same order.
//!
//! What that decoder accepts, and so what this accepts: version 3; an authSafe of type `data`; a
//! SHA-1 MAC over the empty password (the empty BMPString, or else no password bytes at all);
//! exactly two ContentInfos, each `data` or `encryptedData` (version 0); encryption
//! pbeWithSHAAnd3-KeyTripleDES-CBC or pbewithSHAAnd40BitRC2-CBC only (the PKCS#12 KDF with
//! SHA-1); bags `pkcs8ShroudedKeyBag` and `certBag` (x509Certificate) only; a `friendlyName` or
//! Microsoft CSP name attribute must be an even-length BMPString. PBES2/AES, a SHA-256 MAC, a
//! plain keyBag or a BER (indefinite-length) encoding fail here as they fail there.
//!
//! 3DES, SHA-1 and HMAC come from the vendored OpenSSL (its default provider has them); RC2 is
//! [`super::rc2`]'s, since the vendored OpenSSL is built without the legacy provider.
//!
//! One deliberate difference: an iteration count above [`MAX_ITERATIONS`] is refused instead of
//! being run (a PFX in a vault must not be able to pin the node's provider for minutes).
//! Decrypted key material stays in zeroizing buffers; no error carries any of it.

use std::fmt;

use openssl::error::ErrorStack;
use openssl::hash::{Hasher, MessageDigest};
use openssl::memcmp;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::symm::{Cipher, Crypter, Mode};
use zeroize::Zeroizing;

use super::der::{self, DerError, Reader, oid};
use super::rc2::{self, Rc2};

/// The largest PKCS#12 KDF iteration count accepted. Key Vault writes 2000, OpenSSL 2048.
pub const MAX_ITERATIONS: i64 = 1_000_000;

/// A certificate's backing PFX could not be opened. `Display` says which rule it broke;
/// nothing about its content.
#[derive(Debug)]
pub enum PfxError {
    /// The secret's value is not standard base64.
    NotBase64,
    /// The DER structure is broken; `at` says which part.
    Malformed {
        /// The structure being read.
        at: &'static str,
        /// What was wrong with it.
        error: DerError,
    },
    /// Not a version 3 PFX.
    UnsupportedVersion,
    /// The authSafe is not of type `data` (a public-key protected PFX).
    NotPasswordProtected,
    /// The PFX has no MAC.
    NoMac,
    /// The MAC uses a digest other than SHA-1.
    UnsupportedMacDigest {
        /// The digest's OID.
        oid: String,
    },
    /// The MAC does not verify with the empty password: another password protects the PFX, or
    /// it is corrupt.
    MacMismatch,
    /// The authenticated safe does not hold exactly two ContentInfos.
    SafeCount {
        /// How many it holds.
        count: usize,
    },
    /// A ContentInfo of the authenticated safe is neither `data` nor `encryptedData`.
    UnsupportedContentType {
        /// Its OID.
        oid: String,
    },
    /// An `encryptedData` of a version other than 0.
    UnsupportedEncryptedDataVersion,
    /// Encryption other than PBE-SHA1-3DES or PBE-SHA1-RC2-40 (e.g. PBES2 with AES).
    UnsupportedAlgorithm {
        /// The algorithm's OID.
        oid: String,
    },
    /// An iteration count above [`MAX_ITERATIONS`] (or below 0).
    TooManyIterations {
        /// The count.
        iterations: i64,
    },
    /// Decryption produced bad padding, or the ciphertext is empty or not whole blocks.
    Decryption,
    /// A bag other than a shrouded key bag or a certificate bag (e.g. a plain keyBag).
    UnsupportedBag {
        /// The bag's OID.
        oid: String,
    },
    /// A certificate bag of a type other than X.509.
    UnsupportedCertificateType {
        /// The type's OID.
        oid: String,
    },
    /// A `friendlyName` or CSP-name attribute that is not an even-length BMPString.
    BadAttribute,
    /// The vendored OpenSSL failed at a primitive (hash, HMAC, 3DES).
    Crypto(ErrorStack),
}

impl fmt::Display for PfxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotBase64 => f.write_str("the PFX is not standard base64"),
            Self::Malformed { at, error } => write!(f, "the PFX's {at} is malformed: {error}"),
            Self::UnsupportedVersion => f.write_str("only version 3 PFX files are supported"),
            Self::NotPasswordProtected => {
                f.write_str("only password-protected PFX files are supported")
            }
            Self::NoMac => f.write_str("the PFX has no MAC"),
            Self::UnsupportedMacDigest { oid } => {
                write!(
                    f,
                    "the PFX's MAC uses digest {oid}; only SHA-1 is supported"
                )
            }
            Self::MacMismatch => f.write_str(
                "the PFX's MAC does not verify with the empty password (another password, or a \
                 corrupt file)",
            ),
            Self::SafeCount { count } => write!(
                f,
                "the PFX's authenticated safe holds {count} items; exactly 2 are supported"
            ),
            Self::UnsupportedContentType { oid } => write!(
                f,
                "the PFX's authenticated safe holds content type {oid}; only data and \
                 encryptedData are supported"
            ),
            Self::UnsupportedEncryptedDataVersion => {
                f.write_str("only version 0 of the PFX's encryptedData is supported")
            }
            Self::UnsupportedAlgorithm { oid } => write!(
                f,
                "the PFX uses encryption {oid}; only pbeWithSHAAnd3-KeyTripleDES-CBC and \
                 pbewithSHAAnd40BitRC2-CBC are supported"
            ),
            Self::TooManyIterations { iterations } => write!(
                f,
                "the PFX asks for {iterations} key-derivation iterations; at most \
                 {MAX_ITERATIONS} are accepted"
            ),
            Self::Decryption => f.write_str("the PFX could not be decrypted (bad padding)"),
            Self::UnsupportedBag { oid } => write!(
                f,
                "the PFX holds a bag of type {oid}; only pkcs8ShroudedKeyBag and certBag are \
                 supported"
            ),
            Self::UnsupportedCertificateType { oid } => write!(
                f,
                "the PFX holds a certificate of type {oid}; only X.509 is supported"
            ),
            Self::BadAttribute => f.write_str("the PFX holds an odd-length BMPString attribute"),
            Self::Crypto(_) => f.write_str("OpenSSL failed while opening the PFX"),
        }
    }
}

impl std::error::Error for PfxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Crypto(error) => Some(error),
            _ => None,
        }
    }
}

impl From<ErrorStack> for PfxError {
    fn from(error: ErrorStack) -> Self {
        Self::Crypto(error)
    }
}

/// One bag of the PFX.
pub(super) enum Bag {
    /// A decrypted private key: PKCS#8 DER, as stored (not yet re-encoded).
    Key(Zeroizing<Vec<u8>>),
    /// A certificate's bytes as the bag holds them.
    Certificate(Vec<u8>),
}

/// The bags of `pfx` (DER) under the empty password, in file order.
pub(super) fn open(pfx: &[u8]) -> Result<Vec<Bag>, PfxError> {
    let malformed = |at: &'static str| move |error: DerError| PfxError::Malformed { at, error };

    // PFX ::= SEQUENCE { version, authSafe ContentInfo, macData MacData OPTIONAL }
    let pdu = der::single_of(pfx, der::SEQUENCE).map_err(malformed("structure"))?;
    let mut pdu = Reader::new(pdu);
    let version = pdu.small_integer().map_err(malformed("version"))?;
    let auth_safe = pdu.expect(der::SEQUENCE).map_err(malformed("authSafe"))?;
    let mac_data = pdu.optional(der::SEQUENCE).map_err(malformed("macData"))?;
    if version != 3 {
        return Err(PfxError::UnsupportedVersion);
    }

    let (content_type, content) = content_info(auth_safe).map_err(malformed("authSafe"))?;
    if content_type != oid::DATA {
        return Err(PfxError::NotPasswordProtected);
    }
    // The explicit content of a `data` ContentInfo: one element (an OCTET STRING).
    let content = content.ok_or(PfxError::Malformed {
        at: "authSafe",
        error: DerError::Truncated,
    })?;
    let auth_safe_bytes = der::single(content).map_err(malformed("authSafe"))?.content;

    let mac_data = mac_data.ok_or(PfxError::NoMac)?;
    let password = verify_mac(mac_data, auth_safe_bytes)?;

    let safes =
        der::single_of(auth_safe_bytes, der::SEQUENCE).map_err(malformed("authenticated safe"))?;
    let mut infos = Vec::new();
    let mut reader = Reader::new(safes);
    while !reader.is_empty() {
        let info = reader
            .expect(der::SEQUENCE)
            .map_err(malformed("authenticated safe"))?;
        infos.push(content_info(info).map_err(malformed("authenticated safe"))?);
    }
    if infos.len() != 2 {
        return Err(PfxError::SafeCount { count: infos.len() });
    }

    let mut bags = Vec::new();
    for (content_type, content) in infos {
        let content = content.unwrap_or_default();
        let data: Zeroizing<Vec<u8>> = if content_type == oid::DATA {
            Zeroizing::new(
                der::single_of(content, der::OCTET_STRING)
                    .map_err(malformed("data"))?
                    .to_vec(),
            )
        } else if content_type == oid::ENCRYPTED_DATA {
            encrypted_data(content, password)?
        } else {
            return Err(PfxError::UnsupportedContentType {
                oid: der::oid_text(content_type),
            });
        };
        let safe_contents =
            der::single_of(&data, der::SEQUENCE).map_err(malformed("safe contents"))?;
        let mut reader = Reader::new(safe_contents);
        while !reader.is_empty() {
            let bag = reader.expect(der::SEQUENCE).map_err(malformed("bag"))?;
            bags.push(safe_bag(bag, password)?);
        }
    }
    Ok(bags)
}

/// ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT ANY OPTIONAL }: the type
/// and the explicit wrapper's content.
fn content_info(info: &[u8]) -> Result<(&[u8], Option<&[u8]>), DerError> {
    let mut reader = Reader::new(info);
    let content_type = reader.expect(der::OID)?;
    let content = reader.optional(der::EXPLICIT_0)?;
    Ok((content_type, content))
}

/// The password x/crypto/pkcs12 ends up with for `""`: the BMPString of the empty string (its
/// two-byte terminator), or, if the MAC does not verify with that, no bytes at all.
#[derive(Debug, Clone, Copy)]
enum Password {
    EmptyBmp,
    Nothing,
}

impl Password {
    fn bytes(self) -> &'static [u8] {
        match self {
            Self::EmptyBmp => &[0, 0],
            Self::Nothing => &[],
        }
    }
}

/// MacData ::= SEQUENCE { mac DigestInfo, macSalt OCTET STRING, iterations INTEGER DEFAULT 1 }
fn verify_mac(mac_data: &[u8], message: &[u8]) -> Result<Password, PfxError> {
    let malformed = |error| PfxError::Malformed {
        at: "macData",
        error,
    };
    let mut reader = Reader::new(mac_data);
    let digest_info = reader.expect(der::SEQUENCE).map_err(malformed)?;
    let salt = reader.expect(der::OCTET_STRING).map_err(malformed)?;
    let iterations = if reader.peek_tag() == Some(der::INTEGER) {
        reader.small_integer().map_err(malformed)?
    } else {
        1
    };
    let mut digest_info = Reader::new(digest_info);
    let algorithm = digest_info.expect(der::SEQUENCE).map_err(malformed)?;
    let digest = digest_info.expect(der::OCTET_STRING).map_err(malformed)?;
    let algorithm = Reader::new(algorithm).expect(der::OID).map_err(malformed)?;
    if algorithm != oid::SHA1 {
        return Err(PfxError::UnsupportedMacDigest {
            oid: der::oid_text(algorithm),
        });
    }
    check_iterations(iterations)?;
    for password in [Password::EmptyBmp, Password::Nothing] {
        let key = kdf(salt, password.bytes(), iterations, 3, 20)?;
        let hmac_key = PKey::hmac(&key)?;
        let mut signer = Signer::new(MessageDigest::sha1(), &hmac_key)?;
        signer.update(message)?;
        let expected = signer.sign_to_vec()?;
        if expected.len() == digest.len() && memcmp::eq(&expected, digest) {
            return Ok(password);
        }
    }
    Err(PfxError::MacMismatch)
}

fn check_iterations(iterations: i64) -> Result<(), PfxError> {
    if (0..=MAX_ITERATIONS).contains(&iterations) {
        Ok(())
    } else {
        Err(PfxError::TooManyIterations { iterations })
    }
}

/// EncryptedData ::= SEQUENCE { version INTEGER, encryptedContentInfo }, decrypted.
fn encrypted_data(content: &[u8], password: Password) -> Result<Zeroizing<Vec<u8>>, PfxError> {
    let malformed = |error| PfxError::Malformed {
        at: "encryptedData",
        error,
    };
    let data = der::single_of(content, der::SEQUENCE).map_err(malformed)?;
    let mut reader = Reader::new(data);
    let version = reader.small_integer().map_err(malformed)?;
    let info = reader.expect(der::SEQUENCE).map_err(malformed)?;
    if version != 0 {
        return Err(PfxError::UnsupportedEncryptedDataVersion);
    }
    // EncryptedContentInfo ::= SEQUENCE { contentType, algorithm, [0] IMPLICIT OCTET STRING OPTIONAL }
    let mut info = Reader::new(info);
    info.expect(der::OID).map_err(malformed)?;
    let algorithm = info.expect(der::SEQUENCE).map_err(malformed)?;
    let ciphertext = info
        .optional(der::IMPLICIT_0)
        .map_err(malformed)?
        .unwrap_or_default();
    decrypt(algorithm, ciphertext, password)
}

/// Decrypts `ciphertext` under the PBE `algorithm` (an AlgorithmIdentifier's content) and
/// removes its padding, as x/crypto/pkcs12's `pbDecrypt` does.
fn decrypt(
    algorithm: &[u8],
    ciphertext: &[u8],
    password: Password,
) -> Result<Zeroizing<Vec<u8>>, PfxError> {
    let malformed = |error| PfxError::Malformed {
        at: "encryption parameters",
        error,
    };
    let mut reader = Reader::new(algorithm);
    let algorithm = reader.expect(der::OID).map_err(malformed)?;
    let parameters = if reader.is_empty() {
        &[][..]
    } else {
        reader.any().map_err(malformed)?.whole
    };
    let triple_des = if algorithm == oid::PBE_SHA1_3DES {
        true
    } else if algorithm == oid::PBE_SHA1_RC2_40 {
        false
    } else {
        return Err(PfxError::UnsupportedAlgorithm {
            oid: der::oid_text(algorithm),
        });
    };
    // pbeParams ::= SEQUENCE { salt OCTET STRING, iterations INTEGER }
    let mut parameters = Reader::new(der::single_of(parameters, der::SEQUENCE).map_err(malformed)?);
    let salt = parameters.expect(der::OCTET_STRING).map_err(malformed)?;
    let iterations = parameters.small_integer().map_err(malformed)?;
    check_iterations(iterations)?;

    let key = kdf(
        salt,
        password.bytes(),
        iterations,
        1,
        if triple_des { 24 } else { 5 },
    )?;
    let iv = kdf(salt, password.bytes(), iterations, 2, 8)?;
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(8) {
        return Err(PfxError::Decryption);
    }
    let mut plaintext = Zeroizing::new(vec![0u8; ciphertext.len() + 8]);
    if triple_des {
        let mut crypter = Crypter::new(Cipher::des_ede3_cbc(), Mode::Decrypt, &key, Some(&iv))?;
        crypter.pad(false);
        let written = crypter.update(ciphertext, &mut plaintext)?;
        let finished = crypter.finalize(&mut plaintext[written..])?;
        plaintext.truncate(written + finished);
    } else {
        let rc2 = Rc2::new(&key, key.len() * 8).ok_or(PfxError::Decryption)?;
        let mut iv_block = [0u8; rc2::BLOCK_SIZE];
        iv_block.copy_from_slice(&iv);
        plaintext.truncate(ciphertext.len());
        plaintext.copy_from_slice(ciphertext);
        rc2.decrypt_cbc(&iv_block, &mut plaintext);
    }
    let padding = usize::from(*plaintext.last().ok_or(PfxError::Decryption)?);
    if padding == 0 || padding > 8 || padding > plaintext.len() {
        return Err(PfxError::Decryption);
    }
    let unpadded = plaintext.len() - padding;
    if plaintext[unpadded..]
        .iter()
        .any(|&byte| usize::from(byte) != padding)
    {
        return Err(PfxError::Decryption);
    }
    plaintext.truncate(unpadded);
    Ok(plaintext)
}

/// SafeBag ::= SEQUENCE { bagId OID, bagValue [0] EXPLICIT ANY, bagAttributes SET OPTIONAL }
fn safe_bag(bag: &[u8], password: Password) -> Result<Bag, PfxError> {
    let malformed = |error| PfxError::Malformed { at: "bag", error };
    let mut reader = Reader::new(bag);
    let bag_id = reader.expect(der::OID).map_err(malformed)?;
    let value = reader.expect(der::EXPLICIT_0).map_err(malformed)?;
    let attributes = reader.optional(der::SET).map_err(malformed)?;
    check_attributes(attributes.unwrap_or_default())?;

    if bag_id == oid::CERT_BAG {
        // CertBag ::= SEQUENCE { certId OID, certValue [0] EXPLICIT OCTET STRING }
        let cert_bag = der::single_of(value, der::SEQUENCE).map_err(malformed)?;
        let mut cert_bag = Reader::new(cert_bag);
        let cert_id = cert_bag.expect(der::OID).map_err(malformed)?;
        let wrapped = cert_bag.expect(der::EXPLICIT_0).map_err(malformed)?;
        let certificate = der::single_of(wrapped, der::OCTET_STRING).map_err(malformed)?;
        if cert_id != oid::X509_CERTIFICATE {
            return Err(PfxError::UnsupportedCertificateType {
                oid: der::oid_text(cert_id),
            });
        }
        Ok(Bag::Certificate(certificate.to_vec()))
    } else if bag_id == oid::SHROUDED_KEY_BAG {
        // EncryptedPrivateKeyInfo ::= SEQUENCE { algorithm, encryptedData OCTET STRING }
        let info = der::single_of(value, der::SEQUENCE).map_err(malformed)?;
        let mut info = Reader::new(info);
        let algorithm = info.expect(der::SEQUENCE).map_err(malformed)?;
        let ciphertext = info.expect(der::OCTET_STRING).map_err(malformed)?;
        let key = decrypt(algorithm, ciphertext, password)?;
        // The decrypted key must be exactly one element, as Go checks before parsing it.
        der::single(&key).map_err(|error| PfxError::Malformed {
            at: "decrypted private key",
            error,
        })?;
        Ok(Bag::Key(key))
    } else {
        Err(PfxError::UnsupportedBag {
            oid: der::oid_text(bag_id),
        })
    }
}

/// Go converts `friendlyName`, `localKeyID` and the Microsoft CSP name into PEM headers (which
/// Azure then drops); the two string attributes must be BMPStrings of even length.
fn check_attributes(attributes: &[u8]) -> Result<(), PfxError> {
    let malformed = |error| PfxError::Malformed {
        at: "bag attributes",
        error,
    };
    let mut reader = Reader::new(attributes);
    while !reader.is_empty() {
        let attribute = reader.expect(der::SEQUENCE).map_err(malformed)?;
        let mut attribute = Reader::new(attribute);
        let id = attribute.expect(der::OID).map_err(malformed)?;
        let values = attribute.expect(der::SET).map_err(malformed)?;
        if id == oid::FRIENDLY_NAME || id == oid::MICROSOFT_CSP_NAME {
            let value = der::single(values).map_err(malformed)?;
            if !value.content.len().is_multiple_of(2) {
                return Err(PfxError::BadAttribute);
            }
        } else if id == oid::LOCAL_KEY_ID {
            der::single_of(values, der::OCTET_STRING).map_err(malformed)?;
        }
    }
    Ok(())
}

/// The PKCS#12 key derivation (RFC 7292 appendix B.2) with SHA-1: `size` bytes for purpose
/// `id` (1 key, 2 IV, 3 MAC key). An iteration count of 0 hashes once, as Go's does.
fn kdf(
    salt: &[u8],
    password: &[u8],
    iterations: i64,
    id: u8,
    size: usize,
) -> Result<Zeroizing<Vec<u8>>, PfxError> {
    const U: usize = 20;
    const V: usize = 64;
    let fill = |bytes: &[u8]| -> Zeroizing<Vec<u8>> {
        if bytes.is_empty() {
            return Zeroizing::new(Vec::new());
        }
        let length = V * bytes.len().div_ceil(V);
        Zeroizing::new(bytes.iter().copied().cycle().take(length).collect())
    };
    let diversifier = [id; V];
    let mut i = fill(salt);
    i.extend_from_slice(&fill(password));
    let blocks = size.div_ceil(U);
    let mut out = Zeroizing::new(Vec::with_capacity(blocks * U));
    for block in 0..blocks {
        let mut hasher = Hasher::new(MessageDigest::sha1())?;
        hasher.update(&diversifier)?;
        hasher.update(&i)?;
        let mut a = Zeroizing::new(hasher.finish()?.to_vec());
        for _ in 1..iterations {
            let mut hasher = Hasher::new(MessageDigest::sha1())?;
            hasher.update(&a)?;
            a = Zeroizing::new(hasher.finish()?.to_vec());
        }
        out.extend_from_slice(&a);
        if block + 1 < blocks {
            // I_j = (I_j + B + 1) mod 2^(8V) for each V-byte block of I, B = A repeated.
            let b: Zeroizing<Vec<u8>> = Zeroizing::new(a.iter().copied().cycle().take(V).collect());
            for chunk in i.chunks_exact_mut(V) {
                let mut carry = 1u16;
                for (x, y) in chunk.iter_mut().rev().zip(b.iter().rev()) {
                    let sum = u16::from(*x) + u16::from(*y) + carry;
                    // Lossless: the low byte of the sum.
                    *x = (sum & 0xff) as u8;
                    carry = sum >> 8;
                }
            }
        }
    }
    out.truncate(size);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_gives_the_pkcs12_key_derivation_vectors() {
        // "sesame" as a BMPString with its terminator, 2048 iterations, 3DES key.
        let sesame = b"\0s\0e\0s\0a\0m\0e\0\0";
        let key = kdf(&[0xff; 8], sesame, 2048, 1, 24).unwrap();
        assert_eq!(
            hex::encode(&key),
            "7cd9fd3e2b3be7691a44e3bef0f9ea0fb9b897d4e325d9d1"
        );
        // A derivation whose intermediate I_j gets a leading zero byte, under the empty
        // password (the case that once broke Go's big.Int-based implementation).
        let key = kdf(
            &hex::decode("f37e05b518324b4b").unwrap(),
            &[0, 0],
            2048,
            1,
            24,
        )
        .unwrap();
        assert_eq!(
            hex::encode(&key),
            "00f759ff47d14dd03665d5943cb3c4a39a2555c02aed66e1"
        );
    }
}
