//! The message lifecycle through the API: recall by the sender, expiry
//! (the organization's default and the sender's choice), uploads sent again
//! after a lost answer, the replies and sender-sent notifications the
//! delivery slip shows, and the deletion of content nobody may read.

use std::path::PathBuf;
use std::time::Duration;

use sealpost_harness::{TestApp, TestUser, plain_upload, sample_message_id, sample_mime};
use sealpost_proto::api::{
    DeliveryReport, DeliveryState, ErrorCode, MessageInfo, RecalledCopies, Recalls, StoredMessage,
    UploadMetadata,
};
use time::OffsetDateTime;

async fn get_json<T: serde::de::DeserializeOwned>(app: &TestApp, user: &TestUser, path: &str) -> T {
    app.api
        .get(path, Some(user.token()))
        .await
        .expect("request")
        .expect_status(200)
        .unwrap_or_else(|error| panic!("GET {path}: {error}"))
        .json()
}

fn content_file(app: &TestApp, message_id: &str) -> PathBuf {
    app.data_dir.join("messages").join(&message_id[..2]).join(format!("{message_id}.eml"))
}

#[tokio::test]
async fn a_recalled_message_is_refused_to_everyone_and_its_content_deleted() {
    let app = TestApp::spawn_with(|s| {
        s.outbox.worker = false;
        s.messages.recalled_copies = RecalledCopies::Replace;
        // Content as files, so that its deletion shows.
        s.storage.inline_max_bytes = 0;
    })
    .await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let alice = app.register_agent("alice@example.test", "alice laptop").await;
    let bob = app.register_agent("bob@example.test", "bob laptop").await;
    let before_recall = app.clock.now().unix_timestamp();
    let stored: StoredMessage = app
        .store_and_notify(sender.token(), &["alice@example.test"], sample_mime("Plan", "b", b"x"))
        .await;
    let id = &stored.message_id;
    assert_eq!(app.content(Some(alice.token()), id).await.status, 200);

    // Only the sender may recall; a recipient gets the 404 of a stranger.
    let path = format!("/api/v1/messages/{id}/recall");
    let refused = app.api.post_json(&path, &serde_json::json!({}), Some(alice.token())).await;
    assert_eq!(refused.expect("request").status, 404);
    let recalled: MessageInfo = app
        .api
        .post_json(&path, &serde_json::json!({}), Some(sender.token()))
        .await
        .expect("request")
        .expect_status(200)
        .expect("the sender recalls")
        .json();
    let recalled_at = recalled.lifecycle.recalled_at.expect("recall time");

    for reader in [&alice, &sender] {
        let response = app.content(Some(reader.token()), id).await;
        assert_eq!(response.status, 410, "{}", response.text());
        assert_eq!(response.error_code(), Some(ErrorCode::MessageRecalled));
        assert!(response.text().contains("recalled"), "{}", response.text());
    }
    assert!(!content_file(&app, id).exists(), "the content is deleted at once");

    // A second recall keeps the first time; the report and the info say it.
    app.clock.advance(Duration::from_secs(60));
    let again: MessageInfo = app
        .api
        .post_json(&path, &serde_json::json!({}), Some(sender.token()))
        .await
        .expect("request")
        .json();
    assert_eq!(again.lifecycle.recalled_at, Some(recalled_at));
    let report: DeliveryReport =
        get_json(&app, &sender, &format!("/api/v1/messages/{id}/deliveries")).await;
    assert_eq!(report.lifecycle.recalled_at, Some(recalled_at));
    // The notification still queued is not sent: it would announce nothing.
    let error = report.recipients[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("recalled"), "{report:?}");
    assert_eq!(app.outbox.step().await.expect("step").attempts(), 0);

    // The recipient's agent hears of it, with the organization's choice;
    // someone else does not, and nothing is listed twice from `next_since`.
    let feed: Recalls =
        get_json(&app, &alice, &format!("/api/v1/recalls?since={before_recall}")).await;
    assert_eq!(feed.copies, RecalledCopies::Replace);
    assert_eq!(feed.recalled.len(), 1);
    assert_eq!(&feed.recalled[0].message_id, id);
    assert!(feed.next_since > recalled_at.unix_timestamp());
    let later: Recalls =
        get_json(&app, &alice, &format!("/api/v1/recalls?since={}", feed.next_since)).await;
    assert!(later.recalled.is_empty(), "{later:?}");
    let strangers: Recalls = get_json(&app, &bob, "/api/v1/recalls?since=0").await;
    assert!(strangers.recalled.is_empty(), "{strangers:?}");
}

#[tokio::test]
async fn messages_expire_by_the_organizations_default_or_the_senders_choice() {
    let app = TestApp::spawn_with(|s| {
        s.messages.expire_after_days = 7;
        // The clock moves on by days: the devices stay signed in.
        s.accounts.access_token_ttl_seconds = 30 * 24 * 3600;
        // Content as files, so that its deletion shows.
        s.storage.inline_max_bytes = 0;
    })
    .await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let alice = app.register_agent("alice@example.test", "alice laptop").await;
    let now = app.clock.now();
    let upload = |metadata: UploadMetadata| {
        let (app, sender) = (&app, &sender);
        async move {
            let response = app
                .api
                .upload_metadata(sender.token(), &metadata, sample_mime("Exp", "b", b""))
                .await
                .expect("request");
            (response.status, response)
        }
    };

    let default: StoredMessage =
        app.store_message(&sender, &["alice@example.test"], sample_mime("Default", "b", b"")).await;
    let expires = default.expires_at.expect("the organization's default applies");
    assert!((expires - now - time::Duration::days(7)).abs() < time::Duration::minutes(1));

    let chosen_at = now + time::Duration::days(1);
    let (status, response) = upload(UploadMetadata {
        expires_at: Some(chosen_at),
        ..plain_upload(&["alice@example.test"])
    })
    .await;
    assert_eq!(status, 201, "{}", response.text());
    let chosen: StoredMessage = response.json();
    assert_eq!(chosen.expires_at, Some(chosen_at));

    let (status, response) =
        upload(UploadMetadata { never_expires: true, ..plain_upload(&["alice@example.test"]) })
            .await;
    assert_eq!(status, 201, "{}", response.text());
    let forever: StoredMessage = response.json();
    assert_eq!(forever.expires_at, None);

    let (status, response) = upload(UploadMetadata {
        expires_at: Some(now - time::Duration::hours(1)),
        ..plain_upload(&["alice@example.test"])
    })
    .await;
    assert_eq!(status, 400, "a time in the past is refused");
    assert!(response.text().contains("not in the future"), "{}", response.text());

    // A day and a bit later the chosen one is gone; the others are not.
    app.clock.advance(Duration::from_secs(25 * 3600));
    let response = app.content(Some(alice.token()), &chosen.message_id).await;
    assert_eq!(response.status, 410);
    assert_eq!(response.error_code(), Some(ErrorCode::MessageExpired));
    assert_eq!(app.content(Some(alice.token()), &default.message_id).await.status, 200);
    assert_eq!(app.purger.step().await.expect("purge"), 1);
    assert!(!content_file(&app, &chosen.message_id).exists());
    assert!(content_file(&app, &default.message_id).exists());

    // A week later the default one is gone too; the one that never expires stays.
    app.clock.advance(Duration::from_secs(7 * 24 * 3600));
    assert_eq!(app.content(Some(alice.token()), &default.message_id).await.status, 410);
    assert_eq!(app.content(Some(alice.token()), &forever.message_id).await.status, 200);
    assert_eq!(app.purger.step().await.expect("purge"), 1);
    assert_eq!(app.purger.step().await.expect("purge"), 0, "each content is deleted once");
    let info: MessageInfo =
        get_json(&app, &sender, &format!("/api/v1/messages/{}", default.message_id)).await;
    assert_eq!(info.lifecycle.expires_at, Some(expires));
}

#[tokio::test]
async fn an_upload_sent_again_with_its_key_returns_the_stored_message() {
    let app = TestApp::spawn().await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let other = app.register_agent("other@example.test", "laptop").await;
    let keyed = UploadMetadata {
        client_key: Some("draft-42".into()),
        ..plain_upload(&["alice@example.test", "bob@example.test"])
    };
    let mime = sample_mime("Once", "b", b"");
    let first = app.api.upload_metadata(sender.token(), &keyed, mime.clone()).await.expect("up");
    assert_eq!(first.status, 201, "{}", first.text());
    let again = app.api.upload_metadata(sender.token(), &keyed, mime.clone()).await.expect("up");
    assert_eq!(again.status, 200, "{}", again.text());
    let (first, again): (StoredMessage, StoredMessage) = (first.json(), again.json());
    assert_eq!(first, again, "the same message, with the same notifications");

    // Keys are per account.
    let others = app.api.upload_metadata(other.token(), &keyed, mime.clone()).await.expect("up");
    assert_eq!(others.status, 201);
    assert_ne!(others.json::<StoredMessage>().message_id, first.message_id);

    let bad =
        UploadMetadata { client_key: Some("a\nb".into()), ..plain_upload(&["a@example.test"]) };
    let response = app.api.upload_metadata(sender.token(), &bad, mime).await.expect("up");
    assert_eq!(response.status, 400);
}

#[tokio::test]
async fn the_slip_shows_notifications_the_sender_sent_and_replies() {
    let app = TestApp::spawn().await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let alice = app.register_agent("alice@example.test", "alice laptop").await;
    let stored = app
        .store_message(
            &sender,
            &["alice@example.test", "bob@example.test"],
            sample_mime("Question", "b", b""),
        )
        .await;
    let id = &stored.message_id;
    let path = format!("/api/v1/messages/{id}/notifications");
    let notified = serde_json::json!({ "recipients": ["Alice@Example.test"], "relay_answer": "250 2.0.0 Ok: queued as 4XyZ" });
    let response = app.api.post_json(&path, &notified, Some(sender.token())).await.expect("post");
    assert_eq!(response.status, 204, "{}", response.text());
    let stranger = serde_json::json!({ "recipients": ["carol@example.test"] });
    let response = app.api.post_json(&path, &stranger, Some(sender.token())).await.expect("post");
    assert_eq!(response.status, 400, "only the message's recipients");
    let response = app.api.post_json(&path, &notified, Some(alice.token())).await.expect("post");
    assert_eq!(response.status, 404, "only the sender reports");

    // Alice answers through Sealpost: her message names the original's Message-ID.
    let original_id = sample_message_id("Question");
    let reply = format!(
        "From: alice@example.test\r\nTo: sender@example.test\r\nSubject: Re: Question\r\n\
         Message-ID: <reply.1@example.test>\r\nIn-Reply-To: <{original_id}>\r\n\
         References: <{original_id}>\r\n\r\nYes.\r\n"
    );
    let before = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    app.store_message(&alice, &["sender@example.test"], reply.into_bytes()).await;

    let report: DeliveryReport =
        get_json(&app, &sender, &format!("/api/v1/messages/{id}/deliveries")).await;
    let line = |who: &str| {
        report.recipients.iter().find(|r| r.recipient == who).expect("recipient listed").clone()
    };
    let alice_line = line("alice@example.test");
    assert_eq!(alice_line.state, DeliveryState::Sent);
    assert!(alice_line.notified_at.is_some());
    assert_eq!(alice_line.relay_answer.as_deref(), Some("250 2.0.0 Ok: queued as 4XyZ"));
    assert!(alice_line.replied_at.is_some_and(|at| at > before), "{alice_line:?}");
    let bob_line = line("bob@example.test");
    assert_eq!(bob_line.state, DeliveryState::NotSentByServer);
    assert_eq!(bob_line.replied_at, None);
}
