//! The app's state between commands: where the agent's files are, who
//! watches the mailbox (started, paused, restarted when the folders change,
//! stopped to sign out), the search index once opened, and the app's own
//! preferences.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use sealpost_agent::config::{ConfigError, write_atomically};
use sealpost_agent::send::Sender;
use sealpost_agent::signout::{SignOutError, SignOutScope, SignedOut, sign_out};
use sealpost_agent::{
    Agent, AgentConfig, AgentError, AgentPaths, ImapAccount, SearchIndex, Secrets, ServerClient,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ipc::{Prefill, Watcher};

/// The app's own preferences, `app.toml` beside the agent's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Preferences {
    /// A desktop notification for each secure message swapped in.
    pub notifications: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self { notifications: true }
    }
}

#[derive(Clone)]
pub struct Shell {
    inner: Arc<Inner>,
}

struct Inner {
    paths: AgentPaths,
    watcher: Mutex<Watcher>,
    /// The agent watching in this process, if any.
    running: tokio::sync::Mutex<Option<Running>>,
    /// Set when the person pauses from the tray; survives restarts of the
    /// watcher but not of the app.
    paused: Mutex<bool>,
    /// The app is closing: nothing starts any more.
    quitting: CancellationToken,
    index: tokio::sync::Mutex<Option<Arc<SearchIndex>>>,
    preferences: Mutex<Preferences>,
    /// From the newest `sealpost://register` link, until registered.
    prefill: Mutex<Option<Prefill>>,
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// The running agent's sender and server client: sending and the
    /// delivery slip go through them, so one token pair serves the app.
    sender: Arc<Sender>,
    server: ServerClient,
}

impl Shell {
    pub fn new(paths: AgentPaths) -> Self {
        let preferences = load_preferences(&paths);
        Self {
            inner: Arc::new(Inner {
                paths,
                watcher: Mutex::new(Watcher::Stopped { reason: "not registered yet".into() }),
                running: tokio::sync::Mutex::new(None),
                paused: Mutex::new(false),
                quitting: CancellationToken::new(),
                index: tokio::sync::Mutex::new(None),
                preferences: Mutex::new(preferences),
                prefill: Mutex::new(None),
            }),
        }
    }

    pub fn paths(&self) -> &AgentPaths {
        &self.inner.paths
    }

    pub fn registered(&self) -> bool {
        self.inner.paths.config_file().exists()
    }

    pub fn watcher(&self) -> Watcher {
        self.inner.watcher.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_watcher(&self, watcher: Watcher) {
        *self.inner.watcher.lock().unwrap_or_else(PoisonError::into_inner) = watcher;
    }

    pub fn paused(&self) -> bool {
        *self.inner.paused.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts watching the mailbox in the background unless already
    /// watching, paused, closing, not registered, or another agent watches;
    /// the reason shows on the Status screen.
    pub async fn start_watching(&self) {
        if !self.registered() || self.inner.quitting.is_cancelled() || self.paused() {
            return;
        }
        let mut running = self.inner.running.lock().await;
        if running.as_ref().is_some_and(|running| !running.task.is_finished()) {
            return;
        }
        let agent = match self.open_agent().await {
            Ok(agent) => agent,
            Err(AgentError::AlreadyRunning(_)) => {
                self.set_watcher(Watcher::OtherAgent);
                return;
            }
            Err(error) => {
                tracing::error!(%error, "cannot watch the mailbox");
                self.set_watcher(Watcher::Stopped { reason: error.to_string() });
                return;
            }
        };
        self.set_watcher(Watcher::ThisApp);
        tracing::info!(email = %agent.config.email, folders = ?agent.config.folders, "watching the mailbox");
        let (sender, server) = (agent.sender().clone(), agent.server().clone());
        let stop = self.inner.quitting.child_token();
        let shell = self.clone();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let outcome = agent.run(until).await;
            // The agent (and with it the mailbox lock) is gone before anyone
            // waiting in `stop_watching` goes on.
            drop(agent);
            if let Err(error) = outcome {
                tracing::error!(%error, "stopped watching the mailbox");
                shell.set_watcher(Watcher::Stopped { reason: error.to_string() });
            }
        });
        *running = Some(Running { stop, task, sender, server });
    }

    /// The sender and server client of the agent this app runs, if it runs one.
    pub async fn running_agent(&self) -> Option<(Arc<Sender>, ServerClient)> {
        let running = self.inner.running.lock().await;
        running
            .as_ref()
            .filter(|running| !running.task.is_finished())
            .map(|running| (running.sender.clone(), running.server.clone()))
    }

    /// Stops this app's watcher and waits until it has let go of the mailbox.
    async fn stop_watching(&self, watcher: Watcher) {
        let running = self.inner.running.lock().await.take();
        if let Some(running) = running {
            running.stop.cancel();
            if let Err(error) = running.task.await {
                tracing::error!(%error, "the watcher ended abnormally");
            }
        }
        self.set_watcher(watcher);
    }

    /// Pauses or resumes watching (the tray's menu).
    pub async fn set_paused(&self, paused: bool) {
        *self.inner.paused.lock().unwrap_or_else(PoisonError::into_inner) = paused;
        if paused {
            self.stop_watching(Watcher::Paused).await;
        } else {
            self.set_watcher(Watcher::Stopped { reason: "starting".into() });
            self.start_watching().await;
        }
    }

    /// Watches again with the registration as it is now on disk.
    pub async fn restart_watching(&self) {
        self.stop_watching(Watcher::Stopped { reason: "restarting".into() }).await;
        self.start_watching().await;
    }

    async fn open_agent(&self) -> Result<Agent, AgentError> {
        let config = AgentConfig::load(self.paths())?;
        let secrets = Secrets::os_keyring(&config.email).await?;
        Agent::open(self.paths(), config, secrets).await
    }

    /// The registered mailbox, with its password from the keyring.
    pub async fn mailbox_account(&self) -> Result<ImapAccount, AgentError> {
        let config = AgentConfig::load(self.paths())?;
        let secrets = Secrets::os_keyring(&config.email).await?;
        let password = secrets.mailbox_password().await?;
        Ok(config.imap_account(password)?)
    }

    /// The local search index, opened on first use; only while registered,
    /// so that nothing creates one during or after a sign-out.
    pub async fn index(&self) -> Result<Arc<SearchIndex>, AgentError> {
        // Asked each time: a policy forbidding local copies takes effect at
        // once, even for an index opened before it arrived.
        sealpost_agent::ensure_local_copies_allowed()?;
        let mut index = self.inner.index.lock().await;
        if let Some(index) = index.as_ref() {
            return Ok(index.clone());
        }
        if !self.registered() {
            return Err(ConfigError::NotRegistered(self.paths().config_file()).into());
        }
        let opened = Arc::new(SearchIndex::open(&self.inner.paths.index_db()).await?);
        *index = Some(opened.clone());
        Ok(opened)
    }

    /// Signs this computer out: the watcher stopped, the index closed, then
    /// the device revoked and everything kept here deleted.
    pub async fn sign_out(&self, scope: SignOutScope) -> Result<SignedOut, SignOutError> {
        self.stop_watching(Watcher::Stopped { reason: "signing out".into() }).await;
        // Held until the registration is gone: `index` waits, then finds
        // the computer unregistered instead of creating a new index.
        let mut index = self.inner.index.lock().await;
        if let Some(open) = index.take() {
            // Others may still hold it for a moment; they finish on the
            // deleted file, which is harmless.
            if let Ok(open) = Arc::try_unwrap(open) {
                open.close().await;
            }
        }
        let outcome = sign_out(self.paths(), scope).await;
        drop(index);
        match &outcome {
            Ok(_) => self.set_watcher(Watcher::Stopped { reason: "not registered".into() }),
            // Still registered: watch again rather than leave it stopped.
            Err(_) => self.start_watching().await,
        }
        outcome
    }

    pub fn preferences(&self) -> Preferences {
        self.inner.preferences.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn set_preferences(&self, preferences: Preferences) -> std::io::Result<()> {
        self.paths().create().map_err(std::io::Error::other)?;
        let text = toml::to_string(&preferences).map_err(std::io::Error::other)?;
        write_atomically(&preferences_file(self.paths()), text.as_bytes())?;
        *self.inner.preferences.lock().unwrap_or_else(PoisonError::into_inner) = preferences;
        Ok(())
    }

    pub fn prefill(&self) -> Option<Prefill> {
        self.inner.prefill.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn set_prefill(&self, prefill: Prefill) {
        *self.inner.prefill.lock().unwrap_or_else(PoisonError::into_inner) = Some(prefill);
    }

    /// Stops watching for good: the app is closing.
    pub fn quit(&self) {
        self.inner.quitting.cancel();
    }
}

fn preferences_file(paths: &AgentPaths) -> PathBuf {
    paths.dir.join("app.toml")
}

/// The saved preferences; the defaults when there are none or they are
/// unreadable (a preference is never worth refusing to start over).
fn load_preferences(paths: &AgentPaths) -> Preferences {
    let path = preferences_file(paths);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), %error, "unreadable preferences; using the defaults");
            Preferences::default()
        }),
        Err(_) => Preferences::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_are_kept_and_a_damaged_file_means_the_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let shell = Shell::new(AgentPaths::new(dir.path()));
        assert!(shell.preferences().notifications, "on by default");
        shell.set_preferences(Preferences { notifications: false }).expect("save");
        let again = Shell::new(AgentPaths::new(dir.path()));
        assert!(!again.preferences().notifications);
        std::fs::write(dir.path().join("app.toml"), "notifications = 'maybe'").expect("write");
        assert!(Shell::new(AgentPaths::new(dir.path())).preferences().notifications);
    }
}
