//! The provider as the Secrets Store CSI driver sees it, judged by a client we did not write:
//! Python grpcio with stubs generated from proto/v1alpha1/service.proto at run time
//! (tests/python/driver.py) sends Mount requests shaped exactly like the driver's, against the
//! real `kube-kms-csi-provider` binary on a temporary socket, backed by the Key Vault emulator
//! started in process (seeded with secrets, keys and certificates, identities for every mode
//! and an AzureStackCloud file). The suite (tests/python/test_mount.py) checks every mounted
//! file with Python's `cryptography`, every error's code and message, the identity modes, and
//! the vault traffic under 50 concurrent Mounts and a 429 storm.
//!
//! These tests never skip: without python3, grpcio, grpcio-tools or cryptography they fail and
//! say what to install. They never sleep in place of a condition: every wait polls with a
//! deadline.

mod util;

use util::{ProviderProcess, VaultFixture, require_python, run_python_suite_against};

/// Runs `modules` against `provider`; on failure, prints the suite's and the provider's logs.
async fn run(fixture: &VaultFixture, provider: &ProviderProcess, modules: &[&str]) {
    run_python_suite_against(provider, modules, &fixture.python_env(provider)).await;
}

/// Stops the provider with SIGTERM (as the DaemonSet's pod is stopped) and checks that it
/// exited cleanly and logged no secret on the way.
async fn stop(fixture: &VaultFixture, provider: ProviderProcess) {
    provider.stop_cleanly(&fixture.never_logged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_shaped_python_client_mounts_every_object_kind_identity_and_error() {
    require_python();
    let fixture = VaultFixture::start().await;
    let provider = ProviderProcess::start(&fixture, "azure", &[]).await;
    run(&fixture, &provider, &["test_mount"]).await;
    stop(&fixture, provider).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_separate_cert_and_key_files_a_certificate_also_mounts_as_crt_and_key() {
    require_python();
    let fixture = VaultFixture::start().await;
    let provider = ProviderProcess::start(
        &fixture,
        "split",
        &["--write-cert-and-key-in-separate-files"],
    )
    .await;
    run(&fixture, &provider, &["test_separate_files"]).await;
    stop(&fixture, provider).await;
}
