//! `cargo xtask bench`: every speed that matters, beside its physical floor
//! or a peer measured in the same run, in one table.
//!
//! Each section starts what it measures from scratch (mail stack, server,
//! agents, peers) so none leans on another's state. Missing a target never
//! fails the run; a section that cannot run at all does, after the table
//! is printed and written, so `--quick` in CI proves every section works.

mod backlog;
mod imap;
mod load;
mod memory;
mod report;
mod retrieval;
mod scale_out;
mod search;
mod sending;
mod setup;
mod smtp;
mod startup;
mod stats;
mod swap;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::report::{Machine, Report, Row, Section};
use crate::setup::Binaries;

#[derive(Parser)]
#[command(name = "sealpost-bench", about = "Sealpost benchmarks on the real stack")]
struct Args {
    /// Small sizes, to prove every section still runs (what CI does).
    #[arg(long)]
    quick: bool,
    /// Pending notifications for the backlog section, instead of the size's default.
    #[arg(long)]
    backlog: Option<usize>,
    /// Seconds the load section runs, instead of the size's default
    /// (`cargo xtask soak` sets it).
    #[arg(long)]
    load_seconds: Option<u64>,
    /// Run only the sections whose names contain this (repeatable).
    #[arg(long = "only")]
    only: Vec<String>,
    /// Where `bench.md` and `bench.json` go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The build profile the binaries come from, for the report.
    #[arg(long, default_value = "release")]
    profile: String,
}

/// How much work each section does.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Messages sent one at a time for swap latency (and as many plain ones for the floor).
    pub swap_messages: usize,
    /// Pending notifications for the backlog, and how many rounds.
    pub backlog: usize,
    pub backlog_rounds: usize,
    /// Seconds each retrieval load runs, and how many rounds.
    pub retrieval_seconds: u64,
    pub retrieval_rounds: usize,
    /// Recipients whose notifications are queued at once, and how many rounds.
    pub sending: usize,
    pub sending_rounds: usize,
    /// Messages in the search corpus, and the queries run against it.
    pub search_corpus: usize,
    pub search_queries: usize,
    /// Repeats of registration and of the agent's cold start.
    pub registrations: usize,
    pub cold_starts: usize,
    /// Seconds each scale-out round of the mixed load runs, and how many rounds.
    pub scale_seconds: u64,
    pub scale_rounds: usize,
    /// Clients of the load section, each with its own connection, and
    /// how many seconds they keep going.
    pub load_connections: usize,
    pub load_seconds: u64,
}

impl Sizes {
    fn full() -> Self {
        Self {
            swap_messages: 100,
            backlog: 10_000,
            backlog_rounds: 3,
            retrieval_seconds: 10,
            retrieval_rounds: 5,
            sending: 10_000,
            sending_rounds: 3,
            search_corpus: 100_000,
            search_queries: 20,
            registrations: 10,
            cold_starts: 10,
            scale_seconds: 10,
            scale_rounds: 3,
            load_connections: 1000,
            load_seconds: 60,
        }
    }

    fn quick() -> Self {
        Self {
            swap_messages: 10,
            backlog: 200,
            backlog_rounds: 1,
            retrieval_seconds: 2,
            retrieval_rounds: 1,
            sending: 200,
            sending_rounds: 1,
            search_corpus: 2_000,
            search_queries: 20,
            registrations: 2,
            cold_starts: 3,
            scale_seconds: 2,
            scale_rounds: 1,
            load_connections: 1000,
            load_seconds: 5,
        }
    }
}

/// Waits for Ctrl-C or SIGTERM (what `timeout` sends) and names it.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    if let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return "Ctrl-C",
            _ = terminate.recv() => return "SIGTERM",
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

/// What every section gets.
pub struct Context {
    pub sizes: Sizes,
    pub binaries: Binaries,
    pub quick: bool,
}

/// What a section returns: its rows and notes worth keeping beside them.
#[derive(Default)]
pub struct Outcome {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    sealpost_server::install_crypto_provider();
    let args = Args::parse();
    let binaries = match Binaries::from_env() {
        Ok(binaries) => binaries,
        Err(error) => {
            eprintln!("sealpost-bench: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut sizes = if args.quick { Sizes::quick() } else { Sizes::full() };
    if let Some(backlog) = args.backlog {
        sizes.backlog = backlog;
        sizes.backlog_rounds = 1;
    }
    if let Some(seconds) = args.load_seconds {
        sizes.load_seconds = seconds;
    }
    let context = Context { sizes, binaries, quick: args.quick };
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut report = Report {
        started_at,
        machine: Machine::describe(),
        profile: args.profile.clone(),
        quick: args.quick,
        sections: Vec::new(),
    };

    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| name.contains(o));
    let mut failed = false;
    for name in SECTIONS {
        if !wanted(name) {
            continue;
        }
        println!("==> {name}");
        let started = Instant::now();
        // Stopped half-way, the section's mail stack, servers and peers are
        // dropped, which stops them, instead of outliving the benchmark.
        let outcome = tokio::select! {
            outcome = run_section(name, &context) => outcome,
            signal = stop_signal() => {
                eprintln!("sealpost-bench: stopped by {signal}; what the section started is stopped too");
                return ExitCode::from(130);
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let section = match outcome {
            Ok(outcome) => {
                for row in &outcome.rows {
                    println!("    {}: {}", row.measurement, row.ours);
                }
                Section {
                    name: name.to_owned(),
                    rows: outcome.rows,
                    notes: outcome.notes,
                    error: None,
                    seconds,
                }
            }
            Err(error) => {
                failed = true;
                eprintln!("    could not run: {error:#}");
                Section {
                    name: name.to_owned(),
                    rows: Vec::new(),
                    notes: Vec::new(),
                    error: Some(format!("{error:#}")),
                    seconds,
                }
            }
        };
        println!("    ({seconds:.1} s)");
        report.sections.push(section);
    }

    println!("\n{}", report.markdown());
    if let Err(error) = report.write(&args.out) {
        eprintln!("sealpost-bench: {error:#}");
        return ExitCode::FAILURE;
    }
    println!("written to {}/bench.md and bench.json", args.out.display());
    if failed {
        eprintln!("sealpost-bench: a section could not run (see above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// In the order they run: the ones without a mail stack first.
const SECTIONS: [&str; 8] = [
    "search",
    "scale-out",
    "load",
    "registration and start",
    "swap latency",
    "backlog",
    "retrieval",
    "sending",
];

async fn run_section(name: &str, context: &Context) -> anyhow::Result<Outcome> {
    match name {
        "search" => search::run(context).await,
        "registration and start" => startup::run(context).await,
        "swap latency" => swap::run(context).await,
        "backlog" => backlog::run(context).await,
        "retrieval" => retrieval::run(context).await,
        "sending" => sending::run(context).await,
        "scale-out" => scale_out::run(context).await,
        "load" => load::run(context).await,
        other => anyhow::bail!("no section named {other}"),
    }
}
