//! Flipping every bit of every record and header: damage to anything but the last record is
//! corruption reported at the damaged record; damage to the last record may be cut as a torn tail,
//! but never costs another record.

mod common;

use std::ops::ControlFlow;

use common::{open, read_all, records, write_batches, Expected, Found};
use surge_journal::{read_from, recover, scan, JournalError, MemStorage, Storage};

/// A journal of 10 records in 2 segments.
fn pristine() -> (MemStorage, Vec<Found>) {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 200);
    write_batches(&mut writer, &[3, 2, 4, 1]);
    let found = read_all(&storage, 1).unwrap();
    assert_eq!(found.len(), 10);
    assert_eq!(scan(&storage).unwrap().segments.len(), 2);
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
fn a_flipped_bit_in_any_record_is_caught_at_that_record() {
    let (storage, found) = pristine();
    let mut torn_cases = 0;
    for (index, target) in found.iter().enumerate() {
        let is_last = index + 1 == found.len();
        let len = 28 + target.record.payload.len() as u64;
        for byte in 0..len {
            for bit in 0..8 {
                let damaged = copy(&storage);
                damaged.flip_bit(&target.segment, target.offset + byte, bit);
                let context = format!("seq {} byte {byte} bit {bit}", target.record.seq);
                match recover(&damaged) {
                    Err(JournalError::Corrupt { segment, offset, .. }) => {
                        assert_eq!(segment, target.segment, "{context}");
                        assert_eq!(offset, target.offset, "{context}");
                    }
                    Ok(recovery) => {
                        assert!(is_last, "{context}: damage before the last record was cut");
                        let torn = recovery.torn_tail.expect("damage was noticed");
                        assert_eq!(
                            (torn.segment, torn.offset),
                            (target.segment.clone(), target.offset)
                        );
                        torn_cases += 1;
                    }
                    Err(error) => panic!("{context}: {error}"),
                }
                // Whatever the verdict, every record before the damaged one reads back intact.
                let before: Vec<_> = found[..index].iter().map(|f| f.record.clone()).collect();
                let mut read = Vec::new();
                let _corrupt_or_done = read_from(&damaged, 1, |r| {
                    read.push(Expected {
                        seq: r.seq,
                        at: r.at,
                        kind: r.kind,
                        payload: r.payload.to_vec(),
                    });
                    ControlFlow::Continue(())
                });
                assert_eq!(read, before, "{context}");
                if is_last {
                    assert_eq!(records(&damaged), before, "{context}");
                }
            }
        }
    }
    // Otherwise the test above would pass without ever exercising the torn-tail branch.
    assert!(torn_cases > 0);
}

#[test]
fn a_flipped_bit_in_a_segment_header_is_corruption() {
    let (storage, found) = pristine();
    let mut segments: Vec<&str> = found.iter().map(|f| f.segment.as_str()).collect();
    segments.dedup();
    for name in segments {
        for byte in 0..32 {
            let damaged = copy(&storage);
            damaged.flip_bit(name, byte, 2);
            let error = recover(&damaged).expect_err("records follow the header");
            assert!(
                matches!(&error, JournalError::Corrupt { segment, offset: 0, .. } if segment == name),
                "{name} byte {byte}: {error}"
            );
        }
    }
}
