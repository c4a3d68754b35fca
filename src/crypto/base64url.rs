//! Strict, unpadded base64url (RFC 4648 §5) for key material: one encoding per byte string, and
//! every decoded buffer wiped on drop, because what passes through here may be a DEK (Azure's Go
//! KMS plugin sent and stored DEKs in this form). Never accepts padding, whitespace or another
//! alphabet.

use zeroize::Zeroizing;

/// The unpadded base64url length of `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    (len * 4).div_ceil(3)
}

fn sextet(b: u8) -> Option<u32> {
    Some(u32::from(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    }))
}

/// Strict unpadded base64url (RFC 4648 §5): no padding, no whitespace, no other alphabet, and
/// the unused bits of the last character zero, so that each byte string has one encoding.
/// `None` for anything else. The output is wiped on drop: it may be a DEK.
pub fn decode(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 3 / 4));
    for chunk in text.chunks(4) {
        let mut acc: u32 = 0;
        for &b in chunk {
            acc = (acc << 6) | sextet(b)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&acc.to_be_bytes()[1..]),
            3 => {
                if acc & 0b11 != 0 {
                    return None;
                }
                out.extend_from_slice(&((acc >> 2) as u16).to_be_bytes());
            }
            2 => {
                if acc & 0b1111 != 0 {
                    return None;
                }
                out.push((acc >> 4) as u8);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Unpadded base64url of `bytes` (what the Go plugin sent to, or got from, Key Vault).
pub fn encode(bytes: &[u8]) -> Zeroizing<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Zeroizing::new(String::with_capacity(encoded_len(bytes.len())));
    for chunk in bytes.chunks(3) {
        let mut acc = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            acc |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((acc >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}
