//! JSON types of the Sealpost HTTPS API, version [`API_VERSION`].
//!
//! All paths are under `/api/v1`. Times are RFC 3339 strings. Every error
//! response is an [`ErrorBody`] whose `code` is a stable [`ErrorCode`], so
//! clients branch on the code and show the message.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The API version served under `/api/v1` and announced by `/.well-known/sealpost`.
pub const API_VERSION: u32 = 1;

/// `GET /.well-known/sealpost`: what a client needs to trust this server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WellKnown {
    pub api_version: u32,
    /// The origin notifications name in `X-Sealpost-Origin`, e.g. `https://sealpost.example.org`.
    pub origin: String,
    /// Every key whose notifications are still valid; exactly one is `active`.
    pub signing_keys: Vec<PublicSigningKey>,
    /// The organization's mail servers, when the server is told them: agents
    /// configure themselves from these before trying autoconfig or guesses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<MailSettings>,
}

/// Where the organization's members read and send mail, so agents can configure themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MailSettings {
    /// Where members read mail (IMAP).
    pub imap: Option<MailEndpoint>,
    /// Where members send mail (SMTP submission).
    pub smtp: Option<MailEndpoint>,
}

/// One mail server: host, port and how the connection is encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MailEndpoint {
    pub host: String,
    pub port: u16,
    pub security: MailSecurity,
}

/// How a mail connection is encrypted. Plain text is never used: the mailbox
/// password travels on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MailSecurity {
    /// TLS from the first byte (IMAPS on 993, SMTP submission on 465).
    Tls,
    /// A plain connection upgraded with STARTTLS before anything else is sent
    /// (IMAP on 143, SMTP submission on 587). `starttls` is accepted too.
    #[serde(alias = "starttls")]
    StartTls,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicSigningKey {
    pub key_id: String,
    /// Always `ed25519` in API version 1.
    pub algorithm: String,
    /// The 32-byte public key, base64url without padding.
    pub public_key: String,
    /// Whether new notifications are signed with this key.
    pub active: bool,
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// A sentence for people: what went wrong and what to do.
    pub message: String,
}

/// Stable error codes. New codes may be added; existing ones never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed; the message names the field.
    BadRequest,
    /// An email address does not parse.
    InvalidEmail,
    /// The password does not meet the length rules.
    WeakPassword,
    /// The verification code is wrong, used or expired.
    InvalidCode,
    /// Too many requests; retry after the `Retry-After` header's seconds.
    RateLimited,
    /// No valid credentials were sent.
    Unauthenticated,
    /// The access token has expired: refresh it.
    TokenExpired,
    /// The device was signed out; enroll it again.
    DeviceRevoked,
    /// Email address or password is wrong.
    InvalidCredentials,
    /// An account with this address already exists.
    AccountExists,
    /// Nothing there, or nothing this caller may see.
    NotFound,
    /// The upload exceeds the server's size limit.
    PayloadTooLarge,
    /// The request body's content type is not accepted here.
    UnsupportedMediaType,
    /// The server could not send an email (verification code); retry later.
    MailUnavailable,
    /// Authenticated, but not allowed here (administration is for the organization's admins).
    Forbidden,
    /// Something failed on the server; the request id is in the logs.
    Internal,
    /// The sender recalled the message: its content is gone for good.
    MessageRecalled,
    /// The message reached its expiry: its content is gone for good.
    MessageExpired,
    /// The server's database is busy (locked by another writer, out of
    /// connections) or unreachable; nothing was stored. Retry after the
    /// `Retry-After` header's seconds.
    Unavailable,
    /// The server's disk is full; nothing was stored. Retry once its
    /// administrator has freed space.
    StorageFull,
}

/// `POST /api/v1/verification-codes`: email a one-time code to prove the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CodeRequest {
    pub email: String,
}

/// Answer to a code request: when the emailed code stops working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CodeSent {
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: OffsetDateTime,
}

/// `POST /api/v1/accounts`: create a password account with a verified address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateAccount {
    pub email: String,
    pub code: String,
    pub password: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Account {
    pub account_id: String,
    pub email: String,
    pub display_name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
}

/// How a device proves who it acts for when it enrolls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeviceCredential {
    /// The account's password.
    Password(String),
    /// A verification code sent to the address. Creates a password-less
    /// account on first use: this is how the desktop agent registers.
    Code(String),
}

/// `POST /api/v1/devices`: enroll a device and receive its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollDevice {
    pub email: String,
    /// Shown in the device list, e.g. "Alice's laptop (sealpost-agent)".
    pub device_name: String,
    pub credential: DeviceCredential,
}

/// Tokens of one device. Both are opaque; send the access token as
/// `Authorization: Bearer …` and trade the refresh token for a new pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceTokens {
    pub device_id: String,
    pub access_token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub access_expires_at: OffsetDateTime,
    /// Single use: each refresh returns a new one and retires the old.
    pub refresh_token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub refresh_expires_at: OffsetDateTime,
}

/// `POST /api/v1/devices/refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshTokens {
    pub refresh_token: String,
}

/// One entry of `GET /api/v1/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Device {
    pub device_id: String,
    pub name: String,
    /// A desktop agent, or a browser signed in to the Secure Message Center.
    #[serde(default)]
    pub kind: DeviceKind,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub revoked_at: Option<OffsetDateTime>,
    /// Whether this is the device making the request.
    pub current: bool,
}

/// The JSON part named `metadata` of a `POST /api/v1/messages` multipart
/// upload; the part named `content` carries the raw MIME message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadMetadata {
    /// Everyone who may retrieve the message (To, Cc and Bcc alike).
    pub recipients: Vec<String>,
    /// Whether the server mails each recipient its notification itself
    /// (webmail and API senders). The desktop agent leaves this off and sends
    /// the returned notifications through the organization's own relay.
    #[serde(default)]
    pub send_notifications: bool,
    /// When the message stops being readable. Absent: the organization's
    /// default (`messages.expire_after_days`); `null` is the same.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    /// Keeps the message from never expiring when the organization has a default.
    #[serde(default)]
    pub never_expires: bool,
    /// A key the client chose for this upload (up to 100 characters). Sent
    /// again after a lost answer, it returns the message already stored
    /// with that key instead of storing a second one.
    #[serde(default)]
    pub client_key: Option<String>,
}

/// The answer to an upload: the stored message and one signed notification per recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoredMessage {
    pub message_id: String,
    /// Lowercase hex SHA-256 of the stored bytes.
    pub content_sha256: String,
    pub size: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// When the message stops being readable; `None`: never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    pub notifications: Vec<IssuedNotification>,
}

/// Everything a sender needs to mail one recipient its notification: the
/// `X-Sealpost-*` header fields to add, and the placeholder body as plain
/// text and HTML alternatives. Subject and addresses stay the sender's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedNotification {
    pub recipient: String,
    pub headers: Vec<HeaderField>,
    pub text_body: String,
    pub html_body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeaderField {
    pub name: String,
    pub value: String,
}

/// `GET /api/v1/messages/{id}`: what the sender and recipients may know about a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageInfo {
    pub message_id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub content_sha256: String,
    pub size: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    #[serde(default, flatten)]
    pub lifecycle: Lifecycle,
}

/// Whether a message can still be read: when it expires, and whether its
/// sender recalled it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lifecycle {
    /// When the message stops being readable; `None`: never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    /// When its sender recalled it; from then on nobody can read it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub recalled_at: Option<OffsetDateTime>,
}

/// `POST /api/v1/messages/{id}/notifications` (sender only): the recipients
/// whose notifications the sender's own mail server accepted, so the
/// delivery slip shows them notified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SenderNotified {
    pub recipients: Vec<String>,
    /// The sender's mail server's answer, for the slip.
    #[serde(default)]
    pub relay_answer: Option<String>,
}

/// `GET /api/v1/recalls?since=N`: the messages addressed to the caller that
/// their senders recalled, oldest recall first, and what to do with the
/// copies already swapped into mailboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recalls {
    pub recalled: Vec<RecalledMessage>,
    /// The organization's choice for copies already in mailboxes.
    pub copies: RecalledCopies,
    /// Pass as `since` next time: nothing before it is listed again.
    pub next_since: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecalledMessage {
    pub message_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub recalled_at: OffsetDateTime,
}

/// What happens to a recalled message's copies already in mailboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RecalledCopies {
    /// They stay, as an ordinary email already delivered would.
    #[default]
    Keep,
    /// Agents replace them with a short notice that keeps the subject.
    Replace,
}

/// `GET /api/v1/messages/{id}/retrievals` (sender only): who fetched the content, when, from which device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetrievalLog {
    pub message_id: String,
    pub retrievals: Vec<Retrieval>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Retrieval {
    pub account: String,
    pub device_id: String,
    pub device_name: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub retrieved_at: OffsetDateTime,
}

/// `GET /api/v1/messages/{id}/deliveries` (sender only): where each
/// recipient's notification is and whether the message was picked up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryReport {
    pub message_id: String,
    pub recipients: Vec<RecipientDelivery>,
    #[serde(default, flatten)]
    pub lifecycle: Lifecycle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecipientDelivery {
    pub recipient: String,
    pub state: DeliveryState,
    /// Sending attempts so far (0 when the server does not send this notification).
    pub attempts: u32,
    /// The relay's answer when it accepted the notification; it names the relay's queue id.
    pub relay_answer: Option<String>,
    /// Why the last attempt failed, why sending stopped, or the bounce report.
    pub error: Option<String>,
    /// When a queued notification is tried next.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When the relay accepted the notification.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub notified_at: Option<OffsetDateTime>,
    /// First retrieval of the content by this recipient.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub retrieved_at: Option<OffsetDateTime>,
    /// Where that first retrieval was made.
    #[serde(default)]
    pub retrieved_with: Option<RetrievalChannel>,
    /// When this recipient first answered the message through Sealpost.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub replied_at: Option<OffsetDateTime>,
}

/// What kind of device an account signed in on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// The desktop app or the headless agent.
    #[default]
    Agent,
    /// A browser signed in to the Secure Message Center.
    Browser,
}

/// What fetched a secure message's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RetrievalChannel {
    /// The desktop app or the headless agent, which swapped it into the mailbox.
    Agent,
    /// A browser signed in to the Secure Message Center.
    SecureMessageCenter,
}

/// The furthest a recipient's copy has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// The sender delivers the notification itself; the server has no news yet.
    NotSentByServer,
    /// Waiting to be sent, or to be retried after a temporary failure.
    Queued,
    /// The relay accepted the notification.
    Sent,
    /// The relay refused it permanently, or temporary failures lasted too long.
    Failed,
    /// The recipient's mail server reported it undeliverable.
    Bounced,
    /// The recipient fetched the secure content.
    Retrieved,
}

/// One of the organization's recognised correspondents: mail from this
/// address to a member's masked address may be relayed to the member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirectoryEntry {
    /// Normalised: trimmed, lowercase.
    pub email: String,
    pub name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: OffsetDateTime,
}

/// `GET /api/v1/admin/directory`: one page of the directory, by address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirectoryPage {
    pub entries: Vec<DirectoryEntry>,
    /// Entries in the whole directory.
    pub total: u64,
}

/// `POST /api/v1/admin/directory/import` (a CSV file): what changed. The
/// accepted rows are stored together; the rejected ones say why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirectoryImport {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: Vec<RejectedRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectedRow {
    /// The row's line in the file, the header being line 1.
    pub line: u64,
    pub reason: String,
}

/// `GET /api/v1/admin/organization`: the organization's identity as every
/// notification and automated email uses it now (configuration with the
/// changes made through this API on top).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrganizationSettings {
    pub organization_name: String,
    /// Postal address line under every notification.
    pub footer: String,
    pub legal_disclaimer: String,
    pub secure_message_disclaimer: String,
    /// Display name and address automated mail (verification codes) comes from.
    pub sender_name: String,
    pub sender_address: String,
    /// Base URL of the Secure Message Center that notifications link to.
    pub center_url: String,
    /// The notification's plain-text body template; `null`: the built-in one.
    pub text_template: Option<String>,
    /// The notification's HTML body template (values are HTML-escaped); `null`: the built-in one.
    pub html_template: Option<String>,
    pub smtp: SmtpRelay,
}

/// The relay notifications and automated mail leave through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SmtpRelay {
    /// `null`: no relay; mail is written to the server's pickup directory.
    pub host: Option<String>,
    pub port: u16,
    /// `starttls`, `tls` or `none`.
    pub security: String,
    pub username: Option<String>,
    /// Whether a password is set; the password itself is never returned.
    pub password_set: bool,
}

/// `PUT /api/v1/admin/organization`: fields left out keep their value.
/// An empty template reverts to the built-in one. Applies to the next
/// notification and automated email.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrganizationUpdate {
    pub organization_name: Option<String>,
    pub footer: Option<String>,
    pub legal_disclaimer: Option<String>,
    pub secure_message_disclaimer: Option<String>,
    pub sender_name: Option<String>,
    pub sender_address: Option<String>,
    pub center_url: Option<String>,
    pub text_template: Option<String>,
    pub html_template: Option<String>,
    pub smtp: Option<SmtpRelayUpdate>,
    /// Go back to the relay in the server's configuration.
    #[serde(default)]
    pub use_configured_smtp: bool,
}

/// A new relay, replacing the configured one (the organization's own relay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SmtpRelayUpdate {
    pub host: String,
    pub port: u16,
    /// `starttls`, `tls` or `none`.
    pub security: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// `GET /api/v1/admin/blocklists`: the latest check of the relay's sending
/// addresses against DNS blocklists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlocklistStatus {
    /// Whether periodic checks are configured (`[blocklists]`).
    pub enabled: bool,
    /// `null` until the first check has finished.
    pub report: Option<BlocklistReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlocklistReport {
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub checked_at: OffsetDateTime,
    pub listings: Vec<BlocklistListing>,
}

impl BlocklistReport {
    pub fn listed_count(&self) -> usize {
        self.listings.iter().filter(|listing| listing.listed).count()
    }

    pub fn error_count(&self) -> usize {
        self.listings.iter().filter(|listing| listing.error.is_some()).count()
    }
}

/// One sending address against one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlocklistListing {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub ip: std::net::IpAddr,
    pub zone: String,
    pub listed: bool,
    /// The zone's 127.0.0.x answers, which say why (see the zone's documentation).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub return_codes: Vec<std::net::Ipv4Addr>,
    /// The zone's TXT explanation, when it gives one.
    pub reason: Option<String>,
    /// The lookup failed: unknown, which is not the same as "not listed".
    pub error: Option<String>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// `POST /api/v1/masked-mail`: a member writes to correspondents through
/// the platform. Each correspondent gets their own copy from the member's
/// masked address for this conversation; the member's real address
/// appears nowhere in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaskedMail {
    /// Correspondents by address; each must be in the directory.
    #[serde(default)]
    pub to: Vec<String>,
    /// Directory groups, by name: every correspondent in them.
    #[serde(default)]
    pub groups: Vec<String>,
    pub subject: String,
    /// The plain-text body.
    pub text: String,
}

/// What `POST /api/v1/masked-mail` queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaskedMailSent {
    /// The conversation's id.
    pub thread: String,
    pub recipients: Vec<MaskedRecipient>,
}

/// One correspondent of a masked message and the address their answers go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaskedRecipient {
    pub email: String,
    pub reply_address: String,
}

/// `GET /api/v1/admin/relay-log`: decisions about mail to masked
/// addresses, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelayLog {
    pub entries: Vec<RelayLogEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelayLogEntry {
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: OffsetDateTime,
    /// The masked address written to.
    pub address: String,
    /// The envelope sender; empty for the null sender.
    pub envelope_sender: String,
    /// The From field's address.
    pub from_address: Option<String>,
    /// The member the address belongs to.
    pub member: Option<String>,
    /// `relayed`, `sent_masked`, `auto_replied`, `dropped` or `refused`.
    pub decision: String,
    pub reason: String,
    /// The mail's Message-ID.
    pub message_id: Option<String>,
}
