//! Building and running the server: [`Application::build`] binds the socket
//! (port 0 works and reports the real port), prepares storage, keys and TLS;
//! [`Application::run_until_stopped`] serves until the handle says stop.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio_util::sync::CancellationToken;
use tower::util::MapRequestLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutBody;
use tower_http::trace::TraceLayer;

use crate::auth::hash_password;
use crate::authentication_results::Verifier;
use crate::blobs::BlobStore;
use crate::blocklist::{self, BlocklistChecker, BlocklistStatus};
use crate::bounces::BounceMatcher;
use crate::clock::Clock;
use crate::connections::{ConnectionLimit, TLS_HANDSHAKE_TIMEOUT};
use crate::dkim::DkimSigner;
use tokio_rustls::TlsAcceptor;

use crate::inbound::{InboundLimits, InboundListener, ServerMail};
use crate::lifecycle::Purger;
use crate::links::LinkKey;
use crate::mailer::MailError;
use crate::metrics::{self, Metrics};
use crate::organization::Organization;
use crate::outbox::Outbox;
use crate::routes;
use crate::settings::Settings;
use crate::signing::{SigningKeyError, SigningKeys};
use crate::state::{AppState, Inner, Limits};
use crate::store::StoreError;
use crate::tls::{TlsError, TlsIdentity, load_or_generate};
use sealpost_proto::notification::normalize_origin;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot listen on {addr}: {source} (is another server using this port? set server.listen)"
    )]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("signing keys: {0}")]
    Keys(#[from] SigningKeyError),
    #[error("mail: {0}")]
    Mail(#[from] MailError),
    #[error("{0}")]
    Other(String),
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    tls: TlsIdentity,
    handle: Handle<SocketAddr>,
    /// Started with the server when `[blocklists]` is enabled.
    blocklist_checker: Option<BlocklistChecker>,
    /// The SMTP listener, when `inbound.listen` is set.
    inbound: Option<InboundListener>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let data_dir = settings.server.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(|source| StartError::DataDir { path: data_dir.clone(), source })?;
        let listener = crate::connections::listen(settings.server.listen)
            .map_err(|source| StartError::Bind { addr: settings.server.listen, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: settings.server.listen, source })?;
        let origin = match &settings.server.public_url {
            Some(url) => normalize_origin(url).ok_or_else(|| {
                StartError::Other(format!("server.public_url {url:?} is not an https origin"))
            })?,
            None if local_addr.port() == 443 => "https://localhost".to_owned(),
            None => format!("https://localhost:{}", local_addr.port()),
        };
        let origin_host =
            origin.trim_start_matches("https://").split(':').next().map(str::to_owned);
        let tls = load_or_generate(&settings.tls, &data_dir, origin_host.as_deref())?;
        let store =
            crate::store::open(&settings.database_url(), settings.database.max_connections).await?;
        let keys = SigningKeys::load_or_generate(&*store, &data_dir).await?;
        let organization = Arc::new(
            Organization::load(settings.clone(), origin.clone(), store.clone())
                .await
                .map_err(|error| StartError::Other(format!("organization settings: {error}")))?,
        );
        let bounces =
            BounceMatcher::load_or_generate(&*store, &data_dir, settings.bounce_address())
                .await
                .map_err(|error| StartError::Other(error.to_string()))?;
        let links = LinkKey::load_or_generate(&*store, &data_dir)
            .await
            .map_err(|error| StartError::Other(format!("notification links: {error}")))?;
        let dkim = DkimSigner::from_settings(&settings.dkim)
            .map_err(|error| StartError::Other(error.to_string()))?
            .map(Arc::new);
        let blocklist_checker = settings
            .blocklists
            .enabled
            .then(|| BlocklistChecker::new(&settings.blocklists))
            .transpose()
            .map_err(|error| StartError::Other(format!("blocklists: {error}")))?;
        let clock = Clock::default();
        let metrics = Metrics::default();
        let outbox = Outbox::new(
            store.clone(),
            organization.clone(),
            bounces,
            clock.clone(),
            metrics.clone(),
            settings.outbox.clone(),
            Duration::from_secs(settings.smtp.timeout_seconds),
        );
        let dummy_password_hash = hash_password("sealpost-dummy-password".into())
            .await
            .map_err(|error| StartError::Other(error.message))?;
        let pages = crate::web::Pages::new()
            .map_err(|error| StartError::Other(format!("page templates: {error}")))?;
        let verifier = match &settings.masking.domain {
            Some(_) => Some(Arc::new(
                Verifier::new(&settings.masking.dns_servers, &inbound_hostname(&settings, &origin))
                    .map_err(|error| StartError::Other(format!("masking.dns_servers: {error}")))?,
            )),
            None => None,
        };
        let state = AppState::new(Inner {
            limits: Limits::new(&settings),
            pages,
            blobs: BlobStore::from_settings(&settings.storage, &data_dir, store.clone())
                .map_err(|error| StartError::Other(error.to_string()))?,
            settings,
            origin,
            store,
            keys,
            links,
            organization,
            outbox,
            blocklists: BlocklistStatus::default(),
            dkim,
            verifier,
            metrics,
            clock,
            dummy_password_hash,
        });
        let inbound = match state.settings.inbound.listen {
            Some(address) => Some(bind_inbound(address, &state, &tls).await?),
            None => None,
        };
        Ok(Self {
            listener,
            local_addr,
            state,
            tls,
            handle: Handle::new(),
            blocklist_checker,
            inbound,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the SMTP listener listens, when it is on.
    pub fn inbound_addr(&self) -> Option<SocketAddr> {
        self.inbound.as_ref().and_then(|inbound| inbound.local_addr().ok())
    }

    pub fn origin(&self) -> &str {
        &self.state.origin
    }

    pub fn tls(&self) -> &TlsIdentity {
        &self.tls
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The clock the server reads, for tests that move time forward.
    pub fn clock(&self) -> Clock {
        self.state.clock.clone()
    }

    pub fn mail_description(&self) -> String {
        self.state.organization.current().mailer.describe()
    }

    /// The DKIM TXT record to publish, `(name, value)`, when DKIM is configured.
    pub fn dkim_record(&self) -> Option<(String, String)> {
        self.state.dkim.as_ref().map(|signer| signer.dns_record())
    }

    pub fn active_key_id(&self) -> String {
        self.state.keys.active().key_id().to_string()
    }

    /// Stops the server: `handle.graceful_shutdown(Some(timeout))`.
    pub fn handle(&self) -> Handle<SocketAddr> {
        self.handle.clone()
    }

    /// The notification outbox, for tests that step it by hand (with
    /// `outbox.worker = false`).
    pub fn outbox(&self) -> Outbox {
        self.state.outbox.clone()
    }

    /// Deletes expired and recalled content; the server runs it every
    /// minute, tests step it.
    pub fn purger(&self) -> Purger {
        Purger::new(self.state.clone())
    }

    /// Serves until the handle shuts the server down; the outbox worker (when
    /// enabled) and the purger run alongside and stop with it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let stop_worker = CancellationToken::new();
        let worker = self
            .state
            .settings
            .outbox
            .worker
            .then(|| tokio::spawn(self.state.outbox.clone().run(stop_worker.clone())));
        let purger = tokio::spawn(self.purger().run(stop_worker.clone()));
        let organization = tokio::spawn(
            self.state.organization.clone().keep_current(ORGANIZATION_REFRESH, stop_worker.clone()),
        );
        let inbound = self.inbound.map(|inbound| tokio::spawn(inbound.run(stop_worker.clone())));
        let monitor = self.blocklist_checker.map(|checker| {
            let interval = Duration::from_secs(self.state.settings.blocklists.interval_seconds);
            tokio::spawn(blocklist::run_monitor(
                checker,
                self.state.blocklists.clone(),
                self.state.metrics.clone(),
                interval,
                self.state.clock.clone(),
                stop_worker.clone(),
            ))
        });
        let app = with_middleware(routes::router(self.state.clone()), self.state.clone());
        // Without TCP_NODELAY a response written in two parts (the head, then
        // a body streamed from disk) waits for the client's delayed ACK of
        // the first: some 40 ms on every such response.
        let acceptor = RustlsAcceptor::new(RustlsConfig::from_config(self.tls.config))
            .handshake_timeout(TLS_HANDSHAKE_TIMEOUT)
            .acceptor(NoDelayAcceptor::new());
        let server_settings = &self.state.settings.server;
        let acceptor = ConnectionLimit::new(acceptor, server_settings.max_connections);
        let header_timeout = Duration::from_secs(server_settings.request_header_timeout_seconds);
        let mut server = axum_server::from_tcp(self.listener)?
            .acceptor(acceptor)
            .handle(self.handle)
            // Also bounds the wait for the first bytes after the handshake,
            // before hyper knows whether the client speaks HTTP/1 or HTTP/2.
            .first_request_timeout(header_timeout);
        // Also closes a connection idle that long between requests.
        server.http_builder().http1().header_read_timeout(header_timeout);
        let served = server.serve(app.into_make_service_with_connect_info::<SocketAddr>()).await;
        stop_worker.cancel();
        let _ = purger.await;
        let _ = organization.await;
        if let Some(inbound) = inbound {
            let _ = inbound.await;
        }
        if let Some(monitor) = monitor {
            let _ = monitor.await;
        }
        if let Some(worker) = worker {
            // An attempt in progress finishes or is abandoned; its lease makes it due again.
            let _ = worker.await;
        }
        served
    }
}

/// How soon an admin's change through one instance reaches the others.
const ORGANIZATION_REFRESH: Duration = Duration::from_secs(5);

/// The name the SMTP listener greets with: configured, or the public URL's host.
fn inbound_hostname(settings: &Settings, origin: &str) -> String {
    settings.inbound.hostname.clone().unwrap_or_else(|| {
        let host = origin.trim_start_matches("https://");
        host.rsplit_once(':').map_or(host, |(host, _)| host).to_owned()
    })
}

/// The SMTP listener for mail coming back, with STARTTLS on the server's certificate.
async fn bind_inbound(
    address: SocketAddr,
    state: &AppState,
    tls: &TlsIdentity,
) -> Result<InboundListener, StartError> {
    let hostname = inbound_hostname(&state.settings, &state.origin);
    let settings = &state.settings.inbound;
    let mut config = (*tls.config).clone();
    config.alpn_protocols.clear();
    let limits = InboundLimits {
        hostname,
        max_size: settings.max_size,
        max_recipients: settings.max_recipients,
        max_connections: settings.max_connections,
        command_timeout: Duration::from_secs(settings.timeout_seconds),
    };
    let handler = Arc::new(ServerMail(state.clone()));
    InboundListener::bind(address, Some(TlsAcceptor::from(Arc::new(config))), limits, handler)
        .await
        .map_err(|source| StartError::Bind { addr: address, source })
}

fn with_middleware(router: Router, state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let body_timeout = Duration::from_secs(state.settings.server.request_body_timeout_seconds);
    router
        .layer(MapRequestLayer::new(move |request: Request| {
            request.map(|body| Body::new(TimeoutBody::new(body_timeout, body)))
        }))
        .layer(axum::middleware::from_fn_with_state(state, metrics::track))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, RandomRequestId))
}

/// A random UUID for each request, from the thread's generator: the
/// operating system's, which tower-http's own maker asks, costs a system
/// call a request.
#[derive(Debug, Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let value =
            HeaderValue::from_str(id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
        value.ok().map(RequestId::new)
    }
}

/// How long in-flight requests may finish after a stop signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
