//! The account page: the password, the signed-in devices (desktop apps and
//! browsers) with revoke, signing out everywhere, and the desktop app.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;

use super::WebResult;
use super::session::{self, CheckedForm, CsrfToken, NoFields, Session, SignedIn, Viewer};
use crate::auth::{hash_password, verify_password};
use crate::ids::DeviceId;
use crate::routes::input::password;
use crate::state::AppState;
use crate::store::DeviceKind;

pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    SignedIn(session): SignedIn,
) -> WebResult<Response> {
    render(&state, &viewer, &csrf, &session, None, None).await
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    csrf: &CsrfToken,
    session: &Session,
    notice: Option<&str>,
    error: Option<&str>,
) -> WebResult<Response> {
    let now = state.clock.now();
    let devices: Vec<_> = state
        .store
        .devices_of(&session.account.id)
        .await?
        .into_iter()
        // A device whose sign-in has run out is no longer signed in.
        .filter(|device| device.revoked_at.is_none() && device.refresh_expires_at > now)
        .map(|device| {
            context! {
                id => device.id.as_str(),
                name => &device.name,
                kind => match device.kind {
                    DeviceKind::Agent => "Desktop app",
                    DeviceKind::Browser => "Browser",
                },
                since => device.created_at.unix_timestamp(),
                current => device.id == session.device.id,
            }
        })
        .collect();
    let settings = &state.settings.webmail;
    let register_link = format!(
        "sealpost://register?email={}&server={}",
        query_encode(&session.account.email),
        query_encode(&state.origin)
    );
    let values = context! {
        email => &session.account.email,
        name => session.account.display_name.as_deref().unwrap_or_default(),
        has_password => session.account.password_hash.is_some(),
        devices,
        notice,
        error,
        download_url => settings.desktop_download_url.as_deref(),
        register_link,
        min_password_length => state.settings.accounts.min_password_length,
    };
    Ok(state.pages.render(state, viewer, csrf, "account.html", values))
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    current: String,
    new: String,
}

/// Changes the password; every other browser is signed out, since whoever
/// knew the old password may be signed in on one.
pub async fn change_password(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    SignedIn(session): SignedIn,
    CheckedForm(form): CheckedForm<PasswordForm>,
) -> WebResult<Response> {
    let current_hash = session.account.password_hash.clone().unwrap_or_default();
    if !verify_password(current_hash, form.current.clone()).await {
        let error = "The current password is not right.";
        return render(&state, &viewer, &csrf, &session, None, Some(error)).await;
    }
    let new = match password(&form.new, state.settings.accounts.min_password_length) {
        Ok(new) => new.to_owned(),
        Err(error) => {
            return render(&state, &viewer, &csrf, &session, None, Some(&error.message)).await;
        }
    };
    let hash = hash_password(new).await?;
    state.store.set_password_hash(&session.account.id, &hash).await?;
    let now = state.clock.now();
    let others = state
        .store
        .revoke_devices(
            &session.account.id,
            Some(DeviceKind::Browser),
            Some(&session.device.id),
            now,
        )
        .await?;
    tracing::info!(account = %session.account.id, browsers_signed_out = others, "password changed");
    let notice = "Your password was changed. Other browsers were signed out.";
    render(&state, &viewer, &csrf, &session, Some(notice), None).await
}

/// Signs one device out: a desktop app stops fetching messages, a browser
/// is signed out at its next page.
pub async fn revoke(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    SignedIn(session): SignedIn,
    Path(device_id): Path<String>,
    CheckedForm(NoFields {}): CheckedForm<NoFields>,
) -> WebResult<Response> {
    let device_id = DeviceId::from_stored(device_id);
    let revoked =
        state.store.revoke_device(&session.account.id, &device_id, state.clock.now()).await?;
    if device_id == session.device.id {
        return Ok(signed_out());
    }
    let notice = if revoked { "The device was signed out." } else { "There is no such device." };
    render(&state, &viewer, &csrf, &session, Some(notice), None).await
}

/// Signs every device of the account out, this browser included.
pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    CheckedForm(NoFields {}): CheckedForm<NoFields>,
) -> WebResult<Response> {
    let count =
        state.store.revoke_devices(&session.account.id, None, None, state.clock.now()).await?;
    tracing::info!(account = %session.account.id, devices = count, "signed out everywhere");
    Ok(signed_out())
}

fn signed_out() -> Response {
    let mut response = Redirect::to("/signin").into_response();
    response.headers_mut().append(header::SET_COOKIE, session::cleared_cookie());
    response
}

/// Percent-encodes a query value.
fn query_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => char::from(b).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}
