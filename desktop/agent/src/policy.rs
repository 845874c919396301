//! The IT policy: settings an organization's IT department presets on a
//! computer (the Sealpost server, the mail servers, the folders to watch) so
//! that registration asks the user for nothing else and cannot be pointed
//! elsewhere by mistake.
//!
//! The policy is a TOML file, installed system-wide and only read by the
//! agent:
//!
//! ```toml
//! server_url = "https://sealpost.example.org"
//! lock_server = true            # refuse any other server given on the command line
//! folders = ["INBOX", "Archive"]
//! ca_file = "/etc/sealpost/ca.pem" # the organization's CA, trusted instead of the system roots
//! start_at_login = true         # the desktop app starts with the session; not changeable
//! notifications = false         # desktop notifications for new secure messages; not changeable
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
//! file an error: a policy that silently did nothing would leave IT believing
//! the computers are configured when they are not.

use std::path::{Path, PathBuf};

use sealpost_proto::api::{MailEndpoint, MailSecurity};
use serde::Deserialize;

/// Names a policy file to use instead of the system-wide one, so IT can try a
/// policy before deploying it and tests can use their own.
pub const POLICY_FILE_ENV: &str = "SEALPOST_POLICY_FILE";

/// Settings preset by the organization; they win over the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The file this policy was read from (empty when built in code); shown
    /// to the user as the origin of each setting it decides.
    pub path: PathBuf,
    /// The organization's Sealpost server.
    pub server_url: Option<String>,
    /// Refuse a different server given on the command line instead of only
    /// preferring the policy's.
    pub lock_server: bool,
    /// The IMAP folders the agent watches; `None` leaves the choice to the agent.
    pub folders: Option<Vec<String>>,
    pub imap: Option<MailEndpoint>,
    pub smtp: Option<MailEndpoint>,
    /// A PEM bundle trusted instead of the system roots, for an organization
    /// whose servers have certificates from its own CA.
    pub ca_file: Option<PathBuf>,
    /// Whether the desktop app starts with the session; `None` leaves it to the person.
    pub start_at_login: Option<bool>,
    /// Whether the desktop app announces new secure messages; `None` leaves it to the person.
    pub notifications: Option<bool>,
}

/// A policy file that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the IT policy file {path}: {source}; ask IT to check its permissions")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot read {path}, the CA file the IT policy {policy} names: {source}; ask IT to install it"
    )]
    UnreadableCa {
        policy: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the IT policy file {path} is not valid, ask IT to correct it: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("the IT policy file {path} is not valid, ask IT to correct it: `{key}` {problem}")]
    Invalid { path: PathBuf, key: &'static str, problem: String },
}

/// The file as written: strict, so typos are reported instead of ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    server_url: Option<String>,
    #[serde(default)]
    lock_server: bool,
    folders: Option<Vec<String>>,
    imap: Option<EndpointTable>,
    smtp: Option<EndpointTable>,
    ca_file: Option<PathBuf>,
    start_at_login: Option<bool>,
    notifications: Option<bool>,
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
    /// Where this computer's policy lives: the file named by
    /// [`POLICY_FILE_ENV`] when set, else the system-wide location
    /// (`/etc/sealpost/policy.toml` on Linux,
    /// `/Library/Application Support/Sealpost/policy.toml` on macOS,
    /// `%ProgramData%\Sealpost\policy.toml` on Windows).
    pub fn system_path() -> PathBuf {
        if let Some(path) = std::env::var_os(POLICY_FILE_ENV).filter(|path| !path.is_empty()) {
            return PathBuf::from(path);
        }
        system_wide_path()
    }

    /// The policy at [`Policy::system_path`]; `None` when there is no file
    /// (an unmanaged computer), an error when it exists but cannot be used.
    pub fn load_system() -> Result<Option<Policy>, PolicyError> {
        let path = Self::system_path();
        let policy = Self::load_if_present(&path)?;
        if policy.is_none() && std::env::var_os(POLICY_FILE_ENV).is_some() {
            tracing::warn!(
                path = %path.display(),
                "{POLICY_FILE_ENV} names a policy file that does not exist; no policy applies"
            );
        }
        Ok(policy)
    }

    /// The policy in `path`, or `None` when the file does not exist.
    pub fn load_if_present(path: &Path) -> Result<Option<Policy>, PolicyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PolicyError::Unreadable { path: path.to_owned(), source }),
        }
    }

    /// The policy in `path`, which must exist.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Unreadable { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and checks policy text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|error| PolicyError::Malformed {
            path: path.to_owned(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        let invalid = |key, problem: &str| PolicyError::Invalid {
            path: path.to_owned(),
            key,
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
            return Err(invalid("lock_server", "needs server_url: there is no server to lock to"));
        }
        if let Some(folders) = &file.folders
            && folders.iter().any(|folder| folder.trim().is_empty())
        {
            return Err(invalid("folders", "must not contain an empty folder name"));
        }
        let endpoint = |key, table: Option<EndpointTable>| match table {
            None => Ok(None),
            Some(table) if table.host.is_empty() || table.host.contains(['/', '@', ' ', ':']) => {
                Err(invalid(key, "host must be a host name such as mail.example.org"))
            }
            Some(table) if table.port == 0 => Err(invalid(key, "port must not be 0")),
            Some(table) => Ok(Some(MailEndpoint {
                host: table.host.to_ascii_lowercase(),
                port: table.port,
                security: table.security,
            })),
        };
        if let Some(ca_file) = &file.ca_file
            && !ca_file.is_absolute()
        {
            return Err(invalid(
                "ca_file",
                "must be an absolute path such as /etc/sealpost/ca.pem",
            ));
        }
        Ok(Policy {
            path: path.to_owned(),
            server_url,
            lock_server: file.lock_server,
            folders: file.folders,
            imap: endpoint("imap", file.imap)?,
            smtp: endpoint("smtp", file.smtp)?,
            ca_file: file.ca_file,
            start_at_login: file.start_at_login,
            notifications: file.notifications,
        })
    }

    /// What the policy decides about a registration made before it (or
    /// before it changed): the folders to watch.
    pub fn apply(&self, config: &mut crate::config::AgentConfig) {
        if let Some(folders) = &self.folders {
            config.folders.clone_from(folders);
        }
    }

    /// The contents of [`Policy::ca_file`], when the policy names one.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, PolicyError> {
        let Some(path) = &self.ca_file else { return Ok(None) };
        std::fs::read(path).map(Some).map_err(|source| PolicyError::UnreadableCa {
            policy: self.path.clone(),
            path: path.clone(),
            source,
        })
    }
}

#[cfg(target_os = "macos")]
fn system_wide_path() -> PathBuf {
    PathBuf::from("/Library/Application Support/Sealpost/policy.toml")
}

#[cfg(target_os = "windows")]
fn system_wide_path() -> PathBuf {
    let program_data = std::env::var_os("ProgramData")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
    program_data.join("Sealpost").join("policy.toml")
}

#[cfg(not(any(target_os = "macos", target_os = "windows")))]
fn system_wide_path() -> PathBuf {
    PathBuf::from("/etc/sealpost/policy.toml")
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
        assert_eq!(
            policy.imap,
            Some(MailEndpoint {
                host: "imap.example.org".into(),
                port: 993,
                security: MailSecurity::Tls
            })
        );
        assert_eq!(policy.smtp.map(|smtp| smtp.security), Some(MailSecurity::StartTls));
        assert_eq!(policy.path, Path::new("/etc/sealpost/policy.toml"));
        assert_eq!(policy.ca_file.as_deref(), Some(Path::new("/etc/sealpost/ca.pem")));
        assert_eq!((policy.start_at_login, policy.notifications), (Some(true), Some(false)));
    }

    #[test]
    fn an_empty_policy_presets_nothing() {
        let policy = parse("# managed by IT\n").expect("empty policy");
        assert_eq!(policy, Policy { path: policy.path.clone(), ..Policy::default() });
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
        assert_eq!(policy.path, file);
    }
}
