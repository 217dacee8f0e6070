//! Cutting a journal at every byte offset of every segment: a cut in the last segment is a torn
//! tail that recovery trims to the last whole record; a cut anywhere else is corruption.

mod common;

use common::{open, records, write_batches, Expected};
use surge_journal::record::encode_segment_header;
use surge_journal::{recover, scan, JournalError, MemStorage, Storage};

/// A journal of 3 segments and 20 records.
struct Pristine {
    segments: Vec<Segment>,
}

/// One segment of the pristine journal.
struct Segment {
    name: String,
    bytes: Vec<u8>,
    /// Its records, each with the offset where it ends.
    records: Vec<(Expected, u64)>,
}

impl Segment {
    /// Where the last record wholly before `cut` ends (the header's end if none is).
    fn good_end(&self, cut: usize) -> u64 {
        self.records
            .iter()
            .map(|(_, end)| *end)
            .filter(|end| *end <= cut as u64)
            .max()
            .unwrap_or(32)
    }
}

fn pristine() -> Pristine {
    let storage = MemStorage::new();
    let (mut writer, _) = open(storage.clone(), 300);
    let written = write_batches(&mut writer, &[4, 3, 5, 2, 6]);
    assert_eq!(written.len(), 20);
    let located = common::read_all(&storage, 1).unwrap();
    let recovery = scan(&storage).unwrap();
    assert_eq!(recovery.segments.len(), 3, "{:?}", recovery.segments);
    let segments = recovery
        .segments
        .iter()
        .map(|segment| {
            let in_segment: Vec<(Expected, u64)> = located
                .iter()
                .filter(|found| found.segment == segment.name)
                .map(|found| {
                    let end = found.offset + 28 + found.record.payload.len() as u64;
                    (found.record.clone(), end)
                })
                .collect();
            Segment {
                name: segment.name.clone(),
                bytes: storage.bytes(&segment.name).unwrap(),
                records: in_segment,
            }
        })
        .collect();
    Pristine { segments }
}

impl Pristine {
    /// The journal with segment `cut_segment` cut to `cut` bytes and the others whole.
    fn with_cut(&self, cut_segment: usize, cut: usize) -> MemStorage {
        let storage = MemStorage::new();
        for (index, segment) in self.segments.iter().enumerate() {
            let bytes = if index == cut_segment {
                segment.bytes[..cut].to_vec()
            } else {
                segment.bytes.clone()
            };
            storage.set_bytes(&segment.name, bytes);
        }
        storage
    }

    /// The journal, undamaged.
    fn whole(&self) -> MemStorage {
        self.with_cut(usize::MAX, 0)
    }
}

#[test]
fn cutting_the_last_segment_anywhere_keeps_exactly_the_whole_records_before_the_cut() {
    let pristine = pristine();
    let last = pristine.segments.len() - 1;
    let segment = &pristine.segments[last];
    let name = &segment.name;
    let before_last: Vec<Expected> = pristine.segments[..last]
        .iter()
        .flat_map(|earlier| earlier.records.iter().map(|(record, _)| record.clone()))
        .collect();

    for cut in 0..=segment.bytes.len() {
        let storage = pristine.with_cut(last, cut);
        let recovery = recover(&storage).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));

        let mut expected = before_last.clone();
        expected.extend(
            segment
                .records
                .iter()
                .filter(|(_, end)| *end <= cut as u64)
                .map(|(record, _)| record.clone()),
        );
        assert_eq!(records(&storage), expected, "cut at {cut}");
        assert_eq!(recovery.next_seq, expected.len() as u64 + 1, "cut at {cut}");

        let good_end = segment.good_end(cut);
        if cut < 32 {
            // The header itself was torn: the whole file goes.
            let torn = recovery.torn_tail.expect("a torn header is a torn tail");
            assert_eq!((torn.offset, torn.bytes_cut), (0, cut as u64), "cut at {cut}");
            assert_eq!(storage.bytes(name), None, "cut at {cut}");
        } else if cut as u64 == good_end {
            assert_eq!(recovery.torn_tail, None, "cut at {cut}");
            assert_eq!(storage.bytes(name).unwrap().len(), cut);
        } else {
            let torn = recovery.torn_tail.expect("a partial record is a torn tail");
            assert_eq!(torn.segment, *name);
            assert_eq!(torn.offset, good_end, "cut at {cut}");
            assert_eq!(torn.bytes_cut, cut as u64 - good_end, "cut at {cut}");
            assert_eq!(storage.bytes(name).unwrap().len() as u64, good_end);
        }

        // The recovered journal takes new records and reads back whole.
        let (mut writer, _) = open(storage.clone(), 300);
        expected.extend(write_batches(&mut writer, &[2]));
        assert_eq!(records(&storage), expected, "cut at {cut}, after appending");
    }
}

#[test]
fn cutting_any_other_segment_anywhere_is_corruption() {
    let pristine = pristine();
    for cut_segment in 0..pristine.segments.len() - 1 {
        let segment = &pristine.segments[cut_segment];
        let name = &segment.name;
        let next_name = &pristine.segments[cut_segment + 1].name;
        for cut in 0..segment.bytes.len() {
            let storage = pristine.with_cut(cut_segment, cut);
            let error = recover(&storage).expect_err("a cut before the last segment is corruption");
            let JournalError::Corrupt { segment: damaged, offset, .. } = &error else {
                panic!("cut at {cut}: {error}");
            };
            let good_end = segment.good_end(cut);
            if cut < 32 {
                assert_eq!((damaged, *offset), (name, 0), "cut at {cut}: {error}");
            } else if cut as u64 == good_end {
                // Every record left is whole, so the damage shows as a gap before the next segment.
                assert_eq!((damaged, *offset), (next_name, 0), "cut at {cut}: {error}");
            } else {
                assert_eq!((damaged, *offset), (name, good_end), "cut at {cut}: {error}");
            }
            // Nothing was cut from a journal that failed to recover.
            assert_eq!(storage.bytes(name).unwrap().len(), cut);
        }
    }
}

#[test]
fn corrupt_errors_name_segment_offset_and_reason() {
    let pristine = pristine();
    let storage = pristine.with_cut(0, pristine.segments[0].bytes.len() - 1);
    let error = scan(&storage).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("journal corrupt in segment 00000000000000000001.seg at byte "),
        "{message}"
    );
    assert!(message.ends_with(": truncated"), "{message}");
}

#[test]
fn a_segment_header_that_disagrees_with_its_name_is_corruption() {
    let pristine = pristine();
    let storage = pristine.whole();
    let last = pristine.segments.last().unwrap();
    storage.remove(&last.name).unwrap();
    storage.set_bytes("00000000000000000999.seg", last.bytes.clone());
    let error = scan(&storage).unwrap_err();
    assert!(
        matches!(&error, JournalError::Corrupt { segment, offset: 0, reason }
            if segment == "00000000000000000999.seg" && reason.contains("file name")),
        "{error}"
    );
}

#[test]
fn a_segment_overlapping_the_previous_one_is_corruption() {
    let pristine = pristine();
    let storage = pristine.whole();
    // A valid, empty segment for seq 3, which the first segment already holds.
    storage.set_bytes("00000000000000000003.seg", encode_segment_header(3).to_vec());
    let error = scan(&storage).unwrap_err();
    assert!(
        matches!(&error, JournalError::Corrupt { segment, offset: 0, reason }
            if segment == "00000000000000000003.seg" && reason.contains("comes next")),
        "{error}"
    );
}
