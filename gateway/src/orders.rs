//! Orders: listing and detail (live and archived merged), cancel, ship, deliver, the seller's view,
//! and reconciliation of engine counters against the order records.
//!
//! The engine decides every state change; this module submits the command, and when the engine
//! answers with a transition it appends a row to `order_transitions`. Transitions no request
//! causes (expiry) reach the rows through the engine's event stream ([`crate::order_events`]), a
//! few milliseconds behind; a read checks its open orders against the engine and, where the rows
//! are behind, waits for them ([`read_current`]), so a status is the engine's as of the request,
//! never an older one. An order's status is never stored as such: it is derived from those rows
//! by [`current_status`], so writers that learn of changes in any order (this module, the
//! checkout, the payment webhook, the expiry events) cannot overwrite one another. The same rule
//! serves the buyer's view, the seller's view and reconciliation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use surge_engine::{Command, OrderId, OrderState, Outcome, Rejection, ReleaseReason, SkuId};

use crate::auth::{Caller, Role};
use crate::db::Db;
use crate::error::ApiError;
use crate::json::Json;
use crate::{order_id_string, AppState, Services};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/orders", get(list_orders))
        .route("/v1/orders/{id}", get(get_order))
        .route("/v1/orders/{id}/cancel", post(cancel_order))
        .route("/v1/orders/{id}/ship", post(ship_order))
        .route("/v1/orders/{id}/deliver", post(deliver_order))
        .route("/v1/seller/orders", get(seller_orders))
        .route("/v1/seller/analytics", get(seller_analytics))
        .route("/v1/admin/reconciliation", get(reconciliation))
        .route("/v1/admin/engine", get(engine_status))
}

// ----- The order record -----

/// One line of an order as the checkout stored it (`orders.lines`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
    /// The warehouse's name (the id of the API path).
    pub warehouse: String,
}

/// One row of `order_transitions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub status: String,
    pub at: String,
    /// The engine sequence of the command that caused the transition; `None` for gateway-only
    /// statuses (`refunded`).
    pub seq: Option<i64>,
}

/// An order as stored: the checkout's row plus every transition recorded for it, in history order
/// (engine transitions by sequence, then gateway-only ones by insertion).
#[derive(Clone, Debug, PartialEq)]
pub struct OrderRecord {
    pub id: OrderId,
    pub buyer_id: i64,
    pub created_at: String,
    pub expires_at: String,
    pub total_cents: i64,
    pub currency: String,
    pub lines: Vec<OrderLine>,
    pub shipping: Value,
    /// Kept for payment retries; never shown.
    pub payment_token: String,
    pub transitions: Vec<Transition>,
}

impl OrderRecord {
    /// The status now, by [`current_status`].
    pub fn status(&self) -> &str {
        current_status(self.transitions.iter().map(|t| (t.status.as_str(), t.seq)))
    }

    /// `[{status, at}]`, oldest first, always starting with `pending_payment` (the checkout may not
    /// write a row for the reservation itself: its time is `created_at`).
    pub fn history(&self) -> Vec<Value> {
        let mut history = Vec::with_capacity(self.transitions.len() + 1);
        if !self.transitions.iter().any(|t| t.status == PENDING_PAYMENT) {
            history.push(json!({"status": PENDING_PAYMENT, "at": self.created_at}));
        }
        history.extend(self.transitions.iter().map(|t| json!({"status": t.status, "at": t.at})));
        history
    }
}

pub const PENDING_PAYMENT: &str = "pending_payment";
pub const REFUNDED: &str = "refunded";

/// The status of an order from its transition rows `(status, seq)`, in any order:
///
/// 1. any `refunded` row wins: the money went back, whatever the engine did before;
/// 2. otherwise the engine transition with the highest `seq` (the engine applies commands in
///    sequence order, so the highest is the latest, whichever writer recorded it first);
/// 3. with no engine transition, `pending_payment` (a reservation's own row is optional).
///
/// Rows without a `seq` other than `refunded` carry no engine ordering and are ignored here.
pub fn current_status<'a>(
    transitions: impl IntoIterator<Item = (&'a str, Option<i64>)>,
) -> &'a str {
    let mut latest: Option<(i64, &'a str)> = None;
    for (status, seq) in transitions {
        if status == REFUNDED {
            return REFUNDED;
        }
        if let Some(seq) = seq {
            if latest.is_none_or(|(highest, _)| seq > highest) {
                latest = Some((seq, status));
            }
        }
    }
    latest.map_or(PENDING_PAYMENT, |(_, status)| status)
}

/// The API name of an engine order state.
pub fn state_name(state: OrderState) -> &'static str {
    match state {
        OrderState::PendingPayment => PENDING_PAYMENT,
        OrderState::Confirmed => "confirmed",
        OrderState::Shipped => "shipped",
        OrderState::Delivered => "delivered",
        OrderState::PaymentFailed => "payment_failed",
        OrderState::Expired => "expired",
        OrderState::Cancelled => "cancelled",
    }
}

/// Statuses whose units count as sold (reached `confirmed`, not cancelled). `refunded` is not one:
/// a refund follows a payment that arrived after expiry, so the engine never sold those units.
fn is_sold(status: &str) -> bool {
    matches!(status, "confirmed" | "shipped" | "delivered")
}

/// Statuses no command can change any more.
fn is_final(status: &str) -> bool {
    matches!(status, "delivered" | "payment_failed" | "expired" | "cancelled" | "refunded")
}

/// The order as the buyer and admins see it.
pub fn order_json(order: &OrderRecord) -> Value {
    json!({
        "order_id": order_id_string(order.id),
        "status": order.status(),
        "lines": order.lines,
        "total_cents": order.total_cents,
        "currency": order.currency,
        "created_at": order.created_at,
        "expires_at": order.expires_at,
        "history": order.history(),
        "shipping": order.shipping,
    })
}

/// The short form of list pages.
fn order_summary_json(order: &OrderRecord) -> Value {
    json!({
        "order_id": order_id_string(order.id),
        "status": order.status(),
        "total_cents": order.total_cents,
        "currency": order.currency,
        "created_at": order.created_at,
        "lines": order.lines,
    })
}

/// Loads an order and its transitions; `None` when there is no such order.
pub async fn load_order(db: &Db, order: OrderId) -> Result<Option<OrderRecord>, ApiError> {
    db.read(move |connection| read_order(connection, order)).await
}

fn read_order(connection: &Connection, order: OrderId) -> Result<Option<OrderRecord>, ApiError> {
    let Ok(id) = i64::try_from(order.0) else {
        return Ok(None);
    };
    let row = connection
        .prepare_cached(
            "SELECT buyer_id, created_at, expires_at, total_cents, currency, lines, shipping,
                    payment_token
             FROM orders WHERE id = ?1",
        )?
        .query_row([id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, String>(6)?,
                row.get::<_, String>(7)?,
            ))
        })
        .optional()?;
    let Some((buyer_id, created_at, expires_at, total_cents, currency, lines, shipping, token)) =
        row
    else {
        return Ok(None);
    };
    Ok(Some(OrderRecord {
        id: order,
        buyer_id,
        created_at,
        expires_at,
        total_cents,
        currency,
        lines: parse_lines(&lines)?,
        shipping: serde_json::from_str(&shipping).map_err(ApiError::internal)?,
        payment_token: token,
        transitions: read_transitions(connection, id)?,
    }))
}

fn parse_lines(text: &str) -> Result<Vec<OrderLine>, ApiError> {
    serde_json::from_str(text).map_err(ApiError::internal)
}

/// The transitions of one order in history order. SQLite sorts NULL first, so `seq IS NULL`
/// leads the key: gateway-only rows (a refund) come after every engine transition.
fn read_transitions(connection: &Connection, order: i64) -> Result<Vec<Transition>, ApiError> {
    let mut statement = connection.prepare_cached(
        "SELECT status, at, seq FROM order_transitions WHERE order_id = ?1
         ORDER BY seq IS NULL, seq, id",
    )?;
    let transitions = statement
        .query_map([order], |row| {
            Ok(Transition { status: row.get(0)?, at: row.get(1)?, seq: row.get(2)? })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(transitions)
}

/// Records that `order` reached `status`, timestamped now. For engine transitions `seq` is the
/// sequence of the command that caused it ([`surge_pipeline::Applied::sequence`]); recording the same
/// engine transition twice is a no-op (unique `(order_id, seq)`), so every writer that learns of it
/// (the handler that submitted the command, the event consumer) may record it. A gateway-only
/// status (`seq` = `None`, i.e. `refunded`) is likewise recorded at most once per order.
pub async fn record_transition(
    db: &Db,
    order: OrderId,
    status: &str,
    seq: Option<u64>,
) -> Result<(), ApiError> {
    record_transition_at(db, order, status, seq, crate::now_rfc3339()).await
}

/// [`record_transition`] with the time given, e.g. the engine's stamp of the command.
pub async fn record_transition_at(
    db: &Db,
    order: OrderId,
    status: &str,
    seq: Option<u64>,
    at: String,
) -> Result<(), ApiError> {
    let order = i64::try_from(order.0).map_err(ApiError::internal)?;
    let seq = seq.map(i64::try_from).transpose().map_err(ApiError::internal)?;
    let status = status.to_owned();
    db.write(move |tx| {
        match seq {
            Some(seq) => tx.execute(
                "INSERT OR IGNORE INTO order_transitions (order_id, status, at, seq)
                 VALUES (?1, ?2, ?3, ?4)",
                params![order, status, at, seq],
            )?,
            None => tx.execute(
                "INSERT INTO order_transitions (order_id, status, at, seq)
                 SELECT ?1, ?2, ?3, NULL WHERE NOT EXISTS (
                     SELECT 1 FROM order_transitions
                     WHERE order_id = ?1 AND status = ?2 AND seq IS NULL)",
                params![order, status, at],
            )?,
        };
        Ok(())
    })
    .await
}

// ----- Pagination -----

const PAGE_SIZE_DEFAULT: u32 = 20;
const PAGE_SIZE_MAX: u32 = 100;

/// A page request: how many, and the order id to continue below (lists are newest first, and an
/// order id only grows, so "ids below the last one seen" is stable under inserts).
#[derive(Clone, Copy)]
struct Page {
    size: u32,
    before: i64,
}

type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

fn page(params: QueryParams) -> Result<Page, ApiError> {
    let Query(params) =
        params.map_err(|rejection| ApiError::validation(format!("query: {rejection}")))?;
    let size = match params.get("size") {
        None => PAGE_SIZE_DEFAULT,
        Some(text) => {
            text.parse::<u32>().ok().filter(|size| (1..=PAGE_SIZE_MAX).contains(size)).ok_or_else(
                || ApiError::validation(format!("size: an integer from 1 to {PAGE_SIZE_MAX}")),
            )?
        }
    };
    let before = match params.get("cursor") {
        None => i64::MAX,
        Some(text) => decode_cursor(text)
            .ok_or_else(|| ApiError::validation("cursor: not a cursor this list returned"))?,
    };
    Ok(Page { size, before })
}

/// Cursors are opaque to clients: base64url of `o<last order id>`.
fn encode_cursor(last: OrderId) -> String {
    URL_SAFE_NO_PAD.encode(order_id_string(last))
}

fn decode_cursor(text: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let order = crate::parse_order_id(std::str::from_utf8(&bytes).ok()?)?;
    i64::try_from(order.0).ok()
}

/// Order ids of one page, newest first, and the cursor of the next page. `select` takes
/// `(before, limit)` and returns ids in descending order.
fn page_ids(
    page: &Page,
    select: impl FnOnce(i64, i64) -> Result<Vec<i64>, ApiError>,
) -> Result<(Vec<OrderId>, Option<String>), ApiError> {
    // One more than asked tells whether a next page exists.
    let mut ids = select(page.before, i64::from(page.size) + 1)?;
    let more = ids.len() > page.size as usize;
    ids.truncate(page.size as usize);
    let ids: Vec<OrderId> = ids.into_iter().map(|id| OrderId(id.unsigned_abs())).collect();
    let next = if more { ids.last().copied().map(encode_cursor) } else { None };
    Ok((ids, next))
}

fn read_orders(connection: &Connection, ids: &[OrderId]) -> Result<Vec<OrderRecord>, ApiError> {
    let mut orders = Vec::with_capacity(ids.len());
    for &id in ids {
        // Rows are never deleted, so every listed id has its row.
        if let Some(order) = read_order(connection, id)? {
            orders.push(order);
        }
    }
    Ok(orders)
}

// ----- Buyer routes -----

async fn list_orders(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Buyer)?;
    let page = page(params)?;
    let buyer = caller.user_id;
    let services = state.services()?;
    let read = move |connection: &Connection| {
        let (ids, next) = page_ids(&page, |before, limit| {
            let mut statement = connection.prepare_cached(
                "SELECT id FROM orders WHERE buyer_id = ?1 AND id < ?2
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let ids = statement
                .query_map(params![buyer, before, limit], |row| row.get(0))?
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(ids)
        })?;
        Ok((read_orders(connection, &ids)?, next))
    };
    let (orders, next) =
        read_current(services, read, |(orders, _)| orders.iter().collect()).await?;
    let orders: Vec<Value> = orders.iter().map(order_summary_json).collect();
    Ok(Json(json!({"orders": orders, "next_cursor": next})))
}

/// Reads order records with `read` so that they show the engine's state as of the request.
///
/// Rows are written behind the engine (the event recorder, milliseconds later), so after reading,
/// the engine is asked about every order whose rows say it can still change: when it holds each of
/// them in the state the rows show, the rows are current and are the answer. When it disagrees
/// (the order moved on, or left engine memory as expired, failed or delivered), the read waits
/// until the recorder has caught up with the engine ([`crate::order_events::Recorded::caught_up`])
/// and reads again. Orders already final in their rows need no engine round trip.
async fn read_current<T, F>(
    services: &Services,
    read: F,
    records: impl Fn(&T) -> Vec<&OrderRecord>,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: Fn(&Connection) -> Result<T, ApiError> + Clone + Send + 'static,
{
    let first = services.db.read(read.clone()).await?;
    let open: Vec<(OrderId, String)> = records(&first)
        .into_iter()
        .filter(|record| !is_final(record.status()))
        .map(|record| (record.id, record.status().to_owned()))
        .collect();
    if open.is_empty() {
        return Ok(first);
    }
    let current = crate::query(&services.engine, move |engine| {
        open.iter().all(|(id, status)| {
            engine.order(*id).is_some_and(|order| state_name(order.state) == status.as_str())
        })
    })
    .await?;
    if current {
        return Ok(first);
    }
    services.recorded.caught_up(&services.engine).await?;
    services.db.read(read).await
}

/// The order named in the path, if the caller may see it: its buyer, or an admin. Anyone else, and
/// a malformed or unknown id, get the same `404`.
async fn visible_order(
    services: &Services,
    caller: Caller,
    id: &str,
) -> Result<OrderRecord, ApiError> {
    let not_found = || ApiError::not_found("order not found");
    let order = crate::parse_order_id(id).ok_or_else(not_found)?;
    let read = move |connection: &Connection| read_order(connection, order);
    let record = read_current(services, read, |record| record.iter().collect())
        .await?
        .ok_or_else(not_found)?;
    if caller.is_admin() || (caller.role == Role::Buyer && record.buyer_id == caller.user_id) {
        Ok(record)
    } else {
        Err(not_found())
    }
}

async fn get_order(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let order = visible_order(services, caller, &id).await?;
    Ok(Json(order_json(&order)))
}

async fn cancel_order(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let order = visible_order(services, caller, &id).await?;
    if caller.role != Role::Buyer {
        return Err(ApiError::forbidden("only the buyer may cancel an order"));
    }
    let status = order.status();
    let command = match status {
        PENDING_PAYMENT => Command::Release { order: order.id, reason: ReleaseReason::Cancelled },
        "confirmed" => Command::Cancel { order: order.id },
        other => {
            return Err(ApiError::conflict(format!("an order that is {other} cannot be cancelled")))
        }
    };
    let mut applied = crate::submit(&services.engine, command).await?;
    let mut cancelled_after_payment = matches!(command, Command::Cancel { .. });
    // The record can lag the engine: a payment may have confirmed the order since it was read.
    // Then the release finds it resolved, and the cancel of a confirmed order applies instead.
    if let Outcome::Rejected(Rejection::AlreadyResolved { state: OrderState::Confirmed }) =
        applied.outcome
    {
        applied = crate::submit(&services.engine, Command::Cancel { order: order.id }).await?;
        cancelled_after_payment = true;
    }
    apply_outcome(services, order.id, &applied).await?;
    if cancelled_after_payment {
        refund_cancelled_order(services, &order).await?;
    }
    reload(services, order.id).await
}

/// The one place where a cancelled order that was paid gets its money back. The engine has
/// returned the units already; the refund itself belongs to the payments module (keyed by the
/// order id, so a retry cannot refund twice), which the lead wires in here.
async fn refund_cancelled_order(services: &Services, order: &OrderRecord) -> Result<(), ApiError> {
    // The status stays `cancelled` (API.md): only the payment is marked refunded.
    crate::payments::refund(services, order.id).await.map(drop)
}

/// Records an engine transition, or maps a refusal to `409 conflict` (recording the expiry that a
/// late command caused, since the engine retired the order then).
async fn apply_outcome(
    services: &Services,
    order: OrderId,
    applied: &surge_pipeline::Applied,
) -> Result<(), ApiError> {
    let at = crate::time::rfc3339(applied.at);
    let seq = Some(applied.sequence.0);
    match applied.outcome {
        Outcome::Transitioned { state, .. } => {
            record_transition_at(&services.db, order, state_name(state), seq, at).await
        }
        Outcome::Rejected(Rejection::Expired) => {
            record_transition_at(&services.db, order, "expired", seq, at).await?;
            Err(ApiError::conflict("the order expired before the request arrived"))
        }
        Outcome::Rejected(
            Rejection::WrongState { state } | Rejection::AlreadyResolved { state },
        ) => Err(ApiError::conflict(format!(
            "the order is {} and cannot do that",
            state_name(state)
        ))),
        Outcome::Rejected(Rejection::UnknownOrder) => {
            Err(ApiError::conflict("the order is no longer live and cannot change"))
        }
        Outcome::Rejected(rejection) => Err(ApiError::internal(format!(
            "unexpected rejection of an order command: {rejection:?}"
        ))),
        other => {
            Err(ApiError::internal(format!("unexpected outcome of an order command: {other:?}")))
        }
    }
}

/// Releases the reservations of live pending orders that have no order row: a crash after the
/// engine reserved and before the checkout stored the order (nobody was answered; a retry reserves
/// again). Without this their units stay held until the reservation's deadline. Run at start-up,
/// before any request is served, so no checkout can be between the two steps. Returns how many
/// were released.
pub async fn release_orphans(services: &Services) -> Result<usize, ApiError> {
    let pending = crate::query(&services.engine, |engine| {
        let mut pending: Vec<OrderId> = engine
            .order_states()
            .filter(|&(_, state)| state == OrderState::PendingPayment)
            .map(|(id, _)| id)
            .collect();
        pending.sort_unstable();
        pending
    })
    .await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let orphans = services
        .db
        .read(move |connection| {
            let mut exists = connection.prepare_cached("SELECT 1 FROM orders WHERE id = ?1")?;
            let mut orphans = Vec::new();
            for order in pending {
                let id = i64::try_from(order.0).map_err(ApiError::internal)?;
                if !exists.exists([id])? {
                    orphans.push(order);
                }
            }
            Ok(orphans)
        })
        .await?;
    for &order in &orphans {
        let command = Command::Release { order, reason: ReleaseReason::Cancelled };
        let applied = crate::submit(&services.engine, command).await?;
        tracing::warn!(order = order.0, outcome = ?applied.outcome, "released a reservation without an order row");
    }
    Ok(orphans.len())
}

async fn reload(services: &Services, order: OrderId) -> Result<Json<Value>, ApiError> {
    let record = load_order(&services.db, order)
        .await?
        .ok_or_else(|| ApiError::internal("an order row disappeared"))?;
    Ok(Json(order_json(&record)))
}

// ----- Fulfilment -----

/// Ship and deliver are for an admin or the seller of every line. A buyer's role may not (`403`);
/// a seller with no line in the order does not learn it exists (`404`); a seller with some lines
/// but not all knows the order and is refused (`403`).
async fn fulfil(
    state: &AppState,
    caller: Caller,
    id: &str,
    command: fn(OrderId) -> Command,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let not_found = || ApiError::not_found("order not found");
    match caller.role {
        Role::Buyer => return Err(ApiError::forbidden("only sellers and admins fulfil orders")),
        Role::Seller | Role::Admin => {}
    }
    let order = crate::parse_order_id(id).ok_or_else(not_found)?;
    let record = load_order(&services.db, order).await?.ok_or_else(not_found)?;
    if caller.role == Role::Seller {
        let seller = caller.user_id;
        let order_key = i64::try_from(order.0).map_err(ApiError::internal)?;
        let (mine, all): (i64, i64) = services
            .db
            .read(move |connection| {
                Ok(connection.query_row(
                    "SELECT COALESCE(SUM(seller_id = ?2), 0), COUNT(*) FROM order_skus
                     WHERE order_id = ?1",
                    params![order_key, seller],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?)
            })
            .await?;
        if mine == 0 {
            return Err(not_found());
        }
        if mine < all {
            return Err(ApiError::forbidden("other sellers hold lines of this order"));
        }
    }
    let status = record.status();
    if is_final(status) {
        return Err(ApiError::conflict(format!("the order is {status} and cannot change")));
    }
    let applied = crate::submit(&services.engine, command(order)).await?;
    apply_outcome(services, order, &applied).await?;
    reload(services, order).await
}

async fn ship_order(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    fulfil(&state, caller, &id, |order| Command::Ship { order }).await
}

async fn deliver_order(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    fulfil(&state, caller, &id, |order| Command::Deliver { order }).await
}

// ----- Seller routes -----

/// SKUs the seller sold in an order (`order_skus`), to show only the seller's own lines.
fn seller_skus(
    connection: &Connection,
    seller: i64,
    order: OrderId,
) -> Result<Vec<String>, ApiError> {
    let mut statement = connection
        .prepare_cached("SELECT sku FROM order_skus WHERE order_id = ?1 AND seller_id = ?2")?;
    let skus = statement
        .query_map(params![order.0.cast_signed(), seller], |row| row.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(skus)
}

/// Orders holding the seller's SKUs, newest first. Each shows only the seller's lines, their
/// `total_cents` (of those lines), and the shipping address the seller needs to ship.
async fn seller_orders(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Seller)?;
    let page = page(params)?;
    let seller = caller.user_id;
    let services = state.services()?;
    let read = move |connection: &Connection| {
        let (ids, next) = page_ids(&page, |before, limit| {
            let mut statement = connection.prepare_cached(
                "SELECT DISTINCT order_id FROM order_skus WHERE seller_id = ?1 AND order_id < ?2
                 ORDER BY order_id DESC LIMIT ?3",
            )?;
            let ids = statement
                .query_map(params![seller, before, limit], |row| row.get(0))?
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(ids)
        })?;
        let mut orders = Vec::with_capacity(ids.len());
        for record in read_orders(connection, &ids)? {
            let mine = seller_skus(connection, seller, record.id)?;
            orders.push((record, mine));
        }
        Ok((orders, next))
    };
    let (orders, next) =
        read_current(services, read, |(orders, _)| orders.iter().map(|(r, _)| r).collect()).await?;
    let orders: Vec<Value> = orders
        .iter()
        .map(|(record, mine)| {
            let lines: Vec<&OrderLine> =
                record.lines.iter().filter(|line| mine.contains(&line.sku)).collect();
            let total: i64 =
                lines.iter().map(|line| line.unit_price_cents * i64::from(line.quantity)).sum();
            json!({
                "order_id": order_id_string(record.id),
                "status": record.status(),
                "total_cents": total,
                "currency": record.currency,
                "created_at": record.created_at,
                "lines": lines,
                "shipping": record.shipping,
            })
        })
        .collect();
    Ok(Json(json!({"orders": orders, "next_cursor": next})))
}

/// Units sold and revenue per SKU of the seller, over orders now `confirmed`, `shipped` or
/// `delivered` (cancelled and refunded sales do not count). Computed from the order records on
/// each call; a materialized view is the next step when sellers have very many orders.
async fn seller_analytics(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Seller)?;
    let seller = caller.user_id;
    let skus = state
        .services()?
        .db
        .read(move |connection| {
            let mut statement = connection.prepare(
                "SELECT DISTINCT order_id FROM order_skus WHERE seller_id = ?1 ORDER BY order_id",
            )?;
            let ids = statement
                .query_map([seller], |row| row.get::<_, i64>(0))?
                .map(|id| id.map(|id| OrderId(id.unsigned_abs())))
                .collect::<Result<Vec<_>, _>>()?;
            // sku -> (units, revenue, currency), sorted by SKU for a stable answer.
            let mut per_sku: BTreeMap<String, (u64, i64, String)> = BTreeMap::new();
            for record in read_orders(connection, &ids)? {
                if !is_sold(record.status()) {
                    continue;
                }
                let mine = seller_skus(connection, seller, record.id)?;
                for line in record.lines.iter().filter(|line| mine.contains(&line.sku)) {
                    let entry = per_sku
                        .entry(line.sku.clone())
                        .or_insert_with(|| (0, 0, record.currency.clone()));
                    entry.0 += u64::from(line.quantity);
                    entry.1 = line
                        .unit_price_cents
                        .checked_mul(i64::from(line.quantity))
                        .and_then(|revenue| entry.1.checked_add(revenue))
                        .ok_or_else(|| ApiError::internal("revenue overflows"))?;
                }
            }
            Ok(per_sku
                .into_iter()
                .map(|(sku, (units, revenue, currency))| {
                    json!({
                        "sku": sku,
                        "units_sold": units,
                        "revenue_cents": revenue,
                        "currency": currency,
                    })
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(json!({ "skus": skus })))
}

// ----- Operations -----

/// SKUs read from the engine per query, so a reconciliation of a large catalog lets commands
/// through between chunks instead of pausing the engine for the whole scan.
const RECONCILIATION_CHUNK_SKUS: usize = 4096;

/// Engine counters of one SKU, summed over its warehouses.
#[derive(Clone, Copy, Debug, Default)]
struct EngineCounters {
    reserved: u64,
    sold: u64,
    /// The smallest `on_hand - reserved` over the SKU's warehouses (negative means broken).
    available_min: i64,
}

/// Compares the engine's counters with the order records, per SKU (API.md, Operations):
/// `reserved` must equal the units of orders now `pending_payment`, `sold` the units of orders now
/// `confirmed`, `shipped` or `delivered`, and no warehouse may have `available < 0`.
///
/// Exact when the system is quiet. Transitions are recorded after the engine answers, so during
/// traffic an order row can lag the engine by the time it takes to commit it (milliseconds), and
/// expiries by the time the expiry consumer takes to record them; such mismatches vanish when run
/// again. Engine counters are read in chunks of SKUs; each SKU is read atomically.
async fn reconciliation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let services = state.services()?;
    let skus: Vec<(SkuId, String)> = services
        .db
        .read(|connection| {
            let mut statement = connection.prepare("SELECT id, sku FROM skus ORDER BY id")?;
            let skus = statement
                .query_map([], |row| Ok((SkuId(row.get(0)?), row.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(skus)
        })
        .await?;
    let mut engine_counters = Vec::with_capacity(skus.len());
    for chunk in skus.chunks(RECONCILIATION_CHUNK_SKUS) {
        let ids: Vec<SkuId> = chunk.iter().map(|(id, _)| *id).collect();
        let counters = crate::query(&services.engine, move |engine| {
            ids.iter()
                .map(|&sku| {
                    let mut counters = EngineCounters::default();
                    for (_, level) in engine.stock_by_warehouse(sku) {
                        counters.reserved += u64::from(level.reserved);
                        counters.sold += level.sold;
                        let available = i64::from(level.on_hand) - i64::from(level.reserved);
                        counters.available_min = counters.available_min.min(available);
                    }
                    counters
                })
                .collect::<Vec<_>>()
        })
        .await?;
        engine_counters.extend(counters);
    }
    let (reserved_by_orders, sold_by_orders) = services.db.read(order_units).await?;

    let mut mismatches = Vec::new();
    for ((_, sku), engine) in skus.iter().zip(&engine_counters) {
        let reserved = reserved_by_orders.get(sku).copied().unwrap_or(0);
        let sold = sold_by_orders.get(sku).copied().unwrap_or(0);
        if engine.reserved != reserved {
            mismatches.push(mismatch(sku, "reserved", &json!(engine.reserved), &json!(reserved)));
        }
        if engine.sold != sold {
            mismatches.push(mismatch(sku, "sold", &json!(engine.sold), &json!(sold)));
        }
        if engine.available_min < 0 {
            mismatches.push(mismatch(sku, "available", &json!(engine.available_min), &json!(0)));
        }
    }
    // Orders naming a SKU the catalog never had: the engine cannot hold them.
    let known: std::collections::HashSet<&str> = skus.iter().map(|(_, sku)| sku.as_str()).collect();
    let mut unknown: BTreeMap<&str, u64> = BTreeMap::new();
    for (sku, units) in reserved_by_orders.iter().chain(&sold_by_orders) {
        if !known.contains(sku.as_str()) {
            *unknown.entry(sku).or_default() += units;
        }
    }
    for (sku, units) in unknown {
        mismatches.push(mismatch(sku, "sku", &Value::Null, &json!(units)));
    }
    Ok(Json(json!({
        "ok": mismatches.is_empty(),
        "checked_skus": skus.len(),
        "mismatches": mismatches,
    })))
}

fn mismatch(sku: &str, field: &str, engine: &Value, orders: &Value) -> Value {
    json!({"sku": sku, "field": field, "engine": engine, "orders": orders})
}

type UnitsBySku = HashMap<String, u64>;

/// Units per SKU in orders now `pending_payment` (reserved) and now sold, over every order.
fn order_units(connection: &Connection) -> Result<(UnitsBySku, UnitsBySku), ApiError> {
    let mut transitions: HashMap<i64, Vec<(String, Option<i64>)>> = HashMap::new();
    let mut statement =
        connection.prepare("SELECT order_id, status, seq FROM order_transitions")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        transitions.entry(row.get(0)?).or_default().push((row.get(1)?, row.get(2)?));
    }
    let (mut reserved, mut sold) = (UnitsBySku::new(), UnitsBySku::new());
    let mut statement = connection.prepare("SELECT id, lines FROM orders")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let lines = parse_lines(&row.get::<_, String>(1)?)?;
        let status = current_status(
            transitions.get(&id).into_iter().flatten().map(|(status, seq)| (status.as_str(), *seq)),
        );
        let counted = if status == PENDING_PAYMENT {
            &mut reserved
        } else if is_sold(status) {
            &mut sold
        } else {
            continue;
        };
        for line in lines {
            *counted.entry(line.sku).or_default() += u64::from(line.quantity);
        }
    }
    Ok((reserved, sold))
}

/// The engine's progress and durability, and replication (none yet: this node is the primary).
async fn engine_status(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let services = state.services()?;
    // The engine answers producers before it publishes a batch's counters; reading them after a
    // query (which runs in a later batch) makes them cover every command submitted before.
    let live_orders = crate::query(&services.engine, surge_engine::Engine::live_orders).await?;
    let stats = services.engine.stats();
    Ok(Json(json!({
        "role": "primary",
        "sequence": stats.applied_sequence,
        "durable_sequence": stats.durable_sequence,
        "journal_bytes": stats.journal_bytes,
        "snapshot_sequence": stats.snapshot_sequence,
        "live_orders": live_orders,
        "queue_len": stats.queue_len,
        "queue_capacity": stats.queue_capacity,
        "replication": {"peer": null, "acked_sequence": null, "lag": null},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(rows: &[(&'static str, Option<i64>)]) -> &'static str {
        current_status(rows.iter().copied())
    }

    #[test]
    fn the_status_rule() {
        assert_eq!(status(&[]), PENDING_PAYMENT);
        assert_eq!(status(&[("confirmed", Some(7))]), "confirmed");
        // Recorded out of order: the sequence decides, not the insertion.
        assert_eq!(status(&[("shipped", Some(9)), ("confirmed", Some(7))]), "shipped");
        assert_eq!(status(&[("expired", Some(8)), ("refunded", None)]), REFUNDED);
        assert_eq!(status(&[("refunded", None), ("expired", Some(8))]), REFUNDED);
        assert_eq!(status(&[("pending_payment", Some(3))]), PENDING_PAYMENT);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(OrderId(42))), Some(42));
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("42")), None);
    }
}
