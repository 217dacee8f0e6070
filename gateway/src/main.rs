//! `surge`: one binary for serving, operating and load-testing Surge (see API.md, "Command line").

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;
use surge_engine::Limits;
use surge_gateway::auth::{self, Tokens};
use surge_gateway::startup::{self, Paths};
use surge_gateway::{demo, AppState, Config};
use surge_pipeline::{Pipeline, PipelineConfig};

/// mimalloc rather than glibc's malloc: allocation and free were the top symbols of a checkout
/// (BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "surge",
    version,
    about = "A commerce backend that sells the last unit exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Runs the engine with its journal and the HTTP front door.
    Serve(ServeArgs),
    /// Operator tools for a data directory's journal.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// The Black Friday load test against a running server, with an oversell check.
    Loadtest(surge_gateway::loadtest::Args),
    /// Operator tools for the search index.
    #[command(subcommand)]
    Search(SearchCommand),
}

#[derive(Debug, Subcommand)]
enum SearchCommand {
    /// Clears the index and rebuilds it from the catalog and the engine state (server stopped).
    Reindex {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Reservation window, like `500ms`, `2s`, `10m`.
    #[arg(long, default_value = "10m", value_parser = surge_gateway::time::parse_duration)]
    reservation_ttl: Duration,
    /// On the first start (no product ever stored), load the demo catalog: 12,000 products,
    /// four warehouses, stock.
    #[arg(long)]
    demo: bool,
    /// How long the sandbox payment provider takes to answer, like `20ms`.
    #[arg(long, default_value = "20ms", value_parser = surge_gateway::time::parse_duration)]
    payment_latency: Duration,
    /// Time a connection has to send a whole request header, from its start or from the end of
    /// its previous response (a silent or idle connection is closed after it).
    #[arg(long, default_value = "10s", value_parser = surge_gateway::time::parse_duration)]
    header_timeout: Duration,
    /// Connections open at once; past it new ones wait in the listen backlog.
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..))]
    connections_max: u32,
    /// PostgreSQL for the service tables (issue P5: not built yet; refused).
    #[arg(long)]
    database_url: Option<String>,
    /// Kafka brokers for events (issue P5: not built yet; refused).
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// Stream the journal to a standby (not built yet; refused).
    #[arg(long)]
    replicate_to: Option<String>,
    /// Run as the standby of a primary (not built yet; refused).
    #[arg(long)]
    standby_of: Option<String>,
}

impl ServeArgs {
    /// Refuses flags of API.md whose feature is not built yet, rather than ignoring them.
    fn refuse_unbuilt(&self) -> anyhow::Result<()> {
        let unbuilt = [
            ("--database-url", self.database_url.is_some()),
            ("--kafka-brokers", self.kafka_brokers.is_some()),
            ("--replicate-to", self.replicate_to.is_some()),
            ("--standby-of", self.standby_of.is_some()),
        ];
        match unbuilt.iter().find(|(_, given)| *given) {
            Some((flag, _)) => {
                anyhow::bail!("{flag} is not built yet (see \"What is missing\" in the README)")
            }
            None => Ok(()),
        }
    }
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// Checks every record's checksum, sequence and payload.
    Verify {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Prints records as JSON lines.
    Inspect {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Rebuilds engine state from snapshot and journal and prints a summary with its digest.
    Replay {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        #[arg(long)]
        to: Option<u64>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tantivy=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Serve(args) => serve(args),
        Commands::Journal(JournalCommand::Verify { data_dir }) => {
            surge_journal_tools::verify(&data_dir)
        }
        Commands::Journal(JournalCommand::Inspect { data_dir, from, limit }) => {
            surge_journal_tools::inspect(&data_dir, from, limit)
        }
        Commands::Journal(JournalCommand::Replay { data_dir, to }) => {
            surge_journal_tools::replay(&data_dir, to, Limits::PRODUCTION)
        }
        Commands::Loadtest(args) => surge_gateway::loadtest::run(args),
        Commands::Search(SearchCommand::Reindex { data_dir }) => reindex(&data_dir),
    };
    result.unwrap_or_else(|error| {
        eprintln!("surge: {error:#}");
        ExitCode::FAILURE
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    args.refuse_unbuilt()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("create data directory {}", args.data_dir.display()))?;
        let state = Arc::new(AppState::default());
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        tracing::info!(address = %listener.local_addr()?, "listening");
        let server_state = Arc::clone(&state);
        if args.header_timeout.is_zero() {
            anyhow::bail!("--header-timeout must be more than 0");
        }
        let limits = surge_gateway::server::Limits {
            header_read_timeout: args.header_timeout,
            connections_max: args.connections_max as usize,
            ..surge_gateway::server::Limits::default()
        };
        let server = tokio::spawn(surge_gateway::server::serve(
            listener,
            surge_gateway::app(server_state),
            limits,
            shutdown_signal(),
        ));

        // First, so that an admin token too short to start with is refused before any secret is
        // written.
        let tokens = Tokens::load(
            &args.data_dir,
            std::env::var("SURGE_ADMIN_TOKEN").ok(),
            Duration::from_secs(24 * 3600),
        )?;
        let webhook_secret = match std::env::var("SURGE_WEBHOOK_SECRET") {
            Ok(secret) if !secret.is_empty() => secret,
            _ => auth::load_or_create_hex_secret(&args.data_dir.join("webhook.secret"))?,
        };
        let config = Config {
            reservation_ttl: args.reservation_ttl,
            payment_latency: args.payment_latency,
            webhook_secret,
            ..Config::default()
        };
        let paths =
            Paths { database: args.data_dir.join("surge.db"), search_dir: args.data_dir.clone() };
        let data_dir = args.data_dir.clone();
        let running = startup::start(
            &state,
            config,
            tokens,
            paths,
            PipelineConfig::default(),
            move |limits| Pipeline::restore_dir(&data_dir, limits),
        )
        .await?;
        if args.demo {
            match demo::load_if_empty(&running.services)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                Some(summary) => tracing::info!(?summary, "demo catalog loaded; indexing it"),
                None => tracing::info!("--demo: the catalog is not empty, nothing loaded"),
            }
        }
        state.set_ready(Arc::clone(&running.services));
        tracing::info!("ready");
        server.await?;
        tokio::task::spawn_blocking(move || running.stop()).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

/// `surge search reindex`: rebuilds the search index from the catalog tables, with availability
/// from the engine state the journal holds (restored exactly as `replay` does). The server must
/// be stopped: the index has one writer.
fn reindex(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let (journal, snapshots) = surge_journal_tools::open_storages(data_dir)?;
    let db_path = data_dir.join("surge.db");
    if !db_path.is_file() {
        anyhow::bail!("no catalog database at {}", db_path.display());
    }
    // Brings an older database's schema (the outbox) up to date.
    drop(surge_gateway::db::Db::open(&db_path)?);
    let skus: Vec<u32> = {
        let connection = surge_gateway::search::open_catalog(&db_path)?;
        let mut statement = connection.prepare("SELECT id FROM skus WHERE deleted = 0")?;
        let skus = statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
        skus
    };
    let recovery = surge_journal::scan(&journal)?;
    let (engine, _) =
        surge_pipeline::restore(Limits::PRODUCTION, &journal, &snapshots, &recovery, None)?;
    let (sequence, availability) = surge_gateway::search::Availability::of_engine(&engine, &skus);
    let (summary, documents) = surge_gateway::search::reindex(data_dir, &availability)?;
    println!(
        "{}",
        json!({
            "products": summary.products,
            "in_stock": summary.in_stock,
            "documents": documents,
            "catalog_offset": summary.offset,
            "engine_sequence": sequence.0,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(ExitCode::SUCCESS)
}
