//! `keyvault-emulator`: runs the emulator for a local demo of kube-kms's Azure path. Prints the
//! vault URL, the CA path and the Entra / IMDS endpoints, then serves until Ctrl-C. Keys,
//! identities and faults are managed through the admin API (`/_emulator/`, see README.md) or
//! the flags below.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use emulator_support::cli::{TlsArgs, optional_listen};
use keyvault_emulator::{Emulator, IdentitySpec, KeySpec, KeyType, Options, VaultKind};

/// Azure Key Vault / Managed HSM + Entra ID + IMDS emulator over HTTPS.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Emulate a Managed HSM instead of a Key Vault.
    #[arg(long)]
    managed_hsm: bool,
    /// HTTPS listen address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Plain-HTTP managed identity (IMDS / App Service) listen address; "off" for none.
    #[arg(long, default_value = "127.0.0.1:8080")]
    identity_listen: String,
    /// Directory for ca.pem (created if missing); a temporary one by default.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Tenant id; random by default.
    #[arg(long)]
    tenant_id: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Register an application with this client id ...
    #[arg(long, requires = "client_secret_file")]
    client_id: Option<String>,
    /// ... whose client secret is the content of this file.
    #[arg(long)]
    client_secret_file: Option<PathBuf>,
    /// Create keys at start: NAME:KTY:SIZE, e.g. kek:RSA:2048 or kek:oct-HSM:256.
    #[arg(long = "key")]
    keys: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    emulator_support::cli::init_tracing();
    let args = Args::parse();
    let identity_bind = optional_listen(&args.identity_listen)
        .context("--identity-listen must be ADDRESS:PORT or off")?;
    let options = Options {
        kind: if args.managed_hsm {
            VaultKind::ManagedHsm
        } else {
            VaultKind::KeyVault
        },
        bind: args.listen,
        identity_bind,
        tls: args.tls.source(),
        state_dir: args.state_dir,
        tenant_id: args.tenant_id,
        ..Options::default()
    };
    let emulator = Emulator::start(options)
        .await
        .context("starting the emulator")?;
    if let (Some(client_id), Some(path)) = (args.client_id, args.client_secret_file) {
        let secret = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        emulator.register_identity(IdentitySpec {
            client_id: Some(client_id.clone()),
            client_secret: Some(secret.trim().to_owned()),
            ..IdentitySpec::default()
        })?;
        println!(
            "client id:     {client_id} (secret from {})",
            path.display()
        );
    }
    for key in &args.keys {
        let mut parts = key.split(':');
        let (Some(name), Some(kty), Some(size), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("--key must be NAME:KTY:SIZE, got {key}");
        };
        let kty = KeyType::parse(kty).with_context(|| format!("unknown key type {kty}"))?;
        let size: u32 = size
            .parse()
            .with_context(|| format!("bad key size {size}"))?;
        let info = emulator
            .create_key(name, KeySpec::rsa(size).with_kty(kty))
            .await?;
        println!("key:           {}", info.kid);
    }
    println!("vault url:     {}", emulator.vault_url());
    println!("ca certificate: {}", emulator.ca_pem_path().display());
    println!("tenant id:     {}", emulator.tenant_id());
    println!("authority:     {}", emulator.authority_url());
    if let Some(imds) = emulator.imds_url() {
        println!("imds:          {imds} (AZURE_POD_IDENTITY_AUTHORITY_HOST)");
    }
    println!("admin api:     {}_emulator/info", emulator.vault_url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    emulator.shutdown().await;
    Ok(())
}
