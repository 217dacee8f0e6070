//! The stages that make the state machine durable, free of threads so that the pipeline and the
//! deterministic simulator drive exactly the same code.
//!
//! - [`Sequencer`] numbers and time-stamps commands and writes each batch to the journal with one
//!   fsync (group commit). Nothing downstream sees a command before its batch is durable.
//! - [`restore`] rebuilds an engine at start: newest valid snapshot, then the journal suffix.
//! - [`encode_payload`] and [`decode_payload`] frame a journal record: a command alone (record kind
//!   0), or a command with an attachment (kind 1): bytes the engine never reads but that travel
//!   with the command into the journal, such as everything the order record of a checkout needs.
//!
//! The threaded wiring lives in [`crate::threaded`].

use std::ops::ControlFlow;

use surge_journal::{JournalConfig, JournalError, JournalWriter, Recovery, Storage, TornTail};

use surge_engine::codec::{decode_command, encode_command, DecodeError, RECORD_KIND_COMMAND};
use surge_engine::{Command, DiscardEvents, Engine, Limits, Sequence, SnapshotError, Timestamp};

/// The journal record kind of a command followed by an attachment (see [`encode_payload`]).
pub const RECORD_KIND_COMMAND_WITH_ATTACHMENT: u8 = 1;

/// Encodes one journal record's payload into `out` (cleared first) and returns its record kind:
/// [`RECORD_KIND_COMMAND`] with the command's encoding alone, or, with an attachment,
/// [`RECORD_KIND_COMMAND_WITH_ATTACHMENT`]: the command's length as a little-endian u16, the
/// command, then the attachment's bytes to the end of the payload (docs/formats.md).
pub fn encode_payload(command: &Command, attachment: Option<&[u8]>, out: &mut Vec<u8>) -> u8 {
    out.clear();
    let Some(attachment) = attachment else {
        encode_command(command, out);
        return RECORD_KIND_COMMAND;
    };
    out.extend_from_slice(&[0, 0]);
    encode_command(command, out);
    let length = u16::try_from(out.len() - 2).expect("a command encodes in far fewer than 64 KiB");
    out[..2].copy_from_slice(&length.to_le_bytes());
    out.extend_from_slice(attachment);
    RECORD_KIND_COMMAND_WITH_ATTACHMENT
}

/// Decodes a journal record's payload by its kind into the command and its attachment, if any.
pub fn decode_payload(kind: u8, payload: &[u8]) -> Result<(Command, Option<&[u8]>), DecodeError> {
    match kind {
        RECORD_KIND_COMMAND => Ok((decode_command(payload)?, None)),
        RECORD_KIND_COMMAND_WITH_ATTACHMENT => {
            let (length, rest) = payload
                .split_first_chunk::<2>()
                .ok_or(DecodeError::Invalid("attachment framing"))?;
            let length = usize::from(u16::from_le_bytes(*length));
            if length > rest.len() {
                return Err(DecodeError::Invalid("attachment framing"));
            }
            let (command, attachment) = rest.split_at(length);
            Ok((decode_command(command)?, Some(attachment)))
        }
        _ => Err(DecodeError::Invalid("record kind")),
    }
}

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
    #[error("a consumer of the journal stored sequence {consumer}, but the journal ends at {journal}: acknowledged records are missing, or the data directory is not the one the consumer followed")]
    ConsumerAhead { consumer: u64, journal: u64 },
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
    restore_from(limits, journal, snapshots, recovery, snapshot_max, to)
}

fn restore_from<J: Storage, S: Storage>(
    limits: Limits,
    journal: &J,
    snapshots: &S,
    recovery: &Recovery,
    snapshot_max: u64,
    to: Option<Sequence>,
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
        match decode_payload(record.kind, record.payload) {
            Ok((command, _)) => {
                let (sequence, at) = (Sequence(record.seq), Timestamp(record.at));
                engine.apply(sequence, at, &command, &mut DiscardEvents);
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
        self.append_with(now, command, None)
    }

    /// [`Sequencer::append`] with an attachment journaled in the same record (see
    /// [`encode_payload`]).
    pub fn append_with(
        &mut self,
        now: Timestamp,
        command: &Command,
        attachment: Option<&[u8]>,
    ) -> (Sequence, Timestamp) {
        let sequence = self.next;
        let at = now.max(self.last_at);
        let kind = encode_payload(command, attachment, &mut self.payload);
        self.journal.append(sequence.0, at.0, kind, &self.payload);
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
