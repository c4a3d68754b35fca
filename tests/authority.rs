//! The `:authority` real gRPC clients send over a Unix socket, spoken by a hand-framed HTTP/2
//! client on the raw socket: the socket path (kube-apiserver's KMS v1 client, grpc-go), an empty
//! one, a percent-encoded path (grpcio) and `localhost` (the KMS v2 client), with header blocks
//! split across CONTINUATION frames, PADDED and PRIORITY flags, and later requests made of
//! references into the connection's HPACK dynamic table. Each call must get a real gRPC answer.
//!
//! `without_the_adapter_h2_refuses_a_socket_path_authority` serves the same service with plain
//! tonic, to show that the client's requests are the ones h2 refuses on its own.

mod util;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use grpc_uds::fuzzing::h2::{
    ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PADDED, PING, PREFACE,
    PRIORITY, RST_STREAM, SETTINGS,
};
use grpc_uds::fuzzing::{IndexingEncoder, frame};
use kube_kms::envelope::Envelope;
use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::ops::metrics::Metrics;
use kube_kms::proto::v1beta1 as v1;
use kube_kms::proto::v2;
use kube_kms::server::v2::KmsV2;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use util::TestPlugin;

/// RST_STREAM's PROTOCOL_ERROR: what h2 answers a malformed authority with.
const PROTOCOL_ERROR: u32 = 0x1;

/// How a request's header block is framed.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    /// Split the block into this many fragments (HEADERS + CONTINUATION frames); h2 allows at
    /// most 5 CONTINUATION frames per block.
    split: Option<usize>,
    /// Pad the HEADERS frame with this many bytes.
    padding: Option<u8>,
    /// Send PRIORITY fields in the HEADERS frame.
    priority: bool,
}

/// What a call got back.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// grpc-status and the response message (empty unless the status is 0).
    Grpc(u32, Vec<u8>),
    /// The server reset the stream with this error code.
    Reset(u32),
    /// The server closed the connection with GOAWAY and this error code.
    GoAway(u32),
}

/// An HTTP/2 client written frame by frame on a raw Unix stream; every byte it sends is also
/// kept in `sent`, so its streams can seed the fuzz corpus.
struct RawClient {
    stream: UnixStream,
    authority: Vec<u8>,
    encoder: IndexingEncoder,
    decoder: loona_hpack::Decoder<'static>,
    next_stream_id: u32,
    sent: Vec<u8>,
}

impl RawClient {
    async fn connect(socket: &Path, authority: &[u8]) -> Self {
        let stream = UnixStream::connect(socket).await.expect("socket connects");
        let mut client = Self {
            stream,
            authority: authority.to_vec(),
            encoder: IndexingEncoder::default(),
            decoder: loona_hpack::Decoder::new(),
            next_stream_id: 1,
            sent: Vec::new(),
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[0, 0x2, 0, 0, 0, 0])); // ENABLE_PUSH = 0
        client.send(&hello).await;
        client
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.sent.extend_from_slice(bytes);
        self.stream.write_all(bytes).await.expect("client writes");
    }

    /// The header block this client sends for `path`, encoded against its dynamic table.
    fn header_block(&mut self, path: &str) -> Vec<u8> {
        let authority = self.authority.clone();
        self.encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", &authority),
            (b"content-type", b"application/grpc"),
            (b"user-agent", b"grpc-go/1.72.0"),
            (b"te", b"trailers"),
            (b"grpc-timeout", b"2999m"),
        ])
    }

    /// Calls `path` with `message`; returns the header block it sent and the outcome.
    async fn call(&mut self, path: &str, message: &[u8], shape: Shape) -> (Vec<u8>, Outcome) {
        let stream_id = self.next_stream_id;
        self.next_stream_id += 2;
        let block = self.header_block(path);
        let mut frames = Vec::new();
        let pieces: Vec<&[u8]> = match shape.split {
            Some(fragments) => block
                .chunks(block.len().div_ceil(fragments).max(1))
                .collect(),
            None => vec![&block],
        };
        for (i, piece) in pieces.iter().enumerate() {
            let last = if i + 1 == pieces.len() {
                END_HEADERS
            } else {
                0
            };
            if i > 0 {
                frames.extend(frame(CONTINUATION, last, stream_id, piece));
                continue;
            }
            let mut payload = Vec::new();
            let mut flags = last;
            if let Some(padding) = shape.padding {
                flags |= PADDED;
                payload.push(padding);
            }
            if shape.priority {
                flags |= PRIORITY;
                payload.extend_from_slice(&[0x80, 0, 0, 0, 200]); // exclusive on 0, weight 201
            }
            payload.extend_from_slice(piece);
            payload.extend(std::iter::repeat_n(0, shape.padding.map_or(0, usize::from)));
            frames.extend(frame(HEADERS, flags, stream_id, &payload));
        }
        let mut body = vec![0];
        body.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
        body.extend_from_slice(message);
        frames.extend(frame(DATA, END_STREAM, stream_id, &body));
        self.send(&frames).await;
        let outcome = self.outcome(stream_id).await;
        (block, outcome)
    }

    async fn read_frame(&mut self) -> (u8, u8, u32, Vec<u8>) {
        let mut header = [0; 9];
        self.stream
            .read_exact(&mut header)
            .await
            .expect("server frame header");
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let stream_id =
            u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & !(1 << 31);
        let mut payload = vec![0; len];
        self.stream
            .read_exact(&mut payload)
            .await
            .expect("server frame payload");
        (header[3], header[4], stream_id, payload)
    }

    /// Reads the server's frames until `stream_id` ends, answering SETTINGS and PING.
    async fn outcome(&mut self, stream_id: u32) -> Outcome {
        let mut message = Vec::new();
        let mut block = Vec::new();
        loop {
            let (kind, flags, id, mut payload) = self.read_frame().await;
            let mut header_flags = flags;
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    self.send(&frame(SETTINGS, ACK, 0, &[])).await;
                    continue;
                }
                PING if flags & ACK == 0 => {
                    self.send(&frame(PING, ACK, 0, &payload)).await;
                    continue;
                }
                GOAWAY => {
                    let code = u32::from_be_bytes(payload[4..8].try_into().expect("4 bytes"));
                    return Outcome::GoAway(code);
                }
                RST_STREAM if id == stream_id => {
                    return Outcome::Reset(u32::from_be_bytes(
                        payload[..4].try_into().expect("4 bytes"),
                    ));
                }
                DATA if id == stream_id => {
                    if flags & PADDED != 0 {
                        let padding = usize::from(payload[0]);
                        payload = payload[1..payload.len() - padding].to_vec();
                    }
                    message.extend_from_slice(&payload);
                }
                HEADERS | CONTINUATION => {
                    if kind == HEADERS {
                        assert_eq!(flags & (PADDED | PRIORITY), 0, "h2 sends neither");
                        block.clear();
                        header_flags = flags;
                    }
                    block.extend_from_slice(&payload);
                    if flags & END_HEADERS == 0 {
                        continue;
                    }
                    let fields = self.decoder.decode(&block).expect("server HPACK decodes");
                    if id != stream_id || header_flags & END_STREAM == 0 {
                        continue;
                    }
                    let status = fields
                        .iter()
                        .find(|(name, _)| name == b"grpc-status")
                        .map(|(_, value)| String::from_utf8_lossy(value).parse().expect("number"))
                        .expect("trailers carry grpc-status");
                    // One length-prefixed message, uncompressed.
                    let body = if message.len() >= 5 {
                        assert_eq!(message[0], 0, "uncompressed");
                        message[5..].to_vec()
                    } else {
                        Vec::new()
                    };
                    return Outcome::Grpc(status, body);
                }
                _ => {}
            }
        }
    }
}

fn ok<M: Message + Default>(outcome: Outcome) -> M {
    match outcome {
        Outcome::Grpc(0, body) => M::decode(body.as_slice()).expect("response decodes"),
        other => panic!("expected grpc-status 0, got {other:?}"),
    }
}

/// Status, Encrypt and Decrypt on v2 and Version, Encrypt and Decrypt on v1beta1, on one
/// connection, each framed in `shapes[i % shapes.len()]`; asserts every answer.
async fn the_kms_contract(client: &mut RawClient, shapes: &[Shape]) {
    let mut shape = shapes.iter().copied().cycle();
    let mut next = || shape.next().expect("a shape");

    let (_, outcome) = client
        .call("/v2.KeyManagementService/Status", &[], next())
        .await;
    let status: v2::StatusResponse = ok(outcome);
    assert_eq!(
        (status.version.as_str(), status.healthz.as_str()),
        ("v2", "ok")
    );

    let plaintext = b"a 32-byte data encryption key...".to_vec();
    let request = v2::EncryptRequest {
        plaintext: plaintext.clone(),
        uid: "uid-1".into(),
    };
    let (_, outcome) = client
        .call(
            "/v2.KeyManagementService/Encrypt",
            &request.encode_to_vec(),
            next(),
        )
        .await;
    let sealed: v2::EncryptResponse = ok(outcome);
    assert_eq!(*sealed.key_id, *status.key_id);

    let request = v2::DecryptRequest {
        ciphertext: sealed.ciphertext,
        uid: "uid-2".into(),
        key_id: sealed.key_id.to_string(),
        annotations: (*sealed.annotations).clone(),
    };
    let (_, outcome) = client
        .call(
            "/v2.KeyManagementService/Decrypt",
            &request.encode_to_vec(),
            next(),
        )
        .await;
    let opened: v2::DecryptResponse = ok(outcome);
    assert_eq!(opened.plaintext, plaintext);

    let request = v1::VersionRequest {
        version: "v1beta1".into(),
    };
    let (_, outcome) = client
        .call(
            "/v1beta1.KeyManagementService/Version",
            &request.encode_to_vec(),
            next(),
        )
        .await;
    let version: v1::VersionResponse = ok(outcome);
    assert_eq!(version.version, "v1beta1");

    let request = v1::EncryptRequest {
        version: "v1beta1".into(),
        plain: plaintext.clone(),
    };
    let (_, outcome) = client
        .call(
            "/v1beta1.KeyManagementService/Encrypt",
            &request.encode_to_vec(),
            next(),
        )
        .await;
    let sealed: v1::EncryptResponse = ok(outcome);
    let request = v1::DecryptRequest {
        version: "v1beta1".into(),
        cipher: sealed.cipher,
    };
    let path = "/v1beta1.KeyManagementService/Decrypt";
    let (block, outcome) = client.call(path, &request.encode_to_vec(), next()).await;
    let opened: v1::DecryptResponse = ok(outcome);
    assert_eq!(opened.plain, plaintext);
    // Only the new path is a literal: every other field, the authority too, is a reference
    // into the connection's dynamic table.
    assert!(
        block.len() <= path.len() + 10,
        "the last request refers to the table: {block:02x?}"
    );
}

const SHAPES: [Shape; 4] = [
    Shape {
        split: None,
        padding: None,
        priority: false,
    },
    Shape {
        split: Some(4),
        padding: Some(7),
        priority: true,
    },
    Shape {
        split: None,
        padding: Some(0),
        priority: false,
    },
    Shape {
        split: Some(6),
        padding: None,
        priority: true,
    },
];

#[tokio::test]
async fn the_socket_path_as_authority_is_served_however_the_headers_are_framed() {
    let plugin = TestPlugin::start().await;
    let path = plugin.socket.as_os_str().as_encoded_bytes().to_vec();
    let mut client = RawClient::connect(&plugin.socket, &path).await;
    the_kms_contract(&mut client, &SHAPES).await;
    // The authority went out once as a literal and then as an index into the client's table.
    let mentions = client
        .sent
        .windows(path.len())
        .filter(|w| *w == path)
        .count();
    assert_eq!(mentions, 1, "the path is sent once, then referenced");
    plugin.stop().await;
}

#[tokio::test]
async fn every_authority_real_clients_send_is_served() {
    let plugin = TestPlugin::start().await;
    let path = plugin.socket.to_str().expect("UTF-8 path").to_owned();
    for authority in [
        String::new(),
        "localhost".to_owned(),
        path.replace('/', "%2F"),
        path.clone(),
    ] {
        let mut client = RawClient::connect(&plugin.socket, authority.as_bytes()).await;
        the_kms_contract(&mut client, &SHAPES[..2]).await;
    }
    plugin.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_needs_a_rewrite_is_served() {
    let plugin = TestPlugin::start().await;
    let mut client = RawClient::connect(&plugin.socket, b"localhost").await;
    the_kms_contract(&mut client, &SHAPES).await;
    plugin.stop().await;
}

/// The same v2 service served by tonic on a plain `UnixListenerStream`, as before the adapter.
async fn plain_tonic(dir: &Path) -> std::path::PathBuf {
    let envelope = Arc::new(
        Envelope::start(
            util::key_ring(&dir.join("keys")),
            RotationPolicy::DEFAULT,
            NonZeroUsize::new(10).expect("non-zero"),
        )
        .await
        .expect("envelope starts"),
    );
    let socket = dir.join("plain.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("binds");
    let service = v2::key_management_service_server::KeyManagementServiceServer::new(KmsV2::new(
        envelope,
        Arc::new(Metrics::new()),
    ));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    socket
}

#[tokio::test]
async fn without_the_adapter_h2_refuses_a_socket_path_authority() {
    let dir = util::short_tempdir();
    let socket = plain_tonic(dir.path()).await;
    let path = socket.as_os_str().as_encoded_bytes().to_vec();

    let mut refused = RawClient::connect(&socket, &path).await;
    let (_, outcome) = refused
        .call("/v2.KeyManagementService/Status", &[], Shape::default())
        .await;
    assert_eq!(outcome, Outcome::Reset(PROTOCOL_ERROR));

    // The same client with kube-apiserver's v2 authority is served: only the authority differs.
    let mut served = RawClient::connect(&socket, b"localhost").await;
    let (_, outcome) = served
        .call("/v2.KeyManagementService/Status", &[], Shape::default())
        .await;
    let status: v2::StatusResponse = ok(outcome);
    assert_eq!(status.healthz, "ok");
}

/// Writes what the client sends in the tests above into fuzz/corpus/h2_authority/, each
/// prefixed with the fuzz entry's read-size byte (0: one read). Run by hand after changing
/// the client: `cargo test --test authority -- --ignored write_seeds`.
#[tokio::test]
#[ignore = "writes the seed streams into fuzz/corpus; run by hand"]
async fn write_seeds() {
    let plugin = TestPlugin::start().await;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/h2_authority");
    std::fs::create_dir_all(&corpus).expect("corpus directory");
    let path = plugin.socket.as_os_str().as_encoded_bytes().to_vec();
    for (name, authority, shapes, read_size) in [
        ("rust-path-plain", path.clone(), &SHAPES[..1], 0u8),
        (
            "rust-path-continuation-padded-priority",
            path.clone(),
            &SHAPES[..],
            0,
        ),
        ("rust-path-in-reads-of-7", path.clone(), &SHAPES[1..2], 7),
        ("rust-empty-authority", Vec::new(), &SHAPES[..2], 0),
        ("rust-localhost", b"localhost".to_vec(), &SHAPES[..], 0),
    ] {
        let mut client = RawClient::connect(&plugin.socket, &authority).await;
        the_kms_contract(&mut client, shapes).await;
        let mut seed = vec![read_size];
        seed.extend_from_slice(&client.sent);
        std::fs::write(corpus.join(name), seed).expect("seed written");
    }
    plugin.stop().await;
}
