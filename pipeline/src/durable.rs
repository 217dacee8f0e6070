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
    #[error(
        "journal/ starts at sequence {first} but the state before it ends at sequence {snapshot} \
         (the snapshot the engine starts from, or 0 for none): records {} to {} are missing; if \
         their segments were archived, move them from archive/ back into journal/",
        .snapshot + 1,
        .first - 1
    )]
    Gap { snapshot: u64, first: u64 },
    /// The newest valid snapshot holds a state past the journal's last record. A snapshot is only
    /// written for records already durable, so records the journal once held are gone: starting
    /// would assign their sequence numbers again to other commands, and the engine's state would
    /// not be the journal's. Found before anything is cut or written.
    #[error("{}", snapshot_ahead(.name, *.snapshot, *.journal_last))]
    SnapshotAhead {
        /// File name of the snapshot.
        name: String,
        /// The last sequence the snapshot's state includes.
        snapshot: u64,
        /// The journal's last good record (0 for an empty journal), a torn final record not
        /// counted.
        journal_last: u64,
    },
    #[error("a consumer of the journal stored sequence {consumer}, but the journal ends at {journal}: acknowledged records are missing, or the data directory is not the one the consumer followed")]
    ConsumerAhead { consumer: u64, journal: u64 },
    /// The follower cannot be restored to where its consumer stands (the order projection's
    /// watermark): the journal no longer holds the records between the newest snapshot at or
    /// before that point and the journal's first record.
    #[error(
        "a consumer of the journal (the order projection) stands at sequence {consumer}; catching \
         it up needs the journal from sequence {} (after the newest usable snapshot at or before \
         it, or from the start), but journal/ starts at sequence {first}: move the segments that \
         hold sequences {} to {} from archive/ back into journal/ and start again",
        .snapshot + 1,
        .snapshot + 1,
        .first - 1
    )]
    ConsumerBehind { consumer: u64, snapshot: u64, first: u64 },
}

/// The operator's message for [`DurableError::SnapshotAhead`]: both sequences, and the two ways
/// out.
fn snapshot_ahead(name: &str, snapshot: u64, journal_last: u64) -> String {
    let journal_end = if journal_last == 0 {
        "the journal holds no record".to_owned()
    } else {
        format!("the journal ends at sequence {journal_last}")
    };
    let missing = if journal_last + 1 == snapshot {
        format!("record {snapshot} was durable when the snapshot was written and is")
    } else {
        format!(
            "records {} to {snapshot} were durable when the snapshot was written and are",
            journal_last + 1
        )
    };
    format!(
        "the newest snapshot, snapshots/{name}, holds the state through sequence {snapshot}, but \
         {journal_end}: {missing} missing from journal/ (a journal restored from a backup older \
         than the snapshots, or records the disk lost). Nothing was changed. To keep every \
         acknowledged command, put back the journal segments that hold the records through \
         sequence {snapshot} (from a newer backup, or from archive/) and start again. To \
         recover the older state through \
         sequence {journal_last} instead, losing every command after it, move the snapshots \
         newer than sequence {journal_last} out of snapshots/ (a projection in surge.db that is \
         ahead of the journal is then refused in turn)"
    )
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
/// it, up to and including `to` when given. `recovery` is the caller's [`surge_journal::scan`] of
/// the journal; a start cuts the torn tail it found ([`surge_journal::repair`]) only once this
/// succeeded. Reads only.
///
/// Refuses ([`DurableError::SnapshotAhead`]) a snapshot past the journal's last good record, and
/// ([`DurableError::Gap`]) a journal that starts after the snapshot's sequence plus one.
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
    let loaded = surge_journal::load_newest_snapshot_at_most(snapshots, snapshot_max)?;
    let mut engine = match &loaded {
        Some(loaded) => Engine::decode_snapshot(limits, &loaded.payload)
            .map_err(|source| DurableError::Snapshot { name: loaded.name.clone(), source })?,
        None => Engine::new(limits),
    };
    let snapshot_sequence = engine.last_sequence().0;
    let journal_last = recovery.next_seq - 1;
    if let Some(loaded) = loaded.filter(|_| snapshot_sequence > journal_last) {
        return Err(DurableError::SnapshotAhead {
            name: loaded.name,
            snapshot: snapshot_sequence,
            journal_last,
        });
    }
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

/// What one pass of journal retention ([`archive_covered`]) found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// No reader of the journal needs the records through this sequence any more
    /// ([`retention_through`]); `None` when the pass saw at once that no segment could go (fewer
    /// than two snapshots at or before the consumer's stored sequence, or none old enough to
    /// cover a whole segment) and read no snapshot.
    pub through: Option<u64>,
    /// The segments moved into the archive, oldest first.
    pub moved: Vec<String>,
}

/// The last sequence that no reader of the journal needs any more.
///
/// The readers, and what each needs:
/// - a start restores the engine from the newest valid snapshot, or, when that one turns out
///   damaged, from the one before it: the records after the second-newest valid snapshot;
/// - the follower is restored to where its consumer stands (`consumer`: the order projection's
///   watermark, as *durably* stored, since a watermark a power loss can take back is not where
///   the next start stands) from the newest valid snapshot at or before it, or the one before
///   that: the records after the second-newest valid snapshot at or before `consumer`;
/// - the operator's tools read the archive too ([`surge_journal::WithArchive`]).
///
/// So: the second-newest valid snapshot at or before `consumer` (any, without a consumer); `None`
/// with fewer than two. The second also covers the first two readers' needs at once, since it is
/// never newer than the second-newest snapshot overall.
pub fn retention_through<S: Storage>(
    snapshots: &S,
    consumer: Option<Sequence>,
) -> Result<Option<u64>, JournalError> {
    let seq_max = consumer.map_or(u64::MAX, |consumer| consumer.0);
    let newest = surge_journal::newest_valid_snapshots(snapshots, seq_max, 2)?;
    Ok(newest.get(1).copied())
}

/// One pass of journal retention: moves the segments of `journal` that hold no record any reader
/// needs ([`retention_through`]) into `archive`, a directory on the same file system. `followed`
/// is the last sequence the follower beside the writer has read (the journal's end when nothing
/// runs): a segment it may still be reading never moves. Blocking; reads the newest snapshots
/// only when some segment could move.
///
/// Safe to run beside a running pipeline: the writer appends to the last segment, which never
/// moves, and the follower has read past every segment that does (see `followed`).
pub fn archive_covered<J: Storage, S: Storage>(
    journal: &J,
    archive: &J,
    snapshots: &S,
    consumer: Option<Sequence>,
    followed: Sequence,
) -> Result<ArchiveReport, DurableError> {
    let seq_max = consumer.map_or(followed, |consumer| consumer.min(followed));
    // First from the snapshots' names alone, which only reads directories: checking snapshots
    // can only lower what may go, so when nothing could go even so, no snapshot is read.
    let named: Vec<u64> = surge_journal::snapshot_seqs(snapshots)?
        .into_iter()
        .filter(|seq| *seq <= seq_max.0)
        .collect();
    let Some(&named_through) = named.len().checked_sub(2).and_then(|index| named.get(index)) else {
        return Ok(ArchiveReport::default());
    };
    let second_segment = journal
        .list()
        .map_err(JournalError::from)?
        .iter()
        .filter_map(|name| surge_journal::record::parse_segment_name(name))
        .nth(1);
    if second_segment.is_none_or(|first_seq| first_seq > named_through.saturating_add(1)) {
        return Ok(ArchiveReport::default());
    }
    let Some(through) = retention_through(snapshots, Some(seq_max))? else {
        return Ok(ArchiveReport::default());
    };
    // The follower may still be in the segment that ends with `followed`.
    let movable = through.min(followed.0.saturating_sub(1));
    let moved = surge_journal::archive_segments_through(journal, archive, movable)?;
    Ok(ArchiveReport { through: Some(through), moved })
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
        // `restore` refuses a snapshot past the journal's end, so an engine restored from this
        // journal always agrees; anything else is a caller's bug.
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

#[cfg(test)]
mod tests {
    use super::*;
    use surge_engine::{SkuId, WarehouseId};
    use surge_journal::{scan, MemStorage};

    /// A journal of `records` stock commands in segments of about three records, the engine
    /// that applied them, and the snapshots storage with a snapshot of that engine at `snapshot`.
    fn journal_with_snapshot(records: u64, snapshot: u64) -> (MemStorage, MemStorage) {
        journal_with_snapshots(records, &[snapshot])
    }

    /// As [`journal_with_snapshot`], with a snapshot at each of `snapshots_at`.
    fn journal_with_snapshots(records: u64, snapshots_at: &[u64]) -> (MemStorage, MemStorage) {
        let (journal, snapshots) = (MemStorage::new(), MemStorage::new());
        let mut engine = Engine::new(Limits::TEST);
        let recovery = surge_journal::recover(&journal).unwrap();
        let config = JournalConfig { segment_bytes_max: 150 };
        let mut sequencer = Sequencer::open(journal.clone(), config, &recovery, &engine).unwrap();
        for on_hand in 1..=records {
            let on_hand = u32::try_from(on_hand).unwrap();
            let command = Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand };
            let (sequence, at) = sequencer.append(Timestamp(u64::from(on_hand)), &command);
            sequencer.commit().unwrap();
            engine.apply(sequence, at, &command, &mut DiscardEvents);
            if snapshots_at.contains(&sequence.0) {
                let mut bytes = Vec::new();
                engine.encode_snapshot(&mut bytes);
                surge_journal::write_snapshot(&snapshots, sequence.0, at.0, &bytes).unwrap();
            }
        }
        (journal, snapshots)
    }

    fn restore_all(
        journal: &MemStorage,
        snapshots: &MemStorage,
    ) -> Result<(Engine, RestoreReport), DurableError> {
        restore(Limits::TEST, journal, snapshots, &scan(journal).unwrap(), None)
    }

    fn files(storage: &MemStorage) -> Vec<(String, Vec<u8>)> {
        let names = storage.list().unwrap();
        names.into_iter().map(|name| (name.clone(), storage.bytes(&name).unwrap())).collect()
    }

    #[test]
    fn a_snapshot_covering_a_torn_final_record_is_refused() {
        let (journal, snapshots) = journal_with_snapshot(10, 10);
        let last = journal.list().unwrap().pop().unwrap();
        let mut bytes = journal.bytes(&last).unwrap();
        bytes.truncate(bytes.len() - 5);
        journal.set_bytes(&last, bytes);
        let before = files(&journal);

        let error = restore_all(&journal, &snapshots).unwrap_err();
        assert!(
            matches!(&error, DurableError::SnapshotAhead { snapshot: 10, journal_last: 9, name }
                if name == &surge_journal::snapshot::snapshot_name(10)),
            "{error:?}"
        );
        let message = error.to_string();
        for needle in ["sequence 10", "sequence 9", "archive/", "snapshots/", "journal/"] {
            assert!(message.contains(needle), "{needle:?} missing: {message}");
        }
        assert_eq!(files(&journal), before, "restore only reads");
    }

    #[test]
    fn a_journal_older_than_the_snapshot_is_refused() {
        let (journal, snapshots) = journal_with_snapshot(10, 10);
        // A backup taken before the newest segment existed.
        let newest = journal.list().unwrap().pop().unwrap();
        journal.remove(&newest).unwrap();
        let journal_last = scan(&journal).unwrap().next_seq - 1;
        assert!(journal_last < 10 && journal_last > 0, "{journal_last}");
        let error = restore_all(&journal, &snapshots).unwrap_err();
        assert!(
            matches!(error, DurableError::SnapshotAhead { snapshot: 10, journal_last: last, .. }
                if last == journal_last),
            "{error:?}"
        );
    }

    #[test]
    fn an_empty_journal_behind_a_snapshot_is_refused() {
        let (_, snapshots) = journal_with_snapshot(4, 4);
        let error = restore_all(&MemStorage::new(), &snapshots).unwrap_err();
        assert!(
            matches!(error, DurableError::SnapshotAhead { snapshot: 4, journal_last: 0, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("the journal holds no record"), "{error}");
    }

    #[test]
    fn a_snapshot_at_or_before_the_journal_end_restores() {
        for snapshot in [3, 10] {
            let (journal, snapshots) = journal_with_snapshot(10, snapshot);
            let (engine, report) = restore_all(&journal, &snapshots).unwrap();
            assert_eq!(report.snapshot_sequence, snapshot);
            assert_eq!(report.replayed, 10 - snapshot);
            assert_eq!(engine.last_sequence(), Sequence(10));
        }
        // A torn final record the snapshot does not cover is a crash's, not a loss.
        let (journal, snapshots) = journal_with_snapshot(10, 9);
        let last = journal.list().unwrap().pop().unwrap();
        let mut bytes = journal.bytes(&last).unwrap();
        bytes.truncate(bytes.len() - 5);
        journal.set_bytes(&last, bytes);
        let (engine, report) = restore_all(&journal, &snapshots).unwrap();
        assert!(report.torn_tail.is_some());
        assert_eq!(engine.last_sequence(), Sequence(9));
    }

    #[test]
    fn a_replay_to_an_earlier_point_uses_a_snapshot_at_most_there() {
        let (journal, snapshots) = journal_with_snapshot(10, 10);
        let last = journal.list().unwrap().pop().unwrap();
        let mut bytes = journal.bytes(&last).unwrap();
        bytes.truncate(bytes.len() - 5);
        journal.set_bytes(&last, bytes);
        let recovery = scan(&journal).unwrap();
        let (engine, report) =
            restore(Limits::TEST, &journal, &snapshots, &recovery, Some(Sequence(5))).unwrap();
        assert_eq!((report.snapshot_sequence, engine.last_sequence()), (0, Sequence(5)));
    }

    fn first_seqs(storage: &MemStorage) -> Vec<u64> {
        let names = storage.list().unwrap();
        names.iter().filter_map(|name| surge_journal::record::parse_segment_name(name)).collect()
    }

    #[test]
    fn retention_keeps_what_the_two_newest_usable_snapshots_need() {
        // Segments of four records: 1, 5, 9, 13, 17.
        let (journal, snapshots) = journal_with_snapshots(20, &[6, 12, 18]);
        assert_eq!(first_seqs(&journal), [1, 5, 9, 13, 17]);
        let archive = MemStorage::new();
        let report = archive_covered(&journal, &archive, &snapshots, None, Sequence(20)).unwrap();
        assert_eq!(report.through, Some(12));
        assert_eq!(first_seqs(&archive), [1, 5, 9], "13 onwards is needed");
        assert_eq!(first_seqs(&journal), [13, 17]);

        // A damaged newest snapshot does not count: the two newest usable ones are 6 and 12.
        let (journal, snapshots) = journal_with_snapshots(20, &[6, 12, 18]);
        snapshots.flip_bit(&surge_journal::snapshot::snapshot_name(18), 60, 3);
        let report =
            archive_covered(&journal, &MemStorage::new(), &snapshots, None, Sequence(20)).unwrap();
        assert_eq!(report.through, Some(6));
        assert_eq!(first_seqs(&journal), [5, 9, 13, 17]);
        let recovery = scan(&journal).unwrap();
        let (_, restored) = restore(Limits::TEST, &journal, &snapshots, &recovery, None).unwrap();
        assert_eq!(restored.snapshot_sequence, 12);
    }

    #[test]
    fn retention_stays_behind_the_consumer_and_the_follower() {
        let (journal, snapshots) = journal_with_snapshots(20, &[6, 12, 18]);
        // The consumer stored 17: its follower restarts from 12, or from 6.
        let report = archive_covered(
            &journal,
            &MemStorage::new(),
            &snapshots,
            Some(Sequence(17)),
            Sequence(20),
        )
        .unwrap();
        assert_eq!((report.through, first_seqs(&journal)), (Some(6), vec![5, 9, 13, 17]));
        // A consumer before the second snapshot keeps everything.
        let (journal, snapshots) = journal_with_snapshots(20, &[6, 12, 18]);
        let report = archive_covered(
            &journal,
            &MemStorage::new(),
            &snapshots,
            Some(Sequence(11)),
            Sequence(20),
        )
        .unwrap();
        assert_eq!(report, ArchiveReport::default());
        assert_eq!(first_seqs(&journal)[0], 1);
        // A snapshot past what the follower has read does not count either.
        let (journal, snapshots) = journal_with_snapshots(20, &[6, 9, 12]);
        let report =
            archive_covered(&journal, &MemStorage::new(), &snapshots, None, Sequence(10)).unwrap();
        assert_eq!((report.through, first_seqs(&journal)[0]), (Some(6), 5));
    }
}
