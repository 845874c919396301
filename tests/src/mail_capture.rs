//! A minimal SMTP server that keeps every message it is given.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify};

#[derive(Debug, Clone)]
pub struct CapturedMail {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
}

/// Accepts everything on 127.0.0.1 and records it; stops with the runtime.
#[derive(Clone)]
pub struct MailCapture {
    port: u16,
    messages: Arc<Mutex<Vec<CapturedMail>>>,
    arrived: Arc<Notify>,
}

impl MailCapture {
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let capture = Self {
            port: listener.local_addr()?.port(),
            messages: Arc::default(),
            arrived: Arc::default(),
        };
        let session_capture = capture.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let capture = session_capture.clone();
                tokio::spawn(async move {
                    let _ = capture.session(stream).await;
                });
            }
        });
        Ok(capture)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn messages(&self) -> Vec<CapturedMail> {
        self.messages.lock().await.clone()
    }

    /// Waits for the first message to `recipient` that `accept` likes.
    pub async fn wait_for(
        &self,
        recipient: &str,
        timeout: Duration,
        accept: impl Fn(&CapturedMail) -> bool,
    ) -> Option<CapturedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            {
                let messages = self.messages.lock().await;
                let found = messages.iter().rev().find(|mail| {
                    mail.rcpt_to.iter().any(|to| to.eq_ignore_ascii_case(recipient)) && accept(mail)
                });
                if let Some(mail) = found {
                    return Some(mail.clone());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    async fn session(&self, stream: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 capture.test ESMTP\r\n").await?;
        let mut current =
            CapturedMail { mail_from: String::new(), rcpt_to: Vec::new(), data: Vec::new() };
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_ascii_uppercase();
            let reply: &[u8] = if command.starts_with("EHLO") {
                b"250-capture.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
            } else if command.starts_with("HELO") || command.starts_with("NOOP") {
                b"250 ok\r\n"
            } else if command.starts_with("MAIL FROM:") {
                current.mail_from = address_of(&line[10..]);
                b"250 ok\r\n"
            } else if command.starts_with("RCPT TO:") {
                current.rcpt_to.push(address_of(&line[8..]));
                b"250 ok\r\n"
            } else if command == "DATA" {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                current.data = read_data(&mut lines).await?;
                let finished = std::mem::replace(
                    &mut current,
                    CapturedMail {
                        mail_from: String::new(),
                        rcpt_to: Vec::new(),
                        data: Vec::new(),
                    },
                );
                self.messages.lock().await.push(finished);
                self.arrived.notify_waiters();
                b"250 queued\r\n"
            } else if command == "RSET" {
                current.rcpt_to.clear();
                b"250 ok\r\n"
            } else if command == "QUIT" {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else {
                b"502 not implemented\r\n"
            };
            write.write_all(reply).await?;
        }
    }
}

fn address_of(argument: &str) -> String {
    let argument = argument.trim();
    let inner = argument
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(argument, |(a, _)| a);
    inner.to_owned()
}

/// Reads a DATA section up to the lone dot, undoing dot-stuffing.
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed in DATA",
            ));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let unstuffed = if line.starts_with(b"..") { &line[1..] } else { &line[..] };
        data.extend_from_slice(unstuffed);
    }
}
