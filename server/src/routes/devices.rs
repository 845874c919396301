//! Enrolling devices, refreshing their tokens, listing and revoking them.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use sealpost_proto::api::{
    self, Device, DeviceCredential, DeviceTokens, EnrollDevice, ErrorBody, ErrorCode, RefreshTokens,
};

use crate::auth::{Caller, issue_tokens, token_hash, verify_password};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::ids::DeviceId;
use crate::routes::accounts::{check_login_limits, count_failed_login, redeem_code};
use crate::routes::input::{display_name, email_address};
use crate::state::AppState;
use crate::store::{AccountRecord, DeviceKind, DeviceRecord, StoreError};

/// Enrolls a device with a password or an emailed code and returns its tokens.
/// A code for an address without an account creates a password-less account:
/// that is how the desktop agent registers.
#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", request_body = EnrollDevice,
    responses((status = 201, body = DeviceTokens), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn enroll(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<EnrollDevice>,
) -> ApiResult<(StatusCode, ApiJson<DeviceTokens>)> {
    let email = email_address(&request.email)?;
    let device_name = display_name(&request.device_name)?;
    let account = match request.credential {
        DeviceCredential::Password(password) => {
            sign_in_with_password(&state, &peer, &email, password).await?
        }
        DeviceCredential::Code(code) => {
            redeem_code(&state, &peer, &email, &code).await?;
            account_for_verified_address(&state, &email).await?
        }
    };
    let now = state.clock.now();
    let tokens = issue_tokens(&state, now);
    let device = state
        .store
        .create_device(&account.id, DeviceKind::Agent, &device_name, &tokens.hashes)
        .await?;
    tracing::info!(account = %account.id, device = %device.id, "device enrolled");
    Ok((StatusCode::CREATED, ApiJson(tokens_view(&device, tokens))))
}

async fn sign_in_with_password(
    state: &AppState,
    peer: &SocketAddr,
    email: &str,
    password: String,
) -> ApiResult<AccountRecord> {
    check_login_limits(state, peer, email).await?;
    let account = state.store.account_by_email(email).await?;
    let hash = account
        .as_ref()
        .and_then(|account| account.password_hash.clone())
        .unwrap_or_else(|| state.dummy_password_hash.clone());
    let matches = verify_password(hash, password).await;
    match account {
        Some(account) if matches && account.password_hash.is_some() => Ok(account),
        _ => {
            count_failed_login(state, peer, email).await;
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "The email address or password is wrong.",
            ))
        }
    }
}

async fn account_for_verified_address(state: &AppState, email: &str) -> ApiResult<AccountRecord> {
    if let Some(account) = state.store.account_by_email(email).await? {
        return Ok(account);
    }
    match state.store.create_account(email, None, None).await {
        Ok(account) => Ok(account),
        // Another request created it in between: use that one.
        Err(StoreError::Conflict) => state
            .store
            .account_by_email(email)
            .await?
            .ok_or_else(|| ApiError::internal(&"account vanished")),
        Err(other) => Err(other.into()),
    }
}

/// Trades a refresh token for a new token pair; the old refresh token stops working.
#[utoipa::path(post, path = "/api/v1/devices/refresh", tag = "devices", request_body = RefreshTokens,
    responses((status = 200, body = DeviceTokens), (status = 401, body = ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RefreshTokens>,
) -> ApiResult<ApiJson<DeviceTokens>> {
    let now = state.clock.now();
    let tokens = issue_tokens(&state, now);
    let device = state
        .store
        .rotate_tokens(token_hash(request.refresh_token.trim()), &tokens.hashes, now)
        .await?
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "The refresh token is not valid: it was used already, expired, or the device was signed out. Enroll the device again.",
            )
        })?;
    Ok(ApiJson(tokens_view(&device, tokens)))
}

/// The caller's devices, revoked ones included.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", security(("bearer" = [])),
    responses((status = 200, body = Vec<Device>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<ApiJson<Vec<Device>>> {
    let devices = state.store.devices_of(&caller.account.id).await?;
    Ok(ApiJson(
        devices
            .into_iter()
            .map(|device| Device {
                current: device.id == caller.device.id,
                device_id: device.id.to_string(),
                name: device.name,
                kind: match device.kind {
                    DeviceKind::Agent => api::DeviceKind::Agent,
                    DeviceKind::Browser => api::DeviceKind::Browser,
                },
                created_at: device.created_at,
                revoked_at: device.revoked_at,
            })
            .collect(),
    ))
}

/// Signs a device out: its tokens stop working at once.
#[utoipa::path(delete, path = "/api/v1/devices/{device_id}", tag = "devices", security(("bearer" = [])),
    params(("device_id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(device_id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let revoked = state
        .store
        .revoke_device(&caller.account.id, &DeviceId::from_stored(device_id), state.clock.now())
        .await?;
    if revoked { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::not_found()) }
}

fn tokens_view(device: &DeviceRecord, tokens: crate::auth::IssuedTokens) -> DeviceTokens {
    DeviceTokens {
        device_id: device.id.to_string(),
        access_token: tokens.access_token,
        access_expires_at: tokens.hashes.access_expires_at,
        refresh_token: tokens.refresh_token,
        refresh_expires_at: tokens.hashes.refresh_expires_at,
    }
}
