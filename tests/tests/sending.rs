//! Sending secure messages from the desktop on the real stack: the agent
//! uploads to the real server, mails each recipient's notification through
//! the sender's own Postfix (SMTPS with AUTH) and files the real message in
//! Sent; drafts any mail client puts in the Outbox folder go the same way;
//! a crash at any step notifies each recipient exactly once; recalls and
//! expiry reach the recipient's mailbox.

use std::sync::Arc;
use std::time::Duration;

use sealpost_agent::journal::{ExpiryChoice, OutgoingState};
use sealpost_agent::outbox::{OutboxWatcher, RECALLED_HEADER};
use sealpost_agent::send::{
    Draft, DraftAttachment, FAILED_KEYWORD, NOTICE_HEADER, NewDraft, SENT_HEADER, SendError,
    SendStep, Sender,
};
use sealpost_agent::smtp::SmtpSender;
use sealpost_agent::{AgentState, MailboxSession, ServerClient, Swapper};
use sealpost_harness::{MailStack, MailboxMessage, TestApp, TestUser, swap_state};
use sealpost_proto::api::{DeliveryReport, DeliveryState, RecalledCopies, RetrievalChannel};
use sealpost_proto::notification::{TrustedServer, parse};
use sealpost_server::settings::Settings;
use tempfile::TempDir;

const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";
const CAROL: &str = "carol@example.test";
const OUTBOX: &str = "Sealpost Outbox";

struct World {
    stack: Arc<MailStack>,
    app: TestApp,
    alice: TestUser,
    bob: TestUser,
    /// Alice's agent state (the journal), kept across "crashes".
    state_dir: TempDir,
}

async fn world() -> World {
    world_with(|_| {}).await
}

async fn world_with(configure: impl FnOnce(&mut Settings)) -> World {
    let stack = Arc::new(MailStack::start(&["alice", "bob", "carol"]).await.expect("mail stack"));
    let app = TestApp::spawn_on(stack.clone(), |settings| {
        settings.outbox.worker = false;
        configure(settings);
    })
    .await;
    let alice = app.register_agent(ALICE, "alice laptop").await;
    let bob = app.register_agent(BOB, "bob laptop").await;
    World { stack, app, alice, bob, state_dir: tempfile::tempdir().expect("state dir") }
}

impl World {
    fn server(&self, user: &TestUser) -> ServerClient {
        ServerClient::new(&self.app.base_url, Some(&self.app.cert_pem), user.tokens.clone())
            .expect("client")
    }

    /// Alice's sender, on her journal, sending through her own Postfix login.
    async fn sender(&self) -> Sender {
        let state = AgentState::open(&self.state_dir.path().join("state.db")).await.expect("state");
        let smtp = SmtpSender::new(&self.stack.smtp_account("alice")).map_err(|e| e.to_string());
        Sender::new(
            self.server(&self.alice),
            smtp,
            self.stack.agent_account("alice"),
            Arc::new(state),
            ALICE,
        )
    }

    async fn outbox_pass(&self, sender: Sender) -> Result<Vec<OutgoingState>, SendError> {
        let watcher = OutboxWatcher::new(
            self.stack.agent_account("alice"),
            Arc::new(sender),
            self.server(&self.alice),
            OUTBOX,
            &["INBOX".to_owned()],
        );
        let mut session = self.session("alice").await;
        let report = watcher.pass(&mut session).await;
        session.logout().await;
        report.map(|report| report.outgoing.iter().map(|record| record.state).collect())
    }

    async fn session(&self, local: &str) -> MailboxSession {
        MailboxSession::connect(&self.stack.agent_account(local)).await.expect("IMAP login")
    }

    async fn folder(&self, address: &str, folder: &str) -> Vec<MailboxMessage> {
        self.stack.messages(address, folder).await.expect("folder")
    }

    /// The notifications for `subject` in `address`'s INBOX, once `count` have arrived.
    async fn notifications(&self, address: &str, subject: &str, count: usize) -> Vec<Vec<u8>> {
        let wanted = format!("Subject: {subject}\r\n");
        let matches =
            |raw: &[u8]| parse(raw).is_ok() && String::from_utf8_lossy(raw).contains(&wanted);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let found: Vec<Vec<u8>> = self
                .folder(address, "INBOX")
                .await
                .into_iter()
                .map(|message| message.raw)
                .filter(|raw| matches(raw))
                .collect();
            if found.len() >= count || std::time::Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn swap_for_bob(&self) -> sealpost_agent::FolderReport {
        let trusted =
            TrustedServer::from_well_known(&self.app.well_known().await).expect("well-known");
        let swapper = Swapper::new(self.server(&self.bob), trusted, BOB);
        let mut session = self.session("bob").await;
        swapper.process_folder(&mut session, "INBOX").await.expect("swap")
    }

    async fn deliveries(&self, message_id: &str) -> DeliveryReport {
        self.app.deliveries(self.alice.token(), message_id).await
    }
}

fn draft(subject: &str, to: &[&str], bcc: &[&str]) -> Draft {
    NewDraft {
        from: (Some("Alice Example".into()), ALICE.into()),
        to: to.iter().map(|a| (*a).to_owned()).collect(),
        bcc: bcc.iter().map(|a| (*a).to_owned()).collect(),
        subject: subject.into(),
        body: format!("The secure text of {subject}."),
        attachments: vec![DraftAttachment {
            name: "scan.pdf".into(),
            content_type: "application/pdf".into(),
            bytes: b"%PDF-1.4 pretend".to_vec(),
        }],
        in_reply_to: Some("<earlier.1@example.test>".into()),
        references: vec!["<root.1@example.test>".into(), "<earlier.1@example.test>".into()],
        ..NewDraft::default()
    }
    .write()
    .expect("a draft")
}

fn header<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}: ");
    raw.split("\r\n\r\n").next()?.lines().find_map(|line| line.strip_prefix(prefix.as_str()))
}

#[tokio::test]
async fn a_message_sent_from_the_desktop_is_notified_swapped_filed_and_on_the_slip() {
    let world = world().await;
    let sender = world.sender().await;
    let draft = draft("Test results", &[BOB], &[CAROL]);
    let original = String::from_utf8_lossy(&draft.raw).into_owned();
    let started = std::time::Instant::now();
    let id = sender.queue(&draft, None).await.expect("queued");
    let done = sender.send_due().await.expect("sent");
    // Upload, two notifications through Postfix, the slip report and the Sent copy.
    println!("sent to two recipients and filed in {:?}", started.elapsed());
    assert_eq!(done.len(), 1);
    let record = &done[0];
    assert_eq!(record.id, id);
    assert_eq!(record.state, OutgoingState::Sent, "{record:?}");
    assert!(record.recipients.iter().all(|r| r.sent_at.is_some()), "{record:?}");
    let message_id = record.message_id.clone().expect("stored");

    // Each recipient's notification left through Alice's own server with her headers.
    for address in [BOB, CAROL] {
        let found = world.notifications(address, "Test results", 1).await;
        assert_eq!(found.len(), 1, "one notification for {address}");
        let raw = String::from_utf8_lossy(&found[0]).into_owned();
        for name in ["From", "To", "Date", "Message-ID", "In-Reply-To", "References"] {
            assert_eq!(
                header(&raw, name),
                header(&original, name),
                "{name} kept for {address}:\n{raw}"
            );
        }
        assert!(!raw.contains("carol@example.test\r\n") || address == CAROL, "Bcc hidden");
        assert!(header(&raw, "Bcc").is_none(), "no Bcc header:\n{raw}");
        assert!(!raw.contains("The secure text"), "the content never travels by SMTP");
        let notification = parse(&found[0]).expect("a notification");
        assert_eq!(notification.fields.recipient, address);
        assert_eq!(notification.fields.message_id.as_str(), message_id);
    }
    let log = world.stack.postfix_log();
    assert!(log.contains("sasl_username=alice@example.test"), "sent as Alice:\n{log}");

    // The Sent folder holds the real message, read, Bcc kept for Alice.
    let sent = world.folder(ALICE, "Sent").await;
    assert_eq!(sent.len(), 1);
    let filed = String::from_utf8_lossy(&sent[0].raw).into_owned();
    assert_eq!(header(&filed, SENT_HEADER), Some(message_id.as_str()));
    assert!(filed.contains("The secure text of Test results"), "{filed}");
    assert!(header(&filed, "Bcc").is_some_and(|bcc| bcc.contains(CAROL)), "{filed}");
    assert!(sent[0].flags.iter().any(|f| f == "\\Seen"), "{:?}", sent[0].flags);

    // Bob's agent swaps it: the real message, with nothing of the Bcc.
    let report = world.swap_for_bob().await;
    assert_eq!(report.swapped.len(), 1, "{report:?}");
    let inbox = world.folder(BOB, "INBOX").await;
    assert_eq!(swap_state(&inbox, &message_id), (1, 0));
    let real = inbox
        .iter()
        .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
        .find(|raw| raw.contains("The secure text of Test results"));
    let real = real.expect("the real message in Bob's INBOX");
    assert!(!real.contains(CAROL), "the Bcc recipient is hidden from Bob:\n{real}");

    // The delivery slip: Bob retrieved it with the agent, Carol was notified.
    let slip = world.deliveries(&message_id).await;
    let line = |who: &str| slip.recipients.iter().find(|r| r.recipient == who).cloned();
    let bob_line = line(BOB).expect("bob");
    assert_eq!(bob_line.state, DeliveryState::Retrieved);
    assert_eq!(bob_line.retrieved_with, Some(RetrievalChannel::Agent));
    let carol_line = line(CAROL).expect("carol");
    assert_eq!(carol_line.state, DeliveryState::Sent, "{carol_line:?}");
    assert!(
        carol_line.relay_answer.as_deref().is_some_and(|a| a.starts_with("250")),
        "{carol_line:?}"
    );

    // Nothing is due any more.
    assert!(sender.send_due().await.expect("nothing due").is_empty());
}

#[tokio::test]
async fn a_draft_put_in_the_outbox_by_any_mail_client_is_sent_and_a_bad_one_is_flagged() {
    let world = world().await;
    // The first pass creates the folder, as the running agent does.
    assert!(world.outbox_pass(world.sender().await).await.expect("pass").is_empty());

    let good = draft("From the Outbox", &[BOB], &[]);
    let bad = b"From: alice@example.test\r\nSubject: Nobody\r\n\r\nNo recipient.\r\n";
    world.stack.append(ALICE, OUTBOX, &good.raw, &["\\Seen"]).await.expect("APPEND");
    world.stack.append(ALICE, OUTBOX, bad, &[]).await.expect("APPEND");
    let states = world.outbox_pass(world.sender().await).await.expect("pass");
    assert_eq!(states, [OutgoingState::Sent]);

    assert_eq!(world.notifications(BOB, "From the Outbox", 1).await.len(), 1);
    let sent = world.folder(ALICE, "Sent").await;
    assert_eq!(sent.len(), 1);
    assert!(String::from_utf8_lossy(&sent[0].raw).contains("The secure text of From the Outbox"));
    // The bad draft stays, flagged; the user is told why in the INBOX.
    let outbox = world.folder(ALICE, OUTBOX).await;
    assert_eq!(outbox.len(), 1, "only the bad draft is left");
    assert!(outbox[0].flags.iter().any(|f| f == FAILED_KEYWORD), "{:?}", outbox[0].flags);
    assert!(outbox[0].flags.iter().any(|f| f == "\\Flagged"), "{:?}", outbox[0].flags);
    let notices = |inbox: &[MailboxMessage]| {
        inbox.iter().filter(|m| String::from_utf8_lossy(&m.raw).contains(NOTICE_HEADER)).count()
    };
    let inbox = world.folder(ALICE, "INBOX").await;
    assert_eq!(notices(&inbox), 1);
    let notice = inbox
        .iter()
        .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
        .find(|raw| raw.contains(NOTICE_HEADER))
        .expect("notice");
    assert!(notice.contains("Subject: Not sent: Nobody"), "{notice}");
    assert!(notice.contains("no recipient"), "{notice}");

    // Later passes leave the marked draft alone and say nothing twice.
    world.outbox_pass(world.sender().await).await.expect("pass");
    assert_eq!(world.folder(ALICE, OUTBOX).await.len(), 1);
    assert_eq!(notices(&world.folder(ALICE, "INBOX").await), 1);
    assert_eq!(world.folder(ALICE, "Sent").await.len(), 1);
}

#[tokio::test]
async fn a_crash_at_any_step_notifies_each_recipient_exactly_once() {
    let world = world().await;
    assert!(world.outbox_pass(world.sender().await).await.expect("pass").is_empty());
    for step in [
        SendStep::Queued,
        SendStep::Uploaded,
        SendStep::Notified,
        SendStep::Filed,
        SendStep::SourceRemoved,
    ] {
        let subject = format!("Crash after {step:?}");
        let draft = draft(&subject, &[BOB, CAROL], &[]);
        world.stack.append(ALICE, OUTBOX, &draft.raw, &[]).await.expect("APPEND");
        let crashing = world.sender().await.with_hook(move |at| at != step);
        match world.outbox_pass(crashing).await {
            Err(SendError::Interrupted(at)) => assert_eq!(at, step),
            other => panic!("expected an interruption after {step:?}, got {other:?}"),
        }
        // The agent starts again on the same journal and finishes the job.
        let states = world.outbox_pass(world.sender().await).await.expect("resumed");
        assert_eq!(states, [OutgoingState::Sent], "after a crash at {step:?}");

        world.stack.wait_until_delivered(Duration::from_secs(15)).await.expect("delivered");
        for address in [BOB, CAROL] {
            let found = world.notifications(address, &subject, 1).await;
            assert_eq!(found.len(), 1, "{address} notified once after a crash at {step:?}");
        }
        let filed = world
            .folder(ALICE, "Sent")
            .await
            .iter()
            .filter(|m| String::from_utf8_lossy(&m.raw).contains(&format!("Subject: {subject}")))
            .count();
        assert_eq!(filed, 1, "filed once after a crash at {step:?}");
        assert!(world.folder(ALICE, OUTBOX).await.is_empty(), "the draft left the Outbox");
    }
}

#[tokio::test]
async fn recalled_copies_are_kept_by_default() {
    let world = world().await;
    let message_id = send_and_swap(&world, "Kept after recall").await;
    world.server(&world.alice).recall(&message_id).await.expect("recall");
    let report = outbox_pass_for_bob(&world).await;
    assert_eq!(report, 0, "the organization keeps delivered copies");
    assert_eq!(swap_state(&world.folder(BOB, "INBOX").await, &message_id), (1, 0));
    let refused = world.server(&world.bob).content(&message_id).await.expect_err("refused");
    assert!(refused.to_string().contains("recalled"), "{refused}");
}

#[tokio::test]
async fn recalled_copies_are_replaced_when_the_organization_says_so() {
    let world = world_with(|s| s.messages.recalled_copies = RecalledCopies::Replace).await;
    let message_id = send_and_swap(&world, "Replaced after recall").await;
    // A second message, recalled before Bob's agent saw it: its placeholder is kept, explained.
    let early = draft("Recalled early", &[BOB], &[]);
    let sender = world.sender().await;
    sender.queue(&early, None).await.expect("queued");
    let early_id = sender.send_due().await.expect("sent")[0].message_id.clone().expect("id");
    world.notifications(BOB, "Recalled early", 1).await;

    let alice_server = world.server(&world.alice);
    alice_server.recall(&message_id).await.expect("recall");
    alice_server.recall(&early_id).await.expect("recall");
    assert_eq!(outbox_pass_for_bob(&world).await, 1);
    assert_eq!(outbox_pass_for_bob(&world).await, 0, "replaced once");

    let inbox = world.folder(BOB, "INBOX").await;
    assert_eq!(swap_state(&inbox, &message_id).0, 0, "the real copy is gone");
    let notice = inbox
        .iter()
        .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
        .find(|raw| raw.contains(RECALLED_HEADER))
        .expect("a notice in its place");
    assert!(notice.contains("Subject: Replaced after recall"), "the subject stays:\n{notice}");
    assert!(notice.contains("recalled"), "{notice}");
    assert!(!notice.contains("The secure text"), "{notice}");

    let report = world.swap_for_bob().await;
    assert!(report.swapped.is_empty());
    let kept = report.kept.iter().find(|k| k.message_id == early_id).expect("kept");
    assert!(!kept.temporary && kept.reason.contains("recalled"), "{kept:?}");
}

#[tokio::test]
async fn an_expired_message_is_not_swapped_and_says_so() {
    let world = world_with(|s| s.accounts.access_token_ttl_seconds = 30 * 24 * 3600).await;
    let mut new = NewDraft {
        from: (None, ALICE.into()),
        to: vec![BOB.into()],
        subject: "Short-lived".into(),
        body: "Gone tomorrow.".into(),
        ..NewDraft::default()
    };
    new.expiry = ExpiryChoice::At(world.app.clock.now().unix_timestamp() + 3600);
    let sender = world.sender().await;
    sender.queue(&new.write().expect("draft"), None).await.expect("queued");
    let record = sender.send_due().await.expect("sent").remove(0);
    let message_id = record.message_id.expect("stored");
    world.notifications(BOB, "Short-lived", 1).await;
    let slip = world.deliveries(&message_id).await;
    assert!(slip.lifecycle.expires_at.is_some(), "the sender's choice reached the server");

    world.app.clock.advance(Duration::from_secs(2 * 3600));
    let report = world.swap_for_bob().await;
    let kept = report.kept.iter().find(|k| k.message_id == message_id).expect("kept");
    assert!(!kept.temporary && kept.reason.contains("expired"), "{kept:?}");
    assert_eq!(swap_state(&world.folder(BOB, "INBOX").await, &message_id), (0, 1));
}

/// Alice sends `subject` to Bob, whose agent swaps it; returns the message id.
async fn send_and_swap(world: &World, subject: &str) -> String {
    let sender = world.sender().await;
    sender.queue(&draft(subject, &[BOB], &[]), None).await.expect("queued");
    let message_id = sender.send_due().await.expect("sent")[0].message_id.clone().expect("id");
    world.notifications(BOB, subject, 1).await;
    assert_eq!(world.swap_for_bob().await.swapped.len(), 1);
    message_id
}

/// Bob's agent's Outbox pass, which also applies recalls; returns how many it replaced.
async fn outbox_pass_for_bob(world: &World) -> usize {
    let state_dir = tempfile::tempdir().expect("dir");
    let state =
        Arc::new(AgentState::open(&state_dir.path().join("state.db")).await.expect("state"));
    let sender = Sender::new(
        world.server(&world.bob),
        Err("not sending".into()),
        world.stack.agent_account("bob"),
        state.clone(),
        BOB,
    );
    let watcher = OutboxWatcher::new(
        world.stack.agent_account("bob"),
        Arc::new(sender),
        world.server(&world.bob),
        OUTBOX,
        &["INBOX".to_owned()],
    );
    let mut session = world.session("bob").await;
    let report = watcher.pass(&mut session).await.expect("pass");
    report.recalled
}
