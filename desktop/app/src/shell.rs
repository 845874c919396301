//! The app's state between commands: where the agent's files are, who
//! watches the mailbox, and the search index once opened.

use std::sync::{Arc, Mutex, PoisonError};

use sealpost_agent::{
    Agent, AgentConfig, AgentError, AgentPaths, ImapAccount, SearchIndex, Secrets,
};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::ipc::Watcher;

#[derive(Clone)]
pub struct Shell {
    inner: Arc<Inner>,
}

struct Inner {
    paths: AgentPaths,
    watcher: Mutex<Watcher>,
    stop: CancellationToken,
    index: OnceCell<Arc<SearchIndex>>,
}

impl Shell {
    pub fn new(paths: AgentPaths) -> Self {
        Self {
            inner: Arc::new(Inner {
                paths,
                watcher: Mutex::new(Watcher::Stopped { reason: "not registered yet".into() }),
                stop: CancellationToken::new(),
                index: OnceCell::new(),
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

    /// Watches the mailbox until [`stop`](Self::stop), unless another agent
    /// already does; any reason it cannot is shown on the Status screen.
    pub async fn start_watching(&self) {
        if !self.registered() || self.inner.stop.is_cancelled() {
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
        let outcome = agent.run(self.inner.stop.clone()).await;
        let reason = match outcome {
            Ok(()) => "the app is closing".to_owned(),
            Err(error) => {
                tracing::error!(%error, "stopped watching the mailbox");
                error.to_string()
            }
        };
        self.set_watcher(Watcher::Stopped { reason });
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

    /// The local search index, opened on first use.
    pub async fn index(&self) -> Result<Arc<SearchIndex>, sealpost_agent::index::IndexError> {
        let index = self
            .inner
            .index
            .get_or_try_init(|| async {
                SearchIndex::open(&self.inner.paths.index_db()).await.map(Arc::new)
            })
            .await?;
        Ok(index.clone())
    }

    /// Stops watching: the watchers finish the step they are in.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }
}
