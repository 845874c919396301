//! Reading one swapped message: fetched from the folder the index names,
//! its HTML sanitized for display, its attachments listed and saved on
//! request.
//!
//! The message is looked up by the [`SWAPPED_HEADER`] the swap put on it,
//! not by the UID alone: a UID is only a hint that another client's
//! reorganising (or a rebuilt folder) can outdate.

use std::path::{Path, PathBuf};

pub use sealpost_reader::{AttachmentInfo, Body, OpenedMessage, address_list, sanitize_html};
use sealpost_reader::{attachment, safe_file_name};

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

/// Saves attachment `index` of `raw` into `dir` under its own name, made
/// safe for the file system, never over an existing file (`name (2).pdf`).
pub fn save_attachment(raw: &[u8], index: usize, dir: &Path) -> Result<PathBuf, ReadError> {
    let attachment = attachment(raw, index).ok_or(ReadError::NoAttachment(index))?;
    let name = safe_file_name(&attachment.name);
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
                file.write_all(&attachment.bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A message with one attachment whose name tries to leave the folder.
    const HTML_MESSAGE: &[u8] = b"From: sam@clinic.example\r\nSubject: Results\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n\
--b1\r\nContent-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=\"../../lab results.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n";

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
}
