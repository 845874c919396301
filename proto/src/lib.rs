//! Sealpost wire formats.
//!
//! Two formats live here and nowhere else:
//! - [`notification`]: the signed `X-Sealpost-*` notification email (spec in
//!   `NOTIFICATION.md` beside this crate), built by the server and verified by
//!   the agent;
//! - [`api`]: the JSON types of the HTTPS API shared by the server, the agent
//!   and the tests.
//!
//! This crate knows nothing about HTTP, IMAP, SMTP or databases: it turns
//! values into bytes and bytes into checked values.

pub mod api;
pub mod ids;
pub mod notification;
pub mod verification;

pub use ids::{ContentDigest, KeyId, MessageId};
