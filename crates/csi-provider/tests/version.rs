//! The provider served in process on a temporary socket, called as the Secrets Store CSI driver
//! calls it: Version with a tonic client (`:authority` localhost, as driver v1.6+ sends), and
//! Version and Mount with a hand-framed HTTP/2 client that sends the socket's path as the
//! `:authority`, as every driver before v1.6 does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use csi_provider::metrics::Metrics;
use csi_provider::proto::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient;
use csi_provider::proto::v1alpha1::{MountRequest, VersionRequest, VersionResponse};
use csi_provider::service::CsiProvider;
use csi_provider::wiring;
use grpc_uds::fuzzing::h2::{
    ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, PREFACE, RST_STREAM,
    SETTINGS,
};
use grpc_uds::fuzzing::{IndexingEncoder, frame};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Endpoint, Uri};

/// The provider serving on a temporary socket until `stop`.
struct Provider {
    socket: PathBuf,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    _bound: grpc_uds::socket::BoundSocket,
    _dir: tempfile::TempDir,
}

impl Provider {
    fn start() -> Self {
        // Short: socket paths are limited to 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("csi")
            .tempdir_in("/tmp")
            .expect("temporary directory");
        let socket = dir.path().join("azure.sock");
        let (listener, bound) = grpc_uds::socket::bind(&socket, 0o600).expect("socket binds");
        let (stop, stopped) = oneshot::channel::<()>();
        let metrics = Arc::new(Metrics::default());
        let backend = wiring::azure_backend(&wiring::Settings::default(), Arc::clone(&metrics))
            .expect("the default backend builds without a network");
        let provider = CsiProvider::new(Arc::new(backend), metrics, Duration::from_secs(60));
        let server = tokio::spawn(csi_provider::serve(listener, provider, async {
            let _ = stopped.await;
        }));
        Self {
            socket,
            stop,
            server,
            _bound: bound,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server
            .await
            .expect("server task")
            .expect("server stops cleanly");
    }
}

#[tokio::test]
async fn version_answers_a_tonic_client() {
    let provider = Provider::start();
    let socket = provider.socket.clone();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .expect("connects");
    let mut client = CsiDriverProviderClient::new(channel);
    let version = client
        .version(VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .expect("Version answers")
        .into_inner();
    assert_eq!(version.version, "v1alpha1");
    assert_eq!(version.runtime_name, "kube-kms-csi-provider");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));

    let status = client
        .mount(MountRequest::default())
        .await
        .expect_err("an empty MountRequest is not what a driver sends");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("attributes"), "{status:?}");
    drop(client);
    provider.stop().await;
}

#[tokio::test]
async fn version_and_mount_answer_a_driver_that_sends_the_socket_path_as_authority() {
    let provider = Provider::start();
    let authority = provider.socket.to_str().expect("UTF-8 path").to_owned();
    let mut connection = Connection {
        stream: UnixStream::connect(&provider.socket)
            .await
            .expect("connects"),
        encoder: IndexingEncoder::default(),
        decoder: loona_hpack::Decoder::new(),
    };
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[0, 0x2, 0, 0, 0, 0])); // ENABLE_PUSH = 0
    connection.stream.write_all(&hello).await.expect("writes");

    let request = VersionRequest {
        version: "v1alpha1".into(),
    };
    let (status, body) = call(
        &mut connection,
        1,
        &authority,
        "/v1alpha1.CSIDriverProvider/Version",
        &request.encode_to_vec(),
    )
    .await;
    assert_eq!(status, "0", "Version's grpc-status");
    let version = VersionResponse::decode(grpc_message(&body)).expect("a VersionResponse");
    assert_eq!(version.version, "v1alpha1");
    assert_eq!(version.runtime_name, "kube-kms-csi-provider");

    let (status, _) = call(
        &mut connection,
        3,
        &authority,
        "/v1alpha1.CSIDriverProvider/Mount",
        &MountRequest::default().encode_to_vec(),
    )
    .await;
    assert_eq!(
        status, "3",
        "an empty Mount's grpc-status is INVALID_ARGUMENT"
    );
    drop(connection);
    provider.stop().await;
}

/// One HTTP/2 connection's client side: the stream and both HPACK states.
struct Connection {
    stream: UnixStream,
    encoder: IndexingEncoder,
    decoder: loona_hpack::Decoder<'static>,
}

/// Sends one unary call on `stream_id` as grpc-go 1.56 frames it, and reads the server's frames
/// until that stream ends. Returns the grpc-status and the response body (gRPC-framed).
async fn call(
    Connection {
        stream,
        encoder,
        decoder,
    }: &mut Connection,
    stream_id: u32,
    authority: &str,
    path: &str,
    message: &[u8],
) -> (String, Vec<u8>) {
    let block = encoder.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", authority.as_bytes()),
        (b"content-type", b"application/grpc"),
        (b"user-agent", b"grpc-go/1.56.3"),
        (b"te", b"trailers"),
    ]);
    let mut frames = frame(HEADERS, END_HEADERS, stream_id, &block);
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    body.extend_from_slice(message);
    frames.extend(frame(DATA, END_STREAM, stream_id, &body));
    stream.write_all(&frames).await.expect("writes");

    let mut response = Vec::new();
    let mut block = Vec::new();
    let mut status = None;
    loop {
        let (kind, flags, id, payload) = read_frame(stream).await;
        match kind {
            SETTINGS if flags & ACK == 0 => {
                stream
                    .write_all(&frame(SETTINGS, ACK, 0, &[]))
                    .await
                    .expect("writes");
            }
            PING if flags & ACK == 0 => {
                stream
                    .write_all(&frame(PING, ACK, 0, &payload))
                    .await
                    .expect("writes");
            }
            GOAWAY => panic!("the server closed the connection: {payload:?}"),
            RST_STREAM if id == stream_id => {
                panic!("the server reset the stream: {payload:?} (h2 refused the :authority?)")
            }
            DATA if id == stream_id => response.extend_from_slice(&payload),
            HEADERS | CONTINUATION => {
                if kind == HEADERS {
                    block.clear();
                }
                block.extend_from_slice(&payload);
                if flags & END_HEADERS != 0 {
                    decoder
                        .decode_with_cb(&block, |name, value| {
                            if &*name == b"grpc-status" {
                                status = Some(String::from_utf8_lossy(&value).into_owned());
                            }
                        })
                        .expect("the server's HPACK decodes");
                }
                if id == stream_id && flags & END_STREAM != 0 {
                    return (status.expect("trailers carry grpc-status"), response);
                }
            }
            _ => {}
        }
    }
}

async fn read_frame(stream: &mut UnixStream) -> (u8, u8, u32, Vec<u8>) {
    let mut header = [0; 9];
    stream.read_exact(&mut header).await.expect("frame header");
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let stream_id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & !(1 << 31);
    let mut payload = vec![0; len];
    stream
        .read_exact(&mut payload)
        .await
        .expect("frame payload");
    (header[3], header[4], stream_id, payload)
}

/// The message inside a gRPC-framed body of one uncompressed message.
fn grpc_message(body: &[u8]) -> &[u8] {
    assert!(body.len() >= 5 && body[0] == 0, "one uncompressed message");
    &body[5..]
}
