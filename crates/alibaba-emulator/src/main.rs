//! `alibaba-emulator`: runs the emulator for a local demo of kube-kms's Alibaba Cloud path.
//! Prints the endpoint, the CA file and the metadata URL, then serves until Ctrl-C. Secrets,
//! identities and faults are managed through the admin API (`/_emulator/`, see README.md) or
//! the flags below.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use alibaba_emulator::{AccessKeySpec, Emulator, Options};
use anyhow::Context;
use clap::Parser;
use emulator_support::cli::{TlsArgs, optional_listen};

/// Alibaba Cloud KMS Secrets Manager + OOS + STS + ECS metadata emulator over HTTPS.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// HTTPS listen address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Plain-HTTP ECS metadata listen address; "off" for none.
    #[arg(long, default_value = "127.0.0.1:8080")]
    metadata_listen: String,
    /// Directory for ca.pem (created if missing); a temporary one by default.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The region written in ARNs.
    #[arg(long, default_value = "cn-hangzhou")]
    region: String,
    /// The default account id.
    #[arg(long, default_value = "1234567890123456")]
    account_id: String,
    /// Another DNS name for the generated certificate (repeatable).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Register an AccessKey with every grant: this id ...
    #[arg(long, requires = "access_key_secret_file")]
    access_key_id: Option<String>,
    /// ... and the secret in this file.
    #[arg(long)]
    access_key_secret_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    emulator_support::cli::init_tracing();
    let args = Args::parse();
    let metadata_bind = optional_listen(&args.metadata_listen)
        .context("--metadata-listen must be ADDRESS:PORT or off")?;
    let options = Options {
        bind: args.listen,
        metadata_bind,
        tls: args.tls.source(),
        extra_names: args.tls_names,
        region: args.region,
        account_id: args.account_id,
        state_dir: args.state_dir,
        ..Options::default()
    };
    let emulator = Emulator::start(options)
        .await
        .context("starting the emulator")?;
    if let (Some(id), Some(path)) = (args.access_key_id, args.access_key_secret_file) {
        let secret = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        emulator.add_access_key(AccessKeySpec::new(&id, secret.trim()))?;
        println!("access key:     {id} (secret from {})", path.display());
    }
    println!("endpoint:       {} (https)", emulator.endpoint());
    println!("ca certificate: {}", emulator.ca_pem_path().display());
    if let Some(metadata) = emulator.metadata_url() {
        println!("metadata:       {metadata} (HTTP proxy for 100.100.100.200)");
    }
    println!("account id:     {}", emulator.account_id());
    println!("admin api:      {}/_emulator/info", emulator.url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    emulator.shutdown().await;
    Ok(())
}
