//! Health compaction: the raw samples of completed hours move into `health_hourly`, and each
//! computer-hour's blob is written once per pass, however many samples it holds.
//!
//! `health_raw` is in arrival order, so the rows of one computer-hour are spread over the whole
//! hour (at 100,000 computers, one row in 100,000). A pass groups them by computer before it
//! writes anything, in four steps; each survives a crash or a restart.
//!
//! 1. **Cut.** On its own connection, the pass finds the first raw row, in id (arrival) order,
//!    of the current hour. Once now is within the clock allowance ([`MAX_CLOCK_AHEAD_MS`], 5
//!    minutes) of the next hour, a row of that hour stops it too: a sample may be dated that far
//!    ahead of its arrival. Every row before that one, up to id `X`, is the pass's. A writer job
//!    records `health_meta.compact_upto = X` and `compact_ci = 0`: a pass is under way.
//! 2. **Sort.** The rows of those computers above `compact_ci`, samples included, are copied
//!    in id order, 10,000 ids per read transaction, into the pass's temporary database, where
//!    each 500,000 of them are sorted into a run in `(ci_id, id)` order (SQLite's external sort:
//!    memory stays bounded whatever the fleet's rate). The main database is read once and in
//!    order; fetching each computer's rows by id instead was a random read per sample once the
//!    hour was out of the page cache. Each sample is compressed on its way in against a
//!    dictionary of the pass's first samples ([`Squeezer`]), so the runs need temporary space
//!    of about 230 bytes per sample (measured: 4.0 GB for 17.3 million; BENCHMARKS.md).
//! 3. **Move.** A batch takes the next computers, about `chunk` rows (their counts are kept
//!    beside the runs), reads their rows from every run, and builds each computer-hour's blob.
//!    The raw samples' bytes are already the MessagePack the blob holds, so they are spliced,
//!    not decoded and encoded again. One zstd context compresses every blob of the pass. One
//!    writer job stores the blobs of those computers and, in the same transaction, raises
//!    `compact_ci` to the last of them: from then on, raw rows up to `X` of computers up to
//!    `compact_ci` are in `health_hourly`, and a range query skips them (`store::health`).
//!    Where an hour already has a blob (a late sample of an hour an earlier pass compacted),
//!    the two are merged.
//! 4. **Delete.** Writer jobs delete the pass's raw rows, oldest first, `chunk` ids at a time;
//!    the job that reaches `X` also clears the marker. Before each, the pass reads the range
//!    itself, so the writer finds its pages in the OS page cache instead of waiting on the
//!    disk with every commit behind it ([`PassConn::warm`]). Then the raw floor
//!    (`health_meta.raw_min_ts`) is raised to the oldest remaining row's time.
//!
//! A pass that stops part way (a crash, a restart, a failed job) leaves the marker; the next
//! pass resumes it instead of cutting a new one: it sorts the rows of the computers above
//! `compact_ci` again and goes on.
//!
//! Rows older than the retention window are dropped, not moved. A row dated further ahead than
//! the clock allowance (a database from before series times were capped) is moved into its own
//! hour: left raw, it would hold back every row behind it. A sample of an older hour that
//! arrived after a row of the current hour (a late sample, or pending samples moved when their
//! agent got its computer CI) waits behind that row for the next pass, so the deleted rows are
//! always one id range.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::checkpoint::WalGate;
use super::health::{
    CompactionReport, HOUR_MS, HOURLY_FORMAT_ZSTD_MSGPACK_TS, MAX_CLOCK_AHEAD_MS, Point, blob_of,
    decode_hourly, encode_hourly, hourly_key,
};
use super::{Store, StoreError};

// The pass's reads of `health_raw`. Each one reads a bounded range of ids, so no read
// transaction of the pass lasts long: one that scanned the whole table pinned the WAL for as
// long as the scan took (on a cold 18 GB database, minutes), and nothing could be checkpointed
// meanwhile (BENCHMARKS.md, "The WAL under load"). `min(id), max(id)` in one select is such a
// scan: SQLite looks up a single `min` or `max` in the b-tree, but not two. The test
// `the_pass_reads_bounded_ranges_only` checks each plan.

/// The smallest and largest raw ids: two b-tree lookups.
const RAW_ID_RANGE: &str =
    "SELECT (SELECT min(id) FROM health_raw), (SELECT max(id) FROM health_raw)";
/// The first raw id from `?1` on.
const NEXT_ID_FROM: &str = "SELECT min(id) FROM health_raw WHERE id >= ?1";
/// Reads every page of an id range's rows (see [`PassConn::warm`]).
const WARM_RANGE: &str = "SELECT count(*) FROM health_raw WHERE id BETWEEN ?1 AND ?2";
/// The first row in an id range dated from `?3` to before `?4`.
const FIRST_LIVE_IN: &str =
    "SELECT id FROM health_raw WHERE id BETWEEN ?1 AND ?2 AND ts >= ?3 AND ts < ?4
     ORDER BY id LIMIT 1";
/// An id range's rows of computers above `?3`, for the pass's temporary table.
const ROWS_IN: &str =
    "SELECT ci_id, id, ts, sample FROM main.health_raw WHERE id BETWEEN ?1 AND ?2 AND ci_id > ?3";
/// The first samples of an id range: the dictionary of [`Squeezer`].
const DICTIONARY_IN: &str =
    "SELECT sample FROM main.health_raw WHERE id BETWEEN ?1 AND ?2 LIMIT ?3";
/// The oldest time in an id range.
const RAW_MIN_TS_IN: &str = "SELECT min(ts) FROM health_raw WHERE id BETWEEN ?1 AND ?2";

/// The raw rows a pass under way has already put into `health_hourly`: those with id up to
/// `upto` of computers up to `ci`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Moved {
    pub upto: i64,
    pub ci: i64,
}

impl Moved {
    /// The smallest raw id of computer `ci_id` a range query still reads: rows below it are in
    /// `health_hourly`.
    pub(super) fn raw_floor_id(marker: Option<Moved>, ci_id: i64) -> i64 {
        match marker {
            Some(moved) if ci_id <= moved.ci => moved.upto.saturating_add(1),
            _ => i64::MIN,
        }
    }
}

/// The marker of the pass under way, if any.
pub(super) fn pass_marker(conn: &Connection) -> Result<Option<Moved>, StoreError> {
    let row = conn
        .prepare_cached("SELECT compact_upto, compact_ci FROM health_meta WHERE id = 1")?
        .query_row([], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()?;
    Ok(match row {
        Some((Some(upto), Some(ci))) => Some(Moved { upto, ci }),
        _ => None,
    })
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PassEnd {
    /// Every raw row of completed hours is in `health_hourly` or dropped, and deleted.
    Done,
    /// Stopped after the number of move jobs the caller allowed (tests simulate a crash so).
    Stopped,
}

impl Store {
    /// One compaction pass over the raw samples (see the module doc), moving at most
    /// `max_moves` batches of about `chunk` rows before it stops.
    pub(super) async fn compact_raw(
        &self,
        now: i64,
        retention: i64,
        chunk: usize,
        run_rows: usize,
        max_moves: usize,
    ) -> Result<(CompactionReport, PassEnd), StoreError> {
        let chunk = chunk.max(1);
        let run_rows = run_rows.max(1);
        // Ids per read transaction of the scans: one transaction holds the read gate
        // (`store::checkpoint`) for as long as it reads.
        let piece = i64::try_from(chunk).unwrap_or(i64::MAX);
        let oldest_kept_hour = now.saturating_sub(retention).div_euclid(HOUR_MS).max(0);
        let mut report = CompactionReport::default();
        let path = self.path.clone();
        let rest = self.compaction_rest;
        let gate = self.gate.clone();
        let mut pass = blocking(move || PassConn::open(&path, gate)).await?;

        // 1. Cut, unless a pass is under way.
        let marker;
        (pass, marker) = pass.run(|p| pass_marker(&p.conn)).await?;
        let mut moved = match marker {
            Some(moved) => moved,
            None => {
                let upto;
                (pass, upto) = paced(rest, pass.run(move |p| p.cut(now, piece))).await?;
                let Some(upto) = upto else {
                    return Ok((report, PassEnd::Done));
                };
                self.writer.run(move |conn| start_pass(conn, upto)).await?;
                Moved { upto, ci: 0 }
            }
        };

        // 2. Sort, and 3. move.
        let first;
        (pass, first) = pass.run(move |p| p.begin_sort(piece)).await?;
        if let Some(first) = first {
            let mut from = first;
            while from <= moved.upto {
                let to = from.saturating_add(piece - 1).min(moved.upto);
                let copy = pass.run(move |p| p.copy_piece((from, to), moved.ci, run_rows));
                (pass, ()) = paced(rest, copy).await?;
                from = to.saturating_add(1);
            }
            (pass, ()) = paced(rest, pass.run(|p| p.seal_run())).await?;
        }
        let mut moves = 0;
        loop {
            if moves == max_moves {
                return Ok((report, PassEnd::Stopped));
            }
            let batch;
            (pass, batch) = paced(
                rest,
                pass.run(move |p| p.next_batch(moved.ci, chunk, oldest_kept_hour)),
            )
            .await?;
            report.moved += batch.moved;
            report.dropped += batch.dropped;
            report.hourly_rows += batch.blobs.len();
            let Some(last_ci) = batch.last_ci else {
                break;
            };
            let before = moved;
            let store = self
                .writer
                .run(move |conn| store_batch(conn, before, last_ci, batch.blobs));
            paced(rest, store).await?;
            moved.ci = last_ci;
            moves += 1;
        }

        // 4. Delete, then raise the floor. The pass reads each range just before the writer
        // deletes it, and rests after both.
        let mut from = i64::MIN;
        loop {
            let (pass_back, (done, end)) = paced(rest, async {
                let (pass, end) = pass.run(move |p| p.warm(from, moved.upto, piece)).await?;
                let done = self
                    .writer
                    .run(move |conn| delete_moved(conn, moved.upto, end))
                    .await?;
                Ok::<_, StoreError>((pass, (done, end)))
            })
            .await?;
            pass = pass_back;
            if done {
                break;
            }
            from = end.saturating_add(1);
        }
        let floor;
        (_, floor) = pass.run(move |p| p.raw_floor(piece)).await?;
        self.writer
            .run(move |conn| raise_raw_floor(conn, floor))
            .await?;
        Ok((report, PassEnd::Done))
    }
}

/// Runs `step`, then waits `rest` times as long as it took (wall time: time spent queued behind
/// ingest jobs counts, so a busier collector gets a slower pass).
async fn paced<T>(rest: u32, step: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = step.await;
    if rest > 0 {
        tokio::time::sleep(started.elapsed().saturating_mul(rest)).await;
    }
    out
}

/// Runs `work` off the async executor.
async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| StoreError::JobPanicked)?
}

/// A computer-hour's new blob, under its `health_hourly` key.
type KeyedBlob = (i64, Vec<u8>);

#[derive(Debug, Default)]
struct Batch {
    blobs: Vec<KeyedBlob>,
    /// The last computer whose rows the batch holds; `None` when no computer was left.
    last_ci: Option<i64>,
    moved: usize,
    dropped: usize,
}

/// The pass's own connection. It reads the main database and writes only its temporary table
/// of sorted runs, so it is not `query_only` (that pragma refuses temporary tables too).
struct PassConn {
    conn: Connection,
    packer: Packer,
    /// Sorted runs built by [`PassConn::begin_sort`]: `temp.compact_run_0` and on.
    runs: usize,
    /// Rows in `temp.compact_piece`, waiting for the next run.
    in_piece: usize,
    /// Compresses the samples the runs hold; built by [`PassConn::begin_sort`].
    squeezer: Option<Squeezer>,
    /// Each read transaction passes through it (`store::checkpoint`).
    gate: Arc<WalGate>,
}

/// Builds hourly blobs, reusing one zstd context and one buffer.
struct Packer {
    compressor: zstd::bulk::Compressor<'static>,
    /// The MessagePack of the blob being built.
    packed: Vec<u8>,
}

/// How many of the pass's first samples make [`Squeezer`]'s dictionary.
const DICTIONARY_SAMPLES: i64 = 64;

/// The largest sample [`Squeezer::unsqueeze`] accepts: SQLite's limit on one value
/// (`SQLITE_MAX_LENGTH`), so no stored sample is larger.
const MAX_SAMPLE_BYTES: u64 = 1_000_000_000;

/// Compresses single samples for the pass's sorted runs, and back.
///
/// One sample alone hardly compresses: most of its bytes are field names, which repeat from
/// one sample to the next. A dictionary of whole samples (zstd's raw-content dictionary, no
/// training) holds them. Measured on the bench fleet's samples: 577 bytes to about 170. (A
/// dictionary that began with zstd's dictionary magic would be read as a trained one; a
/// MessagePack sample never begins so.)
struct Squeezer {
    compressor: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
    /// The last sample squeezed, or unsqueezed.
    out: Vec<u8>,
}

impl Squeezer {
    fn new(dictionary: &[u8]) -> Result<Squeezer, StoreError> {
        use zstd::zstd_safe::CParameter;
        let zstd_err = |e: std::io::Error| StoreError::Corrupt(format!("zstd: {e}"));
        let mut compressor =
            zstd::bulk::Compressor::with_dictionary(1, dictionary).map_err(zstd_err)?;
        // The content size lets [`Squeezer::unsqueeze`] size its buffer; no checksum, as the
        // temporary database is the pass's own.
        compressor
            .set_parameter(CParameter::ContentSizeFlag(true))
            .and_then(|()| compressor.set_parameter(CParameter::ChecksumFlag(false)))
            .map_err(zstd_err)?;
        Ok(Squeezer {
            compressor,
            decompressor: zstd::bulk::Decompressor::with_dictionary(dictionary)
                .map_err(zstd_err)?,
            out: Vec::new(),
        })
    }

    fn squeeze(&mut self, sample: &[u8]) -> Result<&[u8], StoreError> {
        self.out.clear();
        self.out
            .reserve(zstd::zstd_safe::compress_bound(sample.len()));
        self.compressor
            .compress_to_buffer(sample, &mut self.out)
            .map_err(|e| StoreError::Corrupt(format!("health sample: {e}")))?;
        Ok(&self.out)
    }

    fn unsqueeze(&mut self, squeezed: &[u8]) -> Result<&[u8], StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("sorted health sample: {what}"));
        let size = zstd::zstd_safe::get_frame_content_size(squeezed)
            .ok()
            .flatten()
            .filter(|size| *size <= MAX_SAMPLE_BYTES)
            .ok_or_else(|| corrupt("no size, or too large".into()))?;
        self.out.clear();
        self.out.reserve(usize::try_from(size).unwrap_or(0));
        self.decompressor
            .decompress_to_buffer(squeezed, &mut self.out)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(&self.out)
    }
}

impl PassConn {
    fn open(path: &PathBuf, gate: Arc<WalGate>) -> Result<PassConn, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            Path::new(path),
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(super::BUSY_TIMEOUT).map_err(open_err)?;
        // The sort spills to a temporary file, never to memory without bound.
        conn.execute_batch(&format!(
            "PRAGMA temp_store = FILE; PRAGMA cache_size = -{};",
            super::READER_CACHE_KIB
        ))
        .map_err(open_err)?;
        // One cached statement per run, and the pass's own.
        conn.set_prepared_statement_cache_capacity(256);
        Ok(PassConn {
            conn,
            packer: Packer::new()?,
            runs: 0,
            in_piece: 0,
            squeezer: None,
            gate,
        })
    }

    async fn run<T, F>(self, work: F) -> Result<(PassConn, T), StoreError>
    where
        F: FnOnce(&mut PassConn) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        blocking(move || {
            let mut pass = self;
            let out = work(&mut pass)?;
            Ok((pass, out))
        })
        .await
    }

    /// The last raw id before the first row of the current hour (or of the next, within the
    /// clock allowance of it); `None` when no row comes before it. Scans in pieces of `piece`
    /// ids, each its own read transaction (see [`PassConn::begin_sort`]).
    fn cut(&self, now: i64, piece: i64) -> Result<Option<i64>, StoreError> {
        let current_hour = now.div_euclid(HOUR_MS);
        let ahead_hour = now.saturating_add(MAX_CLOCK_AHEAD_MS).div_euclid(HOUR_MS);
        let (Some(first), Some(last)) = self.id_range()? else {
            return Ok(None);
        };
        let mut live = self.conn.prepare_cached(FIRST_LIVE_IN)?;
        let mut from = first;
        while from <= last {
            let to = from.saturating_add(piece - 1).min(last);
            let _entered = self.gate.enter();
            let found: Option<i64> = live
                .query_row(
                    params![
                        from,
                        to,
                        current_hour.saturating_mul(HOUR_MS),
                        ahead_hour.saturating_add(1).saturating_mul(HOUR_MS)
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = found {
                return Ok((id > first).then_some(id - 1));
            }
            from = to.saturating_add(1);
        }
        // Rows that arrive from now on come after `last`: they wait for the next pass.
        Ok(Some(last))
    }

    /// The smallest and largest raw ids.
    fn id_range(&self) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let _entered = self.gate.enter();
        Ok(self
            .conn
            .prepare_cached(RAW_ID_RANGE)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?)
    }

    /// The sort copies the rows the pass has not moved yet into sorted runs in the temporary
    /// database: `temp.compact_run_K`, each about `run_rows` rows in `(ci_id, id)` order, and
    /// `temp.compact_cis`, the computers with their row counts.
    ///
    /// The main database is read in id order, `piece` ids per read transaction (each holds
    /// the read gate, `store::checkpoint`), so the reads are sequential: the rows of one
    /// computer-hour are one in 100,000 of the hour's, and fetching them by id, as the pass
    /// first did, was a random read per sample once the hour was out of the page cache
    /// (measured: about 3,300 a second, an hour at 5,000 reports/s in 90 minutes). Each run is
    /// sorted within the temporary database, which no snapshot of the main one needs. The runs
    /// hold a copy of the samples, each compressed against a dictionary of the pass's first
    /// samples ([`Squeezer`]): about 230 bytes of temporary space per sample, against 680
    /// uncompressed (measured).
    ///
    /// This starts it: empty temporary tables, the dictionary, and the first raw id; then
    /// [`PassConn::copy_piece`] for each piece, and [`PassConn::seal_run`] for the last run.
    /// Each is a step of its own, so the pass rests after each.
    fn begin_sort(&mut self, piece: i64) -> Result<Option<i64>, StoreError> {
        for run in 0..self.runs {
            self.conn
                .execute_batch(&format!("DROP TABLE IF EXISTS temp.compact_run_{run};"))?;
        }
        self.runs = 0;
        self.in_piece = 0;
        self.conn.execute_batch(
            "DROP TABLE IF EXISTS temp.compact_piece;
             DROP TABLE IF EXISTS temp.compact_cis;
             CREATE TEMP TABLE compact_piece (ci_id INTEGER, id INTEGER, ts INTEGER, sample BLOB);
             CREATE TEMP TABLE compact_cis (ci_id INTEGER PRIMARY KEY, n INTEGER NOT NULL);",
        )?;
        let Some(first) = self.id_range()?.0 else {
            return Ok(None);
        };
        let mut dictionary = Vec::new();
        {
            let _entered = self.gate.enter();
            let mut read = self.conn.prepare_cached(DICTIONARY_IN)?;
            let mut samples = read.query(params![
                first,
                first.saturating_add(piece - 1),
                DICTIONARY_SAMPLES
            ])?;
            while let Some(row) = samples.next()? {
                dictionary.extend_from_slice(blob_of(row, 0)?);
            }
        }
        self.squeezer = Some(Squeezer::new(&dictionary)?);
        Ok(Some(first))
    }

    /// Copies the rows of ids `from..=to` of computers above `after_ci`, one read transaction;
    /// sorts them into a run once `run_rows` wait.
    fn copy_piece(
        &mut self,
        (from, to): (i64, i64),
        after_ci: i64,
        run_rows: usize,
    ) -> Result<(), StoreError> {
        let squeezer = self
            .squeezer
            .as_mut()
            .ok_or_else(|| StoreError::Invalid("a piece copied before the sort began".into()))?;
        let mut copied = 0;
        {
            let _entered = self.gate.enter();
            // One read transaction of the main database, which the temporary table's writes
            // join.
            let tx = self.conn.unchecked_transaction()?;
            {
                let mut read = tx.prepare_cached(ROWS_IN)?;
                let mut write =
                    tx.prepare_cached("INSERT INTO temp.compact_piece VALUES (?1, ?2, ?3, ?4)")?;
                let mut rows = read.query([from, to, after_ci])?;
                while let Some(row) = rows.next()? {
                    let squeezed = squeezer.squeeze(blob_of(row, 3)?)?;
                    write.execute(params![
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                        squeezed
                    ])?;
                    copied += 1;
                }
            }
            tx.commit()?;
        }
        self.in_piece += copied;
        if self.in_piece >= run_rows {
            self.seal_run()?;
        }
        Ok(())
    }

    /// Sorts `temp.compact_piece` into the next run and empties it; the temporary database
    /// alone.
    fn seal_run(&mut self) -> Result<(), StoreError> {
        if self.in_piece == 0 {
            return Ok(());
        }
        let run = self.runs;
        self.conn.execute_batch(&format!(
            "CREATE TEMP TABLE compact_run_{run} (
                 ci_id  INTEGER NOT NULL,
                 id     INTEGER NOT NULL,
                 ts     INTEGER NOT NULL,
                 sample BLOB    NOT NULL,
                 PRIMARY KEY (ci_id, id)
             ) WITHOUT ROWID;
             INSERT INTO temp.compact_run_{run}
                 SELECT ci_id, id, ts, sample FROM temp.compact_piece ORDER BY ci_id, id;
             INSERT INTO temp.compact_cis
                 SELECT ci_id, count(*) FROM temp.compact_piece WHERE true GROUP BY ci_id
                 ON CONFLICT (ci_id) DO UPDATE SET n = n + excluded.n;
             DELETE FROM temp.compact_piece;"
        ))?;
        self.runs += 1;
        self.in_piece = 0;
        Ok(())
    }

    /// The blobs of the next computers after `after_ci`, whole computers, about `chunk` rows.
    /// Reads the sorted runs only, never the main database.
    fn next_batch(
        &mut self,
        after_ci: i64,
        chunk: usize,
        oldest_kept_hour: i64,
    ) -> Result<Batch, StoreError> {
        let mut batch = Batch::default();
        // The batch's computers: from the one after `after_ci` to `last`, about `chunk` rows.
        let mut last = None;
        {
            let mut cis = self.conn.prepare_cached(
                "SELECT ci_id, n FROM temp.compact_cis WHERE ci_id > ?1 ORDER BY ci_id",
            )?;
            let mut rows = cis.query([after_ci])?;
            let mut total = 0usize;
            while let Some(row) = rows.next()? {
                last = Some(row.get::<_, i64>(0)?);
                total = total.saturating_add(usize::try_from(row.get::<_, i64>(1)?).unwrap_or(0));
                if total >= chunk {
                    break;
                }
            }
        }
        let Some(last) = last else {
            return Ok(batch);
        };
        // Their rows from every run: (ci_id, id, ts, bytes in `arena`), put in (ci_id, id)
        // order.
        let mut rows: Vec<(i64, i64, i64, Range<usize>)> = Vec::new();
        let mut arena: Vec<u8> = Vec::new();
        let squeezer = self
            .squeezer
            .as_mut()
            .ok_or_else(|| StoreError::Invalid("a batch read before the sort began".into()))?;
        for run in 0..self.runs {
            let mut read = self.conn.prepare_cached(&format!(
                "SELECT ci_id, id, ts, sample FROM temp.compact_run_{run}
                 WHERE ci_id > ?1 AND ci_id <= ?2"
            ))?;
            let mut found = read.query([after_ci, last])?;
            while let Some(row) = found.next()? {
                let start = arena.len();
                arena.extend_from_slice(squeezer.unsqueeze(blob_of(row, 3)?)?);
                rows.push((row.get(0)?, row.get(1)?, row.get(2)?, start..arena.len()));
            }
        }
        rows.sort_unstable_by_key(|(ci, id, ..)| (*ci, *id));
        // The computer's samples: (hour, ts, bytes in `arena`).
        let mut points: Vec<(i64, i64, Range<usize>)> = Vec::new();
        for computer in rows.chunk_by(|a, b| a.0 == b.0) {
            for (_, _, ts, at) in computer {
                let hour = ts.div_euclid(HOUR_MS);
                // Hours before 1970 do not fit the hourly key; no retention keeps them anyway.
                if hour < oldest_kept_hour {
                    batch.dropped += 1;
                    continue;
                }
                check_one_value(&arena[at.clone()])?;
                points.push((hour, *ts, at.clone()));
                batch.moved += 1;
            }
            self.packer
                .flush(computer[0].0, &mut points, &arena, &mut batch)?;
        }
        Ok(batch)
    }

    /// Reads every page of the next range of raw rows to delete, so that they are in the OS
    /// page cache when the writer deletes them next.
    ///
    /// A delete reads each page it frees. The pass's rows were written up to an hour earlier
    /// and are seldom still cached, so the writer's delete jobs waited on the disk, one 4 KB
    /// read after another, and every ingest commit waited behind them: measured under 5,000
    /// reports/s, the writer read 17 MB/s of raw pages and the p99 of each 10-second window
    /// rose from about 40 ms to 130 to 150 ms for the two minutes of the delete. Here the
    /// pass's own thread waits instead.
    ///
    /// The range is the next `piece` ids from the first raw id from `from` on, up to `upto`
    /// (so a gap in the ids costs no job); answers its end.
    fn warm(&self, from: i64, upto: i64, piece: i64) -> Result<i64, StoreError> {
        let _entered = self.gate.enter();
        let first: Option<i64> = self
            .conn
            .prepare_cached(NEXT_ID_FROM)?
            .query_row([from], |r| r.get(0))?;
        let Some(first) = first.filter(|first| *first <= upto) else {
            return Ok(upto);
        };
        let end = upto.min(first.saturating_add(piece - 1));
        self.conn
            .prepare_cached(WARM_RANGE)?
            .query_row([first, end], |r| r.get::<_, i64>(0))?;
        Ok(end)
    }

    /// The oldest raw time and the newest raw id. `health_raw` has no index on `ts`, so the
    /// oldest time takes a scan: it reads in pieces of `piece` ids, each its own read
    /// transaction (see [`PassConn::begin_sort`]). Rows above the newest id, inserted since, are
    /// counted by [`raise_raw_floor`]; only the pass deletes raw rows, so none goes missing
    /// between two pieces.
    fn raw_floor(&self, piece: i64) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let (Some(first), Some(last)) = self.id_range()? else {
            return Ok((None, None));
        };
        let mut oldest = self.conn.prepare_cached(RAW_MIN_TS_IN)?;
        let mut min_ts: Option<i64> = None;
        let mut from = first;
        while from <= last {
            let to = from.saturating_add(piece - 1).min(last);
            let piece_min: Option<i64> = {
                let _entered = self.gate.enter();
                oldest.query_row([from, to], |r| r.get(0))?
            };
            min_ts = match (min_ts, piece_min) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            from = to.saturating_add(1);
        }
        Ok((min_ts, Some(last)))
    }
}

impl Packer {
    fn new() -> Result<Packer, StoreError> {
        Ok(Packer {
            compressor: zstd::bulk::Compressor::new(3)
                .map_err(|e| StoreError::Corrupt(format!("zstd: {e}")))?,
            packed: Vec::new(),
        })
    }

    /// Turns computer `ci_id`'s samples (in arrival order) into one blob per hour.
    fn flush(
        &mut self,
        ci_id: i64,
        points: &mut Vec<(i64, i64, Range<usize>)>,
        arena: &[u8],
        batch: &mut Batch,
    ) -> Result<(), StoreError> {
        // Stable: samples of the same time stay in arrival order, as a range query reads them.
        points.sort_by_key(|(hour, ts, _)| (*hour, *ts));
        for hour in points.chunk_by(|a, b| a.0 == b.0) {
            let key = hourly_key(hour[0].0, ci_id)?;
            let samples = hour.iter().map(|(_, ts, at)| (*ts, &arena[at.clone()]));
            batch.blobs.push((key, self.pack(samples)?));
        }
        points.clear();
        batch.last_ci = Some(ci_id);
        Ok(())
    }

    /// An hourly blob (format 2) of `samples`, each the MessagePack of one sample.
    fn pack<'a>(
        &mut self,
        samples: impl ExactSizeIterator<Item = (i64, &'a [u8])>,
    ) -> Result<Vec<u8>, StoreError> {
        let packed = &mut self.packed;
        packed.clear();
        let len = u32::try_from(samples.len())
            .map_err(|_| StoreError::Invalid("too many samples in one hour".into()))?;
        write_header(rmp::encode::write_array_len(packed, len).map(drop))?;
        for (ts, sample) in samples {
            // A `(ts, sample)` pair, as serde writes a tuple: an array of two.
            write_header(rmp::encode::write_array_len(packed, 2).map(drop))?;
            write_header(rmp::encode::write_sint(packed, ts).map(drop))?;
            packed.extend_from_slice(sample);
        }
        let compressed = self
            .compressor
            .compress(packed)
            .map_err(|e| StoreError::Corrupt(format!("hourly health blob: {e}")))?;
        let mut blob = Vec::with_capacity(1 + compressed.len());
        blob.push(HOURLY_FORMAT_ZSTD_MSGPACK_TS);
        blob.extend_from_slice(&compressed);
        Ok(blob)
    }
}

fn write_header<E: std::fmt::Display>(written: Result<(), E>) -> Result<(), StoreError> {
    written.map_err(|e| StoreError::Invalid(format!("hourly health blob: {e}")))
}

/// Refuses a raw sample that is not exactly one MessagePack value: spliced into a blob, it
/// would make the whole hour unreadable.
fn check_one_value(sample: &[u8]) -> Result<(), StoreError> {
    let mut rest = sample;
    <serde::de::IgnoredAny as serde::Deserialize>::deserialize(&mut rmp_serde::Deserializer::new(
        &mut rest,
    ))
    .map_err(|e| StoreError::Corrupt(format!("health sample: {e}")))?;
    if !rest.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "health sample: {} bytes after the value",
            rest.len()
        )));
    }
    Ok(())
}

/// Records that a pass owns the raw rows up to `upto`.
fn start_pass(conn: &Connection, upto: i64) -> Result<(), StoreError> {
    let started = conn
        .prepare_cached(
            "UPDATE health_meta SET compact_upto = ?1, compact_ci = 0
             WHERE id = 1 AND compact_upto IS NULL",
        )?
        .execute([upto])?;
    if started != 1 {
        return Err(StoreError::Invalid(
            "another health compaction pass is under way".into(),
        ));
    }
    Ok(())
}

/// Stores a batch's blobs and moves the marker from `before` to `last_ci`, in one transaction.
fn store_batch(
    conn: &Connection,
    before: Moved,
    last_ci: i64,
    blobs: Vec<KeyedBlob>,
) -> Result<(), StoreError> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO health_hourly (key, samples) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
    )?;
    for (key, blob) in blobs {
        if insert.execute(params![key, blob])? == 0 {
            merge_into_hour(conn, key, &blob)?;
        }
    }
    let advanced = conn
        .prepare_cached(
            "UPDATE health_meta SET compact_ci = ?3
             WHERE id = 1 AND compact_upto = ?1 AND compact_ci = ?2",
        )?
        .execute(params![before.upto, before.ci, last_ci])?;
    if advanced != 1 {
        // Rolls the job back: its blobs must not exist without the marker that says so.
        return Err(StoreError::Invalid(
            "the health compaction marker moved under the pass".into(),
        ));
    }
    Ok(())
}

/// Merges `blob` into the hour that already has one (an earlier pass compacted it).
fn merge_into_hour(conn: &Connection, key: i64, blob: &[u8]) -> Result<(), StoreError> {
    let old: Vec<u8> = conn
        .prepare_cached("SELECT samples FROM health_hourly WHERE key = ?1")?
        .query_row([key], |r| r.get(0))?;
    let mut merged: Vec<Point> = decode_hourly(&old)?;
    merged.extend(decode_hourly(blob)?);
    // Stable: the same time keeps the older blob's samples first, in arrival order.
    merged.sort_by_key(|(ts, _)| *ts);
    conn.prepare_cached("UPDATE health_hourly SET samples = ?2 WHERE key = ?1")?
        .execute(params![key, encode_hourly(&merged)?])?;
    Ok(())
}

/// Deletes the moved raw rows up to id `end`; answers whether none is left (`end` reached
/// `upto`), and then ends the pass in the same transaction.
fn delete_moved(conn: &Connection, upto: i64, end: i64) -> Result<bool, StoreError> {
    let end = end.min(upto);
    conn.prepare_cached("DELETE FROM health_raw WHERE id <= ?1")?
        .execute([end])?;
    if end < upto {
        return Ok(false);
    }
    // Deleting up to `upto` and clearing the marker are one transaction: once the largest
    // moved row is gone a new row could reuse its id, and must not be skipped as moved.
    conn.prepare_cached(
        "UPDATE health_meta SET compact_upto = NULL, compact_ci = NULL WHERE id = 1",
    )?
    .execute([])?;
    Ok(true)
}

/// Raises `health_meta.raw_min_ts` to the oldest raw time, read as `(min ts, max id)` on a
/// snapshot: rows inserted since (ids above that max) may be older, and count too.
fn raise_raw_floor(
    conn: &Connection,
    (min_ts, max_id): (Option<i64>, Option<i64>),
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE health_meta SET raw_min_ts =
           (SELECT min(ts) FROM (SELECT ?1 AS ts UNION ALL
                                 SELECT min(ts) FROM health_raw WHERE id > ?2))
         WHERE id = 1",
    )?
    .execute(params![min_ts, max_id.unwrap_or(i64::MIN)])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use crate::store::ingest::tests::{batch, health, inventory};
    use crate::store::model::HealthQuery;
    use crate::store::testing::temp_store;
    use crate::store::to_ms;
    use census_common::report::{Report, ReportBody};
    use census_common::{FilesystemUsage, HealthSample};
    use std::sync::atomic::Ordering;
    use time::macros::datetime;
    use time::{Duration, OffsetDateTime};

    const RETENTION: i64 = 7 * 24 * HOUR_MS;

    fn at(h: u8, m: u8) -> OffsetDateTime {
        datetime!(2025-03-01 00:00 UTC) + Duration::hours(h.into()) + Duration::minutes(m.into())
    }

    fn agent(n: usize) -> String {
        format!("0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a{n:02}")
    }

    /// The computer CI of agent `i`.
    fn ci_of(store: &Store, i: usize) -> i64 {
        count(
            store,
            &format!("SELECT ci_id FROM agent WHERE agent_id = '{}'", agent(i)),
        )
    }

    /// `n` computers, one per agent.
    async fn computers(store: &Store, n: usize) {
        for i in 0..n {
            let mut inv = inventory(&agent(i), &[], &["/"]);
            inv.host.hostname = Some(format!("web-{i}"));
            let report = Report {
                seq: 1,
                body: ReportBody::Inventory(inv),
            };
            store.ingest(batch(&agent(i), vec![report])).await.unwrap();
        }
        assert_eq!(
            count(store, "SELECT count(DISTINCT ci_id) FROM agent"),
            n as i64
        );
    }

    /// Samples of agent `i` at `times`, sent one report at a time from seq `seq`, the agents
    /// taking turns, so each computer's rows lie among the others' as in a fleet.
    async fn interleaved(store: &Store, agents: usize, times: &[OffsetDateTime], seq: u64) {
        for (k, when) in times.iter().enumerate() {
            for i in 0..agents {
                let mut one = batch(&agent(i), vec![health(&agent(i), seq + k as u64, *when)]);
                one.received_at = at(12, 10);
                store.ingest(one).await.unwrap();
            }
        }
    }

    fn count(store: &Store, sql: &str) -> i64 {
        Connection::open(store.path())
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    fn marker(store: &Store) -> Option<Moved> {
        pass_marker(&Connection::open(store.path()).unwrap()).unwrap()
    }

    /// Every sample of `ci_id` on 2025-03-01, as (series time, cpu), over several pages.
    async fn series(store: &Store, ci_id: i64, now: OffsetDateTime) -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let query = HealthQuery {
                from: at(0, 0),
                to: at(23, 59),
                after,
                limit: 3,
            };
            let page = store.ci_health(ci_id, query, now).await.unwrap().unwrap();
            out.extend(
                page.items
                    .iter()
                    .map(|s| (to_ms(s.collected_at), s.cpu_percent.unwrap())),
            );
            match page.next {
                Some(next) => after = Some(next),
                None => return out,
            }
        }
    }

    fn seqs(times: &[OffsetDateTime], first_seq: u64) -> Vec<(i64, f64)> {
        let mut out: Vec<(i64, f64)> = times
            .iter()
            .enumerate()
            .map(|(k, t)| (to_ms(*t), (first_seq + k as u64) as f64))
            .collect();
        out.sort_by_key(|(ts, _)| *ts);
        out
    }

    #[tokio::test]
    async fn each_computer_hour_is_written_once_however_its_rows_interleave() {
        let (store, _dir) = temp_store();
        computers(&store, 3).await;
        // Four samples of hour 10, not in time order, and one of hour 11; every computer's rows
        // lie among the others'.
        let times = [at(10, 40), at(10, 5), at(10, 20), at(10, 20), at(11, 15)];
        interleaved(&store, 3, &times, 2).await;
        // A sample of the current hour, and a late one of hour 10 behind it.
        interleaved(&store, 1, &[at(12, 1)], 10).await;
        interleaved(&store, 1, &[at(10, 59)], 11).await;

        let now = at(12, 30);
        let report = store
            .compact_health_chunked(now, Duration::days(7), 1, 100)
            .await
            .unwrap();
        // Chunks of one row still write each computer-hour once: 3 computers × 2 hours.
        assert_eq!(
            (report.moved, report.hourly_rows, report.dropped),
            (15, 6, 0)
        );
        assert_eq!(count(&store, "SELECT count(*) FROM health_hourly"), 6);
        assert_eq!(count(&store, "SELECT count(*) FROM health_raw"), 2);
        assert_eq!(marker(&store), None);
        for i in 0..3 {
            let ci_id = ci_of(&store, i);
            let mut expected = seqs(&times, 2);
            if i == 0 {
                expected.extend(seqs(&[at(12, 1), at(10, 59)], 10));
                expected.sort_by_key(|(ts, _)| *ts);
            }
            assert_eq!(series(&store, ci_id, now).await, expected, "ci {ci_id}");
        }

        // The late sample waits behind the current hour's row, which a later pass in hour 12
        // leaves alone.
        let report = store
            .compact_health_chunked(at(12, 40), Duration::days(7), 1, 100)
            .await
            .unwrap();
        assert_eq!(report, CompactionReport::default());
        // Once hour 12 has ended both move: the late one is merged into its hour's blob.
        let report = store
            .compact_health_chunked(at(13, 1), Duration::days(7), 1, 100)
            .await
            .unwrap();
        assert_eq!((report.moved, report.hourly_rows), (2, 2));
        assert_eq!(count(&store, "SELECT count(*) FROM health_hourly"), 7);
        assert_eq!(count(&store, "SELECT count(*) FROM health_raw"), 0);
        let mut expected = seqs(&times, 2);
        expected.extend(seqs(&[at(12, 1), at(10, 59)], 10));
        expected.sort_by_key(|(ts, _)| *ts);
        assert_eq!(series(&store, ci_of(&store, 0), at(13, 1)).await, expected);
        store.close().await;
    }

    #[tokio::test]
    async fn a_pass_stopped_part_way_resumes_and_reads_stay_exact_meanwhile() {
        let (store, dir) = temp_store();
        computers(&store, 3).await;
        let times = [at(10, 10), at(10, 30), at(10, 30), at(10, 50)];
        interleaved(&store, 3, &times, 2).await;
        let now = at(11, 30);

        // One move job, then the pass stops, as a crash after that job's commit would leave it.
        // Sorted runs of 3 rows: the 12 rows make 4, each computer's rows in all of them.
        let (report, end) = store
            .compact_raw(to_ms(now), RETENTION, 1, 3, 1)
            .await
            .unwrap();
        assert_eq!(end, PassEnd::Stopped);
        assert_eq!((report.moved, report.hourly_rows), (4, 1));
        let upto = count(&store, "SELECT max(id) FROM health_raw");
        assert_eq!(
            marker(&store),
            Some(Moved {
                upto,
                ci: ci_of(&store, 0)
            })
        );
        assert_eq!(count(&store, "SELECT count(*) FROM health_hourly"), 1);
        assert_eq!(count(&store, "SELECT count(*) FROM health_raw"), 12);
        // Computer 0 is read from its blob, its raw rows skipped; 1 and 2 from the raw rows.
        let cis: Vec<i64> = (0..3).map(|i| ci_of(&store, i)).collect();
        for ci_id in &cis {
            assert_eq!(
                series(&store, *ci_id, now).await,
                seqs(&times, 2),
                "ci {ci_id}"
            );
        }
        // A late sample of hour 10 for computer 0 arrives after the cut: read once, raw.
        interleaved(&store, 1, &[at(10, 55)], 6).await;
        let mut with_late = seqs(&times, 2);
        with_late.extend(seqs(&[at(10, 55)], 6));
        assert_eq!(series(&store, cis[0], now).await, with_late);
        store.close().await;

        // A restarted collector resumes the pass: computers 2 and 3, then the delete.
        let store = Store::open(&dir.path().join("census.db"), &StoreOptions::default()).unwrap();
        let report = store
            .compact_health_chunked(now, Duration::days(7), 1, 100)
            .await
            .unwrap();
        assert_eq!((report.moved, report.hourly_rows), (8, 2));
        assert_eq!(marker(&store), None);
        assert_eq!(count(&store, "SELECT count(*) FROM health_raw"), 1);
        assert_eq!(series(&store, cis[0], now).await, with_late);
        for ci_id in &cis[1..] {
            assert_eq!(
                series(&store, *ci_id, now).await,
                seqs(&times, 2),
                "ci {ci_id}"
            );
        }
        // The next pass merges the late sample into computer 0's hour.
        let report = store
            .compact_health_chunked(now, Duration::days(7), 1, 100)
            .await
            .unwrap();
        assert_eq!((report.moved, report.hourly_rows), (1, 1));
        assert_eq!(count(&store, "SELECT count(*) FROM health_raw"), 0);
        assert_eq!(count(&store, "SELECT count(*) FROM health_hourly"), 3);
        assert_eq!(series(&store, cis[0], now).await, with_late);
        store.close().await;
    }

    #[tokio::test]
    async fn the_delete_steps_over_gaps_in_the_ids_and_ends_the_pass() {
        let (store, _dir) = temp_store();
        computers(&store, 2).await;
        let times = [at(10, 1), at(10, 2), at(10, 3), at(10, 4), at(10, 5)];
        interleaved(&store, 2, &times, 2).await;
        // A row of the current hour after them: the pass's range ends just before it.
        interleaved(&store, 1, &[at(12, 1)], 10).await;
        // A gap of 100 ids, 50 delete jobs' worth at 2 ids a job.
        Connection::open(store.path())
            .unwrap()
            .execute(
                "UPDATE health_raw SET id = id + 100
                 WHERE id > (SELECT min(id) + 3 FROM health_raw)",
                [],
            )
            .unwrap();
        let jobs = || store.writer.stats().jobs.load(Ordering::Relaxed);
        let before = jobs();
        let (report, end) = store
            .compact_raw(to_ms(at(12, 30)), 7 * 24 * HOUR_MS, 2, 4, usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            (end, report.moved, report.hourly_rows),
            (PassEnd::Done, 10, 2)
        );
        assert_eq!(marker(&store), None);
        // The start, 2 batches of one computer each, 5 deletes of up to 2 rows, the raw floor.
        assert_eq!(jobs() - before, 1 + 2 + 5 + 1);
        // The current hour's row stays, and is the raw floor.
        assert_eq!(count(&store, "SELECT count(*) FROM health_raw"), 1);
        assert_eq!(
            count(&store, "SELECT raw_min_ts FROM health_meta"),
            to_ms(at(12, 1))
        );
        let mut first = seqs(&times, 2);
        first.extend(seqs(&[at(12, 1)], 10));
        assert_eq!(series(&store, ci_of(&store, 0), at(12, 30)).await, first);
        assert_eq!(
            series(&store, ci_of(&store, 1), at(12, 30)).await,
            seqs(&times, 2)
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_batch_whose_marker_moved_is_refused_and_leaves_nothing() {
        let (store, _dir) = temp_store();
        store.writer.run(|conn| start_pass(conn, 10)).await.unwrap();
        // A second pass cannot start over it.
        let err = store
            .writer
            .run(|conn| start_pass(conn, 20))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        // A batch written against another marker rolls back with its blobs.
        let stale = Moved { upto: 10, ci: 5 };
        let blob = vec![(hourly_key(1, 7).unwrap(), encode_hourly(&[]).unwrap())];
        let err = store
            .writer
            .run(move |conn| store_batch(conn, stale, 7, blob))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        assert_eq!(count(&store, "SELECT count(*) FROM health_hourly"), 0);
        assert_eq!(marker(&store), Some(Moved { upto: 10, ci: 0 }));
        store.close().await;
    }

    #[tokio::test]
    async fn a_raw_sample_that_is_not_one_value_stops_the_pass_and_changes_nothing() {
        let (store, _dir) = temp_store();
        computers(&store, 1).await;
        interleaved(&store, 1, &[at(10, 10)], 2).await;
        // A truncated map, as a damaged page could leave it.
        Connection::open(store.path())
            .unwrap()
            .execute(
                "INSERT INTO health_raw (ci_id, ts, sample) VALUES (?1, ?2, x'8101')",
                [ci_of(&store, 0), to_ms(at(10, 20))],
            )
            .unwrap();
        let err = store
            .compact_health(at(11, 30), Duration::days(7))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert_eq!(count(&store, "SELECT count(*) FROM health_hourly"), 0);
        assert_eq!(count(&store, "SELECT count(*) FROM health_raw"), 2);
        assert!(check_one_value(&[0x81, 0xa1, b'a', 0x01, 0x02]).is_err());
        assert!(check_one_value(&[0x81, 0xa1, b'a', 0x01]).is_ok());
        store.close().await;
    }

    #[test]
    fn a_spliced_blob_reads_back_as_the_encoded_one() {
        let mut sample = HealthSample::empty(agent(0), at(10, 0));
        sample.cpu_percent = Some(12.5);
        sample.load = Some([0.5, 0.25, -1.0]);
        sample.uptime_secs = Some(u64::MAX);
        sample.filesystems = vec![FilesystemUsage {
            mount: "/srv/ünïcode".into(),
            used_percent: Some(91.0),
            inodes_used_percent: None,
        }];
        let mut other = HealthSample::empty(agent(1), at(10, 1));
        other.reports_dropped = Some(3);
        let points: Vec<Point> = vec![
            (to_ms(at(10, 0)), sample),
            (to_ms(at(10, 1)), other.clone()),
            (i64::MIN, other),
        ];
        let raw: Vec<Vec<u8>> = points
            .iter()
            .map(|(_, s)| rmp_serde::to_vec_named(s).unwrap())
            .collect();
        let mut packer = Packer::new().unwrap();
        let spliced = packer
            .pack(
                points
                    .iter()
                    .zip(&raw)
                    .map(|((ts, _), bytes)| (*ts, bytes.as_slice())),
            )
            .unwrap();
        assert_eq!(decode_hourly(&spliced).unwrap(), points);
        assert_eq!(
            decode_hourly(&encode_hourly(&points).unwrap()).unwrap(),
            decode_hourly(&spliced).unwrap()
        );
        // The same twice from one context: nothing carries over from the last blob.
        let again = packer
            .pack(std::iter::once((1, raw[1].as_slice())))
            .unwrap();
        assert_eq!(
            decode_hourly(&again).unwrap(),
            vec![(1, points[1].1.clone())]
        );
    }

    #[test]
    fn a_squeezed_sample_comes_back_byte_for_byte_and_smaller() {
        let samples: Vec<Vec<u8>> = (0..40)
            .map(|i| {
                let mut sample = HealthSample::empty(agent(i), at(10, 0));
                sample.cpu_percent = Some(f64::from(u32::try_from(i).unwrap()) * 1.5);
                sample.memory_used_percent = Some(40.0);
                sample.filesystems = vec![FilesystemUsage {
                    mount: "/".into(),
                    used_percent: Some(51.0),
                    inodes_used_percent: Some(3.0),
                }];
                rmp_serde::to_vec_named(&sample).unwrap()
            })
            .collect();
        let mut squeezer = Squeezer::new(&samples[..8].concat()).unwrap();
        let (mut plain, mut squeezed) = (0, 0);
        for sample in &samples[8..] {
            let small = squeezer.squeeze(sample).unwrap().to_vec();
            plain += sample.len();
            squeezed += small.len();
            assert_eq!(squeezer.unsqueeze(&small).unwrap(), sample.as_slice());
        }
        assert!(squeezed * 2 < plain, "{squeezed} of {plain} bytes");
        // No dictionary (a pass with no sample to take one from) still round-trips.
        let mut bare = Squeezer::new(&[]).unwrap();
        let small = bare.squeeze(&samples[0]).unwrap().to_vec();
        assert_eq!(bare.unsqueeze(&small).unwrap(), samples[0].as_slice());
        // Bytes that are not a frame of its own are refused, not read as a sample.
        assert!(matches!(
            squeezer.unsqueeze(&samples[0]),
            Err(StoreError::Corrupt(_))
        ));
        let mut cut = squeezer.squeeze(&samples[9]).unwrap().to_vec();
        cut.truncate(cut.len() - 3);
        assert!(matches!(
            squeezer.unsqueeze(&cut),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn the_raw_floor_counts_rows_inserted_after_its_snapshot() {
        let (store, _dir) = temp_store();
        let conn = Connection::open(store.path()).unwrap();
        let insert = |ts: i64| {
            conn.execute(
                "INSERT INTO health_raw (ci_id, ts, sample) VALUES (1, ?1, x'80')",
                [ts],
            )
            .unwrap();
        };
        let floor = |conn: &Connection| -> Option<i64> {
            conn.query_row("SELECT raw_min_ts FROM health_meta", [], |r| r.get(0))
                .unwrap()
        };
        insert(5_000);
        insert(9_000);
        // The snapshot saw ids up to 2, oldest 5,000; an older row arrived since.
        insert(1_000);
        raise_raw_floor(&conn, (Some(5_000), Some(2))).unwrap();
        assert_eq!(floor(&conn), Some(1_000));
        // Read in pieces of two ids, the oldest time is the third row's.
        let pass = PassConn::open(&store.path().to_owned(), store.gate.clone()).unwrap();
        assert_eq!(pass.raw_floor(2).unwrap(), (Some(1_000), Some(3)));
        assert_eq!(pass.raw_floor(1).unwrap(), (Some(1_000), Some(3)));
        assert_eq!(pass.raw_floor(3).unwrap(), (Some(1_000), Some(3)));
        // An empty snapshot: every row counts.
        raise_raw_floor(&conn, (None, None)).unwrap();
        assert_eq!(floor(&conn), Some(1_000));
        conn.execute("DELETE FROM health_raw", []).unwrap();
        raise_raw_floor(&conn, (None, None)).unwrap();
        assert_eq!(floor(&conn), None);
        store.close().await;
    }

    /// The plan's lines, as `EXPLAIN QUERY PLAN` words them.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        // Unbound parameters are NULL, which leaves the plan as it is.
        let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let mut rows = explain.raw_query();
        let mut lines = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            lines.push(row.get::<_, String>(3).unwrap().replace("main.", ""));
        }
        lines
    }

    #[tokio::test]
    async fn the_pass_reads_bounded_ranges_only() {
        let (store, _dir) = temp_store();
        let conn = Connection::open(store.path()).unwrap();
        conn.execute_batch(
            "CREATE TEMP TABLE compact_piece (ci_id INTEGER, id INTEGER, ts INTEGER, sample BLOB);",
        )
        .unwrap();
        let whole_scan = |lines: &[String]| {
            lines
                .iter()
                .any(|l| l.starts_with("SCAN health_raw") || l.starts_with("SCAN health_hourly"))
        };
        for sql in [
            RAW_ID_RANGE,
            NEXT_ID_FROM,
            WARM_RANGE,
            FIRST_LIVE_IN,
            ROWS_IN,
            DICTIONARY_IN,
            RAW_MIN_TS_IN,
            super::super::health::HOURLY_KEY_RANGE,
        ] {
            let lines = plan(&conn, sql);
            assert!(!whole_scan(&lines), "{sql}: {lines:?}");
            assert!(
                lines.iter().any(|l| l.starts_with("SEARCH health_")),
                "{sql}: {lines:?}"
            );
        }
        // What the check catches: both bounds in one select read the whole table.
        assert!(whole_scan(&plan(
            &conn,
            "SELECT min(id), max(id) FROM health_raw"
        )));
        store.close().await;
    }
}
