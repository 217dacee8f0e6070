//! The statuses of an order and of its payment, as the projection records them.

use surge_engine::OrderState;

/// An order's status (API.md, "Order statuses"). `Refunded` is the projection's own: a payment
/// arrived for an order that could no longer be sold, and the money goes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OrderStatus {
    PendingPayment,
    Confirmed,
    Shipped,
    Delivered,
    PaymentFailed,
    Expired,
    Cancelled,
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::PendingPayment,
        OrderStatus::Confirmed,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::PaymentFailed,
        OrderStatus::Expired,
        OrderStatus::Cancelled,
        OrderStatus::Refunded,
    ];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::PaymentFailed => "payment_failed",
            OrderStatus::Expired => "expired",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// The status an engine state stands for.
    pub fn of_engine(state: OrderState) -> OrderStatus {
        match state {
            OrderState::PendingPayment => OrderStatus::PendingPayment,
            OrderState::Confirmed => OrderStatus::Confirmed,
            OrderState::Shipped => OrderStatus::Shipped,
            OrderState::Delivered => OrderStatus::Delivered,
            OrderState::PaymentFailed => OrderStatus::PaymentFailed,
            OrderState::Expired => OrderStatus::Expired,
            OrderState::Cancelled => OrderStatus::Cancelled,
        }
    }

    /// No command can change it any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Delivered
                | OrderStatus::PaymentFailed
                | OrderStatus::Expired
                | OrderStatus::Cancelled
                | OrderStatus::Refunded
        )
    }

    /// Its units count as sold: it reached `confirmed` and was not cancelled. (`refunded` is not:
    /// the engine never sold those units.)
    pub fn is_sold(self) -> bool {
        matches!(self, OrderStatus::Confirmed | OrderStatus::Shipped | OrderStatus::Delivered)
    }
}

/// Where an order's money stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PaymentStatus {
    /// Charged or about to be; no answer from the provider yet.
    Pending,
    Captured,
    Failed,
    /// The buyer cancelled before paying.
    Cancelled,
    /// The reservation expired before the money arrived.
    Expired,
    /// The money must go back (a cancel after payment, a payment after expiry); the payment
    /// driver sends the refund, keyed by the order id, until it is recorded as sent.
    RefundDue,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 6] = [
        PaymentStatus::Pending,
        PaymentStatus::Captured,
        PaymentStatus::Failed,
        PaymentStatus::Cancelled,
        PaymentStatus::Expired,
        PaymentStatus::RefundDue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Captured => "captured",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Cancelled => "cancelled",
            PaymentStatus::Expired => "expired",
            PaymentStatus::RefundDue => "refund_due",
        }
    }

    pub fn parse(text: &str) -> Option<PaymentStatus> {
        PaymentStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        for status in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("shipped "), None);
    }
}
