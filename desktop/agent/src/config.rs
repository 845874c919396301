//! Where the agent keeps its files, and the registration it reads at start.
//!
//! The data directory holds `agent.toml` (who this computer is registered
//! as, which server and keys it trusts, where the mailbox is), the state and
//! search databases and the logs. Nothing secret is in it: the mailbox
//! password and the device tokens live in the OS keyring (see [`crate::secrets`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use sealpost_proto::api::{MailSecurity, PublicSigningKey};
use serde::{Deserialize, Serialize};

use crate::imap::ImapAccount;
use crate::secrets::SecretStoreKind;
use crate::smtp::SmtpAccount;

/// The folder whose drafts the agent sends securely, unless configured otherwise.
pub const DEFAULT_OUTBOX_FOLDER: &str = "Sealpost Outbox";

/// Overrides the data directory (also `--data-dir`).
pub const DATA_DIR_ENV: &str = "SEALPOST_AGENT_DIR";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no data directory: set {DATA_DIR_ENV} or pass --data-dir (the system reports no per-user data folder)"
    )]
    NoDataDir,
    #[error(
        "this computer is not registered yet (no {0}): set it up in the Sealpost app, or run `sealpost-agent register`"
    )]
    NotRegistered(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is damaged ({message}); register this computer again (in the Sealpost app: Settings, Sign out, then set it up; headless: `sealpost-agent register`)"
    )]
    Malformed { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The files of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPaths {
    pub dir: PathBuf,
}

impl AgentPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$SEALPOST_AGENT_DIR`, else the per-user data folder (on Linux
    /// `~/.local/share/sealpost`, on macOS `~/Library/Application
    /// Support/sealpost`, on Windows `%LOCALAPPDATA%\sealpost`).
    pub fn from_environment() -> Result<Self, ConfigError> {
        if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|dir| !dir.is_empty()) {
            return Ok(Self::new(dir));
        }
        dirs::data_local_dir()
            .map(|dir| Self::new(dir.join("sealpost")))
            .ok_or(ConfigError::NoDataDir)
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    pub fn state_db(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    pub fn index_db(&self) -> PathBuf {
        self.dir.join("index.db")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// Held by the running agent: one watcher per mailbox on this computer.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("agent.lock")
    }

    /// The encrypted secrets file, when that store was chosen.
    pub fn secrets_file(&self) -> PathBuf {
        self.dir.join("secrets.enc")
    }

    pub fn create(&self) -> Result<(), ConfigError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|source| ConfigError::Write { path: self.dir.clone(), source })
    }
}

/// `agent.toml`: the registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The address this computer reads secure mail for.
    pub email: String,
    pub device_id: String,
    pub device_name: String,
    /// RFC 3339.
    pub registered_at: String,
    pub server: ServerSettings,
    pub imap: ImapSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSettings>,
    /// Folders watched for notifications.
    pub folders: Vec<String>,
    /// The folder whose drafts are sent securely; `None`: [`DEFAULT_OUTBOX_FOLDER`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_folder: Option<String>,
    /// Where sent secure messages are filed; `None`: the folder the mail
    /// server marks as Sent (else "Sent").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_folder: Option<String>,
    /// A PEM bundle trusted instead of the system roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    pub secret_store: SecretStoreKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Where the API is reached.
    pub url: String,
    /// The origin genuine notifications name.
    pub origin: String,
    /// The keys pinned at registration; notifications signed otherwise are refused.
    pub signing_keys: Vec<PublicSigningKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    /// `tls` (implicit) or `start_tls`; older files without it meant `tls`.
    #[serde(default = "implicit_tls")]
    pub security: MailSecurity,
    pub username: String,
}

fn implicit_tls() -> MailSecurity {
    MailSecurity::Tls
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    #[serde(default = "implicit_tls")]
    pub security: MailSecurity,
}

impl AgentConfig {
    pub fn load(paths: &AgentPaths) -> Result<Self, ConfigError> {
        let path = paths.config_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotRegistered(path));
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        toml::from_str(&text)
            .map_err(|error| ConfigError::Malformed { path, message: error.message().to_owned() })
    }

    /// Writes the file whole or not at all (temporary file, then rename).
    pub fn save(&self, paths: &AgentPaths) -> Result<(), ConfigError> {
        paths.create()?;
        let path = paths.config_file();
        let text = toml::to_string_pretty(self).map_err(|error| ConfigError::Malformed {
            path: path.clone(),
            message: error.to_string(),
        })?;
        write_atomically(&path, text.as_bytes())
            .map_err(|source| ConfigError::Write { path, source })
    }

    /// The folder whose drafts are sent securely.
    pub fn outbox_folder(&self) -> &str {
        self.outbox_folder.as_deref().unwrap_or(DEFAULT_OUTBOX_FOLDER)
    }

    /// The mailbox this registration reads, logging in with `password`.
    pub fn imap_account(&self, password: String) -> Result<ImapAccount, ConfigError> {
        Ok(ImapAccount {
            host: self.imap.host.clone(),
            port: self.imap.port,
            security: self.imap.security,
            username: self.imap.username.clone(),
            password,
            ca_pem: self.ca_pem()?,
        })
    }

    /// The outgoing mail server, logging in as the mailbox does; `None`
    /// when none is known.
    pub fn smtp_account(&self, password: String) -> Result<Option<SmtpAccount>, ConfigError> {
        let Some(smtp) = &self.smtp else { return Ok(None) };
        Ok(Some(SmtpAccount {
            host: smtp.host.clone(),
            port: smtp.port,
            security: smtp.security,
            username: self.imap.username.clone(),
            password,
            ca_pem: self.ca_pem()?,
        }))
    }

    /// The CA bundle's contents, when one is configured.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        self.ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .map_err(|source| ConfigError::Read { path: path.clone(), source })
            })
            .transpose()
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// file, never a mix; readable by the owner only on Unix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AgentConfig {
        AgentConfig {
            email: "alice@example.org".into(),
            device_id: "dev_1".into(),
            device_name: "alice laptop".into(),
            registered_at: "2026-11-23T10:00:00Z".into(),
            server: ServerSettings {
                url: "https://sealpost.example.org".into(),
                origin: "https://sealpost.example.org".into(),
                signing_keys: vec![PublicSigningKey {
                    key_id: "k1".into(),
                    algorithm: "ed25519".into(),
                    public_key: "AAAA".into(),
                    active: true,
                }],
            },
            imap: ImapSettings {
                host: "imap.example.org".into(),
                port: 993,
                security: MailSecurity::Tls,
                username: "alice@example.org".into(),
            },
            smtp: None,
            folders: vec!["INBOX".into(), "Secure".into()],
            outbox_folder: None,
            sent_folder: None,
            ca_file: None,
            secret_store: SecretStoreKind::Keyring,
        }
    }

    #[test]
    fn saves_and_loads_and_says_when_missing_or_damaged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = AgentPaths::new(dir.path().join("agent"));
        let error = AgentConfig::load(&paths).expect_err("not registered");
        assert!(error.to_string().contains("sealpost-agent register"), "{error}");

        sample().save(&paths).expect("save");
        assert_eq!(AgentConfig::load(&paths).expect("load"), sample());

        std::fs::write(paths.config_file(), "email = 3\n").expect("damage");
        let error = AgentConfig::load(&paths).expect_err("damaged").to_string();
        assert!(error.contains("damaged") && error.contains("agent.toml"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = AgentPaths::new(dir.path());
        sample().save(&paths).expect("save");
        let mode = std::fs::metadata(paths.config_file()).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}
