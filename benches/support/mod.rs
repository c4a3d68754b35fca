//! The benchmark harness shared by `benches/socket.rs` and `benches/remote.rs`: the Key Vault
//! emulator with a 20 ms latency for the remote figures, the two baselines served over the same
//! stack as kube-kms (a no-op transport floor and the per-call-remote pattern), a socket served
//! on its own runtime, and a load driver with N concurrent callers on one connection (as
//! kube-apiserver uses one).
//!
//! The remote key service is always the Key Vault emulator (crates/keyvault-emulator) reached
//! by the real Azure provider over HTTPS on this machine ([`Vault`]); the 20 ms is the
//! emulator's injected latency. Nothing here measures a live remote service, and nothing in
//! `cargo test` asserts on a time.

#![allow(
    dead_code,
    reason = "each bench target uses a different subset of this harness"
)]

use std::collections::HashMap;
use std::io;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use azure_access::auth::{AuthMode, AzureEnv, SecretSource};
use grpc_uds::socket;
use hyper_util::rt::TokioIo;
use keyvault_emulator::{
    Emulator, Fault, FaultRule, IdentitySpec, KeySpec, Operation, Options, Permission,
    RunningEmulator,
};
use kube_kms::crypto::SecretKey;
use kube_kms::envelope::Envelope;
use kube_kms::envelope::format::{KEY_VERSION_ANNOTATION, WRAPPED_KEK_ANNOTATION};
use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::proto::v2::key_management_service_client::KeyManagementServiceClient;
use kube_kms::proto::v2::key_management_service_server::{
    KeyManagementService, KeyManagementServiceServer,
};
use kube_kms::proto::v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use kube_kms::provider::azure::key_id::KeyRef;
use kube_kms::provider::azure::{AzureConfig, AzureKeyVaultProvider};
use kube_kms::provider::guard::{GuardPolicy, Guarded};
use kube_kms::provider::local::LocalKeyRing;
use kube_kms::provider::{KeyProvider, KeyVersion};
use kube_kms::server;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};

/// The simulated remote latency of the cold-start and per-call-remote benches: 20 ms per call.
pub const REMOTE_LATENCY: Duration = Duration::from_millis(20);

/// A fresh, short temporary directory (socket paths are limited to 107 bytes).
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kkb")
        .tempdir_in("/tmp")
        .expect("temporary directory")
}

/// Where cargo puts build output, benchmark results and criterion's reports.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Whether this run is `cargo bench` (criterion's convention: cargo passes `--bench`), rather
/// than `cargo test --benches` running each bench once as a smoke test.
pub fn bench_mode() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// A Key Vault emulator (crates/keyvault-emulator) on its own 2-worker runtime, as a separate
/// service would be, with one RSA-2048 key "kek" (what Azure's Go plugin and most clusters use)
/// and a client-secret identity holding only get, wrapKey and unwrapKey. The emulator's counters
/// say how many remote calls a benchmark made; its fault rules add the remote latency.
pub struct Vault {
    emulator: Option<RunningEmulator>,
    /// The key's wrap algorithm as Key Vault names it, for [`Vault::unwrap_locally`].
    algorithm: &'static str,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
    client_id: String,
    secret_file: PathBuf,
}

impl Vault {
    /// Starts the emulator and creates the key and the identity.
    pub async fn start() -> Self {
        Self::start_with(Options::key_vault(), KeySpec::rsa(2048), "RSA-OAEP-256").await
    }

    /// A Managed HSM emulator with one oct-HSM 256-bit key "kek" (wrapped with A256KW, an AES
    /// key wrap that costs the emulator microseconds where RSA-2048 costs milliseconds), the
    /// same identity and the same transport: the cold start without the emulator's RSA.
    pub async fn start_managed_hsm() -> Self {
        Self::start_with(Options::managed_hsm(), KeySpec::oct_hsm(256), "A256KW").await
    }

    async fn start_with(options: Options, spec: KeySpec, algorithm: &'static str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-vault")
            .enable_all()
            .build()
            .expect("emulator runtime");
        // Emulator::start serves on the runtime it is called on.
        let emulator = runtime
            .spawn(Emulator::start(options))
            .await
            .expect("emulator task")
            .expect("the emulator starts");
        let dir = short_tempdir();
        let client_id = "00000000-0000-4000-8000-0000000be0c4".to_owned();
        let secret = kube_kms::provider::azure::random_version();
        emulator
            .register_identity(IdentitySpec {
                name: Some("kube-kms-bench".into()),
                client_id: Some(client_id.clone()),
                client_secret: Some(secret.clone()),
                permissions: Some(vec![
                    Permission::Get,
                    Permission::WrapKey,
                    Permission::UnwrapKey,
                ]),
                ..IdentitySpec::default()
            })
            .expect("register the identity");
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, &secret).expect("write the secret file");
        emulator
            .create_key("kek", spec)
            .await
            .expect("create the key");
        Self {
            emulator: Some(emulator),
            algorithm,
            runtime: Some(runtime),
            _dir: dir,
            client_id,
            secret_file,
        }
    }

    fn emulator(&self) -> &RunningEmulator {
        self.emulator.as_ref().expect("running until dropped")
    }

    /// A fresh Azure provider on the key, opened as `kube-kms serve` opens it (token, key read,
    /// wrap/unwrap self-test), reaching the emulator as an operator's configuration would: its
    /// CA through `azure.ca_file`, tokens from its Entra endpoint.
    pub async fn provider(&self) -> Arc<AzureKeyVaultProvider> {
        let emulator = self.emulator();
        let key = KeyRef::new(&emulator.vault_url(), "kek").expect("the emulator's URL");
        let mut config = AzureConfig::new(key);
        config.transport.ca_file = Some(emulator.ca_pem_path().to_owned());
        config.authority_host = Some(emulator.authority_url());
        config.insecure_skip_challenge_resource_check = true;
        config.auth.azure_json = self._dir.path().join("no-azure.json");
        config.auth.mode = AuthMode::ClientSecret;
        config.auth.tenant_id = Some(emulator.tenant_id().to_owned());
        config.auth.client_id = Some(self.client_id.clone());
        config.auth.client_secret = Some(SecretSource::File(self.secret_file.clone()));
        Arc::new(
            AzureKeyVaultProvider::open_with_env(config, &AzureEnv::from_pairs(&[]))
                .await
                .expect("the Azure provider opens"),
        )
    }

    /// From now on the emulator waits `latency` before answering every request.
    pub fn add_latency(&self, latency: Duration) {
        let millis = u64::try_from(latency.as_millis()).expect("a sane latency");
        self.emulator()
            .inject(FaultRule::always(Fault::Latency { millis }));
    }

    /// Requests the emulator has received so far, of every operation (key reads, wraps,
    /// unwraps, tokens, challenges): every remote call, from the service's side.
    pub fn remote_calls(&self) -> u64 {
        self.emulator()
            .all_counts()
            .values()
            .map(|counts| counts.requests)
            .sum()
    }

    /// Unwrap requests the emulator has received so far.
    pub fn unwraps(&self) -> u64 {
        self.emulator().calls(Operation::UnwrapKey)
    }

    /// Unwraps `wrapped` with the key's current version in this process, the emulator's own
    /// crypto without HTTP, TLS, JSON or faults: what one unwrap costs its CPU.
    pub fn unwrap_locally(&self, wrapped: &[u8]) -> Vec<u8> {
        self.emulator()
            .unwrap_locally("kek", None, self.algorithm, wrapped)
            .expect("the emulator unwraps what it wrapped")
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        drop(self.emulator.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `provider` as `kube-kms serve` wraps it: deadlines, a circuit breaker and at most
/// [`GuardPolicy::DEFAULT`]`.max_concurrent_unwraps` unwraps in flight.
pub fn guarded(provider: Arc<dyn KeyProvider>) -> Arc<dyn KeyProvider> {
    Arc::new(Guarded::new(provider, GuardPolicy::DEFAULT))
}

/// The local key ring in `dir`/keys (created 0700 on first use), as `kube-kms serve` opens it.
pub fn key_ring(dir: &Path) -> Arc<dyn KeyProvider> {
    Arc::new(LocalKeyRing::open_or_create(&dir.join("keys")).expect("key ring opens"))
}

/// An envelope over `provider` with the default rotation policy and cache size.
pub async fn envelope(provider: Arc<dyn KeyProvider>) -> Arc<Envelope> {
    envelope_with(provider, RotationPolicy::DEFAULT).await
}

/// An envelope over `provider` with `policy`.
pub async fn envelope_with(
    provider: Arc<dyn KeyProvider>,
    policy: RotationPolicy,
) -> Arc<Envelope> {
    Arc::new(
        Envelope::start(provider, policy, NonZeroUsize::new(1000).expect("non-zero"))
            .await
            .expect("envelope starts"),
    )
}

/// The transport floor: a `/v2.KeyManagementService` that answers at once with canned
/// responses of the same shape and size as kube-kms's (same key_id, same annotations, same
/// ciphertext and plaintext lengths), touching neither envelope nor provider. Served by
/// [`server::serve_v2_only`], it costs everything kube-kms's Encrypt and Decrypt cost except
/// the envelope itself. (v2 Status is not used as the floor: it asks the provider for its
/// health, and its messages are smaller than a Decrypt's.)
#[derive(Clone)]
pub struct NoopKms {
    encrypted: EncryptResponse,
    plaintext: Vec<u8>,
}

impl NoopKms {
    /// A floor whose responses mirror `encrypted`, a real Encrypt response of `plaintext`.
    pub fn mirroring(encrypted: EncryptResponse, plaintext: Vec<u8>) -> Self {
        Self {
            encrypted,
            plaintext,
        }
    }
}

#[tonic::async_trait]
impl KeyManagementService for NoopKms {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            version: "v2".into(),
            healthz: "ok".into(),
            key_id: self.encrypted.key_id.to_string(),
        }))
    }

    async fn decrypt(
        &self,
        _: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        Ok(Response::new(DecryptResponse {
            plaintext: self.plaintext.clone(),
        }))
    }

    async fn encrypt(
        &self,
        _: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        Ok(Response::new(self.encrypted.clone()))
    }
}

/// The per-call-remote pattern (what Azure's Go plugin does): every Encrypt is one provider
/// `wrap` of the DEK seed and every Decrypt one provider `unwrap`, through the same
/// [`KeyProvider`] trait kube-kms uses. Only 32-byte seeds (what kube-apiserver sends) fit a
/// wrap, which is all the benchmarks send.
pub struct PerCallRemote {
    provider: Arc<dyn KeyProvider>,
    key: KeyVersion,
}

impl PerCallRemote {
    /// The pattern over `provider`, wrapping with its current key.
    pub async fn new(provider: Arc<dyn KeyProvider>) -> Self {
        let key = provider.refresh().await.expect("provider has a key");
        Self { provider, key }
    }
}

#[tonic::async_trait]
impl KeyManagementService for PerCallRemote {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            version: "v2".into(),
            healthz: "ok".into(),
            key_id: self.key.key_id().to_owned(),
        }))
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let request = request.into_inner();
        let version = request
            .annotations
            .get(KEY_VERSION_ANNOTATION)
            .and_then(|version| std::str::from_utf8(version).ok())
            .ok_or_else(|| Status::invalid_argument("no key version"))?;
        let seed = self
            .provider
            .unwrap(version, &request.ciphertext)
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        Ok(Response::new(DecryptResponse {
            plaintext: seed.expose().to_vec(),
        }))
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let seed = SecretKey::from_slice(&request.into_inner().plaintext)
            .ok_or_else(|| Status::invalid_argument("only 32-byte seeds"))?;
        let ciphertext = self
            .provider
            .wrap(&self.key, &seed)
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        Ok(Response::new(EncryptResponse {
            ciphertext,
            key_id: Arc::clone(self.key.shared_key_id()),
            annotations: Arc::new(HashMap::from([(
                KEY_VERSION_ANNOTATION.to_owned(),
                self.key.version().as_bytes().to_vec(),
            )])),
        }))
    }
}

/// A server on a temporary Unix socket, on its own multi-threaded runtime (as a separate
/// process would be), until dropped.
pub struct Served {
    _dir: tempfile::TempDir,
    /// The socket path.
    pub socket: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _bound: socket::BoundSocket,
}

/// What a [`Served`] socket serves.
pub enum Service {
    /// kube-kms itself: `server::serve` over this envelope (v2 and v1beta1, with metrics).
    KubeKms(Arc<Envelope>),
    /// The no-op transport floor, via `server::serve_v2_only`.
    Noop(NoopKms),
    /// The per-call-remote pattern, via `server::serve_v2_only`.
    PerCallRemote(PerCallRemote),
    /// The no-op floor served with `server::LIMITS` straight through `grpc_uds`, with or without
    /// the `:authority` adapter: what the adapter alone costs.
    Transport(NoopKms, Adapter),
}

/// Whether a [`Service::Transport`] hands connections to hyper through the `:authority`
/// adapter (`grpc_uds::serve`, as every product serves) or as accepted
/// (`grpc_uds::serve_without_authority_adapter`, tonic over a plain `UnixListenerStream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// `grpc_uds::serve`.
    With,
    /// `grpc_uds::serve_without_authority_adapter`.
    Without,
}

impl Served {
    /// Binds a fresh socket and serves `service` on a new 2-worker runtime.
    pub fn start(service: Service) -> Self {
        let dir = short_tempdir();
        let path = dir.path().join("run/kms.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-server")
            .enable_all()
            .build()
            .expect("server runtime");
        let (listener, bound) = {
            let _entered = runtime.enter();
            socket::bind(&path, 0o600).expect("socket binds")
        };
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let stop = async {
                let _ = stop.await;
            };
            let served = runtime.block_on(async move {
                match service {
                    Service::KubeKms(envelope) => {
                        let metrics = Arc::new(kube_kms::ops::metrics::Metrics::new());
                        server::serve(listener, envelope, metrics, stop).await
                    }
                    Service::Noop(noop) => server::serve_v2_only(listener, noop, stop).await,
                    Service::PerCallRemote(remote) => {
                        server::serve_v2_only(listener, remote, stop).await
                    }
                    Service::Transport(noop, adapter) => {
                        let routes = Routes::new(grpc_uds::limit_messages!(
                            KeyManagementServiceServer::new(noop),
                            server::LIMITS
                        ));
                        match adapter {
                            Adapter::With => {
                                grpc_uds::serve(listener, routes, server::LIMITS, stop).await
                            }
                            Adapter::Without => {
                                grpc_uds::serve_without_authority_adapter(
                                    listener,
                                    routes,
                                    server::LIMITS,
                                    stop,
                                )
                                .await
                            }
                        }
                    }
                }
            });
            served.expect("server stops cleanly");
        });
        Self {
            _dir: dir,
            socket: path,
            shutdown: Some(shutdown),
            thread: Some(thread),
            _bound: bound,
        }
    }

    /// A client on one new connection to this socket, as kube-apiserver connects.
    pub async fn client(&self) -> KeyManagementServiceClient<Channel> {
        client(&self.socket).await
    }

    /// A client on one new connection to this socket whose requests carry `authority`.
    pub async fn client_sending(
        &self,
        authority: SentAuthority,
    ) -> Result<KeyManagementServiceClient<Channel>, tonic::transport::Error> {
        client_sending(&self.socket, authority).await
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A v2 client on one new connection to `socket`.
pub async fn client(socket: &Path) -> KeyManagementServiceClient<Channel> {
    KeyManagementServiceClient::new(
        kube_kms::probe::connect(socket)
            .await
            .expect("client connects"),
    )
}

/// The `:authority` a [`client_sending`] client's requests carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentAuthority {
    /// `localhost`, as kube-apiserver's KMS v2 client sends: the adapter passes every header
    /// block byte-for-byte.
    Localhost,
    /// The socket path, as grpc-go (kube-apiserver's KMS v1 client) sends: once as a literal
    /// that enters the HPACK dynamic table, then as an index into it. h2 refuses it, so the
    /// adapter re-encodes every header block on the connection.
    SocketPath,
}

/// A tonic v2 client on one new connection to `socket`, like [`client`] (same endpoint, same
/// connector shape), whose every request carries `authority`. tonic cannot send an authority
/// `http::uri::Authority` refuses, and that is exactly what h2 refuses and the adapter rewrites;
/// so for [`SentAuthority::SocketPath`] the connection's [`FirstAuthority`] replaces the
/// `localhost` literal of the first header block with the path on the wire. Both kinds go
/// through that wrapper, so the client's own cost is the same for both.
pub async fn client_sending(
    socket: &Path,
    authority: SentAuthority,
) -> Result<KeyManagementServiceClient<Channel>, tonic::transport::Error> {
    let socket = socket.to_owned();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = UnixStream::connect(&socket).await?;
                let path = match authority {
                    SentAuthority::Localhost => None,
                    SentAuthority::SocketPath => Some(socket.as_os_str().as_encoded_bytes()),
                };
                Ok::<_, io::Error>(TokioIo::new(FirstAuthority::new(stream, path)))
            }
        }))
        .await?;
    Ok(KeyManagementServiceClient::new(channel))
}

/// A client connection that, when given a path, rewrites the `:authority` of the first HTTP/2
/// header block it writes from h2's `localhost` literal to that path (a literal with
/// incremental indexing, not Huffman-coded, as grpc-go sends it); h2's later requests refer to
/// that dynamic table entry by index, so the server decodes the path in every request. From
/// that block on, and without a path from the start, bytes pass straight through.
///
/// It understands only what h2's client writes first (the preface, frames, then one HEADERS
/// frame opening with indexed fields and the `:authority` literal) and panics on anything
/// else: a bench must not silently measure the wrong mode. The dynamic table entry is larger on
/// the server's side than h2 counts it; nothing is evicted while the table holds one request's
/// few headers, well under its 4096 bytes.
pub struct FirstAuthority {
    io: UnixStream,
    /// The client's bytes held until the first header block is rewritten: `Some` until then.
    held: Option<(Vec<u8>, Vec<u8>)>,
    /// Bytes ready for the socket that it has not taken yet.
    out: Vec<u8>,
    sent: usize,
}

const H2_PREFACE_LEN: usize = 24;
const H2_FRAME_HEADER_LEN: usize = 9;

impl FirstAuthority {
    fn new(io: UnixStream, path: Option<&[u8]>) -> Self {
        Self {
            io,
            held: path.map(|path| (path.to_vec(), Vec::new())),
            out: Vec::new(),
            sent: 0,
        }
    }

    /// Moves the preface and every complete frame of `held` to `out`, rewriting the first
    /// HEADERS frame; after that one, moves the rest and stops holding.
    fn take_frames(&mut self) {
        let Some((path, held)) = &mut self.held else {
            return;
        };
        loop {
            if held.starts_with(b"PRI * HTTP/2.0") {
                // h2 writes the whole preface at once, first; no frame header starts with 'P'
                // (a length of 5 MiB or more).
                assert!(held.len() >= H2_PREFACE_LEN, "the preface in one write");
                self.out.extend(held.drain(..H2_PREFACE_LEN));
            }
            let Some(header) = held.get(..H2_FRAME_HEADER_LEN) else {
                return;
            };
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let (kind, flags) = (header[3], header[4]);
            let end = H2_FRAME_HEADER_LEN + len;
            if held.len() < end {
                return;
            }
            if kind != 0x1 {
                self.out.extend(held.drain(..end));
                continue;
            }
            assert_eq!(
                flags & 0x2c,
                0x04,
                "h2's first HEADERS frame is expected whole, unpadded, without priority"
            );
            let block = &held[H2_FRAME_HEADER_LEN..end];
            let literal = block
                .iter()
                .position(|&byte| byte & 0x80 == 0)
                .expect("a literal in h2's first header block");
            assert_eq!(
                block[literal], 0x41,
                "h2's first literal is expected to be :authority with incremental indexing"
            );
            let value_len = usize::from(block[literal + 1] & 0x7f);
            let path_len = u8::try_from(path.len())
                .ok()
                .filter(|&len| len < 0x7f && value_len < 0x7f)
                .expect("authorities short enough for a one-byte length");
            let mut rewritten = block[..literal].to_vec();
            rewritten.extend([0x41, path_len]);
            rewritten.extend_from_slice(path);
            rewritten.extend_from_slice(&block[literal + 2 + value_len..]);
            let len = rewritten.len().to_be_bytes();
            self.out.extend_from_slice(&len[len.len() - 3..]);
            self.out.extend_from_slice(&header[3..]);
            self.out.extend(rewritten);
            self.out.extend_from_slice(&held[end..]);
            self.held = None;
            return;
        }
    }

    /// Writes `out` to the socket until it is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for FirstAuthority {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for FirstAuthority {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        match &mut this.held {
            None => Pin::new(&mut this.io).poll_write(cx, buf),
            Some((_, held)) => {
                held.extend_from_slice(buf);
                this.take_frames();
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        match &mut this.held {
            None => Pin::new(&mut this.io).poll_write_vectored(cx, bufs),
            Some((_, held)) => {
                let mut n = 0;
                for buf in bufs {
                    held.extend_from_slice(buf);
                    n += buf.len();
                }
                this.take_frames();
                Poll::Ready(Ok(n))
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// One RPC the load driver repeats.
#[derive(Clone)]
pub enum Call {
    /// Encrypt of this plaintext.
    Encrypt(EncryptRequest),
    /// Decrypt of this request.
    Decrypt(DecryptRequest),
    /// Encrypt, then Decrypt of what came back (one pair counts as one call).
    RoundTrip(EncryptRequest),
}

impl Call {
    async fn run(&self, client: &mut KeyManagementServiceClient<Channel>) {
        match self {
            Self::Encrypt(request) => {
                let response = client.encrypt(request.clone()).await.expect("Encrypt");
                std::hint::black_box(response);
            }
            Self::Decrypt(request) => {
                let response = client.decrypt(request.clone()).await.expect("Decrypt");
                std::hint::black_box(response);
            }
            Self::RoundTrip(request) => {
                let sealed = client
                    .encrypt(request.clone())
                    .await
                    .expect("Encrypt")
                    .into_inner();
                let opened = client
                    .decrypt(DecryptRequest {
                        ciphertext: sealed.ciphertext,
                        uid: request.uid.clone(),
                        key_id: sealed.key_id.to_string(),
                        annotations: (*sealed.annotations).clone(),
                    })
                    .await
                    .expect("Decrypt")
                    .into_inner();
                assert_eq!(opened.plaintext, request.plaintext, "round trip");
            }
        }
    }
}

/// Runs `calls` repetitions of `call` split across `callers` concurrent tasks sharing one
/// connection (`client` clones share it), and returns the wall time from first call to last.
pub async fn drive(
    client: &KeyManagementServiceClient<Channel>,
    callers: usize,
    calls: u64,
    call: &Call,
) -> Duration {
    let callers_u64 = callers as u64;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers_u64 {
        let share = calls / callers_u64 + u64::from(caller < calls % callers_u64);
        let mut client = client.clone();
        let call = call.clone();
        tasks.spawn(async move {
            for _ in 0..share {
                call.run(&mut client).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("caller task");
    }
    start.elapsed()
}

/// A 32-byte DEK seed, as kube-apiserver sends.
pub fn seed() -> Vec<u8> {
    let mut seed = vec![0u8; 32];
    kube_kms::crypto::fill_random(&mut seed).expect("random");
    seed
}

/// An Encrypt request for `plaintext`.
pub fn encrypt_request(plaintext: Vec<u8>) -> EncryptRequest {
    EncryptRequest {
        plaintext,
        uid: "bench-0000-0000-0000-000000000000".into(),
    }
}

/// The Decrypt request kube-apiserver would send for `sealed`.
pub fn decrypt_request(sealed: &EncryptResponse) -> DecryptRequest {
    DecryptRequest {
        ciphertext: sealed.ciphertext.clone(),
        uid: "bench-0000-0000-0000-000000000000".into(),
        key_id: sealed.key_id.to_string(),
        annotations: (*sealed.annotations).clone(),
    }
}

/// The wrapped-KEK annotation name, for harness code that inspects responses.
pub const WRAPPED_KEK: &str = WRAPPED_KEK_ANNOTATION;

/// One row of the summary: a figure, its baseline measured in the same run, and their ratio.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Figure {
    /// A stable name for machines.
    pub id: String,
    /// What was measured.
    pub figure: String,
    /// The measurement.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// What it is compared with.
    pub baseline: String,
    /// The baseline's measurement, in the same unit.
    pub baseline_value: f64,
    /// value / baseline_value (None when the baseline is zero).
    pub ratio: Option<f64>,
    /// The target, in words ("ratio ≤ 1.15"), or "informational".
    pub target: String,
    /// Whether the target is met; None when informational.
    pub met: Option<bool>,
}

impl Figure {
    /// `value` (in `unit`) against `baseline_value` (same unit), with no target yet.
    pub fn new(
        id: &str,
        figure: &str,
        (value, unit): (f64, &str),
        (baseline, baseline_value): (&str, f64),
    ) -> Self {
        Self {
            id: id.into(),
            figure: figure.into(),
            value,
            unit: unit.into(),
            baseline: baseline.into(),
            baseline_value,
            ratio: (baseline_value != 0.0).then(|| value / baseline_value),
            target: "informational".into(),
            met: None,
        }
    }

    /// Attaches a target and whether it is met.
    pub fn target(mut self, target: &str, met: bool) -> Self {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

/// A ratio measured in alternating rounds, robust to load that drifts during a run: each round
/// times a batch of kube-kms and a batch of the baseline back to back (which goes first
/// alternates), and the figures are medians over rounds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Paired {
    /// Criterion's directory of the kube-kms benchmark this pairs (target/criterion/<ours>).
    pub ours: String,
    /// Criterion's directory of the baseline benchmark.
    pub baseline: String,
    /// Median ns per operation of kube-kms over the rounds.
    pub ours_ns: f64,
    /// Median ns per operation of the baseline over the rounds.
    pub baseline_ns: f64,
    /// Median over rounds of (kube-kms time / baseline time) for the same batch size.
    pub time_ratio: f64,
    /// Rounds measured.
    pub rounds: usize,
}

impl Paired {
    /// Runs `rounds` rounds of `batch` operations each through `ours` and `baseline` (each
    /// returns the wall time it took for the batch it was given).
    pub fn measure(
        (ours_id, baseline_id): (&str, &str),
        rounds: usize,
        batch: u64,
        mut ours: impl FnMut(u64) -> Duration,
        mut baseline: impl FnMut(u64) -> Duration,
    ) -> Self {
        let mut ours_ns = Vec::with_capacity(rounds);
        let mut baseline_ns = Vec::with_capacity(rounds);
        let mut ratios = Vec::with_capacity(rounds);
        let per_op = |elapsed: Duration| elapsed.as_nanos() as f64 / batch as f64;
        for round in 0..rounds {
            let (o, b) = if round % 2 == 0 {
                let o = ours(batch);
                (o, baseline(batch))
            } else {
                let b = baseline(batch);
                (ours(batch), b)
            };
            ours_ns.push(per_op(o));
            baseline_ns.push(per_op(b));
            ratios.push(o.as_secs_f64() / b.as_secs_f64());
        }
        Self {
            ours: ours_id.into(),
            baseline: baseline_id.into(),
            ours_ns: median(&mut ours_ns),
            baseline_ns: median(&mut baseline_ns),
            time_ratio: median(&mut ratios),
            rounds,
        }
    }

    /// Writes `pairs` to target/bench-results/`name`.json for the summary.
    pub fn write_all(name: &str, pairs: &[Self]) {
        let dir = target_dir().join("bench-results");
        std::fs::create_dir_all(&dir).expect("results directory");
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(pairs).expect("json"))
            .expect("write paired results");
        println!("wrote {}", path.display());
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
