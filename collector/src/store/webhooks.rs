//! Webhook subscriptions and their durable outbox (`webhook_delivery`).
//!
//! # Promises
//!
//! - **Queued with the event:** an incident event is put in the outbox in the transaction that
//!   makes the event, one row per enabled webhook subscribed to it; so an event that happened
//!   is never lost to a crash or a restart, and one that was rolled back is never sent.
//! - **A row's state is only moved forward by the delivery task** (`pending` to `delivered`,
//!   or to `failed` after the last attempt) and back to `pending` only by an admin's retry of a
//!   `failed` row. An attempt is recorded only if the row still has the attempt count it was
//!   read with, so a row retried or deleted meanwhile is left as the admin left it.
//! - **A disabled webhook gets no new rows**, and its pending rows wait (they are not sent)
//!   until it is enabled again. Deleting a webhook deletes its rows (`ON DELETE CASCADE`).
//! - **The secret is read only to sign** (`due_webhook_deliveries`); no listing reads it.
//!
//! Deliveries are sent at the webhook's URL and signed with its secret as they are when the
//! attempt is made: a changed URL or a rotated secret applies to rows still pending.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::model::{
    DeliveryAttempt, DeliveryFilter, DueDelivery, NewWebhook, Page, Refusable, Refusal, Webhook,
    WebhookDelivery, WebhookPatch,
};
use super::{Store, StoreError, from_ms, to_ms};

/// The events a webhook may subscribe to.
pub const EVENTS: &[&str] = &[
    "incident.opened",
    "incident.acknowledged",
    "incident.resolved",
    "incident.reopened",
];

/// The states of an outbox row.
pub const STATES: &[&str] = &["pending", "delivered", "failed"];

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

impl Store {
    /// Creates a webhook; `created_by` is `api:<token name>`.
    pub async fn create_webhook(
        &self,
        new: NewWebhook,
        created_by: String,
        now: time::OffsetDateTime,
    ) -> Result<Webhook, StoreError> {
        self.writer
            .run(move |conn| create(conn, &new, &created_by, to_ms(now)))
            .await
    }

    /// Webhooks by ascending id, after the id `after`.
    pub async fn list_webhooks(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Page<Webhook, i64>, StoreError> {
        self.reads
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhook w WHERE w.id > ?1 ORDER BY w.id LIMIT ?2"
                ))?;
                let mut items = stmt
                    .query_map(
                        params![after.unwrap_or(0), i64::from(limit) + 1],
                        read_webhook,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(page(&mut items, limit, |w| w.id))
            })
            .await
    }

    pub async fn get_webhook(&self, id: i64) -> Result<Option<Webhook>, StoreError> {
        self.reads.run(move |conn| load(conn, id)).await
    }

    /// Changes a webhook; answers it as it now is. A patch that changes nothing writes
    /// nothing (`updated_at` stays).
    pub async fn update_webhook(
        &self,
        id: i64,
        patch: WebhookPatch,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<Webhook>, StoreError> {
        self.writer
            .run(move |conn| update(conn, id, &patch, to_ms(now)))
            .await
    }

    /// Deletes a webhook and its outbox rows.
    pub async fn delete_webhook(&self, id: i64) -> Result<Refusable<()>, StoreError> {
        self.writer
            .run(move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM webhook WHERE id = ?1")?
                    .execute([id])?;
                Ok(if deleted == 0 {
                    Err(no_such_webhook(id))
                } else {
                    Ok(())
                })
            })
            .await
    }

    /// A page of one webhook's deliveries, newest first; `None` when there is no such webhook.
    pub async fn list_webhook_deliveries(
        &self,
        filter: DeliveryFilter,
    ) -> Result<Option<Page<WebhookDelivery, i64>>, StoreError> {
        self.reads
            .run(move |conn| {
                let tx = conn.unchecked_transaction()?;
                if !exists(&tx, filter.webhook_id)? {
                    return Ok(None);
                }
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_delivery
                     WHERE webhook_id = ?1 AND id < ?2 AND (?3 IS NULL OR state = ?3)
                     ORDER BY id DESC LIMIT ?4"
                ))?;
                let mut items = stmt
                    .query_map(
                        params![
                            filter.webhook_id,
                            filter.before.unwrap_or(i64::MAX),
                            filter.state,
                            i64::from(filter.limit) + 1
                        ],
                        read_delivery,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                drop(stmt);
                tx.finish()?;
                Ok(Some(page(&mut items, filter.limit, |d| d.id)))
            })
            .await
    }

    /// Makes a `failed` delivery `pending` again, due at `now`, with its attempts counted
    /// from zero (its last status and error stay until the next attempt). 404 when the
    /// webhook or the delivery (of that webhook) does not exist, 409 unless it is `failed`.
    pub async fn retry_webhook_delivery(
        &self,
        webhook_id: i64,
        delivery_id: i64,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<WebhookDelivery>, StoreError> {
        self.writer
            .run(move |conn| retry(conn, webhook_id, delivery_id, to_ms(now)))
            .await
    }

    /// Pending deliveries due at `now` of enabled webhooks, oldest first: at most `limit`, and
    /// at most `per_webhook` of one webhook, so one webhook's backlog does not hold the
    /// others back.
    pub async fn due_webhook_deliveries(
        &self,
        now: time::OffsetDateTime,
        limit: u32,
        per_webhook: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.reads
            .run(move |conn| due(conn, to_ms(now), limit, per_webhook))
            .await
    }

    /// Records the outcomes of a pass's attempts in one transaction; answers how many rows
    /// were still as they were read (the others were retried or deleted meanwhile and are
    /// left alone).
    pub async fn record_webhook_attempts(
        &self,
        attempts: Vec<DeliveryAttempt>,
    ) -> Result<usize, StoreError> {
        self.writer
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "UPDATE webhook_delivery SET state = ?3, attempts = ?2 + 1,
                        next_attempt_at = ?4, last_attempt_at = ?5, last_status = ?6,
                        last_error = ?7, delivered_at = CASE WHEN ?3 = 'delivered' THEN ?5 END
                     WHERE id = ?1 AND state = 'pending' AND attempts = ?2",
                )?;
                let mut recorded = 0;
                for a in &attempts {
                    recorded += stmt.execute(params![
                        a.id,
                        a.attempts_before,
                        a.state,
                        to_ms(a.next_attempt_at),
                        to_ms(a.at),
                        a.status,
                        a.error,
                    ])?;
                }
                Ok(recorded)
            })
            .await
    }
}

/// The columns [`read_webhook`] reads, over `webhook w`: the row, then its outbox summary.
/// Each subquery reads only this webhook's rows (index `webhook_delivery_hook`).
const WEBHOOK_COLUMNS: &str = "w.id, w.url, w.events, w.enabled, w.description, w.created_by, \
     w.created_at, w.updated_at, \
     (SELECT count(*) FROM webhook_delivery d WHERE d.webhook_id = w.id AND d.state = 'pending'), \
     (SELECT count(*) FROM webhook_delivery d WHERE d.webhook_id = w.id AND d.state = 'failed'), \
     (SELECT d.last_error FROM webhook_delivery d \
        WHERE d.webhook_id = w.id AND d.last_error IS NOT NULL \
        ORDER BY d.last_attempt_at DESC, d.id DESC LIMIT 1), \
     (SELECT max(d.last_attempt_at) FROM webhook_delivery d \
        WHERE d.webhook_id = w.id AND d.last_error IS NOT NULL), \
     (SELECT max(d.delivered_at) FROM webhook_delivery d WHERE d.webhook_id = w.id)";

fn read_webhook(row: &Row<'_>) -> rusqlite::Result<Webhook> {
    let events: String = row.get(2)?;
    let events: Vec<String> = serde_json::from_str(&events).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Text,
            Box::new(StoreError::Corrupt(format!("webhook events: {e}"))),
        )
    })?;
    Ok(Webhook {
        id: row.get(0)?,
        url: row.get(1)?,
        events,
        enabled: row.get(3)?,
        description: row.get(4)?,
        created_by: row.get(5)?,
        created_at: from_ms(row.get(6)?),
        updated_at: from_ms(row.get(7)?),
        pending: row.get(8)?,
        failed: row.get(9)?,
        last_error: row.get(10)?,
        last_failure_at: row.get::<_, Option<i64>>(11)?.map(from_ms),
        last_delivered_at: row.get::<_, Option<i64>>(12)?.map(from_ms),
    })
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event, incident_id, created_at, state, \
     attempts, next_attempt_at, last_attempt_at, last_status, last_error, delivered_at";

fn read_delivery(row: &Row<'_>) -> rusqlite::Result<WebhookDelivery> {
    let state: String = row.get(5)?;
    let next_attempt_at: i64 = row.get(7)?;
    Ok(WebhookDelivery {
        id: row.get(0)?,
        webhook_id: row.get(1)?,
        event: row.get(2)?,
        incident_id: row.get(3)?,
        created_at: from_ms(row.get(4)?),
        next_attempt_at: (state == "pending").then(|| from_ms(next_attempt_at)),
        state,
        attempts: row.get(6)?,
        last_attempt_at: row.get::<_, Option<i64>>(8)?.map(from_ms),
        last_status: row.get(9)?,
        last_error: row.get(10)?,
        delivered_at: row.get::<_, Option<i64>>(11)?.map(from_ms),
    })
}

/// The first `limit` of `items` (read with one more), and the key of the last one when there
/// was more.
fn page<T>(items: &mut Vec<T>, limit: u32, key: impl Fn(&T) -> i64) -> Page<T, i64> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Page {
        next: if more { items.last().map(&key) } else { None },
        items: std::mem::take(items),
    }
}

fn no_such_webhook(id: i64) -> Refusal {
    Refusal::NotFound(format!("there is no webhook with id {id}"))
}

fn exists(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM webhook WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

fn load(conn: &Connection, id: i64) -> Result<Option<Webhook>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook w WHERE w.id = ?1"
        ))?
        .query_row([id], read_webhook)
        .optional()?)
}

fn events_json(events: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(events)
        .map_err(|e| StoreError::Invalid(format!("webhook events do not encode: {e}")))
}

fn create(
    conn: &Connection,
    new: &NewWebhook,
    created_by: &str,
    now: i64,
) -> Result<Webhook, StoreError> {
    conn.prepare_cached(
        "INSERT INTO webhook (url, secret, events, enabled, description, created_by, created_at,
                              updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(params![
        new.url,
        new.secret,
        events_json(&new.events)?,
        new.enabled,
        new.description,
        created_by,
        now
    ])?;
    let id = conn.last_insert_rowid();
    load(conn, id)?.ok_or_else(|| StoreError::Corrupt(format!("webhook {id} vanished")))
}

fn update(
    conn: &Connection,
    id: i64,
    patch: &WebhookPatch,
    now: i64,
) -> Result<Refusable<Webhook>, StoreError> {
    let current: Option<(String, String, String, bool, Option<String>)> = conn
        .prepare_cached(
            "SELECT url, secret, events, enabled, description FROM webhook WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((url, secret, events, enabled, description)) = current else {
        return Ok(Err(no_such_webhook(id)));
    };
    let new_url = patch.url.clone().unwrap_or(url.clone());
    let new_secret = patch.secret.clone().unwrap_or(secret.clone());
    let new_events = match &patch.events {
        Some(list) => events_json(list)?,
        None => events.clone(),
    };
    let new_enabled = patch.enabled.unwrap_or(enabled);
    let new_description = patch.description.clone().unwrap_or(description.clone());
    let changed = new_url != url
        || new_secret != secret
        || new_events != events
        || new_enabled != enabled
        || new_description != description;
    if changed {
        conn.prepare_cached(
            "UPDATE webhook SET url = ?2, secret = ?3, events = ?4, enabled = ?5,
                description = ?6, updated_at = ?7
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            new_url,
            new_secret,
            new_events,
            new_enabled,
            new_description,
            now
        ])?;
    }
    let webhook =
        load(conn, id)?.ok_or_else(|| StoreError::Corrupt(format!("webhook {id} vanished")))?;
    Ok(Ok(webhook))
}

fn load_delivery(
    conn: &Connection,
    webhook_id: i64,
    id: i64,
) -> Result<Option<WebhookDelivery>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_delivery WHERE id = ?1 AND webhook_id = ?2"
        ))?
        .query_row([id, webhook_id], read_delivery)
        .optional()?)
}

fn retry(
    conn: &Connection,
    webhook_id: i64,
    id: i64,
    now: i64,
) -> Result<Refusable<WebhookDelivery>, StoreError> {
    if !exists(conn, webhook_id)? {
        return Ok(Err(no_such_webhook(webhook_id)));
    }
    let Some(delivery) = load_delivery(conn, webhook_id, id)? else {
        return Ok(Err(Refusal::NotFound(format!(
            "webhook {webhook_id} has no delivery with id {id}"
        ))));
    };
    if delivery.state != "failed" {
        return Ok(Err(Refusal::Conflict(format!(
            "delivery {id} is {}; only a failed delivery can be retried",
            delivery.state
        ))));
    }
    conn.prepare_cached(
        "UPDATE webhook_delivery SET state = 'pending', attempts = 0, next_attempt_at = ?2
         WHERE id = ?1",
    )?
    .execute(params![id, now])?;
    let delivery = load_delivery(conn, webhook_id, id)?
        .ok_or_else(|| StoreError::Corrupt(format!("delivery {id} vanished")))?;
    Ok(Ok(delivery))
}

/// Due rows: read from the partial index `webhook_delivery_due` (pending rows only, so the
/// delivered rows that pile up are never read), materialized first so the planner cannot
/// prefer a walk of every row in `webhook_delivery_hook` order for the window; then each
/// webhook's rows numbered oldest first, and payloads read only for the rows chosen.
const DUE_SQL: &str = "WITH due AS MATERIALIZED (
       SELECT id, webhook_id FROM webhook_delivery
       WHERE state = 'pending' AND next_attempt_at <= ?1)
     SELECT d.id, d.webhook_id, d.event, d.payload, d.attempts, w.url, w.secret
     FROM (SELECT id, webhook_id,
                  row_number() OVER (PARTITION BY webhook_id ORDER BY id) AS nth
           FROM due) q
     JOIN webhook w ON w.id = q.webhook_id
     JOIN webhook_delivery d ON d.id = q.id
     WHERE w.enabled AND q.nth <= ?2
     ORDER BY q.id
     LIMIT ?3";

fn due(
    conn: &Connection,
    now: i64,
    limit: u32,
    per_webhook: u32,
) -> Result<Vec<DueDelivery>, StoreError> {
    let mut stmt = conn.prepare_cached(DUE_SQL)?;
    let rows = stmt
        .query_map(params![now, per_webhook, limit], |r| {
            Ok(DueDelivery {
                id: r.get(0)?,
                webhook_id: r.get(1)?,
                event: r.get(2)?,
                payload: r.get(3)?,
                attempts: r.get(4)?,
                url: r.get(5)?,
                secret: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;
    use time::macros::datetime;

    const T0: time::OffsetDateTime = datetime!(2025-03-01 10:00 UTC);

    fn new_webhook(url: &str, events: &[&str], enabled: bool) -> NewWebhook {
        NewWebhook {
            url: url.to_owned(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            secret: "0123456789abcdef".to_owned(),
            enabled,
            description: None,
        }
    }

    async fn enqueue_now(store: &Store, event: &'static str, incident: i64) -> usize {
        store
            .writer
            .run(move |conn| {
                enqueue(
                    conn,
                    to_ms(T0),
                    event,
                    incident,
                    &serde_json::json!({ "event": event }),
                )
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn enqueue_queues_for_enabled_subscribers_only() {
        let (store, _dir) = temp_store();
        let all = store
            .create_webhook(
                new_webhook("http://127.0.0.1:9/a", EVENTS, true),
                "api:t".into(),
                T0,
            )
            .await
            .unwrap();
        let opened_only = store
            .create_webhook(
                new_webhook("http://127.0.0.1:9/b", &["incident.opened"], true),
                "api:t".into(),
                T0,
            )
            .await
            .unwrap();
        let disabled = store
            .create_webhook(
                new_webhook("http://127.0.0.1:9/c", EVENTS, false),
                "api:t".into(),
                T0,
            )
            .await
            .unwrap();

        assert_eq!(enqueue_now(&store, "incident.opened", 1).await, 2);
        assert_eq!(enqueue_now(&store, "incident.resolved", 1).await, 1);
        // Disabling stops new rows; enabling starts them again.
        store
            .update_webhook(
                all.id,
                WebhookPatch {
                    enabled: Some(false),
                    ..WebhookPatch::default()
                },
                T0,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(enqueue_now(&store, "incident.opened", 2).await, 1);
        let enabled = store
            .update_webhook(
                disabled.id,
                WebhookPatch {
                    enabled: Some(true),
                    ..WebhookPatch::default()
                },
                T0,
            )
            .await
            .unwrap()
            .unwrap();
        assert!(enabled.enabled);
        assert_eq!(enqueue_now(&store, "incident.reopened", 2).await, 1);

        let count = |id: i64| {
            let store_path = store.path().to_owned();
            move || -> i64 {
                Connection::open(store_path)
                    .unwrap()
                    .query_row(
                        "SELECT count(*) FROM webhook_delivery WHERE webhook_id = ?1",
                        [id],
                        |r| r.get(0),
                    )
                    .unwrap()
            }
        };
        assert_eq!(count(all.id)(), 2);
        assert_eq!(count(opened_only.id)(), 2);
        assert_eq!(count(disabled.id)(), 1);
        let hook = store.get_webhook(all.id).await.unwrap().unwrap();
        assert_eq!((hook.pending, hook.failed), (2, 0));
        store.close().await;
    }

    #[tokio::test]
    async fn due_rows_skip_disabled_webhooks_and_are_capped_per_webhook() {
        let (store, _dir) = temp_store();
        let a = store
            .create_webhook(
                new_webhook("http://127.0.0.1:9/a", EVENTS, true),
                "api:t".into(),
                T0,
            )
            .await
            .unwrap();
        for incident in 1..=5 {
            enqueue_now(&store, "incident.opened", incident).await;
        }
        let b = store
            .create_webhook(
                new_webhook("http://127.0.0.1:9/b", EVENTS, true),
                "api:t".into(),
                T0,
            )
            .await
            .unwrap();
        enqueue_now(&store, "incident.opened", 6).await;

        let due = store.due_webhook_deliveries(T0, 64, 3).await.unwrap();
        let picked: Vec<(i64, i64)> = due.iter().map(|d| (d.webhook_id, d.id)).collect();
        assert_eq!(picked, vec![(a.id, 1), (a.id, 2), (a.id, 3), (b.id, 7)]);
        assert_eq!(due[0].secret, "0123456789abcdef");
        assert!(!format!("{:?}", due[0]).contains("0123456789abcdef"));
        // Not yet due a millisecond earlier.
        let before = T0 - time::Duration::milliseconds(1);
        assert!(
            store
                .due_webhook_deliveries(before, 64, 3)
                .await
                .unwrap()
                .is_empty()
        );

        store
            .update_webhook(
                a.id,
                WebhookPatch {
                    enabled: Some(false),
                    ..WebhookPatch::default()
                },
                T0,
            )
            .await
            .unwrap()
            .unwrap();
        let due = store.due_webhook_deliveries(T0, 64, 3).await.unwrap();
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![7]);
        store.close().await;
    }

    #[test]
    fn due_rows_are_read_from_the_pending_index_only() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn, std::path::Path::new(":memory:")).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {DUE_SQL}"))
            .unwrap()
            .query_map(params![0, 16, 64], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let reads: Vec<&String> = plan
            .iter()
            .filter(|step| step.contains("webhook_delivery"))
            .collect();
        assert!(
            reads
                .iter()
                .any(|s| s.contains("USING INDEX webhook_delivery_due")),
            "{plan:#?}"
        );
        assert!(
            reads
                .iter()
                .all(|s| s.contains("webhook_delivery_due") || s.contains("PRIMARY KEY")),
            "{plan:#?}"
        );
    }

    #[tokio::test]
    async fn an_attempt_is_recorded_only_on_the_row_as_it_was_read() {
        let (store, _dir) = temp_store();
        let hook = store
            .create_webhook(
                new_webhook("http://127.0.0.1:9/a", EVENTS, true),
                "api:t".into(),
                T0,
            )
            .await
            .unwrap();
        enqueue_now(&store, "incident.opened", 1).await;
        let row = store.due_webhook_deliveries(T0, 64, 16).await.unwrap()[0].clone();
        let failed = |attempts_before| DeliveryAttempt {
            id: row.id,
            attempts_before,
            at: T0,
            state: "failed",
            next_attempt_at: T0,
            status: Some(500),
            error: Some("HTTP 500".into()),
        };
        // Read with 0 attempts, but written as if read with 3: skipped.
        assert_eq!(
            store
                .record_webhook_attempts(vec![failed(3)])
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .record_webhook_attempts(vec![failed(0)])
                .await
                .unwrap(),
            1
        );
        // A failed row is no longer pending: a stale second write is skipped.
        assert_eq!(
            store
                .record_webhook_attempts(vec![failed(0)])
                .await
                .unwrap(),
            0
        );

        let hook = store.get_webhook(hook.id).await.unwrap().unwrap();
        assert_eq!((hook.pending, hook.failed), (0, 1));
        assert_eq!(hook.last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(hook.last_failure_at, Some(T0));

        let retried = store
            .retry_webhook_delivery(hook.id, row.id, T0 + time::Duration::hours(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(retried.state, "pending");
        assert_eq!(retried.attempts, 0);
        assert_eq!(retried.next_attempt_at, Some(T0 + time::Duration::hours(1)));
        let again = store
            .retry_webhook_delivery(hook.id, row.id, T0)
            .await
            .unwrap();
        assert!(matches!(again, Err(Refusal::Conflict(_))), "{again:?}");
        let other = store
            .retry_webhook_delivery(hook.id + 1, row.id, T0)
            .await
            .unwrap();
        assert!(matches!(other, Err(Refusal::NotFound(_))), "{other:?}");

        store.delete_webhook(hook.id).await.unwrap().unwrap();
        let left: i64 = Connection::open(store.path())
            .unwrap()
            .query_row("SELECT count(*) FROM webhook_delivery", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
        assert!(matches!(
            store.delete_webhook(hook.id).await.unwrap(),
            Err(Refusal::NotFound(_))
        ));
        store.close().await;
    }
}
