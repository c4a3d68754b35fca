//! Fault injection, throttling budgets and call accounting: the test decides which requests are
//! delayed, throttled, answered with a server error (or any error code) or dropped without an
//! answer; it may set a request budget per action and window, past which requests are
//! throttled with `x-acs-retry-after`; and it reads how many requests each action received and
//! how many authenticated reads each secret or parameter name received.
//!
//! Rules are applied by `emulator_support::faults` (in order; latencies add up; the first
//! matching non-latency rule decides; a rule with a `count` is used that many times); the budget
//! is spent only by requests no rule decided. Time is `tokio::time::Instant`, so tests may pause
//! the clock.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use emulator_support::faults::{self, Effect, Rule};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::ApiError;

/// What happens to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Delay the answer.
    Latency {
        /// Milliseconds.
        millis: u64,
    },
    /// Answer the product's throttling error (KMS `Rejected.Throttling` 429; OOS and STS
    /// `Throttling.User` 400), with `x-acs-retry-after` only when given.
    Throttle {
        /// Milliseconds for `x-acs-retry-after`.
        #[serde(default)]
        retry_after_millis: Option<u64>,
    },
    /// Answer a server error: 500 `InternalFailure`, 503 `ServiceUnavailableTemporary`, any
    /// other status `InternalFailure` with that status.
    Status {
        /// The HTTP status, 500-599.
        status: u16,
    },
    /// Answer any error.
    Error {
        /// The HTTP status.
        status: u16,
        /// The `Code`.
        code: String,
        /// The `Message`.
        #[serde(default)]
        message: Option<String>,
    },
    /// Close the connection without an answer.
    DropConnection,
}

/// A fault for requests of one action (or all), optionally one secret or parameter name, a
/// number of times (or until cleared).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The action (`GetSecretValue`, `GetSecretParameter`, `AssumeRoleWithOIDC`,
    /// `EcsMetadata`, …); every action when absent.
    #[serde(default)]
    pub action: Option<String>,
    /// The secret or parameter name; every name when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The fault.
    pub fault: Fault,
    /// How many requests it applies to; unlimited when absent.
    #[serde(default)]
    pub count: Option<u32>,
}

impl FaultRule {
    /// A rule for every request of `action`.
    pub fn on(action: &str, fault: Fault) -> Self {
        Self {
            action: Some(action.to_owned()),
            name: None,
            fault,
            count: None,
        }
    }

    /// A rule for every request.
    pub fn always(fault: Fault) -> Self {
        Self {
            action: None,
            name: None,
            fault,
            count: None,
        }
    }

    /// Narrows the rule to one secret or parameter name.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Limits the rule to the next `count` matching requests.
    pub fn times(mut self, count: u32) -> Self {
        self.count = Some(count);
        self
    }
}

impl Rule for FaultRule {
    type Operation = str;
    type Verdict = Verdict;

    /// Actions and names match exactly, as the gateway's do.
    fn applies(&self, action: &str, name: Option<&str>) -> bool {
        self.action.as_deref().is_none_or(|a| a == action)
            && self
                .name
                .as_deref()
                .is_none_or(|wanted| name == Some(wanted))
    }

    fn effect(&self) -> Effect<Verdict> {
        Effect::Decide(match &self.fault {
            Fault::Latency { millis } => return Effect::Delay(Duration::from_millis(*millis)),
            Fault::Throttle { retry_after_millis } => Verdict::Throttle {
                retry_after_millis: *retry_after_millis,
            },
            Fault::Status { status } => Verdict::Error(server_error(*status)),
            Fault::Error {
                status,
                code,
                message,
            } => Verdict::Error(ApiError::new(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                code.clone(),
                message
                    .clone()
                    .unwrap_or_else(|| "An error injected by the emulator.".to_owned()),
            )),
            Fault::DropConnection => Verdict::Drop,
        })
    }

    fn remaining(&mut self) -> &mut Option<u32> {
        &mut self.count
    }
}

/// A request budget: at most `requests` per action per fixed window; further requests are
/// throttled with `x-acs-retry-after` = the milliseconds left in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleBudget {
    /// Requests allowed per action per window.
    pub requests: u32,
    /// The window, in milliseconds (1000 by default).
    #[serde(default = "one_second")]
    pub window_millis: u64,
    /// The actions it applies to; every action when empty.
    #[serde(default)]
    pub actions: Vec<String>,
}

fn one_second() -> u64 {
    1000
}

impl ThrottleBudget {
    /// `requests` per second for every action.
    pub fn per_second(requests: u32) -> Self {
        Self {
            requests,
            window_millis: 1000,
            actions: Vec::new(),
        }
    }
}

/// The fate of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Proceed,
    /// Answer the product's throttling error.
    Throttle {
        /// `x-acs-retry-after`, milliseconds.
        retry_after_millis: Option<u64>,
    },
    /// Answer this error.
    Error(ApiError),
    /// Close the connection.
    Drop,
}

/// Counts of one action's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Every request of the action.
    pub requests: u64,
    /// Answered 2xx.
    pub succeeded: u64,
    /// Answered with an error (including injected and throttled ones).
    pub failed: u64,
    /// Dropped without an answer.
    pub dropped: u64,
}

/// Authenticated reads of one name by one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadCount {
    /// `GetSecretValue`, `ListSecretVersionIds` or `GetSecretParameter`.
    pub action: String,
    /// The secret or parameter name (an ARN's name part).
    pub name: String,
    /// Authenticated requests, including throttled and faulted ones.
    pub requests: u64,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Succeeded,
    /// Any other answer.
    Failed,
    /// No answer.
    Dropped,
}

/// Rules, budget and counters of one emulator.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
    budget: Option<ThrottleBudget>,
    windows: HashMap<String, (Instant, u32)>,
    counts: BTreeMap<String, OpCounts>,
    reads: BTreeMap<(String, String), u64>,
}

impl Faults {
    /// Adds a rule.
    pub fn add(&mut self, rule: FaultRule) {
        self.rules.push(rule);
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The rules still in force.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    /// Sets or removes the budget.
    pub fn set_budget(&mut self, budget: Option<ThrottleBudget>) {
        self.budget = budget;
        self.windows.clear();
    }

    /// The budget in force.
    pub fn budget(&self) -> Option<ThrottleBudget> {
        self.budget.clone()
    }

    /// Decides a request's latency and fate, consuming counted rules and budget.
    pub fn plan(&mut self, action: &str, name: Option<&str>) -> (Duration, Verdict) {
        let (latency, verdict) = faults::plan(&mut self.rules, action, name);
        let verdict = verdict.unwrap_or_else(|| self.spend(action));
        (latency, verdict)
    }

    fn spend(&mut self, action: &str) -> Verdict {
        let Some(budget) = &self.budget else {
            return Verdict::Proceed;
        };
        if !budget.actions.is_empty() && !budget.actions.iter().any(|a| a == action) {
            return Verdict::Proceed;
        }
        let window = Duration::from_millis(budget.window_millis.max(1));
        let now = Instant::now();
        let entry = self.windows.entry(action.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        if entry.1 < budget.requests {
            entry.1 += 1;
            return Verdict::Proceed;
        }
        let left = window.saturating_sub(now.duration_since(entry.0));
        Verdict::Throttle {
            retry_after_millis: Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1)),
        }
    }

    /// Counts a request.
    pub fn count_request(&mut self, action: &str) {
        self.counts.entry(action.to_owned()).or_default().requests += 1;
    }

    /// Counts how a request ended.
    pub fn count_outcome(&mut self, action: &str, outcome: Outcome) {
        let counts = self.counts.entry(action.to_owned()).or_default();
        match outcome {
            Outcome::Succeeded => counts.succeeded += 1,
            Outcome::Failed => counts.failed += 1,
            Outcome::Dropped => counts.dropped += 1,
        }
    }

    /// Counts an authenticated read of a name.
    pub fn count_read(&mut self, action: &str, name: &str) {
        *self
            .reads
            .entry((action.to_owned(), name.to_owned()))
            .or_default() += 1;
    }

    /// One action's counts.
    pub fn counts(&self, action: &str) -> OpCounts {
        self.counts.get(action).copied().unwrap_or_default()
    }

    /// Every action's counts.
    pub fn all_counts(&self) -> BTreeMap<String, OpCounts> {
        self.counts.clone()
    }

    /// Reads of `name` by `action`.
    pub fn reads(&self, action: &str, name: &str) -> u64 {
        self.reads
            .get(&(action.to_owned(), name.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Every read counter.
    pub fn all_reads(&self) -> Vec<ReadCount> {
        self.reads
            .iter()
            .map(|((action, name), requests)| ReadCount {
                action: action.clone(),
                name: name.clone(),
                requests: *requests,
            })
            .collect()
    }

    /// Zeroes every counter.
    pub fn reset_counts(&mut self) {
        self.counts.clear();
        self.reads.clear();
    }
}

fn server_error(status: u16) -> ApiError {
    match status {
        503 => ApiError::service_unavailable(),
        _ => {
            let error = ApiError::internal_failure();
            match StatusCode::from_u16(status) {
                Ok(status) if status.is_server_error() => {
                    ApiError::new(status, error.code(), error.message())
                }
                _ => error,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_rules_are_used_up_and_names_narrow_them() {
        let mut faults = Faults::default();
        faults.add(
            FaultRule::on("GetSecretValue", Fault::Status { status: 503 })
                .named("db")
                .times(1),
        );
        assert_eq!(
            faults.plan("GetSecretValue", Some("other")).1,
            Verdict::Proceed
        );
        let (_, verdict) = faults.plan("GetSecretValue", Some("db"));
        let Verdict::Error(error) = verdict else {
            panic!("expected an error, got {verdict:?}");
        };
        assert_eq!(error.code(), "ServiceUnavailableTemporary");
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            faults.plan("GetSecretValue", Some("db")).1,
            Verdict::Proceed
        );
        assert!(faults.rules().is_empty());
    }

    #[test]
    fn latencies_add_up_and_the_first_decision_wins() {
        let mut faults = Faults::default();
        faults.add(FaultRule::always(Fault::Latency { millis: 5 }));
        faults.add(FaultRule::always(Fault::Latency { millis: 7 }));
        faults.add(FaultRule::always(Fault::Status { status: 500 }));
        faults.add(FaultRule::always(Fault::DropConnection).times(1));
        let (latency, verdict) = faults.plan("GetSecretParameter", None);
        assert_eq!(latency, Duration::from_millis(12));
        assert!(matches!(verdict, Verdict::Error(e) if e.code() == "InternalFailure"));
        assert_eq!(faults.rules().len(), 4, "the drop rule was not used");
    }

    #[tokio::test(start_paused = true)]
    async fn budgets_throttle_per_action_and_window() {
        let mut faults = Faults::default();
        faults.set_budget(Some(ThrottleBudget {
            requests: 2,
            window_millis: 1000,
            actions: vec!["GetSecretValue".to_owned()],
        }));
        assert_eq!(faults.plan("GetSecretValue", None).1, Verdict::Proceed);
        assert_eq!(faults.plan("GetSecretValue", None).1, Verdict::Proceed);
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(
            faults.plan("GetSecretValue", None).1,
            Verdict::Throttle {
                retry_after_millis: Some(600)
            }
        );
        assert_eq!(faults.plan("GetSecretParameter", None).1, Verdict::Proceed);
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(faults.plan("GetSecretValue", None).1, Verdict::Proceed);
    }

    #[test]
    fn reads_are_counted_by_action_and_name() {
        let mut faults = Faults::default();
        faults.count_read("GetSecretValue", "db");
        faults.count_read("GetSecretValue", "db");
        faults.count_read("GetSecretParameter", "db");
        assert_eq!(faults.reads("GetSecretValue", "db"), 2);
        assert_eq!(faults.all_reads().len(), 2);
        faults.reset_counts();
        assert_eq!(faults.reads("GetSecretValue", "db"), 0);
    }
}
