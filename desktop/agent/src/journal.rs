//! The journal of outgoing secure messages, in the state file: each draft
//! is written here before anything is sent, and every step of its sending
//! is recorded as it completes, so a crash resumes at the step it cut short
//! (see [`crate::send`]).

use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use sealpost_proto::api::StoredMessage;

use crate::state::{AgentState, StateError, u32_of};

/// Where a draft came from when a mail client put it in the Outbox folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DraftSource {
    pub folder: String,
    pub uid_validity: u32,
    pub uid: u32,
}

/// When the sender wants the message to stop being readable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "at")]
pub enum ExpiryChoice {
    /// The organization's default.
    #[default]
    Default,
    /// Unix seconds.
    At(i64),
    Never,
}

impl ExpiryChoice {
    fn to_column(self) -> Option<i64> {
        match self {
            Self::Default => None,
            Self::At(at) => Some(at),
            Self::Never => Some(-1),
        }
    }

    fn from_column(value: Option<i64>) -> Self {
        match value {
            None => Self::Default,
            Some(-1) => Self::Never,
            Some(at) => Self::At(at),
        }
    }
}

/// A draft to send.
#[derive(Debug, Clone)]
pub struct NewOutgoing<'a> {
    pub client_key: &'a str,
    pub draft: &'a [u8],
    pub subject: &'a str,
    /// Everyone the message goes to: To, Cc and Bcc.
    pub recipients: &'a [String],
    pub expiry: ExpiryChoice,
    pub source: Option<&'a DraftSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutgoingState {
    /// Waiting to be sent, or to be resumed after a crash or an outage.
    Queued,
    Sent,
    /// Given up on, with the reason; the draft is kept.
    Failed,
}

impl OutgoingState {
    fn parse(text: &str) -> Self {
        match text {
            "sent" => Self::Sent,
            "failed" => Self::Failed,
            _ => Self::Queued,
        }
    }
}

/// One recipient of an outgoing message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutgoingRecipient {
    pub recipient: String,
    /// When their mail server accepted the notification.
    pub sent_at: Option<i64>,
    pub relay_answer: Option<String>,
    /// Why it was refused for good.
    pub error: Option<String>,
}

/// A journal entry as it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutgoingRecord {
    pub id: i64,
    pub client_key: String,
    #[serde(skip)]
    pub draft: Option<Vec<u8>>,
    pub subject: String,
    pub state: OutgoingState,
    pub error: Option<String>,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub expiry: ExpiryChoice,
    pub source: Option<DraftSource>,
    /// The server's id, once uploaded.
    pub message_id: Option<String>,
    #[serde(skip)]
    pub stored: Option<StoredMessage>,
    pub filed_at: Option<i64>,
    pub source_removed_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub recipients: Vec<OutgoingRecipient>,
}

impl AgentState {
    /// Writes a draft to the journal; returns its id. A draft from the
    /// Outbox already journaled returns the existing entry, made due again
    /// if it had failed (the user cleared the failure mark to retry).
    pub async fn queue_outgoing(&self, new: &NewOutgoing<'_>, now: i64) -> Result<i64, StateError> {
        let mut tx = self.pool.begin().await?;
        if let Some(source) = new.source {
            let existing: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM outgoing
                  WHERE source_folder = ? AND source_uid_validity = ? AND source_uid = ?",
            )
            .bind(&source.folder)
            .bind(i64::from(source.uid_validity))
            .bind(i64::from(source.uid))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = existing {
                sqlx::query(
                    "UPDATE outgoing SET state = 'queued', next_attempt_at = ?, updated_at = ?
                      WHERE id = ? AND state = 'failed'",
                )
                .bind(now)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(id);
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outgoing (client_key, draft, subject, state, next_attempt_at, expires_at,
                                   source_folder, source_uid_validity, source_uid, created_at, updated_at)
             VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(new.client_key)
        .bind(new.draft)
        .bind(new.subject)
        .bind(now)
        .bind(new.expiry.to_column())
        .bind(new.source.map(|source| source.folder.as_str()))
        .bind(new.source.map(|source| i64::from(source.uid_validity)))
        .bind(new.source.map(|source| i64::from(source.uid)))
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        for recipient in new.recipients {
            sqlx::query(
                "INSERT OR IGNORE INTO outgoing_recipients (outgoing_id, recipient) VALUES (?, ?)",
            )
            .bind(id)
            .bind(recipient)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn outgoing(&self, id: i64) -> Result<Option<OutgoingRecord>, StateError> {
        let Some(row) = sqlx::query("SELECT * FROM outgoing WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let recipients = sqlx::query(
            "SELECT recipient, sent_at, relay_answer, error FROM outgoing_recipients
              WHERE outgoing_id = ? ORDER BY rowid",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(OutgoingRecipient {
                recipient: row.try_get("recipient")?,
                sent_at: row.try_get("sent_at")?,
                relay_answer: row.try_get("relay_answer")?,
                error: row.try_get("error")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(record_from_row(&row, recipients)?))
    }

    /// The entry with this client key (a draft handed over through the Outbox).
    pub async fn outgoing_by_client_key(
        &self,
        client_key: &str,
    ) -> Result<Option<OutgoingRecord>, StateError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM outgoing WHERE client_key = ?")
            .bind(client_key)
            .fetch_optional(&self.pool)
            .await?;
        match id {
            Some(id) => self.outgoing(id).await,
            None => Ok(None),
        }
    }

    /// The UIDs of the drafts from `folder` (at this UIDVALIDITY) that the
    /// journal holds and has not given up on.
    pub async fn journaled_drafts(
        &self,
        folder: &str,
        uid_validity: u32,
    ) -> Result<std::collections::HashSet<u32>, StateError> {
        let uids: Vec<i64> = sqlx::query_scalar(
            "SELECT source_uid FROM outgoing
              WHERE source_folder = ? AND source_uid_validity = ? AND state != 'failed'",
        )
        .bind(folder)
        .bind(i64::from(uid_validity))
        .fetch_all(&self.pool)
        .await?;
        Ok(uids.into_iter().map(u32_of).collect())
    }

    /// Entries to send or resume now, oldest first.
    pub async fn due_outgoing(&self, now: i64) -> Result<Vec<i64>, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM outgoing WHERE state = 'queued' AND next_attempt_at <= ? ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// When the next queued entry falls due, if any is queued.
    pub async fn next_outgoing_due(&self) -> Result<Option<i64>, StateError> {
        Ok(sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outgoing WHERE state = 'queued'")
            .fetch_one(&self.pool)
            .await?)
    }

    /// The newest entries given up on, up to `limit`, and how many there are
    /// in all; and how many are still on their way.
    pub async fn outgoing_summary(
        &self,
        limit: u32,
    ) -> Result<(Vec<OutgoingRecord>, u64, u64), StateError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM outgoing WHERE state = 'failed' ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut failed = Vec::with_capacity(ids.len());
        for id in ids {
            failed.extend(self.outgoing(id).await?);
        }
        let (failed_total, queued): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(state = 'failed'), 0), COALESCE(SUM(state = 'queued'), 0) FROM outgoing",
        )
        .fetch_one(&self.pool)
        .await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok((failed, count(failed_total), count(queued)))
    }

    /// The newest entries, for the app and `sealpost-agent sent`.
    pub async fn recent_outgoing(&self, limit: u32) -> Result<Vec<OutgoingRecord>, StateError> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outgoing ORDER BY id DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            records.extend(self.outgoing(id).await?);
        }
        Ok(records)
    }

    pub async fn record_stored(
        &self,
        id: i64,
        stored: &StoredMessage,
        now: i64,
    ) -> Result<(), StateError> {
        let json = serde_json::to_string(stored)
            .map_err(|error| StateError::Database(sqlx::Error::Encode(Box::new(error))))?;
        sqlx::query("UPDATE outgoing SET message_id = ?, stored = ?, updated_at = ? WHERE id = ?")
            .bind(&stored.message_id)
            .bind(json)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records one recipient's notification as accepted (`Ok(answer)`) or
    /// refused for good (`Err(reason)`).
    pub async fn record_recipient(
        &self,
        id: i64,
        recipient: &str,
        outcome: Result<&str, &str>,
        now: i64,
    ) -> Result<(), StateError> {
        let (sent_at, answer, error) = match outcome {
            Ok(answer) => (Some(now), Some(answer), None),
            Err(error) => (None, None, Some(error)),
        };
        sqlx::query(
            "UPDATE outgoing_recipients SET sent_at = ?, relay_answer = ?, error = ?
              WHERE outgoing_id = ? AND recipient = ?",
        )
        .bind(sent_at)
        .bind(answer)
        .bind(error)
        .bind(id)
        .bind(recipient)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn record_filed(&self, id: i64, now: i64) -> Result<(), StateError> {
        sqlx::query("UPDATE outgoing SET filed_at = ?1, updated_at = ?1 WHERE id = ?2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn record_source_removed(&self, id: i64, now: i64) -> Result<(), StateError> {
        sqlx::query("UPDATE outgoing SET source_removed_at = ?1, updated_at = ?1 WHERE id = ?2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Done: the draft is dropped (the copy in Sent is the record).
    pub async fn finish_outgoing(&self, id: i64, now: i64) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE outgoing SET state = 'sent', draft = NULL, error = NULL, updated_at = ?
              WHERE id = ?",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keeps the entry queued until `retry_at`, recording why this attempt stopped.
    pub async fn retry_outgoing_later(
        &self,
        id: i64,
        error: &str,
        retry_at: i64,
        now: i64,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE outgoing SET attempts = attempts + 1, error = ?, next_attempt_at = ?,
                                 updated_at = ? WHERE id = ?",
        )
        .bind(error)
        .bind(retry_at)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives up on the entry, keeping its draft.
    pub async fn fail_outgoing(&self, id: i64, error: &str, now: i64) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE outgoing SET state = 'failed', attempts = attempts + 1, error = ?,
                                 updated_at = ? WHERE id = ?",
        )
        .bind(error)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Where the next look at the server's recalls starts (Unix seconds).
    pub async fn recall_since(&self) -> Result<Option<i64>, StateError> {
        Ok(sqlx::query_scalar("SELECT since FROM recall_cursor WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_recall_since(&self, since: i64) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO recall_cursor (id, since) VALUES (1, ?)
             ON CONFLICT (id) DO UPDATE SET since = excluded.since",
        )
        .bind(since)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn record_from_row(
    row: &SqliteRow,
    recipients: Vec<OutgoingRecipient>,
) -> Result<OutgoingRecord, StateError> {
    let stored: Option<String> = row.try_get("stored")?;
    let source_folder: Option<String> = row.try_get("source_folder")?;
    let source = match source_folder {
        Some(folder) => Some(DraftSource {
            folder,
            uid_validity: u32_of(
                row.try_get::<Option<i64>, _>("source_uid_validity")?.unwrap_or(0),
            ),
            uid: u32_of(row.try_get::<Option<i64>, _>("source_uid")?.unwrap_or(0)),
        }),
        None => None,
    };
    Ok(OutgoingRecord {
        id: row.try_get("id")?,
        client_key: row.try_get("client_key")?,
        draft: row.try_get("draft")?,
        subject: row.try_get("subject")?,
        state: OutgoingState::parse(row.try_get("state")?),
        error: row.try_get("error")?,
        attempts: u32_of(row.try_get("attempts")?),
        next_attempt_at: row.try_get("next_attempt_at")?,
        expiry: ExpiryChoice::from_column(row.try_get("expires_at")?),
        source,
        message_id: row.try_get("message_id")?,
        // Written by this agent from a value it parsed: unreadable only if damaged,
        // and then uploading again (same client key) gets it back.
        stored: stored.and_then(|json| serde_json::from_str(&json).ok()),
        filed_at: row.try_get("filed_at")?,
        source_removed_at: row.try_get("source_removed_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        recipients,
    })
}
