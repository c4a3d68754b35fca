//! Keeps a struggling key service from hurting the plugin, and the plugin from hurting the key
//! service: every wrap and unwrap gets a deadline, distinct unwraps share a bounded number of
//! slots (so a restarting kube-apiserver's burst of Decrypts cannot burn the vault's 10-second
//! request budget), and a circuit breaker answers at once while the service is down instead of
//! making each Decrypt wait out its deadline.
//!
//! The breaker counts only transient failures (timeouts, 5xx, 429, connection errors); an
//! authoritative answer — success, a bad wrapped key, a revoked key — means the service is up.
//! A refusal the provider makes without asking the service ([`KeyProvider::check_unwrap`]: a
//! malformed version or wrapped KEK read from etcd) proves nothing either way and leaves the
//! breaker as it was. The background refresh always reaches the service, so the breaker closes
//! by itself as soon as the service answers again. A half-open trial whose caller gave up (its
//! future dropped at the gRPC deadline) gives the trial slot back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{
    KeyIdentity, KeyProvider, KeyVersion, LegacyCiphertext, ProviderError, ProviderHealth,
};
use crate::crypto::SecretKey;
use zeroize::Zeroizing;

tokio::task_local! {
    /// When the gRPC call that needs a remote operation must be answered (from its
    /// grpc-timeout). Set by the server around envelope calls; read by [`Guarded`].
    pub static REQUEST_DEADLINE: Instant;
}

/// How the guard behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardPolicy {
    /// The longest any one remote operation may take, whatever the caller's deadline.
    pub call_deadline: Duration,
    /// Transient failures in a row that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker first stays open; doubles on each failed trial, up to `max_open_for`.
    pub open_for: Duration,
    /// The longest the breaker stays open before it lets a trial call through.
    pub max_open_for: Duration,
    /// Unwraps of distinct KEKs in flight at once.
    pub max_concurrent_unwraps: usize,
}

impl GuardPolicy {
    /// Defaults: 2.5 s per call (inside kube-apiserver's 3 s), open after 5 transient failures
    /// for 5 s (up to 60 s), 8 unwraps at once.
    pub const DEFAULT: Self = Self {
        call_deadline: Duration::from_millis(2500),
        failure_threshold: 5,
        open_for: Duration::from_secs(5),
        max_open_for: Duration::from_secs(60),
        max_concurrent_unwraps: 8,
    };
}

impl Default for GuardPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The breaker's state, for /readyz and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the cool-down ends.
    Open,
    /// One trial call is allowed through; its outcome closes or reopens the breaker.
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    open_for: Duration,
    trial_in_flight: bool,
}

/// A [`KeyProvider`] with deadlines, bounded unwrap concurrency and a circuit breaker.
pub struct Guarded {
    inner: Arc<dyn KeyProvider>,
    policy: GuardPolicy,
    breaker: Mutex<Breaker>,
    unwrap_slots: Semaphore,
}

/// The breaker's leave for one call. A half-open trial's permit holds the one trial slot; if the
/// call never reaches [`Guarded::record`] — its caller's future was dropped at the gRPC deadline,
/// or it gave up waiting for an unwrap slot — dropping the permit gives the slot back, so the
/// next call becomes the trial instead of every call being refused until the next refresh.
struct Permit<'a> {
    breaker: &'a Mutex<Breaker>,
    trial: bool,
}

impl Permit<'_> {
    /// Whether this call is the trial; afterwards the permit no longer holds the slot.
    fn take_trial(&mut self) -> bool {
        std::mem::replace(&mut self.trial, false)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.take_trial() {
            lock(self.breaker).trial_in_flight = false;
        }
    }
}

fn lock(breaker: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    breaker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Guarded {
    /// Guards `inner` with `policy`.
    pub fn new(inner: Arc<dyn KeyProvider>, policy: GuardPolicy) -> Self {
        Self {
            inner,
            policy,
            breaker: Mutex::new(Breaker {
                failures: 0,
                open_until: None,
                open_for: policy.open_for,
                trial_in_flight: false,
            }),
            unwrap_slots: Semaphore::new(policy.max_concurrent_unwraps.max(1)),
        }
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        let breaker = self.lock();
        match breaker.open_until {
            None => BreakerState::Closed,
            Some(until) if Instant::now() < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        lock(&self.breaker)
    }

    fn permit(&self, trial: bool) -> Permit<'_> {
        Permit {
            breaker: &self.breaker,
            trial,
        }
    }

    fn admit(&self, operation: &str) -> Result<Permit<'_>, ProviderError> {
        let mut breaker = self.lock();
        let Some(until) = breaker.open_until else {
            return Ok(self.permit(false));
        };
        let now = Instant::now();
        if now < until || breaker.trial_in_flight {
            let wait = until.saturating_duration_since(now);
            return Err(ProviderError::Unavailable {
                operation: operation.to_owned(),
                source: Arc::new(std::io::Error::other(format!(
                    "circuit breaker open after repeated key service failures; next trial in {}s",
                    wait.as_secs()
                ))),
            });
        }
        breaker.trial_in_flight = true;
        Ok(self.permit(true))
    }

    fn record<T>(&self, mut permit: Permit<'_>, result: &Result<T, ProviderError>) {
        let transient = matches!(
            result,
            Err(ProviderError::Unavailable { .. } | ProviderError::Throttled { .. })
        );
        let trial = permit.take_trial();
        let mut breaker = self.lock();
        if trial {
            breaker.trial_in_flight = false;
        }
        if !transient {
            if breaker.open_until.is_some() {
                tracing::info!("key service answers again; circuit breaker closed");
            }
            breaker.failures = 0;
            breaker.open_until = None;
            breaker.open_for = self.policy.open_for;
            return;
        }
        breaker.failures = breaker.failures.saturating_add(1);
        let reopen = trial || breaker.open_until.is_some();
        if reopen || breaker.failures >= self.policy.failure_threshold {
            if reopen {
                breaker.open_for = (breaker.open_for * 2).min(self.policy.max_open_for);
            }
            breaker.open_until = Some(Instant::now() + breaker.open_for);
            tracing::warn!(
                failures = breaker.failures,
                open_for = ?breaker.open_for,
                "key service failing; circuit breaker open"
            );
        }
    }

    /// The deadline for a call started now: the caller's, capped by the policy.
    fn deadline(&self) -> Instant {
        let cap = Instant::now() + self.policy.call_deadline;
        REQUEST_DEADLINE
            .try_with(|deadline| (*deadline).min(cap))
            .unwrap_or(cap)
    }

    async fn call<T, F>(
        &self,
        operation: &str,
        permit: Permit<'_>,
        deadline: Instant,
        call: F,
    ) -> Result<T, ProviderError>
    where
        F: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let result = match tokio::time::timeout_at(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Unavailable {
                operation: operation.to_owned(),
                source: Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the key service did not answer before the deadline",
                )),
            }),
        };
        self.record(permit, &result);
        result
    }
}

#[async_trait]
impl KeyProvider for Guarded {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn identity(&self) -> Option<KeyIdentity> {
        self.inner.identity()
    }

    fn refresh_budget(&self) -> Option<Duration> {
        self.inner.refresh_budget()
    }

    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        // The refresher always reaches the service: it is how the breaker learns it is back.
        // Its own budget when it is several calls in turn, never less than one call's deadline.
        let budget = self
            .inner
            .refresh_budget()
            .map_or(self.policy.call_deadline, |budget| {
                budget.max(self.policy.call_deadline)
            });
        let deadline = Instant::now() + budget;
        let permit = {
            let mut breaker = self.lock();
            // The refresh takes the trial slot if it is free; if another trial holds it, the
            // refresh still goes through (it is how the breaker learns the service is back).
            let trial = breaker.open_until.is_some() && !breaker.trial_in_flight;
            if trial {
                breaker.trial_in_flight = true;
            }
            self.permit(trial)
        };
        self.call("refresh", permit, deadline, self.inner.refresh())
            .await
    }

    async fn current_key(&self) -> Option<KeyVersion> {
        self.inner.current_key().await
    }

    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        let permit = self.admit("wrap")?;
        let deadline = self.deadline();
        self.call("wrap", permit, deadline, self.inner.wrap(key, kek))
            .await
    }

    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        // Refused without asking the service: no verdict on it, no trial spent, no slot taken.
        self.inner.check_unwrap(version, wrapped)?;
        let permit = self.admit("unwrap")?;
        let deadline = self.deadline();
        let slot = match tokio::time::timeout_at(deadline, self.unwrap_slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                return Err(ProviderError::Unavailable {
                    operation: "unwrap".into(),
                    source: Arc::new(std::io::Error::other(
                        "every unwrap slot stayed busy until the deadline",
                    )),
                });
            }
        };
        let result = self
            .call(
                "unwrap",
                permit,
                deadline,
                self.inner.unwrap(version, wrapped),
            )
            .await;
        drop(slot);
        result
    }

    fn check_unwrap(&self, version: &str, wrapped: &[u8]) -> Result<(), ProviderError> {
        self.inner.check_unwrap(version, wrapped)
    }

    async fn decrypt_legacy(
        &self,
        record: &LegacyCiphertext,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        // Same admission as an unwrap: refused locally first, then breaker, deadline and one of
        // the bounded unwrap slots.
        self.inner.check_legacy(record)?;
        let permit = self.admit("decrypt")?;
        let deadline = self.deadline();
        let slot = match tokio::time::timeout_at(deadline, self.unwrap_slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                return Err(ProviderError::Unavailable {
                    operation: "decrypt".into(),
                    source: Arc::new(std::io::Error::other(
                        "every unwrap slot stayed busy until the deadline",
                    )),
                });
            }
        };
        let result = self
            .call(
                "decrypt",
                permit,
                deadline,
                self.inner.decrypt_legacy(record),
            )
            .await;
        drop(slot);
        result
    }

    fn check_legacy(&self, record: &LegacyCiphertext) -> Result<(), ProviderError> {
        self.inner.check_legacy(record)
    }

    async fn health(&self) -> ProviderHealth {
        match (self.inner.health().await, self.breaker_state()) {
            (ProviderHealth::Ok, BreakerState::Open | BreakerState::HalfOpen) => {
                ProviderHealth::Degraded {
                    reason: "circuit breaker open: the key service keeps failing".into(),
                }
            }
            (health, _) => health,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A provider whose unwraps fail, succeed or hang as the test says — a scripted stand-in
    /// for the key service's timing, used only to drive the breaker's state machine. The real
    /// service's behaviour is covered against the Key Vault emulator.
    struct Scripted {
        outcome: Mutex<Outcome>,
        calls: AtomicU32,
        in_flight: AtomicU32,
        most_in_flight: AtomicU32,
    }

    #[derive(Clone, Copy)]
    enum Outcome {
        Ok,
        Down,
        BadWrappedKey,
        Hang,
        Slow(Duration),
    }

    impl Scripted {
        fn new(outcome: Outcome) -> Arc<Self> {
            Arc::new(Self {
                outcome: Mutex::new(outcome),
                calls: AtomicU32::new(0),
                in_flight: AtomicU32::new(0),
                most_in_flight: AtomicU32::new(0),
            })
        }
        fn set(&self, outcome: Outcome) {
            *self.outcome.lock().unwrap() = outcome;
        }
        async fn answer<T>(&self, ok: T) -> Result<T, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let outcome = *self.outcome.lock().unwrap();
            let result = match outcome {
                Outcome::Ok => Ok(ok),
                Outcome::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    Ok(ok)
                }
                Outcome::Down => Err(ProviderError::Unavailable {
                    operation: "test".into(),
                    source: Arc::new(std::io::Error::other("connection refused")),
                }),
                Outcome::BadWrappedKey => Err(ProviderError::UnwrapFailed {
                    version: "1".into(),
                }),
                Outcome::Hang => std::future::pending().await,
            };
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        }
    }

    #[async_trait]
    impl KeyProvider for Scripted {
        fn kind(&self) -> &'static str {
            "scripted"
        }
        async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
            self.answer(KeyVersion::new("id", "1").unwrap()).await
        }
        async fn current_key(&self) -> Option<KeyVersion> {
            None
        }
        async fn wrap(&self, _: &KeyVersion, _: &SecretKey) -> Result<Vec<u8>, ProviderError> {
            self.answer(vec![1]).await
        }
        async fn unwrap(&self, _: &str, _: &[u8]) -> Result<SecretKey, ProviderError> {
            self.answer(SecretKey::from_slice(&[7; 32]).unwrap()).await
        }
        async fn health(&self) -> ProviderHealth {
            ProviderHealth::Ok
        }
    }

    fn guarded(inner: &Arc<Scripted>) -> Guarded {
        Guarded::new(
            inner.clone(),
            GuardPolicy {
                max_concurrent_unwraps: 2,
                ..GuardPolicy::DEFAULT
            },
        )
    }

    /// Opens the breaker of `guard`, whose service is down, with the failures that open it.
    async fn fail_until_open(guard: &Guarded) {
        for _ in 0..GuardPolicy::DEFAULT.failure_threshold {
            let _ = guard.unwrap("1", b"w").await;
        }
        assert_eq!(guard.breaker_state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn five_transient_failures_open_the_breaker_and_later_calls_fail_fast() {
        let inner = Scripted::new(Outcome::Down);
        let guard = guarded(&inner);
        for _ in 0..5 {
            assert!(matches!(
                guard.unwrap("1", b"w").await,
                Err(ProviderError::Unavailable { .. })
            ));
        }
        assert_eq!(guard.breaker_state(), BreakerState::Open);
        let error = guard.unwrap("1", b"w").await.err().unwrap().to_string();
        assert!(error.contains("circuit breaker open"), "{error}");
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            5,
            "an open breaker makes no call"
        );
        assert!(matches!(
            guard.health().await,
            ProviderHealth::Degraded { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cool_down_one_trial_decides_and_success_closes() {
        let inner = Scripted::new(Outcome::Down);
        let guard = guarded(&inner);
        fail_until_open(&guard).await;
        tokio::time::advance(GuardPolicy::DEFAULT.open_for).await;
        assert_eq!(guard.breaker_state(), BreakerState::HalfOpen);
        // A failed trial reopens for twice as long.
        assert!(guard.unwrap("1", b"w").await.is_err());
        assert_eq!(inner.calls.load(Ordering::SeqCst), 6);
        tokio::time::advance(GuardPolicy::DEFAULT.open_for).await;
        assert_eq!(guard.breaker_state(), BreakerState::Open);
        tokio::time::advance(GuardPolicy::DEFAULT.open_for).await;
        inner.set(Outcome::Ok);
        assert!(guard.unwrap("1", b"w").await.is_ok());
        assert_eq!(guard.breaker_state(), BreakerState::Closed);
        assert!(matches!(guard.health().await, ProviderHealth::Ok));
    }

    /// Regression: a half-open trial whose caller gave up (kube-apiserver's timeout drops the
    /// future mid-call) kept the trial slot taken, so every later wrap and unwrap was refused
    /// until the next refresh.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_half_open_trial_gives_its_slot_back() {
        let inner = Scripted::new(Outcome::Down);
        let guard = guarded(&inner);
        fail_until_open(&guard).await;
        tokio::time::advance(GuardPolicy::DEFAULT.open_for).await;
        assert_eq!(guard.breaker_state(), BreakerState::HalfOpen);
        inner.set(Outcome::Hang);
        let cancelled =
            tokio::time::timeout(Duration::from_millis(100), guard.unwrap("1", b"w")).await;
        assert!(
            cancelled.is_err(),
            "the trial was still waiting when dropped"
        );
        assert_eq!(inner.calls.load(Ordering::SeqCst), 6);

        inner.set(Outcome::Ok);
        assert!(
            guard.unwrap("1", b"w").await.is_ok(),
            "the next call is admitted as the trial"
        );
        assert_eq!(guard.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_refresh_closes_the_breaker_by_itself() {
        let inner = Scripted::new(Outcome::Down);
        let guard = guarded(&inner);
        fail_until_open(&guard).await;
        assert_eq!(guard.breaker_state(), BreakerState::Open);
        inner.set(Outcome::Ok);
        guard.refresh().await.unwrap();
        assert_eq!(guard.breaker_state(), BreakerState::Closed);
        assert!(guard.unwrap("1", b"w").await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn authoritative_answers_do_not_count_as_failures() {
        let inner = Scripted::new(Outcome::BadWrappedKey);
        let guard = guarded(&inner);
        for _ in 0..20 {
            assert!(matches!(
                guard.unwrap("1", b"w").await,
                Err(ProviderError::UnwrapFailed { .. })
            ));
        }
        assert_eq!(guard.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_service_is_cut_off_at_the_callers_deadline_or_the_cap() {
        let inner = Scripted::new(Outcome::Hang);
        let guard = guarded(&inner);
        let started = Instant::now();
        assert!(matches!(
            guard.unwrap("1", b"w").await,
            Err(ProviderError::Unavailable { .. })
        ));
        assert_eq!(started.elapsed(), GuardPolicy::DEFAULT.call_deadline);

        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        let result = REQUEST_DEADLINE
            .scope(deadline, guard.unwrap("1", b"w"))
            .await;
        assert!(result.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn distinct_unwraps_share_a_bounded_number_of_slots() {
        let inner = Scripted::new(Outcome::Slow(Duration::from_millis(100)));
        let guard = Arc::new(guarded(&inner));
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let guard = Arc::clone(&guard);
                tokio::spawn(async move { guard.unwrap("1", b"w").await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(inner.most_in_flight.load(Ordering::SeqCst), 2);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 6);
    }
}
