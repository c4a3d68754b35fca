//! The provider's Prometheus metrics, with bounded labels only: the gRPC method and code, the
//! Mount's outcome, the object type (`secret`, `key`, `cert` for Azure; `kms`, `oos` for
//! Alibaba Cloud) and the store call's result. No label ever holds an object
//! name, a vault name, a pod, an identity or error text (Azure's provider puts object names and
//! error messages in labels; a fleet's scrape then grows without bound).
//!
//! Recorded as things happen; scraped by `/metrics` on the health listener. Never makes a remote
//! call.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one gRPC call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

/// Labels of one Key Vault call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VaultLabels {
    object_type: &'static str,
    result: &'static str,
}

/// Labels of one object cache lookup.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    result: &'static str,
}

/// The provider's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<CallLabels, Histogram>,
    vault_calls: Family<VaultLabels, Counter>,
    vault_seconds: Family<VaultLabels, Histogram>,
    lookups: Family<LookupLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 1 ms to about 65 s.
    exponential_buckets(0.001, 2.0, 17)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kube_kms_csi");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls served, by method and gRPC code",
            calls.clone(),
        );
        let call_seconds = Family::<CallLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a gRPC call, by method and gRPC code",
            call_seconds.clone(),
        );
        let vault_calls = Family::<VaultLabels, Counter>::default();
        registry.register(
            "keyvault_requests",
            "Secret store reads made (Key Vault; Alibaba Cloud KMS and OOS) after coalescing and \
             caching, by object type and result",
            vault_calls.clone(),
        );
        let vault_seconds = Family::<VaultLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "keyvault_request_duration_seconds",
            "Time of one secret store read including its retries, by object type and result",
            vault_seconds.clone(),
        );
        let lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "object_lookups",
            "Object reads a Mount asked for: served from the cache (hit), joined to a read in \
             flight (coalesced), or read from the store (miss)",
            lookups.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            calls,
            call_seconds,
            vault_calls,
            vault_seconds,
            lookups,
        }
    }
}

impl Metrics {
    /// Records one gRPC call: `method` (`Mount`, `Version`) and its gRPC code's name.
    pub fn record_call(&self, method: &'static str, code: tonic::Code, took: Duration) {
        let labels = CallLabels {
            method,
            code: code_name(code),
        };
        self.calls.get_or_create(&labels).inc();
        self.call_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Records one secret store read (all its attempts): the object type and a fixed result
    /// name (`ok`, `not_found`, `forbidden`, `throttled`, …).
    pub fn record_vault_call(
        &self,
        object_type: &'static str,
        result: &'static str,
        took: Duration,
    ) {
        let labels = VaultLabels {
            object_type,
            result,
        };
        self.vault_calls.get_or_create(&labels).inc();
        self.vault_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Records one object lookup: `hit`, `coalesced` or `miss`.
    pub fn record_lookup(&self, result: &'static str) {
        self.lookups.get_or_create(&LookupLabels { result }).inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// The gRPC code's canonical name, as a fixed label value.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_hold_only_fixed_names() {
        let metrics = Metrics::default();
        metrics.record_call("Mount", tonic::Code::NotFound, Duration::from_millis(3));
        metrics.record_vault_call("secret", "not_found", Duration::from_millis(2));
        metrics.record_lookup("coalesced");
        let text = metrics.encode();
        assert!(
            text.contains(r#"kube_kms_csi_grpc_requests_total{method="Mount",code="NOT_FOUND"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kube_kms_csi_keyvault_requests_total{object_type="secret",result="not_found"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"kube_kms_csi_object_lookups_total{result="coalesced"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
