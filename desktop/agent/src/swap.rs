//! Swapping placeholders for the real messages, safely under crashes and
//! with several agents on one mailbox.
//!
//! For a verified notification `N` (placeholder UID `P`) in folder `F`:
//!
//! 1. fetch the content from the server and check its SHA-256 against `N`;
//! 2. look for copies already swapped in: `UID SEARCH HEADER
//!    X-Sealpost-Swapped <message id>`;
//! 3. if there is none, APPEND the content to `F`, with `X-Sealpost-Swapped`
//!    added on top and `P`'s flags and internal date, then search again;
//! 4. if several copies exist (two agents appended at once), keep the lowest
//!    UID and remove the others;
//! 5. remove `P` (UID STORE \Deleted + UID EXPUNGE of that UID only).
//!
//! A crash between any two steps leaves the placeholder, the real message or
//! both; the next run finds the copy in step 2 and only finishes the job.
//! Two agents converge on one copy because each runs step 4 after its own
//! APPEND, and both keep the same (lowest) UID.

use sealpost_proto::ContentDigest;
use sealpost_proto::notification::{SignedNotification, TrustedServer, parse};

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use futures_util::StreamExt;

use crate::imap::{HeaderFetch, ImapError, MailboxSession, NewMessage};
use crate::index::{IndexedMessage, SearchIndex};
use crate::server::{ServerClient, ServerError};
use crate::state::now_unix;

/// Marks a real message the agent put in place of a placeholder.
pub const SWAPPED_HEADER: &str = "X-Sealpost-Swapped";

/// The points between the swap's steps, where tests inject crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapStep {
    Fetched,
    Appended,
    DuplicatesRemoved,
    PlaceholderRemoved,
}

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(
        "the server's content for message {message_id} does not match the notification's SHA-256"
    )]
    DigestMismatch { message_id: String },
    #[error(
        "message {message_id} was appended but the mail server cannot find it; the placeholder is kept"
    )]
    CopyMissing { message_id: String },
    #[error("the swap was interrupted after {0:?}")]
    Interrupted(SwapStep),
}

/// What one pass over a folder did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderReport {
    /// How many messages the pass looked at (those after the cursor).
    pub examined: usize,
    pub swapped: Vec<SwappedMessage>,
    /// Notifications that failed verification: left alone, never fetched.
    pub rejected: Vec<RejectedNotification>,
    /// Placeholders left in place, and why, for status and the log.
    pub kept: Vec<KeptPlaceholder>,
    /// The folder's UIDVALIDITY during the pass.
    pub uid_validity: u32,
    /// Where the next pass starts: after everything seen, or at the first
    /// placeholder kept for a temporary reason so it is tried again.
    pub next_uid: u32,
}

impl FolderReport {
    /// Whether a placeholder waits for the server to come back.
    pub fn has_temporary(&self) -> bool {
        self.kept.iter().any(|kept| kept.temporary)
    }
}

/// A real message now in place of its placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwappedMessage {
    pub message_id: String,
    /// The real copy's UID.
    pub uid: u32,
}

/// A notification the agent refused to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedNotification {
    pub uid: u32,
    pub reason: String,
}

/// A placeholder left in place, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptPlaceholder {
    pub uid: u32,
    pub message_id: String,
    /// What the person can do about it, in a sentence.
    pub reason: String,
    /// Whether a later pass may succeed (server down) or not (revoked).
    pub temporary: bool,
}

type Hook = Box<dyn Fn(SwapStep) -> bool + Send + Sync>;

/// Notifications swapped together: one search for copies, one pipelined
/// APPEND, one removal for them all.
const BATCH_MESSAGES: usize = 64;
/// A batch also ends once its contents reach this size, so large messages
/// are not all held at once.
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Contents fetched from the server at the same time.
const FETCHES_IN_FLIGHT: usize = 8;
/// Headers read per FETCH, so a large backlog is not held at once.
const HEADERS_PER_FETCH: usize = 500;

/// A genuine notification waiting to be swapped.
struct Pending {
    placeholder: HeaderFetch,
    notification: SignedNotification,
    message_id: String,
}

/// What a pass has done so far.
struct Pass {
    report: FolderReport,
    /// The lowest UID of a placeholder kept for a temporary reason.
    first_retry: Option<u32>,
    /// Why the server is unavailable, once it failed for a temporary reason.
    unavailable: Option<String>,
}

impl Pass {
    fn keep(&mut self, pending: Pending, reason: String, temporary: bool) {
        let uid = pending.placeholder.uid;
        if temporary {
            self.first_retry = Some(self.first_retry.map_or(uid, |first| first.min(uid)));
        }
        self.report.kept.push(KeptPlaceholder {
            uid,
            message_id: pending.message_id,
            reason,
            temporary,
        });
    }
}

pub struct Swapper {
    server: ServerClient,
    trusted: TrustedServer,
    /// The address this agent reads mail for.
    recipient: String,
    /// Returns false to abort at that step: crash injection for tests.
    hook: Option<Hook>,
    /// Where swapped messages are indexed for local search.
    index: Option<Arc<SearchIndex>>,
}

impl Swapper {
    pub fn new(server: ServerClient, trusted: TrustedServer, recipient: &str) -> Self {
        Self { server, trusted, recipient: recipient.to_owned(), hook: None, index: None }
    }

    /// Indexes every message swapped in. The mailbox stays the source of
    /// truth: an indexing failure is logged, never a reason to keep a placeholder.
    pub fn with_index(mut self, index: Arc<SearchIndex>) -> Self {
        self.index = Some(index);
        self
    }

    /// Calls `hook` after each step; the swap stops there when it returns false.
    pub fn with_hook(mut self, hook: impl Fn(SwapStep) -> bool + Send + Sync + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    fn step(&self, step: SwapStep) -> Result<(), SwapError> {
        crate::crash_point::reached("swap", &step);
        match &self.hook {
            Some(hook) if !hook(step) => Err(SwapError::Interrupted(step)),
            _ => Ok(()),
        }
    }

    /// Swaps every genuine notification in `folder`. Forged ones are logged
    /// and left alone; server trouble defers a notification to a later pass.
    pub async fn process_folder(
        &self,
        session: &mut MailboxSession,
        folder: &str,
    ) -> Result<FolderReport, SwapError> {
        self.process_folder_from(session, folder, 1).await
    }

    /// Like [`Self::process_folder`], for the messages from UID `first` on.
    pub async fn process_folder_from(
        &self,
        session: &mut MailboxSession,
        folder: &str,
        first: u32,
    ) -> Result<FolderReport, SwapError> {
        let uid_validity = session.select(folder).await?;
        let uids = session.uids_from(first).await?;
        let mut pass = Pass {
            report: FolderReport {
                uid_validity,
                examined: uids.len(),
                next_uid: uids.last().map_or(first, |last| last + 1),
                ..FolderReport::default()
            },
            first_retry: None,
            unavailable: None,
        };
        for chunk in uids.chunks(HEADERS_PER_FETCH) {
            let mut pending = VecDeque::new();
            let mut marked = Vec::new();
            for fetch in session.fetch_headers(chunk).await? {
                if fetch.deleted {
                    marked.extend(self.marked_for_removal(fetch));
                } else {
                    pending.extend(self.genuine(folder, fetch, &mut pass.report));
                }
            }
            self.finish_removals(session, folder, &marked).await?;
            while !pending.is_empty() {
                if let Some(reason) = pass.unavailable.clone() {
                    // The server failed for a temporary reason: the rest of
                    // the pass waits too instead of timing out once each.
                    for waiting in pending.drain(..) {
                        pass.keep(waiting, reason.clone(), true);
                    }
                    break;
                }
                let batch: Vec<Pending> =
                    pending.drain(..BATCH_MESSAGES.min(pending.len())).collect();
                let unfetched = self.swap_batch(session, folder, batch, &mut pass).await?;
                for waiting in unfetched.into_iter().rev() {
                    pending.push_front(waiting);
                }
            }
        }
        let mut report = pass.report;
        match pass.first_retry {
            Some(uid) => report.next_uid = uid,
            None if !report.swapped.is_empty() => {
                report.next_uid = self.after_own_copies(session, &report).await?;
            }
            None => {}
        }
        Ok(report)
    }

    /// A genuine placeholder already marked `\Deleted`, as step 5 leaves
    /// it when the process dies, or the server refuses the EXPUNGE, between
    /// the STORE and the EXPUNGE: its UID and message id.
    fn marked_for_removal(&self, fetch: HeaderFetch) -> Option<(u32, String)> {
        if !looks_like_notification(&fetch) {
            return None;
        }
        let notification = parse(&fetch.header).ok()?;
        notification.verify(&self.trusted, &self.recipient).ok()?;
        Some((fetch.uid, notification.fields.message_id.to_string()))
    }

    /// Finishes step 5 for placeholders an earlier run marked `\Deleted`
    /// but did not expunge, once their real copy is in the folder; without
    /// UIDPLUS the mark is the designed end state and stays for the
    /// person's mail program.
    async fn finish_removals(
        &self,
        session: &mut MailboxSession,
        folder: &str,
        marked: &[(u32, String)],
    ) -> Result<(), SwapError> {
        if marked.is_empty() || !session.removes_exactly() {
            return Ok(());
        }
        let ids: Vec<&str> = marked.iter().map(|(_, id)| id.as_str()).collect();
        let copies = session.find_by_header(SWAPPED_HEADER, &ids).await?;
        let swapped: Vec<u32> =
            marked.iter().filter(|(_, id)| copies.contains_key(id)).map(|(uid, _)| *uid).collect();
        if !swapped.is_empty() {
            tracing::info!(
                folder,
                count = swapped.len(),
                "removing placeholders an interrupted swap left marked deleted"
            );
            session.remove(&swapped).await?;
        }
        Ok(())
    }

    /// The notification `fetch` holds, when it is one and genuine; forged
    /// and malformed ones are recorded as rejected and left alone.
    fn genuine(
        &self,
        folder: &str,
        fetch: HeaderFetch,
        report: &mut FolderReport,
    ) -> Option<Pending> {
        // A placeholder marked deleted is not brought back to life.
        if fetch.deleted || !looks_like_notification(&fetch) {
            return None;
        }
        let notification = match parse(&fetch.header) {
            Ok(notification) => notification,
            Err(error) => {
                tracing::warn!(folder, uid = fetch.uid, %error, "malformed Sealpost headers; left alone");
                report.rejected.push(RejectedNotification {
                    uid: fetch.uid,
                    reason: format!("malformed Sealpost headers: {error}"),
                });
                return None;
            }
        };
        if let Err(error) = notification.verify(&self.trusted, &self.recipient) {
            tracing::warn!(folder, uid = fetch.uid, %error, "notification failed verification: possible phishing; not fetched, left alone");
            report.rejected.push(RejectedNotification {
                uid: fetch.uid,
                reason: format!("possible phishing, not fetched: {error}"),
            });
            return None;
        }
        let message_id = notification.fields.message_id.to_string();
        Some(Pending { placeholder: fetch, notification, message_id })
    }

    /// Swaps `batch` (the steps in the module documentation, each done once
    /// for the whole batch). Returns the notifications left unfetched
    /// because the batch's contents reached [`BATCH_BYTES`].
    async fn swap_batch(
        &self,
        session: &mut MailboxSession,
        folder: &str,
        mut batch: Vec<Pending>,
        pass: &mut Pass,
    ) -> Result<Vec<Pending>, SwapError> {
        let ids: Vec<&str> = batch.iter().map(|pending| pending.message_id.as_str()).collect();
        let existing = session.find_by_header(SWAPPED_HEADER, &ids).await?;
        // A copy left by an interrupted run needs no content, unless for the index.
        let needs_content =
            |pending: &Pending| self.index.is_some() || !existing.contains_key(&pending.message_id);
        let mut contents: Vec<Option<Result<Vec<u8>, SwapError>>> = Vec::new();
        let mut bytes = 0;
        {
            // Created up front (not yet running) so the stream's item is one concrete future type.
            let requests: Vec<_> = batch
                .iter()
                .map(|pending| self.content_if(needs_content(pending), &pending.notification))
                .collect();
            let mut fetches = futures_util::stream::iter(requests).buffered(FETCHES_IN_FLIGHT);
            while let Some(content) = fetches.next().await {
                bytes += content.as_ref().and_then(|c| c.as_ref().ok()).map_or(0, Vec::len);
                contents.push(content);
                if bytes >= BATCH_BYTES {
                    break;
                }
            }
        }
        let unfetched = batch.split_off(contents.len());

        let mut ready: Vec<(Pending, Option<Vec<u8>>)> = Vec::with_capacity(batch.len());
        for (pending, content) in batch.into_iter().zip(contents) {
            match content {
                None => ready.push((pending, None)),
                Some(Ok(content)) => ready.push((pending, Some(content))),
                Some(Err(SwapError::Server(error))) => {
                    let temporary = error.is_temporary();
                    tracing::warn!(folder, uid = pending.placeholder.uid, %error, temporary, "placeholder kept");
                    let reason = explain(&error);
                    if temporary {
                        pass.unavailable = Some(reason.clone());
                    }
                    pass.keep(pending, reason, temporary);
                }
                Some(Err(error @ SwapError::DigestMismatch { .. })) => {
                    tracing::warn!(folder, uid = pending.placeholder.uid, %error, "placeholder kept");
                    pass.report.rejected.push(RejectedNotification {
                        uid: pending.placeholder.uid,
                        reason: error.to_string(),
                    });
                }
                Some(Err(error)) => return Err(error),
            }
        }
        if ready.is_empty() {
            return Ok(unfetched);
        }
        self.step(SwapStep::Fetched)?;

        let new: Vec<NewMessage<'_>> = ready
            .iter()
            .filter(|(pending, _)| !existing.contains_key(&pending.message_id))
            .filter_map(|(pending, content)| {
                Some(NewMessage {
                    flags: &pending.placeholder.flags,
                    internal_date: pending.placeholder.internal_date.as_deref(),
                    content: content.as_deref()?,
                })
            })
            .collect();
        let copies = if new.is_empty() {
            existing
        } else {
            session.append_all(folder, &new).await?;
            self.step(SwapStep::Appended)?;
            // Another agent may have appended too: look again, keep the lowest UID.
            let ids: Vec<&str> =
                ready.iter().map(|(pending, _)| pending.message_id.as_str()).collect();
            session.find_by_header(SWAPPED_HEADER, &ids).await?
        };
        let duplicates: Vec<u32> = ready
            .iter()
            .filter_map(|(pending, _)| copies.get(&pending.message_id))
            .flat_map(|uids| uids.iter().skip(1).copied())
            .collect();
        session.remove(&duplicates).await?;
        self.step(SwapStep::DuplicatesRemoved)?;

        let mut swapped = Vec::with_capacity(ready.len());
        let mut entries = Vec::new();
        for (pending, content) in &ready {
            let Some(&uid) = copies.get(&pending.message_id).and_then(|uids| uids.first()) else {
                return Err(SwapError::CopyMissing { message_id: pending.message_id.clone() });
            };
            if let Some(content) = content {
                entries.push(IndexedMessage {
                    message_id: &pending.message_id,
                    folder,
                    uid,
                    raw: content,
                });
            }
            swapped.push(SwappedMessage { message_id: pending.message_id.clone(), uid });
        }
        if let Some(index) = &self.index
            && let Err(error) = index.add_all(&entries, now_unix()).await
        {
            tracing::warn!(count = entries.len(), %error, "could not index the swapped messages; search misses them until the index is rebuilt");
        }
        let placeholders: Vec<u32> =
            ready.iter().map(|(pending, _)| pending.placeholder.uid).collect();
        session.remove(&placeholders).await?;
        self.step(SwapStep::PlaceholderRemoved)?;
        for message in &swapped {
            tracing::info!(
                folder,
                message_id = message.message_id,
                uid = message.uid,
                "placeholder swapped for the real message"
            );
        }
        pass.report.swapped.extend(swapped);
        Ok(unfetched)
    }
}

impl Swapper {
    /// The real copies this pass appended come after the cursor; moving
    /// the cursor past them spares the next pass from reading them again.
    /// It stops at the first message that is not ours (mail that arrived
    /// during the pass), so nothing new is ever skipped.
    async fn after_own_copies(
        &self,
        session: &mut MailboxSession,
        report: &FolderReport,
    ) -> Result<u32, SwapError> {
        let ours: HashSet<u32> = report.swapped.iter().map(|swapped| swapped.uid).collect();
        let later = session.uids_from(report.next_uid).await?;
        Ok(match later.iter().find(|uid| !ours.contains(uid)) {
            Some(&first_new) => first_new,
            None => later.last().map_or(report.next_uid, |last| last + 1),
        })
    }

    async fn content_if(
        &self,
        needed: bool,
        notification: &SignedNotification,
    ) -> Option<Result<Vec<u8>, SwapError>> {
        if needed { Some(self.fetch_marked(notification).await) } else { None }
    }

    /// The real message, checked against the notification's digest, with
    /// the [`SWAPPED_HEADER`] line on top that marks it as swapped in.
    async fn fetch_marked(&self, notification: &SignedNotification) -> Result<Vec<u8>, SwapError> {
        let message_id = notification.fields.message_id.as_str();
        let content = self.server.content(message_id).await?;
        if ContentDigest::of(&content) != notification.fields.content_sha256 {
            return Err(SwapError::DigestMismatch { message_id: message_id.to_owned() });
        }
        let mut marked = format!("{SWAPPED_HEADER}: {message_id}\r\n").into_bytes();
        marked.extend_from_slice(&content);
        Ok(marked)
    }
}

/// A sentence for the person, from what the server said.
fn explain(error: &ServerError) -> String {
    use sealpost_proto::api::ErrorCode;
    match error {
        ServerError::Refused { code: Some(ErrorCode::DeviceRevoked), .. } => {
            "this computer was signed out of Sealpost; register it again to read secure messages"
                .into()
        }
        ServerError::Refused { code: Some(ErrorCode::NotFound), .. } => {
            "the secure message is no longer available on the server (withdrawn or expired)".into()
        }
        ServerError::Refused {
            code: Some(ErrorCode::MessageRecalled | ErrorCode::MessageExpired),
            message,
            ..
        } => message.clone(),
        ServerError::Refused {
            code: Some(ErrorCode::Unauthenticated | ErrorCode::TokenExpired),
            ..
        } => "the server no longer accepts this computer's sign-in; register it again".into(),
        other if other.is_temporary() => {
            format!("the Sealpost server is unavailable; will retry ({other})")
        }
        other => other.to_string(),
    }
}

/// Cheap check before parsing: any `X-Sealpost-` header field other than
/// the swapped marker (a real message the agent put back carries it).
fn looks_like_notification(fetch: &HeaderFetch) -> bool {
    let text = String::from_utf8_lossy(&fetch.header).to_ascii_lowercase();
    text.contains("\nx-sealpost-version:") || text.starts_with("x-sealpost-version:")
}
