//! Sending: one secure message for many recipients, its notifications queued
//! by the upload and handed by the server's outbox to Postfix, beside the
//! floor: a minimal pipelined SMTP client handing Postfix the very same
//! emails, with the same envelopes, over one connection.
//!
//! The recipients are at a domain Postfix accepts for any local part and
//! then discards, so what is measured is the hand-over, not delivery.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sealpost_harness::{MailStack, StackOptions};
use sealpost_server::bounces::BounceMatcher;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection as _, Row as _, SqliteConnection};

use crate::report::{Figure, Row, Target};
use crate::setup::Deployment;
use crate::smtp::{Outgoing, SmtpClient};
use crate::stats::median;
use crate::{Context, Outcome};

/// Postfix accepts and discards everything for this domain.
const SINK_DOMAIN: &str = "sink.example";
/// How often the server's counters are read while it sends.
const POLL: Duration = Duration::from_millis(50);

/// The server's notification attempts so far, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Attempts {
    sent: u64,
    retry: u64,
    failed: u64,
}

pub async fn run(context: &Context) -> Result<Outcome> {
    let count = context.sizes.sending;
    let options =
        StackOptions { discard_domain: Some(SINK_DOMAIN.to_owned()), ..StackOptions::default() };
    let deployment = Deployment::start(&context.binaries, &[], &options, &[]).await?;
    let data_dir = deployment.server_data_dir();
    let mut database = open_read_only(&data_dir.join("sealpost.db")).await?;
    // The server's own key, so the floor's envelope senders are the very
    // addresses the server uses (each notification has its own).
    let verp_key: Vec<u8> =
        sqlx::query_scalar("SELECT value FROM shared_secrets WHERE name = 'verp'")
            .fetch_one(&mut database)
            .await
            .context("the server's VERP key")?;
    let bounces = BounceMatcher::new(
        verp_key.try_into().map_err(|_| anyhow::anyhow!("the VERP key is not 32 bytes"))?,
        sealpost_server::Settings::default().bounce_address(),
    )?;
    let mime =
        sealpost_harness::sample_mime("Sending benchmark", "Hello from the bench.", &[7; 2048]);

    let mut removed = postfix_removed(&deployment.stack);
    let mut uploads = Vec::new();
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for round in 0..context.sizes.sending_rounds {
        let recipients: Vec<String> =
            (0..count).map(|index| format!("r{round}-{index}@{SINK_DOMAIN}")).collect();
        let recipients: Vec<&str> = recipients.iter().map(String::as_str).collect();

        // Ours: from the upload's answer (every notification queued) until
        // Postfix has accepted the last one.
        wait_until_drained(&deployment.stack, removed, count).await?;
        let before = attempts(&deployment).await?;
        let started = Instant::now();
        let stored = deployment.store_and_notify(&recipients, mime.clone()).await?;
        let queued = Instant::now();
        wait_until_sent(&deployment, before, count).await?;
        let sent = Instant::now();
        uploads.push((queued - started).as_secs_f64());
        ours.push((sent - queued).as_secs_f64());
        removed += count;

        // The floor: the same emails and envelopes, read from the server's outbox.
        let messages = outbox_messages(&mut database, &bounces, &stored.message_id).await?;
        if messages.len() != count {
            bail!("the outbox holds {} notifications for {count} recipients", messages.len());
        }
        wait_until_drained(&deployment.stack, removed, count).await?;
        let started = Instant::now();
        let mut client = SmtpClient::connect(deployment.stack.smtp_addr()).await?;
        client.send_pipelined(&messages).await?;
        floor.push(started.elapsed().as_secs_f64());
        client.quit().await;
        removed += count;
        println!(
            "    round {}: upload {:.2} s, server {:.2} s, pipelined client {:.2} s",
            round + 1,
            uploads[round],
            ours[round],
            floor[round]
        );
    }

    let rate = |seconds: f64| if seconds > 0.0 { count as f64 / seconds } else { 0.0 };
    let (ours, floor, upload) = (median(&ours), median(&floor), median(&uploads));
    let recipients = thousands(count);
    let floor_name = "pipelined SMTP client";
    let rows = vec![
        Row::against(
            format!("{recipients} notifications: messages/s"),
            Figure::per_second(rate(ours)),
            floor_name,
            Figure::per_second(rate(floor)),
            Target::RatioAtLeast(0.5),
        ),
        Row::against(
            format!("{recipients} notifications: until all accepted by Postfix"),
            Figure::seconds(ours),
            floor_name,
            Figure::seconds(floor),
            Target::None,
        ),
        Row::alone(
            format!("upload queueing {recipients} notifications"),
            Figure::seconds(upload),
            Target::None,
        ),
    ];
    let notes = vec![
        format!(
            "One {}-byte message stored for {recipients} recipients at a domain Postfix accepts and \
             discards; the server's time runs from the upload's answer (all queued) until its \
             metrics count every notification accepted by Postfix (read every {} ms), with \
             outbox.concurrency at its default of {}.",
            mime.len(),
            POLL.as_millis(),
            sealpost_server::Settings::default().outbox.concurrency
        ),
        format!(
            "The floor hands Postfix the same {recipients} emails with the same envelopes, read from \
             the server's outbox, over one connection: MAIL, RCPT and BDAT LAST per message, \
             pipelined without waiting for answers."
        ),
        format!(
            "{} rounds, the server and the floor interleaved, each starting with Postfix's queue \
             empty; medians over rounds.",
            context.sizes.sending_rounds
        ),
    ];
    Ok(Outcome { rows, notes })
}

async fn open_read_only(path: &Path) -> Result<SqliteConnection> {
    let options = SqliteConnectOptions::new().filename(path).read_only(true);
    SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening the server's database {}", path.display()))
}

/// The notifications the server built for `message_id`, as it sent them.
async fn outbox_messages(
    database: &mut SqliteConnection,
    bounces: &BounceMatcher,
    message_id: &str,
) -> Result<Vec<Outgoing>> {
    let rows =
        sqlx::query("SELECT id, recipient, email FROM outbox WHERE message_id = ? ORDER BY id")
            .bind(message_id)
            .fetch_all(&mut *database)
            .await
            .context("reading the server's outbox")?;
    rows.iter()
        .map(|row| {
            Ok(Outgoing {
                mail_from: bounces.envelope_sender(row.try_get("id")?),
                rcpt_to: row.try_get("recipient")?,
                data: row.try_get("email")?,
            })
        })
        .collect()
}

/// Reads the server's notification counters from `/metrics`.
async fn attempts(deployment: &Deployment) -> Result<Attempts> {
    let response = deployment.api.get("/metrics", None).await?.expect_status(200)?;
    Ok(parse_attempts(&response.text()))
}

fn parse_attempts(metrics: &str) -> Attempts {
    let mut attempts = Attempts::default();
    for line in metrics.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Some(labels) = series.strip_prefix("sealpost_notification_attempts_total{") else {
            continue;
        };
        let value: u64 = value.trim().parse().unwrap_or(0);
        if labels.contains("outcome=\"sent\"") {
            attempts.sent = value;
        } else if labels.contains("outcome=\"retry\"") {
            attempts.retry = value;
        } else if labels.contains("outcome=\"failed\"") {
            attempts.failed = value;
        }
    }
    attempts
}

/// Waits until the server has counted `count` more notifications sent than
/// `before`; fails at once on any retry or failure, which would stall it.
async fn wait_until_sent(deployment: &Deployment, before: Attempts, count: usize) -> Result<()> {
    let timeout = Duration::from_secs(120).max(Duration::from_millis(50) * count as u32);
    let deadline = Instant::now() + timeout;
    let wanted = before.sent + count as u64;
    loop {
        let now = attempts(deployment).await?;
        if now.retry > before.retry || now.failed > before.failed {
            bail!(
                "the server could not hand over every notification ({} to retry, {} failed); Postfix log:\n{}",
                now.retry - before.retry,
                now.failed - before.failed,
                tail(&deployment.stack.postfix_log(), 20)
            );
        }
        if now.sent >= wanted {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "only {} of {count} notifications sent after {timeout:?}",
                now.sent - before.sent
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How many messages Postfix has finished with (discarded or delivered).
fn postfix_removed(stack: &MailStack) -> usize {
    stack.postfix_log().lines().filter(|line| line.ends_with(": removed")).count()
}

/// Waits until Postfix has finished with `expected` messages, so a
/// measurement does not pay for the previous one's queue.
async fn wait_until_drained(stack: &MailStack, expected: usize, count: usize) -> Result<()> {
    let timeout = Duration::from_secs(60).max(Duration::from_millis(20) * count as u32);
    let deadline = Instant::now() + timeout;
    loop {
        let removed = postfix_removed(stack);
        if removed >= expected {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("Postfix finished with {removed} of {expected} messages within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// 10000 as "10,000".
fn thousands(number: usize) -> String {
    let digits = number.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_read_by_outcome() {
        let metrics = "# HELP sealpost_notification_attempts Notification sending attempts\n\
                       # TYPE sealpost_notification_attempts counter\n\
                       sealpost_notification_attempts_total{outcome=\"sent\"} 9998\n\
                       sealpost_notification_attempts_total{outcome=\"retry\"} 2\n\
                       sealpost_messages_stored_total 1\n";
        assert_eq!(parse_attempts(metrics), Attempts { sent: 9998, retry: 2, failed: 0 });
        assert_eq!(parse_attempts(""), Attempts::default());
    }

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(200), "200");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(0), "0");
    }
}
