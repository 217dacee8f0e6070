//! The engine of Surge: one thread owns all inventory and every live order, and applies a single
//! ordered stream of commands.
//!
//! - [`state::Engine`] is the state machine. It depends on nothing but `std`: no clock, no I/O, no
//!   threads, no allocation after start. Everything it decides is a function of the command log.
//! - [`command`] is its closed vocabulary, [`codec`] the journal encoding of commands.
//! - [`pipeline`] wraps the state machine from outside: producers submit commands into a bounded
//!   queue, the sequencer stamps them, the journal makes each batch durable with one fsync, the engine
//!   applies it, and only then does a producer learn its outcome.

pub mod codec;
pub mod command;
pub mod durable;
mod hash;
pub mod limits;
pub mod pipeline;
pub mod state;
mod wire;

pub use command::*;
pub use durable::{restore, restore_with_events, DurableError, RestoreReport, Sequencer};
pub use limits::Limits;
pub use pipeline::{
    Applied, Clock, GroupTicket, Handle, Pipeline, PipelineConfig, SubmitError, SystemClock, Ticket,
};
pub use state::{DiscardEvents, Engine, EventSink, OrderView, Sequenced, SnapshotError};
