//! The threaded pipeline: many producers, one sequencer-journaler, one engine thread, one journal
//! follower.
//!
//! ```text
//!  producers ──try_submit──▶ [bounded queue] ──▶ sequencer + journal ──batch──▶ engine ──▶ outcomes
//!  (gateway handlers)                            (stamp, append, 1 fsync)     (apply)    to producers
//!  readers ───query────────────────────────────────────────────────────────────▶ (answer)
//!
//!  journal (durable records) ──▶ follower: its own engine, replays the journal a moment behind
//!                                  ├─▶ Outputs: command, outcome, attachment, events ─▶ projections
//!                                  └─▶ every N commands: encode and write a snapshot of itself
//! ```
//!
//! A producer learns the outcome of its command only after the batch holding it was fsynced and
//! applied, so an acknowledged command survives any crash. Batches form by themselves: while one
//! fsync runs, new submissions queue up and go into the next batch, so the batch size grows with
//! load and the fsync cost is shared (group commit).
//!
//! The engine thread does nothing but apply and answer: it discards events and never pauses for a
//! snapshot. Everything the rest of the system learns from the engine (order transitions, stock
//! changes, the outcome of a checkout whose client went away) comes from the follower, which reads
//! the durable journal back and applies it to a second engine. Replay is exact (the engine is a
//! deterministic function of the journal), so its outcomes are the engine thread's, and the same
//! code serves a consumer catching up after a crash and one following live traffic: both start at
//! the sequence the consumer stored and read forward. The follower never holds the engine thread
//! back: when its consumer is slow it falls behind and catches up, and the journal is the buffer.
//!
//! Reads ([`Handle::query`]) go straight to the engine thread, between batches, and never wait for
//! an fsync: they see every command acknowledged before they were sent, and never one that is not
//! durable, because the engine thread only ever applies durable batches.
//!
//! Why crossbeam channels and not the `disruptor` crate: disruptor's consumers busy-spin, and on the
//! two-core machines this runs on, two spinning consumers would take both cores from the gateway.
//! The blocking channels park idle threads; the batch hand-off costs one channel operation per
//! batch, not per command. BENCHMARKS.md has the figures.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use surge_engine::{
    Command, DiscardEvents, Engine, Event, Limits, Outcome, Query, Sequence, Sequenced, Timestamp,
};
use surge_journal::{FsStorage, JournalConfig, JournalTail, Storage};
use tokio::sync::oneshot;

use crate::durable::{
    archive_covered, decode_payload, restore, ArchiveReport, DurableError, RestoreReport, Sequencer,
};

/// Tunables of the pipeline, with defaults for a production node.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub limits: Limits,
    /// Submissions waiting for the sequencer. When full, `try_submit` answers `Overloaded`: this is
    /// the bounded queue the gateway sheds load at.
    pub queue_capacity: usize,
    /// Reads waiting for the engine thread; when full, `query` answers `Overloaded`.
    pub query_capacity: usize,
    /// The most commands in one journal batch (one fsync).
    pub batch_max: usize,
    /// Commands between snapshots (written by the follower); 0 disables them, except the one at
    /// shutdown.
    pub snapshot_every: u64,
    /// How often the sequencer checks for reservation deadlines that passed.
    pub tick_interval: Duration,
    pub journal: JournalConfig,
    /// Where a consumer of [`Output`]s stands: the follower hands on every command after this
    /// sequence, also those before the start (a consumer that stored how far it got catches up on
    /// exactly what it missed). `None`: no outputs; the follower only writes snapshots.
    pub follow_from: Option<Sequence>,
    /// The most commands in one [`Output`].
    pub output_commands_max: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            limits: Limits::PRODUCTION,
            queue_capacity: 65_536,
            query_capacity: 4_096,
            batch_max: 4_096,
            snapshot_every: 1_000_000,
            tick_interval: Duration::from_millis(50),
            journal: JournalConfig::default(),
            follow_from: None,
            output_commands_max: 4_096,
        }
    }
}

/// The largest attachment a command may carry into the journal (a record holds at most 1 MiB).
pub const ATTACHMENT_BYTES_MAX: usize = 64 * 1024;

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
    /// The attachment is longer than [`ATTACHMENT_BYTES_MAX`]; nothing was queued.
    #[error("the attachment is too large for a journal record")]
    AttachmentTooLarge,
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
    /// One command; `reply` is `None` for the `Expire` the sequencer injects itself. The attachment
    /// goes into the journal record and is dropped there: the engine never reads it.
    Command {
        command: Command,
        attachment: Option<Vec<u8>>,
        reply: Option<oneshot::Sender<Applied>>,
    },
    /// Commands that go into the same batch, in order, answered together with one wake-up. `results`
    /// comes with its capacity from the producer, so the engine thread does not allocate for it.
    Group { commands: Vec<Command>, results: Vec<Applied>, reply: oneshot::Sender<Vec<Applied>> },
    /// Sent by `shutdown`: finish what is queued, then stop.
    Stop,
}

impl Message {
    fn command_count(&self) -> usize {
        match self {
            Message::Command { .. } => 1,
            Message::Group { commands, .. } => commands.len(),
            Message::Stop => 0,
        }
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Command { command, .. } => f.debug_tuple("Command").field(command).finish(),
            Message::Group { commands, .. } => {
                f.debug_tuple("Group").field(&commands.len()).finish()
            }
            Message::Stop => f.write_str("Stop"),
        }
    }
}

/// A read on its way to the engine thread, which fills the query's buffers and sends it back.
struct QueryMessage {
    query: Query,
    reply: oneshot::Sender<Query>,
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
    /// Set by the journaler when it has made its last batch durable: the follower then reads to
    /// `durable_sequence`, writes the final snapshot and stops.
    journal_closed: AtomicBool,
    applied_sequence: AtomicU64,
    durable_sequence: AtomicU64,
    followed_sequence: AtomicU64,
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
    /// How far the follower has replayed the journal (and handed outputs on).
    pub followed_sequence: u64,
    pub journal_bytes: u64,
    pub snapshot_sequence: u64,
    pub fsync_count: u64,
    pub fsync_ns_total: u64,
    pub fsync_ns_last: u64,
    pub queue_len: usize,
    pub queue_capacity: usize,
}

/// A cheap, clonable way to submit commands and read the engine.
#[derive(Clone, Debug)]
pub struct Handle {
    queue: Sender<Message>,
    queries: Sender<QueryMessage>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QueryMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("QueryMessage").field(&self.query).finish()
    }
}

impl Handle {
    /// Queues a command, or answers `Overloaded` at once when the queue is full.
    pub fn try_submit(&self, command: Command) -> Result<Ticket, SubmitError> {
        self.send(command, None, false)
    }

    /// [`Handle::try_submit`] with an attachment journaled in the command's record: bytes the
    /// engine ignores and the follower's consumers read back with the command's outcome.
    pub fn try_submit_with(
        &self,
        command: Command,
        attachment: Vec<u8>,
    ) -> Result<Ticket, SubmitError> {
        if attachment.len() > ATTACHMENT_BYTES_MAX {
            return Err(SubmitError::AttachmentTooLarge);
        }
        self.send(command, Some(attachment), false)
    }

    /// Queues a command, waiting for room. For load generators and tools, not for request handlers.
    pub fn submit(&self, command: Command) -> Result<Ticket, SubmitError> {
        self.send(command, None, true)
    }

    fn send(
        &self,
        command: Command,
        attachment: Option<Vec<u8>>,
        wait_for_room: bool,
    ) -> Result<Ticket, SubmitError> {
        let (reply, ticket) = oneshot::channel();
        self.enqueue(Message::Command { command, attachment, reply: Some(reply) }, wait_for_room)?;
        Ok(Ticket { reply: ticket })
    }

    /// Puts a message on the queue: waiting for room, or answering `Overloaded` when it is full.
    fn enqueue(&self, message: Message, wait_for_room: bool) -> Result<(), SubmitError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        if wait_for_room {
            return self.queue.send(message).map_err(|_| SubmitError::Stopped);
        }
        self.queue.try_send(message).map_err(|error| match error {
            TrySendError::Full(_) => SubmitError::Overloaded,
            TrySendError::Disconnected(_) => SubmitError::Stopped,
        })
    }

    fn send_group(
        &self,
        commands: Vec<Command>,
        wait_for_room: bool,
    ) -> Result<GroupTicket, SubmitError> {
        let (reply, ticket) = oneshot::channel();
        let results = Vec::with_capacity(commands.len());
        self.enqueue(Message::Group { commands, results, reply }, wait_for_room)?;
        Ok(GroupTicket { reply: ticket })
    }

    /// Queues commands that are journaled in one batch and answered together, waiting for room.
    /// For bulk producers (stock imports, load generators): one wake-up per group instead of one per
    /// command.
    pub fn submit_group(&self, commands: Vec<Command>) -> Result<GroupTicket, SubmitError> {
        self.send_group(commands, true)
    }

    /// [`Handle::submit_group`] for request handlers and async producers: answers `Overloaded` at
    /// once when the queue is full instead of waiting for room.
    pub fn try_submit_group(&self, commands: Vec<Command>) -> Result<GroupTicket, SubmitError> {
        self.send_group(commands, false)
    }

    /// The sequence of the last command the journal made durable (0 before the first), read from
    /// a counter without asking the engine thread. Every command acknowledged so far is at or
    /// below it, and so is every command the follower has handed on.
    pub fn durable_sequence(&self) -> Sequence {
        Sequence(self.shared.durable_sequence.load(Ordering::Acquire))
    }

    /// Reads the engine's state: the engine thread answers `query` between two batches and sends
    /// it back filled. It sees every command acknowledged before the call (an acknowledgement
    /// leaves the engine thread after the command is applied) and none that is not yet durable; it
    /// does not wait for an fsync. Answers `Overloaded` when the read queue is full.
    pub async fn query(&self, query: Query) -> Result<Query, SubmitError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let (reply, answer) = oneshot::channel();
        match self.queries.try_send(QueryMessage { query, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Stopped),
        }
        answer.await.map_err(|_| SubmitError::Stopped)
    }

    /// [`Handle::query`] for a thread that may block.
    pub fn query_blocking(&self, query: Query) -> Result<Query, SubmitError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let (reply, answer) = oneshot::channel();
        self.queries.send(QueryMessage { query, reply }).map_err(|_| SubmitError::Stopped)?;
        answer.blocking_recv().map_err(|_| SubmitError::Stopped)
    }

    pub fn stats(&self) -> PipelineStats {
        let shared = &self.shared;
        PipelineStats {
            applied_sequence: shared.applied_sequence.load(Ordering::Relaxed),
            durable_sequence: shared.durable_sequence.load(Ordering::Relaxed),
            followed_sequence: shared.followed_sequence.load(Ordering::Relaxed),
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

// ----- Outputs -----

/// One command as the follower applied it: what it was, what the engine answered, and where its
/// events and attachment are in the [`Output`] that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedCommand {
    pub sequence: Sequence,
    pub at: Timestamp,
    pub command: Command,
    pub outcome: Outcome,
    events: (u32, u32),
    attachment: Option<(u32, u32)>,
}

/// Consecutive commands of the journal as applied by the follower, with their outcomes, events
/// and attachments. Buffers are reused: hand a consumed output back with [`Outputs::recycle`].
#[derive(Debug, Default)]
pub struct Output {
    through: Sequence,
    commands: Vec<AppliedCommand>,
    events: Vec<(Sequence, Event)>,
    attachments: Vec<u8>,
}

impl Output {
    fn with_capacity(commands: usize) -> Output {
        Output {
            through: Sequence(0),
            commands: Vec::with_capacity(commands),
            events: Vec::with_capacity(commands * EVENTS_PER_COMMAND_MAX),
            attachments: Vec::with_capacity(commands * 256),
        }
    }

    /// Empties the output, keeping its buffers.
    pub fn clear(&mut self) {
        // An empty output covers nothing: projecting it must not move anyone's watermark.
        self.through = Sequence(0);
        self.commands.clear();
        self.events.clear();
        self.attachments.clear();
    }

    /// The sequence of the last command here: whoever consumed this output has seen every command
    /// of the journal through it.
    pub fn through(&self) -> Sequence {
        self.through
    }

    /// The commands, in sequence order.
    pub fn commands(&self) -> &[AppliedCommand] {
        &self.commands
    }

    /// Every event of every command here, in order, with its command's sequence.
    pub fn events(&self) -> &[(Sequence, Event)] {
        &self.events
    }

    /// The events of one command of this output.
    pub fn events_of(&self, command: &AppliedCommand) -> &[(Sequence, Event)] {
        let (start, end) = command.events;
        &self.events[start as usize..end as usize]
    }

    /// The attachment journaled with one command of this output, if it had one.
    pub fn attachment_of(&self, command: &AppliedCommand) -> Option<&[u8]> {
        command.attachment.map(|(start, end)| &self.attachments[start as usize..end as usize])
    }

    /// Applies one journaled command to `engine` and appends it, its outcome, its events and its
    /// attachment. The follower builds outputs this way; so can a simulator or a test that replays
    /// a journal with an engine of its own.
    pub fn push(
        &mut self,
        sequence: Sequence,
        at: Timestamp,
        command: Command,
        attachment: Option<&[u8]>,
        engine: &mut Engine,
    ) {
        let events_start = u32::try_from(self.events.len()).expect("events of one output fit u32");
        let outcome = engine.apply(
            sequence,
            at,
            &command,
            &mut Sequenced { sequence, events: &mut self.events },
        );
        let events_end = u32::try_from(self.events.len()).expect("events of one output fit u32");
        let attachment = attachment.map(|bytes| {
            let start = u32::try_from(self.attachments.len()).expect("attachments fit u32");
            self.attachments.extend_from_slice(bytes);
            (start, start + u32::try_from(bytes.len()).expect("attachments fit u32"))
        });
        self.commands.push(AppliedCommand {
            sequence,
            at,
            command,
            outcome,
            events: (events_start, events_end),
            attachment,
        });
        self.through = sequence;
    }
}

/// The follower's stream of outputs, in journal order. Whoever takes it should keep reading: the
/// follower waits for room (it falls behind; the engine thread does not).
#[derive(Debug)]
pub struct Outputs {
    receiver: Receiver<Output>,
    spare: Sender<Output>,
}

impl Outputs {
    /// The next output; `None` once the pipeline stopped and every output was delivered.
    pub fn recv(&self) -> Option<Output> {
        self.receiver.recv().ok()
    }

    /// The next output, waiting at most `timeout`: `Err(true)` when the stream ended, `Err(false)`
    /// when the time ran out.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Output, bool> {
        self.receiver.recv_timeout(timeout).map_err(|error| match error {
            RecvTimeoutError::Timeout => false,
            RecvTimeoutError::Disconnected => true,
        })
    }

    /// The next output if one is waiting.
    pub fn try_recv(&self) -> Option<Output> {
        self.receiver.try_recv().ok()
    }

    /// Hands a consumed output back so its buffers are reused.
    pub fn recycle(&self, mut output: Output) {
        output.clear();
        let _ = self.spare.try_send(output);
    }
}

// ----- The pipeline -----

/// The running pipeline. Dropping it without [`Pipeline::shutdown`] leaves the threads running.
#[derive(Debug)]
pub struct Pipeline {
    handle: Handle,
    threads: Vec<JoinHandle<()>>,
    outputs: Option<Outputs>,
    archiver: Option<Archiver>,
}

/// One pass of retention over given storages: the consumer's stored sequence and the follower's.
type ArchivePass =
    dyn Fn(Option<Sequence>, Sequence) -> Result<ArchiveReport, DurableError> + Send + Sync;

/// Journal retention for a running pipeline: moves the journal segments that no reader needs any
/// more into the archive directory ([`archive_covered`]). Cheap to clone; passes run one at a
/// time, and each blocks (renames and directory syncs), so call it where a thread may block.
#[derive(Clone)]
pub struct Archiver {
    pass: Arc<ArchivePass>,
    running: Arc<std::sync::Mutex<()>>,
    shared: Arc<Shared>,
    /// Whether the pipeline hands outputs to a consumer, whose stored sequence then bounds what
    /// may go.
    consumer: bool,
}

impl std::fmt::Debug for Archiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver").field("consumer", &self.consumer).finish_non_exhaustive()
    }
}

impl Archiver {
    /// Runs one pass. `consumer_stored` is the sequence through which the consumer of the
    /// follower's outputs has *durably* stored what it read (the order projection's watermark
    /// after a synced write): the follower of the next start is restored to it, so nothing it
    /// needs may go. `None` only for a pipeline without a consumer.
    ///
    /// # Panics
    /// When the pipeline has a consumer and `consumer_stored` is `None`: retention would then
    /// ignore the consumer, a bug in the caller.
    pub fn archive(
        &self,
        consumer_stored: Option<Sequence>,
    ) -> Result<ArchiveReport, DurableError> {
        assert!(
            consumer_stored.is_some() || !self.consumer,
            "the pipeline has a consumer: retention needs its stored sequence"
        );
        // A poisoned lock only means an earlier pass panicked; the next one starts afresh.
        let _one_at_a_time = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let followed = Sequence(self.shared.followed_sequence.load(Ordering::Acquire));
        (self.pass)(consumer_stored, followed)
    }
}

/// What happens when the journal fails. The default stops the process: a failed fsync may have lost
/// acknowledged-to-the-kernel writes, and nothing may be acknowledged to a client after it.
pub type JournalFailureHook = Arc<dyn Fn(&DurableError) + Send + Sync>;

fn stop_process(error: &DurableError) {
    tracing::error!(%error, "journal write failed; stopping the process to keep acknowledged commands safe");
    std::process::abort();
}

/// A pipeline whose engine is restored but which has not started: the first half of a start,
/// which only reads, so that a start it refuses changes no file. [`Restored::start`] is the second.
pub struct Restored {
    report: RestoreReport,
    limits: Limits,
    start: Box<StartSecondHalf>,
}

/// The second half of a start, over the storages the first half read.
type StartSecondHalf =
    dyn FnOnce(PipelineConfig) -> Result<(Pipeline, RestoreReport), DurableError> + Send;

impl std::fmt::Debug for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restored").field("report", &self.report).finish_non_exhaustive()
    }
}

impl Restored {
    /// What the restore found: the snapshot, the records replayed, a torn tail (not cut yet).
    pub fn report(&self) -> &RestoreReport {
        &self.report
    }

    /// The second half of a start: restores the follower to `config.follow_from` (refusing a
    /// consumer ahead of the journal, or one whose records the journal no longer holds), and only
    /// then cuts a torn tail, opens the journal for appending and starts the threads.
    ///
    /// # Panics
    /// When `config.limits` are not the limits the engine was restored with.
    pub fn start(self, config: PipelineConfig) -> Result<(Pipeline, RestoreReport), DurableError> {
        assert_eq!(
            config.limits, self.limits,
            "a pipeline starts with the limits it restored with"
        );
        (self.start)(config)
    }
}

/// Everything the second half of a start needs from the first.
struct Parts<J, S, C> {
    journal: J,
    snapshots: S,
    clock: C,
    on_journal_failure: JournalFailureHook,
    archive_pass: Option<Arc<ArchivePass>>,
    recovery: surge_journal::Recovery,
    engine: Engine,
    report: RestoreReport,
}

impl Pipeline {
    /// Restores state from `data_dir` (`journal/` and `snapshots/` below it) and starts the threads,
    /// with retention into `archive/` beside the journal ([`Pipeline::archiver`]):
    /// [`Pipeline::restore_dir`], then [`Restored::start`].
    pub fn open_dir(
        data_dir: &std::path::Path,
        config: PipelineConfig,
    ) -> Result<(Pipeline, RestoreReport), DurableError> {
        Self::restore_dir(data_dir, config.limits)?.start(config)
    }

    /// The first half of [`Pipeline::open_dir`]: scans the journal and restores the engine from the
    /// newest valid snapshot and the records after it, changing nothing (not even a torn tail);
    /// refuses damage and a journal that ends before the newest snapshot.
    pub fn restore_dir(
        data_dir: &std::path::Path,
        limits: Limits,
    ) -> Result<Restored, DurableError> {
        let open =
            |dir: &std::path::Path| FsStorage::open(dir).map_err(surge_journal::JournalError::from);
        let journal = open(&data_dir.join("journal"))?;
        let snapshots = open(&data_dir.join("snapshots"))?;
        // Opened by each pass rather than here, so that a start that refuses creates nothing.
        let archive_dir = data_dir.join("archive");
        let (pass_journal, pass_snapshots) = (journal.clone(), snapshots.clone());
        let pass: Arc<ArchivePass> = Arc::new(move |consumer, followed| {
            let archive = open(&archive_dir)?;
            archive_covered(&pass_journal, &archive, &pass_snapshots, consumer, followed)
        });
        let hook: JournalFailureHook = Arc::new(stop_process);
        Self::restore_parts(limits, journal, snapshots, SystemClock, hook, Some(pass))
    }

    /// Restores state from the given storages and starts the threads. `journal` is cloned for the
    /// follower's reader: both clones must name the same files. Without retention
    /// ([`Pipeline::archiver`] is `None`). [`Pipeline::restore_storages`], then
    /// [`Restored::start`].
    pub fn start<J: Storage + Clone, S: Storage, C: Clock>(
        config: PipelineConfig,
        journal: J,
        snapshots: S,
        clock: C,
        on_journal_failure: JournalFailureHook,
    ) -> Result<(Pipeline, RestoreReport), DurableError> {
        Self::restore_storages(config.limits, journal, snapshots, clock, on_journal_failure)?
            .start(config)
    }

    /// The first half of [`Pipeline::start`], which only reads (see [`Pipeline::restore_dir`]).
    pub fn restore_storages<J: Storage + Clone, S: Storage, C: Clock>(
        limits: Limits,
        journal: J,
        snapshots: S,
        clock: C,
        on_journal_failure: JournalFailureHook,
    ) -> Result<Restored, DurableError> {
        Self::restore_parts(limits, journal, snapshots, clock, on_journal_failure, None)
    }

    /// [`Pipeline::start`] with journal retention: [`Pipeline::archiver`] moves the segments no
    /// reader needs from `journal` into `archive`, a directory on the same file system.
    pub fn start_archiving<J: Storage + Clone, S: Storage + Clone, C: Clock>(
        config: PipelineConfig,
        journal: J,
        snapshots: S,
        archive: J,
        clock: C,
        on_journal_failure: JournalFailureHook,
    ) -> Result<(Pipeline, RestoreReport), DurableError> {
        let (pass_journal, pass_snapshots) = (journal.clone(), snapshots.clone());
        let pass: Arc<ArchivePass> = Arc::new(move |consumer, followed| {
            archive_covered(&pass_journal, &archive, &pass_snapshots, consumer, followed)
        });
        let limits = config.limits;
        Self::restore_parts(limits, journal, snapshots, clock, on_journal_failure, Some(pass))?
            .start(config)
    }

    fn restore_parts<J: Storage + Clone, S: Storage, C: Clock>(
        limits: Limits,
        journal: J,
        snapshots: S,
        clock: C,
        on_journal_failure: JournalFailureHook,
        archive_pass: Option<Arc<ArchivePass>>,
    ) -> Result<Restored, DurableError> {
        // Decide first, then repair: everything that may refuse the start reads only, so a refused
        // start leaves the journal as it found it (a torn tail included, which may be the evidence
        // an operator needs), and only in the second half is the torn tail cut.
        let recovery = surge_journal::scan(&journal)?;
        let (engine, report) = restore(limits, &journal, &snapshots, &recovery, None)?;
        let parts = Parts {
            journal,
            snapshots,
            clock,
            on_journal_failure,
            archive_pass,
            recovery,
            engine,
            report: report.clone(),
        };
        Ok(Restored { report, limits, start: Box::new(move |config| Self::launch(config, parts)) })
    }

    fn launch<J: Storage + Clone, S: Storage, C: Clock>(
        config: PipelineConfig,
        parts: Parts<J, S, C>,
    ) -> Result<(Pipeline, RestoreReport), DurableError> {
        let Parts {
            journal,
            snapshots,
            clock,
            on_journal_failure,
            archive_pass,
            recovery,
            engine,
            report,
        } = parts;
        let PipelineConfig {
            limits,
            queue_capacity,
            query_capacity,
            batch_max,
            snapshot_every,
            tick_interval,
            journal: journal_config,
            follow_from,
            output_commands_max,
        } = config;
        // The follower starts where its consumer stands: restored separately when that is behind
        // the journal's end (a crash, or a consumer that lags), a copy otherwise.
        let follower_engine = match follow_from {
            Some(from) if from > engine.last_sequence() => {
                return Err(DurableError::ConsumerAhead {
                    consumer: from.0,
                    journal: engine.last_sequence().0,
                })
            }
            Some(from) if from < engine.last_sequence() => {
                match restore(limits, &journal, &snapshots, &recovery, Some(from)) {
                    Ok((follower, _)) => follower,
                    Err(DurableError::Gap { snapshot, first }) => {
                        return Err(DurableError::ConsumerBehind {
                            consumer: from.0,
                            snapshot,
                            first,
                        })
                    }
                    Err(error) => return Err(error),
                }
            }
            _ => engine.clone(),
        };
        surge_journal::repair(&journal, &recovery)?;
        let sequencer = Sequencer::open(journal.clone(), journal_config, &recovery, &engine)?;
        let tail = JournalTail::open(journal, follower_engine.last_sequence().0 + 1)?;
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(segment = %torn.segment, offset = torn.offset, bytes = torn.bytes_cut, "cut a torn record at the end of the journal");
        }

        let shared = Arc::new(Shared::default());
        let applied = engine.last_sequence().0;
        shared.applied_sequence.store(applied, Ordering::Relaxed);
        shared.durable_sequence.store(applied, Ordering::Relaxed);
        shared.followed_sequence.store(follower_engine.last_sequence().0, Ordering::Relaxed);
        shared.snapshot_sequence.store(report.snapshot_sequence, Ordering::Relaxed);
        shared.journal_bytes.store(sequencer.journal_bytes(), Ordering::Relaxed);
        shared
            .next_deadline
            .store(engine.next_deadline().map_or(u64::MAX, |t| t.0), Ordering::Relaxed);

        let (queue, submissions) = bounded(queue_capacity);
        let (queries, query_inbox) = bounded(query_capacity);
        // A few batches in flight let the next fsync start while the engine applies the last batch.
        let (batches, batches_in) = bounded::<Batch>(4);
        let (spare_out, spare_in) = bounded::<Vec<Message>>(8);
        // One pending wake is enough: the follower reads up to the durable sequence it finds.
        let (wake, woken) = bounded::<()>(1);
        let (outputs, consumer) = match follow_from {
            Some(_) => {
                let (output_out, output_in) = bounded::<Output>(4);
                let (spare_output_out, spare_output_in) = bounded::<Output>(8);
                (
                    Some((output_out, spare_output_in)),
                    Some(Outputs { receiver: output_in, spare: spare_output_out }),
                )
            }
            None => (None, None),
        };

        let mut threads = Vec::new();
        let journaler = JournalerThread {
            sequencer,
            clock,
            submissions,
            batches,
            spare: spare_in,
            wake: wake.clone(),
            shared: Arc::clone(&shared),
            batch_max,
            tick_interval,
            on_journal_failure: Arc::clone(&on_journal_failure),
        };
        threads.push(spawn("surge-journal", move || journaler.run()));
        let applier = EngineThread {
            engine,
            batches: batches_in,
            queries: query_inbox,
            spare: spare_out,
            shared: Arc::clone(&shared),
        };
        threads.push(spawn("surge-engine", move || applier.run()));
        let follower = FollowerThread {
            engine: follower_engine,
            tail,
            snapshots,
            woken,
            outputs,
            shared: Arc::clone(&shared),
            snapshot_every,
            since_snapshot: 0,
            output_commands_max,
            idle_output: None,
            snapshot_bytes: Vec::new(),
            on_failure: on_journal_failure,
        };
        threads.push(spawn("surge-follower", move || follower.run()));

        let archiver = archive_pass.map(|pass| Archiver {
            pass,
            running: Arc::default(),
            shared: Arc::clone(&shared),
            consumer: follow_from.is_some(),
        });
        let pipeline = Pipeline {
            handle: Handle { queue, queries, shared },
            threads,
            outputs: consumer,
            archiver,
        };
        Ok((pipeline, report))
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Journal retention, when the pipeline was started with an archive ([`Pipeline::open_dir`],
    /// [`Pipeline::start_archiving`]).
    pub fn archiver(&self) -> Option<Archiver> {
        self.archiver.clone()
    }

    /// The follower's outputs (with [`PipelineConfig::follow_from`]), taken once.
    pub fn take_outputs(&mut self) -> Option<Outputs> {
        self.outputs.take()
    }

    /// Stops accepting commands, finishes those already queued, lets the follower write the final
    /// snapshot and hand on its last outputs, and joins the threads. A consumer still holding the
    /// outputs must keep reading until they end, or this waits for it.
    pub fn shutdown(mut self) {
        self.handle.shared.stopping.store(true, Ordering::Release);
        drop(self.outputs.take());
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

// ----- The sequencer-journaler thread -----

struct JournalerThread<J: Storage, C: Clock> {
    sequencer: Sequencer<J>,
    clock: C,
    submissions: Receiver<Message>,
    batches: Sender<Batch>,
    spare: Receiver<Vec<Message>>,
    wake: Sender<()>,
    shared: Arc<Shared>,
    batch_max: usize,
    tick_interval: Duration,
    on_journal_failure: JournalFailureHook,
}

impl<J: Storage, C: Clock> JournalerThread<J, C> {
    fn run(mut self) {
        self.journal();
        // Whatever ended the loop, no batch follows: the follower may finish.
        self.shared.journal_closed.store(true, Ordering::Release);
        let _ = self.wake.try_send(());
    }

    fn journal(&mut self) {
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
                items.push(Message::Command {
                    command: Command::Expire,
                    attachment: None,
                    reply: None,
                });
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
            for item in &mut items {
                match item {
                    Message::Command { command, attachment, reply } => {
                        let (sequence, stamped) =
                            self.sequencer.append_with(now, command, attachment.as_deref());
                        // Journaled; the engine has no use for it.
                        *attachment = None;
                        if reply.is_none() {
                            expire_in_flight = sequence.0;
                        }
                        at = stamped;
                    }
                    Message::Group { commands, .. } => {
                        for command in commands.iter() {
                            at = self.sequencer.append(now, command).1;
                        }
                    }
                    Message::Stop => unreachable!("Stop never enters a batch"),
                }
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
            let _ = self.wake.try_send(());
            if self.batches.send(Batch { first: batch_first, at, items }).is_err() {
                return;
            }
        }
    }
}

// ----- The engine thread -----

struct EngineThread {
    engine: Engine,
    batches: Receiver<Batch>,
    queries: Receiver<QueryMessage>,
    spare: Sender<Vec<Message>>,
    shared: Arc<Shared>,
}

impl EngineThread {
    fn run(mut self) {
        let mut queries_open = true;
        loop {
            if queries_open {
                crossbeam_channel::select! {
                    recv(self.batches) -> batch => match batch {
                        Ok(batch) => self.apply(batch),
                        Err(_) => break,
                    },
                    recv(self.queries) -> query => match query {
                        Ok(query) => self.answer(query),
                        Err(_) => queries_open = false,
                    },
                }
            } else {
                match self.batches.recv() {
                    Ok(batch) => self.apply(batch),
                    Err(_) => break,
                }
            }
        }
    }

    fn answer(&self, mut message: QueryMessage) {
        self.engine.answer(&mut message.query);
        // A reader that gave up is no error.
        let _ = message.reply.send(message.query);
    }

    fn apply(&mut self, mut batch: Batch) {
        // Every command of a batch carries the batch's stamp; the sequencer guarantees it.
        let mut sequence = batch.first;
        let at = batch.at;
        for item in batch.items.drain(..) {
            match item {
                Message::Command { command, reply, .. } => {
                    let outcome = self.engine.apply(sequence, at, &command, &mut DiscardEvents);
                    if let Some(reply) = reply {
                        // A producer that gave up waiting is no error: the command happened.
                        let _ = reply.send(Applied { sequence, at, outcome });
                    }
                    sequence = Sequence(sequence.0 + 1);
                }
                Message::Group { commands, mut results, reply } => {
                    for command in &commands {
                        let outcome = self.engine.apply(sequence, at, command, &mut DiscardEvents);
                        results.push(Applied { sequence, at, outcome });
                        sequence = Sequence(sequence.0 + 1);
                    }
                    let _ = reply.send(results);
                }
                Message::Stop => unreachable!("Stop never enters a batch"),
            }
        }
        self.shared.applied_sequence.store(sequence.0 - 1, Ordering::Release);
        let deadline = self.engine.next_deadline().map_or(u64::MAX, |t| t.0);
        self.shared.next_deadline.store(deadline, Ordering::Release);
        let _ = self.spare.try_send(batch.items);
    }
}

// ----- The follower thread -----

/// Events one non-`Expire` command can emit: per line a stock change and an availability change,
/// plus one order event.
const EVENTS_PER_COMMAND_MAX: usize = 2 * surge_engine::limits::LINES_PER_ORDER_MAX + 1;

/// How long an idle follower sleeps before looking at the durable sequence again, in case a wake
/// was coalesced away.
const FOLLOWER_IDLE_WAIT: Duration = Duration::from_millis(100);

struct FollowerThread<J: Storage, S: Storage> {
    engine: Engine,
    tail: JournalTail<J>,
    snapshots: S,
    woken: Receiver<()>,
    /// Where outputs go and where consumed ones come back; `None` without a consumer (or once it
    /// went away).
    outputs: Option<(Sender<Output>, Receiver<Output>)>,
    shared: Arc<Shared>,
    snapshot_every: u64,
    since_snapshot: u64,
    output_commands_max: usize,
    /// An output taken for a chunk that brought no command, kept for the next.
    idle_output: Option<Output>,
    snapshot_bytes: Vec<u8>,
    on_failure: JournalFailureHook,
}

impl<J: Storage, S: Storage> FollowerThread<J, S> {
    fn run(mut self) {
        loop {
            // Read the flag before the sequence: once the journaler closed, the durable sequence
            // read after it is the last one.
            let closed = self.shared.journal_closed.load(Ordering::Acquire);
            let durable = self.shared.durable_sequence.load(Ordering::Acquire);
            if self.tail.next_seq() <= durable {
                if let Err(error) = self.follow(Sequence(durable)) {
                    // The journal we wrote does not read back: the disk lost or damaged records.
                    (self.on_failure)(&error);
                    return;
                }
                continue;
            }
            if closed {
                break;
            }
            let _ = self.woken.recv_timeout(FOLLOWER_IDLE_WAIT);
        }
        // Shutdown: leave a snapshot of the final state so the next start replays nothing.
        if self.since_snapshot > 0 {
            self.write_snapshot();
        }
    }

    /// Applies every journal record through `durable` and hands the outputs on, in chunks that
    /// end where an output is full or a snapshot is due.
    fn follow(&mut self, durable: Sequence) -> Result<(), DurableError> {
        while self.tail.next_seq() <= durable.0 {
            let mut output = self.fresh_output();
            let output_room = if output.is_some() { self.output_commands_max } else { usize::MAX };
            let snapshot_room = if self.snapshot_every > 0 {
                usize::try_from(self.snapshot_every.saturating_sub(self.since_snapshot).max(1))
                    .unwrap_or(usize::MAX)
            } else {
                usize::MAX
            };
            let budget = output_room.min(snapshot_room);
            let mut applied = 0usize;
            let mut failure = None;
            let Self { engine, tail, .. } = self;
            tail.read_through(durable.0, |record| {
                let (command, attachment) = match decode_payload(record.kind, record.payload) {
                    Ok(decoded) => decoded,
                    Err(source) => {
                        failure = Some(DurableError::Record {
                            sequence: record.seq,
                            segment: record.segment.to_owned(),
                            offset: record.offset,
                            source,
                        });
                        return ControlFlow::Break(());
                    }
                };
                let (sequence, at) = (Sequence(record.seq), Timestamp(record.at));
                match output.as_mut() {
                    Some(output) => output.push(sequence, at, command, attachment, engine),
                    None => {
                        engine.apply(sequence, at, &command, &mut DiscardEvents);
                    }
                }
                applied += 1;
                if applied >= budget {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            if let Some(failure) = failure {
                return Err(failure);
            }
            self.since_snapshot += applied as u64;
            self.shared.followed_sequence.store(self.engine.last_sequence().0, Ordering::Release);
            if let Some(output) = output {
                if output.commands.is_empty() {
                    self.idle_output = Some(output);
                } else {
                    self.send(output);
                }
            }
            if self.snapshot_every > 0 && self.since_snapshot >= self.snapshot_every {
                self.write_snapshot();
            }
        }
        Ok(())
    }

    fn fresh_output(&mut self) -> Option<Output> {
        let (_, spare) = self.outputs.as_ref()?;
        let output = self.idle_output.take().or_else(|| spare.try_recv().ok());
        Some(output.unwrap_or_else(|| Output::with_capacity(self.output_commands_max)))
    }

    fn send(&mut self, output: Output) {
        let Some((sender, _)) = &self.outputs else { return };
        if sender.send(output).is_err() {
            // The consumer went away (shutdown): keep following for the snapshots only.
            self.outputs = None;
        }
    }

    fn write_snapshot(&mut self) {
        self.engine.encode_snapshot(&mut self.snapshot_bytes);
        let sequence = self.engine.last_sequence().0;
        match surge_journal::write_snapshot(
            &self.snapshots,
            sequence,
            self.engine.last_at().0,
            &self.snapshot_bytes,
        ) {
            Ok(name) => {
                self.shared.snapshot_sequence.store(sequence, Ordering::Relaxed);
                self.since_snapshot = 0;
                tracing::info!(%name, sequence, bytes = self.snapshot_bytes.len(), "snapshot written");
            }
            // A failed snapshot loses nothing: the journal still holds every command.
            Err(error) => tracing::error!(%error, sequence, "snapshot failed"),
        }
    }
}
