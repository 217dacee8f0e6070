//! The order projection inside the simulation: the gateway's journal follower and projector as
//! one seeded state machine, and the checks of what it wrote.
//!
//! In the gateway, the pipeline's follower thread replays the durable journal with an engine of
//! its own into [`Output`]s, and the projector thread folds them into the order rows in
//! transactions ([`project`]). Here the [`Projector`] does both on the simulator's steps: it reads
//! durable records after where its follower stands, in chunks of a seeded size, makes outputs of
//! them with [`Output::push`], projects some of the outputs waiting into its store, and at random
//! commits the open transaction, or crashes: the open transaction rolls back, the outputs in
//! flight are lost, and the follower is restored to the committed watermark from the newest
//! snapshot at or before it, as `Pipeline::start` restores it.
//!
//! The rows are the projection's own state, kept apart from the journal as the gateway's SQLite
//! file is. A kill of the simulated process loses the open transaction only. A power loss also
//! takes back the last commits that were not yet synced: the gateway commits the projection
//! without a sync (`Durability::Rebuildable`, synced with the next synced write or checkpoint,
//! which happen here at random), so after a power loss its watermark may go back, never forward.
//!
//! Transactions are undo logs over one [`MemoryStore`], not copies of it: a copy per commit was
//! most of the simulator's time. Every start compares the rolled-back store with a projection
//! rebuilt from the journal, which is what shows the undo logs are right.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::ops::ControlFlow;

use surge_engine::{
    Command, Engine, OrderId, OrderState, Outcome, Sequence, Timestamp, WarehouseId,
};
use surge_journal::{scan, JournalTail, MemStorage, Recovery};
use surge_orders_svc::memory::MemoryStore;
use surge_orders_svc::{
    project, Answer, KeyedAnswer, NewOrder, OrderStatus, OrderStore, PaymentStatus, PlacedOrder,
    Skipped, Work,
};
use surge_pipeline::{decode_payload, restore, Output};

use super::{
    Acknowledged, Attachment, JournalRecord, Rng, Sim, SimConfig, SimFailure, SimReport, SIM_LIMITS,
};

/// Outputs the follower hands on before it waits for the projector: the pipeline's channel
/// holds four.
const OUTPUTS_IN_FLIGHT_MAX: usize = 4;
/// The most records the follower reads into one output on a step.
const RECORDS_PER_OUTPUT_MAX: u64 = 12;
/// How far before the watermark a follower restarts at most, when it restarts early on purpose.
const EARLY_RESTART_MAX: u64 = 32;

/// The engine's warehouse ids as the projection names them.
fn warehouse_name(warehouse: WarehouseId) -> String {
    format!("w{}", warehouse.0)
}

/// How the process stopped, as far as the projection's rows are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// A kill, or a crash of the projector alone: the open transaction is lost.
    Kill,
    /// The machine lost power: the last commits not yet synced may be lost too.
    PowerLoss,
}

/// The follower and the projector of one simulated process (see the module documentation).
#[derive(Debug)]
pub(super) struct Projector {
    /// Its own stream of choices, so that how the projector runs never changes what the clients
    /// and faults of a seed are: a run with a broken projector sees the same workload.
    rng: Rng,
    commit_probability: f64,
    crash_probability: f64,
    sync_probability: f64,
    bug_follows_from_journal_end: bool,
    bug_reads_unsynced: bool,
    /// The follower's engine: it has applied every record read so far.
    engine: Engine,
    /// Reads the journal after `engine`'s last sequence; `None` while the process is down.
    tail: Option<JournalTail<MemStorage>>,
    /// What recovery found at the process's start, or a scan at the last crash of the projector
    /// alone, which restores its follower as a restart would.
    recovery: Option<Recovery>,
    /// Outputs the follower made that are not projected yet.
    outputs: VecDeque<Output>,
    spare: Vec<Output>,
    rows: Rows,
    /// Payment work the projection asks for. The simulation has no payment driver; dropped.
    work: Vec<Work>,
    /// Records the projection reported skipped that the simulator has not looked at yet.
    skipped: Vec<Skipped>,
    /// What journal retention moved to the archive ends at or before this sequence: the
    /// follower never restarts before it on purpose, since the real one never restarts before the
    /// watermark, which is past it.
    pub(super) archived_through: Sequence,
}

impl Projector {
    pub(super) fn new(config: &SimConfig) -> Projector {
        Projector {
            rng: Rng::new(config.seed ^ 0x5052_4F4A_4543_5452),
            commit_probability: config.projector_commit_probability,
            crash_probability: config.projector_crash_probability,
            sync_probability: config.projection_sync_probability,
            bug_follows_from_journal_end: config.bug_projector_follows_from_journal_end,
            bug_reads_unsynced: config.bug_projector_reads_unsynced,
            engine: Engine::new(SIM_LIMITS),
            tail: None,
            recovery: None,
            outputs: VecDeque::with_capacity(OUTPUTS_IN_FLIGHT_MAX),
            spare: Vec::with_capacity(OUTPUTS_IN_FLIGHT_MAX),
            rows: Rows::default(),
            work: Vec::new(),
            skipped: Vec::new(),
            archived_through: Sequence(0),
        }
    }

    /// The committed watermark: how far the projection stands once its open transaction is gone.
    fn committed_watermark(&self) -> Sequence {
        self.rows.committed_watermark()
    }

    /// The watermark journal retention is given: the committed one, made durable first by a sync
    /// as the gateway's synced write makes it. With `bug_unsynced`, not synced: a power loss may
    /// then take it back.
    pub(super) fn retention_watermark(&mut self, bug_unsynced: bool) -> Sequence {
        if !bug_unsynced {
            self.rows.sync();
        }
        self.committed_watermark()
    }

    /// The last sequence the follower has read.
    pub(super) fn followed(&self) -> Sequence {
        self.engine.last_sequence()
    }

    /// The process stopped: the open transaction and the outputs in flight are gone, and with a
    /// power loss the last commits not yet synced may be too (a seeded number of them: SQLite's
    /// write-ahead log keeps a prefix of its commits). A stop that leaves the projection behind
    /// the durable journal is a crash between the journal and the projection.
    pub(super) fn stop(&mut self, durable: Sequence, stop: Stop, report: &mut SimReport) {
        self.rows.roll_back();
        if stop == Stop::PowerLoss {
            let unsynced = self.rows.unsynced.len() as u64;
            let lost = match self.rng.below(4) {
                0 => 0,
                1 => unsynced,
                _ => self.rng.below(unsynced + 1),
            };
            report.projector_commits_lost += lost;
            self.rows.lose_commits(usize::try_from(lost).expect("lost <= unsynced"));
            // What survived the reboot is on disk. A kill syncs nothing: the commits stay in the
            // page cache, for a later power loss to take.
            self.rows.sync();
        }
        if self.rows.store.watermark < durable {
            report.crashes_behind_projection += 1;
        }
        self.recycle_outputs();
        self.tail = None;
    }

    /// Starts the follower where the committed projection stands, as `Pipeline::start` does with
    /// `follow_from`: refused when that is past the journal's end, restored from a snapshot and
    /// the journal when behind it, a copy of the restored `engine` when level with it.
    pub(super) fn start(
        &mut self,
        journal: &MemStorage,
        snapshots: &MemStorage,
        recovery: &Recovery,
        engine: &Engine,
        report: &mut SimReport,
    ) -> Result<(), String> {
        let from = self.committed_watermark();
        let end = engine.last_sequence();
        if from > end {
            return Err(format!(
                "the projection's watermark is seq {} but the journal ends at seq {}: the \
                 projection holds records the journal lost, so it read records that were not durable",
                from.0, end.0
            ));
        }
        self.recovery = Some(recovery.clone());
        let follower = if from < end {
            self.restore_follower(journal, snapshots, Some(from), report)?
        } else {
            engine.clone()
        };
        self.open_tail(journal, follower)
    }

    /// Follows and projects until everything through `durable` is projected, as the gateway does
    /// before it is ready; commits at random on the way, never crashes.
    pub(super) fn catch_up(
        &mut self,
        durable: Sequence,
        report: &mut SimReport,
    ) -> Result<(), String> {
        while self.engine.last_sequence() < durable || !self.outputs.is_empty() {
            if self.outputs.len() < OUTPUTS_IN_FLIGHT_MAX {
                let records = 1 + self.rng.below(4 * RECORDS_PER_OUTPUT_MAX);
                self.follow(durable, records)?;
            }
            self.project_waiting(OUTPUTS_IN_FLIGHT_MAX, report);
            if self.rng.chance(self.commit_probability) {
                self.commit(report);
            }
        }
        Ok(())
    }

    /// One step beside the engine's: the follower reads a chunk of what is durable, some of the
    /// outputs waiting are projected, the open transaction may commit, or crash, and the
    /// database may sync what was committed.
    pub(super) fn step(
        &mut self,
        durable: Sequence,
        journal: &MemStorage,
        snapshots: &MemStorage,
        report: &mut SimReport,
    ) -> Result<(), String> {
        if self.outputs.len() < OUTPUTS_IN_FLIGHT_MAX && self.rng.below(3) != 0 {
            let records = 1 + self.rng.below(RECORDS_PER_OUTPUT_MAX);
            self.follow(durable, records)?;
        }
        if self.rng.below(2) == 0 {
            let outputs = 1 + self.rng.below_usize(OUTPUTS_IN_FLIGHT_MAX);
            self.project_waiting(outputs, report);
        }
        if self.rng.chance(self.commit_probability) {
            self.commit(report);
        } else if self.rng.chance(self.crash_probability) {
            self.crash(durable, journal, snapshots, report)?;
        }
        if self.rng.chance(self.sync_probability) {
            self.rows.sync();
        }
        Ok(())
    }

    /// The journal's commit failed and the process is about to stop, but the follower and the
    /// projector are threads of their own and may take one more step, commit and sync included.
    /// They read through `durable`, which the failed commit did not move.
    pub(super) fn step_while_stopping(
        &mut self,
        durable: Sequence,
        journal: &MemStorage,
        report: &mut SimReport,
    ) -> Result<(), String> {
        if self.rng.below(2) == 0 {
            return Ok(());
        }
        let through = if self.bug_reads_unsynced {
            // Everything the journal's files hold, synced or not.
            let recovery =
                scan(journal).map_err(|error| format!("scanning the journal: {error}"))?;
            Sequence(recovery.next_seq - 1)
        } else {
            durable
        };
        while self.engine.last_sequence() < through {
            self.follow(through, u64::MAX)?;
            self.project_waiting(usize::MAX, report);
        }
        self.project_waiting(usize::MAX, report);
        if self.rng.below(2) == 0 {
            self.commit(report);
            if self.rng.below(2) == 0 {
                self.rows.sync();
            }
        }
        Ok(())
    }

    /// Reads at most `records_max` records after the follower's engine, through `through`, into
    /// one output, applying each to the engine.
    fn follow(&mut self, through: Sequence, records_max: u64) -> Result<(), String> {
        let mut output = self.spare.pop().unwrap_or_default();
        let Self { engine, tail, .. } = self;
        let tail = tail.as_mut().expect("the follower reads only while the process is up");
        let mut read = 0;
        let mut failure = None;
        let result = tail.read_through(through.0, |record| {
            match decode_payload(record.kind, record.payload) {
                Ok((command, attachment)) => {
                    let (sequence, at) = (Sequence(record.seq), Timestamp(record.at));
                    output.push(sequence, at, command, attachment, engine);
                    read += 1;
                }
                Err(error) => {
                    failure = Some(format!(
                        "the follower read seq {} that does not decode: {error}",
                        record.seq
                    ));
                    return ControlFlow::Break(());
                }
            }
            if read >= records_max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        result.map_err(|error| format!("the follower could not read the journal: {error}"))?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        if output.commands().is_empty() {
            self.spare.push(output);
        } else {
            self.outputs.push_back(output);
        }
        Ok(())
    }

    /// Projects up to `outputs_max` of the outputs waiting into the open transaction.
    fn project_waiting(&mut self, outputs_max: usize, report: &mut SimReport) {
        for _ in 0..outputs_max {
            let Some(mut output) = self.outputs.pop_front() else { break };
            let (rows, work, skipped) = (&mut self.rows, &mut self.work, &mut self.skipped);
            let result = project(rows, &output, &warehouse_name, work, skipped);
            result.unwrap_or_else(|never| match never {});
            self.work.clear();
            report.outputs_projected += 1;
            output.clear();
            self.spare.push(output);
        }
    }

    fn commit(&mut self, report: &mut SimReport) {
        if self.rows.commit() {
            report.projector_commits += 1;
        }
    }

    /// The projector's own crash: the open transaction rolls back, the outputs in flight are
    /// lost, and the follower is restored to the committed watermark. One restart in four begins
    /// a little before the watermark, so that the projection is handed commands it holds already
    /// (some outputs partly so) and must skip them.
    fn crash(
        &mut self,
        durable: Sequence,
        journal: &MemStorage,
        snapshots: &MemStorage,
        report: &mut SimReport,
    ) -> Result<(), String> {
        report.projector_crashes += 1;
        self.stop(durable, Stop::Kill, report);
        // As a restart would, from the journal as it is now: records were appended since the
        // process started, and `restore` checks its snapshot against the journal's end.
        let recovery = scan(journal).map_err(|error| format!("scanning the journal: {error}"))?;
        self.recovery = Some(recovery);
        let watermark = self.committed_watermark();
        let from = if self.rng.below(4) == 0 && watermark.0 > 0 {
            report.projector_restarts_before_watermark += 1;
            let early =
                Sequence(watermark.0 - 1 - self.rng.below(watermark.0.min(EARLY_RESTART_MAX)));
            early.max(self.archived_through.min(watermark))
        } else {
            watermark
        };
        let to = if self.bug_follows_from_journal_end { None } else { Some(from) };
        let follower = self.restore_follower(journal, snapshots, to, report)?;
        self.open_tail(journal, follower)
    }

    fn restore_follower(
        &mut self,
        journal: &MemStorage,
        snapshots: &MemStorage,
        to: Option<Sequence>,
        report: &mut SimReport,
    ) -> Result<Engine, String> {
        let recovery = self.recovery.as_ref().expect("the process started");
        let (follower, restored) = restore(SIM_LIMITS, journal, snapshots, recovery, to)
            .map_err(|error| format!("the follower could not be restored to {to:?}: {error}"))?;
        if let Some(to) = to {
            if follower.last_sequence() != to {
                return Err(format!(
                    "the follower was restored to seq {} when asked for seq {}",
                    follower.last_sequence().0,
                    to.0
                ));
            }
        }
        if restored.snapshot_sequence > 0 {
            report.projector_restores_from_snapshot += 1;
        }
        Ok(follower)
    }

    fn open_tail(&mut self, journal: &MemStorage, follower: Engine) -> Result<(), String> {
        let from = follower.last_sequence().0 + 1;
        let tail = JournalTail::open(journal.clone(), from).map_err(|error| {
            format!("the follower's tail could not open at seq {from}: {error}")
        })?;
        self.tail = Some(tail);
        self.engine = follower;
        Ok(())
    }

    fn recycle_outputs(&mut self) {
        for mut output in self.outputs.drain(..) {
            output.clear();
            self.spare.push(output);
        }
    }
}

/// The projection's rows: one store, the open transaction's undo log, and one undo log per
/// commit not yet synced (oldest first), each taking the store back to the commit before it.
#[derive(Debug, Default)]
struct Rows {
    store: MemoryStore,
    open: Vec<Undo>,
    unsynced: Vec<Vec<Undo>>,
}

/// How to take back one change of a transaction. Each names what the change overwrote, as
/// [`MemoryStore`] makes its changes; an undo that missed something would show as a difference
/// from the rebuilt projection at the next start.
#[derive(Debug)]
enum Undo {
    Watermark(Sequence),
    OrderInserted(OrderId),
    Status { order: OrderId, status: OrderStatus, history_len: usize },
    Payment { order: OrderId, payment: PaymentStatus },
    AnswerInserted(Sequence),
    CartCheckedOut((i64, u64)),
}

impl Rows {
    /// The watermark as of the last commit.
    fn committed_watermark(&self) -> Sequence {
        let first_of_open = self.open.iter().find_map(|undo| match undo {
            Undo::Watermark(before) => Some(*before),
            _ => None,
        });
        first_of_open.unwrap_or(self.store.watermark)
    }

    /// Ends the open transaction; `false` when it changed nothing.
    fn commit(&mut self) -> bool {
        if self.open.is_empty() {
            return false;
        }
        self.unsynced.push(std::mem::take(&mut self.open));
        true
    }

    fn roll_back(&mut self) {
        let open = std::mem::take(&mut self.open);
        self.undo(open);
    }

    /// Takes back the last `count` commits.
    fn lose_commits(&mut self, count: usize) {
        for _ in 0..count {
            let log = self.unsynced.pop().expect("no more commits lost than unsynced");
            self.undo(log);
        }
    }

    /// Everything committed is on disk.
    fn sync(&mut self) {
        self.unsynced.clear();
    }

    fn undo(&mut self, log: Vec<Undo>) {
        let store = &mut self.store;
        for undo in log.into_iter().rev() {
            match undo {
                Undo::Watermark(before) => store.watermark = before,
                Undo::OrderInserted(order) => {
                    store.orders.remove(&order);
                }
                Undo::Status { order, status, history_len } => {
                    let stored = store.orders.get_mut(&order).expect("an order changed exists");
                    stored.status = status;
                    stored.history.truncate(history_len);
                }
                Undo::Payment { order, payment } => {
                    store.orders.get_mut(&order).expect("an order changed exists").payment =
                        payment;
                }
                Undo::AnswerInserted(sequence) => {
                    store.answers.remove(&sequence);
                }
                Undo::CartCheckedOut(cart) => {
                    store.carts_checked_out.remove(&cart);
                }
            }
        }
    }
}

impl OrderStore for Rows {
    type Error = std::convert::Infallible;

    fn watermark(&mut self) -> Result<Sequence, Self::Error> {
        self.store.watermark()
    }

    fn set_watermark(&mut self, through: Sequence) -> Result<(), Self::Error> {
        self.open.push(Undo::Watermark(self.store.watermark));
        self.store.set_watermark(through)
    }

    fn insert_order(&mut self, order: &NewOrder) -> Result<(), Self::Error> {
        if !self.store.orders.contains_key(&order.placed.id) {
            self.open.push(Undo::OrderInserted(order.placed.id));
        }
        self.store.insert_order(order)
    }

    fn order_state(
        &mut self,
        order: OrderId,
    ) -> Result<Option<(OrderStatus, PaymentStatus, i64)>, Self::Error> {
        self.store.order_state(order)
    }

    fn set_status(
        &mut self,
        order: OrderId,
        status: OrderStatus,
        sequence: Sequence,
        at: Timestamp,
    ) -> Result<(), Self::Error> {
        if let Some(stored) = self.store.orders.get(&order) {
            let (status, history_len) = (stored.status, stored.history.len());
            self.open.push(Undo::Status { order, status, history_len });
        }
        self.store.set_status(order, status, sequence, at)
    }

    fn set_payment(
        &mut self,
        order: OrderId,
        status: PaymentStatus,
        at: Timestamp,
    ) -> Result<(), Self::Error> {
        if let Some(stored) = self.store.orders.get(&order) {
            self.open.push(Undo::Payment { order, payment: stored.payment });
        }
        self.store.set_payment(order, status, at)
    }

    fn insert_answer(&mut self, answer: &KeyedAnswer) -> Result<(), Self::Error> {
        if !self.store.answers.contains_key(&answer.sequence) {
            self.open.push(Undo::AnswerInserted(answer.sequence));
        }
        self.store.insert_answer(answer)
    }

    fn cart_checked_out(&mut self, buyer_id: i64, version: u64) -> Result<(), Self::Error> {
        if !self.store.carts_checked_out.contains_key(&(buyer_id, version)) {
            self.open.push(Undo::CartCheckedOut((buyer_id, version)));
        }
        self.store.cart_checked_out(buyer_id, version)
    }
}

impl Sim<'_> {
    /// The projector's step beside the engine's (see [`Projector::step`]).
    pub(super) fn step_projector(&mut self) -> Result<(), SimFailure> {
        let Sim { projector, journal, snapshots, report, durable, .. } = self;
        let result = projector.step(*durable, journal, snapshots, report);
        result.map_err(|message| self.fail(message))?;
        self.check_skips()
    }

    /// See [`Projector::step_while_stopping`].
    pub(super) fn step_projector_while_stopping(&mut self) -> Result<(), SimFailure> {
        let Sim { projector, journal, report, durable, .. } = self;
        let result = projector.step_while_stopping(*durable, journal, report);
        result.map_err(|message| self.fail(message))?;
        self.check_skips()
    }

    /// The projector at the process's start, once the engine was restored and checked against
    /// `records`, the journal as it is now: the follower restored to the committed watermark,
    /// the committed rows compared with a projection rebuilt through that watermark, the
    /// projector caught up with the journal, and everything compared again.
    pub(super) fn start_projector(
        &mut self,
        recovery: &Recovery,
        engine: &Engine,
        records: &[JournalRecord],
    ) -> Result<(), SimFailure> {
        let Sim { projector, journal, snapshots, report, .. } = self;
        let result = projector.start(journal, snapshots, recovery, engine, report);
        result.map_err(|message| self.fail(message))?;
        let mut rebuilt = Rebuilt::new();
        let committed = self.projector.committed_watermark();
        rebuilt.project_through(records, committed);
        if let Some(difference) = difference(&self.projector.rows.store, &rebuilt.store) {
            return Err(self.fail(format!(
                "the committed projection (through seq {}) differs from one rebuilt from the journal: {difference}",
                committed.0
            )));
        }
        self.catch_up_projector()?;
        self.check_caught_up(records, engine, rebuilt)
    }

    pub(super) fn catch_up_projector(&mut self) -> Result<(), SimFailure> {
        let result = self.projector.catch_up(self.durable, &mut self.report);
        result.map_err(|message| self.fail(message))?;
        self.check_skips()
    }

    /// Every record the projection reported skipped must carry bytes that are not a record.
    fn check_skips(&mut self) -> Result<(), SimFailure> {
        for skipped in std::mem::take(&mut self.projector.skipped) {
            if !matches!(self.journaled.get(&skipped.sequence.0), Some(Attachment::Unreadable(_))) {
                return Err(self.fail(format!(
                    "the projection skipped seq {} ({}), which carries a readable record or none",
                    skipped.sequence.0, skipped.reason
                )));
            }
        }
        Ok(())
    }

    /// The cheap check of every `check_every` steps: the projector's store against its own
    /// follower engine, when every output the follower made is projected.
    pub(super) fn check_projector_against_its_engine(&self) -> Result<(), SimFailure> {
        let projector = &self.projector;
        if !projector.outputs.is_empty()
            || projector.rows.store.watermark != projector.engine.last_sequence()
        {
            return Ok(());
        }
        check_orders_against_engine(&projector.rows.store, &projector.engine, &self.journaled)
            .map_err(|message| self.fail(message))
    }

    /// The projection of a process that ran on, caught up, against one rebuilt from `records`,
    /// the whole journal, with `engine` the engine at its end. Every acknowledgement is checked
    /// again, not only those since the last check.
    pub(super) fn check_projection(
        &mut self,
        records: &[JournalRecord],
        engine: &Engine,
    ) -> Result<(), SimFailure> {
        self.told_checked_through = 0;
        self.check_caught_up(records, engine, Rebuilt::new())
    }

    /// The projector, caught up with the journal, against `rebuilt` carried on to the journal's
    /// end; `engine` is the engine there.
    fn check_caught_up(
        &mut self,
        records: &[JournalRecord],
        engine: &Engine,
        mut rebuilt: Rebuilt,
    ) -> Result<(), SimFailure> {
        self.report.projection_checks += 1;
        let end = Sequence(records.len() as u64);
        rebuilt.project_through(records, end);
        let projector = &self.projector;
        if end != self.durable || engine.last_sequence() != end {
            return Err(self.fail(format!(
                "checking the projection with the journal at seq {}, the durable sequence {} and the engine at seq {}",
                end.0,
                self.durable.0,
                engine.last_sequence().0
            )));
        }
        if projector.engine.last_sequence() != end || !projector.outputs.is_empty() {
            return Err(self.fail(format!(
                "the projector did not catch up: its follower is at seq {}, the journal ends at seq {}",
                projector.engine.last_sequence().0,
                end.0
            )));
        }
        let store = &projector.rows.store;
        if let Some(difference) = difference(store, &rebuilt.store) {
            return Err(self.fail(format!(
                "the projection caught up with the journal (seq {}) differs from one rebuilt from it: {difference}",
                end.0
            )));
        }
        if rebuilt.engine.digest() != projector.engine.digest()
            || engine.digest() != projector.engine.digest()
        {
            return Err(self.fail(format!(
                "the follower's engine has digest {:#x}, the engine {:#x}, one replayed from scratch {:#x}",
                projector.engine.digest(),
                engine.digest(),
                rebuilt.engine.digest()
            )));
        }
        let unreadable: Vec<u64> = self
            .journaled
            .iter()
            .filter(|(_, attachment)| matches!(attachment, Attachment::Unreadable(_)))
            .map(|(&sequence, _)| sequence)
            .collect();
        let skipped: Vec<u64> = rebuilt.skipped.iter().map(|skipped| skipped.sequence.0).collect();
        if skipped != unreadable {
            return Err(self.fail(format!(
                "the rebuilt projection skipped seqs {skipped:?}, but the unreadable records are {unreadable:?}"
            )));
        }
        let told = self.acknowledged.range(self.told_checked_through + 1..);
        check_told(store, told, &self.journaled)
            .and_then(|()| check_orders_against_engine(store, &projector.engine, &self.journaled))
            .map_err(|message| self.fail(message))?;
        self.told_checked_through = end.0;
        self.report.records_skipped = skipped.len() as u64;
        self.report.orders = rebuilt.store.orders.len() as u64;
        self.report.answers = rebuilt.store.answers.len() as u64;
        Ok(())
    }
}

/// The projection of the journal made in one pass by a fresh engine, carried forward in steps
/// so that it can be compared with the committed rows on the way.
struct Rebuilt {
    engine: Engine,
    store: MemoryStore,
    work: Vec<Work>,
    skipped: Vec<Skipped>,
}

impl Rebuilt {
    fn new() -> Rebuilt {
        Rebuilt {
            engine: Engine::new(SIM_LIMITS),
            store: MemoryStore::default(),
            work: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Projects the records after the ones projected so far, through `through`, as one output.
    fn project_through(&mut self, records: &[JournalRecord], through: Sequence) {
        let from = usize::try_from(self.engine.last_sequence().0).expect("sequences fit memory");
        let to = usize::try_from(through.0).expect("sequences fit memory").min(records.len());
        if from >= to {
            return;
        }
        let mut output = Output::default();
        for record in &records[from..to] {
            let stamped = &record.stamped;
            let attachment = record.attachment.as_deref();
            output.push(
                stamped.sequence,
                stamped.at,
                stamped.command,
                attachment,
                &mut self.engine,
            );
        }
        let (work, skipped) = (&mut self.work, &mut self.skipped);
        let result = project(&mut self.store, &output, &warehouse_name, work, skipped);
        result.unwrap_or_else(|never| match never {});
    }
}

/// What every acknowledged reservation told its client must be what the projection holds: a
/// readable checkout has its answer under its sequence when the outcome keeps one, and its order,
/// with the placed order the client was shown, exactly when it was reserved; any other
/// reservation has neither.
fn check_told<'a>(
    store: &MemoryStore,
    acknowledged: impl Iterator<Item = (&'a u64, &'a Acknowledged)>,
    journaled: &BTreeMap<u64, Attachment>,
) -> Result<(), String> {
    for (&sequence, told) in acknowledged {
        let Command::Reserve { buyer, .. } = told.command else { continue };
        let answer = store.answers.get(&Sequence(sequence));
        let order = store.orders.get(&OrderId(sequence));
        let Some(Attachment::Record(checkout)) = journaled.get(&sequence) else {
            if answer.is_some() || order.is_some() {
                return Err(format!(
                    "acknowledged seq {sequence} carried no readable record, but the projection holds an answer {answer:?} or an order {order:?} for it"
                ));
            }
            continue;
        };
        let record = &checkout.record;
        let buyer_id = i64::try_from(buyer.0).expect("simulated buyers are small");
        match (Answer::of_outcome(record, &told.outcome), answer) {
            (None, None) => {}
            (Some(expected), Some(stored))
                if stored.answer == expected
                    && stored.idempotency_key == record.idempotency_key
                    && stored.request_hash == record.request_hash
                    && stored.buyer_id == buyer_id
                    && stored.at == told.at => {}
            (expected, stored) => {
                return Err(format!(
                    "acknowledged seq {sequence} {:?} (key {}) should have the answer {expected:?} but the projection holds {stored:?}",
                    told.outcome, record.idempotency_key
                ));
            }
        }
        match (told.outcome, order) {
            (Outcome::Reserved { order: id, expires_at, lines }, Some(stored)) => {
                let shown = PlacedOrder::new(
                    id,
                    buyer_id,
                    record,
                    &lines,
                    told.at,
                    expires_at,
                    &warehouse_name,
                );
                if stored.order.placed != shown
                    || stored.order.payment_token != record.payment_token
                {
                    return Err(format!(
                        "acknowledged seq {sequence} placed {shown:?}, but the projection holds {:?}",
                        stored.order
                    ));
                }
            }
            (Outcome::Reserved { .. }, None) => {
                return Err(format!(
                    "acknowledged seq {sequence} was reserved (key {}), but the projection holds no order for it",
                    record.idempotency_key
                ));
            }
            (outcome, Some(stored)) => {
                return Err(format!(
                    "acknowledged seq {sequence} was {outcome:?}, but the projection holds an order for it: {stored:?}"
                ));
            }
            (_, None) => {}
        }
    }
    Ok(())
}

/// Every order's status is its engine state while the engine holds it, and final once the
/// engine let it go; every live order of a readable checkout has its row. `store` has projected
/// exactly what `engine` applied.
fn check_orders_against_engine(
    store: &MemoryStore,
    engine: &Engine,
    journaled: &BTreeMap<u64, Attachment>,
) -> Result<(), String> {
    let live: BTreeMap<OrderId, OrderState> = engine.order_states().collect();
    for (&id, &state) in &live {
        match (store.orders.get(&id), journaled.get(&id.0)) {
            (Some(stored), _) if stored.status != OrderStatus::of_engine(state) => {
                return Err(format!(
                    "order {} is {state:?} in the engine but {:?} in the projection",
                    id.0, stored.status
                ));
            }
            (None, Some(Attachment::Record(checkout))) => {
                return Err(format!(
                    "order {} (key {}) is {state:?} in the engine but the projection has no row for it",
                    id.0, checkout.record.idempotency_key
                ));
            }
            _ => {}
        }
    }
    for (id, stored) in &store.orders {
        if !live.contains_key(id) && !stored.status.is_final() {
            return Err(format!(
                "order {} is {:?} in the projection, but the engine no longer holds it",
                id.0, stored.status
            ));
        }
    }
    Ok(())
}

/// The first difference between two stores, `None` when they are equal: a failure names one
/// row, not two whole stores.
fn difference(found: &MemoryStore, expected: &MemoryStore) -> Option<String> {
    if found == expected {
        return None;
    }
    if found.watermark != expected.watermark {
        return Some(format!(
            "the watermark is seq {} but should be seq {}",
            found.watermark.0, expected.watermark.0
        ));
    }
    first_difference("order", &found.orders, &expected.orders)
        .or_else(|| first_difference("answer", &found.answers, &expected.answers))
        .or_else(|| {
            first_difference(
                "checked-out cart",
                &found.carts_checked_out,
                &expected.carts_checked_out,
            )
        })
        .or_else(|| Some("the stores differ, but in no row".to_owned()))
}

fn first_difference<K: Ord + Debug, V: PartialEq + Debug>(
    what: &str,
    found: &BTreeMap<K, V>,
    expected: &BTreeMap<K, V>,
) -> Option<String> {
    let keys: BTreeSet<&K> = found.keys().chain(expected.keys()).collect();
    keys.into_iter().find_map(|key| match (found.get(key), expected.get(key)) {
        (Some(found), Some(expected)) if found == expected => None,
        (found, expected) => {
            Some(format!("{what} {key:?} is {found:?} but should be {expected:?}"))
        }
    })
}
