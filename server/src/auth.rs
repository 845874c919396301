//! Credentials: passwords (argon2id), opaque device tokens, and the
//! [`Caller`] extractor that turns a bearer token into an account and device.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use data_encoding::BASE64URL_NOPAD;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AccountRecord, DeviceRecord, TokenHashes};
use sealpost_proto::api::ErrorCode;

const ACCESS_PREFIX: &str = "spa_";
const REFRESH_PREFIX: &str = "spr_";

/// A new opaque token and the hash the store keeps instead of it.
/// Tokens carry 256 random bits, so a plain SHA-256 is enough to make a
/// stolen database useless for authenticating (no slow hash needed).
fn new_token(prefix: &str) -> (String, [u8; 32]) {
    let token = format!("{prefix}{}", BASE64URL_NOPAD.encode(&rand::random::<[u8; 32]>()));
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh token pair: the clear tokens for the client, the hashes for the store.
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub hashes: TokenHashes,
}

pub fn issue_tokens(state: &AppState, now: OffsetDateTime) -> IssuedTokens {
    let accounts = &state.settings.accounts;
    let (access_token, access_hash) = new_token(ACCESS_PREFIX);
    let (refresh_token, refresh_hash) = new_token(REFRESH_PREFIX);
    let seconds = |s: u64| time::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2));
    IssuedTokens {
        access_token,
        refresh_token,
        hashes: TokenHashes {
            access_hash,
            access_expires_at: now + seconds(accounts.access_token_ttl_seconds),
            refresh_hash,
            refresh_expires_at: now
                + seconds(accounts.refresh_token_ttl_days.saturating_mul(86_400)),
        },
    }
}

/// Password hashes computed at once. Each takes 19 MiB (argon2id's memory
/// cost, kept for the next hash) and a core for its duration; unbounded, a
/// burst of sign-ins would take a blocking thread each (up to 512) and
/// gigabytes, and finish no sooner than waiting for a core.
fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        tokio::sync::Semaphore::new(2 * cores)
    })
}

/// Hashes a password with argon2id (OWASP parameters) off the async threads.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    let _permit = hashing_permits().acquire().await.map_err(|error| ApiError::internal(&error))?;
    tokio::task::spawn_blocking(move || crate::password::hash(password.as_bytes()))
        .await
        .map_err(|error| ApiError::internal(&error))?
        .map_err(|error| ApiError::internal(&error))
}

pub async fn verify_password(hash: String, password: String) -> bool {
    let Ok(_permit) = hashing_permits().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || crate::password::verify(&hash, password.as_bytes()))
        .await
        .unwrap_or(false)
}

/// The hash of a verification code, bound to its address so a code for one
/// address never matches another's row.
pub fn code_hash(email: &str, code: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(email.as_bytes())
        .chain_update(b"\n")
        .chain_update(code.as_bytes())
        .finalize()
        .into()
}

/// Whether `a` and `b` are equal, taking as long whatever their first
/// difference: for comparing secrets (codes, tokens, MACs).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A six-digit code, uniformly drawn.
pub fn new_code() -> String {
    format!("{:06}", rand::random_range(0..1_000_000u32))
}

/// The authenticated account and device behind a request's bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: AccountRecord,
    pub device: DeviceRecord,
}

impl Caller {
    /// The caller behind a token, given what the store found for its hash:
    /// refused if there is no such device, it was revoked or the token expired.
    pub fn admit(
        found: Option<(DeviceRecord, AccountRecord)>,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let (device, account) = found.ok_or_else(|| {
            ApiError::unauthenticated(
                "The access token is not valid. Refresh it or enroll the device again.",
            )
        })?;
        if device.revoked_at.is_some() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::DeviceRevoked,
                "This device was signed out. Enroll it again to continue.",
            ));
        }
        if device.access_expires_at <= state.clock.now() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::TokenExpired,
                "The access token has expired. Trade the refresh token for a new one at /api/v1/devices/refresh.",
            ));
        }
        Ok(Caller { account, device })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let AccessToken(hash) = AccessToken::from_request_parts(parts, state).await?;
        Caller::admit(state.store.device_by_access_hash(hash).await?, state)
    }
}

/// The hash of a request's bearer access token, not yet looked up: for
/// handlers that look the caller up together with what the request names.
/// Everything else takes a [`Caller`].
pub struct AccessToken(pub [u8; 32]);

impl<S: Sync> FromRequestParts<S> for AccessToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthenticated(
                "Send the device's access token as `Authorization: Bearer <token>`.",
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| token.starts_with(ACCESS_PREFIX))
            .ok_or_else(|| {
                ApiError::unauthenticated(
                    "The Authorization header must be `Bearer <access token>`.",
                )
            })?;
        Ok(AccessToken(token_hash(token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let code = new_code();
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn code_hashes_are_bound_to_the_address() {
        assert_ne!(code_hash("a@example.test", "123456"), code_hash("b@example.test", "123456"));
    }

    #[tokio::test]
    async fn passwords_verify_only_with_the_right_password() {
        let hash = hash_password("correct horse battery".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(hash.clone(), "correct horse battery".into()).await);
        assert!(!verify_password(hash, "wrong".into()).await);
        assert!(!verify_password("not a hash".into(), "x".into()).await);
    }
}
