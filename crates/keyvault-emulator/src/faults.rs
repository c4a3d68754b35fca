//! Fault injection and call accounting: the test decides which requests are delayed, throttled,
//! failed with a 5xx or dropped without an answer, optionally enforces the service's real
//! per-10-second request budgets, and reads how many calls each operation received and how
//! many reads each secret and certificate version received.
//!
//! Rules are applied by `emulator_support::faults` (in order; latencies add up; the first
//! matching non-latency rule decides; a rule with a `count` is used that many times); a rule
//! may be narrowed to one object name, matched case-insensitively. Time is
//! `tokio::time::Instant`, so tests may pause the clock.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use emulator_support::faults::{self, Effect, Rule};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::ServiceError;
use crate::model::{ObjectKind, Operation};

/// What happens to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Delay the answer.
    Latency {
        /// How long, in milliseconds.
        millis: u64,
    },
    /// Answer 429 Throttled, with `Retry-After` only if given (the real service sends none).
    Throttle {
        /// Seconds for a `Retry-After` header.
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Answer with this status (a 5xx) and a service error body.
    Status {
        /// The HTTP status, 500-599.
        status: u16,
    },
    /// Close the TCP connection without writing a response.
    DropConnection,
}

/// A fault applied to requests of one operation (or all), a number of times (or until
/// cleared).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The operation; every operation when absent.
    #[serde(default)]
    pub operation: Option<Operation>,
    /// The object (key, secret or certificate) name, case-insensitive; every name when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The fault.
    pub fault: Fault,
    /// How many requests it applies to; unlimited when absent.
    #[serde(default)]
    pub count: Option<u32>,
}

impl FaultRule {
    /// A rule for every request of `operation`.
    pub fn on(operation: Operation, fault: Fault) -> Self {
        Self {
            operation: Some(operation),
            name: None,
            fault,
            count: None,
        }
    }

    /// A rule for every request.
    pub fn always(fault: Fault) -> Self {
        Self {
            operation: None,
            name: None,
            fault,
            count: None,
        }
    }

    /// Narrows the rule to requests on the object `name`.
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
    type Operation = Operation;
    type Verdict = Verdict;

    /// Object names match case-insensitively, as the service's names do.
    fn applies(&self, operation: &Operation, name: Option<&str>) -> bool {
        self.operation.is_none_or(|op| op == *operation)
            && self
                .name
                .as_deref()
                .is_none_or(|wanted| name.is_some_and(|n| n.eq_ignore_ascii_case(wanted)))
    }

    fn effect(&self) -> Effect<Verdict> {
        Effect::Decide(match &self.fault {
            Fault::Latency { millis } => return Effect::Delay(Duration::from_millis(*millis)),
            Fault::Throttle { retry_after } => {
                Verdict::Respond(ServiceError::throttled(*retry_after))
            }
            Fault::Status { status } => Verdict::Respond(ServiceError::server_error(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            )),
            Fault::DropConnection => Verdict::Drop,
        })
    }

    fn remaining(&mut self) -> &mut Option<u32> {
        &mut self.count
    }
}

/// Per-window request budgets. [`ThrottleLimits::azure`] holds the service's published
/// limits per vault per 10 seconds; tests may lower them to reach throttling in a few calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleLimits {
    /// Transactions on RSA-2048 HSM keys.
    pub rsa2048_hsm: u32,
    /// Transactions on RSA-2048 software keys.
    pub rsa2048_software: u32,
    /// Transactions on RSA-3072 HSM keys.
    pub rsa3072_hsm: u32,
    /// Transactions on RSA-3072 software keys.
    pub rsa3072_software: u32,
    /// Transactions on RSA-4096 HSM keys.
    pub rsa4096_hsm: u32,
    /// Transactions on RSA-4096 software keys.
    pub rsa4096_software: u32,
    /// Key creations of HSM keys.
    pub create_hsm: u32,
    /// Key creations of software keys.
    pub create_software: u32,
    /// Every other vault transaction (list, delete, recover, ...).
    pub other: u32,
    /// Secret reads (`GET /secrets/{n}/{v}`). The service counts them among "all other
    /// transactions"; the emulator gives them their own budget so a test can throttle them alone.
    pub secret_get: u32,
    /// Secret writes (`PUT /secrets/{n}`): the service's secret CREATE limit.
    pub secret_set: u32,
    /// The window length in seconds.
    pub window_seconds: u64,
    /// `Retry-After` seconds on a throttled answer; none, like the service, by default.
    pub retry_after: Option<u64>,
}

impl ThrottleLimits {
    /// The service's limits per vault per 10 seconds.
    pub const fn azure() -> Self {
        Self {
            rsa2048_hsm: 2000,
            rsa2048_software: 4000,
            rsa3072_hsm: 500,
            rsa3072_software: 1000,
            rsa4096_hsm: 250,
            rsa4096_software: 500,
            create_hsm: 10,
            create_software: 20,
            other: 4000,
            secret_get: 4000,
            secret_set: 300,
            window_seconds: 10,
            retry_after: None,
        }
    }

    fn limit(&self, class: BudgetClass) -> Option<u32> {
        Some(match class {
            BudgetClass::Rsa { bits, hsm } => match (bits, hsm) {
                (..=2048, true) => self.rsa2048_hsm,
                (..=2048, false) => self.rsa2048_software,
                (..=3072, true) => self.rsa3072_hsm,
                (..=3072, false) => self.rsa3072_software,
                (_, true) => self.rsa4096_hsm,
                (_, false) => self.rsa4096_software,
            },
            BudgetClass::Create { hsm: true } => self.create_hsm,
            BudgetClass::Create { hsm: false } => self.create_software,
            BudgetClass::Other => self.other,
            BudgetClass::SecretGet => self.secret_get,
            BudgetClass::SecretSet => self.secret_set,
            BudgetClass::Unthrottled => return None,
        })
    }
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self::azure()
    }
}

/// Which budget a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetClass {
    /// A transaction on an RSA key of `bits`.
    Rsa {
        /// Key size.
        bits: usize,
        /// HSM-protected.
        hsm: bool,
    },
    /// A key creation (create, import, rotate).
    Create {
        /// HSM-protected.
        hsm: bool,
    },
    /// Any other vault transaction.
    Other,
    /// A secret read.
    SecretGet,
    /// A secret write.
    SecretSet,
    /// Not throttled (Managed HSM crypto).
    Unthrottled,
}

/// The fate of one request, decided before it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Proceed,
    /// Answer with this error instead.
    Respond(ServiceError),
    /// Close the connection without an answer.
    Drop,
}

/// Counts of the calls one operation received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Every request routed to the operation.
    pub requests: u64,
    /// Answered 401 with the challenge because no token was sent.
    pub challenged: u64,
    /// Answered with a 2xx.
    pub succeeded: u64,
    /// Answered with any other error (including injected and throttled ones).
    pub failed: u64,
    /// Dropped without an answer.
    pub dropped: u64,
}

/// How a request ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 401 challenge (no token).
    Challenged,
    /// 2xx.
    Succeeded,
    /// Any other answer.
    Failed,
    /// No answer.
    Dropped,
}

/// The fault plan, the budgets and the counters of one emulator.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
    limits: Option<ThrottleLimits>,
    window_start: Option<Instant>,
    spent: HashMap<BudgetClass, u32>,
    counters: BTreeMap<Operation, OpCounts>,
    reads: BTreeMap<ReadKey, u64>,
}

/// Which object version a read asked for: kind, folded name, folded version ("" = latest).
type ReadKey = (ObjectKind, String, String);

/// How often one version of a secret or certificate was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadCount {
    /// Secret or certificate.
    pub kind: ObjectKind,
    /// The name as requested, lowercased (names are case-insensitive).
    pub name: String,
    /// The version as requested, lowercased; `"latest"` for the empty version segment.
    pub version: String,
    /// Authenticated read requests (including throttled and faulted ones).
    pub requests: u64,
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

    /// Turns budget throttling on (with these limits) or off.
    pub fn set_limits(&mut self, limits: Option<ThrottleLimits>) {
        self.limits = limits;
        self.window_start = None;
        self.spent.clear();
    }

    /// The budget limits in force.
    pub fn limits(&self) -> Option<ThrottleLimits> {
        self.limits
    }

    /// Decides the injected latency and the fate of a request, consuming counted rules.
    /// `name` is the object the request names, if any.
    pub fn plan(&mut self, operation: Operation, name: Option<&str>) -> (Duration, Verdict) {
        let (latency, verdict) = faults::plan(&mut self.rules, &operation, name);
        (latency, verdict.unwrap_or(Verdict::Proceed))
    }

    /// Charges one request to a budget; 429 Throttled when the window's budget is spent. Secret
    /// budgets always answer with `Retry-After`: the configured seconds, else the seconds left
    /// in the window.
    pub fn charge(&mut self, class: BudgetClass, now: Instant) -> Result<(), ServiceError> {
        let Some(limits) = self.limits else {
            return Ok(());
        };
        let Some(limit) = limits.limit(class) else {
            return Ok(());
        };
        let window = Duration::from_secs(limits.window_seconds.max(1));
        match self.window_start {
            Some(start) if now.duration_since(start) < window => {}
            _ => {
                self.window_start = Some(now);
                self.spent.clear();
            }
        }
        let spent = self.spent.entry(class).or_insert(0);
        if *spent >= limit {
            let retry_after = match class {
                BudgetClass::SecretGet | BudgetClass::SecretSet => {
                    let elapsed = self
                        .window_start
                        .map_or(Duration::ZERO, |start| now.duration_since(start));
                    let left = window.saturating_sub(elapsed).as_secs_f64().ceil() as u64;
                    Some(limits.retry_after.unwrap_or(left.max(1)))
                }
                _ => limits.retry_after,
            };
            return Err(ServiceError::throttled(retry_after));
        }
        *spent += 1;
        Ok(())
    }

    /// Counts a request arriving.
    pub fn count_request(&mut self, operation: Operation) {
        self.counters.entry(operation).or_default().requests += 1;
    }

    /// Counts how a request ended.
    pub fn count_outcome(&mut self, operation: Operation, outcome: Outcome) {
        let counts = self.counters.entry(operation).or_default();
        match outcome {
            Outcome::Challenged => counts.challenged += 1,
            Outcome::Succeeded => counts.succeeded += 1,
            Outcome::Failed => counts.failed += 1,
            Outcome::Dropped => counts.dropped += 1,
        }
    }

    /// The counts of one operation.
    pub fn counts(&self, operation: Operation) -> OpCounts {
        self.counters.get(&operation).copied().unwrap_or_default()
    }

    /// Every operation's counts (operations never called are absent).
    pub fn all_counts(&self) -> BTreeMap<Operation, OpCounts> {
        self.counters.clone()
    }

    /// Counts an authenticated read of a secret or certificate version (`""`: the latest).
    pub fn count_read(&mut self, kind: ObjectKind, name: &str, version: &str) {
        let key = (
            kind,
            name.to_ascii_lowercase(),
            version.to_ascii_lowercase(),
        );
        *self.reads.entry(key).or_default() += 1;
    }

    /// Reads of one object: `version` `None` sums every version asked for, `Some("")` counts
    /// the reads of the latest (empty version segment), `Some(v)` the reads that named `v`.
    pub fn reads(&self, kind: ObjectKind, name: &str, version: Option<&str>) -> u64 {
        let name = name.to_ascii_lowercase();
        self.reads
            .iter()
            .filter(|((k, n, v), _)| {
                *k == kind
                    && *n == name
                    && version.is_none_or(|wanted| v.eq_ignore_ascii_case(wanted))
            })
            .map(|(_, count)| count)
            .sum()
    }

    /// Every read counter.
    pub fn all_reads(&self) -> Vec<ReadCount> {
        self.reads
            .iter()
            .map(|((kind, name, version), requests)| ReadCount {
                kind: *kind,
                name: name.clone(),
                version: if version.is_empty() {
                    "latest".to_owned()
                } else {
                    version.clone()
                },
                requests: *requests,
            })
            .collect()
    }

    /// Zeroes the counters (operations and reads).
    pub fn reset_counts(&mut self) {
        self.counters.clear();
        self.reads.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_rules_expire_and_latency_adds_up() {
        let mut faults = Faults::default();
        faults.add(FaultRule::always(Fault::Latency { millis: 5 }).times(2));
        faults.add(FaultRule::on(
            Operation::UnwrapKey,
            Fault::Latency { millis: 7 },
        ));
        faults.add(FaultRule::on(Operation::UnwrapKey, Fault::DropConnection).times(1));
        faults.add(FaultRule::on(Operation::UnwrapKey, Fault::Status { status: 503 }).times(1));

        let (latency, verdict) = faults.plan(Operation::UnwrapKey, None);
        assert_eq!(latency, Duration::from_millis(12));
        assert_eq!(verdict, Verdict::Drop);

        let (latency, verdict) = faults.plan(Operation::UnwrapKey, None);
        assert_eq!(latency, Duration::from_millis(12));
        let Verdict::Respond(error) = verdict else {
            panic!("expected a 503")
        };
        assert_eq!(error.status().as_u16(), 503);

        let (latency, verdict) = faults.plan(Operation::UnwrapKey, None);
        assert_eq!(latency, Duration::from_millis(7));
        assert_eq!(verdict, Verdict::Proceed);
        assert_eq!(
            faults.plan(Operation::GetKey, None),
            (Duration::ZERO, Verdict::Proceed)
        );
    }

    #[test]
    fn throttle_rule_sends_retry_after_only_when_asked() {
        let mut faults = Faults::default();
        faults.add(FaultRule::always(Fault::Throttle { retry_after: None }).times(1));
        faults.add(
            FaultRule::always(Fault::Throttle {
                retry_after: Some(2),
            })
            .times(1),
        );
        let Verdict::Respond(first) = faults.plan(Operation::WrapKey, None).1 else {
            panic!("expected 429")
        };
        let Verdict::Respond(second) = faults.plan(Operation::WrapKey, None).1 else {
            panic!("expected 429")
        };
        assert_eq!((first.retry_after(), second.retry_after()), (None, Some(2)));
        assert_eq!(first.code(), "Throttled");
    }

    #[test]
    fn budgets_reset_each_window() {
        let mut faults = Faults::default();
        let limits = ThrottleLimits {
            rsa2048_software: 2,
            ..ThrottleLimits::azure()
        };
        faults.set_limits(Some(limits));
        let class = BudgetClass::Rsa {
            bits: 2048,
            hsm: false,
        };
        let start = Instant::now();
        assert!(faults.charge(class, start).is_ok());
        assert!(faults.charge(class, start).is_ok());
        assert_eq!(faults.charge(class, start).unwrap_err().code(), "Throttled");
        assert!(faults.charge(BudgetClass::Other, start).is_ok());
        assert!(faults.charge(BudgetClass::Unthrottled, start).is_ok());
        assert!(
            faults
                .charge(class, start + Duration::from_secs(10))
                .is_ok()
        );
    }

    #[test]
    fn a_named_rule_faults_only_that_object() {
        let mut faults = Faults::default();
        faults.add(FaultRule::on(Operation::GetSecret, Fault::Status { status: 503 }).named("Db"));
        assert_eq!(
            faults.plan(Operation::GetSecret, Some("other")).1,
            Verdict::Proceed
        );
        assert_eq!(faults.plan(Operation::GetSecret, None).1, Verdict::Proceed);
        assert!(matches!(
            faults.plan(Operation::GetSecret, Some("db")).1,
            Verdict::Respond(_)
        ));
    }

    #[test]
    fn secret_budgets_answer_with_retry_after() {
        let mut faults = Faults::default();
        faults.set_limits(Some(ThrottleLimits {
            secret_get: 1,
            ..ThrottleLimits::azure()
        }));
        let start = Instant::now();
        assert!(faults.charge(BudgetClass::SecretGet, start).is_ok());
        let error = faults
            .charge(BudgetClass::SecretGet, start + Duration::from_millis(2500))
            .unwrap_err();
        assert_eq!(
            (error.status().as_u16(), error.retry_after()),
            (429, Some(8))
        );
        assert!(faults.charge(BudgetClass::SecretSet, start).is_ok());
    }

    #[test]
    fn reads_are_counted_per_name_and_version() {
        let mut faults = Faults::default();
        faults.count_read(ObjectKind::Secret, "Db", "");
        faults.count_read(ObjectKind::Secret, "db", "ABC");
        faults.count_read(ObjectKind::Secret, "db", "abc");
        faults.count_read(ObjectKind::Certificate, "db", "");
        assert_eq!(faults.reads(ObjectKind::Secret, "DB", None), 3);
        assert_eq!(faults.reads(ObjectKind::Secret, "db", Some("")), 1);
        assert_eq!(faults.reads(ObjectKind::Secret, "db", Some("abc")), 2);
        assert_eq!(faults.all_reads().len(), 3);
        assert_eq!(faults.all_reads()[0].version, "latest");
        faults.reset_counts();
        assert_eq!(faults.reads(ObjectKind::Secret, "db", None), 0);
    }

    #[test]
    fn the_real_limits_are_the_published_ones() {
        let azure = ThrottleLimits::azure();
        assert_eq!((azure.rsa2048_hsm, azure.rsa2048_software), (2000, 4000));
        assert_eq!((azure.rsa3072_hsm, azure.rsa3072_software), (500, 1000));
        assert_eq!((azure.rsa4096_hsm, azure.rsa4096_software), (250, 500));
        assert_eq!((azure.create_hsm, azure.create_software), (10, 20));
        assert_eq!((azure.secret_get, azure.secret_set), (4000, 300));
        assert_eq!(azure.retry_after, None);
    }
}
