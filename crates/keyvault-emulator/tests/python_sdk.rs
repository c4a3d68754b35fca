//! The emulator's fidelity, judged by a client we did not write: Microsoft's Python SDK
//! (azure-keyvault-keys, azure-identity) runs tests/python/test_keyvault_sdk.py against a Key
//! Vault and a Managed HSM emulator started in process, over HTTPS with the emulator's CA.
//!
//! This test never skips: without python3 or the SDK packages it fails and says what to install.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use keyvault_emulator::{Emulator, Options};

const SUITE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");
const INSTALL_HINT: &str = "install Python 3.9+ and the SDKs with \
     `python3 -m pip install -r tests/python/requirements.txt` (from the repository root)";
/// The suite normally takes well under a minute; debug-build RSA-4096 keys dominate.
const PYTHON_DEADLINE: Duration = Duration::from_secs(600);

/// Environment variables that would steer the SDKs' credentials away from what a test chose.
const SCRUBBED: &[&str] = &[
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
    "CURL_CA_BUNDLE",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

fn check_python() {
    let probe = std::process::Command::new("python3")
        .args([
            "-c",
            "import azure.keyvault.keys, azure.identity, cryptography, requests",
        ])
        .output()
        .unwrap_or_else(|error| panic!("python3 is not runnable ({error}); {INSTALL_HINT}"));
    assert!(
        probe.status.success(),
        "the Python SDK packages are missing: {}\n{INSTALL_HINT}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_python_sdk_drives_the_emulator() {
    check_python();
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

    let mut command = tokio::process::Command::new("python3");
    command
        .args(["-m", "unittest", "-v", "test_keyvault_sdk"])
        .current_dir(Path::new(SUITE_DIR))
        .env("REQUESTS_CA_BUNDLE", &bundle)
        .env("KV_VAULT_URL", vault.vault_url())
        .env("KV_HSM_URL", hsm.vault_url())
        .env("KV_TENANT", vault.tenant_id())
        .env("KV_HSM_TENANT", hsm.tenant_id())
        .env(
            "KV_IMDS_URL",
            vault.imds_url().expect("the vault runs an IMDS listener"),
        )
        .env("KV_IDENTITY_ENDPOINT", vault.identity_endpoint())
        .env("KV_IDENTITY_HEADER", vault.identity_header())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "localhost,127.0.0.1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for name in SCRUBBED {
        command.env_remove(name);
    }
    let output = tokio::time::timeout(PYTHON_DEADLINE, command.output())
        .await
        .expect("the Python suite finished within its deadline")
        .expect("run python3");
    let report = format!(
        "--- python stdout ---\n{}\n--- python stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the Python SDK suite failed\n{report}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\nOK") && !stderr.contains("skipped"),
        "the suite must run every test\n{report}"
    );
    eprintln!("{stderr}");
    vault.shutdown().await;
    hsm.shutdown().await;
}
