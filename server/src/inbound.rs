//! The server's own SMTP listener, for the mail that comes back: bounces of
//! the notifications it sent and, with reply routing, answers to masked
//! addresses. In production Postfix sits in front and relays the reply
//! domain here; the listener still defends itself: STARTTLS, a size limit
//! (announced with SIZE), limits on connections, recipients and time, and
//! every recipient checked at RCPT, so mail to an unknown address is refused
//! there instead of bounced later.
//!
//! The protocol is parsed by `smtp-proto`; what happens to a message is the
//! [`InboundHandler`]'s business.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use smtp_proto::request::receiver::{DataReceiver, RequestReceiver};
use smtp_proto::{Error as ProtocolError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::rate_limit::{LimitError, RetryAfter};
use crate::state::AppState;

/// What the listener allows.
#[derive(Debug, Clone)]
pub struct InboundLimits {
    /// The name in the greeting and the EHLO answer.
    pub hostname: String,
    /// Largest message accepted, in bytes (announced with SIZE).
    pub max_size: usize,
    pub max_recipients: usize,
    /// Connections served at once; more are told to come back later.
    pub max_connections: usize,
    /// How long the client may take to send one command or the message.
    pub command_timeout: Duration,
}

/// A message as it was handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMail {
    pub peer: SocketAddr,
    /// The EHLO/HELO name.
    pub helo: String,
    /// The envelope sender; empty for the null sender (bounces).
    pub mail_from: String,
    /// The accepted recipients, lowercase.
    pub recipients: Vec<String>,
    pub data: Vec<u8>,
    /// Whether it came over TLS.
    pub tls: bool,
}

/// The answer to a RCPT or to a whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// 4xx: try again later.
    Defer(String),
    /// 5xx: never.
    Reject(String),
}

/// Decides who may send and receive mail here, and takes the messages.
#[async_trait]
pub trait InboundHandler: Send + Sync + 'static {
    /// The envelope sender at MAIL (empty for the null sender).
    async fn sender(&self, _address: &str) -> Verdict {
        Verdict::Accept
    }
    async fn recipient(&self, address: &str) -> Verdict;
    async fn deliver(&self, mail: InboundMail) -> Verdict;
}

/// What the server takes in: bounces to the VERP addresses of its
/// notifications, recorded on the delivery slip, and mail to the masked
/// addresses it issued, routed by [`crate::routing`]. Every other
/// recipient, and a masked address that is unknown or disabled, is
/// refused at RCPT.
pub struct ServerMail(pub AppState);

#[async_trait]
impl InboundHandler for ServerMail {
    async fn sender(&self, address: &str) -> Verdict {
        if address.is_empty() {
            return Verdict::Accept;
        }
        let limit = &self.0.limits.inbound_per_sender;
        match limit.check(&*self.0.store, address, self.0.clock.now()).await {
            Ok(()) => Verdict::Accept,
            Err(error) => self.limited(error, &format!("Too much mail from <{address}>")),
        }
    }

    async fn recipient(&self, address: &str) -> Verdict {
        let known = self.known_recipient(address).await;
        if known != Verdict::Accept {
            return known;
        }
        let limit = &self.0.limits.inbound_per_address;
        match limit.check(&*self.0.store, address, self.0.clock.now()).await {
            Ok(()) => Verdict::Accept,
            Err(error) => self.limited(error, &format!("<{address}> is receiving too much mail")),
        }
    }

    async fn deliver(&self, mail: InboundMail) -> Verdict {
        // Counted when a message is taken, so refused attempts do not use
        // up the hour; checked again here, as another session may have
        // filled the window since MAIL and RCPT.
        let (store, now) = (&*self.0.store, self.0.clock.now());
        if !mail.mail_from.is_empty()
            && let Err(error) =
                self.0.limits.inbound_per_sender.hit(store, &mail.mail_from, now).await
        {
            return self.limited(error, &format!("Too much mail from <{}>", mail.mail_from));
        }
        for recipient in &mail.recipients {
            if let Err(error) = self.0.limits.inbound_per_address.hit(store, recipient, now).await {
                return self.limited(error, &format!("<{recipient}> is receiving too much mail"));
            }
        }
        for recipient in &mail.recipients {
            let outcome = if self.0.outbox.is_bounce_address(recipient) {
                self.0.outbox.record_bounce(recipient, &mail.data).await.map_err(Into::into).map(|recorded| {
                    tracing::info!(peer = %mail.peer, %recipient, recorded, "report received for a notification");
                })
            } else {
                self.route(recipient, &mail).await
            };
            if let Err(error) = outcome {
                tracing::error!(%error, "could not take a message; the sender is asked to retry");
                return Verdict::Defer("Temporary failure, try again later".into());
            }
        }
        Verdict::Accept
    }
}

impl ServerMail {
    /// A rate limit's refusal as a deferral that says when to come back.
    fn limited(&self, error: LimitError, what: &str) -> Verdict {
        match error {
            LimitError::Refused(RetryAfter(wait)) => {
                let seconds = wait.as_secs().max(1);
                tracing::info!(%what, seconds, "inbound mail deferred by a rate limit");
                Verdict::Defer(format!("{what}; try again in {seconds} seconds"))
            }
            LimitError::Store(error) => {
                tracing::error!(%error, "could not check an inbound rate limit");
                Verdict::Defer("Temporary failure, try again later".into())
            }
        }
    }

    /// Whether `address` is one the server takes mail for.
    async fn known_recipient(&self, address: &str) -> Verdict {
        if self.0.outbox.is_bounce_address(address) {
            return Verdict::Accept;
        }
        if crate::masking::is_masked(&self.0, address) {
            match self.0.store.reply_address(address).await {
                Ok(Some(issued)) if issued.disabled_at.is_none() => return Verdict::Accept,
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "could not look up a masked address");
                    return Verdict::Defer("Temporary failure, try again later".into());
                }
            }
        }
        Verdict::Reject(format!("<{address}>: no such address here"))
    }

    async fn route(
        &self,
        recipient: &str,
        mail: &InboundMail,
    ) -> Result<(), crate::routing::RouteError> {
        // Checked at RCPT; an address disabled since then is dropped by the router.
        if let Some(issued) = self.0.store.reply_address(recipient).await? {
            crate::routing::route(&self.0, &issued, mail).await?;
        }
        Ok(())
    }
}

/// The bound listener.
pub struct InboundListener {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Arc<InboundLimits>,
    handler: Arc<dyn InboundHandler>,
}

impl InboundListener {
    pub async fn bind(
        address: SocketAddr,
        tls: Option<TlsAcceptor>,
        limits: InboundLimits,
        handler: Arc<dyn InboundHandler>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(address).await?,
            tls,
            limits: Arc::new(limits),
            handler,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`; sessions under way finish on their own.
    pub async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "inbound SMTP accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let limits = self.limits.clone();
                    let handler = self.handler.clone();
                    let tls = self.tls.clone();
                    tokio::spawn(async move {
                        serve_session(stream, peer, limits, handler, tls).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let _ = stream
                            .write_all(b"421 4.7.0 Too many connections; try again later\r\n")
                            .await;
                    });
                }
            }
        }
    }
}

/// Serves one client's SMTP session on `stream` (a TCP connection, for the
/// listener) until the client quits, closes or times out.
pub async fn serve_session<S>(
    stream: S,
    peer: SocketAddr,
    limits: Arc<InboundLimits>,
    handler: Arc<dyn InboundHandler>,
    tls: Option<TlsAcceptor>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    Session { peer, limits, handler, tls }.serve(stream).await;
}

/// The client's connection: plain until STARTTLS.
enum Connection<S> {
    Plain(S),
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Connection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Connection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

struct Session {
    peer: SocketAddr,
    limits: Arc<InboundLimits>,
    handler: Arc<dyn InboundHandler>,
    tls: Option<TlsAcceptor>,
}

/// One transaction's envelope.
#[derive(Default)]
struct Envelope {
    helo: Option<String>,
    mail_from: Option<String>,
    recipients: Vec<String>,
}

/// How a session goes on after a command.
enum Next {
    Continue,
    Data,
    StartTls,
    Close,
}

/// Why the command loop ended.
enum Ended {
    Closed,
    StartTls,
}

impl Session {
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(self, stream: S) {
        let greeting = format!("220 {} ESMTP Sealpost\r\n", self.limits.hostname);
        let mut connection = Connection::Plain(stream);
        if connection.write_all(greeting.as_bytes()).await.is_err() {
            return;
        }
        loop {
            let tls = matches!(connection, Connection::Tls(_));
            match self.commands(&mut connection, tls).await {
                Ok(Ended::StartTls) => {
                    // The plain stream is replaced and everything starts over.
                    let (Connection::Plain(tcp), Some(acceptor)) = (connection, &self.tls) else {
                        return;
                    };
                    match acceptor.accept(tcp).await {
                        Ok(secured) => connection = Connection::Tls(Box::new(secured)),
                        Err(error) => {
                            tracing::debug!(peer = %self.peer, %error, "inbound STARTTLS failed");
                            return;
                        }
                    }
                }
                Ok(Ended::Closed) | Err(_) => return,
            }
        }
    }

    /// Runs commands until the client quits or asks for STARTTLS.
    async fn commands<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut Connection<S>,
        tls: bool,
    ) -> std::io::Result<Ended> {
        let mut envelope = Envelope::default();
        let mut receiver = RequestReceiver::default();
        let mut buffer = vec![0u8; 8192];
        // Bytes that came after the end of a message, already read.
        let mut pending: Vec<u8> = Vec::new();
        // A whole command must arrive in time, not each piece of it: a
        // client sending a byte now and then would otherwise hold its
        // connection forever.
        let mut deadline = Instant::now() + self.limits.command_timeout;
        loop {
            let chunk: Vec<u8> = if pending.is_empty() {
                let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await;
                match read {
                    Ok(Ok(0)) => return Ok(Ended::Closed),
                    Err(_) => {
                        let _ = stream.write_all(b"421 4.4.2 Timeout, closing\r\n").await;
                        return Ok(Ended::Closed);
                    }
                    Ok(Ok(read)) => buffer[..read].to_vec(),
                    Ok(Err(error)) => return Err(error),
                }
            } else {
                std::mem::take(&mut pending)
            };
            let mut bytes = chunk.iter();
            let mut replies = Vec::new();
            loop {
                match receiver.ingest(&mut bytes, &chunk) {
                    Ok(request) => {
                        deadline = Instant::now() + self.limits.command_timeout;
                        let (reply, next) = self.command(request, &mut envelope, tls).await;
                        replies.extend_from_slice(reply.as_bytes());
                        match next {
                            Next::Continue => {}
                            Next::Close => {
                                stream.write_all(&replies).await?;
                                return Ok(Ended::Closed);
                            }
                            Next::StartTls => {
                                stream.write_all(&replies).await?;
                                return Ok(Ended::StartTls);
                            }
                            Next::Data => {
                                stream.write_all(&replies).await?;
                                replies.clear();
                                let (reply, rest) =
                                    self.data(stream, bytes.as_slice(), &mut envelope, tls).await?;
                                stream.write_all(reply.as_bytes()).await?;
                                pending = rest;
                                receiver = RequestReceiver::default();
                                deadline = Instant::now() + self.limits.command_timeout;
                                break;
                            }
                        }
                    }
                    Err(ProtocolError::NeedsMoreData { .. }) => break,
                    Err(ProtocolError::ResponseTooLong) => {
                        replies.extend_from_slice(b"500 5.5.2 Line too long\r\n");
                        receiver = RequestReceiver::default();
                        break;
                    }
                    Err(error) => replies.extend_from_slice(protocol_error(&error).as_bytes()),
                }
            }
            if !replies.is_empty() {
                stream.write_all(&replies).await?;
            }
        }
    }

    async fn command(
        &self,
        request: Request<String>,
        envelope: &mut Envelope,
        tls: bool,
    ) -> (String, Next) {
        let limits = &self.limits;
        match request {
            Request::Ehlo { host } => {
                *envelope = Envelope { helo: Some(host), ..Envelope::default() };
                let mut reply = format!("250-{}\r\n", limits.hostname);
                reply.push_str(&format!("250-SIZE {}\r\n", limits.max_size));
                reply.push_str("250-8BITMIME\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n");
                if !tls && self.tls.is_some() {
                    reply.push_str("250-STARTTLS\r\n");
                }
                reply.push_str("250 SMTPUTF8\r\n");
                (reply, Next::Continue)
            }
            Request::Helo { host } => {
                *envelope = Envelope { helo: Some(host), ..Envelope::default() };
                (format!("250 {}\r\n", limits.hostname), Next::Continue)
            }
            Request::StartTls if tls || self.tls.is_none() => {
                ("502 5.5.1 STARTTLS is not offered here\r\n".into(), Next::Continue)
            }
            Request::StartTls => ("220 2.0.0 Ready to start TLS\r\n".into(), Next::StartTls),
            Request::Mail { from } => {
                if envelope.helo.is_none() {
                    return ("503 5.5.1 Say EHLO first\r\n".into(), Next::Continue);
                }
                if envelope.mail_from.is_some() {
                    return ("503 5.5.1 Already have a sender\r\n".into(), Next::Continue);
                }
                if from.size > limits.max_size {
                    return (
                        format!(
                            "552 5.3.4 Messages here are at most {} bytes\r\n",
                            limits.max_size
                        ),
                        Next::Continue,
                    );
                }
                let address = from.address.to_lowercase();
                match self.handler.sender(&address).await {
                    Verdict::Accept => {
                        envelope.mail_from = Some(address);
                        ("250 2.1.0 Ok\r\n".into(), Next::Continue)
                    }
                    Verdict::Defer(reason) => (format!("451 4.7.1 {reason}\r\n"), Next::Continue),
                    Verdict::Reject(reason) => (format!("550 5.7.1 {reason}\r\n"), Next::Continue),
                }
            }
            Request::Rcpt { to } => {
                if envelope.mail_from.is_none() {
                    return ("503 5.5.1 Need MAIL first\r\n".into(), Next::Continue);
                }
                if envelope.recipients.len() >= limits.max_recipients {
                    return ("452 4.5.3 Too many recipients\r\n".into(), Next::Continue);
                }
                let address = to.address.to_lowercase();
                match self.handler.recipient(&address).await {
                    Verdict::Accept => {
                        if !envelope.recipients.contains(&address) {
                            envelope.recipients.push(address);
                        }
                        ("250 2.1.5 Ok\r\n".into(), Next::Continue)
                    }
                    Verdict::Defer(reason) => (format!("450 4.2.0 {reason}\r\n"), Next::Continue),
                    Verdict::Reject(reason) => (format!("550 5.1.1 {reason}\r\n"), Next::Continue),
                }
            }
            Request::Data => {
                if envelope.recipients.is_empty() {
                    return ("554 5.5.1 No valid recipients\r\n".into(), Next::Continue);
                }
                ("354 End data with <CR><LF>.<CR><LF>\r\n".into(), Next::Data)
            }
            Request::Bdat { .. } => ("502 5.5.1 Use DATA\r\n".into(), Next::Continue),
            Request::Rset => {
                *envelope = Envelope { helo: envelope.helo.take(), ..Envelope::default() };
                ("250 2.0.0 Ok\r\n".into(), Next::Continue)
            }
            Request::Noop { .. } => ("250 2.0.0 Ok\r\n".into(), Next::Continue),
            Request::Vrfy { .. } => ("252 2.5.2 Cannot verify\r\n".into(), Next::Continue),
            Request::Quit => ("221 2.0.0 Bye\r\n".into(), Next::Close),
            _ => ("502 5.5.1 Not implemented\r\n".into(), Next::Continue),
        }
    }

    /// Reads the message after 354 (`already` holds what came with the
    /// DATA command), hands it over and returns the final answer and what
    /// the client sent after the message.
    async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut Connection<S>,
        already: &[u8],
        envelope: &mut Envelope,
        tls: bool,
    ) -> std::io::Result<(String, Vec<u8>)> {
        let mut receiver = DataReceiver::new();
        let mut message = Vec::new();
        let mut too_large = false;
        let mut iter = already.iter();
        let mut done = receiver.ingest(&mut iter, &mut message);
        let mut rest = if done { iter.as_slice().to_vec() } else { Vec::new() };
        too_large |= discard_if_over(&mut message, self.limits.max_size);
        let mut buffer = vec![0u8; 65536];
        let deadline = Instant::now() + self.limits.command_timeout;
        while !done {
            let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let mut iter = buffer[..read].iter();
            done = receiver.ingest(&mut iter, &mut message);
            if done {
                rest = iter.as_slice().to_vec();
            }
            too_large |= discard_if_over(&mut message, self.limits.max_size);
        }
        // The line break before the final dot belongs to the message.
        if !too_large && !message.is_empty() && !message.ends_with(b"\r\n") {
            message.extend_from_slice(b"\r\n");
        }
        let taken = std::mem::take(envelope);
        envelope.helo.clone_from(&taken.helo);
        if too_large {
            let reply =
                format!("552 5.3.4 Messages here are at most {} bytes\r\n", self.limits.max_size);
            return Ok((reply, rest));
        }
        let mail = InboundMail {
            peer: self.peer,
            helo: taken.helo.unwrap_or_default(),
            mail_from: taken.mail_from.unwrap_or_default(),
            recipients: taken.recipients,
            data: message,
            tls,
        };
        let reply = match self.handler.deliver(mail).await {
            Verdict::Accept => "250 2.0.0 Ok: queued\r\n".into(),
            Verdict::Defer(reason) => format!("451 4.3.0 {reason}\r\n"),
            Verdict::Reject(reason) => format!("554 5.7.1 {reason}\r\n"),
        };
        Ok((reply, rest))
    }
}

/// A message over `max` is read to its end, keeping nothing, then refused:
/// all but its last three bytes go (the receiver looks back at them to find
/// the final dot).
fn discard_if_over(message: &mut Vec<u8>, max: usize) -> bool {
    if message.len() <= max {
        return false;
    }
    let keep = message.len().min(3);
    message.drain(..message.len() - keep);
    true
}

fn protocol_error(error: &ProtocolError) -> String {
    match error {
        ProtocolError::UnknownCommand => "500 5.5.1 Unknown command\r\n".into(),
        ProtocolError::InvalidSenderAddress => "501 5.1.7 Bad sender address\r\n".into(),
        ProtocolError::InvalidRecipientAddress => "501 5.1.3 Bad recipient address\r\n".into(),
        ProtocolError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}\r\n"),
        ProtocolError::InvalidParameter { param } => {
            format!("501 5.5.4 Invalid parameter {param}\r\n")
        }
        ProtocolError::UnsupportedParameter { param } => {
            format!("504 5.5.4 Unsupported parameter {param}\r\n")
        }
        _ => "500 5.5.2 Syntax error\r\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sealpost_relay::{Relay, RelayConfig, Security, SendError, TrustedRoots};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpStream;

    use super::*;
    use crate::settings::TlsSettings;

    /// Takes mail for `reply+*@replies.example` and keeps it.
    #[derive(Default)]
    struct Keeper {
        mails: Mutex<Vec<InboundMail>>,
    }

    #[async_trait]
    impl InboundHandler for Keeper {
        async fn recipient(&self, address: &str) -> Verdict {
            if address.starts_with("reply+") && address.ends_with("@replies.example") {
                Verdict::Accept
            } else {
                Verdict::Reject(format!("{address} is not a reply address here"))
            }
        }

        async fn deliver(&self, mail: InboundMail) -> Verdict {
            self.mails.lock().expect("lock").push(mail);
            Verdict::Accept
        }
    }

    fn limits(max_connections: usize) -> InboundLimits {
        InboundLimits {
            hostname: "replies.example".into(),
            max_size: 4096,
            max_recipients: 2,
            max_connections,
            command_timeout: Duration::from_secs(5),
        }
    }

    async fn start(
        tls: Option<TlsAcceptor>,
        max_connections: usize,
    ) -> (SocketAddr, Arc<Keeper>, CancellationToken) {
        let keeper = Arc::new(Keeper::default());
        let listener = InboundListener::bind(
            "127.0.0.1:0".parse().expect("address"),
            tls,
            limits(max_connections),
            keeper.clone(),
        )
        .await
        .expect("bind");
        let address = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        tokio::spawn(listener.run(stop.clone()));
        (address, keeper, stop)
    }

    /// Writes `lines` in one go (pipelined) and reads `answers` reply lines
    /// (continuation lines of multi-line replies included).
    async fn converse(address: SocketAddr, script: &str, answers: usize) -> Vec<String> {
        let stream = TcpStream::connect(address).await.expect("connect");
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let mut lines = Vec::new();
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("greeting");
        writer.write_all(script.as_bytes()).await.expect("write");
        while lines.len() < answers {
            line.clear();
            if reader.read_line(&mut line).await.expect("read") == 0 {
                break;
            }
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            lines.push(line.trim_end().to_owned());
        }
        lines
    }

    #[tokio::test]
    async fn recipients_are_checked_at_rcpt_and_a_pipelined_message_is_delivered_once() {
        let (address, keeper, _stop) = start(None, 4).await;
        let script = "EHLO mx.example\r\nMAIL FROM:<tim@example.org>\r\n\
RCPT TO:<stranger@replies.example>\r\nRCPT TO:<Reply+abc@Replies.example>\r\nDATA\r\n\
Subject: hi\r\n\r\n..a line that starts with a dot\r\nend\r\n.\r\nQUIT\r\n";
        let answers = converse(address, script, 7).await;
        let codes: Vec<&str> = answers.iter().map(|a| &a[..3]).collect();
        assert_eq!(codes, ["250", "250", "550", "250", "354", "250", "221"], "{answers:?}");
        assert!(answers[2].contains("not a reply address"), "{answers:?}");
        let mails = keeper.mails.lock().expect("lock").clone();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].mail_from, "tim@example.org");
        assert_eq!(mails[0].helo, "mx.example");
        assert_eq!(mails[0].recipients, ["reply+abc@replies.example"]);
        assert_eq!(mails[0].data, b"Subject: hi\r\n\r\n.a line that starts with a dot\r\nend\r\n");
        assert!(!mails[0].tls);
    }

    #[tokio::test]
    async fn order_size_and_recipient_limits_are_enforced() {
        let (address, keeper, _stop) = start(None, 4).await;
        let script = "MAIL FROM:<a@example.org>\r\nEHLO x\r\nMAIL FROM:<a@example.org> SIZE=999999\r\n\
MAIL FROM:<>\r\nDATA\r\nRCPT TO:<reply+1@replies.example>\r\nRCPT TO:<reply+2@replies.example>\r\n\
RCPT TO:<reply+3@replies.example>\r\nNOSUCH\r\nQUIT\r\n";
        let answers = converse(address, script, 10).await;
        let codes: Vec<&str> = answers.iter().map(|a| &a[..3]).collect();
        assert_eq!(
            codes,
            ["503", "250", "552", "250", "554", "250", "250", "452", "500", "221"],
            "{answers:?}"
        );
        // A message over the limit is read to its end and refused, not kept.
        let body = "x".repeat(5000);
        let script = format!(
            "EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<reply+1@replies.example>\r\nDATA\r\n{body}\r\n.\r\nQUIT\r\n"
        );
        let answers = converse(address, &script, 6).await;
        assert!(answers[4].starts_with("552"), "{answers:?}");
        assert!(keeper.mails.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn starttls_is_offered_and_mail_over_it_is_marked() {
        let dir = tempfile::tempdir().expect("dir");
        let identity = crate::tls::load_or_generate(&TlsSettings::default(), dir.path(), None)
            .expect("certificate");
        let mut config = (*identity.config).clone();
        config.alpn_protocols.clear();
        let (address, keeper, _stop) = start(Some(TlsAcceptor::from(Arc::new(config))), 4).await;
        let relay = Relay::new(&RelayConfig {
            host: "localhost".into(),
            port: address.port(),
            security: Security::StartTls,
            credentials: None,
            timeout: Duration::from_secs(5),
            roots: TrustedRoots::Only(std::fs::read(&identity.cert_file).expect("cert")),
        })
        .expect("client");
        let email = b"From: tim@example.org\r\nSubject: over TLS\r\n\r\nHello\r\n";
        let answer = relay
            .send_raw("tim@example.org", &["reply+tls@replies.example"], email)
            .await
            .expect("sent over STARTTLS");
        assert!(answer.starts_with("250"), "{answer}");
        let refused = relay.send_raw("tim@example.org", &["nobody@replies.example"], email).await;
        assert!(matches!(refused, Err(SendError::Permanent(_))), "{refused:?}");
        let mails = keeper.mails.lock().expect("lock").clone();
        assert_eq!(mails.len(), 1);
        assert!(mails[0].tls);
        assert_eq!(mails[0].data, email);
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_told_to_come_back() {
        let (address, _keeper, _stop) = start(None, 1).await;
        let first = TcpStream::connect(address).await.expect("first");
        let mut greeting = String::new();
        BufReader::new(first).read_line(&mut greeting).await.expect("greeting");
        assert!(greeting.starts_with("220"), "{greeting}");
        // The first reader was dropped with its connection: hold one open.
        let held = TcpStream::connect(address).await.expect("held");
        let mut held = BufReader::new(held);
        let mut line = String::new();
        held.read_line(&mut line).await.expect("greeting");
        assert!(line.starts_with("220"), "{line}");
        let second = TcpStream::connect(address).await.expect("second");
        let mut answer = String::new();
        BufReader::new(second).read_line(&mut answer).await.expect("answer");
        assert!(answer.starts_with("421"), "{answer}");
    }
}
