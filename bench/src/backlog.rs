//! Backlog: many notifications waiting when the agent starts, swapped by one
//! `sealpost-agent run --once`.
//!
//! The floor is what the swap must at least do to the mailbox: put the same
//! real messages into a folder, here with a minimal client pipelining
//! APPENDs (no fetching, no verifying, no removing). Each round refills the
//! INBOX with fresh placeholders first, so rounds are alike.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures_util::{StreamExt, TryStreamExt};
use sealpost_agent::swap::SWAPPED_HEADER;
use sealpost_harness::{StackOptions, sample_mime};

use crate::imap::ImapClient;
use crate::report::{Figure, Row, Target};
use crate::setup::{Deployment, RunningAgent, notification_email};
use crate::{Context, Outcome, memory, stats};

const AGENT_USER: &str = "alice@example.test";
const FLOOR_USER: &str = "floor@example.test";
/// Uploads in flight while the backlog is prepared.
const UPLOADS_IN_FLIGHT: usize = 8;

pub async fn run(context: &Context) -> Result<Outcome> {
    let count = context.sizes.backlog;
    let deployment =
        Deployment::start(&context.binaries, &["alice", "floor"], &StackOptions::default(), &[])
            .await?;
    let agent = deployment.register_agent(AGENT_USER, &[]).await?;

    let prepared = Instant::now();
    let (real, notifications) = prepare(&deployment, count).await?;
    let real_bytes: usize = real.iter().map(Vec::len).sum();
    let preparation = prepared.elapsed();

    let mut mailbox = ImapClient::connect(&deployment.stack, AGENT_USER).await?;
    let mut floor = ImapClient::connect(&deployment.stack, FLOOR_USER).await?;
    let mut ours_rates = Vec::new();
    let mut floor_rates = Vec::new();
    let mut peak_rss = 0.0_f64;
    for round in 1..=context.sizes.backlog_rounds {
        mailbox.empty("INBOX").await?;
        floor.empty("INBOX").await?;
        mailbox.append_pipelined("INBOX", &notifications).await?;

        let started = Instant::now();
        floor.append_pipelined("INBOX", &real).await?;
        floor_rates.push(count as f64 / started.elapsed().as_secs_f64());

        let mut running = RunningAgent::spawn(&agent.cli, &["run", "--once"])?;
        let peak = memory::PeakWatch::start(running.pid()?);
        let status = running.wait(Duration::from_secs(3600)).await?;
        let seconds = running.started.elapsed().as_secs_f64();
        peak_rss = peak_rss.max(peak.finish().await);
        if !status.success() {
            bail!("round {round}: `sealpost-agent run --once` exited with {status}");
        }
        let left = mailbox.count("INBOX").await? as usize;
        let swapped = mailbox.count_with_header("INBOX", SWAPPED_HEADER).await?;
        if left != count || swapped != count {
            bail!(
                "round {round}: after the run the INBOX holds {left} messages, {swapped} of them \
                 swapped in; expected exactly the {count} real messages"
            );
        }
        ours_rates.push(count as f64 / seconds);
    }

    let rows = vec![
        Row::against(
            format!("{count} notifications, `run --once`, messages/s"),
            Figure::per_second(stats::median(&ours_rates)),
            "pipelined APPEND",
            Figure::per_second(stats::median(&floor_rates)),
            Target::RatioAtLeast(0.5),
        ),
        Row::alone(format!("agent peak RSS swapping {count}"), Figure::mib(peak_rss), Target::None),
    ];
    let notes = vec![format!(
        "{count} secure messages of {:.1} KiB on average, {} rounds (medians); preparing them \
         (uploads and notifications) took {:.1} s",
        real_bytes as f64 / count as f64 / 1024.0,
        context.sizes.backlog_rounds,
        preparation.as_secs_f64()
    )];
    Ok(Outcome { rows, notes })
}

/// Stores `count` secure messages for the agent's user and returns their
/// contents and their notification emails.
async fn prepare(deployment: &Deployment, count: usize) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>)> {
    let stored: Vec<(Vec<u8>, Vec<u8>)> = futures_util::stream::iter(0..count)
        .map(|sequence| async move {
            let subject = format!("Statement {sequence}");
            // A few KiB of text and a small attachment, as most secure mail is.
            let body = format!(
                "Dear Alice,\r\n\r\nplease find statement {sequence} attached. {}\r\n\r\nKind regards,\r\nThe sender",
                "The figures cover the past month and are final. ".repeat(20 + sequence % 40)
            );
            let attachment: Vec<u8> = (0..1_500 + (sequence % 7) * 500)
                .map(|i| (i % 251) as u8)
                .collect();
            let mime = sample_mime(&subject, &body, &attachment);
            let message = deployment
                .store(&[AGENT_USER], mime.clone())
                .await
                .with_context(|| format!("storing message {sequence}"))?;
            anyhow::Ok((mime, notification_email(&message, &subject, sequence as u64)))
        })
        .buffered(UPLOADS_IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(stored.into_iter().unzip())
}
