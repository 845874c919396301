//! The server under faults of its own machine: the real binary killed in
//! the middle of uploads, its database locked by another process, and its
//! disk full. After each, every message is either absent or complete
//! (content byte-identical, each notification queued once), nothing half
//! stored is visible, and the server works again once the fault is gone,
//! without a restart where it kept running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use sealpost_harness::outages::{
    LockedDatabase, RestartableServer, Tmpfs, received_everything_sent, sqlite_query,
};
use sealpost_harness::{
    AgentCli, ApiClient, ApiResponse, KeyringSession, MailStack, TestApp, plain_upload,
    sample_mime, swap_state,
};
use sealpost_proto::api::{ErrorCode, StoredMessage, UploadMetadata};

const SENDER: &str = "sender@example.test";
const RECIPIENTS: [&str; 2] = ["bob@example.test", "carol@example.test"];

/// Content above the inline threshold: a file in the object store. Over
/// one multipart part (5 MiB), so that a cut-off upload has part of it on disk.
const LARGE: usize = 7 * 1024 * 1024;
/// Content kept in the database.
const SMALL: usize = 40 * 1024;
/// Up to this size content is kept in the database (`storage.inline_max_bytes`).
const INLINE_MAX: u64 = 64 * 1024;

/// A message of about `size` bytes whose attachment is unique to `seed`.
fn message(size: usize, seed: &str) -> Vec<u8> {
    let attachment: Vec<u8> =
        seed.bytes().cycle().zip(0..size * 3 / 4).map(|(b, i)| b ^ (i % 251) as u8).collect();
    sample_mime(&format!("Fault {seed}"), "Body", &attachment)
}

fn metadata(client_key: &str, send_notifications: bool) -> UploadMetadata {
    UploadMetadata {
        client_key: Some(client_key.into()),
        send_notifications,
        ..plain_upload(&RECIPIENTS)
    }
}

/// Where the server is cut off in an upload.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Part of the content has arrived (and, for a large one, part of it is on disk).
    MidBody,
    /// The whole request has arrived; the server is storing it (held up by
    /// a database lock so that the moment is certain) and has not answered.
    AfterBody,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_upload_keeps_nothing_or_everything_and_a_resend_stores_once() {
    let mut server = RestartableServer::start(&[]).expect("the server starts");
    let sender = server.register(SENDER).await.expect("the sender registers");
    let token = sender.access_token.clone();
    let cases = [
        ("small", SMALL, Cut::MidBody),
        ("small", SMALL, Cut::AfterBody),
        ("large", LARGE, Cut::MidBody),
        ("large", LARGE, Cut::AfterBody),
    ];
    for (place, size, cut) in cases {
        let key = format!("killed-{place}-{cut:?}");
        let content = message(size, &key);
        upload_until_killed(&mut server, &token, &key, &content, cut).await;
        server.restart().expect("the server starts again");

        let found = messages_with_key(&server.database(), &key);
        assert!(found.len() <= 1, "{key}: {found:?}");
        if let Some(id) = found.first() {
            assert_complete(&server, &token, id, &content).await;
        }
        assert_nothing_half_stored(&server, &token).await;

        // The client sends the upload again, not knowing whether it arrived.
        let response = server
            .api()
            .upload_metadata(&token, &metadata(&key, true), content.clone())
            .await
            .expect("upload again");
        let expected = if found.is_empty() { 201 } else { 200 };
        let stored: StoredMessage = response.expect_status(expected).expect(&key).json();
        if let Some(id) = found.first() {
            assert_eq!(&stored.message_id, id, "{key}: the stored message is answered");
        }
        assert_eq!(messages_with_key(&server.database(), &key), vec![stored.message_id.clone()]);
        assert_complete(&server, &token, &stored.message_id, &content).await;
        eprintln!("{key}: stored before the kill: {}", !found.is_empty());
    }
    assert_nothing_half_stored(&server, &token).await;
}

/// Uploads `content` with client key `key` (the server sends the
/// notifications) and kills the server at `cut`.
async fn upload_until_killed(
    server: &mut RestartableServer,
    token: &str,
    key: &str,
    content: &[u8],
    cut: Cut,
) {
    let port = server.port().expect("port");
    let objects = server.data_dir().join("messages");
    let before = files(&objects);
    let (chunks, mut pulled) = fed_body();
    let form = Form::new()
        .part(
            "metadata",
            Part::text(serde_json::to_string(&metadata(key, true)).expect("json"))
                .mime_str("application/json")
                .expect("mime"),
        )
        .part(
            "content",
            Part::stream(reqwest::Body::wrap_stream(chunks.stream))
                .mime_str("message/rfc822")
                .expect("mime"),
        );
    let request = server
        .api()
        .http()
        .post(server.api().url("/api/v1/messages"))
        .bearer_auth(token)
        .multipart(form)
        .send();
    let request = tokio::spawn(request);
    let pieces: Vec<Bytes> =
        content.chunks(content.len().div_ceil(8)).map(Bytes::copy_from_slice).collect();
    let lock = match cut {
        Cut::MidBody => {
            // All but the last piece, then wait for the server to hold them.
            let mut sent = 0;
            for piece in &pieces[..pieces.len() - 1] {
                chunks.feed.send(piece.clone()).await.expect("feed");
                sent += 1;
            }
            wait_for_pulled(&mut pulled, sent).await;
            if content.len() as u64 > INLINE_MAX {
                // Some of the content is on disk, in a file still being written.
                wait_until(key, || {
                    files(&objects).iter().any(|f| !before.contains(f) && is_partial_and_started(f))
                })
                .await;
            }
            wait_until(key, || received_everything_sent(port).expect("/proc/net/tcp")).await;
            None
        }
        Cut::AfterBody => {
            let lock = LockedDatabase::sqlite(&server.database()).await.expect("lock");
            for piece in &pieces {
                chunks.feed.send(piece.clone()).await.expect("feed");
            }
            drop(chunks.feed);
            wait_for_pulled(&mut pulled, pieces.len() + 1).await;
            if content.len() as u64 > INLINE_MAX {
                // The content is complete and in place; recording it waits for the lock.
                wait_until(key, || {
                    files(&objects).iter().any(|f| !before.contains(f) && !is_partial(f))
                })
                .await;
            }
            wait_until(key, || received_everything_sent(port).expect("/proc/net/tcp")).await;
            Some(lock)
        }
    };
    assert!(!request.is_finished(), "{key}: the server answered before it was killed");
    server.kill();
    let outcome = tokio::time::timeout(Duration::from_secs(10), request).await;
    let outcome = outcome.expect("the cut-off request ends").expect("join");
    assert!(outcome.is_err(), "{key}: a killed server answered: {outcome:?}");
    if let Some(lock) = lock {
        lock.release().await.expect("release the lock");
    }
}

/// A request body fed piece by piece through `feed`.
struct FedBody {
    feed: tokio::sync::mpsc::Sender<Bytes>,
    stream: futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>,
}

/// A [`FedBody`], and a count of what the client took from it (a piece,
/// or the end, each one), in order.
fn fed_body() -> (FedBody, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use futures_util::StreamExt;
    let (feed, pieces) = tokio::sync::mpsc::channel::<Bytes>(1);
    let (took, pulled) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::unfold((pieces, took), |(mut pieces, took)| async move {
        let piece = pieces.recv().await;
        let _ = took.send(());
        piece.map(|piece| (Ok(piece), (pieces, took)))
    })
    .boxed();
    (FedBody { feed, stream }, pulled)
}

async fn wait_for_pulled(pulled: &mut tokio::sync::mpsc::UnboundedReceiver<()>, count: usize) {
    for _ in 0..count {
        tokio::time::timeout(Duration::from_secs(30), pulled.recv())
            .await
            .expect("the client takes the body")
            .expect("the body stream");
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: the server did not get there within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() { files(&path) } else { vec![path] }
        })
        .collect()
}

/// A file of the object store still being written (`<id>.eml#<n>`).
fn is_partial(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name.to_string_lossy().contains('#'))
}

fn is_partial_and_started(path: &Path) -> bool {
    is_partial(path) && std::fs::metadata(path).is_ok_and(|meta| meta.len() > 0)
}

/// The ids of the messages stored with `key`.
fn messages_with_key(database: &Path, key: &str) -> Vec<String> {
    let ids =
        sqlite_query(database, &format!("SELECT id FROM messages WHERE client_key = '{key}'"))
            .expect("query");
    ids.lines().map(str::to_owned).collect()
}

/// Message `id` reads back as `content`, and each recipient's notification
/// was sent exactly once.
async fn assert_complete(server: &RestartableServer, token: &str, id: &str, content: &[u8]) {
    let read = server.api().get(&format!("/api/v1/messages/{id}/content"), Some(token)).await;
    let read = read.expect("read").expect_status(200).expect("the content reads");
    assert!(read.body == content, "{id}: the content differs from what was uploaded");
    let database = server.database();
    let unsent =
        format!("SELECT count(*) FROM outbox WHERE message_id = '{id}' AND state <> 'sent'");
    wait_until(id, || sqlite_query(&database, &unsent).expect("query") == "0").await;
    let rows = format!("SELECT count(*) FROM outbox WHERE message_id = '{id}'");
    assert_eq!(sqlite_query(&database, &rows).expect("query"), RECIPIENTS.len().to_string());
    let mut notified: Vec<String> = server
        .picked_up()
        .iter()
        .filter_map(|raw| sealpost_proto::notification::parse(raw).ok())
        .filter(|n| n.fields.message_id.as_str() == id)
        .map(|n| n.fields.recipient)
        .collect();
    notified.sort();
    assert_eq!(notified, RECIPIENTS, "{id}: one notification per recipient, none twice");
}

/// No content without its message is visible: every object and every row
/// of content in the database whose message was never recorded answers
/// 404. Reports how many such leftovers the kills left.
async fn assert_nothing_half_stored(server: &RestartableServer, token: &str) {
    let database = server.database();
    let recorded = sqlite_query(&database, "SELECT id FROM messages").expect("query");
    let recorded: Vec<&str> = recorded.lines().collect();
    let inline = sqlite_query(&database, "SELECT message_id FROM message_content").expect("query");
    let objects = files(&server.data_dir().join("messages"));
    let partial = objects.iter().filter(|f| is_partial(f)).count();
    let mut orphans: Vec<String> = inline.lines().map(str::to_owned).collect();
    orphans.extend(
        objects
            .iter()
            .filter(|f| !is_partial(f))
            .filter_map(|f| f.file_stem().map(|stem| stem.to_string_lossy().into_owned())),
    );
    orphans.retain(|id| !recorded.contains(&id.as_str()));
    for id in &orphans {
        for path in [format!("/api/v1/messages/{id}"), format!("/api/v1/messages/{id}/content")] {
            let response = server.api().get(&path, Some(token)).await.expect("request");
            assert_eq!(response.status, 404, "{path}: content without its message is visible");
        }
    }
    eprintln!(
        "{} messages recorded; left over by kills, invisible: {} contents without a message, \
         {partial} partial files",
        recorded.len(),
        orphans.len()
    );
}

/// Uploads `content` with client key `key`; the caller sends the notifications.
async fn upload(api: &ApiClient, token: &str, key: &str, content: Vec<u8>) -> ApiResponse {
    api.upload_metadata(token, &metadata(key, false), content).await.expect("upload")
}

/// Runs `sql` on the test server's database, SQLite or PostgreSQL.
async fn query(app: &TestApp, sql: &str) -> String {
    match &app.postgres {
        Some(postgres) => postgres.psql(sql).await,
        None => sqlite_query(&app.data_dir.join("sealpost.db"), sql),
    }
    .expect("query")
}

/// Content rows and object files of messages never recorded.
async fn unrecorded_content(app: &TestApp) -> (String, usize) {
    let rows = query(
        app,
        "SELECT count(*) FROM message_content WHERE message_id NOT IN (SELECT id FROM messages)",
    )
    .await;
    let recorded = query(app, "SELECT id FROM messages").await;
    let objects = files(&app.data_dir.join("messages"))
        .into_iter()
        .filter(|f| {
            let id = f.file_stem().map(|stem| stem.to_string_lossy().into_owned());
            is_partial(f) || !id.is_some_and(|id| recorded.lines().any(|line| line == id))
        })
        .count();
    (rows, objects)
}

fn assert_refused(response: &ApiResponse, status: u16, code: ErrorCode, says: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.error_code(), Some(code), "{}", response.text());
    assert!(response.text().contains(says), "{}", response.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_database_answers_busy_in_bounded_time_and_works_again_once_released() {
    let app = TestApp::spawn().await;
    let sender = app.register_agent(SENDER, "laptop").await;
    let earlier = message(SMALL, "earlier");
    let earlier_id = upload(&app.api, sender.token(), "earlier", earlier.clone())
        .await
        .expect_status(201)
        .expect("stored")
        .json::<StoredMessage>()
        .message_id;
    let (small, large) = (message(SMALL, "busy-small"), message(LARGE / 4, "busy-large"));

    let lock = match &app.postgres {
        Some(postgres) => LockedDatabase::postgres(&postgres.url(), "messages").await,
        None => LockedDatabase::sqlite(&app.data_dir.join("sealpost.db")).await,
    }
    .expect("another process locks the database");
    let started = Instant::now();
    let token = sender.token();
    let (small_answer, large_answer, read) = tokio::join!(
        upload(&app.api, token, "busy-small", small.clone()),
        upload(&app.api, token, "busy-large", large.clone()),
        app.content(Some(token), &earlier_id),
    );
    let waited = started.elapsed();
    eprintln!("the requests waited {waited:?} for the lock; reading got {}", read.status);
    for answer in [&small_answer, &large_answer] {
        assert_refused(answer, 503, ErrorCode::Unavailable, "Try again in 5 seconds");
        assert_eq!(
            answer.headers.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("5"),
            "a client knows when to retry"
        );
    }
    // Reads go on beside a writer's lock where the database allows it.
    match read.status {
        200 => assert!(read.body == earlier, "the earlier message reads as stored"),
        _ => assert_refused(&read, 503, ErrorCode::Unavailable, "Try again"),
    }
    // Each write waits up to 5 s for the lock; a large upload waits twice
    // (recording it, then removing its content again).
    assert!(waited < Duration::from_secs(30), "a request waited {waited:?} on the lock");
    lock.release().await.expect("the lock is released");

    let stored = query(&app, "SELECT count(*) FROM messages WHERE client_key LIKE 'busy-%'").await;
    assert_eq!(stored, "0", "nothing of a refused upload was recorded");
    assert_eq!(unrecorded_content(&app).await, ("0".to_owned(), 0), "no content left behind");

    // Without a restart, the same uploads are stored, once each.
    for (key, content) in [("busy-small", small), ("busy-large", large)] {
        let answer = upload(&app.api, token, key, content.clone()).await;
        let stored: StoredMessage = answer.expect_status(201).expect(key).json();
        let read = app.content(Some(token), &stored.message_id).await;
        assert!(read.status == 200 && read.body == content, "{key} reads back");
    }
    let stored = query(&app, "SELECT count(*) FROM messages WHERE client_key LIKE 'busy-%'").await;
    assert_eq!(stored, "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_uploads_clearly_corrupts_nothing_and_recovers_once_freed() {
    let disk = Tmpfs::mount("16m").expect("a small disk");
    let data_dir = disk.path().join("data");
    let database = data_dir.join("sealpost.db");
    // The database is on the small disk too, whatever database the suite runs on.
    let app = TestApp::spawn_with(|settings| {
        settings.server.data_dir = data_dir.clone();
        settings.database.url = Some(format!("sqlite://{}", database.display()));
    })
    .await;
    let sender = app.register_agent(SENDER, "laptop").await;
    let token = sender.token();
    let mut kept = Vec::new();
    for (key, size) in [("kept-small", SMALL), ("kept-large", LARGE / 4)] {
        let content = message(size, key);
        let answer = upload(&app.api, token, key, content.clone()).await;
        kept.push((answer.expect_status(201).expect(key).json::<StoredMessage>(), content));
    }

    let filled = disk.fill().expect("fill the disk");
    eprintln!("filled the disk with {} KiB", filled / 1024);
    let large = message(LARGE / 4, "full-large");
    let answer = upload(&app.api, token, "full-large", large.clone()).await;
    assert_refused(&answer, 507, ErrorCode::StorageFull, "disk is full");
    // Small content goes to the database, whose log may still have room:
    // stored whole, until it is refused as clearly.
    let mut stored_while_full = Vec::new();
    let mut refused_small = None;
    for attempt in 0..400 {
        let key = format!("full-small-{attempt}");
        let content = message(SMALL, &key);
        let answer = upload(&app.api, token, &key, content.clone()).await;
        if answer.status == 201 {
            stored_while_full.push((answer.json::<StoredMessage>(), content));
            continue;
        }
        assert_refused(&answer, 507, ErrorCode::StorageFull, "disk is full");
        refused_small = Some((key, content));
        break;
    }
    let (refused_key, refused_content) = refused_small.expect("a full disk refuses uploads");
    eprintln!(
        "{} small uploads fit in the database's log after the disk was full",
        stored_while_full.len()
    );
    let integrity = sqlite_query(&database, "PRAGMA integrity_check").expect("integrity check");
    assert_eq!(integrity, "ok", "the database is intact on a full disk");
    for (stored, content) in kept.iter().chain(&stored_while_full) {
        let read = app.content(Some(token), &stored.message_id).await;
        match read.status {
            200 => assert!(read.body == *content, "{} reads as stored", stored.message_id),
            // Each reading is recorded before the content is handed out.
            _ => assert_refused(&read, 507, ErrorCode::StorageFull, "disk is full"),
        }
    }
    let recorded = || {
        sqlite_query(&database, "SELECT count(*) FROM messages WHERE client_key LIKE 'full-%'")
            .expect("query")
    };
    assert_eq!(recorded(), stored_while_full.len().to_string(), "no refused upload recorded");
    assert_eq!(unrecorded_content(&app).await, ("0".to_owned(), 0), "no content left behind");

    disk.free().expect("free the space");
    for (key, content) in [("full-large".to_owned(), large), (refused_key, refused_content)] {
        let answer = upload(&app.api, token, &key, content.clone()).await;
        let stored: StoredMessage = answer.expect_status(201).expect(&key).json();
        let read = app.content(Some(token), &stored.message_id).await;
        assert!(read.status == 200 && read.body == content, "{key} reads back");
    }
    for (stored, content) in kept.iter().chain(&stored_while_full) {
        let read = app.content(Some(token), &stored.message_id).await;
        assert!(read.status == 200 && read.body == *content, "{} reads back", stored.message_id);
    }
    assert_eq!(recorded(), (stored_while_full.len() + 2).to_string());
    let integrity = sqlite_query(&database, "PRAGMA integrity_check").expect("integrity check");
    assert_eq!(integrity, "ok");
    assert_eq!(unrecorded_content(&app).await, ("0".to_owned(), 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_on_a_full_disk_leaves_the_mailbox_right_says_so_and_catches_up_once_freed() {
    const ALICE: &str = "alice@example.test";
    let stack = Arc::new(MailStack::start(&["sender", "alice"]).await.expect("mail stack"));
    let app = TestApp::spawn_on(stack.clone(), |s| s.outbox.worker = false).await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let keyring = KeyringSession::start().await.expect("keyring");
    let agent = AgentCli::new(keyring.env()).expect("agent");
    // Its whole data directory (state, search index, logs) on a small disk.
    let disk = Tmpfs::mount_on(agent.data_dir(), "4m").expect("a small disk");
    let mut trusted = app.cert_pem.clone();
    trusted.extend_from_slice(stack.ca_pem().as_bytes());
    agent
        .register(&stack, ALICE, &app.base_url, &trusted, &[])
        .await
        .expect("run register")
        .expect_success("register");
    let send = |subjects: Vec<String>| {
        let (app, sender) = (&app, &sender);
        async move {
            let mut stored = Vec::new();
            for subject in subjects {
                // Large enough that the index needs room for each.
                let body = format!("{subject} ").repeat(4000);
                let mime = sample_mime(&subject, &body, subject.as_bytes());
                stored.push(app.store_and_notify(sender.token(), &[ALICE], mime).await);
            }
            while app.outbox.step().await.expect("outbox step").sent > 0 {}
            stored
        }
    };
    let before = send(vec!["Before the disk filled".to_owned()]).await;
    stack.wait_for_messages(ALICE, "INBOX", 1, Duration::from_secs(60)).await.expect("arrives");
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("run --once");

    let filled = disk.fill().expect("fill the disk");
    eprintln!("filled the agent's disk with {} KiB", filled / 1024);
    let subjects: Vec<String> = (0..5).map(|n| format!("While full {n}")).collect();
    let during = send(subjects.clone()).await;
    stack.wait_for_messages(ALICE, "INBOX", 6, Duration::from_secs(60)).await.expect("arrive");
    let full = agent.run(&["run", "--once"], None).await.expect("run on a full disk");
    eprintln!("on a full disk: {:?}\n{}\n{}", full.code, full.stdout, full.stderr);
    // The mailbox is the truth: each message a placeholder or one real copy.
    let inbox = stack.messages(ALICE, "INBOX").await.expect("INBOX");
    for stored in before.iter().chain(&during) {
        let copies = swap_state(&inbox, &stored.message_id);
        assert!(copies == (1, 0) || copies == (0, 1), "{}: {copies:?}", stored.message_id);
    }
    let said = format!("{}{}", full.stdout, full.stderr);
    assert!(said.contains("disk") && said.contains("full"), "says the disk is full: {said}");
    let status = agent.run(&["status"], None).await.expect("status on a full disk");
    let said = format!("{}{}", status.stdout, status.stderr);
    assert!(said.contains("disk") && said.contains("full"), "status says so: {said}");

    disk.free().expect("free the space");
    // SQLite needs room to open a database in WAL mode: checked once there is some.
    for file in ["state.db", "index.db"] {
        let integrity = sqlite_query(&agent.data_dir().join(file), "PRAGMA integrity_check");
        assert_eq!(integrity.expect(file), "ok", "{file} is intact after the disk was full");
    }
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("run once freed");
    let inbox = stack.messages(ALICE, "INBOX").await.expect("INBOX");
    for stored in before.iter().chain(&during) {
        assert_eq!(swap_state(&inbox, &stored.message_id), (1, 0), "{}", stored.message_id);
    }
    assert_eq!(inbox.len(), 6, "nothing doubled");
    for subject in subjects.iter().map(String::as_str).chain(["Before the disk filled"]) {
        let hits = agent.run(&["search", subject, "--json"], None).await.expect("search");
        let hits = hits.expect_success("search").stdout;
        assert!(hits.contains(subject), "{subject} is found in the index: {hits}");
    }
    for file in ["state.db", "index.db"] {
        let integrity = sqlite_query(&agent.data_dir().join(file), "PRAGMA integrity_check");
        assert_eq!(integrity.expect(file), "ok", "{file} is intact");
    }
}
