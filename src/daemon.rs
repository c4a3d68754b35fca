//! The production stack of `kube-kms serve`, in one place: the provider wrappers (Guarded →
//! Instrumented → Chain → the configured provider), the first KEK with start-up retry, the
//! health listener, the socket, the background refresher and the configuration reloader. The
//! binary and the in-process tests both start the plugin through [`Daemon::start`], so tests
//! run exactly the stack that production runs.
//!
//! It never opens the socket before a KEK is wrapped, never logs a key, a token or a PIN, and
//! never prints: what the operator sees on stdout is the binary's business.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use azure_access::auth::AzureEnv;
use grpc_uds::socket;

use crate::config::{Config, ConfigArgs, DefaultsEnv, ProviderConfig};
use crate::envelope::{Envelope, EnvelopeError};
use crate::ops::{self, metrics::Metrics};
use crate::provider::azure::AzureKeyVaultProvider;
use crate::provider::chain::Chain;
use crate::provider::guard::Guarded;
use crate::provider::instrumented::Instrumented;
use crate::provider::local::LocalKeyRing;
use crate::provider::pkcs11::Pkcs11Provider;
use crate::provider::{KeyProvider, ProviderError};
use crate::server::{self, refresher};

/// How often the config file is checked for changes.
const CONFIG_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The longest wait between two attempts to make the first KEK.
const MAX_START_RETRY: Duration = Duration::from_secs(30);

/// Where a running plugin takes a new configuration from.
#[derive(Debug, Clone)]
pub enum Reload {
    /// Never: the configuration given to [`Daemon::start`] is final, and no signal handler is
    /// installed (in-process tests).
    Never,
    /// Load again from these arguments, the environment and the config file they name on SIGHUP
    /// and whenever that file changes; SIGHUP also refreshes the key at once.
    FromArgs(Box<ConfigArgs>),
}

/// Why the plugin could not start or stopped serving.
#[derive(Debug)]
pub enum DaemonError {
    /// The health listener could not bind its address.
    HealthListener {
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configured key provider could not be opened (credentials, module, key ring).
    Provider {
        /// Which provider, e.g. `PKCS#11 key "kek-1"` (no secret).
        provider: String,
        /// Why it could not be opened.
        source: ProviderError,
    },
    /// The first KEK could not be made, for a reason that retrying does not cure.
    FirstKek(EnvelopeError),
    /// The socket could not be created.
    Socket(socket::SocketError),
    /// SIGHUP could not be listened for.
    Signal(std::io::Error),
    /// The gRPC server failed.
    Serve(tonic::transport::Error),
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HealthListener { address, source } => write!(
                f,
                "cannot listen on health_address {address} for /healthz, /readyz and /metrics \
                 ({source}); choose another with --health-address, or \"off\""
            ),
            Self::Provider { provider, source } => write!(f, "cannot use {provider}: {source}"),
            Self::FirstKek(source) => {
                write!(f, "cannot make a first KEK with the key provider: {source}")
            }
            Self::Socket(source) => write!(f, "{source}"),
            Self::Signal(source) => write!(f, "cannot listen for SIGHUP: {source}"),
            Self::Serve(source) => write!(f, "the gRPC server stopped: {source}"),
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::HealthListener { source, .. } | Self::Signal(source) => Some(source),
            Self::Provider { source, .. } => Some(source),
            Self::FirstKek(source) => Some(source),
            Self::Socket(source) => Some(source),
            Self::Serve(source) => Some(source),
        }
    }
}

/// A plugin serving on its socket, until its shutdown future completes or [`Daemon::stop`].
pub struct Daemon {
    socket: PathBuf,
    health_address: Option<SocketAddr>,
    envelope: Arc<Envelope>,
    stop: Arc<watch::Sender<bool>>,
    task: JoinHandle<Result<(), DaemonError>>,
}

impl Daemon {
    /// Starts the production stack for `config`: the health listener first (so /readyz reports
    /// start-up), then the provider stack and the first KEK — retried while the key service is
    /// unreachable, throttling or refusing the key — then the socket, the refresher and the
    /// reloader. Returns `None` when `shutdown` completes before the first KEK is made.
    pub async fn start(
        config: Config,
        reload: Reload,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Option<Self>, DaemonError> {
        let metrics = Arc::new(Metrics::new());
        let target = Arc::new(ops::Target::default());
        target.starting("reading the key provider's current key");

        let (stop, stopping) = watch::channel(false);
        let stop = Arc::new(stop);
        let stopped = move || {
            let mut stopping = stopping.clone();
            async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            }
        };
        let on_shutdown = Arc::clone(&stop);
        tokio::spawn(async move {
            shutdown.await;
            on_shutdown.send_replace(true);
        });

        let health_address = match config.health_address {
            Some(address) => Some(serve_health(address, &target, &metrics, stopped()).await?),
            None => None,
        };

        // Guarded (deadlines, breaker, unwrap slots) → Instrumented (metrics of real remote
        // calls) → Chain (the configured provider, then earlier ones kept decrypt-only after a
        // reload).
        let chain = Arc::new(Chain::new(open_provider(&config.provider).await?));
        let instrumented = Instrumented::new(chain.clone(), Arc::clone(&metrics));
        let provider: Arc<dyn KeyProvider> =
            Arc::new(Guarded::new(Arc::new(instrumented), config.guard));
        let Some(envelope) = start_envelope(provider, &config, &target, stopped()).await? else {
            tracing::info!("stopped before the key provider could be reached");
            return Ok(None);
        };
        let envelope = Arc::new(envelope);
        target.start(Arc::clone(&envelope));

        let (listener, bound) =
            socket::bind_with_group(&config.socket, config.socket_mode, config.socket_group)
                .map_err(DaemonError::Socket)?;
        let socket = bound.path().to_path_buf();
        let key = envelope.current_key();
        tracing::info!(
            socket = %socket.display(),
            provider = envelope.provider_kind(),
            key_id = key.key_id(),
            "serving KMS v2 and v1beta1"
        );

        let trigger = refresher::RefreshTrigger::default();
        let mut background = vec![tokio::spawn(refresher::run(
            Arc::clone(&envelope),
            config.refresh_interval,
            trigger.clone(),
        ))];
        if let Reload::FromArgs(args) = reload {
            let reloader = Arc::new(Reloader {
                args: *args,
                config: Mutex::new(config),
                chain,
                envelope: Arc::clone(&envelope),
            });
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(DaemonError::Signal)?;
            let on_hangup = Arc::clone(&reloader);
            background.push(tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration and refreshing the key");
                    on_hangup.reload().await;
                    trigger.fire();
                }
            }));
            background.push(tokio::spawn(reloader.watch_file()));
        }

        let serving = server::serve(listener, Arc::clone(&envelope), metrics, stopped());
        let task = tokio::spawn(async move {
            let served = serving.await;
            for task in background {
                task.abort();
            }
            drop(bound);
            tracing::info!("stopped; socket removed");
            served.map_err(DaemonError::Serve)
        });
        Ok(Some(Self {
            socket,
            health_address,
            envelope,
            stop,
            task,
        }))
    }

    /// The socket the plugin serves on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Where /healthz, /readyz and /metrics listen (the bound port when the configured one was
    /// 0), or `None` when they are turned off.
    pub fn health_address(&self) -> Option<SocketAddr> {
        self.health_address
    }

    /// The envelope behind the socket.
    pub fn envelope(&self) -> &Arc<Envelope> {
        &self.envelope
    }

    /// Begins shutdown, as if the shutdown future had completed.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until the plugin has stopped: in-flight calls drained, background tasks ended and
    /// the socket removed.
    pub async fn wait(self) -> Result<(), DaemonError> {
        match self.task.await {
            Ok(result) => result,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

/// Binds `address` and serves the operations endpoints until `stopped`; returns the bound
/// address.
async fn serve_health(
    address: SocketAddr,
    target: &Arc<ops::Target>,
    metrics: &Arc<Metrics>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, DaemonError> {
    let listening = |source| DaemonError::HealthListener { address, source };
    let listener = TcpListener::bind(address).await.map_err(listening)?;
    let bound = listener.local_addr().map_err(listening)?;
    tracing::info!(address = %bound, "serving /healthz, /readyz and /metrics");
    let ops = ops::serve(listener, Arc::clone(target), Arc::clone(metrics), stopped);
    tokio::spawn(async move {
        if let Err(error) = ops.await {
            tracing::error!(%error, "the operations endpoints stopped");
        }
    });
    Ok(bound)
}

/// Opens the configured key provider.
async fn open_provider(config: &ProviderConfig) -> Result<Arc<dyn KeyProvider>, DaemonError> {
    Ok(match config {
        ProviderConfig::Local { key_dir } => {
            tracing::warn!(
                key_dir = %key_dir.display(),
                "using the local key provider: the root key is a file on this host; \
                 for development and tests only"
            );
            Arc::new(LocalKeyRing::open_or_create(key_dir).map_err(|source| {
                DaemonError::Provider {
                    provider: format!("the local key ring {}", key_dir.display()),
                    source,
                }
            })?)
        }
        ProviderConfig::Pkcs11(pkcs11) => Arc::new(
            Pkcs11Provider::open(pkcs11.clone())
                .await
                .map_err(|source| DaemonError::Provider {
                    provider: format!("PKCS#11 key {:?}", pkcs11.key_label),
                    source,
                })?,
        ),
        // Credentials are read here; the key is read and checked by the first refresh, which
        // says exactly what is wrong with it.
        ProviderConfig::Azure(azure) => Arc::new(
            AzureKeyVaultProvider::new_with_env((**azure).clone(), &AzureEnv::process()).map_err(
                |source| DaemonError::Provider {
                    provider: format!("Azure {}", azure.key),
                    source,
                },
            )?,
        ),
    })
}

/// Makes the first KEK, retrying while the key service is unreachable, throttling or says the
/// key may not be used (it may be re-enabled), until `stopped` fires. The socket opens only
/// after this returns an envelope: kube-kms never serves Encrypt without a wrapped KEK.
async fn start_envelope(
    provider: Arc<dyn KeyProvider>,
    config: &Config,
    target: &ops::Target,
    stopped: impl Future<Output = ()>,
) -> Result<Option<Envelope>, DaemonError> {
    tokio::pin!(stopped);
    let mut wait = Duration::from_secs(1);
    loop {
        match Envelope::start(Arc::clone(&provider), config.rotation, config.cache_size).await {
            Ok(envelope) => {
                let Some(seed) = &config.legacy_cluster_seed else {
                    return Ok(Some(envelope));
                };
                // The seed's key must be one this configuration reads Go plugin records with.
                provider
                    .check_legacy(seed)
                    .map_err(|source| DaemonError::Provider {
                        provider: "the key of azure.legacy_cluster_seed_file".to_owned(),
                        source,
                    })?;
                return Ok(Some(envelope.with_cluster_seed(seed.clone())));
            }
            Err(EnvelopeError::Provider(
                error @ (ProviderError::Unavailable { .. }
                | ProviderError::Throttled { .. }
                | ProviderError::Revoked { .. }),
            )) => {
                tracing::warn!(%error, retry_in = ?wait, "cannot make a first KEK yet; the socket opens once it can");
                target.starting(format!("waiting for the key provider: {error}"));
            }
            Err(error) => return Err(DaemonError::FirstKek(error)),
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut stopped => return Ok(None),
        }
        wait = (wait * 2).min(MAX_START_RETRY);
    }
}

/// Re-reads the configuration on SIGHUP or when the config file changes. A new provider
/// configuration (another key, a pinned version, another vault or token) takes effect without a
/// restart; the previous provider stays decrypt-only. A bad new configuration is refused and
/// the running one keeps serving.
struct Reloader {
    args: ConfigArgs,
    config: Mutex<Config>,
    chain: Arc<Chain>,
    envelope: Arc<Envelope>,
}

impl Reloader {
    async fn reload(&self) {
        let next = match Config::load(&self.args, &DefaultsEnv::from_process()) {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(%error, "new configuration refused; still serving with the previous one");
                return;
            }
        };
        let mut current = self.config.lock().await;
        if next.provider != current.provider {
            match open_provider(&next.provider).await {
                Ok(provider) => {
                    self.chain.replace(provider);
                    tracing::info!(
                        decrypt_only_providers = self.chain.len() - 1,
                        "new key provider configuration: new KEKs use it, earlier keys stay decrypt-only"
                    );
                    if let Err(error) = self.envelope.refresh().await {
                        tracing::warn!(%error, "first refresh with the new key provider failed; retrying on the refresh interval");
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "new key provider refused; still serving with the previous one");
                    return;
                }
            }
        }
        let restart_needed = next.socket != current.socket
            || next.socket_mode != current.socket_mode
            || next.socket_group != current.socket_group
            || next.refuse_root != current.refuse_root
            || next.health_address != current.health_address
            || next.refresh_interval != current.refresh_interval
            || next.rotation != current.rotation
            || next.cache_size != current.cache_size
            || next.guard != current.guard
            || next.legacy_cluster_seed != current.legacy_cluster_seed;
        if restart_needed {
            tracing::warn!(
                "configuration changes other than the key provider take effect at the next restart"
            );
        }
        *current = next;
    }

    /// Polls the config file (if there is one) and reloads when it changes.
    async fn watch_file(self: Arc<Self>) {
        let Some(path) = self.args.config.clone() else {
            return;
        };
        let stamp = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .map(|meta| (meta.modified().ok(), meta.len()))
        };
        let mut last = stamp(&path);
        let mut ticks = tokio::time::interval(CONFIG_POLL_INTERVAL);
        loop {
            ticks.tick().await;
            let now = stamp(&path);
            if now != last {
                last = now;
                tracing::info!(file = %path.display(), "config file changed; reloading");
                self.reload().await;
            }
        }
    }
}
