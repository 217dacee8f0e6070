//! Test support for Surge that spans crates: a naive reference [`model`] of the engine's business
//! rules, which the property tests in `tests/` run side by side with the real engine, and the
//! deterministic simulator ([`sim`]) of the durable path and the order projection.

pub mod model;
pub mod sim;
