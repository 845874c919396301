//! The commands the window calls. Each turns the agent library's answer
//! into an [`ipc`](crate::ipc) type and every failure into an [`IpcError`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sealpost_agent::config::ConfigError;
use sealpost_agent::discover::DiscoveryRequest;
use sealpost_agent::index::{IndexError, SnippetPiece};
use sealpost_agent::policy::{Policy, PolicyError};
use sealpost_agent::reader::{self, Body, OpenedMessage, ReadError};
use sealpost_agent::register::{
    CODE_WAIT, RegisterError, RegisterRequest, RegisterStep, TrustedCa, default_device_name,
    register as register_computer,
};
use sealpost_agent::secrets::SecretError;
use sealpost_agent::signout::{SignOutError, SignOutScope};
use sealpost_agent::state::KeptRecord;
use sealpost_agent::{
    AgentConfig, AgentError, AgentState, ImapError, MailboxSession, Secrets, Status,
};
use sealpost_proto::api::{MailEndpoint, MailSecurity};
use tauri::ipc::Channel;
use tauri::{AppHandle, State};
use tauri_plugin_autostart::ManagerExt;

use crate::ipc::{
    AttachmentView, ErrorCode, FolderView, IpcError, KeptView, MessageBody, MessageView,
    NotSentView, Overview, PolicyValue, Preset, RecentMessage, RegisterForm, RegisterProgress,
    RegisterStepKind, Registration, SavedAttachment, SearchResult, SettingsChange, SettingsView,
    SignOutResult, SnippetPart, StatusView, Watcher,
};
use crate::shell::{Preferences, Shell};

/// Search answers at most this many results, whatever the window asks.
const SEARCH_LIMIT_MAX: u32 = 200;

#[tauri::command]
pub async fn overview(shell: State<'_, Shell>) -> Result<Overview, IpcError> {
    overview_of(&shell)
}

fn overview_of(shell: &Shell) -> Result<Overview, IpcError> {
    let policy = Policy::load_system()?;
    Ok(Overview {
        registered: shell.registered(),
        preset: preset(policy.as_ref()),
        prefill: shell.prefill(),
    })
}

fn preset(policy: Option<&Policy>) -> Preset {
    let Some(policy) = policy else { return Preset::default() };
    Preset {
        server_url: policy.server_url.clone(),
        folders: policy.folders.clone(),
        source: Some(policy.origin.clone()),
    }
}

#[tauri::command]
pub async fn status(shell: State<'_, Shell>) -> Result<StatusView, IpcError> {
    status_of(&shell).await
}

pub(crate) async fn status_of(shell: &Shell) -> Result<StatusView, IpcError> {
    // Checked first: the index would otherwise be created for nobody.
    if !shell.registered() {
        return Err(
            AgentError::from(ConfigError::NotRegistered(shell.paths().config_file())).into()
        );
    }
    let index = shell.index().await?;
    let status = Status::read_with_index(shell.paths(), Some(&index)).await?;
    let ids: Vec<&str> = status.recent.iter().map(|swap| swap.message_id.as_str()).collect();
    let mut described = index.describe(&ids).await?;
    let connected_folders: HashMap<&str, _> = status
        .connections
        .iter()
        .map(|connection| (connection.folder.as_str(), connection))
        .collect();
    let folders: Vec<FolderView> = status
        .folders
        .iter()
        .map(|name| match connected_folders.get(name.as_str()) {
            Some(connection) => FolderView {
                name: name.clone(),
                state: connection.state.clone(),
                detail: connection.detail.clone(),
            },
            None => FolderView { name: name.clone(), state: "not watched".into(), detail: None },
        })
        .collect();
    let connected = status.running && folders.iter().all(|folder| folder.state == "connected");
    let recent = status
        .recent
        .iter()
        .map(|swap| {
            let (sender, subject) = described.remove(&swap.message_id).unwrap_or_default();
            RecentMessage {
                message_id: swap.message_id.clone(),
                folder: swap.folder.clone(),
                subject,
                sender,
                swapped_at: swap.swapped_at,
            }
        })
        .collect();
    Ok(StatusView {
        email: status.email,
        server: status.server,
        connected,
        watcher: shell.watcher(),
        folders,
        swapped_total: status.swapped_total,
        recent,
        pending: status.pending.iter().map(kept_view).collect(),
        failed: status.failed.iter().map(kept_view).collect(),
        rejected: u32::try_from(status.rejected.len()).unwrap_or(u32::MAX),
        indexed: status.indexed,
        sending: status.sending,
        not_sent: status
            .not_sent
            .iter()
            .map(|record| NotSentView {
                subject: record.subject.clone(),
                reason: record.error.clone().unwrap_or_default(),
                at: record.updated_at,
            })
            .collect(),
        not_sent_total: status.not_sent_total,
        outbox_folder: status.outbox_folder,
    })
}

/// Pauses or resumes watching (the Status screen's button; the tray's
/// menu does the same).
#[tauri::command]
pub async fn set_paused(shell: State<'_, Shell>, paused: bool) -> Result<(), IpcError> {
    if shell.watcher() == Watcher::OtherAgent {
        return Err(IpcError::new(
            ErrorCode::AlreadyRunning,
            "The Sealpost service on this computer watches the mailbox; it is paused by stopping the service.",
        ));
    }
    shell.set_paused(paused).await;
    Ok(())
}

/// Tries a kept placeholder again now (the Status screen's Retry).
#[tauri::command]
pub async fn retry(shell: State<'_, Shell>, folder: String, uid: u32) -> Result<(), IpcError> {
    retry_in(&shell, &folder, uid).await
}

async fn retry_in(shell: &Shell, folder: &str, uid: u32) -> Result<(), IpcError> {
    if shell.watcher() == Watcher::OtherAgent {
        return Err(IpcError::new(
            ErrorCode::AlreadyRunning,
            "The Sealpost service on this computer watches the mailbox and retries on its own; restart the service to retry now.",
        ));
    }
    let state = AgentState::open(&shell.paths().state_db()).await.map_err(AgentError::from)?;
    let found = state.retry_kept(folder, uid).await.map_err(AgentError::from)?;
    if !found {
        return Err(IpcError::new(
            ErrorCode::Gone,
            format!(
                "Nothing is waiting in {folder} as #{uid} any more; it may have been opened meanwhile."
            ),
        ));
    }
    if shell.paused() {
        return Err(IpcError::new(
            ErrorCode::Invalid,
            "Watching is paused: choose Resume watching (on the Status screen or in the tray menu) to retry.",
        ));
    }
    // A new watcher starts with a pass from the cursor, which now includes it.
    shell.restart_watching().await;
    Ok(())
}

fn kept_view(kept: &KeptRecord) -> KeptView {
    KeptView {
        message_id: kept.message_id.clone(),
        folder: kept.folder.clone(),
        uid: kept.uid,
        reason: kept.reason.clone(),
        attempts: kept.attempts,
    }
}

#[tauri::command]
pub async fn register(
    shell: State<'_, Shell>,
    form: RegisterForm,
    on_progress: Channel<RegisterProgress>,
) -> Result<Registration, IpcError> {
    let started = Instant::now();
    let email = form.email.trim().to_owned();
    if email.is_empty() || !email.contains('@') {
        return Err(IpcError::new(
            ErrorCode::Invalid,
            "Enter your whole email address, like name@example.org.",
        ));
    }
    if form.password.is_empty() {
        return Err(IpcError::new(ErrorCode::Invalid, "Enter your mailbox password."));
    }
    let policy = Policy::load_system()?;
    let trusted = TrustedCa::choose(None, policy.as_ref())?;
    // Checked first: without a keyring nothing can be kept, so nothing is asked of the server.
    let secrets = Secrets::os_keyring(&email).await?;
    secrets.check_writable().await?;
    let server =
        form.server.map(|server| server.trim().to_owned()).filter(|server| !server.is_empty());
    let request = RegisterRequest {
        discovery: DiscoveryRequest {
            email,
            server_url: server,
            imap: None,
            smtp: None,
            policy,
            ca_pem: trusted.as_ref().map(|ca| ca.pem.clone()),
            resolve: Vec::new(),
        },
        password: form.password,
        device_name: default_device_name("Sealpost app"),
        folders: None,
        ca_file: trusted.map(|ca| ca.path),
        code_wait: CODE_WAIT,
    };
    let registered = register_computer(shell.paths(), &secrets, request, &|step| {
        let _ = on_progress.send(progress(step, started.elapsed()));
    })
    .await?;
    let shell = shell.inner().clone();
    tauri::async_runtime::spawn(async move { shell.start_watching().await });
    Ok(Registration {
        email: registered.config.email,
        server: registered.config.server.url,
        elapsed_ms: millis(registered.elapsed),
    })
}

fn progress(step: &RegisterStep, elapsed: Duration) -> RegisterProgress {
    let (step, detail) = match step {
        RegisterStep::Discovering => (RegisterStepKind::Discovering, None),
        RegisterStep::Discovered { server, imap } => {
            (RegisterStepKind::Discovered, Some(format!("server {server}, mailbox {imap}")))
        }
        RegisterStep::MailboxLogin => (RegisterStepKind::MailboxLogin, None),
        RegisterStep::RequestingCode => (RegisterStepKind::RequestingCode, None),
        RegisterStep::WaitingForCode => (RegisterStepKind::WaitingForCode, None),
        RegisterStep::Enrolling => (RegisterStepKind::Enrolling, None),
        RegisterStep::StoringSecrets => (RegisterStepKind::StoringSecrets, None),
    };
    RegisterProgress { step, detail, elapsed_ms: millis(elapsed) }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[tauri::command]
pub async fn search(
    shell: State<'_, Shell>,
    query: String,
    limit: u32,
) -> Result<Vec<SearchResult>, IpcError> {
    search_in(&shell, &query, limit).await
}

async fn search_in(shell: &Shell, query: &str, limit: u32) -> Result<Vec<SearchResult>, IpcError> {
    let index = shell.index().await?;
    let hits = index.search(query, limit.clamp(1, SEARCH_LIMIT_MAX)).await?;
    Ok(hits
        .into_iter()
        .map(|hit| SearchResult {
            snippet: hit
                .snippet_pieces()
                .into_iter()
                .map(|piece| match piece {
                    SnippetPiece::Text(text) => {
                        SnippetPart { text: text.to_owned(), matched: false }
                    }
                    SnippetPiece::Match(text) => {
                        SnippetPart { text: text.to_owned(), matched: true }
                    }
                })
                .collect(),
            message_id: hit.message_id,
            folder: hit.folder,
            uid: hit.uid,
            sender: hit.sender,
            subject: hit.subject,
            date: hit.date,
        })
        .collect())
}

#[tauri::command]
pub async fn open_message(
    shell: State<'_, Shell>,
    message_id: String,
    folder: String,
) -> Result<MessageView, IpcError> {
    let raw = swapped_message(&shell, &folder, &message_id).await?;
    Ok(message_view(message_id, folder, &raw))
}

/// The raw message swapped in for `message_id`, from the registered mailbox.
pub(crate) async fn swapped_message(
    shell: &Shell,
    folder: &str,
    message_id: &str,
) -> Result<Vec<u8>, IpcError> {
    Ok(reader::fetch(&shell.mailbox_account().await?, folder, message_id).await?)
}

fn message_view(message_id: String, folder: String, raw: &[u8]) -> MessageView {
    let opened = OpenedMessage::parse(raw);
    MessageView {
        message_id,
        folder,
        subject: opened.subject,
        from: opened.from,
        to: opened.to,
        cc: opened.cc,
        date: opened.date,
        body: match opened.body {
            Body::Html(html) => MessageBody::Html(html),
            Body::Text(text) => MessageBody::Text(text),
        },
        attachments: opened
            .attachments
            .into_iter()
            .map(|attachment| AttachmentView {
                index: u32::try_from(attachment.index).unwrap_or(u32::MAX),
                name: attachment.name,
                content_type: attachment.content_type,
                size: u32::try_from(attachment.size).unwrap_or(u32::MAX),
            })
            .collect(),
    }
}

/// Saves an attachment in the Downloads folder, never over another file.
#[tauri::command]
pub async fn save_attachment(
    shell: State<'_, Shell>,
    message_id: String,
    folder: String,
    index: u32,
) -> Result<SavedAttachment, IpcError> {
    sealpost_agent::ensure_local_copies_allowed()?;
    let raw = swapped_message(&shell, &folder, &message_id).await?;
    let dir = downloads_dir().ok_or_else(|| {
        IpcError::new(ErrorCode::Internal, "There is no Downloads or home folder to save into.")
    })?;
    let index = usize::try_from(index).unwrap_or(usize::MAX);
    let path =
        tauri::async_runtime::spawn_blocking(move || reader::save_attachment(&raw, index, &dir))
            .await
            .map_err(|error| IpcError::new(ErrorCode::Internal, sentence(&error)))??;
    Ok(SavedAttachment { path: path.display().to_string() })
}

/// `SEALPOST_DOWNLOAD_DIR` when set (tests, managed desktops), else the
/// user's Downloads folder, else the home folder.
fn downloads_dir() -> Option<PathBuf> {
    std::env::var_os("SEALPOST_DOWNLOAD_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(dirs::download_dir)
        .or_else(dirs::home_dir)
}

#[tauri::command]
pub async fn settings(shell: State<'_, Shell>, app: AppHandle) -> Result<SettingsView, IpcError> {
    let policy = Policy::load_system()?;
    settings_of(&shell, autostart_enabled(&app), policy.as_ref())
}

fn autostart_enabled(app: &AppHandle) -> bool {
    app.autolaunch().is_enabled().unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot tell whether the app starts at login");
        false
    })
}

fn settings_of(
    shell: &Shell,
    autostart: bool,
    policy: Option<&Policy>,
) -> Result<SettingsView, IpcError> {
    let mut config = AgentConfig::load(shell.paths()).map_err(AgentError::from)?;
    if let Some(policy) = policy {
        policy.apply(&mut config);
    }
    Ok(SettingsView {
        email: config.email,
        device_name: config.device_name,
        folders: config.folders,
        folders_locked: policy.is_some_and(|policy| policy.folders.is_some()),
        notifications: notifications_wanted(shell, policy),
        notifications_locked: policy.is_some_and(|policy| policy.notifications.is_some()),
        autostart,
        autostart_locked: policy.is_some_and(|policy| policy.start_at_login.is_some()),
        policy: policy.map(policy_values).unwrap_or_default(),
        policy_source: policy.map(|policy| policy.origin.clone()),
    })
}

/// Whether new secure messages are announced: the policy's choice, else
/// the person's.
pub(crate) fn notifications_wanted(shell: &Shell, policy: Option<&Policy>) -> bool {
    policy
        .and_then(|policy| policy.notifications)
        .unwrap_or_else(|| shell.preferences().notifications)
}

/// The refusal to change what the policy at `policy` decides.
fn set_by_policy(what: &str, policy: &Policy) -> IpcError {
    IpcError::new(ErrorCode::Policy, format!("Your organization sets {what} ({}).", policy.origin))
}

/// Each value the policy sets, as the Settings screen lists it.
fn policy_values(policy: &Policy) -> Vec<PolicyValue> {
    let endpoint = |endpoint: &MailEndpoint| {
        let security = match endpoint.security {
            MailSecurity::Tls => "TLS",
            MailSecurity::StartTls => "STARTTLS",
        };
        format!("{}:{} ({security})", endpoint.host, endpoint.port)
    };
    let values = [
        ("Sealpost server", policy.server_url.clone()),
        ("Other servers refused", policy.lock_server.then(|| "yes".to_owned())),
        ("Folders watched", policy.folders.as_ref().map(|folders| folders.join(", "))),
        ("Secure Outbox folder", policy.outbox_folder.clone()),
        ("Sent messages folder", policy.sent_folder.clone()),
        ("Incoming mail server", policy.imap.as_ref().map(endpoint)),
        ("Outgoing mail server", policy.smtp.as_ref().map(endpoint)),
        ("Trusted certificates", policy.ca_file.as_ref().map(|path| path.display().to_string())),
        (
            "Start at login",
            policy.start_at_login.map(|on| if on { "yes" } else { "no" }.to_owned()),
        ),
        (
            "Desktop notifications",
            policy.notifications.map(|on| if on { "on" } else { "off" }.to_owned()),
        ),
        (
            "Copies on this computer",
            policy.local_copies.map(|on| {
                if on { "allowed" } else { "none: no search, no saved attachments" }.to_owned()
            }),
        ),
        (
            "Automatic updates",
            policy
                .updates
                .map(|on| if on { "on" } else { "off: IT installs new versions" }.to_owned()),
        ),
    ];
    values
        .into_iter()
        .filter_map(|(name, value)| Some(PolicyValue { name: name.to_owned(), value: value? }))
        .collect()
}

/// The mailbox's folders, to choose which to watch.
#[tauri::command]
pub async fn mailbox_folders(shell: State<'_, Shell>) -> Result<Vec<String>, IpcError> {
    let mut session = MailboxSession::connect(&shell.mailbox_account().await?).await?;
    let folders = session.folders().await?;
    session.logout().await;
    Ok(folders)
}

#[tauri::command]
pub async fn change_settings(
    shell: State<'_, Shell>,
    app: AppHandle,
    change: SettingsChange,
) -> Result<SettingsView, IpcError> {
    let policy = Policy::load_system()?;
    if let Some(autostart) = change.autostart {
        if let Some(policy) = policy.as_ref().filter(|policy| policy.start_at_login.is_some()) {
            return Err(set_by_policy("whether Sealpost starts at login", policy));
        }
        set_autostart(&app, autostart).map_err(|error| {
            IpcError::new(
                ErrorCode::Internal,
                format!("Cannot change whether Sealpost starts at login: {error}."),
            )
        })?;
    }
    apply_settings(&shell, &change, policy.as_ref()).await?;
    settings_of(&shell, autostart_enabled(&app), policy.as_ref())
}

/// Adds or removes the desktop's login item.
pub(crate) fn set_autostart(
    app: &AppHandle,
    on: bool,
) -> Result<(), tauri_plugin_autostart::Error> {
    let autolaunch = app.autolaunch();
    if on { autolaunch.enable() } else { autolaunch.disable() }
}

/// The folders and notifications of `change`; a folder change restarts the
/// watcher on the new folders. What `policy` decides is refused.
async fn apply_settings(
    shell: &Shell,
    change: &SettingsChange,
    policy: Option<&Policy>,
) -> Result<(), IpcError> {
    if let Some(notifications) = change.notifications {
        if let Some(policy) = policy.filter(|policy| policy.notifications.is_some()) {
            return Err(set_by_policy("whether you are notified", policy));
        }
        shell
            .set_preferences(Preferences { notifications })
            .map_err(|error| IpcError::new(ErrorCode::Internal, sentence(&error)))?;
    }
    if let Some(folders) = &change.folders {
        if let Some(policy) = policy.filter(|policy| policy.folders.is_some()) {
            return Err(set_by_policy("the folders to watch", policy));
        }
        let mut chosen: Vec<String> = Vec::new();
        for folder in folders.iter().map(|folder| folder.trim()) {
            if !folder.is_empty() && !chosen.iter().any(|known| known == folder) {
                chosen.push(folder.to_owned());
            }
        }
        if chosen.is_empty() {
            return Err(IpcError::new(ErrorCode::Invalid, "Choose at least one folder to watch."));
        }
        let mut config = AgentConfig::load(shell.paths()).map_err(AgentError::from)?;
        if config.folders != chosen {
            config.folders = chosen;
            config.save(shell.paths()).map_err(AgentError::from)?;
            shell.restart_watching().await;
        }
    }
    Ok(())
}

/// Revokes this computer on the server and forgets everything kept here;
/// with `this_computer_only`, forgets even though the server cannot be told.
#[tauri::command]
pub async fn sign_out(
    shell: State<'_, Shell>,
    this_computer_only: bool,
) -> Result<SignOutResult, IpcError> {
    let scope =
        if this_computer_only { SignOutScope::ThisComputerOnly } else { SignOutScope::Everywhere };
    let signed_out = shell.sign_out(scope).await?;
    Ok(SignOutResult { email: signed_out.email, revoked_on_server: signed_out.revoked_on_server })
}

impl From<SignOutError> for IpcError {
    fn from(error: SignOutError) -> Self {
        match error {
            SignOutError::Agent(error) => error.into(),
            SignOutError::Secrets(error) => error.into(),
            SignOutError::Server(_) => Self::new(ErrorCode::Server, sentence(&error)),
            SignOutError::Delete { .. } => Self::new(ErrorCode::Internal, sentence(&error)),
        }
    }
}

impl From<ImapError> for IpcError {
    fn from(error: ImapError) -> Self {
        Self::new(ErrorCode::Mailbox, sentence(&error))
    }
}

impl From<ReadError> for IpcError {
    fn from(error: ReadError) -> Self {
        let code = match &error {
            ReadError::Mailbox(_) => ErrorCode::Mailbox,
            ReadError::Gone { .. } => ErrorCode::Gone,
            ReadError::NoAttachment(_) => ErrorCode::Invalid,
            ReadError::Save { .. } => ErrorCode::Internal,
        };
        Self::new(code, sentence(&error))
    }
}

impl From<AgentError> for IpcError {
    fn from(error: AgentError) -> Self {
        let code = match &error {
            AgentError::Config(ConfigError::NotRegistered(_)) => ErrorCode::NotRegistered,
            AgentError::Secrets(_) => ErrorCode::Keyring,
            AgentError::Server(_) => ErrorCode::Server,
            AgentError::AlreadyRunning(_) => ErrorCode::AlreadyRunning,
            AgentError::Policy(_) | AgentError::LocalCopiesOff { .. } => ErrorCode::Policy,
            AgentError::Send(_) => ErrorCode::NotSent,
            _ => ErrorCode::Internal,
        };
        Self::new(code, sentence(&error))
    }
}

impl From<RegisterError> for IpcError {
    fn from(error: RegisterError) -> Self {
        let code = match &error {
            RegisterError::Discovery(_) => ErrorCode::Discovery,
            RegisterError::Mailbox(_) => ErrorCode::Mailbox,
            RegisterError::Server(_) => ErrorCode::Server,
            RegisterError::NoCodeEmail { .. } => ErrorCode::CodeTimeout,
            RegisterError::Secrets(_) => ErrorCode::Keyring,
            RegisterError::Agent(AgentError::AlreadyRunning(_)) => ErrorCode::AlreadyRunning,
            RegisterError::Policy(_) | RegisterError::CaFile { .. } => ErrorCode::Policy,
            RegisterError::Agent(_) | RegisterError::Config(_) => ErrorCode::Internal,
        };
        Self::new(code, sentence(&error))
    }
}

impl From<SecretError> for IpcError {
    fn from(error: SecretError) -> Self {
        Self::new(ErrorCode::Keyring, sentence(&error))
    }
}

impl From<PolicyError> for IpcError {
    fn from(error: PolicyError) -> Self {
        Self::new(ErrorCode::Policy, sentence(&error))
    }
}

impl From<IndexError> for IpcError {
    fn from(error: IndexError) -> Self {
        Self::new(ErrorCode::Internal, sentence(&error))
    }
}

/// The library's message as a sentence for the window: capitalised, ended.
fn sentence(error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    let mut chars = text.chars();
    let Some(first) = chars.next() else { return "Something went wrong.".into() };
    let mut out: String = first.to_uppercase().chain(chars).collect();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealpost_agent::AgentPaths;
    use sealpost_agent::index::IndexedMessage;

    fn shell() -> (tempfile::TempDir, Shell) {
        let dir = tempfile::tempdir().expect("temp dir");
        let shell = Shell::new(AgentPaths::new(dir.path()));
        (dir, shell)
    }

    #[tokio::test]
    async fn an_unregistered_computer_gets_the_wizard_and_a_status_that_says_so() {
        let (_dir, shell) = shell();
        assert!(!overview_of(&shell).expect("overview").registered);
        let error = status_of(&shell).await.expect_err("no status before registration");
        assert_eq!(error.code, ErrorCode::NotRegistered);
    }

    #[tokio::test]
    async fn search_answers_with_the_matched_words_apart() {
        let (_dir, shell) = registered_shell();
        let raw = b"From: Dr Sam <sam@clinic.example>\r\nSubject: Your lab results\r\n\
                    Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nThe cholesterol [values] are in.\r\n";
        let index = shell.index().await.expect("index");
        let message = IndexedMessage { message_id: "msg_1", folder: "INBOX", uid: 7, raw };
        index.add(&message, 1_800_000_000).await.expect("add");

        let results = search_in(&shell, "choles", 10).await.expect("search");
        assert_eq!(results.len(), 1);
        let result = &results[0];
        assert_eq!((result.subject.as_str(), result.uid), ("Your lab results", 7));
        let matched: Vec<&str> = result
            .snippet
            .iter()
            .filter(|part| part.matched)
            .map(|part| part.text.as_str())
            .collect();
        assert_eq!(matched, ["cholesterol"]);
        let text: String = result.snippet.iter().map(|part| part.text.as_str()).collect();
        assert!(text.contains("[values]"), "brackets in the text stay text: {text}");
        assert!(search_in(&shell, "   ", 10).await.expect("empty query").is_empty());
    }

    #[test]
    fn library_messages_become_sentences() {
        assert_eq!(
            sentence(&"the mailbox refused the password"),
            "The mailbox refused the password."
        );
        assert_eq!(sentence(&"done."), "Done.");
        assert_eq!(sentence(&""), "Something went wrong.");
    }

    #[test]
    fn each_registration_step_has_its_kind_and_time() {
        let found = progress(
            &RegisterStep::Discovered { server: "https://s".into(), imap: "i:993".into() },
            Duration::from_millis(1500),
        );
        assert_eq!(found.step, RegisterStepKind::Discovered);
        assert_eq!(found.detail.as_deref(), Some("server https://s, mailbox i:993"));
        assert_eq!(found.elapsed_ms, 1500);
        assert_eq!(
            progress(&RegisterStep::Enrolling, Duration::ZERO).step,
            RegisterStepKind::Enrolling
        );
    }

    #[test]
    fn an_unregistered_computer_is_told_apart_from_other_failures() {
        let error =
            IpcError::from(AgentError::Config(ConfigError::NotRegistered("agent.toml".into())));
        assert_eq!(error.code, ErrorCode::NotRegistered);
        let error = IpcError::from(AgentError::AlreadyRunning("/data".into()));
        assert_eq!(error.code, ErrorCode::AlreadyRunning);
        assert!(error.message.ends_with('.'));
    }

    fn registered_shell() -> (tempfile::TempDir, Shell) {
        let (dir, shell) = shell();
        std::fs::write(
            shell.paths().config_file(),
            r#"email = "dana@example.org"
device_id = "dev_1"
device_name = "laptop (Sealpost app)"
registered_at = "2026-11-29T07:00:00Z"
folders = ["INBOX"]
secret_store = "keyring"

[server]
url = "https://sealpost.example.org"
origin = "https://sealpost.example.org"
signing_keys = []

[imap]
host = "imap.example.org"
port = 993
username = "dana@example.org"
"#,
        )
        .expect("write agent.toml");
        (dir, shell)
    }

    #[tokio::test]
    async fn folders_and_notifications_are_changed_and_an_empty_choice_refused() {
        let (_dir, shell) = registered_shell();
        let before = settings_of(&shell, false, None).expect("settings");
        assert_eq!(
            (before.folders.as_slice(), before.notifications),
            (&["INBOX".to_owned()][..], true)
        );
        let change = SettingsChange {
            folders: Some(vec![" Archive ".into(), "INBOX".into(), "Archive".into(), "".into()]),
            notifications: Some(false),
            autostart: None,
        };
        apply_settings(&shell, &change, None).await.expect("apply");
        let after = settings_of(&shell, true, None).expect("settings");
        assert_eq!(after.folders, ["Archive", "INBOX"], "trimmed, once each, in order");
        assert!(!after.notifications && after.autostart);
        let empty = SettingsChange {
            folders: Some(vec!["  ".into()]),
            notifications: None,
            autostart: None,
        };
        let error = apply_settings(&shell, &empty, None).await.expect_err("nothing to watch");
        assert_eq!(error.code, ErrorCode::Invalid);
        assert_eq!(
            settings_of(&shell, true, None).expect("settings").folders,
            ["Archive", "INBOX"]
        );
    }

    #[tokio::test]
    async fn what_the_policy_decides_wins_and_cannot_be_changed() {
        let (_dir, shell) = registered_shell();
        let policy = Policy::parse(
            "folders = [\"INBOX\"]\nnotifications = false\nstart_at_login = true\n",
            std::path::Path::new("/etc/sealpost/policy.toml"),
        )
        .expect("policy");
        let view = settings_of(&shell, true, Some(&policy)).expect("settings");
        assert_eq!(view.folders, ["INBOX"]);
        assert!(!view.notifications, "off by policy although the person left them on");
        assert!(view.notifications_locked && view.autostart_locked && view.folders_locked);
        assert!(!notifications_wanted(&shell, Some(&policy)));
        for change in [
            SettingsChange {
                folders: Some(vec!["Archive".into()]),
                notifications: None,
                autostart: None,
            },
            SettingsChange { folders: None, notifications: Some(true), autostart: None },
        ] {
            let error = apply_settings(&shell, &change, Some(&policy)).await.expect_err("refused");
            assert_eq!(error.code, ErrorCode::Policy);
            assert!(error.message.contains("/etc/sealpost/policy.toml"), "{}", error.message);
        }
        assert!(shell.preferences().notifications, "the person's choice is kept for later");
    }

    #[test]
    fn every_value_the_policy_sets_is_listed_and_nothing_else() {
        let policy = Policy::parse(
            "server_url = \"https://sealpost.example.org\"\nlock_server = true\nsent_folder = \"Sent Items\"\n\n[imap]\nhost = \"imap.example.org\"\nport = 143\nsecurity = \"start_tls\"\n",
            std::path::Path::new("/etc/sealpost/policy.toml"),
        )
        .expect("policy");
        let listed: Vec<(String, String)> =
            policy_values(&policy).into_iter().map(|value| (value.name, value.value)).collect();
        assert_eq!(
            listed,
            [
                ("Sealpost server".to_owned(), "https://sealpost.example.org".to_owned()),
                ("Other servers refused".to_owned(), "yes".to_owned()),
                ("Sent messages folder".to_owned(), "Sent Items".to_owned()),
                ("Incoming mail server".to_owned(), "imap.example.org:143 (STARTTLS)".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn retry_moves_the_cursor_back_and_says_when_nothing_waits() {
        use sealpost_agent::swap::{FolderReport, KeptPlaceholder};
        let (_dir, shell) = registered_shell();
        let state = AgentState::open(&shell.paths().state_db()).await.expect("state");
        let kept = KeptPlaceholder {
            uid: 12,
            message_id: "msg_1".into(),
            reason: "the message was revoked".into(),
            temporary: false,
        };
        let report = FolderReport {
            uid_validity: 3,
            next_uid: 30,
            kept: vec![kept],
            ..FolderReport::default()
        };
        state.record_pass("INBOX", &report, 1).await.expect("record");

        retry_in(&shell, "INBOX", 12).await.expect("retry");
        let cursor = state.cursor("INBOX").await.expect("cursor").expect("a cursor");
        assert_eq!(cursor.next_uid, 12, "the next pass looks at it again");
        let error = retry_in(&shell, "INBOX", 99).await.expect_err("nothing kept as 99");
        assert_eq!(error.code, ErrorCode::Gone);
    }
}
