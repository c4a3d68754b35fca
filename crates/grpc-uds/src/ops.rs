//! The operations endpoints a daemon serves beside its socket, on their own HTTP listener:
//! `/healthz` for liveness (answers while the process runs), `/readyz` for readiness and
//! `/metrics` for Prometheus, both from the caller's [`Probe`].
//!
//! What "ready" means and which metrics exist are the caller's; this module only routes and
//! answers. A probe must never make a remote call, so a scrape or a kubelet probe can never add
//! load to a backend or hang on it. The caller binds the listener (loopback by default: the
//! endpoints are not authenticated).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

/// The readiness verdict and its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Whether /readyz answers 200 (otherwise 503).
    pub ready: bool,
    /// Lines of `name: value`, for people; the body of /readyz.
    pub report: String,
}

/// What the endpoints report on, supplied by the daemon. Both calls answer from what the process
/// already knows and never make a remote call.
pub trait Probe: Send + Sync + 'static {
    /// Whether the daemon can serve, and why (not).
    fn readiness(&self) -> impl Future<Output = Readiness> + Send;
    /// The metrics in the OpenMetrics text format.
    fn metrics(&self) -> impl Future<Output = String> + Send;
}

/// The router for the operations endpoints.
pub fn router<P: Probe>(probe: Arc<P>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<P>))
        .route("/metrics", get(metrics_text::<P>))
        .with_state(probe)
}

/// Serves the operations endpoints on `listener` until `shutdown` completes.
pub async fn serve<P: Probe>(
    listener: TcpListener,
    probe: Arc<P>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(probe))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz<P: Probe>(State(probe): State<Arc<P>>) -> impl IntoResponse {
    let readiness = probe.readiness().await;
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        readiness.report,
    )
}

async fn metrics_text<P: Probe>(State(probe): State<Arc<P>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        probe.metrics().await,
    )
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    struct Fixed(bool);

    impl Probe for Fixed {
        async fn readiness(&self) -> Readiness {
            Readiness {
                ready: self.0,
                report: format!("status: {}\n", if self.0 { "ok" } else { "starting" }),
            }
        }

        async fn metrics(&self) -> String {
            "up 1\n# EOF\n".to_owned()
        }
    }

    async fn get(ready: bool, path: &str) -> (StatusCode, String, String) {
        let response = router(Arc::new(Fixed(ready)))
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let kind = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, kind, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_the_probe_and_healthz_does_not() {
        let (status, _, body) = get(false, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "status: starting\n")
        );
        let (status, _, body) = get(true, "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "status: ok\n"));
        let (status, _, body) = get(false, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    }

    #[tokio::test]
    async fn metrics_are_the_probes_text_as_openmetrics() {
        let (status, kind, body) = get(true, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
        assert_eq!(body, "up 1\n# EOF\n");
    }
}
