//! Notifications that really arrive: the server sends through the real
//! Postfix, which delivers into Dovecot, and the tests read the recipient's
//! INBOX over IMAP. Deliverability is judged by independent tools: dkimpy
//! for the DKIM signature, SpamAssassin for the spam score.

use std::sync::Arc;
use std::time::Duration;

use sealpost_harness::checks::{dkim_verifies, rsa_private_key, spamassassin_score};
use sealpost_harness::{ApiClient, MailStack, ServerProcess, TestApp, TestUser, sample_mime};
use sealpost_proto::api::{DeliveryReport, DeliveryState, StoredMessage};
use sealpost_proto::notification::{TrustedServer, parse};
use sealpost_server::outbox::StepReport;
use sealpost_server::settings::{Secret, SmtpSecurity};

const ARRIVAL: Duration = Duration::from_secs(15);

struct World {
    stack: Arc<MailStack>,
    app: TestApp,
    sender: TestUser,
    _keys: tempfile::TempDir,
}

/// A mail stack with sender, alice and bob; a server relaying through it,
/// DKIM-signing with a fresh key, its outbox stepped by the test.
async fn world() -> World {
    let stack = Arc::new(MailStack::start(&["sender", "alice", "bob"]).await.expect("mail stack"));
    let keys = tempfile::tempdir().expect("temp dir");
    let key_file = rsa_private_key(keys.path());
    let app = TestApp::spawn_on(stack.clone(), |s| {
        s.outbox.worker = false;
        // The outage test moves the clock hours ahead; the sender stays signed in.
        s.accounts.access_token_ttl_seconds = 7 * 24 * 3600;
        s.dkim.domain = Some("example.test".into());
        s.dkim.selector = Some("sealpost1".into());
        s.dkim.private_key_file = Some(key_file.clone());
        s.branding.legal_disclaimer = "This email may contain confidential information.".into();
        s.branding.secure_message_disclaimer = "Delivered securely by Example Clinic.".into();
    })
    .await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    World { stack, app, sender, _keys: keys }
}

async fn upload(world: &World, recipients: &[&str], subject: &str) -> StoredMessage {
    let mime = sample_mime(subject, "Your results are attached.", b"%PDF-1.4 results");
    world.app.store_and_notify(world.sender.token(), recipients, mime).await
}

async fn deliveries(world: &World, message_id: &str) -> DeliveryReport {
    world.app.deliveries(world.sender.token(), message_id).await
}

/// Notifications in the INBOX (verification emails are skipped).
async fn notifications_in_inbox(world: &World, address: &str, at_least: usize) -> Vec<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let notifications: Vec<Vec<u8>> = world
            .stack
            .messages(address, "INBOX")
            .await
            .expect("read the INBOX")
            .into_iter()
            .map(|message| message.raw)
            .filter(|raw| parse(raw).is_ok())
            .collect();
        if notifications.len() >= at_least || tokio::time::Instant::now() >= deadline {
            return notifications;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_uploaded_message_notifies_each_recipient_in_their_real_inbox() {
    let world = world().await;
    let stored =
        upload(&world, &["alice@example.test", "bob@example.test"], "Your lab results").await;
    assert_eq!(
        world.app.outbox.step().await.expect("step"),
        StepReport { sent: 2, retried: 0, failed: 0 }
    );

    let trusted =
        TrustedServer::from_well_known(&world.app.well_known().await).expect("well-known");
    let (_, dkim_record) = world.app.dkim_record.clone().expect("DKIM configured");
    for recipient in ["alice@example.test", "bob@example.test"] {
        let inbox = notifications_in_inbox(&world, recipient, 1).await;
        assert_eq!(inbox.len(), 1, "{recipient} got exactly one notification");
        let raw = &inbox[0];
        let text = String::from_utf8_lossy(raw);

        let notification = parse(raw).expect("parses");
        notification.verify(&trusted, recipient).expect("verifies for its recipient");
        assert_eq!(notification.fields.message_id.as_str(), stored.message_id);
        assert_eq!(notification.fields.content_sha256.to_hex(), stored.content_sha256);

        assert!(text.contains("Subject: Your lab results"), "subject untouched:\n{text}");
        assert!(
            text.contains("To: \"Alice\" <alice@example.test>"),
            "the sender's To kept:\n{text}"
        );
        for wording in [
            "Sent by Example Clinic, 1 Test Street, Testville",
            "This email may contain confidential information.",
            "Delivered securely by Example Clinic.",
        ] {
            assert!(text.contains(wording), "{wording:?} missing:\n{text}");
        }
        assert!(!text.contains("Your results are attached"), "content never travels by SMTP");
        assert!(text.contains("Received: from"), "it went through Postfix");
        assert!(dkim_verifies(raw, &dkim_record), "dkimpy rejects the delivered copy:\n{text}");
        let tampered = text.replacen("Subject: Your lab results", "Subject: Your lab results!", 1);
        assert!(
            !dkim_verifies(tampered.as_bytes(), &dkim_record),
            "a changed subject must fail DKIM"
        );
    }

    let report = deliveries(&world, &stored.message_id).await;
    for recipient in &report.recipients {
        assert_eq!(recipient.state, DeliveryState::Sent);
        let answer = recipient.relay_answer.as_deref().unwrap_or_default();
        assert!(answer.contains("queued as"), "Postfix's queue id is recorded: {answer}");
    }
}

#[tokio::test]
async fn the_delivered_notification_scores_low_with_spamassassin() {
    let world = world().await;
    upload(&world, &["alice@example.test"], "Your lab results").await;
    world.app.outbox.step().await.expect("step");
    let inbox = notifications_in_inbox(&world, "alice@example.test", 1).await;
    let (score, rules) = spamassassin_score(inbox.first().expect("delivered"));
    println!("SpamAssassin score of the delivered default notification: {score}\n{rules}");
    assert!(score <= 1.0, "score {score} is above 1.0:{rules}");
}

#[tokio::test]
async fn a_relay_outage_loses_nothing_and_delivers_once_when_it_returns() {
    let world = world().await;
    world.stack.suspend_smtp().await.expect("relay down");
    let stored = upload(&world, &["alice@example.test"], "Sent while the relay was down").await;

    assert_eq!(
        world.app.outbox.step().await.expect("step"),
        StepReport { sent: 0, retried: 1, failed: 0 }
    );
    let queued = deliveries(&world, &stored.message_id).await.recipients.remove(0);
    assert_eq!(queued.state, DeliveryState::Queued);
    assert!(queued.error.is_some() && queued.next_attempt_at.is_some(), "{queued:?}");
    // Not due yet: stepping again does nothing.
    assert_eq!(world.app.outbox.step().await.expect("step").attempts(), 0);

    // An hour of outage: every retry fails, nothing is dropped.
    for _ in 0..5 {
        world.app.clock.advance(Duration::from_secs(15 * 60));
        world.app.outbox.step().await.expect("step");
    }
    assert_eq!(
        deliveries(&world, &stored.message_id).await.recipients[0].state,
        DeliveryState::Queued
    );

    world.stack.resume_smtp().await.expect("relay back");
    world.app.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        world.app.outbox.step().await.expect("step"),
        StepReport { sent: 1, retried: 0, failed: 0 }
    );
    assert_eq!(world.app.outbox.step().await.expect("step").attempts(), 0);
    let inbox = notifications_in_inbox(&world, "alice@example.test", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let inbox_later = notifications_in_inbox(&world, "alice@example.test", 1).await;
    assert_eq!((inbox.len(), inbox_later.len()), (1, 1), "delivered exactly once");
    let sent = deliveries(&world, &stored.message_id).await.recipients.remove(0);
    assert_eq!(sent.state, DeliveryState::Sent);
    assert!(sent.attempts >= 3, "{sent:?}");
}

#[tokio::test]
async fn a_permanent_refusal_is_recorded_with_the_relays_answer() {
    let world = world().await;
    let stored =
        upload(&world, &["alice@example.test", "nobody@example.test"], "Partly deliverable").await;
    assert_eq!(
        world.app.outbox.step().await.expect("step"),
        StepReport { sent: 1, retried: 0, failed: 1 }
    );
    let report = deliveries(&world, &stored.message_id).await;
    let refused =
        report.recipients.iter().find(|r| r.recipient == "nobody@example.test").expect("row");
    assert_eq!(refused.state, DeliveryState::Failed);
    let reason = refused.error.as_deref().unwrap_or_default();
    assert!(reason.contains("550"), "the relay's answer is kept: {reason}");
    assert_eq!(world.app.outbox.step().await.expect("step").attempts(), 0, "never retried");
    assert_eq!(notifications_in_inbox(&world, "alice@example.test", 1).await.len(), 1);
}

#[tokio::test]
async fn a_missing_dkim_key_stops_the_server_with_the_key_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = sealpost_server::settings::Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().expect("address");
    settings.server.data_dir = dir.path().join("data");
    settings.dkim.domain = Some("example.test".into());
    settings.dkim.selector = Some("s".into());
    settings.dkim.private_key_file = Some(dir.path().join("missing.pem"));
    let error = sealpost_server::Application::build(settings).await.err().expect("refused");
    assert!(error.to_string().contains("dkim.private_key_file"), "{error}");
}

#[tokio::test]
async fn queued_notifications_survive_a_server_restart() {
    let stack = MailStack::start(&["sender", "alice"]).await.expect("mail stack");
    let binary = tokio::task::spawn_blocking(ServerProcess::binary)
        .await
        .expect("join")
        .expect("server binary");
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("SEALPOST_SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        ("SEALPOST_SMTP__HOST", "127.0.0.1".to_owned()),
        ("SEALPOST_SMTP__PORT", stack.smtp_addr().port().to_string()),
        ("SEALPOST_SMTP__SECURITY", "none".to_owned()),
        ("SEALPOST_OUTBOX__RETRY_INITIAL_SECONDS", "1".to_owned()),
        ("SEALPOST_OUTBOX__RETRY_MAX_SECONDS", "1".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let server = ServerProcess::start(&binary, dir.path(), &[], &env).expect("server starts");
    let cert = std::fs::read(dir.path().join("sealpost-data/tls/cert.pem")).expect("certificate");
    let api = ApiClient::new(&server.base_url, &cert).expect("client");
    let (sender, _) = api
        .register_via_inbox(&stack, &server.origin, "sender@example.test", "laptop")
        .await
        .expect("sender registers");

    stack.suspend_smtp().await.expect("relay down");
    let stored: StoredMessage = api
        .upload_with(
            &sender.access_token,
            &["alice@example.test"],
            sample_mime("Before the restart", "x", b""),
            true,
        )
        .await
        .expect("upload")
        .expect_status(201)
        .expect("stored")
        .json();
    let deliveries_path = format!("/api/v1/messages/{}/deliveries", stored.message_id);
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let report: DeliveryReport =
            api.get(&deliveries_path, Some(&sender.access_token)).await.expect("request").json();
        if report.recipients[0].error.is_some() {
            assert_eq!(report.recipients[0].state, DeliveryState::Queued);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempt was made: {report:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(15)))
        .await
        .expect("join")
        .expect("stops on SIGTERM");
    assert!(status.success(), "{status}");

    stack.resume_smtp().await.expect("relay back");
    let restarted = ServerProcess::start(&binary, dir.path(), &[], &env).expect("server restarts");
    let is_notification = |raw: &[u8]| parse(raw).is_ok();
    let raw = stack
        .wait_for_email("alice@example.test", "INBOX", is_notification, ARRIVAL)
        .await
        .expect("the notification queued before the restart arrives");
    assert!(String::from_utf8_lossy(&raw).contains("Subject: Before the restart"));
    let api = ApiClient::new(&restarted.base_url, &cert).expect("client");
    let report: DeliveryReport =
        api.get(&deliveries_path, Some(&sender.access_token)).await.expect("request").json();
    assert_eq!(report.recipients[0].state, DeliveryState::Sent, "{report:?}");
}

/// A server relaying through the stack's Postfix with TLS and AUTH as the
/// stack's `sender` user, over `security` on `port`.
async fn relay_over_tls(security: SmtpSecurity, port: fn(&MailStack) -> u16) {
    let stack = Arc::new(MailStack::start(&["sender", "alice"]).await.expect("mail stack"));
    let relay_user = stack.user("sender").clone();
    let app = TestApp::spawn_on(stack.clone(), |s| {
        s.outbox.worker = false;
        s.smtp.security = security;
        s.smtp.port = port(&stack);
        s.smtp.ca_file = Some(stack.ca_file());
        s.smtp.username = Some(relay_user.address.clone());
        s.smtp.password = Some(Secret::new(relay_user.password.clone()));
    })
    .await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    app.store_and_notify(
        sender.token(),
        &["alice@example.test"],
        sample_mime("Over TLS", "x", b""),
    )
    .await;
    assert_eq!(app.outbox.step().await.expect("step").sent, 1);
    let is_notification = |raw: &[u8]| parse(raw).is_ok();
    let raw = stack
        .wait_for_email("alice@example.test", "INBOX", is_notification, ARRIVAL)
        .await
        .expect("delivered");
    let received = String::from_utf8_lossy(&raw);
    assert!(
        received.contains("with ESMTPSA"),
        "TLS and AUTH show in Postfix's Received line:\n{received}"
    );
    assert!(
        stack
            .postfix_logged(
                &format!("sasl_username={}", relay_user.address),
                Duration::from_secs(5)
            )
            .await,
        "Postfix authenticated the server"
    );
}

#[tokio::test]
async fn the_relay_is_reached_over_starttls_with_authentication() {
    relay_over_tls(SmtpSecurity::Starttls, |stack| stack.smtp_addr().port()).await;
}

#[tokio::test]
async fn the_relay_is_reached_over_implicit_tls_with_authentication() {
    relay_over_tls(SmtpSecurity::Tls, |stack| stack.smtps_addr().port()).await;
}

#[tokio::test]
async fn a_wrong_relay_password_fails_clearly() {
    let stack = Arc::new(MailStack::start(&["sender"]).await.expect("mail stack"));
    let app = TestApp::spawn_on(stack.clone(), |s| {
        s.smtp.security = SmtpSecurity::Starttls;
        s.smtp.ca_file = Some(stack.ca_file());
        s.smtp.username = Some("sender@example.test".into());
        s.smtp.password = Some(Secret::new("not the password"));
    })
    .await;
    let response = app.request_code("sender@example.test").await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(
        stack.postfix_logged("authentication failed", Duration::from_secs(5)).await,
        "{}",
        stack.postfix_log()
    );
    assert_eq!(
        response.json::<sealpost_proto::api::ErrorBody>().code,
        sealpost_proto::api::ErrorCode::MailUnavailable
    );
}
