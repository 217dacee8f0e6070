//! `cargo xtask bench-http [--duration 30s] [--rate 20000]`: the HTTP figures of BENCHMARKS.md in
//! one run on a 2-core machine, with the server on core 0 and every load generator on core 1.
//!
//! It builds the release `surge`, starts `surge serve` on a fresh temporary data directory with a
//! generated admin token, prepares a `steady` sale (`surge loadtest --prepare-only --export`), and
//! runs, one after the other:
//!
//! 1. `wrk -t1 -c128` on `GET /healthz`: what the HTTP stack answers with nothing behind it;
//! 2. `wrk -t1 -c128` on buy-now `POST /v1/checkout` of one unit with `tok_ok`, buyers in turn and a
//!    fresh `Idempotency-Key` per request (a Lua script written here, reading the exported sale);
//! 3. `pgbench -c 16 -j 1 -n` on a conditional `UPDATE` of one hot row in PostgreSQL
//!    (127.0.0.1:5432, user `postgres`, database `test`): the durable hot-row baseline;
//! 4. `surge loadtest --scenario steady --rate R`: the open loop, for latency at a fixed offered
//!    rate without coordinated omission.
//!
//! and prints one JSON line with every figure, the ratios checkout/healthz and checkout/pgbench,
//! the date, `nproc` and the load average before and after (the machines are shared). The server
//! is stopped and the directory removed however the run ends, short of a kill of xtask itself.
//! `wrk`, `pgbench`, `psql` and `taskset` are needed here only; `cargo xtask ci` never runs this.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{cargo, describe, run};

const DURATION_S_DEFAULT: u64 = 30;
const RATE_PER_SEC_DEFAULT: u64 = 20_000;
/// wrk's connections, as BENCHMARKS.md has always used.
const WRK_CONNECTIONS: u32 = 128;
/// pgbench clients: enough to keep one hot row contended.
const PGBENCH_CLIENTS: u32 = 16;
const SERVER_CORE: &str = "0";
const GENERATOR_CORE: &str = "1";
/// How long the server may take to recover and answer `/readyz`, and to stop on SIGTERM.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(60);
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The PostgreSQL of the benchmark machines (trust authentication).
const PG_HOST: &str = "127.0.0.1";
const PG_USER: &str = "postgres";
const PG_DATABASE: &str = "test";
/// The hot row lives in a schema of its own, so that the benchmark never drops a table called
/// `inventory` that something else in the shared `test` database owns; pgbench reaches it through
/// `search_path`, and its script reads exactly as the comparison is usually written.
const PG_SCHEMA: &str = "surge_bench";
const PGBENCH_SCRIPT: &str =
    "UPDATE inventory SET available = available - 1 WHERE sku = 1 AND available >= 1;\n";
const PG_SETUP: &str = "CREATE SCHEMA IF NOT EXISTS surge_bench; \
    DROP TABLE IF EXISTS surge_bench.inventory; \
    CREATE TABLE surge_bench.inventory (sku integer PRIMARY KEY, available bigint NOT NULL); \
    INSERT INTO surge_bench.inventory VALUES (1, 1000000000000000);";

/// The checkout of test 2, for wrk. `setup` runs once per thread in wrk's main Lua state and
/// numbers the threads; `init` runs in each thread's own state, where `id` has been set, and
/// reads the sale; `request` writes one checkout.
const CHECKOUT_LUA: &str = r#"-- Written by `cargo xtask bench-http`: buy-now checkouts of one unit, paid with tok_ok, buyers
-- and SKUs in turn, a fresh Idempotency-Key per request. The argument is the file that
-- `surge loadtest --prepare-only --export` wrote.
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local buyers, skus, prefix, counter = {}, {}, "", 0
function init(args)
  local tag = "wrk"
  for line in io.lines(args[1]) do
    local key, value = line:match("^(%S+) (%S+)$")
    if key == "buyer" then
      buyers[#buyers + 1] = value
    elseif key == "sku" then
      skus[#skus + 1] = value
    elseif key == "tag" then
      tag = value
    end
  end
  assert(#buyers > 0 and #skus > 0, "no buyers or SKUs in " .. args[1])
  prefix = "wrk-" .. tag .. "-" .. tostring(id or 0) .. "-"
end

function request()
  counter = counter + 1
  local body = '{"shipping":{"name":"Load Tester","line1":"1 Main St","city":"Berlin",'
    .. '"postal_code":"10115"},"payment":{"token":"tok_ok"},"items":[{"sku":"'
    .. skus[counter % #skus + 1] .. '","quantity":1}]}'
  return wrk.format("POST", "/v1/checkout", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. buyers[counter % #buyers + 1],
    ["Idempotency-Key"] = prefix .. counter,
  }, body)
end
"#;

pub fn bench_http(args: &[String]) -> Result<(), String> {
    let (duration_s, rate_per_sec) = parse_args(args)?;
    for tool in ["taskset", "wrk", "pgbench", "psql"] {
        require_tool(tool)?;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores < 2 {
        return Err(format!(
            "bench-http needs 2 cores (server on core {SERVER_CORE}, load on core \
             {GENERATOR_CORE}); this machine has {cores}"
        ));
    }
    let load_average_start = load_average_1m();
    let started_at = utc_now();
    run(cargo().args(["build", "--release", "-p", "surge-gateway", "--bin", "surge"]))?;
    let surge = target_dir().join("release").join("surge");
    let scratch = Scratch::create()?;
    let admin_token = random_hex(16)?;
    let port = free_port()?;
    let target = format!("http://127.0.0.1:{port}");
    let mut commands = Vec::new();

    let mut serve = pinned(SERVER_CORE, &surge);
    serve.args(["serve", "--data-dir"]).arg(scratch.path.join("data"));
    serve.args(["--listen", &format!("127.0.0.1:{port}")]);
    serve.env("SURGE_ADMIN_TOKEN", &admin_token);
    commands.push(describe(&serve));
    let server = Server::start(serve, &scratch.path.join("server.log"), port)?;

    let sale = scratch.path.join("sale.txt");
    let mut prepare = pinned(GENERATOR_CORE, &surge);
    prepare.args(["loadtest", "--target", &target, "--scenario", "steady", "--prepare-only"]);
    prepare.arg("--export").arg(&sale).env("SURGE_ADMIN_TOKEN", &admin_token);
    capture(&mut prepare)?;

    let duration = format!("{duration_s}s");
    let connections = WRK_CONNECTIONS.to_string();
    let mut healthz = pinned(GENERATOR_CORE, "wrk");
    healthz.args(["-t1", "-c", &connections, "-d", &duration, &format!("{target}/healthz")]);
    commands.push(describe(&healthz));
    let healthz = parse_wrk(&capture(&mut healthz)?)?;

    let script = scratch.path.join("checkout.lua");
    fs::write(&script, CHECKOUT_LUA).map_err(|error| format!("write {script:?}: {error}"))?;
    let mut checkout = pinned(GENERATOR_CORE, "wrk");
    checkout.args(["-t1", "-c", &connections, "-d", &duration, "-s"]).arg(&script);
    checkout.arg(format!("{target}/v1/checkout")).arg("--").arg(&sale);
    commands.push(describe(&checkout));
    let checkout = parse_wrk(&capture(&mut checkout)?)?;

    let (pgbench, pgbench_command) = run_pgbench(duration_s, &scratch.path)?;
    commands.push(pgbench_command);

    let report = scratch.path.join("open-loop.json");
    let mut open_loop = pinned(GENERATOR_CORE, &surge);
    open_loop.args(["loadtest", "--target", &target, "--scenario", "steady"]);
    open_loop.args(["--rate", &rate_per_sec.to_string(), "--duration", &duration]);
    open_loop.arg("--report").arg(&report).env("SURGE_ADMIN_TOKEN", &admin_token);
    commands.push(describe(&open_loop));
    // Its table goes to stderr with the rest of the progress: stdout is the one JSON line.
    let open_loop_ok = capture(&mut open_loop);
    let report = fs::read_to_string(&report)
        .map_err(|error| format!("the open loop wrote no report ({error}): {open_loop_ok:?}"))?;
    open_loop_ok?;
    drop(server);

    let checkout_over = |baseline: f64| ratio(checkout.ok_per_sec, baseline);
    let checkout_figure = |path: &[&str]| json_number(&report, path);
    let figures = [
        ("bench", quote("http")),
        ("date", quote(&started_at)),
        ("nproc", cores.to_string()),
        (
            "load_average_1m",
            format!(
                "{{\"start\":{},\"end\":{}}}",
                optional(load_average_start),
                optional(load_average_1m())
            ),
        ),
        ("duration_s", duration_s.to_string()),
        ("healthz_wrk_per_sec", healthz.requests_per_sec.to_string()),
        ("checkout_wrk_per_sec", checkout.requests_per_sec.to_string()),
        ("checkout_wrk_ok_per_sec", number(checkout.ok_per_sec)),
        ("checkout_wrk_non_2xx", checkout.non_2xx.to_string()),
        ("checkout_wrk_socket_errors", checkout.socket_errors.to_string()),
        ("pgbench_tps", pgbench.tps.to_string()),
        ("pgbench_latency_ms_mean", optional(pgbench.latency_ms_mean)),
        ("checkout_over_healthz", number(checkout_over(healthz.requests_per_sec))),
        ("checkout_over_pgbench", number(checkout_over(pgbench.tps))),
        (
            "open_loop",
            format!(
                "{{\"offered_per_sec\":{rate_per_sec},\"checkout_per_sec\":{},\"p50_ms\":{},\
                 \"p99_ms\":{},\"p999_ms\":{},\"late_sends\":{},\"unsent\":{}}}",
                optional(checkout_figure(&["checkout", "per_sec"])),
                optional(checkout_figure(&["checkout", "p50_ms"])),
                optional(checkout_figure(&["checkout", "p99_ms"])),
                optional(checkout_figure(&["checkout", "p999_ms"])),
                optional(json_number(&report, &["late_sends"])),
                optional(json_number(&report, &["unsent"])),
            ),
        ),
        ("open_loop_report", compact_json(&report)),
        ("measured", quote(MEASURED)),
        (
            "commands",
            format!("[{}]", commands.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",")),
        ),
    ];
    let fields: Vec<String> =
        figures.iter().map(|(name, value)| format!("{}:{value}", quote(name))).collect();
    println!("{{{}}}", fields.join(","));
    Ok(())
}

const MEASURED: &str = "server pinned to core 0, every generator to core 1 (PostgreSQL itself \
    unpinned); *_wrk_per_sec = wrk's Requests/sec; checkout_wrk_ok_per_sec = that times the share of \
    2xx and 3xx answers; pgbench_tps = tps of a conditional UPDATE of one row, 16 clients; \
    ratios use checkout_wrk_ok_per_sec; open_loop = surge loadtest --scenario steady --rate, \
    latency of successful checkouts from their intended send time";

fn parse_args(args: &[String]) -> Result<(u64, u64), String> {
    let (mut duration_s, mut rate_per_sec) = (DURATION_S_DEFAULT, RATE_PER_SEC_DEFAULT);
    let mut words = args.iter();
    while let Some(flag) = words.next() {
        let value = words.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--duration" => duration_s = parse_seconds(value)?,
            "--rate" => {
                rate_per_sec =
                    value.parse().ok().filter(|rate| *rate > 0).ok_or_else(|| {
                        format!("--rate {value}: a positive number of requests/s")
                    })?;
            }
            _ => return Err(format!("bench-http: unknown argument {flag}")),
        }
    }
    Ok((duration_s, rate_per_sec))
}

/// Whole seconds, written `30`, `30s` or `2m`: wrk and pgbench take whole seconds.
fn parse_seconds(text: &str) -> Result<u64, String> {
    let (number, factor) = match text.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(factor))
        .filter(|seconds| *seconds > 0)
        .ok_or_else(|| format!("--duration {text}: whole seconds, like 30s or 2m"))
}

fn require_tool(name: &str) -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()));
    if found {
        Ok(())
    } else {
        Err(format!(
            "bench-http needs `{name}` on PATH (Debian: apt-get install wrk postgresql-client \
             util-linux); it is not needed for anything else"
        ))
    }
}

/// `taskset -c <core> <program>`.
fn pinned(core: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("taskset");
    command.args(["-c", core]).arg(program);
    command
}

/// Where cargo put the release build: `CARGO_TARGET_DIR` if set, else `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => crate::workspace_root().join("target"),
    }
}

/// Runs a command, passing its stderr through, and returns its stdout (also echoed to stderr, so
/// that the tool's own report is seen as it ran).
fn capture(command: &mut Command) -> Result<String, String> {
    let description = describe(command);
    eprintln!("xtask: {description}");
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| format!("{description}: could not start: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprint!("{stdout}");
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{description}: {}", output.status))
    }
}

// ----- the server -----

/// A temporary directory, removed with everything in it when dropped.
#[derive(Debug)]
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create() -> Result<Scratch, String> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let name = format!("surge-bench-http-{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        fs::create_dir(&path).map_err(|error| format!("create {path:?}: {error}"))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.path) {
            eprintln!("xtask: could not remove {:?}: {error}", self.path);
        }
    }
}

/// A running `surge serve`, stopped with SIGTERM (then SIGKILL) when dropped.
#[derive(Debug)]
struct Server {
    child: Child,
}

impl Server {
    /// Starts `command` with its output in `log` and waits until it answers `/readyz`.
    fn start(mut command: Command, log: &Path, port: u16) -> Result<Server, String> {
        let file = fs::File::create(log).map_err(|error| format!("create {log:?}: {error}"))?;
        let file_too = file.try_clone().map_err(|error| format!("{log:?}: {error}"))?;
        eprintln!("xtask: {}", describe(&command));
        let child = command
            .stdout(file)
            .stderr(file_too)
            .spawn()
            .map_err(|error| format!("start surge serve: {error}"))?;
        let mut server = Server { child };
        let deadline = Instant::now() + SERVER_READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("surge serve exited ({status}): {}", log_tail(log)));
            }
            if ready(port) {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "surge serve not ready after {SERVER_READY_TIMEOUT:?}: {}",
                    log_tail(log)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: the server drains and closes its journal as in production. taskset
        // execs the server, so the child's pid is the server's.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + SERVER_STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("xtask: surge serve ignored SIGTERM for {SERVER_STOP_TIMEOUT:?}; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /readyz` answers 200 (one plain HTTP/1.1 exchange over std's `TcpStream`).
fn ready(port: u16) -> bool {
    let exchange = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer.starts_with(b"HTTP/1.1 200"))
    };
    exchange().unwrap_or(false)
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!("last lines of {log:?}:\n{}", lines[lines.len().saturating_sub(20)..].join("\n"))
}

/// A port nobody listens on right now (the kernel's choice; the server binds it a moment later).
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|error| format!("find a free port: {error}"))?;
    listener.local_addr().map(|address| address.port()).map_err(|error| error.to_string())
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut random = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut random))
        .map_err(|error| format!("read /dev/urandom: {error}"))?;
    Ok(random.iter().map(|byte| format!("{byte:02x}")).collect())
}

// ----- wrk and pgbench -----

#[derive(Debug, PartialEq)]
struct WrkFigures {
    requests_per_sec: f64,
    /// Answers other than 2xx or 3xx, and connect/read/write/timeout errors.
    non_2xx: u64,
    socket_errors: u64,
    /// `requests_per_sec` times the share of 2xx and 3xx answers: wrk's own clock, whose
    /// elapsed time it prints rounded.
    ok_per_sec: f64,
}

/// Reads wrk's summary: `Requests/sec:`, `N requests in 30.01s`, and the error lines wrk prints
/// only when there were errors.
fn parse_wrk(output: &str) -> Result<WrkFigures, String> {
    let field = |prefix: &str| {
        output.lines().find_map(|line| line.trim().strip_prefix(prefix).map(str::trim))
    };
    let requests_per_sec = field("Requests/sec:")
        .and_then(|value| value.parse::<f64>().ok())
        .ok_or_else(|| format!("no `Requests/sec:` in wrk's output:\n{output}"))?;
    let requests = output
        .lines()
        .find_map(|line| line.trim().split_once(" requests in ")?.0.parse::<u64>().ok())
        .ok_or_else(|| format!("no `N requests in Ts` in wrk's output:\n{output}"))?;
    let non_2xx = field("Non-2xx or 3xx responses:").and_then(|n| n.parse().ok()).unwrap_or(0);
    let socket_errors = field("Socket errors:").map_or(0, |errors| {
        errors
            .split(',')
            .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    });
    let ok_share = requests.saturating_sub(non_2xx) as f64 / requests.max(1) as f64;
    let ok_per_sec = requests_per_sec * ok_share;
    Ok(WrkFigures { requests_per_sec, non_2xx, socket_errors, ok_per_sec })
}

#[derive(Debug, PartialEq)]
struct PgbenchFigures {
    tps: f64,
    latency_ms_mean: Option<f64>,
}

fn parse_pgbench(output: &str) -> Result<PgbenchFigures, String> {
    let number_after = |prefix: &str| {
        output.lines().find_map(|line| {
            line.trim().strip_prefix(prefix)?.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    let tps = number_after("tps = ")
        .ok_or_else(|| format!("no `tps = ` in pgbench's output:\n{output}"))?;
    Ok(PgbenchFigures { tps, latency_ms_mean: number_after("latency average = ") })
}

/// Creates the hot row, runs pgbench on it, and drops the schema again whatever pgbench did.
fn run_pgbench(duration_s: u64, scratch: &Path) -> Result<(PgbenchFigures, String), String> {
    let psql = |sql: &str| {
        let mut command = Command::new("psql");
        command.args(["-h", PG_HOST, "-U", PG_USER, "-d", PG_DATABASE, "-v", "ON_ERROR_STOP=1"]);
        command.args(["-q", "-c", sql]);
        run(&mut command)
    };
    psql(PG_SETUP).map_err(|error| format!("prepare the hot row (is PostgreSQL up?): {error}"))?;
    let script = scratch.join("hot_row.sql");
    fs::write(&script, PGBENCH_SCRIPT).map_err(|error| format!("write {script:?}: {error}"))?;
    let mut pgbench = pinned(GENERATOR_CORE, "pgbench");
    pgbench.args(["-h", PG_HOST, "-U", PG_USER, "-c", &PGBENCH_CLIENTS.to_string(), "-j", "1"]);
    pgbench.args(["-T", &duration_s.to_string(), "-n", "-f"]).arg(&script).arg(PG_DATABASE);
    pgbench.env("PGOPTIONS", format!("-c search_path={PG_SCHEMA}"));
    let description = format!("PGOPTIONS='-c search_path={PG_SCHEMA}' {}", describe(&pgbench));
    let output = capture(&mut pgbench);
    let dropped = psql(&format!("DROP SCHEMA {PG_SCHEMA} CASCADE"));
    let figures = parse_pgbench(&output?)?;
    dropped?;
    Ok((figures, description))
}

// ----- output -----

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        f64::NAN
    }
}

/// A JSON number with four decimals at most, `null` for what is not a number.
fn number(value: f64) -> String {
    if value.is_finite() {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        "null".to_owned()
    }
}

fn optional(value: Option<f64>) -> String {
    value.map_or_else(|| "null".to_owned(), number)
}

/// A JSON string.
fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            character if u32::from(character) < 0x20 => {
                quoted.push_str(&format!("\\u{:04x}", u32::from(character)));
            }
            character => quoted.push(character),
        }
    }
    quoted.push('"');
    quoted
}

/// The number after the last of `path`'s keys, each looked for after the one before: enough for
/// the loadtest report, whose keys under an operation are unique and whose strings hold no
/// quotes. Not a JSON parser; xtask has no dependencies.
fn json_number(text: &str, path: &[&str]) -> Option<f64> {
    let mut rest = text;
    for key in path {
        let quoted = format!("\"{key}\"");
        rest = &rest[rest.find(&quoted)? + quoted.len()..];
    }
    let value = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
        .unwrap_or(value.len());
    value[..end].parse().ok()
}

/// Pretty-printed JSON on one line: every line trimmed and joined. serde_json escapes newlines
/// inside strings, so no string is cut.
fn compact_json(text: &str) -> String {
    text.lines().map(str::trim).collect()
}

fn load_average_1m() -> Option<f64> {
    fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` now.
fn utc_now() -> String {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let time = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3_600,
        time / 60 % 60,
        time % 60
    )
}

/// The Gregorian date of a count of days since 1970-01-01: counted in 400-year eras of 146,097
/// days, with years starting on 1 March so that the leap day comes last.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 10s test @ http://127.0.0.1:18091/healthz
  1 threads and 128 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.41ms    2.18ms  19.14ms   82.62%
    Req/Sec    57.90k     5.16k   68.28k    71.00%
  578917 requests in 10.06s, 65.70MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 917
Requests/sec:  57544.83
Transfer/sec:      6.53MB
";

    #[test]
    fn wrk_figures_are_read_from_its_summary() {
        let figures = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(figures.requests_per_sec, 57_544.83);
        assert_eq!((figures.non_2xx, figures.socket_errors), (917, 7));
        assert!((figures.ok_per_sec - 57_544.83 * 578_000.0 / 578_917.0).abs() < 1e-6);
        let clean: String = WRK_OUTPUT
            .lines()
            .filter(|line| !line.contains("errors") && !line.contains("Non-2xx"))
            .map(|line| format!("{line}\n"))
            .collect();
        let figures = parse_wrk(&clean).unwrap();
        assert_eq!((figures.non_2xx, figures.socket_errors), (0, 0));
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }

    #[test]
    fn pgbench_figures_are_read_from_its_summary() {
        let output = "transaction type: hot_row.sql
scaling factor: 1
query mode: simple
number of clients: 16
number of threads: 1
maximum number of tries: 1
duration: 30 s
number of transactions actually processed: 61234
number of failed transactions: 0 (0.000%)
latency average = 7.839 ms
initial connection time = 25.135 ms
tps = 2041.133333 (without initial connection time)
";
        let figures = parse_pgbench(output).unwrap();
        assert_eq!(figures, PgbenchFigures { tps: 2_041.133_333, latency_ms_mean: Some(7.839) });
        assert!(parse_pgbench("connection refused").is_err());
    }

    #[test]
    fn report_numbers_are_found_by_their_path() {
        let report = r#"{
  "late_sends": 12,
  "late_sends_generator_behind": 3,
  "operations": {
    "checkout": {
      "count": 100,
      "errors": {},
      "p50_ms": 1.5,
      "p99_ms": 2e1
    }
  },
  "scenario": "steady"
}"#;
        assert_eq!(json_number(report, &["late_sends"]), Some(12.0));
        assert_eq!(json_number(report, &["checkout", "p50_ms"]), Some(1.5));
        assert_eq!(json_number(report, &["checkout", "p99_ms"]), Some(20.0));
        assert_eq!(json_number(report, &["checkout", "p999_ms"]), None);
        assert_eq!(json_number(report, &["scenario"]), None);
        assert!(compact_json(report).starts_with(r#"{"late_sends": 12,"late_sends_generator"#));
    }

    #[test]
    fn durations_are_whole_seconds() {
        assert_eq!(parse_seconds("30s"), Ok(30));
        assert_eq!(parse_seconds("30"), Ok(30));
        assert_eq!(parse_seconds("2m"), Ok(120));
        assert!(parse_seconds("500ms").is_err());
        assert!(parse_seconds("0s").is_err());
        assert_eq!(parse_args(&[]), Ok((DURATION_S_DEFAULT, RATE_PER_SEC_DEFAULT)));
        let args = ["--rate", "5000", "--duration", "10s"].map(str::to_owned);
        assert_eq!(parse_args(&args), Ok((10, 5_000)));
        assert!(parse_args(&["--rate".to_owned(), "0".to_owned()]).is_err());
    }

    #[test]
    fn output_is_json() {
        assert_eq!(quote("a \"b\"\\\n"), r#""a \"b\"\\\n""#);
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.123_456), "0.1235");
        assert_eq!(number(f64::NAN), "null");
        assert!(ratio(5.0, 0.0).is_nan());
    }

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
    }
}
