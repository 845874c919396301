//! Registration and the agent's start: how long `sealpost-agent register`
//! takes from start to tokens stored, how long `run` takes from a cold
//! process to IDLE on every watched folder, and what the agent holds in
//! memory once it waits.

use std::time::Duration;

use anyhow::{Result, bail};
use sealpost_harness::{AgentCli, KeyringSession, StackOptions};

use crate::report::{Figure, Row, Target};
use crate::setup::{Deployment, IDLE_ESTABLISHED, RunningAgent};
use crate::{Context, Outcome, memory, stats};

const ADDRESS: &str = "alice@example.test";
/// An agent watching three folders, as many users configure it.
const FOLDERS: [&str; 3] = ["INBOX", "Archive", "Junk"];
/// How long the agent waits before its idle memory is read: start-up
/// allocations settle, buffers are returned.
const SETTLE: Duration = Duration::from_secs(3);

pub async fn run(context: &Context) -> Result<Outcome> {
    let deployment =
        Deployment::start(&context.binaries, &["alice"], &StackOptions::default(), &[]).await?;
    let keyring = KeyringSession::start().await?;
    let folder_args: Vec<&str> = FOLDERS.iter().flat_map(|folder| ["--folder", *folder]).collect();

    // Each registration from a fresh data directory; the last one stays.
    let mut registrations = Vec::new();
    let mut agent = None;
    for _ in 0..context.sizes.registrations {
        let cli = AgentCli::new(keyring.env())?;
        let output = cli
            .register(
                &deployment.stack,
                ADDRESS,
                &deployment.server.base_url,
                &deployment.trusted_pem(),
                &folder_args,
            )
            .await?;
        if !output.success {
            bail!("sealpost-agent register failed: {}{}", output.stdout, output.stderr);
        }
        registrations.push(output.elapsed.as_secs_f64() * 1000.0);
        agent = Some(cli);
    }
    let Some(agent) = agent else { bail!("no registration ran") };

    let mut starts = Vec::new();
    let mut idle_rss = 0.0;
    for attempt in 1..=context.sizes.cold_starts {
        let mut running = RunningAgent::spawn(&agent, &["run"])?;
        let mut idle_at = running.started;
        // One IDLE per watched folder, and one on the Outbox folder.
        for _ in 0..=FOLDERS.len() {
            idle_at = running.wait_for(IDLE_ESTABLISHED, Duration::from_secs(30)).await?;
        }
        starts.push((idle_at - running.started).as_secs_f64() * 1000.0);
        if attempt == context.sizes.cold_starts {
            tokio::time::sleep(SETTLE).await;
            idle_rss = memory::rss_mib(running.pid()?)?;
        }
        running.stop().await;
    }

    let rows = vec![
        Row::alone(
            "registration, start to tokens stored (median)",
            Figure::ms(stats::median(&registrations)),
            Target::Below(3000.0),
        ),
        Row::alone(
            "registration (slowest)",
            Figure::ms(stats::percentile(&registrations, 100.0)),
            Target::None,
        ),
        Row::alone(
            "agent cold start → IDLE on 3 folders and the Outbox (median)",
            Figure::ms(stats::median(&starts)),
            Target::Below(300.0),
        ),
        Row::alone(
            "agent cold start (slowest)",
            Figure::ms(stats::percentile(&starts, 100.0)),
            Target::None,
        ),
        Row::alone(
            "agent idle, 3 folders watched (RSS)",
            Figure::mib(idle_rss),
            Target::Below(25.0),
        ),
    ];
    let notes = vec![
        format!(
            "{} registrations, each from a fresh data directory: code requested, read from the \
             INBOX over IMAP after Postfix delivered it, device enrolled, secrets in GNOME Keyring",
            registrations.len()
        ),
        format!(
            "{} starts of `sealpost-agent run` watching {}: process start to the last folder's IDLE",
            starts.len(),
            FOLDERS.join(", ")
        ),
    ];
    Ok(Outcome { rows, notes })
}
