//! The Sealpost server: accounts proven by email, silent device
//! authentication with opaque tokens, secure message storage, signed
//! notifications, and authorized retrieval over HTTPS.
//!
//! `main.rs` only wires: settings → [`app::Application::build`] → run.

pub mod app;
pub mod auth;
pub mod authentication_results;
pub mod blobs;
pub mod blocklist;
pub mod bounces;
pub mod clock;
pub mod connections;
pub mod dkim;
pub mod error;
pub mod files;
pub mod header_fields;
pub mod ids;
pub mod inbound;
pub mod lifecycle;
pub mod links;
pub mod mailer;
pub mod masking;
pub mod metrics;
pub mod notify;
pub mod organization;
pub mod outbox;
pub mod password;
pub mod rate_limit;
mod read_cache;
pub mod routes;
pub mod routing;
pub mod secrets;
pub mod settings;
pub mod signing;
pub mod state;
pub mod store;
pub mod tls;
pub mod web;

pub use app::{Application, StartError};
pub use settings::Settings;

/// Installs the one rustls crypto provider (ring) for the whole process.
/// Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
