//! The Sealpost desktop agent, as a library with no GUI dependency.
//!
//! It watches the user's IMAP folders, recognises genuine notifications
//! (verified with `sealpost-proto` against the server's pinned keys), fetches
//! the real message over HTTPS and swaps it into the folder in place of the
//! placeholder. The swap protocol is crash-safe and safe with several agents
//! on one mailbox; see [`swap`] and ARCHITECTURE.md.
//!
//! The headless `sealpost-agent` binary and the Tauri app wrap this library.

pub mod agent;
pub mod config;
pub mod crash_point;
pub mod discover;
pub mod imap;
pub mod index;
pub mod journal;
pub mod outbox;
pub mod policy;
pub mod reader;
pub mod register;
pub mod secrets;
pub mod send;
pub mod server;
pub mod signout;
pub mod smtp;
pub mod state;
pub mod swap;
pub mod tls;
pub mod watch;

pub use agent::{Agent, AgentError, Status, ensure_local_copies_allowed, open_search_index};
pub use config::{AgentConfig, AgentPaths};
pub use imap::{ImapAccount, ImapError, MailboxSession};
pub use index::{SearchHit, SearchIndex};
pub use secrets::Secrets;
pub use server::{ServerApi, ServerClient, ServerError};
pub use state::AgentState;
pub use swap::{FolderReport, KeptPlaceholder, SwapError, SwapStep, Swapper};
pub use watch::Watcher;
