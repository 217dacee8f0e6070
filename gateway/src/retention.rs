//! Forgetting what is only kept for a while: idempotency records (API.md: "kept at least 24 h")
//! and the ids of processed payment webhooks (kept so a provider's redelivery is answered without
//! being applied twice; providers retry for up to a few days).
//!
//! A sweeper task deletes rows older than their retention every [`SWEEP_INTERVAL`], in chunks of
//! [`CHUNK_ROWS`] rows per transaction so a large backlog never holds the single SQLite writer for
//! long. Times are compared as RFC 3339 text, which orders like the instants it names because every
//! stored time has the same fixed-width UTC form (`time::rfc3339`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::params;

use crate::db::Db;
use crate::error::ApiError;

/// How long an idempotency record replays its answer: API.md promises at least 24 h.
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long a processed webhook's id is remembered.
pub const WEBHOOK_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);
const CHUNK_ROWS: usize = 5_000;

/// Rows deleted by one sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub idempotency: usize,
    pub webhook_events: usize,
}

/// Deletes the rows that were older than their retention at `now`.
pub async fn sweep(db: &Db, now: SystemTime) -> Result<Swept, ApiError> {
    Ok(Swept {
        idempotency: sweep_table(
            db,
            "idempotency",
            "created_at",
            cutoff(now, IDEMPOTENCY_RETENTION),
        )
        .await?,
        webhook_events: sweep_table(
            db,
            "webhook_events",
            "received_at",
            cutoff(now, WEBHOOK_RETENTION),
        )
        .await?,
    })
}

/// The RFC 3339 time `retention` before `now`: rows stamped before it go.
fn cutoff(now: SystemTime, retention: Duration) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default().saturating_sub(retention);
    crate::time::rfc3339(surge_engine::Timestamp(
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX),
    ))
}

async fn sweep_table(
    db: &Db,
    table: &'static str,
    column: &'static str,
    cutoff: String,
) -> Result<usize, ApiError> {
    let mut total = 0;
    loop {
        let cutoff = cutoff.clone();
        let deleted = db
            .write(move |tx| {
                let sql = format!(
                    "DELETE FROM {table} WHERE rowid IN
                     (SELECT rowid FROM {table} WHERE {column} < ?1 LIMIT ?2)"
                );
                Ok(tx.execute(&sql, params![cutoff, CHUNK_ROWS])?)
            })
            .await?;
        total += deleted;
        if deleted < CHUNK_ROWS {
            return Ok(total);
        }
    }
}

/// Sweeps now and then every [`SWEEP_INTERVAL`], for as long as the runtime lives.
pub fn spawn_sweeper(db: Db) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            ticks.tick().await;
            match sweep(&db, SystemTime::now()).await {
                Ok(swept) if swept != Swept::default() => tracing::info!(?swept, "retention sweep"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "retention sweep failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn insert(db: &Db, key: &str, created_at: String) {
        let key = key.to_owned();
        db.write(move |tx| {
            tx.execute(
                "INSERT INTO idempotency (user_id, key, request_hash, status, response, created_at)
                 VALUES (1, ?1, 'h', 201, '{}', ?2)",
                params![key, created_at],
            )?;
            tx.execute(
                "INSERT INTO webhook_events (id, received_at) VALUES (?1, ?2)",
                params![key, created_at],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    }

    async fn keys(db: &Db) -> Vec<String> {
        db.read(|connection| {
            let mut statement = connection.prepare("SELECT key FROM idempotency ORDER BY key")?;
            let keys = statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
            Ok(keys)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn records_go_after_their_retention_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("surge.db")).unwrap();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        insert(&db, "fresh", cutoff(now, hour)).await;
        insert(&db, "day-minus", cutoff(now, 24 * hour - Duration::from_secs(1))).await;
        insert(&db, "day-plus", cutoff(now, 24 * hour + Duration::from_secs(1))).await;
        insert(&db, "week-plus", cutoff(now, 8 * 24 * hour)).await;
        let swept = sweep(&db, now).await.unwrap();
        assert_eq!(swept, Swept { idempotency: 2, webhook_events: 1 });
        assert_eq!(keys(&db).await, ["day-minus", "fresh"]);
        assert_eq!(sweep(&db, now).await.unwrap(), Swept::default(), "nothing left to sweep");
    }

    #[tokio::test]
    async fn a_backlog_larger_than_a_chunk_is_swept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("surge.db")).unwrap();
        let now = SystemTime::now();
        let old = cutoff(now, Duration::from_secs(30 * 24 * 3600));
        let rows = CHUNK_ROWS * 2 + 7;
        db.write(move |tx| {
            let mut insert = tx.prepare(
                "INSERT INTO idempotency (user_id, key, request_hash, status, response, created_at)
                 VALUES (1, ?1, 'h', 201, '{}', ?2)",
            )?;
            for index in 0..rows {
                insert.execute(params![format!("k{index}"), old])?;
            }
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(sweep(&db, now).await.unwrap().idempotency, rows);
        assert!(keys(&db).await.is_empty());
    }
}
