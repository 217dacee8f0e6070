//! The threads around Surge's engine, and the thread-free stages they drive.
//!
//! - [`durable`]: the [`Sequencer`] (stamp, journal, one fsync per batch), [`restore`] (newest
//!   snapshot plus the journal suffix) and [`archive_covered`] (journal retention: segments no
//!   reader needs move to the archive), free of threads so the simulator drives the same code.
//! - [`threaded`]: [`Pipeline`], [`Handle`] and [`Ticket`]: producers submit commands into a
//!   bounded queue, the sequencer-journaler makes each batch durable, the engine thread applies
//!   it, and only then does a producer learn its outcome; the journal follower replays the
//!   durable journal into [`Outputs`] for projections and writes the snapshots.
//!
//! The state machine itself is `surge-engine`, which depends on nothing; everything with a thread,
//! a clock or a file is here.

pub mod durable;
pub mod threaded;

pub use durable::{
    archive_covered, decode_payload, encode_payload, restore, retention_through, ArchiveReport,
    DurableError, RestoreReport, Sequencer, RECORD_KIND_COMMAND_WITH_ATTACHMENT,
};
pub use threaded::{
    Applied, AppliedCommand, Archiver, Clock, GroupTicket, Handle, Output, Outputs, Pipeline,
    PipelineConfig, PipelineStats, Restored, SubmitError, SystemClock, Ticket,
    ATTACHMENT_BYTES_MAX,
};
