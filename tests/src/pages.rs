//! [`PageClient`]: the Secure Message Center's pages as a browser without
//! JavaScript sees them, for tests of what the HTTP exchange itself must
//! guarantee (cookies, CSRF, redirects, headers). It keeps cookies as a
//! browser does, follows no redirect by itself, and sends the `Origin` a
//! browser would on posts unless told otherwise.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Context;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::client::https_client;

pub struct PageClient {
    http: reqwest::Client,
    base_url: String,
    cookies: Mutex<BTreeMap<String, String>>,
}

/// A page as received.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as text (lossily, for pages).
    pub body: String,
    /// The body as received (for downloads).
    pub bytes: Vec<u8>,
}

impl Page {
    /// The `Location` of a redirect.
    pub fn location(&self) -> Option<&str> {
        self.headers.get(reqwest::header::LOCATION).and_then(|value| value.to_str().ok())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Every `Set-Cookie` line.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect()
    }
}

impl PageClient {
    pub fn new(base_url: &str, trusted_cert_pem: &[u8]) -> anyhow::Result<Self> {
        Ok(Self {
            http: https_client(trusted_cert_pem, reqwest::redirect::Policy::none())?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            cookies: Mutex::new(BTreeMap::new()),
        })
    }

    /// `path_or_url` on this server: a path, or a full URL whose path and
    /// query are used (links in emails name the server's public origin).
    pub fn url(&self, path_or_url: &str) -> String {
        let path = match path_or_url.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
            None => path_or_url,
        };
        format!("{}{path}", self.base_url)
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().expect("cookies").get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.cookies.lock().expect("cookies").insert(name.to_owned(), value.to_owned());
    }

    pub fn forget_cookie(&self, name: &str) {
        self.cookies.lock().expect("cookies").remove(name);
    }

    /// The CSRF token a form of ours would carry.
    pub fn csrf(&self) -> String {
        self.cookie("__Host-sealpost-csrf").unwrap_or_default()
    }

    pub async fn get(&self, path_or_url: &str) -> anyhow::Result<Page> {
        self.send(self.http.get(self.url(path_or_url)), &[]).await
    }

    /// Posts a form as our pages do, from this site.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> anyhow::Result<Page> {
        let origin = self.base_url.clone();
        self.post_with(path, fields, &[("origin", &origin)]).await
    }

    /// Posts a form with `headers` added (another site's `Origin`, …).
    pub async fn post_with(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Page> {
        let body = fields
            .iter()
            .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
            .collect::<Vec<_>>()
            .join("&");
        let request = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        self.send(request, headers).await
    }

    /// Posts a `multipart/form-data` form as our compose page does: text
    /// `fields` and `files` as `(field, file name, content type, bytes)`.
    pub async fn post_multipart(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &str, &str, &[u8])],
    ) -> anyhow::Result<Page> {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        for (name, file_name, content_type, bytes) in files {
            let part = reqwest::multipart::Part::bytes(bytes.to_vec())
                .file_name(file_name.to_string())
                .mime_str(content_type)?;
            form = form.part(name.to_string(), part);
        }
        let origin = self.base_url.clone();
        let request = self.http.post(self.url(path)).multipart(form);
        self.send(request, &[("origin", &origin)]).await
    }

    /// Posts `body` as it is, with `content_type`, from this site: forms
    /// no browser would write, such as multipart bodies of endless parts.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Page> {
        let origin = self.base_url.clone();
        let request = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(request, &[("origin", &origin)]).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Page> {
        let mut request = request;
        let cookies = self
            .cookies
            .lock()
            .expect("cookies")
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        if !cookies.is_empty() {
            request = request.header(reqwest::header::COOKIE, cookies);
        }
        for (name, value) in headers {
            request = request
                .header(HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_str(value)?);
        }
        let response = request.send().await.context("page request")?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.context("page body")?.to_vec();
        let body = String::from_utf8_lossy(&bytes).into_owned();
        let page = Page { status, headers, body, bytes };
        let mut cookies = self.cookies.lock().expect("cookies");
        for line in page.set_cookies() {
            let Some((name, value)) = line.split(';').next().and_then(|pair| pair.split_once('='))
            else {
                continue;
            };
            let expired = line.to_ascii_lowercase().contains("max-age=0");
            if expired || value.is_empty() {
                cookies.remove(name.trim());
            } else {
                cookies.insert(name.trim().to_owned(), value.to_owned());
            }
        }
        drop(cookies);
        Ok(page)
    }
}

/// `application/x-www-form-urlencoded`, as a browser writes a form.
pub(crate) fn form_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b' ' => encoded.push('+'),
            b if b.is_ascii_alphanumeric() || b"-._*".contains(&b) => encoded.push(char::from(b)),
            b => encoded.push_str(&format!("%{b:02X}")),
        }
    }
    encoded
}
