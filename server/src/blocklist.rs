//! Watching whether the relay's sending addresses are on DNS blocklists.
//!
//! A notification from a listed address lands in spam or is refused, so the
//! server checks each configured sending IP against each DNSBL zone
//! periodically (RFC 5782: the A record of the reversed address under the
//! zone; 127.0.0.0/8 answers mean listed). The latest report is exposed in
//! metrics and the admin API. The resolver is configurable, so tests and
//! air-gapped sites point it at their own DNS server.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::ProtoErrorKind;
use hickory_proto::op::ResponseCode;
use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};
pub use sealpost_proto::api::{BlocklistListing as Listing, BlocklistReport};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// The `[blocklists]` settings section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlocklistSettings {
    /// Check periodically (needs `sending_ips`).
    pub enabled: bool,
    /// The relay's public sending addresses.
    pub sending_ips: Vec<IpAddr>,
    /// DNSBL zones to ask.
    pub zones: Vec<String>,
    /// A DNS server to ask instead of the system's resolvers (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
    pub interval_seconds: u64,
    pub timeout_seconds: u64,
}

impl Default for BlocklistSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            sending_ips: Vec::new(),
            zones: vec![
                "zen.spamhaus.org".into(),
                "bl.spamcop.net".into(),
                "b.barracudacentral.org".into(),
            ],
            resolver: None,
            interval_seconds: 3600,
            timeout_seconds: 5,
        }
    }
}

impl BlocklistSettings {
    /// `(key, problem)` for the first invalid value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.enabled && self.sending_ips.is_empty() {
            return Err((
                "blocklists.sending_ips",
                "list the relay's sending addresses to check".into(),
            ));
        }
        if self.enabled && self.zones.is_empty() {
            return Err(("blocklists.zones", "list at least one DNSBL zone to ask".into()));
        }
        if let Some(zone) = self.zones.iter().find(|zone| !is_domain(zone)) {
            return Err(("blocklists.zones", format!("{zone:?} is not a DNS zone name")));
        }
        if self.interval_seconds < 60 {
            return Err(("blocklists.interval_seconds", "must be at least 60".into()));
        }
        if self.timeout_seconds == 0 {
            return Err(("blocklists.timeout_seconds", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// A DNS name in letters, digits and hyphens; the trailing dot of a fully
/// qualified name is allowed, since [`query_name`] strips it.
fn is_domain(zone: &str) -> bool {
    let zone = zone.strip_suffix('.').unwrap_or(zone);
    !zone.is_empty()
        && zone.len() <= 253
        && zone.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The latest report, shared with the admin API and metrics.
#[derive(Debug, Clone, Default)]
pub struct BlocklistStatus(Arc<RwLock<Option<BlocklistReport>>>);

impl BlocklistStatus {
    pub fn get(&self) -> Option<BlocklistReport> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set(&self, report: BlocklistReport) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(report);
    }
}

pub struct BlocklistChecker {
    resolver: TokioResolver,
    ips: Vec<IpAddr>,
    zones: Vec<String>,
}

impl BlocklistChecker {
    pub fn new(settings: &BlocklistSettings) -> Result<Self, ResolveError> {
        let mut builder = match settings.resolver {
            Some(server) => TokioResolver::builder_with_config(
                ResolverConfig::from_parts(
                    None,
                    Vec::new(),
                    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true),
                ),
                TokioConnectionProvider::default(),
            ),
            None => TokioResolver::builder_tokio()?,
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = Duration::from_secs(settings.timeout_seconds);
        // hickory counts retries here, not tries: 0 means one query, so a
        // silent zone costs one timeout, not two.
        options.attempts = 0;
        options.ndots = 0;
        options.use_hosts_file = ResolveHosts::Never;
        // Listings change between checks: never answer from an old result.
        options.cache_size = 0;
        Ok(Self {
            resolver: builder.build(),
            ips: settings.sending_ips.clone(),
            zones: settings.zones.clone(),
        })
    }

    /// Every address against every zone, all at once.
    pub async fn check(&self, now: OffsetDateTime) -> BlocklistReport {
        let lookups = self
            .ips
            .iter()
            .flat_map(|ip| self.zones.iter().map(move |zone| self.lookup(*ip, zone)));
        let listings = futures_util::future::join_all(lookups).await;
        BlocklistReport { checked_at: now, listings }
    }

    async fn lookup(&self, ip: IpAddr, zone: &str) -> Listing {
        let name = query_name(ip, zone);
        let mut listing = Listing {
            ip,
            zone: zone.to_owned(),
            listed: false,
            return_codes: Vec::new(),
            reason: None,
            error: None,
        };
        match self.resolver.ipv4_lookup(name.as_str()).await {
            Ok(answers) => {
                listing.return_codes = answers.iter().map(|a| a.0).collect();
                // 127.255.255.x is Spamhaus telling the querier it refuses
                // to answer (open or public resolver), not a listing.
                if listing.return_codes.iter().any(|code| code.octets()[..3] == [127, 255, 255]) {
                    listing.error = Some(format!(
                        "{zone} refused the query (answer {:?}): use a resolver the zone accepts",
                        listing.return_codes
                    ));
                } else if listing.return_codes.iter().any(|code| code.octets()[0] != 127) {
                    // RFC 5782 answers are in 127.0.0.0/8. Anything else is
                    // typically a defunct zone whose domain now resolves every
                    // name: the answer says nothing about the address.
                    listing.error = Some(format!(
                        "{zone} answered {:?}, outside 127.0.0.0/8: the zone is not a working \
                         DNSBL (defunct or wildcarded?)",
                        listing.return_codes
                    ));
                } else {
                    listing.listed = !listing.return_codes.is_empty();
                }
            }
            Err(error) if is_absent(&error) => {}
            Err(error) => listing.error = Some(format!("lookup of {name} failed: {error}")),
        }
        if listing.listed {
            listing.reason = self
                .resolver
                .txt_lookup(name.as_str())
                .await
                .ok()
                .and_then(|txt| txt.iter().next().map(|record| record.to_string()));
        }
        listing
    }
}

/// NXDOMAIN, or an empty answer: the address is not listed. (A SERVFAIL
/// also comes back as "no records", but it means the zone could not say.)
fn is_absent(error: &ResolveError) -> bool {
    matches!(
        error.proto().map(|proto| proto.kind()),
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. })
            if matches!(response_code, ResponseCode::NXDomain | ResponseCode::NoError)
    )
}

/// `d.c.b.a.zone.` for IPv4; the 32 reversed nibbles for IPv6 (RFC 5782 §2.4).
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let reversed = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => v6
            .octets()
            .iter()
            .rev()
            .flat_map(|byte| [byte & 0x0f, byte >> 4])
            .map(|nibble| format!("{nibble:x}"))
            .collect::<Vec<_>>()
            .join("."),
    };
    format!("{reversed}.{}.", zone.trim_end_matches('.'))
}

/// Checks every `interval` until `shutdown`, keeping the latest report in
/// `status` and warning about every listing.
pub async fn run_monitor(
    checker: BlocklistChecker,
    status: BlocklistStatus,
    metrics: crate::metrics::Metrics,
    interval: Duration,
    clock: crate::clock::Clock,
    shutdown: CancellationToken,
) {
    loop {
        let report = checker.check(clock.now()).await;
        for listing in &report.listings {
            if listing.listed {
                tracing::warn!(ip = %listing.ip, zone = %listing.zone, reason = ?listing.reason, "sending address is on a blocklist");
            } else if let Some(error) = &listing.error {
                tracing::warn!(ip = %listing.ip, zone = %listing.zone, %error, "blocklist check failed");
            }
        }
        metrics.record_blocklists(&report);
        status.set(report);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::{A, TXT};
    use hickory_proto::rr::{RData, Record};
    use std::collections::HashMap;
    use std::net::Ipv4Addr;
    use std::sync::Mutex;
    use tokio::net::UdpSocket;

    /// Queries the stub received for `silent.test` names, by name.
    type SilentQueries = Arc<Mutex<HashMap<String, usize>>>;

    /// A DNS server on loopback answering like a blocklist:
    /// `2.0.0.127.bl.test` listed, other `bl.test` names absent,
    /// `broken.test` failing, `silent.test` never answering (but counting),
    /// `refusing.test` answering like Spamhaus to a public resolver, and
    /// `parked.test` answering every name with a public address.
    async fn stub_dns() -> (SocketAddr, SilentQueries) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let address = socket.local_addr().expect("address");
        let silent = SilentQueries::default();
        let silent_queries = silent.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            loop {
                let Ok((length, peer)) = socket.recv_from(&mut buffer).await else { return };
                let Ok(query) = Message::from_vec(&buffer[..length]) else { continue };
                let Some(question) = query.queries().first().cloned() else { continue };
                let name = question.name().to_ascii().to_lowercase();
                if name.ends_with("silent.test.") {
                    let mut counts = silent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    *counts.entry(name).or_default() += 1;
                    continue;
                }
                let mut response = Message::new();
                response
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_recursion_desired(query.recursion_desired())
                    .set_recursion_available(true)
                    .add_query(question.clone());
                if name.ends_with("broken.test.") {
                    response.set_response_code(ResponseCode::ServFail);
                } else if name == "2.0.0.127.bl.test." {
                    let record = match question.query_type() {
                        hickory_proto::rr::RecordType::TXT => {
                            RData::TXT(TXT::new(vec!["listed for testing".into()]))
                        }
                        _ => RData::A(A::new(127, 0, 0, 2)),
                    };
                    response.add_answer(Record::from_rdata(question.name().clone(), 60, record));
                } else if name == "3.0.0.127.refusing.test." {
                    let record = RData::A(A::new(127, 255, 255, 254));
                    response.add_answer(Record::from_rdata(question.name().clone(), 60, record));
                } else if name.ends_with("parked.test.") {
                    let record = RData::A(A::new(192, 0, 2, 1));
                    response.add_answer(Record::from_rdata(question.name().clone(), 60, record));
                } else {
                    response.set_response_code(ResponseCode::NXDomain);
                }
                let Ok(bytes) = response.to_vec() else { continue };
                let _ = socket.send_to(&bytes, peer).await;
            }
        });
        (address, silent_queries)
    }

    fn settings(resolver: SocketAddr, ips: &[&str], zones: &[&str]) -> BlocklistSettings {
        BlocklistSettings {
            enabled: true,
            sending_ips: ips.iter().map(|ip| ip.parse().expect("ip")).collect(),
            zones: zones.iter().map(|zone| (*zone).to_owned()).collect(),
            resolver: Some(resolver),
            interval_seconds: 60,
            timeout_seconds: 1,
        }
    }

    #[tokio::test]
    async fn listed_absent_failing_and_refusing_zones_are_told_apart() {
        let (dns, silent_queries) = stub_dns().await;
        let checker = BlocklistChecker::new(&settings(
            dns,
            &["127.0.0.2", "127.0.0.1", "127.0.0.3"],
            &["bl.test", "broken.test", "silent.test", "refusing.test", "parked.test"],
        ))
        .expect("checker");
        let report = checker.check(OffsetDateTime::UNIX_EPOCH).await;
        let find = |ip: &str, zone: &str| {
            report
                .listings
                .iter()
                .find(|l| l.ip.to_string() == ip && l.zone == zone)
                .unwrap_or_else(|| panic!("{ip} in {zone}"))
                .clone()
        };
        let listed = find("127.0.0.2", "bl.test");
        assert!(listed.listed && listed.error.is_none(), "{listed:?}");
        assert_eq!(listed.return_codes, [Ipv4Addr::new(127, 0, 0, 2)]);
        assert_eq!(listed.reason.as_deref(), Some("listed for testing"));
        let clean = find("127.0.0.1", "bl.test");
        assert!(!clean.listed && clean.error.is_none(), "{clean:?}");
        let broken = find("127.0.0.1", "broken.test");
        assert!(!broken.listed && broken.error.is_some(), "SERVFAIL is unknown: {broken:?}");
        let silent = find("127.0.0.1", "silent.test");
        assert!(!silent.listed && silent.error.is_some(), "a timeout is unknown: {silent:?}");
        let refused = find("127.0.0.3", "refusing.test");
        assert!(!refused.listed && refused.error.is_some(), "{refused:?}");
        let parked = find("127.0.0.1", "parked.test");
        assert!(!parked.listed && parked.error.is_some(), "not a DNSBL answer: {parked:?}");
        assert_eq!(report.listed_count(), 1);
        assert_eq!(report.listings.len(), 15);
        // 3 silent + 3 broken + 3 parked + the refusal.
        assert_eq!(report.error_count(), 10);
        // One query per lookup: a timeout is not retried, so a silent zone
        // costs one timeout per check, not a multiple of it.
        let silent_queries =
            silent_queries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        assert_eq!(silent_queries.len(), 3, "{silent_queries:?}");
        assert!(silent_queries.values().all(|&count| count == 1), "{silent_queries:?}");
    }

    #[test]
    fn query_names_follow_rfc_5782() {
        assert_eq!(
            query_name("192.0.2.99".parse().expect("ip"), "bl.example"),
            "99.2.0.192.bl.example."
        );
        assert_eq!(
            query_name("2001:db8:1:2:3:4:567:89ab".parse().expect("ip"), "bl.example."),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example."
        );
    }

    #[tokio::test]
    async fn the_monitor_keeps_the_latest_report() {
        let (dns, _) = stub_dns().await;
        let checker =
            BlocklistChecker::new(&settings(dns, &["127.0.0.2"], &["bl.test"])).expect("checker");
        let status = BlocklistStatus::default();
        let shutdown = CancellationToken::new();
        let monitor = tokio::spawn(run_monitor(
            checker,
            status.clone(),
            crate::metrics::Metrics::default(),
            Duration::from_millis(20),
            crate::clock::Clock::default(),
            shutdown.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while status.get().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no report within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status.get().expect("report").listed_count(), 1);
        shutdown.cancel();
        monitor.await.expect("the monitor stops on shutdown");
    }

    #[test]
    fn validation_names_the_key() {
        let mut settings = BlocklistSettings { enabled: true, ..BlocklistSettings::default() };
        assert_eq!(settings.validate().map_err(|(key, _)| key), Err("blocklists.sending_ips"));
        settings.sending_ips = vec!["192.0.2.1".parse().expect("ip")];
        for zones in [&[][..], &["bad zone"], &["a..b"], &[".zen.spamhaus.org"]] {
            settings.zones = zones.iter().map(|zone| (*zone).to_owned()).collect();
            assert_eq!(
                settings.validate().map_err(|(key, _)| key),
                Err("blocklists.zones"),
                "{zones:?}"
            );
        }
        settings.zones = vec!["zen.spamhaus.org".into(), "bl.spamcop.net.".into()];
        assert!(settings.validate().is_ok());
        settings.interval_seconds = 5;
        assert_eq!(settings.validate().map_err(|(key, _)| key), Err("blocklists.interval_seconds"));
        settings.interval_seconds = 3600;
        settings.timeout_seconds = 0;
        assert_eq!(settings.validate().map_err(|(key, _)| key), Err("blocklists.timeout_seconds"));
        // Disabled, nothing needs listing: the defaults are valid.
        assert!(BlocklistSettings::default().validate().is_ok());
    }
}
