//! The `sealpost-agent` binary end to end on the real mail stack, the real
//! server and a real OS keyring: registration with the code read from the
//! inbox, `run --once` over a backlog, the persisted cursor, search, status,
//! the index rebuilt from the mailbox, and the watcher across restarts.

use std::sync::Arc;
use std::time::Duration;

use sealpost_harness::{
    AgentCli, KeyringSession, MailStack, TestApp, TestUser, sample_message_id, sample_mime,
    stop_gracefully, swap_state,
};
use sealpost_proto::api::StoredMessage;
use sealpost_proto::notification::{EmailEnvelope, compose_email};
use sealpost_proto::verification::find_code;

const ALICE: &str = "alice@example.test";
/// How long a running agent may take to swap a notification that arrived.
const SWAP_TIMEOUT: Duration = Duration::from_secs(60);

struct World {
    stack: Arc<MailStack>,
    app: TestApp,
    sender: TestUser,
    keyring: KeyringSession,
}

async fn world() -> World {
    let stack = Arc::new(MailStack::start(&["sender", "alice"]).await.expect("mail stack"));
    let app = TestApp::spawn_on(stack.clone(), |s| s.outbox.worker = false).await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let keyring = KeyringSession::start().await.expect("keyring");
    World { stack, app, sender, keyring }
}

impl World {
    fn trusted_pem(&self) -> Vec<u8> {
        let mut pem = self.app.cert_pem.clone();
        pem.extend_from_slice(self.stack.ca_pem().as_bytes());
        pem
    }

    async fn registered_agent(&self) -> AgentCli {
        self.registered_agent_with(&[]).await
    }

    /// Registered with `extra` arguments for `register`.
    async fn registered_agent_with(&self, extra: &[&str]) -> AgentCli {
        let agent = AgentCli::new(self.keyring.env()).expect("agent");
        agent
            .register(&self.stack, ALICE, &self.app.base_url, &self.trusted_pem(), extra)
            .await
            .expect("run register")
            .expect_success("register");
        agent
    }

    /// Stores `count` messages for alice; the server mails the notifications.
    async fn send(&self, subjects: &[String]) -> Vec<StoredMessage> {
        let mut stored = Vec::new();
        for subject in subjects {
            let mime = sample_mime(subject, &format!("Body of {subject}"), b"attachment");
            stored.push(self.app.store_and_notify(self.sender.token(), &[ALICE], mime).await);
        }
        while self.app.outbox.step().await.expect("outbox step").sent > 0 {}
        stored
    }

    /// Waits until INBOX holds `count` notifications or real copies in all.
    async fn wait_for_inbox(&self, count: usize) {
        self.stack
            .wait_for_messages(ALICE, "INBOX", count, Duration::from_secs(60))
            .await
            .expect("the notifications arrive");
    }

    /// (real copies, placeholders) of `stored` in INBOX.
    async fn copies(&self, stored: &StoredMessage) -> (usize, usize) {
        let inbox = self.stack.messages(ALICE, "INBOX").await.expect("INBOX");
        swap_state(&inbox, &stored.message_id)
    }
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
}

#[tokio::test]
async fn register_reads_the_code_itself_and_keeps_secrets_in_the_keyring() {
    let world = world().await;
    let agent = AgentCli::new(world.keyring.env()).expect("agent");
    let output = agent
        .register(&world.stack, ALICE, &world.app.base_url, &world.trusted_pem(), &[])
        .await
        .expect("run register")
        .expect_success("register");
    println!("registration took {:?} (target: under 3 s)\n{}", output.elapsed, output.stdout);
    assert!(output.stdout.contains("reading the verification email"), "{}", output.stdout);
    assert!(output.stdout.contains("registered alice@example.test"), "{}", output.stdout);

    // The code email was read and deleted: nothing in INBOX carries a code.
    let inbox = world.stack.messages(ALICE, "INBOX").await.expect("INBOX");
    assert!(
        inbox.iter().all(|m| find_code(&m.raw, &world.app.origin).is_none()),
        "the verification email is gone"
    );

    // The secrets are nowhere on disk in clear.
    let password = &world.stack.user(ALICE).password;
    for entry in walk(agent.data_dir()) {
        let bytes = std::fs::read(&entry).expect("read");
        assert!(
            !String::from_utf8_lossy(&bytes).contains(password.as_str()),
            "{} holds the mailbox password",
            entry.display()
        );
    }
    let config = std::fs::read_to_string(agent.data_dir().join("agent.toml")).expect("config");
    assert!(config.contains("signing_keys") && config.contains("public_key"), "{config}");
    assert!(!config.contains("refresh_token") && !config.contains("access_token"), "{config}");

    // Status reads the registration without the keyring.
    let status =
        agent.run(&["status", "--json"], None).await.expect("status").expect_success("status");
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("JSON");
    assert_eq!(status["email"], ALICE);
    assert_eq!(status["running"], false);
    assert_eq!(status["folders"], serde_json::json!(["INBOX"]));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn run_once_swaps_a_backlog_once_and_resumes_from_its_cursor() {
    let world = world().await;
    let agent = world.registered_agent().await;
    let subjects: Vec<String> = (0..200).map(|n| format!("Backlog {n:03}")).collect();
    let stored = world.send(&subjects).await;
    world.wait_for_inbox(200).await;

    let first =
        agent.run(&["run", "--once"], None).await.expect("run").expect_success("run --once");
    println!("run --once over 200 notifications took {:?}", first.elapsed);
    assert!(first.stdout.contains("INBOX: 200 swapped, 0 kept, 0 rejected"), "{}", first.stdout);
    for message in [&stored[0], &stored[99], &stored[199]] {
        assert_eq!(world.copies(message).await, (1, 0), "{}", message.message_id);
    }
    let inbox = world.stack.messages(ALICE, "INBOX").await.expect("INBOX");
    assert_eq!(inbox.len(), 200, "exactly one real copy each, no placeholder");

    // The cursor survived the exit: the next run looks at nothing old.
    let second = agent.run(&["run", "--once"], None).await.expect("run").expect_success("rerun");
    assert!(
        second.stdout.contains("INBOX: 0 swapped, 0 kept, 0 rejected (0 new"),
        "{}",
        second.stdout
    );

    let hits = agent.run(&["search", "Backlog 042", "--json"], None).await.expect("search");
    let hits = json_lines(&hits.expect_success("search").stdout);
    assert!(!hits.is_empty());
    assert_eq!(hits[0]["subject"], "Backlog 042");
    assert_eq!(hits[0]["folder"], "INBOX");

    let status = agent.run(&["status", "--json"], None).await.expect("status");
    let status: serde_json::Value =
        serde_json::from_str(&status.expect_success("status").stdout).expect("JSON");
    assert_eq!(status["swapped_total"], 200);
    assert_eq!(status["indexed"], 200);
    assert_eq!(status["pending"], serde_json::json!([]));
    assert!(status["last_swap"]["swapped_at"].as_i64().is_some());
}

#[tokio::test]
async fn a_lost_index_is_rebuilt_from_the_mailbox() {
    let world = world().await;
    let agent = world.registered_agent().await;
    world.send(&["Quarterly figures".to_owned(), "Board minutes".to_owned()]).await;
    world.wait_for_inbox(2).await;
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("run --once");

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(agent.data_dir().join(format!("index.db{suffix}")));
    }
    let nothing = agent.run(&["search", "quarterly", "--json"], None).await.expect("search");
    assert!(nothing.expect_success("search").stdout.trim().is_empty());

    let rebuilt = agent.run(&["reindex"], None).await.expect("reindex").expect_success("reindex");
    assert!(rebuilt.stdout.contains("rebuilt: 2 messages"), "{}", rebuilt.stdout);
    let hits = agent.run(&["search", "quarterly", "--json"], None).await.expect("search");
    let hits = json_lines(&hits.expect_success("search").stdout);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["subject"], "Quarterly figures");
}

#[tokio::test]
async fn without_a_keyring_registration_stops_first_and_says_what_to_install() {
    let world = world().await;
    let mut keyring = world.keyring;
    keyring.stop_secret_service().await;
    let agent = AgentCli::new(keyring.env()).expect("agent");
    let before = world.stack.last_uid(ALICE, "INBOX").await.expect("uid");
    let output = agent
        .register(&world.stack, ALICE, &world.app.base_url, &world.app.cert_pem, &[])
        .await
        .expect("run register");
    assert!(!output.success);
    assert!(output.stderr.contains("no usable OS keyring"), "{}", output.stderr);
    assert!(output.stderr.contains("gnome-keyring"), "{}", output.stderr);
    assert!(!agent.data_dir().join("agent.toml").exists(), "nothing registered half-way");
    assert_eq!(
        world.stack.last_uid(ALICE, "INBOX").await.expect("uid"),
        before,
        "no code was asked for"
    );

    // With no session bus at all, the same advice.
    let agent = AgentCli::new(vec![(
        "DBUS_SESSION_BUS_ADDRESS".into(),
        "unix:path=/nonexistent/bus".into(),
    )])
    .expect("agent");
    let output = agent
        .register(&world.stack, ALICE, &world.app.base_url, &world.app.cert_pem, &[])
        .await
        .expect("run register");
    assert!(output.stderr.contains("no usable OS keyring"), "{}", output.stderr);
}

#[tokio::test]
async fn a_wrong_mailbox_password_is_refused_before_the_server_is_asked() {
    let world = world().await;
    let agent = AgentCli::new(world.keyring.env()).expect("agent");
    let output = agent
        .register_with_password(
            &world.stack,
            ALICE,
            "not the password",
            &world.app.base_url,
            &world.trusted_pem(),
            &[],
        )
        .await
        .expect("run register");
    assert!(!output.success);
    assert!(output.stderr.contains("check the address and password"), "{}", output.stderr);
    assert!(!agent.data_dir().join("agent.toml").exists());
}

#[tokio::test]
async fn the_watcher_swaps_live_reports_status_and_catches_up_after_a_restart() {
    let world = world().await;
    let agent = world.registered_agent().await;

    let mut running = agent.command(&["run"]).spawn().expect("start run");
    let live = world.send(&["While watching".to_owned()]).await;
    wait_until_swapped(&world, &live[0]).await;

    let status = agent.run(&["status", "--json"], None).await.expect("status");
    let status: serde_json::Value =
        serde_json::from_str(&status.expect_success("status").stdout).expect("JSON");
    assert_eq!(status["running"], true);
    assert_eq!(status["connections"][0]["folder"], "INBOX");
    assert_eq!(status["connections"][0]["state"], "connected");

    // Only one agent per mailbox on this computer.
    let second = agent.run(&["run", "--once"], None).await.expect("second agent");
    assert!(!second.success);
    assert!(second.stderr.contains("already watches this mailbox"), "{}", second.stderr);

    stop_gracefully(&mut running).await;
    let while_away = world.send(&["While stopped".to_owned()]).await;
    world.wait_for_inbox(2).await;
    assert_eq!(world.copies(&while_away[0]).await, (0, 1));

    let mut running = agent.command(&["run"]).spawn().expect("restart run");
    wait_until_swapped(&world, &while_away[0]).await;
    stop_gracefully(&mut running).await;
    assert_eq!(world.copies(&live[0]).await, (1, 0));

    let logs: Vec<_> = walk(&agent.data_dir().join("logs"));
    assert_eq!(logs.len(), 1, "one daily log file: {logs:?}");
    let log = std::fs::read_to_string(&logs[0]).expect("log");
    assert!(log.lines().all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok()));
    assert!(log.contains("placeholder swapped for the real message"), "{log}");
}

async fn wait_until_swapped(world: &World, stored: &StoredMessage) {
    sealpost_harness::wait_until_swapped(&world.stack, ALICE, &stored.message_id, SWAP_TIMEOUT)
        .await;
}

#[tokio::test]
async fn starttls_and_several_folders_and_a_notification_moved_by_a_filter() {
    let world = world().await;
    let agent = AgentCli::new(world.keyring.env()).expect("agent");
    let plain_port = world.stack.imap_addr().port().to_string();
    agent
        .register(
            &world.stack,
            ALICE,
            &world.app.base_url,
            &world.trusted_pem(),
            &[
                "--imap-port",
                &plain_port,
                "--imap-security",
                "starttls",
                "--folder",
                "INBOX",
                "--folder",
                "Archive",
            ],
        )
        .await
        .expect("run register")
        .expect_success("register over STARTTLS");

    let in_inbox = world.send(&["Straight to the inbox".to_owned()]).await;
    // A genuine notification that the user's filter moved to Archive.
    let filed = world
        .app
        .store_message(&world.sender, &[ALICE], sample_mime("Filed away", "filed body", b""))
        .await;
    let envelope = EmailEnvelope {
        from: (None, "sender@example.test".into()),
        to: vec![(None, ALICE.into())],
        cc: vec![],
        subject: "Filed away".into(),
        date: 1_795_000_000,
        message_id: "<filed.1@example.test>".into(),
        in_reply_to: None,
        references: vec![],
    };
    let raw = compose_email(&envelope, &filed.notifications[0]);
    world.stack.append(ALICE, "Archive", &raw, &["\\Seen"]).await.expect("append");
    world.wait_for_inbox(1).await;

    let output = agent.run(&["run", "--once"], None).await.expect("run").expect_success("run");
    assert!(output.stdout.contains("INBOX: 1 swapped"), "{}", output.stdout);
    assert!(output.stdout.contains("Archive: 1 swapped"), "{}", output.stdout);
    assert_eq!(world.copies(&in_inbox[0]).await, (1, 0));
    let archive = world.stack.messages(ALICE, "Archive").await.expect("Archive");
    assert_eq!(archive.len(), 1);
    assert!(String::from_utf8_lossy(&archive[0].raw).contains("filed body"));
    assert!(archive[0].flags.iter().any(|flag| flag == "\\Seen"), "flags kept");
    let hits = agent.run(&["search", "filed", "--json"], None).await.expect("search");
    let hits = json_lines(&hits.expect_success("search").stdout);
    assert_eq!(hits[0]["folder"], "Archive");
}

#[tokio::test]
async fn kept_placeholders_are_recorded_with_their_reason_and_retried_when_temporary() {
    let world = world().await;
    let agent = world.registered_agent().await;
    let config_file = agent.data_dir().join("agent.toml");
    let config = std::fs::read_to_string(&config_file).expect("config");

    // The server unreachable: kept, exit status 75, pending in status.
    let unreachable = config.replace(&world.app.base_url, "https://127.0.0.1:1");
    std::fs::write(&config_file, &unreachable).expect("write");
    let stored = world.send(&["During the outage".to_owned()]).await;
    world.wait_for_inbox(1).await;
    let output = agent.run(&["run", "--once"], None).await.expect("run");
    assert_eq!(output.code, Some(75), "{}\n{}", output.stdout, output.stderr);
    assert!(output.stdout.contains("unavailable; will retry"), "{}", output.stdout);
    let status = status_json(&agent).await;
    assert_eq!(status["pending"][0]["message_id"], stored[0].message_id.as_str());
    assert_eq!(world.copies(&stored[0]).await, (0, 1));

    // Back: the next run tries it again and clears the record.
    std::fs::write(&config_file, &config).expect("write");
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("run");
    assert_eq!(world.copies(&stored[0]).await, (1, 0));
    assert_eq!(status_json(&agent).await["pending"], serde_json::json!([]));

    // Signed out on the server: kept for good, with the reason, asked once.
    let phone = world.app.register_agent(ALICE, "phone").await;
    let device_id = status_json(&agent).await["device_id"].as_str().expect("id").to_owned();
    world
        .app
        .api
        .delete(&format!("/api/v1/devices/{device_id}"), Some(phone.token()))
        .await
        .expect("request")
        .expect_status(204)
        .expect("revoked");
    let after = world.send(&["After sign-out".to_owned()]).await;
    world.wait_for_inbox(3).await;
    let output = agent.run(&["run", "--once"], None).await.expect("run");
    assert_eq!(output.code, Some(0), "nothing to retry: {}", output.stdout);
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("again");
    let status = status_json(&agent).await;
    let failed = &status["failed"][0];
    assert_eq!(failed["message_id"], after[0].message_id.as_str());
    assert!(failed["reason"].as_str().expect("reason").contains("signed out"), "{failed}");
    assert_eq!(failed["attempts"], 1, "a final answer is not asked again");
    assert_eq!(world.copies(&after[0]).await, (0, 1), "the placeholder stays");
}

#[tokio::test]
async fn the_policy_decides_the_folders_after_registration_and_a_broken_one_stops_the_agent() {
    let world = world().await;
    let agent = world.registered_agent().await;
    // The file the harness names in SEALPOST_POLICY_FILE, absent until now.
    let policy = agent.data_dir().join("no-policy.toml");
    std::fs::write(&policy, "folders = [\"INBOX\", \"Archive\"]\n").expect("write policy");
    let output = agent.run(&["run", "--once"], None).await.expect("run").expect_success("run");
    assert!(output.stdout.contains("Archive: 0 swapped"), "{}", output.stdout);
    assert_eq!(status_json(&agent).await["folders"], serde_json::json!(["INBOX", "Archive"]));

    std::fs::write(&policy, "folders = \"INBOX\"\n").expect("write a broken policy");
    let output = agent.run(&["run", "--once"], None).await.expect("run");
    assert!(!output.success, "refuses to run: {}", output.stdout);
    assert!(
        output.stderr.contains("no-policy.toml") && output.stderr.contains("ask IT"),
        "{}",
        output.stderr
    );
}

async fn status_json(agent: &AgentCli) -> serde_json::Value {
    let output = agent.run(&["status", "--json"], None).await.expect("status");
    serde_json::from_str(&output.expect_success("status").stdout).expect("JSON")
}

#[tokio::test]
async fn a_policy_without_local_copies_swaps_but_keeps_no_index_and_deletes_an_old_one() {
    let world = world().await;
    let agent = world.registered_agent().await;
    let stored = world.send(&["Before the policy".to_owned()]).await;
    world.wait_for_inbox(1).await;
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("run --once");
    let index = agent.data_dir().join("index.db");
    assert!(index.exists(), "indexed while local copies are allowed");

    let policy = agent.data_dir().join("no-policy.toml");
    std::fs::write(&policy, "local_copies = false\n").expect("write policy");
    let later = world.send(&["After the policy".to_owned()]).await;
    world.wait_for_inbox(2).await;
    let output = agent.run(&["run", "--once"], None).await.expect("run").expect_success("run");
    assert!(output.stdout.contains("INBOX: 1 swapped"), "{}", output.stdout);
    assert_eq!(world.copies(&stored[0]).await, (1, 0));
    assert_eq!(world.copies(&later[0]).await, (1, 0), "the mailbox still gets the message");
    assert!(!index.exists(), "the index from before the policy is deleted");

    for command in [&["search", "policy"][..], &["reindex"][..]] {
        let refused = agent.run(command, None).await.expect("run");
        assert!(!refused.success, "{command:?} refused: {}", refused.stdout);
        assert!(
            refused.stderr.contains("does not allow copies")
                && refused.stderr.contains("no-policy.toml"),
            "{}",
            refused.stderr
        );
    }
    assert!(!index.exists(), "searching did not create a new index");
    assert_eq!(status_json(&agent).await["indexed"], 0);

    let shown = agent.run(&["policy"], None).await.expect("policy").expect_success("policy");
    assert!(
        shown.stdout.contains("no-policy.toml") && shown.stdout.contains("local_copies = false"),
        "{}",
        shown.stdout
    );
}

#[tokio::test]
async fn send_mails_through_the_users_server_files_in_sent_and_recalls() {
    let world = world().await;
    let smtps = world.stack.smtps_addr().port().to_string();
    let agent =
        world.registered_agent_with(&["--smtp-host", "localhost", "--smtp-port", &smtps]).await;
    let attachment = agent.data_dir().join("report.pdf");
    std::fs::write(&attachment, b"%PDF-1.4 the report").expect("attachment");
    let attachment = attachment.display().to_string();

    // No agent runs: `send` does the work itself.
    let sent = agent
        .run(
            &[
                "send",
                "--to",
                "sender@example.test",
                "--subject",
                "Quarterly report",
                "--body",
                "Numbers inside.",
                "--attach",
                &attachment,
                "--expires-in-days",
                "30",
            ],
            None,
        )
        .await
        .expect("run send")
        .expect_success("send");
    assert!(
        sent.stdout.contains("\"Quarterly report\"") && sent.stdout.contains(": sent"),
        "{}",
        sent.stdout
    );
    assert!(sent.stdout.contains("sender@example.test: notified"), "{}", sent.stdout);
    let is_notification = |raw: &[u8]| {
        sealpost_proto::notification::parse(raw).is_ok()
            && String::from_utf8_lossy(raw).contains("Subject: Quarterly report")
    };
    world
        .stack
        .wait_for_email("sender@example.test", "INBOX", is_notification, Duration::from_secs(15))
        .await
        .expect("the notification arrives from Alice's own server");
    let filed = world.stack.messages(ALICE, "Sent").await.expect("Sent");
    assert_eq!(filed.len(), 1);
    assert!(String::from_utf8_lossy(&filed[0].raw).contains("Numbers inside."));

    let listed = agent.run(&["sent", "--json"], None).await.expect("sent").expect_success("sent");
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON");
    let message_id = listed[0]["message_id"].as_str().expect("message id").to_owned();
    assert_eq!(listed[0]["state"], "sent");
    let slip = agent.run(&["sent", &message_id], None).await.expect("slip").expect_success("slip");
    assert!(slip.stdout.contains("sender@example.test: sent, notified"), "{}", slip.stdout);
    assert!(slip.stdout.contains("expires"), "{}", slip.stdout);

    // With the agent running, `send` hands the draft over through the Outbox.
    let mut running = agent.command(&["run"]).spawn().expect("start run");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while status_json(&agent).await["running"] != true {
        assert!(tokio::time::Instant::now() < deadline, "the agent did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handed = agent
        .run(
            &["send", "--to", "sender@example.test", "--subject", "While running", "--body", "x"],
            None,
        )
        .await
        .expect("run send")
        .expect_success("send while running");
    assert!(handed.stderr.contains("handed to the running Sealpost agent"), "{}", handed.stderr);
    assert!(handed.stdout.contains(": sent"), "{}", handed.stdout);
    stop_gracefully(&mut running).await;
    assert!(world.stack.messages(ALICE, "Sealpost Outbox").await.expect("Outbox").is_empty());
    assert_eq!(world.stack.messages(ALICE, "Sent").await.expect("Sent").len(), 2);

    // Answering a secure message received: a reply threads under it, a
    // forward carries its attachment.
    let received = world.send(&["Appointment".to_owned()]).await.remove(0);
    world.wait_for_inbox(1).await;
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("swap");
    agent
        .run(&["send", "--reply-to", &received.message_id, "--body", "Tuesday is fine."], None)
        .await
        .expect("reply")
        .expect_success("reply");
    let original_id = sample_message_id("Appointment");
    let threaded = |raw: &[u8]| {
        sealpost_proto::notification::parse(raw).is_ok()
            && String::from_utf8_lossy(raw).contains(&format!("In-Reply-To: <{original_id}>"))
    };
    world
        .stack
        .wait_for_email("sender@example.test", "INBOX", threaded, Duration::from_secs(15))
        .await
        .expect("the reply's notification, threaded under the original");
    let forwarded = agent
        .run(&["send", "--forward", &received.message_id, "--to", "sender@example.test"], None)
        .await
        .expect("forward")
        .expect_success("forward");
    assert!(forwarded.stdout.contains("\"Fwd: Appointment\""), "{}", forwarded.stdout);
    let filed = world.stack.messages(ALICE, "Sent").await.expect("Sent");
    let forward = filed
        .iter()
        .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
        .find(|raw| raw.contains("Subject: Fwd: Appointment"))
        .expect("the forward filed in Sent");
    assert!(forward.contains("data.bin"), "the original's attachment goes along:\n{forward}");
    let unknown = agent.run(&["send", "--reply-to", "nosuchmessage"], None).await.expect("run");
    assert!(!unknown.success && unknown.stderr.contains("no secure message"), "{}", unknown.stderr);

    let recalled =
        agent.run(&["recall", &message_id], None).await.expect("recall").expect_success("recall");
    assert!(recalled.stdout.contains("nobody can open it"), "{}", recalled.stdout);
    let gone = world.app.content(Some(world.sender.token()), &message_id).await;
    assert_eq!(gone.status, 410);
}
