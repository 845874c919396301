//! Writing through the organization: the members' form for masked mail.
//! Each correspondent in the directory gets a copy from an address at the
//! masking domain, never the member's own, and answers come back to the
//! member's mailbox. What is sent is the API's masked mail
//! ([`send_masked`]); it leaves through the outbox like any other mail.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use sealpost_proto::api::MaskedMail;
use serde::Deserialize;

use super::session::{CheckedForm, CsrfToken, SignedIn, Viewer};
use super::typed_addresses;
use super::{WebError, WebResult};
use crate::error::ApiError;
use crate::masking;
use crate::routes::masked::send_masked;
use crate::state::AppState;

/// What the form holds, to show it again with the problem when it is refused.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Draft {
    #[serde(default)]
    to: String,
    #[serde(default)]
    groups: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    text: String,
}

pub async fn new_message(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    SignedIn(session): SignedIn,
) -> WebResult<Response> {
    allowed(&state, &session.account.email)?;
    Ok(form(&state, &viewer, &csrf, &Draft::default(), None))
}

/// Sends the form's mail through the organization and says to whom it went.
pub async fn send(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    SignedIn(session): SignedIn,
    CheckedForm(draft): CheckedForm<Draft>,
) -> WebResult<Response> {
    allowed(&state, &session.account.email)?;
    let refuse =
        |error: &str, status| Ok(form(&state, &viewer, &csrf, &draft, Some((error, status))));
    let to = match typed_addresses(&draft.to) {
        Ok(to) => to,
        Err(bad) => {
            return refuse(
                &format!("{bad:?} is not an email address such as alice@example.org."),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let groups = groups(&draft.groups);
    if to.is_empty() && groups.is_empty() {
        return refuse(
            "Name at least one correspondent in To or one group in Groups.",
            StatusCode::BAD_REQUEST,
        );
    }
    if draft.subject.trim().is_empty() {
        return refuse("Write a subject.", StatusCode::BAD_REQUEST);
    }
    if draft.text.trim().is_empty() {
        return refuse("Write the message.", StatusCode::BAD_REQUEST);
    }
    let request = MaskedMail {
        to,
        groups,
        subject: draft.subject.clone(),
        text: draft.text.replace("\r\n", "\n"),
    };
    let sent = match send_masked(&state, &session.account, &request).await {
        Ok(sent) => sent,
        // What the member can fix is shown on the form; the rest as an error page.
        Err(error) if error.status.is_client_error() && error.retry_after.is_none() => {
            return refuse(&error.message, error.status);
        }
        Err(error) => return Err(WebError(error)),
    };
    tracing::info!(member = %session.account.email, thread = %sent.thread,
        recipients = sent.recipients.len(), "masked mail queued from the Secure Message Center");
    let recipients: Vec<&str> =
        sent.recipients.iter().map(|recipient| recipient.email.as_str()).collect();
    let values = context! {
        subject => draft.subject.trim(),
        count => recipients.len(),
        recipients,
        masking_domain => masking::domain(&state),
    };
    Ok(state.pages.render(&state, &viewer, &csrf, "masked_sent.html", values))
}

/// Refuses the page when masked mail is off (as if it did not exist) or the
/// account is not one of the organization's members.
fn allowed(state: &AppState, email: &str) -> Result<(), WebError> {
    if masking::domain(state).is_none() {
        return Err(WebError(ApiError::not_found()));
    }
    if !state.settings.webmail.is_member(email) {
        return Err(not_a_member());
    }
    Ok(())
}

/// The form, with `draft` in it; with the problem and its status when refused.
fn form(
    state: &AppState,
    viewer: &Viewer,
    csrf: &CsrfToken,
    draft: &Draft,
    refused: Option<(&str, StatusCode)>,
) -> Response {
    let error = refused.map(|(error, _)| error);
    let values = context! {
        to => &draft.to,
        groups => &draft.groups,
        subject => &draft.subject,
        text => &draft.text,
        masking_domain => masking::domain(state),
        error,
    };
    let page = state.pages.render(state, viewer, csrf, "masked.html", values);
    match refused {
        Some((error, status)) => super::pages::refused_if(page, Some(error), status),
        None => page,
    }
}

/// Group names separated by commas, semicolons or lines (names may hold spaces).
fn groups(input: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for name in input.split([',', ';', '\n']).map(str::trim).filter(|name| !name.is_empty()) {
        if !found.iter().any(|known| known.eq_ignore_ascii_case(name)) {
            found.push(name.to_owned());
        }
    }
    found
}

fn not_a_member() -> WebError {
    WebError(ApiError::forbidden(
        "Only the organization's members write through the organization. You can reply to the messages you received.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correspondents_and_groups_are_read_as_people_type_them() {
        assert_eq!(
            typed_addresses("Tim <Tim@Alumni.example>; ann@alumni.example lee@alumni.example,\n")
                .expect("valid"),
            ["tim@alumni.example", "ann@alumni.example", "lee@alumni.example"]
        );
        assert_eq!(
            typed_addresses("tim@alumni.example tim@alumni.example").expect("valid").len(),
            1
        );
        assert_eq!(typed_addresses("tim@alumni.example, nobody"), Err("nobody".into()));
        assert_eq!(typed_addresses("  "), Ok(vec![]));
        assert_eq!(groups(" Class of 2010, class of 2010;Staff\n"), ["Class of 2010", "Staff"]);
        assert!(groups(" , ").is_empty());
    }
}
