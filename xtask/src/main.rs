//! Project automation, written in Rust and run as `cargo xtask <task>` (the alias is in
//! `.cargo/config.toml`), in the manner of rust-analyzer's `xtask/`: no shell scripts, no tools to
//! install, one place that says what CI runs.
//!
//! - `cargo xtask sim --seeds N [--seed S] [--steps K]`: the deterministic simulator over seeds
//!   `S..S+N`. Without `--seed`, `S` comes from the clock and is printed first, so every run,
//!   failing or not, can be repeated exactly.
//! - `cargo xtask ci`: formatting, clippy, the test suite and 400 simulator seeds, failing fast.
//! - `cargo xtask bench [engine|pipeline|replay]...`: the benchmark binaries in release; prints
//!   their JSON lines.
//! - `cargo xtask bench-http [--duration 30s] [--rate 20000]`: the server against wrk, pgbench and
//!   the open-loop load test on a 2-core machine (see `bench_http.rs`); needs `wrk`, `pgbench`,
//!   `psql`, `taskset` and a local PostgreSQL, so CI never runs it.
//!
//! xtask itself depends on nothing but `std`, so it builds in a second. The simulator and the
//! benchmarks need the engine optimised, so they run through `cargo run` in an optimised profile
//! rather than linking the engine into this debug binary.

mod bench_http;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  sim --seeds N [--seed S] [--steps K]   run the deterministic simulator over seeds S..S+N
  ci                                     fmt --check, clippy -D warnings, tests, 400 sim seeds
  bench [engine|pipeline|replay]...      run the benchmark binaries in release, print their JSON
  bench-http [--duration 30s] [--rate 20000]
                                         surge serve on core 0 against wrk, pgbench and the
                                         open-loop load test on core 1; one JSON line";

/// Simulated steps per seed when `--steps` is not given.
const SIM_STEPS_DEFAULT: u64 = 5_000;
/// Seeds `cargo xtask ci` runs.
const CI_SIM_SEEDS: u64 = 400;
const BENCHES: [&str; 3] = ["engine", "pipeline", "replay"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("sim") => sim(&args[1..]),
        Some("ci") if args.len() == 1 => ci(),
        Some("bench") => bench(&args[1..]),
        Some("bench-http") => bench_http::bench_http(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(_) => Err(format!("unknown arguments {args:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

// ----- sim -----

/// Runs the simulator's binary (`tests/src/bin/sim.rs`) in the `sim` profile.
///
/// Why a profile of its own: the simulator catches a failing seed's panic and goes on with the
/// next, and the release profile aborts on panic. `sim` is release with unwinding, and without
/// LTO so it builds fast. It is defined here, on the command line, because the profile serves only
/// this task; its artefacts go to `target/sim/` and never invalidate release builds.
fn sim(args: &[String]) -> Result<(), String> {
    let mut seeds = None;
    let mut seed = None;
    let mut steps = SIM_STEPS_DEFAULT;
    let mut words = args.iter();
    while let Some(flag) = words.next() {
        let value = words.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number: u64 = value.parse().map_err(|_| format!("{flag} {value}: not a number"))?;
        match flag.as_str() {
            "--seeds" => seeds = Some(number),
            "--seed" => seed = Some(number),
            "--steps" => steps = number,
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    let seeds = seeds.ok_or_else(|| format!("sim needs --seeds N\n{USAGE}"))?;
    let seed = seed.unwrap_or_else(seed_from_clock);
    println!(
        "sim: seed {seed}, {seeds} seeds of {steps} steps (repeat with: cargo xtask sim --seed {seed} --seeds {seeds} --steps {steps})"
    );
    let mut command = cargo();
    command.args(["run", "--quiet", "--profile", "sim"]);
    for setting in [
        "profile.sim.inherits=\"release\"",
        "profile.sim.panic=\"unwind\"",
        "profile.sim.lto=false",
        "profile.sim.debug=0",
        "profile.sim.codegen-units=16",
    ] {
        command.args(["--config", setting]);
    }
    command.args(["--package", "surge-tests", "--bin", "sim", "--"]);
    command.args(["--seed", &seed.to_string(), "--seeds", &seeds.to_string()]);
    command.args(["--steps", &steps.to_string()]);
    run(&mut command).map_err(|_| format!("sim: failures from seed {seed}; see the lines above"))
}

/// Milliseconds since the epoch: a different seed for every run, short enough to retype.
fn seed_from_clock() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

// ----- ci -----

fn ci() -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    run(cargo().args(["test", "--workspace"]))?;
    sim(&["--seeds".to_owned(), CI_SIM_SEEDS.to_string()])?;
    println!("xtask ci: all passed");
    Ok(())
}

// ----- bench -----

/// Runs each benchmark binary of `surge-benches` in release. Their progress goes to stderr and is
/// passed through; their results are JSON lines on stdout, printed here one per line.
fn bench(names: &[String]) -> Result<(), String> {
    let names: Vec<&str> = if names.is_empty() {
        BENCHES.to_vec()
    } else {
        names.iter().map(String::as_str).collect()
    };
    if let Some(unknown) = names.iter().find(|name| !BENCHES.contains(name)) {
        return Err(format!("no benchmark named {unknown}; there are {BENCHES:?}"));
    }
    for name in names {
        let mut command = cargo();
        command.args(["run", "--quiet", "--release", "--package", "surge-benches", "--bin", name]);
        eprintln!("xtask bench: {}", describe(&command));
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .map_err(|error| format!("bench {name}: could not start cargo: {error}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        for line in stdout.lines().filter(|line| line.trim_start().starts_with('{')) {
            println!("{line}");
        }
        if !output.status.success() {
            return Err(format!("bench {name} failed: {}", output.status));
        }
    }
    Ok(())
}

// ----- helpers -----

/// The cargo that runs us (`cargo xtask` sets `CARGO`), in the workspace root.
fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
    command
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is inside the workspace")
        .to_owned()
}

/// Runs a command with inherited output, after printing it.
fn run(command: &mut Command) -> Result<(), String> {
    let description = describe(command);
    eprintln!("xtask: {description}");
    let status =
        command.status().map_err(|error| format!("{description}: could not start: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{description}: {status}"))
    }
}

fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    words.join(" ")
}
