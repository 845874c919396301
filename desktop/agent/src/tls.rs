//! TLS client settings shared by the IMAP and HTTPS connections.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the trusted CA is not a PEM certificate: {0}")]
    BadCa(String),
    #[error("no trusted root certificates: the system store is empty and no CA was configured")]
    NoRoots,
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration trusting `ca_pem` when given (a private CA, or a
/// test stack's), otherwise the operating system's roots.
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for certificate in CertificateDer::pem_slice_iter(pem) {
                let certificate =
                    certificate.map_err(|error| TlsError::BadCa(error.to_string()))?;
                roots.add(certificate).map_err(|error| TlsError::BadCa(error.to_string()))?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    // One crypto provider for the whole agent: ring, as the server uses.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// What is wrong with a server's certificate and what to do about it, when
/// `error` (or an error it wraps) is a refused certificate. Connection
/// errors otherwise only say that the connection failed, which sends people
/// looking at the network instead of the certificate.
pub fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    use sealpost_relay::CertificateProblem;
    let problem = CertificateProblem::of(error)?;
    let advice = match problem {
        CertificateProblem::OtherHost => {
            "check the server name in the settings (it must be a name the certificate lists), or ask its administrator"
        }
        CertificateProblem::UnknownIssuer => {
            "if your organization uses its own CA, configure its certificate (--ca-file when registering, or CaFile in the policy)"
        }
        other => other.advice(),
    };
    Some(format!("{}; {advice}", problem.what()))
}
