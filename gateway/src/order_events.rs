//! Keeps the order store in step with the engine.
//!
//! Every order transition the engine announces (expiry above all, which no request causes) is
//! recorded in `order_transitions`, together with how far the store got (`meta`,
//! `engine_events_applied`). At start the pipeline is asked to regenerate the events of every
//! command after that point, so a crash between the engine applying a command and the store
//! recording it loses nothing. Recording is idempotent: the handler that submitted a command may
//! have recorded the same transition already.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rusqlite::{params, OptionalExtension};
use surge_engine::{Event, Sequence};
use surge_pipeline::EventBatch;
use surge_pipeline::Handle;
use tokio::sync::watch;

use crate::db::Db;
use crate::error::ApiError;
use crate::orders::state_name;

const WATERMARK_KEY: &str = "engine_events_applied";

/// The sequence up to which the store has recorded the engine's events.
pub async fn watermark(db: &Db) -> Result<Sequence, ApiError> {
    db.read(|connection| {
        let value: Option<String> = connection
            .query_row("SELECT value FROM meta WHERE key = ?1", [WATERMARK_KEY], |row| row.get(0))
            .optional()?;
        Ok(Sequence(value.and_then(|value| value.parse().ok()).unwrap_or(0)))
    })
    .await
}

/// Records the order transitions among `events` and moves the watermark to `through`, in one
/// transaction. (Shared, so that the recorder keeps them for a retry without a copy.)
pub async fn record(
    db: &Db,
    events: Arc<Vec<(Sequence, Event)>>,
    through: Sequence,
) -> Result<(), ApiError> {
    let at = crate::now_rfc3339();
    db.write(move |tx| {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO order_transitions (order_id, status, at, seq) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (sequence, event) in events.iter() {
            if let Event::OrderTransitioned { order, state, .. } = event {
                let order = i64::try_from(order.0).map_err(ApiError::internal)?;
                let sequence = i64::try_from(sequence.0).map_err(ApiError::internal)?;
                insert.execute(params![order, state_name(*state), at, sequence])?;
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value
             WHERE CAST(excluded.value AS INTEGER) > CAST(meta.value AS INTEGER)",
            params![WATERMARK_KEY, through.0.to_string()],
        )?;
        Ok(())
    })
    .await
}

/// How far the order store has followed the engine in this process: every engine transition up to
/// this sequence is in `order_transitions`. Readers of orders wait on it ([`Recorded::caught_up`]) so
/// that an answer shows every change the engine made before the request, the expiry of a
/// reservation included, although the rows are written behind the engine.
#[derive(Clone, Debug)]
pub struct Recorded(watch::Receiver<Sequence>);

/// How stale the stored watermark may get while batches bring no transitions.
const WATERMARK_EVERY: Duration = Duration::from_secs(1);

/// Engine batches the recorder writes in one transaction at most.
const BATCHES_PER_WRITE_MAX: usize = 1024;

/// How long a read waits for the recorder before answering from the rows as they are.
pub const CATCH_UP_MAX: Duration = Duration::from_secs(2);

impl Recorded {
    /// Waits until the store holds every transition of the engine up to the moment of the call.
    /// Answers `false` when the recorder did not get there within [`CATCH_UP_MAX`] (it is stuck or
    /// far behind; the caller answers from the rows it has, which may lag).
    pub async fn caught_up(&self, engine: &Handle) -> Result<bool, ApiError> {
        // A query runs on the engine thread behind every command submitted before it, so this is
        // the sequence of the last change the caller could have learned about.
        let target = crate::query(engine, surge_engine::Engine::last_sequence).await?;
        let mut recorded = self.0.clone();
        let reached = tokio::time::timeout(CATCH_UP_MAX, recorded.wait_for(|seen| *seen >= target))
            .await
            .is_ok_and(|seen| seen.is_ok());
        if !reached {
            // The recorder stopped (shutdown) or is too slow: answer with what the rows say.
            tracing::warn!(target = target.0, "order store behind the engine; answering from it");
        }
        Ok(reached)
    }
}

/// Records every batch from the pipeline, on a thread of its own, until the pipeline stops.
/// `on_batch` sees every batch first (the search feeder's stock hook, [`crate::search::forward_stock`]);
/// it is dropped when the pipeline stops. `recovered` is the sequence the store has already
/// recorded through (start-up recovery wrote the missed events before this).
pub fn spawn(
    db: Db,
    batches: Receiver<EventBatch>,
    runtime: tokio::runtime::Handle,
    recovered: Sequence,
    mut on_batch: impl FnMut(&EventBatch) + Send + 'static,
) -> (JoinHandle<()>, Recorded) {
    let (progress, recorded) = watch::channel(recovered);
    let thread = std::thread::Builder::new()
        .name("surge-order-events".to_owned())
        .spawn(move || {
            // Rows and the stored watermark are written through `stored`; the engine has handed
            // on everything through `seen`; transitions not yet written wait in `pending` (kept
            // across a failed write, so nothing is ever skipped).
            let mut stored = recovered;
            let mut seen = recovered;
            let mut pending: Vec<(Sequence, Event)> = Vec::new();
            let mut last_write = Instant::now();
            loop {
                let first = match batches.recv_timeout(WATERMARK_EVERY) {
                    Ok(batch) => Some(batch),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        // Shutdown: leave the watermark at the end, where the final snapshot is.
                        if seen > stored || !pending.is_empty() {
                            let events = Arc::new(std::mem::take(&mut pending));
                            if let Err(error) = runtime.block_on(record(&db, events, seen)) {
                                tracing::error!(%error, "recording order events failed at shutdown");
                            }
                        }
                        return;
                    }
                };
                // Everything that queued up while the last write ran goes into one transaction:
                // one SQLite write per engine batch falls behind under load (the engine hands on
                // a batch per fsync), and readers would wait for that lag.
                let mut next = first;
                let mut taken = 0;
                while let Some(batch) = next {
                    on_batch(&batch);
                    seen = batch.last_sequence;
                    // Only transitions become rows; stock events go to search through `on_batch`.
                    pending.extend(
                        batch
                            .events
                            .into_iter()
                            .filter(|(_, e)| matches!(e, Event::OrderTransitioned { .. })),
                    );
                    taken += 1;
                    next =
                        if taken < BATCHES_PER_WRITE_MAX { batches.try_recv().ok() } else { None };
                }
                // Without transitions to write, the rows are already current through `seen`.
                // The stored watermark (how far back the next start replays) then only needs
                // moving now and then: at most every `WATERMARK_EVERY`, and when idle.
                if pending.is_empty() {
                    progress.send_replace(seen);
                    if seen <= stored || last_write.elapsed() < WATERMARK_EVERY {
                        continue;
                    }
                }
                let events = Arc::new(std::mem::take(&mut pending));
                last_write = Instant::now();
                match runtime.block_on(record(&db, Arc::clone(&events), seen)) {
                    Ok(()) => {
                        stored = seen;
                        progress.send_replace(seen);
                    }
                    Err(error) => {
                        // Retried with the next batch; until then readers see no progress.
                        tracing::error!(%error, "recording order events failed");
                        pending = Arc::try_unwrap(events).unwrap_or_else(|shared| (*shared).clone());
                    }
                }
            }
        })
        .expect("spawn the order event recorder");
    (thread, Recorded(recorded))
}

#[cfg(test)]
mod tests {
    use surge_engine::{Command, SkuId, WarehouseId};
    use surge_journal::MemStorage;
    use surge_pipeline::{Pipeline, PipelineConfig, SystemClock};

    use super::*;

    fn pipeline() -> Pipeline {
        let (pipeline, _) = Pipeline::start(
            PipelineConfig { snapshot_every: 0, ..PipelineConfig::default() },
            MemStorage::new(),
            MemStorage::new(),
            SystemClock,
            Arc::new(|error| panic!("journal failed in a test: {error}")),
        )
        .expect("pipeline starts");
        pipeline
    }

    #[tokio::test]
    async fn a_read_waits_until_the_store_has_followed_the_engine() {
        let pipeline = pipeline();
        let engine = pipeline.handle();
        let command = Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand: 3 };
        let applied = crate::submit(&engine, command).await.expect("applied");
        let (progress, receiver) = watch::channel(Sequence(0));
        let recorded = Recorded(receiver);
        let waiting = {
            let engine = engine.clone();
            tokio::spawn(async move { recorded.caught_up(&engine).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "answered before the store caught up");
        progress.send_replace(Sequence(applied.sequence.0 - 1));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "answered one command short");
        progress.send_replace(applied.sequence);
        assert!(waiting.await.expect("joins").expect("no error"), "caught up");
        pipeline.shutdown();
    }

    #[tokio::test]
    async fn a_stuck_recorder_delays_a_read_only_so_long() {
        let pipeline = pipeline();
        let engine = pipeline.handle();
        let command = Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand: 3 };
        crate::submit(&engine, command).await.expect("applied");
        let (_progress, receiver) = watch::channel(Sequence(0));
        let started = std::time::Instant::now();
        assert!(!Recorded(receiver).caught_up(&engine).await.expect("no error"));
        assert!(started.elapsed() >= CATCH_UP_MAX);
        pipeline.shutdown();
    }
}
