//! X.509 and PKCS#12 through OpenSSL, for the certificates API: self-signed certificates and
//! CSRs from a policy's subject, SANs, key usage and EKUs; PFX and PEM files parsed on import
//! and built for a certificate's backing secret.
//!
//! A backing PFX is what golang.org/x/crypto/pkcs12 (the CSI provider's decoder) accepts: an
//! empty password, a SHA-1 MAC, PBE-SHA1-3DES for both bags and a shrouded key bag. A backing
//! PEM is an unencrypted PKCS#8 key, then the leaf, then the chain, 64-column base64 and `\n`.
//! Errors name what was wrong with a file, never its bytes or its password.

use std::fmt;

use base64::Engine;
use openssl::asn1::{Asn1Integer, Asn1Time, Asn1TimeRef};
use openssl::bn::BigNum;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509Name, X509NameBuilder, X509Ref, X509ReqBuilder};
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use crate::crypto::fill_random;

/// What building or reading a certificate file refused.
#[derive(Debug)]
pub enum PkiError {
    /// The subject is not a distinguished name of known attributes (`CN=a, O=b`).
    InvalidSubject(String),
    /// A key usage name the service does not know.
    InvalidKeyUsage(String),
    /// An extended key usage that is not a dotted OID.
    InvalidEku(String),
    /// The PFX could not be read: not PKCS#12, a wrong password, or an algorithm OpenSSL 3
    /// refuses by default (RC2-40).
    UnreadablePfx,
    /// The PEM has no PKCS#8 private key (`BEGIN PRIVATE KEY` or, with a password,
    /// `BEGIN ENCRYPTED PRIVATE KEY`).
    NoPkcs8Key,
    /// The file holds no certificate.
    NoCertificate,
    /// The file holds no private key.
    NoPrivateKey,
    /// No certificate in the file belongs to the private key.
    KeyMismatch,
    /// Base64 that does not decode.
    NotBase64,
    /// OpenSSL failed while building or encoding.
    OpenSsl(ErrorStack),
}

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidSubject(subject) => write!(
                f,
                "The subject '{subject}' is not a valid X.500 distinguished name."
            ),
            Self::InvalidKeyUsage(usage) => write!(f, "The key usage '{usage}' is not valid."),
            Self::InvalidEku(eku) => {
                write!(f, "The enhanced key usage '{eku}' is not a valid OID.")
            }
            Self::UnreadablePfx => f.write_str(
                "The specified PEM X.509 certificate content is in an unexpected format or the \
                 PFX password is wrong. Please check if certificate is in valid PKCS#12 format.",
            ),
            Self::NoPkcs8Key => f.write_str(
                "The PEM file must hold an unencrypted PKCS#8 private key (BEGIN PRIVATE KEY) \
                 or, with a password, an encrypted one (BEGIN ENCRYPTED PRIVATE KEY).",
            ),
            Self::NoCertificate => f.write_str("The file holds no X.509 certificate."),
            Self::NoPrivateKey => f.write_str("The file holds no private key."),
            Self::KeyMismatch => f.write_str("No certificate in the file matches its private key."),
            Self::NotBase64 => f.write_str("The certificate content is not valid base64."),
            Self::OpenSsl(_) => f.write_str("The certificate could not be built."),
        }
    }
}

impl std::error::Error for PkiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::OpenSsl(error) => Some(error),
            _ => None,
        }
    }
}

impl From<ErrorStack> for PkiError {
    fn from(error: ErrorStack) -> Self {
        Self::OpenSsl(error)
    }
}

/// A private key with its certificate and chain (leaf first), as read from a file.
pub struct KeyAndChain {
    /// The private key.
    pub key: PKey<Private>,
    /// The certificate of the key.
    pub leaf: X509,
    /// The other certificates, in file order.
    pub chain: Vec<X509>,
}

/// What a new certificate or CSR says, from the policy's `x509_props`.
#[derive(Debug, Clone, Default)]
pub struct CertificateRequest {
    /// `CN=..., O=...`; may be empty when SANs are given.
    pub subject: String,
    /// SAN DNS names.
    pub dns_names: Vec<String>,
    /// SAN e-mail addresses.
    pub emails: Vec<String>,
    /// SAN IP addresses.
    pub ip_addresses: Vec<String>,
    /// SAN URIs.
    pub uris: Vec<String>,
    /// Extended key usage OIDs.
    pub ekus: Vec<String>,
    /// Key usage names (`digitalSignature`, `keyEncipherment`, ...).
    pub key_usage: Vec<String>,
}

fn subject_name(subject: &str) -> Result<X509Name, PkiError> {
    let invalid = || PkiError::InvalidSubject(subject.to_owned());
    let mut name = X509NameBuilder::new()?;
    for part in subject
        .split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (field, value) = part.split_once('=').ok_or_else(invalid)?;
        let field = match field.trim().to_ascii_uppercase().as_str() {
            "CN" => "CN",
            "O" => "O",
            "OU" => "OU",
            "L" => "L",
            "S" | "ST" => "ST",
            "C" => "C",
            "E" | "EMAILADDRESS" => "emailAddress",
            "DC" => "DC",
            "STREET" => "street",
            "SERIALNUMBER" => "serialNumber",
            _ => return Err(invalid()),
        };
        name.append_entry_by_text(field, value.trim().trim_matches('"'))
            .map_err(|_| invalid())?;
    }
    Ok(name.build())
}

fn key_usage(names: &[String]) -> Result<Option<KeyUsage>, PkiError> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut usage = KeyUsage::new();
    for name in names {
        match name.to_ascii_lowercase().as_str() {
            "digitalsignature" => usage.digital_signature(),
            "nonrepudiation" => usage.non_repudiation(),
            "keyencipherment" => usage.key_encipherment(),
            "dataencipherment" => usage.data_encipherment(),
            "keyagreement" => usage.key_agreement(),
            "keycertsign" => usage.key_cert_sign(),
            "crlsign" => usage.crl_sign(),
            "encipheronly" => usage.encipher_only(),
            "decipheronly" => usage.decipher_only(),
            _ => return Err(PkiError::InvalidKeyUsage(name.clone())),
        };
    }
    Ok(Some(usage))
}

fn extended_key_usage(request: &CertificateRequest) -> Option<ExtendedKeyUsage> {
    if request.ekus.is_empty() {
        return None;
    }
    let mut ekus = ExtendedKeyUsage::new();
    for oid in &request.ekus {
        ekus.other(oid);
    }
    Some(ekus)
}

fn alternative_names(request: &CertificateRequest) -> Option<SubjectAlternativeName> {
    let mut san = SubjectAlternativeName::new();
    let mut any = false;
    for name in &request.dns_names {
        san.dns(name);
        any = true;
    }
    for name in &request.emails {
        san.email(name);
        any = true;
    }
    for name in &request.ip_addresses {
        san.ip(name);
        any = true;
    }
    for name in &request.uris {
        san.uri(name);
        any = true;
    }
    any.then_some(san)
}

fn random_serial() -> Result<Asn1Integer, PkiError> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes).map_err(|_| PkiError::OpenSsl(ErrorStack::get()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(BigNum::from_slice(&bytes)?.to_asn1_integer()?)
}

/// Checks a request's subject, key usage and EKU OIDs without building anything (policy
/// validation).
pub fn validate(request: &CertificateRequest) -> Result<(), PkiError> {
    subject_name(&request.subject)?;
    key_usage(&request.key_usage)?;
    for oid in &request.ekus {
        let dotted = !oid.is_empty() && oid.split('.').all(|arc| arc.parse::<u64>().is_ok());
        if !dotted || openssl::asn1::Asn1Object::from_str(oid).is_err() {
            return Err(PkiError::InvalidEku(oid.clone()));
        }
    }
    Ok(())
}

/// A self-signed certificate for `key`, valid from `not_before` to `not_after` (unix seconds),
/// signed with SHA-256.
pub fn self_signed(
    key: &PKeyRef<Private>,
    request: &CertificateRequest,
    not_before: i64,
    not_after: i64,
) -> Result<X509, PkiError> {
    let name = subject_name(&request.subject)?;
    let mut builder = X509Builder::new()?;
    builder.set_version(2)?;
    let serial = random_serial()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(key)?;
    let (not_before, not_after) = (
        Asn1Time::from_unix(not_before)?,
        Asn1Time::from_unix(not_after)?,
    );
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    builder.append_extension(BasicConstraints::new().build()?)?;
    if let Some(mut usage) = key_usage(&request.key_usage)? {
        builder.append_extension(usage.critical().build()?)?;
    }
    if let Some(ekus) = extended_key_usage(request) {
        builder.append_extension(ekus.build()?)?;
    }
    if let Some(san) = alternative_names(request) {
        let extension = san.build(&builder.x509v3_context(None, None))?;
        builder.append_extension(extension)?;
    }
    let subject_key_id = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
    builder.append_extension(subject_key_id)?;
    let authority_key_id = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&builder.x509v3_context(None, None))?;
    builder.append_extension(authority_key_id)?;
    builder.sign(key, MessageDigest::sha256())?;
    Ok(builder.build())
}

/// A PKCS#10 certificate signing request (DER) for `key`, for an issuer outside the vault.
pub fn csr(key: &PKeyRef<Private>, request: &CertificateRequest) -> Result<Vec<u8>, PkiError> {
    let mut builder = X509ReqBuilder::new()?;
    builder.set_version(0)?;
    let subject = subject_name(&request.subject)?;
    builder.set_subject_name(&subject)?;
    builder.set_pubkey(key)?;
    let mut extensions = Stack::new()?;
    if let Some(mut usage) = key_usage(&request.key_usage)? {
        extensions.push(usage.critical().build()?)?;
    }
    if let Some(ekus) = extended_key_usage(request) {
        extensions.push(ekus.build()?)?;
    }
    if let Some(san) = alternative_names(request) {
        extensions.push(san.build(&builder.x509v3_context(None))?)?;
    }
    if !extensions.is_empty() {
        builder.add_extensions(&extensions)?;
    }
    builder.sign(key, MessageDigest::sha256())?;
    Ok(builder.build().to_der()?)
}

/// A PFX of `key`, `leaf` and `chain` with an empty password, in the form Go's pkcs12 decoder
/// reads (SHA-1 MAC, PBE-SHA1-3DES, shrouded key bag).
pub fn pfx(
    key: &PKeyRef<Private>,
    leaf: &X509Ref,
    chain: &[X509],
) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let mut builder = Pkcs12::builder();
    builder
        .pkey(key)
        .cert(leaf)
        .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .mac_md(MessageDigest::sha1());
    if !chain.is_empty() {
        let mut stack = Stack::new()?;
        for cert in chain {
            stack.push(cert.clone())?;
        }
        builder.ca(stack);
    }
    Ok(Zeroizing::new(builder.build2("")?.to_der()?))
}

/// The PEM file of a backing secret: unencrypted PKCS#8 key, leaf, chain.
pub fn pem(
    key: &PKeyRef<Private>,
    leaf: &X509Ref,
    chain: &[X509],
) -> Result<Zeroizing<String>, PkiError> {
    let mut bytes = Zeroizing::new(key.private_key_to_pem_pkcs8()?);
    bytes.extend_from_slice(&leaf.to_pem()?);
    for cert in chain {
        bytes.extend_from_slice(&cert.to_pem()?);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| PkiError::NoPkcs8Key)?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Orders certificates leaf first: the one whose public key is `key`'s.
fn with_leaf_first(key: PKey<Private>, certs: Vec<X509>) -> Result<KeyAndChain, PkiError> {
    if certs.is_empty() {
        return Err(PkiError::NoCertificate);
    }
    let position = certs
        .iter()
        .position(|cert| {
            cert.public_key()
                .map(|public| public.public_eq(&key))
                .unwrap_or(false)
        })
        .ok_or(PkiError::KeyMismatch)?;
    let mut chain = certs;
    let leaf = chain.remove(position);
    Ok(KeyAndChain { key, leaf, chain })
}

/// Reads a PFX (DER) with its password (`""` for none).
pub fn parse_pfx(der: &[u8], password: &str) -> Result<KeyAndChain, PkiError> {
    let parsed = Pkcs12::from_der(der)
        .and_then(|pfx| pfx.parse2(password))
        .map_err(|_| PkiError::UnreadablePfx)?;
    let key = parsed.pkey.ok_or(PkiError::NoPrivateKey)?;
    let mut certs: Vec<X509> = parsed.cert.into_iter().collect();
    if let Some(ca) = parsed.ca {
        certs.extend(ca);
    }
    with_leaf_first(key, certs)
}

/// Reads a PEM file holding a PKCS#8 private key (encrypted when `password` is given) and its
/// certificates.
pub fn parse_pem(text: &[u8], password: Option<&str>) -> Result<KeyAndChain, PkiError> {
    let text_str = std::str::from_utf8(text).map_err(|_| PkiError::NoPkcs8Key)?;
    let block = |label: &str| -> Option<&str> {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = text_str.find(&begin)?;
        let stop = text_str[start..].find(&end)? + start + end.len();
        Some(&text_str[start..stop])
    };
    let key = if let Some(block) = block("PRIVATE KEY") {
        PKey::private_key_from_pem(block.as_bytes()).map_err(|_| PkiError::NoPkcs8Key)?
    } else if let Some(block) = block("ENCRYPTED PRIVATE KEY") {
        PKey::private_key_from_pem_passphrase(
            block.as_bytes(),
            password.unwrap_or_default().as_bytes(),
        )
        .map_err(|_| PkiError::NoPkcs8Key)?
    } else {
        return Err(PkiError::NoPkcs8Key);
    };
    let certs = X509::stack_from_pem(text).map_err(|_| PkiError::NoCertificate)?;
    with_leaf_first(key, certs)
}

/// Decodes standard base64 (padding optional), as Python sends import values and x5c entries.
pub fn decode_base64(text: &str) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::{DecodePaddingMode, general_purpose};
    const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD_LENIENT
        .decode(&compact)
        .or_else(|_| general_purpose::URL_SAFE_NO_PAD.decode(compact.trim_end_matches('=')))
        .map(Zeroizing::new)
        .map_err(|_| PkiError::NotBase64)
}

/// Standard base64 with padding (`cer`, a PFX secret value, a CSR).
pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Converts a backing secret's base64 PFX (empty password) to its PEM form (`outContentType`).
pub fn pfx_base64_to_pem(value: &str) -> Result<Zeroizing<String>, PkiError> {
    let der = decode_base64(value)?;
    let parsed = parse_pfx(&der, "")?;
    pem(&parsed.key, &parsed.leaf, &parsed.chain)
}

/// `x5t`: base64url (no padding) SHA-1 of the DER certificate.
pub fn x5t(der: &[u8]) -> String {
    crate::b64::encode(&Sha1::digest(der))
}

/// The subject of a certificate as the service writes it in a policy (`CN=a, O=b`).
pub fn subject_text(cert: &X509Ref) -> String {
    cert.subject_name()
        .entries()
        .filter_map(|entry| {
            let short = entry.object().nid().short_name().ok()?;
            let short = match short {
                "emailAddress" => "E",
                "stateOrProvinceName" => "ST",
                other => other,
            };
            let value = entry.data().to_string().ok()?;
            Some(format!("{short}={value}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SAN DNS names of a certificate.
pub fn dns_names(cert: &X509Ref) -> Vec<String> {
    cert.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|name| name.dnsname().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Unix seconds of an ASN.1 time.
pub fn unix_time(time: &Asn1TimeRef) -> i64 {
    Asn1Time::from_unix(0)
        .and_then(|epoch| epoch.diff(time))
        .map(|diff| i64::from(diff.days) * 86_400 + i64::from(diff.secs))
        .unwrap_or(0)
}

/// `unix` plus `months` calendar months (day clamped to the month's length), as a
/// certificate's validity in months is counted.
pub fn add_months(unix: i64, months: u32) -> i64 {
    let days = unix.div_euclid(86_400);
    let seconds = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let total = year * 12 + i64::from(month - 1) + i64::from(months);
    let (year, month) = (
        total.div_euclid(12),
        u32::try_from(total.rem_euclid(12)).unwrap_or(0) + 1,
    );
    let day = day.min(days_in_month(year, month));
    days_from_civil(year, month, day) * 86_400 + seconds
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::rsa::Rsa;

    fn rsa_key() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }

    fn request() -> CertificateRequest {
        CertificateRequest {
            subject: "CN=emulator, O=kube-kms".to_owned(),
            dns_names: vec!["example.test".to_owned()],
            emails: vec![],
            ip_addresses: vec!["127.0.0.1".to_owned()],
            uris: vec![],
            ekus: vec!["1.3.6.1.5.5.7.3.1".to_owned()],
            key_usage: vec!["digitalSignature".to_owned(), "keyEncipherment".to_owned()],
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn backing_pfx_is_what_gos_pkcs12_decoder_reads() {
        let key = rsa_key();
        let cert = self_signed(&key, &request(), 1_700_000_000, 1_731_536_000).unwrap();
        let der = pfx(&key, &cert, &[]).unwrap();
        // PBE-SHA1-3DES (1.2.840.113549.1.12.1.3), SHA-1 in the MAC, no PBES2 (1.2.840.113549.1.5.13).
        assert!(contains(
            &der,
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03]
        ));
        assert!(contains(&der, &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a]));
        assert!(!contains(
            &der,
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d]
        ));
        // pkcs8ShroudedKeyBag (1.2.840.113549.1.12.10.1.2).
        assert!(contains(
            &der,
            &[
                0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02
            ]
        ));
        let parsed = parse_pfx(&der, "").unwrap();
        assert_eq!(parsed.leaf.to_der().unwrap(), cert.to_der().unwrap());
        assert!(parsed.key.public_eq(&key));
    }

    #[test]
    fn self_signed_certificates_carry_the_policy() {
        let key = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap(),
        )
        .unwrap();
        let cert = self_signed(&key, &request(), 1_700_000_000, 1_731_536_000).unwrap();
        assert_eq!(unix_time(cert.not_before()), 1_700_000_000);
        assert_eq!(unix_time(cert.not_after()), 1_731_536_000);
        let cn = cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .unwrap();
        assert_eq!(cn.data().to_string().unwrap(), "emulator");
        let sans = cert.subject_alt_names().unwrap();
        assert_eq!(sans.get(0).unwrap().dnsname(), Some("example.test"));
        assert_eq!(x5t(&cert.to_der().unwrap()).len(), 27);
        assert!(!csr(&key, &request()).unwrap().is_empty());
    }

    #[test]
    fn pem_is_key_first_and_reads_back() {
        let key = rsa_key();
        let cert = self_signed(&key, &request(), 1_700_000_000, 1_731_536_000).unwrap();
        let ca_key = rsa_key();
        let ca = self_signed(&ca_key, &request(), 1_700_000_000, 1_731_536_000).unwrap();
        let text = pem(&key, &cert, std::slice::from_ref(&ca)).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(text.ends_with("-----END CERTIFICATE-----\n"));
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2);
        // Chain first in the file: the leaf is still found by its key.
        let reordered = format!(
            "{}{}",
            String::from_utf8(ca.to_pem().unwrap()).unwrap(),
            text.as_str()
        );
        let parsed = parse_pem(reordered.as_bytes(), None).unwrap();
        assert_eq!(parsed.leaf.to_der().unwrap(), cert.to_der().unwrap());
        assert_eq!(parsed.chain.len(), 2);
        let traditional =
            String::from_utf8(key.rsa().unwrap().private_key_to_pem().unwrap()).unwrap();
        assert!(matches!(
            parse_pem(traditional.as_bytes(), None),
            Err(PkiError::NoPkcs8Key)
        ));
    }

    #[test]
    fn subjects_and_usages_are_validated() {
        assert!(subject_name("CN=a, O=b, OU=c, C=DE, ST=x, L=y, E=a@b.c").is_ok());
        assert!(matches!(
            subject_name("XX=a"),
            Err(PkiError::InvalidSubject(_))
        ));
        assert!(matches!(
            subject_name("CN"),
            Err(PkiError::InvalidSubject(_))
        ));
        assert!(key_usage(&["bogus".to_owned()]).is_err());
        let mut bad_eku = request();
        bad_eku.ekus.push("serverAuth".to_owned());
        assert!(matches!(validate(&bad_eku), Err(PkiError::InvalidEku(_))));
        assert!(validate(&request()).is_ok());
    }

    #[test]
    fn months_are_calendar_months() {
        // 2024-01-31T12:00:00Z + 1 month = 2024-02-29T12:00:00Z (leap year, day clamped).
        assert_eq!(add_months(1_706_702_400, 1), 1_709_208_000);
        // 2023-03-15T00:00:00Z + 12 months = 2024-03-15T00:00:00Z.
        assert_eq!(add_months(1_678_838_400, 12), 1_710_460_800);
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    }
}
