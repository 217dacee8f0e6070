//! Orders over HTTP: listing and detail, cancel, ship and deliver with their permissions, the
//! seller's views, reconciliation and the engine status.
//!
//! The checkout is built elsewhere, so these tests make orders the way it will: a `Reserve` through
//! the engine, then the `orders` and `order_skus` rows written directly.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use rusqlite::params;
use serde_json::{json, Value};
use surge_engine::{
    BuyerId, Command, Expiry, LineRequest, LineRequests, OrderId, Outcome, SkuId, StockLevel,
    Timestamp, WarehouseChoices, WarehouseId,
};
use surge_gateway::orders::record_transition;
use surge_gateway::testing::{TestApp, ADMIN_TOKEN};
use surge_gateway::{order_id_string, submit};

const WAREHOUSE: WarehouseId = WarehouseId(0);

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

/// Reserves `lines` for `buyer` in the engine (expiring after `ttl`) and writes the order's rows
/// like the checkout does.
async fn place_with_ttl(app: &TestApp, buyer: &User, lines: &[Line], ttl: Duration) -> OrderId {
    let services = app.state.services().unwrap();
    let requests: Vec<LineRequest> =
        lines.iter().map(|l| LineRequest { sku: l.id, quantity: l.quantity }).collect();
    let expires_at =
        Timestamp(surge_gateway::time::now().0 + u64::try_from(ttl.as_nanos()).unwrap());
    let applied = submit(
        &services.engine,
        Command::Reserve {
            buyer: BuyerId(buyer.id.unsigned_abs()),
            expiry: Expiry::At(expires_at),
            cart: None,
            lines: LineRequests::from_slice(&requests).unwrap(),
            warehouses: WarehouseChoices::from_slice(&[WAREHOUSE]).unwrap(),
        },
    )
    .await
    .unwrap();
    let Outcome::Reserved { order, .. } = applied.outcome else {
        panic!("reservation refused: {applied:?}");
    };
    let json_lines: Vec<Value> = lines
        .iter()
        .map(|l| json!({"sku": l.sku, "quantity": l.quantity, "unit_price_cents": l.price, "warehouse": "w0"}))
        .collect();
    let total: i64 = lines.iter().map(|l| l.price * i64::from(l.quantity)).sum();
    let rows: Vec<(String, i64, u32)> =
        lines.iter().map(|l| (l.sku.to_owned(), l.seller, l.quantity)).collect();
    let (buyer_id, created_at) = (buyer.id, surge_gateway::now_rfc3339());
    let expires = surge_gateway::time::rfc3339(expires_at);
    services
        .db
        .write(move |tx| {
            let id = i64::try_from(order.0).unwrap();
            tx.execute(
                "INSERT INTO orders (id, buyer_id, created_at, expires_at, total_cents, currency,
                 lines, shipping, payment_token) VALUES (?1, ?2, ?3, ?4, ?5, 'USD', ?6, ?7, 'tok_ok')",
                params![
                    id,
                    buyer_id,
                    created_at,
                    expires,
                    total,
                    Value::from(json_lines).to_string(),
                    json!({"name": "Ann", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115"})
                        .to_string()
                ],
            )?;
            for (sku, seller, quantity) in rows {
                tx.execute(
                    "INSERT INTO order_skus (order_id, sku, seller_id, quantity) VALUES (?1, ?2, ?3, ?4)",
                    params![id, sku, seller, quantity],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    order
}

async fn place(app: &TestApp, buyer: &User, lines: &[Line]) -> OrderId {
    place_with_ttl(app, buyer, lines, Duration::from_secs(600)).await
}

/// Commits the order in the engine and records `confirmed`, as the payment module will.
async fn pay(app: &TestApp, order: OrderId) {
    let services = app.state.services().unwrap();
    let applied = submit(&services.engine, Command::Commit { order }).await.unwrap();
    assert!(matches!(applied.outcome, Outcome::Transitioned { .. }), "{applied:?}");
    record_transition(&services.db, order, "confirmed", Some(applied.sequence.0)).await.unwrap();
}

/// The engine's counters of a SKU in the test warehouse.
async fn stock(app: &TestApp, sku: SkuId) -> StockLevel {
    let engine = &app.state.services().unwrap().engine;
    surge_gateway::query(engine, move |engine| engine.stock(sku, WAREHOUSE).unwrap()).await.unwrap()
}

/// Polls until the engine has retired `order` (expired it, here), checking every millisecond.
async fn until_retired(app: &TestApp, order: OrderId) {
    let engine = &app.state.services().unwrap().engine;
    let deadline = Instant::now() + Duration::from_secs(10);
    while surge_gateway::query(engine, move |engine| engine.order(order).is_some()).await.unwrap() {
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
        json!([{"sku": "mug", "quantity": 3, "unit_price_cents": 1250, "warehouse": "w0"}])
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
    // Paid in the engine, but the payment's transition row is not written yet.
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
    // The engine has retired the order; its row is written behind by the event recorder. The read
    // waits for it instead of answering `pending_payment`.
    let (status, detail) = app.call(Method::GET, &path(order, ""), Some(&buyer.token), None).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(
        (detail["status"].as_str(), statuses(&detail)),
        (Some("expired"), vec!["pending_payment", "expired"])
    );
}

#[tokio::test]
async fn the_stored_watermark_follows_commands_without_transitions() {
    // A start replays from the newest snapshot at or before this watermark: if only transitions
    // moved it, a catalog that only ever set stock would be replayed from zero at every start.
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    catalog(&app, &seller, &[("lamp", 1500)], 4).await;
    let services = app.state.services().unwrap();
    let command = Command::SetStock { sku: SkuId(1), warehouse: WAREHOUSE, on_hand: 9 };
    let applied = submit(&services.engine, command).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = surge_gateway::order_events::watermark(&services.db).await.unwrap();
        if stored >= applied.sequence {
            break;
        }
        assert!(Instant::now() < deadline, "watermark stuck at {stored:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn reservations_a_crash_left_without_an_order_row_are_released() {
    let app = TestApp::start(TestApp::config()).await;
    let seller = user(&app, "seller").await;
    let buyer = user(&app, "buyer").await;
    let ids = catalog(&app, &seller, &[("mug", 500)], 10).await;
    let line = Line { sku: "mug", id: ids[0], seller: seller.id, price: 500, quantity: 2 };
    let kept = place(&app, &buyer, std::slice::from_ref(&line)).await;
    // What a crash between the engine's `Reserved` and the order row leaves: a reservation only.
    let services = app.state.services().unwrap();
    let requests = [LineRequest { sku: ids[0], quantity: 3 }];
    let orphan = Command::Reserve {
        buyer: BuyerId(buyer.id.unsigned_abs()),
        expiry: Expiry::After { ttl_ns: 600_000_000_000 },
        cart: None,
        lines: LineRequests::from_slice(&requests).unwrap(),
        warehouses: WarehouseChoices::from_slice(&[WAREHOUSE]).unwrap(),
    };
    let applied = submit(&services.engine, orphan).await.unwrap();
    let Outcome::Reserved { order: orphan, .. } = applied.outcome else { panic!("{applied:?}") };
    assert_eq!(stock(&app, ids[0]).await.reserved, 5);

    assert_eq!(surge_gateway::orders::release_orphans(services).await.unwrap(), 1);
    assert_eq!(stock(&app, ids[0]).await.reserved, 2, "only the stored order holds units");
    let live =
        |id| surge_gateway::query(&services.engine, move |engine| engine.order(id).is_some());
    assert!(!live(orphan).await.unwrap());
    assert!(live(kept).await.unwrap());
    assert_eq!(surge_gateway::orders::release_orphans(services).await.unwrap(), 0, "once only");
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

    // The record claims the shipped order was cancelled, which the engine never did.
    let services = app.state.services().unwrap();
    record_transition(&services.db, shipped, "cancelled", Some(u64::MAX >> 1)).await.unwrap();
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
