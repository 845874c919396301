//! Storing secure messages and handing them to their sender and recipients only.

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealpost_proto::MessageId;
use sealpost_proto::api::{
    DeliveryReport, DeliveryState, ErrorBody, IssuedNotification, MessageInfo, RecipientDelivery,
    Retrieval, RetrievalChannel, RetrievalLog, StoredMessage, UploadMetadata,
};
use sealpost_proto::notification::{Notification, compose_email};
use time::OffsetDateTime;
use tokio_util::io::ReaderStream;

use crate::auth::{AccessToken, Caller};
use crate::blobs::{SMALL_CONTENT, StoredBlob};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::notify;
use crate::routes::input::email_address;
use crate::state::AppState;
use crate::store::{AccountRecord, DeviceKind, MessageRecord, NewNotification, OutboxState};

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
        let recipients = recipients(&metadata, state.settings.messages.max_recipients)?;
        Ok((blob, recipients, metadata.send_notifications))
    }
    .await;
    let (blob, recipients, send_notifications) = match outcome {
        Ok(parts) => parts,
        Err(error) => {
            state.blobs.remove(&id).await;
            return Err(error);
        }
    };
    let stored =
        store_message(&state, &caller.account, id, blob, recipients, send_notifications).await?;
    Ok((StatusCode::CREATED, ApiJson(stored)))
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
    recipients: Vec<String>,
    send_notifications: bool,
) -> ApiResult<StoredMessage> {
    let now = state.clock.now();
    let headers = notify::SenderHeaders::parse(&blob.head, &sender.email);
    let organization = state.organization.current();
    let read_url = format!("{}/messages/{id}", organization.center_url);
    let signer = state.keys.active();
    let signed: Vec<_> = recipients
        .iter()
        .map(|recipient| {
            signer.sign(Notification {
                message_id: id.clone(),
                origin: state.origin.clone(),
                recipient: recipient.clone(),
                content_sha256: blob.digest,
            })
        })
        .collect();
    let issue = |signed, read_url: &str| {
        organization.issue(signed, sender.display_name.as_deref(), &sender.email, read_url)
    };
    // The sender sees the notifications it is given, so those carry the
    // plain link; the recipient's own token (which lets them register as
    // that address) travels only in the email the server sends them.
    let notifications: Vec<IssuedNotification> =
        signed.iter().map(|signed| issue(signed, &read_url)).collect();
    let outgoing = if send_notifications {
        let personal: Vec<IssuedNotification> = signed
            .iter()
            .zip(&recipients)
            .map(|(signed, recipient)| {
                let token = state.links.token(&id, recipient);
                issue(signed, &format!("{read_url}?t={token}"))
            })
            .collect();
        notification_emails(state, sender, &id, &headers, &recipients, &personal, now)
    } else {
        Vec::new()
    };
    let record = MessageRecord {
        id: id.clone(),
        sender_account_id: sender.id.clone(),
        sender_email: sender.email.clone(),
        content_sha256: blob.digest,
        size: blob.size,
        created_at: now,
        recipients,
        subject: headers.subject.clone(),
    };
    if let Err(error) = state.store.insert_message(&record, &outgoing).await {
        state.blobs.remove(&id).await;
        return Err(error.into());
    }
    if !outgoing.is_empty() {
        state.outbox.wake();
    }
    state.metrics.messages_stored.inc();
    state.metrics.message_bytes_stored.inc_by(blob.size);
    tracing::info!(message_id = %id, sender = %sender.id, size = blob.size, recipients = record.recipients.len(), queued = outgoing.len(), "message stored");
    Ok(StoredMessage {
        message_id: id.to_string(),
        content_sha256: blob.digest.to_hex(),
        size: blob.size,
        created_at: record.created_at,
        notifications,
    })
}

/// One complete email per recipient, with the sender's own headers.
fn notification_emails(
    state: &AppState,
    sender: &AccountRecord,
    id: &MessageId,
    headers: &notify::SenderHeaders,
    recipients: &[String],
    notifications: &[IssuedNotification],
    now: OffsetDateTime,
) -> Vec<NewNotification> {
    let origin_host = state.origin.trim_start_matches("https://");
    let envelope = notify::envelope(headers, sender, recipients, now, origin_host, id.as_str());
    notifications
        .iter()
        .map(|issued| {
            let email = compose_email(&envelope, issued);
            let email = match &state.dkim {
                Some(signer) => signer.sign(&email, now.unix_timestamp()),
                None => email,
            };
            NewNotification { recipient: issued.recipient.clone(), email }
        })
        .collect()
}

fn recipients(metadata: &UploadMetadata, max: usize) -> ApiResult<Vec<String>> {
    if metadata.recipients.is_empty() {
        return Err(ApiError::bad_request("Name at least one recipient in `metadata.recipients`."));
    }
    if metadata.recipients.len() > max {
        return Err(ApiError::bad_request(format!("A message may have at most {max} recipients.")));
    }
    let mut addresses = Vec::with_capacity(metadata.recipients.len());
    for input in &metadata.recipients {
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
    Ok(ApiJson(MessageInfo {
        message_id: message.id.to_string(),
        sender: message.sender_email,
        recipients: message.recipients,
        content_sha256: message.content_sha256.to_hex(),
        size: message.size,
        created_at: message.created_at,
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
    let body = if message.size <= SMALL_CONTENT {
        Body::from(state.blobs.read_small(&message.id)?)
    } else {
        let file = state.blobs.open(&message.id).await?;
        Body::from_stream(ReaderStream::with_capacity(file, STREAM_CHUNK))
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

/// Content larger than [`SMALL_CONTENT`] is streamed in chunks of this size.
const STREAM_CHUNK: usize = 64 * 1024;

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
            }
        })
        .collect();
    Ok(DeliveryReport { message_id: message.id.to_string(), recipients })
}
