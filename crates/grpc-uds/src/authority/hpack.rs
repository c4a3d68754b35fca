//! HPACK header blocks (RFC 7541) decoded the way the adapter needs: every field, in order,
//! with the client's dynamic table kept exactly as the server's decoder would keep it.
//!
//! Written here rather than taken whole from `loona-hpack`, whose decoder builds its Huffman
//! tree from scratch for every Huffman-coded string: gRPC clients send `:path` as one on every
//! request, and that cost the socket most of its throughput. Huffman decoding itself still
//! comes from `loona-hpack` (one decoder per connection, reused), and the strings a connection
//! repeats are decoded once ([`HUFFMAN_CACHE_ENTRIES`]). `loona-hpack`'s own decoder remains
//! the independent check in the fuzzing module.
//!
//! Never panics on input: every index and length is checked before use, and a malformed block
//! is an [`HpackError`].

use std::collections::VecDeque;
use std::fmt;

use loona_hpack::huffman::HuffmanDecoder;

/// Decoded Huffman strings a connection remembers (the `:path` values it repeats).
pub const HUFFMAN_CACHE_ENTRIES: usize = 16;
/// The longest Huffman-coded string the cache keeps.
const HUFFMAN_CACHE_MAX_LEN: usize = 256;
/// RFC 7541 §4.1: an entry's size is its name and value lengths plus 32.
const ENTRY_OVERHEAD: usize = 32;

/// What is wrong with a header block's HPACK encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HpackError {
    /// A Huffman-coded string that is not valid Huffman code.
    InvalidHuffman,
    /// An index of 0, or past the static and dynamic tables.
    InvalidIndex,
    /// An integer too large to decode.
    IntegerOverflow,
    /// The block ends inside a representation.
    Truncated,
    /// A dynamic table size update above the server's SETTINGS_HEADER_TABLE_SIZE.
    TableSizeAboveLimit,
    /// A dynamic table size update after the block's first field (RFC 7541 §4.2).
    LateTableSizeUpdate,
}

impl fmt::Display for HpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidHuffman => "a string is not valid Huffman code",
            Self::InvalidIndex => "an index is 0 or past the static and dynamic tables",
            Self::IntegerOverflow => "an integer is too large",
            Self::Truncated => "the block ends inside a representation",
            Self::TableSizeAboveLimit => {
                "a dynamic table size update exceeds SETTINGS_HEADER_TABLE_SIZE"
            }
            Self::LateTableSizeUpdate => "a dynamic table size update follows a header field",
        })
    }
}

impl std::error::Error for HpackError {}

/// The client's HPACK context: its dynamic table and the Huffman decoding it needs.
pub struct BlockDecoder {
    /// The newest entry first.
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    limit: usize,
    huffman: Option<HuffmanDecoder>,
    /// (Huffman bytes, decoded), the most recently used last.
    decoded: Vec<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for BlockDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockDecoder")
            .field("entries", &self.entries.len())
            .field("size", &self.size)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

impl BlockDecoder {
    /// A fresh connection's context: an empty table whose size may be updated up to `limit`
    /// (the server's SETTINGS_HEADER_TABLE_SIZE), which is also its initial maximum.
    pub fn new(limit: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
            huffman: None,
            decoded: Vec::new(),
        }
    }

    /// Decodes `block`, calling `field` with each header field's name and value in order, and
    /// updates the dynamic table as the server's decoder will.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut fields_seen = false;
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                let index = integer(&mut block, 7)?;
                let (name, value) = self.entry(index)?;
                field(name, value);
                fields_seen = true;
            } else if first & 0xe0 == 0x20 {
                if fields_seen {
                    return Err(HpackError::LateTableSizeUpdate);
                }
                let size = integer(&mut block, 5)?;
                if size > self.limit {
                    return Err(HpackError::TableSizeAboveLimit);
                }
                self.max_size = size;
                self.evict_to(size);
            } else {
                // 01: with incremental indexing (6-bit index); 0000 / 0001: without indexing,
                // never indexed (4-bit index).
                let indexing = first & 0x40 != 0;
                let index = integer(&mut block, if indexing { 6 } else { 4 })?;
                let name = match index {
                    0 => self.string(&mut block)?,
                    index => self.entry(index)?.0.to_vec(),
                };
                let value = self.string(&mut block)?;
                field(&name, &value);
                fields_seen = true;
                if indexing {
                    self.insert(name, value);
                }
            }
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        let dynamic = index
            .checked_sub(STATIC_TABLE.len() + 1)
            .map(|dynamic| self.entries.get(dynamic));
        match (index, dynamic) {
            (0, _) => Err(HpackError::InvalidIndex),
            (_, None) => STATIC_TABLE
                .get(index - 1)
                .map(|(name, value)| (*name, *value))
                .ok_or(HpackError::InvalidIndex),
            (_, Some(Some((name, value)))) => Ok((name, value)),
            (_, Some(None)) => Err(HpackError::InvalidIndex),
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // RFC 7541 §4.4: an entry larger than the table empties it and is not added.
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.entries.push_front((name, value));
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            let Some((name, value)) = self.entries.pop_back() else {
                self.size = 0;
                return;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }

    /// Reads one string literal (RFC 7541 §5.2), Huffman-decoding it if it is coded.
    fn string(&mut self, block: &mut &[u8]) -> Result<Vec<u8>, HpackError> {
        let huffman = block.first().is_some_and(|first| first & 0x80 != 0);
        let len = integer(block, 7)?;
        let Some((raw, rest)) = block.split_at_checked(len) else {
            return Err(HpackError::Truncated);
        };
        *block = rest;
        if !huffman {
            return Ok(raw.to_vec());
        }
        if let Some(at) = self.decoded.iter().position(|(coded, _)| coded == raw) {
            let hit = self.decoded.remove(at);
            let value = hit.1.clone();
            self.decoded.push(hit);
            return Ok(value);
        }
        let value = self
            .huffman
            .get_or_insert_with(HuffmanDecoder::new)
            .decode(raw)
            .map_err(|_| HpackError::InvalidHuffman)?;
        if raw.len() <= HUFFMAN_CACHE_MAX_LEN {
            if self.decoded.len() == HUFFMAN_CACHE_ENTRIES {
                self.decoded.remove(0);
            }
            self.decoded.push((raw.to_vec(), value.clone()));
        }
        Ok(value)
    }
}

/// Reads an integer with an `prefix_bits`-bit prefix (RFC 7541 §5.1).
fn integer(block: &mut &[u8], prefix_bits: u32) -> Result<usize, HpackError> {
    let (&first, mut rest) = block.split_first().ok_or(HpackError::Truncated)?;
    let max_prefix = (1usize << prefix_bits) - 1;
    let mut value = usize::from(first) & max_prefix;
    if value == max_prefix {
        let mut shift = 0u32;
        loop {
            let (&byte, tail) = rest.split_first().ok_or(HpackError::Truncated)?;
            rest = tail;
            // Four continuation bytes reach 2^28; more than that is no header we accept.
            if shift > 21 {
                return Err(HpackError::IntegerOverflow);
            }
            value += usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    *block = rest;
    Ok(value)
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: &[(&[u8], &[u8])] = &[
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7541 C.4: three requests with Huffman coding, decoded on one connection.
    #[test]
    fn the_rfc_examples_decode_with_their_table() {
        let mut decoder = BlockDecoder::new(4096);
        let requests: [(&str, &[(&str, &str)]); 3] = [
            (
                "828684418cf1e3c2e5f23a6ba0ab90f4ff",
                &[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "www.example.com"),
                ],
            ),
            (
                "828684be5886a8eb10649cbf",
                &[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "www.example.com"),
                    ("cache-control", "no-cache"),
                ],
            ),
            (
                "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
                &[
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/index.html"),
                    (":authority", "www.example.com"),
                    ("custom-key", "custom-value"),
                ],
            ),
        ];
        for (hex, expected) in requests {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let mut fields = Vec::new();
            decoder
                .decode(&bytes, |name, value| {
                    fields.push((
                        String::from_utf8(name.to_vec()).unwrap(),
                        String::from_utf8(value.to_vec()).unwrap(),
                    ));
                })
                .unwrap();
            let expected: Vec<(String, String)> = expected
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(fields, expected);
        }
        assert_eq!(decoder.size, 164, "the table size of RFC 7541 C.4.3");
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let mut decoder = BlockDecoder::new(4096);
        for (block, error) in [
            (&[0x80][..], HpackError::InvalidIndex),
            (&[0xbe], HpackError::InvalidIndex),
            (&[0xff], HpackError::Truncated),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                HpackError::IntegerOverflow,
            ),
            (&[0x40, 0x05, b'a'], HpackError::Truncated),
            (&[0x40, 0x81, 0xff], HpackError::InvalidHuffman),
            (&[0x3f, 0xe2, 0x1f], HpackError::TableSizeAboveLimit),
            (&[0x82, 0x20], HpackError::LateTableSizeUpdate),
        ] {
            assert_eq!(decoder.decode(block, |_, _| {}), Err(error), "{block:02x?}");
        }
    }

    #[test]
    fn a_repeated_huffman_string_is_decoded_once_and_an_entry_too_large_empties_the_table() {
        let mut decoder = BlockDecoder::new(64);
        // cache-control (index 24) without indexing, Huffman "no-cache" (RFC 7541 C.4.2).
        let block = [0x0f, 0x09, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf];
        let block = &block[..];
        let mut paths = Vec::new();
        for _ in 0..2 {
            decoder
                .decode(block, |_, value| paths.push(value.to_vec()))
                .unwrap();
        }
        assert_eq!(decoder.decoded.len(), 1);
        assert_eq!(paths, [b"no-cache".to_vec(), b"no-cache".to_vec()]);
        decoder
            .decode(&[0x40, 0x01, b'a', 0x01, b'b'], |_, _| {})
            .unwrap();
        assert_eq!(decoder.size, 34);
        // 1 + 32 + 32 = 65 bytes: one more than the whole table.
        let mut big = vec![0x40, 0x01, b'n', 0x20];
        big.extend([b'v'; 32]);
        decoder.decode(&big, |_, _| {}).unwrap();
        assert_eq!((decoder.size, decoder.entries.len()), (0, 0));
    }
}
