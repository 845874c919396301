//! The end-to-end tests, one module per area, in a single test binary.
//! Every test starts its own real components with fresh state, so the
//! modules share nothing but the harness.

mod abuse;
mod accounts;
mod admin;
mod agent;
mod agent_cli;
mod agent_discovery;
mod agent_faults;
mod authorization;
mod bad_requests;
mod browser;
mod delivery;
mod desktop_app;
mod directory;
mod discovery;
mod hostile_input;
mod inbound;
mod installers;
mod lifecycle;
mod load;
mod mailstack;
mod masking;
mod notifications;
mod object_storage;
mod postgres;
mod round_trip;
mod routing;
mod scale_out;
mod sending;
mod server_binary;
mod server_faults;
mod store;
mod webmail;
mod webmail_browser;
