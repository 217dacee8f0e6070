//! Power loss at seeded moments, through [`MemStorage::crash`]: every commit that returned `Ok`
//! survives, and what recovery finds is always a prefix of what was appended. Also: failed writes
//! and syncs surface as errors from `commit`.

mod common;

use common::{open, record, records, Expected};
// The same sequence for every seed, so failures replay.
use surge_journal::SplitMix64 as Rng;
use surge_journal::{JournalError, JournalWriter, MemStorage};

/// Appends `count` records and commits them; returns them and whether the commit succeeded.
fn append_and_commit(writer: &mut JournalWriter<MemStorage>, count: u64) -> (Vec<Expected>, bool) {
    let batch: Vec<Expected> = (0..count).map(|i| record(writer.next_seq() + i)).collect();
    for r in &batch {
        writer.append(r.seq, r.at, r.kind, &r.payload);
    }
    (batch, writer.commit().is_ok())
}

/// What recoveries had to cut, to show that the crashes did tear something.
#[derive(Default)]
struct Cuts {
    torn_records: u32,
    torn_headers: u32,
}

/// One seeded life: several boots, each committing batches until a fault or a crash.
fn run(seed: u64, cuts: &mut Cuts) {
    let mut rng = Rng::new(seed);
    let storage = MemStorage::new();
    let segment_bytes_max = 64 + rng.below(400);
    // Records as they stand on "disk" as far as the model knows: committed ones are certain,
    // appended-but-failed ones may or may not have survived.
    let mut committed: Vec<Expected> = Vec::new();

    for boot in 0..6 {
        let (mut writer, recovery) = open(storage.clone(), segment_bytes_max);
        let found = records(&storage);
        assert!(
            found.len() >= committed.len() && found[..committed.len()] == committed[..],
            "seed {seed} boot {boot}: lost a committed record"
        );
        assert_eq!(recovery.next_seq, found.len() as u64 + 1, "seed {seed} boot {boot}");
        match recovery.torn_tail {
            Some(torn) if torn.offset == 0 => cuts.torn_headers += 1,
            Some(_) => cuts.torn_records += 1,
            None => {}
        }
        // What survived is now the ground truth: the next records reuse the seqs of lost ones.
        committed = found;

        let mut appended = committed.clone();
        for _ in 0..rng.below(8) {
            let (batch, ok) = append_and_commit(&mut writer, 1 + rng.below(6));
            assert!(ok, "seed {seed}: a commit without an injected fault failed");
            appended.extend(batch.iter().cloned());
            committed.extend(batch);
        }
        // End the boot with a fault mid-commit, which leaves written but unsynced bytes (or an
        // unsynced new segment) for the crash to tear, or with a clean stop.
        match rng.below(3) {
            0 => storage.fail_next_sync(),
            1 => storage.fail_next_write(),
            _ => {}
        }
        let (batch, ok) = append_and_commit(&mut writer, 1 + rng.below(6));
        appended.extend(batch.iter().cloned());
        if ok {
            committed.extend(batch);
        }
        drop(writer);
        storage.crash(seed.wrapping_mul(31).wrapping_add(boot));

        let found = records(&storage);
        assert!(
            found.len() <= appended.len() && found == appended[..found.len()],
            "seed {seed} boot {boot}: recovered records are not a prefix of the appended ones"
        );
    }
}

#[test]
fn committed_records_survive_crashes_and_recovery_is_a_prefix() {
    let mut cuts = Cuts::default();
    for seed in 0..400 {
        run(seed, &mut cuts);
    }
    assert!(cuts.torn_records > 0 && cuts.torn_headers > 0, "the crashes never tore a write");
}

#[test]
fn a_failed_sync_fails_the_commit() {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 1 << 20);
    assert!(append_and_commit(&mut writer, 2).1);
    storage.fail_next_sync();
    let r = record(3);
    writer.append(r.seq, r.at, r.kind, &r.payload);
    assert!(matches!(writer.commit(), Err(JournalError::Io(_))));
    // Never retried, even though the storage would now succeed.
    assert!(matches!(writer.commit(), Err(JournalError::WriterFailed)));
}

#[test]
fn a_failed_sync_while_starting_a_segment_fails_the_commit() {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 1);
    assert!(append_and_commit(&mut writer, 1).1);
    // The next commit rolls to a new segment; its header's sync fails.
    storage.fail_next_sync();
    assert!(!append_and_commit(&mut writer, 1).1);
    assert!(matches!(writer.commit(), Err(JournalError::WriterFailed)));
}

#[test]
fn a_failed_write_fails_the_commit_and_writes_nothing() {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 1 << 20);
    let (first, ok) = append_and_commit(&mut writer, 2);
    assert!(ok);
    storage.fail_next_write();
    assert!(!append_and_commit(&mut writer, 1).1);
    drop(writer);
    assert_eq!(records(&storage), first);
}
