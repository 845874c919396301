//! The local search index of swapped messages: SQLite with FTS5.
//!
//! Each message the agent swaps in is indexed with its sender, recipients,
//! subject, body text and attachment names, and with the folder and UID a
//! client opens it by. Searches match word prefixes (results as you type),
//! rank with BM25 and return a snippet with the match marked.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use mail_parser::MimeHeaders;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::reader::address_list;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/index");

/// Marks the matched words inside [`SearchHit::snippet`]: control
/// characters, which message text never shows, so a bracket in the text
/// cannot be taken for a mark. [`SearchHit::snippet_pieces`] splits on them.
pub const MATCH_START: &str = "\u{2}";
pub const MATCH_END: &str = "\u{3}";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the search index: {}", crate::state::database_failure(.0))]
    Database(#[from] sqlx::Error),
    #[error("the search index could not be upgraded: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// Where a swapped message lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedMessage<'a> {
    pub message_id: &'a str,
    pub folder: &'a str,
    pub uid: u32,
    pub raw: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    pub message_id: String,
    pub folder: String,
    pub uid: u32,
    pub sender: String,
    pub subject: String,
    /// Seconds since the Unix epoch, from the message's Date.
    pub date: Option<i64>,
    /// Text around the match, matched words between [`MATCH_START`] and [`MATCH_END`].
    pub snippet: String,
}

/// One run of a snippet's text: matched by the query or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnippetPiece<'a> {
    Text(&'a str),
    Match(&'a str),
}

impl SearchHit {
    /// The snippet as runs of plain and matched text, in order.
    pub fn snippet_pieces(&self) -> Vec<SnippetPiece<'_>> {
        let mut pieces = Vec::new();
        let mut rest = self.snippet.as_str();
        while let Some(start) = rest.find(MATCH_START) {
            let (before, marked) = rest.split_at(start);
            let marked = &marked[MATCH_START.len()..];
            let (matched, after) = marked.split_once(MATCH_END).unwrap_or((marked, ""));
            pieces.extend([SnippetPiece::Text(before), SnippetPiece::Match(matched)]);
            rest = after;
        }
        pieces.push(SnippetPiece::Text(rest));
        pieces.retain(|piece| !matches!(piece, SnippetPiece::Text("") | SnippetPiece::Match("")));
        pieces
    }

    /// The snippet with the matches between `start` and `end`, for terminals.
    pub fn snippet_marked(&self, start: &str, end: &str) -> String {
        self.snippet.replace(MATCH_START, start).replace(MATCH_END, end)
    }
}

pub struct SearchIndex {
    pool: SqlitePool,
}

impl SearchIndex {
    /// Opens (creating if needed) the index file.
    pub async fn open(path: &Path) -> Result<Self, IndexError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL can lose the last additions to a power cut
            // (not to a crash of the agent), never the file, and `reindex`
            // brings them back from the mailbox; FULL would wait for the
            // disk on every addition.
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Adds or replaces one message; unreadable parts are indexed as far as they parse.
    pub async fn add(&self, message: &IndexedMessage<'_>, now: i64) -> Result<(), IndexError> {
        self.add_all(std::slice::from_ref(message), now).await
    }

    /// Adds or replaces several messages at once, as a rebuild does: every
    /// transaction flushes the full-text index to disk and merges its
    /// segments, so one for many messages is far cheaper than one each.
    pub async fn add_all(
        &self,
        messages: &[IndexedMessage<'_>],
        now: i64,
    ) -> Result<(), IndexError> {
        let texts: Vec<MessageText> =
            messages.iter().map(|message| MessageText::of(message.raw)).collect();
        let mut tx = self.pool.begin().await?;
        for (message, text) in messages.iter().zip(&texts) {
            Self::replace(&mut tx, message, text, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a message (recalled by its sender): its text leaves the index.
    pub async fn remove(&self, message_id: &str) -> Result<(), IndexError> {
        let mut tx = self.pool.begin().await?;
        Self::delete(&mut tx, message_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a message's entry and its text, if indexed.
    async fn delete(tx: &mut sqlx::SqliteConnection, message_id: &str) -> Result<(), IndexError> {
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM messages WHERE message_id = ?")
                .bind(message_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = existing {
            sqlx::query("DELETE FROM message_text WHERE rowid = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM messages WHERE id = ?").bind(id).execute(&mut *tx).await?;
        }
        Ok(())
    }

    async fn replace(
        tx: &mut sqlx::SqliteConnection,
        message: &IndexedMessage<'_>,
        text: &MessageText,
        now: i64,
    ) -> Result<(), IndexError> {
        Self::delete(tx, message.message_id).await?;
        // Not `RETURNING`: such a statement opens a savepoint, and FTS5
        // flushes what it holds at every savepoint, which would write a
        // segment per message even in a batch.
        let id = sqlx::query(
            "INSERT INTO messages (message_id, folder, uid, sender, subject, date, indexed_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(message.message_id)
        .bind(message.folder)
        .bind(i64::from(message.uid))
        .bind(&text.sender)
        .bind(&text.subject)
        .bind(text.date)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .last_insert_rowid();
        sqlx::query(
            "INSERT INTO message_text (rowid, sender, recipients, subject, body, attachments)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(&text.sender)
        .bind(&text.recipients)
        .bind(&text.subject)
        .bind(&text.body)
        .bind(&text.attachments)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Messages matching every word of `query` (each as a prefix), best first.
    pub async fn search(&self, query: &str, limit: u32) -> Result<Vec<SearchHit>, IndexError> {
        let Some(expression) = match_expression(query) else {
            return Ok(Vec::new());
        };
        // SQLite works out the result columns of an ORDER BY … LIMIT only for
        // rows that enter the best `limit`, but a join runs for every match:
        // so each message row is looked up in the columns, not joined.
        let rows = sqlx::query(
            "SELECT (SELECT message_id FROM messages WHERE id = message_text.rowid) AS message_id,
                    (SELECT folder FROM messages WHERE id = message_text.rowid) AS folder,
                    (SELECT uid FROM messages WHERE id = message_text.rowid) AS uid,
                    (SELECT sender FROM messages WHERE id = message_text.rowid) AS sender,
                    (SELECT subject FROM messages WHERE id = message_text.rowid) AS subject,
                    (SELECT date FROM messages WHERE id = message_text.rowid) AS date,
                    snippet(message_text, 3, ?, ?, '…', 12) AS snippet
             FROM message_text
             WHERE message_text MATCH ?
             ORDER BY bm25(message_text, 2.0, 1.0, 4.0, 1.0, 1.0)
             LIMIT ?",
        )
        .bind(MATCH_START)
        .bind(MATCH_END)
        .bind(expression)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SearchHit {
                    message_id: row.try_get("message_id")?,
                    folder: row.try_get("folder")?,
                    uid: u32::try_from(row.try_get::<i64, _>("uid")?).unwrap_or_default(),
                    sender: row.try_get("sender")?,
                    subject: row.try_get("subject")?,
                    date: row.try_get("date")?,
                    snippet: row.try_get("snippet")?,
                })
            })
            .collect()
    }

    /// Closes every connection, so the write-ahead log is folded into the file.
    pub async fn close(self) {
        self.pool.close().await;
    }

    /// The sender and subject of each indexed message among `message_ids`.
    pub async fn describe(
        &self,
        message_ids: &[&str],
    ) -> Result<HashMap<String, (String, String)>, IndexError> {
        if message_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids = serde_json::to_string(message_ids).unwrap_or_else(|_| "[]".into());
        let rows = sqlx::query(
            "SELECT message_id, sender, subject FROM messages
             WHERE message_id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((row.try_get("message_id")?, (row.try_get("sender")?, row.try_get("subject")?)))
            })
            .collect()
    }

    pub async fn count(&self) -> Result<u64, IndexError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&self.pool).await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }
}

/// An FTS5 expression from what a person typed: each word quoted (so FTS
/// syntax characters are just text) and matched as a prefix; all must match.
fn match_expression(query: &str) -> Option<String> {
    let terms: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| format!("\"{}\"*", word.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// The searchable text of one message.
struct MessageText {
    sender: String,
    recipients: String,
    subject: String,
    date: Option<i64>,
    body: String,
    attachments: String,
}

impl MessageText {
    fn of(raw: &[u8]) -> Self {
        let Some(message) = sealpost_reader::parse_message(raw) else {
            return Self {
                sender: String::new(),
                recipients: String::new(),
                subject: String::new(),
                date: None,
                body: String::from_utf8_lossy(raw).into_owned(),
                attachments: String::new(),
            };
        };
        let body = (0..message.text_body_count())
            .filter_map(|index| message.body_text(index))
            .collect::<Vec<_>>()
            .join("\n");
        let attachments = message
            .attachments()
            .filter_map(|part| part.attachment_name())
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            sender: address_list(message.from()),
            recipients: [address_list(message.to()), address_list(message.cc())].join(", "),
            subject: message.subject().unwrap_or_default().to_owned(),
            date: message.date().map(|date| date.to_timestamp()),
            body,
            attachments,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(snippet: &str) -> SearchHit {
        SearchHit {
            message_id: "msg_1".into(),
            folder: "INBOX".into(),
            uid: 1,
            sender: String::new(),
            subject: String::new(),
            date: None,
            snippet: snippet.replace('[', MATCH_START).replace(']', MATCH_END),
        }
    }

    #[test]
    fn a_snippet_splits_into_plain_and_matched_runs() {
        use SnippetPiece::{Match, Text};
        assert_eq!(
            hit("…the [lab] results [are] in").snippet_pieces(),
            [Text("…the "), Match("lab"), Text(" results "), Match("are"), Text(" in")]
        );
        assert_eq!(hit("[all]").snippet_pieces(), [Match("all")]);
        assert_eq!(hit("none").snippet_pieces(), [Text("none")]);
        // A mark left open (the snippet was cut) still ends the text.
        assert_eq!(hit("cut [mid").snippet_pieces(), [Text("cut "), Match("mid")]);
        assert_eq!(hit("a [b] c").snippet_marked("<", ">"), "a <b> c");
    }

    const MESSAGE: &[u8] = b"From: Dr. Sam Sender <sam@clinic.example>\r\nTo: Alice <alice@example.org>\r\n\
Subject: Your lab results\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
Your cholesterol is fine; the p\xc3\xa9diatre will call.\r\n--b\r\nContent-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=\"bloodwork-2026.pdf\"\r\n\r\n%PDF\r\n--b--\r\n";

    async fn index() -> (tempfile::TempDir, SearchIndex) {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(&dir.path().join("index.db")).await.expect("open");
        let message = IndexedMessage { message_id: "m1", folder: "INBOX", uid: 7, raw: MESSAGE };
        index.add(&message, 0).await.expect("add");
        (dir, index)
    }

    #[tokio::test]
    async fn finds_by_body_subject_sender_and_attachment_with_prefixes() {
        let (_dir, index) = index().await;
        for query in
            ["cholesterol", "choles", "lab results", "Sam", "bloodwork", "pediatre", "ALICE"]
        {
            let hits = index.search(query, 10).await.expect("search");
            assert_eq!(hits.len(), 1, "{query:?}");
            assert_eq!((hits[0].folder.as_str(), hits[0].uid), ("INBOX", 7));
        }
        let hit = &index.search("cholesterol", 10).await.expect("search")[0];
        assert_eq!(hit.subject, "Your lab results");
        assert!(hit.snippet_marked("[", "]").contains("[cholesterol]"), "{}", hit.snippet);
        assert!(
            hit.snippet_pieces().contains(&SnippetPiece::Match("cholesterol")),
            "{}",
            hit.snippet
        );
        let described =
            index.describe(&[hit.message_id.as_str(), "msg_unknown"]).await.expect("describe");
        assert_eq!(described.len(), 1);
        assert_eq!(described[&hit.message_id].1, "Your lab results");
        assert!(
            index.search("cholesterol missing", 10).await.expect("search").is_empty(),
            "every word must match"
        );
    }

    #[tokio::test]
    async fn adds_many_at_once_and_a_later_copy_replaces_an_earlier() {
        let (_dir, index) = index().await;
        let other = b"From: Bob <bob@example.net>\r\nSubject: Invoice\r\n\r\nPlease pay.\r\n";
        let batch = [
            IndexedMessage { message_id: "m2", folder: "INBOX", uid: 8, raw: other },
            IndexedMessage { message_id: "m1", folder: "Archive", uid: 2, raw: MESSAGE },
            IndexedMessage { message_id: "m3", folder: "INBOX", uid: 9, raw: other },
            IndexedMessage { message_id: "m2", folder: "Archive", uid: 4, raw: other },
        ];
        index.add_all(&batch, 1).await.expect("add all");
        index.add_all(&[], 2).await.expect("add none");
        assert_eq!(index.count().await.expect("count"), 3);
        let mut invoices: Vec<(String, String, u32)> = index
            .search("invoice pay", 10)
            .await
            .expect("search")
            .into_iter()
            .map(|hit| (hit.message_id, hit.folder, hit.uid))
            .collect();
        invoices.sort();
        assert_eq!(
            invoices,
            [("m2".into(), "Archive".into(), 4), ("m3".into(), "INBOX".into(), 9)]
        );
        assert_eq!(index.search("cholesterol", 10).await.expect("search")[0].uid, 2);
    }

    #[tokio::test]
    async fn query_syntax_is_just_text_and_reindexing_replaces() {
        let (_dir, index) = index().await;
        for query in ["\"", "NEAR(", "a OR", "*", "", "  "] {
            index.search(query, 10).await.unwrap_or_else(|error| panic!("{query:?}: {error}"));
        }
        let moved = IndexedMessage { message_id: "m1", folder: "Archive", uid: 3, raw: MESSAGE };
        index.add(&moved, 1).await.expect("re-add");
        assert_eq!(index.count().await.expect("count"), 1);
        assert_eq!(index.search("lab", 10).await.expect("search")[0].folder, "Archive");
    }
}
