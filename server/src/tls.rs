//! The HTTPS certificate: the configured one, or a self-signed one generated
//! in the data directory on first start so the server runs with no setup.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sha2::{Digest, Sha256};

use crate::files::write_private_file;
use crate::settings::TlsSettings;

/// The certificate in use and how to recognise it.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub self_signed: bool,
    /// SHA-256 of the leaf certificate, as colon-separated uppercase hex.
    pub fingerprint: String,
    pub config: Arc<ServerConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not form a usable TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Loads the configured certificate or makes sure a self-signed one exists.
pub fn load_or_generate(
    settings: &TlsSettings,
    data_dir: &Path,
    host: Option<&str>,
) -> Result<TlsIdentity, TlsError> {
    let (cert_file, key_file, self_signed) = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone(), false),
        _ => {
            let dir = data_dir.join("tls");
            let cert = dir.join("cert.pem");
            let key = dir.join("key.pem");
            if !cert.exists() || !key.exists() {
                let mut names =
                    vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
                names.extend(settings.hostnames.iter().cloned());
                names.extend(host.map(str::to_owned));
                names.dedup();
                generate_self_signed(&names, &cert, &key)?;
            }
            (cert, key, true)
        }
    };
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| TlsError::Read { path: path.clone(), source })
    };
    let cert_pem = read(&cert_file)?;
    let key_pem = read(&key_file)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem { path: cert_file.clone(), what: "certificate" })?;
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::Pem { path: cert_file.clone(), what: "certificate" })?;
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| TlsError::Pem { path: key_file.clone(), what: "private key" })?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsIdentity { cert_file, key_file, self_signed, fingerprint, config: Arc::new(config) })
}

/// A leaf certificate (`CA:FALSE`) that rustls clients accept for every name given.
fn generate_self_signed(
    names: &[String],
    cert_file: &Path,
    key_file: &Path,
) -> Result<(), TlsError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
    let write = |path: &Path, bytes: &[u8]| {
        write_private_file(path, bytes)
            .map_err(|source| TlsError::Write { path: path.to_owned(), source })
    };
    write(key_file, certified.signing_key.serialize_pem().as_bytes())?;
    write(cert_file, certified.cert.pem().as_bytes())?;
    Ok(())
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    digest.iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
}
