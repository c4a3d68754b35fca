//! The `kube-kms-csi-provider` command: hardens the process, binds the provider's socket and
//! serves the Secrets Store CSI driver on it until SIGTERM or SIGINT, then drains.
//!
//! Never starts serving before the socket has its final mode, and never deletes a socket
//! another process still answers on (see [`grpc_uds::socket`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// kube-kms-csi-provider: a Secrets Store CSI driver provider.
///
/// Serves `/v1alpha1.CSIDriverProvider` on a Unix socket in the directory the driver searches
/// for providers. Mount is not built yet: it answers UNIMPLEMENTED.
#[derive(Debug, Parser)]
#[command(name = "kube-kms-csi-provider", version, about, long_about)]
struct Args {
    /// The provider's socket: `<provider name>.sock` in the driver's provider directory.
    #[arg(long, env = "KUBE_KMS_CSI_SOCKET", default_value = csi_provider::DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// The socket's mode: the driver connects as root, which needs no permission bits.
const SOCKET_MODE: u32 = 0o600;

fn main() -> ExitCode {
    // Before anything else, and before any token or secret is read: not dumpable, no core
    // dumps, memory locked where allowed. Logged once logging is set up.
    let hardening = grpc_uds::hardening::apply();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
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

async fn run(args: Args) -> anyhow::Result<()> {
    // Listen for SIGTERM before the socket exists, so a stop sent once it appears is not lost.
    let terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let (listener, bound) = grpc_uds::socket::bind(&args.socket, SOCKET_MODE)?;
    tracing::info!(
        socket = %bound.path().display(),
        version = env!("CARGO_PKG_VERSION"),
        "serving the Secrets Store CSI driver"
    );
    csi_provider::serve(listener, stopped(terminate)).await?;
    drop(bound);
    tracing::info!("stopped");
    Ok(())
}

async fn stopped(mut terminate: Signal) {
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: draining in-flight calls"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining in-flight calls"),
    }
}
