//! Priority from impact and urgency (the ITIL 3 x 3 matrix) and the service-level targets
//! each priority sets.
//!
//! | impact \ urgency | high | medium | low |
//! |------------------|------|--------|-----|
//! | high             | P1   | P2     | P3  |
//! | medium           | P2   | P3     | P4  |
//! | low              | P3   | P4     | P5  |
//!
//! Urgency comes from the rule's severity: `critical` is high, `high` and `medium` are medium,
//! `low` is low. Impact comes from criticality (1 is high, 2 and 3 medium, 4 low): the CI's
//! own, raised to that of the most critical business service depending on it.

use serde::{Deserialize, Serialize};

use super::rules::Severity;

/// High, medium or low, stored as 1, 2, 3.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    High = 1,
    Medium = 2,
    Low = 3,
}

impl Level {
    pub fn as_i64(self) -> i64 {
        self as i64
    }

    pub fn from_i64(n: i64) -> Option<Level> {
        match n {
            1 => Some(Level::High),
            2 => Some(Level::Medium),
            3 => Some(Level::Low),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::High => "high",
            Level::Medium => "medium",
            Level::Low => "low",
        }
    }
}

pub fn urgency(severity: Severity) -> Level {
    match severity {
        Severity::Critical => Level::High,
        Severity::High | Severity::Medium => Level::Medium,
        Severity::Low => Level::Low,
    }
}

/// The impact of criticality 1 (highest) to 4.
pub fn impact_of_criticality(criticality: i64) -> Level {
    match criticality {
        ..=1 => Level::High,
        2 | 3 => Level::Medium,
        _ => Level::Low,
    }
}

/// The CI's impact, raised by the criticality of the most critical business service that
/// depends on it, if any.
pub fn impact(ci_criticality: i64, service_criticality: Option<i64>) -> Level {
    let own = impact_of_criticality(ci_criticality);
    service_criticality.map_or(own, |s| own.min(impact_of_criticality(s)))
}

/// The matrix: 1 (P1) to 5 (P5).
pub fn priority(impact: Level, urgency: Level) -> i64 {
    impact.as_i64() + urgency.as_i64() - 1
}

/// `P1` to `P5`.
pub fn label(priority: i64) -> String {
    format!("P{priority}")
}

/// `P1`..`P5` (or `p1`..`p5`) as 1..5.
pub fn parse_label(text: &str) -> Option<i64> {
    let n: i64 = text.strip_prefix(['P', 'p'])?.parse().ok()?;
    (1..=5).contains(&n).then_some(n)
}

/// Response and resolution targets of one priority, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub response_ms: i64,
    pub resolution_ms: i64,
}

/// The targets of P1 to P5, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets(pub [Target; 5]);

impl Targets {
    pub fn of(&self, priority: i64) -> Target {
        self.0[(priority.clamp(1, 5) - 1) as usize]
    }
}

impl Default for Targets {
    /// P1 15 min / 4 h, P2 30 min / 8 h, P3 2 h / 1 d, P4 8 h / 3 d, P5 1 d / 7 d.
    fn default() -> Self {
        const MIN: i64 = 60_000;
        const HOUR: i64 = 60 * MIN;
        let t = |response_ms, resolution_ms| Target {
            response_ms,
            resolution_ms,
        };
        Targets([
            t(15 * MIN, 4 * HOUR),
            t(30 * MIN, 8 * HOUR),
            t(2 * HOUR, 24 * HOUR),
            t(8 * HOUR, 72 * HOUR),
            t(24 * HOUR, 168 * HOUR),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix() {
        use Level::*;
        let table = [
            (High, High, 1),
            (High, Medium, 2),
            (High, Low, 3),
            (Medium, High, 2),
            (Medium, Medium, 3),
            (Medium, Low, 4),
            (Low, High, 3),
            (Low, Medium, 4),
            (Low, Low, 5),
        ];
        for (i, u, p) in table {
            assert_eq!(priority(i, u), p, "{i:?} {u:?}");
        }
    }

    #[test]
    fn a_dependent_service_raises_impact_never_lowers_it() {
        assert_eq!(impact(3, None), Level::Medium);
        assert_eq!(impact(3, Some(1)), Level::High);
        assert_eq!(impact(1, Some(4)), Level::High);
        assert_eq!(impact(4, Some(2)), Level::Medium);
        assert_eq!(urgency(Severity::Critical), Level::High);
        assert_eq!(urgency(Severity::Low), Level::Low);
    }

    #[test]
    fn labels() {
        assert_eq!(label(2), "P2");
        assert_eq!(parse_label("P5"), Some(5));
        assert_eq!(parse_label("p1"), Some(1));
        for bad in ["P0", "P6", "2", "PP1", ""] {
            assert_eq!(parse_label(bad), None, "{bad}");
        }
        assert_eq!(Targets::default().of(1).response_ms, 15 * 60_000);
    }
}
