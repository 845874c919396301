//! The mailbox and the reader: a message opened from its link or from the
//! mailbox, its attachments, its embedded images and its print view.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::{Value, context};
use sealpost_proto::MessageId;
use sealpost_proto::api::{DeliveryState, RetrievalChannel};
use sealpost_reader::{Body, HtmlOptions, OpenedMessage, safe_file_name};
use serde::Deserialize;

use super::session::{CheckedForm, CsrfToken, NoFields, Session, SignedIn, Viewer};
use super::{WebError, WebResult, auth};
use crate::error::ApiError;
use crate::routes::messages::{delivery_report, recall_message};
use crate::state::AppState;
use crate::store::{MessageRecord, MessageSummary, Unreadable};

/// Messages listed per mailbox section.
const MAILBOX_LIMIT: u32 = 200;

pub async fn mailbox(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    SignedIn(session): SignedIn,
) -> WebResult<Response> {
    let account = &session.account;
    let received = state.store.received_messages(&account.email, MAILBOX_LIMIT).await?;
    let sent = state.store.sent_messages(&account.id, MAILBOX_LIMIT).await?;
    let list = |messages: &[MessageSummary]| -> Vec<Value> {
        messages
            .iter()
            .map(|message| {
                context! {
                    id => message.id.as_str(),
                    subject => message.subject.as_deref().filter(|s| !s.trim().is_empty()).unwrap_or("(no subject)"),
                    from => message.sender_name.as_deref().unwrap_or(&message.sender_email),
                    to => message.recipients.join(", "),
                    at => message.created_at.unix_timestamp(),
                    size => message.size,
                }
            })
            .collect()
    };
    let values = context! { received => list(&received), sent => list(&sent) };
    Ok(state.pages.render(&state, &viewer, &csrf, "mailbox.html", values))
}

#[derive(Debug, Default, Deserialize)]
pub struct MessageQuery {
    /// The recipient's token from the notification link.
    t: Option<String>,
    /// `show` to load the message's images from the web.
    images: Option<String>,
    /// `1` right after it was sent from here.
    sent: Option<String>,
}

/// A message: shown to its sender and recipients; a stranger holding a
/// recipient's link is asked to register or sign in as that recipient.
pub async fn message(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    Path(id): Path<String>,
    Query(query): Query<MessageQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> WebResult<Response> {
    let id = MessageId::parse(&id).map_err(|_| not_found())?;
    let record = state.store.message(&id).await?;
    let link_recipient = match (&record, &query.t) {
        (Some(message), Some(token)) => {
            state.links.recipient(&id, &message.recipients, token).map(str::to_owned)
        }
        _ => None,
    };
    let Some(session) = &viewer.0 else {
        return Ok(match (link_recipient, &query.t) {
            (Some(recipient), Some(token)) => {
                let account = state.store.account_by_email(&recipient).await?;
                auth::landing(&state, &viewer, &csrf, &id, token, &recipient, account.as_ref())
            }
            _ => Redirect::to(&format!("/signin?next=/messages/{id}")).into_response(),
        });
    };
    let Some(message) = record.filter(|message| message.is_visible_to(&session.account)) else {
        if let Some(recipient) = link_recipient {
            let values = context! { recipient };
            return Ok(state.pages.render(&state, &viewer, &csrf, "other_account.html", values));
        }
        return Err(not_found());
    };
    let show_images = query.images.as_deref() == Some("show");
    let is_sender = message.sender_account_id == session.account.id;
    let slip = if is_sender { delivery_slip(&state, &message).await? } else { Vec::new() };
    let lifecycle = context! {
        id => message.id.as_str(),
        is_sender,
        slip,
        show_images,
        sent => query.sent.as_deref() == Some("1"),
        recalled_at => message.recalled_at.map(|at| at.unix_timestamp()),
        expires_at => message.expires_at.map(|at| at.unix_timestamp()),
    };
    if let Some(why) = message.unreadable_at(state.clock.now()) {
        // What is left: the subject, and for the sender the slip.
        let values = context! {
            gone => match why { Unreadable::Recalled(_) => "recalled", Unreadable::Expired(_) => "expired" },
            subject => message.subject.as_deref().filter(|s| !s.trim().is_empty()).unwrap_or("(no subject)"),
            ..lifecycle
        };
        let page = state.pages.render(&state, &viewer, &csrf, "message.html", values);
        return Ok((StatusCode::GONE, page).into_response());
    }
    let opened = open(&state, session, &message, &headers, &uri, show_images).await?;
    let values = context! { ..lifecycle, ..message_values(&opened) };
    let mut page = state.pages.render(&state, &viewer, &csrf, "message.html", values);
    if show_images {
        // The reader asked for this message's images from the web; nothing else changes.
        let policy = super::CONTENT_SECURITY_POLICY
            .replace("img-src 'self' data:", "img-src 'self' data: https:");
        if let Ok(policy) = HeaderValue::from_str(&policy) {
            page.headers_mut().insert(header::CONTENT_SECURITY_POLICY, policy);
        }
    }
    Ok(page)
}

/// Recalls a message its sender sent from here or elsewhere: nobody can
/// read it from now on.
pub async fn recall(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    CheckedForm(NoFields {}): CheckedForm<NoFields>,
) -> WebResult<Response> {
    let id = MessageId::parse(&id).map_err(|_| not_found())?;
    let message = state
        .store
        .message(&id)
        .await?
        .filter(|message| message.sender_account_id == session.account.id)
        .ok_or_else(not_found)?;
    recall_message(&state, &message).await?;
    Ok(Redirect::to(&format!("/messages/{id}")).into_response())
}

/// The message alone, laid out for paper.
pub async fn print(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> WebResult<Response> {
    let message = readable(&state, &session, &id).await?;
    let opened = open(&state, &session, &message, &headers, &uri, false).await?;
    let values = context! { id => message.id.as_str(), ..message_values(&opened) };
    Ok(state.pages.render(&state, &viewer, &csrf, "print.html", values))
}

/// An attachment, always downloaded (never shown in the page, where an
/// HTML or SVG file could run its scripts), with its own type and name.
pub async fn attachment(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path((id, index)): Path<(String, usize)>,
) -> WebResult<Response> {
    let message = readable(&state, &session, &id).await?;
    let raw = state.blobs.read_all(&message.id, message.size).await?;
    let attachment = sealpost_reader::attachment(&raw, index).ok_or_else(not_found)?;
    let name = safe_file_name(&attachment.name);
    Ok((
        [
            (header::CONTENT_TYPE, header_safe_type(&attachment.content_type)),
            (header::CONTENT_DISPOSITION, content_disposition("attachment", &name)),
            (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_owned()),
        ],
        attachment.bytes,
    )
        .into_response())
}

/// Image types a browser shows without running anything: SVG is left out.
const INLINE_IMAGE_TYPES: &[&str] =
    &["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif"];

/// An image embedded in the message (`cid:`), for its HTML body.
pub async fn inline_image(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path((id, content_id)): Path<(String, String)>,
) -> WebResult<Response> {
    let message = readable(&state, &session, &id).await?;
    let raw = state.blobs.read_all(&message.id, message.size).await?;
    let image = sealpost_reader::inline_image(&raw, &content_id)
        .filter(|image| INLINE_IMAGE_TYPES.contains(&image.content_type.as_str()))
        .ok_or_else(not_found)?;
    Ok((
        [
            (header::CONTENT_TYPE, image.content_type.clone()),
            (
                header::CONTENT_DISPOSITION,
                content_disposition("inline", &safe_file_name(&image.name)),
            ),
            (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
        ],
        image.bytes,
    )
        .into_response())
}

/// The message if the signed-in account may read it; otherwise the same
/// 404 as for a message that does not exist.
pub(super) async fn readable(
    state: &AppState,
    session: &Session,
    id: &str,
) -> WebResult<MessageRecord> {
    let id = MessageId::parse(id).map_err(|_| not_found())?;
    let message = state
        .store
        .message(&id)
        .await?
        .filter(|message| message.is_visible_to(&session.account))
        .ok_or_else(not_found)?;
    match message.unreadable_at(state.clock.now()) {
        Some(why) => Err(WebError(ApiError::unreadable(why))),
        None => Ok(message),
    }
}

/// Reads the content for display and records the retrieval, which the
/// sender's delivery slip shows.
async fn open(
    state: &AppState,
    session: &Session,
    message: &MessageRecord,
    headers: &HeaderMap,
    uri: &Uri,
    remote_images: bool,
) -> WebResult<OpenedMessage> {
    let raw = state.blobs.read_all(&message.id, message.size).await?;
    let host = super::request_host(headers, uri)
        .map(|host| format!("https://{host}"))
        .unwrap_or_else(|| state.origin.clone());
    let options = HtmlOptions {
        remote_images,
        inline_image_base: Some(format!("{host}/messages/{}/inline/", message.id)),
    };
    let opened = OpenedMessage::parse_with(&raw, &options);
    state
        .store
        .record_retrieval(&message.id, &session.account.id, &session.device.id, state.clock.now())
        .await?;
    state.metrics.retrievals.inc();
    tracing::info!(message_id = %message.id, account = %session.account.id, device = %session.device.id, "message read in the Secure Message Center");
    Ok(opened)
}

fn message_values(opened: &OpenedMessage) -> Value {
    let (html, text) = match &opened.body {
        Body::Html(html) => (Some(Value::from_safe_string(html.clone())), None),
        Body::Text(text) => (None, Some(text.as_str())),
    };
    context! {
        subject => if opened.subject.trim().is_empty() { "(no subject)" } else { &opened.subject },
        from => &opened.from,
        to => &opened.to,
        cc => &opened.cc,
        date => opened.date,
        html,
        text,
        remote_images_blocked => opened.remote_images_blocked,
        attachments => opened.attachments.iter().map(|attachment| context! {
            index => attachment.index,
            name => &attachment.name,
            content_type => &attachment.content_type,
            size => attachment.size,
        }).collect::<Vec<_>>(),
    }
}

/// One line per recipient for the sender: notified, bounced or retrieved, when and how.
async fn delivery_slip(state: &AppState, message: &MessageRecord) -> WebResult<Vec<Value>> {
    let report = delivery_report(state, message).await?;
    Ok(report
        .recipients
        .iter()
        .map(|recipient| {
            let status = match recipient.state {
                DeliveryState::NotSentByServer => "Not yet notified by the sender's mail program",
                DeliveryState::Queued => "Waiting to be sent",
                DeliveryState::Sent => "Notified",
                DeliveryState::Failed => "Could not be notified",
                DeliveryState::Bounced => "Bounced",
                DeliveryState::Retrieved => "Retrieved",
            };
            let channel = recipient.retrieved_with.map(|channel| match channel {
                RetrievalChannel::Agent => "with the desktop app",
                RetrievalChannel::SecureMessageCenter => "in the Secure Message Center",
            });
            context! {
                recipient => &recipient.recipient,
                state => format!("{:?}", recipient.state).to_lowercase(),
                status,
                channel,
                notified_at => recipient.notified_at.map(|at| at.unix_timestamp()),
                retrieved_at => recipient.retrieved_at.map(|at| at.unix_timestamp()),
                replied_at => recipient.replied_at.map(|at| at.unix_timestamp()),
                error => &recipient.error,
            }
        })
        .collect())
}

/// `type/subtype` as a header value; anything odd is sent as plain bytes.
fn header_safe_type(content_type: &str) -> String {
    if super::is_media_type(content_type) {
        content_type.to_owned()
    } else {
        "application/octet-stream".to_owned()
    }
}

/// `attachment; filename="ascii"; filename*=UTF-8''encoded` (RFC 6266).
fn content_disposition(disposition: &str, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{disposition}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

fn not_found() -> WebError {
    WebError(ApiError::not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_and_types_cannot_break_the_headers() {
        assert_eq!(
            content_disposition("attachment", "résultats 1.pdf"),
            "attachment; filename=\"r_sultats 1.pdf\"; filename*=UTF-8''r%C3%A9sultats%201.pdf"
        );
        assert_eq!(
            content_disposition("attachment", "a\"b\\c"),
            "attachment; filename=\"a_b_c\"; filename*=UTF-8''a%22b%5Cc"
        );
        assert_eq!(header_safe_type("application/pdf"), "application/pdf");
        assert_eq!(header_safe_type("text/html\r\nSet-Cookie: x"), "application/octet-stream");
        assert_eq!(header_safe_type("nonsense"), "application/octet-stream");
    }
}
