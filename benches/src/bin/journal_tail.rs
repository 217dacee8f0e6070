//! Reading a journal that is already written: the follower's `JournalTail::read_through` against the
//! startup replay's `read_from`, on the same journal in the page cache, in one run.
//!
//! A journal of `--records` records of `--payload-bytes` each is written with `JournalWriter` over
//! `FsStorage` (default 64 MiB segments, `--build-batch` records per commit) and read once to warm
//! the page cache. Then, for `--rounds` rounds, each variant reads all of it, the variant that goes
//! first rotating each round so that a change in the machine's state hits all alike:
//!
//! - `read_from`: `surge_journal::read_from(journal, 1, ..)`, which reads each segment whole.
//! - `tail_one_call`: `JournalTail::open(journal, 1)` and one `read_through(last, ..)`.
//! - `tail_steps`: the same tail read through `--step` more records per call, as a follower that
//!   catches up in small steps does; it shows the cost of a call beyond its records.
//!
//! Every variant's visitor does the same work (it folds each record's seq, payload length and
//! first byte into a checksum), and the checksums must agree. `records_per_sec` is the median and
//! best over rounds, open included.
//!
//! Separately, the I/O a caught-up follower does per call: one `FsStorage::read_at` of
//! `--poll-bytes` at the end of a segment (its cached handle), against opening the file, reading
//! the same bytes and closing it again, `--polls` times each.

use std::fs::File;
use std::hint::black_box;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use serde_json::{json, Value};
use surge_benches::{nanos, per_second};
use surge_journal::record::segment_name;
use surge_journal::{
    read_from, recover, FsStorage, JournalConfig, JournalTail, JournalWriter, RecordRef, Storage,
};

/// `JournalTail::read_through` against `read_from` over one journal in the page cache.
///
/// Defaults take about 10 s on a 2-core VM and need 128 MB of disk.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Directory in which a temporary directory holds the journal; the current one by default.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Records in the journal.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Payload bytes of each record; the framed record is 28 bytes more.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Records per commit while writing the journal.
    #[arg(long, default_value_t = 4_096)]
    build_batch: u64,
    /// Rounds of every variant.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Records per `read_through` call in `tail_steps`.
    #[arg(long, default_value_t = 16)]
    step: u64,
    /// Bytes per read in the per-call I/O measurement.
    #[arg(long, default_value_t = 4_096)]
    poll_bytes: usize,
    /// Reads per way in the per-call I/O measurement.
    #[arg(long, default_value_t = 100_000)]
    polls: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    ReadFrom,
    TailOneCall,
    TailSteps,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::ReadFrom, Variant::TailOneCall, Variant::TailSteps];

    fn name(self) -> &'static str {
        match self {
            Variant::ReadFrom => "read_from",
            Variant::TailOneCall => "tail_one_call",
            Variant::TailSteps => "tail_steps",
        }
    }
}

/// What every variant does with a record: enough to touch the payload, too little to hide the cost
/// of reading.
fn fold(checksum: &mut u64, record: &RecordRef<'_>) {
    let first = record.payload.first().copied().unwrap_or(0);
    *checksum = checksum
        .wrapping_mul(31)
        .wrapping_add(record.seq ^ record.payload.len() as u64 ^ u64::from(first));
}

/// Reads the whole journal the way `variant` does; returns the records seen and their checksum.
fn read_all(
    variant: Variant,
    storage: &FsStorage,
    last: u64,
    step: u64,
) -> anyhow::Result<(u64, u64)> {
    let mut records = 0;
    let mut checksum = 0;
    let mut visit = |record: RecordRef<'_>| {
        records += 1;
        fold(&mut checksum, &record);
        ControlFlow::Continue(())
    };
    match variant {
        Variant::ReadFrom => read_from(storage, 1, &mut visit)?,
        Variant::TailOneCall => {
            JournalTail::open(storage.clone(), 1)?.read_through(last, &mut visit)?;
        }
        Variant::TailSteps => {
            let mut tail = JournalTail::open(storage.clone(), 1)?;
            while tail.next_seq() <= last {
                let through = (tail.next_seq() + step - 1).min(last);
                tail.read_through(through, &mut visit)?;
            }
        }
    }
    Ok((records, black_box(checksum)))
}

fn write_journal(storage: &FsStorage, args: &Args) -> anyhow::Result<()> {
    let recovery = recover(storage)?;
    ensure!(recovery.segments.is_empty(), "the journal directory is not empty");
    let mut writer = JournalWriter::open(storage.clone(), JournalConfig::default(), &recovery)?;
    let mut payload = vec![0u8; args.payload_bytes];
    for seq in 1..=args.records {
        for (index, byte) in payload.iter_mut().enumerate() {
            *byte = (seq as u8).wrapping_add(index as u8);
        }
        writer.append(seq, seq * 1_000, 0, &payload);
        if seq % args.build_batch == 0 {
            writer.commit()?;
        }
    }
    writer.commit()?;
    Ok(())
}

/// Nanoseconds per read of `poll_bytes` at the end of segment `name`, through `FsStorage::read_at`
/// and through open + pread + close.
fn per_call_io(storage: &FsStorage, args: &Args) -> anyhow::Result<Value> {
    let name = segment_name(1);
    let path = storage.dir().join(&name);
    let len = std::fs::metadata(&path)?.len();
    let offset = len.saturating_sub(args.poll_bytes as u64);
    let mut buffer = vec![0; args.poll_bytes];
    let cached = {
        let started = Instant::now();
        for _ in 0..args.polls {
            black_box(storage.read_at(&name, offset, &mut buffer)?);
        }
        started.elapsed()
    };
    let reopened = {
        let started = Instant::now();
        for _ in 0..args.polls {
            let file = File::open(&path)?;
            black_box(file.read_at(&mut buffer, offset)?);
        }
        started.elapsed()
    };
    let per_call = |elapsed: Duration| nanos(elapsed) / u64::from(args.polls);
    Ok(json!({
        "bytes": args.poll_bytes,
        "calls": args.polls,
        "read_at_cached_handle_ns": per_call(cached),
        "open_pread_close_ns": per_call(reopened),
    }))
}

/// The 1-minute load average, from `/proc/loadavg`: how busy the machine was besides this run.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|field| field.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.records > 0 && args.rounds > 0, "--records and --rounds must be positive");
    ensure!(args.build_batch > 0 && args.step > 0, "--build-batch and --step must be positive");
    ensure!(args.payload_bytes > 0, "--payload-bytes must be positive");
    let parent = args.dir.canonicalize().with_context(|| format!("{}", args.dir.display()))?;
    let dir = tempfile::tempdir_in(&parent)?;
    let storage = FsStorage::open(dir.path())?;
    let load_average_at_start = load_average();

    let started = Instant::now();
    write_journal(&storage, &args)?;
    let segments = recover(&storage)?.segments;
    let bytes: u64 = segments.iter().map(|segment| segment.bytes).sum();
    eprintln!(
        "wrote {} records, {} segments, {} MB in {:.1} s",
        args.records,
        segments.len(),
        bytes / 1_000_000,
        started.elapsed().as_secs_f64()
    );
    let (_, expected) = read_all(Variant::ReadFrom, &storage, args.records, args.step)?;

    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); Variant::ALL.len()];
    for round in 0..args.rounds {
        for turn in 0..Variant::ALL.len() {
            let index = (round + turn) % Variant::ALL.len();
            let variant = Variant::ALL[index];
            let started = Instant::now();
            let (records, checksum) = read_all(variant, &storage, args.records, args.step)?;
            times[index].push(started.elapsed());
            ensure!(records == args.records, "{} read {records} records", variant.name());
            ensure!(checksum == expected, "{} read other records", variant.name());
        }
        eprintln!("round {} of {}", round + 1, args.rounds);
    }

    let mut results = serde_json::Map::new();
    for (variant, times) in Variant::ALL.iter().zip(&mut times) {
        times.sort();
        let median = times[times.len() / 2];
        let best = times[0];
        eprintln!(
            "{:>14}: {:>10} records/s median, {:>10} best",
            variant.name(),
            per_second(args.records, median),
            per_second(args.records, best)
        );
        results.insert(
            variant.name().to_owned(),
            json!({
                "records_per_sec_median": per_second(args.records, median),
                "records_per_sec_best": per_second(args.records, best),
                "ns_per_record_median": nanos(median) / args.records,
            }),
        );
    }
    let per_call = per_call_io(&storage, &args)?;
    eprintln!("per-call I/O: {per_call}");

    let report = json!({
        "bench": "journal_tail",
        "measured": "a journal written by JournalWriter<FsStorage> (64 MiB segments) and read once to warm the page cache, then per round each variant reads all of it, first variant rotating: read_from = surge_journal::read_from from seq 1 (whole segments); tail_one_call = JournalTail::open at 1 + one read_through(last); tail_steps = read_through `step` records per call; the visitor folds seq, payload length and first byte into a checksum, equal for all; records_per_sec over the whole read, open included, median and best of `rounds`. per_call_io: one read of `bytes` at the end of the first segment through FsStorage::read_at (cached handle) vs File::open + pread + close",
        "cores": thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "dir": parent.display().to_string(),
        "records": args.records,
        "payload_bytes": args.payload_bytes,
        "journal_bytes": bytes,
        "segments": segments.len(),
        "rounds": args.rounds,
        "step": args.step,
        "load_average_1m": { "start": load_average_at_start, "end": load_average() },
        "results": Value::Object(results),
        "per_call_io": per_call,
    });
    println!("{report}");
    Ok(())
}
