//! Load: a thousand clients at once against one real server (SQLite), each
//! with a keep-alive TLS connection of its own, doing what users do
//! (the scale-out section's mix: registering, uploading, retrieving
//! byte-checked, delivery slips, webmail) for a fixed time. Reported:
//! requests, errors, throughput, p50/p99 latency, the sockets the server
//! held, and its memory: the peak, and the resident size sampled over the
//! run, which must level off rather than grow with time (`cargo xtask
//! soak` runs this section for minutes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sealpost_harness::{ClusterDatabase, ClusterOptions, MixedLoad, ServerCluster, StartOrder};

use crate::memory::{peak_rss_mib, rss_mib};
use crate::report::{Figure, Row, Target};
use crate::stats::percentile;
use crate::{Context, Outcome};

/// Clients that register the first users before the many start.
const SEED_CLIENTS: usize = 16;
const SEED: Duration = Duration::from_secs(3);
/// How often the server's memory and sockets are read.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One reading of the server during the run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_mib: f64,
    sockets: usize,
}

pub async fn run(context: &Context) -> Result<Outcome> {
    let connections = context.sizes.load_connections;
    let measure = Duration::from_secs(context.sizes.load_seconds);
    let options = ClusterOptions {
        instances: 1,
        database: ClusterDatabase::Sqlite,
        start: StartOrder::OneAfterAnother,
        // Verification emails wait their turn behind the load's requests.
        smtp_timeout_seconds: 30,
        lease_seconds: 60,
        ..ClusterOptions::default()
    };
    let cluster = Arc::new(ServerCluster::start(options).await.context("starting the server")?);
    let pid = cluster.pid(0).context("the server is not running")?;
    let load = MixedLoad::with_connection_per_client(cluster.clone(), connections)?;
    let seeded = load.run_clients(SEED_CLIENTS, Duration::ZERO, SEED).await;
    if let Some(error) = seeded.errors.first() {
        bail!("registering the first users failed: {error}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (Ok(rss_mib), Some(sockets)) = (rss_mib(pid), cluster.open_sockets(0)) else {
                    break;
                };
                samples.push(Sample { at: started.elapsed(), rss_mib, sockets });
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            samples
        })
    };
    let report = load.run(Duration::ZERO, measure).await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.context("the sampler")?;
    let peak_rss = peak_rss_mib(pid)?;
    let peak_sockets = samples.iter().map(|s| s.sockets).max().unwrap_or(0);

    let latencies = &report.latencies_ms;
    let mut rows = vec![
        Row::alone(
            "clients, each its own TLS connection",
            Figure::count(connections),
            Target::None,
        ),
        Row::alone("peak sockets the server held", Figure::count(peak_sockets), Target::None),
        Row::alone("duration", Figure::seconds(measure.as_secs_f64()), Target::None),
        Row::alone("requests answered as expected", Figure::count(report.requests()), Target::None),
        Row::alone("errors", Figure::count(report.errors.len()), Target::Below(1.0)),
        Row::alone("requests", Figure::per_second(report.requests_per_second()), Target::None),
        Row::alone("p50 latency", Figure::ms(percentile(latencies, 50.0)), Target::None),
        Row::alone("p99 latency", Figure::ms(percentile(latencies, 99.0)), Target::None),
        Row::alone("server peak RSS", Figure::mib(peak_rss), Target::None),
    ];
    for share in [10, 50, 100] {
        if let Some(sample) = sample_at(&samples, measure, share) {
            rows.push(Row::alone(
                format!("server RSS at {share}% of the run ({:.0} s)", sample.at.as_secs_f64()),
                Figure::mib(sample.rss_mib),
                Target::None,
            ));
        }
    }
    let mut notes = vec![
        report.summary(),
        format!(
            "{} users, {} uploads, {} retrievals checked byte for byte",
            load.users(),
            load.uploads(),
            report.retrievals_checked
        ),
    ];
    notes.extend(report.errors.iter().take(5).map(|error| format!("error: {error}")));
    Ok(Outcome { rows, notes })
}

/// The last sample taken by `share` percent of `run`.
fn sample_at(samples: &[Sample], run: Duration, share: u32) -> Option<Sample> {
    let by = run.mul_f64(f64::from(share) / 100.0);
    samples.iter().take_while(|sample| sample.at <= by).last().or(samples.first()).copied()
}
