//! `run` (the service loop) and `once` (one cycle).
//!
//! A cycle collects what is due, numbers each new report with the next durable sequence
//! number, writes it to the on-disk [`Spool`] and flushes the spool, oldest first. Health is due every
//! `health_interval`; the inventory is collected at start and every `inventory_interval`, and
//! queued only when its content digest differs from the last one the collector acknowledged
//! (kept in the state directory, so a restart does not resend an unchanged inventory) or when
//! the collector asks for it (`send_inventory` in its ack). Reports the collector did not
//! acknowledge stay spooled, across restarts, and go out again with the next attempt.
//!
//! **Delivery.** A flush sends the spool oldest first (the collector stores a report only
//! when its seq is above the last it stored, so order is not negotiable), in batches of at
//! most [`MAX_BATCH`] reports and about [`MAX_BATCH_BYTES`]. A pass stops after
//! [`MAX_BATCHES_PER_PASS`] batches or when `run` has something due, collects what is due,
//! and goes on at once: a backlog after a long outage drains at full speed without holding
//! up collection. A failed attempt (no answer, a 5xx, an untrusted certificate, ...) makes the
//! next one wait out an exponential backoff with jitter (1 s doubling up to
//! `retry_max_backoff`, 5 minutes by default; see [`crate::retry`]); cycles in between collect
//! and spool but do not send. A refusal that retrying cannot fix (400, 413, 422) sends the
//! batch's reports one at a time, and each one refused alone is moved to `rejected/` in the
//! state directory with an error log naming the collector's code and message; a refused
//! inventory is not queued again in this process until it changes or the collector asks.
//!
//! **When the collector is ahead.** Every ack may carry `last_seq`, the highest number the
//! collector has stored for this agent. If it is at or above the agent's next number, the
//! collector holds numbers this state directory never handed out: the directory went back in
//! time (a VM snapshot reverted, a backup restored, a machine cloned from an image). Before
//! anything else the agent makes `last_seq + 1` its next number, durably, and logs a warning.
//! Then it deals with the reports it numbered at or below `last_seq`, which the collector
//! acknowledged as repeats. Those were *not* stored, as far as this process can tell (for the
//! cases where that is wrong, see "Limits" below):
//! - The collector stores a report only when its seq is above the collector's `last_seq` at
//!   the time, and the ack's `last_seq` is at least the agent's next number, so above every
//!   number in the batch. Had any report of the batch been stored, `last_seq` would be one of
//!   the batch's numbers (lower), so nothing of this batch was stored by this send.
//! - A spooled report's other chances to be stored were earlier sends. A send in this process
//!   that got a definite answer (an ack leaving it out, a 4xx) stored nothing. A send without
//!   one (no answer, a 5xx) may have stored it, before a copy of the old directory took the
//!   numbers above it: the [`Spool`] marks those reports as uncertain. Reports spooled by an
//!   earlier process are all taken as uncertain at start: that process may have sent them
//!   without recording the outcome (killed mid-send), and the spool itself went back in time
//!   with the directory, so it may hold reports that the discarded timeline delivered. This
//!   assumes the process's memory only goes forward in time; a snapshot of the whole machine
//!   breaks that.
//!
//! So every spooled report at or below `last_seq` is given a new number above it and sent
//! again at once, except a health sample marked uncertain, which is dropped with a warning
//! (under a new number it could be stored twice). An uncertain inventory is sent again anyway:
//! a second copy of the same state does no harm. The acknowledged inventory digest is
//! forgotten too (in memory and in the state directory): the collector's newest inventory may
//! come from the discarded timeline, while the reverted digest matches the machine as it is, so
//! the current inventory is sent in the same flush. Without `last_seq` (an older collector) none
//! of this happens. Nor when `last_seq` is one no revert explains: above [`MAX_LAST_SEQ`] (the
//! collector could not store the number after it) or more than [`MAX_LEAD`] above the agent's
//! next number. That is a collector error; following it would leave the agent with a sequence
//! the collector refuses or that is exhausted, for good. It is logged and the ack is taken as
//! if it had no `last_seq`.
//!
//! **One jump per process.** A revert explains one jump: once this process has continued
//! above the collector's `last_seq`, every number from there on is its own. A collector ahead
//! again claims a number this process has not handed out yet: another live agent uses the
//! same agent id or state directory (a cloned machine still running alongside its origin, the
//! two jumping above each other in turn), or the collector is wrong (it stores reports and
//! answers ahead, so renumbering would store them again every cycle). That is logged as an
//! error; nothing is renumbered or written, the ack counts for nothing, and the reports stay
//! queued, marked uncertain, for the next cycle. A restart allows one jump again, which is what
//! a machine restored from a snapshot taken with its memory *after* such a jump needs. While
//! two live copies hand out the same numbers without either being ahead, the collector takes
//! one's reports for repeats of the other's; that cannot be told from here.
//!
//! **Limits.** Renumbered reports can be stored twice when the process itself went back in
//! time: a VM snapshot taken *with its memory* and reverted. The restored process holds
//! pending reports that, in the discarded timeline, it sent and the collector stored and
//! acknowledged; those acks were lost with that timeline, and nothing marks the reports
//! uncertain. After the jump they are stored a second time under new numbers: duplicate health
//! samples (at most what was pending when the snapshot was taken) and a repeated inventory
//! (harmless). Nor is the renumbering meant for two live copies of one state directory: they
//! are two machines reporting under one agent id, the collector mixes their reports, and after
//! one jump each, a copy's further jumps are refused (above), which makes the conflict visible
//! instead of letting the two leapfrog.
//!
//! **Credentials.** Every batch carries the agent token from the state directory; what happens
//! without one, or when the collector refuses it, is decided by [`Auth`] (see
//! [`crate::auth`]): enroll with `enroll_secret` (at most once per send attempt), or stop
//! delivering, log the situation once, and keep collecting and queueing until the token file
//! changes. A 429 stops all sending until its `Retry-After` has passed (`run` wakes up then to
//! flush); a 403 `agent_forbidden` is logged once and the reports stay queued.
//!
//! Collection runs on a blocking thread, off the async executor; the [`Collector`] and its
//! sysinfo handles live as long as the loop. SIGINT and SIGTERM end `run` between or during
//! cycles; nothing half-written is left behind, since state files are replaced atomically.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use census_common::{Ack, Batch, HealthSample, Inventory, PROTOCOL_VERSION, Report, ReportBody};
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::auth::{Auth, Next, Problem, Token};
use crate::collect::{Collector, Root};
use crate::config::Config;
use crate::retry::Backoff;
use crate::spool::{Kind, REJECTED_DIR, SPOOL_DIR, Spool};
use crate::state::{SeqJump, StateDir, StateError, StateLock};
use crate::transport::{Transport, TransportError, Uplink};

/// Reports per request: keeps a request small after a long outage.
pub const MAX_BATCH: usize = 100;
/// Spooled bytes per request (about its uncompressed size), beyond its first report.
pub const MAX_BATCH_BYTES: u64 = 1 << 20;
/// Set-aside seqs remembered for `once`'s summary.
const MAX_SET_ASIDE_KEPT: usize = 1000;
/// Batches one flush pass of `run` sends before it lets scheduled collection run.
pub const MAX_BATCHES_PER_PASS: usize = 10;

/// The highest `last_seq` the agent continues above. The collector keeps sequence numbers as
/// SQLite integers (`i64`), so the number after it must still be one; a higher `last_seq` is a
/// collector error, and following it would leave the agent with numbers no collector takes.
pub const MAX_LAST_SEQ: u64 = i64::MAX as u64 - 1;

/// How far above the agent's own next number a `last_seq` may be and still be taken for a
/// state directory that went back in time: 2^32 reports is over a century of health samples
/// every second, far more than any copy of the directory can be behind. A larger lead is a
/// collector error; following it would waste the sequence for nothing.
pub const MAX_LEAD: u64 = 1 << 32;

/// How long shutdown waits for a collection still running on its thread.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// `once` ended with reports the collector did not acknowledge.
#[derive(Debug, thiserror::Error)]
#[error(
    "the collector acknowledged {acked} of {total} reports; not delivered: seq {}{}",
    unacked.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
    cause.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
)]
pub struct NotAcknowledged {
    pub acked: usize,
    pub total: usize,
    pub unacked: Vec<u64>,
    pub cause: Option<SendError>,
}

/// Why a flush did not deliver everything.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Enrolling failed; the batch was not sent.
    #[error("could not enroll: {0}")]
    Enroll(TransportError),
    /// Delivery is stopped until an admin acts (no token, a refused token or secret, a token
    /// for another agent); the message says what to do. Logged once, when it began.
    #[error("{0}")]
    Stopped(String),
    /// The collector's `Retry-After` has not passed yet; nothing was sent.
    #[error("not sending for {}s more, as the collector asked (HTTP 429)", .0.as_secs())]
    Waiting(Duration),
    /// The collector refused reports for good; they were set aside (`rejected/` in the state
    /// directory). The message is the last refusal.
    #[error("{0}; set aside in the state directory's rejected/, not sent again")]
    Refused(String),
    /// The backoff after a failed attempt has not passed yet; nothing was sent.
    #[error("not sending for {:.1}s more: backing off after a failed attempt", .0.as_secs_f64())]
    Backoff(Duration),
}

impl SendError {
    /// Whether the batch may have been stored although no ack said so.
    fn may_have_been_stored(&self) -> bool {
        match self {
            SendError::Transport(e) => e.may_have_been_stored(),
            SendError::Enroll(_)
            | SendError::Stopped(_)
            | SendError::Waiting(_)
            | SendError::Backoff(_)
            | SendError::Refused(_) => false,
        }
    }
}

/// How long is left of a pause that lasts `until`, at `now`; `None` once it is over.
pub fn pause_left(until: Option<Instant>, now: Instant) -> Option<Duration> {
    until.filter(|until| *until > now).map(|until| until - now)
}

/// When health and inventory are next due. Takes the time as an argument, so tests drive it
/// without waiting.
#[derive(Debug, Clone)]
pub struct Schedule {
    health_every: Duration,
    inventory_every: Duration,
    next_health: Instant,
    next_inventory: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Due {
    pub health: bool,
    pub inventory: bool,
}

impl Schedule {
    /// Both are due at once: an agent that starts reports straight away.
    pub fn new(now: Instant, health_every: Duration, inventory_every: Duration) -> Schedule {
        Schedule {
            health_every: health_every.min(MAX_SCHEDULE_INTERVAL),
            inventory_every: inventory_every.min(MAX_SCHEDULE_INTERVAL),
            next_health: now,
            next_inventory: now,
        }
    }

    /// What is due at `now`; moves what is due to its next time.
    pub fn take_due(&mut self, now: Instant) -> Due {
        let due = Due {
            health: now >= self.next_health,
            inventory: now >= self.next_inventory,
        };
        if due.health {
            self.next_health = advance(self.next_health, self.health_every, now);
        }
        if due.inventory {
            self.next_inventory = advance(self.next_inventory, self.inventory_every, now);
        }
        due
    }

    pub fn next_wake(&self) -> Instant {
        self.next_health.min(self.next_inventory)
    }
}

/// The longest interval a [`Schedule`] keeps: the config refuses longer ones (30 days is the
/// largest it allows), and the clamp keeps `Instant` arithmetic far from overflowing whatever
/// a caller passes.
pub const MAX_SCHEDULE_INTERVAL: Duration = Duration::from_secs(30 * 86_400);

/// The next time after `next`, keeping the rhythm; after a stall (a suspended laptop, a slow
/// cycle) it restarts from `now` instead of firing once for every missed interval. Checked
/// arithmetic throughout: an `Instant` that cannot be represented never panics the loop.
fn advance(next: Instant, every: Duration, now: Instant) -> Instant {
    match next.checked_add(every) {
        Some(following) if following > now => following,
        _ => now
            .checked_add(every)
            .or_else(|| now.checked_add(MAX_SCHEDULE_INTERVAL))
            // Unreachable on any real clock (an Instant spans centuries); a wake-up that comes
            // too soon is better than a panic.
            .unwrap_or(now),
    }
}

/// Where the agent's inventory stands with the collector.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InventoryTracker {
    /// Digest of the last inventory the collector acknowledged.
    pub acked_digest: Option<String>,
    /// Sequence number and digest of the inventory waiting in `pending`.
    pub queued: Option<(u64, String)>,
    /// The collector asked for a full inventory, and no inventory it acknowledged since has
    /// answered the request.
    pub requested: bool,
    /// Digest of an inventory the collector refused for good (400, 413, 422).
    pub refused_digest: Option<String>,
}

impl InventoryTracker {
    pub fn new(acked_digest: Option<String>) -> Self {
        InventoryTracker {
            acked_digest,
            ..InventoryTracker::default()
        }
    }

    /// Whether a freshly collected inventory with this digest must be queued.
    pub fn needed(&self, digest: &str) -> bool {
        let queued = self.queued.as_ref().map(|(_, d)| d.as_str());
        let refused = self.refused_digest.as_deref() == Some(digest);
        inventory_needed(digest, self.acked_digest.as_deref(), queued, self.requested)
            && (self.requested || !refused)
    }

    /// The queued inventory (if it is `old`) now has the number `new`.
    pub fn renumbered(&mut self, old: u64, new: u64) {
        if let Some((seq, _)) = &mut self.queued
            && *seq == old
        {
            *seq = new;
        }
    }

    /// The collector's inventory may not be the acknowledged one: forget it, and ask for an
    /// inventory unless one is queued already (it will be sent whatever its digest).
    pub fn forget_acked(&mut self) {
        self.acked_digest = None;
        if self.queued.is_none() {
            self.requested = true;
        }
    }

    /// The collector refused the queued inventory `seq` for good: the same content is not
    /// queued again until it changes or the collector asks for an inventory.
    pub fn refused(&mut self, seq: u64) {
        if let Some((queued, digest)) = self.queued.take_if(|(queued, _)| *queued == seq) {
            debug!(
                seq = queued,
                "inventory refused; not queued again until it changes"
            );
            self.refused_digest = Some(digest);
        }
    }

    /// An inventory was queued; it answers any request made so far.
    pub fn queued(&mut self, seq: u64, digest: String) {
        self.queued = Some((seq, digest));
        self.requested = false;
    }

    /// Takes one acknowledgement, in the order the acks arrived; returns the digest it newly
    /// acknowledged (to be persisted), if any.
    ///
    /// A request is answered by an inventory acknowledged *after* it was made: when one flush
    /// sends several batches, the ack of an early batch may ask for the inventory (the
    /// collector has none yet) while the inventory itself travels, and is acknowledged, in a
    /// later batch of the same flush; that later ack answers the request, and no second copy is
    /// sent. An ack that both acknowledges the inventory and asks for one means the collector
    /// still wants one (it decides after storing the batch), so the request stands.
    pub fn on_ack(&mut self, ack: &Ack) -> Option<String> {
        let mut newly_acked = None;
        if let Some((seq, digest)) = &self.queued
            && ack.acked.contains(seq)
        {
            self.acked_digest = Some(digest.clone());
            newly_acked = Some(digest.clone());
            self.queued = None;
            // Answers a request from an earlier ack.
            self.requested = false;
        }
        if ack.send_inventory {
            self.requested = true;
        }
        newly_acked
    }
}

/// Whether a freshly collected inventory must be queued.
pub fn inventory_needed(
    digest: &str,
    acked: Option<&str>,
    queued: Option<&str>,
    requested: bool,
) -> bool {
    requested || (acked != Some(digest) && queued != Some(digest))
}

/// How a flush pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Done,
    /// The pass sent its share of batches and reports are left.
    More,
    /// The collector was ahead of the sequence; pending reports were renumbered.
    Renumbered,
}

/// What came of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// Go on with the next batch.
    Next,
    /// The collector was ahead of the sequence; spooled reports were renumbered.
    Renumbered,
    /// The ack could not be taken (see [`SeqCheck`]); stop this pass.
    Stop,
}

/// The ack's `last_seq` against this agent's sequence.
enum SeqCheck {
    /// The usual case: the agent's next number is above the collector's last (or the collector
    /// did not say).
    Behind,
    /// The collector was ahead; the sequence now continues above it and pending reports were
    /// renumbered.
    Jumped,
    /// The sequence file could not be read to compare it with the collector's `last_seq`, or
    /// the collector was ahead and the new sequence could not be made durable.
    Unsaved,
    /// The collector was ahead again after this process had jumped: someone else uses this
    /// agent's numbers, or the collector is wrong. Nothing was renumbered or written.
    Refused,
}

struct Agent<U = Transport> {
    state: StateDir,
    agent_id: String,
    transport: U,
    auth: Auth,
    /// No request before this time: the collector answered 429 with a `Retry-After`.
    paused_until: Option<Instant>,
    /// No request before this time: the last attempt failed (backoff).
    retry_at: Option<Instant>,
    backoff: Backoff,
    collector: Arc<Mutex<Collector>>,
    pending: Spool,
    inventory: InventoryTracker,
    /// Reports queued and acknowledged since start, for `once`'s summary.
    queued: usize,
    acked: usize,
    /// When `run` next has something to collect: a flush pass stops there (after one batch at
    /// least) so that a long backlog does not hold collection up.
    next_due: Option<Instant>,
    /// Times the loop woke up, for the test that it sleeps between cycles.
    wakes: u64,
    /// Reports set aside since start (refused for good), and the last refusal.
    set_aside: Vec<u64>,
    last_refusal: Option<String>,
    /// The first number reserved by this process's jump above the collector's `last_seq`, if
    /// it jumped: every number from it on was handed out by this process.
    own_from: Option<u64>,
    /// `health_interval` in whole seconds, stated in each sample so the collector knows when
    /// this agent is overdue.
    health_interval_secs: u32,
}

impl Agent {
    fn open(config: &Config) -> anyhow::Result<(Agent, StateLock)> {
        Agent::open_with(config, Transport::from_config(config)?)
    }
}

impl<U: Uplink> Agent<U> {
    /// The agent of `config`'s state directory, talking to the collector through `transport`.
    fn open_with(config: &Config, transport: U) -> anyhow::Result<(Agent<U>, StateLock)> {
        let state = StateDir::new(&config.state_dir);
        let lock = state.lock()?;
        let agent_id = state.load_or_create_agent_id()?;
        let acked_digest = state.read_inventory_digest()?;
        let mut pending = Spool::open(state.path().join(SPOOL_DIR), config.spool_max_bytes)?;
        // Whether an earlier process's sends stored them is unknown (module doc).
        pending.assume_uncertain();
        let mut inventory = InventoryTracker::new(acked_digest);
        // An inventory spooled before a restart is the one waiting for its ack.
        if let Some(seq) = pending.seqs_of(Kind::Inventory).last().copied()
            && let Some(Report {
                body: ReportBody::Inventory(spooled),
                ..
            }) = pending.load(&[seq]).reports.pop()
        {
            inventory.queued(seq, spooled.content_digest());
        }
        info!(agent_id = %agent_id, server = %transport.server(), state_dir = %state.path().display(), "agent starting");
        let agent = Agent {
            state,
            agent_id,
            transport,
            auth: Auth::new(config.enroll_secret.clone()),
            paused_until: None,
            retry_at: None,
            backoff: Backoff::new(config.retry_max_backoff),
            collector: Arc::new(Mutex::new(Collector::new(Root::host()))),
            pending,
            inventory,
            queued: 0,
            acked: 0,
            next_due: None,
            wakes: 0,
            set_aside: Vec::new(),
            last_refusal: None,
            own_from: None,
            health_interval_secs: u32::try_from(config.health_interval.as_secs().max(1))
                .unwrap_or(u32::MAX),
        };
        Ok((agent, lock))
    }

    async fn collect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Collector, &str) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let collector = Arc::clone(&self.collector);
        let agent_id = self.agent_id.clone();
        tokio::task::spawn_blocking(move || {
            let mut collector = collector
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut collector, &agent_id)
        })
        .await
        .context("collection thread failed")
    }

    /// The next sequence number, above every spooled one: after a crash between renumbering
    /// the spool and moving the sequence file, the file is moved first.
    fn next_seq(&mut self) -> Result<u64, StateError> {
        if let Some(last) = self.pending.last_seq() {
            self.state.continue_after(last, 0)?;
        }
        self.state.next_seq()
    }

    /// Collects the inventory and queues it if it changed or was asked for.
    async fn inventory_step(&mut self) -> anyhow::Result<()> {
        let inventory: Inventory = self.collect(|c, id| c.inventory(id)).await?;
        let digest = inventory.content_digest();
        if !self.inventory.needed(&digest) {
            debug!(digest = %digest, "inventory unchanged");
            return Ok(());
        }
        let seq = self.next_seq()?;
        let software = inventory.software.len();
        self.pending
            .push(Report {
                seq,
                body: ReportBody::Inventory(inventory),
            })
            .context("could not spool the inventory")?;
        info!(seq, digest = %digest, software, "queueing inventory");
        self.inventory.queued(seq, digest);
        self.queued += 1;
        Ok(())
    }

    async fn health_step(&mut self) -> anyhow::Result<()> {
        let mut sample: HealthSample = self.collect(|c, id| c.health(id)).await?;
        sample.interval_secs = Some(self.health_interval_secs);
        let seq = self.next_seq()?;
        let collected_at = sample.collected_at.format(&Rfc3339).unwrap_or_default();
        let cpu_percent = sample.cpu_percent;
        self.pending
            .push(Report {
                seq,
                body: ReportBody::Health(sample),
            })
            .context("could not spool the health sample")?;
        // Logged once durable (the end-to-end test relies on it).
        debug!(seq, collected_at, cpu_percent = ?cpu_percent, "queueing health sample");
        self.queued += 1;
        Ok(())
    }

    /// Sends what is spooled, oldest first, in batches of at most [`MAX_BATCH`] reports and
    /// about [`MAX_BATCH_BYTES`], each report at most once per pass: what the collector does not
    /// acknowledge waits for the next attempt rather than being hammered in. One pass sends at
    /// most [`MAX_BATCHES_PER_PASS`] batches, and stops early when `run` has something due, and
    /// answers [`Pass::More`] when reports are left, so that `run` goes on draining a backlog
    /// between its scheduled collections instead of holding them up. Reports renumbered because the collector was ahead of this agent's
    /// sequence (see the module doc) go out once more at once, under numbers never sent before.
    async fn flush(&mut self) -> Result<Pass, SendError> {
        match self.flush_pass().await? {
            Pass::Renumbered => self.flush_pass().await,
            pass => Ok(pass),
        }
    }

    async fn flush_pass(&mut self) -> Result<Pass, SendError> {
        let seqs = self.pending.seqs();
        let mut rest = seqs.as_slice();
        let mut batches = 0;
        while !rest.is_empty() {
            let due = self.next_due.is_some_and(|due| Instant::now() >= due);
            if batches == MAX_BATCHES_PER_PASS || (batches > 0 && due) {
                // Only a backlog that shrinks is worth going on with at once.
                let progress = self.pending.len() < seqs.len();
                return Ok(if progress { Pass::More } else { Pass::Done });
            }
            batches += 1;
            let chunk = self.next_chunk(rest);
            rest = &rest[chunk.len()..];
            match self.send_reports(chunk).await {
                Ok(Taken::Next) => {}
                Ok(Taken::Renumbered) => return Ok(Pass::Renumbered),
                Ok(Taken::Stop) => return Ok(Pass::Done),
                Err(SendError::Transport(e)) if e.is_permanent_refusal() => {
                    match self.send_one_by_one(chunk, e).await? {
                        Taken::Next => {}
                        Taken::Renumbered => return Ok(Pass::Renumbered),
                        Taken::Stop => return Ok(Pass::Done),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Pass::Done)
    }

    /// The longest run of `seqs` that makes one batch: at most [`MAX_BATCH`] reports and
    /// [`MAX_BATCH_BYTES`] of records, but always one report.
    fn next_chunk<'a>(&self, seqs: &'a [u64]) -> &'a [u64] {
        let mut bytes = 0;
        let mut n = 0;
        for seq in seqs.iter().take(MAX_BATCH) {
            bytes += self.pending.record_len(*seq).unwrap_or(0);
            if n > 0 && bytes > MAX_BATCH_BYTES {
                break;
            }
            n += 1;
        }
        &seqs[..n.max(1)]
    }

    /// The collector refused a batch for good (400, 413, 422): sends its reports one at a
    /// time, so that only the ones it refuses alone are set aside.
    async fn send_one_by_one(
        &mut self,
        chunk: &[u64],
        e: TransportError,
    ) -> Result<Taken, SendError> {
        if let [seq] = chunk {
            self.set_aside(*seq, &e);
            return Ok(Taken::Next);
        }
        warn!(reports = chunk.len(), error = %e, "the collector refused a batch; sending its reports one at a time to find the one it refuses");
        for seq in chunk {
            match self.send_reports(std::slice::from_ref(seq)).await {
                Ok(Taken::Next) => {}
                // The collector's sequence moved, or this pass must end: pass it on.
                Ok(taken) => return Ok(taken),
                Err(SendError::Transport(e)) if e.is_permanent_refusal() => {
                    self.set_aside(*seq, &e)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Taken::Next)
    }

    /// Moves a report the collector refused for good out of the spool, keeping a copy in
    /// `rejected/` for an admin, and logs why.
    fn set_aside(&mut self, seq: u64, e: &TransportError) {
        let kind = self.pending.kind(seq);
        let kept = self
            .pending
            .reject(seq, &self.state.path().join(REJECTED_DIR));
        error!(
            seq,
            kind = ?kind,
            error = %e,
            kept_in = kept.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "the collector refused a report for good; it is set aside and not sent again \
             (retrying cannot fix this: check the collector's message and limits)"
        );
        if kind == Some(Kind::Inventory) {
            self.inventory.refused(seq);
        }
        // For `once`'s summary; a long-running agent keeps only the latest.
        if self.set_aside.len() == MAX_SET_ASIDE_KEPT {
            self.set_aside.remove(0);
        }
        self.set_aside.push(seq);
        self.last_refusal = Some(e.to_string());
    }

    /// Sends the spooled reports `seqs` as one batch and takes the collector's answer.
    async fn send_reports(&mut self, seqs: &[u64]) -> Result<Taken, SendError> {
        let loaded = self.pending.load(seqs);
        // A report that could not be read must not be overtaken: this batch is the last.
        let after = if loaded.complete {
            Taken::Next
        } else {
            Taken::Stop
        };
        let reports = loaded.reports;
        if reports.is_empty() {
            return Ok(after);
        }
        let sent: Vec<u64> = reports.iter().map(|r| r.seq).collect();
        let batch = Batch {
            protocol: PROTOCOL_VERSION,
            agent_id: self.agent_id.clone(),
            reports,
        };
        let ack = match self.send_batch(&batch).await {
            Ok(ack) => ack,
            Err(e) => {
                if e.may_have_been_stored() {
                    self.pending.mark_uncertain(&sent);
                }
                return Err(e);
            }
        };
        self.backoff.succeeded();
        self.retry_at = None;
        let jumped = match self.check_last_seq(&ack) {
            SeqCheck::Behind => false,
            SeqCheck::Jumped => true,
            // The ack's "acknowledged" may be false repeats: none of it counts, and the
            // reports stay spooled for the next attempt. They may have been stored (the
            // collector may not have been ahead at all), so a later jump must not renumber
            // them as certainly unstored.
            SeqCheck::Unsaved => {
                self.pending.mark_uncertain(&sent);
                return Ok(Taken::Stop);
            }
            // Not renumbered: the reports stay spooled under their numbers and go again
            // later. A wrong collector may have stored them, so they are uncertain.
            SeqCheck::Refused => {
                self.pending.mark_uncertain(&sent);
                return Ok(Taken::Stop);
            }
        };
        let removed = self.pending.ack(&ack.acked);
        self.acked += removed;
        debug!(
            sent = sent.len(),
            acked = removed,
            pending = self.pending.len(),
            "batch sent"
        );
        let partial = removed < sent.len() && !jumped;
        if partial {
            warn!(
                sent = sent.len(),
                acked = removed,
                "collector did not acknowledge every report; the rest go again next cycle"
            );
        }
        if let Some(digest) = self.inventory.on_ack(&ack)
            && let Err(e) = self.state.write_inventory_digest(&digest)
        {
            // Only costs a resend after a restart.
            warn!(error = %e, "could not remember the acknowledged inventory");
        }
        if ack.send_inventory {
            info!("collector asked for a full inventory");
        }
        // Every spooled number was below the collector's; the next pass sends the renumbered
        // reports. After a partial ack nothing later goes in this pass: it would overtake the
        // reports left out.
        Ok(if jumped {
            Taken::Renumbered
        } else if partial {
            Taken::Stop
        } else {
            after
        })
    }

    /// Sends one batch with the agent's token, enrolling first when [`Auth`] says so, and once
    /// more after the collector refused the token if a secret allows it (module doc).
    async fn send_batch(&mut self, batch: &Batch) -> Result<Ack, SendError> {
        if let Some(left) = pause_left(self.paused_until, Instant::now()) {
            return Err(SendError::Waiting(left));
        }
        self.paused_until = None;
        if let Some(left) = pause_left(self.retry_at, Instant::now()) {
            return Err(SendError::Backoff(left));
        }
        // Each round sends a token not refused before, or one enrolled in this attempt (at most
        // one): a refused token ends the rounds at the latest after the third.
        for _ in 0..3 {
            let token = self.token().await?;
            match self.transport.send(batch, &token).await {
                Ok(ack) => {
                    if let Some(problem) = self.auth.delivered() {
                        info!(
                            was = %problem.message(self.transport.server()),
                            "the collector accepts this agent's reports again"
                        );
                    }
                    return Ok(ack);
                }
                Err(TransportError::TokenInvalid { message, .. }) => {
                    self.auth.token_refused(token);
                    if self.auth.can_enroll() {
                        warn!(
                            collector_message = %message,
                            "the collector refused this agent's token; enrolling again with \
                             enroll_secret"
                        );
                    }
                }
                Err(TransportError::AgentForbidden { message, .. }) => {
                    return Err(self.stop(Problem::Forbidden, Some(&message)));
                }
                Err(e) => return Err(SendError::Transport(self.transport_failed(e))),
            }
        }
        Err(self.stop(Problem::TokenRefused { reenrolled: true }, None))
    }

    /// The token to send, from the state directory or from enrolling.
    async fn token(&mut self) -> Result<Token, SendError> {
        let stored = self.state.read_token().map_err(|e| match e {
            StateError::BadToken { path, detail } => format!("{}: {detail}", path.display()),
            other => other.to_string(),
        });
        let (next, ended) = self.auth.next(stored);
        if let Some(problem) = ended {
            info!(
                was = %problem.message(self.transport.server()),
                token_file = %self.state.token_path().display(),
                "the agent token changed; sending again"
            );
        }
        match next {
            Next::Send(token) => Ok(token),
            Next::Enroll => self.enroll().await,
            Next::Stop(problem) => Err(self.stop(problem, None)),
        }
    }

    /// Trades `enroll_secret` for a token and saves it.
    async fn enroll(&mut self) -> Result<Token, SendError> {
        let Some(secret) = self.auth.enrolling() else {
            return Err(self.stop(Problem::NoToken { detail: None }, None));
        };
        let request = crate::enroll::request(&self.agent_id, &secret);
        match self.transport.enroll(&request).await {
            Ok(token) => {
                match self.state.write_token(&token) {
                    Ok(()) => info!(
                        token_file = %self.state.token_path().display(),
                        "enrolled with the collector; agent token saved"
                    ),
                    // Logged once: the token is kept and sent while the collector accepts it,
                    // so there is no enrollment (and no new token on the collector) per cycle.
                    Err(e) => {
                        error!(
                            error = %e,
                            "enrolled with the collector, but could not save the agent token; \
                             it is used until the agent stops, and the next start enrolls \
                             again (fix the state directory)"
                        );
                        self.auth.unsaved(token.clone());
                    }
                }
                Ok(token)
            }
            Err(TransportError::SecretInvalid { message, .. }) => {
                self.auth.secret_refused();
                Err(self.stop(Problem::SecretRefused, Some(&message)))
            }
            Err(e) => Err(SendError::Enroll(self.transport_failed(e))),
        }
    }

    /// Delivery stops until the situation changes; logged when it is new.
    fn stop(&mut self, problem: Problem, collector_message: Option<&str>) -> SendError {
        let message = problem.message(self.transport.server());
        if self.auth.enter(&problem) {
            let pending = self.pending.len();
            match collector_message {
                Some(said) => error!(collector_message = %said, pending, "{message}"),
                None => error!(pending, "{message}"),
            }
        }
        SendError::Stopped(message)
    }

    /// A 429 pauses every request until its `Retry-After` has passed; any other failure but a
    /// refusal for good (handled by the flush) makes the next attempt wait out the backoff.
    fn transport_failed(&mut self, e: TransportError) -> TransportError {
        if let TransportError::RateLimited { retry_after, .. } = &e {
            self.paused_until = Instant::now().checked_add(*retry_after);
        } else if !e.is_permanent_refusal() {
            let wait = self.backoff.failed(crate::retry::jitter());
            self.retry_at = Instant::now().checked_add(wait);
            debug!(
                seconds = wait.as_secs_f64(),
                "next delivery attempt after backoff"
            );
        }
        e
    }

    /// Compares the ack's `last_seq` with this agent's sequence and, when the collector is
    /// ahead, continues the sequence above it and renumbers what is pending (module doc).
    fn check_last_seq(&mut self, ack: &Ack) -> SeqCheck {
        let Some(last_seq) = ack.last_seq else {
            return SeqCheck::Behind;
        };
        if last_seq > MAX_LAST_SEQ {
            error!(
                collector_last_seq = last_seq,
                max = MAX_LAST_SEQ,
                "the collector says it has stored sequence number {last_seq}, above any number \
                 it can store; ignoring it (the collector is wrong), the sequence goes on as \
                 before"
            );
            return SeqCheck::Behind;
        }
        let next = match self.state.peek_seq() {
            Ok(next) => next,
            Err(e) => {
                log_unsaved(last_seq, &e);
                return SeqCheck::Unsaved;
            }
        };
        if last_seq < next {
            return SeqCheck::Behind;
        }
        if last_seq - next > MAX_LEAD {
            error!(
                collector_last_seq = last_seq,
                agent_next_seq = next,
                "the collector says it has stored sequence number {last_seq}, more than 2^32 \
                 above this agent's next number {next}; no revert of the state directory \
                 explains that, so it is ignored (the collector is wrong) and the sequence goes \
                 on as before"
            );
            return SeqCheck::Behind;
        }
        if let Some(own_from) = self.own_from
            && last_seq >= own_from
        {
            // A revert explains one jump. Since this process's, every number from `own_from`
            // was handed out here, and the collector claims one this process has not handed
            // out yet: numbering above it again would only start a race.
            error!(
                collector_last_seq = last_seq,
                agent_next_seq = next,
                own_from,
                "another agent is using this agent id / state directory, or the collector is \
                 wrong: the collector says it has stored sequence number {last_seq}, but this \
                 agent moved its sequence above the collector's before, every number from \
                 {own_from} on is its own, and it has not handed out {next} yet; not renumbering \
                 again, the reports stay queued (if this machine was restored from a snapshot \
                 taken with its memory, restarting the agent lets it continue)"
            );
            return SeqCheck::Refused;
        }
        // The spooled reports get their new numbers first, in one durable record; only then
        // does the sequence file move past them. A crash in between leaves the file behind
        // the spool, and `next_seq` moves it above the spool's highest number before it hands
        // out another (a crash before leaves everything as it was: the next ack tells again).
        let first = last_seq + 1;
        let done = match self.pending.renumber_through(last_seq, first) {
            Ok(done) => done,
            Err(e) => {
                error!(
                    error = %e,
                    collector_last_seq = last_seq,
                    "the collector is ahead of this agent's sequence and the spooled reports \
                     could not be renumbered; nothing counts as delivered, and the next ack \
                     tries again"
                );
                return SeqCheck::Unsaved;
            }
        };
        let jump = match self.state.continue_after(last_seq, done.moved.len() as u64) {
            Ok(Some(jump)) => jump,
            Ok(None) => SeqJump { was: next, first },
            Err(e) => {
                log_unsaved(last_seq, &e);
                return SeqCheck::Unsaved;
            }
        };
        self.own_from = Some(jump.first);
        warn!(
            collector_last_seq = last_seq,
            agent_next_seq = jump.was,
            continuing_at = jump.first,
            "the collector has stored sequence numbers this agent had not handed out yet: its \
             state directory went back in time (a VM snapshot reverted, a backup restored, a \
             machine cloned from an image); the sequence continues above the collector's"
        );
        for (old, new) in &done.moved {
            self.inventory.renumbered(*old, *new);
        }
        if !done.moved.is_empty() {
            warn!(
                reports = done.moved.len(),
                old_seqs = ?done.moved.iter().map(|(old, _)| *old).collect::<Vec<_>>(),
                new_seqs = ?done.moved.iter().map(|(_, new)| *new).collect::<Vec<_>>(),
                "reports the collector took for repeats were never stored; sending them again \
                 under new numbers"
            );
        }
        for seq in done.dropped {
            warn!(
                seq,
                "dropping a health sample the collector took for a repeat: an earlier send of it \
                 ended without an answer, so it may be stored already, and under a new number it \
                 could be stored twice"
            );
        }
        // The collector's latest inventory came from the discarded timeline; the acknowledged
        // digest kept here predates it, so an unchanged digest proves nothing. Send the current
        // inventory (the queued one, or a fresh one at once).
        self.inventory.forget_acked();
        if let Err(e) = self.state.forget_inventory_digest() {
            // The inventory is still sent now; a restart before it is acknowledged might
            // skip it until it changes or the collector asks.
            warn!(error = %e, "could not forget the acknowledged inventory");
        }
        SeqCheck::Jumped
    }

    /// One cycle of what is due, then the flush; never fails the loop. Answers whether the
    /// flush left a backlog to go on with at once.
    async fn cycle(&mut self, due: Due) -> bool {
        if due.inventory
            && let Err(e) = self.inventory_step().await
        {
            error!(error = format!("{e:#}"), "could not queue inventory");
        }
        if due.health
            && let Err(e) = self.health_step().await
        {
            error!(error = format!("{e:#}"), "could not queue health sample");
        }
        matches!(
            self.flush_and_answer().await.map_err(log_send_error),
            Ok(Pass::More)
        )
    }

    /// Flushes, and if the collector asked for the inventory, collects and sends it at once.
    /// This is one send attempt: it enrolls at most once.
    async fn flush_and_answer(&mut self) -> Result<Pass, SendError> {
        self.auth.start_attempt();
        let mut pass = self.flush().await?;
        if self.inventory.requested {
            if let Err(e) = self.inventory_step().await {
                error!(error = format!("{e:#}"), "could not queue inventory");
            }
            pass = self.flush().await?;
        }
        Ok(pass)
    }
}

/// Logs why an ack's `last_seq` could not be dealt with ([`SeqCheck::Unsaved`]).
fn log_unsaved(last_seq: u64, e: &StateError) {
    match e {
        StateError::Exhausted { .. } => error!(
            error = %e,
            collector_last_seq = last_seq,
            "the collector is ahead of this agent's sequence and no sequence number is left \
             above its last_seq; nothing is counted as delivered"
        ),
        StateError::Write { .. } => error!(
            error = %e,
            collector_last_seq = last_seq,
            "the collector is ahead of this agent's sequence and the new sequence could not be \
             saved; nothing is counted as delivered"
        ),
        _ => error!(
            error = %e,
            collector_last_seq = last_seq,
            "could not read the sequence file to compare it with the collector's last_seq; \
             nothing is counted as delivered"
        ),
    }
}

fn log_send_error(e: SendError) {
    match e {
        SendError::Transport(e) => log_transport(e),
        SendError::Enroll(e @ TransportError::RateLimited { .. }) => log_transport(e),
        SendError::Enroll(e) => {
            error!(error = %e, "could not enroll with enroll_secret; trying again next cycle")
        }
        // Logged once, when delivery stopped.
        SendError::Stopped(_) => {
            debug!("reports kept: the situation logged as an error has not changed")
        }
        SendError::Waiting(left) => debug!(
            seconds_left = left.as_secs(),
            "not sending: the collector's Retry-After has not passed"
        ),
        // Logged when each report was set aside.
        SendError::Refused(_) => {}
        SendError::Backoff(left) => debug!(
            seconds_left = left.as_secs_f64(),
            "not sending yet: waiting out the backoff after a failed attempt"
        ),
    }
}

fn log_transport(e: TransportError) {
    match &e {
        TransportError::RateLimited { retry_after, .. } => warn!(
            retry_after_secs = retry_after.as_secs(),
            "the collector asks this agent to slow down (HTTP 429); nothing is sent before \
             Retry-After has passed, reports are kept"
        ),
        // Both need an admin: the trust or the server URL is wrong.
        TransportError::Untrusted { .. } | TransportError::Redirected { .. } => {
            error!(error = %e, "could not deliver reports")
        }
        TransportError::Rejected {
            status,
            code,
            message,
            ..
        } => {
            warn!(status, code = %code, message = %message, "collector refused reports; they stay spooled and are retried with backoff")
        }
        _ => {
            warn!(error = %e, "could not deliver reports; they stay spooled and are retried with backoff")
        }
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")
}

/// The service loop, until SIGINT or SIGTERM.
pub fn run(config: Config) -> anyhow::Result<()> {
    let (mut agent, _lock) = Agent::open(&config)?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        serve(&mut agent, &config, shutdown_signal()?).await;
        anyhow::Ok(())
    });
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

/// The service loop until `shutdown` resolves, for hosts that stop it some other way than by
/// a signal (the Windows Service Control Manager).
pub fn run_until(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (mut agent, _lock) = Agent::open(&config)?;
    let rt = runtime()?;
    rt.block_on(serve(&mut agent, &config, shutdown));
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    Ok(())
}

/// Cycles on `config`'s schedule until `shutdown` resolves. Every wait is on tokio's clock, so
/// tests run it on a paused one.
async fn serve<U: Uplink>(
    agent: &mut Agent<U>,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut schedule = Schedule::new(
        Instant::now(),
        config.health_interval,
        config.inventory_interval,
    );
    loop {
        agent.wakes += 1;
        let due = schedule.take_due(Instant::now());
        agent.next_due = Some(schedule.next_wake());
        let more = tokio::select! {
            more = agent.cycle(due) => more,
            () = &mut shutdown => break,
        };
        // A backlog goes on draining at once (what is due is collected first, each time); a
        // 429's pause or a backoff may end before anything is due: wake then, to flush.
        let wake = if more {
            Instant::now()
        } else {
            [agent.paused_until, agent.retry_at]
                .into_iter()
                .flatten()
                .fold(schedule.next_wake(), Instant::min)
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = &mut shutdown => break,
        }
    }
    info!(pending = agent.pending.len(), "agent stopping");
}

/// One cycle: the inventory if it changed (or was never acknowledged), one health sample, a
/// flush. Fails with [`NotAcknowledged`] unless the collector acknowledged every report.
pub fn once(config: Config) -> anyhow::Result<()> {
    let (mut agent, _lock) = Agent::open(&config)?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        agent.inventory_step().await?;
        agent.health_step().await?;
        let cause = loop {
            match agent.flush_and_answer().await {
                Ok(Pass::More) => continue,
                Ok(_) => break None,
                Err(e) => break Some(e),
            }
        };
        if agent.pending.is_empty() && agent.set_aside.is_empty() {
            info!(reports = agent.queued, "all reports acknowledged");
            return Ok(());
        }
        let mut unacked = agent.set_aside.clone();
        unacked.extend(agent.pending.seqs());
        unacked.sort_unstable();
        let cause = cause.or_else(|| agent.last_refusal.take().map(SendError::Refused));
        Err(NotAcknowledged {
            acked: agent.acked,
            total: agent.queued.max(agent.acked + unacked.len()),
            unacked,
            cause,
        }
        .into())
    });
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

/// Resolves on the first SIGINT or SIGTERM.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("could not listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("could not listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
        }
    })
}

/// Resolves on the first Ctrl-C of the console `census-agent run` was started from. (The
/// Service Control Manager stops the service through [`run_until`] instead.)
#[cfg(windows)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut ctrl_c = tokio::signal::windows::ctrl_c().context("could not listen for Ctrl-C")?;
    Ok(async move {
        ctrl_c.recv().await;
        info!(signal = "Ctrl-C", "shutting down");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    use census_common::EnrollRequest;

    use crate::auth::Secret;

    /// One batch the scripted collector received.
    struct Sent {
        at: Instant,
        token: String,
        seqs: Vec<u64>,
    }

    type Answer = dyn Fn(&Batch, usize) -> Result<Ack, TransportError>;

    /// A collector in memory for [`Agent`]: issues `token-N` to the N-th enrollment, answers
    /// batches as the test says, and records what it got, on tokio's clock.
    struct Scripted {
        answer: Box<Answer>,
        sent: RefCell<Vec<Sent>>,
        enrollments: Cell<usize>,
        /// Told of every batch, so a test can wait for the N-th.
        on_send: tokio::sync::mpsc::UnboundedSender<()>,
        /// How long the collector takes to answer, on tokio's clock.
        delay: Cell<Duration>,
    }

    impl Scripted {
        fn new(
            answer: impl Fn(&Batch, usize) -> Result<Ack, TransportError> + 'static,
        ) -> (Scripted, tokio::sync::mpsc::UnboundedReceiver<()>) {
            let (on_send, sends) = tokio::sync::mpsc::unbounded_channel();
            let scripted = Scripted {
                answer: Box::new(answer),
                sent: RefCell::default(),
                enrollments: Cell::new(0),
                on_send,
                delay: Cell::new(Duration::ZERO),
            };
            (scripted, sends)
        }
    }

    impl Uplink for &Scripted {
        fn server(&self) -> &str {
            "http://127.0.0.1:9"
        }

        async fn send(&self, batch: &Batch, token: &Token) -> Result<Ack, TransportError> {
            let index = self.sent.borrow().len();
            self.sent.borrow_mut().push(Sent {
                at: Instant::now(),
                token: token.expose().to_owned(),
                seqs: batch.reports.iter().map(|r| r.seq).collect(),
            });
            let _ = self.on_send.send(());
            tokio::time::sleep(self.delay.get()).await;
            (self.answer)(batch, index)
        }

        async fn enroll(&self, _: &EnrollRequest) -> Result<Token, TransportError> {
            let n = self.enrollments.get();
            self.enrollments.set(n + 1);
            Ok(Token::parse(&format!("token-{n}")).unwrap())
        }
    }

    fn ack_all(batch: &Batch) -> Result<Ack, TransportError> {
        Ok(Ack {
            acked: batch.reports.iter().map(|r| r.seq).collect(),
            send_inventory: false,
            last_seq: None,
        })
    }

    /// An agent with an enrollment secret and its state in `dir`: health every minute.
    fn test_config(dir: &tempfile::TempDir) -> Config {
        Config {
            enroll_secret: Some(Secret::new("s")),
            state_dir: dir.path().join("state"),
            health_interval: Duration::from_secs(60),
            inventory_interval: Duration::from_secs(3600),
            ..Config::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_stops_every_send_until_retry_after_and_the_loop_wakes_then() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir);
        let (collector, mut sends) = Scripted::new(|batch, index| match index {
            0 => Err(TransportError::RateLimited {
                url: "http://127.0.0.1:9/agent/v1/reports".to_owned(),
                retry_after: Duration::from_secs(90),
            }),
            _ => ack_all(batch),
        });
        let (mut agent, _lock) = Agent::open_with(&config, &collector).unwrap();
        tokio::select! {
            () = serve(&mut agent, &config, std::future::pending()) => unreachable!(),
            _ = async {
                sends.recv().await;
                sends.recv().await
            } => {}
        }
        let sent = collector.sent.borrow();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].seqs, [1, 2]);
        // The health sample due at 60 s was collected but not sent; the loop woke when the
        // 90 s had passed, not at the next health sample (120 s), and sent everything.
        assert_eq!(sent[1].at - sent[0].at, Duration::from_secs(90));
        assert_eq!(sent[1].seqs, [1, 2, 3]);
        assert!(sent.iter().all(|s| s.token == "token-0"));
        assert_eq!(collector.enrollments.get(), 1);
    }

    #[tokio::test]
    async fn a_token_that_cannot_be_saved_is_sent_without_enrolling_again() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir);
        // A directory where the token file goes: no write replaces it, whoever runs the test.
        std::fs::create_dir_all(config.state_dir.join("token/in-the-way")).unwrap();
        let (collector, _sends) = Scripted::new(|batch, _| ack_all(batch));
        let (mut agent, _lock) = Agent::open_with(&config, &collector).unwrap();
        for _ in 0..2 {
            agent.health_step().await.unwrap();
            agent.flush_and_answer().await.unwrap();
        }
        assert_eq!(collector.enrollments.get(), 1);
        let sent = collector.sent.borrow();
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|s| s.token == "token-0"));
        assert!(agent.pending.is_empty());
    }

    const H: Duration = Duration::from_secs(60);
    const I: Duration = Duration::from_secs(3600);

    #[test]
    fn everything_is_due_at_start_then_on_its_own_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, H, I);
        assert_eq!(
            s.take_due(t0),
            Due {
                health: true,
                inventory: true
            }
        );
        assert_eq!(s.next_wake(), t0 + H);
        assert_eq!(s.take_due(t0 + Duration::from_secs(30)), Due::default());
        assert_eq!(
            s.take_due(t0 + H),
            Due {
                health: true,
                inventory: false
            }
        );
        assert_eq!(s.next_wake(), t0 + 2 * H);
        // Sixty health intervals later the inventory is due again, together with health.
        let mut now = t0 + H;
        for _ in 0..59 {
            now += H;
            let due = s.take_due(now);
            assert!(due.health);
            assert_eq!(due.inventory, now == t0 + I, "at {:?}", now - t0);
        }
    }

    #[test]
    fn a_stall_fires_once_and_restarts_the_rhythm() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, H, I);
        s.take_due(t0);
        // The machine slept for ten minutes: one health sample, not ten.
        let woke = t0 + Duration::from_secs(600) + Duration::from_millis(5);
        assert!(s.take_due(woke).health);
        assert!(!s.take_due(woke).health);
        assert_eq!(s.next_wake(), woke + H);
    }

    #[test]
    fn absurd_intervals_do_not_overflow_the_clock() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Duration::MAX, Duration::from_secs(u64::MAX));
        assert_eq!(
            s.take_due(t0),
            Due {
                health: true,
                inventory: true
            }
        );
        assert!(s.next_wake() > t0);
        assert_eq!(s.take_due(t0 + H), Due::default());
        // Even a `next` at the edge of what Instant holds advances without a panic.
        let edge = t0 + MAX_SCHEDULE_INTERVAL;
        assert!(advance(edge, Duration::MAX, t0) >= t0);
    }

    #[test]
    fn inventory_is_queued_only_when_changed_or_requested() {
        // Never acknowledged: send.
        assert!(inventory_needed("d1", None, None, false));
        // Acknowledged before (possibly by a previous run): do not resend.
        assert!(!inventory_needed("d1", Some("d1"), None, false));
        // Already waiting in the queue: do not queue twice.
        assert!(!inventory_needed("d2", Some("d1"), Some("d2"), false));
        // Changed: send.
        assert!(inventory_needed("d3", Some("d1"), Some("d2"), false));
        // The collector asked: send even if unchanged.
        assert!(inventory_needed("d1", Some("d1"), None, true));
    }

    fn ack(acked: impl IntoIterator<Item = u64>, send_inventory: bool) -> Ack {
        Ack {
            acked: acked.into_iter().collect(),
            send_inventory,
            last_seq: None,
        }
    }

    #[test]
    fn a_request_is_answered_by_an_inventory_acknowledged_later_in_the_same_flush() {
        // 149 health samples and then the inventory: two batches of one flush. The first ack
        // asks for the inventory (the collector has none yet); the second acknowledges it.
        let mut t = InventoryTracker::new(None);
        t.queued(150, "d1".to_owned());
        assert_eq!(t.on_ack(&ack(1..=100, true)), None);
        assert!(t.requested);
        assert_eq!(t.on_ack(&ack(101..=150, false)), Some("d1".to_owned()));
        // Answered: `flush_and_answer` sends no second, unchanged inventory.
        assert!(!t.requested);
        assert!(!t.needed("d1"));
        assert_eq!(t.acked_digest.as_deref(), Some("d1"));
        assert_eq!(t.queued, None);
    }

    #[test]
    fn a_request_made_after_the_inventory_was_acknowledged_stands() {
        // Acknowledged first, asked for later (a collector that lost its data).
        let mut t = InventoryTracker::new(None);
        t.queued(1, "d1".to_owned());
        assert_eq!(t.on_ack(&ack([1], false)), Some("d1".to_owned()));
        assert_eq!(t.on_ack(&ack([2], true)), None);
        assert!(t.requested && t.needed("d1"));
        // The same ack acknowledging the inventory and asking for one: the collector decided
        // after storing the batch, so it still wants one.
        let mut t = InventoryTracker::new(None);
        t.queued(1, "d1".to_owned());
        assert_eq!(t.on_ack(&ack([1], true)), Some("d1".to_owned()));
        assert!(t.requested && t.needed("d1"));
        // Queueing an inventory answers the request.
        t.queued(2, "d1".to_owned());
        assert!(!t.requested && !t.needed("d1"));
    }

    #[test]
    fn forgetting_the_acknowledged_inventory_asks_for_one_unless_one_is_queued() {
        let mut t = InventoryTracker::new(Some("d1".to_owned()));
        assert!(!t.needed("d1"));
        t.forget_acked();
        assert_eq!(t.acked_digest, None);
        assert!(t.requested && t.needed("d1"));
        // One already queued goes out anyway: no second one is asked for.
        let mut t = InventoryTracker::new(Some("d1".to_owned()));
        t.queued(7, "d2".to_owned());
        t.forget_acked();
        assert!(!t.requested && !t.needed("d2"));
        assert!(t.needed("d1"));
    }

    #[test]
    fn a_pause_lasts_until_its_instant() {
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(30);
        assert_eq!(pause_left(None, t0), None);
        assert_eq!(pause_left(Some(until), t0), Some(Duration::from_secs(30)));
        assert_eq!(
            pause_left(Some(until), t0 + Duration::from_secs(29)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(pause_left(Some(until), until), None);
        assert_eq!(
            pause_left(Some(until), until + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn not_acknowledged_message_lists_what_was_lost_and_why() {
        let err = NotAcknowledged {
            acked: 1,
            total: 3,
            unacked: vec![5, 6],
            cause: Some(SendError::Transport(TransportError::Unreachable {
                url: "http://127.0.0.1:9/agent/v1/reports".to_owned(),
                message: "connection refused".to_owned(),
            })),
        };
        let text = err.to_string();
        assert!(text.contains("acknowledged 1 of 3"), "{text}");
        assert!(text.contains("seq 5, 6"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
    }
    fn synthetic_health(agent: &mut Agent<&Scripted>) -> u64 {
        let seq = agent.state.next_seq().unwrap();
        let sample = HealthSample::empty(agent.agent_id.clone(), time::OffsetDateTime::now_utc());
        agent
            .pending
            .push(Report {
                seq,
                body: ReportBody::Health(sample),
            })
            .unwrap();
        seq
    }

    fn unreachable() -> TransportError {
        TransportError::Unreachable {
            url: "http://127.0.0.1:9/agent/v1/reports".to_owned(),
            message: "connection refused".to_owned(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_attempts_back_off_exponentially_with_jitter_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            // Health rarely, so every send after the first is a retry.
            health_interval: Duration::from_secs(86_400),
            retry_max_backoff: Duration::from_secs(60),
            ..test_config(&dir)
        };
        let (collector, mut sends) = Scripted::new(|batch, index| match index {
            0..10 => Err(unreachable()),
            _ => ack_all(batch),
        });
        let (mut agent, _lock) = Agent::open_with(&config, &collector).unwrap();
        tokio::select! {
            () = serve(&mut agent, &config, std::future::pending()) => unreachable!(),
            _ = async { for _ in 0..11 { sends.recv().await; } } => {}
        }
        let sent = collector.sent.borrow();
        for (n, pair) in sent.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            let ceiling = Duration::from_secs(1 << n.min(20)).min(config.retry_max_backoff);
            assert!(
                gap >= ceiling / 2 && gap <= ceiling,
                "retry {n}: waited {gap:?}, ceiling {ceiling:?}"
            );
        }
        // The reports waited in the spool and went in the end, in order.
        assert_eq!(sent.last().unwrap().seqs, sent[0].seqs);
        drop(sent);
        assert!(agent.pending.is_empty());
        assert_eq!(agent.backoff.failures(), 0, "a success resets the backoff");
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_drains_in_order_in_batches_while_collection_keeps_its_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir);
        let (collector, mut sends) = Scripted::new(|batch, _| ack_all(batch));
        // Each batch takes the collector 10 s: the 2,500 reports of the backlog take 250 s,
        // during which health samples are due every 60 s.
        collector.delay.set(Duration::from_secs(10));
        let (mut agent, _lock) = Agent::open_with(&config, &collector).unwrap();
        for _ in 0..2500 {
            synthetic_health(&mut agent);
        }
        let start = Instant::now();
        tokio::select! {
            () = serve(&mut agent, &config, std::future::pending()) => unreachable!(),
            _ = async {
                while agent_pending_reports(&collector) < 2500 + 6 { sends.recv().await; }
            } => {}
        }
        let sent = collector.sent.borrow();
        let seqs: Vec<u64> = sent.iter().flat_map(|s| s.seqs.clone()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, each once");
        assert!(sent.iter().all(|s| s.seqs.len() <= MAX_BATCH));
        // Samples were collected on schedule while the backlog drained (at 0 s with the
        // inventory, then at 60, 120, 180 and 240 s), not after it: the first batch after the
        // backlog, at 250 s, carries all six, behind the backlog as the order requires.
        let first_fresh = sent
            .iter()
            .find(|s| s.seqs.iter().any(|seq| *seq > 2500))
            .unwrap();
        assert_eq!(first_fresh.at - start, Duration::from_secs(250));
        assert_eq!(first_fresh.seqs, (2501..=2506).collect::<Vec<_>>());
    }

    fn agent_pending_reports(collector: &Scripted) -> usize {
        collector.sent.borrow().iter().map(|s| s.seqs.len()).sum()
    }

    #[tokio::test]
    async fn an_inventory_refused_for_good_is_set_aside_and_not_queued_again_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir);
        let (collector, _sends) = Scripted::new(|batch, _| {
            if batch
                .reports
                .iter()
                .any(|r| matches!(r.body, ReportBody::Inventory(_)))
            {
                Err(TransportError::Rejected {
                    url: "http://127.0.0.1:9/agent/v1/reports".to_owned(),
                    status: 422,
                    code: "too_many_items".to_owned(),
                    message: "software: 90001 entries, at most 50000".to_owned(),
                })
            } else {
                ack_all(batch)
            }
        });
        let (mut agent, _lock) = Agent::open_with(&config, &collector).unwrap();
        agent.inventory_step().await.unwrap();
        synthetic_health(&mut agent);
        agent.flush_and_answer().await.unwrap();
        // The batch of two was refused; alone, the health sample went through and the
        // inventory was set aside.
        let sizes: Vec<usize> = collector
            .sent
            .borrow()
            .iter()
            .map(|s| s.seqs.len())
            .collect();
        assert_eq!(sizes, vec![2, 1, 1]);
        assert!(agent.pending.is_empty());
        assert_eq!(agent.set_aside, vec![1]);
        assert!(
            dir.path()
                .join("state/rejected/00000000000000000001.inventory.msgpack")
                .exists()
        );
        // Collected again unchanged: not queued.
        agent.inventory_step().await.unwrap();
        assert!(agent.pending.is_empty());
        // Unless the collector asks for one.
        agent.inventory.requested = true;
        agent.inventory_step().await.unwrap();
        assert_eq!(agent.pending.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn between_cycles_the_loop_sleeps_until_something_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir);
        let (collector, _sends) = Scripted::new(|batch, _| ack_all(batch));
        let (mut agent, _lock) = Agent::open_with(&config, &collector).unwrap();
        tokio::select! {
            () = serve(&mut agent, &config, std::future::pending()) => unreachable!(),
            () = tokio::time::sleep(Duration::from_secs(600) + Duration::from_millis(1)) => {}
        }
        // Health at 0, 60, ..., 600 s: eleven wake-ups, each one a cycle with a send; no
        // other timer woke the loop.
        assert_eq!(agent.wakes, 11);
        assert_eq!(collector.sent.borrow().len(), 11);
    }

    #[tokio::test]
    async fn a_crash_between_renumbering_and_the_sequence_file_never_reuses_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir);
        let (collector, _sends) = Scripted::new(|batch, _| ack_all(batch));
        let (mut agent, lock) = Agent::open_with(&config, &collector).unwrap();
        for _ in 0..3 {
            synthetic_health(&mut agent);
        }
        // The renumbering reached the disk; the sequence file did not (a crash in between).
        agent.pending.renumber_through(50, 51).unwrap();
        drop((agent, lock));
        let (mut agent, _lock) = Agent::open_with(&config, &collector).unwrap();
        assert_eq!(agent.pending.seqs(), vec![51, 52, 53]);
        assert_eq!(agent.next_seq().unwrap(), 54);
    }

    #[tokio::test]
    async fn a_refusal_of_the_whole_request_backs_off_and_sets_nothing_aside() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir);
        let (collector, _sends) = Scripted::new(|_, _| {
            Err(TransportError::Rejected {
                url: "http://127.0.0.1:9/agent/v1/reports".to_owned(),
                status: 400,
                code: "unsupported_protocol".to_owned(),
                message: "protocol 1 is not supported".to_owned(),
            })
        });
        let (mut agent, _lock) = Agent::open_with(&config, &collector).unwrap();
        for _ in 0..150 {
            synthetic_health(&mut agent);
        }
        assert!(agent.flush_and_answer().await.is_err());
        assert_eq!(
            collector.sent.borrow().len(),
            1,
            "no report-by-report search"
        );
        assert_eq!(agent.pending.len(), 150);
        assert!(agent.set_aside.is_empty());
        assert!(agent.retry_at.is_some(), "retried with backoff");
    }

    #[tokio::test]
    async fn an_unreadable_report_stops_the_pass_so_nothing_overtakes_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            spool_max_bytes: 1 << 20,
            ..test_config(&dir)
        };
        // The collector stores a report only above the last one it stored, as the real one.
        let stored = std::rc::Rc::new(RefCell::new(Vec::<u64>::new()));
        let store = std::rc::Rc::clone(&stored);
        let (collector, _sends) = Scripted::new(move |batch, _| {
            let mut store = store.borrow_mut();
            for report in &batch.reports {
                if store.last().is_none_or(|last| report.seq > *last) {
                    store.push(report.seq);
                }
            }
            ack_all(batch)
        });
        let (mut agent, _lock) = Agent::open_with(&config, &collector).unwrap();
        let mut seqs = Vec::new();
        // Enough 300-byte samples for several 64 KiB segments.
        for _ in 0..1500 {
            seqs.push(synthetic_health(&mut agent));
        }
        let segment = dir.path().join("state/spool/0000000000000002.seg");
        let aside = dir.path().join("aside");
        std::fs::rename(&segment, &aside).unwrap();
        std::fs::create_dir(&segment).unwrap();
        let _ = agent.flush_and_answer().await;
        std::fs::remove_dir(&segment).unwrap();
        std::fs::rename(&aside, &segment).unwrap();
        while !agent.pending.is_empty() {
            agent.flush_and_answer().await.unwrap();
        }
        assert_eq!(*stored.borrow(), seqs, "every report stored once, in order");
    }
}
