//! The agent's HTTPS client for its Sealpost server.

use std::time::Duration;

use sealpost_proto::api::{ErrorBody, ErrorCode};

use crate::tls::{TlsError, client_config};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot reach the Sealpost server: {0}")]
    Unreachable(reqwest::Error),
    /// The server answered with an error; `code` says what to do.
    #[error("the Sealpost server answered {status}: {message}")]
    Refused { status: u16, code: Option<ErrorCode>, message: String },
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

#[derive(Clone)]
pub struct ServerClient {
    http: reqwest::Client,
    base_url: String,
    access_token: String,
}

impl ServerClient {
    /// `base_url` is where the API is reached; `ca_pem` a CA or certificate
    /// to trust instead of the system roots (a self-signed test server).
    pub fn new(
        base_url: &str,
        ca_pem: Option<&[u8]>,
        access_token: &str,
    ) -> Result<Self, ServerError> {
        let mut tls = client_config(ca_pem)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(ServerError::Unreachable)?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            access_token: access_token.to_owned(),
        })
    }

    /// The raw stored message.
    pub async fn content(&self, message_id: &str) -> Result<Vec<u8>, ServerError> {
        let response = self
            .http
            .get(format!("{}/api/v1/messages/{message_id}/content", self.base_url))
            .bearer_auth(&self.access_token)
            .send()
            .await
            .map_err(ServerError::Unreachable)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(ServerError::Unreachable)?;
        if status == 200 {
            return Ok(body.to_vec());
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        Err(ServerError::Refused {
            status,
            code: error.as_ref().map(|e| e.code),
            message: error
                .map_or_else(|| String::from_utf8_lossy(&body).into_owned(), |e| e.message),
        })
    }
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}
