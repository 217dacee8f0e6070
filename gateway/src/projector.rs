//! The projector: the journal follower's outputs into everything derived from the journal.
//!
//! ```text
//!  Outputs (follower) ─▶ surge-projector thread
//!                          ├─▶ checkout keys (memory): every keyed Reserve settles its key
//!                          ├─▶ search feeder: stock availability changes
//!                          ├─▶ SQLite, one transaction per group of outputs: orders (with their
//!                          │   history and payment), order_skus, checkout_answers, emptied carts,
//!                          │   and the watermark (surge_orders_svc::project)
//!                          └─▶ after the commit: payment work (charges, refunds) to the driver
//! ```
//!
//! It is the only writer of those tables. A failed write is retried with the same outputs (the
//! projection is idempotent by sequence), never skipped; until it succeeds, readers that wait for
//! the projection see no progress. [`Projected`] tells readers how far the rows have followed the
//! journal, so an order read can show every change the engine made before the request.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use surge_engine::{Command, Event, Sequence};
use surge_orders_svc::sqlite::{read_watermark, SqliteStore};
use surge_orders_svc::{project, Answer, CheckoutRecord, Skipped, Work};
use surge_pipeline::{Handle, Output, Outputs};
use tokio::sync::{mpsc, watch};

use crate::catalog::Registry;
use crate::db::Db;
use crate::error::ApiError;
use crate::keys::{self, CheckoutKeys};
use crate::search::StockUpdate;

/// Outputs written in one transaction at most. Each holds up to 4,096 commands.
const OUTPUTS_PER_WRITE_MAX: usize = 64;

/// How long a read waits for the projection before answering from the rows as they are.
pub const CATCH_UP_MAX: Duration = Duration::from_secs(2);

/// Writes start at most this often under load: a transaction rewrites every index page it touches
/// (to the WAL, and again at the checkpoint), so fewer, larger transactions write each hot page
/// once for many orders. Idle, the first output after a pause is written at once.
const WRITE_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// Pause before retrying a failed write.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// The sequence through which the projection's rows are written.
pub async fn watermark(db: &Db) -> Result<Sequence, ApiError> {
    db.read(|connection| Ok(read_watermark(connection)?)).await
}

/// How far the rows have followed the journal in this process.
#[derive(Clone, Debug)]
pub struct Projected(watch::Receiver<Sequence>);

impl Projected {
    /// The sequence through which the rows are written now.
    pub fn through(&self) -> Sequence {
        *self.0.borrow()
    }

    /// Waits until the rows hold every command through `target`, at most [`CATCH_UP_MAX`];
    /// `false` when they did not get there in time (the projector is stuck or far behind: the
    /// caller answers from the rows it has).
    pub async fn reach(&self, target: Sequence) -> bool {
        let mut receiver = self.0.clone();
        let reached = tokio::time::timeout(CATCH_UP_MAX, receiver.wait_for(|seen| *seen >= target))
            .await
            .is_ok_and(|seen| seen.is_ok());
        if !reached {
            tracing::warn!(target = target.0, "order rows behind the journal; answering from them");
        }
        reached
    }

    /// Waits, without a bound, until the rows hold every command through `target` (start-up).
    pub async fn wait_for(&self, target: Sequence) -> bool {
        let mut receiver = self.0.clone();
        let reached = receiver.wait_for(|seen| *seen >= target).await.is_ok();
        reached
    }

    /// [`Projected::reach`] for the engine's state as of now: every change a caller could have
    /// learned of before this call.
    pub async fn caught_up(&self, engine: &Handle) -> Result<bool, ApiError> {
        let target = crate::last_sequence(engine).await?;
        Ok(self.reach(target).await)
    }
}

/// Where the projector's side effects go.
#[derive(Debug)]
pub struct Sinks {
    pub keys: Arc<CheckoutKeys>,
    pub stock: Sender<Vec<StockUpdate>>,
    pub work: mpsc::UnboundedSender<Work>,
    /// Work from commands at or before this sequence is not sent: those were journaled before
    /// this start, and start-up drives what is still due from the rows instead.
    pub live_after: Sequence,
}

/// Starts the projector on a thread of its own; it runs until the outputs end (the pipeline
/// stopped). `recovered` is the watermark the rows had at start.
pub fn spawn(
    db: Db,
    outputs: Outputs,
    runtime: tokio::runtime::Handle,
    registry: Arc<Registry>,
    sinks: Sinks,
    recovered: Sequence,
) -> (JoinHandle<()>, Projected) {
    let (progress, projected) = watch::channel(recovered);
    let thread = std::thread::Builder::new()
        .name("surge-projector".to_owned())
        .spawn(move || {
            let projector = Projector { db, outputs, runtime, registry, sinks, progress };
            projector.run();
        })
        .expect("spawn the projector");
    (thread, Projected(projected))
}

struct Projector {
    db: Db,
    outputs: Outputs,
    runtime: tokio::runtime::Handle,
    registry: Arc<Registry>,
    sinks: Sinks,
    progress: watch::Sender<Sequence>,
}

impl Projector {
    fn run(self) {
        let mut last_write = std::time::Instant::now() - WRITE_INTERVAL_MIN;
        loop {
            let first = match self.outputs.recv_timeout(Duration::from_secs(1)) {
                Ok(output) => output,
                Err(false) => continue,
                // The pipeline stopped and every output was written.
                Err(true) => return,
            };
            // Everything that queued up while the last write ran, and until the interval since it
            // is over, goes into one transaction.
            let mut batch = vec![first];
            let due = last_write + WRITE_INTERVAL_MIN;
            let mut ended = false;
            while batch.len() < OUTPUTS_PER_WRITE_MAX {
                let wait = due.saturating_duration_since(std::time::Instant::now());
                let next = if wait.is_zero() {
                    self.outputs.try_recv().ok_or(false)
                } else {
                    self.outputs.recv_timeout(wait)
                };
                match next {
                    Ok(output) => batch.push(output),
                    Err(end) => {
                        ended = end;
                        break;
                    }
                }
            }
            last_write = std::time::Instant::now();
            for output in &batch {
                self.settle_keys(output);
                self.forward_stock(output);
            }
            let batch = Arc::new(batch);
            let (work, skipped) = self.write(&batch);
            for skipped in skipped {
                tracing::warn!(sequence = skipped.sequence.0, reason = %skipped.reason, "a reservation's checkout record could not be read; no order row for it");
            }
            let through = batch.last().map_or(Sequence(0), Output::through);
            self.progress.send_replace(through);
            if through > self.sinks.live_after {
                for item in work {
                    // A stopped driver (shutdown) is no error of the projector.
                    let _ = self.sinks.work.send(item);
                }
            }
            if let Ok(batch) = Arc::try_unwrap(batch) {
                for output in batch {
                    self.outputs.recycle(output);
                }
            }
            if ended {
                return;
            }
        }
    }

    /// Writes the outputs, retrying until it succeeds; returns the work and the skipped records.
    fn write(&self, batch: &Arc<Vec<Output>>) -> (Vec<Work>, Vec<Skipped>) {
        loop {
            let outputs = Arc::clone(batch);
            let registry = Arc::clone(&self.registry);
            let written = self.runtime.block_on(self.db.write_rebuildable(move |tx| {
                let mut store = SqliteStore::new(tx);
                let (mut work, mut skipped) = (Vec::new(), Vec::new());
                let name = |id| registry.warehouse_name(id);
                for output in outputs.iter() {
                    project(&mut store, output, &name, &mut work, &mut skipped)?;
                }
                store.flush()?;
                Ok((work, skipped))
            }));
            match written {
                Ok(result) => return result,
                Err(error) => {
                    tracing::error!(%error, "writing the order projection failed; retrying");
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        }
    }

    /// Every keyed reservation settles its key, whether or not its request is still there.
    fn settle_keys(&self, output: &Output) {
        for applied in output.commands() {
            let Command::Reserve { buyer, .. } = applied.command else { continue };
            let Some(bytes) = output.attachment_of(applied) else { continue };
            let Ok((key, request_hash)) = CheckoutRecord::decode_key(bytes) else { continue };
            let Ok(buyer) = i64::try_from(buyer.0) else { continue };
            let key = keys::key_id(buyer, &key);
            if Answer::is_kept(&applied.outcome) {
                self.sinks.keys.journaled(key, request_hash, applied.sequence, applied.at.0);
            } else {
                self.sinks.keys.release_in_flight(key);
            }
        }
    }

    fn forward_stock(&self, output: &Output) {
        let updates: Vec<StockUpdate> = output
            .events()
            .iter()
            .filter_map(|(sequence, event)| match *event {
                Event::StockAvailability { sku, warehouse, in_stock } => {
                    Some(StockUpdate { sequence: *sequence, sku, warehouse, in_stock })
                }
                _ => None,
            })
            .collect();
        if !updates.is_empty() {
            // A stopped feeder is not an error of the projector.
            let _ = self.sinks.stock.send(updates);
        }
    }
}
