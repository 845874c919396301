//! Upload with attachments → the notification verifies with the key published
//! at /.well-known/sealpost → retrieval returns the identical bytes.

use sealpost_harness::{TestApp, sample_mime};
use sealpost_proto::ContentDigest;
use sealpost_proto::api::{MessageInfo, RetrievalLog};
use sealpost_proto::notification::{EmailEnvelope, TrustedServer, compose_email, parse};

#[tokio::test]
async fn a_stored_message_comes_back_identical_and_its_notification_verifies() {
    let app = TestApp::spawn().await;
    let sender = app.register_agent("sender@example.test", "sender laptop").await;
    let alice = app.register_agent("alice@example.test", "alice laptop").await;

    let attachment: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mime = sample_mime("Quarterly results", "The numbers are attached.", &attachment);
    let stored =
        app.store_message(&sender, &["Alice@Example.TEST", "bob@example.test"], mime.clone()).await;

    assert_eq!(stored.size, mime.len() as u64);
    assert_eq!(stored.content_sha256, ContentDigest::of(&mime).to_hex());
    assert_eq!(stored.notifications.len(), 2, "one notification per recipient");
    let for_alice = stored
        .notifications
        .iter()
        .find(|n| n.recipient == "alice@example.test")
        .expect("alice's notification");
    assert!(
        for_alice.text_body.contains(&stored.message_id),
        "the placeholder links to the message"
    );
    assert!(
        !for_alice.text_body.contains("Quarterly results"),
        "the placeholder never carries content"
    );

    // The notification as a mail client would receive it.
    let email = compose_email(
        &EmailEnvelope {
            from: (Some("Sender".into()), "sender@example.test".into()),
            to: vec![(Some("Alice".into()), "alice@example.test".into())],
            cc: vec![],
            subject: "Quarterly results".into(),
            date: 1_795_000_000,
            message_id: "<q@example.test>".into(),
            in_reply_to: None,
            references: vec![],
        },
        for_alice,
    );
    let trusted =
        TrustedServer::from_well_known(&app.well_known().await).expect("well-known document");
    let notification = parse(&email).expect("notification parses");
    notification.verify(&trusted, "alice@example.test").expect("notification verifies");
    assert_eq!(notification.fields.message_id.as_str(), stored.message_id);
    assert!(notification.verify(&trusted, "bob@example.test").is_err(), "issued for alice only");

    let content = app.content(Some(alice.token()), &stored.message_id).await;
    assert_eq!(content.status, 200);
    assert_eq!(content.headers["content-type"], "message/rfc822");
    assert_eq!(content.body, mime, "identical bytes");
    assert_eq!(
        ContentDigest::of(&content.body),
        notification.fields.content_sha256,
        "hash promised by the signature"
    );

    let info: MessageInfo = app
        .api
        .get(&format!("/api/v1/messages/{}", stored.message_id), Some(alice.token()))
        .await
        .expect("info")
        .json();
    assert_eq!(info.sender, "sender@example.test");
    assert_eq!(info.recipients, vec!["alice@example.test", "bob@example.test"]);

    let log: RetrievalLog = app
        .api
        .get(&format!("/api/v1/messages/{}/retrievals", stored.message_id), Some(sender.token()))
        .await
        .expect("retrievals")
        .json();
    assert_eq!(log.retrievals.len(), 1);
    assert_eq!(log.retrievals[0].account, "alice@example.test");
    assert_eq!(log.retrievals[0].device_id, alice.tokens.device_id);
    assert_eq!(log.retrievals[0].device_name, "alice laptop");
}

#[tokio::test]
async fn content_survives_a_server_restart_on_the_same_data_directory() {
    let app = TestApp::spawn().await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let mime = sample_mime("Persisted", "still here", b"bytes");
    let stored = app.store_message(&sender, &["sender@example.test"], mime.clone()).await;
    let data_dir = app.data_dir.clone();
    let keys_before = app.well_known().await.signing_keys;

    // On PostgreSQL (SEALPOST_TEST_DATABASE), the same database too.
    let database = app.postgres.as_ref().map(|postgres| postgres.url());
    let restarted = TestApp::spawn_with(|settings| {
        settings.server.data_dir = data_dir;
        settings.database.url = database;
    })
    .await;
    assert_eq!(restarted.well_known().await.signing_keys, keys_before, "the signing key persists");
    let content = restarted.content(Some(sender.token()), &stored.message_id).await;
    assert_eq!(content.status, 200, "{}", content.text());
    assert_eq!(content.body, mime);
    drop(app);
}
