//! The projection's rules, one scenario each, on the memory store: outputs are made the way the
//! journal follower makes them, by applying commands to an engine of the test's own.

use surge_engine::{
    BuyerId, CartVersion, Command, Engine, Expiry, Limits, LineRequest, LineRequests, OrderId,
    ReleaseReason, Sequence, SkuId, Timestamp, WarehouseChoices, WarehouseId,
};
use surge_orders_svc::memory::MemoryStore;
use surge_orders_svc::{
    project, Answer, CheckoutRecord, OrderStatus, PaymentStatus, RecordLine, Shipping, Work,
};
use surge_pipeline::Output;

const SECOND: u64 = 1_000_000_000;

/// An engine, a store, and the work and skipped records the projection reported.
struct World {
    engine: Engine,
    store: MemoryStore,
    sequence: u64,
    now: u64,
    work: Vec<Work>,
    outputs: Vec<Output>,
}

fn name(warehouse: WarehouseId) -> String {
    format!("w{}", warehouse.0)
}

fn record(key: &str, skus: &[&str], total_cents: i64) -> CheckoutRecord {
    CheckoutRecord {
        idempotency_key: key.to_owned(),
        request_hash: [3; 16],
        currency: "EUR".to_owned(),
        total_cents,
        lines: skus
            .iter()
            .map(|sku| RecordLine { sku: (*sku).to_owned(), unit_price_cents: 100, seller_id: 9 })
            .collect(),
        shipping: Shipping {
            name: "Ann".to_owned(),
            line1: "Main St 1".to_owned(),
            city: "Berlin".to_owned(),
            postal_code: "10115".to_owned(),
        },
        payment_token: "tok_ok".to_owned(),
    }
}

fn reserve(buyer: u64, skus: &[u32], warehouses: &[u16], cart: Option<u64>) -> Command {
    let lines: Vec<LineRequest> =
        skus.iter().map(|&sku| LineRequest { sku: SkuId(sku), quantity: 1 }).collect();
    let warehouses: Vec<WarehouseId> = warehouses.iter().map(|&w| WarehouseId(w)).collect();
    Command::Reserve {
        buyer: BuyerId(buyer),
        expiry: Expiry::After { ttl_ns: 10 * SECOND },
        cart: cart.map(CartVersion),
        lines: LineRequests::from_slice(&lines).unwrap(),
        warehouses: WarehouseChoices::from_slice(&warehouses).unwrap(),
    }
}

impl World {
    fn new() -> World {
        World {
            engine: Engine::new(Limits::TEST),
            store: MemoryStore::default(),
            sequence: 0,
            now: 1_000 * SECOND,
            work: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Applies one command (with its attachment) as one output, projects it, and returns its
    /// sequence.
    fn run(&mut self, command: Command, attachment: Option<&CheckoutRecord>) -> Sequence {
        self.sequence += 1;
        self.now += SECOND;
        let mut output = Output::default();
        let bytes = attachment.map(CheckoutRecord::to_bytes);
        output.push(
            Sequence(self.sequence),
            Timestamp(self.now),
            command,
            bytes.as_deref(),
            &mut self.engine,
        );
        let mut skipped = Vec::new();
        project(&mut self.store, &output, &name, &mut self.work, &mut skipped).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        self.outputs.push(output);
        Sequence(self.sequence)
    }

    fn stock(&mut self, sku: u32, warehouse: u16, on_hand: u32) {
        self.run(
            Command::SetStock { sku: SkuId(sku), warehouse: WarehouseId(warehouse), on_hand },
            None,
        );
    }

    fn state(&self, order: Sequence) -> (OrderStatus, PaymentStatus) {
        let stored = &self.store.orders[&OrderId(order.0)];
        (stored.status, stored.payment)
    }

    fn answer(&self, sequence: Sequence) -> &Answer {
        &self.store.answers[&sequence].answer
    }

    fn take_work(&mut self) -> Vec<Work> {
        std::mem::take(&mut self.work)
    }
}

#[test]
fn a_placed_order_is_written_charged_and_confirmed() {
    let mut world = World::new();
    world.stock(1, 1, 5);
    let order = world.run(reserve(7, &[1], &[1], None), Some(&record("k", &["A"], 100)));
    assert_eq!(world.state(order), (OrderStatus::PendingPayment, PaymentStatus::Pending));
    assert_eq!(world.answer(order), &Answer::Placed { order: OrderId(order.0) });
    let stored = &world.store.orders[&OrderId(order.0)];
    assert_eq!(stored.order.placed.lines[0].warehouse, "w1");
    assert_eq!(stored.order.placed.buyer_id, 7);
    assert!(matches!(world.take_work()[..], [Work::Charge { amount_cents: 100, .. }]));
    world.run(Command::Commit { order: OrderId(order.0) }, None);
    assert_eq!(world.state(order), (OrderStatus::Confirmed, PaymentStatus::Captured));
    // A repeated success changes nothing and asks for nothing.
    world.run(Command::Commit { order: OrderId(order.0) }, None);
    assert_eq!(world.state(order), (OrderStatus::Confirmed, PaymentStatus::Captured));
    assert!(world.take_work().is_empty());
    let history: Vec<OrderStatus> = world.store.orders[&OrderId(order.0)]
        .history
        .iter()
        .map(|(_, status, _)| *status)
        .collect();
    assert_eq!(history, [OrderStatus::PendingPayment, OrderStatus::Confirmed]);
}

#[test]
fn refusals_are_kept_under_the_key_and_make_no_order() {
    let mut world = World::new();
    world.stock(1, 1, 1);
    world.stock(2, 2, 4);
    world.run(reserve(1, &[1], &[1], None), Some(&record("first", &["A"], 100)));
    let sold_out = world.run(reserve(2, &[1], &[1], None), Some(&record("late", &["A"], 100)));
    assert_eq!(world.answer(sold_out), &Answer::OutOfStock { skus: vec!["A".to_owned()] });
    // B has units, but only in warehouse 2, which does not serve this buyer.
    let elsewhere = world.run(reserve(3, &[2], &[1], None), Some(&record("far", &["B"], 100)));
    assert_eq!(world.answer(elsewhere), &Answer::NotDeliverable { skus: vec!["B".to_owned()] });
    assert_eq!(world.store.orders.len(), 1, "refusals are not orders");
    assert_eq!(world.take_work().len(), 1, "one charge, for the one order");
}

#[test]
fn a_payment_after_expiry_is_refunded_once() {
    let mut world = World::new();
    world.stock(1, 1, 5);
    let order = world.run(reserve(7, &[1], &[1], None), Some(&record("k", &["A"], 100)));
    world.take_work();
    world.now += 60 * SECOND;
    world.run(Command::Commit { order: OrderId(order.0) }, None);
    assert_eq!(world.state(order), (OrderStatus::Refunded, PaymentStatus::RefundDue));
    assert_eq!(world.take_work(), [Work::Refund { order: OrderId(order.0), amount_cents: 100 }]);
    world.run(Command::Commit { order: OrderId(order.0) }, None);
    assert!(world.take_work().is_empty(), "a repeated late success is refunded once");
    assert_eq!(world.state(order), (OrderStatus::Refunded, PaymentStatus::RefundDue));
}

#[test]
fn an_expiry_expires_the_payment_and_a_later_success_is_refunded() {
    let mut world = World::new();
    world.stock(1, 1, 5);
    let order = world.run(reserve(7, &[1], &[1], None), Some(&record("k", &["A"], 100)));
    world.take_work();
    world.now += 60 * SECOND;
    world.run(Command::Expire, None);
    assert_eq!(world.state(order), (OrderStatus::Expired, PaymentStatus::Expired));
    world.run(Command::Commit { order: OrderId(order.0) }, None);
    assert_eq!(world.state(order), (OrderStatus::Refunded, PaymentStatus::RefundDue));
    assert_eq!(world.take_work().len(), 1);
}

#[test]
fn a_cancel_after_payment_refunds_and_a_failed_payment_is_not_charged_back() {
    let mut world = World::new();
    world.stock(1, 1, 5);
    let paid = world.run(reserve(7, &[1], &[1], None), Some(&record("a", &["A"], 100)));
    world.run(Command::Commit { order: OrderId(paid.0) }, None);
    world.take_work();
    world.run(Command::Cancel { order: OrderId(paid.0) }, None);
    assert_eq!(world.state(paid), (OrderStatus::Cancelled, PaymentStatus::RefundDue));
    assert_eq!(world.take_work(), [Work::Refund { order: OrderId(paid.0), amount_cents: 100 }]);
    // A duplicate success for the cancelled order: its refund is already due.
    world.run(Command::Commit { order: OrderId(paid.0) }, None);
    assert!(world.take_work().is_empty());

    let failed = world.run(reserve(7, &[1], &[1], None), Some(&record("b", &["A"], 100)));
    world.take_work();
    let release =
        Command::Release { order: OrderId(failed.0), reason: ReleaseReason::PaymentFailed };
    world.run(release, None);
    assert_eq!(world.state(failed), (OrderStatus::PaymentFailed, PaymentStatus::Failed));
    assert!(world.take_work().is_empty());

    let cancelled = world.run(reserve(7, &[1], &[1], None), Some(&record("c", &["A"], 100)));
    let release =
        Command::Release { order: OrderId(cancelled.0), reason: ReleaseReason::Cancelled };
    world.run(release, None);
    assert_eq!(world.state(cancelled), (OrderStatus::Cancelled, PaymentStatus::Cancelled));
}

#[test]
fn a_checked_out_cart_version_is_recorded_and_a_second_claim_answers_conflict() {
    let mut world = World::new();
    world.stock(1, 1, 5);
    let first = world.run(reserve(7, &[1], &[1], Some(4)), Some(&record("tab-1", &["A"], 100)));
    let second = world.run(reserve(7, &[1], &[1], Some(4)), Some(&record("tab-2", &["A"], 100)));
    assert_eq!(world.answer(first), &Answer::Placed { order: OrderId(first.0) });
    assert_eq!(world.answer(second), &Answer::CartAlreadyCheckedOut);
    assert!(world.store.carts_checked_out.contains_key(&(7, 4)));
    assert_eq!(world.store.orders.len(), 1);
}

#[test]
fn reservations_without_a_readable_record_make_no_rows() {
    let mut world = World::new();
    world.stock(1, 1, 5);
    world.run(reserve(7, &[1], &[1], None), None);
    let mut output = Output::default();
    output.push(
        Sequence(3),
        Timestamp(world.now),
        reserve(7, &[1], &[1], None),
        Some(b"junk"),
        &mut world.engine,
    );
    let mut skipped = Vec::new();
    project(&mut world.store, &output, &name, &mut world.work, &mut skipped).unwrap();
    assert_eq!(skipped.len(), 1, "the unreadable record is reported");
    assert!(world.store.orders.is_empty() && world.store.answers.is_empty());
    assert_eq!(world.store.watermark, Sequence(3), "and passed");
}

#[test]
fn projecting_again_after_a_crash_changes_nothing() {
    let mut world = World::new();
    world.stock(1, 1, 3);
    for buyer in 0..6 {
        let key = format!("k{buyer}");
        let order = world.run(reserve(buyer, &[1], &[1], None), Some(&record(&key, &["A"], 100)));
        if buyer % 2 == 0 {
            world.run(Command::Commit { order: OrderId(order.0) }, None);
        }
    }
    world.now += 60 * SECOND;
    world.run(Command::Expire, None);
    let once = world.store.clone();
    // A store that crashed at every point and caught up from its watermark: every output
    // projected again, some twice.
    for crash_after in 0..world.outputs.len() {
        let mut store = MemoryStore::default();
        let (mut work, mut skipped) = (Vec::new(), Vec::new());
        for output in &world.outputs[..crash_after] {
            project(&mut store, output, &name, &mut work, &mut skipped).unwrap();
        }
        for output in &world.outputs[crash_after.saturating_sub(2)..] {
            project(&mut store, output, &name, &mut work, &mut skipped).unwrap();
        }
        assert_eq!(store, once, "crash after output {crash_after}");
    }
}

#[test]
fn a_late_duplicate_success_for_a_paid_cancelled_refunded_order_changes_nothing() {
    let mut world = World::new();
    world.stock(1, 1, 5);
    let paid = world.run(reserve(7, &[1], &[1], None), Some(&record("a", &["A"], 100)));
    let order = OrderId(paid.0);
    world.run(Command::Commit { order }, None);
    world.run(Command::Cancel { order }, None);
    assert_eq!(world.state(paid), (OrderStatus::Cancelled, PaymentStatus::RefundDue));
    assert_eq!(world.take_work().last(), Some(&Work::Refund { order, amount_cents: 100 }));
    let settled = world.store.orders[&order].clone();
    // The provider repeats its success, once at once and once after the reservation's deadline
    // (the engine has retired the order either way: its commit is refused as unknown).
    world.run(Command::Commit { order }, None);
    world.now += 60 * SECOND;
    world.run(Command::Expire, None);
    world.run(Command::Commit { order }, None);
    assert_eq!(world.store.orders[&order], settled, "status, payment and history unchanged");
    assert!(world.take_work().is_empty(), "no second refund");

    // The other way to end cancelled: before paying. The late money is refunded, once.
    let unpaid = world.run(reserve(7, &[1], &[1], None), Some(&record("b", &["A"], 100)));
    let order = OrderId(unpaid.0);
    world.run(Command::Release { order, reason: ReleaseReason::Cancelled }, None);
    world.take_work();
    world.run(Command::Commit { order }, None);
    assert_eq!(world.state(unpaid), (OrderStatus::Refunded, PaymentStatus::RefundDue));
    assert_eq!(world.take_work(), [Work::Refund { order, amount_cents: 100 }]);
    let settled = world.store.orders[&order].clone();
    world.run(Command::Commit { order }, None);
    assert_eq!(world.store.orders[&order], settled);
    assert!(world.take_work().is_empty());
}
