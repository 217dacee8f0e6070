//! A seeded, single-threaded, deterministic simulation of Surge's durable path, in the manner of
//! TigerBeetle's VOPR: one `u64` seed decides every client command, every batch boundary, every
//! clock reading and every fault, so a failing seed replays exactly.
//!
//! The simulator drives the same stages the threaded [`surge_engine::Pipeline`] wires together —
//! [`Sequencer`] (stamp, append, group commit), [`Engine::apply`], and at every start
//! [`surge_journal::recover`] and [`restore`] — over two [`MemStorage`]s (journal and snapshots)
//! that it crashes, fails and corrupts on purpose. Alongside runs the reference [`Model`]; the
//! simulator checks:
//!
//! - after every applied command, that the engine's outcome is the model's;
//! - every `check_every` steps, the whole state against the model, the engine's invariants, and that
//!   units sold per stock cell equal the confirmed-and-not-cancelled order lines (no oversell);
//! - after every restart, that every acknowledged command is in the journal unchanged, that the
//!   model rebuilt from exactly the journal gives every acknowledged outcome again and equals the
//!   restored engine, and that a replay from scratch has the restored engine's digest;
//! - after a flipped bit, that recovery refuses with the damaged segment and offset, or cuts the
//!   record when it is the journal's last (the torn-tail rule). The run then ends as "detected
//!   corruption", which is not a failure.
//!
//! Most client reservations are checkouts: they carry a [`CheckoutRecord`] as their journal
//! attachment, a few carry none (tools reserve so), and now and then one carries bytes that are
//! not a record. Beside the engine runs the order projection as the gateway runs it (the
//! [`projector`] module): a follower engine of its own reads the durable journal into outputs,
//! which are projected into a memory store in transactions that commit or crash at random; the
//! process's kills and power losses crash it too. The simulator checks, at every start and at the
//! end of a run, with the projector caught up with the journal:
//!
//! - that the projection is never ahead of the journal, and that the follower restarts exactly
//!   at the projection's watermark;
//! - that the committed store and the caught-up store equal a projection rebuilt from exactly the
//!   journal, in one pass, by a fresh engine; that the follower's engine has the engine's digest;
//! - that every acknowledged checkout has the answer and the order the client was told, and
//!   nothing else has either; that every unreadable record was skipped and reported, and only
//!   those; and that every order's status is its engine state while it is live, final after.
//!
//! Every `check_every` steps the projector's store is checked against its own follower engine.
//!
//! Journal retention runs at random steps as the gateway runs it: the projection's commits are
//! synced (the gateway's synced write), then the pipeline's `archive_covered` moves the segments
//! no reader needs into a third [`MemStorage`], which power losses crash too. Every start still
//! recovers, restores the engine and the follower from the journal alone, so the checks above
//! also show that retention kept enough; the checks that read the journal back read the archive
//! with it ([`surge_journal::WithArchive`]). One damage retention does not survive is left out:
//! the snapshot it counted on is never flipped (see `Sim::archived_through`).
//!
//! There is no wall clock, no thread and no hash-map iteration here: time is a counter the seed
//! advances, and every map is ordered.

mod projector;

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::ControlFlow;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use surge_engine::{
    BuyerId, CartVersion, Command, DiscardEvents, Engine, Expiry, Limits, LineRequest,
    LineRequests, Lines, OrderId, OrderState, Outcome, ReleaseReason, Sequence, SkuId, Timestamp,
    WarehouseChoices, WarehouseId,
};
use surge_journal::record::{parse_segment_name, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use surge_journal::{
    read_from, recover, write_snapshot, JournalConfig, JournalError, MemStorage, Recovery, Storage,
    TornTail, WithArchive,
};
use surge_orders_svc::{CheckoutRecord, RecordLine, Shipping};
use surge_pipeline::{archive_covered, decode_payload, restore, Sequencer};

use crate::model::Model;
use projector::{Projector, Stop};

/// Small enough that clients contend for the same few stock cells and every capacity is reached.
pub const SIM_LIMITS: Limits = Limits {
    skus_max: 8,
    warehouses_max: 4,
    stock_cells_max: 16,
    orders_max: 40,
    buyer_counters_max: 12,
};

/// SKUs and warehouses clients mostly ask for. The ids above, up to and one past the limit, are
/// asked for rarely, to reach `CapacityReached` and `Invalid`.
const SKUS_HOT: u32 = 5;
const WAREHOUSES_HOT: u16 = 3;
const BUYERS: u64 = 6;
/// One millisecond of simulated time, in nanoseconds.
const MS: u64 = 1_000_000;
/// Commands the sequencer's queue holds before clients are told the engine is overloaded.
const SUBMITTED_MAX: usize = 64;
/// Order ids clients remember after their reservation, to ask about orders that already resolved.
const RECENT_ORDERS_MAX: usize = 32;

/// What one run simulates: its seed, its length, and how often each fault happens.
///
/// Probabilities named "per step" are drawn once per simulated step; the others once per event
/// named (commit, snapshot).
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub steps: u64,
    /// Per step: power loss of the whole machine; unsynced bytes and directory changes may be lost
    /// or torn.
    pub crash_probability: f64,
    /// Per step: the process is killed; storage keeps everything written so far.
    pub kill_probability: f64,
    /// Per commit: the journal's next fsync fails.
    pub sync_failure_probability: f64,
    /// Per commit: the journal's next write fails.
    pub write_failure_probability: f64,
    /// Per step: the engine's state is written as a snapshot.
    pub snapshot_probability: f64,
    /// Per snapshot: its write or sync fails.
    pub snapshot_failure_probability: f64,
    /// Per step: one bit of the journal flips. Ends the run as detected corruption.
    pub journal_bit_flip_probability: f64,
    /// Per step: one bit of a snapshot flips; loading must skip that snapshot.
    pub snapshot_bit_flip_probability: f64,
    /// Per step: the projector commits its open transaction.
    pub projector_commit_probability: f64,
    /// Per step: the projector crashes on its own: its open transaction and the outputs in flight
    /// are lost, and its follower is restored to the committed watermark.
    pub projector_crash_probability: f64,
    /// Per step: the database syncs the projection's commits (another service's synced write, or
    /// a checkpoint). Until then a power loss may take them back.
    pub projection_sync_probability: f64,
    /// Per step: a pass of journal retention, as the gateway runs it: a synced write makes the
    /// projection's watermark durable, then the segments no reader needs move to the archive.
    pub archive_probability: f64,
    /// Steps between full comparisons of engine and model.
    pub check_every: u64,
    /// Small, so that segments roll over often.
    pub segment_bytes_max: u64,
    /// Deliberately breaks the durability rule: outcomes are acknowledged before their batch is
    /// committed. Only for the test that proves the simulator can fail; never set it otherwise.
    pub bug_acknowledge_before_commit: bool,
    /// Deliberately breaks the projector's restart: after its own crash the follower is restored
    /// to the journal's end instead of the committed watermark, so what the lost transaction held
    /// is never projected again. Only for the test that proves the projection checks can fail.
    pub bug_projector_follows_from_journal_end: bool,
    /// Deliberately lets the projector read records that were written but not synced, while the
    /// process stops after a failed commit. A power loss can then take away records the projection
    /// holds. Only for the test that proves the "never ahead of the journal" check can fail.
    pub bug_projector_reads_unsynced: bool,
    /// Deliberately gives journal retention the projection's committed watermark without syncing
    /// it first, so a power loss can take the watermark back behind what was archived. Only for
    /// the test that proves the simulator catches a retention that keeps too little.
    pub bug_archives_by_unsynced_watermark: bool,
}

impl SimConfig {
    /// Fixed fault rates that hit every fault path a few times in a couple of thousand steps.
    pub fn new(seed: u64, steps: u64) -> SimConfig {
        SimConfig {
            seed,
            steps,
            crash_probability: 0.003,
            kill_probability: 0.002,
            sync_failure_probability: 0.01,
            write_failure_probability: 0.005,
            snapshot_probability: 0.01,
            snapshot_failure_probability: 0.2,
            journal_bit_flip_probability: 0.00003,
            snapshot_bit_flip_probability: 0.001,
            projector_commit_probability: 0.05,
            projector_crash_probability: 0.004,
            projection_sync_probability: 0.02,
            archive_probability: 0.01,
            check_every: 25,
            segment_bytes_max: 4096,
            bug_acknowledge_before_commit: false,
            bug_projector_follows_from_journal_end: false,
            bug_projector_reads_unsynced: false,
            bug_archives_by_unsynced_watermark: false,
        }
    }

    /// Fault rates drawn from the seed ("swarm testing"): some seeds run long without a fault and
    /// build deep state, others crash constantly, and rare interleavings get seeds that favour them.
    pub fn swarm(seed: u64, steps: u64) -> SimConfig {
        let mut rng = Rng::new(seed ^ 0x5741_524D_5741_524D);
        let mut scale = |probability: f64| -> f64 {
            const FACTORS: [f64; 6] = [0.0, 0.25, 1.0, 1.0, 3.0, 10.0];
            probability * FACTORS[rng.below_usize(FACTORS.len())]
        };
        let base = SimConfig::new(seed, steps);
        SimConfig {
            crash_probability: scale(base.crash_probability),
            kill_probability: scale(base.kill_probability),
            sync_failure_probability: scale(base.sync_failure_probability),
            write_failure_probability: scale(base.write_failure_probability),
            snapshot_probability: scale(base.snapshot_probability),
            snapshot_failure_probability: scale(base.snapshot_failure_probability).min(1.0),
            journal_bit_flip_probability: scale(base.journal_bit_flip_probability),
            snapshot_bit_flip_probability: scale(base.snapshot_bit_flip_probability),
            // Never zero: a projector that never commits would replay the whole journal at every
            // restart and test little beyond the first transaction.
            projector_commit_probability: scale(base.projector_commit_probability)
                .max(base.projector_commit_probability / 4.0),
            projector_crash_probability: scale(base.projector_crash_probability),
            projection_sync_probability: scale(base.projection_sync_probability),
            archive_probability: scale(base.archive_probability),
            ..base
        }
    }
}

/// What a run did; equal reports for equal configs show the simulation is deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    pub seed: u64,
    pub steps: u64,
    pub commands_submitted: u64,
    pub commands_applied: u64,
    pub acknowledged: u64,
    pub commits: u64,
    /// Power losses.
    pub crashes: u64,
    /// Process kills that kept storage as it was.
    pub kills: u64,
    pub restarts: u64,
    /// Restarts whose engine came from a snapshot plus the journal after it.
    pub restores_from_snapshot: u64,
    pub fsync_failures: u64,
    pub write_failures: u64,
    pub snapshots: u64,
    pub snapshot_failures: u64,
    pub snapshot_bit_flips: u64,
    /// Journal bit flips that recovery detected; each ends its run.
    pub corruptions_detected: u64,
    /// Acknowledged records lost because a flipped bit hit the journal's last record, which the
    /// torn-tail rule cannot tell from a torn write (see [`run`]).
    pub acknowledged_cut_by_bit_flip: u64,
    /// The last sequence applied when the run ended.
    pub final_sequence: u64,
    pub final_digest: u64,
    /// Transactions of the projector committed.
    pub projector_commits: u64,
    /// Commits of the projector that a power loss took back before they were synced.
    pub projector_commits_lost: u64,
    /// Crashes of the projector on its own (its open transaction lost, the process still up).
    pub projector_crashes: u64,
    /// Crashes of any kind (the projector's own, a kill, a power loss) that found the committed
    /// projection behind the durable journal: crashes between the journal and the projection,
    /// repaired by reading the journal forward from the watermark.
    pub crashes_behind_projection: u64,
    /// Follower restarts that began before the watermark on purpose, so that the projection was
    /// handed commands it already holds and had to skip them.
    pub projector_restarts_before_watermark: u64,
    /// Follower restores that started from a snapshot.
    pub projector_restores_from_snapshot: u64,
    /// Outputs the projector projected (the rebuilds of the checks not counted).
    pub outputs_projected: u64,
    /// Comparisons of the projection with one rebuilt from the journal.
    pub projection_checks: u64,
    /// Records the last rebuild skipped as unreadable (each reported, none failing the projection).
    pub records_skipped: u64,
    /// Passes of journal retention, and the segments they moved to the archive.
    pub archive_passes: u64,
    pub segments_archived: u64,
    /// Orders and answers of the last rebuilt projection.
    pub orders: u64,
    pub answers: u64,
}

/// A broken check: the seed that reproduces it, the step it broke at, and what broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFailure {
    pub seed: u64,
    pub step: u64,
    pub message: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {} failed at step {}: {}", self.seed, self.step, self.message)
    }
}

impl std::error::Error for SimFailure {}

/// Runs one seed. A broken check — including a panic in the engine, the journal or the model,
/// whose assertions are panics — is returned as a [`SimFailure`] naming the seed.
///
/// A flipped bit in the journal's very last record is cut as a torn tail even when that record was
/// acknowledged: with a single copy of the journal, damage at the end is indistinguishable from a
/// torn write. The run counts it in [`SimReport::acknowledged_cut_by_bit_flip`] and ends as
/// detected corruption rather than failing; any other damage that recovery accepts is a failure.
///
/// # Errors
/// The first check that failed.
pub fn run(config: &SimConfig) -> Result<SimReport, SimFailure> {
    let mut sim = Sim::new(config);
    let result = panic::catch_unwind(AssertUnwindSafe(|| sim.run()));
    match result {
        Ok(result) => result,
        Err(payload) => {
            let location = PANIC_LOCATION.with(|location| location.borrow_mut().take());
            let mut message = format!("panic: {}", panic_message(payload.as_ref()));
            if let Some(location) = location {
                message.push_str(&format!(" (at {location})"));
            }
            Err(sim.fail(message))
        }
    }
}

thread_local! {
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the process's panic hook with one that prints nothing and lets [`run`] name where the
/// panic happened. For binaries that run many seeds and print one line per failure; tests keep the
/// default hook.
pub fn quiet_panics() {
    panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string);
        PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
    }));
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Seeded choices for the simulator: the journal's SplitMix64 and a few conveniences.
#[derive(Clone, Debug)]
struct Rng(surge_journal::SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(surge_journal::SplitMix64::new(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n`; the modulo bias does not matter for choosing actions.
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    fn below_u32(&mut self, n: u32) -> u32 {
        u32::try_from(self.below(u64::from(n))).expect("below n fits n's type")
    }

    fn below_usize(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).expect("below n fits n's type")
    }

    /// True with `probability`: the top 53 bits as a fraction, which is exact in an f64.
    fn chance(&mut self, probability: f64) -> bool {
        const SCALE: f64 = (1u64 << 53) as f64;
        ((self.next() >> 11) as f64 / SCALE) < probability
    }
}

/// A command as the sequencer stamped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamped {
    sequence: Sequence,
    at: Timestamp,
    command: Command,
}

/// What a client was told.
#[derive(Clone, Copy, Debug)]
struct Acknowledged {
    at: Timestamp,
    command: Command,
    outcome: Outcome,
}

/// What a client's command carries into the journal beside it.
#[derive(Clone, Debug)]
enum Attachment {
    /// Nothing: every command but a checkout's `Reserve`, and the reservations of tools.
    None,
    /// A checkout's record, and its encoding.
    Record(Rc<Checkout>),
    /// Bytes that are not a checkout record: the projection must skip and report them.
    Unreadable(Rc<[u8]>),
}

impl Attachment {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Attachment::None => None,
            Attachment::Record(checkout) => Some(&checkout.bytes),
            Attachment::Unreadable(bytes) => Some(bytes),
        }
    }
}

/// A checkout record as a client sent it.
#[derive(Debug)]
struct Checkout {
    record: CheckoutRecord,
    bytes: Vec<u8>,
}

/// A command a client submitted, waiting for the sequencer.
#[derive(Clone, Debug)]
struct Submission {
    command: Command,
    attachment: Attachment,
}

/// A command read back from the journal, with where it lies.
#[derive(Clone, Debug)]
struct JournalRecord {
    stamped: Stamped,
    attachment: Option<Vec<u8>>,
    segment: String,
    offset: u64,
    len: u64,
}

/// A bit flipped in the journal, and what recovery must make of it.
#[derive(Clone, Debug)]
struct Flip {
    segment: String,
    /// The record hit, or `None` for the segment's header.
    record: Option<JournalRecord>,
    /// Whether the record is the journal's last, which recovery cuts as a torn tail.
    last_record: bool,
    acknowledged: bool,
}

enum Flow {
    Continue,
    Stop,
}

/// The model, and what the simulator derives from outcomes to check the engine without it.
#[derive(Debug)]
struct Shadow {
    model: Model,
    /// Units sold per cell, summed from `Commit` outcomes minus `Cancel` outcomes: the oversell
    /// ledger, kept from outcomes alone.
    sold: BTreeMap<(SkuId, WarehouseId), u64>,
    order_lines: BTreeMap<OrderId, Lines>,
    recent_orders: VecDeque<OrderId>,
}

impl Shadow {
    fn new() -> Shadow {
        Shadow {
            model: Model::new(SIM_LIMITS),
            sold: BTreeMap::new(),
            order_lines: BTreeMap::new(),
            recent_orders: VecDeque::with_capacity(RECENT_ORDERS_MAX),
        }
    }

    fn apply(&mut self, stamped: &Stamped) -> Outcome {
        let outcome = self.model.apply(stamped.sequence, stamped.at, &stamped.command);
        match (stamped.command, outcome) {
            (_, Outcome::Reserved { order, lines, .. }) => {
                self.order_lines.insert(order, lines);
                if self.recent_orders.len() == RECENT_ORDERS_MAX {
                    self.recent_orders.pop_front();
                }
                self.recent_orders.push_back(order);
            }
            (
                Command::Commit { order },
                Outcome::Transitioned { state: OrderState::Confirmed, .. },
            ) => {
                for line in self.order_lines[&order].as_slice() {
                    *self.sold.entry((line.sku, line.warehouse)).or_insert(0) +=
                        u64::from(line.quantity);
                }
            }
            (
                Command::Cancel { order },
                Outcome::Transitioned { state: OrderState::Cancelled, .. },
            ) => {
                for line in self.order_lines[&order].as_slice() {
                    let sold = self.sold.get_mut(&(line.sku, line.warehouse)).expect("sold before");
                    *sold -= u64::from(line.quantity);
                }
            }
            _ => {}
        }
        outcome
    }

    /// Compares the whole engine with the model. The model's comparison panics on a difference.
    fn check(&self, engine: &Engine) -> Result<(), String> {
        self.model.check_against(engine);
        engine.check_invariants();
        for ((sku, warehouse), level) in self.model.cells() {
            let sold = self.sold.get(&(sku, warehouse)).copied().unwrap_or(0);
            if level.sold != sold {
                return Err(format!(
                    "{sku:?} in {warehouse:?}: {} units sold, but confirmed orders not cancelled hold {sold}",
                    level.sold
                ));
            }
            if level.reserved > level.on_hand {
                return Err(format!("{sku:?} in {warehouse:?} is oversold: {level:?}"));
            }
        }
        Ok(())
    }
}

struct Sim<'a> {
    config: &'a SimConfig,
    rng: Rng,
    step: u64,
    /// Simulated time in nanoseconds since the epoch.
    now: u64,
    journal: MemStorage,
    snapshots: MemStorage,
    /// Where journal retention moves segments; read back with the journal by every check.
    archive: MemStorage,
    /// The highest `through` of a retention pass that moved a segment. The snapshot at it is
    /// never damaged on purpose: retention keeps what a start needs if one of the two snapshots
    /// it counted on is damaged, not both (README, "Journal retention").
    archived_through: u64,
    /// Retention's own choices, so that it never changes the clients and faults of a seed.
    archive_rng: Rng,
    /// `None` only while the simulated process is down.
    sequencer: Option<Sequencer<MemStorage>>,
    engine: Engine,
    shadow: Shadow,
    /// Commands clients submitted that the sequencer has not taken yet.
    submitted: VecDeque<Submission>,
    /// Batches committed to the journal that the engine has not applied yet.
    committed: VecDeque<Vec<Stamped>>,
    /// The last sequence the journal made durable: what the sequencer committed, or what
    /// recovery found (and synced) at start. The projector never reads past it.
    durable: Sequence,
    /// Every outcome a client saw, by sequence, across all restarts.
    acknowledged: BTreeMap<u64, Acknowledged>,
    /// The attachment of every record appended that the journal may still hold, by sequence
    /// (records without one are absent). Cut back to the journal's end at every start.
    journaled: BTreeMap<u64, Attachment>,
    /// Checkout records made so far; numbers their idempotency keys.
    checkouts: u64,
    /// Acknowledgements through this sequence were checked against the projection once; each
    /// check of a start looks at the newer ones, the end of a run at all of them again.
    told_checked_through: u64,
    projector: Projector,
    flip: Option<Flip>,
    report: SimReport,
}

impl<'a> Sim<'a> {
    fn new(config: &'a SimConfig) -> Sim<'a> {
        Sim {
            config,
            rng: Rng::new(config.seed),
            step: 0,
            // A plausible epoch, so that the clock never underflows when it jumps back.
            now: 1_700_000_000_000 * MS,
            journal: MemStorage::new(),
            snapshots: MemStorage::new(),
            archive: MemStorage::new(),
            archived_through: 0,
            archive_rng: Rng::new(config.seed ^ 0x4152_4348_4956_4521),
            sequencer: None,
            engine: Engine::new(SIM_LIMITS),
            shadow: Shadow::new(),
            submitted: VecDeque::with_capacity(SUBMITTED_MAX),
            committed: VecDeque::new(),
            durable: Sequence(0),
            acknowledged: BTreeMap::new(),
            journaled: BTreeMap::new(),
            checkouts: 0,
            told_checked_through: 0,
            projector: Projector::new(config),
            flip: None,
            report: SimReport { seed: config.seed, ..SimReport::default() },
        }
    }

    fn fail(&self, message: impl Into<String>) -> SimFailure {
        SimFailure { seed: self.config.seed, step: self.step, message: message.into() }
    }

    fn run(&mut self) -> Result<SimReport, SimFailure> {
        if let Flow::Stop = self.start()? {
            return Err(self.fail("the first start stopped"));
        }
        while self.step < self.config.steps {
            self.step += 1;
            if let Flow::Stop = self.step_once()? {
                return Ok(self.finish());
            }
        }
        // Drain, compare, and finally lose power once more: everything acknowledged must survive.
        while let Some(batch) = self.committed.pop_front() {
            self.apply_and_acknowledge(&batch)?;
        }
        self.shadow.check(&self.engine).map_err(|message| self.fail(message))?;
        // The projection of a process that ran on, before the power loss takes its working store.
        self.catch_up_projector()?;
        let records = self.read_journal()?;
        let engine = self.engine.clone();
        self.check_projection(&records, &engine)?;
        if let Flow::Stop = self.restart(true)? {
            return Err(self.fail("the final restart stopped"));
        }
        Ok(self.finish())
    }

    fn finish(&mut self) -> SimReport {
        self.report.steps = self.step;
        self.report.final_sequence = self.engine.last_sequence().0;
        self.report.final_digest = self.engine.digest();
        self.report.clone()
    }

    #[expect(
        clippy::manual_is_multiple_of,
        reason = "the workspace's rust-version is 1.85, and is_multiple_of is from 1.87"
    )]
    fn step_once(&mut self) -> Result<Flow, SimFailure> {
        self.now += self.rng.below(4 * MS);
        let config = self.config;
        if self.rng.chance(config.crash_probability) {
            return self.restart(true);
        }
        if self.rng.chance(config.kill_probability) {
            return self.restart(false);
        }
        if self.rng.chance(config.journal_bit_flip_probability) && self.flip_journal_bit()? {
            return self.restart(false);
        }
        if self.rng.chance(config.snapshot_bit_flip_probability) {
            self.flip_snapshot_bit();
        }
        if self.rng.chance(config.snapshot_probability) {
            self.write_snapshot()?;
        }
        if self.archive_rng.chance(config.archive_probability) {
            self.archive_pass()?;
        }
        let flow = match self.rng.below(8) {
            0..=3 => {
                self.submit();
                Flow::Continue
            }
            4 | 5 => self.journal_batch()?,
            _ => {
                if let Some(batch) = self.committed.pop_front() {
                    self.apply_and_acknowledge(&batch)?;
                }
                Flow::Continue
            }
        };
        if matches!(flow, Flow::Continue) {
            self.step_projector()?;
            if self.step % config.check_every == 0 {
                self.shadow.check(&self.engine).map_err(|message| self.fail(message))?;
                self.check_projector_against_its_engine()?;
            }
        }
        Ok(flow)
    }

    // ----- Clients -----

    fn submit(&mut self) {
        for _ in 0..=self.rng.below(3) {
            let command = self.client_command();
            let attachment = self.attachment(&command);
            self.report.commands_submitted += 1;
            // A full queue answers "overloaded"; the client's command never entered the system.
            if self.submitted.len() < SUBMITTED_MAX {
                self.submitted.push_back(Submission { command, attachment });
            }
        }
    }

    /// Most reservations are checkouts and carry their record; some come from tools and carry
    /// none; one in two hundred carries bytes that are not a record, as a damaged or foreign
    /// attachment would.
    fn attachment(&mut self, command: &Command) -> Attachment {
        let Command::Reserve { buyer, lines, .. } = command else { return Attachment::None };
        match self.rng.below(200) {
            0 => {
                let mut bytes = self.checkout_record(*buyer, lines).to_bytes();
                match self.rng.below(3) {
                    0 => bytes.truncate(self.rng.below_usize(bytes.len())),
                    1 => bytes[0] = 2,
                    _ => bytes.push(0),
                }
                Attachment::Unreadable(bytes.into())
            }
            1..=39 => Attachment::None,
            _ => {
                let record = self.checkout_record(*buyer, lines);
                let bytes = record.to_bytes();
                Attachment::Record(Rc::new(Checkout { record, bytes }))
            }
        }
    }

    /// A checkout's record for the lines of a reservation: SKU names and sellers derived from
    /// the ids, a price that now and then differs between checkouts of the same SKU, a key
    /// unique to the checkout.
    fn checkout_record(&mut self, buyer: BuyerId, lines: &LineRequests) -> CheckoutRecord {
        const CITIES: [&str; 4] = ["Berlin", "Zürich", "Lyon", "Porto"];
        self.checkouts += 1;
        let lines: Vec<(RecordLine, u32)> = lines
            .as_slice()
            .iter()
            .map(|line| {
                let sku = i64::from(line.sku.0);
                let unit_price_cents = 199 + 250 * sku + 5 * i64::from(self.rng.below_u32(3));
                let record = RecordLine {
                    sku: format!("SKU-{:03}", line.sku.0),
                    unit_price_cents,
                    seller_id: 1 + sku % 3,
                };
                (record, line.quantity)
            })
            .collect();
        let shipping_cents = if self.rng.below(2) == 0 { 0 } else { 490 };
        let total_cents = lines
            .iter()
            .map(|(line, quantity)| line.unit_price_cents * i64::from(*quantity))
            .sum::<i64>()
            + shipping_cents;
        let mut request_hash = [0; 16];
        request_hash[..8].copy_from_slice(&self.rng.next().to_le_bytes());
        request_hash[8..].copy_from_slice(&self.checkouts.to_le_bytes());
        CheckoutRecord {
            idempotency_key: format!("checkout-{}", self.checkouts),
            request_hash,
            currency: "EUR".to_owned(),
            total_cents,
            lines: lines.into_iter().map(|(line, _)| line).collect(),
            shipping: Shipping {
                name: format!("Buyer {}", buyer.0),
                line1: format!("{} Main Street", 1 + self.rng.below(99)),
                city: CITIES[self.rng.below_usize(CITIES.len())].to_owned(),
                postal_code: format!("{:05}", 10_000 + self.rng.below(90_000)),
            },
            payment_token: if self.rng.below(8) == 0 { "tok_declined" } else { "tok_ok" }
                .to_owned(),
        }
    }

    fn client_command(&mut self) -> Command {
        match self.rng.below(100) {
            0..=14 => Command::SetStock {
                sku: self.sku(),
                warehouse: self.warehouse(),
                on_hand: self.on_hand(),
            },
            15..=18 => Command::SetBuyerLimit { sku: self.sku(), per_buyer: self.buyer_limit() },
            19..=54 => self.reserve(),
            55..=69 => Command::Commit { order: self.order() },
            70..=75 => Command::Release {
                order: self.order(),
                reason: if self.rng.below(2) == 0 {
                    ReleaseReason::PaymentFailed
                } else {
                    ReleaseReason::Cancelled
                },
            },
            76..=79 => Command::Cancel { order: self.order() },
            80..=88 => Command::Ship { order: self.order() },
            89..=96 => Command::Deliver { order: self.order() },
            _ => Command::Expire,
        }
    }

    fn sku(&mut self) -> SkuId {
        match self.rng.below(50) {
            0 => SkuId(SIM_LIMITS.skus_max),
            1..=3 => SkuId(SKUS_HOT + self.rng.below_u32(SIM_LIMITS.skus_max - SKUS_HOT)),
            _ => SkuId(self.rng.below_u32(SKUS_HOT)),
        }
    }

    fn warehouse(&mut self) -> WarehouseId {
        let warehouse = match self.rng.below(50) {
            0 => u32::from(SIM_LIMITS.warehouses_max),
            1..=3 => self.rng.below_u32(u32::from(SIM_LIMITS.warehouses_max)),
            _ => self.rng.below_u32(u32::from(WAREHOUSES_HOT)),
        };
        WarehouseId(u16::try_from(warehouse).expect("warehouse ids are small"))
    }

    fn on_hand(&mut self) -> u32 {
        match self.rng.below(100) {
            // Near the top of the range, where arithmetic overflows if it is unchecked.
            0 => u32::MAX - self.rng.below_u32(4),
            1..=5 => 0,
            _ => self.rng.below_u32(24),
        }
    }

    fn buyer_limit(&mut self) -> Option<u32> {
        match self.rng.below(60) {
            0..=19 => None,
            20 => Some(0),
            // The engine's own "no limit" marker, which must not pass for a limit.
            21 => Some(u32::MAX - self.rng.below_u32(2)),
            _ => Some(1 + self.rng.below_u32(8)),
        }
    }

    fn reserve(&mut self) -> Command {
        let mut lines = LineRequests::default();
        let line_count = if self.rng.below(100) == 0 { 0 } else { 1 + self.rng.below(3) };
        for _ in 0..line_count {
            let sku = self.sku();
            let repeated = lines.as_slice().iter().any(|line| line.sku == sku);
            if repeated && self.rng.below(10) != 0 {
                continue;
            }
            let quantity = if self.rng.below(100) == 0 { 0 } else { 1 + self.rng.below_u32(4) };
            lines.push(LineRequest { sku, quantity });
        }
        let mut warehouses = WarehouseChoices::default();
        let warehouse_count = if self.rng.below(100) == 0 { 0 } else { 1 + self.rng.below(3) };
        for _ in 0..warehouse_count {
            let warehouse = self.warehouse();
            if !warehouses.as_slice().contains(&warehouse) {
                warehouses.push(warehouse);
            }
        }
        Command::Reserve {
            buyer: BuyerId(1 + self.rng.below(BUYERS)),
            expiry: self.expiry(),
            cart: self.cart(),
            lines,
            warehouses,
        }
    }

    /// Half the reservations carry a deadline computed from the client's own view of time; the
    /// batch's stamp comes later, so short deadlines sometimes pass before the command is
    /// sequenced. The others carry a time to live, which the engine adds to the stamp, now and then
    /// zero or so long that the sum overflows.
    fn expiry(&mut self) -> Expiry {
        if self.rng.below(2) == 0 {
            let expires_at = if self.rng.below(100) == 0 {
                self.now
            } else {
                self.now + (1 + self.rng.below(200)) * MS
            };
            return Expiry::At(Timestamp(expires_at));
        }
        let ttl_ns = match self.rng.below(100) {
            0 => 0,
            1 => u64::MAX - self.rng.below(MS),
            _ => (1 + self.rng.below(200)) * MS,
        };
        Expiry::After { ttl_ns }
    }

    /// Half the reservations are checkouts of a cart. Versions are few and buyers are few, so the
    /// same version comes twice (a duplicated checkout), an older one after a newer, and a newer
    /// one while an older order is still live.
    fn cart(&mut self) -> Option<CartVersion> {
        (self.rng.below(2) == 0).then(|| CartVersion(self.rng.below(4)))
    }

    /// Mostly a live order, sometimes one that resolved, sometimes an id that may never have been one.
    fn order(&mut self) -> OrderId {
        let roll = self.rng.below(10);
        if roll < 7 {
            let live = self.shadow.model.live_order_ids();
            if !live.is_empty() {
                return live[self.rng.below_usize(live.len())];
            }
        }
        if roll < 9 && !self.shadow.recent_orders.is_empty() {
            let index = self.rng.below_usize(self.shadow.recent_orders.len());
            return self.shadow.recent_orders[index];
        }
        OrderId(self.rng.below(self.engine.last_sequence().0 + 4))
    }

    // ----- The durable path -----

    /// Takes a batch from the queue, stamps and journals it with one commit, possibly with a fault.
    fn journal_batch(&mut self) -> Result<Flow, SimFailure> {
        let mut commands = Vec::new();
        // As the pipeline's sequencer does: a passed deadline gets an `Expire` of its own.
        let deadline_due =
            self.engine.next_deadline().is_some_and(|deadline| deadline.0 <= self.now);
        if deadline_due && self.rng.below(2) == 0 {
            commands.push(Submission { command: Command::Expire, attachment: Attachment::None });
        }
        let take = (1 + self.rng.below_usize(12)).min(self.submitted.len());
        commands.extend(self.submitted.drain(..take));
        if commands.is_empty() {
            return Ok(Flow::Continue);
        }
        // Now and then the clock reads earlier than before; stamps must still never go back.
        let clock = if self.rng.below(16) == 0 {
            Timestamp(self.now - self.rng.below(3 * MS))
        } else {
            Timestamp(self.now)
        };
        let sequencer = self.sequencer.as_mut().expect("the process is up");
        let mut batch = Vec::with_capacity(commands.len());
        for Submission { command, attachment } in commands {
            let (sequence, at) = sequencer.append_with(clock, &command, attachment.bytes());
            batch.push(Stamped { sequence, at, command });
            if !matches!(attachment, Attachment::None) {
                self.journaled.insert(sequence.0, attachment);
            }
        }
        if self.config.bug_acknowledge_before_commit {
            self.apply_and_acknowledge(&batch)?;
        }

        // At most one fault per commit: a write fault leaves no sync to consume a second one.
        let fault = if self.rng.chance(self.config.sync_failure_probability) {
            self.journal.fail_next_sync();
            Some("sync")
        } else if self.rng.chance(self.config.write_failure_probability) {
            self.journal.fail_next_write();
            Some("write")
        } else {
            None
        };
        let result = self.sequencer.as_mut().expect("the process is up").commit();
        match (result, fault) {
            (Ok(_), None) => {
                self.report.commits += 1;
                self.durable = batch.last().map_or(self.durable, |stamped| stamped.sequence);
                if !self.config.bug_acknowledge_before_commit {
                    self.committed.push_back(batch);
                }
                Ok(Flow::Continue)
            }
            (Ok(_), Some(fault)) => {
                Err(self.fail(format!("commit succeeded although its {fault} was made to fail")))
            }
            (Err(error), None) => Err(self.fail(format!("commit failed without a fault: {error}"))),
            (Err(_), Some(fault)) => {
                if fault == "sync" {
                    self.report.fsync_failures += 1;
                } else {
                    self.report.write_failures += 1;
                }
                // The process stops without acknowledging anything of the batch; whether the
                // machine also loses power is the seed's choice.
                self.step_projector_while_stopping()?;
                let power_loss = self.rng.below(2) == 0;
                self.restart(power_loss)
            }
        }
    }

    /// Applies a committed batch and tells its clients the outcomes.
    fn apply_and_acknowledge(&mut self, batch: &[Stamped]) -> Result<(), SimFailure> {
        for stamped in batch {
            let outcome = self.engine.apply(
                stamped.sequence,
                stamped.at,
                &stamped.command,
                &mut DiscardEvents,
            );
            let expected = self.shadow.apply(stamped);
            self.report.commands_applied += 1;
            if outcome != expected {
                return Err(self.fail(format!(
                    "seq {} {:?}: the engine answered {outcome:?}, the model {expected:?}",
                    stamped.sequence.0, stamped.command
                )));
            }
            let acknowledged = Acknowledged { at: stamped.at, command: stamped.command, outcome };
            if self.acknowledged.insert(stamped.sequence.0, acknowledged).is_some() {
                return Err(self.fail(format!(
                    "seq {} was acknowledged twice: an acknowledged sequence was reused",
                    stamped.sequence.0
                )));
            }
            self.report.acknowledged += 1;
        }
        Ok(())
    }

    fn write_snapshot(&mut self) -> Result<(), SimFailure> {
        let sequence = self.engine.last_sequence().0;
        if sequence == 0 {
            return Ok(());
        }
        let mut bytes = Vec::new();
        self.engine.encode_snapshot(&mut bytes);
        let fault = self.rng.chance(self.config.snapshot_failure_probability);
        if fault {
            if self.rng.below(2) == 0 {
                self.snapshots.fail_next_write();
            } else {
                self.snapshots.fail_next_sync();
            }
        }
        match (write_snapshot(&self.snapshots, sequence, self.engine.last_at().0, &bytes), fault) {
            (Ok(_), false) => self.report.snapshots += 1,
            (Err(_), true) => self.report.snapshot_failures += 1,
            (Ok(name), true) => {
                return Err(self
                    .fail(format!("snapshot {name} was written despite a failed write or sync")))
            }
            (Err(error), false) => {
                return Err(self.fail(format!("snapshot failed without a fault: {error}")))
            }
        }
        Ok(())
    }

    /// One pass of journal retention, as the gateway's: the projection's commits synced (its
    /// synced write), then the pipeline's `archive_covered` with the watermark and the follower's
    /// position.
    fn archive_pass(&mut self) -> Result<(), SimFailure> {
        let consumer =
            self.projector.retention_watermark(self.config.bug_archives_by_unsynced_watermark);
        let followed = self.projector.followed();
        let report = archive_covered(
            &self.journal,
            &self.archive,
            &self.snapshots,
            Some(consumer),
            followed,
        )
        .map_err(|error| self.fail(format!("journal retention failed: {error}")))?;
        self.report.archive_passes += 1;
        if let (Some(through), false) = (report.through, report.moved.is_empty()) {
            self.report.segments_archived += report.moved.len() as u64;
            self.archived_through = self.archived_through.max(through);
            self.projector.archived_through = Sequence(self.archived_through);
        }
        Ok(())
    }

    // ----- Restarts -----

    /// Stops the process, with or without a power loss, and starts it again.
    fn restart(&mut self, power_loss: bool) -> Result<Flow, SimFailure> {
        self.sequencer = None;
        self.committed.clear();
        self.submitted.clear();
        let stop = if power_loss { Stop::PowerLoss } else { Stop::Kill };
        self.projector.stop(self.durable, stop, &mut self.report);
        if power_loss {
            self.journal.crash(self.rng.next());
            self.snapshots.crash(self.rng.next());
            self.archive.crash(self.archive_rng.next());
            self.report.crashes += 1;
        } else {
            self.report.kills += 1;
        }
        self.report.restarts += 1;
        self.start()
    }

    /// What the process does at start: recover the journal, restore the engine, open the sequencer.
    /// Then the simulator checks what came back.
    fn start(&mut self) -> Result<Flow, SimFailure> {
        let recovery = recover(&self.journal);
        if let Some(flip) = self.flip.take() {
            return self.judge_flip(&flip, recovery);
        }
        let recovery = recovery.map_err(|error| self.fail(format!("recovery failed: {error}")))?;
        let (engine, restored) =
            restore(SIM_LIMITS, &self.journal, &self.snapshots, &recovery, None)
                .map_err(|error| self.fail(format!("restore failed: {error}")))?;
        let config = JournalConfig { segment_bytes_max: self.config.segment_bytes_max };
        let sequencer = Sequencer::open(self.journal.clone(), config, &recovery, &engine)
            .map_err(|error| self.fail(format!("the sequencer could not open: {error}")))?;
        if restored.snapshot_sequence > 0 {
            self.report.restores_from_snapshot += 1;
        }
        // Records after the journal's end were lost with the process; their sequences come again.
        let end = engine.last_sequence();
        drop(self.journaled.split_off(&(end.0 + 1)));
        self.durable = end;
        let records = self.check_restored(&engine)?;
        self.start_projector(&recovery, &engine, &records)?;
        self.engine = engine;
        self.sequencer = Some(sequencer);
        Ok(Flow::Continue)
    }

    /// Checks the restored engine against exactly what the journal holds, and the journal against
    /// everything acknowledged. Replaces the shadow by one rebuilt from the journal, because
    /// unacknowledged commands may or may not have survived. Returns the journal's records.
    fn check_restored(&mut self, engine: &Engine) -> Result<Vec<JournalRecord>, SimFailure> {
        let records = self.read_journal()?;
        self.check_acknowledged_in(&records, u64::MAX)?;
        let mut shadow = Shadow::new();
        let mut replayed = Engine::new(SIM_LIMITS);
        for record in &records {
            let stamped = &record.stamped;
            let appended = self.journaled.get(&stamped.sequence.0).and_then(Attachment::bytes);
            if record.attachment.as_deref() != appended {
                return Err(self.fail(format!(
                    "journal seq {} reads back with the attachment {:?}, but was appended with {appended:?}",
                    stamped.sequence.0, record.attachment
                )));
            }
            let expected = shadow.apply(stamped);
            let outcome =
                replayed.apply(stamped.sequence, stamped.at, &stamped.command, &mut DiscardEvents);
            if outcome != expected {
                return Err(self.fail(format!(
                    "replaying seq {} {:?}: the engine answered {outcome:?}, the model {expected:?}",
                    stamped.sequence.0, stamped.command
                )));
            }
            if let Some(acknowledged) = self.acknowledged.get(&stamped.sequence.0) {
                if acknowledged.outcome != expected {
                    return Err(self.fail(format!(
                        "seq {} {:?} was acknowledged as {:?} but the journal's history gives {expected:?}",
                        stamped.sequence.0, stamped.command, acknowledged.outcome
                    )));
                }
            }
        }
        let journal_end = records.len() as u64;
        if engine.last_sequence().0 != journal_end {
            return Err(self.fail(format!(
                "the restored engine is at seq {} but the journal ends at {journal_end}",
                engine.last_sequence().0
            )));
        }
        shadow.check(engine).map_err(|message| self.fail(message))?;
        if replayed.digest() != engine.digest() {
            return Err(self.fail(format!(
                "the restored engine's digest {:#x} differs from a replay from scratch {:#x}",
                engine.digest(),
                replayed.digest()
            )));
        }
        self.shadow = shadow;
        Ok(records)
    }

    /// Every acknowledged command below `before` must be in the journal, at its sequence, unchanged.
    fn check_acknowledged_in(
        &self,
        records: &[JournalRecord],
        before: u64,
    ) -> Result<(), SimFailure> {
        for (&sequence, acknowledged) in self.acknowledged.range(..before) {
            let index = usize::try_from(sequence - 1).expect("sequences fit memory");
            match records.get(index) {
                None => {
                    return Err(self.fail(format!(
                    "acknowledged seq {sequence} {:?} is not in the journal, which ends at seq {}",
                    acknowledged.command,
                    records.len()
                )))
                }
                Some(record)
                    if record.stamped.command != acknowledged.command
                        || record.stamped.at != acknowledged.at =>
                {
                    return Err(self.fail(format!(
                        "acknowledged seq {sequence} {:?} at {:?} reads back as {:?} at {:?}",
                        acknowledged.command,
                        acknowledged.at,
                        record.stamped.command,
                        record.stamped.at
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Every record of the journal, the archived segments first, decoded, checked to be numbered
    /// 1, 2, 3, ...
    fn read_journal(&self) -> Result<Vec<JournalRecord>, SimFailure> {
        let mut records = Vec::new();
        let mut undecodable = None;
        let whole = WithArchive::new(self.journal.clone(), Some(self.archive.clone()));
        let result =
            read_from(&whole, 1, |record| match decode_payload(record.kind, record.payload) {
                Ok((command, attachment)) => {
                    records.push(JournalRecord {
                        stamped: Stamped {
                            sequence: Sequence(record.seq),
                            at: Timestamp(record.at),
                            command,
                        },
                        attachment: attachment.map(<[u8]>::to_vec),
                        segment: record.segment.to_owned(),
                        offset: record.offset,
                        len: (RECORD_HEADER_LEN + record.payload.len()) as u64,
                    });
                    ControlFlow::Continue(())
                }
                Err(error) => {
                    undecodable =
                        Some(format!("journal seq {} does not decode: {error}", record.seq));
                    ControlFlow::Break(())
                }
            });
        result.map_err(|error| self.fail(format!("reading the journal back failed: {error}")))?;
        if let Some(message) = undecodable {
            return Err(self.fail(message));
        }
        for (index, record) in records.iter().enumerate() {
            if record.stamped.sequence.0 != index as u64 + 1 {
                return Err(self.fail(format!(
                    "journal record {index} has seq {}",
                    record.stamped.sequence.0
                )));
            }
        }
        Ok(records)
    }

    // ----- Corruption -----

    /// Flips one bit of a record or of a segment header that holds records. `false` when the
    /// journal holds nothing to flip.
    fn flip_journal_bit(&mut self) -> Result<bool, SimFailure> {
        let records = self.read_journal()?;
        let live = self
            .journal
            .list()
            .map_err(|error| self.fail(format!("listing the journal failed: {error}")))?;
        // Recovery reads the journal only; archived segments are the tools' business.
        let candidates: Vec<&JournalRecord> =
            records.iter().filter(|record| live.contains(&record.segment)).collect();
        if candidates.is_empty() {
            return Ok(false);
        }
        let target = candidates[self.rng.below_usize(candidates.len())].clone();
        let last_segment = live.into_iter().rfind(|name| parse_segment_name(name).is_some());
        let last_record = target.stamped.sequence.0 == records.len() as u64
            && last_segment.as_deref() == Some(target.segment.as_str());
        let (byte, record) = if self.rng.below(8) == 0 {
            (self.rng.below(SEGMENT_HEADER_LEN as u64), None)
        } else {
            (target.offset + self.rng.below(target.len), Some(target.clone()))
        };
        let bit = u8::try_from(self.rng.below(8)).expect("a bit index fits u8");
        self.journal.flip_bit(&target.segment, byte, bit);
        self.flip = Some(Flip {
            segment: target.segment,
            last_record: last_record && record.is_some(),
            acknowledged: self.acknowledged.contains_key(&target.stamped.sequence.0),
            record,
        });
        Ok(true)
    }

    /// Checks the torn-tail rule against what recovery made of a flipped bit, and ends the run.
    fn judge_flip(
        &mut self,
        flip: &Flip,
        recovery: Result<Recovery, JournalError>,
    ) -> Result<Flow, SimFailure> {
        let offset = flip.record.as_ref().map_or(0, |record| record.offset);
        match (&flip.record, recovery) {
            (Some(record), Ok(recovery)) if flip.last_record => {
                let expected =
                    TornTail { segment: flip.segment.clone(), offset, bytes_cut: record.len };
                if recovery.torn_tail.as_ref() != Some(&expected)
                    || recovery.next_seq != record.stamped.sequence.0
                {
                    return Err(self.fail(format!(
                        "a bit flipped in the last record {} at {}:{offset}; recovery should cut it as {expected:?} but found {:?}, next seq {}",
                        record.stamped.sequence.0, flip.segment, recovery.torn_tail, recovery.next_seq
                    )));
                }
                // Everything before the cut record must still be there.
                let records = self.read_journal()?;
                self.check_acknowledged_in(&records, record.stamped.sequence.0)?;
                if flip.acknowledged {
                    self.report.acknowledged_cut_by_bit_flip += 1;
                }
            }
            (_, Ok(recovery)) => {
                return Err(self.fail(format!(
                    "a bit flipped at {}:{offset} ({}) and recovery accepted the journal: {recovery:?}",
                    flip.segment,
                    if flip.record.is_some() { "a record before the end" } else { "a segment header" },
                )));
            }
            (_, Err(JournalError::Corrupt { segment, offset: found, .. }))
                if !flip.last_record && segment == flip.segment && found == offset => {}
            (_, Err(error)) => {
                return Err(self.fail(format!(
                    "a bit flipped at {}:{offset}; recovery should {} but returned: {error}",
                    flip.segment,
                    if flip.last_record {
                        "cut it as a torn tail"
                    } else {
                        "refuse with that segment and offset"
                    },
                )));
            }
        }
        self.report.corruptions_detected += 1;
        Ok(Flow::Stop)
    }

    /// Flips a bit in a snapshot file; loading must skip it and fall back to an older one or none.
    fn flip_snapshot_bit(&mut self) {
        let Ok(names) = self.snapshots.list() else { return };
        // Not the snapshot retention counts on (see `archived_through`).
        let kept = (self.archived_through > 0)
            .then(|| surge_journal::snapshot::snapshot_name(self.archived_through));
        let names: Vec<String> = names
            .into_iter()
            .filter(|name| name.ends_with(".snap") && Some(name) != kept.as_ref())
            .collect();
        if names.is_empty() {
            return;
        }
        let name = &names[self.rng.below_usize(names.len())];
        let len = self.snapshots.bytes(name).map_or(0, |bytes| bytes.len() as u64);
        if len == 0 {
            return;
        }
        let bit = u8::try_from(self.rng.below(8)).expect("a bit index fits u8");
        self.snapshots.flip_bit(name, self.rng.below(len), bit);
        self.report.snapshot_bit_flips += 1;
    }
}
