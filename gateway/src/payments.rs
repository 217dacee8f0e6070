//! Payments: the provider trait, the built-in sandbox provider, and the signed webhook through
//! which every provider (the sandbox included) reports results.
//!
//! A charge carries the order id as its idempotency key. The webhook's result becomes an engine
//! command: success commits the reservation, failure releases it. When success arrives after the
//! reservation expired, the engine refuses the commit (the units may already be sold to someone
//! else) and the payment is refunded: the order ends `refunded`, never sold twice.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use surge_engine::{Command, OrderId, OrderState, Outcome, Rejection, ReleaseReason, Timestamp};

use crate::error::ApiError;
use crate::orders::{record_transition, state_name};
use crate::{order_id_string, parse_order_id, AppState, Services};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/payments/webhook", post(webhook))
}

/// How far a webhook's timestamp may be from our clock.
const SIGNATURE_TOLERANCE_SECONDS: u64 = 300;

/// A charge the provider is asked to make.
#[derive(Clone, Debug)]
pub struct Charge {
    pub order: OrderId,
    pub token: String,
    pub amount_cents: i64,
    pub currency: String,
    /// The reservation's deadline (the sandbox's `tok_late` pays just after it).
    pub expires_at: Timestamp,
}

/// A payment provider. Results come back asynchronously through [`WebhookSink`], signed.
pub trait PaymentProvider: Send + Sync + std::fmt::Debug {
    /// Starts a charge. The order id is the provider's idempotency key: charging it twice charges
    /// once.
    fn charge(&self, charge: Charge, webhook: WebhookSink);
    /// Returns the money of an order.
    fn refund(&self, order: OrderId, amount_cents: i64);
}

/// Where a provider running in this process delivers its webhooks: the same function the HTTP
/// route calls, signature check included.
#[derive(Clone, Debug)]
pub struct WebhookSink {
    state: Arc<AppState>,
}

impl WebhookSink {
    pub async fn deliver(&self, signature: &str, body: &[u8]) -> Result<(), ApiError> {
        process_webhook(&self.state, Some(signature), body).await
    }
}

/// The body of a webhook event.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEvent {
    /// Unique per event; a repeated id is acknowledged and ignored.
    pub id: String,
    /// `payment.succeeded` or `payment.failed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: String,
}

/// The `Surge-Signature` header for `body` at Unix time `t`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", crate::auth::hex(&mac(secret, t, body).finalize().into_bytes()))
}

fn mac(secret: &str, t: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn verify(secret: &str, header: Option<&str>, body: &[u8]) -> Result<(), ApiError> {
    let header = header.ok_or_else(|| ApiError::unauthorized("missing Surge-Signature"))?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = decode_hex(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(ApiError::unauthorized("Surge-Signature must be t=<unix>,v1=<hex>"));
    };
    if crate::auth::unix_now().abs_diff(t) > SIGNATURE_TOLERANCE_SECONDS {
        return Err(ApiError::unauthorized("Surge-Signature timestamp is too far from now"));
    }
    mac(secret, t, body)
        .verify_slice(&v1)
        .map_err(|_| ApiError::unauthorized("Surge-Signature does not match"))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

async fn webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let signature = headers.get("surge-signature").and_then(|value| value.to_str().ok());
    process_webhook(&state, signature, &body).await?;
    Ok(StatusCode::OK)
}

/// Verifies, deduplicates and applies one webhook event.
pub async fn process_webhook(
    state: &Arc<AppState>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), ApiError> {
    let services = state.services()?;
    verify(&services.config.webhook_secret, signature, body)?;
    let event: WebhookEvent = crate::json::parse(body)?;
    if event.id.is_empty() || event.id.len() > 255 {
        return Err(ApiError::validation("id: 1 to 255 characters"));
    }
    let id = event.id.clone();
    let seen = services
        .db
        .read(move |connection| {
            Ok(connection
                .query_row("SELECT 1 FROM webhook_events WHERE id = ?1", [&id], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await?;
    if seen {
        return Ok(());
    }
    let Some(order) = parse_order_id(&event.order_id) else {
        return Err(ApiError::not_found("no such order"));
    };
    match event.kind.as_str() {
        "payment.succeeded" => payment_succeeded(services, order).await?,
        "payment.failed" => payment_failed(services, order).await?,
        other => return Err(ApiError::validation(format!("type: unknown event type {other}"))),
    }
    // Recorded after processing: a failure above lets the provider's retry run it again, and every
    // step above is safe to repeat.
    let id = event.id;
    services
        .db
        .write(move |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO webhook_events (id, received_at) VALUES (?1, ?2)",
                params![id, crate::now_rfc3339()],
            )?;
            Ok(())
        })
        .await
}

async fn payment_succeeded(services: &Services, order: OrderId) -> Result<(), ApiError> {
    let applied = crate::submit(&services.engine, Command::Commit { order }).await?;
    match applied.outcome {
        Outcome::Transitioned { state: OrderState::Confirmed, .. } => {
            record_transition(&services.db, order, "confirmed", Some(applied.sequence.0)).await?;
            set_payment_status(services, order, "captured").await?;
        }
        Outcome::Rejected(Rejection::Expired) => {
            // The deadline passed before the money arrived: the units went back to the shelf.
            record_transition(
                &services.db,
                order,
                state_name(OrderState::Expired),
                Some(applied.sequence.0),
            )
            .await?;
            refund_late_payment(services, order).await?;
        }
        // A repeated success for an order already paid.
        Outcome::Rejected(Rejection::AlreadyResolved { .. }) => {}
        Outcome::Rejected(Rejection::UnknownOrder) => {
            // Not live any more: paid and delivered (a repeat), or ended unpaid (expired, failed,
            // cancelled), in which case this money must go back.
            let status = crate::orders::load_order(&services.db, order)
                .await?
                .map(|o| o.status().to_owned());
            match status.as_deref() {
                None => return Err(ApiError::not_found("no such order")),
                Some("confirmed" | "shipped" | "delivered" | "refunded") => {}
                Some(_) => refund_late_payment(services, order).await?,
            }
        }
        other => return Err(ApiError::internal(format!("unexpected commit outcome {other:?}"))),
    }
    Ok(())
}

async fn payment_failed(services: &Services, order: OrderId) -> Result<(), ApiError> {
    let release = Command::Release { order, reason: ReleaseReason::PaymentFailed };
    let applied = crate::submit(&services.engine, release).await?;
    match applied.outcome {
        Outcome::Transitioned { state, .. }
        | Outcome::Rejected(Rejection::AlreadyResolved { state }) => {
            if state == OrderState::PaymentFailed {
                record_transition(&services.db, order, state_name(state), Some(applied.sequence.0))
                    .await?;
            }
        }
        Outcome::Rejected(Rejection::Expired) => {
            record_transition(
                &services.db,
                order,
                state_name(OrderState::Expired),
                Some(applied.sequence.0),
            )
            .await?;
        }
        Outcome::Rejected(Rejection::UnknownOrder) => {}
        other => return Err(ApiError::internal(format!("unexpected release outcome {other:?}"))),
    }
    set_payment_status(services, order, "failed").await
}

/// Marks the payment refunded and asks the provider for the money back, once per order. Returns
/// whether this call did it.
pub async fn refund(services: &Services, order: OrderId) -> Result<bool, ApiError> {
    let id = i64::try_from(order.0).map_err(ApiError::internal)?;
    let amount: Option<i64> = services
        .db
        .write(move |tx| {
            let amount: Option<i64> = tx
                .query_row(
                    "SELECT amount_cents FROM payments WHERE order_id = ?1 AND status != 'refunded'",
                    [id],
                    |row| row.get(0),
                )
                .optional()?;
            tx.execute(
                "UPDATE payments SET status = 'refunded', updated_at = ?2 WHERE order_id = ?1",
                params![id, crate::now_rfc3339()],
            )?;
            Ok(amount)
        })
        .await?;
    match amount {
        Some(amount) => {
            services.payments.refund(order, amount);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// A payment that arrived for an order that can no longer be sold: refund it and say so.
async fn refund_late_payment(services: &Services, order: OrderId) -> Result<(), ApiError> {
    refund(services, order).await?;
    record_transition(&services.db, order, crate::orders::REFUNDED, None).await
}

async fn set_payment_status(
    services: &Services,
    order: OrderId,
    status: &'static str,
) -> Result<(), ApiError> {
    let id = i64::try_from(order.0).map_err(ApiError::internal)?;
    services
        .db
        .write(move |tx| {
            tx.execute(
                "UPDATE payments SET status = ?2, updated_at = ?3 WHERE order_id = ?1 AND status = 'pending'",
                params![id, status, crate::now_rfc3339()],
            )?;
            Ok(())
        })
        .await
}

/// Starts the payment of a freshly reserved order.
pub fn start(
    state: &Arc<AppState>,
    order: OrderId,
    token: String,
    amount_cents: i64,
    currency: String,
    expires_at: Timestamp,
) {
    let Ok(services) = state.services() else { return };
    let charge = Charge { order, token, amount_cents, currency, expires_at };
    services.payments.charge(charge, WebhookSink { state: Arc::clone(state) });
}

/// The built-in provider. It decides by token, like a real provider's test cards:
/// `tok_ok` succeeds, `tok_decline` (and any unknown token) fails, `tok_hang` never answers,
/// `tok_late` succeeds just after the reservation expired.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub secret: String,
    pub latency: Duration,
}

/// Deliveries are retried like a real provider's, with growing pauses, this many times.
const DELIVERY_ATTEMPTS: u32 = 8;

impl PaymentProvider for Sandbox {
    fn charge(&self, charge: Charge, webhook: WebhookSink) {
        let kind = match charge.token.as_str() {
            "tok_ok" | "tok_late" => "payment.succeeded",
            "tok_hang" => return,
            _ => "payment.failed",
        };
        let delay = if charge.token == "tok_late" {
            let wait_ns = charge.expires_at.0.saturating_sub(crate::time::now().0);
            Duration::from_nanos(wait_ns) + Duration::from_millis(500)
        } else {
            self.latency
        };
        let secret = self.secret.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let event = WebhookEvent {
                id: format!("evt_{}_{}", order_id_string(charge.order), kind.replace('.', "_")),
                kind: kind.to_owned(),
                order_id: order_id_string(charge.order),
            };
            let body = serde_json::to_vec(&event).expect("event serializes");
            let mut pause = Duration::from_millis(50);
            for attempt in 1..=DELIVERY_ATTEMPTS {
                let signature = sign(&secret, crate::auth::unix_now(), &body);
                match webhook.deliver(&signature, &body).await {
                    Ok(()) => return,
                    Err(error) if attempt < DELIVERY_ATTEMPTS => {
                        tracing::debug!(%error, attempt, "sandbox webhook delivery failed; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                    Err(error) => tracing::warn!(%error, "sandbox webhook delivery gave up"),
                }
            }
        });
    }

    fn refund(&self, order: OrderId, amount_cents: i64) {
        tracing::info!(order = %order_id_string(order), amount_cents, "sandbox refund");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject_tampering_and_skew() {
        let body = br#"{"id":"evt_1","type":"payment.succeeded","order_id":"o1"}"#;
        let now = crate::auth::unix_now();
        let header = sign("secret", now, body);
        assert!(verify("secret", Some(&header), body).is_ok());
        assert!(verify("other", Some(&header), body).is_err());
        assert!(verify("secret", Some(&header), b"{}").is_err());
        assert!(verify("secret", None, body).is_err());
        let stale = sign("secret", now - SIGNATURE_TOLERANCE_SECONDS - 5, body);
        assert!(verify("secret", Some(&stale), body).is_err());
        assert!(verify("secret", Some("t=1,v1=zz"), body).is_err());
    }
}
