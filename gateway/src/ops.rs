//! Operational endpoints: liveness, readiness, Prometheus metrics.
//!
//! `/healthz` and `/readyz` are public: they say no more than whether to send traffic. `/metrics`
//! is for the admin token: its counters show the traffic per route and the engine's progress,
//! which is nobody else's business.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `200` once recovered; before, the `503 overloaded` problem document every route answers then.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.services() {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => error.into_response(),
    }
}

/// Prometheus text, for the admin token (`401`/`403` otherwise). Before recovery finishes there
/// is no token to check against, and it answers `503` like every route but `/healthz`.
async fn metrics(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let mut text = String::new();
    let services = state.services().ok();
    gauge(&mut text, "surge_ready", "1 once recovery finished", u8::from(services.is_some()));
    if let Some(services) = services {
        let stats = services.engine.stats();
        gauge(&mut text, "surge_engine_sequence", "last applied command", stats.applied_sequence);
        gauge(
            &mut text,
            "surge_journal_durable_sequence",
            "last fsynced command",
            stats.durable_sequence,
        );
        gauge(&mut text, "surge_journal_bytes", "bytes in the journal", stats.journal_bytes);
        gauge(&mut text, "surge_snapshot_sequence", "newest snapshot", stats.snapshot_sequence);
        counter(
            &mut text,
            "surge_journal_fsyncs_total",
            "journal batches made durable",
            stats.fsync_count,
        );
        let fsync_seconds = stats.fsync_ns_total as f64 / 1e9;
        counter(
            &mut text,
            "surge_journal_fsync_seconds_total",
            "time in journal fsync",
            fsync_seconds,
        );
        let last = stats.fsync_ns_last as f64 / 1e9;
        gauge(&mut text, "surge_journal_fsync_seconds_last", "duration of the last fsync", last);
        gauge(
            &mut text,
            "surge_ring_occupancy",
            "commands waiting for the sequencer",
            stats.queue_len,
        );
        gauge(
            &mut text,
            "surge_ring_capacity",
            "capacity of the command queue",
            stats.queue_capacity,
        );
    }
    state.metrics.render(&mut text);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

pub fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
}

pub fn counter(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");
}
