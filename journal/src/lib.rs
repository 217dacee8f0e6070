//! Surge's journal: the durable, ordered log of every command, and the snapshot files that let a
//! restart replay only the log's tail.
//!
//! The journal stores opaque payloads. It knows sequence numbers, timestamps and a one-byte kind,
//! and nothing of the engine's commands, which the engine encodes itself.
//!
//! ```text
//!   engine thread                         startup
//!   ─────────────                         ───────
//!   append(seq, at, kind, payload) ×N     scan(journal)                    → records, torn tail
//!   commit()  → one write, one fsync      load_newest_snapshot(snapshots)  → state as of seq S
//!                                         read_from(journal, S + 1, apply) → replay
//!                                         (the caller decides: start, or refuse)
//!                                         repair(journal, &recovery)       → cut a torn tail
//!                                         JournalWriter::open(journal, .., &recovery)
//!
//!   follower thread, beside the writer
//!   ──────────────────────────────────
//!   JournalTail::open(journal, from)
//!   read_through(committed, apply)  ×N    → each record once, up to what the writer committed
//! ```
//!
//! - [`storage`]: the [`Storage`] trait, with [`FsStorage`] for disks and [`MemStorage`], which
//!   models what a power loss keeps and injects failed writes and syncs. Files are read whole
//!   ([`Storage::read`]) or from an offset into the caller's buffer ([`Storage::read_at`]).
//! - [`record`]: the bytes of segments and records (also specified in `docs/formats.md`).
//! - [`writer`]: [`JournalWriter`], group commit into segment files.
//! - [`recover`](mod@recover): [`scan`], [`recover`](fn@recover) and [`read_from`], and the rule
//!   that tells a crash's torn tail from damage that must stop the start.
//! - [`tail`]: [`JournalTail`], a second reader that follows the journal while the writer appends,
//!   through the seq it is told is committed; anything missing or bad up to there is an error,
//!   never the end, and nothing after it is looked at.
//! - [`snapshot`]: atomic snapshot files and loading the newest valid one.
//! - [`archive`]: moving segments no reader needs out of the journal into an archive directory,
//!   and [`WithArchive`], the two read as one journal by the operator's tools.
//!
//! Invariants, as absences: a record's bytes are never rewritten once synced; a failed sync is
//! never retried; recovery never cuts anything but the tail of the last segment; a snapshot is
//! never deleted for being invalid; a tail never looks at a record past the seq it is told is
//! committed.

pub mod archive;
pub mod error;
pub mod mem_storage;
pub mod record;
pub mod recover;
pub mod rng;
pub mod snapshot;
pub mod storage;
pub mod tail;
pub mod writer;

pub use archive::{archive_segments_through, WithArchive};
pub use error::JournalError;
pub use mem_storage::{MemFile, MemStorage};
pub use record::RECORD_PAYLOAD_MAX;
pub use recover::{read_from, recover, repair, scan, RecordRef, Recovery, SegmentInfo, TornTail};
pub use rng::SplitMix64;
pub use snapshot::{
    list_snapshots, load_newest_snapshot, load_newest_snapshot_at_most, newest_valid_snapshots,
    snapshot_seqs, write_snapshot, LoadedSnapshot, SnapshotInfo,
};
pub use storage::{FsFile, FsStorage, Storage, StorageFile};
pub use tail::JournalTail;
pub use writer::{CommitStats, JournalConfig, JournalWriter};
