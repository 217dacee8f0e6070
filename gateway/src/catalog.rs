//! The catalog the checkout needs: products and their variants (SKUs) with dense engine ids,
//! prices and sellers; stock and per-buyer limits per SKU; the warehouses with the postal prefixes
//! they serve; and the serviceability check.
//!
//! [`Registry`] keeps SKUs and warehouses in memory so that a checkout resolves its lines without a
//! database round trip. Every catalog write updates the tables first and the registry right after
//! the commit, on the database writer thread ([`Db::write_then`]), so the registry follows the
//! tables in commit order. Stock and limits live only in the engine: the handlers here submit
//! `SetStock` / `SetBuyerLimit` and read counters back through [`crate::query`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::routing::{get, post, put};
use axum::Router;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use surge_catalog_svc::EventKind;
use surge_engine::{Command, Limits, Outcome, Rejection, SkuId, WarehouseId};

use crate::auth::{Caller, Role};
use crate::db::Db;
use crate::error::ApiError;
use crate::json::Json;
use crate::params::{Path, Query};
use crate::users::user_id_string;
use crate::{now_rfc3339, parse_product_id, product_id_string, AppState, Services};

/// The catalog's HTTP routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/products", post(create_product))
        .route(
            "/v1/products/bulk",
            post(create_products_bulk).layer(DefaultBodyLimit::max(BULK_BODY_BYTES_MAX)),
        )
        .route("/v1/products/{id}", get(get_product).patch(update_product).delete(delete_product))
        .route("/v1/categories", get(categories))
        .route("/v1/skus/{sku}/stock", put(set_stock).get(get_stock))
        .route("/v1/skus/{sku}/limit", put(set_limit))
        .route("/v1/warehouses/{id}", put(upsert_warehouse))
        .route("/v1/serviceability", get(serviceability))
}

// ----- Bounds on what a seller may store -----

const TITLE_CHARS_MAX: usize = 200;
const DESCRIPTION_CHARS_MAX: usize = 20_000;
const BRAND_CHARS_MAX: usize = 200;
const CATEGORY_CHARS_MAX: usize = 200;
const ATTRIBUTES_MAX: usize = 100;
const ATTRIBUTE_NAME_CHARS_MAX: usize = 100;
const ATTRIBUTE_VALUE_CHARS_MAX: usize = 1_000;
const IMAGES_MAX: usize = 20;
const IMAGE_URL_BYTES_MAX: usize = 2_048;
/// Variants of one product, counting those added later by `PATCH`.
const VARIANTS_MAX: usize = 100;
/// Ten billion currency units: above any real price, and far enough below `i64::MAX` that a
/// 16-line order of `u32::MAX` units each cannot overflow a total.
const PRICE_CENTS_MAX: i64 = 1_000_000_000_000;
/// The body limit of `POST /v1/products/bulk`; every other route keeps `json::BODY_BYTES_MAX`.
pub const BULK_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Products in one bulk request: they are written in one transaction, which every other write
/// waits behind.
const BULK_PRODUCTS_MAX: usize = 10_000;
/// `on_hand` travels as a `u32`; keeping it below 2^31 leaves every sum of a few cells in range
/// for clients that read JSON numbers as 32-bit integers.
const ON_HAND_MAX: i64 = (1 << 31) - 1;
const PER_BUYER_MAX: i64 = 1_000_000;
const SERVES_MAX: usize = 100;
const ETA_DAYS_MAX: u32 = 365;
const POSTAL_CODE_CHARS_MAX: usize = 16;

// ----- Validated values -----

/// A seller-chosen SKU, `[A-Za-z0-9._-]{1,64}`, unique across the platform.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sku(String);

impl Sku {
    pub fn parse(text: &str) -> Option<Sku> {
        is_identifier(text).then(|| Sku(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[A-Za-z0-9._-]{1,64}`: SKUs and warehouse ids.
fn is_identifier(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An ISO 4217 code: three upper-case letters. Whether the code is assigned is not checked.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Currency(String);

impl Currency {
    fn parse(field: &str, text: &str) -> Result<Currency, ApiError> {
        if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(text.to_owned()))
        } else {
            Err(ApiError::validation(format!("{field}: three upper-case letters (ISO 4217)")))
        }
    }
}

fn sku_field(field: &str, text: &str) -> Result<Sku, ApiError> {
    Sku::parse(text).ok_or_else(|| {
        ApiError::validation(format!("{field}: 1 to 64 letters, digits, '.', '_' or '-'"))
    })
}

fn price_field(field: &str, price_cents: i64) -> Result<i64, ApiError> {
    if (0..=PRICE_CENTS_MAX).contains(&price_cents) {
        Ok(price_cents)
    } else {
        Err(ApiError::validation(format!("{field}: an integer from 0 to {PRICE_CENTS_MAX}")))
    }
}

/// Trims `text` and checks its length in characters.
fn text_field(
    field: &str,
    text: &str,
    chars: std::ops::RangeInclusive<usize>,
) -> Result<String, ApiError> {
    let text = text.trim();
    if chars.contains(&text.chars().count()) {
        Ok(text.to_owned())
    } else {
        Err(ApiError::validation(format!(
            "{field}: between {} and {} characters",
            chars.start(),
            chars.end()
        )))
    }
}

/// A path of non-empty segments such as `electronics/laptops`; spaces around segments are dropped.
fn category_field(text: &str) -> Result<String, ApiError> {
    let segments: Vec<&str> = text.split('/').map(str::trim).collect();
    let category = segments.join("/");
    if segments.iter().any(|segment| segment.is_empty())
        || category.chars().count() > CATEGORY_CHARS_MAX
    {
        return Err(ApiError::validation(format!(
            "category: non-empty segments separated by '/', at most {CATEGORY_CHARS_MAX} characters"
        )));
    }
    Ok(category)
}

/// Free-form attributes: names to strings, numbers or booleans (what search can filter on).
fn attributes_field(field: &str, attributes: Map<String, Value>) -> Result<Value, ApiError> {
    if attributes.len() > ATTRIBUTES_MAX {
        return Err(ApiError::validation(format!("{field}: at most {ATTRIBUTES_MAX} attributes")));
    }
    for (name, value) in &attributes {
        if name.trim().is_empty() || name.chars().count() > ATTRIBUTE_NAME_CHARS_MAX {
            return Err(ApiError::validation(format!(
                "{field}: names of 1 to {ATTRIBUTE_NAME_CHARS_MAX} characters"
            )));
        }
        match value {
            Value::String(text) if text.chars().count() > ATTRIBUTE_VALUE_CHARS_MAX => {
                return Err(ApiError::validation(format!(
                    "{field}.{name}: at most {ATTRIBUTE_VALUE_CHARS_MAX} characters"
                )));
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            _ => {
                return Err(ApiError::validation(format!(
                    "{field}.{name}: must be a string, number or boolean"
                )));
            }
        }
    }
    Ok(Value::Object(attributes))
}

fn images_field(images: Vec<String>) -> Result<Vec<String>, ApiError> {
    if images.len() > IMAGES_MAX {
        return Err(ApiError::validation(format!("images: at most {IMAGES_MAX} URLs")));
    }
    for (index, url) in images.iter().enumerate() {
        if !is_http_url(url) {
            return Err(ApiError::validation(format!(
                "images[{index}]: must be an http:// or https:// URL"
            )));
        }
    }
    Ok(images)
}

fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    url.len() <= IMAGE_URL_BYTES_MAX
        && !host.is_empty()
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Postal codes and prefixes: letters, digits, spaces and dashes, as `PATCH /v1/me` accepts them.
fn postal_field(
    field: &str,
    text: &str,
    chars: std::ops::RangeInclusive<usize>,
) -> Result<String, ApiError> {
    if chars.contains(&text.chars().count())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
    {
        Ok(text.to_owned())
    } else {
        Err(ApiError::validation(format!(
            "{field}: {} to {} letters, digits, spaces or dashes",
            chars.start(),
            chars.end()
        )))
    }
}

// ----- Products -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProduct {
    title: String,
    #[serde(default)]
    description: String,
    category: String,
    #[serde(default)]
    brand: String,
    #[serde(default)]
    attributes: Map<String, Value>,
    #[serde(default)]
    images: Vec<String>,
    variants: Vec<NewVariant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewVariant {
    sku: String,
    price_cents: i64,
    currency: String,
    #[serde(default)]
    attributes: Map<String, Value>,
}

/// A product whose every field passed validation.
struct ValidProduct {
    title: String,
    description: String,
    category: String,
    brand: String,
    attributes: Value,
    images: Vec<String>,
    variants: Vec<ValidVariant>,
}

struct ValidVariant {
    sku: Sku,
    price_cents: i64,
    currency: Currency,
    attributes: Value,
}

impl NewProduct {
    fn validate(self) -> Result<ValidProduct, ApiError> {
        let title = text_field("title", &self.title, 1..=TITLE_CHARS_MAX)?;
        let description = text_field("description", &self.description, 0..=DESCRIPTION_CHARS_MAX)?;
        let category = category_field(&self.category)?;
        let brand = text_field("brand", &self.brand, 0..=BRAND_CHARS_MAX)?;
        let attributes = attributes_field("attributes", self.attributes)?;
        let images = images_field(self.images)?;
        if self.variants.is_empty() || self.variants.len() > VARIANTS_MAX {
            return Err(ApiError::validation(format!("variants: 1 to {VARIANTS_MAX} variants")));
        }
        let mut seen = HashSet::new();
        let mut variants = Vec::with_capacity(self.variants.len());
        for (index, variant) in self.variants.into_iter().enumerate() {
            let field = |name: &str| format!("variants[{index}].{name}");
            let sku = sku_field(&field("sku"), &variant.sku)?;
            if !seen.insert(sku.clone()) {
                return Err(ApiError::validation(format!(
                    "{}: {} appears twice in this product",
                    field("sku"),
                    sku.as_str()
                )));
            }
            variants.push(ValidVariant {
                sku,
                price_cents: price_field(&field("price_cents"), variant.price_cents)?,
                currency: Currency::parse(&field("currency"), &variant.currency)?,
                attributes: attributes_field(&field("attributes"), variant.attributes)?,
            });
        }
        Ok(ValidProduct { title, description, category, brand, attributes, images, variants })
    }
}

#[derive(Serialize)]
struct ProductView {
    id: String,
    seller_id: String,
    title: String,
    description: String,
    category: String,
    brand: String,
    attributes: Value,
    images: Vec<String>,
    variants: Vec<VariantView>,
    rating: RatingView,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize)]
struct VariantView {
    sku: String,
    price_cents: i64,
    currency: String,
    attributes: Value,
    /// Units that can be reserved now, summed over warehouses.
    available: u64,
}

/// Reviews are not built yet (issue P3): every product is unrated.
#[derive(Serialize)]
struct RatingView {
    average: Option<f64>,
    count: u64,
}

/// A product row and its live variants, as stored.
struct StoredProduct {
    seller_id: i64,
    title: String,
    description: String,
    category: String,
    brand: String,
    attributes: String,
    images: String,
    created_at: String,
    updated_at: String,
    variants: Vec<StoredVariant>,
}

struct StoredVariant {
    id: SkuId,
    sku: String,
    price_cents: i64,
    currency: String,
    attributes: String,
}

fn load_product(connection: &Connection, id: i64) -> Result<Option<StoredProduct>, ApiError> {
    let product = connection
        .query_row(
            "SELECT seller_id, title, description, category, brand, attributes, images,
                    created_at, updated_at
             FROM products WHERE id = ?1 AND deleted = 0",
            [id],
            |row| {
                Ok(StoredProduct {
                    seller_id: row.get(0)?,
                    title: row.get(1)?,
                    description: row.get(2)?,
                    category: row.get(3)?,
                    brand: row.get(4)?,
                    attributes: row.get(5)?,
                    images: row.get(6)?,
                    created_at: row.get(7)?,
                    updated_at: row.get(8)?,
                    variants: Vec::new(),
                })
            },
        )
        .optional()?;
    let Some(mut product) = product else { return Ok(None) };
    let mut statement = connection.prepare(
        "SELECT id, sku, price_cents, currency, attributes
         FROM skus WHERE product_id = ?1 AND deleted = 0 ORDER BY id",
    )?;
    product.variants = statement
        .query_map([id], |row| {
            Ok(StoredVariant {
                id: SkuId(row.get(0)?),
                sku: row.get(1)?,
                price_cents: row.get(2)?,
                currency: row.get(3)?,
                attributes: row.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(product))
}

/// The live product `id` with the available units of each variant, or `404`.
async fn product_view(services: &Services, id: i64) -> Result<ProductView, ApiError> {
    let product = services
        .db
        .read(move |connection| load_product(connection, id))
        .await?
        .ok_or_else(|| ApiError::not_found("product not found"))?;
    let skus: Vec<SkuId> = product.variants.iter().map(|variant| variant.id).collect();
    let available = available_units(services, skus).await?;
    let stored_json = |text: &str| serde_json::from_str::<Value>(text).map_err(ApiError::internal);
    let variants = product
        .variants
        .iter()
        .zip(available)
        .map(|(variant, available)| {
            Ok(VariantView {
                sku: variant.sku.clone(),
                price_cents: variant.price_cents,
                currency: variant.currency.clone(),
                attributes: stored_json(&variant.attributes)?,
                available,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(ProductView {
        id: product_id_string(id),
        seller_id: user_id_string(product.seller_id),
        attributes: stored_json(&product.attributes)?,
        images: serde_json::from_str(&product.images).map_err(ApiError::internal)?,
        title: product.title,
        description: product.description,
        category: product.category,
        brand: product.brand,
        variants,
        rating: RatingView { average: None, count: 0 },
        created_at: product.created_at,
        updated_at: product.updated_at,
    })
}

/// Units available now of each SKU, summed over its warehouses; `0` for a SKU never stocked.
async fn available_units(services: &Services, skus: Vec<SkuId>) -> Result<Vec<u64>, ApiError> {
    let units = crate::available_units(&services.engine, &skus).await?;
    Ok(skus.iter().map(|sku| units.get(sku).copied().unwrap_or(0)).collect())
}

/// The engine's capacities: dense SKU and warehouse ids must stay below them.
async fn engine_limits(services: &Services) -> Result<Limits, ApiError> {
    Ok(crate::progress(&services.engine).await?.limits)
}

fn sku_taken(transaction: &Transaction<'_>, sku: &Sku) -> Result<bool, ApiError> {
    let found: Option<i64> = transaction
        .query_row("SELECT id FROM skus WHERE sku = ?1", [sku.as_str()], |row| row.get(0))
        .optional()?;
    Ok(found.is_some())
}

/// Stores one SKU row. Its rowid is its engine id: assigned once and never reused (rows are only
/// marked deleted), so journaled commands keep naming the same SKU. Ids the engine cannot hold
/// are refused, and the caller's savepoint rolls the row back.
fn insert_sku(
    transaction: &Transaction<'_>,
    product_id: i64,
    variant: &ValidVariant,
    skus_max: u32,
) -> Result<SkuId, ApiError> {
    transaction.execute(
        "INSERT INTO skus (sku, product_id, price_cents, currency, attributes)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            variant.sku.as_str(),
            product_id,
            variant.price_cents,
            variant.currency.0,
            variant.attributes.to_string()
        ],
    )?;
    u32::try_from(transaction.last_insert_rowid())
        .ok()
        .filter(|id| *id < skus_max)
        .map(SkuId)
        .ok_or_else(|| {
            ApiError::conflict(format!("the platform holds the most SKUs it can ({skus_max})"))
        })
}

/// Stores a product and its SKUs; returns its id and the SKUs as the registry holds them.
fn insert_product(
    transaction: &Transaction<'_>,
    seller_id: i64,
    product: &ValidProduct,
    skus_max: u32,
) -> Result<(i64, Vec<SkuInfo>), ApiError> {
    for (index, variant) in product.variants.iter().enumerate() {
        if sku_taken(transaction, &variant.sku)? {
            return Err(ApiError::conflict(format!(
                "variants[{index}].sku: {} is taken",
                variant.sku.as_str()
            )));
        }
    }
    let now = now_rfc3339();
    transaction.execute(
        "INSERT INTO products (seller_id, title, description, category, brand, attributes, images,
                               created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![
            seller_id,
            product.title,
            product.description,
            product.category,
            product.brand,
            product.attributes.to_string(),
            json!(product.images).to_string(),
            now
        ],
    )?;
    let product_id = transaction.last_insert_rowid();
    crate::outbox::publish(transaction, product_id, EventKind::Created)?;
    let mut skus = Vec::with_capacity(product.variants.len());
    for variant in &product.variants {
        skus.push(SkuInfo {
            id: insert_sku(transaction, product_id, variant, skus_max)?,
            sku: variant.sku.as_str().to_owned(),
            product_id,
            seller_id,
            title: product.title.clone(),
            price_cents: variant.price_cents,
            currency: variant.currency.0.clone(),
        });
    }
    Ok((product_id, skus))
}

/// A post-commit hook (see [`Db::write_then`]) that applies `change` to the registry.
fn on_registry<R>(
    state: &Arc<AppState>,
    change: impl FnOnce(&Registry, &R) + Send + 'static,
) -> impl FnOnce(&R) + Send + 'static {
    let state = Arc::clone(state);
    move |value| {
        if let Ok(services) = state.services() {
            change(&services.catalog, value);
        }
    }
}

fn put_skus(registry: &Registry, skus: &[SkuInfo]) {
    for sku in skus {
        registry.put_sku(sku.clone());
    }
}

async fn create_product(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(new): Json<NewProduct>,
) -> Result<(StatusCode, Json<ProductView>), ApiError> {
    let seller_id = caller.require(Role::Seller)?.user_id;
    let services = state.services()?;
    let product = new.validate()?;
    let skus_max = engine_limits(services).await?.skus_max;
    let (product_id, _) = services
        .db
        .write_then(
            move |transaction| insert_product(transaction, seller_id, &product, skus_max),
            on_registry(&state, |registry, (_, skus): &(i64, Vec<SkuInfo>)| {
                put_skus(registry, skus);
            }),
        )
        .await?;
    let view = product_view(services, product_id).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn get_product(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ProductView>, ApiError> {
    let services = state.services()?;
    let id = parse_product_id(&id).ok_or_else(|| ApiError::not_found("product not found"))?;
    product_view(services, id).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductChange {
    title: Option<String>,
    description: Option<String>,
    category: Option<String>,
    brand: Option<String>,
    attributes: Option<Map<String, Value>>,
    images: Option<Vec<String>>,
    variants: Option<Vec<VariantChange>>,
}

/// A variant in a `PATCH`: an existing SKU of the product changes the fields given; a new SKU is
/// added and needs `price_cents` and `currency`. Variants not named are kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantChange {
    sku: String,
    price_cents: Option<i64>,
    currency: Option<String>,
    attributes: Option<Map<String, Value>>,
}

struct ValidChange {
    title: Option<String>,
    description: Option<String>,
    category: Option<String>,
    brand: Option<String>,
    attributes: Option<Value>,
    images: Option<Vec<String>>,
    variants: Vec<ValidVariantChange>,
}

struct ValidVariantChange {
    index: usize,
    sku: Sku,
    price_cents: Option<i64>,
    currency: Option<Currency>,
    attributes: Option<Value>,
}

impl ProductChange {
    fn validate(self) -> Result<ValidChange, ApiError> {
        let variants = self.variants.unwrap_or_default();
        if variants.len() > VARIANTS_MAX {
            return Err(ApiError::validation(format!("variants: at most {VARIANTS_MAX}")));
        }
        let mut seen = HashSet::new();
        let mut valid_variants = Vec::with_capacity(variants.len());
        for (index, variant) in variants.into_iter().enumerate() {
            let field = |name: &str| format!("variants[{index}].{name}");
            let sku = sku_field(&field("sku"), &variant.sku)?;
            if !seen.insert(sku.clone()) {
                return Err(ApiError::validation(format!(
                    "{}: {} appears twice in this change",
                    field("sku"),
                    sku.as_str()
                )));
            }
            valid_variants.push(ValidVariantChange {
                index,
                sku,
                price_cents: variant
                    .price_cents
                    .map(|price| price_field(&field("price_cents"), price))
                    .transpose()?,
                currency: variant
                    .currency
                    .map(|currency| Currency::parse(&field("currency"), &currency))
                    .transpose()?,
                attributes: variant
                    .attributes
                    .map(|attributes| attributes_field(&field("attributes"), attributes))
                    .transpose()?,
            });
        }
        Ok(ValidChange {
            title: self
                .title
                .map(|title| text_field("title", &title, 1..=TITLE_CHARS_MAX))
                .transpose()?,
            description: self
                .description
                .map(|text| text_field("description", &text, 0..=DESCRIPTION_CHARS_MAX))
                .transpose()?,
            category: self.category.map(|category| category_field(&category)).transpose()?,
            brand: self
                .brand
                .map(|brand| text_field("brand", &brand, 0..=BRAND_CHARS_MAX))
                .transpose()?,
            attributes: self
                .attributes
                .map(|attributes| attributes_field("attributes", attributes))
                .transpose()?,
            images: self.images.map(images_field).transpose()?,
            variants: valid_variants,
        })
    }
}

/// Checks that product `id` is live and belongs to `seller_id`. Anything else is `404`, so that
/// nobody learns that another seller's product exists.
fn check_owner(transaction: &Transaction<'_>, id: i64, seller_id: i64) -> Result<(), ApiError> {
    let owner: Option<i64> = transaction
        .query_row("SELECT seller_id FROM products WHERE id = ?1 AND deleted = 0", [id], |row| {
            row.get(0)
        })
        .optional()?;
    match owner {
        Some(owner) if owner == seller_id => Ok(()),
        _ => Err(ApiError::not_found("product not found")),
    }
}

/// Applies a validated change to product `id` and returns its live SKUs as the registry holds
/// them (the title is part of each).
fn apply_change(
    transaction: &Transaction<'_>,
    id: i64,
    seller_id: i64,
    change: &ValidChange,
    skus_max: u32,
) -> Result<Vec<SkuInfo>, ApiError> {
    check_owner(transaction, id, seller_id)?;
    crate::outbox::publish(transaction, id, EventKind::Updated)?;
    transaction.execute(
        "UPDATE products SET title = COALESCE(?2, title), description = COALESCE(?3, description),
             category = COALESCE(?4, category), brand = COALESCE(?5, brand),
             attributes = COALESCE(?6, attributes), images = COALESCE(?7, images), updated_at = ?8
         WHERE id = ?1",
        params![
            id,
            change.title,
            change.description,
            change.category,
            change.brand,
            change.attributes.as_ref().map(Value::to_string),
            change.images.as_ref().map(|images| json!(images).to_string()),
            now_rfc3339()
        ],
    )?;
    for variant in &change.variants {
        let field = |name: &str| format!("variants[{}].{name}", variant.index);
        let existing: Option<(i64, bool)> = transaction
            .query_row(
                "SELECT product_id, deleted FROM skus WHERE sku = ?1",
                [variant.sku.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        match existing {
            Some((product_id, false)) if product_id == id => {
                transaction.execute(
                    "UPDATE skus SET price_cents = COALESCE(?2, price_cents),
                         currency = COALESCE(?3, currency), attributes = COALESCE(?4, attributes)
                     WHERE sku = ?1",
                    params![
                        variant.sku.as_str(),
                        variant.price_cents,
                        variant.currency.as_ref().map(|currency| currency.0.clone()),
                        variant.attributes.as_ref().map(Value::to_string)
                    ],
                )?;
            }
            Some(_) => {
                return Err(ApiError::conflict(format!(
                    "{}: {} is taken",
                    field("sku"),
                    variant.sku.as_str()
                )));
            }
            None => {
                let new = ValidVariant {
                    sku: variant.sku.clone(),
                    price_cents: variant.price_cents.ok_or_else(|| {
                        ApiError::validation(format!(
                            "{}: required for a new SKU",
                            field("price_cents")
                        ))
                    })?,
                    currency: variant.currency.clone().ok_or_else(|| {
                        ApiError::validation(format!(
                            "{}: required for a new SKU",
                            field("currency")
                        ))
                    })?,
                    attributes: variant.attributes.clone().unwrap_or_else(|| json!({})),
                };
                insert_sku(transaction, id, &new, skus_max)?;
            }
        }
    }
    let mut statement = transaction.prepare(
        "SELECT s.id, s.sku, s.price_cents, s.currency, p.title
         FROM skus s JOIN products p ON p.id = s.product_id
         WHERE s.product_id = ?1 AND s.deleted = 0 ORDER BY s.id",
    )?;
    let skus = statement
        .query_map([id], |row| {
            Ok(SkuInfo {
                id: SkuId(row.get(0)?),
                sku: row.get(1)?,
                product_id: id,
                seller_id,
                title: row.get(4)?,
                price_cents: row.get(2)?,
                currency: row.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    if skus.len() > VARIANTS_MAX {
        return Err(ApiError::validation(format!("variants: at most {VARIANTS_MAX} per product")));
    }
    Ok(skus)
}

async fn update_product(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(change): Json<ProductChange>,
) -> Result<Json<ProductView>, ApiError> {
    let seller_id = caller.require(Role::Seller)?.user_id;
    let services = state.services()?;
    let id = parse_product_id(&id).ok_or_else(|| ApiError::not_found("product not found"))?;
    let change = change.validate()?;
    let skus_max = engine_limits(services).await?.skus_max;
    services
        .db
        .write_then(
            move |transaction| apply_change(transaction, id, seller_id, &change, skus_max),
            on_registry(&state, |registry, skus: &Vec<SkuInfo>| put_skus(registry, skus)),
        )
        .await?;
    product_view(services, id).await.map(Json)
}

async fn delete_product(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let seller_id = caller.require(Role::Seller)?.user_id;
    let services = state.services()?;
    let id = parse_product_id(&id).ok_or_else(|| ApiError::not_found("product not found"))?;
    services
        .db
        .write_then(
            move |transaction| {
                check_owner(transaction, id, seller_id)?;
                let now = now_rfc3339();
                transaction.execute(
                    "UPDATE products SET deleted = 1, updated_at = ?2 WHERE id = ?1",
                    params![id, now],
                )?;
                let mut statement = transaction
                    .prepare("SELECT sku FROM skus WHERE product_id = ?1 AND deleted = 0")?;
                let skus = statement
                    .query_map([id], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                transaction.execute("UPDATE skus SET deleted = 1 WHERE product_id = ?1", [id])?;
                crate::outbox::publish(transaction, id, EventKind::Deleted)?;
                Ok(skus)
            },
            on_registry(&state, |registry, skus: &Vec<String>| {
                for sku in skus {
                    registry.remove_sku(sku);
                }
            }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One line of a bulk upload that was not stored.
#[derive(Serialize)]
struct BulkFailure {
    line: usize,
    code: &'static str,
    error: String,
}

/// `POST /v1/products/bulk`: one product per NDJSON line. A bad line is reported and skipped; the
/// good ones are stored in one transaction, each in its own savepoint so that a line refused by
/// the database (a SKU taken meanwhile) does not take the others with it.
async fn create_products_bulk(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: axum::extract::Request,
) -> Result<Json<Value>, ApiError> {
    // Who may upload and what is decided before a byte of the (up to 16 MiB) body is read.
    let seller_id = caller.require(Role::Seller)?.user_id;
    let services = state.services()?;
    let is_ndjson = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/x-ndjson")
                || mime.eq_ignore_ascii_case("application/json")
        });
    if !is_ndjson {
        return Err(ApiError::validation(
            "Content-Type must be application/x-ndjson or application/json",
        ));
    }
    let body = <Bytes as axum::extract::FromRequest<_>>::from_request(request, &state).await;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(format!("the body exceeds {BULK_BODY_BYTES_MAX} bytes"))
        } else {
            ApiError::validation(format!("could not read the body: {rejection}"))
        }
    })?;

    let mut failed = Vec::new();
    let mut valid = Vec::new();
    let lines =
        body.split(|byte| *byte == b'\n').enumerate().map(|(index, line)| (index + 1, line));
    for (line, text) in lines.filter(|(_, text)| !text.iter().all(u8::is_ascii_whitespace)) {
        if valid.len() + failed.len() == BULK_PRODUCTS_MAX {
            return Err(ApiError::validation(format!(
                "body: at most {BULK_PRODUCTS_MAX} products per request"
            )));
        }
        match crate::json::parse::<NewProduct>(text).and_then(NewProduct::validate) {
            Ok(product) => valid.push((line, product)),
            Err(error) => failed.push(BulkFailure { line, code: error.code, error: error.detail }),
        }
    }

    let skus_max = engine_limits(services).await?.skus_max;
    let (created, refused) = services
        .db
        .write_then(
            move |transaction| {
                let mut created = Vec::with_capacity(valid.len());
                let mut refused = Vec::new();
                // SKUs of the lines stored so far. A SKU an earlier line stored fails this line,
                // not the earlier one; a SKU only a refused earlier line named is still free.
                let mut stored: HashSet<&Sku> = HashSet::new();
                for (line, product) in &valid {
                    if let Some(index) =
                        product.variants.iter().position(|variant| stored.contains(&variant.sku))
                    {
                        let sku = product.variants[index].sku.as_str();
                        let error = ApiError::conflict(format!(
                            "variants[{index}].sku: {sku} appears on an earlier line"
                        ));
                        refused.push(BulkFailure {
                            line: *line,
                            code: error.code,
                            error: error.detail,
                        });
                        continue;
                    }
                    transaction.execute_batch("SAVEPOINT bulk_line")?;
                    match insert_product(transaction, seller_id, product, skus_max) {
                        Ok((product_id, skus)) => {
                            transaction.execute_batch("RELEASE bulk_line")?;
                            stored.extend(product.variants.iter().map(|variant| &variant.sku));
                            created.push((product_id, skus));
                        }
                        // An operating error fails the whole request; a refusal only its line.
                        Err(error) if error.status.is_server_error() => return Err(error),
                        Err(error) => {
                            transaction
                                .execute_batch("ROLLBACK TO bulk_line; RELEASE bulk_line")?;
                            refused.push(BulkFailure {
                                line: *line,
                                code: error.code,
                                error: error.detail,
                            });
                        }
                    }
                }
                Ok((created, refused))
            },
            on_registry(&state, |registry, (created, _): &(Vec<(i64, Vec<SkuInfo>)>, _)| {
                for (_, skus) in created {
                    put_skus(registry, skus);
                }
            }),
        )
        .await?;
    failed.extend(refused);
    failed.sort_by_key(|failure| failure.line);
    let ids: Vec<String> = created.iter().map(|(id, _)| product_id_string(*id)).collect();
    Ok(Json(json!({ "created": ids.len(), "ids": ids, "failed": failed })))
}

/// `GET /v1/categories`: every category path holding a live product, with its count. Parents are
/// not rolled up: `electronics/laptops` counts only toward itself.
async fn categories(
    State(state): State<Arc<AppState>>,
    address: crate::auth::ClientAddress,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    crate::auth::limit_reads(services, address)?;
    let categories = services
        .db
        .read(|connection| {
            let mut statement = connection
                .prepare("SELECT category, products FROM category_counts ORDER BY category")?;
            let rows = statement
                .query_map([], |row| {
                    let (name, count): (String, i64) = (row.get(0)?, row.get(1)?);
                    Ok(json!({"name": name, "product_count": count}))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
    Ok(Json(json!({ "categories": categories })))
}

// ----- Stock and limits -----

/// The live SKU `sku` if `caller` is its seller or an admin. A buyer is `403`; an unknown,
/// deleted or another seller's SKU is the same `404`.
fn sku_for(services: &Services, caller: Caller, sku: &str) -> Result<SkuInfo, ApiError> {
    if caller.role == Role::Buyer {
        return Err(ApiError::forbidden("this action needs the seller role"));
    }
    services
        .catalog
        .sku(sku)
        .filter(|info| caller.is_admin() || info.seller_id == caller.user_id)
        .ok_or_else(|| ApiError::not_found_skus(vec![sku.to_owned()]))
}

/// A rejection of `SetStock` or `SetBuyerLimit`. The others cannot come from these commands.
fn rejection_error(rejection: Rejection) -> ApiError {
    match rejection {
        Rejection::BelowReserved { reserved } => ApiError::conflict(format!(
            "on_hand: cannot go below the {reserved} units pending orders reserve in that warehouse"
        )),
        Rejection::CapacityReached { capacity } => {
            ApiError::conflict(format!("the engine holds the most it can of {capacity:?}"))
        }
        other => ApiError::internal(format!("the engine refused a catalog command: {other:?}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockChange {
    warehouse: String,
    on_hand: i64,
}

async fn set_stock(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(sku): Path<String>,
    Json(change): Json<StockChange>,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let info = sku_for(services, caller, &sku)?;
    let on_hand = u32::try_from(change.on_hand)
        .ok()
        .filter(|on_hand| i64::from(*on_hand) <= ON_HAND_MAX)
        .ok_or_else(|| {
            ApiError::validation(format!("on_hand: an integer from 0 to {ON_HAND_MAX}"))
        })?;
    let warehouse = services
        .catalog
        .warehouse_by_name(&change.warehouse)
        .ok_or_else(|| ApiError::not_found(format!("unknown warehouse: {}", change.warehouse)))?;
    let command = Command::SetStock { sku: info.id, warehouse: warehouse.id, on_hand };
    match crate::submit(&services.engine, command).await?.outcome {
        Outcome::StockSet(level) => Ok(Json(json!({
            "sku": info.sku,
            "warehouse": warehouse.name,
            "on_hand": level.on_hand,
            "reserved": level.reserved,
            "sold": level.sold,
            "available": level.available(),
        }))),
        Outcome::Rejected(rejection) => Err(rejection_error(rejection)),
        other => Err(ApiError::internal(format!("SetStock answered {other:?}"))),
    }
}

async fn get_stock(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(sku): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let info = sku_for(services, caller, &sku)?;
    let id = info.id;
    let stock = crate::stock_of(&services.engine, &[id]).await?.pop().unwrap_or_default();
    let (cells, per_buyer) = (stock.cells, stock.buyer_limit);
    let names: HashMap<WarehouseId, String> = services
        .catalog
        .warehouses()
        .into_iter()
        .map(|warehouse| (warehouse.id, warehouse.name))
        .collect();
    let (mut on_hand, mut reserved, mut sold) = (0u64, 0u64, 0u64);
    let by_warehouse: Vec<Value> = cells
        .iter()
        .map(|(warehouse, level)| {
            on_hand += u64::from(level.on_hand);
            reserved += u64::from(level.reserved);
            sold += level.sold;
            // A cell's warehouse is always registered: SetStock is only sent for known names.
            let name = names.get(warehouse).cloned().unwrap_or_else(|| warehouse.0.to_string());
            json!({
                "warehouse": name,
                "on_hand": level.on_hand,
                "reserved": level.reserved,
                "available": level.available(),
                "sold": level.sold,
            })
        })
        .collect();
    Ok(Json(json!({
        "sku": info.sku,
        "on_hand": on_hand,
        "available": on_hand - reserved,
        "reserved": reserved,
        "sold": sold,
        "per_buyer": per_buyer,
        "by_warehouse": by_warehouse,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitChange {
    #[serde(default, deserialize_with = "crate::json::present")]
    per_buyer: Option<Option<i64>>,
}

async fn set_limit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(sku): Path<String>,
    Json(change): Json<LimitChange>,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let info = sku_for(services, caller, &sku)?;
    let per_buyer = change
        .per_buyer
        .ok_or_else(|| ApiError::validation("per_buyer: required (a number, or null to lift)"))?;
    let per_buyer = per_buyer
        .map(|limit| {
            u32::try_from(limit)
                .ok()
                .filter(|limit| (1..=PER_BUYER_MAX).contains(&i64::from(*limit)))
        })
        .map(|limit| {
            limit.ok_or_else(|| {
                ApiError::validation(format!(
                    "per_buyer: an integer from 1 to {PER_BUYER_MAX}, or null"
                ))
            })
        })
        .transpose()?;
    let command = Command::SetBuyerLimit { sku: info.id, per_buyer };
    match crate::submit(&services.engine, command).await?.outcome {
        Outcome::BuyerLimitSet => Ok(Json(json!({ "sku": info.sku, "per_buyer": per_buyer }))),
        Outcome::Rejected(rejection) => Err(rejection_error(rejection)),
        other => Err(ApiError::internal(format!("SetBuyerLimit answered {other:?}"))),
    }
}

// ----- Warehouses and delivery -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WarehouseChange {
    name: String,
    postal_code: String,
    serves: Vec<Serves>,
}

/// `PUT /v1/warehouses/{id}`: creates or replaces a warehouse. The path id is its name in the
/// API; its rowid, assigned on creation and never changed, is its engine id.
async fn upsert_warehouse(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(change): Json<WarehouseChange>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let services = state.services()?;
    if !is_identifier(&name) {
        return Err(ApiError::validation("id: 1 to 64 letters, digits, '.', '_' or '-'"));
    }
    let display_name = text_field("name", &change.name, 1..=200)?;
    let postal_code =
        postal_field("postal_code", change.postal_code.trim(), 1..=POSTAL_CODE_CHARS_MAX)?;
    if change.serves.len() > SERVES_MAX {
        return Err(ApiError::validation(format!("serves: at most {SERVES_MAX} prefixes")));
    }
    let mut prefixes = HashSet::new();
    for (index, serves) in change.serves.iter().enumerate() {
        let field = format!("serves[{index}].postal_prefix");
        postal_field(&field, &serves.postal_prefix, 0..=POSTAL_CODE_CHARS_MAX)?;
        if !prefixes.insert(serves.postal_prefix.as_str()) {
            return Err(ApiError::validation(format!("{field}: listed twice")));
        }
        if serves.eta_days > ETA_DAYS_MAX {
            return Err(ApiError::validation(format!(
                "serves[{index}].eta_days: at most {ETA_DAYS_MAX}"
            )));
        }
    }
    let warehouses_max = engine_limits(services).await?.warehouses_max;
    let serves = change.serves;
    let warehouse = services
        .db
        .write_then(
            move |transaction| {
                let serves_json = json!(serves).to_string();
                let existing: Option<i64> = transaction
                    .query_row("SELECT id FROM warehouses WHERE name = ?1", [&name], |row| {
                        row.get(0)
                    })
                    .optional()?;
                let id = if let Some(id) = existing {
                    transaction.execute(
                        "UPDATE warehouses SET display_name = ?2, postal_code = ?3, serves = ?4
                         WHERE id = ?1",
                        params![id, display_name, postal_code, serves_json],
                    )?;
                    id
                } else {
                    transaction.execute(
                        "INSERT INTO warehouses (name, display_name, postal_code, serves)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![name, display_name, postal_code, serves_json],
                    )?;
                    transaction.last_insert_rowid()
                };
                // Like SKU ids, warehouse ids are dense engine ids: refuse those it cannot hold.
                let id =
                    u16::try_from(id).ok().filter(|id| *id < warehouses_max).ok_or_else(|| {
                        ApiError::conflict(format!(
                            "the platform holds the most warehouses it can ({warehouses_max})"
                        ))
                    })?;
                Ok(WarehouseInfo { id: WarehouseId(id), name, display_name, postal_code, serves })
            },
            on_registry(&state, |registry, warehouse: &WarehouseInfo| {
                registry.put_warehouse(warehouse.clone());
            }),
        )
        .await?;
    Ok(Json(json!({
        "id": warehouse.name,
        "name": warehouse.display_name,
        "postal_code": warehouse.postal_code,
        "serves": warehouse.serves,
    })))
}

#[derive(Deserialize)]
struct ServiceabilityQuery {
    sku: Option<String>,
    postal_code: Option<String>,
}

/// `GET /v1/serviceability`: the warehouse a one-unit line would be taken from, the same choice
/// the checkout makes: the first by ETA, then id, that serves the code and has a unit available.
async fn serviceability(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ServiceabilityQuery>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let Query(query) = query?;
    let sku = query.sku.ok_or_else(|| ApiError::validation("sku: required"))?;
    let postal_code =
        query.postal_code.ok_or_else(|| ApiError::validation("postal_code: required"))?;
    let postal_code = postal_field("postal_code", postal_code.trim(), 1..=POSTAL_CODE_CHARS_MAX)?;
    let info = services.catalog.sku(&sku).ok_or_else(|| ApiError::not_found_skus(vec![sku]))?;
    let candidates = services.catalog.warehouses_for(&postal_code);
    let id = info.id;
    let available: HashMap<WarehouseId, u32> = if candidates.is_empty() {
        HashMap::new()
    } else {
        let cells = crate::stock_cells(&services.engine, &[id]).await?.pop().unwrap_or_default();
        cells.into_iter().map(|(warehouse, level)| (warehouse, level.available())).collect()
    };
    let chosen = candidates
        .into_iter()
        .find(|(warehouse, _)| available.get(&warehouse.id).is_some_and(|units| *units > 0));
    Ok(Json(match chosen {
        Some((warehouse, eta_days)) => {
            json!({"deliverable": true, "eta_days": eta_days, "warehouse": warehouse.name})
        }
        None => json!({"deliverable": false, "eta_days": null, "warehouse": null}),
    }))
}

// ----- The registry -----

/// A sellable SKU as the checkout sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkuInfo {
    pub id: SkuId,
    pub sku: String,
    pub product_id: i64,
    pub seller_id: i64,
    pub title: String,
    pub price_cents: i64,
    pub currency: String,
}

/// One postal prefix a warehouse serves, and how many days delivery takes there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serves {
    pub postal_prefix: String,
    pub eta_days: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarehouseInfo {
    pub id: WarehouseId,
    /// The id in the API path (`PUT /v1/warehouses/{id}`).
    pub name: String,
    pub display_name: String,
    pub postal_code: String,
    pub serves: Vec<Serves>,
}

impl WarehouseInfo {
    /// The delivery time to `postal_code`, through the longest matching prefix; `None` when the
    /// warehouse does not serve it. A prefix of `""` serves every code.
    pub fn eta_days(&self, postal_code: &str) -> Option<u32> {
        self.serves
            .iter()
            .filter(|serves| postal_code.starts_with(&serves.postal_prefix))
            .max_by_key(|serves| serves.postal_prefix.len())
            .map(|serves| serves.eta_days)
    }
}

/// In-memory view of SKUs (live ones only) and warehouses.
#[derive(Debug, Default)]
pub struct Registry {
    skus: RwLock<HashMap<String, SkuInfo>>,
    warehouses: RwLock<Vec<WarehouseInfo>>,
}

impl Registry {
    /// Loads every live SKU and every warehouse from the database.
    pub async fn load(db: &Db) -> Result<Registry, ApiError> {
        db.read(|connection| {
            let registry = Registry::default();
            registry.reload_from(connection)?;
            Ok(registry)
        })
        .await
    }

    /// Replaces the registry's contents with the database's.
    pub fn reload_from(&self, connection: &Connection) -> Result<(), ApiError> {
        let mut statement = connection.prepare(
            "SELECT s.id, s.sku, s.product_id, p.seller_id, p.title, s.price_cents, s.currency
             FROM skus s JOIN products p ON p.id = s.product_id
             WHERE s.deleted = 0 AND p.deleted = 0",
        )?;
        let skus = statement
            .query_map([], |row| {
                Ok(SkuInfo {
                    id: SkuId(row.get(0)?),
                    sku: row.get(1)?,
                    product_id: row.get(2)?,
                    seller_id: row.get(3)?,
                    title: row.get(4)?,
                    price_cents: row.get(5)?,
                    currency: row.get(6)?,
                })
            })?
            .map(|sku| sku.map(|sku| (sku.sku.clone(), sku)))
            .collect::<Result<HashMap<_, _>, _>>()?;
        let mut statement = connection.prepare(
            "SELECT id, name, display_name, postal_code, serves FROM warehouses ORDER BY id",
        )?;
        let warehouses = statement
            .query_map([], |row| {
                let serves: String = row.get(4)?;
                Ok(WarehouseInfo {
                    id: WarehouseId(row.get(0)?),
                    name: row.get(1)?,
                    display_name: row.get(2)?,
                    postal_code: row.get(3)?,
                    serves: serde_json::from_str(&serves).unwrap_or_default(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        *write(&self.skus) = skus;
        *write(&self.warehouses) = warehouses;
        Ok(())
    }

    pub fn sku(&self, sku: &str) -> Option<SkuInfo> {
        read(&self.skus).get(sku).cloned()
    }

    /// Adds or replaces a live SKU (after its row committed).
    pub fn put_sku(&self, info: SkuInfo) {
        write(&self.skus).insert(info.sku.clone(), info);
    }

    /// Forgets a SKU (deleted, or its product deleted).
    pub fn remove_sku(&self, sku: &str) {
        write(&self.skus).remove(sku);
    }

    pub fn put_warehouse(&self, info: WarehouseInfo) {
        let mut warehouses = write(&self.warehouses);
        match warehouses.iter_mut().find(|w| w.id == info.id) {
            Some(existing) => *existing = info,
            None => {
                warehouses.push(info);
                warehouses.sort_by_key(|w| w.id);
            }
        }
    }

    pub fn warehouses(&self) -> Vec<WarehouseInfo> {
        read(&self.warehouses).clone()
    }

    /// The name (API id) of a warehouse; its number when unknown (the engine only ever holds
    /// registered warehouses, so that is a bug elsewhere, shown rather than hidden).
    pub fn warehouse_name(&self, id: WarehouseId) -> String {
        read(&self.warehouses)
            .iter()
            .find(|w| w.id == id)
            .map_or_else(|| id.0.to_string(), |w| w.name.clone())
    }

    pub fn warehouse_by_name(&self, name: &str) -> Option<WarehouseInfo> {
        read(&self.warehouses).iter().find(|w| w.name == name).cloned()
    }

    /// The warehouses serving `postal_code`, in the order a line tries them: by delivery time, then
    /// by warehouse id (API.md, checkout).
    pub fn warehouses_for(&self, postal_code: &str) -> Vec<(WarehouseInfo, u32)> {
        let mut candidates: Vec<(WarehouseInfo, u32)> = read(&self.warehouses)
            .iter()
            .filter_map(|w| w.eta_days(postal_code).map(|eta| (w.clone(), eta)))
            .collect();
        candidates.sort_by_key(|(w, eta)| (*eta, w.id));
        candidates
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_decides_and_the_empty_prefix_serves_all() {
        let warehouse = WarehouseInfo {
            id: WarehouseId(1),
            name: "w".into(),
            display_name: "W".into(),
            postal_code: "10115".into(),
            serves: vec![
                Serves { postal_prefix: String::new(), eta_days: 5 },
                Serves { postal_prefix: "10".into(), eta_days: 1 },
            ],
        };
        assert_eq!(warehouse.eta_days("10117"), Some(1));
        assert_eq!(warehouse.eta_days("80331"), Some(5));
    }
}
