//! The closed vocabulary of the engine: what goes in ([`Command`]), what comes back for each command
//! ([`Outcome`]), and what the engine tells the rest of the system ([`Event`]).
//!
//! Every type here is fixed-size and `Copy`, so a command travels through the ring, the journal and
//! the engine without a heap allocation. Identifiers are dense integers: the gateway owns the mapping
//! from a seller's SKU string to a [`SkuId`] and from a warehouse name to a [`WarehouseId`].

use crate::limits::{LINES_PER_ORDER_MAX, WAREHOUSE_CHOICES_MAX};

/// A dense SKU index, `0..Limits::skus_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SkuId(pub u32);

/// A dense warehouse index, `0..Limits::warehouses_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WarehouseId(pub u16);

/// An order is named by the sequence number of the command that reserved it, so ids are unique and
/// assigned without coordination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct OrderId(pub u64);

/// The buyer an order belongs to, as the gateway numbers users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BuyerId(pub u64);

/// A version of one buyer's cart, as the cart service numbers them. The versions of one buyer's
/// cart only grow, so a checkout of a version at or below one already checked out is the same cart
/// again (a retried or duplicated request) or an older state of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CartVersion(pub u64);

/// Nanoseconds since the Unix epoch, as stamped by the sequencer. The engine never reads a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

/// A sequence number given by the sequencer; the journal holds commands in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sequence(pub u64);

/// A fixed-capacity list stored inline, so commands stay `Copy` and allocation-free.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bounded<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: u8,
}

impl<T: Copy + Default, const N: usize> Default for Bounded<T, N> {
    fn default() -> Self {
        Self { items: [T::default(); N], len: 0 }
    }
}

impl<T: Copy + Default, const N: usize> Bounded<T, N> {
    /// Builds a list from a slice; `None` when the slice is longer than the capacity `N`.
    pub fn from_slice(items: &[T]) -> Option<Self> {
        if items.len() > N {
            return None;
        }
        let mut list = Self::default();
        list.items[..items.len()].copy_from_slice(items);
        list.len = u8::try_from(items.len()).ok()?;
        Some(list)
    }

    /// Appends an item; `false` when the list is full.
    pub fn push(&mut self, item: T) -> bool {
        let index = usize::from(self.len);
        if index == N {
            return false;
        }
        self.items[index] = item;
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[T] {
        &self.items[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Copy + Default + std::fmt::Debug, const N: usize> std::fmt::Debug for Bounded<T, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// One requested line of a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LineRequest {
    pub sku: SkuId,
    pub quantity: u32,
}

/// The lines of a reservation request.
pub type LineRequests = Bounded<LineRequest, LINES_PER_ORDER_MAX>;

/// The warehouses a reservation may take units from, nearest first.
pub type WarehouseChoices = Bounded<WarehouseId, WAREHOUSE_CHOICES_MAX>;

/// A reserved line: where its units were taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Line {
    pub sku: SkuId,
    pub warehouse: WarehouseId,
    pub quantity: u32,
}

/// The lines of a live order.
pub type Lines = Bounded<Line, LINES_PER_ORDER_MAX>;

/// One bit per line of a request, set for the lines a rejection is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LineMask(pub u16);

impl LineMask {
    pub fn set(&mut self, index: usize) {
        self.0 |= 1 << index;
    }

    pub fn contains(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// When a reservation's deadline falls. The engine turns it into an absolute [`Timestamp`] when it
/// applies the `Reserve`, and answers and announces only that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// At this instant, as the sender computed it (journals written before `After` existed hold
    /// only these).
    At(Timestamp),
    /// `ttl_ns` nanoseconds after the stamp the sequencer gives the `Reserve`. The deadline then
    /// comes from the same clock as every other decision, never from the sender's clock, and a
    /// command that waited in a queue still gets its whole time to live.
    After { ttl_ns: u64 },
}

impl Expiry {
    /// The deadline of a reservation stamped `at`: `None` when it overflows or is not after `at`,
    /// which the engine refuses as [`Rejection::Invalid`].
    pub fn deadline(self, at: Timestamp) -> Option<Timestamp> {
        let deadline = match self {
            Self::At(deadline) => deadline,
            Self::After { ttl_ns } => Timestamp(at.0.checked_add(ttl_ns)?),
        };
        (deadline > at).then_some(deadline)
    }
}

/// Why a pending reservation was released before payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseReason {
    PaymentFailed,
    Cancelled,
}

/// Everything the engine can be asked to do. The set is closed: adding a variant is a journal format
/// change (see `docs/formats.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sets the units on hand of a SKU in a warehouse (a stock count, not a delta).
    SetStock {
        sku: SkuId,
        warehouse: WarehouseId,
        on_hand: u32,
    },
    /// Sets or lifts (`None`) the most units of a SKU one buyer may hold in live and completed orders.
    SetBuyerLimit {
        sku: SkuId,
        per_buyer: Option<u32>,
    },
    /// Reserves every line or none. Each line is taken whole from the first warehouse in
    /// `warehouses` that has the quantity available. The order id is the command's sequence; the
    /// order expires at the deadline `expiry` gives for the command's stamp.
    ///
    /// `cart: Some(version)` is a checkout of that version of the buyer's cart: it is refused with
    /// [`Rejection::CartAlreadyCheckedOut`] while a live order of the buyer claims that version or
    /// a newer one, and once reserved the order claims it (until it leaves engine memory). `None`
    /// (buy now) neither checks nor claims.
    Reserve {
        buyer: BuyerId,
        expiry: Expiry,
        cart: Option<CartVersion>,
        lines: LineRequests,
        warehouses: WarehouseChoices,
    },
    /// Payment succeeded: reserved units are sold.
    Commit {
        order: OrderId,
    },
    /// Payment failed, or the buyer cancelled before paying: reserved units become available.
    Release {
        order: OrderId,
        reason: ReleaseReason,
    },
    /// Expires every pending order whose deadline is at or before the command's timestamp.
    Expire,
    /// Cancels a confirmed order that has not shipped: sold units return to `on_hand`.
    Cancel {
        order: OrderId,
    },
    Ship {
        order: OrderId,
    },
    Deliver {
        order: OrderId,
    },
}

/// The state of an order while the engine holds it, and the final state it leaves with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderState {
    PendingPayment,
    Confirmed,
    Shipped,
    Delivered,
    PaymentFailed,
    Expired,
    Cancelled,
}

impl OrderState {
    /// A terminal order has been handed on and is no longer in engine memory.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Delivered | Self::PaymentFailed | Self::Expired | Self::Cancelled)
    }
}

/// Which named limit a rejected command ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    Skus,
    Warehouses,
    StockCells,
    Orders,
    BuyerCounters,
}

/// A business refusal. It is journaled and replayed like any other outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The marked `lines` could not be served whole from any candidate warehouse. `elsewhere`, a
    /// subset of `lines`, marks those whose SKU has the whole quantity available in some warehouse
    /// that is not a candidate: when it equals `lines`, the order is not deliverable rather than
    /// out of stock, and the caller learns so from this one answer.
    OutOfStock { lines: LineMask, elsewhere: LineMask },
    /// The marked lines would take the buyer over the SKU's per-buyer limit.
    PurchaseLimitExceeded { lines: LineMask },
    /// Setting `on_hand` below the units reserved in that warehouse.
    BelowReserved { reserved: u32 },
    /// The order is not live: never existed, or already left engine memory.
    UnknownOrder,
    /// The order is live but the command does not apply in its state (ship before payment, ...).
    WrongState { state: OrderState },
    /// The pending reservation already resolved (commit of a confirmed order, release twice, ...).
    AlreadyResolved { state: OrderState },
    /// The reservation's deadline passed before the command arrived; the order expired now.
    Expired,
    /// A live order of the buyer already claims this cart version or a newer one: the checkout is
    /// a duplicate (or of an older cart) and changed nothing.
    CartAlreadyCheckedOut,
    /// A request the gateway should never send: empty lines, zero quantity, no warehouses,
    /// the same SKU twice, an id outside the limits, a deadline not after the command's stamp, an
    /// arithmetic overflow.
    Invalid,
    /// A named limit is reached; the command changed nothing.
    CapacityReached { capacity: Capacity },
}

/// Per-cell stock counters, as returned after a `SetStock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StockLevel {
    pub on_hand: u32,
    pub reserved: u32,
    pub sold: u64,
}

impl StockLevel {
    pub fn available(&self) -> u32 {
        self.on_hand - self.reserved
    }
}

/// The answer to one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    StockSet(StockLevel),
    BuyerLimitSet,
    Reserved {
        order: OrderId,
        expires_at: Timestamp,
        lines: Lines,
    },
    /// The order reached the named state.
    Transitioned {
        order: OrderId,
        state: OrderState,
    },
    ExpiredOrders {
        count: u32,
    },
    Rejected(Rejection),
}

/// What the engine tells the rest of the system. Emitted only after the command is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    OrderReserved {
        order: OrderId,
        buyer: BuyerId,
        expires_at: Timestamp,
        lines: Lines,
    },
    /// An order moved to `state`. For terminal states this is the hand-off: the engine has
    /// forgotten the order, and the order store owns it from here.
    OrderTransitioned {
        order: OrderId,
        buyer: BuyerId,
        state: OrderState,
        lines: Lines,
    },
    /// The counters of one stock cell after a change.
    StockChanged {
        sku: SkuId,
        warehouse: WarehouseId,
        level: StockLevel,
    },
    /// `available` of a cell went from zero to positive (`in_stock`) or back to zero.
    StockAvailability {
        sku: SkuId,
        warehouse: WarehouseId,
        in_stock: bool,
    },
}
