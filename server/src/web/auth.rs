//! Signing in and out, and registering from a notification link.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use sealpost_proto::MessageId;
use serde::Deserialize;

use super::session::{self, CsrfToken, Viewer};
use super::{WebError, WebResult};
use crate::auth::{hash_password, verify_password};
use crate::error::ApiError;
use crate::routes::accounts::{check_login_limits, count_failed_login};
use crate::routes::input::{display_name, email_address, password};
use crate::state::AppState;
use crate::store::{AccountRecord, StoreError};

#[derive(Debug, Default, Deserialize)]
pub struct SignInQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    email: String,
}

pub async fn sign_in_page(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    Query(query): Query<SignInQuery>,
) -> Response {
    if viewer.0.is_some() {
        return Redirect::to(&safe_next(&query.next)).into_response();
    }
    sign_in_form(&state, &viewer, &csrf, &query.email, &query.next, None)
}

/// The sign-in form; `fixed_email` when the page knows who is expected.
pub fn sign_in_form(
    state: &AppState,
    viewer: &Viewer,
    csrf: &CsrfToken,
    email: &str,
    next: &str,
    error: Option<&str>,
) -> Response {
    let values = context! { email, next => safe_next(next), error };
    let page = state.pages.render(state, viewer, csrf, "signin.html", values);
    match error {
        Some(_) => (StatusCode::UNAUTHORIZED, page).into_response(),
        None => page,
    }
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    csrf: String,
    email: String,
    password: String,
    #[serde(default)]
    next: String,
}

pub async fn sign_in(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> WebResult<Response> {
    let Form(form) = form.map_err(bad_form)?;
    csrf.check(&form.csrf)?;
    let refuse = |message: &str| {
        Ok(sign_in_form(&state, &viewer, &csrf, &form.email, &form.next, Some(message)))
    };
    let Ok(email) = email_address(&form.email) else {
        return refuse("Enter your email address, such as alice@example.org.");
    };
    check_login_limits(&state, &peer, &email)?;
    let account = state.store.account_by_email(&email).await?;
    // The same work whether or not the address has an account.
    let hash = account
        .as_ref()
        .and_then(|account| account.password_hash.clone())
        .unwrap_or_else(|| state.dummy_password_hash.clone());
    let matches = verify_password(hash, form.password.clone()).await;
    let account = match account {
        Some(account) if matches && account.password_hash.is_some() => account,
        _ => {
            count_failed_login(&state, &peer, &email);
            return refuse("The email address or the password is not right.");
        }
    };
    signed_in_redirect(&state, &account, &headers, &form.next).await
}

/// Starts a session for `account` and sends the browser on to `next`.
async fn signed_in_redirect(
    state: &AppState,
    account: &AccountRecord,
    headers: &HeaderMap,
    next: &str,
) -> WebResult<Response> {
    let cookie = session::start(state, account, headers).await?;
    let mut response = Redirect::to(&safe_next(next)).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// Ends this browser's session: its device is revoked, so the cookie is
/// worthless even if it was copied.
pub async fn sign_out(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> WebResult<Response> {
    let Form(form) = form.map_err(bad_form)?;
    csrf.check(&form.csrf)?;
    if let Some(session) = &viewer.0 {
        state
            .store
            .revoke_device(&session.account.id, &session.device.id, state.clock.now())
            .await?;
        tracing::info!(account = %session.account.id, device = %session.device.id, "signed out of the Secure Message Center");
    }
    let mut response = Redirect::to("/signin").into_response();
    response.headers_mut().append(header::SET_COOKIE, session::cleared_cookie());
    Ok(response)
}

/// What a stranger sees at a message's link: registration for a new
/// recipient, sign-in for a known one.
pub fn landing(
    state: &AppState,
    viewer: &Viewer,
    csrf: &CsrfToken,
    message: &MessageId,
    token: &str,
    recipient: &str,
    account: Option<&AccountRecord>,
) -> Response {
    let next = format!("/messages/{message}");
    match account {
        Some(account) if account.password_hash.is_some() => {
            sign_in_form(state, viewer, csrf, recipient, &next, None)
        }
        Some(_) => {
            let message = "This address reads its secure messages with the Sealpost desktop app: \
                           open the message in your mail program, where the app has put it.";
            state.pages.render(
                state,
                viewer,
                csrf,
                "error.html",
                context! { status => 409, title => "Use the desktop app", message },
            )
        }
        None => register_form(state, viewer, csrf, message, token, recipient, "", None),
    }
}

#[allow(clippy::too_many_arguments)]
fn register_form(
    state: &AppState,
    viewer: &Viewer,
    csrf: &CsrfToken,
    message: &MessageId,
    token: &str,
    recipient: &str,
    name: &str,
    error: Option<&str>,
) -> Response {
    let values = context! {
        message => message.as_str(),
        token,
        email => recipient,
        name,
        error,
        min_password_length => state.settings.accounts.min_password_length,
    };
    let page = state.pages.render(state, viewer, csrf, "register.html", values);
    match error {
        Some(_) => (StatusCode::BAD_REQUEST, page).into_response(),
        None => page,
    }
}

#[derive(Debug, Deserialize)]
pub struct RegisterForm {
    csrf: String,
    message: String,
    t: String,
    name: String,
    password: String,
    accept: Option<String>,
}

/// Creates the account of a recipient who followed their link: the link
/// proved the address, so a name and a password are all it takes.
pub async fn register(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<RegisterForm>, FormRejection>,
) -> WebResult<Response> {
    let Form(form) = form.map_err(bad_form)?;
    csrf.check(&form.csrf)?;
    let expired = || {
        WebError(ApiError::forbidden(
            "This link does not open a secure message. Use the link in your notification email as it is.",
        ))
    };
    let id = MessageId::parse(&form.message).map_err(|_| expired())?;
    let message = state.store.message(&id).await?.ok_or_else(expired)?;
    let recipient =
        state.links.recipient(&id, &message.recipients, &form.t).ok_or_else(expired)?.to_owned();
    check_login_limits(&state, &peer, &recipient)?;
    let next = format!("/messages/{id}");
    if state.store.account_by_email(&recipient).await?.is_some() {
        return Ok(Redirect::to(&format!("/signin?next={next}")).into_response());
    }
    let refuse = |error: &str| {
        Ok(register_form(&state, &viewer, &csrf, &id, &form.t, &recipient, &form.name, Some(error)))
    };
    let Ok(name) = display_name(&form.name) else {
        return refuse("Enter your name (up to 100 characters).");
    };
    let password = match password(&form.password, state.settings.accounts.min_password_length) {
        Ok(password) => password.to_owned(),
        Err(error) => return refuse(&error.message),
    };
    if form.accept.as_deref() != Some("on") {
        return refuse("Accept the terms of use to continue.");
    }
    let hash = hash_password(password).await?;
    let account = match state.store.create_account(&recipient, Some(&name), Some(&hash)).await {
        Ok(account) => account,
        // Registered in another tab a moment ago.
        Err(StoreError::Conflict) => {
            return Ok(Redirect::to(&format!("/signin?next={next}")).into_response());
        }
        Err(other) => return Err(other.into()),
    };
    tracing::info!(account = %account.id, "account created from a notification link");
    signed_in_redirect(&state, &account, &headers, &next).await
}

pub(super) fn bad_form(rejection: FormRejection) -> WebError {
    WebError(ApiError::bad_request(format!(
        "The form was incomplete ({rejection}). Go back, reload the page and try again."
    )))
}

/// Where to go after signing in: a path on this site only, never another
/// site (`//evil.example`, `/\evil.example`).
pub fn safe_next(next: &str) -> String {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if local { next.to_owned() } else { "/mailbox".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_signing_in() {
        assert_eq!(safe_next("/messages/abc"), "/messages/abc");
        for elsewhere in
            ["", "https://evil.example", "//evil.example", "/\\evil.example", "/a\r\nb"]
        {
            assert_eq!(safe_next(elsewhere), "/mailbox", "{elsewhere:?}");
        }
    }
}
