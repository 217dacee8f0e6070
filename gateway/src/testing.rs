//! A whole gateway in a temporary directory, driven without a socket: for handler tests.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use surge_engine::Limits;
use surge_journal::MemStorage;
use surge_pipeline::{DurableError, Pipeline, PipelineConfig, Restored, SystemClock};
use tower::ServiceExt as _;

use crate::auth::Tokens;
use crate::startup::{Paths, Running};
use crate::{app, AppState, Config, Services};

/// The payment webhook secret of every test app.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

/// The admin token of every test app.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running gateway with an in-memory journal and a SQLite file in a temporary directory, wired
/// by [`crate::startup::start`] exactly as `surge serve` wires it.
#[derive(Debug)]
pub struct TestApp {
    pub router: Router,
    pub state: Arc<AppState>,
    pub running: Option<Running>,
    /// The journal, shared with the pipeline, so a test can restart on it; empty and unused by an
    /// app whose journal is on disk ([`TestApp::start_on_disk`]).
    pub journal: MemStorage,
    pub dir: tempfile::TempDir,
}

/// A gateway that did not start, and the directory it was to start in, for another try.
#[derive(Debug)]
pub struct NotStarted {
    pub error: anyhow::Error,
    pub dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts a gateway with `config` (rate limits off unless the config sets them).
    pub async fn start(config: Config) -> TestApp {
        let dir = tempfile::tempdir().expect("temporary directory");
        TestApp::start_in(config, dir, MemStorage::new()).await
    }

    /// Starts a gateway on an existing directory and journal: a restart after [`TestApp::stop`]
    /// or a crash.
    pub async fn start_in(config: Config, dir: tempfile::TempDir, journal: MemStorage) -> TestApp {
        let pipeline_journal = journal.clone();
        let restore = move |limits| {
            Pipeline::restore_storages(
                limits,
                pipeline_journal,
                MemStorage::new(),
                SystemClock,
                Arc::new(|error| panic!("journal failed in a test: {error}")),
            )
        };
        TestApp::launch(config, dir, journal, TestApp::pipeline_config(), restore)
            .await
            .map_err(|not_started| not_started.error)
            .expect("the gateway starts")
    }

    /// Starts a gateway whose journal, snapshots and archive are files in `dir`, opened as
    /// `surge serve` opens them (`Pipeline::open_dir`, journal retention included), with
    /// `pipeline_config`: for what lives on disk across restarts. A start that refuses hands the
    /// directory back.
    pub async fn start_on_disk(
        config: Config,
        dir: tempfile::TempDir,
        pipeline_config: PipelineConfig,
    ) -> Result<TestApp, NotStarted> {
        let data_dir = dir.path().to_owned();
        let restore = move |limits| Pipeline::restore_dir(&data_dir, limits);
        TestApp::launch(config, dir, MemStorage::new(), pipeline_config, restore).await
    }

    /// The pipeline of a test app: small limits, a snapshot only at shutdown, a quick expiry tick.
    pub fn pipeline_config() -> PipelineConfig {
        PipelineConfig {
            limits: Limits {
                orders_max: 1 << 14,
                buyer_counters_max: 1 << 14,
                ..Limits::PRODUCTION
            },
            snapshot_every: 0,
            tick_interval: Duration::from_millis(10),
            ..PipelineConfig::default()
        }
    }

    async fn launch<F>(
        config: Config,
        dir: tempfile::TempDir,
        journal: MemStorage,
        pipeline_config: PipelineConfig,
        restore: F,
    ) -> Result<TestApp, NotStarted>
    where
        F: FnOnce(Limits) -> Result<Restored, DurableError> + Send + 'static,
    {
        let tokens =
            Tokens::load(dir.path(), Some(ADMIN_TOKEN.to_owned()), Duration::from_secs(3600))
                .expect("tokens");
        let config = Config { webhook_secret: WEBHOOK_SECRET.to_owned(), ..config };
        let paths =
            Paths { database: dir.path().join("surge.db"), search_dir: dir.path().to_owned() };
        let state = Arc::new(AppState::default());
        let running =
            match crate::startup::start(&state, config, tokens, paths, pipeline_config, restore)
                .await
            {
                Ok(running) => running,
                Err(error) => return Err(NotStarted { error, dir }),
            };
        state.set_ready(Arc::clone(&running.services));
        Ok(TestApp { router: app(Arc::clone(&state)), state, running: Some(running), journal, dir })
    }

    /// Stops the gateway cleanly and hands back its directory and journal for a restart.
    pub async fn stop(mut self) -> (tempfile::TempDir, MemStorage) {
        if let Some(running) = self.running.take() {
            tokio::task::spawn_blocking(move || running.stop()).await.expect("stops");
        }
        let dir =
            std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temporary directory"));
        (dir, self.journal.clone())
    }

    /// The services of the running gateway.
    pub fn services(&self) -> &Services {
        self.state.services().expect("the test app is ready")
    }

    /// A config with rate limiting off, a short reservation window and a quick sandbox
    /// that keeps its ledger.
    pub fn config() -> Config {
        Config {
            rate_per_second: 0,
            rate_burst: 0,
            sign_in_per_minute_per_address: 0,
            sign_in_per_minute_per_email: 0,
            reads_per_second_per_address: 0,
            reservation_ttl: Duration::from_secs(60),
            payment_latency: Duration::from_millis(5),
            payment_ledger: true,
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
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}
