//! The storage the journal and snapshot files live on: one flat directory of named files.
//!
//! The traits are deliberately small, and name the durability steps explicitly (`sync` for a
//! file's bytes, `sync_dir` for the existence of names), so that an implementation can model what a
//! power loss keeps and what it drops. [`FsStorage`] is the real one; [`MemStorage`](crate::MemStorage)
//! is the in-memory one that tests and the simulator crash on purpose.
//!
//! Files are read either whole ([`Storage::read`], for the startup scan and snapshots) or a piece at
//! a time ([`Storage::read_at`], for a reader that follows a segment while the writer appends to it
//! and must not pay for the whole file on every look).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A flat directory of files.
///
/// Creating, renaming and removing a name is durable only after [`sync_dir`](Storage::sync_dir);
/// bytes appended to a file are durable only after [`StorageFile::sync`].
pub trait Storage: Send + Sync + 'static {
    /// A file opened for appending.
    type File: StorageFile;

    /// Names of the files directly in the directory (not subdirectories), sorted.
    ///
    /// # Errors
    /// When the directory cannot be read.
    fn list(&self) -> io::Result<Vec<String>>;

    /// The whole content of a file, including bytes written but not yet synced.
    ///
    /// # Errors
    /// When the file does not exist or cannot be read.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;

    /// Reads bytes of a file starting at byte `offset` into `into`, as `pread` does, and returns how
    /// many it read. Sees bytes written but not yet synced, like [`read`](Storage::read).
    ///
    /// 0 means `offset` is at or past the end of the file. Like `pread`, a count short of
    /// `into.len()` does not by itself mean the end of the file: a caller that needs more reads
    /// again at the new offset until it gets 0. The caller owns the buffer, so that a reader that
    /// follows the journal reuses one buffer and nothing is allocated or zeroed per read.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotFound`] when the file does not exist, or an I/O failure.
    fn read_at(&self, name: &str, offset: u64, into: &mut [u8]) -> io::Result<usize>;

    /// Creates a new empty file for appending.
    ///
    /// # Errors
    /// With [`io::ErrorKind::AlreadyExists`] when the name is taken, or on an I/O failure.
    fn create(&self, name: &str) -> io::Result<Self::File>;

    /// Opens an existing file; appends go after its current end.
    ///
    /// # Errors
    /// When the file does not exist or cannot be opened.
    fn open_append(&self, name: &str) -> io::Result<Self::File>;

    /// Cuts a file to `len` bytes and syncs it.
    ///
    /// # Errors
    /// When the file does not exist or the cut or the sync fails.
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;

    /// Renames a file, replacing `to` if it exists.
    ///
    /// # Errors
    /// When `from` does not exist or the rename fails.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    /// When the file does not exist or cannot be removed.
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Makes earlier creates, renames and removes durable.
    ///
    /// # Errors
    /// When the directory cannot be synced.
    fn sync_dir(&self) -> io::Result<()>;

    /// Moves the file `name` into the directory `to`, under the same name and replacing a file of
    /// that name there, in one atomic step (a `rename`): whenever the machine stops, the file is in
    /// one directory or the other, never in neither, and its bytes are untouched. The move is
    /// durable once both directories are synced, `to` first.
    ///
    /// # Errors
    /// When the file does not exist or the move fails; for [`FsStorage`], also when the two
    /// directories are on different file systems, which a `rename` cannot cross (`EXDEV`).
    fn move_into(&self, name: &str, to: &Self) -> io::Result<()>;
}

/// A file opened for appending.
pub trait StorageFile: Send + 'static {
    /// Appends all of `bytes` at the end of the file.
    ///
    /// # Errors
    /// On an I/O failure, after which the file's length is unknown.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Makes every appended byte durable (`fdatasync`).
    ///
    /// # Errors
    /// When the sync fails. The caller must then assume nothing about which bytes are durable.
    fn sync(&mut self) -> io::Result<()>;

    /// The length of the file in bytes, as this handle has written it.
    fn len(&self) -> u64;

    /// Whether the file holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A directory of the local file system.
///
/// The journal and the snapshots each get their own directory (`<data>/journal/`,
/// `<data>/snapshots/`), so each is its own `FsStorage`.
#[derive(Debug, Clone)]
pub struct FsStorage {
    dir: PathBuf,
    /// The file [`read_at`](Storage::read_at) read last, kept open: a reader that follows a segment
    /// reads it thousands of times a second, and an `open` and a `close` per read would cost more
    /// than a small read itself (the `journal_tail` benchmark measured 3.3 µs for open, read and
    /// close of 4 KiB against 0.7 µs for the read alone, page cache warm). Shared by clones, so that a rename or a remove through any of them
    /// (which could make the name refer to another file) drops it; creating (never over an existing
    /// name) and truncating keep every name's file, so they leave it.
    read_file: Arc<Mutex<Option<ReadFile>>>,
}

/// An open file and the name it was opened by.
#[derive(Debug)]
struct ReadFile {
    name: String,
    /// In an `Arc` so that a read runs without the lock held: readers of different files, and the
    /// rename or remove that drops the handle, never wait for someone else's read.
    file: Arc<File>,
}

impl FsStorage {
    /// Opens the directory at `dir`, creating it (and its parents) if needed.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(dir: &Path) -> io::Result<FsStorage> {
        fs::create_dir_all(dir)?;
        Ok(FsStorage { dir: dir.to_path_buf(), read_file: Arc::default() })
    }

    /// The directory this storage is rooted at.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read_file_slot(&self) -> MutexGuard<'_, Option<ReadFile>> {
        // Nothing panics while the lock is held, so the slot behind a poisoned lock is still whole.
        self.read_file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open file behind `name`, from the cache or freshly opened (and then cached).
    fn file_to_read(&self, name: &str) -> io::Result<Arc<File>> {
        let mut slot = self.read_file_slot();
        if let Some(cached) = slot.as_ref().filter(|cached| cached.name == name) {
            return Ok(Arc::clone(&cached.file));
        }
        // The lock stays held across the `open`: a rename or remove that finishes meanwhile then
        // waits to drop the slot until this handle is in it, so a handle opened before the name
        // changed is never left cached.
        let file = Arc::new(File::open(self.path(name))?);
        *slot = Some(ReadFile { name: name.to_owned(), file: Arc::clone(&file) });
        Ok(file)
    }

    /// Drops the cached read handle, after its name may have come to mean another file.
    fn forget_file_to_read(&self) {
        *self.read_file_slot() = None;
    }
}

impl Storage for FsStorage {
    type File = FsFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            // A name that is not UTF-8 was not written by us; it cannot match any pattern we look for.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name))
    }

    fn read_at(&self, name: &str, offset: u64, into: &mut [u8]) -> io::Result<usize> {
        let file = self.file_to_read(name)?;
        // One `pread`, not a loop to fill `into`: at the end of a file that is still growing (where
        // a follower usually is) a loop would pay a second call only to learn that nothing more is
        // there, and the caller reads on anyway when it needs more.
        loop {
            match file.read_at(into, offset) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    fn create(&self, name: &str) -> io::Result<FsFile> {
        let file = OpenOptions::new().append(true).create_new(true).open(self.path(name))?;
        Ok(FsFile { file, len: 0 })
    }

    fn open_append(&self, name: &str) -> io::Result<FsFile> {
        let file = OpenOptions::new().append(true).open(self.path(name))?;
        let len = file.metadata()?.len();
        Ok(FsFile { file, len })
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        file.set_len(len)?;
        // The length is metadata, so `sync_all` rather than `sync_data`.
        file.sync_all()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let result = fs::rename(self.path(from), self.path(to));
        // Even after a failure: the rename may have happened before the error was reported.
        self.forget_file_to_read();
        result
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let result = fs::remove_file(self.path(name));
        self.forget_file_to_read();
        result
    }

    fn sync_dir(&self) -> io::Result<()> {
        // On Linux a directory opened read-only can be fsynced, which persists its entries.
        File::open(&self.dir)?.sync_all()
    }

    fn move_into(&self, name: &str, to: &FsStorage) -> io::Result<()> {
        let result = fs::rename(self.path(name), to.path(name));
        // As for `rename`: either name may now mean another file.
        self.forget_file_to_read();
        to.forget_file_to_read();
        result
    }
}

/// A file of an [`FsStorage`], opened for appending.
#[derive(Debug)]
pub struct FsFile {
    file: File,
    len: u64,
}

impl StorageFile for FsFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        // The file only grows by appends, and `fdatasync` persists a size change that is needed to
        // read the data back, so the cheaper call suffices.
        self.file.sync_data()
    }

    fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_at(storage: &FsStorage, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut into = vec![0; len];
        let read = storage.read_at(name, offset, &mut into)?;
        into.truncate(read);
        Ok(into)
    }

    #[test]
    fn read_at_sees_unsynced_appends_and_ends_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(dir.path()).unwrap();
        let mut file = storage.create("a").unwrap();
        file.append(b"01234").unwrap();
        assert_eq!(read_at(&storage, "a", 1, 3).unwrap(), b"123");
        assert_eq!(read_at(&storage, "a", 3, 10).unwrap(), b"34");
        assert_eq!(read_at(&storage, "a", 5, 10).unwrap(), b"");
        assert_eq!(read_at(&storage, "a", 99, 10).unwrap(), b"");
        // The handle cached by the reads above sees what is appended after it was opened.
        file.append(b"56").unwrap();
        assert_eq!(read_at(&storage, "a", 3, 10).unwrap(), b"3456");
        let error = read_at(&storage, "b", 0, 1).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn read_at_reads_the_file_a_name_refers_to_now() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(dir.path()).unwrap();
        // A clone, as a reader beside the writer would hold: its cache is the one that must go.
        let reader = storage.clone();
        storage.create("a").unwrap().append(b"old").unwrap();
        assert_eq!(read_at(&reader, "a", 0, 8).unwrap(), b"old");

        storage.remove("a").unwrap();
        assert_eq!(read_at(&reader, "a", 0, 8).unwrap_err().kind(), io::ErrorKind::NotFound);
        storage.create("a").unwrap().append(b"new").unwrap();
        assert_eq!(read_at(&reader, "a", 0, 8).unwrap(), b"new");

        storage.create("b").unwrap().append(b"other").unwrap();
        storage.rename("b", "a").unwrap();
        assert_eq!(read_at(&reader, "a", 0, 8).unwrap(), b"other");
    }

    #[test]
    fn move_into_moves_a_file_between_directories_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let journal = FsStorage::open(&dir.path().join("journal")).unwrap();
        let archive = FsStorage::open(&dir.path().join("archive")).unwrap();
        journal.create("a").unwrap().append(b"bytes").unwrap();
        archive.create("a").unwrap().append(b"an older copy").unwrap();
        assert_eq!(read_at(&journal, "a", 0, 8).unwrap(), b"bytes");

        journal.move_into("a", &archive).unwrap();
        archive.sync_dir().unwrap();
        journal.sync_dir().unwrap();
        assert_eq!(journal.list().unwrap(), Vec::<String>::new());
        assert_eq!(archive.read("a").unwrap(), b"bytes", "replaces the file of that name");
        assert_eq!(read_at(&journal, "a", 0, 8).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(journal.move_into("a", &archive).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
