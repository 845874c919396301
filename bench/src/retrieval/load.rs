//! The load generator: concurrent clients, each on its own keep-alive
//! HTTP/1.1 connection over TLS, each asking for one resource again and
//! again, timing every answer.
//!
//! It speaks just enough HTTP/1.1 for this (one request in flight per
//! connection, answers framed by `Content-Length`) so the clients, which
//! share the machine with the servers measured, spend as little CPU as they
//! can and the same on either server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::stats::{median, percentile};

/// Longest any one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a response's head may be.
const MAX_HEAD: usize = 16 * 1024;

/// Where the clients connect and what they ask for.
pub struct Endpoint {
    addr: SocketAddr,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// The complete request, sent as is each time.
    request: Vec<u8>,
}

impl Endpoint {
    /// `GET path` on `addr` over TLS trusting only `trusted_pem`, with a
    /// bearer token when given.
    pub fn new(
        addr: SocketAddr,
        trusted_pem: &[u8],
        path: &str,
        bearer: Option<&str>,
    ) -> Result<Self> {
        let mut tls = sealpost_agent::tls::client_config(Some(trusted_pem))
            .context("trusting the certificate")?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let authorization =
            bearer.map_or_else(String::new, |token| format!("Authorization: Bearer {token}\r\n"));
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n{authorization}\r\n")
                .into_bytes();
        Ok(Self {
            addr,
            connector: TlsConnector::from(Arc::new(tls)),
            server_name: ServerName::IpAddress(addr.ip().into()),
            request,
        })
    }

    pub async fn connect(&self) -> Result<Connection> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let stream = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .with_context(|| format!("TLS handshake with {}", self.addr))?;
        Ok(Connection { stream, buffer: vec![0; 64 * 1024] })
    }

    /// One request on a new connection; the body.
    pub async fn fetch_once(&self) -> Result<Vec<u8>> {
        let mut connection = self.connect().await?;
        let mut body = Vec::new();
        connection.get(&self.request, Some(&mut body)).await?;
        Ok(body)
    }
}

pub struct Connection {
    stream: TlsStream<TcpStream>,
    buffer: Vec<u8>,
}

impl Connection {
    /// Sends `request` and reads its answer, which must be a 200 with a
    /// `Content-Length`; keeps the body in `keep` when given. Returns the
    /// body's length.
    async fn get(&mut self, request: &[u8], mut keep: Option<&mut Vec<u8>>) -> Result<u64> {
        self.stream.write_all(request).await?;
        self.stream.flush().await?;
        let mut filled = 0;
        let (head, head_end) = loop {
            if filled == self.buffer.len() {
                bail!("a response head longer than {} bytes", self.buffer.len());
            }
            let read = self.stream.read(&mut self.buffer[filled..]).await?;
            if read == 0 {
                bail!("the server closed the connection before answering");
            }
            let searched_from = filled.saturating_sub(3);
            filled += read;
            if let Some(at) = find(&self.buffer[searched_from..filled], b"\r\n\r\n") {
                let end = searched_from + at + 4;
                break (parse_head(&self.buffer[..end])?, end);
            }
            if filled >= MAX_HEAD {
                bail!("no end of the response head within {MAX_HEAD} bytes");
            }
        };
        if head.status != 200 {
            bail!("the server answered {}", head.status);
        }
        let length = head.content_length.context("a response without Content-Length")?;
        let mut received = (filled - head_end) as u64;
        if let Some(keep) = keep.as_deref_mut() {
            keep.extend_from_slice(&self.buffer[head_end..filled]);
        }
        while received < length {
            let read = self.stream.read(&mut self.buffer).await?;
            if read == 0 {
                bail!("the connection closed after {received} of {length} body bytes");
            }
            received += read as u64;
            if let Some(keep) = keep.as_deref_mut() {
                keep.extend_from_slice(&self.buffer[..read]);
            }
        }
        if received != length {
            bail!("{received} bytes arrived for a body of {length}");
        }
        if head.close {
            bail!("the server closes the connection after each answer");
        }
        Ok(length)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// What the clients need from a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    /// `Connection: close`: the server will not take another request.
    close: bool,
}

fn parse_head(head: &[u8]) -> Result<Head> {
    let text = std::str::from_utf8(head).context("a response head that is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP/1.x status line: {status_line:?}"))?;
    let mut parsed = Head { status, content_length: None, close: false };
    for line in lines.filter(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            bail!("a malformed header line: {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            parsed.content_length =
                Some(value.parse().with_context(|| format!("Content-Length {value:?}"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a response with Transfer-Encoding {value}: only Content-Length is read");
        } else if name.eq_ignore_ascii_case("connection") {
            parsed.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(parsed)
}

/// How a load runs.
#[derive(Debug, Clone, Copy)]
pub struct LoadPlan {
    pub clients: usize,
    /// Requests answered in this first stretch are not counted: connections
    /// open and caches warm.
    pub warm_up: Duration,
    pub measure: Duration,
}

/// What one load observed over its measured stretch.
#[derive(Debug, Clone, Default)]
pub struct LoadSamples {
    /// One per request answered within the stretch, in milliseconds.
    pub latencies_ms: Vec<f64>,
    pub elapsed: Duration,
    /// Requests that failed (reconnecting after each), over the whole run.
    pub errors: usize,
    pub first_error: Option<String>,
}

/// A load's throughput and latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadFigures {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl LoadSamples {
    pub fn figures(&self) -> LoadFigures {
        let seconds = self.elapsed.as_secs_f64();
        LoadFigures {
            requests_per_second: if seconds > 0.0 {
                self.latencies_ms.len() as f64 / seconds
            } else {
                0.0
            },
            p50_ms: percentile(&self.latencies_ms, 50.0),
            p99_ms: percentile(&self.latencies_ms, 99.0),
        }
    }
}

/// Each figure's median over rounds, taken separately.
pub fn median_figures(rounds: &[LoadFigures]) -> LoadFigures {
    let of =
        |figure: fn(&LoadFigures) -> f64| median(&rounds.iter().map(figure).collect::<Vec<_>>());
    LoadFigures {
        requests_per_second: of(|f| f.requests_per_second),
        p50_ms: of(|f| f.p50_ms),
        p99_ms: of(|f| f.p99_ms),
    }
}

/// Runs `plan.clients` clients against `endpoint`, each answer's body having
/// to be `expected_length` bytes long. A request counts when its answer
/// completes within the measured stretch, wherever it started: the count
/// over the stretch is the steady rate, whatever the latency.
pub async fn run(endpoint: Arc<Endpoint>, expected_length: u64, plan: LoadPlan) -> LoadSamples {
    let measure_from = Instant::now() + plan.warm_up;
    let end = measure_from + plan.measure;
    let clients: Vec<_> = (0..plan.clients)
        .map(|_| tokio::spawn(client(endpoint.clone(), expected_length, measure_from, end)))
        .collect();
    let mut samples = LoadSamples { elapsed: plan.measure, ..LoadSamples::default() };
    for client in clients {
        match client.await {
            Ok(outcome) => {
                samples.latencies_ms.extend(outcome.latencies_ms);
                samples.errors += outcome.errors;
                samples.first_error = samples.first_error.take().or(outcome.first_error);
            }
            Err(error) => {
                samples.errors += 1;
                samples.first_error.get_or_insert_with(|| format!("a client panicked: {error}"));
            }
        }
    }
    samples
}

async fn client(
    endpoint: Arc<Endpoint>,
    expected_length: u64,
    measure_from: Instant,
    end: Instant,
) -> LoadSamples {
    let mut samples = LoadSamples::default();
    let mut connection = None;
    let fail = |samples: &mut LoadSamples, error: anyhow::Error| {
        samples.errors += 1;
        samples.first_error.get_or_insert_with(|| format!("{error:#}"));
    };
    while Instant::now() < end {
        let mut open = match connection.take() {
            Some(open) => open,
            None => match endpoint.connect().await {
                Ok(open) => open,
                Err(error) => {
                    fail(&mut samples, error);
                    // Not a tight loop against a server that refuses.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, open.get(&endpoint.request, None)).await;
        let finished = Instant::now();
        match answer {
            Ok(Ok(length)) if length == expected_length => {
                if finished >= measure_from && finished <= end {
                    samples.latencies_ms.push((finished - started).as_secs_f64() * 1000.0);
                }
                connection = Some(open);
            }
            Ok(Ok(length)) => fail(
                &mut samples,
                anyhow::anyhow!("a body of {length} bytes instead of {expected_length}"),
            ),
            Ok(Err(error)) => fail(&mut samples, error),
            Err(_) => fail(&mut samples, anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")),
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_status_length_and_whether_the_connection_closes() {
        let head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 5120\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(
            parse_head(head).expect("head"),
            Head { status: 200, content_length: Some(5120), close: false }
        );
        let closing = b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n";
        assert_eq!(
            parse_head(closing).expect("head"),
            Head { status: 404, content_length: None, close: true }
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n").is_err());
    }

    #[test]
    fn figures_count_answers_over_the_measured_stretch() {
        let samples = LoadSamples {
            latencies_ms: (1..=200).map(f64::from).collect(),
            elapsed: Duration::from_secs(4),
            errors: 0,
            first_error: None,
        };
        assert_eq!(
            samples.figures(),
            LoadFigures { requests_per_second: 50.0, p50_ms: 100.0, p99_ms: 198.0 }
        );
        let nothing = LoadSamples::default().figures();
        assert_eq!(nothing, LoadFigures { requests_per_second: 0.0, p50_ms: 0.0, p99_ms: 0.0 });
    }

    #[test]
    fn medians_over_rounds_are_taken_per_figure() {
        let rounds = [
            LoadFigures { requests_per_second: 900.0, p50_ms: 5.0, p99_ms: 40.0 },
            LoadFigures { requests_per_second: 1000.0, p50_ms: 7.0, p99_ms: 20.0 },
            LoadFigures { requests_per_second: 1100.0, p50_ms: 6.0, p99_ms: 30.0 },
        ];
        assert_eq!(
            median_figures(&rounds),
            LoadFigures { requests_per_second: 1000.0, p50_ms: 6.0, p99_ms: 30.0 }
        );
    }
}
