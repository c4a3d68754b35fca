//! The `kube-kms-csi-provider` command: hardens the process, builds the backend `--provider`
//! names (Azure Key Vault, or Alibaba Cloud KMS and OOS) from its flags, binds the provider's
//! socket and serves the Secrets Store CSI driver on it, with /healthz, /readyz and /metrics on
//! the health listener, until SIGTERM or SIGINT; then drains.
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

/// kube-kms-csi-provider: a Secrets Store CSI driver provider for Azure Key Vault and Alibaba
/// Cloud KMS Secrets Manager / OOS secret parameters.
///
/// Serves `/v1alpha1.CSIDriverProvider` on a Unix socket in the directory the driver searches
/// for providers, as the provider `azure` or `alibabacloud`: SecretProviderClasses written for
/// Azure's or Alibaba's provider mount the same files. See docs/csi-provider.md.
#[derive(Debug, Parser)]
#[command(name = "kube-kms-csi-provider", version, about, long_about)]
struct Args {
    /// Which provider to be: `azure` (Azure Key Vault) or `alibabacloud` (Alibaba Cloud KMS
    /// Secrets Manager and OOS secret parameters). One process serves one.
    #[arg(long, env = "KUBE_KMS_CSI_PROVIDER", default_value = "azure", value_parser = ["azure", "alibabacloud"])]
    provider: String,

    /// The provider's socket, in the directory the driver searches for providers [default:
    /// /var/run/secrets-store-csi-providers/<provider>.sock].
    #[arg(long, env = "KUBE_KMS_CSI_SOCKET")]
    socket: Option<PathBuf>,

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

    /// How long a read of a pinned object version is reused (`0s` turns reuse off, as for
    /// --cache-latest-ttl).
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

    /// The region of classes that set no `region` (their default endpoints are
    /// `kms-vpc.<region>.aliyuncs.com` and `oos-vpc.<region>.aliyuncs.com`).
    #[arg(long, default_value = "cn-hangzhou", help_heading = ALIBABA)]
    region: String,

    /// Concurrent reads per KMS endpoint; further reads wait within their
    /// Mount's deadline.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=256), help_heading = ALIBABA)]
    max_concurrent_kms_secret_pulls: u32,

    /// Concurrent reads per OOS endpoint.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=256), help_heading = ALIBABA)]
    max_concurrent_oos_secret_pulls: u32,

    /// The STS endpoint RRSA and RAM roles are assumed at.
    #[arg(long, default_value = "sts.aliyuncs.com", help_heading = ALIBABA)]
    sts_endpoint: String,

    /// A DNS suffix a class's `kmsEndpoint` may be under besides aliyuncs.com
    /// (e.g. a private KMS instance's domain); repeatable.
    #[arg(long, value_name = "SUFFIX", help_heading = ALIBABA)]
    kms_endpoint_suffix: Vec<String>,

    /// Lend the ECS instance's RAM role to pods whose class names no other
    /// identity (as Alibaba's provider does; any pod on the node may then use it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, help_heading = ALIBABA)]
    ecs_ram_role: bool,

    /// The provider's RAM role (RRSA with the OIDC provider, or assumed with
    /// ACCESS_KEY_ID and SECRET_ACCESS_KEY).
    #[arg(long, env = "ALICLOUD_ROLE_ARN", help_heading = ALIBABA)]
    role_arn: Option<String>,

    /// The cluster's RAM OIDC provider, for RRSA (the pod's and the provider's).
    #[arg(long, env = "ALICLOUD_OIDC_PROVIDER_ARN", help_heading = ALIBABA)]
    oidc_provider_arn: Option<String>,

    /// With --cluster-id, the OIDC provider ARN
    /// `acs:ram::<account>:oidc-provider/ack-rrsa-<cluster>` when none is given.
    #[arg(long, env = "ALICLOUD_ACCOUNT_ID", help_heading = ALIBABA)]
    account_id: Option<String>,

    /// See --account-id.
    #[arg(long, env = "ALICLOUD_CLUSTER_ID", help_heading = ALIBABA)]
    cluster_id: Option<String>,

    /// The provider's projected service-account token, for its own RRSA.
    #[arg(long, env = "ALICLOUD_OIDC_TOKEN_FILE", default_value = csi_provider::alibaba::identity::DEFAULT_OIDC_TOKEN_FILE, help_heading = ALIBABA)]
    oidc_token_file: PathBuf,

    /// The session name of assumed roles.
    #[arg(long, env = "ALICLOUD_ROLE_SESSION_NAME", default_value = csi_provider::alibaba::identity::DEFAULT_SESSION_NAME, help_heading = ALIBABA)]
    role_session_name: String,

    /// How long assumed roles' credentials last, in seconds (900 or more).
    #[arg(long, env = "ALICLOUD_ROLE_SESSION_EXPIRATION", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(900..=43_200), help_heading = ALIBABA)]
    role_session_expiration: u64,

    /// The provider's AccessKey id (its secret is read from the environment
    /// variable SECRET_ACCESS_KEY only).
    #[arg(long, env = "ACCESS_KEY_ID", help_heading = ALIBABA)]
    access_key_id: Option<String>,

    /// For tests and emulators only: the base URL of the ECS instance metadata service instead
    /// of http://100.100.100.200.
    #[arg(long, value_name = "URL", help_heading = ALIBABA)]
    insecure_ecs_metadata_endpoint: Option<String>,

    /// The Kubernetes API, where a pod's ServiceAccount annotation ack.alibabacloud.com/role-arn
    /// is read (needs get on serviceaccounts); `off` for none [default: in a pod with its
    /// service-account token mounted, https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
    #[arg(long, value_name = "URL", help_heading = ALIBABA)]
    kube_api_url: Option<String>,

    /// The provider's own service-account token, for the Kubernetes API.
    #[arg(long, default_value = csi_provider::alibaba::kube::IN_CLUSTER_TOKEN_FILE, help_heading = ALIBABA)]
    kube_token_file: PathBuf,

    /// The cluster's CA, for the Kubernetes API.
    #[arg(long, default_value = csi_provider::alibaba::kube::IN_CLUSTER_CA_FILE, help_heading = ALIBABA)]
    kube_ca_file: PathBuf,
}

/// The help section of the Alibaba Cloud flags.
const ALIBABA: &str = "Alibaba Cloud (--provider alibabacloud)";

/// The environment variable holding the provider's AccessKey secret (Alibaba's provider's
/// name for it); never a flag, so that it is not in the process's arguments.
const SECRET_ACCESS_KEY: &str = "SECRET_ACCESS_KEY";

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
    let provider_kind = csi_provider::wiring::Provider::parse(&args.provider)?;
    let mut alibaba = alibaba_settings(&args);
    alibaba.access_key_secret = std::env::var(SECRET_ACCESS_KEY)
        .ok()
        .filter(|secret| !secret.trim().is_empty())
        .map(|secret| secrecy::SecretString::from(secret.trim().to_owned()));
    let backend = csi_provider::wiring::backend(
        provider_kind,
        &settings(&args),
        &alibaba,
        Arc::clone(&metrics),
    )
    .with_context(|| format!("cannot set up the {} backend", provider_kind.name()))?;
    if provider_kind == csi_provider::wiring::Provider::Alibabacloud {
        match &alibaba.kube_api_url {
            Some(url) => {
                tracing::info!(api = %url, "pods' RAM roles are read from their ServiceAccounts' ack.alibabacloud.com/role-arn")
            }
            None => tracing::info!(
                "no Kubernetes API: a pod's RAM role comes from its class's podServiceAccountRoleArn only"
            ),
        }
    }
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| csi_provider::default_socket(provider_kind.name()));
    let provider =
        csi_provider::service::CsiProvider::new(backend, Arc::clone(&metrics), args.mount_timeout);
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
    let (listener, bound) = grpc_uds::socket::bind(&socket, SOCKET_MODE)?;
    tracing::info!(
        provider = provider_kind.name(),
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

/// The Alibaba backend's settings from the flags (and the environment variables they read); the
/// AccessKey secret is added by `run`.
fn alibaba_settings(args: &Args) -> csi_provider::wiring::AlibabaSettings {
    csi_provider::wiring::AlibabaSettings {
        region: args.region.clone(),
        kms_concurrency: args.max_concurrent_kms_secret_pulls as usize,
        oos_concurrency: args.max_concurrent_oos_secret_pulls as usize,
        sts_endpoint: args.sts_endpoint.clone(),
        kms_endpoint_suffixes: args.kms_endpoint_suffix.clone(),
        role_arn: args.role_arn.clone(),
        oidc_provider_arn: args.oidc_provider_arn.clone(),
        account_id: args.account_id.clone(),
        cluster_id: args.cluster_id.clone(),
        oidc_token_file: args.oidc_token_file.clone(),
        role_session_name: args.role_session_name.clone(),
        role_session_expiration: Duration::from_secs(args.role_session_expiration),
        access_key_id: args.access_key_id.clone(),
        access_key_secret: None,
        ecs_ram_role: args.ecs_ram_role,
        insecure_ecs_metadata_endpoint: args.insecure_ecs_metadata_endpoint.clone(),
        kube_api_url: match args.kube_api_url.as_deref() {
            Some("off") => None,
            Some(url) => Some(url.to_owned()),
            None => in_cluster_api(&args.kube_token_file),
        },
        kube_token_file: args.kube_token_file.clone(),
        kube_ca_file: args
            .kube_ca_file
            .exists()
            .then(|| args.kube_ca_file.clone()),
    }
}

/// The Kubernetes API as a pod finds it (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`),
/// when the pod has its service-account token mounted at `token_file`.
fn in_cluster_api(token_file: &std::path::Path) -> Option<String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").ok()?;
    if !token_file.exists() {
        return None;
    }
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(format!("https://{host}:{port}"))
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

    #[test]
    fn the_alibaba_flags_defaults_are_the_alibaba_backends_defaults() {
        let args = Args::try_parse_from(["kube-kms-csi-provider"]).unwrap();
        assert_eq!(args.provider, "azure");
        assert_eq!(args.socket, None);
        let ours = alibaba_settings(&args);
        let defaults = csi_provider::wiring::AlibabaSettings::default();
        assert_eq!(format!("{ours:?}"), format!("{defaults:?}"));
        let args = Args::try_parse_from([
            "kube-kms-csi-provider",
            "--provider",
            "alibabacloud",
            "--region",
            "cn-shanghai",
            "--max-concurrent-kms-secret-pulls",
            "3",
            "--ecs-ram-role=false",
        ])
        .unwrap();
        let ours = alibaba_settings(&args);
        assert_eq!(
            (
                ours.region.as_str(),
                ours.kms_concurrency,
                ours.ecs_ram_role
            ),
            ("cn-shanghai", 3, false)
        );
        assert!(Args::try_parse_from(["kube-kms-csi-provider", "--provider", "aws"]).is_err());
        assert!(
            Args::try_parse_from(["kube-kms-csi-provider", "--role-session-expiration", "60"])
                .is_err()
        );
    }
}
