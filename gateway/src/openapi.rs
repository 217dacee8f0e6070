//! The OpenAPI 3.1 document of the routes this build serves, at `GET /openapi.json`.
//!
//! Written by hand next to the router rather than generated: the document is part of the contract
//! of API.md, and a test checks that every route the router serves is in it and the other way round.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::json::Json;
use crate::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/openapi.json", get(|| async { Json(document()) }))
}

/// Every served route as `(method, path)`, in the document's order. The router test compares
/// this list with what actually answers.
pub const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    // (method, path, tag, summary)
    ("get", "/healthz", "operations", "Process is up"),
    ("get", "/readyz", "operations", "Recovered and accepting commands"),
    ("get", "/metrics", "operations", "Prometheus metrics (admin)"),
    ("get", "/openapi.json", "operations", "This document"),
    ("post", "/v1/users", "users", "Sign up as buyer or seller"),
    ("post", "/v1/sessions", "users", "Sign in for a bearer token"),
    ("get", "/v1/me", "users", "Own profile"),
    ("patch", "/v1/me", "users", "Change name, postal code, address (null clears)"),
    ("post", "/v1/admin/tokens", "users", "Ready-made users for load tests (admin)"),
    ("post", "/v1/products", "catalog", "Create a product (seller)"),
    ("post", "/v1/products/bulk", "catalog", "Create products from NDJSON (seller)"),
    ("get", "/v1/products/{id}", "catalog", "A product with live availability"),
    ("patch", "/v1/products/{id}", "catalog", "Change a product (owner)"),
    ("delete", "/v1/products/{id}", "catalog", "Delete a product (owner)"),
    ("get", "/v1/categories", "catalog", "Categories with product counts"),
    ("put", "/v1/skus/{sku}/stock", "catalog", "Set units on hand in a warehouse (owner)"),
    ("get", "/v1/skus/{sku}/stock", "catalog", "Stock counters by warehouse (owner, admin)"),
    ("put", "/v1/skus/{sku}/limit", "catalog", "Set or lift the per-buyer limit (owner)"),
    ("put", "/v1/warehouses/{id}", "catalog", "Create or change a warehouse (admin)"),
    ("get", "/v1/serviceability", "catalog", "Can a SKU be delivered to a postal code"),
    ("get", "/v1/search", "search", "Products by words, filters and delivery, with facets"),
    ("get", "/v1/suggest", "search", "Completions of a prefix"),
    ("get", "/v1/cart", "cart", "Own cart"),
    ("delete", "/v1/cart", "cart", "Empty the cart"),
    ("put", "/v1/cart/items/{sku}", "cart", "Set a cart line (0 removes)"),
    ("delete", "/v1/cart/items/{sku}", "cart", "Remove a cart line"),
    ("post", "/v1/checkout", "checkout", "Reserve all lines atomically and start payment"),
    ("post", "/v1/payments/webhook", "checkout", "Signed payment result from a provider"),
    ("get", "/v1/orders", "orders", "Own orders, newest first"),
    ("get", "/v1/orders/{id}", "orders", "An order with its history"),
    ("post", "/v1/orders/{id}/cancel", "orders", "Cancel before shipping"),
    ("post", "/v1/orders/{id}/ship", "orders", "Mark shipped (admin or seller of every line)"),
    ("post", "/v1/orders/{id}/deliver", "orders", "Mark delivered (admin or seller of every line)"),
    ("get", "/v1/seller/orders", "orders", "Orders holding the seller's SKUs"),
    ("get", "/v1/seller/analytics", "orders", "Units and revenue per SKU"),
    ("get", "/v1/admin/reconciliation", "operations", "Engine counters against order records"),
    ("get", "/v1/admin/engine", "operations", "Engine sequence, journal and replication"),
];

fn problem_responses() -> Value {
    let problem = json!({"$ref": "#/components/responses/Problem"});
    json!({
        "401": problem, "403": problem, "404": problem, "405": problem, "409": problem,
        "413": problem, "422": problem, "429": problem, "503": problem,
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, tag, summary) in OPERATIONS {
        let mut responses = problem_responses();
        let success = match (*method, *path) {
            ("post", "/v1/users" | "/v1/products" | "/v1/checkout" | "/v1/admin/tokens") => "201",
            ("delete", _) => "204",
            _ => "200",
        };
        responses[success] = json!({"description": "Success", "content": {"application/json": {}}});
        let mut operation = json!({"tags": [tag], "summary": summary, "responses": responses});
        if (path.starts_with("/v1/") || *path == "/metrics")
            && !matches!(
                *path,
                "/v1/users"
                    | "/v1/sessions"
                    | "/v1/payments/webhook"
                    | "/v1/search"
                    | "/v1/suggest"
            )
        {
            operation["security"] = json!([{"bearer": []}]);
        }
        if *path == "/v1/checkout" {
            operation["parameters"] = json!([{
                "name": "Idempotency-Key", "in": "header", "required": true,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }]);
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/CheckoutRequest"}}}});
        }
        if *path == "/v1/payments/webhook" {
            operation["parameters"] = json!([{
                "name": "Surge-Signature", "in": "header", "required": true,
                "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">",
                "schema": {"type": "string"},
            }]);
        }
        let entry = paths.entry((*path).to_owned()).or_insert_with(|| json!({}));
        entry[*method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Surge",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A commerce backend that sells the last unit exactly once. Contract: API.md.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Problem": {
                "description": "An RFC 9457 problem document",
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            }},
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "code", "detail"],
                    "properties": {
                        "type": {"type": "string"}, "title": {"type": "string"},
                        "status": {"type": "integer"}, "detail": {"type": "string"},
                        "code": {"type": "string", "enum": [
                            "validation_failed", "unauthorized", "forbidden", "not_found", "conflict",
                            "out_of_stock", "not_deliverable", "purchase_limit_exceeded", "price_changed",
                            "idempotency_key_reused", "not_purchased", "rate_limited", "overloaded",
                            "not_primary", "payload_too_large", "method_not_allowed", "internal"]},
                        "skus": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "CheckoutRequest": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["shipping", "payment"],
                    "properties": {
                        "shipping": {
                            "type": "object", "additionalProperties": false,
                            "required": ["name", "line1", "city", "postal_code"],
                            "properties": {
                                "name": {"type": "string"}, "line1": {"type": "string"},
                                "city": {"type": "string"}, "postal_code": {"type": "string"},
                            },
                        },
                        "payment": {
                            "type": "object", "additionalProperties": false, "required": ["token"],
                            "properties": {"token": {"type": "string"}},
                        },
                        "items": {"type": "array", "maxItems": 16, "items": {
                            "type": "object", "additionalProperties": false,
                            "required": ["sku", "quantity"],
                            "properties": {
                                "sku": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                                "quantity": {"type": "integer", "minimum": 1},
                            },
                        }},
                        "expected_total_cents": {"type": "integer", "minimum": 0},
                    },
                },
            },
        },
    })
}
