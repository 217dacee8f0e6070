//! Orders over HTTP: listing and detail, cancel, ship and deliver with their permissions, the
//! seller's views, reconciliation and the engine status.
//!
//! Orders are made as the checkout makes them: a `Reserve` through the engine carrying its
//! checkout record, which the projector turns into the order's rows (with a deadline of the
//! test's choosing, so expiry can be tested without waiting for the reservation window).

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use rusqlite::params;
use serde_json::{json, Value};
use surge_engine::{
    BuyerId, Command, Expiry, LineRequest, LineRequests, OrderId, Outcome, Query, SkuId,
    StockLevel, Timestamp, WarehouseChoices, WarehouseId,
};
use surge_gateway::testing::{TestApp, ADMIN_TOKEN};
use surge_gateway::{order_id_string, submit};
use surge_orders_svc::{CheckoutRecord, RecordLine, Shipping};

/// The warehouse every test SKU is stocked in: the first one registered, `w1`.
const WAREHOUSE: WarehouseId = WarehouseId(1);

/// A signed-in user: numeric id and token.
struct User {
    id: i64,
    token: String,
}

async fn user(app: &TestApp, role: &str) -> User {
    let (id, token) = app.user(role).await;
    User { id: id.trim_start_matches('u').parse().unwrap(), token }
}

/// A product of `seller` with one SKU per `(sku, price_cents)`, and `on_hand` units of each in the
/// test warehouse. Returns the engine ids in the same order.
async fn catalog(app: &TestApp, seller: &User, skus: &[(&str, i64)], on_hand: u32) -> Vec<SkuId> {
    let body = json!({"name": "w1", "postal_code": "10115", "serves": [{"postal_prefix": "", "eta_days": 1}]});
    let (status, answer) =
        app.call(Method::PUT, "/v1/warehouses/w1", Some(ADMIN_TOKEN), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let services = app.state.services().unwrap();
    let seller_id = seller.id;
    let skus_owned: Vec<(String, i64)> = skus.iter().map(|(s, p)| ((*s).to_owned(), *p)).collect();
    let ids: Vec<SkuId> = services
        .db
        .write(move |tx| {
            tx.execute(
                "INSERT INTO products (seller_id, title, description, category, brand, attributes,
                 images, created_at, updated_at) VALUES (?1, 't', 'd', 'c', 'b', '{}', '[]', 'x', 'x')",
                [seller_id],
            )?;
            let product = tx.last_insert_rowid();
            let mut ids = Vec::new();
            for (sku, price) in skus_owned {
                tx.execute(
                    "INSERT INTO skus (sku, product_id, price_cents, currency, attributes)
                     VALUES (?1, ?2, ?3, 'USD', '{}')",
                    params![sku, product, price],
                )?;
                ids.push(SkuId(u32::try_from(tx.last_insert_rowid()).unwrap()));
            }
            Ok(ids)
        })
        .await
        .unwrap();
    for &sku in &ids {
        let applied =
            submit(&services.engine, Command::SetStock { sku, warehouse: WAREHOUSE, on_hand })
                .await
                .unwrap();
        assert!(matches!(applied.outcome, Outcome::StockSet(_)), "{applied:?}");
    }
    ids
}

/// One line of a test order: SKU string, engine id, seller, unit price, quantity.
#[derive(Clone)]
struct Line {
    sku: &'static str,
    id: SkuId,
    seller: i64,
    price: i64,
    quantity: u32,
}

/// The checkout record the gateway would attach for `lines` (paid with `tok_hang`, so nothing
/// pays unless the test says so).
fn checkout_record(key: &str, lines: &[Line]) -> CheckoutRecord {
    CheckoutRecord {
        idempotency_key: key.to_owned(),
        request_hash: [0; 16],
        currency: "USD".to_owned(),
        total_cents: lines.iter().map(|l| l.price * i64::from(l.quantity)).sum(),
        lines: lines
            .iter()
            .map(|l| RecordLine {
                sku: l.sku.to_owned(),
                unit_price_cents: l.price,
                seller_id: l.seller,
            })
            .collect(),
        shipping: Shipping {
            name: "Ann".to_owned(),
            line1: "Main St 1".to_owned(),
            city: "Berlin".to_owned(),
            postal_code: "10115".to_owned(),
        },
        payment_token: "tok_hang".to_owned(),
    }
}

/// Reserves `lines` for `buyer` (expiring after `ttl`) the way the checkout does: one `Reserve`
/// with its checkout record attached. The projector writes the order's rows behind it.
async fn place_with_ttl(app: &TestApp, buyer: &User, lines: &[Line], ttl: Duration) -> OrderId {
    let services = app.state.services().unwrap();
    let requests: Vec<LineRequest> =
        lines.iter().map(|l| LineRequest { sku: l.id, quantity: l.quantity }).collect();
    let expires_at =
        Timestamp(surge_gateway::time::now().0 + u64::try_from(ttl.as_nanos()).unwrap());
    let record = checkout_record(&format!("test-{}", expires_at.0), lines);
    let command = Command::Reserve {
        buyer: BuyerId(buyer.id.unsigned_abs()),
        expiry: Expiry::At(expires_at),
        cart: None,
        lines: LineRequests::from_slice(&requests).unwrap(),
        warehouses: WarehouseChoices::from_slice(&[WAREHOUSE]).unwrap(),
    };
    let applied = services
        .engine
        .try_submit_with(command, record.to_bytes())
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let Outcome::Reserved { order, .. } = applied.outcome else {
        panic!("reservation refused: {applied:?}");
    };
    order
}

async fn place(app: &TestApp, buyer: &User, lines: &[Line]) -> OrderId {
    place_with_ttl(app, buyer, lines, Duration::from_secs(600)).await
}

/// Commits the order in the engine, as a payment webhook does (the projection records it).
async fn pay(app: &TestApp, order: OrderId) {
    let services = app.state.services().unwrap();
    let applied = submit(&services.engine, Command::Commit { order }).await.unwrap();
    assert!(matches!(applied.outcome, Outcome::Transitioned { .. }), "{applied:?}");
}

/// The engine's counters of a SKU in the test warehouse.
async fn stock(app: &TestApp, sku: SkuId) -> StockLevel {
    let engine = &app.state.services().unwrap().engine;
    let cells = surge_gateway::stock_cells(engine, &[sku]).await.unwrap();
    cells[0].iter().find(|(warehouse, _)| *warehouse == WAREHOUSE).unwrap().1
}

/// Whether the engine still holds `order`.
async fn live(app: &TestApp, order: OrderId) -> bool {
    let engine = &app.state.services().unwrap().engine;
    let answer = surge_gateway::query(engine, Query::orders(vec![order])).await.unwrap();
    let Query::Orders(orders) = answer else { panic!("{answer:?}") };
    orders.states()[0].is_some()
}

/// Polls until the engine has retired `order` (expired it, here), checking every millisecond.
async fn until_retired(app: &TestApp, order: OrderId) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while live(app, order).await {
        assert!(Instant::now() < deadline, "the engine never retired the order");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn path(order: OrderId, action: &str) -> String {
    format!("/v1/orders/{}{action}", order_id_string(order))
}

fn statuses(order: &Value) -> Vec<&str> {
    order["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn buyers_list_their_orders_newest_first_in_stable_pages() {
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    let (buyer, other) = (user(&app, "buyer").await, user(&app, "buyer").await);
    let ids = catalog(&app, &seller, &[("mug", 1250)], 100).await;
    let line = |quantity| Line { sku: "mug", id: ids[0], seller: seller.id, price: 1250, quantity };
    let mut mine = Vec::new();
    for quantity in 1..=5 {
        mine.push(place(&app, &buyer, &[line(quantity)]).await);
        place(&app, &other, &[line(1)]).await;
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={c}"));
        let uri = format!("/v1/orders?size=2{query}");
        let (status, page) = app.call(Method::GET, &uri, Some(&buyer.token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for order in page["orders"].as_array().unwrap() {
            assert_eq!(order["status"], "pending_payment");
            assert_eq!(order["currency"], "USD");
            assert_eq!(order["lines"][0]["sku"], "mug");
            seen.push(order["order_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let newest_first: Vec<String> = mine.iter().rev().map(|&id| order_id_string(id)).collect();
    assert_eq!(seen, newest_first, "newest first, each order once, none of the other buyer's");

    let (status, order) = app.call(Method::GET, &path(mine[2], ""), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["total_cents"], 3 * 1250);
    assert_eq!(
        order["lines"],
        json!([{"sku": "mug", "quantity": 3, "unit_price_cents": 1250, "warehouse": "w1"}])
    );
    assert_eq!(statuses(&order), ["pending_payment"]);
    assert_eq!(order["shipping"]["city"], "Berlin");
    assert!(order.get("payment_token").is_none());
    let (status, _) = app.call(Method::GET, &path(mine[2], ""), Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    for (token, uri) in [
        (&other.token, path(mine[2], "")),
        (&seller.token, path(mine[2], "")),
        (&buyer.token, "/v1/orders/xyz".to_owned()),
        (&buyer.token, "/v1/orders/o999999".to_owned()),
    ] {
        let (status, problem) = app.call(Method::GET, &uri, Some(token), None).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    }
}

#[tokio::test]
async fn bad_page_parameters_are_named() {
    let app = TestApp::start(TestApp::config()).await;
    let (buyer, seller) = (user(&app, "buyer").await, user(&app, "seller").await);
    for (query, field) in [
        ("size=0", "size"),
        ("size=101", "size"),
        ("size=ten", "size"),
        ("cursor=%21%21", "cursor"),
        ("cursor=NDI", "cursor"),
    ] {
        let uri = format!("/v1/orders?{query}");
        let (status, problem) = app.call(Method::GET, &uri, Some(&buyer.token), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {problem}");
        assert_eq!(problem["code"], "validation_failed");
        assert!(problem["detail"].as_str().unwrap().starts_with(field), "{problem}");
    }
    let (status, page) =
        app.call(Method::GET, "/v1/orders?size=100", Some(&buyer.token), None).await;
    assert_eq!((status, page), (StatusCode::OK, json!({"orders": [], "next_cursor": null})));
    let (status, _) = app.call(Method::GET, "/v1/orders", Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.call(Method::GET, "/v1/orders", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cancelling_a_pending_order_returns_its_units() {
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    let (buyer, other) = (user(&app, "buyer").await, user(&app, "buyer").await);
    let ids = catalog(&app, &seller, &[("lamp", 4000)], 10).await;
    let order = place(
        &app,
        &buyer,
        &[Line { sku: "lamp", id: ids[0], seller: seller.id, price: 4000, quantity: 3 }],
    )
    .await;
    assert_eq!((stock(&app, ids[0]).await.reserved, stock(&app, ids[0]).await.available()), (3, 7));

    let (status, _) =
        app.call(Method::POST, &path(order, "/cancel"), Some(&other.token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another buyer's order does not exist for them");
    let (status, _) =
        app.call(Method::POST, &path(order, "/cancel"), Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, cancelled) =
        app.call(Method::POST, &path(order, "/cancel"), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(statuses(&cancelled), ["pending_payment", "cancelled"]);
    let level = stock(&app, ids[0]).await;
    assert_eq!((level.reserved, level.available(), level.sold), (0, 10, 0));

    let (status, problem) =
        app.call(Method::POST, &path(order, "/cancel"), Some(&buyer.token), None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let (_, detail) = app.call(Method::GET, &path(order, ""), Some(&buyer.token), None).await;
    assert_eq!(detail["status"], "cancelled");
}

#[tokio::test]
async fn cancelling_a_confirmed_order_returns_sold_units_to_on_hand() {
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    let buyer = user(&app, "buyer").await;
    let ids = catalog(&app, &seller, &[("desk", 25_000)], 5).await;
    let order = place(
        &app,
        &buyer,
        &[Line { sku: "desk", id: ids[0], seller: seller.id, price: 25_000, quantity: 2 }],
    )
    .await;
    pay(&app, order).await;
    let level = stock(&app, ids[0]).await;
    assert_eq!((level.on_hand, level.sold), (3, 2));

    let (status, cancelled) =
        app.call(Method::POST, &path(order, "/cancel"), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(statuses(&cancelled), ["pending_payment", "confirmed", "cancelled"]);
    let level = stock(&app, ids[0]).await;
    assert_eq!((level.on_hand, level.reserved, level.sold), (5, 0, 0));
}

#[tokio::test]
async fn a_pending_cancel_that_finds_the_order_paid_cancels_the_sale() {
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    let buyer = user(&app, "buyer").await;
    let ids = catalog(&app, &seller, &[("pen", 300)], 5).await;
    let order = place(
        &app,
        &buyer,
        &[Line { sku: "pen", id: ids[0], seller: seller.id, price: 300, quantity: 1 }],
    )
    .await;
    // Paid in the engine; the rows the cancel reads may not show it yet.
    let services = app.state.services().unwrap();
    submit(&services.engine, Command::Commit { order }).await.unwrap();
    let (status, cancelled) =
        app.call(Method::POST, &path(order, "/cancel"), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let level = stock(&app, ids[0]).await;
    assert_eq!((level.on_hand, level.sold), (5, 0));
}

#[tokio::test]
async fn an_expired_order_cannot_be_cancelled() {
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    let buyer = user(&app, "buyer").await;
    let ids = catalog(&app, &seller, &[("hat", 900)], 5).await;
    let line = Line { sku: "hat", id: ids[0], seller: seller.id, price: 900, quantity: 2 };
    let order = place_with_ttl(&app, &buyer, &[line], Duration::from_millis(50)).await;
    until_retired(&app, order).await;
    let (status, problem) =
        app.call(Method::POST, &path(order, "/cancel"), Some(&buyer.token), None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    assert_eq!(stock(&app, ids[0]).await.available(), 5);
}

#[tokio::test]
async fn a_read_shows_the_expiry_the_engine_just_made() {
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    let buyer = user(&app, "buyer").await;
    let ids = catalog(&app, &seller, &[("cap", 700)], 5).await;
    let line = Line { sku: "cap", id: ids[0], seller: seller.id, price: 700, quantity: 1 };
    let order = place_with_ttl(&app, &buyer, &[line], Duration::from_millis(50)).await;
    until_retired(&app, order).await;
    // The engine has retired the order; its row is written behind by the projector. The read
    // waits for it instead of answering `pending_payment`.
    let (status, detail) = app.call(Method::GET, &path(order, ""), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(
        (detail["status"].as_str(), statuses(&detail)),
        (Some("expired"), vec!["pending_payment", "expired"])
    );
}

#[tokio::test]
async fn the_stored_watermark_follows_commands_without_orders() {
    // A start projects the journal from this watermark (and restores the follower from a snapshot
    // at or before it): if only order commands moved it, a catalog that only ever set stock would
    // be read from the start of the journal at every start.
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    catalog(&app, &seller, &[("lamp", 1500)], 4).await;
    let services = app.state.services().unwrap();
    let command = Command::SetStock { sku: SkuId(1), warehouse: WAREHOUSE, on_hand: 9 };
    let applied = submit(&services.engine, command).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = surge_gateway::projector::watermark(&services.db).await.unwrap();
        if stored >= applied.sequence {
            break;
        }
        assert!(Instant::now() < deadline, "watermark stuck at {stored:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_reservation_is_its_order_whether_or_not_anyone_waits_for_it() {
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    let buyer = user(&app, "buyer").await;
    let ids = catalog(&app, &seller, &[("mug", 500)], 10).await;
    let services = app.state.services().unwrap();
    // A reservation submitted with its record, whose submitter goes away at once.
    let mug = Line { sku: "mug", id: ids[0], seller: seller.id, price: 500, quantity: 2 };
    let record = checkout_record("gone", &[mug]);
    let requests = [LineRequest { sku: ids[0], quantity: 2 }];
    let command = Command::Reserve {
        buyer: BuyerId(buyer.id.unsigned_abs()),
        expiry: Expiry::After { ttl_ns: 600_000_000_000 },
        cart: None,
        lines: LineRequests::from_slice(&requests).unwrap(),
        warehouses: WarehouseChoices::from_slice(&[WAREHOUSE]).unwrap(),
    };
    drop(services.engine.try_submit_with(command, record.to_bytes()).unwrap());
    // A reservation without a record (an operator's tool) reserves, and makes no order.
    let requests = [LineRequest { sku: ids[0], quantity: 3 }];
    let bare = Command::Reserve {
        buyer: BuyerId(buyer.id.unsigned_abs()),
        expiry: Expiry::After { ttl_ns: 600_000_000_000 },
        cart: None,
        lines: LineRequests::from_slice(&requests).unwrap(),
        warehouses: WarehouseChoices::from_slice(&[WAREHOUSE]).unwrap(),
    };
    submit(&services.engine, bare).await.unwrap();
    let (status, page) = app.call(Method::GET, "/v1/orders", Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let orders = page["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{page}");
    assert_eq!(orders[0]["status"], "pending_payment");
    assert_eq!(orders[0]["total_cents"], 1000);
    assert_eq!(stock(&app, ids[0]).await.reserved, 5);
}

#[tokio::test]
async fn only_admins_and_the_seller_of_every_line_ship_and_deliver() {
    let app = TestApp::start(TestApp::config()).await;
    let (seller, rival) = (user(&app, "seller").await, user(&app, "seller").await);
    let buyer = user(&app, "buyer").await;
    let mine = catalog(&app, &seller, &[("tea", 500)], 50).await;
    let theirs = catalog(&app, &rival, &[("cup", 700)], 50).await;
    let tea = |quantity| Line { sku: "tea", id: mine[0], seller: seller.id, price: 500, quantity };
    let cup = Line { sku: "cup", id: theirs[0], seller: rival.id, price: 700, quantity: 1 };

    let pending = place(&app, &buyer, &[tea(1)]).await;
    let (status, _) =
        app.call(Method::POST, &path(pending, "/ship"), Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "not paid yet");

    let order = place(&app, &buyer, &[tea(2)]).await;
    pay(&app, order).await;
    let (status, _) = app.call(Method::POST, &path(order, "/ship"), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.call(Method::POST, &path(order, "/ship"), Some(&rival.token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        app.call(Method::POST, &path(order, "/deliver"), Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "not shipped yet");
    let (status, shipped) =
        app.call(Method::POST, &path(order, "/ship"), Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::OK, "{shipped}");
    assert_eq!(shipped["status"], "shipped");
    let (status, _) =
        app.call(Method::POST, &path(order, "/cancel"), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "too late to cancel");
    let (status, delivered) =
        app.call(Method::POST, &path(order, "/deliver"), Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::OK, "{delivered}");
    assert_eq!(statuses(&delivered), ["pending_payment", "confirmed", "shipped", "delivered"]);
    let (status, _) =
        app.call(Method::POST, &path(order, "/deliver"), Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) =
        app.call(Method::POST, &path(order, "/cancel"), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let shared = place(&app, &buyer, &[tea(1), cup.clone()]).await;
    pay(&app, shared).await;
    for token in [&seller.token, &rival.token] {
        let (status, _) = app.call(Method::POST, &path(shared, "/ship"), Some(token), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a seller of some lines only");
    }
    let (status, shipped) =
        app.call(Method::POST, &path(shared, "/ship"), Some(ADMIN_TOKEN), None).await;
    assert_eq!((status, shipped["status"].as_str()), (StatusCode::OK, Some("shipped")));
    let (status, _) = app.call(Method::POST, "/v1/orders/nope/ship", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sellers_see_their_orders_and_what_they_sold() {
    let app = TestApp::start(TestApp::config()).await;
    let (seller, rival) = (user(&app, "seller").await, user(&app, "seller").await);
    let buyer = user(&app, "buyer").await;
    let mine = catalog(&app, &seller, &[("tea", 500), ("pot", 3000)], 50).await;
    let theirs = catalog(&app, &rival, &[("cup", 700)], 50).await;
    let tea = |quantity| Line { sku: "tea", id: mine[0], seller: seller.id, price: 500, quantity };
    let pot = Line { sku: "pot", id: mine[1], seller: seller.id, price: 3000, quantity: 1 };
    let cup = Line { sku: "cup", id: theirs[0], seller: rival.id, price: 700, quantity: 4 };

    let paid = place(&app, &buyer, &[tea(2), cup.clone()]).await;
    pay(&app, paid).await;
    let shipped = place(&app, &buyer, &[tea(3), pot]).await;
    pay(&app, shipped).await;
    let (status, _) =
        app.call(Method::POST, &path(shipped, "/ship"), Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::OK);
    let _pending = place(&app, &buyer, &[tea(7)]).await;
    let cancelled = place(&app, &buyer, &[tea(11)]).await;
    pay(&app, cancelled).await;
    let (status, _) =
        app.call(Method::POST, &path(cancelled, "/cancel"), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::OK);
    place(&app, &buyer, &[cup]).await;

    let (status, analytics) =
        app.call(Method::GET, "/v1/seller/analytics", Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::OK, "{analytics}");
    assert_eq!(
        analytics["skus"],
        json!([
            {"sku": "pot", "units_sold": 1, "revenue_cents": 3000, "currency": "USD"},
            {"sku": "tea", "units_sold": 5, "revenue_cents": 2500, "currency": "USD"},
        ])
    );
    let (_, analytics) =
        app.call(Method::GET, "/v1/seller/analytics", Some(&rival.token), None).await;
    assert_eq!(
        analytics["skus"],
        json!([{"sku": "cup", "units_sold": 4, "revenue_cents": 2800, "currency": "USD"}])
    );

    let (status, first) =
        app.call(Method::GET, "/v1/seller/orders?size=3", Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .call(
            Method::GET,
            &format!("/v1/seller/orders?size=3&cursor={cursor}"),
            Some(&seller.token),
            None,
        )
        .await;
    assert_eq!(second["next_cursor"], Value::Null);
    let orders: Vec<&Value> = first["orders"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["orders"].as_array().unwrap())
        .collect();
    let ids: Vec<&str> = orders.iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "the rival's own order is not listed: {ids:?}");
    let paid_view = orders.iter().find(|o| o["order_id"] == order_id_string(paid)).unwrap();
    assert_eq!(paid_view["lines"].as_array().unwrap().len(), 1, "only the seller's lines");
    assert_eq!(
        (paid_view["total_cents"].as_i64(), paid_view["status"].as_str()),
        (Some(1000), Some("confirmed"))
    );
    let (status, _) = app.call(Method::GET, "/v1/seller/orders", Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sellers_see_the_shipping_address_only_of_paid_orders() {
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    let buyer = user(&app, "buyer").await;
    let ids = catalog(&app, &seller, &[("lamp", 4000)], 10).await;
    let order = place(&app, &buyer, &[line_of(&ids, &seller)]).await;
    let shipping_seen = || async {
        let (status, page) =
            app.call(Method::GET, "/v1/seller/orders", Some(&seller.token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let view = page["orders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|view| view["order_id"] == order_id_string(order))
            .cloned()
            .unwrap();
        assert!(view.as_object().unwrap().contains_key("shipping"), "{view}");
        (view["status"].as_str().unwrap().to_owned(), view["shipping"].clone())
    };
    assert_eq!(shipping_seen().await, ("pending_payment".to_owned(), Value::Null));
    pay(&app, order).await;
    let (status, shipping) = shipping_seen().await;
    assert_eq!((status.as_str(), shipping["line1"].as_str()), ("confirmed", Some("Main St 1")));
    let (status, _) =
        app.call(Method::POST, &path(order, "/ship"), Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, shipping) = shipping_seen().await;
    assert_eq!((status.as_str(), shipping["city"].as_str()), ("shipped", Some("Berlin")));

    let cancelled = place(&app, &buyer, &[Line { quantity: 2, ..line_of(&ids, &seller) }]).await;
    pay(&app, cancelled).await;
    let (status, _) =
        app.call(Method::POST, &path(cancelled, "/cancel"), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = app.call(Method::GET, "/v1/seller/orders", Some(&seller.token), None).await;
    let view = page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|view| view["order_id"] == order_id_string(cancelled))
        .unwrap();
    assert_eq!((view["status"].as_str(), &view["shipping"]), (Some("cancelled"), &Value::Null));
    // The buyer still sees their own address.
    let (_, mine) = app.call(Method::GET, &path(cancelled, ""), Some(&buyer.token), None).await;
    assert_eq!(mine["shipping"]["line1"], "Main St 1");
}

/// One lamp of `seller`, the SKU of [`sellers_see_the_shipping_address_only_of_paid_orders`].
fn line_of(ids: &[SkuId], seller: &User) -> Line {
    Line { sku: "lamp", id: ids[0], seller: seller.id, price: 4000, quantity: 1 }
}

#[tokio::test]
async fn reconciliation_agrees_until_a_record_is_broken() {
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    let buyer = user(&app, "buyer").await;
    let ids = catalog(&app, &seller, &[("tea", 500), ("pot", 3000), ("idle", 1)], 50).await;
    let tea = |quantity| Line { sku: "tea", id: ids[0], seller: seller.id, price: 500, quantity };
    let pot = |quantity| Line { sku: "pot", id: ids[1], seller: seller.id, price: 3000, quantity };

    place(&app, &buyer, &[tea(2), pot(1)]).await;
    let paid = place(&app, &buyer, &[tea(3)]).await;
    pay(&app, paid).await;
    let shipped = place(&app, &buyer, &[pot(4)]).await;
    pay(&app, shipped).await;
    let (status, _) =
        app.call(Method::POST, &path(shipped, "/ship"), Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::OK);
    let cancelled = place(&app, &buyer, &[tea(5)]).await;
    pay(&app, cancelled).await;
    let (status, _) =
        app.call(Method::POST, &path(cancelled, "/cancel"), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::OK);

    let (status, report) =
        app.call(Method::GET, "/v1/admin/reconciliation", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report, json!({"ok": true, "checked_skus": 3, "mismatches": []}));

    // The rows claim the shipped order was cancelled, which the engine never did.
    let services = app.state.services().unwrap();
    let id = i64::try_from(shipped.0).unwrap();
    services
        .db
        .write(move |tx| {
            tx.execute("UPDATE orders SET status = 'cancelled' WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
        .unwrap();
    let (_, report) =
        app.call(Method::GET, "/v1/admin/reconciliation", Some(ADMIN_TOKEN), None).await;
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["mismatches"],
        json!([{"sku": "pot", "field": "sold", "engine": 4, "orders": 0}])
    );

    let (status, _) =
        app.call(Method::GET, "/v1/admin/reconciliation", Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn admins_see_the_engine_status() {
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    catalog(&app, &seller, &[("tea", 500)], 5).await;
    let (status, engine) = app.call(Method::GET, "/v1/admin/engine", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::OK, "{engine}");
    assert_eq!(engine["role"], "primary");
    assert!(engine["sequence"].as_u64().unwrap() >= 1, "{engine}");
    assert!(engine["journal_bytes"].as_u64().unwrap() > 0, "{engine}");
    assert_eq!(engine["replication"], json!({"peer": null, "acked_sequence": null, "lag": null}));
    let (status, _) = app.call(Method::GET, "/v1/admin/engine", Some(&seller.token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn metrics_are_for_the_admin_token_only() {
    let app = TestApp::start(TestApp::config()).await;
    let buyer = user(&app, "buyer").await;
    let (status, problem) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, problem) = app.call(Method::GET, "/metrics", Some(&buyer.token), None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let request = axum::http::Request::get("/metrics")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(app.router.clone(), request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.contains("surge_ready 1\n"), "{text}");
    assert!(
        text.contains(
            "surge_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"401\"} 1"
        ),
        "{text}"
    );
}
