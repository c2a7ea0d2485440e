//! The health time series: append, compact into hourly blobs, prune, and read back a range.
//!
//! Compaction and pruning run as ordinary writer jobs, each on a bounded chunk, so ingest jobs
//! interleave with them and no transaction holds the write lock for long. Their notion of "now"
//! is passed in (from the injected clock), never read here.
//!
//! Compaction ([`super::compaction`]) moves the raw samples of completed hours into one
//! `health_hourly` blob per computer-hour, in passes that group the hour's rows by computer so
//! that each blob is written once, whatever the fleet's size; a pass records how far it got in
//! `health_meta`, and a range query skips the raw rows it has already moved. Samples of the
//! current hour, and of the next one in the last minutes of an hour, always stay raw.
//!
//! A range query reads a page oldest first, hour by hour, and stops when the page is full. The
//! hourly part is one primary-key lookup per hour, only for hours between the table's first and
//! last keys and never past now plus the clock allowance ([`MAX_CLOCK_AHEAD_MS`]).
//!
//! The raw part is the expensive one. `health_raw` has no index on `ci_id` on purpose (appends
//! stay appends), so reading it scans the uncompacted tail of the whole fleet, every computer's
//! rows: the current hour, the last completed hour until compaction has run, and late samples
//! waiting behind them (20,000 computers at one sample a minute: over a million rows). A query
//! skips the scan when its window, or the part of it its page reaches, ends before the oldest
//! raw sample, whose time `health_meta.raw_min_ts` keeps (every insert into `health_raw` lowers
//! it in the same transaction; compaction sets it exactly after moving rows; a damaged database
//! without that row is scanned, with a warning). Queries that reach the current hour, the
//! default "last 24 hours" among them, still scan the tail. The planned fix is the in-memory
//! index of the tail measured as layout H in `tests/HEALTH_LAYOUT.md`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use census_common::HealthSample;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::compaction::{Moved, pass_marker};
use super::model::{HealthCursor, HealthQuery, Page};
use super::{Store, StoreError, to_ms};

pub(super) const HOUR_MS: i64 = 3_600_000;
/// How far ahead of the collector's clock a sample's `collected_at` may be and still be its
/// series time (see `store::ingest`); also how far past "now" a range query looks.
pub(crate) const MAX_CLOCK_AHEAD_MS: i64 = 5 * 60_000;
/// Raw rows one compaction job moves (about: whole computers) or deletes.
const COMPACT_CHUNK: usize = 10_000;
/// Rows per sorted run of a compaction pass, in chunks: 500,000 rows, about 150 MB of samples
/// sorted at a time (`store::compaction`).
const RUN_CHUNKS: usize = 50;
/// Hourly rows one pruning job deletes at most.
const PRUNE_CHUNK: usize = 5_000;
/// The smallest and largest hourly keys: two b-tree lookups, where `min(key), max(key)` in one
/// select would read every row of the table (SQLite looks up a lone `min` or `max` only).
pub(super) const HOURLY_KEY_RANGE: &str =
    "SELECT (SELECT min(key) FROM health_hourly), (SELECT max(key) FROM health_hourly)";
/// First byte of an hourly blob, format 1: zstd-compressed MessagePack array of samples, each
/// filed under its `collected_at`. Written by the first development builds; still read.
const HOURLY_FORMAT_ZSTD_MSGPACK: u8 = 1;
/// Format 2: zstd-compressed MessagePack array of `[series ts in ms, sample]` pairs in series
/// order; the series time can differ from the sample's `collected_at` (see `store::ingest`).
pub(super) const HOURLY_FORMAT_ZSTD_MSGPACK_TS: u8 = 2;

/// A sample and its series time in unix milliseconds.
pub(super) type Point = (i64, HealthSample);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionReport {
    /// Raw rows moved into hourly blobs.
    pub moved: usize,
    /// Raw rows, and pending samples of agents without a computer CI, dropped because they
    /// were past retention.
    pub dropped: usize,
    /// Hourly rows written (created or merged).
    pub hourly_rows: usize,
    /// Hourly rows deleted by retention.
    pub pruned: usize,
}

impl Store {
    /// Compacts every completed hour of raw samples, then prunes hours past `retention`; one
    /// bounded writer job at a time.
    pub async fn compact_health(
        &self,
        now: OffsetDateTime,
        retention: time::Duration,
    ) -> Result<CompactionReport, StoreError> {
        self.compact_health_chunked(now, retention, COMPACT_CHUNK, PRUNE_CHUNK)
            .await
    }

    pub(crate) async fn compact_health_chunked(
        &self,
        now: OffsetDateTime,
        retention: time::Duration,
        compact_chunk: usize,
        prune_chunk: usize,
    ) -> Result<CompactionReport, StoreError> {
        let now = to_ms(now);
        let retention = i64::try_from(retention.whole_milliseconds())
            .ok()
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "health retention {retention} is out of range (Config::validate bounds it)"
                ))
            })?;
        let (mut total, _) = self
            .compact_raw(
                now,
                retention,
                compact_chunk,
                compact_chunk.saturating_mul(RUN_CHUNKS),
                usize::MAX,
            )
            .await?;
        loop {
            let pruned = self
                .writer
                .run(move |conn| prune_job(conn, now, retention, prune_chunk))
                .await?;
            total.pruned += pruned;
            if pruned < prune_chunk {
                break;
            }
        }
        // Few rows (at most PENDING_PER_AGENT per agent that never sent an inventory): one job.
        total.dropped += self
            .writer
            .run(move |conn| {
                Ok(conn
                    .prepare_cached("DELETE FROM health_pending WHERE ts < ?1")?
                    .execute([now.saturating_sub(retention)])?)
            })
            .await?;
        Ok(total)
    }

    /// A page of the samples of CI `ci_id` whose series time is in the query's window, oldest
    /// first, resuming after `query.after`; `None` when the CI does not exist. The window's end
    /// is cut to `now` plus `MAX_CLOCK_AHEAD_MS` (5 minutes): no sample is filed later than that.
    pub async fn ci_health(
        &self,
        ci_id: i64,
        query: HealthQuery,
        now: OffsetDateTime,
    ) -> Result<Option<Page<HealthSample, HealthCursor>>, StoreError> {
        let now = to_ms(now);
        self.reads
            .run(move |conn| Ok(read_page(conn, ci_id, &query, now)?.0))
            .await
    }
}

/// The hour sits in the high bits of an hourly row's key, the CI id in the low 32.
const HOUR_SHIFT: u32 = 32;

pub(super) fn hourly_key(hour: i64, ci_id: i64) -> Result<i64, StoreError> {
    if !(0..1 << HOUR_SHIFT).contains(&ci_id) || !(0..1 << 30).contains(&hour) {
        return Err(StoreError::Invalid(format!(
            "health of ci {ci_id} at hour {hour} does not fit the hourly key"
        )));
    }
    Ok((hour << HOUR_SHIFT) | ci_id)
}

pub(super) fn blob_of<'r>(
    row: &'r rusqlite::Row<'_>,
    index: usize,
) -> Result<&'r [u8], StoreError> {
    row.get_ref(index)?
        .as_blob()
        .map_err(|e| StoreError::Corrupt(format!("health sample column: {e}")))
}

fn decode_sample(blob: &[u8]) -> Result<HealthSample, StoreError> {
    rmp_serde::from_slice(blob).map_err(|e| StoreError::Corrupt(format!("health sample: {e}")))
}

pub(super) fn encode_hourly(points: &[Point]) -> Result<Vec<u8>, StoreError> {
    let packed = rmp_serde::to_vec_named(points)
        .map_err(|e| StoreError::Invalid(format!("health samples do not encode: {e}")))?;
    let mut blob = vec![HOURLY_FORMAT_ZSTD_MSGPACK_TS];
    blob.extend(
        zstd::encode_all(packed.as_slice(), 3).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    );
    Ok(blob)
}

pub(super) fn decode_hourly(blob: &[u8]) -> Result<Vec<Point>, StoreError> {
    let unpack = |rest: &[u8]| {
        zstd::decode_all(rest).map_err(|e| StoreError::Corrupt(format!("hourly health blob: {e}")))
    };
    let corrupt =
        |e: rmp_serde::decode::Error| StoreError::Corrupt(format!("hourly health blob: {e}"));
    match blob.split_first() {
        Some((&HOURLY_FORMAT_ZSTD_MSGPACK_TS, rest)) => {
            rmp_serde::from_slice(&unpack(rest)?).map_err(corrupt)
        }
        Some((&HOURLY_FORMAT_ZSTD_MSGPACK, rest)) => {
            let samples: Vec<HealthSample> =
                rmp_serde::from_slice(&unpack(rest)?).map_err(corrupt)?;
            Ok(samples
                .into_iter()
                .map(|s| (to_ms(s.collected_at), s))
                .collect())
        }
        _ => Err(StoreError::Corrupt(
            "hourly health blob of unknown format".into(),
        )),
    }
}

/// Deletes up to `chunk` hourly rows of hours wholly past retention.
fn prune_job(
    conn: &Connection,
    now: i64,
    retention: i64,
    chunk: usize,
) -> Result<usize, StoreError> {
    let oldest_kept_hour = now.saturating_sub(retention).div_euclid(HOUR_MS);
    Ok(conn
        .prepare_cached(
            "DELETE FROM health_hourly WHERE key IN
               (SELECT key FROM health_hourly WHERE key < ?1 ORDER BY key LIMIT ?2)",
        )?
        .execute(params![
            oldest_kept_hour.max(0) << HOUR_SHIFT,
            i64::try_from(chunk).unwrap_or(i64::MAX)
        ])?)
}

/// What a page read cost, for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ReadCost {
    hourly_lookups: usize,
    raw_scanned: bool,
}

type HealthPage = Option<Page<HealthSample, HealthCursor>>;

fn read_page(
    conn: &Connection,
    ci_id: i64,
    query: &HealthQuery,
    now: i64,
) -> Result<(HealthPage, ReadCost), StoreError> {
    let mut cost = ReadCost::default();
    let tx = conn.unchecked_transaction()?;
    if !super::ci_exists(&tx, ci_id)? {
        return Ok((None, cost));
    }
    let limit = usize::try_from(query.limit.max(1)).unwrap_or(usize::MAX);
    let to = to_ms(query.to).min(now.saturating_add(MAX_CLOCK_AHEAD_MS));
    let mut from = to_ms(query.from).max(0);
    // Resume at the cursor's time, skipping the samples of that time already returned.
    let mut resume: Option<(i64, u64)> = None;
    if let Some(after) = query.after
        && after.ts >= from
    {
        from = after.ts;
        resume = Some((after.ts, after.seen_at_ts));
    }
    let mut to_skip = resume.map_or(0, |(_, n)| n);
    let in_range = |(ts, _): &Point| from <= *ts && *ts <= to;

    let mut out: Vec<Point> = Vec::new();
    if from <= to {
        let (first, last): (Option<i64>, Option<i64>) = tx
            .prepare_cached(HOURLY_KEY_RANGE)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let span = hour_span(first, last, from, to);
        // The first hour that may have raw rows in the window: no raw row is older than the
        // floor. The raw table is scanned once, when the walk reaches that hour, so a window (or
        // a page of it) that ends before the floor is answered by the hourly blobs alone.
        let floor: Option<i64> = match tx
            .prepare_cached("SELECT raw_min_ts FROM health_meta WHERE id = 1")?
            .query_row([], |r| r.get::<_, Option<i64>>(0))
            .optional()?
        {
            Some(floor) => floor,
            // Migration 2 inserts the row and nothing deletes it, so only a damaged database
            // lacks it. Without it there is no floor, and NULL would mean "health_raw is empty":
            // raw samples would silently vanish from every answer. Scan instead (no floor at
            // all): answers stay correct, only slower, and the warning says why.
            None => {
                warn_missing_raw_floor();
                Some(i64::MIN)
            }
        };
        // Raw rows a compaction pass under way has already put into health_hourly.
        let raw_from_id = Moved::raw_floor_id(pass_marker(&tx)?, ci_id);
        let raw_start = floor
            .filter(|floor| *floor <= to)
            .map(|floor| floor.max(from).div_euclid(HOUR_MS));
        let mut raw: Option<BTreeMap<i64, Vec<Point>>> = None;
        let next_hour = |after: Option<i64>, raw: &Option<BTreeMap<i64, Vec<Point>>>| {
            let hourly = span.and_then(|(start, end)| {
                let next = after.map_or(start, |h| (h + 1).max(start));
                (next <= end).then_some(next)
            });
            let raw = match raw {
                Some(buckets) => buckets.keys().next().copied(),
                None => raw_start,
            };
            match (hourly, raw) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let mut hourly = tx.prepare_cached("SELECT samples FROM health_hourly WHERE key = ?1")?;
        let mut hour = next_hour(None, &raw);
        while let Some(h) = hour {
            if raw.is_none() && raw_start.is_some_and(|start| h >= start) {
                raw = Some(scan_raw(&tx, ci_id, raw_from_id, from, to)?);
                cost.raw_scanned = true;
            }
            let mut points = Vec::new();
            if span.is_some_and(|(start, end)| (start..=end).contains(&h)) {
                cost.hourly_lookups += 1;
                if let Some(blob) = hourly
                    .query_row([hourly_key(h, ci_id)?], |r| r.get::<_, Vec<u8>>(0))
                    .optional()?
                {
                    points.extend(decode_hourly(&blob)?.into_iter().filter(in_range));
                }
            }
            if let Some(bucket) = raw.as_mut().and_then(|buckets| buckets.remove(&h)) {
                points.extend(bucket);
            }
            // Stable: the same time keeps hourly before raw, raw in arrival order, which is the
            // order compaction merges them in, so a cursor's skip count stays true.
            points.sort_by_key(|(ts, _)| *ts);
            for point in points {
                if to_skip > 0 && resume.is_some_and(|(ts, _)| ts == point.0) {
                    to_skip -= 1;
                    continue;
                }
                out.push(point);
            }
            if out.len() > limit {
                break;
            }
            hour = next_hour(Some(h), &raw);
        }
    }

    let next = if out.len() > limit {
        out.truncate(limit);
        let last = out[limit - 1].0;
        let mut seen = out.iter().rev().take_while(|(ts, _)| *ts == last).count() as u64;
        if let Some((ts, before)) = resume
            && ts == last
        {
            seen += before;
        }
        Some(HealthCursor {
            ts: last,
            seen_at_ts: seen,
        })
    } else {
        None
    };
    let page = Page {
        items: out.into_iter().map(|(_, sample)| sample).collect(),
        next,
    };
    Ok((Some(page), cost))
}

/// Warns, once per process, that `health_meta` has no row, so every query scans `health_raw`.
fn warn_missing_raw_floor() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "health_meta has no row (damaged database): every health query scans all raw \
             samples; restore it with INSERT INTO health_meta (id, raw_min_ts) \
             SELECT 1, min(ts) FROM health_raw"
        );
    }
}

/// The raw rows of `ci_id` in `from..=to` with an id of at least `from_id`, by hour, each hour
/// in arrival order. Reads the whole raw table from `from_id` on: it has no index on `ci_id`
/// (see the module doc).
fn scan_raw(
    conn: &Connection,
    ci_id: i64,
    from_id: i64,
    from: i64,
    to: i64,
) -> Result<BTreeMap<i64, Vec<Point>>, StoreError> {
    let mut buckets: BTreeMap<i64, Vec<Point>> = BTreeMap::new();
    let mut raw = conn.prepare_cached(
        "SELECT ts, sample FROM health_raw
         WHERE id >= ?4 AND ci_id = ?1 AND ts BETWEEN ?2 AND ?3 ORDER BY id",
    )?;
    let mut rows = raw.query(params![ci_id, from, to, from_id])?;
    while let Some(row) = rows.next()? {
        let ts: i64 = row.get(0)?;
        let sample = decode_sample(blob_of(row, 1)?)?;
        buckets
            .entry(ts.div_euclid(HOUR_MS))
            .or_default()
            .push((ts, sample));
    }
    Ok(buckets)
}

/// The hours a query for `from..=to` (already cut at now plus the clock allowance) looks up in
/// `health_hourly`, whose smallest and largest keys are `first` and `last`: only hours that
/// can hold data, so a range starting in 1970 costs no more than one covering the stored days,
/// and a stray row far in the future (written before series times were checked) is never
/// walked towards.
fn hour_span(first: Option<i64>, last: Option<i64>, from: i64, to: i64) -> Option<(i64, i64)> {
    let (first, last) = (first?, last?);
    let start = from.div_euclid(HOUR_MS).max(first >> HOUR_SHIFT).max(0);
    let end = to.div_euclid(HOUR_MS).min(last >> HOUR_SHIFT);
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::store::ingest::tests::{AGENT, batch, health, inventory_batch};
    use crate::store::testing::temp_store;
    use time::Duration;
    use time::macros::datetime;

    /// 2025-03-01 at `h:m` UTC, the day most tests here take place on.
    fn at(h: u8, m: u8) -> OffsetDateTime {
        datetime!(2025-03-01 00:00 UTC) + Duration::hours(h.into()) + Duration::minutes(m.into())
    }

    /// The agent's computer, from an inventory (seq 1), with one health sample (seq 2).
    async fn computer_with_sample(store: &Store, when: OffsetDateTime) {
        store.ingest(inventory_batch(AGENT, 1, &[])).await.unwrap();
        store
            .ingest(batch(AGENT, vec![health(AGENT, 2, when)]))
            .await
            .unwrap();
    }

    fn count(store: &Store, table: &str) -> i64 {
        Connection::open(store.path())
            .unwrap()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// The whole window in one page.
    async fn range(
        store: &Store,
        ci_id: i64,
        from: OffsetDateTime,
        to: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<HealthSample>>, StoreError> {
        let query = HealthQuery {
            from,
            to,
            after: None,
            limit: 100_000,
        };
        Ok(store.ci_health(ci_id, query, now).await?.map(|page| {
            assert_eq!(page.next, None);
            page.items
        }))
    }

    fn cpu(samples: &[HealthSample]) -> Vec<f64> {
        samples.iter().map(|s| s.cpu_percent.unwrap()).collect()
    }

    #[tokio::test]
    async fn samples_are_compacted_pruned_and_read_back_by_range() {
        let (store, _dir) = temp_store();
        let clock = ManualClock::new(datetime!(2025-03-01 10:00 UTC));
        let retention = Duration::days(1);
        store.ingest(inventory_batch(AGENT, 1, &[])).await.unwrap();

        // Samples every 20 minutes from 10:00 to 12:40: seqs 10..=18.
        let start = clock.now();
        let reports: Vec<_> = (0..9)
            .map(|i| health(AGENT, 10 + i, start + Duration::minutes(20 * i as i64)))
            .collect();
        let mut reports = batch(AGENT, reports);
        reports.received_at = datetime!(2025-03-01 12:40 UTC);
        store.ingest(reports).await.unwrap();
        let ci_id = 1;
        async fn all(store: &Store) -> Result<Option<Vec<HealthSample>>, StoreError> {
            range(
                store,
                1,
                datetime!(2025-03-01 00:00 UTC),
                datetime!(2025-03-02 00:00 UTC),
                datetime!(2025-03-02 00:00 UTC),
            )
            .await
        }
        assert_eq!(cpu(&all(&store).await.unwrap().unwrap()).len(), 9);

        // At 12:30, hours 10 and 11 are complete; the 12:xx samples stay raw.
        clock.set(datetime!(2025-03-01 12:30 UTC));
        let report = store
            .compact_health_chunked(clock.now(), retention, 4, 100)
            .await
            .unwrap();
        assert_eq!(report.moved, 6);
        assert_eq!(report.hourly_rows, 2); // each computer-hour written once, whatever the chunk
        assert_eq!(count(&store, "health_hourly"), 2);
        assert_eq!(count(&store, "health_raw"), 3);
        // Reading across hourly and raw rows gives the same samples, oldest first.
        let back = all(&store).await.unwrap().unwrap();
        assert_eq!(cpu(&back), (10..19).map(|v| v as f64).collect::<Vec<_>>());
        let window = range(
            &store,
            ci_id,
            datetime!(2025-03-01 10:30 UTC),
            datetime!(2025-03-01 12:00 UTC),
            clock.now(),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(cpu(&window), vec![12.0, 13.0, 14.0, 15.0, 16.0]);

        // A late sample for 10:50 merges into the compacted hour.
        store
            .ingest(batch(
                AGENT,
                vec![health(AGENT, 30, datetime!(2025-03-01 10:50 UTC))],
            ))
            .await
            .unwrap();
        clock.advance(Duration::hours(1)); // 13:30
        let report = store.compact_health(clock.now(), retention).await.unwrap();
        assert_eq!(report.moved, 4);
        assert_eq!(count(&store, "health_hourly"), 3);
        assert_eq!(count(&store, "health_raw"), 0);
        let back = all(&store).await.unwrap().unwrap();
        assert_eq!(back.len(), 10);
        assert_eq!(back[3].cpu_percent, Some(30.0));

        // A day later hours 10 and 11 are past retention; hour 12 is not yet.
        clock.set(datetime!(2025-03-02 12:10 UTC));
        let report = store.compact_health(clock.now(), retention).await.unwrap();
        assert_eq!(report.pruned, 2);
        assert_eq!(count(&store, "health_hourly"), 1);
        assert_eq!(
            cpu(&all(&store).await.unwrap().unwrap()),
            vec![16.0, 17.0, 18.0]
        );

        // A sample already past retention when it arrives is dropped, not compacted.
        store
            .ingest(batch(
                AGENT,
                vec![health(AGENT, 40, datetime!(2025-02-01 00:00 UTC))],
            ))
            .await
            .unwrap();
        let report = store.compact_health(clock.now(), retention).await.unwrap();
        assert_eq!((report.dropped, report.moved), (1, 0));
        assert_eq!(count(&store, "health_raw"), 0);
        store.close().await;
    }

    #[tokio::test]
    async fn a_sample_dated_into_the_next_hour_stays_raw_until_that_hour_ends() {
        let (store, _dir) = temp_store();
        let clock = ManualClock::new(datetime!(2025-03-01 10:57 UTC));
        let retention = Duration::days(7);
        store.ingest(inventory_batch(AGENT, 1, &[])).await.unwrap();
        // Arrives at 10:57; the 11:01 sample is 4 minutes ahead, inside the clock allowance, so
        // 11:01 is its series time.
        let mut reports = batch(
            AGENT,
            vec![
                health(AGENT, 2, datetime!(2025-03-01 09:30 UTC)),
                health(AGENT, 3, datetime!(2025-03-01 11:01 UTC)),
            ],
        );
        reports.received_at = clock.now();
        store.ingest(reports).await.unwrap();

        // At 10:58 hour 9 is compacted; the 11:01 sample's hour has not started: it stays raw.
        clock.set(datetime!(2025-03-01 10:58 UTC));
        let report = store.compact_health(clock.now(), retention).await.unwrap();
        assert_eq!((report.moved, report.hourly_rows), (1, 1));
        assert_eq!(count(&store, "health_raw"), 1);
        assert_eq!(count(&store, "health_hourly"), 1);
        // During hour 11 it is a sample of the current hour.
        clock.set(datetime!(2025-03-01 11:30 UTC));
        let report = store.compact_health(clock.now(), retention).await.unwrap();
        assert_eq!(report.moved, 0);
        assert_eq!(count(&store, "health_raw"), 1);
        // Once hour 11 has ended it is compacted into its own hour.
        clock.set(datetime!(2025-03-01 12:00 UTC));
        let report = store.compact_health(clock.now(), retention).await.unwrap();
        assert_eq!((report.moved, report.hourly_rows), (1, 1));
        assert_eq!(count(&store, "health_raw"), 0);
        assert_eq!(count(&store, "health_hourly"), 2);
        let back = range(
            &store,
            1,
            datetime!(2025-03-01 09:00 UTC),
            datetime!(2025-03-01 12:00 UTC),
            clock.now(),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(cpu(&back), vec![2.0, 3.0]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_legacy_raw_row_far_in_the_future_does_not_block_compaction() {
        let (store, _dir) = temp_store();
        let now = datetime!(2025-03-01 12:30 UTC);
        store.ingest(inventory_batch(AGENT, 1, &[])).await.unwrap();
        // A raw row dated in year 9999, as a migration-1 build that trusted collected_at could
        // have stored, ahead (in id order) of an ordinary one.
        let stray = datetime!(9999-12-31 23:00 UTC);
        let blob = rmp_serde::to_vec_named(&HealthSample::empty(AGENT, stray)).unwrap();
        let conn = Connection::open(store.path()).unwrap();
        conn.execute(
            "INSERT INTO health_raw (ci_id, ts, sample) VALUES (1, ?1, ?2)",
            params![to_ms(stray), blob],
        )
        .unwrap();
        conn.execute(
            "UPDATE health_meta SET raw_min_ts = (SELECT min(ts) FROM health_raw)",
            [],
        )
        .unwrap();
        store
            .ingest(batch(
                AGENT,
                vec![health(AGENT, 2, datetime!(2025-03-01 10:10 UTC))],
            ))
            .await
            .unwrap();

        let report = store.compact_health(now, Duration::days(7)).await.unwrap();
        assert_eq!((report.moved, report.hourly_rows), (2, 2));
        assert_eq!(count(&store, "health_raw"), 0);
        assert_eq!(floor(&store), None);
        let back = range(
            &store,
            1,
            datetime!(2025-03-01 00:00 UTC),
            datetime!(2025-03-02 00:00 UTC),
            now,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(cpu(&back), vec![2.0]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_retention_beyond_i64_milliseconds_is_refused_and_deletes_nothing() {
        let (store, _dir) = temp_store();
        let now = datetime!(2025-03-01 12:30 UTC);
        computer_with_sample(&store, datetime!(2025-03-01 10:10 UTC)).await;
        store.compact_health(now, Duration::days(7)).await.unwrap();
        assert_eq!(count(&store, "health_hourly"), 1);
        // 2^64 - 1000 ms: cast with `as`, it was -1000 ms, which put the retention cut-off
        // in the future and pruned every hour.
        let huge: Duration = Duration::milliseconds(i64::MAX) * 2_i32 - Duration::milliseconds(998);
        assert_eq!(huge.whole_milliseconds(), (1i128 << 64) - 1000);
        let err = store.compact_health(now, huge).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        let err = store.compact_health(now, Duration::MAX).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        assert_eq!(count(&store, "health_hourly"), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn pending_samples_join_the_series_of_the_new_computer() {
        let (store, _dir) = temp_store();
        // Health before the first inventory: acked, pending.
        let outcome = store
            .ingest(batch(
                AGENT,
                vec![health(AGENT, 1, at(9, 50)), health(AGENT, 2, at(10, 10))],
            ))
            .await
            .unwrap();
        assert_eq!(outcome.acked, vec![1, 2]);
        assert_eq!(count(&store, "health_pending"), 2);
        let mut first = inventory_batch(AGENT, 3, &[]);
        first.reports.push(health(AGENT, 4, at(10, 20)));
        store.ingest(first).await.unwrap();
        assert_eq!(count(&store, "health_pending"), 0);
        async fn day(store: &Store) -> Vec<HealthSample> {
            range(
                store,
                1,
                datetime!(2025-03-01 00:00 UTC),
                datetime!(2025-03-01 23:59 UTC),
                datetime!(2025-03-01 23:59 UTC),
            )
            .await
            .unwrap()
            .unwrap()
        }
        assert_eq!(cpu(&day(&store).await), vec![1.0, 2.0, 4.0]);

        // Compaction files them into their hours; a later late sample merges into hour 9.
        let report = store
            .compact_health(at(11, 30), Duration::days(7))
            .await
            .unwrap();
        assert_eq!((report.moved, report.hourly_rows), (3, 2));
        assert_eq!(cpu(&day(&store).await), vec![1.0, 2.0, 4.0]);
        store
            .ingest(batch(AGENT, vec![health(AGENT, 5, at(9, 55))]))
            .await
            .unwrap();
        store
            .compact_health(at(12, 30), Duration::days(7))
            .await
            .unwrap();
        assert_eq!(count(&store, "health_raw"), 0);
        assert_eq!(count(&store, "health_hourly"), 2);
        assert_eq!(cpu(&day(&store).await), vec![1.0, 5.0, 2.0, 4.0]);
        store.close().await;
    }

    #[tokio::test]
    async fn pending_samples_past_retention_are_dropped() {
        let (store, _dir) = temp_store();
        store
            .ingest(batch(
                AGENT,
                vec![
                    health(AGENT, 1, datetime!(2025-02-01 00:00 UTC)),
                    health(AGENT, 2, datetime!(2025-03-01 11:00 UTC)),
                ],
            ))
            .await
            .unwrap();
        let report = store
            .compact_health(datetime!(2025-03-01 12:00 UTC), Duration::days(1))
            .await
            .unwrap();
        assert_eq!(report.dropped, 1);
        assert_eq!(count(&store, "health_pending"), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn pages_resume_exactly_across_equal_times_and_compaction() {
        let (store, _dir) = temp_store();
        store.ingest(inventory_batch(AGENT, 1, &[])).await.unwrap();
        let times = [
            at(10, 10),
            at(10, 30),
            at(10, 30),
            at(11, 0),
            at(11, 0),
            at(11, 0),
            at(12, 10),
        ];
        let reports = (0..times.len())
            .map(|i| health(AGENT, 2 + i as u64, times[i]))
            .collect();
        let mut first = batch(AGENT, reports);
        first.received_at = at(12, 15);
        store.ingest(first).await.unwrap();
        // cpu_percent is the seq: 2..=8 in series order.
        let now = at(12, 20);
        let page = |after| {
            let store = &store;
            async move {
                let query = HealthQuery {
                    from: at(0, 0),
                    to: at(23, 0),
                    after,
                    limit: 2,
                };
                store.ci_health(1, query, now).await.unwrap().unwrap()
            }
        };
        let p1 = page(None).await;
        assert_eq!(cpu(&p1.items), vec![2.0, 3.0]);
        assert_eq!(
            p1.next,
            Some(HealthCursor {
                ts: to_ms(at(10, 30)),
                seen_at_ts: 1
            })
        );
        // Hours 10 and 11 move into hourly blobs between two pages.
        store
            .compact_health(at(12, 30), Duration::days(7))
            .await
            .unwrap();
        let p2 = page(p1.next).await;
        assert_eq!(cpu(&p2.items), vec![4.0, 5.0]);
        // A late sample of 11:00 arrives: raw, after the three compacted ones of that time.
        store
            .ingest(batch(AGENT, vec![health(AGENT, 20, at(11, 0))]))
            .await
            .unwrap();
        let p3 = page(p2.next).await;
        assert_eq!(cpu(&p3.items), vec![6.0, 7.0]);
        assert_eq!(
            p3.next,
            Some(HealthCursor {
                ts: to_ms(at(11, 0)),
                seen_at_ts: 3
            })
        );
        let p4 = page(p3.next).await;
        assert_eq!(cpu(&p4.items), vec![20.0, 8.0]);
        assert_eq!(p4.next, None);
        store.close().await;
    }

    fn floor(store: &Store) -> Option<i64> {
        Connection::open(store.path())
            .unwrap()
            .query_row("SELECT raw_min_ts FROM health_meta", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn windows_before_the_oldest_raw_sample_skip_the_raw_scan() {
        let (store, _dir) = temp_store();
        assert_eq!(floor(&store), None);
        store.ingest(inventory_batch(AGENT, 1, &[])).await.unwrap();
        let reports = [at(10, 10), at(10, 20), at(10, 30), at(12, 10)]
            .iter()
            .enumerate()
            .map(|(i, t)| health(AGENT, 2 + i as u64, *t))
            .collect();
        let mut first = batch(AGENT, reports);
        first.received_at = at(12, 15);
        store.ingest(first).await.unwrap();
        assert_eq!(floor(&store), Some(to_ms(at(10, 10))));
        store
            .compact_health(at(12, 30), Duration::days(7))
            .await
            .unwrap();
        assert_eq!(floor(&store), Some(to_ms(at(12, 10))));

        let read = |from, to, limit| {
            let query = HealthQuery {
                from,
                to,
                after: None,
                limit,
            };
            let conn = Connection::open(store.path()).unwrap();
            let (page, cost) = read_page(&conn, 1, &query, to_ms(at(12, 30))).unwrap();
            (cpu(&page.unwrap().items), cost.raw_scanned)
        };
        // Ends before the oldest raw sample: hourly blobs only.
        assert_eq!(
            read(at(10, 0), at(12, 0), 100),
            (vec![2.0, 3.0, 4.0], false)
        );
        // A page that fills before it reaches the raw samples' hour does not scan either.
        assert_eq!(read(at(10, 0), at(13, 0), 2), (vec![2.0, 3.0], false));
        // Reaching them scans once.
        assert_eq!(
            read(at(10, 0), at(13, 0), 100),
            (vec![2.0, 3.0, 4.0, 5.0], true)
        );

        // A late sample lowers the floor in its own transaction, and is found.
        store
            .ingest(batch(AGENT, vec![health(AGENT, 10, at(10, 50))]))
            .await
            .unwrap();
        assert_eq!(floor(&store), Some(to_ms(at(10, 50))));
        assert_eq!(
            read(at(10, 0), at(12, 0), 100),
            (vec![2.0, 3.0, 4.0, 10.0], true)
        );
        store
            .compact_health(at(13, 30), Duration::days(7))
            .await
            .unwrap();
        assert_eq!(floor(&store), None);
        assert!(!read(at(10, 0), at(13, 0), 100).1);
        store.close().await;
    }

    #[tokio::test]
    async fn a_missing_health_meta_row_scans_the_raw_samples() {
        let (store, _dir) = temp_store();
        let now = datetime!(2025-03-01 10:30 UTC);
        computer_with_sample(&store, datetime!(2025-03-01 10:10 UTC)).await;
        // A damaged database: the one row that keeps the raw floor is gone.
        let conn = Connection::open(store.path()).unwrap();
        assert_eq!(conn.execute("DELETE FROM health_meta", []).unwrap(), 1);

        let query = HealthQuery {
            from: datetime!(2025-03-01 10:00 UTC),
            to: datetime!(2025-03-01 11:00 UTC),
            after: None,
            limit: 100,
        };
        let (page, cost) = read_page(&conn, 1, &query, to_ms(now)).unwrap();
        assert_eq!(cpu(&page.unwrap().items), vec![2.0]);
        assert!(cost.raw_scanned);
        let found = range(&store, 1, query.from, query.to, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cpu(&found), vec![2.0]);
        store.close().await;
    }

    #[test]
    fn the_hour_walk_is_bounded_by_the_stored_keys_and_the_query() {
        let key = |hour: i64| Some(hourly_key(hour, 7).unwrap());
        // Stored hours 100..=200; a query from 1970 to hour 150 walks 100..=150 only.
        assert_eq!(
            hour_span(key(100), key(200), 0, 150 * HOUR_MS),
            Some((100, 150))
        );
        assert_eq!(
            hour_span(key(100), key(200), 120 * HOUR_MS + 5, 130 * HOUR_MS),
            Some((120, 130))
        );
        assert_eq!(
            hour_span(key(100), key(200), 300 * HOUR_MS, 400 * HOUR_MS),
            None
        );
        assert_eq!(hour_span(None, None, 0, HOUR_MS), None);
        assert_eq!(
            hour_span(key(0), key(5), -10 * HOUR_MS, HOUR_MS),
            Some((0, 1))
        );
    }

    #[tokio::test]
    async fn a_query_never_reaches_past_now_and_the_clock_allowance() {
        let (store, _dir) = temp_store();
        let now = datetime!(2025-03-01 12:30 UTC);
        computer_with_sample(&store, now - Duration::hours(2)).await;
        store.compact_health(now, Duration::days(7)).await.unwrap();
        // An hourly row in year 2100, as a build that trusted collected_at could have written.
        let stray = datetime!(2100-01-01 00:00 UTC);
        let blob = encode_hourly(&[(to_ms(stray), HealthSample::empty(AGENT, stray))]).unwrap();
        Connection::open(store.path())
            .unwrap()
            .execute(
                "INSERT INTO health_hourly (key, samples) VALUES (?1, ?2)",
                params![
                    hourly_key(to_ms(stray).div_euclid(HOUR_MS), 1).unwrap(),
                    blob
                ],
            )
            .unwrap();
        // Up to 2200: the walk stops at now + 5 minutes instead of looking up 660,000 hours.
        let query = HealthQuery {
            from: now - Duration::days(1),
            to: datetime!(2200-01-01 00:00 UTC),
            after: None,
            limit: 100,
        };
        let (_, cost) = read_page(
            &Connection::open(store.path()).unwrap(),
            1,
            &query,
            to_ms(now),
        )
        .unwrap();
        assert!(cost.hourly_lookups <= 3, "{cost:?}");
        let found = range(
            &store,
            1,
            now - Duration::days(1),
            datetime!(2200-01-01 00:00 UTC),
            now,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(cpu(&found), vec![2.0]);
        store.close().await;
    }

    #[tokio::test]
    async fn health_of_an_unknown_ci_is_none() {
        let (store, _dir) = temp_store();
        let t = datetime!(2025-03-01 10:00 UTC);
        assert_eq!(range(&store, 42, t, t, t).await.unwrap(), None);
        store.close().await;
    }
}
