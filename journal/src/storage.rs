//! The storage the journal and snapshot files live on: one flat directory of named files.
//!
//! The traits are deliberately small, and name the durability steps explicitly (`sync` for a
//! file's bytes, `sync_dir` for the existence of names), so that an implementation can model what a
//! power loss keeps and what it drops. [`FsStorage`] is the real one; [`MemStorage`](crate::MemStorage)
//! is the in-memory one that tests and the simulator crash on purpose.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
}

impl FsStorage {
    /// Opens the directory at `dir`, creating it (and its parents) if needed.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(dir: &Path) -> io::Result<FsStorage> {
        fs::create_dir_all(dir)?;
        Ok(FsStorage { dir: dir.to_path_buf() })
    }

    /// The directory this storage is rooted at.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
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
        fs::rename(self.path(from), self.path(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        // On Linux a directory opened read-only can be fsynced, which persists its entries.
        File::open(&self.dir)?.sync_all()
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
