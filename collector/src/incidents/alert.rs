//! The alert state machine of one (CI, rule, dimension): pure, so every path is unit-tested
//! without a database.
//!
//! ```text
//!            breach                 breach held `for`
//!   ok ───────────────▶ pending ─────────────────────▶ firing ──▶ Open
//!    ▲                   │ no breach                  │  ▲
//!    └───────────────────┘                      clears │  │ stops clearing (Rebreach if it breaches)
//!    ▲                                                 ▼  │
//!    └────────────── Resolve ◀── clear held `clear_for` recovering
//! ```
//!
//! Times are series times (the samples' `collected_at`), so a spooled batch that arrives late
//! is judged by when it was measured. A sample no newer than the last one judged changes
//! nothing. A gap longer than `for` (or `clear_for`) between samples restarts the wait: two
//! breaching samples an hour apart are not an hour of breach. A value the machine did not
//! report changes nothing; a dimension that is gone (an unmounted filesystem) counts as clear.

use super::rules::Rule;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Firing,
    Recovering,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Firing => "firing",
            Phase::Recovering => "recovering",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        [Phase::Pending, Phase::Firing, Phase::Recovering]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

/// A state other than ok (ok has no row).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub phase: Phase,
    /// When the phase began.
    pub since: i64,
    /// The newest sample judged.
    pub last_ts: i64,
    pub value: Option<f64>,
    /// The worst value of this episode.
    pub peak: Option<f64>,
    pub incident_id: Option<i64>,
}

/// What a sample says of one dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    Value(f64),
    /// The machine reported the dimension but not this value.
    Unknown,
    /// The dimension is not in the sample any more.
    Gone,
}

/// What the engine must do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// The breach was held for `for`: open (or reopen) the incident.
    Open,
    /// Breaching again after it had started to recover: a timeline event on the open incident.
    Rebreach,
    /// Clear held for `clear_for`: resolve the incident.
    Resolve,
}

/// One step: the state after the sample at `ts`, and what to do.
pub fn step(
    rule: &Rule,
    prev: Option<&Alert>,
    ts: i64,
    reading: Reading,
) -> (Option<Alert>, Action) {
    if let Some(prev) = prev
        && ts <= prev.last_ts
    {
        return (Some(prev.clone()), Action::None);
    }
    let value = match reading {
        Reading::Value(v) => Some(v),
        Reading::Unknown => {
            return (
                prev.map(|p| Alert {
                    last_ts: ts,
                    ..p.clone()
                }),
                Action::None,
            );
        }
        Reading::Gone => None,
    };
    let breach = value.is_some_and(|v| rule.breaches(v));
    let clear = value.is_none_or(|v| rule.clears(v));
    let worse = |peak: Option<f64>| match (peak, value) {
        (Some(p), Some(v)) if rule.operator.rising() => Some(p.max(v)),
        (Some(p), Some(v)) => Some(p.min(v)),
        (p, v) => p.or(v),
    };
    let state = |phase, since, peak, incident_id| Alert {
        phase,
        since,
        last_ts: ts,
        value,
        peak,
        incident_id,
    };
    let Some(prev) = prev else {
        if !breach {
            return (None, Action::None);
        }
        if rule.for_ms == 0 {
            return (Some(state(Phase::Firing, ts, value, None)), Action::Open);
        }
        return (Some(state(Phase::Pending, ts, value, None)), Action::None);
    };
    let gap = ts - prev.last_ts;
    match prev.phase {
        Phase::Pending if !breach => (None, Action::None),
        Phase::Pending => {
            let since = if gap > rule.for_ms { ts } else { prev.since };
            if ts - since >= rule.for_ms {
                let fired = state(Phase::Firing, ts, worse(prev.peak), None);
                (Some(fired), Action::Open)
            } else {
                (
                    Some(state(Phase::Pending, since, worse(prev.peak), None)),
                    Action::None,
                )
            }
        }
        Phase::Firing | Phase::Recovering if clear => {
            let since = match prev.phase {
                Phase::Recovering if gap <= rule.clear_for_ms => prev.since,
                _ => ts,
            };
            if ts - since >= rule.clear_for_ms {
                (None, Action::Resolve)
            } else {
                let recovering = state(Phase::Recovering, since, prev.peak, prev.incident_id);
                (Some(recovering), Action::None)
            }
        }
        Phase::Firing => (
            Some(state(
                Phase::Firing,
                prev.since,
                worse(prev.peak),
                prev.incident_id,
            )),
            Action::None,
        ),
        Phase::Recovering => {
            let firing = state(Phase::Firing, ts, worse(prev.peak), prev.incident_id);
            let action = if breach {
                Action::Rebreach
            } else {
                Action::None
            };
            (Some(firing), action)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::rules::{Metric, Operator, Severity};
    use crate::incidents::scope::Scope;
    use time::OffsetDateTime;

    const MIN: i64 = 60_000;

    fn rule(for_ms: i64, clear_for_ms: i64) -> Rule {
        Rule {
            id: 1,
            name: "fs".into(),
            metric: Metric::FsUsedPercent,
            dimension: None,
            scope: Scope::default(),
            operator: Operator::Gt,
            threshold: 90.0,
            for_ms,
            clear_threshold: Some(85.0),
            clear_for_ms,
            severity: Severity::High,
            enabled: true,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// Feeds one value a minute from t = 0 and answers the actions with their minute.
    fn run(rule: &Rule, values: &[Option<f64>]) -> (Option<Alert>, Vec<(i64, Action)>) {
        let mut state = None;
        let mut actions = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let reading = v.map_or(Reading::Gone, Reading::Value);
            let (next, action) = step(rule, state.as_ref(), i as i64 * MIN, reading);
            if action != Action::None {
                actions.push((i as i64, action));
            }
            state = next;
        }
        (state, actions)
    }

    fn values(v: &[f64]) -> Vec<Option<f64>> {
        v.iter().copied().map(Some).collect()
    }

    #[test]
    fn pending_that_never_fires() {
        let (state, actions) = run(&rule(5 * MIN, 5 * MIN), &values(&[95.0, 95.0, 95.0, 80.0]));
        assert_eq!((state, actions), (None, vec![]));
    }

    #[test]
    fn fires_when_held_for_the_whole_duration() {
        let (state, actions) = run(&rule(5 * MIN, 5 * MIN), &values(&[95.0; 7]));
        assert_eq!(actions, vec![(5, Action::Open)]);
        let state = state.unwrap();
        assert_eq!((state.phase, state.peak), (Phase::Firing, Some(95.0)));
    }

    #[test]
    fn no_delay_fires_at_once() {
        let (_, actions) = run(&rule(0, 0), &values(&[95.0, 80.0]));
        assert_eq!(actions, vec![(0, Action::Open), (1, Action::Resolve)]);
    }

    #[test]
    fn the_band_between_clear_and_threshold_keeps_it_firing() {
        // Flapping around 90 % never resolves: only below 85 % counts as recovery.
        let v = [95.0, 91.0, 89.0, 91.0, 88.0, 92.0, 87.0, 86.0, 89.0, 91.0];
        let (state, actions) = run(&rule(0, 2 * MIN), &values(&v));
        assert_eq!(actions, vec![(0, Action::Open)]);
        assert_eq!(state.unwrap().phase, Phase::Firing);
    }

    #[test]
    fn recovery_must_hold_for_clear_for() {
        let r = rule(0, 2 * MIN);
        // Clears at 1, breaks the recovery at 2 (a re-breach), clears from 3 and holds to 5.
        let (state, actions) = run(&r, &values(&[95.0, 80.0, 96.0, 80.0, 80.0, 80.0]));
        assert_eq!(
            actions,
            vec![
                (0, Action::Open),
                (2, Action::Rebreach),
                (5, Action::Resolve)
            ]
        );
        assert_eq!(state, None);
        // Back into the band (not a breach) interrupts recovery without a re-breach event.
        let (_, actions) = run(&r, &values(&[95.0, 80.0, 88.0, 80.0, 80.0, 80.0]));
        assert_eq!(actions, vec![(0, Action::Open), (5, Action::Resolve)]);
    }

    #[test]
    fn a_gone_dimension_counts_as_clear() {
        let (_, actions) = run(&rule(0, 0), &[Some(95.0), None]);
        assert_eq!(actions, vec![(0, Action::Open), (1, Action::Resolve)]);
    }

    #[test]
    fn unknown_values_and_old_samples_change_nothing() {
        let r = rule(2 * MIN, 0);
        let (pending, _) = step(&r, None, 0, Reading::Value(95.0));
        let (same, action) = step(&r, pending.as_ref(), MIN, Reading::Unknown);
        assert_eq!(action, Action::None);
        assert_eq!(same.as_ref().unwrap().since, 0);
        let (fired, action) = step(&r, same.as_ref(), 2 * MIN, Reading::Value(95.0));
        assert_eq!(action, Action::Open);
        // A late sample from before the last one judged is ignored.
        let (after, action) = step(&r, fired.as_ref(), MIN, Reading::Value(10.0));
        assert_eq!((after, action), (fired, Action::None));
    }

    #[test]
    fn a_gap_longer_than_for_restarts_the_wait() {
        let r = rule(5 * MIN, 0);
        let (pending, _) = step(&r, None, 0, Reading::Value(95.0));
        let (pending, action) = step(&r, pending.as_ref(), 60 * MIN, Reading::Value(95.0));
        assert_eq!(action, Action::None);
        assert_eq!(pending.as_ref().unwrap().since, 60 * MIN);
        let (_, action) = step(&r, pending.as_ref(), 65 * MIN, Reading::Value(95.0));
        assert_eq!(action, Action::Open);
    }

    #[test]
    fn falling_rules_track_the_lowest_value() {
        let mut r = rule(0, 0);
        r.operator = Operator::Lt;
        r.threshold = 10.0;
        r.clear_threshold = Some(15.0);
        let (state, actions) = run(&r, &values(&[5.0, 3.0, 12.0]));
        assert_eq!(actions, vec![(0, Action::Open)]);
        assert_eq!(state.unwrap().peak, Some(3.0));
    }
}
