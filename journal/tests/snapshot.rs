//! Snapshot files: the newest valid one is loaded, damaged ones and leftovers of crashed writes are
//! passed over (and kept), and a crash mid-write never leaves an invalid snapshot in charge.

mod common;

use surge_journal::SplitMix64 as Rng;
use surge_journal::{
    list_snapshots, load_newest_snapshot, write_snapshot, FsStorage, LoadedSnapshot, MemStorage,
    SnapshotInfo, Storage,
};

#[test]
fn the_newest_snapshot_is_loaded() {
    let storage = MemStorage::new();
    assert_eq!(load_newest_snapshot(&storage).unwrap(), None);
    write_snapshot(&storage, 10, 100, b"state at 10").unwrap();
    let name = write_snapshot(&storage, 25, 250, b"state at 25").unwrap();
    assert_eq!(name, "00000000000000000025.snap");
    assert_eq!(
        load_newest_snapshot(&storage).unwrap(),
        Some(LoadedSnapshot { seq: 25, at: 250, payload: b"state at 25".to_vec(), name })
    );
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_to_the_older_one_and_is_kept() {
    let storage = MemStorage::new();
    write_snapshot(&storage, 10, 100, b"state at 10").unwrap();
    let newest = write_snapshot(&storage, 25, 250, b"state at 25").unwrap();
    storage.flip_bit(&newest, 50, 0);

    let loaded = load_newest_snapshot(&storage).unwrap().unwrap();
    assert_eq!((loaded.seq, loaded.payload.as_slice()), (10, &b"state at 10"[..]));
    assert!(storage.bytes(&newest).is_some(), "an invalid snapshot is never deleted");
    assert_eq!(
        list_snapshots(&storage).unwrap(),
        [
            SnapshotInfo { name: "00000000000000000010.snap".into(), seq: 10, valid: true },
            SnapshotInfo { name: newest, seq: 25, valid: false },
        ]
    );
}

#[test]
fn temporary_files_are_ignored_and_replaced() {
    let storage = MemStorage::new();
    write_snapshot(&storage, 10, 100, b"state at 10").unwrap();
    // A complete-looking snapshot that never got renamed, and one cut short.
    let complete = storage.bytes("00000000000000000010.snap").unwrap();
    storage.set_bytes("00000000000000000030.snap.tmp", complete);
    storage.set_bytes("00000000000000000040.snap.tmp", b"SURGE".to_vec());

    assert_eq!(load_newest_snapshot(&storage).unwrap().unwrap().seq, 10);
    assert_eq!(list_snapshots(&storage).unwrap().len(), 1);

    // Writing the snapshot a crashed attempt left behind succeeds and removes the leftover.
    write_snapshot(&storage, 40, 400, b"state at 40").unwrap();
    assert_eq!(load_newest_snapshot(&storage).unwrap().unwrap().seq, 40);
    assert_eq!(storage.bytes("00000000000000000040.snap.tmp"), None);
}

#[test]
fn a_crash_while_writing_leaves_a_valid_snapshot_in_charge() {
    for seed in 0..300 {
        let mut rng = Rng::new(seed);
        let storage = MemStorage::new();
        write_snapshot(&storage, 10, 100, b"state at 10").unwrap();
        match rng.below(4) {
            0 => storage.fail_next_sync(),
            1 => storage.fail_next_write(),
            _ => {}
        }
        let payload = vec![0x5A; usize::try_from(rng.below(200)).unwrap()];
        let written = write_snapshot(&storage, 20, 200, &payload).is_ok();
        storage.crash(seed);

        let loaded = load_newest_snapshot(&storage).unwrap().expect("snapshot 10 is durable");
        if written {
            assert_eq!(loaded.seq, 20, "seed {seed}: a written snapshot was lost");
        }
        if loaded.seq == 20 {
            assert_eq!(loaded.payload, payload, "seed {seed}");
        }
        // No crash leaves a `.snap` that fails to verify: the rename only follows a sync.
        assert!(list_snapshots(&storage).unwrap().iter().all(|info| info.valid), "seed {seed}");
    }
}

#[test]
fn snapshots_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(&dir.path().join("snapshots")).unwrap();
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let name = write_snapshot(&storage, 7, 70, &payload).unwrap();
    assert_eq!(storage.list().unwrap(), [name]);
    let loaded = load_newest_snapshot(&storage).unwrap().unwrap();
    assert_eq!((loaded.seq, loaded.at, loaded.payload), (7, 70, payload));
}
