//! `surge serve --demo`: on the first start (no product ever stored), loads the demo catalog of
//! `surge_catalog_svc::demo` so that search, checkout and the load test can be tried at once.
//!
//! Everything goes in through the same tables, outbox and engine commands as the API would use,
//! only in bulk: warehouses, a demo seller and every product in one database transaction (each
//! product announced in the outbox, so the search feeder indexes it like any other), then the
//! stock as `SetStock` groups through the engine.

use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, OptionalExtension};
use serde_json::{json, Map, Value};
use surge_catalog_svc::{demo_catalog, demo_warehouses, EventKind};
use surge_engine::{Command, Outcome, SkuId, WarehouseId};

use crate::catalog::{Serves, SkuInfo, WarehouseInfo};
use crate::error::ApiError;
use crate::Services;

/// The seed of the demo catalog: every demo is the same shop.
pub const DEMO_SEED: u64 = 2026;
/// The demo seller's e-mail (no password: sign in through `POST /v1/admin/tokens` is not needed
/// to browse; the seller exists so that products have an owner).
pub const DEMO_SELLER_EMAIL: &str = "demo-seller@surge.example";
/// `SetStock` commands per engine group.
const STOCK_GROUP: usize = 4_096;

/// What the demo load stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoSummary {
    pub products: usize,
    pub skus: usize,
    pub stock_cells: usize,
    pub warehouses: usize,
}

fn object(pairs: &[(String, String)]) -> String {
    let map: Map<String, Value> =
        pairs.iter().map(|(name, value)| (name.clone(), Value::from(value.as_str()))).collect();
    Value::Object(map).to_string()
}

/// What the transaction stored: the registry's view of it, and the stock to set.
struct Stored {
    warehouses: Vec<WarehouseInfo>,
    skus: Vec<SkuInfo>,
    stock: Vec<Command>,
}

/// Loads the demo catalog unless a product was ever stored. `None` when it did nothing.
pub async fn load_if_empty(services: &Arc<Services>) -> Result<Option<DemoSummary>, ApiError> {
    let started = Instant::now();
    let has_products: bool = services
        .db
        .read(|connection| {
            Ok(connection
                .query_row("SELECT EXISTS (SELECT 1 FROM products)", [], |row| row.get(0))?)
        })
        .await?;
    if has_products {
        return Ok(None);
    }
    let limits = crate::progress(&services.engine).await?.limits;
    let products = tokio::task::spawn_blocking(|| demo_catalog(DEMO_SEED))
        .await
        .map_err(ApiError::internal)?;
    let registry = Arc::clone(services);
    let stored = services
        .db
        .write_then(
            move |transaction| {
                let now = crate::now_rfc3339();
                let mut warehouses = Vec::new();
                for demo in demo_warehouses() {
                    let serves: Vec<Serves> = demo
                        .serves
                        .iter()
                        .map(|(prefix, eta)| Serves {
                            postal_prefix: prefix.clone(),
                            eta_days: *eta,
                        })
                        .collect();
                    let existing: Option<i64> = transaction
                        .query_row(
                            "SELECT id FROM warehouses WHERE name = ?1",
                            [&demo.name],
                            |row| row.get(0),
                        )
                        .optional()?;
                    let id = match existing {
                        Some(id) => id,
                        None => {
                            transaction.execute(
                                "INSERT INTO warehouses (name, display_name, postal_code, serves)
                                 VALUES (?1, ?2, ?3, ?4)",
                                params![
                                    demo.name,
                                    demo.display_name,
                                    demo.postal_code,
                                    json!(serves).to_string()
                                ],
                            )?;
                            transaction.last_insert_rowid()
                        }
                    };
                    let id = u16::try_from(id)
                        .ok()
                        .filter(|id| *id < limits.warehouses_max)
                        .ok_or_else(|| ApiError::conflict("no room for the demo warehouses"))?;
                    warehouses.push(WarehouseInfo {
                        id: WarehouseId(id),
                        name: demo.name,
                        display_name: demo.display_name,
                        postal_code: demo.postal_code,
                        serves,
                    });
                }
                transaction.execute(
                    "INSERT OR IGNORE INTO users (email, name, role, password_hash, created_at)
                     VALUES (?1, 'Demo Seller', 'seller', NULL, ?2)",
                    params![DEMO_SELLER_EMAIL, now],
                )?;
                let seller_id: i64 = transaction.query_row(
                    "SELECT id FROM users WHERE email = ?1",
                    [DEMO_SELLER_EMAIL],
                    |row| row.get(0),
                )?;
                let mut insert_product = transaction.prepare(
                    "INSERT INTO products (seller_id, title, description, category, brand,
                                           attributes, images, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, '[]', ?7, ?7)",
                )?;
                let mut insert_sku = transaction.prepare(
                    "INSERT INTO skus (sku, product_id, price_cents, currency, attributes)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let mut skus = Vec::new();
                let mut stock = Vec::new();
                for product in &products {
                    insert_product.execute(params![
                        seller_id,
                        product.title,
                        product.description,
                        product.category,
                        product.brand,
                        object(&product.attributes),
                        now
                    ])?;
                    let product_id = transaction.last_insert_rowid();
                    crate::outbox::publish(transaction, product_id, EventKind::Created)?;
                    for variant in &product.variants {
                        insert_sku.execute(params![
                            variant.sku,
                            product_id,
                            variant.price_cents,
                            variant.currency,
                            object(&variant.attributes)
                        ])?;
                        let id = u32::try_from(transaction.last_insert_rowid())
                            .ok()
                            .filter(|id| *id < limits.skus_max)
                            .map(SkuId)
                            .ok_or_else(|| ApiError::conflict("no room for the demo SKUs"))?;
                        for (warehouse, on_hand) in &variant.stock {
                            stock.push(Command::SetStock {
                                sku: id,
                                warehouse: warehouses[*warehouse].id,
                                on_hand: *on_hand,
                            });
                        }
                        skus.push(SkuInfo {
                            id,
                            sku: variant.sku.clone(),
                            product_id,
                            seller_id,
                            title: product.title.clone(),
                            price_cents: variant.price_cents,
                            currency: variant.currency.clone(),
                        });
                    }
                }
                Ok(Stored { warehouses, skus, stock })
            },
            move |stored: &Stored| {
                for warehouse in &stored.warehouses {
                    registry.catalog.put_warehouse(warehouse.clone());
                }
                for sku in &stored.skus {
                    registry.catalog.put_sku(sku.clone());
                }
            },
        )
        .await?;
    let summary = DemoSummary {
        products: stored
            .skus
            .iter()
            .map(|sku| sku.product_id)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        skus: stored.skus.len(),
        stock_cells: stored.stock.len(),
        warehouses: stored.warehouses.len(),
    };
    let mut tickets = Vec::new();
    for group in stored.stock.chunks(STOCK_GROUP) {
        let ticket = services
            .engine
            .submit_group(group.to_vec())
            .map_err(|error| ApiError::internal(format!("submitting demo stock: {error}")))?;
        tickets.push(ticket);
    }
    for ticket in tickets {
        for applied in ticket.outcomes().await.map_err(ApiError::internal)? {
            if !matches!(applied.outcome, Outcome::StockSet(_)) {
                return Err(ApiError::internal(format!(
                    "the engine refused demo stock: {:?}",
                    applied.outcome
                )));
            }
        }
    }
    tracing::info!(
        products = summary.products,
        skus = summary.skus,
        stock_cells = summary.stock_cells,
        seconds = started.elapsed().as_secs_f64(),
        "demo catalog loaded"
    );
    Ok(Some(summary))
}
