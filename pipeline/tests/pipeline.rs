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
use surge_pipeline::{
    AppliedCommand, DurableError, Outputs, Pipeline, PipelineConfig, SubmitError, SystemClock,
};

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

/// A pipeline on in-memory storage whose follower hands outputs on from the start.
fn start_followed(journal: MemStorage, snapshots: MemStorage) -> (Pipeline, Outputs) {
    let config = PipelineConfig { follow_from: Some(Sequence(0)), ..config() };
    let (mut pipeline, _) =
        Pipeline::start(config, journal, snapshots, SystemClock, Arc::new(never_called)).unwrap();
    let outputs = pipeline.take_outputs().unwrap();
    (pipeline, outputs)
}

/// A command as the follower handed it on: with its outcome, its events and its attachment.
type Followed = (AppliedCommand, Vec<(Sequence, Event)>, Option<Vec<u8>>);

/// Reads outputs until one covers `through`, for at most ten seconds; returns every command seen.
fn follow_until(outputs: &Outputs, through: Sequence) -> Vec<Followed> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut last = Sequence(0);
    while last < through {
        assert!(Instant::now() < deadline, "the follower never reached {through:?} (at {last:?})");
        let Ok(output) = outputs.recv_timeout(Duration::from_millis(100)) else { continue };
        for command in output.commands() {
            let events = output.events_of(command).to_vec();
            let attachment = output.attachment_of(command).map(<[u8]>::to_vec);
            seen.push((*command, events, attachment));
        }
        last = output.through();
        outputs.recycle(output);
    }
    seen
}

#[test]
fn the_sequencer_clock_expires_reservations() {
    let (pipeline, outputs) = start_followed(MemStorage::new(), MemStorage::new());
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
        if let Ok(output) = outputs.recv_timeout(Duration::from_millis(100)) {
            expired = output.events().iter().any(|(_, event)| {
                matches!(event, Event::OrderTransitioned { order: o, state: OrderState::Expired, .. } if o == &order)
            });
            outputs.recycle(output);
        }
    }
    assert!(expired, "no expiry event within 10 s");
    // The unit is available again.
    let again = handle.submit(reserve(2, 1, 1, Duration::from_secs(60))).unwrap().wait().unwrap();
    assert!(matches!(again.outcome, Outcome::Reserved { .. }), "{again:?}");
    drop(outputs);
    pipeline.shutdown();
}

#[test]
fn the_follower_hands_on_every_command_with_its_outcome_and_attachment() {
    let (pipeline, outputs) = start_followed(MemStorage::new(), MemStorage::new());
    let handle = pipeline.handle();
    let stock = Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand: 1 };
    let stocked = handle.submit(stock).unwrap().wait().unwrap();
    let first = handle
        .try_submit_with(reserve(1, 1, 1, Duration::from_secs(60)), b"order record".to_vec())
        .unwrap()
        .wait()
        .unwrap();
    // A refusal changes nothing and announces nothing, and is handed on all the same.
    let second = handle
        .try_submit_with(reserve(2, 1, 1, Duration::from_secs(60)), vec![7; 3])
        .unwrap()
        .wait()
        .unwrap();
    let release = Command::Release { order: OrderId(999), reason: ReleaseReason::PaymentFailed };
    let rejected = handle.submit(release).unwrap().wait().unwrap();
    let seen = follow_until(&outputs, rejected.sequence);
    let by_sequence = |sequence: Sequence| {
        seen.iter().find(|(command, ..)| command.sequence == sequence).expect("handed on")
    };
    let (command, events, attachment) = by_sequence(first.sequence);
    assert_eq!((command.outcome, command.at), (first.outcome, first.at), "the engine's outcome");
    assert_eq!(attachment.as_deref(), Some(&b"order record"[..]));
    assert!(events.iter().any(|(_, event)| matches!(event, Event::OrderReserved { .. })));
    let (command, events, attachment) = by_sequence(second.sequence);
    assert_eq!(command.outcome, second.outcome);
    assert!(matches!(command.outcome, Outcome::Rejected(Rejection::OutOfStock { .. })));
    assert!(events.is_empty());
    assert_eq!(attachment.as_deref(), Some(&[7u8; 3][..]));
    let (command, events, attachment) = by_sequence(rejected.sequence);
    assert!(matches!(command.outcome, Outcome::Rejected(Rejection::UnknownOrder)));
    assert!(events.is_empty() && attachment.is_none());
    assert!(by_sequence(stocked.sequence).2.is_none(), "no attachment, none handed on");
    let sequences: Vec<u64> = seen.iter().map(|(command, ..)| command.sequence.0).collect();
    assert_eq!(sequences, (1..=rejected.sequence.0).collect::<Vec<_>>(), "each once, in order");
    drop(outputs);
    pipeline.shutdown();
}

#[test]
fn an_attachment_beyond_the_limit_is_refused_before_the_queue() {
    let (pipeline, _) = start_in_memory();
    let handle = pipeline.handle();
    let attachment = vec![0; surge_pipeline::ATTACHMENT_BYTES_MAX + 1];
    let refused = handle.try_submit_with(reserve(1, 1, 1, Duration::from_secs(60)), attachment);
    assert!(matches!(refused, Err(SubmitError::AttachmentTooLarge)));
    assert_eq!(handle.stats().queue_len, 0);
    pipeline.shutdown();
}

#[test]
fn the_follower_writes_the_snapshots_and_a_restart_uses_them() {
    let (journal, snapshots) = (MemStorage::new(), MemStorage::new());
    let config = PipelineConfig { snapshot_every: 5, ..config() };
    let digest;
    {
        let (pipeline, _) = Pipeline::start(
            config.clone(),
            journal.clone(),
            snapshots.clone(),
            SystemClock,
            Arc::new(never_called),
        )
        .unwrap();
        let handle = pipeline.handle();
        for on_hand in 1..=12 {
            let stock = Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand };
            handle.submit(stock).unwrap().wait().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while handle.stats().snapshot_sequence < 10 {
            assert!(Instant::now() < deadline, "no snapshot at 10: {:?}", handle.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        pipeline.shutdown();
        let recovery = surge_journal::scan(&journal).unwrap();
        let (engine, _) =
            surge_pipeline::restore(config.limits, &journal, &MemStorage::new(), &recovery, None)
                .unwrap();
        digest = engine.digest();
    }
    let (journal_after, snapshots_after, limits) =
        (journal.clone(), snapshots.clone(), config.limits);
    let (pipeline, report) =
        Pipeline::start(config, journal, snapshots, SystemClock, Arc::new(never_called)).unwrap();
    assert_eq!(report.snapshot_sequence, 12, "shutdown leaves the follower's final snapshot");
    assert_eq!(report.replayed, 0);
    let progress = pipeline.handle().query_blocking(surge_engine::Query::progress()).unwrap();
    assert!(
        matches!(progress, surge_engine::Query::Progress(Some(p)) if p.last_sequence == Sequence(12))
    );
    pipeline.shutdown();
    // The follower's snapshot holds exactly the state a replay of the whole journal gives.
    let recovery = surge_journal::scan(&journal_after).unwrap();
    let (from_snapshot, _) =
        surge_pipeline::restore(limits, &journal_after, &snapshots_after, &recovery, None).unwrap();
    assert_eq!(from_snapshot.digest(), digest);
}

#[test]
fn a_consumer_ahead_of_the_journal_is_refused() {
    let config = PipelineConfig { follow_from: Some(Sequence(5)), ..config() };
    let started = Pipeline::start(
        config,
        MemStorage::new(),
        MemStorage::new(),
        SystemClock,
        Arc::new(never_called),
    );
    assert!(matches!(started, Err(DurableError::ConsumerAhead { consumer: 5, journal: 0 })));
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
async fn queries_read_the_state_after_every_acknowledged_command() {
    let (pipeline, _) = start_in_memory();
    let handle = pipeline.handle();
    let stock = Command::SetStock { sku: SkuId(4), warehouse: WarehouseId(1), on_hand: 9 };
    handle.try_submit(stock).unwrap().outcome().await.unwrap();
    let reserved = handle
        .try_submit(reserve(1, 4, 2, Duration::from_secs(60)))
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let Outcome::Reserved { order, .. } = reserved.outcome else { panic!("{reserved:?}") };
    let answer = handle.query(surge_engine::Query::stock(vec![SkuId(4)], 8)).await.unwrap();
    let surge_engine::Query::Stock(stock) = &answer else { panic!("{answer:?}") };
    let cell = stock.cells()[0];
    assert_eq!((cell.warehouse, cell.level.on_hand, cell.level.reserved), (WarehouseId(1), 9, 2));
    let answer =
        handle.query(surge_engine::Query::orders(vec![order, OrderId(999)])).await.unwrap();
    let surge_engine::Query::Orders(orders) = &answer else { panic!("{answer:?}") };
    assert_eq!(orders.states(), [Some(OrderState::PendingPayment), None]);
    let answer = handle.query(surge_engine::Query::progress()).await.unwrap();
    let surge_engine::Query::Progress(Some(progress)) = answer else { panic!("{answer:?}") };
    assert_eq!((progress.last_sequence, progress.live_orders), (reserved.sequence, 1));
    tokio::task::spawn_blocking(move || pipeline.shutdown()).await.unwrap();
}

#[test]
fn a_restart_hands_on_what_a_consumer_missed() {
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
    let config = PipelineConfig { follow_from: Some(Sequence(1)), ..config() };
    let (mut pipeline, report) = Pipeline::open_dir(dir.path(), config).unwrap();
    assert_eq!(report.snapshot_sequence, 3, "the engine thread starts from the newest snapshot");
    let outputs = pipeline.take_outputs().unwrap();
    let seen = follow_until(&outputs, Sequence(3));
    let sequences: Vec<u64> = seen.iter().map(|(command, ..)| command.sequence.0).collect();
    assert_eq!(sequences, [2, 3], "exactly what the consumer missed");
    assert!(seen[1].1.iter().any(|(_, event)| matches!(event,
        Event::OrderTransitioned { order: o, state: OrderState::Confirmed, .. } if o == &order)));
    drop(outputs);
    pipeline.shutdown();
}

#[test]
fn a_group_is_applied_in_order_with_consecutive_sequences_and_moves_the_durable_counter() {
    let (pipeline, _) = start_in_memory();
    let handle = pipeline.handle();
    let before = handle.durable_sequence();
    let set = |sku| Command::SetStock { sku: SkuId(sku), warehouse: WarehouseId(0), on_hand: 1 };
    handle.submit(set(1)).unwrap().wait().unwrap();
    let first = handle.submit(reserve(1, 1, 1, Duration::from_secs(60))).unwrap().wait().unwrap();
    let Outcome::Reserved { order, .. } = first.outcome else { panic!("{first:?}") };
    // A commit of the order, a second commit of it, and a reservation the stock cannot serve.
    let group = vec![
        Command::Commit { order },
        Command::Commit { order },
        reserve(2, 1, 1, Duration::from_secs(60)),
    ];
    let applied = handle.try_submit_group(group).unwrap().wait().unwrap();
    assert_eq!(applied.len(), 3);
    for pair in applied.windows(2) {
        assert_eq!(pair[1].sequence.0, pair[0].sequence.0 + 1, "{applied:?}");
    }
    assert_eq!(applied[0].sequence.0, first.sequence.0 + 1);
    assert!(
        matches!(applied[0].outcome, Outcome::Transitioned { state: OrderState::Confirmed, .. }),
        "{applied:?}"
    );
    assert!(matches!(applied[1].outcome, Outcome::Rejected(_)), "{applied:?}");
    assert!(
        matches!(applied[2].outcome, Outcome::Rejected(Rejection::OutOfStock { .. })),
        "{applied:?}"
    );
    // Acknowledged means durable: the counter covers every command of the group.
    assert!(handle.durable_sequence() >= applied[2].sequence);
    assert!(handle.durable_sequence() > before);
    pipeline.shutdown();
}

/// Every file of a storage with its bytes.
fn files(storage: &MemStorage) -> Vec<(String, Vec<u8>)> {
    use surge_journal::Storage as _;
    let names = storage.list().unwrap();
    names.into_iter().map(|name| (name.clone(), storage.bytes(&name).unwrap())).collect()
}

#[test]
fn a_start_refuses_a_journal_that_ends_before_the_newest_snapshot_and_changes_nothing() {
    use surge_journal::Storage as _;
    let (journal, snapshots) = (MemStorage::new(), MemStorage::new());
    let start = |journal: &MemStorage, snapshots: &MemStorage| {
        let config = PipelineConfig { follow_from: Some(Sequence(0)), ..config() };
        Pipeline::start(
            config,
            journal.clone(),
            snapshots.clone(),
            SystemClock,
            Arc::new(never_called),
        )
    };
    {
        let (mut pipeline, _) = start(&journal, &snapshots).unwrap();
        let outputs = pipeline.take_outputs().unwrap();
        let handle = pipeline.handle();
        for on_hand in 1..=6 {
            let stock = Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand };
            handle.submit(stock).unwrap().wait().unwrap();
        }
        follow_until(&outputs, Sequence(6));
        drop(outputs);
        // Shutdown leaves a snapshot of sequence 6, the journal's last record.
        pipeline.shutdown();
    }
    // The disk loses the last record, which the snapshot covers.
    let last = journal.list().unwrap().pop().unwrap();
    let mut bytes = journal.bytes(&last).unwrap();
    bytes.truncate(bytes.len() - 5);
    journal.set_bytes(&last, bytes);
    let (journal_before, snapshots_before) = (files(&journal), files(&snapshots));

    let error = start(&journal, &snapshots).unwrap_err();
    assert!(
        matches!(error, DurableError::SnapshotAhead { snapshot: 6, journal_last: 5, .. }),
        "{error:?}"
    );
    assert_eq!(files(&journal), journal_before, "the torn record is not cut before refusing");
    assert_eq!(files(&snapshots), snapshots_before);
}

#[test]
fn a_consumer_behind_an_archived_journal_is_refused_with_what_to_move_back() {
    use surge_journal::Storage as _;
    let (journal, snapshots) = (MemStorage::new(), MemStorage::new());
    let small_segments = PipelineConfig {
        journal: surge_journal::JournalConfig { segment_bytes_max: 120 },
        ..config()
    };
    {
        let (pipeline, _) = Pipeline::start(
            small_segments.clone(),
            journal.clone(),
            snapshots.clone(),
            SystemClock,
            Arc::new(never_called),
        )
        .unwrap();
        let handle = pipeline.handle();
        for on_hand in 1..=9 {
            let stock = Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand };
            handle.submit(stock).unwrap().wait().unwrap();
        }
        pipeline.shutdown();
    }
    // The first segment leaves, as if archived while the consumer was at 0.
    let first = journal.list().unwrap().remove(0);
    journal.remove(&first).unwrap();
    let first_seq = surge_journal::scan(&journal).unwrap().segments[0].first_seq;
    let config = PipelineConfig { follow_from: Some(Sequence(0)), ..small_segments };
    let before = files(&journal);
    let error =
        Pipeline::start(config, journal.clone(), snapshots, SystemClock, Arc::new(never_called))
            .unwrap_err();
    assert!(
        matches!(error, DurableError::ConsumerBehind { consumer: 0, snapshot: 0, first }
            if first == first_seq),
        "{error:?}"
    );
    assert!(error.to_string().contains("archive/"), "{error}");
    assert_eq!(files(&journal), before);
}

/// Segment names of a directory, oldest first.
fn segment_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.ends_with(".seg"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The first seq of a segment, from its name.
fn first_seq(name: &str) -> u64 {
    name[..20].parse().unwrap()
}

/// A data directory with 30 stock commands in segments of a few records each, a snapshot every
/// 5 commands (the last at 30), and a consumer that has read everything; returns the pipeline
/// still running.
fn run_for_retention(dir: &std::path::Path) -> (Pipeline, PipelineConfig) {
    let config = PipelineConfig {
        snapshot_every: 5,
        follow_from: Some(Sequence(0)),
        journal: surge_journal::JournalConfig { segment_bytes_max: 150 },
        ..config()
    };
    let (mut pipeline, _) = Pipeline::open_dir(dir, config.clone()).unwrap();
    let outputs = pipeline.take_outputs().unwrap();
    let handle = pipeline.handle();
    for index in 1..=30 {
        let stock =
            Command::SetStock { sku: SkuId(index % 7), warehouse: WarehouseId(0), on_hand: index };
        handle.submit(stock).unwrap().wait().unwrap();
    }
    follow_until(&outputs, Sequence(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.stats().snapshot_sequence < 30 {
        assert!(Instant::now() < deadline, "no snapshot at 30: {:?}", handle.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(outputs);
    (pipeline, config)
}

/// The digest of the engine a start would restore from `dir`, with the journal alone.
fn restored_digest(dir: &std::path::Path, limits: Limits) -> (u64, Sequence) {
    let journal = surge_journal::FsStorage::open(&dir.join("journal")).unwrap();
    let snapshots = surge_journal::FsStorage::open(&dir.join("snapshots")).unwrap();
    let recovery = surge_journal::scan(&journal).unwrap();
    let (engine, _) =
        surge_pipeline::restore(limits, &journal, &snapshots, &recovery, None).unwrap();
    (engine.digest(), engine.last_sequence())
}

#[test]
fn retention_archives_only_segments_no_reader_needs_and_a_restart_recovers_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let (pipeline, config) = run_for_retention(dir.path());
    let segments_before = segment_names(&dir.path().join("journal"));
    assert!(segments_before.len() > 6, "the test wants many segments: {segments_before:?}");
    let (digest, end) = restored_digest(dir.path(), config.limits);
    assert_eq!(end, Sequence(30));

    let archiver = pipeline.archiver().expect("open_dir archives");
    let report = archiver.archive(Some(Sequence(30))).unwrap();
    // Snapshots at 5, 10, .., 30: a start needs the records after 30, or after 25 should the
    // newest be damaged.
    assert_eq!(report.through, Some(25));
    let live = segment_names(&dir.path().join("journal"));
    let archived = segment_names(&dir.path().join("archive"));
    assert_eq!(report.moved, archived);
    assert!(!archived.is_empty());
    assert_eq!([archived.clone(), live.clone()].concat(), segments_before, "moved, not copied");
    assert!(first_seq(&live[0]) <= 26, "segment {} holds 26, which is needed", live[0]);
    assert!(first_seq(&live[1]) > 26, "segment {} holds only records through 25", live[0]);
    assert!(archiver.archive(Some(Sequence(30))).unwrap().moved.is_empty(), "nothing more to move");
    pipeline.shutdown();

    // A start after archival, and the engine of a start, are what they were.
    assert_eq!(restored_digest(dir.path(), config.limits), (digest, end));
    let (pipeline, report) =
        Pipeline::open_dir(dir.path(), PipelineConfig { follow_from: Some(end), ..config.clone() })
            .unwrap();
    assert_eq!((report.snapshot_sequence, report.next_sequence), (30, 31));
    pipeline.shutdown();
    // The snapshot before the newest still recovers: damage the newest and start again.
    let newest = dir.path().join("snapshots").join(format!("{:020}.snap", 30));
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    assert_eq!(restored_digest(dir.path(), config.limits), (digest, end));
    let (pipeline, report) =
        Pipeline::open_dir(dir.path(), PipelineConfig { follow_from: Some(end), ..config })
            .unwrap();
    assert_eq!((report.snapshot_sequence, report.replayed), (25, 5));
    pipeline.shutdown();
}

#[test]
fn retention_keeps_what_a_consumer_behind_the_snapshots_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (pipeline, config) = run_for_retention(dir.path());
    let archiver = pipeline.archiver().unwrap();
    // A consumer that stored only 4: no two snapshots at or before it, so nothing goes.
    let report = archiver.archive(Some(Sequence(4))).unwrap();
    assert!(report.moved.is_empty(), "{report:?}");
    // One that stored 12: its follower restarts from the snapshot at 10, or at 5 should that one
    // be damaged, so only what lies wholly before 6 may go.
    let report = archiver.archive(Some(Sequence(12))).unwrap();
    assert_eq!(report.through, Some(5));
    let live = segment_names(&dir.path().join("journal"));
    assert!(first_seq(&live[0]) <= 6, "segment {} holds 6, which is needed", live[0]);
    pipeline.shutdown();

    // The consumer restarts where it stored and is handed everything after it.
    let config = PipelineConfig { follow_from: Some(Sequence(12)), ..config };
    let (mut pipeline, _) = Pipeline::open_dir(dir.path(), config).unwrap();
    let outputs = pipeline.take_outputs().unwrap();
    let seen = follow_until(&outputs, Sequence(30));
    let sequences: Vec<u64> = seen.iter().map(|(command, ..)| command.sequence.0).collect();
    assert_eq!(sequences, (13..=30).collect::<Vec<_>>());
    drop(outputs);
    pipeline.shutdown();
}

#[test]
#[should_panic(expected = "retention needs its stored sequence")]
fn retention_without_the_consumers_sequence_is_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    let config = PipelineConfig { follow_from: Some(Sequence(0)), ..config() };
    let (pipeline, _) = Pipeline::open_dir(dir.path(), config).unwrap();
    let _ = pipeline.archiver().unwrap().archive(None);
}

#[test]
fn the_first_half_of_a_start_changes_nothing_and_the_second_cuts_the_torn_tail() {
    use surge_journal::Storage as _;
    let journal = MemStorage::new();
    {
        let (pipeline, _) = Pipeline::start(
            config(),
            journal.clone(),
            MemStorage::new(),
            SystemClock,
            Arc::new(never_called),
        )
        .unwrap();
        for on_hand in 1..=3 {
            let stock = Command::SetStock { sku: SkuId(1), warehouse: WarehouseId(0), on_hand };
            pipeline.handle().submit(stock).unwrap().wait().unwrap();
        }
        pipeline.shutdown();
    }
    // A crash in the middle of writing record 3; no snapshot covers it.
    let last = journal.list().unwrap().pop().unwrap();
    let mut bytes = journal.bytes(&last).unwrap();
    bytes.truncate(bytes.len() - 5);
    journal.set_bytes(&last, bytes.clone());

    let restored = Pipeline::restore_storages(
        config().limits,
        journal.clone(),
        MemStorage::new(),
        SystemClock,
        Arc::new(never_called),
    )
    .unwrap();
    assert!(restored.report().torn_tail.is_some());
    assert_eq!(journal.bytes(&last).unwrap(), bytes, "restoring reads only");
    let (pipeline, report) = restored.start(config()).unwrap();
    assert_eq!(report.next_sequence, 3);
    assert!(journal.bytes(&last).unwrap().len() < bytes.len(), "starting cuts the torn record");
    pipeline.shutdown();
}
