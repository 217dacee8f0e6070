//! Checkout: an idempotent, all-or-nothing reservation through the engine, then payment; and the
//! simple cart it can check out.
//!
//! The order of work matters for "never twice, never lost":
//! 1. claim the buyer's `Idempotency-Key` in memory (a concurrent duplicate answers `409`), then
//!    look it up durably (a finished one is replayed);
//! 2. resolve the lines (SKU → dense id and price) and the warehouses serving the postal code;
//! 3. submit one `Reserve` to the engine: it is durable in the journal before the answer comes back;
//! 4. write the order, its first transition and the idempotency record in one database transaction,
//!    and only then answer `201`;
//! 5. start the payment; its result arrives through the signed webhook (see [`crate::payments`]).
//!
//! A crash between 3 and 4 leaves a reservation without an order row: nobody was told about it, it
//! expires at its deadline, and a retry with the same key reserves afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use rusqlite::{params, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use surge_engine::limits::{LINES_PER_ORDER_MAX, WAREHOUSE_CHOICES_MAX};
use surge_engine::{
    BuyerId, Command, Expiry, LineMask, LineRequest, LineRequests, Outcome, Rejection, SkuId,
    WarehouseChoices, WarehouseId,
};

use crate::auth::{Caller, Role};
use crate::catalog::{SkuInfo, WarehouseInfo};
use crate::error::ApiError;
use crate::json::Json;
use crate::{now_rfc3339, order_id_string, AppState, Services};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/checkout", post(checkout))
        .route("/v1/cart", get(get_cart).delete(clear_cart))
        .route("/v1/cart/items/{sku}", put(put_cart_item).delete(delete_cart_item))
}

/// The most units of one SKU in one line.
const LINE_QUANTITY_MAX: u32 = 10_000;

/// Idempotency keys being processed right now, with the hash of their request.
#[derive(Debug, Default)]
pub struct InFlight {
    keys: Mutex<HashMap<(i64, String), String>>,
}

/// Releases a claimed key when the request finishes, however it finishes.
struct Claim<'a> {
    in_flight: &'a InFlight,
    key: (i64, String),
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.in_flight
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl InFlight {
    fn claim(&self, user: i64, key: &str, hash: &str) -> Result<Claim<'_>, ApiError> {
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = (user, key.to_owned());
        if let Some(running) = keys.get(&entry) {
            return Err(if running == hash {
                ApiError::conflict("a request with this Idempotency-Key is still being processed")
            } else {
                ApiError::idempotency_key_reused()
            });
        }
        keys.insert(entry.clone(), hash.to_owned());
        Ok(Claim { in_flight: self, key: entry })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    shipping: Shipping,
    payment: Payment,
    #[serde(default)]
    items: Option<Vec<Item>>,
    #[serde(default)]
    expected_total_cents: Option<i64>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Shipping {
    name: String,
    line1: String,
    city: String,
    postal_code: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payment {
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    sku: String,
    quantity: u32,
}

/// A resolved line: what the buyer asked for and what it costs now.
struct PricedLine {
    info: SkuInfo,
    quantity: u32,
}

/// What the handler answers; stored under the idempotency key unless it is transient.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn from_error(error: &ApiError) -> Answer {
        Answer { status: error.status, body: error.body() }
    }

    /// `429` and `503` are not stored, so a retry is processed (API.md); neither are `500`s, which
    /// say nothing about the request.
    fn is_stored(&self) -> bool {
        !matches!(self.status.as_u16(), 429 | 500 | 503)
    }

    fn into_response(self, replayed: bool) -> Response {
        let content_type =
            if self.status.is_success() { "application/json" } else { "application/problem+json" };
        let mut response = (self.status, self.body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

async fn checkout(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = caller.require(Role::Buyer)?;
    let services = state.services()?;
    let key = idempotency_key(&headers)?;
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(ApiError::validation("Content-Type must be application/json"));
    }
    let document: Value = crate::json::parse(&body)?;
    // The same body means the same JSON document: key order and spacing do not matter.
    let hash = crate::auth::hex(&Sha256::digest(document.to_string().as_bytes()));

    let _claim = services.checkout.claim(caller.user_id, &key, &hash)?;
    if let Some(stored) = stored_answer(services, caller.user_id, &key).await? {
        let (stored_hash, answer) = stored;
        if stored_hash != hash {
            return Err(ApiError::idempotency_key_reused());
        }
        return Ok(answer.into_response(true));
    }

    let stored_key = StoredKey { user: caller.user_id, key, hash };
    let answer = match place_order(&state, caller, document, &stored_key).await {
        Ok(answer) => answer,
        Err(error) => {
            let answer = Answer::from_error(&error);
            if answer.is_stored() {
                store_answer(services, &stored_key, &answer).await?;
            }
            return Err(error);
        }
    };
    Ok(answer.into_response(false))
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| ApiError::validation("Idempotency-Key: header required"))?
        .to_str()
        .map_err(|_| ApiError::validation("Idempotency-Key: visible ASCII only"))?;
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::validation("Idempotency-Key: 1 to 255 characters"));
    }
    Ok(key.to_owned())
}

struct StoredKey {
    user: i64,
    key: String,
    hash: String,
}

async fn stored_answer(
    services: &Services,
    user: i64,
    key: &str,
) -> Result<Option<(String, Answer)>, ApiError> {
    let key = key.to_owned();
    services
        .db
        .read(move |connection| {
            let row: Option<(String, Option<u16>, Option<String>)> = connection
                .query_row(
                    "SELECT request_hash, status, response FROM idempotency WHERE user_id = ?1 AND key = ?2",
                    params![user, key],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let Some((hash, Some(status), Some(response))) = row else {
                return Ok(None);
            };
            let status = StatusCode::from_u16(status).map_err(ApiError::internal)?;
            let body = serde_json::from_str(&response).map_err(ApiError::internal)?;
            Ok(Some((hash, Answer { status, body })))
        })
        .await
}

fn insert_answer(
    tx: &rusqlite::Transaction<'_>,
    stored: &StoredKey,
    answer: &Answer,
) -> Result<(), ApiError> {
    tx.execute(
        "INSERT OR REPLACE INTO idempotency (user_id, key, request_hash, status, response, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![stored.user, stored.key, stored.hash, answer.status.as_u16(), answer.body.to_string(), now_rfc3339()],
    )?;
    Ok(())
}

async fn store_answer(
    services: &Services,
    stored: &StoredKey,
    answer: &Answer,
) -> Result<(), ApiError> {
    let stored =
        StoredKey { user: stored.user, key: stored.key.clone(), hash: stored.hash.clone() };
    let answer = Answer { status: answer.status, body: answer.body.clone() };
    services.db.write(move |tx| insert_answer(tx, &stored, &answer)).await
}

async fn place_order(
    state: &Arc<AppState>,
    caller: Caller,
    document: Value,
    stored_key: &StoredKey,
) -> Result<Answer, ApiError> {
    let services = state.services()?;
    let request: CheckoutRequest = serde_path_to_error::deserialize(document)
        .map_err(|error| ApiError::validation(format!("{}: {}", error.path(), error.inner())))?;
    validate_shipping(&request.shipping)?;
    if request.payment.token.is_empty() || request.payment.token.len() > 255 {
        return Err(ApiError::validation("payment.token: 1 to 255 characters"));
    }
    let from_cart = request.items.is_none();
    let items = match request.items {
        Some(items) => items,
        None => cart_items(services, caller.user_id).await?,
    };
    let lines = resolve_lines(services, &items, from_cart)?;
    let currency = lines[0].info.currency.clone();
    let mut total_cents: i64 = 0;
    for line in &lines {
        let cost = line.info.price_cents.checked_mul(i64::from(line.quantity));
        total_cents = cost
            .and_then(|cost| total_cents.checked_add(cost))
            .ok_or_else(|| ApiError::validation("items: the total is too large"))?;
    }
    if let Some(expected) = request.expected_total_cents {
        if expected != total_cents {
            return Err(ApiError::price_changed(format!(
                "the total is {total_cents} {currency}, not the expected {expected}"
            )));
        }
    }

    let postal_code = request.shipping.postal_code.trim().to_owned();
    let candidates: Vec<(WarehouseInfo, u32)> = services
        .catalog
        .warehouses_for(&postal_code)
        .into_iter()
        .take(WAREHOUSE_CHOICES_MAX)
        .collect();
    let skus: Vec<String> = lines.iter().map(|line| line.info.sku.clone()).collect();
    if candidates.is_empty() {
        return Err(ApiError::not_deliverable(skus));
    }

    let ttl_ns = u64::try_from(services.config.reservation_ttl.as_nanos()).unwrap_or(u64::MAX);
    let requests: Vec<LineRequest> = lines
        .iter()
        .map(|line| LineRequest { sku: line.info.id, quantity: line.quantity })
        .collect();
    let warehouses: Vec<_> = candidates.iter().map(|(warehouse, _)| warehouse.id).collect();
    let command = Command::Reserve {
        buyer: BuyerId(u64::try_from(caller.user_id).map_err(ApiError::internal)?),
        expiry: Expiry::After { ttl_ns },
        cart: None,
        lines: LineRequests::from_slice(&requests).expect("at most LINES_PER_ORDER_MAX lines"),
        warehouses: WarehouseChoices::from_slice(&warehouses)
            .expect("at most WAREHOUSE_CHOICES_MAX"),
    };
    let applied = crate::submit(&services.engine, command).await?;
    let (order, expires_at, reserved) = match applied.outcome {
        Outcome::Reserved { order, expires_at, lines } => (order, expires_at, lines),
        Outcome::Rejected(Rejection::OutOfStock { lines: mask, .. }) => {
            return Err(stock_refusal(services, &lines, mask, warehouses).await?);
        }
        Outcome::Rejected(Rejection::PurchaseLimitExceeded { lines: mask }) => {
            let over: Vec<&str> = masked(&skus, mask).collect();
            return Err(ApiError::purchase_limit_exceeded(format!(
                "the per-buyer limit of {} would be exceeded",
                over.join(", ")
            )));
        }
        Outcome::Rejected(Rejection::CapacityReached { .. }) => return Err(ApiError::overloaded()),
        other => {
            return Err(ApiError::internal(format!("unexpected reservation outcome {other:?}")))
        }
    };

    let created_at = crate::time::rfc3339(applied.at);
    let expires_at_text = crate::time::rfc3339(expires_at);
    let line_values: Vec<Value> = lines
        .iter()
        .zip(reserved.as_slice())
        .map(|(line, reserved)| {
            let warehouse = candidates
                .iter()
                .find(|(warehouse, _)| warehouse.id == reserved.warehouse)
                .map_or_else(String::new, |(warehouse, _)| warehouse.name.clone());
            json!({
                "sku": line.info.sku,
                "quantity": line.quantity,
                "unit_price_cents": line.info.price_cents,
                "warehouse": warehouse,
            })
        })
        .collect();
    let body = json!({
        "order_id": order_id_string(order),
        "status": "pending_payment",
        "lines": line_values,
        "total_cents": total_cents,
        "currency": currency,
        "created_at": created_at,
        "expires_at": expires_at_text,
    });
    let answer = Answer { status: StatusCode::CREATED, body };

    let record = OrderRow {
        id: i64::try_from(order.0).map_err(ApiError::internal)?,
        buyer: caller.user_id,
        created_at,
        expires_at: expires_at_text,
        total_cents,
        currency: currency.clone(),
        lines: Value::Array(line_values),
        shipping: serde_json::to_value(&request.shipping).map_err(ApiError::internal)?,
        token: request.payment.token.clone(),
        skus: lines
            .iter()
            .map(|line| (line.info.sku.clone(), line.info.seller_id, line.quantity))
            .collect(),
        from_cart,
    };
    let stored = StoredKey {
        user: stored_key.user,
        key: stored_key.key.clone(),
        hash: stored_key.hash.clone(),
    };
    let stored_body = answer.body.clone();
    let written = services
        .db
        .write(move |tx| {
            insert_order(tx, &record)?;
            insert_answer(tx, &stored, &Answer { status: StatusCode::CREATED, body: stored_body })
        })
        .await;
    if let Err(error) = written {
        // Nobody will learn of this reservation: give the units back now rather than at expiry.
        let release = Command::Release { order, reason: surge_engine::ReleaseReason::Cancelled };
        let _ = crate::submit(&services.engine, release).await;
        return Err(error);
    }
    crate::payments::start(state, order, request.payment.token, total_cents, currency, expires_at);
    Ok(answer)
}

struct OrderRow {
    id: i64,
    buyer: i64,
    created_at: String,
    expires_at: String,
    total_cents: i64,
    currency: String,
    lines: Value,
    shipping: Value,
    token: String,
    skus: Vec<(String, i64, u32)>,
    from_cart: bool,
}

fn insert_order(tx: &rusqlite::Transaction<'_>, order: &OrderRow) -> Result<(), ApiError> {
    tx.execute(
        "INSERT INTO orders (id, buyer_id, created_at, expires_at, total_cents, currency, lines, shipping, payment_token)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            order.id,
            order.buyer,
            order.created_at,
            order.expires_at,
            order.total_cents,
            order.currency,
            order.lines.to_string(),
            order.shipping.to_string(),
            order.token
        ],
    )?;
    for (sku, seller, quantity) in &order.skus {
        tx.execute(
            "INSERT INTO order_skus (order_id, sku, seller_id, quantity) VALUES (?1, ?2, ?3, ?4)",
            params![order.id, sku, seller, quantity],
        )?;
    }
    // The reservation's own transition: its sequence is the order id.
    tx.execute(
        "INSERT OR IGNORE INTO order_transitions (order_id, status, at, seq) VALUES (?1, 'pending_payment', ?2, ?1)",
        params![order.id, order.created_at],
    )?;
    tx.execute(
        "INSERT INTO payments (order_id, token, amount_cents, currency, status, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
        params![order.id, order.token, order.total_cents, order.currency, order.created_at],
    )?;
    if order.from_cart {
        tx.execute("DELETE FROM carts WHERE user_id = ?1", [order.buyer])?;
    }
    Ok(())
}

fn validate_shipping(shipping: &Shipping) -> Result<(), ApiError> {
    for (field, value) in [
        ("shipping.name", &shipping.name),
        ("shipping.line1", &shipping.line1),
        ("shipping.city", &shipping.city),
    ] {
        if value.trim().is_empty() || value.len() > 200 {
            return Err(ApiError::validation(format!("{field}: 1 to 200 characters")));
        }
    }
    let code = shipping.postal_code.trim();
    if code.is_empty()
        || code.len() > 16
        || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
    {
        return Err(ApiError::validation(
            "shipping.postal_code: 1 to 16 letters, digits, spaces or dashes",
        ));
    }
    Ok(())
}

fn resolve_lines(
    services: &Services,
    items: &[Item],
    from_cart: bool,
) -> Result<Vec<PricedLine>, ApiError> {
    let field = if from_cart { "cart" } else { "items" };
    if items.is_empty() {
        return Err(ApiError::validation(format!("{field}: nothing to check out")));
    }
    if items.len() > LINES_PER_ORDER_MAX {
        return Err(ApiError::validation(format!("{field}: at most {LINES_PER_ORDER_MAX} lines")));
    }
    let mut unknown = Vec::new();
    let mut lines: Vec<PricedLine> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if item.quantity == 0 || item.quantity > LINE_QUANTITY_MAX {
            return Err(ApiError::validation(format!(
                "{field}[{index}].quantity: 1 to {LINE_QUANTITY_MAX}"
            )));
        }
        if items[..index].iter().any(|earlier| earlier.sku == item.sku) {
            return Err(ApiError::validation(format!(
                "{field}[{index}].sku: {} appears twice",
                item.sku
            )));
        }
        match services.catalog.sku(&item.sku) {
            Some(info) => lines.push(PricedLine { info, quantity: item.quantity }),
            None => unknown.push(item.sku.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::not_found_skus(unknown));
    }
    if lines.iter().any(|line| line.info.currency != lines[0].info.currency) {
        return Err(ApiError::validation(format!("{field}: all lines must be in one currency")));
    }
    Ok(lines)
}

fn masked(skus: &[String], mask: LineMask) -> impl Iterator<Item = &str> {
    skus.iter()
        .enumerate()
        .filter(move |(index, _)| mask.contains(*index))
        .map(|(_, sku)| sku.as_str())
}

/// `out_of_stock`, or `not_deliverable` when every refused line has the units in a warehouse that
/// does not deliver to the postal code. Only warehouses outside `candidates` count: units that
/// appeared in a candidate since the refusal (a release racing this request) must not turn an
/// `out_of_stock` into a `not_deliverable`.
async fn stock_refusal(
    services: &Services,
    lines: &[PricedLine],
    mask: LineMask,
    candidates: Vec<WarehouseId>,
) -> Result<ApiError, ApiError> {
    let refused: Vec<(SkuId, u32, String)> = lines
        .iter()
        .enumerate()
        .filter(|(index, _)| mask.contains(*index))
        .map(|(_, line)| (line.info.id, line.quantity, line.info.sku.clone()))
        .collect();
    let skus: Vec<String> = refused.iter().map(|(_, _, sku)| sku.clone()).collect();
    let others_exist =
        services.catalog.warehouses().iter().any(|warehouse| !candidates.contains(&warehouse.id));
    if !others_exist {
        // Every warehouse was a candidate: there is nowhere else the units could be.
        return Ok(ApiError::out_of_stock(skus));
    }
    let ids: Vec<(SkuId, u32)> = refused.iter().map(|(id, quantity, _)| (*id, *quantity)).collect();
    let elsewhere = crate::query(&services.engine, move |engine| {
        ids.iter().all(|(sku, quantity)| {
            engine.stock_by_warehouse(*sku).iter().any(|(warehouse, level)| {
                !candidates.contains(warehouse) && level.available() >= *quantity
            })
        })
    })
    .await?;
    Ok(if elsewhere { ApiError::not_deliverable(skus) } else { ApiError::out_of_stock(skus) })
}

// ----- The cart -----

async fn cart_items(services: &Services, user: i64) -> Result<Vec<Item>, ApiError> {
    services
        .db
        .read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT sku, quantity FROM carts WHERE user_id = ?1 ORDER BY added_at, sku",
            )?;
            let items = statement
                .query_map([user], |row| Ok(Item { sku: row.get(0)?, quantity: row.get(1)? }))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(items)
        })
        .await
}

async fn get_cart(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let caller = caller.require(Role::Buyer)?;
    let services = state.services()?;
    let user = caller.user_id;
    let rows: Vec<(String, u32, i64, String)> = services
        .db
        .read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT sku, quantity, unit_price_cents, currency FROM carts WHERE user_id = ?1 ORDER BY added_at, sku",
            )?;
            let rows = statement
                .query_map([user], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
    let infos: Vec<Option<SkuInfo>> =
        rows.iter().map(|(sku, ..)| services.catalog.sku(sku)).collect();
    let ids: Vec<Option<SkuId>> =
        infos.iter().map(|info| info.as_ref().map(|info| info.id)).collect();
    let available: Vec<u64> = crate::query(&services.engine, move |engine| {
        ids.iter()
            .map(|id| {
                id.map_or(0, |id| {
                    engine
                        .stock_by_warehouse(id)
                        .iter()
                        .map(|(_, level)| u64::from(level.available()))
                        .sum()
                })
            })
            .collect()
    })
    .await?;
    let mut total_cents: i64 = 0;
    let mut version = Sha256::new();
    let items: Vec<Value> = rows
        .iter()
        .zip(&infos)
        .zip(available)
        .map(|(((sku, quantity, price, currency), info), available)| {
            total_cents = total_cents.saturating_add(price.saturating_mul(i64::from(*quantity)));
            version.update(format!("{sku}:{quantity}:{price};"));
            json!({
                "sku": sku,
                "product_id": info.as_ref().map(|info| crate::product_id_string(info.product_id)),
                "title": info.as_ref().map(|info| info.title.clone()),
                "quantity": quantity,
                "unit_price_cents": price,
                "currency": currency,
                "available": available,
            })
        })
        .collect();
    let currency = rows.first().map(|(_, _, _, currency)| currency.clone());
    let digest = version.finalize();
    let version = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) >> 1;
    Ok(Json(
        json!({"items": items, "total_cents": total_cents, "currency": currency, "version": version}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CartLine {
    quantity: u32,
}

async fn put_cart_item(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(sku): Path<String>,
    Json(line): Json<CartLine>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller.require(Role::Buyer)?;
    let services = state.services()?;
    if line.quantity > LINE_QUANTITY_MAX {
        return Err(ApiError::validation(format!("quantity: 0 to {LINE_QUANTITY_MAX}")));
    }
    let info =
        services.catalog.sku(&sku).ok_or_else(|| ApiError::not_found_skus(vec![sku.clone()]))?;
    let user = caller.user_id;
    services
        .db
        .write(move |tx| {
            if line.quantity == 0 {
                tx.execute(
                    "DELETE FROM carts WHERE user_id = ?1 AND sku = ?2",
                    params![user, info.sku],
                )?;
                return Ok(());
            }
            let lines: i64 = tx.query_row(
                "SELECT COUNT(*) FROM carts WHERE user_id = ?1 AND sku != ?2",
                params![user, info.sku],
                |row| row.get(0),
            )?;
            if lines >= LINES_PER_ORDER_MAX as i64 {
                return Err(ApiError::validation(format!(
                    "cart: at most {LINES_PER_ORDER_MAX} lines"
                )));
            }
            // The price is the one when the item was first added (API.md); a quantity change keeps it.
            tx.execute(
                "INSERT INTO carts (user_id, sku, quantity, unit_price_cents, currency, added_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (user_id, sku) DO UPDATE SET quantity = excluded.quantity",
                params![
                    user,
                    info.sku,
                    line.quantity,
                    info.price_cents,
                    info.currency,
                    now_rfc3339()
                ],
            )?;
            Ok(())
        })
        .await?;
    get_cart(State(state), caller).await
}

async fn delete_cart_item(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(sku): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = caller.require(Role::Buyer)?;
    let user = caller.user_id;
    state
        .services()?
        .db
        .write(move |tx| {
            tx.execute("DELETE FROM carts WHERE user_id = ?1 AND sku = ?2", params![user, sku])?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_cart(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let caller = caller.require(Role::Buyer)?;
    let user = caller.user_id;
    state
        .services()?
        .db
        .write(move |tx| {
            tx.execute("DELETE FROM carts WHERE user_id = ?1", [user])?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
