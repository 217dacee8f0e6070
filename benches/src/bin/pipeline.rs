//! The durable path end to end: producer threads submit through `Handle::submit`, the sequencer
//! journals each batch with one fsync, the engine applies it, and only then does the producer's
//! `Ticket::wait` return. This is what a gateway request costs before its answer can be sent.
//!
//! Each producer has a collector thread that waits on its tickets in submission order (the pipeline
//! answers in sequence order, so waiting in order loses no precision) and feeds the order's next
//! step back to the producer: a reservation is then committed, shipped and delivered (75 %) or
//! released (25 %). Closed loop (default), a producer keeps at most `--window` tickets outstanding,
//! so group commit sees batches of up to producers × window commands. Open loop (`--rate R`), the
//! producers send on a fixed schedule of R commands/s in total, and latency is measured from each
//! command's scheduled send time, so a stalled pipeline cannot hide its stall by slowing the load
//! (no coordinated omission).
//!
//! Reading the JSON line: `commands_per_sec` is acknowledged commands over the wall time of the
//! timed phase (the `SetStock` prefill is excluded). `p50_us`..`max_us` are ack latencies from an
//! HdrHistogram: from submit in closed loop, from the scheduled time in open loop (where
//! `from_submit` repeats them from the actual submit). `fsync_count` and `batch_mean` come from
//! `Handle::stats()` over the timed phase. Targets of the issue: 5M durable commands/s, and p99 ack
//! under 1 ms at 1M/s offered.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use crossbeam_channel::{unbounded, Receiver, Sender};
use hdrhistogram::Histogram;
use surge_benches::{
    latency_histogram, nanos, per_second, random_lines, record_clamped, seconds, Mix, SplitMix64,
    RESERVATION_TTL_NS, WAREHOUSE,
};
use surge_engine::{
    BuyerId, Command, Expiry, OrderState, Outcome, ReleaseReason, SkuId, WarehouseChoices,
};
use surge_pipeline::PipelineStats;
use surge_pipeline::{Handle, Pipeline, PipelineConfig, Ticket};

/// Throughput and ack latency of the durable pipeline (journal + fsync + engine).
///
/// Defaults (2M commands, 2 producers, 100k SKUs) take about 5 s on a 2-core machine with an
/// ordinary SSD; with `--rate`, the run lasts commands / rate seconds plus the drain.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Commands of the timed phase, over all producers.
    #[arg(long, default_value_t = 2_000_000)]
    commands: u64,
    /// Producer threads (each with a collector thread).
    #[arg(long, default_value_t = 2)]
    producers: u32,
    /// Closed loop: the most tickets one producer keeps outstanding; once reached, the producer
    /// waits until half of them are acknowledged.
    #[arg(long, default_value_t = 8_192)]
    window: usize,
    /// Open loop: commands per second offered in total, on a fixed schedule.
    #[arg(long)]
    rate: Option<u64>,
    /// Where `journal/` and `snapshots/` go; a fresh temporary directory by default. Must be empty
    /// or hold a journal of an earlier run of this benchmark.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// SKUs stocked before the timed phase, and drawn from uniformly by reservations.
    #[arg(long, default_value_t = 100_000)]
    skus: u32,
    /// Commands between engine snapshots (0: none); the pipeline's default when not given.
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// Seed of the producers' random choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// One submitted command on its way from a producer to its collector.
#[derive(Debug)]
struct InFlight {
    ticket: Ticket,
    /// Where latency is measured from: the scheduled send time in open loop, else the submit.
    origin: Instant,
    submitted: Instant,
}

#[derive(Debug)]
struct Collected {
    from_origin: Histogram<u64>,
    from_submit: Histogram<u64>,
    acknowledged: u64,
    rejected: u64,
    mix: Mix,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.producers > 0 && args.skus > 0 && args.window > 0, "counts must be positive");
    ensure!(args.rate != Some(0), "--rate must be positive");
    let temporary = tempfile::tempdir().context("creating a temporary data directory")?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    // The follower hands every command on, as it does for the gateway's projection.
    let mut config = PipelineConfig {
        follow_from: Some(surge_engine::Sequence(0)),
        ..PipelineConfig::default()
    };
    if let Some(snapshot_every) = args.snapshot_every {
        config.snapshot_every = snapshot_every;
    }
    eprintln!(
        "pipeline bench: {} commands, {} producers, {} in {}",
        args.commands,
        args.producers,
        args.rate
            .map_or(format!("window {}", args.window), |rate| format!("{rate} commands/s offered")),
        data_dir.display()
    );
    let (mut pipeline, report) =
        Pipeline::open_dir(&data_dir, config.clone()).context("opening the pipeline")?;
    eprintln!("  restored: snapshot at {}, {} replayed", report.snapshot_sequence, report.replayed);
    let outputs = pipeline.take_outputs().context("the outputs are taken once")?;
    let event_reader = thread::spawn(move || {
        let mut events = 0u64;
        while let Some(output) = outputs.recv() {
            events += output.events().len() as u64;
            outputs.recycle(output);
        }
        events
    });
    let handle = pipeline.handle();

    let prefill_started = Instant::now();
    stock_every_sku(&handle, args.skus)?;
    eprintln!("  stocked {} SKUs in {:.2} s", args.skus, seconds(prefill_started.elapsed()));

    let before = handle.stats();
    let started = Instant::now();
    let mut workers = Vec::new();
    for producer in 0..args.producers {
        let handle = handle.clone();
        let args_producer = ProducerPlan::new(&args, producer, started);
        let (in_flight, in_flight_out) = unbounded::<InFlight>();
        let (next_steps, next_steps_in) = unbounded::<Command>();
        let collector = thread::Builder::new()
            .name(format!("collector-{producer}"))
            .spawn(move || collect(&in_flight_out, &next_steps, args_producer.seed))?;
        let producer_thread = thread::Builder::new()
            .name(format!("producer-{producer}"))
            .spawn(move || produce(&handle, &args_producer, &in_flight, &next_steps_in))?;
        workers.push((producer_thread, collector));
    }
    let mut collected = Vec::new();
    for (producer, collector) in workers {
        producer.join().map_err(|_| anyhow::anyhow!("a producer panicked"))??;
        collected.push(collector.join().map_err(|_| anyhow::anyhow!("a collector panicked"))?);
    }
    let elapsed = started.elapsed();
    let after = handle.stats();
    drop(handle);

    let shutdown_started = Instant::now();
    pipeline.shutdown();
    let shutdown = shutdown_started.elapsed();
    let events = event_reader.join().map_err(|_| anyhow::anyhow!("the event reader panicked"))?;

    let mut from_origin = latency_histogram();
    let mut from_submit = latency_histogram();
    let mut mix = Mix::default();
    let (mut acknowledged, mut rejected) = (0, 0);
    for part in &collected {
        from_origin.add(&part.from_origin).context("merging histograms")?;
        from_submit.add(&part.from_submit).context("merging histograms")?;
        acknowledged += part.acknowledged;
        rejected += part.rejected;
        for (total, count) in [
            (&mut mix.reserve, part.mix.reserve),
            (&mut mix.commit, part.mix.commit),
            (&mut mix.release, part.mix.release),
            (&mut mix.ship, part.mix.ship),
            (&mut mix.deliver, part.mix.deliver),
        ] {
            *total += count;
        }
    }
    let fsync_count = after.fsync_count - before.fsync_count;
    let durable = after.durable_sequence - before.durable_sequence;
    let micros =
        |histogram: &Histogram<u64>, quantile: f64| histogram.value_at_quantile(quantile) / 1_000;
    let mut report = serde_json::json!({
        "bench": "pipeline",
        "commands": acknowledged,
        "producers": args.producers,
        "mode": if args.rate.is_some() { "open_loop" } else { "closed_loop" },
        "window": args.rate.map_or(Some(args.window), |_| None),
        "offered_commands_per_sec": args.rate,
        "skus": args.skus,
        "seed": args.seed,
        "commands_per_sec": per_second(acknowledged, elapsed),
        "elapsed_seconds": seconds(elapsed),
        "p50_us": micros(&from_origin, 0.5),
        "p99_us": micros(&from_origin, 0.99),
        "p999_us": micros(&from_origin, 0.999),
        "max_us": from_origin.max() / 1_000,
        "latency_from": if args.rate.is_some() { "scheduled send time" } else { "submit" },
        "fsync_count": fsync_count,
        "durable_commands": durable,
        "batch_mean": if fsync_count == 0 { 0.0 } else { ratio(durable, fsync_count) },
        "fsync_mean_us": (after.fsync_ns_total - before.fsync_ns_total)
            .checked_div(fsync_count)
            .unwrap_or(0)
            / 1_000,
        "journal_bytes": after.journal_bytes - before.journal_bytes,
        "rejected": rejected,
        "events": events,
        "mix": mix.to_json(),
        "config": {
            "queue_capacity": config.queue_capacity,
            "batch_max": config.batch_max,
            "snapshot_every": config.snapshot_every,
        },
        "shutdown_seconds": seconds(shutdown),
        "target_commands_per_sec": 5_000_000,
        "target_p99_us_at_1m_per_sec": 1_000,
        "measured": "commands_per_sec = acknowledged commands / wall time from the first submit to \
                     the last ack (SetStock prefill excluded); p*_us = HdrHistogram of ack latency \
                     (Ticket::wait returned minus latency_from), all producers merged; fsync_count, \
                     durable_commands, batch_mean, fsync_mean_us from Handle::stats() deltas over \
                     the timed phase",
    });
    if args.rate.is_some() {
        report["from_submit"] = serde_json::json!({
            "p50_us": micros(&from_submit, 0.5),
            "p99_us": micros(&from_submit, 0.99),
            "p999_us": micros(&from_submit, 0.999),
            "max_us": from_submit.max() / 1_000,
        });
    }
    print_stats_line(&after);
    println!("{report}");
    drop(temporary);
    Ok(())
}

/// What one producer sends and when.
#[derive(Clone, Copy, Debug)]
struct ProducerPlan {
    commands: u64,
    skus: u32,
    seed: u64,
    /// Open loop: this producer's `n`-th command is due at `started + (n * producers + index) / rate`.
    schedule: Option<Schedule>,
    /// Closed loop: the most tickets outstanding.
    window: usize,
}

#[derive(Clone, Copy, Debug)]
struct Schedule {
    started: Instant,
    index: u64,
    producers: u64,
    rate: u64,
}

impl Schedule {
    fn due(&self, n: u64) -> Instant {
        let position = u128::from(n * self.producers + self.index);
        let nanos = position * 1_000_000_000 / u128::from(self.rate);
        self.started + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl ProducerPlan {
    fn new(args: &Args, index: u32, started: Instant) -> Self {
        let producers = u64::from(args.producers);
        let index = u64::from(index);
        // Spread the remainder so the producers' shares add up to `commands` exactly.
        let commands = args.commands / producers + u64::from(index < args.commands % producers);
        Self {
            commands,
            skus: args.skus,
            seed: args.seed ^ (index + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            schedule: args.rate.map(|rate| Schedule { started, index, producers, rate }),
            window: args.window,
        }
    }
}

fn produce(
    handle: &Handle,
    plan: &ProducerPlan,
    in_flight: &Sender<InFlight>,
    next_steps: &Receiver<Command>,
) -> anyhow::Result<()> {
    let mut rng = SplitMix64::new(plan.seed);
    for n in 0..plan.commands {
        let origin = match plan.schedule {
            Some(schedule) => {
                let due = schedule.due(n);
                // Sleep to the schedule; after an oversleep the late commands go out at once, and
                // their latency still counts from when they were due.
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                due
            }
            None => {
                // A full window waits until half of it is acknowledged. Resuming at the first free
                // slot (a bounded channel) made the producers spin through `sched_yield` on every
                // ack, taking a quarter of the two cores from the pipeline under test.
                if in_flight.len() >= plan.window {
                    while in_flight.len() > plan.window / 2 {
                        thread::sleep(Duration::from_micros(100));
                    }
                }
                Instant::now()
            }
        };
        let command =
            next_steps.try_recv().unwrap_or_else(|_| new_reservation(&mut rng, plan.skus));
        let submitted = Instant::now();
        let ticket = handle.submit(command).context("submitting a command")?;
        let origin = if plan.schedule.is_some() { origin } else { submitted };
        in_flight.send(InFlight { ticket, origin, submitted }).context("the collector stopped")?;
    }
    Ok(())
}

fn new_reservation(rng: &mut SplitMix64, skus: u32) -> Command {
    Command::Reserve {
        buyer: BuyerId(rng.below(1_000_000)),
        expiry: Expiry::After { ttl_ns: RESERVATION_TTL_NS },
        cart: None,
        lines: random_lines(rng, skus, false),
        warehouses: WarehouseChoices::from_slice(&[WAREHOUSE]).expect("one warehouse fits"),
    }
}

/// Waits on the tickets in submission order, records their latency and sends each order's next
/// step back to the producer.
fn collect(in_flight: &Receiver<InFlight>, next_steps: &Sender<Command>, seed: u64) -> Collected {
    let mut rng = SplitMix64::new(seed.rotate_left(17));
    let mut collected = Collected {
        from_origin: latency_histogram(),
        from_submit: latency_histogram(),
        acknowledged: 0,
        rejected: 0,
        mix: Mix::default(),
    };
    for item in in_flight {
        let Ok(applied) = item.ticket.wait() else {
            break;
        };
        let done = Instant::now();
        record_clamped(
            &mut collected.from_origin,
            nanos(done.saturating_duration_since(item.origin)),
        );
        record_clamped(
            &mut collected.from_submit,
            nanos(done.saturating_duration_since(item.submitted)),
        );
        collected.acknowledged += 1;
        let next = match applied.outcome {
            Outcome::Reserved { order, .. } => {
                collected.mix.reserve += 1;
                Some(if rng.percent(75) {
                    Command::Commit { order }
                } else {
                    Command::Release { order, reason: ReleaseReason::PaymentFailed }
                })
            }
            Outcome::Transitioned { order, state } => match state {
                OrderState::Confirmed => {
                    collected.mix.commit += 1;
                    Some(Command::Ship { order })
                }
                OrderState::Shipped => {
                    collected.mix.ship += 1;
                    Some(Command::Deliver { order })
                }
                OrderState::Delivered => {
                    collected.mix.deliver += 1;
                    None
                }
                _ => {
                    collected.mix.release += 1;
                    None
                }
            },
            Outcome::Rejected(_) => {
                collected.rejected += 1;
                None
            }
            _ => None,
        };
        if let Some(next) = next {
            // The producer may have finished; its remaining next steps are simply not sent.
            let _ = next_steps.send(next);
        }
    }
    collected
}

/// Sets stock for every SKU through the pipeline, keeping many commands in flight.
fn stock_every_sku(handle: &Handle, skus: u32) -> anyhow::Result<()> {
    let mut tickets = VecDeque::with_capacity(4_096);
    for sku in 0..skus {
        if tickets.len() == 4_096 {
            wait_stocked(tickets.pop_front())?;
        }
        let command =
            Command::SetStock { sku: SkuId(sku), warehouse: WAREHOUSE, on_hand: 1_000_000 };
        tickets.push_back(handle.submit(command).context("submitting SetStock")?);
    }
    while let Some(ticket) = tickets.pop_front() {
        wait_stocked(Some(ticket))?;
    }
    Ok(())
}

fn wait_stocked(ticket: Option<Ticket>) -> anyhow::Result<()> {
    if let Some(ticket) = ticket {
        let applied = ticket.wait().context("waiting for SetStock")?;
        ensure!(
            matches!(applied.outcome, Outcome::StockSet(_)),
            "SetStock failed: {:?}",
            applied.outcome
        );
    }
    Ok(())
}

fn print_stats_line(stats: &PipelineStats) {
    eprintln!(
        "  final stats: durable {} applied {} fsyncs {} journal {} bytes, snapshot at {}",
        stats.durable_sequence,
        stats.applied_sequence,
        stats.fsync_count,
        stats.journal_bytes,
        stats.snapshot_sequence
    );
}

#[expect(clippy::cast_precision_loss, reason = "a mean for a report")]
fn ratio(numerator: u64, denominator: u64) -> f64 {
    numerator as f64 / denominator as f64
}
