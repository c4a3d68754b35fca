//! Just enough DER to read a PFX and to write PKCS#8 and SubjectPublicKeyInfo the way Go does.
//!
//! The reader is as strict as Go's encoding/asn1 where Azure's provider relies on it: definite,
//! minimal lengths, low tag numbers, minimally encoded integers. Whether trailing bytes are an
//! error is the caller's choice ([`single`] refuses them, as x/crypto/pkcs12's `unmarshal`
//! does; a structure's [`Reader`] may stop early, as Go's struct decoding allows).
//!
//! The writer builds into zeroizing buffers: what it encodes is often a private key.

use std::fmt;

use zeroize::Zeroizing;

pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const SET: u8 = 0x31;
pub(super) const INTEGER: u8 = 0x02;
pub(super) const BIT_STRING: u8 = 0x03;
pub(super) const OCTET_STRING: u8 = 0x04;
pub(super) const NULL: u8 = 0x05;
pub(super) const OID: u8 = 0x06;
/// `[0] EXPLICIT` (constructed, context-specific 0).
pub(super) const EXPLICIT_0: u8 = 0xa0;
/// `[1] EXPLICIT` (constructed, context-specific 1).
pub(super) const EXPLICIT_1: u8 = 0xa1;
/// `[0] IMPLICIT` of a primitive type (e.g. EncryptedContentInfo's OCTET STRING).
pub(super) const IMPLICIT_0: u8 = 0x80;

/// Object identifiers, as the content octets of their DER encoding.
pub(super) mod oid {
    /// PKCS#7 data.
    pub const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    /// PKCS#7 encryptedData.
    pub const ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
    /// SHA-1.
    pub const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
    /// pbeWithSHAAnd3-KeyTripleDES-CBC.
    pub const PBE_SHA1_3DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];
    /// pbewithSHAAnd40BitRC2-CBC.
    pub const PBE_SHA1_RC2_40: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x06];
    /// pkcs8ShroudedKeyBag.
    pub const SHROUDED_KEY_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
    ];
    /// certBag.
    pub const CERT_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
    ];
    /// x509Certificate (a certBag's certificate type).
    pub const X509_CERTIFICATE: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
    /// friendlyName (a bag attribute).
    pub const FRIENDLY_NAME: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x14];
    /// localKeyID (a bag attribute).
    pub const LOCAL_KEY_ID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x15];
    /// Microsoft CSP name (a bag attribute).
    pub const MICROSOFT_CSP_NAME: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x11, 0x01];
    /// rsaEncryption.
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// id-ecPublicKey.
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// secp224r1 (P-224).
    pub const P224: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x21];
    /// prime256v1 (P-256).
    pub const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    /// secp384r1 (P-384).
    pub const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    /// secp521r1 (P-521).
    pub const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
}

/// Why a PFX's DER could not be read. Says nothing about the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerError {
    /// The input ends inside an element.
    Truncated,
    /// Indefinite (BER) length, non-minimal length or a high tag number.
    NotDer,
    /// An element other than the one the structure requires.
    UnexpectedTag,
    /// Bytes after the element where none may follow.
    TrailingData,
    /// An INTEGER that is empty, not minimally encoded or out of range.
    BadInteger,
}

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "truncated element",
            Self::NotDer => "not DER (indefinite or non-minimal length, or high tag number)",
            Self::UnexpectedTag => "unexpected element",
            Self::TrailingData => "trailing data",
            Self::BadInteger => "bad integer",
        })
    }
}

/// One element: its tag, its content octets and its whole encoding.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub whole: &'a [u8],
}

/// Reads elements one after another.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element, whatever it is.
    pub fn any(&mut self) -> Result<Tlv<'a>, DerError> {
        let bytes = self.rest;
        let (&tag, after_tag) = bytes.split_first().ok_or(DerError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::NotDer);
        }
        let (&first, mut after_length) = after_tag.split_first().ok_or(DerError::Truncated)?;
        let length = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            // 0x80 is BER's indefinite length; more than 4 length octets is no PFX we read.
            if count == 0 || count > 4 {
                return Err(DerError::NotDer);
            }
            let octets = after_length.get(..count).ok_or(DerError::Truncated)?;
            if octets[0] == 0 {
                return Err(DerError::NotDer);
            }
            let length = octets
                .iter()
                .fold(0usize, |length, &octet| (length << 8) | usize::from(octet));
            if length < 0x80 {
                return Err(DerError::NotDer);
            }
            after_length = &after_length[count..];
            length
        };
        let content = after_length.get(..length).ok_or(DerError::Truncated)?;
        let header = bytes.len() - after_length.len();
        let whole = &bytes[..header + length];
        self.rest = &after_length[length..];
        Ok(Tlv {
            tag,
            content,
            whole,
        })
    }

    /// The next element's content, which must have `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        let element = self.any()?;
        if element.tag == tag {
            Ok(element.content)
        } else {
            Err(DerError::UnexpectedTag)
        }
    }

    /// The next element's content if it has `tag`; nothing (and nothing read) otherwise.
    pub fn optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, DerError> {
        if self.peek_tag() == Some(tag) {
            self.expect(tag).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The next element, an INTEGER that fits in an `i64`.
    pub fn small_integer(&mut self) -> Result<i64, DerError> {
        integer(self.expect(INTEGER)?)
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DerError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DerError::TrailingData)
        }
    }
}

/// The one element `bytes` holds, with nothing after it.
pub(super) fn single(bytes: &[u8]) -> Result<Tlv<'_>, DerError> {
    let mut reader = Reader::new(bytes);
    let element = reader.any()?;
    reader.finish()?;
    Ok(element)
}

/// The one element `bytes` holds, which must have `tag`: its content.
pub(super) fn single_of(bytes: &[u8], tag: u8) -> Result<&[u8], DerError> {
    let element = single(bytes)?;
    if element.tag == tag {
        Ok(element.content)
    } else {
        Err(DerError::UnexpectedTag)
    }
}

/// An INTEGER's content as an `i64`, refusing non-minimal encodings as Go does.
fn integer(content: &[u8]) -> Result<i64, DerError> {
    match content {
        [] => return Err(DerError::BadInteger),
        [0x00, next, ..] if next & 0x80 == 0 => return Err(DerError::BadInteger),
        [0xff, next, ..] if next & 0x80 != 0 => return Err(DerError::BadInteger),
        _ if content.len() > 8 => return Err(DerError::BadInteger),
        _ => {}
    }
    let negative = content[0] & 0x80 != 0;
    let start: i64 = if negative { -1 } else { 0 };
    Ok(content
        .iter()
        .fold(start, |value, &octet| (value << 8) | i64::from(octet)))
}

/// An object identifier's content octets in dotted form (for error messages).
pub(super) fn oid_text(content: &[u8]) -> String {
    let mut arcs: Vec<u128> = Vec::new();
    let mut value: u128 = 0;
    for &octet in content {
        value = (value << 7) | u128::from(octet & 0x7f);
        if octet & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
        if value > u128::from(u64::MAX) {
            return "(unreadable OID)".to_owned();
        }
    }
    let text: Vec<String> = arcs.iter().map(u128::to_string).collect();
    text.join(".")
}

/// One element: `tag`, length, `content`.
pub(super) fn tlv(tag: u8, content: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(content.len() + 6));
    out.push(tag);
    let length = content.len();
    if length < 0x80 {
        // Lossless: length < 0x80.
        out.push(length as u8);
    } else {
        let octets = length.to_be_bytes();
        let skip = octets.iter().take_while(|&&octet| octet == 0).count();
        let significant = &octets[skip..];
        // Lossless: a usize has at most 8 (< 0x80) octets.
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// A constructed element of `parts` in order (a SEQUENCE, or a `[n] EXPLICIT` wrapper).
pub(super) fn constructed(tag: u8, parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let mut content = Zeroizing::new(Vec::with_capacity(parts.iter().map(|p| p.len()).sum()));
    for part in parts {
        content.extend_from_slice(part);
    }
    tlv(tag, &content)
}

/// A non-negative INTEGER from its big-endian magnitude (leading zeros ignored), as Go's
/// `big.Int` marshals it.
pub(super) fn unsigned(magnitude: &[u8]) -> Zeroizing<Vec<u8>> {
    let skip = magnitude.iter().take_while(|&&octet| octet == 0).count();
    let significant = &magnitude[skip..];
    let mut content = Zeroizing::new(Vec::with_capacity(significant.len() + 1));
    if significant.first().is_none_or(|&octet| octet & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(significant);
    tlv(INTEGER, &content)
}

/// A small INTEGER (a version number).
pub(super) fn small_unsigned(value: u8) -> Zeroizing<Vec<u8>> {
    unsigned(&[value])
}

/// A BIT STRING with no unused bits.
pub(super) fn bit_string(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut content = Zeroizing::new(Vec::with_capacity(bytes.len() + 1));
    content.push(0);
    content.extend_from_slice(bytes);
    tlv(BIT_STRING, &content)
}

/// An AlgorithmIdentifier: `algorithm` and its parameters element (already encoded).
pub(super) fn algorithm(algorithm: &[u8], parameters: &[u8]) -> Zeroizing<Vec<u8>> {
    constructed(SEQUENCE, &[&tlv(OID, algorithm), parameters])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_must_be_definite_and_minimal() {
        assert_eq!(single(&[0x04, 0x80]).unwrap_err(), DerError::NotDer);
        assert_eq!(
            single(&[0x04, 0x81, 0x01, 0x00]).unwrap_err(),
            DerError::NotDer
        );
        assert_eq!(
            single(&[0x04, 0x82, 0x00, 0x80]).unwrap_err(),
            DerError::NotDer
        );
        assert_eq!(
            single(&[0x04, 0x02, 0x00]).unwrap_err(),
            DerError::Truncated
        );
        assert_eq!(
            single(&[0x04, 0x00, 0x00]).unwrap_err(),
            DerError::TrailingData
        );
        let long = [&[0x04, 0x81, 0x80][..], &[7; 0x80]].concat();
        assert_eq!(single(&long).unwrap().content.len(), 0x80);
    }

    #[test]
    fn integers_must_be_minimal() {
        assert_eq!(integer(&[0x03]), Ok(3));
        assert_eq!(integer(&[0x00, 0x80]), Ok(128));
        assert_eq!(integer(&[0xff]), Ok(-1));
        assert_eq!(integer(&[0x00, 0x01]), Err(DerError::BadInteger));
        assert_eq!(integer(&[0xff, 0x80]), Err(DerError::BadInteger));
        assert_eq!(integer(&[]), Err(DerError::BadInteger));
    }

    #[test]
    fn writing_matches_go_big_int_and_long_form_lengths() {
        assert_eq!(&unsigned(&[0, 0, 1])[..], &[0x02, 0x01, 0x01]);
        assert_eq!(&unsigned(&[0x80])[..], &[0x02, 0x02, 0x00, 0x80]);
        assert_eq!(&unsigned(&[])[..], &[0x02, 0x01, 0x00]);
        let long = tlv(OCTET_STRING, &[1; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(single(&long).unwrap().content, &[1; 300][..]);
    }

    #[test]
    fn oids_read_in_dotted_form() {
        assert_eq!(oid_text(oid::PBE_SHA1_3DES), "1.2.840.113549.1.12.1.3");
        assert_eq!(oid_text(oid::SHA1), "1.3.14.3.2.26");
        assert_eq!(oid_text(oid::P521), "1.3.132.0.35");
    }
}
