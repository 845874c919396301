//! Signing in and out, and registering from a notification link.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use sealpost_proto::MessageId;
use serde::Deserialize;

use super::session::{self, CheckedForm, CsrfToken, NoFields, Viewer};
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
    super::pages::refused_if(
        state.pages.render(state, viewer, csrf, "signin.html", values),
        error,
        StatusCode::UNAUTHORIZED,
    )
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
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
    CheckedForm(form): CheckedForm<SignInForm>,
) -> WebResult<Response> {
    let refuse = |message: &str| {
        Ok(sign_in_form(&state, &viewer, &csrf, &form.email, &form.next, Some(message)))
    };
    let Ok(email) = email_address(&form.email) else {
        return refuse("Enter your email address, such as alice@example.org.");
    };
    check_login_limits(&state, &peer, &email).await?;
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
            count_failed_login(&state, &peer, &email).await;
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

/// Ends this browser's session: its device is revoked, so the cookie is
/// worthless even if it was copied.
pub async fn sign_out(
    State(state): State<AppState>,
    viewer: Viewer,
    CheckedForm(NoFields {}): CheckedForm<NoFields>,
) -> WebResult<Response> {
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
        // An address registered with the desktop app has no password yet.
        Some(_) => code_request_form(state, viewer, csrf, recipient, &next, true, None),
        None => register_form(state, viewer, csrf, message, token, recipient, "", None),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CodeQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    email: String,
}

/// Asks for the address to email a code to: for a forgotten password, for
/// an address that uses the desktop app, and for a recipient whose link
/// carries no token (a notification their sender's own mail program sent).
pub async fn code_page(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    Query(query): Query<CodeQuery>,
) -> Response {
    code_request_form(&state, &viewer, &csrf, &query.email, &query.next, false, None)
}

fn code_request_form(
    state: &AppState,
    viewer: &Viewer,
    csrf: &CsrfToken,
    email: &str,
    next: &str,
    uses_app: bool,
    error: Option<&str>,
) -> Response {
    let values = context! { email, next => safe_next(next), uses_app, error };
    state.pages.render(state, viewer, csrf, "code_request.html", values)
}

#[derive(Debug, Deserialize)]
pub struct CodeRequestForm {
    email: String,
    #[serde(default)]
    next: String,
}

/// Emails a code, then asks for it with the new password.
pub async fn send_code(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    CheckedForm(form): CheckedForm<CodeRequestForm>,
) -> WebResult<Response> {
    let Ok(email) = email_address(&form.email) else {
        let error = "Enter your email address, such as alice@example.org.";
        return Ok(code_request_form(
            &state,
            &viewer,
            &csrf,
            &form.email,
            &form.next,
            false,
            Some(error),
        ));
    };
    crate::routes::accounts::send_code(&state, &peer, &email).await?;
    Ok(code_form(&state, &viewer, &csrf, &email, &form.next, None))
}

fn code_form(
    state: &AppState,
    viewer: &Viewer,
    csrf: &CsrfToken,
    email: &str,
    next: &str,
    error: Option<&str>,
) -> Response {
    let values = context! {
        email,
        next => safe_next(next),
        error,
        min_password_length => state.settings.accounts.min_password_length,
    };
    super::pages::refused_if(
        state.pages.render(state, viewer, csrf, "code_verify.html", values),
        error,
        StatusCode::BAD_REQUEST,
    )
}

#[derive(Debug, Deserialize)]
pub struct CodeForm {
    email: String,
    code: String,
    password: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    next: String,
}

/// The emailed code proves the address: the password is set (every other
/// browser is signed out, as after any reset) or the account created.
pub async fn verify_code(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<CodeForm>,
) -> WebResult<Response> {
    let email = email_address(&form.email)?;
    let refuse =
        |error: &str| Ok(code_form(&state, &viewer, &csrf, &email, &form.next, Some(error)));
    // Checked before the code is used up.
    let password = match password(&form.password, state.settings.accounts.min_password_length) {
        Ok(password) => password.to_owned(),
        Err(error) => return refuse(&error.message),
    };
    let name = match form.name.trim() {
        "" => None,
        name => match display_name(name) {
            Ok(name) => Some(name),
            Err(error) => return refuse(&error.message),
        },
    };
    if let Err(error) =
        crate::routes::accounts::redeem_code(&state, &peer, &email, &form.code).await
    {
        if error.status == StatusCode::TOO_MANY_REQUESTS {
            return Err(error.into());
        }
        return refuse(
            "The code is wrong, already used or expired. Check it, or ask for a new one.",
        );
    }
    let hash = hash_password(password).await?;
    let account = match state.store.account_by_email(&email).await? {
        Some(account) => {
            state.store.set_password_hash(&account.id, &hash).await?;
            state
                .store
                .revoke_devices(
                    &account.id,
                    Some(crate::store::DeviceKind::Browser),
                    None,
                    state.clock.now(),
                )
                .await?;
            tracing::info!(account = %account.id, "password set with an emailed code");
            AccountRecord { password_hash: Some(hash), ..account }
        }
        None => match state.store.create_account(&email, name.as_deref(), Some(&hash)).await {
            Ok(account) => {
                tracing::info!(account = %account.id, "account created with an emailed code");
                account
            }
            Err(StoreError::Conflict) => {
                return refuse("This address was registered a moment ago: sign in.");
            }
            Err(other) => return Err(other.into()),
        },
    };
    signed_in_redirect(&state, &account, &headers, &form.next).await
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
    super::pages::refused_if(
        state.pages.render(state, viewer, csrf, "register.html", values),
        error,
        StatusCode::BAD_REQUEST,
    )
}

#[derive(Debug, Deserialize)]
pub struct RegisterForm {
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
    CheckedForm(form): CheckedForm<RegisterForm>,
) -> WebResult<Response> {
    let expired = || {
        WebError(ApiError::forbidden(
            "This link does not open a secure message. Use the link in your notification email as it is.",
        ))
    };
    let id = MessageId::parse(&form.message).map_err(|_| expired())?;
    let message = state.store.message(&id).await?.ok_or_else(expired)?;
    let recipient =
        state.links.recipient(&id, &message.recipients, &form.t).ok_or_else(expired)?.to_owned();
    check_login_limits(&state, &peer, &recipient).await?;
    let next = format!("/messages/{id}");
    if state.store.account_by_email(&recipient).await?.is_some() {
        return Ok(Redirect::to(&format!("/signin?next={next}")).into_response());
    }
    let refuse = |error: &str| {
        Ok(register_form(&state, &viewer, &csrf, &id, &form.t, &recipient, &form.name, Some(error)))
    };
    let name = match display_name(&form.name) {
        Ok(name) => name,
        Err(error) => return refuse(&error.message),
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
