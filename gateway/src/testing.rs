//! A whole gateway in a temporary directory, driven without a socket: for handler tests.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use surge_engine::{Limits, Sequence};
use surge_journal::MemStorage;
use surge_pipeline::{Pipeline, PipelineConfig, SystemClock};
use tower::ServiceExt as _;

use crate::auth::{RateLimiter, Tokens};
use crate::catalog::Registry;
use crate::db::Db;
use crate::{app, AppState, Config, Services};

/// The payment webhook secret of every test app.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

/// The admin token of every test app.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running gateway with an in-memory journal and a SQLite file in a temporary directory.
#[derive(Debug)]
pub struct TestApp {
    pub router: Router,
    pub state: Arc<AppState>,
    pub pipeline: Option<Pipeline>,
    pub dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts a gateway with `config` (rate limits off unless the config sets them).
    pub async fn start(config: Config) -> TestApp {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pipeline_config = PipelineConfig {
            limits: Limits {
                orders_max: 1 << 14,
                buyer_counters_max: 1 << 14,
                ..Limits::PRODUCTION
            },
            snapshot_every: 0,
            tick_interval: Duration::from_millis(10),
            publish_events: true,
            ..PipelineConfig::default()
        };
        let (mut pipeline, _) = Pipeline::start(
            pipeline_config,
            MemStorage::new(),
            MemStorage::new(),
            SystemClock,
            Arc::new(|error| panic!("journal failed in a test: {error}")),
        )
        .expect("pipeline starts");
        let db = Db::open(&dir.path().join("surge.db")).expect("database opens");
        let events = pipeline.take_events().expect("events");
        let (stock, stock_updates) = crate::search::stock_channel();
        let runtime = tokio::runtime::Handle::current();
        let on_batch = crate::search::forward_stock(stock);
        let (_, recorded) =
            crate::order_events::spawn(db.clone(), events, runtime, Sequence(0), on_batch);
        let catalog = Registry::load(&db).await.expect("registry loads");
        let search = crate::search::Search::open(dir.path()).expect("search index opens");
        let db_path = dir.path().join("surge.db");
        let engine = pipeline.handle();
        crate::search::start_feeder(&search, &db, &db_path, &engine, stock_updates)
            .await
            .expect("search feeder starts");
        let tokens =
            Tokens::load(dir.path(), Some(ADMIN_TOKEN.to_owned()), Duration::from_secs(3600))
                .expect("tokens");
        let config = Config { webhook_secret: WEBHOOK_SECRET.to_owned(), ..config };
        let services = Services {
            rate_limiter: RateLimiter::new(config.rate_per_second, config.rate_burst),
            config,
            db,
            engine: pipeline.handle(),
            tokens,
            catalog,
            checkout: crate::checkout::InFlight::default(),
            payments: Arc::new(crate::payments::Sandbox {
                secret: WEBHOOK_SECRET.to_owned(),
                latency: Duration::from_millis(5),
            }),
            search,
            recorded,
        };
        let state = Arc::new(AppState::default());
        state.set_ready(Arc::new(services));
        TestApp { router: app(Arc::clone(&state)), state, pipeline: Some(pipeline), dir }
    }

    /// A config with rate limiting off and a short reservation window.
    pub fn config() -> Config {
        Config {
            rate_per_second: 0,
            rate_burst: 0,
            reservation_ttl: Duration::from_secs(60),
            ..Config::default()
        }
    }

    /// Sends a request; `body` is sent as JSON when given. Returns the status and the JSON body
    /// (`Value::Null` when the body is empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("request builds");
        self.send(request).await
    }

    /// Sends a prepared request.
    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.expect("router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Creates a user through the API and returns (user id, token). Uses the admin token route,
    /// which skips password hashing.
    pub async fn user(&self, role: &str) -> (String, String) {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/admin/tokens",
                Some(ADMIN_TOKEN),
                Some(serde_json::json!({"count": 1, "role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let user = &body["users"][0];
        (user["user_id"].as_str().unwrap().to_owned(), user["token"].as_str().unwrap().to_owned())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.shutdown();
        }
    }
}
