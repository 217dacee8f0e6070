//! Following the journal while a [`JournalWriter`](crate::JournalWriter) in the same process keeps
//! appending to it: a second reader that hands each committed record over once, in order, for about
//! the cost of its checksum.
//!
//! [`read_from`](crate::read_from) is the startup replay: it reads whole segments and ends quietly
//! at the first bad record, because after a crash the end of the journal may be torn. A follower
//! is in another position. Its caller knows which seqs are committed (the writer said so), so every
//! record up to there must be present and intact, and nothing after it may be looked at, since it
//! can be a batch the writer is writing at this moment. [`JournalTail`] therefore reads through an
//! explicit `last` and treats anything short of it as an error, never as the end.
//!
//! Cost. Reads go through [`Storage::read_at`] into one buffer allocated at open, so a call that
//! delivers a few new records costs about one `pread` of the bytes that arrived since the last call,
//! and a record costs its checksum and the call of the caller's closure: nothing is allocated per
//! record and no segment is read again from its start. The writer rolls over to a segment named
//! after the next seq (`{first_seq:020}.seg`), creating it and syncing its header before any
//! record in it is committed, so the tail finds the next segment by that name without listing the
//! directory; it lists only when it opens and when something is wrong.
//!
//! Evidence. Bytes buffered by an earlier call may have been read while the writer was writing
//! them, before the caller's `last` covered them. Segments only grow by appends, so such bytes are
//! a correct prefix of what the writer wrote, but a record is only declared bad on bytes read
//! during the call that reports it: a record that fails on older bytes is read again first.

use std::fmt;
use std::io;
use std::ops::{ControlFlow, Range};

use crate::error::JournalError;
use crate::record::{
    decode_record, decode_segment_header, parse_segment_name, record_len, segment_name,
    FramingError, RECORD_HEADER_LEN, RECORD_PAYLOAD_MAX, SEGMENT_HEADER_LEN,
};
use crate::recover::RecordRef;
use crate::storage::Storage;

/// Fewest bytes asked of one [`Storage::read_at`] while catching up: large enough that the call
/// costs little next to copying the bytes, small enough to stay in the CPU's caches.
const CHUNK_BYTES: usize = 1 << 20;

/// Size of a tail's buffer: a chunk beyond the largest record, so that once an incomplete record
/// has been moved to the front, one read of a chunk is room enough to complete it.
const BUFFER_BYTES: usize = CHUNK_BYTES + record_len(RECORD_PAYLOAD_MAX);

/// A reader that follows the journal from a seq, through the seqs its caller says are committed.
///
/// Made for a thread beside the writer's: open it once at the first seq wanted, then call
/// [`read_through`](Self::read_through) with the highest committed seq whenever the writer reports
/// progress. See the [module docs](self) for what it reads and what it refuses.
pub struct JournalTail<S: Storage> {
    storage: S,
    /// The segment being read; `None` while the journal holds no segment at all (opened before the
    /// writer's first commit), until one appears.
    segment: Option<Segment>,
    /// The seq of the next record to deliver.
    next_seq: u64,
    /// Allocated once; holds bytes of the current segment.
    buffer: Box<[u8]>,
    /// Offset in the segment file of `buffer[0]`.
    buffer_offset: u64,
    /// `buffer[start..end]` are bytes read and not consumed; the record `next_seq` starts at
    /// `start`.
    start: usize,
    end: usize,
}

/// The segment a tail is reading.
#[derive(Debug)]
struct Segment {
    name: String,
    first_seq: u64,
}

/// Where the next record lies in the buffer, its fields copied out so that the buffer is borrowed
/// only while the caller looks at the payload.
struct Located {
    seq: u64,
    at: u64,
    kind: u8,
    payload: Range<usize>,
    offset: u64,
}

// By hand, so that debugging output shows where the tail is rather than its buffer.
impl<S: Storage + fmt::Debug> fmt::Debug for JournalTail<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalTail")
            .field("storage", &self.storage)
            .field("segment", &self.segment.as_ref().map(|segment| &segment.name))
            .field("next_seq", &self.next_seq)
            .field("offset", &(self.buffer_offset + self.start as u64))
            .field("bytes_buffered", &(self.end - self.start))
            .finish_non_exhaustive()
    }
}

impl<S: Storage> JournalTail<S> {
    /// Opens a tail positioned before record `from`, the first one the caller wants.
    ///
    /// `from` may be one past the last record written so far, and on a journal with no segment
    /// yet it may be anything: the tail waits for the segment that will hold it. The records before
    /// `from` in its segment are read (in chunks) and checked on the way to it, so they must all
    /// be written.
    ///
    /// # Errors
    /// [`JournalError::RecordsMissing`] when the journal starts after `from`;
    /// [`JournalError::NotWritten`] when `from` is more than one past the last record written;
    /// [`JournalError::Corrupt`] for a bad segment header or a bad record before `from`;
    /// [`JournalError::Io`].
    pub fn open(storage: S, from: u64) -> Result<Self, JournalError> {
        let mut tail = JournalTail {
            storage,
            segment: None,
            next_seq: from,
            buffer: vec![0; BUFFER_BYTES].into_boxed_slice(),
            buffer_offset: 0,
            start: 0,
            end: 0,
        };
        tail.locate(from)?;
        Ok(tail)
    }

    /// Delivers every record from [`next_seq`](Self::next_seq) through `last` to `f`, in order,
    /// crossing into the next segment when the current one is exhausted. Does nothing when `last`
    /// is below `next_seq`.
    ///
    /// The caller promises that the writer has committed `last`: every record up to it must be
    /// there and intact, so a missing one is an error, not the end. Nothing after `last` is read
    /// as a record or checked, since it may be a batch being written right now.
    ///
    /// When `f` breaks, the record it broke on counts as delivered: the tail stays right after it
    /// and the next call continues there. Records delivered before an error stay delivered, and
    /// the tail stays right after the last of them, so the call can be repeated.
    ///
    /// # Errors
    /// [`JournalError::Corrupt`], naming the segment and the byte offset, for a record at or before
    /// `last` that fails its checksum, is malformed or carries the wrong seq, or a segment whose
    /// header is bad or that does not continue the one before; [`JournalError::NotWritten`] when
    /// the journal ends before `last`; [`JournalError::RecordsMissing`] when the tail was opened on
    /// an empty journal whose first segment turns out to start after its `from`;
    /// [`JournalError::Io`].
    pub fn read_through(
        &mut self,
        last: u64,
        mut f: impl FnMut(RecordRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), JournalError> {
        if last < self.next_seq {
            return Ok(());
        }
        if self.segment.is_none() {
            self.locate(self.next_seq)?;
        }
        if self.segment.is_none() {
            // Still no segment at all: the first one would be named after the first record.
            return Err(JournalError::NotWritten {
                seq: self.next_seq,
                segment: segment_name(self.next_seq),
                offset: 0,
            });
        }
        // Everything buffered now was read by an earlier call; see "Evidence" in the module docs.
        let mut stale_end = self.buffer_offset + self.end as u64;
        while self.next_seq <= last {
            let record = self.next_record(&mut stale_end)?;
            let segment = self.segment.as_ref().expect("next_record leaves a segment");
            let flow = f(RecordRef {
                seq: record.seq,
                at: record.at,
                kind: record.kind,
                payload: &self.buffer[record.payload.clone()],
                segment: &segment.name,
                offset: record.offset,
            });
            self.start = record.payload.end;
            self.next_seq += 1;
            if flow.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The seq of the next record [`read_through`](Self::read_through) will deliver.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Finds the segment holding record `from` and walks its records up to it. Leaves the tail
    /// without a segment when the journal has none yet, or after a failure, so that a later call
    /// starts over rather than from a half-walked position.
    fn locate(&mut self, from: u64) -> Result<(), JournalError> {
        let result = self.try_locate(from);
        if result.is_err() {
            self.segment = None;
            self.next_seq = from;
        }
        result
    }

    fn try_locate(&mut self, from: u64) -> Result<(), JournalError> {
        let segments = segments(&self.storage)?;
        let Some(&(first_seq, _)) = segments.first() else {
            return Ok(());
        };
        if from < first_seq {
            return Err(JournalError::RecordsMissing { from, first_seq });
        }
        // The newest segment starting at or before `from`: the one holding it, or the last one
        // when `from` is one past the end.
        let (first_seq, name) = segments
            .into_iter()
            .rev()
            .find(|&(first_seq, _)| first_seq <= from)
            .expect("the first segment starts at or before `from`");
        self.enter(name, first_seq)?;
        if from > first_seq {
            // Nothing was buffered before, so the walk has no stale bytes to doubt.
            self.read_through(from - 1, |_| ControlFlow::Continue(()))?;
        }
        Ok(())
    }

    /// Moves to the start of segment `name`, whose file name says it starts at `first_seq`, after
    /// checking its header. Changes nothing when the header is missing, short or bad.
    fn enter(&mut self, name: String, first_seq: u64) -> Result<(), JournalError> {
        let mut header = [0; SEGMENT_HEADER_LEN];
        let mut read = 0;
        while read < header.len() {
            let count = self.storage.read_at(&name, read as u64, &mut header[read..])?;
            if count == 0 {
                // The writer syncs a new segment's header before committing a record into it.
                return Err(JournalError::NotWritten { seq: first_seq, segment: name, offset: 0 });
            }
            read += count;
        }
        match decode_segment_header(&header) {
            Ok(header_seq) if header_seq == first_seq => {}
            Ok(header_seq) => {
                let reason = format!(
                    "header says the first seq is {header_seq} but the file name says {first_seq}"
                );
                return Err(JournalError::Corrupt { segment: name, offset: 0, reason });
            }
            Err(error) => {
                let reason = format!("segment header: {error}");
                return Err(JournalError::Corrupt { segment: name, offset: 0, reason });
            }
        }
        self.segment = Some(Segment { name, first_seq });
        self.next_seq = first_seq;
        self.buffer_offset = SEGMENT_HEADER_LEN as u64;
        self.start = 0;
        self.end = 0;
        Ok(())
    }

    /// Makes the buffer hold all of record `next_seq`, reading and crossing segments as needed,
    /// and checks it. Records in the buffer from before this call (up to file offset `stale_end`
    /// of the current segment) are read again before being called bad; `stale_end` is then zeroed.
    fn next_record(&mut self, stale_end: &mut u64) -> Result<Located, JournalError> {
        loop {
            let offset = self.buffer_offset + self.start as u64;
            let verdict = match decode_record(&self.buffer[self.start..self.end]) {
                Ok(record) if record.seq == self.next_seq => {
                    let payload = self.start + RECORD_HEADER_LEN;
                    return Ok(Located {
                        seq: record.seq,
                        at: record.at,
                        kind: record.kind,
                        payload: payload..payload + record.payload.len(),
                        offset,
                    });
                }
                Ok(record) => Err(format!(
                    "record has seq {} but seq {} comes next",
                    record.seq, self.next_seq
                )),
                Err(FramingError::Truncated) => Ok(()),
                Err(error) => Err(error.to_string()),
            };
            match verdict {
                Ok(()) => {
                    if self.fill()? > 0 {
                        continue;
                    }
                    if self.start < self.end {
                        return Err(self.ended_early(offset));
                    }
                    self.enter_next()?;
                    // A new segment's bytes are all read from here on.
                    *stale_end = 0;
                }
                Err(_) if offset < *stale_end => {
                    // Forget what was buffered from this record on and read it again.
                    self.end = self.start;
                    *stale_end = 0;
                }
                Err(reason) => {
                    let segment = self.segment.as_ref().expect("a record is read from a segment");
                    return Err(JournalError::Corrupt {
                        segment: segment.name.clone(),
                        offset,
                        reason,
                    });
                }
            }
        }
    }

    /// Reads on from the end of the buffered bytes, first moving the unconsumed ones (less than
    /// one record) to the front. Returns how many bytes came; 0 at the end of the segment file.
    fn fill(&mut self) -> Result<usize, JournalError> {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.buffer_offset += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        // Less than a record is buffered, and the buffer is a chunk longer than any record.
        assert!(
            self.buffer.len() - self.end >= CHUNK_BYTES,
            "an incomplete record fills the buffer"
        );
        let segment = self.segment.as_ref().expect("bytes are read from a segment");
        let offset = self.buffer_offset + self.end as u64;
        let count = self.storage.read_at(&segment.name, offset, &mut self.buffer[self.end..])?;
        self.end += count;
        Ok(count)
    }

    /// Moves to the segment that starts with record `next_seq`, the current one being exhausted.
    fn enter_next(&mut self) -> Result<(), JournalError> {
        match self.enter(segment_name(self.next_seq), self.next_seq) {
            Err(JournalError::Io(error)) if error.kind() == io::ErrorKind::NotFound => {
                Err(self.ended_early(self.buffer_offset + self.start as u64))
            }
            result => result,
        }
    }

    /// The error for a current segment that ends before record `next_seq` is complete, the record
    /// starting at `offset`: the journal is not written that far yet, unless a later segment
    /// exists, in which case the writer had moved on and this one is damaged or a gap follows it.
    fn ended_early(&self, offset: u64) -> JournalError {
        let segment = self.segment.as_ref().expect("only a segment can end early");
        let later = match segments(&self.storage) {
            Ok(segments) => {
                segments.into_iter().find(|&(first_seq, _)| first_seq > segment.first_seq)
            }
            Err(error) => return error.into(),
        };
        let Some((_, later)) = later else {
            return JournalError::NotWritten {
                seq: self.next_seq,
                segment: segment.name.clone(),
                offset,
            };
        };
        let reason = if self.start < self.end {
            format!(
                "the segment ends {} bytes into record seq {}, but segment {later} follows",
                self.end - self.start,
                self.next_seq
            )
        } else {
            format!(
                "the segment ends before seq {}, but the next segment is {later}, not {}",
                self.next_seq,
                segment_name(self.next_seq)
            )
        };
        JournalError::Corrupt { segment: segment.name.clone(), offset, reason }
    }
}

/// The segments of `storage` with their first seqs, in seq order.
fn segments<S: Storage>(storage: &S) -> io::Result<Vec<(u64, String)>> {
    // `list` sorts by name, and the fixed-width names sort in seq order.
    Ok(storage
        .list()?
        .into_iter()
        .filter_map(|name| Some((parse_segment_name(&name)?, name)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::encode_record;
    use crate::storage::StorageFile;
    use crate::{recover, JournalConfig, JournalWriter, MemStorage};

    fn writer(storage: &MemStorage) -> JournalWriter<MemStorage> {
        let recovery = recover(storage).unwrap();
        JournalWriter::open(storage.clone(), JournalConfig::default(), &recovery).unwrap()
    }

    /// Every record through `last`, as (seq, payload length, offset).
    fn read(tail: &mut JournalTail<MemStorage>, last: u64) -> Vec<(u64, usize, u64)> {
        let mut read = Vec::new();
        tail.read_through(last, |record| {
            read.push((record.seq, record.payload.len(), record.offset));
            ControlFlow::Continue(())
        })
        .unwrap();
        read
    }

    #[test]
    fn records_longer_than_a_chunk_are_completed_by_reading_on() {
        let storage = MemStorage::new();
        let mut writer = writer(&storage);
        // Small records first, so that the big ones straddle every chunk boundary at odd offsets.
        let lens = [3, 0, RECORD_PAYLOAD_MAX, 5, RECORD_PAYLOAD_MAX, RECORD_PAYLOAD_MAX - 1, 7];
        let mut tail = JournalTail::open(storage.clone(), 1).unwrap();
        let mut offset = SEGMENT_HEADER_LEN as u64;
        let mut expected = Vec::new();
        for (seq, &len) in (1..).zip(&lens) {
            writer.append(seq, 0, 0, &vec![seq as u8; len]);
            expected.push((seq, len, offset));
            offset += record_len(len) as u64;
        }
        writer.commit().unwrap();
        assert_eq!(read(&mut tail, lens.len() as u64), expected);
    }

    #[test]
    fn bytes_after_last_are_never_checked() {
        let storage = MemStorage::new();
        let mut writer = writer(&storage);
        for seq in 1..=3 {
            writer.append(seq, 0, 0, b"committed");
        }
        writer.commit().unwrap();
        let segment = segment_name(1);
        // What a batch half-way through its write could look like: a header claiming more bytes
        // than are there, then garbage.
        storage.open_append(&segment).unwrap().append(&[0xEE; 40]).unwrap();

        let mut tail = JournalTail::open(storage.clone(), 1).unwrap();
        assert_eq!(read(&mut tail, 3).len(), 3);
        let error = tail.read_through(4, |_| ControlFlow::Continue(())).unwrap_err();
        let offset = (SEGMENT_HEADER_LEN + 3 * record_len(b"committed".len())) as u64;
        assert!(
            matches!(&error, JournalError::Corrupt { segment: s, offset: o, .. } if *s == segment && *o == offset),
            "{error}"
        );
        assert_eq!(tail.next_seq(), 4);
    }

    #[test]
    fn a_record_buffered_before_it_was_complete_is_read_again_before_it_is_called_bad() {
        let storage = MemStorage::new();
        let mut writer = writer(&storage);
        writer.append(1, 0, 0, b"one");
        writer.commit().unwrap();
        let segment = segment_name(1);
        let mut second = Vec::new();
        encode_record(&mut second, 2, 0, 0, b"two");
        // The tail buffers record 2 while its bytes are still wrong, as a read racing a write
        // on a file system without atomic appends could see them.
        let mut bytes = storage.bytes(&segment).unwrap();
        let good_len = bytes.len();
        bytes.extend_from_slice(&second);
        *bytes.last_mut().unwrap() ^= 1;
        storage.set_bytes(&segment, bytes.clone());

        let mut tail = JournalTail::open(storage.clone(), 1).unwrap();
        assert_eq!(read(&mut tail, 1).len(), 1);
        // Now the bytes are right, and record 2 is committed.
        bytes.truncate(good_len);
        bytes.extend_from_slice(&second);
        storage.set_bytes(&segment, bytes.clone());
        assert_eq!(read(&mut tail, 2), [(2, 3, good_len as u64)]);

        // Bad bytes read during the call itself are evidence.
        let mut third = Vec::new();
        encode_record(&mut third, 3, 0, 0, b"three");
        third[RECORD_HEADER_LEN] ^= 1;
        bytes.extend_from_slice(&third);
        storage.set_bytes(&segment, bytes);
        assert!(matches!(
            tail.read_through(3, |_| ControlFlow::Continue(())),
            Err(JournalError::Corrupt { .. })
        ));
    }
}
