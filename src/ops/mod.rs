//! The operations endpoints, on their own HTTP listener (127.0.0.1 by default): `/healthz` for
//! liveness, `/readyz` for readiness, `/metrics` for Prometheus.
//!
//! None of them makes a remote call: they report what the envelope already knows, so a probe
//! can never add load to the key service or hang on it.

pub mod health;
pub mod metrics;

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::envelope::Envelope;
use metrics::Metrics;

/// What the endpoints report on: the envelope once the plugin can serve, and until then why not.
#[derive(Default)]
pub struct Target {
    envelope: OnceLock<Arc<Envelope>>,
    starting: Mutex<String>,
}

impl Target {
    /// A target for a plugin that can serve already.
    pub fn started(envelope: Arc<Envelope>) -> Arc<Self> {
        let target = Self::default();
        let _ = target.envelope.set(envelope);
        Arc::new(target)
    }

    /// Records why the plugin cannot serve yet (shown by /readyz).
    pub fn starting(&self, reason: impl Into<String>) {
        *self
            .starting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = reason.into();
    }

    /// The plugin can serve with `envelope`.
    pub fn start(&self, envelope: Arc<Envelope>) {
        let _ = self.envelope.set(envelope);
    }
}

#[derive(Clone)]
struct OpsState {
    target: Arc<Target>,
    metrics: Arc<Metrics>,
}

/// The router for the operations endpoints.
pub fn router(target: Arc<Target>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(OpsState { target, metrics })
}

/// Serves the operations endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    target: Arc<Target>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(target, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let readiness = match state.target.envelope.get() {
        Some(envelope) => {
            health::readiness(&envelope.snapshot().await, std::time::SystemTime::now())
        }
        None => health::Readiness {
            ready: false,
            report: format!(
                "status: starting: {}\n",
                state
                    .target
                    .starting
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            ),
        },
    };
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
    let text = state
        .metrics
        .render(state.target.envelope.get().map(Arc::as_ref))
        .await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
