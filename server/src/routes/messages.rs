//! Storing secure messages and handing them to their sender and recipients only.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealpost_proto::MessageId;
use sealpost_proto::api::{
    DeliveryReport, DeliveryState, ErrorBody, IssuedNotification, Lifecycle, MessageInfo,
    RecalledMessage, Recalls, RecipientDelivery, Retrieval, RetrievalChannel, RetrievalLog,
    SenderNotified, StoredMessage, UploadMetadata,
};
use sealpost_proto::notification::{Notification, SignedNotification, compose_email};
use time::OffsetDateTime;

use crate::auth::{AccessToken, Caller};
use crate::blobs::{Content, StoredBlob};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::masking;
use crate::notify;
use crate::routes::input::email_address;
use crate::state::AppState;
use crate::store::{
    AccountRecord, DeviceKind, MessageRecord, NewNotification, OutboxState, StoreError,
};

/// Stores a message (multipart: a JSON part `metadata` with the recipients and
/// a part `content` with the raw MIME message) and returns one signed
/// notification per recipient.
#[utoipa::path(post, path = "/api/v1/messages", tag = "messages", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "`metadata`: UploadMetadata JSON; `content`: message/rfc822"),
    responses((status = 201, body = StoredMessage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, ApiJson<StoredMessage>)> {
    // Taken as a Result so a wrong content type is a JSON error, not axum's plain text.
    let mut multipart = multipart?;
    let id = MessageId::generate();
    let limit = state.settings.messages.max_size;
    let mut metadata: Option<UploadMetadata> = None;
    let mut stored: Option<StoredBlob> = None;
    let outcome = async {
        while let Some(field) = multipart.next_field().await? {
            match field.name() {
                Some("metadata") if metadata.is_none() => {
                    let bytes = field.bytes().await?;
                    metadata = Some(serde_json::from_slice(&bytes).map_err(|error| {
                        ApiError::bad_request(format!("The `metadata` part is not valid JSON of the form {{\"recipients\": [..]}}: {error}"))
                    })?);
                }
                Some("content") if stored.is_none() => {
                    stored = Some(state.blobs.write(&id, field, limit).await?);
                }
                Some(name) => return Err(ApiError::bad_request(format!("Unexpected or repeated part {name:?}: send `metadata` and `content` once each."))),
                None => return Err(ApiError::bad_request("Every part needs a name: `metadata` or `content`.")),
            }
        }
        let metadata = metadata.ok_or_else(|| ApiError::bad_request("The `metadata` part is missing."))?;
        let blob = stored.ok_or_else(|| ApiError::bad_request("The `content` part (the raw MIME message) is missing."))?;
        if blob.size == 0 {
            return Err(ApiError::bad_request("The `content` part is empty."));
        }
        let upload =
            NewUpload::from_metadata(metadata, state.settings.messages.max_recipients)?;
        Ok((blob, upload))
    }
    .await;
    let (blob, upload) = match outcome {
        Ok(parts) => parts,
        Err(error) => {
            state.blobs.remove(&id).await;
            return Err(error);
        }
    };
    // An upload sent again after its answer was lost: the message is stored already.
    let existing = match &upload.client_key {
        Some(key) => match state.store.message_by_client_key(&caller.account.id, key).await {
            Ok(existing) => existing,
            Err(error) => {
                state.blobs.remove(&id).await;
                return Err(error.into());
            }
        },
        None => None,
    };
    if let Some(existing) = existing {
        state.blobs.remove(&id).await;
        return Ok((
            StatusCode::OK,
            ApiJson(stored_message(&state, &caller.account, &existing, None)),
        ));
    }
    let stored = store_message(&state, &caller.account, id, blob, upload).await?;
    Ok((StatusCode::CREATED, ApiJson(stored)))
}

/// What a sender asks of one upload besides its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUpload {
    /// Checked and normalised addresses, each once.
    pub recipients: Vec<String>,
    /// Whether the server mails the notifications itself.
    pub send_notifications: bool,
    pub expiry: Expiry,
    pub client_key: Option<String>,
}

/// When a message stops being readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The organization's `messages.expire_after_days`.
    OrganizationDefault,
    At(OffsetDateTime),
    Never,
}

impl NewUpload {
    /// The upload's metadata checked, with at most `max_recipients` recipients.
    pub fn from_metadata(metadata: UploadMetadata, max_recipients: usize) -> ApiResult<Self> {
        let recipients = recipients(&metadata.recipients, max_recipients)?;
        let expiry = match (metadata.expires_at, metadata.never_expires) {
            (Some(_), true) => {
                return Err(ApiError::bad_request(
                    "Send either `expires_at` or `never_expires`, not both.",
                ));
            }
            (Some(at), false) => Expiry::At(at),
            (None, true) => Expiry::Never,
            (None, false) => Expiry::OrganizationDefault,
        };
        if let Some(key) = &metadata.client_key
            && (key.is_empty() || key.len() > 100 || key.chars().any(char::is_control))
        {
            return Err(ApiError::bad_request(
                "`client_key` must be 1 to 100 characters, without control characters.",
            ));
        }
        Ok(Self {
            recipients,
            send_notifications: metadata.send_notifications,
            expiry,
            client_key: metadata.client_key,
        })
    }

    /// When the message expires, stored at `now`; refused when in the past.
    pub fn expires_at(
        &self,
        now: OffsetDateTime,
        default_days: u32,
    ) -> ApiResult<Option<OffsetDateTime>> {
        match self.expiry {
            Expiry::Never => Ok(None),
            Expiry::OrganizationDefault => {
                Ok((default_days > 0).then(|| now + time::Duration::days(i64::from(default_days))))
            }
            Expiry::At(at) if at <= now => Err(ApiError::bad_request(format!(
                "`expires_at` ({at}) is not in the future: choose a later time, or leave it out for the organization's default."
            ))),
            Expiry::At(at) => Ok(Some(at)),
        }
    }
}

/// Records an uploaded message (its content already written as `blob`) with
/// one signed notification per recipient, queued for sending in the same
/// transaction when the server sends them. The content is removed again if
/// the message cannot be recorded.
pub async fn store_message(
    state: &AppState,
    sender: &AccountRecord,
    id: MessageId,
    blob: StoredBlob,
    upload: NewUpload,
) -> ApiResult<StoredMessage> {
    let now = state.clock.now();
    let expires_at = match upload.expires_at(now, state.settings.messages.expire_after_days) {
        Ok(at) => at,
        Err(error) => {
            state.blobs.remove(&id).await;
            return Err(error);
        }
    };
    let headers = notify::SenderHeaders::parse(&blob.head, &sender.email);
    let record = MessageRecord {
        id: id.clone(),
        sender_account_id: sender.id.clone(),
        sender_email: sender.email.clone(),
        content_sha256: blob.digest,
        size: blob.size,
        created_at: now,
        recipients: upload.recipients,
        subject: headers.subject.clone(),
        expires_at,
        recalled_at: None,
        header_message_id: headers.message_id.clone(),
        client_key: upload.client_key,
    };
    let signed = sign_notifications(state, &record);
    let reply_addresses = match upload.send_notifications {
        true => {
            match masking::notification_reply_addresses(state, sender, &id, &record.recipients)
                .await
            {
                Ok(addresses) => addresses,
                Err(error) => {
                    state.blobs.remove(&id).await;
                    return Err(error.into());
                }
            }
        }
        false => HashMap::new(),
    };
    let outgoing = if upload.send_notifications {
        let personal: Vec<IssuedNotification> = signed
            .iter()
            .map(|signed| {
                let token = state.links.token(&id, &signed.fields.recipient);
                issue_notification(state, sender, signed, Some(&token))
            })
            .collect();
        let emails = NotificationEmails {
            sender,
            id: &id,
            headers: &headers,
            reply_addresses: &reply_addresses,
        };
        emails.compose(state, &record.recipients, &personal, now)
    } else {
        Vec::new()
    };
    let answers: Vec<String> =
        headers.in_reply_to.iter().chain(&headers.references).cloned().collect();
    match state.store.insert_message(&record, &answers, &outgoing).await {
        Ok(()) => {}
        Err(StoreError::Conflict) if record.client_key.is_some() => {
            // The same upload, sent twice at once: the other one was stored.
            state.blobs.remove(&id).await;
            let key = record.client_key.as_deref().unwrap_or_default();
            let existing = state.store.message_by_client_key(&sender.id, key).await?;
            return existing
                .map(|existing| stored_message(state, sender, &existing, None))
                .ok_or_else(|| ApiError::internal(&"a client key conflicted with no message"));
        }
        Err(error) => {
            state.blobs.remove(&id).await;
            return Err(error.into());
        }
    }
    if !outgoing.is_empty() {
        state.outbox.wake();
    }
    state.metrics.messages_stored.inc();
    state.metrics.message_bytes_stored.inc_by(blob.size);
    tracing::info!(message_id = %id, sender = %sender.id, size = blob.size, recipients = record.recipients.len(), queued = outgoing.len(), "message stored");
    Ok(stored_message(state, sender, &record, Some(signed)))
}

/// The answer to an upload of `message`, with its notifications for the
/// sender's own mail program, signed now unless `signed` already are.
/// Signatures are deterministic, so an upload answered again gets the same
/// notifications.
fn stored_message(
    state: &AppState,
    sender: &AccountRecord,
    message: &MessageRecord,
    signed: Option<Vec<SignedNotification>>,
) -> StoredMessage {
    let signed = signed.unwrap_or_else(|| sign_notifications(state, message));
    StoredMessage {
        message_id: message.id.to_string(),
        content_sha256: message.content_sha256.to_hex(),
        size: message.size,
        created_at: message.created_at,
        expires_at: message.expires_at,
        // The sender sees these, so they carry the plain link; the
        // recipient's own token (which lets them register as that address)
        // travels only in the email the server sends them.
        notifications: signed
            .iter()
            .map(|signed| issue_notification(state, sender, signed, None))
            .collect(),
    }
}

/// One signed claim per recipient of `message`.
fn sign_notifications(state: &AppState, message: &MessageRecord) -> Vec<SignedNotification> {
    let signer = state.keys.active();
    message
        .recipients
        .iter()
        .map(|recipient| {
            signer.sign(Notification {
                message_id: message.id.clone(),
                origin: state.origin.clone(),
                recipient: recipient.clone(),
                content_sha256: message.content_sha256,
            })
        })
        .collect()
}

/// The notification of `signed`, its link carrying the recipient's `token`.
fn issue_notification(
    state: &AppState,
    sender: &AccountRecord,
    signed: &SignedNotification,
    token: Option<&str>,
) -> IssuedNotification {
    let organization = state.organization.current();
    let mut read_url = format!("{}/messages/{}", organization.center_url, signed.fields.message_id);
    if let Some(token) = token {
        read_url = format!("{read_url}?t={token}");
    }
    organization.issue(signed, sender.display_name.as_deref(), &sender.email, &read_url)
}

/// What every notification email of one message repeats.
struct NotificationEmails<'a> {
    sender: &'a AccountRecord,
    id: &'a MessageId,
    headers: &'a notify::SenderHeaders,
    /// Each recipient's masked address for answers, when the sender is a
    /// member and masking is on.
    reply_addresses: &'a HashMap<String, String>,
}

impl NotificationEmails<'_> {
    /// One complete email per recipient, with the sender's own headers.
    fn compose(
        &self,
        state: &AppState,
        recipients: &[String],
        notifications: &[IssuedNotification],
        now: OffsetDateTime,
    ) -> Vec<NewNotification> {
        let origin_host = state.origin.trim_start_matches("https://");
        let envelope = notify::envelope(
            self.headers,
            self.sender,
            recipients,
            now,
            origin_host,
            self.id.as_str(),
        );
        notifications
            .iter()
            .map(|issued| {
                let mut email = compose_email(&envelope, issued);
                if let Some(address) = self.reply_addresses.get(&issued.recipient) {
                    email = masking::with_reply_to(
                        &email,
                        self.sender.display_name.as_deref(),
                        address,
                    );
                }
                NewNotification {
                    recipient: issued.recipient.clone(),
                    email: state.dkim_signed(email, now),
                }
            })
            .collect()
    }
}

/// Checked, normalised and each once.
pub fn recipients(inputs: &[String], max: usize) -> ApiResult<Vec<String>> {
    if inputs.is_empty() {
        return Err(ApiError::bad_request("Name at least one recipient in `metadata.recipients`."));
    }
    if inputs.len() > max {
        return Err(ApiError::bad_request(format!("A message may have at most {max} recipients.")));
    }
    let mut addresses = Vec::with_capacity(inputs.len());
    for input in inputs {
        let address = email_address(input)?;
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    Ok(addresses)
}

/// The message if the caller is its sender or one of its recipients; otherwise
/// 404, exactly as if it did not exist.
async fn visible_message(state: &AppState, caller: &Caller, id: &str) -> ApiResult<MessageRecord> {
    let id = MessageId::parse(id).map_err(|_| ApiError::not_found())?;
    visible_to(caller, state.store.message(&id).await?)
}

fn visible_to(caller: &Caller, message: Option<MessageRecord>) -> ApiResult<MessageRecord> {
    message.filter(|message| message.is_visible_to(&caller.account)).ok_or_else(ApiError::not_found)
}

/// The caller and the message, if visible to them, looked up together: the
/// lookups every retrieval makes, as one.
async fn caller_and_visible_message(
    state: &AppState,
    AccessToken(hash): AccessToken,
    id: &str,
) -> ApiResult<(Caller, MessageRecord)> {
    let Ok(id) = MessageId::parse(id) else {
        // Refused callers learn nothing, not even that the id is malformed.
        Caller::admit(state.store.device_by_access_hash(hash).await?, state)?;
        return Err(ApiError::not_found());
    };
    let (found, message) = state.store.device_and_message(hash, &id).await?;
    let caller = Caller::admit(found, state)?;
    let message = visible_to(&caller, message)?;
    Ok((caller, message))
}

/// The message if the caller sent it; recipients get the same 404 as strangers.
async fn sent_message(state: &AppState, caller: &Caller, id: &str) -> ApiResult<MessageRecord> {
    let message = visible_message(state, caller, id).await?;
    if message.sender_account_id == caller.account.id {
        Ok(message)
    } else {
        Err(ApiError::not_found())
    }
}

#[utoipa::path(get, path = "/api/v1/messages/{message_id}", tag = "messages", security(("bearer" = [])),
    params(("message_id" = String, Path)),
    responses((status = 200, body = MessageInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn info(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<MessageInfo>> {
    let message = visible_message(&state, &caller, &id).await?;
    Ok(ApiJson(message_info(message)))
}

fn message_info(message: MessageRecord) -> MessageInfo {
    MessageInfo {
        message_id: message.id.to_string(),
        lifecycle: lifecycle(&message),
        sender: message.sender_email,
        recipients: message.recipients,
        content_sha256: message.content_sha256.to_hex(),
        size: message.size,
        created_at: message.created_at,
    }
}

fn lifecycle(message: &MessageRecord) -> Lifecycle {
    Lifecycle { expires_at: message.expires_at, recalled_at: message.recalled_at }
}

/// Recalls a message (sender only): from now on nobody can read it, its
/// content is deleted, and recipients' agents learn of it from
/// `GET /api/v1/recalls`. Recalling twice keeps the first time.
#[utoipa::path(post, path = "/api/v1/messages/{message_id}/recall", tag = "messages", security(("bearer" = [])),
    params(("message_id" = String, Path)),
    responses((status = 200, body = MessageInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn recall(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<MessageInfo>> {
    let mut message = sent_message(&state, &caller, &id).await?;
    message.recalled_at = Some(recall_message(&state, &message).await?);
    Ok(ApiJson(message_info(message)))
}

/// Marks `message` recalled and deletes its content (or leaves that to the
/// purge when storage fails now); returns when it was recalled.
pub async fn recall_message(
    state: &AppState,
    message: &MessageRecord,
) -> ApiResult<OffsetDateTime> {
    let recalled_at = state.store.recall_message(&message.id, state.clock.now()).await?;
    crate::lifecycle::remove_content(state, &message.id).await?;
    tracing::info!(message_id = %message.id, "message recalled");
    Ok(recalled_at)
}

/// Records that the sender's own mail server accepted these recipients'
/// notifications (sender only), so the delivery slip shows them notified.
#[utoipa::path(post, path = "/api/v1/messages/{message_id}/notifications", tag = "messages", security(("bearer" = [])),
    params(("message_id" = String, Path)), request_body = SenderNotified,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn sender_notified(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(report): ApiJson<SenderNotified>,
) -> ApiResult<StatusCode> {
    let message = sent_message(&state, &caller, &id).await?;
    let recipients = recipients(&report.recipients, state.settings.messages.max_recipients)?;
    if let Some(stranger) = recipients.iter().find(|r| !message.recipients.contains(r)) {
        return Err(ApiError::bad_request(format!(
            "{stranger} is not a recipient of this message."
        )));
    }
    let answer = report
        .relay_answer
        .filter(|answer| !answer.trim().is_empty())
        .map(|answer| answer.chars().filter(|c| !c.is_control()).take(500).collect())
        .unwrap_or_else(|| "accepted by the sender's mail server".to_owned());
    state
        .store
        .record_sender_notified(&message.id, &recipients, &answer, state.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct RecallsQuery {
    /// Unix seconds: recalls at or after this time (the previous answer's `next_since`).
    #[serde(default)]
    since: i64,
}

/// Most recalls one answer lists; the client asks again from `next_since`.
const RECALLS_PER_PAGE: u32 = 500;

/// The messages sent to the caller that were recalled since `since`, and
/// what the organization wants done with copies already in mailboxes.
#[utoipa::path(get, path = "/api/v1/recalls", tag = "messages", security(("bearer" = [])),
    params(RecallsQuery),
    responses((status = 200, body = Recalls), (status = 401, body = ErrorBody)))]
pub async fn recalls(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<RecallsQuery>,
) -> ApiResult<ApiJson<Recalls>> {
    let since = OffsetDateTime::from_unix_timestamp(query.since)
        .map_err(|_| ApiError::bad_request("`since` is not a time in Unix seconds."))?;
    let found = state.store.recalls_for(&caller.account.email, since, RECALLS_PER_PAGE).await?;
    // A full page may end amid recalls of one second: the next page starts
    // at that second again (the client skips what it has seen). Otherwise
    // everything up to now has been listed, bar recalls in this very second.
    let next_since = match found.last() {
        Some((_, last)) if found.len() == RECALLS_PER_PAGE as usize => last.unix_timestamp(),
        _ => state.clock.now().unix_timestamp().max(query.since),
    };
    Ok(ApiJson(Recalls {
        recalled: found
            .into_iter()
            .map(|(id, recalled_at)| RecalledMessage { message_id: id.to_string(), recalled_at })
            .collect(),
        copies: state.settings.messages.recalled_copies,
        next_since,
    }))
}

/// The raw MIME message. Each call is recorded as a retrieval.
#[utoipa::path(get, path = "/api/v1/messages/{message_id}/content", tag = "messages", security(("bearer" = [])),
    params(("message_id" = String, Path)),
    responses((status = 200, description = "The message as stored", content_type = "message/rfc822"),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn content(
    State(state): State<AppState>,
    token: AccessToken,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let (caller, message) = caller_and_visible_message(&state, token, &id).await?;
    if let Some(why) = message.unreadable_at(state.clock.now()) {
        return Err(ApiError::unreadable(why));
    }
    // Small content whole; larger content streamed from the object store.
    let body = match state.blobs.open(&message.id, message.size).await? {
        Content::Whole(content) => Body::from(content),
        Content::Stream(chunks) => Body::from_stream(chunks),
    };
    state
        .store
        .record_retrieval(&message.id, &caller.account.id, &caller.device.id, state.clock.now())
        .await?;
    state.metrics.retrievals.inc();
    tracing::info!(message_id = %message.id, account = %caller.account.id, device = %caller.device.id, "message retrieved");
    Ok((
        [
            (header::CONTENT_TYPE, "message/rfc822".to_owned()),
            (header::CONTENT_LENGTH, message.size.to_string()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (
                header::HeaderName::from_static("x-sealpost-content-sha256"),
                message.content_sha256.to_hex(),
            ),
        ],
        body,
    )
        .into_response())
}

/// Who retrieved the message, when and from which device: for its sender only.
#[utoipa::path(get, path = "/api/v1/messages/{message_id}/retrievals", tag = "messages", security(("bearer" = [])),
    params(("message_id" = String, Path)),
    responses((status = 200, body = RetrievalLog), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn retrievals(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<RetrievalLog>> {
    let message = sent_message(&state, &caller, &id).await?;
    let retrievals = state.store.retrievals(&message.id).await?;
    Ok(ApiJson(RetrievalLog {
        message_id: message.id.to_string(),
        retrievals: retrievals
            .into_iter()
            .map(|record| Retrieval {
                account: record.account_email,
                device_id: record.device_id.to_string(),
                device_name: record.device_name,
                retrieved_at: record.retrieved_at,
            })
            .collect(),
    }))
}

/// Each recipient's state: queued, sent (with the relay's answer), failed or
/// bounced (with the reason), retrieved. For the sender only.
#[utoipa::path(get, path = "/api/v1/messages/{message_id}/deliveries", tag = "messages", security(("bearer" = [])),
    params(("message_id" = String, Path)),
    responses((status = 200, body = DeliveryReport), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<DeliveryReport>> {
    let message = sent_message(&state, &caller, &id).await?;
    Ok(ApiJson(delivery_report(&state, &message).await?))
}

/// Where each recipient's notification is and whether they retrieved the
/// message: the delivery slip of the API and of the Secure Message Center.
pub async fn delivery_report(
    state: &AppState,
    message: &MessageRecord,
) -> ApiResult<DeliveryReport> {
    let notifications = state.store.notifications_of(&message.id).await?;
    let retrievals = state.store.retrievals(&message.id).await?;
    let replies = state.store.replies_to(&message.id).await?;
    let recipients = message
        .recipients
        .iter()
        .map(|recipient| {
            let notification = notifications.iter().find(|n| &n.recipient == recipient);
            let first_retrieval = retrievals
                .iter()
                .filter(|r| &r.account_email == recipient)
                .min_by_key(|r| r.retrieved_at);
            let retrieved_at = first_retrieval.map(|r| r.retrieved_at);
            let state = match (retrieved_at, notification.map(|n| n.state)) {
                (Some(_), _) => DeliveryState::Retrieved,
                (None, None) => DeliveryState::NotSentByServer,
                (None, Some(OutboxState::Queued)) => DeliveryState::Queued,
                (None, Some(OutboxState::Sent)) => DeliveryState::Sent,
                (None, Some(OutboxState::Failed)) => DeliveryState::Failed,
                (None, Some(OutboxState::Bounced)) => DeliveryState::Bounced,
            };
            RecipientDelivery {
                recipient: recipient.clone(),
                state,
                attempts: notification.map_or(0, |n| n.attempts),
                relay_answer: notification.and_then(|n| n.relay_answer.clone()),
                error: notification.and_then(|n| n.last_error.clone()),
                next_attempt_at: notification
                    .filter(|n| n.state == OutboxState::Queued)
                    .map(|n| n.next_attempt_at),
                // A sent row is last updated when the relay accepts it.
                notified_at: notification
                    .filter(|n| n.state == OutboxState::Sent)
                    .map(|n| n.updated_at),
                retrieved_at,
                retrieved_with: first_retrieval.map(|r| match r.device_kind {
                    DeviceKind::Agent => RetrievalChannel::Agent,
                    DeviceKind::Browser => RetrievalChannel::SecureMessageCenter,
                }),
                replied_at: replies.iter().find(|(r, _)| r == recipient).map(|(_, at)| *at),
            }
        })
        .collect();
    Ok(DeliveryReport {
        message_id: message.id.to_string(),
        recipients,
        lifecycle: lifecycle(message),
    })
}
