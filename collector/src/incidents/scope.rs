//! Which CIs a rule or a maintenance window applies to. A scope is a conjunction: every
//! condition it sets must hold, and a scope that sets none matches every CI.

use serde::{Deserialize, Serialize};

use crate::store::Refusal;

/// Most entries in `classes` or `ci_ids`, and the longest `name_pattern`.
pub const MAX_CLASSES: usize = 64;
pub const MAX_CI_IDS: usize = 10_000;
pub const MAX_PATTERN_CHARS: usize = 255;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// CI classes (`computer`, ...); empty: any class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Criticalities, 1 (highest) to 4; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criticality: Vec<i64>,
    /// A pattern over the CI name, case-insensitive, where `*` is any run of characters and
    /// `?` one character.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_pattern: Option<String>,
    /// Only these CIs; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ci_ids: Vec<i64>,
}

/// What a scope looks at in a CI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiFacts {
    pub id: i64,
    pub class: String,
    pub name: String,
    pub criticality: i64,
}

impl Scope {
    pub fn matches(&self, ci: &CiFacts) -> bool {
        (self.classes.is_empty() || self.classes.contains(&ci.class))
            && (self.criticality.is_empty() || self.criticality.contains(&ci.criticality))
            && (self.ci_ids.is_empty() || self.ci_ids.contains(&ci.id))
            && self
                .name_pattern
                .as_deref()
                .is_none_or(|p| glob_matches(p, &ci.name))
    }

    /// Whether the scope sets no condition (so it matches every CI).
    pub fn is_everything(&self) -> bool {
        self == &Scope::default()
    }

    /// Checks the bounds; the refusal's message starts with the field it is about.
    pub fn validate(&self) -> Result<(), Refusal> {
        let invalid = |field: &str, message: String| {
            Err(Refusal::InvalidField(format!("{field}: {message}")))
        };
        if self.classes.len() > MAX_CLASSES {
            return invalid("scope.classes", format!("at most {MAX_CLASSES} classes"));
        }
        if let Some(bad) = self
            .classes
            .iter()
            .find(|c| crate::store::admin::check_class(c).is_err())
        {
            return invalid(
                "scope.classes",
                format!("{bad:?} is not a class of CI a rule or window can be about"),
            );
        }
        if let Some(bad) = self.criticality.iter().find(|c| !(1..=4).contains(*c)) {
            return invalid(
                "scope.criticality",
                format!("criticality is 1 (highest) to 4, not {bad}"),
            );
        }
        if self.ci_ids.len() > MAX_CI_IDS {
            return invalid("scope.ci_ids", format!("at most {MAX_CI_IDS} CI ids"));
        }
        if let Some(bad) = self.ci_ids.iter().find(|id| **id < 1) {
            return invalid("scope.ci_ids", format!("{bad} is not a CI id"));
        }
        if let Some(p) = &self.name_pattern
            && (p.is_empty() || p.chars().count() > MAX_PATTERN_CHARS)
        {
            return invalid(
                "scope.name_pattern",
                format!("a pattern of 1 to {MAX_PATTERN_CHARS} characters"),
            );
        }
        Ok(())
    }
}

/// Whether `text` matches `pattern`, ignoring case: `*` is any run of characters (also none),
/// `?` exactly one. Linear in practice: the classic two-pointer match with one backtrack point.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci(id: i64, class: &str, name: &str, criticality: i64) -> CiFacts {
        CiFacts {
            id,
            class: class.into(),
            name: name.into(),
            criticality,
        }
    }

    #[test]
    fn globs() {
        for (p, t) in [
            ("web-*", "web-1"),
            ("WEB-*", "web-1"),
            ("*", ""),
            ("*db*", "prod-db-2"),
            ("h?st", "host"),
            ("a*b*c", "aXbYbZc"),
        ] {
            assert!(glob_matches(p, t), "{p} {t}");
        }
        for (p, t) in [
            ("web-*", "db-1"),
            ("h?st", "hst"),
            ("a*b*c", "aXbYbZ"),
            ("", "x"),
        ] {
            assert!(!glob_matches(p, t), "{p} {t}");
        }
    }

    #[test]
    fn every_condition_must_hold() {
        let web = ci(7, "computer", "web-1", 2);
        assert!(Scope::default().matches(&web));
        let scope = Scope {
            classes: vec!["computer".into()],
            criticality: vec![1, 2],
            name_pattern: Some("web-*".into()),
            ci_ids: vec![],
        };
        assert!(scope.matches(&web));
        assert!(!scope.matches(&ci(7, "computer", "web-1", 3)));
        assert!(!scope.matches(&ci(7, "database", "web-1", 2)));
        assert!(!scope.matches(&ci(7, "computer", "db-1", 2)));
        let only = Scope {
            ci_ids: vec![8],
            ..Scope::default()
        };
        assert!(!only.matches(&web));
        assert!(only.matches(&ci(8, "computer", "x", 4)));
    }

    #[test]
    fn bounds_name_the_field() {
        let field = |scope: Scope| match scope.validate() {
            Err(Refusal::InvalidField(m)) => m.split(':').next().unwrap().to_owned(),
            other => panic!("{other:?}"),
        };
        let bad = Scope {
            criticality: vec![5],
            ..Scope::default()
        };
        assert_eq!(field(bad), "scope.criticality");
        let bad = Scope {
            classes: vec!["Not A Class".into()],
            ..Scope::default()
        };
        assert_eq!(field(bad), "scope.classes");
        let bad = Scope {
            ci_ids: vec![0],
            ..Scope::default()
        };
        assert_eq!(field(bad), "scope.ci_ids");
        assert!(Scope::default().validate().is_ok());
    }
}
