//! Orders: listing and detail, cancel, ship, deliver, the seller's view, and reconciliation of
//! engine counters against the order records.
//!
//! The rows are a projection of the journal ([`crate::projector`]): this module never writes
//! them. A change (cancel, ship, deliver) is a command to the engine; once it is durable, the
//! answer waits for the projector to have written it and reads the order back. A read first waits
//! until the rows have followed the engine as of the request ([`Projected::caught_up`], bounded),
//! so an order that expired a millisecond ago, or was placed by the caller just now, shows as the
//! engine has it.
//!
//! [`Projected::caught_up`]: crate::projector::Projected::caught_up

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use surge_engine::{Command, OrderId, OrderState, Outcome, Rejection, ReleaseReason, SkuId};
use surge_orders_svc::{OrderLine, OrderStatus, PlacedOrder};

use crate::auth::{Caller, Role};
use crate::db::Db;
use crate::error::ApiError;
use crate::json::Json;
use crate::params::{Path, Query};
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

/// One step of an order's history: a status and when the engine stamped the command that caused
/// it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Transition {
    pub status: String,
    pub at: String,
}

/// An order as the projection stored it.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderRecord {
    pub placed: PlacedOrder,
    pub status: OrderStatus,
    pub shipping: Value,
    /// Oldest first.
    pub transitions: Vec<Transition>,
}

impl OrderRecord {
    pub fn id(&self) -> OrderId {
        self.placed.id
    }

    pub fn status(&self) -> &'static str {
        self.status.as_str()
    }

    /// `[{status, at}]`, oldest first, starting with `pending_payment`.
    pub fn history(&self) -> Vec<Value> {
        self.transitions.iter().map(|t| json!({"status": t.status, "at": t.at})).collect()
    }
}

/// The API name of an engine order state.
pub fn state_name(state: OrderState) -> &'static str {
    OrderStatus::of_engine(state).as_str()
}

/// The order as the buyer and admins see it.
pub fn order_json(order: &OrderRecord) -> Value {
    let placed = &order.placed;
    json!({
        "order_id": order_id_string(placed.id),
        "status": order.status(),
        "lines": placed.lines,
        "total_cents": placed.total_cents,
        "currency": placed.currency,
        "created_at": placed.created_at,
        "expires_at": placed.expires_at,
        "history": order.history(),
        "shipping": order.shipping,
    })
}

/// The short form of list pages.
fn order_summary_json(order: &OrderRecord) -> Value {
    let placed = &order.placed;
    json!({
        "order_id": order_id_string(placed.id),
        "status": order.status(),
        "total_cents": placed.total_cents,
        "currency": placed.currency,
        "created_at": placed.created_at,
        "lines": placed.lines,
    })
}

/// Loads an order and its history; `None` when there is no such order.
pub async fn load_order(db: &Db, order: OrderId) -> Result<Option<OrderRecord>, ApiError> {
    db.read(move |connection| read_order(connection, order)).await
}

/// What the checkout answered for `order` (to replay a `201`).
pub async fn placed_order(db: &Db, order: OrderId) -> Result<Option<PlacedOrder>, ApiError> {
    Ok(load_order(db, order).await?.map(|record| record.placed))
}

fn read_order(connection: &Connection, order: OrderId) -> Result<Option<OrderRecord>, ApiError> {
    let Ok(id) = i64::try_from(order.0) else {
        return Ok(None);
    };
    let row = connection
        .prepare_cached(
            "SELECT buyer_id, created_at, expires_at, total_cents, currency, lines, shipping, status,
                    history
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
                row.get::<_, String>(8)?,
            ))
        })
        .optional()?;
    let Some((
        buyer_id,
        created_at,
        expires_at,
        total_cents,
        currency,
        lines,
        shipping,
        status,
        history,
    )) = row
    else {
        return Ok(None);
    };
    let status = OrderStatus::parse(&status)
        .ok_or_else(|| ApiError::internal(format!("order {id} has status {status}")))?;
    Ok(Some(OrderRecord {
        placed: PlacedOrder {
            id: order,
            buyer_id,
            lines: parse_lines(&lines)?,
            total_cents,
            currency,
            created_at,
            expires_at,
        },
        status,
        shipping: serde_json::from_str(&shipping).map_err(ApiError::internal)?,
        transitions: serde_json::from_str(&history).map_err(ApiError::internal)?,
    }))
}

fn parse_lines(text: &str) -> Result<Vec<OrderLine>, ApiError> {
    serde_json::from_str(text).map_err(ApiError::internal)
}

/// Reads with `read` once the rows have followed the engine as of now.
async fn read_fresh<T, F>(services: &Services, read: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, ApiError> + Send + 'static,
{
    services.projected.caught_up(&services.engine).await?;
    services.db.read(read).await
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

type QueryParams = Result<Query<HashMap<String, String>>, ApiError>;

fn page(params: QueryParams) -> Result<Page, ApiError> {
    let Query(params) = params?;
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

/// `?status=` of a list, if given.
fn status_filter(params: &QueryParams) -> Result<Option<OrderStatus>, ApiError> {
    let Ok(Query(params)) = params else { return Ok(None) };
    params
        .get("status")
        .map(|text| {
            OrderStatus::parse(text)
                .ok_or_else(|| ApiError::validation(format!("status: no order status {text}")))
        })
        .transpose()
}

async fn list_orders(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Buyer)?;
    let status = status_filter(&params)?.map(OrderStatus::as_str);
    let page = page(params)?;
    let buyer = caller.user_id;
    let services = state.services()?;
    let (orders, next) = read_fresh(services, move |connection: &Connection| {
        let (ids, next) = page_ids(&page, |before, limit| {
            let mut statement = connection.prepare_cached(
                "SELECT id FROM orders WHERE buyer_id = ?1 AND id < ?2
                   AND (?4 IS NULL OR status = ?4)
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let ids = statement
                .query_map(params![buyer, before, limit, status], |row| row.get(0))?
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(ids)
        })?;
        Ok((read_orders(connection, &ids)?, next))
    })
    .await?;
    let orders: Vec<Value> = orders.iter().map(order_summary_json).collect();
    Ok(Json(json!({"orders": orders, "next_cursor": next})))
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
    let record = read_fresh(services, move |connection| read_order(connection, order))
        .await?
        .ok_or_else(not_found)?;
    if caller.is_admin() || (caller.role == Role::Buyer && record.placed.buyer_id == caller.user_id)
    {
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

/// Cancel: a pending order is released, a confirmed one cancelled (the projection then refunds
/// it: the refund is driven from the journal, so a client that goes away after the engine's
/// answer cannot lose it).
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
    let command = match order.status {
        OrderStatus::PendingPayment => {
            Command::Release { order: order.id(), reason: ReleaseReason::Cancelled }
        }
        OrderStatus::Confirmed => Command::Cancel { order: order.id() },
        other => {
            return Err(ApiError::conflict(format!(
                "an order that is {} cannot be cancelled",
                other.as_str()
            )))
        }
    };
    let mut applied = crate::submit(&services.engine, command).await?;
    // The rows can lag the engine: a payment may have confirmed the order since they were read.
    // Then the release finds it resolved, and the cancel of a confirmed order applies instead.
    if let Outcome::Rejected(Rejection::AlreadyResolved { state: OrderState::Confirmed }) =
        applied.outcome
    {
        applied = crate::submit(&services.engine, Command::Cancel { order: order.id() }).await?;
    }
    check_outcome(&applied)?;
    reload(services, order.id(), applied.sequence).await
}

/// Maps a refusal of an order command to `409 conflict`.
fn check_outcome(applied: &surge_pipeline::Applied) -> Result<(), ApiError> {
    match applied.outcome {
        Outcome::Transitioned { .. } => Ok(()),
        Outcome::Rejected(Rejection::Expired) => {
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

/// The order once the projection has written the command `sequence`.
async fn reload(
    services: &Services,
    order: OrderId,
    sequence: surge_engine::Sequence,
) -> Result<Json<Value>, ApiError> {
    services.projected.reach(sequence).await;
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
    let record = read_fresh(services, move |connection| read_order(connection, order))
        .await?
        .ok_or_else(not_found)?;
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
    if record.status.is_final() {
        return Err(ApiError::conflict(format!(
            "the order is {} and cannot change",
            record.status()
        )));
    }
    let applied = crate::submit(&services.engine, command(order)).await?;
    check_outcome(&applied)?;
    reload(services, order, applied.sequence).await
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
/// `total_cents` (of those lines), and the shipping address the seller needs to ship: only while
/// the order is paid and not cancelled (`confirmed`, `shipped`, `delivered`), `null` otherwise. A
/// buyer's address is not the seller's to see for an order that was never paid, or was cancelled.
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
            let mine = seller_skus(connection, seller, record.id())?;
            orders.push((record, mine));
        }
        Ok((orders, next))
    };
    let (orders, next) = read_fresh(services, read).await?;
    let orders: Vec<Value> = orders
        .iter()
        .map(|(record, mine)| {
            let lines: Vec<&OrderLine> =
                record.placed.lines.iter().filter(|line| mine.contains(&line.sku)).collect();
            let total: i64 =
                lines.iter().map(|line| line.unit_price_cents * i64::from(line.quantity)).sum();
            json!({
                "order_id": order_id_string(record.id()),
                "status": record.status(),
                "total_cents": total,
                "currency": record.placed.currency,
                "created_at": record.placed.created_at,
                "lines": lines,
                "shipping": if record.status.is_sold() { record.shipping.clone() } else { Value::Null },
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
    let services = state.services()?;
    let skus = read_fresh(services, move |connection| {
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
            if !record.status.is_sold() {
                continue;
            }
            let mine = seller_skus(connection, seller, record.id())?;
            for line in record.placed.lines.iter().filter(|line| mine.contains(&line.sku)) {
                let entry = per_sku
                    .entry(line.sku.clone())
                    .or_insert_with(|| (0, 0, record.placed.currency.clone()));
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
/// It waits for the projection to follow the engine first, so it is exact when the system is
/// quiet; during traffic, commands that arrive between the engine reads and the row reads can
/// show as mismatches that vanish when run again. Engine counters are read in chunks of SKUs; each
/// SKU is read atomically.
async fn reconciliation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let services = state.services()?;
    // The rows must have followed the engine first: a comparison against rows that lag would
    // report mismatches that are only the projection's delay.
    services.projected.caught_up(&services.engine).await?;
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
        for cells in crate::stock_cells(&services.engine, &ids).await? {
            let mut counters = EngineCounters::default();
            for (_, level) in cells {
                counters.reserved += u64::from(level.reserved);
                counters.sold += level.sold;
                let available = i64::from(level.on_hand) - i64::from(level.reserved);
                counters.available_min = counters.available_min.min(available);
            }
            engine_counters.push(counters);
        }
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
    let (mut reserved, mut sold) = (UnitsBySku::new(), UnitsBySku::new());
    let mut statement = connection.prepare(
        "SELECT s.sku, o.status, SUM(s.quantity) FROM order_skus s JOIN orders o ON o.id = s.order_id
         WHERE o.status IN ('pending_payment', 'confirmed', 'shipped', 'delivered')
         GROUP BY s.sku, o.status",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let sku: String = row.get(0)?;
        let status: String = row.get(1)?;
        let units: i64 = row.get(2)?;
        let counted =
            if status == OrderStatus::PendingPayment.as_str() { &mut reserved } else { &mut sold };
        *counted.entry(sku).or_default() += units.unsigned_abs();
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
    let progress = crate::progress(&services.engine).await?;
    let stats = services.engine.stats();
    Ok(Json(json!({
        "role": "primary",
        "sequence": progress.last_sequence.0,
        "durable_sequence": stats.durable_sequence,
        "followed_sequence": stats.followed_sequence,
        "projected_sequence": services.projected.through().0,
        "journal_bytes": stats.journal_bytes,
        "snapshot_sequence": stats.snapshot_sequence,
        "live_orders": progress.live_orders,
        "queue_len": stats.queue_len,
        "queue_capacity": stats.queue_capacity,
        "replication": {"peer": null, "acked_sequence": null, "lag": null},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(OrderId(42))), Some(42));
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("42")), None);
    }
}
