//! The projection's store in SQLite: `orders` (one row per order, holding its status, its history
//! as a JSON array of `{status, at}` and its payment's status), `order_skus` (the lines by seller,
//! for sellers' views and reconciliation), `checkout_answers`, the watermark in `meta`, and the
//! emptying of a checked-out cart.
//!
//! It runs inside a transaction the caller owns (the gateway's single database writer), so the
//! rows of an output and the watermark commit together. Statements are prepared once per
//! connection (`prepare_cached`).

use rusqlite::{params, OptionalExtension, Transaction};
use surge_engine::{OrderId, Sequence, Timestamp};

use crate::projection::{KeyedAnswer, NewOrder, OrderStore};
use crate::status::{OrderStatus, PaymentStatus};

/// The `meta` key of the projection's watermark.
pub const WATERMARK_KEY: &str = "orders_projected";

/// [`OrderStore`] over an open SQLite transaction.
#[derive(Debug)]
pub struct SqliteStore<'a> {
    tx: &'a Transaction<'a>,
}

impl<'a> SqliteStore<'a> {
    pub fn new(tx: &'a Transaction<'a>) -> SqliteStore<'a> {
        SqliteStore { tx }
    }
}

/// The watermark as stored (0 when nothing was projected yet).
pub fn read_watermark(connection: &rusqlite::Connection) -> rusqlite::Result<Sequence> {
    let value: Option<String> = connection
        .query_row("SELECT value FROM meta WHERE key = ?1", [WATERMARK_KEY], |row| row.get(0))
        .optional()?;
    Ok(Sequence(value.and_then(|value| value.parse().ok()).unwrap_or(0)))
}

fn id(order: OrderId) -> rusqlite::Result<i64> {
    i64::try_from(order.0).map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))
}

fn text_at(at: Timestamp) -> String {
    surge_engine::time::rfc3339(at)
}

impl OrderStore for SqliteStore<'_> {
    type Error = rusqlite::Error;

    fn watermark(&mut self) -> rusqlite::Result<Sequence> {
        read_watermark(self.tx)
    }

    fn set_watermark(&mut self, through: Sequence) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![WATERMARK_KEY, through.0.to_string()])?;
        Ok(())
    }

    fn insert_order(&mut self, order: &NewOrder) -> rusqlite::Result<()> {
        let placed = &order.placed;
        let order_id = id(placed.id)?;
        let lines = serde_json::to_string(&placed.lines)
            .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
        let shipping = serde_json::to_string(&order.shipping)
            .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
        let history = serde_json::json!([{"status": "pending_payment", "at": placed.created_at}]);
        self.tx
            .prepare_cached(
                "INSERT OR IGNORE INTO orders (id, buyer_id, created_at, expires_at, total_cents,
                     currency, lines, shipping, payment_token, status, history, payment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending_payment', ?10, 'pending')",
            )?
            .execute(params![
                order_id,
                placed.buyer_id,
                placed.created_at,
                placed.expires_at,
                placed.total_cents,
                placed.currency,
                lines,
                shipping,
                order.payment_token,
                history.to_string(),
            ])?;
        let mut line_insert = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO order_skus (order_id, sku, seller_id, quantity)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (line, seller) in placed.lines.iter().zip(&order.sellers) {
            line_insert.execute(params![order_id, line.sku, seller, line.quantity])?;
        }
        Ok(())
    }

    fn order_state(
        &mut self,
        order: OrderId,
    ) -> rusqlite::Result<Option<(OrderStatus, PaymentStatus, i64)>> {
        let row: Option<(String, String, i64)> = self
            .tx
            .prepare_cached("SELECT status, payment, total_cents FROM orders WHERE id = ?1")?
            .query_row([id(order)?], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .optional()?;
        Ok(row.and_then(|(status, payment, amount)| {
            Some((OrderStatus::parse(&status)?, PaymentStatus::parse(&payment)?, amount))
        }))
    }

    fn set_status(
        &mut self,
        order: OrderId,
        status: OrderStatus,
        _sequence: Sequence,
        at: Timestamp,
    ) -> rusqlite::Result<()> {
        // The history is in the order the projection applies commands: the journal's.
        self.tx
            .prepare_cached(
                "UPDATE orders SET status = ?2,
                     history = json_insert(history, '$[#]', json_object('status', ?2, 'at', ?3))
                 WHERE id = ?1",
            )?
            .execute(params![id(order)?, status.as_str(), text_at(at)])?;
        Ok(())
    }

    fn set_payment(
        &mut self,
        order: OrderId,
        status: PaymentStatus,
        _at: Timestamp,
    ) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached("UPDATE orders SET payment = ?2 WHERE id = ?1")?
            .execute(params![id(order)?, status.as_str()])?;
        Ok(())
    }

    fn insert_answer(&mut self, answer: &KeyedAnswer) -> rusqlite::Result<()> {
        let sequence = i64::try_from(answer.sequence.0)
            .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
        let order = match answer.answer {
            crate::projection::Answer::Placed { order } => Some(id(order)?),
            _ => None,
        };
        let skus = if answer.answer.skus().is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(answer.answer.skus())
                    .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?,
            )
        };
        self.tx
            .prepare_cached(
                "INSERT OR IGNORE INTO checkout_answers
                     (seq, user_id, key, request_hash, outcome, order_id, skus, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                sequence,
                answer.buyer_id,
                answer.idempotency_key,
                &answer.request_hash[..],
                answer.answer.kind(),
                order,
                skus,
                i64::try_from(answer.at.0).unwrap_or(i64::MAX),
            ])?;
        Ok(())
    }

    fn cart_checked_out(&mut self, buyer_id: i64, version: u64) -> rusqlite::Result<()> {
        let version = i64::try_from(version)
            .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
        let bumped = self
            .tx
            .prepare_cached(
                "UPDATE cart_versions SET version = version + 1 WHERE user_id = ?1 AND version = ?2",
            )?
            .execute(params![buyer_id, version])?;
        if bumped > 0 {
            self.tx.prepare_cached("DELETE FROM carts WHERE user_id = ?1")?.execute([buyer_id])?;
        }
        Ok(())
    }
}
