//! What the three benchmark binaries share: a tiny deterministic random source, the synthetic
//! command stream the state-machine and replay benchmarks feed the engine, latency summaries, and a
//! reading of the process's resident memory.
//!
//! The binaries are in `src/bin/`: `engine` (the state machine alone), `pipeline` (the durable path
//! with producers and group commit) and `replay` (recovery speed, restart with a snapshot, memory).
//! Each prints one JSON line on stdout and its progress on stderr; `BENCHMARKS.md` at the root keeps
//! the figures beside the command that made them.

use std::collections::VecDeque;

use hdrhistogram::Histogram;
use surge_engine::{
    BuyerId, Command, Expiry, LineRequest, LineRequests, OrderId, ReleaseReason, SkuId, Timestamp,
    WarehouseChoices, WarehouseId,
};

/// The journal's splitmix64 with the draws the benchmarks use. Quality is ample for choosing SKUs
/// and fates; nothing here needs cryptographic randomness.
#[derive(Clone, Debug)]
pub struct SplitMix64(surge_journal::SplitMix64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(surge_journal::SplitMix64::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A draw in `0..bound` (Lemire's multiply-shift; the bias is below 2^-32 for our bounds).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "an empty range has no element to draw");
        let wide = u128::from(self.next_u64()) * u128::from(bound);
        u64::try_from(wide >> 64).expect("the high half of a u128 product fits u64")
    }

    /// A draw in `0..bound` for 32-bit bounds.
    pub fn below_u32(&mut self, bound: u32) -> u32 {
        u32::try_from(self.below(u64::from(bound))).expect("a draw below a u32 bound fits u32")
    }

    /// `true` with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The single warehouse every synthetic SKU is stocked in. One warehouse keeps the stream about the
/// engine's order bookkeeping rather than warehouse choice.
pub const WAREHOUSE: WarehouseId = WarehouseId(0);

/// Simulated time between two commands of the synthetic stream: a command every microsecond.
pub const COMMAND_INTERVAL_NS: u64 = 1_000;

/// Deadline of a reservation that will be paid or released: far beyond any run.
pub const RESERVATION_TTL_NS: u64 = 15 * 60 * 1_000_000_000;

/// Deadline of a reservation the buyer abandons: about a thousand commands later, so `Expire`
/// retires it during the run.
pub const ABANDONED_TTL_NS: u64 = 1_000_000;

/// Commands between the step of an order and its next step (reserve → commit → ship → deliver).
const FOLLOW_UP_DELAY: u64 = 2_048;

/// An `Expire` every this many commands, as the sequencer's tick would send.
const EXPIRE_EVERY: u64 = 1_024;

/// Shape of the synthetic stream.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadConfig {
    /// SKUs `0..skus`, each stocked once, before any other command.
    pub skus: u32,
    /// Every reservation is one line of SKU 0: the worst case of one contended product.
    pub hot: bool,
    pub seed: u64,
}

impl WorkloadConfig {
    /// Units set on hand per SKU: enough that reservations practically never run out. The hot SKU
    /// gets nearly all a `u32` holds, since every reservation of the run draws on it.
    pub fn on_hand(&self, sku: SkuId) -> u32 {
        if self.hot && sku.0 == 0 {
            4_000_000_000
        } else {
            1_000_000
        }
    }
}

/// How many commands of each kind a stream held.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mix {
    pub set_stock: u64,
    pub reserve: u64,
    pub commit: u64,
    pub release: u64,
    pub ship: u64,
    pub deliver: u64,
    pub expire: u64,
}

impl Mix {
    pub fn count(&mut self, command: &Command) {
        match command {
            Command::SetStock { .. } => self.set_stock += 1,
            Command::Reserve { .. } => self.reserve += 1,
            Command::Commit { .. } => self.commit += 1,
            Command::Release { .. } => self.release += 1,
            Command::Ship { .. } => self.ship += 1,
            Command::Deliver { .. } => self.deliver += 1,
            Command::Expire => self.expire += 1,
            Command::SetBuyerLimit { .. } | Command::Cancel { .. } => {}
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "set_stock": self.set_stock,
            "reserve": self.reserve,
            "commit": self.commit,
            "release": self.release,
            "ship": self.ship,
            "deliver": self.deliver,
            "expire": self.expire,
        })
    }
}

/// The next step of an order, due at a position of the stream.
#[derive(Clone, Copy, Debug)]
struct FollowUp {
    due: u64,
    command: Command,
}

/// A deterministic command stream, numbered as the sequencer would number it from an empty journal:
/// the `n`-th command (from 1) gets sequence `n` and timestamp `n` microseconds. First one `SetStock`
/// per SKU, then a steady mix:
///
/// - `Reserve` of 1–3 distinct SKUs (uniform over all SKUs, or one line of SKU 0 when hot), 1–3
///   units each. Each order's fate is drawn at once: 70 % are paid (`Commit`, then `Ship`, then
///   `Deliver`, each step [`FOLLOW_UP_DELAY`] commands after the last), 20 % are released, 10 % are
///   abandoned with a short deadline and retired by `Expire`.
/// - `Expire` every [`EXPIRE_EVERY`] commands.
///
/// Confirmed orders stay live in the engine until delivered, so without `Ship` and `Deliver` a long
/// run would only grow the live set; the full lifecycle keeps it at a few thousand orders. The
/// steady mix comes out near 30 % reserve, 21 % each of commit, ship and deliver, 6 % release.
#[derive(Debug)]
pub struct Workload {
    config: WorkloadConfig,
    rng: SplitMix64,
    /// Position of the next command, from 1: its sequence.
    next: u64,
    /// Every follow-up is due the same delay after the step that scheduled it, so this queue is in
    /// due order without sorting.
    follow_ups: VecDeque<FollowUp>,
    mix: Mix,
}

impl Workload {
    pub fn new(config: WorkloadConfig) -> Self {
        assert!(config.skus > 0, "a workload needs at least one SKU");
        Self {
            config,
            rng: SplitMix64::new(config.seed),
            next: 1,
            follow_ups: VecDeque::with_capacity(1 << 16),
            mix: Mix::default(),
        }
    }

    /// Commands `1..=prefill_len()` are the `SetStock` of every SKU.
    pub fn prefill_len(&self) -> u64 {
        u64::from(self.config.skus)
    }

    /// The sequence the next command will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    pub fn mix(&self) -> Mix {
        self.mix
    }

    /// The timestamp of the command at `sequence`.
    pub fn at(sequence: u64) -> Timestamp {
        Timestamp(sequence * COMMAND_INTERVAL_NS)
    }

    /// The next command and its timestamp.
    pub fn next_command(&mut self) -> (Timestamp, Command) {
        let position = self.next;
        self.next += 1;
        let at = Self::at(position);
        let command = if position <= self.prefill_len() {
            let sku = SkuId(u32::try_from(position - 1).expect("prefill position is a SKU id"));
            Command::SetStock { sku, warehouse: WAREHOUSE, on_hand: self.config.on_hand(sku) }
        } else if position % EXPIRE_EVERY == 0 {
            Command::Expire
        } else if self.follow_ups.front().is_some_and(|follow_up| follow_up.due <= position) {
            let follow_up = self.follow_ups.pop_front().expect("front was just seen");
            self.schedule_next_step(position, &follow_up.command);
            follow_up.command
        } else {
            self.reserve(position)
        };
        self.mix.count(&command);
        (at, command)
    }

    /// Fills `out` with the next `count` commands (it is cleared first).
    pub fn fill(&mut self, out: &mut Vec<(Timestamp, Command)>, count: usize) {
        out.clear();
        out.extend((0..count).map(|_| self.next_command()));
    }

    fn reserve(&mut self, position: u64) -> Command {
        let order = OrderId(position);
        let fate = self.rng.below(100);
        let ttl = if fate < 70 {
            self.follow_up(position, Command::Commit { order });
            RESERVATION_TTL_NS
        } else if fate < 90 {
            let reason = if self.rng.percent(50) {
                ReleaseReason::PaymentFailed
            } else {
                ReleaseReason::Cancelled
            };
            self.follow_up(position, Command::Release { order, reason });
            RESERVATION_TTL_NS
        } else {
            ABANDONED_TTL_NS
        };
        let lines = random_lines(&mut self.rng, self.config.skus, self.config.hot);
        Command::Reserve {
            buyer: BuyerId(self.rng.below(1_000_000)),
            expiry: Expiry::After { ttl_ns: ttl },
            cart: None,
            lines,
            warehouses: WarehouseChoices::from_slice(&[WAREHOUSE]).expect("one warehouse fits"),
        }
    }

    fn schedule_next_step(&mut self, position: u64, done: &Command) {
        match *done {
            Command::Commit { order } => self.follow_up(position, Command::Ship { order }),
            Command::Ship { order } => self.follow_up(position, Command::Deliver { order }),
            _ => {}
        }
    }

    fn follow_up(&mut self, position: u64, command: Command) {
        self.follow_ups.push_back(FollowUp { due: position + FOLLOW_UP_DELAY, command });
    }
}

/// 1–3 lines of distinct SKUs below `skus`, 1–3 units each; or one line of SKU 0 when `hot`.
pub fn random_lines(rng: &mut SplitMix64, skus: u32, hot: bool) -> LineRequests {
    let mut lines = LineRequests::default();
    if hot {
        let quantity = 1 + rng.below_u32(3);
        lines.push(LineRequest { sku: SkuId(0), quantity });
        return lines;
    }
    let count = (1 + rng.below_u32(3)).min(skus);
    while lines.len() < count as usize {
        let sku = SkuId(rng.below_u32(skus));
        if lines.as_slice().iter().all(|line| line.sku != sku) {
            lines.push(LineRequest { sku, quantity: 1 + rng.below_u32(3) });
        }
    }
    lines
}

/// A histogram for latencies from 1 to 60 s in whatever unit the caller records, 3 significant
/// digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

/// Records `value`, clamped into the histogram's range so that an outlier is counted, not lost.
pub fn record_clamped(histogram: &mut Histogram<u64>, value: u64) {
    let value = value.clamp(histogram.low(), histogram.high());
    histogram.record(value).expect("a clamped value is in range");
}

/// Resident memory of this process, from `/proc/self/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub resident_bytes: u64,
    /// `VmHWM`: the most ever resident.
    pub resident_peak_bytes: u64,
}

impl Memory {
    /// Reads the current figures; zeros where `/proc` is not available.
    pub fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .and_then(|kilobytes| kilobytes.trim().parse::<u64>().ok())
                .map_or(0, |kilobytes| kilobytes * 1024)
        };
        Self { resident_bytes: field("VmRSS:"), resident_peak_bytes: field("VmHWM:") }
    }
}

/// Seconds as a float, for JSON.
pub fn seconds(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64()
}

/// `count / seconds`, rounded to a whole rate.
pub fn per_second(count: u64, duration: std::time::Duration) -> u64 {
    let seconds = duration.as_secs_f64();
    if seconds <= 0.0 {
        return 0;
    }
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rate for a report: f64 precision and rounding are fine"
    )]
    let rate = (count as f64 / seconds).round() as u64;
    rate
}

/// Nanoseconds of a duration, saturating.
pub fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_is_deterministic_and_starts_with_stock() {
        let config = WorkloadConfig { skus: 10, hot: false, seed: 7 };
        let mut first = Workload::new(config);
        let mut second = Workload::new(config);
        for position in 1..=20_000u64 {
            let (at, command) = first.next_command();
            assert_eq!((at, command), second.next_command());
            assert_eq!(at, Workload::at(position));
            if position <= 10 {
                assert!(matches!(command, Command::SetStock { .. }));
            }
        }
        let mix = first.mix();
        assert_eq!(mix.set_stock, 10);
        assert!(mix.reserve > 0 && mix.commit > 0 && mix.release > 0 && mix.deliver > 0);
    }

    #[test]
    fn lines_are_distinct() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..10_000 {
            let lines = random_lines(&mut rng, 3, false);
            let skus: Vec<u32> = lines.as_slice().iter().map(|line| line.sku.0).collect();
            let mut unique = skus.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(skus.len(), unique.len());
            assert!(!skus.is_empty() && skus.len() <= 3);
        }
    }
}
