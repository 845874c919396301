//! The real server binary under a thousand connections at once, each a
//! client with its own keep-alive TLS connection doing what users do
//! (registering, uploading, retrieving, reading slips, webmail): every
//! request gets its expected answer and every retrieval its exact content.
//! Timings are reported, not asserted (`cargo xtask bench -- --only load`
//! measures them on a quiet machine).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sealpost_harness::{
    ClusterDatabase, ClusterOptions, MixedLoad, ServerCluster, StartOrder, on_postgres,
};

const CONNECTIONS: usize = 1000;
const LOAD: Duration = Duration::from_secs(8);
/// Clients that register the first users before the thousand start.
const SEED_CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_connections_of_mixed_traffic_get_only_right_answers() {
    let database = if on_postgres() { ClusterDatabase::Postgres } else { ClusterDatabase::Sqlite };
    let options = ClusterOptions {
        instances: 1,
        database,
        start: StartOrder::OneAfterAnother,
        // Verification emails wait their turn behind the load's requests.
        smtp_timeout_seconds: 30,
        lease_seconds: 60,
        ..ClusterOptions::default()
    };
    let cluster = Arc::new(ServerCluster::start(options).await.expect("the server starts"));
    let load =
        MixedLoad::with_connection_per_client(cluster.clone(), CONNECTIONS).expect("load clients");
    let seeded = load.run_clients(SEED_CLIENTS, Duration::ZERO, Duration::from_secs(2)).await;
    assert!(seeded.errors.is_empty(), "seeding: {:#?}", seeded.errors);

    // The server's sockets, sampled while the load runs: how many of the
    // connections were open at once (reported: how fast a loaded machine
    // lets a thousand clients connect is timing, not correctness).
    let peak_sockets = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (cluster, peak) = (cluster.clone(), peak_sockets.clone());
        tokio::spawn(async move {
            while let Some(open) = cluster.open_sockets(0) {
                peak.fetch_max(open, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let report = load.run(Duration::ZERO, LOAD).await;
    sampler.abort();
    let peak_sockets = peak_sockets.load(Ordering::Relaxed);
    eprintln!("{}", report.summary());
    eprintln!(
        "{CONNECTIONS} clients: peak {peak_sockets} open sockets, peak RSS {:.0} MiB, {} users, {} uploads",
        cluster.peak_rss_mib(0).unwrap_or_default(),
        load.users(),
        load.uploads()
    );
    assert!(report.errors.is_empty(), "{} errors: {:#?}", report.errors.len(), report.errors);
    assert!(report.retrievals_checked > 0, "recipients retrieved content");
    let problems = load.check_content(0).await;
    assert!(problems.is_empty(), "content differs:\n{}", problems.join("\n"));
}
