//! The caller's deadline, read from its `grpc-timeout` header, carried into the envelope so a
//! remote unwrap never outlives the Decrypt that needed it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::provider::guard::REQUEST_DEADLINE;

/// The deadline `request` carries, if any. kube-apiserver sends its per-call timeout (3 s by
/// default) this way.
pub fn of<T>(request: &tonic::Request<T>) -> Option<Instant> {
    let header = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    parse_timeout(header).map(|timeout| Instant::now() + timeout)
}

/// Runs `call` with `deadline` visible to the provider guard.
pub async fn within<F: Future>(deadline: Option<Instant>, call: F) -> F::Output {
    match deadline {
        Some(deadline) => REQUEST_DEADLINE.scope(deadline, call).await,
        None => call.await,
    }
}

/// Parses a gRPC timeout: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_specification_writes_them() {
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("2999m"), Some(Duration::from_millis(2999)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "S", "3", "3s", "123456789S", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }
}
