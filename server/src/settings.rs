//! The server's one typed settings struct.
//!
//! Layers, later ones winning: built-in defaults, the TOML file given with
//! `--config`, then `SEALPOST_SECTION__KEY` environment variables. Every key is
//! documented in `server/sealpost.example.toml`; a test keeps the two in step.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::blocklist::BlocklistSettings;
use sealpost_proto::api::{MailEndpoint, MailSecurity, MailSettings, RecalledCopies};
use sealpost_proto::notification::{normalize_address, normalize_origin};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SEALPOST_";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub tls: TlsSettings,
    pub database: DatabaseSettings,
    pub messages: MessageSettings,
    pub storage: StorageSettings,
    pub accounts: AccountSettings,
    pub limits: RateLimitSettings,
    pub smtp: SmtpSettings,
    pub outbox: OutboxSettings,
    pub inbound: InboundSettings,
    pub masking: MaskingSettings,
    pub dkim: DkimSettings,
    pub admin: AdminSettings,
    pub blocklists: BlocklistSettings,
    pub branding: BrandingSettings,
    pub webmail: WebmailSettings,
    pub discovery: DiscoverySettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The origin clients reach this server at (`https://host[:port]`); it is
    /// written into every notification. Default: `https://localhost:<port>`.
    pub public_url: Option<String>,
    /// Where the database, certificate, signing keys and message content live.
    pub data_dir: PathBuf,
    /// HTTPS connections open at once, TLS handshakes included; a client
    /// over it is answered 503 and its connection closed.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, in seconds;
    /// also how long an idle connection is kept open for the next request.
    pub request_header_timeout_seconds: u64,
    /// How long a request body may pause between two pieces, in seconds,
    /// before the request is abandoned.
    pub request_body_timeout_seconds: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: None,
            data_dir: PathBuf::from("sealpost-data"),
            max_connections: 10_000,
            request_header_timeout_seconds: 30,
            request_body_timeout_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain. Unset: a self-signed certificate is generated in
    /// `<data_dir>/tls/` on first start and its fingerprint printed.
    pub cert_file: Option<PathBuf>,
    /// PEM private key matching `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Extra DNS names for the self-signed certificate (localhost and the
    /// loopback addresses are always included).
    pub hostnames: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (one server), or `postgres://USER@HOST/DB` for
    /// several instances sharing one database. Default:
    /// `sqlite://<data_dir>/sealpost.db`.
    pub url: Option<String>,
    /// Connections this instance keeps open to PostgreSQL at most.
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { url: None, max_connections: 16 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageSettings {
    /// Largest accepted upload (raw MIME with attachments), in bytes.
    pub max_size: u64,
    /// Most recipients one message may have.
    pub max_recipients: usize,
    /// Days after which a message stops being readable unless its sender
    /// chose otherwise; 0: messages do not expire by default.
    pub expire_after_days: u32,
    /// What agents do with the copies of a recalled message already swapped
    /// into mailboxes: keep them, or replace them with a short notice.
    pub recalled_copies: RecalledCopies,
}

impl Default for MessageSettings {
    fn default() -> Self {
        Self {
            max_size: 50 * 1024 * 1024,
            max_recipients: 500,
            expire_after_days: 0,
            recalled_copies: RecalledCopies::Keep,
        }
    }
}

/// Where message content is kept: small content in the database, larger
/// content in an object store (a directory, or an S3-compatible bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Content up to this many bytes is kept in the database; larger
    /// content in the object store. 0: all content in the object store.
    pub inline_max_bytes: u64,
    /// The object store: `filesystem` or `s3`.
    pub backend: StorageBackend,
    /// The directory of the `filesystem` backend. Default: `<data_dir>/messages`.
    pub path: Option<PathBuf>,
    /// The bucket of the `s3` backend.
    pub s3: S3Settings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            inline_max_bytes: 64 * 1024,
            backend: StorageBackend::Filesystem,
            path: None,
            s3: S3Settings::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Files in a directory (`storage.path`).
    Filesystem,
    /// An S3-compatible bucket (`[storage.s3]`).
    S3,
}

/// An S3-compatible bucket (AWS S3, MinIO, Ceph, Garage, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    pub bucket: Option<String>,
    /// The service's URL, such as `https://minio.example.org:9000`; unset:
    /// AWS S3 in `region`. Buckets are addressed by path (`<endpoint>/<bucket>`).
    pub endpoint: Option<String>,
    pub region: String,
    /// Static credentials; unset: the instance's or container's role.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// Allow an `http://` endpoint (a service on the same host or network only).
    pub allow_http: bool,
    /// Put every object under this prefix (`<prefix>/<2 chars>/<id>.eml`).
    pub prefix: Option<String>,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            bucket: None,
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            prefix: None,
        }
    }
}

impl StorageSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let invalid = |key, problem: &str| Err((key, problem.to_owned()));
        if matches!(&self.path, Some(path) if path.as_os_str().is_empty()) {
            return invalid(
                "storage.path",
                "must not be empty (leave it out for <data_dir>/messages)",
            );
        }
        let s3 = &self.s3;
        if self.backend == StorageBackend::S3 {
            match s3.bucket.as_deref() {
                None | Some("") => {
                    return invalid(
                        "storage.s3.bucket",
                        "must be set when storage.backend is \"s3\"",
                    );
                }
                Some(bucket) if bucket.contains(['/', ' ']) => {
                    return invalid(
                        "storage.s3.bucket",
                        "must be a bucket name, without '/' or spaces",
                    );
                }
                Some(_) => {}
            }
            if s3.region.is_empty() {
                return invalid("storage.s3.region", "must not be empty (us-east-1 when in doubt)");
            }
        }
        if let Some(endpoint) = &s3.endpoint {
            if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                return invalid(
                    "storage.s3.endpoint",
                    "must be a URL such as https://s3.example.org (no bucket in it)",
                );
            }
            if endpoint.starts_with("http://") && !s3.allow_http {
                return invalid(
                    "storage.s3.endpoint",
                    "is http://: set storage.s3.allow_http = true to send content unencrypted",
                );
            }
        }
        if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
            return invalid(
                "storage.s3.access_key_id",
                "set storage.s3.access_key_id and storage.s3.secret_access_key together or neither",
            );
        }
        if let Some(prefix) = &s3.prefix
            && (prefix.trim_matches('/').is_empty() || prefix.split('/').any(|part| part == ".."))
        {
            return invalid(
                "storage.s3.prefix",
                "must be a path such as sealpost/messages, or left out",
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountSettings {
    pub min_password_length: usize,
    pub code_ttl_seconds: u64,
    /// Wrong guesses allowed per code before it is void.
    pub code_max_attempts: u32,
    pub access_token_ttl_seconds: u64,
    pub refresh_token_ttl_days: u64,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            min_password_length: 10,
            code_ttl_seconds: 15 * 60,
            code_max_attempts: 5,
            access_token_ttl_seconds: 60 * 60,
            refresh_token_ttl_days: 90,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Verification emails per address per hour.
    pub code_requests_per_address_per_hour: u32,
    /// Verification emails per client IP per hour.
    pub code_requests_per_ip_per_hour: u32,
    /// Failed logins (password or code) per address per 15 minutes.
    pub failed_logins_per_address_per_15_minutes: u32,
    /// Failed logins per client IP per 15 minutes.
    pub failed_logins_per_ip_per_15_minutes: u32,
    /// Messages the SMTP listener takes from one envelope sender per hour
    /// (bounces, with the null sender, are not counted).
    pub inbound_messages_per_sender_per_hour: u32,
    /// Messages the SMTP listener takes for one address per hour.
    pub inbound_messages_per_address_per_hour: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            code_requests_per_address_per_hour: 5,
            code_requests_per_ip_per_hour: 30,
            failed_logins_per_address_per_15_minutes: 10,
            failed_logins_per_ip_per_15_minutes: 50,
            inbound_messages_per_sender_per_hour: 100,
            inbound_messages_per_address_per_hour: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption: only for a relay on the same machine.
    None,
}

/// The Secure Message Center: the pages recipients without the desktop app
/// read their secure messages in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebmailSettings {
    /// A browser stays signed in this long after signing in, in hours.
    pub session_hours: u64,
    /// Addresses at these domains are the organization's members: they may
    /// write new secure messages to anyone. Everyone else may only reply to
    /// the people of a message they received.
    pub member_domains: Vec<String>,
    /// Further members, by address, wherever their mail is kept.
    pub members: Vec<String>,
    /// Where the account page sends people to download the desktop app.
    pub desktop_download_url: Option<String>,
}

impl Default for WebmailSettings {
    fn default() -> Self {
        Self {
            session_hours: 12,
            member_domains: Vec::new(),
            members: Vec::new(),
            desktop_download_url: None,
        }
    }
}

impl WebmailSettings {
    /// Whether `email` is listed as a member or belongs to one of the
    /// organization's domains.
    pub fn is_member(&self, email: &str) -> bool {
        self.members.iter().any(|member| member.eq_ignore_ascii_case(email))
            || email.rsplit_once('@').is_some_and(|(_, domain)| {
                self.member_domains.iter().any(|member| member.eq_ignore_ascii_case(domain))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    /// Relay host. Unset: mail is not sent but written as `.eml` files to
    /// `<data_dir>/mail-pickup/` (a warning says so at start).
    pub host: Option<String>,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// A PEM CA certificate trusted for the relay, besides the system's roots
    /// (for a relay whose certificate comes from a private CA).
    pub ca_file: Option<PathBuf>,
    /// Envelope and header sender of automated mail.
    pub from_address: String,
    /// Where bounces of notifications return; each notification's envelope
    /// sender is this address with a signed tag added (`local+b…@domain`).
    /// Default: `smtp.from_address`.
    pub bounce_address: Option<String>,
    pub from_name: String,
    pub timeout_seconds: u64,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: None,
            port: 587,
            security: SmtpSecurity::Starttls,
            username: None,
            password: None,
            ca_file: None,
            from_address: "sealpost@localhost".into(),
            bounce_address: None,
            from_name: "Sealpost".into(),
            timeout_seconds: 30,
        }
    }
}

/// Who may change the organization's settings through the admin API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Accounts (by email address) allowed to use `/api/v1/admin/*`.
    pub emails: Vec<String>,
}

/// DKIM signing of notifications: all three keys, or none (no signature).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimSettings {
    /// The signing domain (`d=`), normally the domain of the senders' addresses.
    pub domain: Option<String>,
    /// The selector (`s=`): the key is published at `<selector>._domainkey.<domain>`.
    pub selector: Option<String>,
    /// PEM private key: RSA (PKCS#1 or PKCS#8, 2048 bits recommended) or Ed25519 (PKCS#8).
    pub private_key_file: Option<PathBuf>,
}

/// The SMTP listener for mail coming back (bounces of notifications).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundSettings {
    /// Address and port to listen on; unset: no listener.
    pub listen: Option<SocketAddr>,
    /// The name in the greeting. Default: the public URL's host.
    pub hostname: Option<String>,
    /// Largest message accepted, in bytes.
    pub max_size: usize,
    pub max_recipients: usize,
    /// Connections served at once; more are told to try again later.
    pub max_connections: usize,
    /// How long a client may take for one command or the message, in seconds.
    pub timeout_seconds: u64,
    /// Front MTAs (such as Postfix in front of the listener): for mail they
    /// hand over, SPF checks the client their own `Received` field names.
    pub front_addresses: Vec<std::net::IpAddr>,
}

impl Default for InboundSettings {
    fn default() -> Self {
        Self {
            listen: None,
            hostname: None,
            max_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 200,
            timeout_seconds: 300,
            front_addresses: vec![
                std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::Ipv6Addr::LOCALHOST.into(),
            ],
        }
    }
}

/// Masked addresses: members write to correspondents from addresses at the
/// platform's domain, and answers come back through the SMTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingSettings {
    /// The domain masked addresses are at (its MX, or the front MTA, must
    /// hand its mail to the listener). Unset: no masked mail.
    pub domain: Option<String>,
    /// The display name on a member's masked mail; `{name}` is the
    /// member's name and `{organization}` the organization's.
    pub display_name: String,
    /// Relay only from the correspondent an address was issued to; when
    /// false, anyone in the directory may write to it.
    pub only_issued_correspondent: bool,
    /// `Authentication-Results` headers whose authentication service
    /// (the first word) is one of these are trusted: the front MTA's own.
    /// The front MTA must remove such headers from arriving mail.
    pub trusted_authserv_ids: Vec<String>,
    /// DNS servers (address and port) the server checks SPF, DKIM and
    /// DMARC with when no trusted field says; empty: the system's.
    pub dns_servers: Vec<SocketAddr>,
    /// Answers to a member's secure-message notifications (which carry a
    /// masked Reply-To) are stored as secure messages for the member, who
    /// is notified and reads them over HTTPS; false: relayed like others.
    pub store_notification_replies: bool,
    /// Relay mail that did not authenticate at all (no SPF, DKIM or DMARC
    /// pass). DMARC failures are never relayed.
    pub relay_unauthenticated: bool,
    /// The subject of the answer to senders who may not write here.
    pub not_permitted_subject: String,
    /// Its text; `{address}` is the address written to, `{organization}`
    /// the organization's name.
    pub not_permitted_text: String,
    /// Answers to unknown senders sent in one hour at most, all senders together.
    pub not_permitted_per_hour: u32,
}

impl Default for MaskingSettings {
    fn default() -> Self {
        Self {
            domain: None,
            display_name: "{name} via {organization}".into(),
            only_issued_correspondent: true,
            trusted_authserv_ids: Vec::new(),
            dns_servers: Vec::new(),
            relay_unauthenticated: true,
            store_notification_replies: true,
            not_permitted_subject: "Not delivered: you may not write to this address".into(),
            not_permitted_text: "Your message to {address} was not delivered: this address \
                accepts mail only from correspondents {organization} recognises.\n\n\
                If you believe you should be able to write here, please contact \
                {organization} by other means.\n"
                .into(),
            not_permitted_per_hour: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSettings {
    /// Send queued notifications from this process.
    pub worker: bool,
    /// Notifications handed to the relay at the same time.
    pub concurrency: u32,
    /// Wait after the first temporary failure; it doubles with each attempt.
    pub retry_initial_seconds: u64,
    /// Longest wait between two attempts.
    pub retry_max_seconds: u64,
    /// A notification still failing temporarily after this long is marked failed.
    pub give_up_after_hours: u64,
    /// How long a worker holds a notification it is sending. If its
    /// instance dies mid-attempt, another sends the notification once this
    /// has passed. Default: three SMTP timeouts and a minute.
    pub lease_seconds: Option<u64>,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            worker: true,
            concurrency: 8,
            retry_initial_seconds: 60,
            retry_max_seconds: 3600,
            give_up_after_hours: 120,
            lease_seconds: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrandingSettings {
    pub organization_name: String,
    /// Postal address line shown under every notification.
    pub footer: String,
    pub legal_disclaimer: String,
    pub secure_message_disclaimer: String,
    /// Base URL of the Secure Message Center. Default: this server's origin.
    pub center_url: Option<String>,
}

impl Default for BrandingSettings {
    fn default() -> Self {
        Self {
            organization_name: "Sealpost".into(),
            footer: String::new(),
            legal_disclaimer: String::new(),
            secure_message_disclaimer: "This message was delivered securely: its content never \
                                        travelled by email."
                .into(),
            center_url: None,
        }
    }
}

/// The organization's mail servers, announced in `/.well-known/sealpost` so
/// desktop agents configure themselves at registration instead of relying on
/// autoconfig or guessed host names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySettings {
    /// Where members read mail. Unset: no IMAP server is announced.
    pub imap_host: Option<String>,
    pub imap_port: u16,
    pub imap_security: MailSecurity,
    /// Where members send mail. Unset: no SMTP server is announced.
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub smtp_security: MailSecurity,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            imap_host: None,
            imap_port: 993,
            imap_security: MailSecurity::Tls,
            smtp_host: None,
            smtp_port: 465,
            smtp_security: MailSecurity::Tls,
        }
    }
}

impl DiscoverySettings {
    /// What the well-known document announces; `None` when no host is set.
    pub fn mail_settings(&self) -> Option<MailSettings> {
        let endpoint = |host: &Option<String>, port, security| {
            host.as_ref().map(|host| MailEndpoint { host: host.clone(), port, security })
        };
        let imap = endpoint(&self.imap_host, self.imap_port, self.imap_security);
        let smtp = endpoint(&self.smtp_host, self.smtp_port, self.smtp_security);
        (imap.is_some() || smtp.is_some()).then_some(MailSettings { imap, smtp })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `sealpost_server=debug,info`;
    /// the `RUST_LOG` environment variable wins when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Text, filter: "info".into() }
    }
}

/// A value that must never reach a log: `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl Settings {
    /// Defaults, then `file` (when given; it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(SettingsError::Invalid {
                    key: "--config",
                    problem: format!("{} does not exist or is not a file", path.display()),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only SEALPOST_SECTION__KEY variables are configuration; others with the
        // prefix (such as SEALPOST_SERVER_BIN for tools) are not this server's.
        figment = figment
            .merge(Env::prefixed(ENV_PREFIX).filter(|key| key.as_str().contains("__")).split("__"));
        let settings: Settings =
            figment.extract().map_err(|error| SettingsError::Load(Box::new(error)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: relations between keys and value formats.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid =
            |key, problem: &str| Err(SettingsError::Invalid { key, problem: problem.to_owned() });
        if let Some(url) = &self.server.public_url
            && normalize_origin(url).is_none()
        {
            return invalid(
                "server.public_url",
                "must be an https origin such as https://sealpost.example.org (no path)",
            );
        }
        if let Some(url) = &self.branding.center_url
            && !url.starts_with("https://")
        {
            return invalid("branding.center_url", "must start with https://");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid("tls.cert_file", "set both tls.cert_file and tls.key_file, or neither");
        }
        if let Some(url) = &self.database.url
            && !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            return invalid(
                "database.url",
                "must be sqlite://PATH or postgres://USER@HOST[:PORT]/DATABASE",
            );
        }
        if let Some(lease) = self.outbox.lease_seconds
            && lease <= self.smtp.timeout_seconds
        {
            return invalid(
                "outbox.lease_seconds",
                "must be longer than smtp.timeout_seconds, or one attempt could outlast its lease",
            );
        }
        if self.limits.inbound_messages_per_sender_per_hour == 0 {
            return invalid("limits.inbound_messages_per_sender_per_hour", "must be at least 1");
        }
        if self.limits.inbound_messages_per_address_per_hour == 0 {
            return invalid("limits.inbound_messages_per_address_per_hour", "must be at least 1");
        }
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1");
        }
        if self.server.request_header_timeout_seconds == 0 {
            return invalid("server.request_header_timeout_seconds", "must be at least 1");
        }
        if self.server.request_body_timeout_seconds == 0 {
            return invalid("server.request_body_timeout_seconds", "must be at least 1");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if let Some(domain) = &self.masking.domain {
            if !domain.contains('.') || domain.contains(['@', ' ']) {
                return invalid("masking.domain", "must be a domain such as reply.example.org");
            }
            if self.inbound.listen.is_none() {
                return invalid(
                    "inbound.listen",
                    "must be set when masking.domain is: answers to masked addresses arrive there",
                );
            }
        }
        if self.messages.max_size == 0 {
            return invalid("messages.max_size", "must be at least 1 byte");
        }
        self.storage
            .validate()
            .map_err(|(key, problem)| SettingsError::Invalid { key, problem })?;
        if self.messages.max_recipients == 0 {
            return invalid("messages.max_recipients", "must be at least 1");
        }
        if self.accounts.min_password_length < 8 {
            return invalid("accounts.min_password_length", "must be at least 8");
        }
        if !(1..=24 * 90).contains(&self.webmail.session_hours) {
            return invalid("webmail.session_hours", "must be between 1 and 2160 (90 days)");
        }
        if let Some(domain) = self
            .webmail
            .member_domains
            .iter()
            .find(|domain| domain.is_empty() || domain.contains(['@', '/', ' ']))
        {
            return invalid("webmail.member_domains", &format!("{domain:?} is not a domain name"));
        }
        if let Some(url) = &self.webmail.desktop_download_url
            && !url.starts_with("https://")
        {
            return invalid("webmail.desktop_download_url", "must start with https://");
        }
        if self.accounts.code_max_attempts == 0 {
            return invalid("accounts.code_max_attempts", "must be at least 1");
        }
        if self.accounts.access_token_ttl_seconds < 60 {
            return invalid("accounts.access_token_ttl_seconds", "must be at least 60");
        }
        if normalize_address(&self.smtp.from_address).is_none() {
            return invalid(
                "smtp.from_address",
                "must be an email address such as sealpost@example.org",
            );
        }
        if let Some(address) = &self.smtp.bounce_address
            && normalize_address(address).is_none()
        {
            return invalid(
                "smtp.bounce_address",
                "must be an email address such as bounces@example.org",
            );
        }
        if self.admin.emails.iter().any(|email| normalize_address(email).is_none()) {
            return invalid("admin.emails", "every entry must be an email address");
        }
        self.blocklists
            .validate()
            .map_err(|(key, problem)| SettingsError::Invalid { key, problem })?;
        let dkim = &self.dkim;
        let dkim_keys =
            [dkim.domain.is_some(), dkim.selector.is_some(), dkim.private_key_file.is_some()];
        if dkim_keys.contains(&true) && dkim_keys.contains(&false) {
            return invalid(
                "dkim.domain",
                "set dkim.domain, dkim.selector and dkim.private_key_file together, or none of them",
            );
        }
        if let Some(domain) = &dkim.domain
            && (domain.is_empty() || domain.contains(['@', ' ', '/']))
        {
            return invalid("dkim.domain", "must be a domain name such as example.org");
        }
        if let Some(selector) = &dkim.selector
            && (selector.is_empty()
                || !selector.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return invalid(
                "dkim.selector",
                "must be letters, digits, '-' or '.', such as sealpost2026",
            );
        }
        if self.outbox.concurrency == 0 {
            return invalid("outbox.concurrency", "must be at least 1");
        }
        if self.outbox.retry_initial_seconds == 0 {
            return invalid("outbox.retry_initial_seconds", "must be at least 1");
        }
        if self.outbox.retry_max_seconds < self.outbox.retry_initial_seconds {
            return invalid(
                "outbox.retry_max_seconds",
                "must be at least outbox.retry_initial_seconds",
            );
        }
        if self.outbox.give_up_after_hours == 0 {
            return invalid("outbox.give_up_after_hours", "must be at least 1");
        }
        if self.smtp.password.is_some() && self.smtp.username.is_none() {
            return invalid("smtp.password", "set smtp.username too");
        }
        if matches!(self.smtp.host.as_deref(), Some("")) {
            return invalid("smtp.host", "must not be empty (leave it out to write mail to files)");
        }
        let discovery = &self.discovery;
        for (key, host) in [
            ("discovery.imap_host", &discovery.imap_host),
            ("discovery.smtp_host", &discovery.smtp_host),
        ] {
            if let Some(host) = host
                && (host.is_empty() || host.contains(['@', ' ', '/', ':']))
            {
                return invalid(key, "must be a host name such as mail.example.org (no port)");
            }
        }
        if discovery.imap_port == 0 {
            return invalid("discovery.imap_port", "must be a port number (usually 993)");
        }
        if discovery.smtp_port == 0 {
            return invalid("discovery.smtp_port", "must be a port number (usually 465)");
        }
        Ok(())
    }

    /// Where bounces of notifications return.
    pub fn bounce_address(&self) -> &str {
        self.smtp.bounce_address.as_deref().unwrap_or(&self.smtp.from_address)
    }

    pub fn database_url(&self) -> String {
        self.database.url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", self.server.data_dir.join("sealpost.db").display())
        })
    }

    /// [`Self::database_url`] without a password, for logs and start-up output.
    pub fn database_url_for_display(&self) -> String {
        let url = self.database_url();
        let Some((scheme, rest)) = url.split_once("://") else { return url };
        match rest.split_once('@') {
            Some((credentials, host)) if credentials.contains(':') => {
                let user = credentials.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:********@{host}")
            }
            _ => url,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../sealpost.example.toml");

    /// The template with every commented-out `# key = value` line enabled.
    fn template_with_all_keys() -> String {
        TEMPLATE
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.split_once(" = ").is_some_and(|(key, _)| !key.contains(' ')) => {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_database_password_is_never_displayed() {
        let mut settings = Settings::default();
        settings.database.url = Some("postgres://sealpost:s3cret@db.internal:5432/sealpost".into());
        assert_eq!(
            settings.database_url_for_display(),
            "postgres://sealpost:********@db.internal:5432/sealpost"
        );
        settings.database.url = Some("postgres://sealpost@db.internal/sealpost".into());
        assert_eq!(settings.database_url_for_display(), "postgres://sealpost@db.internal/sealpost");
    }

    #[test]
    fn the_template_states_the_defaults() {
        let from_template: Settings = toml::from_str(TEMPLATE).expect("template parses");
        assert_eq!(from_template, Settings::default());
    }

    #[test]
    fn the_template_documents_every_key() {
        // Enabling the commented examples must still parse (no unknown keys)...
        let full: Settings =
            toml::from_str(&template_with_all_keys()).expect("template examples parse");
        full.validate().expect("template examples are valid");
        // ...and every key the struct serialises must appear in the template.
        let defaults = toml::Value::try_from(Settings::default()).expect("serialise");
        let full = toml::Value::try_from(full).expect("serialise");
        for (section, table) in full.as_table().expect("table") {
            let mentioned =
                defaults.get(section).and_then(|t| t.as_table()).map(|t| t.len()).unwrap_or(0);
            for (key, value) in table.as_table().expect("section") {
                // A sub-table, such as [storage.s3], is documented key by key.
                let Some(subtable) = value.as_table() else {
                    assert!(
                        template_with_all_keys().contains(&format!("\n{key} = ")),
                        "key {section}.{key} is not documented in sealpost.example.toml"
                    );
                    continue;
                };
                assert!(
                    TEMPLATE.contains(&format!("\n[{section}.{key}]\n")),
                    "section [{section}.{key}] is not in sealpost.example.toml"
                );
                for key in subtable.keys() {
                    assert!(
                        template_with_all_keys().contains(&format!("\n{key} = ")),
                        "key {section}.{key} is not documented in sealpost.example.toml"
                    );
                }
            }
            assert!(table.as_table().expect("section").len() >= mentioned);
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:8443\"\nlisen = 1\n").expect("write");
        let error = Settings::load(Some(&file)).expect_err("typo refused").to_string();
        assert!(error.contains("lisen"), "{error}");

        std::fs::write(&file, "[messages]\nmax_size = \"big\"\n").expect("write");
        let error = Settings::load(Some(&file)).expect_err("bad type refused").to_string();
        assert!(error.contains("max_size"), "{error}");

        std::fs::write(&file, "[server]\npublic_url = \"http://example.org/path\"\n")
            .expect("write");
        let error = Settings::load(Some(&file)).expect_err("bad origin refused").to_string();
        assert!(error.contains("server.public_url"), "{error}");

        std::fs::write(&file, "[discovery]\nimap_host = \"imap.example.org:993\"\n")
            .expect("write");
        let error = Settings::load(Some(&file)).expect_err("port in host refused").to_string();
        assert!(error.contains("discovery.imap_host"), "{error}");

        let missing = dir.path().join("missing.toml");
        assert!(
            Settings::load(Some(&missing))
                .expect_err("missing file")
                .to_string()
                .contains("does not exist")
        );
    }

    #[test]
    fn discovery_settings_become_the_announced_mail_servers() {
        assert_eq!(Settings::default().discovery.mail_settings(), None);
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("discovery.toml");
        std::fs::write(
            &file,
            "[discovery]\nimap_host = \"imap.example.org\"\nsmtp_host = \"smtp.example.org\"\n\
             smtp_port = 587\nsmtp_security = \"starttls\"\n",
        )
        .expect("write");
        let settings = Settings::load(Some(&file)).expect("valid discovery settings");
        let mail = settings.discovery.mail_settings().expect("announced");
        let endpoint =
            |host: &str, port, security| MailEndpoint { host: host.into(), port, security };
        assert_eq!(mail.imap, Some(endpoint("imap.example.org", 993, MailSecurity::Tls)));
        assert_eq!(mail.smtp, Some(endpoint("smtp.example.org", 587, MailSecurity::StartTls)));

        std::fs::write(&file, "[discovery]\nimap_security = \"plain\"\n").expect("write");
        let error = Settings::load(Some(&file)).expect_err("plain text refused").to_string();
        assert!(error.contains("imap_security"), "{error}");
    }

    #[test]
    fn storage_settings_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("storage.toml");
        std::fs::write(
            &file,
            "[storage]\nbackend = \"s3\"\ninline_max_bytes = 0\n[storage.s3]\n\
             bucket = \"mail\"\nendpoint = \"https://s3.example.org\"\nprefix = \"a/b\"\n\
             access_key_id = \"k\"\nsecret_access_key = \"s\"\n",
        )
        .expect("write");
        let storage = Settings::load(Some(&file)).expect("valid storage settings").storage;
        assert_eq!((storage.backend, storage.inline_max_bytes), (StorageBackend::S3, 0));
        assert_eq!(storage.s3.bucket.as_deref(), Some("mail"));
        assert_eq!(storage.s3.secret_access_key.as_ref().map(Secret::expose), Some("s"));
        assert_eq!(format!("{:?}", storage.s3.secret_access_key), "Some([redacted])");

        for (toml, key, problem) in [
            ("[storage]\nbackend = \"s3\"\n", "storage.s3.bucket", "must be set"),
            ("[storage]\nbackend = \"tape\"\n", "backend", "unknown variant"),
            (
                "[storage.s3]\nendpoint = \"http://127.0.0.1:9000\"\n",
                "storage.s3.endpoint",
                "allow_http",
            ),
            ("[storage.s3]\nendpoint = \"s3.example.org\"\n", "storage.s3.endpoint", "URL"),
            ("[storage.s3]\naccess_key_id = \"k\"\n", "storage.s3.access_key_id", "together"),
            ("[storage]\npath = \"\"\n", "storage.path", "must not be empty"),
        ] {
            std::fs::write(&file, toml).expect("write");
            let error = Settings::load(Some(&file)).expect_err(toml).to_string();
            assert!(error.contains(key) && error.contains(problem), "{toml}: {error}");
        }
    }
}
