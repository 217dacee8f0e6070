//! `surge loadtest`: the Black Friday load test of API.md, a client of the public HTTP API only.
//!
//! A run has three phases. **Setup** prepares its own sale on any running server with the admin
//! token: buyers and a seller, a warehouse, [`OTHER_SKUS`] SKUs and, for the sale scenarios, one
//! hot SKU with `--units` units. **Load** runs the scenario for `--duration` and prints latency
//! percentiles per operation. **Check** reads the stock back and compares it with what the answers
//! acknowledged.
//!
//! Scenarios: `flash-sale` (buy-now checkouts, nine in ten on the hot SKU) and `black-friday`
//! (product views, checkouts of one to three lines, order history) are checked for overselling:
//! the engine's `sold + reserved` and the units acknowledged with `201` against the units stocked.
//! `steady` buys one unit at a time over SKUs of [`STEADY_SKU_UNITS`] units without a per-buyer
//! limit, so every checkout should succeed and the run measures the checkout path rather than
//! refusals; its check is that `sold + reserved` over those SKUs equals the units acknowledged
//! (give or take the checkouts that got no answer or a `5xx`, whose fate the client cannot know).
//! `noop` sends `GET /healthz` only: no setup, no admin token, no check; it is this tool's own
//! baseline against the same server, to compare with `wrk`.
//!
//! Two ways to load. **Closed loop** (the default): each of `--connections` connections sends its
//! next request when the previous one is answered, so the load follows the server: a slow server
//! is offered less, and a stall hides from the percentiles (coordinated omission). **Open loop**
//! (`--rate N`): request `i` is due at `start + i/N` whatever the server does. A free connection
//! takes the next due request, waits for its time and sends it; when every connection is busy the
//! due request waits for one, and its latency is still counted from its intended time, so a stall
//! is charged to every request it delayed. `--connections` bounds the requests in flight in both
//! modes. Requests sent more than [`LATE_AFTER`] after their intended time are counted as
//! `late_sends`, split by whether no connection was free or the generator itself fell behind, and
//! due requests still unsent at the end as `unsent`: a generator that cannot keep its schedule
//! shows in the report instead of quietly offering less.
//!
//! The load phase runs on one thread (a current-thread runtime on the main thread, with the CPU
//! time it used in the report), so that "one core offers N requests/s" is honest, with a lean
//! HTTP/1.1 client of its own: one keep-alive `TcpStream` per connection, requests written from
//! byte templates built once per run with only the per-request parts (token, idempotency key, SKU)
//! written in, and answers read as far as the status line and `Content-Length`; a body is decoded
//! only when an error code or an order id is needed. Chunked answers or answers without
//! `Content-Length` are refused and counted as `protocol` errors, with the first one printed. A
//! general client (hyper's) spends more per request than the server under test. Setup and check
//! use [`HttpClient`] on a multi-thread runtime, idle during the load.
//!
//! Latency percentiles cover successful answers only: a server that sheds load answers `503` in
//! microseconds, and mixing those in would make an overloaded server look fast. Refusals are
//! counted by their problem `code` (or `http_<status>` when the body is not a problem document).
//!
//! `--prepare-only --export FILE` stops after the setup and writes the sale as `key value` lines
//! (`target`, `tag`, `hot_sku`, `sku`, `buyer`), for other load generators (`cargo xtask
//! bench-http` drives `wrk` with it).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::poll_fn;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::task::{ready, Poll};
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// SKUs besides the hot one, each with [`OTHER_SKU_UNITS`] units ([`STEADY_SKU_UNITS`] in
/// `steady`).
pub const OTHER_SKUS: usize = 100;
/// Stock of every SKU but the hot one: enough never to run out during a run.
pub const OTHER_SKU_UNITS: u64 = 1_000_000;
/// Stock of each SKU of `steady`: a billion units outlast any run at any rate reachable here, and
/// stay below the API's `on_hand` bound of 2^31 - 1.
pub const STEADY_SKU_UNITS: u64 = 1_000_000_000;
/// The most buyers one `POST /v1/admin/tokens` is asked for.
const BUYERS_PER_MINT: u32 = 10_000;
/// Bounds on the flags, so a typo cannot start an unbounded run.
const BUYERS_MAX: u32 = 1_000_000;
const CONNECTIONS_MAX: usize = 4_096;
const DURATION_MAX: Duration = Duration::from_secs(3_600);
const RATE_PER_SEC_MAX: u64 = 10_000_000;
/// Idle connections the setup client keeps: the setup and check send at most
/// [`HOLDING_READERS`] requests at once.
const SETUP_CONNECTIONS: usize = 32;
/// How long one request may take before it counts as `timeout`. The lean client rearms its timer
/// only when less than [`REQUEST_TIMEOUT_SLACK`] of it is left, to keep a timer update off most
/// requests, so a request there times out after between the two.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT_SLACK: Duration = Duration::from_secs(1);
/// How long a closed-loop worker pauses after a `429`, a `503` or a failed exchange, as a polite
/// client would, so that a server that sheds load is measured against clients and not against a
/// spin loop. The open loop never pauses: its schedule decides when requests go out.
const REFUSAL_PAUSE: Duration = Duration::from_millis(50);
/// How long the checks wait for pending payments to settle before they read the stock.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Order statuses whose units are still held (reserved or sold).
const HOLDING_STATUSES: [&str; 4] = ["pending_payment", "confirmed", "shipped", "delivered"];
/// Orders read back at once by the oversell check.
const HOLDING_READERS: usize = 32;
/// How long after its intended time a request may go out before it counts as a late send.
pub const LATE_AFTER: Duration = Duration::from_millis(1);
/// How long before its intended time a request may go out. tokio's timer counts whole
/// milliseconds and its wait rounds up to the next one, so a sleep until `t` ends anywhere in
/// `[t, t + 2 ms)`; a connection that slept until the intended time itself would send up to 2 ms
/// late and charge that to the server. It sleeps until this much before instead, sends when it
/// wakes, and the latency of a request sent early is counted from its actual send.
const SEND_EARLY_MAX: Duration = Duration::from_millis(2);
/// Bounds on one answer the lean client reads.
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;
const RESPONSE_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// What the lean client reads into at once: more than any answer of the scenarios but order
/// history, so that one read takes a whole answer and, being short, lets tokio wait for the next
/// one without a wasted `read` first.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// What the buyers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Every buyer hammers buy-now checkouts, mostly on the hot SKU.
    FlashSale,
    /// A mix of product views, checkouts on many SKUs (some declined) and order history.
    BlackFriday,
    /// Buy-now checkouts of one unit over SKUs that never run out: every checkout should succeed.
    Steady,
    /// `GET /healthz` only, without setup: the load generator's own baseline.
    Noop,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::FlashSale => "flash-sale",
            Scenario::BlackFriday => "black-friday",
            Scenario::Steady => "steady",
            Scenario::Noop => "noop",
        }
    }

    /// The sale scenarios have a hot SKU of `--units` units, checked for overselling.
    fn has_hot_sku(self) -> bool {
        matches!(self, Scenario::FlashSale | Scenario::BlackFriday)
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
    /// The admin token (default: the environment variable `SURGE_ADMIN_TOKEN`); not needed by
    /// `noop`.
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Requests in flight at most, one per keep-alive connection.
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
    /// Open loop: requests per second on a fixed schedule, latency counted from each request's
    /// intended send time. Without it, a closed loop: each connection sends when answered.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Stops after the setup (with `--export`): prepares a sale for another load generator.
    #[arg(long, requires = "export")]
    pub prepare_only: bool,
    /// Writes the prepared sale to this file as `key value` lines: `target`, `tag`, `hot_sku`,
    /// `sku` (one line each), `buyer` (one token each).
    #[arg(long)]
    pub export: Option<PathBuf>,
}

/// Runs the load test; exit code 1 when the check failed (oversold, or for `steady` units held
/// that the answers do not account for).
#[expect(
    clippy::needless_pass_by_value,
    reason = "`main` hands its parsed flags over; by value keeps its call site unchanged"
)]
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let admin_token = args
        .admin_token
        .clone()
        .or_else(|| std::env::var("SURGE_ADMIN_TOKEN").ok())
        .filter(|token| !token.is_empty());
    let admin_token = match (args.scenario, admin_token) {
        (Scenario::Noop, _) => None,
        (_, Some(token)) => Some(token),
        (_, None) => bail!("no admin token: pass --admin-token or set SURGE_ADMIN_TOKEN"),
    };
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
    if let Some(rate) = args.rate {
        if !(1..=RATE_PER_SEC_MAX).contains(&rate) {
            bail!("--rate must be between 1 and {RATE_PER_SEC_MAX} requests per second");
        }
    }
    if args.export.is_some() && args.scenario == Scenario::Noop {
        bail!("--export: `noop` prepares no sale to export");
    }
    let http = HttpClient::new(&args.target, SETUP_CONNECTIONS)?;
    let (host, addresses) = target_address(&args.target)?;
    let setup = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let sale = match &admin_token {
        Some(token) => Some(setup.block_on(prepare(&http, &args, token))?),
        None => None,
    };
    if let (Some(path), Some(sale)) = (&args.export, &sale) {
        std::fs::write(path, export_text(&args.target, sale))
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("loadtest {}: wrote the sale to {}", sale.tag, path.display());
    }
    if args.prepare_only {
        return Ok(ExitCode::SUCCESS);
    }

    let requests = Requests::new(args.scenario, &host, sale.as_ref())?;
    let pacing = match args.rate {
        Some(rate_per_sec) => {
            Pacing::Open { rate_per_sec, scheduled: scheduled_count(args.duration, rate_per_sec) }
        }
        None => Pacing::Closed,
    };
    eprintln!(
        "loadtest {}: {} for {:?} with {} connections, {}",
        sale.as_ref().map_or("-", |sale| sale.tag.as_str()),
        args.scenario.as_str(),
        args.duration,
        args.connections,
        match args.rate {
            Some(rate) => format!("open loop at {rate} requests/s"),
            None => "closed loop".to_owned(),
        }
    );
    let plan = LoadPlan {
        addresses,
        requests,
        pacing,
        duration: args.duration,
        connections: args.connections,
    };
    let measured = measure_on_this_thread(plan)?;

    let check = match &sale {
        None => Check::Skipped,
        Some(sale) => setup.block_on(check(&http, sale, &args, &measured))?,
    };
    print_results(&args, sale.as_ref(), &measured, &check);
    if let Some(path) = &args.report {
        let report = report_json(&args, &measured, &check);
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(if check.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The `Host` header and the socket addresses of `target`, resolved once so that reconnecting
/// during the load never waits on name resolution.
fn target_address(target: &str) -> anyhow::Result<(String, Vec<SocketAddr>)> {
    let uri: Uri = target.parse().with_context(|| format!("--target `{target}` is not a URL"))?;
    let authority = uri.authority().context("--target needs a host and port")?;
    let with_port = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:80", authority.as_str()),
    };
    let addresses: Vec<SocketAddr> =
        with_port.to_socket_addrs().with_context(|| format!("resolve {with_port}"))?.collect();
    anyhow::ensure!(!addresses.is_empty(), "{with_port} resolves to no address");
    Ok((authority.as_str().to_owned(), addresses))
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
        problem_code(self.status.as_u16(), &self.body)
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
    /// The SKU of `--units` units that the sale scenarios check for overselling.
    hot_sku: Option<String>,
    /// Every SKU but the hot one.
    other_skus: Vec<String>,
    /// Stock of each of `other_skus`.
    other_sku_units: u64,
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

    let hot_sku = args.scenario.has_hot_sku().then(|| format!("lt-{tag}-hot"));
    let other_skus: Vec<String> = (0..OTHER_SKUS).map(|i| format!("lt-{tag}-{i:03}")).collect();
    let other_sku_units =
        if args.scenario == Scenario::Steady { STEADY_SKU_UNITS } else { OTHER_SKU_UNITS };
    let sku_count = other_skus.len() + usize::from(hot_sku.is_some());
    eprintln!("loadtest {tag}: creating {sku_count} products and their stock");
    let seller = Some(seller_token.as_str());
    let mut product_ids = Vec::with_capacity(sku_count);
    for (index, sku) in hot_sku.iter().chain(&other_skus).enumerate() {
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
        let on_hand =
            if Some(sku) == hot_sku.as_ref() { u64::from(args.units) } else { other_sku_units };
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
    if let Some(hot_sku) = &hot_sku {
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
    }
    Ok(Sale { tag, seller_token, buyer_tokens, hot_sku, other_skus, other_sku_units, product_ids })
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

/// The sale as `key value` lines. Every value is one word (SKUs are ours, tokens base64url), so a
/// reader splits each line at its first space; a `#` line is a comment.
fn export_text(target: &str, sale: &Sale) -> String {
    let mut text = String::from(
        "# surge loadtest export: `key value` lines; keys target, tag, hot_sku, sku, buyer\n",
    );
    let _ = writeln!(text, "target {target}");
    let _ = writeln!(text, "tag {}", sale.tag);
    if let Some(hot_sku) = &sale.hot_sku {
        let _ = writeln!(text, "hot_sku {hot_sku}");
    }
    for sku in &sale.other_skus {
        let _ = writeln!(text, "sku {sku}");
    }
    for token in &sale.buyer_tokens {
        let _ = writeln!(text, "buyer {token}");
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The schedule

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// When requests go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pacing {
    /// Each connection sends when its previous request is answered.
    Closed,
    /// Request `i` is due at `start + i / rate_per_sec`, for every `i < scheduled`.
    Open { rate_per_sec: u64, scheduled: u64 },
}

/// The requests an open loop of `duration` at `rate_per_sec` schedules: every `i` whose intended
/// time `i / rate_per_sec` falls before `duration`.
fn scheduled_count(duration: Duration, rate_per_sec: u64) -> u64 {
    let count = (duration.as_nanos() * u128::from(rate_per_sec)).div_ceil(NANOS_PER_SEC);
    u64::try_from(count).unwrap_or(u64::MAX)
}

/// How long after the start request `index` is due, rounded down to the nanosecond. Computed from
/// the index rather than by adding up intervals, so rounding never accumulates into a drift.
fn intended_offset(index: u64, rate_per_sec: u64) -> Duration {
    assert!(rate_per_sec > 0, "a rate of zero schedules nothing");
    let nanos = u128::from(index) * NANOS_PER_SEC / u128::from(rate_per_sec);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// When a connection that took a request due at `intended` should wake to send it, or `None` to
/// send at once: [`SEND_EARLY_MAX`] early, since the timer wakes late by up to as much.
fn wake_time(intended: Instant, now: Instant) -> Option<Instant> {
    let wake = intended.checked_sub(SEND_EARLY_MAX)?;
    (wake > now).then_some(wake)
}

/// The latency of one request: from its intended time, so that waiting for a free connection is
/// charged to the server, or from its actual send when that came first (sent early, see
/// [`wake_time`]), so that sending early never makes an answer look faster than it was.
fn charged_latency(intended: Option<Instant>, sent: Instant, completed: Instant) -> Duration {
    let from = intended.map_or(sent, |intended| intended.min(sent));
    completed.saturating_duration_since(from)
}

/// Why a request went out late.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Late {
    /// Every connection was still waiting for an answer when it was due: the server (or the
    /// generator, slow to read the answers) held them.
    NoFreeConnection,
    /// A connection had taken it in time, but the generator got to sending it late.
    GeneratorBehind,
}

/// Whether a request due at `intended`, taken by a connection at `claimed` and sent at `sent`,
/// went out late.
fn lateness(intended: Instant, claimed: Instant, sent: Instant) -> Option<Late> {
    let late_at = intended + LATE_AFTER;
    if sent <= late_at {
        None
    } else if claimed > late_at {
        Some(Late::NoFreeConnection)
    } else {
        Some(Late::GeneratorBehind)
    }
}

// ---------------------------------------------------------------------------------------------
// The lean HTTP/1.1 client of the load phase

/// The head of one answer, as far as the load phase needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    /// Bytes of the status line and the headers, through the blank line.
    head_bytes: usize,
    body_bytes: usize,
    /// The server closes the connection after this answer.
    close: bool,
}

impl Head {
    fn total_bytes(&self) -> usize {
        self.head_bytes + self.body_bytes
    }
}

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// Not the whole head yet.
    Partial,
    Head(Head),
}

/// Answers the lean client does not read. It reads only what `surge serve` sends, and refusing
/// anything else by name is better than misreading the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum WireError {
    #[error("the answer does not start with an HTTP/1.0 or HTTP/1.1 status line")]
    StatusLine,
    #[error("a header line without a colon")]
    HeaderLine,
    #[error("Content-Length is not one decimal number")]
    ContentLength,
    #[error(
        "status {0}: answers with a Transfer-Encoding (chunked) are not read by the load client"
    )]
    TransferEncoding(u16),
    #[error("status {0} without Content-Length: the load client cannot tell where the body ends")]
    NoContentLength(u16),
    #[error("an interim answer (status {0}) to a request that asked for none")]
    Interim(u16),
    #[error("the answer's head exceeds {RESPONSE_HEAD_BYTES_MAX} bytes")]
    HeadTooLarge,
    #[error("the answer's body exceeds {RESPONSE_BODY_BYTES_MAX} bytes")]
    BodyTooLarge,
    #[error("bytes after the answer, though no other request was sent")]
    TrailingBytes,
}

/// Parses an answer's head from the bytes received so far (the whole head, or `Partial`).
fn parse_head(bytes: &[u8]) -> Result<Parsed, WireError> {
    let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") else {
        let seen = bytes.len().min(5);
        if bytes[..seen] != b"HTTP/"[..seen] {
            return Err(WireError::StatusLine);
        }
        if bytes.len() > RESPONSE_HEAD_BYTES_MAX {
            return Err(WireError::HeadTooLarge);
        }
        return Ok(Parsed::Partial);
    };
    let mut lines = bytes[..end].split(|&byte| byte == b'\n').map(trim_cr);
    let status_line = lines.next().unwrap_or_default();
    let http_1_0 = match status_line.get(..9) {
        Some(b"HTTP/1.1 ") => false,
        Some(b"HTTP/1.0 ") => true,
        _ => return Err(WireError::StatusLine),
    };
    let status = match status_line.get(9..12) {
        Some(digits) if digits.iter().all(u8::is_ascii_digit) => {
            digits.iter().fold(0u16, |status, digit| status * 10 + u16::from(digit - b'0'))
        }
        _ => return Err(WireError::StatusLine),
    };
    if status_line.get(12).is_some_and(|&byte| byte != b' ') {
        return Err(WireError::StatusLine);
    }
    let mut content_length: Option<usize> = None;
    let (mut close, mut keep_alive) = (false, false);
    for line in lines {
        let colon = line.iter().position(|&byte| byte == b':').ok_or(WireError::HeaderLine)?;
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_decimal(value).ok_or(WireError::ContentLength)?;
            if content_length.is_some_and(|earlier| earlier != length) {
                return Err(WireError::ContentLength);
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(WireError::TransferEncoding(status));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&byte| byte == b',').map(<[u8]>::trim_ascii) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let body_bytes = match status {
        100..=199 => return Err(WireError::Interim(status)),
        204 | 304 => 0,
        _ => content_length.ok_or(WireError::NoContentLength(status))?,
    };
    if body_bytes > RESPONSE_BODY_BYTES_MAX {
        return Err(WireError::BodyTooLarge);
    }
    let close = close || (http_1_0 && !keep_alive);
    Ok(Parsed::Head(Head { status, head_bytes: end + 4, body_bytes, close }))
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A non-empty run of ASCII digits that fits a `usize`.
fn parse_decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0usize, |number, digit| {
        number.checked_mul(10)?.checked_add(usize::from(digit - b'0'))
    })
}

/// One answer at a time, from bytes that arrive in pieces of any size.
#[derive(Debug)]
struct ResponseBuffer {
    /// Always initialised, so reads go into it without `unsafe`; `filled` bytes hold the answer.
    bytes: Vec<u8>,
    filled: usize,
    head: Option<Head>,
}

impl ResponseBuffer {
    fn new() -> Self {
        Self { bytes: vec![0; READ_CHUNK_BYTES], filled: 0, head: None }
    }

    /// Starts on the next answer.
    fn clear(&mut self) {
        self.filled = 0;
        self.head = None;
    }

    /// Free space to read into, grown when full: to the whole answer once its head says how
    /// long it is.
    fn spare(&mut self) -> &mut [u8] {
        if self.filled == self.bytes.len() {
            let wanted = match self.head {
                Some(head) => head.total_bytes(),
                None => self.filled + READ_CHUNK_BYTES,
            };
            self.bytes.resize(wanted.max(self.filled + 1), 0);
        }
        &mut self.bytes[self.filled..]
    }

    /// Takes note of `count` bytes read into [`Self::spare`]: the head once the whole answer is
    /// in, `None` while more is to come.
    fn advance(&mut self, count: usize) -> Result<Option<Head>, WireError> {
        self.filled += count;
        assert!(self.filled <= self.bytes.len(), "advanced past the spare space");
        if self.head.is_none() {
            match parse_head(&self.bytes[..self.filled])? {
                Parsed::Partial => return Ok(None),
                Parsed::Head(head) => self.head = Some(head),
            }
        }
        let head = self.head.expect("parsed above");
        match self.filled.cmp(&head.total_bytes()) {
            std::cmp::Ordering::Less => Ok(None),
            std::cmp::Ordering::Equal => Ok(Some(head)),
            std::cmp::Ordering::Greater => Err(WireError::TrailingBytes),
        }
    }

    /// The body of the complete answer.
    fn body(&self) -> &[u8] {
        match self.head {
            Some(head) => &self.bytes[head.head_bytes..head.total_bytes().min(self.filled)],
            None => &[],
        }
    }
}

/// Why an exchange on the lean client failed.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("no answer within {REQUEST_TIMEOUT:?}")]
    Timeout,
    #[error("transport: {0}")]
    Transport(#[from] std::io::Error),
    #[error("the server closed the connection before answering")]
    Closed,
    #[error("{0}")]
    Protocol(#[from] WireError),
}

impl ExchangeError {
    /// The key this failure is counted under.
    fn code(&self) -> &'static str {
        match self {
            ExchangeError::Timeout => "timeout",
            ExchangeError::Transport(_) | ExchangeError::Closed => "transport",
            ExchangeError::Protocol(_) => "protocol",
        }
    }
}

async fn connect(address: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The first of `addresses` that accepts a connection (`localhost` may name `::1` first while the
/// server listens on `127.0.0.1` only), with that connection.
async fn connect_first(addresses: &[SocketAddr]) -> anyhow::Result<(SocketAddr, TcpStream)> {
    let mut failures = Vec::new();
    for &address in addresses {
        match connect(address).await {
            Ok(stream) => return Ok((address, stream)),
            Err(error) => failures.push(format!("{address}: {error}")),
        }
    }
    bail!("cannot connect to the target: {}", failures.join("; "))
}

/// Writes `bytes` whole. `AsyncWrite` is used directly rather than tokio's `io-util` helpers,
/// which this crate does not otherwise need.
async fn write_all(stream: &mut TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let written = poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, bytes)).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[written..];
    }
    Ok(())
}

/// Reads what has arrived into `into`. Through `poll_read`, which after a short read waits for
/// the socket's next readiness instead of trying a `read` that would find nothing.
async fn read_some(stream: &mut TcpStream, into: &mut [u8]) -> std::io::Result<usize> {
    poll_fn(|cx| {
        let mut buffer = ReadBuf::new(into);
        ready!(Pin::new(&mut *stream).poll_read(cx, &mut buffer))?;
        Poll::Ready(Ok(buffer.filled().len()))
    })
    .await
}

/// Sends one request on the connection (opened first if there is none) and reads its answer
/// into `response`.
async fn exchange(
    connection: &mut Option<TcpStream>,
    address: SocketAddr,
    request: &[u8],
    response: &mut ResponseBuffer,
) -> Result<Head, ExchangeError> {
    let stream = match connection {
        Some(stream) => stream,
        None => connection.insert(connect(address).await?),
    };
    write_all(stream, request).await?;
    response.clear();
    loop {
        let count = read_some(stream, response.spare()).await?;
        if count == 0 {
            return Err(ExchangeError::Closed);
        }
        if let Some(head) = response.advance(count)? {
            return Ok(head);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests as bytes

/// What an answer is counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Browse,
    Checkout,
    Healthz,
    Orders,
}

impl Operation {
    const ALL: [Operation; 4] =
        [Operation::Browse, Operation::Checkout, Operation::Healthz, Operation::Orders];

    fn name(self) -> &'static str {
        match self {
            Operation::Browse => "browse",
            Operation::Checkout => "checkout",
            Operation::Healthz => "healthz",
            Operation::Orders => "orders",
        }
    }
}

/// One request, as the tally needs to know it.
#[derive(Clone, Copy, Debug)]
struct Planned {
    operation: Operation,
    buyer: usize,
    /// Units the request buys, and of those the units of the hot SKU.
    units: u64,
    hot_units: u64,
}

/// Everything before the body of every checkout but the token and the key.
const CHECKOUT_BODY_START: &[u8] = br#"{"shipping":{"name":"Load Tester","line1":"1 Main St","city":"Berlin","postal_code":"10115"},"payment":{"token":""#;

/// The requests of a scenario, with their fixed parts written once per run.
#[derive(Debug)]
struct Requests {
    scenario: Scenario,
    buyer_tokens: Vec<String>,
    hot_sku: Option<String>,
    other_skus: Vec<String>,
    product_ids: Vec<String>,
    /// `GET /healthz`, whole.
    healthz: Vec<u8>,
    /// From the request line to `Bearer `.
    checkout_start: Vec<u8>,
    orders_start: Vec<u8>,
    /// `GET /v1/products/`, then the id, then this up to `Bearer `.
    product_rest: Vec<u8>,
    /// After the token: the key header up to the per-request part of the key.
    key_start: Vec<u8>,
}

impl Requests {
    fn new(scenario: Scenario, host: &str, sale: Option<&Sale>) -> anyhow::Result<Requests> {
        let empty = Vec::new;
        let (tag, buyer_tokens, hot_sku, other_skus, product_ids) = match sale {
            Some(sale) => (
                sale.tag.clone(),
                sale.buyer_tokens.clone(),
                sale.hot_sku.clone(),
                sale.other_skus.clone(),
                sale.product_ids.clone(),
            ),
            None => (String::new(), empty(), None, empty(), empty()),
        };
        // Written into headers and JSON strings as they are: nothing may need escaping.
        let plain = |text: &String| {
            !text.is_empty()
                && text.bytes().all(|byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\')
        };
        let words = buyer_tokens.iter().chain(&other_skus).chain(&product_ids).chain(&hot_sku);
        if let Some(odd) = words.into_iter().find(|word| !plain(word)) {
            bail!("`{odd}` cannot be written into a request as it is");
        }
        if scenario != Scenario::Noop && (buyer_tokens.is_empty() || other_skus.is_empty()) {
            bail!("scenario {} needs a prepared sale", scenario.as_str());
        }
        Ok(Requests {
            scenario,
            healthz: format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            checkout_start: format!(
                "POST /v1/checkout HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 Authorization: Bearer "
            )
            .into_bytes(),
            orders_start: format!(
                "GET /v1/orders HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
            )
            .into_bytes(),
            product_rest: format!(" HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer ")
                .into_bytes(),
            key_start: format!("\r\nIdempotency-Key: lt-{tag}-").into_bytes(),
            buyer_tokens,
            hot_sku,
            other_skus,
            product_ids,
        })
    }

    /// Writes request `index` of the scenario into `request` (`body` is scratch space).
    fn write(
        &self,
        random: &mut Random,
        index: u64,
        request: &mut Vec<u8>,
        body: &mut Vec<u8>,
    ) -> Planned {
        request.clear();
        match self.scenario {
            Scenario::Noop => {
                request.extend_from_slice(&self.healthz);
                Planned { operation: Operation::Healthz, buyer: 0, units: 0, hot_units: 0 }
            }
            Scenario::Steady => {
                let buyer = random.below(self.buyer_tokens.len());
                let sku = self.other_skus[random.below(self.other_skus.len())].as_str();
                self.write_checkout(request, body, buyer, index, &[(sku, 1)], "tok_ok")
            }
            Scenario::FlashSale => {
                let buyer = random.below(self.buyer_tokens.len());
                let sku = match &self.hot_sku {
                    Some(hot_sku) if random.below(10) < 9 => hot_sku.as_str(),
                    _ => self.other_skus[random.below(self.other_skus.len())].as_str(),
                };
                self.write_checkout(request, body, buyer, index, &[(sku, 1)], "tok_ok")
            }
            Scenario::BlackFriday => self.write_black_friday(random, index, request, body),
        }
    }

    /// Half product views, a third checkouts of one to three lines (one in ten declined, the hot
    /// SKU in one line of ten), the rest order history.
    fn write_black_friday(
        &self,
        random: &mut Random,
        index: u64,
        request: &mut Vec<u8>,
        body: &mut Vec<u8>,
    ) -> Planned {
        let buyer = random.below(self.buyer_tokens.len());
        let token = self.buyer_tokens[buyer].as_bytes();
        let roll = random.below(100);
        if roll < 50 {
            let product = &self.product_ids[random.below(self.product_ids.len())];
            request.extend_from_slice(b"GET /v1/products/");
            request.extend_from_slice(product.as_bytes());
            request.extend_from_slice(&self.product_rest);
            request.extend_from_slice(token);
            request.extend_from_slice(b"\r\n\r\n");
            return Planned { operation: Operation::Browse, buyer, units: 0, hot_units: 0 };
        }
        if roll < 85 {
            let line_count = 1 + random.below(3);
            let mut lines: [(&str, u64); 3] = [("", 0); 3];
            let mut taken = 0;
            while taken < line_count {
                let sku = match &self.hot_sku {
                    Some(hot_sku) if random.below(10) == 0 => hot_sku.as_str(),
                    _ => self.other_skus[random.below(self.other_skus.len())].as_str(),
                };
                if lines[..taken].iter().all(|(earlier, _)| *earlier != sku) {
                    lines[taken] = (sku, 1 + random.below(2) as u64);
                    taken += 1;
                }
            }
            let payment = if random.below(10) == 0 { "tok_decline" } else { "tok_ok" };
            return self.write_checkout(request, body, buyer, index, &lines[..taken], payment);
        }
        request.extend_from_slice(&self.orders_start);
        request.extend_from_slice(token);
        request.extend_from_slice(b"\r\n\r\n");
        Planned { operation: Operation::Orders, buyer, units: 0, hot_units: 0 }
    }

    /// A buy-now checkout with the key `lt-<tag>-<index>`: unique within the run, and the tag
    /// keeps runs apart.
    fn write_checkout(
        &self,
        request: &mut Vec<u8>,
        body: &mut Vec<u8>,
        buyer: usize,
        index: u64,
        lines: &[(&str, u64)],
        payment: &str,
    ) -> Planned {
        body.clear();
        body.extend_from_slice(CHECKOUT_BODY_START);
        body.extend_from_slice(payment.as_bytes());
        body.extend_from_slice(br#""},"items":["#);
        let (mut units, mut hot_units) = (0, 0);
        for (position, (sku, quantity)) in lines.iter().enumerate() {
            if position > 0 {
                body.push(b',');
            }
            body.extend_from_slice(br#"{"sku":""#);
            body.extend_from_slice(sku.as_bytes());
            body.extend_from_slice(br#"","quantity":"#);
            push_decimal(body, *quantity);
            body.push(b'}');
            units += quantity;
            if self.hot_sku.as_deref() == Some(*sku) {
                hot_units += quantity;
            }
        }
        body.extend_from_slice(b"]}");
        request.extend_from_slice(&self.checkout_start);
        request.extend_from_slice(self.buyer_tokens[buyer].as_bytes());
        request.extend_from_slice(&self.key_start);
        push_decimal(request, index);
        request.extend_from_slice(b"\r\nContent-Length: ");
        push_decimal(request, body.len() as u64);
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(body);
        Planned { operation: Operation::Checkout, buyer, units, hot_units }
    }
}

/// Appends `number` in decimal, without the formatting machinery.
fn push_decimal(out: &mut Vec<u8>, mut number: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// The problem document's `code`, else `http_<status>`.
fn problem_code(status: u16, body: &[u8]) -> String {
    let code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|json| json.get("code").and_then(Value::as_str).map(str::to_owned));
    code.unwrap_or_else(|| format!("http_{status}"))
}

// ---------------------------------------------------------------------------------------------
// The load phase

/// Results of one operation (checkout, browse, orders, healthz).
#[derive(Debug)]
struct OperationStats {
    latency_us: Histogram<u64>,
    count: u64,
    errors: BTreeMap<String, u64>,
}

impl OperationStats {
    fn new() -> Self {
        Self { latency_us: microsecond_histogram(), count: 0, errors: BTreeMap::new() }
    }
}

/// From 1 µs to a minute, three significant digits.
fn microsecond_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A `201` that holds units of the hot SKU.
#[derive(Debug, Clone)]
struct HotOrder {
    order_id: String,
    buyer: usize,
    quantity: u64,
}

/// Everything the connections count, shared on the load thread.
#[derive(Debug)]
struct Tally {
    /// By [`Operation::ALL`] position; `None` until the operation is first attempted.
    operations: [Option<OperationStats>; 4],
    acknowledged: Vec<HotOrder>,
    /// Units in `201` checkouts.
    acknowledged_units: u64,
    /// Checkouts without an answer or answered `5xx`: the server may or may not hold their units.
    ambiguous_checkouts: u64,
    sent: u64,
    answered_ok: u64,
    answered_error: u64,
    late_no_free_connection: u64,
    late_generator_behind: u64,
    /// Open loop: actual send minus intended time (0 for a send ahead of time).
    send_lag_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            operations: [None, None, None, None],
            acknowledged: Vec::new(),
            acknowledged_units: 0,
            ambiguous_checkouts: 0,
            sent: 0,
            answered_ok: 0,
            answered_error: 0,
            late_no_free_connection: 0,
            late_generator_behind: 0,
            send_lag_us: microsecond_histogram(),
        }
    }

    fn operation(&mut self, operation: Operation) -> &mut OperationStats {
        let position = Operation::ALL.iter().position(|&known| known == operation);
        self.operations[position.expect("every operation is in ALL")]
            .get_or_insert_with(OperationStats::new)
    }
}

/// The load phase's input.
#[derive(Debug)]
struct LoadPlan {
    /// Where `--target` resolves; the load uses the first that accepts a connection.
    addresses: Vec<SocketAddr>,
    requests: Requests,
    pacing: Pacing,
    duration: Duration,
    connections: usize,
}

/// What the load phase measured.
#[derive(Debug)]
struct Measured {
    operations: BTreeMap<&'static str, OperationStats>,
    acknowledged: Vec<HotOrder>,
    acknowledged_units: u64,
    ambiguous_checkouts: u64,
    /// From the start until the last answer (the schedule's duration plus the last answers).
    elapsed: Duration,
    pacing: Pacing,
    sent: u64,
    late_no_free_connection: u64,
    late_generator_behind: u64,
    send_lag_us: Histogram<u64>,
    /// CPU time of the load thread, when the kernel tells it.
    generator_cpu: Option<Duration>,
}

impl Measured {
    fn late_sends(&self) -> u64 {
        self.late_no_free_connection + self.late_generator_behind
    }

    /// Open loop: requests due before the end that were never sent.
    fn unsent(&self) -> Option<u64> {
        unsent(self.pacing, self.sent)
    }

    /// Cores the load thread kept busy on average.
    fn generator_cpu_cores(&self) -> Option<f64> {
        let cpu = self.generator_cpu?;
        Some(cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(f64::EPSILON))
    }
}

/// Open loop: the requests of the schedule that were never sent (the closed loop has none).
fn unsent(pacing: Pacing, sent: u64) -> Option<u64> {
    match pacing {
        Pacing::Open { scheduled, .. } => Some(scheduled.saturating_sub(sent)),
        Pacing::Closed => None,
    }
}

/// A request a connection took: its place in the run and, in the open loop, when it is due.
#[derive(Clone, Copy, Debug)]
struct Slot {
    index: u64,
    intended: Option<Instant>,
    claimed: Instant,
}

/// What the connections of the load thread share. Single-threaded, so plain cells: no atomics,
/// no locks, and never a borrow held across an `.await`.
#[derive(Debug)]
struct Load {
    address: SocketAddr,
    requests: Requests,
    pacing: Pacing,
    started: Instant,
    deadline: Instant,
    next_index: Cell<u64>,
    stop: Cell<bool>,
    /// Wakes the connections waiting for a request's time when the run is interrupted.
    stopped: Notify,
    /// The first refused answer is printed, the rest only counted.
    protocol_error_printed: Cell<bool>,
    tally: RefCell<Tally>,
}

impl Load {
    /// The next request to send, if the run is not over.
    fn claim(&self) -> Option<Slot> {
        if self.stop.get() {
            return None;
        }
        let claimed = Instant::now();
        if claimed >= self.deadline {
            return None;
        }
        let index = self.next_index.get();
        let intended = match self.pacing {
            Pacing::Closed => None,
            Pacing::Open { scheduled, .. } if index >= scheduled => return None,
            Pacing::Open { rate_per_sec, .. } => {
                Some(self.started + intended_offset(index, rate_per_sec))
            }
        };
        self.next_index.set(index + 1);
        Some(Slot { index, intended, claimed })
    }

    /// Counts one exchange; `true` when a closed-loop worker should pause before the next.
    fn record(
        &self,
        slot: Slot,
        sent: Instant,
        completed: Instant,
        planned: Planned,
        outcome: &Result<Head, ExchangeError>,
        response: &ResponseBuffer,
    ) -> bool {
        let mut tally = self.tally.borrow_mut();
        tally.sent += 1;
        if let Some(intended) = slot.intended {
            tally.send_lag_us.saturating_record(micros(sent.saturating_duration_since(intended)));
            match lateness(intended, slot.claimed, sent) {
                Some(Late::NoFreeConnection) => tally.late_no_free_connection += 1,
                Some(Late::GeneratorBehind) => tally.late_generator_behind += 1,
                None => {}
            }
        }
        let checkout = planned.operation == Operation::Checkout;
        match outcome {
            Ok(head) if (200..300).contains(&head.status) => {
                tally.answered_ok += 1;
                if checkout && head.status == 201 {
                    tally.acknowledged_units += planned.units;
                    if planned.hot_units > 0 {
                        let answer: Value =
                            serde_json::from_slice(response.body()).unwrap_or(Value::Null);
                        let order_id = answer["order_id"].as_str().unwrap_or_default().to_owned();
                        tally.acknowledged.push(HotOrder {
                            order_id,
                            buyer: planned.buyer,
                            quantity: planned.hot_units,
                        });
                    }
                }
                let latency = charged_latency(slot.intended, sent, completed);
                let stats = tally.operation(planned.operation);
                stats.count += 1;
                stats.latency_us.saturating_record(micros(latency).max(1));
                false
            }
            Ok(head) => {
                tally.answered_error += 1;
                if checkout && head.status >= 500 {
                    tally.ambiguous_checkouts += 1;
                }
                let code = problem_code(head.status, response.body());
                *tally.operation(planned.operation).errors.entry(code).or_default() += 1;
                matches!(head.status, 429 | 503)
            }
            Err(error) => {
                tally.answered_error += 1;
                if checkout {
                    tally.ambiguous_checkouts += 1;
                }
                if matches!(error, ExchangeError::Protocol(_))
                    && !self.protocol_error_printed.replace(true)
                {
                    eprintln!("loadtest: refused an answer (counted as `protocol`): {error}");
                }
                let code = error.code().to_owned();
                *tally.operation(planned.operation).errors.entry(code).or_default() += 1;
                true
            }
        }
    }
}

/// Runs the load phase on a current-thread runtime on the calling thread.
fn measure_on_this_thread(plan: LoadPlan) -> anyhow::Result<Measured> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    tokio::task::LocalSet::new().block_on(&runtime, measure(plan))
}

async fn measure(plan: LoadPlan) -> anyhow::Result<Measured> {
    // Opened before the clock starts, so that the run measures answers and not a connect storm.
    let (address, first) = connect_first(&plan.addresses).await?;
    let mut streams = Vec::with_capacity(plan.connections);
    streams.push(first);
    for _ in 1..plan.connections {
        streams.push(connect(address).await.with_context(|| format!("connect to {address}"))?);
    }
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).unwrap_or_default();
    let seed = u64::from_le_bytes(seed);
    let cpu_before = thread_cpu_time();
    let started = Instant::now();
    let load = Rc::new(Load {
        address,
        requests: plan.requests,
        pacing: plan.pacing,
        started,
        deadline: started + plan.duration,
        next_index: Cell::new(0),
        stop: Cell::new(false),
        stopped: Notify::new(),
        protocol_error_printed: Cell::new(false),
        tally: RefCell::new(Tally::new()),
    });
    let interrupt = Rc::clone(&load);
    let ctrl_c = tokio::task::spawn_local(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping the connections");
            interrupt.stop.set(true);
            interrupt.stopped.notify_waiters();
        }
    });
    let progress = tokio::task::spawn_local(progress(Rc::clone(&load)));
    let connections: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(index, stream)| {
            let seed = seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            tokio::task::spawn_local(connection(Rc::clone(&load), stream, seed))
        })
        .collect();
    for connection in connections {
        connection.await.context("a connection task failed")?;
    }
    let elapsed = started.elapsed();
    let generator_cpu = cpu_before.zip(thread_cpu_time()).map(|(before, after)| after - before);
    ctrl_c.abort();
    progress.abort();
    let tally = load.tally.replace(Tally::new());
    let operations = Operation::ALL
        .iter()
        .zip(tally.operations)
        .filter_map(|(operation, stats)| Some((operation.name(), stats?)))
        .collect();
    Ok(Measured {
        operations,
        acknowledged: tally.acknowledged,
        acknowledged_units: tally.acknowledged_units,
        ambiguous_checkouts: tally.ambiguous_checkouts,
        elapsed,
        pacing: load.pacing,
        sent: tally.sent,
        late_no_free_connection: tally.late_no_free_connection,
        late_generator_behind: tally.late_generator_behind,
        send_lag_us: tally.send_lag_us,
        generator_cpu,
    })
}

/// CPU time of the calling thread so far (`/proc/thread-self/schedstat`, Linux only).
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// One keep-alive connection: takes the next request, waits for its time in the open loop,
/// sends it, reads the answer, counts it; until the run is over.
async fn connection(load: Rc<Load>, stream: TcpStream, seed: u64) {
    let mut stream = Some(stream);
    let mut random = Random::new(seed);
    let mut request = Vec::with_capacity(1024);
    let mut body = Vec::with_capacity(512);
    let mut response = ResponseBuffer::new();
    // Two timers made once and rearmed: the pacing wait and the request timeout.
    let pacer = tokio::time::sleep(Duration::ZERO);
    let timeout = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(pacer, timeout);
    while let Some(slot) = load.claim() {
        if let Some(wake) = slot.intended.and_then(|intended| wake_time(intended, slot.claimed)) {
            pacer.as_mut().reset(wake.into());
            // No await between the check in `claim` and this first poll, on one thread: an
            // interrupt cannot slip in between and be missed.
            tokio::select! {
                biased;
                () = load.stopped.notified() => break,
                () = pacer.as_mut() => {}
            }
        }
        let planned = load.requests.write(&mut random, slot.index, &mut request, &mut body);
        let sent = Instant::now();
        if timeout.deadline().into_std() < sent + (REQUEST_TIMEOUT - REQUEST_TIMEOUT_SLACK) {
            timeout.as_mut().reset((sent + REQUEST_TIMEOUT).into());
        }
        let outcome = tokio::select! {
            biased;
            outcome = exchange(&mut stream, load.address, &request, &mut response) => outcome,
            () = timeout.as_mut() => Err(ExchangeError::Timeout),
        };
        let completed = Instant::now();
        if !matches!(outcome, Ok(head) if !head.close) {
            stream = None;
        }
        let pause = load.record(slot, sent, completed, planned, &outcome, &response);
        if pause && load.pacing == Pacing::Closed {
            pacer.as_mut().reset((completed + REFUSAL_PAUSE).into());
            pacer.as_mut().await;
        }
    }
}

/// One stderr line per second: answers per second, successful and refused, and late sends.
async fn progress(load: Rc<Load>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.tick().await;
    let (mut ok_before, mut errors_before, mut late_before) = (0, 0, 0);
    loop {
        interval.tick().await;
        let (ok, errors, late) = {
            let tally = load.tally.borrow();
            let late = tally.late_no_free_connection + tally.late_generator_behind;
            (tally.answered_ok, tally.answered_error, late)
        };
        eprintln!(
            "[{:>4}s] {:>7} req/s  {:>7} ok/s  {:>7} errors/s{}",
            load.started.elapsed().as_secs(),
            ok + errors - ok_before - errors_before,
            ok - ok_before,
            errors - errors_before,
            match load.pacing {
                Pacing::Open { .. } => format!("  {:>7} late sends/s", late - late_before),
                Pacing::Closed => String::new(),
            }
        );
        (ok_before, errors_before, late_before) = (ok, errors, late);
    }
}

/// xorshift64*: a few cycles per draw, seeded per connection; statistical quality is beside the
/// point.
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
// The checks

/// What the check after the load found.
#[derive(Debug)]
enum Check {
    /// `noop` has no sale to check.
    Skipped,
    HotSku {
        sku: String,
        check: OversellCheck,
    },
    Steady(SteadyCheck),
}

impl Check {
    fn oversold(&self) -> u64 {
        match self {
            Check::Skipped => 0,
            Check::HotSku { check, .. } => check.oversold(),
            Check::Steady(check) => check.oversold_units,
        }
    }

    fn passed(&self) -> bool {
        match self {
            Check::Skipped => true,
            Check::HotSku { check, .. } => check.oversold() == 0,
            Check::Steady(check) => check.passed(),
        }
    }
}

async fn check(
    http: &HttpClient,
    sale: &Sale,
    args: &Args,
    measured: &Measured,
) -> anyhow::Result<Check> {
    let check = match &sale.hot_sku {
        Some(hot_sku) => {
            let units = u64::from(args.units);
            let check = check_oversell(http, sale, hot_sku, units, &measured.acknowledged)
                .await
                .context("the oversell check could not read the stock")?;
            Check::HotSku { sku: hot_sku.clone(), check }
        }
        None => Check::Steady(
            check_steady(http, sale, measured)
                .await
                .context("the steady check could not read the stock")?,
        ),
    };
    Ok(check)
}

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
    hot_sku: &str,
    units: u64,
    acknowledged: &[HotOrder],
) -> anyhow::Result<OversellCheck> {
    let path = format!("/v1/skus/{hot_sku}/stock");
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
    let mut holding = 0;
    for chunk in acknowledged.chunks(HOLDING_READERS) {
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

/// `steady`: the units the engine holds over the sale's SKUs against the units acknowledged.
#[derive(Debug)]
struct SteadyCheck {
    skus: usize,
    units_per_sku: u64,
    /// `sold + reserved` over every SKU of the sale.
    held_units: u64,
    reserved: u64,
    acknowledged_units: u64,
    /// Checkouts that got no answer or a `5xx`: each may hold its one unit or not.
    ambiguous_checkouts: u64,
    /// Units held beyond a SKU's stock, over all SKUs.
    oversold_units: u64,
}

impl SteadyCheck {
    /// Every acknowledged unit is held, and every held unit was acknowledged or belongs to an
    /// ambiguous checkout.
    fn passed(&self) -> bool {
        self.oversold_units == 0
            && self.held_units >= self.acknowledged_units
            && self.held_units - self.acknowledged_units <= self.ambiguous_checkouts
    }
}

async fn check_steady(
    http: &HttpClient,
    sale: &Sale,
    measured: &Measured,
) -> anyhow::Result<SteadyCheck> {
    let seller = Some(sale.seller_token.as_str());
    let settle_by = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut check = SteadyCheck {
            skus: sale.other_skus.len(),
            units_per_sku: sale.other_sku_units,
            held_units: 0,
            reserved: 0,
            acknowledged_units: measured.acknowledged_units,
            ambiguous_checkouts: measured.ambiguous_checkouts,
            oversold_units: 0,
        };
        for sku in &sale.other_skus {
            let path = format!("/v1/skus/{sku}/stock");
            let stock = http.expect(Method::GET, &path, seller, None, StatusCode::OK).await?;
            let counter = |name: &str| {
                stock[name].as_u64().with_context(|| format!("`{name}` missing in {path}: {stock}"))
            };
            let held = counter("sold")? + counter("reserved")?;
            check.held_units += held;
            check.reserved += counter("reserved")?;
            check.oversold_units += held.saturating_sub(sale.other_sku_units);
        }
        if check.held_units == check.acknowledged_units || Instant::now() >= settle_by {
            return Ok(check);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Output

fn histogram_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    let micros =
        if quantile >= 1.0 { histogram.max() } else { histogram.value_at_quantile(quantile) };
    micros as f64 / 1_000.0
}

fn percentile_ms(stats: &OperationStats, quantile: f64) -> f64 {
    histogram_ms(&stats.latency_us, quantile)
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    (count as f64 / seconds * 10.0).round() / 10.0
}

fn mode_name(pacing: Pacing) -> &'static str {
    match pacing {
        Pacing::Closed => "closed",
        Pacing::Open { .. } => "open",
    }
}

fn print_results(args: &Args, sale: Option<&Sale>, measured: &Measured, check: &Check) {
    let mode = match measured.pacing {
        Pacing::Closed => "closed loop".to_owned(),
        Pacing::Open { rate_per_sec, .. } => format!("open loop at {rate_per_sec}/s"),
    };
    let mut sale_text = String::new();
    if let Some(sale) = sale {
        let _ = write!(sale_text, ", {} buyers", sale.buyer_tokens.len());
        if let Some(hot_sku) = &sale.hot_sku {
            let _ = write!(sale_text, ", {} units of {hot_sku}", args.units);
        }
    }
    println!(
        "scenario {} ({mode}) for {:.1}s: {} connections{sale_text}",
        args.scenario.as_str(),
        measured.elapsed.as_secs_f64(),
        args.connections,
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
    if let Pacing::Open { scheduled, .. } = measured.pacing {
        println!(
            "schedule: {scheduled} due, {} sent, {} late by over {}ms ({} with no free \
             connection, {} with the generator behind), {} unsent; send lag p50 {:.3} ms, \
             p99 {:.3} ms, max {:.3} ms",
            measured.sent,
            measured.late_sends(),
            LATE_AFTER.as_millis(),
            measured.late_no_free_connection,
            measured.late_generator_behind,
            measured.unsent().unwrap_or_default(),
            histogram_ms(&measured.send_lag_us, 0.5),
            histogram_ms(&measured.send_lag_us, 0.99),
            histogram_ms(&measured.send_lag_us, 1.0),
        );
    }
    if let (Some(cpu), Some(cores)) = (measured.generator_cpu, measured.generator_cpu_cores()) {
        println!(
            "load thread: {:.2}s of CPU ({cores:.2} cores), {:.2} us per request sent",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / measured.sent.max(1) as f64
        );
    }
    match check {
        Check::Skipped => println!("no check: {} prepares no sale", args.scenario.as_str()),
        Check::HotSku { sku, check } => {
            println!(
                "oversell check on {sku}: sold {} + reserved {} of {} stocked (on_hand {}); \
                 {} units acknowledged with 201{}",
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
        }
        Check::Steady(check) => {
            println!(
                "steady check over {} SKUs of {} units: sold + reserved {} (reserved {}), {} \
                 units acknowledged with 201, {} checkouts without a clear answer: {}",
                check.skus,
                check.units_per_sku,
                check.held_units,
                check.reserved,
                check.acknowledged_units,
                check.ambiguous_checkouts,
                if check.passed() { "accounted for" } else { "MISMATCH" }
            );
        }
    }
    println!("oversold: {}", check.oversold());
}

fn report_json(args: &Args, measured: &Measured, check: &Check) -> Value {
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
    let mut report = json!({
        "scenario": args.scenario.as_str(),
        "mode": mode_name(measured.pacing),
        "duration_s": (measured.elapsed.as_secs_f64() * 1_000.0).round() / 1_000.0,
        "operations": operations,
        "oversold": check.oversold(),
        "connections": args.connections,
        "sent": measured.sent,
        "generator_cpu_cores": measured.generator_cpu_cores().map(|cores| (cores * 1e3).round() / 1e3),
    });
    if let Pacing::Open { rate_per_sec, scheduled } = measured.pacing {
        let late = json!({
            "offered_per_sec": rate_per_sec,
            "scheduled": scheduled,
            "late_sends": measured.late_sends(),
            "late_sends_no_free_connection": measured.late_no_free_connection,
            "late_sends_generator_behind": measured.late_generator_behind,
            "unsent": measured.unsent().unwrap_or_default(),
            "send_lag_ms": {
                "p50": histogram_ms(&measured.send_lag_us, 0.5),
                "p99": histogram_ms(&measured.send_lag_us, 0.99),
                "max": histogram_ms(&measured.send_lag_us, 1.0),
            },
        });
        merge(&mut report, late);
    }
    match check {
        Check::Skipped => {}
        Check::HotSku { check, .. } => merge(
            &mut report,
            json!({
                "buyers": args.buyers,
                "units": args.units,
                "hot_sku": {
                    "sold": check.sold,
                    "reserved": check.reserved,
                    "on_hand": check.on_hand,
                    "acknowledged_units": check.acknowledged_units,
                },
            }),
        ),
        Check::Steady(check) => merge(
            &mut report,
            json!({
                "buyers": args.buyers,
                "steady": {
                    "skus": check.skus,
                    "units_per_sku": check.units_per_sku,
                    "held_units": check.held_units,
                    "reserved": check.reserved,
                    "acknowledged_units": check.acknowledged_units,
                    "ambiguous_checkouts": check.ambiguous_checkouts,
                    "accounted_for": check.passed(),
                },
            }),
        ),
    }
    report
}

/// Adds the fields of `more` (an object) to `report` (an object).
fn merge(report: &mut Value, more: Value) {
    if let (Some(report), Value::Object(more)) = (report.as_object_mut(), more) {
        report.extend(more);
    }
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
    fn the_target_resolves_once_with_its_host_header() {
        let (host, addresses) = target_address("http://127.0.0.1:8080").unwrap();
        assert_eq!(host, "127.0.0.1:8080");
        assert_eq!(addresses, ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);
        let (host, addresses) = target_address("http://127.0.0.1").unwrap();
        assert_eq!((host.as_str(), addresses[0].port()), ("127.0.0.1", 80));
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

    #[test]
    fn steady_accounts_for_every_held_unit() {
        let check = SteadyCheck {
            skus: 2,
            units_per_sku: 100,
            held_units: 50,
            reserved: 3,
            acknowledged_units: 50,
            ambiguous_checkouts: 0,
            oversold_units: 0,
        };
        assert!(check.passed());
        // An acknowledged unit the engine does not hold is a lost sale.
        assert!(!SteadyCheck { held_units: 49, ..check }.passed());
        // Units without a 201 are explained only by checkouts that got no clear answer.
        assert!(!SteadyCheck { held_units: 52, ambiguous_checkouts: 1, ..check }.passed());
        assert!(SteadyCheck { held_units: 52, ambiguous_checkouts: 2, ..check }.passed());
        assert!(!SteadyCheck { oversold_units: 1, ..check }.passed());
    }

    // ----- the schedule -----

    #[test]
    fn the_schedule_holds_every_request_due_before_the_end() {
        for (duration, rate, expected) in [
            (Duration::from_secs(1), 1_000, 1_000),
            (Duration::from_secs(1), 3, 3),
            (Duration::from_millis(1_500), 3, 5),
            (Duration::from_millis(1), 1, 1),
            (Duration::from_secs(10), 150_000, 1_500_000),
            (DURATION_MAX, RATE_PER_SEC_MAX, 36_000_000_000),
        ] {
            let count = scheduled_count(duration, rate);
            assert_eq!(count, expected, "{duration:?} at {rate}/s");
            assert!(intended_offset(count - 1, rate) < duration, "{duration:?} at {rate}/s");
            assert!(intended_offset(count, rate) >= duration, "{duration:?} at {rate}/s");
        }
    }

    #[test]
    fn intended_times_are_exact_and_do_not_drift() {
        assert_eq!(intended_offset(0, 3), Duration::ZERO);
        assert_eq!(intended_offset(1, 3), Duration::from_nanos(333_333_333));
        assert_eq!(intended_offset(2, 3), Duration::from_nanos(666_666_666));
        assert_eq!(intended_offset(3, 3), Duration::from_secs(1));
        // Far into a long run at a rate that does not divide a second, still exact.
        assert_eq!(intended_offset(7 * 3_600_000_000, 7_000_000), Duration::from_secs(3_600));
        assert_eq!(intended_offset(1, 150_000), Duration::from_nanos(6_666));
        assert_eq!(intended_offset(150_000, 150_000), Duration::from_secs(1));
    }

    #[test]
    fn a_connection_sleeps_only_until_just_before_a_request_is_due() {
        let now = Instant::now();
        let due = now + Duration::from_millis(10);
        assert_eq!(wake_time(due, now), Some(due - SEND_EARLY_MAX));
        assert_eq!(wake_time(now + SEND_EARLY_MAX, now), None);
        assert_eq!(wake_time(now + SEND_EARLY_MAX / 2, now), None);
        assert_eq!(wake_time(now, now + Duration::from_millis(5)), None);
    }

    #[test]
    fn latency_is_charged_from_the_intended_time() {
        let intended = Instant::now();
        let ms = Duration::from_millis;
        // Waited 30 ms for a connection, answered 2 ms after the send: 32 ms.
        assert_eq!(charged_latency(Some(intended), intended + ms(30), intended + ms(32)), ms(32));
        // Sent 1 ms early: counted from the send, never less than the exchange took.
        let sent = intended - ms(1);
        assert_eq!(charged_latency(Some(intended), sent, intended + ms(1)), ms(2));
        // The closed loop has no intended time.
        assert_eq!(charged_latency(None, intended, intended + ms(3)), ms(3));
    }

    #[test]
    fn late_sends_are_told_apart_by_cause() {
        let intended = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(lateness(intended, intended - ms(5), intended), None);
        assert_eq!(lateness(intended, intended - ms(5), intended + LATE_AFTER), None);
        assert_eq!(
            lateness(intended, intended + ms(20), intended + ms(20)),
            Some(Late::NoFreeConnection)
        );
        assert_eq!(
            lateness(intended, intended - ms(5), intended + ms(3)),
            Some(Late::GeneratorBehind)
        );
    }

    fn test_load(pacing: Pacing) -> Load {
        let started = Instant::now();
        Load {
            address: "127.0.0.1:9".parse().unwrap(),
            requests: Requests::new(Scenario::Noop, "127.0.0.1:9", None).unwrap(),
            pacing,
            started,
            deadline: started + DURATION_MAX,
            next_index: Cell::new(0),
            stop: Cell::new(false),
            stopped: Notify::new(),
            protocol_error_printed: Cell::new(false),
            tally: RefCell::new(Tally::new()),
        }
    }

    #[test]
    fn the_open_loop_hands_out_each_due_request_once_then_stops() {
        let load = test_load(Pacing::Open { rate_per_sec: 4, scheduled: 3 });
        let slots: Vec<Slot> = std::iter::from_fn(|| load.claim()).collect();
        let indices: Vec<u64> = slots.iter().map(|slot| slot.index).collect();
        assert_eq!(indices, [0, 1, 2]);
        let offsets: Vec<Duration> =
            slots.iter().map(|slot| slot.intended.unwrap() - load.started).collect();
        assert_eq!(
            offsets,
            [Duration::ZERO, Duration::from_millis(250), Duration::from_millis(500)]
        );
        assert!(load.claim().is_none());
    }

    #[test]
    fn requests_due_but_never_sent_are_unsent() {
        let pacing = Pacing::Open { rate_per_sec: 100, scheduled: 1_000 };
        assert_eq!(unsent(pacing, 600), Some(400));
        assert_eq!(unsent(pacing, 1_000), Some(0));
        assert_eq!(unsent(Pacing::Closed, 600), None);
    }

    #[test]
    fn the_closed_loop_runs_until_stopped() {
        let load = test_load(Pacing::Closed);
        for expected in 0..1_000 {
            let slot = load.claim().unwrap();
            assert_eq!((slot.index, slot.intended), (expected, None));
        }
        load.stop.set(true);
        assert!(load.claim().is_none());
    }

    #[test]
    fn late_requests_are_counted_and_charged_their_wait() {
        let load = test_load(Pacing::Open { rate_per_sec: 1_000, scheduled: 10 });
        let ms = Duration::from_millis;
        let planned = Planned { operation: Operation::Healthz, buyer: 0, units: 0, hot_units: 0 };
        let ok = Ok(Head { status: 200, head_bytes: 20, body_bytes: 3, close: false });
        let response = ResponseBuffer::new();
        // Request 0 on time; request 1 claimed 40 ms after it was due (no free connection).
        let on_time = load.claim().unwrap();
        let intended = on_time.intended.unwrap();
        load.record(on_time, intended, intended + ms(2), planned, &ok, &response);
        let mut late = load.claim().unwrap();
        let intended = late.intended.unwrap();
        late.claimed = intended + ms(40);
        load.record(late, intended + ms(40), intended + ms(42), planned, &ok, &response);
        let tally = load.tally.borrow();
        assert_eq!(
            (tally.sent, tally.late_no_free_connection, tally.late_generator_behind),
            (2, 1, 0)
        );
        let stats = tally.operations[2].as_ref().unwrap();
        assert_eq!(stats.count, 2);
        // The late request's 42 ms include the 40 it waited.
        assert!(stats.latency_us.max() >= 42_000, "{}", stats.latency_us.max());
    }

    // ----- the lean client's parsing -----

    /// Feeds `bytes` to a fresh buffer `piece` bytes at a time, checking that the answer is
    /// complete exactly with its last byte.
    fn read_in_pieces(bytes: &[u8], piece: usize) -> Result<(Head, Vec<u8>), WireError> {
        let mut buffer = ResponseBuffer::new();
        let mut offset = 0;
        while offset < bytes.len() {
            let spare = buffer.spare();
            let count = piece.min(spare.len()).min(bytes.len() - offset);
            spare[..count].copy_from_slice(&bytes[offset..offset + count]);
            offset += count;
            if let Some(head) = buffer.advance(count)? {
                assert_eq!(offset, bytes.len(), "complete before its last byte");
                return Ok((head, buffer.body().to_vec()));
            }
        }
        panic!("still incomplete after every byte");
    }

    const HEALTHZ: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n\
content-length: 3\r\ndate: Sun, 22 Nov 2026 08:00:00 GMT\r\n\r\nok\n";

    #[test]
    fn an_answer_reads_the_same_in_one_piece_or_split_anywhere() {
        for piece in [1, 2, 3, 7, 64, HEALTHZ.len()] {
            let (head, body) = read_in_pieces(HEALTHZ, piece).unwrap();
            assert_eq!(head.status, 200, "pieces of {piece}");
            assert_eq!(head.total_bytes(), HEALTHZ.len());
            assert!(!head.close);
            assert_eq!(body, b"ok\n");
        }
    }

    #[test]
    fn a_body_larger_than_one_read_grows_the_buffer() {
        let body = vec![b'x'; 3 * READ_CHUNK_BYTES + 17];
        let mut bytes =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(&body);
        for piece in [1_000, READ_CHUNK_BYTES, usize::MAX] {
            let (head, read) = read_in_pieces(&bytes, piece).unwrap();
            assert_eq!((head.body_bytes, read.len()), (body.len(), body.len()));
        }
    }

    #[test]
    fn a_problem_body_gives_its_code() {
        let problem =
            br#"{"type":"about:blank","title":"Conflict","status":409,"code":"out_of_stock"}"#;
        let mut bytes =
            format!("HTTP/1.1 409 Conflict\r\nContent-Length: {}\r\n\r\n", problem.len())
                .into_bytes();
        bytes.extend_from_slice(problem);
        let (head, body) = read_in_pieces(&bytes, 5).unwrap();
        assert_eq!(problem_code(head.status, &body), "out_of_stock");
        assert_eq!(problem_code(502, b"bad gateway"), "http_502");
    }

    #[test]
    fn answers_the_client_cannot_delimit_are_refused_by_name() {
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\n";
        assert_eq!(read_in_pieces(chunked, 4).unwrap_err(), WireError::TransferEncoding(200));
        let unbounded = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n";
        assert_eq!(read_in_pieces(unbounded, 4).unwrap_err(), WireError::NoContentLength(200));
        let conflicting = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nok\n";
        assert_eq!(read_in_pieces(conflicting, 100).unwrap_err(), WireError::ContentLength);
        let signed = b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nok\n";
        assert_eq!(read_in_pieces(signed, 100).unwrap_err(), WireError::ContentLength);
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert_eq!(read_in_pieces(interim, 100).unwrap_err(), WireError::Interim(100));
        let no_colon = b"HTTP/1.1 200 OK\r\nContent-Length 3\r\n\r\nok\n";
        assert_eq!(read_in_pieces(no_colon, 100).unwrap_err(), WireError::HeaderLine);
    }

    #[test]
    fn garbage_is_refused_before_its_end_arrives() {
        let mut buffer = ResponseBuffer::new();
        buffer.spare()[..4].copy_from_slice(b"SSH-");
        assert_eq!(buffer.advance(4).unwrap_err(), WireError::StatusLine);
        assert_eq!(parse_head(b"HTTP/2 200\r\n\r\n").unwrap_err(), WireError::StatusLine);
        assert_eq!(parse_head(b"HTTP/1.1 2x0 OK\r\n\r\n").unwrap_err(), WireError::StatusLine);
        assert_eq!(parse_head(b"HTTP/1.1 2000 OK\r\n\r\n").unwrap_err(), WireError::StatusLine);
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nX: y\r\n").unwrap(), Parsed::Partial);
    }

    #[test]
    fn a_head_that_never_ends_is_refused() {
        let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
        while bytes.len() <= RESPONSE_HEAD_BYTES_MAX {
            bytes.extend_from_slice(b"X-Padding: 0123456789abcdef\r\n");
        }
        assert_eq!(parse_head(&bytes).unwrap_err(), WireError::HeadTooLarge);
        let huge =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", RESPONSE_BODY_BYTES_MAX + 1);
        assert_eq!(parse_head(huge.as_bytes()).unwrap_err(), WireError::BodyTooLarge);
    }

    #[test]
    fn bytes_after_the_answer_are_refused() {
        let mut bytes = HEALTHZ.to_vec();
        bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let mut buffer = ResponseBuffer::new();
        buffer.spare()[..bytes.len()].copy_from_slice(&bytes);
        assert_eq!(buffer.advance(bytes.len()).unwrap_err(), WireError::TrailingBytes);
    }

    #[test]
    fn connection_close_and_bodiless_statuses_are_understood() {
        let (head, body) =
            read_in_pieces(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", 3).unwrap();
        assert_eq!((head.status, head.body_bytes, head.close), (204, 0, true));
        assert!(body.is_empty());
        let (head, _) =
            read_in_pieces(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 100).unwrap();
        assert!(head.close, "HTTP/1.0 closes unless it says keep-alive");
        let keep = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok";
        assert!(!read_in_pieces(keep, 100).unwrap().0.close);
    }

    // ----- requests as bytes -----

    fn test_sale(scenario: Scenario) -> Sale {
        Sale {
            tag: "0badcafe".to_owned(),
            seller_token: "seller".to_owned(),
            buyer_tokens: vec!["buyer-a.sig".to_owned(), "buyer-b.sig".to_owned()],
            hot_sku: scenario.has_hot_sku().then(|| "lt-0badcafe-hot".to_owned()),
            other_skus: vec!["lt-0badcafe-000".to_owned(), "lt-0badcafe-001".to_owned()],
            other_sku_units: STEADY_SKU_UNITS,
            product_ids: vec!["p1".to_owned(), "p2".to_owned()],
        }
    }

    /// Splits a request written by [`Requests::write`] into its request line, headers and body,
    /// checking that `Content-Length` matches.
    fn split_request(request: &[u8]) -> (String, BTreeMap<String, String>, Vec<u8>) {
        let text = std::str::from_utf8(request).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap().to_owned();
        let headers: BTreeMap<String, String> = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").unwrap();
                (name.to_ascii_lowercase(), value.to_owned())
            })
            .collect();
        let length: usize = headers.get("content-length").map_or(0, |n| n.parse().unwrap());
        assert_eq!(length, body.len(), "Content-Length of {text}");
        (request_line, headers, body.as_bytes().to_vec())
    }

    #[test]
    fn steady_writes_one_unit_checkouts_with_a_key_per_request() {
        let sale = test_sale(Scenario::Steady);
        let requests = Requests::new(Scenario::Steady, "127.0.0.1:8080", Some(&sale)).unwrap();
        let mut random = Random::new(7);
        let (mut request, mut body) = (Vec::new(), Vec::new());
        let mut keys = std::collections::BTreeSet::new();
        for index in [0, 1, 2, 1_000_000_007] {
            let planned = requests.write(&mut random, index, &mut request, &mut body);
            assert_eq!(
                (planned.operation, planned.units, planned.hot_units),
                (Operation::Checkout, 1, 0)
            );
            let (line, headers, body) = split_request(&request);
            assert_eq!(line, "POST /v1/checkout HTTP/1.1");
            assert_eq!(headers["host"], "127.0.0.1:8080");
            assert_eq!(headers["content-type"], "application/json");
            assert_eq!(
                headers["authorization"],
                format!("Bearer {}", sale.buyer_tokens[planned.buyer])
            );
            assert_eq!(headers["idempotency-key"], format!("lt-0badcafe-{index}"));
            assert!(keys.insert(headers["idempotency-key"].clone()));
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["payment"], json!({"token": "tok_ok"}));
            assert_eq!(body["shipping"]["postal_code"], "10115");
            let items = body["items"].as_array().unwrap();
            assert_eq!(items.len(), 1);
            assert!(sale.other_skus.iter().any(|sku| items[0]["sku"] == sku.as_str()));
            assert_eq!(items[0]["quantity"], 1);
        }
    }

    #[test]
    fn black_friday_writes_valid_requests_of_every_kind() {
        let sale = test_sale(Scenario::BlackFriday);
        let requests = Requests::new(Scenario::BlackFriday, "h:1", Some(&sale)).unwrap();
        let mut random = Random::new(11);
        let (mut request, mut body) = (Vec::new(), Vec::new());
        let mut seen = BTreeMap::new();
        for index in 0..2_000 {
            let planned = requests.write(&mut random, index, &mut request, &mut body);
            *seen.entry(planned.operation.name()).or_insert(0) += 1;
            let (line, headers, body) = split_request(&request);
            assert!(headers["authorization"].starts_with("Bearer buyer-"));
            match planned.operation {
                Operation::Browse => assert!(line.starts_with("GET /v1/products/p")),
                Operation::Orders => assert_eq!(line, "GET /v1/orders HTTP/1.1"),
                Operation::Checkout => {
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    let items = body["items"].as_array().unwrap();
                    assert!((1..=3).contains(&items.len()));
                    let hot: u64 = items
                        .iter()
                        .filter(|item| item["sku"] == "lt-0badcafe-hot")
                        .map(|item| item["quantity"].as_u64().unwrap())
                        .sum();
                    assert_eq!(planned.hot_units, hot);
                }
                Operation::Healthz => panic!("black-friday never checks health"),
            }
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }

    #[test]
    fn noop_writes_health_checks_and_needs_no_sale() {
        let requests = Requests::new(Scenario::Noop, "127.0.0.1:8080", None).unwrap();
        let (mut request, mut body) = (Vec::new(), Vec::new());
        let planned = requests.write(&mut Random::new(1), 5, &mut request, &mut body);
        assert_eq!(planned.operation, Operation::Healthz);
        assert_eq!(request, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n");
        assert!(Requests::new(Scenario::Steady, "h:1", None).is_err());
    }

    #[test]
    fn words_that_would_need_escaping_are_refused() {
        let mut sale = test_sale(Scenario::Steady);
        sale.buyer_tokens.push("a\"b".to_owned());
        assert!(Requests::new(Scenario::Steady, "h:1", Some(&sale)).is_err());
    }

    #[test]
    fn decimals_are_written_plainly() {
        for number in [0, 7, 10, 1_234_567_890, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, number);
            assert_eq!(out, format!("x{number}").into_bytes());
        }
    }

    #[test]
    fn the_export_is_one_key_and_value_per_line() {
        let text = export_text("http://127.0.0.1:8080", &test_sale(Scenario::FlashSale));
        let lines: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "target http://127.0.0.1:8080",
                "tag 0badcafe",
                "hot_sku lt-0badcafe-hot",
                "sku lt-0badcafe-000",
                "sku lt-0badcafe-001",
                "buyer buyer-a.sig",
                "buyer buyer-b.sig",
            ]
        );
    }
}
