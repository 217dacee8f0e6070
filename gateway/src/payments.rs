//! Payments: the provider trait, the built-in sandbox provider, and the signed webhook through
//! which every provider (the sandbox included) reports results.
//!
//! A charge carries the order id as its idempotency key. The webhook's result becomes an engine
//! command: success commits the reservation, failure releases it. When success arrives after the
//! reservation expired, the engine refuses the commit (the units may already be sold to someone
//! else) and the payment is refunded: the order ends `refunded`, never sold twice.
//!
//! Charges and refunds are driven from durable state, never from a request: the projection of the
//! journal says what is due ([`surge_orders_svc::Work`]), the [`Driver`] does it, and at start
//! whatever the rows still show as due is driven again ([`due_work`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use surge_engine::{Command, OrderId, ReleaseReason, Timestamp};
use surge_orders_svc::Work;

use crate::error::ApiError;
use crate::{order_id_string, parse_order_id, AppState};

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

/// Where a provider running in this process delivers its results: the same step the HTTP route
/// takes once it has checked the signature and read the body ([`apply_results`]), for many
/// results at once. It does not keep the services alive: a delivery after they stopped fails, as
/// it would against a server that is down, and the provider retries.
#[derive(Clone, Debug)]
pub struct WebhookSink {
    state: std::sync::Weak<AppState>,
}

impl WebhookSink {
    /// Applies the results in one journal batch; `Ok` once they are durable.
    pub async fn deliver(&self, results: &[PaymentResult]) -> Result<(), ApiError> {
        let state = self.state.upgrade().ok_or_else(ApiError::overloaded)?;
        apply_results(&state, results).await
    }
}

/// What a provider reports about one charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentResult {
    pub order: OrderId,
    pub succeeded: bool,
}

impl PaymentResult {
    fn command(self) -> Command {
        if self.succeeded {
            Command::Commit { order: self.order }
        } else {
            Command::Release { order: self.order, reason: ReleaseReason::PaymentFailed }
        }
    }
}

/// The body of a webhook event. Unlike every other request body, unknown fields are ignored:
/// providers add fields to their events, and refusing one would refuse that provider's events for
/// ever (a client's request is different: there an unknown field may be one it must not set).
#[derive(Debug, Deserialize, Serialize)]
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

/// Verifies and applies one webhook event: the payment's result becomes an engine command, and
/// the answer leaves once that command is durable ([`apply_results`]).
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
    let order =
        parse_order_id(&event.order_id).ok_or_else(|| ApiError::not_found("no such order"))?;
    let succeeded = match event.kind.as_str() {
        "payment.succeeded" => true,
        "payment.failed" => false,
        other => return Err(ApiError::validation(format!("type: unknown event type {other}"))),
    };
    if !names_an_order(&services.engine, order) {
        return Err(ApiError::not_found("no such order"));
    }
    apply_results(state, &[PaymentResult { order, succeeded }]).await
}

/// An order id is the sequence of its reservation: one the journal has not reached names no
/// order (a live order id never exceeds the durable sequence, since a charge starts only after
/// its reservation was durable and projected).
fn names_an_order(engine: &surge_pipeline::Handle, order: OrderId) -> bool {
    order.0 <= engine.durable_sequence().0
}

/// Payment results in, engine commands out: success commits the reservation, failure releases
/// it, all of them journaled in one batch. Nothing else happens here: the projection reads each
/// command's outcome from the journal and records the payment, the order's new status and any
/// refund a late payment needs (`surge_orders_svc::project`). A repeated result is harmless by
/// construction: the engine answers a second commit or release of the same order with a refusal
/// that changes nothing, so no table of seen event ids is needed. Results for ids that name no
/// order are dropped.
pub async fn apply_results(
    state: &Arc<AppState>,
    results: &[PaymentResult],
) -> Result<(), ApiError> {
    let services = state.services()?;
    let commands: Vec<Command> = results
        .iter()
        .filter(|result| names_an_order(&services.engine, result.order))
        .map(|result| result.command())
        .collect();
    if commands.is_empty() {
        return Ok(());
    }
    let ticket = services.engine.try_submit_group(commands).map_err(crate::submit_error)?;
    ticket.outcomes().await.map_err(crate::submit_error).map(drop)
}

/// The payment work the projection asks for, done against the provider. Every call carries the
/// order id as the provider's idempotency key, so doing an item twice (after a restart, which
/// drives again whatever is still due) never charges or refunds twice.
#[derive(Debug)]
pub struct Driver {
    /// Weak, like [`WebhookSink`]: the driver must not keep stopped services alive.
    state: std::sync::Weak<AppState>,
    provider: Arc<dyn PaymentProvider>,
    db: crate::db::Db,
}

impl Driver {
    pub fn new(
        state: &Arc<AppState>,
        provider: Arc<dyn PaymentProvider>,
        db: crate::db::Db,
    ) -> Driver {
        Driver { state: Arc::downgrade(state), provider, db }
    }

    /// Runs until the work channel closes (the projector stopped).
    pub fn spawn(
        self,
        mut work: tokio::sync::mpsc::UnboundedReceiver<Work>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(item) = work.recv().await {
                self.run(item).await;
            }
        })
    }

    async fn run(&self, item: Work) {
        match item {
            Work::Charge { order, token, amount_cents, currency, expires_at } => {
                let charge = Charge { order, token, amount_cents, currency, expires_at };
                self.provider.charge(charge, WebhookSink { state: self.state.clone() });
            }
            Work::Refund { order, amount_cents } => {
                self.provider.refund(order, amount_cents);
                // Sent: a restart need not send it again (it would be harmless, keyed by order).
                let id = order.0.cast_signed();
                let recorded = self
                    .db
                    .write(move |tx| {
                        tx.execute(
                            "INSERT OR IGNORE INTO refunds_sent (order_id, at) VALUES (?1, ?2)",
                            params![id, crate::now_rfc3339()],
                        )?;
                        Ok(())
                    })
                    .await;
                if let Err(error) = recorded {
                    tracing::error!(%error, order = order.0, "recording a sent refund failed; it is sent again at the next start");
                }
            }
        }
    }
}

/// The work still due according to the rows, driven again at start: charges of orders still
/// `pending_payment` and refunds that are due and not recorded as sent.
pub async fn due_work(db: &crate::db::Db) -> Result<Vec<Work>, ApiError> {
    db.read(|connection| {
        let mut work = Vec::new();
        let mut statement = connection.prepare(
            "SELECT id, payment_token, total_cents, currency, expires_at FROM orders
             WHERE status = 'pending_payment' AND payment = 'pending' ORDER BY id",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let expires_at: String = row.get(4)?;
            work.push(Work::Charge {
                order: OrderId(row.get::<_, i64>(0)?.unsigned_abs()),
                token: row.get(1)?,
                amount_cents: row.get(2)?,
                currency: row.get(3)?,
                expires_at: crate::time::parse_rfc3339(&expires_at)
                    .ok_or_else(|| ApiError::internal(format!("bad expires_at {expires_at}")))?,
            });
        }
        let mut statement = connection.prepare(
            "SELECT o.id, o.total_cents FROM orders o
             WHERE o.payment = 'refund_due'
               AND NOT EXISTS (SELECT 1 FROM refunds_sent r WHERE r.order_id = o.id)
             ORDER BY o.id",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            work.push(Work::Refund {
                order: OrderId(row.get::<_, i64>(0)?.unsigned_abs()),
                amount_cents: row.get(1)?,
            });
        }
        Ok(work)
    })
    .await
}

/// The built-in provider. It decides by token, like a real provider's test cards:
/// `tok_ok` succeeds, `tok_decline` (and any unknown token) fails, `tok_hang` never answers,
/// `tok_late` succeeds just after the reservation expired.
///
/// Results are delivered by one task in order of their due time, every result due at once in one
/// delivery (one journal batch), so the sandbox costs the server little next to the checkouts it
/// pays for. A failed delivery is retried, like a real provider's webhook, with growing pauses.
#[derive(Debug)]
pub struct Sandbox {
    pub latency: Duration,
    /// Orders whose charge is under way, like a real provider's idempotency keys: charging one of
    /// them again does nothing. (Kept in memory: after a restart a charge is answered again, which
    /// is what a provider does for a retried key.)
    charging: Arc<std::sync::Mutex<std::collections::HashSet<OrderId>>>,
    /// Charges started and refunds sent, per order, for tests that check nothing is done twice;
    /// `None` unless asked for (it grows with every order).
    ledger: Option<Arc<std::sync::Mutex<std::collections::BTreeMap<OrderId, Ledger>>>>,
    /// The delivery task's queue, started with the first charge.
    deliveries: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Delivery>>,
}

/// What the sandbox did for one order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    pub charges: u32,
    pub refunds: u32,
}

/// A result to deliver at `due`; `attempt` counts deliveries tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    due: tokio::time::Instant,
    order: OrderId,
    succeeded: bool,
    attempt: u32,
}

impl Sandbox {
    /// A sandbox answering after `latency`; with `keep_ledger`, it records per order what it did
    /// ([`Sandbox::ledger`]).
    pub fn new(latency: Duration, keep_ledger: bool) -> Sandbox {
        Sandbox {
            latency,
            charging: Arc::default(),
            ledger: keep_ledger.then(Arc::default),
            deliveries: std::sync::OnceLock::new(),
        }
    }

    /// What the sandbox did per order (empty when it keeps no ledger).
    pub fn ledger(&self) -> std::collections::BTreeMap<OrderId, Ledger> {
        self.ledger.as_ref().map(|ledger| lock(ledger).clone()).unwrap_or_default()
    }

    fn record(&self, order: OrderId, change: impl FnOnce(&mut Ledger)) {
        if let Some(ledger) = &self.ledger {
            change(lock(ledger).entry(order).or_default());
        }
    }
}

/// Deliveries are retried like a real provider's, with growing pauses, this many times.
const DELIVERY_ATTEMPTS: u32 = 8;

/// Results delivered in one journal batch at most.
const DELIVERY_GROUP_MAX: usize = 1_024;

impl PaymentProvider for Sandbox {
    fn charge(&self, charge: Charge, webhook: WebhookSink) {
        if !lock(&self.charging).insert(charge.order) {
            return;
        }
        self.record(charge.order, |entry| entry.charges += 1);
        let succeeded = match charge.token.as_str() {
            "tok_ok" | "tok_late" => true,
            "tok_hang" => return,
            _ => false,
        };
        let delay = if charge.token == "tok_late" {
            let wait_ns = charge.expires_at.0.saturating_sub(crate::time::now().0);
            Duration::from_nanos(wait_ns) + Duration::from_millis(500)
        } else {
            self.latency
        };
        let delivery = Delivery {
            due: tokio::time::Instant::now() + delay,
            order: charge.order,
            succeeded,
            attempt: 0,
        };
        let queue = self.deliveries.get_or_init(|| {
            let (queue, arrivals) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(deliver(arrivals, webhook, Arc::clone(&self.charging)));
            queue
        });
        // The task ends only when the sandbox is dropped, so a send cannot fail while `self` lives.
        let _ = queue.send(delivery);
    }

    fn refund(&self, order: OrderId, amount_cents: i64) {
        // Keyed by the order: a second request for the same refund is answered, not repeated.
        self.record(order, |entry| {
            if entry.refunds == 0 {
                entry.refunds = 1;
            }
        });
        tracing::info!(order = %order_id_string(order), amount_cents, "sandbox refund");
    }
}

/// The sandbox's delivery task: waits for the earliest due result, delivers every result due by
/// then in one batch, and puts a failed batch back with a pause that doubles per attempt. It ends
/// when the sandbox is dropped.
async fn deliver(
    mut arrivals: tokio::sync::mpsc::UnboundedReceiver<Delivery>,
    sink: WebhookSink,
    charging: Arc<std::sync::Mutex<std::collections::HashSet<OrderId>>>,
) {
    let mut waiting = std::collections::BinaryHeap::new();
    let mut due = Vec::new();
    loop {
        let next = waiting
            .peek()
            .map(|std::cmp::Reverse(delivery): &std::cmp::Reverse<Delivery>| delivery.due);
        tokio::select! {
            arrival = arrivals.recv() => match arrival {
                Some(delivery) => waiting.push(std::cmp::Reverse(delivery)),
                None => return,
            },
            () = tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)),
                if next.is_some() =>
            {
                let now = tokio::time::Instant::now();
                due.clear();
                while due.len() < DELIVERY_GROUP_MAX {
                    match waiting.peek() {
                        Some(std::cmp::Reverse(delivery)) if delivery.due <= now => {
                            due.push(*delivery);
                            waiting.pop();
                        }
                        _ => break,
                    }
                }
                let results: Vec<PaymentResult> = due
                    .iter()
                    .map(|delivery| PaymentResult {
                        order: delivery.order,
                        succeeded: delivery.succeeded,
                    })
                    .collect();
                let delivered = sink.deliver(&results).await;
                for delivery in &due {
                    let attempt = delivery.attempt + 1;
                    match &delivered {
                        Err(error) if attempt < DELIVERY_ATTEMPTS => {
                            tracing::debug!(%error, attempt, "sandbox delivery failed; retrying");
                            let pause = Duration::from_millis(50)
                                .saturating_mul(1 << attempt.min(7))
                                .min(Duration::from_secs(5));
                            let retry = Delivery { due: now + pause, attempt, ..*delivery };
                            waiting.push(std::cmp::Reverse(retry));
                        }
                        Err(error) => {
                            lock(&charging).remove(&delivery.order);
                            tracing::warn!(%error, order = delivery.order.0, "sandbox delivery gave up");
                        }
                        Ok(()) => {
                            lock(&charging).remove(&delivery.order);
                        }
                    }
                }
            }
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
