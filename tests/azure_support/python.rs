//! Runs a script of `tests/python/` with Microsoft's Python SDK against the emulator: the
//! emulator's CA trusted through `REQUESTS_CA_BUNDLE`, proxies cleared, one JSON file of input
//! named on the command line. Fails the test with an install hint when python3 or the packages
//! are missing: nothing here skips.

use std::path::Path;
use std::time::Duration;

const PYTHON_HINT: &str = "install Python 3 and the SDKs with `python3 -m pip install -r \
     tests/python/requirements.txt` (from the repository root)";

/// Runs `tests/python/<script>` with `input` as its JSON file, trusting `ca_bundle`; returns
/// its standard output, or fails the test with both outputs.
pub async fn run_sdk_script(script: &str, input: &serde_json::Value, ca_bundle: &Path) -> String {
    let probe = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import azure.keyvault.keys, azure.identity, cryptography",
        ])
        .output()
        .await
        .unwrap_or_else(|error| panic!("python3 is not runnable ({error}); {PYTHON_HINT}"));
    assert!(
        probe.status.success(),
        "the Python SDK packages are missing: {}\n{PYTHON_HINT}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("input.json");
    std::fs::write(&file, serde_json::to_vec(input).expect("JSON")).expect("write the input");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(&path)
        .arg(&file)
        .env("REQUESTS_CA_BUNDLE", ca_bundle)
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    for name in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "SSL_CERT_FILE",
    ] {
        command.env_remove(name);
    }
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the Python script finished in time")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "tests/python/{script} failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
