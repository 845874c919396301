//! A minimal IMAP client over TLS: the floors the agent is measured against
//! (an IDLE client woken by new mail, pipelined APPENDs) and the quick
//! mailbox chores around the measurements.
//!
//! It speaks just enough IMAP4rev1 for Dovecot: tagged commands, untagged
//! lines, and LITERAL+ so APPENDs never wait for a continuation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustls::pki_types::ServerName;
use sealpost_harness::MailStack;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long any one answer may take; APPENDing thousands is well inside it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);

pub struct ImapClient {
    stream: BufReader<TlsStream<TcpStream>>,
    next_tag: u32,
}

impl ImapClient {
    /// Logs in as `address` over implicit TLS.
    pub async fn connect(stack: &MailStack, address: &str) -> Result<Self> {
        let config = sealpost_agent::tls::client_config(Some(stack.ca_pem().as_bytes()))?;
        let tcp = TcpStream::connect(stack.imaps_addr()).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost")?.to_owned();
        let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
        let mut client = Self { stream: BufReader::new(tls), next_tag: 1 };
        let greeting = read_line(&mut client.stream).await?;
        if !greeting.starts_with("* OK") {
            bail!("unexpected IMAP greeting: {greeting}");
        }
        let password = &stack.user(address).password;
        let lines = client.command(&format!("LOGIN \"{address}\" \"{password}\"")).await?;
        if !lines.iter().any(|line| line.contains("LITERAL+")) {
            // Dovecot names its capabilities in the LOGIN answer.
            let capability = client.command("CAPABILITY").await?;
            if !capability.iter().any(|line| line.contains("LITERAL+")) {
                bail!("the IMAP server does not offer LITERAL+");
            }
        }
        Ok(client)
    }

    /// Runs one command and returns its untagged lines and the tagged OK.
    pub async fn command(&mut self, command: &str) -> Result<Vec<String>> {
        let tag = self.tag();
        self.stream.get_mut().write_all(format!("{tag} {command}\r\n").as_bytes()).await?;
        read_until_tagged(&mut self.stream, &tag, command).await
    }

    /// APPENDs every message to `mailbox` without waiting between them.
    pub async fn append_pipelined(&mut self, mailbox: &str, messages: &[Vec<u8>]) -> Result<()> {
        let tags: Vec<String> = messages.iter().map(|_| self.tag()).collect();
        let (reader, writer) = tokio::io::split(self.stream.get_mut());
        let mut writer = BufWriter::with_capacity(256 * 1024, writer);
        let mut reader = BufReader::new(reader);
        let write = async {
            for (tag, message) in tags.iter().zip(messages) {
                let command = format!("{tag} APPEND \"{mailbox}\" {{{}+}}\r\n", message.len());
                writer.write_all(command.as_bytes()).await?;
                writer.write_all(message).await?;
                writer.write_all(b"\r\n").await?;
            }
            writer.flush().await?;
            anyhow::Ok(())
        };
        let read = async {
            for tag in &tags {
                read_until_tagged(&mut reader, tag, "APPEND").await?;
            }
            anyhow::Ok(())
        };
        tokio::try_join!(write, read)?;
        Ok(())
    }

    /// How many messages `mailbox` holds.
    pub async fn count(&mut self, mailbox: &str) -> Result<u32> {
        let lines = self.command(&format!("STATUS \"{mailbox}\" (MESSAGES)")).await?;
        lines
            .iter()
            .find_map(|line| {
                let rest = line.split("MESSAGES ").nth(1)?;
                rest.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()
            })
            .with_context(|| format!("no message count for {mailbox}: {lines:?}"))
    }

    /// How many messages in `mailbox` carry the header field `name`.
    pub async fn count_with_header(&mut self, mailbox: &str, name: &str) -> Result<usize> {
        self.command(&format!("EXAMINE \"{mailbox}\"")).await?;
        let lines = self.command(&format!("SEARCH HEADER \"{name}\" \"\"")).await?;
        self.command("CLOSE").await?;
        Ok(lines
            .iter()
            .filter_map(|line| line.strip_prefix("* SEARCH"))
            .map(|numbers| numbers.split_whitespace().count())
            .sum())
    }

    /// Removes every message from `mailbox`.
    pub async fn empty(&mut self, mailbox: &str) -> Result<()> {
        let selected = self.command(&format!("SELECT \"{mailbox}\"")).await?;
        // An empty mailbox has no message set to name.
        if !selected.iter().any(|line| line == "* 0 EXISTS") {
            self.command("STORE 1:* +FLAGS.SILENT (\\Deleted)").await?;
        }
        self.command("CLOSE").await?;
        Ok(())
    }

    /// Selects `mailbox` and starts IDLE: new mail from now on wakes it.
    pub async fn start_idle(&mut self, mailbox: &str) -> Result<()> {
        self.command(&format!("SELECT \"{mailbox}\"")).await?;
        self.idle().await
    }

    /// Waits until IDLE reports a new message and returns when that was,
    /// then ends IDLE and starts it again for the next one.
    pub async fn wait_for_new_mail(&mut self) -> Result<Instant> {
        let woken = loop {
            let line = read_line(&mut self.stream).await?;
            if line.starts_with("* ") && line.ends_with(" EXISTS") {
                break Instant::now();
            }
        };
        self.stream.get_mut().write_all(b"DONE\r\n").await?;
        let tag = format!("t{}", self.next_tag - 1);
        read_until_tagged(&mut self.stream, &tag, "IDLE").await?;
        self.idle().await?;
        Ok(woken)
    }

    async fn idle(&mut self) -> Result<()> {
        let tag = self.tag();
        self.stream.get_mut().write_all(format!("{tag} IDLE\r\n").as_bytes()).await?;
        let line = read_line(&mut self.stream).await?;
        if !line.starts_with('+') {
            bail!("IDLE was refused: {line}");
        }
        Ok(())
    }

    fn tag(&mut self) -> String {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        tag
    }
}

async fn read_line(reader: &mut (impl AsyncBufRead + Unpin)) -> Result<String> {
    let mut line = String::new();
    let read = tokio::time::timeout(RESPONSE_TIMEOUT, reader.read_line(&mut line))
        .await
        .context("the IMAP server did not answer in time")??;
    if read == 0 {
        bail!("the IMAP server closed the connection");
    }
    Ok(line.trim_end().to_owned())
}

/// Reads lines until the one tagged `tag`, which must say OK.
async fn read_until_tagged(
    reader: &mut (impl AsyncBufRead + Unpin),
    tag: &str,
    command: &str,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let line = read_line(reader).await?;
        if let Some(status) = line.strip_prefix(tag).and_then(|rest| rest.strip_prefix(' ')) {
            if !status.starts_with("OK") {
                let shown = command.split_whitespace().next().unwrap_or(command);
                bail!("{shown} failed: {status}");
            }
            lines.push(line);
            return Ok(lines);
        }
        lines.push(line);
    }
}
