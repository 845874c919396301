//! What every request handler can reach.

use std::sync::Arc;
use std::time::Duration;

use crate::blobs::BlobStore;
use crate::blocklist::BlocklistStatus;
use crate::clock::Clock;
use crate::dkim::DkimSigner;
use crate::links::LinkKey;
use crate::metrics::Metrics;
use crate::organization::Organization;
use crate::outbox::Outbox;
use crate::rate_limit::RateLimit;
use crate::settings::Settings;
use crate::signing::SigningKeys;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    /// The normalised origin written into notifications.
    pub origin: String,
    pub store: Arc<dyn Store>,
    pub blobs: BlobStore,
    pub keys: SigningKeys,
    /// Makes and checks the per-recipient tokens in notification links.
    pub links: LinkKey,
    /// Branding, sender, Secure Message Center URL, templates and relay, as
    /// configured and changed by admins.
    pub organization: Arc<Organization>,
    pub outbox: Outbox,
    /// The latest DNS blocklist check of the relay's sending addresses.
    pub blocklists: BlocklistStatus,
    /// Signs notifications when DKIM is configured.
    pub dkim: Option<Arc<DkimSigner>>,
    /// Checks SPF, DKIM and DMARC of mail to masked addresses.
    pub verifier: Option<Arc<crate::authentication_results::Verifier>>,
    pub limits: Limits,
    /// The Secure Message Center's page templates.
    pub pages: crate::web::Pages,
    pub metrics: Metrics,
    pub clock: Clock,
    /// Verified against when an account does not exist, so a failed login
    /// takes as long whether or not the address is registered.
    pub dummy_password_hash: String,
}

pub struct Limits {
    pub codes_per_address: RateLimit,
    pub codes_per_ip: RateLimit,
    pub failed_logins_per_address: RateLimit,
    pub failed_logins_per_ip: RateLimit,
    /// Messages the SMTP listener takes from one envelope sender.
    pub inbound_per_sender: RateLimit,
    /// Messages the SMTP listener takes for one recipient address.
    pub inbound_per_address: RateLimit,
}

impl Limits {
    pub fn new(settings: &Settings) -> Self {
        let hour = Duration::from_secs(3600);
        let quarter = Duration::from_secs(15 * 60);
        let limits = &settings.limits;
        Self {
            codes_per_address: RateLimit::new(
                "codes-address",
                limits.code_requests_per_address_per_hour,
                hour,
            ),
            codes_per_ip: RateLimit::new("codes-ip", limits.code_requests_per_ip_per_hour, hour),
            failed_logins_per_address: RateLimit::new(
                "failed-logins-address",
                limits.failed_logins_per_address_per_15_minutes,
                quarter,
            ),
            failed_logins_per_ip: RateLimit::new(
                "failed-logins-ip",
                limits.failed_logins_per_ip_per_15_minutes,
                quarter,
            ),
            inbound_per_sender: RateLimit::new(
                "inbound-sender",
                limits.inbound_messages_per_sender_per_hour,
                hour,
            ),
            inbound_per_address: RateLimit::new(
                "inbound-address",
                limits.inbound_messages_per_address_per_hour,
                hour,
            ),
        }
    }
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// `email` DKIM-signed at `at` when DKIM is configured, else as it is.
    pub fn dkim_signed(&self, email: Vec<u8>, at: time::OffsetDateTime) -> Vec<u8> {
        match &self.dkim {
            Some(signer) => signer.sign(&email, at.unix_timestamp()),
            None => email,
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
