//! The stages that make the state machine durable, free of threads so that the pipeline and the
//! deterministic simulator drive exactly the same code.
//!
//! - [`Sequencer`] numbers and time-stamps commands and writes each batch to the journal with one
//!   fsync (group commit). Nothing downstream sees a command before its batch is durable.
//! - [`restore`] rebuilds an engine at start: newest valid snapshot, then the journal suffix.
//!
//! The threaded wiring lives in [`crate::threaded`].

use std::ops::ControlFlow;

use surge_journal::{JournalConfig, JournalError, JournalWriter, Recovery, Storage, TornTail};

use surge_engine::codec::{decode_command, encode_command, DecodeError, RECORD_KIND_COMMAND};
use surge_engine::{
    Command, DiscardEvents, Engine, Event, Limits, Sequence, Sequenced, SnapshotError, Timestamp,
};

/// Why an engine could not be restored or made durable.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("snapshot {name} could not be loaded: {source}")]
    Snapshot { name: String, source: SnapshotError },
    #[error("journal record {sequence} in segment {segment} at byte {offset} is not a command: {source}")]
    Record { sequence: u64, segment: String, offset: u64, source: DecodeError },
    #[error("journal starts at sequence {first} but the snapshot ends at {snapshot}: records are missing")]
    Gap { snapshot: u64, first: u64 },
}

/// What start-up found and did.
#[derive(Clone, Debug, Default)]
pub struct RestoreReport {
    /// The sequence of the snapshot the engine started from (0 without one).
    pub snapshot_sequence: u64,
    /// Journal records applied on top of the snapshot.
    pub replayed: u64,
    /// The torn tail found at the end of the journal, if any (cut by `recover`, only reported by `scan`).
    pub torn_tail: Option<TornTail>,
    /// The next sequence the journal will assign.
    pub next_sequence: u64,
    /// With `PipelineConfig::events_after`: the events of every command after it, in order.
    pub missed_events: Vec<(Sequence, Event)>,
}

/// Rebuilds the engine from the newest valid snapshot in `snapshots` and the journal records after
/// it, up to and including `to` when given. `recovery` is the caller's scan of the journal: from
/// [`surge_journal::recover`] at start (which cuts a torn tail), or [`surge_journal::scan`] for
/// read-only tooling.
pub fn restore<J: Storage, S: Storage>(
    limits: Limits,
    journal: &J,
    snapshots: &S,
    recovery: &Recovery,
    to: Option<Sequence>,
) -> Result<(Engine, RestoreReport), DurableError> {
    let snapshot_max = to.map_or(u64::MAX, |to| to.0);
    restore_from(limits, journal, snapshots, recovery, snapshot_max, to, None)
}

/// Like [`restore`] to the end of the journal, and also hands back every event of the commands
/// after `events_after`, each with its command's sequence. A consumer that stored how far it got
/// before a crash (the gateway's order store) catches up on exactly what it missed. The engine
/// starts from a snapshot taken at or before `events_after`, so those events are regenerated, not
/// guessed.
pub fn restore_with_events<J: Storage, S: Storage>(
    limits: Limits,
    journal: &J,
    snapshots: &S,
    recovery: &Recovery,
    events_after: Sequence,
    events: &mut Vec<(Sequence, Event)>,
) -> Result<(Engine, RestoreReport), DurableError> {
    let capture = Capture { after: events_after, events };
    restore_from(limits, journal, snapshots, recovery, events_after.0, None, Some(capture))
}

/// Where replayed events go: only those of commands after `after`.
struct Capture<'a> {
    after: Sequence,
    events: &'a mut Vec<(Sequence, Event)>,
}

fn restore_from<J: Storage, S: Storage>(
    limits: Limits,
    journal: &J,
    snapshots: &S,
    recovery: &Recovery,
    snapshot_max: u64,
    to: Option<Sequence>,
    mut capture: Option<Capture<'_>>,
) -> Result<(Engine, RestoreReport), DurableError> {
    let mut engine = match surge_journal::load_newest_snapshot_at_most(snapshots, snapshot_max)? {
        Some(loaded) => Engine::decode_snapshot(limits, &loaded.payload)
            .map_err(|source| DurableError::Snapshot { name: loaded.name.clone(), source })?,
        None => Engine::new(limits),
    };
    let snapshot_sequence = engine.last_sequence().0;
    if let Some(first) = recovery.segments.first().map(|segment| segment.first_seq) {
        if first > snapshot_sequence + 1 {
            return Err(DurableError::Gap { snapshot: snapshot_sequence, first });
        }
    }
    let mut replayed = 0;
    let mut failure = None;
    surge_journal::read_from(journal, snapshot_sequence + 1, |record| {
        if to.is_some_and(|to| record.seq > to.0) {
            return ControlFlow::Break(());
        }
        match decode_command(record.payload) {
            Ok(command) => {
                let (sequence, at) = (Sequence(record.seq), Timestamp(record.at));
                match capture.as_mut().filter(|capture| sequence > capture.after) {
                    Some(capture) => {
                        let mut sink = Sequenced { sequence, events: capture.events };
                        engine.apply(sequence, at, &command, &mut sink);
                    }
                    None => {
                        engine.apply(sequence, at, &command, &mut DiscardEvents);
                    }
                }
                replayed += 1;
                ControlFlow::Continue(())
            }
            Err(source) => {
                failure = Some(DurableError::Record {
                    sequence: record.seq,
                    segment: record.segment.to_owned(),
                    offset: record.offset,
                    source,
                });
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    let report = RestoreReport {
        snapshot_sequence,
        replayed,
        torn_tail: recovery.torn_tail.clone(),
        next_sequence: recovery.next_seq.max(engine.last_sequence().0 + 1),
        missed_events: Vec::new(),
    };
    Ok((engine, report))
}

/// Numbers, time-stamps and journals commands, one fsync per batch.
pub struct Sequencer<J: Storage> {
    journal: JournalWriter<J>,
    next: Sequence,
    last_at: Timestamp,
    payload: Vec<u8>,
}

impl<J: Storage> std::fmt::Debug for Sequencer<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer")
            .field("next", &self.next)
            .field("last_at", &self.last_at)
            .finish_non_exhaustive()
    }
}

impl<J: Storage> Sequencer<J> {
    /// Opens the journal for appending after [`restore`].
    pub fn open(
        journal: J,
        config: JournalConfig,
        recovery: &Recovery,
        engine: &Engine,
    ) -> Result<Self, DurableError> {
        let journal = JournalWriter::open(journal, config, recovery)?;
        let next = Sequence(journal.next_seq());
        assert_eq!(
            next.0,
            engine.last_sequence().0 + 1,
            "journal and engine disagree on the next sequence"
        );
        Ok(Self { journal, next, last_at: engine.last_at(), payload: Vec::with_capacity(256) })
    }

    /// Adds a command to the open batch and returns its stamp. `now` is the sequencer's clock; the
    /// stamp never goes back in time even if the clock does, so deadlines stay ordered.
    pub fn append(&mut self, now: Timestamp, command: &Command) -> (Sequence, Timestamp) {
        let sequence = self.next;
        let at = now.max(self.last_at);
        self.payload.clear();
        encode_command(command, &mut self.payload);
        self.journal.append(sequence.0, at.0, RECORD_KIND_COMMAND, &self.payload);
        self.next = Sequence(sequence.0 + 1);
        self.last_at = at;
        (sequence, at)
    }

    /// Writes the open batch and fsyncs once. On `Err` the caller must stop: after a failed fsync
    /// the kernel may have dropped the dirty pages, so neither retrying nor going on is safe.
    pub fn commit(&mut self) -> Result<surge_journal::CommitStats, DurableError> {
        Ok(self.journal.commit()?)
    }

    /// The sequence the next appended command will get.
    pub fn next_sequence(&self) -> Sequence {
        self.next
    }

    /// Bytes written to the journal so far (all segments, including the ones found at start).
    pub fn journal_bytes(&self) -> u64 {
        self.journal.bytes_written_total()
    }
}
