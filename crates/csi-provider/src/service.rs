//! The `/v1alpha1.CSIDriverProvider` service: Version says which API and provider answer;
//! Mount is not built yet and says so.
//!
//! Never logs a request's attributes or secrets: they carry service-account tokens and
//! credentials.

use tonic::{Request, Response, Status};

use crate::proto::v1alpha1::csi_driver_provider_server::CsiDriverProvider;
use crate::proto::v1alpha1::{MountRequest, MountResponse, VersionRequest, VersionResponse};

/// The provider API version this provider speaks, as the driver sends and expects it.
pub const API_VERSION: &str = "v1alpha1";

/// The name Version reports as `runtime_name`: the binary's.
pub const RUNTIME_NAME: &str = "kube-kms-csi-provider";

/// The message a Mount gets until a secret store backend exists.
pub const NO_BACKEND: &str = "no secret store backend is configured yet";

/// The provider service.
#[derive(Debug, Default)]
pub struct CsiProvider {}

#[tonic::async_trait]
impl CsiDriverProvider for CsiProvider {
    async fn version(
        &self,
        request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        tracing::debug!(driver_version = request.get_ref().version, "Version");
        Ok(Response::new(VersionResponse {
            version: API_VERSION.to_owned(),
            runtime_name: RUNTIME_NAME.to_owned(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn mount(
        &self,
        _request: Request<MountRequest>,
    ) -> Result<Response<MountResponse>, Status> {
        Err(Status::unimplemented(NO_BACKEND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn version_names_the_api_and_this_provider() {
        let request = Request::new(VersionRequest {
            version: API_VERSION.into(),
        });
        let response = CsiProvider::default().version(request).await.unwrap();
        let response = response.into_inner();
        assert_eq!(response.version, "v1alpha1");
        assert_eq!(response.runtime_name, "kube-kms-csi-provider");
        assert_eq!(response.runtime_version, env!("CARGO_PKG_VERSION"));
    }

    #[tokio::test]
    async fn mount_says_no_backend_is_configured() {
        let status = CsiProvider::default()
            .mount(Request::new(MountRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert_eq!(status.message(), NO_BACKEND);
    }
}
