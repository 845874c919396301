//! Prometheus metrics, served as text at `GET /metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::AppState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route pattern, never the concrete path, so ids do not explode the series.
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub messages_stored: Counter,
    pub message_bytes_stored: Counter,
    pub retrievals: Counter,
    pub verification_emails: Counter,
    /// Notification sending attempts by outcome: sent, retry, failed.
    pub notifications: Family<OutcomeLabels, Counter>,
    /// Decisions about mail to masked addresses: relayed, sent_masked,
    /// auto_replied, dropped, refused.
    pub relay_decisions: Family<OutcomeLabels, Counter>,
    /// 1 when a sending address is on a blocklist zone, 0 when not, -1 when unknown.
    pub blocklisted: Family<BlocklistLabels, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlocklistLabels {
    pub ip: String,
    pub zone: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let messages_stored = Counter::default();
        let message_bytes_stored = Counter::default();
        let retrievals = Counter::default();
        let verification_emails = Counter::default();
        let notifications = Family::<OutcomeLabels, Counter>::default();
        let relay_decisions = Family::<OutcomeLabels, Counter>::default();
        let blocklisted = Family::<BlocklistLabels, Gauge>::default();
        let mut registry = Registry::with_prefix("sealpost");
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            request_seconds.clone(),
        );
        registry.register("messages_stored", "Secure messages stored", messages_stored.clone());
        registry.register(
            "message_bytes_stored",
            "Bytes of secure message content stored",
            message_bytes_stored.clone(),
        );
        registry.register(
            "message_retrievals",
            "Secure message content retrievals",
            retrievals.clone(),
        );
        registry.register(
            "verification_emails",
            "Verification code emails sent",
            verification_emails.clone(),
        );
        registry.register(
            "notification_attempts",
            "Notification sending attempts by outcome (sent, retry, failed)",
            notifications.clone(),
        );
        registry.register(
            "relay_decisions",
            "Decisions about mail to masked addresses (relayed, sent_masked, auto_replied, dropped, refused)",
            relay_decisions.clone(),
        );
        registry.register(
            "sending_ip_blocklisted",
            "Whether a relay sending address is listed by a DNS blocklist (1), not (0), or unknown (-1)",
            blocklisted.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            request_seconds,
            messages_stored,
            message_bytes_stored,
            retrievals,
            verification_emails,
            notifications,
            relay_decisions,
            blocklisted,
        }
    }
}

impl Metrics {
    /// Mirrors the latest blocklist report into the gauges.
    pub fn record_blocklists(&self, report: &crate::blocklist::BlocklistReport) {
        for listing in &report.listings {
            let value = match (&listing.error, listing.listed) {
                (Some(_), _) => -1,
                (None, true) => 1,
                (None, false) => 0,
            };
            self.blocklisted
                .get_or_create(&BlocklistLabels {
                    ip: listing.ip.to_string(),
                    zone: listing.zone.clone(),
                })
                .set(value);
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Middleware counting every request by route pattern and status.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}
