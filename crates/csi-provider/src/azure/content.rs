//! Turns one fetched Key Vault object version into the files Azure's provider
//! (`secrets-store-csi-driver-provider-azure`) would write for it, byte for byte, plus kube-kms's
//! additions (`jmesPath` fields, `objectFormat: tls`, a PFX password).
//!
//! What Azure writes, and so what [`render`] writes:
//!
//! | Object | File |
//! |---|---|
//! | secret | the value, then `objectEncoding` (utf-8 as is, base64 = Go's StdEncoding, hex) |
//! | secret with `kid`, `application/x-pem-file` | the stored value |
//! | secret with `kid`, `application/x-pkcs12` | the PFX opened with the empty password: PKCS#8 `PRIVATE KEY` block(s), then `CERTIFICATE` blocks (chain order with `--construct-pem-chain`) |
//! | … with `objectFormat: pfx` | the base64 PFX text unchanged (binary with `objectEncoding: base64`) |
//! | … with `--write-cert-and-key-in-separate-files` | also `<file>.crt` and `<file>.key` |
//! | key | the public key, PKIX `PUBLIC KEY` PEM |
//! | cert | `cer` as one `CERTIFICATE` PEM block |
//!
//! Go's encoders are reproduced rather than approximated: PEM as encoding/pem writes it,
//! PKCS#8 and SubjectPublicKeyInfo as crypto/x509 marshals them, the PFX opened by
//! [`pkcs12`] under exactly golang.org/x/crypto/pkcs12's rules. Where Azure's output depends on
//! a choice the Go code makes (chain order, bag order), the same choice is made here.
//!
//! Never logs, and no [`ContentError`] shows, any byte of a secret, key or PFX. Intermediate
//! buffers are zeroizing; the files come back as zeroizing [`OutputFile`]s.

mod der;
mod pem;
mod pkcs12;
mod rc2;
#[cfg(test)]
mod tests;

use std::fmt;

use openssl::bn::{BigNum, BigNumContext, BigNumRef};
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{Id, PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::X509;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

pub use der::DerError;
pub use pkcs12::{MAX_ITERATIONS, PfxError};

use crate::azure::fetched::{Fetched, FetchedKey, FetchedSecret};
use crate::azure::spec::{ObjectEncoding, ObjectFormat, ObjectSpec, VaultName};
use crate::files::{ObjectVersion, OutputFile};
use crate::jmes::{self, JsonFieldError};

/// The `contentType` of a certificate's backing secret holding PEM.
pub const CONTENT_TYPE_PEM: &str = "application/x-pem-file";
/// The `contentType` of a certificate's backing secret holding a base64 PFX.
pub const CONTENT_TYPE_PFX: &str = "application/x-pkcs12";

/// Provider-wide rendering choices (Azure's command-line flags of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// `--construct-pem-chain` (default true): a PFX's certificates are written leaf, then
    /// intermediates, then root, instead of in the PFX's order.
    pub construct_pem_chain: bool,
    /// `--write-cert-and-key-in-separate-files` (default false): a certificate-backed secret
    /// also gets `<file>.crt` (its CERTIFICATE blocks) and `<file>.key` (every other block).
    pub separate_cert_and_key_files: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            construct_pem_chain: true,
            separate_cert_and_key_files: false,
        }
    }
}

/// An object version could not be turned into files. `Display` says what was wrong and what
/// was expected, naming content types, encodings, key types or paths, never content.
#[derive(Debug)]
pub enum ContentError {
    /// The value is not valid in the object's `objectEncoding`.
    Decode {
        /// The encoding the value failed.
        encoding: ObjectEncoding,
    },
    /// A certificate's backing secret (it has a `kid`) with a content type Azure does not
    /// convert.
    UnknownContentType {
        /// The `contentType`, if any.
        content_type: Option<String>,
    },
    /// The backing PFX could not be opened.
    Pfx(PfxError),
    /// A private key of the PFX or PEM is one Go's crypto/x509 would refuse.
    PrivateKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A certificate is not X.509 DER (Azure fails the same way when it orders the chain).
    Certificate {
        /// Its position among the object's certificates, from 0.
        index: usize,
    },
    /// `objectFormat: tls`, or a PFX password, on a secret that is not a certificate's.
    NotACertificate {
        /// What needed a certificate (e.g. `objectFormat: tls`).
        needed_by: &'static str,
    },
    /// `objectFormat: tls` or a PFX password needs exactly one private key.
    PrivateKeyCount {
        /// How many the certificate holds.
        found: usize,
    },
    /// No certificate holds the private key's public key.
    NoCertificateForKey,
    /// A key of a type Azure does not write (`oct`, `oct-HSM`, …).
    UnsupportedKeyType {
        /// The JWK `kty`.
        kty: String,
    },
    /// An EC key on a curve Azure does not write (P-256K, …).
    UnsupportedCurve {
        /// The JWK `crv`, if any.
        crv: Option<String>,
    },
    /// A JWK field the key type needs is missing.
    MissingKeyField {
        /// The field (`n`, `e`, `x`, `y`).
        field: &'static str,
    },
    /// The public key's fields do not make a key.
    InvalidPublicKey {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// A `jmesPath` field could not be extracted.
    JsonField {
        /// The secret's `objectName`.
        secret: String,
        /// What went wrong.
        source: JsonFieldError,
    },
    /// OpenSSL failed (writing a PFX, or an arithmetic step).
    Crypto(ErrorStack),
}

impl fmt::Display for ContentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode { encoding } => write!(
                f,
                "the value is not valid {} (objectEncoding: {})",
                encoding_description(*encoding),
                encoding_name(*encoding)
            ),
            Self::UnknownContentType { content_type } => write!(
                f,
                "failed to get certificate. unknown content type '{}' (expected {} or {})",
                content_type.as_deref().unwrap_or(""),
                CONTENT_TYPE_PEM,
                CONTENT_TYPE_PFX
            ),
            Self::Pfx(error) => write!(f, "failed to open the certificate's PFX: {error}"),
            Self::PrivateKey { reason } => write!(f, "the certificate's private key {reason}"),
            Self::Certificate { index } => write!(
                f,
                "certificate {index} of the chain is not a valid X.509 certificate"
            ),
            Self::NotACertificate { needed_by } => write!(
                f,
                "{needed_by} needs a certificate's secret (one with a kid), but this secret is \
                 not a certificate's"
            ),
            Self::PrivateKeyCount { found } => write!(
                f,
                "the certificate holds {found} private keys; exactly 1 is needed"
            ),
            Self::NoCertificateForKey => {
                f.write_str("no certificate of the chain holds the private key's public key")
            }
            Self::UnsupportedKeyType { kty } => write!(
                f,
                "failed to get key. key type '{kty}' currently not supported (expected RSA, \
                 RSA-HSM, EC or EC-HSM)"
            ),
            Self::UnsupportedCurve { crv } => write!(
                f,
                "curve {} is not supported (expected P-256, P-384 or P-521)",
                crv.as_deref().unwrap_or("(none)")
            ),
            Self::MissingKeyField { field } => write!(f, "the key has no '{field}' field"),
            Self::InvalidPublicKey { reason } => write!(f, "the public key {reason}"),
            Self::JsonField { secret, source } => write!(f, "{source} in secret {secret}"),
            Self::Crypto(_) => f.write_str("OpenSSL failed while converting the object"),
        }
    }
}

impl std::error::Error for ContentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Pfx(error) => Some(error),
            Self::JsonField { source, .. } => Some(source),
            Self::Crypto(error) => Some(error),
            _ => None,
        }
    }
}

impl From<ErrorStack> for ContentError {
    fn from(error: ErrorStack) -> Self {
        Self::Crypto(error)
    }
}

impl From<PfxError> for ContentError {
    fn from(error: PfxError) -> Self {
        Self::Pfx(error)
    }
}

fn encoding_name(encoding: ObjectEncoding) -> &'static str {
    match encoding {
        ObjectEncoding::Utf8 => "utf-8",
        ObjectEncoding::Base64 => "base64",
        ObjectEncoding::Hex => "hex",
    }
}

fn encoding_description(encoding: ObjectEncoding) -> &'static str {
    match encoding {
        ObjectEncoding::Utf8 => "text",
        ObjectEncoding::Base64 => "standard base64 (with padding)",
        ObjectEncoding::Hex => "hex",
    }
}

/// The files for one fetched version of `object`, written at `file` (the object's alias or
/// name, or `<alias-or-name>/<i>` in version history), each with `mode`, in the order Azure
/// returns them (`<file>.crt`, `<file>.key`, then `<file>`), followed by kube-kms's
/// `jmesPath` files.
///
/// Beyond Azure:
/// - `objectFormat: tls` on a certificate's secret writes `<file>/tls.crt` (the leaf, then the
///   chain above it without a self-issued root), `<file>/tls.key` (PKCS#8 PEM) and
///   `<file>/ca.crt` (every certificate after the leaf, possibly empty). These are PEM;
///   `objectEncoding` does not apply to them. The leaf is the certificate holding the private
///   key, whatever the PFX's order or `--construct-pem-chain`.
/// - `objectFormat: pfx` with `pfx_password` on a certificate's secret writes a new PFX of the
///   key, the leaf and the rest of the chain, encrypted under that password with AES-256-CBC
///   (PBES2/PBKDF2) and an HMAC-SHA-256 MAC. Like Azure's own `pfx` output, the file holds the
///   PFX as standard base64 text, and `objectEncoding: base64` makes it the binary PFX. Without
///   a password, `pfx` is Azure's pass-through.
/// - `jmesPath` fields are evaluated against the object's file contents (after
///   `objectEncoding`), each written at its alias; in version history (when `file` is
///   `<alias-or-name>/<i>`) at `<field alias>/<i>`.
/// - `--construct-pem-chain` keeps Azure's order whenever Azure's chain covers every
///   certificate. Where Azure's would not (no authority/subject key ids, a missing
///   intermediate, two leaves), Azure writes only part of the chain or fails; here the chain
///   is ordered by subject and issuer names instead (leaf = the certificate holding the private
///   key), and if that does not cover every certificate either, the PFX's order is kept.
///
/// Exposes secret bytes: the files are for the driver to write into the pod's volume.
pub fn render(
    object: &ObjectSpec,
    fetched: &Fetched,
    file: &str,
    mode: u32,
    options: &RenderOptions,
    pfx_password: Option<&SecretString>,
) -> Result<Vec<OutputFile>, ContentError> {
    let mut files = match fetched {
        Fetched::Secret(secret) => render_secret(object, secret, file, options, pfx_password)?,
        Fetched::Key(key) => vec![(file.to_owned(), public_key_pem(key)?)],
        Fetched::Cert(cert) => vec![(file.to_owned(), pem::encode(b"CERTIFICATE", &[], &cert.cer))],
    };

    if !object.json_fields.is_empty() {
        let main = files
            .iter()
            .rev()
            .find(|(path, _)| path == file)
            .map(|(_, contents)| contents.clone())
            .unwrap_or_default();
        let suffix = file
            .strip_prefix(object.file_name())
            .and_then(|rest| rest.strip_prefix('/'));
        for field in &object.json_fields {
            let contents =
                jmes::extract(&main, &field.path).map_err(|source| ContentError::JsonField {
                    secret: object.name.clone(),
                    source,
                })?;
            let path = match suffix {
                Some(suffix) => format!("{}/{suffix}", field.alias),
                None => field.alias.clone(),
            };
            files.push((path, contents));
        }
    }

    Ok(files
        .into_iter()
        .map(|(path, contents)| OutputFile {
            path,
            mode,
            contents,
        })
        .collect())
}

/// Azure's object id and version for one fetched version of `object`: `<type>/<name>`, or
/// `<type>/<name>/<i>` for entry `i` of version history, prefixed `<vault>/` when the object
/// names a vault other than the class's (`other_vault`); the version is the last segment of
/// the fetched id.
pub fn object_version(
    object: &ObjectSpec,
    fetched: &Fetched,
    history_index: Option<usize>,
    other_vault: Option<&VaultName>,
) -> ObjectVersion {
    let mut id = String::new();
    if let Some(vault) = other_vault {
        id.push_str(vault.as_str());
        id.push('/');
    }
    id.push_str(object.kind.as_str());
    id.push('/');
    id.push_str(&object.name);
    if let Some(index) = history_index {
        id.push('/');
        id.push_str(&index.to_string());
    }
    ObjectVersion {
        id,
        version: fetched.version().to_owned(),
    }
}

type Files = Vec<(String, Zeroizing<Vec<u8>>)>;

/// Azure's `getSecret` and `getContentBytes`, plus `tls` and the PFX password.
fn render_secret(
    object: &ObjectSpec,
    secret: &FetchedSecret,
    file: &str,
    options: &RenderOptions,
    pfx_password: Option<&SecretString>,
) -> Result<Files, ContentError> {
    let value = secret.value.as_bytes();
    let is_certificate = secret.kid.as_deref().is_some_and(|kid| !kid.is_empty());
    if !is_certificate {
        if object.format == ObjectFormat::Tls {
            return Err(ContentError::NotACertificate {
                needed_by: "objectFormat: tls",
            });
        }
        if object.format == ObjectFormat::Pfx && pfx_password.is_some() {
            return Err(ContentError::NotACertificate {
                needed_by: "a PFX password",
            });
        }
        let contents = decode(value, object.encoding)?;
        return Ok(vec![(file.to_owned(), contents)]);
    }

    let is_pfx = match secret.content_type.as_deref() {
        Some(CONTENT_TYPE_PEM) => false,
        Some(CONTENT_TYPE_PFX) => true,
        other => {
            return Err(ContentError::UnknownContentType {
                content_type: other.map(str::to_owned),
            });
        }
    };

    if object.format == ObjectFormat::Tls {
        let bundle = if is_pfx {
            Bundle::from_pfx_base64(value)?
        } else {
            Bundle::from_pem(value)?
        };
        let tls = tls_files(&bundle)?;
        return Ok(vec![
            (format!("{file}/tls.crt"), tls.crt),
            (format!("{file}/tls.key"), tls.key),
            (format!("{file}/ca.crt"), tls.ca),
        ]);
    }

    let content: Zeroizing<Vec<u8>> = match (object.format, pfx_password) {
        (ObjectFormat::Pfx, Some(password)) => {
            let bundle = if is_pfx {
                Bundle::from_pfx_base64(value)?
            } else {
                Bundle::from_pem(value)?
            };
            pem::base64_encode(&reexport_pfx(&bundle, password)?)
        }
        (ObjectFormat::Pfx, None) => Zeroizing::new(value.to_vec()),
        _ if is_pfx => {
            let bundle = Bundle::from_pfx_base64(value)?;
            bundle.azure_pem(options.construct_pem_chain)?
        }
        _ => Zeroizing::new(value.to_vec()),
    };

    let mut files = Files::new();
    if options.separate_cert_and_key_files {
        let (certs, keys) = split_cert_and_key(&content);
        files.push((format!("{file}.crt"), decode(&certs, object.encoding)?));
        files.push((format!("{file}.key"), decode(&keys, object.encoding)?));
    }
    files.push((file.to_owned(), decode(&content, object.encoding)?));
    Ok(files)
}

/// `objectEncoding` applied to a file's text, as Go's `getContentBytes`.
fn decode(text: &[u8], encoding: ObjectEncoding) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    match encoding {
        ObjectEncoding::Utf8 => Ok(Zeroizing::new(text.to_vec())),
        ObjectEncoding::Base64 => {
            pem::go_base64_decode(text).ok_or(ContentError::Decode { encoding })
        }
        ObjectEncoding::Hex => hex::decode(text)
            .map(Zeroizing::new)
            .map_err(|_| ContentError::Decode { encoding }),
    }
}

/// Azure's `splitCertAndKey`: the CERTIFICATE blocks, and every other block, each re-encoded.
fn split_cert_and_key(content: &[u8]) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
    let mut certs = Zeroizing::new(Vec::new());
    let mut keys = Zeroizing::new(Vec::new());
    for block in pem::decode_all(content) {
        let encoded = pem::encode(&block.label, &block.headers, &block.bytes);
        if block.label == b"CERTIFICATE" {
            certs.extend_from_slice(&encoded);
        } else {
            keys.extend_from_slice(&encoded);
        }
    }
    (certs, keys)
}

/// A private key as Go re-encodes it, with its OpenSSL form for matching certificates.
struct PrivateKey {
    /// PKCS#8 DER exactly as Go's `x509.MarshalPKCS8PrivateKey` writes it.
    pkcs8: Zeroizing<Vec<u8>>,
    key: PKey<Private>,
}

/// A certificate's secret opened: keys and certificates in the order the secret holds them.
struct Bundle {
    keys: Vec<PrivateKey>,
    certs: Vec<Vec<u8>>,
}

impl Bundle {
    /// A backing secret's base64 PFX, opened as x/crypto/pkcs12 `ToPEM(pfx, "")` opens it.
    fn from_pfx_base64(value: &[u8]) -> Result<Self, ContentError> {
        let pfx = pem::go_base64_decode(value).ok_or(PfxError::NotBase64)?;
        let mut bundle = Self {
            keys: Vec::new(),
            certs: Vec::new(),
        };
        for bag in pkcs12::open(&pfx)? {
            match bag {
                pkcs12::Bag::Key(pkcs8) => {
                    let key = PKey::private_key_from_pkcs8(&pkcs8).map_err(|_| {
                        ContentError::PrivateKey {
                            reason: "is not a PKCS#8 private key",
                        }
                    })?;
                    bundle.keys.push(go_private_key(key)?);
                }
                pkcs12::Bag::Certificate(der) => bundle.certs.push(der),
            }
        }
        Ok(bundle)
    }

    /// A backing secret's PEM (for `tls` and a PFX password; Azure passes PEM through).
    fn from_pem(text: &[u8]) -> Result<Self, ContentError> {
        let mut bundle = Self {
            keys: Vec::new(),
            certs: Vec::new(),
        };
        let not_readable = ContentError::PrivateKey {
            reason: "is not a readable unencrypted PEM private key",
        };
        for block in pem::decode_all(text) {
            let key = match block.label.as_slice() {
                b"CERTIFICATE" => {
                    bundle.certs.push(block.bytes.to_vec());
                    continue;
                }
                _ if !block.headers.is_empty() && block.label.ends_with(b"PRIVATE KEY") => {
                    return Err(not_readable);
                }
                b"PRIVATE KEY" => PKey::private_key_from_pkcs8(&block.bytes),
                b"RSA PRIVATE KEY" => {
                    Rsa::private_key_from_der(&block.bytes).and_then(PKey::from_rsa)
                }
                b"EC PRIVATE KEY" => {
                    EcKey::private_key_from_der(&block.bytes).and_then(PKey::from_ec_key)
                }
                b"ENCRYPTED PRIVATE KEY" => return Err(not_readable),
                _ => continue,
            };
            let key = key.map_err(|_| ContentError::PrivateKey {
                reason: "is not a readable unencrypted PEM private key",
            })?;
            bundle.keys.push(go_private_key(key)?);
        }
        Ok(bundle)
    }

    /// Azure's `decodePKCS12` output: every key as PKCS#8 PEM, then the certificates (in chain
    /// order with `construct_chain`).
    fn azure_pem(&self, construct_chain: bool) -> Result<Zeroizing<Vec<u8>>, ContentError> {
        let mut out = Zeroizing::new(Vec::new());
        for key in &self.keys {
            out.extend_from_slice(&pem::encode(b"PRIVATE KEY", &[], &key.pkcs8));
        }
        let order: Vec<usize> = if construct_chain {
            let certs = self.parsed_certs()?;
            chain_order(&certs, &self.keys)
        } else {
            (0..self.certs.len()).collect()
        };
        for index in order {
            out.extend_from_slice(&pem::encode(b"CERTIFICATE", &[], &self.certs[index]));
        }
        Ok(out)
    }

    fn parsed_certs(&self) -> Result<Vec<Cert>, ContentError> {
        self.certs
            .iter()
            .enumerate()
            .map(|(index, der)| Cert::parse(der).ok_or(ContentError::Certificate { index }))
            .collect()
    }

    /// The one private key, the certificate holding it, and the rest of the certificates in
    /// chain order (the chain above the leaf, then any others in the secret's order). For
    /// `tls` and the PFX password.
    fn leaf_first(&self) -> Result<(&PrivateKey, Vec<Cert>, Vec<usize>), ContentError> {
        let [key] = self.keys.as_slice() else {
            return Err(ContentError::PrivateKeyCount {
                found: self.keys.len(),
            });
        };
        let certs = self.parsed_certs()?;
        let leaf = certs
            .iter()
            .position(|cert| cert.holds(&key.key))
            .ok_or(ContentError::NoCertificateForKey)?;
        let mut order = vec![leaf];
        let mut current = leaf;
        while let Some(parent) = go_parent(&certs, current).or_else(|| name_parent(&certs, current))
        {
            if order.contains(&parent) {
                break;
            }
            order.push(parent);
            current = parent;
        }
        order.extend(
            (0..certs.len())
                .filter(|index| !order.contains(index))
                .collect::<Vec<_>>(),
        );
        Ok((key, certs, order))
    }
}

/// Re-encodes a parsed private key as Go's `x509.MarshalPKCS8PrivateKey` would after
/// `ParsePKCS8PrivateKey` (which is what Azure's provider writes): RSA with its CRT values
/// recomputed from d, p and q; EC with the private scalar padded to the order's length, the
/// public point recomputed and uncompressed, the curve named in the algorithm and not repeated
/// in the ECPrivateKey. Other key types fail, as in Go's pkcs12 `ToPEM`.
fn go_private_key(key: PKey<Private>) -> Result<PrivateKey, ContentError> {
    let pkcs8 = match key.id() {
        Id::RSA => go_rsa_pkcs8(&key)?,
        Id::EC => go_ec_pkcs8(&key)?,
        _ => {
            return Err(ContentError::PrivateKey {
                reason: "is of a type other than RSA or ECDSA",
            });
        }
    };
    Ok(PrivateKey { pkcs8, key })
}

fn invalid_key(reason: &'static str) -> ContentError {
    ContentError::PrivateKey { reason }
}

fn secret_bytes(number: &BigNumRef) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(number.to_vec())
}

fn go_rsa_pkcs8(key: &PKeyRef<Private>) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let rsa = key.rsa()?;
    let (Some(p), Some(q)) = (rsa.p(), rsa.q()) else {
        return Err(invalid_key("has no RSA primes"));
    };
    let (n, e, d) = (rsa.n(), rsa.e(), rsa.d());
    if [n, e, d, p, q]
        .iter()
        .any(|v| v.is_negative() || v.num_bits() == 0)
    {
        return Err(invalid_key("contains zero or negative value"));
    }
    if e.num_bits() > 31 || e.num_bits() < 2 {
        return Err(invalid_key("has a public exponent out of range"));
    }
    let mut ctx = BigNumContext::new_secure()?;
    let one = BigNum::from_u32(1)?;
    // Go's rsa.Validate: p·q = n, and d·e ≡ 1 (mod p−1) and (mod q−1).
    let mut product = BigNum::new_secure()?;
    product.checked_mul(p, q, &mut ctx)?;
    if product.ucmp(n) != std::cmp::Ordering::Equal {
        return Err(invalid_key("has primes whose product is not its modulus"));
    }
    let mut de = BigNum::new_secure()?;
    de.checked_mul(d, e, &mut ctx)?;
    let mut p_minus_one = BigNum::new_secure()?;
    p_minus_one.checked_sub(p, &one)?;
    let mut q_minus_one = BigNum::new_secure()?;
    q_minus_one.checked_sub(q, &one)?;
    for modulus in [&p_minus_one, &q_minus_one] {
        let mut reduced = BigNum::new_secure()?;
        reduced.nnmod(&de, modulus, &mut ctx)?;
        if reduced.ucmp(&one) != std::cmp::Ordering::Equal {
            return Err(invalid_key("has a private exponent that does not invert e"));
        }
    }
    // Go's rsa.Precompute: the CRT values from d, p and q, whatever the key held.
    let mut dp = BigNum::new_secure()?;
    dp.nnmod(d, &p_minus_one, &mut ctx)?;
    let mut dq = BigNum::new_secure()?;
    dq.nnmod(d, &q_minus_one, &mut ctx)?;
    let mut qinv = BigNum::new_secure()?;
    qinv.mod_inverse(q, p, &mut ctx)?;

    let version = der::small_unsigned(0);
    let integers: Vec<Zeroizing<Vec<u8>>> = [n, e, d, p, q, &*dp, &*dq, &*qinv]
        .into_iter()
        .map(|value| der::unsigned(&secret_bytes(value)))
        .collect();
    let mut fields: Vec<&[u8]> = vec![&version];
    fields.extend(integers.iter().map(|integer| &integer[..]));
    let pkcs1 = der::constructed(der::SEQUENCE, &fields);
    let null = der::tlv(der::NULL, &[]);
    Ok(der::constructed(
        der::SEQUENCE,
        &[
            &version,
            &der::algorithm(der::oid::RSA_ENCRYPTION, &null),
            &der::tlv(der::OCTET_STRING, &pkcs1),
        ],
    ))
}

fn curve_oid(nid: Option<Nid>) -> Option<&'static [u8]> {
    match nid? {
        Nid::SECP224R1 => Some(der::oid::P224),
        Nid::X9_62_PRIME256V1 => Some(der::oid::P256),
        Nid::SECP384R1 => Some(der::oid::P384),
        Nid::SECP521R1 => Some(der::oid::P521),
        _ => None,
    }
}

fn go_ec_pkcs8(key: &PKeyRef<Private>) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let ec = key.ec_key()?;
    let group = ec.group();
    let curve = curve_oid(group.curve_name())
        .ok_or_else(|| invalid_key("is on a curve other than P-224, P-256, P-384 or P-521"))?;
    let mut ctx = BigNumContext::new_secure()?;
    let mut order = BigNum::new()?;
    group.order(&mut order, &mut ctx)?;
    let scalar = ec.private_key();
    if scalar.is_negative() || scalar.num_bits() == 0 || scalar.ucmp(&order).is_ge() {
        return Err(invalid_key("has an invalid private scalar"));
    }
    let length = (order.num_bits() + 7) / 8;
    let scalar_bytes = Zeroizing::new(scalar.to_vec_padded(length)?);
    let mut point = EcPoint::new(group)?;
    point.mul_generator2(group, scalar, &mut ctx)?;
    let public = point.to_bytes(group, PointConversionForm::UNCOMPRESSED, &mut ctx)?;

    let version = der::small_unsigned(1);
    let ec_private = der::constructed(
        der::SEQUENCE,
        &[
            &version,
            &der::tlv(der::OCTET_STRING, &scalar_bytes),
            &der::constructed(der::EXPLICIT_1, &[&der::bit_string(&public)]),
        ],
    );
    Ok(der::constructed(
        der::SEQUENCE,
        &[
            &der::small_unsigned(0),
            &der::algorithm(der::oid::EC_PUBLIC_KEY, &der::tlv(der::OID, curve)),
            &der::tlv(der::OCTET_STRING, &ec_private),
        ],
    ))
}

/// A certificate's fields that chain ordering looks at.
struct Cert {
    x509: X509,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
}

impl Cert {
    /// Parses one DER certificate with nothing after it (Go's `x509.ParseCertificate`).
    fn parse(der: &[u8]) -> Option<Self> {
        der::single_of(der, der::SEQUENCE).ok()?;
        let x509 = X509::from_der(der).ok()?;
        Some(Self {
            subject_key_id: x509.subject_key_id().map(|id| id.as_slice().to_vec()),
            authority_key_id: x509.authority_key_id().map(|id| id.as_slice().to_vec()),
            subject: x509.subject_name().to_der().ok()?,
            issuer: x509.issuer_name().to_der().ok()?,
            x509,
        })
    }

    fn holds(&self, key: &PKeyRef<Private>) -> bool {
        self.x509
            .public_key()
            .map(|public| public.public_eq(key))
            .unwrap_or(false)
    }

    fn self_issued(&self) -> bool {
        self.subject == self.issuer
    }
}

/// Azure's `fetchCertChains` link: the first other certificate whose subject key id equals
/// this one's authority key id (two absent ids do not match; an absent and an empty one do,
/// as Go compares them).
fn go_parent(certs: &[Cert], child: usize) -> Option<usize> {
    let authority = certs[child].authority_key_id.as_deref();
    (0..certs.len()).find(|&candidate| {
        let subject = certs[candidate].subject_key_id.as_deref();
        candidate != child
            && !(authority.is_none() && subject.is_none())
            && authority.unwrap_or_default() == subject.unwrap_or_default()
    })
}

/// A link by names: the first other certificate whose subject is this one's issuer (none for a
/// self-issued certificate).
fn name_parent(certs: &[Cert], child: usize) -> Option<usize> {
    if certs[child].self_issued() {
        return None;
    }
    (0..certs.len())
        .find(|&candidate| candidate != child && certs[candidate].subject == certs[child].issuer)
}

/// Follows `parents` from `leaf`; `None` on a cycle.
fn walk(parents: &[Option<usize>], leaf: usize) -> Option<Vec<usize>> {
    let mut order = Vec::new();
    let mut current = Some(leaf);
    while let Some(index) = current {
        if order.len() >= parents.len() {
            return None;
        }
        order.push(index);
        current = parents[index];
    }
    Some(order)
}

/// The order `--construct-pem-chain` writes certificates in: Azure's (links by key ids, the
/// leaf the first certificate no other names as issuer) when it covers every certificate; else
/// links by names from the certificate holding a private key (or the one certificate that
/// issues no other); else the original order.
fn chain_order(certs: &[Cert], keys: &[PrivateKey]) -> Vec<usize> {
    let count = certs.len();
    let by_key_ids: Vec<Option<usize>> = (0..count).map(|i| go_parent(certs, i)).collect();
    if let Some(order) = first_non_parent(&by_key_ids).and_then(|leaf| walk(&by_key_ids, leaf))
        && order.len() == count
    {
        return order;
    }

    let by_names: Vec<Option<usize>> = (0..count).map(|i| name_parent(certs, i)).collect();
    let key_holder = certs
        .iter()
        .position(|cert| keys.iter().any(|key| cert.holds(&key.key)));
    let leaf = key_holder.or_else(|| {
        let mut leaves = (0..count).filter(|i| !by_names.contains(&Some(*i)));
        match (leaves.next(), leaves.next()) {
            (Some(leaf), None) => Some(leaf),
            _ => None,
        }
    });
    if let Some(order) = leaf.and_then(|leaf| walk(&by_names, leaf))
        && order.len() == count
    {
        return order;
    }
    (0..count).collect()
}

fn first_non_parent(parents: &[Option<usize>]) -> Option<usize> {
    (0..parents.len()).find(|index| !parents.contains(&Some(*index)))
}

/// The files of `objectFormat: tls`.
struct TlsFiles {
    /// `tls.crt`: the leaf and the chain above it, without a self-issued root.
    crt: Zeroizing<Vec<u8>>,
    /// `tls.key`: the private key, PKCS#8 PEM.
    key: Zeroizing<Vec<u8>>,
    /// `ca.crt`: every certificate after the leaf.
    ca: Zeroizing<Vec<u8>>,
}

fn tls_files(bundle: &Bundle) -> Result<TlsFiles, ContentError> {
    let (key, certs, order) = bundle.leaf_first()?;
    let mut crt = Zeroizing::new(Vec::new());
    let mut ca = Zeroizing::new(Vec::new());
    let mut in_chain = true;
    for (position, &index) in order.iter().enumerate() {
        let block = pem::encode(b"CERTIFICATE", &[], &bundle.certs[index]);
        if position > 0 {
            ca.extend_from_slice(&block);
            // The chain above the leaf ends where links end; a self-issued root stays out.
            let linked = go_parent(&certs, order[position - 1])
                .or_else(|| name_parent(&certs, order[position - 1]))
                == Some(index);
            in_chain = in_chain && linked;
        }
        if position == 0 || (in_chain && !certs[index].self_issued()) {
            crt.extend_from_slice(&block);
        }
    }
    Ok(TlsFiles {
        crt,
        key: pem::encode(b"PRIVATE KEY", &[], &key.pkcs8),
        ca,
    })
}

/// A new PFX of the key, its certificate and the rest of the chain, under `password`.
fn reexport_pfx(
    bundle: &Bundle,
    password: &SecretString,
) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let (key, certs, order) = bundle.leaf_first()?;
    let mut chain = Stack::new()?;
    for &index in &order[1..] {
        chain.push(certs[index].x509.clone())?;
    }
    let mut builder = Pkcs12::builder();
    builder
        .pkey(&key.key)
        .cert(&certs[order[0]].x509)
        .ca(chain)
        .key_algorithm(Nid::AES_256_CBC)
        .cert_algorithm(Nid::AES_256_CBC)
        .mac_md(MessageDigest::sha256());
    let pfx = builder.build2(password.expose_secret())?;
    Ok(Zeroizing::new(pfx.to_der()?))
}

/// A key object's public key as Azure writes it: Go's `x509.MarshalPKIXPublicKey` in PEM.
fn public_key_pem(key: &FetchedKey) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let spki = match key.kty.as_str() {
        "RSA" | "RSA-HSM" => rsa_spki(key)?,
        "EC" | "EC-HSM" => ec_spki(key)?,
        other => {
            return Err(ContentError::UnsupportedKeyType {
                kty: other.to_owned(),
            });
        }
    };
    Ok(pem::encode(b"PUBLIC KEY", &[], &spki))
}

fn field<'a>(value: &'a Option<Vec<u8>>, name: &'static str) -> Result<&'a [u8], ContentError> {
    value
        .as_deref()
        .ok_or(ContentError::MissingKeyField { field: name })
}

fn significant(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|&&byte| byte == 0).count();
    &bytes[skip..]
}

/// SubjectPublicKeyInfo { rsaEncryption NULL, RSAPublicKey { n, e } }.
fn rsa_spki(key: &FetchedKey) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let n = significant(field(&key.n, "n")?);
    let e = significant(field(&key.e, "e")?);
    if n.is_empty() {
        return Err(ContentError::InvalidPublicKey {
            reason: "has a zero modulus",
        });
    }
    // Go reads e into an int64: a longer exponent would be silently truncated there.
    if e.is_empty() || e.len() > 8 || (e.len() == 8 && e[0] & 0x80 != 0) {
        return Err(ContentError::InvalidPublicKey {
            reason: "has a public exponent that is zero or does not fit in 63 bits",
        });
    }
    let public = der::constructed(der::SEQUENCE, &[&der::unsigned(n), &der::unsigned(e)]);
    let null = der::tlv(der::NULL, &[]);
    Ok(der::constructed(
        der::SEQUENCE,
        &[
            &der::algorithm(der::oid::RSA_ENCRYPTION, &null),
            &der::bit_string(&public),
        ],
    ))
}

/// SubjectPublicKeyInfo { id-ecPublicKey namedCurve, uncompressed point }.
fn ec_spki(key: &FetchedKey) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let (nid, curve) = match key.crv.as_deref() {
        Some("P-256") => (Nid::X9_62_PRIME256V1, der::oid::P256),
        Some("P-384") => (Nid::SECP384R1, der::oid::P384),
        Some("P-521") => (Nid::SECP521R1, der::oid::P521),
        other => {
            return Err(ContentError::UnsupportedCurve {
                crv: other.map(str::to_owned),
            });
        }
    };
    let x = significant(field(&key.x, "x")?);
    let y = significant(field(&key.y, "y")?);
    let group = EcGroup::from_curve_name(nid)?;
    let size = usize::try_from(group.degree().div_ceil(8)).unwrap_or(usize::MAX);
    let not_on_curve = ContentError::InvalidPublicKey {
        reason: "is not a point on its curve",
    };
    if x.len() > size || y.len() > size {
        return Err(not_on_curve);
    }
    let mut point = vec![0u8; 1 + 2 * size];
    point[0] = 0x04;
    point[1 + size - x.len()..1 + size].copy_from_slice(x);
    point[1 + 2 * size - y.len()..].copy_from_slice(y);
    let mut ctx = BigNumContext::new()?;
    if EcPoint::from_bytes(&group, &point, &mut ctx).is_err() {
        return Err(not_on_curve);
    }
    Ok(der::constructed(
        der::SEQUENCE,
        &[
            &der::algorithm(der::oid::EC_PUBLIC_KEY, &der::tlv(der::OID, curve)),
            &der::bit_string(&point),
        ],
    ))
}
