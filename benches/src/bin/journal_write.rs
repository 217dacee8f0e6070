//! Journal writes: plain `write` + `fdatasync` (what `surge-journal` does) against a preallocated
//! segment mapped with memmap2 and `msync`ed, on a real file on the disk the journal would use. The
//! journal issue said "memmap2 or plain writes: measure and choose"; this is the measurement.
//!
//! Each run appends framed journal records (`surge_journal::record::encode_record`: the 28-byte
//! header with CRC-32C, then the payload; 36 payload bytes by default, so 64 bytes a record, the
//! size of a typical command record) in batches of `--batch-sizes` records, and after every batch
//! waits for a durability barrier before encoding the next one, as the journaler does. Every
//! variant writes the same bytes (the same seqs, timestamps and payloads, at the same offsets after
//! a 32-byte segment header) and ends each batch with the same guarantee: once the barrier returns,
//! the batch survives a power loss. Variants:
//!
//! - `write_fdatasync` (a): the real `JournalWriter` over `FsStorage`: `append` encodes into its
//!   buffer, `commit` does one `write_all` on a file opened with `O_APPEND` and one `fdatasync`.
//!   The file grows with every batch.
//! - `mmap_msync` (b): a segment of `--segment-mib` (64 MiB) made with `set_len` (sparse: no block
//!   is allocated), its header written, the file `fsync`ed (for the size) and the directory
//!   `fsync`ed, then mapped `MAP_SHARED` with `MmapMut`; each batch is copied into the map and
//!   `flush_range` (`msync(MS_SYNC)`, page-aligned by memmap2) is called on the batch's bytes.
//! - `mmap_msync_prezeroed`: the same, but the segment is first filled with zeros by `write` and
//!   `fsync`ed, so its blocks are allocated and written before any record (what `fallocate` would
//!   only half do: it allocates blocks as "unwritten" extents, whose first write still changes
//!   metadata).
//! - `pwrite_fdatasync_prezeroed`: a control that separates preallocation from mapping: plain
//!   `pwrite` of each batch into the same kind of pre-zeroed segment, then `fdatasync`.
//!
//! Durability. On Linux `msync(MS_SYNC)` of a `MAP_SHARED` mapping writes the range's dirty pages
//! and waits for them through the same `vfs_fsync_range(.., datasync)` path as `fdatasync`, so the
//! data is as durable as with (a), including the metadata needed to read it back (ext4 commits a
//! block allocation of the sparse segment before `msync` returns). What msync does not cover is a
//! size change, and there is none: with preallocation the file's size is set once, made durable at
//! creation by `fsync` of the file and of the directory (done here, outside the timed loop, as
//! `JournalWriter` does for a new segment's header). The price is in recovery: the file's length no
//! longer marks the end of the records, so a restart must find the end by scanning, and the
//! journal's torn-tail rule (docs/formats.md) would have to accept a zero tail; `recovery_scan_ms`
//! is how long `surge_journal::scan` takes on the finished segment (it reports the zeros as a torn
//! tail at the end of the data, which the check below expects). Pre-zeroing costs one extra write of
//! the whole segment per segment (`setup_ms`).
//!
//! Measured per batch size: every variant gets a fresh segment of its own (and a first batch,
//! untimed, that creates it), then their `--batches` timed batches are interleaved round-robin, the
//! variant that goes first rotating each round, so that a change in the machine's state (other
//! processes' writes make every disk flush slower for a while on a shared VM) hits all variants
//! alike instead of whichever ran at that moment. `--batches` is lowered when the batches would not
//! fit in one segment, so that no variant rolls over. `records_per_sec` and `mb_per_sec` (10^6
//! bytes of framed records) are over the sum of that variant's batch times, encoding included.
//! Per batch, HdrHistogram: `write_us` (the `write`, or the copy into the map with its page
//! faults), `sync_us` (the `fdatasync` or `msync`), `commit_us` (both). For `write_fdatasync`,
//! `sync_us` is `CommitStats::sync_ns` and `write_us` the rest of `commit`. Afterwards each segment
//! is scanned and must hold exactly the records written.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use memmap2::MmapMut;
use serde_json::{json, Value};
use surge_benches::{latency_histogram, nanos, per_second, record_clamped, seconds, SplitMix64};
use surge_journal::record::{
    encode_record, encode_segment_header, segment_name, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use surge_journal::{recover, scan, FsStorage, JournalConfig, JournalWriter};

/// Plain `write` + `fdatasync` against a memmap2 segment + `msync`, per batch of journal records.
///
/// Defaults take from 5 s to about a minute on a 2-core VM with a virtio disk, depending on what a
/// disk cache flush costs at the moment (0.1 to 4 ms there, whatever the batch size).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Directory in which a temporary directory holds the segments; it should be on the disk the
    /// journal uses. The current directory by default.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Records per batch, one durability barrier per batch.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 256, 4096])]
    batch_sizes: Vec<usize>,
    /// Timed batches per run, fewer when they would not fit in one segment.
    #[arg(long, default_value_t = 1_000)]
    batches: usize,
    /// Payload bytes of each record; the framed record is 28 bytes more.
    #[arg(long, default_value_t = 36)]
    payload_bytes: usize,
    /// Size of a segment: the journal's roll-over size, and the preallocation of the mapped one.
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
    /// Variants to run, by name; all by default.
    #[arg(long, value_delimiter = ',')]
    variants: Vec<String>,
}

/// The ways of making a batch durable that are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    WriteFdatasync,
    MmapMsync,
    MmapMsyncPrezeroed,
    PwriteFdatasyncPrezeroed,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::WriteFdatasync,
        Variant::MmapMsync,
        Variant::MmapMsyncPrezeroed,
        Variant::PwriteFdatasyncPrezeroed,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::WriteFdatasync => "write_fdatasync",
            Variant::MmapMsync => "mmap_msync",
            Variant::MmapMsyncPrezeroed => "mmap_msync_prezeroed",
            Variant::PwriteFdatasyncPrezeroed => "pwrite_fdatasync_prezeroed",
        }
    }

    /// Whether the segment's whole size exists before the first record (so its end is not the
    /// end of the records).
    fn preallocated(self) -> bool {
        self != Variant::WriteFdatasync
    }
}

/// An open segment of one variant, ready for batches.
enum Target {
    /// The journal's own writer; records go through `append`, not the shared scratch buffer.
    Journal(JournalWriter<FsStorage>),
    /// A preallocated segment mapped shared; `offset` is where the next batch goes.
    Mmap { map: MmapMut, offset: usize },
    /// A preallocated segment written with `pwrite`.
    Pwrite { file: File, offset: u64 },
}

/// Time of one batch's durability steps.
#[derive(Clone, Copy, Debug)]
struct BatchTimes {
    write_ns: u64,
    sync_ns: u64,
}

impl Target {
    /// Adds one record to the batch being built.
    fn append(&mut self, scratch: &mut Vec<u8>, seq: u64, at: u64, payload: &[u8]) {
        match self {
            Target::Journal(writer) => writer.append(seq, at, 0, payload),
            Target::Mmap { .. } | Target::Pwrite { .. } => {
                encode_record(scratch, seq, at, 0, payload);
            }
        }
    }

    /// Makes the batch durable and empties `scratch`.
    fn commit(&mut self, scratch: &mut Vec<u8>) -> anyhow::Result<BatchTimes> {
        let times = match self {
            Target::Journal(writer) => {
                let started = Instant::now();
                let stats = writer.commit().context("JournalWriter::commit")?;
                let total_ns = nanos(started.elapsed());
                BatchTimes {
                    write_ns: total_ns.saturating_sub(stats.sync_ns),
                    sync_ns: stats.sync_ns,
                }
            }
            Target::Mmap { map, offset } => {
                let end = *offset + scratch.len();
                ensure!(end <= map.len(), "the batch does not fit in the mapped segment");
                let started = Instant::now();
                map[*offset..end].copy_from_slice(scratch);
                let copied = Instant::now();
                map.flush_range(*offset, scratch.len()).context("msync")?;
                let synced = Instant::now();
                *offset = end;
                BatchTimes { write_ns: nanos(copied - started), sync_ns: nanos(synced - copied) }
            }
            Target::Pwrite { file, offset } => {
                let started = Instant::now();
                file.write_all_at(scratch, *offset).context("pwrite")?;
                let written = Instant::now();
                file.sync_data().context("fdatasync")?;
                let synced = Instant::now();
                *offset += scratch.len() as u64;
                BatchTimes { write_ns: nanos(written - started), sync_ns: nanos(synced - written) }
            }
        };
        scratch.clear();
        Ok(times)
    }
}

/// Maps the whole segment file shared and writable.
#[expect(unsafe_code, reason = "memmap2 cannot make mapping a file safe: see the SAFETY note")]
fn map_segment(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the map is only unsound if the file changes size or content behind it. The file was
    // created by this process in its own temporary directory, nothing else opens it, and it is
    // neither truncated nor written otherwise while the map lives.
    unsafe { MmapMut::map_mut(file) }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates the preallocated segment starting at seq 1 in `dir`, durably: size, header and name.
fn create_preallocated(dir: &Path, segment_bytes: u64, prezero: bool) -> anyhow::Result<File> {
    let path = dir.join(segment_name(1));
    let mut file =
        OpenOptions::new().read(true).write(true).create_new(true).open(&path).context("create")?;
    if prezero {
        let zeros = vec![0u8; 1 << 20];
        let mut left = segment_bytes;
        while left > 0 {
            let chunk = usize::try_from(left.min(zeros.len() as u64)).expect("at most 1 MiB");
            file.write_all(&zeros[..chunk])?;
            left -= chunk as u64;
        }
    } else {
        file.set_len(segment_bytes)?;
    }
    file.write_all_at(&encode_segment_header(1), 0)?;
    // The size is metadata: `fsync`, not `fdatasync`, once, before any record.
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

fn open_target(variant: Variant, dir: &Path, segment_bytes: u64) -> anyhow::Result<Target> {
    Ok(match variant {
        Variant::WriteFdatasync => {
            let storage = FsStorage::open(dir)?;
            let recovery = recover(&storage)?;
            let config = JournalConfig { segment_bytes_max: segment_bytes };
            // The segment is created, with its header synced and the directory synced, by the
            // first commit, which is the untimed first batch.
            Target::Journal(JournalWriter::open(storage, config, &recovery)?)
        }
        Variant::MmapMsync | Variant::MmapMsyncPrezeroed => {
            let file =
                create_preallocated(dir, segment_bytes, variant == Variant::MmapMsyncPrezeroed)?;
            let map = map_segment(&file).context("mmap")?;
            Target::Mmap { map, offset: SEGMENT_HEADER_LEN }
        }
        Variant::PwriteFdatasyncPrezeroed => {
            let file = create_preallocated(dir, segment_bytes, true)?;
            Target::Pwrite { file, offset: SEGMENT_HEADER_LEN as u64 }
        }
    })
}

fn quantiles_us(histogram: &Histogram<u64>) -> Value {
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    json!({
        "p50": us(histogram.value_at_quantile(0.50)),
        "p99": us(histogram.value_at_quantile(0.99)),
        "max": us(histogram.max()),
    })
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// One variant's segment during a batch size's run, and what was measured on it.
struct Lane {
    variant: Variant,
    /// Holds the segment; removed on drop.
    dir: tempfile::TempDir,
    target: Option<Target>,
    scratch: Vec<u8>,
    payload: Vec<u8>,
    /// The seq of the next record.
    seq: u64,
    setup: Duration,
    /// Time of the timed batches, encoding included.
    busy: Duration,
    write_hist: Histogram<u64>,
    sync_hist: Histogram<u64>,
    commit_hist: Histogram<u64>,
}

impl Lane {
    /// A fresh segment in a temporary directory under `parent`, with its untimed first batch.
    fn open(
        variant: Variant,
        batch_size: usize,
        args: &Args,
        parent: &Path,
    ) -> anyhow::Result<Lane> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("journal_write-{}-{batch_size}-", variant.name()))
            .tempdir_in(parent)?;
        // The payloads: random bytes with the record's seq in front, the same for every variant.
        let mut rng = SplitMix64::new(0x006a_6f75_726e_616c);
        let payload = (0..args.payload_bytes).map(|_| rng.next_u64().to_le_bytes()[0]).collect();
        let started = Instant::now();
        let target = open_target(variant, dir.path(), args.segment_mib << 20)?;
        let mut lane = Lane {
            variant,
            dir,
            target: Some(target),
            scratch: Vec::with_capacity(batch_size * (args.payload_bytes + RECORD_HEADER_LEN)),
            payload,
            seq: 1,
            setup: Duration::ZERO,
            busy: Duration::ZERO,
            write_hist: latency_histogram(),
            sync_hist: latency_histogram(),
            commit_hist: latency_histogram(),
        };
        lane.batch(batch_size)?;
        lane.setup = started.elapsed();
        Ok(lane)
    }

    /// Encodes `batch_size` records and commits them.
    fn batch(&mut self, batch_size: usize) -> anyhow::Result<BatchTimes> {
        let target = self.target.as_mut().context("the lane is closed")?;
        let seq_prefix = self.payload.len().min(8);
        for _ in 0..batch_size {
            self.payload[..seq_prefix].copy_from_slice(&self.seq.to_le_bytes()[..seq_prefix]);
            // The timestamp: a command a microsecond, as the benchmarks' synthetic stream.
            target.append(&mut self.scratch, self.seq, self.seq * 1_000, &self.payload);
            self.seq += 1;
        }
        target.commit(&mut self.scratch)
    }

    /// One timed batch.
    fn timed_batch(&mut self, batch_size: usize) -> anyhow::Result<()> {
        let started = Instant::now();
        let times = self.batch(batch_size)?;
        self.busy += started.elapsed();
        record_clamped(&mut self.write_hist, times.write_ns);
        record_clamped(&mut self.sync_hist, times.sync_ns);
        record_clamped(&mut self.commit_hist, times.write_ns + times.sync_ns);
        Ok(())
    }

    /// Closes the segment, checks that it holds exactly the records written (seqs 1.., then, when
    /// preallocated, zeros), and reports.
    fn finish(mut self, batch_size: usize, batches: usize, args: &Args) -> anyhow::Result<Value> {
        drop(self.target.take());
        let storage = FsStorage::open(self.dir.path())?;
        let scan_started = Instant::now();
        let found = scan(&storage).context("scan")?;
        let scan_time = scan_started.elapsed();
        let [segment] = found.segments.as_slice() else {
            bail!("expected one segment, found {}", found.segments.len());
        };
        let last_seq = self.seq - 1;
        ensure!(
            segment.last_seq == Some(last_seq),
            "the segment ends at seq {:?}, not {last_seq}",
            segment.last_seq
        );
        let record_bytes = (args.payload_bytes + RECORD_HEADER_LEN) as u64;
        let data_end = SEGMENT_HEADER_LEN as u64 + last_seq * record_bytes;
        if self.variant.preallocated() {
            let torn = found.torn_tail.as_ref().context("the zero tail was not seen")?;
            ensure!(torn.offset == data_end, "the zero tail starts at {}", torn.offset);
        } else {
            ensure!(found.torn_tail.is_none(), "a torn tail after plain writes");
            ensure!(segment.bytes == data_end, "the segment is {} bytes", segment.bytes);
        }

        let records = (batches * batch_size) as u64;
        let bytes = records * record_bytes;
        #[expect(clippy::cast_precision_loss, reason = "a rate for a report")]
        let mb_per_sec = bytes as f64 / self.busy.as_secs_f64() / 1e6;
        Ok(json!({
            "batches": batches,
            "records": records,
            "bytes": bytes,
            "seconds": seconds(self.busy),
            "records_per_sec": per_second(records, self.busy),
            "mb_per_sec": round1(mb_per_sec),
            "write_us": quantiles_us(&self.write_hist),
            "sync_us": quantiles_us(&self.sync_hist),
            "commit_us": quantiles_us(&self.commit_hist),
            "setup_ms": round1(self.setup.as_secs_f64() * 1e3),
            "recovery_scan_ms": round1(scan_time.as_secs_f64() * 1e3),
        }))
    }
}

/// Every variant at one batch size, their batches interleaved round-robin.
fn run_batch_size(
    variants: &[Variant],
    batch_size: usize,
    batches: usize,
    args: &Args,
    parent: &Path,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut lanes = variants
        .iter()
        .map(|&variant| {
            Lane::open(variant, batch_size, args, parent)
                .with_context(|| format!("opening {}", variant.name()))
        })
        .collect::<anyhow::Result<Vec<Lane>>>()?;
    for round in 0..batches {
        // Rotate who goes first, so that no variant always follows the same one.
        let count = lanes.len();
        for k in 0..count {
            let lane = &mut lanes[(round + k) % count];
            lane.timed_batch(batch_size).with_context(|| lane.variant.name())?;
        }
    }
    let mut results = serde_json::Map::new();
    for lane in lanes {
        let name = lane.variant.name();
        let report = lane.finish(batch_size, batches, args).with_context(|| name.to_owned())?;
        eprintln!("  batch {batch_size} {name}: {report}");
        results.insert(name.to_owned(), report);
    }
    Ok(results)
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
    ensure!(args.batches > 0, "--batches must be positive");
    ensure!(!args.batch_sizes.contains(&0), "a batch holds at least one record");
    let variants: Vec<Variant> = if args.variants.is_empty() {
        Variant::ALL.to_vec()
    } else {
        args.variants
            .iter()
            .map(|name| {
                Variant::ALL
                    .into_iter()
                    .find(|variant| variant.name() == name)
                    .with_context(|| format!("unknown variant {name}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let parent = args.dir.canonicalize().with_context(|| format!("{}", args.dir.display()))?;
    let segment_bytes = args.segment_mib << 20;
    let record_bytes = args.payload_bytes + RECORD_HEADER_LEN;
    let load_average_at_start = load_average();

    let mut results = serde_json::Map::new();
    for &batch_size in &args.batch_sizes {
        let batch_bytes = u64::try_from(batch_size * record_bytes)?;
        // The untimed first batch and the timed ones, after the header, in one segment.
        let fit = (segment_bytes - SEGMENT_HEADER_LEN as u64) / batch_bytes;
        ensure!(fit >= 2, "a batch of {batch_size} records does not fit twice in a segment");
        let batches = args.batches.min(usize::try_from(fit - 1)?);
        let by_variant = run_batch_size(&variants, batch_size, batches, &args, &parent)
            .with_context(|| format!("batches of {batch_size}"))?;
        results.insert(format!("batch_{batch_size}"), Value::Object(by_variant));
    }

    let report = json!({
        "bench": "journal_write",
        "measured": "per batch size, each variant a fresh segment file and one untimed first batch, then `batches` timed batches per variant, interleaved round-robin between variants, of `batch` framed journal records (record_bytes each) each followed by a durability barrier: write_fdatasync = surge_journal JournalWriter<FsStorage> commit (write_all + fdatasync, file grows); mmap_msync = set_len-preallocated (sparse) segment mapped MAP_SHARED, copy into the map + msync(MS_SYNC) of the batch's pages; mmap_msync_prezeroed = the same on a segment first filled with zeros and fsynced; pwrite_fdatasync_prezeroed = pwrite into such a segment + fdatasync. records_per_sec and mb_per_sec (1e6 B) over the sum of the variant's timed batch times, encoding included; write_us/sync_us/commit_us = per-batch write or copy / fdatasync or msync / both, HdrHistogram; setup_ms = segment creation (and zeroing) + first batch; recovery_scan_ms = surge_journal::scan of the finished segment",
        "cores": thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "dir": parent.display().to_string(),
        "payload_bytes": args.payload_bytes,
        "record_bytes": record_bytes,
        "segment_bytes": segment_bytes,
        "load_average_1m": { "start": load_average_at_start, "end": load_average() },
        "results": Value::Object(results),
    });
    println!("{report}");
    Ok(())
}
