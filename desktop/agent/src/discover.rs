//! Finds the Sealpost server and the mail servers for registration, from
//! nothing but the user's email address.
//!
//! Each setting is taken from the first source that has it:
//!
//! - **Sealpost server:** the IT policy, the command line, then
//!   `https://sealpost.<domain>` and `https://<domain>`. A candidate counts
//!   only when its `/.well-known/sealpost` answers with a usable document.
//! - **IMAP and SMTP:** the IT policy, the command line, the hints in the
//!   server's well-known document, the mail domain's autoconfig (Thunderbird's
//!   format, at `https://autoconfig.<domain>/mail/config-v1.1.xml` then
//!   `https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml`), then
//!   common defaults: the first of `imap.<domain>`, `mail.<domain>` and
//!   `<domain>` that accepts a connection on port 993, and
//!   `smtp.<domain>:465`.
//!
//! Only encrypted mail connections are ever proposed: the mailbox password
//! travels on them.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use sealpost_proto::api::{API_VERSION, MailEndpoint, MailSecurity, WellKnown};
use sealpost_proto::notification::{TrustedServer, normalize_address, normalize_origin};

use crate::policy::Policy;
use crate::tls::{TlsError, client_config};

/// How long an HTTPS candidate may take to accept a connection; an
/// unreachable name should not hold up the next candidate for long.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one discovery request may take in all.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a guessed IMAP host may take to accept a TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Well-known and autoconfig documents are a few kilobytes; anything much
/// larger is not one.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// What registration knows before discovery: the address and whatever the
/// user or IT gave explicitly.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryRequest {
    pub email: String,
    /// Given on the command line (`--server`); `https://` may be left out.
    pub server_url: Option<String>,
    /// Given on the command line.
    pub imap: Option<MailEndpoint>,
    /// Given on the command line.
    pub smtp: Option<MailEndpoint>,
    /// The IT policy, already loaded by the caller ([`Policy::load_system`]).
    pub policy: Option<Policy>,
    /// PEM certificates to trust instead of the system roots (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// DNS overrides, like curl's `--resolve`: a name listed here is reached at
    /// the given address instead of the one DNS gives. For HTTPS a port in the
    /// URL wins over the override's; port 0 means the scheme's usual one. The
    /// IMAP probe connects to the override's port when it is not 0. The
    /// settings found still name the host and its usual port. A name listed
    /// twice is reached at its last entry.
    pub resolve: Vec<(String, SocketAddr)>,
}

/// Where a discovered setting came from, so the user (and IT) can tell why
/// the agent uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The IT policy file at this path.
    Policy(String),
    CommandLine,
    /// The Sealpost server's well-known document at this URL.
    WellKnown(String),
    /// The mail domain's autoconfig document at this URL (without the query).
    Autoconfig(String),
    /// A common name guessed from the email domain.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Policy(origin) => write!(f, "the IT policy in {origin}"),
            Self::CommandLine => f.write_str("the command line"),
            Self::WellKnown(url) => write!(f, "the Sealpost server ({url})"),
            Self::Autoconfig(url) => write!(f, "the mail domain's autoconfig ({url})"),
            Self::Default => f.write_str("common defaults for the email domain"),
        }
    }
}

/// Everything registration needs to talk to the server and the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The origin that answered, such as `https://sealpost.example.org`.
    pub server_url: String,
    pub server_source: Source,
    /// The server's document as fetched: API version 1 with usable keys.
    pub well_known: WellKnown,
    pub imap: MailEndpoint,
    /// The IMAP login: the email address unless autoconfig says otherwise.
    pub imap_username: String,
    pub imap_source: Source,
    /// `None` when no SMTP server is known (sending from the desktop is then
    /// unavailable until one is configured).
    pub smtp: Option<MailEndpoint>,
    pub smtp_source: Option<Source>,
}

/// One place discovery looked, and why it did not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    /// A URL, or `host:port` for a connection probe.
    pub target: String,
    pub problem: String,
}

impl fmt::Display for FailedAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.target, self.problem)
    }
}

fn list_attempts(attempts: &[FailedAttempt]) -> String {
    attempts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{email:?} is not an email address: type it in full, such as alice@example.org")]
    InvalidEmail { email: String },
    #[error(
        "{url:?} is not a Sealpost server address: give it as https://sealpost.example.org \
         (plain http is not accepted)"
    )]
    InvalidServerUrl { url: String },
    #[error(
        "your organization set the Sealpost server to {policy_url} in {policy_origin}: leave out \
         --server {requested}, or ask IT if the policy is wrong"
    )]
    ServerLocked { policy_url: String, requested: String, policy_origin: String },
    #[error("cannot set up secure connections: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot set up secure connections: {0}")]
    HttpClient(reqwest::Error),
    #[error(
        "no Sealpost server answered; tried {}. Pass --server URL with the address your \
         organization gave you, or ask IT",
        list_attempts(.tried)
    )]
    NoServer { tried: Vec<FailedAttempt> },
    #[error(
        "no IMAP server found for {domain}; tried {}. Pass --imap-host HOST (and --imap-port, \
         --imap-security if they are not 993 and tls) with the settings your mail client \
         uses, or ask IT",
        list_attempts(.tried)
    )]
    NoImap { domain: String, tried: Vec<FailedAttempt> },
}

/// Finds the server and the mail settings for `request.email`; see the
/// module documentation for the order of the sources.
pub async fn discover(request: &DiscoveryRequest) -> Result<Discovered, DiscoveryError> {
    let email = request.email.trim().to_owned();
    let domain = normalize_address(&email)
        .and_then(|address| address.rsplit_once('@').map(|(_, domain)| domain.to_owned()))
        .ok_or_else(|| DiscoveryError::InvalidEmail { email: request.email.clone() })?;
    let (candidates, server_source) = server_candidates(request, &domain)?;
    let http = http_client(request)?;
    let policy = request.policy.as_ref();

    let (server_url, well_known) = find_server(&http, candidates, &server_source).await?;
    let well_known_url = well_known_url(&server_url);
    let (hinted_imap, hinted_smtp) = well_known
        .mail
        .as_ref()
        .map(|mail| (mail.imap.clone(), mail.smtp.clone()))
        .unwrap_or_default();
    let policy_source = || Source::Policy(policy.map(|p| p.origin.clone()).unwrap_or_default());
    let mut autoconfig = Autoconfig::new(&http, &email, &domain);

    let explicit_imap = [
        (policy.and_then(|p| p.imap.clone()), policy_source()),
        (request.imap.clone(), Source::CommandLine),
        (hinted_imap, Source::WellKnown(well_known_url.clone())),
    ]
    .into_iter()
    .find_map(|(endpoint, source)| endpoint.map(|endpoint| (endpoint, email.clone(), source)));
    let (imap, imap_username, imap_source) = match explicit_imap {
        Some(found) => found,
        None => match autoconfig.find(|offer| offer.imap.clone()).await {
            Some((offer, url)) => (offer.endpoint, offer.username, Source::Autoconfig(url)),
            None => {
                let endpoint =
                    probe_default_imap(&domain, &request.resolve).await.map_err(|probes| {
                        DiscoveryError::NoImap {
                            domain: domain.clone(),
                            tried: [autoconfig.failures(), probes].concat(),
                        }
                    })?;
                (endpoint, email.clone(), Source::Default)
            }
        },
    };
    tracing::info!(host = %imap.host, port = imap.port, source = %imap_source, "IMAP server found");

    let explicit_smtp = [
        (policy.and_then(|p| p.smtp.clone()), policy_source()),
        (request.smtp.clone(), Source::CommandLine),
        (hinted_smtp, Source::WellKnown(well_known_url)),
    ]
    .into_iter()
    .find_map(|(endpoint, source)| endpoint.map(|endpoint| (endpoint, source)));
    let (smtp, smtp_source) = match explicit_smtp {
        Some(found) => found,
        None => match autoconfig.find(|offer| offer.smtp.clone()).await {
            Some((endpoint, url)) => (endpoint, Source::Autoconfig(url)),
            None => (
                MailEndpoint {
                    host: format!("smtp.{domain}"),
                    port: 465,
                    security: MailSecurity::Tls,
                },
                Source::Default,
            ),
        },
    };
    tracing::info!(host = %smtp.host, port = smtp.port, source = %smtp_source, "SMTP server found");

    Ok(Discovered {
        server_url,
        server_source,
        well_known,
        imap,
        imap_username,
        imap_source,
        smtp: Some(smtp),
        smtp_source: Some(smtp_source),
    })
}

/// `https://host[:port]` for a server address as people type it: the scheme
/// may be left out, but only https is accepted.
pub fn normalize_server_url(url: &str) -> Option<String> {
    let url = url.trim();
    if url.contains("://") {
        normalize_origin(url)
    } else {
        normalize_origin(&format!("https://{url}"))
    }
}

fn well_known_url(server_url: &str) -> String {
    format!("{server_url}/.well-known/sealpost")
}

fn http_client(request: &DiscoveryRequest) -> Result<reqwest::Client, DiscoveryError> {
    let mut tls = client_config(request.ca_pem.as_deref())?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(HTTP_CONNECT_TIMEOUT)
        .timeout(HTTP_TIMEOUT)
        // Redirects may not step down to plain http.
        .https_only(true)
        .user_agent(concat!("sealpost-agent/", env!("CARGO_PKG_VERSION")));
    if !request.resolve.is_empty() {
        // A proxy would resolve the names itself and bypass the overrides.
        builder = builder.no_proxy();
    }
    for (name, addr) in &request.resolve {
        builder = builder.resolve(name, *addr);
    }
    builder.build().map_err(DiscoveryError::HttpClient)
}

/// The servers to try, in order, and where they come from.
fn server_candidates(
    request: &DiscoveryRequest,
    domain: &str,
) -> Result<(Vec<String>, Source), DiscoveryError> {
    let requested = match &request.server_url {
        Some(url) => Some(
            normalize_server_url(url)
                .ok_or_else(|| DiscoveryError::InvalidServerUrl { url: url.clone() })?,
        ),
        None => None,
    };
    let from_policy = match &request.policy {
        Some(policy) => match &policy.server_url {
            Some(url) => Some((
                normalize_server_url(url)
                    .ok_or_else(|| DiscoveryError::InvalidServerUrl { url: url.clone() })?,
                policy,
            )),
            None => None,
        },
        None => None,
    };
    // An explicit server is the only candidate: falling back to a guessed one
    // would quietly register with a server nobody chose.
    Ok(match (from_policy, requested) {
        (Some((policy_url, policy)), Some(requested)) if requested != policy_url => {
            if policy.lock_server {
                return Err(DiscoveryError::ServerLocked {
                    policy_url,
                    requested,
                    policy_origin: policy.origin.clone(),
                });
            }
            tracing::warn!(
                policy = %policy_url,
                ignored = %requested,
                "the IT policy names the Sealpost server; the one on the command line is not used"
            );
            (vec![policy_url], Source::Policy(policy.origin.clone()))
        }
        (Some((policy_url, policy)), _) => {
            (vec![policy_url], Source::Policy(policy.origin.clone()))
        }
        (None, Some(requested)) => (vec![requested], Source::CommandLine),
        (None, None) => (
            vec![format!("https://sealpost.{domain}"), format!("https://{domain}")],
            Source::Default,
        ),
    })
}

/// The first candidate server whose well-known document is usable.
async fn find_server(
    http: &reqwest::Client,
    candidates: Vec<String>,
    source: &Source,
) -> Result<(String, WellKnown), DiscoveryError> {
    let mut tried = Vec::new();
    for server_url in candidates {
        match fetch_well_known(http, &server_url).await {
            Ok(well_known) => {
                tracing::info!(server = %server_url, source = %source, "Sealpost server found");
                return Ok((server_url, well_known));
            }
            Err(problem) => {
                tracing::debug!(server = %server_url, %problem, "not a usable Sealpost server");
                tried.push(FailedAttempt { target: server_url, problem });
            }
        }
    }
    Err(DiscoveryError::NoServer { tried })
}

/// The server's document, checked to be one this agent can work with.
async fn fetch_well_known(http: &reqwest::Client, server_url: &str) -> Result<WellKnown, String> {
    let body = fetch(http.get(well_known_url(server_url))).await?;
    let well_known: WellKnown = serde_json::from_slice(&body)
        .map_err(|_| "answered, but not with a Sealpost discovery document".to_owned())?;
    if well_known.api_version != API_VERSION {
        return Err(format!(
            "speaks API version {}, not version {API_VERSION} like this agent: the agent or \
             the server needs updating",
            well_known.api_version
        ));
    }
    if !well_known.signing_keys.iter().any(|key| key.active) {
        return Err("publishes no active signing key".to_owned());
    }
    TrustedServer::from_well_known(&well_known)
        .map_err(|error| format!("publishes unusable signing keys: {error}"))?;
    Ok(well_known)
}

/// The body of a 200 answer, at most [`MAX_DOCUMENT_BYTES`] long.
async fn fetch(request: reqwest::RequestBuilder) -> Result<Vec<u8>, String> {
    let mut response = request.send().await.map_err(|error| describe(&error))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("answered HTTP {}", response.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| describe(&error))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("answered more than {} KiB", MAX_DOCUMENT_BYTES / 1024));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The cause people can act on (refused, certificate, timeout), which
/// reqwest keeps at the end of its error chain.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer in time".to_owned();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if error.is_connect() { format!("cannot connect: {cause}") } else { cause.to_string() }
}

/// The mail domain's autoconfig documents, fetched in order and only when a
/// setting is still missing.
struct Autoconfig<'a> {
    http: &'a reqwest::Client,
    email: &'a str,
    urls: Vec<String>,
    /// One entry per URL fetched so far: the offer, or why there is none.
    fetched: Vec<Result<AutoconfigOffer, String>>,
}

impl<'a> Autoconfig<'a> {
    fn new(http: &'a reqwest::Client, email: &'a str, domain: &str) -> Self {
        let urls = vec![
            format!("https://autoconfig.{domain}/mail/config-v1.1.xml"),
            format!("https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml"),
        ];
        Self { http, email, urls, fetched: Vec::new() }
    }

    /// The first document's `pick`, with the document's URL.
    async fn find<T>(
        &mut self,
        pick: impl Fn(&AutoconfigOffer) -> Option<T>,
    ) -> Option<(T, String)> {
        for index in 0..self.urls.len() {
            if index == self.fetched.len() {
                let offer = self.fetch(&self.urls[index]).await;
                self.fetched.push(offer);
            }
            if let Ok(offer) = &self.fetched[index]
                && let Some(found) = pick(offer)
            {
                return Some((found, self.urls[index].clone()));
            }
        }
        None
    }

    async fn fetch(&self, url: &str) -> Result<AutoconfigOffer, String> {
        let request = self.http.get(url).query(&[("emailaddress", self.email)]);
        let body = fetch(request).await.inspect_err(|problem| {
            tracing::debug!(%url, %problem, "no autoconfig document");
        })?;
        let text = String::from_utf8(body).map_err(|_| "answered text that is not UTF-8")?;
        let offer = parse_autoconfig(&text, self.email).inspect_err(|problem| {
            tracing::warn!(%url, %problem, "ignoring a malformed autoconfig document");
        })?;
        if offer.imap.is_none() {
            tracing::info!(%url, "the autoconfig document offers no IMAP server over TLS");
        }
        Ok(offer)
    }

    /// Every document that offered nothing usable, for the final error.
    fn failures(&self) -> Vec<FailedAttempt> {
        self.urls
            .iter()
            .zip(&self.fetched)
            .map(|(url, result)| FailedAttempt {
                target: url.clone(),
                problem: match result {
                    Ok(_) => "offers no IMAP server over TLS".to_owned(),
                    Err(problem) => problem.clone(),
                },
            })
            .collect()
    }
}

/// What one autoconfig document offers for one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AutoconfigOffer {
    imap: Option<ImapOffer>,
    smtp: Option<MailEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ImapOffer {
    endpoint: MailEndpoint,
    username: String,
}

/// Reads a Thunderbird autoconfig document (`clientConfig` version 1.1).
///
/// Of the servers listed, IMAP and SMTP ones that accept a password are
/// considered; implicit TLS is preferred over STARTTLS, and plain-text ones
/// are never taken. Among equals the document's order decides, as in
/// Thunderbird. `%EMAILADDRESS%`, `%EMAILLOCALPART%` and `%EMAILDOMAIN%` are
/// replaced in host names and user names.
fn parse_autoconfig(xml: &str, email: &str) -> Result<AutoconfigOffer, String> {
    let xml = xml.trim_start_matches('\u{feff}');
    let document = roxmltree::Document::parse(xml).map_err(|error| format!("not XML: {error}"))?;
    let root = document.root_element();
    if !root.has_tag_name("clientConfig") {
        return Err(format!(
            "the root element is <{}>, not <clientConfig>",
            root.tag_name().name()
        ));
    }
    let servers = |tag: &'static str, kind: &'static str| {
        root.children()
            .filter(|node| node.has_tag_name("emailProvider"))
            .flat_map(|provider| provider.children())
            .filter(move |node| {
                node.has_tag_name(tag)
                    && node.attribute("type").is_some_and(|t| t.eq_ignore_ascii_case(kind))
            })
            .filter_map(|node| server_entry(node, email))
            .min_by_key(|(endpoint, _)| match endpoint.security {
                MailSecurity::Tls => 0,
                MailSecurity::StartTls => 1,
            })
    };
    Ok(AutoconfigOffer {
        imap: servers("incomingServer", "imap")
            .map(|(endpoint, username)| ImapOffer { endpoint, username }),
        smtp: servers("outgoingServer", "smtp").map(|(endpoint, _)| endpoint),
    })
}

/// One `<incomingServer>` or `<outgoingServer>`, when it is encrypted and
/// takes a password; with its user name.
fn server_entry(node: roxmltree::Node<'_, '_>, email: &str) -> Option<(MailEndpoint, String)> {
    let child_text = |tag: &str| {
        node.children()
            .find(|child| child.has_tag_name(tag))
            .and_then(|child| child.text())
            .map(str::trim)
            .filter(|text| !text.is_empty())
    };
    let security = match child_text("socketType")? {
        socket if socket.eq_ignore_ascii_case("SSL") || socket.eq_ignore_ascii_case("TLS") => {
            MailSecurity::Tls
        }
        socket if socket.eq_ignore_ascii_case("STARTTLS") => MailSecurity::StartTls,
        _ => return None,
    };
    let host = substitute(child_text("hostname")?, email).to_ascii_lowercase();
    if host.is_empty() || host.contains(['%', '/', ' ', '@']) {
        return None;
    }
    let port = child_text("port")?.parse::<u16>().ok().filter(|port| *port != 0)?;
    // Servers listing only OAuth2, Kerberos or client certificates cannot
    // be used with the mailbox password the user gives.
    let mut methods = node
        .children()
        .filter(|child| child.has_tag_name("authentication"))
        .filter_map(|child| child.text())
        .map(str::trim)
        .peekable();
    let takes_password = methods.peek().is_none()
        || methods.any(|method| {
            ["password-cleartext", "password-encrypted", "plain", "secure"]
                .iter()
                .any(|known| method.eq_ignore_ascii_case(known))
        });
    if !takes_password {
        return None;
    }
    let username =
        child_text("username").map_or_else(|| email.to_owned(), |u| substitute(u, email));
    Some((MailEndpoint { host, port, security }, username))
}

/// Replaces the autoconfig placeholders with the parts of `email`.
fn substitute(template: &str, email: &str) -> String {
    let (local, domain) = email.rsplit_once('@').unwrap_or((email, ""));
    template
        .replace("%EMAILADDRESS%", email)
        .replace("%EMAILLOCALPART%", local)
        .replace("%EMAILDOMAIN%", domain)
}

/// The first of `imap.<domain>`, `mail.<domain>` and `<domain>` that accepts
/// a connection on 993, all probed at once; or every probe's failure.
async fn probe_default_imap(
    domain: &str,
    resolve: &[(String, SocketAddr)],
) -> Result<MailEndpoint, Vec<FailedAttempt>> {
    const IMAPS_PORT: u16 = 993;
    let hosts = [format!("imap.{domain}"), format!("mail.{domain}"), domain.to_owned()];
    let probes = hosts.iter().map(|host| probe(host, IMAPS_PORT, resolve));
    let results = futures_util::future::join_all(probes).await;
    let mut tried = Vec::new();
    for (host, result) in hosts.iter().zip(results) {
        match result {
            Ok(()) => {
                return Ok(MailEndpoint {
                    host: host.clone(),
                    port: IMAPS_PORT,
                    security: MailSecurity::Tls,
                });
            }
            Err(problem) => {
                tried.push(FailedAttempt { target: format!("{host}:{IMAPS_PORT}"), problem })
            }
        }
    }
    Err(tried)
}

/// Whether `host:port` accepts a TCP connection, honouring the overrides.
async fn probe(host: &str, port: u16, resolve: &[(String, SocketAddr)]) -> Result<(), String> {
    let overridden =
        resolve.iter().rev().find(|(name, _)| name.eq_ignore_ascii_case(host)).map(|(_, addr)| {
            if addr.port() == 0 { SocketAddr::new(addr.ip(), port) } else { *addr }
        });
    let connect = async {
        match overridden {
            Some(addr) => tokio::net::TcpStream::connect(addr).await,
            None => tokio::net::TcpStream::connect((host, port)).await,
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(error)) => Err(format!("cannot connect: {error}")),
        Err(_) => Err("no answer in time".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMAIL: &str = "alice.smith@example.org";

    fn endpoint(host: &str, port: u16, security: MailSecurity) -> MailEndpoint {
        MailEndpoint { host: host.to_owned(), port, security }
    }

    fn parse_fixture(xml: &str) -> AutoconfigOffer {
        parse_autoconfig(xml, EMAIL).expect("fixture parses")
    }

    #[test]
    fn a_provider_with_pop3_first_and_several_imap_servers_gives_the_implicit_tls_imap_one() {
        let offer =
            parse_fixture(include_str!("../tests/fixtures/autoconfig/multiple-servers.xml"));
        let imap = offer.imap.expect("an IMAP server");
        assert_eq!(imap.endpoint, endpoint("imap.example.org", 993, MailSecurity::Tls));
        assert_eq!(imap.username, EMAIL);
        assert_eq!(offer.smtp, Some(endpoint("smtp.example.org", 465, MailSecurity::Tls)));
    }

    #[test]
    fn starttls_is_taken_when_it_is_all_there_is() {
        let offer = parse_fixture(include_str!("../tests/fixtures/autoconfig/starttls-only.xml"));
        let imap = offer.imap.expect("an IMAP server");
        assert_eq!(imap.endpoint, endpoint("mail.example.org", 143, MailSecurity::StartTls));
        assert_eq!(imap.username, "alice.smith");
        assert_eq!(offer.smtp, Some(endpoint("mail.example.org", 587, MailSecurity::StartTls)));
    }

    #[test]
    fn plain_text_servers_are_never_offered() {
        let offer = parse_fixture(include_str!("../tests/fixtures/autoconfig/plain-only.xml"));
        assert_eq!(offer, AutoconfigOffer::default());
    }

    #[test]
    fn placeholders_are_replaced_in_host_and_user_names() {
        let offer =
            parse_fixture(include_str!("../tests/fixtures/autoconfig/username-placeholders.xml"));
        let imap = offer.imap.expect("an IMAP server");
        assert_eq!(imap.endpoint, endpoint("imap.mail.example.org", 993, MailSecurity::Tls));
        assert_eq!(imap.username, "example.org\\alice.smith");
    }

    #[test]
    fn servers_that_take_no_password_are_skipped() {
        let offer =
            parse_fixture(include_str!("../tests/fixtures/autoconfig/oauth-and-password.xml"));
        let imap = offer.imap.expect("an IMAP server");
        assert_eq!(imap.endpoint, endpoint("imap.example.org", 993, MailSecurity::Tls));
        // The OAuth2-only SMTP server is listed first; the password one is taken.
        assert_eq!(offer.smtp, Some(endpoint("smtp.example.org", 465, MailSecurity::Tls)));
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(parse_autoconfig("<clientConfig><emailProvider>", EMAIL).is_err());
        assert!(parse_autoconfig("<html><body>Not found</body></html>", EMAIL).is_err());
        assert!(parse_autoconfig("{\"imap\": \"imap.example.org\"}", EMAIL).is_err());
    }

    #[test]
    fn server_addresses_are_normalised_and_only_https() {
        assert_eq!(
            normalize_server_url("Sealpost.Example.org").as_deref(),
            Some("https://sealpost.example.org")
        );
        assert_eq!(
            normalize_server_url("https://sealpost.example.org:8443/").as_deref(),
            Some("https://sealpost.example.org:8443")
        );
        assert_eq!(normalize_server_url("http://sealpost.example.org"), None);
        assert_eq!(normalize_server_url("https://sealpost.example.org/api"), None);
    }

    #[tokio::test]
    async fn an_address_without_a_domain_is_refused_before_any_connection() {
        let request = DiscoveryRequest { email: "alice".into(), ..DiscoveryRequest::default() };
        let error = discover(&request).await.expect_err("not an address");
        assert!(matches!(error, DiscoveryError::InvalidEmail { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_locked_server_refuses_another_one() {
        let policy = Policy {
            origin: "/etc/sealpost/policy.toml".to_owned(),
            server_url: Some("https://sealpost.example.org".into()),
            lock_server: true,
            ..Policy::default()
        };
        let request = DiscoveryRequest {
            email: EMAIL.into(),
            server_url: Some("https://elsewhere.example.net".into()),
            policy: Some(policy),
            ..DiscoveryRequest::default()
        };
        let error = discover(&request).await.expect_err("locked").to_string();
        assert!(error.contains("your organization set the Sealpost server"), "{error}");
        assert!(error.contains("/etc/sealpost/policy.toml"), "{error}");
    }
}
