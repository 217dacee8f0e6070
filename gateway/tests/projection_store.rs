//! The SQLite store of the order projection against the memory store the simulator checks: the
//! same outputs, projected in chunks, with failed transactions and outputs projected twice, must
//! leave the same orders, histories, payments and answers in both.

use std::sync::Arc;

use serde_json::Value;
use surge_engine::{
    BuyerId, CartVersion, Command, Engine, Expiry, Limits, LineRequest, LineRequests, OrderId,
    ReleaseReason, Sequence, SkuId, Timestamp, WarehouseChoices, WarehouseId,
};
use surge_gateway::db::Db;
use surge_gateway::error::ApiError;
use surge_orders_svc::memory::MemoryStore;
use surge_orders_svc::sqlite::SqliteStore;
use surge_orders_svc::{project, CheckoutRecord, RecordLine, Shipping};
use surge_pipeline::Output;

const SECOND: u64 = 1_000_000_000;

fn name(warehouse: WarehouseId) -> String {
    format!("w{}", warehouse.0)
}

fn record(key: &str, lines: usize) -> CheckoutRecord {
    CheckoutRecord {
        idempotency_key: key.to_owned(),
        request_hash: [5; 16],
        currency: "EUR".to_owned(),
        total_cents: 250 * lines as i64,
        lines: (0..lines)
            .map(|line| RecordLine {
                sku: format!("SKU-{line}"),
                unit_price_cents: 250,
                seller_id: 40 + line as i64,
            })
            .collect(),
        shipping: Shipping {
            name: "Ann".to_owned(),
            line1: "Main St 1".to_owned(),
            city: "Berlin".to_owned(),
            postal_code: "10115".to_owned(),
        },
        payment_token: "tok_ok".to_owned(),
    }
}

fn reserve(buyer: u64, lines: usize, cart: Option<u64>, ttl_s: u64) -> Command {
    let requests: Vec<LineRequest> =
        (0..lines).map(|line| LineRequest { sku: SkuId(line as u32), quantity: 1 }).collect();
    Command::Reserve {
        buyer: BuyerId(buyer),
        expiry: Expiry::After { ttl_ns: ttl_s * SECOND },
        cart: cart.map(CartVersion),
        lines: LineRequests::from_slice(&requests).unwrap(),
        warehouses: WarehouseChoices::from_slice(&[WarehouseId(1), WarehouseId(2)]).unwrap(),
    }
}

/// A day of a small shop, one output per command: placed orders paid, failed, cancelled before
/// and after payment, expired, paid too late, refused for stock, a cart raced by two tabs.
fn outputs() -> Vec<Output> {
    let mut engine = Engine::new(Limits::TEST);
    let mut outputs = Vec::new();
    let mut now = 1_000 * SECOND;
    let mut run = |command: Command, attachment: Option<CheckoutRecord>| -> Sequence {
        now += SECOND;
        let sequence = Sequence(outputs.len() as u64 + 1);
        let mut output = Output::default();
        let bytes = attachment.as_ref().map(CheckoutRecord::to_bytes);
        output.push(sequence, Timestamp(now), command, bytes.as_deref(), &mut engine);
        outputs.push(output);
        sequence
    };
    for sku in 0..3 {
        run(Command::SetStock { sku: SkuId(sku), warehouse: WarehouseId(2), on_hand: 12 }, None);
    }
    let mut placed = Vec::new();
    for buyer in 0..8u64 {
        let lines = 1 + (buyer as usize % 3);
        let ttl = if buyer == 5 || buyer == 6 { 3 } else { 600 };
        let order =
            run(reserve(buyer, lines, None, ttl), Some(record(&format!("k{buyer}"), lines)));
        placed.push(OrderId(order.0));
    }
    // SKU-0 is in every order so far: 8 units; 12 - 8 = 4 left, not enough for this buyer's 5.
    run(
        Command::Reserve {
            buyer: BuyerId(9),
            expiry: Expiry::After { ttl_ns: 600 * SECOND },
            cart: None,
            lines: LineRequests::from_slice(&[LineRequest { sku: SkuId(0), quantity: 5 }]).unwrap(),
            warehouses: WarehouseChoices::from_slice(&[WarehouseId(2)]).unwrap(),
        },
        Some(record("sold-out", 1)),
    );
    run(reserve(10, 1, Some(4), 600), Some(record("tab-1", 1)));
    run(reserve(10, 1, Some(4), 600), Some(record("tab-2", 1)));
    run(reserve(11, 1, None, 600), None);
    run(Command::Commit { order: placed[0] }, None);
    run(Command::Commit { order: placed[1] }, None);
    run(Command::Cancel { order: placed[1] }, None);
    run(Command::Release { order: placed[2], reason: ReleaseReason::PaymentFailed }, None);
    run(Command::Release { order: placed[3], reason: ReleaseReason::Cancelled }, None);
    run(Command::Commit { order: placed[3] }, None);
    run(Command::Commit { order: placed[4] }, None);
    run(Command::Ship { order: placed[4] }, None);
    run(Command::Deliver { order: placed[4] }, None);
    run(Command::Expire, None);
    run(Command::Commit { order: placed[5] }, None);
    run(Command::Commit { order: placed[0] }, None);
    outputs
}

/// Each order as comparable text: status, payment, the statuses of its history, its lines.
fn sqlite_orders(db_path: &std::path::Path) -> Vec<(u64, String, String, Vec<String>, Value)> {
    let connection = rusqlite::Connection::open(db_path).unwrap();
    let mut statement = connection
        .prepare("SELECT id, status, payment, history, lines FROM orders ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| {
            let history: String = row.get(3)?;
            let lines: String = row.get(4)?;
            let history: Vec<Value> = serde_json::from_str(&history).unwrap();
            Ok((
                row.get::<_, i64>(0)?.unsigned_abs(),
                row.get(1)?,
                row.get(2)?,
                history.iter().map(|step| step["status"].as_str().unwrap().to_owned()).collect(),
                serde_json::from_str(&lines).unwrap(),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn memory_orders(store: &MemoryStore) -> Vec<(u64, String, String, Vec<String>, Value)> {
    store
        .orders
        .iter()
        .map(|(id, stored)| {
            (
                id.0,
                stored.status.as_str().to_owned(),
                stored.payment.as_str().to_owned(),
                stored.history.iter().map(|(_, status, _)| status.as_str().to_owned()).collect(),
                serde_json::to_value(&stored.order.placed.lines).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_sqlite_store_projects_what_the_memory_store_projects() {
    let outputs = Arc::new(outputs());
    let mut memory = MemoryStore::default();
    let (mut work, mut skipped) = (Vec::new(), Vec::new());
    for output in outputs.iter() {
        project(&mut memory, output, &name, &mut work, &mut skipped).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("surge.db");
    let db = Db::open(&db_path).unwrap();
    db.write(|tx| {
        tx.execute("INSERT INTO cart_versions (user_id, version) VALUES (10, 4)", [])?;
        tx.execute(
            "INSERT INTO carts (user_id, sku, quantity, unit_price_cents, currency, added_at)
             VALUES (10, 'SKU-0', 1, 250, 'EUR', 'x')",
            [],
        )?;
        Ok(())
    })
    .await
    .unwrap();
    // Chunks of 1 to 5 outputs; every third transaction fails after projecting (a crash before
    // the commit) and is retried; every chunk starts two outputs early (projected again).
    let mut start = 0;
    let mut attempt = 0;
    while start < outputs.len() {
        attempt += 1;
        let end = (start + 1 + attempt % 5).min(outputs.len());
        let fail = attempt % 3 == 0;
        let chunk = Arc::clone(&outputs);
        let from = start.saturating_sub(2);
        let written = db
            .write_rebuildable(move |tx| {
                let mut store = SqliteStore::new(tx);
                let (mut work, mut skipped) = (Vec::new(), Vec::new());
                for output in &chunk[from..end] {
                    project(&mut store, output, &name, &mut work, &mut skipped)?;
                }
                store.flush()?;
                if fail {
                    return Err(ApiError::internal("a crash before the commit"));
                }
                Ok(())
            })
            .await;
        if written.is_ok() {
            start = end;
        }
    }

    assert_eq!(sqlite_orders(&db_path), memory_orders(&memory));
    let connection = rusqlite::Connection::open(&db_path).unwrap();
    let answers: Vec<(u64, String, Option<i64>)> = connection
        .prepare("SELECT seq, outcome, order_id FROM checkout_answers ORDER BY seq")
        .unwrap()
        .query_map([], |row| Ok((row.get::<_, i64>(0)?.unsigned_abs(), row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<(u64, String, Option<i64>)> = memory
        .answers
        .iter()
        .map(|(sequence, keyed)| {
            let order = match keyed.answer {
                surge_orders_svc::Answer::Placed { order } => Some(order.0 as i64),
                _ => None,
            };
            (sequence.0, keyed.answer.kind().to_owned(), order)
        })
        .collect();
    assert_eq!(answers, expected);
    let watermark = surge_orders_svc::sqlite::read_watermark(&connection).unwrap();
    assert_eq!(watermark, memory.watermark);
    // The checked-out cart is empty and its version moved on; the refused tab changed nothing.
    let (lines, version): (i64, i64) = connection
        .query_row(
            "SELECT (SELECT COUNT(*) FROM carts WHERE user_id = 10),
                    (SELECT version FROM cart_versions WHERE user_id = 10)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((lines, version), (0, 5));
    // Every kind of status made it through the comparison.
    assert!(memory.answers.values().any(|keyed| keyed.answer.kind() == "out_of_stock"));
    assert!(memory.answers.values().any(|keyed| keyed.answer.kind() == "cart_already_checked_out"));
    let statuses: std::collections::BTreeSet<String> =
        memory_orders(&memory).into_iter().map(|order| order.1).collect();
    for status in ["confirmed", "cancelled", "payment_failed", "delivered", "refunded", "expired"] {
        assert!(statuses.contains(status), "{status} missing from {statuses:?}");
    }
}
