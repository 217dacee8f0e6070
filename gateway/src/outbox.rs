//! The catalog's event outbox in SQLite (`catalog_events`): the durable event bus of
//! `surge_catalog_svc::events` until Kafka (P5).
//!
//! Every product write appends its event in the same transaction as the change ([`publish`]), so
//! an event exists exactly when its change committed: no change is lost between the catalog and
//! the bus, and none is announced that rolled back. Consumers read after their own stored offset
//! ([`SqliteOutbox`]). Rows are kept; a consumer that starts from zero (a rebuilt index) replays
//! the history, which is harmless because events carry ids, not data.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, Transaction};
use surge_catalog_svc::{CatalogEvent, EventError, EventKind, EventSource};

use crate::error::ApiError;

/// Appends "product `product_id` changed" to the outbox, inside the caller's transaction.
pub fn publish(
    transaction: &Transaction<'_>,
    product_id: i64,
    kind: EventKind,
) -> Result<(), ApiError> {
    transaction
        .prepare_cached("INSERT INTO catalog_events (product_id, kind, at) VALUES (?1, ?2, ?3)")?
        .execute(params![product_id, kind.as_str(), crate::now_rfc3339()])?;
    Ok(())
}

/// Reads the outbox through a read-only connection of its own.
#[derive(Debug)]
pub struct SqliteOutbox {
    connection: Connection,
}

impl SqliteOutbox {
    /// Opens the database at `path` (created and migrated by [`crate::db::Db::open`]) read-only.
    pub fn open(path: &Path) -> rusqlite::Result<SqliteOutbox> {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(SqliteOutbox { connection })
    }
}

impl EventSource for SqliteOutbox {
    fn read_after(&self, offset: u64, limit: usize) -> Result<Vec<CatalogEvent>, EventError> {
        let store = |error: rusqlite::Error| EventError(error.to_string());
        let mut statement = self
            .connection
            .prepare_cached(
                r#"SELECT "offset", product_id, kind FROM catalog_events
                   WHERE "offset" > ?1 ORDER BY "offset" LIMIT ?2"#,
            )
            .map_err(store)?;
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(params![offset, limit], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?))
            })
            .map_err(store)?;
        let mut events = Vec::new();
        for row in rows {
            let (offset, product_id, kind) = row.map_err(store)?;
            events.push(CatalogEvent {
                offset: u64::try_from(offset).map_err(|e| EventError(e.to_string()))?,
                product_id: u64::try_from(product_id).map_err(|e| EventError(e.to_string()))?,
                kind: EventKind::parse(&kind)
                    .ok_or_else(|| EventError(format!("unknown event kind {kind:?}")))?,
            });
        }
        Ok(events)
    }
}
