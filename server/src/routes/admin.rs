//! The organization's administration: accounts listed in `admin.emails` read
//! and change branding, sender, Secure Message Center URL, templates and the
//! SMTP relay. Changes apply to the next notification.

use axum::extract::State;
use sealpost_proto::api::{BlocklistStatus, ErrorBody, OrganizationSettings, OrganizationUpdate};

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::organization::OrganizationError;
use crate::state::AppState;

pub(crate) fn require_admin(state: &AppState, caller: &Caller) -> ApiResult<()> {
    let is_admin = state
        .settings
        .admin
        .emails
        .iter()
        .any(|email| email.eq_ignore_ascii_case(&caller.account.email));
    if is_admin {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Only the organization's admins (admin.emails in the server configuration) may do this.",
        ))
    }
}

#[utoipa::path(get, path = "/api/v1/admin/organization", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = OrganizationSettings), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn organization(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<ApiJson<OrganizationSettings>> {
    require_admin(&state, &caller)?;
    Ok(ApiJson(state.organization.current().describe()))
}

/// Changes the fields given; the others keep their values.
#[utoipa::path(put, path = "/api/v1/admin/organization", tag = "admin", security(("bearer" = [])),
    request_body = OrganizationUpdate,
    responses((status = 200, body = OrganizationSettings), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn update_organization(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(update): ApiJson<OrganizationUpdate>,
) -> ApiResult<ApiJson<OrganizationSettings>> {
    require_admin(&state, &caller)?;
    let current = state.organization.update(update).await.map_err(|error| match error {
        OrganizationError::Invalid(message) => ApiError::bad_request(message),
        OrganizationError::Store(error) => error.into(),
        OrganizationError::Corrupt(message) => ApiError::internal(&message),
    })?;
    tracing::info!(admin = %caller.account.email, "organization settings changed");
    Ok(ApiJson(current.describe()))
}

/// The latest check of the relay's sending addresses against DNS blocklists.
#[utoipa::path(get, path = "/api/v1/admin/blocklists", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = BlocklistStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn blocklists(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<ApiJson<BlocklistStatus>> {
    require_admin(&state, &caller)?;
    Ok(ApiJson(BlocklistStatus {
        enabled: state.settings.blocklists.enabled,
        report: state.blocklists.get(),
    }))
}
