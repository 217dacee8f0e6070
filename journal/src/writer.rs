//! The journal writer: group commit of records into segment files.
//!
//! [`JournalWriter::append`] only encodes into a reusable buffer; [`JournalWriter::commit`] writes
//! the whole batch and syncs once. The caller decides how large a batch is (typically everything
//! the ring had ready), which is how many commands share the cost of one `fdatasync`.
//!
//! Segments roll over between batches, never inside one, so a batch lands in one file and one sync
//! covers it. A new segment is created, its header written and synced, and the directory synced
//! before any record goes in; after a crash, a segment either exists with a complete header or is
//! recognised as torn by [`recover`](fn@crate::recover).

use std::fmt;
use std::time::Instant;

use crate::error::JournalError;
use crate::record::{encode_record, encode_segment_header, segment_name, SEGMENT_HEADER_LEN};
use crate::recover::Recovery;
use crate::storage::{Storage, StorageFile};

/// Settings of a [`JournalWriter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// A new segment is started before a batch once the current one has reached this many bytes. A
    /// segment can exceed it by one batch.
    pub segment_bytes_max: u64,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig { segment_bytes_max: 64 * 1024 * 1024 }
    }
}

/// What one [`JournalWriter::commit`] did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Records written.
    pub records: u64,
    /// Bytes written, including a new segment's header.
    pub bytes: u64,
    /// Time spent in the sync of the batch, in nanoseconds.
    pub sync_ns: u64,
}

/// Appends records to the journal in batches, one sync per batch.
pub struct JournalWriter<S: Storage> {
    storage: S,
    config: JournalConfig,
    /// The segment being appended to; `None` on an empty journal until the first commit.
    segment: Option<S::File>,
    /// Encoded records not yet committed. Cleared, never shrunk, so that after warm-up a batch
    /// costs no allocation.
    batch: Vec<u8>,
    batch_records: u64,
    /// The seq the next appended record must carry.
    next_seq: u64,
    bytes_written_total: u64,
    /// Set by a failed commit; see [`JournalWriter::commit`].
    failed: bool,
}

// By hand, so that debugging output shows the batch's size rather than its bytes, and so that the
// storage's file type need not be `Debug`.
impl<S: Storage + fmt::Debug> fmt::Debug for JournalWriter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalWriter")
            .field("storage", &self.storage)
            .field("config", &self.config)
            .field("segment_len", &self.segment.as_ref().map(StorageFile::len))
            .field("batch_records", &self.batch_records)
            .field("batch_bytes", &self.batch.len())
            .field("next_seq", &self.next_seq)
            .field("bytes_written_total", &self.bytes_written_total)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<S: Storage> JournalWriter<S> {
    /// Opens the journal for appending after [`recover`](fn@crate::recover).
    ///
    /// Appends continue in the last segment of `recovery`. On an empty journal the first segment is
    /// created by the first commit and starts at `recovery.next_seq`, which the caller may raise
    /// beforehand to continue after a snapshot; on a non-empty journal it must be what `recover`
    /// found.
    ///
    /// # Errors
    /// [`JournalError::RecoveryMismatch`] when `recovery` does not describe the storage (for example
    /// the result of `scan`, whose torn tail is still in place), or [`JournalError::Io`].
    pub fn open(
        storage: S,
        config: JournalConfig,
        recovery: &Recovery,
    ) -> Result<Self, JournalError> {
        let mut segment = None;
        let mut bytes_written_total = 0;
        if let Some(last) = recovery.segments.last() {
            if recovery.next_seq != last.next_seq() {
                return Err(JournalError::RecoveryMismatch(format!(
                    "next_seq is {} but the last segment {} continues at {}",
                    recovery.next_seq,
                    last.name,
                    last.next_seq()
                )));
            }
            let file = storage.open_append(&last.name)?;
            if file.len() != last.bytes {
                return Err(JournalError::RecoveryMismatch(format!(
                    "segment {} is {} bytes but recovery accounted for {}; use recover(), not scan()",
                    last.name,
                    file.len(),
                    last.bytes
                )));
            }
            segment = Some(file);
            bytes_written_total = recovery.segments.iter().map(|s| s.bytes).sum();
        }
        Ok(JournalWriter {
            storage,
            config,
            segment,
            batch: Vec::new(),
            batch_records: 0,
            next_seq: recovery.next_seq,
            bytes_written_total,
            failed: false,
        })
    }

    /// Encodes a record into the batch. No I/O: nothing is durable until [`commit`](Self::commit).
    ///
    /// # Panics
    /// When `seq` is not [`next_seq`](Self::next_seq), or the payload exceeds
    /// [`RECORD_PAYLOAD_MAX`](crate::RECORD_PAYLOAD_MAX): both are bugs in the caller, and writing
    /// such a record would make the journal unreadable.
    pub fn append(&mut self, seq: u64, at: u64, kind: u8, payload: &[u8]) {
        assert_eq!(seq, self.next_seq, "journal records must be appended in sequence");
        encode_record(&mut self.batch, seq, at, kind, payload);
        self.batch_records += 1;
        self.next_seq += 1;
    }

    /// Writes the batch and syncs it, once. With an empty batch it does nothing.
    ///
    /// When this returns `Ok`, every record appended so far is durable.
    ///
    /// # Errors
    /// On any I/O error. **The caller must then stop the process**; a restart recovers from what
    /// is on disk. A failed sync is never retried: after `fsync` fails, the kernel may already
    /// have dropped the dirty pages and marked them clean, so a second `fsync` can succeed without
    /// the data ever reaching the disk (the 2018 "fsyncgate" finding in PostgreSQL). This writer
    /// therefore refuses every later commit with [`JournalError::WriterFailed`].
    pub fn commit(&mut self) -> Result<CommitStats, JournalError> {
        if self.failed {
            return Err(JournalError::WriterFailed);
        }
        if self.batch_records == 0 {
            return Ok(CommitStats::default());
        }
        let result = self.write_batch();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn write_batch(&mut self) -> Result<CommitStats, JournalError> {
        let batch_first_seq = self.next_seq - self.batch_records;
        let mut bytes = 0;
        let must_roll = self.segment.as_ref().is_none_or(|file| {
            // A segment with no record yet is reused however small the limit, both to make progress
            // and because a new segment would need its name.
            file.len() >= self.config.segment_bytes_max && file.len() > SEGMENT_HEADER_LEN as u64
        });
        if must_roll {
            self.segment = Some(self.start_segment(batch_first_seq)?);
            bytes += SEGMENT_HEADER_LEN as u64;
        }
        let file = self.segment.as_mut().expect("a segment was just ensured");

        file.append(&self.batch)?;
        let sync_started = Instant::now();
        file.sync()?;
        let sync_ns = u64::try_from(sync_started.elapsed().as_nanos()).unwrap_or(u64::MAX);

        bytes += self.batch.len() as u64;
        self.bytes_written_total += bytes;
        let stats = CommitStats { records: self.batch_records, bytes, sync_ns };
        self.batch.clear();
        self.batch_records = 0;
        Ok(stats)
    }

    /// Creates the segment starting at `first_seq`, durably, before any record goes into it.
    fn start_segment(&mut self, first_seq: u64) -> Result<S::File, JournalError> {
        let name = segment_name(first_seq);
        let mut file = self.storage.create(&name)?;
        file.append(&encode_segment_header(first_seq))?;
        file.sync()?;
        self.storage.sync_dir()?;
        tracing::debug!(segment = %name, "started a journal segment");
        Ok(file)
    }

    /// The seq the next [`append`](Self::append) must carry.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes in all segments, counting the existing ones at open and every commit since.
    #[must_use]
    pub fn bytes_written_total(&self) -> u64 {
        self.bytes_written_total
    }

    /// The storage the journal is written to.
    #[must_use]
    pub fn storage(&self) -> &S {
        &self.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{recover, MemStorage};

    #[test]
    fn the_batch_buffer_is_reused_after_warm_up() {
        let storage = MemStorage::new();
        let recovery = recover(&storage).unwrap();
        let config = JournalConfig { segment_bytes_max: 4096 };
        let mut writer = JournalWriter::open(storage, config, &recovery).unwrap();
        let batch = |writer: &mut JournalWriter<MemStorage>| {
            for _ in 0..16 {
                writer.append(writer.next_seq(), 0, 0, &[7; 100]);
            }
            writer.commit().unwrap();
        };
        batch(&mut writer);
        let capacity = writer.batch.capacity();
        let pointer = writer.batch.as_ptr();
        for _ in 0..50 {
            batch(&mut writer);
        }
        assert_eq!(writer.batch.capacity(), capacity);
        assert_eq!(writer.batch.as_ptr(), pointer);
    }

    #[test]
    fn a_failed_commit_fails_every_later_one() {
        let storage = MemStorage::new();
        let recovery = recover(&storage).unwrap();
        let mut writer =
            JournalWriter::open(storage.clone(), JournalConfig::default(), &recovery).unwrap();
        writer.append(1, 0, 0, b"a");
        storage.fail_next_write();
        assert!(matches!(writer.commit(), Err(JournalError::Io(_))));
        assert!(matches!(writer.commit(), Err(JournalError::WriterFailed)));
        writer.append(2, 0, 0, b"b");
        assert!(matches!(writer.commit(), Err(JournalError::WriterFailed)));
    }
}
