//! Plays arbitrary bytes as the client of one inbound SMTP session (the
//! server's own code, over an in-memory stream instead of TCP).
//!
//! The session must end once the client's bytes run out, never panic, and
//! answer only with well-formed SMTP replies, whatever the client sent: a
//! reply that a client's text could split into two lines would let it
//! forge answers for a front MTA. What reaches the handler must respect the
//! limits the listener announces.

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use libfuzzer_sys::fuzz_target;
use sealpost_server::inbound::{
    InboundHandler, InboundLimits, InboundMail, Verdict, serve_session,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

/// Small enough that the fuzzer reaches the size and recipient limits.
const MAX_SIZE: usize = 2048;
const MAX_RECIPIENTS: usize = 3;

/// Accepts, defers or refuses by the address alone, and echoes the
/// client's address in its refusals as the server's own handler does.
struct Deterministic;

#[async_trait]
impl InboundHandler for Deterministic {
    async fn sender(&self, address: &str) -> Verdict {
        check_address(address);
        if address.starts_with("slow") {
            Verdict::Defer(format!("Too much mail from <{address}>"))
        } else {
            Verdict::Accept
        }
    }

    async fn recipient(&self, address: &str) -> Verdict {
        check_address(address);
        if address.starts_with("reply+") {
            Verdict::Accept
        } else if address.starts_with("busy") {
            Verdict::Defer(format!("<{address}> is receiving too much mail"))
        } else {
            Verdict::Reject(format!("<{address}>: no such address here"))
        }
    }

    async fn deliver(&self, mail: InboundMail) -> Verdict {
        assert!(!mail.recipients.is_empty(), "a message with no accepted recipient");
        assert!(mail.recipients.len() <= MAX_RECIPIENTS, "{:?}", mail.recipients);
        for recipient in &mail.recipients {
            assert!(recipient.starts_with("reply+"), "{recipient:?} was never accepted");
        }
        // The line break before the final dot is the message's own.
        assert!(mail.data.len() <= MAX_SIZE + 2, "{} bytes over the limit", mail.data.len());
        if mail.data.starts_with(b"X-Defer") {
            Verdict::Defer("Temporary failure, try again later".into())
        } else {
            Verdict::Accept
        }
    }
}

fn check_address(address: &str) {
    assert_eq!(address, address.to_lowercase(), "addresses reach the handler lowercase");
}

/// The server's STARTTLS certificate: made once, as generating it costs
/// more than a session.
fn acceptor() -> TlsAcceptor {
    static ACCEPTOR: OnceLock<TlsAcceptor> = OnceLock::new();
    ACCEPTOR
        .get_or_init(|| {
            sealpost_server::install_crypto_provider();
            let dir =
                std::env::temp_dir().join(format!("sealpost-fuzz-tls-{}", std::process::id()));
            let identity = sealpost_server::tls::load_or_generate(&Default::default(), &dir, None)
                .expect("a self-signed certificate");
            let _ = std::fs::remove_dir_all(&dir);
            let mut config = (*identity.config).clone();
            config.alpn_protocols.clear();
            TlsAcceptor::from(Arc::new(config))
        })
        .clone()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime")
    })
}

/// Every reply line: three digits, a space or dash, printable text, CRLF.
fn check_replies(output: &[u8]) {
    assert!(output.is_empty() || output.ends_with(b"\r\n"), "a reply cut short: {output:?}");
    for line in output.split(|&byte| byte == b'\n') {
        if line.is_empty() {
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or_else(|| panic!("a bare LF in {output:?}"));
        assert!(line.len() >= 4, "a short reply line {line:?}");
        assert!(line[..3].iter().all(u8::is_ascii_digit), "no reply code in {line:?}");
        assert!(matches!(line[0], b'2'..=b'5'), "reply code out of range in {line:?}");
        assert!(matches!(line[3], b' ' | b'-'), "a malformed reply line {line:?}");
        assert!(!line.contains(&b'\r'), "a bare CR in {line:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses whether STARTTLS is offered.
    let Some((&choice, client)) = data.split_first() else {
        return;
    };
    let tls = (choice & 1 == 1).then(acceptor);
    let output = runtime().block_on(async {
        let limits = Arc::new(InboundLimits {
            hostname: "replies.example".into(),
            max_size: MAX_SIZE,
            max_recipients: MAX_RECIPIENTS,
            max_connections: 1,
            command_timeout: Duration::from_secs(30),
        });
        let peer: SocketAddr = "192.0.2.1:25".parse().expect("an address");
        let (server, client_end) = tokio::io::duplex(64 * 1024);
        let session =
            tokio::spawn(serve_session(server, peer, limits, Arc::new(Deterministic), tls));
        let (mut reading, mut writing) = tokio::io::split(client_end);
        // Written and read at once: the server blocks on its replies
        // otherwise, and the client on its commands.
        let write = async {
            let _ = writing.write_all(client).await;
            let _ = writing.shutdown().await;
            writing
        };
        let read = async {
            let mut output = Vec::new();
            let _ = reading.read_to_end(&mut output).await;
            output
        };
        let (writing, output) = tokio::join!(write, read);
        drop(writing);
        session.await.expect("the session does not panic");
        output
    });
    // After a STARTTLS the rest is the handshake's business, not SMTP.
    let plain = match output.windows(5).position(|w| w == b"220 2") {
        Some(start) => {
            let end = output[start..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(output.len(), |e| start + e + 2);
            &output[..end]
        }
        None => &output[..],
    };
    check_replies(plain);
});
