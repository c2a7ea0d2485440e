//! The engine through simulated time: every batch carries its own arrival time and every
//! silence check its own now, so minutes and hours pass without waiting.

use census_common::{FilesystemUsage, HealthSample, Report, ReportBody};
use rusqlite::{Connection, params};
use time::OffsetDateTime;
use time::macros::datetime;

use super::*;
use crate::store::ingest::tests::{AGENT, inventory};
use crate::store::{IngestBatch, Store, StoreOptions, to_ms};

const T0: OffsetDateTime = datetime!(2026-03-02 09:00 UTC);

fn minutes(n: i64) -> time::Duration {
    time::Duration::minutes(n)
}

struct Sim {
    store: Store,
    dir: tempfile::TempDir,
    seq: u64,
}

impl Sim {
    /// A store with one computer (CI 1, criticality 3), the default rules disabled and `rule`
    /// (SQL values after `name, metric`) as the only enabled one.
    async fn new(rule: &str) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("census.db"), &StoreOptions::default()).unwrap();
        let mut sim = Sim { store, dir, seq: 0 };
        sim.send(
            T0,
            vec![ReportBody::Inventory(inventory(AGENT, &[], &["/"]))],
        )
        .await;
        sim.sql("UPDATE rule SET enabled = 0");
        if !rule.is_empty() {
            sim.sql(&format!(
                "INSERT INTO rule (name, metric, dimension, scope, operator, threshold, for_ms,
                                   clear_threshold, clear_for_ms, severity, enabled, created_at,
                                   updated_at)
                 VALUES ({rule}, 1, 0, 0)"
            ));
        }
        sim
    }

    fn conn(&self) -> Connection {
        Connection::open(self.store.path()).unwrap()
    }

    fn sql(&self, sql: &str) {
        self.conn().execute_batch(sql).unwrap();
    }

    fn count(&self, sql: &str) -> i64 {
        self.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    async fn send(&mut self, at: OffsetDateTime, bodies: Vec<ReportBody>) {
        let reports = bodies
            .into_iter()
            .map(|body| {
                self.seq += 1;
                Report {
                    seq: self.seq,
                    body,
                }
            })
            .collect();
        self.store
            .ingest(IngestBatch {
                agent_id: AGENT.into(),
                reports,
                received_at: at,
            })
            .await
            .unwrap();
    }

    /// A sample measured and received at `at`.
    async fn sample(&mut self, at: OffsetDateTime, fill: impl FnOnce(&mut HealthSample)) {
        let mut s = HealthSample::empty(AGENT, at);
        s.interval_secs = Some(60);
        fill(&mut s);
        self.send(at, vec![ReportBody::Health(s)]).await;
    }

    /// One CPU sample a minute from `from` (inclusive) for `n` minutes.
    async fn cpu(&mut self, from: OffsetDateTime, values: &[f64]) {
        for (i, v) in values.iter().enumerate() {
            let v = *v;
            self.sample(from + minutes(i as i64), |s| s.cpu_percent = Some(v))
                .await;
        }
    }

    /// (number, state, reopen_count) of every incident, by id.
    fn incidents(&self) -> Vec<(String, String, i64)> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, state, reopen_count FROM incident ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((number(r.get(0)?), r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn incident(&self, id: i64, now: OffsetDateTime) -> IncidentDetail {
        read_detail(&self.conn(), id, to_ms(now)).unwrap().unwrap()
    }

    fn kinds(&self, id: i64) -> Vec<String> {
        self.incident(id, T0)
            .timeline
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    fn alert(&self) -> Option<(String, Option<i64>)> {
        use rusqlite::OptionalExtension;
        self.conn()
            .query_row("SELECT state, incident_id FROM alert", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .unwrap()
    }

    /// Closes the store and opens the same file again, as a collector restart does.
    async fn restart(&mut self) {
        self.store.close().await;
        self.store =
            Store::open(&self.dir.path().join("census.db"), &StoreOptions::default()).unwrap();
    }
}

const CPU_5M: &str = "'cpu', 'cpu_percent', NULL, '{}', '>', 90, 300000, 80, 120000, 'medium'";

fn open(state: &str, reopens: i64) -> (String, String, i64) {
    ("INC-000001".into(), state.into(), reopens)
}

#[tokio::test]
async fn a_pending_breach_that_never_lasts_opens_nothing() {
    let mut sim = Sim::new(CPU_5M).await;
    sim.cpu(T0, &[95.0, 95.0, 95.0, 95.0, 95.0]).await;
    assert_eq!(sim.alert().unwrap().0, "pending");
    sim.cpu(T0 + minutes(5), &[50.0]).await;
    assert_eq!(sim.alert(), None);
    assert!(sim.incidents().is_empty());
}

#[tokio::test]
async fn a_held_breach_opens_one_incident_with_its_values_priority_and_due_times() {
    let mut sim = Sim::new(CPU_5M).await;
    sim.sql(
        "INSERT INTO webhook (url, secret, events, created_by, created_at, updated_at)
         VALUES ('http://127.0.0.1:9/', 'sixteen-chars-secret', '[\"incident.opened\"]', 't', 0, 0)",
    );
    sim.cpu(T0, &[95.0, 96.0, 97.5, 95.0, 95.0]).await;
    assert!(sim.incidents().is_empty(), "4 minutes are not 5");
    sim.cpu(T0 + minutes(5), &[95.0]).await;
    assert_eq!(sim.incidents(), vec![open("new", 0)]);
    // Dedup: the breach goes on for an hour, still one incident and one event.
    let hour: Vec<f64> = vec![99.0; 60];
    sim.cpu(T0 + minutes(6), &hour).await;
    assert_eq!(sim.incidents(), vec![open("new", 0)]);
    let opened = T0 + minutes(5);
    let detail = sim.incident(1, opened);
    let i = &detail.incident;
    assert_eq!(i.ci_id, 1);
    assert_eq!(i.title, "cpu on web-1");
    assert!(
        i.description.contains("cpu_percent was 95 (> 90)")
            && i.description.contains("worst 97.5")
            && i.description.contains("past 80 for 2m"),
        "{}",
        i.description
    );
    // Criticality 3 is medium impact, severity medium is medium urgency: P3, 2 h / 1 d.
    assert_eq!(
        (i.priority.as_str(), i.impact.as_str(), i.urgency.as_str()),
        ("P3", "medium", "medium")
    );
    assert_eq!(i.opened_at, opened);
    assert_eq!(i.response_due_at, opened + time::Duration::hours(2));
    assert_eq!(i.resolve_due_at, opened + time::Duration::days(1));
    assert_eq!(sim.kinds(1), vec!["opened"]);
    assert_eq!(
        sim.count("SELECT count(*) FROM webhook_delivery WHERE event = 'incident.opened'"),
        1
    );
}

#[tokio::test]
async fn hysteresis_keeps_a_flapping_value_on_one_incident_until_it_truly_recovers() {
    let mut sim = Sim::new(CPU_5M.replace("300000, 80", "0, 80").as_str()).await;
    // Around the threshold, never below the clear threshold: one incident, still open.
    sim.cpu(T0, &[95.0, 89.0, 91.0, 85.0, 92.0, 88.0, 91.0])
        .await;
    assert_eq!(sim.incidents(), vec![open("new", 0)]);
    // Below 80 for one minute, then back up: the recovery restarts, with a breach event.
    sim.cpu(T0 + minutes(7), &[70.0, 95.0]).await;
    assert_eq!(sim.kinds(1), vec!["opened", "breached"]);
    // Below 80 for the full 2 minutes: resolved by the collector.
    sim.cpu(T0 + minutes(9), &[70.0, 70.0, 70.0]).await;
    assert_eq!(sim.incidents(), vec![open("resolved", 0)]);
    let i = sim.incident(1, T0).incident;
    assert_eq!(i.resolved_by.as_deref(), Some("collector"));
    assert_eq!(i.resolved_at, Some(T0 + minutes(11)));
    assert!(i.resolution.unwrap().starts_with("recovered"));
    assert_eq!(sim.alert(), None);
}

#[tokio::test]
async fn a_breach_soon_after_resolution_reopens_later_ones_open_anew() {
    let mut sim = Sim::new(CPU_5M.replace("300000, 80, 120000", "0, 80, 0").as_str()).await;
    sim.cpu(T0, &[95.0, 50.0]).await;
    assert_eq!(sim.incidents(), vec![open("resolved", 0)]);
    // 30 minutes later, inside the default 1 h window: the same incident, reopened.
    sim.cpu(T0 + minutes(31), &[95.0]).await;
    assert_eq!(sim.incidents(), vec![open("new", 1)]);
    assert_eq!(sim.kinds(1), vec!["opened", "resolved", "reopened"]);
    sim.cpu(T0 + minutes(32), &[50.0]).await;
    // Two hours later: a new incident.
    sim.cpu(T0 + minutes(150), &[95.0]).await;
    let all = sim.incidents();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1], ("INC-000002".into(), "new".into(), 0));
    // A closed incident is final: a breach within the window opens a new one.
    sim.cpu(T0 + minutes(151), &[50.0]).await;
    sim.sql("UPDATE incident SET state = 'closed' WHERE id = 2");
    sim.cpu(T0 + minutes(152), &[95.0]).await;
    assert_eq!(sim.incidents().len(), 3);
}

#[tokio::test]
async fn an_incident_resolved_by_hand_while_still_breaching_stays_resolved() {
    let mut sim = Sim::new(CPU_5M.replace("300000, 80, 120000", "0, 80, 0").as_str()).await;
    sim.cpu(T0, &[95.0]).await;
    resolve_incident(&sim.conn(), 1, to_ms(T0), "api:oncall", "fixed", &json!({})).unwrap();
    sim.cpu(T0 + minutes(1), &[95.0, 96.0]).await;
    assert_eq!(sim.incidents(), vec![open("resolved", 0)]);
    // It recovers, then breaches again within the window: that reopens it.
    sim.cpu(T0 + minutes(3), &[50.0, 95.0]).await;
    assert_eq!(sim.incidents(), vec![open("new", 1)]);
}

#[tokio::test]
async fn each_mount_is_its_own_dimension_and_an_unmounted_one_resolves() {
    let rule = "'fs', 'fs_used_percent', NULL, '{}', '>', 90, 0, 85, 0, 'high'";
    let mut sim = Sim::new(rule).await;
    let fs = |mount: &str, used: f64| FilesystemUsage {
        mount: mount.into(),
        used_percent: Some(used),
        inodes_used_percent: None,
    };
    sim.sample(T0, |s| {
        s.filesystems = vec![fs("/", 40.0), fs("/data", 97.0)]
    })
    .await;
    sim.sample(T0 + minutes(1), |s| {
        s.filesystems = vec![fs("/", 95.0), fs("/data", 97.0)]
    })
    .await;
    let titles: Vec<String> = (1..=2)
        .map(|id| sim.incident(id, T0).incident.title)
        .collect();
    assert_eq!(titles, vec!["fs on web-1 (/data)", "fs on web-1 (/)"]);
    assert_eq!(sim.incident(1, T0).incident.dimension, "/data");
    // /data is unmounted: its incident resolves; / stays.
    sim.sample(T0 + minutes(2), |s| s.filesystems = vec![fs("/", 95.0)])
        .await;
    let states: Vec<String> = sim.incidents().into_iter().map(|i| i.1).collect();
    assert_eq!(states, vec!["resolved", "new"]);
    assert_eq!(
        sim.incident(1, T0).incident.resolution.as_deref(),
        Some("recovered: no longer reported")
    );
}

#[tokio::test]
async fn a_restart_in_every_state_continues_where_it_was() {
    let mut sim = Sim::new(CPU_5M).await;
    // Pending: the five minutes count across the restart.
    sim.cpu(T0, &[95.0, 95.0, 95.0]).await;
    sim.restart().await;
    sim.cpu(T0 + minutes(3), &[95.0, 95.0]).await;
    assert!(sim.incidents().is_empty());
    sim.cpu(T0 + minutes(5), &[95.0]).await;
    assert_eq!(sim.incidents(), vec![open("new", 0)]);
    // Firing: a restart does not open a second incident.
    sim.restart().await;
    sim.cpu(T0 + minutes(6), &[95.0, 95.0]).await;
    assert_eq!(sim.incidents(), vec![open("new", 0)]);
    // Recovering: the two minutes count across the restart too.
    sim.cpu(T0 + minutes(8), &[50.0]).await;
    assert_eq!(sim.alert().unwrap().0, "recovering");
    sim.restart().await;
    sim.cpu(T0 + minutes(9), &[50.0]).await;
    assert_eq!(sim.incidents(), vec![open("new", 0)]);
    sim.cpu(T0 + minutes(10), &[50.0]).await;
    assert_eq!(sim.incidents(), vec![open("resolved", 0)]);
}

#[tokio::test]
async fn a_silent_agent_opens_unreachable_after_its_window_and_its_report_resolves_it() {
    let mut sim = Sim::new("").await;
    sim.sql("UPDATE rule SET enabled = 1 WHERE metric = 'unreachable'");
    let started = T0;
    // Health every 2 minutes: the window is max(3 x 2 min, 5 min) = 6 min.
    sim.sample(T0, |s| s.interval_secs = Some(120)).await;
    let check = |at| sim.store.check_silence(at, started);
    assert_eq!(check(T0 + minutes(5)).await.unwrap().opened, 0);
    let report = check(T0 + minutes(6)).await.unwrap();
    assert_eq!((report.silent, report.opened), (1, 1));
    // Checked again: no second incident.
    assert_eq!(
        check(T0 + minutes(7)).await.unwrap(),
        SilenceReport::default()
    );
    let i = sim.incident(1, T0 + minutes(7)).incident;
    assert_eq!(
        (i.metric.as_str(), i.title.as_str()),
        ("unreachable", "Agent unreachable on web-1")
    );
    // Default unreachable severity is high (medium urgency), criticality 3: P3.
    assert_eq!(i.priority, "P3");
    assert!(
        i.description
            .contains("No report since 2026-03-02T09:00:00Z"),
        "{}",
        i.description
    );
    // The agent is back: any report resolves it.
    sim.sample(T0 + minutes(20), |_| {}).await;
    assert_eq!(sim.incidents(), vec![open("resolved", 0)]);
    assert!(
        sim.incident(1, T0)
            .incident
            .resolution
            .unwrap()
            .contains("reported again after 20m")
    );
}

#[tokio::test]
async fn after_a_restart_every_agent_gets_a_full_window() {
    let mut sim = Sim::new("").await;
    sim.sql("UPDATE rule SET enabled = 1 WHERE metric = 'unreachable'");
    sim.sample(T0, |_| {}).await;
    // The collector was down for an hour and starts again at T0 + 1 h.
    let started = T0 + minutes(60);
    let report = sim
        .store
        .check_silence(started + minutes(4), started)
        .await
        .unwrap();
    assert_eq!(report, SilenceReport::default());
    let report = sim
        .store
        .check_silence(started + minutes(5), started)
        .await
        .unwrap();
    assert_eq!(report.opened, 1);
    // An agent without a stated interval counts as 60 s, so 5 min is the floor.
    let i = sim.incident(1, T0).incident;
    assert_eq!(i.opened_at, started + minutes(5));
}

#[tokio::test]
async fn maintenance_holds_back_a_breach_which_opens_when_the_window_ends() {
    let mut sim = Sim::new(CPU_5M.replace("300000, 80", "0, 80").as_str()).await;
    sim.sql(&format!(
        "INSERT INTO maintenance (scope, starts_at, ends_at, reason, created_by, created_at)
         VALUES ('{{\"ci_ids\":[1]}}', {}, {}, 'kernel upgrade', 'api:t', 0)",
        to_ms(T0),
        to_ms(T0 + minutes(30))
    ));
    sim.cpu(T0, &[95.0, 95.0]).await;
    assert!(sim.incidents().is_empty());
    assert_eq!(sim.alert(), Some(("firing".into(), None)));
    // Still breaching after the window: the first sample after it opens the incident.
    sim.cpu(T0 + minutes(30), &[95.0]).await;
    assert_eq!(sim.incidents(), vec![open("new", 0)]);
    assert_eq!(sim.incident(1, T0).incident.opened_at, T0 + minutes(30));
}

#[tokio::test]
async fn the_silence_check_opens_what_maintenance_held_back_and_silence_inside_a_window() {
    let mut sim = Sim::new(CPU_5M.replace("300000, 80", "0, 80").as_str()).await;
    sim.sql("UPDATE rule SET enabled = 1 WHERE metric = 'unreachable'");
    sim.sql(&format!(
        "INSERT INTO maintenance (scope, starts_at, ends_at, reason, created_by, created_at)
         VALUES ('{{\"name_pattern\":\"web-*\"}}', {}, {}, 'reboot', 'api:t', 0)",
        to_ms(T0),
        to_ms(T0 + minutes(30))
    ));
    sim.cpu(T0, &[95.0]).await;
    // Silent inside the window: nothing opens.
    let report = sim.store.check_silence(T0 + minutes(20), T0).await.unwrap();
    assert_eq!((report.silent, report.opened), (1, 0));
    assert!(sim.incidents().is_empty());
    // The window ends: the held-back breach and the silence both open.
    let report = sim.store.check_silence(T0 + minutes(30), T0).await.unwrap();
    assert_eq!(report.opened, 2);
    let metrics: Vec<String> = (1..=2)
        .map(|id| sim.incident(id, T0).incident.metric)
        .collect();
    assert!(
        metrics.contains(&"unreachable".to_owned()) && metrics.contains(&"cpu_percent".to_owned())
    );
}

#[tokio::test]
async fn a_critical_business_service_depending_on_the_computer_raises_priority() {
    let mut sim = Sim::new(CPU_5M.replace("300000, 80", "0, 80").as_str()).await;
    sim.sql(
        "INSERT INTO ci (id, class, name, status, criticality, attributes, first_seen, last_seen)
         VALUES (100, 'business_service', 'payments', 'active', 1, '{}', 0, 0),
                (101, 'application', 'payments-api', 'active', 3, '{}', 0, 0);
         INSERT INTO relationship (type, source_id, target_id, created_at)
         VALUES ('depends_on', 100, 101, 0), ('runs_on', 101, 1, 0);",
    );
    sim.cpu(T0, &[95.0]).await;
    let detail = sim.incident(1, T0);
    let i = &detail.incident;
    // Criticality 1 service: high impact; medium urgency: P2, 30 min / 8 h.
    assert_eq!((i.priority.as_str(), i.impact.as_str()), ("P2", "high"));
    assert_eq!(i.response_due_at, T0 + minutes(30));
    assert_eq!(detail.timeline[0].detail["impact_from"]["name"], "payments");
}

#[tokio::test]
async fn due_times_flag_breaches_until_met() {
    let mut sim = Sim::new(CPU_5M.replace("300000, 80", "0, 80").as_str()).await;
    sim.cpu(T0, &[95.0]).await;
    let at = |m| sim.incident(1, T0 + minutes(m)).incident;
    assert!(!at(119).response_breached);
    assert!(at(121).response_breached && !at(121).resolve_breached);
    assert!(at(24 * 60 + 1).resolve_breached);
    // Acknowledged in time: the response target stays met however late it is read.
    sim.conn()
        .execute(
            "UPDATE incident SET acknowledged_at = ?1, state = 'acknowledged' WHERE id = 1",
            params![to_ms(T0 + minutes(10))],
        )
        .unwrap();
    assert!(!at(24 * 60).response_breached);
}

#[tokio::test]
async fn a_computer_leaving_a_rule_s_scope_resolves_its_incident() {
    let rule = "'cpu', 'cpu_percent', NULL, '{\"criticality\":[3]}', '>', 90, 0, 80, 0, 'low'";
    let mut sim = Sim::new(rule).await;
    sim.cpu(T0, &[95.0]).await;
    assert_eq!(sim.incident(1, T0).incident.priority, "P4");
    sim.sql("UPDATE ci SET criticality = 1 WHERE id = 1");
    sim.cpu(T0 + minutes(1), &[95.0]).await;
    assert_eq!(sim.incidents(), vec![open("resolved", 0)]);
    assert_eq!(sim.alert(), None);
}

#[tokio::test]
async fn an_open_unreachable_incident_survives_a_restart_and_resolves_on_the_next_report() {
    let mut sim = Sim::new("").await;
    sim.sql("UPDATE rule SET enabled = 1 WHERE metric = 'unreachable'");
    sim.sample(T0, |_| {}).await;
    let report = sim.store.check_silence(T0 + minutes(10), T0).await.unwrap();
    assert_eq!(report.opened, 1);
    sim.restart().await;
    // The restarted collector's checks, inside and past its own first window, add nothing.
    let started = T0 + minutes(30);
    for at in [started, started + minutes(10)] {
        let report = sim.store.check_silence(at, started).await.unwrap();
        assert_eq!(report, SilenceReport::default());
    }
    assert_eq!(sim.incidents(), vec![open("new", 0)]);
    sim.sample(T0 + minutes(45), |_| {}).await;
    assert_eq!(sim.incidents(), vec![open("resolved", 0)]);
    assert_eq!(sim.kinds(1), vec!["opened", "resolved"]);
}
