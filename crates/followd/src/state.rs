//! What every surface and the pipeline share: the handles [`crate::run`] builds once and every
//! request reads. Only data lives here; the modules that act on it sit above (surfaces, pipeline) or
//! below (the registries it holds), so the state never imports the code that uses it.

use followd_graph::outbox::Outbox;
use followd_graph::Store;
use followd_webhook::Dispatcher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::apps::Apps;
use crate::{deletion, health, live, metrics, overload};

/// What every handler shares.
pub struct AppState {
    /// The hosted apps.
    pub apps: Arc<Apps>,
    /// The storage backend.
    pub store: Arc<dyn Store>,
    /// The same backend, for what only it knows (a PostgreSQL node's place among the others).
    pub backend: followd_store::Backend,
    /// The webhook outbox of the same backend.
    pub outbox: Arc<dyn Outbox>,
    /// The delivery engine.
    pub dispatcher: Dispatcher,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::ServerMetrics>,
    /// Connected WebSocket clients.
    pub live: Arc<live::Live>,
    /// Account deletion jobs.
    pub deletions: deletion::Deletions,
    /// Trusted proxies for `ClientIP`.
    pub proxies: Vec<ipnet::IpNet>,
    /// The concurrency limit and deadline of API requests.
    pub guard: overload::Guard,
    /// Whether the writer, checkpointer, delivery and live fan-out are running.
    pub health: health::Health,
    /// Ping interval and idle timeout of WebSocket clients.
    pub liveness: live::Liveness,
    /// Becomes true when the server stops: WebSocket sessions close.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Request ids.
    pub ids: RequestIds,
}

impl AppState {
    /// A new request id: unique within this process and distinguishable across restarts.
    pub fn next_request_id(&self) -> String {
        self.ids.next()
    }
}

/// Makes `RequestId`s: a random boot number and a counter.
pub struct RequestIds {
    boot: u32,
    seq: AtomicU64,
}

impl RequestIds {
    /// A new sequence with a random boot number.
    pub fn new() -> Self {
        RequestIds { boot: rand::random(), seq: AtomicU64::new(1) }
    }

    /// The next id.
    pub fn next(&self) -> String {
        format!("{:08x}-{:x}", self.boot, self.seq.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}
