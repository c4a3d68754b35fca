//! RC2 decryption (RFC 2268), for the one place it is still met: the certificate bags of a PFX
//! that Key Vault (or Windows) wrote with pbewithSHAAnd40BitRC2-CBC. The vendored OpenSSL is
//! built without its legacy provider, so it has no RC2; golang.org/x/crypto/pkcs12 carries its
//! own RC2 for the same reason.
//!
//! Decryption only, of ciphertext whose key was derived from the (empty) PFX password: this is
//! not a general-purpose cipher and nothing here is constant-time.

use zeroize::Zeroizing;

/// RC2's block size in bytes.
pub(super) const BLOCK_SIZE: usize = 8;

const PI_TABLE: [u8; 256] = [
    0xd9, 0x78, 0xf9, 0xc4, 0x19, 0xdd, 0xb5, 0xed, 0x28, 0xe9, 0xfd, 0x79, 0x4a, 0xa0, 0xd8, 0x9d,
    0xc6, 0x7e, 0x37, 0x83, 0x2b, 0x76, 0x53, 0x8e, 0x62, 0x4c, 0x64, 0x88, 0x44, 0x8b, 0xfb, 0xa2,
    0x17, 0x9a, 0x59, 0xf5, 0x87, 0xb3, 0x4f, 0x13, 0x61, 0x45, 0x6d, 0x8d, 0x09, 0x81, 0x7d, 0x32,
    0xbd, 0x8f, 0x40, 0xeb, 0x86, 0xb7, 0x7b, 0x0b, 0xf0, 0x95, 0x21, 0x22, 0x5c, 0x6b, 0x4e, 0x82,
    0x54, 0xd6, 0x65, 0x93, 0xce, 0x60, 0xb2, 0x1c, 0x73, 0x56, 0xc0, 0x14, 0xa7, 0x8c, 0xf1, 0xdc,
    0x12, 0x75, 0xca, 0x1f, 0x3b, 0xbe, 0xe4, 0xd1, 0x42, 0x3d, 0xd4, 0x30, 0xa3, 0x3c, 0xb6, 0x26,
    0x6f, 0xbf, 0x0e, 0xda, 0x46, 0x69, 0x07, 0x57, 0x27, 0xf2, 0x1d, 0x9b, 0xbc, 0x94, 0x43, 0x03,
    0xf8, 0x11, 0xc7, 0xf6, 0x90, 0xef, 0x3e, 0xe7, 0x06, 0xc3, 0xd5, 0x2f, 0xc8, 0x66, 0x1e, 0xd7,
    0x08, 0xe8, 0xea, 0xde, 0x80, 0x52, 0xee, 0xf7, 0x84, 0xaa, 0x72, 0xac, 0x35, 0x4d, 0x6a, 0x2a,
    0x96, 0x1a, 0xd2, 0x71, 0x5a, 0x15, 0x49, 0x74, 0x4b, 0x9f, 0xd0, 0x5e, 0x04, 0x18, 0xa4, 0xec,
    0xc2, 0xe0, 0x41, 0x6e, 0x0f, 0x51, 0xcb, 0xcc, 0x24, 0x91, 0xaf, 0x50, 0xa1, 0xf4, 0x70, 0x39,
    0x99, 0x7c, 0x3a, 0x85, 0x23, 0xb8, 0xb4, 0x7a, 0xfc, 0x02, 0x36, 0x5b, 0x25, 0x55, 0x97, 0x31,
    0x2d, 0x5d, 0xfa, 0x98, 0xe3, 0x8a, 0x92, 0xae, 0x05, 0xdf, 0x29, 0x10, 0x67, 0x6c, 0xba, 0xc9,
    0xd3, 0x00, 0xe6, 0xcf, 0xe1, 0x9e, 0xa8, 0x2c, 0x63, 0x16, 0x01, 0x3f, 0x58, 0xe2, 0x89, 0xa9,
    0x0d, 0x38, 0x34, 0x1b, 0xab, 0x33, 0xff, 0xb0, 0xbb, 0x48, 0x0c, 0x5f, 0xb9, 0xb1, 0xcd, 0x2e,
    0xc5, 0xf3, 0xdb, 0x47, 0xe5, 0xa5, 0x9c, 0x77, 0x0a, 0xa6, 0x20, 0x68, 0xfe, 0x7f, 0xc1, 0xad,
];

/// An expanded RC2 key. Zeroized on drop.
pub(super) struct Rc2 {
    k: Zeroizing<[u16; 64]>,
}

impl Rc2 {
    /// Expands `key` (1–128 bytes) with `effective_bits` of effective key length (RFC 2268
    /// section 2). Returns `None` for a key length RC2 does not define.
    pub fn new(key: &[u8], effective_bits: usize) -> Option<Self> {
        if key.is_empty() || key.len() > 128 || effective_bits == 0 || effective_bits > 1024 {
            return None;
        }
        let mut l = Zeroizing::new([0u8; 128]);
        l[..key.len()].copy_from_slice(key);
        let t = key.len();
        for i in t..128 {
            l[i] = PI_TABLE[usize::from(l[i - 1].wrapping_add(l[i - t]))];
        }
        let t8 = effective_bits.div_ceil(8);
        let tm = (0xffu32 >> (8 * t8 - effective_bits)) as u8;
        l[128 - t8] = PI_TABLE[usize::from(l[128 - t8] & tm)];
        for i in (0..128 - t8).rev() {
            l[i] = PI_TABLE[usize::from(l[i + 1] ^ l[i + t8])];
        }
        let mut k = Zeroizing::new([0u16; 64]);
        for (i, word) in k.iter_mut().enumerate() {
            *word = u16::from_le_bytes([l[2 * i], l[2 * i + 1]]);
        }
        Some(Self { k })
    }

    /// Decrypts one block in place.
    pub fn decrypt_block(&self, block: &mut [u8; BLOCK_SIZE]) {
        let k = &*self.k;
        let mut r = [
            u16::from_le_bytes([block[0], block[1]]),
            u16::from_le_bytes([block[2], block[3]]),
            u16::from_le_bytes([block[4], block[5]]),
            u16::from_le_bytes([block[6], block[7]]),
        ];
        let mut j = 64usize;
        let mut unmix_rounds = |r: &mut [u16; 4], rounds: usize| {
            for _ in 0..rounds {
                for (i, shift) in [(3usize, 5u32), (2, 3), (1, 2), (0, 1)] {
                    j -= 1;
                    let (a, b, c) = (r[(i + 3) % 4], r[(i + 2) % 4], r[(i + 1) % 4]);
                    r[i] = r[i]
                        .rotate_right(shift)
                        .wrapping_sub(k[j])
                        .wrapping_sub(a & b)
                        .wrapping_sub(!a & c);
                }
            }
        };
        let unmash = |r: &mut [u16; 4]| {
            for i in [3usize, 2, 1, 0] {
                r[i] = r[i].wrapping_sub(k[usize::from(r[(i + 3) % 4] & 63)]);
            }
        };
        unmix_rounds(&mut r, 5);
        unmash(&mut r);
        unmix_rounds(&mut r, 6);
        unmash(&mut r);
        unmix_rounds(&mut r, 5);
        for (i, word) in r.iter().enumerate() {
            block[2 * i..2 * i + 2].copy_from_slice(&word.to_le_bytes());
        }
    }

    /// Decrypts `data` (a whole number of blocks) in CBC mode with `iv`, in place.
    pub fn decrypt_cbc(&self, iv: &[u8; BLOCK_SIZE], data: &mut [u8]) {
        let mut previous = *iv;
        for chunk in data.chunks_exact_mut(BLOCK_SIZE) {
            let mut block = [0u8; BLOCK_SIZE];
            block.copy_from_slice(chunk);
            let ciphertext = block;
            self.decrypt_block(&mut block);
            for (out, (plain, chain)) in chunk.iter_mut().zip(block.iter().zip(previous.iter())) {
                *out = plain ^ chain;
            }
            previous = ciphertext;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2268 section 5's test vectors: (key, effective bits, plaintext, ciphertext).
    const VECTORS: &[(&str, usize, &str, &str)] = &[
        (
            "0000000000000000",
            63,
            "0000000000000000",
            "ebb773f993278eff",
        ),
        (
            "ffffffffffffffff",
            64,
            "ffffffffffffffff",
            "278b27e42e2f0d49",
        ),
        (
            "3000000000000000",
            64,
            "1000000000000001",
            "30649edf9be7d2c2",
        ),
        ("88", 64, "0000000000000000", "61a8a244adacccf0"),
        ("88bca90e90875a", 64, "0000000000000000", "6ccf4308974c267f"),
        (
            "88bca90e90875a7f0f79c384627bafb2",
            64,
            "0000000000000000",
            "1a807d272bbe5db1",
        ),
        (
            "88bca90e90875a7f0f79c384627bafb2",
            128,
            "0000000000000000",
            "2269552ab0f85ca6",
        ),
        (
            "88bca90e90875a7f0f79c384627bafb216f80a6f85920584c42fceb0be255daf1e",
            129,
            "0000000000000000",
            "5b78d3a43dfff1f1",
        ),
    ];

    #[test]
    fn decrypts_the_rfc_2268_vectors() {
        for &(key, bits, plain, cipher) in VECTORS {
            let rc2 = Rc2::new(&hex::decode(key).unwrap(), bits).unwrap();
            let mut block = [0u8; BLOCK_SIZE];
            block.copy_from_slice(&hex::decode(cipher).unwrap());
            rc2.decrypt_block(&mut block);
            assert_eq!(hex::encode(block), plain, "key {key}, {bits} bits");
        }
    }

    #[test]
    fn refuses_key_lengths_rc2_does_not_define() {
        assert!(Rc2::new(&[], 40).is_none());
        assert!(Rc2::new(&[0; 129], 40).is_none());
        assert!(Rc2::new(&[0; 5], 0).is_none());
    }
}
