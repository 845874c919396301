//! The server's SMTP listener end to end: a bounce of a notification comes
//! back to its VERP address over STARTTLS and lands on the delivery slip;
//! any other recipient is refused at RCPT, before the message is sent.

use std::time::Duration;

use sealpost_harness::{TestApp, sample_mime};
use sealpost_proto::api::{DeliveryReport, DeliveryState};
use sealpost_proto::notification::parse;
use sealpost_relay::{Relay, RelayConfig, Security, SendError, TrustedRoots};

#[tokio::test]
async fn a_bounce_comes_back_over_starttls_and_strangers_are_refused_at_rcpt() {
    let app = TestApp::spawn_with(|s| {
        s.outbox.worker = false;
        s.inbound.listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let inbound = app.inbound_addr.expect("the listener is on");
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let stored = app
        .store_and_notify(sender.token(), &["nobody@patients.example"], sample_mime("s", "b", b""))
        .await;
    assert_eq!(app.outbox.step().await.expect("step").sent, 1);
    let mail = app
        .mail
        .wait_for("nobody@patients.example", Duration::from_secs(5), |m| parse(&m.data).is_ok())
        .await
        .expect("sent to the relay");

    // What the recipient's mail server sends back, as Postfix in front relays it.
    let relay = Relay::new(&RelayConfig {
        host: "localhost".into(),
        port: inbound.port(),
        security: Security::StartTls,
        credentials: None,
        timeout: Duration::from_secs(5),
        roots: TrustedRoots::Only(app.cert_pem.clone()),
    })
    .expect("client");
    let refused = relay.send_raw("", &["sealpost@example.test"], b"Subject: x\r\n\r\nx\r\n").await;
    assert!(
        matches!(&refused, Err(SendError::Permanent(reason)) if reason.contains("no such address")),
        "{refused:?}"
    );
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../server/tests/fixtures/bounces/postfix-user-unknown.eml"
    ))
    .expect("bounce fixture")
    .replace("VERP_ADDRESS", &mail.mail_from)
    .replace('\n', "\r\n")
    .replace("\r\r\n", "\r\n");
    let answer = relay
        .send_raw("mailer-daemon@patients.example", &[mail.mail_from.as_str()], fixture.as_bytes())
        .await
        .expect("the bounce is taken");
    assert!(answer.starts_with("250"), "{answer}");

    let report: DeliveryReport = app
        .api
        .get(&format!("/api/v1/messages/{}/deliveries", stored.message_id), Some(sender.token()))
        .await
        .expect("request")
        .json();
    assert_eq!(report.recipients[0].state, DeliveryState::Bounced, "{report:?}");
    assert!(report.recipients[0].error.as_deref().unwrap_or_default().contains("5.1.1"));
}
