//! The harness's PostgreSQL: each test gets its own real server with an
//! empty database, started from a template cluster in about a tenth of a
//! second, and nothing of one test is seen by another.

use std::time::Instant;

use sealpost_harness::PostgresServer;

#[tokio::test]
async fn each_server_is_fresh_and_separate() {
    let started = Instant::now();
    let (first, second) = tokio::join!(PostgresServer::start(), PostgresServer::start());
    let (first, second) = (first.expect("first server"), second.expect("second server"));
    eprintln!("two servers ready in {:?}", started.elapsed());
    assert_ne!(first.address(), second.address());
    assert_eq!(first.psql("SELECT current_database()").await.expect("query"), "sealpost");
    first
        .psql("CREATE TABLE probe (id integer); INSERT INTO probe VALUES (1)")
        .await
        .expect("write");
    assert_eq!(first.psql("SELECT count(*) FROM probe").await.expect("read"), "1");
    let absent = second.psql("SELECT count(*) FROM probe").await;
    assert!(absent.is_err_and(|error| error.to_string().contains("does not exist")));
    let version = first.psql("SHOW server_version_num").await.expect("version");
    assert!(version.parse::<u32>().is_ok_and(|number| number >= 150_000), "{version}");
}
