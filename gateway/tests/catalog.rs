//! The catalog routes: products, bulk upload, categories, stock and limits through the engine,
//! warehouses and serviceability, and the registry the checkout reads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use surge_engine::{
    BuyerId, Command, Expiry, LineRequest, LineRequests, Outcome, Timestamp, WarehouseChoices,
};
use surge_gateway::testing::{TestApp, ADMIN_TOKEN};

fn product(sku: &str, category: &str) -> Value {
    json!({
        "title": format!("Product {sku}"),
        "description": "A fine thing",
        "category": category,
        "brand": "Acme",
        "attributes": {"color": "red", "weight_g": 250, "refurbished": false},
        "images": ["https://img.example.com/a.jpg"],
        "variants": [
            {"sku": sku, "price_cents": 1999, "currency": "USD", "attributes": {"size": "M"}},
        ],
    })
}

/// Creates a product as `seller` and returns its id.
async fn create(app: &TestApp, seller: &str, body: Value) -> String {
    let (status, created) = app.call(Method::POST, "/v1/products", Some(seller), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

async fn warehouse(app: &TestApp, id: &str, serves: Value) {
    let body = json!({"name": format!("Warehouse {id}"), "postal_code": "10115", "serves": serves});
    let path = format!("/v1/warehouses/{id}");
    let (status, answer) = app.call(Method::PUT, &path, Some(ADMIN_TOKEN), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

async fn set_stock(
    app: &TestApp,
    token: &str,
    sku: &str,
    warehouse: &str,
    on_hand: i64,
) -> (StatusCode, Value) {
    let body = json!({"warehouse": warehouse, "on_hand": on_hand});
    app.call(Method::PUT, &format!("/v1/skus/{sku}/stock"), Some(token), Some(body)).await
}

fn assert_problem(status: StatusCode, problem: &Value, expected: StatusCode, code: &str) {
    assert_eq!((status, problem["code"].as_str()), (expected, Some(code)), "{problem}");
}

#[tokio::test]
async fn products_are_created_read_changed_and_deleted_by_their_owner() {
    let app = TestApp::start(TestApp::config()).await;
    let (seller_id, seller) = app.user("seller").await;
    let (_, other_seller) = app.user("seller").await;
    let (_, buyer) = app.user("buyer").await;

    let (status, problem) =
        app.call(Method::POST, "/v1/products", Some(&buyer), Some(product("X-1", "toys"))).await;
    assert_problem(status, &problem, StatusCode::FORBIDDEN, "forbidden");

    let id = create(&app, &seller, product("X-1", "toys")).await;
    assert!(id.starts_with('p'), "{id}");
    let (status, shown) = app.call(Method::GET, &format!("/v1/products/{id}"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["seller_id"], seller_id.as_str());
    assert_eq!(shown["title"], "Product X-1");
    assert_eq!(shown["attributes"]["weight_g"], 250);
    assert_eq!(
        shown["variants"][0],
        json!({"sku": "X-1", "price_cents": 1999, "currency": "USD",
               "attributes": {"size": "M"}, "available": 0})
    );
    assert_eq!(shown["rating"], json!({"average": null, "count": 0}));
    let registry = &app.state.services().unwrap().catalog;
    let info = registry.sku("X-1").expect("the registry knows a new SKU");
    assert_eq!((info.price_cents, info.title.as_str()), (1999, "Product X-1"));

    let path = format!("/v1/products/{id}");
    let change = json!({"title": "Renamed"});
    let (status, problem) =
        app.call(Method::PATCH, &path, Some(&other_seller), Some(change.clone())).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    let (status, problem) = app.call(Method::PATCH, &path, Some(&buyer), Some(change)).await;
    assert_problem(status, &problem, StatusCode::FORBIDDEN, "forbidden");
    let (status, problem) = app.call(Method::DELETE, &path, Some(&other_seller), None).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");

    // Prices of named SKUs change, new SKUs are added, SKUs not named are kept.
    let change = json!({
        "title": "Renamed",
        "variants": [{"sku": "X-2", "price_cents": 500, "currency": "USD"}],
    });
    let (status, changed) = app.call(Method::PATCH, &path, Some(&seller), Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let change = json!({"variants": [{"sku": "X-1", "price_cents": 2499}]});
    let (status, changed) = app.call(Method::PATCH, &path, Some(&seller), Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["title"], "Renamed");
    assert_eq!(changed["brand"], "Acme");
    let prices: Vec<(&str, i64)> = changed["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["sku"].as_str().unwrap(), v["price_cents"].as_i64().unwrap()))
        .collect();
    assert_eq!(prices, [("X-1", 2499), ("X-2", 500)]);
    let info = registry.sku("X-1").unwrap();
    assert_eq!(
        (info.price_cents, info.title.as_str()),
        (2499, "Renamed"),
        "checkout sees new prices"
    );
    assert_eq!(registry.sku("X-2").unwrap().product_id, info.product_id);

    let change = json!({"variants": [{"sku": "X-3", "price_cents": 100}]});
    let (status, problem) = app.call(Method::PATCH, &path, Some(&seller), Some(change)).await;
    assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(problem["detail"].as_str().unwrap().contains("variants[0].currency"), "{problem}");
    let other_id = create(&app, &other_seller, product("Y-1", "toys")).await;
    let change = json!({"variants": [{"sku": "Y-1", "price_cents": 1}]});
    let (status, problem) = app.call(Method::PATCH, &path, Some(&seller), Some(change)).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "conflict");
    let (_, untouched) =
        app.call(Method::GET, &format!("/v1/products/{other_id}"), None, None).await;
    assert_eq!(untouched["variants"][0]["price_cents"], 1999);

    let (status, _) = app.call(Method::DELETE, &path, Some(&seller), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = app.call(Method::GET, &path, None, None).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    let (status, problem) =
        app.call(Method::PATCH, &path, Some(&seller), Some(json!({"title": "Back"}))).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    assert!(
        registry.sku("X-1").is_none() && registry.sku("X-2").is_none(),
        "deleted SKUs cannot be bought"
    );
    // The name of a deleted SKU stays taken: its engine id is in the journal for good.
    let (status, problem) =
        app.call(Method::POST, "/v1/products", Some(&seller), Some(product("X-1", "toys"))).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "conflict");
    let (status, _) = app.call(Method::GET, "/v1/products/nonsense", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn validation_failures_name_the_field() {
    let app = TestApp::start(TestApp::config()).await;
    let (_, seller) = app.user("seller").await;
    let with = |pointer: &str, value: Value| {
        let mut body = product("V-1", "toys");
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    let mut unknown = product("V-1", "toys");
    unknown["variants"][0]["available"] = json!(5);
    let mut missing = product("V-1", "toys");
    missing.as_object_mut().unwrap().remove("title");
    let cases = [
        (with("/variants/0/sku", json!("has space")), "variants[0].sku"),
        (with("/variants/0/sku", json!("x".repeat(65))), "variants[0].sku"),
        (with("/variants/0/price_cents", json!(-1)), "variants[0].price_cents"),
        (with("/variants/0/price_cents", json!(19.99)), "variants[0].price_cents"),
        (with("/variants/0/currency", json!("usd")), "variants[0].currency"),
        (with("/variants", json!([])), "variants"),
        (with("/title", json!(" ")), "title"),
        (with("/title", json!("t".repeat(201))), "title"),
        (with("/category", json!("books//fiction")), "category"),
        (with("/category", json!("")), "category"),
        (with("/attributes", json!({"nested": {"a": 1}})), "attributes.nested"),
        (with("/variants/0/attributes", json!({"list": [1]})), "variants[0].attributes.list"),
        (with("/images", json!(["ftp://example.com/a.png"])), "images[0]"),
        (with("/images", json!(["https://"])), "images[0]"),
        (unknown, "available"),
        (missing, "title"),
    ];
    for (body, field) in cases {
        let (status, problem) =
            app.call(Method::POST, "/v1/products", Some(&seller), Some(body)).await;
        assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{field}: {problem}");
    }
    let mut twice = product("V-1", "toys");
    let variant = twice["variants"][0].clone();
    twice["variants"].as_array_mut().unwrap().push(variant);
    let (status, problem) =
        app.call(Method::POST, "/v1/products", Some(&seller), Some(twice)).await;
    // A SKU repeated within one request is a bad request (as in PATCH); one taken by another
    // product is a conflict.
    assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(problem["detail"].as_str().unwrap().contains("variants[1].sku"), "{problem}");

    create(&app, &seller, product("V-1", "toys")).await;
    let (status, problem) =
        app.call(Method::POST, "/v1/products", Some(&seller), Some(product("V-1", "toys"))).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "conflict");
    // The boundaries themselves are allowed.
    let sku = format!("a.B_c-{}", "9".repeat(58));
    let mut body = with("/title", json!("t".repeat(200)));
    body["variants"] = json!([{"sku": sku, "price_cents": 0, "currency": "EUR"}]);
    create(&app, &seller, body).await;
}

#[tokio::test]
async fn bulk_upload_reports_bad_lines_and_stores_the_rest() {
    let app = TestApp::start(TestApp::config()).await;
    let (_, seller) = app.user("seller").await;
    let (_, buyer) = app.user("buyer").await;
    create(&app, &seller, product("TAKEN", "toys")).await;
    let lines = [
        product("B-1", "books").to_string(),
        "{\"title\": ".to_owned(),
        String::new(),
        product("B-2", "books").to_string(),
        product("B-1", "books").to_string(),
        json!({"title": "No variants", "category": "books", "variants": []}).to_string(),
        product("TAKEN", "books").to_string(),
    ];
    let mut body = lines.join("\n");
    // Long products that take the body past the 64 KiB limit of every other route.
    for index in 0..5 {
        let mut long = product(&format!("PAD-{index}"), "books");
        long["description"] = json!("d".repeat(19_000));
        body.push_str(&format!("\n{long}"));
    }
    assert!(body.len() > 64 * 1024);
    let request = |token: &str, content_type: &str, body: String| {
        Request::post("/v1/products/bulk")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap()
    };
    let (status, problem) = app.send(request(&buyer, "application/x-ndjson", body.clone())).await;
    assert_problem(status, &problem, StatusCode::FORBIDDEN, "forbidden");
    let (status, problem) = app.send(request(&seller, "text/plain", body.clone())).await;
    assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    let (status, answer) = app.send(request(&seller, "application/x-ndjson", body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["created"], 7, "{answer}");
    let ids = answer["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 7);
    let failed: Vec<(u64, &str)> = answer["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|failure| (failure["line"].as_u64().unwrap(), failure["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        failed,
        [(2, "validation_failed"), (5, "conflict"), (6, "validation_failed"), (7, "conflict")],
        "{answer}"
    );
    assert!(answer["failed"][2]["error"].as_str().unwrap().contains("variants"), "{answer}");
    let (status, shown) = app
        .call(Method::GET, &format!("/v1/products/{}", ids[1].as_str().unwrap()), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["variants"][0]["sku"], "B-2");
    assert!(app.state.services().unwrap().catalog.sku("PAD-3").is_some());

    let one = product("J-1", "books").to_string();
    let (status, answer) = app.send(request(&seller, "application/json", one)).await;
    assert_eq!((status, answer["created"].as_u64()), (StatusCode::OK, Some(1)), "{answer}");
    let huge = "x".repeat(17 * 1024 * 1024);
    let (status, problem) = app.send(request(&seller, "application/x-ndjson", huge)).await;
    assert_problem(status, &problem, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn a_bulk_line_may_use_a_sku_only_a_refused_earlier_line_named() {
    let app = TestApp::start(TestApp::config()).await;
    let (_, seller) = app.user("seller").await;
    create(&app, &seller, product("TAKEN", "toys")).await;
    let variant = |sku: &str| json!({"sku": sku, "price_cents": 100, "currency": "USD"});
    let lines = [
        // Refused by the database: TAKEN exists. FREE is not stored with it.
        json!({"title": "Pair", "category": "toys", "variants": [variant("FREE"), variant("TAKEN")]}),
        json!({"title": "Single", "category": "toys", "variants": [variant("FREE")]}),
        // FREE is now stored, by line 2.
        json!({"title": "Again", "category": "toys", "variants": [variant("FREE")]}),
    ];
    let body = lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    let request = Request::post("/v1/products/bulk")
        .header("authorization", format!("Bearer {seller}"))
        .header("content-type", "application/x-ndjson")
        .body(Body::from(body))
        .unwrap();
    let (status, answer) = app.send(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["created"], 1, "{answer}");
    let failed = answer["failed"].as_array().unwrap();
    assert_eq!((failed.len(), &failed[0]["line"], &failed[1]["line"]), (2, &json!(1), &json!(3)));
    assert!(failed[0]["error"].as_str().unwrap().contains("TAKEN is taken"), "{answer}");
    assert!(failed[1]["error"].as_str().unwrap().contains("earlier line"), "{answer}");
    let id = answer["ids"][0].as_str().unwrap();
    let (_, shown) = app.call(Method::GET, &format!("/v1/products/{id}"), None, None).await;
    assert_eq!(
        (shown["title"].as_str(), shown["variants"][0]["sku"].as_str()),
        (Some("Single"), Some("FREE"))
    );
}

#[tokio::test]
async fn stock_goes_through_the_engine() {
    let app = TestApp::start(TestApp::config()).await;
    let (_, seller) = app.user("seller").await;
    let (_, other_seller) = app.user("seller").await;
    let (_, buyer) = app.user("buyer").await;
    let id = create(&app, &seller, product("S-1", "toys")).await;
    warehouse(&app, "north", json!([{"postal_prefix": "1", "eta_days": 1}])).await;
    warehouse(&app, "south", json!([{"postal_prefix": "", "eta_days": 3}])).await;

    let (status, level) = set_stock(&app, &seller, "S-1", "north", 10).await;
    assert_eq!(status, StatusCode::OK, "{level}");
    assert_eq!(
        level,
        json!({"sku": "S-1", "warehouse": "north",
               "on_hand": 10, "reserved": 0, "sold": 0, "available": 10})
    );
    let (status, _) = set_stock(&app, ADMIN_TOKEN, "S-1", "south", 5).await;
    assert_eq!(status, StatusCode::OK, "an admin may set stock");

    // A reservation straight through the engine, as the checkout would make it.
    let services = app.state.services().unwrap();
    let sku = services.catalog.sku("S-1").unwrap().id;
    let north = services.catalog.warehouse_by_name("north").unwrap().id;
    let deadline = SystemTime::now() + Duration::from_secs(3600);
    let expires_at = Timestamp(deadline.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    let reserve = Command::Reserve {
        buyer: BuyerId(1),
        expiry: Expiry::At(expires_at),
        cart: None,
        lines: LineRequests::from_slice(&[LineRequest { sku, quantity: 3 }]).unwrap(),
        warehouses: WarehouseChoices::from_slice(&[north]).unwrap(),
    };
    let applied = surge_gateway::submit(&services.engine, reserve).await.unwrap();
    assert!(matches!(applied.outcome, Outcome::Reserved { .. }), "{applied:?}");

    let (status, stock) = app.call(Method::GET, "/v1/skus/S-1/stock", Some(&seller), None).await;
    assert_eq!(status, StatusCode::OK, "{stock}");
    assert_eq!(
        (
            stock["on_hand"].as_u64(),
            stock["reserved"].as_u64(),
            stock["available"].as_u64(),
            stock["sold"].as_u64()
        ),
        (Some(15), Some(3), Some(12), Some(0)),
        "{stock}"
    );
    assert_eq!(
        stock["by_warehouse"],
        json!([
            {"warehouse": "north", "on_hand": 10, "reserved": 3, "available": 7, "sold": 0},
            {"warehouse": "south", "on_hand": 5, "reserved": 0, "available": 5, "sold": 0},
        ])
    );
    let (_, shown) = app.call(Method::GET, &format!("/v1/products/{id}"), None, None).await;
    assert_eq!(
        shown["variants"][0]["available"], 12,
        "units held by a pending order are not available"
    );
    let (status, _) = app.call(Method::GET, "/v1/skus/S-1/stock", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);

    let (status, problem) = set_stock(&app, &seller, "S-1", "north", 2).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "conflict");
    let (status, level) = set_stock(&app, &seller, "S-1", "north", 3).await;
    assert_eq!((status, level["available"].as_u64()), (StatusCode::OK, Some(0)), "{level}");

    for on_hand in [-1, 1 << 31] {
        let (status, problem) = set_stock(&app, &seller, "S-1", "north", on_hand).await;
        assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(problem["detail"].as_str().unwrap().contains("on_hand"), "{problem}");
    }
    let (status, problem) = set_stock(&app, &seller, "S-1", "atlantis", 1).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    let (status, problem) = set_stock(&app, &seller, "NOPE", "north", 1).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(problem["skus"], json!(["NOPE"]));
    let (status, problem) = set_stock(&app, &other_seller, "S-1", "north", 1).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(problem["skus"], json!(["S-1"]), "another seller's SKU looks unknown");
    let (status, problem) =
        app.call(Method::GET, "/v1/skus/S-1/stock", Some(&other_seller), None).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    let (status, problem) = set_stock(&app, &buyer, "S-1", "north", 1).await;
    assert_problem(status, &problem, StatusCode::FORBIDDEN, "forbidden");
    let (status, problem) = app.call(Method::GET, "/v1/skus/S-1/stock", Some(&buyer), None).await;
    assert_problem(status, &problem, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn buyer_limits_are_set_and_lifted() {
    let app = TestApp::start(TestApp::config()).await;
    let (_, seller) = app.user("seller").await;
    let (_, other_seller) = app.user("seller").await;
    create(&app, &seller, product("L-1", "toys")).await;
    let limit = |token: String, body: Value| {
        let app = &app;
        async move { app.call(Method::PUT, "/v1/skus/L-1/limit", Some(&token), Some(body)).await }
    };
    let (status, answer) = limit(seller.clone(), json!({"per_buyer": 2})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"sku": "L-1", "per_buyer": 2}));
    let services = app.state.services().unwrap();
    let sku = services.catalog.sku("L-1").unwrap().id;
    let engine_limit = |engine: &surge_pipeline::Handle| {
        let engine = engine.clone();
        async move { surge_gateway::stock_of(&engine, &[sku]).await.unwrap()[0].buyer_limit }
    };
    assert_eq!(engine_limit(&services.engine).await, Some(2));
    let (_, stock) = app.call(Method::GET, "/v1/skus/L-1/stock", Some(&seller), None).await;
    assert_eq!(stock["per_buyer"], 2);

    for body in [
        json!({}),
        json!({"per_buyer": 0}),
        json!({"per_buyer": 1_000_001}),
        json!({"per_buyer": "2"}),
    ] {
        let (status, problem) = limit(seller.clone(), body).await;
        assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(problem["detail"].as_str().unwrap().contains("per_buyer"), "{problem}");
    }
    let (status, problem) = limit(other_seller, json!({"per_buyer": 5})).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(engine_limit(&services.engine).await, Some(2));

    let (status, answer) = limit(seller.clone(), json!({"per_buyer": null})).await;
    assert_eq!((status, answer["per_buyer"].clone()), (StatusCode::OK, Value::Null), "{answer}");
    assert_eq!(engine_limit(&services.engine).await, None);
}

#[tokio::test]
async fn warehouses_and_serviceability() {
    let app = TestApp::start(TestApp::config()).await;
    let (_, seller) = app.user("seller").await;
    let (_, buyer) = app.user("buyer").await;
    create(&app, &seller, product("D-1", "toys")).await;

    let serves = json!([{"postal_prefix": "10", "eta_days": 1}]);
    let body = json!({"name": "North", "postal_code": "10115", "serves": serves});
    let (status, problem) =
        app.call(Method::PUT, "/v1/warehouses/north", Some(&buyer), Some(body.clone())).await;
    assert_problem(status, &problem, StatusCode::FORBIDDEN, "forbidden");
    let (status, answer) =
        app.call(Method::PUT, "/v1/warehouses/north", Some(ADMIN_TOKEN), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({"id": "north", "name": "North", "postal_code": "10115", "serves": serves})
    );
    let serves = json!([{"postal_prefix": "10", "eta_days": -1}]);
    let bad = json!({"name": "X", "postal_code": "10115", "serves": serves});
    let (status, problem) =
        app.call(Method::PUT, "/v1/warehouses/x", Some(ADMIN_TOKEN), Some(bad)).await;
    assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(problem["detail"].as_str().unwrap().contains("serves[0].eta_days"), "{problem}");
    warehouse(&app, "everywhere", json!([{"postal_prefix": "", "eta_days": 5}])).await;

    let check = |postal_code: &str| {
        let path = format!("/v1/serviceability?sku=D-1&postal_code={postal_code}");
        let app = &app;
        async move {
            let (status, answer) = app.call(Method::GET, &path, None, None).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            answer
        }
    };
    let nowhere = json!({"deliverable": false, "eta_days": null, "warehouse": null});
    assert_eq!(check("10115").await, nowhere, "no stock anywhere");
    set_stock(&app, &seller, "D-1", "everywhere", 4).await;
    assert_eq!(
        check("10115").await,
        json!({"deliverable": true, "eta_days": 5, "warehouse": "everywhere"})
    );
    set_stock(&app, &seller, "D-1", "north", 1).await;
    assert_eq!(
        check("10115").await,
        json!({"deliverable": true, "eta_days": 1, "warehouse": "north"})
    );
    assert_eq!(
        check("80331").await,
        json!({"deliverable": true, "eta_days": 5, "warehouse": "everywhere"}),
        "the empty prefix serves every code"
    );
    set_stock(&app, &seller, "D-1", "everywhere", 0).await;
    assert_eq!(check("80331").await, nowhere, "north does not serve 80331");

    // An update keeps the engine id: stock set before still counts.
    let serves = json!([{"postal_prefix": "8", "eta_days": 2}]);
    let body = json!({"name": "North renamed", "postal_code": "10115", "serves": serves});
    let (status, _) =
        app.call(Method::PUT, "/v1/warehouses/north", Some(ADMIN_TOKEN), Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        check("80331").await,
        json!({"deliverable": true, "eta_days": 2, "warehouse": "north"})
    );
    assert_eq!(check("10115").await, nowhere);

    let (status, problem) =
        app.call(Method::GET, "/v1/serviceability?sku=NOPE&postal_code=1", None, None).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(problem["skus"], json!(["NOPE"]));
    let (status, problem) = app.call(Method::GET, "/v1/serviceability?sku=D-1", None, None).await;
    assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(problem["detail"].as_str().unwrap().contains("postal_code"), "{problem}");
}

#[tokio::test]
async fn the_engine_holds_255_warehouses() {
    let app = TestApp::start(TestApp::config()).await;
    // Rowids start at 1 and the engine takes ids below 256.
    for index in 1..=255 {
        warehouse(&app, &format!("w{index}"), json!([])).await;
    }
    let body = json!({"name": "one too many", "postal_code": "1", "serves": []});
    let (status, problem) =
        app.call(Method::PUT, "/v1/warehouses/w256", Some(ADMIN_TOKEN), Some(body)).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "conflict");
    assert!(app.state.services().unwrap().catalog.warehouse_by_name("w256").is_none());
    warehouse(&app, "w1", json!([{"postal_prefix": "", "eta_days": 2}])).await;
}

#[tokio::test]
async fn categories_count_live_products() {
    let app = TestApp::start(TestApp::config()).await;
    let (_, seller) = app.user("seller").await;
    let (status, answer) = app.call(Method::GET, "/v1/categories", None, None).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"categories": []})));
    create(&app, &seller, product("C-1", "books/fiction")).await;
    let doomed = create(&app, &seller, product("C-2", "books/fiction")).await;
    create(&app, &seller, product("C-3", " books / fiction ")).await;
    let toy = create(&app, &seller, product("C-4", "toys")).await;
    let (status, _) =
        app.call(Method::DELETE, &format!("/v1/products/{doomed}"), Some(&seller), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, answer) = app.call(Method::GET, "/v1/categories", None, None).await;
    assert_eq!(
        answer,
        json!({"categories": [
            {"name": "books/fiction", "product_count": 2},
            {"name": "toys", "product_count": 1},
        ]})
    );
    // A product that changes category moves its count; a category left empty is not listed; a
    // second delete of the same product counts once.
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/products/{toy}"),
            Some(&seller),
            Some(json!({"category": "games"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        app.call(Method::DELETE, &format!("/v1/products/{doomed}"), Some(&seller), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, answer) = app.call(Method::GET, "/v1/categories", None, None).await;
    assert_eq!(
        answer,
        json!({"categories": [
            {"name": "books/fiction", "product_count": 2},
            {"name": "games", "product_count": 1},
        ]})
    );
}
