//! Starting and stopping the services: the one wiring `surge serve` and the tests share.
//!
//! ```text
//!  0. the journal, read only: engine restored to the journal's end E (a refusal changes no file)
//!  1. the projection's watermark W (SQLite)
//!  2. the pipeline: its follower restored to W; a torn tail cut; the threads started
//!  3. the projector: outputs W+1.. into the rows; wait until the rows reach E
//!  4. checkout keys of the last 24 h from the rows (so a retry after a crash finds its answer)
//!  5. the search feeder; the payment driver; what the rows still show as due, driven again
//!  6. journal retention: a pass now (in the background), then every 10 minutes
//! ```
//!
//! Only after all of it may the caller mark the gateway ready: before step 4 a retried key could
//! reserve twice, and before step 3 an order read could miss an order the journal holds. Nothing
//! needs releasing at start: a reservation is its order (they are one journal record), so a crash
//! cannot leave one without the other.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use surge_engine::{Limits, Sequence};
use surge_pipeline::{ArchiveReport, Archiver, DurableError, Pipeline, PipelineConfig, Restored};

use crate::auth::{RateLimiter, Tokens};
use crate::catalog::Registry;
use crate::db::Db;
use crate::keys::{self, CheckoutKeys};
use crate::payments::{Driver, PaymentProvider, Sandbox};
use crate::search::Search;
use crate::{projector, AppState, Config, Services};

/// Where a gateway keeps its files.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The SQLite file of the service tables.
    pub database: PathBuf,
    /// The directory holding `search/`.
    pub search_dir: PathBuf,
}

/// The running services and the threads behind them.
#[derive(Debug)]
pub struct Running {
    pub services: Arc<Services>,
    /// The sandbox provider, so tests can see what it was asked to do.
    pub sandbox: Arc<Sandbox>,
    pipeline: Option<Pipeline>,
    threads: Vec<JoinHandle<()>>,
    driver: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
    /// Journal retention, when the pipeline has an archive (`Pipeline::open_dir`), and its task.
    retention: Option<(Archiver, tokio::task::JoinHandle<()>)>,
}

/// Starts everything (see the module documentation). `restore` is the first half of the
/// pipeline's start with the given limits (`Pipeline::restore_dir` for `surge serve`,
/// `Pipeline::restore_storages` in memory for tests); it runs before the database is opened, so a
/// journal it refuses leaves every file as it was.
pub async fn start<F>(
    state: &Arc<AppState>,
    config: Config,
    tokens: Tokens,
    paths: Paths,
    pipeline_config: PipelineConfig,
    restore: F,
) -> anyhow::Result<Running>
where
    F: FnOnce(Limits) -> Result<Restored, DurableError> + Send + 'static,
{
    let limits = pipeline_config.limits;
    let restored =
        tokio::task::spawn_blocking(move || restore(limits)).await?.map_err(anyhow::Error::from)?;
    let db = Db::open(&paths.database)?;
    let watermark = projector::watermark(&db).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let pipeline_config = PipelineConfig { follow_from: Some(watermark), ..pipeline_config };
    let (mut pipeline, report) =
        tokio::task::spawn_blocking(move || restored.start(pipeline_config))
            .await?
            .map_err(anyhow::Error::from)?;
    let end = Sequence(report.next_sequence - 1);
    tracing::info!(
        snapshot_sequence = report.snapshot_sequence,
        replayed = report.replayed,
        journal_end = end.0,
        projected = watermark.0,
        "engine recovered; projecting the journal from the stored watermark"
    );
    let outputs = pipeline.take_outputs().expect("the outputs are taken once");
    let catalog = Arc::new(Registry::load(&db).await.map_err(|e| anyhow::anyhow!("{e}"))?);
    let keys = Arc::new(CheckoutKeys::new(config.checkout_keys_max));
    let (stock, stock_updates) = crate::search::stock_channel();
    let (work, work_queue) = tokio::sync::mpsc::unbounded_channel();
    let redo = work.clone();
    let sinks = projector::Sinks { keys: Arc::clone(&keys), stock, work, live_after: end };
    let runtime = tokio::runtime::Handle::current();
    let (projector_thread, projected) =
        projector::spawn(db.clone(), outputs, runtime, Arc::clone(&catalog), sinks, watermark);
    let started = std::time::Instant::now();
    projected.wait_for(end).await;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "order rows caught up with the journal"
    );
    let loaded = load_keys(&db, &keys).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(keys = loaded, "checkout keys of the last 24 h loaded");

    let search = Search::open(&paths.search_dir)?;
    let engine = pipeline.handle();
    let feeder =
        crate::search::start_feeder(&search, &db, &paths.database, &engine, stock_updates).await?;
    let sandbox = Arc::new(Sandbox::new(config.payment_latency, config.payment_ledger));
    let provider: Arc<dyn PaymentProvider> = Arc::clone(&sandbox) as Arc<dyn PaymentProvider>;
    let due = crate::payments::due_work(&db).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if !due.is_empty() {
        tracing::info!(items = due.len(), "driving payment work still due");
    }
    // What the rows show as due goes first into the queue the projector feeds; doing an item
    // twice is harmless (the provider is keyed by the order).
    for item in due {
        let _ = redo.send(item);
    }
    drop(redo);
    let driver = Driver::new(state, Arc::clone(&provider), db.clone()).spawn(work_queue);
    let sweeper = crate::retention::spawn_sweeper(db.clone());
    let retention = pipeline.archiver().map(|archiver| {
        let task = crate::journal_retention::spawn(db.clone(), archiver.clone());
        (archiver, task)
    });
    let services = Services {
        rate_limiter: RateLimiter::new(config.rate_per_second, config.rate_burst),
        sign_in_by_address: RateLimiter::per_minute(
            config.sign_in_per_minute_per_address,
            config.sign_in_burst_per_address,
        ),
        sign_in_by_email: RateLimiter::per_minute(
            config.sign_in_per_minute_per_email,
            config.sign_in_burst_per_email,
        ),
        passwords: crate::auth::Passwords::for_this_machine(),
        reads_by_address: RateLimiter::new(
            config.reads_per_second_per_address,
            config.reads_burst_per_address,
        ),
        searches: crate::search::bound_for_this_machine(),
        config,
        db,
        engine,
        tokens,
        catalog,
        keys,
        payments: provider,
        search,
        projected,
    };
    Ok(Running {
        services: Arc::new(services),
        sandbox,
        pipeline: Some(pipeline),
        threads: vec![projector_thread, feeder],
        driver,
        sweeper,
        retention,
    })
}

/// Fills the key index with the stored answers of the last [`keys::KEY_RETENTION`], oldest first.
async fn load_keys(db: &Db, keys: &Arc<CheckoutKeys>) -> Result<usize, crate::error::ApiError> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(keys::KEY_RETENTION);
    let since = i64::try_from(since.as_nanos()).unwrap_or(i64::MAX);
    let keys = Arc::clone(keys);
    db.read(move |connection| {
        let mut statement = connection.prepare(
            "SELECT user_id, key, request_hash, seq, at FROM checkout_answers
             WHERE at >= ?1 ORDER BY seq",
        )?;
        let mut rows = statement.query([since])?;
        let mut loaded = 0;
        while let Some(row) = rows.next()? {
            let buyer: i64 = row.get(0)?;
            let key: String = row.get(1)?;
            let hash: Vec<u8> = row.get(2)?;
            let Ok(hash) = hash.try_into() else { continue };
            let sequence = Sequence(row.get::<_, i64>(3)?.unsigned_abs());
            let at = row.get::<_, i64>(4)?.unsigned_abs();
            keys.journaled(keys::key_id(buyer, &key), hash, sequence, at);
            loaded += 1;
        }
        Ok(loaded)
    })
    .await
}

impl Running {
    /// Runs a pass of journal retention now, beside the periodic ones; `None` when the pipeline has
    /// no archive (an in-memory journal).
    pub async fn archive_now(&self) -> Option<anyhow::Result<ArchiveReport>> {
        let (archiver, _) = self.retention.as_ref()?;
        Some(crate::journal_retention::pass(&self.services.db, archiver).await)
    }

    /// Stops accepting work, lets the pipeline finish what is queued (a final snapshot), waits for
    /// the projector to write the last outputs and the feeder to commit. Blocks: call it where a
    /// thread may block (`spawn_blocking`).
    pub fn stop(mut self) {
        self.sweeper.abort();
        // A pass already on the blocking pool finishes beside the shutdown, which is safe: it
        // never moves the segment the writer appends to.
        if let Some((_, task)) = self.retention.take() {
            task.abort();
        }
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.shutdown();
        }
        // The projector ends with the outputs; its end drops the stock sender, which ends the
        // feeder, and the work sender, which ends the driver.
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a service thread panicked");
            }
        }
        drop(self.driver);
    }
}
