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
use sealpost_agent::state::KeptRecord;
use sealpost_agent::{AgentError, Secrets, Status};
use tauri::State;
use tauri::ipc::Channel;

use crate::ipc::{
    AttachmentView, ErrorCode, FolderView, IpcError, KeptView, MessageBody, MessageView, Overview,
    Preset, RecentMessage, RegisterForm, RegisterProgress, RegisterStepKind, Registration,
    SavedAttachment, SearchResult, SnippetPart, StatusView,
};
use crate::shell::Shell;

/// Search answers at most this many results, whatever the window asks.
const SEARCH_LIMIT_MAX: u32 = 200;

#[tauri::command]
pub async fn overview(shell: State<'_, Shell>) -> Result<Overview, IpcError> {
    overview_of(&shell)
}

fn overview_of(shell: &Shell) -> Result<Overview, IpcError> {
    let policy = Policy::load_system()?;
    Ok(Overview { registered: shell.registered(), preset: preset(policy.as_ref()) })
}

fn preset(policy: Option<&Policy>) -> Preset {
    let Some(policy) = policy else { return Preset::default() };
    Preset {
        server_url: policy.server_url.clone(),
        folders: policy.folders.clone(),
        source: Some(policy.path.display().to_string()),
    }
}

#[tauri::command]
pub async fn status(shell: State<'_, Shell>) -> Result<StatusView, IpcError> {
    status_of(&shell).await
}

async fn status_of(shell: &Shell) -> Result<StatusView, IpcError> {
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
    })
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
    let raw = reader::fetch(&shell.mailbox_account().await?, &folder, &message_id).await?;
    Ok(message_view(message_id, folder, &raw))
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
    let raw = reader::fetch(&shell.mailbox_account().await?, &folder, &message_id).await?;
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
        let (_dir, shell) = shell();
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
}
