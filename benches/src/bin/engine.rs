//! The state machine alone: how many commands per second one thread pushes through
//! `Engine::apply`, and how long one command takes, with no queue, journal or other thread.
//!
//! The stream is the synthetic one of `surge_benches::Workload` (reserve 1–3 SKUs, then commit,
//! ship and deliver, or release, or abandon and expire), generated in chunks between timed regions so
//! generation is never timed; the `SetStock` of every SKU comes first and is not timed either. The
//! stream runs four times on a fresh engine: with `DiscardEvents` and with a reused `Vec<Event>`
//! cleared every 1024 commands, each once for throughput and once for sampled latency.
//!
//! Reading the JSON line: `commands_per_sec` (top level, and per sink) is mix commands divided by
//! the time spent inside `apply`, clocked per batch of 1024 commands. `batch_mean_ns_*` are
//! percentiles over those batches of the mean time per command, so a stall (a compaction, a page
//! fault storm) shows in `batch_mean_ns_max`. `p50_ns`/`p99_ns`/`p999_ns`/`max_ns` come from a
//! separate pass that times every 64th command alone with `Instant`; they include the cost of
//! reading the clock (`timer_overhead_ns`). The target is 20M commands/s.

use std::time::{Duration, Instant};

use anyhow::ensure;
use clap::Parser;
use hdrhistogram::Histogram;
use surge_benches::{
    latency_histogram, nanos, per_second, record_clamped, seconds, Mix, Workload, WorkloadConfig,
};
use surge_engine::{
    Command, DiscardEvents, Engine, Event, EventSink, Limits, Outcome, Sequence, Timestamp,
};

/// Commands generated per untimed chunk: about 11 MiB of commands, small enough to stay cheap to
/// hold, large enough that the pause for generation is rare.
const CHUNK: usize = 1 << 16;
/// Commands timed together for throughput, and between two clears of the event vector.
const BATCH: usize = 1024;
/// In the latency pass, one command in this many is timed alone.
const SAMPLE_EVERY: usize = 64;

/// Throughput and latency of `Engine::apply` on one thread.
///
/// Defaults (10M commands over 1M SKUs) take about 20 s on a 2-core machine: four passes of the
/// stream, plus generating it and stocking every SKU before each pass.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Commands of the timed mix, after the untimed `SetStock` of every SKU.
    #[arg(long, default_value_t = 10_000_000)]
    commands: u64,
    /// SKUs stocked, and drawn from uniformly by reservations.
    #[arg(long, default_value_t = 1_000_000)]
    skus: u32,
    /// Every reservation takes one line of the same SKU: one contended product.
    #[arg(long)]
    hot: bool,
    /// The engine's live-order limit (the production value by default). It also sizes the
    /// reservation-deadline heap, whose compaction cost grows with it.
    #[arg(long, default_value_t = Limits::PRODUCTION.orders_max)]
    orders_max: u32,
    /// Seed of the synthetic stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Which of the two measurements a pass makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timing {
    /// Clock each batch of [`BATCH`] commands.
    Batches,
    /// Clock every [`SAMPLE_EVERY`]th command alone.
    Sampled,
}

/// A sink that can be emptied between batches, saying how many events it held.
trait Drain: EventSink {
    fn drain(&mut self) -> u64;
}

impl Drain for DiscardEvents {
    fn drain(&mut self) -> u64 {
        0
    }
}

impl Drain for Vec<Event> {
    fn drain(&mut self) -> u64 {
        let count = self.len() as u64;
        self.clear();
        count
    }
}

#[derive(Debug)]
struct Pass {
    applied: u64,
    apply_time: Duration,
    /// Mean nanoseconds per command of each batch (batch pass), or nanoseconds of each sampled
    /// command (latency pass).
    histogram: Histogram<u64>,
    reserved: u64,
    rejected: u64,
    events: u64,
    live_orders: usize,
    mix: Mix,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.skus > 0, "--skus must be at least 1");
    let limits = Limits {
        skus_max: args.skus,
        warehouses_max: 1,
        stock_cells_max: args.skus,
        orders_max: args.orders_max,
        buyer_counters_max: 1024,
    };
    let config = WorkloadConfig { skus: args.skus, hot: args.hot, seed: args.seed };
    let timer_overhead_ns = timer_overhead_ns();
    eprintln!(
        "engine bench: {} commands over {} SKUs{}, Command is {} bytes",
        args.commands,
        args.skus,
        if args.hot { " (hot SKU)" } else { "" },
        std::mem::size_of::<Command>()
    );

    let mut results = Vec::new();
    let mut mix = None;
    for sink_name in ["discard_events", "vec_events"] {
        let mut sides = Vec::new();
        for timing in [Timing::Batches, Timing::Sampled] {
            let pass = if sink_name == "discard_events" {
                run_pass(&args, limits, config, timing, &mut DiscardEvents)
            } else {
                let mut events: Vec<Event> = Vec::with_capacity(BATCH * 8);
                run_pass(&args, limits, config, timing, &mut events)
            };
            eprintln!(
                "  {sink_name} {timing:?}: {} commands/s over {:.2} s",
                per_second(pass.applied, pass.apply_time),
                seconds(pass.apply_time)
            );
            mix = Some(pass.mix);
            sides.push(pass);
        }
        let (batches, sampled) = (&sides[0], &sides[1]);
        let json = serde_json::json!({
            "commands_per_sec": per_second(batches.applied, batches.apply_time),
            "apply_seconds": seconds(batches.apply_time),
            "batch_mean_ns_p50": batches.histogram.value_at_quantile(0.5),
            "batch_mean_ns_p99": batches.histogram.value_at_quantile(0.99),
            "batch_mean_ns_max": batches.histogram.max(),
            "p50_ns": sampled.histogram.value_at_quantile(0.5),
            "p99_ns": sampled.histogram.value_at_quantile(0.99),
            "p999_ns": sampled.histogram.value_at_quantile(0.999),
            "max_ns": sampled.histogram.max(),
            "samples": sampled.histogram.len(),
            "sampled_pass_commands_per_sec": per_second(sampled.applied, sampled.apply_time),
            "reserved": batches.reserved,
            "rejected": batches.rejected,
            "events": batches.events,
            "live_orders_at_end": batches.live_orders,
        });
        results.push((sink_name, json));
    }

    let mix = mix.expect("at least one pass ran");
    let headline = results[0].1["commands_per_sec"].clone();
    let mut report = serde_json::json!({
        "bench": "engine",
        "commands": args.commands,
        "skus": args.skus,
        "hot": args.hot,
        "orders_max": args.orders_max,
        "seed": args.seed,
        "mix": mix.to_json(),
        "command_bytes": std::mem::size_of::<Command>(),
        "timer_overhead_ns": timer_overhead_ns,
        "commands_per_sec": headline,
        "target_commands_per_sec": 20_000_000,
        "measured": format!(
            "commands_per_sec = mix commands / time inside Engine::apply clocked per batch of {BATCH} \
             (SetStock prefill and command generation excluded); batch_mean_ns_* = per-command mean \
             of each batch; p50/p99/p999/max_ns = every {SAMPLE_EVERY}th command timed alone with \
             Instant in a separate pass, including timer_overhead_ns"
        ),
    });
    for (name, json) in results {
        report[name] = json;
    }
    println!("{report}");
    Ok(())
}

fn run_pass<S: Drain>(
    args: &Args,
    limits: Limits,
    config: WorkloadConfig,
    timing: Timing,
    sink: &mut S,
) -> Pass {
    let mut engine = Engine::new(limits);
    let mut workload = Workload::new(config);
    let mut chunk: Vec<(Timestamp, Command)> = Vec::with_capacity(CHUNK);
    let mut sequence = 0u64;

    let prefill = workload.prefill_len();
    while workload.next_sequence() <= prefill {
        let count = usize::try_from(prefill + 1 - workload.next_sequence())
            .map_or(CHUNK, |left| left.min(CHUNK));
        workload.fill(&mut chunk, count);
        for (at, command) in &chunk {
            sequence += 1;
            let outcome = engine.apply(Sequence(sequence), *at, command, sink);
            assert!(matches!(outcome, Outcome::StockSet(_)), "prefill failed: {outcome:?}");
        }
        sink.drain();
    }

    let mut pass = Pass {
        applied: 0,
        apply_time: Duration::ZERO,
        histogram: latency_histogram(),
        reserved: 0,
        rejected: 0,
        events: 0,
        live_orders: 0,
        mix: Mix::default(),
    };
    while pass.applied < args.commands {
        let count =
            usize::try_from(args.commands - pass.applied).map_or(CHUNK, |left| left.min(CHUNK));
        workload.fill(&mut chunk, count);
        for batch in chunk.chunks(BATCH) {
            let started = Instant::now();
            for (index, (at, command)) in batch.iter().enumerate() {
                sequence += 1;
                let outcome = if timing == Timing::Sampled && index % SAMPLE_EVERY == 0 {
                    let command_started = Instant::now();
                    let outcome = engine.apply(Sequence(sequence), *at, command, sink);
                    record_clamped(&mut pass.histogram, nanos(command_started.elapsed()));
                    outcome
                } else {
                    engine.apply(Sequence(sequence), *at, command, sink)
                };
                match outcome {
                    Outcome::Reserved { .. } => pass.reserved += 1,
                    Outcome::Rejected(_) => pass.rejected += 1,
                    _ => {}
                }
            }
            pass.events += sink.drain();
            let elapsed = started.elapsed();
            pass.apply_time += elapsed;
            if timing == Timing::Batches {
                record_clamped(&mut pass.histogram, nanos(elapsed) / batch.len() as u64);
            }
        }
        pass.applied += count as u64;
    }
    pass.live_orders = engine.live_orders();
    pass.mix = workload.mix();
    engine.check_invariants();
    pass
}

/// The least time two back-to-back `Instant::now()` calls measure, over many tries.
fn timer_overhead_ns() -> u64 {
    (0..10_000)
        .map(|_| {
            let started = Instant::now();
            nanos(started.elapsed())
        })
        .min()
        .unwrap_or(0)
}
