//! Who is reading, and proof that a form was sent from our own page.
//!
//! A signed-in browser is a device of kind [`DeviceKind::Browser`]: its
//! session cookie is an opaque token whose SHA-256 is the device's access
//! hash, so the account page lists and revokes browsers with the desktop
//! apps, and revoking one ends its session at once. The cookie is
//! `__Host-` prefixed (this origin only, `Secure`, path `/`), `HttpOnly`
//! and `SameSite=Lax`: a notification link opened from a mail program
//! arrives signed in, while another site's form posts arrive without it.
//!
//! CSRF: every browser gets a random token in a `__Host-` cookie, and every
//! form repeats it in a hidden field; a post is accepted only when both are
//! present and equal, and when the browser does not say it comes from
//! another site.

use std::convert::Infallible;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use data_encoding::BASE64URL_NOPAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::auth::{constant_time_eq, token_hash};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AccountRecord, DeviceKind, DeviceRecord, TokenHashes};
use sealpost_proto::api::ErrorCode;

pub const SESSION_COOKIE: &str = "__Host-sealpost-session";
pub const CSRF_COOKIE: &str = "__Host-sealpost-csrf";
const SESSION_PREFIX: &str = "sps_";

/// The signed-in account and the browser it signed in on.
#[derive(Debug, Clone)]
pub struct Session {
    pub account: AccountRecord,
    pub device: DeviceRecord,
}

/// The reader, if signed in; pages decide what a stranger sees.
#[derive(Debug, Clone)]
pub struct Viewer(pub Option<Session>);

impl Viewer {
    pub fn account(&self) -> Option<&AccountRecord> {
        self.0.as_ref().map(|session| &session.account)
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        if let Some(viewer) = parts.extensions.get::<Viewer>() {
            return Ok(viewer.clone());
        }
        let viewer = Viewer(session_of(&parts.headers, state).await);
        parts.extensions.insert(viewer.clone());
        Ok(viewer)
    }
}

async fn session_of(headers: &HeaderMap, state: &AppState) -> Option<Session> {
    let token = cookie(headers, SESSION_COOKIE)?;
    if !token.starts_with(SESSION_PREFIX) {
        return None;
    }
    let (device, account) = state.store.device_by_access_hash(token_hash(token)).await.ok()??;
    let current = device.kind == DeviceKind::Browser
        && device.revoked_at.is_none()
        && device.access_expires_at > state.clock.now();
    current.then_some(Session { account, device })
}

/// The signed-in reader, or a 401 page that offers to sign in.
pub struct SignedIn(pub Session);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = super::WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(Viewer(session)) = Viewer::from_request_parts(parts, state).await;
        session.map(SignedIn).ok_or_else(|| {
            super::WebError(ApiError::unauthenticated(
                "Sign in to see this page: your session ended or you signed out.",
            ))
        })
    }
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The browser's CSRF token, and whether it came with the request (a post
/// from a browser that had none cannot be one of our forms).
#[derive(Debug, Clone)]
pub struct CsrfToken {
    pub value: String,
    from_browser: bool,
}

impl CsrfToken {
    /// Refuses a form whose token is missing or not this browser's.
    pub fn check(&self, submitted: &str) -> Result<(), super::WebError> {
        if self.from_browser && constant_time_eq(self.value.as_bytes(), submitted.as_bytes()) {
            return Ok(());
        }
        Err(super::WebError(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "This form expired or was not sent from this site. Go back, reload the page and try again.",
        )))
    }
}

impl<S: Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(parts.extensions.get::<CsrfToken>().cloned().unwrap_or_else(CsrfToken::fresh))
    }
}

impl CsrfToken {
    fn fresh() -> Self {
        Self { value: BASE64URL_NOPAD.encode(&rand::random::<[u8; 32]>()), from_browser: false }
    }
}

/// A submitted form whose CSRF field matched the browser's token; any other
/// post is refused before its fields are looked at, so no handler can
/// forget the check.
pub struct CheckedForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for CheckedForm<T> {
    type Rejection = super::WebError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let token =
            request.extensions().get::<CsrfToken>().cloned().unwrap_or_else(CsrfToken::fresh);
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| bad_form(&rejection.to_string()))?;
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            csrf: String,
        }
        let submitted: Token =
            serde_urlencoded::from_bytes(&body).map_err(|error| bad_form(&error.to_string()))?;
        token.check(&submitted.csrf)?;
        serde_urlencoded::from_bytes(&body)
            .map(CheckedForm)
            .map_err(|error| bad_form(&error.to_string()))
    }
}

/// A form with nothing to read but its CSRF token (sign out and the like).
#[derive(Debug, Deserialize)]
pub struct NoFields {}

/// A form that could not be read.
pub fn bad_form(problem: &str) -> super::WebError {
    super::WebError(ApiError::bad_request(format!(
        "The form was incomplete ({problem}). Go back, reload the page and try again."
    )))
}

/// Gives every browser a CSRF token (set as a cookie on its first page) and
/// refuses posts that the browser says come from another site.
pub async fn csrf_cookie(mut request: Request, next: Next) -> Response {
    let host = super::request_host(request.headers(), request.uri());
    if !super::same_origin(request.method(), request.headers(), host.as_deref()) {
        return super::WebError(ApiError::forbidden(
            "This form was sent from another site, so it was refused.",
        ))
        .into_response();
    }
    let presented = cookie(request.headers(), CSRF_COOKIE)
        .filter(|value| value.len() == 43 && BASE64URL_NOPAD.decode(value.as_bytes()).is_ok())
        .map(str::to_owned);
    let token = match presented {
        Some(value) => CsrfToken { value, from_browser: true },
        None => CsrfToken::fresh(),
    };
    let new = !token.from_browser;
    let value = token.value.clone();
    request.extensions_mut().insert(token);
    let mut response = next.run(request).await;
    if new {
        let cookie = format!("{CSRF_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax");
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    response
}

/// Signs `account` in on this browser: a new device whose access token is
/// the session cookie returned (as a `Set-Cookie` value).
pub async fn start(
    state: &AppState,
    account: &AccountRecord,
    headers: &HeaderMap,
) -> Result<HeaderValue, ApiError> {
    let token = format!("{SESSION_PREFIX}{}", BASE64URL_NOPAD.encode(&rand::random::<[u8; 32]>()));
    let hours = state.settings.webmail.session_hours;
    let expires_at = state.clock.now() + time::Duration::hours(i64::try_from(hours).unwrap_or(12));
    let user_agent =
        headers.get(header::USER_AGENT).and_then(|value| value.to_str().ok()).unwrap_or("");
    let hashes = TokenHashes {
        access_hash: token_hash(&token),
        access_expires_at: expires_at,
        // Browsers never refresh: this hash is of a value nobody holds.
        refresh_hash: rand::random(),
        refresh_expires_at: expires_at,
    };
    let device = state
        .store
        .create_device(&account.id, DeviceKind::Browser, &browser_name(user_agent), &hashes)
        .await?;
    tracing::info!(account = %account.id, device = %device.id, "signed in to the Secure Message Center");
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        hours * 3600
    );
    HeaderValue::from_str(&cookie).map_err(|error| ApiError::internal(&error))
}

/// Clears the session cookie.
pub fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-sealpost-session=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
    )
}

/// "Chrome on Linux": what the account page calls a signed-in browser.
pub fn browser_name(user_agent: &str) -> String {
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chromium/", "Chromium"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
    ]
    .iter()
    .find(|(marker, _)| user_agent.contains(marker))
    .map_or("A browser", |(_, name)| name);
    let system = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(marker, _)| user_agent.contains(marker))
    .map(|(_, name)| *name);
    match system {
        Some(system) => format!("{browser} on {system}"),
        None => browser.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_named_as_people_know_them() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
        assert_eq!(browser_name(chrome), "Chrome on Linux");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1";
        assert_eq!(browser_name(iphone), "Safari on iOS");
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36 Edg/130.0";
        assert_eq!(browser_name(edge), "Edge on Windows");
        assert_eq!(browser_name("curl/8.0"), "A browser");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; __Host-sealpost-csrf=xyz"));
        headers.append(header::COOKIE, HeaderValue::from_static("other=2"));
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "other"), Some("2"));
        assert_eq!(cookie(&headers, "__Host-sealpost"), None);
    }
}
