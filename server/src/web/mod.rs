//! The Secure Message Center: the pages where recipients without the desktop
//! app open a secure message from its notification link, register in a few
//! seconds, read, download attachments and go through their mailbox.
//!
//! Pages are rendered on the server from templates compiled into the binary
//! and work without JavaScript; the browser runs none of ours and, under the
//! Content-Security-Policy every page carries, none of anyone else's.
//! Browsers sign in as devices of their own kind ([`session`]); every form
//! carries a CSRF token checked against a cookie, and cross-site posts are
//! refused outright.

mod account;
mod auth;
mod compose;
mod masked;
mod pages;
mod read;
pub mod session;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::routes::input::email_address;
use crate::state::AppState;
pub use pages::Pages;
use session::{CsrfToken, Viewer};

/// What every page's response carries unless it says otherwise: scripts,
/// frames, plugins and remote content are off; styles and images come from
/// this server (images also from `data:`, which embedded message images use).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router(state: AppState) -> Router<AppState> {
    // Attachments and the form around them.
    let upload_limit = usize::try_from(state.settings.messages.max_size)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    Router::new()
        .route("/", get(home))
        .route("/signin", get(auth::sign_in_page).post(auth::sign_in))
        .route("/signin/code", get(auth::code_page).post(auth::send_code))
        .route("/signin/code/verify", axum::routing::post(auth::verify_code))
        .route("/signout", axum::routing::post(auth::sign_out))
        .route("/register", axum::routing::post(auth::register))
        .route("/mailbox", get(read::mailbox))
        .route("/account", get(account::page))
        .route("/account/password", axum::routing::post(account::change_password))
        .route("/account/devices/{device_id}/revoke", axum::routing::post(account::revoke))
        .route("/account/sign-out-everywhere", axum::routing::post(account::sign_out_everywhere))
        .route(
            "/compose",
            get(compose::new_message)
                .post(compose::send)
                .layer(axum::extract::DefaultBodyLimit::max(upload_limit)),
        )
        .route("/write-masked", get(masked::new_message).post(masked::send))
        .route("/messages/{message_id}/reply", get(compose::reply))
        .route("/messages/{message_id}", get(read::message))
        .route("/messages/{message_id}/print", get(read::print))
        .route("/messages/{message_id}/recall", axum::routing::post(read::recall))
        .route("/messages/{message_id}/attachments/{index}", get(read::attachment))
        .route("/messages/{message_id}/inline/{content_id}", get(read::inline_image))
        .route("/static/sealpost.css", get(stylesheet))
        // Outermost last: errors from the CSRF check are rendered as pages too.
        .layer(middleware::from_fn(session::csrf_cookie))
        .layer(middleware::from_fn_with_state(state.clone(), render_errors))
        .layer(middleware::from_fn(security_headers))
}

async fn home(viewer: Viewer) -> Redirect {
    match viewer.0 {
        Some(_) => Redirect::to("/mailbox"),
        None => Redirect::to("/signin"),
    }
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/sealpost.css"),
    )
}

/// Headers that keep pages from being framed, sniffed, cached or leaking
/// where the reader came from; a handler that sets its own policy (a
/// message shown with its remote images) keeps it.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    // People's messages are nobody's search results.
    headers.insert(
        header::HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex, nofollow"),
    );
    headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A failed page: shown as the organization's error page by
/// [`render_errors`], which has what a page needs.
#[derive(Debug)]
pub struct WebError(pub ApiError);

impl From<ApiError> for WebError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl<E> From<E> for WebError
where
    ApiError: From<E>,
    E: std::error::Error,
{
    fn from(error: E) -> Self {
        Self(ApiError::from(error))
    }
}

/// Carried by a failed page's response until [`render_errors`] renders it.
#[derive(Debug, Clone)]
struct FailedPage {
    status: StatusCode,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let mut response = self.0.status.into_response();
        if let Some(retry) = self.0.retry_after
            && let Ok(value) = HeaderValue::from_str(&retry.as_secs().to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
            .extensions_mut()
            .insert(FailedPage { status: self.0.status, message: self.0.message });
        response
    }
}

pub type WebResult<T> = Result<T, WebError>;

async fn render_errors(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let Some(failed) = response.extensions().get::<FailedPage>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    let page = state.pages.error(&state, &viewer, &csrf, failed.status, &failed.message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    Response::from_parts(parts, page.into())
}

/// Refuses a state-changing request that another site's page sent: the
/// browser says where it comes from in `Sec-Fetch-Site`, or else in
/// `Origin`. (The CSRF token is checked as well; this stops the request
/// before any form is read.) `host` is the one the request was sent to.
pub fn same_origin(method: &Method, headers: &HeaderMap, host: Option<&str>) -> bool {
    if method == Method::GET || method == Method::HEAD {
        return true;
    }
    let header = |name| headers.get(name).and_then(|value: &HeaderValue| value.to_str().ok());
    if let Some(site) = header(HeaderName::from_static("sec-fetch-site")) {
        return site == "same-origin";
    }
    match header(header::ORIGIN) {
        None | Some("null") => true,
        Some(origin) => origin.strip_prefix("https://").is_some_and(|origin| Some(origin) == host),
    }
}

/// The host (and port) the request was sent to: `Host` in HTTP/1.1, the
/// `:authority` in HTTP/2.
pub fn request_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|authority| authority.to_string()))
        .filter(|host| !host.is_empty() && !host.contains(['/', '\\', '@']))
}

/// Whether `content_type` is a bare `type/subtype`, safe in a header.
pub fn is_media_type(content_type: &str) -> bool {
    content_type.split_once('/').is_some_and(|(kind, sub)| {
        let token = |part: &str| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        token(kind) && token(sub)
    })
}

/// Addresses separated by commas, semicolons, spaces or lines (`Name
/// <address>` as people paste it too), normalised; the first bad one otherwise.
pub(crate) fn typed_addresses(input: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for part in input.split([',', ';', '\n']).map(str::trim).filter(|part| !part.is_empty()) {
        let candidates: Vec<&str> = match (part.rfind('<'), part.rfind('>')) {
            (Some(open), Some(close)) if open < close => vec![&part[open + 1..close]],
            _ => part.split_whitespace().collect(),
        };
        for candidate in candidates {
            let address = email_address(candidate.trim()).map_err(|_| part.to_owned())?;
            if !found.contains(&address) {
                found.push(address);
            }
        }
    }
    Ok(found)
}
