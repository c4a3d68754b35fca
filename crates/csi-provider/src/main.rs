//! The `kube-kms-csi-provider` command: hardens the process, builds the Azure Key Vault backend
//! from its flags, binds the provider's socket and serves the Secrets Store CSI driver on it,
//! with /healthz, /readyz and /metrics on the health listener, until SIGTERM or SIGINT; then
//! drains.
//!
//! Never starts serving before the socket has its final mode, never deletes a socket another
//! process still answers on (see [`grpc_uds::socket`]), and never reads a secret from a flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use csi_provider::metrics::Metrics;
use grpc_uds::ops::{Probe, Readiness};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// kube-kms-csi-provider: a Secrets Store CSI driver provider for Azure Key Vault.
///
/// Serves `/v1alpha1.CSIDriverProvider` on a Unix socket in the directory the driver searches
/// for providers, as the provider `azure`: SecretProviderClasses written for Azure's provider
/// mount the same files. See docs/csi-provider.md.
#[derive(Debug, Parser)]
#[command(name = "kube-kms-csi-provider", version, about, long_about)]
struct Args {
    /// The provider's socket: `<provider name>.sock` in the driver's provider directory.
    #[arg(long, env = "KUBE_KMS_CSI_SOCKET", default_value = csi_provider::DEFAULT_SOCKET)]
    socket: PathBuf,

    /// The cloud of classes that set no `cloudName`: AzurePublicCloud, AzureChinaCloud or
    /// AzureUSGovernmentCloud.
    #[arg(long, default_value = "AzurePublicCloud")]
    cloud_name: String,

    /// The directory a class's `cloudEnvFileName` (a custom cloud's JSON file) must be in.
    #[arg(long, default_value = "/etc/kubernetes")]
    cloud_env_dir: PathBuf,

    /// Order the certificates of a certificate's PEM leaf, intermediates, root (as Azure's
    /// provider's flag of the same name).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    construct_pem_chain: bool,

    /// Also write `<file>.crt` and `<file>.key` for a certificate's secret in PEM (as Azure's
    /// provider's flag of the same name).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    write_cert_and_key_in_separate_files: bool,

    /// Where /healthz, /readyz and /metrics are served (HTTP, unauthenticated); `off` for none.
    #[arg(long, default_value = "127.0.0.1:8989")]
    health_address: String,

    /// How long a read of an object's latest version is reused, for every pod with the same
    /// identity (e.g. `30s`; `0s` turns reuse off but keeps concurrent reads coalesced).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    cache_latest_ttl: Duration,

    /// How long a read of a pinned object version is reused.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    cache_pinned_ttl: Duration,

    /// Concurrent reads per vault; further reads wait within their Mount's deadline.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    vault_concurrency: u32,

    /// The longest a Mount may take (kubelet's own deadline, 2 minutes, is usually shorter
    /// than this plus the driver's retries).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    mount_timeout: Duration,

    /// A PEM file of CA certificates trusted besides the system's (a TLS-inspecting proxy, a
    /// private cloud).
    #[arg(long)]
    ca_file: Option<PathBuf>,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: String,

    /// For tests and emulators only: send every host under DNS suffix SUFFIX to ADDR
    /// (`SUFFIX=ADDR`).
    #[arg(long, value_name = "SUFFIX=ADDR")]
    insecure_resolve: Vec<String>,

    /// For tests and emulators only: the base URL VM managed identity tokens are requested
    /// from instead of IMDS (`http://169.254.169.254`).
    #[arg(long, value_name = "URL")]
    insecure_imds_endpoint: Option<String>,

    /// For tests and emulators only: accept a Key Vault authentication challenge whose
    /// resource does not match the vault's host.
    #[arg(long)]
    insecure_skip_challenge_resource_check: bool,
}

/// The socket's mode: the driver connects as root, which needs no permission bits.
const SOCKET_MODE: u32 = 0o600;

/// `500ms`, `30s`, `10m`, `1h`: a whole number and a unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&at| at > 0)
        .ok_or_else(|| format!("{text:?} is not a duration like 500ms, 30s, 10m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let unit_millis = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    number
        .checked_mul(unit_millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn main() -> ExitCode {
    // Before anything else, and before any token or secret is read: not dumpable, no core
    // dumps, memory locked where allowed. Logged once logging is set up.
    let hardening = grpc_uds::hardening::apply();
    let args = Args::parse();
    // The provider's own events at the chosen level; libraries (tonic, h2, hyper, the SDK) at
    // most at info, so that trace logging never dumps HTTP/2 frames or request bodies.
    let libraries = if matches!(args.log_level.as_str(), "debug" | "trace") {
        "info"
    } else {
        args.log_level.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{libraries},csi_provider={level},kube_kms_csi_provider={level}",
        level = args.log_level
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    hardening.log();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kube-kms-csi-provider: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kube-kms-csi-provider: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What /readyz and /metrics report.
struct Ops {
    serving: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Probe for Ops {
    async fn readiness(&self) -> Readiness {
        let ready = self.serving.load(Ordering::Acquire);
        Readiness {
            ready,
            report: format!(
                "socket: {}\n",
                if ready { "serving" } else { "not yet bound" }
            ),
        }
    }

    async fn metrics(&self) -> String {
        self.metrics.encode()
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Listen for SIGTERM before the socket exists, so a stop sent once it appears is not lost.
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let metrics = Arc::new(Metrics::default());
    let backend = csi_provider::wiring::azure_backend(&settings(&args), Arc::clone(&metrics))
        .context("cannot set up the Azure Key Vault backend")?;
    let provider = csi_provider::service::CsiProvider::new(
        Arc::new(backend),
        Arc::clone(&metrics),
        args.mount_timeout,
    );
    let ops = Arc::new(Ops {
        serving: AtomicBool::new(false),
        metrics,
    });
    let (stop_ops, ops_stopped) = tokio::sync::oneshot::channel::<()>();
    if args.health_address != "off" {
        let address: SocketAddr = args.health_address.parse().with_context(|| {
            format!(
                "--health-address {:?} is not an address like 127.0.0.1:8989 (or `off`)",
                args.health_address
            )
        })?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on --health-address {address}"))?;
        tracing::info!(address = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
        tokio::spawn(grpc_uds::ops::serve(listener, Arc::clone(&ops), async {
            let _ = ops_stopped.await;
        }));
    }
    let (listener, bound) = grpc_uds::socket::bind(&args.socket, SOCKET_MODE)?;
    tracing::info!(
        socket = %bound.path().display(),
        version = env!("CARGO_PKG_VERSION"),
        "serving the Secrets Store CSI driver"
    );
    ops.serving.store(true, Ordering::Release);
    csi_provider::serve(listener, provider, stopped(&mut terminate)).await?;
    ops.serving.store(false, Ordering::Release);
    drop(bound);
    let _ = stop_ops.send(());
    tracing::info!("stopped");
    Ok(())
}

/// The backend's settings from the flags.
fn settings(args: &Args) -> csi_provider::wiring::Settings {
    csi_provider::wiring::Settings {
        cloud_name: args.cloud_name.clone(),
        cloud_env_dir: args.cloud_env_dir.clone(),
        construct_pem_chain: args.construct_pem_chain,
        separate_cert_and_key_files: args.write_cert_and_key_in_separate_files,
        cache_latest_ttl: args.cache_latest_ttl,
        cache_pinned_ttl: args.cache_pinned_ttl,
        vault_concurrency: args.vault_concurrency as usize,
        ca_file: args.ca_file.clone(),
        insecure_resolve: args.insecure_resolve.clone(),
        insecure_imds_endpoint: args.insecure_imds_endpoint.clone(),
        insecure_skip_challenge_resource_check: args.insecure_skip_challenge_resource_check,
    }
}

async fn stopped(terminate: &mut Signal) {
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: draining in-flight calls"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining in-flight calls"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["30", "s", "1.5s", "-1s", "1d", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_flags_defaults_are_the_backends_defaults() {
        let args = Args::try_parse_from(["kube-kms-csi-provider"]).unwrap();
        assert_eq!(settings(&args), csi_provider::wiring::Settings::default());
        assert_eq!(args.mount_timeout, Duration::from_secs(60));
        let args = Args::try_parse_from([
            "kube-kms-csi-provider",
            "--construct-pem-chain=false",
            "--write-cert-and-key-in-separate-files",
        ])
        .unwrap();
        assert!(!args.construct_pem_chain);
        assert!(args.write_cert_and_key_in_separate_files);
    }
}
