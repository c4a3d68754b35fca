//! What the plugin's operations endpoints report: `/readyz` from the envelope (or why it is not
//! there yet) and `/metrics` from the plugin's metrics. The HTTP listener (127.0.0.1 by default)
//! and its routes are the shared [`grpc_uds::ops`]'s.
//!
//! Neither makes a remote call: they report what the envelope already knows, so a probe can
//! never add load to the key service or hang on it.

pub mod health;
pub mod metrics;

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use grpc_uds::ops::{Probe, Readiness};
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

/// What the endpoints report on: readiness from the target, metrics from `metrics`.
struct OpsState {
    target: Arc<Target>,
    metrics: Arc<Metrics>,
}

impl Probe for OpsState {
    async fn readiness(&self) -> Readiness {
        match self.target.envelope.get() {
            Some(envelope) => {
                health::readiness(&envelope.snapshot().await, std::time::SystemTime::now())
            }
            None => Readiness {
                ready: false,
                report: format!(
                    "status: starting: {}\n",
                    self.target
                        .starting
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                ),
            },
        }
    }

    async fn metrics(&self) -> String {
        self.metrics
            .render(self.target.envelope.get().map(Arc::as_ref))
            .await
    }
}

/// Serves the operations endpoints ([`grpc_uds::ops`]) on `listener` until `shutdown`
/// completes.
pub async fn serve(
    listener: TcpListener,
    target: Arc<Target>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    grpc_uds::ops::serve(listener, Arc::new(OpsState { target, metrics }), shutdown).await
}
