//! The agent's swap on the real stack and the real server: genuine
//! notifications are replaced by the real message exactly once, forged ones
//! are never fetched, and interrupted or racing swaps converge.

use std::sync::Arc;
use std::time::Duration;

use sealpost_agent::{
    MailboxSession, SearchIndex, ServerClient, SwapError, SwapStep, Swapper, Watcher,
};
use sealpost_harness::{
    CAPABILITIES_WITHOUT_UIDPLUS, MailStack, MailboxMessage, StackOptions, TestApp, TestUser,
    sample_mime, swap_state,
};
use sealpost_proto::api::{RetrievalLog, StoredMessage};
use sealpost_proto::notification::{EmailEnvelope, TrustedServer, compose_email, parse};
use tokio_util::sync::CancellationToken;

struct World {
    stack: Arc<MailStack>,
    app: TestApp,
    sender: TestUser,
    alice: TestUser,
}

async fn world() -> World {
    world_with(&StackOptions::default()).await
}

async fn world_with(options: &StackOptions) -> World {
    let stack = Arc::new(
        MailStack::start_with(&["sender", "alice", "bob"], options).await.expect("mail stack"),
    );
    let app = TestApp::spawn_on(stack.clone(), |s| s.outbox.worker = false).await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let alice = app.register_agent("alice@example.test", "alice laptop").await;
    World { stack, app, sender, alice }
}

impl World {
    /// The sender stores a message for alice and the server mails the notification.
    async fn send_to_alice(&self, subject: &str) -> StoredMessage {
        let mime = sample_mime(subject, &format!("Body of {subject}"), b"attachment bytes");
        let stored =
            self.app.store_and_notify(self.sender.token(), &["alice@example.test"], mime).await;
        assert_eq!(self.app.outbox.step().await.expect("step").sent, 1);
        stored
    }

    /// As [`Self::send_to_alice`], waiting until the notification is in her INBOX.
    async fn notify_alice(&self, subject: &str) -> StoredMessage {
        let stored = self.send_to_alice(subject).await;
        let is_this = |raw: &[u8]| {
            parse(raw).is_ok_and(|n| n.fields.message_id.as_str() == stored.message_id)
        };
        self.stack
            .wait_for_email("alice@example.test", "INBOX", is_this, Duration::from_secs(15))
            .await
            .expect("the notification arrives");
        stored
    }

    async fn swapper(&self, user: &TestUser) -> Swapper {
        let server =
            ServerClient::new(&self.app.base_url, Some(&self.app.cert_pem), user.tokens.clone())
                .expect("client");
        let trusted =
            TrustedServer::from_well_known(&self.app.well_known().await).expect("well-known");
        Swapper::new(server, trusted, &user.email)
    }

    async fn session(&self, local: &str) -> MailboxSession {
        MailboxSession::connect(&self.stack.agent_account(local)).await.expect("IMAP login")
    }

    async fn inbox(&self) -> Vec<MailboxMessage> {
        self.stack.messages("alice@example.test", "INBOX").await.expect("INBOX")
    }
}

/// Real copies of `stored` and placeholders for it in `messages`.
fn count(messages: &[MailboxMessage], stored: &StoredMessage) -> (usize, usize) {
    swap_state(messages, &stored.message_id)
}

#[tokio::test]
async fn a_delivered_notification_is_swapped_for_the_real_message() {
    let world = world().await;
    let stored = world.notify_alice("Your lab results").await;
    // The user already read and flagged the placeholder: the real message keeps that.
    let placeholder =
        world.inbox().await.into_iter().find(|m| parse(&m.raw).is_ok()).expect("placeholder");
    world
        .stack
        .add_flags(
            "alice@example.test",
            "INBOX",
            placeholder.uid,
            &["\\Seen", "\\Flagged", "$Important"],
        )
        .await
        .expect("flags");
    let swapper = world.swapper(&world.alice).await;
    let mut session = world.session("alice").await;
    let report = swapper.process_folder(&mut session, "INBOX").await.expect("swap");
    assert_eq!((report.swapped.len(), report.rejected.len(), report.kept.len()), (1, 0, 0));

    let inbox = world.inbox().await;
    assert_eq!(count(&inbox, &stored), (1, 0), "one real message, no placeholder");
    let real = String::from_utf8_lossy(
        &inbox.iter().find(|m| count(std::slice::from_ref(m), &stored).0 == 1).expect("real").raw,
    )
    .into_owned();
    assert!(real.contains("Subject: Your lab results"), "{real}");
    assert!(real.contains("From: Sender <sender@example.test>"), "{real}");
    assert!(real.contains("Body of Your lab results"), "the secure content is in the mailbox now");

    // A second pass has nothing left to do.
    let again = swapper.process_folder(&mut session, "INBOX").await.expect("second pass");
    assert!(again.swapped.is_empty());
    assert_eq!(count(&world.inbox().await, &stored), (1, 0));
}

#[tokio::test]
async fn forged_notifications_are_never_fetched_or_touched() {
    let world = world().await;
    // A genuine notification for bob, put into alice's mailbox: wrong recipient.
    let for_bob = world
        .app
        .store_message(&world.sender, &["bob@example.test"], sample_mime("For bob", "x", b""))
        .await;
    let envelope = EmailEnvelope {
        from: (None, "sender@example.test".into()),
        to: vec![(None, "alice@example.test".into())],
        cc: vec![],
        subject: "For bob".into(),
        date: 1_795_000_000,
        message_id: "<forged.1@example.test>".into(),
        in_reply_to: None,
        references: vec![],
    };
    let forwarded = compose_email(&envelope, &for_bob.notifications[0]);
    world.stack.append("alice@example.test", "INBOX", &forwarded, &[]).await.expect("append");
    // A tampered one: the digest changed after signing.
    let genuine = world
        .app
        .store_message(&world.sender, &["alice@example.test"], sample_mime("Tampered", "x", b""))
        .await;
    let mut issued = genuine.notifications[0].clone();
    for header in &mut issued.headers {
        if header.name == "X-Sealpost-Content-SHA256" {
            header.value = "0".repeat(64);
        }
    }
    world
        .stack
        .append("alice@example.test", "INBOX", &compose_email(&envelope, &issued), &[])
        .await
        .expect("append");

    // Flags aside (\Recent is reported to the first reader only), nothing may change.
    let contents = |messages: Vec<MailboxMessage>| {
        messages.into_iter().map(|m| (m.uid, m.raw)).collect::<Vec<_>>()
    };
    let before = contents(world.inbox().await);
    let swapper = world.swapper(&world.alice).await;
    let mut session = world.session("alice").await;
    let report = swapper.process_folder(&mut session, "INBOX").await.expect("pass");
    assert_eq!((report.swapped.len(), report.rejected.len()), (0, 2));
    assert!(before == contents(world.inbox().await), "nothing in the mailbox changed");
    for stored in [&for_bob, &genuine] {
        let log: RetrievalLog = world
            .app
            .api
            .get(
                &format!("/api/v1/messages/{}/retrievals", stored.message_id),
                Some(world.sender.token()),
            )
            .await
            .expect("request")
            .json();
        assert!(log.retrievals.is_empty(), "a forged notification must not be fetched");
    }
}

#[tokio::test]
async fn an_interrupted_swap_is_finished_by_the_next_run_with_one_copy() {
    let world = world().await;
    for step in [
        SwapStep::Fetched,
        SwapStep::Appended,
        SwapStep::DuplicatesRemoved,
        SwapStep::PlaceholderRemoved,
    ] {
        let stored = world.notify_alice(&format!("Interrupted at {step:?}")).await;
        let crashing = world.swapper(&world.alice).await.with_hook(move |at| at != step);
        let mut session = world.session("alice").await;
        match crashing.process_folder(&mut session, "INBOX").await {
            Err(SwapError::Interrupted(at)) => assert_eq!(at, step),
            other => panic!("expected an interruption at {step:?}, got {other:?}"),
        }
        drop(session);
        let (real, placeholders) = count(&world.inbox().await, &stored);
        assert!(
            real + placeholders >= 1,
            "after a crash at {step:?} something is left: never neither"
        );

        let mut session = world.session("alice").await;
        world
            .swapper(&world.alice)
            .await
            .process_folder(&mut session, "INBOX")
            .await
            .expect("rerun");
        assert_eq!(
            count(&world.inbox().await, &stored),
            (1, 0),
            "after a crash at {step:?} and a rerun"
        );
    }
}

#[tokio::test]
async fn two_agents_on_one_mailbox_end_with_one_real_copy() {
    let world = world().await;
    let stored = world.notify_alice("Raced").await;
    let (first, second) = (world.swapper(&world.alice).await, world.swapper(&world.alice).await);
    let (mut one, mut two) = (world.session("alice").await, world.session("alice").await);
    let (a, b) = tokio::join!(
        first.process_folder(&mut one, "INBOX"),
        second.process_folder(&mut two, "INBOX")
    );
    a.expect("first agent");
    b.expect("second agent");
    assert_eq!(count(&world.inbox().await, &stored), (1, 0));

    // Both appended before either removed duplicates: the next run keeps one.
    let stored = world.notify_alice("Appended twice").await;
    let crashing = world.swapper(&world.alice).await.with_hook(|at| at != SwapStep::Appended);
    let mut session = world.session("alice").await;
    assert!(crashing.process_folder(&mut session, "INBOX").await.is_err());
    // The racing agent's copy, appended before it saw this one.
    let inbox = world.inbox().await;
    let copy = inbox
        .iter()
        .find(|m| count(std::slice::from_ref(m), &stored).0 == 1)
        .expect("one copy")
        .raw
        .clone();
    world.stack.append("alice@example.test", "INBOX", &copy, &[]).await.expect("second copy");
    assert_eq!(count(&world.inbox().await, &stored), (2, 1));
    let mut session = world.session("alice").await;
    world.swapper(&world.alice).await.process_folder(&mut session, "INBOX").await.expect("rerun");
    assert_eq!(count(&world.inbox().await, &stored), (1, 0));
}

#[tokio::test]
async fn a_backlog_of_200_notifications_is_swapped_in_one_pass_each_exactly_once() {
    let world = world().await;
    let mut stored = Vec::new();
    for index in 0..200 {
        let mime = sample_mime(&format!("Backlog {index}"), &format!("Body {index}"), b"");
        stored.push(
            world.app.store_and_notify(world.sender.token(), &["alice@example.test"], mime).await,
        );
    }
    assert_eq!(world.app.outbox.step().await.expect("step").sent, 200);
    let arrived = world
        .stack
        .wait_for_messages("alice@example.test", "INBOX", 201, Duration::from_secs(60))
        .await
        .expect("all notifications arrive (after alice's verification email)");
    assert_eq!(arrived.iter().filter(|m| parse(&m.raw).is_ok()).count(), 200);

    let swapper = world.swapper(&world.alice).await;
    let mut session = world.session("alice").await;
    let started = std::time::Instant::now();
    let report = swapper.process_folder(&mut session, "INBOX").await.expect("pass");
    println!("200 notifications swapped in {:?}", started.elapsed());
    assert_eq!((report.swapped.len(), report.rejected.len(), report.kept.len()), (200, 0, 0));

    let inbox = world.inbox().await;
    for message in &stored {
        assert_eq!(count(&inbox, message), (1, 0), "message {}", message.message_id);
    }
    assert_eq!(inbox.len(), 201, "the verification email and 200 real messages, nothing else");
}

#[tokio::test]
async fn swapped_messages_are_found_by_local_search() {
    let world = world().await;
    let stored = world.notify_alice("Zygomorphic petal measurements").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let index = Arc::new(SearchIndex::open(&dir.path().join("index.db")).await.expect("index"));
    let swapper = world.swapper(&world.alice).await.with_index(index.clone());
    let mut session = world.session("alice").await;
    assert_eq!(swapper.process_folder(&mut session, "INBOX").await.expect("swap").swapped.len(), 1);

    let hits = index.search("zygomor", 10).await.expect("search");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].message_id, stored.message_id);
    assert_eq!(hits[0].subject, "Zygomorphic petal measurements");
    let real = world
        .inbox()
        .await
        .into_iter()
        .find(|m| count(std::slice::from_ref(m), &stored).0 == 1)
        .expect("real");
    assert_eq!(
        (hits[0].folder.as_str(), hits[0].uid),
        ("INBOX", real.uid),
        "the hit opens the real message"
    );
    assert!(hits[0].snippet_marked("[", "]").contains("[Zygomorphic]"), "{}", hits[0].snippet);
}

/// Waits until `stored` has exactly one real copy and no placeholder.
async fn wait_until_swapped(world: &World, stored: &StoredMessage) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if count(&world.inbox().await, stored) == (1, 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} was not swapped within 20 s",
            stored.message_id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_watcher_swaps_on_arrival_and_survives_a_mail_server_restart() {
    let world = world().await;
    let account = world.stack.agent_account("alice");
    let watcher = Watcher::new(account, Arc::new(world.swapper(&world.alice).await), "INBOX");
    let shutdown = CancellationToken::new();
    let running = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { watcher.run(shutdown).await })
    };

    let first = world.send_to_alice("Arrives while watching").await;
    wait_until_swapped(&world, &first).await;

    world.stack.restart_imap().await.expect("Dovecot restarts");
    let second = world.send_to_alice("Arrives after the restart").await;
    wait_until_swapped(&world, &second).await;
    assert_eq!(count(&world.inbox().await, &first), (1, 0), "the first one was not swapped twice");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops on shutdown")
        .expect("join");
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_silently_and_the_new_pair_handed_over() {
    let world = world().await;
    let stored = world.notify_alice("After a long weekend").await;
    // Two hours later the access token has expired; the refresh token has not.
    world.app.clock.advance(Duration::from_secs(2 * 3600));
    let rotated = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = ServerClient::new(
        &world.app.base_url,
        Some(&world.app.cert_pem),
        world.alice.tokens.clone(),
    )
    .expect("client")
    .on_tokens_rotated({
        let rotated = rotated.clone();
        move |tokens| rotated.lock().expect("lock").push(tokens.refresh_token.clone())
    });
    let trusted =
        TrustedServer::from_well_known(&world.app.well_known().await).expect("well-known");
    let swapper = Swapper::new(server, trusted, "alice@example.test");
    let mut session = world.session("alice").await;
    assert_eq!(swapper.process_folder(&mut session, "INBOX").await.expect("swap").swapped.len(), 1);
    assert_eq!(count(&world.inbox().await, &stored), (1, 0));
    let rotated = rotated.lock().expect("lock").clone();
    assert_eq!(rotated.len(), 1, "one refresh, its new refresh token handed over for storage");
    assert_ne!(rotated[0], world.alice.tokens.refresh_token);
}

#[tokio::test]
async fn processes_sharing_a_device_take_each_others_refreshed_tokens() {
    let world = world().await;
    let stored = world.send_to_alice("Shared device").await;
    world.app.clock.advance(Duration::from_secs(2 * 3600));
    // The keyring both processes (the app and a command, say) read and write.
    let keyring = Arc::new(std::sync::Mutex::new(world.alice.tokens.clone()));
    let client = || {
        let (rotated, read) = (keyring.clone(), keyring.clone());
        ServerClient::new(
            &world.app.base_url,
            Some(&world.app.cert_pem),
            world.alice.tokens.clone(),
        )
        .expect("client")
        .on_tokens_rotated(move |tokens| *rotated.lock().expect("lock") = tokens.clone())
        .with_stored_tokens(move || Some(read.lock().expect("lock").clone()))
    };
    let (first, second) = (client(), client());
    first.content(&stored.message_id).await.expect("the first refreshes");
    let after_first = keyring.lock().expect("lock").clone();
    assert_ne!(after_first.refresh_token, world.alice.tokens.refresh_token);
    // The second's pair is stale: it takes the stored one instead of
    // refreshing with a refresh token that no longer works.
    second.content(&stored.message_id).await.expect("the second adopts the stored pair");
    assert_eq!(*keyring.lock().expect("lock"), after_first, "no second refresh");

    // Without the stored pair the stale refresh is refused, as it must be.
    let lone = ServerClient::new(
        &world.app.base_url,
        Some(&world.app.cert_pem),
        world.alice.tokens.clone(),
    )
    .expect("client");
    assert!(lone.content(&stored.message_id).await.is_err());
}

#[tokio::test]
async fn a_signed_out_device_keeps_the_placeholder_and_says_why() {
    let world = world().await;
    let stored = world.notify_alice("While signed out").await;
    let laptop = world.app.register_agent("alice@example.test", "second laptop").await;
    world
        .app
        .api
        .delete(&format!("/api/v1/devices/{}", laptop.tokens.device_id), Some(world.alice.token()))
        .await
        .expect("request")
        .expect_status(204)
        .expect("revoked");

    let swapper = world.swapper(&laptop).await;
    let mut session = world.session("alice").await;
    let report = swapper.process_folder(&mut session, "INBOX").await.expect("pass");
    assert_eq!((report.swapped.len(), report.kept.len()), (0, 1));
    let kept = &report.kept[0];
    assert_eq!(kept.message_id, stored.message_id);
    assert!(!kept.temporary);
    assert!(kept.reason.contains("signed out"), "{}", kept.reason);
    assert_eq!(count(&world.inbox().await, &stored), (0, 1), "the placeholder stays");
    assert!(report.next_uid > kept.uid, "an answer that will not change is not asked again");
}

#[tokio::test]
async fn without_uidplus_the_placeholder_moves_to_trash() {
    let options = StackOptions {
        imap_capability: Some(CAPABILITIES_WITHOUT_UIDPLUS.to_owned()),
        ..StackOptions::default()
    };
    let world = world_with(&options).await;
    // Something the user marked deleted stays exactly as it is.
    world
        .stack
        .append("alice@example.test", "INBOX", &sample_mime("Keep me", "x", b""), &["\\Deleted"])
        .await
        .expect("append");
    let stored = world.notify_alice("No UIDPLUS here").await;
    let swapper = world.swapper(&world.alice).await;
    let mut session = world.session("alice").await;
    let report = swapper.process_folder(&mut session, "INBOX").await.expect("swap");
    assert_eq!(report.swapped.len(), 1);

    let inbox = world.inbox().await;
    assert_eq!(count(&inbox, &stored), (1, 0));
    assert!(
        inbox.iter().any(|m| String::from_utf8_lossy(&m.raw).contains("Subject: Keep me")),
        "the user's deleted message was not expunged"
    );
    let trash = world.stack.messages("alice@example.test", "Trash").await.expect("Trash");
    assert_eq!(count(&trash, &stored), (0, 1), "the placeholder went to Trash");
}

#[tokio::test]
async fn without_uidplus_or_move_the_placeholder_is_copied_to_trash_and_marked_deleted() {
    let without_move = CAPABILITIES_WITHOUT_UIDPLUS.replace(" MOVE", "");
    let world = world_with(&StackOptions {
        imap_capability: Some(without_move),
        ..StackOptions::default()
    })
    .await;
    let stored = world.notify_alice("Neither extension").await;
    let swapper = world.swapper(&world.alice).await;
    for pass in 0..2 {
        let mut session = world.session("alice").await;
        swapper.process_folder(&mut session, "INBOX").await.expect("swap");
        let inbox = world.inbox().await;
        let placeholder = inbox
            .iter()
            .find(|m| parse(&m.raw).is_ok())
            .expect("the placeholder waits for the user's client to expunge it");
        assert!(placeholder.flags.iter().any(|f| f == "\\Deleted"), "pass {pass}");
        assert_eq!(count(&inbox, &stored).0, 1, "pass {pass}: one real copy");
        let trash = world.stack.messages("alice@example.test", "Trash").await.expect("Trash");
        assert_eq!(count(&trash, &stored), (0, 1), "pass {pass}: copied to Trash once");
    }
}
