//! Journal retention in the whole gateway, with the journal on disk as `surge serve` keeps it:
//! segments no reader needs move to `archive/`, and a restart on the shortened journal serves the
//! same stock and orders. (Which segments a lagging projection keeps is tested where the rule
//! lives, in the pipeline's tests and the simulator.)

use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use surge_gateway::testing::{TestApp, ADMIN_TOKEN};
use surge_journal::JournalConfig;
use surge_pipeline::PipelineConfig;

const WAIT_MAX: Duration = Duration::from_secs(20);

/// Small segments and frequent snapshots, so that a few dozen checkouts make both.
fn pipeline_config() -> PipelineConfig {
    PipelineConfig {
        snapshot_every: 16,
        journal: JournalConfig { segment_bytes_max: 1024 },
        ..TestApp::pipeline_config()
    }
}

async fn start(dir: tempfile::TempDir) -> TestApp {
    match TestApp::start_on_disk(TestApp::config(), dir, pipeline_config()).await {
        Ok(app) => app,
        Err(not_started) => panic!("the gateway did not start: {:#}", not_started.error),
    }
}

async fn expect(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let (status, answer) = app.call(method.clone(), path, Some(token), body).await;
    assert!(status.is_success(), "{method} {path}: {status} {answer}");
    answer
}

/// A seller's product `S` with 1,000 units in a warehouse that serves everywhere; returns the
/// seller's token.
async fn open_shop(app: &TestApp) -> String {
    let warehouse = json!({"name": "w", "postal_code": "10115",
        "serves": [{"postal_prefix": "", "eta_days": 1}]});
    expect(app, Method::PUT, "/v1/warehouses/w", ADMIN_TOKEN, Some(warehouse)).await;
    let (_, seller) = app.user("seller").await;
    let product = json!({"title": "Kettle", "description": "", "category": "kitchen",
        "brand": "Acme", "attributes": {}, "images": [],
        "variants": [{"sku": "S", "price_cents": 1500, "currency": "EUR", "attributes": {}}]});
    expect(app, Method::POST, "/v1/products", &seller, Some(product)).await;
    let stock = json!({"warehouse": "w", "on_hand": 1000});
    expect(app, Method::PUT, "/v1/skus/S/stock", &seller, Some(stock)).await;
    seller
}

async fn checkout(app: &TestApp, buyer: &str, key: &str) {
    let body = json!({
        "shipping": {"name": "Ann", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115"},
        "payment": {"token": "tok_ok"},
        "items": [{"sku": "S", "quantity": 1}],
    });
    let request = Request::post("/v1/checkout")
        .header("authorization", format!("Bearer {buyer}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, answer) = app.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

/// The stock of `S`, once every order is paid (nothing reserved any more).
async fn settled_stock(app: &TestApp, seller: &str) -> Value {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let stock = expect(app, Method::GET, "/v1/skus/S/stock", seller, None).await;
        if stock["reserved"] == 0 {
            return stock;
        }
        assert!(Instant::now() < deadline, "payments never settled: {stock}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a client can see: the stock, every buyer's orders, the engine's sequence, reconciliation.
async fn observed(app: &TestApp, seller: &str, buyers: &[String]) -> Value {
    let stock = settled_stock(app, seller).await;
    let mut orders = Vec::new();
    for buyer in buyers {
        let list = expect(app, Method::GET, "/v1/orders?size=100", buyer, None).await;
        orders.push(list["orders"].clone());
    }
    let engine = expect(app, Method::GET, "/v1/admin/engine", ADMIN_TOKEN, None).await;
    let reconciliation =
        expect(app, Method::GET, "/v1/admin/reconciliation", ADMIN_TOKEN, None).await;
    assert_eq!(reconciliation["ok"], true, "{reconciliation}");
    json!({"stock": stock, "orders": orders, "sequence": engine["sequence"]})
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.ends_with(".seg"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn covered_segments_are_archived_and_a_restart_serves_the_same_orders_and_stock() {
    let app = start(tempfile::tempdir().unwrap()).await;
    let seller = open_shop(&app).await;
    let minted = expect(
        &app,
        Method::POST,
        "/v1/admin/tokens",
        ADMIN_TOKEN,
        Some(json!({"count": 3, "role": "buyer"})),
    )
    .await;
    let buyers: Vec<String> = minted["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["token"].as_str().unwrap().to_owned())
        .collect();
    for index in 0..45 {
        checkout(&app, &buyers[index % buyers.len()], &format!("key-{index}")).await;
    }
    let before = observed(&app, &seller, &buyers).await;
    assert_eq!(before["stock"]["sold"], 45, "{before}");
    let journal_dir = app.dir.path().join("journal");
    let archive_dir = app.dir.path().join("archive");
    let segments_before = segments(&journal_dir);
    assert!(segments_before.len() > 4, "the test wants several segments: {segments_before:?}");

    // The follower writes snapshots behind the engine and the projection follows it: poll until
    // a pass has found two snapshots at or before the projection's watermark. (The pass the
    // gateway runs at start found nothing: there was no journal yet.)
    let running = app.running.as_ref().unwrap();
    let deadline = Instant::now() + WAIT_MAX;
    while segments(&archive_dir).is_empty() {
        let report = running.archive_now().await.expect("an archive on disk").unwrap();
        assert!(Instant::now() < deadline, "nothing was ever archived: {report:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live = segments(&journal_dir);
    let archived = segments(&archive_dir);
    assert_eq!([archived, live.clone()].concat(), segments_before, "moved, never copied or lost");
    // What a start needs stays: everything after the snapshot before the newest.
    let mut snapshots: Vec<u64> = std::fs::read_dir(app.dir.path().join("snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".snap"))
        .map(|name| name[..20].parse().unwrap())
        .collect();
    snapshots.sort_unstable();
    let previous = snapshots[snapshots.len() - 2];
    let first_live: u64 = live[0][..20].parse().unwrap();
    assert!(first_live <= previous + 1, "{} must hold {}", live[0], previous + 1);

    let (dir, _) = app.stop().await;
    let app = start(dir).await;
    assert_eq!(observed(&app, &seller, &buyers).await, before, "the same state after a restart");
    assert!(segments(&app.dir.path().join("journal"))[0] >= live[0], "nothing came back");
    // And it keeps selling.
    checkout(&app, &buyers[0], "after-the-restart").await;
    assert_eq!(settled_stock(&app, &seller).await["sold"], 46);
}
