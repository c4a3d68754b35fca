//! `v2.EncryptResponse`, the one KMS message written by hand: its key_id and annotations are the
//! same for every Encrypt under one KEK, so they are shared (`Arc`) rather than owned, and an
//! Encrypt response costs no allocation for them. prost's generated struct would own a `String`
//! and a `HashMap<String, Vec<u8>>`, copied for every call.
//!
//! On the wire it is exactly the generated message (proto/v2/api.proto: `bytes ciphertext = 1;
//! string key_id = 2; map<string, bytes> annotations = 3;`), encoded and decoded with prost's
//! own field codecs — the functions its derive macro emits calls to. build.rs points the
//! generated v2 code here (`extern_path`), and a test holds the encoding equal to a derived
//! message's. Never logs or interprets the fields: it only carries them.

use std::collections::HashMap;
use std::sync::Arc;

use prost::DecodeError;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType, hash_map};

/// The response to `/v2.KeyManagementService/Encrypt`.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct EncryptResponse {
    /// Field 1: the ciphertext kube-apiserver stores as `encryptedDEKSource`.
    pub ciphertext: Vec<u8>,
    /// Field 2: the remote key version's id, shared by every response under one KEK.
    pub key_id: Arc<str>,
    /// Field 3: the annotations kube-apiserver stores in plaintext, shared by every response
    /// under one KEK.
    pub annotations: Arc<HashMap<String, Vec<u8>>>,
}

const NAME: &str = "EncryptResponse";

impl prost::Message for EncryptResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.ciphertext.is_empty() {
            encoding::bytes::encode(1, &self.ciphertext, buf);
        }
        if !self.key_id.is_empty() {
            // string::encode takes a &String; the bytes on the wire are the same.
            encoding::encode_key(2, WireType::LengthDelimited, buf);
            encoding::encode_varint(self.key_id.len() as u64, buf);
            buf.put_slice(self.key_id.as_bytes());
        }
        hash_map::encode(
            encoding::string::encode,
            encoding::string::encoded_len,
            encoding::bytes::encode,
            encoding::bytes::encoded_len,
            3,
            &self.annotations,
            buf,
        );
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let located = |field| {
            move |mut error: DecodeError| {
                error.push(NAME, field);
                error
            }
        };
        match tag {
            1 => encoding::bytes::merge(wire_type, &mut self.ciphertext, buf, ctx)
                .map_err(located("ciphertext")),
            2 => {
                let mut key_id = String::new();
                encoding::string::merge(wire_type, &mut key_id, buf, ctx)
                    .map_err(located("key_id"))?;
                self.key_id = key_id.into();
                Ok(())
            }
            3 => hash_map::merge(
                encoding::string::merge,
                encoding::bytes::merge,
                Arc::make_mut(&mut self.annotations),
                buf,
                ctx,
            )
            .map_err(located("annotations")),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let ciphertext = if self.ciphertext.is_empty() {
            0
        } else {
            encoding::bytes::encoded_len(1, &self.ciphertext)
        };
        let key_id = if self.key_id.is_empty() {
            0
        } else {
            encoding::key_len(2)
                + encoding::encoded_len_varint(self.key_id.len() as u64)
                + self.key_id.len()
        };
        ciphertext
            + key_id
            + hash_map::encoded_len(
                encoding::string::encoded_len,
                encoding::bytes::encoded_len,
                3,
                &self.annotations,
            )
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// What prost generates for the message (proto/v2/api.proto), derived here as the reference.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(bytes = "vec", tag = "1")]
        ciphertext: Vec<u8>,
        #[prost(string, tag = "2")]
        key_id: String,
        #[prost(map = "string, bytes", tag = "3")]
        annotations: HashMap<String, Vec<u8>>,
    }

    fn both(
        ciphertext: &[u8],
        key_id: &str,
        annotations: &[(&str, &[u8])],
    ) -> (EncryptResponse, Generated) {
        let map: HashMap<String, Vec<u8>> = annotations
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.to_vec()))
            .collect();
        (
            EncryptResponse {
                ciphertext: ciphertext.to_vec(),
                key_id: key_id.into(),
                annotations: Arc::new(map.clone()),
            },
            Generated {
                ciphertext: ciphertext.to_vec(),
                key_id: key_id.to_owned(),
                annotations: map,
            },
        )
    }

    #[test]
    fn the_encoding_is_the_generated_messages() {
        let long = "k".repeat(300);
        // Byte for byte where the map has at most one entry (a HashMap's order is its own).
        for (ciphertext, key_id, annotations) in [
            (&b""[..], "", &[][..]),
            (&[1, 2, 3][..], "", &[][..]),
            (&b""[..], "id", &[][..]),
            (
                &[9; 200][..],
                long.as_str(),
                &[("kek.kube-kms.io", &[7u8; 300][..])][..],
            ),
            (&[1][..], "id", &[("version.kube-kms.io", &b""[..])][..]),
        ] {
            let (ours, generated) = both(ciphertext, key_id, annotations);
            assert_eq!(ours.encode_to_vec(), generated.encode_to_vec());
            assert_eq!(ours.encoded_len(), generated.encoded_len());
        }
    }

    #[test]
    fn each_decodes_what_the_other_encodes() {
        let (ours, generated) = both(
            &[5; 61],
            "f3ad5664c88c27e34df199a7e7c09cc8c8cf653e0d1036cf82535009cc7d703d",
            &[
                ("kek.kube-kms.io", &[7; 60]),
                ("version.kube-kms.io", b"1"),
                ("other.example.com", b""),
            ],
        );
        let decoded = EncryptResponse::decode(generated.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, ours);
        let decoded = Generated::decode(ours.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, generated);
        assert_eq!(ours.encoded_len(), ours.encode_to_vec().len());
    }

    #[test]
    fn unknown_fields_are_skipped_and_bad_input_is_an_error() {
        let (ours, generated) = both(&[1], "id", &[("a.b", b"c")]);
        let mut bytes = generated.encode_to_vec();
        // Field 9, varint 150.
        bytes.extend_from_slice(&[9 << 3, 0x96, 0x01]);
        assert_eq!(EncryptResponse::decode(bytes.as_slice()).unwrap(), ours);
        // Field 2 (key_id) that is not UTF-8.
        let error = EncryptResponse::decode(&[0x12, 0x01, 0xff][..]).unwrap_err();
        assert!(
            error.to_string().contains("EncryptResponse.key_id"),
            "{error}"
        );
        // Truncated.
        let whole = ours.encode_to_vec();
        assert!(EncryptResponse::decode(&whole[..whole.len() - 1]).is_err());
    }

    #[test]
    fn a_response_shares_what_it_was_given() {
        let key_id: Arc<str> = "id".into();
        let annotations = Arc::new(HashMap::from([("a.b".to_owned(), vec![1])]));
        let response = EncryptResponse {
            ciphertext: vec![1],
            key_id: Arc::clone(&key_id),
            annotations: Arc::clone(&annotations),
        };
        assert!(Arc::ptr_eq(&response.key_id, &key_id));
        assert!(Arc::ptr_eq(&response.annotations, &annotations));
    }
}
