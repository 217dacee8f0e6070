//! `surge journal verify | inspect | replay` on real data directories, run as the binary an
//! operator runs.

use std::path::Path;
use std::process::Command as Process;
use std::time::Duration;

use serde_json::Value;
use surge_engine::{
    BuyerId, Command, Expiry, Limits, LineRequest, LineRequests, ReleaseReason, SkuId, Timestamp,
    WarehouseChoices, WarehouseId,
};
use surge_journal::JournalConfig;
use surge_pipeline::{Clock, Pipeline, PipelineConfig, SystemClock};

/// Writes a journal of `orders` reservations (alternately committed and released) across several
/// small segments, and returns the number of records.
fn write_journal(dir: &Path, orders: u64) -> u64 {
    let config = PipelineConfig {
        limits: Limits::TEST,
        snapshot_every: 0,
        tick_interval: Duration::from_secs(3600),
        journal: JournalConfig { segment_bytes_max: 512 },
        ..PipelineConfig::default()
    };
    let (pipeline, _) = Pipeline::open_dir(dir, config).unwrap();
    let handle = pipeline.handle();
    let mut records = 0;
    let mut run = |command: Command| {
        records += 1;
        handle.submit(command).unwrap().wait().unwrap().outcome
    };
    run(Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(2), on_hand: 1_000 });
    for buyer in 0..orders {
        let expires_at = Timestamp(SystemClock.now().0 + 3_600_000_000_000);
        let reserve = Command::Reserve {
            buyer: BuyerId(buyer),
            expiry: Expiry::At(expires_at),
            cart: None,
            lines: LineRequests::from_slice(&[LineRequest { sku: SkuId(1), quantity: 2 }]).unwrap(),
            warehouses: WarehouseChoices::from_slice(&[WarehouseId(2)]).unwrap(),
        };
        let surge_engine::Outcome::Reserved { order, .. } = run(reserve) else { panic!() };
        if buyer % 2 == 0 {
            run(Command::Commit { order });
        } else {
            run(Command::Release { order, reason: ReleaseReason::PaymentFailed });
        }
    }
    // Leave no snapshot behind, so `replay` has to read the whole journal.
    pipeline.shutdown();
    for entry in std::fs::read_dir(dir.join("snapshots")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    records
}

fn surge(args: &[&str]) -> (i32, String, String) {
    let output = Process::new(env!("CARGO_BIN_EXE_surge")).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut names: Vec<_> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    names.sort();
    names
}

#[test]
fn verify_inspect_and_replay_a_whole_journal() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_journal(dir.path(), 20);
    let data_dir = dir.path().to_str().unwrap();
    assert!(segments(dir.path()).len() > 2, "the test wants several segments");

    let (code, out, _) = surge(&["journal", "verify", "--data-dir", data_dir]);
    assert_eq!(code, 0, "{out}");
    let report = json(&out);
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], records);
    assert_eq!(report["torn_tail"], Value::Null);

    let (code, out, _) =
        surge(&["journal", "inspect", "--data-dir", data_dir, "--from", "2", "--limit", "3"]);
    assert_eq!(code, 0);
    let lines: Vec<Value> = out.lines().map(json).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["seq"], 2);
    assert_eq!(lines[0]["command"]["type"], "reserve");
    assert_eq!(lines[0]["command"]["lines"][0]["quantity"], 2);
    assert_eq!(lines[1]["command"]["type"], "commit");
    assert_eq!(lines[1]["command"]["order"], 2);
    assert!(lines[0]["at"].as_str().unwrap().ends_with('Z'));

    let (code, out, _) = surge(&["journal", "replay", "--data-dir", data_dir]);
    assert_eq!(code, 0);
    let full = json(&out);
    assert_eq!(full["sequence"], records);
    assert_eq!(full["replayed"], records);
    assert_eq!(full["live_orders"], 10, "committed orders stay live until delivered");
    let (_, out, _) = surge(&["journal", "replay", "--data-dir", data_dir, "--to", "3"]);
    let partial = json(&out);
    assert_eq!(partial["sequence"], 3);
    assert_eq!(partial["live_orders"], 1, "stock, one reservation, its commit");
    assert_ne!(partial["digest"], full["digest"]);
}

#[test]
fn a_torn_final_record_is_reported_and_cut_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_journal(dir.path(), 6);
    let last = segments(dir.path()).pop().unwrap();
    let length = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&last).unwrap().set_len(length - 5).unwrap();
    let data_dir = dir.path().to_str().unwrap();

    let (code, out, _) = surge(&["journal", "verify", "--data-dir", data_dir]);
    assert_eq!(code, 0, "a torn tail is not damage: {out}");
    let report = json(&out);
    assert_eq!(report["records"], records - 1);
    assert_ne!(report["torn_tail"], Value::Null);
    assert_eq!(std::fs::metadata(&last).unwrap().len(), length - 5, "verify changes nothing");

    // A start cuts the torn record; afterwards the journal verifies whole.
    let config = PipelineConfig { limits: Limits::TEST, ..PipelineConfig::default() };
    let (pipeline, restored) = Pipeline::open_dir(dir.path(), config).unwrap();
    assert!(restored.torn_tail.is_some());
    assert_eq!(restored.next_sequence, records);
    pipeline.shutdown();
    let (code, out, _) = surge(&["journal", "verify", "--data-dir", data_dir]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["torn_tail"], Value::Null);
}

#[test]
fn damage_before_the_end_is_named_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), 6);
    let first = segments(dir.path()).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[32 + 28 + 1] ^= 0x10; // inside the first record's payload
    std::fs::write(&first, &bytes).unwrap();
    let data_dir = dir.path().to_str().unwrap();

    let (code, out, _) = surge(&["journal", "verify", "--data-dir", data_dir]);
    assert_eq!(code, 2, "{out}");
    let error = json(&out)["error"].as_str().unwrap().to_owned();
    let name = first.file_name().unwrap().to_str().unwrap();
    assert!(error.contains(name) && error.contains("32"), "names segment and offset: {error}");

    let (code, _, err) = surge(&["journal", "replay", "--data-dir", data_dir]);
    assert_ne!(code, 0);
    assert!(err.contains(name), "{err}");
    let config = PipelineConfig { limits: Limits::TEST, ..PipelineConfig::default() };
    assert!(Pipeline::open_dir(dir.path(), config).is_err(), "a start refuses damaged journals");
    assert_eq!(std::fs::read(&first).unwrap(), bytes, "nothing was overwritten");
}

#[test]
fn commands_with_attachments_verify_and_print_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let config = PipelineConfig { limits: Limits::TEST, ..PipelineConfig::default() };
    let (pipeline, _) = Pipeline::open_dir(dir.path(), config).unwrap();
    let handle = pipeline.handle();
    let stock = Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(2), on_hand: 5 };
    handle.submit(stock).unwrap().wait().unwrap();
    // A checkout's reservation carries its order record: a journal record of kind 1.
    let reserve = Command::Reserve {
        buyer: BuyerId(9),
        expiry: Expiry::After { ttl_ns: 60_000_000_000 },
        cart: None,
        lines: LineRequests::from_slice(&[LineRequest { sku: SkuId(1), quantity: 2 }]).unwrap(),
        warehouses: WarehouseChoices::from_slice(&[WarehouseId(2)]).unwrap(),
    };
    handle.try_submit_with(reserve, b"the order record".to_vec()).unwrap().wait().unwrap();
    pipeline.shutdown();
    let data_dir = dir.path().to_str().unwrap();

    let (code, out, _) = surge(&["journal", "verify", "--data-dir", data_dir]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(json(&out)["records"], 2);
    let (code, out, err) = surge(&["journal", "inspect", "--data-dir", data_dir, "--from", "2"]);
    assert_eq!(code, 0, "{err}");
    let line = json(&out);
    assert_eq!(
        (line["seq"].as_u64(), line["command"]["type"].as_str()),
        (Some(2), Some("reserve"))
    );
    assert_eq!(line["command"]["buyer"], 9);
}

#[test]
fn the_tools_read_archived_segments_as_part_of_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_journal(dir.path(), 20);
    let data_dir = dir.path().to_str().unwrap();
    let (_, out, _) = surge(&["journal", "replay", "--data-dir", data_dir, "--to", "3"]);
    let early = json(&out);
    let (code, out, _) = surge(&["journal", "verify", "--data-dir", data_dir]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(json(&out)["archived_segments"], 0);
    assert!(!dir.path().join("archive").exists(), "the tools create nothing");

    // Retention's move of the two oldest segments.
    let journal = surge_journal::FsStorage::open(&dir.path().join("journal")).unwrap();
    let archive = surge_journal::FsStorage::open(&dir.path().join("archive")).unwrap();
    let through = first_seq_of(&segments(dir.path())[2]) - 1;
    let moved = surge_journal::archive_segments_through(&journal, &archive, through).unwrap();
    assert_eq!(moved.len(), 2);

    let (code, out, _) = surge(&["journal", "verify", "--data-dir", data_dir]);
    assert_eq!(code, 0, "{out}");
    let report = json(&out);
    assert_eq!(report["records"], records, "archived records are checked too: {report}");
    assert_eq!(
        (report["archived_segments"].as_u64(), report["first_sequence"].as_u64()),
        (Some(2), Some(1))
    );
    let (code, out, _) =
        surge(&["journal", "inspect", "--data-dir", data_dir, "--from", "2", "--limit", "1"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["seq"], 2, "inspect reaches into the archive");
    let (code, out, err) = surge(&["journal", "replay", "--data-dir", data_dir, "--to", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["digest"], early["digest"], "replay reaches into the archive");

    // A segment missing inside the archive is a gap, named like any damage.
    let missing = &moved[1];
    std::fs::remove_file(dir.path().join("archive").join(missing)).unwrap();
    let (code, out, _) = surge(&["journal", "verify", "--data-dir", data_dir]);
    assert_eq!(code, 2, "{out}");
    let error = json(&out)["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(&segments(dir.path())[0].file_name().unwrap().to_string_lossy().to_string()),
        "{error}"
    );
}

fn first_seq_of(segment: &Path) -> u64 {
    segment.file_name().unwrap().to_str().unwrap()[..20].parse().unwrap()
}
