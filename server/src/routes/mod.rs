//! The HTTP surface: one module per resource, wired here with the OpenAPI
//! document that describes it.

pub mod accounts;
pub mod admin;
pub mod devices;
pub mod directory;
pub mod health;
pub mod input;
pub mod masked;
pub mod messages;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::error::ApiJson;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Sealpost API", description = "Secure message storage and retrieval. Errors are `{code, message}` with a stable code."),
    paths(
        health::healthz, health::well_known, health::metrics,
        accounts::request_code, accounts::create_account,
        devices::enroll, devices::refresh, devices::list, devices::revoke,
        messages::upload, messages::info, messages::content, messages::retrievals, messages::deliveries,
        messages::recall, messages::sender_notified, messages::recalls,
        admin::organization, admin::update_organization, admin::blocklists,
        directory::list, directory::import, directory::remove,
        masked::send, masked::relay_log, masked::disable,
    ),
    components(schemas(sealpost_proto::api::ErrorBody, sealpost_proto::api::ErrorCode, sealpost_proto::api::UploadMetadata)),
    modifiers(&BearerToken),
)]
pub struct ApiDoc;

struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Path of the served OpenAPI document.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

pub fn router(state: AppState) -> Router {
    // The upload's own limit is enforced while streaming to disk; this outer
    // bound also covers the metadata part and multipart framing.
    let upload_limit = usize::try_from(state.settings.messages.max_size)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/.well-known/sealpost", get(health::well_known))
        .route("/metrics", get(health::metrics))
        .route(OPENAPI_PATH, get(|| async { ApiJson(ApiDoc::openapi()) }))
        .route("/api/v1/verification-codes", post(accounts::request_code))
        .route("/api/v1/accounts", post(accounts::create_account))
        .route("/api/v1/devices", post(devices::enroll).get(devices::list))
        .route("/api/v1/devices/refresh", post(devices::refresh))
        .route("/api/v1/devices/{device_id}", delete(devices::revoke))
        .route(
            "/api/v1/messages",
            post(messages::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/api/v1/messages/{message_id}", get(messages::info))
        .route("/api/v1/messages/{message_id}/content", get(messages::content))
        .route("/api/v1/messages/{message_id}/retrievals", get(messages::retrievals))
        .route("/api/v1/messages/{message_id}/deliveries", get(messages::deliveries))
        .route("/api/v1/messages/{message_id}/recall", post(messages::recall))
        .route("/api/v1/messages/{message_id}/notifications", post(messages::sender_notified))
        .route("/api/v1/recalls", get(messages::recalls))
        .route(
            "/api/v1/admin/organization",
            get(admin::organization).put(admin::update_organization),
        )
        .route("/api/v1/admin/blocklists", get(admin::blocklists))
        .route("/api/v1/admin/directory", get(directory::list))
        .route("/api/v1/admin/relay-log", get(masked::relay_log))
        .route("/api/v1/masked-mail", post(masked::send))
        .route("/api/v1/masked-addresses/{address}", delete(masked::disable))
        .route(
            "/api/v1/admin/directory/import",
            post(directory::import).layer(DefaultBodyLimit::max(directory::MAX_IMPORT_BYTES)),
        )
        .route("/api/v1/admin/directory/{email}", delete(directory::remove))
        .merge(crate::web::router(state.clone()))
        .fallback(health::not_found)
        .with_state(state)
}
