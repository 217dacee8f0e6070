//! `surge journal verify | inspect | replay`: the operator's tools for a data directory.
//!
//! A crate of its own beside the journal library: the library knows records and bytes only, and
//! these tools also need the engine's command encoding and its restore. The `surge` binary calls
//! them for its `journal` subcommands.
//!
//! All three only read. `verify` checks every record (framing, checksum, sequence, and that the
//! payload decodes as a command, with its attachment when it has one) and exits 2 naming the
//! segment and byte offset of the first bad record; a torn final record is reported but is not an
//! error, because the next start cuts it. `replay` rebuilds the engine as a start would and
//! prints its state digest, so two nodes (or a node and a backup) can be compared without serving
//! traffic.
//!
//! All three read the segments that journal retention moved into `archive/` too, as one journal
//! with `journal/` ([`surge_journal::WithArchive`]): `verify` checks them, and that they continue
//! into the journal; `inspect --from` and `replay --to` reach back into them. A start reads
//! `journal/` only, which retention keeps sufficient for it.

use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};
use surge_engine::time::rfc3339;
use surge_engine::{Command, Expiry, Limits, ReleaseReason, Sequence, Timestamp};
use surge_journal::{FsStorage, JournalError, WithArchive};
use surge_pipeline::decode_payload;

/// Exit code for a journal that is damaged somewhere other than its final record.
const EXIT_CORRUPT: u8 = 2;

/// The journal and snapshot storages of a data directory, which must exist.
pub fn open_storages(data_dir: &Path) -> anyhow::Result<(FsStorage, FsStorage)> {
    if !data_dir.is_dir() {
        anyhow::bail!("data directory {} does not exist", data_dir.display());
    }
    let journal = FsStorage::open(&data_dir.join("journal")).context("open journal directory")?;
    let snapshots =
        FsStorage::open(&data_dir.join("snapshots")).context("open snapshot directory")?;
    Ok((journal, snapshots))
}

/// The journal of a data directory behind the segments retention archived, read as one. Creates
/// nothing: without an `archive/` directory, the journal alone.
pub fn open_journal_with_archive(data_dir: &Path) -> anyhow::Result<WithArchive<FsStorage>> {
    let (journal, _) = open_storages(data_dir)?;
    let archive_dir = data_dir.join("archive");
    let archive = if archive_dir.is_dir() {
        Some(FsStorage::open(&archive_dir).context("open archive directory")?)
    } else {
        None
    };
    Ok(WithArchive::new(journal, archive))
}

/// `surge journal verify`.
pub fn verify(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let journal = open_journal_with_archive(data_dir)?;
    let recovery = match surge_journal::scan(&journal) {
        Ok(recovery) => recovery,
        Err(error @ JournalError::Corrupt { .. }) => {
            println!("{}", json!({"ok": false, "error": error.to_string()}));
            return Ok(ExitCode::from(EXIT_CORRUPT));
        }
        Err(error) => return Err(error.into()),
    };
    let mut records = 0u64;
    let mut bad_payload = None;
    surge_journal::read_from(&journal, 0, |record| {
        if let Err(error) = decode_payload(record.kind, record.payload) {
            bad_payload = Some(format!(
                "record {} in segment {} at byte {} does not decode: {error}",
                record.seq, record.segment, record.offset
            ));
            return ControlFlow::Break(());
        }
        records += 1;
        ControlFlow::Continue(())
    })?;
    if let Some(error) = bad_payload {
        println!("{}", json!({"ok": false, "error": error}));
        return Ok(ExitCode::from(EXIT_CORRUPT));
    }
    let torn = recovery.torn_tail.as_ref().map(
        |torn| json!({"segment": torn.segment, "offset": torn.offset, "bytes": torn.bytes_cut}),
    );
    println!(
        "{}",
        json!({
            "ok": true,
            "records": records,
            "segments": recovery.segments.len(),
            "archived_segments": journal.archived_segments()?,
            "first_sequence": recovery.segments.first().map(|segment| segment.first_seq),
            "last_sequence": recovery.next_seq - 1,
            "torn_tail": torn,
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// `surge journal inspect`.
pub fn inspect(data_dir: &Path, from: u64, limit: Option<u64>) -> anyhow::Result<ExitCode> {
    let journal = open_journal_with_archive(data_dir)?;
    let mut printed = 0u64;
    let mut failure = None;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    surge_journal::read_from(&journal, from, |record| {
        if limit.is_some_and(|limit| printed >= limit) {
            return ControlFlow::Break(());
        }
        let command = match decode_payload(record.kind, record.payload) {
            Ok((command, _)) => command_json(&command),
            Err(error) => {
                failure = Some(anyhow::anyhow!(
                    "record {} in segment {} at byte {} does not decode: {error}",
                    record.seq,
                    record.segment,
                    record.offset
                ));
                return ControlFlow::Break(());
            }
        };
        let line =
            json!({"seq": record.seq, "at": rfc3339(Timestamp(record.at)), "command": command});
        if std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes()).is_err() {
            // The reader went away (`| head`): stop quietly.
            return ControlFlow::Break(());
        }
        printed += 1;
        ControlFlow::Continue(())
    })?;
    drop(out);
    match failure {
        Some(error) => Err(error),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// `surge journal replay`.
pub fn replay(data_dir: &Path, to: Option<u64>, limits: Limits) -> anyhow::Result<ExitCode> {
    let (_, snapshots) = open_storages(data_dir)?;
    let journal = open_journal_with_archive(data_dir)?;
    let started = std::time::Instant::now();
    let recovery = surge_journal::scan(&journal)?;
    let (engine, report) =
        surge_pipeline::restore(limits, &journal, &snapshots, &recovery, to.map(Sequence))?;
    engine.check_invariants();
    let torn = report.torn_tail.as_ref().map(
        |torn| json!({"segment": torn.segment, "offset": torn.offset, "bytes": torn.bytes_cut}),
    );
    println!(
        "{}",
        json!({
            "sequence": engine.last_sequence().0,
            "at": rfc3339(engine.last_at()),
            "snapshot_sequence": report.snapshot_sequence,
            "replayed": report.replayed,
            "live_orders": engine.live_orders(),
            "digest": format!("{:016x}", engine.digest()),
            "torn_tail": torn,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// The JSON shape of a command in `surge journal inspect` (documented in docs/formats.md).
pub fn command_json(command: &Command) -> Value {
    match *command {
        Command::SetStock { sku, warehouse, on_hand } => {
            json!({"type": "set_stock", "sku": sku.0, "warehouse": warehouse.0, "on_hand": on_hand})
        }
        Command::SetBuyerLimit { sku, per_buyer } => {
            json!({"type": "set_buyer_limit", "sku": sku.0, "per_buyer": per_buyer})
        }
        Command::Reserve { buyer, expiry, cart, lines, warehouses } => {
            let mut reserve = json!({
                "type": "reserve",
                "buyer": buyer.0,
                "cart_version": cart.map(|version| version.0),
                "lines": lines.as_slice().iter()
                    .map(|line| json!({"sku": line.sku.0, "quantity": line.quantity}))
                    .collect::<Vec<_>>(),
                "warehouses": warehouses.as_slice().iter().map(|w| w.0).collect::<Vec<_>>(),
            });
            // Exactly one of the two: the deadline as sent (the field tag 3 always printed), or
            // the time to live after the record's `at`, in nanoseconds as journaled.
            match expiry {
                Expiry::At(expires_at) => reserve["expires_at"] = json!(rfc3339(expires_at)),
                Expiry::After { ttl_ns } => reserve["ttl_ns"] = json!(ttl_ns),
            }
            reserve
        }
        Command::Commit { order } => json!({"type": "commit", "order": order.0}),
        Command::Release { order, reason } => json!({
            "type": "release",
            "order": order.0,
            "reason": match reason {
                ReleaseReason::PaymentFailed => "payment_failed",
                ReleaseReason::Cancelled => "cancelled",
            },
        }),
        Command::Expire => json!({"type": "expire"}),
        Command::Cancel { order } => json!({"type": "cancel", "order": order.0}),
        Command::Ship { order } => json!({"type": "ship", "order": order.0}),
        Command::Deliver { order } => json!({"type": "deliver", "order": order.0}),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use surge_engine::{BuyerId, LineRequest, LineRequests, SkuId, WarehouseChoices, WarehouseId};

    fn reserve(expiry: Expiry) -> Command {
        Command::Reserve {
            buyer: BuyerId(5),
            expiry,
            cart: None,
            lines: LineRequests::from_slice(&[LineRequest { sku: SkuId(1), quantity: 2 }]).unwrap(),
            warehouses: WarehouseChoices::from_slice(&[WarehouseId(3)]).unwrap(),
        }
    }

    #[test]
    fn a_reserve_prints_its_deadline_or_its_time_to_live() {
        let at = command_json(&reserve(Expiry::At(Timestamp(0))));
        assert_eq!(at["expires_at"], "1970-01-01T00:00:00.000000000Z");
        assert!(at.get("ttl_ns").is_none(), "{at}");
        let after = command_json(&reserve(Expiry::After { ttl_ns: 900_000_000_001 }));
        assert_eq!(after["ttl_ns"], 900_000_000_001_u64);
        assert!(after.get("expires_at").is_none(), "{after}");
        assert_eq!(after["buyer"], 5);
        assert_eq!(after["lines"][0]["quantity"], 2);
        assert_eq!(after["warehouses"][0], 3);
        assert_eq!(after["cart_version"], Value::Null, "buy now claims no cart");
    }

    #[test]
    fn a_checkout_prints_its_cart_version() {
        let Command::Reserve { buyer, expiry, lines, warehouses, .. } =
            reserve(Expiry::After { ttl_ns: 1 })
        else {
            unreachable!()
        };
        let cart = Some(surge_engine::CartVersion(u64::MAX));
        let checkout = command_json(&Command::Reserve { buyer, expiry, cart, lines, warehouses });
        assert_eq!(checkout["cart_version"], u64::MAX);
    }
}
