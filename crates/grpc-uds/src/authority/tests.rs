//! The adapter's promises, one test each: which authorities are replaced, what passes
//! byte-for-byte, how the client's HPACK context is followed, and how bad input fails.

use super::*;
use crate::fuzzing::{IndexingEncoder, ServerView, frame, server_view};
use loona_hpack::Encoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SOCKET: &[u8] = b"/var/run/kube-kms/kms.sock";
const SETTINGS: &[u8] = &[0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 0x3, 0, 0, 0, 100];
const WINDOW_UPDATE: &[u8] = &[0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0, 0x0f, 0, 1];

fn request(authority: &[u8]) -> Vec<(&'static [u8], &[u8])> {
    vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/v2.KeyManagementService/Status"),
        (b":authority", authority),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
}

fn owned(fields: &[(&[u8], &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fields
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}

/// A client stream: the preface, SETTINGS, then `frames`.
fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(SETTINGS);
    for frame in frames {
        bytes.extend_from_slice(frame);
    }
    bytes
}

fn run(input: &[u8]) -> (Result<(), AuthorityError>, Vec<u8>, ClientStream) {
    let mut client = ClientStream::new();
    let mut out = Vec::new();
    let result = client.feed(input, &mut out).and_then(|()| client.finish());
    (result, out, client)
}

fn run_ok(input: &[u8]) -> (Vec<u8>, ClientStream) {
    let (result, out, client) = run(input);
    assert_eq!(result, Ok(()));
    (out, client)
}

fn view(out: &[u8]) -> ServerView {
    let view = server_view(out).expect("the server reads the output");
    assert_eq!(view.trailing, 0);
    view
}

fn lit_indexed(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x40];
    for string in [name, value] {
        encode_integer(&mut bytes, 0, 7, string.len());
        bytes.extend_from_slice(string);
    }
    bytes
}

#[test]
fn a_socket_path_authority_reaches_the_server_as_localhost() {
    let block = Encoder::new().encode(request(SOCKET));
    let input = connection(&[
        frame(HEADERS, END_HEADERS, 1, &block),
        WINDOW_UPDATE.to_vec(),
    ]);
    let (out, client) = run_ok(&input);
    assert!(client.is_rewriting());
    let view = view(&out);
    assert_eq!(view.blocks, vec![(1, owned(&request(b"localhost")))]);
    assert!(
        out.starts_with(&connection(&[])),
        "preface and SETTINGS pass as sent"
    );
    assert!(out.ends_with(WINDOW_UPDATE));
}

#[test]
fn exactly_the_authorities_h2_refuses_are_replaced() {
    for (authority, replaced) in [
        (&b"/var/run/kube-kms/kms.sock"[..], true),
        (b"%2Fvar%2Frun%2Fkube-kms%2Fkms.sock", true),
        (b"", true),
        (b"unix:///var/run/kms.sock", true),
        (b"kms sock", true),
        (b"localhost", false),
        (b"localhost:50051", false),
        (b"127.0.0.1:8080", false),
        (b"[::1]:8080", false),
    ] {
        let name = String::from_utf8_lossy(authority);
        assert_eq!(h2_accepts(authority), !replaced, "{name:?}");
        let block = Encoder::new().encode(request(authority));
        let (out, client) = run_ok(&connection(&[frame(HEADERS, END_HEADERS, 1, &block)]));
        assert_eq!(client.is_rewriting(), replaced, "{name:?}");
        let expected = if replaced { b"localhost" } else { authority };
        assert_eq!(
            view(&out).blocks,
            vec![(1, owned(&request(expected)))],
            "{name:?}"
        );
    }
}

#[test]
fn a_connection_that_never_needs_a_rewrite_passes_byte_for_byte() {
    let mut encoder = Encoder::new();
    let first = encoder.encode(request(b"localhost"));
    let second = encoder.encode(request(b"localhost"));
    let mut padded = vec![3];
    padded.extend_from_slice(&[0x80, 0, 0, 1, 15]);
    padded.extend_from_slice(&second[..2]);
    padded.extend_from_slice(&[0, 0, 0]);
    let input = connection(&[
        frame(HEADERS, END_HEADERS, 1, &first),
        frame(0x0, END_STREAM, 1, b"\0\0\0\0\x02\x08\x01"),
        frame(HEADERS, PADDED | PRIORITY, 3, &padded),
        frame(CONTINUATION, END_HEADERS, 3, &second[2..]),
    ]);
    let (out, client) = run_ok(&input);
    assert!(!client.is_rewriting());
    assert_eq!(out, input);
}

#[test]
fn padded_priority_and_continuation_frames_are_read_and_rewritten() {
    let block = Encoder::new().encode(request(SOCKET));
    let mut first = vec![10];
    first.extend_from_slice(&[0, 0, 0, 1, 200]);
    first.extend_from_slice(&block[..3]);
    first.extend_from_slice(&[0; 10]);
    let mut frames = vec![frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &first)];
    let rest = &block[3..];
    for (i, piece) in rest.chunks(7).enumerate() {
        let last = (i + 1) * 7 >= rest.len();
        frames.push(frame(
            CONTINUATION,
            if last { END_HEADERS } else { 0 },
            5,
            piece,
        ));
    }
    let (out, client) = run_ok(&connection(&frames));
    assert!(client.is_rewriting());
    let view = view(&out);
    assert_eq!(view.blocks, vec![(5, owned(&request(b"localhost")))]);
    let (kind, flags, stream_id, _) = view.frames[1];
    assert_eq!((kind, stream_id), (HEADERS, 5));
    assert_eq!(
        flags,
        PRIORITY | END_STREAM | END_HEADERS,
        "priority kept, padding dropped"
    );
    let headers_at = connection(&[]).len();
    assert_eq!(&out[headers_at + 9..headers_at + 14], &[0, 0, 0, 1, 200]);
}

#[test]
fn the_clients_dynamic_table_is_followed_across_requests() {
    // The client's encoder indexes every field, the authority too; later requests are a few
    // indexed bytes that only the client's table resolves.
    let mut encoder = IndexingEncoder::default();
    let mut frames = Vec::new();
    let mut expected = Vec::new();
    for (stream_id, path) in [(1, "/v2.KeyManagementService/Status"), (3, "/a"), (5, "/a")] {
        let mut fields = request(SOCKET);
        fields[2].1 = path.as_bytes();
        let block = encoder.encode(fields.iter().copied());
        if stream_id > 1 {
            assert!(
                block.len() < 16,
                "request {stream_id} uses the dynamic table"
            );
        }
        frames.push(frame(HEADERS, END_HEADERS, stream_id, &block));
        fields[3].1 = b"localhost";
        expected.push((stream_id, owned(&fields)));
    }
    let (out, _) = run_ok(&connection(&frames));
    assert_eq!(view(&out).blocks, expected);
}

#[test]
fn blocks_before_the_first_rewrite_pass_and_every_later_block_is_re_encoded() {
    let mut encoder = IndexingEncoder::default();
    let first = encoder.encode(request(b"localhost"));
    let second = encoder.encode(request(SOCKET));
    // Valid again, but made of references into the client's table.
    let third = encoder.encode(request(b"localhost"));
    assert!(third.iter().all(|byte| byte & 0x80 != 0), "all indexed");
    let input = connection(&[
        frame(HEADERS, END_HEADERS, 1, &first),
        frame(HEADERS, END_HEADERS, 3, &second),
        frame(HEADERS, END_HEADERS, 5, &third),
    ]);
    let (out, client) = run_ok(&input);
    assert!(client.is_rewriting());
    let passed = connection(&[frame(HEADERS, END_HEADERS, 1, &first)]);
    assert!(out.starts_with(&passed), "the first block passes as sent");
    let view = view(&out);
    let localhost = owned(&request(b"localhost"));
    assert_eq!(
        view.blocks,
        vec![
            (1, localhost.clone()),
            (3, localhost.clone()),
            (5, localhost)
        ]
    );
}

#[test]
fn table_size_updates_evict_and_are_dropped_from_rewritten_blocks() {
    let mut first = lit_indexed(b":authority", b"/run/a.sock");
    first.extend_from_slice(&lit_indexed(b"x-first", b"1"));
    // Shrink to 0 (evicts both entries), back to 4096, add one entry.
    let mut second = vec![0x20, 0x3f, 0xe1, 0x1f];
    second.extend_from_slice(&lit_indexed(b":authority", b"/run/b.sock"));
    let frames = |third: &[u8]| {
        connection(&[
            frame(HEADERS, END_HEADERS, 1, &first),
            frame(HEADERS, END_HEADERS, 3, &second),
            frame(HEADERS, END_HEADERS, 5, third),
        ])
    };
    let (out, _) = run_ok(&frames(&[0x80 | 62]));
    let view = view(&out);
    let authority = || vec![(b":authority".to_vec(), b"localhost".to_vec())];
    assert_eq!(
        view.blocks,
        vec![
            (1, {
                let mut fields = authority();
                fields.push((b"x-first".to_vec(), b"1".to_vec()));
                fields
            }),
            (3, authority()),
            (5, authority())
        ]
    );
    assert!(
        !out.windows(2).any(|w| w == [0x20, 0x3f]),
        "no size update reaches the server"
    );

    // Without the eviction, index 63 would still be the first request's authority.
    let (result, _, _) = run(&frames(&[0x80 | 63]));
    assert_eq!(
        result,
        Err(AuthorityError::Hpack {
            stream_id: 5,
            error: HpackError::InvalidIndex
        })
    );
    // A size above the server's SETTINGS_HEADER_TABLE_SIZE is the client's error.
    let too_big = connection(&[frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xe2, 0x1f, 0x82])]);
    assert_eq!(
        run(&too_big).0,
        Err(AuthorityError::Hpack {
            stream_id: 1,
            error: HpackError::TableSizeAboveLimit
        })
    );
}

#[test]
fn a_large_rewritten_block_is_re_framed_within_16384_bytes() {
    let big = vec![b'v'; 40_000];
    let mut fields = request(SOCKET);
    fields.push((b"x-big", &big));
    let block = Encoder::new().encode(fields.iter().copied());
    let mut frames = Vec::new();
    let pieces: Vec<_> = block.chunks(20_000).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let mut flags = if i == 0 { END_STREAM } else { 0 };
        if i + 1 == pieces.len() {
            flags |= END_HEADERS;
        }
        frames.push(frame(kind, flags, 7, piece));
    }
    let (out, _) = run_ok(&connection(&frames));
    let view = view(&out);
    fields[3].1 = b"localhost";
    assert_eq!(view.blocks, vec![(7, owned(&fields))]);
    let header_frames: Vec<_> = view.frames.iter().filter(|f| f.0 != 0x4).collect();
    assert_eq!(header_frames.len(), 3);
    for (i, &&(kind, flags, stream_id, len)) in header_frames.iter().enumerate() {
        assert!(len <= MAX_FRAME_PAYLOAD, "frame {i} is {len} bytes");
        assert_eq!(stream_id, 7);
        let last = i + 1 == header_frames.len();
        assert_eq!(kind, if i == 0 { HEADERS } else { CONTINUATION });
        assert_eq!(flags & END_HEADERS != 0, last);
        assert_eq!(flags & END_STREAM != 0, i == 0);
    }
}

#[test]
fn other_frames_pass_untouched_even_a_byte_at_a_time() {
    for authority in [&b"localhost"[..], SOCKET] {
        let block = Encoder::new().encode(request(authority));
        let mut data = vec![0, 0, 0, 3, 0xe8];
        data.extend(std::iter::repeat_n(0x5a, 1000));
        let after_headers = [
            frame(0x0, END_STREAM, 1, &data),
            frame(0x6, 0, 0, b"12345678"),
            frame(0x3, 0, 1, &[0, 0, 0, 8]),
            frame(0xfa, 0xff, 9, b"unknown types pass too"),
        ]
        .concat();
        let mut frames = vec![
            WINDOW_UPDATE.to_vec(),
            frame(HEADERS, END_HEADERS, 1, &block),
        ];
        frames.push(after_headers.clone());
        let input = connection(&frames);
        let (whole, _) = run_ok(&input);
        let mut client = ClientStream::new();
        let mut bytewise = Vec::new();
        for byte in &input {
            client
                .feed(std::slice::from_ref(byte), &mut bytewise)
                .expect("feeds");
        }
        assert_eq!(client.finish(), Ok(()));
        assert_eq!(bytewise, whole);
        assert!(whole.starts_with(&connection(&[WINDOW_UPDATE.to_vec()])));
        assert!(whole.ends_with(&after_headers));
    }
}

#[test]
fn a_header_block_over_64_kib_fails_the_connection_before_it_is_held() {
    let mut frames = vec![frame(HEADERS, 0, 1, &[0x82; 16_384])];
    for _ in 0..3 {
        frames.push(frame(CONTINUATION, 0, 1, &[0x82; 16_384]));
    }
    let input = connection(&frames);
    let mut client = ClientStream::new();
    let mut out = Vec::new();
    let error = AuthorityError::HeaderBlockTooLarge { stream_id: 1 };
    assert_eq!(client.feed(&input, &mut out), Err(error.clone()));
    assert!(client.block.raw.capacity() <= MAX_HEADER_BLOCK_BYTES);
    assert_eq!(
        client.feed(b"more", &mut out),
        Err(error.clone()),
        "stays failed"
    );
    assert_eq!(client.finish(), Err(error));
    assert_eq!(
        out,
        connection(&[]),
        "nothing of the block reached the server"
    );
}

#[test]
fn a_rewrite_that_would_expand_past_the_list_limit_fails() {
    let big = vec![b'v'; 3900];
    let first = lit_indexed(b"x-big", &big);
    let mut second = lit_indexed(b":authority", SOCKET);
    second.extend(std::iter::repeat_n(0x80 | 63, 20)); // x-big, 20 times: 79 KB decoded
    let input = connection(&[
        frame(HEADERS, END_HEADERS, 1, &first),
        frame(HEADERS, END_HEADERS, 3, &second),
    ]);
    assert_eq!(
        run(&input).0,
        Err(AuthorityError::HeaderListTooLarge { stream_id: 3 })
    );
}

#[test]
fn broken_framing_fails_the_connection() {
    let block = Encoder::new().encode(request(SOCKET));
    for (frames, error) in [
        (
            vec![frame(HEADERS, 0, 1, &block), frame(0x0, 0, 1, b"")],
            AuthorityError::ExpectedContinuation {
                stream_id: 1,
                frame_type: 0,
                frame_stream_id: 1,
            },
        ),
        (
            vec![
                frame(HEADERS, 0, 1, &block),
                frame(CONTINUATION, END_HEADERS, 3, b""),
            ],
            AuthorityError::ExpectedContinuation {
                stream_id: 1,
                frame_type: CONTINUATION,
                frame_stream_id: 3,
            },
        ),
        (
            vec![frame(CONTINUATION, END_HEADERS, 1, &block)],
            AuthorityError::UnexpectedContinuation { stream_id: 1 },
        ),
        (
            vec![frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2])],
            AuthorityError::PushPromiseFromClient { stream_id: 1 },
        ),
        (
            vec![frame(HEADERS, END_HEADERS | PADDED, 1, &[])],
            AuthorityError::MalformedHeadersFrame {
                stream_id: 1,
                reason: "PADDED flag without a pad length",
            },
        ),
        (
            vec![frame(HEADERS, END_HEADERS | PADDED, 1, &[5, 0x82, 0, 0])],
            AuthorityError::MalformedHeadersFrame {
                stream_id: 1,
                reason: "padding longer than the frame payload",
            },
        ),
        (
            vec![frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0, 0, 1])],
            AuthorityError::MalformedHeadersFrame {
                stream_id: 1,
                reason: "PRIORITY flag without its 5 bytes",
            },
        ),
        (
            vec![frame(HEADERS, END_HEADERS, 1, &[0xff])],
            AuthorityError::Hpack {
                stream_id: 1,
                error: HpackError::Truncated,
            },
        ),
    ] {
        let (result, _, _) = run(&connection(&frames));
        assert_eq!(result, Err(error));
    }
}

#[test]
fn the_stream_may_end_between_frames_but_not_inside_one() {
    let block = Encoder::new().encode(request(SOCKET));
    let whole = connection(&[frame(HEADERS, END_HEADERS, 1, &block)]);
    assert_eq!(run(&whole).0, Ok(()));
    assert_eq!(
        run(&PREFACE[..10]).0,
        Ok(()),
        "inside the preface: the server decides"
    );
    for cut in [
        whole.len() - 1,
        whole.len() - block.len() - 4,
        connection(&[]).len() + 3,
    ] {
        assert_eq!(
            run(&whole[..cut]).0,
            Err(AuthorityError::EndedMidFrame),
            "cut at {cut}"
        );
    }
    let open = connection(&[frame(HEADERS, 0, 1, &block)]);
    assert_eq!(
        run(&open).0,
        Err(AuthorityError::EndedMidFrame),
        "an open header block"
    );
    let error: io::Error = AuthorityError::EndedMidFrame.into();
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn a_stream_that_is_not_http2_passes_unchanged() {
    let input = b"GET / HTTP/1.1\r\nHost: /var/run/kms.sock\r\n\r\n";
    let (out, client) = run_ok(input);
    assert_eq!(out, input);
    assert!(!client.is_rewriting());
}

#[test]
fn errors_say_what_failed_and_what_was_expected() {
    let cases = [
        (
            AuthorityError::HeaderBlockTooLarge { stream_id: 3 },
            "HTTP/2 header block on stream 3 is larger than 65536 bytes",
        ),
        (
            AuthorityError::ExpectedContinuation {
                stream_id: 1,
                frame_type: 0,
                frame_stream_id: 1,
            },
            "expected a CONTINUATION frame on stream 1, got frame type 0x0 on stream 1",
        ),
        (
            AuthorityError::EndedMidFrame,
            "HTTP/2 client closed the connection in the middle of a frame",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
    let hpack = AuthorityError::Hpack {
        stream_id: 1,
        error: HpackError::InvalidIndex,
    };
    assert!(
        std::error::Error::source(&hpack).is_some(),
        "keeps the decoder's error"
    );
    assert_eq!(io::Error::from(hpack).kind(), io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn the_adapter_reads_rewritten_bytes_and_writes_through() {
    let block = Encoder::new().encode(request(SOCKET));
    let input = connection(&[frame(HEADERS, END_HEADERS, 1, &block)]);
    let (expected, _) = run_ok(&input);
    let (mut client, server) = tokio::io::duplex(64);
    let mut adapter = AuthorityAdapter::new(server);
    let writer = tokio::spawn(async move {
        client.write_all(&input).await.expect("client writes");
        let mut reply = [0; 5];
        client.read_exact(&mut reply).await.expect("client reads");
        reply
    });
    let mut read = Vec::new();
    while read.len() < expected.len() {
        let mut chunk = [0; 7];
        let n = adapter.read(&mut chunk).await.expect("adapter reads");
        assert!(n > 0, "ended early");
        read.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(read, expected);
    assert!(adapter.is_rewriting());
    adapter.write_all(b"hello").await.expect("adapter writes");
    assert_eq!(&writer.await.expect("client task"), b"hello");
    assert_eq!(adapter.read(&mut [0; 8]).await.expect("clean end"), 0);
}

#[tokio::test]
async fn the_adapter_reports_a_stream_cut_inside_a_frame() {
    let (mut client, server) = tokio::io::duplex(1024);
    let mut adapter = AuthorityAdapter::new(server);
    let mut cut = connection(&[]);
    cut.extend_from_slice(&[0, 0, 9, HEADERS, END_HEADERS, 0, 0, 0, 1, 0x82]);
    client.write_all(&cut).await.expect("client writes");
    drop(client);
    let mut read = Vec::new();
    let error = adapter
        .read_to_end(&mut read)
        .await
        .expect_err("cut mid-frame");
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(read, connection(&[]));
}
