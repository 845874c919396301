//! Reading one swapped message: fetched from the folder the index names,
//! its HTML sanitized for display, its attachments listed and saved on
//! request.
//!
//! The message is looked up by the [`SWAPPED_HEADER`] the swap put on it,
//! not by the UID alone: a UID is only a hint that another client's
//! reorganising (or a rebuilt folder) can outdate.

use std::path::{Path, PathBuf};

use mail_parser::{Message, MessageParser, MimeHeaders};
use serde::Serialize;

use crate::imap::{ImapAccount, ImapError, MailboxSession};
use crate::swap::SWAPPED_HEADER;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Mailbox(#[from] ImapError),
    #[error(
        "the message is no longer in {folder}; it may have been moved or deleted in your mail program"
    )]
    Gone { folder: String },
    #[error("the message has no attachment number {0}")]
    NoAttachment(usize),
    #[error("cannot save the attachment in {path}: {source}")]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "content", rename_all = "snake_case")]
pub enum Body {
    /// Safe to put in a sandboxed frame: no scripts, no remote content, no
    /// styles, forms or event handlers.
    Html(String),
    /// Shown as text, never parsed as markup.
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachmentInfo {
    /// What [`save_attachment`] takes.
    pub index: usize,
    pub name: String,
    pub content_type: String,
    pub size: usize,
}

/// The raw message swapped in for `message_id`, from `folder`.
pub async fn fetch(
    account: &ImapAccount,
    folder: &str,
    message_id: &str,
) -> Result<Vec<u8>, ReadError> {
    let mut session = MailboxSession::connect(account).await?;
    session.select(folder).await?;
    let found = session.find_by_header(SWAPPED_HEADER, &[message_id]).await?;
    let uid = found.get(message_id).and_then(|uids| uids.first().copied());
    let raw = match uid {
        Some(uid) => session.fetch_message(uid).await?,
        None => None,
    };
    session.logout().await;
    raw.ok_or_else(|| ReadError::Gone { folder: folder.to_owned() })
}

impl OpenedMessage {
    /// Reads `raw` for display; what does not parse is shown as text.
    pub fn parse(raw: &[u8]) -> Self {
        let Some(message) = MessageParser::default().parse(raw) else {
            return Self {
                subject: String::new(),
                from: String::new(),
                to: String::new(),
                cc: String::new(),
                date: None,
                body: Body::Text(String::from_utf8_lossy(raw).into_owned()),
                attachments: Vec::new(),
            };
        };
        // HTML when the sender wrote it; mail_parser would convert a text
        // part to HTML too, but text shown as text keeps its lines exactly.
        let has_html = message.html_body.iter().any(|part| {
            message.part(*part).is_some_and(|part| part.is_content_type("text", "html"))
        });
        let body = if has_html {
            Body::Html(sanitize_html(&message.body_html(0).unwrap_or_default()))
        } else {
            Body::Text(message.body_text(0).unwrap_or_default().into_owned())
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
                    content_type: part
                        .content_type()
                        .map(|kind| match kind.subtype() {
                            Some(sub) => format!("{}/{sub}", kind.ctype()),
                            None => kind.ctype().to_owned(),
                        })
                        .unwrap_or_else(|| "application/octet-stream".to_owned()),
                    size: part.contents().len(),
                })
                .collect(),
        }
    }
}

/// The attachments of `message` with the index [`save_attachment`] takes.
fn attachments<'a>(
    message: &'a Message<'a>,
) -> impl Iterator<Item = (usize, &'a mail_parser::MessagePart<'a>)> {
    message.attachments().enumerate()
}

fn attachment_name(part: &mail_parser::MessagePart<'_>, index: usize) -> String {
    part.attachment_name().map(str::to_owned).unwrap_or_else(|| format!("attachment-{}", index + 1))
}

/// Saves attachment `index` of `raw` into `dir` under its own name, made
/// safe for the file system, never over an existing file (`name (2).pdf`).
pub fn save_attachment(raw: &[u8], index: usize, dir: &Path) -> Result<PathBuf, ReadError> {
    let message = MessageParser::default().parse(raw).ok_or(ReadError::NoAttachment(index))?;
    let (_, part) = attachments(&message).nth(index).ok_or(ReadError::NoAttachment(index))?;
    let name = safe_file_name(&attachment_name(part, index));
    let save = |source| ReadError::Save { path: dir.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(save)?;
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem.to_owned(), format!(".{extension}")),
        _ => (name.clone(), String::new()),
    };
    for copy in 1..1000 {
        let candidate = match copy {
            1 => dir.join(&name),
            n => dir.join(format!("{stem} ({n}){extension}")),
        };
        // `create_new` makes the check and the creation one step.
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&candidate) {
            Ok(mut file) => {
                use std::io::Write;
                file.write_all(part.contents())
                    .and_then(|()| file.sync_all())
                    .map_err(|source| ReadError::Save { path: candidate.clone(), source })?;
                return Ok(candidate);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(ReadError::Save { path: candidate, source }),
        }
    }
    Err(save(std::io::Error::other(format!("too many files named like {name}"))))
}

/// A name from a sender, usable as a file name anywhere: no directories,
/// no characters Windows refuses, not hidden, not empty.
fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_control() || r#"/\:*?"<>|"#.contains(c) { '_' } else { c })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim_end_matches(['.', ' ']);
    let cleaned: String = cleaned.chars().take(200).collect();
    if cleaned.is_empty() { "attachment".to_owned() } else { cleaned }
}

/// Sender HTML made safe to display: no scripts, styles, forms, frames or
/// event handlers; links open outside with no referrer; images only when
/// embedded (`data:` / `cid:`), so opening a message tells no one.
pub fn sanitize_html(html: &str) -> String {
    ammonia::Builder::default()
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"))
        .set_tag_attribute_value("a", "target", "_blank")
        .attribute_filter(|element, attribute, value| {
            let embedded = value.starts_with("data:") || value.starts_with("cid:");
            match (element, attribute) {
                ("img", "src") if !embedded => None,
                _ => Some(value.into()),
            }
        })
        .add_url_schemes(["data", "cid"])
        .clean(html)
        .to_string()
}

/// Addresses as `Name <address>, …`.
pub(crate) fn address_list(list: Option<&mail_parser::Address<'_>>) -> String {
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
<form action=\"https://evil.example\"><input name=q></form><style>p{}</style>\r\n\
--b1\r\n\
Content-Type: application/pdf; name=\"../../lab results.pdf\"\r\n\
Content-Disposition: attachment; filename=\"../../lab results.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--b1--\r\n";

    #[test]
    fn html_is_shown_without_scripts_handlers_forms_or_remote_images() {
        let opened = OpenedMessage::parse(HTML_MESSAGE);
        assert_eq!(opened.subject, "Your results");
        assert_eq!(opened.from, "Dr Sam <sam@clinic.example>");
        assert_eq!(opened.to, "alice@example.test");
        assert_eq!(opened.date, Some(1_795_428_000));
        let Body::Html(html) = &opened.body else { panic!("an HTML body: {:?}", opened.body) };
        assert!(html.contains("Results <b>normal</b>."), "{html}");
        for banned in ["script", "steal", "onclick", "tracker.example", "<form", "<input", "<style"]
        {
            assert!(!html.contains(banned), "{banned} survived: {html}");
        }
        assert!(html.contains("rel=\"noopener noreferrer\""), "{html}");
        assert_eq!(
            opened.attachments,
            [AttachmentInfo {
                index: 0,
                name: "../../lab results.pdf".into(),
                content_type: "application/pdf".into(),
                size: 9,
            }]
        );
    }

    #[test]
    fn plain_text_stays_text_with_its_lines() {
        let raw = b"From: a@b.example\r\nSubject: t\r\n\r\nLine one <b>\r\nLine two & more\r\n";
        let body = OpenedMessage::parse(raw).body;
        assert_eq!(body, Body::Text("Line one <b>\r\nLine two & more\r\n".into()));
    }

    #[test]
    fn attachments_are_saved_under_a_safe_name_and_never_over_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = save_attachment(HTML_MESSAGE, 0, dir.path()).expect("save");
        assert_eq!(first, dir.path().join("_.._lab results.pdf"));
        assert_eq!(std::fs::read(&first).expect("read"), b"%PDF-1.4\n");
        let second = save_attachment(HTML_MESSAGE, 0, dir.path()).expect("save again");
        assert_eq!(second, dir.path().join("_.._lab results (2).pdf"));
        let error = save_attachment(HTML_MESSAGE, 1, dir.path()).expect_err("only one");
        assert!(matches!(error, ReadError::NoAttachment(1)), "{error}");
    }

    #[test]
    fn file_names_from_senders_cannot_escape_or_hide() {
        assert_eq!(safe_file_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_file_name("..\\..\\boot.ini"), "_.._boot.ini");
        assert_eq!(safe_file_name(".hidden"), "hidden");
        assert_eq!(safe_file_name("  "), "attachment");
        assert_eq!(safe_file_name("a:b*c?.txt. "), "a_b_c_.txt");
    }
}
