//! What the commands print, and where the logs go.

use std::fmt::Write as _;

use sealpost_agent::agent::OnceReport;
use sealpost_agent::journal::{OutgoingRecord, OutgoingState};
use sealpost_agent::state::KeptRecord;
use sealpost_agent::{AgentPaths, SearchHit, Status};
use sealpost_proto::api::{DeliveryReport, RetrievalChannel};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Daily log files kept in the data directory.
const LOG_FILES_KEPT: usize = 14;

/// `run` logs JSON lines to a daily file in the data directory (and
/// progress to stderr); the other commands only warn on stderr.
/// `RUST_LOG` overrides the levels.
pub fn init_logging(paths: &AgentPaths, to_file: bool) -> anyhow::Result<Option<WorkerGuard>> {
    let stderr_filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(if to_file { "info" } else { "warn" }))
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .compact()
        .with_filter(stderr_filter());
    if !to_file {
        tracing_subscriber::registry().with(stderr).init();
        return Ok(None);
    }
    paths.create()?;
    // The appender looks for old files to prune in it before writing one.
    std::fs::create_dir_all(paths.log_dir())?;
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix("agent")
        .filename_suffix("log")
        .max_log_files(LOG_FILES_KEPT)
        .build(paths.log_dir())?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let file = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(writer)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    tracing_subscriber::registry().with(stderr).with(file).init();
    Ok(Some(guard))
}

pub fn print_hits(hits: &[SearchHit], json: bool) -> anyhow::Result<()> {
    if json {
        for hit in hits {
            println!("{}", serde_json::to_string(hit)?);
        }
        return Ok(());
    }
    if hits.is_empty() {
        println!("no swapped message matches");
    }
    for hit in hits {
        println!("{}  {}  {}", date(hit.date), hit.sender, hit.subject);
        println!(
            "    {}  ({} UID {})",
            hit.snippet_marked("[", "]").replace('\n', " "),
            hit.folder,
            hit.uid
        );
    }
    Ok(())
}

/// Prints what `run --once` did; returns whether something waits for the server.
pub fn print_reports(report: &OnceReport) -> bool {
    let mut pending = false;
    for (folder, report) in &report.folders {
        println!(
            "{folder}: {} swapped, {} kept, {} rejected ({} new message(s) looked at)",
            report.swapped.len(),
            report.kept.len(),
            report.rejected.len(),
            report.examined
        );
        for kept in &report.kept {
            pending |= kept.temporary;
            println!("  kept UID {} ({}): {}", kept.uid, kept.message_id, kept.reason);
        }
        for rejected in &report.rejected {
            println!("  rejected UID {}: {}", rejected.uid, rejected.reason);
        }
    }
    for record in &report.outbox.outgoing {
        pending |= record.state == OutgoingState::Queued;
        print_outgoing(record);
    }
    if report.outbox.recalled > 0 {
        println!("{} recalled message(s) replaced by a notice", report.outbox.recalled);
    }
    pending
}

/// One outgoing message: where it stands, and each recipient.
pub fn print_outgoing(record: &OutgoingRecord) {
    let state = match record.state {
        OutgoingState::Sent => "sent".to_owned(),
        OutgoingState::Failed => "NOT SENT".to_owned(),
        OutgoingState::Queued if record.attempts == 0 => "sending".to_owned(),
        OutgoingState::Queued => {
            format!("waiting to retry at {}", date(Some(record.next_attempt_at)))
        }
    };
    let id = record.message_id.as_deref().unwrap_or("not stored yet");
    println!("\"{}\" ({id}): {state}", record.subject);
    if let Some(error) = &record.error {
        println!("  {error}");
    }
    for recipient in &record.recipients {
        match (&recipient.sent_at, &recipient.error) {
            (Some(at), _) => println!("  {}: notified {}", recipient.recipient, date(Some(*at))),
            (None, Some(error)) => println!("  {}: refused: {error}", recipient.recipient),
            (None, None) => println!("  {}: not notified yet", recipient.recipient),
        }
    }
}

/// The server's delivery slip of one sent message.
pub fn print_slip(report: &DeliveryReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let rfc3339 = |at: Option<time::OffsetDateTime>| date(at.map(|at| at.unix_timestamp()));
    println!("Message {}", report.message_id);
    if let Some(at) = report.lifecycle.recalled_at {
        println!("  recalled {}", rfc3339(Some(at)));
    }
    if let Some(at) = report.lifecycle.expires_at {
        println!("  expires {}", rfc3339(Some(at)));
    }
    for line in &report.recipients {
        let mut parts = vec![format!("{:?}", line.state).to_lowercase()];
        if line.notified_at.is_some() {
            parts.push(format!("notified {}", rfc3339(line.notified_at)));
        }
        if let Some(at) = line.retrieved_at {
            let how = match line.retrieved_with {
                Some(RetrievalChannel::SecureMessageCenter) => " in the Secure Message Center",
                Some(RetrievalChannel::Agent) => " with the desktop app",
                None => "",
            };
            parts.push(format!("retrieved {}{how}", rfc3339(Some(at))));
        }
        if line.replied_at.is_some() {
            parts.push(format!("replied {}", rfc3339(line.replied_at)));
        }
        if let Some(error) = &line.error {
            parts.push(error.clone());
        }
        println!("  {}: {}", line.recipient, parts.join(", "));
    }
    Ok(())
}

pub fn print_status(status: &Status, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    let mut out = String::new();
    writeln!(
        out,
        "Registered as  {} (device {}, \"{}\")",
        status.email, status.device_id, status.device_name
    )?;
    writeln!(out, "Server         {}", status.server)?;
    writeln!(out, "Mailbox        {}, watching {}", status.imap, status.folders.join(", "))?;
    if status.running {
        writeln!(out, "Agent          running")?;
        for connection in &status.connections {
            let detail = connection.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
            writeln!(
                out,
                "  {:<12} {} since {}{detail}",
                connection.folder,
                connection.state,
                date(Some(connection.since))
            )?;
        }
    } else {
        writeln!(out, "Agent          not running (`sealpost-agent run` or the Sealpost app)")?;
    }
    match &status.last_swap {
        Some(swap) => writeln!(
            out,
            "Last swap      {} in {} ({} swapped in all)",
            date(Some(swap.swapped_at)),
            swap.folder,
            status.swapped_total
        )?,
        None => writeln!(out, "Last swap      none yet")?,
    }
    write_kept(&mut out, "Pending", &status.pending)?;
    write_kept(&mut out, "Failed", &status.failed)?;
    writeln!(out, "Rejected       {} possible phishing notification(s)", status.rejected.len())?;
    for rejected in &status.rejected {
        writeln!(out, "  {} UID {}: {}", rejected.folder, rejected.uid, rejected.reason)?;
    }
    writeln!(out, "Search index   {} message(s)", status.indexed)?;
    writeln!(
        out,
        "Sending        {} on the way; drafts in \"{}\" are sent securely",
        status.sending, status.outbox_folder
    )?;
    writeln!(out, "Not sent       {}", status.not_sent_total)?;
    for record in &status.not_sent {
        writeln!(
            out,
            "  \"{}\" ({}): {}",
            record.subject,
            date(Some(record.updated_at)),
            record.error.as_deref().unwrap_or("no reason recorded")
        )?;
    }
    writeln!(out, "Logs           {}", status.data_dir.join("logs").display())?;
    print!("{out}");
    Ok(())
}

fn write_kept(out: &mut String, title: &str, kept: &[KeptRecord]) -> std::fmt::Result {
    writeln!(out, "{title:<14} {}", kept.len())?;
    for record in kept {
        writeln!(
            out,
            "  {} UID {} ({}): {} [{} attempt(s), last {}]",
            record.folder,
            record.uid,
            record.message_id,
            record.reason,
            record.attempts,
            date(Some(record.last_tried))
        )?;
    }
    Ok(())
}

/// Unix seconds as RFC 3339 UTC.
fn date(seconds: Option<i64>) -> String {
    seconds
        .and_then(|seconds| time::OffsetDateTime::from_unix_timestamp(seconds).ok())
        .and_then(|date| date.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "-".to_owned())
}
