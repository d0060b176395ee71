//! followd: a self-hosted, wire-compatible stand-in for Tencent Cloud Chat's Follow feature.
//!
//! The binary parses arguments and loads [`config::Config`]; everything else happens in [`run`], which
//! the integration tests call too, on port 0.
//!
//! A request goes down through layers whose imports run one way (a test checks there is no cycle):
//!
//! 1. [`surface`]: the HTTP adapters (REST `/v4`, client `/v1/client`, the WebSocket, `/docs`, probes)
//!    resolve a URL to an API;
//! 2. [`pipeline`]: URL parameters, UserSig, caller, rate limits, body, dispatch, the envelope, and the
//!    one mapping of failures to Tencent codes;
//! 3. [`cmd`]: each command's parsing and application, one file per family;
//! 4. the graph rules (`followd_graph`) and the store (`followd_store`).
//!
//! Beside them: [`state`] (the handles every request shares), [`apps`] (the hosted apps), [`body`]
//! (typed access to a request body), [`bulk`] (the bulk API and `followd export`/`import`/`migrate`), [`console`] (the web console at `/console`), [`docs`] (the OpenAPI document and the reference page), and the
//! background parts ([`live`], [`deletion`], [`health`], [`metrics`], [`net`]).

pub mod apps;
pub mod body;
pub mod bulk;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod console;
pub mod deletion;
pub mod docs;
pub mod health;
pub mod listen;
pub mod live;
pub mod metrics;
pub mod net;
pub mod nodes;
pub mod overload;
pub mod pipeline;
pub mod state;
pub mod surface;

use anyhow::{bail, Context as _};
use followd_graph::outbox::Outbox;
use followd_store::sqlite::Durability;
use followd_store::{Backend, CommitHooks, PgStore, SqliteStore};
use followd_webhook::Dispatcher;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::apps::Apps;
use crate::config::Config;
use crate::state::{AppState, RequestIds};

pub use clock::{now_millis, now_secs};
pub use surface::{router, MAX_BODY_BYTES};

/// Opens the storage backend the configuration names: PostgreSQL when `database_url` is a
/// `postgres://` (or `postgresql://`) URL, else the embedded store in `data_dir`.
pub fn open_store(config: &Config, hooks: CommitHooks) -> anyhow::Result<Backend> {
    if let Some(url) = &config.database_url {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("database_url: only postgres:// URLs are supported; remove the key to use the embedded store");
        }
        // The URL may hold a password: it is never printed.
        let store = PgStore::open(url, hooks, config.max_queued_writes).context("opening the PostgreSQL store (database_url)")?;
        return Ok(Backend::Postgres(Arc::new(store)));
    }
    let durability = if config.durability == "fsync" { Durability::Fsync } else { Durability::Process };
    let store = SqliteStore::open_with(&config.data_dir, durability, hooks, config.max_queued_writes)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    Ok(Backend::Sqlite(Arc::new(store)))
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
    let backend = open_store(&config, hooks)?;
    let (store, outbox) = (backend.store(), backend.outbox());
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
        backend: backend.clone(),
        outbox: outbox.clone(),
        dispatcher,
        metrics,
        proxies: config.proxies()?,
        guard: overload::Guard::new(config.max_concurrent_requests, Duration::from_millis(config.request_timeout_ms)),
        health: health::Health::new(backend.clone(), delivery_up, live_up),
        liveness: live::Liveness {
            ping_every: Duration::from_millis(config.live_ping_interval_ms),
            idle_timeout: Duration::from_millis(config.live_idle_timeout_ms),
        },
        stop: stop_rx.clone(),
        ids: RequestIds::new(),
    });
    if let Backend::Postgres(pg) = &backend {
        let served = config.apps.iter().map(|a| a.sdkappid).collect();
        tokio::spawn(nodes::adopt_loop(pg.clone(), served, state.dispatcher.clone(), stop_rx.clone()));
        tokio::spawn(nodes::overrides_loop(outbox.clone(), apps.clone(), stop_rx.clone()));
    }
    let retention = Duration::from_secs(config.delivery_log_retention_hours * 3600);
    tokio::spawn(purge_loop(outbox, retention, stop_rx.clone()));
    if let Some(path) = config.source.clone() {
        tokio::spawn(reload_loop(path, apps, stop_rx));
    }
    tracing::info!(addr = %listener.local_addr()?, apps = config.apps.len(), data_dir = %config.data_dir.display(), "followd listening");
    note_fd_limit(config.max_connections);
    let limits =
        net::Limits { max_connections: config.max_connections, header_read_timeout: Duration::from_millis(config.header_read_timeout_ms) };
    let served = net::serve(listener, surface::router_with_console(state.clone(), config.console), state, limits, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = delivery.await;
    if let Err(e) = deleting.await {
        tracing::error!(error = %e, "the account deletion task failed");
    }
    drop(store);
    tokio::task::spawn_blocking(move || backend.close()).await?;
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
