//! Orders as a projection of the journal.
//!
//! The journal is the one durable record of a checkout: the engine's `Reserve` command carries a
//! [`record::CheckoutRecord`] (buyer's key and request digest, priced lines, shipping, payment
//! token) as its attachment, and the `201` leaves once that record is durable. Everything else is
//! derived from the journal by [`projection::project`], behind the answer, from the outputs of the
//! pipeline's journal follower: order rows and their history, payments, refunds to send, and the
//! checkout answers stored under idempotency keys. The projection is idempotent by sequence, so it
//! is rebuilt from the journal after a crash by reading forward from its watermark.
//!
//! - [`record`]: the attachment's encoding.
//! - [`status`]: order and payment statuses.
//! - [`projection`]: the fold, its [`projection::OrderStore`] trait, and the answer of a checkout,
//!   shared by the live request and the stored row so a replay answers the same bytes.
//! - [`sqlite`] and [`memory`]: the stores.
//!
//! No HTTP here: the gateway renders answers.

pub mod memory;
pub mod projection;
pub mod record;
pub mod sqlite;
pub mod status;

pub use projection::{
    project, Answer, KeyedAnswer, NewOrder, OrderLine, OrderStore, PlacedOrder, Skipped, Work,
};
pub use record::{CheckoutRecord, RecordError, RecordLine, Shipping};
pub use status::{OrderStatus, PaymentStatus};
