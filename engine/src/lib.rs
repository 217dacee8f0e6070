//! The engine of Surge: one thread owns all inventory and every live order, and applies a single
//! ordered stream of commands.
//!
//! - [`state::Engine`] is the state machine. It depends on nothing but `std` (this crate has no
//!   dependencies at all): no clock, no I/O, no threads, no allocation after start. Everything it
//!   decides is a function of the command log.
//! - [`command`] is its closed vocabulary, [`codec`] the journal encoding of commands, and
//!   [`query`] the closed vocabulary of reads, answered without allocating by `Engine::answer`.
//! - The threads that feed it (sequencer, journal, the engine thread) are the `surge-pipeline`
//!   crate beside this one.

pub mod codec;
pub mod command;
mod hash;
pub mod limits;
pub mod query;
pub mod state;
pub mod time;
mod wire;

pub use command::*;
pub use limits::Limits;
pub use query::{OrderStates, Progress, Query, SkuStock, StockCell};
pub use state::{DiscardEvents, Engine, EventSink, OrderView, Sequenced, SnapshotError};
pub use wire::Truncated;
