//! The agent under faults, with the real binary, the real server and the
//! real mail stack: killed at every step of a swap and of a send, its mail
//! servers and the server's relay flapping, IMAP servers answering NO, BAD,
//! garbage or half an answer, certificates for another host, expired or
//! from an unknown issuer, and the server's clock hours ahead of the
//! agent's. After each: every secure message is its placeholder or exactly
//! one real copy, nobody is notified twice, nothing is lost on the server.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealpost_agent::crash_point::ABORT_AT_ENV;
use sealpost_harness::network_faults::{CertificateKind, FlakyProxy, ImapFault, ImapFront};
use sealpost_harness::{
    AgentCli, KeyringSession, MailStack, TestApp, TestUser, sample_mime, stop_gracefully,
    swap_state,
};
use sealpost_proto::api::StoredMessage;
use sealpost_proto::notification::parse;
use sealpost_server::settings::Settings;

const ALICE: &str = "alice@example.test";
/// How long a running agent may take to swap a notification that arrived.
const SWAP_TIMEOUT: Duration = Duration::from_secs(60);
const BOB: &str = "bob@example.test";
const CAROL: &str = "carol@example.test";
const OUTBOX: &str = "Sealpost Outbox";
/// How a process that called `abort()` ends.
const SIGABRT: i32 = 6;

struct World {
    stack: Arc<MailStack>,
    app: TestApp,
    /// Sends secure messages to Alice through the server.
    bob: TestUser,
    keyring: KeyringSession,
}

async fn world() -> World {
    let stack = Arc::new(MailStack::start(&["alice", "bob", "carol"]).await.expect("mail stack"));
    world_on(stack, |_| {}).await
}

async fn world_on(stack: Arc<MailStack>, configure: impl FnOnce(&mut Settings)) -> World {
    let app = TestApp::spawn_on(stack.clone(), |settings| {
        settings.outbox.worker = false;
        configure(settings);
    })
    .await;
    let bob = app.register_agent(BOB, "bob laptop").await;
    let keyring = KeyringSession::start().await.expect("keyring");
    World { stack, app, bob, keyring }
}

impl World {
    fn trusted_pem(&self) -> Vec<u8> {
        let mut pem = self.app.cert_pem.clone();
        pem.extend_from_slice(self.stack.ca_pem().as_bytes());
        pem
    }

    /// Alice's agent, registered with `extra` arguments.
    async fn agent(&self, extra: &[&str]) -> AgentCli {
        let agent = AgentCli::new(self.keyring.env()).expect("agent");
        agent
            .register(&self.stack, ALICE, &self.app.base_url, &self.trusted_pem(), extra)
            .await
            .expect("run register")
            .expect_success("register");
        agent
    }

    /// Bob's secure messages to Alice, their notifications in her INBOX.
    async fn notify_alice(&self, subjects: &[&str]) -> Vec<StoredMessage> {
        let mut stored = Vec::new();
        for subject in subjects {
            let mime = sample_mime(subject, &format!("Body of {subject}"), b"attachment");
            stored.push(self.app.store_and_notify(self.bob.token(), &[ALICE], mime).await);
        }
        while self.app.outbox.step().await.expect("outbox step").sent > 0 {}
        for message in &stored {
            let id = message.message_id.clone();
            self.stack
                .wait_for_email(
                    ALICE,
                    "INBOX",
                    move |raw| parse(raw).is_ok_and(|n| n.fields.message_id.as_str() == id),
                    Duration::from_secs(30),
                )
                .await
                .expect("the notification arrives");
        }
        stored
    }

    /// (real copies, placeholders) of `stored` in Alice's INBOX.
    async fn copies(&self, stored: &StoredMessage) -> (usize, usize) {
        swap_state(&self.stack.messages(ALICE, "INBOX").await.expect("INBOX"), &stored.message_id)
    }

    /// Nothing lost on the server: the sender still reads the content.
    async fn assert_on_server(&self, stored: &StoredMessage) {
        let content = self.app.content(Some(self.bob.token()), &stored.message_id).await;
        assert_eq!(content.status, 200, "{} is still on the server", stored.message_id);
    }

    /// The notifications for `subject` in `address`'s INBOX, once Postfix's
    /// queue is empty (so a second one would be there too).
    async fn notifications(&self, address: &str, subject: &str) -> Vec<Vec<u8>> {
        self.stack.wait_until_delivered(Duration::from_secs(30)).await.expect("delivered");
        let wanted = format!("Subject: {subject}\r\n");
        self.stack
            .messages(address, "INBOX")
            .await
            .expect("INBOX")
            .into_iter()
            .map(|message| message.raw)
            .filter(|raw| parse(raw).is_ok() && String::from_utf8_lossy(raw).contains(&wanted))
            .collect()
    }

    async fn count_in(&self, folder: &str, subject: &str) -> usize {
        let wanted = format!("Subject: {subject}\r\n");
        self.stack
            .messages(ALICE, folder)
            .await
            .expect("folder")
            .iter()
            .filter(|m| String::from_utf8_lossy(&m.raw).contains(&wanted))
            .count()
    }
}

/// A draft from Alice to `to`, as a mail program saves it.
fn draft(subject: &str, to: &[&str]) -> Vec<u8> {
    format!(
        "From: Alice <{ALICE}>\r\nTo: {}\r\nSubject: {subject}\r\n\
         Message-ID: <{:016x}@example.test>\r\nDate: Mon, 30 Nov 2026 09:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBody of {subject}\r\n",
        to.join(", "),
        rand::random::<u64>()
    )
    .into_bytes()
}

/// Runs the agent with [`ABORT_AT_ENV`] set to `point`; returns what it printed.
async fn run_killed_at(agent: &AgentCli, args: &[&str], point: &str) -> std::process::Output {
    let mut command = agent.command(args);
    command.env(ABORT_AT_ENV, point);
    let child = command.spawn().expect("start sealpost-agent");
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("sealpost-agent ends within 120 s")
        .expect("wait");
    assert_eq!(
        output.status.signal(),
        Some(SIGABRT),
        "the agent was to die at {point} (it must be a debug build): {:?}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

async fn status_json(agent: &AgentCli) -> serde_json::Value {
    let output = agent.run(&["status", "--json"], None).await.expect("status");
    serde_json::from_str(&output.expect_success("status").stdout).expect("JSON")
}

/// Exact-subject hits of a search, from the agent's index.
async fn search_hits(agent: &AgentCli, subject: &str) -> usize {
    let output = agent.run(&["search", subject, "--json"], None).await.expect("search");
    output
        .expect_success("search")
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON line"))
        .filter(|hit| hit["subject"] == subject)
        .count()
}

#[tokio::test]
async fn the_agent_killed_at_each_swap_step_leaves_one_copy_after_the_next_run() {
    let world = world().await;
    let agent = world.agent(&[]).await;
    for step in ["Fetched", "Appended", "DuplicatesRemoved", "PlaceholderRemoved"] {
        let subjects = [format!("Killed after {step} one"), format!("Killed after {step} two")];
        let subjects: Vec<&str> = subjects.iter().map(String::as_str).collect();
        let stored = world.notify_alice(&subjects).await;

        run_killed_at(&agent, &["run", "--once"], &format!("swap:{step}")).await;
        for message in &stored {
            let state = world.copies(message).await;
            assert!(
                matches!(state, (0, 1) | (1, 1) | (1, 0)),
                "killed after {step}: {state:?} (real copies, placeholders)"
            );
        }

        agent.run(&["run", "--once"], None).await.expect("run").expect_success("the next run");
        for (message, subject) in stored.iter().zip(&subjects) {
            assert_eq!(world.copies(message).await, (1, 0), "{subject}: one real copy");
            world.assert_on_server(message).await;
            assert_eq!(search_hits(&agent, subject).await, 1, "{subject} indexed once");
        }
    }
    let status = status_json(&agent).await;
    assert_eq!(status["pending"], serde_json::json!([]), "{status}");
    assert_eq!(status["failed"], serde_json::json!([]), "{status}");
}

#[tokio::test]
async fn the_agent_killed_at_each_send_step_notifies_each_recipient_once() {
    let world = world().await;
    let smtps = world.stack.smtps_addr().port().to_string();
    let agent = world.agent(&["--smtp-host", "localhost", "--smtp-port", &smtps]).await;
    // The first run creates the Outbox folder.
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("first run");
    for point in ["Queued", "Uploaded", "Notified", "Notified#2", "Filed", "SourceRemoved"] {
        let subject = format!("Killed at send {point}");
        world
            .stack
            .append(ALICE, OUTBOX, &draft(&subject, &[BOB, CAROL]), &[])
            .await
            .expect("draft");

        run_killed_at(&agent, &["run", "--once"], &format!("send:{point}")).await;
        agent.run(&["run", "--once"], None).await.expect("run").expect_success("the next run");

        let sent = agent.run(&["sent", "--json"], None).await.expect("sent");
        let sent: serde_json::Value =
            serde_json::from_str(&sent.expect_success("sent").stdout).expect("JSON");
        let entries: Vec<&serde_json::Value> = sent
            .as_array()
            .expect("a list")
            .iter()
            .filter(|entry| entry["subject"] == subject.as_str())
            .collect();
        assert_eq!(entries.len(), 1, "one journal entry after a kill at {point}: {sent}");
        assert_eq!(entries[0]["state"], "sent", "{}", entries[0]);
        let message_id = entries[0]["message_id"].as_str().expect("message id");

        for address in [BOB, CAROL] {
            let found = world.notifications(address, &subject).await;
            assert_eq!(found.len(), 1, "{address} notified once after a kill at {point}");
            let notification = parse(&found[0]).expect("a notification");
            assert_eq!(notification.fields.message_id.as_str(), message_id, "one upload");
        }
        let content = world.app.content(Some(world.bob.token()), message_id).await;
        assert_eq!(content.status, 200, "the message is on the server");
        assert_eq!(world.count_in("Sent", &subject).await, 1, "filed once after {point}");
        assert!(
            world.stack.messages(ALICE, OUTBOX).await.expect("Outbox").is_empty(),
            "the draft left the Outbox after a kill at {point}"
        );
    }
}

/// Polls `status --json` until `done` accepts it.
async fn wait_for_status(
    agent: &AgentCli,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = status_json(agent).await;
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} within 60 s: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_until_swapped(world: &World, stored: &StoredMessage) {
    sealpost_harness::wait_until_swapped(&world.stack, ALICE, &stored.message_id, SWAP_TIMEOUT)
        .await;
}

#[tokio::test]
async fn the_running_agent_rides_out_its_mail_servers_flapping() {
    let world = world().await;
    let imap = FlakyProxy::start(world.stack.imaps_addr()).await.expect("IMAP proxy");
    let smtp = FlakyProxy::start(world.stack.smtps_addr()).await.expect("SMTP proxy");
    let (imap_port, smtp_port) = (imap.port().to_string(), smtp.port().to_string());
    let agent = world
        .agent(&["--imap-port", &imap_port, "--smtp-host", "localhost", "--smtp-port", &smtp_port])
        .await;
    let mut running = agent.command(&["run"]).spawn().expect("start run");
    let before = world.notify_alice(&["Before the outage"]).await;
    wait_until_swapped(&world, &before[0]).await;

    imap.go_down();
    smtp.go_down();
    let down_since = Instant::now();
    let attempts_before = imap.connections();
    let status = wait_for_status(&agent, "the outage reported", |status| {
        status["connections"][0]["state"] == "reconnecting"
    })
    .await;
    let detail = status["connections"][0]["detail"].as_str().unwrap_or_default();
    assert!(!detail.is_empty(), "status says why: {status}");
    println!("status during the outage: {detail}");

    // Mail keeps arriving at the server itself, and a draft is saved.
    let during = world.notify_alice(&["During the outage"]).await;
    let subject = "Written during the outage";
    world.stack.append(ALICE, OUTBOX, &draft(subject, &[BOB]), &[]).await.expect("draft");
    // Long enough for several reconnection attempts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while imap.connections() - attempts_before < 6 {
        assert!(Instant::now() < deadline, "the agent stopped trying to reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let attempts = imap.connections() - attempts_before;
    let outage = down_since.elapsed();
    println!("{attempts} IMAP connection attempts (INBOX and Outbox watchers) in {outage:?}");
    // A growing pause (0.5 s, 1 s, 2 s… per watcher), never a tight loop:
    // a loop would make these attempts within milliseconds.
    assert!(outage >= Duration::from_secs(2), "{attempts} attempts in {outage:?}");
    assert_eq!(world.copies(&during[0]).await, (0, 1));

    // IMAP back, SMTP still down: the swap completes, the draft waits.
    imap.come_back();
    wait_until_swapped(&world, &during[0]).await;
    wait_for_status(&agent, "the draft waiting", |status| status["sending"] == 1).await;
    smtp.come_back();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !world.stack.messages(ALICE, OUTBOX).await.expect("Outbox").is_empty() {
        assert!(Instant::now() < deadline, "the draft was not sent once SMTP came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(world.notifications(BOB, subject).await.len(), 1, "Bob notified once");
    assert_eq!(world.count_in("Sent", subject).await, 1, "filed once");
    assert_eq!(world.copies(&before[0]).await, (1, 0));
    assert!(running.try_wait().expect("wait").is_none(), "recovered without a restart");
    let status = status_json(&agent).await;
    assert_eq!(status["connections"][0]["state"], "connected", "{status}");
    assert_eq!(status["pending"], serde_json::json!([]), "{status}");
    stop_gracefully(&mut running).await;
}

#[tokio::test]
async fn the_servers_relay_flapping_delays_notifications_but_sends_each_once() {
    let stack = Arc::new(MailStack::start(&["alice", "bob", "carol"]).await.expect("mail stack"));
    let relay = FlakyProxy::start(stack.smtp_addr()).await.expect("relay proxy");
    let port = relay.port();
    let world = world_on(stack, |settings| settings.smtp.port = port).await;

    relay.go_down();
    let subject = "While the relay is down";
    let mime = sample_mime(subject, "body", b"");
    let stored = world.app.store_and_notify(world.bob.token(), &[ALICE, CAROL], mime).await;
    let step = world.app.outbox.step().await.expect("step");
    assert_eq!((step.sent, step.retried), (0, 2), "both wait for the relay: {step:?}");

    relay.come_back();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent < 2 {
        assert!(
            Instant::now() < deadline,
            "the notifications were not sent once the relay came back"
        );
        // The retry is due after its backoff; the server's clock gets there at once.
        world.app.clock.advance(Duration::from_secs(15 * 60));
        sent += world.app.outbox.step().await.expect("step").sent;
    }
    // Nothing left to send, and nothing sent twice.
    world.app.clock.advance(Duration::from_secs(24 * 60 * 60));
    assert_eq!(world.app.outbox.step().await.expect("step").attempts(), 0);
    for address in [ALICE, CAROL] {
        assert_eq!(world.notifications(address, subject).await.len(), 1, "{address} once");
    }
    // Bob's token aged with the clock; a device enrolled now reads the message.
    let bob = world.app.register_agent(BOB, "bob desktop").await;
    let content = world.app.content(Some(bob.token()), &stored.message_id).await;
    assert_eq!(content.status, 200, "the message is still on the server");
}

#[tokio::test]
async fn certificates_for_another_host_expired_or_untrusted_are_refused_with_the_reason() {
    let world = world().await;
    let agent = world.agent(&[]).await;
    let config_file = agent.data_dir().join("agent.toml");
    let ca_file = agent.data_dir().join("trusted.pem");
    let config = std::fs::read_to_string(&config_file).expect("config");
    let trusted = std::fs::read(&ca_file).expect("CA file");
    let imaps_port = format!("port = {}", world.stack.imaps_addr().port());
    assert!(config.contains(&imaps_port), "{config}");
    let stored = world.notify_alice(&["Behind a bad certificate"]).await;

    let cases = [
        (CertificateKind::WrongHost, true, "certificate for another host name"),
        (CertificateKind::Expired, true, "expired certificate"),
        (CertificateKind::UnknownIssuer, true, "issuer that is not trusted"),
        // A valid certificate from a CA the agent was not given.
        (CertificateKind::Valid, false, "issuer that is not trusted"),
    ];
    for (kind, ca_configured, reason) in cases {
        // The mailbox behind the certificate.
        let front = ImapFront::start(kind, Some(world.stack.imap_addr())).await.expect("front");
        let mut pem = trusted.clone();
        if ca_configured {
            pem.extend_from_slice(front.ca_pem().as_bytes());
        }
        std::fs::write(&ca_file, &pem).expect("CA file");
        let moved = config.replace(&imaps_port, &format!("port = {}", front.port()));
        std::fs::write(&config_file, moved).expect("config");
        let output = agent.run(&["run", "--once"], None).await.expect("run");
        assert!(!output.success, "IMAP with a {kind:?} certificate was accepted");
        assert!(output.stderr.contains(reason), "IMAP, {kind:?}: {}", output.stderr);
        println!("IMAP, {kind:?}: {}", output.stderr.trim());

        // The Sealpost server behind the certificate.
        let front = ImapFront::start(kind, None).await.expect("front");
        let mut pem = trusted.clone();
        if ca_configured {
            pem.extend_from_slice(front.ca_pem().as_bytes());
        }
        std::fs::write(&ca_file, &pem).expect("CA file");
        let url = format!("https://127.0.0.1:{}", front.port());
        std::fs::write(&config_file, config.replace(&world.app.base_url, &url)).expect("config");
        let output = agent.run(&["run", "--once"], None).await.expect("run");
        assert_eq!(output.code, Some(75), "kept for a later try: {}", output.stdout);
        assert!(output.stdout.contains(reason), "server, {kind:?}: {}", output.stdout);
        println!("server, {kind:?}: {}", output.stdout.trim());
        assert_eq!(world.copies(&stored[0]).await, (0, 1), "nothing fetched, nothing touched");
    }

    // The control: the mailbox behind a front whose CA is configured works.
    let front = ImapFront::start(CertificateKind::Valid, Some(world.stack.imap_addr()))
        .await
        .expect("front");
    let mut pem = trusted.clone();
    pem.extend_from_slice(front.ca_pem().as_bytes());
    std::fs::write(&ca_file, &pem).expect("CA file");
    std::fs::write(&config_file, config.replace(&imaps_port, &format!("port = {}", front.port())))
        .expect("config");
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("with the CA");
    assert_eq!(world.copies(&stored[0]).await, (1, 0));
}

#[tokio::test]
async fn mail_servers_answering_no_bad_or_garbage_keep_the_placeholder_until_they_behave() {
    let world = world().await;
    let agent = world.agent(&[]).await;
    let front = ImapFront::start(CertificateKind::Valid, Some(world.stack.imap_addr()))
        .await
        .expect("front");
    let config_file = agent.data_dir().join("agent.toml");
    let config = std::fs::read_to_string(&config_file).expect("config");
    let imaps_port = format!("port = {}", world.stack.imaps_addr().port());
    std::fs::write(&config_file, config.replace(&imaps_port, &format!("port = {}", front.port())))
        .expect("config");
    let ca_file = agent.data_dir().join("trusted.pem");
    let mut pem = std::fs::read(&ca_file).expect("CA file");
    pem.extend_from_slice(front.ca_pem().as_bytes());
    std::fs::write(&ca_file, &pem).expect("CA file");

    let cases = [
        (ImapFault::RefuseAppend, "because the mailbox is full"),
        (ImapFault::Bad("UID EXPUNGE"), "did not accept IMAP UID EXPUNGE"),
        (ImapFault::Bad("UID STORE"), "did not accept IMAP UID STORE"),
        (ImapFault::Garbage("UID SEARCH"), "with something that is not IMAP"),
        (ImapFault::CloseMidResponse("UID FETCH"), "closed the connection in the middle"),
        (ImapFault::ShortLiteral("UID FETCH"), "IMAP UID FETCH timed out"),
    ];
    for (fault, reason) in cases {
        let subject = format!("Answered with {fault:?}");
        let stored = world.notify_alice(&[subject.as_str()]).await;
        front.set_fault(Some(fault.clone()));
        let applied = front.faults_applied();
        let started = Instant::now();
        let output = agent.run(&["run", "--once"], None).await.expect("run");
        println!("{fault:?} ({:?}): {}", started.elapsed(), output.stderr.trim());
        assert!(front.faults_applied() > applied, "{fault:?} was never triggered");
        assert!(
            !output.success && output.code.is_some(),
            "{fault:?}: an error, not a crash: {:?}\n{}\n{}",
            output.code,
            output.stdout,
            output.stderr
        );
        assert!(output.stderr.contains(reason), "{fault:?}: {}", output.stderr);
        let state = world.copies(&stored[0]).await;
        assert!(matches!(state, (0, 1) | (1, 1)), "{fault:?}: {state:?}");

        front.set_fault(None);
        agent.run(&["run", "--once"], None).await.expect("run").expect_success("once it behaves");
        assert_eq!(world.copies(&stored[0]).await, (1, 0), "{fault:?}: one real copy");
        world.assert_on_server(&stored[0]).await;
    }
}

#[tokio::test]
async fn with_the_servers_clock_hours_ahead_the_agent_refreshes_its_token_and_swaps() {
    let world = world().await;
    let agent = world.agent(&[]).await;
    // The server's clock six hours ahead of the agent's: the agent's access
    // token is stale by the server's clock, though fresh by its own.
    world.app.clock.advance(Duration::from_secs(6 * 60 * 60));
    let bob = world.app.register_agent(BOB, "bob desktop").await;
    let mime = sample_mime("Six hours later", "body", b"");
    let stored = world.app.store_and_notify(bob.token(), &[ALICE], mime).await;
    while world.app.outbox.step().await.expect("outbox step").sent > 0 {}
    world
        .stack
        .wait_for_messages(ALICE, "INBOX", 1, Duration::from_secs(30))
        .await
        .expect("arrives");
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("swap after skew");
    assert_eq!(world.copies(&stored).await, (1, 0), "token refreshed, message swapped");
}

#[tokio::test]
async fn with_the_servers_clock_hours_behind_the_agent_registers_refreshes_and_swaps() {
    let world = world().await;
    // Every time the server issues (token expiry, message dates) is six
    // hours in the past by the agent's clock: the agent must take the
    // server's word for what has expired, not its own clock's.
    world.app.clock.rewind(Duration::from_secs(6 * 60 * 60));
    let agent = world.agent(&[]).await;
    let first = world.notify_alice(&["Six hours behind"]).await;
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("swap behind");
    assert_eq!(world.copies(&first[0]).await, (1, 0), "swapped with the server behind");
    world.assert_on_server(&first[0]).await;

    // Its access token then expires by the server's clock: refreshed, swapped.
    world.app.clock.advance(Duration::from_secs(2 * 60 * 60));
    let second = world.notify_alice(&["Token expired by the server's clock"]).await;
    agent.run(&["run", "--once"], None).await.expect("run").expect_success("swap after expiry");
    assert_eq!(world.copies(&second[0]).await, (1, 0), "token refreshed, message swapped");
    assert_eq!(world.copies(&first[0]).await, (1, 0), "the first stays one copy");
}

#[tokio::test]
async fn a_relay_certificate_for_another_host_expired_or_untrusted_is_refused_with_the_reason() {
    use sealpost_server::settings::SmtpSecurity;
    let stack = Arc::new(MailStack::start(&["alice", "sender"]).await.expect("mail stack"));
    let cases = [
        (CertificateKind::WrongHost, true, "another host name"),
        (CertificateKind::Expired, true, "expired"),
        (CertificateKind::UnknownIssuer, true, "not trust"),
        (CertificateKind::Valid, false, "not trust"),
        // The control: a valid certificate from the configured CA.
        (CertificateKind::Valid, true, ""),
    ];
    for (kind, ca_configured, reason) in cases {
        // Postfix behind a TLS front with the certificate under test, and
        // behind a trusted one for the verification code of the registration.
        let front = ImapFront::start(kind, Some(stack.smtp_addr())).await.expect("front");
        let trusted = ImapFront::start(CertificateKind::Valid, Some(stack.smtp_addr()))
            .await
            .expect("trusted front");
        let relay = FlakyProxy::start(loopback(trusted.port())).await.expect("relay proxy");
        let ca_dir = tempfile::tempdir().expect("dir");
        let ca_file = ca_dir.path().join("relay-ca.pem");
        let mut pem = trusted.ca_pem().to_owned();
        if ca_configured {
            pem.push_str(front.ca_pem());
        }
        std::fs::write(&ca_file, pem).expect("CA file");
        let app = TestApp::spawn_on(stack.clone(), |settings| {
            settings.outbox.worker = false;
            settings.smtp.host = Some("localhost".into());
            settings.smtp.port = relay.port();
            settings.smtp.security = SmtpSecurity::Tls;
            settings.smtp.ca_file = Some(ca_file.clone());
        })
        .await;
        let sender = app.register_agent("sender@example.test", "laptop").await;
        relay.redirect(loopback(front.port()));
        let subject = format!("Relay with a {kind:?} certificate, CA {ca_configured}");
        let stored = app
            .store_and_notify(sender.token(), &[ALICE], sample_mime(&subject, "body", b""))
            .await;
        let step = app.outbox.step().await.expect("step");
        let report = app.deliveries(sender.token(), &stored.message_id).await;
        let error = report.recipients[0].error.clone().unwrap_or_default();
        println!("relay, {kind:?}, CA configured {ca_configured}: {step:?} {error}");
        if reason.is_empty() {
            assert_eq!(step.sent, 1, "accepted through a trusted certificate: {error}");
            let found = stack.wait_for_email(
                ALICE,
                "INBOX",
                |raw| String::from_utf8_lossy(raw).contains(&subject),
                Duration::from_secs(30),
            );
            found.await.expect("delivered through the front");
        } else {
            assert_eq!(step.sent, 0, "{kind:?} refused");
            assert!(error.contains(reason), "{kind:?}: {error}");
        }
    }
}

fn loopback(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}
