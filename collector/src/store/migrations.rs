//! The schema, as an append-only list of migrations tracked by `PRAGMA user_version`.
//!
//! **Promise:** a migration, once released, is never edited or reordered; a schema change is a
//! new entry at the end. Opening runs every pending migration in one transaction (all or
//! nothing) and refuses a database whose `user_version` is newer than this list, so an older
//! collector can never write into a schema it does not understand.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Migration `i` (0-based) brings the schema from version `i` to version `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the CMDB core and the health time series. See the module doc of `store` for the design.
    r#"
CREATE TABLE ci (
    id            INTEGER PRIMARY KEY,
    class         TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'stale', 'retired')),
    criticality   INTEGER NOT NULL DEFAULT 3 CHECK (criticality BETWEEN 1 AND 4),
    attributes    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(attributes)),
    identified_by TEXT,
    -- A part (filesystem, network interface) belongs to the computer that reported it and is
    -- identified within it by part_key (the mount point, the interface name).
    parent_id     INTEGER REFERENCES ci(id) ON DELETE CASCADE,
    part_key      TEXT,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    hostname      TEXT GENERATED ALWAYS AS (json_extract(attributes, '$.hostname')) VIRTUAL,
    os_name       TEXT GENERATED ALWAYS AS (json_extract(attributes, '$.os_name')) VIRTUAL,
    os_family     TEXT GENERATED ALWAYS AS (json_extract(attributes, '$.os_family')) VIRTUAL
);
CREATE INDEX ci_class ON ci(class);
CREATE INDEX ci_status ON ci(status);
CREATE INDEX ci_name ON ci(name);
CREATE INDEX ci_hostname ON ci(hostname);
CREATE INDEX ci_os_name ON ci(os_name);
CREATE INDEX ci_os_family ON ci(os_family);
CREATE UNIQUE INDEX ci_part ON ci(parent_id, class, part_key) WHERE parent_id IS NOT NULL;

CREATE TABLE agent (
    agent_id         TEXT    PRIMARY KEY,
    ci_id            INTEGER REFERENCES ci(id) ON DELETE SET NULL,
    last_seq         INTEGER,
    last_seen        INTEGER NOT NULL,
    inventory_digest TEXT,
    latest_health    BLOB,
    latest_health_at INTEGER
);
CREATE UNIQUE INDEX agent_ci ON agent(ci_id) WHERE ci_id IS NOT NULL;

CREATE TABLE relationship (
    id         INTEGER PRIMARY KEY,
    type       TEXT    NOT NULL,
    source_id  INTEGER NOT NULL REFERENCES ci(id) ON DELETE CASCADE,
    target_id  INTEGER NOT NULL REFERENCES ci(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    UNIQUE (source_id, type, target_id)
);
CREATE INDEX relationship_target ON relationship(target_id);

-- version and arch are '' when unknown: NULLs are distinct in a UNIQUE constraint, so NULL
-- would let the same package enter the catalog twice.
CREATE TABLE software (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    version TEXT NOT NULL,
    arch    TEXT NOT NULL,
    vendor  TEXT,
    source  TEXT NOT NULL,
    UNIQUE (name, version, arch, source)
);

CREATE TABLE installation (
    ci_id       INTEGER NOT NULL REFERENCES ci(id) ON DELETE CASCADE,
    software_id INTEGER NOT NULL REFERENCES software(id),
    first_seen  INTEGER NOT NULL,
    PRIMARY KEY (ci_id, software_id)
) WITHOUT ROWID;
CREATE INDEX installation_software ON installation(software_id);

-- Append-only, no secondary index: every insert lands at the end of the rowid b-tree.
CREATE TABLE health_raw (
    id     INTEGER PRIMARY KEY,
    ci_id  INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    sample BLOB    NOT NULL
);

-- key = hour << 32 | ci_id, so the rowid order is (hour, ci_id) order. A rowid table, not
-- WITHOUT ROWID: a WITHOUT ROWID lookup compares whole records, overflow chains of the
-- multi-kilobyte blobs included (measured in tests/HEALTH_LAYOUT.md: ~30 MB read per 24 h query).
CREATE TABLE health_hourly (
    key     INTEGER PRIMARY KEY,
    samples BLOB    NOT NULL
);
"#,
    // 2: health samples that arrive before their agent has a computer CI; the raw-table floor.
    r#"
-- Moved into health_raw, in the transaction that creates the agent's computer CI. At most
-- PENDING_PER_AGENT (the newest by ts) are kept per agent.
CREATE TABLE health_pending (
    id       INTEGER PRIMARY KEY,
    agent_id TEXT    NOT NULL,
    ts       INTEGER NOT NULL,
    sample   BLOB    NOT NULL
);
CREATE INDEX health_pending_agent ON health_pending(agent_id, ts);

-- One row. raw_min_ts is at most the smallest ts in health_raw (NULL only when health_raw is
-- empty): every insert into health_raw lowers it in the same transaction, compaction sets it
-- exactly after moving rows. A range query whose window ends before it skips the raw scan.
CREATE TABLE health_meta (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    raw_min_ts INTEGER
);
INSERT INTO health_meta (id, raw_min_ts) VALUES (1, (SELECT min(ts) FROM health_raw));
"#,
    // 3: credentials. Only SHA-256 hashes of the secret parts are stored (see `auth`).
    r#"
CREATE TABLE enroll_secret (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    hash       BLOB    NOT NULL CHECK (length(hash) = 32),
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    uses       INTEGER NOT NULL DEFAULT 0
);

-- Admin tokens have a role; agent tokens are bound to one agent id and name the secret they
-- were enrolled with.
CREATE TABLE token (
    id               TEXT    PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind IN ('admin', 'agent')),
    role             TEXT    CHECK (role IN ('viewer', 'operator', 'admin')),
    agent_id         TEXT,
    name             TEXT    NOT NULL,
    hash             BLOB    NOT NULL CHECK (length(hash) = 32),
    created_at       INTEGER NOT NULL,
    revoked_at       INTEGER,
    enroll_secret_id TEXT    REFERENCES enroll_secret(id),
    CHECK ((kind = 'admin' AND role IS NOT NULL AND agent_id IS NULL)
        OR (kind = 'agent' AND role IS NULL AND agent_id IS NOT NULL))
);
CREATE INDEX token_agent ON token(agent_id) WHERE agent_id IS NOT NULL;
"#,
    // 4: identification keys, history, and the columns the CI filters use.
    r#"
-- The normalised identity keys of each computer (see cmdb::identify): kind is the rule's
-- name, value its normalised key. Several CIs may share a weak key (a hostname); the rules
-- decide what a match means.
CREATE TABLE ci_key (
    kind  TEXT    NOT NULL,
    value TEXT    NOT NULL,
    ci_id INTEGER NOT NULL REFERENCES ci(id) ON DELETE CASCADE,
    PRIMARY KEY (kind, value, ci_id)
) WITHOUT ROWID;
CREATE INDEX ci_key_ci ON ci_key(ci_id);

-- Every change to a CI, in commit order: the one writer allocates ids in the order its
-- transactions commit, and AUTOINCREMENT never reuses one, so `id` is the change feed's cursor.
-- old and new are JSON (an attribute's value, a package, a part, a relationship); source is
-- `agent:<agent id>`, `import:<token name>`, `api:<token name>` or `collector`. No foreign key: a CI's
-- history outlives nothing, but rows must never block a delete either.
CREATE TABLE history (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    ci_id  INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    field  TEXT,
    old    TEXT    CHECK (old IS NULL OR json_valid(old)),
    new    TEXT    CHECK (new IS NULL OR json_valid(new)),
    source TEXT    NOT NULL
);
CREATE INDEX history_ci ON history(ci_id, id);

ALTER TABLE ci ADD COLUMN os_version TEXT
    GENERATED ALWAYS AS (json_extract(attributes, '$.os_version')) VIRTUAL;
ALTER TABLE ci ADD COLUMN vendor TEXT
    GENERATED ALWAYS AS (json_extract(attributes, '$.vendor')) VIRTUAL;
ALTER TABLE ci ADD COLUMN model TEXT
    GENERATED ALWAYS AS (json_extract(attributes, '$.model')) VIRTUAL;
ALTER TABLE ci ADD COLUMN serial TEXT
    GENERATED ALWAYS AS (json_extract(attributes, '$.serial')) VIRTUAL;
CREATE INDEX ci_vendor ON ci(vendor);
CREATE INDEX ci_model ON ci(model);
CREATE INDEX ci_serial ON ci(serial);
CREATE INDEX ci_criticality ON ci(criticality);
CREATE INDEX ci_last_seen ON ci(last_seen);
-- The catalog list's order (name, source, version text, id).
CREATE INDEX software_catalog_order ON software(name, source, version);

-- Who made an admin relationship and an optional note; agent-made ones leave both NULL.
ALTER TABLE relationship ADD COLUMN created_by TEXT;
ALTER TABLE relationship ADD COLUMN description TEXT;

-- The existing computers' agent-id keys, so identification finds them as before; forgetting
-- the stored digests makes each agent's next inventory apply in full (and the collector ask for
-- it), which stores the hardware keys the old schema did not keep.
INSERT OR IGNORE INTO ci_key (kind, value, ci_id)
    SELECT 'agent_id', lower(agent_id), ci_id FROM agent WHERE ci_id IS NOT NULL;
UPDATE agent SET inventory_digest = NULL;
"#,
    // 5: the incident engine: rules, alert state, incidents and their timelines, maintenance
    // windows, webhooks and their delivery outbox.
    r#"
-- The agent's own health interval, from its samples (`interval_secs`); NULL until a sample
-- says (an older agent): the silence check then assumes the agent default, 60 s.
ALTER TABLE agent ADD COLUMN health_interval_ms INTEGER;
-- Threshold rules (see incidents::rules). scope is a JSON object (incidents::scope::Scope);
-- clear_threshold NULL means "no longer breaching". For metric `unreachable`, threshold is a
-- number of health intervals and for_ms the least silence.
CREATE TABLE rule (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    metric          TEXT    NOT NULL,
    dimension       TEXT,
    scope           TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(scope)),
    operator        TEXT    NOT NULL CHECK (operator IN ('>', '>=', '<', '<=')),
    threshold       REAL    NOT NULL,
    for_ms          INTEGER NOT NULL CHECK (for_ms >= 0),
    clear_threshold REAL,
    clear_for_ms    INTEGER NOT NULL CHECK (clear_for_ms >= 0),
    severity        TEXT    NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low')),
    enabled         INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
-- The state of each (CI, rule, dimension) that is not ok; no row means ok. `since` is when the
-- state began and `last_ts` the newest sample evaluated, both in series time. incident_id is
-- the incident this episode opened or reopened; NULL while firing inside a maintenance window.
CREATE TABLE alert (
    ci_id       INTEGER NOT NULL REFERENCES ci(id) ON DELETE CASCADE,
    rule_id     INTEGER NOT NULL REFERENCES rule(id) ON DELETE CASCADE,
    dimension   TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'firing', 'recovering')),
    since       INTEGER NOT NULL,
    last_ts     INTEGER NOT NULL,
    value       REAL,
    peak        REAL,
    incident_id INTEGER REFERENCES incident(id) ON DELETE SET NULL,
    PRIMARY KEY (ci_id, rule_id, dimension)
) WITHOUT ROWID;
CREATE INDEX alert_rule ON alert(rule_id);
-- Incidents. The number is derived from the id; rule_name and metric are kept so an incident
-- outlives its rule. No foreign key on ci_id: an incident is a record that outlives its CI.
CREATE TABLE incident (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    ci_id           INTEGER NOT NULL,
    rule_id         INTEGER REFERENCES rule(id) ON DELETE SET NULL,
    rule_name       TEXT    NOT NULL,
    metric          TEXT    NOT NULL,
    dimension       TEXT    NOT NULL,
    title           TEXT    NOT NULL,
    description     TEXT    NOT NULL,
    state           TEXT    NOT NULL
        CHECK (state IN ('new', 'acknowledged', 'in_progress', 'resolved', 'closed')),
    severity        TEXT    NOT NULL,
    impact          INTEGER NOT NULL CHECK (impact BETWEEN 1 AND 3),
    urgency         INTEGER NOT NULL CHECK (urgency BETWEEN 1 AND 3),
    priority        INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    priority_reason TEXT,
    assignee        TEXT,
    opened_at       INTEGER NOT NULL,
    acknowledged_at INTEGER,
    resolved_at     INTEGER,
    closed_at       INTEGER,
    response_due_at INTEGER NOT NULL,
    resolve_due_at  INTEGER NOT NULL,
    resolution      TEXT,
    resolved_by     TEXT,
    reopen_count    INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL
);
-- At most one open incident per (CI, rule, dimension).
CREATE UNIQUE INDEX incident_open ON incident(ci_id, rule_id, dimension)
    WHERE state IN ('new', 'acknowledged', 'in_progress');
CREATE INDEX incident_key ON incident(ci_id, rule_id, dimension, id);
CREATE INDEX incident_state ON incident(state, priority);
CREATE INDEX incident_opened ON incident(opened_at);
CREATE INDEX incident_rule ON incident(rule_id);
-- KPIs count resolutions in a time range.
CREATE INDEX incident_resolved ON incident(resolved_at) WHERE resolved_at IS NOT NULL;
-- The timeline of each incident; detail is a JSON object.
CREATE TABLE incident_event (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incident(id) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
);
CREATE INDEX incident_event_incident ON incident_event(incident_id, id);
-- Maintenance windows: no incident opens for a CI the scope matches between starts_at
-- (inclusive) and ends_at (exclusive).
CREATE TABLE maintenance (
    id         INTEGER PRIMARY KEY,
    scope      TEXT    NOT NULL CHECK (json_valid(scope)),
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL CHECK (ends_at > starts_at),
    reason     TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX maintenance_ends ON maintenance(ends_at);
-- Webhook subscriptions; events is a JSON array of event names.
CREATE TABLE webhook (
    id          INTEGER PRIMARY KEY,
    url         TEXT    NOT NULL,
    secret      TEXT    NOT NULL,
    events      TEXT    NOT NULL CHECK (json_valid(events)),
    enabled     INTEGER NOT NULL DEFAULT 1,
    description TEXT,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
-- The outbox: one row per (webhook, event), written in the transaction that made the event.
-- payload is the exact JSON body that is signed and sent.
CREATE TABLE webhook_delivery (
    id              INTEGER PRIMARY KEY,
    webhook_id      INTEGER NOT NULL REFERENCES webhook(id) ON DELETE CASCADE,
    event           TEXT    NOT NULL,
    incident_id     INTEGER,
    payload         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER
);
CREATE INDEX webhook_delivery_due ON webhook_delivery(next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_delivery_hook ON webhook_delivery(webhook_id, id);
-- The default rules (README, "Incidents"); admins change or delete them like any other.
INSERT INTO rule (name, metric, dimension, scope, operator, threshold, for_ms, clear_threshold,
                  clear_for_ms, severity, enabled, created_at, updated_at)
VALUES
    ('Filesystem almost full', 'fs_used_percent', NULL, '{}', '>', 90, 300000, 85, 300000,
     'high', 1, unixepoch() * 1000, unixepoch() * 1000),
    ('Memory exhausted', 'memory_used_percent', NULL, '{}', '>', 95, 600000, 90, 300000,
     'high', 1, unixepoch() * 1000, unixepoch() * 1000),
    ('CPU saturated', 'cpu_percent', NULL, '{}', '>', 95, 900000, 85, 300000,
     'medium', 1, unixepoch() * 1000, unixepoch() * 1000),
    ('Load too high', 'load_per_core', NULL, '{}', '>', 4, 900000, 3, 300000,
     'medium', 1, unixepoch() * 1000, unixepoch() * 1000),
    ('Agent unreachable', 'unreachable', NULL, '{}', '>', 3, 300000, NULL, 0,
     'high', 1, unixepoch() * 1000, unixepoch() * 1000);
"#,
    // 6: the columns a list of installations shows for each CI, in an index of the top-level
    // CIs (software is installed on a reporting computer, never on one of its parts), so each
    // row is read from a 5 MB index instead of the `ci` table and its attribute JSON: "which
    // computers run openssl older than X" reads 17,000 of them (BENCHMARKS.md). The hostname
    // is the expression itself, not the generated column: SQLite reads an indexed expression
    // from the index, but computes a VIRTUAL column from the table row.
    r#"
CREATE INDEX ci_top_level_listing ON ci(id, status, name, json_extract(attributes, '$.hostname'), parent_id)
    WHERE parent_id IS NULL;
"#,
    // 7: no schema change, a format change. From this version on, a software history row
    // (`software_added`, `_removed`, `_upgraded`, `_downgraded`) may hold the package's catalog
    // id (a JSON number) in `old`/`new` instead of the package object; `store::history` reads
    // both. The version bump makes a collector that only knows the object refuse the database
    // instead of showing ids and undoing history wrongly.
    r#"
SELECT 1;
"#,
    // 8: health compaction in passes that survive a restart (`store::compaction`). While a
    // pass is under way, the raw rows with an id up to compact_upto of computers with an id up
    // to compact_ci are already in health_hourly, and range queries skip them; both are NULL
    // when no pass is under way.
    r#"
ALTER TABLE health_meta ADD COLUMN compact_upto INTEGER;
ALTER TABLE health_meta ADD COLUMN compact_ci INTEGER;
"#,
];

/// Brings the database up to the latest schema.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    migrate_to(conn, path, MIGRATIONS)
}

/// Runs the pending entries of `migrations` in one transaction. Split out so tests can build a
/// database as an older release left it.
pub(crate) fn migrate_to(
    conn: &mut Connection,
    path: &Path,
    migrations: &[&str],
) -> Result<(), StoreError> {
    let known = migrations.len() as u32;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read the version inside the write transaction, so two processes opening the same fresh
    // file cannot both run migration 1.
    let found: u32 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > known {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    for (index, sql) in migrations.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migration {
                version: index as u32 + 1,
                source,
            })?;
    }
    if found < known {
        tx.pragma_update(None, "user_version", known)?;
        tracing::info!(from = found, to = known, path = %path.display(), "migrated database schema");
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema version this build creates and understands.
    fn current_version() -> u32 {
        MIGRATIONS.len() as u32
    }

    fn table_names(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn version(conn: &Connection) -> u32 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn fresh_database_gets_every_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        assert_eq!(version(&conn), current_version());
        let tables = table_names(&conn);
        for t in [
            "agent",
            "ci",
            "health_hourly",
            "health_meta",
            "health_pending",
            "health_raw",
            "installation",
            "relationship",
            "software",
            "token",
            "enroll_secret",
            "ci_key",
            "history",
        ] {
            assert!(
                tables.contains(&t.to_owned()),
                "missing table {t}: {tables:?}"
            );
        }
    }

    #[test]
    fn reopening_a_migrated_database_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("census.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            migrate(&mut conn, &path).unwrap();
            conn.execute(
                "INSERT INTO ci (class, name, first_seen, last_seen) VALUES ('computer', 'a', 0, 0)",
                [],
            )
            .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        assert_eq!(version(&conn), current_version());
        let n: i64 = conn
            .query_row("SELECT count(*) FROM ci", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn database_left_by_each_older_release_upgrades() {
        // For every prefix of the migration list, build the database as that release left it,
        // with rows in it (from version 1 on: a CI and a raw health sample), then open it with
        // this build: the rows survive, and what later migrations derive from them is right.
        for done in 0..MIGRATIONS.len() {
            let mut conn = Connection::open_in_memory().unwrap();
            migrate_to(&mut conn, Path::new("old.db"), &MIGRATIONS[..done]).unwrap();
            assert_eq!(version(&conn), done as u32);
            if done >= 1 {
                conn.execute_batch(
                    "INSERT INTO ci (class, name, first_seen, last_seen)
                         VALUES ('computer', 'a', 0, 0);
                     INSERT INTO health_raw (ci_id, ts, sample) VALUES (1, 7200000, x'80');",
                )
                .unwrap();
            }
            if done >= 2 {
                // As the release that had health_meta kept it.
                conn.execute("UPDATE health_meta SET raw_min_ts = 7200000", [])
                    .unwrap();
            }
            if (1..4).contains(&done) {
                conn.execute(
                    "INSERT INTO agent (agent_id, ci_id, last_seen, inventory_digest)
                     VALUES ('A-1', 1, 0, 'old')",
                    [],
                )
                .unwrap();
            }
            migrate(&mut conn, Path::new("old.db")).unwrap();
            assert_eq!(version(&conn), current_version());
            let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
            let expected = i64::from(done >= 1);
            assert_eq!(count("SELECT count(*) FROM ci"), expected, "from {done}");
            assert_eq!(count("SELECT count(*) FROM health_raw"), expected);
            // Migration 2 starts the raw floor at the oldest raw sample already stored.
            let floor: Option<i64> = conn
                .query_row("SELECT raw_min_ts FROM health_meta", [], |r| r.get(0))
                .unwrap();
            assert_eq!(floor, (done >= 1).then_some(7_200_000), "from {done}");
            // Migration 4 gives existing computers their agent-id key and forgets the digests,
            // so the next inventory stores the rest of the keys.
            if (1..4).contains(&done) {
                assert_eq!(
                    count(
                        "SELECT count(*) FROM ci_key WHERE kind = 'agent_id' AND value = 'a-1' AND ci_id = 1"
                    ),
                    1
                );
                assert_eq!(
                    count("SELECT count(*) FROM agent WHERE inventory_digest IS NULL"),
                    1
                );
            }
        }
    }

    #[test]
    fn newer_database_is_refused_and_left_alone() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", current_version() + 1)
            .unwrap();
        let err = migrate(&mut conn, Path::new("/srv/census.db")).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }));
        assert_eq!(
            message,
            format!(
                "database at /srv/census.db has schema version {} but this census-collector knows only up to {}; upgrade census-collector",
                current_version() + 1,
                current_version()
            )
        );
        assert_eq!(version(&conn), current_version() + 1);
        assert!(table_names(&conn).is_empty());
    }
}
