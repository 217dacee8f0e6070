//! Keeps the order store in step with the engine.
//!
//! Every order transition the engine announces (expiry above all, which no request causes) is
//! recorded in `order_transitions`, together with how far the store got (`meta`,
//! `engine_events_applied`). At start the pipeline is asked to regenerate the events of every
//! command after that point, so a crash between the engine applying a command and the store
//! recording it loses nothing. Recording is idempotent: the handler that submitted a command may
//! have recorded the same transition already.

use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use rusqlite::{params, OptionalExtension};
use surge_engine::pipeline::EventBatch;
use surge_engine::{Event, Sequence};

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
/// transaction.
pub async fn record(
    db: &Db,
    events: Vec<(Sequence, Event)>,
    through: Sequence,
) -> Result<(), ApiError> {
    let at = crate::now_rfc3339();
    db.write(move |tx| {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO order_transitions (order_id, status, at, seq) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (sequence, event) in &events {
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

/// Records every batch from the pipeline, on a thread of its own, until the pipeline stops.
/// `on_batch` sees every batch first (the search feeder's stock hook, [`crate::search::forward_stock`]);
/// it is dropped when the pipeline stops.
pub fn spawn(
    db: Db,
    batches: Receiver<EventBatch>,
    runtime: tokio::runtime::Handle,
    mut on_batch: impl FnMut(&EventBatch) + Send + 'static,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("surge-order-events".to_owned())
        .spawn(move || {
            while let Ok(batch) = batches.recv() {
                on_batch(&batch);
                let through = batch.last_sequence;
                if let Err(error) = runtime.block_on(record(&db, batch.events, through)) {
                    // The transitions stay in the journal; the next start replays them.
                    tracing::error!(%error, "recording order events failed");
                }
            }
        })
        .expect("spawn the order event recorder")
}
