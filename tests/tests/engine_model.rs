//! Property tests of the engine against the naive reference model in `surge_tests::model`.
//!
//! Random command sequences run through both; every outcome must be equal, the engine's own
//! invariants must hold after every command, and its observable state must equal the model's.
//! The limits are tiny and there are few SKUs, warehouses and buyers, so that commands contend for
//! the same units and every named capacity is reached now and then. Orders named by later commands
//! are mostly ones that were really reserved (often still live), so deep order histories happen.
//!
//! On failure proptest shrinks the sequence and prints it, and stores the seed in
//! `engine_model.regressions` beside this file, so the next run tries it first.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::{subsequence, Index};
use proptest::strategy::ValueTree;
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm, TestRng, TestRunner};
use surge_engine::codec::{decode_command, encode_command};
use surge_engine::{
    BuyerId, Capacity, CartVersion, Command, DiscardEvents, Engine, Expiry, Limits, LineRequest,
    LineRequests, Lines, OrderId, OrderState, Outcome, Rejection, ReleaseReason, Sequence, SkuId,
    Timestamp, WarehouseChoices, WarehouseId,
};
use surge_tests::model::Model;

const LIMITS: Limits = Limits {
    skus_max: 6,
    warehouses_max: 3,
    stock_cells_max: 12,
    orders_max: 12,
    buyer_counters_max: 4,
};
const BUYERS: u64 = 6;
const COMMANDS_MAX: usize = 300;

/// Which order an order command names; resolved against the run so far when the command is built.
#[derive(Clone, Debug)]
enum Pick {
    /// One of the orders the model holds live right now.
    Live(Index),
    /// Any order reserved earlier, live or long gone.
    Reserved(Index),
    /// Any id at all: mostly never reserved.
    Any(u64),
}

/// A reservation's deadline as the step describes it.
#[derive(Clone, Copy, Debug)]
enum Deadline {
    /// `Expiry::At` this many nanoseconds after the command's stamp, as a sender whose clock
    /// agrees with the sequencer's computes it.
    At { lifetime: u64 },
    /// `Expiry::After`, for the engine to add to the stamp.
    After { ttl_ns: u64 },
}

#[derive(Clone, Debug)]
enum Step {
    SetStock {
        sku: u32,
        warehouse: u16,
        on_hand: u32,
    },
    SetBuyerLimit {
        sku: u32,
        per_buyer: Option<u32>,
    },
    Reserve {
        buyer: u64,
        expiry: Deadline,
        cart: Option<u64>,
        lines: Vec<(u32, u32)>,
        warehouses: Vec<u16>,
    },
    Commit(Pick),
    Release(Pick, ReleaseReason),
    Expire,
    Cancel(Pick),
    Ship(Pick),
    Deliver(Pick),
}

#[derive(Clone, Debug)]
struct Op {
    /// Nanoseconds between the previous command and this one.
    elapsed: u64,
    /// Snapshot the engine and continue on the restored copy before this command.
    restart: bool,
    step: Step,
}

fn sku() -> impl Strategy<Value = u32> {
    prop_oneof![30 => 0..LIMITS.skus_max, 1 => Just(LIMITS.skus_max), 1 => any::<u32>()]
}

fn warehouse() -> impl Strategy<Value = u16> {
    prop_oneof![30 => 0..LIMITS.warehouses_max, 1 => Just(LIMITS.warehouses_max)]
}

fn quantity() -> impl Strategy<Value = u32> {
    prop_oneof![40 => 1..5u32, 1 => Just(0), 3 => 5..40u32, 1 => any::<u32>()]
}

fn on_hand() -> impl Strategy<Value = u32> {
    prop_oneof![20 => 0..60u32, 1 => (u32::MAX - 8)..=u32::MAX]
}

fn lines() -> impl Strategy<Value = Vec<(u32, u32)>> {
    let skus: Vec<u32> = (0..LIMITS.skus_max).collect();
    let distinct = (subsequence(skus, 1..=3).prop_shuffle(), prop::collection::vec(quantity(), 4))
        .prop_map(|(skus, quantities)| skus.into_iter().zip(quantities).collect());
    let anything = prop::collection::vec((sku(), quantity()), 0..=4);
    prop_oneof![20 => distinct, 1 => anything]
}

fn warehouses() -> impl Strategy<Value = Vec<u16>> {
    let all: Vec<u16> = (0..LIMITS.warehouses_max).collect();
    let distinct = subsequence(all, 1..=usize::from(LIMITS.warehouses_max)).prop_shuffle();
    let anything = prop::collection::vec(warehouse(), 0..=4);
    prop_oneof![15 => distinct, 1 => anything]
}

fn per_buyer() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![4 => Just(None), 5 => (0..12u32).prop_map(Some), 1 => Just(Some(u32::MAX))]
}

/// From reservation to deadline. Zero is invalid; long ones let live orders pile up to the limit.
fn lifetime() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0), 16 => 1..150u64, 8 => 150..5_000u64]
}

/// Either kind; a time to live near `u64::MAX` overflows when added to the stamp.
fn deadline() -> impl Strategy<Value = Deadline> {
    prop_oneof![
        10 => lifetime().prop_map(|lifetime| Deadline::At { lifetime }),
        10 => lifetime().prop_map(|ttl_ns| Deadline::After { ttl_ns }),
        1 => (u64::MAX - 4..=u64::MAX).prop_map(|ttl_ns| Deadline::After { ttl_ns }),
    ]
}

/// Buy now, or a checkout of one of a few cart versions: with six buyers, the same version comes
/// again (a duplicate), an older one after a newer, and a newer one while an older is live.
fn cart() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![2 => Just(None), 3 => (0..4u64).prop_map(Some)]
}

fn reserve() -> impl Strategy<Value = Step> {
    (0..BUYERS, deadline(), cart(), lines(), warehouses()).prop_map(
        |(buyer, expiry, cart, lines, warehouses)| Step::Reserve {
            buyer,
            expiry,
            cart,
            lines,
            warehouses,
        },
    )
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        10 => any::<Index>().prop_map(Pick::Live),
        2 => any::<Index>().prop_map(Pick::Reserved),
        1 => (0..2 * COMMANDS_MAX as u64).prop_map(Pick::Any),
    ]
}

fn reason() -> impl Strategy<Value = ReleaseReason> {
    prop_oneof![Just(ReleaseReason::PaymentFailed), Just(ReleaseReason::Cancelled)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (sku(), warehouse(), on_hand())
            .prop_map(|(sku, warehouse, on_hand)| Step::SetStock { sku, warehouse, on_hand }),
        1 => (sku(), per_buyer())
            .prop_map(|(sku, per_buyer)| Step::SetBuyerLimit { sku, per_buyer }),
        14 => reserve(),
        4 => pick().prop_map(Step::Commit),
        1 => (pick(), reason()).prop_map(|(pick, reason)| Step::Release(pick, reason)),
        1 => Just(Step::Expire),
        1 => pick().prop_map(Step::Cancel),
        2 => pick().prop_map(Step::Ship),
        2 => pick().prop_map(Step::Deliver),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let elapsed = prop_oneof![4 => Just(0), 6 => 1..20u64, 1 => 50..300u64, 1 => 1_000..3_000u64];
    (elapsed, prop::bool::weighted(0.03), step()).prop_map(|(elapsed, restart, step)| Op {
        elapsed,
        restart,
        step,
    })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=COMMANDS_MAX)
}

/// One run of the engine beside the model, recording what a journal would.
struct Run {
    engine: Engine,
    model: Model,
    sequence: u64,
    now: u64,
    /// Orders the model reserved, oldest first.
    reserved: Vec<OrderId>,
    reserved_lines: BTreeMap<OrderId, Lines>,
    /// Units sold per cell, counted from outcomes alone: confirmed orders minus cancelled ones.
    sold: BTreeMap<(SkuId, WarehouseId), u64>,
    log: Vec<(Sequence, Timestamp, Command)>,
    outcomes: Vec<Outcome>,
    /// Snapshots taken at restarts, with the length of the log at the time.
    snapshots: Vec<(usize, Vec<u8>)>,
}

impl Run {
    fn new() -> Self {
        Self {
            engine: Engine::new(LIMITS),
            model: Model::new(LIMITS),
            sequence: 0,
            now: 1_000,
            reserved: Vec::new(),
            reserved_lines: BTreeMap::new(),
            sold: BTreeMap::new(),
            log: Vec::new(),
            outcomes: Vec::new(),
            snapshots: Vec::new(),
        }
    }

    fn order(&self, pick: &Pick) -> OrderId {
        let live = self.model.live_order_ids();
        match pick {
            Pick::Live(index) if !live.is_empty() => live[index.index(live.len())],
            Pick::Live(index) | Pick::Reserved(index) if !self.reserved.is_empty() => {
                self.reserved[index.index(self.reserved.len())]
            }
            Pick::Live(_) | Pick::Reserved(_) => OrderId(0),
            Pick::Any(id) => OrderId(*id),
        }
    }

    fn command(&self, step: &Step) -> Command {
        match step {
            &Step::SetStock { sku, warehouse, on_hand } => {
                Command::SetStock { sku: SkuId(sku), warehouse: WarehouseId(warehouse), on_hand }
            }
            &Step::SetBuyerLimit { sku, per_buyer } => {
                Command::SetBuyerLimit { sku: SkuId(sku), per_buyer }
            }
            Step::Reserve { buyer, expiry, cart, lines, warehouses } => {
                let lines: Vec<LineRequest> = lines
                    .iter()
                    .map(|&(sku, quantity)| LineRequest { sku: SkuId(sku), quantity })
                    .collect();
                let warehouses: Vec<WarehouseId> =
                    warehouses.iter().copied().map(WarehouseId).collect();
                Command::Reserve {
                    buyer: BuyerId(*buyer),
                    expiry: match *expiry {
                        Deadline::At { lifetime } => Expiry::At(Timestamp(self.now + lifetime)),
                        Deadline::After { ttl_ns } => Expiry::After { ttl_ns },
                    },
                    cart: cart.map(CartVersion),
                    lines: LineRequests::from_slice(&lines).expect("at most 4 lines"),
                    warehouses: WarehouseChoices::from_slice(&warehouses).expect("at most 4"),
                }
            }
            Step::Commit(pick) => Command::Commit { order: self.order(pick) },
            &Step::Release(ref pick, reason) => {
                Command::Release { order: self.order(pick), reason }
            }
            Step::Expire => Command::Expire,
            Step::Cancel(pick) => Command::Cancel { order: self.order(pick) },
            Step::Ship(pick) => Command::Ship { order: self.order(pick) },
            Step::Deliver(pick) => Command::Deliver { order: self.order(pick) },
        }
    }

    fn step(&mut self, op: &Op, restarts: bool) {
        if restarts && op.restart {
            self.restart();
        }
        self.now += op.elapsed;
        self.sequence += 1;
        let sequence = Sequence(self.sequence);
        let at = Timestamp(self.now);
        let command = self.command(&op.step);
        let expected = self.model.apply(sequence, at, &command);
        let actual = self.engine.apply(sequence, at, &command, &mut DiscardEvents);
        assert_eq!(actual, expected, "engine and model differ on {command:?} at {sequence:?}");
        self.engine.check_invariants();
        self.model.check_against(&self.engine);
        self.account(&command, expected);
        self.log.push((sequence, at, command));
        self.outcomes.push(expected);
    }

    /// Keeps the independent ledger of sold units, and checks the engine's cells against it.
    fn account(&mut self, command: &Command, outcome: Outcome) {
        match (command, outcome) {
            (Command::Reserve { .. }, Outcome::Reserved { order, lines, .. }) => {
                self.reserved.push(order);
                self.reserved_lines.insert(order, lines);
            }
            (
                Command::Commit { order } | Command::Cancel { order },
                Outcome::Transitioned { state, .. },
            ) => {
                for line in self.reserved_lines[order].as_slice() {
                    let sold = self.sold.entry((line.sku, line.warehouse)).or_insert(0);
                    match state {
                        OrderState::Confirmed => *sold += u64::from(line.quantity),
                        OrderState::Cancelled => *sold -= u64::from(line.quantity),
                        other => panic!("{command:?} gave {other:?}"),
                    }
                }
            }
            _ => {}
        }
        for ((sku, warehouse), level) in self.model.cells() {
            let engine = self.engine.stock(sku, warehouse).expect("the model's cells exist");
            let sold = self.sold.get(&(sku, warehouse)).copied().unwrap_or(0);
            assert_eq!(engine.sold, sold, "units sold from {sku:?} in {warehouse:?}");
            assert_eq!(engine.available(), level.available());
            assert_eq!(engine.available() + engine.reserved, engine.on_hand);
        }
    }

    /// Continues on an engine rebuilt from a snapshot of this one, as a restarted node would.
    fn restart(&mut self) {
        let mut bytes = Vec::new();
        self.engine.encode_snapshot(&mut bytes);
        let restored = Engine::decode_snapshot(LIMITS, &bytes).expect("own snapshot decodes");
        restored.check_invariants();
        assert_eq!(restored.digest(), self.engine.digest(), "digest changed by a restart");
        assert_eq!(restored.last_sequence(), self.engine.last_sequence());
        assert_eq!(restored.last_at(), self.engine.last_at());
        let mut again = Vec::new();
        restored.encode_snapshot(&mut again);
        assert_eq!(again, bytes, "a restored engine writes a different snapshot");
        self.model.check_against(&restored);
        self.engine = restored;
        self.snapshots.push((self.log.len(), bytes));
    }

    fn of(ops: &[Op], restarts: bool) -> Self {
        let mut run = Self::new();
        for op in ops {
            run.step(op, restarts);
        }
        run.model.check_against(&run.engine);
        run
    }
}

/// Applies `log` to `engine` and returns the outcomes.
fn replay(engine: &mut Engine, log: &[(Sequence, Timestamp, Command)]) -> Vec<Outcome> {
    log.iter()
        .map(|(sequence, at, command)| engine.apply(*sequence, *at, command, &mut DiscardEvents))
        .collect()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 4_096,
        // Beside this file: the default looks for a `lib.rs`, which an integration test has not.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn engine_matches_model(ops in ops()) {
        Run::of(&ops, false);
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn restarts_from_snapshots_change_nothing(ops in ops()) {
        let run = Run::of(&ops, true);
        // Recovery is a snapshot plus the journal after it: it must reach the same state.
        for (applied, bytes) in &run.snapshots {
            let mut engine = Engine::decode_snapshot(LIMITS, bytes).expect("snapshot decodes");
            let outcomes = replay(&mut engine, &run.log[*applied..]);
            prop_assert_eq!(&outcomes[..], &run.outcomes[*applied..]);
            prop_assert_eq!(engine.digest(), run.engine.digest());
        }
    }

    #[test]
    fn replaying_the_log_gives_the_same_outcomes_and_digest(ops in ops()) {
        let run = Run::of(&ops, false);

        let mut fresh = Engine::new(LIMITS);
        prop_assert_eq!(replay(&mut fresh, &run.log), run.outcomes.clone());
        prop_assert_eq!(fresh.digest(), run.engine.digest());

        // The journal path: every command through its byte encoding.
        let mut journaled = Vec::with_capacity(run.log.len());
        let mut payload = Vec::new();
        for &(sequence, at, command) in &run.log {
            payload.clear();
            encode_command(&command, &mut payload);
            let decoded = decode_command(&payload).expect("own encoding decodes");
            prop_assert_eq!(decoded, command);
            journaled.push((sequence, at, decoded));
        }
        let mut from_journal = Engine::new(LIMITS);
        prop_assert_eq!(replay(&mut from_journal, &journaled), run.outcomes.clone());
        prop_assert_eq!(from_journal.digest(), run.engine.digest());
    }
}

/// A name for each kind of outcome, fine enough to tell the rejections and capacities apart.
fn kind(command: &Command, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Rejected(Rejection::Invalid) if matches!(command, Command::Cancel { .. }) => {
            "Invalid(Cancel)".into()
        }
        Outcome::StockSet(_) => "StockSet".into(),
        Outcome::BuyerLimitSet => "BuyerLimitSet".into(),
        Outcome::Reserved { .. } if matches!(command, Command::Reserve { cart: Some(_), .. }) => {
            "Reserved(cart)".into()
        }
        Outcome::Reserved { .. } => "Reserved".into(),
        Outcome::Transitioned { state, .. } => format!("Transitioned({state:?})"),
        Outcome::ExpiredOrders { count: 0 } => "ExpiredOrders(0)".into(),
        Outcome::ExpiredOrders { .. } => "ExpiredOrders(>0)".into(),
        Outcome::Rejected(Rejection::CapacityReached { capacity }) => {
            format!("CapacityReached({capacity:?})")
        }
        Outcome::Rejected(Rejection::WrongState { .. }) => "WrongState".into(),
        Outcome::Rejected(Rejection::AlreadyResolved { .. }) => "AlreadyResolved".into(),
        Outcome::Rejected(Rejection::OutOfStock { elsewhere, .. }) if elsewhere.is_empty() => {
            "OutOfStock".into()
        }
        Outcome::Rejected(Rejection::OutOfStock { .. }) => "OutOfStock(elsewhere)".into(),
        Outcome::Rejected(Rejection::PurchaseLimitExceeded { .. }) => {
            "PurchaseLimitExceeded".into()
        }
        Outcome::Rejected(Rejection::BelowReserved { .. }) => "BelowReserved".into(),
        Outcome::Rejected(rejection) => format!("{rejection:?}"),
    }
}

/// The properties above are only as good as the sequences they see: this checks, on a fixed seed,
/// that the generator reaches every outcome, every rejection and every named capacity the
/// engine can produce from these commands. Run with `--nocapture` to see the tally.
#[test]
fn generated_sequences_reach_every_outcome() {
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = ops();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..64 {
        let ops = strategy.new_tree(&mut runner).expect("generates").current();
        let run = Run::of(&ops, true);
        for ((_, _, command), outcome) in run.log.iter().zip(&run.outcomes) {
            *tally.entry(kind(command, outcome)).or_insert(0) += 1;
        }
    }
    println!("{tally:#?}");
    let mut expected = vec![
        "StockSet",
        "BuyerLimitSet",
        "Reserved",
        "Reserved(cart)",
        "ExpiredOrders(0)",
        "ExpiredOrders(>0)",
        "WrongState",
        "AlreadyResolved",
        "OutOfStock",
        "OutOfStock(elsewhere)",
        "PurchaseLimitExceeded",
        "BelowReserved",
        "UnknownOrder",
        "Expired",
        "Invalid",
        "CartAlreadyCheckedOut",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for state in [
        OrderState::Confirmed,
        OrderState::Shipped,
        OrderState::Delivered,
        OrderState::PaymentFailed,
        OrderState::Cancelled,
    ] {
        expected.push(format!("Transitioned({state:?})"));
    }
    for capacity in [Capacity::StockCells, Capacity::Orders, Capacity::BuyerCounters] {
        expected.push(format!("CapacityReached({capacity:?})"));
    }
    for kind in expected {
        assert!(tally.contains_key(&kind), "no {kind} in 64 generated sequences");
    }
}

/// Runs `steps` through the engine and the model, one command per nanosecond, and returns the
/// outcomes.
fn run_steps(steps: Vec<Step>) -> (Run, Vec<Outcome>) {
    let mut run = Run::new();
    for step in steps {
        run.step(&Op { elapsed: 1, restart: false, step }, false);
    }
    let outcomes = run.outcomes.clone();
    (run, outcomes)
}

/// Found by the properties above: the engine stored "no limit" as `u32::MAX`, so a limit of
/// `u32::MAX` was answered `BuyerLimitSet` and then behaved as no limit at all.
#[test]
fn a_buyer_limit_equal_to_the_no_limit_marker_is_refused() {
    let (run, outcomes) = run_steps(vec![
        Step::SetBuyerLimit { sku: 1, per_buyer: Some(3) },
        Step::SetBuyerLimit { sku: 1, per_buyer: Some(u32::MAX) },
    ]);
    assert_eq!(outcomes[1], Outcome::Rejected(Rejection::Invalid));
    assert_eq!(run.engine.buyer_limit(SkuId(1)), Some(3), "a refused command changes nothing");
}

/// Found by the properties above: cancelling a sale after a stock count had set `on_hand` near
/// `u32::MAX` overflowed `on_hand` and stopped the engine on an assertion.
#[test]
fn a_cancel_whose_units_no_longer_fit_on_hand_is_refused_and_changes_nothing() {
    let on_shelf = |on_hand| Step::SetStock { sku: 2, warehouse: 0, on_hand };
    let (mut run, outcomes) = run_steps(vec![
        on_shelf(5),
        Step::Reserve {
            buyer: 1,
            expiry: Deadline::After { ttl_ns: 100 },
            cart: None,
            lines: vec![(2, 4)],
            warehouses: vec![0],
        },
        Step::Commit(Pick::Any(2)),
        on_shelf(u32::MAX - 1),
        Step::Cancel(Pick::Any(2)),
    ]);
    assert_eq!(outcomes[4], Outcome::Rejected(Rejection::Invalid));
    assert_eq!(run.model.order_state(OrderId(2)), Some(OrderState::Confirmed));
    let step = Step::Cancel(Pick::Any(2));
    run.step(&Op { elapsed: 1, restart: false, step: on_shelf(10) }, false);
    run.step(&Op { elapsed: 1, restart: false, step }, false);
    assert_eq!(
        run.outcomes.last(),
        Some(&Outcome::Transitioned { order: OrderId(2), state: OrderState::Cancelled })
    );
    let level = run.engine.stock(SkuId(2), WarehouseId(0)).expect("cell");
    assert_eq!((level.on_hand, level.reserved, level.sold), (14, 0, 0));
}
