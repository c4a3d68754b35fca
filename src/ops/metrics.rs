//! Prometheus metrics, in the text exposition format, with bounded labels only: method and gRPC
//! code, provider operation and result. No label ever holds request data; the one key_id label
//! (on `kube_kms_key_info`) names only the current key version.
//!
//! Request and remote-call metrics are recorded as they happen; the envelope's counters (cache,
//! rotations, refresh) are read at scrape time, so the hot path pays for nothing it does not
//! already count. Every metric is documented in docs/metrics.md.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::envelope::{Envelope, EnvelopeSnapshot};
use crate::provider::instrumented::CallRecorder;
use crate::provider::{ProviderError, ProviderHealth};

/// Labels of a gRPC request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: &'static str,
}

/// Labels of one request-latency series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

/// Labels of a call to the key provider.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteLabels {
    operation: &'static str,
    result: &'static str,
}

/// Labels of one remote-latency series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// The plugin's metrics registry.
pub struct Metrics {
    registry: Registry,
    latest: Arc<Mutex<Option<EnvelopeSnapshot>>>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<MethodLabels, Histogram>,
    remote_calls: Family<RemoteLabels, Counter>,
    remote_seconds: Family<OperationLabels, Histogram>,
    remote_throttled: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

const REQUEST_BUCKETS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];
const REMOTE_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every kube-kms metric registered and no envelope attached yet.
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<MethodLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(REQUEST_BUCKETS)) as fn() -> Histogram,
        );
        let remote_calls = Family::<RemoteLabels, Counter>::default();
        let remote_seconds = Family::<OperationLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(REMOTE_BUCKETS)) as fn() -> Histogram,
        );
        let remote_throttled = Counter::default();
        let latest = Arc::new(Mutex::new(None));

        let mut registry = Registry::with_prefix("kube_kms");
        registry.register(
            "requests",
            "gRPC requests by method and status code",
            requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "gRPC request handling time by method",
            prometheus_client::registry::Unit::Seconds,
            request_seconds.clone(),
        );
        registry.register(
            "remote_calls",
            "Calls to the key provider by operation and result",
            remote_calls.clone(),
        );
        registry.register_with_unit(
            "remote_call_duration",
            "Key provider call time by operation",
            prometheus_client::registry::Unit::Seconds,
            remote_seconds.clone(),
        );
        registry.register(
            "remote_throttled",
            "Key provider calls refused for throttling (HTTP 429)",
            remote_throttled.clone(),
        );
        registry.register_collector(Box::new(EnvelopeCollector {
            latest: Arc::clone(&latest),
        }));
        Self {
            registry,
            latest,
            requests,
            request_seconds,
            remote_calls,
            remote_seconds,
            remote_throttled,
        }
    }

    /// Records one gRPC request. `method` is a fixed name such as "v2.Encrypt".
    pub fn record_request(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.request_seconds
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one call to the key provider.
    pub fn record_remote(
        &self,
        operation: &'static str,
        result: Result<(), &ProviderError>,
        elapsed: Duration,
    ) {
        let result = match result {
            Ok(()) => "ok",
            Err(error) => {
                if matches!(error, ProviderError::Throttled { .. }) {
                    self.remote_throttled.inc();
                }
                error_name(error)
            }
        };
        self.remote_calls
            .get_or_create(&RemoteLabels { operation, result })
            .inc();
        self.remote_seconds
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition of every metric (OpenMetrics text), with `envelope`'s state read now
    /// (none while the plugin is still starting). Makes no remote call.
    pub async fn render(&self, envelope: Option<&Envelope>) -> String {
        let snapshot = match envelope {
            Some(envelope) => Some(envelope.snapshot().await),
            None => None,
        };
        *self
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = snapshot;
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// How the provider wrapper ([`crate::provider::instrumented::Instrumented`]) reaches the
/// remote-call metrics.
impl CallRecorder for Metrics {
    fn record_call(
        &self,
        operation: &'static str,
        result: Result<(), &ProviderError>,
        elapsed: Duration,
    ) {
        self.record_remote(operation, result, elapsed);
    }
}

/// Times a request from its creation to [`RequestTimer::finish`].
pub struct RequestTimer<'a> {
    metrics: &'a Metrics,
    method: &'static str,
    started: Instant,
}

impl<'a> RequestTimer<'a> {
    /// Starts timing `method`.
    pub fn start(metrics: &'a Metrics, method: &'static str) -> Self {
        Self {
            metrics,
            method,
            started: Instant::now(),
        }
    }

    /// Records the request with the code of `result`, and passes `result` through.
    pub fn finish<T>(self, result: Result<T, tonic::Status>) -> Result<T, tonic::Status> {
        let code = result
            .as_ref()
            .map_or_else(tonic::Status::code, |_| tonic::Code::Ok);
        self.metrics
            .record_request(self.method, code, self.started.elapsed());
        result
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn error_name(error: &ProviderError) -> &'static str {
    match error {
        ProviderError::UnwrapFailed { .. } => "unwrap_failed",
        ProviderError::UnknownKeyVersion { .. } => "unknown_key_version",
        ProviderError::Revoked { .. } => "revoked",
        ProviderError::Throttled { .. } => "throttled",
        ProviderError::Unavailable { .. } => "unavailable",
        ProviderError::Misconfigured { .. } => "misconfigured",
        ProviderError::Random => "random_failed",
    }
}

/// Reads the envelope's counters at scrape time.
struct EnvelopeCollector {
    latest: Arc<Mutex<Option<EnvelopeSnapshot>>>,
}

impl std::fmt::Debug for EnvelopeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvelopeCollector")
    }
}

impl Collector for EnvelopeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match latest.as_ref() {
            Some(snapshot) => encode_snapshot(snapshot, &mut encoder),
            None => Ok(()),
        }
    }
}

fn encode_snapshot(
    snapshot: &EnvelopeSnapshot,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64| {
        let metric = ConstCounter::new(value);
        metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
    };
    let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64| {
        let metric = ConstGauge::new(value);
        metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
    };
    counter(
        encoder,
        "kek_cache_hits",
        "Decrypts that found their KEK in the cache",
        snapshot.cache.hits,
    )?;
    counter(
        encoder,
        "kek_cache_misses",
        "Decrypts that waited for an unwrap",
        snapshot.cache.misses,
    )?;
    counter(
        encoder,
        "kek_cache_evictions",
        "KEKs evicted by the cache's size bound",
        snapshot.cache.evictions,
    )?;
    counter(
        encoder,
        "kek_unwraps",
        "Provider unwraps started by cache misses (single-flight)",
        snapshot.cache.unwraps,
    )?;
    gauge(
        encoder,
        "kek_cache_entries",
        "Unwrapped KEKs held in memory",
        snapshot.cached_keks as f64,
    )?;
    counter(
        encoder,
        "local_kek_rotations_key_changed",
        "Local KEKs replaced because the remote key version changed",
        snapshot.rotations_key_changed,
    )?;
    counter(
        encoder,
        "local_kek_rotations_spent",
        "Local KEKs replaced because they reached their encryption budget or age",
        snapshot.rotations_spent,
    )?;
    gauge(
        encoder,
        "active_kek_encryptions",
        "Encryptions performed by the active local KEK",
        snapshot.active_kek_encryptions as f64,
    )?;
    let seconds = |time: Option<std::time::SystemTime>| {
        time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64())
    };
    gauge(
        encoder,
        "last_refresh_success_timestamp_seconds",
        "When the provider's current key was last read successfully (Unix time)",
        seconds(snapshot.refresh.last_success),
    )?;
    gauge(
        encoder,
        "refresh_consecutive_failures",
        "Key refreshes failed since the last success",
        snapshot.refresh.consecutive_failures as f64,
    )?;
    let revoked = matches!(snapshot.provider_health, ProviderHealth::Revoked { .. });
    gauge(
        encoder,
        "key_revoked",
        "1 while the key service says the key may not be used",
        f64::from(u8::from(revoked)),
    )?;

    let info = prometheus_client::metrics::info::Info::new(KeyInfoLabels {
        provider: snapshot.provider,
        key_id: snapshot.key.key_id().to_owned(),
        version: snapshot.key.version().to_owned(),
    });
    info.encode(encoder.encode_descriptor(
        "key",
        "The current remote key version (the key_id Status reports)",
        None,
        info.metric_type(),
    )?)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyInfoLabels {
    provider: &'static str,
    key_id: String,
    version: String,
}
