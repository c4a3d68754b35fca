//! The `/v1alpha1.CSIDriverProvider` service: Version says which API and provider answer; Mount
//! decodes the request, sets the Mount's deadline and hands it to the [`Backend`] the provider
//! serves (Azure Key Vault or Alibaba Cloud), then answers with every file and object version,
//! or with one status (see [`crate::errors`]).
//!
//! Never logs a request's attributes, secrets or file contents: they carry service-account
//! tokens, credentials and the secrets themselves. Per-request logs name the pod and the outcome.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::time::Instant;

use tonic::{Request, Response, Status};

use crate::alibaba::mount::AlibabaBackend;
use crate::azure::mount::AzureBackend;
use crate::errors::{MountError, to_status};
use crate::files::Mounted;
use crate::metrics::Metrics;
use crate::proto::v1alpha1::csi_driver_provider_server::CsiDriverProvider;
use crate::proto::v1alpha1::{
    File, MountRequest, MountResponse, ObjectVersion, VersionRequest, VersionResponse,
};
use crate::request::MountInput;

/// The provider API version this provider speaks, as the driver sends and expects it.
pub const API_VERSION: &str = "v1alpha1";

/// The name Version reports as `runtime_name`: the binary's.
pub const RUNTIME_NAME: &str = "kube-kms-csi-provider";

/// How long before the caller's deadline a Mount stops waiting for the vault, so that its
/// answer (an error naming what it waited for) still reaches the driver.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// The secret store a provider process serves: one per process and socket.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Azure Key Vault, as provider `azure`.
    Azure(Arc<AzureBackend>),
    /// Alibaba Cloud KMS Secrets Manager and OOS secret parameters, as provider `alibabacloud`.
    Alibaba(Arc<AlibabaBackend>),
}

impl Backend {
    /// Serves one Mount of `input`, by `deadline` at the latest.
    pub async fn mount(
        &self,
        input: &MountInput,
        deadline: Instant,
    ) -> Result<Mounted, MountError> {
        match self {
            Self::Azure(backend) => backend.mount(input, deadline).await,
            Self::Alibaba(backend) => backend.mount(input, deadline).await,
        }
    }

    /// The provider name SecretProviderClasses use for it (`spec.provider`).
    pub fn provider_name(&self) -> &'static str {
        match self {
            Self::Azure(_) => "azure",
            Self::Alibaba(_) => "alibabacloud",
        }
    }
}

impl From<Arc<AzureBackend>> for Backend {
    fn from(backend: Arc<AzureBackend>) -> Self {
        Self::Azure(backend)
    }
}

impl From<Arc<AlibabaBackend>> for Backend {
    fn from(backend: Arc<AlibabaBackend>) -> Self {
        Self::Alibaba(backend)
    }
}

/// The provider service.
#[derive(Debug, Clone)]
pub struct CsiProvider {
    backend: Backend,
    metrics: Arc<Metrics>,
    /// The longest a Mount may take when the caller sets no shorter deadline.
    mount_timeout: Duration,
}

impl CsiProvider {
    /// A service mounting with `backend`, recording into `metrics`; a Mount takes at most
    /// `mount_timeout` (less when the caller's `grpc-timeout` is shorter).
    pub fn new(
        backend: impl Into<Backend>,
        metrics: Arc<Metrics>,
        mount_timeout: Duration,
    ) -> Self {
        Self {
            backend: backend.into(),
            metrics,
            mount_timeout,
        }
    }

    async fn mount_inner(
        &self,
        request: Request<MountRequest>,
    ) -> Result<MountResponse, MountError> {
        let budget = grpc_timeout(request.metadata())
            .map_or(self.mount_timeout, |timeout| {
                timeout.min(self.mount_timeout)
            })
            .saturating_sub(DEADLINE_MARGIN);
        let deadline = Instant::now() + budget;
        let input = MountInput::from_request(request.get_ref())?;
        let mounted = self.backend.mount(&input, deadline).await?;
        tracing::debug!(
            provider = self.backend.provider_name(),
            pod = %input.pod.name,
            namespace = %input.pod.namespace,
            files = mounted.files.len(),
            "mounted"
        );
        let response = MountResponse {
            object_version: mounted
                .versions
                .into_iter()
                .map(|version| ObjectVersion {
                    id: version.id,
                    version: version.version,
                })
                .collect(),
            error: None,
            files: mounted
                .files
                .into_iter()
                .map(|file| File {
                    path: file.path,
                    mode: file.mode as i32,
                    // The response owns the bytes from here; tonic's buffers are not zeroized.
                    contents: file.contents.to_vec(),
                })
                .collect(),
        };
        let bytes = response.encoded_len();
        if bytes > crate::LIMITS.max_message_bytes {
            return Err(MountError::TooLarge {
                bytes,
                limit: crate::LIMITS.max_message_bytes,
            });
        }
        Ok(response)
    }
}

/// The caller's `grpc-timeout` header (`<digits><unit>`, units H M S m u n), if valid.
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[tonic::async_trait]
impl CsiDriverProvider for CsiProvider {
    async fn version(
        &self,
        request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        tracing::debug!(driver_version = request.get_ref().version, "Version");
        self.metrics
            .record_call("Version", tonic::Code::Ok, Duration::ZERO);
        Ok(Response::new(VersionResponse {
            version: API_VERSION.to_owned(),
            runtime_name: RUNTIME_NAME.to_owned(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn mount(
        &self,
        request: Request<MountRequest>,
    ) -> Result<Response<MountResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.mount_inner(request).await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(error) => error.code(),
        };
        self.metrics.record_call("Mount", code, started.elapsed());
        match result {
            Ok(response) => Ok(Response::new(response)),
            Err(error) => {
                tracing::info!(code = ?code, error = %error, "Mount failed");
                Err(to_status(&error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_reads_every_unit_and_refuses_the_rest() {
        let timeout = |text: &str| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert("grpc-timeout", text.parse().unwrap());
            grpc_timeout(&metadata)
        };
        assert_eq!(timeout("119999m"), Some(Duration::from_millis(119_999)));
        assert_eq!(timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "12", "1x", "-1S", "123456789S"] {
            assert_eq!(timeout(bad), None, "{bad}");
        }
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
    }
}
