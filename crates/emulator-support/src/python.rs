//! The runner of the emulators' fidelity tests: a vendor's Python SDK suite (a `unittest`
//! module) run against an emulator started in process, with the caller's environment and none
//! of the variables that would steer the SDK elsewhere. For tests only.
//!
//! It never skips: a missing python3 or SDK package fails the test and says what to install.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const INSTALL_HINT: &str = "install Python 3.9+ and the SDKs with \
     `python3 -m pip install -r tests/python/requirements.txt` (from the repository root)";

/// Proxy and CA variables no suite inherits: the suites talk to loopback only.
const ALWAYS_SCRUBBED: &[&str] = &[
    "CURL_CA_BUNDLE",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

/// Panics, saying what to install, unless python3 runs and `imports` (a comma-separated list
/// of modules) imports; `what` names the packages in the message.
fn require(imports: &str, what: &str) {
    let probe = std::process::Command::new("python3")
        .args(["-c", &format!("import {imports}")])
        .output()
        .unwrap_or_else(|error| panic!("python3 is not runnable ({error}); {INSTALL_HINT}"));
    assert!(
        probe.status.success(),
        "the {what} are missing: {}\n{INSTALL_HINT}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// The Python unittest suites of one emulator: where they live, what they must not inherit and
/// how long one may take.
#[derive(Debug, Clone, Copy)]
pub struct Suites<'a> {
    /// The directory of the suites' modules.
    pub dir: &'a str,
    /// The modules the suites import (comma-separated), checked before each run.
    pub imports: &'a str,
    /// What those modules are, for the message when they are missing.
    pub packages: &'a str,
    /// Environment variables removed before a suite runs (besides proxies and `CURL_CA_BUNDLE`).
    pub scrubbed: &'a [&'a str],
    /// How long one suite may take.
    pub deadline: Duration,
}

impl Suites<'_> {
    /// Runs the unittest `module` with `env` (and `NO_PROXY` for loopback); fails with the
    /// suite's output unless python3 and the packages are there and every test ran and passed.
    pub async fn run(&self, module: &str, env: &[(&str, OsString)]) {
        require(self.imports, self.packages);
        let mut command = tokio::process::Command::new("python3");
        command
            .args(["-m", "unittest", "-v", module])
            .current_dir(Path::new(self.dir))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("NO_PROXY", "localhost,127.0.0.1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for name in ALWAYS_SCRUBBED.iter().chain(self.scrubbed) {
            command.env_remove(name);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let output = tokio::time::timeout(self.deadline, command.output())
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
        eprintln!("{stderr}");
    }
}
