//! Masked mail: members write to correspondents through the platform, and
//! admins read what became of the mail that came back.

use axum::extract::{Query, State};
use sealpost_proto::api::{
    ErrorBody, MaskedMail, MaskedMailSent, MaskedRecipient, RelayLog, RelayLogEntry,
};
use serde::Deserialize;

use super::admin::require_admin;
use super::directory::group_name;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::masking::{self, NewMasked};
use crate::routes::input::email_address;
use crate::state::AppState;
use crate::store::NewMail;

/// Correspondents one masked message may go to.
const MAX_CORRESPONDENTS: usize = 10_000;
/// Longest subject and body accepted.
const MAX_SUBJECT: usize = 998;
const MAX_TEXT: usize = 1 << 20;

/// Sends one copy per correspondent from the member's masked address for
/// this conversation; answers come back to that address and are relayed
/// to the member.
#[utoipa::path(post, path = "/api/v1/masked-mail", tag = "masking", security(("bearer" = [])),
    request_body = MaskedMail,
    responses((status = 200, body = MaskedMailSent), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<MaskedMail>,
) -> ApiResult<ApiJson<MaskedMailSent>> {
    let sent = send_masked(&state, &caller.account, &request).await?;
    tracing::info!(member = %caller.account.email, thread = %sent.thread,
        recipients = sent.recipients.len(), "masked mail queued");
    Ok(ApiJson(sent))
}

/// What the API and the Secure Message Center's form share.
pub async fn send_masked(
    state: &AppState,
    member: &crate::store::AccountRecord,
    request: &MaskedMail,
) -> ApiResult<MaskedMailSent> {
    let Some(domain) = masking::domain(state) else {
        return Err(ApiError::forbidden(
            "Masked mail is not set up on this server (masking.domain in its configuration).",
        ));
    };
    if !state.settings.webmail.is_member(&member.email) {
        return Err(ApiError::forbidden(
            "Only the organization's members write through the platform.",
        ));
    }
    let subject = checked_subject(request)?;
    let correspondents = correspondents(state, request).await?;
    let thread = masking::new_thread();
    let from_name = masking::member_display_name(state, member);
    let now = state.clock.now();
    let emails: Vec<String> = correspondents.iter().map(|(email, _)| email.clone()).collect();
    let addresses = masking::reply_addresses(state, domain, member, &emails, &thread).await?;
    let mut mails = Vec::with_capacity(correspondents.len());
    let mut recipients = Vec::with_capacity(correspondents.len());
    for ((email, name), reply_address) in correspondents.into_iter().zip(addresses) {
        let mail = NewMasked {
            from_name: &from_name,
            reply_address: &reply_address,
            to_name: name.as_deref(),
            to: &email,
            subject,
            text: &request.text,
            date: now,
        };
        mails.push(NewMail {
            recipient: email.clone(),
            envelope_sender: None,
            email: mail.compose(domain),
        });
        recipients.push(MaskedRecipient { email, reply_address });
    }
    masking::queue(state, mails).await?;
    Ok(MaskedMailSent { thread, recipients })
}

/// The trimmed subject, once the subject and text of `request` are fit to send.
pub fn checked_subject(request: &MaskedMail) -> ApiResult<&str> {
    let subject = request.subject.trim();
    if subject.is_empty() || subject.len() > MAX_SUBJECT || subject.contains(['\r', '\n']) {
        return Err(ApiError::bad_request("`subject` must be one line of 1 to 998 characters."));
    }
    if request.text.trim().is_empty() || request.text.len() > MAX_TEXT {
        return Err(ApiError::bad_request("`text` must have some text, 1 MiB at most."));
    }
    Ok(subject)
}

/// The named correspondents and the groups' members, each once, all in
/// the directory: answers are relayed only from people listed there.
async fn correspondents(
    state: &AppState,
    request: &MaskedMail,
) -> ApiResult<Vec<(String, Option<String>)>> {
    let mut found: Vec<(String, Option<String>)> = Vec::new();
    for raw in &request.to {
        let email = email_address(raw).map_err(|_| {
            ApiError::bad_request(format!("{raw:?} in `to` is not an email address."))
        })?;
        let Some(entry) = state.store.directory_entry(&email).await? else {
            return Err(ApiError::bad_request(format!(
                "{email} is not in the organization's directory: only recognised correspondents can answer, so add them first."
            )));
        };
        found.push((entry.email, entry.name));
    }
    for raw in &request.groups {
        let members = state.store.directory_group(&group_name(raw)).await?;
        if members.is_empty() {
            return Err(ApiError::bad_request(format!(
                "The directory has no group {raw:?} (groups come from the import's group column)."
            )));
        }
        found.extend(members.into_iter().map(|entry| (entry.email, entry.name)));
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|(email, _)| seen.insert(email.clone()));
    if found.is_empty() {
        return Err(ApiError::bad_request("Name at least one correspondent in `to` or `groups`."));
    }
    if found.len() > MAX_CORRESPONDENTS {
        return Err(ApiError::bad_request(format!(
            "At most {MAX_CORRESPONDENTS} correspondents at once; this names {}.",
            found.len()
        )));
    }
    Ok(found)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LogQuery {
    /// Entries to return, newest first, at most 1000.
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

#[utoipa::path(get, path = "/api/v1/admin/relay-log", tag = "admin", security(("bearer" = [])),
    params(LogQuery),
    responses((status = 200, body = RelayLog), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn relay_log(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<LogQuery>,
) -> ApiResult<ApiJson<RelayLog>> {
    require_admin(&state, &caller)?;
    let records = state.store.relay_log(query.limit.min(1000)).await?;
    let entries = records
        .into_iter()
        .map(|record| RelayLogEntry {
            at: record.at,
            address: record.address,
            envelope_sender: record.envelope_sender,
            from_address: record.from_address,
            member: record.member_email,
            decision: record.decision,
            reason: record.reason,
            message_id: record.header_message_id,
        })
        .collect();
    Ok(ApiJson(RelayLog { entries }))
}

/// Stops a masked address taking mail: from then on it is refused at RCPT.
/// Its member or an admin may do this.
#[utoipa::path(delete, path = "/api/v1/masked-addresses/{address}", tag = "masking", security(("bearer" = [])),
    params(("address" = String, Path, description = "The masked address")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(address): ApiPath<String>,
) -> ApiResult<axum::http::StatusCode> {
    let address = address.trim().to_lowercase();
    let issued = state.store.reply_address(&address).await?;
    // Someone else's address is as absent as an unknown one.
    let allowed = issued.as_ref().is_some_and(|issued| {
        issued.member_email == caller.account.email || require_admin(&state, &caller).is_ok()
    });
    if !allowed {
        return Err(ApiError::not_found());
    }
    state.store.disable_reply_address(&address, state.clock.now()).await?;
    tracing::info!(%address, by = %caller.account.email, "masked address disabled");
    Ok(axum::http::StatusCode::NO_CONTENT)
}
