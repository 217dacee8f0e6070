//! The one error type of this crate.
//!
//! Only operating errors live here: I/O failures, damaged files, and a writer or recovery result that
//! does not match what is on storage. Programmer errors (appending out of sequence, a payload over
//! [`RECORD_PAYLOAD_MAX`](crate::RECORD_PAYLOAD_MAX)) are assertions instead, because no caller
//! could handle them better than by stopping.

use std::io;

/// What can go wrong while writing, scanning or reading the journal and its snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The storage failed. After a failed `sync` the process must stop: see
    /// [`JournalWriter::commit`](crate::JournalWriter::commit).
    #[error("journal I/O failed: {0}")]
    Io(#[from] io::Error),

    /// Damage that a crash cannot explain: a bad record followed by good ones, damage in a segment
    /// that is not the last, or a gap in the sequence between segments. Starting anyway would lose
    /// acknowledged commands, so recovery refuses and an operator has to look. A
    /// [`JournalTail`](crate::JournalTail) reports it for a bad record at or before the seq it was
    /// asked to read through, or a segment that does not continue the one before it.
    #[error("journal corrupt in segment {segment} at byte {offset}: {reason}")]
    Corrupt {
        /// File name of the damaged segment.
        segment: String,
        /// Byte offset in that file of the first bad header or record.
        offset: u64,
        /// What was wrong, for the operator.
        reason: String,
    },

    /// [`read_from`](crate::read_from) or [`JournalTail::open`](crate::JournalTail::open) was asked
    /// for records that the journal no longer holds (its first segment starts later), for example
    /// because segments were archived.
    #[error(
        "journal records from seq {from} were requested but the journal starts at seq {first_seq}"
    )]
    RecordsMissing {
        /// The first sequence number asked for.
        from: u64,
        /// The first sequence number the journal holds.
        first_seq: u64,
    },

    /// A [`JournalTail`](crate::JournalTail) was asked for records through a seq that the journal
    /// does not hold completely: the newest segment ends before record `seq`, or inside it, and no
    /// later segment exists. Either the caller asked for a seq the writer had not committed yet (a
    /// bug in the caller; asking again once it is committed works), or committed bytes were lost,
    /// or the record's length field was damaged to point past the end of the file.
    #[error(
        "journal record seq {seq} is not all there: segment {segment} ends before or inside it (it \
         starts at byte {offset})"
    )]
    NotWritten {
        /// The first seq asked for that is not complete.
        seq: u64,
        /// File name of the segment that ends too early.
        segment: String,
        /// Byte offset in that file where record `seq` starts or would start.
        offset: u64,
    },

    /// The [`Recovery`](crate::Recovery) given to [`JournalWriter::open`](crate::JournalWriter::open)
    /// does not describe the journal on storage: typically the result of `scan` (which leaves a torn
    /// tail in place) instead of `recover`, or a `next_seq` that would leave a gap.
    #[error("recovery result does not match the journal on storage: {0}")]
    RecoveryMismatch(String),

    /// An earlier commit failed, so what reached the disk is unknown; the writer refuses to go on.
    #[error("the journal writer failed earlier and accepts no more commits")]
    WriterFailed,
}
