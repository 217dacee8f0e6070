//! The projection's store in memory, ordered maps only: for the simulator and tests, which compare
//! a store that crashed and caught up with one rebuilt from the journal in one go.

use std::collections::BTreeMap;

use surge_engine::{OrderId, Sequence, Timestamp};

use crate::projection::{KeyedAnswer, NewOrder, OrderStore};
use crate::status::{OrderStatus, PaymentStatus};

/// One order as the memory store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOrder {
    pub order: NewOrder,
    pub status: OrderStatus,
    pub payment: PaymentStatus,
    /// `(sequence, status, at)`, in the order written.
    pub history: Vec<(Sequence, OrderStatus, Timestamp)>,
}

/// Everything the projection wrote, comparable with `==`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryStore {
    pub watermark: Sequence,
    pub orders: BTreeMap<OrderId, StoredOrder>,
    pub answers: BTreeMap<Sequence, KeyedAnswer>,
    /// Carts checked out: `(buyer, version)`.
    pub carts_checked_out: BTreeMap<(i64, u64), ()>,
}

impl OrderStore for MemoryStore {
    type Error = std::convert::Infallible;

    fn watermark(&mut self) -> Result<Sequence, Self::Error> {
        Ok(self.watermark)
    }

    fn set_watermark(&mut self, through: Sequence) -> Result<(), Self::Error> {
        self.watermark = through;
        Ok(())
    }

    fn insert_order(&mut self, order: &NewOrder) -> Result<(), Self::Error> {
        self.orders.entry(order.placed.id).or_insert_with(|| StoredOrder {
            order: order.clone(),
            status: OrderStatus::PendingPayment,
            payment: PaymentStatus::Pending,
            history: vec![(order.sequence, OrderStatus::PendingPayment, order.at)],
        });
        Ok(())
    }

    fn order_state(
        &mut self,
        order: OrderId,
    ) -> Result<Option<(OrderStatus, PaymentStatus, i64)>, Self::Error> {
        Ok(self
            .orders
            .get(&order)
            .map(|stored| (stored.status, stored.payment, stored.order.placed.total_cents)))
    }

    fn set_status(
        &mut self,
        order: OrderId,
        status: OrderStatus,
        sequence: Sequence,
        at: Timestamp,
    ) -> Result<(), Self::Error> {
        if let Some(stored) = self.orders.get_mut(&order) {
            stored.status = status;
            stored.history.push((sequence, status, at));
        }
        Ok(())
    }

    fn set_payment(
        &mut self,
        order: OrderId,
        status: PaymentStatus,
        _at: Timestamp,
    ) -> Result<(), Self::Error> {
        if let Some(stored) = self.orders.get_mut(&order) {
            stored.payment = status;
        }
        Ok(())
    }

    fn insert_answer(&mut self, answer: &KeyedAnswer) -> Result<(), Self::Error> {
        self.answers.entry(answer.sequence).or_insert_with(|| answer.clone());
        Ok(())
    }

    fn cart_checked_out(&mut self, buyer_id: i64, version: u64) -> Result<(), Self::Error> {
        self.carts_checked_out.insert((buyer_id, version), ());
        Ok(())
    }
}
