//! The spool: reports waiting for the collector's acknowledgement, on disk in the state
//! directory (`spool/`), so that neither a crash, a `kill -9`, a power cut nor a reboot loses
//! one.
//!
//! **Promises.**
//! - A report is on disk (written and `fdatasync`ed, its segment's directory entry synced)
//!   before [`Spool::push`] returns, and it leaves only when the collector acknowledged its
//!   sequence number, when the size limit drops it (oldest health samples first; counted and
//!   reported), when the collector refused it for good (moved aside to `rejected/`), or when it
//!   is found damaged (logged and skipped, never sent).
//! - Reports are offered in sequence order.
//! - A torn write (a crash in the middle of an append) or a damaged record is detected by its
//!   checksum, logged, and skipped; the records after it are still read.
//! - A write that fails (a full disk) changes nothing; the report it was for counts as
//!   dropped. A segment that cannot be read is reported to the caller, which sends nothing
//!   after it.
//! - Disk use stays within `spool_max_bytes` plus one segment: live reports are kept within
//!   the limit, and dead space (acknowledged reports) is reclaimed by deleting whole segments
//!   from the front, or by rewriting the live reports into fresh segments when the dead space
//!   grows past both one segment and the live data.
//!
//! **The format.** An append-only log of records in numbered segment files
//! (`spool/<16 hex digits>.seg`, a new one every [`Spool::segment_bytes`] bytes). A record is
//! `magic (4) | payload length (u32 LE) | CRC-32 of length and payload (u32 LE) | payload`,
//! and a payload is one of:
//! - `put`: a report (its seq, kind, flags, the dropped-report count it carries, and the
//!   report as named MessagePack);
//! - `gone`: seqs that left, and why (acknowledged, dropped, replaced, renumbered, refused,
//!   damaged);
//! - `uncertain`: seqs that a send without a definite answer carried (see below);
//! - `renumber`: (old seq, new seq) pairs, all in one record so that a renumbering happens
//!   whole or not at all; the reports' `put` records stay where they are;
//! - `counter`: the count of dropped reports not yet carried by a health sample, written when
//!   compaction rewrites the log and before segments holding the records behind it are
//!   deleted.
//!
//! Opening replays the segments in order; the state is what the records say. A segment is
//! deleted only from the front, so a `gone` record never disappears while the `put` it undoes
//! is still on disk. A damaged `gone` record can bring back reports the collector already
//! acknowledged: they are sent again under their old numbers, which the collector acknowledges
//! as repeats without storing them twice. A damaged `put` loses that one report (logged).
//!
//! **Uncertain reports.** A report that a send with an unknown outcome carried (no answer, an
//! unreadable answer, a 5xx) *may* be stored although no ack said so. The mark is kept on disk
//! with the report; the service relies on it when the state directory went back in time (see
//! `service.rs`).
//!
//! **Dropped reports.** When a new report does not fit, the oldest health samples are dropped
//! until it does; a newer inventory replaces an older unacknowledged one (the collector needs
//! the machine's current state). The number dropped is kept in the spool and written into the
//! next health sample as `reports_dropped`; if that sample is dropped or refused in turn, its
//! count goes back into the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use census_common::{Report, ReportBody};
use tracing::{error, info, warn};

/// The spool directory, under the state directory.
pub const SPOOL_DIR: &str = "spool";
/// Refused reports, under the state directory.
pub const REJECTED_DIR: &str = "rejected";
/// How many refused reports `rejected/` keeps; the oldest go first.
pub const MAX_REJECTED: usize = 32;
/// Default `spool_max_bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

const MAGIC: [u8; 4] = *b"CSP\x01";
const HEADER: usize = 12;
/// A record larger than this is damage, not data (an inventory is well under it).
const MAX_PAYLOAD: u32 = 256 << 20;

const PUT: u8 = 1;
const GONE: u8 = 2;
const UNCERTAIN: u8 = 3;
const COUNTER: u8 = 4;
const RENUMBER: u8 = 5;

/// `put` flags.
const FLAG_UNCERTAIN: u8 = 1;
/// A copy of a report already in the log (renumbered or compacted): it does not take the
/// dropped-report count it carries out of the unreported count.
const FLAG_MOVED: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Health,
    Inventory,
}

impl Kind {
    fn of(report: &Report) -> Kind {
        match report.body {
            ReportBody::Health(_) => Kind::Health,
            ReportBody::Inventory(_) => Kind::Inventory,
        }
    }

    fn byte(self) -> u8 {
        match self {
            Kind::Health => 0,
            Kind::Inventory => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Health),
            1 => Some(Kind::Inventory),
            _ => None,
        }
    }
}

/// Why reports left the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    Acked,
    /// The spool was full.
    Dropped,
    /// A newer inventory replaced it.
    Replaced,
    /// It was given a new number (a new `put` holds it).
    Renumbered,
    /// The collector refused it for good; moved aside.
    Refused,
    /// Its record was damaged.
    Damaged,
    /// Dropped because it may have been stored under its old number (renumbering).
    Doubtful,
}

impl Gone {
    fn byte(self) -> u8 {
        match self {
            Gone::Acked => 0,
            Gone::Dropped => 1,
            Gone::Replaced => 2,
            Gone::Renumbered => 3,
            Gone::Refused => 4,
            Gone::Damaged => 5,
            Gone::Doubtful => 6,
        }
    }

    fn from_byte(b: u8) -> Option<Gone> {
        Some(match b {
            0 => Gone::Acked,
            1 => Gone::Dropped,
            2 => Gone::Replaced,
            3 => Gone::Renumbered,
            4 => Gone::Refused,
            5 => Gone::Damaged,
            6 => Gone::Doubtful,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("report {seq} does not encode: {message}")]
    Encode { seq: u64, message: String },
}

/// Where a live report's `put` record is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The seq the `put` record holds: the report's first number, before any renumbering.
    put_seq: u64,
    segment: u64,
    offset: u64,
    /// The whole record, header included.
    len: u64,
    kind: Kind,
    uncertain: bool,
    /// Dropped reports this health sample reports.
    carried: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Segment {
    bytes: u64,
    live: usize,
}

/// What [`Spool::renumber_through`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Renumbered {
    /// (old seq, new seq), in order.
    pub moved: Vec<(u64, u64)>,
    /// Health samples dropped because they may be stored under their old number.
    pub dropped: Vec<u64>,
}

/// What [`Spool::push`] made room with.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// Health samples dropped because the spool was full.
    pub dropped: Vec<u64>,
    /// The older inventory this one replaced.
    pub replaced: Option<u64>,
}

/// What [`Spool::load`] read.
#[derive(Debug, Default)]
pub struct Loaded {
    pub reports: Vec<Report>,
    /// False when a segment could not be read: nothing after the reports here may be sent.
    pub complete: bool,
}

/// Reads records, keeping the last segment file open (loads and rewrites go in order).
#[derive(Default)]
struct SegmentReader {
    open: Option<(PathBuf, File)>,
}

impl SegmentReader {
    fn read(&mut self, path: &Path, entry: &Entry) -> io::Result<Vec<u8>> {
        if self.open.as_ref().is_none_or(|(p, _)| p != path) {
            self.open = Some((path.to_owned(), File::open(path)?));
        }
        let (_, file) = self.open.as_mut().expect("opened above");
        let mut bytes = vec![0; entry.len as usize];
        file.seek(SeekFrom::Start(entry.offset))?;
        file.read_exact(&mut bytes)?;
        Ok(bytes)
    }
}

/// What opening found wrong, for tests and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte ranges skipped as damaged, per segment.
    pub skipped: Vec<(u64, u64, u64)>,
    /// Bytes cut off the end of the last segment (a torn append).
    pub torn_bytes: u64,
    /// Health samples dropped at open to get back within the limit (a smaller limit than
    /// before, or reports a damaged record brought back).
    pub dropped: Vec<u64>,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: BTreeMap<u64, Segment>,
    /// The segment appends go to, open for appending.
    head: Option<(u64, File)>,
    entries: BTreeMap<u64, Entry>,
    live_bytes: u64,
    /// Dropped reports not yet carried by a health sample in the spool.
    unreported: u64,
    damage: Damage,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("reports", &self.entries.len())
            .field("live_bytes", &self.live_bytes)
            .field("disk_bytes", &self.disk_bytes())
            .finish()
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, replaying what is on disk.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Spool, SpoolError> {
        Spool::open_with_segments(dir, max_bytes, (max_bytes / 16).clamp(64 << 10, 4 << 20))
    }

    /// [`Spool::open`] with a chosen segment size (tests use tiny ones to exercise rotation
    /// and compaction).
    pub(crate) fn open_with_segments(
        dir: impl Into<PathBuf>,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<Spool, SpoolError> {
        let dir = dir.into();
        if !dir.exists() {
            create_dir(&dir).map_err(|source| io_error(&dir, source))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(|source| io_error(parent, source))?;
            }
        }
        let mut spool = Spool {
            segment_bytes,
            dir,
            max_bytes,
            segments: BTreeMap::new(),
            head: None,
            entries: BTreeMap::new(),
            live_bytes: 0,
            unreported: 0,
            damage: Damage::default(),
        };
        spool.replay()?;
        if !spool.entries.is_empty() {
            info!(
                reports = spool.entries.len(),
                bytes = spool.live_bytes,
                "spooled reports from before the restart will be sent"
            );
        }
        Ok(spool)
    }

    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// What opening found damaged.
    pub fn damage(&self) -> &Damage {
        &self.damage
    }

    fn replay(&mut self) -> Result<(), SpoolError> {
        let mut ids = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(|source| io_error(&self.dir, source))? {
            let item = item.map_err(|source| io_error(&self.dir, source))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            match segment_id(&name) {
                Some(id) => ids.push(id),
                None => {
                    warn!(file = %item.path().display(), "ignoring a file in the spool that is not a segment")
                }
            }
        }
        ids.sort_unstable();
        let last = ids.last().copied();
        for id in ids {
            let path = self.segment_path(id);
            let bytes = fs::read(&path).map_err(|source| io_error(&path, source))?;
            let end = self.replay_segment(id, &bytes);
            let mut size = bytes.len() as u64;
            if Some(id) == last && end < size {
                // A torn append at the end of the log: cut it off so appends continue after
                // the last whole record.
                warn!(
                    segment = %path.display(),
                    bytes = size - end,
                    "cutting off an incomplete record at the end of the spool (the agent \
                     stopped in the middle of writing it; that report was never spooled)"
                );
                self.damage.torn_bytes = size - end;
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|source| io_error(&path, source))?;
                file.set_len(end)
                    .and_then(|()| file.sync_all())
                    .map_err(|source| io_error(&path, source))?;
                size = end;
            }
            let segment = self.segments.entry(id).or_default();
            segment.bytes = size;
        }
        if let Some(id) = last {
            let path = self.segment_path(id);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|source| io_error(&path, source))?;
            self.head = Some((id, file));
        }
        let dropped = self.make_room();
        if !dropped.is_empty() {
            if let Err(e) = self.append(&gone_record(Gone::Dropped, &dropped)) {
                // In memory they are gone; a restart drops them again.
                warn!(error = %e, "could not record the samples dropped to fit the limit");
            }
            self.damage.dropped = dropped;
        }
        // A full disk must not keep the agent from starting: what it holds is still sent.
        self.reclaim_logged();
        Ok(())
    }

    /// Applies one segment's records; answers where the last whole record ends.
    fn replay_segment(&mut self, id: u64, bytes: &[u8]) -> u64 {
        let mut pos = 0usize;
        let mut end = 0usize;
        while pos < bytes.len() {
            match frame_at(bytes, pos) {
                Some(payload) => {
                    let len = (HEADER + payload.len()) as u64;
                    self.apply(id, pos as u64, len, payload);
                    pos += HEADER + payload.len();
                    end = pos;
                }
                None => {
                    // Damaged: resynchronise on the next whole record, if any.
                    let next = (pos + 1..bytes.len()).find(|&p| frame_at(bytes, p).is_some());
                    let Some(next) = next else { break };
                    warn!(
                        segment = %self.segment_path(id).display(),
                        offset = pos,
                        bytes = next - pos,
                        "skipping a damaged spool record (a report in it is lost, or reports \
                         the collector acknowledged are sent again and acknowledged as repeats)"
                    );
                    self.damage
                        .skipped
                        .push((id, pos as u64, (next - pos) as u64));
                    pos = next;
                }
            }
        }
        end as u64
    }

    /// Applies one record read back from the log.
    fn apply(&mut self, segment: u64, offset: u64, len: u64, payload: &[u8]) {
        let mut r = Reader(payload);
        let Some(kind) = r.u8() else { return };
        match kind {
            PUT => {
                let (Some(seq), Some(kind), Some(flags), Some(carried)) =
                    (r.u64(), r.u8().and_then(Kind::from_byte), r.u8(), r.u64())
                else {
                    return;
                };
                if flags & FLAG_MOVED == 0 {
                    self.unreported = self.unreported.saturating_sub(carried);
                }
                self.insert(
                    seq,
                    Entry {
                        put_seq: seq,
                        segment,
                        offset,
                        len,
                        kind,
                        uncertain: flags & FLAG_UNCERTAIN != 0,
                        carried,
                    },
                );
            }
            RENUMBER => {
                while let (Some(old), Some(new)) = (r.u64(), r.u64()) {
                    self.renumber_entry(old, new);
                }
            }
            GONE => {
                let Some(why) = r.u8().and_then(Gone::from_byte) else {
                    return;
                };
                while let Some(seq) = r.u64() {
                    self.forget(seq, why);
                }
            }
            UNCERTAIN => {
                while let Some(seq) = r.u64() {
                    if let Some(entry) = self.entries.get_mut(&seq) {
                        entry.uncertain = true;
                    }
                }
            }
            COUNTER => {
                if let Some(count) = r.u64() {
                    self.unreported = count;
                }
            }
            _ => {}
        }
    }

    /// Moves a report to a new number; its record stays where it is.
    fn renumber_entry(&mut self, old: u64, new: u64) {
        if let Some(mut entry) = self.entries.remove(&old) {
            self.forget(new, Gone::Renumbered);
            entry.uncertain = false;
            self.entries.insert(new, entry);
        }
    }

    fn insert(&mut self, seq: u64, entry: Entry) {
        self.forget(seq, Gone::Renumbered);
        self.segments.entry(entry.segment).or_default().live += 1;
        self.live_bytes += entry.len;
        self.entries.insert(seq, entry);
    }

    /// Takes a report out of the index; answers whether it was there.
    fn forget(&mut self, seq: u64, why: Gone) -> bool {
        let Some(entry) = self.entries.remove(&seq) else {
            return false;
        };
        if let Some(segment) = self.segments.get_mut(&entry.segment) {
            segment.live -= 1;
        }
        self.live_bytes -= entry.len;
        self.unreported += match why {
            // Delivered, or still held by the renumbered copy.
            Gone::Acked | Gone::Renumbered | Gone::Doubtful => 0,
            Gone::Dropped => 1 + entry.carried,
            Gone::Replaced | Gone::Refused | Gone::Damaged => entry.carried,
        };
        true
    }

    /// Spools a report, making room first (module doc). Durable when this returns. If it
    /// cannot be written (a full disk), nothing else changes and the report counts as dropped.
    pub fn push(&mut self, mut report: Report) -> Result<Pushed, SpoolError> {
        let kind = Kind::of(&report);
        // Plan first, change nothing until the write is durable.
        let replaced: Vec<u64> = match kind {
            Kind::Inventory => self.seqs_of(Kind::Inventory),
            Kind::Health => Vec::new(),
        };
        let mut live = self.live_bytes;
        let mut unreported = self.unreported;
        for seq in &replaced {
            let entry = &self.entries[seq];
            live -= entry.len;
            unreported += entry.carried;
        }
        // The size of the new record, with room for the count a health sample carries.
        let estimate = HEADER as u64 + 32 + encoded_len(&report)?;
        let mut dropped = Vec::new();
        for (seq, entry) in self.entries.iter().filter(|(_, e)| e.kind == Kind::Health) {
            if live + estimate <= self.max_bytes {
                break;
            }
            live -= entry.len;
            unreported += 1 + entry.carried;
            dropped.push(*seq);
        }
        let carried = match &mut report.body {
            ReportBody::Health(sample) if unreported > 0 => {
                sample.reports_dropped = Some(unreported);
                unreported
            }
            _ => 0,
        };
        let mut frames = Vec::new();
        if !replaced.is_empty() {
            frames.extend(gone_record(Gone::Replaced, &replaced));
        }
        if !dropped.is_empty() {
            frames.extend(gone_record(Gone::Dropped, &dropped));
        }
        let put = match put_record(&report, 0, carried) {
            Ok(put) => put,
            Err(e) => {
                self.unreported += 1;
                return Err(e);
            }
        };
        let offset_in_write = frames.len() as u64;
        frames.extend_from_slice(&put);
        let (segment, offset) = match self.append(&frames) {
            Ok(at) => at,
            Err(e) => {
                self.unreported += 1;
                return Err(e);
            }
        };
        for seq in &replaced {
            warn!(
                seq,
                "dropped an unacknowledged inventory; a newer one replaces it"
            );
            self.forget(*seq, Gone::Replaced);
        }
        if let (Some(first), Some(last)) = (dropped.first(), dropped.last()) {
            warn!(
                reports = dropped.len(),
                first,
                last,
                limit = self.max_bytes,
                "the spool is full: dropped the oldest health samples (counted in the next \
                 health sample)"
            );
        }
        for seq in &dropped {
            self.forget(*seq, Gone::Dropped);
        }
        self.unreported -= carried;
        self.insert(
            report.seq,
            Entry {
                put_seq: report.seq,
                segment,
                offset: offset + offset_in_write,
                len: put.len() as u64,
                kind,
                uncertain: false,
                carried,
            },
        );
        self.reclaim_logged();
        Ok(Pushed {
            dropped,
            replaced: replaced.last().copied(),
        })
    }

    /// Drops the oldest health samples until the live reports fit within the limit again
    /// (after a smaller limit than before, or reports a damaged record brought back); answers
    /// the seqs dropped, for the caller to record.
    fn make_room(&mut self) -> Vec<u64> {
        let mut dropped = Vec::new();
        let health: Vec<u64> = self.seqs_of(Kind::Health);
        for seq in health {
            if self.live_bytes <= self.max_bytes {
                break;
            }
            self.forget(seq, Gone::Dropped);
            dropped.push(seq);
        }
        if let (Some(first), Some(last)) = (dropped.first(), dropped.last()) {
            warn!(
                reports = dropped.len(),
                first,
                last,
                limit = self.max_bytes,
                "the spool holds more than its limit: dropped the oldest health samples \
                 (counted in the next health sample)"
            );
        }
        dropped
    }

    /// Removes the acknowledged reports; answers how many of `acked` were spooled. Unknown
    /// numbers (acknowledged twice) are ignored. If the removal cannot be written, the reports
    /// are still forgotten now; after a restart they go again and the collector acknowledges
    /// them as repeats.
    pub fn ack(&mut self, acked: &[u64]) -> usize {
        self.remove(acked, Gone::Acked).len()
    }

    /// Removes reports for `why`, logging a failure to record it; answers those removed.
    fn remove(&mut self, seqs: &[u64], why: Gone) -> Vec<u64> {
        let removed: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|seq| self.forget(*seq, why))
            .collect();
        if removed.is_empty() {
            return removed;
        }
        let written = self.append(&gone_record(why, &removed));
        self.reclaim_logged();
        if let Err(e) = written {
            warn!(error = %e, reason = ?why, "could not record that reports left the spool; after a restart they are sent again (the collector acknowledges repeats without storing them twice)");
        }
        removed
    }

    /// Marks spooled reports as possibly stored: a send that carried them ended without a
    /// definite answer. The mark stays until the report leaves.
    pub fn mark_uncertain(&mut self, seqs: &[u64]) {
        let marked: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|seq| match self.entries.get_mut(seq) {
                Some(entry) if !entry.uncertain => {
                    entry.uncertain = true;
                    true
                }
                _ => false,
            })
            .collect();
        if marked.is_empty() {
            return;
        }
        let mut payload = vec![UNCERTAIN];
        for seq in &marked {
            payload.extend_from_slice(&seq.to_le_bytes());
        }
        if let Err(e) = self.append(&frame(&payload)) {
            // In memory the mark holds; only a restart before these reports leave forgets it.
            warn!(error = %e, "could not record that a send without an answer carried reports");
        }
    }

    /// Marks every spooled report uncertain in memory: at start, for reports an earlier
    /// process may have sent without recording the outcome.
    pub fn assume_uncertain(&mut self) {
        for entry in self.entries.values_mut() {
            entry.uncertain = true;
        }
    }

    pub fn is_uncertain(&self, seq: u64) -> bool {
        self.entries.get(&seq).is_some_and(|e| e.uncertain)
    }

    fn keeps_on_renumber(entry: &Entry) -> bool {
        !(entry.kind == Kind::Health && entry.uncertain)
    }

    /// How many reports numbered at most `last_seq` [`Spool::renumber_through`] would keep,
    /// that is how many new numbers it needs.
    pub fn renumberable_through(&self, last_seq: u64) -> usize {
        self.entries
            .range(..=last_seq)
            .filter(|(_, e)| Spool::keeps_on_renumber(e))
            .count()
    }

    /// Gives every report numbered at most `last_seq` a new number from `first` on, in order,
    /// except health samples marked uncertain, which are dropped (they may be stored under
    /// their old number; under a new one they could be stored twice). One record, durable
    /// before this returns: all of it happens, or (a crash, a full disk) none of it. The
    /// reports' records stay where they are; only their numbers change.
    pub fn renumber_through(
        &mut self,
        last_seq: u64,
        first: u64,
    ) -> Result<Renumbered, SpoolError> {
        let mut done = Renumbered::default();
        let mut next = first;
        for (seq, entry) in self.entries.range(..=last_seq) {
            if Spool::keeps_on_renumber(entry) {
                done.moved.push((*seq, next));
                next += 1;
            } else {
                done.dropped.push(*seq);
            }
        }
        let mut frames = Vec::new();
        if !done.moved.is_empty() {
            let mut payload = Vec::with_capacity(1 + 16 * done.moved.len());
            payload.push(RENUMBER);
            for (old, new) in &done.moved {
                payload.extend_from_slice(&old.to_le_bytes());
                payload.extend_from_slice(&new.to_le_bytes());
            }
            frames.extend(frame(&payload));
        }
        if !done.dropped.is_empty() {
            frames.extend(gone_record(Gone::Doubtful, &done.dropped));
        }
        if frames.is_empty() {
            return Ok(done);
        }
        self.append(&frames)?;
        for (old, new) in &done.moved {
            self.renumber_entry(*old, *new);
        }
        for old in &done.dropped {
            self.forget(*old, Gone::Doubtful);
        }
        Ok(done)
    }

    /// The highest spooled number, if any: the sequence must go on above it.
    pub fn last_seq(&self) -> Option<u64> {
        self.entries.keys().next_back().copied()
    }

    /// Reads spooled reports in the order given. A report whose record is damaged is logged,
    /// removed, and left out: never sent as garbage. A segment that cannot be read ends the
    /// list there (logged) and [`Loaded::complete`] is false: the caller must send nothing
    /// after it, since the collector takes a number below one it stored for a repeat.
    pub fn load(&mut self, seqs: &[u64]) -> Loaded {
        let mut loaded = Loaded {
            reports: Vec::with_capacity(seqs.len()),
            complete: true,
        };
        let mut damaged = Vec::new();
        let mut reader = SegmentReader::default();
        for seq in seqs {
            let Some(entry) = self.entries.get(seq).copied() else {
                continue;
            };
            match self.read_entry(&mut reader, *seq, &entry) {
                Ok(Some(report)) => loaded.reports.push(report),
                Ok(None) => damaged.push(*seq),
                Err(e) => {
                    error!(seq, error = %e, "could not read a spooled report; it is kept and read again next time");
                    loaded.complete = false;
                    break;
                }
            }
        }
        if !damaged.is_empty() {
            self.remove(&damaged, Gone::Damaged);
        }
        loaded
    }

    /// Reads one report; `None` (logged) when its record is damaged.
    fn read_entry(
        &self,
        reader: &mut SegmentReader,
        seq: u64,
        entry: &Entry,
    ) -> Result<Option<Report>, SpoolError> {
        let path = self.segment_path(entry.segment);
        let bytes = reader
            .read(&path, entry)
            .map_err(|source| io_error(&path, source))?;
        let report = frame_at(&bytes, 0).and_then(|payload| {
            let mut r = Reader(payload);
            (r.u8()? == PUT && r.u64()? == entry.put_seq).then_some(())?;
            let (_kind, _flags, _carried) = (r.u8()?, r.u8()?, r.u64()?);
            rmp_serde::from_slice::<Report>(r.0).ok()
        });
        match report {
            Some(mut report) => {
                // A renumbered report keeps the record it was written with.
                report.seq = seq;
                Ok(Some(report))
            }
            None => {
                warn!(
                    seq,
                    segment = %path.display(),
                    offset = entry.offset,
                    "a spooled report is damaged on disk; it is skipped, not sent"
                );
                Ok(None)
            }
        }
    }

    /// Moves a report the collector refused for good to `rejected_dir` (one MessagePack file
    /// per report, the oldest beyond [`MAX_REJECTED`] deleted) and removes it.
    pub fn reject(&mut self, seq: u64, rejected_dir: &Path) -> Option<PathBuf> {
        let report = self.load(&[seq]).reports.pop()?;
        let kind = match Kind::of(&report) {
            Kind::Health => "health",
            Kind::Inventory => "inventory",
        };
        let path = rejected_dir.join(format!("{seq:020}.{kind}.msgpack"));
        let kept = create_dir(rejected_dir)
            .and_then(|()| {
                let bytes = rmp_serde::to_vec_named(&report).map_err(io::Error::other)?;
                let _ = fs::remove_file(&path);
                let mut file = create_segment(&path)?;
                file.write_all(&bytes)?;
                // Durable before the spool forgets the report.
                file.sync_all()?;
                sync_dir(rejected_dir)
            })
            .and_then(|()| prune_rejected(rejected_dir));
        self.remove(&[seq], Gone::Refused);
        match kept {
            Ok(()) => Some(path),
            Err(e) => {
                warn!(seq, error = %e, dir = %rejected_dir.display(), "could not keep the refused report");
                None
            }
        }
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.entries.keys().copied().collect()
    }

    pub fn seqs_of(&self, kind: Kind) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.kind == kind)
            .map(|(s, _)| *s)
            .collect()
    }

    pub fn kind(&self, seq: u64) -> Option<Kind> {
        self.entries.get(&seq).map(|e| e.kind)
    }

    /// The size of a report's record on disk, close to its size on the wire.
    pub fn record_len(&self, seq: u64) -> Option<u64> {
        self.entries.get(&seq).map(|e| e.len)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the live reports' records.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Bytes of every segment file.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }

    /// Dropped reports that no spooled health sample reports yet.
    pub fn unreported_drops(&self) -> u64 {
        self.unreported
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.seg"))
    }

    /// Appends whole records to the head segment (a new one when it is full) and makes them
    /// durable; answers the segment and the offset they start at. A failed write is cut off
    /// again, so no partial record is left behind a later one.
    fn append(&mut self, frames: &[u8]) -> Result<(u64, u64), SpoolError> {
        let full = match &self.head {
            Some((id, _)) => self.segments.get(id).map_or(0, |s| s.bytes) >= self.segment_bytes,
            None => true,
        };
        if full {
            self.new_head()?;
        }
        let (id, file) = self.head.as_mut().expect("a head segment was just ensured");
        let id = *id;
        let segment = self.segments.entry(id).or_default();
        let offset = segment.bytes;
        let written = file.write_all(frames).and_then(|()| file.sync_data());
        if let Err(source) = written {
            // Cut the partial record off; if even that fails, account for what is there and
            // go on in a new segment, so that later offsets stay true.
            if file.set_len(offset).is_err() {
                segment.bytes = file.metadata().map_or(offset, |m| m.len());
                self.head = None;
            }
            return Err(io_error(&self.segment_path(id), source));
        }
        segment.bytes += frames.len() as u64;
        Ok((id, offset))
    }

    /// Starts a new head segment after every existing one. The segment is tracked from its
    /// creation, so a failure to sync the directory leaves nothing unaccounted for.
    fn new_head(&mut self) -> Result<(), SpoolError> {
        let id = self
            .segments
            .keys()
            .next_back()
            .map_or(1, |last| last + 1)
            .max(self.head.as_ref().map_or(1, |(id, _)| id + 1));
        let path = self.segment_path(id);
        let file = create_segment(&path).map_err(|source| io_error(&path, source))?;
        self.segments.insert(id, Segment::default());
        self.head = Some((id, file));
        sync_dir(&self.dir).map_err(|source| io_error(&self.dir, source))
    }

    /// Reclaims dead space: deletes dead segments from the front, and rewrites the log when
    /// the dead space outgrows both a segment and the live data, or pushes the disk use past
    /// the limit by more than a segment.
    fn reclaim(&mut self) -> Result<(), SpoolError> {
        let head = self.head.as_ref().map(|(id, _)| *id);
        let mut counted = false;
        while let Some((&id, segment)) = self.segments.first_key_value() {
            if Some(id) == head || segment.live > 0 {
                break;
            }
            // The records that made up the unreported count may be in this segment: write
            // the count down before they go.
            if self.unreported > 0 && !counted {
                self.append(&counter_record(self.unreported))?;
                counted = true;
            }
            self.delete_segment(id)?;
        }
        let disk = self.disk_bytes();
        let dead = disk - self.live_bytes.min(disk);
        if dead > self.segment_bytes
            && (dead > self.live_bytes || disk > self.max_bytes + self.segment_bytes)
        {
            self.rewrite()?;
        }
        Ok(())
    }

    /// [`Spool::reclaim`] after a change that is already durable: a failure only costs disk
    /// space until the next attempt, so it is logged, not returned.
    fn reclaim_logged(&mut self) {
        if let Err(e) = self.reclaim() {
            warn!(error = %e, "could not reclaim spool space; trying again after the next change");
        }
    }

    fn delete_segment(&mut self, id: u64) -> Result<(), SpoolError> {
        let path = self.segment_path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error(&path, source)),
        }
        sync_dir(&self.dir).map_err(|source| io_error(&self.dir, source))?;
        self.segments.remove(&id);
        if self.head.as_ref().is_some_and(|(head, _)| *head == id) {
            self.head = None;
        }
        Ok(())
    }

    /// Copies every live report into fresh segments after the head, then deletes the old
    /// segments. A crash before the deletes leaves two copies of each report under the same
    /// number, which replay takes as one. Copies are written a segment at a time, one sync
    /// each.
    fn rewrite(&mut self) -> Result<(), SpoolError> {
        let old: Vec<u64> = self.segments.keys().copied().collect();
        // A fresh segment: the copies must come after every old record.
        self.new_head()?;
        let mut buffer = counter_record(self.unreported);
        let mut placed: Vec<(u64, u64, Entry)> = Vec::new();
        let mut damaged = Vec::new();
        let mut reader = SegmentReader::default();
        let live: Vec<(u64, Entry)> = self.entries.iter().map(|(s, e)| (*s, *e)).collect();
        for (seq, entry) in live {
            let path = self.segment_path(entry.segment);
            let bytes = reader
                .read(&path, &entry)
                .map_err(|source| io_error(&path, source))?;
            let Some(payload) = frame_at(&bytes, 0) else {
                damaged.push(seq);
                continue;
            };
            let mut payload = payload.to_vec();
            // The copy holds the report's current number, is marked moved (its count is not
            // taken again), and keeps the uncertain mark.
            payload[1..9].copy_from_slice(&seq.to_le_bytes());
            payload[10] |= FLAG_MOVED;
            if entry.uncertain {
                payload[10] |= FLAG_UNCERTAIN;
            }
            placed.push((seq, buffer.len() as u64, entry));
            buffer.extend(frame(&payload));
            if buffer.len() as u64 >= self.segment_bytes {
                self.place(&std::mem::take(&mut buffer), &mut placed)?;
            }
        }
        if !buffer.is_empty() {
            self.place(&buffer, &mut placed)?;
        }
        for id in old {
            self.delete_segment(id)?;
        }
        if !damaged.is_empty() {
            warn!(
                reports = damaged.len(),
                "spooled reports found damaged while compacting the spool are skipped"
            );
            for seq in &damaged {
                self.forget(*seq, Gone::Damaged);
            }
            self.append(&gone_record(Gone::Damaged, &damaged))?;
        }
        Ok(())
    }

    /// Appends copies made by [`Spool::rewrite`] and points their entries at them.
    fn place(
        &mut self,
        buffer: &[u8],
        placed: &mut Vec<(u64, u64, Entry)>,
    ) -> Result<(), SpoolError> {
        let (segment, offset) = self.append(buffer)?;
        for (seq, at, entry) in placed.drain(..) {
            if let Some(old) = self.segments.get_mut(&entry.segment) {
                old.live -= 1;
            }
            self.segments.entry(segment).or_default().live += 1;
            self.entries.insert(
                seq,
                Entry {
                    put_seq: seq,
                    segment,
                    offset: offset + at,
                    ..entry
                },
            );
        }
        Ok(())
    }

    /// Every record's place on disk, for tests that damage chosen records.
    #[cfg(test)]
    pub(crate) fn records(&self) -> Vec<(PathBuf, u64, u64, Vec<u8>)> {
        let mut out = Vec::new();
        for id in self.segments.keys() {
            let path = self.segment_path(*id);
            let bytes = fs::read(&path).unwrap();
            let mut pos = 0;
            while let Some(payload) = frame_at(&bytes, pos) {
                out.push((
                    path.clone(),
                    pos as u64,
                    (HEADER + payload.len()) as u64,
                    payload.to_vec(),
                ));
                pos += HEADER + payload.len();
            }
        }
        out
    }
}

/// The payload of a whole, undamaged record at `pos`, if there is one.
fn frame_at(bytes: &[u8], pos: usize) -> Option<&[u8]> {
    let header = bytes.get(pos..pos + HEADER)?;
    if header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let crc = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let payload = bytes.get(pos + HEADER..pos + HEADER + len as usize)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[4..8]);
    hasher.update(payload);
    (hasher.finalize() == crc).then_some(payload)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    hasher.update(payload);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn encoded_len(report: &Report) -> Result<u64, SpoolError> {
    rmp_serde::to_vec_named(report)
        .map(|b| b.len() as u64)
        .map_err(|e| SpoolError::Encode {
            seq: report.seq,
            message: e.to_string(),
        })
}

/// `put`: type, seq, kind, flags, carried count, then the report. The flags byte is at
/// payload offset 10 ([`Spool::rewrite`] sets it in place).
fn put_record(report: &Report, flags: u8, carried: u64) -> Result<Vec<u8>, SpoolError> {
    let body = rmp_serde::to_vec_named(report).map_err(|e| SpoolError::Encode {
        seq: report.seq,
        message: e.to_string(),
    })?;
    let mut payload = Vec::with_capacity(18 + body.len());
    payload.push(PUT);
    payload.extend_from_slice(&report.seq.to_le_bytes());
    payload.push(Kind::of(report).byte());
    payload.push(flags);
    payload.extend_from_slice(&carried.to_le_bytes());
    payload.extend_from_slice(&body);
    Ok(frame(&payload))
}

fn counter_record(count: u64) -> Vec<u8> {
    let mut payload = vec![COUNTER];
    payload.extend_from_slice(&count.to_le_bytes());
    frame(&payload)
}

fn gone_record(why: Gone, seqs: &[u64]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + 8 * seqs.len());
    payload.push(GONE);
    payload.push(why.byte());
    for seq in seqs {
        payload.extend_from_slice(&seq.to_le_bytes());
    }
    frame(&payload)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*head))
    }
}

fn segment_id(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn io_error(path: &Path, source: io::Error) -> SpoolError {
    SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A new segment file, readable by the agent's user only (reports describe the machine).
fn create_segment(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes a directory's entries (a created, renamed or deleted file) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    // Windows cannot open a directory as a file; NTFS journals its metadata.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn prune_rejected(dir: &Path) -> io::Result<()> {
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    for item in fs::read_dir(dir)? {
        let path = item?.path();
        if path.extension().is_some_and(|e| e == "msgpack") {
            files.insert(path);
        }
    }
    // Names start with the zero-padded seq, so name order is age order.
    let excess = files.len().saturating_sub(MAX_REJECTED);
    for path in files.into_iter().take(excess) {
        fs::remove_file(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use census_common::{HealthSample, Inventory};
    use time::OffsetDateTime;

    fn health(seq: u64) -> Report {
        let mut sample = HealthSample::empty("a", OffsetDateTime::UNIX_EPOCH);
        sample.process_count = Some(seq);
        Report {
            seq,
            body: ReportBody::Health(sample),
        }
    }

    fn inventory(seq: u64) -> Report {
        let mut inventory = Inventory::new("a", OffsetDateTime::UNIX_EPOCH);
        inventory.host.hostname = Some(format!("host-{seq}"));
        Report {
            seq,
            body: ReportBody::Inventory(inventory),
        }
    }

    fn dropped_in(report: &Report) -> Option<u64> {
        match &report.body {
            ReportBody::Health(h) => h.reports_dropped,
            ReportBody::Inventory(_) => None,
        }
    }

    /// Loads reports, asserting every segment was readable.
    fn read(spool: &mut Spool, seqs: &[u64]) -> Vec<Report> {
        let loaded = spool.load(seqs);
        assert!(loaded.complete);
        loaded.reports
    }

    fn open(dir: &Path) -> Spool {
        Spool::open(dir, 64 << 20).unwrap()
    }

    #[test]
    fn reports_survive_a_restart_and_leave_only_when_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        spool.push(inventory(1)).unwrap();
        for seq in 2..=5 {
            spool.push(health(seq)).unwrap();
        }
        assert_eq!(spool.ack(&[2, 4, 99]), 2);
        assert_eq!(spool.ack(&[2]), 0, "a repeated ack changes nothing");
        drop(spool);

        let mut spool = open(dir.path());
        assert_eq!(spool.seqs(), vec![1, 3, 5]);
        assert_eq!(spool.kind(1), Some(Kind::Inventory));
        let loaded = read(&mut spool, &[1, 3, 5]);
        #[cfg(unix)]
        for entry in fs::read_dir(dir.path()).unwrap() {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(loaded, vec![inventory(1), health(3), health(5)]);
        assert_eq!(spool.ack(&[1, 3, 5]), 3);
        drop(spool);
        assert!(open(dir.path()).is_empty());
    }

    #[test]
    fn a_torn_append_is_cut_off_and_the_log_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        spool.push(health(1)).unwrap();
        spool.push(health(2)).unwrap();
        let (path, ..) = spool.records().pop().unwrap();
        drop(spool);
        // A crash in the middle of appending report 3: half its record reached the disk.
        let whole = put_record(&health(3), 0, 0).unwrap();
        let before = fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&whole[..whole.len() / 2]).unwrap();
        drop(file);

        let mut spool = open(dir.path());
        assert_eq!(spool.damage().torn_bytes, (whole.len() / 2) as u64);
        assert_eq!(fs::metadata(&path).unwrap().len(), before);
        assert_eq!(spool.seqs(), vec![1, 2]);
        spool.push(health(3)).unwrap();
        drop(spool);
        let mut spool = open(dir.path());
        assert_eq!(spool.damage(), &Damage::default());
        assert_eq!(
            read(&mut spool, &[1, 2, 3]),
            vec![health(1), health(2), health(3)]
        );
    }

    /// Flips one byte inside the record that `pick` chooses.
    fn damage_record(spool: &Spool, pick: impl Fn(&[u8]) -> bool) {
        let (path, offset, len, _) = spool
            .records()
            .into_iter()
            .find(|(.., payload)| pick(payload))
            .expect("a record to damage");
        let mut bytes = fs::read(&path).unwrap();
        bytes[(offset + len - 1) as usize] ^= 0x40;
        fs::write(&path, bytes).unwrap();
    }

    fn is_put_of(seq: u64) -> impl Fn(&[u8]) -> bool {
        move |payload| payload[0] == PUT && payload[1..9] == seq.to_le_bytes()
    }

    #[test]
    fn a_damaged_record_is_skipped_and_the_rest_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        for seq in 1..=4 {
            spool.push(health(seq)).unwrap();
        }
        damage_record(&spool, is_put_of(2));
        drop(spool);
        let mut spool = open(dir.path());
        assert_eq!(spool.seqs(), vec![1, 3, 4]);
        assert_eq!(spool.damage().skipped.len(), 1);
        assert_eq!(
            read(&mut spool, &[1, 3, 4]),
            vec![health(1), health(3), health(4)]
        );
    }

    #[test]
    fn a_record_damaged_after_opening_is_never_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        for seq in 1..=3 {
            spool.push(health(seq)).unwrap();
        }
        damage_record(&spool, is_put_of(2));
        assert_eq!(read(&mut spool, &[1, 2, 3]), vec![health(1), health(3)]);
        assert_eq!(
            spool.seqs(),
            vec![1, 3],
            "the damaged report left the spool"
        );
        drop(spool);
        assert_eq!(open(dir.path()).seqs(), vec![1, 3]);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_health_keeps_the_inventory_and_reports_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let record = put_record(&health(1), 0, 0).unwrap().len() as u64;
        let inventory_record = put_record(&inventory(1), 0, 0).unwrap().len() as u64;
        // Room for the inventory and about four health samples.
        let max = inventory_record + 4 * record + 40;
        let mut spool = Spool::open(dir.path(), max).unwrap();
        spool.push(inventory(1)).unwrap();
        let mut dropped = Vec::new();
        for seq in 2..=8 {
            dropped.extend(spool.push(health(seq)).unwrap().dropped);
        }
        assert!(!dropped.is_empty());
        assert!(spool.live_bytes() <= max);
        let seqs = spool.seqs();
        assert_eq!(seqs[0], 1, "the inventory is kept");
        assert_eq!(*seqs.last().unwrap(), 8);
        // Every drop is counted in a spooled health sample or still waiting for one.
        let carried: u64 = read(&mut spool, &seqs).iter().filter_map(dropped_in).sum();
        assert_eq!(carried + spool.unreported_drops(), dropped.len() as u64);
        drop(spool);
        // The counts survive a restart, and a sample that carried a count and is dropped in
        // turn hands it on.
        let mut spool = Spool::open(dir.path(), max).unwrap();
        for seq in 9..=20 {
            dropped.extend(spool.push(health(seq)).unwrap().dropped);
        }
        let seqs = spool.seqs();
        let carried: u64 = read(&mut spool, &seqs).iter().filter_map(dropped_in).sum();
        assert_eq!(carried + spool.unreported_drops(), dropped.len() as u64);
        assert_eq!(
            spool.unreported_drops(),
            0,
            "the newest sample carries the count"
        );
        assert_eq!(seqs[0], 1);
    }

    #[test]
    fn drop_counts_survive_compaction_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let record = put_record(&health(1), 0, 0).unwrap().len() as u64;
        let inventory_record = put_record(&inventory(1), 0, 0).unwrap().len() as u64;
        let max = 4 * record + 40;
        let mut spool = Spool::open_with_segments(dir.path(), max, 2 * record).unwrap();
        for seq in 1..=6 {
            spool.push(health(seq)).unwrap();
        }
        // Sample 6 carries what was dropped to make room for it.
        let carrier = 6;
        let carried = dropped_in(&read(&mut spool, &[carrier])[0]);
        assert!(carried.is_some_and(|n| n >= 1), "{carried:?}");
        // An inventory makes room too, and carries nothing: its drops wait.
        assert!(
            max >= inventory_record,
            "the test needs the inventory to fit"
        );
        let dropped = spool.push(inventory(7)).unwrap().dropped;
        assert!(
            !dropped.contains(&carrier) && !dropped.is_empty(),
            "{dropped:?}"
        );
        let waiting = spool.unreported_drops();
        assert_eq!(waiting, dropped.len() as u64);
        let others: Vec<u64> = spool
            .seqs()
            .into_iter()
            .filter(|s| *s != carrier && *s != 7)
            .collect();
        spool.ack(&others);
        // The log rewritten: only the live reports and the waiting count are left.
        let newest_before = *spool.segments.keys().last().unwrap();
        spool.rewrite().unwrap();
        assert!(spool.segments.keys().all(|id| *id > newest_before));
        assert_eq!(spool.records().len(), 3, "counter, sample, inventory");
        drop(spool);
        let mut spool = Spool::open_with_segments(dir.path(), max, 2 * record).unwrap();
        assert_eq!(spool.unreported_drops(), waiting);
        assert_eq!(dropped_in(&read(&mut spool, &[carrier])[0]), carried);
    }

    #[test]
    fn the_unreported_count_survives_deleting_the_segments_that_made_it() {
        let dir = tempfile::tempdir().unwrap();
        let record = put_record(&health(1), 0, 0).unwrap().len() as u64;
        let inventory_record = put_record(&inventory(1), 0, 0).unwrap().len() as u64;
        let max = inventory_record + 3 * record;
        let open = || Spool::open_with_segments(dir.path(), max, 2 * record).unwrap();
        let mut spool = open();
        for seq in 1..=3 {
            spool.push(health(seq)).unwrap();
        }
        // The inventory makes room and carries nothing: the count waits in the spool.
        let dropped = spool.push(inventory(4)).unwrap().dropped;
        assert!(!dropped.is_empty());
        let waiting = spool.unreported_drops();
        assert_eq!(waiting, dropped.len() as u64);
        // Everything acknowledged: the segments holding the `gone` records are deleted.
        let first_segment = *spool.segments.keys().next().unwrap();
        spool.ack(&spool.seqs());
        spool.push(inventory(5)).unwrap();
        spool.ack(&[5]);
        assert!(!spool.segments.contains_key(&first_segment));
        drop(spool);
        assert_eq!(open().unreported_drops(), waiting);
    }

    #[test]
    fn a_renumbering_is_one_record_and_later_numbers_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        for seq in 1..=3 {
            spool.push(health(seq)).unwrap();
        }
        let before = spool.records().len();
        spool.renumber_through(10, 11).unwrap();
        assert_eq!(spool.records().len(), before + 1);
        assert_eq!(spool.last_seq(), Some(13));
        drop(spool);
        let mut spool = open(dir.path());
        assert_eq!(spool.seqs(), vec![11, 12, 13]);
        assert_eq!(
            read(&mut spool, &[11]),
            vec![Report {
                seq: 11,
                ..health(1)
            }]
        );
        // Compaction writes the new numbers into the copies.
        spool.rewrite().unwrap();
        drop(spool);
        let mut spool = open(dir.path());
        assert_eq!(
            read(&mut spool, &[13]),
            vec![Report {
                seq: 13,
                ..health(3)
            }]
        );
    }

    #[test]
    fn an_unreadable_segment_ends_a_load_without_skipping_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let record = put_record(&health(1), 0, 0).unwrap().len() as u64;
        let mut spool = Spool::open_with_segments(dir.path(), 1 << 20, 2 * record).unwrap();
        for seq in 1..=6 {
            spool.push(health(seq)).unwrap();
        }
        let second = spool.segment_path(*spool.segments.keys().nth(1).unwrap());
        let aside = dir.path().join("aside");
        fs::rename(&second, &aside).unwrap();
        fs::create_dir(&second).unwrap();
        let loaded = spool.load(&[1, 2, 3, 4, 5, 6]);
        assert!(!loaded.complete);
        assert_eq!(loaded.reports, vec![health(1), health(2)]);
        assert_eq!(spool.len(), 6, "an unreadable report is kept, not dropped");
        fs::remove_dir(&second).unwrap();
        fs::rename(&aside, &second).unwrap();
        assert_eq!(read(&mut spool, &[3, 4]), vec![health(3), health(4)]);
    }

    #[test]
    fn a_newer_inventory_replaces_an_unacknowledged_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        spool.push(inventory(1)).unwrap();
        spool.push(health(2)).unwrap();
        assert_eq!(spool.push(inventory(3)).unwrap().replaced, Some(1));
        drop(spool);
        assert_eq!(open(dir.path()).seqs(), vec![2, 3]);
    }

    #[test]
    fn renumbering_moves_what_is_certainly_not_stored_durably_and_drops_doubtful_health() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        spool.push(inventory(3)).unwrap();
        for seq in [4, 5, 6] {
            spool.push(health(seq)).unwrap();
        }
        spool.mark_uncertain(&[3, 4, 99]);
        drop(spool);
        // The marks are on disk.
        let mut spool = open(dir.path());
        assert!(spool.is_uncertain(3) && spool.is_uncertain(4));
        assert!(!spool.is_uncertain(5));
        assert_eq!(spool.renumberable_through(50), 3);
        let done = spool.renumber_through(50, 51).unwrap();
        assert_eq!(done.moved, vec![(3, 51), (5, 52), (6, 53)]);
        assert_eq!(done.dropped, vec![4]);
        drop(spool);
        let mut spool = open(dir.path());
        assert_eq!(spool.seqs(), vec![51, 52, 53]);
        assert!(spool.seqs().iter().all(|s| !spool.is_uncertain(*s)));
        let loaded = read(&mut spool, &[51, 52]);
        assert_eq!(loaded[0].seq, 51);
        assert!(matches!(loaded[0].body, ReportBody::Inventory(_)));
        assert_eq!(
            loaded[1],
            Report {
                seq: 52,
                ..health(5)
            }
        );
    }

    #[test]
    fn dead_space_is_reclaimed_and_disk_use_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let max = 1 << 20;
        let mut spool = Spool::open(dir.path(), max).unwrap();
        // One old inventory stays unacknowledged while thousands of samples come and go: the
        // segment it is in must not keep every later segment alive.
        spool.push(inventory(1)).unwrap();
        let mut most = 0;
        for seq in 2..5000 {
            spool.push(health(seq)).unwrap();
            if seq % 10 == 0 {
                spool.ack(&((seq - 9).max(2)..=seq).collect::<Vec<_>>());
            }
            most = most.max(spool.disk_bytes());
        }
        assert!(most <= max + spool.segment_bytes(), "{most}");
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert!(files <= 3, "{files} segment files");
        let seqs = spool.seqs();
        drop(spool);
        let mut spool = Spool::open(dir.path(), max).unwrap();
        assert_eq!(spool.seqs(), seqs);
        assert_eq!(read(&mut spool, &[1]), vec![inventory(1)]);
    }

    #[test]
    fn a_refused_report_is_moved_aside_and_the_oldest_kept_copies_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let rejected = dir.path().join("rejected");
        let mut spool = open(&dir.path().join("spool"));
        for seq in 1..=(MAX_REJECTED as u64 + 2) {
            spool.push(health(seq)).unwrap();
            let path = spool.reject(seq, &rejected).unwrap();
            let kept: Report = rmp_serde::from_slice(&fs::read(path).unwrap()).unwrap();
            assert_eq!(kept, health(seq));
        }
        assert!(spool.is_empty());
        let mut names: Vec<String> = fs::read_dir(&rejected)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), MAX_REJECTED);
        assert_eq!(names[0], "00000000000000000003.health.msgpack");
    }

    /// The spool against a model of itself and of the collector, through random sequences of
    /// pushes, deliveries (acknowledged, or stored with the ack lost), uncertain marks, crashes
    /// (the process state dropped, the spool reopened from disk), torn appends and damaged
    /// records, with a spool small enough to drop samples.
    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Debug, Clone)]
        enum Op {
            Push {
                inventory: bool,
            },
            /// Sends the first `n` spooled reports; the collector stores those above its
            /// last seq and acknowledges all; `ack_lost` drops the ack on the way back.
            Deliver {
                n: usize,
                ack_lost: bool,
            },
            MarkUncertain {
                n: usize,
            },
            Crash,
            /// A crash in the middle of an append: part of a record reaches the disk.
            Torn {
                keep: usize,
            },
            /// One byte of the record at this index (of all records) flipped, then a crash.
            Damage {
                record: usize,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => any::<bool>().prop_map(|inventory| Op::Push { inventory }),
                3 => (0..8usize, any::<bool>()).prop_map(|(n, ack_lost)| Op::Deliver { n, ack_lost }),
                1 => (0..4usize).prop_map(|n| Op::MarkUncertain { n }),
                2 => Just(Op::Crash),
                1 => (1..200usize).prop_map(|keep| Op::Torn { keep }),
                1 => (0..64usize).prop_map(|record| Op::Damage { record }),
            ]
        }

        /// The collector: stores a report when its seq is above the last one it stored, as
        /// the real one does; counts how often each seq was stored.
        #[derive(Default)]
        struct Collector {
            last_seq: u64,
            stored: BTreeMap<u64, usize>,
            dropped_reported: u64,
        }

        impl Collector {
            fn take(&mut self, reports: &[Report]) -> Vec<u64> {
                for report in reports {
                    if report.seq > self.last_seq {
                        self.last_seq = report.seq;
                        *self.stored.entry(report.seq).or_default() += 1;
                        self.dropped_reported += dropped_in(report).unwrap_or(0);
                    }
                }
                reports.iter().map(|r| r.seq).collect()
            }
        }

        fn run(ops: Vec<Op>, inventory_every: u64) -> Result<(), TestCaseError> {
            let dir = tempfile::tempdir().unwrap();
            let record = put_record(&health(1), 0, 0).unwrap().len() as u64;
            let max = 12 * record + put_record(&inventory(1), 0, 0).unwrap().len() as u64;
            // Segments of a few records: rotation and compaction happen all the time.
            let open = || Spool::open_with_segments(dir.path(), max, 3 * record).unwrap();
            let mut spool = open();
            let mut collector = Collector::default();
            let mut next = 1u64;
            // What must still be spooled (model), what may be gone without fault (damaged
            // records), and what may come back (acked, then its `gone` record damaged).
            let mut expected: BTreeSet<u64> = BTreeSet::new();
            let mut may_be_lost: BTreeSet<u64> = BTreeSet::new();
            let mut acked: BTreeSet<u64> = BTreeSet::new();
            // Dropped or replaced: may come back too, after a damaged `gone`.
            let mut removed: BTreeSet<u64> = BTreeSet::new();
            let mut dropped = 0u64;
            let mut damaged_any = false;
            for op in ops {
                match op {
                    Op::Push { inventory: inv } => {
                        let seq = next;
                        next += 1;
                        let report = if inv || seq.is_multiple_of(inventory_every) {
                            inventory(seq)
                        } else {
                            health(seq)
                        };
                        let pushed = spool.push(report).unwrap();
                        for gone in pushed.dropped.iter().chain(&pushed.replaced) {
                            prop_assert!(expected.remove(gone) || damaged_any);
                            removed.insert(*gone);
                        }
                        dropped += pushed.dropped.len() as u64;
                        expected.insert(seq);
                    }
                    Op::Deliver { n, ack_lost } => {
                        let seqs: Vec<u64> = spool.seqs().into_iter().take(n).collect();
                        let reports = read(&mut spool, &seqs);
                        for report in &reports {
                            // Never a report the collector would take for a repeat without
                            // having stored it: that one would be lost.
                            let came_back = damaged_any && removed.contains(&report.seq);
                            prop_assert!(
                                report.seq > collector.last_seq
                                    || collector.stored.contains_key(&report.seq)
                                    || came_back,
                                "seq {} offered after the collector stored {}",
                                report.seq,
                                collector.last_seq
                            );
                        }
                        for seq in &seqs {
                            if !reports.iter().any(|r| r.seq == *seq) {
                                prop_assert!(may_be_lost.contains(seq), "seq {seq} unreadable");
                                expected.remove(seq);
                            }
                        }
                        let ack = collector.take(&reports);
                        if !ack_lost {
                            spool.ack(&ack);
                            for seq in ack {
                                expected.remove(&seq);
                                acked.insert(seq);
                            }
                        }
                    }
                    Op::MarkUncertain { n } => {
                        let seqs: Vec<u64> = spool.seqs().into_iter().take(n).collect();
                        spool.mark_uncertain(&seqs);
                    }
                    Op::Crash => {
                        let uncertain: Vec<u64> = spool
                            .seqs()
                            .into_iter()
                            .filter(|s| spool.is_uncertain(*s))
                            .collect();
                        drop(spool);
                        spool = open();
                        for seq in uncertain {
                            prop_assert!(spool.is_uncertain(seq) || !spool.seqs().contains(&seq));
                        }
                    }
                    Op::Torn { keep } => {
                        let Some((path, ..)) = spool.records().pop() else {
                            continue;
                        };
                        drop(spool);
                        let whole = put_record(&health(next), 0, 0).unwrap();
                        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
                        file.write_all(&whole[..keep.min(whole.len() - 1)]).unwrap();
                        drop(file);
                        spool = open();
                        next += 1;
                    }
                    Op::Damage { record } => {
                        let records = spool.records();
                        if records.is_empty() {
                            continue;
                        }
                        let (path, offset, len, payload) = records[record % records.len()].clone();
                        if payload[0] == PUT {
                            let seq = u64::from_le_bytes(payload[1..9].try_into().unwrap());
                            may_be_lost.insert(seq);
                        }
                        damaged_any = true;
                        drop(spool);
                        let mut bytes = fs::read(&path).unwrap();
                        bytes[(offset + len / 2) as usize] ^= 0x10;
                        fs::write(&path, bytes).unwrap();
                        spool = open();
                        for seq in &spool.damage().dropped {
                            expected.remove(seq);
                            removed.insert(*seq);
                        }
                    }
                }
                // Everything expected is spooled (unless its record was damaged); anything
                // else spooled left before and was brought back by a damaged `gone` record:
                // acknowledged ones are repeats to the collector, dropped or replaced ones are
                // stored once, late.
                let spooled: BTreeSet<u64> = spool.seqs().into_iter().collect();
                for seq in &expected {
                    prop_assert!(
                        spooled.contains(seq) || may_be_lost.contains(seq),
                        "seq {seq} lost"
                    );
                }
                for seq in spooled.difference(&expected) {
                    prop_assert!(
                        damaged_any && (acked.contains(seq) || removed.contains(seq)),
                        "seq {seq} spooled, not expected"
                    );
                }
                prop_assert!(spool.live_bytes() <= max);
                prop_assert!(spool.disk_bytes() <= max + spool.segment_bytes() + 2 * record);
            }
            // Deliver the rest: every report not dropped or damaged is stored exactly once.
            let seqs = spool.seqs();
            let reports = read(&mut spool, &seqs);
            let ack = collector.take(&reports);
            spool.ack(&ack);
            for seq in &expected {
                prop_assert!(
                    collector.stored.get(seq) == Some(&1) || may_be_lost.contains(seq),
                    "seq {seq} not stored"
                );
            }
            prop_assert!(collector.stored.values().all(|n| *n == 1));
            if !damaged_any {
                prop_assert_eq!(
                    collector.dropped_reported + spool.unreported_drops(),
                    dropped
                );
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
            #[test]
            fn nothing_acknowledged_is_stored_twice_and_nothing_unacknowledged_is_lost(
                ops in proptest::collection::vec(op(), 1..120),
                inventory_every in 5..40u64,
            ) {
                run(ops, inventory_every)?;
            }
        }
    }
}
