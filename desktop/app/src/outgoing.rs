//! The commands of sending: the compose screen (new messages and replies),
//! the list of messages sent from this computer, their delivery slips and
//! recall. Sending goes through the agent this app runs, or, when the
//! service holds the mailbox, through the Outbox folder it watches.

use std::time::Duration;

use sealpost_agent::agent::{SendOutcome, send_draft, server_client};
use sealpost_agent::journal::{ExpiryChoice, OutgoingRecord, OutgoingState};
use sealpost_agent::send::{Answer, DraftAttachment, NewDraft, SendError};
use sealpost_agent::state::now_unix;
use sealpost_agent::{AgentConfig, AgentError, AgentState, Secrets, ServerClient, ServerError};
use sealpost_proto::api::{DeliveryReport, DeliveryState, RetrievalChannel};
use tauri::State;

use crate::commands::swapped_message;
use crate::ipc::{
    ComposeDraft, ComposeForm, ErrorCode, IpcError, ReplyTarget, SentRecipient, SentView, SlipLine,
    SlipView,
};
use crate::shell::Shell;

/// How long the window waits for the service to finish a handed-over message.
const HAND_OVER_WAIT: Duration = Duration::from_secs(20);
/// Sent messages listed.
const SENT_LISTED: u32 = 100;
/// Largest attachment total the window may hand over, before base64.
const ATTACHMENTS_MAX: usize = 50 * 1024 * 1024;

/// Sends the compose screen's message securely; answers once it is sent,
/// given up on, or kept for a later attempt.
#[tauri::command]
pub async fn send_message(
    shell: State<'_, Shell>,
    form: ComposeForm,
) -> Result<SentView, IpcError> {
    let config = AgentConfig::load(shell.paths()).map_err(AgentError::from)?;
    let draft = new_draft(&shell, &config, form).await?.write().map_err(not_sent)?;
    let running = shell.running_agent().await;
    let sender = running.as_ref().map(|(sender, _)| sender.as_ref());
    match send_draft(shell.paths(), sender, &draft, HAND_OVER_WAIT).await? {
        SendOutcome::Done(record) => Ok(sent_view(&record)),
        SendOutcome::HandedOver { .. } => Ok(SentView {
            message_id: None,
            subject: draft.subject,
            state: "handed_over".into(),
            error: None,
            created_at: now_unix(),
            retry_at: None,
            recipients: Vec::new(),
        }),
    }
}

async fn new_draft(
    shell: &Shell,
    config: &AgentConfig,
    form: ComposeForm,
) -> Result<NewDraft, IpcError> {
    let (to, cc, bcc) = (addresses(&form.to)?, addresses(&form.cc)?, addresses(&form.bcc)?);
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err(invalid("Name at least one recipient."));
    }
    if form.subject.chars().any(char::is_control) {
        return Err(invalid("The subject must be one line."));
    }
    let mut attachments = Vec::with_capacity(form.attachments.len());
    let mut total = 0;
    for upload in form.attachments {
        let bytes = data_encoding::BASE64.decode(upload.data_base64.as_bytes()).map_err(|_| {
            invalid(&format!("The attachment {} could not be read; attach it again.", upload.name))
        })?;
        total += bytes.len();
        if total > ATTACHMENTS_MAX {
            return Err(invalid("The attachments are larger than 50 MB in all."));
        }
        let name = sealpost_reader::safe_file_name(&upload.name);
        attachments.push(DraftAttachment {
            name: if name.is_empty() { "attachment".into() } else { name },
            content_type: media_type(&upload.content_type),
            bytes,
        });
    }
    let (mut in_reply_to, mut references) = (None, Vec::new());
    if let Some(target) = &form.reply_to {
        let raw = swapped_message(shell, &target.folder, &target.message_id).await?;
        let answered = NewDraft::answering(&raw, &config.email, Answer::Reply);
        (in_reply_to, references) = (answered.in_reply_to, answered.references);
    }
    if let Some(target) = &form.forward_of {
        // The original's attachments go along, read from the mailbox now.
        let raw = swapped_message(shell, &target.folder, &target.message_id).await?;
        let forwarded = NewDraft::answering(&raw, &config.email, Answer::Forward);
        references = forwarded.references;
        attachments.extend(forwarded.attachments);
    }
    let expiry = match (form.never_expires, form.expires_in_days) {
        (true, _) => ExpiryChoice::Never,
        (false, Some(days)) if (1..=3650).contains(&days) => {
            ExpiryChoice::At(now_unix() + i64::from(days) * 24 * 3600)
        }
        (false, Some(_)) => return Err(invalid("Choose between 1 and 3650 days.")),
        (false, None) => ExpiryChoice::Default,
    };
    Ok(NewDraft {
        from: (None, config.email.clone()),
        to,
        cc,
        bcc,
        subject: form.subject.trim().to_owned(),
        body: form.body,
        attachments,
        in_reply_to,
        references,
        expiry,
    })
}

/// A reply to a swapped message, prefilled: to its sender (and, for
/// `all`, its other recipients but this account), `Re:` and the quote.
#[tauri::command]
pub async fn reply_draft(
    shell: State<'_, Shell>,
    message_id: String,
    folder: String,
    all: bool,
) -> Result<ComposeDraft, IpcError> {
    let answer = if all { Answer::ReplyAll } else { Answer::Reply };
    answer_draft(&shell, ReplyTarget { message_id, folder }, answer).await
}

/// A forward of a swapped message, prefilled: `Fwd:`, the original below,
/// its attachments listed (they go along when it is sent).
#[tauri::command]
pub async fn forward_draft(
    shell: State<'_, Shell>,
    message_id: String,
    folder: String,
) -> Result<ComposeDraft, IpcError> {
    answer_draft(&shell, ReplyTarget { message_id, folder }, Answer::Forward).await
}

async fn answer_draft(
    shell: &Shell,
    target: ReplyTarget,
    answer: Answer,
) -> Result<ComposeDraft, IpcError> {
    let config = AgentConfig::load(shell.paths()).map_err(AgentError::from)?;
    let raw = swapped_message(shell, &target.folder, &target.message_id).await?;
    let draft = NewDraft::answering(&raw, &config.email, answer);
    let forward = answer == Answer::Forward;
    Ok(ComposeDraft {
        to: draft.to.join(", "),
        cc: draft.cc.join(", "),
        subject: draft.subject,
        body: draft.body,
        forwarded_attachments: draft.attachments.into_iter().map(|a| a.name).collect(),
        forward_of: forward.then(|| target.clone()),
        reply_to: (!forward).then_some(target),
    })
}

/// The secure messages sent from this computer, newest first.
#[tauri::command]
pub async fn sent_messages(shell: State<'_, Shell>) -> Result<Vec<SentView>, IpcError> {
    let state = AgentState::open(&shell.paths().state_db()).await.map_err(AgentError::from)?;
    let records = state.recent_outgoing(SENT_LISTED).await.map_err(AgentError::from)?;
    Ok(records.iter().map(sent_view).collect())
}

/// Where each recipient's copy is, from the server.
#[tauri::command]
pub async fn delivery_slip(
    shell: State<'_, Shell>,
    message_id: String,
) -> Result<SlipView, IpcError> {
    let report = server(&shell).await?.deliveries(&message_id).await.map_err(server_error)?;
    Ok(slip_view(&report))
}

/// Recalls a message this account sent; answers its slip as it is now.
#[tauri::command]
pub async fn recall_message(
    shell: State<'_, Shell>,
    message_id: String,
) -> Result<SlipView, IpcError> {
    let server = server(&shell).await?;
    server.recall(&message_id).await.map_err(server_error)?;
    let report = server.deliveries(&message_id).await.map_err(server_error)?;
    Ok(slip_view(&report))
}

/// The running agent's client, else one of this registration's own.
async fn server(shell: &Shell) -> Result<ServerClient, IpcError> {
    if let Some((_, server)) = shell.running_agent().await {
        return Ok(server);
    }
    let config = AgentConfig::load(shell.paths()).map_err(AgentError::from)?;
    let secrets = Secrets::os_keyring(&config.email).await.map_err(AgentError::from)?;
    Ok(server_client(&config, &secrets).await?)
}

fn sent_view(record: &OutgoingRecord) -> SentView {
    let state = match record.state {
        OutgoingState::Sent => "sent",
        OutgoingState::Failed => "failed",
        OutgoingState::Queued if record.attempts == 0 => "sending",
        OutgoingState::Queued => "retrying",
    };
    SentView {
        message_id: record.message_id.clone(),
        subject: record.subject.clone(),
        state: state.into(),
        error: record.error.clone(),
        created_at: record.created_at,
        retry_at: (record.state == OutgoingState::Queued && record.attempts > 0)
            .then_some(record.next_attempt_at),
        recipients: record
            .recipients
            .iter()
            .map(|recipient| SentRecipient {
                address: recipient.recipient.clone(),
                notified_at: recipient.sent_at,
                error: recipient.error.clone(),
            })
            .collect(),
    }
}

fn slip_view(report: &DeliveryReport) -> SlipView {
    let unix = |at: Option<time::OffsetDateTime>| at.map(|at| at.unix_timestamp());
    SlipView {
        message_id: report.message_id.clone(),
        recalled_at: unix(report.lifecycle.recalled_at),
        expires_at: unix(report.lifecycle.expires_at),
        recipients: report
            .recipients
            .iter()
            .map(|line| SlipLine {
                address: line.recipient.clone(),
                state: match line.state {
                    DeliveryState::NotSentByServer => "waiting",
                    DeliveryState::Queued => "queued",
                    DeliveryState::Sent => "notified",
                    DeliveryState::Failed => "failed",
                    DeliveryState::Bounced => "bounced",
                    DeliveryState::Retrieved => "retrieved",
                }
                .into(),
                notified_at: unix(line.notified_at),
                retrieved_at: unix(line.retrieved_at),
                retrieved_with: line.retrieved_with.map(|channel| {
                    match channel {
                        RetrievalChannel::Agent => "desktop app",
                        RetrievalChannel::SecureMessageCenter => "Secure Message Center",
                    }
                    .into()
                }),
                replied_at: unix(line.replied_at),
                error: line.error.clone(),
            })
            .collect(),
    }
}

/// Addresses as people type them: separated by commas or semicolons,
/// `Name <address>` accepted; the first one that is not an address refused.
fn addresses(input: &str) -> Result<Vec<String>, IpcError> {
    let mut found = Vec::new();
    for part in input.split([',', ';', '\n']).map(str::trim).filter(|part| !part.is_empty()) {
        let address = match (part.rfind('<'), part.rfind('>')) {
            (Some(open), Some(close)) if open < close => &part[open + 1..close],
            _ => part,
        }
        .trim()
        .to_lowercase();
        let valid = address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !address.contains(char::is_whitespace)
        });
        if !valid {
            return Err(invalid(&format!(
                "{part:?} is not an email address such as alice@example.org."
            )));
        }
        if !found.contains(&address) {
            found.push(address);
        }
    }
    Ok(found)
}

/// `type/subtype` as given when it looks like one, else plain bytes.
fn media_type(given: &str) -> String {
    let valid = given.split_once('/').is_some_and(|(kind, sub)| {
        !kind.is_empty()
            && !sub.is_empty()
            && given.chars().all(|c| c.is_ascii_alphanumeric() || "/+-.".contains(c))
    });
    if valid { given.to_owned() } else { "application/octet-stream".to_owned() }
}

fn invalid(message: &str) -> IpcError {
    IpcError::new(ErrorCode::Invalid, message)
}

fn not_sent(error: SendError) -> IpcError {
    IpcError::new(ErrorCode::NotSent, error.to_string())
}

fn server_error(error: ServerError) -> IpcError {
    IpcError::new(ErrorCode::Server, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_as_people_type_them() {
        assert_eq!(
            addresses("Pat <Pat@Clinic.example>; lee@clinic.example,\n").expect("valid"),
            ["pat@clinic.example", "lee@clinic.example"]
        );
        assert_eq!(addresses(" ").expect("empty"), Vec::<String>::new());
        let error = addresses("lee@clinic.example, not an address").expect_err("invalid");
        assert_eq!(error.code, ErrorCode::Invalid);
        assert!(error.message.contains("not an address"), "{}", error.message);
    }

    #[test]
    fn only_plain_media_types_are_kept() {
        assert_eq!(media_type("application/pdf"), "application/pdf");
        assert_eq!(media_type("text/html\r\nX: y"), "application/octet-stream");
        assert_eq!(media_type(""), "application/octet-stream");
    }
}
