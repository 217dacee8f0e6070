//! The projection's store in SQLite: `orders` (one row per order, holding its status, its history
//! as a JSON array of `{status, at}` and its payment's status), `order_skus` (the lines by seller,
//! for sellers' views and reconciliation), `checkout_answers`, the watermark in `meta`, and the
//! emptying of a checked-out cart.
//!
//! It runs inside a transaction the caller owns (the gateway's single database writer), and it
//! writes behind: the orders a transaction touches are kept in memory, changed there, and written
//! once each by [`SqliteStore::flush`], which the caller runs before committing. An order reserved
//! and paid within one transaction (the common case under load: the projector writes whatever
//! queued while its last write ran) is one `INSERT`, not an insert and two updates. The watermark
//! is written by the same flush, so the rows and the watermark still commit together. Statements
//! are prepared once per connection (`prepare_cached`).

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Transaction};
use surge_engine::{OrderId, Sequence, Timestamp};

use crate::projection::{KeyedAnswer, NewOrder, OrderStore};
use crate::status::{OrderStatus, PaymentStatus};

/// The `meta` key of the projection's watermark.
pub const WATERMARK_KEY: &str = "orders_projected";

/// An order as this transaction will leave it.
#[derive(Debug)]
struct Draft {
    /// `Some` for an order this transaction inserts; `None` for one that exists already.
    new: Option<NewOrder>,
    status: OrderStatus,
    payment: PaymentStatus,
    total_cents: i64,
    /// The whole history, oldest first: `(status, at)`.
    history: Vec<(String, String)>,
    changed: bool,
}

/// [`OrderStore`] over an open SQLite transaction. Call [`SqliteStore::flush`] before the commit.
#[derive(Debug)]
pub struct SqliteStore<'a> {
    tx: &'a Transaction<'a>,
    watermark: Option<Sequence>,
    watermark_changed: bool,
    drafts: BTreeMap<OrderId, Draft>,
}

impl<'a> SqliteStore<'a> {
    pub fn new(tx: &'a Transaction<'a>) -> SqliteStore<'a> {
        SqliteStore { tx, watermark: None, watermark_changed: false, drafts: BTreeMap::new() }
    }

    /// Writes every order this transaction changed, and the watermark.
    pub fn flush(&mut self) -> rusqlite::Result<()> {
        for (&order, draft) in &self.drafts {
            if !draft.changed {
                continue;
            }
            let history = history_json(&draft.history);
            match &draft.new {
                Some(new) => insert(self.tx, new, draft, &history)?,
                None => {
                    self.tx
                        .prepare_cached(
                            "UPDATE orders SET status = ?2, payment = ?3, history = ?4 WHERE id = ?1",
                        )?
                        .execute(params![
                            id(order)?,
                            draft.status.as_str(),
                            draft.payment.as_str(),
                            history
                        ])?;
                }
            }
        }
        self.drafts.clear();
        if self.watermark_changed {
            if let Some(through) = self.watermark {
                self.tx
                    .prepare_cached(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(params![WATERMARK_KEY, through.0.to_string()])?;
            }
            self.watermark_changed = false;
        }
        Ok(())
    }

    /// The draft of an order, read from its row the first time; `None` when there is no order.
    fn draft(&mut self, order: OrderId) -> rusqlite::Result<Option<&mut Draft>> {
        if !self.drafts.contains_key(&order) {
            let row: Option<(String, String, i64, String)> = self
                .tx
                .prepare_cached(
                    "SELECT status, payment, total_cents, history FROM orders WHERE id = ?1",
                )?
                .query_row([id(order)?], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()?;
            let Some((status, payment, total_cents, history)) = row else { return Ok(None) };
            let (Some(status), Some(payment)) =
                (OrderStatus::parse(&status), PaymentStatus::parse(&payment))
            else {
                return Err(invalid(format!("order {} has status {status}/{payment}", order.0)));
            };
            let history: Vec<Step> = serde_json::from_str(&history).map_err(conversion)?;
            let history = history.into_iter().map(|step| (step.status, step.at)).collect();
            let draft = Draft { new: None, status, payment, total_cents, history, changed: false };
            self.drafts.insert(order, draft);
        }
        Ok(self.drafts.get_mut(&order))
    }
}

/// One step of the stored history.
#[derive(serde::Serialize, serde::Deserialize)]
struct Step {
    status: String,
    at: String,
}

fn history_json(history: &[(String, String)]) -> String {
    let steps: Vec<Step> = history
        .iter()
        .map(|(status, at)| Step { status: status.clone(), at: at.clone() })
        .collect();
    serde_json::to_string(&steps).expect("a history serializes")
}

fn insert(
    tx: &Transaction<'_>,
    new: &NewOrder,
    draft: &Draft,
    history: &str,
) -> rusqlite::Result<()> {
    let placed = &new.placed;
    let order_id = id(placed.id)?;
    let lines = serde_json::to_string(&placed.lines).map_err(conversion)?;
    let shipping = serde_json::to_string(&new.shipping).map_err(conversion)?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO orders (id, buyer_id, created_at, expires_at, total_cents,
             currency, lines, shipping, payment_token, status, history, payment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
        new.payment_token,
        draft.status.as_str(),
        history,
        draft.payment.as_str(),
    ])?;
    let mut line_insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO order_skus (order_id, sku, seller_id, quantity)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (line, seller) in placed.lines.iter().zip(&new.sellers) {
        line_insert.execute(params![order_id, line.sku, seller, line.quantity])?;
    }
    Ok(())
}

/// The watermark as stored (0 when nothing was projected yet).
pub fn read_watermark(connection: &rusqlite::Connection) -> rusqlite::Result<Sequence> {
    let value: Option<String> = connection
        .query_row("SELECT value FROM meta WHERE key = ?1", [WATERMARK_KEY], |row| row.get(0))
        .optional()?;
    Ok(Sequence(value.and_then(|value| value.parse().ok()).unwrap_or(0)))
}

fn conversion(error: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(error))
}

fn invalid(message: String) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(message.into())
}

fn id(order: OrderId) -> rusqlite::Result<i64> {
    i64::try_from(order.0).map_err(conversion)
}

impl OrderStore for SqliteStore<'_> {
    type Error = rusqlite::Error;

    fn watermark(&mut self) -> rusqlite::Result<Sequence> {
        if let Some(watermark) = self.watermark {
            return Ok(watermark);
        }
        let watermark = read_watermark(self.tx)?;
        self.watermark = Some(watermark);
        Ok(watermark)
    }

    fn set_watermark(&mut self, through: Sequence) -> rusqlite::Result<()> {
        self.watermark = Some(through);
        self.watermark_changed = true;
        Ok(())
    }

    fn insert_order(&mut self, order: &NewOrder) -> rusqlite::Result<()> {
        let draft = Draft {
            status: OrderStatus::PendingPayment,
            payment: PaymentStatus::Pending,
            total_cents: order.placed.total_cents,
            history: vec![(
                OrderStatus::PendingPayment.as_str().to_owned(),
                order.placed.created_at.clone(),
            )],
            new: Some(order.clone()),
            changed: true,
        };
        self.drafts.insert(order.placed.id, draft);
        Ok(())
    }

    fn order_state(
        &mut self,
        order: OrderId,
    ) -> rusqlite::Result<Option<(OrderStatus, PaymentStatus, i64)>> {
        Ok(self.draft(order)?.map(|draft| (draft.status, draft.payment, draft.total_cents)))
    }

    fn set_status(
        &mut self,
        order: OrderId,
        status: OrderStatus,
        _sequence: Sequence,
        at: Timestamp,
    ) -> rusqlite::Result<()> {
        // The history is in the order the projection applies commands: the journal's.
        if let Some(draft) = self.draft(order)? {
            draft.status = status;
            draft.history.push((status.as_str().to_owned(), surge_engine::time::rfc3339(at)));
            draft.changed = true;
        }
        Ok(())
    }

    fn set_payment(
        &mut self,
        order: OrderId,
        status: PaymentStatus,
        _at: Timestamp,
    ) -> rusqlite::Result<()> {
        if let Some(draft) = self.draft(order)? {
            draft.payment = status;
            draft.changed = true;
        }
        Ok(())
    }

    fn insert_answer(&mut self, answer: &KeyedAnswer) -> rusqlite::Result<()> {
        let sequence = i64::try_from(answer.sequence.0).map_err(conversion)?;
        let order = match answer.answer {
            crate::projection::Answer::Placed { order } => Some(id(order)?),
            _ => None,
        };
        let skus = if answer.answer.skus().is_empty() {
            None
        } else {
            Some(serde_json::to_string(answer.answer.skus()).map_err(conversion)?)
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
        let version = i64::try_from(version).map_err(conversion)?;
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
