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
pub mod journal_retention;
pub mod json;
pub mod keys;
pub mod loadtest;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod outbox;
pub mod params;
pub mod payments;
pub mod projector;
pub mod retention;
pub mod search;
pub mod server;
pub mod startup;
pub mod testing;
pub mod time;
pub mod users;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use surge_engine::{Query, Sequence, SkuId, StockLevel, WarehouseId};
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
    /// Sign-ups and sign-ins a minute, and at once, per client address (0 disables the limit).
    pub sign_in_per_minute_per_address: u32,
    pub sign_in_burst_per_address: u32,
    /// Sign-ins a minute, and at once, per email (0 disables the limit).
    pub sign_in_per_minute_per_email: u32,
    pub sign_in_burst_per_email: u32,
    /// Searches, suggestions and category lists a second, and at once, per client address (0
    /// disables the limit).
    pub reads_per_second_per_address: u32,
    pub reads_burst_per_address: u32,
    /// The secret payment webhooks are signed with (`Surge-Signature`).
    pub webhook_secret: String,
    /// How long the sandbox payment provider takes to answer.
    pub payment_latency: Duration,
    /// Whether the sandbox keeps a per-order ledger of what it did (tests; it grows per order).
    pub payment_ledger: bool,
    /// The most checkout idempotency keys held in memory ([`keys`]).
    pub checkout_keys_max: usize,
    /// How long a request may take before it is answered `503 overloaded` ([`deadline`]).
    pub request_timeout: Duration,
}

/// The request timeout of [`Config::default`], and of every request before recovery is done.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

impl Default for Config {
    fn default() -> Self {
        Self {
            reservation_ttl: Duration::from_secs(600),
            rate_per_second: 50,
            rate_burst: 100,
            sign_in_per_minute_per_address: 60,
            sign_in_burst_per_address: 20,
            sign_in_per_minute_per_email: 10,
            sign_in_burst_per_email: 5,
            reads_per_second_per_address: 50,
            reads_burst_per_address: 100,
            webhook_secret: String::new(),
            payment_latency: Duration::from_millis(20),
            payment_ledger: false,
            checkout_keys_max: keys::KEYS_MAX_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
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
    /// Sign-ups and sign-ins per client address, sign-ins per email.
    pub sign_in_by_address: RateLimiter<std::net::IpAddr>,
    pub sign_in_by_email: RateLimiter<String>,
    /// Bounded password hashing.
    pub passwords: auth::Passwords,
    /// Searches and suggestions per client address, and at once.
    pub reads_by_address: RateLimiter<std::net::IpAddr>,
    pub searches: auth::Bound,
    pub catalog: Arc<catalog::Registry>,
    /// Idempotency keys of checkouts, answered from memory.
    pub keys: Arc<keys::CheckoutKeys>,
    pub payments: Arc<dyn payments::PaymentProvider>,
    /// The search index; written only by the feeder ([`search::start_feeder`]).
    pub search: search::Search,
    /// How far the order rows have followed the journal.
    pub projected: projector::Projected,
}

/// The router's state: the services appear once start-up recovery is done; until then every route
/// but `/healthz` answers `503`.
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
        // Innermost, so that the metrics count the statuses clients get.
        .layer(axum::middleware::from_fn(error::problem_responses))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), metrics::track))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), deadline))
        .layer(axum::extract::DefaultBodyLimit::max(json::BODY_BYTES_MAX))
        .with_state(state)
}

/// Middleware: answers `503 overloaded` with `Retry-After` when the rest of the request takes
/// longer than [`Config::request_timeout`] (the handler is dropped). A problem document like every
/// error, rather than the empty `503` of tower-http's timeout layer.
async fn deadline(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let limit = state
        .services()
        .map_or(REQUEST_TIMEOUT_DEFAULT, |services| services.config.request_timeout);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::timed_out(limit)),
    }
}

/// Submits a command to the engine and waits until it is durable and applied. A full engine queue
/// is load shedding: `503 overloaded` with `Retry-After`, and nothing was journaled.
pub async fn submit(
    engine: &Handle,
    command: surge_engine::Command,
) -> Result<surge_pipeline::Applied, ApiError> {
    engine.try_submit(command).map_err(submit_error)?.outcome().await.map_err(submit_error)
}

/// Reads the engine (see [`Handle::query`]): every command acknowledged before is visible.
pub async fn query(engine: &Handle, query: Query) -> Result<Query, ApiError> {
    engine.query(query).await.map_err(submit_error)
}

/// The engine's progress: last sequence applied, live orders, limits.
pub async fn progress(engine: &Handle) -> Result<surge_engine::Progress, ApiError> {
    match query(engine, Query::progress()).await? {
        Query::Progress(Some(progress)) => Ok(progress),
        other => Err(ApiError::internal(format!("the engine answered {other:?} to progress"))),
    }
}

/// The sequence of the last command the engine applied.
pub async fn last_sequence(engine: &Handle) -> Result<Sequence, ApiError> {
    Ok(progress(engine).await?.last_sequence)
}

/// The stock of one SKU as the engine has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StockOfSku {
    /// Every cell, in warehouse order.
    pub cells: Vec<(WarehouseId, StockLevel)>,
    pub buyer_limit: Option<u32>,
}

/// Cells read per engine query (at least `warehouses_max`, so one SKU always fits).
const STOCK_CELLS_PER_QUERY: usize = 4_096;

/// The stock of each SKU, in the order asked, in as many engine queries as the cells need (each
/// SKU is read whole in one of them).
pub async fn stock_of(engine: &Handle, skus: &[SkuId]) -> Result<Vec<StockOfSku>, ApiError> {
    let mut stock = Vec::with_capacity(skus.len());
    if skus.is_empty() {
        return Ok(stock);
    }
    let mut asked = Query::stock(skus.to_vec(), STOCK_CELLS_PER_QUERY);
    loop {
        asked = query(engine, asked).await?;
        let Query::Stock(answer) = &mut asked else {
            return Err(ApiError::internal("the engine answered another query to stock"));
        };
        for (_, buyer_limit, cells) in answer.per_sku() {
            let cells = cells.iter().map(|cell| (cell.warehouse, cell.level)).collect();
            stock.push(StockOfSku { cells, buyer_limit });
        }
        if !answer.advance() {
            return Ok(stock);
        }
    }
}

/// The cells of each SKU, in the order asked.
pub async fn stock_cells(
    engine: &Handle,
    skus: &[SkuId],
) -> Result<Vec<Vec<(WarehouseId, StockLevel)>>, ApiError> {
    Ok(stock_of(engine, skus).await?.into_iter().map(|stock| stock.cells).collect())
}

/// Units available now of each SKU, summed over its warehouses (SKUs never stocked: absent).
pub async fn available_units(
    engine: &Handle,
    skus: &[SkuId],
) -> Result<HashMap<SkuId, u64>, ApiError> {
    let stock = stock_of(engine, skus).await?;
    Ok(skus
        .iter()
        .zip(stock)
        .map(|(sku, stock)| {
            (*sku, stock.cells.iter().map(|(_, level)| u64::from(level.available())).sum())
        })
        .collect())
}

/// The answer to a command the pipeline did not take.
pub fn submit_error(error: surge_pipeline::SubmitError) -> ApiError {
    match error {
        surge_pipeline::SubmitError::Overloaded => ApiError::overloaded(),
        surge_pipeline::SubmitError::Stopped => ApiError::internal("the engine pipeline stopped"),
        surge_pipeline::SubmitError::AttachmentTooLarge => {
            ApiError::validation("the checkout is too large to record")
        }
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
