//! The service tables in SQLite: users, catalog, carts, and the projection of the journal (orders,
//! payments, checkout answers).
//!
//! Writes go through one writer thread that runs many callers' closures in one transaction and
//! commits once (group commit, like the journal): with `synchronous = FULL` every acknowledged write
//! is durable, and the fsync is shared by everything that arrived meanwhile. Each closure runs in
//! its own savepoint, so one caller's error rolls back only its own changes. Reads use a small pool
//! of read-only connections on the blocking thread pool; WAL mode lets them run beside the writer.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, Transaction};
use tokio::sync::oneshot;

use crate::error::ApiError;

/// The schema, applied once per version. Append new versions; never edit an applied one.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('buyer', 'seller', 'admin')),
    password_hash TEXT,
    postal_code TEXT,
    address TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    seller_id INTEGER NOT NULL REFERENCES users(id),
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL,
    brand TEXT NOT NULL,
    attributes TEXT NOT NULL,
    images TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX products_category ON products(category) WHERE deleted = 0;
-- A SKU's rowid is its dense engine id: assigned once, never reused, so the journal stays valid.
CREATE TABLE skus (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    product_id INTEGER NOT NULL REFERENCES products(id),
    price_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    attributes TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX skus_product ON skus(product_id);
-- A warehouse's rowid is its dense engine id; `name` is the id of the API path.
CREATE TABLE warehouses (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    postal_code TEXT NOT NULL,
    serves TEXT NOT NULL
);
CREATE TABLE carts (
    user_id INTEGER NOT NULL,
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    added_at TEXT NOT NULL,
    PRIMARY KEY (user_id, sku)
);
-- An order's id is the engine sequence of its reservation.
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    buyer_id INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    lines TEXT NOT NULL,
    shipping TEXT NOT NULL,
    payment_token TEXT NOT NULL
);
CREATE INDEX orders_buyer ON orders(buyer_id, id);
-- Every status an order went through. Engine transitions carry the engine sequence (`seq`);
-- gateway-only ones (refunded) do not. Written by whoever learns of the change, in any order.
CREATE TABLE order_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    at TEXT NOT NULL,
    seq INTEGER
);
CREATE INDEX order_transitions_order ON order_transitions(order_id, id);
CREATE UNIQUE INDEX order_transitions_seq ON order_transitions(order_id, seq) WHERE seq IS NOT NULL;
CREATE TABLE order_skus (
    order_id INTEGER NOT NULL,
    sku TEXT NOT NULL,
    seller_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX order_skus_seller ON order_skus(seller_id, order_id);
CREATE TABLE idempotency (
    user_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER,
    response TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE TABLE payments (
    order_id INTEGER PRIMARY KEY,
    token TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY,
    received_at TEXT NOT NULL
);
",
    // Retention sweeps (`retention.rs`) delete by age.
    r"
CREATE INDEX idempotency_created ON idempotency(created_at);
CREATE INDEX webhook_events_received ON webhook_events(received_at);
",
    r#"
-- The catalog's outbox: one row per product change, written in the change's own transaction, read
-- by the search feeder after the offset its index stored. Products that predate the table are
-- announced once as created, so an existing catalog gets indexed.
CREATE TABLE catalog_events (
    "offset" INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('created', 'updated', 'deleted', 'stock')),
    at TEXT NOT NULL
);
INSERT INTO catalog_events (product_id, kind, at)
    SELECT id, 'created', created_at FROM products WHERE deleted = 0 ORDER BY id;
"#,
    // The journal becomes the one record of a checkout: these tables are its projection
    // (surge_orders_svc::project), written by one writer, the projector. An order is one row:
    // its status, its history and its payment's status live in it, so projecting a paid order
    // costs two row writes (and the indexes of `orders`, `order_skus` and `checkout_answers`).
    r"
ALTER TABLE orders ADD COLUMN status TEXT NOT NULL DEFAULT 'pending_payment';
ALTER TABLE orders ADD COLUMN history TEXT NOT NULL DEFAULT '[]';
ALTER TABLE orders ADD COLUMN payment TEXT NOT NULL DEFAULT 'pending';
-- Orders from before: their status as the transition rows said, their history, their payment.
UPDATE orders SET
    status = COALESCE(
        (SELECT 'refunded' FROM order_transitions t WHERE t.order_id = orders.id AND t.status = 'refunded' LIMIT 1),
        (SELECT t.status FROM order_transitions t WHERE t.order_id = orders.id AND t.seq IS NOT NULL
         ORDER BY t.seq DESC LIMIT 1),
        'pending_payment'),
    history = COALESCE(
        (SELECT json_group_array(json_object('status', status, 'at', at)) FROM
            (SELECT status, at FROM order_transitions t WHERE t.order_id = orders.id
             ORDER BY t.seq IS NULL, t.seq, t.id)),
        '[]'),
    payment = COALESCE(
        (SELECT CASE p.status WHEN 'refunded' THEN 'refund_due' ELSE p.status END
         FROM payments p WHERE p.order_id = orders.id),
        'pending');
-- Refunds the payment driver has sent (a refund due and not here is sent again at start).
CREATE TABLE refunds_sent (order_id INTEGER PRIMARY KEY, at TEXT NOT NULL);
INSERT INTO refunds_sent (order_id, at) SELECT order_id, updated_at FROM payments WHERE status = 'refunded';
DROP TABLE order_transitions;
DROP TABLE payments;
CREATE INDEX orders_pending ON orders(id) WHERE status = 'pending_payment';
CREATE INDEX orders_refund_due ON orders(id) WHERE payment = 'refund_due';
-- Answers of checkouts under their idempotency keys, by the sequence of the reservation. `at` is
-- the engine's stamp in nanoseconds; rows go after 24 h (retention.rs), oldest first.
CREATE TABLE checkout_answers (
    seq INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    outcome TEXT NOT NULL,
    order_id INTEGER,
    skus TEXT,
    at INTEGER NOT NULL
);
CREATE UNIQUE INDEX checkout_answers_key ON checkout_answers(user_id, key);
DROP TABLE idempotency;
-- Webhook events need no table of seen ids: a repeated one is a command the engine refuses.
DROP TABLE webhook_events;
-- Every change of a cart moves its version; a checkout claims the version it read.
CREATE TABLE cart_versions (user_id INTEGER PRIMARY KEY, version INTEGER NOT NULL);
-- The projection starts where the order event recorder stopped.
INSERT INTO meta (key, value) SELECT 'orders_projected', value FROM meta WHERE key = 'engine_events_applied';
DELETE FROM meta WHERE key = 'engine_events_applied';
",
    // 5: live products per category, kept by triggers, so `GET /v1/categories` reads one row per
    // category instead of counting every product on every call.
    r"
CREATE TABLE category_counts (category TEXT PRIMARY KEY, products INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO category_counts (category, products)
    SELECT category, COUNT(*) FROM products WHERE deleted = 0 GROUP BY category;
CREATE TRIGGER category_counts_insert AFTER INSERT ON products WHEN NEW.deleted = 0
BEGIN
    INSERT INTO category_counts (category, products) VALUES (NEW.category, 1)
        ON CONFLICT (category) DO UPDATE SET products = products + 1;
END;
CREATE TRIGGER category_counts_update AFTER UPDATE OF category, deleted ON products
BEGIN
    UPDATE category_counts SET products = products - 1
        WHERE OLD.deleted = 0 AND category = OLD.category;
    INSERT INTO category_counts (category, products)
        SELECT NEW.category, 1 WHERE NEW.deleted = 0
        ON CONFLICT (category) DO UPDATE SET products = products + 1;
    DELETE FROM category_counts WHERE products <= 0;
END;
CREATE TRIGGER category_counts_delete AFTER DELETE ON products WHEN OLD.deleted = 0
BEGIN
    UPDATE category_counts SET products = products - 1 WHERE category = OLD.category;
    DELETE FROM category_counts WHERE products <= 0;
END;
",
];

/// A caller's write: runs inside the batch's transaction and returns how to answer the caller, which
/// the writer calls only after the transaction committed; and whether it must survive a crash.
struct WriteJob {
    run: RunJob,
    durability: Durability,
}

/// The body of a [`WriteJob`].
type RunJob = Box<dyn FnOnce(&Transaction<'_>, Isolation) -> Finished + Send>;

/// How a job is kept apart from the others of its transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isolation {
    /// In a savepoint of a transaction shared with other jobs: an error rolls back its changes.
    Savepoint,
    /// In a transaction of its own, rolled back whole on error: no savepoint, so SQLite keeps no
    /// sub-journal copy of every page the job changes (the projection changes many).
    Alone,
}

/// A job that ran: whether it succeeded, and how to answer its caller after the commit.
struct Finished {
    ok: bool,
    answer: Box<dyn FnOnce() + Send>,
}

/// Whether a write must be on disk when it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Synced before the caller learns it committed (`synchronous = FULL`): service data whose
    /// only copy this is (users, catalog, carts).
    Synced,
    /// Committed in order but synced later (`synchronous = NORMAL`: with the next synced write or
    /// checkpoint): rows rebuilt from the journal after a crash, which may lose the last of them
    /// and takes the watermark back with them (the projection). Such a job also runs in a
    /// transaction of its own ([`Isolation::Alone`]): it is one large job, not many small ones.
    Rebuildable,
}

/// The service database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    writes: std::sync::mpsc::SyncSender<WriteJob>,
    reads: crossbeam_channel::Sender<ReadJob>,
}

/// A caller's read, run on a reader thread.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

/// Writes waiting for the writer thread; a full queue applies back-pressure to callers.
const WRITE_QUEUE_MAX: usize = 16_384;
/// The most callers' writes committed in one transaction.
const WRITE_BATCH_MAX: usize = 1_024;
/// The writer's page cache, in KiB.
const CACHE_KIB: i64 = 32 * 1024;
/// WAL pages (4 KiB) between automatic checkpoints.
const WAL_CHECKPOINT_PAGES: i64 = 16_384;
/// Reader threads; reads are short indexed lookups, and the machines have few cores.
const READERS: usize = 2;

impl Db {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        let mut writer = Connection::open(path)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer.pragma_update(None, "foreign_keys", "ON")?;
        // The projection writes every order's rows behind the checkouts; with SQLite's 2 MB
        // default cache the growing order indexes miss it and are read back from the file on
        // every transaction. Checkpoints every 64 MB of WAL instead of 4 MB copy a hot page once
        // rather than once per few transactions.
        writer.pragma_update(None, "cache_size", -CACHE_KIB)?;
        writer.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        writer.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut writer)?;
        let (reads, read_jobs) = crossbeam_channel::unbounded::<ReadJob>();
        for index in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(std::time::Duration::from_secs(5))?;
            let jobs = read_jobs.clone();
            std::thread::Builder::new().name(format!("surge-db-reader-{index}")).spawn(
                move || {
                    while let Ok(job) = jobs.recv() {
                        job(&reader);
                    }
                },
            )?;
        }
        let (writes, jobs) = std::sync::mpsc::sync_channel::<WriteJob>(WRITE_QUEUE_MAX);
        std::thread::Builder::new()
            .name("surge-db-writer".to_owned())
            .spawn(move || write_loop(writer, &jobs))?;
        Ok(Db { writes, reads })
    }

    /// Runs `write` in the writer's next transaction and returns its result once committed.
    /// An `Err` from `write` rolls back only this caller's changes.
    pub async fn write<R, F>(&self, write: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, ApiError> + Send + 'static,
    {
        self.submit(write, |_| {}, Durability::Synced).await
    }

    /// [`Db::write`] for rows that are rebuilt from the journal after a crash: committed in
    /// order, synced with the next synced write or checkpoint ([`Durability::Rebuildable`]).
    pub async fn write_rebuildable<R, F>(&self, write: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, ApiError> + Send + 'static,
    {
        self.submit(write, |_| {}, Durability::Rebuildable).await
    }

    /// Like [`Db::write`], and runs `committed` on the result of a successful `write` on the writer
    /// thread right after the commit, in commit order. In-memory views of a table (the catalog
    /// registry) update there: from a handler, two racing writes could apply in the wrong order.
    /// `committed` must be quick; every later transaction waits for it.
    pub async fn write_then<R, F, C>(&self, write: F, committed: C) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, ApiError> + Send + 'static,
        C: FnOnce(&R) + Send + 'static,
    {
        self.submit(write, committed, Durability::Synced).await
    }

    async fn submit<R, F, C>(
        &self,
        write: F,
        committed: C,
        durability: Durability,
    ) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, ApiError> + Send + 'static,
        C: FnOnce(&R) + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let run: RunJob = Box::new(move |transaction, isolation| {
            let result = match isolation {
                Isolation::Savepoint => run_in_savepoint(transaction, write),
                Isolation::Alone => write(transaction),
            };
            let ok = result.is_ok();
            let answer: Box<dyn FnOnce() + Send> = Box::new(move || {
                if let Ok(value) = &result {
                    committed(value);
                }
                let _ = reply.send(result);
            });
            Finished { ok, answer }
        });
        let job = WriteJob { run, durability };
        match self.writes.try_send(job) {
            Ok(()) => {}
            // The queue is full: wait for room off the async workers (back-pressure, rare).
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                let writes = self.writes.clone();
                tokio::task::spawn_blocking(move || writes.send(job))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(|_| ApiError::internal("database writer stopped"))?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(ApiError::internal("database writer stopped"));
            }
        }
        answer.await.map_err(|_| ApiError::internal("database write was not committed"))?
    }

    /// Runs `read` on one of the reader threads, each owning a read-only connection. A fixed set
    /// of threads fed by a queue: neither the async workers block on SQLite nor does every read
    /// start or wake a thread of the blocking pool.
    pub async fn read<R, F>(&self, read: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, ApiError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |connection| {
            let _ = reply.send(read(connection));
        });
        self.reads.send(job).map_err(|_| ApiError::internal("database readers stopped"))?;
        answer.await.map_err(|_| ApiError::internal("database read was dropped"))?
    }
}

fn run_in_savepoint<R>(
    transaction: &Transaction<'_>,
    write: impl FnOnce(&Transaction<'_>) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    transaction.execute_batch("SAVEPOINT job")?;
    match write(transaction) {
        Ok(value) => {
            transaction.execute_batch("RELEASE job")?;
            Ok(value)
        }
        Err(error) => {
            transaction.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(error)
        }
    }
}

/// Runs batches of jobs and answers their callers after the commit: consecutive synced jobs in one
/// transaction (group commit, each in its savepoint, synced at commit), every rebuildable job in a
/// transaction of its own (not synced at commit). A failed commit stops the process, like a failed
/// journal fsync: nothing unsaved is acknowledged.
fn write_loop(mut connection: Connection, jobs: &std::sync::mpsc::Receiver<WriteJob>) {
    let mut synced = true;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut batch = batch.into_iter().peekable();
        while let Some(job) = batch.next() {
            let sync = job.durability == Durability::Synced;
            if sync != synced {
                let mode = if sync { "FULL" } else { "NORMAL" };
                if let Err(error) = connection.pragma_update(None, "synchronous", mode) {
                    fatal(&error);
                }
                synced = sync;
            }
            let transaction = match connection.transaction() {
                Ok(transaction) => transaction,
                Err(error) => fatal(&error),
            };
            let mut answers = Vec::new();
            if sync {
                answers.push((job.run)(&transaction, Isolation::Savepoint).answer);
                while let Some(next) = batch.next_if(|next| next.durability == Durability::Synced) {
                    answers.push((next.run)(&transaction, Isolation::Savepoint).answer);
                }
                if let Err(error) = transaction.commit() {
                    fatal(&error);
                }
            } else {
                let finished = (job.run)(&transaction, Isolation::Alone);
                let ended = if finished.ok { transaction.commit() } else { transaction.rollback() };
                if let Err(error) = ended {
                    fatal(&error);
                }
                answers.push(finished.answer);
            }
            for answer in answers {
                answer();
            }
        }
    }
}

fn fatal(error: &rusqlite::Error) -> ! {
    tracing::error!(%error, "database commit failed; stopping so no unsaved write is acknowledged");
    std::process::abort();
}

fn migrate(connection: &mut Connection) -> rusqlite::Result<()> {
    let version: usize =
        connection.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))? as usize;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", (index + 1) as i64)?;
        transaction.commit()?;
    }
    Ok(())
}
