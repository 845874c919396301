//! Sending secure messages from the desktop, through the user's own mail
//! server.
//!
//! A draft (MIME, as any mail program writes it) is written to the journal
//! ([`crate::journal`]) first. Then, each step recorded as it completes:
//!
//! 1. **upload** to the Sealpost server, Bcc removed, with the journal
//!    entry's client key (an upload sent again after a lost answer returns
//!    the message already stored);
//! 2. **notify** each recipient: the signed notification, with the draft's
//!    own From, To, Cc, Subject, Date, Message-ID and threading, sent through
//!    the user's SMTP server with the user's own address as envelope sender
//!    (Bcc recipients only in the envelope); each recipient is recorded once
//!    their server accepted it, so a crash never notifies anyone twice (but
//!    for a crash between the server's acceptance and that record, a window
//!    of one network round trip);
//! 3. tell the server which recipients were notified, for the delivery slip;
//! 4. **file** the real message in Sent, marked seen (found again by its
//!    `X-Sealpost-Sent` header, so a crash never files it twice);
//! 5. remove the draft from the Outbox folder, when it came from there.
//!
//! A temporary failure (server or mail server unreachable) keeps the entry
//! for a later attempt; a permanent one (the server refuses the message,
//! every recipient is refused) gives up, flags the Outbox draft and leaves a
//! short message in the INBOX saying why, with the draft attached when it
//! has no Outbox copy. Nothing is ever lost: the draft stays in the journal
//! until the real message is in Sent.

use std::sync::Arc;
use std::time::Duration;

use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use mail_parser::MessageParser;
use sealpost_proto::api::{SenderNotified, StoredMessage, UploadMetadata};
use sealpost_proto::notification::{EmailEnvelope, SenderHeaders, address_pairs, compose_email};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::imap::{ImapAccount, ImapError, MailboxSession, NewMessage, SpecialFolder};
use crate::journal::{DraftSource, ExpiryChoice, NewOutgoing, OutgoingRecord, OutgoingState};
use crate::server::{ServerClient, ServerError};
use crate::smtp::{SmtpError, SmtpSender};
use crate::state::{AgentState, StateError, now_unix};

/// Marks the real copy of a sent message in the Sent folder; its value is
/// the message's Sealpost id.
pub const SENT_HEADER: &str = "X-Sealpost-Sent";
/// Marks the agent's messages to the user about a draft; its value is the
/// draft's client key.
pub const NOTICE_HEADER: &str = "X-Sealpost-Notice";
/// Set on a draft by `sealpost-agent send` when it hands the draft to a
/// running agent through the Outbox folder: the journal entry takes it as
/// its client key, so the handing side can follow it.
pub const CLIENT_KEY_HEADER: &str = "X-Sealpost-Client-Key";
/// The sender's expiry choice on a draft: Unix seconds, or `never`. Without
/// it the organization's default applies.
pub const EXPIRES_HEADER: &str = "X-Sealpost-Expires";
/// The keyword on an Outbox draft that could not be sent; the agent leaves
/// it alone until the user removes the mark (or saves the draft again).
pub const FAILED_KEYWORD: &str = "$SealpostFailed";

/// Attempts after which a draft that keeps failing for a temporary reason is given up on.
const MAX_ATTEMPTS: u32 = 20;
const RETRY_FIRST: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(30 * 60);

/// The points between the steps, where tests inject crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStep {
    Queued,
    Uploaded,
    /// After each recipient's notification is recorded.
    Notified,
    Filed,
    SourceRemoved,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("this draft cannot be sent: {0}")]
    Draft(String),
    #[error("sending was interrupted after {0:?}")]
    Interrupted(SendStep),
}

/// A draft, read from its MIME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// As written, Bcc included.
    pub raw: Vec<u8>,
    pub subject: String,
    /// To, Cc and Bcc, lowercase, each once.
    pub recipients: Vec<String>,
    /// From [`CLIENT_KEY_HEADER`], when a draft was handed over with one.
    pub client_key: Option<String>,
    /// From [`EXPIRES_HEADER`].
    pub expiry: ExpiryChoice,
}

impl Draft {
    pub fn parse(raw: Vec<u8>) -> Result<Self, SendError> {
        let message = MessageParser::default()
            .parse_headers(&raw)
            .ok_or_else(|| SendError::Draft("it is not an email message".into()))?;
        let mut recipients: Vec<String> = Vec::new();
        for list in [message.to(), message.cc(), message.bcc()] {
            for (_, address) in address_pairs(list) {
                let address = address.trim().to_lowercase();
                if !address.contains('@') {
                    return Err(SendError::Draft(format!("{address:?} is not an email address")));
                }
                if !recipients.contains(&address) {
                    recipients.push(address);
                }
            }
        }
        if recipients.is_empty() {
            return Err(SendError::Draft("it names no recipient in To, Cc or Bcc".into()));
        }
        let client_key = message
            .header_raw(CLIENT_KEY_HEADER)
            .map(|value| value.trim().to_owned())
            .filter(|key| !key.is_empty() && key.len() <= 100);
        let expiry = match message.header_raw(EXPIRES_HEADER).map(str::trim) {
            None | Some("") => ExpiryChoice::Default,
            Some(never) if never.eq_ignore_ascii_case("never") => ExpiryChoice::Never,
            Some(at) => ExpiryChoice::At(at.parse().map_err(|_| {
                SendError::Draft(format!(
                    "{EXPIRES_HEADER} must be Unix seconds or \"never\", not {at:?}"
                ))
            })?),
        };
        Ok(Self {
            subject: message.subject().unwrap_or_default().to_owned(),
            recipients,
            client_key,
            expiry,
            raw,
        })
    }
}

/// Why a registration without an outgoing mail server cannot send.
pub const NO_SMTP_SERVER: &str = "no outgoing (SMTP) mail server is known for this mailbox: \
register this computer again with --smtp-host, or ask IT to set SmtpHost in the policy";

/// The message as its recipients get it: without the Bcc field (Bcc
/// recipients are in the envelope only) and without the agent's own
/// hand-over header.
pub fn without_hidden_fields(raw: &[u8]) -> Vec<u8> {
    let header_end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 2)
        .or_else(|| raw.windows(2).position(|window| window == b"\n\n").map(|at| at + 1))
        .unwrap_or(raw.len());
    let (head, body) = raw.split_at(header_end);
    let mut kept = Vec::with_capacity(raw.len());
    let mut skipping = false;
    for line in head.split_inclusive(|byte| *byte == b'\n') {
        let continuation = line.first().is_some_and(|byte| *byte == b' ' || *byte == b'\t');
        if !continuation {
            let name = line.split(|byte| *byte == b':').next().unwrap_or_default();
            skipping = [b"bcc".as_slice(), CLIENT_KEY_HEADER.as_bytes(), EXPIRES_HEADER.as_bytes()]
                .iter()
                .any(|hidden| name.eq_ignore_ascii_case(hidden));
        }
        if !skipping {
            kept.extend_from_slice(line);
        }
    }
    kept.extend_from_slice(body);
    kept
}

type Hook = Box<dyn Fn(SendStep) -> bool + Send + Sync>;

/// Sends the journal's drafts for one account.
pub struct Sender {
    server: ServerClient,
    /// The user's outgoing mail server, or why there is none to use.
    smtp: Result<SmtpSender, String>,
    imap: ImapAccount,
    state: Arc<AgentState>,
    email: String,
    /// The folder for sent messages; `None`: the one the mail server marks.
    sent_folder: Option<String>,
    /// One sending at a time in this process: the app's send button and
    /// the Outbox watcher share the journal.
    busy: Mutex<()>,
    hook: Option<Hook>,
}

impl Sender {
    pub fn new(
        server: ServerClient,
        smtp: Result<SmtpSender, String>,
        imap: ImapAccount,
        state: Arc<AgentState>,
        email: &str,
    ) -> Self {
        Self {
            server,
            smtp,
            imap,
            state,
            email: email.to_owned(),
            sent_folder: None,
            busy: Mutex::new(()),
            hook: None,
        }
    }

    pub fn with_sent_folder(mut self, folder: Option<String>) -> Self {
        self.sent_folder = folder;
        self
    }

    /// Calls `hook` after each step; sending stops there when it returns false.
    pub fn with_hook(mut self, hook: impl Fn(SendStep) -> bool + Send + Sync + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    fn step(&self, step: SendStep) -> Result<(), SendError> {
        crate::crash_point::reached("send", &step);
        match &self.hook {
            Some(hook) if !hook(step) => Err(SendError::Interrupted(step)),
            _ => Ok(()),
        }
    }

    pub fn state(&self) -> &Arc<AgentState> {
        &self.state
    }

    /// Writes `draft` to the journal; returns the entry's id.
    pub async fn queue(
        &self,
        draft: &Draft,
        source: Option<&DraftSource>,
    ) -> Result<i64, SendError> {
        let client_key = draft.client_key.clone().unwrap_or_else(new_client_key);
        let id = self
            .state
            .queue_outgoing(
                &NewOutgoing {
                    client_key: &client_key,
                    draft: &draft.raw,
                    subject: &draft.subject,
                    recipients: &draft.recipients,
                    expiry: draft.expiry,
                    source,
                },
                now_unix(),
            )
            .await?;
        self.step(SendStep::Queued)?;
        Ok(id)
    }

    /// Records an Outbox draft that cannot be sent at all (no recipient,
    /// not a message) as failed: it is flagged and the user told why.
    pub async fn reject(
        &self,
        session: &mut MailboxSession,
        raw: &[u8],
        subject: &str,
        source: &DraftSource,
        reason: &str,
    ) -> Result<(), SendError> {
        let new = NewOutgoing {
            client_key: &new_client_key(),
            draft: raw,
            subject,
            recipients: &[],
            expiry: ExpiryChoice::Default,
            source: Some(source),
        };
        let id = self.state.queue_outgoing(&new, now_unix()).await?;
        let Some(record) = self.state.outgoing(id).await? else { return Ok(()) };
        if record.state == OutgoingState::Queued {
            self.give_up(&record, reason, session).await?;
        }
        Ok(())
    }

    /// Sends (or resumes) every journal entry that is due, on a mailbox
    /// connection of its own when there is any; returns them as they ended up.
    pub async fn send_due(&self) -> Result<Vec<OutgoingRecord>, SendError> {
        let _busy = self.busy.lock().await;
        let due = self.state.due_outgoing(now_unix()).await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut session = MailboxSession::connect(&self.imap).await?;
        let outcome = self.process_all(&due, &mut session).await;
        session.logout().await;
        outcome
    }

    /// As [`Self::send_due`], on `session` (the Outbox watcher's).
    pub async fn send_due_on(
        &self,
        session: &mut MailboxSession,
    ) -> Result<Vec<OutgoingRecord>, SendError> {
        let _busy = self.busy.lock().await;
        let due = self.state.due_outgoing(now_unix()).await?;
        self.process_all(&due, session).await
    }

    async fn process_all(
        &self,
        due: &[i64],
        session: &mut MailboxSession,
    ) -> Result<Vec<OutgoingRecord>, SendError> {
        let mut done = Vec::with_capacity(due.len());
        for id in due {
            done.extend(self.process(*id, session).await?);
        }
        Ok(done)
    }

    /// Takes one entry as far as it goes now.
    async fn process(
        &self,
        id: i64,
        session: &mut MailboxSession,
    ) -> Result<Option<OutgoingRecord>, SendError> {
        let Some(record) = self.state.outgoing(id).await? else { return Ok(None) };
        if record.state != OutgoingState::Queued {
            return Ok(Some(record));
        }
        match self.advance(&record, session).await? {
            Progress::Done => {}
            Progress::Retry(reason) => self.retry_later(&record, &reason, session).await?,
            Progress::GiveUp(reason) => self.give_up(&record, &reason, session).await?,
        }
        self.state.outgoing(id).await.map_err(Into::into)
    }

    async fn advance(
        &self,
        record: &OutgoingRecord,
        session: &mut MailboxSession,
    ) -> Result<Progress, SendError> {
        let id = record.id;
        let Some(draft) = &record.draft else {
            return Ok(Progress::GiveUp("the draft is missing from the journal".into()));
        };
        let smtp = match &self.smtp {
            Ok(smtp) => smtp,
            Err(reason) => return Ok(Progress::GiveUp(reason.clone())),
        };

        let stored = match &record.stored {
            Some(stored) => stored.clone(),
            None => match self.upload(record, draft).await {
                Ok(stored) => {
                    self.state.record_stored(id, &stored, now_unix()).await?;
                    self.step(SendStep::Uploaded)?;
                    stored
                }
                Err(progress) => return Ok(progress),
            },
        };

        let headers = SenderHeaders::parse(draft, &self.email);
        let recipients: Vec<String> =
            record.recipients.iter().map(|r| r.recipient.clone()).collect();
        let domain = self.email.rsplit('@').next().unwrap_or("localhost");
        let envelope = EmailEnvelope::of_message(
            &headers,
            &self.email,
            None,
            &recipients,
            headers.date.unwrap_or_else(now_unix),
            format!("{}@{domain}", stored.message_id),
        );
        for recipient in
            record.recipients.iter().filter(|r| r.sent_at.is_none() && r.error.is_none())
        {
            let Some(issued) =
                stored.notifications.iter().find(|n| n.recipient == recipient.recipient)
            else {
                let reason = "the Sealpost server issued no notification for this address";
                let outcome = Err(reason);
                self.state.record_recipient(id, &recipient.recipient, outcome, now_unix()).await?;
                continue;
            };
            let email = compose_email(&envelope, issued);
            match smtp.send(&self.email, std::slice::from_ref(&recipient.recipient), &email).await {
                Ok(answer) => {
                    let outcome = Ok(answer.as_str());
                    self.state
                        .record_recipient(id, &recipient.recipient, outcome, now_unix())
                        .await?;
                    self.step(SendStep::Notified)?;
                }
                Err(error) if error.is_temporary() => {
                    return Ok(Progress::Retry(error.to_string()));
                }
                Err(error) if refuses_the_sender(&error) => {
                    return Ok(Progress::GiveUp(error.to_string()));
                }
                Err(error) => {
                    tracing::warn!(recipient = %recipient.recipient, %error, "a recipient was refused");
                    let outcome = Err(error.to_string());
                    let outcome = outcome.as_ref().map(String::as_str).map_err(String::as_str);
                    self.state
                        .record_recipient(id, &recipient.recipient, outcome, now_unix())
                        .await?;
                }
            }
        }
        let record = self.state.outgoing(id).await?.unwrap_or_else(|| record.clone());
        let notified: Vec<String> = record
            .recipients
            .iter()
            .filter(|r| r.sent_at.is_some())
            .map(|r| r.recipient.clone())
            .collect();
        if notified.is_empty() {
            return Ok(Progress::GiveUp(format!(
                "every recipient was refused: {}",
                refused_list(&record)
            )));
        }
        self.report_notified(&stored, &record, notified).await;

        if record.filed_at.is_none() {
            self.file_in_sent(session, &stored.message_id, draft, headers.date).await?;
            self.state.record_filed(id, now_unix()).await?;
            self.step(SendStep::Filed)?;
        }
        if let Some(source) = &record.source
            && record.source_removed_at.is_none()
        {
            let status = session.select_status(&source.folder).await?;
            // A folder recreated since holds other messages under the same UIDs.
            if status.uid_validity == source.uid_validity {
                session.remove(&[source.uid]).await?;
            }
            self.state.record_source_removed(id, now_unix()).await?;
            self.step(SendStep::SourceRemoved)?;
        }
        if record.recipients.iter().any(|r| r.error.is_some()) {
            let text = format!(
                "Your secure message \"{}\" was sent, but these recipients were refused and did not get it:\n\n{}\n\nCheck the addresses and send it to them again.",
                record.subject,
                refused_list(&record)
            );
            self.tell_user(session, &record, Notice::PartlyDelivered, &text, None).await?;
        }
        self.state.finish_outgoing(id, now_unix()).await?;
        tracing::info!(message_id = %stored.message_id, recipients = notified_count(&record), "secure message sent");
        Ok(Progress::Done)
    }

    async fn upload(
        &self,
        record: &OutgoingRecord,
        draft: &[u8],
    ) -> Result<StoredMessage, Progress> {
        let (expires_at, never_expires) = match record.expiry {
            ExpiryChoice::Default => (None, false),
            ExpiryChoice::Never => (None, true),
            ExpiryChoice::At(at) => (OffsetDateTime::from_unix_timestamp(at).ok(), false),
        };
        let metadata = UploadMetadata {
            recipients: record.recipients.iter().map(|r| r.recipient.clone()).collect(),
            send_notifications: false,
            expires_at,
            never_expires,
            client_key: Some(record.client_key.clone()),
        };
        let content = bytes::Bytes::from(without_hidden_fields(draft));
        self.server.upload(&metadata, content).await.map_err(|error| {
            if error.is_temporary() {
                Progress::Retry(error.to_string())
            } else {
                Progress::GiveUp(error.to_string())
            }
        })
    }

    /// Best effort: the slip shows these recipients notified. Sent again on
    /// every resumption, which the server takes once.
    async fn report_notified(
        &self,
        stored: &StoredMessage,
        record: &OutgoingRecord,
        notified: Vec<String>,
    ) {
        let relay_answer = record.recipients.iter().find_map(|r| r.relay_answer.clone());
        let report = SenderNotified { recipients: notified, relay_answer };
        if let Err(error) = self.server.report_notified(&stored.message_id, &report).await {
            tracing::warn!(message_id = %stored.message_id, %error, "could not tell the server who was notified; the delivery slip shows them later");
        }
    }

    /// APPENDs the real message to Sent, seen, unless a copy is there already.
    async fn file_in_sent(
        &self,
        session: &mut MailboxSession,
        message_id: &str,
        draft: &[u8],
        date: Option<i64>,
    ) -> Result<(), SendError> {
        let folder = match &self.sent_folder {
            Some(folder) => folder.clone(),
            None => session.special_folder(SpecialFolder::Sent).await?,
        };
        session.ensure_folder(&folder).await?;
        session.select(&folder).await?;
        let found = session.find_by_header(SENT_HEADER, &[message_id]).await?;
        if found.contains_key(message_id) {
            return Ok(());
        }
        let mut content = format!("{SENT_HEADER}: {message_id}\r\n").into_bytes();
        content.extend_from_slice(draft);
        let date = internal_date(date.unwrap_or_else(now_unix));
        let flags = ["\\Seen".to_owned()];
        let message = NewMessage { flags: &flags, internal_date: Some(&date), content: &content };
        session.append_all(&folder, &[message]).await?;
        Ok(())
    }

    async fn retry_later(
        &self,
        record: &OutgoingRecord,
        reason: &str,
        session: &mut MailboxSession,
    ) -> Result<(), SendError> {
        if record.attempts + 1 >= MAX_ATTEMPTS {
            let reason = format!("{reason} (gave up after {MAX_ATTEMPTS} attempts)");
            return self.give_up(record, &reason, session).await;
        }
        let pause = RETRY_FIRST.saturating_mul(1 << record.attempts.min(10)).min(RETRY_MAX);
        let now = now_unix();
        let retry_at = now + i64::try_from(pause.as_secs()).unwrap_or(i64::MAX);
        tracing::warn!(id = record.id, %reason, retry_in = ?pause, "a secure message could not be sent now; retrying");
        self.state.retry_outgoing_later(record.id, reason, retry_at, now).await?;
        Ok(())
    }

    /// Marks the entry failed (its draft kept), flags its Outbox draft and
    /// tells the user in the INBOX.
    async fn give_up(
        &self,
        record: &OutgoingRecord,
        reason: &str,
        session: &mut MailboxSession,
    ) -> Result<(), SendError> {
        tracing::error!(id = record.id, %reason, "a secure message could not be sent");
        self.state.fail_outgoing(record.id, reason, now_unix()).await?;
        let mut draft_attached = record.draft.as_deref();
        if let Some(source) = &record.source {
            let status = session.select_status(&source.folder).await?;
            if status.uid_validity == source.uid_validity {
                session.add_flags(&[source.uid], &["\\Flagged", FAILED_KEYWORD]).await?;
                // The draft stays in the Outbox, where the user can mend it.
                draft_attached = None;
            }
        }
        let text = format!(
            "Your secure message \"{}\" could not be sent:\n\n{reason}\n\n{}",
            record.subject,
            match (&record.source, draft_attached) {
                (Some(source), None) => format!(
                    "The draft is still in the folder \"{}\", flagged. Mend it and save it there again to retry.",
                    source.folder
                ),
                _ => "The draft is attached: open it to send it again.".to_owned(),
            }
        );
        self.tell_user(session, record, Notice::NotSent, &text, draft_attached).await
    }

    /// A short message in the INBOX about `record`, once.
    async fn tell_user(
        &self,
        session: &mut MailboxSession,
        record: &OutgoingRecord,
        notice: Notice,
        text: &str,
        draft: Option<&[u8]>,
    ) -> Result<(), SendError> {
        let (headline, kind) = match notice {
            Notice::NotSent => ("Not sent", "not-sent"),
            Notice::PartlyDelivered => ("Not delivered to everyone", "partly-delivered"),
        };
        // Found again by this header, so a resumed entry says nothing twice.
        let notice_key = format!("{}-{kind}", record.client_key);
        session.select("INBOX").await?;
        if session.find_by_header(NOTICE_HEADER, &[&notice_key]).await?.contains_key(&notice_key) {
            return Ok(());
        }
        let mut builder = MessageBuilder::new()
            .from(("Sealpost", self.email.as_str()))
            .to(self.email.as_str())
            .subject(format!("{headline}: {}", record.subject))
            .date(now_unix())
            .header(NOTICE_HEADER, Raw::new(notice_key))
            .header("Auto-Submitted", Raw::new("auto-generated"))
            .text_body(text);
        if let Some(draft) = draft {
            builder = builder.attachment("message/rfc822", "draft.eml", draft.to_vec());
        }
        let content =
            builder.write_to_vec().map_err(|error| SendError::Draft(error.to_string()))?;
        let message = NewMessage { flags: &[], internal_date: None, content: &content };
        session.append_all("INBOX", &[message]).await?;
        Ok(())
    }
}

/// A new message as the app's compose screen and `sealpost-agent send` take it.
#[derive(Debug, Clone, Default)]
pub struct NewDraft {
    /// The sender's own address, and the name shown with it.
    pub from: (Option<String>, String),
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    pub body: String,
    pub attachments: Vec<DraftAttachment>,
    /// The message this answers: its Message-ID and References, for threading.
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub expiry: ExpiryChoice,
}

#[derive(Debug, Clone)]
pub struct DraftAttachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl NewDraft {
    /// The draft's MIME, as a mail program would write it (Bcc included:
    /// it stays in the Sent copy, and is removed from what recipients get).
    pub fn write(&self) -> Result<Draft, SendError> {
        let domain = self.from.1.rsplit('@').next().unwrap_or("localhost");
        fn list(addresses: &[String]) -> Vec<&str> {
            addresses.iter().map(String::as_str).collect()
        }
        let mut builder = MessageBuilder::new()
            .from((self.from.0.clone().unwrap_or_default(), self.from.1.clone()))
            .subject(self.subject.clone())
            .date(now_unix())
            .message_id(format!("{}@{domain}", new_client_key()))
            .text_body(self.body.replace("\r\n", "\n"));
        if !self.to.is_empty() {
            builder = builder.to(list(&self.to));
        }
        if !self.cc.is_empty() {
            builder = builder.cc(list(&self.cc));
        }
        if !self.bcc.is_empty() {
            builder = builder.bcc(list(&self.bcc));
        }
        if let Some(parent) = &self.in_reply_to {
            builder = builder.in_reply_to(bare_id(parent));
        }
        if !self.references.is_empty() {
            builder = builder
                .references(self.references.iter().map(|id| bare_id(id)).collect::<Vec<_>>());
        }
        match self.expiry {
            ExpiryChoice::Default => {}
            ExpiryChoice::Never => builder = builder.header(EXPIRES_HEADER, Raw::new("never")),
            ExpiryChoice::At(at) => {
                builder = builder.header(EXPIRES_HEADER, Raw::new(at.to_string()))
            }
        }
        for attachment in &self.attachments {
            builder = builder.attachment(
                attachment.content_type.clone(),
                attachment.name.clone(),
                attachment.bytes.clone(),
            );
        }
        let raw = builder.write_to_vec().map_err(|error| SendError::Draft(error.to_string()))?;
        Draft::parse(raw)
    }
}

/// How a draft answers a secure message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Reply,
    ReplyAll,
    /// With the original's attachments.
    Forward,
}

impl NewDraft {
    /// A draft from `me` answering `raw`, a secure message in the mailbox:
    /// to its sender (its recipients, when `me` sent it), with `Re:`, the
    /// quote and the threading; for [`Answer::ReplyAll`] its other
    /// recipients in Cc; a forward has `Fwd:`, the original below and its
    /// attachments, and no recipient yet.
    pub fn answering(raw: &[u8], me: &str, answer: Answer) -> Self {
        let me = me.trim().to_lowercase();
        let from = (None, me.clone());
        if answer == Answer::Forward {
            let context = sealpost_reader::forward_context(raw);
            let opened = sealpost_reader::OpenedMessage::parse(raw);
            let attachments = opened
                .attachments
                .iter()
                .filter_map(|info| sealpost_reader::attachment(raw, info.index))
                .map(|attachment| DraftAttachment {
                    name: match sealpost_reader::safe_file_name(&attachment.name) {
                        name if name.is_empty() => "attachment".to_owned(),
                        name => name,
                    },
                    content_type: attachment.content_type,
                    bytes: attachment.bytes,
                })
                .collect();
            return Self {
                from,
                subject: context.subject,
                body: format!("\n\n{}", context.text),
                references: context.references,
                attachments,
                ..Self::default()
            };
        }
        let context = sealpost_reader::reply_context(raw);
        let to: Vec<String> = if context.from.contains(&me) {
            context.to.iter().filter(|address| **address != me).cloned().collect()
        } else {
            context.from.clone()
        };
        let mut cc: Vec<String> = Vec::new();
        if answer == Answer::ReplyAll {
            for address in context.to.iter().chain(&context.cc) {
                if *address != me && !to.contains(address) && !cc.contains(address) {
                    cc.push(address.clone());
                }
            }
        }
        Self {
            from,
            to,
            cc,
            subject: context.subject,
            body: format!("\n\n{}", context.quoted),
            in_reply_to: context.message_id,
            references: context.references,
            ..Self::default()
        }
    }
}

fn bare_id(id: &str) -> String {
    id.trim().trim_start_matches('<').trim_end_matches('>').to_owned()
}

/// Hands `draft` to the agent that holds this mailbox (the desktop app or
/// the service) through the Outbox folder, as a mail program would, with a
/// client key by which [`AgentState::outgoing_by_client_key`] follows it.
/// Returns that key.
pub async fn hand_over(
    account: &ImapAccount,
    outbox_folder: &str,
    draft: &Draft,
) -> Result<String, SendError> {
    let key = draft.client_key.clone().unwrap_or_else(new_client_key);
    let mut content = format!("{CLIENT_KEY_HEADER}: {key}\r\n").into_bytes();
    content.extend_from_slice(&draft.raw);
    let mut session = MailboxSession::connect(account).await?;
    let outcome = async {
        session.ensure_folder(outbox_folder).await?;
        let message = NewMessage { flags: &[], internal_date: None, content: &content };
        session.append_all(outbox_folder, &[message]).await
    }
    .await;
    session.logout().await;
    outcome?;
    Ok(key)
}

/// What a message to the user about an entry says.
#[derive(Debug, Clone, Copy)]
enum Notice {
    NotSent,
    PartlyDelivered,
}

/// Where one attempt left an entry.
enum Progress {
    Done,
    Retry(String),
    GiveUp(String),
}

/// A refusal of the sender rather than of a recipient: the login, or the
/// sender's own address.
fn refuses_the_sender(error: &SmtpError) -> bool {
    match error {
        SmtpError::Setup { .. } => true,
        SmtpError::Permanent { reason, .. } => {
            ["530", "534", "535", "538"].iter().any(|code| reason.contains(code))
        }
        SmtpError::Temporary { .. } => false,
    }
}

fn refused_list(record: &OutgoingRecord) -> String {
    record
        .recipients
        .iter()
        .filter_map(|r| r.error.as_ref().map(|error| format!("- {}: {error}", r.recipient)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn notified_count(record: &OutgoingRecord) -> usize {
    record.recipients.iter().filter(|r| r.sent_at.is_some()).count()
}

/// 128 random bits, hex: the upload's client key.
pub fn new_client_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Unix seconds as APPEND's date-time (`"29-Nov-2026 16:05:00 +0000"`).
fn internal_date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%d-%b-%Y %H:%M:%S +0000")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAFT: &[u8] = b"From: Sam <sam@clinic.example>\r\nTo: Pat <pat@patients.example>\r\n\
Bcc: hidden@patients.example,\r\n other@patients.example\r\nCc: lee@patients.example\r\n\
X-Sealpost-Client-Key: k1\r\nSubject: Results\r\n\r\nBcc: not a header\r\n";

    #[test]
    fn a_draft_names_everyone_it_goes_to() {
        let draft = Draft::parse(DRAFT.to_vec()).expect("a draft");
        assert_eq!(
            draft.recipients,
            [
                "pat@patients.example",
                "lee@patients.example",
                "hidden@patients.example",
                "other@patients.example"
            ]
        );
        assert_eq!(draft.subject, "Results");
        assert_eq!(draft.client_key.as_deref(), Some("k1"));
        let error = Draft::parse(b"Subject: x\r\n\r\nbody".to_vec()).expect_err("no recipient");
        assert!(error.to_string().contains("no recipient"), "{error}");
    }

    #[test]
    fn recipients_never_see_bcc_or_the_hand_over_key() {
        let shown = String::from_utf8(without_hidden_fields(DRAFT)).expect("text");
        assert!(!shown.contains("hidden@") && !shown.contains("other@"), "{shown}");
        assert!(!shown.contains("X-Sealpost-Client-Key"), "{shown}");
        assert!(shown.contains("Cc: lee@patients.example\r\n"), "{shown}");
        assert!(shown.ends_with("\r\n\r\nBcc: not a header\r\n"), "the body is untouched: {shown}");
    }

    const ORIGINAL: &[u8] = b"From: Dr Lee <lee@clinic.example>\r\nTo: Pat <pat@patients.example>, \
sam@patients.example\r\nCc: desk@clinic.example\r\nSubject: Results\r\nMessage-ID: <r1@clinic.example>\r\n\
References: <r0@clinic.example>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nAll normal.\r\n\
--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=r.pdf\r\n\r\n%PDF\r\n--b--\r\n";

    #[test]
    fn replies_go_to_the_conversation_and_thread_under_the_original() {
        let reply = NewDraft::answering(ORIGINAL, "Pat@Patients.example", Answer::Reply);
        assert_eq!(reply.to, ["lee@clinic.example"]);
        assert!(reply.cc.is_empty());
        assert_eq!(reply.subject, "Re: Results");
        assert_eq!(reply.in_reply_to.as_deref(), Some("r1@clinic.example"));
        assert_eq!(reply.references, ["r0@clinic.example", "r1@clinic.example"]);
        assert!(reply.body.contains("> All normal."), "{}", reply.body);
        let all = NewDraft::answering(ORIGINAL, "pat@patients.example", Answer::ReplyAll);
        assert_eq!(all.cc, ["sam@patients.example", "desk@clinic.example"]);
        // Answering one's own message goes to its recipients.
        let own = NewDraft::answering(ORIGINAL, "lee@clinic.example", Answer::Reply);
        assert_eq!(own.to, ["pat@patients.example", "sam@patients.example"]);
    }

    #[test]
    fn a_forward_carries_the_text_and_the_attachments() {
        let forward = NewDraft::answering(ORIGINAL, "pat@patients.example", Answer::Forward);
        assert!(forward.to.is_empty());
        assert_eq!(forward.subject, "Fwd: Results");
        assert!(forward.body.contains("Forwarded message") && forward.body.contains("All normal."));
        assert_eq!(forward.attachments.len(), 1);
        assert_eq!(forward.attachments[0].name, "r.pdf");
        assert_eq!(forward.in_reply_to, None);
        assert_eq!(forward.references, ["r0@clinic.example", "r1@clinic.example"]);
    }

    #[test]
    fn append_dates_are_in_the_imap_form() {
        assert_eq!(internal_date(1_796_918_400), "10-Dec-2026 16:00:00 +0000");
    }
}
