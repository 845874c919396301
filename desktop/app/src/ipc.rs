//! What crosses between the window and the Rust side: the commands'
//! arguments, answers and errors. The TypeScript declarations in
//! `ui/src/lib/ipc-types.ts` are generated from these types (see
//! [`typescript`]) and a test fails when they fall behind. No secret is
//! ever part of an answer: the password only travels inward, in
//! [`RegisterForm`].

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Every command fails with this: a stable code the window can act on, and a
/// sentence for the person that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct IpcError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The computer is not registered yet: show the wizard.
    NotRegistered,
    /// The Sealpost server or the mailbox could not be found.
    Discovery,
    /// The mailbox refused the login or could not be reached.
    Mailbox,
    /// The Sealpost server refused or could not be reached.
    Server,
    /// The system keyring is missing or locked.
    Keyring,
    /// The verification email did not arrive in time.
    CodeTimeout,
    /// Another Sealpost agent watches this mailbox.
    AlreadyRunning,
    /// The IT policy file cannot be used.
    Policy,
    /// The message is no longer where the index says.
    Gone,
    /// The input was not usable; the message says which field.
    Invalid,
    /// The message could not be sent; the draft is kept.
    NotSent,
    /// Anything else; the message and the log say more.
    Internal,
}

impl IpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// What the window needs first: which screen to show.
#[derive(Debug, Clone, Serialize, TS)]
pub struct Overview {
    pub registered: bool,
    pub preset: Preset,
    /// From a `sealpost://register?…` link: fills in the wizard.
    pub prefill: Option<Prefill>,
}

/// What a `sealpost://register?email=…&server=…` link fills in; the person
/// still reviews it and types the password.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, TS)]
pub struct Prefill {
    pub email: Option<String>,
    pub server: Option<String>,
}

/// The settings IT preset in the policy file: shown as set by the
/// organization, never editable.
#[derive(Debug, Clone, Default, Serialize, TS)]
pub struct Preset {
    pub server_url: Option<String>,
    pub folders: Option<Vec<String>>,
    /// The policy file they come from.
    pub source: Option<String>,
}

#[derive(Debug, Clone, Deserialize, TS)]
pub struct RegisterForm {
    pub email: String,
    pub password: String,
    /// Only when no policy presets one; otherwise found from the address.
    pub server: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum RegisterStepKind {
    Discovering,
    Discovered,
    MailboxLogin,
    RequestingCode,
    WaitingForCode,
    Enrolling,
    StoringSecrets,
}

/// Sent as each registration step starts.
#[derive(Debug, Clone, Serialize, TS)]
pub struct RegisterProgress {
    pub step: RegisterStepKind,
    /// For `discovered`: where the server and the mailbox were found.
    pub detail: Option<String>,
    /// Since the registration began.
    #[ts(type = "number")]
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize, TS)]
pub struct Registration {
    pub email: String,
    pub server: String,
    #[ts(type = "number")]
    pub elapsed_ms: u64,
}

/// The Status screen.
#[derive(Debug, Clone, Serialize, TS)]
pub struct StatusView {
    pub email: String,
    pub server: String,
    /// Every watched folder has a live connection.
    pub connected: bool,
    /// Who watches the mailbox: this app, another agent (the service), or
    /// nobody, with the reason.
    pub watcher: Watcher,
    pub folders: Vec<FolderView>,
    #[ts(type = "number")]
    pub swapped_total: u64,
    /// Newest first.
    pub recent: Vec<RecentMessage>,
    /// Placeholders the agent keeps retrying.
    pub pending: Vec<KeptView>,
    /// Placeholders that will not be swapped, with the reason.
    pub failed: Vec<KeptView>,
    /// Notifications left alone as possible phishing.
    pub rejected: u32,
    #[ts(type = "number")]
    pub indexed: u64,
    /// Secure messages on their way out.
    #[ts(type = "number")]
    pub sending: u64,
    /// The newest that could not be sent, with the reason (the Sent screen
    /// has them all); and how many there are.
    pub not_sent: Vec<NotSentView>,
    #[ts(type = "number")]
    pub not_sent_total: u64,
    /// Drafts saved or moved here by any mail program are sent securely.
    pub outbox_folder: String,
}

/// A secure message that could not be sent.
#[derive(Debug, Clone, Serialize, TS)]
pub struct NotSentView {
    pub subject: String,
    pub reason: String,
    #[ts(type = "number")]
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Watcher {
    ThisApp,
    /// The headless agent (or another copy of the app) holds the mailbox's lock.
    OtherAgent,
    /// Paused from the tray until resumed.
    Paused,
    Stopped {
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize, TS)]
pub struct FolderView {
    pub name: String,
    /// `connected`, `reconnecting` or `not watched`.
    pub state: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, TS)]
pub struct RecentMessage {
    pub message_id: String,
    pub folder: String,
    pub subject: String,
    pub sender: String,
    #[ts(type = "number")]
    pub swapped_at: i64,
}

#[derive(Debug, Clone, Serialize, TS)]
pub struct KeptView {
    pub message_id: String,
    pub folder: String,
    pub uid: u32,
    pub reason: String,
    pub attempts: u32,
}

#[derive(Debug, Clone, Serialize, TS)]
pub struct SearchResult {
    pub message_id: String,
    pub folder: String,
    pub uid: u32,
    pub sender: String,
    pub subject: String,
    /// Seconds since the Unix epoch.
    #[ts(type = "number | null")]
    pub date: Option<i64>,
    /// The text around the match, in order; matched words have `matched`.
    pub snippet: Vec<SnippetPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct SnippetPart {
    pub text: String,
    pub matched: bool,
}

/// One message opened from the search results.
#[derive(Debug, Clone, Serialize, TS)]
pub struct MessageView {
    pub message_id: String,
    pub folder: String,
    pub subject: String,
    pub from: String,
    pub to: String,
    pub cc: String,
    #[ts(type = "number | null")]
    pub date: Option<i64>,
    pub body: MessageBody,
    pub attachments: Vec<AttachmentView>,
}

/// HTML goes into a sandboxed frame and is sanitized before it leaves Rust;
/// text is shown as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(tag = "kind", content = "content", rename_all = "snake_case")]
pub enum MessageBody {
    Html(String),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct AttachmentView {
    /// What `save_attachment` takes.
    pub index: u32,
    pub name: String,
    pub content_type: String,
    pub size: u32,
}

/// Where `save_attachment` put the file.
#[derive(Debug, Clone, Serialize, TS)]
pub struct SavedAttachment {
    pub path: String,
}

/// The Settings screen.
#[derive(Debug, Clone, Serialize, TS)]
pub struct SettingsView {
    pub email: String,
    pub device_name: String,
    /// The folders watched now.
    pub folders: Vec<String>,
    /// The IT policy decides the folders: shown, not editable.
    pub folders_locked: bool,
    pub notifications: bool,
    /// The IT policy decides `notifications`.
    pub notifications_locked: bool,
    /// Starts with the desktop session.
    pub autostart: bool,
    /// The IT policy decides `autostart`.
    pub autostart_locked: bool,
    /// Every value the IT policy sets, shown as set by the organization.
    pub policy: Vec<PolicyValue>,
    /// The policy file, when there is one.
    pub policy_source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct PolicyValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize, TS)]
pub struct SettingsChange {
    /// Only when the policy does not decide them; at least one.
    pub folders: Option<Vec<String>>,
    pub notifications: Option<bool>,
    pub autostart: Option<bool>,
}

#[derive(Debug, Clone, Serialize, TS)]
pub struct SignOutResult {
    pub email: String,
    /// False when only this computer forgot the registration.
    pub revoked_on_server: bool,
}

/// The compose screen's form. Addresses are as typed: separated by commas
/// or semicolons, `Name <address>` accepted.
#[derive(Debug, Clone, Deserialize, TS)]
pub struct ComposeForm {
    pub to: String,
    pub cc: String,
    pub bcc: String,
    pub subject: String,
    pub body: String,
    pub attachments: Vec<AttachmentUpload>,
    /// Days until nobody can open it; `None`: the organization's choice.
    pub expires_in_days: Option<u32>,
    /// Readable until recalled, whatever the organization's default.
    pub never_expires: bool,
    /// The secure message this answers, for threading.
    pub reply_to: Option<ReplyTarget>,
    /// The secure message this forwards: its attachments go along.
    pub forward_of: Option<ReplyTarget>,
}

/// A file the person chose, read by the window.
#[derive(Debug, Clone, Deserialize, TS)]
pub struct AttachmentUpload {
    pub name: String,
    pub content_type: String,
    /// The bytes in standard base64.
    pub data_base64: String,
}

/// A swapped message, as the reader knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct ReplyTarget {
    pub message_id: String,
    pub folder: String,
}

/// A reply prefilled from the message it answers.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ComposeDraft {
    pub to: String,
    pub cc: String,
    pub subject: String,
    /// The original, quoted, below an empty line for the answer.
    pub body: String,
    pub reply_to: Option<ReplyTarget>,
    /// For a forward: the original, whose attachments go along.
    pub forward_of: Option<ReplyTarget>,
    /// The names of those attachments, to show.
    pub forwarded_attachments: Vec<String>,
}

/// A secure message sent from this computer, as the journal has it.
#[derive(Debug, Clone, Serialize, TS)]
pub struct SentView {
    /// The Sealpost id, once the server stored it.
    pub message_id: Option<String>,
    pub subject: String,
    /// `sending`, `retrying`, `sent`, `failed`, or `handed_over` (the
    /// service sends it and has not finished yet).
    pub state: String,
    /// Why it failed, or why the last attempt stopped.
    pub error: Option<String>,
    #[ts(type = "number")]
    pub created_at: i64,
    #[ts(type = "number | null")]
    pub retry_at: Option<i64>,
    pub recipients: Vec<SentRecipient>,
}

#[derive(Debug, Clone, Serialize, TS)]
pub struct SentRecipient {
    pub address: String,
    #[ts(type = "number | null")]
    pub notified_at: Option<i64>,
    pub error: Option<String>,
}

/// The server's delivery slip of a sent message.
#[derive(Debug, Clone, Serialize, TS)]
pub struct SlipView {
    pub message_id: String,
    #[ts(type = "number | null")]
    pub recalled_at: Option<i64>,
    #[ts(type = "number | null")]
    pub expires_at: Option<i64>,
    pub recipients: Vec<SlipLine>,
}

#[derive(Debug, Clone, Serialize, TS)]
pub struct SlipLine {
    pub address: String,
    /// `waiting`, `queued`, `notified`, `failed`, `bounced` or `retrieved`.
    pub state: String,
    #[ts(type = "number | null")]
    pub notified_at: Option<i64>,
    #[ts(type = "number | null")]
    pub retrieved_at: Option<i64>,
    /// `desktop app` or `Secure Message Center`.
    pub retrieved_with: Option<String>,
    #[ts(type = "number | null")]
    pub replied_at: Option<i64>,
    pub error: Option<String>,
}

/// The TypeScript declarations of every type above, as checked in.
pub fn typescript() -> String {
    let declarations = [
        IpcError::decl(),
        ErrorCode::decl(),
        Overview::decl(),
        Prefill::decl(),
        Preset::decl(),
        RegisterForm::decl(),
        RegisterStepKind::decl(),
        RegisterProgress::decl(),
        Registration::decl(),
        StatusView::decl(),
        Watcher::decl(),
        FolderView::decl(),
        RecentMessage::decl(),
        KeptView::decl(),
        SearchResult::decl(),
        SnippetPart::decl(),
        MessageView::decl(),
        MessageBody::decl(),
        AttachmentView::decl(),
        SavedAttachment::decl(),
        SettingsView::decl(),
        PolicyValue::decl(),
        SettingsChange::decl(),
        SignOutResult::decl(),
        ComposeForm::decl(),
        AttachmentUpload::decl(),
        ReplyTarget::decl(),
        ComposeDraft::decl(),
        SentView::decl(),
        NotSentView::decl(),
        SentRecipient::decl(),
        SlipView::decl(),
        SlipLine::decl(),
    ];
    let mut out = String::from(
        "// Generated from desktop/app/src/ipc.rs by `cargo xtask ipc-types`; do not edit.\n",
    );
    for declaration in declarations {
        out.push_str("\nexport ");
        out.push_str(&declaration);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Set to rewrite the checked-in declarations instead of comparing.
    const WRITE_ENV: &str = "SEALPOST_WRITE_IPC_TYPES";

    #[test]
    fn the_typescript_declarations_are_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/src/lib/ipc-types.ts");
        let generated = super::typescript();
        if std::env::var_os(WRITE_ENV).is_some() {
            std::fs::write(&path, &generated).expect("write the declarations");
            return;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "ui/src/lib/ipc-types.ts is out of date with desktop/app/src/ipc.rs: run `cargo xtask ipc-types`"
        );
    }
}
