//! The server's SMTP listener end to end: a bounce of a notification comes
//! back to its VERP address over STARTTLS and lands on the delivery slip;
//! any other recipient is refused at RCPT, before the message is sent; and
//! behind the real Postfix, a bounce Postfix itself makes reaches it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sealpost_harness::{MailStack, StackOptions, TestApp, bounce_report, sample_mime};
use sealpost_proto::api::DeliveryState;
use sealpost_proto::notification::parse;
use sealpost_relay::SendError;

#[tokio::test]
async fn a_bounce_comes_back_over_starttls_and_strangers_are_refused_at_rcpt() {
    let app = TestApp::spawn_with(|s| {
        s.outbox.worker = false;
        s.inbound.listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
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
    let refused =
        app.deliver_inbound("", &["sealpost@example.test"], b"Subject: x\r\n\r\nx\r\n").await;
    assert!(
        matches!(&refused, Err(SendError::Permanent(reason)) if reason.contains("no such address")),
        "{refused:?}"
    );
    let fixture = bounce_report(&mail.mail_from);
    let answer = app
        .deliver_inbound(
            "mailer-daemon@patients.example",
            &[mail.mail_from.as_str()],
            fixture.as_bytes(),
        )
        .await
        .expect("the bounce is taken");
    assert!(answer.starts_with("250"), "{answer}");

    let report = app.deliveries(sender.token(), &stored.message_id).await;
    assert_eq!(report.recipients[0].state, DeliveryState::Bounced, "{report:?}");
    assert!(report.recipients[0].error.as_deref().unwrap_or_default().contains("5.1.1"));
}

#[tokio::test]
async fn postfix_in_front_hands_a_real_bounce_to_the_listener_and_the_slip_shows_it() {
    // The listener's port is chosen first: Postfix is configured with it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    // The bounce address family goes to the listener, as in production;
    // so does gone.test, whose recipients the listener refuses at RCPT:
    // Postfix accepted the notification, so it bounces it.
    let routed = vec!["sealpost@example.test".to_owned(), "gone.test".to_owned()];
    let options =
        StackOptions { route_to_sealpost: Some((routed, port)), ..StackOptions::default() };
    let stack = Arc::new(MailStack::start_with(&["sender"], &options).await.expect("mail stack"));
    let app = TestApp::spawn_on(stack.clone(), |s| {
        s.outbox.worker = false;
        s.inbound.listen = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    })
    .await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let stored = app
        .store_and_notify(
            sender.token(),
            &["sender@example.test", "someone@gone.test"],
            sample_mime("Results", "b", b""),
        )
        .await;
    let step = app.outbox.step().await.expect("step");
    assert_eq!(step.sent, 2, "Postfix accepts both: {step:?}\n{}", stack.postfix_log());

    // Postfix is refused at gone.test, bounces to the notification's VERP
    // address, and routes that to the listener; nothing is injected here.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        let report = app.deliveries(sender.token(), &stored.message_id).await;
        let bounced = report.recipients.iter().any(|r| r.state == DeliveryState::Bounced);
        if bounced || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line = |who: &str| report.recipients.iter().find(|r| r.recipient == who).expect("line");
    let gone = line("someone@gone.test");
    assert_eq!(gone.state, DeliveryState::Bounced, "{report:?}\n{}", stack.postfix_log());
    assert!(gone.error.as_deref().unwrap_or_default().contains("5.1.1"), "{gone:?}");
    assert_eq!(line("sender@example.test").state, DeliveryState::Sent);
}
