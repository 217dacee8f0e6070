//! The threaded pipeline: many producers, one sequencer-journaler, one engine thread.
//!
//! ```text
//!  producers ──try_submit──▶ [bounded queue] ──▶ sequencer + journal ──batch──▶ engine ──▶ outcomes
//!  (gateway handlers)                            (stamp, append, 1 fsync)       (apply)    events
//!                                                                                  │
//!                                                              every N commands: clone ─▶ snapshot writer
//! ```
//!
//! A producer learns the outcome of its command only after the batch holding it was fsynced and
//! applied, so an acknowledged command survives any crash. Batches form by themselves: while one
//! fsync runs, new submissions queue up and go into the next batch, so the batch size grows with
//! load and the fsync cost is shared (group commit).
//!
//! Why crossbeam channels and not the `disruptor` crate: disruptor's consumers busy-spin, and on the
//! two-core machines this runs on, two spinning consumers would take both cores from the gateway.
//! The blocking channels park idle threads; the batch hand-off costs one channel operation per
//! batch, not per command. BENCHMARKS.md has the figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use surge_journal::{FsStorage, JournalConfig, Storage};
use tokio::sync::oneshot;

use surge_engine::{Command, Engine, Event, Limits, Outcome, Sequence, Sequenced, Timestamp};

use crate::durable::{restore, restore_with_events, DurableError, RestoreReport, Sequencer};

/// Tunables of the pipeline, with defaults for a production node.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub limits: Limits,
    /// Submissions waiting for the sequencer. When full, `try_submit` answers `Overloaded`: this is
    /// the bounded queue the gateway sheds load at.
    pub queue_capacity: usize,
    /// The most commands in one journal batch (one fsync).
    pub batch_max: usize,
    /// Commands between snapshots; 0 disables them.
    pub snapshot_every: u64,
    /// How often the sequencer checks for reservation deadlines that passed.
    pub tick_interval: Duration,
    pub journal: JournalConfig,
    /// Regenerate the events of every command after this sequence at start (see
    /// [`crate::durable::restore_with_events`]); they come back in
    /// [`RestoreReport::missed_events`].
    pub events_after: Option<Sequence>,
    /// Queue events from the start instead of from [`Pipeline::take_events`], so a consumer that
    /// takes the receiver right after start misses none (`Expire` can run before it does).
    pub publish_events: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            limits: Limits::PRODUCTION,
            queue_capacity: 65_536,
            batch_max: 4_096,
            snapshot_every: 1_000_000,
            tick_interval: Duration::from_millis(50),
            journal: JournalConfig::default(),
            events_after: None,
            publish_events: false,
        }
    }
}

/// The sequencer's clock. Only the sequencer reads time; the engine gets it stamped on commands.
pub trait Clock: Send + 'static {
    fn now(&self) -> Timestamp;
}

/// Wall-clock time in nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// The durable answer to one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    pub sequence: Sequence,
    pub at: Timestamp,
    pub outcome: Outcome,
}

/// Why a command was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue in front of the sequencer is full; retry later.
    #[error("the engine queue is full")]
    Overloaded,
    /// The pipeline stopped (shutdown, or a journal failure). The command's fate is unknown only in
    /// the second case, and then the process is about to stop anyway.
    #[error("the engine pipeline has stopped")]
    Stopped,
}

/// The pending answer to a submitted command.
#[derive(Debug)]
pub struct Ticket {
    reply: oneshot::Receiver<Applied>,
}

impl Ticket {
    /// Blocks the calling thread until the command is durable and applied.
    pub fn wait(self) -> Result<Applied, SubmitError> {
        self.reply.blocking_recv().map_err(|_| SubmitError::Stopped)
    }

    /// Waits without blocking a thread, for async callers.
    pub async fn outcome(self) -> Result<Applied, SubmitError> {
        self.reply.await.map_err(|_| SubmitError::Stopped)
    }
}

/// The pending answers to a group of commands submitted together.
#[derive(Debug)]
pub struct GroupTicket {
    reply: oneshot::Receiver<Vec<Applied>>,
}

impl GroupTicket {
    /// Blocks the calling thread until every command of the group is durable and applied.
    pub fn wait(self) -> Result<Vec<Applied>, SubmitError> {
        self.reply.blocking_recv().map_err(|_| SubmitError::Stopped)
    }

    /// Waits without blocking a thread, for async callers.
    pub async fn outcomes(self) -> Result<Vec<Applied>, SubmitError> {
        self.reply.await.map_err(|_| SubmitError::Stopped)
    }
}

/// What travels on the queue and, journaled, on to the engine.
enum Message {
    /// One command; `reply` is `None` for the `Expire` the sequencer injects itself.
    Command { command: Command, reply: Option<oneshot::Sender<Applied>> },
    /// Commands that go into the same batch, in order, answered together with one wake-up. `results`
    /// comes with its capacity from the producer, so the engine thread does not allocate for it.
    Group { commands: Vec<Command>, results: Vec<Applied>, reply: oneshot::Sender<Vec<Applied>> },
    /// A read of the engine's state, run on the engine thread after every command queued before it.
    /// Not journaled: it changes nothing.
    Query(Box<dyn FnOnce(&Engine) + Send>),
    /// Sent by `shutdown`: finish what is queued, then stop.
    Stop,
}

impl Message {
    fn command_count(&self) -> usize {
        match self {
            Message::Command { .. } => 1,
            Message::Group { commands, .. } => commands.len(),
            Message::Query(_) | Message::Stop => 0,
        }
    }
}

/// Journaled commands on their way to the engine, with the batch's first sequence and stamp.
struct Batch {
    first: Sequence,
    at: Timestamp,
    items: Vec<Message>,
}

/// Counters shared with whoever watches the pipeline (metrics, `/v1/admin/engine`).
#[derive(Debug, Default)]
struct Shared {
    stopping: AtomicBool,
    events_taken: AtomicBool,
    applied_sequence: AtomicU64,
    durable_sequence: AtomicU64,
    journal_bytes: AtomicU64,
    snapshot_sequence: AtomicU64,
    fsync_count: AtomicU64,
    fsync_ns_total: AtomicU64,
    fsync_ns_last: AtomicU64,
    next_deadline: AtomicU64,
}

/// A point-in-time reading of the pipeline's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub applied_sequence: u64,
    pub durable_sequence: u64,
    pub journal_bytes: u64,
    pub snapshot_sequence: u64,
    pub fsync_count: u64,
    pub fsync_ns_total: u64,
    pub fsync_ns_last: u64,
    pub queue_len: usize,
    pub queue_capacity: usize,
}

/// A cheap, clonable way to submit commands.
#[derive(Clone, Debug)]
pub struct Handle {
    queue: Sender<Message>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Command { command, .. } => f.debug_tuple("Command").field(command).finish(),
            Message::Group { commands, .. } => {
                f.debug_tuple("Group").field(&commands.len()).finish()
            }
            Message::Query(_) => f.write_str("Query"),
            Message::Stop => f.write_str("Stop"),
        }
    }
}

impl Handle {
    /// Queues a command, or answers `Overloaded` at once when the queue is full.
    pub fn try_submit(&self, command: Command) -> Result<Ticket, SubmitError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let (reply, ticket) = oneshot::channel();
        match self.queue.try_send(Message::Command { command, reply: Some(reply) }) {
            Ok(()) => Ok(Ticket { reply: ticket }),
            Err(TrySendError::Full(_)) => Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// Queues a command, waiting for room. For load generators and tools, not for request handlers.
    pub fn submit(&self, command: Command) -> Result<Ticket, SubmitError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let (reply, ticket) = oneshot::channel();
        self.queue
            .send(Message::Command { command, reply: Some(reply) })
            .map_err(|_| SubmitError::Stopped)?;
        Ok(Ticket { reply: ticket })
    }

    /// Queues commands that are journaled in one batch and answered together, waiting for room.
    /// For bulk producers (stock imports, load generators): one wake-up per group instead of one per
    /// command.
    pub fn submit_group(&self, commands: Vec<Command>) -> Result<GroupTicket, SubmitError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let (reply, ticket) = oneshot::channel();
        let results = Vec::with_capacity(commands.len());
        self.queue
            .send(Message::Group { commands, results, reply })
            .map_err(|_| SubmitError::Stopped)?;
        Ok(GroupTicket { reply: ticket })
    }

    /// Reads the engine's state on the engine thread, after every command submitted before it, and
    /// returns what `read` returns. Answers `Overloaded` when the queue is full, like `try_submit`.
    /// Reads are consistent (no command is half applied) but cost a trip through the queue, so they
    /// suit detail and operator views, not per-request hot paths.
    pub async fn query<R: Send + 'static>(
        &self,
        read: impl FnOnce(&Engine) -> R + Send + 'static,
    ) -> Result<R, SubmitError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let (reply, answer) = oneshot::channel();
        let query = Box::new(move |engine: &Engine| {
            let _ = reply.send(read(engine));
        });
        match self.queue.try_send(Message::Query(query)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Stopped),
        }
        answer.await.map_err(|_| SubmitError::Stopped)
    }

    pub fn stats(&self) -> PipelineStats {
        let shared = &self.shared;
        PipelineStats {
            applied_sequence: shared.applied_sequence.load(Ordering::Relaxed),
            durable_sequence: shared.durable_sequence.load(Ordering::Relaxed),
            journal_bytes: shared.journal_bytes.load(Ordering::Relaxed),
            snapshot_sequence: shared.snapshot_sequence.load(Ordering::Relaxed),
            fsync_count: shared.fsync_count.load(Ordering::Relaxed),
            fsync_ns_total: shared.fsync_ns_total.load(Ordering::Relaxed),
            fsync_ns_last: shared.fsync_ns_last.load(Ordering::Relaxed),
            queue_len: self.queue.len(),
            queue_capacity: self.queue.capacity().unwrap_or(0),
        }
    }
}

/// Events of one applied batch, in sequence order, each with its command's sequence. Every batch the
/// engine applies is handed on, with or without events.
#[derive(Debug)]
pub struct EventBatch {
    /// The sequence of the last command applied when the batch was handed on.
    pub last_sequence: Sequence,
    pub events: Vec<(Sequence, Event)>,
}

/// The running pipeline. Dropping it without [`Pipeline::shutdown`] leaves the threads running.
#[derive(Debug)]
pub struct Pipeline {
    handle: Handle,
    threads: Vec<JoinHandle<()>>,
    events: Option<Receiver<EventBatch>>,
}

/// What happens when the journal fails. The default stops the process: a failed fsync may have lost
/// acknowledged-to-the-kernel writes, and nothing may be acknowledged to a client after it.
pub type JournalFailureHook = Arc<dyn Fn(&DurableError) + Send + Sync>;

fn stop_process(error: &DurableError) {
    tracing::error!(%error, "journal write failed; stopping the process to keep acknowledged commands safe");
    std::process::abort();
}

impl Pipeline {
    /// Restores state from `data_dir` (`journal/` and `snapshots/` below it) and starts the threads.
    pub fn open_dir(
        data_dir: &std::path::Path,
        config: PipelineConfig,
    ) -> Result<(Pipeline, RestoreReport), DurableError> {
        let journal = FsStorage::open(&data_dir.join("journal"))
            .map_err(surge_journal::JournalError::from)?;
        let snapshots = FsStorage::open(&data_dir.join("snapshots"))
            .map_err(surge_journal::JournalError::from)?;
        Self::start(config, journal, snapshots, SystemClock, Arc::new(stop_process))
    }

    /// Restores state from the given storages and starts the threads.
    pub fn start<J: Storage, S: Storage, C: Clock>(
        config: PipelineConfig,
        journal: J,
        snapshots: S,
        clock: C,
        on_journal_failure: JournalFailureHook,
    ) -> Result<(Pipeline, RestoreReport), DurableError> {
        let recovery = surge_journal::recover(&journal)?;
        let PipelineConfig {
            limits,
            queue_capacity,
            batch_max,
            snapshot_every,
            tick_interval,
            journal: journal_config,
            events_after,
            publish_events,
        } = config;
        let (engine, report) = match events_after {
            None => restore(limits, &journal, &snapshots, &recovery, None)?,
            Some(after) => {
                let mut missed = Vec::new();
                let (engine, mut report) = restore_with_events(
                    limits,
                    &journal,
                    &snapshots,
                    &recovery,
                    after,
                    &mut missed,
                )?;
                report.missed_events = missed;
                (engine, report)
            }
        };
        let sequencer = Sequencer::open(journal, journal_config, &recovery, &engine)?;
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(segment = %torn.segment, offset = torn.offset, bytes = torn.bytes_cut, "cut a torn record at the end of the journal");
        }

        let shared = Arc::new(Shared::default());
        shared.events_taken.store(publish_events, Ordering::Relaxed);
        let applied = engine.last_sequence().0;
        shared.applied_sequence.store(applied, Ordering::Relaxed);
        shared.durable_sequence.store(applied, Ordering::Relaxed);
        shared.snapshot_sequence.store(report.snapshot_sequence, Ordering::Relaxed);
        shared.journal_bytes.store(sequencer.journal_bytes(), Ordering::Relaxed);
        shared
            .next_deadline
            .store(engine.next_deadline().map_or(u64::MAX, |t| t.0), Ordering::Relaxed);

        let (queue, submissions) = bounded(queue_capacity);
        // A few batches in flight let the next fsync start while the engine applies the last batch.
        let (batches, batches_in) = bounded::<Batch>(4);
        let (spare_out, spare_in) = bounded::<Vec<Message>>(8);
        let (events_out, events_in) = bounded::<EventBatch>(1024);
        let (snapshot_out, snapshot_in) = bounded::<Box<Engine>>(1);

        let mut threads = Vec::new();
        let journaler = JournalerThread {
            sequencer,
            clock,
            submissions,
            batches,
            spare: spare_in,
            shared: Arc::clone(&shared),
            batch_max,
            tick_interval,
            on_journal_failure,
        };
        threads.push(spawn("surge-journal", move || journaler.run()));
        let applier = EngineThread {
            engine,
            batches: batches_in,
            spare: spare_out,
            events: events_out,
            snapshots: snapshot_out,
            shared: Arc::clone(&shared),
            snapshot_every,
            event_capacity: batch_max * 64,
        };
        threads.push(spawn("surge-engine", move || applier.run()));
        let snapshot_shared = Arc::clone(&shared);
        threads.push(spawn("surge-snapshot", move || {
            write_snapshots(&snapshots, &snapshot_in, &snapshot_shared);
        }));

        let pipeline =
            Pipeline { handle: Handle { queue, shared }, threads, events: Some(events_in) };
        Ok((pipeline, report))
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The stream of events, in order, from the moment it is taken. Taken once; whoever takes it
    /// must keep reading, or the engine waits for it (taken events are never dropped). Until it is
    /// taken, events are discarded.
    pub fn take_events(&mut self) -> Option<Receiver<EventBatch>> {
        let events = self.events.take();
        self.handle.shared.events_taken.store(events.is_some(), Ordering::Release);
        events
    }

    /// Stops accepting commands, finishes those already queued, writes a final snapshot and joins the
    /// threads.
    pub fn shutdown(mut self) {
        self.handle.shared.stopping.store(true, Ordering::Release);
        drop(self.events.take());
        // Wakes the sequencer at once, behind everything already queued. If it already stopped (a
        // journal failure), the send fails and there is nothing to wake.
        let _ = self.handle.queue.send(Message::Stop);
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a pipeline thread panicked");
            }
        }
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name.to_owned()).spawn(body).expect("spawn pipeline thread")
}

struct JournalerThread<J: Storage, C: Clock> {
    sequencer: Sequencer<J>,
    clock: C,
    submissions: Receiver<Message>,
    batches: Sender<Batch>,
    spare: Receiver<Vec<Message>>,
    shared: Arc<Shared>,
    batch_max: usize,
    tick_interval: Duration,
    on_journal_failure: JournalFailureHook,
}

impl<J: Storage, C: Clock> JournalerThread<J, C> {
    fn run(mut self) {
        // The sequence of the last `Expire` this thread injected; no new one until it is applied.
        let mut expire_in_flight = 0u64;
        let mut stopping = false;
        loop {
            let mut items =
                self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(self.batch_max));
            let first = if stopping {
                None
            } else {
                match self.submissions.recv_timeout(self.tick_interval) {
                    Ok(message) => Some(message),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            let now = self.clock.now();
            let deadline_due = now.0 >= self.shared.next_deadline.load(Ordering::Acquire)
                && self.shared.applied_sequence.load(Ordering::Acquire) >= expire_in_flight;
            if deadline_due && !stopping {
                items.push(Message::Command { command: Command::Expire, reply: None });
            }
            let mut commands = items.len();
            let mut next = first;
            loop {
                match next {
                    Some(Message::Stop) => stopping = true,
                    Some(message) => {
                        commands += message.command_count();
                        items.push(message);
                    }
                    None => {}
                }
                if commands >= self.batch_max {
                    break;
                }
                match self.submissions.try_recv() {
                    Ok(message) => next = Some(message),
                    Err(_) => break,
                }
            }
            if items.is_empty() {
                if stopping {
                    return;
                }
                continue;
            }

            let batch_first = self.sequencer.next_sequence();
            let mut at = Timestamp(0);
            for item in &items {
                match item {
                    Message::Command { command, reply } => {
                        let (sequence, stamped) = self.sequencer.append(now, command);
                        if reply.is_none() {
                            expire_in_flight = sequence.0;
                        }
                        at = stamped;
                    }
                    Message::Group { commands, .. } => {
                        for command in commands {
                            at = self.sequencer.append(now, command).1;
                        }
                    }
                    Message::Query(_) => {}
                    Message::Stop => unreachable!("Stop never enters a batch"),
                }
            }
            if self.sequencer.next_sequence() == batch_first {
                // Only reads: nothing to make durable.
                if self.batches.send(Batch { first: batch_first, at, items }).is_err() {
                    return;
                }
                continue;
            }
            match self.sequencer.commit() {
                Ok(stats) => {
                    self.shared.fsync_count.fetch_add(1, Ordering::Relaxed);
                    self.shared.fsync_ns_total.fetch_add(stats.sync_ns, Ordering::Relaxed);
                    self.shared.fsync_ns_last.store(stats.sync_ns, Ordering::Relaxed);
                }
                Err(error) => {
                    (self.on_journal_failure)(&error);
                    // The hook returned (tests): stop without acknowledging anything of this batch.
                    self.shared.stopping.store(true, Ordering::Release);
                    return;
                }
            }
            let last = self.sequencer.next_sequence().0 - 1;
            self.shared.durable_sequence.store(last, Ordering::Release);
            self.shared.journal_bytes.store(self.sequencer.journal_bytes(), Ordering::Relaxed);
            if self.batches.send(Batch { first: batch_first, at, items }).is_err() {
                return;
            }
        }
    }
}

struct EngineThread {
    engine: Engine,
    batches: Receiver<Batch>,
    spare: Sender<Vec<Message>>,
    events: Sender<EventBatch>,
    snapshots: Sender<Box<Engine>>,
    shared: Arc<Shared>,
    snapshot_every: u64,
    event_capacity: usize,
}

impl EngineThread {
    fn run(mut self) {
        let mut events: Vec<(Sequence, Event)> = Vec::with_capacity(self.event_capacity);
        let mut since_snapshot = 0u64;
        while let Ok(mut batch) = self.batches.recv() {
            // Every command of a batch carries the batch's stamp; the sequencer guarantees it.
            let mut sequence = batch.first;
            let at = batch.at;
            for item in batch.items.drain(..) {
                match item {
                    Message::Command { command, reply } => {
                        let outcome = self.apply(sequence, at, &command, &mut events);
                        if let Some(reply) = reply {
                            // A producer that gave up waiting is no error: the command happened.
                            let _ = reply.send(Applied { sequence, at, outcome });
                        }
                        sequence = Sequence(sequence.0 + 1);
                    }
                    Message::Group { commands, mut results, reply } => {
                        for command in &commands {
                            let outcome = self.apply(sequence, at, command, &mut events);
                            results.push(Applied { sequence, at, outcome });
                            sequence = Sequence(sequence.0 + 1);
                        }
                        let _ = reply.send(results);
                    }
                    Message::Query(read) => read(&self.engine),
                    Message::Stop => unreachable!("Stop never enters a batch"),
                }
            }
            since_snapshot += sequence.0 - batch.first.0;
            self.shared.applied_sequence.store(sequence.0 - 1, Ordering::Release);
            let deadline = self.engine.next_deadline().map_or(u64::MAX, |t| t.0);
            self.shared.next_deadline.store(deadline, Ordering::Release);
            // Every batch is handed on, even without events: its `last_sequence` tells the reader
            // that it has seen everything the engine did so far (the gateway waits for that before
            // answering a read of orders).
            self.publish(&mut events, true);
            let _ = self.spare.try_send(batch.items);
            if self.snapshot_every > 0 && since_snapshot >= self.snapshot_every {
                // The clone is the only pause snapshots cost the engine; encoding and fsync happen on
                // the snapshot thread. A snapshot still being written means this one is skipped.
                if self.snapshots.try_send(Box::new(self.engine.clone())).is_ok() {
                    since_snapshot = 0;
                }
            }
        }
        // Shutdown: leave a snapshot of the final state so the next start replays nothing.
        if since_snapshot > 0 {
            let _ = self.snapshots.send(Box::new(self.engine));
        }
    }

    fn apply(
        &mut self,
        sequence: Sequence,
        at: Timestamp,
        command: &Command,
        events: &mut Vec<(Sequence, Event)>,
    ) -> Outcome {
        // Hand events on before the buffer would have to grow (an `Expire` can emit many).
        if events.len() + EVENTS_PER_COMMAND_MAX > events.capacity() {
            self.publish(events, false);
        }
        self.engine.apply(sequence, at, command, &mut Sequenced { sequence, events })
    }

    /// Hands the events gathered so far to the reader, if one took them; with `even_empty` also
    /// when there are none.
    fn publish(&mut self, events: &mut Vec<(Sequence, Event)>, even_empty: bool) {
        if events.is_empty() && !even_empty {
            return;
        }
        if self.shared.events_taken.load(Ordering::Acquire) {
            let batch = EventBatch {
                last_sequence: self.engine.last_sequence(),
                events: if events.is_empty() {
                    Vec::new()
                } else {
                    std::mem::replace(events, Vec::with_capacity(self.event_capacity))
                },
            };
            if self.events.send(batch).is_err() {
                // The reader is gone (shutdown): nobody wants events any more.
                self.shared.events_taken.store(false, Ordering::Release);
            }
        }
        events.clear();
    }
}

/// Events one non-`Expire` command can emit: per line a stock change and an availability change,
/// plus one order event.
const EVENTS_PER_COMMAND_MAX: usize = 2 * surge_engine::limits::LINES_PER_ORDER_MAX + 1;

fn write_snapshots<S: Storage>(storage: &S, engines: &Receiver<Box<Engine>>, shared: &Shared) {
    let mut bytes = Vec::new();
    while let Ok(engine) = engines.recv() {
        engine.encode_snapshot(&mut bytes);
        let sequence = engine.last_sequence().0;
        match surge_journal::write_snapshot(storage, sequence, engine.last_at().0, &bytes) {
            Ok(name) => {
                shared.snapshot_sequence.store(sequence, Ordering::Relaxed);
                tracing::info!(%name, sequence, bytes = bytes.len(), "snapshot written");
            }
            // A failed snapshot loses nothing: the journal still holds every command.
            Err(error) => tracing::error!(%error, sequence, "snapshot failed"),
        }
    }
}
