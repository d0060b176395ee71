//! followd: a self-hosted, wire-compatible stand-in for Tencent Cloud Chat's Follow feature.
//!
//! The binary parses arguments and loads [`config::Config`]; everything else happens in [`run`], which
//! the integration tests call too, on port 0.

pub mod admin;
pub mod auth;
pub mod body;
pub mod client;
pub mod config;
pub mod deletion;
pub mod health;
pub mod listen;
pub mod live;
pub mod metrics;
pub mod net;
pub mod overload;
pub mod reply;
pub mod rest;

use anyhow::{bail, Context as _};
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use followd_graph::outbox::Outbox;
use followd_graph::Store;
use followd_protocol::code;
use followd_store::sqlite::Durability;
use followd_store::{CommitHooks, SqliteStore};
use followd_webhook::Dispatcher;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::Apps;
use crate::config::Config;
use crate::reply::{envelope, ApiError, Family};

/// The largest request body accepted (`60002` above it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Current Unix time in seconds.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Current Unix time in milliseconds.
pub fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// What every handler shares.
pub struct AppState {
    /// The hosted apps.
    pub apps: Arc<Apps>,
    /// The storage backend.
    pub store: Arc<dyn Store>,
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
    pub liveness: client::Liveness,
    /// Becomes true when the server stops: WebSocket sessions close.
    pub stop: tokio::sync::watch::Receiver<bool>,
    boot: u32,
    seq: AtomicU64,
}

impl AppState {
    /// A new request id: unique within this process and distinguishable across restarts.
    pub fn next_request_id(&self) -> String {
        format!("{:08x}-{:x}", self.boot, self.seq.fetch_add(1, Ordering::Relaxed))
    }
}

/// The HTTP routes.
pub fn router(state: Arc<AppState>) -> Router {
    // Only the API routes go through the concurrency limit and deadline: health and metrics must
    // answer under overload, and a WebSocket outlives any request deadline.
    let api = Router::new()
        .route("/v4/{service}/{command}", any(rest::handle))
        .route("/v1/client/follow/{command}", any(client::follow))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), overload::guard));
    Router::new()
        .merge(api)
        .route("/v1/client/events", get(client::events))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::handle))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The OpenAPI 3 document of the client and admin APIs (checked against the routes by the tests).
pub const OPENAPI: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn fallback(uri: Uri) -> Response {
    if uri.path().starts_with("/v4/") {
        let e = ApiError::new(code::BAD_URL, format!("unknown API {}", uri.path()));
        return envelope::<()>(Family::Account, "-", Err(e));
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Opens the storage backend the configuration names.
pub fn open_store(config: &Config, hooks: CommitHooks) -> anyhow::Result<Arc<SqliteStore>> {
    if config.database_url.is_some() {
        bail!("database_url: the PostgreSQL backend is not available in this version; remove the key to use the embedded store");
    }
    let durability = if config.durability == "fsync" { Durability::Fsync } else { Durability::Process };
    let store = SqliteStore::open_with(&config.data_dir, durability, hooks, config.max_queued_writes)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    Ok(Arc::new(store))
}

/// Serves the APIs on `listener` until `shutdown` resolves, then finishes in-flight requests, closes
/// WebSockets, lets in-flight webhook attempts end, and commits everything queued before returning.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let hooks = CommitHooks { events: Some(events_tx), ..CommitHooks::default() };
    let changes = hooks.changes.subscribe();
    let live = Arc::new(live::Live::new(hooks.live_clients.clone()));
    let store = open_store(&config, hooks)?;
    let outbox: Arc<dyn Outbox> = store.clone();
    let apps = Arc::new(Apps::new(&config.apps));
    for (app, over) in outbox.load_overrides().await? {
        if let Some(a) = apps.get(app) {
            a.set_webhook_override(over);
        }
    }
    let metrics = Arc::new(metrics::ServerMetrics::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (dispatcher, delivery) = Dispatcher::start(
        outbox.clone(),
        apps.clone(),
        events_rx,
        metrics.webhook.clone(),
        stop_rx.clone(),
        config.delivery_queue_in_memory,
    )
    .await?;
    let (delivery_up, delivery) = health::watch_handle("delivery", delivery, stop_rx.clone());
    let (live_up, _) = health::watch("live", live::fan_out(live.clone(), store.clone(), changes), stop_rx.clone());
    let (deletions, deleting) =
        deletion::Deletions::start(store.clone(), config.deletion_chunk_edges, metrics.deletions.clone(), stop_rx.clone());
    let state = Arc::new(AppState {
        live,
        deletions,
        apps: apps.clone(),
        store: store.clone(),
        outbox: outbox.clone(),
        dispatcher,
        metrics,
        proxies: config.proxies()?,
        guard: overload::Guard::new(config.max_concurrent_requests, Duration::from_millis(config.request_timeout_ms)),
        health: health::Health::new(store.clone(), delivery_up, live_up),
        liveness: client::Liveness {
            ping_every: Duration::from_millis(config.live_ping_interval_ms),
            idle_timeout: Duration::from_millis(config.live_idle_timeout_ms),
        },
        stop: stop_rx.clone(),
        boot: rand::random(),
        seq: AtomicU64::new(1),
    });
    let retention = Duration::from_secs(config.delivery_log_retention_hours * 3600);
    tokio::spawn(purge_loop(outbox, retention, stop_rx.clone()));
    if let Some(path) = config.source.clone() {
        tokio::spawn(reload_loop(path, apps, stop_rx));
    }
    tracing::info!(addr = %listener.local_addr()?, apps = config.apps.len(), data_dir = %config.data_dir.display(), "followd listening");
    note_fd_limit(config.max_connections);
    let limits =
        net::Limits { max_connections: config.max_connections, header_read_timeout: Duration::from_millis(config.header_read_timeout_ms) };
    let served = net::serve(listener, router(state.clone()), state, limits, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = delivery.await;
    if let Err(e) = deleting.await {
        tracing::error!(error = %e, "the account deletion task failed");
    }
    tokio::task::spawn_blocking(move || store.close()).await?;
    tracing::info!("followd stopped");
    served.context("serving HTTP")
}

/// Says so at start when the open-file limit is below `max_connections`: past the limit, accepting
/// pauses instead of refusing with `60007` (Linux; elsewhere nothing is said).
fn note_fd_limit(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return };
    let soft = limits.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok());
    if let Some(soft) = soft.filter(|&soft| soft < max_connections + 64) {
        tracing::warn!(
            open_file_limit = soft,
            max_connections,
            "the open-file limit is below max_connections: past it new connections wait; raise `ulimit -n` or lower max_connections"
        );
    }
}

/// Deletes delivered events older than the retention, at start and every ten minutes.
async fn purge_loop(outbox: Arc<dyn Outbox>, retention: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let before = now_millis() - retention.as_millis() as i64;
        match outbox.purge_delivered(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "purged delivered events past the retention"),
            Err(e) => tracing::warn!(error = %e, "cannot purge the delivery log"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    }
}

/// Re-reads the config file when it changes (checked every second) and applies its `[apps.webhook]`
/// sections without a restart. Other keys need a restart; the log says so.
async fn reload_loop(path: std::path::PathBuf, apps: Arc<Apps>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = stamp(&path);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match Config::load(&path) {
            Ok(c) => {
                for a in &c.apps {
                    match apps.get(a.sdkappid) {
                        Some(app) => app.set_webhook_file(a.webhook.clone()),
                        None => tracing::warn!(sdkappid = a.sdkappid, "a new app in the config file needs a restart"),
                    }
                }
                tracing::info!(path = %path.display(), "config file changed: webhook settings reloaded (other keys apply at the next start)");
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = format!("{e:#}"), "config file changed but is invalid; keeping the old settings")
            }
        }
    }
}
