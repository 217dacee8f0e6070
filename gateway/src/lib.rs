//! The front door of Surge: the HTTP API of `../shared/API.md` over the engine pipeline and the
//! service tables, and the pieces of the `surge` binary.
//!
//! A handler is a thin translation: parse and validate (types in this crate), submit to the engine
//! or the database, await the outcome, map it to a response or an [`error::ApiError`]. Only this
//! crate knows HTTP and JSON.

pub mod auth;
pub mod catalog;
pub mod checkout;
pub mod db;
pub mod demo;
pub mod error;
pub mod json;
pub mod loadtest;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod order_events;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod retention;
pub mod search;
pub mod testing;
pub mod time;
pub mod users;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use surge_pipeline::Handle;

use crate::auth::{RateLimiter, Tokens};
use crate::db::Db;
use crate::error::ApiError;

pub use crate::time::{now_rfc3339, rfc3339_from_unix};

/// Settings of a running gateway.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a reservation waits for its payment.
    pub reservation_ttl: Duration,
    /// Requests per second and burst, per signed-in user (0 disables the limit).
    pub rate_per_second: u32,
    pub rate_burst: u32,
    /// The secret payment webhooks are signed with (`Surge-Signature`).
    pub webhook_secret: String,
    /// How long the sandbox payment provider takes to answer.
    pub payment_latency: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            reservation_ttl: Duration::from_secs(600),
            rate_per_second: 50,
            rate_burst: 100,
            webhook_secret: String::new(),
            payment_latency: Duration::from_millis(20),
        }
    }
}

/// Everything handlers use once the engine is recovered.
#[derive(Debug)]
pub struct Services {
    pub config: Config,
    pub db: Db,
    pub engine: Handle,
    pub tokens: Tokens,
    pub rate_limiter: RateLimiter,
    pub catalog: catalog::Registry,
    /// Idempotency keys of checkouts being processed.
    pub checkout: checkout::InFlight,
    pub payments: Arc<dyn payments::PaymentProvider>,
    /// The search index; written only by the feeder ([`search::start_feeder`]).
    pub search: search::Search,
    /// How far the order store has followed the engine.
    pub recorded: order_events::Recorded,
}

/// The router's state: the services appear once start-up recovery is done; until then every route
/// but `/healthz` and `/metrics` answers `503`.
#[derive(Debug, Default)]
pub struct AppState {
    services: OnceLock<Arc<Services>>,
    pub metrics: metrics::HttpMetrics,
}

impl AppState {
    /// Makes the services available (once).
    pub fn set_ready(&self, services: Arc<Services>) {
        assert!(self.services.set(services).is_ok(), "services set once");
    }

    pub fn services(&self) -> Result<&Services, ApiError> {
        self.services.get().map(Arc::as_ref).ok_or_else(|| {
            let mut error = ApiError::overloaded();
            error.detail = "recovering; retry shortly".to_owned();
            error
        })
    }
}

/// The whole HTTP API, without a socket: tests drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(ops::routes())
        .merge(openapi::routes())
        .merge(users::routes())
        .merge(catalog::routes())
        .merge(checkout::routes())
        .merge(payments::routes())
        .merge(orders::routes())
        .merge(search::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), metrics::track))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
        .layer(axum::extract::DefaultBodyLimit::max(json::BODY_BYTES_MAX))
        .with_state(state)
}

/// Submits a command to the engine and waits until it is durable and applied. A full engine queue
/// is load shedding: `503 overloaded` with `Retry-After`, and nothing was journaled.
pub async fn submit(
    engine: &Handle,
    command: surge_engine::Command,
) -> Result<surge_pipeline::Applied, ApiError> {
    engine.try_submit(command).map_err(submit_error)?.outcome().await.map_err(submit_error)
}

/// Reads engine state consistently (after every command submitted before), see [`Handle::query`].
pub async fn query<R: Send + 'static>(
    engine: &Handle,
    read: impl FnOnce(&surge_engine::Engine) -> R + Send + 'static,
) -> Result<R, ApiError> {
    engine.query(read).await.map_err(submit_error)
}

fn submit_error(error: surge_pipeline::SubmitError) -> ApiError {
    match error {
        surge_pipeline::SubmitError::Overloaded => ApiError::overloaded(),
        surge_pipeline::SubmitError::Stopped => ApiError::internal("the engine pipeline stopped"),
    }
}

/// The public id of an order (the engine sequence of its reservation).
pub fn order_id_string(order: surge_engine::OrderId) -> String {
    format!("o{}", order.0)
}

/// Parses `o<digits>`; `None` for anything else (answered as 404 by callers).
pub fn parse_order_id(text: &str) -> Option<surge_engine::OrderId> {
    text.strip_prefix('o')?.parse().ok().map(surge_engine::OrderId)
}

/// The public id of a product.
pub fn product_id_string(id: i64) -> String {
    format!("p{id}")
}

pub fn parse_product_id(text: &str) -> Option<i64> {
    text.strip_prefix('p')?.parse().ok()
}
