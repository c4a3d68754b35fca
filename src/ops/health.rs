//! Readiness: whether the plugin can serve, and a short report an operator can read — the
//! current key, the last refresh, and what is degraded.
//!
//! Ready means Encrypt and Decrypt of cached KEKs work: the active KEK exists (the socket only
//! opens once it does) and the key service has not revoked the key. A key service that is
//! merely unreachable degrades the plugin but leaves it ready, because it still serves from
//! memory; failing readiness then would only take a working plugin out of service.

use std::fmt::Write;
use std::time::SystemTime;

use grpc_uds::ops::Readiness;

use crate::envelope::EnvelopeSnapshot;
use crate::provider::ProviderHealth;

/// Judges readiness from `snapshot` at time `now`.
pub fn readiness(snapshot: &EnvelopeSnapshot, now: SystemTime) -> Readiness {
    let (ready, state) = match &snapshot.provider_health {
        ProviderHealth::Ok if snapshot.refresh.consecutive_failures == 0 => (true, "ok".to_owned()),
        ProviderHealth::Ok => (
            true,
            "degraded: key refresh failing, serving from memory".to_owned(),
        ),
        ProviderHealth::Degraded { reason } => (true, format!("degraded: {reason}")),
        ProviderHealth::Revoked { reason } => (false, format!("revoked: {reason}")),
    };
    let ago = |time: Option<SystemTime>| match time.and_then(|t| now.duration_since(t).ok()) {
        Some(elapsed) => format!("{}s ago", elapsed.as_secs()),
        None => "never".to_owned(),
    };
    let mut report = String::new();
    let _ = writeln!(report, "status: {state}");
    let _ = writeln!(report, "provider: {}", snapshot.provider);
    let _ = writeln!(report, "key_id: {}", snapshot.key.key_id());
    let _ = writeln!(report, "key_version: {}", snapshot.key.version());
    let _ = writeln!(
        report,
        "last_refresh_success: {}",
        ago(snapshot.refresh.last_success)
    );
    let _ = writeln!(
        report,
        "refresh_failures_in_a_row: {}",
        snapshot.refresh.consecutive_failures
    );
    if let Some(error) = &snapshot.refresh.last_error {
        let _ = writeln!(report, "last_refresh_error: {error}");
    }
    let _ = writeln!(report, "cached_keks: {}", snapshot.cached_keks);
    Readiness { ready, report }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::envelope::RefreshState;
    use crate::envelope::cache::CacheStats;
    use crate::provider::KeyVersion;

    fn snapshot(health: ProviderHealth, failures: u64) -> EnvelopeSnapshot {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        EnvelopeSnapshot {
            key: KeyVersion::new("abc", "3").unwrap(),
            provider: "local",
            provider_health: health,
            active_kek_encryptions: 5,
            refresh: RefreshState {
                last_success: Some(now - Duration::from_secs(42)),
                last_attempt: Some(now),
                last_error: (failures > 0).then(|| "key service unavailable".to_owned()),
                consecutive_failures: failures,
            },
            cache: CacheStats::default(),
            cached_keks: 2,
            rotations_key_changed: 0,
            rotations_spent: 0,
        }
    }

    const NOW: Duration = Duration::from_secs(1000);

    #[test]
    fn a_healthy_plugin_is_ready_and_says_which_key() {
        let verdict = readiness(
            &snapshot(ProviderHealth::Ok, 0),
            SystemTime::UNIX_EPOCH + NOW,
        );
        assert!(verdict.ready);
        assert!(
            verdict.report.contains("status: ok\n"),
            "{}",
            verdict.report
        );
        assert!(verdict.report.contains("key_id: abc\n"));
        assert!(verdict.report.contains("last_refresh_success: 42s ago\n"));
    }

    #[test]
    fn failing_refreshes_degrade_but_keep_serving() {
        let verdict = readiness(
            &snapshot(ProviderHealth::Ok, 3),
            SystemTime::UNIX_EPOCH + NOW,
        );
        assert!(verdict.ready);
        assert!(
            verdict.report.contains("status: degraded"),
            "{}",
            verdict.report
        );
        assert!(verdict.report.contains("refresh_failures_in_a_row: 3"));
        assert!(
            verdict
                .report
                .contains("last_refresh_error: key service unavailable")
        );
    }

    #[test]
    fn a_revoked_key_is_not_ready() {
        let health = ProviderHealth::Revoked {
            reason: "key kms/3 is disabled".into(),
        };
        let verdict = readiness(&snapshot(health, 0), SystemTime::UNIX_EPOCH + NOW);
        assert!(!verdict.ready);
        assert!(
            verdict
                .report
                .contains("status: revoked: key kms/3 is disabled")
        );
    }
}
