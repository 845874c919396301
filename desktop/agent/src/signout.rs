//! Signing this computer out: the device revoked on the server, its
//! secrets removed from the keyring, and everything the agent kept here
//! deleted (the registration, its state and the search index, which holds
//! the messages' text). The messages themselves stay in the mailbox.

use std::path::PathBuf;

use crate::agent::{AgentError, take_lock};
use crate::config::{AgentConfig, AgentPaths};
use crate::secrets::{SecretError, Secrets};
use crate::server::{ServerClient, ServerError};

#[derive(Debug, thiserror::Error)]
pub enum SignOutError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(
        "the Sealpost server could not revoke this computer ({0}); try again when it can be reached, or sign out on this computer only"
    )]
    Server(#[source] ServerError),
    #[error(transparent)]
    Secrets(#[from] SecretError),
    #[error("cannot delete {path}: {source}")]
    Delete {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether the server is told, or only this computer forgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignOutScope {
    /// Revoke the device on the server first; fail if it cannot be reached.
    Everywhere,
    /// Forget everything here even though the server could not be told; the
    /// device stays listed there until the account's owner revokes it.
    ThisComputerOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOut {
    pub email: String,
    /// False when the server was not told ([`SignOutScope::ThisComputerOnly`]
    /// or no tokens were left to tell it with).
    pub revoked_on_server: bool,
}

/// Signs out the registration in `paths`. No agent may be watching: the
/// caller stops its own first, and the lock refuses while another runs.
pub async fn sign_out(paths: &AgentPaths, scope: SignOutScope) -> Result<SignedOut, SignOutError> {
    let _lock = take_lock(paths)?;
    let config = AgentConfig::load(paths).map_err(AgentError::from)?;
    let secrets = Secrets::os_keyring(&config.email).await?;
    sign_out_with(paths, &config, &secrets, scope).await
}

/// As [`sign_out`], with the registration and secrets already loaded.
pub async fn sign_out_with(
    paths: &AgentPaths,
    config: &AgentConfig,
    secrets: &Secrets,
    scope: SignOutScope,
) -> Result<SignedOut, SignOutError> {
    let mut revoked_on_server = false;
    if scope == SignOutScope::Everywhere {
        match secrets.device_tokens().await {
            Ok(tokens) => {
                let ca_pem = config.ca_pem().map_err(AgentError::from)?;
                let client = ServerClient::new(&config.server.url, ca_pem.as_deref(), tokens)
                    .map_err(SignOutError::Server)?;
                match client.revoke_this_device().await {
                    Ok(()) => revoked_on_server = true,
                    // Revoked or unknown already: nothing left to revoke.
                    Err(ServerError::Refused { status: 401 | 404, .. }) => {
                        revoked_on_server = true;
                    }
                    Err(error) => return Err(SignOutError::Server(error)),
                }
            }
            // Without tokens the server cannot be told; the keyring is
            // cleared anyway.
            Err(SecretError::Missing { .. } | SecretError::Damaged(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    secrets.clear().await?;
    // The registration last: until it is gone the computer still counts as
    // registered, so an interrupted sign-out can be finished by signing out again.
    let mut files = Vec::new();
    for database in [paths.index_db(), paths.state_db()] {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = database.clone().into_os_string();
            name.push(suffix);
            files.push(PathBuf::from(name));
        }
    }
    files.extend([paths.secrets_file(), paths.config_file()]);
    for path in files {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(SignOutError::Delete { path, source }),
        }
    }
    tracing::info!(email = %config.email, revoked_on_server, "signed out");
    Ok(SignedOut { email: config.email.clone(), revoked_on_server })
}
