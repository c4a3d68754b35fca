//! The flags of `kube-kms census` and `kube-kms migrate`, as clap reads them. Both also take
//! kube-kms's own configuration flags (`--config` and the rest), so key_ids are named from the
//! same configuration the plugin serves with. No flag takes a secret: etcd's client key and
//! the kubeconfig are files.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::census::CensusOptions;
use super::etcd::{DEFAULT_CACERT, DEFAULT_CERT, DEFAULT_ENDPOINT, DEFAULT_KEY, EtcdOptions};
use crate::config::ConfigArgs;

/// Where etcd is, how to authenticate, what to read.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated, tried in order. `http://` only on loopback.
    #[arg(
        long,
        value_name = "URL,...",
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINT
    )]
    pub etcd_endpoints: Vec<String>,
    /// The CA certificate that signed etcd's serving certificate (kubeadm's by default).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CACERT)]
    pub etcd_cacert: PathBuf,
    /// A client certificate etcd accepts (kube-apiserver's, by default).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CERT)]
    pub etcd_cert: PathBuf,
    /// The client certificate's private key.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_KEY)]
    pub etcd_key: PathBuf,
    /// kube-apiserver's --etcd-prefix.
    #[arg(long, value_name = "PREFIX", default_value = "/registry")]
    pub prefix: String,
    /// Keys read per etcd request.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub etcd_page_size: u32,
}

impl EtcdArgs {
    /// The connection options.
    pub fn options(&self) -> EtcdOptions {
        EtcdOptions {
            endpoints: self.etcd_endpoints.clone(),
            cacert: self.etcd_cacert.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
        }
    }

    /// What to read.
    pub fn census_options(&self) -> CensusOptions {
        CensusOptions {
            prefix: self.prefix.clone(),
            page_size: self.etcd_page_size,
        }
    }
}

/// How the census report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and sentences.
    Text,
    /// JSON, schema kube-kms/census/v1 (docs/census.md).
    Json,
}

/// The census's own flags, shared with `migrate --verify`.
#[derive(Debug, Clone, Args)]
pub struct CensusFlags {
    /// kube-apiserver's EncryptionConfiguration: also report resources it encrypts that still
    /// hold plaintext, and objects under providers it no longer lists.
    #[arg(long, value_name = "FILE")]
    pub encryption_config: Option<PathBuf>,
    /// The current key_id, as `kube-kms probe` prints it: needed with azure.key_version latest
    /// (the census never asks Key Vault), and taken over the configuration's otherwise.
    #[arg(long, value_name = "KEY_ID")]
    pub current_key_id: Option<String>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// `kube-kms census`.
#[derive(Debug, Clone, Args)]
pub struct CensusArgs {
    /// etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Report options.
    #[command(flatten)]
    pub census: CensusFlags,
    /// kube-kms's configuration, which names the key_ids.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `kube-kms migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Resources to rewrite, comma-separated as an EncryptionConfiguration names them
    /// (secrets, configmaps, deployments.apps, *.apps, *.*). Or --encryption-config.
    #[arg(
        long,
        value_name = "RESOURCE,...",
        value_delimiter = ',',
        required_unless_present = "encryption_config"
    )]
    pub resources: Vec<String>,
    /// kubeconfig file [default: $KUBECONFIG, ~/.kube/config, or the in-cluster account].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: its current context].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Objects listed per request.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    pub page_size: u32,
    /// Objects rewritten at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Requests per second to kube-apiserver, all kinds together (0.1 to 10000).
    #[arg(long, value_name = "N", default_value_t = 20.0, value_parser = parse_qps)]
    pub qps: f64,
    /// List and count what would be rewritten; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where progress is kept so an interrupted run resumes [default:
    /// <state-dir>/migrate-checkpoint.json].
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// After rewriting, run the census and say whether anything is left under old key_ids
    /// (needs the etcd flags).
    #[arg(long)]
    pub verify: bool,
    /// etcd, for --verify.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// The census's options, for --verify; --encryption-config also chooses the resources.
    #[command(flatten)]
    pub census: CensusFlags,
    /// kube-kms's configuration, for --verify and the default checkpoint path.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// A request rate from 0.1 to 10000 per second.
fn parse_qps(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(qps) if (0.1..=10_000.0).contains(&qps) => Ok(qps),
        _ => Err(format!(
            "{value:?} is not a request rate; give 0.1 to 10000 requests per second"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qps_is_a_positive_bounded_rate() {
        assert_eq!(parse_qps("20"), Ok(20.0));
        assert_eq!(parse_qps("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "1e9", "fast"] {
            assert!(parse_qps(bad).is_err(), "{bad}");
        }
    }
}
