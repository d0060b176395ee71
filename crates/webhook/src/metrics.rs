//! Prometheus metrics of the delivery engine.

use followd_graph::outbox::Outcome;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// One of [`Outcome::as_str`].
    pub outcome: String,
}

/// What the delivery engine exports.
pub struct Metrics {
    /// `followd_webhook_attempts_total{outcome}`.
    pub attempts: Family<OutcomeLabel, Counter>,
    /// `followd_webhook_attempt_duration_seconds`.
    pub attempt_seconds: Histogram,
    /// `followd_webhook_dead_events_total`.
    pub dead: Counter,
    /// `followd_webhook_pending_events` (set at scrape time).
    pub pending: Gauge,
    /// `followd_webhook_oldest_pending_age_seconds` (set at scrape time).
    pub oldest_age: Gauge<f64, AtomicU64>,
    /// The last hour per app (the console's charts).
    pub recent: crate::recent::Recent,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            attempts: Family::default(),
            attempt_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            dead: Counter::default(),
            pending: Gauge::default(),
            oldest_age: Gauge::default(),
            recent: crate::recent::Recent::default(),
        }
    }
}

impl Metrics {
    /// Adds the metrics to a registry.
    pub fn register(&self, r: &mut Registry) {
        r.register("followd_webhook_attempts", "Webhook delivery attempts by outcome", self.attempts.clone());
        r.register("followd_webhook_attempt_duration_seconds", "Duration of webhook delivery attempts", self.attempt_seconds.clone());
        r.register("followd_webhook_dead_events", "Events that ran out of retries", self.dead.clone());
        r.register("followd_webhook_pending_events", "Events waiting for delivery or a retry", self.pending.clone());
        r.register("followd_webhook_oldest_pending_age_seconds", "Age of the oldest pending event", self.oldest_age.clone());
    }

    /// Counts one attempt of `app`.
    pub fn attempt(&self, app: followd_graph::AppId, outcome: Outcome, seconds: f64) {
        self.attempts.get_or_create(&OutcomeLabel { outcome: outcome.as_str().to_owned() }).inc();
        self.attempt_seconds.observe(seconds);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.recent.record(app, outcome, (seconds * 1e6) as u64, now);
    }
}
