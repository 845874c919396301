//! Several instances of the real server binary behind a load balancer (the
//! harness's clients spread their requests over them in turn), sharing one
//! PostgreSQL, one content directory, one certificate and one relay: under
//! a mixed load nothing is lost or doubled, and when an instance dies
//! mid-load the other finishes its work, sending again only the
//! notifications the dead one had in flight.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sealpost_harness::{ClusterOptions, LoadReport, MixedLoad, ServerCluster, StartOrder};

/// Clients at once, each one request at a time.
const CLIENTS: usize = 16;
/// How long the clients keep going.
const LOAD: Duration = Duration::from_secs(6);
/// Generous: the outbox sends what the load queued, and notifications the
/// killed instance had claimed wait out their lease first.
const DRAIN: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_under_mixed_load_never_duplicate_or_lose() {
    // No instance dies here, so any duplicate is a bug: the lease is long
    // enough that no single attempt outlasts it, however loaded the machine.
    let options = ClusterOptions {
        start: StartOrder::Together,
        lease_seconds: 300,
        ..ClusterOptions::default()
    };
    let cluster = Arc::new(ServerCluster::start(options).await.expect("two instances start"));
    assert_one_signing_key(&cluster).await;
    let load = MixedLoad::new(cluster.clone(), CLIENTS).expect("load clients");

    let report = load.run(Duration::ZERO, LOAD).await;
    eprintln!("{}", report.summary());
    assert_no_errors(&report);
    assert!(report.served_by.iter().all(|served| *served > 0), "{:?}", report.served_by);
    let (large, small) = load.uploads_by_place();
    eprintln!("{} users, {small} small and {large} large uploads", load.users());
    assert!(large > 0 && small > 0, "both content stores were used: {large} large, {small} small");
    assert!(report.retrievals_checked > 0, "recipients retrieved content");

    cluster.wait_until_outbox_drained(DRAIN).await.expect("the outbox drains");
    let unsent = cluster.psql("SELECT count(*) FROM outbox WHERE state <> 'sent'").await;
    assert_eq!(unsent.expect("psql"), "0", "every notification was sent");
    let tally = load.notification_tally().await;
    eprintln!(
        "notifications: {} expected, {} notified, {} duplicates, {} unexpected",
        tally.expected, tally.notified, tally.duplicates, tally.unexpected
    );
    assert!(tally.missing.is_empty(), "never notified: {:#?}", tally.missing);
    assert_eq!(tally.duplicates, 0, "notified more than once: {:#?}", tally.duplicated);
    assert_eq!(tally.unexpected, 0, "notifications of messages nobody uploaded");

    // Large content went to the shared directory, small content did not.
    assert_eq!(objects_in(cluster.storage_dir()), large, "one object per large message");
    // Slips before content: reading content is a retrieval too.
    let problems = load.check_delivery_slips(1).await;
    assert!(problems.is_empty(), "delivery slips disagree:\n{}", problems.join("\n"));
    let problems = load.check_content(0).await;
    assert!(problems.is_empty(), "content differs:\n{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_killed_mid_load_loses_nothing() {
    let options =
        ClusterOptions { start: StartOrder::OneAfterAnother, ..ClusterOptions::default() };
    let concurrency = options.outbox_concurrency as usize;
    let cluster = Arc::new(ServerCluster::start(options).await.expect("two instances start"));
    assert_one_signing_key(&cluster).await;
    let load = MixedLoad::new(cluster.clone(), CLIENTS).expect("load clients");

    let running = tokio::spawn({
        let load = load.clone();
        async move { load.run(Duration::ZERO, LOAD).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cluster.kill(0), "instance 0 was running");
    let report = running.await.expect("the load finishes");
    eprintln!("{}", report.summary());
    assert_no_errors(&report);
    assert!(report.served_by[0] > 0, "instance 0 served before it was killed");
    let (large, small) = load.uploads_by_place();
    eprintln!("{} users, {small} small and {large} large uploads", load.users());

    cluster.wait_until_outbox_drained(DRAIN).await.expect("the outbox drains on instance 1");
    let unsent = cluster.psql("SELECT count(*) FROM outbox WHERE state <> 'sent'").await;
    assert_eq!(unsent.expect("psql"), "0", "every notification was sent");
    let tally = load.notification_tally().await;
    let attempted_again = cluster.psql("SELECT count(*) FROM outbox WHERE attempts > 1").await;
    eprintln!(
        "notifications: {} expected, {} notified, {} duplicates (the killed instance's \
         in flight), {} unexpected; {} attempted more than once",
        tally.expected,
        tally.notified,
        tally.duplicates,
        tally.unexpected,
        attempted_again.expect("psql")
    );
    assert!(tally.missing.is_empty(), "never notified: {:#?}", tally.missing);
    assert!(
        tally.duplicates <= concurrency,
        "more duplicates than notifications the killed instance can have had in flight \
         ({concurrency}): {:#?}",
        tally.duplicated
    );
    assert_eq!(tally.unexpected, 0, "notifications of messages nobody uploaded");

    let problems = load.check_content(1).await;
    assert!(
        problems.is_empty(),
        "acknowledged uploads not retrievable from instance 1:\n{}",
        problems.join("\n")
    );
}

/// Every instance publishes the same signing keys, one of them active.
async fn assert_one_signing_key(cluster: &ServerCluster) {
    let first = cluster.signing_keys(0).await.expect("instance 0's keys");
    assert_eq!(first.iter().filter(|key| key.active).count(), 1, "{first:?}");
    for index in 1..cluster.len() {
        let keys = cluster.signing_keys(index).await.expect("the instance's keys");
        assert_eq!(keys, first, "instance {index} publishes other keys than instance 0");
    }
}

fn assert_no_errors(report: &LoadReport) {
    assert!(
        report.errors.is_empty(),
        "{} requests failed:\n{}",
        report.errors.len(),
        report.errors.join("\n")
    );
}

/// The messages in the filesystem object store (`<2 chars>/<id>.eml`).
fn objects_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .map(|path| {
            if path.is_dir() {
                objects_in(&path)
            } else {
                usize::from(path.extension().is_some_and(|extension| extension == "eml"))
            }
        })
        .sum()
}
