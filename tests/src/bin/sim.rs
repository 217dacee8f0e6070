//! Runs the deterministic simulator over a range of seeds, on every core, and prints one line per
//! failing seed and a summary. `cargo xtask sim` builds and runs this with optimisations and with
//! unwinding panics, which the simulator needs to catch a failing seed and go on with the next.
//!
//! Usage: `sim --seed S --seeds N [--steps K]`. Exits with 1 when any seed failed.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use surge_tests::sim::{self, SimConfig, SimFailure, SimReport};

struct Args {
    seed: u64,
    seeds: u64,
    steps: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { seed: 0, seeds: 1, steps: 2_000 };
    let mut seed_given = false;
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number: u64 = value.parse().map_err(|_| format!("{flag} {value}: not a number"))?;
        match flag.as_str() {
            "--seed" => {
                args.seed = number;
                seed_given = true;
            }
            "--seeds" => args.seeds = number,
            "--steps" => args.steps = number,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if !seed_given {
        return Err("--seed is required, so that every run can be reproduced".to_owned());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("sim: {message}\nusage: sim --seed S --seeds N [--steps K]");
            return ExitCode::from(2);
        }
    };
    sim::quiet_panics();
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let results: Mutex<Vec<Result<SimReport, SimFailure>>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= args.seeds {
                    break;
                }
                let seed = args.seed.wrapping_add(index);
                let result = sim::run(&SimConfig::swarm(seed, args.steps));
                results.lock().expect("no worker panics while holding the lock").push(result);
            });
        }
    });
    let mut results = results.into_inner().expect("no worker panicked");
    results.sort_by_key(|result| match result {
        Ok(report) => report.seed,
        Err(failure) => failure.seed,
    });

    let mut total = SimReport::default();
    let mut failures = 0u64;
    for result in &results {
        match result {
            Ok(report) => {
                total.steps += report.steps;
                total.commands_applied += report.commands_applied;
                total.acknowledged += report.acknowledged;
                total.crashes += report.crashes;
                total.kills += report.kills;
                total.restarts += report.restarts;
                total.restores_from_snapshot += report.restores_from_snapshot;
                total.fsync_failures += report.fsync_failures;
                total.write_failures += report.write_failures;
                total.snapshots += report.snapshots;
                total.corruptions_detected += report.corruptions_detected;
                total.projector_commits += report.projector_commits;
                total.projector_commits_lost += report.projector_commits_lost;
                total.projector_crashes += report.projector_crashes;
                total.crashes_behind_projection += report.crashes_behind_projection;
                total.projector_restarts_before_watermark +=
                    report.projector_restarts_before_watermark;
                total.projector_restores_from_snapshot += report.projector_restores_from_snapshot;
                total.outputs_projected += report.outputs_projected;
                total.projection_checks += report.projection_checks;
                total.records_skipped += report.records_skipped;
                total.orders += report.orders;
                total.answers += report.answers;
                total.archive_passes += report.archive_passes;
                total.segments_archived += report.segments_archived;
            }
            Err(failure) => {
                failures += 1;
                // One line per seed, whatever the message (assertion diffs span lines).
                let message = failure.message.replace('\n', " | ");
                println!("sim: seed {} failed at step {}: {message}", failure.seed, failure.step);
            }
        }
    }
    println!(
        "sim: {} seeds from {} ({} steps each): {failures} failed, {} passed in {:.1}s; \
         {} steps, {} commands applied, {} acknowledged, {} crashes, {} kills, {} restarts \
         ({} from a snapshot), {} fsync and {} write failures, {} snapshots, {} corruptions detected",
        args.seeds,
        args.seed,
        args.steps,
        args.seeds - failures,
        started.elapsed().as_secs_f64(),
        total.steps,
        total.commands_applied,
        total.acknowledged,
        total.crashes,
        total.kills,
        total.restarts,
        total.restores_from_snapshot,
        total.fsync_failures,
        total.write_failures,
        total.snapshots,
        total.corruptions_detected,
    );
    println!(
        "sim: projection: {} commits ({} lost to a power loss before their sync), {} crashes of \
         the projector alone, {} crashes between the journal and the projection, {} follower \
         restarts before the watermark, {} follower restores from a snapshot, {} outputs \
         projected, {} checks against a rebuild, {} unreadable records skipped; {} orders and {} \
         answers at the ends of the runs that passed",
        total.projector_commits,
        total.projector_commits_lost,
        total.projector_crashes,
        total.crashes_behind_projection,
        total.projector_restarts_before_watermark,
        total.projector_restores_from_snapshot,
        total.outputs_projected,
        total.projection_checks,
        total.records_skipped,
        total.orders,
        total.answers,
    );
    println!(
        "sim: journal retention: {} passes moved {} segments to the archive",
        total.archive_passes, total.segments_archived,
    );
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
