//! Swap latency: from Postfix accepting a notification to the real message
//! standing in the INBOX with the placeholder gone, one message at a time.
//!
//! The floor is the least any IMAP client can do: a minimal client idling on
//! another mailbox of the same stack, woken by a plain email injected the
//! same way. Both include Postfix's delivery into Dovecot and Dovecot's
//! fixed notify delay, so our figure minus the floor's is the agent's own
//! share: waking, reading the notification, fetching the real message over
//! HTTPS, APPENDing it and removing the placeholder. The samples alternate
//! so both see the same machine.

use std::time::Duration;

use anyhow::{Context as _, Result};
use sealpost_harness::{StackOptions, sample_mime};

use crate::imap::ImapClient;
use crate::report::{Figure, Row, Target};
use crate::setup::{Deployment, IDLE_ESTABLISHED, RunningAgent, SENDER, notification_email};
use crate::smtp::{Outgoing, SmtpClient};
use crate::{Context, Outcome, stats};

const AGENT_USER: &str = "alice@example.test";
const FLOOR_USER: &str = "floor@example.test";
/// Longer than any one sample may take, Dovecot's delay included.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);
/// After a swap the agent's own changes wake it once more; the next sample
/// starts only when it waits again.
const SETTLE: Duration = Duration::from_millis(700);

pub async fn run(context: &Context) -> Result<Outcome> {
    let deployment =
        Deployment::start(&context.binaries, &["alice", "floor"], &StackOptions::default(), &[])
            .await?;
    let agent = deployment.register_agent(AGENT_USER, &[]).await?;
    let mut running = RunningAgent::spawn(&agent.cli, &["run"])?;
    running.wait_for(IDLE_ESTABLISHED, SAMPLE_TIMEOUT).await?;

    let mut floor = ImapClient::connect(&deployment.stack, FLOOR_USER).await?;
    floor.start_idle("INBOX").await?;
    let mut smtp = SmtpClient::connect(deployment.stack.smtp_addr()).await?;

    let attachment: Vec<u8> = (0..3_000u32).map(|i| (i % 251) as u8).collect();
    let mut ours = Vec::new();
    let mut floor_samples = Vec::new();
    for sequence in 0..context.sizes.swap_messages {
        // The floor: a plain email, the IDLE client woken by it.
        let plain = Outgoing {
            mail_from: SENDER.to_owned(),
            rcpt_to: FLOOR_USER.to_owned(),
            data: sample_mime(&format!("Plain {sequence}"), "Nothing secure here.", &attachment),
        };
        let accepted = smtp.send(&plain).await?;
        let woken = tokio::time::timeout(SAMPLE_TIMEOUT, floor.wait_for_new_mail())
            .await
            .context("the IDLE client was not woken")??;
        floor_samples.push((woken - accepted).as_secs_f64() * 1000.0);

        // Ours: the notification for a stored message, swapped by the agent.
        let subject = format!("Results {sequence}");
        let mime = sample_mime(&subject, "Your results are attached.", &attachment);
        let stored = deployment.store(&[AGENT_USER], mime).await?;
        let notification = Outgoing {
            mail_from: SENDER.to_owned(),
            rcpt_to: AGENT_USER.to_owned(),
            data: notification_email(&stored, &subject, sequence as u64),
        };
        running.drain();
        let accepted = smtp.send(&notification).await?;
        let swapped = running
            .wait_for(&stored.message_id, SAMPLE_TIMEOUT)
            .await
            .with_context(|| format!("message {sequence} was not swapped"))?;
        ours.push((swapped - accepted).as_secs_f64() * 1000.0);
        tokio::time::sleep(SETTLE).await;
    }
    smtp.quit().await;
    running.stop().await;

    let mut rows = Vec::new();
    for (label, percentile, target) in [
        ("p50", 50.0, Target::AboveFloorAtMost(30.0)),
        ("p95", 95.0, Target::None),
        ("p99", 99.0, Target::AboveFloorAtMost(100.0)),
    ] {
        rows.push(Row::against(
            format!("SMTP accepted → swapped, {label}"),
            Figure::ms(stats::percentile(&ours, percentile)),
            "IDLE client woken",
            Figure::ms(stats::percentile(&floor_samples, percentile)),
            target,
        ));
    }
    let share: Vec<f64> = [50.0, 99.0]
        .iter()
        .map(|p| stats::percentile(&ours, *p) - stats::percentile(&floor_samples, *p))
        .collect();
    let notes = vec![format!(
        "{} notifications and {} plain emails, alternating, one at a time; the agent's own share \
         above the floor: p50 {:.1} ms, p99 {:.1} ms",
        ours.len(),
        floor_samples.len(),
        share[0],
        share[1]
    )];
    Ok(Outcome { rows, notes })
}
