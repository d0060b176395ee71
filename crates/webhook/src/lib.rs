//! The delivery engine: every committed `Follow.*` event reaches the app's backend, byte for byte as
//! Tencent Cloud Chat would send it, at least once, in order per user (decisions.md §4).
//!
//! - [`client`] builds and sends one attempt: the exact URL, body and headers, a timeout, no redirects,
//!   at most 64 KiB read.
//! - [`ssrf`] decides which destinations an app may reach (the address checked is the address
//!   connected to); link-local and cloud metadata addresses never.
//! - [`dispatcher`] decides what to send when: one event in flight per (app, From_Account), retries
//!   with jitter and `Retry-After`, a circuit breaker and an in-flight cap per endpoint, and batched
//!   writes of the delivery log.
//! - [`metrics`] exports what it does; [`recent`] keeps its last hour per app for the console.

pub mod breaker;
pub mod client;
pub mod dispatcher;
pub mod metrics;
pub mod recent;
pub mod ssrf;
mod window;

use followd_graph::{AppId, Subscriptions};
use std::sync::Arc;
use std::time::Duration;

pub use dispatcher::{Dispatcher, Stats};

/// The default retry schedule: attempts after 1 s, 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h, 12 h.
pub const DEFAULT_SCHEDULE_MS: [u64; 10] =
    [1_000, 5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 10_800_000, 21_600_000, 43_200_000];

/// Where and how one app's webhooks are sent, as in force right now.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The configured URL (the query is appended to it).
    pub url: String,
    /// Which commands the app wants.
    pub subscriptions: Subscriptions,
    /// Adds `Sign` and `RequestTime` when set (and enabled).
    pub token: Option<String>,
    /// Adds `webhook-signature` when set.
    pub signing_secret: Option<String>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Delays before each retry; empty means one attempt only (`retry = "none"`).
    pub schedule: Vec<Duration>,
    /// Allow loopback and private destinations (never link-local or cloud metadata ones).
    pub allow_private: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("subscriptions", &self.subscriptions)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("signing_secret", &self.signing_secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("schedule", &self.schedule)
            .field("allow_private", &self.allow_private)
            .finish()
    }
}

/// Looks up the endpoint of an app at the moment of an attempt, so configuration changes apply at once.
pub trait Endpoints: Send + Sync + 'static {
    /// The app's endpoint, or `None` when it has no webhook.
    fn endpoint(&self, app: AppId) -> Option<Arc<Endpoint>>;
    /// Every app that can owe events (each gets its share of the delivery memory).
    fn apps(&self) -> Vec<AppId>;
}
