//! The incident engine's pure parts: rules and the values a health sample gives them
//! ([`rules`]), which CIs a rule or a maintenance window covers ([`scope`]), the alert state
//! machine ([`alert`]), and priority and service levels ([`priority`]). The SQL that runs
//! them inside the ingest transaction, and the silence check, live in `store::incidents`.

pub mod alert;
pub mod priority;
pub mod rules;
pub mod scope;

/// Engine settings from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// A breach firing again this soon after its incident was resolved reopens it.
    pub reopen_window_ms: i64,
    /// Response and resolution targets per priority.
    pub sla: priority::Targets,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            reopen_window_ms: 3_600_000,
            sla: priority::Targets::default(),
        }
    }
}
