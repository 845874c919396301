//! [`StaticSite`]: a tiny HTTPS server of fixed pages, standing in for the
//! web servers clients discover things on (a mail domain's autoconfig host,
//! an organization's website).
//!
//! Its certificate comes from a CA made for it alone, so a client trusts it
//! only when given [`StaticSite::ca_pem`], exactly as with a private CA.
//! It speaks just enough HTTP/1.1 for that: one request per connection, GET
//! only, the page for the path (the query is ignored) or 404.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A request head larger than this is refused; real clients send < 1 KiB.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A client that neither finishes its handshake nor its request in this time
/// is dropped, so a stuck test fails on its own timeout instead of here.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// One page: the path it answers (without query), its content type, its body.
type Page = (String, String, Vec<u8>);

/// Serves fixed pages over HTTPS on 127.0.0.1 until dropped.
pub struct StaticSite {
    addr: SocketAddr,
    ca_pem: Vec<u8>,
    requests: Arc<Mutex<Vec<String>>>,
    accept_loop: JoinHandle<()>,
}

impl StaticSite {
    /// Listens on a free loopback port with a certificate valid for `names`
    /// (DNS names or IP addresses), serving `pages`.
    pub async fn start(names: &[&str], pages: Vec<Page>) -> Result<Self> {
        let (ca_pem, certificate, key) = certificate_for(names)?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificate, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let pages = Arc::new(pages);
        let log = requests.clone();
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, pages, log) = (acceptor.clone(), pages.clone(), log.clone());
                tokio::spawn(async move {
                    let served = serve(stream, acceptor, &pages, &log);
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, served).await;
                });
            }
        });
        Ok(Self { addr, ca_pem, requests, accept_loop })
    }

    /// Where the site listens; point names at it with a DNS override.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM certificate of the CA that signed the site's certificate.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// The request targets (path and query) received so far, in order,
    /// including those answered 404.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// A fresh CA's PEM, and a leaf for `names` signed by it with its key.
fn certificate_for(
    names: &[&str],
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name.push(DnType::CommonName, "Sealpost test web CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut leaf_params = CertificateParams::new(names.clone())
        .with_context(|| format!("certificate names {names:?}"))?;
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    if let Some(first) = names.first() {
        leaf_params.distinguished_name.push(DnType::CommonName, first.as_str());
    }
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    Ok((ca.pem().into_bytes(), vec![leaf.der().clone()], key))
}

/// One connection: one request, one answer, then close.
async fn serve(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    pages: &[Page],
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut tls = acceptor.accept(stream).await?;
    let Some(head) = read_head(&mut tls).await? else {
        return Ok(());
    };
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (request_line.next().unwrap_or_default(), request_line.next());
    let Some(target) = target else {
        return respond(&mut tls, "400 Bad Request", "text/plain", b"bad request\n").await;
    };
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(target.to_owned());
    if method != "GET" {
        return respond(&mut tls, "405 Method Not Allowed", "text/plain", b"GET only\n").await;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match pages.iter().find(|(page_path, _, _)| page_path == path) {
        Some((_, content_type, body)) => respond(&mut tls, "200 OK", content_type, body).await,
        None => respond(&mut tls, "404 Not Found", "text/plain", b"not found\n").await,
    }
}

/// The request head up to the blank line, or `None` if the client left or
/// sent too much.
async fn read_head(stream: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 || head.len() + read > MAX_HEAD_BYTES {
            return Ok(None);
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

async fn respond(
    stream: &mut (impl AsyncWriteExt + Unpin),
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
