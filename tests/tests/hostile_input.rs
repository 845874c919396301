//! Hostile input at every door: header injection, attachment names that try
//! to leave their folder, enormous and deeply nested messages, invalid
//! UTF-8, oversized uploads and forms of endless fields. Each is answered
//! with an error that says what to do, or handled whole and safely; nothing
//! is ever stored half-way.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealpost_harness::{ApiResponse, CapturedMail, PageClient, TestApp, TestUser, plain_upload};
use sealpost_proto::api::{ErrorBody, ErrorCode, StoredMessage};
use sealpost_server::store::Store;

const PASSWORD: &str = "correct horse battery staple";
const SENDER: &str = "sender@example.test";

/// The store under `app`, opened a second time to look at what a request
/// left behind (the server's own handle is not reachable from a test).
async fn store_of(app: &TestApp) -> Arc<dyn Store> {
    let url = match &app.postgres {
        Some(postgres) => postgres.url(),
        None => format!("sqlite://{}", app.data_dir.join("sealpost.db").display()),
    };
    sealpost_server::store::open(&url, 2).await.expect("the test server's store")
}

/// What the sender has stored, and what the outbox holds, all told.
async fn stored_counts(app: &TestApp, sender: &str) -> (usize, u64) {
    let store = store_of(app).await;
    let account = store.account_by_email(sender).await.expect("account").expect("the sender");
    let sent = store.sent_messages(&account.id, 1000).await.expect("sent messages").len();
    let queued: u64 = store.outbox_counts().await.expect("outbox").iter().map(|(_, n)| n).sum();
    (sent, queued)
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .flat_map(|entry| {
            if entry.path().is_dir() { files_under(&entry.path()) } else { vec![entry.path()] }
        })
        .collect()
}

fn assert_error(response: &ApiResponse, status: u16, code: ErrorCode, context: &str) -> String {
    assert_eq!(response.status, status, "{context}: {}", response.text());
    let body: ErrorBody = response.json();
    assert_eq!(body.code, code, "{context}: {}", body.message);
    assert!(body.message.len() > 20, "{context}: the message says too little: {}", body.message);
    body.message
}

/// A server whose sender is a member with a password (for the Secure
/// Message Center) and a device (for the API).
async fn app_with_sender(
    configure: impl FnOnce(&mut sealpost_server::settings::Settings),
) -> (TestApp, TestUser) {
    let app = TestApp::spawn_with(|settings| {
        settings.webmail.member_domains = vec!["example.test".into()];
        configure(settings);
    })
    .await;
    let sender = app.named_user(SENDER, "Sam Sender").await;
    (app, sender)
}

/// A browser signed in to the Secure Message Center as the sender.
async fn signed_in_sender(app: &TestApp) -> PageClient {
    let browser = PageClient::new(&app.base_url, &app.cert_pem).expect("page client");
    browser.get("/signin").await.expect("sign-in page");
    let csrf = browser.csrf();
    let page = browser
        .post("/signin", &[("csrf", &csrf), ("email", SENDER), ("password", PASSWORD)])
        .await
        .expect("sign in");
    assert_eq!(page.status, 303, "sign-in refused: {}", page.body);
    browser
}

/// Uploads `mime` to `recipients`, notified by the server, expecting it stored.
async fn upload_notified(app: &TestApp, sender: &TestUser, to: &[&str], mime: &[u8]) -> String {
    let stored: StoredMessage = app.store_and_notify(sender.token(), to, mime.to_vec()).await;
    stored.message_id
}

/// The notification of message `id` mailed to `recipient`.
async fn notification_for(app: &TestApp, recipient: &str, id: &str) -> CapturedMail {
    app.mail
        .wait_for(recipient, Duration::from_secs(20), |mail| {
            String::from_utf8_lossy(&mail.data).contains(id)
        })
        .await
        .unwrap_or_else(|| panic!("no notification of {id} reached {recipient}"))
}

/// The header block of `raw` as its field names, failing on any line end
/// that is not CRLF (a bare CR or LF is where an injected field would hide).
fn header_field_names(raw: &[u8]) -> Vec<String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block") + 2;
    let header = &raw[..end];
    for (at, &byte) in header.iter().enumerate() {
        let lone_cr = byte == b'\r' && header.get(at + 1) != Some(&b'\n');
        let lone_lf = byte == b'\n' && (at == 0 || header[at - 1] != b'\r');
        assert!(
            !lone_cr && !lone_lf,
            "a bare line break in the header at byte {at}:\n{}",
            String::from_utf8_lossy(header)
        );
    }
    String::from_utf8_lossy(header)
        .split("\r\n")
        .filter(|line| !line.is_empty() && !line.starts_with([' ', '\t']))
        .map(|line| {
            let (name, _) = line.split_once(':').unwrap_or_else(|| {
                panic!(
                    "a header line without a name: {line:?} in\n{}",
                    String::from_utf8_lossy(header)
                )
            });
            name.to_ascii_lowercase()
        })
        .collect()
}

/// The fields a notification the server writes may carry.
const NOTIFICATION_FIELDS: &[&str] = &[
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "x-sealpost-version",
    "x-sealpost-message-id",
    "x-sealpost-origin",
    "x-sealpost-recipient",
    "x-sealpost-content-sha256",
    "x-sealpost-key-id",
    "x-sealpost-signature",
];

/// Checks the notification `mail` for one recipient: only the fields a
/// notification has, each once, none of its decoded values with a control
/// character, the envelope to that recipient alone, and it still verifies.
fn assert_clean_notification(mail: &CapturedMail, recipient: &str, case: &str) {
    let names = header_field_names(&mail.data);
    let text = String::from_utf8_lossy(&mail.data);
    for name in &names {
        assert!(
            NOTIFICATION_FIELDS.contains(&name.as_str()),
            "{case}: injected field {name:?}:\n{text}"
        );
    }
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{case}: a repeated field:\n{text}");
    assert_eq!(mail.rcpt_to, [recipient], "{case}: the envelope grew recipients");
    let parsed = mail_parser::MessageParser::default().parse(&mail.data).expect("a parsable email");
    let mut decoded: Vec<String> = vec![parsed.subject().unwrap_or_default().to_owned()];
    for list in [parsed.from(), parsed.to(), parsed.cc()].into_iter().flatten() {
        for address in list.iter() {
            decoded.extend(address.name().map(str::to_owned));
            decoded.extend(address.address().map(str::to_owned));
        }
    }
    decoded.extend(parsed.message_id().map(str::to_owned));
    for value in decoded {
        assert!(!value.contains(char::is_control), "{case}: a control character in {value:?}");
    }
    let notification =
        sealpost_proto::notification::parse(&mail.data).expect("the notification still parses");
    assert_eq!(notification.fields.recipient, recipient, "{case}");
}

mod header_injection {
    use super::*;

    /// A message whose every header a notification repeats carries a line
    /// break, raw or decoded from an encoded word.
    fn injecting_messages() -> Vec<(&'static str, Vec<u8>)> {
        let tail = "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n";
        let with = |head: &str| format!("{head}{tail}").into_bytes();
        vec![
            (
                "encoded-word CR/LF in the subject",
                with(
                    "From: sender@example.test\r\nTo: alice@example.test\r\n\
                      Subject: =?utf-8?q?Results=0D=0ABcc:_evil@attacker.test=0D=0A=0D=0Abody?=\r\n",
                ),
            ),
            (
                "encoded-word CR/LF in the sender's display name",
                with(
                    "From: =?utf-8?q?Sam=0D=0ABcc:_evil@attacker.test?= <sender@example.test>\r\n\
                      To: alice@example.test\r\nSubject: name\r\n",
                ),
            ),
            (
                "encoded-word CR/LF in To and Cc display names",
                with(
                    "From: sender@example.test\r\n\
                      To: =?utf-8?q?Alice=0D=0ABcc:_evil@attacker.test?= <alice@example.test>\r\n\
                      Cc: =?utf-8?b?Q2Fyb2wNClgtSW5qZWN0ZWQ6IHllcw==?= <carol@example.test>\r\n\
                      Subject: names\r\n",
                ),
            ),
            (
                "a bare CR and a bare LF inside the subject",
                with(
                    "From: sender@example.test\r\nTo: alice@example.test\r\n\
                      Subject: Results\rBcc: evil@attacker.test\nX-Injected: yes\r\n",
                ),
            ),
            (
                "a quoted display name spanning a bare CR",
                with(
                    "From: sender@example.test\r\n\
                      To: \"Alice\rBcc: evil@attacker.test\" <alice@example.test>\r\nSubject: q\r\n",
                ),
            ),
            (
                "CR/LF in the Message-ID and threading ids",
                with(
                    "From: sender@example.test\r\nTo: alice@example.test\r\nSubject: ids\r\n\
                      Message-ID: <=?utf-8?q?a=0D=0ABcc:_evil@attacker.test?=@example.test>\r\n\
                      In-Reply-To: <p=?utf-8?q?=0D=0AX-Injected:_1?=@example.test>\r\n\
                      References: <r1@example.test> <r2\r@example.test>\r\n",
                ),
            ),
            (
                "NUL and other controls in the subject",
                with(
                    "From: sender@example.test\r\nTo: alice@example.test\r\n\
                      Subject: =?utf-8?q?a=00b=07c=1Bd=7Fe?=\r\n",
                ),
            ),
            (
                "the hostile corpus's header-injection message",
                include_bytes!("../fixtures/hostile/header-injection.eml").to_vec(),
            ),
        ]
    }

    #[tokio::test]
    async fn headers_of_an_upload_never_become_fields_of_its_notification() {
        let (app, sender) = app_with_sender(|_| {}).await;
        let recipients = ["alice@example.test", "carol@example.test"];
        for (case, mime) in injecting_messages() {
            let id = upload_notified(&app, &sender, &recipients, &mime).await;
            for recipient in recipients {
                let mail = notification_for(&app, recipient, &id).await;
                assert_clean_notification(&mail, recipient, case);
            }
        }
        let stray: Vec<String> = app
            .mail
            .messages()
            .await
            .into_iter()
            .flat_map(|mail| mail.rcpt_to)
            .filter(|to| !recipients.contains(&to.as_str()) && to != SENDER)
            .collect();
        assert!(stray.is_empty(), "mail went to {stray:?}");
    }

    #[tokio::test]
    async fn names_with_line_breaks_are_refused_at_every_door() {
        let (app, sender) = app_with_sender(|_| {}).await;
        for name in [
            "Sam\r\nBcc: evil@attacker.test",
            "Sam\nX: y",
            "Sam\rX: y",
            "Sam\u{0}",
            "Sam\u{85}Bcc: evil@attacker.test",
        ] {
            let account = serde_json::json!({
                "email": "newcomer@example.test", "code": "123456",
                "password": PASSWORD, "display_name": name,
            });
            let response =
                app.api.post_json("/api/v1/accounts", &account, None).await.expect("request");
            assert_error(&response, 400, ErrorCode::BadRequest, &format!("account name {name:?}"));
            let device = serde_json::json!({
                "email": SENDER, "device_name": name, "credential": {"password": PASSWORD},
            });
            let response =
                app.api.post_json("/api/v1/devices", &device, None).await.expect("request");
            assert_error(&response, 400, ErrorCode::BadRequest, &format!("device name {name:?}"));
        }

        // Registering from a notification's link in the Secure Message Center.
        let id =
            upload_notified(&app, &sender, &["alice@example.test"], b"Subject: hi\r\n\r\nhi").await;
        let mail = notification_for(&app, "alice@example.test", &id).await;
        let link = sealpost_harness::notification_link(&mail.data).expect("a link");
        let token = link.split_once("?t=").expect("a token").1.to_owned();
        let alice = PageClient::new(&app.base_url, &app.cert_pem).expect("page client");
        for name in ["Alice\r\nBcc: evil@attacker.test", "Alice\u{0}", "Alice\u{2028}\nX"] {
            assert_eq!(alice.get(&link).await.expect("the link").status, 200);
            let csrf = alice.csrf();
            let page = alice
                .post(
                    "/register",
                    &[
                        ("csrf", &csrf),
                        ("message", &id),
                        ("t", &token),
                        ("name", name),
                        ("password", PASSWORD),
                        ("accept", "on"),
                    ],
                )
                .await
                .expect("register");
            assert!(page.body.contains("on one line"), "{name:?}: no explanation:\n{}", page.body);
            assert!(
                page.set_cookies().iter().all(|c| !c.contains("session")),
                "{name:?}: signed in"
            );
        }
        let store = store_of(&app).await;
        let account = store.account_by_email("alice@example.test").await.expect("lookup");
        assert!(account.is_none(), "an account was made with a refused name: {account:?}");

        // The Secure Message Center's compose form: a subject is one line.
        let browser = signed_in_sender(&app).await;
        let csrf = browser.csrf();
        for subject in ["Results\r\nBcc: evil@attacker.test", "Results\nX: y", "a\u{0}b"] {
            let page = browser
                .post_multipart(
                    "/compose",
                    &[
                        ("csrf", &csrf),
                        ("to", "alice@example.test"),
                        ("subject", subject),
                        ("body", "x"),
                    ],
                    &[],
                )
                .await
                .expect("compose");
            assert_eq!(page.status, 400, "{subject:?}");
            assert!(page.body.contains("one line"), "{subject:?}: no explanation:\n{}", page.body);
        }
        let (sent, _) = stored_counts(&app, &sender.email).await;
        assert_eq!(sent, 1, "a refused form stored something");
    }

    /// Addresses that try to add a recipient or a header.
    const HOSTILE_ADDRESSES: &[&str] = &[
        "alice@example.test\r\nBcc: evil@attacker.test",
        "alice@example.test\nBcc: evil@attacker.test",
        "alice@example.test\rBcc: evil@attacker.test",
        "alice@example.test>, <evil@attacker.test",
        "alice@example.test,evil@attacker.test",
        "alice@example.test;evil@attacker.test",
        "Alice <alice@example.test>",
        "\"alice\r\n\"@example.test",
        "alice@example.test\u{0}",
        "alice@example.test\u{2028}evil@attacker.test",
        "alice@example.test%0d%0abcc:evil@attacker.test",
        "alice@[127.0.0.1]",
        "alice@example.test\r\n.\r\nMAIL FROM:<evil@attacker.test>",
    ];

    #[tokio::test]
    async fn recipient_addresses_that_smuggle_lines_or_lists_are_refused() {
        let (app, sender) = app_with_sender(|s| {
            s.admin.emails = vec![SENDER.into()];
        })
        .await;
        for address in HOSTILE_ADDRESSES {
            let response = app
                .api
                .upload_with(
                    sender.token(),
                    &["bob@example.test", address],
                    b"Subject: x\r\n\r\nx".to_vec(),
                    true,
                )
                .await
                .expect("request");
            assert_error(
                &response,
                400,
                ErrorCode::InvalidEmail,
                &format!("upload to {address:?}"),
            );

            let response = app
                .api
                .post_json(
                    "/api/v1/verification-codes",
                    &serde_json::json!({ "email": address }),
                    None,
                )
                .await
                .expect("request");
            assert_error(&response, 400, ErrorCode::InvalidEmail, &format!("code for {address:?}"));

            let csv = format!("email,name\r\n\"{}\",Someone\r\n", address.replace('"', "\"\""));
            let response = app.import_directory(&sender, &csv).await;
            assert_eq!(response.status, 200, "import of {address:?}: {}", response.text());
            let report: sealpost_proto::api::DirectoryImport = response.json();
            assert_eq!((report.added, report.rejected.len()), (0, 1), "import of {address:?}");
        }
        // A name with a line break in the directory never becomes a header.
        let response = app
            .import_directory(
                &sender,
                "email,name\r\nann@example.org,\"Ann\r\nBcc: evil@attacker.test\"\r\n",
            )
            .await;
        let report: sealpost_proto::api::DirectoryImport = response.json();
        let listed: sealpost_proto::api::DirectoryPage = app
            .api
            .get("/api/v1/admin/directory", Some(sender.token()))
            .await
            .expect("request")
            .json();
        for entry in &listed.entries {
            assert!(
                entry.name.as_deref().is_none_or(|name| !name.contains(char::is_control)),
                "a directory name keeps a line break: {entry:?} ({report:?})"
            );
        }
        let (sent, queued) = stored_counts(&app, &sender.email).await;
        assert_eq!((sent, queued), (0, 0), "a refused upload stored something");
        let mail_to_attacker = app
            .mail
            .messages()
            .await
            .into_iter()
            .any(|mail| mail.rcpt_to.iter().any(|to| to.contains("attacker")));
        assert!(!mail_to_attacker, "mail reached the attacker");
    }
}

mod attachment_names {
    use super::*;

    /// Names a sender may give attachments, each written in RFC 2231 form
    /// so that any byte gets through the MIME layer.
    fn hostile_names() -> Vec<String> {
        let mut names: Vec<String> = [
            "../../etc/passwd",
            "..\\..\\Windows\\System32\\drivers\\etc\\hosts",
            "/etc/cron.d/pwned",
            "C:\\Windows\\win.ini",
            "\\\\server\\share\\payload.exe",
            "a\u{0}b.txt",
            "report\r\nContent-Type: text/html.pdf",
            "invoice\u{202e}fdp.exe",
            "safe\u{2066}name\u{2069}.txt",
            "CON",
            "nul.txt",
            "Com1.pdf",
            "LPT9.tar.gz",
            "aux",
            "..",
            "...",
            ".htaccess",
            "trailing dots. . .",
            "stream.txt:hidden.exe",
            "",
        ]
        .map(str::to_owned)
        .to_vec();
        names.push(format!("{}.pdf", "a".repeat(1000)));
        names.push(format!("{}.pdf", "é".repeat(300)));
        names.push(format!("{}.pdf", "😀".repeat(100)));
        names
    }

    fn rfc2231(name: &str) -> String {
        name.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    fn message_with_attachments(names: &[String]) -> Vec<u8> {
        let mut mime = String::from(
            "From: sender@example.test\r\nTo: alice@example.test\r\nSubject: names\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nattached\r\n",
        );
        for (index, name) in names.iter().enumerate() {
            mime.push_str(&format!(
                "--b\r\nContent-Type: application/octet-stream\r\n\
                 Content-Disposition: attachment; filename*=utf-8''{}\r\n\r\ncontent {index}\r\n",
                rfc2231(name)
            ));
        }
        mime.push_str("--b--\r\n");
        mime.into_bytes()
    }

    const RESERVED: &[&str] = &[
        "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
        "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
    ];

    /// What every file system and every file manager takes as one plain,
    /// honestly named file in the folder it is saved to.
    fn assert_safe_name(name: &str, original: &str) {
        let context = format!("{original:?} became {name:?}");
        assert!(!name.is_empty() && name.len() <= 240, "{context}: empty or too long");
        assert!(
            !name.contains(['/', '\\', ':', '*', '?', '"', '<', '>', '|']),
            "{context}: a separator or reserved character"
        );
        assert!(!name.contains(char::is_control), "{context}: a control character");
        let bidi = |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        assert!(!name.contains(bidi), "{context}: a direction override");
        assert!(
            !name.starts_with('.') && !name.ends_with(['.', ' ']),
            "{context}: hidden or trimmed"
        );
        let stem = name.split('.').next().unwrap_or_default().trim_end().to_ascii_lowercase();
        assert!(!RESERVED.contains(&stem.as_str()), "{context}: a Windows device name");
        if original.ends_with(".pdf") {
            assert!(name.ends_with(".pdf"), "{context}: lost its extension");
        }
    }

    #[tokio::test]
    async fn attachment_names_are_made_safe_for_downloads_and_for_saving_to_disk() {
        let (app, sender) = app_with_sender(|_| {}).await;
        let names = hostile_names();
        let mime = message_with_attachments(&names);
        let stored = app.store_message(&sender, &["alice@example.test"], mime.clone()).await;

        // The desktop agent saves each attachment into one folder: every
        // file lands inside it, with the attachment's bytes.
        let opened = sealpost_agent::reader::OpenedMessage::parse(&mime);
        assert_eq!(opened.attachments.len(), names.len(), "every attachment is listed");
        let folder = tempfile::tempdir().expect("a download folder");
        let downloads = folder.path().join("Downloads");
        for (index, original) in names.iter().enumerate() {
            let saved = sealpost_agent::reader::save_attachment(&mime, index, &downloads)
                .unwrap_or_else(|error| panic!("{original:?} not saved: {error}"));
            assert_eq!(saved.parent(), Some(downloads.as_path()), "{original:?} left the folder");
            let name = saved.file_name().and_then(|n| n.to_str()).expect("a UTF-8 name");
            assert_safe_name(name, original);
            assert_eq!(
                std::fs::read(&saved).expect("saved file"),
                format!("content {index}").as_bytes()
            );
        }
        let everything: Vec<_> = files_under(folder.path());
        assert_eq!(everything.len(), names.len(), "files outside the folder: {everything:?}");

        // The Secure Message Center offers each one as a download under the
        // same safe name, in both forms of Content-Disposition.
        let browser = signed_in_sender(&app).await;
        let page = browser.get(&format!("/messages/{}", stored.message_id)).await.expect("message");
        assert_eq!(page.status, 200, "{}", page.body);
        for (index, original) in names.iter().enumerate() {
            let download = browser
                .get(&format!("/messages/{}/attachments/{index}", stored.message_id))
                .await
                .expect("download");
            assert_eq!(download.status, 200, "{original:?}");
            let disposition = download.header("content-disposition").expect("a disposition");
            assert!(disposition.starts_with("attachment;"), "{original:?}: {disposition}");
            let ascii = disposition
                .split("filename=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("an ASCII file name");
            assert_safe_name(ascii, original);
            let encoded = disposition.split("filename*=UTF-8''").nth(1).expect("a UTF-8 file name");
            let decoded = percent_decode(encoded);
            assert_safe_name(&decoded, original);
            assert_eq!(download.bytes, format!("content {index}").as_bytes());
        }
    }

    fn percent_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            if bytes[at] == b'%' && at + 2 < bytes.len() + 1 {
                let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                at += 3;
            } else {
                out.push(bytes[at]);
                at += 1;
            }
        }
        String::from_utf8(out).expect("UTF-8 name")
    }

    #[tokio::test]
    async fn attachments_written_in_the_secure_message_center_keep_safe_names() {
        let (app, sender) = app_with_sender(|_| {}).await;
        let browser = signed_in_sender(&app).await;
        let csrf = browser.csrf();
        let names = hostile_names();
        let files: Vec<(&str, &str, &str, &[u8])> = names
            .iter()
            .filter(|name| !name.is_empty() && !name.contains(['\r', '\n', '\0']))
            .map(|name| ("attachment", name.as_str(), "application/octet-stream", &b"bytes"[..]))
            .collect();
        let page = browser
            .post_multipart(
                "/compose",
                &[
                    ("csrf", &csrf),
                    ("to", "alice@example.test"),
                    ("subject", "files"),
                    ("body", "x"),
                ],
                &files,
            )
            .await
            .expect("compose");
        assert_eq!(page.status, 303, "{}", page.body);
        let (sent, _) = stored_counts(&app, &sender.email).await;
        assert_eq!(sent, 1);
        let id = page
            .location()
            .and_then(|l| l.split('/').nth(2))
            .and_then(|l| l.split('?').next())
            .expect("id");
        let content = app.content(Some(sender.token()), id).await;
        assert_eq!(content.status, 200);
        let opened = sealpost_agent::reader::OpenedMessage::parse(&content.body);
        assert_eq!(opened.attachments.len(), files.len());
        for (attachment, (_, original, _, _)) in opened.attachments.iter().zip(&files) {
            assert_safe_name(&attachment.name, original);
        }
    }
}

mod enormous_input {
    use super::*;

    fn folded_subject(bytes: usize) -> String {
        let word = "confidential ";
        let mut subject = String::from("Subject:");
        let mut line = 0;
        while subject.len() < bytes {
            if line > 60 {
                subject.push_str("\r\n");
                line = 0;
            }
            subject.push(' ');
            subject.push_str(word.trim_end());
            line += word.len();
        }
        subject.push_str("\r\n");
        subject
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut mime = String::from(
            "From: sender@example.test\r\nTo: alice@example.test\r\nSubject: nested\r\nMIME-Version: 1.0\r\n",
        );
        for level in 0..depth {
            mime.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"n{level}\"\r\n\r\n--n{level}\r\n"
            ));
        }
        mime.push_str("Content-Type: text/plain\r\n\r\ndeepest text\r\n");
        for level in (0..depth).rev() {
            mime.push_str(&format!("--n{level}--\r\n"));
        }
        mime.into_bytes()
    }

    /// Messages that are huge or deep where they should be small.
    fn enormous_messages() -> Vec<(&'static str, Vec<u8>)> {
        let head = "From: sender@example.test\r\nTo: alice@example.test\r\n";
        let body = "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nthe body\r\n";
        let many_fields: String =
            (0..10_000).map(|n| format!("X-Filler-{n}: value {n}\r\n")).collect();
        let long_line = format!("Subject: {}\r\n", "x".repeat(1024 * 1024));
        let many_recipients: String = format!(
            "Cc: {}\r\n",
            (0..20_000)
                .map(|n| format!("person{n}@example.test"))
                .collect::<Vec<_>>()
                .join(",\r\n ")
        );
        let many_references: String = format!(
            "References: {}\r\n",
            (0..50_000).map(|n| format!("<ref{n}@example.test>")).collect::<Vec<_>>().join("\r\n ")
        );
        vec![
            (
                "a 1 MB folded subject",
                format!("{head}{}{body}", folded_subject(1024 * 1024)).into_bytes(),
            ),
            ("a 1 MB subject on one line", format!("{head}{long_line}{body}").into_bytes()),
            (
                "10,000 header fields",
                format!("{head}Subject: many\r\n{many_fields}{body}").into_bytes(),
            ),
            (
                "20,000 Cc addresses",
                format!("{head}Subject: cc\r\n{many_recipients}{body}").into_bytes(),
            ),
            (
                "50,000 references",
                format!("{head}Subject: refs\r\n{many_references}{body}").into_bytes(),
            ),
            ("MIME nested 1,000 deep", nested(1000)),
            ("MIME nested 20,000 deep", nested(20_000)),
            (
                "a header block with no end",
                format!("{head}Subject: {}", "y".repeat(300_000)).into_bytes(),
            ),
        ]
    }

    #[tokio::test]
    async fn enormous_headers_and_deep_mime_are_stored_whole_and_read_safely() {
        let (app, sender) = app_with_sender(|s| s.messages.max_size = 4 * 1024 * 1024).await;
        let browser = signed_in_sender(&app).await;
        for (case, mime) in enormous_messages() {
            let started = Instant::now();
            let id = upload_notified(&app, &sender, &["alice@example.test"], &mime).await;
            let mail = notification_for(&app, "alice@example.test", &id).await;
            assert_clean_notification(&mail, "alice@example.test", case);
            assert!(
                mail.data.len() < 64 * 1024,
                "{case}: a notification of {} bytes repeats too much",
                mail.data.len()
            );
            let content = app.content(Some(sender.token()), &id).await;
            assert_eq!(content.body, mime, "{case}: the content is not stored whole");
            let page = browser.get(&format!("/messages/{id}")).await.expect("message page");
            assert_eq!(page.status, 200, "{case}: {}", page.body);
            let mailbox = browser.get("/mailbox").await.expect("mailbox");
            assert_eq!(mailbox.status, 200, "{case}");
            assert!(
                mailbox.body.len() < 2 * 1024 * 1024,
                "{case}: the mailbox page grew to {}",
                mailbox.body.len()
            );
            // The desktop app reads the same message for display.
            let opened = sealpost_agent::reader::OpenedMessage::parse(&mime);
            assert!(opened.from.contains(SENDER), "{case}: read as {:?}", opened.from);
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{case}: took {:?}",
                started.elapsed()
            );
        }
    }
}

mod invalid_utf8 {
    use super::*;

    #[tokio::test]
    async fn invalid_utf8_in_headers_and_bodies_is_shown_and_in_json_is_refused() {
        let (app, sender) = app_with_sender(|_| {}).await;
        let browser = signed_in_sender(&app).await;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "raw invalid bytes in subject, names and body",
                b"From: Sam \xff\xfe <sender@example.test>\r\nTo: Al\xc3\x28ce <alice@example.test>\r\n\
Subject: R\xe9sultats \xf0\x28\x8c\x28 \xc0\xaf\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nbody \xff\xfe\xfd \xed\xa0\x80\r\n"
                    .to_vec(),
            ),
            (
                "invalid UTF-8 inside encoded words and an HTML body",
                b"From: =?utf-8?q?S=FF=FEam?= <sender@example.test>\r\nTo: alice@example.test\r\n\
Subject: =?utf-8?b?/w==?= =?utf-8?q?=C0=AF=ED=A0=80?=\r\nMIME-Version: 1.0\r\n\
Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
<p>=FF=FE=00 text</p>\r\n"
                    .to_vec(),
            ),
            (
                "a charset that lies and one that does not exist",
                b"From: sender@example.test\r\nTo: alice@example.test\r\n\
Subject: =?x-unknown?q?abc=FF?= =?utf-16?b?2D0=?=\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-16\r\n\r\n\xff\r\n"
                    .to_vec(),
            ),
        ];
        for (case, mime) in cases {
            let id = upload_notified(&app, &sender, &["alice@example.test"], &mime).await;
            let mail = notification_for(&app, "alice@example.test", &id).await;
            assert_clean_notification(&mail, "alice@example.test", case);
            let page = browser.get(&format!("/messages/{id}")).await.expect("message page");
            assert_eq!(page.status, 200, "{case}: {}", page.body);
            assert!(std::str::from_utf8(&page.bytes).is_ok(), "{case}: the page is not UTF-8");
            let content = app.content(Some(sender.token()), &id).await;
            assert_eq!(content.body, mime, "{case}: the content changed");
        }

        // JSON with bytes that are not UTF-8 is explained, never half-read.
        let http = app.api.http();
        let json_cases: [(&str, &[u8]); 4] = [
            ("/api/v1/verification-codes", b"{\"email\":\"a\xff@example.test\"}"),
            ("/api/v1/accounts", b"{\"email\":\"a@example.test\",\"code\":\"1\xc0\xaf\",\"password\":\"x\"}"),
            ("/api/v1/devices", b"{\"email\":\"a@example.test\",\"device_name\":\"\xed\xa0\x80\",\"credential\":{\"code\":\"1\"}}"),
            ("/api/v1/masked-mail", b"{\"to\":[\"\xfe\"]}"),
        ];
        for (path, body) in json_cases {
            let request = http
                .post(app.api.url(path))
                .bearer_auth(sender.token())
                .header("content-type", "application/json")
                .body(body.to_vec());
            let response = app.api.send(request).await.expect("request");
            assert_error(
                &response,
                400,
                ErrorCode::BadRequest,
                &format!("{path} with invalid UTF-8"),
            );
        }
        let form = reqwest::multipart::Form::new()
            .part(
                "metadata",
                reqwest::multipart::Part::bytes(
                    b"{\"recipients\":[\"a\xff@example.test\"]}".to_vec(),
                ),
            )
            .part("content", reqwest::multipart::Part::bytes(b"Subject: x\r\n\r\nx".to_vec()));
        let response = app.api.upload_form(sender.token(), form).await.expect("request");
        assert_error(&response, 400, ErrorCode::BadRequest, "upload metadata with invalid UTF-8");

        // A compose form whose field values and file name are not UTF-8.
        let csrf = browser.csrf();
        let boundary = "utf8-boundary";
        let mut body = Vec::new();
        for (name, value) in [("csrf", csrf.as_bytes()), ("to", b"alice@example.test")] {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(value);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"subject\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(b"R\xe9sultats \xff\r\n");
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\""
            )
            .as_bytes(),
        );
        body.extend_from_slice(
            b"r\xe9sum\xe9\xff.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n",
        );
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let page = browser
            .post_raw("/compose", &format!("multipart/form-data; boundary={boundary}"), body)
            .await
            .expect("compose");
        // Read as UTF-8 with replacement characters, and sent.
        assert_eq!(page.status, 303, "{}", page.body);
        let location = page.location().expect("the sent message").to_owned();
        let id = location.trim_start_matches("/messages/").split('?').next().expect("id");
        let content = app.content(Some(sender.token()), id).await;
        let opened = sealpost_agent::reader::OpenedMessage::parse(&content.body);
        assert_eq!(opened.subject, "R\u{fffd}sultats \u{fffd}");
        assert_eq!(opened.attachments.len(), 1);
        // A file name that is not UTF-8 is no name the form can read: the
        // file keeps its bytes and type under a plain name.
        assert_eq!(opened.attachments[0].name, "attachment", "{:?}", opened.attachments);
        assert_eq!(opened.attachments[0].content_type, "application/pdf");
        let (sent, _) = stored_counts(&app, &sender.email).await;
        assert_eq!(sent, 4, "only the messages answered as sent are stored");
    }
}

mod oversized {
    use super::*;

    const LIMIT: u64 = 300_000;

    #[tokio::test]
    async fn oversized_uploads_are_refused_with_413_and_leave_nothing_anywhere() {
        let (app, sender) = app_with_sender(|s| s.messages.max_size = LIMIT).await;
        let metadata = serde_json::to_vec(&{
            let mut m = plain_upload(&["alice@example.test"]);
            m.send_notifications = true;
            m
        })
        .expect("json");
        // Just over, far over (past the inline size, so through the object
        // store), and with a Content-Length that claims less than is sent.
        for size in [LIMIT as usize + 1, 4 * LIMIT as usize, 40 * LIMIT as usize] {
            let mut mime = b"From: sender@example.test\r\nSubject: big\r\n\r\n".to_vec();
            mime.resize(size, b'x');
            let form = reqwest::multipart::Form::new()
                .part("metadata", reqwest::multipart::Part::bytes(metadata.clone()))
                .part("content", reqwest::multipart::Part::bytes(mime));
            let response = app.api.upload_form(sender.token(), form).await.expect("request");
            let message =
                assert_error(&response, 413, ErrorCode::PayloadTooLarge, &format!("{size} bytes"));
            assert!(message.contains("shrink"), "the message says what to do: {message}");
            if size < 2 * 1024 * 1024 {
                assert!(message.contains("300000"), "the message names the limit: {message}");
            }
        }

        // The same through the Secure Message Center's compose form.
        let browser = signed_in_sender(&app).await;
        let csrf = browser.csrf();
        let big = vec![b'z'; LIMIT as usize + 1];
        let page = browser
            .post_multipart(
                "/compose",
                &[("csrf", &csrf), ("to", "alice@example.test"), ("subject", "big"), ("body", "x")],
                &[("attachment", "big.bin", "application/octet-stream", &big)],
            )
            .await
            .expect("compose");
        assert_eq!(page.status, 413, "{}", page.body);
        assert!(page.body.contains("300 KB"), "the page names the limit:\n{}", page.body);
        let halves = vec![b'h'; LIMIT as usize / 2 + 1];
        let page = browser
            .post_multipart(
                "/compose",
                &[("csrf", &csrf), ("to", "alice@example.test"), ("subject", "big"), ("body", "x")],
                &[
                    ("attachment", "one.bin", "application/octet-stream", &halves),
                    ("attachment", "two.bin", "application/octet-stream", &halves),
                ],
            )
            .await
            .expect("compose");
        assert_eq!(page.status, 413, "two halves over the limit: {}", page.body);

        assert_eq!(
            stored_counts(&app, &sender.email).await,
            (0, 0),
            "a refused upload was recorded"
        );
        let store = store_of(&app).await;
        let received = store.received_messages("alice@example.test", 10).await.expect("received");
        assert!(received.is_empty(), "the recipient sees a refused message");
        let leftovers = files_under(&app.data_dir.join("messages"));
        assert!(leftovers.is_empty(), "refused uploads left content: {leftovers:?}");
        app.outbox.step().await.expect("outbox step");
        let notified =
            app.mail.messages().await.into_iter().any(|m| m.rcpt_to == ["alice@example.test"]);
        assert!(!notified, "a refused upload was notified");
    }

    /// A `multipart/form-data` body of `parts` as (name, file name, bytes),
    /// written out whole: what any client can send, however many parts.
    fn multipart_body(parts: &[(String, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
        let boundary = "hostile-form-boundary";
        let mut body = Vec::new();
        for (name, file_name, bytes) in parts {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"")
                    .as_bytes(),
            );
            if let Some(file_name) = file_name {
                body.extend_from_slice(
                    format!("; filename=\"{file_name}\"\r\nContent-Type: text/plain").as_bytes(),
                );
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        (format!("multipart/form-data; boundary={boundary}"), body)
    }

    #[tokio::test]
    async fn forms_with_endless_fields_are_answered_without_storing_anything() {
        let (app, sender) = app_with_sender(|s| s.messages.max_size = 4 * 1024 * 1024).await;
        let http = app.api.http();

        // The API takes two parts; the third is refused at once.
        let mut parts: Vec<(String, Option<&str>, &[u8])> = vec![
            ("metadata".into(), None, br#"{"recipients":["alice@example.test"]}"#),
            ("content".into(), None, b"Subject: x\r\n\r\nx"),
        ];
        parts.extend((0..50_000).map(|n| (format!("f{n}"), None, &b"1"[..])));
        let (content_type, body) = multipart_body(&parts);
        let started = Instant::now();
        let request = http
            .post(app.api.url("/api/v1/messages"))
            .bearer_auth(sender.token())
            .header("content-type", content_type)
            .body(body);
        let response = app.api.send(request).await.expect("request");
        assert_error(&response, 400, ErrorCode::BadRequest, "50,000 parts");
        assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());

        // The compose form: fields it does not know, and endless attachments.
        let browser = signed_in_sender(&app).await;
        let csrf = browser.csrf();
        let form_start =
            |subject: &'static [u8]| -> Vec<(String, Option<&'static str>, &'static [u8])> {
                vec![
                    ("to".into(), None, b"alice@example.test"),
                    ("subject".into(), None, subject),
                    ("body".into(), None, b"x"),
                ]
            };
        let mut parts = form_start(b"fields");
        parts.push(("csrf".into(), None, csrf.as_bytes()));
        parts.extend((0..50_000).map(|n| (format!("f{n}"), None, &b"1"[..])));
        let page = {
            let (content_type, body) = multipart_body(&parts);
            browser.post_raw("/compose", &content_type, body).await
        }
        .expect("compose");
        // Fields the form does not know are passed over, one at a time.
        assert_eq!(page.status, 303, "50,000 unknown fields: {}", page.body);

        let mut parts = form_start(b"files");
        parts.push(("csrf".into(), None, csrf.as_bytes()));
        parts.extend((0..20_000).map(|_| ("attachment".to_owned(), Some("a.txt"), &b"a"[..])));
        let started = Instant::now();
        let page = {
            let (content_type, body) = multipart_body(&parts);
            browser.post_raw("/compose", &content_type, body).await
        }
        .expect("compose");
        assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
        // Within the size limit, they are one message, stored whole and
        // shown whole.
        assert_eq!(page.status, 303, "20,000 attachments: {}", page.body);
        let location = page.location().expect("the sent message").to_owned();
        let id = location.trim_start_matches("/messages/").split('?').next().expect("id");
        let content = app.content(Some(sender.token()), id).await;
        let opened = sealpost_agent::reader::OpenedMessage::parse(&content.body);
        assert_eq!(opened.attachments.len(), 20_000);
        let started = Instant::now();
        let shown = browser.get(&location).await.expect("message page");
        assert_eq!(shown.status, 200);
        assert!(started.elapsed() < Duration::from_secs(30), "shown in {:?}", started.elapsed());
        let (sent, _) = stored_counts(&app, &sender.email).await;
        assert_eq!(sent, 2, "the two forms sent, and nothing else, are stored");
    }
}

mod inbound_smtp {
    use super::*;
    use sealpost_harness::DnsServer;
    use sealpost_proto::api::MaskedMail;

    const MEMBER: &str = "marcus@home.example";
    const TIM: &str = "tim@alumni.example";

    /// The fields a relayed copy may carry: its own From and To, and the
    /// content and threading fields of the original.
    const RELAYED_FIELDS: &[&str] = &[
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    ];

    /// What a recognised correspondent's mail server hands the listener,
    /// authenticated by the front MTA, with `hostile` among its headers and
    /// `body` after them.
    fn answer(to: &str, hostile: &str, body: &str) -> Vec<u8> {
        format!(
            "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom={TIM};\r\n \
             dkim=pass header.d=alumni.example; dmarc=pass header.from=alumni.example\r\n\
             From: Tim Baker <{TIM}>\r\nTo: <{to}>\r\nDate: Mon, 30 Nov 2026 09:00:00 +0000\r\n\
             Message-ID: <tim-hostile@alumni.example>\r\n{hostile}\
             MIME-Version: 1.0\r\n{body}"
        )
        .into_bytes()
    }

    fn plain(text: &str) -> String {
        format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n")
    }

    #[tokio::test]
    async fn mail_coming_back_is_relayed_whole_without_injected_fields() {
        let dns = DnsServer::start(&["example", "test"], &[]).await.expect("DNS server");
        let app = TestApp::spawn_with(|s| {
            s.masking.dns_servers = vec![dns.address()];
            s.outbox.worker = false;
            s.inbound.listen = Some("127.0.0.1:0".parse().expect("address"));
            s.masking.domain = Some("reply.example.test".into());
            s.masking.trusted_authserv_ids = vec!["mx.example.test".into()];
            s.webmail.members = vec![MEMBER.into()];
            s.admin.emails = vec!["admin@example.test".into()];
        })
        .await;
        let admin = app.register_agent("admin@example.test", "admin laptop").await;
        app.import_directory(&admin, &format!("email,name\n{TIM},Tim Baker\n"))
            .await
            .expect_status(200)
            .expect("imported");
        let marcus = app.named_user(MEMBER, "Marcus Lee").await;
        let first = MaskedMail {
            to: vec![TIM.into()],
            groups: Vec::new(),
            subject: "Reunion".into(),
            text: "Who is coming?".into(),
        };
        let sent = app.send_masked(marcus.token(), &first).await;
        let masked = sent.recipients[0].reply_address.clone();
        app.outbox.step().await.expect("step");
        for subject in ["Reunion\r\nBcc: evil@attacker.test", "Reunion\nX: y", "Reunion\rX: y"] {
            let request = MaskedMail { subject: subject.into(), ..first.clone() };
            let response = app
                .api
                .post_json("/api/v1/masked-mail", &request, Some(marcus.token()))
                .await
                .expect("request");
            assert_error(
                &response,
                400,
                ErrorCode::BadRequest,
                &format!("masked subject {subject:?}"),
            );
        }

        let nested: String = {
            let mut text = String::new();
            for level in 0..1000 {
                text.push_str(&format!(
                    "Content-Type: multipart/mixed; boundary=\"n{level}\"\r\n\r\n--n{level}\r\n"
                ));
            }
            text.push_str("Content-Type: text/plain\r\n\r\ndeep\r\n");
            for level in (0..1000).rev() {
                text.push_str(&format!("--n{level}--\r\n"));
            }
            text
        };
        let many_fields: String = (0..10_000).map(|n| format!("X-Filler-{n}: {n}\r\n")).collect();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "encoded-word CR/LF in the subject",
                answer(
                    &masked,
                    "Subject: =?utf-8?q?Re=0D=0ABcc:_evil@attacker.test=0D=0A?=\r\n",
                    &plain("one"),
                ),
            ),
            (
                "a bare CR inside the subject",
                answer(&masked, "Subject: Re: x\rBcc: evil@attacker.test\r\n", &plain("two")),
            ),
            (
                "a bare LF inside the subject",
                answer(&masked, "Subject: Re: x\nBcc: evil@attacker.test\r\n", &plain("three")),
            ),
            (
                "a bare CR inside a kept Content-Type",
                answer(
                    &masked,
                    "Subject: ct\r\n",
                    "Content-Type: text/plain;\rBcc: evil@attacker.test\r\n\r\nfour\r\n",
                ),
            ),
            (
                "10,000 header fields",
                answer(&masked, &format!("Subject: many\r\n{many_fields}"), &plain("five")),
            ),
            ("MIME nested 1,000 deep", answer(&masked, "Subject: deep\r\n", &nested)),
            (
                "NUL and CR/LF encoded in the sender's display name",
                String::from_utf8(answer(&masked, "Subject: nul\r\n", &plain("six")))
                    .expect("text")
                    .replace(
                        "From: Tim Baker",
                        "From: =?utf-8?q?Tim=00_Baker=0D=0ABcc:_evil@attacker.test?=",
                    )
                    .into_bytes(),
            ),
            (
                "invalid UTF-8 in the subject and body",
                [
                    answer(&masked, "Subject: R\u{e9}sum\u{e9}\r\n", "").as_slice(),
                    b"Content-Type: text/plain\r\n\r\n\xff\xfe\xc0\xaf\r\n",
                ]
                .concat(),
            ),
        ];
        let mut inputs = 0;
        for (case, email) in cases {
            inputs += 1;
            let before = app.mail.messages().await.len();
            let reply = app
                .deliver_inbound(TIM, &[&masked], &email)
                .await
                .unwrap_or_else(|refused| panic!("{case}: refused: {refused:?}"));
            assert!(reply.starts_with("250"), "{case}: {reply}");
            let sent = app.outbox.step().await.expect("step").sent;
            assert_eq!(sent, 1, "{case}: one relayed copy");
            let relayed = app
                .mail
                .wait_for(MEMBER, Duration::from_secs(10), |mail| {
                    !mail.data.is_empty() && mail.rcpt_to == [MEMBER]
                })
                .await
                .expect("the relayed copy");
            let all = app.mail.messages().await;
            let relayed = all.get(before).unwrap_or(&relayed);
            assert_eq!(relayed.rcpt_to, [MEMBER], "{case}");
            let body = |raw: &[u8]| {
                let at = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a body");
                // Trailing line ends are the transport's to add.
                let body = &raw[at + 4..];
                let end = body.iter().rposition(|b| !b"\r\n".contains(b)).map_or(0, |e| e + 1);
                body[..end].to_vec()
            };
            assert_eq!(body(&relayed.data), body(&email), "{case}: the body was not relayed whole");
            for name in header_field_names(&relayed.data) {
                assert!(
                    RELAYED_FIELDS.contains(&name.as_str()),
                    "{case}: the relayed copy carries {name:?}:\n{}",
                    String::from_utf8_lossy(&relayed.data)
                );
            }
        }
        assert_eq!(inputs, 8);
        let stray = app
            .mail
            .messages()
            .await
            .into_iter()
            .any(|mail| mail.rcpt_to.iter().any(|to| to.contains("attacker")));
        assert!(!stray, "mail reached the attacker");
    }
}
