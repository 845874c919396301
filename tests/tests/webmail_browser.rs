//! The Secure Message Center in a real browser: Debian's Chromium, driven
//! through ChromeDriver, against the real server (and, for the link, the
//! real Postfix and Dovecot). Screenshots go to `target/tmp/screenshots/webmail/`;
//! with `SEALPOST_WRITE_SCREENSHOTS=1` the registration test's replace the
//! `webmail-*.png` ones in `docs/screenshots/`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealpost_harness::{Browser, MailStack, PageClient, TestApp, notification_link};
use sealpost_proto::api::{DeliveryState, RetrievalChannel};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots/webmail")
}

/// Where the registration test's screenshots go: `docs/screenshots` when rewriting them.
fn documented_screenshots() -> PathBuf {
    if std::env::var_os("SEALPOST_WRITE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        screenshots()
    }
}

/// A message with an HTML body, a remote image and a PDF attachment.
fn results_message(attachment: &[u8]) -> Vec<u8> {
    let encoded = data_encoding::BASE64_MIME.encode(attachment).replace('\n', "\r\n");
    format!(
        "From: Dr Sam Lee <sender@example.test>\r\nTo: Alice Martin <alice@example.test>\r\n\
         Subject: Your lab results\r\nMessage-ID: <results.1@example.test>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
         --outer\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
         <p>Dear Alice,</p><p>Your results are <b>normal</b>. The full report is attached.</p>\
         <p><img src=\"https://images.example.invalid/logo.png\" alt=\"Clinic logo\"></p>\
         <p>Kind regards,<br>Dr Sam Lee</p>\r\n\
         --outer\r\nContent-Type: application/pdf; name=\"Lab results.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"Lab results.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--outer--\r\n"
    )
    .into_bytes()
}

/// The notification for `message_id` in `address`'s INBOX, once Postfix has delivered it.
async fn notification_in_inbox(stack: &MailStack, address: &str, message_id: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let messages = stack.messages(address, "INBOX").await.expect("read the INBOX");
        if let Some(found) = messages.into_iter().find(|message| {
            sealpost_proto::notification::parse(&message.raw)
                .is_ok_and(|n| n.fields.message_id.as_str() == message_id)
        }) {
            return found.raw;
        }
        assert!(Instant::now() < deadline, "no notification reached {address}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_recipient_registers_from_the_link_in_their_inbox_reads_and_downloads() {
    let stack = Arc::new(MailStack::start(&["sender", "alice"]).await.expect("mail stack"));
    let app = TestApp::spawn_on(stack.clone(), |_| {}).await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    let report_pdf: Vec<u8> =
        (0..150_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let stored = app
        .store_and_notify(sender.token(), &["alice@example.test"], results_message(&report_pdf))
        .await;
    let raw = notification_in_inbox(&stack, "alice@example.test", &stored.message_id).await;
    let link = notification_link(&raw).expect("a link in the notification");

    let browser =
        Browser::launch(&app.cert_pem, &documented_screenshots()).await.expect("Chromium");
    // The machine's share of the twenty seconds: from following the link to
    // reading the message, with the three fields typed by the driver.
    let started = Instant::now();
    browser.goto(&link).await.expect("open the link");
    browser.find("#name").await.expect("the registration form");
    let fields = browser
        .find_all("form[action='/register'] input:not([type=hidden]):not([hidden])")
        .await
        .expect("fields");
    assert_eq!(fields.len(), 3, "name, password, accept");
    browser.screenshot("webmail-register").await.expect("screenshot");
    browser.fill("#name", "Alice Martin").await.expect("name");
    browser.fill("#password", PASSWORD).await.expect("password");
    browser.click("#accept").await.expect("accept");
    browser.click("#register").await.expect("register");
    browser.wait_for_text("#subject", "Your lab results").await.expect("the message");
    let machine_time = started.elapsed();
    println!("link to message, registration included: {machine_time:?}");
    assert!(machine_time < Duration::from_secs(20), "took {machine_time:?}");

    let text = browser.page_text().await.expect("text");
    for shown in ["Your results are normal.", "Lab results.pdf", "Example Clinic", "Dr Sam Lee"] {
        assert!(text.contains(shown), "{shown:?} not shown:\n{text}");
    }
    let blocked = browser.wait_for_text("#images-blocked", "not loaded").await.expect("notice");
    assert!(blocked.contains("1 image"), "{blocked}");
    let remote_requests = browser
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin));",
            vec![],
        )
        .await
        .expect("resources");
    assert_eq!(remote_requests, json!([]), "nothing was fetched from elsewhere");
    browser.screenshot("webmail-message").await.expect("screenshot");

    browser.click("a.attachment").await.expect("download");
    let downloaded =
        browser.downloaded("Lab results.pdf", Duration::from_secs(20)).await.expect("the file");
    assert!(downloaded == report_pdf, "the downloaded bytes are the attachment's");

    // On a phone the page fits the screen's width.
    browser.set_window_size(390, 844).await.expect("phone size");
    let overflow = browser
        .execute("return document.documentElement.scrollWidth - window.innerWidth;", vec![])
        .await
        .expect("widths");
    assert!(overflow.as_i64().unwrap_or(1) <= 0, "wider than a phone by {overflow}px");
    browser.screenshot("webmail-message-phone").await.expect("screenshot");
    browser.set_window_size(1280, 900).await.expect("desktop size");

    // A secure reply with an attachment reaches the sender's mailbox as a notification.
    browser.click("#reply").await.expect("reply");
    browser.find("#body-input").await.expect("the compose form");
    browser
        .fill("#body-input", "Thank you. The signed consent form is attached.")
        .await
        .expect("body");
    let uploads = tempfile::tempdir().expect("temp dir");
    let consent = uploads.path().join("consent.pdf");
    std::fs::write(&consent, b"%PDF-1.4 signed consent").expect("write the file");
    browser
        .find("#attachment")
        .await
        .expect("file input")
        .send_keys(&consent.display().to_string())
        .await
        .expect("attach");
    browser.screenshot("webmail-reply").await.expect("screenshot");
    browser.click("#send").await.expect("send");
    browser.wait_for_text("#sent-notice", "Sent securely").await.expect("sent");
    let url = browser.current_url().await.expect("url");
    let reply_id = url
        .split("/messages/")
        .nth(1)
        .and_then(|rest| rest.split('?').next())
        .expect("the reply's id")
        .to_owned();
    let notification = notification_in_inbox(&stack, "sender@example.test", &reply_id).await;
    assert!(notification_link(&notification).is_some(), "the sender can open it too");
    let content = app.content(Some(sender.token()), &reply_id).await.text();
    assert!(
        content.contains("consent.pdf")
            && content.contains("In-Reply-To: <results.1@example.test>"),
        "{content}"
    );
    browser.goto(&format!("{}/messages/{}", app.origin, stored.message_id)).await.expect("back");
    browser.wait_for_text("#subject", "Your lab results").await.expect("the message");

    browser.click("#print").await.expect("print view");
    browser.wait_for_text("body.print h1", "Your lab results").await.expect("print view");
    browser.screenshot("webmail-print").await.expect("screenshot");

    let report = app.deliveries(sender.token(), &stored.message_id).await;
    assert_eq!(report.recipients[0].state, DeliveryState::Retrieved);
    assert_eq!(report.recipients[0].retrieved_with, Some(RetrievalChannel::SecureMessageCenter));

    // The link named the server's public origin; the session belongs to it.
    browser.goto(&format!("{}/mailbox", app.origin)).await.expect("mailbox");
    browser.wait_for_text("#received", "Your lab results").await.expect("listed");
    browser.screenshot("webmail-mailbox").await.expect("screenshot");
    browser.click("#account").await.expect("account page");
    browser.wait_for_text("#devices", "Chrome on Linux").await.expect("this browser listed");
    browser.screenshot("webmail-account").await.expect("screenshot");
    browser.close().await.expect("close");
}

/// What would show that a script ran, or that something dangerous survived
/// sanitizing, in the page shown now. Empty when all is well.
/// `arguments[0]`: whether the reader asked for remote images.
const EVIDENCE_OF_SCRIPT: &str = r#"
const remoteImagesShown = arguments[0];
const found = [];
if (window.__pwned !== undefined) found.push('window.__pwned = ' + window.__pwned);
if (document.title.startsWith('PWNED')) found.push('title: ' + document.title);
if (document.body.hasAttribute('data-pwned')) found.push('data-pwned on body');
const body = document.querySelector('#body');
if (!body) { found.push('no message body shown'); return found; }
for (const element of body.querySelectorAll('*')) {
  const tag = element.tagName.toLowerCase();
  if (['script','iframe','frame','object','embed','style','link','meta','base','form','input','button','textarea','svg','math','template','noscript','video','audio','foreignobject'].includes(tag))
    found.push('element ' + tag);
  for (const attribute of element.attributes) {
    const name = attribute.name.toLowerCase(), value = attribute.value.trim().toLowerCase();
    if (name.startsWith('on')) found.push(tag + ' has ' + name);
    if (name === 'style' || name === 'srcdoc' || name === 'formaction' || name === 'srcset') found.push(tag + ' has ' + name);
    if (['href','src','action','xlink:href','background','poster'].includes(name) &&
        (value.startsWith('javascript:') || value.startsWith('vbscript:') || value.startsWith('data:text') || value.startsWith('data:image/svg')))
      found.push(tag + ' ' + name + '=' + value.slice(0, 40));
    if (!remoteImagesShown && name === 'src' && !value.startsWith(location.origin) && !value.startsWith('data:image/')) found.push('remote ' + tag + ' ' + value);
  }
}
return found;
"#;

/// Hovers, focuses and clicks everything in the message body, as a reader
/// might: handlers that survived would run now.
const TOUCH_EVERYTHING: &str = r#"
for (const element of document.querySelectorAll('#body *')) {
  for (const type of ['mouseover','mouseenter','focus','animationstart','toggle'])
    element.dispatchEvent(new Event(type, {bubbles: true}));
  if (element.tagName === 'A') element.removeAttribute('target');
  if (element.tagName === 'A' && !element.href.startsWith('http')) element.click();
}
return true;
"#;

#[tokio::test]
async fn hostile_messages_are_shown_as_text_and_markup_without_running_any_script() {
    let app = TestApp::spawn().await;
    let sender = app.register_agent("sender@example.test", "laptop").await;
    app.create_password_account("alice@example.test", "Alice", PASSWORD).await;
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/hostile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("the hostile corpus")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "eml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is there: {files:?}");

    let browser = Browser::launch(&app.cert_pem, &screenshots()).await.expect("Chromium");
    browser.goto(&format!("{}/signin", app.base_url)).await.expect("sign-in page");
    browser.fill("#email", "alice@example.test").await.expect("email");
    browser.fill("#password", PASSWORD).await.expect("password");
    browser.click("#sign-in").await.expect("sign in");
    browser.wait_for_text("#received", "Received").await.expect("mailbox");
    let pages = PageClient::new(&app.base_url, &app.cert_pem).expect("page client");

    for file in &files {
        let stem = file.file_stem().and_then(|stem| stem.to_str()).expect("a name").to_owned();
        let raw = std::fs::read(file).expect("read the fixture");
        let stored = app.store_message(&sender, &["alice@example.test"], raw).await;
        for query in ["", "?images=show"] {
            let url = format!("{}/messages/{}{query}", app.base_url, stored.message_id);
            browser.goto(&url).await.expect("open the message");
            let marker = format!("SAFE-CONTENT-{stem}");
            browser.wait_for_text("#body", &marker).await.unwrap_or_else(|error| {
                panic!("{stem}{query}: the message was not shown: {error:#}")
            });
            browser.execute(TOUCH_EVERYTHING, vec![]).await.expect("touch");
            tokio::time::sleep(Duration::from_millis(200)).await;
            // A link clicked above may have left the page; come back to check it.
            if !browser.current_url().await.expect("url").starts_with(&url) {
                browser.goto(&url).await.expect("back to the message");
            }
            let evidence = browser
                .execute(EVIDENCE_OF_SCRIPT, vec![json!(!query.is_empty())])
                .await
                .expect("check");
            assert_eq!(evidence, json!([]), "{stem}{query}: {evidence}");
            let headers_markup = browser
                .execute(
                    "return ['#subject','#from','#to'].map(s => document.querySelector(s)).filter(e => e && e.children.length > 0).length;",
                    vec![],
                )
                .await
                .expect("headers");
            assert_eq!(headers_markup, json!(0), "{stem}: headers are shown as text");
        }
        browser.screenshot(&format!("hostile-{stem}")).await.expect("screenshot");

        // Attachments never render as pages, and embedded SVG is not served.
        pages.set_cookie("__Host-sealpost-session", &browser_session_cookie(&browser).await);
        for index in 0..4 {
            let page = pages
                .get(&format!("/messages/{}/attachments/{index}", stored.message_id))
                .await
                .expect("attachment");
            if page.status == 404 {
                break;
            }
            assert_eq!(page.status, 200, "{stem} attachment {index}");
            let disposition = page.header("content-disposition").unwrap_or_default();
            assert!(disposition.starts_with("attachment;"), "{stem}: {disposition}");
            assert!(!disposition.contains(['\r', '\n', '/']), "{stem}: {disposition}");
            assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
            assert!(
                page.header("content-security-policy").is_some_and(|csp| csp.contains("sandbox"))
            );
        }
    }
    for content_id in ["logo@attacker.invalid", "chart@attacker.invalid"] {
        let svg_id = {
            let raw = std::fs::read(corpus.join("svg-tricks.eml")).expect("fixture");
            app.store_message(&sender, &["alice@example.test"], raw).await.message_id
        };
        let page = pages
            .get(&format!("/messages/{svg_id}/inline/{content_id}"))
            .await
            .expect("inline image");
        let served_as = page.header("content-type").unwrap_or_default().to_owned();
        assert!(
            page.status == 404
                || (served_as != "image/svg+xml"
                    && page.header("x-content-type-options") == Some("nosniff")),
            "{content_id}: {} {served_as}",
            page.status
        );
    }
    browser.close().await.expect("close");
}

/// The session cookie the browser holds (HttpOnly: read through WebDriver).
async fn browser_session_cookie(browser: &Browser) -> String {
    browser
        .client
        .get_named_cookie("__Host-sealpost-session")
        .await
        .expect("the browser's session cookie")
        .value()
        .to_owned()
}
