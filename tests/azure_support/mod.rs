//! Shared set-up for the Azure provider's tests: a Key Vault (or Managed HSM) emulator over
//! HTTPS with its own CA, an identity that holds only the get, wrapKey and unwrapKey
//! permissions, and an [`AzureConfig`] that reaches it the way an operator's would — the CA
//! through `azure.ca_file`, tokens from the emulator's Entra endpoint through
//! `azure.authority_host`, and the challenge-resource check off (the emulator is `localhost`,
//! not a subdomain of vault.azure.net).

#![allow(
    dead_code,
    reason = "each test crate uses a different subset of these helpers"
)]

pub mod python;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use azure_access::auth::{AuthMode, AzureEnv, SecretSource};
use keyvault_emulator::{
    Emulator, IdentitySpec, KeyInfo, KeySpec, Operation, Options, Permission, RunningEmulator,
};
use kube_kms::provider::azure::key_id::KeyRef;
use kube_kms::provider::azure::{AzureConfig, AzureKeyVaultProvider};

/// The permissions kube-kms's identity needs, and no more.
pub const MINIMAL_PERMISSIONS: [Permission; 3] =
    [Permission::Get, Permission::WrapKey, Permission::UnwrapKey];

/// A running emulator with one key and one client-secret identity.
pub struct TestVault {
    pub emulator: RunningEmulator,
    pub dir: tempfile::TempDir,
    pub client_id: String,
    pub secret_file: PathBuf,
    pub key_name: String,
    pub first: KeyInfo,
}

/// A temporary directory with a short path (socket paths are limited to 107 bytes).
pub fn short_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kkaz")
        .tempdir_in("/tmp")
        .expect("temporary directory")
}

/// A fresh GUID-shaped client id.
pub fn new_client_id() -> String {
    let hex = kube_kms::provider::azure::random_version();
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

impl TestVault {
    /// A Key Vault with an RSA key of `bits`.
    pub async fn key_vault(bits: u32) -> Self {
        Self::start(Options::key_vault(), KeySpec::rsa(bits)).await
    }

    /// A Managed HSM with an oct-HSM 256-bit key.
    pub async fn managed_hsm() -> Self {
        Self::start(Options::managed_hsm(), KeySpec::oct_hsm(256)).await
    }

    /// An emulator with `options`, a key "kek" of `spec`, and a minimal identity.
    pub async fn start(options: Options, spec: KeySpec) -> Self {
        let emulator = Emulator::start(options).await.expect("the emulator starts");
        let dir = tempfile::tempdir().expect("temporary directory");
        let client_id = new_client_id();
        let secret = kube_kms::provider::azure::random_version();
        emulator
            .register_identity(IdentitySpec {
                name: Some("kube-kms".into()),
                client_id: Some(client_id.clone()),
                client_secret: Some(secret.clone()),
                permissions: Some(MINIMAL_PERMISSIONS.to_vec()),
                ..IdentitySpec::default()
            })
            .expect("register the identity");
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, format!("{secret}\n")).expect("write the secret file");
        let key_name = "kek".to_owned();
        let first = emulator
            .create_key(&key_name, spec)
            .await
            .expect("create the key");
        Self {
            emulator,
            dir,
            client_id,
            secret_file,
            key_name,
            first,
        }
    }

    /// The key as the configuration names it.
    pub fn key_ref(&self) -> KeyRef {
        KeyRef::new(&self.emulator.vault_url(), &self.key_name).expect("the emulator's URL")
    }

    /// A configuration that reaches the emulator with the client-secret identity.
    pub fn config(&self) -> AzureConfig {
        let mut config = AzureConfig::new(self.key_ref());
        self.point_at_emulator(&mut config);
        config.auth.mode = AuthMode::ClientSecret;
        config.auth.tenant_id = Some(self.emulator.tenant_id().to_owned());
        config.auth.client_id = Some(self.client_id.clone());
        config.auth.client_secret = Some(SecretSource::File(self.secret_file.clone()));
        config
    }

    /// What every configuration needs to reach the emulator: its CA, its authority, and no
    /// challenge-resource check.
    pub fn point_at_emulator(&self, config: &mut AzureConfig) {
        config.transport.ca_file = Some(self.emulator.ca_pem_path().to_owned());
        config.authority_host = Some(self.emulator.authority_url());
        config.insecure_skip_challenge_resource_check = true;
        config.auth.azure_json = self.dir.path().join("no-azure.json");
    }

    /// A provider on [`TestVault::config`], opened (the key read and checked).
    pub async fn provider(&self) -> Arc<AzureKeyVaultProvider> {
        self.open(self.config()).await
    }

    /// A provider on `config`, opened, with an empty environment.
    pub async fn open(&self, config: AzureConfig) -> Arc<AzureKeyVaultProvider> {
        Arc::new(
            AzureKeyVaultProvider::open_with_env(config, &AzureEnv::from_pairs(&[]))
                .await
                .expect("the Azure provider opens"),
        )
    }

    /// Requests that reached the key (get, wrap, unwrap), authentication challenges excluded.
    pub fn key_operations(&self) -> u64 {
        [Operation::GetKey, Operation::WrapKey, Operation::UnwrapKey]
            .into_iter()
            .map(|op| {
                let counts = self.emulator.counts(op);
                counts.requests - counts.challenged
            })
            .sum()
    }

    /// Wrap and unwrap requests that reached the key, challenges excluded.
    pub fn crypto_operations(&self) -> (u64, u64) {
        let count = |op| {
            let counts = self.emulator.counts(op);
            counts.requests - counts.challenged
        };
        (count(Operation::WrapKey), count(Operation::UnwrapKey))
    }
}
