//! Registration's discovery of the Sealpost server and the mail servers,
//! against the real server and real HTTPS sites on loopback.
//!
//! Every name discovery may look up is pointed somewhere with a DNS override:
//! at a loopback server, or at a port where nothing listens (refused at
//! once). No test depends on real DNS or on a timeout expiring.

use std::net::SocketAddr;
use std::path::PathBuf;

use sealpost_agent::discover::{DiscoveryError, DiscoveryRequest, Source, discover};
use sealpost_agent::policy::Policy;
use sealpost_harness::TestApp;
use sealpost_harness::web::StaticSite;
use sealpost_proto::api::{MailEndpoint, MailSecurity};
use sealpost_server::settings::Settings;

const EMAIL: &str = "alice@example.test";
const AUTOCONFIG_PATH: &str = "/mail/config-v1.1.xml";
const WELL_KNOWN_AUTOCONFIG_PATH: &str = "/.well-known/autoconfig/mail/config-v1.1.xml";
/// What the autoconfig host is asked for `alice@example.test`.
const AUTOCONFIG_REQUEST: &str = "/mail/config-v1.1.xml?emailaddress=alice%40example.test";

/// Every name discovery may ask for `example.test`.
const NAMES: [&str; 5] = [
    "sealpost.example.test",
    "example.test",
    "autoconfig.example.test",
    "imap.example.test",
    "mail.example.test",
];

fn endpoint(host: &str, port: u16, security: MailSecurity) -> MailEndpoint {
    MailEndpoint { host: host.to_owned(), port, security }
}

/// A loopback address where nothing listens: a port just released.
fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address")
}

/// Overrides sending every name in [`NAMES`] to a refused port; tests append
/// their own entries, which win (the last entry for a name counts).
fn nothing_answers() -> Vec<(String, SocketAddr)> {
    let refused = refused_addr();
    NAMES.iter().map(|name| ((*name).to_owned(), refused)).collect()
}

fn point(resolve: &mut Vec<(String, SocketAddr)>, name: &str, addr: SocketAddr) {
    resolve.push((name.to_owned(), addr));
}

/// The Sealpost server, with a certificate also valid for `sealpost.example.test`.
async fn sealpost_server(configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::spawn_with(|settings| {
        settings.tls.hostnames = vec!["sealpost.example.test".into()];
        configure(settings);
    })
    .await
}

/// An autoconfig document in the shape real providers publish: POP3 first,
/// then IMAP over STARTTLS and implicit TLS, then submission.
fn autoconfig_xml(imap_host: &str, smtp_host: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="example.test">
    <domain>example.test</domain>
    <displayName>Example Test Mail</displayName>
    <incomingServer type="pop3">
      <hostname>pop.example.test</hostname>
      <port>995</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <incomingServer type="imap">
      <hostname>{imap_host}</hostname>
      <port>143</port>
      <socketType>STARTTLS</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILLOCALPART%</username>
    </incomingServer>
    <incomingServer type="imap">
      <hostname>{imap_host}</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILLOCALPART%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>{smtp_host}</hostname>
      <port>587</port>
      <socketType>STARTTLS</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILLOCALPART%</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"#
    )
    .into_bytes()
}

fn xml_page(path: &str, body: Vec<u8>) -> (String, String, Vec<u8>) {
    (path.to_owned(), "application/xml".to_owned(), body)
}

/// The mail domain's web servers: `autoconfig.example.test` and `example.test`.
async fn mail_domain_site(pages: Vec<(String, String, Vec<u8>)>) -> StaticSite {
    StaticSite::start(&["autoconfig.example.test", "example.test"], pages)
        .await
        .expect("static HTTPS site")
}

fn trust(pems: &[&[u8]]) -> Option<Vec<u8>> {
    Some(pems.concat())
}

/// A request that reaches `app` at the address given on the command line.
fn request_for(app: &TestApp, resolve: Vec<(String, SocketAddr)>) -> DiscoveryRequest {
    DiscoveryRequest {
        email: EMAIL.to_owned(),
        server_url: Some(app.base_url.clone()),
        ca_pem: trust(&[&app.cert_pem]),
        resolve,
        ..DiscoveryRequest::default()
    }
}

#[tokio::test]
async fn the_policy_wins_over_the_command_line_the_server_and_autoconfig() {
    let app = sealpost_server(|settings| {
        settings.discovery.imap_host = Some("imap.hinted.example.test".into());
        settings.discovery.smtp_host = Some("smtp.hinted.example.test".into());
    })
    .await;
    let site = mail_domain_site(vec![xml_page(
        AUTOCONFIG_PATH,
        autoconfig_xml("imap.autoconfig.example.test", "smtp.autoconfig.example.test"),
    )])
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(
        &policy_file,
        "server_url = \"https://sealpost.example.test\"\nfolders = [\"INBOX\"]\n\n\
         [imap]\nhost = \"imap.policy.example.test\"\nport = 993\nsecurity = \"tls\"\n\n\
         [smtp]\nhost = \"smtp.policy.example.test\"\nport = 587\nsecurity = \"start_tls\"\n",
    )
    .expect("write policy");
    let policy = Policy::load(&policy_file).expect("valid policy");

    let mut resolve = nothing_answers();
    point(&mut resolve, "sealpost.example.test", app_addr(&app));
    point(&mut resolve, "autoconfig.example.test", site.addr());
    let request = DiscoveryRequest {
        email: EMAIL.to_owned(),
        // Not locked: the policy's server is preferred, this one never asked.
        server_url: Some("https://elsewhere.example.test".into()),
        imap: Some(endpoint("imap.command-line.example.test", 993, MailSecurity::Tls)),
        smtp: None,
        policy: Some(policy),
        ca_pem: trust(&[&app.cert_pem, site.ca_pem()]),
        resolve,
    };
    let found = discover(&request).await.expect("discovered");

    let from_policy = Source::Policy(policy_file.display().to_string());
    assert_eq!(found.server_url, "https://sealpost.example.test");
    assert_eq!(found.server_source, from_policy);
    assert_eq!(found.well_known.origin, app.origin);
    assert_eq!(found.imap, endpoint("imap.policy.example.test", 993, MailSecurity::Tls));
    assert_eq!(found.imap_username, EMAIL);
    assert_eq!(found.imap_source, from_policy);
    assert_eq!(found.smtp, Some(endpoint("smtp.policy.example.test", 587, MailSecurity::StartTls)));
    assert_eq!(found.smtp_source, Some(from_policy));
    assert_eq!(site.requests(), Vec::<String>::new(), "autoconfig is not needed");
}

#[tokio::test]
async fn a_locked_policy_refuses_the_server_given_on_the_command_line() {
    let policy = Policy::parse(
        "server_url = \"https://sealpost.example.test\"\nlock_server = true\n",
        &PathBuf::from("/etc/sealpost/policy.toml"),
    )
    .expect("valid policy");
    let request = DiscoveryRequest {
        email: EMAIL.to_owned(),
        server_url: Some("https://elsewhere.example.test".into()),
        policy: Some(policy),
        resolve: nothing_answers(),
        ..DiscoveryRequest::default()
    };
    let error = discover(&request).await.expect_err("the organization set the server");
    assert!(matches!(error, DiscoveryError::ServerLocked { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("your organization set the Sealpost server"), "{message}");
    assert!(message.contains("https://sealpost.example.test"), "{message}");
}

#[tokio::test]
async fn the_servers_mail_hints_are_used_when_there_is_no_policy() {
    let app = sealpost_server(|settings| {
        settings.discovery.imap_host = Some("imap.hinted.example.test".into());
        settings.discovery.smtp_host = Some("smtp.hinted.example.test".into());
        settings.discovery.smtp_port = 587;
        settings.discovery.smtp_security = MailSecurity::StartTls;
    })
    .await;
    let site = mail_domain_site(vec![xml_page(
        AUTOCONFIG_PATH,
        autoconfig_xml("imap.autoconfig.example.test", "smtp.autoconfig.example.test"),
    )])
    .await;
    let mut resolve = nothing_answers();
    point(&mut resolve, "autoconfig.example.test", site.addr());
    let mut request = request_for(&app, resolve);
    request.ca_pem = trust(&[&app.cert_pem, site.ca_pem()]);

    let found = discover(&request).await.expect("discovered");
    let hints = Source::WellKnown(format!("{}/.well-known/sealpost", app.base_url));
    assert_eq!(found.server_source, Source::CommandLine);
    assert_eq!(found.imap, endpoint("imap.hinted.example.test", 993, MailSecurity::Tls));
    assert_eq!(found.imap_username, EMAIL);
    assert_eq!(found.imap_source, hints);
    assert_eq!(found.smtp, Some(endpoint("smtp.hinted.example.test", 587, MailSecurity::StartTls)));
    assert_eq!(found.smtp_source, Some(hints));
    assert_eq!(site.requests(), Vec::<String>::new(), "autoconfig is not needed");
}

#[tokio::test]
async fn autoconfig_is_read_from_the_autoconfig_host_first() {
    let app = sealpost_server(|_| {}).await;
    let site = mail_domain_site(vec![
        xml_page(
            AUTOCONFIG_PATH,
            autoconfig_xml("imap.autoconfig.example.test", "smtp.autoconfig.example.test"),
        ),
        xml_page(
            WELL_KNOWN_AUTOCONFIG_PATH,
            autoconfig_xml("imap.website.example.test", "smtp.website.example.test"),
        ),
    ])
    .await;
    let mut resolve = nothing_answers();
    point(&mut resolve, "autoconfig.example.test", site.addr());
    point(&mut resolve, "example.test", site.addr());
    let mut request = request_for(&app, resolve);
    request.ca_pem = trust(&[&app.cert_pem, site.ca_pem()]);

    let found = discover(&request).await.expect("discovered");
    let autoconfig =
        Source::Autoconfig("https://autoconfig.example.test/mail/config-v1.1.xml".into());
    assert_eq!(found.imap, endpoint("imap.autoconfig.example.test", 993, MailSecurity::Tls));
    assert_eq!(found.imap_username, "alice", "%EMAILLOCALPART% is replaced");
    assert_eq!(found.imap_source, autoconfig);
    assert_eq!(
        found.smtp,
        Some(endpoint("smtp.autoconfig.example.test", 587, MailSecurity::StartTls))
    );
    assert_eq!(found.smtp_source, Some(autoconfig));
    assert_eq!(site.requests(), vec![AUTOCONFIG_REQUEST.to_owned()]);
}

#[tokio::test]
async fn the_domains_well_known_autoconfig_is_used_when_the_autoconfig_host_does_not_answer() {
    let app = sealpost_server(|_| {}).await;
    let site = mail_domain_site(vec![xml_page(
        WELL_KNOWN_AUTOCONFIG_PATH,
        autoconfig_xml("imap.website.example.test", "smtp.website.example.test"),
    )])
    .await;
    // autoconfig.example.test stays on the refused port.
    let mut resolve = nothing_answers();
    point(&mut resolve, "example.test", site.addr());
    let mut request = request_for(&app, resolve);
    request.ca_pem = trust(&[&app.cert_pem, site.ca_pem()]);

    let found = discover(&request).await.expect("discovered");
    assert_eq!(found.imap, endpoint("imap.website.example.test", 993, MailSecurity::Tls));
    assert_eq!(
        found.imap_source,
        Source::Autoconfig(
            "https://example.test/.well-known/autoconfig/mail/config-v1.1.xml".into()
        )
    );
    assert_eq!(
        site.requests(),
        vec!["/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.test"]
    );
}

#[tokio::test]
async fn a_malformed_autoconfig_document_is_skipped_for_the_next_one() {
    let app = sealpost_server(|_| {}).await;
    let site = mail_domain_site(vec![
        xml_page(AUTOCONFIG_PATH, b"<clientConfig><emailProvider><incomingServer>".to_vec()),
        xml_page(
            WELL_KNOWN_AUTOCONFIG_PATH,
            autoconfig_xml("imap.website.example.test", "smtp.website.example.test"),
        ),
    ])
    .await;
    let mut resolve = nothing_answers();
    point(&mut resolve, "autoconfig.example.test", site.addr());
    point(&mut resolve, "example.test", site.addr());
    let mut request = request_for(&app, resolve);
    request.ca_pem = trust(&[&app.cert_pem, site.ca_pem()]);

    let found = discover(&request).await.expect("discovered");
    assert_eq!(found.imap, endpoint("imap.website.example.test", 993, MailSecurity::Tls));
    assert_eq!(site.requests().len(), 2, "{:?}", site.requests());
    assert_eq!(site.requests()[0], AUTOCONFIG_REQUEST);
}

#[tokio::test]
async fn the_server_is_found_at_sealpost_dot_domain_when_none_is_given() {
    let app = sealpost_server(|_| {}).await;
    let mut resolve = nothing_answers();
    point(&mut resolve, "sealpost.example.test", app_addr(&app));
    let request = DiscoveryRequest {
        email: EMAIL.to_owned(),
        imap: Some(endpoint("imap.example.test", 993, MailSecurity::Tls)),
        ca_pem: trust(&[&app.cert_pem]),
        resolve,
        ..DiscoveryRequest::default()
    };

    let found = discover(&request).await.expect("discovered");
    assert_eq!(found.server_url, "https://sealpost.example.test");
    assert_eq!(found.server_source, Source::Default);
    assert_eq!(found.well_known, app.well_known().await);
    assert_eq!(found.imap_source, Source::CommandLine);
}

#[tokio::test]
async fn common_imap_names_are_probed_when_nothing_else_is_known() {
    let app = sealpost_server(|_| {}).await;
    // Stands in for mail.example.test:993; the kernel completes the TCP
    // handshake without an accept, which is all the probe asks.
    let mail_host = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let mut resolve = nothing_answers(); // imap.example.test is refused
    point(&mut resolve, "mail.example.test", mail_host.local_addr().expect("address"));

    let found = discover(&request_for(&app, resolve)).await.expect("discovered");
    assert_eq!(found.imap, endpoint("mail.example.test", 993, MailSecurity::Tls));
    assert_eq!(found.imap_username, EMAIL);
    assert_eq!(found.imap_source, Source::Default);
    assert_eq!(found.smtp, Some(endpoint("smtp.example.test", 465, MailSecurity::Tls)));
    assert_eq!(found.smtp_source, Some(Source::Default));
}

#[tokio::test]
async fn when_no_server_answers_the_error_names_the_urls_tried() {
    let request = DiscoveryRequest {
        email: EMAIL.to_owned(),
        resolve: nothing_answers(),
        ..DiscoveryRequest::default()
    };
    let error = discover(&request).await.expect_err("nothing answers");
    let DiscoveryError::NoServer { tried } = &error else {
        panic!("expected NoServer, got {error}");
    };
    let urls: Vec<&str> = tried.iter().map(|attempt| attempt.target.as_str()).collect();
    assert_eq!(urls, ["https://sealpost.example.test", "https://example.test"]);
    let message = error.to_string();
    for expected in ["https://sealpost.example.test", "https://example.test", "--server"] {
        assert!(message.contains(expected), "{message}");
    }
}

#[tokio::test]
async fn when_no_imap_server_is_found_the_error_names_every_place_tried() {
    let app = sealpost_server(|_| {}).await;
    let error = discover(&request_for(&app, nothing_answers())).await.expect_err("no IMAP");
    assert!(matches!(error, DiscoveryError::NoImap { .. }), "{error}");
    let message = error.to_string();
    for expected in [
        "https://autoconfig.example.test/mail/config-v1.1.xml",
        "https://example.test/.well-known/autoconfig/mail/config-v1.1.xml",
        "imap.example.test:993",
        "mail.example.test:993",
        "--imap-host",
    ] {
        assert!(message.contains(expected), "{message}");
    }
}

/// Where `app` listens, for pointing a name at it.
fn app_addr(app: &TestApp) -> SocketAddr {
    let port = app.base_url.rsplit(':').next().and_then(|port| port.parse().ok());
    SocketAddr::from(([127, 0, 0, 1], port.expect("base_url ends with the port")))
}
