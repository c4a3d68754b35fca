//! The operations endpoints, on their own HTTP listener (127.0.0.1 by default): `/healthz` for
//! liveness, `/readyz` for readiness, `/metrics` for Prometheus.
//!
//! None of them makes a remote call: they report what the envelope already knows, so a probe
//! can never add load to the key service or hang on it.

pub mod health;
pub mod metrics;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::envelope::Envelope;
use metrics::Metrics;

#[derive(Clone)]
struct OpsState {
    envelope: Arc<Envelope>,
    metrics: Arc<Metrics>,
}

/// The router for the operations endpoints.
pub fn router(envelope: Arc<Envelope>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(OpsState { envelope, metrics })
}

/// Serves the operations endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    envelope: Arc<Envelope>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(envelope, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let readiness = health::readiness(
        &state.envelope.snapshot().await,
        std::time::SystemTime::now(),
    );
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

async fn metrics_text(State(state): State<OpsState>) -> impl IntoResponse {
    let text = state.metrics.render(&state.envelope).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
