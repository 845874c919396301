//! The agent's HTTPS client for its Sealpost server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealpost_proto::api::{
    CodeRequest, DeliveryReport, DeviceTokens, EnrollDevice, ErrorBody, ErrorCode, MessageInfo,
    Recalls, RefreshTokens, SenderNotified, StoredMessage, UploadMetadata, WellKnown,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::tls::{TlsError, client_config};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot reach the Sealpost server: {}", unreachable_reason(.0))]
    Unreachable(reqwest::Error),
    /// The server answered with an error; `code` says what to do.
    #[error("the Sealpost server answered {status}: {message}")]
    Refused { status: u16, code: Option<ErrorCode>, message: String },
}

/// The request error with the certificate's problem spelled out, when that
/// is why: reqwest's own text names only the URL.
fn unreachable_reason(error: &reqwest::Error) -> String {
    match crate::tls::certificate_problem(error) {
        Some(problem) => match error.url().and_then(|url| Some((url.host_str()?, url.port()))) {
            Some((host, Some(port))) => format!("{host}:{port} {problem}"),
            Some((host, None)) => format!("{host} {problem}"),
            None => format!("it {problem}"),
        },
        None => error.to_string(),
    }
}

impl ServerError {
    /// Whether trying later may help (outage, overload), as opposed to an
    /// answer that will not change (revoked, expired, not visible).
    pub fn is_temporary(&self) -> bool {
        match self {
            Self::Tls(_) => false,
            Self::Unreachable(_) => true,
            Self::Refused { status, .. } => *status >= 500 || *status == 429,
        }
    }
}

type TokensRotated = Arc<dyn Fn(&DeviceTokens) + Send + Sync>;
type TokensStored = Arc<dyn Fn() -> Option<DeviceTokens> + Send + Sync>;

/// The server's API before the device has tokens: discovery and enrollment.
#[derive(Clone)]
pub struct ServerApi {
    http: reqwest::Client,
    base_url: String,
}

impl ServerApi {
    /// `base_url` is where the API is reached; `ca_pem` a CA or certificate
    /// to trust instead of the system roots (a self-signed test server).
    pub fn new(base_url: &str, ca_pem: Option<&[u8]>) -> Result<Self, ServerError> {
        let mut tls = client_config(ca_pem)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(ServerError::Unreachable)?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_owned() })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET /.well-known/sealpost`: the origin and signing keys to pin.
    pub async fn well_known(&self) -> Result<WellKnown, ServerError> {
        let response = self.http.get(format!("{}/.well-known/sealpost", self.base_url)).send();
        read_json(response.await, 200).await
    }

    /// Asks the server to email a verification code to `email`.
    pub async fn request_code(&self, email: &str) -> Result<(), ServerError> {
        self.post("/api/v1/verification-codes", &CodeRequest { email: email.to_owned() }, 202)
            .await
            .map(|_: serde_json::Value| ())
    }

    /// Enrolls this device and returns its tokens.
    pub async fn enroll(&self, request: &EnrollDevice) -> Result<DeviceTokens, ServerError> {
        self.post("/api/v1/devices", request, 201).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        expected: u16,
    ) -> Result<T, ServerError> {
        let response = self.http.post(format!("{}{path}", self.base_url)).json(body).send().await;
        read_json(response, expected).await
    }
}

/// The body of an answer with one of the `expected` statuses, or the server's error.
async fn read_any_body(
    response: impl Future<Output = reqwest::Result<reqwest::Response>>,
    expected: &[u16],
) -> Result<(u16, bytes::Bytes), ServerError> {
    let response = response.await.map_err(ServerError::Unreachable)?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(ServerError::Unreachable)?;
    if !expected.contains(&status) {
        return Err(refused(status, &body));
    }
    Ok((status, body))
}

/// The body of an `expected` answer as `T`, or the server's error.
async fn read_json<T: DeserializeOwned>(
    response: reqwest::Result<reqwest::Response>,
    expected: u16,
) -> Result<T, ServerError> {
    let (status, body) = read_any_body(std::future::ready(response), &[expected]).await?;
    parse_json(status, &body)
}

fn parse_json<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, ServerError> {
    serde_json::from_slice(body).map_err(|error| ServerError::Refused {
        status,
        code: None,
        message: format!("unreadable answer: {error}"),
    })
}

#[derive(Clone)]
pub struct ServerClient {
    api: ServerApi,
    /// The device's current token pair; refreshed silently when the access
    /// token expires.
    tokens: Arc<Mutex<DeviceTokens>>,
    /// Told about every new pair, so the caller can store the new refresh
    /// token (the old one no longer works).
    on_rotated: Option<TokensRotated>,
    /// Reads the pair as stored now: another process of this computer (the
    /// app, the service, a command) may have refreshed it meanwhile.
    stored: Option<TokensStored>,
}

impl ServerClient {
    pub fn new(
        base_url: &str,
        ca_pem: Option<&[u8]>,
        tokens: DeviceTokens,
    ) -> Result<Self, ServerError> {
        Ok(Self::with_api(ServerApi::new(base_url, ca_pem)?, tokens))
    }

    pub fn with_api(api: ServerApi, tokens: DeviceTokens) -> Self {
        Self { api, tokens: Arc::new(Mutex::new(tokens)), on_rotated: None, stored: None }
    }

    /// Calls `store` with each new token pair after a refresh.
    pub fn on_tokens_rotated(
        mut self,
        store: impl Fn(&DeviceTokens) + Send + Sync + 'static,
    ) -> Self {
        self.on_rotated = Some(Arc::new(store));
        self
    }

    /// Reads the stored pair (blocking; it runs off the async threads)
    /// before refreshing, and again when a refresh is refused.
    pub fn with_stored_tokens(
        mut self,
        load: impl Fn() -> Option<DeviceTokens> + Send + Sync + 'static,
    ) -> Self {
        self.stored = Some(Arc::new(load));
        self
    }

    fn access_token(&self) -> String {
        self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).access_token.clone()
    }

    /// Trades the refresh token for a new pair.
    async fn refresh(&self) -> Result<(), ServerError> {
        let refresh_token = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .refresh_token
            .clone();
        let tokens: DeviceTokens =
            self.api.post("/api/v1/devices/refresh", &RefreshTokens { refresh_token }, 200).await?;
        if let Some(store) = &self.on_rotated {
            store(&tokens);
        }
        *self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = tokens;
        tracing::info!("device tokens refreshed");
        Ok(())
    }

    /// The raw stored message, refreshing the access token once if it expired.
    pub async fn content(&self, message_id: &str) -> Result<Vec<u8>, ServerError> {
        let path = format!("/api/v1/messages/{message_id}/content");
        let (_, body) = self.authorized(reqwest::Method::GET, &path, 200).await?;
        Ok(body.into())
    }

    /// Stores a secure message (`POST /api/v1/messages`) and returns it with
    /// one signed notification per recipient, for the agent to mail. The
    /// metadata's client key makes sending it again after a lost answer
    /// return the message already stored.
    pub async fn upload(
        &self,
        metadata: &UploadMetadata,
        content: bytes::Bytes,
    ) -> Result<StoredMessage, ServerError> {
        let metadata = serde_json::to_string(metadata).map_err(|error| ServerError::Refused {
            status: 0,
            code: None,
            message: format!("cannot write the upload's metadata: {error}"),
        })?;
        let (status, body) = self
            .authorized_with(reqwest::Method::POST, "/api/v1/messages", &[200, 201], |request| {
                let form = reqwest::multipart::Form::new()
                    .part(
                        "metadata",
                        reqwest::multipart::Part::text(metadata.clone())
                            .mime_str("application/json")
                            .expect("a valid media type"),
                    )
                    .part(
                        "content",
                        reqwest::multipart::Part::stream(content.clone())
                            .mime_str("message/rfc822")
                            .expect("a valid media type"),
                    );
                request.multipart(form)
            })
            .await?;
        parse_json(status, &body)
    }

    /// Tells the server that the sender's mail server accepted these
    /// recipients' notifications, for the delivery slip.
    pub async fn report_notified(
        &self,
        message_id: &str,
        report: &SenderNotified,
    ) -> Result<(), ServerError> {
        let path = format!("/api/v1/messages/{message_id}/notifications");
        self.authorized_with(reqwest::Method::POST, &path, &[204], |request| request.json(report))
            .await
            .map(|_| ())
    }

    /// Recalls a message this account sent.
    pub async fn recall(&self, message_id: &str) -> Result<MessageInfo, ServerError> {
        let path = format!("/api/v1/messages/{message_id}/recall");
        let (status, body) = self.authorized(reqwest::Method::POST, &path, 200).await?;
        parse_json(status, &body)
    }

    /// Where each recipient's notification is, for a message this account sent.
    pub async fn deliveries(&self, message_id: &str) -> Result<DeliveryReport, ServerError> {
        let path = format!("/api/v1/messages/{message_id}/deliveries");
        let (status, body) = self.authorized(reqwest::Method::GET, &path, 200).await?;
        parse_json(status, &body)
    }

    /// The messages to this account recalled at or after `since` (Unix seconds).
    pub async fn recalls(&self, since: i64) -> Result<Recalls, ServerError> {
        let path = format!("/api/v1/recalls?since={since}");
        let (status, body) = self.authorized(reqwest::Method::GET, &path, 200).await?;
        parse_json(status, &body)
    }

    /// Revokes this device on the server (sign-out): its tokens stop
    /// working at once. Refreshes the access token once if it expired.
    pub async fn revoke_this_device(&self) -> Result<(), ServerError> {
        let device_id =
            self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).device_id.clone();
        let path = format!("/api/v1/devices/{device_id}");
        self.authorized(reqwest::Method::DELETE, &path, 204).await.map(|_| ())
    }

    /// `method path` with the access token, expecting `expected`; an expired
    /// token is refreshed once and the request sent again.
    async fn authorized(
        &self,
        method: reqwest::Method,
        path: &str,
        expected: u16,
    ) -> Result<(u16, bytes::Bytes), ServerError> {
        self.authorized_with(method, path, &[expected], |request| request).await
    }

    /// As [`Self::authorized`], with `body` adding to each request (it is
    /// built again if the token is refreshed) and any of `expected` accepted.
    async fn authorized_with(
        &self,
        method: reqwest::Method,
        path: &str,
        expected: &[u16],
        body: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<(u16, bytes::Bytes), ServerError> {
        let attempt = || {
            let request = self
                .api
                .http
                .request(method.clone(), format!("{}{path}", self.api.base_url))
                .bearer_auth(self.access_token());
            read_any_body(body(request).send(), expected)
        };
        let used = self.access_token();
        match attempt().await {
            Err(ServerError::Refused { code: Some(ErrorCode::TokenExpired), .. }) => {
                self.renew(&used).await?;
                attempt().await
            }
            // Unknown: another process refreshed the pair, which retired ours.
            Err(error @ ServerError::Refused { code: Some(ErrorCode::Unauthenticated), .. }) => {
                if self.adopt_stored(|stored| stored.access_token != used).await {
                    attempt().await
                } else {
                    Err(error)
                }
            }
            other => other,
        }
    }

    /// A working token pair after `used` expired: the stored one when
    /// another process already refreshed it, else a refresh of ours (or,
    /// when another process's refresh overtook ours, the one it stored).
    async fn renew(&self, used: &str) -> Result<(), ServerError> {
        if self.adopt_stored(|stored| stored.access_token != used).await {
            return Ok(());
        }
        let ours = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .refresh_token
            .clone();
        match self.refresh().await {
            Err(error @ ServerError::Refused { status: 401, .. }) => {
                if self.adopt_stored(|stored| stored.refresh_token != ours).await {
                    Ok(())
                } else {
                    Err(error)
                }
            }
            other => other,
        }
    }

    /// Takes the stored pair if `newer` says it is not the one in use.
    async fn adopt_stored(&self, newer: impl Fn(&DeviceTokens) -> bool) -> bool {
        let Some(load) = self.stored.clone() else { return false };
        let Ok(Some(stored)) = tokio::task::spawn_blocking(move || load()).await else {
            return false;
        };
        if !newer(&stored) {
            return false;
        }
        tracing::info!(
            "device tokens taken from the keyring, refreshed by another Sealpost process"
        );
        *self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = stored;
        true
    }
}

fn refused(status: u16, body: &[u8]) -> ServerError {
    let error: Option<ErrorBody> = serde_json::from_slice(body).ok();
    ServerError::Refused {
        status,
        code: error.as_ref().map(|e| e.code),
        message: error.map_or_else(|| String::from_utf8_lossy(body).into_owned(), |e| e.message),
    }
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient").field("base_url", &self.api.base_url).finish_non_exhaustive()
    }
}
