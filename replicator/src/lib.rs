//! Streams the journal to a hot standby (acknowledgements, catch-up, promotion).
//!
//! Not built yet: see "What is missing" in the README. The crate exists so that the workspace
//! layout of the design brief is in place and the replication work has a home.
