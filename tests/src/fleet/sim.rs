//! The scheduler: one task owns every agent's state and a time-ordered queue of what is due;
//! each request runs as its own task and reports back through a channel, so no agent state is
//! shared and no lock is taken. Memory per agent is its token and a few counters (a fleet of
//! 300,000 agents is some tens of MB), not a task or a timer.
//!
//! Agent `i` makes first contact at `i / N` of `max(ramp, interval)` after the start (so
//! first contacts never arrive all at once), then acts every interval after that; inventory
//! changes (health mode) come every `--inventory-every`, staggered over that period.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use census_common::{Ack, Batch, EnrollRequest, PROTOCOL_VERSION, Report, ReportBody};
use reqwest::header::HeaderValue;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc};

use super::identity::{self, Profile};
use super::inventory::{self, Fixture};
use super::report::{Bytes, KindReport, Latency, RunReport, Totals};
use super::state::{SavedAgent, StateFile};
use super::wire::{Exchange, Wire, encode_batch};
use super::{Mode, Options, health};
use crate::stats::Tally;

/// What a request was, for the tallies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Enroll = 0,
    Health = 1,
    /// An inventory the collector had not seen from this agent.
    InventoryNew = 2,
    /// A changed inventory of an agent the collector knows.
    InventoryChanged = 3,
}

const KINDS: [Kind; 4] = [
    Kind::Enroll,
    Kind::Health,
    Kind::InventoryNew,
    Kind::InventoryChanged,
];

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Enroll => "enroll",
            Kind::Health => "health",
            Kind::InventoryNew => "inventory_new",
            Kind::InventoryChanged => "inventory_changed",
        }
    }
}

/// A scheduled event of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// First contact: enroll if needed, then the first report.
    Contact,
    /// A health sample is due (health mode).
    Health,
    /// The agent's inventory changed (health mode), or its inventory is due (inventory mode).
    Inventory,
}

/// What a request sends.
#[derive(Debug, Clone, Copy)]
enum Job {
    Health,
    Inventory { version: u32, new: bool },
}

impl Job {
    fn kind(self) -> Kind {
        match self {
            Job::Health => Kind::Health,
            Job::Inventory { new: true, .. } => Kind::InventoryNew,
            Job::Inventory { new: false, .. } => Kind::InventoryChanged,
        }
    }
}

#[derive(Debug, Default)]
struct Agent {
    auth: Option<HeaderValue>,
    /// The last sequence number used.
    seq: u64,
    /// The version of the last inventory the collector acked.
    inventory_version: u32,
    inventory_known: bool,
    /// The collector asked for a full inventory (`send_inventory` in an ack).
    wants_inventory: bool,
    busy: bool,
    /// Events that came due while a request was in flight, in order.
    deferred: Vec<(Instant, Event)>,
}

/// What every request task needs.
struct Shared {
    wire: Wire,
    fixture: Arc<Fixture>,
    seed: u64,
    churn: f64,
    breaching: f64,
    interval_secs: u32,
    secret: Option<String>,
}

/// A finished request, back to the scheduler.
struct Done {
    index: u32,
    seq: u64,
    job: Job,
    enroll: Option<Exchange>,
    report: Option<Exchange>,
    auth: Option<HeaderValue>,
    ack: Option<Ack>,
}

/// Tallies of one span of time.
#[derive(Default)]
struct Book {
    kinds: [Tally; 4],
    lag: Tally,
    head_bytes: u64,
}

impl Book {
    fn record(&mut self, kind: Kind, exchange: &Exchange, error: Option<&str>) {
        let tally = &mut self.kinds[kind as usize];
        match error {
            None => tally.ok(exchange.latency, exchange.body_bytes),
            Some(what) => tally.error(what, exchange.body_bytes),
        }
        self.head_bytes += exchange.head_bytes as u64;
    }
}

struct Scheduler {
    options: Options,
    ctx: Arc<Shared>,
    agents: Vec<Agent>,
    queue: BinaryHeap<Reverse<(Instant, u32, Event)>>,
    permits: Arc<Semaphore>,
    done_tx: mpsc::UnboundedSender<Done>,
    in_flight: usize,
    start: Instant,
    /// Nothing is scheduled at or after this.
    end: Instant,
    window: (Instant, Instant),
    total: Book,
    measured: Book,
    tick: Book,
    unsent: u64,
}

/// Runs the fleet as `options` say; the report once every request has been answered.
pub async fn run(options: Options) -> anyhow::Result<RunReport> {
    options.validate().map_err(anyhow::Error::msg)?;
    let state = match &options.state {
        Some(path) => Some(StateFile::load(path, options.seed)?),
        None => None,
    };
    let wire = Wire::new(&options.url, options.timeout, options.concurrency as usize)
        .context("could not set up the HTTP client")?;
    let ctx = Arc::new(Shared {
        wire,
        fixture: Arc::new(Fixture::load()),
        seed: options.seed,
        churn: options.churn,
        breaching: options.breaching,
        interval_secs: options.interval.as_secs().clamp(1, u64::from(u32::MAX)) as u32,
        secret: options.enroll_secret.clone(),
    });
    let mut agents: Vec<Agent> = (0..options.agents).map(|_| Agent::default()).collect();
    if let Some(state) = &state {
        restore(&mut agents, state, options.seed);
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let end = match options.mode {
        Mode::Seed => start + Duration::from_secs(100 * 365 * 86_400),
        _ => start + options.duration,
    };
    let mut scheduler = Scheduler {
        ctx,
        agents,
        queue: BinaryHeap::new(),
        permits: Arc::new(Semaphore::new(options.concurrency as usize)),
        done_tx,
        in_flight: 0,
        start,
        end,
        window: (start + options.ramp.min(options.duration), end),
        total: Book::default(),
        measured: Book::default(),
        tick: Book::default(),
        unsent: 0,
        options,
    };
    scheduler.plan();
    let stopped_at = scheduler.drive(&mut done_rx).await;
    // A seed run is measured until its last answer; a timed run until its schedule ended.
    let window_end = match scheduler.options.mode {
        Mode::Seed => Instant::now(),
        _ => stopped_at,
    };
    if let Some(path) = &scheduler.options.state {
        scheduler.state().save(path)?;
    }
    Ok(scheduler.report(window_end))
}

fn restore(agents: &mut [Agent], state: &StateFile, seed: u64) {
    for saved in &state.agents {
        let Some(agent) = agents.get_mut(saved.index as usize) else {
            continue;
        };
        if saved.agent_id != identity::agent_id(seed, saved.index) {
            continue;
        }
        agent.auth = saved
            .token
            .as_deref()
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok());
        agent.seq = saved.seq;
        agent.inventory_version = saved.inventory_version;
        agent.inventory_known = saved.inventory_known;
    }
}

impl Scheduler {
    /// Puts every agent's first contact in the queue.
    fn plan(&mut self) {
        let n = self.agents.len() as u32;
        let spread = self.options.ramp.max(self.options.interval);
        for index in 0..n {
            let due = match self.options.mode {
                // Only agents the collector has no inventory of; all at once, paced by
                // --concurrency.
                Mode::Seed if self.agents[index as usize].inventory_known => continue,
                Mode::Seed => self.start,
                _ => self.start + spread.mul_f64(f64::from(index) / f64::from(n)),
            };
            self.queue.push(Reverse((due, index, Event::Contact)));
        }
    }

    /// Sends what comes due and collects answers until the schedule is done (or Ctrl-C) and
    /// every request has been answered; when the schedule stopped.
    async fn drive(&mut self, done_rx: &mut mpsc::UnboundedReceiver<Done>) -> Instant {
        let mut progress = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(10),
            Duration::from_secs(10),
        );
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut stopped_at = None;
        loop {
            let now = Instant::now();
            if stopped_at.is_none() {
                // With every permit taken, wait for an answer in the select below rather than
                // here, so that progress lines and Ctrl-C still get through.
                while let Some(Reverse((due, index, event))) = self.queue.peek().copied() {
                    if due > now || self.permits.available_permits() == 0 {
                        break;
                    }
                    self.queue.pop();
                    self.due(due, index, event).await;
                }
                if self.queue.is_empty() || now >= self.end {
                    stopped_at = Some(now.min(self.end));
                    self.queue.clear();
                }
            }
            while let Ok(done) = done_rx.try_recv() {
                self.finished(done).await;
            }
            if let Some(at) = stopped_at
                && self.in_flight == 0
            {
                return at;
            }
            let next = self
                .queue
                .peek()
                .map_or(self.end, |Reverse((due, ..))| (*due).min(self.end));
            tokio::select! {
                Some(done) = done_rx.recv() => self.finished(done).await,
                _ = tokio::time::sleep_until(next.into()),
                    if stopped_at.is_none() && self.permits.available_permits() > 0 => {}
                _ = progress.tick() => self.progress(),
                _ = &mut ctrl_c, if stopped_at.is_none() => {
                    eprintln!("interrupted: waiting for the requests in flight");
                    stopped_at = Some(Instant::now());
                    self.queue.clear();
                }
            }
        }
    }

    /// An event came due: schedule what follows it, and send it (or defer it while the
    /// agent's previous request is in flight).
    async fn due(&mut self, due: Instant, index: u32, event: Event) {
        let interval = self.options.interval;
        let next = |at: Instant, event: Event, queue: &mut BinaryHeap<_>| {
            if at < self.end {
                queue.push(Reverse((at, index, event)));
            }
        };
        match (self.options.mode, event) {
            (Mode::Seed, _) => {}
            (Mode::Health, Event::Contact) => {
                next(due + interval, Event::Health, &mut self.queue);
                let every = self.options.inventory_every;
                if !every.is_zero() {
                    let first = every.mul_f64(identity::stagger(index)).max(interval);
                    next(due + first, Event::Inventory, &mut self.queue);
                }
            }
            (Mode::Health, Event::Health) => next(due + interval, Event::Health, &mut self.queue),
            (Mode::Health, Event::Inventory) => next(
                due + self.options.inventory_every,
                Event::Inventory,
                &mut self.queue,
            ),
            (Mode::Inventory, _) => next(due + interval, Event::Inventory, &mut self.queue),
        }
        let agent = &mut self.agents[index as usize];
        if agent.busy {
            agent.deferred.push((due, event));
            return;
        }
        self.send(due, index, event).await;
    }

    /// Starts the request `event` asks of agent `index` (not busy).
    async fn send(&mut self, due: Instant, index: u32, event: Event) {
        let mode = self.options.mode;
        let agent = &mut self.agents[index as usize];
        let changed = |agent: &Agent| Job::Inventory {
            version: agent.inventory_version + u32::from(agent.inventory_known),
            new: !agent.inventory_known,
        };
        let job = match (mode, event) {
            (Mode::Seed, _) => changed(agent),
            (Mode::Inventory, _) => changed(agent),
            (Mode::Health, Event::Inventory) => changed(agent),
            (Mode::Health, _) if !agent.inventory_known || agent.wants_inventory => {
                Job::Inventory {
                    version: agent.inventory_version,
                    new: !agent.inventory_known,
                }
            }
            (Mode::Health, _) => Job::Health,
        };
        agent.seq += 1;
        agent.busy = true;
        let seq = agent.seq;
        let auth = agent.auth.clone();
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let started = Instant::now();
        let lag = started.saturating_duration_since(due);
        self.total.lag.ok(lag, 0);
        self.tick.lag.ok(lag, 0);
        if started >= self.window.0 && started <= self.window.1 {
            self.measured.lag.ok(lag, 0);
        }
        self.in_flight += 1;
        let ctx = Arc::clone(&self.ctx);
        let done_tx = self.done_tx.clone();
        tokio::spawn(async move {
            let done = request(&ctx, index, seq, job, auth).await;
            drop(permit);
            // The scheduler outlives every request it started.
            let _ = done_tx.send(done);
        });
    }

    /// An answered request: count it, update its agent, send what it deferred.
    async fn finished(&mut self, done: Done) {
        self.in_flight -= 1;
        let agent = &mut self.agents[done.index as usize];
        agent.busy = false;
        if let Some(auth) = done.auth {
            agent.auth = Some(auth);
        }
        let mut outcomes: Vec<(Kind, Exchange, Option<String>)> = Vec::with_capacity(2);
        if let Some(exchange) = done.enroll {
            let error = exchange.error.clone();
            outcomes.push((Kind::Enroll, exchange, error));
        }
        if let Some(exchange) = done.report {
            let mut error = exchange.error.clone();
            if let Some(ack) = &done.ack {
                if !ack.acked.contains(&done.seq) {
                    error = Some("ack_without_seq".to_owned());
                }
                if ack.last_seq.is_some_and(|last| last > agent.seq) {
                    agent.seq = ack.last_seq.unwrap_or(agent.seq);
                }
                agent.wants_inventory = ack.send_inventory;
                if let (None, Job::Inventory { version, .. }) = (&error, done.job) {
                    agent.inventory_known = true;
                    agent.inventory_version = version;
                }
            }
            if error
                .as_deref()
                .is_some_and(|e| e.starts_with("401 agent_token_invalid"))
            {
                agent.auth = None;
            }
            outcomes.push((done.job.kind(), exchange, error));
        }
        for (kind, exchange, error) in &outcomes {
            let finished = exchange.started + exchange.latency;
            self.total.record(*kind, exchange, error.as_deref());
            self.tick.record(*kind, exchange, error.as_deref());
            if finished >= self.window.0 && finished <= self.window.1 {
                self.measured.record(*kind, exchange, error.as_deref());
            }
        }
        let agent = &mut self.agents[done.index as usize];
        if !agent.deferred.is_empty() {
            let (due, event) = agent.deferred.remove(0);
            if Instant::now() < self.end {
                self.send(due, done.index, event).await;
            } else {
                self.unsent += 1;
            }
        }
    }

    /// One line to stderr about the last 10 seconds.
    fn progress(&mut self) {
        let mut tick = std::mem::take(&mut self.tick);
        let ok: usize = tick.kinds[1..].iter().map(Tally::succeeded).sum();
        let failed: u64 = tick.kinds.iter().map(Tally::failed).sum();
        let p99 = |t: &mut Tally| t.percentiles().map_or(0.0, |p| p.p99 as f64 / 1000.0);
        eprintln!(
            "{:>6.0}s  {:>8.1} reports/s  health p99 {:.1} ms  enroll {}  failed {}  in flight {}  lag p99 {:.1} ms",
            self.start.elapsed().as_secs_f64(),
            ok as f64 / 10.0,
            p99(&mut tick.kinds[Kind::Health as usize]),
            tick.kinds[Kind::Enroll as usize].succeeded(),
            failed,
            self.in_flight,
            p99(&mut tick.lag),
        );
    }

    fn state(&self) -> StateFile {
        StateFile {
            seed: self.options.seed,
            url: self.options.url.clone(),
            agents: self
                .agents
                .iter()
                .enumerate()
                .filter(|(_, a)| a.auth.is_some() || a.seq > 0)
                .map(|(index, a)| SavedAgent {
                    index: index as u32,
                    agent_id: identity::agent_id(self.options.seed, index as u32),
                    token: a
                        .auth
                        .as_ref()
                        .and_then(|v| Some(v.to_str().ok()?.strip_prefix("Bearer ")?.to_owned())),
                    seq: a.seq,
                    inventory_version: a.inventory_version,
                    inventory_known: a.inventory_known,
                })
                .collect(),
        }
    }

    fn report(mut self, window_end: Instant) -> RunReport {
        self.unsent += self
            .agents
            .iter()
            .map(|a| a.deferred.len() as u64)
            .sum::<u64>();
        let (from, to) = self.window;
        let window_s = window_end
            .min(to)
            .saturating_duration_since(from)
            .as_secs_f64()
            .max(1e-3);
        let o = &self.options;
        let mut kinds = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for kind in KINDS {
            let tally = &mut self.measured.kinds[kind as usize];
            if tally.succeeded() > 0 || tally.failed() > 0 {
                kinds.insert(kind.as_str(), KindReport::new(tally, window_s));
            }
            let whole = &self.total.kinds[kind as usize];
            if whole.failed() > 0 {
                errors.insert(kind.as_str(), whole.errors().clone());
            }
        }
        let reports_ok: usize = self.measured.kinds[1..].iter().map(Tally::succeeded).sum();
        let body_bytes: u64 = self.measured.kinds.iter().map(Tally::bytes_sent).sum();
        let per_agent_hour = 3600.0 / window_s / f64::from(o.agents);
        let total = |kind: Kind| self.total.kinds[kind as usize].succeeded();
        RunReport {
            mode: o.mode.as_str().to_owned(),
            url: o.url.clone(),
            agents: o.agents,
            seed: o.seed,
            interval_s: o.interval.as_secs_f64(),
            duration_s: o.duration.as_secs_f64(),
            ramp_s: o.ramp.as_secs_f64(),
            concurrency: o.concurrency as usize,
            threads: o.threads as usize,
            window_s,
            reports_per_s: reports_ok as f64 / window_s,
            batches_per_s: reports_ok as f64 / window_s,
            kinds,
            errors,
            bytes_per_agent_hour: Bytes {
                bodies: body_bytes as f64 * per_agent_hour,
                with_headers: (body_bytes + self.measured.head_bytes) as f64 * per_agent_hour,
            },
            lag_ms: self.measured.lag.percentiles().map(Latency::from),
            unsent: self.unsent,
            totals: Totals {
                enrolled: total(Kind::Enroll),
                health_acked: total(Kind::Health),
                inventories_acked: total(Kind::InventoryNew) + total(Kind::InventoryChanged),
                reports_acked: total(Kind::Health)
                    + total(Kind::InventoryNew)
                    + total(Kind::InventoryChanged),
                failed: self.total.kinds.iter().map(Tally::failed).sum(),
            },
        }
    }
}

/// One request of agent `index`: enroll first when it has no token, then the report.
async fn request(ctx: &Shared, index: u32, seq: u64, job: Job, auth: Option<HeaderValue>) -> Done {
    let mut done = Done {
        index,
        seq,
        job,
        enroll: None,
        report: None,
        auth: None,
        ack: None,
    };
    let agent_id = identity::agent_id(ctx.seed, index);
    let auth = match auth {
        Some(auth) => auth,
        None => {
            let Some(secret) = &ctx.secret else {
                done.report = Some(Exchange {
                    started: Instant::now(),
                    latency: Duration::ZERO,
                    body_bytes: 0,
                    head_bytes: 0,
                    error: Some("no_token (give --enroll-secret)".to_owned()),
                });
                return done;
            };
            let request = EnrollRequest {
                secret: secret.clone(),
                agent_id: agent_id.clone(),
                hostname: identity::hostname(index),
            };
            let (exchange, auth) = ctx.wire.enroll(&request).await;
            done.enroll = Some(exchange);
            match auth {
                Some(auth) => {
                    done.auth = Some(auth.clone());
                    auth
                }
                None => return done,
            }
        }
    };
    let now = OffsetDateTime::now_utc();
    let body = match job {
        Job::Health => {
            let profile = Profile::new(ctx.seed, index, ctx.breaching);
            let sample = health::sample(
                agent_id.clone(),
                ctx.seed,
                index,
                &profile,
                seq,
                ctx.interval_secs,
                now,
            );
            encode_batch(&batch(agent_id, seq, ReportBody::Health(sample)))
        }
        Job::Inventory { version, .. } => {
            // Building and compressing 800 packages takes milliseconds: off the async
            // workers, as the collector does with its decoding.
            let fixture = Arc::clone(&ctx.fixture);
            let (seed, churn, breaching) = (ctx.seed, ctx.churn, ctx.breaching);
            tokio::task::spawn_blocking(move || {
                let inv = inventory::build(&fixture, seed, index, version, churn, breaching, now);
                encode_batch(&batch(agent_id, seq, ReportBody::Inventory(inv)))
            })
            .await
            .expect("building an inventory does not panic")
        }
    };
    let (exchange, ack) = ctx.wire.send(&auth, body).await;
    done.report = Some(exchange);
    done.ack = ack;
    done
}

fn batch(agent_id: String, seq: u64, body: ReportBody) -> Batch {
    Batch {
        protocol: PROTOCOL_VERSION,
        agent_id,
        reports: vec![Report { seq, body }],
    }
}
