//! Checkout: an idempotent, all-or-nothing reservation through the engine whose journal record is
//! the order; and the cart it can check out.
//!
//! The request path touches no database for a buy-now checkout:
//! 1. parse and validate the body; claim the buyer's `Idempotency-Key` in memory
//!    ([`crate::keys`]): a concurrent duplicate answers `409`, an answered key is replayed;
//! 2. resolve the lines (SKU → dense id, price, seller) and the warehouses serving the postal code
//!    from the in-memory catalog registry;
//! 3. submit one `Reserve` carrying the [`CheckoutRecord`] (key, request digest, priced lines,
//!    shipping, payment token) as its journal attachment, with the deadline left to the
//!    sequencer's stamp plus the reservation window;
//! 4. answer from the engine's outcome once the batch holding it is durable: `201` with the order,
//!    or the refusal.
//!
//! Everything else (the order row, its payment, the answer stored under the key, emptying a
//! checked-out cart, starting the charge) is the projection's ([`crate::projector`]), written from
//! the journal behind the answer. So a client that goes away after step 3, a request timeout or a
//! crash loses nothing: the journal holds the reservation with everything about it, the projector
//! settles the key and starts the payment, and a retry with the same key replays the answer.
//!
//! A cart checkout also reads the cart (items and version) and claims that version in the same
//! `Reserve`: the engine refuses a second reservation of a version already claimed by a live order
//! (`409 conflict`), so two tabs or a double click buy a cart once.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use surge_engine::limits::{LINES_PER_ORDER_MAX, WAREHOUSE_CHOICES_MAX};
use surge_engine::{
    BuyerId, CartVersion, Command, Expiry, LineRequest, LineRequests, OrderId, Outcome, Rejection,
    Sequence, SkuId, WarehouseChoices,
};
use surge_orders_svc::{Answer, CheckoutRecord, OrderLine, PlacedOrder, RecordLine, Shipping};

use crate::auth::{Caller, Role};
use crate::catalog::SkuInfo;
use crate::error::ApiError;
use crate::json::Json;
use crate::keys::{self, Lookup, RequestHash};
use crate::params::Path;
use crate::{now_rfc3339, order_id_string, AppState, Services};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/checkout", post(checkout))
        .route("/v1/cart", get(get_cart).delete(clear_cart))
        .route("/v1/cart/items/{sku}", put(put_cart_item).delete(delete_cart_item))
}

/// The most units of one SKU in one line.
const LINE_QUANTITY_MAX: u32 = 10_000;
/// The longest shipping field, in bytes.
const SHIPPING_FIELD_MAX: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    shipping: ShippingRequest,
    payment: Payment,
    #[serde(default)]
    items: Option<Vec<Item>>,
    #[serde(default)]
    expected_total_cents: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShippingRequest {
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

impl CheckoutRequest {
    /// The digest of the request as parsed, so key order and spacing of the JSON do not matter:
    /// two bodies with the same digest ask for the same checkout.
    fn digest(&self) -> RequestHash {
        let mut digest = Sha256::new();
        let mut field = |bytes: &[u8]| {
            digest.update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_le_bytes());
            digest.update(bytes);
        };
        let shipping = &self.shipping;
        for text in [&shipping.name, &shipping.line1, &shipping.city, &shipping.postal_code] {
            field(text.as_bytes());
        }
        field(self.payment.token.as_bytes());
        match &self.expected_total_cents {
            Some(total) => field(&total.to_le_bytes()),
            None => field(b"no expected total"),
        }
        match &self.items {
            None => field(b"the cart"),
            Some(items) => {
                field(&u64::try_from(items.len()).unwrap_or(u64::MAX).to_le_bytes());
                for item in items {
                    field(item.sku.as_bytes());
                    field(&item.quantity.to_le_bytes());
                }
            }
        }
        digest.finalize()[..16].try_into().expect("16 bytes")
    }
}

/// `201` with the placed order (the first answer and every replay of it).
fn placed_response(order: &PlacedOrder, replayed: bool) -> Response {
    /// The body, serialized straight from the order (no intermediate JSON value).
    #[derive(Serialize)]
    struct Body<'a> {
        order_id: String,
        status: &'static str,
        lines: &'a [OrderLine],
        total_cents: i64,
        currency: &'a str,
        created_at: &'a str,
        expires_at: &'a str,
    }
    let body = Body {
        order_id: order_id_string(order.id),
        status: "pending_payment",
        lines: &order.lines,
        total_cents: order.total_cents,
        currency: &order.currency,
        created_at: &order.created_at,
        expires_at: &order.expires_at,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if replayed {
        mark_replayed(&mut response);
    }
    response
}

fn mark_replayed(response: &mut Response) {
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
}

/// The problem document of a refusal the engine decided.
fn refusal(answer: &Answer) -> ApiError {
    match answer {
        Answer::OutOfStock { skus } => ApiError::out_of_stock(skus.clone()),
        Answer::NotDeliverable { skus } => ApiError::not_deliverable(skus.clone()),
        Answer::PurchaseLimitExceeded { skus } => ApiError::purchase_limit_exceeded(format!(
            "the per-buyer limit of {} would be exceeded",
            skus.join(", ")
        )),
        Answer::CartAlreadyCheckedOut => {
            ApiError::conflict("this version of the cart was already checked out")
        }
        Answer::Placed { .. } => ApiError::internal("a placed order is not a refusal"),
    }
}

fn replayed_error(error: &ApiError) -> Response {
    let mut response = error.clone().into_response();
    mark_replayed(&mut response);
    response
}

async fn checkout(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Json(request): Json<CheckoutRequest>,
) -> Result<Response, ApiError> {
    let caller = caller.require(Role::Buyer)?;
    let services = state.services()?;
    let key = idempotency_key(&headers)?;
    let request_hash = request.digest();
    let key_id = keys::key_id(caller.user_id, &key);
    let now = crate::time::now().0;
    let mut lookup = services.keys.claim(key_id, request_hash, now);
    if matches!(lookup, Lookup::Unknown) {
        // Memory dropped keys for room: the store decides whether this one was used.
        match stored_key(services, caller.user_id, &key).await? {
            Some((stored_hash, _)) if stored_hash != request_hash => {
                return Err(ApiError::idempotency_key_reused())
            }
            Some((_, sequence)) => return replay(services, sequence).await,
            None => lookup = services.keys.claim_unknown(key_id, request_hash, now),
        }
    }
    let claim = match lookup {
        Lookup::Claimed(claim) => claim,
        Lookup::InFlight => {
            return Err(ApiError::conflict(
                "a request with this Idempotency-Key is still being processed",
            ))
        }
        Lookup::Reused => return Err(ApiError::idempotency_key_reused()),
        Lookup::Journaled(sequence) => return replay(services, sequence).await,
        Lookup::Refused(error) => return Ok(replayed_error(&error)),
        Lookup::Unknown => return Err(ApiError::internal("an unknown key stayed unknown")),
    };
    place_order(services, caller, key, request_hash, request, claim).await
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

/// Everything up to the engine's answer. Refusals decided here are kept under the key (in memory)
/// unless transient; the engine's answers are the journal's.
async fn place_order(
    services: &Services,
    caller: Caller,
    key: String,
    request_hash: RequestHash,
    request: CheckoutRequest,
    mut claim: keys::Claim<'_>,
) -> Result<Response, ApiError> {
    let prepared = match prepare(services, caller, key, request_hash, request).await {
        Ok(prepared) => prepared,
        Err(error) => {
            if is_kept(&error) {
                claim.refused(error.clone());
            }
            return Err(error);
        }
    };
    let Prepared { command, record } = prepared;
    let ticket =
        services.engine.try_submit_with(command, record.to_bytes()).map_err(crate::submit_error)?;
    claim.submitted();
    let applied = ticket.outcome().await.map_err(crate::submit_error)?;
    let Some(answer) = Answer::of_outcome(&record, &applied.outcome) else {
        claim.release();
        return Err(match applied.outcome {
            Outcome::Rejected(Rejection::CapacityReached { .. }) => ApiError::overloaded(),
            other => ApiError::internal(format!("unexpected reservation outcome {other:?}")),
        });
    };
    claim.journaled(request_hash, applied.sequence, crate::time::now().0);
    match applied.outcome {
        Outcome::Reserved { order, expires_at, lines } => {
            let placed = PlacedOrder::new(
                order,
                caller.user_id,
                &record,
                &lines,
                applied.at,
                expires_at,
                &|id| services.catalog.warehouse_name(id),
            );
            Ok(placed_response(&placed, false))
        }
        _ => Err(refusal(&answer)),
    }
}

/// Whether a refusal decided before the engine is replayed for the same key: everything but the
/// transient answers (`429`, `500`, `503`), which a retry must process anew (API.md).
fn is_kept(error: &ApiError) -> bool {
    !matches!(error.status.as_u16(), 429 | 500 | 503)
}

/// A reservation ready to submit.
struct Prepared {
    command: Command,
    record: CheckoutRecord,
}

async fn prepare(
    services: &Services,
    caller: Caller,
    idempotency_key: String,
    request_hash: RequestHash,
    request: CheckoutRequest,
) -> Result<Prepared, ApiError> {
    let shipping = validate_shipping(request.shipping)?;
    if request.payment.token.is_empty() || request.payment.token.len() > 255 {
        return Err(ApiError::validation("payment.token: 1 to 255 characters"));
    }
    // A total is never negative: such an expectation is malformed, not a price that changed.
    if request.expected_total_cents.is_some_and(|expected| expected < 0) {
        return Err(ApiError::validation("expected_total_cents: 0 or more"));
    }
    let (items, cart) = match request.items {
        Some(items) => (items, None),
        None => {
            let (items, version) = cart_items(services, caller.user_id).await?;
            (items, Some(CartVersion(version)))
        }
    };
    let lines = resolve_lines(services, &items, cart.is_some())?;
    let currency = lines[0].0.currency.clone();
    let mut total_cents: i64 = 0;
    for (info, quantity) in &lines {
        let cost = info.price_cents.checked_mul(i64::from(*quantity));
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
    let skus: Vec<String> = lines.iter().map(|(info, _)| info.sku.clone()).collect();
    let warehouses: Vec<_> = services
        .catalog
        .warehouses_for(&shipping.postal_code)
        .into_iter()
        .take(WAREHOUSE_CHOICES_MAX)
        .map(|(warehouse, _)| warehouse.id)
        .collect();
    if warehouses.is_empty() {
        return Err(ApiError::not_deliverable(skus));
    }
    let ttl_ns = u64::try_from(services.config.reservation_ttl.as_nanos()).unwrap_or(u64::MAX);
    let requests: Vec<LineRequest> = lines
        .iter()
        .map(|(info, quantity)| LineRequest { sku: info.id, quantity: *quantity })
        .collect();
    let command = Command::Reserve {
        buyer: BuyerId(caller.user_id.unsigned_abs()),
        expiry: Expiry::After { ttl_ns },
        cart,
        lines: LineRequests::from_slice(&requests).expect("at most LINES_PER_ORDER_MAX lines"),
        warehouses: WarehouseChoices::from_slice(&warehouses)
            .expect("at most WAREHOUSE_CHOICES_MAX"),
    };
    let record = CheckoutRecord {
        idempotency_key,
        request_hash,
        currency,
        total_cents,
        lines: lines
            .iter()
            .map(|(info, _)| RecordLine {
                sku: info.sku.clone(),
                unit_price_cents: info.price_cents,
                seller_id: info.seller_id,
            })
            .collect(),
        shipping,
        payment_token: request.payment.token,
    };
    Ok(Prepared { command, record })
}

fn validate_shipping(shipping: ShippingRequest) -> Result<Shipping, ApiError> {
    for (field, value) in [
        ("shipping.name", &shipping.name),
        ("shipping.line1", &shipping.line1),
        ("shipping.city", &shipping.city),
    ] {
        if value.trim().is_empty() || value.len() > SHIPPING_FIELD_MAX {
            return Err(ApiError::validation(format!(
                "{field}: 1 to {SHIPPING_FIELD_MAX} characters"
            )));
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
    Ok(Shipping {
        postal_code: code.to_owned(),
        name: shipping.name,
        line1: shipping.line1,
        city: shipping.city,
    })
}

fn resolve_lines(
    services: &Services,
    items: &[Item],
    from_cart: bool,
) -> Result<Vec<(SkuInfo, u32)>, ApiError> {
    let field = if from_cart { "cart" } else { "items" };
    if items.is_empty() {
        return Err(ApiError::validation(format!("{field}: nothing to check out")));
    }
    if items.len() > LINES_PER_ORDER_MAX {
        return Err(ApiError::validation(format!("{field}: at most {LINES_PER_ORDER_MAX} lines")));
    }
    let mut unknown = Vec::new();
    let mut lines: Vec<(SkuInfo, u32)> = Vec::with_capacity(items.len());
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
            Some(info) => lines.push((info, item.quantity)),
            None => unknown.push(item.sku.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::not_found_skus(unknown));
    }
    if lines.iter().any(|(info, _)| info.currency != lines[0].0.currency) {
        return Err(ApiError::validation(format!("{field}: all lines must be in one currency")));
    }
    Ok(lines)
}

// ----- Replays -----

/// The stored hash and sequence of a key, from the projection's rows (only when memory no longer
/// holds every key, see [`crate::keys`]).
async fn stored_key(
    services: &Services,
    buyer: i64,
    key: &str,
) -> Result<Option<(RequestHash, Sequence)>, ApiError> {
    let key = key.to_owned();
    services
        .db
        .read(move |connection| {
            let row: Option<(Vec<u8>, i64)> = connection
                .prepare_cached(
                    "SELECT request_hash, seq FROM checkout_answers WHERE user_id = ?1 AND key = ?2",
                )?
                .query_row(params![buyer, key], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            Ok(row.and_then(|(hash, sequence)| {
                Some((hash.try_into().ok()?, Sequence(sequence.unsigned_abs())))
            }))
        })
        .await
}

/// Answers again what the journaled reservation `sequence` answered, from the projection's rows
/// (waiting for the projector to have written them).
async fn replay(services: &Services, sequence: Sequence) -> Result<Response, ApiError> {
    services.projected.reach(sequence).await;
    let seq = i64::try_from(sequence.0).map_err(ApiError::internal)?;
    let answer = services
        .db
        .read(move |connection| {
            let row: Option<(String, Option<i64>, Option<String>)> = connection
                .prepare_cached(
                    "SELECT outcome, order_id, skus FROM checkout_answers WHERE seq = ?1",
                )?
                .query_row([seq], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional()?;
            let Some((kind, order, skus)) = row else { return Ok(None) };
            let skus: Vec<String> = match skus {
                Some(text) => serde_json::from_str(&text).map_err(ApiError::internal)?,
                None => Vec::new(),
            };
            Ok(Answer::from_parts(&kind, order.map(|id| OrderId(id.unsigned_abs())), skus))
        })
        .await?
        .ok_or_else(|| {
            // The journal holds the answer; the projector has not written it yet (it is far
            // behind). A retry will find it.
            let mut error = ApiError::overloaded();
            error.detail = "the first answer to this key is still being recorded; retry".to_owned();
            error
        })?;
    match answer {
        Answer::Placed { order } => {
            let placed = crate::orders::placed_order(&services.db, order)
                .await?
                .ok_or_else(|| ApiError::internal(format!("order {} has no row", order.0)))?;
            Ok(placed_response(&placed, true))
        }
        refused => Ok(replayed_error(&refusal(&refused))),
    }
}

// ----- The cart -----

/// The cart's lines and its version (a counter that every change of the cart increments).
async fn cart_items(services: &Services, user: i64) -> Result<(Vec<Item>, u64), ApiError> {
    services
        .db
        .read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT sku, quantity FROM carts WHERE user_id = ?1 ORDER BY added_at, sku",
            )?;
            let items = statement
                .query_map([user], |row| Ok(Item { sku: row.get(0)?, quantity: row.get(1)? }))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((items, cart_version(connection, user)?))
        })
        .await
}

fn cart_version(connection: &rusqlite::Connection, user: i64) -> Result<u64, ApiError> {
    let version: Option<i64> = connection
        .prepare_cached("SELECT version FROM cart_versions WHERE user_id = ?1")?
        .query_row([user], |row| row.get(0))
        .optional()?;
    Ok(version.unwrap_or(0).unsigned_abs())
}

/// Every change of a cart goes through here: the version moves on, so a checkout that read the
/// cart before the change claims a version no other checkout can claim again.
fn bump_cart_version(tx: &rusqlite::Transaction<'_>, user: i64) -> Result<(), ApiError> {
    tx.prepare_cached(
        "INSERT INTO cart_versions (user_id, version) VALUES (?1, 1)
         ON CONFLICT (user_id) DO UPDATE SET version = version + 1",
    )?
    .execute([user])?;
    Ok(())
}

/// Carts are emptied by the projection, behind a checkout's answer: a cart read or change first
/// waits until the projection has followed the engine, so a buyer who just checked out never sees
/// (or edits) the cart they bought.
async fn cart_settled(services: &Services) -> Result<(), ApiError> {
    services.projected.caught_up(&services.engine).await.map(drop)
}

async fn get_cart(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let caller = caller.require(Role::Buyer)?;
    let services = state.services()?;
    cart_settled(services).await?;
    let user = caller.user_id;
    let (rows, version): (Vec<(String, u32, i64, String)>, u64) = services
        .db
        .read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT sku, quantity, unit_price_cents, currency FROM carts WHERE user_id = ?1 ORDER BY added_at, sku",
            )?;
            let rows = statement
                .query_map([user], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((rows, cart_version(connection, user)?))
        })
        .await?;
    let infos: Vec<Option<SkuInfo>> =
        rows.iter().map(|(sku, ..)| services.catalog.sku(sku)).collect();
    let ids: Vec<SkuId> = infos.iter().flatten().map(|info| info.id).collect();
    let available = crate::available_units(&services.engine, &ids).await?;
    let mut total_cents: i64 = 0;
    let items: Vec<Value> = rows
        .iter()
        .zip(&infos)
        .map(|((sku, quantity, price, currency), info)| {
            total_cents = total_cents.saturating_add(price.saturating_mul(i64::from(*quantity)));
            let available =
                info.as_ref().and_then(|info| available.get(&info.id).copied()).unwrap_or(0);
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
    cart_settled(services).await?;
    let user = caller.user_id;
    services
        .db
        .write(move |tx| {
            if line.quantity == 0 {
                tx.execute(
                    "DELETE FROM carts WHERE user_id = ?1 AND sku = ?2",
                    params![user, info.sku],
                )?;
                return bump_cart_version(tx, user);
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
            bump_cart_version(tx, user)
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
    let services = state.services()?;
    cart_settled(services).await?;
    services
        .db
        .write(move |tx| {
            tx.execute("DELETE FROM carts WHERE user_id = ?1 AND sku = ?2", params![user, sku])?;
            bump_cart_version(tx, user)
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
    let services = state.services()?;
    cart_settled(services).await?;
    services
        .db
        .write(move |tx| {
            tx.execute("DELETE FROM carts WHERE user_id = ?1", [user])?;
            bump_cart_version(tx, user)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
