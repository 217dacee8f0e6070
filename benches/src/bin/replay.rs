//! Start-up and footprint: how fast a journal replays, how long a restart with a snapshot takes,
//! what a snapshot costs, and how much memory a full engine holds.
//!
//! Steps, in this order so that the memory figures come before anything else has grown the heap:
//!
//! - (d) memory: an engine with the production limits, every one of `--memory-skus` SKUs stocked and
//!   `--memory-orders` pending reservations live; resident memory from `/proc/self/status` before
//!   and after, and again while a clone exists (the pipeline clones the engine for every snapshot).
//! - A journal of `--commands` commands (the synthetic stream of `surge_benches::Workload`: stock
//!   for every SKU, then the order mix) is written with `durable::Sequencer` in batches of 65 536,
//!   one fsync each.
//! - (a) replay: `surge_journal::recover` + `surge_pipeline::restore` with no snapshot, in records/s.
//! - (c) snapshot: `Engine::encode_snapshot` time and size, and `surge_journal::write_snapshot`.
//! - (b) restart: 10 % more commands are journaled after the snapshot, then `recover` + `restore`
//!   load the snapshot and replay the suffix; the result's digest is checked against a full replay.
//!
//! Reading the JSON line: the journal was just written, so replay reads it from the page cache,
//! not the disk: the figures are the CPU cost of decoding and applying, the best case of a restart.
//! Targets of the issue: replay ≥ 5M records/s, restart < 5 s, resident memory < 1 GiB.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use surge_benches::{
    nanos, per_second, random_lines, seconds, Memory, Workload, WorkloadConfig, WAREHOUSE,
};
use surge_engine::{
    BuyerId, Command, DiscardEvents, Engine, Expiry, Limits, Outcome, Sequence, SkuId, Timestamp,
    WarehouseChoices,
};
use surge_journal::{FsStorage, JournalConfig};
use surge_pipeline::{restore, Sequencer};

/// Commands journaled per batch (one fsync) while building the journal.
const BUILD_BATCH: u64 = 65_536;

/// Replay speed, restart time with a snapshot, snapshot cost and resident memory.
///
/// Defaults (10M commands over 1M SKUs, 1M SKUs and 1M reservations for memory) take about 20 s
/// on a 2-core machine and need about 0.5 GB of disk for the journal.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Commands in the journal before the snapshot, the `SetStock` of every SKU included.
    #[arg(long, default_value_t = 10_000_000)]
    commands: u64,
    /// SKUs of the journaled stream.
    #[arg(long, default_value_t = 1_000_000)]
    skus: u32,
    /// SKUs stocked for the memory measurement.
    #[arg(long, default_value_t = 1_000_000)]
    memory_skus: u32,
    /// Pending reservations held for the memory measurement.
    #[arg(long, default_value_t = 1_000_000)]
    memory_orders: u32,
    /// Where `journal/` and `snapshots/` go; a fresh temporary directory by default. Must be empty.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seed of the synthetic stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        u64::from(args.skus) < args.commands,
        "--commands must exceed --skus (stock comes first)"
    );
    let limits = Limits::PRODUCTION;
    ensure!(args.skus <= limits.skus_max && args.memory_skus <= limits.skus_max, "too many SKUs");
    ensure!(
        args.memory_orders <= limits.orders_max,
        "--memory-orders exceeds the production limit"
    );

    let memory = measure_memory(&args, limits);

    let temporary = tempfile::tempdir().context("creating a temporary data directory")?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    let journal_dir = data_dir.join("journal");
    let snapshot_dir = data_dir.join("snapshots");
    let config = WorkloadConfig { skus: args.skus, hot: false, seed: args.seed };
    let mut workload = Workload::new(config);

    eprintln!("building a journal of {} commands in {}", args.commands, data_dir.display());
    let build_started = Instant::now();
    let journal_bytes =
        append_commands(&journal_dir, &Engine::new(limits), &mut workload, args.commands)?;
    let build = build_started.elapsed();
    eprintln!("  {:.2} s, {journal_bytes} bytes", seconds(build));

    // (a) Replay without a snapshot.
    let replay_started = Instant::now();
    let (engine, replayed, replay_recover) = restart(limits, &journal_dir, &snapshot_dir)?;
    let replay = replay_started.elapsed();
    ensure!(
        replayed.replayed == args.commands,
        "replayed {} of {}",
        replayed.replayed,
        args.commands
    );
    eprintln!("  replayed {} records in {:.2} s", replayed.replayed, seconds(replay));

    // (c) Snapshot of the state at `commands`.
    let mut snapshot = Vec::new();
    let encode_started = Instant::now();
    engine.encode_snapshot(&mut snapshot);
    let encode = encode_started.elapsed();
    let snapshots = FsStorage::open(&snapshot_dir).context("opening the snapshot directory")?;
    let write_started = Instant::now();
    surge_journal::write_snapshot(
        &snapshots,
        engine.last_sequence().0,
        engine.last_at().0,
        &snapshot,
    )?;
    let write = write_started.elapsed();
    let decode_started = Instant::now();
    let decoded =
        Engine::decode_snapshot(limits, &snapshot).context("decoding our own snapshot")?;
    let decode = decode_started.elapsed();
    drop(decoded);
    eprintln!("  snapshot: {} bytes, encoded in {:.3} s", snapshot.len(), seconds(encode));

    // (b) 10 % more commands after the snapshot, then a restart from snapshot + suffix.
    let suffix = args.commands / 10;
    append_commands(&journal_dir, &engine, &mut workload, suffix)?;
    let live_orders_at_snapshot = engine.live_orders();
    drop(engine);
    let restart_started = Instant::now();
    let (restarted, report, restart_recover) = restart(limits, &journal_dir, &snapshot_dir)?;
    let restart_time = restart_started.elapsed();
    ensure!(report.snapshot_sequence == args.commands, "restart did not start from the snapshot");
    ensure!(report.replayed == suffix, "restart replayed {} of {suffix}", report.replayed);
    eprintln!(
        "  restart: snapshot + {} records in {:.2} s",
        report.replayed,
        seconds(restart_time)
    );

    // The restart must land on the state a full replay reaches.
    let empty_snapshots = tempfile::tempdir().context("creating an empty snapshot directory")?;
    let (full, _, _) = restart(limits, &journal_dir, empty_snapshots.path())?;
    let digest_matches = full.digest() == restarted.digest();
    ensure!(digest_matches, "restart from the snapshot differs from a full replay");

    let report = serde_json::json!({
        "bench": "replay",
        "commands": args.commands,
        "skus": args.skus,
        "seed": args.seed,
        "mix_journaled": workload.mix().to_json(),
        "journal_bytes": journal_bytes,
        "journal_build_seconds": seconds(build),
        "journal_build_records_per_sec": per_second(args.commands, build),
        "replay": {
            "records": args.commands,
            "seconds": seconds(replay),
            "records_per_sec": per_second(args.commands, replay),
            "recover_seconds": seconds(replay_recover),
            "target_records_per_sec": 5_000_000,
        },
        "restart": {
            "snapshot_sequence": args.commands,
            "suffix_records": suffix,
            "seconds": seconds(restart_time),
            "recover_seconds": seconds(restart_recover),
            "digest_matches_full_replay": digest_matches,
            "target_seconds": 5,
        },
        "snapshot": {
            "bytes": snapshot.len(),
            "live_orders": live_orders_at_snapshot,
            "encode_ms": nanos(encode) / 1_000_000,
            "write_ms": nanos(write) / 1_000_000,
            "decode_ms": nanos(decode) / 1_000_000,
        },
        "memory": memory,
        "measured": "replay = recover + restore(no snapshot) over a journal just written (warm page \
                     cache), records/s; restart = recover + restore from the snapshot at `commands` \
                     plus a 10 % suffix (recover_seconds: the journal scan alone); mix_journaled \
                     counts prefix and suffix; snapshot encode/write/decode timed alone; memory = VmRSS and \
                     VmHWM from /proc/self/status, measured first in the process",
    });
    println!("{report}");
    drop(temporary);
    Ok(())
}

/// Appends the next `count` commands of `workload` to the journal in `dir`, after the state of
/// `engine`, and returns the journal's total size.
fn append_commands(
    dir: &Path,
    engine: &Engine,
    workload: &mut Workload,
    count: u64,
) -> anyhow::Result<u64> {
    let storage = FsStorage::open(dir).context("opening the journal directory")?;
    let recovery = surge_journal::recover(&storage)?;
    let mut sequencer = Sequencer::open(storage, JournalConfig::default(), &recovery, engine)?;
    ensure!(
        sequencer.next_sequence().0 == workload.next_sequence(),
        "journal and workload disagree"
    );
    for written in 1..=count {
        let (at, command) = workload.next_command();
        let (sequence, stamped) = sequencer.append(at, &command);
        debug_assert_eq!((sequence.0, stamped), (workload.next_sequence() - 1, at));
        if written % BUILD_BATCH == 0 {
            sequencer.commit()?;
        }
    }
    sequencer.commit()?;
    Ok(sequencer.journal_bytes())
}

/// What start-up does: cut a torn tail, load the newest snapshot, replay the rest. Also returns the
/// time of `recover` alone, which scans every segment whatever the snapshot.
fn restart(
    limits: Limits,
    journal_dir: &Path,
    snapshot_dir: &Path,
) -> anyhow::Result<(Engine, surge_pipeline::RestoreReport, Duration)> {
    let journal = FsStorage::open(journal_dir).context("opening the journal directory")?;
    let snapshots = FsStorage::open(snapshot_dir).context("opening the snapshot directory")?;
    let recover_started = Instant::now();
    let recovery = surge_journal::recover(&journal)?;
    let recover = recover_started.elapsed();
    let (engine, report) = restore(limits, &journal, &snapshots, &recovery, None)?;
    Ok((engine, report, recover))
}

/// (d): resident memory of an engine holding `memory_skus` stocked SKUs and `memory_orders` pending
/// reservations of 1–3 lines.
fn measure_memory(args: &Args, limits: Limits) -> serde_json::Value {
    let baseline = Memory::read();
    let mut engine = Engine::new(limits);
    let allocated = Memory::read();
    let mut sequence = 0u64;
    let mut apply = |engine: &mut Engine, command: &Command| {
        sequence += 1;
        engine.apply(Sequence(sequence), Timestamp(sequence), command, &mut DiscardEvents)
    };
    for sku in 0..args.memory_skus {
        let command =
            Command::SetStock { sku: SkuId(sku), warehouse: WAREHOUSE, on_hand: 1_000_000 };
        apply(&mut engine, &command);
    }
    let mut rng = surge_benches::SplitMix64::new(args.seed);
    let mut reserved = 0u64;
    for _ in 0..args.memory_orders {
        let command = Command::Reserve {
            buyer: BuyerId(rng.below(1_000_000)),
            expiry: Expiry::At(Timestamp(u64::MAX)),
            cart: None,
            lines: random_lines(&mut rng, args.memory_skus, false),
            warehouses: WarehouseChoices::from_slice(&[WAREHOUSE]).expect("one warehouse fits"),
        };
        reserved += u64::from(matches!(apply(&mut engine, &command), Outcome::Reserved { .. }));
    }
    let full = Memory::read();
    let clone = engine.clone();
    let with_clone = Memory::read();
    drop(clone);
    let live_orders = engine.live_orders();
    drop(engine);
    eprintln!(
        "memory: {} MiB resident with {live_orders} live orders ({} MiB with a snapshot clone)",
        full.resident_bytes >> 20,
        with_clone.resident_bytes >> 20
    );
    serde_json::json!({
        "skus": args.memory_skus,
        "live_orders": live_orders,
        "reserved": reserved,
        "limits": format!("{limits:?}"),
        "resident_bytes_before": baseline.resident_bytes,
        "resident_bytes_after_new": allocated.resident_bytes,
        "resident_bytes": full.resident_bytes,
        "resident_bytes_engine": full.resident_bytes.saturating_sub(baseline.resident_bytes),
        "resident_bytes_with_snapshot_clone": with_clone.resident_bytes,
        "resident_peak_bytes": with_clone.resident_peak_bytes,
        "target_bytes": 1u64 << 30,
    })
}
