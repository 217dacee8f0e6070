//! The bytes of the journal: segment files, their header, and the framing of each record.
//!
//! The journal is a sequence of segment files named `{first_seq:020}.seg` (so names sort in
//! sequence order). All integers are little-endian; checksums are CRC-32C (Castagnoli).
//!
//! Segment header, 32 bytes:
//!
//! | offset | size | field                                     |
//! |-------:|-----:|-------------------------------------------|
//! |      0 |    8 | magic `SURGEJNL`                          |
//! |      8 |    2 | format version, `1`                       |
//! |     10 |    2 | reserved, `0`                             |
//! |     12 |    4 | reserved, `0`                             |
//! |     16 |    8 | `first_seq`: seq of the first record      |
//! |     24 |    4 | reserved, `0`                             |
//! |     28 |    4 | CRC-32C of bytes 0..28                    |
//!
//! Then records, back to back, each a 28-byte header and the payload:
//!
//! | offset | size  | field                                               |
//! |-------:|------:|-----------------------------------------------------|
//! |      0 |     4 | CRC-32C of bytes 4..(28 + len)                      |
//! |      4 |     4 | `len`: payload length, at most [`RECORD_PAYLOAD_MAX`] |
//! |      8 |     1 | record version, `1`                                 |
//! |      9 |     1 | `kind`, chosen by the writer's caller               |
//! |     10 |     2 | reserved, `0`                                       |
//! |     12 |     8 | `seq`                                               |
//! |     20 |     8 | `at`: timestamp in nanoseconds, opaque here         |
//! |     28 | `len` | payload, opaque here                                |
//!
//! The checksum covers the length too, so a damaged length is caught rather than followed. Sequence
//! numbers start at 1 and are contiguous across segments; checking that is the scanner's job
//! ([`crate::recover`](mod@crate::recover)), not this module's.
//!
//! `docs/formats.md` at the repository root carries the same tables for readers outside the code.

use std::fmt;

/// Magic bytes that open every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SURGEJNL";
/// Version of the segment format written by this code.
pub const SEGMENT_FORMAT_VERSION: u16 = 1;
/// Length of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 28;
/// Version of the record framing written by this code.
pub const RECORD_VERSION: u8 = 1;
/// Largest payload a record may carry. A length field above it is damage, not a big record, which
/// bounds how far a damaged length can send the reader.
pub const RECORD_PAYLOAD_MAX: usize = 1 << 20;

const SEGMENT_SUFFIX: &str = ".seg";
const SEQ_DIGITS: usize = 20;

/// File name of the segment whose first record has sequence number `first_seq`.
#[must_use]
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The `first_seq` in a segment file name, or `None` if `name` is not a segment's name.
#[must_use]
pub fn parse_segment_name(name: &str) -> Option<u64> {
    parse_seq_name(name, SEGMENT_SUFFIX)
}

/// Parses `{seq:020}{suffix}`, insisting on exactly 20 digits so that every accepted name is one
/// this crate could have written and names sort in sequence order.
pub(crate) fn parse_seq_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header that opens the segment starting at `first_seq`.
#[must_use]
pub fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..10].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    // Bytes 10..16 and 24..28 are reserved and stay zero.
    header[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Decodes and verifies a segment header at the start of `bytes`, returning its `first_seq`.
///
/// # Errors
/// When the header is short, fails its checksum, or is of another format.
pub fn decode_segment_header(bytes: &[u8]) -> Result<u64, FramingError> {
    let header = bytes.get(..SEGMENT_HEADER_LEN).ok_or(FramingError::Truncated)?;
    if crc32c::crc32c(&header[0..28]) != read_u32(header, 28) {
        return Err(FramingError::ChecksumMismatch);
    }
    if header[0..8] != SEGMENT_MAGIC {
        return Err(FramingError::BadMagic);
    }
    let version = read_u16(header, 8);
    if version != SEGMENT_FORMAT_VERSION {
        return Err(FramingError::UnsupportedVersion(version.into()));
    }
    if read_u16(header, 10) != 0 || read_u32(header, 12) != 0 || read_u32(header, 24) != 0 {
        return Err(FramingError::ReservedNotZero);
    }
    Ok(read_u64(header, 16))
}

/// Appends one framed record to `buf`. Allocates only if `buf` lacks the capacity.
///
/// # Panics
/// When `payload` is longer than [`RECORD_PAYLOAD_MAX`]: payloads are encoded by our own code, so an
/// oversized one is a programmer error.
pub fn encode_record(buf: &mut Vec<u8>, seq: u64, at: u64, kind: u8, payload: &[u8]) {
    assert!(
        payload.len() <= RECORD_PAYLOAD_MAX,
        "record payload of {} bytes exceeds RECORD_PAYLOAD_MAX",
        payload.len()
    );
    let len = u32::try_from(payload.len()).expect("RECORD_PAYLOAD_MAX fits in u32");
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]); // Checksum, filled in below once the rest is in place.
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[RECORD_VERSION, kind, 0, 0]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&at.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Number of bytes a record with a payload of `payload_len` bytes takes.
#[must_use]
pub const fn record_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + payload_len
}

/// One record decoded from a buffer, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Timestamp in nanoseconds.
    pub at: u64,
    /// Kind, as the writer's caller chose it.
    pub kind: u8,
    /// Payload bytes.
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Number of bytes the record takes in the file.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        record_len(self.payload.len())
    }
}

/// Decodes and verifies the record at the start of `bytes`.
///
/// The checksum is verified before any other field is trusted: once it fails, the version or a
/// reserved byte being off is just a symptom.
///
/// # Errors
/// When the record is short, its length is impossible, its checksum fails, or it is of another
/// version.
pub fn decode_record(bytes: &[u8]) -> Result<Record<'_>, FramingError> {
    let header = bytes.get(..RECORD_HEADER_LEN).ok_or(FramingError::Truncated)?;
    let len_field = read_u32(header, 4);
    let len = usize::try_from(len_field)
        .ok()
        .filter(|&len| len <= RECORD_PAYLOAD_MAX)
        .ok_or(FramingError::LengthTooLarge(len_field))?;
    let framed = bytes.get(..record_len(len)).ok_or(FramingError::Truncated)?;
    if crc32c::crc32c(&framed[4..]) != read_u32(header, 0) {
        return Err(FramingError::ChecksumMismatch);
    }
    let version = header[8];
    if version != RECORD_VERSION {
        return Err(FramingError::UnsupportedVersion(version.into()));
    }
    if read_u16(header, 10) != 0 {
        return Err(FramingError::ReservedNotZero);
    }
    Ok(Record {
        seq: read_u64(header, 12),
        at: read_u64(header, 20),
        kind: header[9],
        payload: &framed[RECORD_HEADER_LEN..],
    })
}

/// Cheap checks on a record header that any record we wrote passes, to skip the checksum at most
/// offsets while searching damaged bytes for a later good record.
pub(crate) fn looks_like_record_header(bytes: &[u8], seq_min: u64) -> bool {
    let Some(header) = bytes.get(..RECORD_HEADER_LEN) else {
        return false;
    };
    let len = read_u32(header, 4) as usize;
    header[8] == RECORD_VERSION
        && read_u16(header, 10) == 0
        && len <= RECORD_PAYLOAD_MAX
        && record_len(len) <= bytes.len()
        && read_u64(header, 12) >= seq_min
}

/// Why a segment header or a record failed to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Fewer bytes remain than the header or the length field calls for.
    Truncated,
    /// The length field exceeds [`RECORD_PAYLOAD_MAX`].
    LengthTooLarge(u32),
    /// The stored checksum does not match the bytes.
    ChecksumMismatch,
    /// A segment header without the `SURGEJNL` magic.
    BadMagic,
    /// A version this code does not read.
    UnsupportedVersion(u32),
    /// A reserved field is not zero.
    ReservedNotZero,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::Truncated => write!(f, "truncated"),
            FramingError::LengthTooLarge(len) => {
                write!(f, "length {len} exceeds the maximum of {RECORD_PAYLOAD_MAX}")
            }
            FramingError::ChecksumMismatch => write!(f, "checksum mismatch"),
            FramingError::BadMagic => write!(f, "bad magic"),
            FramingError::UnsupportedVersion(version) => write!(f, "unsupported version {version}"),
            FramingError::ReservedNotZero => write!(f, "reserved bytes not zero"),
        }
    }
}

impl std::error::Error for FramingError {}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn segment_names_round_trip_and_sort_by_seq() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000001.seg.tmp"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.seg"), None);
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = encode_segment_header(42);
        assert_eq!(decode_segment_header(&header), Ok(42));
        assert_eq!(decode_segment_header(&header[..31]), Err(FramingError::Truncated));
        for byte in 0..SEGMENT_HEADER_LEN {
            let mut damaged = header;
            damaged[byte] ^= 0x10;
            assert!(decode_segment_header(&damaged).is_err(), "byte {byte}");
        }
    }

    #[test]
    fn record_layout_matches_the_documented_table() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, 9, 3, b"abc");
        assert_eq!(buf.len(), 31);
        assert_eq!(&buf[4..8], &3u32.to_le_bytes());
        assert_eq!(buf[8..12], [RECORD_VERSION, 3, 0, 0]);
        assert_eq!(&buf[12..20], &7u64.to_le_bytes());
        assert_eq!(&buf[20..28], &9u64.to_le_bytes());
        assert_eq!(&buf[28..], b"abc");
        assert_eq!(&buf[0..4], &crc32c::crc32c(&buf[4..]).to_le_bytes());
    }

    #[test]
    fn oversized_length_is_rejected_before_reading_on() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, 0, 0, b"");
        buf[4..8].copy_from_slice(&(RECORD_PAYLOAD_MAX as u32 + 1).to_le_bytes());
        assert!(matches!(decode_record(&buf), Err(FramingError::LengthTooLarge(_))));
    }

    proptest! {
        #[test]
        fn records_round_trip(
            seq: u64,
            at: u64,
            kind: u8,
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut buf = vec![0xAA]; // Encoding appends; what is already there stays.
            encode_record(&mut buf, seq, at, kind, &payload);
            let record = decode_record(&buf[1..]).unwrap();
            prop_assert_eq!(record, Record { seq, at, kind, payload: &payload });
            prop_assert_eq!(record.encoded_len(), buf.len() - 1);
        }

        #[test]
        fn every_single_bit_flip_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            bit_index: proptest::sample::Index,
        ) {
            let mut buf = Vec::new();
            encode_record(&mut buf, 5, 6, 0, &payload);
            let bit = bit_index.index(buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_record(&buf).is_err());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode_record(&bytes);
            let _ = decode_segment_header(&bytes);
            let _ = looks_like_record_header(&bytes, 0);
        }
    }
}
