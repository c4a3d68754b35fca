//! The emulator's fidelity, judged by clients we did not write: Microsoft's Python SDKs run
//! against emulators started in process, over HTTPS with the emulator's CA —
//! azure-keyvault-keys (tests/python/test_keyvault_sdk.py, a Key Vault and a Managed HSM),
//! azure-keyvault-secrets (test_secrets_sdk.py) and azure-keyvault-certificates with EC keys
//! (test_certificates_sdk.py).
//!
//! These tests never skip: without python3 or the SDK packages they fail and say what to
//! install.

use std::path::Path;
use std::time::Duration;

use emulator_support::python::Suites;
use keyvault_emulator::{Emulator, Options};

/// The suites in tests/python; `scrubbed`: the environment variables that would steer the SDKs'
/// credentials away from what a test chose.
const SUITES: Suites = Suites {
    dir: concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python"),
    imports: "azure.keyvault.keys, azure.keyvault.secrets, azure.keyvault.certificates, \
         azure.identity, cryptography, requests",
    packages: "Python SDK packages",
    // The suite normally takes well under a minute; debug-build RSA-4096 keys dominate.
    deadline: Duration::from_secs(600),
    scrubbed: &[
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "IMDS_ENDPOINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "SSL_CERT_FILE",
    ],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_python_sdk_drives_the_emulator() {
    let vault = Emulator::start(Options {
        page_size: 2,
        ..Options::key_vault()
    })
    .await
    .expect("start the Key Vault emulator");
    let hsm = Emulator::start(Options {
        identity_bind: None,
        ..Options::managed_hsm()
    })
    .await
    .expect("start the Managed HSM emulator");

    let dir = tempfile::tempdir().expect("temporary directory");
    let bundle = dir.path().join("ca-bundle.pem");
    std::fs::write(&bundle, format!("{}{}", vault.ca_pem(), hsm.ca_pem()))
        .expect("write CA bundle");

    run_suite(
        "test_keyvault_sdk",
        &bundle,
        &[
            ("KV_VAULT_URL", vault.vault_url()),
            ("KV_HSM_URL", hsm.vault_url()),
            ("KV_TENANT", vault.tenant_id().to_owned()),
            ("KV_HSM_TENANT", hsm.tenant_id().to_owned()),
            (
                "KV_IMDS_URL",
                vault.imds_url().expect("the vault runs an IMDS listener"),
            ),
            ("KV_IDENTITY_ENDPOINT", vault.identity_endpoint()),
            ("KV_IDENTITY_HEADER", vault.identity_header().to_owned()),
        ],
    )
    .await;
    vault.shutdown().await;
    hsm.shutdown().await;
}

/// Runs one Python unittest module with the CA bundle and the given environment.
async fn run_suite(module: &str, ca_bundle: &Path, env: &[(&str, String)]) {
    let mut env: Vec<_> = env.iter().map(|(k, v)| (*k, v.into())).collect();
    env.push(("REQUESTS_CA_BUNDLE", ca_bundle.into()));
    SUITES.run(module, &env).await;
}

/// A Key Vault emulator with a page size of 2 (so lists walk nextLinks) and its CA in a file.
async fn paged_vault() -> (
    keyvault_emulator::RunningEmulator,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let vault = Emulator::start(Options {
        page_size: 2,
        ..Options::key_vault()
    })
    .await
    .expect("start the Key Vault emulator");
    let dir = tempfile::tempdir().expect("temporary directory");
    let bundle = dir.path().join("ca-bundle.pem");
    std::fs::write(&bundle, vault.ca_pem()).expect("write CA bundle");
    (vault, dir, bundle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_python_secrets_sdk_drives_the_emulator() {
    let (vault, _dir, bundle) = paged_vault().await;
    run_suite(
        "test_secrets_sdk",
        &bundle,
        &[
            ("KV_VAULT_URL", vault.vault_url()),
            ("KV_TENANT", vault.tenant_id().to_owned()),
        ],
    )
    .await;
    vault.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_python_certificates_sdk_drives_the_emulator() {
    let (vault, _dir, bundle) = paged_vault().await;
    run_suite(
        "test_certificates_sdk",
        &bundle,
        &[
            ("KV_VAULT_URL", vault.vault_url()),
            ("KV_TENANT", vault.tenant_id().to_owned()),
        ],
    )
    .await;
    vault.shutdown().await;
}
