//! A small typed HTTPS client for the Sealpost API that trusts one certificate.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::header::HeaderMap;
use reqwest::multipart::{Form, Part};
use sealpost_proto::api::{
    CodeRequest, DeviceCredential, DeviceTokens, EnrollDevice, ErrorBody, ErrorCode, UploadMetadata,
};
use sealpost_proto::verification::find_code;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::mailstack::MailStack;

/// An HTTP/1.1 client that trusts only the PEM certificate given.
pub(crate) fn https_client(
    trusted_cert_pem: &[u8],
    redirects: reqwest::redirect::Policy,
) -> anyhow::Result<reqwest::Client> {
    let mut tls = sealpost_agent::tls::client_config(Some(trusted_cert_pem))
        .context("trusting the certificate")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(redirects)
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .context("building the HTTPS client")
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
}

/// A response read to the end, for assertions.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// The body as `T`; panics with the status and body when it is not.
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "status {}: body is not the expected JSON ({error}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The `code` of an error body, if this is one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        serde_json::from_slice::<ErrorBody>(&self.body).ok().map(|body| body.code)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Fails with the body's message unless the status is `expected`.
    pub fn expect_status(self, expected: u16) -> anyhow::Result<Self> {
        if self.status != expected {
            bail!("expected HTTP {expected}, got {}: {}", self.status, self.text());
        }
        Ok(self)
    }
}

impl ApiClient {
    /// A client for `base_url` (`https://127.0.0.1:PORT`) that trusts only the
    /// PEM certificate given: the server's self-signed one in tests.
    pub fn new(base_url: &str, trusted_cert_pem: &[u8]) -> anyhow::Result<Self> {
        let http = https_client(trusted_cert_pem, reqwest::redirect::Policy::default())?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_owned() })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<ApiResponse> {
        self.send(self.authorized(self.http.get(self.url(path)), token)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> anyhow::Result<ApiResponse> {
        self.send(self.authorized(self.http.delete(self.url(path)), token)).await
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &impl Serialize,
        token: Option<&str>,
    ) -> anyhow::Result<ApiResponse> {
        self.send(self.authorized(self.http.post(self.url(path)).json(body), token)).await
    }

    /// Asks for a verification code and reads it from the email that arrives
    /// in the user's INBOX after the request (an earlier code email there is
    /// stale and never used).
    pub async fn code_via_inbox(
        &self,
        stack: &MailStack,
        origin: &str,
        email: &str,
    ) -> anyhow::Result<String> {
        let before = stack.last_uid(email, "INBOX").await?;
        self.post_json("/api/v1/verification-codes", &CodeRequest { email: email.into() }, None)
            .await?
            .expect_status(202)?;
        let has_code = |raw: &[u8]| find_code(raw, origin).is_some();
        let raw = stack
            .wait_for_email_after(email, "INBOX", before, has_code, Duration::from_secs(15))
            .await?;
        find_code(&raw, origin).context("the verification email lost its code")
    }

    /// Registers the way the desktop agent does: asks for a code, reads it
    /// from the user's INBOX on the mail stack, enrolls a device with it.
    pub async fn register_via_inbox(
        &self,
        stack: &MailStack,
        origin: &str,
        email: &str,
        device_name: &str,
    ) -> anyhow::Result<(DeviceTokens, String)> {
        let code = self.code_via_inbox(stack, origin, email).await?;
        let request = EnrollDevice {
            email: email.into(),
            device_name: device_name.into(),
            credential: DeviceCredential::Code(code.clone()),
        };
        let tokens: DeviceTokens =
            self.post_json("/api/v1/devices", &request, None).await?.expect_status(201)?.json();
        Ok((tokens, code))
    }

    /// `POST /api/v1/messages` with the raw MIME message and its recipients;
    /// the caller sends the returned notifications itself.
    pub async fn upload(
        &self,
        token: &str,
        recipients: &[&str],
        mime: Vec<u8>,
    ) -> anyhow::Result<ApiResponse> {
        self.upload_with(token, recipients, mime, false).await
    }

    /// `POST /api/v1/messages`, asking the server to mail the notifications
    /// when `send_notifications` is set.
    pub async fn upload_with(
        &self,
        token: &str,
        recipients: &[&str],
        mime: Vec<u8>,
        send_notifications: bool,
    ) -> anyhow::Result<ApiResponse> {
        let metadata = UploadMetadata {
            recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
            send_notifications,
            expires_at: None,
            never_expires: false,
            client_key: None,
        };
        self.upload_metadata(token, &metadata, mime).await
    }

    /// `POST /api/v1/messages` with `metadata` as given.
    pub async fn upload_metadata(
        &self,
        token: &str,
        metadata: &UploadMetadata,
        mime: Vec<u8>,
    ) -> anyhow::Result<ApiResponse> {
        let form = Form::new()
            .part(
                "metadata",
                Part::text(serde_json::to_string(metadata)?).mime_str("application/json")?,
            )
            .part("content", Part::bytes(mime).mime_str("message/rfc822")?);
        self.send(
            self.authorized(
                self.http.post(self.url("/api/v1/messages")).multipart(form),
                Some(token),
            ),
        )
        .await
    }

    fn authorized(
        &self,
        request: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `POST /api/v1/messages` with `form` as it is (metadata and content
    /// parts built by the caller, however malformed).
    pub async fn upload_form(
        &self,
        token: &str,
        form: reqwest::multipart::Form,
    ) -> anyhow::Result<ApiResponse> {
        self.send(self.http.post(self.url("/api/v1/messages")).bearer_auth(token).multipart(form))
            .await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<ApiResponse> {
        let response = request.send().await.context("sending the request")?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.context("reading the response body")?.to_vec();
        Ok(ApiResponse { status, headers, body })
    }
}
