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

use std::time::Duration;

use alibaba_emulator::{Emulator, Options, RunningEmulator};
use emulator_support::python::Suites;

/// The suites in tests/python; `scrubbed`: the environment variables that would steer the SDKs'
/// credentials or endpoints away from what a test chose (the runner scrubs proxies itself).
const SUITES: Suites = Suites {
    dir: concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python"),
    imports: "alibabacloud_kms20160120, alibabacloud_oos20190601, alibabacloud_credentials, \
         alibabacloud_tea_openapi, darabonba, requests",
    packages: "Alibaba Cloud Python SDK packages",
    // Each suite takes a few seconds; the deadline only guards against a hang.
    deadline: Duration::from_secs(300),
    scrubbed: &[
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
    ],
};

async fn emulator() -> RunningEmulator {
    Emulator::start(Options::default())
        .await
        .expect("start the Alibaba Cloud emulator")
}

/// Runs one Python unittest module against `emulator`.
async fn run_suite(module: &str, emulator: &RunningEmulator) {
    let ca = emulator.ca_pem_path();
    let metadata_url = emulator
        .metadata_url()
        .expect("the emulator runs a metadata listener");
    let env = [
        ("SSL_CERT_FILE", ca.into()),
        ("ALI_CA", ca.into()),
        ("ALI_ENDPOINT", emulator.endpoint().into()),
        ("ALI_METADATA_URL", metadata_url.into()),
        ("ALI_ACCOUNT_ID", emulator.account_id().into()),
        ("ALI_REGION", emulator.region().into()),
    ];
    SUITES.run(module, &env).await;
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
