//! The emulator's fidelity, judged by clients we did not write: Alibaba Cloud's Python SDKs run
//! against an emulator started in process, over HTTPS with the emulator's CA (trusted through
//! `SSL_CERT_FILE`, as the credentials package offers no other way) and with real service host
//! names (`kms-vpc.cn-hangzhou.aliyuncs.com`, `oos-vpc.…`, `sts.aliyuncs.com`) resolved to
//! loopback by the suites — alibabacloud-kms20160120 (tests/python/test_kms_sdk.py),
//! alibabacloud-oos20190601 (test_oos_sdk.py) and alibabacloud-credentials with KMS
//! (test_credentials_sdk.py).
//!
//! These tests never skip: without python3 or the SDK packages they fail and say what to
//! install.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use alibaba_emulator::{Emulator, Options, RunningEmulator};

const SUITE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");
const INSTALL_HINT: &str = "install Python 3.9+ and the SDKs with \
     `python3 -m pip install -r tests/python/requirements.txt` (from the repository root)";
/// Each suite takes a few seconds; the deadline only guards against a hang.
const PYTHON_DEADLINE: Duration = Duration::from_secs(300);

/// Environment variables that would steer the SDKs' credentials, endpoints or proxies away
/// from what a test chose.
const SCRUBBED: &[&str] = &[
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
    "ALIBABA_CLOUD_ROLE_ARN",
    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
    "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
    "ALIBABA_CLOUD_ROLE_SESSION_NAME",
    "ALIBABA_CLOUD_ECS_METADATA",
    "ALIBABA_CLOUD_ECS_METADATA_DISABLED",
    "ALIBABA_CLOUD_IMDSV1_DISABLED",
    "ALIBABA_CLOUD_CREDENTIALS_FILE",
    "ALIBABA_CLOUD_CREDENTIALS_URI",
    "ALIBABA_CLOUD_PROFILE",
    "ALIBABA_CLOUD_STS_REGION",
    "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED",
    "REQUESTS_CA_BUNDLE",
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
            "import alibabacloud_kms20160120, alibabacloud_oos20190601, alibabacloud_credentials, \
             alibabacloud_tea_openapi, darabonba, requests",
        ])
        .output()
        .unwrap_or_else(|error| panic!("python3 is not runnable ({error}); {INSTALL_HINT}"));
    assert!(
        probe.status.success(),
        "the Alibaba Cloud Python SDK packages are missing: {}\n{INSTALL_HINT}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

async fn emulator() -> RunningEmulator {
    Emulator::start(Options::default())
        .await
        .expect("start the Alibaba Cloud emulator")
}

/// Runs one Python unittest module against `emulator`; fails with the suite's output unless
/// every test ran and passed.
async fn run_suite(module: &str, emulator: &RunningEmulator) {
    check_python();
    let mut command = tokio::process::Command::new("python3");
    command
        .args(["-m", "unittest", "-v", module])
        .current_dir(Path::new(SUITE_DIR))
        .env("SSL_CERT_FILE", emulator.ca_pem_path())
        .env("ALI_CA", emulator.ca_pem_path())
        .env("ALI_ENDPOINT", emulator.endpoint())
        .env(
            "ALI_METADATA_URL",
            emulator
                .metadata_url()
                .expect("the emulator runs a metadata listener"),
        )
        .env("ALI_ACCOUNT_ID", emulator.account_id())
        .env("ALI_REGION", emulator.region())
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
        "the Python SDK suite {module} failed\n{report}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\nOK") && !stderr.contains("skipped"),
        "the suite {module} must run every test\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alibabas_kms_sdk_drives_the_emulator() {
    let emulator = emulator().await;
    run_suite("test_kms_sdk", &emulator).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alibabas_oos_sdk_drives_the_emulator() {
    let emulator = emulator().await;
    run_suite("test_oos_sdk", &emulator).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alibabas_credentials_sdk_drives_the_emulator() {
    let emulator = emulator().await;
    run_suite("test_credentials_sdk", &emulator).await;
    emulator.shutdown().await;
}
