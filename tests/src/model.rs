//! A naive reference model of the engine's business rules, for property tests to compare against.
//!
//! It is written from the rules, not from the engine: plain ordered maps, every decision recomputed
//! from scratch by scanning them, no slabs, no free lists, no expiry heap, no capacity planning.
//! It is slow on purpose and short enough to check by reading. Events are not modelled; the state
//! the events describe (stock counters, live orders, per-buyer counters) is.

use std::collections::{BTreeMap, BTreeSet};

use surge_engine::{
    BuyerId, Capacity, CartVersion, Command, Engine, Expiry, Limits, Line, LineMask, LineRequests,
    Lines, OrderId, OrderState, OrderView, Outcome, Progress, Query, Rejection, ReleaseReason,
    Sequence, SkuId, StockLevel, Timestamp, WarehouseChoices, WarehouseId,
};

/// A live order as the model keeps it.
#[derive(Clone, Debug)]
struct ModelOrder {
    buyer: BuyerId,
    expires_at: Timestamp,
    state: OrderState,
    lines: Vec<Line>,
    /// Per line: whether its SKU had a per-buyer limit when the order was reserved, so its units
    /// were added to the buyer's counter and must come off again if the order does not complete.
    counted: Vec<bool>,
}

/// The reference model. See the module documentation.
#[derive(Clone, Debug)]
pub struct Model {
    limits: Limits,
    last_sequence: Option<Sequence>,
    last_at: Timestamp,
    stock: BTreeMap<(SkuId, WarehouseId), StockLevel>,
    buyer_limits: BTreeMap<SkuId, u32>,
    /// Units per buyer per SKU counted towards a limit. Zero means "no counter": only positive
    /// entries use up `buyer_counters_max`.
    buyer_units: BTreeMap<(BuyerId, SkuId), u32>,
    orders: BTreeMap<OrderId, ModelOrder>,
    /// Per buyer, the newest cart version checked out by a live order, and that order.
    cart_claims: BTreeMap<BuyerId, (CartVersion, OrderId)>,
    /// Every buyer that ever asked for a reservation, so `check_against` can compare all counters.
    buyers_seen: BTreeSet<BuyerId>,
}

impl Model {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            last_sequence: None,
            last_at: Timestamp(0),
            stock: BTreeMap::new(),
            buyer_limits: BTreeMap::new(),
            buyer_units: BTreeMap::new(),
            orders: BTreeMap::new(),
            cart_claims: BTreeMap::new(),
            buyers_seen: BTreeSet::new(),
        }
    }

    /// The outcome the engine must give for `command`, applied at `sequence` and `at`.
    pub fn apply(&mut self, sequence: Sequence, at: Timestamp, command: &Command) -> Outcome {
        assert!(self.last_sequence.is_none_or(|last| sequence > last), "sequence went backwards");
        assert!(at >= self.last_at, "time went backwards");
        self.last_sequence = Some(sequence);
        self.last_at = at;
        let result = match *command {
            Command::SetStock { sku, warehouse, on_hand } => {
                self.set_stock(sku, warehouse, on_hand)
            }
            Command::SetBuyerLimit { sku, per_buyer } => self.set_buyer_limit(sku, per_buyer),
            Command::Reserve { buyer, expiry, cart, lines, warehouses } => {
                self.reserve(OrderId(sequence.0), at, buyer, expiry, cart, &lines, &warehouses)
            }
            Command::Commit { order } => self.commit(order, at),
            Command::Release { order, reason } => self.release(order, at, reason),
            Command::Expire => Ok(self.expire(at)),
            Command::Cancel { order } => self.cancel(order),
            Command::Ship { order } => self.ship(order),
            Command::Deliver { order } => self.deliver(order),
        };
        match result {
            Ok(outcome) => outcome,
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }

    fn sku_is_valid(&self, sku: SkuId) -> bool {
        sku.0 < self.limits.skus_max
    }

    fn warehouse_is_valid(&self, warehouse: WarehouseId) -> bool {
        warehouse.0 < self.limits.warehouses_max
    }

    fn set_stock(
        &mut self,
        sku: SkuId,
        warehouse: WarehouseId,
        on_hand: u32,
    ) -> Result<Outcome, Rejection> {
        if !self.sku_is_valid(sku) || !self.warehouse_is_valid(warehouse) {
            return Err(Rejection::Invalid);
        }
        let key = (sku, warehouse);
        if !self.stock.contains_key(&key)
            && self.stock.len() >= self.limits.stock_cells_max as usize
        {
            return Err(Rejection::CapacityReached { capacity: Capacity::StockCells });
        }
        // A new cell has nothing reserved, so once the cell exists the count is refused only for an
        // old one.
        let level = self.stock.entry(key).or_default();
        if on_hand < level.reserved {
            return Err(Rejection::BelowReserved { reserved: level.reserved });
        }
        level.on_hand = on_hand;
        Ok(Outcome::StockSet(*level))
    }

    fn set_buyer_limit(
        &mut self,
        sku: SkuId,
        per_buyer: Option<u32>,
    ) -> Result<Outcome, Rejection> {
        // Beyond the written rules: the engine stores "no limit" as u32::MAX (in memory and in
        // snapshots), so that value cannot also be a limit; it is refused as out of range.
        if !self.sku_is_valid(sku) || per_buyer == Some(u32::MAX) {
            return Err(Rejection::Invalid);
        }
        match per_buyer {
            Some(limit) => self.buyer_limits.insert(sku, limit),
            None => self.buyer_limits.remove(&sku),
        };
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
    ) -> Result<Outcome, Rejection> {
        self.buyers_seen.insert(buyer);
        let requests = requests.as_slice();
        let warehouses = warehouses.as_slice();

        // The deadline as sent, or the time to live after the command's stamp; in u128, where
        // nothing overflows, so a deadline past the end of u64 time is simply out of range.
        let deadline = match expiry {
            Expiry::At(expires_at) => u128::from(expires_at.0),
            Expiry::After { ttl_ns } => u128::from(at.0) + u128::from(ttl_ns),
        };
        let skus: BTreeSet<SkuId> = requests.iter().map(|request| request.sku).collect();
        let invalid = requests.is_empty()
            || warehouses.is_empty()
            || deadline <= u128::from(at.0)
            || deadline > u128::from(u64::MAX)
            || skus.len() != requests.len()
            || requests.iter().any(|request| request.quantity == 0)
            || requests.iter().any(|request| !self.sku_is_valid(request.sku))
            || warehouses.iter().any(|&warehouse| !self.warehouse_is_valid(warehouse));
        if invalid {
            return Err(Rejection::Invalid);
        }
        let expires_at = Timestamp(u64::try_from(deadline).expect("checked above"));

        // A cart is checked out at most once: while a live order claims this version or a newer
        // one, the checkout is refused, before anything that could still change (capacity) and
        // before anything it could learn from (limits, stock).
        if let (Some(version), Some(&(claimed, _))) = (cart, self.cart_claims.get(&buyer)) {
            if claimed >= version {
                return Err(Rejection::CartAlreadyCheckedOut);
            }
        }

        if self.orders.len() >= self.limits.orders_max as usize {
            return Err(Rejection::CapacityReached { capacity: Capacity::Orders });
        }

        let mut over_limit = LineMask::default();
        for (index, request) in requests.iter().enumerate() {
            if let Some(&limit) = self.buyer_limits.get(&request.sku) {
                let wanted =
                    u64::from(self.units_of(buyer, request.sku)) + u64::from(request.quantity);
                if wanted > u64::from(limit) {
                    over_limit.set(index);
                }
            }
        }
        if !over_limit.is_empty() {
            return Err(Rejection::PurchaseLimitExceeded { lines: over_limit });
        }

        let counters_now = self.buyer_units.values().filter(|&&units| units > 0).count();
        let counters_new = requests
            .iter()
            .filter(|request| self.buyer_limits.contains_key(&request.sku))
            .filter(|request| self.units_of(buyer, request.sku) == 0)
            .count();
        if counters_now + counters_new > self.limits.buyer_counters_max as usize {
            return Err(Rejection::CapacityReached { capacity: Capacity::BuyerCounters });
        }

        // Lines name distinct SKUs (checked above), so they compete for distinct cells and each can
        // pick its warehouse without regard to the others.
        let mut chosen = Vec::new();
        let mut out_of_stock = LineMask::default();
        for (index, request) in requests.iter().enumerate() {
            let first_with_enough = warehouses.iter().copied().find(|&warehouse| {
                self.stock
                    .get(&(request.sku, warehouse))
                    .is_some_and(|level| level.on_hand - level.reserved >= request.quantity)
            });
            match first_with_enough {
                Some(warehouse) => {
                    chosen.push(Line { sku: request.sku, warehouse, quantity: request.quantity });
                }
                None => out_of_stock.set(index),
            }
        }
        if !out_of_stock.is_empty() {
            // Refused lines that some warehouse outside the candidates could serve whole.
            let mut elsewhere = LineMask::default();
            for (index, request) in requests.iter().enumerate() {
                let served_elsewhere = self.stock.iter().any(|(&(sku, warehouse), level)| {
                    sku == request.sku
                        && !warehouses.contains(&warehouse)
                        && level.on_hand - level.reserved >= request.quantity
                });
                if out_of_stock.contains(index) && served_elsewhere {
                    elsewhere.set(index);
                }
            }
            return Err(Rejection::OutOfStock { lines: out_of_stock, elsewhere });
        }

        let mut counted = Vec::new();
        for line in &chosen {
            let level = self.stock.get_mut(&(line.sku, line.warehouse)).expect("chosen cell");
            level.reserved += line.quantity;
            let has_limit = self.buyer_limits.contains_key(&line.sku);
            if has_limit {
                *self.buyer_units.entry((buyer, line.sku)).or_insert(0) += line.quantity;
            }
            counted.push(has_limit);
        }
        let order = ModelOrder {
            buyer,
            expires_at,
            state: OrderState::PendingPayment,
            lines: chosen,
            counted,
        };
        let lines = lines_of(&order);
        self.orders.insert(id, order);
        if let Some(version) = cart {
            self.cart_claims.insert(buyer, (version, id));
        }
        Ok(Outcome::Reserved { order: id, expires_at, lines })
    }

    /// Looks up a pending order for `Commit` or `Release`, expiring it if its deadline has passed.
    fn pending(&mut self, id: OrderId, at: Timestamp) -> Result<(), Rejection> {
        let order = self.orders.get(&id).ok_or(Rejection::UnknownOrder)?;
        if order.state != OrderState::PendingPayment {
            return Err(Rejection::AlreadyResolved { state: order.state });
        }
        if order.expires_at <= at {
            self.unreserve_and_forget(id);
            return Err(Rejection::Expired);
        }
        Ok(())
    }

    fn commit(&mut self, id: OrderId, at: Timestamp) -> Result<Outcome, Rejection> {
        self.pending(id, at)?;
        let order = self.orders.get_mut(&id).expect("pending order");
        order.state = OrderState::Confirmed;
        for line in &order.lines {
            let level = self.stock.get_mut(&(line.sku, line.warehouse)).expect("line cell");
            level.on_hand -= line.quantity;
            level.reserved -= line.quantity;
            level.sold += u64::from(line.quantity);
        }
        Ok(Outcome::Transitioned { order: id, state: OrderState::Confirmed })
    }

    fn release(
        &mut self,
        id: OrderId,
        at: Timestamp,
        reason: ReleaseReason,
    ) -> Result<Outcome, Rejection> {
        self.pending(id, at)?;
        self.unreserve_and_forget(id);
        let state = match reason {
            ReleaseReason::PaymentFailed => OrderState::PaymentFailed,
            ReleaseReason::Cancelled => OrderState::Cancelled,
        };
        Ok(Outcome::Transitioned { order: id, state })
    }

    fn expire(&mut self, at: Timestamp) -> Outcome {
        let due: Vec<OrderId> = self
            .orders
            .iter()
            .filter(|(_, order)| order.state == OrderState::PendingPayment)
            .filter(|(_, order)| order.expires_at <= at)
            .map(|(id, _)| *id)
            .collect();
        for &id in &due {
            self.unreserve_and_forget(id);
        }
        Outcome::ExpiredOrders { count: u32::try_from(due.len()).expect("few orders") }
    }

    fn cancel(&mut self, id: OrderId) -> Result<Outcome, Rejection> {
        let order = self.orders.get(&id).ok_or(Rejection::UnknownOrder)?;
        if order.state != OrderState::Confirmed {
            return Err(Rejection::WrongState { state: order.state });
        }
        // The units go back on the shelf. A stock count may have raised `on_hand` since the sale so
        // far that they no longer fit in a u32: an arithmetic overflow, refused as `Invalid`.
        for line in &order.lines {
            let level = self.stock[&(line.sku, line.warehouse)];
            if level.on_hand.checked_add(line.quantity).is_none() {
                return Err(Rejection::Invalid);
            }
        }
        let order = self.forget(id);
        for line in &order.lines {
            let level = self.stock.get_mut(&(line.sku, line.warehouse)).expect("line cell");
            level.on_hand += line.quantity;
            level.sold -= u64::from(line.quantity);
        }
        self.uncount(&order);
        Ok(Outcome::Transitioned { order: id, state: OrderState::Cancelled })
    }

    fn ship(&mut self, id: OrderId) -> Result<Outcome, Rejection> {
        let order = self.orders.get_mut(&id).ok_or(Rejection::UnknownOrder)?;
        if order.state != OrderState::Confirmed {
            return Err(Rejection::WrongState { state: order.state });
        }
        order.state = OrderState::Shipped;
        Ok(Outcome::Transitioned { order: id, state: OrderState::Shipped })
    }

    fn deliver(&mut self, id: OrderId) -> Result<Outcome, Rejection> {
        let order = self.orders.get(&id).ok_or(Rejection::UnknownOrder)?;
        if order.state != OrderState::Shipped {
            return Err(Rejection::WrongState { state: order.state });
        }
        // Delivered units keep counting towards the buyer's limits: no `uncount`.
        self.forget(id);
        Ok(Outcome::Transitioned { order: id, state: OrderState::Delivered })
    }

    /// A pending order that will not be paid: its units become available again, its counted units
    /// come off the buyer's counters, and the model forgets it.
    fn unreserve_and_forget(&mut self, id: OrderId) {
        let order = self.forget(id);
        assert_eq!(order.state, OrderState::PendingPayment);
        for line in &order.lines {
            let level = self.stock.get_mut(&(line.sku, line.warehouse)).expect("line cell");
            level.reserved -= line.quantity;
        }
        self.uncount(&order);
    }

    /// An order leaves: the model drops it, and the cart claim that names it if there is one.
    fn forget(&mut self, id: OrderId) -> ModelOrder {
        let order = self.orders.remove(&id).expect("live order");
        if self.cart_claims.get(&order.buyer).is_some_and(|&(_, claimant)| claimant == id) {
            self.cart_claims.remove(&order.buyer);
        }
        order
    }

    fn uncount(&mut self, order: &ModelOrder) {
        for (line, &counted) in order.lines.iter().zip(&order.counted) {
            if counted {
                let units = self.buyer_units.get_mut(&(order.buyer, line.sku)).expect("counter");
                *units -= line.quantity;
            }
        }
    }

    fn units_of(&self, buyer: BuyerId, sku: SkuId) -> u32 {
        self.buyer_units.get(&(buyer, sku)).copied().unwrap_or(0)
    }

    // ----- Queries -----

    /// The counters of one cell, if stock was ever set there.
    pub fn stock(&self, sku: SkuId, warehouse: WarehouseId) -> Option<StockLevel> {
        self.stock.get(&(sku, warehouse)).copied()
    }

    /// Every cell, by SKU then warehouse.
    pub fn cells(&self) -> impl Iterator<Item = ((SkuId, WarehouseId), StockLevel)> + '_ {
        self.stock.iter().map(|(cell, level)| (*cell, *level))
    }

    /// Live orders (pending payment, confirmed, shipped), by id.
    pub fn live_order_ids(&self) -> Vec<OrderId> {
        self.orders.keys().copied().collect()
    }

    /// The state of a live order.
    pub fn order_state(&self, id: OrderId) -> Option<OrderState> {
        self.orders.get(&id).map(|order| order.state)
    }

    /// Units of `sku` the buyer has counted towards the SKU's per-buyer limit.
    pub fn buyer_units(&self, buyer: BuyerId, sku: SkuId) -> u32 {
        self.units_of(buyer, sku)
    }

    pub fn buyer_limit(&self, sku: SkuId) -> Option<u32> {
        self.buyer_limits.get(&sku).copied()
    }

    /// The buyer's cart claim: the newest version a live order checked out, and that order.
    pub fn cart_claim(&self, buyer: BuyerId) -> Option<(CartVersion, OrderId)> {
        self.cart_claims.get(&buyer).copied()
    }

    /// Asserts that everything the engine lets an observer see equals the model: every stock cell
    /// (and no others), every live order, every SKU's limit, and every counter and cart claim of
    /// every buyer seen.
    pub fn check_against(&self, engine: &Engine) {
        for sku in (0..self.limits.skus_max).map(SkuId) {
            let expected: Vec<(WarehouseId, StockLevel)> = self
                .stock
                .range((sku, WarehouseId(0))..=(sku, WarehouseId(u16::MAX)))
                .map(|((_, warehouse), level)| (*warehouse, *level))
                .collect();
            assert_eq!(engine.stock_by_warehouse(sku), expected, "stock cells of {sku:?}");
            for &(warehouse, level) in &expected {
                assert_eq!(engine.stock(sku, warehouse), Some(level), "{sku:?} in {warehouse:?}");
            }
            assert_eq!(engine.buyer_limit(sku), self.buyer_limit(sku), "limit of {sku:?}");
            for &buyer in &self.buyers_seen {
                assert_eq!(
                    engine.buyer_units(buyer, sku),
                    self.buyer_units(buyer, sku),
                    "units of {sku:?} counted for {buyer:?}"
                );
            }
        }
        let expected: Vec<OrderView> = self
            .orders
            .iter()
            .map(|(&id, order)| OrderView {
                id,
                buyer: order.buyer,
                expires_at: order.expires_at,
                state: order.state,
                lines: lines_of(order),
            })
            .collect();
        assert_eq!(engine.orders(), expected, "live orders");
        for &buyer in &self.buyers_seen {
            assert_eq!(engine.cart_claim(buyer), self.cart_claim(buyer), "cart claim of {buyer:?}");
        }
        self.check_queries(engine);
        assert_eq!(engine.live_orders(), expected.len());
        let mut states: Vec<_> = engine.order_states().collect();
        states.sort_unstable_by_key(|&(id, _)| id);
        let expected_states: Vec<_> =
            expected.iter().map(|order| (order.id, order.state)).collect();
        assert_eq!(states, expected_states, "live order states");
    }
}

impl Model {
    /// The answers to every kind of `Query` equal the model's state.
    fn check_queries(&self, engine: &Engine) {
        let mut progress = Query::progress();
        engine.answer(&mut progress);
        let expected = Progress {
            last_sequence: self.last_sequence.unwrap_or_default(),
            last_at: self.last_at,
            live_orders: u32::try_from(self.orders.len()).expect("few orders"),
            limits: self.limits,
        };
        assert_eq!(progress, Query::Progress(Some(expected)), "progress");

        // Every live order, and the recent ids around them, which are mostly not live.
        let last = self.last_sequence.unwrap_or_default().0;
        let mut ids: Vec<OrderId> = (last.saturating_sub(64)..=last + 1).map(OrderId).collect();
        ids.extend(self.orders.keys());
        let mut orders = Query::orders(ids.clone());
        engine.answer(&mut orders);
        let Query::Orders(orders) = orders else { panic!("{orders:?}") };
        let expected: Vec<_> = ids.iter().map(|&id| (id, self.order_state(id))).collect();
        assert_eq!(orders.iter().collect::<Vec<_>>(), expected, "order states");

        // Every SKU and one beyond the limits, in descending order, with a cell buffer of the
        // smallest size that is sure to make progress, so most answers come in several parts.
        let skus: Vec<SkuId> = (0..=self.limits.skus_max).rev().map(SkuId).collect();
        let mut stock = Query::stock(skus.clone(), usize::from(self.limits.warehouses_max));
        let (mut limits, mut cells) = (Vec::new(), Vec::new());
        loop {
            engine.answer(&mut stock);
            let Query::Stock(part) = &mut stock else { panic!("{stock:?}") };
            limits.extend(part.skus().iter().copied().zip(part.buyer_limits().iter().copied()));
            cells.extend(part.cells().iter().map(|cell| ((cell.sku, cell.warehouse), cell.level)));
            if !part.advance() {
                break;
            }
        }
        let expected: Vec<_> = skus.iter().map(|&sku| (sku, self.buyer_limit(sku))).collect();
        assert_eq!(limits, expected, "buyer limits");
        let expected: Vec<_> = skus
            .iter()
            .flat_map(|&sku| self.cells().filter(move |((cell_sku, _), _)| *cell_sku == sku))
            .collect();
        assert_eq!(cells, expected, "stock cells by SKU as asked, then by warehouse");
    }
}

fn lines_of(order: &ModelOrder) -> Lines {
    Lines::from_slice(&order.lines).expect("a request never has more lines than an order")
}
