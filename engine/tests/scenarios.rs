//! Hand-written scenarios for the state machine: one per rule, each small enough to read as the
//! rule's specification. Random sequences against the reference model live in `tests/`.

use surge_engine::codec::{decode_command, encode_command};
use surge_engine::{
    BuyerId, Capacity, CartVersion, Command, Engine, Event, Expiry, Limits, LineMask, LineRequest,
    LineRequests, OrderId, OrderState, Outcome, Progress, Query, Rejection, ReleaseReason,
    Sequence, SkuId, StockCell, StockLevel, Timestamp, WarehouseChoices, WarehouseId,
};

struct Harness {
    engine: Engine,
    sequence: u64,
    now: u64,
    events: Vec<Event>,
}

impl Harness {
    fn new() -> Self {
        Self {
            engine: Engine::new(Limits::TEST),
            sequence: 0,
            now: 1_000,
            events: Vec::with_capacity(1024),
        }
    }

    fn run(&mut self, command: Command) -> Outcome {
        self.sequence += 1;
        self.events.clear();
        let outcome = self.engine.apply(
            Sequence(self.sequence),
            Timestamp(self.now),
            &command,
            &mut self.events,
        );
        self.engine.check_invariants();
        // Every command survives its journal encoding unchanged.
        let mut bytes = Vec::new();
        encode_command(&command, &mut bytes);
        assert_eq!(decode_command(&bytes), Ok(command));
        outcome
    }

    fn stock(&mut self, sku: u32, warehouse: u16, on_hand: u32) {
        let outcome = self.run(Command::SetStock {
            sku: SkuId(sku),
            warehouse: WarehouseId(warehouse),
            on_hand,
        });
        assert!(matches!(outcome, Outcome::StockSet(_)), "{outcome:?}");
    }

    /// Reserves with a deadline 100 ns after the command's stamp.
    fn reserve(&mut self, buyer: u64, lines: &[(u32, u32)], warehouses: &[u16]) -> Outcome {
        self.reserve_expiring(buyer, Expiry::After { ttl_ns: 100 }, lines, warehouses)
    }

    /// Checks out `version` of the buyer's cart, with a deadline 100 ns after the stamp.
    fn checkout(
        &mut self,
        buyer: u64,
        version: u64,
        lines: &[(u32, u32)],
        warehouses: &[u16],
    ) -> Outcome {
        let expiry = Expiry::After { ttl_ns: 100 };
        let cart = Some(CartVersion(version));
        self.run(reserve_command(buyer, expiry, cart, lines, warehouses))
    }

    fn reserve_expiring(
        &mut self,
        buyer: u64,
        expiry: Expiry,
        lines: &[(u32, u32)],
        warehouses: &[u16],
    ) -> Outcome {
        self.run(reserve_command(buyer, expiry, None, lines, warehouses))
    }

    fn available(&self, sku: u32, warehouse: u16) -> u32 {
        self.engine.stock(SkuId(sku), WarehouseId(warehouse)).unwrap().available()
    }
}

fn reserve_command(
    buyer: u64,
    expiry: Expiry,
    cart: Option<CartVersion>,
    lines: &[(u32, u32)],
    warehouses: &[u16],
) -> Command {
    let lines: Vec<LineRequest> =
        lines.iter().map(|&(sku, quantity)| LineRequest { sku: SkuId(sku), quantity }).collect();
    let warehouses: Vec<WarehouseId> = warehouses.iter().map(|&w| WarehouseId(w)).collect();
    Command::Reserve {
        buyer: BuyerId(buyer),
        expiry,
        cart,
        lines: LineRequests::from_slice(&lines).unwrap(),
        warehouses: WarehouseChoices::from_slice(&warehouses).unwrap(),
    }
}

fn order_of(outcome: Outcome) -> OrderId {
    match outcome {
        Outcome::Reserved { order, .. } => order,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

#[test]
fn reservation_takes_each_line_whole_from_the_first_warehouse_that_has_it() {
    let mut h = Harness::new();
    h.stock(1, 0, 1);
    h.stock(1, 1, 5);
    h.stock(2, 0, 3);
    let outcome = h.reserve(7, &[(1, 2), (2, 3)], &[0, 1]);
    let Outcome::Reserved { lines, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!(lines.as_slice()[0].warehouse, WarehouseId(1), "warehouse 0 has only 1 unit");
    assert_eq!(lines.as_slice()[1].warehouse, WarehouseId(0));
    assert_eq!(h.available(1, 0), 1);
    assert_eq!(h.available(1, 1), 3);
    assert_eq!(h.available(2, 0), 0);
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::StockAvailability { sku: SkuId(2), in_stock: false, .. })));
}

#[test]
fn reservation_is_all_or_nothing() {
    let mut h = Harness::new();
    h.stock(1, 0, 5);
    h.stock(2, 0, 1);
    let outcome = h.reserve(7, &[(1, 2), (2, 2)], &[0]);
    let mut expected = LineMask::default();
    expected.set(1);
    assert_eq!(
        outcome,
        Outcome::Rejected(Rejection::OutOfStock { lines: expected, elsewhere: LineMask(0) })
    );
    assert_eq!(h.available(1, 0), 5, "the first line must not stay reserved");
    assert_eq!(h.engine.live_orders(), 0);
}

#[test]
fn out_of_stock_marks_the_lines_a_warehouse_outside_the_candidates_could_serve() {
    let mut h = Harness::new();
    h.stock(1, 0, 1);
    h.stock(1, 2, 5); // enough, but not a candidate
    h.stock(2, 2, 1); // not a candidate, and not enough either
    h.stock(3, 3, 9); // enough outside the candidates; a candidate has it too
    h.stock(3, 1, 2);
    h.stock(4, 0, 0); // no units anywhere
    let outcome = h.reserve(7, &[(1, 3), (2, 2), (3, 2), (4, 1)], &[0, 1]);
    let (mut lines, mut elsewhere) = (LineMask::default(), LineMask::default());
    for index in [0, 1, 3] {
        lines.set(index);
    }
    elsewhere.set(0);
    assert_eq!(outcome, Outcome::Rejected(Rejection::OutOfStock { lines, elsewhere }));
    assert_eq!(h.available(3, 1), 2, "a refusal reserves nothing");

    // Every refused line elsewhere: the order is not deliverable from these candidates.
    let outcome = h.reserve(7, &[(1, 3), (3, 9)], &[0, 1]);
    let mut both = LineMask::default();
    both.set(0);
    both.set(1);
    assert_eq!(outcome, Outcome::Rejected(Rejection::OutOfStock { lines: both, elsewhere: both }));

    // Units reserved by another order are not available elsewhere either.
    order_of(h.reserve(8, &[(1, 5)], &[2]));
    let outcome = h.reserve(7, &[(1, 3)], &[0, 1]);
    let mut first = LineMask::default();
    first.set(0);
    assert_eq!(
        outcome,
        Outcome::Rejected(Rejection::OutOfStock { lines: first, elsewhere: LineMask(0) })
    );
}

#[test]
fn the_last_unit_is_sold_exactly_once() {
    let mut h = Harness::new();
    h.stock(1, 0, 1);
    let first = order_of(h.reserve(1, &[(1, 1)], &[0]));
    assert!(matches!(
        h.reserve(2, &[(1, 1)], &[0]),
        Outcome::Rejected(Rejection::OutOfStock { .. })
    ));
    assert_eq!(
        h.run(Command::Commit { order: first }),
        Outcome::Transitioned { order: first, state: OrderState::Confirmed }
    );
    assert_eq!(
        h.run(Command::Commit { order: first }),
        Outcome::Rejected(Rejection::AlreadyResolved { state: OrderState::Confirmed })
    );
    let level = h.engine.stock(SkuId(1), WarehouseId(0)).unwrap();
    assert_eq!((level.on_hand, level.reserved, level.sold), (0, 0, 1));
}

#[test]
fn release_returns_units_and_forgets_the_order() {
    let mut h = Harness::new();
    h.stock(1, 0, 3);
    let order = order_of(h.reserve(1, &[(1, 3)], &[0]));
    let outcome = h.run(Command::Release { order, reason: ReleaseReason::PaymentFailed });
    assert_eq!(outcome, Outcome::Transitioned { order, state: OrderState::PaymentFailed });
    assert_eq!(h.available(1, 0), 3);
    assert!(h.engine.order(order).is_none());
    assert_eq!(h.run(Command::Commit { order }), Outcome::Rejected(Rejection::UnknownOrder));
}

#[test]
fn deadlines_expire_orders_and_a_late_payment_is_refused() {
    let mut h = Harness::new();
    h.stock(1, 0, 2);
    let early = order_of(h.reserve(1, &[(1, 1)], &[0]));
    h.now += 50;
    let late = order_of(h.reserve(2, &[(1, 1)], &[0]));
    h.now += 60; // past the first deadline only
    assert_eq!(h.run(Command::Expire), Outcome::ExpiredOrders { count: 1 });
    assert!(h.engine.order(early).is_none());
    assert_eq!(h.available(1, 0), 1);
    h.now += 100; // past the second deadline, but no tick ran: the deadline still decides
    assert_eq!(h.run(Command::Commit { order: late }), Outcome::Rejected(Rejection::Expired));
    assert_eq!(h.available(1, 0), 2);
    assert_eq!(h.run(Command::Expire), Outcome::ExpiredOrders { count: 0 });
}

#[test]
fn a_time_to_live_counts_from_the_stamp_the_sequencer_gives_the_command() {
    let mut h = Harness::new();
    h.stock(1, 0, 3);
    // The sender asked at 1_000; the command waited and was stamped at 1_700.
    h.now = 1_700;
    let outcome = h.reserve_expiring(1, Expiry::After { ttl_ns: 500 }, &[(1, 1)], &[0]);
    let Outcome::Reserved { order, expires_at, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!(expires_at, Timestamp(2_200), "the stamp plus the time to live");
    assert_eq!(h.engine.order(order).unwrap().expires_at, Timestamp(2_200));
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::OrderReserved { expires_at: Timestamp(2_200), .. })));
    // An absolute deadline is taken as sent.
    let outcome = h.reserve_expiring(2, Expiry::At(Timestamp(1_701)), &[(1, 1)], &[0]);
    assert!(matches!(outcome, Outcome::Reserved { expires_at: Timestamp(1_701), .. }));

    h.now = 2_199;
    assert_eq!(h.run(Command::Expire), Outcome::ExpiredOrders { count: 1 }, "only the second");
    h.now = 2_200;
    assert_eq!(h.run(Command::Commit { order }), Outcome::Rejected(Rejection::Expired));
}

#[test]
fn a_deadline_that_overflows_or_is_not_after_the_stamp_is_invalid() {
    let mut h = Harness::new();
    h.stock(1, 0, 3);
    let stamp = h.now;
    for expiry in [
        Expiry::After { ttl_ns: u64::MAX },
        Expiry::After { ttl_ns: u64::MAX - stamp + 1 },
        Expiry::After { ttl_ns: 0 },
        Expiry::At(Timestamp(stamp)),
        Expiry::At(Timestamp(stamp - 1)),
    ] {
        assert_eq!(
            h.reserve_expiring(1, expiry, &[(1, 1)], &[0]),
            Outcome::Rejected(Rejection::Invalid),
            "{expiry:?} stamped at {stamp}"
        );
        assert_eq!(h.available(1, 0), 3);
    }
    // The last representable instant is a deadline like any other.
    let outcome =
        h.reserve_expiring(1, Expiry::After { ttl_ns: u64::MAX - stamp }, &[(1, 1)], &[0]);
    assert!(matches!(outcome, Outcome::Reserved { expires_at: Timestamp(u64::MAX), .. }));
}

#[test]
fn both_kinds_of_expiry_survive_their_journal_encoding() {
    for expiry in [
        Expiry::At(Timestamp(0)),
        Expiry::At(Timestamp(u64::MAX)),
        Expiry::After { ttl_ns: 0 },
        Expiry::After { ttl_ns: u64::MAX },
    ] {
        let command = reserve_command(3, expiry, None, &[(1, 2), (2, 1)], &[1, 0]);
        let mut bytes = Vec::new();
        encode_command(&command, &mut bytes);
        assert_eq!(decode_command(&bytes), Ok(command));
        // Tag 3 for an absolute deadline, as every journal before `After` wrote it; 10 otherwise.
        let tag = if matches!(expiry, Expiry::At(_)) { 3 } else { 10 };
        assert_eq!(bytes[0], tag, "{expiry:?}");
    }
}

#[test]
fn cancelling_a_confirmed_order_returns_units_to_on_hand() {
    let mut h = Harness::new();
    h.stock(1, 0, 4);
    let order = order_of(h.reserve(1, &[(1, 3)], &[0]));
    h.run(Command::Commit { order });
    assert_eq!(
        h.run(Command::Cancel { order }),
        Outcome::Transitioned { order, state: OrderState::Cancelled }
    );
    let level = h.engine.stock(SkuId(1), WarehouseId(0)).unwrap();
    assert_eq!((level.on_hand, level.reserved, level.sold), (4, 0, 0));
}

#[test]
fn ship_and_deliver_follow_confirmation_only() {
    let mut h = Harness::new();
    h.stock(1, 0, 4);
    let order = order_of(h.reserve(1, &[(1, 1)], &[0]));
    assert_eq!(
        h.run(Command::Ship { order }),
        Outcome::Rejected(Rejection::WrongState { state: OrderState::PendingPayment })
    );
    h.run(Command::Commit { order });
    assert_eq!(
        h.run(Command::Ship { order }),
        Outcome::Transitioned { order, state: OrderState::Shipped }
    );
    assert_eq!(
        h.run(Command::Cancel { order }),
        Outcome::Rejected(Rejection::WrongState { state: OrderState::Shipped })
    );
    assert_eq!(
        h.run(Command::Deliver { order }),
        Outcome::Transitioned { order, state: OrderState::Delivered }
    );
    assert_eq!(h.engine.live_orders(), 0);
}

#[test]
fn per_buyer_limits_count_live_and_completed_orders_but_not_released_ones() {
    let mut h = Harness::new();
    h.stock(1, 0, 100);
    h.run(Command::SetBuyerLimit { sku: SkuId(1), per_buyer: Some(2) });
    let first = order_of(h.reserve(9, &[(1, 2)], &[0]));
    assert!(matches!(
        h.reserve(9, &[(1, 1)], &[0]),
        Outcome::Rejected(Rejection::PurchaseLimitExceeded { .. })
    ));
    order_of(h.reserve(10, &[(1, 2)], &[0])); // another buyer is not affected
    h.run(Command::Release { order: first, reason: ReleaseReason::Cancelled });
    let second = order_of(h.reserve(9, &[(1, 2)], &[0]));
    h.run(Command::Commit { order: second });
    h.run(Command::Ship { order: second });
    h.run(Command::Deliver { order: second });
    assert_eq!(h.engine.buyer_units(BuyerId(9), SkuId(1)), 2, "delivered units still count");
    h.run(Command::SetBuyerLimit { sku: SkuId(1), per_buyer: None });
    order_of(h.reserve(9, &[(1, 5)], &[0]));
}

#[test]
fn stock_cannot_be_set_below_reserved() {
    let mut h = Harness::new();
    h.stock(1, 0, 5);
    order_of(h.reserve(1, &[(1, 4)], &[0]));
    assert_eq!(
        h.run(Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand: 3 }),
        Outcome::Rejected(Rejection::BelowReserved { reserved: 4 })
    );
}

#[test]
fn malformed_requests_are_rejected_without_effect() {
    let mut h = Harness::new();
    h.stock(1, 0, 5);
    assert_eq!(h.reserve(1, &[(1, 0)], &[0]), Outcome::Rejected(Rejection::Invalid));
    assert_eq!(h.reserve(1, &[(1, 1), (1, 1)], &[0]), Outcome::Rejected(Rejection::Invalid));
    assert_eq!(h.reserve(1, &[(1, 1)], &[]), Outcome::Rejected(Rejection::Invalid));
    assert_eq!(h.reserve(1, &[(999, 1)], &[0]), Outcome::Rejected(Rejection::Invalid));
    assert_eq!(h.reserve(1, &[(1, 1)], &[200]), Outcome::Rejected(Rejection::Invalid));
    assert_eq!(h.available(1, 0), 5);
}

#[test]
fn live_orders_are_bounded_by_the_named_limit() {
    let mut h = Harness::new();
    h.stock(1, 0, 10_000);
    for buyer in 0..u64::from(Limits::TEST.orders_max) {
        order_of(h.reserve(buyer, &[(1, 1)], &[0]));
    }
    assert_eq!(
        h.reserve(0, &[(1, 1)], &[0]),
        Outcome::Rejected(Rejection::CapacityReached { capacity: Capacity::Orders })
    );
    // Expiring them frees the slots, and the expiry heap keeps working past its capacity.
    for round in 0..3 {
        h.now += 1_000;
        assert_eq!(
            h.run(Command::Expire),
            Outcome::ExpiredOrders { count: Limits::TEST.orders_max }
        );
        for buyer in 0..u64::from(Limits::TEST.orders_max) {
            let order = order_of(h.reserve(buyer, &[(1, 1)], &[0]));
            if round < 2 {
                h.run(Command::Commit { order });
                h.run(Command::Cancel { order });
            }
        }
        if round < 2 {
            assert_eq!(h.engine.live_orders(), 0);
            for buyer in 0..u64::from(Limits::TEST.orders_max) {
                order_of(h.reserve(buyer, &[(1, 1)], &[0]));
            }
        }
    }
}

#[test]
fn snapshot_round_trip_keeps_the_digest_and_the_behaviour() {
    let mut h = Harness::new();
    h.stock(1, 0, 5);
    h.stock(1, 3, 2);
    h.run(Command::SetBuyerLimit { sku: SkuId(1), per_buyer: Some(3) });
    let a = order_of(h.reserve(1, &[(1, 2)], &[0]));
    let b = order_of(h.reserve(2, &[(1, 3)], &[3, 0]));
    h.run(Command::Commit { order: b });
    let mut bytes = Vec::new();
    h.engine.encode_snapshot(&mut bytes);
    let restored = Engine::decode_snapshot(Limits::TEST, &bytes).unwrap();
    restored.check_invariants();
    assert_eq!(restored.digest(), h.engine.digest());
    let mut copy = Harness {
        engine: restored,
        sequence: h.sequence,
        now: h.now,
        events: Vec::with_capacity(64),
    };
    h.now += 1_000;
    copy.now += 1_000;
    assert_eq!(h.run(Command::Expire), copy.run(Command::Expire));
    assert!(h.engine.order(a).is_none());
    assert_eq!(h.engine.digest(), copy.engine.digest());
    assert!(Engine::decode_snapshot(Limits::TEST, &bytes[..bytes.len() - 1]).is_err());
}

fn claim(version: u64, order: OrderId) -> Option<(CartVersion, OrderId)> {
    Some((CartVersion(version), order))
}

#[test]
fn a_cart_version_is_checked_out_once_and_a_refused_duplicate_changes_nothing() {
    let mut h = Harness::new();
    h.stock(1, 0, 5);
    let first = order_of(h.checkout(7, 3, &[(1, 2)], &[0]));
    assert_eq!(h.engine.cart_claim(BuyerId(7)), claim(3, first));

    let mut before = Vec::new();
    h.engine.encode_snapshot(&mut before);
    for version in [3, 2, 0] {
        assert_eq!(
            h.checkout(7, version, &[(1, 2)], &[0]),
            Outcome::Rejected(Rejection::CartAlreadyCheckedOut),
            "version {version} after version 3"
        );
        assert!(h.events.is_empty(), "a refused duplicate announces nothing");
    }
    let mut after = Vec::new();
    h.engine.encode_snapshot(&mut after);
    // Only the header's last sequence and stamp moved.
    assert_eq!(before[20..], after[20..], "a refused duplicate changes nothing");

    // Claims are per buyer; buy now neither checks nor claims.
    let other = order_of(h.checkout(8, 3, &[(1, 1)], &[0]));
    assert_eq!(h.engine.cart_claim(BuyerId(8)), claim(3, other));
    order_of(h.reserve(7, &[(1, 1)], &[0]));
    assert_eq!(h.engine.cart_claim(BuyerId(7)), claim(3, first));

    // A newer version of the cart is a new checkout; the older order stays live, unclaimed.
    let second = order_of(h.checkout(7, 4, &[(1, 1)], &[0]));
    assert_eq!(h.engine.cart_claim(BuyerId(7)), claim(4, second));
    assert_eq!(h.engine.order(first).unwrap().state, OrderState::PendingPayment);
    for version in [4, 3] {
        assert_eq!(
            h.checkout(7, version, &[(1, 1)], &[0]),
            Outcome::Rejected(Rejection::CartAlreadyCheckedOut)
        );
    }
}

#[test]
fn the_cart_check_follows_validation_and_precedes_capacity_limits_and_stock() {
    let mut h = Harness::new();
    h.stock(1, 0, 2);
    h.run(Command::SetBuyerLimit { sku: SkuId(1), per_buyer: Some(2) });
    order_of(h.checkout(7, 1, &[(1, 2)], &[0]));
    // A malformed request is the gateway's bug, whatever its cart.
    assert_eq!(h.checkout(7, 1, &[(1, 0)], &[0]), Outcome::Rejected(Rejection::Invalid));
    // Out of stock and over the limit, but a duplicate learns neither.
    assert_eq!(
        h.checkout(7, 1, &[(1, 1)], &[0]),
        Outcome::Rejected(Rejection::CartAlreadyCheckedOut)
    );
    assert!(matches!(
        h.checkout(7, 2, &[(1, 1)], &[0]),
        Outcome::Rejected(Rejection::PurchaseLimitExceeded { .. })
    ));

    // With every order slot taken, a duplicate is still told that retrying cannot help.
    h.stock(2, 0, 10_000);
    while h.engine.live_orders() < Limits::TEST.orders_max as usize {
        order_of(h.reserve(9, &[(2, 1)], &[0]));
    }
    assert_eq!(
        h.checkout(7, 1, &[(2, 1)], &[0]),
        Outcome::Rejected(Rejection::CartAlreadyCheckedOut)
    );
    assert_eq!(
        h.checkout(7, 2, &[(2, 1)], &[0]),
        Outcome::Rejected(Rejection::CapacityReached { capacity: Capacity::Orders })
    );
}

/// How a checked-out order leaves engine memory, or moves on inside it.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Expired,
    ExpiredAtALateCommit,
    PaymentFailed,
    CancelledBeforePayment,
    CancelledAfterPayment,
    Delivered,
}

#[test]
fn a_claim_lasts_while_its_order_is_live_and_ends_with_it() {
    for fate in [
        Fate::Expired,
        Fate::ExpiredAtALateCommit,
        Fate::PaymentFailed,
        Fate::CancelledBeforePayment,
        Fate::CancelledAfterPayment,
        Fate::Delivered,
    ] {
        let mut h = Harness::new();
        h.stock(1, 0, 10);
        let order = order_of(h.checkout(7, 3, &[(1, 1)], &[0]));
        let duplicate_refused = |h: &mut Harness| {
            assert_eq!(
                h.checkout(7, 3, &[(1, 1)], &[0]),
                Outcome::Rejected(Rejection::CartAlreadyCheckedOut),
                "{fate:?}: the claim is kept while the order is live"
            );
        };
        let paid = |h: &mut Harness| {
            h.run(Command::Commit { order });
            assert_eq!(h.engine.order(order).unwrap().state, OrderState::Confirmed);
            duplicate_refused(h);
        };
        match fate {
            Fate::Expired => {
                h.now += 100;
                assert_eq!(h.run(Command::Expire), Outcome::ExpiredOrders { count: 1 });
            }
            Fate::ExpiredAtALateCommit => {
                h.now += 100;
                assert_eq!(h.run(Command::Commit { order }), Outcome::Rejected(Rejection::Expired));
            }
            Fate::PaymentFailed => {
                h.run(Command::Release { order, reason: ReleaseReason::PaymentFailed });
            }
            Fate::CancelledBeforePayment => {
                h.run(Command::Release { order, reason: ReleaseReason::Cancelled });
            }
            Fate::CancelledAfterPayment => {
                paid(&mut h);
                h.run(Command::Cancel { order });
            }
            Fate::Delivered => {
                paid(&mut h);
                h.run(Command::Ship { order });
                assert_eq!(h.engine.order(order).unwrap().state, OrderState::Shipped);
                duplicate_refused(&mut h);
                h.run(Command::Deliver { order });
            }
        }
        assert!(h.engine.order(order).is_none(), "{fate:?}");
        assert_eq!(h.engine.cart_claim(BuyerId(7)), None, "{fate:?}: the claim ended with it");
        let again = order_of(h.checkout(7, 3, &[(1, 1)], &[0]));
        assert_eq!(h.engine.cart_claim(BuyerId(7)), claim(3, again), "{fate:?}");
    }
}

#[test]
fn the_end_of_a_superseded_claim_s_order_leaves_the_newer_claim() {
    let mut h = Harness::new();
    h.stock(1, 0, 10);
    let older = order_of(h.checkout(7, 1, &[(1, 1)], &[0]));
    let newer = order_of(h.checkout(7, 2, &[(1, 1)], &[0]));
    h.run(Command::Release { order: older, reason: ReleaseReason::PaymentFailed });
    assert_eq!(h.engine.cart_claim(BuyerId(7)), claim(2, newer));
    assert_eq!(
        h.checkout(7, 2, &[(1, 1)], &[0]),
        Outcome::Rejected(Rejection::CartAlreadyCheckedOut)
    );
    h.run(Command::Commit { order: newer });
    h.run(Command::Cancel { order: newer });
    assert_eq!(h.engine.cart_claim(BuyerId(7)), None);
}

/// A snapshot's bytes with its cart claims (the end of the payload) replaced.
fn with_claims(
    snapshot: &[u8],
    claims_now: usize,
    count: u32,
    claims: &[(u64, u64, u64)],
) -> Vec<u8> {
    let mut bytes = snapshot[..snapshot.len() - 4 - 24 * claims_now].to_vec();
    bytes.extend_from_slice(&count.to_le_bytes());
    for &(buyer, version, order) in claims {
        for value in [buyer, version, order] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    bytes
}

#[test]
fn snapshots_keep_cart_claims_and_refuse_claims_that_break_them() {
    let mut h = Harness::new();
    h.stock(1, 0, 10);
    let superseded = order_of(h.checkout(1, 1, &[(1, 1)], &[0]));
    let pending = order_of(h.checkout(1, 2, &[(1, 1)], &[0]));
    let confirmed = order_of(h.checkout(2, 9, &[(1, 1)], &[0]));
    h.run(Command::Commit { order: confirmed });
    let buy_now = order_of(h.reserve(3, &[(1, 1)], &[0]));
    let mut bytes = Vec::new();
    h.engine.encode_snapshot(&mut bytes);

    let restored = Engine::decode_snapshot(Limits::TEST, &bytes).unwrap();
    restored.check_invariants();
    assert_eq!(restored.digest(), h.engine.digest());
    assert_eq!(restored.cart_claim(BuyerId(1)), claim(2, pending));
    assert_eq!(restored.cart_claim(BuyerId(2)), claim(9, confirmed));
    assert_eq!(restored.cart_claim(BuyerId(3)), None);
    let mut copy =
        Harness { engine: restored, sequence: h.sequence, now: h.now, events: Vec::new() };
    for harness in [&mut h, &mut copy] {
        assert_eq!(
            harness.checkout(1, 2, &[(1, 1)], &[0]),
            Outcome::Rejected(Rejection::CartAlreadyCheckedOut)
        );
        harness.run(Command::Release { order: superseded, reason: ReleaseReason::Cancelled });
        assert_eq!(harness.engine.cart_claim(BuyerId(1)), claim(2, pending));
        harness.run(Command::Release { order: pending, reason: ReleaseReason::Cancelled });
        assert_eq!(harness.engine.cart_claim(BuyerId(1)), None);
    }
    assert_eq!(h.engine.digest(), copy.engine.digest());

    // The claims are in the digest: the same state with another claim is another state.
    let (buyer_1, buyer_2) = ((1, 2, pending.0), (2, 9, confirmed.0));
    let edited = with_claims(&bytes, 2, 2, &[(1, 3, pending.0), buyer_2]);
    let edited = Engine::decode_snapshot(Limits::TEST, &edited).unwrap();
    assert_ne!(edited.digest(), Engine::decode_snapshot(Limits::TEST, &bytes).unwrap().digest());

    for (refusal, claims, count) in [
        ("not live", vec![buyer_1, buyer_2, (3, 1, 999)], 3),
        ("another buyer's order", vec![buyer_1, buyer_2, (3, 1, pending.0)], 3),
        ("trailing bytes", vec![buyer_1, buyer_2, (3, 1, buy_now.0)], 2),
        ("out of order or repeated", vec![buyer_1, buyer_1], 2),
        ("out of order or repeated", vec![buyer_2, buyer_1], 2),
        ("limits: cart claims", vec![buyer_1, buyer_2], Limits::TEST.orders_max + 1),
    ] {
        let damaged = with_claims(&bytes, 2, count, &claims);
        match Engine::decode_snapshot(Limits::TEST, &damaged) {
            Err(error) => assert!(error.to_string().contains(refusal), "{error} for {claims:?}"),
            Ok(_) => panic!("{claims:?} (count {count}) accepted"),
        }
    }
    let fine = with_claims(&bytes, 2, 3, &[buyer_1, buyer_2, (3, 1, buy_now.0)]);
    assert!(Engine::decode_snapshot(Limits::TEST, &fine).is_ok(), "any live order may claim");
}

#[test]
fn a_version_1_snapshot_written_before_cart_claims_still_loads() {
    let mut h = Harness::new();
    h.stock(1, 0, 5);
    h.run(Command::SetBuyerLimit { sku: SkuId(1), per_buyer: Some(3) });
    let order = order_of(h.reserve(1, &[(1, 2)], &[0]));
    let mut bytes = Vec::new();
    h.engine.encode_snapshot(&mut bytes);
    // Version 1 is this payload without the claim count at the end.
    let mut version_1 = bytes[..bytes.len() - 4].to_vec();
    version_1[..4].copy_from_slice(&1u32.to_le_bytes());
    let restored = Engine::decode_snapshot(Limits::TEST, &version_1).unwrap();
    restored.check_invariants();
    assert_eq!(restored.digest(), h.engine.digest(), "it re-encodes as the version 2 bytes");
    assert_eq!(restored.order(order), h.engine.order(order));
    // A version 1 payload followed by a claim count is trailing bytes, not claims.
    let mut longer = version_1.clone();
    longer.extend_from_slice(&0u32.to_le_bytes());
    assert!(Engine::decode_snapshot(Limits::TEST, &longer).is_err());
    let mut version_3 = bytes.clone();
    version_3[..4].copy_from_slice(&3u32.to_le_bytes());
    assert!(Engine::decode_snapshot(Limits::TEST, &version_3).is_err());
}

#[test]
fn progress_answers_how_far_the_engine_got() {
    let mut h = Harness::new();
    h.stock(1, 0, 5);
    h.now = 4_000;
    order_of(h.reserve(1, &[(1, 1)], &[0]));
    let mut query = Query::progress();
    h.engine.answer(&mut query);
    let expected = Progress {
        last_sequence: Sequence(2),
        last_at: Timestamp(4_000),
        live_orders: 1,
        limits: Limits::TEST,
    };
    assert_eq!(query, Query::Progress(Some(expected)));
}

#[test]
fn orders_answer_one_state_per_id_and_none_when_not_live() {
    let mut h = Harness::new();
    h.stock(1, 0, 5);
    let pending = order_of(h.reserve(1, &[(1, 1)], &[0]));
    let confirmed = order_of(h.reserve(2, &[(1, 1)], &[0]));
    h.run(Command::Commit { order: confirmed });
    let released = order_of(h.reserve(3, &[(1, 1)], &[0]));
    h.run(Command::Release { order: released, reason: ReleaseReason::PaymentFailed });
    let ids = vec![confirmed, OrderId(999), pending, released, confirmed];
    let mut query = Query::orders(ids.clone());
    h.engine.answer(&mut query);
    let Query::Orders(orders) = &query else { panic!("{query:?}") };
    assert_eq!(orders.ids(), ids);
    let expected = [
        Some(OrderState::Confirmed),
        None,
        Some(OrderState::PendingPayment),
        None,
        Some(OrderState::Confirmed),
    ];
    assert_eq!(orders.states(), expected);
    // Asked again, it answers again rather than adding to the last answer.
    h.run(Command::Ship { order: confirmed });
    h.engine.answer(&mut query);
    let Query::Orders(orders) = &query else { panic!("{query:?}") };
    assert_eq!(orders.iter().next(), Some((confirmed, Some(OrderState::Shipped))));
    assert_eq!(orders.states().len(), ids.len());
}

/// Every part of a stock query, asked until it is answered whole.
fn stock_parts(engine: &Engine, skus: &[u32], cells_capacity: usize) -> Vec<Vec<u32>> {
    let mut query = Query::stock(skus.iter().copied().map(SkuId).collect(), cells_capacity);
    let mut parts = Vec::new();
    loop {
        engine.answer(&mut query);
        let Query::Stock(stock) = &mut query else { panic!("{query:?}") };
        assert_eq!(stock.buyer_limits().len(), stock.skus().len());
        assert!(stock.cells().len() <= cells_capacity);
        parts.push(stock.skus().iter().map(|sku| sku.0).collect());
        for (sku, per_buyer, cells) in stock.per_sku() {
            assert_eq!(per_buyer, engine.buyer_limit(sku));
            let listed: Vec<(WarehouseId, _)> =
                cells.iter().map(|cell| (cell.warehouse, cell.level)).collect();
            assert!(cells.iter().all(|cell| cell.sku == sku));
            assert_eq!(listed, engine.stock_by_warehouse(sku), "cells of {sku:?} by warehouse");
        }
        if !stock.advance() {
            return parts;
        }
    }
}

#[test]
fn stock_answers_limits_and_cells_in_the_list_s_order_and_in_parts_that_fit() {
    let mut h = Harness::new();
    for (sku, warehouse, on_hand) in [(5, 3, 1), (5, 0, 2), (2, 1, 7), (2, 6, 0), (9, 4, 3)] {
        h.stock(sku, warehouse, on_hand);
    }
    h.run(Command::SetBuyerLimit { sku: SkuId(2), per_buyer: Some(4) });
    h.run(Command::SetBuyerLimit { sku: SkuId(7), per_buyer: Some(1) });
    order_of(h.reserve(1, &[(5, 1)], &[3]));
    // 5 and 2 have two cells each, 7 a limit and no cell, 9 one cell, 999 is beyond the limits.
    let skus = [5, 7, 2, 999, 9];
    assert_eq!(stock_parts(&h.engine, &skus, 8), [vec![5, 7, 2, 999, 9]]);
    assert_eq!(stock_parts(&h.engine, &skus, 3), [vec![5, 7], vec![2, 999, 9]]);
    assert_eq!(stock_parts(&h.engine, &skus, 2), [vec![5, 7], vec![2, 999], vec![9]]);
    assert_eq!(stock_parts(&h.engine, &[], 2), [Vec::<u32>::new()]);

    let mut query = Query::stock(vec![SkuId(5)], 2);
    h.engine.answer(&mut query);
    let Query::Stock(stock) = &query else { panic!("{query:?}") };
    let level = |on_hand, reserved| StockLevel { on_hand, reserved, sold: 0 };
    assert_eq!(
        stock.cells(),
        [
            StockCell { sku: SkuId(5), warehouse: WarehouseId(0), level: level(2, 0) },
            StockCell { sku: SkuId(5), warehouse: WarehouseId(3), level: level(1, 1) },
        ]
    );
}

#[test]
#[should_panic(expected = "more cells than the buffer")]
fn a_stock_query_whose_buffer_cannot_hold_one_sku_stops_instead_of_asking_forever() {
    let mut h = Harness::new();
    h.stock(1, 0, 1);
    h.stock(1, 1, 1);
    let mut query = Query::stock(vec![SkuId(1)], 1);
    h.engine.answer(&mut query);
    let Query::Stock(stock) = &mut query else { panic!("{query:?}") };
    assert!(stock.skus().is_empty());
    stock.advance();
}
