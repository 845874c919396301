//! The server mails notifications itself when asked: queued with the
//! message, sent by the outbox with a VERP envelope sender, and reported to
//! the sender per recipient. The relay here is the in-test SMTP capture; the
//! real Postfix/Dovecot path is in `delivery.rs`.

use std::time::Duration;

use sealpost_harness::{TestApp, bounce_report, sample_mime};
use sealpost_proto::api::{DeliveryState, StoredMessage};
use sealpost_proto::notification::{TrustedServer, parse};
use sealpost_server::outbox::StepReport;

#[tokio::test]
async fn queued_notifications_are_sent_with_the_senders_headers_and_reported() {
    let app = TestApp::spawn_with(|s| s.outbox.worker = false).await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let alice = app.register_agent("alice@example.test", "alice laptop").await;
    let mime = sample_mime("Quarterly results", "The numbers are attached.", b"\x00\x01binary");
    let stored: StoredMessage = app
        .store_and_notify(sender.token(), &["alice@example.test", "bob@example.test"], mime)
        .await;

    let before = app.deliveries(sender.token(), &stored.message_id).await;
    assert!(before.recipients.iter().all(|r| r.state == DeliveryState::Queued), "{before:?}");
    let is_notification = |mail: &sealpost_harness::CapturedMail| parse(&mail.data).is_ok();
    assert!(
        app.mail.wait_for("alice@example.test", Duration::ZERO, is_notification).await.is_none()
    );

    let report = app.outbox.step().await.expect("outbox step");
    assert_eq!(report, StepReport { sent: 2, retried: 0, failed: 0 });
    assert_eq!(app.outbox.step().await.expect("outbox step").attempts(), 0, "sent exactly once");

    let mail = app
        .mail
        .wait_for("alice@example.test", Duration::from_secs(5), is_notification)
        .await
        .expect("alice's notification reached the relay");
    assert!(
        mail.mail_from.starts_with("sealpost+b") && mail.mail_from.ends_with("@example.test"),
        "VERP envelope sender, got {}",
        mail.mail_from
    );
    let text = String::from_utf8_lossy(&mail.data);
    assert!(text.contains("Subject: Quarterly results"), "subject kept:\n{text}");
    assert!(text.contains("alice@example.test"), "To kept:\n{text}");
    assert!(text.contains("Sent by Example Clinic, 1 Test Street, Testville"), "footer:\n{text}");
    assert!(!text.contains("The numbers are attached"), "secure content never travels by SMTP");
    let trusted = TrustedServer::from_well_known(&app.well_known().await).expect("well-known");
    let notification = parse(&mail.data).expect("a notification");
    notification.verify(&trusted, "alice@example.test").expect("it verifies for alice");
    assert_eq!(notification.fields.message_id.as_str(), stored.message_id);

    let sent = app.deliveries(sender.token(), &stored.message_id).await;
    for recipient in &sent.recipients {
        assert_eq!(recipient.state, DeliveryState::Sent, "{recipient:?}");
        assert_eq!(recipient.attempts, 1);
        assert!(recipient.relay_answer.as_deref().is_some_and(|a| a.starts_with("250")));
    }

    app.content(Some(alice.token()), &stored.message_id).await.expect_status(200).expect("read");
    let read = app.deliveries(sender.token(), &stored.message_id).await;
    assert_eq!(read.recipients[0].state, DeliveryState::Retrieved);
    assert!(read.recipients[0].retrieved_at.is_some());
    assert_eq!(read.recipients[1].state, DeliveryState::Sent);

    // Only the sender sees delivery states; a recipient gets the same 404 as a stranger.
    let as_alice = app
        .api
        .get(&format!("/api/v1/messages/{}/deliveries", stored.message_id), Some(alice.token()))
        .await
        .expect("request");
    assert_eq!(as_alice.status, 404);
}

#[tokio::test]
async fn without_the_flag_nothing_is_queued() {
    let app = TestApp::spawn_with(|s| s.outbox.worker = false).await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let stored =
        app.store_message(&sender, &["alice@example.test"], sample_mime("s", "b", b"")).await;
    assert_eq!(app.outbox.step().await.expect("step").attempts(), 0);
    let report = app.deliveries(sender.token(), &stored.message_id).await;
    assert_eq!(report.recipients[0].state, DeliveryState::NotSentByServer);
}

#[tokio::test]
async fn the_running_worker_sends_without_being_stepped() {
    let app = TestApp::spawn().await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    app.store_and_notify(sender.token(), &["carol@example.test"], sample_mime("Hi", "b", b""))
        .await;
    let mail = app
        .mail
        .wait_for("carol@example.test", Duration::from_secs(10), |mail| parse(&mail.data).is_ok())
        .await;
    assert!(mail.is_some(), "the worker sent the notification on its own");
}

#[tokio::test]
async fn a_bounce_to_the_verp_address_marks_that_recipient_bounced() {
    let app = TestApp::spawn_with(|s| s.outbox.worker = false).await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let stored: StoredMessage = app
        .store_and_notify(
            sender.token(),
            &["alice@example.test", "nobody@patients.example"],
            sample_mime("s", "b", b""),
        )
        .await;
    assert_eq!(app.outbox.step().await.expect("step").sent, 2);
    let mail = app
        .mail
        .wait_for("nobody@patients.example", Duration::from_secs(5), |m| parse(&m.data).is_ok())
        .await
        .expect("sent to the relay");
    let bounce = bounce_report(&mail.mail_from);

    let forged = mail.mail_from.replacen("+b", "+b9", 1);
    assert!(!app.outbox.record_bounce(&forged, bounce.as_bytes()).await.expect("store"));
    assert!(app.outbox.record_bounce(&mail.mail_from, bounce.as_bytes()).await.expect("store"));

    let report = app.deliveries(sender.token(), &stored.message_id).await;
    let bounced =
        report.recipients.iter().find(|r| r.recipient == "nobody@patients.example").expect("row");
    assert_eq!(bounced.state, DeliveryState::Bounced);
    assert!(bounced.error.as_deref().unwrap_or_default().contains("5.1.1"), "{bounced:?}");
    let other =
        report.recipients.iter().find(|r| r.recipient == "alice@example.test").expect("row");
    assert_eq!(other.state, DeliveryState::Sent, "only the bounced recipient changes");
}
