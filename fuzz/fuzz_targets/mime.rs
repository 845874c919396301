//! Feeds arbitrary bytes, as an uploaded or stored message, to everything
//! that reads MIME: the reader that shows a message (headers, sanitized
//! HTML, attachments and their file names, reply and forward), and the
//! server's notification of an upload (the sender's headers carried over
//! into the email each recipient gets).
//!
//! Beyond "never panics": no script survives sanitizing, every listed
//! attachment can be fetched and its file name is safe, and nothing in the
//! upload can add a header to the notification or change its From or its
//! signed fields.

#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use mail_parser::MessageParser;
use sealpost_proto::notification::{
    Branding, Notification, NotificationSigner, Placeholder, SenderHeaders, compose_email, issue,
    parse,
};
use sealpost_proto::{ContentDigest, MessageId};
use sealpost_reader::{
    Body, HtmlOptions, OpenedMessage, attachment, forward_context, inline_image, reply_context,
    safe_file_name,
};
use sealpost_server::ids::AccountId;
use sealpost_server::notify;
use sealpost_server::store::AccountRecord;
use time::OffsetDateTime;

const SENDER: &str = "sam@clinic.example";
const RECIPIENT: &str = "pat@patients.example";

/// Sanitized HTML as written out: text escaped (no `<` in it), attribute
/// values double-quoted. Checked tag by tag: no element that runs or loads
/// code, no event handler, no URL that runs code.
fn check_html(html: &str) {
    for tag in tags(html) {
        let lower = tag.to_ascii_lowercase();
        let element: String = lower.chars().take_while(|c| !c.is_whitespace()).collect();
        let element = element.trim_start_matches('/');
        assert!(
            ![
                "script", "style", "iframe", "frame", "form", "object", "embed", "base", "meta",
                "link"
            ]
            .contains(&element),
            "<{element}> survived sanitizing: {html}"
        );
        for (name, value) in attributes(&lower) {
            assert!(!name.starts_with("on"), "the handler {name} survived sanitizing: {html}");
            let value = value.trim_start_matches(|c: char| c.is_whitespace() || c.is_control());
            for scheme in ["javascript:", "vbscript:", "data:text/html"] {
                assert!(!value.starts_with(scheme), "{name}={value} survived sanitizing: {html}");
            }
        }
    }
}

/// The inside of each tag (`a href="x"` of `<a href="x">`).
fn tags(html: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let mut quoted = false;
        let end = after
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                c == '>' && !quoted
            })
            .map_or(after.len(), |(at, _)| at);
        found.push(&after[..end]);
        rest = after.get(end + 1..).unwrap_or_default();
    }
    found
}

/// (name, value) of each attribute of a tag's inside; values unquoted.
fn attributes(tag: &str) -> Vec<(&str, &str)> {
    let mut found = Vec::new();
    let mut rest = tag.trim_start_matches(|c: char| !c.is_whitespace());
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return found;
        }
        let name_end = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
        let name = &rest[..name_end];
        rest = &rest[name_end..];
        match rest.strip_prefix("=\"") {
            Some(value) => {
                let end = value.find('"').unwrap_or(value.len());
                found.push((name, &value[..end]));
                rest = value.get(end + 1..).unwrap_or_default();
            }
            None => found.push((name, "")),
        }
    }
}

fn check_file_name(name: &str) {
    assert!(!name.is_empty());
    assert!(name.chars().count() <= 200, "{name:?}");
    assert!(!name.starts_with('.'), "{name:?} is hidden or a directory");
    assert!(!name.ends_with(['.', ' ']), "{name:?}");
    assert!(!name.chars().any(|c| c.is_control() || r#"/\:*?"<>|"#.contains(c)), "{name:?}");
}

/// What the server does with an upload's head: the notification email.
fn check_notification(data: &[u8]) {
    let headers = SenderHeaders::parse(data, SENDER);
    let sender = AccountRecord {
        id: AccountId::from_stored("a1".into()),
        email: SENDER.into(),
        display_name: Some("Sam".into()),
        password_hash: None,
        created_at: OffsetDateTime::UNIX_EPOCH,
    };
    let recipients = [RECIPIENT.to_owned()];
    let now = OffsetDateTime::from_unix_timestamp(1_795_428_000).expect("a time");
    let envelope =
        notify::envelope(&headers, &sender, &recipients, now, "sealpost.example.org", "m1");
    let signer = NotificationSigner::new(SigningKey::from_bytes(&[7; 32]));
    let signed = signer.sign(Notification {
        message_id: MessageId::from_random_bytes([1; 16]),
        origin: "https://sealpost.example.org".into(),
        recipient: RECIPIENT.into(),
        content_sha256: ContentDigest::of(data),
    });
    let branding = Branding { organization_name: "Clinic".into(), ..Branding::default() };
    let placeholder = Placeholder {
        sender_name: sender.display_name.as_deref(),
        sender_address: SENDER,
        read_url: "https://sealpost.example.org/messages/m1",
        branding: &branding,
    };
    let email = compose_email(&envelope, &issue(&signed, &placeholder));
    let reparsed = parse(&email).expect("the notification email parses as one");
    assert_eq!(reparsed, signed, "the upload changed the signed fields");
    let message = MessageParser::default().parse(&email).expect("the email parses");
    let from = message.from().and_then(|from| from.first()).and_then(|from| from.address());
    assert_eq!(from, Some(SENDER), "From is always the account");
    for header in message.headers() {
        let name = header.name.as_str().to_ascii_lowercase();
        let known = [
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
        ];
        assert!(
            known.contains(&name.as_str()) || name.starts_with("x-sealpost-"),
            "the upload added {name:?} to the notification:\n{}",
            String::from_utf8_lossy(&email)
        );
    }
    let counted = |wanted: &str| {
        message.headers().iter().filter(|h| h.name.as_str().eq_ignore_ascii_case(wanted)).count()
    };
    for single in ["from", "to", "subject", "message-id"] {
        assert!(counted(single) <= 1, "{single} twice:\n{}", String::from_utf8_lossy(&email));
    }
}

/// mail-parser panics on some malformed nestings of multiparts; the reader
/// catches that and shows such a message as text. libFuzzer's panic hook
/// aborts on any panic before it can be caught, so panics raised inside
/// mail-parser go on unwinding to that catch, and every other panic still
/// stops the run.
fn let_parser_panics_reach_the_reader() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parser = info.location().is_some_and(|at| at.file().contains("mail-parser"));
            if !in_parser {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_parser_panics_reach_the_reader();
    let options = HtmlOptions {
        remote_images: data.len().is_multiple_of(2),
        inline_image_base: Some("https://sealpost.example.org/messages/m1/inline/".into()),
    };
    let opened = OpenedMessage::parse_with(data, &options);
    if let Body::Html(html) = &opened.body {
        check_html(html);
    }
    for info in &opened.attachments {
        check_file_name(&safe_file_name(&info.name));
        let fetched = attachment(data, info.index).expect("a listed attachment can be fetched");
        assert_eq!(fetched.name, info.name);
        assert_eq!(fetched.bytes.len(), info.size);
    }
    let _ = inline_image(data, "logo@clinic");
    let _ = reply_context(data);
    let _ = forward_context(data);
    check_notification(data);
});
