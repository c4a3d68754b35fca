//! The fault-rule engine both emulators share: rules are consulted in the order they were
//! added; the latencies of matching rules add up; the first matching rule that decides (an
//! error, a throttle, a dropped connection) decides the request's fate, and later deciding rules
//! are left untouched. A rule with a count is used that many times and then forgotten.
//!
//! It never builds an answer: what a rule matches and what its verdict is belong to each
//! emulator's `FaultRule`.

use std::time::Duration;

/// What a matching rule does to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<V> {
    /// Delay the answer by this much.
    Delay(Duration),
    /// Decide the request's fate.
    Decide(V),
}

/// A fault rule as the engine sees it: each emulator's `FaultRule`.
pub trait Rule {
    /// What a request names as its operation (an enum, or an action name).
    type Operation: ?Sized;
    /// The fate a deciding rule gives a request.
    type Verdict;
    /// Whether the rule applies to a request of `operation` on the object `name`.
    fn applies(&self, operation: &Self::Operation, name: Option<&str>) -> bool;
    /// What the rule does.
    fn effect(&self) -> Effect<Self::Verdict>;
    /// How many more requests it applies to; `None`: until cleared.
    fn remaining(&mut self) -> &mut Option<u32>;
}

/// Applies `rules` (in the order added) to one request: the added latency and its fate
/// (`None`: no rule decided). Uses up one count of every rule that applied and forgets the
/// rules used up.
pub fn plan<R: Rule>(
    rules: &mut Vec<R>,
    operation: &R::Operation,
    name: Option<&str>,
) -> (Duration, Option<R::Verdict>) {
    let mut latency = Duration::ZERO;
    let mut verdict = None;
    for rule in rules.iter_mut() {
        if *rule.remaining() == Some(0) || !rule.applies(operation, name) {
            continue;
        }
        match rule.effect() {
            Effect::Delay(delay) => latency += delay,
            Effect::Decide(_) if verdict.is_some() => continue,
            Effect::Decide(decided) => verdict = Some(decided),
        }
        if let Some(count) = rule.remaining().as_mut() {
            *count -= 1;
        }
    }
    rules.retain_mut(|rule| *rule.remaining() != Some(0));
    (latency, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule on an operation number: `millis` > 0 delays, else decides `verdict`.
    #[derive(Debug, Clone)]
    struct TestRule {
        operation: u8,
        millis: u64,
        verdict: char,
        count: Option<u32>,
    }

    impl Rule for TestRule {
        type Operation = u8;
        type Verdict = char;
        fn applies(&self, operation: &u8, _name: Option<&str>) -> bool {
            self.operation == *operation
        }
        fn effect(&self) -> Effect<char> {
            match self.millis {
                0 => Effect::Decide(self.verdict),
                millis => Effect::Delay(Duration::from_millis(millis)),
            }
        }
        fn remaining(&mut self) -> &mut Option<u32> {
            &mut self.count
        }
    }

    fn rule(operation: u8, millis: u64, verdict: char, count: Option<u32>) -> TestRule {
        TestRule {
            operation,
            millis,
            verdict,
            count,
        }
    }

    #[test]
    fn latencies_add_up_the_first_decision_wins_and_counts_run_out() {
        let mut rules = vec![
            rule(1, 5, '-', Some(1)),
            rule(1, 7, '-', None),
            rule(1, 0, 'a', Some(1)),
            rule(1, 0, 'b', Some(1)),
            rule(2, 0, 'c', None),
        ];
        assert_eq!(
            plan(&mut rules, &1, None),
            (Duration::from_millis(12), Some('a'))
        );
        assert_eq!(
            plan(&mut rules, &1, None),
            (Duration::from_millis(7), Some('b'))
        );
        assert_eq!(plan(&mut rules, &1, None), (Duration::from_millis(7), None));
        assert_eq!(rules.len(), 2);
        assert_eq!(plan(&mut rules, &2, None), (Duration::ZERO, Some('c')));
    }

    #[test]
    fn a_rule_added_with_a_zero_count_never_applies() {
        let mut rules = vec![rule(1, 0, 'a', Some(0))];
        assert_eq!(plan(&mut rules, &1, None), (Duration::ZERO, None));
        assert!(rules.is_empty());
    }
}
