//! PEM and base64 exactly as Go's encoding/pem and encoding/base64 (StdEncoding) behave, since
//! Azure's provider writes its files through them: 64-column lines, a newline after every line,
//! headers (Proc-Type first, the rest sorted) before a blank line; decoding that skips text
//! between blocks, tolerates `\r\n`, and base64 that ignores line breaks, requires padding and
//! accepts non-zero trailing bits.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

/// Go's `base64.StdEncoding` for decoding: standard alphabet, padding required, trailing bits
/// ignored (Go's decoder is not strict about them).
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes standard base64 as Go's `base64.StdEncoding.DecodeString` does: `\r` and `\n` are
/// skipped anywhere, padding is required. `None` if it is not base64.
pub(super) fn go_base64_decode(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let compact: Zeroizing<Vec<u8>> = Zeroizing::new(
        text.iter()
            .copied()
            .filter(|&byte| byte != b'\r' && byte != b'\n')
            .collect(),
    );
    GO_STD.decode(&*compact).ok().map(Zeroizing::new)
}

/// Encodes standard base64 with padding, no line breaks.
pub(super) fn base64_encode(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(GO_STD.encode(bytes).into_bytes())
}

/// One PEM block.
pub(super) struct Block {
    /// The type (`CERTIFICATE`, `PRIVATE KEY`, …), as bytes like Go's string.
    pub label: Vec<u8>,
    /// Headers, keys unique (a later duplicate replaced the earlier value, as Go's map does).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The decoded body.
    pub bytes: Zeroizing<Vec<u8>>,
}

/// Encodes one block as Go's `pem.EncodeToMemory` does.
pub(super) fn encode(
    label: &[u8],
    headers: &[(Vec<u8>, Vec<u8>)],
    bytes: &[u8],
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() * 4 / 3 + 80));
    out.extend_from_slice(b"-----BEGIN ");
    out.extend_from_slice(label);
    out.extend_from_slice(b"-----\n");
    if !headers.is_empty() {
        let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = headers.iter().collect();
        sorted.sort_by(|a, b| {
            (a.0 != b"Proc-Type")
                .cmp(&(b.0 != b"Proc-Type"))
                .then_with(|| a.0.cmp(&b.0))
        });
        for (key, value) in sorted {
            out.extend_from_slice(key);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    let body = base64_encode(bytes);
    for line in body.chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END ");
    out.extend_from_slice(label);
    out.extend_from_slice(b"-----\n");
    out
}

/// Every block of `data`, in order, as repeated calls of Go's `pem.Decode` find them (text
/// that is not a well-formed block is skipped).
pub(super) fn decode_all(data: &[u8]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut rest = data;
    while let Some((block, after)) = decode(rest) {
        blocks.push(block);
        rest = after;
    }
    blocks
}

const PEM_START: &[u8] = b"\n-----BEGIN ";
const PEM_END: &[u8] = b"\n-----END ";
const PEM_END_OF_LINE: &[u8] = b"-----";

/// Go's `pem.Decode`: the first well-formed block and what follows it.
fn decode(data: &[u8]) -> Option<(Block, &[u8])> {
    let mut rest = data;
    loop {
        if let Some(after) = rest.strip_prefix(&PEM_START[1..]) {
            rest = after;
        } else {
            let at = find(rest, PEM_START)?;
            rest = &rest[at + PEM_START.len()..];
        }

        let (type_line, after_type) = get_line(rest);
        rest = after_type;
        let Some(label) = type_line.strip_suffix(PEM_END_OF_LINE) else {
            continue;
        };

        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        loop {
            if rest.is_empty() {
                return None;
            }
            let (line, next) = get_line(rest);
            let Some(colon) = line.iter().position(|&byte| byte == b':') else {
                break;
            };
            let key = line[..colon].trim_ascii().to_vec();
            let value = line[colon + 1..].trim_ascii().to_vec();
            headers.retain(|(existing, _)| *existing != key);
            headers.push((key, value));
            rest = next;
        }

        let (end_index, end_trailer_index) =
            if headers.is_empty() && rest.starts_with(&PEM_END[1..]) {
                (0, PEM_END.len() - 1)
            } else {
                match find(rest, PEM_END) {
                    Some(index) => (index, index + PEM_END.len()),
                    None => continue,
                }
            };

        let end_trailer = &rest[end_trailer_index..];
        let trailer_length = label.len() + PEM_END_OF_LINE.len();
        if end_trailer.len() < trailer_length {
            continue;
        }
        let (trailer, rest_of_end_line) = end_trailer.split_at(trailer_length);
        if !trailer.starts_with(label) || !trailer.ends_with(PEM_END_OF_LINE) {
            continue;
        }
        if !get_line(rest_of_end_line).0.is_empty() {
            continue;
        }

        let body: Zeroizing<Vec<u8>> = Zeroizing::new(
            rest[..end_index]
                .iter()
                .copied()
                .filter(|&byte| byte != b' ' && byte != b'\t')
                .collect(),
        );
        let Some(bytes) = go_base64_decode(&body) else {
            continue;
        };

        // Go skips to the end of the END line (the -1: an empty block has no newline before it).
        let (_, after) = get_line(&rest[end_index + PEM_END.len() - 1..]);
        let block = Block {
            label: label.to_vec(),
            headers,
            bytes,
        };
        return Some((block, after));
    }
}

/// Go's `getLine`: the line without its `\n` (or `\r\n`) and trailing spaces and tabs, and
/// the rest.
fn get_line(data: &[u8]) -> (&[u8], &[u8]) {
    let (mut end, next) = match data.iter().position(|&byte| byte == b'\n') {
        Some(index) => (index, index + 1),
        None => (data.len(), data.len()),
    };
    if next != end && end > 0 && data[end - 1] == b'\r' {
        end -= 1;
    }
    let mut line = &data[..end];
    while let [head @ .., b' ' | b'\t'] = line {
        line = head;
    }
    (line, &data[next..])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_breaks_lines_at_64_columns_with_a_final_newline() {
        let pem = encode(b"TEST", &[], &[0u8; 60]);
        let text = String::from_utf8(pem.to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN TEST-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2], "AAAAAAAAAAAAAAAA");
        assert_eq!(lines[3], "-----END TEST-----");
        assert!(text.ends_with("-----\n"));
        assert_eq!(
            &encode(b"EMPTY", &[], &[])[..],
            b"-----BEGIN EMPTY-----\n-----END EMPTY-----\n"
        );
    }

    #[test]
    fn headers_are_written_proc_type_first_then_sorted() {
        let headers = vec![
            (b"b".to_vec(), b"2".to_vec()),
            (b"Proc-Type".to_vec(), b"4,ENCRYPTED".to_vec()),
            (b"A".to_vec(), b"1".to_vec()),
        ];
        let pem = encode(b"X", &headers, b"hi");
        assert_eq!(
            &pem[..],
            b"-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\nA: 1\nb: 2\n\naGk=\n-----END X-----\n"
        );
        let blocks = decode_all(&pem);
        assert_eq!(blocks.len(), 1);
        assert_eq!(&blocks[0].bytes[..], b"hi");
        assert_eq!(encode(b"X", &blocks[0].headers, &blocks[0].bytes), pem);
    }

    #[test]
    fn decoding_skips_text_and_broken_blocks_and_accepts_crlf() {
        let text = b"junk before\r\n-----BEGIN A-----\r\naGk=\r\n-----END A-----\r\n\
                     -----BEGIN B-----\nnot base64!\n-----END B-----\n\
                     middle\n-----BEGIN C-----\naGk\n=\n-----END C-----   \ntrailing";
        let blocks = decode_all(text);
        let labels: Vec<&[u8]> = blocks.iter().map(|b| b.label.as_slice()).collect();
        assert_eq!(labels, [b"A", b"C"]);
        assert!(blocks.iter().all(|b| &b.bytes[..] == b"hi"));
    }

    #[test]
    fn an_end_line_of_another_type_or_with_text_after_it_is_no_block() {
        assert!(decode_all(b"-----BEGIN A-----\naGk=\n-----END B-----\n").is_empty());
        assert!(decode_all(b"-----BEGIN A-----\naGk=\n-----END A----- x\n").is_empty());
        assert!(decode_all(b"-----BEGIN A-----\naGk=\n").is_empty());
    }

    #[test]
    fn base64_is_go_std_encoding() {
        assert_eq!(&go_base64_decode(b"aGk=").unwrap()[..], b"hi");
        assert_eq!(&go_base64_decode(b"aG\r\nk=\n").unwrap()[..], b"hi");
        // Trailing bits Go does not check: "aGl=" decodes like "aGk=".
        assert_eq!(&go_base64_decode(b"aGl=").unwrap()[..], b"hi");
        assert!(go_base64_decode(b"aGk").is_none());
        assert!(go_base64_decode(b"aGk==").is_none());
        assert!(go_base64_decode(b"a Gk=").is_none());
        assert!(go_base64_decode(b"aGk-").is_none());
        assert_eq!(&go_base64_decode(b"").unwrap()[..], b"");
    }
}
