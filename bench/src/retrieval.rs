//! Retrieval: the server handing a stored message's content to many clients
//! at once over TLS, beside nginx serving the very same bytes as static
//! files over TLS on the same machine; and the server's memory, idle and
//! under that load.

pub(crate) mod load;
mod nginx;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use rand::Rng;
use rand::distr::Alphanumeric;
use sealpost_harness::StackOptions;

use self::load::{Endpoint, LoadFigures, LoadPlan, median_figures};
use self::nginx::Nginx;
use crate::memory;
use crate::report::{Figure, Row, Target};
use crate::setup::Deployment;
use crate::{Context, Outcome};

/// Clients, each on its own connection, all asking at once.
const CLIENTS: usize = 64;
/// Unmeasured start of every load: connections open, caches warm.
const WARM_UP: Duration = Duration::from_secs(1);
/// The recipient the messages are stored for; the sender reads them.
const RECIPIENT: &str = "alice";

/// A message size the clients retrieve.
#[derive(Debug, Clone, Copy)]
struct Size {
    label: &'static str,
    bytes: usize,
    /// The file nginx serves it from.
    file: &'static str,
}

const SIZES: [Size; 2] = [
    Size { label: "5 KB", bytes: 5 * 1024, file: "5kb.eml" },
    Size { label: "1 MB", bytes: 1024 * 1024, file: "1mb.eml" },
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Peer {
    Server,
    Nginx,
}

pub async fn run(context: &Context) -> Result<Outcome> {
    let sizes = &context.sizes;
    // The sender's access token must outlast every round.
    let env = [("SEALPOST_ACCOUNTS__ACCESS_TOKEN_TTL_SECONDS", (24 * 3600).to_string())];
    let deployment =
        Deployment::start(&context.binaries, &[RECIPIENT], &StackOptions::default(), &env).await?;
    let pid = deployment.server.pid();
    let idle_rss = memory::rss_mib(pid)?;
    let token = deployment.sender.access_token.clone();
    let server_addr = socket_addr(&deployment.server.base_url)?;

    let files = tempfile::Builder::new().prefix("sealpost-bench-files-").tempdir()?;
    let recipient = format!("{RECIPIENT}@{}", deployment.stack.domain());
    let mut paths = Vec::new();
    for size in SIZES {
        let mime = message_of_size(size.label, size.bytes);
        let stored = deployment.store(&[recipient.as_str()], mime.clone()).await?;
        let path = format!("/api/v1/messages/{}/content", stored.message_id);
        let content = deployment.api.get(&path, Some(&token)).await?.expect_status(200)?.body;
        if content != mime {
            bail!(
                "the server returned {} bytes for the {} message it stored",
                content.len(),
                size.label
            );
        }
        std::fs::write(files.path().join(size.file), &content)?;
        paths.push(path);
    }
    let nginx = Nginx::start(files.path(), &format!("/{}", SIZES[0].file)).await?;

    let mut endpoints = Vec::new();
    for (size, path) in SIZES.iter().zip(&paths) {
        let server = Endpoint::new(server_addr, &deployment.server_cert, path, Some(&token))?;
        let peer = Endpoint::new(
            nginx.addr,
            nginx.cert_pem.as_bytes(),
            &format!("/{}", size.file),
            Some(&token),
        )?;
        let served = peer.fetch_once().await.with_context(|| nginx.logs())?;
        if served.len() != size.bytes {
            bail!("nginx served {} bytes of the {} file", served.len(), size.label);
        }
        endpoints.push((Arc::new(server), Arc::new(peer)));
    }

    let plan = LoadPlan {
        clients: CLIENTS,
        warm_up: WARM_UP,
        measure: Duration::from_secs(sizes.retrieval_seconds),
    };
    // Per size, per peer: one figure a round.
    let mut rounds: Vec<[Vec<LoadFigures>; 2]> = SIZES.iter().map(|_| Default::default()).collect();
    let mut failures = Vec::new();
    for round in 0..sizes.retrieval_rounds {
        for (index, size) in SIZES.iter().enumerate() {
            for peer in [Peer::Server, Peer::Nginx] {
                let endpoint = match peer {
                    Peer::Server => endpoints[index].0.clone(),
                    Peer::Nginx => endpoints[index].1.clone(),
                };
                let samples = load::run(endpoint, size.bytes as u64, plan).await;
                let name = match peer {
                    Peer::Server => "server",
                    Peer::Nginx => "nginx",
                };
                if samples.latencies_ms.is_empty() {
                    bail!(
                        "no {name} request for the {} message succeeded in round {}: {}",
                        size.label,
                        round + 1,
                        samples.first_error.as_deref().unwrap_or("no error recorded")
                    );
                }
                if samples.errors > 0 {
                    failures.push(format!(
                        "{} {name} requests for the {} message failed in round {} (first: {})",
                        samples.errors,
                        size.label,
                        round + 1,
                        samples.first_error.as_deref().unwrap_or("?")
                    ));
                }
                let figures = samples.figures();
                println!(
                    "    round {}, {}, {name}: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
                    round + 1,
                    size.label,
                    figures.requests_per_second,
                    figures.p50_ms,
                    figures.p99_ms
                );
                rounds[index][peer as usize].push(figures);
            }
        }
    }
    let peak_rss = memory::peak_rss_mib(pid)?;
    let workers = nginx.workers();
    drop(nginx);

    let mut rows = Vec::new();
    for (size, [server, peer]) in SIZES.iter().zip(&rounds) {
        rows.extend(size_rows(size.label, median_figures(server), median_figures(peer)));
    }
    rows.push(Row::alone("server idle (RSS)", Figure::mib(idle_rss), Target::Below(40.0)));
    rows.push(Row::alone(
        "server under the retrieval load (peak RSS)",
        Figure::mib(peak_rss),
        Target::None,
    ));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut notes = vec![
        format!(
            "{CLIENTS} concurrent clients, each on its own keep-alive HTTP/1.1 connection over TLS \
             (self-signed ECDSA P-256 certificates on both), asking for a message of {} or {} bytes \
             again and again; {} rounds of {} s per size and peer, interleaved, each after {} s of \
             warm-up; medians over rounds.",
            SIZES[0].bytes,
            SIZES[1].bytes,
            sizes.retrieval_rounds,
            sizes.retrieval_seconds,
            WARM_UP.as_secs()
        ),
        format!(
            "The load generator runs on the same {cores} cores as the server and nginx \
             ({workers} worker processes, sendfile on, access log off): every figure includes its cost."
        ),
        "The server checks the bearer token and the caller's right to the message and durably \
         records each retrieval before answering; nginx reads a file."
            .to_owned(),
        "Idle RSS is read after start and one registration, before any load.".to_owned(),
    ];
    notes.extend(failures);
    Ok(Outcome { rows, notes })
}

/// Requests/s, p99 and p50 of one size, the server's beside nginx's.
fn size_rows(label: &str, server: LoadFigures, peer: LoadFigures) -> Vec<Row> {
    vec![
        Row::against(
            format!("{label}: requests/s"),
            Figure::per_second(server.requests_per_second),
            "nginx",
            Figure::per_second(peer.requests_per_second),
            Target::RatioAtLeast(0.5),
        ),
        Row::against(
            format!("{label}: p99"),
            Figure::ms(server.p99_ms),
            "nginx",
            Figure::ms(peer.p99_ms),
            Target::RatioAtMost(2.0),
        ),
        Row::against(
            format!("{label}: p50"),
            Figure::ms(server.p50_ms),
            "nginx",
            Figure::ms(peer.p50_ms),
            Target::None,
        ),
    ]
}

/// `https://127.0.0.1:PORT` as an address.
fn socket_addr(base_url: &str) -> Result<SocketAddr> {
    base_url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("the server's address {base_url:?}"))
}

/// A plain-text message of exactly `bytes` bytes: headers, then lines of
/// random letters and digits (nothing a cache or compressor could shrink).
fn message_of_size(label: &str, bytes: usize) -> Vec<u8> {
    let mut message = format!(
        "From: Bench Sender <sender@example.test>\r\nTo: Alice <alice@example.test>\r\n\
         Subject: Retrieval, {label}\r\nMessage-ID: <retrieval-{bytes}@example.test>\r\n\
         Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    let mut rng = rand::rng();
    while message.len() < bytes {
        let line = (bytes - message.len()).min(78);
        // Each line ends in CRLF; a last stretch too short for one is padding.
        let letters = line.saturating_sub(2);
        message.extend((&mut rng).sample_iter(Alphanumeric).take(letters));
        message.extend_from_slice(&b"\r\n"[..line - letters]);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_exactly_the_size_asked_for() {
        for size in [300, 5 * 1024, 1024 * 1024, 1000] {
            let message = message_of_size("x", size);
            assert_eq!(message.len(), size);
            assert!(message.starts_with(b"From: "));
        }
    }

    #[test]
    fn each_size_gets_throughput_and_latency_rows_against_nginx() {
        let server = LoadFigures { requests_per_second: 4000.0, p50_ms: 10.0, p99_ms: 50.0 };
        let peer = LoadFigures { requests_per_second: 10000.0, p50_ms: 5.0, p99_ms: 20.0 };
        let rows = size_rows("5 KB", server, peer);
        let summary: Vec<_> =
            rows.iter().map(|row| (row.measurement.as_str(), row.met, row.ratio)).collect();
        assert_eq!(
            summary,
            [
                ("5 KB: requests/s", Some(false), Some(0.4)),
                ("5 KB: p99", Some(false), Some(2.5)),
                ("5 KB: p50", None, Some(2.0)),
            ]
        );
    }

    #[test]
    fn base_urls_become_addresses() {
        assert_eq!(
            socket_addr("https://127.0.0.1:4443").expect("address"),
            SocketAddr::from(([127, 0, 0, 1], 4443))
        );
        assert!(socket_addr("https://localhost:4443").is_err());
    }
}
