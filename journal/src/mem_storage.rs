//! An in-memory [`Storage`] that models durability and injects faults, for tests and the simulator.
//!
//! Every file keeps two parts: bytes that were synced (durable) and bytes appended since (in the
//! "page cache"). The directory likewise keeps its entries as of the last `sync_dir` and the
//! creates, renames and removes done since. [`MemStorage::crash`] then plays a power loss the way a
//! file system may: metadata operations survive as an ordered prefix (what a journaling file system
//! such as ext4 gives), and each file keeps its durable bytes plus a seeded, possibly garbled, prefix
//! of the bytes that were not synced. A file whose creation was never made durable vanishes with
//! everything in it, synced or not, which is exactly why a new segment is followed by `sync_dir`.
//!
//! Everything is seeded, so a failing simulation replays exactly from its seed.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::rng::SplitMix64;
use crate::storage::{Storage, StorageFile};

/// A handle to a shared in-memory directory. Clones share the same directory, so a test can keep one
/// handle to crash or corrupt files while the journal writes through another.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    dir: Arc<Mutex<Dir>>,
}

type InodeId = u64;

#[derive(Debug, Default)]
struct Dir {
    inodes: BTreeMap<InodeId, Inode>,
    inode_id_next: InodeId,
    /// The directory as reads see it now.
    names: BTreeMap<String, InodeId>,
    /// The directory as of the last `sync_dir`.
    names_durable: BTreeMap<String, InodeId>,
    /// Operations since the last `sync_dir`, oldest first; `names` is `names_durable` with all of
    /// them applied.
    operations_pending: Vec<DirOperation>,
    /// Bumped by every crash, so that file handles from before it fail instead of writing into the
    /// new "boot".
    epoch: u64,
    fail_next_sync: bool,
    fail_next_write: bool,
}

#[derive(Debug, Default)]
struct Inode {
    synced: Vec<u8>,
    unsynced: Vec<u8>,
}

impl Inode {
    fn len(&self) -> u64 {
        (self.synced.len() + self.unsynced.len()) as u64
    }

    fn content(&self) -> Vec<u8> {
        let mut content = Vec::with_capacity(self.synced.len() + self.unsynced.len());
        content.extend_from_slice(&self.synced);
        content.extend_from_slice(&self.unsynced);
        content
    }
}

#[derive(Debug, Clone)]
enum DirOperation {
    Create { name: String, inode: InodeId },
    Rename { from: String, to: String },
    Remove { name: String },
}

impl DirOperation {
    fn apply(&self, names: &mut BTreeMap<String, InodeId>) {
        match self {
            DirOperation::Create { name, inode } => {
                names.insert(name.clone(), *inode);
            }
            DirOperation::Rename { from, to } => {
                if let Some(inode) = names.remove(from) {
                    names.insert(to.clone(), inode);
                }
            }
            DirOperation::Remove { name } => {
                names.remove(name);
            }
        }
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file named {name}"))
}

impl Dir {
    fn inode_of(&self, name: &str) -> io::Result<InodeId> {
        self.names.get(name).copied().ok_or_else(|| not_found(name))
    }

    fn record(&mut self, operation: DirOperation) {
        operation.apply(&mut self.names);
        self.operations_pending.push(operation);
    }

    /// Drops the data of files that no name refers to any more, durably or not.
    fn collect_garbage(&mut self) {
        let Dir { inodes, names, names_durable, .. } = self;
        inodes.retain(|id, _| {
            names.values().any(|n| n == id) || names_durable.values().any(|n| n == id)
        });
    }

    fn take_fault(flag: &mut bool, what: &str) -> io::Result<()> {
        if std::mem::take(flag) {
            return Err(io::Error::other(format!("injected {what} failure")));
        }
        Ok(())
    }
}

impl MemStorage {
    /// An empty directory.
    #[must_use]
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    fn dir(&self) -> MutexGuard<'_, Dir> {
        // Nothing panics while the lock is held except the test helpers' argument assertions, which
        // run before any change, so the state behind a poisoned lock is still consistent.
        self.dir.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Simulates a power loss and reboot, seeded by `rng_seed`.
    ///
    /// - Of the creates, renames and removes since the last `sync_dir`, an ordered prefix survives
    ///   (possibly none, possibly all). Files whose names are gone lose all their data.
    /// - Of each file's unsynced bytes, a prefix survives (possibly none, possibly all); sometimes the
    ///   last surviving bytes are garbled, as a torn sector would be.
    /// - Synced bytes of files whose names survive are never lost.
    /// - File handles opened before the crash fail from now on; pending injected faults are cleared.
    pub fn crash(&self, rng_seed: u64) {
        let mut rng = SplitMix64::new(rng_seed);
        let mut dir = self.dir();
        let dir = &mut *dir;

        let operations = std::mem::take(&mut dir.operations_pending);
        let operations_kept = rng.below(operations.len() as u64 + 1);
        let mut names = std::mem::take(&mut dir.names_durable);
        for operation in
            operations.iter().take(usize::try_from(operations_kept).unwrap_or(usize::MAX))
        {
            operation.apply(&mut names);
        }
        dir.names.clone_from(&names);
        dir.names_durable = names;
        dir.collect_garbage();

        for inode in dir.inodes.values_mut() {
            let unsynced = std::mem::take(&mut inode.unsynced);
            if unsynced.is_empty() {
                continue;
            }
            let len = unsynced.len() as u64;
            // Whole-or-nothing outcomes are common in practice and are the edges worth hitting, so
            // each gets a quarter of the probability; the rest is a torn write at a uniform point.
            let kept = match rng.below(4) {
                0 => 0,
                1 => len,
                _ => rng.below(len + 1),
            };
            let kept = usize::try_from(kept).expect("kept <= unsynced.len()");
            let start = inode.synced.len();
            inode.synced.extend_from_slice(&unsynced[..kept]);
            if kept > 0 && rng.below(4) == 0 {
                let garbled = 1 + rng.below(kept.min(16) as u64);
                let garbled = usize::try_from(garbled).expect("garbled <= 16");
                for byte in &mut inode.synced[start + kept - garbled..] {
                    // Or-ing in 1 makes the xor mask non-zero, so the byte really changes.
                    *byte ^= (rng.next_u64() as u8) | 1;
                }
            }
        }

        dir.epoch += 1;
        dir.fail_next_sync = false;
        dir.fail_next_write = false;
    }

    /// Makes the next `sync` (of a file, or `sync_dir`) fail; a failed file sync leaves its bytes
    /// unsynced.
    pub fn fail_next_sync(&self) {
        self.dir().fail_next_sync = true;
    }

    /// Makes the next `append` fail without writing anything.
    pub fn fail_next_write(&self) {
        self.dir().fail_next_write = true;
    }

    /// Inverts bit `bit` (0..8) of the byte at `byte_offset` of file `name`, as media corruption would.
    ///
    /// # Panics
    /// When the file does not exist, the offset is past its end, or `bit >= 8`.
    pub fn flip_bit(&self, name: &str, byte_offset: u64, bit: u8) {
        assert!(bit < 8, "bit {bit} is not in 0..8");
        let mut dir = self.dir();
        let id = dir.inode_of(name).expect("flip_bit: file exists");
        let inode = dir.inodes.get_mut(&id).expect("a named inode exists");
        let offset = usize::try_from(byte_offset).expect("offset fits in memory");
        let synced_len = inode.synced.len();
        let byte = if offset < synced_len {
            &mut inode.synced[offset]
        } else {
            inode
                .unsynced
                .get_mut(offset - synced_len)
                .expect("flip_bit: offset is inside the file")
        };
        *byte ^= 1 << bit;
    }

    /// The content of file `name` as a read would see it, or `None` when there is no such file.
    #[must_use]
    pub fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        let dir = self.dir();
        let id = dir.names.get(name)?;
        Some(dir.inodes[id].content())
    }

    /// Replaces the content of file `name` (creating it if needed) with `bytes`, all durable, and makes
    /// the name durable too. For tests that cut or rewrite files.
    pub fn set_bytes(&self, name: &str, bytes: Vec<u8>) {
        let mut dir = self.dir();
        let id = match dir.names.get(name) {
            Some(&id) => id,
            None => {
                let id = dir.inode_id_next;
                dir.inode_id_next += 1;
                dir.names.insert(name.to_owned(), id);
                dir.names_durable.insert(name.to_owned(), id);
                id
            }
        };
        dir.inodes.insert(id, Inode { synced: bytes, unsynced: Vec::new() });
    }
}

impl Storage for MemStorage {
    type File = MemFile;

    fn list(&self) -> io::Result<Vec<String>> {
        // A BTreeMap iterates in key order, so the names come out sorted.
        Ok(self.dir().names.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.bytes(name).ok_or_else(|| not_found(name))
    }

    fn read_at(&self, name: &str, offset: u64, into: &mut [u8]) -> io::Result<usize> {
        let dir = self.dir();
        let inode = &dir.inodes[&dir.inode_of(name)?];
        // An offset beyond what memory can hold is past the end of any file here.
        let mut offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let mut read = 0;
        for part in [&inode.synced, &inode.unsynced] {
            if offset >= part.len() {
                offset -= part.len();
                continue;
            }
            let count = (part.len() - offset).min(into.len() - read);
            into[read..read + count].copy_from_slice(&part[offset..offset + count]);
            read += count;
            offset = 0;
        }
        Ok(read)
    }

    fn create(&self, name: &str) -> io::Result<MemFile> {
        let mut dir = self.dir();
        if dir.names.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("file {name} exists"),
            ));
        }
        let inode = dir.inode_id_next;
        dir.inode_id_next += 1;
        dir.inodes.insert(inode, Inode::default());
        dir.record(DirOperation::Create { name: name.to_owned(), inode });
        Ok(MemFile { dir: Arc::clone(&self.dir), inode, epoch: dir.epoch })
    }

    fn open_append(&self, name: &str) -> io::Result<MemFile> {
        let dir = self.dir();
        let inode = dir.inode_of(name)?;
        Ok(MemFile { dir: Arc::clone(&self.dir), inode, epoch: dir.epoch })
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut dir = self.dir();
        let id = dir.inode_of(name)?;
        let inode = dir.inodes.get_mut(&id).expect("a named inode exists");
        let mut content = inode.content();
        // Like `ftruncate`, growing a file fills it with zeros.
        content.resize(usize::try_from(len).map_err(io::Error::other)?, 0);
        inode.synced = content;
        inode.unsynced.clear();
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut dir = self.dir();
        dir.inode_of(from)?;
        dir.record(DirOperation::Rename { from: from.to_owned(), to: to.to_owned() });
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut dir = self.dir();
        dir.inode_of(name)?;
        dir.record(DirOperation::Remove { name: name.to_owned() });
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut dir = self.dir();
        Dir::take_fault(&mut dir.fail_next_sync, "directory sync")?;
        dir.names_durable = dir.names.clone();
        dir.operations_pending.clear();
        dir.collect_garbage();
        Ok(())
    }

    /// The two directories are separate in memory, so the move is modelled as a copy that is
    /// durable in `to` at once, followed by a remove from this directory that, like any remove,
    /// is durable only after `sync_dir`. A crash therefore leaves the file in `to`, and maybe
    /// also still here, never in neither; a real `rename` leaves it in exactly one of them, so
    /// whoever reads both must accept the extra copy, which is the safe side to err on.
    fn move_into(&self, name: &str, to: &MemStorage) -> io::Result<()> {
        if Arc::ptr_eq(&self.dir, &to.dir) {
            return self.dir().inode_of(name).map(|_| ());
        }
        let (synced, unsynced) = {
            let dir = self.dir();
            let inode = &dir.inodes[&dir.inode_of(name)?];
            (inode.synced.clone(), inode.unsynced.clone())
        };
        {
            let mut target = to.dir();
            let id = target.inode_id_next;
            target.inode_id_next += 1;
            target.inodes.insert(id, Inode { synced, unsynced });
            target.names.insert(name.to_owned(), id);
            target.names_durable.insert(name.to_owned(), id);
            target.collect_garbage();
        }
        self.dir().record(DirOperation::Remove { name: name.to_owned() });
        Ok(())
    }
}

/// A file of a [`MemStorage`], opened for appending.
#[derive(Debug)]
pub struct MemFile {
    dir: Arc<Mutex<Dir>>,
    inode: InodeId,
    epoch: u64,
}

impl MemFile {
    /// Runs `f` on this file's inode, failing if the handle is from before a crash or the file's
    /// data is gone.
    fn with_inode<T>(&self, f: impl FnOnce(&mut Dir, InodeId) -> io::Result<T>) -> io::Result<T> {
        let mut dir = self.dir.lock().unwrap_or_else(PoisonError::into_inner);
        if dir.epoch != self.epoch {
            return Err(io::Error::other("file handle from before a crash"));
        }
        if !dir.inodes.contains_key(&self.inode) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "file was removed"));
        }
        f(&mut dir, self.inode)
    }
}

impl StorageFile for MemFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.with_inode(|dir, id| {
            Dir::take_fault(&mut dir.fail_next_write, "write")?;
            let inode = dir.inodes.get_mut(&id).expect("checked by with_inode");
            inode.unsynced.extend_from_slice(bytes);
            Ok(())
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.with_inode(|dir, id| {
            Dir::take_fault(&mut dir.fail_next_sync, "sync")?;
            let inode = dir.inodes.get_mut(&id).expect("checked by with_inode");
            let unsynced = std::mem::take(&mut inode.unsynced);
            inode.synced.extend_from_slice(&unsynced);
            Ok(())
        })
    }

    fn len(&self) -> u64 {
        // A handle that outlived a crash or its file has nothing left to measure.
        self.with_inode(|dir, id| Ok(dir.inodes[&id].len())).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(storage: &MemStorage, name: &str, bytes: &[u8], sync: bool) -> MemFile {
        let mut file = storage.create(name).unwrap();
        file.append(bytes).unwrap();
        if sync {
            file.sync().unwrap();
        }
        file
    }

    #[test]
    fn synced_bytes_and_dir_synced_names_survive_every_crash() {
        for seed in 0..200 {
            let storage = MemStorage::new();
            let mut file = write(&storage, "a", b"durable", true);
            storage.sync_dir().unwrap();
            file.append(b" maybe").unwrap();
            storage.crash(seed);
            let bytes = storage.bytes("a").expect("dir-synced file survives");
            assert!(bytes.starts_with(b"durable"), "seed {seed}: {bytes:?}");
            assert!(bytes.len() <= b"durable maybe".len());
        }
    }

    #[test]
    fn crash_outcomes_cover_loss_tear_and_survival() {
        let mut vanished = false;
        let mut torn = false;
        let mut whole = false;
        for seed in 0..200 {
            let storage = MemStorage::new();
            write(&storage, "a", b"0123456789", false);
            storage.crash(seed);
            match storage.bytes("a") {
                None => vanished = true,
                Some(bytes) if bytes == b"0123456789" => whole = true,
                Some(bytes) => {
                    assert!(bytes.len() <= 10);
                    torn = true;
                }
            }
        }
        assert!(vanished && torn && whole);
    }

    #[test]
    fn rename_survives_only_as_an_ordered_prefix() {
        for seed in 0..200 {
            let storage = MemStorage::new();
            write(&storage, "x.tmp", b"new", true);
            storage.rename("x.tmp", "x").unwrap();
            storage.crash(seed);
            let names = storage.list().unwrap();
            // The rename can only survive if the create before it did.
            assert!(
                names.is_empty() || names == ["x.tmp"] || names == ["x"],
                "seed {seed}: {names:?}"
            );
        }
    }

    #[test]
    fn handles_from_before_a_crash_fail() {
        let storage = MemStorage::new();
        let mut file = write(&storage, "a", b"1", true);
        storage.sync_dir().unwrap();
        storage.crash(1);
        assert!(file.append(b"2").is_err());
        assert_eq!(storage.bytes("a").unwrap(), b"1");
    }

    #[test]
    fn injected_faults_fail_once() {
        let storage = MemStorage::new();
        let mut file = write(&storage, "a", b"1", false);
        storage.fail_next_sync();
        assert!(file.sync().is_err());
        file.sync().unwrap();
        storage.fail_next_write();
        assert!(file.append(b"2").is_err());
        assert_eq!(storage.bytes("a").unwrap(), b"1");
        file.append(b"2").unwrap();
        assert_eq!(storage.bytes("a").unwrap(), b"12");
    }

    #[test]
    fn read_at_spans_synced_and_unsynced_bytes() {
        let storage = MemStorage::new();
        let mut file = write(&storage, "a", b"012", true);
        file.append(b"345").unwrap();
        let mut into = [0; 4];
        assert_eq!(storage.read_at("a", 1, &mut into).unwrap(), 4);
        assert_eq!(into, *b"1234");
        assert_eq!(storage.read_at("a", 4, &mut into).unwrap(), 2);
        assert_eq!(into[..2], *b"45");
        assert_eq!(storage.read_at("a", 6, &mut into).unwrap(), 0);
        assert_eq!(storage.read_at("a", u64::MAX, &mut into).unwrap(), 0);
        assert_eq!(storage.read_at("b", 0, &mut into).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn flip_bit_and_truncate() {
        let storage = MemStorage::new();
        storage.set_bytes("a", vec![0, 0, 0]);
        storage.flip_bit("a", 1, 3);
        assert_eq!(storage.bytes("a").unwrap(), [0, 8, 0]);
        storage.truncate("a", 2).unwrap();
        assert_eq!(storage.bytes("a").unwrap(), [0, 8]);
    }
}
