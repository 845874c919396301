//! Test harness: the real Sealpost server on loopback with fresh state.
//!
//! - [`TestApp`] runs the server in-process on port 0 over TLS, with its own
//!   data directory and SQLite database, and typed helpers for the API.
//! - [`ServerProcess`] runs the real `sealpost-server` binary the same way.
//! - [`MailCapture`] is a minimal SMTP listener the server relays to, so tests
//!   and the demo can read verification codes. (The real Postfix/Dovecot stack
//!   replaces it where delivery itself is under test.)
//! - [`AgentCli`] runs the real `sealpost-agent` binary with its own data
//!   directory, and [`KeyringSession`] gives it a private, unlocked OS
//!   keyring (a D-Bus session with GNOME Keyring).
//! - [`Browser`] drives headless Chromium through ChromeDriver, trusting the
//!   test server's self-signed certificate by its key alone.
//! - [`desktop::DesktopApp`] opens the real desktop app in a window on a
//!   private X display, driven through tauri-driver and WebKitWebDriver.
//! - [`PageClient`] fetches the Secure Message Center's pages as a browser
//!   without JavaScript would, keeping cookies, for tests of the exchange.
//! - [`S3Server`] is a real S3-compatible service (s3s-fs, signatures
//!   checked) on loopback with one bucket, for message content in object storage.
//! - [`web::StaticSite`] serves fixed pages over HTTPS with its own CA, for
//!   what clients discover on web servers other than Sealpost's.
//!
//! Used by the integration tests in `tests/tests/` and by `sealpost-demo`.

mod agent_cli;
mod app;
pub mod browser;
pub mod checks;
mod client;
mod cluster;
pub mod desktop;
mod dns;
mod mail_capture;
mod mailstack;
pub mod network_faults;
pub mod outages;
mod pages;
mod postgres;
mod process;
mod s3;
pub mod web;

pub use agent_cli::{AgentCli, CliOutput, KeyringSession, stop_gracefully};
pub use app::{DATABASE_ENV, TestApp, TestUser, on_postgres};
pub use browser::Browser;
pub use client::{ApiClient, ApiResponse};
pub use cluster::mixed_load::RequestKind;
pub use cluster::{
    CLUSTER_ORIGIN, ClusterDatabase, ClusterOptions, LoadReport, MixedLoad, NotificationTally,
    ServerCluster, StartOrder,
};
pub use dns::DnsServer;
pub use mail_capture::{CapturedMail, MailCapture};
pub use mailstack::{
    CAPABILITIES_WITHOUT_UIDPLUS, MailStack, MailUser, MailboxMessage, StackOptions,
};
pub use pages::{Page, PageClient};
pub use postgres::PostgresServer;
pub use process::{ServerProcess, start_with_retries, workspace_binary};
pub use s3::S3Server;

/// How many real copies of secure message `message_id` (swapped in by an
/// agent) and how many placeholders for it `messages` hold.
pub fn swap_state(messages: &[MailboxMessage], message_id: &str) -> (usize, usize) {
    let marker = format!("{}: {message_id}", sealpost_agent::swap::SWAPPED_HEADER);
    let real =
        messages.iter().filter(|m| String::from_utf8_lossy(&m.raw).contains(&marker)).count();
    let placeholders = messages
        .iter()
        .filter(|m| {
            sealpost_proto::notification::parse(&m.raw)
                .is_ok_and(|n| n.fields.message_id.as_str() == message_id)
        })
        .count();
    (real, placeholders)
}

/// Waits until `user`'s INBOX holds exactly one real copy of secure
/// message `message_id` and no placeholder for it (a running agent swapped
/// it); fails after `timeout`.
pub async fn wait_until_swapped(
    stack: &MailStack,
    user: &str,
    message_id: &str,
    timeout: std::time::Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let inbox = stack.messages(user, "INBOX").await.expect("INBOX");
        if swap_state(&inbox, message_id) == (1, 0) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{message_id} was not swapped");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Postfix's "user unknown" bounce of a notification (a fixture of the
/// server's), addressed to `verp_address`, with CRLF line ends as it travels.
pub fn bounce_report(verp_address: &str) -> String {
    let fixture = include_str!("../../server/tests/fixtures/bounces/postfix-user-unknown.eml");
    fixture.replace("VERP_ADDRESS", verp_address).replace("\r\n", "\n").replace('\n', "\r\n")
}

/// The Message-ID (without `<>`) of [`sample_mime`]`(subject, …)`: the
/// subject in hex, at example.test.
pub fn sample_message_id(subject: &str) -> String {
    let hex: String = subject.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}@example.test")
}

/// Upload metadata for `recipients`, with no notifications sent and the
/// server's default expiry.
pub fn plain_upload(recipients: &[&str]) -> sealpost_proto::api::UploadMetadata {
    sealpost_proto::api::UploadMetadata {
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        send_notifications: false,
        expires_at: None,
        never_expires: false,
        client_key: None,
    }
}

/// A sample MIME message with a text body and one binary attachment.
pub fn sample_mime(subject: &str, body: &str, attachment: &[u8]) -> Vec<u8> {
    let boundary = "sealpost-sample-boundary";
    let encoded = mime_base64(attachment);
    format!(
        "From: Sender <sender@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject_id}@example.test>\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n\
         --{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--{boundary}--\r\n",
        subject_id = sample_message_id(subject).trim_end_matches("@example.test"),
    )
    .into_bytes()
}

/// Base64 in 76-character lines, as MIME wants it.
fn mime_base64(bytes: &[u8]) -> String {
    let encoded = data_encoding::BASE64.encode(bytes);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// The Secure Message Center link in a notification email (with the
/// recipient's token), read from its text body as the recipient would.
pub fn notification_link(raw: &[u8]) -> Option<String> {
    let message = mail_parser::MessageParser::default().parse(raw)?;
    let text = message.body_text(0)?;
    text.split_whitespace()
        .find(|word| {
            word.starts_with("https://") && word.contains("/messages/") && word.contains("?t=")
        })
        .map(|link| link.trim_end_matches(['.', ',', ')', '>']).to_owned())
}
