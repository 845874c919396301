//! The IT policy: settings an organization's IT department presets on a
//! computer (the Sealpost server, the mail servers, the folders to watch
//! and to send from, what the app may do) so that registration asks the
//! user for nothing else and cannot be pointed elsewhere by mistake.
//!
//! Each operating system keeps it where its management tools write:
//!
//! - Linux: the TOML file `/etc/sealpost/policy.toml`;
//! - Windows: the registry key `HKLM\Software\Policies\Sealpost\Sealpost`,
//!   written by the MSI's public properties, Group Policy or Intune
//!   ([`registry`]);
//! - macOS: the managed preferences of `org.sealpost.desktop`, installed by a
//!   configuration profile ([`managed_preferences`]).
//!
//! [`KEYS`] lists every setting with its name in each place. The TOML form:
//!
//! ```toml
//! server_url = "https://sealpost.example.org"
//! lock_server = true            # refuse any other server given on the command line
//! folders = ["INBOX", "Archive"]
//! outbox_folder = "Secure Outbox" # drafts saved here are sent securely
//! sent_folder = "Sent Items"    # where sent secure messages are filed
//! ca_file = "/etc/sealpost/ca.pem" # the organization's CA, trusted instead of the system roots
//! start_at_login = true         # the desktop app starts with the session; not changeable
//! notifications = false         # desktop notifications for new secure messages; not changeable
//! local_copies = false          # no search index and no saved attachments on this computer
//! updates = false               # Sealpost never updates itself; IT deploys new versions
//!
//! [imap]
//! host = "imap.example.org"
//! port = 993
//! security = "tls"              # or "start_tls"
//!
//! [smtp]
//! host = "smtp.example.org"
//! port = 465
//! security = "tls"
//! ```
//!
//! Every key is optional, but an unknown key or a wrong value makes the whole
//! policy an error: a policy that silently did nothing would leave IT believing
//! the computers are configured when they are not.

pub mod managed_preferences;
pub mod registry;

use std::path::{Path, PathBuf};

use sealpost_proto::api::{MailEndpoint, MailSecurity};
use serde::{Deserialize, Serialize};

/// Names a policy to use instead of the system's, so IT can try a policy
/// before deploying it and tests can use their own. The file may be TOML, a
/// registry export (`.reg`), a managed preferences `.plist` or a
/// `.mobileconfig` profile.
pub const POLICY_FILE_ENV: &str = "SEALPOST_POLICY_FILE";

/// The Windows registry key under `HKEY_LOCAL_MACHINE` holding the policy.
pub const REGISTRY_KEY: &str = r"Software\Policies\Sealpost\Sealpost";

/// The macOS preferences domain a configuration profile sets (the app's
/// bundle identifier).
pub const PREFERENCES_DOMAIN: &str = "org.sealpost.desktop";

/// How a setting's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Text: a registry string, a preference string.
    Text,
    /// On or off: a registry DWORD 0 or 1, a preference boolean.
    Flag,
    /// A TCP port: a registry DWORD, a preference integer.
    Port,
    /// Several texts: a registry multi-string, a preference array of strings.
    List,
    /// One of the given texts.
    Choice(&'static [&'static str]),
}

/// One policy setting, named as each place that holds policy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyKey {
    /// In `policy.toml`; `imap.host` is `host` in the `[imap]` section.
    pub toml: &'static str,
    /// The registry value name on Windows and the preference key on macOS.
    pub managed: &'static str,
    pub kind: KeyKind,
    /// What it does, in one sentence for IT.
    pub summary: &'static str,
}

const SECURITY_CHOICES: &[&str] = &["tls", "start_tls"];

/// Every policy setting. The Windows and macOS templates in `installers/`
/// are checked against this list.
pub const KEYS: &[PolicyKey] = &[
    PolicyKey {
        toml: "server_url",
        managed: "ServerUrl",
        kind: KeyKind::Text,
        summary: "The organization's Sealpost server, such as https://sealpost.example.org.",
    },
    PolicyKey {
        toml: "lock_server",
        managed: "LockServer",
        kind: KeyKind::Flag,
        summary: "Refuse any other Sealpost server than the policy's.",
    },
    PolicyKey {
        toml: "folders",
        managed: "Folders",
        kind: KeyKind::List,
        summary: "The mailbox folders watched for secure messages.",
    },
    PolicyKey {
        toml: "outbox_folder",
        managed: "OutboxFolder",
        kind: KeyKind::Text,
        summary: "The mailbox folder whose drafts are sent securely (default \"Sealpost Outbox\").",
    },
    PolicyKey {
        toml: "sent_folder",
        managed: "SentFolder",
        kind: KeyKind::Text,
        summary: "Where sent secure messages are filed (default: the folder the mail server marks as Sent).",
    },
    PolicyKey {
        toml: "ca_file",
        managed: "CaFile",
        kind: KeyKind::Text,
        summary: "A PEM file of the organization's CA, trusted instead of the system's roots.",
    },
    PolicyKey {
        toml: "start_at_login",
        managed: "StartAtLogin",
        kind: KeyKind::Flag,
        summary: "Whether the desktop app starts with the session.",
    },
    PolicyKey {
        toml: "notifications",
        managed: "Notifications",
        kind: KeyKind::Flag,
        summary: "Whether the desktop app announces new secure messages.",
    },
    PolicyKey {
        toml: "local_copies",
        managed: "LocalCopies",
        kind: KeyKind::Flag,
        summary: "Whether secure messages may be kept on the computer: the search index and saved attachments.",
    },
    PolicyKey {
        toml: "updates",
        managed: "Updates",
        kind: KeyKind::Flag,
        summary: "Whether Sealpost may update itself; off leaves new versions to IT.",
    },
    PolicyKey {
        toml: "imap.host",
        managed: "ImapHost",
        kind: KeyKind::Text,
        summary: "The IMAP server's host name.",
    },
    PolicyKey {
        toml: "imap.port",
        managed: "ImapPort",
        kind: KeyKind::Port,
        summary: "The IMAP server's port.",
    },
    PolicyKey {
        toml: "imap.security",
        managed: "ImapSecurity",
        kind: KeyKind::Choice(SECURITY_CHOICES),
        summary: "How the IMAP connection is secured: tls or start_tls.",
    },
    PolicyKey {
        toml: "smtp.host",
        managed: "SmtpHost",
        kind: KeyKind::Text,
        summary: "The SMTP server's host name.",
    },
    PolicyKey {
        toml: "smtp.port",
        managed: "SmtpPort",
        kind: KeyKind::Port,
        summary: "The SMTP server's port.",
    },
    PolicyKey {
        toml: "smtp.security",
        managed: "SmtpSecurity",
        kind: KeyKind::Choice(SECURITY_CHOICES),
        summary: "How the SMTP connection is secured: tls or start_tls.",
    },
];

/// Which names a policy's messages use for its keys: those of the place
/// it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyNaming {
    #[default]
    Toml,
    Managed,
}

impl KeyNaming {
    fn name(self, toml_key: &'static str) -> &'static str {
        match self {
            Self::Toml => toml_key,
            Self::Managed => {
                KEYS.iter().find(|key| key.toml == toml_key).map_or(toml_key, |key| key.managed)
            }
        }
    }
}

/// Settings preset by the organization; they win over the command line.
/// Serialized, it is the `policy.toml` deciding the same (only what is set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Where this policy was read from (a file, a registry key); shown to
    /// the user as the origin of each setting it decides.
    #[serde(skip)]
    pub origin: String,
    /// The organization's Sealpost server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// Refuse a different server given on the command line instead of only
    /// preferring the policy's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lock_server: bool,
    /// The IMAP folders the agent watches; `None` leaves the choice to the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folders: Option<Vec<String>>,
    /// The folder whose drafts are sent securely; `None` leaves it to the
    /// agent's configuration (else "Sealpost Outbox").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox_folder: Option<String>,
    /// Where sent secure messages are filed; `None` leaves it to the agent's
    /// configuration (else the folder the mail server marks as Sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_folder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap: Option<MailEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<MailEndpoint>,
    /// A PEM bundle trusted instead of the system roots, for an organization
    /// whose servers have certificates from its own CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Whether the desktop app starts with the session; `None` leaves it to the person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_at_login: Option<bool>,
    /// Whether the desktop app announces new secure messages; `None` leaves it to the person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications: Option<bool>,
    /// `Some(false)`: nothing of a secure message is kept on the computer
    /// outside the mailbox (no search index, no saved attachments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_copies: Option<bool>,
    /// `Some(false)`: Sealpost never updates itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updates: Option<bool>,
}

/// A policy that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the IT policy in {origin}: {source}; ask IT to check its permissions")]
    Unreadable {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot read {path}, the CA file the IT policy in {origin} names: {source}; ask IT to install it"
    )]
    UnreadableCa {
        origin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the IT policy in {origin} is not valid, ask IT to correct it: {message}")]
    Malformed { origin: String, message: String },
    #[error("the IT policy in {origin} is not valid, ask IT to correct it: `{key}` {problem}")]
    Invalid { origin: String, key: String, problem: String },
}

/// The settings as written: strict, so typos are reported instead of ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    server_url: Option<String>,
    #[serde(default)]
    lock_server: bool,
    folders: Option<Vec<String>>,
    outbox_folder: Option<String>,
    sent_folder: Option<String>,
    imap: Option<EndpointTable>,
    smtp: Option<EndpointTable>,
    ca_file: Option<PathBuf>,
    start_at_login: Option<bool>,
    notifications: Option<bool>,
    local_copies: Option<bool>,
    updates: Option<bool>,
}

/// `[imap]` and `[smtp]`. A copy of [`MailEndpoint`] that refuses unknown
/// keys, which the API type must not do (newer servers may add fields).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointTable {
    host: String,
    port: u16,
    security: MailSecurity,
}

impl Policy {
    /// Where this computer's policy is read from, as [`Policy::origin`]
    /// names it.
    pub fn system_origin() -> String {
        match policy_file_override() {
            Some(path) => path.display().to_string(),
            None => system_source().origin(),
        }
    }

    /// This computer's policy: the file named by [`POLICY_FILE_ENV`] when
    /// set, else the operating system's place for it. `None` on an unmanaged
    /// computer, an error when a policy exists but cannot be used.
    pub fn load_system() -> Result<Option<Policy>, PolicyError> {
        let Some(path) = policy_file_override() else {
            return system_source().load();
        };
        let policy = Self::load_if_present(&path)?;
        if policy.is_none() {
            tracing::warn!(
                path = %path.display(),
                "{POLICY_FILE_ENV} names a policy file that does not exist; no policy applies"
            );
        }
        Ok(policy)
    }

    /// The policy in `path`, or `None` when the file does not exist. The
    /// file's name says its form: `.reg`, `.plist`, `.mobileconfig`, or else
    /// TOML.
    pub fn load_if_present(path: &Path) -> Result<Option<Policy>, PolicyError> {
        PolicySource::for_file(path).load()
    }

    /// The policy in `path`, which must exist.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        Self::load_if_present(path)?.ok_or_else(|| PolicyError::Unreadable {
            origin: path.display().to_string(),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    /// Parses and checks TOML policy text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let file: PolicyFile = toml::from_str(text).map_err(|error| PolicyError::Malformed {
            origin: origin.clone(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        Self::check(file, origin, KeyNaming::Toml)
    }

    /// Checks settings read from a registry key or managed preferences,
    /// already put in the TOML layout by their reader.
    fn from_managed(settings: toml::Table, origin: String) -> Result<Policy, PolicyError> {
        // A server half described would fail in serde with "missing field";
        // name the value IT has to add instead.
        for section in ["imap", "smtp"] {
            let Some(table) = settings.get(section).and_then(toml::Value::as_table) else {
                continue;
            };
            let (given, missing): (Vec<_>, Vec<_>) = KEYS
                .iter()
                .filter_map(|key| {
                    let field = key.toml.strip_prefix(section)?.strip_prefix('.')?;
                    Some((key.managed, table.contains_key(field)))
                })
                .partition(|(_, present)| *present);
            if let Some((name, _)) = missing.first() {
                let given: Vec<&str> = given.iter().map(|(name, _)| *name).collect();
                return Err(PolicyError::Invalid {
                    origin,
                    key: (*name).to_owned(),
                    problem: format!("is needed with {}", given.join(" and ")),
                });
            }
        }
        let file = PolicyFile::deserialize(toml::Value::Table(settings)).map_err(|error| {
            PolicyError::Malformed { origin: origin.clone(), message: error.to_string() }
        })?;
        Self::check(file, origin, KeyNaming::Managed)
    }

    fn check(file: PolicyFile, origin: String, naming: KeyNaming) -> Result<Policy, PolicyError> {
        let invalid = |key, problem: &str| PolicyError::Invalid {
            origin: origin.clone(),
            key: naming.name(key).to_owned(),
            problem: problem.to_owned(),
        };
        let server_url = match file.server_url {
            Some(url) => Some(crate::discover::normalize_server_url(&url).ok_or_else(|| {
                invalid(
                    "server_url",
                    "must be an https address such as https://sealpost.example.org",
                )
            })?),
            None => None,
        };
        if file.lock_server && server_url.is_none() {
            let problem =
                format!("needs {}: there is no server to lock to", naming.name("server_url"));
            return Err(invalid("lock_server", &problem));
        }
        if let Some(folders) = &file.folders
            && folders.iter().any(|folder| folder.trim().is_empty())
        {
            return Err(invalid("folders", "must not contain an empty folder name"));
        }
        for (key, folder) in
            [("outbox_folder", &file.outbox_folder), ("sent_folder", &file.sent_folder)]
        {
            if folder.as_ref().is_some_and(|folder| folder.trim().is_empty()) {
                return Err(invalid(key, "must not be an empty folder name"));
            }
        }
        // Every message in the Outbox is sent: sent messages filed there, or
        // received ones arriving there, would be sent again.
        let outbox = file.outbox_folder.as_deref().unwrap_or(crate::config::DEFAULT_OUTBOX_FOLDER);
        if file.sent_folder.as_deref() == Some(outbox) {
            let (key, problem) = match file.outbox_folder {
                Some(_) => (
                    "outbox_folder",
                    format!(
                        "must not be {}: sent messages filed there would be sent again",
                        naming.name("sent_folder")
                    ),
                ),
                None => (
                    "sent_folder",
                    format!(
                        "must not be the Outbox, {outbox:?}: sent messages filed there would be sent again"
                    ),
                ),
            };
            return Err(invalid(key, &problem));
        }
        if file.outbox_folder.is_some()
            && (outbox.eq_ignore_ascii_case("INBOX")
                || file.folders.as_ref().is_some_and(|folders| folders.iter().any(|f| f == outbox)))
        {
            let problem = format!(
                "must not be INBOX or one of {}: every message arriving there would be sent",
                naming.name("folders")
            );
            return Err(invalid("outbox_folder", &problem));
        }
        // `keys`: the section's host and port keys, as errors name them.
        let endpoint = |keys: [&'static str; 2], table: Option<EndpointTable>| match table {
            None => Ok(None),
            Some(table) if table.host.is_empty() || table.host.contains(['/', '@', ' ', ':']) => {
                Err(invalid(keys[0], "must be a host name such as mail.example.org"))
            }
            Some(table) if table.port == 0 => Err(invalid(keys[1], "must not be 0")),
            Some(table) => Ok(Some(MailEndpoint {
                host: table.host.to_ascii_lowercase(),
                port: table.port,
                security: table.security,
            })),
        };
        let imap = endpoint(["imap.host", "imap.port"], file.imap)?;
        let smtp = endpoint(["smtp.host", "smtp.port"], file.smtp)?;
        if let Some(ca_file) = &file.ca_file
            && !is_absolute_anywhere(ca_file)
        {
            return Err(invalid(
                "ca_file",
                "must be an absolute path such as /etc/sealpost/ca.pem",
            ));
        }
        Ok(Policy {
            origin,
            server_url,
            lock_server: file.lock_server,
            folders: file.folders,
            outbox_folder: file.outbox_folder,
            sent_folder: file.sent_folder,
            imap,
            smtp,
            ca_file: file.ca_file,
            start_at_login: file.start_at_login,
            notifications: file.notifications,
            local_copies: file.local_copies,
            updates: file.updates,
        })
    }

    /// What the policy decides about a registration made before it (or
    /// before it changed): the folders to watch, to send from and to file
    /// sent messages in.
    pub fn apply(&self, config: &mut crate::config::AgentConfig) {
        if let Some(folders) = &self.folders {
            config.folders.clone_from(folders);
        }
        if let Some(outbox) = &self.outbox_folder {
            config.outbox_folder = Some(outbox.clone());
        }
        if let Some(sent) = &self.sent_folder {
            config.sent_folder = Some(sent.clone());
        }
    }

    /// Whether secure messages may be kept on this computer outside the
    /// mailbox: in the search index and as saved attachments.
    pub fn allows_local_copies(policy: Option<&Policy>) -> bool {
        policy.and_then(|policy| policy.local_copies) != Some(false)
    }

    /// The contents of [`Policy::ca_file`], when the policy names one.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, PolicyError> {
        let Some(path) = &self.ca_file else { return Ok(None) };
        std::fs::read(path).map(Some).map_err(|source| PolicyError::UnreadableCa {
            origin: self.origin.clone(),
            path: path.clone(),
            source,
        })
    }

    /// The settings this policy decides, as `policy.toml` would write them;
    /// for showing IT what a computer applies.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// One place a policy can be read from.
#[derive(Debug, Clone)]
enum PolicySource {
    TomlFile(PathBuf),
    RegistryExport(PathBuf),
    /// A managed preferences plist, or a `.mobileconfig` profile holding one.
    ManagedPreferences(PathBuf),
    #[cfg(windows)]
    Registry,
}

impl PolicySource {
    fn for_file(path: &Path) -> Self {
        let extension = path.extension().and_then(|ext| ext.to_str()).map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("reg") => Self::RegistryExport(path.to_owned()),
            Some("plist" | "mobileconfig") => Self::ManagedPreferences(path.to_owned()),
            _ => Self::TomlFile(path.to_owned()),
        }
    }

    fn origin(&self) -> String {
        match self {
            Self::TomlFile(path) | Self::RegistryExport(path) | Self::ManagedPreferences(path) => {
                path.display().to_string()
            }
            #[cfg(windows)]
            Self::Registry => format!(r"HKEY_LOCAL_MACHINE\{REGISTRY_KEY}"),
        }
    }

    fn load(&self) -> Result<Option<Policy>, PolicyError> {
        let origin = self.origin();
        let unreadable = |source| PolicyError::Unreadable { origin: origin.clone(), source };
        let settings = match self {
            Self::TomlFile(path) => {
                return match std::fs::read_to_string(path) {
                    Ok(text) => Policy::parse(&text, path).map(Some),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(unreadable(source)),
                };
            }
            Self::RegistryExport(path) => match std::fs::read(path) {
                Ok(bytes) => registry::settings(registry::parse_export(&bytes), &origin)?,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(unreadable(source)),
            },
            Self::ManagedPreferences(path) => match managed_preferences::read(path, &origin)? {
                Some(settings) => settings,
                None => return Ok(None),
            },
            #[cfg(windows)]
            Self::Registry => match registry::read_machine_policy(&origin)? {
                Some(values) => registry::settings(Ok(values), &origin)?,
                None => return Ok(None),
            },
        };
        Policy::from_managed(settings, origin).map(Some)
    }
}

/// Absolute here, or in Windows form (`C:\…`, `\\server\…`): a
/// Windows policy can be checked on any computer before it is deployed.
fn is_absolute_anywhere(path: &Path) -> bool {
    let text = path.to_string_lossy();
    let bytes = text.as_bytes();
    path.is_absolute()
        || text.starts_with(r"\\")
        || (bytes.len() > 2
            && bytes[0].is_ascii_alphabetic()
            && bytes[1] == b':'
            && bytes[2] == b'\\')
}

fn policy_file_override() -> Option<PathBuf> {
    std::env::var_os(POLICY_FILE_ENV).filter(|path| !path.is_empty()).map(PathBuf::from)
}

#[cfg(target_os = "macos")]
fn system_source() -> PolicySource {
    PolicySource::ManagedPreferences(PathBuf::from(format!(
        "/Library/Managed Preferences/{PREFERENCES_DOMAIN}.plist"
    )))
}

#[cfg(windows)]
fn system_source() -> PolicySource {
    PolicySource::Registry
}

#[cfg(not(any(target_os = "macos", windows)))]
fn system_source() -> PolicySource {
    PolicySource::TomlFile(PathBuf::from("/etc/sealpost/policy.toml"))
}

/// Puts a value read from managed settings into the TOML layout, checking
/// it against its key's kind; `value` names the key as the source does.
fn insert_managed(
    settings: &mut toml::Table,
    name: &str,
    value: ManagedValue,
    origin: &str,
) -> Result<(), PolicyError> {
    let key = KEYS.iter().find(|key| key.managed.eq_ignore_ascii_case(name)).ok_or_else(|| {
        PolicyError::Invalid {
            origin: origin.to_owned(),
            key: name.to_owned(),
            problem: format!(
                "is not a Sealpost setting; the settings are {}",
                KEYS.iter().map(|key| key.managed).collect::<Vec<_>>().join(", ")
            ),
        }
    })?;
    let wrong = |expected: &str| PolicyError::Invalid {
        origin: origin.to_owned(),
        key: key.managed.to_owned(),
        problem: format!("must be {expected}, not {}", value.describe()),
    };
    let converted: toml::Value = match (key.kind, &value) {
        (KeyKind::Text, ManagedValue::Text(text)) => text.clone().into(),
        (KeyKind::Text, _) => return Err(wrong("text")),
        (KeyKind::Flag, ManagedValue::Flag(on)) => (*on).into(),
        (KeyKind::Flag, ManagedValue::Number(0)) => false.into(),
        (KeyKind::Flag, ManagedValue::Number(1)) => true.into(),
        (KeyKind::Flag, _) => return Err(wrong("1 (on) or 0 (off)")),
        (KeyKind::Port, ManagedValue::Number(port)) if (1..=65535).contains(port) => (*port).into(),
        (KeyKind::Port, _) => return Err(wrong("a port number from 1 to 65535")),
        (KeyKind::List, ManagedValue::List(items)) => items.clone().into(),
        (KeyKind::List, _) => return Err(wrong("a list of texts (REG_MULTI_SZ, array)")),
        (KeyKind::Choice(choices), ManagedValue::Text(text))
            if choices.contains(&text.as_str()) =>
        {
            text.clone().into()
        }
        (KeyKind::Choice(choices), _) => {
            return Err(wrong(&format!("one of {}", choices.join(", "))));
        }
    };
    let (table, field) = match key.toml.split_once('.') {
        Some((section, field)) => {
            // Sections are only ever made here, always as tables.
            match settings.entry(section).or_insert_with(|| toml::Table::new().into()) {
                toml::Value::Table(table) => (table, field),
                _ => return Err(wrong("in its section")),
            }
        }
        None => (settings, key.toml),
    };
    if table.insert(field.to_owned(), converted).is_some() {
        return Err(PolicyError::Invalid {
            origin: origin.to_owned(),
            key: key.managed.to_owned(),
            problem: "is set twice (the names are not case-sensitive)".to_owned(),
        });
    }
    Ok(())
}

/// A value as a registry or a preferences file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedValue {
    Text(String),
    Number(i64),
    Flag(bool),
    List(Vec<String>),
    /// Anything else, described for the error message.
    Other(String),
}

impl ManagedValue {
    fn describe(&self) -> String {
        match self {
            Self::Text(text) => format!("the text {text:?}"),
            Self::Number(number) => format!("the number {number}"),
            Self::Flag(on) => format!("the boolean {on}"),
            Self::List(_) => "a list".to_owned(),
            Self::Other(kind) => kind.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new("/etc/sealpost/policy.toml"))
    }

    #[test]
    fn a_complete_policy_is_read() {
        let policy = parse(
            r#"
server_url = "https://Sealpost.example.org/"
lock_server = true
folders = ["INBOX", "Archive"]
outbox_folder = "Secure Outbox"
sent_folder = "Sent Items"
ca_file = "/etc/sealpost/ca.pem"
start_at_login = true
notifications = false

[imap]
host = "imap.example.org"
port = 993
security = "tls"

[smtp]
host = "smtp.example.org"
port = 587
security = "start_tls"
"#,
        )
        .expect("valid policy");
        assert_eq!(policy.server_url.as_deref(), Some("https://sealpost.example.org"));
        assert!(policy.lock_server);
        assert_eq!(policy.folders, Some(vec!["INBOX".to_owned(), "Archive".to_owned()]));
        assert_eq!(policy.outbox_folder.as_deref(), Some("Secure Outbox"));
        assert_eq!(policy.sent_folder.as_deref(), Some("Sent Items"));
        assert_eq!(
            policy.imap,
            Some(MailEndpoint {
                host: "imap.example.org".into(),
                port: 993,
                security: MailSecurity::Tls
            })
        );
        assert_eq!(policy.smtp.map(|smtp| smtp.security), Some(MailSecurity::StartTls));
        assert_eq!(policy.origin, "/etc/sealpost/policy.toml");
        assert_eq!(policy.ca_file.as_deref(), Some(Path::new("/etc/sealpost/ca.pem")));
        assert_eq!((policy.start_at_login, policy.notifications), (Some(true), Some(false)));
    }

    #[test]
    fn an_empty_policy_presets_nothing() {
        let policy = parse("# managed by IT\n").expect("empty policy");
        assert_eq!(policy, Policy { origin: policy.origin.clone(), ..Policy::default() });
    }

    #[test]
    fn an_unknown_key_names_the_file_the_line_and_the_key() {
        let error = parse("server_url = \"https://sealpost.example.org\"\nlock_sever = true\n")
            .expect_err("typo refused")
            .to_string();
        assert!(error.contains("/etc/sealpost/policy.toml"), "{error}");
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("lock_sever"), "{error}");

        let error = parse(
            "[imap]\nhost = \"imap.example.org\"\nport = 993\nsecurity = \"tls\"\nuser = \"x\"\n",
        )
        .expect_err("unknown key in a section refused")
        .to_string();
        assert!(error.contains("line 5") && error.contains("user"), "{error}");
    }

    #[test]
    fn a_wrong_type_names_the_file_and_the_line() {
        let error = parse("folders = \"INBOX\"\n").expect_err("bad type refused").to_string();
        assert!(error.contains("/etc/sealpost/policy.toml"), "{error}");
        assert!(error.contains("line 1"), "{error}");

        let error =
            parse("\n[smtp]\nhost = \"smtp.example.org\"\nport = 25\nsecurity = \"plain\"\n")
                .expect_err("plain text refused")
                .to_string();
        assert!(error.contains("line 5"), "{error}");
    }

    #[test]
    fn inconsistent_values_name_the_key() {
        let error = parse("lock_server = true\n").expect_err("nothing to lock to").to_string();
        assert!(error.contains("`lock_server`") && error.contains("policy.toml"), "{error}");
        let error = parse("server_url = \"http://sealpost.example.org\"\n")
            .expect_err("plain http refused");
        assert!(error.to_string().contains("`server_url`"), "{error}");
        let error = parse("ca_file = \"ca.pem\"\n").expect_err("relative CA file refused");
        assert!(error.to_string().contains("`ca_file`"), "{error}");
        for (text, key) in [
            ("outbox_folder = \" \"\n", "`outbox_folder` must not be an empty"),
            ("sent_folder = \"\"\n", "`sent_folder` must not be an empty"),
            (
                "outbox_folder = \"Out\"\nsent_folder = \"Out\"\n",
                "`outbox_folder` must not be sent_folder",
            ),
            ("sent_folder = \"Sealpost Outbox\"\n", "`sent_folder` must not be the Outbox"),
            ("outbox_folder = \"inbox\"\n", "`outbox_folder` must not be INBOX"),
            (
                "folders = [\"Work\"]\noutbox_folder = \"Work\"\n",
                "`outbox_folder` must not be INBOX or one of folders",
            ),
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn the_policy_overrides_the_configured_folders_only_where_it_decides() {
        let mut config: crate::config::AgentConfig = toml::from_str(
            r#"
email = "alice@example.org"
device_id = "dev_1"
device_name = "alice laptop"
registered_at = "2026-11-23T10:00:00Z"
folders = ["INBOX"]
sent_folder = "Sent"
secret_store = "keyring"

[server]
url = "https://sealpost.example.org"
origin = "https://sealpost.example.org"
signing_keys = []

[imap]
host = "imap.example.org"
port = 993
username = "alice@example.org"
"#,
        )
        .expect("a registration");
        let before = config.clone();
        parse("").expect("empty").apply(&mut config);
        assert_eq!(config, before, "an empty policy changes nothing");

        parse("outbox_folder = \"Secure Outbox\"\n").expect("policy").apply(&mut config);
        assert_eq!(config.outbox_folder(), "Secure Outbox");
        assert_eq!(config.sent_folder.as_deref(), Some("Sent"), "left to the configuration");
        parse("sent_folder = \"Sent Items\"\nfolders = [\"Archive\"]\n")
            .expect("policy")
            .apply(&mut config);
        assert_eq!(config.sent_folder.as_deref(), Some("Sent Items"));
        assert_eq!(config.folders, ["Archive"]);
        assert_eq!(config.outbox_folder(), "Secure Outbox");
    }

    #[test]
    fn the_ca_file_is_read_when_asked_and_a_missing_one_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        let text = format!("ca_file = {:?}\n", ca.display().to_string());
        let policy = parse(&text).expect("policy");
        let error = policy.ca_pem().expect_err("no file yet").to_string();
        assert!(error.contains("ca.pem") && error.contains("ask IT"), "{error}");
        std::fs::write(&ca, b"-----BEGIN CERTIFICATE-----\n").expect("write");
        assert_eq!(
            policy.ca_pem().expect("read").as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----\n"[..])
        );
        assert_eq!(parse("").expect("empty").ca_pem().expect("none"), None);
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy").join(name)
    }

    /// The policy without where it came from, to compare sources.
    fn settings_of(path: &Path) -> Policy {
        Policy { origin: String::new(), ..Policy::load(path).expect("valid policy") }
    }

    #[test]
    fn the_registry_and_managed_preferences_say_what_the_toml_file_says() {
        let dir = tempfile::tempdir().expect("temp dir");
        let expected = settings_of(&fixture("complete.toml"));
        assert_eq!(expected.local_copies, Some(false));
        assert_eq!(expected.updates, Some(false));
        assert_eq!(expected.outbox_folder.as_deref(), Some("Secure Outbox"));
        assert_eq!(expected.sent_folder.as_deref(), Some("Sent Items"));

        assert_eq!(settings_of(&fixture("complete.reg")), expected, "registry export");
        // regedit itself writes UTF-16 with a byte order mark.
        let text = std::fs::read_to_string(fixture("complete.reg")).expect("read");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.replace('\n', "\r\n").encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let exported = dir.path().join("exported.REG");
        std::fs::write(&exported, utf16).expect("write");
        assert_eq!(settings_of(&exported), expected, "UTF-16 registry export");

        assert_eq!(settings_of(&fixture("complete.plist")), expected, "managed preferences");
        let mut payload =
            plist::Value::from_file(fixture("complete.plist")).expect("plist").into_dictionary();
        let payload = payload.as_mut().expect("dictionary");
        payload.insert("PayloadType".into(), PREFERENCES_DOMAIN.into());
        payload.insert("PayloadUUID".into(), "0B0E5C51-0000-4000-8000-000000000001".into());
        let mut profile = plist::Dictionary::new();
        profile.insert("PayloadType".into(), "Configuration".into());
        profile.insert(
            "PayloadContent".into(),
            vec![plist::Value::Dictionary(payload.clone())].into(),
        );
        let mobileconfig = dir.path().join("sealpost.mobileconfig");
        plist::Value::Dictionary(profile).to_file_xml(&mobileconfig).expect("write profile");
        assert_eq!(settings_of(&mobileconfig), expected, "configuration profile");
    }

    #[test]
    fn a_managed_policy_is_reported_with_its_own_value_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let reg = |name: &str, values: &str| {
            let path = dir.path().join(name);
            let text = format!(
                "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Sealpost\\Sealpost]\n{values}\n"
            );
            std::fs::write(&path, text).expect("write");
            Policy::load(&path).expect_err("refused").to_string()
        };
        let error = reg(
            "flag.reg",
            "\"ServerUrl\"=\"https://sealpost.example.org\"\n\"LockServer\"=\"yes\"",
        );
        assert!(error.contains("`LockServer`") && error.contains("1 (on) or 0 (off)"), "{error}");
        assert!(error.contains("flag.reg") && error.contains("ask IT"), "{error}");
        let error = reg("typo.reg", "\"ServerUri\"=\"https://sealpost.example.org\"");
        assert!(error.contains("`ServerUri` is not a Sealpost setting"), "{error}");
        assert!(error.contains("ServerUrl, LockServer"), "{error}");
        let error = reg("half.reg", "\"ImapHost\"=\"imap.example.org\"");
        assert!(error.contains("`ImapPort` is needed with ImapHost"), "{error}");
        let error = reg("lock.reg", "\"LockServer\"=dword:00000001");
        assert!(error.contains("`LockServer` needs ServerUrl"), "{error}");
        let error = reg(
            "port.reg",
            "\"SmtpHost\"=\"smtp.example.org\"\n\"SmtpPort\"=dword:00010000\n\"SmtpSecurity\"=\"tls\"",
        );
        assert!(error.contains("`SmtpPort` must be a port number"), "{error}");
        let error = reg("outbox.reg", "\"OutboxFolder\"=\"Sent\"\n\"SentFolder\"=\"Sent\"");
        assert!(error.contains("`OutboxFolder` must not be SentFolder"), "{error}");
        let error = reg("empty.reg", "\"SentFolder\"=\"\"");
        assert!(error.contains("`SentFolder` must not be an empty folder name"), "{error}");

        let other_key = dir.path().join("other.reg");
        std::fs::write(&other_key, "Windows Registry Editor Version 5.00\n\n[HKEY_CURRENT_USER\\Software\\Sealpost]\n\"ServerUrl\"=\"https://x.example\"\n").expect("write");
        let error = Policy::load(&other_key).expect_err("wrong key").to_string();
        assert!(
            error.contains(r"[HKEY_LOCAL_MACHINE\Software\Policies\Sealpost\Sealpost]"),
            "{error}"
        );
        let not_reg = dir.path().join("notes.reg");
        std::fs::write(&not_reg, "server_url = 1\n").expect("write");
        let error = Policy::load(&not_reg).expect_err("not an export").to_string();
        assert!(error.contains("not a registry export"), "{error}");

        let plist = dir.path().join("org.sealpost.desktop.plist");
        let mut settings = plist::Dictionary::new();
        settings.insert("ImapHost".into(), "imap.example.org".into());
        settings.insert("ImapPort".into(), 993.into());
        settings.insert("ImapSecurity".into(), "plain".into());
        plist::Value::Dictionary(settings).to_file_binary(&plist).expect("write plist");
        let error = Policy::load(&plist).expect_err("plain refused").to_string();
        assert!(error.contains("`ImapSecurity` must be one of tls, start_tls"), "{error}");
        let mut twice = plist::Dictionary::new();
        twice.insert("ServerUrl".into(), "https://a.example.org".into());
        twice.insert("serverurl".into(), "https://b.example.org".into());
        plist::Value::Dictionary(twice).to_file_xml(&plist).expect("write plist");
        let error = Policy::load(&plist).expect_err("set twice").to_string();
        assert!(error.contains("`ServerUrl` is set twice"), "{error}");
        std::fs::write(&plist, "not a plist").expect("write");
        let error = Policy::load(&plist).expect_err("not a plist").to_string();
        assert!(error.contains("not a property list"), "{error}");

        for absent in ["absent.reg", "absent.plist", "absent.mobileconfig", "absent.toml"] {
            assert!(Policy::load_if_present(&dir.path().join(absent)).expect("absent").is_none());
        }
    }

    #[test]
    fn registry_values_decode_from_their_raw_bytes() {
        let utf16 = |text: &str| text.encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<_>>();
        assert_eq!(registry::decode(1, &utf16("INBOX\0")), ManagedValue::Text("INBOX".into()));
        assert_eq!(registry::decode(4, &[1, 0, 0, 0]), ManagedValue::Number(1));
        assert_eq!(
            registry::decode(7, &utf16("INBOX\0Archive\0\0")),
            ManagedValue::List(vec!["INBOX".into(), "Archive".into()])
        );
        assert!(matches!(registry::decode(4, &[1, 0]), ManagedValue::Other(_)));
        assert!(matches!(registry::decode(3, &[1]), ManagedValue::Other(_)));
    }

    #[test]
    fn the_effective_policy_reads_back_as_the_same_policy() {
        let policy = Policy::load(&fixture("complete.toml")).expect("valid");
        let written = policy.to_toml();
        assert_eq!(Policy::parse(&written, &fixture("complete.toml")).expect("reparsed"), policy);
        assert!(written.contains("local_copies = false"), "{written}");
        assert!(written.contains("outbox_folder = \"Secure Outbox\""), "{written}");
    }

    #[test]
    fn every_key_has_distinct_names() {
        let mut toml: Vec<_> = KEYS.iter().map(|key| key.toml).collect();
        toml.sort_unstable();
        let mut managed: Vec<_> = KEYS.iter().map(|key| key.managed.to_ascii_lowercase()).collect();
        toml.dedup();
        managed.sort();
        managed.dedup();
        assert_eq!((toml.len(), managed.len()), (KEYS.len(), KEYS.len()));
    }

    #[test]
    fn a_missing_file_is_no_policy_and_an_unreadable_one_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(
            Policy::load_if_present(&dir.path().join("policy.toml")).expect("absent").is_none()
        );
        // A directory where the file should be cannot be read as one.
        let error = Policy::load_if_present(dir.path()).expect_err("unreadable");
        assert!(matches!(error, PolicyError::Unreadable { .. }), "{error}");

        let file = dir.path().join("policy.toml");
        std::fs::write(&file, "server_url = \"sealpost.example.org\"\n").expect("write");
        let policy = Policy::load(&file).expect("valid");
        assert_eq!(policy.server_url.as_deref(), Some("https://sealpost.example.org"));
        assert_eq!(policy.origin, file.display().to_string());
    }
}
