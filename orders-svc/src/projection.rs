//! The projection: engine outputs in, order, payment and checkout-answer rows out.
//!
//! [`project`] folds one [`Output`] of the journal follower into an [`OrderStore`]. It is a
//! function of the journal alone (every time it writes is the engine's stamp of the command), it
//! skips commands at or below the store's watermark and moves the watermark in the same store
//! transaction, so applying an output twice, or again after a crash, changes nothing: the store
//! after any sequence of crashes equals a store rebuilt from the journal in one go. It is the only
//! writer of the rows it keeps.
//!
//! What a command leads to:
//! - a `Reserve` with a [`CheckoutRecord`]: when reserved, the order (status `pending_payment`),
//!   its pending payment, the answer `placed` under the buyer's idempotency key, the cart emptied
//!   when a cart version was claimed, and a charge to start ([`Work::Charge`]); when refused for
//!   a business reason, the refusal under the key. Capacity and invalid refusals are not stored:
//!   the gateway answers them `503` / `500`, which a retry must process anew (API.md);
//! - every `OrderTransitioned` event: the order's new status and a history row;
//! - a commit: the payment captured; a commit that comes too late (the order expired, failed or
//!   was cancelled before the money arrived): status `refunded`, payment `refund_due` and a refund
//!   to send ([`Work::Refund`]);
//! - a release: the payment failed or cancelled; a cancel of a paid order: payment `refund_due`
//!   and a refund to send (the order stays `cancelled`, API.md);
//! - an expiry: the payment expired.
//!
//! The work items are what the payment driver does after the store committed; it is idempotent
//! (the provider call carries the order id), so repeating work after a crash is harmless.

use surge_engine::{
    Command, Event, LineMask, Lines, OrderId, OrderState, Outcome, Rejection, Sequence, Timestamp,
    WarehouseId,
};
use surge_pipeline::{AppliedCommand, Output};

use crate::record::{CheckoutRecord, Shipping};
use crate::status::{OrderStatus, PaymentStatus};

/// One line of a placed order, as shown to buyers and stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
    /// The warehouse's name (the id of the API path).
    pub warehouse: String,
}

/// What a successful checkout answered, and what every later read of the order shows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedOrder {
    pub id: OrderId,
    pub buyer_id: i64,
    pub lines: Vec<OrderLine>,
    pub total_cents: i64,
    pub currency: String,
    /// The engine's stamp of the reservation, RFC 3339.
    pub created_at: String,
    pub expires_at: String,
}

impl PlacedOrder {
    /// The placed order of a reservation: its record, the lines the engine reserved (same order as
    /// the record's), its stamp and deadline. `warehouse_name` names the engine's warehouse ids.
    pub fn new(
        id: OrderId,
        buyer_id: i64,
        record: &CheckoutRecord,
        reserved: &Lines,
        at: Timestamp,
        expires_at: Timestamp,
        warehouse_name: &dyn Fn(WarehouseId) -> String,
    ) -> PlacedOrder {
        let lines = record
            .lines
            .iter()
            .zip(reserved.as_slice())
            .map(|(line, reserved)| OrderLine {
                sku: line.sku.clone(),
                quantity: reserved.quantity,
                unit_price_cents: line.unit_price_cents,
                warehouse: warehouse_name(reserved.warehouse),
            })
            .collect();
        PlacedOrder {
            id,
            buyer_id,
            lines,
            total_cents: record.total_cents,
            currency: record.currency.clone(),
            created_at: surge_engine::time::rfc3339(at),
            expires_at: surge_engine::time::rfc3339(expires_at),
        }
    }
}

/// How a checkout was answered, as stored under its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `201`: the order was placed.
    Placed { order: OrderId },
    /// `409 out_of_stock` for these SKUs.
    OutOfStock { skus: Vec<String> },
    /// `409 not_deliverable`: every refused SKU is in stock only where no candidate warehouse is.
    NotDeliverable { skus: Vec<String> },
    /// `409 purchase_limit_exceeded` for these SKUs.
    PurchaseLimitExceeded { skus: Vec<String> },
    /// `409 conflict`: this version of the cart was already checked out.
    CartAlreadyCheckedOut,
}

impl Answer {
    /// The answer a reservation's outcome gives, for both the live request and the stored row;
    /// `None` for outcomes whose answer is not stored (capacity, invalid: `503` and `500`).
    pub fn of_outcome(record: &CheckoutRecord, outcome: &Outcome) -> Option<Answer> {
        let skus = |mask: LineMask| -> Vec<String> {
            record
                .lines
                .iter()
                .enumerate()
                .filter(|(index, _)| mask.contains(*index))
                .map(|(_, line)| line.sku.clone())
                .collect()
        };
        match *outcome {
            Outcome::Reserved { order, .. } => Some(Answer::Placed { order }),
            Outcome::Rejected(Rejection::OutOfStock { lines, elsewhere }) => {
                if !lines.is_empty() && lines == elsewhere {
                    Some(Answer::NotDeliverable { skus: skus(lines) })
                } else {
                    Some(Answer::OutOfStock { skus: skus(lines) })
                }
            }
            Outcome::Rejected(Rejection::PurchaseLimitExceeded { lines }) => {
                Some(Answer::PurchaseLimitExceeded { skus: skus(lines) })
            }
            Outcome::Rejected(Rejection::CartAlreadyCheckedOut) => {
                Some(Answer::CartAlreadyCheckedOut)
            }
            _ => None,
        }
    }

    /// Whether a reservation's outcome has an answer that is kept under the key (see
    /// [`Answer::of_outcome`]).
    pub fn is_kept(outcome: &Outcome) -> bool {
        matches!(
            outcome,
            Outcome::Reserved { .. }
                | Outcome::Rejected(
                    Rejection::OutOfStock { .. }
                        | Rejection::PurchaseLimitExceeded { .. }
                        | Rejection::CartAlreadyCheckedOut
                )
        )
    }

    /// The name stored in `checkout_answers.outcome`.
    pub fn kind(&self) -> &'static str {
        match self {
            Answer::Placed { .. } => "placed",
            Answer::OutOfStock { .. } => "out_of_stock",
            Answer::NotDeliverable { .. } => "not_deliverable",
            Answer::PurchaseLimitExceeded { .. } => "purchase_limit_exceeded",
            Answer::CartAlreadyCheckedOut => "cart_already_checked_out",
        }
    }

    /// The SKUs a refusal names (empty for the others).
    pub fn skus(&self) -> &[String] {
        match self {
            Answer::OutOfStock { skus }
            | Answer::NotDeliverable { skus }
            | Answer::PurchaseLimitExceeded { skus } => skus,
            Answer::Placed { .. } | Answer::CartAlreadyCheckedOut => &[],
        }
    }

    /// Rebuilds an answer from its stored parts.
    pub fn from_parts(kind: &str, order: Option<OrderId>, skus: Vec<String>) -> Option<Answer> {
        Some(match kind {
            "placed" => Answer::Placed { order: order? },
            "out_of_stock" => Answer::OutOfStock { skus },
            "not_deliverable" => Answer::NotDeliverable { skus },
            "purchase_limit_exceeded" => Answer::PurchaseLimitExceeded { skus },
            "cart_already_checked_out" => Answer::CartAlreadyCheckedOut,
            _ => return None,
        })
    }
}

/// A checkout's answer under its buyer's idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedAnswer {
    /// The sequence of the `Reserve`: rows are keyed by it, so writing one twice is harmless.
    pub sequence: Sequence,
    pub buyer_id: i64,
    pub idempotency_key: String,
    pub request_hash: [u8; 16],
    pub answer: Answer,
    pub at: Timestamp,
}

/// An order as the projection first writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrder {
    pub placed: PlacedOrder,
    /// Seller of each line, same order as `placed.lines`.
    pub sellers: Vec<i64>,
    pub shipping: Shipping,
    pub payment_token: String,
    /// The sequence (= id) and stamp of the reservation.
    pub sequence: Sequence,
    pub at: Timestamp,
}

/// What the payment driver must do once the store has committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Ask the provider to charge the order (keyed by the order id).
    Charge {
        order: OrderId,
        token: String,
        amount_cents: i64,
        currency: String,
        expires_at: Timestamp,
    },
    /// Ask the provider to give the order's money back (keyed by the order id).
    Refund { order: OrderId, amount_cents: i64 },
}

/// The rows the projection keeps. Each method runs inside the caller's transaction; the projection
/// calls [`OrderStore::set_watermark`] last, so the rows and the watermark commit together.
pub trait OrderStore {
    type Error;

    /// The sequence through which outputs have been projected (0 for a new store).
    fn watermark(&mut self) -> Result<Sequence, Self::Error>;
    fn set_watermark(&mut self, through: Sequence) -> Result<(), Self::Error>;
    /// Writes a new order with its lines, its pending payment and its `pending_payment` history.
    fn insert_order(&mut self, order: &NewOrder) -> Result<(), Self::Error>;
    /// The status, payment status and amount of an order; `None` when there is no such order.
    fn order_state(
        &mut self,
        order: OrderId,
    ) -> Result<Option<(OrderStatus, PaymentStatus, i64)>, Self::Error>;
    /// Records a new status with its history row (the command's sequence and stamp). Orders the
    /// store does not hold (reserved without a checkout record) are left alone.
    fn set_status(
        &mut self,
        order: OrderId,
        status: OrderStatus,
        sequence: Sequence,
        at: Timestamp,
    ) -> Result<(), Self::Error>;
    fn set_payment(
        &mut self,
        order: OrderId,
        status: PaymentStatus,
        at: Timestamp,
    ) -> Result<(), Self::Error>;
    fn insert_answer(&mut self, answer: &KeyedAnswer) -> Result<(), Self::Error>;
    /// The buyer's cart version `version` was checked out: empty the cart if it still is that
    /// version (a cart changed since keeps its new content).
    fn cart_checked_out(&mut self, buyer_id: i64, version: u64) -> Result<(), Self::Error>;
}

/// Why a record could not be projected. Never a reason to stop: such a record is skipped with its
/// reason reported, because it cannot come from this gateway (tools reserve without records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub sequence: Sequence,
    pub reason: String,
}

/// Applies `output` to `store` (see the module documentation). Work to do after the commit is
/// appended to `work`, records that could not be read to `skipped`.
pub fn project<S: OrderStore>(
    store: &mut S,
    output: &Output,
    warehouse_name: &dyn Fn(WarehouseId) -> String,
    work: &mut Vec<Work>,
    skipped: &mut Vec<Skipped>,
) -> Result<(), S::Error> {
    let watermark = store.watermark()?;
    if output.through() <= watermark {
        return Ok(());
    }
    for applied in output.commands().iter().filter(|applied| applied.sequence > watermark) {
        for (_, event) in output.events_of(applied) {
            if let Event::OrderTransitioned { order, state, .. } = *event {
                store.set_status(
                    order,
                    OrderStatus::of_engine(state),
                    applied.sequence,
                    applied.at,
                )?;
                if state == OrderState::Expired {
                    set_payment_if(
                        store,
                        order,
                        PaymentStatus::Pending,
                        PaymentStatus::Expired,
                        applied.at,
                    )?;
                }
            }
        }
        project_command(store, output, applied, warehouse_name, work, skipped)?;
    }
    store.set_watermark(output.through())
}

fn project_command<S: OrderStore>(
    store: &mut S,
    output: &Output,
    applied: &AppliedCommand,
    warehouse_name: &dyn Fn(WarehouseId) -> String,
    work: &mut Vec<Work>,
    skipped: &mut Vec<Skipped>,
) -> Result<(), S::Error> {
    let (sequence, at) = (applied.sequence, applied.at);
    match applied.command {
        Command::Reserve { buyer, cart, .. } => {
            let Some(bytes) = output.attachment_of(applied) else { return Ok(()) };
            let record = match CheckoutRecord::decode(bytes) {
                Ok(record) => record,
                Err(error) => {
                    skipped.push(Skipped { sequence, reason: error.to_string() });
                    return Ok(());
                }
            };
            let Ok(buyer_id) = i64::try_from(buyer.0) else {
                skipped.push(Skipped { sequence, reason: "buyer id out of range".to_owned() });
                return Ok(());
            };
            let Some(answer) = Answer::of_outcome(&record, &applied.outcome) else {
                return Ok(());
            };
            if let Outcome::Reserved { order, expires_at, lines } = applied.outcome {
                let placed = PlacedOrder::new(
                    order,
                    buyer_id,
                    &record,
                    &lines,
                    at,
                    expires_at,
                    warehouse_name,
                );
                let new = NewOrder {
                    placed,
                    sellers: record.lines.iter().map(|line| line.seller_id).collect(),
                    shipping: record.shipping.clone(),
                    payment_token: record.payment_token.clone(),
                    sequence,
                    at,
                };
                store.insert_order(&new)?;
                if let Some(version) = cart {
                    store.cart_checked_out(buyer_id, version.0)?;
                }
                work.push(Work::Charge {
                    order,
                    token: record.payment_token.clone(),
                    amount_cents: record.total_cents,
                    currency: record.currency.clone(),
                    expires_at,
                });
            }
            store.insert_answer(&KeyedAnswer {
                sequence,
                buyer_id,
                idempotency_key: record.idempotency_key,
                request_hash: record.request_hash,
                answer,
                at,
            })?;
        }
        Command::Commit { order } => match applied.outcome {
            Outcome::Transitioned { state: OrderState::Confirmed, .. } => {
                set_payment_if(store, order, PaymentStatus::Pending, PaymentStatus::Captured, at)?;
            }
            // The money arrived for an order that can no longer be sold: the deadline passed (the
            // engine expired it just now), or it ended unpaid earlier.
            Outcome::Rejected(Rejection::Expired | Rejection::UnknownOrder) => {
                refund_late_payment(store, order, sequence, at, work)?;
            }
            _ => {}
        },
        Command::Release { order, .. } => match applied.outcome {
            Outcome::Transitioned { state: OrderState::PaymentFailed, .. } => {
                set_payment_if(store, order, PaymentStatus::Pending, PaymentStatus::Failed, at)?;
            }
            Outcome::Transitioned { state: OrderState::Cancelled, .. } => {
                set_payment_if(store, order, PaymentStatus::Pending, PaymentStatus::Cancelled, at)?;
            }
            _ => {}
        },
        Command::Cancel { order } => {
            if let Outcome::Transitioned { state: OrderState::Cancelled, .. } = applied.outcome {
                if let Some((_, PaymentStatus::Captured, amount_cents)) =
                    store.order_state(order)?
                {
                    store.set_payment(order, PaymentStatus::RefundDue, at)?;
                    work.push(Work::Refund { order, amount_cents });
                }
            }
        }
        Command::SetStock { .. }
        | Command::SetBuyerLimit { .. }
        | Command::Expire
        | Command::Ship { .. }
        | Command::Deliver { .. } => {}
    }
    Ok(())
}

/// A payment for an order that ended unpaid (expired, failed, cancelled before payment) goes
/// back, once: the order becomes `refunded`. A repeated success for an order that was paid, or
/// whose refund is already due, changes nothing.
///
/// The engine cannot tell these apart: it has retired every one of them, and answers any commit
/// `UnknownOrder`. The payment status does: an order cancelled after it was paid is `cancelled`
/// like one cancelled before, but its payment is `refund_due` (set by the cancel), never one of
/// the unpaid states, so a late duplicate success leaves it `cancelled` with its one refund.
fn refund_late_payment<S: OrderStore>(
    store: &mut S,
    order: OrderId,
    sequence: Sequence,
    at: Timestamp,
    work: &mut Vec<Work>,
) -> Result<(), S::Error> {
    let Some((status, payment, amount_cents)) = store.order_state(order)? else { return Ok(()) };
    let unpaid = matches!(
        status,
        OrderStatus::Expired | OrderStatus::PaymentFailed | OrderStatus::Cancelled
    );
    let refundable = matches!(
        payment,
        PaymentStatus::Pending
            | PaymentStatus::Failed
            | PaymentStatus::Cancelled
            | PaymentStatus::Expired
    );
    if unpaid && refundable {
        store.set_status(order, OrderStatus::Refunded, sequence, at)?;
        store.set_payment(order, PaymentStatus::RefundDue, at)?;
        work.push(Work::Refund { order, amount_cents });
    }
    Ok(())
}

fn set_payment_if<S: OrderStore>(
    store: &mut S,
    order: OrderId,
    from: PaymentStatus,
    to: PaymentStatus,
    at: Timestamp,
) -> Result<(), S::Error> {
    if let Some((_, payment, _)) = store.order_state(order)? {
        if payment == from {
            store.set_payment(order, to, at)?;
        }
    }
    Ok(())
}
