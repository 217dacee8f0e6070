//! Helpers shared by the integration tests: a deterministic record generator, a way to write a
//! journal in batches, and a way to read everything back.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::ops::ControlFlow;

use surge_journal::{
    read_from, recover, JournalConfig, JournalError, JournalWriter, Recovery, Storage,
};

/// A record as the tests expect to read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub seq: u64,
    pub at: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// A record as read back, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub record: Expected,
    pub segment: String,
    pub offset: u64,
}

/// The record the tests write for `seq`: payload lengths vary (including empty) so that record
/// boundaries fall at irregular offsets.
pub fn record(seq: u64) -> Expected {
    let len = usize::try_from(seq * 7 % 23).unwrap();
    Expected {
        seq,
        at: 1_000_000 + seq * 3,
        kind: u8::try_from(seq % 3).unwrap(),
        payload: (0..len).map(|i| (seq as u8).wrapping_mul(31) ^ i as u8).collect(),
    }
}

/// Appends `record(seq)` for the next seqs in batches of the given sizes, committing each.
pub fn write_batches<S: Storage>(
    writer: &mut JournalWriter<S>,
    batch_sizes: &[usize],
) -> Vec<Expected> {
    let mut written = Vec::new();
    for &size in batch_sizes {
        for _ in 0..size {
            let expected = record(writer.next_seq());
            writer.append(expected.seq, expected.at, expected.kind, &expected.payload);
            written.push(expected);
        }
        writer.commit().expect("commit succeeds");
    }
    written
}

/// Recovers `storage` and opens a writer on it.
pub fn open<S: Storage>(storage: S, segment_bytes_max: u64) -> (JournalWriter<S>, Recovery) {
    let recovery = recover(&storage).expect("recovery succeeds");
    let writer = JournalWriter::open(storage, JournalConfig { segment_bytes_max }, &recovery)
        .expect("writer opens");
    (writer, recovery)
}

/// Every record from `from` on.
pub fn read_all<S: Storage>(storage: &S, from: u64) -> Result<Vec<Found>, JournalError> {
    let mut found = Vec::new();
    read_from(storage, from, |r| {
        found.push(Found {
            record: Expected { seq: r.seq, at: r.at, kind: r.kind, payload: r.payload.to_vec() },
            segment: r.segment.to_owned(),
            offset: r.offset,
        });
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

/// The records of `read_all`, without their locations.
pub fn records<S: Storage>(storage: &S) -> Vec<Expected> {
    read_all(storage, 1).expect("journal reads").into_iter().map(|found| found.record).collect()
}
