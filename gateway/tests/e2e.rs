//! End-to-end tests: the real `surge` binary on a free port with a temporary data directory,
//! driven over HTTP as a client would, killed with SIGKILL and restarted on the same directory.
//!
//! Every wait is a poll with a deadline; a deadline that passes fails the test with the last
//! answer seen and the path of the server's log.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use surge_catalog_svc::demo::DEMO_PRODUCTS;
use surge_gateway::loadtest::{Answer, HttpClient};

const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
const RESERVATION_TTL: &str = "2s";
/// Deadlines: generous, since a loaded CI machine is slow, and they only cost time on failure.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const PRICE_CENTS: u64 = 1999;

/// A `surge serve` child process; killed when dropped.
struct Server {
    child: Child,
    http: HttpClient,
    log: PathBuf,
}

impl Server {
    /// Starts `surge serve` on `data_dir` and a free port, and waits until `/readyz` answers 200.
    async fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[]).await
    }

    /// [`Server::start`] with more command line arguments.
    async fn start_with(data_dir: &Path, arguments: &[&str]) -> Server {
        let mut server = Server::spawn(data_dir, arguments);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait().expect("child status") {
                panic!("surge exited with {status} before ready; log:\n{}", server.log_text());
            }
            let ready = server.http.send(Method::GET, "/readyz", None, &[], None).await;
            if ready.is_ok_and(|answer| answer.status == StatusCode::OK) {
                return server;
            }
            assert!(Instant::now() < deadline, "not ready in time; log:\n{}", server.log_text());
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `surge serve` on `data_dir` and a free port, not waited for.
    fn spawn(data_dir: &Path, arguments: &[&str]) -> Server {
        let port = free_port();
        let log = data_dir.with_extension(format!("{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_surge"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--reservation-ttl", RESERVATION_TTL])
            .args(arguments)
            .env("SURGE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("server log file"))
            .spawn()
            .expect("start the surge binary");
        let http = HttpClient::new(&format!("http://127.0.0.1:{port}"), 64).expect("client");
        Server { child, http, log }
    }

    /// SIGKILL after `delay`, wherever the start-up got to.
    async fn kill_after(mut self, delay: Duration) {
        tokio::time::sleep(delay).await;
        self.kill();
    }

    /// SIGKILL: no shutdown hook, no final snapshot.
    fn kill(&mut self) {
        self.child.kill().expect("kill surge");
        self.child.wait().expect("reap surge");
    }

    /// SIGTERM, the operator's stop: queued commands finish and a final snapshot is written.
    /// Waits for the exit, which must be clean.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let status = self.wait_for_exit();
        assert!(status.success(), "surge stopped with {status}; log:\n{}", self.log_text());
    }

    /// Waits until the process has exited, at most [`START_TIMEOUT`].
    fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            assert!(Instant::now() < deadline, "surge did not exit; log:\n{}", self.log_text());
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        self.http
            .send(method.clone(), path, token, headers, body.as_ref())
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}; log: {}", self.log.display()))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let answer = self.send(method, path, token, &[], body).await;
        (answer.status, answer.json())
    }

    /// A call that must answer `expected`; returns the body.
    async fn expect(
        &self,
        expected: StatusCode,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let (status, body) = self.call(method.clone(), path, token, body).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        body
    }

    /// `POST /v1/checkout` with an `Idempotency-Key`.
    async fn checkout(&self, token: &str, key: &str, body: &Value) -> Answer {
        let headers = [("idempotency-key", key)];
        self.send(Method::POST, "/v1/checkout", Some(token), &headers, Some(body.clone())).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now (the kernel's pick; released for the server to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A user made through the public sign-up and sign-in; returns the session token.
async fn sign_up(server: &Server, email: &str, role: &str) -> String {
    let user = json!({"email": email, "password": "correct horse", "name": "E2E", "role": role});
    server.expect(StatusCode::CREATED, Method::POST, "/v1/users", None, Some(user)).await;
    let pair = json!({"email": email, "password": "correct horse"});
    let session =
        server.expect(StatusCode::OK, Method::POST, "/v1/sessions", None, Some(pair)).await;
    assert_eq!(session["role"], role, "{session}");
    session["token"].as_str().expect("token").to_owned()
}

/// `count` buyers from `POST /v1/admin/tokens`.
async fn mint_buyers(server: &Server, count: usize) -> Vec<String> {
    let request = json!({"count": count, "role": "buyer"});
    let minted = server
        .expect(
            StatusCode::CREATED,
            Method::POST,
            "/v1/admin/tokens",
            Some(ADMIN_TOKEN),
            Some(request),
        )
        .await;
    let users = minted["users"].as_array().expect("users");
    assert_eq!(users.len(), count, "{minted}");
    users.iter().map(|user| user["token"].as_str().expect("token").to_owned()).collect()
}

/// A seller with one product of one SKU, stocked with `units` in a warehouse serving everywhere.
struct Shop {
    seller: String,
    sku: String,
    product_id: String,
}

async fn open_shop(server: &Server, units: u64) -> Shop {
    let seller = sign_up(server, "seller@example.com", "seller").await;
    let warehouse = json!({
        "name": "Berlin",
        "postal_code": "10115",
        "serves": [{"postal_prefix": "", "eta_days": 2}],
    });
    server
        .expect(
            StatusCode::OK,
            Method::PUT,
            "/v1/warehouses/w-berlin",
            Some(ADMIN_TOKEN),
            Some(warehouse),
        )
        .await;
    let sku = "E2E-SKU-1".to_owned();
    let product = json!({
        "title": "Espresso machine",
        "description": "Makes coffee.",
        "category": "kitchen/coffee",
        "brand": "Surge",
        "attributes": {"color": "black"},
        "images": [],
        "variants": [{"sku": sku, "price_cents": PRICE_CENTS, "currency": "USD", "attributes": {}}],
    });
    let product = server
        .expect(StatusCode::CREATED, Method::POST, "/v1/products", Some(&seller), Some(product))
        .await;
    let product_id = product["id"].as_str().expect("product id").to_owned();
    let stock = json!({"warehouse": "w-berlin", "on_hand": units});
    let path = format!("/v1/skus/{sku}/stock");
    let stock = server.expect(StatusCode::OK, Method::PUT, &path, Some(&seller), Some(stock)).await;
    assert_eq!(stock["available"], units, "{stock}");
    Shop { seller, sku, product_id }
}

fn buy_now(sku: &str, quantity: u64, payment: &str) -> Value {
    json!({
        "shipping": {"name": "Ann", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115"},
        "payment": {"token": payment},
        "items": [{"sku": sku, "quantity": quantity}],
    })
}

async fn stock(server: &Server, shop: &Shop) -> Value {
    let path = format!("/v1/skus/{}/stock", shop.sku);
    server.expect(StatusCode::OK, Method::GET, &path, Some(&shop.seller), None).await
}

/// Polls the stock until `accept` holds.
async fn stock_until(
    server: &Server,
    shop: &Shop,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let stock = stock(server, shop).await;
        if accept(&stock) {
            return stock;
        }
        assert!(Instant::now() < deadline, "stock never reached {what}: {stock}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls an order until its status is `expected`.
async fn order_until(server: &Server, token: &str, order_id: &str, expected: &str) -> Value {
    let path = format!("/v1/orders/{order_id}");
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let (status, order) = server.call(Method::GET, &path, Some(token), None).await;
        if status == StatusCode::OK && order["status"] == expected {
            return order;
        }
        assert!(
            Instant::now() < deadline,
            "order {order_id} never reached {expected}: {status} {order}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn counter(stock: &Value, name: &str) -> u64 {
    stock[name].as_u64().unwrap_or_else(|| panic!("`{name}` missing: {stock}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_signs_up_checks_out_with_every_payment_token_and_sees_the_history() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = Server::start(&dir.path().join("data")).await;
    let buyer = sign_up(&server, "ann@example.com", "buyer").await;
    let me = server.expect(StatusCode::OK, Method::GET, "/v1/me", Some(&buyer), None).await;
    assert_eq!(me["role"], "buyer", "{me}");
    let shop = open_shop(&server, 10).await;
    let product = server
        .expect(
            StatusCode::OK,
            Method::GET,
            &format!("/v1/products/{}", shop.product_id),
            None,
            None,
        )
        .await;
    assert_eq!(product["variants"][0]["available"], 10, "{product}");

    let outcomes = [
        ("tok_ok", "confirmed"),
        ("tok_decline", "payment_failed"),
        ("tok_hang", "expired"),
        ("tok_late", "refunded"),
    ];
    let mut order_ids = Vec::new();
    for (payment, _) in outcomes {
        let answer = server
            .checkout(&buyer, &format!("journey-{payment}"), &buy_now(&shop.sku, 1, payment))
            .await;
        let order = answer.json();
        assert_eq!(answer.status, StatusCode::CREATED, "{payment}: {order}");
        assert_eq!(order["status"], "pending_payment", "{order}");
        assert_eq!(order["lines"][0]["sku"], shop.sku.as_str(), "{order}");
        assert_eq!(order["lines"][0]["quantity"], 1, "{order}");
        assert_eq!(order["lines"][0]["warehouse"], "w-berlin", "{order}");
        assert_eq!(
            (order["total_cents"].as_u64(), order["currency"].as_str()),
            (Some(PRICE_CENTS), Some("USD"))
        );
        assert!(order["expires_at"].is_string() && order["created_at"].is_string(), "{order}");
        order_ids.push(order["order_id"].as_str().expect("order_id").to_owned());
    }

    for (order_id, (payment, expected)) in order_ids.iter().zip(outcomes) {
        let order = order_until(&server, &buyer, order_id, expected).await;
        let history: Vec<&str> = order["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|entry| entry["status"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(history.first(), Some(&"pending_payment"), "{payment}: {order}");
        assert_eq!(history.last(), Some(&expected), "{payment}: {order}");
        assert!(
            order["history"].as_array().unwrap().iter().all(|entry| entry["at"].is_string()),
            "{order}"
        );
    }

    let listed = server.expect(StatusCode::OK, Method::GET, "/v1/orders", Some(&buyer), None).await;
    let listed_ids: Vec<&str> = listed["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|order| order["order_id"].as_str().unwrap_or("?"))
        .collect();
    let newest_first: Vec<&str> = order_ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed_ids, newest_first, "{listed}");
    assert!(listed["next_cursor"].is_null(), "{listed}");

    // Only the paid order sold a unit; the late payment was refunded, not sold a second time.
    let stock = stock_until(&server, &shop, "sold 1, reserved 0", |stock| {
        stock["sold"] == 1 && stock["reserved"] == 0
    })
    .await;
    assert_eq!(counter(&stock, "available"), 9, "{stock}");

    let stranger = sign_up(&server, "bob@example.com", "buyer").await;
    let (status, body) = server
        .call(Method::GET, &format!("/v1/orders/{}", order_ids[0]), Some(&stranger), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another buyer's order must not be revealed: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hundred_buyers_race_for_fifty_units_and_exactly_fifty_win() {
    const BUYERS: usize = 400;
    const UNITS: u64 = 50;
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = Server::start(&dir.path().join("data")).await;
    let shop = open_shop(&server, UNITS).await;
    let buyers = mint_buyers(&server, BUYERS).await;

    let body = buy_now(&shop.sku, 1, "tok_ok");
    let racers: Vec<_> = buyers
        .into_iter()
        .enumerate()
        .map(|(index, token)| {
            let http = server.http.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let key = format!("race-{index}");
                let headers = [("idempotency-key", key.as_str())];
                let answer = http
                    .send(Method::POST, "/v1/checkout", Some(&token), &headers, Some(&body))
                    .await;
                answer
                    .map(|answer| (answer.status, answer.code()))
                    .map_err(|error| error.to_string())
            })
        })
        .collect();
    let (mut won, mut sold_out, mut other) = (0, 0, Vec::new());
    for racer in racers {
        match racer.await.expect("racer task") {
            Ok((StatusCode::CREATED, _)) => won += 1,
            Ok((StatusCode::CONFLICT, code)) if code == "out_of_stock" => sold_out += 1,
            answer => other.push(answer),
        }
    }
    assert!(other.is_empty(), "answers besides 201 and 409 out_of_stock: {other:?}");
    assert_eq!((won, sold_out), (UNITS, BUYERS as u64 - UNITS));

    let stock = stock(&server, &shop).await;
    assert_eq!(counter(&stock, "sold") + counter(&stock, "reserved"), UNITS, "{stock}");
    assert_eq!(counter(&stock, "available"), 0, "{stock}");
    stock_until(&server, &shop, "every winner paid", |stock| {
        stock["sold"] == UNITS && stock["reserved"] == 0
    })
    .await;
}

/// An order acknowledged with `201`, and who may read it.
#[derive(Debug, Clone)]
struct Acknowledged {
    order_id: String,
    buyer: String,
    key: String,
    body: Value,
    payment: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_order_survives_kill_9_during_checkout_load() {
    const WORKERS: usize = 16;
    const ACKNOWLEDGED_BEFORE_KILL: usize = 40;
    const UNITS: u64 = 100_000;
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let mut server = Server::start(&data_dir).await;
    let shop = open_shop(&server, UNITS).await;
    let buyers = Arc::new(mint_buyers(&server, 64).await);

    let acknowledged = Arc::new(Mutex::new(Vec::<Acknowledged>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (http, buyers, acknowledged, stop) = (
                server.http.clone(),
                Arc::clone(&buyers),
                Arc::clone(&acknowledged),
                Arc::clone(&stop),
            );
            let sku = shop.sku.clone();
            tokio::spawn(async move {
                let mut attempt = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    attempt += 1;
                    let buyer = &buyers[(worker + attempt * WORKERS) % buyers.len()];
                    // Some payments never answer, so pending orders cross the crash too.
                    let payment = if attempt.is_multiple_of(4) { "tok_hang" } else { "tok_ok" };
                    let key = format!("crash-{worker}-{attempt}");
                    let headers = [("idempotency-key", key.as_str())];
                    let body = buy_now(&sku, 1, payment);
                    match http
                        .send(Method::POST, "/v1/checkout", Some(buyer), &headers, Some(&body))
                        .await
                    {
                        Ok(answer) if answer.status == StatusCode::CREATED => {
                            let order_id =
                                answer.json()["order_id"].as_str().expect("order_id").to_owned();
                            let order = Acknowledged {
                                order_id,
                                buyer: buyer.clone(),
                                key: key.clone(),
                                body: body.clone(),
                                payment,
                            };
                            acknowledged.lock().unwrap().push(order);
                        }
                        Ok(_) => {}
                        // The server is gone.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while acknowledged.lock().unwrap().len() < ACKNOWLEDGED_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "checkouts were not acknowledged; log: {}",
            server.log.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker task");
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    drop(server);

    // Killed again and again while it starts: some of these land while the projection is still
    // reading the journal from its watermark; none may lose or double anything.
    for delay_ms in [5, 20, 50, 100, 200, 400] {
        Server::spawn(&data_dir, &[]).kill_after(Duration::from_millis(delay_ms)).await;
    }

    let server = Server::start(&data_dir).await;
    for order in &acknowledged {
        let path = format!("/v1/orders/{}", order.order_id);
        let (status, read) = server.call(Method::GET, &path, Some(&order.buyer), None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged order {} lost in the crash: {read}",
            order.order_id
        );
        assert_eq!(read["order_id"], order.order_id.as_str(), "{read}");
        // The key replays the first answer after the crash, and reserves nothing again.
        let again = server.checkout(&order.buyer, &order.key, &order.body).await;
        assert_replayed(&again, &order.order_id);
    }
    // A payment promised before the crash is driven again from the rows at start: every `tok_ok`
    // order ends confirmed, every `tok_hang` one expires.
    for order in &acknowledged {
        let expected = if order.payment == "tok_ok" { "confirmed" } else { "expired" };
        order_until(&server, &order.buyer, &order.order_id, expected).await;
    }

    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let (status, report) =
            server.call(Method::GET, "/v1/admin/reconciliation", Some(ADMIN_TOKEN), None).await;
        if status == StatusCode::OK && report["ok"] == true {
            assert!(counter(&report, "checked_skus") >= 1, "{report}");
            break;
        }
        assert!(Instant::now() < deadline, "reconciliation never ok: {status} {report}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let stock = stock(&server, &shop).await;
    let paid = acknowledged.iter().filter(|order| order.payment == "tok_ok").count() as u64;
    assert!(counter(&stock, "sold") >= paid, "every acknowledged paid order is sold: {stock}");
    assert!(counter(&stock, "sold") + counter(&stock, "reserved") <= UNITS, "{stock}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_after_a_restart_replays_the_first_answer() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let mut server = Server::start(&data_dir).await;
    let shop = open_shop(&server, 10).await;
    let buyer = sign_up(&server, "ann@example.com", "buyer").await;
    let body = buy_now(&shop.sku, 1, "tok_ok");

    let (status, problem) =
        server.call(Method::POST, "/v1/checkout", Some(&buyer), Some(body.clone())).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed"))
    );

    let first = server.checkout(&buyer, "retry-1", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.json());
    let order_id = first.json()["order_id"].as_str().expect("order_id").to_owned();
    let again = server.checkout(&buyer, "retry-1", &body).await;
    assert_replayed(&again, &order_id);

    // A crash, not a clean stop: an acknowledged key must already be durable.
    server.kill();
    drop(server);
    let server = Server::start(&data_dir).await;
    let after_restart = server.checkout(&buyer, "retry-1", &body).await;
    assert_replayed(&after_restart, &order_id);

    let other_body = buy_now(&shop.sku, 2, "tok_ok");
    let reused = server.checkout(&buyer, "retry-1", &other_body).await;
    assert_eq!(
        (reused.status, reused.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
        "{}",
        reused.json()
    );

    // The replays reserved nothing: one unit left the shelf, once.
    let stock = stock(&server, &shop).await;
    assert_eq!(counter(&stock, "sold") + counter(&stock, "reserved"), 1, "{stock}");
}

fn assert_replayed(answer: &Answer, order_id: &str) {
    let body = answer.json();
    assert_eq!(answer.status, StatusCode::CREATED, "{body}");
    assert_eq!(body["order_id"], order_id, "{body}");
    let replayed = answer.headers.get("idempotent-replayed").and_then(|value| value.to_str().ok());
    assert_eq!(
        replayed,
        Some("true"),
        "a replay carries `Idempotent-Replayed: true`: {:?}",
        answer.headers
    );
}

/// `--demo` on an empty data directory loads at least 10,000 products with stock, the feeder
/// indexes them, `surge search reindex` rebuilds the same index offline, and a restart neither
/// loads the demo again nor loses the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_catalog_is_loaded_once_indexed_and_rebuilt() {
    const INDEXED_TIMEOUT: Duration = Duration::from_secs(120);
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let mut server = Server::start_with(&data_dir, &["--demo"]).await;
    let deadline = Instant::now() + INDEXED_TIMEOUT;
    let everything = loop {
        let (status, body) =
            server.call(Method::GET, "/v1/search?in_stock=false", None, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["total"].as_u64() == Some(DEMO_PRODUCTS as u64) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "demo not indexed in time: {body}; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    let total = everything["total"].as_u64().unwrap();
    assert!(total >= 10_000);
    assert_eq!(
        everything["facets"]["category"].as_array().unwrap().len(),
        50,
        "top 50 facet values"
    );
    // Stock follows the products through the engine: wait until most are in stock.
    let in_stock = loop {
        let body = server.expect(StatusCode::OK, Method::GET, "/v1/search", None, None).await;
        let in_stock = body["total"].as_u64().unwrap();
        if in_stock > total * 8 / 10 {
            break in_stock;
        }
        assert!(Instant::now() < deadline, "demo stock not indexed in time: {body}");
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    assert!(in_stock < total, "some demo products are sold out");
    let laptops = server
        .expect(StatusCode::OK, Method::GET, "/v1/search?q=laptop&postal_code=80331", None, None)
        .await;
    assert!(laptops["total"].as_u64().unwrap() > 0, "{laptops}");
    assert!(laptops["items"].as_array().unwrap().iter().all(|item| item["eta_days"].is_number()));
    let (status, categories) = server.call(Method::GET, "/v1/categories", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(categories["categories"].as_array().unwrap().len(), 45);
    server.kill();

    let output = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args(["search", "reindex", "--data-dir"])
        .arg(&data_dir)
        .output()
        .expect("run surge search reindex");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(summary["products"].as_u64(), Some(total), "{summary}");
    assert!(summary["in_stock"].as_u64().unwrap() >= in_stock, "{summary}");
    let in_stock = summary["in_stock"].as_u64().unwrap();

    let server = Server::start_with(&data_dir, &["--demo"]).await;
    let again =
        server.expect(StatusCode::OK, Method::GET, "/v1/search?in_stock=false", None, None).await;
    assert_eq!(again["total"].as_u64(), Some(total), "the demo loads once; the index survives");
    let again = server.expect(StatusCode::OK, Method::GET, "/v1/search", None, None).await;
    assert_eq!(again["total"].as_u64(), Some(in_stock));
}

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn files_under(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read a directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read a file");
                files.insert(path.strip_prefix(dir).expect("under dir").to_owned(), bytes);
            }
        }
    }
    files
}

/// The journal lost its last record (a disk that dropped it, or a journal restored from a backup
/// older than the snapshots) while the newest snapshot covers it: the start refuses with both
/// sequences and the ways out, exits non-zero without a panic, and changes no file of the data
/// directory, the torn record included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_refuses_a_journal_that_ends_before_the_newest_snapshot() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir).await;
    let shop = open_shop(&server, 5).await;
    let buyer = sign_up(&server, "ann@example.com", "buyer").await;
    let placed = server.checkout(&buyer, "before-the-loss", &buy_now(&shop.sku, 1, "tok_ok")).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.json());
    server.stop();

    let snapshots: Vec<String> = std::fs::read_dir(data_dir.join("snapshots"))
        .expect("snapshots directory")
        .map(|entry| entry.expect("entry").file_name().into_string().expect("UTF-8"))
        .filter(|name| name.ends_with(".snap"))
        .collect();
    let newest: u64 =
        snapshots.iter().max().expect("a snapshot at shutdown")[..20].parse().unwrap();
    let replay = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args(["journal", "replay", "--data-dir"])
        .arg(&data_dir)
        .output()
        .expect("run surge journal replay");
    let replayed: Value = serde_json::from_slice(&replay.stdout).expect("replay prints JSON");
    assert_eq!(replayed["sequence"], newest, "the shutdown snapshot covers the whole journal");

    let mut segments: Vec<PathBuf> = std::fs::read_dir(data_dir.join("journal"))
        .expect("journal directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    segments.sort();
    let last = segments.pop().expect("a segment");
    let length = std::fs::metadata(&last).expect("segment metadata").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open the last segment")
        .set_len(length - 5)
        .expect("cut the last record");
    let before = files_under(&data_dir);

    let mut refused = Server::spawn(&data_dir, &[]);
    let status = refused.wait_for_exit();
    let log = refused.log_text();
    assert_eq!(status.code(), Some(1), "a refusal, not a crash or an abort: {status}; log:\n{log}");
    assert!(!log.contains("panicked"), "no panic: {log}");
    let journal_last = newest - 1;
    for needle in [
        format!("through sequence {newest}"),
        format!("the journal ends at sequence {journal_last}"),
        "Nothing was changed".to_owned(),
        "archive/".to_owned(),
        "snapshots/".to_owned(),
    ] {
        assert!(log.contains(&needle), "the message names {needle:?}: {log}");
    }
    // Not a file of the data directory changed, appeared or went: the journal's torn record, the
    // snapshots, and the database, which the start did not open before refusing.
    let after = files_under(&data_dir);
    let names = |files: &std::collections::BTreeMap<PathBuf, Vec<u8>>| {
        files.keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(names(&after), names(&before), "no file was created or removed");
    for (path, bytes) in &before {
        assert!(after.get(path) == Some(bytes), "{} changed", path.display());
    }
    assert_eq!(std::fs::metadata(&last).expect("segment").len(), length - 5, "nothing was cut");
}

/// An admin token an attacker could guess is refused at start, with the rule, before the server
/// writes anything into its data directory but the directory itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_refuses_an_admin_token_shorter_than_sixteen_characters() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_surge"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("SURGE_ADMIN_TOKEN", "short-secret")
        .stdout(Stdio::null())
        .stderr(File::create(&log_path).expect("log file"))
        .spawn()
        .expect("start surge serve");
    // Killed when dropped, should it start serving after all.
    let http = HttpClient::new("http://127.0.0.1:1", 1).expect("client");
    let mut server = Server { child, http, log: log_path };
    let status = server.wait_for_exit();
    let log = server.log_text();
    assert_eq!(status.code(), Some(1), "{status}; log:\n{log}");
    assert!(log.contains("SURGE_ADMIN_TOKEN is 12 characters long"), "{log}");
    assert!(log.contains("at least 16"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let written: Vec<_> = std::fs::read_dir(&data_dir).expect("data directory").collect();
    assert!(written.is_empty(), "nothing written: {written:?}");
}
