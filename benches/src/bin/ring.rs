//! The input ring on its own: a crossbeam `bounded` channel against the `disruptor` crate, on the
//! shape of Surge's hot path (one or two producer threads → ring → one consumer that spends a fixed
//! ~200 ns of arithmetic per item and folds a result), to decide which one a 2-core machine should
//! run. Nothing of the engine, journal or pipeline is involved.
//!
//! For each ring: `throughput_1p` / `throughput_2p`, items per second with 1 and 2 producers
//! publishing as fast as the ring accepts them (a single-producer disruptor for 1, the
//! multi-producer one for 2). `paced`: 2 producers at a fixed offered rate (200k items/s by default)
//! while `--gateway-threads` threads (2, as many as tokio gives the gateway here) do fixed units of
//! CPU work, standing in for HTTP handlers; it reports the hand-off latency (producer stamps the
//! item just before publishing, consumer reads the clock when it takes it), the gateway's work
//! units per second against `gateway_alone` (the gateway threads alone, measured right before each
//! ring's phases), and the CPU the ring's threads used; `paced_alone` is the same without the
//! gateway. `idle` and `idle_alone`: the same at a trickle (1k items/s), with and without the
//! gateway: does an idle consumer burn a core? CPU time of the process comes from
//! `/proc/self/stat` (10 ms ticks), that of each gateway thread from `/proc/thread-self/schedstat`
//! (ns); `ring_cpu_cores` is the difference over wall time, i.e. producers plus consumer.
//!
//! disruptor 3.7 ships only busy-spinning wait strategies (`BusySpin`, `BusySpinWithSpinLoopHint`);
//! `disruptor_spin_yield_sleep` is a strategy written here after LMAX's `SleepingWaitStrategy`, to
//! show what a consumer that gives its core back costs in latency.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use crossbeam_channel::{bounded, Receiver, Sender};
use disruptor::wait_strategies::WaitStrategy;
use disruptor::{
    build_multi_producer, build_single_producer, BusySpin, BusySpinWithSpinLoopHint,
    ProcessorSettings, Producer, Sequence,
};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use surge_benches::{latency_histogram, nanos, per_second, record_clamped, seconds};

/// Crossbeam channel vs disruptor ring: throughput, hand-off latency, and the CPU left for others.
///
/// Defaults take about 45 s on a 2-core machine.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Items of each throughput phase, over all producers.
    #[arg(long, default_value_t = 1_500_000)]
    items: u64,
    /// Slots of the ring (a power of two, for the disruptor), and capacity of the channel.
    #[arg(long, default_value_t = 65_536)]
    capacity: usize,
    /// Nanoseconds of arithmetic the consumer spends on each item (calibrated at start).
    #[arg(long, default_value_t = 200)]
    work_ns: u64,
    /// Items per second offered, over both producers, in the `paced` phase.
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
    /// Items per second offered in the `idle` phases.
    #[arg(long, default_value_t = 1_000)]
    idle_rate: u64,
    /// Seconds of each `paced` phase.
    #[arg(long, default_value_t = 2.0)]
    paced_seconds: f64,
    /// Seconds of each `idle` phase and of each ring's gateway-alone baseline.
    #[arg(long, default_value_t = 1.5)]
    idle_seconds: f64,
    /// Threads doing CPU work beside the ring in the `paced` and `idle` phases.
    #[arg(long, default_value_t = 2)]
    gateway_threads: u32,
    /// Rings to measure, by name; all by default.
    #[arg(long, value_delimiter = ',')]
    rings: Vec<String>,
}

/// What producers hand to the consumer: the slot layout of the disruptor and the message of the
/// channel alike.
#[derive(Clone, Copy, Debug, Default)]
struct Item {
    /// When the producer published it, in ns since the run's epoch.
    sent_ns: u64,
    payload: u64,
    /// The producer's final item: not counted, it only says that producer is done.
    last: bool,
}

/// The rings under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ring {
    /// `crossbeam_channel::bounded`; the consumer blocks in `recv`, then drains with `try_recv`.
    Crossbeam,
    /// disruptor with `BusySpin`: the consumer polls its barrier in a tight loop.
    DisruptorBusySpin,
    /// disruptor with `BusySpinWithSpinLoopHint`: the same with a `pause` per poll.
    DisruptorSpinLoopHint,
    /// disruptor with [`SpinYieldSleep`], ours.
    DisruptorSpinYieldSleep,
}

impl Ring {
    const ALL: [Ring; 4] = [
        Ring::Crossbeam,
        Ring::DisruptorBusySpin,
        Ring::DisruptorSpinLoopHint,
        Ring::DisruptorSpinYieldSleep,
    ];

    fn name(self) -> &'static str {
        match self {
            Ring::Crossbeam => "crossbeam_bounded",
            Ring::DisruptorBusySpin => "disruptor_busy_spin",
            Ring::DisruptorSpinLoopHint => "disruptor_busy_spin_hint",
            Ring::DisruptorSpinYieldSleep => "disruptor_spin_yield_sleep",
        }
    }
}

/// How producers offer items during a phase.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// As fast as the ring takes them, this many items over all producers.
    Saturate { items: u64 },
    /// On a fixed schedule of `rate` items/s over all producers, for `duration`.
    Paced { rate: u64, duration: Duration },
}

/// One phase to run on one ring.
#[derive(Clone, Copy, Debug)]
struct PhasePlan {
    producers: u32,
    load: Load,
    gateway_threads: u32,
}

/// Spin, then yield, then sleep: LMAX's `SleepingWaitStrategy` (100 polls, 100 yields, then
/// `parkNanos(100)`). A sleep of 100 ns lasts the kernel's timer slack, about 50–60 µs, so an idle
/// consumer wakes some 20 000 times a second instead of spinning.
#[derive(Clone, Copy, Debug)]
struct SpinYieldSleep;

thread_local! {
    /// The sequence the consumer thread last waited for, and how many empty polls it made for it.
    /// `WaitStrategy` must be `Copy` and gets no state of its own, so the count lives here.
    static EMPTY_POLLS: Cell<(Sequence, u32)> = const { Cell::new((-1, 0)) };
}

impl WaitStrategy for SpinYieldSleep {
    fn wait_for(&self, sequence: Sequence) {
        let polls = EMPTY_POLLS.with(|cell| {
            let (waited_for, polls) = cell.get();
            let polls = if waited_for == sequence { polls.saturating_add(1) } else { 0 };
            cell.set((sequence, polls));
            polls
        });
        if polls < 100 {
            std::hint::spin_loop();
        } else if polls < 200 {
            thread::yield_now();
        } else {
            thread::sleep(Duration::from_nanos(100));
        }
    }
}

/// A dependent chain of multiply, add and xor-shift: CPU work the optimiser cannot drop or batch.
fn spin_work(seed: u64, iterations: u32) -> u64 {
    let mut state = seed;
    for _ in 0..iterations {
        state = state.wrapping_mul(0x5851_f42d_4c95_7f2d).wrapping_add(0x1405_7b7e_f767_814f);
        state ^= state >> 29;
    }
    std::hint::black_box(state)
}

/// Iterations of [`spin_work`] that take about `target_ns`, measured on this machine now.
fn calibrate(target_ns: u64) -> (u32, f64) {
    const PROBE: u32 = 20_000_000;
    let mut best = Duration::MAX;
    for round in 0..3 {
        let started = Instant::now();
        spin_work(round, PROBE);
        best = best.min(started.elapsed());
    }
    let ns_per_iteration = best.as_secs_f64() * 1e9 / f64::from(PROBE);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "an iteration count of a few hundred"
    )]
    let iterations = (target_ns as f64 / ns_per_iteration).round().max(1.0) as u32;
    (iterations, ns_per_iteration)
}

/// CPU time of the whole process so far (user + system, every thread, alive or exited), from
/// `/proc/self/stat`, whose ticks are `USER_HZ` = 100 per second on Linux.
fn process_cpu_ns() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name, in parentheses, may hold spaces; the fields after it do not.
    let after_name = stat.rsplit_once(')').context("no ')' in /proc/self/stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); the first field after the name is field 3.
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields.get(index - 3).context("short /proc/self/stat")?.parse().context("a tick count")
    };
    Ok((ticks(14)? + ticks(15)?) * 10_000_000)
}

/// CPU time of the calling thread so far, in ns, from `/proc/thread-self/schedstat`.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|field| field.parse().ok()))
        .unwrap_or(0)
}

/// What a gateway thread did: work units, its CPU time and its wall time.
#[derive(Clone, Copy, Debug, Default)]
struct GatewayTally {
    units: u64,
    cpu_ns: u64,
    wall: Duration,
}

/// `threads` threads doing units of `unit_iterations` of [`spin_work`] until `stop` is set.
fn start_gateway(
    threads: u32,
    unit_iterations: u32,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<JoinHandle<GatewayTally>>> {
    (0..threads)
        .map(|index| {
            let stop = Arc::clone(stop);
            thread::Builder::new()
                .name(format!("gateway-{index}"))
                .spawn(move || {
                    let started = Instant::now();
                    let cpu_before = thread_cpu_ns();
                    let mut units = 0u64;
                    let mut fold = u64::from(index);
                    while !stop.load(Ordering::Relaxed) {
                        fold ^= spin_work(fold.wrapping_add(units), unit_iterations);
                        units += 1;
                    }
                    std::hint::black_box(fold);
                    GatewayTally {
                        units,
                        cpu_ns: thread_cpu_ns().saturating_sub(cpu_before),
                        wall: started.elapsed(),
                    }
                })
                .context("spawning a gateway thread")
        })
        .collect()
}

/// The gateway threads alone for `duration`: the baseline the phases of one ring are compared
/// with, measured right before them because other processes on a shared machine come and go.
fn gateway_alone(threads: u32, unit_iterations: u32, duration: Duration) -> anyhow::Result<Value> {
    let stop = Arc::new(AtomicBool::new(false));
    let gateway = start_gateway(threads, unit_iterations, &stop)?;
    thread::sleep(duration);
    let tally = stop_gateway(&stop, gateway)?;
    Ok(json!({
        "gateway_units_per_sec": per_second(tally.units, tally.wall),
        "gateway_cpu_cores": round3(tally.cpu_ns as f64 / tally.wall.as_nanos() as f64),
    }))
}

/// The 1-minute load average, from `/proc/loadavg`: how busy the machine was besides this run.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|field| field.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn stop_gateway(
    stop: &AtomicBool,
    threads: Vec<JoinHandle<GatewayTally>>,
) -> anyhow::Result<GatewayTally> {
    stop.store(true, Ordering::Relaxed);
    let mut total = GatewayTally::default();
    for thread in threads {
        let tally = thread.join().map_err(|_| anyhow::anyhow!("a gateway thread panicked"))?;
        total.units += tally.units;
        total.cpu_ns += tally.cpu_ns;
        total.wall = total.wall.max(tally.wall);
    }
    Ok(total)
}

/// What the consumer saw during a phase.
#[derive(Debug)]
struct ConsumerTally {
    items: u64,
    latency_ns: Histogram<u64>,
    /// When the consumer took its last item, in ns since the epoch.
    last_taken_ns: u64,
    checksum: u64,
}

/// The consumer's side, the same code behind either ring: time the hand-off, do the work, fold the
/// result, and send the tally once every producer's final item arrived.
#[derive(Debug)]
struct Consumer {
    epoch: Instant,
    work_iterations: u32,
    producers_running: u32,
    tally: Option<ConsumerTally>,
    done: Sender<ConsumerTally>,
}

impl Consumer {
    fn new(
        epoch: Instant,
        work_iterations: u32,
        producers: u32,
        done: Sender<ConsumerTally>,
    ) -> Self {
        let tally = ConsumerTally {
            items: 0,
            latency_ns: latency_histogram(),
            last_taken_ns: 0,
            checksum: 0,
        };
        Self { epoch, work_iterations, producers_running: producers, tally: Some(tally), done }
    }

    /// Takes one item; `true` once the last producer finished.
    fn take(&mut self, item: &Item) -> bool {
        let taken_ns = nanos(self.epoch.elapsed());
        let Some(tally) = self.tally.as_mut() else { return true };
        if item.last {
            self.producers_running -= 1;
            if self.producers_running == 0 {
                tally.last_taken_ns = taken_ns;
                let tally = self.tally.take().expect("the tally is present until sent");
                // The receiver only goes away when the phase failed; nothing to report then.
                let _ = self.done.send(tally);
                return true;
            }
            return false;
        }
        record_clamped(&mut tally.latency_ns, taken_ns.saturating_sub(item.sent_ns));
        tally.checksum ^= spin_work(item.payload, self.work_iterations);
        tally.items += 1;
        false
    }
}

/// A producer's end of a ring.
trait Publish: Send + 'static {
    /// Publishes `item` with `sent_ns` stamped as late as the ring allows; waits while it is full.
    fn publish(&mut self, epoch: Instant, item: Item);
}

impl Publish for Sender<Item> {
    fn publish(&mut self, epoch: Instant, mut item: Item) {
        item.sent_ns = nanos(epoch.elapsed());
        self.send(item).expect("the consumer outlives its producers");
    }
}

/// A disruptor producer handle, single or multi.
struct DisruptorPublisher<P>(P);

impl<P: Producer<Item> + Send + 'static> Publish for DisruptorPublisher<P> {
    fn publish(&mut self, epoch: Instant, item: Item) {
        // `publish` spins while the ring is full; the stamp is taken once a slot is claimed.
        self.0.publish(|slot| {
            *slot = Item { sent_ns: nanos(epoch.elapsed()), ..item };
        });
    }
}

/// One producer thread's part of a phase.
fn produce<P: Publish>(mut publisher: P, epoch: Instant, index: u32, plan: PhasePlan) {
    let producers = u64::from(plan.producers);
    let mut payload = u64::from(index) << 48;
    match plan.load {
        Load::Saturate { items } => {
            for _ in 0..items / producers {
                payload += 1;
                publisher.publish(epoch, Item { payload, ..Item::default() });
            }
        }
        Load::Paced { rate, duration } => {
            let interval_ns = 1_000_000_000 * producers / rate;
            let started = nanos(epoch.elapsed());
            let end = started + nanos(duration);
            // Producers are staggered so that their items interleave instead of arriving in pairs.
            let mut due = started + interval_ns * u64::from(index) / producers;
            loop {
                let now = nanos(epoch.elapsed());
                if now >= end {
                    break;
                }
                while due <= now {
                    payload += 1;
                    publisher.publish(epoch, Item { payload, ..Item::default() });
                    due += interval_ns;
                }
                thread::sleep(Duration::from_nanos(due.saturating_sub(nanos(epoch.elapsed()))));
            }
        }
    }
    publisher.publish(epoch, Item { last: true, ..Item::default() });
}

/// The calibrated costs every phase shares.
#[derive(Clone, Copy, Debug)]
struct Setup {
    capacity: usize,
    work_iterations: u32,
    gateway_unit_iterations: u32,
    gateway_baseline_units_per_sec: u64,
}

/// Runs one phase: gateway threads (if any), producers on their publishers, the consumer already
/// started by the caller, which sends its tally on `done`.
fn drive<P: Publish>(
    publishers: Vec<P>,
    epoch: Instant,
    plan: PhasePlan,
    setup: Setup,
    done: &Receiver<ConsumerTally>,
) -> anyhow::Result<Value> {
    let stop = Arc::new(AtomicBool::new(false));
    let gateway = start_gateway(plan.gateway_threads, setup.gateway_unit_iterations, &stop)?;
    let cpu_before = process_cpu_ns()?;
    let started = Instant::now();
    let started_ns = nanos(started.duration_since(epoch));
    let producers = publishers
        .into_iter()
        .zip(0..)
        .map(|(publisher, index)| {
            thread::Builder::new()
                .name(format!("producer-{index}"))
                .spawn(move || produce(publisher, epoch, index, plan))
                .context("spawning a producer thread")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for producer in producers {
        producer.join().map_err(|_| anyhow::anyhow!("a producer panicked"))?;
    }
    let tally = done
        .recv_timeout(Duration::from_secs(120))
        .context("the consumer did not finish within 120 s")?;
    let wall = started.elapsed();
    let cpu = process_cpu_ns()?.saturating_sub(cpu_before);
    let gateway = stop_gateway(&stop, gateway)?;

    let consumed = Duration::from_nanos(tally.last_taken_ns.saturating_sub(started_ns));
    let cores = |cpu_ns: u64| cpu_ns as f64 / wall.as_nanos() as f64;
    let mut report = json!({
        "producers": plan.producers,
        "items": tally.items,
        "seconds": seconds(consumed),
        "items_per_sec": per_second(tally.items, consumed),
        "process_cpu_cores": round3(cores(cpu)),
        "ring_cpu_cores": round3(cores(cpu.saturating_sub(gateway.cpu_ns))),
        "checksum": tally.checksum,
    });
    if let Load::Paced { rate, .. } = plan.load {
        let latency = &tally.latency_ns;
        report["offered_items_per_sec"] = json!(rate);
        report["latency_ns"] = json!({
            "p50": latency.value_at_quantile(0.50),
            "p99": latency.value_at_quantile(0.99),
            "p999": latency.value_at_quantile(0.999),
            "max": latency.max(),
        });
    }
    if plan.gateway_threads > 0 {
        let units_per_sec = per_second(gateway.units, gateway.wall);
        report["gateway_units_per_sec"] = json!(units_per_sec);
        report["gateway_share_of_baseline"] =
            json!(round3(units_per_sec as f64 / setup.gateway_baseline_units_per_sec as f64));
        report["gateway_cpu_cores"] = json!(round3(cores(gateway.cpu_ns)));
    }
    Ok(report)
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Builds `ring` for `plan`, starts its consumer and runs the phase.
fn run_phase(ring: Ring, plan: PhasePlan, setup: Setup) -> anyhow::Result<Value> {
    let epoch = Instant::now();
    let (done, done_out) = bounded(1);
    let mut consumer = Consumer::new(epoch, setup.work_iterations, plan.producers, done);
    match ring {
        Ring::Crossbeam => {
            let (sender, receiver) = bounded::<Item>(setup.capacity);
            let consumer_thread = thread::Builder::new()
                .name("ring-consumer".to_owned())
                .spawn(move || consume_channel(&receiver, &mut consumer))
                .context("spawning the consumer")?;
            let publishers = (0..plan.producers).map(|_| sender.clone()).collect();
            drop(sender);
            let report = drive(publishers, epoch, plan, setup, &done_out);
            consumer_thread.join().map_err(|_| anyhow::anyhow!("the consumer panicked"))?;
            report
        }
        Ring::DisruptorBusySpin => run_disruptor(BusySpin, consumer, epoch, plan, setup, &done_out),
        Ring::DisruptorSpinLoopHint => {
            run_disruptor(BusySpinWithSpinLoopHint, consumer, epoch, plan, setup, &done_out)
        }
        Ring::DisruptorSpinYieldSleep => {
            run_disruptor(SpinYieldSleep, consumer, epoch, plan, setup, &done_out)
        }
    }
}

/// Surge's consumer loop on a channel: block for one item, then take what else is queued, up to a
/// batch, without blocking.
fn consume_channel(receiver: &Receiver<Item>, consumer: &mut Consumer) {
    const BATCH_MAX: usize = 4_096;
    while let Ok(first) = receiver.recv() {
        if consumer.take(&first) {
            return;
        }
        for _ in 1..BATCH_MAX {
            let Ok(item) = receiver.try_recv() else { break };
            if consumer.take(&item) {
                return;
            }
        }
    }
}

/// The disruptor runs the consumer on a thread of its own, stopped and joined when the last
/// producer handle is dropped (at the end of each producer thread).
fn run_disruptor<W: WaitStrategy + 'static>(
    wait: W,
    mut consumer: Consumer,
    epoch: Instant,
    plan: PhasePlan,
    setup: Setup,
    done: &Receiver<ConsumerTally>,
) -> anyhow::Result<Value> {
    let handler = move |item: &Item, _sequence: Sequence, _end_of_batch: bool| {
        consumer.take(item);
    };
    if plan.producers == 1 {
        let producer = build_single_producer(setup.capacity, Item::default, wait)
            .thread_name("ring-consumer")
            .handle_events_with(handler)
            .build();
        drive(vec![DisruptorPublisher(producer)], epoch, plan, setup, done)
    } else {
        let producer = build_multi_producer(setup.capacity, Item::default, wait)
            .thread_name("ring-consumer")
            .handle_events_with(handler)
            .build();
        let publishers =
            (0..plan.producers).map(|_| DisruptorPublisher(producer.clone())).collect();
        drop(producer);
        drive(publishers, epoch, plan, setup, done)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.capacity.is_power_of_two(), "--capacity must be a power of two");
    ensure!(args.rate > 0 && args.idle_rate > 0 && args.items > 0, "counts must be positive");
    let rings: Vec<Ring> = if args.rings.is_empty() {
        Ring::ALL.to_vec()
    } else {
        args.rings
            .iter()
            .map(|name| {
                Ring::ALL
                    .into_iter()
                    .find(|ring| ring.name() == name)
                    .with_context(|| format!("unknown ring {name}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let paced = Duration::from_secs_f64(args.paced_seconds);
    let idle = Duration::from_secs_f64(args.idle_seconds);

    let (work_iterations, ns_per_iteration) = calibrate(args.work_ns);
    // A gateway unit is about 10 µs of work: long next to the atomic stop check, short next to a
    // scheduler tick.
    let (gateway_unit_iterations, _) = calibrate(10_000);
    eprintln!(
        "ring bench: work {work_iterations} iterations (~{} ns) per item, gateway unit \
         {gateway_unit_iterations} iterations",
        args.work_ns
    );

    let mut setup = Setup {
        capacity: args.capacity,
        work_iterations,
        gateway_unit_iterations,
        gateway_baseline_units_per_sec: 0,
    };
    let load_average_at_start = load_average();

    let phases = [
        (
            "throughput_1p",
            PhasePlan {
                producers: 1,
                load: Load::Saturate { items: args.items },
                gateway_threads: 0,
            },
        ),
        (
            "throughput_2p",
            PhasePlan {
                producers: 2,
                load: Load::Saturate { items: args.items },
                gateway_threads: 0,
            },
        ),
        (
            "paced",
            PhasePlan {
                producers: 2,
                load: Load::Paced { rate: args.rate, duration: paced },
                gateway_threads: args.gateway_threads,
            },
        ),
        (
            "paced_alone",
            PhasePlan {
                producers: 2,
                load: Load::Paced { rate: args.rate, duration: paced },
                gateway_threads: 0,
            },
        ),
        (
            "idle",
            PhasePlan {
                producers: 2,
                load: Load::Paced { rate: args.idle_rate, duration: idle },
                gateway_threads: args.gateway_threads,
            },
        ),
        (
            "idle_alone",
            PhasePlan {
                producers: 2,
                load: Load::Paced { rate: args.idle_rate, duration: idle },
                gateway_threads: 0,
            },
        ),
    ];
    let mut results = serde_json::Map::new();
    for ring in rings {
        let mut ring_results = serde_json::Map::new();
        let baseline = gateway_alone(args.gateway_threads, gateway_unit_iterations, idle)?;
        setup.gateway_baseline_units_per_sec =
            baseline["gateway_units_per_sec"].as_u64().unwrap_or(0).max(1);
        eprintln!("  {} gateway_alone: {baseline}", ring.name());
        ring_results.insert("gateway_alone".to_owned(), baseline);
        for (name, plan) in phases {
            let report =
                run_phase(ring, plan, setup).with_context(|| format!("{} {name}", ring.name()))?;
            eprintln!("  {} {name}: {report}", ring.name());
            ring_results.insert(name.to_owned(), report);
        }
        results.insert(ring.name().to_owned(), Value::Object(ring_results));
    }

    let report = json!({
        "bench": "ring",
        "measured": "throughput_*p: items (1 or 2 producers) / time from the phase start to the consumer taking the last item, producers publishing flat out, no gateway; paced/paced_alone/idle/idle_alone: 2 producers on a fixed schedule, *_alone without the gateway threads, latency_ns = consumer clock when taking the item minus producer stamp at publish (HdrHistogram), gateway_units_per_sec = units of fixed CPU work done by gateway_threads meanwhile, gateway_share_of_baseline = that / the same ring's gateway_alone (the gateway threads alone just before that ring's phases); process_cpu_cores = /proc/self/stat CPU time / wall, ring_cpu_cores = that minus the gateway threads' own (schedstat)",
        "cores": thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "capacity": args.capacity,
        "work_ns": args.work_ns,
        "work_iterations": work_iterations,
        "work_ns_measured": round3(f64::from(work_iterations) * ns_per_iteration),
        "gateway_threads": args.gateway_threads,
        "gateway_unit_iterations": gateway_unit_iterations,
        "load_average_1m": { "start": load_average_at_start, "end": load_average() },
        "disruptor_version": "3.7.1",
        "rings": Value::Object(results),
    });
    println!("{report}");
    Ok(())
}
