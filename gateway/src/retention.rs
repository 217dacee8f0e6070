//! Forgetting what is only kept for a while: the checkout answers stored under idempotency keys
//! (API.md: "kept at least 24 h").
//!
//! A sweeper task deletes the answers older than [`IDEMPOTENCY_RETENTION`] every
//! [`SWEEP_INTERVAL`], oldest first, in chunks of [`CHUNK_ROWS`] rows per transaction so a large
//! backlog never holds the single SQLite writer for long. Rows are keyed by the sequence of their
//! reservation, whose stamps only grow, so the oldest rows are the lowest keys and a sweep looks
//! at no more rows than it deletes (plus one chunk).
//!
//! The in-memory key index drops its entries after the same retention ([`crate::keys`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::params;

use crate::db::Db;
use crate::error::ApiError;

/// How long an idempotency record replays its answer: API.md promises at least 24 h.
pub const IDEMPOTENCY_RETENTION: Duration = crate::keys::KEY_RETENTION;
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);
const CHUNK_ROWS: usize = 5_000;

/// Rows deleted by one sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub checkout_answers: usize,
}

/// Deletes the answers that were older than their retention at `now`.
pub async fn sweep(db: &Db, now: SystemTime) -> Result<Swept, ApiError> {
    let cutoff = cutoff_ns(now, IDEMPOTENCY_RETENTION);
    let mut total = 0;
    loop {
        let deleted = db
            .write(move |tx| {
                Ok(tx.execute(
                    "DELETE FROM checkout_answers WHERE seq IN (
                         SELECT seq FROM (SELECT seq, at FROM checkout_answers ORDER BY seq LIMIT ?2)
                         WHERE at < ?1)",
                    params![cutoff, CHUNK_ROWS],
                )?)
            })
            .await?;
        total += deleted;
        if deleted < CHUNK_ROWS {
            return Ok(Swept { checkout_answers: total });
        }
    }
}

/// The engine time (ns since the epoch) `retention` before `now`: rows stamped before it go.
fn cutoff_ns(now: SystemTime, retention: Duration) -> i64 {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default().saturating_sub(retention);
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
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

    /// Answers with sequences in stamp order, as the journal writes them.
    async fn insert(db: &Db, rows: Vec<(String, i64)>) {
        db.write(move |tx| {
            let mut insert = tx.prepare(
                "INSERT INTO checkout_answers (seq, user_id, key, request_hash, outcome, at)
                 VALUES (?1, 1, ?2, x'00', 'out_of_stock', ?3)",
            )?;
            for (index, (key, at)) in rows.into_iter().enumerate() {
                insert.execute(params![index as i64 + 1, key, at])?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    async fn keys(db: &Db) -> Vec<String> {
        db.read(|connection| {
            let mut statement =
                connection.prepare("SELECT key FROM checkout_answers ORDER BY key")?;
            let keys = statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
            Ok(keys)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn answers_go_after_their_retention_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("surge.db")).unwrap();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        insert(
            &db,
            vec![
                ("week-plus".to_owned(), cutoff_ns(now, 8 * 24 * hour)),
                ("day-plus".to_owned(), cutoff_ns(now, 24 * hour + Duration::from_secs(1))),
                ("day-minus".to_owned(), cutoff_ns(now, 24 * hour - Duration::from_secs(1))),
                ("fresh".to_owned(), cutoff_ns(now, hour)),
            ],
        )
        .await;
        assert_eq!(sweep(&db, now).await.unwrap(), Swept { checkout_answers: 2 });
        assert_eq!(keys(&db).await, ["day-minus", "fresh"]);
        assert_eq!(sweep(&db, now).await.unwrap(), Swept::default(), "nothing left to sweep");
    }

    #[tokio::test]
    async fn a_backlog_larger_than_a_chunk_is_swept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("surge.db")).unwrap();
        let now = SystemTime::now();
        let old = cutoff_ns(now, Duration::from_secs(30 * 24 * 3600));
        let rows = CHUNK_ROWS * 2 + 7;
        insert(&db, (0..rows).map(|index| (format!("k{index}"), old)).collect()).await;
        assert_eq!(sweep(&db, now).await.unwrap().checkout_answers, rows);
        assert!(keys(&db).await.is_empty());
    }
}
