//! The threaded pipeline end to end: durability before acknowledgement, restart, contention,
//! expiry driven by the sequencer's clock, and what a journal failure does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use surge_engine::{
    BuyerId, Command, Event, Expiry, Limits, LineRequest, LineRequests, OrderId, OrderState,
    Outcome, Rejection, ReleaseReason, Sequence, SkuId, WarehouseChoices, WarehouseId,
};
use surge_journal::MemStorage;
use surge_pipeline::DurableError;
use surge_pipeline::{Pipeline, PipelineConfig, SubmitError, SystemClock};

fn config() -> PipelineConfig {
    PipelineConfig {
        limits: Limits { orders_max: 4096, buyer_counters_max: 4096, ..Limits::TEST },
        queue_capacity: 1024,
        batch_max: 64,
        snapshot_every: 0,
        tick_interval: Duration::from_millis(5),
        ..PipelineConfig::default()
    }
}

fn reserve(buyer: u64, sku: u32, quantity: u32, ttl: Duration) -> Command {
    Command::Reserve {
        buyer: BuyerId(buyer),
        expiry: Expiry::After { ttl_ns: u64::try_from(ttl.as_nanos()).unwrap() },
        cart: None,
        lines: LineRequests::from_slice(&[LineRequest { sku: SkuId(sku), quantity }]).unwrap(),
        warehouses: WarehouseChoices::from_slice(&[WarehouseId(0), WarehouseId(1)]).unwrap(),
    }
}

/// A pipeline on in-memory storage whose journal must not fail.
fn start_in_memory() -> (Pipeline, surge_pipeline::RestoreReport) {
    Pipeline::start(
        config(),
        MemStorage::new(),
        MemStorage::new(),
        SystemClock,
        Arc::new(never_called),
    )
    .unwrap()
}

fn never_called(error: &DurableError) {
    panic!("journal failed: {error}");
}

#[test]
fn acknowledged_commands_survive_a_restart_and_replay_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = Vec::new();
    let digest_before;
    {
        let (pipeline, report) = Pipeline::open_dir(dir.path(), config()).unwrap();
        assert_eq!(report.next_sequence, 1);
        let handle = pipeline.handle();
        let stock = Command::SetStock { sku: SkuId(3), warehouse: WarehouseId(1), on_hand: 10 };
        acknowledged.push(handle.submit(stock).unwrap().wait().unwrap());
        for buyer in 0..12 {
            acknowledged.push(
                handle
                    .submit(reserve(buyer, 3, 1, Duration::from_secs(600)))
                    .unwrap()
                    .wait()
                    .unwrap(),
            );
        }
        let reserved =
            acknowledged.iter().filter(|a| matches!(a.outcome, Outcome::Reserved { .. })).count();
        assert_eq!(reserved, 10, "ten units, ten reservations");
        let sequences: Vec<u64> = acknowledged.iter().map(|a| a.sequence.0).collect();
        assert_eq!(
            sequences,
            (1..=13).collect::<Vec<_>>(),
            "sequences are dense and in submission order"
        );
        pipeline.shutdown();
        let journal = surge_journal::FsStorage::open(&dir.path().join("journal")).unwrap();
        let snapshots = surge_journal::FsStorage::open(&dir.path().join("snapshots")).unwrap();
        let recovery = surge_journal::scan(&journal).unwrap();
        // Replay the journal alone (ignoring the shutdown snapshot) ...
        let empty = surge_journal::MemStorage::new();
        let (from_journal, _) =
            surge_pipeline::restore(config().limits, &journal, &empty, &recovery, None).unwrap();
        // ... and from the snapshot: both give the same state.
        let (from_snapshot, report) =
            surge_pipeline::restore(config().limits, &journal, &snapshots, &recovery, None)
                .unwrap();
        assert_eq!(report.snapshot_sequence, 13, "shutdown leaves a snapshot of the final state");
        assert_eq!(report.replayed, 0);
        assert_eq!(from_journal.digest(), from_snapshot.digest());
        digest_before = from_journal.digest();
    }
    let (pipeline, report) = Pipeline::open_dir(dir.path(), config()).unwrap();
    assert_eq!(report.next_sequence, 14);
    let handle = pipeline.handle();
    let Outcome::Reserved { order, .. } = acknowledged[1].outcome else { panic!() };
    let commit = handle.submit(Command::Commit { order }).unwrap().wait().unwrap();
    assert_eq!(commit.sequence.0, 14);
    assert_eq!(commit.outcome, Outcome::Transitioned { order, state: OrderState::Confirmed });
    pipeline.shutdown();
    assert_ne!(digest_before, 0);
}

#[test]
fn concurrent_buyers_never_get_more_than_the_stock() {
    let (pipeline, _) = start_in_memory();
    let handle = pipeline.handle();
    handle
        .submit(Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand: 50 })
        .unwrap()
        .wait()
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let tickets: Vec<_> = (0..50)
                    .map(|i| {
                        handle
                            .submit(reserve(thread * 100 + i, 1, 1, Duration::from_secs(600)))
                            .unwrap()
                    })
                    .collect();
                tickets.into_iter().map(|t| t.wait().unwrap().outcome).collect::<Vec<_>>()
            })
        })
        .collect();
    let outcomes: Vec<Outcome> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let won = outcomes.iter().filter(|o| matches!(o, Outcome::Reserved { .. })).count();
    let lost = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Rejected(Rejection::OutOfStock { .. })))
        .count();
    assert_eq!((won, lost), (50, 350));
    pipeline.shutdown();
}

#[test]
fn the_sequencer_clock_expires_reservations() {
    let (mut pipeline, _) = start_in_memory();
    let events = pipeline.take_events().unwrap();
    let handle = pipeline.handle();
    handle
        .submit(Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand: 1 })
        .unwrap()
        .wait()
        .unwrap();
    let applied =
        handle.submit(reserve(1, 1, 1, Duration::from_millis(30))).unwrap().wait().unwrap();
    let Outcome::Reserved { order, .. } = applied.outcome else { panic!("{applied:?}") };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut expired = false;
    while !expired && Instant::now() < deadline {
        if let Ok(batch) = events.recv_timeout(Duration::from_millis(100)) {
            expired = batch.events.iter().any(|(_, event)| {
                matches!(event, Event::OrderTransitioned { order: o, state: OrderState::Expired, .. } if *o == order)
            });
        }
    }
    assert!(expired, "no expiry event within 10 s");
    // The unit is available again.
    let again = handle.submit(reserve(2, 1, 1, Duration::from_secs(60))).unwrap().wait().unwrap();
    assert!(matches!(again.outcome, Outcome::Reserved { .. }), "{again:?}");
    drop(events);
    pipeline.shutdown();
}

#[test]
fn every_applied_batch_is_handed_on_even_without_events() {
    let (mut pipeline, _) = start_in_memory();
    let events = pipeline.take_events().unwrap();
    let handle = pipeline.handle();
    // A rejected release changes nothing and announces nothing.
    let command = Command::Release { order: OrderId(999), reason: ReleaseReason::PaymentFailed };
    let applied = handle.submit(command).unwrap().wait().unwrap();
    assert!(matches!(applied.outcome, Outcome::Rejected(_)), "{applied:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Sequence(0);
    while seen < applied.sequence && Instant::now() < deadline {
        if let Ok(batch) = events.recv_timeout(Duration::from_millis(100)) {
            assert!(batch.events.is_empty(), "{batch:?}");
            seen = batch.last_sequence;
        }
    }
    assert!(seen >= applied.sequence, "the reader never learned of {:?}", applied.sequence);
    drop(events);
    pipeline.shutdown();
}

#[test]
fn a_failed_fsync_acknowledges_nothing_of_its_batch() {
    let journal = MemStorage::new();
    let failed = Arc::new(AtomicBool::new(false));
    let hook_failed = Arc::clone(&failed);
    let (pipeline, _) = Pipeline::start(
        config(),
        journal.clone(),
        MemStorage::new(),
        SystemClock,
        Arc::new(move |_error: &DurableError| hook_failed.store(true, Ordering::SeqCst)),
    )
    .unwrap();
    let handle = pipeline.handle();
    let stock = Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand: 5 };
    handle.submit(stock).unwrap().wait().unwrap();
    journal.fail_next_sync();
    let result = handle.submit(reserve(1, 1, 1, Duration::from_secs(60))).unwrap().wait();
    assert_eq!(result, Err(SubmitError::Stopped));
    assert!(failed.load(Ordering::SeqCst), "the failure hook ran");
    assert!(matches!(handle.try_submit(Command::Expire), Err(SubmitError::Stopped)));
    pipeline.shutdown();
}

#[tokio::test(flavor = "current_thread")]
async fn queries_read_the_state_after_every_earlier_command() {
    let (pipeline, _) = start_in_memory();
    let handle = pipeline.handle();
    let stock = Command::SetStock { sku: SkuId(4), warehouse: WarehouseId(1), on_hand: 9 };
    let _ticket = handle.try_submit(stock).unwrap();
    let _ticket = handle.try_submit(reserve(1, 4, 2, Duration::from_secs(60))).unwrap();
    // Not awaited: the query still sees both, because it queues behind them.
    let (level, live) = handle
        .query(|engine| (engine.stock(SkuId(4), WarehouseId(1)), engine.live_orders()))
        .await
        .unwrap();
    let level = level.expect("the cell exists");
    assert_eq!((level.on_hand, level.reserved, live), (9, 2, 1));
    let durable = handle.stats().durable_sequence;
    assert_eq!(handle.query(|engine| engine.last_sequence().0).await.unwrap(), durable);
    tokio::task::spawn_blocking(move || pipeline.shutdown()).await.unwrap();
}

#[test]
fn a_restart_hands_back_the_events_a_consumer_missed() {
    let dir = tempfile::tempdir().unwrap();
    let order;
    {
        let (pipeline, _) = Pipeline::open_dir(dir.path(), config()).unwrap();
        let handle = pipeline.handle();
        let stock = Command::SetStock { sku: SkuId(2), warehouse: WarehouseId(0), on_hand: 3 };
        handle.submit(stock).unwrap().wait().unwrap();
        let applied =
            handle.submit(reserve(7, 2, 1, Duration::from_secs(600))).unwrap().wait().unwrap();
        let Outcome::Reserved { order: reserved, .. } = applied.outcome else { panic!() };
        order = reserved;
        let commit = handle.submit(Command::Commit { order }).unwrap().wait().unwrap();
        assert_eq!(commit.sequence.0, 3);
        // Shutdown writes a snapshot at sequence 3; the consumer only got as far as 1.
        pipeline.shutdown();
    }
    let config = PipelineConfig { events_after: Some(surge_engine::Sequence(1)), ..config() };
    let (pipeline, report) = Pipeline::open_dir(dir.path(), config).unwrap();
    assert_eq!(report.snapshot_sequence, 0, "the snapshot after the consumer's point is not used");
    let sequences: Vec<u64> = report.missed_events.iter().map(|(sequence, _)| sequence.0).collect();
    assert!(sequences.windows(2).all(|pair| pair[0] <= pair[1]) && sequences[0] == 2);
    assert!(report.missed_events.iter().any(|(sequence, event)| sequence.0 == 3
        && matches!(event, Event::OrderTransitioned { order: o, state: OrderState::Confirmed, .. } if *o == order)));
    assert!(!report.missed_events.iter().any(|(sequence, _)| sequence.0 <= 1));
    pipeline.shutdown();
}
