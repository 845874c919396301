//! Every failure a client can see, as `{code, message}` JSON with a stable code.

use std::time::Duration;

use axum::Json;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealpost_proto::api::{ErrorBody, ErrorCode};

use crate::blobs::BlobError;
use crate::mailer::MailError;
use crate::rate_limit::{LimitError, RetryAfter};
use crate::store::{Outage, StoreError, Unreadable};

/// How long a client waits before retrying a request the busy database refused.
const OUTAGE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Whether a disk or quota ran full somewhere along `error`'s causes (an
/// object store's file, a database file).
fn is_disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        cause = error.source();
    }
    false
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<Duration>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// The same answer whether the thing is missing or hidden from this caller,
    /// so ids cannot be probed.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "There is nothing here, or you may not see it.",
        )
    }

    /// 410: the message exists but can no longer be read, and never will be again.
    pub fn unreadable(why: Unreadable) -> Self {
        match why {
            Unreadable::Recalled(at) => Self::new(
                StatusCode::GONE,
                ErrorCode::MessageRecalled,
                format!(
                    "The sender recalled this message on {}; it can no longer be read.",
                    crate::clock::human_date(at)
                ),
            ),
            Unreadable::Expired(at) => Self::new(
                StatusCode::GONE,
                ErrorCode::MessageExpired,
                format!(
                    "This message expired on {}; it can no longer be read.",
                    crate::clock::human_date(at)
                ),
            ),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, message)
    }

    pub fn rate_limited(retry: RetryAfter) -> Self {
        let seconds = retry.0.as_secs().max(1);
        Self {
            retry_after: Some(Duration::from_secs(seconds)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!("Too many attempts. Try again in {seconds} seconds."),
            )
        }
    }

    /// The database or the disk cannot take the request now: the client is
    /// told to retry (503, after a few seconds) or that the disk is full
    /// (507); the administrator finds the cause and what to do in the log.
    pub fn outage(outage: Outage, cause: &dyn std::fmt::Display) -> Self {
        match outage {
            Outage::Busy => {
                tracing::warn!(error = %cause, "request refused: the database is busy or unreachable");
                Self {
                    retry_after: Some(OUTAGE_RETRY_AFTER),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::Unavailable,
                        format!(
                            "The server's database is busy or unreachable right now; nothing of \
                             this request was stored. Try again in {} seconds.",
                            OUTAGE_RETRY_AFTER.as_secs()
                        ),
                    )
                }
            }
            Outage::DiskFull => {
                tracing::error!(error = %cause, "request refused: the disk is full; free space on the disk holding the data directory, the database or the message storage");
                Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    ErrorCode::StorageFull,
                    "The server's disk is full, so nothing of this request was stored. Try again \
                     later: the server's administrator has to free space first.",
                )
            }
        }
    }

    /// Logs the cause with the request's span and tells the client only that it failed.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "The server failed to handle this request; its log has the details under this request's id.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ErrorBody { code: self.code, message: self.message }))
                .into_response();
        if let Some(after) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&after.as_secs().to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<LimitError> for ApiError {
    fn from(error: LimitError) -> Self {
        match error {
            LimitError::Refused(retry) => Self::rate_limited(retry),
            LimitError::Store(error) => error.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error.outage() {
            Some(outage) => Self::outage(outage, &error),
            None => Self::internal(&error),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(error: BlobError) -> Self {
        match error {
            BlobError::TooLarge { limit } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!(
                    "The message is larger than this server's limit of {limit} bytes: leave out or shrink attachments, or send them in several messages."
                ),
            ),
            BlobError::Upload(_) => Self::bad_request(error.to_string()),
            // Recorded, but its content is gone: say so, rather than only
            // that something failed.
            BlobError::Missing { ref id } => {
                tracing::error!(message_id = %id, error = %error, "message content missing");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    format!(
                        "The content of message {id} is missing from storage, so it cannot \
                         be read. The server's administrator can find this in its log."
                    ),
                )
            }
            BlobError::Database { ref source, .. } => match source.outage() {
                Some(outage) => Self::outage(outage, &error),
                None => Self::internal(&error),
            },
            BlobError::Storage { .. } if is_disk_full(&error) => {
                Self::outage(Outage::DiskFull, &error)
            }
            BlobError::Storage { .. } => Self::internal(&error),
        }
    }
}

impl From<MailError> for ApiError {
    fn from(error: MailError) -> Self {
        tracing::warn!(error = %error, "automated email not sent");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::MailUnavailable,
            "The server could not send the email right now. Try again in a few minutes.",
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "Send the body as JSON with Content-Type: application/json.",
            ),
            other => {
                Self::bad_request(format!("The JSON body is not valid: {}", other.body_text()))
            }
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        Self::not_found()
    }
}

impl From<MultipartRejection> for ApiError {
    fn from(rejection: MultipartRejection) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!(
                "Send the message as multipart/form-data with parts `metadata` and `content` ({}).",
                rejection.body_text()
            ),
        )
    }
}

impl From<MultipartError> for ApiError {
    fn from(error: MultipartError) -> Self {
        if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!(
                    "The upload is larger than this server accepts ({}): leave out or shrink attachments, or send them in several messages.",
                    error.body_text()
                ),
            )
        } else {
            Self::bad_request(format!("The multipart body is not valid: {}", error.body_text()))
        }
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejection is a plain 404.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);
