//! Snapshot files: an opaque payload (the engine's encoded state) as of a seq, written atomically.
//!
//! A snapshot is named `{seq:020}.snap`. All integers are little-endian; checksums are CRC-32C.
//! Header, 48 bytes, then the payload:
//!
//! | offset | size | field                                   |
//! |-------:|-----:|-----------------------------------------|
//! |      0 |    8 | magic `SURGESNP`                        |
//! |      8 |    2 | format version, `1`                     |
//! |     10 |    2 | reserved, `0`                           |
//! |     12 |    4 | reserved, `0`                           |
//! |     16 |    8 | `seq`: last record the state includes   |
//! |     24 |    8 | `at`: timestamp of that record, opaque  |
//! |     32 |    8 | `payload_len`                           |
//! |     40 |    4 | CRC-32C of the payload                  |
//! |     44 |    4 | CRC-32C of bytes 0..44                  |
//!
//! The file is written as `{seq:020}.snap.tmp`, synced, renamed, and the directory synced, so a
//! `.snap` name only ever points at complete bytes; a crash leaves at worst a stray `.tmp`, which
//! loading ignores. A snapshot must only be written for a seq the journal has already committed,
//! or a crash could leave the state ahead of the journal.
//!
//! Loading takes the newest snapshot that verifies. An invalid one is skipped with a warning but
//! never deleted: it is evidence, and the operator decides.

use crate::error::JournalError;
use crate::record::parse_seq_name;
use crate::storage::{Storage, StorageFile};

/// Magic bytes that open every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"SURGESNP";
/// Version of the snapshot format written by this code.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 1;
/// Length of a snapshot header.
pub const SNAPSHOT_HEADER_LEN: usize = 48;

const SNAPSHOT_SUFFIX: &str = ".snap";
const TEMPORARY_SUFFIX: &str = ".tmp";

/// File name of the snapshot as of `seq`.
#[must_use]
pub fn snapshot_name(seq: u64) -> String {
    format!("{seq:020}{SNAPSHOT_SUFFIX}")
}

/// A snapshot read back and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSnapshot {
    /// The last seq the state includes; replay continues at `seq + 1`.
    pub seq: u64,
    /// The timestamp stored with it.
    pub at: u64,
    /// The payload, as given to [`write_snapshot`].
    pub payload: Vec<u8>,
    /// File name.
    pub name: String,
}

/// A snapshot file and whether it verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// File name.
    pub name: String,
    /// The seq in the file name.
    pub seq: u64,
    /// Whether header and payload verify and agree with the name.
    pub valid: bool,
}

/// Writes a snapshot of `payload` as of `seq` and returns its file name. Blocking; meant for a
/// background thread.
///
/// # Errors
/// [`JournalError::Io`]; a failed attempt leaves at most a `.tmp` file.
pub fn write_snapshot<S: Storage>(
    storage: &S,
    seq: u64,
    at: u64,
    payload: &[u8],
) -> Result<String, JournalError> {
    let name = snapshot_name(seq);
    let temporary = format!("{name}{TEMPORARY_SUFFIX}");
    // A `.tmp` of the same name is a leftover of a crashed attempt; `create` refuses to reuse it.
    if storage.list()?.contains(&temporary) {
        storage.remove(&temporary)?;
    }
    let mut file = storage.create(&temporary)?;
    file.append(&encode_header(seq, at, payload))?;
    file.append(payload)?;
    file.sync()?;
    storage.rename(&temporary, &name)?;
    storage.sync_dir()?;
    tracing::info!(snapshot = %name, bytes = file.len(), "wrote a snapshot");
    Ok(name)
}

/// Loads the newest snapshot that verifies, or `None` if there is none.
///
/// # Errors
/// [`JournalError::Io`] only: an invalid snapshot is skipped, not an error.
pub fn load_newest_snapshot<S: Storage>(
    storage: &S,
) -> Result<Option<LoadedSnapshot>, JournalError> {
    load_newest_snapshot_at_most(storage, u64::MAX)
}

/// Like [`load_newest_snapshot`], among the snapshots whose seq is at most `seq_max`: for rebuilding
/// the state as of an earlier point (replaying events after it, `surge journal replay --to`).
pub fn load_newest_snapshot_at_most<S: Storage>(
    storage: &S,
    seq_max: u64,
) -> Result<Option<LoadedSnapshot>, JournalError> {
    for (seq, name) in snapshot_names(storage)?.into_iter().rev().filter(|(seq, _)| *seq <= seq_max)
    {
        let bytes = storage.read(&name)?;
        match decode(&bytes, seq) {
            Ok((at, payload_range)) => {
                return Ok(Some(LoadedSnapshot {
                    seq,
                    at,
                    payload: bytes[payload_range].to_vec(),
                    name,
                }));
            }
            Err(reason) => {
                tracing::warn!(snapshot = %name, reason, "skipping an invalid snapshot");
            }
        }
    }
    Ok(None)
}

/// The seqs of the newest `count` snapshots whose seq is at most `seq_max` and that verify, newest
/// first (fewer when there are fewer). Reads snapshots from the newest down only until it has
/// `count`: for deciding what the journal must keep, without reading every old snapshot.
///
/// # Errors
/// [`JournalError::Io`] only: an invalid snapshot is skipped, as loading skips it.
pub fn newest_valid_snapshots<S: Storage>(
    storage: &S,
    seq_max: u64,
    count: usize,
) -> Result<Vec<u64>, JournalError> {
    let mut valid = Vec::with_capacity(count);
    for (seq, name) in snapshot_names(storage)?.into_iter().rev().filter(|(seq, _)| *seq <= seq_max)
    {
        if valid.len() == count {
            break;
        }
        if decode(&storage.read(&name)?, seq).is_ok() {
            valid.push(seq);
        }
    }
    Ok(valid)
}

/// The seqs named by the snapshot files, oldest first, without reading or checking them.
///
/// # Errors
/// [`JournalError::Io`] when the directory cannot be listed.
pub fn snapshot_seqs<S: Storage>(storage: &S) -> Result<Vec<u64>, JournalError> {
    Ok(snapshot_names(storage)?.into_iter().map(|(seq, _)| seq).collect())
}

/// Every snapshot file, oldest first, each checked.
///
/// # Errors
/// [`JournalError::Io`].
pub fn list_snapshots<S: Storage>(storage: &S) -> Result<Vec<SnapshotInfo>, JournalError> {
    snapshot_names(storage)?
        .into_iter()
        .map(|(seq, name)| {
            let valid = decode(&storage.read(&name)?, seq).is_ok();
            Ok(SnapshotInfo { name, seq, valid })
        })
        .collect()
}

/// The `.snap` files with their seqs, oldest first. `.tmp` files do not parse and drop out here.
fn snapshot_names<S: Storage>(storage: &S) -> Result<Vec<(u64, String)>, JournalError> {
    // `list` sorts by name, and the fixed-width names sort in seq order.
    Ok(storage
        .list()?
        .into_iter()
        .filter_map(|name| Some((parse_seq_name(&name, SNAPSHOT_SUFFIX)?, name)))
        .collect())
}

fn encode_header(seq: u64, at: u64, payload: &[u8]) -> [u8; SNAPSHOT_HEADER_LEN] {
    let mut header = [0u8; SNAPSHOT_HEADER_LEN];
    header[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..10].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    // Bytes 10..16 are reserved and stay zero.
    header[16..24].copy_from_slice(&seq.to_le_bytes());
    header[24..32].copy_from_slice(&at.to_le_bytes());
    header[32..40].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    header[40..44].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&header[0..44]);
    header[44..48].copy_from_slice(&header_crc.to_le_bytes());
    header
}

/// Verifies a snapshot file named for `name_seq`; returns its `at` and where its payload is.
fn decode(bytes: &[u8], name_seq: u64) -> Result<(u64, std::ops::Range<usize>), &'static str> {
    let header = bytes.get(..SNAPSHOT_HEADER_LEN).ok_or("shorter than a header")?;
    let field = |range: std::ops::Range<usize>| -> u64 {
        let mut le = [0u8; 8];
        le[..range.len()].copy_from_slice(&header[range]);
        u64::from_le_bytes(le)
    };
    if u64::from(crc32c::crc32c(&header[0..44])) != field(44..48) {
        return Err("header checksum mismatch");
    }
    if header[0..8] != SNAPSHOT_MAGIC {
        return Err("bad magic");
    }
    if field(8..10) != u64::from(SNAPSHOT_FORMAT_VERSION) {
        return Err("unsupported version");
    }
    if field(10..16) != 0 {
        return Err("reserved bytes not zero");
    }
    if field(16..24) != name_seq {
        return Err("seq in the header differs from the file name");
    }
    let payload_len = usize::try_from(field(32..40)).map_err(|_| "payload length too large")?;
    if bytes.len() - SNAPSHOT_HEADER_LEN != payload_len {
        return Err("file length differs from the header's payload length");
    }
    let payload_range = SNAPSHOT_HEADER_LEN..bytes.len();
    if u64::from(crc32c::crc32c(&bytes[payload_range.clone()])) != field(40..44) {
        return Err("payload checksum mismatch");
    }
    Ok((field(24..32), payload_range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStorage;

    #[test]
    fn header_layout_matches_the_documented_table() {
        let header = encode_header(7, 9, b"state");
        assert_eq!(&header[0..8], b"SURGESNP");
        assert_eq!(&header[8..10], &1u16.to_le_bytes());
        assert_eq!(&header[16..24], &7u64.to_le_bytes());
        assert_eq!(&header[24..32], &9u64.to_le_bytes());
        assert_eq!(&header[32..40], &5u64.to_le_bytes());
        assert_eq!(&header[40..44], &crc32c::crc32c(b"state").to_le_bytes());
        assert_eq!(&header[44..48], &crc32c::crc32c(&header[..44]).to_le_bytes());
    }

    #[test]
    fn every_byte_of_a_snapshot_is_protected() {
        let storage = MemStorage::new();
        let name = write_snapshot(&storage, 3, 4, b"payload").unwrap();
        let len = storage.bytes(&name).unwrap().len() as u64;
        for offset in 0..len {
            let damaged = MemStorage::new();
            damaged.set_bytes(&name, storage.bytes(&name).unwrap());
            damaged.flip_bit(&name, offset, 5);
            assert_eq!(load_newest_snapshot(&damaged).unwrap(), None, "offset {offset}");
        }
        for cut in 0..len {
            let mut bytes = storage.bytes(&name).unwrap();
            bytes.truncate(usize::try_from(cut).unwrap());
            let damaged = MemStorage::new();
            damaged.set_bytes(&name, bytes);
            assert_eq!(load_newest_snapshot(&damaged).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn the_newest_valid_snapshots_skip_invalid_ones_and_stop_early() {
        let storage = MemStorage::new();
        for seq in [2, 4, 6, 8] {
            write_snapshot(&storage, seq, seq, b"payload").unwrap();
        }
        storage.flip_bit(&snapshot_name(6), 20, 1);
        assert_eq!(snapshot_seqs(&storage).unwrap(), [2, 4, 6, 8]);
        assert_eq!(newest_valid_snapshots(&storage, u64::MAX, 2).unwrap(), [8, 4]);
        assert_eq!(newest_valid_snapshots(&storage, 7, 2).unwrap(), [4, 2]);
        assert_eq!(newest_valid_snapshots(&storage, 3, 2).unwrap(), [2]);
        assert_eq!(newest_valid_snapshots(&storage, 1, 2).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn a_file_renamed_to_another_seq_is_invalid() {
        let storage = MemStorage::new();
        let name = write_snapshot(&storage, 3, 4, b"payload").unwrap();
        storage.set_bytes(&snapshot_name(5), storage.bytes(&name).unwrap());
        let infos = list_snapshots(&storage).unwrap();
        assert_eq!(
            infos.iter().map(|i| (i.seq, i.valid)).collect::<Vec<_>>(),
            [(3, true), (5, false)]
        );
    }
}
