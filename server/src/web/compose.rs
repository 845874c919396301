//! Writing securely: reply and reply all to a message, and (for the
//! organization's members) new messages. What is sent is stored as a new
//! secure message; its notifications leave through the outbox like any other.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use minijinja::context;
use sealpost_proto::MessageId;
use serde::Deserialize;

use super::session::{CsrfToken, Session, SignedIn, Viewer};
use super::typed_addresses;
use super::{WebError, WebResult};
use crate::error::ApiError;
use crate::routes::messages::{Expiry, NewUpload, store_message};
use crate::state::AppState;
use crate::store::MessageRecord;

/// What the form holds, to show it again with the problem when it is refused.
#[derive(Debug, Default, Clone)]
struct Draft {
    reply_to: String,
    to: String,
    cc: String,
    subject: String,
    body: String,
    /// Days until it expires, `never`, or empty for the organization's default.
    expires: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct ReplyQuery {
    /// `1` to answer everyone the message went to.
    all: Option<String>,
}

pub async fn new_message(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    SignedIn(session): SignedIn,
) -> WebResult<Response> {
    if !state.settings.webmail.is_member(&session.account.email) {
        return Err(not_a_member());
    }
    Ok(form(&state, &viewer, &csrf, &Draft::default(), None))
}

/// The compose form filled in to answer the sender (and, with `all`, everyone).
pub async fn reply(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    Query(query): Query<ReplyQuery>,
) -> WebResult<Response> {
    let original = super::read::readable(&state, &session, &id).await?;
    let raw = state.blobs.read_all(&original.id, original.size).await?;
    let context = sealpost_reader::reply_context(&raw);
    let me = &session.account.email;
    let to = if original.sender_email == *me {
        original.recipients.clone()
    } else {
        vec![original.sender_email.clone()]
    };
    let cc: Vec<String> = if query.all.as_deref() == Some("1") {
        original.recipients.iter().filter(|r| *r != me && !to.contains(r)).cloned().collect()
    } else {
        Vec::new()
    };
    let draft = Draft {
        reply_to: original.id.to_string(),
        to: to.join(", "),
        cc: cc.join(", "),
        subject: context.subject,
        body: format!("\n\n{}", context.quoted),
        expires: String::new(),
    };
    Ok(form(&state, &viewer, &csrf, &draft, None))
}

fn form(
    state: &AppState,
    viewer: &Viewer,
    csrf: &CsrfToken,
    draft: &Draft,
    error: Option<&str>,
) -> Response {
    let values = context! {
        reply_to => &draft.reply_to,
        to => &draft.to,
        cc => &draft.cc,
        subject => &draft.subject,
        body => &draft.body,
        expires => &draft.expires,
        default_expiry_days => state.settings.messages.expire_after_days,
        error,
        max_size => state.settings.messages.max_size,
    };
    super::pages::refused_if(
        state.pages.render(state, viewer, csrf, "compose.html", values),
        error,
        StatusCode::BAD_REQUEST,
    )
}

/// One attachment from the form.
struct Upload {
    name: String,
    content_type: String,
    bytes: Bytes,
}

/// Sends the form's message securely: built as MIME, stored, notified.
pub async fn send(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    SignedIn(session): SignedIn,
    multipart: Result<Multipart, MultipartRejection>,
) -> WebResult<Response> {
    let mut multipart = multipart.map_err(|error| bad_request(&error.to_string()))?;
    let mut draft = Draft::default();
    let mut submitted_csrf = None;
    let mut uploads = Vec::new();
    let mut total = 0u64;
    let limit = state.settings.messages.max_size;
    while let Some(field) = multipart.next_field().await.map_err(|e| bad_request(&e.to_string()))? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "attachment" {
            let file_name = field.file_name().unwrap_or_default().to_owned();
            let content_type =
                field.content_type().unwrap_or("application/octet-stream").to_owned();
            let bytes = field.bytes().await.map_err(|e| bad_request(&e.to_string()))?;
            total += bytes.len() as u64;
            if total > limit {
                return Err(WebError(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    sealpost_proto::api::ErrorCode::PayloadTooLarge,
                    format!("Attachments may add up to {} at most.", super::pages::size(limit)),
                )));
            }
            // A file input left empty still sends a nameless, empty part.
            if !file_name.is_empty() || !bytes.is_empty() {
                uploads.push(Upload { name: file_name, content_type, bytes });
            }
            continue;
        }
        let value = field.text().await.map_err(|e| bad_request(&e.to_string()))?;
        match name.as_str() {
            "csrf" => submitted_csrf = Some(value),
            "reply_to" => draft.reply_to = value,
            "to" => draft.to = value,
            "cc" => draft.cc = value,
            "subject" => draft.subject = value,
            "body" => draft.body = value,
            "expires" => draft.expires = value,
            _ => {}
        }
    }
    csrf.check(submitted_csrf.as_deref().unwrap_or_default())?;
    let refuse = |error: &str| Ok(form(&state, &viewer, &csrf, &draft, Some(error)));

    let original = match draft.reply_to.trim() {
        "" => None,
        id => Some(super::read::readable(&state, &session, id).await?),
    };
    let member = state.settings.webmail.is_member(&session.account.email);
    if original.is_none() && !member {
        return Err(not_a_member());
    }
    let (to, cc) = match (typed_addresses(&draft.to), typed_addresses(&draft.cc)) {
        (Ok(to), Ok(cc)) => (to, cc),
        (Err(bad), _) | (_, Err(bad)) => {
            return refuse(&format!("{bad:?} is not an email address such as alice@example.org."));
        }
    };
    if to.is_empty() {
        return refuse("Name at least one recipient in To.");
    }
    let recipients: Vec<String> = to.iter().chain(&cc).fold(Vec::new(), |mut all, address| {
        if !all.contains(address) {
            all.push(address.clone());
        }
        all
    });
    if let Some(original) = &original
        && !member
        && let Some(stranger) = recipients.iter().find(|r| !participant(original, r))
    {
        return refuse(&format!(
            "{stranger} did not take part in this conversation: you can answer only its sender and recipients."
        ));
    }
    if recipients.len() > state.settings.messages.max_recipients {
        return refuse("Too many recipients.");
    }
    if draft.subject.chars().any(char::is_control) || draft.subject.chars().count() > 500 {
        return refuse("The subject must be one line of at most 500 characters.");
    }

    let expiry = match draft.expires.as_str() {
        "" => Expiry::OrganizationDefault,
        "never" => Expiry::Never,
        days => match days.parse::<u16>() {
            Ok(days @ 1..=3650) => {
                Expiry::At(state.clock.now() + time::Duration::days(i64::from(days)))
            }
            _ => return refuse("Choose when the message expires from the list."),
        },
    };
    let threading = match &original {
        Some(original) => {
            let raw = state.blobs.read_all(&original.id, original.size).await?;
            Some(sealpost_reader::reply_context(&raw))
        }
        None => None,
    };
    let mime = build_mime(&state, &session, &to, &cc, &draft, threading.as_ref(), uploads)
        .map_err(|error| ApiError::internal(&error))?;
    let id = MessageId::generate();
    let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(mime))]);
    let blob = state.blobs.write(&id, chunks, limit).await?;
    let upload = NewUpload { recipients, send_notifications: true, expiry, client_key: None };
    store_message(&state, &session.account, id.clone(), blob, upload).await?;
    Ok(Redirect::to(&format!("/messages/{id}?sent=1")).into_response())
}

fn participant(message: &MessageRecord, address: &str) -> bool {
    message.sender_email == address || message.recipients.iter().any(|r| r == address)
}

fn build_mime(
    state: &AppState,
    session: &Session,
    to: &[String],
    cc: &[String],
    draft: &Draft,
    threading: Option<&sealpost_reader::ReplyContext>,
    uploads: Vec<Upload>,
) -> std::io::Result<Vec<u8>> {
    let account = &session.account;
    let host = state.origin.trim_start_matches("https://").split(':').next().unwrap_or("localhost");
    let message_id = format!("{}@{host}", MessageId::generate());
    let from: Address<'_> = match &account.display_name {
        Some(name) => (name.as_str(), account.email.as_str()).into(),
        None => account.email.as_str().into(),
    };
    let mut builder = MessageBuilder::new()
        .from(from)
        .to(to.iter().map(String::as_str).collect::<Vec<_>>())
        .subject(draft.subject.trim())
        .date(state.clock.now().unix_timestamp())
        .message_id(message_id)
        .text_body(draft.body.replace("\r\n", "\n"));
    if !cc.is_empty() {
        builder = builder.cc(cc.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if let Some(threading) = threading {
        if let Some(parent) = &threading.message_id {
            builder = builder.in_reply_to(parent.clone());
        }
        if !threading.references.is_empty() {
            builder = builder.references(threading.references.clone());
        }
    }
    for upload in uploads {
        let name = match sealpost_reader::safe_file_name(&upload.name) {
            name if name.is_empty() => "attachment".to_owned(),
            name => name,
        };
        let content_type = if super::is_media_type(&upload.content_type) {
            upload.content_type
        } else {
            "application/octet-stream".to_owned()
        };
        builder = builder.attachment(content_type, name, upload.bytes.to_vec());
    }
    builder.write_to_vec()
}

fn not_a_member() -> WebError {
    WebError(ApiError::forbidden(
        "Only the organization's members write new secure messages here. You can reply to the messages you received.",
    ))
}

fn bad_request(problem: &str) -> WebError {
    WebError(ApiError::bad_request(format!(
        "The message could not be read ({problem}). Go back and send it again."
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_read_as_people_type_them() {
        assert_eq!(
            typed_addresses("Sam <Sam@Clinic.example>; lee@clinic.example,\n").expect("valid"),
            ["sam@clinic.example", "lee@clinic.example"]
        );
        assert_eq!(
            typed_addresses("lee@clinic.example, not an address"),
            Err("not an address".into())
        );
        assert_eq!(typed_addresses("  "), Ok(vec![]));
    }
}
