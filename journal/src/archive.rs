//! Moving old segments out of the journal once a snapshot covers them, so that the journal (and the
//! startup scan) stays as short as the distance to the newest snapshot.

use crate::error::JournalError;
use crate::record::parse_segment_name;
use crate::storage::{Storage, StorageFile};

/// Moves every segment whose records all have `seq <= seq` from `journal` to `archive`, oldest
/// first, and returns their names. Call it with the seq of a snapshot that has been written.
///
/// The last segment is never moved, since the writer appends to it. A segment's records are known
/// to end at or before `seq` when the next segment starts at or before `seq + 1`, so no segment is
/// read to decide.
///
/// Each segment is copied and made durable in the archive before it is removed from the journal,
/// so a crash in between leaves it in both places, and the next call copies it again.
///
/// # Errors
/// [`JournalError::Io`]; segments moved before the failure stay moved.
pub fn archive_segments_before<S: Storage, A: Storage>(
    journal: &S,
    archive: &A,
    seq: u64,
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
        if *next_first_seq > seq.saturating_add(1) {
            break;
        }
        let bytes = journal.read(name)?;
        if archive.list()?.contains(name) {
            archive.remove(name)?;
        }
        let mut copy = archive.create(name)?;
        copy.append(&bytes)?;
        copy.sync()?;
        archive.sync_dir()?;
        journal.remove(name)?;
        journal.sync_dir()?;
        tracing::info!(segment = %name, "archived a journal segment covered by a snapshot");
        moved.push(name.clone());
    }
    Ok(moved)
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

    #[test]
    fn moves_exactly_the_covered_segments_and_keeps_the_journal_readable() {
        let journal = journal_of(12);
        let before = scan(&journal).unwrap().segments;
        assert!(before.len() >= 4, "{before:?}");
        // Everything before segment 2 is covered; segment 2 itself holds `seq` and `seq + 1`.
        let seq = before[2].first_seq;
        let archive = MemStorage::new();

        let moved = archive_segments_before(&journal, &archive, seq).unwrap();
        assert_eq!(moved, [before[0].name.clone(), before[1].name.clone()]);
        for name in &moved {
            assert_eq!(journal.bytes(name), None);
            assert!(archive.bytes(name).is_some());
        }
        let after = recover(&journal).unwrap();
        assert_eq!(after.segments, before[2..]);
        let mut seqs = Vec::new();
        read_from(&journal, seq + 1, |r| {
            seqs.push(r.seq);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seqs, (seq + 1..=12).collect::<Vec<_>>());
        assert!(matches!(
            read_from(&journal, 1, |_| ControlFlow::Continue(())),
            Err(JournalError::RecordsMissing { from: 1, .. })
        ));
    }

    #[test]
    fn never_moves_the_last_segment() {
        let journal = journal_of(12);
        let segments = scan(&journal).unwrap().segments;
        let moved = archive_segments_before(&journal, &MemStorage::new(), u64::MAX).unwrap();
        assert_eq!(moved.len(), segments.len() - 1);
        assert_eq!(scan(&journal).unwrap().segments, segments[segments.len() - 1..]);
    }
}
