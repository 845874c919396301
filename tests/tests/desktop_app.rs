//! The `sealpost` desktop app end to end, in a real window (Xvfb, driven
//! through tauri-driver and WebKitWebDriver), against the real server, the
//! real mail stack and a real OS keyring, on a computer whose IT policy
//! presets the server, the mailbox and the CA: registration through the
//! wizard (its address filled in by a `sealpost://register` link, handed
//! over by a second start of the app), a secure message swapped in (and
//! another only once watching is resumed), shown on the Status screen, found
//! by Search and opened with its attachment saved, answered from the
//! reader (sent through the person's own mail server, filed in Sent, its
//! delivery slip shown and the answer recalled), the organization's
//! settings shown, and the computer signed out (revoked on the server).
//!
//! Each screen is saved as a PNG in `target/tmp/screenshots/`; with
//! `SEALPOST_WRITE_SCREENSHOTS=1` they replace those in `docs/screenshots/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use fantoccini::key::Key;
use sealpost_harness::desktop::DesktopApp;
use sealpost_harness::{KeyringSession, MailStack, TestApp, sample_mime, swap_state};
use sealpost_proto::api::Device;

const ALICE: &str = "alice@example.test";
const SUBJECT: &str = "Your lab results";

fn screenshot_dir() -> PathBuf {
    if std::env::var_os("SEALPOST_WRITE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    }
}

/// A secure message as a clinic's mail program would write it: text and
/// HTML alternatives (the HTML with what a sanitizer must remove) and a PDF.
fn clinic_message() -> Vec<u8> {
    let html = "<p>Dear Alice,</p><p>Your <b>cholesterol</b> values are in the normal range.</p>\
                <script>document.title = 'scripted'</script>\
                <img src=\"https://tracker.example/open.gif\" alt=\"tracker\">";
    format!(
        "From: Dr Sam Lee <sender@example.test>\r\nTo: Alice <{ALICE}>\r\nSubject: {SUBJECT}\r\n\
         Message-ID: <lab-results@example.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
         --outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
         --inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Dear Alice,\r\nYour cholesterol values are in the normal range.\r\n\
         --inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--inner--\r\n\
         --outer\r\nContent-Type: application/pdf\r\n\
         Content-Disposition: attachment; filename=\"results.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJSBsYWIgcmVzdWx0cwo=\r\n--outer--\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_in_the_wizard_then_a_secure_message_is_shown_found_and_opened() {
    let stack = Arc::new(MailStack::start(&["sender", "alice"]).await.expect("mail stack"));
    let server = TestApp::spawn_on(stack.clone(), |s| s.outbox.worker = false).await;
    let sender = server.register_agent("sender@example.test", "clinic laptop").await;
    let keyring = KeyringSession::start().await.expect("keyring");

    // What IT deploys: the server, the mailbox and the organization's CA.
    let computer = tempfile::tempdir().expect("temp dir");
    let ca_file = computer.path().join("ca.pem");
    let mut trusted = server.cert_pem.clone();
    trusted.extend_from_slice(stack.ca_pem().as_bytes());
    std::fs::write(&ca_file, trusted).expect("write CA");
    let policy = computer.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "server_url = \"{}\"\nca_file = \"{}\"\n\n[imap]\nhost = \"localhost\"\nport = {}\nsecurity = \"tls\"\n\n[smtp]\nhost = \"localhost\"\nport = {}\nsecurity = \"tls\"\n",
            server.base_url,
            ca_file.display(),
            stack.imaps_addr().port(),
            stack.smtps_addr().port()
        ),
    )
    .expect("write policy");
    let downloads = computer.path().join("Downloads");
    let mut env = keyring.env();
    env.extend([
        ("SEALPOST_AGENT_DIR".to_owned(), computer.path().join("data").display().to_string()),
        ("SEALPOST_POLICY_FILE".to_owned(), policy.display().to_string()),
        ("SEALPOST_DOWNLOAD_DIR".to_owned(), downloads.display().to_string()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
    ]);
    let app = DesktopApp::launch(&env, &screenshot_dir()).await.expect("the app opens");

    // The wizard: the server is preset by the organization, not asked.
    app.wait_for_text(".preset", &server.base_url).await.expect("the preset server is shown");
    assert!(app.client.find(Locator::Css("#server")).await.is_err(), "no server field");
    app.screenshot("1-wizard").await.expect("screenshot");
    // A `sealpost://register` link (from the Secure Message Center) starts
    // the app again: that start hands the link over and ends; the open
    // window fills the address in.
    let link = "sealpost://register?email=alice%40example.test";
    let second = app.start_again(&[link]).await.expect("a second start");
    assert!(second.success(), "the second start hands over and exits: {second}");
    app.wait_for_value("#email", ALICE).await.expect("the link fills in the address");
    let password = stack.user(ALICE).password.clone();
    app.find("#password").await.expect("password field").send_keys(&password).await.expect("type");
    let clicked = Instant::now();
    app.click_button("Set up this computer").await.expect("submit");
    let welcome =
        app.wait_for_text(".welcome", "registered for").await.expect("registration finishes");
    let machine = clicked.elapsed();
    println!("registration, click to Status screen: {machine:?}; the app's own measure: {welcome}");
    assert!(welcome.contains(ALICE), "{welcome}");
    assert!(machine < Duration::from_secs(10), "registration took {machine:?}");
    app.wait_for_text(".connection", "Watching your mailbox").await.expect("watching");

    // A secure message arrives and is swapped in place of its notification.
    let stored = server.store_and_notify(sender.token(), &[ALICE], clinic_message()).await;
    while server.outbox.step().await.expect("outbox step").sent > 0 {}
    app.wait_for_text(".recent", SUBJECT).await.expect("Status lists the swapped message");
    let inbox = stack.messages(ALICE, "INBOX").await.expect("INBOX");
    assert_eq!(swap_state(&inbox, &stored.message_id), (1, 0), "one real copy, no placeholder");
    app.wait_for_text("#swapped-total", "1").await.expect("one message opened");
    app.wait_for_text("#indexed", "1").await.expect("one message searchable");
    let shown = app.wait_for_notifications(1).await.expect("a desktop notification");
    assert_eq!(shown[0].summary, "Secure message from Dr Sam Lee <sender@example.test>");
    assert_eq!(shown[0].body, SUBJECT);
    app.screenshot("2-status").await.expect("screenshot");

    // Paused, a new secure message waits as its notification; resumed, it
    // is swapped in.
    app.click_button("Pause watching").await.expect("pause");
    app.wait_for_text(".connection", "Paused").await.expect("paused");
    let later = sample_mime("Invoice 2026-114", "The invoice for November.", b"%PDF-1.4\n");
    let invoice = server.store_and_notify(sender.token(), &[ALICE], later).await;
    while server.outbox.step().await.expect("outbox step").sent > 0 {}
    stack.wait_for_messages(ALICE, "INBOX", 2, Duration::from_secs(30)).await.expect("delivered");
    // A running watcher swaps within milliseconds of delivery.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let inbox = stack.messages(ALICE, "INBOX").await.expect("INBOX");
    assert_eq!(swap_state(&inbox, &invoice.message_id), (0, 1), "not swapped while paused");
    app.click_button("Resume watching").await.expect("resume");
    app.wait_for_text(".recent", "Invoice 2026-114").await.expect("swapped after resuming");
    let inbox = stack.messages(ALICE, "INBOX").await.expect("INBOX");
    assert_eq!(swap_state(&inbox, &invoice.message_id), (1, 0));

    // Search as you type, the match marked.
    app.click_button("Search").await.expect("Search screen");
    let query = app.find("#query").await.expect("search box");
    query.send_keys("choles").await.expect("type");
    app.wait_for_text("#results", SUBJECT).await.expect("search finds it");
    let marked = app.find("#results mark").await.expect("a marked match");
    assert_eq!(marked.text().await.expect("mark text").to_lowercase(), "cholesterol");
    app.screenshot("3-search").await.expect("screenshot");

    // Enter opens it: headers, the sanitized HTML in its frame, the attachment.
    query.send_keys(&Key::Enter).await.expect("Enter");
    app.wait_for_text("#reader-subject", SUBJECT).await.expect("the message opens");
    app.wait_for_text(".headers", "Dr Sam Lee").await.expect("the sender is shown");
    let frame = app.find("iframe.body").await.expect("the message frame");
    assert_eq!(frame.attr("sandbox").await.expect("sandbox").as_deref(), Some(""));
    let html = frame.attr("srcdoc").await.expect("srcdoc").unwrap_or_default();
    assert!(html.contains("<b>cholesterol</b>"), "{html}");
    assert!(!html.contains("script") && !html.contains("tracker.example"), "{html}");
    frame.enter_frame().await.expect("into the frame");
    let shown = app.wait_for_text("body", "normal range").await.expect("the frame shows the text");
    assert!(shown.contains("Dear Alice"), "{shown}");
    app.client.enter_parent_frame().await.expect("back out of the frame");
    app.screenshot("4-message").await.expect("screenshot");

    app.click_button("Save").await.expect("save the attachment");
    let saved = app.wait_for_text(".saved", "Saved to").await.expect("saved");
    let file = downloads.join("results.pdf");
    assert!(saved.contains(&file.display().to_string()), "{saved}");
    assert!(std::fs::read(&file).expect("the saved file").starts_with(b"%PDF-1.4"));

    // Reply from the reader: the compose screen prefilled, the answer sent
    // securely through Alice's own mail server, threaded under the original.
    app.click_button("Reply").await.expect("reply");
    app.wait_for_value("#compose-to", "sender@example.test").await.expect("to the sender");
    app.wait_for_value("#compose-subject", &format!("Re: {SUBJECT}")).await.expect("Re:");
    let body = app.find("#compose-body").await.expect("the text");
    body.send_keys("Thank you, see you on Tuesday. ").await.expect("type");
    app.screenshot("6-compose").await.expect("screenshot");
    app.find("#compose-send").await.expect("send button").click().await.expect("send");
    let reply_subject = format!("Re: {SUBJECT}");
    app.wait_for_text(".sent-item", &reply_subject).await.expect("the Sent screen lists it");
    let is_reply = |raw: &[u8]| {
        sealpost_proto::notification::parse(raw).is_ok()
            && String::from_utf8_lossy(raw).contains("In-Reply-To: <lab-results@example.test>")
    };
    let notification = stack
        .wait_for_email("sender@example.test", "INBOX", is_reply, Duration::from_secs(15))
        .await
        .expect("the clinic gets the notification of the reply, threaded");
    let reply_id = sealpost_proto::notification::parse(&notification)
        .expect("a notification")
        .fields
        .message_id
        .to_string();
    let filed = stack.messages(ALICE, "Sent").await.expect("Sent");
    assert!(
        filed.iter().any(|m| String::from_utf8_lossy(&m.raw).contains("see you on Tuesday")),
        "the real reply is in Alice's Sent folder"
    );
    // The clinic's agent fetches it; the slip says so; Alice recalls it.
    assert_eq!(server.content(Some(sender.token()), &reply_id).await.status, 200);
    app.find(".sent-item").await.expect("the sent message").click().await.expect("open");
    app.find("#slip-refresh").await.expect("refresh").click().await.expect("refresh");
    app.wait_for_text("#slip", "retrieved").await.expect("the slip shows the retrieval");
    app.screenshot("7-sent").await.expect("screenshot");
    app.find("#recall").await.expect("recall").click().await.expect("recall");
    app.find("#recall-confirm").await.expect("confirm").click().await.expect("confirm");
    app.wait_for_text("#slip", "Recalled").await.expect("recalled");
    assert_eq!(server.content(Some(sender.token()), &reply_id).await.status, 410);

    // Forward from the reader: the original's attachment goes along.
    app.click_button("Search").await.expect("Search screen");
    let query = app.find("#query").await.expect("search box");
    query.send_keys("choles").await.expect("type");
    app.wait_for_text("#results", SUBJECT).await.expect("found again");
    query.send_keys(&Key::Enter).await.expect("Enter");
    app.wait_for_text("#reader-subject", SUBJECT).await.expect("the message opens");
    app.click_button("Forward").await.expect("forward");
    app.wait_for_text("#forwarded", "results.pdf").await.expect("the attachment is named");
    app.find("#compose-to")
        .await
        .expect("to")
        .send_keys("sender@example.test")
        .await
        .expect("type");
    app.find("#compose-send").await.expect("send button").click().await.expect("send");
    app.wait_for_text(".sent-item", &format!("Fwd: {SUBJECT}")).await.expect("forwarded");
    let filed = stack.messages(ALICE, "Sent").await.expect("Sent");
    let forward = filed
        .iter()
        .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
        .find(|raw| raw.contains(&format!("Subject: Fwd: {SUBJECT}")))
        .expect("the forward is filed in Sent");
    assert!(forward.contains("results.pdf"), "the original's attachment goes along:\n{forward}");

    // Settings: the organization's values shown as such; then sign out.
    app.click_button("Settings").await.expect("Settings screen");
    app.wait_for_text(".policy", "Incoming mail server").await.expect("the policy is listed");
    // Once the mailbox has listed its folders: the list growing then would
    // move the buttons below it while they are clicked.
    app.wait_for_text(".folders-choice[aria-busy='false']", "INBOX")
        .await
        .expect("the folders are offered");
    // Start at login: the desktop's autostart entry appears.
    let home = env.iter().find(|(key, _)| key == "HOME").map(|(_, home)| PathBuf::from(home));
    let autostart_dir = home.expect("HOME in the keyring's environment").join(".config/autostart");
    let login_box = app
        .client
        .find(Locator::XPath("//label[contains(., 'Start Sealpost when I log in')]/input"))
        .await
        .expect("the start-at-login box");
    login_box.click().await.expect("tick it");
    app.wait_for_text(".saved", "start when you log in").await.expect("confirmed");
    let entries: Vec<_> = std::fs::read_dir(&autostart_dir)
        .map(|dir| dir.filter_map(Result::ok).map(|entry| entry.path()).collect())
        .unwrap_or_default();
    let entry = entries
        .iter()
        .find(|path| path.extension().is_some_and(|ext| ext == "desktop"))
        .unwrap_or_else(|| panic!("an autostart entry in {}", autostart_dir.display()));
    let text = std::fs::read_to_string(entry).expect("the entry");
    assert!(text.contains("--minimized"), "starts in the tray: {text}");
    app.screenshot("5-settings").await.expect("screenshot");
    app.click_button("Sign out…").await.expect("sign out");
    app.click_button("Sign out of this computer").await.expect("confirm");
    app.wait_for_text("h1", "Set up Sealpost").await.expect("the wizard again");

    // The server revoked the device; nothing of the registration is left here.
    let phone = server.register_agent(ALICE, "phone").await;
    let devices: Vec<Device> =
        server.api.get("/api/v1/devices", Some(phone.token())).await.expect("devices").json();
    let desktop = devices
        .iter()
        .find(|device| device.name.ends_with("(Sealpost app)"))
        .unwrap_or_else(|| panic!("the app's device is listed: {devices:?}"));
    assert!(desktop.revoked_at.is_some(), "revoked on sign-out: {desktop:?}");
    let data = computer.path().join("data");
    for file in ["agent.toml", "index.db", "state.db"] {
        assert!(!data.join(file).exists(), "{file} is removed on sign-out");
    }

    app.close().await;
}
