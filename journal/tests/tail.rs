//! The journal tail against a writer in the same test: exactly the committed records arrive, once
//! and in order, across segment roll-overs, from any starting point, through breaks, and anything
//! missing or damaged at or before the seq asked for is an error at the right segment and offset.

mod common;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{open, read_all, record, write_batches, Expected, Found};
use proptest::prelude::*;
use surge_journal::record::{record_len, SEGMENT_HEADER_LEN};
use surge_journal::{
    scan, FsStorage, JournalConfig, JournalError, JournalTail, JournalWriter, MemStorage, Recovery,
    Storage,
};

/// Reads through `last`, returning what was delivered (also when the call fails) and the result.
fn read<S: Storage>(
    tail: &mut JournalTail<S>,
    last: u64,
) -> (Vec<Found>, Result<(), JournalError>) {
    let mut found = Vec::new();
    let result = tail.read_through(last, |r| {
        found.push(Found {
            record: Expected { seq: r.seq, at: r.at, kind: r.kind, payload: r.payload.to_vec() },
            segment: r.segment.to_owned(),
            offset: r.offset,
        });
        ControlFlow::Continue(())
    });
    (found, result)
}

/// Reads through `last`, which must succeed.
fn read_ok<S: Storage>(tail: &mut JournalTail<S>, last: u64) -> Vec<Found> {
    let (found, result) = read(tail, last);
    result.unwrap_or_else(|error| panic!("reading through {last}: {error}"));
    found
}

/// The segment and offset an error names, for errors that name one.
fn location(error: &JournalError) -> Option<(&str, u64)> {
    match error {
        JournalError::Corrupt { segment, offset, .. }
        | JournalError::NotWritten { segment, offset, .. } => Some((segment, *offset)),
        _ => None,
    }
}

fn last_committed<S: Storage>(writer: &JournalWriter<S>) -> u64 {
    writer.next_seq() - 1
}

fn segment_count(storage: &MemStorage) -> usize {
    scan(storage).unwrap().segments.len()
}

#[test]
fn committed_records_arrive_once_and_in_order_while_the_writer_appends() {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 1 << 20);
    // Opened before anything is written: it waits for the first segment.
    let mut tail = JournalTail::open(storage.clone(), 1).unwrap();
    assert_eq!(read_ok(&mut tail, 0), []);

    let mut delivered = Vec::new();
    for size in [1, 3, 7, 1, 20, 2, 64, 1, 1, 5] {
        write_batches(&mut writer, &[size]);
        let last = last_committed(&writer);
        delivered.extend(read_ok(&mut tail, last));
        assert_eq!(tail.next_seq(), last + 1);
        // Asking again, or for less, delivers nothing twice.
        assert_eq!(read_ok(&mut tail, last), []);
        assert_eq!(read_ok(&mut tail, last - 1), []);
    }
    // Exactly what the startup replay sees, locations included.
    assert_eq!(delivered, read_all(&storage, 1).unwrap());
    assert_eq!(delivered.len(), 105);
}

#[test]
fn one_read_spans_several_segments_and_reads_at_every_commit_cross_each_boundary() {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 200);
    let mut tail = JournalTail::open(storage.clone(), 1).unwrap();
    let mut every_commit = JournalTail::open(storage.clone(), 1).unwrap();
    let mut delivered = Vec::new();
    for size in [2, 5, 1, 9, 3, 3, 1, 12, 4, 1, 1, 6] {
        write_batches(&mut writer, &[size]);
        delivered.extend(read_ok(&mut every_commit, last_committed(&writer)));
    }
    assert!(segment_count(&storage) >= 6, "{} segments", segment_count(&storage));
    let all = read_all(&storage, 1).unwrap();
    assert_eq!(read_ok(&mut tail, last_committed(&writer)), all);
    assert_eq!(delivered, all);
}

#[test]
fn opening_anywhere_from_the_first_record_to_one_past_the_end() {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 150);
    write_batches(&mut writer, &[3, 1, 4, 1, 5, 9, 2, 6]);
    let all = read_all(&storage, 1).unwrap();
    let last = last_committed(&writer);
    let segments = scan(&storage).unwrap().segments;
    let boundaries: Vec<u64> = segments.iter().map(|s| s.first_seq).collect();
    // Otherwise the loop below would not cover both kinds of start.
    assert!(boundaries.len() >= 4);
    assert!((1..=last).any(|seq| !boundaries.contains(&seq)));

    for from in 1..=last + 1 {
        let mut tail = JournalTail::open(storage.clone(), from).unwrap();
        assert_eq!(tail.next_seq(), from);
        let index = usize::try_from(from - 1).unwrap();
        assert_eq!(read_ok(&mut tail, last), all[index..], "from {from}");
    }

    // One past the end: nothing yet, then what comes, into a new segment or not.
    let mut at_end = JournalTail::open(storage.clone(), last + 1).unwrap();
    assert_eq!(read_ok(&mut at_end, last), []);
    let written = write_batches(&mut writer, &[2, 1]);
    let found: Vec<Expected> =
        read_ok(&mut at_end, last_committed(&writer)).into_iter().map(|f| f.record).collect();
    assert_eq!(found, written);

    // Two past the end: the record before `from` is not there to walk over.
    let beyond = last_committed(&writer) + 2;
    match JournalTail::open(storage.clone(), beyond) {
        Err(JournalError::NotWritten { seq, .. }) => assert_eq!(seq, beyond - 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_journal_that_starts_after_from_reports_records_missing() {
    let storage = MemStorage::new();
    // As after a snapshot of seq 99: the journal's first segment starts at 100.
    let recovery = Recovery { next_seq: 100, torn_tail: None, segments: Vec::new() };
    let mut writer =
        JournalWriter::open(storage.clone(), JournalConfig::default(), &recovery).unwrap();
    // Opened on the empty journal, these cannot know yet where it will start.
    let mut early = JournalTail::open(storage.clone(), 50).unwrap();
    let mut exact = JournalTail::open(storage.clone(), 100).unwrap();
    write_batches(&mut writer, &[4]);

    let missing = |result: Result<_, JournalError>| {
        matches!(result, Err(JournalError::RecordsMissing { from: 50, first_seq: 100 }))
    };
    assert!(missing(JournalTail::open(storage.clone(), 50).map(|_| ())));
    assert!(missing(read(&mut early, 103).1));
    // The failure leaves the tail where it was asked to start, and says so again.
    assert_eq!(early.next_seq(), 50);
    assert!(missing(read(&mut early, 103).1));
    let seqs: Vec<u64> = read_ok(&mut exact, 103).iter().map(|f| f.record.seq).collect();
    assert_eq!(seqs, [100, 101, 102, 103]);
}

#[test]
fn breaking_stops_right_after_the_record_and_the_next_call_resumes_there() {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 120);
    write_batches(&mut writer, &[4, 3, 5, 2]);
    let all = read_all(&storage, 1).unwrap();
    let last = last_committed(&writer);
    for stop_at in 1..=last {
        let mut tail = JournalTail::open(storage.clone(), 1).unwrap();
        let mut seen = Vec::new();
        tail.read_through(last, |r| {
            seen.push(r.seq);
            if r.seq == stop_at {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(seen, (1..=stop_at).collect::<Vec<_>>());
        assert_eq!(tail.next_seq(), stop_at + 1);
        let rest = read_ok(&mut tail, last);
        assert_eq!(rest, all[usize::try_from(stop_at).unwrap()..], "stop at {stop_at}");
    }
}

#[test]
fn a_last_beyond_what_is_written_fails_until_the_writer_catches_up() {
    let storage = MemStorage::new();
    let mut tail = JournalTail::open(storage.clone(), 1).unwrap();
    // No segment at all yet.
    match read(&mut tail, 1) {
        (found, Err(JournalError::NotWritten { seq: 1, segment, offset: 0 })) => {
            assert!(found.is_empty());
            assert_eq!(segment, "00000000000000000001.seg");
        }
        other => panic!("{other:?}"),
    }

    let (mut writer, _) = open(storage.clone(), 100);
    write_batches(&mut writer, &[5]);
    let segment_end = |storage: &MemStorage| scan(storage).unwrap().segments.last().unwrap().bytes;
    let (found, result) = read(&mut tail, 8);
    // What is there is delivered before the error, which names where record 6 would start.
    assert_eq!(found.len(), 5);
    match result {
        Err(JournalError::NotWritten { seq: 6, segment, offset }) => {
            assert_eq!(segment, "00000000000000000001.seg");
            assert_eq!(offset, segment_end(&storage));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(tail.next_seq(), 6);

    write_batches(&mut writer, &[3]);
    let seqs: Vec<u64> = read_ok(&mut tail, 8).iter().map(|f| f.record.seq).collect();
    assert_eq!(seqs, [6, 7, 8]);

    // At a roll-over: the segment that will hold record 9 does not exist yet.
    assert!(segment_end(&storage) >= 100, "the next batch starts a new segment");
    let (found, result) = read(&mut tail, 9);
    assert!(found.is_empty());
    assert!(matches!(result, Err(JournalError::NotWritten { seq: 9, .. })), "{result:?}");
    write_batches(&mut writer, &[1]);
    let found = read_ok(&mut tail, 9);
    assert_eq!(found[0].segment, "00000000000000000009.seg");
}

#[test]
fn a_tail_opened_on_an_empty_journal_never_delivers_records_before_from() {
    let storage = MemStorage::new();
    let mut tail = JournalTail::open(storage.clone(), 5).unwrap();
    let (mut writer, _) = open(storage.clone(), 1 << 20);
    write_batches(&mut writer, &[3]);
    // The walk to record 5 stops at the end of record 3.
    let (found, result) = read(&mut tail, 6);
    assert!(found.is_empty());
    assert!(matches!(result, Err(JournalError::NotWritten { seq: 4, .. })), "{result:?}");
    assert_eq!(tail.next_seq(), 5);
    write_batches(&mut writer, &[4]);
    let seqs: Vec<u64> = read_ok(&mut tail, 7).iter().map(|f| f.record.seq).collect();
    assert_eq!(seqs, [5, 6, 7]);
}

/// A journal of 12 records in 3 segments, and its records with their locations.
fn pristine() -> (MemStorage, Vec<Found>) {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 150);
    write_batches(&mut writer, &[3, 2, 4, 1, 2]);
    let found = read_all(&storage, 1).unwrap();
    assert_eq!(found.len(), 12);
    assert_eq!(segment_count(&storage), 3);
    (storage, found)
}

fn copy(storage: &MemStorage) -> MemStorage {
    let copy = MemStorage::new();
    for name in storage.list().unwrap() {
        copy.set_bytes(&name, storage.bytes(&name).unwrap());
    }
    copy
}

#[test]
fn a_flipped_bit_at_or_before_last_is_an_error_at_that_record() {
    let (storage, found) = pristine();
    let last = found.last().unwrap().record.seq;
    for (index, target) in found.iter().enumerate() {
        let len = record_len(target.record.payload.len()) as u64;
        for byte in 0..len {
            for bit in 0..8 {
                let damaged = copy(&storage);
                damaged.flip_bit(&target.segment, target.offset + byte, bit);
                let context = format!("seq {} byte {byte} bit {bit}", target.record.seq);

                let mut tail = JournalTail::open(damaged.clone(), 1).unwrap();
                // Damage after `last` is none of the tail's business.
                assert_eq!(read_ok(&mut tail, target.record.seq - 1), found[..index], "{context}");
                let (delivered, result) = read(&mut tail, last);
                assert!(delivered.is_empty(), "{context}: {delivered:?}");
                let error = result.expect_err(&context);
                assert_eq!(
                    location(&error),
                    Some((target.segment.as_str(), target.offset)),
                    "{context}: {error}"
                );
                assert_eq!(tail.next_seq(), target.record.seq, "{context}");

                // Opening after the damaged record walks over it only within its segment.
                let from = target.record.seq + 1;
                // One past the end is read from the last segment, so it walks over the last record.
                let walks_over = found.get(index + 1).is_none_or(|f| f.segment == target.segment);
                match JournalTail::open(damaged, from) {
                    Ok(_) => assert!(!walks_over, "{context}: opened at {from}"),
                    Err(error) => {
                        assert!(walks_over, "{context}: {error}");
                        assert_eq!(
                            location(&error),
                            Some((target.segment.as_str(), target.offset)),
                            "{context}: {error}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_damaged_segment_header_is_corrupt_at_offset_zero() {
    let (storage, found) = pristine();
    let second = found.iter().find(|f| f.segment != found[0].segment).unwrap();
    for byte in 0..SEGMENT_HEADER_LEN as u64 {
        let damaged = copy(&storage);
        damaged.flip_bit(&second.segment, byte, 5);
        let mut tail = JournalTail::open(damaged.clone(), 1).unwrap();
        let (delivered, result) = read(&mut tail, second.record.seq);
        assert_eq!(delivered.len(), usize::try_from(second.record.seq - 1).unwrap());
        match result {
            Err(JournalError::Corrupt { segment, offset: 0, .. }) => {
                assert_eq!(segment, second.segment);
            }
            other => panic!("byte {byte}: {other:?}"),
        }
        assert!(JournalTail::open(damaged, second.record.seq).is_err(), "byte {byte}");
    }
}

#[test]
fn a_missing_segment_is_corrupt_not_unwritten() {
    let (storage, found) = pristine();
    let first = &found[0].segment;
    let middle = found.iter().find(|f| f.segment != *first).unwrap().segment.clone();
    storage.remove(&middle).unwrap();
    let mut tail = JournalTail::open(storage.clone(), 1).unwrap();
    let (delivered, result) = read(&mut tail, 12);
    assert!(delivered.iter().all(|f| f.segment == *first));
    let end_of_first =
        delivered.last().map(|f| f.offset + record_len(f.record.payload.len()) as u64);
    match result {
        Err(JournalError::Corrupt { segment, offset, reason }) => {
            assert_eq!((&segment, Some(offset)), (first, end_of_first), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// A writer thread and a tail over a real directory: the tail polls what the writer says is
/// committed, while the writer is busy writing the next batch.
#[test]
fn one_writer_thread_and_one_tail_over_the_file_system() {
    const RECORDS: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let committed = Arc::new(AtomicU64::new(0));
    // Opened on the empty directory, before the writer's first segment exists.
    let mut tail = JournalTail::open(storage.clone(), 1).unwrap();

    let writer = {
        let (storage, committed) = (storage.clone(), Arc::clone(&committed));
        std::thread::spawn(move || {
            let (mut writer, _) = open(storage, 16 * 1024);
            let mut size = 1;
            while writer.next_seq() <= RECORDS {
                let size_now = size.min(RECORDS + 1 - writer.next_seq());
                write_batches(&mut writer, &[usize::try_from(size_now).unwrap()]);
                committed.store(last_committed(&writer), Ordering::Release);
                size = size * 5 % 97 + 1;
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivered = Vec::new();
    while tail.next_seq() <= RECORDS {
        assert!(Instant::now() < deadline, "the tail is stuck at {}", tail.next_seq());
        delivered.extend(read_ok(&mut tail, committed.load(Ordering::Acquire)));
        std::thread::yield_now();
    }
    writer.join().unwrap();

    let expected: Vec<Expected> = (1..=RECORDS).map(record).collect();
    let records: Vec<Expected> = delivered.iter().map(|f| f.record.clone()).collect();
    assert_eq!(records, expected);
    assert_eq!(delivered, read_all(&storage, 1).unwrap());
    assert!(scan(&storage).unwrap().segments.len() > 4);
}

#[test]
fn a_flipped_bit_on_the_file_system_is_an_error_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let (mut writer, _) = open(storage.clone(), 300);
    write_batches(&mut writer, &[4, 4, 4, 4]);
    let found = read_all(&storage, 1).unwrap();
    let mut tail = JournalTail::open(storage.clone(), 1).unwrap();
    assert_eq!(read_ok(&mut tail, 6), found[..6]);

    let target = &found[9];
    let path = dir.path().join(&target.segment);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[usize::try_from(target.offset).unwrap() + 13] ^= 0x04;
    std::fs::write(&path, bytes).unwrap();

    let (delivered, result) = read(&mut tail, 16);
    assert_eq!(delivered, found[6..9]);
    let error = result.unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
    assert_eq!(location(&error), Some((target.segment.as_str(), target.offset)));
}

/// One step of the property test: a committed batch of records with these payload lengths, then
/// reads at points chosen among what is committed (and sometimes beyond), some of them broken off.
#[derive(Debug, Clone)]
struct Step {
    batch: Vec<usize>,
    reads: Vec<(prop::sample::Index, Option<prop::sample::Index>)>,
}

fn step() -> impl Strategy<Value = Step> {
    let batch = prop::collection::vec(prop_oneof![4 => 0..40usize, 1 => 40..2_000usize], 0..12);
    let reads = prop::collection::vec(
        (any::<prop::sample::Index>(), any::<Option<prop::sample::Index>>()),
        0..3,
    );
    (batch, reads).prop_map(|(batch, reads)| Step { batch, reads })
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as u8).wrapping_mul(13) ^ (i as u8)).collect()
}

proptest! {
    #[test]
    fn the_tail_delivers_exactly_what_the_writer_committed(
        segment_bytes_max in 40..4_000u64,
        first in step(),
        steps in prop::collection::vec(step(), 1..16),
        from_index: prop::sample::Index,
    ) {
        let storage = MemStorage::new();
        let (mut writer, _) = open(storage.clone(), segment_bytes_max);
        let mut expected = vec![Expected { seq: 0, at: 0, kind: 0, payload: Vec::new() }];
        let mut commit = |writer: &mut JournalWriter<MemStorage>, batch: &[usize]| {
            for &len in batch {
                let seq = writer.next_seq();
                let e = Expected { seq, at: seq * 11, kind: (seq % 5) as u8, payload: payload(seq, len) };
                writer.append(e.seq, e.at, e.kind, &e.payload);
                expected.push(e);
            }
            writer.commit().unwrap();
        };
        commit(&mut writer, &first.batch);
        let from = 1 + from_index.index(usize::try_from(writer.next_seq()).unwrap()) as u64;
        let mut tail = JournalTail::open(storage.clone(), from).unwrap();
        let mut delivered = Vec::new();

        for step in steps {
            commit(&mut writer, &step.batch);
            let last = last_committed(&writer);
            for (point, stop) in step.reads {
                let next = tail.next_seq();
                // From "nothing new" to two past the end.
                let ask = next - 1 + point.index(usize::try_from(last + 4 - next).unwrap()) as u64;
                let stop_after = stop.map(|stop| stop.index(8) as u64 + 1);
                let mut count = 0u64;
                let result = tail.read_through(ask, |r| {
                    delivered.push(Expected { seq: r.seq, at: r.at, kind: r.kind, payload: r.payload.to_vec() });
                    count += 1;
                    if Some(count) == stop_after { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
                });
                if ask > last && stop_after.is_none_or(|stop| stop > last + 1 - next) {
                    let is_not_written = matches!(result, Err(JournalError::NotWritten { seq, .. }) if seq == last + 1);
                    prop_assert!(is_not_written, "asked {} with {} committed: {:?}", ask, last, result);
                } else {
                    prop_assert!(result.is_ok(), "{:?}", result);
                }
                prop_assert_eq!(tail.next_seq(), next + count);
            }
        }
        let last = last_committed(&writer);
        let (rest, result) = read(&mut tail, last);
        prop_assert!(result.is_ok(), "{:?}", result);
        delivered.extend(rest.into_iter().map(|f| f.record));
        prop_assert_eq!(&delivered[..], &expected[usize::try_from(from).unwrap()..]);
    }
}
