//! The deterministic simulator over fixed seeds, and proof that it can fail: a run that breaks the
//! durability rule on purpose must be reported with its seed, so must a projector or a journal
//! retention broken on purpose, and flipped bits must be detected.
//! `cargo xtask sim` runs many more seeds, starting from the clock.

use surge_tests::sim::{run, SimConfig, SimFailure, SimReport};

fn run_seeds(configs: impl Iterator<Item = SimConfig>) -> (Vec<SimReport>, Vec<SimFailure>) {
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for config in configs {
        match run(&config) {
            Ok(report) => reports.push(report),
            Err(failure) => failures.push(failure),
        }
    }
    (reports, failures)
}

#[test]
fn twenty_seeds_keep_every_acknowledged_command_and_match_the_model() {
    let (reports, failures) = run_seeds((0..20).map(|seed| SimConfig::swarm(seed, 2_000)));
    let failures: Vec<String> = failures.iter().map(ToString::to_string).collect();
    assert!(failures.is_empty(), "failing seeds:\n{}", failures.join("\n"));

    // The seeds must have reached the paths they exist to test, or passing proves little.
    let total = |count: fn(&SimReport) -> u64| reports.iter().map(count).sum::<u64>();
    assert!(total(|r| r.acknowledged) > 10_000, "acknowledged: {}", total(|r| r.acknowledged));
    assert!(total(|r| r.crashes) > 0, "no power loss was simulated");
    assert!(total(|r| r.kills) > 0, "no process kill was simulated");
    assert!(total(|r| r.fsync_failures) > 0, "no fsync failed");
    assert!(total(|r| r.write_failures) > 0, "no write failed");
    assert!(total(|r| r.snapshots) > 0, "no snapshot was written");
    assert!(total(|r| r.snapshot_failures) > 0, "no snapshot write failed");
    assert!(total(|r| r.restores_from_snapshot) > 0, "no restart started from a snapshot");

    // And the projection's paths: crashes between the journal and the projection, repaired by
    // following the journal from the watermark, and the checks after them.
    assert!(total(|r| r.projector_commits) > 1_000, "commits: {}", total(|r| r.projector_commits));
    assert!(total(|r| r.projector_commits_lost) > 0, "no power loss took a commit back");
    assert!(total(|r| r.projector_crashes) > 20, "crashes: {}", total(|r| r.projector_crashes));
    let behind = total(|r| r.crashes_behind_projection);
    assert!(behind > 100, "crashes between journal and projection: {behind}");
    assert!(total(|r| r.projector_restarts_before_watermark) > 0, "no early follower restart");
    assert!(total(|r| r.projector_restores_from_snapshot) > 0, "no follower from a snapshot");
    assert!(total(|r| r.outputs_projected) > 5_000, "outputs: {}", total(|r| r.outputs_projected));
    assert!(total(|r| r.records_skipped) > 0, "no unreadable record was skipped");
    assert!(total(|r| r.orders) > 500, "orders: {}", total(|r| r.orders));
    assert!(total(|r| r.answers) > total(|r| r.orders), "refusals keep answers too");
    for report in &reports {
        assert!(report.projection_checks >= report.restarts, "a check at every start: {report:?}");
    }
    // And journal retention, with restarts after it.
    assert!(total(|r| r.segments_archived) > 50, "archived: {}", total(|r| r.segments_archived));
}

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig::new(7, 1_500);
    let first = run(&config).expect("seed 7 passes");
    let second = run(&config).expect("seed 7 passes");
    assert_eq!(first, second);
    assert!(first.restarts > 0, "{first:?}");
}

#[test]
fn acknowledging_before_the_commit_is_reported_with_its_seed() {
    for seed in [11, 12, 13] {
        let config = SimConfig {
            bug_acknowledge_before_commit: true,
            write_failure_probability: 0.05,
            ..SimConfig::new(seed, 2_000)
        };
        let failure =
            run(&config).expect_err("acknowledging before the commit loses acknowledged commands");
        assert_eq!(failure.seed, seed);
        assert!(failure.step > 0 && failure.step <= 2_000, "{failure}");
        assert!(failure.message.contains("acknowledged seq"), "{failure}");
    }
}

#[test]
fn a_follower_restarted_at_the_journal_end_is_reported_with_its_seed() {
    // The broken projector restores its follower to the journal's end after its own crash, so the
    // commands its lost transaction held are never projected again.
    let caught = (300..310).find_map(|seed| {
        let config = SimConfig {
            bug_projector_follows_from_journal_end: true,
            ..SimConfig::new(seed, 2_000)
        };
        run(&config).err()
    });
    let failure = caught.expect("one of ten seeds catches a projection that skipped commands");
    assert!((300..310).contains(&failure.seed), "{failure}");
    // Found by the check against the follower's engine, or at the next start by the rebuild.
    assert!(
        failure.message.contains("in the projection") || failure.message.contains("rebuilt from"),
        "{failure}"
    );
    run(&SimConfig::new(failure.seed, 2_000)).expect("the same seed passes without the bug");
}

#[test]
fn a_projection_of_unsynced_records_is_reported_with_its_seed() {
    // The broken projector reads records the journal wrote but did not sync while the process
    // stops after a failed fsync; the power loss that may follow takes them from the journal but
    // not from the projection.
    let caught = (400..420).find_map(|seed| {
        let config = SimConfig {
            bug_projector_reads_unsynced: true,
            sync_failure_probability: 0.05,
            ..SimConfig::new(seed, 2_000)
        };
        run(&config).err()
    });
    let failure = caught.expect("one of twenty seeds catches a projection ahead of the journal");
    assert!(
        failure.message.contains("not durable") || failure.message.contains("rebuilt from"),
        "{failure}"
    );
    let config =
        SimConfig { sync_failure_probability: 0.05, ..SimConfig::new(failure.seed, 2_000) };
    run(&config).expect("the same seed passes without the bug");
}

#[test]
fn flipped_bits_in_the_journal_are_detected_and_end_the_run() {
    let (reports, failures) = run_seeds((100..110).map(|seed| SimConfig {
        journal_bit_flip_probability: 0.01,
        ..SimConfig::new(seed, 2_000)
    }));
    let failures: Vec<String> = failures.iter().map(ToString::to_string).collect();
    assert!(failures.is_empty(), "failing seeds:\n{}", failures.join("\n"));
    for report in &reports {
        assert_eq!(report.corruptions_detected, 1, "{report:?}");
        assert!(report.steps < 2_000, "the run should have ended at the flip: {report:?}");
    }
}

#[test]
fn flipped_bits_in_snapshots_are_skipped() {
    let (reports, failures) = run_seeds((200..205).map(|seed| SimConfig {
        snapshot_probability: 0.05,
        snapshot_bit_flip_probability: 0.02,
        ..SimConfig::new(seed, 2_000)
    }));
    let failures: Vec<String> = failures.iter().map(ToString::to_string).collect();
    assert!(failures.is_empty(), "failing seeds:\n{}", failures.join("\n"));
    assert!(reports.iter().map(|report| report.snapshot_bit_flips).sum::<u64>() > 0);
}

#[test]
fn a_retention_that_trusts_an_unsynced_watermark_is_reported_with_its_seed() {
    // The broken retention archives by the projection's committed watermark without syncing it;
    // a power loss then takes the watermark back behind what was archived, and the follower of the
    // next start needs records the journal no longer holds.
    let broken = |seed| SimConfig {
        bug_archives_by_unsynced_watermark: true,
        crash_probability: 0.01,
        projection_sync_probability: 0.0,
        archive_probability: 0.05,
        ..SimConfig::new(seed, 2_000)
    };
    let caught = (500..520).find_map(|seed| run(&broken(seed)).err());
    let failure = caught.expect("one of twenty seeds catches a retention that kept too little");
    assert!(failure.message.contains("the follower could not be restored"), "{failure}");
    let fixed = SimConfig { bug_archives_by_unsynced_watermark: false, ..broken(failure.seed) };
    let report = run(&fixed).expect("the same seed passes with the watermark synced");
    assert!(report.segments_archived > 0, "{report:?}");
}
