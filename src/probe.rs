//! `kube-kms probe`: the operator's client for a running plugin. It does what kube-apiserver
//! does — Status, then an Encrypt and a Decrypt of a random 32-byte seed — and says plainly
//! whether the plugin works.
//!
//! Prints key_ids and health text only; the probe's seed is random and never printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::v2::key_management_service_client::KeyManagementServiceClient;
use crate::proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};

/// Opens a gRPC channel to the plugin at `socket`, as kube-apiserver does (authority
/// "localhost", HTTP/2 over the Unix socket).
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The socket probed.
    pub socket: PathBuf,
    /// Status's version, healthz and key_id, if Status answered.
    pub status: Option<(String, String, String)>,
    /// None when every step passed; otherwise which step failed and why.
    pub failure: Option<String>,
}

impl ProbeReport {
    /// Whether the plugin passed every step.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "socket:  {}", self.socket.display())?;
        if let Some((version, healthz, key_id)) = &self.status {
            writeln!(
                f,
                "status:  version={version} healthz={healthz:?} key_id={key_id}"
            )?;
        }
        match &self.failure {
            None => write!(
                f,
                "verdict: OK — Status, Encrypt and Decrypt round trip work"
            ),
            Some(reason) => write!(f, "verdict: FAILED — {reason}"),
        }
    }
}

/// Runs Status, Encrypt and Decrypt against the plugin at `socket`, each within `timeout`.
pub async fn probe(socket: &Path, timeout: Duration) -> ProbeReport {
    let mut report = ProbeReport {
        socket: socket.to_owned(),
        status: None,
        failure: None,
    };
    if let Err(reason) = run(socket, timeout, &mut report).await {
        report.failure = Some(reason);
    }
    report
}

async fn run(socket: &Path, timeout: Duration, report: &mut ProbeReport) -> Result<(), String> {
    let channel = tokio::time::timeout(timeout, connect(socket))
        .await
        .map_err(|_| format!("no connection within {timeout:?}"))?
        .map_err(|error| format!("cannot connect: {error} (is the plugin running?)"))?;
    let mut client = KeyManagementServiceClient::new(channel);
    let call = |step: &'static str| {
        move |status: tonic::Status| {
            format!("{step} failed: {:?}: {}", status.code(), status.message())
        }
    };

    let status = client
        .status(with_timeout(StatusRequest {}, timeout))
        .await
        .map_err(call("Status"))?;
    let status = status.into_inner();
    report.status = Some((
        status.version.clone(),
        status.healthz.clone(),
        status.key_id.clone(),
    ));
    if status.version != "v2" {
        return Err(format!(
            "Status version is {:?}; kube-apiserver requires \"v2\"",
            status.version
        ));
    }
    if status.healthz != "ok" {
        return Err(format!("Status healthz is {:?}", status.healthz));
    }

    let mut seed = zeroize::Zeroizing::new(vec![0u8; 32]);
    crate::crypto::fill_random(&mut seed).map_err(|error| error.to_string())?;
    let uid = format!("kube-kms-probe-{}", std::process::id());
    let encrypted = client
        .encrypt(with_timeout(
            EncryptRequest {
                plaintext: seed.to_vec(),
                uid: uid.clone(),
            },
            timeout,
        ))
        .await
        .map_err(call("Encrypt"))?
        .into_inner();
    if *encrypted.key_id != *status.key_id {
        return Err(format!(
            "Encrypt's key_id {} differs from Status's {}",
            encrypted.key_id, status.key_id
        ));
    }
    let decrypted = client
        .decrypt(with_timeout(
            DecryptRequest {
                ciphertext: encrypted.ciphertext,
                uid,
                key_id: encrypted.key_id.to_string(),
                annotations: std::sync::Arc::unwrap_or_clone(encrypted.annotations),
            },
            timeout,
        ))
        .await
        .map_err(call("Decrypt"))?
        .into_inner();
    let matches: bool =
        subtle::ConstantTimeEq::ct_eq(decrypted.plaintext.as_slice(), seed.as_slice()).into();
    if !matches {
        return Err("Decrypt returned different bytes than were encrypted".into());
    }
    Ok(())
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}
