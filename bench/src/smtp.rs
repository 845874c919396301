//! A minimal SMTP client: the floor other senders are measured against, and
//! how measurements hand mail to Postfix with the moment it was accepted.
//!
//! Postfix on the test stack offers PIPELINING and CHUNKING, so
//! [`SmtpClient::send_pipelined`] writes every message as `MAIL`, `RCPT`,
//! `BDAT n LAST` without waiting for any answer, while the answers are read
//! concurrently: as fast as a single connection can go.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;

/// How long any one answer may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// One message with its envelope.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub mail_from: String,
    pub rcpt_to: String,
    /// The message with CRLF line endings.
    pub data: Vec<u8>,
}

pub struct SmtpClient {
    stream: BufReader<TcpStream>,
}

impl SmtpClient {
    /// Connects, reads the greeting and says EHLO; the server must offer
    /// PIPELINING and CHUNKING.
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream =
            TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut client = Self { stream: BufReader::new(stream) };
        client.expect("greeting", 220).await?;
        client.stream.get_mut().write_all(b"EHLO bench.example.test\r\n").await?;
        let ehlo = client.expect("EHLO", 250).await?;
        for extension in ["PIPELINING", "CHUNKING"] {
            if !ehlo.to_ascii_uppercase().contains(extension) {
                bail!("{addr} does not offer {extension}: {ehlo}");
            }
        }
        Ok(client)
    }

    /// Sends one message and returns the moment the server accepted it.
    pub async fn send(&mut self, message: &Outgoing) -> Result<Instant> {
        let stream = self.stream.get_mut();
        stream.write_all(&transaction(message)).await?;
        self.expect("MAIL FROM", 250).await?;
        self.expect("RCPT TO", 250).await?;
        self.expect("BDAT", 250).await?;
        Ok(Instant::now())
    }

    /// Sends every message on this connection without waiting between them.
    pub async fn send_pipelined(&mut self, messages: &[Outgoing]) -> Result<()> {
        let (reader, writer) = self.stream.get_mut().split();
        let mut writer = BufWriter::with_capacity(256 * 1024, writer);
        let mut reader = BufReader::new(reader);
        let write = async {
            for message in messages {
                writer.write_all(&transaction(message)).await?;
            }
            writer.flush().await?;
            anyhow::Ok(())
        };
        let read = async {
            for (index, _) in messages.iter().enumerate() {
                for step in ["MAIL FROM", "RCPT TO", "BDAT"] {
                    expect(&mut reader, step, 250)
                        .await
                        .with_context(|| format!("message {} of {}", index + 1, messages.len()))?;
                }
            }
            anyhow::Ok(())
        };
        tokio::try_join!(write, read)?;
        Ok(())
    }

    pub async fn quit(mut self) {
        let _ = self.stream.get_mut().write_all(b"QUIT\r\n").await;
        let _ = self.expect("QUIT", 221).await;
    }

    async fn expect(&mut self, step: &str, code: u16) -> Result<String> {
        expect(&mut self.stream, step, code).await
    }
}

/// `MAIL`, `RCPT` and `BDAT … LAST` with the message: one write.
fn transaction(message: &Outgoing) -> Vec<u8> {
    let mut out = format!(
        "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nBDAT {} LAST\r\n",
        message.mail_from,
        message.rcpt_to,
        message.data.len()
    )
    .into_bytes();
    out.extend_from_slice(&message.data);
    out
}

/// Reads one (possibly multi-line) reply and checks its code.
async fn expect(reader: &mut (impl AsyncBufRead + Unpin), step: &str, code: u16) -> Result<String> {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(REPLY_TIMEOUT, reader.read_line(&mut line))
            .await
            .with_context(|| format!("no answer to {step} within {REPLY_TIMEOUT:?}"))??;
        if read == 0 {
            bail!("the server closed the connection after {step}: {reply}");
        }
        reply.push_str(&line);
        // "250-…" continues, "250 …" ends.
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    if !reply.starts_with(&code.to_string()) {
        bail!("{step} answered {}", reply.trim_end());
    }
    Ok(reply)
}
