//! The agent's secrets (the mailbox password and the device tokens) in the
//! operating system's keyring, through `keyring-core` and the store of each
//! OS: Secret Service on Linux, the Keychain on macOS, the Credential
//! Manager on Windows. Nothing secret is written to the data directory.
//!
//! The keyring calls block (D-Bus round trips, OS prompts), so each runs on
//! tokio's blocking pool.

use std::sync::Arc;

use keyring_core::{CredentialStore, Error as KeyringError};
use sealpost_proto::api::DeviceTokens;
use serde::{Deserialize, Serialize};

/// The keyring service name every entry is filed under.
pub const KEYRING_SERVICE: &str = "sealpost";

/// Which store holds this agent's secrets (recorded in `agent.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretStoreKind {
    /// The operating system's keyring.
    Keyring,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "no usable OS keyring to keep the mailbox password and device token ({detail}). {advice}"
    )]
    Unavailable { detail: String, advice: &'static str },
    #[error(
        "the OS keyring has no {what} for {email}: register this computer again (in the Sealpost app: Settings, Sign out, then set it up; headless: `sealpost-agent register`)"
    )]
    Missing { what: &'static str, email: String },
    #[error("the OS keyring refused to {action} the {what}: {detail}")]
    Keyring { action: &'static str, what: &'static str, detail: String },
    #[error(
        "the device tokens in the OS keyring are damaged ({0}); register this computer again (in the Sealpost app: Settings, Sign out, then set it up; headless: `sealpost-agent register`)"
    )]
    Damaged(String),
}

#[cfg(target_os = "linux")]
const ADVICE: &str = "Install and start a Secret Service provider and unlock it: GNOME Keyring \
(`apt install gnome-keyring`, started with the desktop session) or KeePassXC with Secret Service \
integration enabled. Without a desktop session, run the agent under `dbus-run-session` with \
`gnome-keyring-daemon --unlock` started first.";
#[cfg(target_os = "macos")]
const ADVICE: &str =
    "Unlock the login keychain (Keychain Access) and allow sealpost-agent to use it.";
#[cfg(windows)]
const ADVICE: &str =
    "Sign in to Windows with a user profile that has the Credential Manager available.";
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
const ADVICE: &str = "This operating system has no keyring store supported by Sealpost.";

/// What the agent keeps in the keyring.
#[derive(Debug, Clone, Copy)]
enum Secret {
    MailboxPassword,
    DeviceTokens,
}

impl Secret {
    fn what(self) -> &'static str {
        match self {
            Self::MailboxPassword => "mailbox password",
            Self::DeviceTokens => "device tokens",
        }
    }
}

/// One agent's secrets, keyed by its email address.
#[derive(Clone)]
pub struct Secrets {
    store: Arc<CredentialStore>,
    email: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("email", &self.email).finish_non_exhaustive()
    }
}

impl Secrets {
    /// The OS keyring, checked to answer before anything is relied on it.
    pub async fn os_keyring(email: &str) -> Result<Self, SecretError> {
        let email = email.to_owned();
        tokio::task::spawn_blocking(move || {
            let store = os_store().map_err(unavailable)?;
            let secrets = Self { store, email };
            // A missing entry is a working keyring; anything else is not.
            match secrets.entry(Secret::DeviceTokens)?.get_password() {
                Ok(_) | Err(KeyringError::NoEntry) => Ok(secrets),
                Err(error) => Err(unavailable(error)),
            }
        })
        .await
        .map_err(|error| SecretError::Keyring {
            action: "open",
            what: "keyring",
            detail: error.to_string(),
        })?
    }

    /// Proves the keyring takes new secrets (unlocked, writable) by storing
    /// and removing a probe, so registration fails before it asks anything
    /// of the server rather than after the device is enrolled.
    pub async fn check_writable(&self) -> Result<(), SecretError> {
        let this = self.clone();
        run_blocking(move || {
            let probe = this
                .store
                .build(KEYRING_SERVICE, &format!("{} keyring check", this.email), None)
                .map_err(unavailable)?;
            probe.set_password("ok").map_err(unavailable)?;
            match probe.delete_credential() {
                Ok(()) | Err(KeyringError::NoEntry) => Ok(()),
                Err(error) => Err(unavailable(error)),
            }
        })
        .await
    }

    /// Secrets in `store`: the mock store in unit tests.
    pub fn with_store(store: Arc<CredentialStore>, email: &str) -> Self {
        Self { store, email: email.to_owned() }
    }

    pub async fn mailbox_password(&self) -> Result<String, SecretError> {
        self.get(Secret::MailboxPassword).await
    }

    pub async fn set_mailbox_password(&self, password: &str) -> Result<(), SecretError> {
        self.set(Secret::MailboxPassword, password.to_owned()).await
    }

    pub async fn device_tokens(&self) -> Result<DeviceTokens, SecretError> {
        let text = self.get(Secret::DeviceTokens).await?;
        serde_json::from_str(&text).map_err(|error| SecretError::Damaged(error.to_string()))
    }

    pub async fn set_device_tokens(&self, tokens: &DeviceTokens) -> Result<(), SecretError> {
        let this = self.clone();
        let tokens = tokens.clone();
        run_blocking(move || this.set_device_tokens_blocking(&tokens)).await
    }

    /// The stored tokens, from a synchronous callback (the server client's).
    pub fn device_tokens_blocking(&self) -> Result<DeviceTokens, SecretError> {
        let entry = self.entry(Secret::DeviceTokens)?;
        let text =
            entry.get_password().map_err(|error| refused("read", Secret::DeviceTokens, error))?;
        serde_json::from_str(&text).map_err(|error| SecretError::Damaged(error.to_string()))
    }

    /// Stores rotated tokens from a synchronous callback (the server client's).
    pub fn set_device_tokens_blocking(&self, tokens: &DeviceTokens) -> Result<(), SecretError> {
        let text = serde_json::to_string(tokens)
            .map_err(|error| SecretError::Damaged(error.to_string()))?;
        set_entry(&self.entry(Secret::DeviceTokens)?, Secret::DeviceTokens, &text)
    }

    /// Removes both secrets (sign-out); missing ones are fine.
    pub async fn clear(&self) -> Result<(), SecretError> {
        let this = self.clone();
        run_blocking(move || {
            for secret in [Secret::MailboxPassword, Secret::DeviceTokens] {
                match this.entry(secret)?.delete_credential() {
                    Ok(()) | Err(KeyringError::NoEntry) => {}
                    Err(error) => return Err(refused("delete", secret, error)),
                }
            }
            Ok(())
        })
        .await
    }

    fn entry(&self, secret: Secret) -> Result<keyring_core::Entry, SecretError> {
        let user = format!("{} {}", self.email, secret.what());
        self.store
            .build(KEYRING_SERVICE, &user, None)
            .map_err(|error| refused("open", secret, error))
    }

    async fn get(&self, secret: Secret) -> Result<String, SecretError> {
        let this = self.clone();
        run_blocking(move || match this.entry(secret)?.get_password() {
            Ok(value) => Ok(value),
            Err(KeyringError::NoEntry) => {
                Err(SecretError::Missing { what: secret.what(), email: this.email.clone() })
            }
            Err(error) => Err(refused("read", secret, error)),
        })
        .await
    }

    async fn set(&self, secret: Secret, value: String) -> Result<(), SecretError> {
        let this = self.clone();
        run_blocking(move || set_entry(&this.entry(secret)?, secret, &value)).await
    }
}

fn set_entry(entry: &keyring_core::Entry, secret: Secret, value: &str) -> Result<(), SecretError> {
    entry.set_password(value).map_err(|error| refused("store", secret, error))
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SecretError> + Send + 'static,
) -> Result<T, SecretError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| SecretError::Keyring {
        action: "use",
        what: "keyring",
        detail: error.to_string(),
    })?
}

fn refused(action: &'static str, secret: Secret, error: KeyringError) -> SecretError {
    match error {
        KeyringError::NoStorageAccess(_) | KeyringError::NoDefaultStore => unavailable(error),
        other => SecretError::Keyring { action, what: secret.what(), detail: other.to_string() },
    }
}

fn unavailable(error: KeyringError) -> SecretError {
    SecretError::Unavailable { detail: error.to_string(), advice: ADVICE }
}

#[cfg(target_os = "linux")]
fn os_store() -> Result<Arc<CredentialStore>, KeyringError> {
    Ok(zbus_secret_service_keyring_store::Store::new()?)
}

#[cfg(target_os = "macos")]
fn os_store() -> Result<Arc<CredentialStore>, KeyringError> {
    Ok(apple_native_keyring_store::keychain::Store::new()?)
}

#[cfg(windows)]
fn os_store() -> Result<Arc<CredentialStore>, KeyringError> {
    Ok(windows_native_keyring_store::Store::new()?)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn os_store() -> Result<Arc<CredentialStore>, KeyringError> {
    Err(KeyringError::NotSupportedByStore("no OS keyring store for this system".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(refresh: &str) -> DeviceTokens {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        DeviceTokens {
            device_id: "dev_1".into(),
            access_token: "access".into(),
            access_expires_at: now,
            refresh_token: refresh.into(),
            refresh_expires_at: now,
        }
    }

    #[tokio::test]
    async fn secrets_round_trip_per_address_and_clear() {
        let store: Arc<CredentialStore> = keyring_core::mock::Store::new().expect("mock store");
        let alice = Secrets::with_store(store.clone(), "alice@example.org");
        alice.check_writable().await.expect("the mock store takes secrets");
        let bob = Secrets::with_store(store, "bob@example.org");

        let missing = alice.mailbox_password().await.expect_err("nothing stored yet");
        assert!(missing.to_string().contains("sealpost-agent register"), "{missing}");

        alice.set_mailbox_password("hunter2").await.expect("store");
        alice.set_device_tokens(&tokens("r1")).await.expect("store");
        alice.set_device_tokens_blocking(&tokens("r2")).expect("rotate");
        assert_eq!(alice.mailbox_password().await.expect("read"), "hunter2");
        assert_eq!(alice.device_tokens().await.expect("read").refresh_token, "r2");
        assert!(bob.mailbox_password().await.is_err(), "entries are per address");

        alice.clear().await.expect("clear");
        alice.clear().await.expect("clearing twice is fine");
        assert!(alice.device_tokens().await.is_err());
    }
}
