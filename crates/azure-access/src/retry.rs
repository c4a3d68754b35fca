//! The retry policy for remote calls to Azure — the SDK's own retries are turned off
//! ([`crate::client::client_options`]) so that this is the only one: every remote operation has
//! a deadline (2 s by default, inside kube-apiserver's 3 s call timeout), transient failures are
//! retried with capped exponential backoff and jitter, a Retry-After the service sends is
//! honoured, and nothing ever waits or retries past the deadline.
//!
//! Only failures [`Classified::retryable`] marks transient (429, 408, 5xx, timeouts, dropped
//! connections; see [`crate::errors`]) are retried; an authoritative answer (403, 404, 400) is
//! returned at once. The caller's error type stays the caller's: this module only needs to build
//! one from [`DeadlineExceeded`]. It logs the operation and the error's `Display`, which must
//! therefore never carry a token or a secret.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use rand::TryRng;
use rand::rngs::SysRng;
use tokio::time::Instant;

/// When and how often a remote operation is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time one remote operation may take, every attempt and wait included.
    pub deadline: Duration,
    /// The first backoff; each retry doubles it, up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest backoff between two attempts (a Retry-After may ask for longer).
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// 2 s per operation, backoff from 50 ms doubling to at most 500 ms.
    pub const DEFAULT: Self = Self {
        deadline: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    };

    /// The backoff before retry number `retry` (0 for the first retry): the capped exponential
    /// value, of which the upper half is random ("equal jitter") so that replicas that failed
    /// together do not retry together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponential = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        let half = exponential / 2;
        let mut random = [0u8; 8];
        // Without randomness the backoff is merely not jittered; that is no reason to fail.
        let fraction = match SysRng.try_fill_bytes(&mut random) {
            Ok(()) => u64::from_le_bytes(random) as f64 / u64::MAX as f64,
            Err(_) => 1.0,
        };
        half + half.mul_f64(fraction)
    }
}

/// The longest Retry-After honoured. A service that asks for longer (or a header that is not
/// meant as a number of seconds) is taken to mean "not before the deadline" — every deadline is
/// far shorter — and a wait this long can still be added to any clock reading without overflow.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `wait`, at most [`MAX_RETRY_AFTER`].
pub fn cap_retry_after(wait: Duration) -> Duration {
    wait.min(MAX_RETRY_AFTER)
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A failed attempt: the caller's error for it, and whether trying again may help.
#[derive(Debug)]
pub struct Classified<E> {
    /// What the caller sees if no later attempt succeeds.
    pub error: E,
    /// Whether the failure is transient.
    pub retryable: bool,
    /// How long the service asked the caller to wait (Retry-After), if it said.
    pub retry_after: Option<Duration>,
}

impl<E> Classified<E> {
    /// A failure that retrying will not fix.
    pub fn fatal(error: E) -> Self {
        Self {
            error,
            retryable: false,
            retry_after: None,
        }
    }

    /// A transient failure; a Retry-After is capped at [`MAX_RETRY_AFTER`].
    pub fn transient(error: E, retry_after: Option<Duration>) -> Self {
        Self {
            error,
            retryable: true,
            retry_after: retry_after.map(cap_retry_after),
        }
    }
}

/// The operation's deadline passed while an attempt was still waiting for an answer.
#[derive(Debug, Clone)]
pub struct DeadlineExceeded {
    /// What was being done, as the caller named it.
    pub operation: String,
    /// The deadline.
    pub deadline: Duration,
    /// Attempts started, the unfinished one included.
    pub attempts: u32,
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no answer within the {:?} deadline ({} attempt{})",
            self.deadline,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Runs `attempt` until it succeeds, fails for good, or the policy's deadline would pass.
///
/// Each attempt gets the time that is left; a retry happens only if its backoff (or the
/// service's Retry-After, if longer) ends before the deadline. Returns the last failure's
/// error, or the caller's error made from [`DeadlineExceeded`] when an attempt was cut off by
/// the deadline.
pub async fn run<T, E, F, Fut>(
    policy: &RetryPolicy,
    operation: &str,
    mut attempt: F,
) -> Result<T, E>
where
    E: From<DeadlineExceeded> + fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Classified<E>>>,
{
    let give_up = Instant::now() + policy.deadline;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = give_up.saturating_duration_since(Instant::now());
        let failure = match tokio::time::timeout(left, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(failure)) => failure,
            Err(_elapsed) => {
                return Err(E::from(DeadlineExceeded {
                    operation: operation.to_owned(),
                    deadline: policy.deadline,
                    attempts,
                }));
            }
        };
        if !failure.retryable {
            return Err(failure.error);
        }
        let wait = policy
            .backoff(attempts - 1)
            .max(failure.retry_after.unwrap_or_default());
        // Checked: a wait too long to add to the clock is certainly past the deadline.
        if Instant::now()
            .checked_add(wait)
            .is_none_or(|retry_at| retry_at >= give_up)
        {
            tracing::debug!(
                operation,
                attempts,
                error = %failure.error,
                "giving up: the next retry would pass the deadline"
            );
            return Err(failure.error);
        }
        tracing::debug!(
            operation,
            attempts,
            wait_ms = wait.as_millis() as u64,
            error = %failure.error,
            "retrying a transient failure"
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A caller's error type, as the products have their own.
    #[derive(Debug)]
    enum TestError {
        Unavailable,
        Refused,
        Throttled(Option<Duration>),
        Deadline(DeadlineExceeded),
    }

    impl fmt::Display for TestError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl From<DeadlineExceeded> for TestError {
        fn from(deadline: DeadlineExceeded) -> Self {
            Self::Deadline(deadline)
        }
    }

    fn unavailable() -> TestError {
        TestError::Unavailable
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let policy = RetryPolicy::DEFAULT;
        for (retry, ceiling) in [(0, 50), (1, 100), (2, 200), (3, 400), (4, 500), (30, 500)] {
            let ceiling = Duration::from_millis(ceiling);
            for _ in 0..50 {
                let backoff = policy.backoff(retry);
                assert!(
                    backoff >= ceiling / 2 && backoff <= ceiling,
                    "{retry}: {backoff:?}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = run(&RetryPolicy::DEFAULT, "test", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(Classified::transient(unavailable(), None))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = run(&RetryPolicy::DEFAULT, "test", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Classified::fatal(TestError::Refused)) }
        })
        .await;
        assert!(matches!(result, Err(TestError::Refused)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_past_the_deadline_fails_at_once_with_it() {
        let started = Instant::now();
        let result: Result<(), _> = run(&RetryPolicy::DEFAULT, "test", || async {
            Err(Classified::transient(
                TestError::Throttled(Some(Duration::from_secs(5))),
                Some(Duration::from_secs(5)),
            ))
        })
        .await;
        assert!(matches!(
            result,
            Err(TestError::Throttled(Some(wait))) if wait == Duration::from_secs(5)
        ));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    /// Regression: a Retry-After too large to add to the clock panicked (`Instant + Duration`)
    /// inside the unwrap task.
    #[tokio::test(start_paused = true)]
    async fn a_retry_after_too_long_for_the_clock_fails_at_once_without_panicking() {
        for wait in [Duration::MAX, Duration::from_secs(u64::MAX)] {
            let started = Instant::now();
            let result: Result<(), _> = run(&RetryPolicy::DEFAULT, "test", || async move {
                Err(Classified {
                    error: unavailable(),
                    retryable: true,
                    retry_after: Some(wait),
                })
            })
            .await;
            assert!(matches!(result, Err(TestError::Unavailable)));
            assert_eq!(started.elapsed(), Duration::ZERO);
        }
    }

    #[test]
    fn a_transient_failure_caps_its_retry_after() {
        let capped =
            Classified::transient(unavailable(), Some(Duration::from_secs(99_999_999_999_999)));
        assert_eq!(capped.retry_after, Some(MAX_RETRY_AFTER));
        let kept = Classified::transient(unavailable(), Some(Duration::from_secs(3)));
        assert_eq!(kept.retry_after, Some(Duration::from_secs(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_within_the_deadline_is_waited_for() {
        let started = Instant::now();
        let calls = AtomicU32::new(0);
        let result = run(&RetryPolicy::DEFAULT, "test", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(Classified::transient(
                        unavailable(),
                        Some(Duration::from_secs(1)),
                    ))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(result.is_ok());
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_is_cut_off_at_the_deadline() {
        let started = Instant::now();
        let result: Result<(), _> = run(&RetryPolicy::DEFAULT, "test", || {
            std::future::pending::<Result<(), Classified<TestError>>>()
        })
        .await;
        assert_eq!(started.elapsed(), RetryPolicy::DEFAULT.deadline);
        match result {
            Err(TestError::Deadline(deadline)) => {
                assert_eq!(deadline.operation, "test");
                assert!(deadline.to_string().contains("deadline"), "{deadline}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn persistent_transient_failures_end_before_the_deadline() {
        let started = Instant::now();
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = run(&RetryPolicy::DEFAULT, "test", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(Classified::transient(unavailable(), None))
            }
        })
        .await;
        // Either the last failure, or the deadline cutting off an attempt: never a success.
        assert!(matches!(
            result,
            Err(TestError::Unavailable | TestError::Deadline(_))
        ));
        assert!(started.elapsed() <= RetryPolicy::DEFAULT.deadline);
        assert!(calls.load(Ordering::SeqCst) >= 3);
    }
}
