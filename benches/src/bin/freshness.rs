//! Search freshness: how long after a write's answer the search shows its effect.
//!
//! Runs a whole gateway in process (`surge_gateway::testing::TestApp`: engine with an in-memory
//! journal, SQLite and the search index in a temporary directory, the real feeder) and, per round,
//! creates a product, stocks it, and sells it out, each time polling `/v1/search` every 5 ms until
//! the change shows. Prints one JSON line with p50/p99/max per kind of change, in milliseconds. The
//! issue's target is within 1 s.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use clap::Parser;
use serde_json::{json, Value};
use surge_gateway::testing::{TestApp, ADMIN_TOKEN};

#[derive(Debug, Parser)]
struct Args {
    /// Rounds of create, stock, sell out.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
}

const POLL_INTERVAL: Duration = Duration::from_millis(5);
const DEADLINE: Duration = Duration::from_secs(10);

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let (status, answer) = app.call(method, path, token, body).await;
    assert!(status.is_success() || status == StatusCode::CREATED, "{path}: {status} {answer}");
    answer
}

/// Polls the search for `brand` until `shown` is what it says about `id`; returns the delay.
async fn wait_until(app: &TestApp, query: &str, id: &str, shown: bool) -> Duration {
    let started = Instant::now();
    loop {
        let answer = call(app, Method::GET, &format!("/v1/search?{query}"), None, None).await;
        let found = answer["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|item| item["product_id"] == id));
        if found == shown {
            return started.elapsed();
        }
        assert!(started.elapsed() < DEADLINE, "{query}: not fresh after {DEADLINE:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn summary(delays: &mut [Duration]) -> Value {
    delays.sort();
    let at = |percent: usize| delays[(delays.len() - 1) * percent / 100].as_secs_f64() * 1e3;
    json!({"n": delays.len(), "p50_ms": at(50), "p99_ms": at(99), "max_ms": at(100)})
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let app = TestApp::start(TestApp::config()).await;
    let warehouse = json!({"name": "north", "postal_code": "10000", "serves": [{"postal_prefix": "", "eta_days": 1}]});
    call(&app, Method::PUT, "/v1/warehouses/north", Some(ADMIN_TOKEN), Some(warehouse)).await;
    let (_, seller) = app.user("seller").await;
    let (mut created, mut stocked, mut sold_out) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let (brand, sku) = (format!("Fresh{round}"), format!("FRESH-{round}"));
        let product = json!({"title": "Freshness probe", "description": "", "category": "test/freshness",
            "brand": brand, "attributes": {}, "images": [],
            "variants": [{"sku": sku, "price_cents": 100, "currency": "EUR", "attributes": {}}]});
        let id = call(&app, Method::POST, "/v1/products", Some(&seller), Some(product)).await["id"]
            .as_str()
            .expect("product id")
            .to_owned();
        let query = format!("brand={brand}");
        created.push(wait_until(&app, &format!("{query}&in_stock=false"), &id, true).await);
        let stock = |on_hand: u32| json!({"warehouse": "north", "on_hand": on_hand});
        call(&app, Method::PUT, &format!("/v1/skus/{sku}/stock"), Some(&seller), Some(stock(1)))
            .await;
        stocked.push(wait_until(&app, &query, &id, true).await);
        call(&app, Method::PUT, &format!("/v1/skus/{sku}/stock"), Some(&seller), Some(stock(0)))
            .await;
        sold_out.push(wait_until(&app, &query, &id, false).await);
    }
    let line = json!({
        "bench": "search_freshness",
        "rounds": args.rounds,
        "measured": "from the write's HTTP answer to the first /v1/search answer showing it, polling every 5 ms, in process",
        "created": summary(&mut created),
        "in_stock": summary(&mut stocked),
        "sold_out": summary(&mut sold_out),
        "target_ms": 1000,
    });
    println!("{line}");
}
