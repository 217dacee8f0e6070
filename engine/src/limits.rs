//! Every bound on the engine's memory, in one place.
//!
//! The engine allocates all of its containers when it starts, sized by [`Limits`], and never grows
//! them afterwards: reaching a limit is a business rejection ([`crate::Rejection::CapacityReached`]),
//! never an allocation. The two constants shape the fixed-size [`crate::Command`] encoding and
//! therefore cannot change without a new journal format version.

/// The most lines one order may hold. A reservation is all or nothing over its lines.
pub const LINES_PER_ORDER_MAX: usize = 16;

/// The most warehouses a reservation may name as candidates, nearest first.
pub const WAREHOUSE_CHOICES_MAX: usize = 8;

/// Capacities chosen at start. Memory is proportional to these numbers, not to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// SKU ids are dense: `0..skus_max`.
    pub skus_max: u32,
    /// Warehouse ids are dense: `0..warehouses_max`.
    pub warehouses_max: u16,
    /// Stock cells (one per SKU per warehouse that ever had stock set).
    pub stock_cells_max: u32,
    /// Live orders: pending payment, confirmed, shipped.
    pub orders_max: u32,
    /// Per-buyer counters kept for SKUs that have a per-buyer limit.
    pub buyer_counters_max: u32,
}

impl Limits {
    /// Sized for a production node: a million SKUs and a million live orders fit in well under
    /// 1 GiB (see BENCHMARKS.md for the measured resident size).
    pub const PRODUCTION: Limits = Limits {
        skus_max: 1 << 20,
        warehouses_max: 256,
        stock_cells_max: 4 << 20,
        orders_max: 1 << 20,
        buyer_counters_max: 1 << 20,
    };

    /// Small enough that tests can reach every limit.
    pub const TEST: Limits = Limits {
        skus_max: 64,
        warehouses_max: 8,
        stock_cells_max: 256,
        orders_max: 256,
        buyer_counters_max: 256,
    };
}
