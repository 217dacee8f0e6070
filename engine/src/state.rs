//! The inventory state machine: stock per SKU per warehouse, and every live order.
//!
//! [`Engine::apply`] is a pure function of the engine's state and one sequenced command. It reads no
//! clock (time arrives stamped on the command), draws no random numbers, starts no thread, logs
//! nothing, and allocates nothing: every container is sized from [`Limits`] in [`Engine::new`].
//! Running the same journal through two engines therefore gives identical outcomes, identical events
//! and an identical [`Engine::digest`].
//!
//! Stock is a pool of cells, one per SKU per warehouse that ever had stock set, chained per SKU. A
//! live order occupies a slot in a slab; when it reaches a terminal state it is announced in an event
//! and its slot is freed, so memory is bounded by live orders, not by history.
//!
//! A checkout of a cart claims the cart's version for its buyer while its order is live, so that a
//! duplicated or retried checkout of the same cart cannot reserve a second time (see
//! [`Command::Reserve`]). Claims are one map entry per buyer, each naming a live order of that
//! buyer, so they too are bounded by live orders.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::command::{
    BuyerId, Capacity, CartVersion, Command, Event, Expiry, Line, LineMask, LineRequests, Lines,
    OrderId, OrderState, Outcome, Rejection, ReleaseReason, Sequence, SkuId, StockLevel, Timestamp,
    WarehouseChoices, WarehouseId,
};
use crate::hash::{fnv1a64, FixedState, OrderIdState};
use crate::limits::{Limits, LINES_PER_ORDER_MAX};
use crate::query::{Progress, Query, SkuStock, StockCell};
use crate::wire::{put_u16, put_u32, put_u64, Reader, Truncated};

/// Marks the end of a SKU's chain of stock cells, and a SKU with no cells.
const NO_CELL: u32 = u32::MAX;
/// A SKU without a per-buyer limit.
const NO_BUYER_LIMIT: u32 = u32::MAX;

/// Where the engine's events go. The pipeline collects them per batch; benchmarks may count or drop.
pub trait EventSink {
    fn emit(&mut self, event: Event);
}

impl EventSink for Vec<Event> {
    #[inline]
    fn emit(&mut self, event: Event) {
        // The pipeline sizes the buffer for a batch and reuses it. Only an `Expire` that retires a
        // very large number of orders at once can outgrow it, and the grown buffer is then kept.
        self.push(event);
    }
}

/// Collects events tagged with the sequence of the command that emitted them, for consumers that
/// record how far they got (`EventBatch`, `restore_with_events`).
#[derive(Debug)]
pub struct Sequenced<'a> {
    pub sequence: Sequence,
    pub events: &'a mut Vec<(Sequence, Event)>,
}

impl EventSink for Sequenced<'_> {
    #[inline]
    fn emit(&mut self, event: Event) {
        self.events.push((self.sequence, event));
    }
}

/// Drops every event; for benchmarks of the state machine alone.
#[derive(Debug, Default)]
pub struct DiscardEvents;

impl EventSink for DiscardEvents {
    #[inline]
    fn emit(&mut self, _event: Event) {}
}

/// What the engine knows of a SKU besides its cells. Kept together because a reservation line reads
/// both: one cache line instead of two.
#[derive(Clone, Copy, Debug)]
struct SkuEntry {
    first_cell: u32,
    buyer_limit: u32,
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    warehouse: WarehouseId,
    next: u32,
    level: StockLevel,
}

#[derive(Clone, Copy, Debug)]
struct Order {
    id: OrderId,
    buyer: BuyerId,
    expires_at: Timestamp,
    state: OrderState,
    lines: Lines,
    /// The stock cell of each line, so resolving an order does not walk the SKU's cell chain.
    cells: [u32; LINES_PER_ORDER_MAX],
    /// Lines whose units were added to a per-buyer counter when reserved, so that exactly those are
    /// taken off again if the order does not complete.
    counted: LineMask,
    /// Whether the buyer's cart claim names this order. Kept beside the order so that retiring one
    /// that claims nothing (every buy-now order) never looks at the claims.
    claims_cart: bool,
}

/// A read-only view of a live order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderView {
    pub id: OrderId,
    pub buyer: BuyerId,
    pub expires_at: Timestamp,
    pub state: OrderState,
    pub lines: Lines,
}

/// Why a snapshot could not be loaded.
#[derive(Debug)]
pub enum SnapshotError {
    Truncated(Truncated),
    Version(u32),
    Limits(&'static str),
    Inconsistent(&'static str),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated(truncated) => write!(f, "snapshot {truncated}"),
            Self::Version(version) => {
                write!(f, "snapshot format version {version} is not supported")
            }
            Self::Limits(what) => write!(f, "snapshot does not fit the configured limits: {what}"),
            Self::Inconsistent(what) => write!(f, "snapshot is inconsistent: {what}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<Truncated> for SnapshotError {
    fn from(truncated: Truncated) -> Self {
        Self::Truncated(truncated)
    }
}

/// The state machine. See the module documentation.
#[derive(Clone, Debug)]
pub struct Engine {
    limits: Limits,
    last_sequence: Sequence,
    last_at: Timestamp,
    skus: Vec<SkuEntry>,
    cells: Vec<Cell>,
    orders: Vec<Order>,
    free_order_slots: Vec<u32>,
    order_slots: HashMap<OrderId, u32, OrderIdState>,
    /// Deadlines of pending orders, earliest first. Entries of orders that resolved are left in place
    /// and skipped when they surface; the heap is compacted when it fills (see `schedule_expiry`).
    expiry: BinaryHeap<Reverse<(Timestamp, OrderId)>>,
    buyer_units: HashMap<(BuyerId, SkuId), u32, FixedState>,
    /// Per buyer, the newest cart version a live order claimed, and that order. Every entry names a
    /// live order of its buyer (whose `claims_cart` is set), so there are never more entries than
    /// live orders, and the map is allocated for `orders_max`.
    cart_claims: HashMap<BuyerId, (CartVersion, OrderId), FixedState>,
}

impl Engine {
    /// Allocates every container for `limits`. This is the only place the engine allocates.
    pub fn new(limits: Limits) -> Self {
        let orders_max = limits.orders_max as usize;
        Self {
            limits,
            last_sequence: Sequence(0),
            last_at: Timestamp(0),
            skus: vec![
                SkuEntry { first_cell: NO_CELL, buyer_limit: NO_BUYER_LIMIT };
                limits.skus_max as usize
            ],
            cells: Vec::with_capacity(limits.stock_cells_max as usize),
            orders: Vec::with_capacity(orders_max),
            free_order_slots: Vec::with_capacity(orders_max),
            order_slots: HashMap::with_capacity_and_hasher(orders_max, OrderIdState::default()),
            expiry: BinaryHeap::with_capacity(orders_max),
            buyer_units: HashMap::with_capacity_and_hasher(
                limits.buyer_counters_max as usize,
                FixedState::default(),
            ),
            cart_claims: HashMap::with_capacity_and_hasher(orders_max, FixedState::default()),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The sequence of the last command applied (0 before any).
    pub fn last_sequence(&self) -> Sequence {
        self.last_sequence
    }

    /// The timestamp of the last command applied.
    pub fn last_at(&self) -> Timestamp {
        self.last_at
    }

    /// Applies one command stamped by the sequencer. Sequences must increase and timestamps must
    /// not go back: anything else is a bug in the caller, and stops the process.
    pub fn apply(
        &mut self,
        sequence: Sequence,
        at: Timestamp,
        command: &Command,
        events: &mut impl EventSink,
    ) -> Outcome {
        assert!(sequence > self.last_sequence, "sequence {sequence:?} applied out of order");
        assert!(at >= self.last_at, "time went backwards at sequence {sequence:?}");
        self.last_sequence = sequence;
        self.last_at = at;
        // Matched by reference: a `Reserve` is mostly its inline line array, not worth copying.
        let result = match command {
            &Command::SetStock { sku, warehouse, on_hand } => {
                self.set_stock(sku, warehouse, on_hand, events)
            }
            &Command::SetBuyerLimit { sku, per_buyer } => self.set_buyer_limit(sku, per_buyer),
            Command::Reserve { buyer, expiry, cart, lines, warehouses } => self.reserve(
                OrderId(sequence.0),
                at,
                *buyer,
                *expiry,
                *cart,
                lines,
                warehouses,
                events,
            ),
            &Command::Commit { order } => self.commit(order, at, events),
            &Command::Release { order, reason } => self.release(order, at, reason, events),
            Command::Expire => Ok(Outcome::ExpiredOrders { count: self.expire_due(at, events) }),
            &Command::Cancel { order } => self.cancel(order, events),
            &Command::Ship { order } => self.ship(order, events),
            &Command::Deliver { order } => self.deliver(order, events),
        };
        result.unwrap_or_else(Outcome::Rejected)
    }

    fn set_stock(
        &mut self,
        sku: SkuId,
        warehouse: WarehouseId,
        on_hand: u32,
        events: &mut impl EventSink,
    ) -> Result<Outcome, Rejection> {
        self.check_sku(sku)?;
        self.check_warehouse(warehouse)?;
        let cell_index = match self.find_cell(sku, warehouse) {
            Some(index) => index,
            None => self.add_cell(sku, warehouse)?,
        };
        let cell = &mut self.cells[cell_index as usize];
        if on_hand < cell.level.reserved {
            return Err(Rejection::BelowReserved { reserved: cell.level.reserved });
        }
        let before = cell.level;
        cell.level.on_hand = on_hand;
        let after = cell.level;
        announce_stock(sku, warehouse, before, after, events);
        Ok(Outcome::StockSet(after))
    }

    fn set_buyer_limit(
        &mut self,
        sku: SkuId,
        per_buyer: Option<u32>,
    ) -> Result<Outcome, Rejection> {
        self.check_sku(sku)?;
        // u32::MAX is the "no limit" marker, in memory and in snapshots, so it cannot also be a
        // limit: accepting it would answer `BuyerLimitSet` and then behave as if the limit were
        // lifted (no units counted, `buyer_limit` reports none).
        if per_buyer == Some(NO_BUYER_LIMIT) {
            return Err(Rejection::Invalid);
        }
        self.skus[sku.0 as usize].buyer_limit = per_buyer.unwrap_or(NO_BUYER_LIMIT);
        Ok(Outcome::BuyerLimitSet)
    }

    #[expect(clippy::too_many_arguments, reason = "the fields of one Reserve command")]
    fn reserve(
        &mut self,
        id: OrderId,
        at: Timestamp,
        buyer: BuyerId,
        expiry: Expiry,
        cart: Option<CartVersion>,
        requests: &LineRequests,
        warehouses: &WarehouseChoices,
        events: &mut impl EventSink,
    ) -> Result<Outcome, Rejection> {
        let expires_at = self.check_reserve_request(at, expiry, requests, warehouses)?;
        // The claim is checked right after the request is known to be well formed: before the
        // capacity check, because it is a final answer where `CapacityReached` says "try again"
        // (a retried duplicate should learn at once that retrying cannot help), and before limits
        // and stock, so a duplicate learns nothing about either.
        if let Some(version) = cart {
            if self.cart_claims.get(&buyer).is_some_and(|&(claimed, _)| claimed >= version) {
                return Err(Rejection::CartAlreadyCheckedOut);
            }
        }
        if self.order_slots.len() >= self.limits.orders_max as usize {
            return Err(Rejection::CapacityReached { capacity: Capacity::Orders });
        }

        // Per-buyer limits first: a buyer over the limit learns nothing about stock.
        let mut over_limit = LineMask::default();
        let mut counted = LineMask::default();
        let mut new_counters = 0usize;
        for (index, request) in requests.as_slice().iter().enumerate() {
            let limit = self.skus[request.sku.0 as usize].buyer_limit;
            if limit == NO_BUYER_LIMIT {
                continue;
            }
            counted.set(index);
            let held = self.buyer_units.get(&(buyer, request.sku)).copied();
            if held.is_none() {
                new_counters += 1;
            }
            let wanted = u64::from(held.unwrap_or(0)) + u64::from(request.quantity);
            if wanted > u64::from(limit) {
                over_limit.set(index);
            }
        }
        if !over_limit.is_empty() {
            return Err(Rejection::PurchaseLimitExceeded { lines: over_limit });
        }
        if self.buyer_units.len() + new_counters > self.limits.buyer_counters_max as usize {
            return Err(Rejection::CapacityReached { capacity: Capacity::BuyerCounters });
        }

        // Choose a warehouse for every line before touching anything: all lines or none.
        let mut chosen = [0u32; LINES_PER_ORDER_MAX];
        let mut out_of_stock = LineMask::default();
        for (index, request) in requests.as_slice().iter().enumerate() {
            match self.choose_cell(request.sku, request.quantity, warehouses) {
                Some(cell_index) => chosen[index] = cell_index,
                None => out_of_stock.set(index),
            }
        }
        if !out_of_stock.is_empty() {
            let elsewhere = self.available_elsewhere(requests, out_of_stock, warehouses);
            return Err(Rejection::OutOfStock { lines: out_of_stock, elsewhere });
        }

        let mut lines = Lines::default();
        for (index, request) in requests.as_slice().iter().enumerate() {
            let cell = &mut self.cells[chosen[index] as usize];
            let before = cell.level;
            cell.level.reserved += request.quantity;
            let after = cell.level;
            let warehouse = cell.warehouse;
            announce_stock(request.sku, warehouse, before, after, events);
            let pushed =
                lines.push(Line { sku: request.sku, warehouse, quantity: request.quantity });
            debug_assert!(pushed, "a request never has more lines than an order");
            if counted.contains(index) {
                *self.buyer_units.entry((buyer, request.sku)).or_insert(0) += request.quantity;
            }
        }
        let order = Order {
            id,
            buyer,
            expires_at,
            state: OrderState::PendingPayment,
            lines,
            cells: chosen,
            counted,
            claims_cart: cart.is_some(),
        };
        self.insert_order(order);
        if let Some(version) = cart {
            self.claim_cart(buyer, version, id);
        }
        self.schedule_expiry(expires_at, id);
        events.emit(Event::OrderReserved { order: id, buyer, expires_at, lines });
        Ok(Outcome::Reserved { order: id, expires_at, lines })
    }

    /// Validates a request and returns its deadline.
    fn check_reserve_request(
        &self,
        at: Timestamp,
        expiry: Expiry,
        requests: &LineRequests,
        warehouses: &WarehouseChoices,
    ) -> Result<Timestamp, Rejection> {
        let expires_at = expiry.deadline(at).ok_or(Rejection::Invalid)?;
        if requests.is_empty() || warehouses.is_empty() {
            return Err(Rejection::Invalid);
        }
        for &warehouse in warehouses.as_slice() {
            self.check_warehouse(warehouse)?;
        }
        let requests = requests.as_slice();
        for (index, request) in requests.iter().enumerate() {
            self.check_sku(request.sku)?;
            if request.quantity == 0 || requests[..index].iter().any(|r| r.sku == request.sku) {
                return Err(Rejection::Invalid);
            }
        }
        Ok(expires_at)
    }

    /// The first candidate warehouse holding `quantity` available units of `sku`, as a cell index.
    fn choose_cell(&self, sku: SkuId, quantity: u32, warehouses: &WarehouseChoices) -> Option<u32> {
        warehouses.as_slice().iter().find_map(|&warehouse| {
            let index = self.find_cell(sku, warehouse)?;
            (self.cells[index as usize].level.available() >= quantity).then_some(index)
        })
    }

    /// Makes `order` the holder of the buyer's cart claim, taking it from the older order that held
    /// it, which stays live without a claim.
    fn claim_cart(&mut self, buyer: BuyerId, version: CartVersion, order: OrderId) {
        if let Some((_, superseded)) = self.cart_claims.insert(buyer, (version, order)) {
            let slot = self.order_slots[&superseded];
            self.orders[slot as usize].claims_cart = false;
        }
    }

    /// Of the `refused` lines, those whose SKU has a cell outside the candidate `warehouses` with
    /// the line's whole quantity available. Walks each refused SKU's cell chain once; runs only on
    /// a refusal, so the reservation path pays nothing for it.
    fn available_elsewhere(
        &self,
        requests: &LineRequests,
        refused: LineMask,
        warehouses: &WarehouseChoices,
    ) -> LineMask {
        let mut elsewhere = LineMask::default();
        for (index, request) in requests.as_slice().iter().enumerate() {
            if !refused.contains(index) {
                continue;
            }
            let mut cell_index = self.skus[request.sku.0 as usize].first_cell;
            while cell_index != NO_CELL {
                let cell = &self.cells[cell_index as usize];
                if cell.level.available() >= request.quantity
                    && !warehouses.as_slice().contains(&cell.warehouse)
                {
                    elsewhere.set(index);
                    break;
                }
                cell_index = cell.next;
            }
        }
        elsewhere
    }

    fn commit(
        &mut self,
        id: OrderId,
        at: Timestamp,
        events: &mut impl EventSink,
    ) -> Result<Outcome, Rejection> {
        let slot = self.pending_slot(id, at, events)?;
        let order = &mut self.orders[slot as usize];
        order.state = OrderState::Confirmed;
        let order = *order;
        for (line, &cell_index) in order.lines.as_slice().iter().zip(&order.cells) {
            let cell = &mut self.cells[cell_index as usize];
            let before = cell.level;
            cell.level.reserved -= line.quantity;
            cell.level.on_hand -= line.quantity;
            cell.level.sold += u64::from(line.quantity);
            announce_stock(line.sku, line.warehouse, before, cell.level, events);
        }
        events.emit(Event::OrderTransitioned {
            order: id,
            buyer: order.buyer,
            state: OrderState::Confirmed,
            lines: order.lines,
        });
        Ok(Outcome::Transitioned { order: id, state: OrderState::Confirmed })
    }

    fn release(
        &mut self,
        id: OrderId,
        at: Timestamp,
        reason: ReleaseReason,
        events: &mut impl EventSink,
    ) -> Result<Outcome, Rejection> {
        let slot = self.pending_slot(id, at, events)?;
        let state = match reason {
            ReleaseReason::PaymentFailed => OrderState::PaymentFailed,
            ReleaseReason::Cancelled => OrderState::Cancelled,
        };
        self.unreserve_and_retire(slot, state, events);
        Ok(Outcome::Transitioned { order: id, state })
    }

    /// The slot of a live order that still awaits payment. An order whose deadline has passed is
    /// expired on the spot: the deadline decides, not the moment the next `Expire` tick runs.
    fn pending_slot(
        &mut self,
        id: OrderId,
        at: Timestamp,
        events: &mut impl EventSink,
    ) -> Result<u32, Rejection> {
        let slot = *self.order_slots.get(&id).ok_or(Rejection::UnknownOrder)?;
        let order = &self.orders[slot as usize];
        if order.state != OrderState::PendingPayment {
            return Err(Rejection::AlreadyResolved { state: order.state });
        }
        if order.expires_at <= at {
            self.unreserve_and_retire(slot, OrderState::Expired, events);
            return Err(Rejection::Expired);
        }
        Ok(slot)
    }

    fn cancel(&mut self, id: OrderId, events: &mut impl EventSink) -> Result<Outcome, Rejection> {
        let slot = self.live_slot(id, OrderState::Confirmed)?;
        let order = self.orders[slot as usize];
        // A stock count after the sale may have set `on_hand` so high that the returned units no
        // longer fit: an arithmetic overflow, refused before anything changes.
        for (line, &cell_index) in order.lines.as_slice().iter().zip(&order.cells) {
            if self.cells[cell_index as usize].level.on_hand.checked_add(line.quantity).is_none() {
                return Err(Rejection::Invalid);
            }
        }
        for (line, &cell_index) in order.lines.as_slice().iter().zip(&order.cells) {
            let cell = &mut self.cells[cell_index as usize];
            let before = cell.level;
            cell.level.on_hand += line.quantity;
            cell.level.sold -= u64::from(line.quantity);
            announce_stock(line.sku, line.warehouse, before, cell.level, events);
        }
        self.uncount(&order);
        self.retire(slot, OrderState::Cancelled, events);
        Ok(Outcome::Transitioned { order: id, state: OrderState::Cancelled })
    }

    fn ship(&mut self, id: OrderId, events: &mut impl EventSink) -> Result<Outcome, Rejection> {
        let slot = self.live_slot(id, OrderState::Confirmed)?;
        let order = &mut self.orders[slot as usize];
        order.state = OrderState::Shipped;
        events.emit(Event::OrderTransitioned {
            order: id,
            buyer: order.buyer,
            state: OrderState::Shipped,
            lines: order.lines,
        });
        Ok(Outcome::Transitioned { order: id, state: OrderState::Shipped })
    }

    fn deliver(&mut self, id: OrderId, events: &mut impl EventSink) -> Result<Outcome, Rejection> {
        let slot = self.live_slot(id, OrderState::Shipped)?;
        // Delivered units keep counting towards per-buyer limits, so the counters stay.
        self.retire(slot, OrderState::Delivered, events);
        Ok(Outcome::Transitioned { order: id, state: OrderState::Delivered })
    }

    /// The slot of a live order in state `required`.
    fn live_slot(&self, id: OrderId, required: OrderState) -> Result<u32, Rejection> {
        let slot = *self.order_slots.get(&id).ok_or(Rejection::UnknownOrder)?;
        let state = self.orders[slot as usize].state;
        if state == required {
            Ok(slot)
        } else {
            Err(Rejection::WrongState { state })
        }
    }

    /// Expires every pending order whose deadline is at or before `at`, earliest deadline first.
    fn expire_due(&mut self, at: Timestamp, events: &mut impl EventSink) -> u32 {
        let mut count = 0;
        while let Some(&Reverse((deadline, id))) = self.expiry.peek() {
            if deadline > at {
                break;
            }
            self.expiry.pop();
            if let Some(&slot) = self.order_slots.get(&id) {
                let order = &self.orders[slot as usize];
                if order.state == OrderState::PendingPayment && order.expires_at == deadline {
                    self.unreserve_and_retire(slot, OrderState::Expired, events);
                    count += 1;
                }
            }
        }
        count
    }

    /// The earliest deadline that may still expire an order. It can be stale (the order resolved);
    /// an `Expire` at that time then expires nothing and moves past it.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.expiry.peek().map(|Reverse((deadline, _))| *deadline)
    }

    fn schedule_expiry(&mut self, deadline: Timestamp, id: OrderId) {
        if self.expiry.len() == self.expiry.capacity() {
            // Drop entries of orders that resolved. Afterwards at most one entry per pending order
            // remains, and there are fewer pending orders than `orders_max`, so the push below fits.
            let slots = &self.order_slots;
            let orders = &self.orders;
            self.expiry.retain(|Reverse((deadline, id))| {
                slots.get(id).is_some_and(|&slot| {
                    let order = &orders[slot as usize];
                    order.state == OrderState::PendingPayment && order.expires_at == *deadline
                })
            });
        }
        self.expiry.push(Reverse((deadline, id)));
    }

    /// Returns the reserved units of a pending order to `available` and retires it in `state`.
    fn unreserve_and_retire(&mut self, slot: u32, state: OrderState, events: &mut impl EventSink) {
        let order = self.orders[slot as usize];
        debug_assert_eq!(order.state, OrderState::PendingPayment);
        for (line, &cell_index) in order.lines.as_slice().iter().zip(&order.cells) {
            let cell = &mut self.cells[cell_index as usize];
            let before = cell.level;
            cell.level.reserved -= line.quantity;
            announce_stock(line.sku, line.warehouse, before, cell.level, events);
        }
        self.uncount(&order);
        self.retire(slot, state, events);
    }

    /// Takes an order that did not complete off its buyer's per-SKU counters.
    fn uncount(&mut self, order: &Order) {
        for (index, line) in order.lines.as_slice().iter().enumerate() {
            if !order.counted.contains(index) {
                continue;
            }
            let key = (order.buyer, line.sku);
            let units = self.buyer_units.get_mut(&key).expect("counted line has a counter");
            *units -= line.quantity;
            if *units == 0 {
                self.buyer_units.remove(&key);
            }
        }
    }

    /// Announces the final state and forgets the order.
    fn retire(&mut self, slot: u32, state: OrderState, events: &mut impl EventSink) {
        debug_assert!(state.is_terminal());
        let order = self.orders[slot as usize];
        self.order_slots.remove(&order.id);
        self.free_order_slots.push(slot);
        if order.claims_cart {
            let claim = self.cart_claims.remove(&order.buyer);
            debug_assert_eq!(claim.map(|(_, claimant)| claimant), Some(order.id));
        }
        events.emit(Event::OrderTransitioned {
            order: order.id,
            buyer: order.buyer,
            state,
            lines: order.lines,
        });
    }

    fn insert_order(&mut self, order: Order) {
        let slot = if let Some(slot) = self.free_order_slots.pop() {
            self.orders[slot as usize] = order;
            slot
        } else {
            let slot = u32::try_from(self.orders.len()).expect("orders_max fits in u32");
            self.orders.push(order);
            slot
        };
        self.order_slots.insert(order.id, slot);
    }

    fn check_sku(&self, sku: SkuId) -> Result<(), Rejection> {
        if sku.0 < self.limits.skus_max {
            Ok(())
        } else {
            Err(Rejection::Invalid)
        }
    }

    fn check_warehouse(&self, warehouse: WarehouseId) -> Result<(), Rejection> {
        if warehouse.0 < self.limits.warehouses_max {
            Ok(())
        } else {
            Err(Rejection::Invalid)
        }
    }

    fn find_cell(&self, sku: SkuId, warehouse: WarehouseId) -> Option<u32> {
        let mut index = self.skus[sku.0 as usize].first_cell;
        while index != NO_CELL {
            let cell = &self.cells[index as usize];
            if cell.warehouse == warehouse {
                return Some(index);
            }
            index = cell.next;
        }
        None
    }

    fn add_cell(&mut self, sku: SkuId, warehouse: WarehouseId) -> Result<u32, Rejection> {
        if self.cells.len() >= self.limits.stock_cells_max as usize {
            return Err(Rejection::CapacityReached { capacity: Capacity::StockCells });
        }
        let index = u32::try_from(self.cells.len()).expect("stock_cells_max fits in u32");
        let head = &mut self.skus[sku.0 as usize].first_cell;
        self.cells.push(Cell { warehouse, next: *head, level: StockLevel::default() });
        *head = index;
        Ok(index)
    }

    // ----- Queries (outside the command loop) -----

    /// Answers `query` into the buffers it brought, without allocating: they are cleared and
    /// filled, never grown (see [`crate::query`]). Nothing in the engine changes.
    pub fn answer(&self, query: &mut Query) {
        let capacities = query.capacities();
        match query {
            Query::Progress(progress) => {
                *progress = Some(Progress {
                    last_sequence: self.last_sequence,
                    last_at: self.last_at,
                    live_orders: u32::try_from(self.order_slots.len())
                        .expect("orders_max fits u32"),
                    limits: self.limits,
                });
            }
            Query::Orders(orders) => {
                orders.states.clear();
                for &id in &orders.ids {
                    let state =
                        self.order_slots.get(&id).map(|&slot| self.orders[slot as usize].state);
                    orders.states.push(state);
                }
            }
            Query::Stock(stock) => self.answer_stock(stock),
        }
        debug_assert_eq!(query.capacities(), capacities, "answering {query:?} grew its buffers");
    }

    /// The SKUs from `stock.first` on whose cells fit the rest of the cell buffer whole.
    fn answer_stock(&self, stock: &mut SkuStock) {
        stock.buyer_limits.clear();
        stock.cells.clear();
        for &sku in &stock.skus[stock.first..] {
            let first_cell = match self.skus.get(sku.0 as usize) {
                Some(entry) => entry.first_cell,
                None => NO_CELL,
            };
            let mut count = 0;
            let mut index = first_cell;
            while index != NO_CELL {
                count += 1;
                index = self.cells[index as usize].next;
            }
            if stock.cells.len() + count > stock.cells.capacity() {
                break;
            }
            let start = stock.cells.len();
            let mut index = first_cell;
            while index != NO_CELL {
                let cell = &self.cells[index as usize];
                stock.cells.push(StockCell { sku, warehouse: cell.warehouse, level: cell.level });
                index = cell.next;
            }
            // The chain is newest first; the answer is by warehouse. `sort_unstable` sorts in place.
            stock.cells[start..].sort_unstable_by_key(|cell| cell.warehouse);
            stock.buyer_limits.push(self.buyer_limit(sku));
        }
    }

    /// The counters of one cell, if stock was ever set there.
    pub fn stock(&self, sku: SkuId, warehouse: WarehouseId) -> Option<StockLevel> {
        if sku.0 >= self.limits.skus_max {
            return None;
        }
        self.find_cell(sku, warehouse).map(|index| self.cells[index as usize].level)
    }

    /// Every cell of a SKU, in warehouse order.
    pub fn stock_by_warehouse(&self, sku: SkuId) -> Vec<(WarehouseId, StockLevel)> {
        let mut cells = Vec::new();
        if sku.0 < self.limits.skus_max {
            let mut index = self.skus[sku.0 as usize].first_cell;
            while index != NO_CELL {
                let cell = &self.cells[index as usize];
                cells.push((cell.warehouse, cell.level));
                index = cell.next;
            }
        }
        cells.sort_by_key(|(warehouse, _)| *warehouse);
        cells
    }

    pub fn buyer_limit(&self, sku: SkuId) -> Option<u32> {
        let limit = self.skus.get(sku.0 as usize)?.buyer_limit;
        (limit != NO_BUYER_LIMIT).then_some(limit)
    }

    /// Units of `sku` the buyer holds towards its per-buyer limit.
    pub fn buyer_units(&self, buyer: BuyerId, sku: SkuId) -> u32 {
        self.buyer_units.get(&(buyer, sku)).copied().unwrap_or(0)
    }

    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        let slot = *self.order_slots.get(&id)?;
        let order = &self.orders[slot as usize];
        Some(OrderView {
            id: order.id,
            buyer: order.buyer,
            expires_at: order.expires_at,
            state: order.state,
            lines: order.lines,
        })
    }

    /// The buyer's cart claim: the newest cart version a live order of the buyer checked out, and
    /// that order.
    pub fn cart_claim(&self, buyer: BuyerId) -> Option<(CartVersion, OrderId)> {
        self.cart_claims.get(&buyer).copied()
    }

    pub fn live_orders(&self) -> usize {
        self.order_slots.len()
    }

    /// The id and state of every live order, in no particular order, without copying the orders
    /// (a start-up scan over a million live orders stays small).
    pub fn order_states(&self) -> impl Iterator<Item = (OrderId, OrderState)> + '_ {
        self.order_slots.iter().map(|(&id, &slot)| (id, self.orders[slot as usize].state))
    }

    /// Every live order, by id.
    pub fn orders(&self) -> Vec<OrderView> {
        let mut ids: Vec<OrderId> = self.order_slots.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|id| self.order(id)).collect()
    }

    /// Checks every invariant over the whole state; panics naming the first one broken. Used by
    /// tests, the simulator and `surge journal replay`; too slow for the hot path.
    pub fn check_invariants(&self) {
        let mut reserved = vec![0u64; self.cells.len()];
        for &slot in self.order_slots.values() {
            let order = &self.orders[slot as usize];
            assert!(!order.state.is_terminal(), "terminal order {:?} still live", order.id);
            if order.state == OrderState::PendingPayment {
                for (line, &cell) in order.lines.as_slice().iter().zip(&order.cells) {
                    assert_eq!(Some(cell), self.find_cell(line.sku, line.warehouse), "stale cell");
                    reserved[cell as usize] += u64::from(line.quantity);
                }
            }
        }
        for (index, cell) in self.cells.iter().enumerate() {
            assert!(cell.level.reserved <= cell.level.on_hand, "available < 0 in cell {index}");
            assert_eq!(
                u64::from(cell.level.reserved),
                reserved[index],
                "reserved of cell {index} differs from its pending orders"
            );
        }
        assert!(self.buyer_units.values().all(|&units| units > 0), "empty buyer counter kept");
        for (&buyer, &(_, order)) in &self.cart_claims {
            let slot = self.order_slots.get(&order).expect("a cart claim names a live order");
            let claimant = &self.orders[*slot as usize];
            assert_eq!(
                claimant.buyer, buyer,
                "cart claim of {buyer:?} names another buyer's order"
            );
            assert!(claimant.claims_cart, "order {order:?} holds a claim it does not know of");
        }
        let claimants =
            self.order_slots.values().filter(|&&slot| self.orders[slot as usize].claims_cart);
        assert_eq!(
            claimants.count(),
            self.cart_claims.len(),
            "an order claims a cart it does not hold"
        );
        assert_eq!(self.order_slots.len() + self.free_order_slots.len(), self.orders.len());
    }

    // ----- Snapshots and digest -----

    /// Writes the whole state in its canonical form (see `docs/formats.md`, "Engine snapshot"):
    /// everything sorted, so two engines with the same logical state write the same bytes, whatever
    /// the history of their maps and free lists.
    pub fn encode_snapshot(&self, out: &mut Vec<u8>) {
        out.clear();
        put_u32(out, SNAPSHOT_VERSION);
        put_u64(out, self.last_sequence.0);
        put_u64(out, self.last_at.0);

        let skus: Vec<u32> = (0..self.limits.skus_max)
            .filter(|&sku| {
                self.skus[sku as usize].first_cell != NO_CELL
                    || self.skus[sku as usize].buyer_limit != NO_BUYER_LIMIT
            })
            .collect();
        put_u32(out, u32::try_from(skus.len()).expect("skus fit u32"));
        for sku in skus {
            put_u32(out, sku);
            put_u32(out, self.skus[sku as usize].buyer_limit);
            let cells = self.stock_by_warehouse(SkuId(sku));
            put_u16(out, u16::try_from(cells.len()).expect("warehouses fit u16"));
            for (warehouse, level) in cells {
                put_u16(out, warehouse.0);
                put_u32(out, level.on_hand);
                put_u32(out, level.reserved);
                put_u64(out, level.sold);
            }
        }

        let mut ids: Vec<(OrderId, u32)> =
            self.order_slots.iter().map(|(id, slot)| (*id, *slot)).collect();
        ids.sort_unstable();
        put_u32(out, u32::try_from(ids.len()).expect("orders fit u32"));
        for (_, slot) in ids {
            let order = &self.orders[slot as usize];
            put_u64(out, order.id.0);
            put_u64(out, order.buyer.0);
            put_u64(out, order.expires_at.0);
            out.push(order_state_code(order.state));
            put_u16(out, order.counted.0);
            out.push(u8::try_from(order.lines.len()).expect("lines fit u8"));
            for line in order.lines.as_slice() {
                put_u32(out, line.sku.0);
                put_u16(out, line.warehouse.0);
                put_u32(out, line.quantity);
            }
        }

        let mut counters: Vec<((BuyerId, SkuId), u32)> =
            self.buyer_units.iter().map(|(key, units)| (*key, *units)).collect();
        counters.sort_unstable();
        put_u32(out, u32::try_from(counters.len()).expect("counters fit u32"));
        for ((buyer, sku), units) in counters {
            put_u64(out, buyer.0);
            put_u32(out, sku.0);
            put_u32(out, units);
        }

        let mut claims: Vec<(BuyerId, (CartVersion, OrderId))> =
            self.cart_claims.iter().map(|(buyer, claim)| (*buyer, *claim)).collect();
        claims.sort_unstable();
        put_u32(out, u32::try_from(claims.len()).expect("claims fit u32"));
        for (buyer, (version, order)) in claims {
            put_u64(out, buyer.0);
            put_u64(out, version.0);
            put_u64(out, order.0);
        }
    }

    /// Rebuilds an engine from [`Engine::encode_snapshot`] output, sized by `limits`.
    pub fn decode_snapshot(limits: Limits, bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut engine = Self::new(limits);
        let mut input = Reader::new(bytes);
        let version = input.u32()?;
        if !(SNAPSHOT_VERSION_FIRST..=SNAPSHOT_VERSION).contains(&version) {
            return Err(SnapshotError::Version(version));
        }
        engine.last_sequence = Sequence(input.u64()?);
        engine.last_at = Timestamp(input.u64()?);

        for _ in 0..input.u32()? {
            let sku = SkuId(input.u32()?);
            engine.check_sku(sku).map_err(|_| SnapshotError::Limits("sku id"))?;
            engine.skus[sku.0 as usize].buyer_limit = input.u32()?;
            for _ in 0..input.u16()? {
                let warehouse = WarehouseId(input.u16()?);
                engine
                    .check_warehouse(warehouse)
                    .map_err(|_| SnapshotError::Limits("warehouse"))?;
                let level = StockLevel {
                    on_hand: input.u32()?,
                    reserved: input.u32()?,
                    sold: input.u64()?,
                };
                if level.reserved > level.on_hand {
                    return Err(SnapshotError::Inconsistent("reserved above on_hand"));
                }
                let cell = engine
                    .add_cell(sku, warehouse)
                    .map_err(|_| SnapshotError::Limits("stock cells"))?;
                engine.cells[cell as usize].level = level;
            }
        }

        for _ in 0..input.u32()? {
            if engine.order_slots.len() >= limits.orders_max as usize {
                return Err(SnapshotError::Limits("orders"));
            }
            let id = OrderId(input.u64()?);
            let buyer = BuyerId(input.u64()?);
            let expires_at = Timestamp(input.u64()?);
            let state = order_state_from_code(input.u8()?)?;
            let counted = LineMask(input.u16()?);
            let mut lines = Lines::default();
            let mut cells = [0u32; LINES_PER_ORDER_MAX];
            let line_count = usize::from(input.u8()?);
            if line_count > LINES_PER_ORDER_MAX {
                return Err(SnapshotError::Inconsistent("order line count"));
            }
            for cell in cells.iter_mut().take(line_count) {
                let line = Line {
                    sku: SkuId(input.u32()?),
                    warehouse: WarehouseId(input.u16()?),
                    quantity: input.u32()?,
                };
                if engine.check_sku(line.sku).is_err() || !lines.push(line) {
                    return Err(SnapshotError::Inconsistent("order line"));
                }
                *cell = engine
                    .find_cell(line.sku, line.warehouse)
                    .ok_or(SnapshotError::Inconsistent("order line without stock cell"))?;
            }
            if state.is_terminal() || engine.order_slots.contains_key(&id) {
                return Err(SnapshotError::Inconsistent("order state"));
            }
            engine.insert_order(Order {
                id,
                buyer,
                expires_at,
                state,
                lines,
                cells,
                counted,
                claims_cart: false,
            });
            if state == OrderState::PendingPayment {
                engine.expiry.push(Reverse((expires_at, id)));
            }
        }

        for _ in 0..input.u32()? {
            if engine.buyer_units.len() >= limits.buyer_counters_max as usize {
                return Err(SnapshotError::Limits("buyer counters"));
            }
            let key = (BuyerId(input.u64()?), SkuId(input.u32()?));
            engine.buyer_units.insert(key, input.u32()?);
        }

        // Version 1 was written before cart claims existed: it has none.
        let claim_count = if version >= 2 { input.u32()? } else { 0 };
        if claim_count > limits.orders_max {
            return Err(SnapshotError::Limits("cart claims"));
        }
        let mut previous_buyer = None;
        for _ in 0..claim_count {
            let buyer = BuyerId(input.u64()?);
            let version = CartVersion(input.u64()?);
            let order = OrderId(input.u64()?);
            // Strictly ascending buyers, as written: also refuses two claims of one buyer.
            if previous_buyer.is_some_and(|previous| previous >= buyer) {
                return Err(SnapshotError::Inconsistent("cart claims out of order or repeated"));
            }
            previous_buyer = Some(buyer);
            let slot = *engine
                .order_slots
                .get(&order)
                .ok_or(SnapshotError::Inconsistent("cart claim of an order that is not live"))?;
            let claimant = &mut engine.orders[slot as usize];
            if claimant.buyer != buyer {
                return Err(SnapshotError::Inconsistent("cart claim of another buyer's order"));
            }
            claimant.claims_cart = true;
            engine.cart_claims.insert(buyer, (version, order));
        }
        if !input.is_empty() {
            return Err(SnapshotError::Inconsistent("trailing bytes"));
        }
        // What `check_invariants` asserts, refused here instead: a snapshot damaged behind a valid
        // checksum (or written by a broken engine) must not start an engine that breaks them.
        let mut reserved = vec![0u64; engine.cells.len()];
        for &slot in engine.order_slots.values() {
            let order = &engine.orders[slot as usize];
            if order.state == OrderState::PendingPayment {
                for (line, &cell) in order.lines.as_slice().iter().zip(&order.cells) {
                    reserved[cell as usize] += u64::from(line.quantity);
                }
            }
        }
        if engine
            .cells
            .iter()
            .zip(&reserved)
            .any(|(cell, &units)| u64::from(cell.level.reserved) != units)
        {
            return Err(SnapshotError::Inconsistent("reserved differs from the pending orders"));
        }
        if engine.buyer_units.values().any(|&units| units == 0) {
            return Err(SnapshotError::Inconsistent("empty buyer counter"));
        }
        Ok(engine)
    }

    /// A hash of the whole state in canonical form: equal digests mean equal states.
    pub fn digest(&self) -> u64 {
        let mut bytes = Vec::new();
        self.encode_snapshot(&mut bytes);
        fnv1a64(&bytes)
    }
}

/// Counters changed: say so, and say when the cell crossed between "none available" and "some".
#[inline]
fn announce_stock(
    sku: SkuId,
    warehouse: WarehouseId,
    before: StockLevel,
    after: StockLevel,
    events: &mut impl EventSink,
) {
    events.emit(Event::StockChanged { sku, warehouse, level: after });
    let was_in_stock = before.available() > 0;
    let is_in_stock = after.available() > 0;
    if was_in_stock != is_in_stock {
        events.emit(Event::StockAvailability { sku, warehouse, in_stock: is_in_stock });
    }
}

/// The version `encode_snapshot` writes: 2 added the cart claims.
const SNAPSHOT_VERSION: u32 = 2;
/// The oldest version `decode_snapshot` still reads.
const SNAPSHOT_VERSION_FIRST: u32 = 1;

/// The byte that stands for an order state in snapshots and command encodings.
pub fn order_state_code(state: OrderState) -> u8 {
    match state {
        OrderState::PendingPayment => 1,
        OrderState::Confirmed => 2,
        OrderState::Shipped => 3,
        OrderState::Delivered => 4,
        OrderState::PaymentFailed => 5,
        OrderState::Expired => 6,
        OrderState::Cancelled => 7,
    }
}

fn order_state_from_code(code: u8) -> Result<OrderState, SnapshotError> {
    Ok(match code {
        1 => OrderState::PendingPayment,
        2 => OrderState::Confirmed,
        3 => OrderState::Shipped,
        4 => OrderState::Delivered,
        5 => OrderState::PaymentFailed,
        6 => OrderState::Expired,
        7 => OrderState::Cancelled,
        _ => return Err(SnapshotError::Inconsistent("order state code")),
    })
}
