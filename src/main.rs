//! The `kube-kms` command: `serve` runs the plugin, `probe` checks a running one, `keys`
//! manages keys (rotates and lists the local key ring; creates and lists PKCS#11 keys),
//! `census` reports which key encrypts what in etcd and `migrate` re-encrypts storage through
//! kube-apiserver.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

use kube_kms::config::{Config, ConfigArgs, DefaultsEnv, LogFormat, ProviderConfig};
use kube_kms::daemon::{Daemon, Reload};
use kube_kms::lifecycle::args::{CensusArgs, CensusFlags, EtcdArgs, MigrateArgs, OutputFormat};
use kube_kms::lifecycle::encryption_config::EncryptionConfig;
use kube_kms::lifecycle::known_keys::KnownKeys;
use kube_kms::lifecycle::report::Report;
use kube_kms::lifecycle::{census, etcd, migrate};
use kube_kms::provider::local::{self, LocalKeyRing};
use kube_kms::provider::pkcs11::{self, NewKeyType, Pkcs11Config};

/// kube-kms: a KMS v2 plugin for kube-apiserver.
///
/// Encrypts kube-apiserver's data keys with local AES-256-GCM keys, wrapped by a root key that
/// never leaves the key service. The built-in `local` provider keeps its root keys in files on
/// this host: it is for development and tests only.
#[derive(Debug, Parser)]
#[command(name = "kube-kms", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the KMS v2 and v1beta1 APIs on a Unix socket.
    ///
    /// With no arguments it uses the local key provider (development only) and paths that need
    /// no root, and prints the EncryptionConfiguration that points kube-apiserver at it.
    /// Precedence: flag > environment variable > config file > default.
    Serve(ConfigArgs),
    /// Check a running plugin: Status, then an Encrypt/Decrypt round trip.
    Probe {
        /// The plugin's socket [default: the socket `serve` would use].
        #[arg(long, value_name = "PATH")]
        socket: Option<String>,
        /// Time allowed for each call, e.g. 3s.
        #[arg(long, default_value = "3s", value_parser = parse_duration_arg)]
        timeout: Duration,
    },
    /// Manage the local provider's key ring (development and tests only).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Report which key encrypts what, read straight from etcd (read-only).
    ///
    /// Counts every object under kube-apiserver's etcd prefix per resource, provider and
    /// key_id, names each key_id from kube-kms's configuration (current, decrypt-only, or
    /// unknown to it), and says for every decrypt-only key whether any object still uses it.
    /// Exit codes: 0 nothing pending, 3 objects to re-encrypt, 4 objects this configuration
    /// cannot read, 5 current key version unknown (docs/census.md).
    Census(Box<CensusArgs>),
    /// Re-encrypt stored objects by rewriting them through kube-apiserver, resumably.
    ///
    /// Lists each resource page by page and writes every object back unchanged, which makes
    /// kube-apiserver store it with its first provider's current key. Conflicts are retried,
    /// deleted objects skipped; progress is kept in a checkpoint file so an interrupted run
    /// resumes. Exit 1 when anything failed (docs/migrate.md).
    Migrate(Box<MigrateArgs>),
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Add a new key version; a running plugin moves to it at its next refresh or on SIGHUP.
    Rotate(ConfigArgs),
    /// List key versions and their key_ids, oldest first.
    List(ConfigArgs),
    /// Create the key named by pkcs11.key_label on the PKCS#11 token (pkcs11 provider only).
    Create {
        /// The kind of key.
        #[arg(long, value_enum, default_value = "aes256")]
        key_type: KeyTypeArg,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// The kinds of key `keys create` makes on a PKCS#11 token.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KeyTypeArg {
    /// AES-256 (wraps with CKM_AES_KEY_WRAP_PAD, or AES-GCM).
    Aes256,
    /// RSA-2048 (wraps with CKM_RSA_PKCS_OAEP).
    Rsa2048,
    /// RSA-3072.
    Rsa3072,
    /// RSA-4096.
    Rsa4096,
}

impl KeysAction {
    fn config_args(&self) -> &ConfigArgs {
        match self {
            Self::Rotate(args) | Self::List(args) | Self::Create { config: args, .. } => args,
        }
    }
}

fn parse_duration_arg(value: &str) -> Result<Duration, String> {
    kube_kms::config::parse_duration(value)
        .ok_or_else(|| format!("{value:?} is not a duration; use e.g. 500ms, 3s, 1m"))
}

fn main() -> ExitCode {
    // Before anything else, and before any key, PIN or token is read: not dumpable, no core
    // dumps, memory locked where allowed. Logged once logging is set up.
    let hardening = grpc_uds::hardening::apply();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kube-kms: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, hardening)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kube-kms: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, hardening: grpc_uds::hardening::Report) -> anyhow::Result<ExitCode> {
    let env = DefaultsEnv::from_process();
    match cli.command {
        Command::Census(args) => {
            let config = Config::load(&args.config, &env)?;
            let report = run_census(&config, &args.etcd, &args.census).await?;
            print_report(&report, args.census.output);
            Ok(ExitCode::from(report.outcome.exit_code))
        }
        Command::Migrate(args) => run_migrate(*args, &env).await,
        Command::Serve(args) => {
            let config = Config::load(&args, &env)?;
            init_logging(&config);
            hardening.log();
            for warning in config.warnings() {
                tracing::warn!("insecure setting: {warning}");
            }
            grpc_uds::hardening::check_root(
                grpc_uds::hardening::effective_uid(),
                config.refuse_root,
                kube_kms::config::REFUSE_ROOT_NAMES,
            )?;
            serve(config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe { socket, timeout } => {
            let args = ConfigArgs {
                socket,
                ..ConfigArgs::default()
            };
            let config = Config::load(&args, &env)?;
            let report = kube_kms::probe::probe(&config.socket, timeout).await;
            println!("{report}");
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Keys { action } => {
            let config = Config::load(action.config_args(), &env)?;
            let key_dir = match &config.provider {
                ProviderConfig::Local { key_dir } => key_dir,
                ProviderConfig::Pkcs11(pkcs11) => return pkcs11_keys(&action, pkcs11).await,
                ProviderConfig::Azure(azure) => bail!(
                    "an Azure key is created and rotated in Key Vault itself, e.g. `az keyvault \
                     key rotate --id {}`; with azure.key_version latest a running plugin moves \
                     to the new version at its next refresh (or at once on SIGHUP)",
                    azure.key.vault_url() + "keys/" + azure.key.name()
                ),
            };
            match action {
                KeysAction::Create { .. } => {
                    bail!(
                        "`keys create` is for the pkcs11 provider; the local key ring uses \
                         `keys rotate`"
                    )
                }
                KeysAction::Rotate(_) => {
                    let entry = LocalKeyRing::rotate(key_dir)?;
                    println!("created version {} key_id {}", entry.version, entry.key_id);
                    println!(
                        "a running plugin uses it after its next refresh, or at once on SIGHUP"
                    );
                }
                KeysAction::List(_) => {
                    let entries = local::list(key_dir)
                        .with_context(|| format!("listing key ring {}", key_dir.display()))?;
                    if entries.is_empty() {
                        bail!("key ring {} holds no keys", key_dir.display());
                    }
                    println!("{:<8} {:<64} current", "version", "key_id");
                    let last = entries.last().map(|entry| entry.version);
                    for entry in &entries {
                        let current = if Some(entry.version) == last { "*" } else { "" };
                        println!("{:<8} {:<64} {current}", entry.version, entry.key_id);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads etcd and builds the census report.
async fn run_census(
    config: &Config,
    etcd_args: &EtcdArgs,
    flags: &CensusFlags,
) -> anyhow::Result<Report> {
    let known = KnownKeys::from_config(config, flags.current_key_id.as_deref());
    let encryption = flags
        .encryption_config
        .as_deref()
        .map(EncryptionConfig::load)
        .transpose()?;
    let mut etcd = etcd::Etcd::connect(&etcd_args.options()).await?;
    let census = census::run(
        &mut etcd,
        &etcd_args.census_options(),
        &known,
        encryption.as_ref(),
    )
    .await?;
    let path = flags
        .encryption_config
        .as_ref()
        .map(|path| path.display().to_string());
    Ok(Report::new(&census, &known, path.as_deref()))
}

fn print_report(report: &Report, output: OutputFormat) {
    // stdout may be a closed pipe (`| head`): the exit code still says what the census found.
    let _ = match output {
        OutputFormat::Text => write!(std::io::stdout(), "{}", report.to_text()),
        OutputFormat::Json => writeln!(std::io::stdout(), "{}", report.to_json()),
    };
}

/// `kube-kms migrate`: rewrite, summarise, and with --verify run the census.
async fn run_migrate(args: MigrateArgs, env: &DefaultsEnv) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config, env)?;
    let mut encryption = None;
    let selectors = if args.resources.is_empty() {
        let path = args
            .census
            .encryption_config
            .as_deref()
            .context("give --resources or --encryption-config")?;
        let file = EncryptionConfig::load(path)?;
        let patterns = file.encrypted_patterns();
        encryption = Some(file);
        if patterns.is_empty() {
            bail!(
                "{} encrypts no resource (every rule's first provider is identity); name them                  with --resources",
                path.display()
            );
        }
        patterns
    } else {
        args.resources.clone()
    };
    if args.verify && args.dry_run {
        bail!("--verify checks a finished migration; it cannot follow --dry-run");
    }
    let (client, server) =
        migrate::connect(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let mut targets = migrate::resolve(&client, &selectors).await?;
    if let Some(file) = &encryption {
        // kube-apiserver applies the first rule that covers a resource: one an earlier
        // identity rule exempts from a later wildcard (the `events` of Kubernetes' own example)
        // is stored in plaintext, and rewriting it would change nothing.
        targets.retain(|target| file.encrypts(&target.api.plural, &target.api.group));
    }
    let options = migrate::MigrateOptions {
        page_size: args.page_size,
        concurrency: usize::try_from(args.concurrency).unwrap_or(1),
        qps: args.qps,
        dry_run: args.dry_run,
        checkpoint: args
            .checkpoint
            .clone()
            .unwrap_or_else(|| config.state_dir.join("migrate-checkpoint.json")),
    };
    eprintln!(
        "kube-kms migrate: {} against {server}{}",
        targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if args.dry_run { " (dry run)" } else { "" }
    );
    // The first SIGINT or SIGTERM stops after the objects in flight (the checkpoint is saved);
    // a second one, or one after the rewriting (during --verify), stops at once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _watcher = {
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            loop {
                shutdown_signal().await;
                if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    eprintln!("kube-kms migrate: stopped");
                    std::process::exit(130);
                }
                eprintln!(
                    "kube-kms migrate: stopping after the objects in flight (again to stop at once)"
                );
            }
        })
    };
    let summary = migrate::migrate(&client, &server, &targets, &options, &stop).await?;
    // From here on a signal ends the process at once.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = write!(std::io::stdout(), "{}", summary.to_text());
    if summary.interrupted {
        return Ok(ExitCode::from(130));
    }
    if !summary.succeeded() {
        return Ok(ExitCode::FAILURE);
    }
    if args.verify {
        let report = run_census(&config, &args.etcd, &args.census).await?;
        println!();
        print_report(&report, args.census.output);
        return Ok(ExitCode::from(report.outcome.exit_code));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kube-kms keys` with the pkcs11 provider.
async fn pkcs11_keys(action: &KeysAction, config: &Pkcs11Config) -> anyhow::Result<ExitCode> {
    match action {
        KeysAction::Create { key_type, .. } => {
            let kind = match key_type {
                KeyTypeArg::Aes256 => NewKeyType::Aes256,
                KeyTypeArg::Rsa2048 => NewKeyType::Rsa(2048),
                KeyTypeArg::Rsa3072 => NewKeyType::Rsa(3072),
                KeyTypeArg::Rsa4096 => NewKeyType::Rsa(4096),
            };
            let key = pkcs11::create_key(config, kind).await?;
            println!(
                "created {:?} on {}: {}\nkey_id {}",
                key.label,
                config.token,
                key.detail,
                key.key_id.as_deref().unwrap_or("-")
            );
        }
        KeysAction::List(_) => {
            println!("{:<24} {:<12} {:<64} key", "label", "role", "key_id");
            for key in pkcs11::list_keys(config).await? {
                let role = if key.current {
                    "current"
                } else {
                    "decrypt-only"
                };
                let key_id = key.key_id.as_deref().unwrap_or("-");
                println!("{:<24} {role:<12} {key_id:<64} {}", key.label, key.detail);
            }
        }
        KeysAction::Rotate(_) => bail!(
            "a PKCS#11 key is rotated by configuration: set pkcs11.key_label to a new label, \
             run `kube-kms keys create`, move the old label to \
             pkcs11.decrypt_only_key_labels, and restart the plugin (docs/pkcs11.md)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the plugin until SIGTERM or SIGINT, printing the EncryptionConfiguration once the
/// socket is up.
async fn serve(config: Config, args: ConfigArgs) -> anyhow::Result<()> {
    let Some(daemon) =
        Daemon::start(config, Reload::FromArgs(Box::new(args)), shutdown_signal()).await?
    else {
        return Ok(());
    };
    // stdout may be a pipe nobody reads any more; the snippet is a courtesy, not worth a crash.
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        encryption_configuration(daemon.socket())
    );
    daemon.wait().await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: draining in-flight calls"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining in-flight calls"),
    }
}

fn encryption_configuration(socket: &std::path::Path) -> String {
    format!(
        "# EncryptionConfiguration for kube-apiserver (--encryption-provider-config):\n\
         apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n\
         \x20 - resources: [secrets]\n\
         \x20   providers:\n\
         \x20     - kms:\n\
         \x20         apiVersion: v2\n\
         \x20         name: kube-kms\n\
         \x20         endpoint: unix://{}\n\
         \x20         timeout: 3s\n\
         \x20     - identity: {{}}",
        socket.display()
    )
}

fn init_logging(config: &Config) {
    // kube-kms's own events at the configured level; libraries (tonic, h2, hyper) at most at
    // info, so that trace logging never dumps HTTP/2 frames.
    let libraries = if config.log_level == "debug" || config.log_level == "trace" {
        "info"
    } else {
        config.log_level.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{libraries},kube_kms={}",
        config.log_level
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
