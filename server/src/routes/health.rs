//! Liveness and discovery.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use sealpost_proto::api::{API_VERSION, Health, WellKnown};

use crate::error::ApiJson;
use crate::state::AppState;

/// 200 when the server can reach its database, 503 otherwise.
#[utoipa::path(get, path = "/healthz", tag = "discovery",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let version = env!("CARGO_PKG_VERSION").to_owned();
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, ApiJson(Health { status: "ok".into(), version })),
        Err(error) => {
            tracing::error!(%error, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                ApiJson(Health { status: "database unavailable".into(), version }),
            )
        }
    }
}

/// What a client needs to trust this server's notifications, and where the
/// organization's mail servers are when configured (`[discovery]`).
#[utoipa::path(get, path = "/.well-known/sealpost", tag = "discovery",
    responses((status = 200, body = WellKnown)))]
pub async fn well_known(State(state): State<AppState>) -> ApiJson<WellKnown> {
    ApiJson(WellKnown {
        api_version: API_VERSION,
        origin: state.origin.clone(),
        signing_keys: state.keys.published().to_vec(),
        mail: state.settings.discovery.mail_settings(),
    })
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "discovery",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

/// Unknown paths answer in the API's error format too.
pub async fn not_found() -> crate::error::ApiError {
    crate::error::ApiError::not_found()
}
