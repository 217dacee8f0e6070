//! Journal retention: the journal segments that no reader needs any more move into `archive/`
//! beside the journal, once soon after start and then every [`RETENTION_INTERVAL`], so the
//! journal directory (and the scan of every start) does not grow for ever.
//!
//! What may go is the pipeline's rule (`surge_pipeline::retention_through`): the records after
//! the second-newest valid snapshot at or before the order projection's watermark stay, so a
//! start can restore from the newest snapshot or the one before it, and the follower can be
//! restored to where the projection stands. The watermark given is the one on disk after a synced
//! write: the projection commits without a sync (`Durability::Rebuildable`), so after a power
//! loss the watermark a start reads may be behind the one this process last wrote, and the
//! journal must still hold what that start's follower reads.
//!
//! Nothing is deleted: operators back up or delete what is in `archive/` (README, "Journal
//! retention"). A start reads `journal/` only; `surge journal verify | inspect | replay` read the
//! archive too.

use std::time::Duration;

use rusqlite::params;
use surge_engine::Sequence;
use surge_orders_svc::sqlite::read_watermark;
use surge_pipeline::{ArchiveReport, Archiver};

use crate::db::Db;
use crate::error::ApiError;

/// How often a pass runs after the first. Segments are 64 MiB and snapshots a million commands
/// apart, so a pass rarely finds anything, and costs two directory listings when it does not.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(600);

/// The `meta` key a pass writes the watermark it saw under; the write is what makes it durable.
const SYNCED_WATERMARK_KEY: &str = "orders_projected_synced";

/// The order projection's watermark, durable: read in a synced write (`synchronous = FULL`, whose
/// commit syncs the write-ahead log, and with it every earlier commit, the projection's included)
/// that records it. Should the recorded value be unchanged, SQLite may write nothing, but then an
/// earlier synced write recorded the same watermark, so it is durable all the same.
///
/// # Errors
/// When the database fails.
pub async fn synced_watermark(db: &Db) -> Result<Sequence, ApiError> {
    db.write(|transaction| {
        let watermark = read_watermark(transaction)?;
        transaction.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![SYNCED_WATERMARK_KEY, watermark.0.to_string()],
        )?;
        Ok(watermark)
    })
    .await
}

/// One pass: the durable watermark, then the pipeline's archiver (on the blocking pool: it
/// renames and syncs directories).
///
/// # Errors
/// When the database or the journal's directories fail; nothing moved is lost either way.
pub async fn pass(db: &Db, archiver: &Archiver) -> anyhow::Result<ArchiveReport> {
    let watermark = synced_watermark(db).await.map_err(|error| anyhow::anyhow!("{error}"))?;
    let archiver = archiver.clone();
    let report = tokio::task::spawn_blocking(move || archiver.archive(Some(watermark))).await??;
    if !report.moved.is_empty() {
        tracing::info!(
            segments = report.moved.len(),
            through = report.through,
            projected = watermark.0,
            "moved journal segments no reader needs into archive/"
        );
    }
    Ok(report)
}

/// Runs a pass now and then every [`RETENTION_INTERVAL`], for as long as the runtime lives or the
/// task is not aborted. A failed pass is logged and retried at the next interval.
pub fn spawn(db: Db, archiver: Archiver) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(RETENTION_INTERVAL);
        loop {
            ticks.tick().await;
            if let Err(error) = pass(&db, &archiver).await {
                tracing::error!(error = format!("{error:#}"), "journal retention failed");
            }
        }
    })
}
