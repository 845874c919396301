//! A secure message made ready to show, by the desktop app and by the
//! Secure Message Center alike: its headers as text, its body as sanitized
//! HTML or as plain text, and its attachments.
//!
//! Everything here is pure: bytes in, values out. Fetching the message and
//! saving or serving an attachment belong to the callers.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders};
use serde::Serialize;

/// A message ready to show: headers as text, the body as sanitized HTML.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenedMessage {
    pub subject: String,
    pub from: String,
    pub to: String,
    pub cc: String,
    /// Seconds since the Unix epoch, from the message's Date.
    pub date: Option<i64>,
    pub body: Body,
    pub attachments: Vec<AttachmentInfo>,
    /// Images from the web left out of the HTML body (see [`HtmlOptions`]).
    pub remote_images_blocked: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "content", rename_all = "snake_case")]
pub enum Body {
    /// Safe to show: no scripts, no styles, forms or event handlers, and
    /// remote content only where [`HtmlOptions`] allowed it.
    Html(String),
    /// Shown as text, never parsed as markup.
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachmentInfo {
    /// What [`attachment`] takes.
    pub index: usize,
    pub name: String,
    pub content_type: String,
    pub size: usize,
}

/// One attachment's content, with what its sender called it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// As the sender wrote it: make it safe with [`safe_file_name`] before use.
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// What the HTML body may still load once sanitized.
#[derive(Debug, Clone, Default)]
pub struct HtmlOptions {
    /// Keep images from the web. Off by default: loading one tells its
    /// sender that, when and from where the message was opened.
    pub remote_images: bool,
    /// Where images embedded in the message (`cid:`) are served: the
    /// Content-ID is appended, URL-encoded. Must be an absolute https URL.
    /// Without it they stay `cid:` links, which show nothing in a browser.
    pub inline_image_base: Option<String>,
}

impl OpenedMessage {
    /// Reads `raw` for display with no remote images; what does not parse
    /// is shown as text.
    pub fn parse(raw: &[u8]) -> Self {
        Self::parse_with(raw, &HtmlOptions::default())
    }

    pub fn parse_with(raw: &[u8], options: &HtmlOptions) -> Self {
        let Some(message) = parse_message(raw) else {
            return Self {
                subject: String::new(),
                from: String::new(),
                to: String::new(),
                cc: String::new(),
                date: None,
                body: Body::Text(String::from_utf8_lossy(raw).into_owned()),
                attachments: Vec::new(),
                remote_images_blocked: 0,
            };
        };
        // HTML when the sender wrote it; mail_parser would convert a text
        // part to HTML too, but text shown as text keeps its lines exactly.
        let has_html = message.html_body.iter().any(|part| {
            message.part(*part).is_some_and(|part| part.is_content_type("text", "html"))
        });
        let (body, remote_images_blocked) = if has_html {
            let sanitized = sanitize_html(&message.body_html(0).unwrap_or_default(), options);
            (Body::Html(sanitized.html), sanitized.remote_images_blocked)
        } else {
            (Body::Text(message.body_text(0).unwrap_or_default().into_owned()), 0)
        };
        Self {
            subject: message.subject().unwrap_or_default().to_owned(),
            from: address_list(message.from()),
            to: address_list(message.to()),
            cc: address_list(message.cc()),
            date: message.date().map(|date| date.to_timestamp()),
            body,
            attachments: attachments(&message)
                .map(|(index, part)| AttachmentInfo {
                    index,
                    name: attachment_name(part, index),
                    content_type: content_type(part),
                    size: part.contents().len(),
                })
                .collect(),
            remote_images_blocked,
        }
    }
}

/// What an answer to a message carries over from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplyContext {
    /// `Re: ` and the original subject (not doubled).
    pub subject: String,
    /// The original's Message-ID, without `<>`: the answer's In-Reply-To.
    pub message_id: Option<String>,
    /// The answer's References: the original's, then its Message-ID.
    pub references: Vec<String>,
    /// The original's text, quoted with `> ` under an attribution line.
    pub quoted: String,
    /// The original's From, To and Cc addresses, lowercase and bare: whom
    /// a reply (or a reply to all) goes to.
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
}

/// The headers and quote for answering `raw`.
pub fn reply_context(raw: &[u8]) -> ReplyContext {
    let Some(message) = parse_message(raw) else {
        return ReplyContext::default();
    };
    let subject = message.subject().unwrap_or_default().trim();
    // `get`: the subject's third byte may fall inside a character.
    let subject = if subject.get(..3).is_some_and(|start| start.eq_ignore_ascii_case("re:")) {
        subject.to_owned()
    } else {
        format!("Re: {subject}")
    };
    let message_id = message.message_id().map(str::to_owned);
    let mut references: Vec<String> = message
        .references()
        .as_text_list()
        .map(|ids| ids.iter().map(|id| id.to_string()).collect())
        .unwrap_or_default();
    references.extend(message_id.clone());
    let from = address_list(message.from());
    let attribution = match message.date() {
        Some(date) => format!("On {}, {from} wrote:", date.to_rfc822()),
        None => format!("{from} wrote:"),
    };
    let text = message.body_text(0).unwrap_or_default();
    let quoted_lines: Vec<String> = text
        .lines()
        .map(|line| if line.is_empty() { ">".to_owned() } else { format!("> {line}") })
        .collect();
    let bare = |list: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        list.map(|list| list.iter().filter_map(|a| a.address()).map(str::to_lowercase).collect())
            .unwrap_or_default()
    };
    ReplyContext {
        subject,
        message_id,
        references,
        quoted: format!("{attribution}\n{}\n", quoted_lines.join("\n")),
        from: bare(message.from()),
        to: bare(message.to()),
        cc: bare(message.cc()),
    }
}

/// What a forward of a message carries over from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwardContext {
    /// `Fwd: ` and the original subject (not doubled).
    pub subject: String,
    /// The original's References and Message-ID, so the forward threads
    /// with it for those who have both.
    pub references: Vec<String>,
    /// The original's headers and text under a "Forwarded message" line.
    pub text: String,
}

/// The subject, threading and text for forwarding `raw`; its attachments
/// are [`attachment`]`(raw, i)` for each of [`OpenedMessage::attachments`].
pub fn forward_context(raw: &[u8]) -> ForwardContext {
    let Some(message) = parse_message(raw) else {
        return ForwardContext::default();
    };
    let original = message.subject().unwrap_or_default().trim();
    let subject = if original.get(..4).is_some_and(|start| start.eq_ignore_ascii_case("fwd:")) {
        original.to_owned()
    } else {
        format!("Fwd: {original}")
    };
    let mut references: Vec<String> = message
        .references()
        .as_text_list()
        .map(|ids| ids.iter().map(|id| id.to_string()).collect())
        .unwrap_or_default();
    references.extend(message.message_id().map(str::to_owned));
    let mut text = String::from("---------- Forwarded message ----------\n");
    text.push_str(&format!("From: {}\n", address_list(message.from())));
    if let Some(date) = message.date() {
        text.push_str(&format!("Date: {}\n", date.to_rfc822()));
    }
    text.push_str(&format!("Subject: {original}\n"));
    text.push_str(&format!("To: {}\n", address_list(message.to())));
    if message.cc().is_some() {
        text.push_str(&format!("Cc: {}\n", address_list(message.cc())));
    }
    text.push('\n');
    text.push_str(message.body_text(0).unwrap_or_default().as_ref());
    ForwardContext { subject, references, text }
}

/// Attachment `index` of `raw`, as listed in [`OpenedMessage::attachments`].
pub fn attachment(raw: &[u8], index: usize) -> Option<Attachment> {
    let message = parse_message(raw)?;
    let (_, part) = attachments(&message).nth(index)?;
    Some(Attachment {
        name: attachment_name(part, index),
        content_type: content_type(part),
        bytes: part.contents().to_vec(),
    })
}

/// The image embedded in `raw` under `content_id` (written without `<>`).
pub fn inline_image(raw: &[u8], content_id: &str) -> Option<Attachment> {
    let message = parse_message(raw)?;
    let (index, part) = message.parts.iter().enumerate().find(|(_, part)| {
        part.content_id().is_some_and(|id| id.trim_matches(['<', '>']) == content_id)
            && part.content_type().is_some_and(|kind| kind.ctype().eq_ignore_ascii_case("image"))
    })?;

    Some(Attachment {
        name: attachment_name(part, index),
        content_type: content_type(part),
        bytes: part.contents().to_vec(),
    })
}

/// `raw` parsed, or `None` when it is not a message. mail-parser panics on
/// some malformed nestings of multiparts ("Invalid part ID"); such a
/// message is treated as unreadable instead of taking down whoever reads
/// it. Everything that parses whole messages from others (the agent's
/// index, the server's bounces) parses through here.
pub fn parse_message(raw: &[u8]) -> Option<Message<'_>> {
    std::panic::catch_unwind(|| MessageParser::default().parse(raw)).ok().flatten()
}

/// The attachments of `message` with the index [`attachment`] takes.
fn attachments<'a>(message: &'a Message<'a>) -> impl Iterator<Item = (usize, &'a MessagePart<'a>)> {
    message.attachments().enumerate()
}

fn attachment_name(part: &MessagePart<'_>, index: usize) -> String {
    part.attachment_name().map(str::to_owned).unwrap_or_else(|| format!("attachment-{}", index + 1))
}

fn content_type(part: &MessagePart<'_>) -> String {
    part.content_type()
        .map(|kind| match kind.subtype() {
            Some(sub) => format!("{}/{sub}", kind.ctype()),
            None => kind.ctype().to_owned(),
        })
        .map(|kind| kind.to_ascii_lowercase())
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// A name from a sender, usable as a file name anywhere: no directories,
/// no characters Windows refuses, not hidden, not empty, not a device, no
/// direction overrides that make `exe.pdf` of `fdp.exe`, and short enough
/// in bytes for every file system (with room for a ` (2)`), keeping its
/// extension.
pub fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || is_direction_mark(c) || r#"/\:*?"<>|"#.contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim_end_matches(['.', ' ']);
    let cleaned = shortened(cleaned, MAX_FILE_NAME_BYTES);
    let cleaned = cleaned.trim_end_matches(['.', ' ']);
    if cleaned.is_empty() {
        "attachment".to_owned()
    } else if is_windows_device(cleaned) {
        // Windows opens the device, not a file, for `CON`, `nul.txt` and the like.
        format!("_{cleaned}")
    } else {
        cleaned.to_owned()
    }
}

/// File systems allow 255 bytes per name; this leaves room for the
/// ` (999)` of a name already taken and the `_` in front of a device name.
const MAX_FILE_NAME_BYTES: usize = 200;

/// Marks that reorder how the rest of a name is displayed.
fn is_direction_mark(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// At most `max` bytes of `name`, cut at a character boundary, keeping a
/// short extension so the file still opens with the right program.
fn shortened(name: &str, max: usize) -> String {
    fn prefix(text: &str, max: usize) -> &str {
        let mut end = max.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[..end]
    }
    if name.len() <= max {
        return name.to_owned();
    }
    match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() && extension.len() <= 16 => {
            format!("{}.{extension}", prefix(stem, max - extension.len() - 1).trim_end())
        }
        _ => prefix(name, max).to_owned(),
    }
}

/// Whether Windows takes `name` for a device whatever its extension.
fn is_windows_device(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or_default().trim_end().to_lowercase();
    match stem.as_str() {
        "con" | "prn" | "aux" | "nul" | "conin$" | "conout$" => true,
        _ => ["com", "lpt"].iter().any(|prefix| {
            stem.strip_prefix(prefix).is_some_and(|number| {
                matches!(
                    number,
                    "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³"
                )
            })
        }),
    }
}

/// Sanitized HTML and what was left out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanitizedHtml {
    pub html: String,
    pub remote_images_blocked: usize,
}

/// Sender HTML made safe to display: no scripts, styles, forms, frames or
/// event handlers; links open outside with no referrer and never to
/// `data:`; images only when embedded, or from the web when `options`
/// allow it, so opening a message tells no one.
pub fn sanitize_html(html: &str, options: &HtmlOptions) -> SanitizedHtml {
    let blocked = Arc::new(AtomicUsize::new(0));
    let counter = blocked.clone();
    let remote_images = options.remote_images;
    let inline_base = options.inline_image_base.clone();
    let clean = ammonia::Builder::default()
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"))
        .set_tag_attribute_value("a", "target", "_blank")
        .attribute_filter(move |element, attribute, value| -> Option<Cow<'_, str>> {
            let start = value.trim_start().get(..16).unwrap_or(value).to_ascii_lowercase();
            let cid = start.starts_with("cid:");
            let embedded = start.starts_with("data:") || cid;
            match (element, attribute) {
                ("img", "src") if cid => match &inline_base {
                    Some(base) => Some(format!("{base}{}", url_encode(&value.trim()[4..])).into()),
                    None => Some(value.into()),
                },
                // Pictures only: an SVG document is code, even where a browser
                // would not run it.
                ("img", "src") if embedded => RASTER_DATA_URLS
                    .iter()
                    .any(|prefix| start.starts_with(prefix))
                    .then(|| value.into()),
                ("img", "src") if remote_images => Some(value.into()),
                ("img", "src") => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    None
                }
                // A link is for leaving the message, never for a document
                // made by its sender.
                (_, "href") if embedded => None,
                _ => Some(value.into()),
            }
        })
        .add_url_schemes(["data", "cid"])
        .clean(html)
        .to_string();
    SanitizedHtml { html: clean, remote_images_blocked: blocked.load(Ordering::Relaxed) }
}

/// The embedded images kept in message HTML.
const RASTER_DATA_URLS: &[&str] =
    &["data:image/png", "data:image/jpeg", "data:image/jpg", "data:image/gif", "data:image/webp"];

/// Percent-encodes everything but unreserved characters.
fn url_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Addresses as `Name <address>, …`.
pub fn address_list(list: Option<&mail_parser::Address<'_>>) -> String {
    list.map(|list| {
        list.iter()
            .map(|addr| match (addr.name(), addr.address()) {
                (Some(name), Some(address)) => format!("{name} <{address}>"),
                (None, Some(address)) => address.to_owned(),
                (Some(name), None) => name.to_owned(),
                (None, None) => String::new(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTML_MESSAGE: &[u8] = b"From: Dr Sam <sam@clinic.example>\r\n\
To: alice@example.test\r\n\
Subject: Your results\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p onclick=\"steal()\">Results <b>normal</b>.</p><script>steal()</script>\
<img src=\"https://tracker.example/p.gif\"><a href=\"https://clinic.example/x\">portal</a>\
<form action=\"https://evil.example\"><input name=q></form><style>p{}</style>\
<img src=\"cid:logo@clinic\"><a href=\"data:text/html,<script>steal()</script>\">data</a>\
<img src=\"data:image/svg+xml;base64,PHN2Zz4=\"><img src=\"data:image/png;base64,iVBORw0K\">\r\n\
--b1\r\n\
Content-Type: image/png\r\n\
Content-ID: <logo@clinic>\r\n\
Content-Disposition: inline\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
iVBORw0K\r\n\
--b1\r\n\
Content-Type: application/pdf; name=\"../../lab results.pdf\"\r\n\
Content-Disposition: attachment; filename=\"../../lab results.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--b1--\r\n";

    fn html_of(opened: &OpenedMessage) -> &str {
        match &opened.body {
            Body::Html(html) => html,
            Body::Text(text) => panic!("an HTML body, not text: {text}"),
        }
    }

    #[test]
    fn html_is_shown_without_scripts_handlers_forms_or_remote_images() {
        let opened = OpenedMessage::parse(HTML_MESSAGE);
        assert_eq!(opened.subject, "Your results");
        assert_eq!(opened.from, "Dr Sam <sam@clinic.example>");
        assert_eq!(opened.to, "alice@example.test");
        assert_eq!(opened.date, Some(1_795_428_000));
        let html = html_of(&opened);
        assert!(html.contains("Results <b>normal</b>."), "{html}");
        for banned in [
            "script",
            "steal",
            "onclick",
            "tracker.example",
            "<form",
            "<input",
            "<style",
            "data:text",
        ] {
            assert!(!html.contains(banned), "{banned} survived: {html}");
        }
        assert!(html.contains("rel=\"noopener noreferrer\""), "{html}");
        assert!(html.contains("src=\"cid:logo@clinic\""), "embedded images stay: {html}");
        assert!(html.contains("src=\"data:image/png;base64,iVBORw0K\""), "{html}");
        assert!(!html.contains("svg"), "embedded SVG is dropped: {html}");
        assert_eq!(opened.remote_images_blocked, 1);
        let pdf = opened.attachments.iter().find(|a| a.content_type == "application/pdf");
        assert_eq!(
            pdf,
            Some(&AttachmentInfo {
                index: pdf.map_or(0, |a| a.index),
                name: "../../lab results.pdf".into(),
                content_type: "application/pdf".into(),
                size: 9,
            })
        );
    }

    #[test]
    fn remote_images_load_only_when_allowed_and_embedded_ones_point_at_the_server() {
        let options = HtmlOptions {
            remote_images: true,
            inline_image_base: Some("https://center.example/messages/m1/inline/".into()),
        };
        let opened = OpenedMessage::parse_with(HTML_MESSAGE, &options);
        let html = html_of(&opened);
        assert!(html.contains("https://tracker.example/p.gif"), "{html}");
        assert!(
            html.contains("src=\"https://center.example/messages/m1/inline/logo%40clinic\""),
            "{html}"
        );
        assert_eq!(opened.remote_images_blocked, 0);
        assert!(!html.contains("script"), "{html}");
    }

    #[test]
    fn attachments_and_embedded_images_are_found_with_their_type() {
        let opened = OpenedMessage::parse(HTML_MESSAGE);
        let pdf = opened.attachments.iter().find(|a| a.content_type == "application/pdf");
        let pdf = attachment(HTML_MESSAGE, pdf.expect("listed").index).expect("found");
        assert_eq!(pdf.bytes, b"%PDF-1.4\n");
        assert_eq!(pdf.name, "../../lab results.pdf");
        let logo = inline_image(HTML_MESSAGE, "logo@clinic").expect("embedded image");
        assert_eq!(logo.content_type, "image/png");
        assert_eq!(logo.bytes, b"\x89PNG\r\n");
        assert!(inline_image(HTML_MESSAGE, "other@clinic").is_none());
        assert!(attachment(HTML_MESSAGE, 9).is_none());
    }

    #[test]
    fn a_reply_threads_under_the_original_and_quotes_it() {
        let raw = b"From: Sam <sam@clinic.example>\r\nSubject: Results\r\nMessage-ID: <m2@clinic>\r\n\
References: <m0@clinic> <m1@clinic>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nAll normal.\r\n\r\nSam\r\n";
        let reply = reply_context(raw);
        assert_eq!(reply.subject, "Re: Results");
        assert_eq!(reply.message_id.as_deref(), Some("m2@clinic"));
        assert_eq!(reply.references, ["m0@clinic", "m1@clinic", "m2@clinic"]);
        assert!(reply.quoted.starts_with("On Mon, 23 Nov 2026"), "{}", reply.quoted);
        assert!(
            reply.quoted.contains("Sam <sam@clinic.example> wrote:\n> All normal.\n>\n> Sam\n")
        );
        let again = b"Subject: RE: Results\r\n\r\nx";
        assert_eq!(reply_context(again).subject, "RE: Results");
    }

    #[test]
    fn a_message_that_makes_the_parser_panic_is_shown_as_text() {
        let raw = include_bytes!("../tests/fixtures/mail-parser-panic.eml");
        let opened = OpenedMessage::parse(raw);
        assert!(matches!(opened.body, Body::Text(_)));
        assert_eq!(reply_context(raw), ReplyContext::default());
        assert!(attachment(raw, 0).is_none());
    }

    #[test]
    fn a_subject_starting_with_wide_characters_is_answered_and_forwarded() {
        // "Hi" and a character of three bytes: the prefix checks cut inside it.
        let raw = "Subject: Hi \u{fffd}( abc\r\n\r\nx".as_bytes();
        assert_eq!(reply_context(raw).subject, "Re: Hi \u{fffd}( abc");
        assert_eq!(forward_context(raw).subject, "Fwd: Hi \u{fffd}( abc");
        let raw = "Subject: a\u{20ac}\r\n\r\nx".as_bytes();
        assert_eq!(reply_context(raw).subject, "Re: a\u{20ac}");
        assert_eq!(forward_context(raw).subject, "Fwd: a\u{20ac}");
    }

    #[test]
    fn plain_text_stays_text_with_its_lines() {
        let raw = b"From: a@b.example\r\nSubject: t\r\n\r\nLine one <b>\r\nLine two & more\r\n";
        let body = OpenedMessage::parse(raw).body;
        assert_eq!(body, Body::Text("Line one <b>\r\nLine two & more\r\n".into()));
    }

    #[test]
    fn file_names_from_senders_cannot_escape_or_hide() {
        assert_eq!(safe_file_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_file_name("..\\..\\boot.ini"), "_.._boot.ini");
        assert_eq!(safe_file_name(".hidden"), "hidden");
        assert_eq!(safe_file_name("  "), "attachment");
        assert_eq!(safe_file_name("a:b*c?.txt. "), "a_b_c_.txt");
    }

    #[test]
    fn file_names_are_never_devices_never_reversed_and_never_too_long() {
        assert_eq!(safe_file_name("CON"), "_CON");
        assert_eq!(safe_file_name("nul.txt"), "_nul.txt");
        assert_eq!(safe_file_name("Com1.tar.gz"), "_Com1.tar.gz");
        assert_eq!(safe_file_name("lpt²"), "_lpt²");
        assert_eq!(safe_file_name("console.txt"), "console.txt");
        assert_eq!(safe_file_name("com10.txt"), "com10.txt");
        assert_eq!(safe_file_name("invoice\u{202e}fdp.exe"), "invoice_fdp.exe");
        assert_eq!(safe_file_name("a\u{2066}b\u{2069}.txt"), "a_b_.txt");
        let long = safe_file_name(&format!("{}.pdf", "é".repeat(300)));
        assert!(long.len() <= MAX_FILE_NAME_BYTES && long.ends_with("é.pdf"), "{long}");
        let long = safe_file_name(&"x".repeat(1000));
        assert_eq!(long.len(), MAX_FILE_NAME_BYTES);
        assert_eq!(safe_file_name(&format!("{}. . .pdf", "y".repeat(300))).len(), 200);
    }
}
