//! Entry points for the fuzz targets in fuzz/ (cargo-fuzz) and their corpus replay in
//! tests/fuzz_corpus.rs. Not an API: hidden from the docs and free to change.
//!
//! Each entry takes arbitrary bytes, must never panic on them, and asserts the properties the
//! code under test promises; it never touches the network or the file system.

use loona_hpack::Decoder;

use crate::authority::hpack::{BlockDecoder, HpackError};
use crate::authority::{ClientStream, HEADER_TABLE_SIZE, encode_integer, h2_accepts};

use self::h2::PREFACE;

/// HTTP/2 frame types and flags (RFC 9113 §6) for the hand-framed clients in tests.
pub mod h2 {
    /// What a client sends first on a connection.
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    /// Frame type DATA.
    pub const DATA: u8 = 0x0;
    /// Frame type HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// Frame type RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// Frame type SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// Frame type PING.
    pub const PING: u8 = 0x6;
    /// Frame type GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// Frame type CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
    /// Flag END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// Flag ACK (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// Flag END_HEADERS (HEADERS, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
    /// Flag PADDED (DATA, HEADERS).
    pub const PADDED: u8 = 0x8;
    /// Flag PRIORITY (HEADERS).
    pub const PRIORITY: u8 = 0x20;
}

/// Feeds `data` (after its first byte, which picks the size of each read: 0 means one read)
/// through [`ClientStream`] as a client's stream, and checks what the server would read: the
/// preface, then whole frames (a trailing partial frame only if the stream failed or ended
/// mid-frame), every header block decodable by a fresh server-side HPACK decoder, and every
/// `:authority` in them one that h2 accepts. A stream that is not HTTP/2 passes unchanged.
pub fn client_stream(data: &[u8]) {
    hpack_block(data);
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = if chunk == 0 {
        input.len().max(1)
    } else {
        usize::from(chunk)
    };
    let mut client = ClientStream::new();
    let mut out = Vec::new();
    let mut failed = false;
    for piece in input.chunks(chunk) {
        if client.feed(piece, &mut out).is_err() {
            failed = true;
            break;
        }
    }
    let clean_end = !failed && client.finish().is_ok();
    let preface_len = PREFACE.len().min(input.len());
    if input[..preface_len] != PREFACE[..preface_len] {
        assert_eq!(out, input, "a stream that is not HTTP/2 passes unchanged");
        return;
    }
    if input.len() < PREFACE.len() {
        // The client stopped inside its preface: nothing but the preface's start was sent.
        assert_eq!(
            out, input,
            "a stream that ends in its preface passes unchanged"
        );
        return;
    }
    let view = match server_view(&out) {
        Ok(view) => view,
        Err(error) => panic!("the server would refuse the adapter's output: {error}"),
    };
    if clean_end {
        assert!(
            view.trailing == 0,
            "a clean end leaves {} bytes of a frame",
            view.trailing
        );
    }
    for (stream_id, headers) in &view.blocks {
        for (name, value) in headers {
            if name == b":authority" {
                assert!(
                    h2_accepts(value),
                    "stream {stream_id} reaches the server with :authority {:?}",
                    String::from_utf8_lossy(value)
                );
            }
        }
    }
}

/// Decodes `data` twice on one connection as a header block with the adapter's HPACK decoder
/// and with `loona-hpack`'s, and checks they agree: the same fields whenever the adapter's
/// decodes, which refuses nothing `loona-hpack` accepts except a table size update after a
/// field (which h2 refuses too), and accepts nothing it refuses except a block of only size
/// updates (which h2 accepts too).
pub fn hpack_block(data: &[u8]) {
    let mut ours = BlockDecoder::new(HEADER_TABLE_SIZE);
    let mut theirs = Decoder::new();
    theirs.set_max_allowed_table_size(HEADER_TABLE_SIZE);
    for round in 0..2 {
        let mut decoded = Vec::new();
        let our_result = ours.decode(data, |name, value| {
            decoded.push((name.to_vec(), value.to_vec()));
        });
        let mut expected = Vec::new();
        let their_result = theirs.decode_with_cb(data, |name, value| {
            expected.push((name.to_vec(), value.to_vec()));
        });
        match (our_result, their_result) {
            (Ok(()), Ok(())) => assert_eq!(decoded, expected, "round {round}"),
            // A block of nothing but size updates: h2's decoder accepts it, as the adapter's
            // does; loona-hpack alone refuses it.
            (Ok(()), Err(loona_hpack::decoder::DecoderError::SizeUpdateAtEnd)) => return,
            (Ok(()), Err(error)) => {
                panic!("round {round}: loona-hpack refuses ({error:?}) a block the adapter decodes")
            }
            (Err(HpackError::LateTableSizeUpdate), _) | (Err(_), Err(_)) => return,
            (Err(error), Ok(())) => {
                panic!("round {round}: the adapter refuses ({error}) a block loona-hpack decodes")
            }
        }
    }
}

/// Decoded header fields, in order: (name, value).
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// What a server reads from the adapter's output.
#[derive(Debug, Default)]
pub struct ServerView {
    /// Each complete header block: its stream and decoded fields, in order.
    pub blocks: Vec<(u32, Fields)>,
    /// Every whole frame: (type, flags, stream, payload length).
    pub frames: Vec<(u8, u8, u32, usize)>,
    /// Bytes after the last whole frame.
    pub trailing: usize,
}

/// Parses `bytes` as a server would (the preface, frames, header blocks through one HPACK
/// decoder for the connection); an error says what a server would refuse.
pub fn server_view(bytes: &[u8]) -> Result<ServerView, String> {
    let mut view = ServerView::default();
    let Some(mut rest) = bytes.strip_prefix(PREFACE) else {
        view.trailing = bytes.len();
        return if PREFACE.starts_with(bytes) {
            Ok(view)
        } else {
            Err("no client preface".to_owned())
        };
    };
    let mut decoder = Decoder::new();
    decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
    let mut block: Option<(u32, Vec<u8>)> = None;
    while let Some((header, after)) = rest.split_first_chunk::<9>() {
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let stream_id =
            u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let Some(payload) = after.get(..len) else {
            break;
        };
        rest = &after[len..];
        view.frames.push((kind, flags, stream_id, len));
        let fragment = match (kind, &mut block) {
            (0x1, None) => {
                let mut body = payload;
                let mut padding = 0;
                if flags & 0x8 != 0 {
                    let (&pad, tail) = body.split_first().ok_or("PADDED without a length")?;
                    padding = usize::from(pad);
                    body = tail;
                }
                if flags & 0x20 != 0 {
                    body = body.get(5..).ok_or("PRIORITY without 5 bytes")?;
                }
                let end = body.len().checked_sub(padding).ok_or("padding too long")?;
                block = Some((stream_id, Vec::new()));
                &body[..end]
            }
            (0x9, Some((open, _))) if *open == stream_id => payload,
            (0x9, _) => return Err(format!("CONTINUATION on stream {stream_id} out of place")),
            (_, Some((open, _))) => {
                return Err(format!(
                    "frame type {kind} inside the header block of {open}"
                ));
            }
            _ => continue,
        };
        if let Some((_, collected)) = &mut block {
            collected.extend_from_slice(fragment);
        }
        if flags & 0x4 != 0
            && let Some((open, collected)) = block.take()
        {
            let mut headers = Vec::new();
            let decoded = decoder.decode_with_cb(&collected, |name, value| {
                headers.push((name.into_owned(), value.into_owned()));
            });
            match decoded {
                // h2 accepts a block that ends with (or is only) size updates; loona-hpack
                // applies them, then refuses the block.
                Ok(()) | Err(loona_hpack::decoder::DecoderError::SizeUpdateAtEnd) => {}
                Err(error) => return Err(format!("stream {open}: HPACK: {error}")),
            }
            view.blocks.push((open, headers));
        }
    }
    view.trailing = rest.len();
    Ok(view)
}

/// The static-table entries (RFC 7541 Appendix A) a gRPC request uses, with their indices.
const STATIC_ENTRIES: &[(usize, &[u8], &[u8])] = &[
    (1, b":authority", b""),
    (2, b":method", b"GET"),
    (3, b":method", b"POST"),
    (4, b":path", b"/"),
    (6, b":scheme", b"http"),
    (31, b"content-type", b""),
    (58, b"user-agent", b""),
];
const DYNAMIC_TABLE_SIZE: usize = 4096;

/// A client-side HPACK encoder that indexes every field it has not sent before, as grpc-go's
/// does, and refers to it by its dynamic-table index afterwards: the encoder that makes later
/// requests depend on the connection's table (loona-hpack's indexes only unknown names).
/// Strings are sent without Huffman coding.
#[derive(Debug, Default)]
pub struct IndexingEncoder {
    table: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
}

impl IndexingEncoder {
    /// Encodes one header block, updating the table as the server's decoder will.
    pub fn encode<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            if let Some(index) = self.table.iter().position(|(n, v)| n == name && v == value) {
                encode_integer(&mut out, 0x80, 7, 62 + index);
                continue;
            }
            let statics = || STATIC_ENTRIES.iter().filter(|(_, n, _)| *n == name);
            if let Some((index, _, _)) = statics().find(|(_, _, v)| *v == value) {
                encode_integer(&mut out, 0x80, 7, *index);
                continue;
            }
            match statics().next() {
                Some((index, _, _)) => encode_integer(&mut out, 0x40, 6, *index),
                None => {
                    out.push(0x40);
                    encode_integer(&mut out, 0, 7, name.len());
                    out.extend_from_slice(name);
                }
            }
            encode_integer(&mut out, 0, 7, value.len());
            out.extend_from_slice(value);
            self.size += name.len() + value.len() + 32;
            self.table.push_front((name.to_vec(), value.to_vec()));
            while self.size > DYNAMIC_TABLE_SIZE {
                if let Some((n, v)) = self.table.pop_back() {
                    self.size -= n.len() + v.len() + 32;
                }
            }
        }
        out
    }
}

/// One HTTP/2 frame: the 9-byte header for `payload` (at most 2^24 - 1 bytes), then `payload`.
pub fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    bytes.extend_from_slice(&stream_id.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}
