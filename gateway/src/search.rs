//! Search and suggestions (`GET /v1/search`, `GET /v1/suggest`) over the tantivy index of
//! `surge-search-svc`, and the feeder that keeps that index in step with the catalog and the engine.
//!
//! The index is eventually consistent and owned by one writer, the feeder thread ([`start_feeder`]).
//! It follows two streams:
//! - the catalog outbox (`catalog_events`, see [`crate::outbox`]), read after the offset the index
//!   stored with its last commit. An event names a product; the feeder reads the product as it is
//!   now, so a replayed or late event cannot install stale data, and a restart resumes exactly
//!   where the last commit left off;
//! - the engine's `StockAvailability` events, forwarded by the order event recorder
//!   ([`forward_stock`]). The feeder keeps, in memory, the warehouses where each SKU has units
//!   available (initialised from the engine at start), and re-indexes a product whose set changed.
//!
//! It commits when something changed, at most every [`COMMIT_INTERVAL`], so a product created or
//! sold out is searchable well within a second (BENCHMARKS.md, "Search freshness"). Stock is not
//! part of the stored offset; a start therefore refreshes every product's availability once.
//! Handlers only read the index, on the blocking pool.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::{json, Map, Value};
use surge_catalog_svc::{EventError, EventSource};
use surge_engine::{Sequence, SkuId, WarehouseId};
use surge_pipeline::Handle;
use surge_search_svc::{ProductDoc, SearchError, SearchIndex, SearchQuery, Sort};

use crate::auth::{limit_reads, ClientAddress};
use crate::error::ApiError;
use crate::json::Json;
use crate::outbox::SqliteOutbox;
use crate::params::Query;
use crate::{product_id_string, AppState};

/// The routes of search and discovery.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/search", get(search)).route("/v1/suggest", get(suggest))
}

/// The feeder commits at most this often while changes arrive (and at once when idle longer).
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// How often the feeder looks at the outbox when nothing else wakes it.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Outbox events applied per read; more are read at once, without waiting.
const EVENTS_PER_READ: usize = 1_024;
/// Products read from the catalog per statement when every product is rebuilt.
const PRODUCTS_PER_PAGE: i64 = 1_000;
/// The pause after a failed read or write before the feeder tries again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

const SIZE_DEFAULT: usize = 20;
const SIZE_MAX: usize = 100;
/// Results beyond this position are not paged to: deep pages cost the index more than anyone reads.
const OFFSET_MAX: usize = 10_000;
const QUERY_CHARS_MAX: usize = 200;
const ATTRIBUTE_FILTERS_MAX: usize = 16;
const SUGGESTIONS_MAX: usize = 10;

/// The shared search index. Cheap to clone.
#[derive(Clone)]
pub struct Search {
    pub index: Arc<SearchIndex>,
}

impl std::fmt::Debug for Search {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search").finish_non_exhaustive()
    }
}

impl Search {
    /// Opens (creating if needed) the index under `<data_dir>/search/`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Search> {
        let dir = data_dir.join("search");
        std::fs::create_dir_all(&dir)?;
        let index = SearchIndex::open(&dir).map_err(|e| anyhow::anyhow!("open {dir:?}: {e}"))?;
        Ok(Search { index: Arc::new(index) })
    }
}

// ----- Stock availability from the engine -----

/// A cell of stock crossed between "some units available" and "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StockUpdate {
    pub sequence: Sequence,
    pub sku: SkuId,
    pub warehouse: WarehouseId,
    pub in_stock: bool,
}

/// The channel from the projector to the feeder. Unbounded: the projector must never wait on
/// search, and the feeder drains it continuously (updates are a few bytes each).
pub fn stock_channel() -> (Sender<Vec<StockUpdate>>, Receiver<Vec<StockUpdate>>) {
    crossbeam_channel::unbounded()
}

/// The warehouses where each SKU has units available; SKUs without any are absent.
#[derive(Debug, Default)]
pub struct Availability {
    warehouses: HashMap<u32, BTreeSet<u16>>,
}

impl Availability {
    /// Reads every given SKU's cells from `engine` (on its thread, so consistently) and returns
    /// them with the engine sequence they reflect.
    pub fn of_engine(engine: &surge_engine::Engine, skus: &[u32]) -> (Sequence, Availability) {
        let cells = skus.iter().map(|&sku| (SkuId(sku), engine.stock_by_warehouse(SkuId(sku))));
        (engine.last_sequence(), Availability::of_cells(cells))
    }

    /// From each SKU's stock cells.
    pub fn of_cells(
        cells: impl IntoIterator<Item = (SkuId, Vec<(WarehouseId, surge_engine::StockLevel)>)>,
    ) -> Availability {
        let mut availability = Availability::default();
        for (sku, cells) in cells {
            for (warehouse, level) in cells {
                if level.available() > 0 {
                    availability.warehouses.entry(sku.0).or_default().insert(warehouse.0);
                }
            }
        }
        availability
    }

    /// Applies one change; `true` when it changed anything.
    fn apply(&mut self, sku: SkuId, warehouse: WarehouseId, in_stock: bool) -> bool {
        if in_stock {
            self.warehouses.entry(sku.0).or_default().insert(warehouse.0)
        } else if let Some(warehouses) = self.warehouses.get_mut(&sku.0) {
            let removed = warehouses.remove(&warehouse.0);
            if warehouses.is_empty() {
                self.warehouses.remove(&sku.0);
            }
            removed
        } else {
            false
        }
    }

    fn of_sku(&self, sku: u32) -> impl Iterator<Item = u16> + '_ {
        self.warehouses.get(&sku).into_iter().flatten().copied()
    }
}

// ----- Building index documents from the catalog tables -----

/// What went wrong while feeding the index.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("catalog: {0}")]
    Catalog(#[from] rusqlite::Error),
    #[error(transparent)]
    Events(#[from] EventError),
    #[error("index: {0}")]
    Index(#[from] SearchError),
}

/// A product row as the index needs it.
struct ProductRow {
    id: i64,
    title: String,
    description: String,
    category: String,
    brand: String,
    attributes: String,
    created_at: String,
}

/// A live variant row.
struct VariantRow {
    sku: u32,
    price_cents: i64,
    currency: String,
    attributes: String,
}

const PRODUCT_COLUMNS: &str =
    "SELECT id, title, description, category, brand, attributes, created_at FROM products";

fn product_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ProductRow> {
    Ok(ProductRow {
        id: row.get(0)?,
        title: row.get(1)?,
        description: row.get(2)?,
        category: row.get(3)?,
        brand: row.get(4)?,
        attributes: row.get(5)?,
        created_at: row.get(6)?,
    })
}

fn variant_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, VariantRow)> {
    Ok((
        row.get(0)?,
        VariantRow {
            sku: row.get(1)?,
            price_cents: row.get(2)?,
            currency: row.get(3)?,
            attributes: row.get(4)?,
        },
    ))
}

/// Renders a stored attribute object (`{"color": "red", "ports": 4}`) as name/text pairs.
fn attribute_pairs(stored: &str, into: &mut Vec<(String, String)>) {
    let Ok(Value::Object(attributes)) = serde_json::from_str::<Value>(stored) else { return };
    for (name, value) in attributes {
        let text = match value {
            Value::String(text) => text,
            other => other.to_string(),
        };
        if !into.iter().any(|(n, t)| *n == name && *t == text) {
            into.push((name, text));
        }
    }
}

/// Seconds since the Unix epoch of the `YYYY-MM-DDTHH:MM:SS...Z` the catalog stores; 0 if unreadable.
fn unix_seconds(rfc3339: &str) -> i64 {
    let field = |range: std::ops::Range<usize>| -> Option<i64> { rfc3339.get(range)?.parse().ok() };
    let parts = (|| {
        Some((
            field(0..4)?,
            field(5..7)?,
            field(8..10)?,
            field(11..13)?,
            field(14..16)?,
            field(17..19)?,
        ))
    })();
    let Some((year, month, day, hour, minute, second)) = parts else { return 0 };
    // Days from civil (the inverse of `time::civil_from_days`), years starting on 1 March.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    days * 86_400 + hour * 3_600 + minute * 60 + second
}

/// The index document of a product and its live variants: the cheapest variant's price, the
/// attributes of product and variants as text, and the warehouses where any variant is available.
/// `None` for a product without live variants (it cannot be bought, so it is not shown).
fn product_doc(
    product: ProductRow,
    variants: &[VariantRow],
    availability: &Availability,
) -> Option<ProductDoc> {
    let cheapest = variants.iter().min_by_key(|variant| variant.price_cents)?;
    let mut attributes = Vec::new();
    attribute_pairs(&product.attributes, &mut attributes);
    for variant in variants {
        attribute_pairs(&variant.attributes, &mut attributes);
    }
    let warehouses: BTreeSet<u16> =
        variants.iter().flat_map(|variant| availability.of_sku(variant.sku)).collect();
    Some(ProductDoc {
        product_id: u64::try_from(product.id).ok()?,
        title: product.title,
        description: product.description,
        brand: product.brand,
        category: product.category,
        attributes,
        price_cents: cheapest.price_cents,
        currency: cheapest.currency.clone(),
        rating: None,
        created_at_unix: unix_seconds(&product.created_at),
        stock_warehouses: warehouses.into_iter().map(u64::from).collect(),
    })
}

/// The live product `id` as an index document with its SKU ids, or `None` when it is deleted,
/// unknown or has no live variant.
fn load_doc(
    connection: &Connection,
    id: u64,
    availability: &Availability,
) -> Result<Option<(ProductDoc, Vec<u32>)>, FeedError> {
    let id = i64::try_from(id).unwrap_or(i64::MAX);
    let product = connection
        .prepare_cached(&format!("{PRODUCT_COLUMNS} WHERE id = ?1 AND deleted = 0"))?
        .query_row([id], product_row)
        .optional()?;
    let Some(product) = product else { return Ok(None) };
    let variants = connection
        .prepare_cached(
            "SELECT product_id, id, price_cents, currency, attributes FROM skus
             WHERE product_id = ?1 AND deleted = 0 ORDER BY id",
        )?
        .query_map([id], variant_row)?
        .map(|row| row.map(|(_, variant)| variant))
        .collect::<Result<Vec<_>, _>>()?;
    let skus = variants.iter().map(|variant| variant.sku).collect();
    Ok(product_doc(product, &variants, availability).map(|doc| (doc, skus)))
}

/// Live products with an id above `after`, in id order, at most [`PRODUCTS_PER_PAGE`], as
/// documents with their SKU ids; and the last id read (`None` when there were no more).
#[expect(clippy::type_complexity, reason = "a private page type would only rename the tuple")]
fn load_page(
    connection: &Connection,
    after: i64,
    availability: &Availability,
) -> Result<(Vec<(ProductDoc, Vec<u32>)>, Option<i64>), FeedError> {
    let products = connection
        .prepare_cached(&format!(
            "{PRODUCT_COLUMNS} WHERE id > ?1 AND deleted = 0 ORDER BY id LIMIT ?2"
        ))?
        .query_map(params![after, PRODUCTS_PER_PAGE], product_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let Some(last) = products.last().map(|product| product.id) else {
        return Ok((Vec::new(), None));
    };
    let mut variants: HashMap<i64, Vec<VariantRow>> = HashMap::new();
    let mut statement = connection.prepare_cached(
        "SELECT product_id, id, price_cents, currency, attributes FROM skus
         WHERE product_id > ?1 AND product_id <= ?2 AND deleted = 0 ORDER BY id",
    )?;
    for row in statement.query_map(params![after, last], variant_row)? {
        let (product_id, variant) = row?;
        variants.entry(product_id).or_default().push(variant);
    }
    let docs = products
        .into_iter()
        .filter_map(|product| {
            let variants = variants.remove(&product.id).unwrap_or_default();
            let skus = variants.iter().map(|variant| variant.sku).collect();
            product_doc(product, &variants, availability).map(|doc| (doc, skus))
        })
        .collect();
    Ok((docs, Some(last)))
}

/// The highest outbox offset (0 when empty).
fn outbox_head(connection: &Connection) -> Result<u64, FeedError> {
    let head: i64 = connection.query_row(
        r#"SELECT COALESCE(MAX("offset"), 0) FROM catalog_events"#,
        [],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(head).unwrap_or(0))
}

/// Opens the catalog database read-only (it must exist and be migrated).
pub fn open_catalog(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(Duration::from_secs(5))?;
    Ok(connection)
}

/// What a rebuild did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildSummary {
    pub products: u64,
    pub in_stock: u64,
    /// The outbox offset the index stored: events after it are applied by the feeder.
    pub offset: u64,
}

/// Writes every live product into the index (the index is cleared first when `clear`), then
/// commits with the outbox head read before the scan: changes after that point are applied again
/// by the feeder, which is harmless. Returns the SKU → product map it saw.
fn rebuild_into(
    index: &SearchIndex,
    connection: &Connection,
    availability: &Availability,
    clear: bool,
) -> Result<(RebuildSummary, HashMap<u32, u64>), FeedError> {
    let head = outbox_head(connection)?;
    if clear {
        index.clear()?;
    }
    let mut summary = RebuildSummary { products: 0, in_stock: 0, offset: head };
    let mut sku_products = HashMap::new();
    let mut after = 0;
    while let (docs, Some(last)) = load_page(connection, after, availability)? {
        for (doc, skus) in docs {
            summary.products += 1;
            summary.in_stock += u64::from(!doc.stock_warehouses.is_empty());
            sku_products.extend(skus.into_iter().map(|sku| (sku, doc.product_id)));
            index.upsert(&doc)?;
        }
        after = last;
    }
    // A rebuild from scratch may skip the history; a refresh must still apply deletes after the
    // stored offset, so it keeps the offset it had.
    let offset = if clear { head } else { index.committed_offset() };
    index.commit(offset)?;
    summary.offset = offset;
    Ok((summary, sku_products))
}

/// `surge search reindex`: clears the index at `<data_dir>/search/` and rebuilds it from the
/// catalog in `surge.db`, with availability from `availability`. The server must be stopped.
pub fn reindex(
    data_dir: &Path,
    availability: &Availability,
) -> anyhow::Result<(RebuildSummary, u64)> {
    let connection = open_catalog(&data_dir.join("surge.db"))?;
    let search = Search::open(data_dir)?;
    let (summary, _) = rebuild_into(&search.index, &connection, availability, true)?;
    Ok((summary, search.index.doc_count()))
}

// ----- The feeder -----

/// The single writer of the index.
struct Feeder {
    index: Arc<SearchIndex>,
    events: Box<dyn EventSource>,
    catalog: Connection,
    availability: Availability,
    /// Which product each known SKU belongs to, to map a stock change to a document.
    sku_products: HashMap<u32, u64>,
    /// Engine events up to here are already in `availability`.
    stock_through: Sequence,
    stock: Receiver<Vec<StockUpdate>>,
    /// The last outbox offset applied to the index (committed or not).
    applied_offset: u64,
    /// Products to re-read and re-index.
    pending: BTreeSet<u64>,
}

/// Starts the feeder on a thread of its own: reads the live SKUs, takes their availability from
/// the engine, refreshes a non-empty index's availability once, then follows the outbox at
/// `db_path` and the stock updates until `stock` disconnects (the pipeline stopped), committing a
/// last time before it returns.
pub async fn start_feeder(
    search: &Search,
    db: &crate::db::Db,
    db_path: &Path,
    engine: &Handle,
    stock: Receiver<Vec<StockUpdate>>,
) -> anyhow::Result<JoinHandle<()>> {
    let skus: Vec<u32> = db
        .read(|connection| {
            let mut statement = connection.prepare("SELECT id FROM skus WHERE deleted = 0")?;
            let skus = statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
            Ok(skus)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The sequence first, then the stock: events after the sequence are applied on top, and
    // applying one whose change the stock already shows is harmless (availability is a set).
    let stock_through = crate::last_sequence(engine).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let ids: Vec<SkuId> = skus.iter().copied().map(SkuId).collect();
    let cells = crate::stock_cells(engine, &ids).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let availability = Availability::of_cells(ids.iter().copied().zip(cells));
    let mut feeder = Feeder {
        index: Arc::clone(&search.index),
        events: Box::new(SqliteOutbox::open(db_path)?),
        catalog: open_catalog(db_path)?,
        availability,
        sku_products: HashMap::new(),
        stock_through,
        stock,
        applied_offset: search.index.committed_offset(),
        pending: BTreeSet::new(),
    };
    let thread =
        std::thread::Builder::new().name("surge-search-feeder".to_owned()).spawn(move || {
            feeder.refresh();
            feeder.run();
        })?;
    Ok(thread)
}

impl Feeder {
    /// Stock changes while the server was down or after the last commit are not in any offset:
    /// re-index every product once with the availability just read from the engine. An empty
    /// index needs nothing, it replays the outbox from the start.
    fn refresh(&mut self) {
        if self.index.doc_count() == 0 {
            return;
        }
        let started = Instant::now();
        loop {
            match rebuild_into(&self.index, &self.catalog, &self.availability, false) {
                Ok((summary, sku_products)) => {
                    self.sku_products = sku_products;
                    tracing::info!(
                        products = summary.products,
                        in_stock = summary.in_stock,
                        seconds = started.elapsed().as_secs_f64(),
                        "search index availability refreshed"
                    );
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "refreshing the search index failed; retrying");
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        }
    }

    fn run(mut self) {
        let mut dirty = false;
        let mut last_commit =
            Instant::now().checked_sub(COMMIT_INTERVAL).unwrap_or_else(Instant::now);
        let mut stopping = false;
        loop {
            loop {
                match self.stock.try_recv() {
                    Ok(updates) => self.apply_stock(&updates),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        stopping = true;
                        break;
                    }
                }
            }
            let mut more = false;
            match self.step() {
                Ok((changed, full_read)) => {
                    dirty |= changed;
                    more = full_read;
                }
                Err(error) => {
                    tracing::error!(%error, "feeding the search index failed; retrying");
                    std::thread::sleep(RETRY_AFTER);
                }
            }
            if dirty && (stopping || last_commit.elapsed() >= COMMIT_INTERVAL) {
                match self.index.commit(self.applied_offset) {
                    Ok(()) => {
                        dirty = false;
                        last_commit = Instant::now();
                    }
                    Err(error) => {
                        tracing::error!(%error, "committing the search index failed; retrying");
                        std::thread::sleep(RETRY_AFTER);
                    }
                }
            }
            if stopping && !dirty && !more {
                return;
            }
            let wait = if more || stopping {
                Duration::ZERO
            } else if dirty {
                COMMIT_INTERVAL.saturating_sub(last_commit.elapsed()).min(POLL_INTERVAL)
            } else {
                POLL_INTERVAL
            };
            match self.stock.recv_timeout(wait) {
                Ok(updates) => self.apply_stock(&updates),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stopping = true,
            }
        }
    }

    fn apply_stock(&mut self, updates: &[StockUpdate]) {
        for update in updates {
            if update.sequence <= self.stock_through {
                continue;
            }
            if self.availability.apply(update.sku, update.warehouse, update.in_stock) {
                if let Some(product) = self.sku_products.get(&update.sku.0) {
                    self.pending.insert(*product);
                }
            }
        }
    }

    /// Applies the next outbox events and the pending products. Returns whether the index changed
    /// and whether the read was full (more events may be waiting).
    fn step(&mut self) -> Result<(bool, bool), FeedError> {
        let events = self.events.read_after(self.applied_offset, EVENTS_PER_READ)?;
        let full_read = events.len() == EVENTS_PER_READ;
        self.pending.extend(events.iter().map(|event| event.product_id));
        let changed = !self.pending.is_empty();
        while let Some(product) = self.pending.first().copied() {
            match load_doc(&self.catalog, product, &self.availability)? {
                Some((doc, skus)) => {
                    self.sku_products.extend(skus.into_iter().map(|sku| (sku, product)));
                    self.index.upsert(&doc)?;
                }
                None => self.index.delete(product)?,
            }
            self.pending.remove(&product);
        }
        if let Some(last) = events.last() {
            self.applied_offset = last.offset;
        }
        Ok((changed, full_read))
    }
}

// ----- Routes -----

/// A validated `GET /v1/search`.
struct SearchRequest {
    query: SearchQuery,
    postal_code: Option<String>,
    size: usize,
}

fn parse_cursor(text: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let offset: usize = std::str::from_utf8(&bytes).ok()?.strip_prefix('o')?.parse().ok()?;
    (offset <= OFFSET_MAX).then_some(offset)
}

fn cursor(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("o{offset}"))
}

fn price_parameter(name: &str, text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>().ok().filter(|cents| *cents >= 0).ok_or_else(|| {
        ApiError::validation(format!("{name}: an integer number of cents, 0 or more"))
    })
}

fn is_postal_code(text: &str) -> bool {
    (1..=16).contains(&text.chars().count())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
}

fn parse_search(parameters: Vec<(String, String)>) -> Result<SearchRequest, ApiError> {
    let mut query = SearchQuery {
        text: String::new(),
        category: None,
        brand: None,
        min_price_cents: None,
        max_price_cents: None,
        attributes: Vec::new(),
        in_stock_only: true,
        deliverable_from: None,
        sort: Sort::Relevance,
        offset: 0,
        limit: SIZE_DEFAULT,
    };
    let mut postal_code = None;
    let mut seen = HashSet::new();
    for (name, value) in parameters {
        if !name.starts_with("attr.") && !seen.insert(name.clone()) {
            return Err(ApiError::validation(format!("{name}: given more than once")));
        }
        let value = value.trim().to_owned();
        match name.as_str() {
            "q" => {
                if value.chars().count() > QUERY_CHARS_MAX {
                    return Err(ApiError::validation(format!(
                        "q: at most {QUERY_CHARS_MAX} characters"
                    )));
                }
                query.text = value;
            }
            "category" => query.category = Some(value).filter(|v| !v.is_empty()),
            "brand" => query.brand = Some(value).filter(|v| !v.is_empty()),
            "min_price" => query.min_price_cents = Some(price_parameter("min_price", &value)?),
            "max_price" => query.max_price_cents = Some(price_parameter("max_price", &value)?),
            "postal_code" => {
                if !is_postal_code(&value) {
                    return Err(ApiError::validation(
                        "postal_code: 1 to 16 letters, digits, spaces or dashes",
                    ));
                }
                postal_code = Some(value);
            }
            "in_stock" => {
                query.in_stock_only = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::validation("in_stock: true or false")),
                };
            }
            "sort" => {
                query.sort = match value.as_str() {
                    "relevance" => Sort::Relevance,
                    "price_asc" => Sort::PriceAsc,
                    "price_desc" => Sort::PriceDesc,
                    "rating" => Sort::Rating,
                    "newest" => Sort::Newest,
                    _ => {
                        return Err(ApiError::validation(
                            "sort: relevance, price_asc, price_desc, rating or newest",
                        ))
                    }
                };
            }
            "cursor" => {
                query.offset = parse_cursor(&value)
                    .ok_or_else(|| ApiError::validation("cursor: not a cursor this API gave"))?;
            }
            "size" => {
                query.limit =
                    value.parse().ok().filter(|size| (1..=SIZE_MAX).contains(size)).ok_or_else(
                        || ApiError::validation(format!("size: an integer from 1 to {SIZE_MAX}")),
                    )?;
            }
            _ => {
                let Some(attribute) = name.strip_prefix("attr.").filter(|a| !a.is_empty()) else {
                    return Err(ApiError::validation(format!("{name}: unknown parameter")));
                };
                if query.attributes.len() == ATTRIBUTE_FILTERS_MAX {
                    return Err(ApiError::validation(format!(
                        "attr.*: at most {ATTRIBUTE_FILTERS_MAX} attribute filters"
                    )));
                }
                query.attributes.push((attribute.to_owned(), value));
            }
        }
    }
    if let (Some(min), Some(max)) = (query.min_price_cents, query.max_price_cents) {
        if min > max {
            return Err(ApiError::validation("min_price: above max_price"));
        }
    }
    let size = query.limit;
    Ok(SearchRequest { query, postal_code, size })
}

type Parameters = Result<Query<Vec<(String, String)>>, ApiError>;

fn parameters(query: Parameters) -> Result<Vec<(String, String)>, ApiError> {
    query.map(|Query(parameters)| parameters)
}

/// `GET /v1/search`.
/// Searches running at once (a fuzzy query can take a core for a while) and waiting: one per
/// core running, 32 per core waiting, then `503 overloaded`, so heavy queries cannot queue without
/// end behind each other or starve cheap requests of the blocking pool.
pub fn bound_for_this_machine() -> crate::auth::Bound {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    crate::auth::Bound::new(cores, 32 * cores, "too many searches at once; retry shortly")
}

async fn search(
    State(state): State<Arc<AppState>>,
    address: ClientAddress,
    query: Parameters,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    limit_reads(services, address)?;
    let SearchRequest { mut query, postal_code, size } = parse_search(parameters(query)?)?;
    // Delivery: the warehouses serving the code, with their ETA there.
    let serving: Option<HashMap<u64, u32>> = postal_code.as_deref().map(|code| {
        services
            .catalog
            .warehouses_for(code)
            .into_iter()
            .map(|(warehouse, eta)| (u64::from(warehouse.id.0), eta))
            .collect()
    });
    if let Some(serving) = &serving {
        let mut warehouses: Vec<u64> = serving.keys().copied().collect();
        warehouses.sort_unstable();
        query.deliverable_from = Some(warehouses);
    }
    let offset = query.offset;
    let index = Arc::clone(&services.search.index);
    let results = services
        .searches
        .run(move || index.search(&query))
        .await?
        .map_err(|error| ApiError::internal(format!("search: {error}")))?;
    let items: Vec<Value> = results
        .hits
        .iter()
        .map(|hit| {
            let eta_days = serving.as_ref().and_then(|serving| {
                hit.stock_warehouses.iter().filter_map(|w| serving.get(w)).min().copied()
            });
            json!({
                "product_id": product_id_string(i64::try_from(hit.product_id).unwrap_or(i64::MAX)),
                "title": hit.title,
                "brand": hit.brand,
                "category": hit.category,
                "price_cents": hit.price_cents,
                "currency": hit.currency,
                "in_stock": !hit.stock_warehouses.is_empty(),
                "rating": hit.rating,
                "eta_days": eta_days,
            })
        })
        .collect();
    let next = offset + size;
    let next_cursor = (u64::try_from(next).unwrap_or(u64::MAX) < results.total
        && items.len() == size
        && next <= OFFSET_MAX)
        .then(|| cursor(next));
    let facets = |counts: &[surge_search_svc::FacetCount]| -> Vec<Value> {
        counts.iter().map(|facet| json!({"value": facet.value, "count": facet.count})).collect()
    };
    let mut facet_map = Map::new();
    facet_map.insert("brand".to_owned(), Value::from(facets(&results.brand_facets)));
    facet_map.insert("category".to_owned(), Value::from(facets(&results.category_facets)));
    Ok(Json(json!({
        "items": items,
        "facets": facet_map,
        "total": results.total,
        "next_cursor": next_cursor,
    })))
}

/// `GET /v1/suggest?q=<prefix>`: completions of the prefix, at most ten.
async fn suggest(
    State(state): State<Arc<AppState>>,
    address: ClientAddress,
    query: Parameters,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    limit_reads(services, address)?;
    let mut prefix = String::new();
    for (name, value) in parameters(query)? {
        if name != "q" {
            return Err(ApiError::validation(format!("{name}: unknown parameter")));
        }
        if value.chars().count() > QUERY_CHARS_MAX {
            return Err(ApiError::validation(format!("q: at most {QUERY_CHARS_MAX} characters")));
        }
        prefix = value.trim().to_owned();
    }
    if prefix.is_empty() {
        return Ok(Json(json!({ "suggestions": [] })));
    }
    let index = Arc::clone(&services.search.index);
    let suggestions = services
        .searches
        .run(move || index.suggest(&prefix, SUGGESTIONS_MAX))
        .await?
        .map_err(|error| ApiError::internal(format!("suggest: {error}")))?;
    Ok(Json(json!({ "suggestions": suggestions })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_timestamps_become_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00.000000000Z"), 0);
        assert_eq!(unix_seconds("2000-02-29T12:34:56.000000007Z"), 951_827_696);
        assert_eq!(unix_seconds("2026-11-22T06:55:50.000000000Z"), 1_795_330_550);
        assert_eq!(unix_seconds("garbage"), 0);
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(parse_cursor(&cursor(40)), Some(40));
        assert_eq!(parse_cursor("40"), None);
        assert_eq!(parse_cursor(&cursor(OFFSET_MAX + 1)), None);
    }

    #[test]
    fn attributes_of_product_and_variants_become_text_once() {
        let mut pairs = Vec::new();
        attribute_pairs(r#"{"color":"red","ports":4,"usb_c":true}"#, &mut pairs);
        attribute_pairs(r#"{"color":"red","size":"M"}"#, &mut pairs);
        let expected = [("color", "red"), ("ports", "4"), ("usb_c", "true"), ("size", "M")];
        assert_eq!(pairs, expected.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec(),);
    }

    #[test]
    fn availability_follows_crossings() {
        let mut availability = Availability::default();
        assert!(availability.apply(SkuId(1), WarehouseId(2), true));
        assert!(!availability.apply(SkuId(1), WarehouseId(2), true));
        assert!(availability.apply(SkuId(1), WarehouseId(0), true));
        assert_eq!(availability.of_sku(1).collect::<Vec<_>>(), [0, 2]);
        assert!(availability.apply(SkuId(1), WarehouseId(2), false));
        assert!(availability.apply(SkuId(1), WarehouseId(0), false));
        assert!(availability.warehouses.is_empty());
    }
}
