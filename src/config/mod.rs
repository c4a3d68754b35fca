//! One validated configuration from three sources, with one precedence:
//! command-line flag > environment variable > config file (YAML) > built-in default.
//!
//! Raw values from every source are strings until [`Config::load`] checks them all in one
//! place, so every bad value is refused at start with the setting's name (as YAML key, flag and
//! environment variable) and what is allowed. Each setting is named once, in `settings.rs`;
//! `args.rs` (flags) and `file.rs` (the YAML file) hold the raw values, and one module per
//! concern checks them: `socket.rs`, `general.rs`, `local.rs`, `pkcs11.rs`, `azure.rs`;
//! `warnings.rs` says which allowed settings weaken security. No setting takes a secret:
//! secrets come from files or variables named here, never from the command line, and no error
//! or warning echoes one.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::envelope::kek::RotationPolicy;
use crate::provider::azure::AzureConfig;
use crate::provider::guard::GuardPolicy;
use crate::provider::pkcs11::Pkcs11Config;

mod args;
mod azure;
mod duration;
mod file;
mod general;
mod local;
mod pkcs11;
mod settings;
mod socket;
mod warnings;

pub use args::ConfigArgs;
pub use duration::{format_duration, parse_duration};
use file::FileConfig;
pub use settings::REFUSE_ROOT_NAMES;
use settings::{PROVIDER, Sources};

/// Which key provider wraps local KEKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    /// The local key ring: for development and tests only.
    Local {
        /// The key ring directory.
        key_dir: PathBuf,
    },
    /// A key on a PKCS#11 token.
    Pkcs11(Pkcs11Config),
    /// A key in Azure Key Vault or Managed HSM.
    Azure(Box<AzureConfig>),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration. Built once at start-up; never changed afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The socket kube-apiserver connects to.
    pub socket: PathBuf,
    /// The socket's permission bits.
    pub socket_mode: u32,
    /// The group id given the socket (and a directory kube-kms creates for it), if any.
    pub socket_group: Option<u32>,
    /// Whether to refuse to start as root.
    pub refuse_root: bool,
    /// kube-kms's state directory.
    pub state_dir: PathBuf,
    /// The key provider.
    pub provider: ProviderConfig,
    /// The cluster seed's record of Azure's Go KMS plugin, when its cluster-seed records are to
    /// be read (`azure.legacy_cluster_seed_file`; provider azure only).
    pub legacy_cluster_seed: Option<crate::provider::LegacyCiphertext>,
    /// How often the provider is asked for its current key.
    pub refresh_interval: Duration,
    /// When local KEKs are replaced.
    pub rotation: RotationPolicy,
    /// How many unwrapped KEKs are kept.
    pub cache_size: NonZeroUsize,
    /// Deadlines, unwrap concurrency and the circuit breaker around the key service.
    pub guard: GuardPolicy,
    /// Log format.
    pub log_format: LogFormat,
    /// Log level (a tracing level name).
    pub log_level: String,
    /// Where /healthz, /readyz and /metrics listen; `None` when turned off.
    pub health_address: Option<std::net::SocketAddr>,
}

/// A configuration value that cannot be used, or a config file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong (the parser names the key and line).
        reason: String,
    },
    /// A setting has a value that is not allowed.
    Invalid {
        /// The setting, as YAML key, flag and environment variable.
        setting: String,
        /// The value given (never a secret: no setting holds one).
        value: String,
        /// What is allowed.
        expected: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { path, reason } => {
                write!(f, "config file {}: {reason}", path.display())
            }
            Self::Invalid {
                setting,
                value,
                expected,
            } => {
                write!(
                    f,
                    "{setting}: {value:?} is not allowed; expected {expected}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where the operations endpoints listen unless configured: loopback only.
pub const DEFAULT_HEALTH_ADDRESS: &str = "127.0.0.1:8790";

/// The environment a default depends on, read once so tests can supply their own.
#[derive(Debug, Clone, Default)]
pub struct DefaultsEnv {
    /// $XDG_RUNTIME_DIR.
    pub runtime_dir: Option<PathBuf>,
    /// $XDG_STATE_HOME.
    pub state_home: Option<PathBuf>,
    /// $HOME.
    pub home: Option<PathBuf>,
    /// This process's user id.
    pub uid: Option<u32>,
}

impl DefaultsEnv {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        let path = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            runtime_dir: path("XDG_RUNTIME_DIR"),
            state_home: path("XDG_STATE_HOME"),
            home: path("HOME"),
            uid: grpc_uds::socket::current_uid(),
        }
    }

    fn default_state_dir(&self) -> PathBuf {
        match (&self.state_home, &self.home) {
            (Some(state), _) => state.join("kube-kms"),
            (None, Some(home)) => home.join(".local/state/kube-kms"),
            (None, None) => PathBuf::from("kube-kms-state"),
        }
    }

    fn default_socket(&self) -> PathBuf {
        match &self.runtime_dir {
            Some(runtime) => runtime.join("kube-kms/kms.sock"),
            None => {
                let uid = self
                    .uid
                    .map_or_else(|| "unknown".to_owned(), |uid| uid.to_string());
                PathBuf::from(format!("/tmp/kube-kms-{uid}/kms.sock"))
            }
        }
    }
}

impl Config {
    /// Reads the config file named by `args` (if any) and resolves every setting.
    pub fn load(args: &ConfigArgs, env: &DefaultsEnv) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => file::read_file(path)?,
            None => FileConfig::default(),
        };
        Self::resolve(args, &file, env)
    }

    /// Parses config file text (used by `load` and by the tests of deploy/ examples).
    pub fn from_yaml(
        yaml: &str,
        args: &ConfigArgs,
        env: &DefaultsEnv,
    ) -> Result<Self, ConfigError> {
        let file = file::parse_file(yaml, Path::new("<inline>"))?;
        Self::resolve(args, &file, env)
    }

    /// Every setting, checked in a fixed order so the first bad one is the one reported.
    fn resolve(
        args: &ConfigArgs,
        file: &FileConfig,
        env: &DefaultsEnv,
    ) -> Result<Self, ConfigError> {
        let sources = Sources { args, file };
        let state_dir = general::state_dir(sources, env)?;
        let socket = socket::resolve(sources, env)?;
        let refuse_root = general::refuse_root(sources)?;
        let provider = match PROVIDER.raw(sources) {
            None | Some("local") => ProviderConfig::Local {
                key_dir: local::key_dir(sources, &state_dir)?,
            },
            Some("pkcs11") => ProviderConfig::Pkcs11(pkcs11::resolve(sources)?),
            Some("azure") => ProviderConfig::Azure(Box::new(azure::resolve(sources)?)),
            Some(other) => {
                return Err(PROVIDER.invalid(other, "\"local\", \"pkcs11\" or \"azure\""));
            }
        };
        // Like every azure.* setting, read only when the provider is azure.
        let legacy_cluster_seed = match &provider {
            ProviderConfig::Azure(_) => azure::legacy_cluster_seed(sources)?,
            _ => None,
        };
        let refresh_interval = general::refresh_interval(sources)?;
        let rotation = general::rotation(sources)?;
        let cache_size = general::cache_size(sources)?;
        let guard = general::guard(sources)?;
        let log_format = general::log_format(sources)?;
        let log_level = general::log_level(sources)?;
        let health_address = general::health_address(sources)?;
        Ok(Self {
            health_address,
            socket: socket.path,
            socket_mode: socket.mode,
            socket_group: socket.group,
            refuse_root,
            state_dir,
            provider,
            legacy_cluster_seed,
            refresh_interval,
            rotation,
            cache_size: NonZeroUsize::new(usize::try_from(cache_size).unwrap_or(1000))
                .unwrap_or(NonZeroUsize::MIN),
            guard,
            log_format,
            log_level,
        })
    }
}

/// Helpers the tests of every config module share.
#[cfg(test)]
pub(super) mod test_support {
    use super::{Config, ConfigArgs, DefaultsEnv};

    /// A home directory and uid, no XDG directories.
    pub(crate) fn env() -> DefaultsEnv {
        DefaultsEnv {
            runtime_dir: None,
            state_home: None,
            home: Some("/home/op".into()),
            uid: Some(1000),
        }
    }

    /// The error `yaml` with `args` is refused with.
    pub(crate) fn error_of(yaml: &str, args: &ConfigArgs) -> String {
        Config::from_yaml(yaml, args, &env())
            .unwrap_err()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::env;
    use super::*;

    #[test]
    fn defaults_need_no_root_and_no_arguments() {
        let config = Config::load(&ConfigArgs::default(), &env()).unwrap();
        assert_eq!(config.socket, PathBuf::from("/tmp/kube-kms-1000/kms.sock"));
        assert_eq!(
            config.state_dir,
            PathBuf::from("/home/op/.local/state/kube-kms")
        );
        assert_eq!(
            config.provider,
            ProviderConfig::Local {
                key_dir: "/home/op/.local/state/kube-kms/local-keys".into()
            }
        );
        assert_eq!(config.socket_mode, 0o600);
        assert_eq!(config.refresh_interval, Duration::from_secs(60));
        assert_eq!(config.rotation, RotationPolicy::DEFAULT);
        assert_eq!(config.cache_size.get(), 1000);
        assert_eq!(
            config.health_address,
            Some("127.0.0.1:8790".parse().unwrap())
        );

        let runtime = DefaultsEnv {
            runtime_dir: Some("/run/user/1000".into()),
            ..env()
        };
        let config = Config::load(&ConfigArgs::default(), &runtime).unwrap();
        assert_eq!(
            config.socket,
            PathBuf::from("/run/user/1000/kube-kms/kms.sock")
        );
    }

    #[test]
    fn flags_and_environment_override_the_file() {
        let yaml = "socket: /var/run/kms/file.sock\nrefresh_interval: 5m\ncache_size: 10\n\
                    local:\n  key_dir: /keys\n";
        let args = ConfigArgs {
            socket: Some("unix:///run/flag.sock".into()),
            ..Default::default()
        };
        let config = Config::from_yaml(yaml, &args, &env()).unwrap();
        assert_eq!(config.socket, PathBuf::from("/run/flag.sock"));
        assert_eq!(config.refresh_interval, Duration::from_secs(300));
        assert_eq!(config.cache_size.get(), 10);
        assert_eq!(
            config.provider,
            ProviderConfig::Local {
                key_dir: "/keys".into()
            }
        );

        let off = ConfigArgs {
            health_address: Some("off".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::from_yaml(yaml, &off, &env())
                .unwrap()
                .health_address,
            None
        );
    }

    #[test]
    fn a_missing_config_file_is_named() {
        let args = ConfigArgs {
            config: Some("/nonexistent/kube-kms.yaml".into()),
            ..Default::default()
        };
        let error = Config::load(&args, &env()).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/kube-kms.yaml"), "{error}");
    }
}
