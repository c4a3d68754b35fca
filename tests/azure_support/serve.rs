//! The real `kube-kms serve` binary on the emulator, wired exactly as in production (Guarded →
//! Instrumented → Chain → Azure), with its config file, JSON logs, its socket and its operations
//! endpoints on a free loopback port read back from the log line that announces them. Every wait
//! has a deadline; the process is killed when the handle is dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kube_kms::proto::v2::key_management_service_client::KeyManagementServiceClient;
use kube_kms::proto::v2::{
    DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use super::TestVault;
use crate::util::{BIN, ServedBinary};

/// kube-apiserver's default per-call timeout, sent as grpc-timeout.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest any one socket or HTTP call may take before the test fails instead of hanging.
const HANG: Duration = Duration::from_secs(10);

/// A running `kube-kms serve`, killed when dropped.
pub struct ServedPlugin {
    // Declared first, so the plugin is killed before its directory is removed.
    plugin: ServedBinary,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub ops: SocketAddr,
    client: KeyManagementServiceClient<Channel>,
}

impl TestVault {
    /// The `azure:` block of a config file for the key `key_name` at `vault_url`, tokens from
    /// `authority` (the emulator's Entra endpoint, or a proxy in front of it), with the
    /// client-secret identity; `extra` is appended inside the block (two-space indented).
    pub fn azure_yaml(&self, vault_url: &str, authority: &str, extra: &str) -> String {
        format!(
            "provider: azure\nazure:\n  vault_url: {vault_url}\n  key_name: {}\n  \
             auth: client-secret\n  tenant_id: {}\n  client_id: {}\n  client_secret_file: {}\n  \
             authority_host: {authority}\n  ca_file: {}\n  \
             insecure_skip_challenge_resource_check: true\n  azure_json: {}\n{extra}",
            self.key_name,
            self.emulator.tenant_id(),
            self.client_id,
            self.secret_file.display(),
            self.emulator.ca_pem_path().display(),
            self.dir.path().join("no-azure.json").display(),
        )
    }
}

impl ServedPlugin {
    /// Writes `yaml` as the config file and starts `kube-kms serve` on it with `args`; returns
    /// once the socket is open (that is, once a first KEK was wrapped).
    pub async fn start(yaml: &str, args: &[&str]) -> Self {
        let dir = super::short_dir();
        let config = dir.path().join("kube-kms.yaml");
        let socket = dir.path().join("kms.sock");
        let log = dir.path().join("serve.log");
        std::fs::write(&config, yaml).expect("write the config file");
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("HOME", dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--health-address", "127.0.0.1:0", "--log-format", "json"])
            .args(args);
        let plugin = ServedBinary::start_async(command, &log).await;
        // Both lines are logged before the EncryptionConfiguration is printed.
        let serving = plugin.logs();
        let ops = log_field(
            &serving,
            "serving /healthz, /readyz and /metrics",
            "address",
        )
        .filter(|_| serving.contains("serving KMS v2 and v1beta1"))
        .unwrap_or_else(|| panic!("kube-kms serve did not start serving:\n{serving}"));
        let ops: SocketAddr = ops.parse().unwrap_or_else(|_| panic!("{serving}"));
        let channel = tokio::time::timeout(HANG, kube_kms::probe::connect(&socket))
            .await
            .expect("connects in time")
            .expect("the socket accepts");
        Self {
            plugin,
            dir,
            config,
            socket,
            log,
            ops,
            client: KeyManagementServiceClient::new(channel),
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.plugin.pid()
    }

    /// Everything the plugin logged so far.
    pub fn log_text(&self) -> String {
        self.plugin.logs()
    }

    /// A new client on the socket (its own connection).
    pub async fn connect(&self) -> KeyManagementServiceClient<Channel> {
        let channel = tokio::time::timeout(HANG, kube_kms::probe::connect(&self.socket))
            .await
            .expect("connects in time")
            .expect("the socket accepts");
        KeyManagementServiceClient::new(channel)
    }

    /// v2 Status, as kube-apiserver calls it.
    pub async fn status(&self) -> Result<StatusResponse, tonic::Status> {
        let mut client = self.client.clone();
        bounded(client.status(request(StatusRequest {}))).await
    }

    /// v2 Encrypt of `plaintext`.
    pub async fn encrypt(&self, plaintext: &[u8]) -> Result<EncryptResponse, tonic::Status> {
        let mut client = self.client.clone();
        encrypt_with(&mut client, plaintext).await
    }

    /// v2 Decrypt of what an Encrypt returned.
    pub async fn decrypt(&self, sealed: &EncryptResponse) -> Result<Vec<u8>, tonic::Status> {
        let mut client = self.client.clone();
        decrypt_with(&mut client, sealed).await
    }

    /// GET `path` on the operations endpoints: the status code and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(self.ops)
                .await
                .expect("the operations endpoints accept");
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("writes");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("reads");
            response
        };
        let response = tokio::time::timeout(HANG, exchange)
            .await
            .unwrap_or_else(|_| panic!("GET {path} hung"));
        let code = response
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (code, body)
    }

    /// /readyz: the status code and its first line ("status: …").
    pub async fn readyz(&self) -> (u16, String) {
        let (code, body) = self.get("/readyz").await;
        (code, body.lines().next().unwrap_or_default().to_owned())
    }

    /// The sum of `kube_kms_remote_calls_total` samples for `operation` (every result): the
    /// calls the envelope made through the breaker to the provider.
    pub async fn remote_calls(&self, operation: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        let prefix = format!("kube_kms_remote_calls_total{{operation=\"{operation}\",");
        text.lines()
            .filter(|line| line.starts_with(&prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A request carrying kube-apiserver's 3 s timeout as grpc-timeout.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// `call`, failing the test if it has not answered within a bound well past any deadline.
pub async fn bounded<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(HANG, call)
        .await
        .expect("the socket answered in time")
        .map(tonic::Response::into_inner)
}

/// v2 Encrypt on `client`.
pub async fn encrypt_with(
    client: &mut KeyManagementServiceClient<Channel>,
    plaintext: &[u8],
) -> Result<EncryptResponse, tonic::Status> {
    bounded(client.encrypt(request(EncryptRequest {
        plaintext: plaintext.to_vec(),
        uid: "fault-matrix".into(),
    })))
    .await
}

/// v2 Decrypt on `client` of what an Encrypt returned.
pub async fn decrypt_with(
    client: &mut KeyManagementServiceClient<Channel>,
    sealed: &EncryptResponse,
) -> Result<Vec<u8>, tonic::Status> {
    bounded(client.decrypt(request(DecryptRequest {
        ciphertext: sealed.ciphertext.clone(),
        uid: "fault-matrix".into(),
        key_id: sealed.key_id.to_string(),
        annotations: (*sealed.annotations).clone(),
    })))
    .await
    .map(|response| response.plaintext)
}

/// The string field `field` of the last JSON log line whose message is `message`.
pub fn log_field(log: &str, message: &str, field: &str) -> Option<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["fields"]["message"] == message)
        .filter_map(|entry| entry["fields"][field].as_str().map(str::to_owned))
        .next_back()
}
