//! Registering this computer: from an email address and mailbox password to
//! a device token in the keyring, with no code typed by the person.
//!
//! 1. discover the server and the mailbox ([`crate::discover`]);
//! 2. log in to the mailbox (a wrong password fails here, before anything
//!    is asked of the server) and note where new mail will start;
//! 3. ask the server for a verification code, find the code email in the
//!    INBOX, enroll the device with it, then delete that email;
//! 4. store the mailbox password and the device tokens in the keyring, and
//!    write `agent.toml` with the server's pinned signing keys.
//!
//! The configuration is written last: an interrupted registration leaves
//! the previous one (or none) in place.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sealpost_proto::api::{DeviceCredential, EnrollDevice};
use sealpost_proto::verification::find_code;

use crate::agent::{AgentError, take_lock};
use crate::config::{
    AgentConfig, AgentPaths, ConfigError, ImapSettings, ServerSettings, SmtpSettings,
};
use crate::discover::{Discovered, DiscoveryError, DiscoveryRequest, discover};
use crate::imap::{ImapAccount, ImapError, MailboxSession};
use crate::policy::{Policy, PolicyError};
use crate::secrets::{SecretError, SecretStoreKind, Secrets};
use crate::server::{ServerApi, ServerError};

/// How long to wait for the verification email by default.
pub const CODE_WAIT: Duration = Duration::from_secs(60);
/// How long one IDLE waits before looking again regardless.
const CODE_POLL: Duration = Duration::from_secs(2);
/// The code email usually lands within a second or two of the request,
/// and servers delay IDLE's news of it (Dovecot by half a second): for
/// this long the agent looks every [`CODE_LOOK_EVERY`] instead of idling.
const CODE_QUICK_LOOKS: Duration = Duration::from_secs(5);
const CODE_LOOK_EVERY: Duration = Duration::from_millis(100);

/// The steps, for progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterStep {
    Discovering,
    /// Where the server and mailbox were found.
    Discovered {
        server: String,
        imap: String,
    },
    MailboxLogin,
    RequestingCode,
    WaitingForCode,
    Enrolling,
    StoringSecrets,
}

impl std::fmt::Display for RegisterStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Discovering => write!(f, "finding the Sealpost server and the mailbox"),
            Self::Discovered { server, imap } => write!(f, "server {server}, mailbox {imap}"),
            Self::MailboxLogin => write!(f, "logging in to the mailbox"),
            Self::RequestingCode => write!(f, "asking the server for a verification code"),
            Self::WaitingForCode => write!(f, "reading the verification email from the inbox"),
            Self::Enrolling => write!(f, "registering this computer with the server"),
            Self::StoringSecrets => {
                write!(f, "storing the password and device token in the keyring")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Mailbox(#[from] ImapError),
    #[error("the Sealpost server: {0}")]
    Server(#[from] ServerError),
    #[error(
        "no verification email from {origin} reached the INBOX within {} s; check that mail from the server is not filtered to another folder, then try again",
        waited.as_secs()
    )]
    NoCodeEmail { origin: String, waited: Duration },
    #[error(transparent)]
    Secrets(#[from] SecretError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A PEM bundle to trust instead of the system roots, and the absolute path
/// recorded for later runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCa {
    pub pem: Vec<u8>,
    pub path: PathBuf,
}

impl TrustedCa {
    /// The bundle given explicitly (`--ca-file`), else the one the IT policy
    /// names, else none (the system roots).
    pub fn choose(
        given: Option<&Path>,
        policy: Option<&Policy>,
    ) -> Result<Option<Self>, RegisterError> {
        if let Some(path) = given {
            let pem = std::fs::read(path)
                .map_err(|source| RegisterError::CaFile { path: path.to_owned(), source })?;
            let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
            return Ok(Some(Self { pem, path }));
        }
        let Some(policy) = policy else { return Ok(None) };
        let pem = policy.ca_pem()?;
        Ok(pem.zip(policy.ca_file.clone()).map(|(pem, path)| Self { pem, path }))
    }
}

pub struct RegisterRequest {
    pub discovery: DiscoveryRequest,
    pub password: String,
    /// Shown in the account's device list.
    pub device_name: String,
    /// Folders to watch; INBOX when neither this nor the policy names any.
    pub folders: Option<Vec<String>>,
    /// The PEM bundle given with `--ca-file`, recorded for later runs.
    pub ca_file: Option<std::path::PathBuf>,
    pub code_wait: Duration,
}

/// This computer's name as the account's device list shows it, with the
/// program that registered it: `laptop (Sealpost app)`.
pub fn default_device_name(program: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "this computer".to_owned());
    format!("{host} ({program})")
}

/// What a registration did, and how long it took.
#[derive(Debug, Clone)]
pub struct Registered {
    pub config: AgentConfig,
    pub elapsed: Duration,
}

/// Registers this computer; `progress` hears each step as it starts.
pub async fn register(
    paths: &AgentPaths,
    secrets: &Secrets,
    request: RegisterRequest,
    progress: &(dyn Fn(&RegisterStep) + Send + Sync),
) -> Result<Registered, RegisterError> {
    let started = Instant::now();
    // Never re-register under a running agent: it holds this lock.
    let _lock = take_lock(paths)?;
    let email = request.discovery.email.clone();
    progress(&RegisterStep::Discovering);
    let found: Discovered = discover(&request.discovery).await?;
    progress(&RegisterStep::Discovered {
        server: found.server_url.clone(),
        imap: format!("{}:{}", found.imap.host, found.imap.port),
    });

    progress(&RegisterStep::MailboxLogin);
    let account = ImapAccount {
        host: found.imap.host.clone(),
        port: found.imap.port,
        security: found.imap.security,
        username: found.imap_username.clone(),
        password: request.password.clone(),
        ca_pem: request.discovery.ca_pem.clone(),
    };
    let mut session = MailboxSession::connect(&account).await?;
    let inbox = session.select_status("INBOX").await?;

    let api = ServerApi::new(&found.server_url, request.discovery.ca_pem.as_deref())?;
    progress(&RegisterStep::RequestingCode);
    api.request_code(&email).await?;
    progress(&RegisterStep::WaitingForCode);
    let origin = found.well_known.origin.clone();
    let (code_uid, code) =
        wait_for_code(session, inbox.uid_next, &origin, request.code_wait).await?;

    progress(&RegisterStep::Enrolling);
    let tokens = api
        .enroll(&EnrollDevice {
            email: email.clone(),
            device_name: request.device_name.clone(),
            credential: DeviceCredential::Code(code),
        })
        .await?;
    // The code is used up; its email is clutter. Failing to delete it is
    // not worth failing the registration over.
    if let Err(error) = delete_code_email(&account, code_uid).await {
        tracing::warn!(%error, "could not delete the verification email");
    }

    progress(&RegisterStep::StoringSecrets);
    secrets.set_mailbox_password(&request.password).await?;
    secrets.set_device_tokens(&tokens).await?;
    let policy_folders = request.discovery.policy.as_ref().and_then(|p| p.folders.clone());
    let config = AgentConfig {
        email,
        device_id: tokens.device_id.clone(),
        device_name: request.device_name,
        registered_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        server: ServerSettings {
            url: found.server_url.clone(),
            origin,
            signing_keys: found.well_known.signing_keys.clone(),
        },
        imap: ImapSettings {
            host: found.imap.host.clone(),
            port: found.imap.port,
            security: found.imap.security,
            username: found.imap_username.clone(),
        },
        smtp: found.smtp.as_ref().map(|smtp| SmtpSettings {
            host: smtp.host.clone(),
            port: smtp.port,
            security: smtp.security,
        }),
        folders: policy_folders
            .or(request.folders)
            .filter(|folders| !folders.is_empty())
            .unwrap_or_else(|| vec!["INBOX".to_owned()]),
        outbox_folder: None,
        sent_folder: None,
        ca_file: request.ca_file,
        secret_store: SecretStoreKind::Keyring,
    };
    forget_other_registration(paths, &config);
    config.save(paths)?;
    Ok(Registered { config, elapsed: started.elapsed() })
}

/// Waits for the code email from `origin` among the INBOX's messages from
/// `first_uid` on, IDLE between looks; returns its UID and the code.
async fn wait_for_code(
    mut session: MailboxSession,
    first_uid: u32,
    origin: &str,
    wait: Duration,
) -> Result<(u32, String), RegisterError> {
    let started = Instant::now();
    let deadline = started + wait;
    let mut next = first_uid;
    loop {
        for uid in session.uids_from(next).await? {
            next = uid + 1;
            if let Some(raw) = session.fetch_message(uid).await?
                && let Some(code) = find_code(&raw, origin)
            {
                session.logout().await;
                return Ok((uid, code));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            session.logout().await;
            return Err(RegisterError::NoCodeEmail { origin: origin.to_owned(), waited: wait });
        }
        if started.elapsed() < CODE_QUICK_LOOKS {
            // Each command makes the server look at the mailbox afresh.
            tokio::time::sleep(left.min(CODE_LOOK_EVERY)).await;
        } else {
            let (again, _) = session.wait_for_change(left.min(CODE_POLL)).await?;
            session = again;
        }
    }
}

async fn delete_code_email(account: &ImapAccount, uid: u32) -> Result<(), ImapError> {
    let mut session = MailboxSession::connect(account).await?;
    session.select("INBOX").await?;
    session.remove(&[uid]).await?;
    session.logout().await;
    Ok(())
}

/// A new registration starts the folders' passes over: placeholders kept
/// under the old device (signed out, say) deserve another try. The search
/// index stays unless the mailbox changed, since it describes that mailbox.
fn forget_other_registration(paths: &AgentPaths, config: &AgentConfig) {
    let same_mailbox = AgentConfig::load(paths).is_ok_and(|previous| {
        previous.email == config.email
            && previous.imap == config.imap
            && previous.server.url == config.server.url
    });
    let mut stale = vec![paths.state_db()];
    if !same_mailbox {
        stale.push(paths.index_db());
    }
    for file in stale {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = file.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}
