//! What the catalog tells the rest of Surge, and a catalog to try it with.
//!
//! The catalog's tables and HTTP routes live in the gateway (`gateway/src/catalog.rs`), next to the
//! SQLite writer whose transactions they share with checkout. This crate holds what is independent
//! of HTTP and SQL: the vocabulary of catalog events and the small [`EventSource`] trait the search
//! feeder reads them through ([`events`]), and the deterministic demo catalog `surge serve --demo`
//! loads ([`demo`]).

pub mod demo;
pub mod events;

pub use demo::{demo_catalog, demo_warehouses, DemoProduct, DemoVariant, DemoWarehouse};
pub use events::{CatalogEvent, EventError, EventKind, EventSource, MemoryEvents};
