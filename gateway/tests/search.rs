//! `GET /v1/search` and `GET /v1/suggest` through the whole gateway: products created through the
//! catalog API, stock set through the engine, the feeder indexing both.
//!
//! The index is eventually consistent, so every check of a change polls with a deadline; the
//! deadline is generous (a slow CI machine), the freshness target itself is measured by
//! `search_freshness` (ignored by default, see BENCHMARKS.md).

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use surge_gateway::testing::{TestApp, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A gateway with two warehouses: `north` serves codes starting with 1 (1 day), `south` those
/// starting with 8 (2 days).
async fn shop() -> (TestApp, String) {
    let app = TestApp::start(TestApp::config()).await;
    for (id, prefix, eta) in [("north", "1", 1), ("south", "8", 2)] {
        let body = json!({"name": id, "postal_code": "00000",
                          "serves": [{"postal_prefix": prefix, "eta_days": eta}]});
        let path = format!("/v1/warehouses/{id}");
        let (status, answer) = app.call(Method::PUT, &path, Some(ADMIN_TOKEN), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (_, seller) = app.user("seller").await;
    (app, seller)
}

/// Creates a product with one variant per `(sku, price, color)` and returns its id.
async fn product(
    app: &TestApp,
    seller: &str,
    title: &str,
    category: &str,
    brand: &str,
    variants: &[(&str, i64, &str)],
) -> String {
    let variants: Vec<Value> = variants
        .iter()
        .map(|(sku, price, color)| {
            json!({"sku": sku, "price_cents": price, "currency": "EUR",
                   "attributes": {"color": color}})
        })
        .collect();
    let body = json!({"title": title, "description": format!("A fine {title}."),
                      "category": category, "brand": brand, "attributes": {"material": "oak"},
                      "variants": variants});
    let (status, answer) = app.call(Method::POST, "/v1/products", Some(seller), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

async fn stock(app: &TestApp, seller: &str, sku: &str, warehouse: &str, on_hand: u32) {
    let path = format!("/v1/skus/{sku}/stock");
    let body = json!({"warehouse": warehouse, "on_hand": on_hand});
    let (status, answer) = app.call(Method::PUT, &path, Some(seller), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

async fn search(app: &TestApp, query: &str) -> Value {
    let (status, answer) = app.call(Method::GET, &format!("/v1/search?{query}"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{query}: {answer}");
    answer
}

fn ids(answer: &Value) -> Vec<String> {
    answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["product_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `query` until `done` holds, and returns that answer; fails with the last one after the
/// deadline.
async fn search_until(app: &TestApp, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = search(app, query).await;
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{query}: still {answer}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn has(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |answer| ids(answer).iter().any(|found| found == id)
}

fn lacks(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |answer| !ids(answer).iter().any(|found| found == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_product_is_found_exactly_and_with_a_typo_then_updated_and_deleted() {
    let (app, seller) = shop().await;
    let id = product(
        &app,
        &seller,
        "Hiking Boots",
        "shoes/boots",
        "Trailfox",
        &[("HB-1", 8999, "brown")],
    )
    .await;
    stock(&app, &seller, "HB-1", "north", 3).await;
    let answer = search_until(&app, "q=hiking", has(&id)).await;
    let item = &answer["items"][0];
    assert_eq!(item["product_id"], id.as_str());
    assert_eq!(item["title"], "Hiking Boots");
    assert_eq!(item["brand"], "Trailfox");
    assert_eq!(item["category"], "shoes/boots");
    assert_eq!(item["price_cents"], 8999);
    assert_eq!(item["currency"], "EUR");
    assert_eq!(item["in_stock"], true);
    assert_eq!(item["eta_days"], Value::Null, "no postal code, no ETA");
    // One typo in a word of 6 letters; every word must match; attributes and brand match too.
    assert_eq!(ids(&search(&app, "q=hikng").await), [id.as_str()]);
    assert_eq!(ids(&search(&app, "q=hiking%20boots").await), [id.as_str()]);
    assert!(ids(&search(&app, "q=hiking%20sandals").await).is_empty());
    assert_eq!(ids(&search(&app, "q=trailfox%20brown").await), [id.as_str()]);

    let path = format!("/v1/products/{id}");
    let change = json!({"title": "Mountain Boots", "description": "For the Alps."});
    let (status, _) = app.call(Method::PATCH, &path, Some(&seller), Some(change)).await;
    assert_eq!(status, StatusCode::OK);
    search_until(&app, "q=mountain", has(&id)).await;
    search_until(&app, "q=hiking", lacks(&id)).await;

    let (status, _) = app.call(Method::DELETE, &path, Some(&seller), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let answer = search_until(&app, "q=mountain&in_stock=false", lacks(&id)).await;
    assert_eq!(answer["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_is_hidden_unless_asked_and_sold_out_disappears() {
    let (app, seller) = shop().await;
    let id = product(
        &app,
        &seller,
        "Walnut Desk",
        "home/furniture",
        "Oakridge",
        &[("DESK-1", 29_900, "walnut")],
    )
    .await;
    let answer = search_until(&app, "q=walnut&in_stock=false", has(&id)).await;
    assert_eq!(answer["items"][0]["in_stock"], false);
    assert!(ids(&search(&app, "q=walnut").await).is_empty(), "never stocked: hidden by default");

    stock(&app, &seller, "DESK-1", "south", 1).await;
    let answer = search_until(&app, "q=walnut", has(&id)).await;
    assert_eq!(answer["items"][0]["in_stock"], true);

    // The last unit goes into a pending order: reserved units are not available.
    let (_, buyer) = app.user("buyer").await;
    let checkout = json!({
        "shipping": {"name": "Ann", "line1": "Main St 1", "city": "Munich", "postal_code": "80331"},
        "payment": {"token": "tok_hang"}, "items": [{"sku": "DESK-1", "quantity": 1}]});
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/v1/checkout")
        .header("authorization", format!("Bearer {buyer}"))
        .header("content-type", "application/json")
        .header("idempotency-key", "desk")
        .body(axum::body::Body::from(checkout.to_string()))
        .unwrap();
    let (status, answer) = app.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    search_until(&app, "q=walnut", lacks(&id)).await;
    let answer = search(&app, "q=walnut&in_stock=false").await;
    assert_eq!((ids(&answer), &answer["items"][0]["in_stock"]), (vec![id.clone()], &json!(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postal_code_hides_what_cannot_be_delivered_and_fills_the_eta() {
    let (app, seller) = shop().await;
    let north = product(
        &app,
        &seller,
        "Garden Hose North",
        "garden/tools",
        "Verdant",
        &[("HOSE-N", 1999, "green")],
    )
    .await;
    let both = product(
        &app,
        &seller,
        "Garden Hose Both",
        "garden/tools",
        "Verdant",
        &[("HOSE-B1", 2999, "green"), ("HOSE-B2", 2499, "blue")],
    )
    .await;
    stock(&app, &seller, "HOSE-N", "north", 5).await;
    stock(&app, &seller, "HOSE-B1", "north", 5).await;
    stock(&app, &seller, "HOSE-B2", "south", 5).await;
    // Stock events are indexed in order: once the last one (HOSE-B2 in the south) shows, the
    // others have been applied too. Waiting only for both products to appear would race it.
    search_until(&app, "q=hose&postal_code=80331", |answer| answer["total"] == 1).await;
    search_until(&app, "q=hose", |answer| answer["total"] == 2).await;

    let answer = search(&app, "q=hose&postal_code=10115&sort=price_asc").await;
    assert_eq!(ids(&answer), [north.clone(), both.clone()]);
    assert_eq!(answer["items"][0]["eta_days"], 1);
    assert_eq!(answer["items"][1]["eta_days"], 1);
    assert_eq!(answer["items"][1]["price_cents"], 2499, "the cheapest variant's price");

    let answer = search(&app, "q=hose&postal_code=80331").await;
    assert_eq!(ids(&answer), [both.as_str()], "only `both` has stock in the south");
    assert_eq!(answer["items"][0]["eta_days"], 2);

    let answer = search(&app, "q=hose&postal_code=55555").await;
    assert_eq!(answer["total"], 0, "no warehouse serves 5xxxx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_facets_sorting_and_cursor_pages() {
    let (app, seller) = shop().await;
    let catalog = [
        ("Trail Running Shoe", "shoes/sneakers", "Stride", 5_000, "red"),
        ("Road Running Shoe", "shoes/sneakers", "Stride", 7_000, "blue"),
        ("Running Boot", "shoes/boots", "Pacer", 9_000, "red"),
        ("Running Shorts", "sports/running", "Peakform", 2_000, "red"),
        ("Running Vest", "sports/running", "Peakform", 3_000, "black"),
    ];
    let mut created = Vec::new();
    for (index, (title, category, brand, price, color)) in catalog.iter().enumerate() {
        let sku = format!("RUN-{index}");
        created
            .push(product(&app, &seller, title, category, brand, &[(&sku, *price, color)]).await);
        stock(&app, &seller, &sku, "north", 2).await;
    }
    let answer = search_until(&app, "q=running", |answer| answer["total"] == 5).await;
    let facet = |answer: &Value, name: &str, value: &str| {
        answer["facets"][name]
            .as_array()
            .unwrap()
            .iter()
            .find(|facet| facet["value"] == value)
            .map(|facet| facet["count"].as_u64().unwrap())
    };
    assert_eq!(facet(&answer, "brand", "Stride"), Some(2));
    assert_eq!(facet(&answer, "brand", "Peakform"), Some(2));
    assert_eq!(facet(&answer, "category", "shoes/sneakers"), Some(2));
    assert_eq!(facet(&answer, "category", "sports/running"), Some(2));

    // Category subtree, brand, price range and attributes, each narrowing the facets too.
    let answer = search(&app, "q=running&category=shoes").await;
    assert_eq!(answer["total"], 3);
    assert_eq!(facet(&answer, "brand", "Peakform"), None);
    assert_eq!(search(&app, "q=running&brand=Stride").await["total"], 2);
    assert_eq!(search(&app, "q=running&min_price=3000&max_price=7000").await["total"], 3);
    let answer = search(&app, "q=running&attr.color=red&sort=price_desc").await;
    assert_eq!(ids(&answer), [created[2].clone(), created[0].clone(), created[3].clone()]);
    assert_eq!(search(&app, "attr.material=oak&attr.color=black").await["total"], 1);

    // Pages of two, by price: disjoint, complete, and the last one says there is no next.
    let mut seen = Vec::new();
    let mut query = "q=running&sort=price_asc&size=2".to_owned();
    for page in 0..3 {
        let answer = search(&app, &query).await;
        assert_eq!(answer["total"], 5);
        seen.extend(ids(&answer));
        match answer["next_cursor"].as_str() {
            Some(cursor) => {
                assert!(page < 2);
                query = format!("q=running&sort=price_asc&size=2&cursor={cursor}");
            }
            None => assert_eq!(page, 2),
        }
    }
    let by_price = [3, 4, 0, 1, 2].map(|index| created[index].clone());
    assert_eq!(seen, by_price);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggestions_complete_a_prefix() {
    let (app, seller) = shop().await;
    let id = product(
        &app,
        &seller,
        "Espresso Machine",
        "kitchen/appliances",
        "Brava",
        &[("ESP-1", 19_900, "silver")],
    )
    .await;
    stock(&app, &seller, "ESP-1", "north", 1).await;
    search_until(&app, "q=espresso", has(&id)).await;
    let (status, answer) = app.call(Method::GET, "/v1/suggest?q=espr", None, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["suggestions"], json!(["Espresso Machine"]));
    let (status, answer) = app.call(Method::GET, "/v1/suggest?q=", None, None).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"suggestions": []})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_by_name() {
    let app = TestApp::start(TestApp::config()).await;
    for (query, parameter) in [
        ("size=0", "size"),
        ("size=101", "size"),
        ("size=ten", "size"),
        ("cursor=bm9wZQ", "cursor"),
        ("cursor=%%%", "cursor"),
        ("sort=cheapest", "sort"),
        ("min_price=-1", "min_price"),
        ("max_price=1.5", "max_price"),
        ("min_price=500&max_price=100", "min_price"),
        ("in_stock=maybe", "in_stock"),
        ("postal_code=%2A%2A", "postal_code"),
        ("colour=red", "colour"),
        ("q=a&q=b", "q"),
    ] {
        let (status, answer) =
            app.call(Method::GET, &format!("/v1/search?{query}"), None, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {answer}");
        assert_eq!(answer["code"], "validation_failed");
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(parameter), "{query}: {detail}");
    }
    let (status, answer) = app.call(Method::GET, "/v1/suggest?prefix=a", None, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let answer = search(&app, "").await;
    assert_eq!(
        answer,
        json!({"items": [], "facets": {"brand": [], "category": []},
                              "total": 0, "next_cursor": null})
    );
}
