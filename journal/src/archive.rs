//! Moving old segments out of the live journal once no reader needs them, so that the journal
//! (and the startup scan) stays as short as its readers need and the disk does not fill with
//! segments no start will read; and reading the moved segments back, for tools that look further
//! back than a start does.
//!
//! Which records are no longer needed is the caller's decision (the pipeline's retention rule
//! weighs the snapshots and the consumers of the journal); this module moves the segments that
//! hold nothing after it, and only those, into a second directory, the archive, from which an
//! operator backs them up or deletes them.
//!
//! Crash safety. A segment moves by one `rename` ([`Storage::move_into`]), so whenever the
//! machine stops it is in the journal or in the archive, never in neither, and its bytes are never
//! rewritten. Segments move oldest first, and both directories are synced after each move, so the
//! live journal is always a contiguous run of segments ending with the newest one: a move that
//! was not yet durable at a crash leaves one more old segment in the journal, which a later call
//! moves again.

use std::io;

use crate::error::JournalError;
use crate::record::parse_segment_name;
use crate::storage::Storage;

/// Moves every segment of `journal` whose records all have `seq <= through` into `archive`, oldest
/// first, and returns their names.
///
/// The last segment is never moved, since the writer appends to it. A segment's records are known
/// to end at or before `through` when the next segment starts at or before `through + 1`, so no
/// segment is read to decide; the caller must not name a `through` beyond what every reader of the
/// journal (the follower beside the writer included) has read.
///
/// # Errors
/// [`JournalError::Io`]; the segments moved before the failure stay moved, and the journal is
/// still contiguous.
pub fn archive_segments_through<S: Storage>(
    journal: &S,
    archive: &S,
    through: u64,
) -> Result<Vec<String>, JournalError> {
    let segments: Vec<(u64, String)> = journal
        .list()?
        .into_iter()
        .filter_map(|name| Some((parse_segment_name(&name)?, name)))
        .collect();
    let mut moved = Vec::new();
    for pair in segments.windows(2) {
        let [(_, name), (next_first_seq, _)] = pair else {
            unreachable!("windows(2) yields pairs");
        };
        if *next_first_seq > through.saturating_add(1) {
            break;
        }
        journal.move_into(name, archive)?;
        // The archive first: until the journal's directory is synced too, a crash may bring the
        // segment back into the journal, which is harmless; the other order could lose it.
        archive.sync_dir()?;
        journal.sync_dir()?;
        tracing::info!(segment = %name, through, "archived a journal segment no reader needs");
        moved.push(name.clone());
    }
    Ok(moved)
}

/// The archived segments followed by the live journal, read as one journal: for the operator's
/// tools, which look further back than a start does (`surge journal verify | inspect | replay`).
/// Every function of the journal that only reads ([`scan`](crate::scan),
/// [`read_from`](crate::read_from)) works on it, checking that the archive continues into the
/// journal like any two segments; everything that writes is refused.
///
/// A name in both directories (a copy put back into the journal, or a move a crash left
/// half-done in [`MemStorage`](crate::MemStorage)'s model) is read from the journal.
#[derive(Debug, Clone)]
pub struct WithArchive<S> {
    journal: S,
    archive: Option<S>,
}

impl<S: Storage> WithArchive<S> {
    /// The journal, behind the segments of `archive` when there is one.
    pub fn new(journal: S, archive: Option<S>) -> WithArchive<S> {
        WithArchive { journal, archive }
    }

    /// How many segments the archive holds that the journal does not.
    ///
    /// # Errors
    /// When a directory cannot be read.
    pub fn archived_segments(&self) -> io::Result<usize> {
        let Some(archive) = &self.archive else { return Ok(0) };
        let live = self.journal.list()?;
        Ok(archive
            .list()?
            .iter()
            .filter(|name| parse_segment_name(name).is_some() && !live.contains(name))
            .count())
    }

    fn refused() -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the journal read with its archive is read-only",
        )
    }

    /// Runs `read` on the journal, and on the archive when the journal has no such file.
    fn read_either<T>(&self, mut read: impl FnMut(&S) -> io::Result<T>) -> io::Result<T> {
        match (read(&self.journal), &self.archive) {
            (Err(error), Some(archive)) if error.kind() == io::ErrorKind::NotFound => read(archive),
            (result, _) => result,
        }
    }
}

impl<S: Storage> Storage for WithArchive<S> {
    type File = S::File;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = self.journal.list()?;
        if let Some(archive) = &self.archive {
            names.extend(archive.list()?);
            names.sort_unstable();
            names.dedup();
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.read_either(|storage| storage.read(name))
    }

    fn read_at(&self, name: &str, offset: u64, into: &mut [u8]) -> io::Result<usize> {
        self.read_either(|storage| storage.read_at(name, offset, into))
    }

    fn create(&self, _name: &str) -> io::Result<S::File> {
        Err(Self::refused())
    }

    fn open_append(&self, _name: &str) -> io::Result<S::File> {
        Err(Self::refused())
    }

    fn truncate(&self, _name: &str, _len: u64) -> io::Result<()> {
        Err(Self::refused())
    }

    fn rename(&self, _from: &str, _to: &str) -> io::Result<()> {
        Err(Self::refused())
    }

    fn remove(&self, _name: &str) -> io::Result<()> {
        Err(Self::refused())
    }

    fn sync_dir(&self) -> io::Result<()> {
        Err(Self::refused())
    }

    fn move_into(&self, _name: &str, _to: &Self) -> io::Result<()> {
        Err(Self::refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{read_from, recover, scan, JournalConfig, JournalWriter, MemStorage};
    use std::ops::ControlFlow;

    fn journal_of(records: u64) -> MemStorage {
        let storage = MemStorage::new();
        let recovery = recover(&storage).unwrap();
        let config = JournalConfig { segment_bytes_max: 100 };
        let mut writer = JournalWriter::open(storage.clone(), config, &recovery).unwrap();
        for seq in 1..=records {
            writer.append(seq, 0, 0, &[1; 20]);
            writer.commit().unwrap();
        }
        storage
    }

    fn seqs_from<S: Storage>(storage: &S, from: u64) -> Result<Vec<u64>, JournalError> {
        let mut seqs = Vec::new();
        read_from(storage, from, |record| {
            seqs.push(record.seq);
            ControlFlow::Continue(())
        })?;
        Ok(seqs)
    }

    #[test]
    fn moves_exactly_the_covered_segments_and_keeps_the_journal_readable() {
        let journal = journal_of(12);
        let before = scan(&journal).unwrap().segments;
        assert!(before.len() >= 4, "{before:?}");
        // Everything before segment 2 is covered; segment 2 itself holds `through + 1`.
        let through = before[2].first_seq;
        let archive = MemStorage::new();

        let moved = archive_segments_through(&journal, &archive, through).unwrap();
        assert_eq!(moved, [before[0].name.clone(), before[1].name.clone()]);
        for (name, info) in moved.iter().zip(&before) {
            assert_eq!(journal.bytes(name), None);
            assert!(archive.bytes(name).is_some());
            assert_eq!(archive.bytes(name).unwrap().len() as u64, info.bytes, "bytes untouched");
        }
        let after = recover(&journal).unwrap();
        assert_eq!(after.segments, before[2..]);
        assert_eq!(
            seqs_from(&journal, through + 1).unwrap(),
            (through + 1..=12).collect::<Vec<_>>()
        );
        assert!(matches!(
            seqs_from(&journal, 1),
            Err(JournalError::RecordsMissing { from: 1, .. })
        ));
        // Moving again through the same seq finds nothing more to move.
        assert!(archive_segments_through(&journal, &archive, through).unwrap().is_empty());
    }

    #[test]
    fn a_segment_holding_a_record_after_through_stays() {
        let journal = journal_of(12);
        let segments = scan(&journal).unwrap().segments;
        // `through` one short of segment 0's last record: segment 0 still holds a needed record.
        let through = segments[0].last_seq.unwrap() - 1;
        let moved = archive_segments_through(&journal, &MemStorage::new(), through).unwrap();
        assert!(moved.is_empty(), "{moved:?}");
        let through = segments[0].last_seq.unwrap();
        let moved = archive_segments_through(&journal, &MemStorage::new(), through).unwrap();
        assert_eq!(moved, [segments[0].name.clone()]);
    }

    #[test]
    fn never_moves_the_last_segment() {
        let journal = journal_of(12);
        let segments = scan(&journal).unwrap().segments;
        let moved = archive_segments_through(&journal, &MemStorage::new(), u64::MAX).unwrap();
        assert_eq!(moved.len(), segments.len() - 1);
        assert_eq!(scan(&journal).unwrap().segments, segments[segments.len() - 1..]);
    }

    #[test]
    fn a_crash_during_archiving_leaves_a_contiguous_journal_and_loses_no_segment() {
        for seed in 0..64 {
            let journal = journal_of(12);
            let archive = MemStorage::new();
            let segments = scan(&journal).unwrap().segments;
            // A failed directory sync stops the moves part way, as a crash would.
            let fail_after = usize::try_from(seed % 4).unwrap();
            let through = segments[3].first_seq;
            for segment in &segments[..fail_after] {
                journal.move_into(&segment.name, &archive).unwrap();
                archive.sync_dir().unwrap();
                journal.sync_dir().unwrap();
            }
            if fail_after < 3 {
                journal.move_into(&segments[fail_after].name, &archive).unwrap();
            }
            journal.crash(seed);
            archive.crash(seed.wrapping_mul(31));

            let live = recover(&journal).unwrap();
            let both = WithArchive::new(journal.clone(), Some(archive.clone()));
            assert_eq!(seqs_from(&both, 1).unwrap(), (1..=12).collect::<Vec<_>>(), "seed {seed}");
            assert_eq!(live.next_seq, 13, "seed {seed}");
            // A later pass finishes the job.
            archive_segments_through(&journal, &archive, through).unwrap();
            assert_eq!(scan(&journal).unwrap().segments[0].first_seq, through, "seed {seed}");
            assert_eq!(seqs_from(&both, 1).unwrap(), (1..=12).collect::<Vec<_>>(), "seed {seed}");
        }
    }

    #[test]
    fn the_archive_and_the_journal_read_as_one_journal() {
        let journal = journal_of(12);
        let archive = MemStorage::new();
        let through = scan(&journal).unwrap().segments[2].first_seq;
        let moved = archive_segments_through(&journal, &archive, through).unwrap();
        let both = WithArchive::new(journal.clone(), Some(archive.clone()));
        assert_eq!(both.archived_segments().unwrap(), moved.len());
        let whole = scan(&both).unwrap();
        assert_eq!((whole.next_seq, whole.torn_tail.clone()), (13, None));
        assert_eq!(whole.segments.len(), scan(&journal).unwrap().segments.len() + moved.len());
        assert_eq!(seqs_from(&both, 2).unwrap(), (2..=12).collect::<Vec<_>>());
        assert!(both.create("x").is_err() && both.remove(&moved[0]).is_err());
        assert_eq!(archive.list().unwrap(), moved, "reading changed nothing");

        // An archive with a segment missing in its middle is a gap, reported as damage.
        archive.remove(&moved[1]).unwrap();
        assert!(matches!(scan(&both), Err(JournalError::Corrupt { .. })));
        // Without the archive, the journal alone starts later.
        let alone = WithArchive::new(journal.clone(), None);
        assert_eq!(seqs_from(&alone, through).unwrap(), seqs_from(&journal, through).unwrap());
        assert_eq!(alone.archived_segments().unwrap(), 0);
    }
}
