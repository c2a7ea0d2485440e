//! Webhook subscriptions and their durable outbox (`webhook_delivery`).
//!
//! **Promise:** an incident event is put in the outbox in the transaction that makes the
//! event, one row per enabled webhook subscribed to it; so an event that happened is never
//! lost to a crash or a restart, and one that was rolled back is never sent.

use rusqlite::{Connection, params};

use super::StoreError;

/// The events a webhook may subscribe to.
pub const EVENTS: &[&str] = &[
    "incident.opened",
    "incident.acknowledged",
    "incident.resolved",
    "incident.reopened",
];

/// Queues `payload` (the exact JSON body to sign and send) for every enabled webhook
/// subscribed to `event`, due at once.
pub(crate) fn enqueue(
    conn: &Connection,
    now_ms: i64,
    event: &str,
    incident_id: i64,
    payload: &serde_json::Value,
) -> Result<usize, StoreError> {
    let body = serde_json::to_string(payload)
        .map_err(|e| StoreError::Invalid(format!("webhook payload does not encode: {e}")))?;
    let queued = conn
        .prepare_cached(
            "INSERT INTO webhook_delivery
               (webhook_id, event, incident_id, payload, created_at, state, next_attempt_at)
             SELECT w.id, ?1, ?2, ?3, ?4, 'pending', ?4 FROM webhook w
             WHERE w.enabled AND EXISTS (SELECT 1 FROM json_each(w.events) e WHERE e.value = ?1)",
        )?
        .execute(params![event, incident_id, body, now_ms])?;
    Ok(queued)
}
