//! The Prometheus metrics of the API and the delivery engine (served at `/metrics` by
//! [`crate::surface::probes`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// The media type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of an API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The command word (`follow_add`, …) or `unknown`.
    pub command: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// The command word.
    pub command: &'static str,
}

/// Why a request or connection was refused or cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` open: the connection was answered `60007` and closed.
    Connections,
    /// `max_concurrent_requests` in progress: answered `60007`.
    Requests,
    /// `request_timeout_ms` passed: answered with the family's timeout code.
    Timeout,
}

impl Refusal {
    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::Requests => "requests",
            Refusal::Timeout => "timeout",
        }
    }
}

/// Labels of a refusal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `connections`, `requests` or `timeout` ([`Refusal`]).
    pub reason: &'static str,
}

/// Labels of a component's state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// One of [`crate::health::COMPONENTS`].
    pub component: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The account deletion jobs' metrics: an operator sees a large deletion progress and finish.
#[derive(Clone, Default)]
pub struct DeletionMetrics {
    /// Accounts tombstoned whose edges are still being removed (read from the store at each scrape).
    pub in_progress: Gauge,
    /// Edges removed by account deletions, in the API's transaction or by the background job.
    pub edges_removed: Counter,
    /// Transactions of the background job.
    pub chunks: Counter,
}

/// Every metric the server exports.
pub struct ServerMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<CommandLabels, Histogram, fn() -> Histogram>,
    /// The delivery engine's metrics.
    pub webhook: Arc<followd_webhook::metrics::Metrics>,
    live_connections: Gauge,
    live_dropped: Gauge,
    /// Account deletion jobs.
    pub deletions: DeletionMetrics,
    refusals: Family<RefusalLabels, Counter>,
    components: Family<ComponentLabels, Gauge>,
    /// Open HTTP and WebSocket connections.
    pub open_connections: Gauge,
    queued_writes: Gauge,
    refused_writes: Gauge,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<CommandLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("followd_api_requests", "API requests by command and result", requests.clone());
        registry.register("followd_api_request_duration_seconds", "API request latency by command", latency.clone());
        let webhook = Arc::new(followd_webhook::metrics::Metrics::default());
        webhook.register(&mut registry);
        let (live_connections, live_dropped) = (Gauge::default(), Gauge::default());
        registry.register("followd_live_connections", "Connected WebSocket clients", live_connections.clone());
        registry.register(
            "followd_live_dropped_clients",
            "WebSocket clients dropped for not keeping up, since start",
            live_dropped.clone(),
        );
        let deletions = DeletionMetrics::default();
        registry.register(
            "followd_account_deletions_in_progress",
            "Deleted accounts whose edges are still being removed",
            deletions.in_progress.clone(),
        );
        registry.register(
            "followd_account_deletion_edges_removed",
            "Edges removed by account deletions, since start",
            deletions.edges_removed.clone(),
        );
        registry.register(
            "followd_account_deletion_chunks",
            "Transactions of the background account deletion job, since start",
            deletions.chunks.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "followd_overload_refusals",
            "Requests and connections refused or cut short by a limit, by reason",
            refusals.clone(),
        );
        let components = Family::<ComponentLabels, Gauge>::default();
        registry.register(
            "followd_component_up",
            "1 while a component (writer, checkpointer, delivery, live) runs, 0 once it died",
            components.clone(),
        );
        let (open_connections, queued_writes, refused_writes) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("followd_open_connections", "Open HTTP and WebSocket connections", open_connections.clone());
        registry.register("followd_write_queue_jobs", "Write jobs waiting for the writer", queued_writes.clone());
        registry.register(
            "followd_write_queue_refusals",
            "API writes refused because the write queue was full, since start",
            refused_writes.clone(),
        );
        ServerMetrics {
            registry,
            requests,
            latency,
            webhook,
            live_connections,
            live_dropped,
            refusals,
            components,
            open_connections,
            queued_writes,
            refused_writes,
            deletions,
        }
    }
}

impl ServerMetrics {
    /// Counts one API request.
    pub fn request(&self, command: &'static str, ok: bool, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { command, result: if ok { "ok" } else { "error" } }).inc();
        self.latency.get_or_create(&CommandLabels { command }).observe(elapsed.as_secs_f64());
    }

    /// Counts one refusal.
    pub fn refused(&self, reason: Refusal) {
        self.refusals.get_or_create(&RefusalLabels { reason: reason.label() }).inc();
    }
}

/// What a scrape reads from the parts that own it, besides the counters kept here.
pub struct Scrape {
    /// Pending webhook events.
    pub pending: u64,
    /// Age of the oldest pending event, seconds.
    pub oldest_age_secs: f64,
    /// Connected WebSocket clients.
    pub live_connections: usize,
    /// WebSocket clients dropped for being too slow, since start.
    pub live_dropped: u64,
    /// Deleted accounts whose edges are still being removed (`None` when it could not be read).
    pub deletions_in_progress: Option<usize>,
    /// Each component and whether it runs.
    pub components: [(&'static str, bool); 4],
    /// Write jobs waiting for the writer.
    pub queued_writes: usize,
    /// API writes refused because the write queue was full, since start.
    pub refused_writes: u64,
}

impl ServerMetrics {
    /// Records `s` and encodes every metric as OpenMetrics text.
    pub fn encode(&self, s: Scrape) -> String {
        self.webhook.pending.set(s.pending as i64);
        self.webhook.oldest_age.set(s.oldest_age_secs);
        self.live_connections.set(s.live_connections as i64);
        self.live_dropped.set(s.live_dropped as i64);
        if let Some(n) = s.deletions_in_progress {
            self.deletions.in_progress.set(n as i64);
        }
        for (component, up) in s.components {
            self.components.get_or_create(&ComponentLabels { component }).set(up as i64);
        }
        self.queued_writes.set(s.queued_writes as i64);
        self.refused_writes.set(s.refused_writes as i64);
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        text
    }
}
