//! Checkout end to end inside one process: reservation through the engine, idempotency keys,
//! every refusal of API.md, the cart, and each sandbox payment token through the signed webhook.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use surge_gateway::testing::{TestApp, ADMIN_TOKEN, WEBHOOK_SECRET};
use surge_gateway::Config;

struct Sale {
    app: TestApp,
    seller: String,
    buyer: String,
}

/// A seller with SKUs `A` (price 1000) and `B` (price 250), both stocked in warehouse `near`
/// (serves "10", 1 day) and `far` (serves everything, 4 days).
async fn sale(config: Config) -> Sale {
    let app = TestApp::start(config).await;
    let (_, seller) = app.user("seller").await;
    let (_, buyer) = app.user("buyer").await;
    for (id, serves) in [
        ("near", json!([{"postal_prefix": "10", "eta_days": 1}])),
        ("far", json!([{"postal_prefix": "", "eta_days": 4}])),
        ("island", json!([{"postal_prefix": "99", "eta_days": 2}])),
    ] {
        let body = json!({"name": id, "postal_code": "10115", "serves": serves});
        let (status, answer) = app
            .call(Method::PUT, &format!("/v1/warehouses/{id}"), Some(ADMIN_TOKEN), Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let product = json!({
        "title": "Console", "description": "A games console", "category": "electronics/consoles",
        "brand": "Acme", "attributes": {}, "images": [],
        "variants": [
            {"sku": "A", "price_cents": 1000, "currency": "USD", "attributes": {}},
            {"sku": "B", "price_cents": 250, "currency": "USD", "attributes": {}},
        ],
    });
    let (status, answer) =
        app.call(Method::POST, "/v1/products", Some(&seller), Some(product)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    Sale { app, seller, buyer }
}

impl Sale {
    async fn stock(&self, sku: &str, warehouse: &str, on_hand: u32) {
        let body = json!({"warehouse": warehouse, "on_hand": on_hand});
        let path = format!("/v1/skus/{sku}/stock");
        let (status, answer) =
            self.app.call(Method::PUT, &path, Some(&self.seller), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }

    async fn checkout(&self, key: &str, body: Value) -> (StatusCode, Value, bool) {
        let request = Request::post("/v1/checkout")
            .header("authorization", format!("Bearer {}", self.buyer))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = tower::ServiceExt::oneshot(self.app.router.clone(), request).await.unwrap();
        let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), replayed)
    }

    async fn stock_of(&self, sku: &str) -> Value {
        let path = format!("/v1/skus/{sku}/stock");
        let (status, stock) = self.app.call(Method::GET, &path, Some(&self.seller), None).await;
        assert_eq!(status, StatusCode::OK, "{stock}");
        stock
    }

    /// Polls the order until its status is `want`, for at most ten seconds.
    async fn wait_for_status(&self, order_id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = format!("/v1/orders/{order_id}");
            let (status, order) = self.app.call(Method::GET, &path, Some(&self.buyer), None).await;
            assert_eq!(status, StatusCode::OK, "{order}");
            if order["status"] == want {
                return order;
            }
            assert!(Instant::now() < deadline, "order never reached {want}: {order}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn buy(items: &Value, token: &str, postal_code: &str) -> Value {
    json!({
        "shipping": {"name": "Ann", "line1": "Main St 1", "city": "Berlin", "postal_code": postal_code},
        "payment": {"token": token},
        "items": items,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_checkout_is_reserved_then_confirmed_from_the_nearest_warehouse() {
    let sale = sale(TestApp::config()).await;
    sale.stock("A", "far", 5).await;
    sale.stock("A", "near", 1).await;
    let (status, order, replayed) =
        sale.checkout("k1", buy(&json!([{"sku": "A", "quantity": 1}]), "tok_ok", "10115")).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert!(!replayed);
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(
        order["lines"][0],
        json!({"sku": "A", "quantity": 1, "unit_price_cents": 1000, "warehouse": "near"})
    );
    assert_eq!(
        (order["total_cents"].as_i64(), order["currency"].as_str()),
        (Some(1000), Some("USD"))
    );
    let id = order["order_id"].as_str().unwrap();
    let confirmed = sale.wait_for_status(id, "confirmed").await;
    let history: Vec<&str> = confirmed["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["pending_payment", "confirmed"]);
    // Near is empty now: the next buyer in postal area 10 is served from far.
    let (status, second, _) =
        sale.checkout("k2", buy(&json!([{"sku": "A", "quantity": 2}]), "tok_ok", "10115")).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["lines"][0]["warehouse"], "far");
    let stock = sale.stock_of("A").await;
    assert_eq!(stock["sold"].as_u64().unwrap() + stock["reserved"].as_u64().unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_refuse_other_bodies_and_block_concurrent_duplicates() {
    let sale = sale(TestApp::config()).await;
    sale.stock("A", "near", 10).await;
    let body = buy(&json!([{"sku": "A", "quantity": 1}]), "tok_hang", "10115");
    let (status, first, _) = sale.checkout("same", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again, replayed) = sale.checkout("same", body.clone()).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(again, first, "the first answer, byte for byte");
    assert_eq!(sale.stock_of("A").await["reserved"], 1, "a replay reserves nothing");
    let other = buy(&json!([{"sku": "A", "quantity": 2}]), "tok_hang", "10115");
    let (status, problem, _) = sale.checkout("same", other).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"))
    );

    // Two requests with one new key at the same time: one is processed, the other told to wait.
    let (a, b) =
        tokio::join!(sale.checkout("race", body.clone()), sale.checkout("race", body.clone()));
    let mut statuses = [a.0.as_u16(), b.0.as_u16()];
    statuses.sort_unstable();
    assert!(statuses == [201, 409] || (statuses == [201, 201] && (a.2 || b.2)), "{statuses:?}");
    assert_eq!(sale.stock_of("A").await["reserved"], 2);

    let no_key = Request::post("/v1/checkout")
        .header("authorization", format!("Bearer {}", sale.buyer))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, problem) = sale.app.send(no_key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["detail"].as_str().unwrap().contains("Idempotency-Key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_what_is_wrong_and_reserve_nothing() {
    let sale = sale(TestApp::config()).await;
    sale.stock("A", "near", 3).await;
    sale.stock("B", "near", 1).await;
    let two_lines = json!([{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 2}]);
    let (status, problem, _) = sale.checkout("o1", buy(&two_lines, "tok_ok", "10115")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("out_of_stock")));
    assert_eq!(problem["skus"], json!(["B"]));
    assert_eq!(sale.stock_of("A").await["reserved"], 0, "all or nothing");

    let (status, problem, _) =
        sale.checkout("o2", buy(&json!([{"sku": "A", "quantity": 1}]), "tok_ok", "99000")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_deliverable")),
        "{problem}"
    );
    let (status, problem, _) =
        sale.checkout("o3", buy(&json!([{"sku": "NOPE", "quantity": 1}]), "tok_ok", "10115")).await;
    assert_eq!(
        (status, problem["code"].as_str(), &problem["skus"]),
        (StatusCode::NOT_FOUND, Some("not_found"), &json!(["NOPE"]))
    );
    let mut priced = buy(&json!([{"sku": "A", "quantity": 2}]), "tok_ok", "10115");
    priced["expected_total_cents"] = json!(1999);
    let (status, problem, _) = sale.checkout("o4", priced.clone()).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("price_changed")));
    priced["expected_total_cents"] = json!(-1);
    let (status, problem, _) = sale.checkout("o4-negative", priced).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
        "{problem}"
    );
    assert!(problem["detail"].as_str().unwrap().starts_with("expected_total_cents"), "{problem}");
    let (status, problem, _) =
        sale.checkout("o5", buy(&json!([{"sku": "A", "quantity": 0}]), "tok_ok", "10115")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["detail"].as_str().unwrap().contains("quantity"), "{problem}");
    let (status, problem, _) =
        sale.checkout("o6", json!({"shipping": {}, "payment": {"token": "tok_ok"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, problem, _) = sale.checkout("o7", buy(&json!([]), "tok_ok", "10115")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

    let limit = json!({"per_buyer": 1});
    let (status, _) =
        sale.app.call(Method::PUT, "/v1/skus/A/limit", Some(&sale.seller), Some(limit)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem, _) =
        sale.checkout("o8", buy(&json!([{"sku": "A", "quantity": 2}]), "tok_ok", "10115")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("purchase_limit_exceeded"))
    );
    // A refusal is an answer too: the same key replays it.
    let (status, replay, replayed) =
        sale.checkout("o8", buy(&json!([{"sku": "A", "quantity": 2}]), "tok_ok", "10115")).await;
    assert_eq!((status, replayed, replay), (StatusCode::CONFLICT, true, problem));
    assert_eq!(sale.stock_of("A").await["reserved"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_is_checked_out_and_emptied() {
    let sale = sale(TestApp::config()).await;
    sale.stock("A", "near", 5).await;
    sale.stock("B", "near", 5).await;
    let buyer = sale.buyer.clone();
    for (sku, quantity) in [("A", 1), ("B", 3)] {
        let (status, cart) = sale
            .app
            .call(
                Method::PUT,
                &format!("/v1/cart/items/{sku}"),
                Some(&buyer),
                Some(json!({"quantity": quantity})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{cart}");
    }
    let (_, cart) = sale.app.call(Method::GET, "/v1/cart", Some(&buyer), None).await;
    assert_eq!(cart["total_cents"], 1750);
    assert_eq!(cart["items"][1]["available"], 5);
    let body = json!({"shipping": {"name": "Ann", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115"}, "payment": {"token": "tok_ok"}});
    let (status, order, _) = sale.checkout("cart-1", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["total_cents"], 1750);
    let (_, cart) = sale.app.call(Method::GET, "/v1/cart", Some(&buyer), None).await;
    assert_eq!(cart["items"], json!([]));
    let (status, problem, _) = sale.checkout("cart-2", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an empty cart: {problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sandbox_token_ends_in_its_status_and_nothing_is_sold_twice() {
    let config = Config { reservation_ttl: Duration::from_millis(700), ..TestApp::config() };
    let sale = sale(config).await;
    sale.stock("A", "near", 4).await;
    let mut orders = Vec::new();
    for token in ["tok_ok", "tok_decline", "tok_hang", "tok_late"] {
        let (status, order, _) =
            sale.checkout(token, buy(&json!([{"sku": "A", "quantity": 1}]), token, "10115")).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        orders.push((token, order["order_id"].as_str().unwrap().to_owned()));
    }
    for (token, id) in &orders {
        let want = match *token {
            "tok_ok" => "confirmed",
            "tok_decline" => "payment_failed",
            "tok_hang" => "expired",
            _ => "refunded",
        };
        sale.wait_for_status(id, want).await;
    }
    let stock = sale.stock_of("A").await;
    assert_eq!(
        (stock["sold"].as_u64(), stock["reserved"].as_u64(), stock["available"].as_u64()),
        (Some(1), Some(0), Some(3))
    );
    let (status, report) =
        sale.app.call(Method::GET, "/v1/admin/reconciliation", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_checks_signatures_and_ignores_repeats() {
    let sale = sale(TestApp::config()).await;
    sale.stock("A", "near", 2).await;
    let (_, order, _) =
        sale.checkout("w1", buy(&json!([{"sku": "A", "quantity": 1}]), "tok_hang", "10115")).await;
    let id = order["order_id"].as_str().unwrap().to_owned();
    let body =
        json!({"id": "evt_manual_1", "type": "payment.succeeded", "order_id": id}).to_string();
    let send = |signature: String, body: String| {
        let request = Request::post("/v1/payments/webhook")
            .header("content-type", "application/json")
            .header("surge-signature", signature)
            .body(Body::from(body))
            .unwrap();
        sale.app.send(request)
    };
    let now = SystemTimeNow::secs();
    let (status, _) =
        send(surge_gateway::payments::sign("wrong secret", now, body.as_bytes()), body.clone())
            .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(
        surge_gateway::payments::sign(WEBHOOK_SECRET, now - 600, body.as_bytes()),
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "beyond five minutes of skew");
    for _ in 0..2 {
        let (status, answer) =
            send(surge_gateway::payments::sign(WEBHOOK_SECRET, now, body.as_bytes()), body.clone())
                .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    sale.wait_for_status(&id, "confirmed").await;
    assert_eq!(sale.stock_of("A").await["sold"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_event_with_fields_we_do_not_know_is_processed() {
    let sale = sale(TestApp::config()).await;
    sale.stock("A", "near", 2).await;
    let (_, order, _) =
        sale.checkout("w1", buy(&json!([{"sku": "A", "quantity": 1}]), "tok_hang", "10115")).await;
    let id = order["order_id"].as_str().unwrap().to_owned();
    // A provider that added fields since: they are ignored, the event is applied.
    let body = json!({
        "id": "evt_new_fields", "type": "payment.succeeded", "order_id": id,
        "livemode": false, "data": {"amount": 1000, "currency": "usd"},
    })
    .to_string();
    let request = Request::post("/v1/payments/webhook")
        .header("content-type", "application/json")
        .header(
            "surge-signature",
            surge_gateway::payments::sign(WEBHOOK_SECRET, SystemTimeNow::secs(), body.as_bytes()),
        )
        .body(Body::from(body))
        .unwrap();
    let (status, answer) = sale.app.send(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    sale.wait_for_status(&id, "confirmed").await;
    // Every other body still refuses a field it does not know.
    let (status, problem, _) = sale
        .checkout(
            "w2",
            json!({
                "shipping": {"name": "Ann", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115"},
                "payment": {"token": "tok_ok"}, "items": [{"sku": "A", "quantity": 1}],
                "total_cents": 1,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("total_cents"), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_duplicate_success_for_a_paid_cancelled_refunded_order_changes_nothing() {
    let sale = sale(TestApp::config()).await;
    sale.stock("A", "near", 2).await;
    let (status, order, _) =
        sale.checkout("d1", buy(&json!([{"sku": "A", "quantity": 1}]), "tok_ok", "10115")).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let id = order["order_id"].as_str().unwrap().to_owned();
    sale.wait_for_status(&id, "confirmed").await;
    let path = format!("/v1/orders/{id}/cancel");
    let (status, cancelled) = sale.app.call(Method::POST, &path, Some(&sale.buyer), None).await;
    assert_eq!((status, cancelled["status"].as_str()), (StatusCode::OK, Some("cancelled")));
    let sandbox = &sale.app.running.as_ref().unwrap().sandbox;
    let order_key = surge_gateway::parse_order_id(&id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox.ledger().get(&order_key).map_or(0, |entry| entry.refunds) == 0 {
        assert!(Instant::now() < deadline, "the cancelled order was never refunded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The provider delivers its success again through the webhook, late, twice.
    for event_id in ["evt_retried", "evt_retried_later"] {
        let body = json!({"id": event_id, "type": "payment.succeeded", "order_id": id}).to_string();
        let signature =
            surge_gateway::payments::sign(WEBHOOK_SECRET, SystemTimeNow::secs(), body.as_bytes());
        let request = Request::post("/v1/payments/webhook")
            .header("content-type", "application/json")
            .header("surge-signature", signature)
            .body(Body::from(body))
            .unwrap();
        let (status, answer) = sale.app.send(request).await;
        assert_eq!(status, StatusCode::OK, "a duplicate is acknowledged: {answer}");
    }
    // A read waits until the rows have followed the engine, duplicates included.
    let (_, after) =
        sale.app.call(Method::GET, &format!("/v1/orders/{id}"), Some(&sale.buyer), None).await;
    assert_eq!(after["status"], "cancelled", "{after}");
    assert_eq!(after["history"], cancelled["history"], "no new step");
    let ledger = sandbox.ledger()[&order_key];
    assert_eq!((ledger.charges, ledger.refunds), (1, 1));
    assert_eq!(sale.stock_of("A").await["sold"], 0);
    sale.reconciled().await;
}

struct SystemTimeNow;

impl SystemTimeNow {
    fn secs() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_lines_are_removed_one_by_one_or_all_at_once() {
    let sale = sale(TestApp::config()).await;
    let buyer = sale.buyer.clone();
    for sku in ["A", "B"] {
        let path = format!("/v1/cart/items/{sku}");
        let (status, _) =
            sale.app.call(Method::PUT, &path, Some(&buyer), Some(json!({"quantity": 2}))).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = sale.app.call(Method::DELETE, "/v1/cart/items/A", Some(&buyer), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, cart) = sale.app.call(Method::GET, "/v1/cart", Some(&buyer), None).await;
    let skus: Vec<&str> = cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["sku"].as_str().unwrap())
        .collect();
    assert_eq!((skus, cart["total_cents"].as_i64()), (vec!["B"], Some(500)));
    let (status, problem) = sale
        .app
        .call(Method::PUT, "/v1/cart/items/NOPE", Some(&buyer), Some(json!({"quantity": 1})))
        .await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _) = sale.app.call(Method::DELETE, "/v1/cart", Some(&buyer), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, cart) = sale.app.call(Method::GET, "/v1/cart", Some(&buyer), None).await;
    assert_eq!(cart["items"], json!([]));
    let (status, _) = sale.app.call(Method::GET, "/v1/cart", Some(&sale.seller), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a seller has no cart");
}

impl Sale {
    /// A checkout whose client gives up after `patience`: the request future is dropped there, as
    /// the server drops a handler whose connection closed. `None` when it gave up.
    async fn checkout_impatient(
        &self,
        key: &str,
        body: Value,
        patience: Duration,
    ) -> Option<(StatusCode, Value, bool)> {
        tokio::time::timeout(patience, self.checkout(key, body)).await.ok()
    }

    /// Retries a checkout until it is answered with something other than `409 conflict` (the
    /// first attempt still in flight), for at most ten seconds.
    async fn checkout_patiently(&self, key: &str, body: Value) -> (StatusCode, Value, bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, answer, replayed) = self.checkout(key, body.clone()).await;
            if status != StatusCode::CONFLICT || answer["code"] != "conflict" {
                return (status, answer, replayed);
            }
            assert!(Instant::now() < deadline, "key {key} stayed in flight: {answer}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn reconciled(&self) {
        let (status, report) =
            self.app.call(Method::GET, "/v1/admin/reconciliation", Some(ADMIN_TOKEN), None).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["ok"], true, "{report}");
    }

    /// The buyer's orders, every page.
    async fn orders(&self) -> Vec<Value> {
        let (status, page) =
            self.app.call(Method::GET, "/v1/orders?size=100", Some(&self.buyer), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page["next_cursor"].is_null(), "more than one page: {page}");
        page["orders"].as_array().unwrap().clone()
    }

    /// Orders the engine holds (pending, confirmed or shipped).
    async fn live_orders(&self) -> u32 {
        let engine = &self.app.services().engine;
        surge_gateway::progress(engine).await.unwrap().live_orders
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_give_up_at_any_moment_get_one_order_per_key_and_every_payment() {
    let sale = sale(TestApp::config()).await;
    sale.stock("A", "near", 1_000).await;
    // 40 clients give up after 0 to 3.9 ms, at whatever point of the checkout that falls on
    // (parsing, the key claim, the engine queue, the fsync, the answer), then retry patiently.
    let body = buy(&json!([{"sku": "A", "quantity": 1}]), "tok_ok", "10115");
    let mut given_up = 0;
    for attempt in 0..40u64 {
        let patience = Duration::from_micros(attempt * 100);
        let key = format!("impatient-{attempt}");
        if sale.checkout_impatient(&key, body.clone(), patience).await.is_none() {
            given_up += 1;
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for attempt in 0..40u64 {
        let (status, order, _) =
            sale.checkout_patiently(&format!("impatient-{attempt}"), body.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        ids.insert(order["order_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 40, "one order per key ({given_up} clients gave up)");
    for id in &ids {
        sale.wait_for_status(id, "confirmed").await;
    }
    let orders = sale.orders().await;
    assert_eq!(orders.len(), 40, "no order without a key's answer");
    assert_eq!(sale.stock_of("A").await["sold"], 40);
    assert_eq!(sale.live_orders().await, 40, "no reservation without an order");
    sale.reconciled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_whose_client_goes_away_is_still_refunded() {
    let sale = sale(TestApp::config()).await;
    sale.stock("A", "near", 100).await;
    let body = buy(&json!([{"sku": "A", "quantity": 1}]), "tok_ok", "10115");
    let mut ids = Vec::new();
    for attempt in 0..20 {
        let (status, order, _) = sale.checkout(&format!("c{attempt}"), body.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        let id = order["order_id"].as_str().unwrap().to_owned();
        sale.wait_for_status(&id, "confirmed").await;
        ids.push(id);
    }
    for (attempt, id) in ids.iter().enumerate() {
        let path = format!("/v1/orders/{id}/cancel");
        let patience = Duration::from_micros(attempt as u64 * 150);
        let cancel = sale.app.call(Method::POST, &path, Some(&sale.buyer), None);
        if let Ok((status, answer)) = tokio::time::timeout(patience, cancel).await {
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
    }
    // Retried until the order reads cancelled (a retry of a done cancel is a `409`).
    for id in &ids {
        let path = format!("/v1/orders/{id}/cancel");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, order) = sale
                .app
                .call(Method::GET, &format!("/v1/orders/{id}"), Some(&sale.buyer), None)
                .await;
            if order["status"] == "cancelled" {
                break;
            }
            let (status, answer) =
                sale.app.call(Method::POST, &path, Some(&sale.buyer), None).await;
            assert!(status == StatusCode::OK || status == StatusCode::CONFLICT, "{answer}");
            assert!(Instant::now() < deadline, "{id} never cancelled");
        }
    }
    // Every cancelled paid order is refunded exactly once, by the driver, from the journal.
    let sandbox = &sale.app.running.as_ref().unwrap().sandbox;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ledger = sandbox.ledger();
        let refunded = ledger.values().filter(|entry| entry.refunds == 1).count();
        assert!(
            ledger.values().all(|entry| entry.charges == 1 && entry.refunds <= 1),
            "{ledger:?}"
        );
        if refunded == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "refunded {refunded} of {}: {ledger:?}", ids.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sale.stock_of("A").await["sold"], 0);
    sale.reconciled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_checked_out_by_six_requests_at_once_is_bought_once() {
    let sale = sale(TestApp::config()).await;
    sale.stock("A", "near", 100).await;
    let (status, cart) = sale
        .app
        .call(Method::PUT, "/v1/cart/items/A", Some(&sale.buyer), Some(json!({"quantity": 3})))
        .await;
    assert_eq!(status, StatusCode::OK, "{cart}");
    let body = json!({"shipping": {"name": "Ann", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115"}, "payment": {"token": "tok_ok"}});
    // Two tabs and a double click: six requests with their own keys, at once.
    let tab = |key: &'static str| sale.checkout(key, body.clone());
    let (a, b, c, d, e, f) = tokio::join!(
        tab("tab-1"),
        tab("tab-2"),
        tab("tab-3"),
        tab("tab-4"),
        tab("tab-5"),
        tab("tab-6")
    );
    let answers = [a, b, c, d, e, f];
    let created = answers.iter().filter(|(status, ..)| *status == StatusCode::CREATED).count();
    assert_eq!(created, 1, "{answers:?}");
    for (status, answer, _) in &answers {
        // The others found the version claimed, or the cart already emptied.
        assert!(
            *status == StatusCode::CREATED
                || (*status == StatusCode::CONFLICT && answer["code"] == "conflict")
                || *status == StatusCode::UNPROCESSABLE_ENTITY,
            "{answer}"
        );
    }
    let stock = sale.stock_of("A").await;
    assert_eq!(stock["reserved"].as_u64().unwrap() + stock["sold"].as_u64().unwrap(), 3);
    // A new version of the cart is a new purchase.
    let (status, _) = sale
        .app
        .call(Method::PUT, "/v1/cart/items/A", Some(&sale.buyer), Some(json!({"quantity": 1})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, order, _) = sale.checkout("tab-again", body).await;
    assert_eq!(
        (status, order["total_cents"].as_i64()),
        (StatusCode::CREATED, Some(1000)),
        "{order}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_keys_replay_and_pending_payments_are_driven_again() {
    // A provider that would answer in an hour: the order is still pending when the server stops.
    let slow = Config { payment_latency: Duration::from_secs(3600), ..TestApp::config() };
    let sale = sale(slow).await;
    sale.stock("A", "near", 10).await;
    let body = buy(&json!([{"sku": "A", "quantity": 1}]), "tok_ok", "10115");
    let (status, first, _) = sale.checkout("before", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = first["order_id"].as_str().unwrap().to_owned();
    let Sale { app, seller, buyer } = sale;
    let (dir, journal) = app.stop().await;
    let app = TestApp::start_in(TestApp::config(), dir, journal).await;
    let sale = Sale { app, seller, buyer };
    // Driven again at start, from the rows; charged once by this provider.
    sale.wait_for_status(&id, "confirmed").await;
    let ledger = sale.app.running.as_ref().unwrap().sandbox.ledger();
    assert_eq!(ledger.values().map(|entry| entry.charges).sum::<u32>(), 1, "{ledger:?}");
    let (status, again, replayed) = sale.checkout("before", body.clone()).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true), "{again}");
    assert_eq!(again, first, "the same answer after a restart");
    let mut other = body.clone();
    other["items"][0]["quantity"] = json!(2);
    let (status, problem, _) = sale.checkout("before", other).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"))
    );
    assert_eq!(sale.stock_of("A").await["sold"], 1);
    sale.reconciled().await;
}
