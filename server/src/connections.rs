//! What one HTTPS connection may hold: a place among
//! `server.max_connections` from accept to close (TLS handshake included),
//! and the open files the process needs for all of them.
//!
//! Slow clients are cut off by timeouts (the TLS handshake, the request
//! headers, pauses in a body); the cap bounds what the server spends on
//! connections whatever their clients do. A client over the cap is told
//! so with a 503 when a few refusals are under way at most, else its
//! connection is closed at once: refusing must stay cheaper than serving.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::{Accept, NoDelayAcceptor};
use axum_server::tls_rustls::RustlsAcceptor;
use futures_util::future::BoxFuture;
use sealpost_proto::api::{ErrorBody, ErrorCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;

/// How long the TLS handshake of a new connection may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals answered with a 503 at once; more are closed without a word.
const POLITE_REFUSALS: usize = 64;
/// How long a refused client has to send its request before the answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a refused client is asked to wait.
const REFUSAL_RETRY_AFTER_SECONDS: u64 = 5;

/// The TLS acceptor with the connection cap in front of it.
#[derive(Clone)]
pub struct ConnectionLimit {
    tls: RustlsAcceptor<NoDelayAcceptor>,
    permits: Arc<Semaphore>,
    polite: Arc<Semaphore>,
    max: usize,
    refused: Arc<AtomicU64>,
}

impl ConnectionLimit {
    pub fn new(tls: RustlsAcceptor<NoDelayAcceptor>, max: usize) -> Self {
        Self {
            tls,
            permits: Arc::new(Semaphore::new(max)),
            polite: Arc::new(Semaphore::new(POLITE_REFUSALS)),
            max,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for ConnectionLimit {
    type Stream = Counted<TlsStream<TcpStream>>;
    type Service = <RustlsAcceptor<NoDelayAcceptor> as Accept<TcpStream, S>>::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let permit = self.permits.clone().try_acquire_owned();
        let handshake = self.tls.accept(stream, service);
        let Ok(permit) = permit else {
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            // One line per hundred refusals: a flood must not flood the log too.
            if refused % 100 == 1 {
                tracing::warn!(
                    max_connections = self.max,
                    refused,
                    "HTTPS connections refused: server.max_connections are open; raise it if \
                     these are real clients, or find the clients holding connections"
                );
            }
            let polite = self.polite.clone().try_acquire_owned();
            return Box::pin(async move {
                if let Ok(_polite) = polite {
                    let _ = tokio::time::timeout(REFUSAL_TIMEOUT + TLS_HANDSHAKE_TIMEOUT, async {
                        let (stream, _) = handshake.await?;
                        refuse(stream).await
                    })
                    .await;
                }
                Err(io::Error::other("over server.max_connections"))
            });
        };
        Box::pin(async move {
            let (stream, service) = handshake.await?;
            Ok((Counted { stream, _permit: permit }, service))
        })
    }
}

/// Reads what the client sends of its request, then answers 503 and closes:
/// a client that gets its answer before it has written its request may see
/// only a reset connection.
async fn refuse(mut stream: TlsStream<TcpStream>) -> io::Result<()> {
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        // An HTTP/2 client would not understand an HTTP/1.1 answer.
        return stream.shutdown().await;
    }
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        Ok::<_, io::Error>(())
    })
    .await;
    stream.write_all(&busy_response()).await?;
    stream.shutdown().await
}

fn busy_response() -> Vec<u8> {
    let body = serde_json::to_string(&ErrorBody {
        code: ErrorCode::Unavailable,
        message: format!(
            "The server has as many connections open as it serves at once. \
             Try again in {REFUSAL_RETRY_AFTER_SECONDS} seconds."
        ),
    })
    .unwrap_or_default();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {REFUSAL_RETRY_AFTER_SECONDS}\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A connection holding its place among `server.max_connections` until it
/// is dropped.
pub struct Counted<S> {
    stream: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Connections the kernel queues for the server to accept. The standard
/// library's 128 drops a burst's connection attempts beyond it, and each
/// dropped client waits a second or more before it tries again.
const LISTEN_BACKLOG: u32 = 4096;

/// The HTTPS socket, bound to `address` (port 0 picks one).
pub fn listen(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As the standard library does: a restarted server binds at once.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

/// Raises the soft limit on open files to the hard limit: each connection
/// is one, and the usual soft limit (1024) is below what
/// `server.max_connections` allows. Returns a warning for the operator when
/// even the hard limit is below `needed`.
pub fn raise_open_file_limit(needed: u64) -> Option<String> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut raised = limit;
    raised.current = limit.maximum;
    let current = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => limit.maximum,
        Err(_) => limit.current,
    };
    match current {
        Some(current) if current < needed => Some(format!(
            "the open-file limit is {current}, below the {needed} the configured connections \
             need (server.max_connections, inbound.max_connections, database.max_connections \
             and files): connections over it fail; raise the limit (LimitNOFILE= in the \
             systemd unit, ulimit -n) or lower server.max_connections"
        )),
        _ => None,
    }
}
