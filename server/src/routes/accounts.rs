//! Proving an address with an emailed code, and password accounts.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use sealpost_proto::api::{Account, CodeRequest, CodeSent, CreateAccount, ErrorBody, ErrorCode};
use sealpost_proto::verification::code_email;

use crate::auth::{code_hash, hash_password, new_code};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::mailer::OutgoingMail;
use crate::rate_limit::LimitError;
use crate::routes::input::{display_name, email_address, password};
use crate::state::AppState;
use crate::store::{AccountRecord, CodeCheck, StoreError};

/// Emails a six-digit code to the address.
#[utoipa::path(post, path = "/api/v1/verification-codes", tag = "accounts", request_body = CodeRequest,
    responses((status = 202, body = CodeSent), (status = 400, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn request_code(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<CodeRequest>,
) -> ApiResult<(StatusCode, ApiJson<CodeSent>)> {
    let email = email_address(&request.email)?;
    let expires_at = send_code(&state, &peer, &email).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(CodeSent { expires_at })))
}

/// Emails a fresh code to `email` (rate-limited per address and client);
/// returns when it stops working.
pub async fn send_code(
    state: &AppState,
    peer: &SocketAddr,
    email: &str,
) -> ApiResult<time::OffsetDateTime> {
    let now = state.clock.now();
    let store = &*state.store;
    state.limits.codes_per_ip.hit(store, &peer.ip().to_string(), now).await?;
    state.limits.codes_per_address.hit(store, email, now).await?;
    let code = new_code();
    let ttl = time::Duration::seconds(
        i64::try_from(state.settings.accounts.code_ttl_seconds).unwrap_or(900),
    );
    let expires_at = now + ttl;
    state.store.put_code(email, code_hash(email, &code), expires_at).await?;
    let organization = state.organization.current();
    let content = code_email(&code, &state.origin, &organization.branding);
    organization
        .mailer
        .send(OutgoingMail {
            to: email,
            subject: &content.subject,
            text_body: &content.text_body,
            headers: &content.headers,
        })
        .await?;
    state.metrics.verification_emails.inc();
    tracing::info!(email = %email, "verification code sent");
    Ok(expires_at)
}

/// Creates a password account for an address proven with a code.
#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts", request_body = CreateAccount,
    responses((status = 201, body = Account), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn create_account(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<CreateAccount>,
) -> ApiResult<(StatusCode, ApiJson<Account>)> {
    let email = email_address(&request.email)?;
    let password = password(&request.password, state.settings.accounts.min_password_length)?;
    let display_name = request.display_name.as_deref().map(display_name).transpose()?;
    if state.store.account_by_email(&email).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AccountExists,
            "An account with this address already exists. Sign in instead.",
        ));
    }
    redeem_code(&state, &peer, &email, &request.code).await?;
    let hash = hash_password(password.to_owned()).await?;
    let account =
        match state.store.create_account(&email, display_name.as_deref(), Some(&hash)).await {
            Ok(account) => account,
            Err(StoreError::Conflict) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::AccountExists,
                    "An account with this address already exists.",
                ));
            }
            Err(other) => return Err(other.into()),
        };
    tracing::info!(account = %account.id, "account created");
    Ok((StatusCode::CREATED, ApiJson(account_view(&account))))
}

/// Checks and uses up a code, counting failures against the address and IP.
pub async fn redeem_code(
    state: &AppState,
    peer: &SocketAddr,
    email: &str,
    code: &str,
) -> ApiResult<()> {
    check_login_limits(state, peer, email).await?;
    let code = code.trim();
    let outcome = state
        .store
        .check_code(
            email,
            code_hash(email, code),
            state.settings.accounts.code_max_attempts,
            state.clock.now(),
        )
        .await?;
    match outcome {
        CodeCheck::Accepted => Ok(()),
        CodeCheck::Rejected | CodeCheck::NoValidCode => {
            count_failed_login(state, peer, email).await;
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidCode,
                "The code is wrong, already used or expired. Check it, or request a new one.",
            ))
        }
    }
}

/// Refuses early when an address or IP has failed too often recently.
pub async fn check_login_limits(state: &AppState, peer: &SocketAddr, email: &str) -> ApiResult<()> {
    let (store, now) = (&*state.store, state.clock.now());
    state.limits.failed_logins_per_ip.check(store, &peer.ip().to_string(), now).await?;
    Ok(state.limits.failed_logins_per_address.check(store, email, now).await?)
}

pub async fn count_failed_login(state: &AppState, peer: &SocketAddr, email: &str) {
    tracing::info!(email = %email, peer = %peer.ip(), "failed sign-in attempt");
    let (store, now) = (&*state.store, state.clock.now());
    let limits = &state.limits;
    let counted = [
        limits.failed_logins_per_ip.hit(store, &peer.ip().to_string(), now).await,
        limits.failed_logins_per_address.hit(store, email, now).await,
    ];
    // The window was checked before; a refusal here only means it just filled.
    for outcome in counted {
        if let Err(LimitError::Store(error)) = outcome {
            tracing::error!(%error, "could not count a failed sign-in");
        }
    }
}

pub fn account_view(account: &AccountRecord) -> Account {
    Account {
        account_id: account.id.to_string(),
        email: account.email.clone(),
        display_name: account.display_name.clone(),
        created_at: account.created_at,
    }
}
