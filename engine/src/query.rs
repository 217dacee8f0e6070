//! Reads of the engine's state, as a closed vocabulary like the commands: a [`Query`] says what is
//! asked and brings the room for the answer, and [`Engine::answer`] fills it in.
//!
//! The engine thread answers queries between commands, so answering must not allocate there any
//! more than applying does. The caller therefore allocates every buffer when it builds the query
//! ([`Query::progress`], [`Query::orders`], [`Query::stock`]), with the capacity the answer may
//! need; the engine clears and fills those buffers and never grows them (debug builds assert that
//! their capacities are unchanged). A query holds no reference into the engine, so it travels to
//! the engine thread and back as a plain value.
//!
//! An answer that may not fit its buffer (the stock cells of many SKUs) is answered in parts:
//! see [`SkuStock`].

use crate::command::{OrderId, OrderState, Sequence, SkuId, StockLevel, Timestamp, WarehouseId};
use crate::limits::Limits;
#[cfg(doc)]
use crate::state::Engine;

/// A question about the engine's state, with the room for its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// How far the engine got, and its limits. `None` until answered.
    Progress(Option<Progress>),
    /// The state of each of a list of orders.
    Orders(OrderStates),
    /// The per-buyer limit and the stock cells of each of a list of SKUs.
    Stock(SkuStock),
}

impl Query {
    /// Asks for the engine's [`Progress`].
    pub fn progress() -> Query {
        Query::Progress(None)
    }

    /// Asks for the state of each order in `ids`; the answer has room for one state per id.
    pub fn orders(ids: Vec<OrderId>) -> Query {
        let states = Vec::with_capacity(ids.len());
        Query::Orders(OrderStates { ids, states })
    }

    /// Asks for the per-buyer limit and every stock cell of each SKU in `skus`, with room for
    /// `cells_capacity` cells per answer. The engine answers as many SKUs, whole and from the
    /// first, as fit; ask again after [`SkuStock::advance`] for the rest:
    ///
    /// ```
    /// use surge_engine::{Engine, Limits, Query, SkuId};
    ///
    /// let engine = Engine::new(Limits::TEST);
    /// let capacity = usize::from(Limits::TEST.warehouses_max); // one SKU's cells always fit
    /// let mut query = Query::stock((0..40).map(SkuId).collect(), capacity);
    /// let mut available = Vec::new();
    /// loop {
    ///     engine.answer(&mut query); // in the server: a round trip to the engine thread
    ///     let Query::Stock(stock) = &mut query else { unreachable!() };
    ///     for (sku, _per_buyer, cells) in stock.per_sku() {
    ///         available.push((sku, cells.iter().map(|cell| cell.level.available()).sum::<u32>()));
    ///     }
    ///     if !stock.advance() {
    ///         break;
    ///     }
    /// }
    /// assert_eq!(available.len(), 40);
    /// ```
    ///
    /// A SKU has at most one cell per warehouse, so a `cells_capacity` of at least
    /// [`Limits::warehouses_max`] answers at least one SKU each time. Between two parts other
    /// commands may run: each part is consistent in itself, not with the others.
    pub fn stock(skus: Vec<SkuId>, cells_capacity: usize) -> Query {
        Query::Stock(SkuStock {
            buyer_limits: Vec::with_capacity(skus.len()),
            cells: Vec::with_capacity(cells_capacity),
            skus,
            first: 0,
        })
    }

    /// The capacity of every buffer, which answering must leave as it found it.
    pub(crate) fn capacities(&self) -> [usize; 3] {
        match self {
            Query::Progress(_) => [0; 3],
            Query::Orders(orders) => [orders.ids.capacity(), orders.states.capacity(), 0],
            Query::Stock(stock) => {
                [stock.skus.capacity(), stock.buyer_limits.capacity(), stock.cells.capacity()]
            }
        }
    }
}

/// How far the engine got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The last command applied (0 before any): everything submitted before the query is in it.
    pub last_sequence: Sequence,
    /// The stamp of that command.
    pub last_at: Timestamp,
    /// Orders pending payment, confirmed or shipped.
    pub live_orders: u32,
    pub limits: Limits,
}

/// The answer to [`Query::orders`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderStates {
    pub(crate) ids: Vec<OrderId>,
    pub(crate) states: Vec<Option<OrderState>>,
}

impl OrderStates {
    /// The orders asked about, as given.
    pub fn ids(&self) -> &[OrderId] {
        &self.ids
    }

    /// One state per id, in the order of [`OrderStates::ids`] (empty until answered): `None` for
    /// an order that is not live, because it was never reserved or already left engine memory.
    pub fn states(&self) -> &[Option<OrderState>] {
        &self.states
    }

    /// Each id with its state.
    pub fn iter(&self) -> impl Iterator<Item = (OrderId, Option<OrderState>)> + '_ {
        self.ids.iter().copied().zip(self.states.iter().copied())
    }
}

/// One stock cell: the counters of a SKU in a warehouse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StockCell {
    pub sku: SkuId,
    pub warehouse: WarehouseId,
    pub level: StockLevel,
}

/// The answer to [`Query::stock`], one part at a time.
///
/// Each answer covers the next SKUs of the list whose cells fit the cell buffer whole, at least
/// the SKUs without cells: [`SkuStock::skus`] are those SKUs, with one entry each in
/// [`SkuStock::buyer_limits`], and [`SkuStock::cells`] holds their cells, SKU by SKU in the list's
/// order and, within a SKU, by ascending warehouse. [`SkuStock::advance`] moves past them, so
/// that the next answer covers the SKUs after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkuStock {
    pub(crate) skus: Vec<SkuId>,
    /// Index in `skus` of the first SKU the next answer covers.
    pub(crate) first: usize,
    pub(crate) buyer_limits: Vec<Option<u32>>,
    pub(crate) cells: Vec<StockCell>,
}

impl SkuStock {
    /// The SKUs the last answer covered (none before the first answer).
    pub fn skus(&self) -> &[SkuId] {
        &self.skus[self.first..self.first + self.buyer_limits.len()]
    }

    /// The per-buyer limit of each SKU of [`SkuStock::skus`], `None` for no limit.
    pub fn buyer_limits(&self) -> &[Option<u32>] {
        &self.buyer_limits
    }

    /// The cells of those SKUs, by SKU in the list's order, then by warehouse. A SKU whose stock
    /// was never set, or whose id is beyond the engine's limits, has none.
    pub fn cells(&self) -> &[StockCell] {
        &self.cells
    }

    /// Each SKU the last answer covered, with its limit and its cells.
    pub fn per_sku(&self) -> impl Iterator<Item = (SkuId, Option<u32>, &[StockCell])> + '_ {
        let mut rest = self.cells.as_slice();
        self.skus().iter().zip(&self.buyer_limits).map(move |(&sku, &per_buyer)| {
            let count = rest.iter().take_while(|cell| cell.sku == sku).count();
            let (cells, after) = rest.split_at(count);
            rest = after;
            (sku, per_buyer, cells)
        })
    }

    /// Prepares the query for the SKUs the last answer left out, and says whether there are any:
    /// `false` means every SKU has been answered.
    ///
    /// # Panics
    /// When the last answer covered no SKU although some remained: the next SKU has more cells
    /// than the buffer holds, and asking again would never end. A cell buffer of
    /// [`Limits::warehouses_max`] cells cannot run into this.
    pub fn advance(&mut self) -> bool {
        let covered = self.buyer_limits.len();
        assert!(
            covered > 0 || self.first == self.skus.len(),
            "stock query: SKU {:?} has more cells than the buffer's {} (ask with at least warehouses_max)",
            self.skus[self.first],
            self.cells.capacity()
        );
        self.first += covered;
        self.buyer_limits.clear();
        self.cells.clear();
        self.first < self.skus.len()
    }
}
