//! Message content in object storage, through the API: content above
//! `storage.inline_max_bytes` goes to a real S3-compatible service (s3s-fs,
//! checking signatures) or a directory and comes back byte for byte; small
//! content stays in the database; refused, cut-off and deleted messages
//! leave no object behind; a missing object is answered with a clear error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::multipart::{Form, Part};
use sealpost_harness::{S3Server, TestApp, TestUser, plain_upload, sample_mime};
use sealpost_proto::ContentDigest;
use sealpost_proto::api::{ErrorCode, StoredMessage, UploadMetadata};

/// A message of about 11 MiB: three parts of a multipart upload.
fn large_mime(subject: &str) -> Vec<u8> {
    let attachment: Vec<u8> =
        (0..8 * 1024 * 1024u32).map(|i| (i.wrapping_mul(7) % 251) as u8).collect();
    sample_mime(subject, "The scans are attached.", &attachment)
}

fn key_of(message_id: &str) -> String {
    format!("{}/{message_id}.eml", &message_id[..2])
}

async fn on_s3(
    configure: impl FnOnce(&mut sealpost_server::settings::Settings),
) -> (Arc<S3Server>, TestApp) {
    let s3 = Arc::new(S3Server::start().await.expect("S3 service"));
    let app = TestApp::spawn_with(|settings| {
        s3.configure(settings);
        configure(settings);
    })
    .await;
    (s3, app)
}

async fn users(app: &TestApp) -> (TestUser, TestUser) {
    let sender = app.register_agent("sender@example.test", "sender laptop").await;
    let alice = app.register_agent("alice@example.test", "alice laptop").await;
    (sender, alice)
}

/// The content as `reader` fetches it; it must match what was stored.
async fn fetch_identical(app: &TestApp, reader: &TestUser, stored: &StoredMessage, mime: &[u8]) {
    let response = app.content(Some(reader.token()), &stored.message_id).await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body[..200.min(response.body.len())])
    );
    assert_eq!(response.headers["content-length"], mime.len().to_string().as_str());
    assert!(response.body == mime, "the content comes back byte for byte");
    assert_eq!(ContentDigest::of(&response.body).to_hex(), stored.content_sha256);
}

/// Waits until the service holds no object and no unfinished upload.
async fn wait_until_empty(s3: &S3Server, what: &str) {
    for _ in 0..250 {
        if s3.objects().is_empty() && s3.unfinished_uploads().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} left {:?} and uploads {:?}", s3.objects(), s3.unfinished_uploads());
}

#[tokio::test]
async fn large_content_is_one_object_in_the_bucket_and_comes_back_identical() {
    let (s3, app) = on_s3(|_| {}).await;
    let (sender, alice) = users(&app).await;
    let mime = large_mime("Scans");
    let stored = app.store_message(&sender, &["alice@example.test"], mime.clone()).await;
    assert_eq!(s3.objects(), vec![key_of(&stored.message_id)]);
    assert!(s3.unfinished_uploads().is_empty(), "{:?}", s3.unfinished_uploads());
    let object = std::fs::read(s3.object_file(&key_of(&stored.message_id))).expect("object");
    assert!(object == mime, "the object is the message as uploaded");

    fetch_identical(&app, &alice, &stored, &mime).await;
    fetch_identical(&app, &sender, &stored, &mime).await;
}

#[tokio::test]
async fn small_content_stays_out_of_the_bucket() {
    let (s3, app) = on_s3(|_| {}).await;
    let (sender, alice) = users(&app).await;
    let mime = sample_mime("Short note", "See you at ten.", b"");
    let stored = app.store_message(&sender, &["alice@example.test"], mime.clone()).await;
    fetch_identical(&app, &alice, &stored, &mime).await;
    assert!(s3.objects().is_empty(), "{:?}", s3.objects());
    assert!(s3.unfinished_uploads().is_empty());
}

#[tokio::test]
async fn refused_and_cut_off_uploads_leave_the_bucket_empty() {
    let (s3, app) = on_s3(|settings| settings.messages.max_size = 8 * 1024 * 1024).await;
    let (sender, _) = users(&app).await;

    // Too large: refused once past the limit, after a first part went up.
    let too_large =
        app.api.upload(sender.token(), &["alice@example.test"], vec![b'x'; 9 * 1024 * 1024]);
    let response = too_large.await.expect("request");
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.error_code(), Some(ErrorCode::PayloadTooLarge));
    wait_until_empty(&s3, "a refused upload").await;

    // Cut off: six MiB arrive, the multipart upload has its first part in
    // the bucket's service, then the client's body fails and the connection drops.
    let (watched, part_seen) = (s3.clone(), Arc::new(AtomicBool::new(false)));
    let seen = part_seen.clone();
    let head =
        futures_util::stream::iter((0..96).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 64 * 1024])));
    let failure = futures_util::stream::once(async move {
        for _ in 0..500 {
            if watched.unfinished_uploads().iter().any(|name| name.starts_with(".upload_id-")) {
                seen.store(true, Ordering::SeqCst);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(std::io::Error::other("the client went away"))
    });
    let body = reqwest::Body::wrap_stream(head.chain(failure));
    let form = Form::new()
        .part(
            "metadata",
            Part::text(
                serde_json::to_string(&plain_upload(&["alice@example.test"])).expect("json"),
            )
            .mime_str("application/json")
            .expect("type"),
        )
        .part("content", Part::stream(body).mime_str("message/rfc822").expect("type"));
    let request = app.api.http().post(app.api.url("/api/v1/messages")).bearer_auth(sender.token());
    let outcome = request.multipart(form).send().await;
    assert!(
        outcome.as_ref().map_or(true, |response| !response.status().is_success()),
        "a cut-off upload is not stored: {outcome:?}"
    );
    assert!(part_seen.load(Ordering::SeqCst), "a part was uploaded before the cut");
    wait_until_empty(&s3, "a cut-off upload").await;
}

#[tokio::test]
async fn an_object_deleted_behind_the_servers_back_is_a_clear_error() {
    let (s3, app) = on_s3(|_| {}).await;
    let (sender, alice) = users(&app).await;
    let stored = app.store_message(&sender, &["alice@example.test"], large_mime("Gone")).await;
    std::fs::remove_file(s3.object_file(&key_of(&stored.message_id))).expect("delete the object");

    let response = app.content(Some(alice.token()), &stored.message_id).await;
    assert_eq!(response.status, 500, "{}", response.text());
    assert_eq!(response.error_code(), Some(ErrorCode::Internal));
    let text = response.text();
    assert!(
        text.contains(&format!(
            "The content of message {} is missing from storage",
            stored.message_id
        )),
        "{text}"
    );
}

#[tokio::test]
async fn recalled_and_expired_messages_lose_their_objects() {
    let (s3, app) = on_s3(|settings| {
        // The clock moves on by a day: the sender stays signed in.
        settings.accounts.access_token_ttl_seconds = 30 * 24 * 3600;
    })
    .await;
    let (sender, _) = users(&app).await;
    let recalled =
        app.store_message(&sender, &["alice@example.test"], large_mime("Recalled")).await;
    let expiring = UploadMetadata {
        expires_at: Some(app.clock.now() + time::Duration::days(1)),
        ..plain_upload(&["alice@example.test"])
    };
    let response = app.api.upload_metadata(sender.token(), &expiring, large_mime("Expiring")).await;
    let expiring: StoredMessage =
        response.expect("request").expect_status(201).expect("stored").json();
    let mut both = vec![key_of(&recalled.message_id), key_of(&expiring.message_id)];
    both.sort();
    assert_eq!(s3.objects(), both);

    let path = format!("/api/v1/messages/{}/recall", recalled.message_id);
    let response = app.api.post_json(&path, &serde_json::json!({}), Some(sender.token())).await;
    response.expect("request").expect_status(200).expect("recalled");
    assert_eq!(s3.objects(), vec![key_of(&expiring.message_id)], "deleted at the recall");

    assert_eq!(app.purger.step().await.expect("purge"), 0, "nothing expired yet");
    app.clock.advance(Duration::from_secs(25 * 3600));
    assert_eq!(app.purger.step().await.expect("purge"), 1);
    assert!(s3.objects().is_empty(), "{:?}", s3.objects());
    assert!(s3.unfinished_uploads().is_empty());
}

#[tokio::test]
async fn the_service_refuses_a_server_with_the_wrong_secret_key() {
    let (s3, app) = on_s3(|settings| {
        settings.storage.s3.secret_access_key =
            Some(sealpost_server::settings::Secret::new("not-the-secret"));
    })
    .await;
    let (sender, _) = users(&app).await;
    let response = app.api.upload(sender.token(), &["alice@example.test"], large_mime("Refused"));
    let response = response.await.expect("request");
    assert_eq!(response.status, 500, "the signature is checked: {}", response.text());
    assert_eq!(response.error_code(), Some(ErrorCode::Internal));
    wait_until_empty(&s3, "a refused signature").await;
}

#[tokio::test]
async fn large_content_round_trips_through_the_filesystem_backend() {
    let app = TestApp::spawn().await;
    let (sender, alice) = users(&app).await;
    let mime = large_mime("On disk");
    let stored = app.store_message(&sender, &["alice@example.test"], mime.clone()).await;
    let root = app.data_dir.join("messages");
    let file = root.join(key_of(&stored.message_id));
    assert!(std::fs::read(&file).expect("the object is a file") == mime);
    let prefix = std::fs::read_dir(root.join(&stored.message_id[..2])).expect("dir");
    let names: Vec<_> = prefix.flatten().map(|entry| entry.file_name()).collect();
    assert_eq!(names.len(), 1, "no staging file left: {names:?}");
    fetch_identical(&app, &alice, &stored, &mime).await;
}
