//! What the emulator binaries share on the command line: logging to stderr (`RUST_LOG`, `info`
//! by default), a listen address that may be switched off, and the server certificate flags.
//!
//! Only for the binaries' `main`: the libraries never install a subscriber or read flags.

use std::net::{AddrParseError, SocketAddr};
use std::path::PathBuf;

use crate::TlsSource;

/// Logs to stderr, filtered by `RUST_LOG` (`info` when unset or invalid).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// A listen address, or `None` for "off" / "none".
pub fn optional_listen(text: &str) -> Result<Option<SocketAddr>, AddrParseError> {
    match text {
        "off" | "none" => Ok(None),
        text => text.parse().map(Some),
    }
}

/// The server certificate flags; all absent: a generated CA and leaf.
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// Server certificate chain (PEM) instead of a generated one; needs --tls-key and --tls-ca.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// CA certificate clients should trust (PEM).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// Where the server certificate comes from.
    pub fn source(self) -> TlsSource {
        match (self.tls_cert, self.tls_key, self.tls_ca) {
            (Some(cert_chain), Some(key), Some(ca)) => TlsSource::Files {
                cert_chain,
                key,
                ca,
            },
            _ => TlsSource::Generate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        tls: TlsArgs,
    }

    #[test]
    fn listen_addresses_may_be_off() {
        assert_eq!(optional_listen("off"), Ok(None));
        assert_eq!(optional_listen("none"), Ok(None));
        assert_eq!(
            optional_listen("127.0.0.1:80"),
            Ok(Some(SocketAddr::from(([127, 0, 0, 1], 80))))
        );
        assert!(optional_listen("localhost").is_err());
    }

    #[test]
    fn tls_files_need_all_three_flags() {
        let parse = |flags: &[&str]| Args::try_parse_from([&["emulator"], flags].concat());
        assert!(matches!(
            parse(&[]).expect("no flags").tls.source(),
            TlsSource::Generate
        ));
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        let files = parse(&["--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]);
        assert!(matches!(
            files.expect("all three").tls.source(),
            TlsSource::Files { cert_chain, .. } if cert_chain == std::path::Path::new("c")
        ));
    }
}
