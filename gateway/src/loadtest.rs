//! `surge loadtest`: the Black Friday load test of API.md, a client of the public HTTP API only.
//!
//! It prepares its own sale on any running server (buyers and a seller minted with the admin
//! token, a warehouse, one hot SKU with `--units` units and [`OTHER_SKUS`] SKUs with plenty of
//! stock), runs a scenario from `--connections` closed-loop workers (each has one request in
//! flight, so the load is bounded by the worker count) until `--duration` passes, prints latency
//! percentiles per operation, and then checks that the hot SKU was not oversold: the engine's
//! `sold + reserved` against the units stocked, and the units acknowledged with `201` against the
//! units stocked.
//!
//! Latency percentiles cover successful answers only: a server that sheds load answers `503` in
//! microseconds, and mixing those in would make an overloaded server look fast. Refusals are
//! counted by their problem `code` (or `http_<status>` when the body is not a problem document).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// SKUs besides the hot one, each with [`OTHER_SKU_UNITS`] units.
pub const OTHER_SKUS: usize = 100;
/// Stock of every SKU but the hot one: enough never to run out during a run.
pub const OTHER_SKU_UNITS: u64 = 1_000_000;
/// The most buyers one `POST /v1/admin/tokens` is asked for.
const BUYERS_PER_MINT: u32 = 10_000;
/// Bounds on the flags, so a typo cannot start an unbounded run.
const BUYERS_MAX: u32 = 1_000_000;
const CONNECTIONS_MAX: usize = 4_096;
const DURATION_MAX: Duration = Duration::from_secs(3_600);
/// How long one request may take before it counts as `timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker pauses after a `429` or `503`, as a polite client would, so that a server
/// that sheds load is measured against clients and not against a spin loop.
const REFUSAL_PAUSE: Duration = Duration::from_millis(50);
/// How long the oversell check waits for pending payments to settle before it reads the stock.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Order statuses whose units are still held (reserved or sold).
const HOLDING_STATUSES: [&str; 4] = ["pending_payment", "confirmed", "shipped", "delivered"];

/// What the buyers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Every buyer hammers buy-now checkouts, mostly on the hot SKU.
    FlashSale,
    /// A mix of product views, checkouts on many SKUs (some declined) and order history.
    BlackFriday,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::FlashSale => "flash-sale",
            Scenario::BlackFriday => "black-friday",
        }
    }
}

/// The flags of `surge loadtest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server, like `http://127.0.0.1:8080` (plain HTTP; nothing else is ever contacted).
    #[arg(long)]
    pub target: String,
    #[arg(long, value_enum, default_value_t = Scenario::FlashSale)]
    pub scenario: Scenario,
    /// How long the scenario runs, like `500ms`, `30s`, `2m` (setup and check come on top).
    #[arg(long, default_value = "30s", value_parser = crate::time::parse_duration)]
    pub duration: Duration,
    /// Buyers minted for the run.
    #[arg(long, default_value_t = 10_000)]
    pub buyers: u32,
    /// Units of the hot SKU.
    #[arg(long, default_value_t = 1_000)]
    pub units: u32,
    /// Writes the results as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The admin token (default: the environment variable `SURGE_ADMIN_TOKEN`).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Requests in flight at once (one per worker, over keep-alive connections).
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
}

/// Runs the load test; exit code 1 when the hot SKU was oversold.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let admin_token = args
        .admin_token
        .clone()
        .or_else(|| std::env::var("SURGE_ADMIN_TOKEN").ok())
        .filter(|token| !token.is_empty())
        .context("no admin token: pass --admin-token or set SURGE_ADMIN_TOKEN")?;
    if !(1..=BUYERS_MAX).contains(&args.buyers) {
        bail!("--buyers must be between 1 and {BUYERS_MAX}");
    }
    if !(1..=CONNECTIONS_MAX).contains(&args.connections) {
        bail!("--connections must be between 1 and {CONNECTIONS_MAX}");
    }
    if args.units == 0 {
        bail!("--units must be at least 1");
    }
    if args.duration.is_zero() || args.duration > DURATION_MAX {
        bail!("--duration must be between 1ms and {}s", DURATION_MAX.as_secs());
    }
    let http = HttpClient::new(&args.target, args.connections)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let sale = prepare(&http, &args, &admin_token).await?;
        let measured = measure(&http, &args, &sale).await;
        let check = check_oversell(&http, &sale, u64::from(args.units), &measured.acknowledged)
            .await
            .context("the oversell check could not read the stock")?;
        print_results(&args, &sale, &measured, &check);
        if let Some(path) = &args.report {
            let report = report_json(&args, &measured, &check);
            std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
                .with_context(|| format!("write {}", path.display()))?;
        }
        Ok(if check.oversold() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A keep-alive HTTP/1 client bound to one server: every request goes to the base URL it was made
/// with. Public so that the end-to-end tests drive the server with the same client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The problem document's `code`, else `http_<status>`.
    pub fn code(&self) -> String {
        match self.json().get("code").and_then(Value::as_str) {
            Some(code) => code.to_owned(),
            None => format!("http_{}", self.status.as_u16()),
        }
    }

    /// `Retry-After` in seconds, if the answer carries one.
    pub fn retry_after(&self) -> Option<Duration> {
        let text = self.headers.get(RETRY_AFTER)?.to_str().ok()?;
        text.trim().parse().ok().map(Duration::from_secs)
    }
}

/// Why no answer arrived.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("transport: {0}")]
    Transport(String),
}

impl HttpError {
    /// The key this failure is counted under.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::Timeout(_) => "timeout",
            HttpError::Transport(_) => "transport",
        }
    }
}

impl HttpClient {
    /// A client for `target` (`http://host:port`, no path) keeping up to `connections` idle
    /// connections open.
    pub fn new(target: &str, connections: usize) -> anyhow::Result<HttpClient> {
        let uri: Uri =
            target.parse().with_context(|| format!("--target `{target}` is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--target `{target}`: only http:// is supported");
        }
        let authority = uri.authority().context("--target needs a host and port")?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            bail!("--target `{target}`: give the server's base URL, without a path");
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HttpClient { client, base: format!("http://{authority}") })
    }

    /// Sends one request (JSON body if given) and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, HttpError> {
        let mut request = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let bytes = match body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request =
            request.body(Full::new(bytes)).map_err(|e| HttpError::Transport(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HttpError::Transport(e.to_string()))?;
            let (parts, body) = response.into_parts();
            let body =
                body.collect().await.map_err(|e| HttpError::Transport(e.to_string()))?.to_bytes();
            Ok(Answer { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(HttpError::Timeout(REQUEST_TIMEOUT)))
    }

    /// A setup request that must answer `expected`: `429` and `503` are retried after their
    /// `Retry-After` (a bounded number of times), anything else unexpected is an error naming
    /// the route and the problem.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> anyhow::Result<Value> {
        const ATTEMPTS_MAX: u32 = 30;
        for _ in 0..ATTEMPTS_MAX {
            let answer = self
                .send(method.clone(), path, token, &[], body)
                .await
                .with_context(|| format!("{method} {path}"))?;
            if answer.status == expected {
                return Ok(answer.json());
            }
            if matches!(
                answer.status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            ) {
                let wait = answer.retry_after().unwrap_or(Duration::from_secs(1));
                tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
                continue;
            }
            bail!(
                "{method} {path} answered {} (expected {}): {}",
                answer.status.as_u16(),
                expected.as_u16(),
                String::from_utf8_lossy(&answer.body)
            );
        }
        bail!("{method} {path}: still refused after {ATTEMPTS_MAX} attempts")
    }
}

// ---------------------------------------------------------------------------------------------
// Setup

/// The sale a run prepared.
#[derive(Debug)]
struct Sale {
    tag: String,
    seller_token: String,
    buyer_tokens: Vec<String>,
    hot_sku: String,
    /// Every SKU but the hot one.
    other_skus: Vec<String>,
    /// Every product, the hot one first.
    product_ids: Vec<String>,
}

async fn prepare(http: &HttpClient, args: &Args, admin_token: &str) -> anyhow::Result<Sale> {
    http.expect(Method::GET, "/readyz", None, None, StatusCode::OK)
        .await
        .context("the target is not ready")?;
    let tag = random_tag()?;
    let admin = Some(admin_token);
    eprintln!("loadtest {tag}: minting {} buyers and a seller", args.buyers);
    let seller = http
        .expect(
            Method::POST,
            "/v1/admin/tokens",
            admin,
            Some(&json!({"count": 1, "role": "seller"})),
            StatusCode::CREATED,
        )
        .await?;
    let seller_token = first_token(&seller)?;
    let mut buyer_tokens = Vec::with_capacity(args.buyers as usize);
    let mut remaining = args.buyers;
    while remaining > 0 {
        let count = remaining.min(BUYERS_PER_MINT);
        let minted = http
            .expect(
                Method::POST,
                "/v1/admin/tokens",
                admin,
                Some(&json!({"count": count, "role": "buyer"})),
                StatusCode::CREATED,
            )
            .await?;
        let users = minted["users"].as_array().context("`users` missing in the answer")?;
        for user in users {
            let token = user["token"].as_str().context("a minted user without `token`")?;
            buyer_tokens.push(token.to_owned());
        }
        remaining -= count;
    }
    anyhow::ensure!(buyer_tokens.len() == args.buyers as usize, "minted too few buyers");

    let warehouse = format!("lt-{tag}");
    let serves = json!([{"postal_prefix": "", "eta_days": 1}]);
    let body =
        json!({"name": format!("load test {tag}"), "postal_code": "10115", "serves": serves});
    http.expect(
        Method::PUT,
        &format!("/v1/warehouses/{warehouse}"),
        admin,
        Some(&body),
        StatusCode::OK,
    )
    .await?;

    eprintln!("loadtest {tag}: creating {} products and their stock", OTHER_SKUS + 1);
    let seller = Some(seller_token.as_str());
    let hot_sku = format!("lt-{tag}-hot");
    let other_skus: Vec<String> = (0..OTHER_SKUS).map(|i| format!("lt-{tag}-{i:03}")).collect();
    let mut product_ids = Vec::with_capacity(OTHER_SKUS + 1);
    for (index, sku) in std::iter::once(&hot_sku).chain(&other_skus).enumerate() {
        let price_cents = 500 + (index as u64 % 50) * 100;
        let product = json!({
            "title": format!("Load test item {index} ({tag})"),
            "description": "A product made by surge loadtest.",
            "category": "loadtest/items",
            "brand": "Surge",
            "attributes": {"run": tag},
            "images": [],
            "variants": [
                {"sku": sku, "price_cents": price_cents, "currency": "USD", "attributes": {}}
            ],
        });
        let created = http
            .expect(Method::POST, "/v1/products", seller, Some(&product), StatusCode::CREATED)
            .await?;
        let id = created["id"].as_str().context("a created product without `id`")?;
        product_ids.push(id.to_owned());
        let on_hand = if index == 0 { u64::from(args.units) } else { OTHER_SKU_UNITS };
        let stock = json!({"warehouse": warehouse, "on_hand": on_hand});
        http.expect(
            Method::PUT,
            &format!("/v1/skus/{sku}/stock"),
            seller,
            Some(&stock),
            StatusCode::OK,
        )
        .await?;
    }
    // A flash-sale cap that never keeps the hot SKU from selling out.
    let per_buyer = args.units.div_ceil(args.buyers).max(2);
    let limit = json!({"per_buyer": per_buyer});
    if let Err(error) = http
        .expect(
            Method::PUT,
            &format!("/v1/skus/{hot_sku}/limit"),
            seller,
            Some(&limit),
            StatusCode::OK,
        )
        .await
    {
        eprintln!("loadtest {tag}: running without a per-buyer limit: {error:#}");
    }
    Ok(Sale { tag, seller_token, buyer_tokens, hot_sku, other_skus, product_ids })
}

fn first_token(minted: &Value) -> anyhow::Result<String> {
    minted["users"][0]["token"].as_str().map(str::to_owned).context("no token in the answer")
}

/// Eight hex digits naming this run's warehouse, SKUs and idempotency keys.
fn random_tag() -> anyhow::Result<String> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("random bytes: {error}"))?;
    Ok(crate::auth::hex(&bytes))
}

// ---------------------------------------------------------------------------------------------
// The run

/// Results of one operation (checkout, browse, orders).
#[derive(Debug)]
struct OperationStats {
    latency_us: Histogram<u64>,
    count: u64,
    errors: BTreeMap<String, u64>,
}

impl OperationStats {
    fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            count: 0,
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: &OperationStats) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.count += other.count;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }
}

/// A `201` that holds units of the hot SKU.
#[derive(Debug, Clone)]
struct HotOrder {
    order_id: String,
    buyer: usize,
    quantity: u64,
}

#[derive(Debug, Default)]
struct Measured {
    operations: BTreeMap<&'static str, OperationStats>,
    acknowledged: Vec<HotOrder>,
    elapsed: Duration,
}

/// What workers share.
#[derive(Debug)]
struct Shared {
    http: HttpClient,
    scenario: Scenario,
    tag: String,
    buyer_tokens: Vec<String>,
    hot_sku: String,
    other_skus: Vec<String>,
    product_ids: Vec<String>,
    deadline: Instant,
    stop: AtomicBool,
    answered_ok: AtomicU64,
    answered_error: AtomicU64,
}

/// One request a worker is about to make.
struct Planned {
    operation: &'static str,
    method: Method,
    path: String,
    buyer: usize,
    body: Option<Value>,
    /// Checkouts carry a fresh `Idempotency-Key`.
    needs_idempotency_key: bool,
    hot_quantity: u64,
}

async fn measure(http: &HttpClient, args: &Args, sale: &Sale) -> Measured {
    let started = Instant::now();
    let shared = Arc::new(Shared {
        http: http.clone(),
        scenario: args.scenario,
        tag: sale.tag.clone(),
        buyer_tokens: sale.buyer_tokens.clone(),
        hot_sku: sale.hot_sku.clone(),
        other_skus: sale.other_skus.clone(),
        product_ids: sale.product_ids.clone(),
        deadline: started + args.duration,
        stop: AtomicBool::new(false),
        answered_ok: AtomicU64::new(0),
        answered_error: AtomicU64::new(0),
    });
    eprintln!(
        "loadtest {}: {} for {:?} with {} connections",
        sale.tag,
        args.scenario.as_str(),
        args.duration,
        args.connections
    );
    let interrupt = Arc::clone(&shared);
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping the workers");
            interrupt.stop.store(true, Ordering::Relaxed);
        }
    });
    let progress = tokio::spawn(progress(Arc::clone(&shared)));
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).unwrap_or_default();
    let seed = u64::from_le_bytes(seed);
    let workers: Vec<_> = (0..args.connections)
        .map(|index| tokio::spawn(worker(Arc::clone(&shared), index, seed ^ (index as u64 + 1))))
        .collect();
    let mut measured = Measured::default();
    for worker in workers {
        let Ok((operations, acknowledged)) = worker.await else { continue };
        for (name, stats) in operations {
            measured.operations.entry(name).or_insert_with(OperationStats::new).merge(&stats);
        }
        measured.acknowledged.extend(acknowledged);
    }
    measured.elapsed = started.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    ctrl_c.abort();
    let _ = progress.await;
    measured
}

/// One stderr line per second: answers per second, successful and refused.
async fn progress(shared: Arc<Shared>) {
    let started = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.tick().await;
    let (mut ok_before, mut errors_before) = (0, 0);
    while !shared.stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let ok = shared.answered_ok.load(Ordering::Relaxed);
        let errors = shared.answered_error.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4}s] {:>7} req/s  {:>7} ok/s  {:>7} errors/s",
            started.elapsed().as_secs(),
            ok + errors - ok_before - errors_before,
            ok - ok_before,
            errors - errors_before
        );
        (ok_before, errors_before) = (ok, errors);
    }
}

type WorkerResult = (BTreeMap<&'static str, OperationStats>, Vec<HotOrder>);

async fn worker(shared: Arc<Shared>, index: usize, seed: u64) -> WorkerResult {
    let mut random = Random::new(seed);
    let mut operations: BTreeMap<&'static str, OperationStats> = BTreeMap::new();
    let mut acknowledged = Vec::new();
    let mut sequence = 0u64;
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < shared.deadline {
        sequence += 1;
        let planned = match shared.scenario {
            Scenario::FlashSale => plan_flash_sale(&shared, &mut random),
            Scenario::BlackFriday => plan_black_friday(&shared, &mut random),
        };
        let key =
            planned.needs_idempotency_key.then(|| format!("lt-{}-{index}-{sequence}", shared.tag));
        let headers: Vec<(&str, &str)> =
            key.as_deref().map(|key| ("idempotency-key", key)).into_iter().collect();
        let token = shared.buyer_tokens[planned.buyer].as_str();
        let sent = Instant::now();
        let result = shared
            .http
            .send(planned.method, &planned.path, Some(token), &headers, planned.body.as_ref())
            .await;
        let latency = sent.elapsed();
        let stats = operations.entry(planned.operation).or_insert_with(OperationStats::new);
        match result {
            Ok(answer) if answer.status.is_success() => {
                stats.count += 1;
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                stats.latency_us.saturating_record(micros.max(1));
                shared.answered_ok.fetch_add(1, Ordering::Relaxed);
                if planned.hot_quantity > 0 && answer.status == StatusCode::CREATED {
                    let order_id =
                        answer.json()["order_id"].as_str().unwrap_or_default().to_owned();
                    acknowledged.push(HotOrder {
                        order_id,
                        buyer: planned.buyer,
                        quantity: planned.hot_quantity,
                    });
                }
            }
            Ok(answer) => {
                *stats.errors.entry(answer.code()).or_default() += 1;
                shared.answered_error.fetch_add(1, Ordering::Relaxed);
                if matches!(
                    answer.status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                ) {
                    tokio::time::sleep(REFUSAL_PAUSE).await;
                }
            }
            Err(error) => {
                *stats.errors.entry(error.code().to_owned()).or_default() += 1;
                shared.answered_error.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(REFUSAL_PAUSE).await;
            }
        }
    }
    (operations, acknowledged)
}

fn checkout_body(lines: &[(&str, u64)], payment_token: &str) -> Value {
    let items: Vec<Value> =
        lines.iter().map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity})).collect();
    json!({
        "shipping": {
            "name": "Load Tester", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115"
        },
        "payment": {"token": payment_token},
        "items": items,
    })
}

fn planned_checkout(shared: &Shared, buyer: usize, lines: &[(&str, u64)], token: &str) -> Planned {
    let hot_quantity =
        lines.iter().filter(|(sku, _)| *sku == shared.hot_sku).map(|(_, quantity)| quantity).sum();
    Planned {
        operation: "checkout",
        method: Method::POST,
        path: "/v1/checkout".to_owned(),
        buyer,
        body: Some(checkout_body(lines, token)),
        needs_idempotency_key: true,
        hot_quantity,
    }
}

/// Nine in ten checkouts on the hot SKU, the rest spread over the others; all paid.
fn plan_flash_sale(shared: &Shared, random: &mut Random) -> Planned {
    let buyer = random.below(shared.buyer_tokens.len());
    let sku = if random.below(10) < 9 {
        shared.hot_sku.as_str()
    } else {
        shared.other_skus[random.below(shared.other_skus.len())].as_str()
    };
    planned_checkout(shared, buyer, &[(sku, 1)], "tok_ok")
}

/// Half product views, a third checkouts of one to three lines (one in ten declined, the hot SKU
/// in one line of ten), the rest order history.
fn plan_black_friday(shared: &Shared, random: &mut Random) -> Planned {
    let buyer = random.below(shared.buyer_tokens.len());
    let roll = random.below(100);
    if roll < 50 {
        let product = &shared.product_ids[random.below(shared.product_ids.len())];
        return Planned {
            operation: "browse",
            method: Method::GET,
            path: format!("/v1/products/{product}"),
            buyer,
            body: None,
            needs_idempotency_key: false,
            hot_quantity: 0,
        };
    }
    if roll < 85 {
        let line_count = 1 + random.below(3);
        let mut lines: Vec<(&str, u64)> = Vec::with_capacity(line_count);
        while lines.len() < line_count {
            let sku = if random.below(10) == 0 {
                shared.hot_sku.as_str()
            } else {
                shared.other_skus[random.below(shared.other_skus.len())].as_str()
            };
            if lines.iter().all(|(taken, _)| *taken != sku) {
                lines.push((sku, 1 + random.below(2) as u64));
            }
        }
        let token = if random.below(10) == 0 { "tok_decline" } else { "tok_ok" };
        return planned_checkout(shared, buyer, &lines, token);
    }
    Planned {
        operation: "orders",
        method: Method::GET,
        path: "/v1/orders".to_owned(),
        buyer,
        body: None,
        needs_idempotency_key: false,
        hot_quantity: 0,
    }
}

/// xorshift64*: a few cycles per draw, seeded per worker; statistical quality is beside the point.
#[derive(Debug)]
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// The oversell check

#[derive(Debug)]
struct OversellCheck {
    units: u64,
    on_hand: u64,
    reserved: u64,
    sold: u64,
    /// Units of the hot SKU in `201` answers.
    acknowledged_units: u64,
    /// Of those, the units in orders that still hold them (read back only when the
    /// acknowledged units exceed the stock, which releases after declines or expiry allow).
    holding_units: Option<u64>,
}

impl OversellCheck {
    fn oversold(&self) -> u64 {
        let engine_excess = (self.sold + self.reserved).saturating_sub(self.units);
        let acknowledged_excess = match self.holding_units {
            Some(holding) => holding.saturating_sub(self.units),
            None => self.acknowledged_units.saturating_sub(self.units),
        };
        engine_excess.max(acknowledged_excess)
    }
}

async fn check_oversell(
    http: &HttpClient,
    sale: &Sale,
    units: u64,
    acknowledged: &[HotOrder],
) -> anyhow::Result<OversellCheck> {
    let path = format!("/v1/skus/{}/stock", sale.hot_sku);
    let seller = Some(sale.seller_token.as_str());
    let settle_by = Instant::now() + SETTLE_TIMEOUT;
    let stock = loop {
        let stock = http.expect(Method::GET, &path, seller, None, StatusCode::OK).await?;
        if stock["reserved"].as_u64() == Some(0) || Instant::now() >= settle_by {
            break stock;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let counter = |name: &str| {
        stock[name].as_u64().with_context(|| format!("`{name}` missing in {path}: {stock}"))
    };
    let acknowledged_units = acknowledged.iter().map(|order| order.quantity).sum();
    let holding_units = if acknowledged_units > units {
        Some(holding_units(http, sale, acknowledged).await?)
    } else {
        None
    };
    Ok(OversellCheck {
        units,
        on_hand: counter("on_hand")?,
        reserved: counter("reserved")?,
        sold: counter("sold")?,
        acknowledged_units,
        holding_units,
    })
}

/// Reads back every acknowledged hot order and adds up the units of those still holding them.
async fn holding_units(
    http: &HttpClient,
    sale: &Sale,
    acknowledged: &[HotOrder],
) -> anyhow::Result<u64> {
    const READERS: usize = 32;
    let mut holding = 0;
    for chunk in acknowledged.chunks(READERS) {
        let reads: Vec<_> = chunk
            .iter()
            .map(|order| {
                let http = http.clone();
                let token = sale.buyer_tokens[order.buyer].clone();
                let order = order.clone();
                tokio::spawn(async move {
                    let path = format!("/v1/orders/{}", order.order_id);
                    let read =
                        http.expect(Method::GET, &path, Some(&token), None, StatusCode::OK).await?;
                    let status = read["status"].as_str().unwrap_or_default();
                    Ok::<_, anyhow::Error>(if HOLDING_STATUSES.contains(&status) {
                        order.quantity
                    } else {
                        0
                    })
                })
            })
            .collect();
        for read in reads {
            holding += read.await??;
        }
    }
    Ok(holding)
}

// ---------------------------------------------------------------------------------------------
// Output

fn percentile_ms(stats: &OperationStats, quantile: f64) -> f64 {
    if stats.count == 0 {
        return 0.0;
    }
    let micros = if quantile >= 1.0 {
        stats.latency_us.max()
    } else {
        stats.latency_us.value_at_quantile(quantile)
    };
    micros as f64 / 1_000.0
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    (count as f64 / seconds * 10.0).round() / 10.0
}

fn print_results(args: &Args, sale: &Sale, measured: &Measured, check: &OversellCheck) {
    println!(
        "scenario {} for {:.1}s: {} connections, {} buyers, {} units of {}",
        args.scenario.as_str(),
        measured.elapsed.as_secs_f64(),
        args.connections,
        args.buyers,
        args.units,
        sale.hot_sku
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  errors",
        "operation", "count", "per_sec", "p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms"
    );
    for (name, stats) in &measured.operations {
        let errors: Vec<String> =
            stats.errors.iter().map(|(code, n)| format!("{code}: {n}")).collect();
        println!(
            "{name:<10} {:>9} {:>9.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {}",
            stats.count,
            per_second(stats.count, measured.elapsed),
            percentile_ms(stats, 0.5),
            percentile_ms(stats, 0.9),
            percentile_ms(stats, 0.99),
            percentile_ms(stats, 0.999),
            percentile_ms(stats, 1.0),
            if errors.is_empty() { "-".to_owned() } else { errors.join(", ") }
        );
    }
    println!(
        "oversell check on {}: sold {} + reserved {} of {} stocked (on_hand {}); \
         {} units acknowledged with 201{}",
        sale.hot_sku,
        check.sold,
        check.reserved,
        check.units,
        check.on_hand,
        check.acknowledged_units,
        match check.holding_units {
            Some(holding) => format!(", {holding} of them in orders still holding units"),
            None => String::new(),
        }
    );
    println!("oversold: {}", check.oversold());
}

fn report_json(args: &Args, measured: &Measured, check: &OversellCheck) -> Value {
    let operations: serde_json::Map<String, Value> = measured
        .operations
        .iter()
        .map(|(name, stats)| {
            let value = json!({
                "count": stats.count,
                "per_sec": per_second(stats.count, measured.elapsed),
                "p50_ms": percentile_ms(stats, 0.5),
                "p90_ms": percentile_ms(stats, 0.9),
                "p99_ms": percentile_ms(stats, 0.99),
                "p999_ms": percentile_ms(stats, 0.999),
                "max_ms": percentile_ms(stats, 1.0),
                "errors": stats.errors,
            });
            ((*name).to_owned(), value)
        })
        .collect();
    json!({
        "scenario": args.scenario.as_str(),
        "duration_s": (measured.elapsed.as_secs_f64() * 1_000.0).round() / 1_000.0,
        "operations": operations,
        "oversold": check.oversold(),
        "buyers": args.buyers,
        "units": args.units,
        "connections": args.connections,
        "hot_sku": {
            "sold": check.sold,
            "reserved": check.reserved,
            "on_hand": check.on_hand,
            "acknowledged_units": check.acknowledged_units,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_origins_are_targets() {
        assert!(HttpClient::new("http://127.0.0.1:8080", 1).is_ok());
        assert!(HttpClient::new("http://127.0.0.1:8080/", 1).is_ok());
        assert!(HttpClient::new("https://127.0.0.1:8080", 1).is_err());
        assert!(HttpClient::new("http://127.0.0.1:8080/v1", 1).is_err());
    }

    #[test]
    fn oversold_counts_the_larger_excess() {
        let check = OversellCheck {
            units: 10,
            on_hand: 0,
            reserved: 1,
            sold: 10,
            acknowledged_units: 12,
            holding_units: Some(10),
        };
        assert_eq!(check.oversold(), 1);
        let check = OversellCheck { reserved: 0, holding_units: Some(13), ..check };
        assert_eq!(check.oversold(), 3);
        let check = OversellCheck { holding_units: None, acknowledged_units: 10, ..check };
        assert_eq!(check.oversold(), 0);
    }
}
