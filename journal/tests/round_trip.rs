//! Records written in batches across many segments read back identical and in order, on both
//! storages; and the writer's and reader's edges: empty journals, reopening, starting after a
//! snapshot, and misuse.

mod common;

use std::ops::ControlFlow;

use common::{open, read_all, record, records, write_batches, Expected};
use proptest::prelude::*;
use surge_journal::{
    read_from, recover, scan, FsStorage, JournalConfig, JournalError, JournalWriter, MemStorage,
    Recovery, Storage,
};

const BATCHES: [usize; 12] = [1, 5, 2, 9, 1, 1, 7, 3, 12, 4, 6, 1];

fn round_trip<S: Storage + Clone>(storage: &S) {
    let (mut writer, recovery) = open(storage.clone(), 256);
    assert_eq!(recovery.next_seq, 1);
    let mut written = write_batches(&mut writer, &BATCHES);
    assert_eq!(written.len(), 52);
    assert_eq!(writer.next_seq(), 53);

    let recovery = scan(storage).unwrap();
    assert_eq!(recovery.next_seq, 53);
    assert_eq!(recovery.torn_tail, None);
    assert!(recovery.segments.len() >= 4, "{:?}", recovery.segments);
    for pair in recovery.segments.windows(2) {
        assert_eq!(pair[1].first_seq, pair[0].last_seq.unwrap() + 1);
    }
    let files_total: u64 = recovery
        .segments
        .iter()
        .map(|segment| storage.read(&segment.name).unwrap().len() as u64)
        .sum();
    assert_eq!(writer.bytes_written_total(), files_total);
    assert_eq!(records(storage), written);

    // Reopening continues the same sequence in the same journal.
    drop(writer);
    let (mut writer, recovery) = open(storage.clone(), 256);
    assert_eq!(recovery.next_seq, 53);
    assert_eq!(writer.bytes_written_total(), files_total);
    written.extend(write_batches(&mut writer, &[3, 1]));
    assert_eq!(records(storage), written);

    // Reading from the middle skips exactly what precedes it.
    for from in [1, 2, 20, 40, 56, 57, 100] {
        let tail: Vec<Expected> =
            read_all(storage, from).unwrap().into_iter().map(|found| found.record).collect();
        let skipped = usize::try_from(from - 1).unwrap().min(written.len());
        assert_eq!(tail, written[skipped..], "from {from}");
    }
}

#[test]
fn round_trip_in_memory() {
    round_trip(&MemStorage::new());
}

#[test]
fn round_trip_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(&dir.path().join("journal")).unwrap();
    round_trip(&storage);
    // Nothing but segments was left behind.
    let names = storage.list().unwrap();
    assert!(names.iter().all(|name| name.ends_with(".seg")), "{names:?}");
}

#[test]
fn a_torn_tail_on_disk_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let (mut writer, _) = open(storage.clone(), 1 << 20);
    let written = write_batches(&mut writer, &[3, 2]);
    drop(writer);
    let segment = dir.path().join("00000000000000000001.seg");
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(len - 3).unwrap();

    let recovery = recover(&storage).unwrap();
    let torn = recovery.torn_tail.unwrap();
    assert_eq!(torn.bytes_cut, len - 3 - torn.offset);
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), torn.offset);
    assert_eq!(records(&storage), written[..4]);
    assert_eq!(recovery.next_seq, 5);
}

#[test]
fn an_empty_journal_starts_at_seq_one_and_commits_nothing_for_an_empty_batch() {
    let storage = MemStorage::new();
    let recovery = scan(&storage).unwrap();
    assert_eq!(recovery, Recovery { next_seq: 1, torn_tail: None, segments: Vec::new() });
    assert_eq!(records(&storage), []);

    let (mut writer, _) = open(storage.clone(), 256);
    assert_eq!(writer.commit().unwrap().records, 0);
    // No segment is created before there is something to put in it.
    assert_eq!(storage.list().unwrap(), Vec::<String>::new());

    let stats = {
        let r = record(1);
        writer.append(r.seq, r.at, r.kind, &r.payload);
        writer.commit().unwrap()
    };
    assert_eq!(stats.records, 1);
    assert_eq!(stats.bytes, writer.bytes_written_total());
    assert_eq!(storage.list().unwrap(), ["00000000000000000001.seg"]);
}

#[test]
fn a_journal_can_start_after_a_snapshot() {
    let storage = MemStorage::new();
    let mut recovery = recover(&storage).unwrap();
    recovery.next_seq = 101;
    let mut writer =
        JournalWriter::open(storage.clone(), JournalConfig::default(), &recovery).unwrap();
    let written = write_batches(&mut writer, &[2]);
    assert_eq!(written[0].seq, 101);
    assert_eq!(storage.list().unwrap(), ["00000000000000000101.seg"]);

    let found: Vec<Expected> =
        read_all(&storage, 101).unwrap().into_iter().map(|f| f.record).collect();
    assert_eq!(found, written);
    assert!(matches!(
        read_all(&storage, 100),
        Err(JournalError::RecordsMissing { from: 100, first_seq: 101 })
    ));
    assert_eq!(scan(&storage).unwrap().next_seq, 103);
}

#[test]
fn read_from_stops_when_asked() {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 128);
    write_batches(&mut writer, &[10, 10]);
    let mut seen = Vec::new();
    read_from(&storage, 3, |r| {
        seen.push(r.seq);
        if r.seq == 15 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(seen, (3..=15).collect::<Vec<_>>());
}

#[test]
fn the_writer_refuses_a_recovery_that_left_the_torn_tail() {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 1 << 20);
    write_batches(&mut writer, &[3]);
    drop(writer);
    let name = "00000000000000000001.seg";
    let mut bytes = storage.bytes(name).unwrap();
    bytes.truncate(bytes.len() - 1);
    storage.set_bytes(name, bytes);

    let scanned = scan(&storage).unwrap();
    assert!(scanned.torn_tail.is_some());
    assert!(matches!(
        JournalWriter::open(storage.clone(), JournalConfig::default(), &scanned),
        Err(JournalError::RecoveryMismatch(_))
    ));

    let mut gapped = recover(&storage).unwrap();
    gapped.next_seq += 1;
    assert!(matches!(
        JournalWriter::open(storage, JournalConfig::default(), &gapped),
        Err(JournalError::RecoveryMismatch(_))
    ));
}

#[test]
#[should_panic(expected = "appended in sequence")]
fn appending_out_of_sequence_is_a_programmer_error() {
    let (mut writer, _) = open(MemStorage::new(), 256);
    writer.append(2, 0, 0, b"");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any batching, any segment size, any reopen points: the journal reads back exactly what was
    /// committed.
    #[test]
    fn any_batching_reads_back_what_was_committed(
        batches in proptest::collection::vec(0usize..20, 1..20),
        reopen_after in proptest::collection::vec(any::<bool>(), 20),
        segment_bytes_max in 40u64..2_000,
    ) {
        let storage = MemStorage::new();
        let (mut writer, _) = open(storage.clone(), segment_bytes_max);
        let mut written = Vec::new();
        for (index, &size) in batches.iter().enumerate() {
            written.extend(write_batches(&mut writer, &[size]));
            if reopen_after[index] {
                drop(writer);
                writer = open(storage.clone(), segment_bytes_max).0;
            }
        }
        let recovery = scan(&storage).unwrap();
        prop_assert_eq!(recovery.next_seq, written.len() as u64 + 1);
        prop_assert_eq!(recovery.torn_tail, None);
        prop_assert_eq!(records(&storage), written);
    }
}
