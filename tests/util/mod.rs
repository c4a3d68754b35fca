//! Shared helpers for the integration tests: an in-process plugin on a temporary Unix socket,
//! backed by a real local key ring, and tonic clients that connect the way kube-apiserver does;
//! the real `kube-kms serve` binary started and waited for; a provider wrapper with an unwrap hook.

#![allow(
    dead_code,
    reason = "each test crate uses a different subset of these helpers"
)]

use std::future::Future;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod etcd;

use grpc_uds::socket;
use kube_kms::crypto::SecretKey;
use kube_kms::envelope::Envelope;
use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::ops::metrics::Metrics;
use kube_kms::probe::connect;
use kube_kms::proto::v1beta1::key_management_service_client::KeyManagementServiceClient as V1Client;
use kube_kms::proto::v2::key_management_service_client::KeyManagementServiceClient as V2Client;
use kube_kms::provider::local::LocalKeyRing;
use kube_kms::provider::{KeyProvider, KeyVersion, ProviderError, ProviderHealth};
use kube_kms::server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A plugin serving on a temporary socket until dropped or stopped.
pub struct TestPlugin {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub key_dir: PathBuf,
    pub envelope: Arc<Envelope>,
    pub metrics: Arc<Metrics>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    bound: Option<socket::BoundSocket>,
}

/// A temporary directory with a short path (socket paths are limited to 107 bytes).
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kk")
        .tempdir_in("/tmp")
        .expect("temporary directory")
}

/// Opens (creating if needed) the local key ring at `key_dir`.
pub fn key_ring(key_dir: &Path) -> Arc<dyn KeyProvider> {
    Arc::new(LocalKeyRing::open_or_create(key_dir).expect("key ring opens"))
}

/// What [`UnwrapHook`] runs before each unwrap, given how many unwraps came before it.
pub type BeforeUnwrap =
    Box<dyn Fn(u32) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A real provider (usually the local key ring) with a hook awaited ahead of each unwrap: a
/// harness to count, delay, hold or fail unwraps without a fake provider. Everything else is
/// the inner provider's.
pub struct UnwrapHook {
    inner: Arc<dyn KeyProvider>,
    before: BeforeUnwrap,
    unwraps: AtomicU32,
}

impl UnwrapHook {
    /// `inner`, with `before(n)` awaited ahead of its unwrap number `n` (counting from 0).
    pub fn new<F, Fut>(inner: Arc<dyn KeyProvider>, before: F) -> Self
    where
        F: Fn(u32) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            inner,
            before: Box::new(move |earlier| Box::pin(before(earlier))),
            unwraps: AtomicU32::new(0),
        }
    }

    /// How many unwraps were asked of it so far (each has started its hook).
    pub fn unwraps(&self) -> u32 {
        self.unwraps.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl KeyProvider for UnwrapHook {
    fn kind(&self) -> &'static str {
        "hooked"
    }
    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        self.inner.refresh().await
    }
    async fn current_key(&self) -> Option<KeyVersion> {
        self.inner.current_key().await
    }
    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        self.inner.wrap(key, kek).await
    }
    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        let earlier = self.unwraps.fetch_add(1, Ordering::SeqCst);
        (self.before)(earlier).await;
        self.inner.unwrap(version, wrapped).await
    }
    async fn health(&self) -> ProviderHealth {
        self.inner.health().await
    }
}

impl TestPlugin {
    /// A plugin with the default rotation policy on a fresh key ring.
    pub async fn start() -> Self {
        Self::start_with(RotationPolicy::DEFAULT).await
    }

    /// A plugin with `policy` on a fresh key ring.
    pub async fn start_with(policy: RotationPolicy) -> Self {
        let dir = short_tempdir();
        let key_dir = dir.path().join("keys");
        let provider = key_ring(&key_dir);
        Self::start_on(dir, key_dir, provider, policy).await
    }

    /// A plugin serving `provider` from `dir`.
    pub async fn start_on(
        dir: tempfile::TempDir,
        key_dir: PathBuf,
        provider: Arc<dyn KeyProvider>,
        policy: RotationPolicy,
    ) -> Self {
        Self::start_on_with_metrics(dir, key_dir, provider, policy, Arc::new(Metrics::new())).await
    }

    /// A plugin serving `provider` from `dir`, recording requests in `metrics`.
    pub async fn start_on_with_metrics(
        dir: tempfile::TempDir,
        key_dir: PathBuf,
        provider: Arc<dyn KeyProvider>,
        policy: RotationPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        let envelope = Arc::new(
            Envelope::start(provider, policy, NonZeroUsize::new(100).expect("non-zero"))
                .await
                .expect("envelope starts"),
        );
        let socket = dir.path().join("run/kms.sock");
        let (listener, bound) = socket::bind(&socket, 0o600).expect("socket binds");
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(
            listener,
            Arc::clone(&envelope),
            Arc::clone(&metrics),
            async {
                let _ = stop.await;
            },
        ));
        Self {
            dir,
            socket,
            key_dir,
            envelope,
            metrics,
            shutdown: Some(shutdown),
            server: Some(server),
            bound: Some(bound),
        }
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.socket).await.expect("client connects")
    }

    pub async fn v2(&self) -> V2Client<Channel> {
        V2Client::new(self.channel().await)
    }

    pub async fn v1(&self) -> V1Client<Channel> {
        V1Client::new(self.channel().await)
    }

    /// Signals shutdown, waits for in-flight calls to drain and removes the socket.
    pub async fn stop(mut self) {
        self.begin_stop();
        self.finish_stop().await;
    }

    /// Signals shutdown without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits for the server to finish after `begin_stop`, then removes the socket.
    pub async fn finish_stop(&mut self) {
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
        self.bound.take();
    }
}

/// Polls `condition` every 10 ms until it holds, failing the test after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `kube-kms` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_kube-kms");

/// A `kube-kms` command that runs as `uid` (and the group with the same number). The build
/// directory may sit under a path `uid` cannot traverse (e.g. /root), so it runs a copy of the
/// binary placed in `dir`, which `uid` must be able to read.
pub fn command_as(uid: u32, dir: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let binary = dir.join("kube-kms");
    if std::fs::hard_link(BIN, &binary).is_err() {
        std::fs::copy(BIN, &binary).expect("copy the binary");
    }
    let mut command = Command::new(binary);
    command.uid(uid).gid(uid);
    command
}

/// How long `kube-kms serve` may take to open its socket (an Azure start authenticates, reads
/// the key and wraps a first KEK before it does).
const SERVE_START_DEADLINE: Duration = Duration::from_secs(60);

/// `kube-kms serve` running as a child process, killed when dropped.
pub struct ServedBinary {
    child: Child,
    /// The socket, as the printed EncryptionConfiguration's endpoint names it.
    pub socket: PathBuf,
    log: PathBuf,
}

impl ServedBinary {
    /// Spawns `command` — `kube-kms serve` with the caller's flags and environment — with its
    /// stderr in the file `log`, and returns once it prints its EncryptionConfiguration, which it
    /// does only after a first KEK is wrapped and the socket is bound with its final mode. Its
    /// stdout keeps being drained, so the plugin never writes to a closed pipe. Fails the test,
    /// showing the log, if the plugin exits first or is not serving within a minute.
    pub fn start(mut command: Command, log: &Path) -> Self {
        let stderr = std::fs::File::create(log).expect("create the log file");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("kube-kms starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (found, endpoint) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok);
            if let Some(socket) = lines.by_ref().find_map(|line| {
                let endpoint = line.trim().strip_prefix("endpoint: unix://")?;
                Some(PathBuf::from(endpoint))
            }) {
                let _ = found.send(socket);
            }
            lines.for_each(drop);
        });
        let mut served = Self {
            child,
            socket: PathBuf::new(),
            log: log.to_owned(),
        };
        match endpoint.recv_timeout(SERVE_START_DEADLINE) {
            Ok(socket) => served.socket = socket,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = served.child.wait().expect("wait for kube-kms");
                panic!(
                    "kube-kms serve exited with {status} before serving:\n{}",
                    served.logs()
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                "kube-kms serve did not serve within {SERVE_START_DEADLINE:?}:\n{}",
                served.logs()
            ),
        }
        served
    }

    /// [`ServedBinary::start`] off the async runtime, so that in-process services the plugin
    /// talks to (an emulator) keep running while it starts.
    pub async fn start_async(command: Command, log: &Path) -> Self {
        let log = log.to_owned();
        tokio::task::spawn_blocking(move || Self::start(command, &log))
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the plugin logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the logs contain `needle` and returns them, failing the test after
    /// `deadline`.
    pub fn wait_for_log(&self, needle: &str, deadline: Duration) -> String {
        let give_up = Instant::now() + deadline;
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                Instant::now() < give_up,
                "no {needle:?} in the logs within {deadline:?}:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends the signal `name` (e.g. "HUP", "TERM") with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -s {name} {}: {status}", self.pid());
    }

    /// Waits for the plugin to exit, failing the test after `deadline`.
    pub fn wait_for_exit(&mut self, deadline: Duration) -> ExitStatus {
        let give_up = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for kube-kms") {
                return status;
            }
            assert!(
                Instant::now() < give_up,
                "kube-kms did not exit within {deadline:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServedBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
