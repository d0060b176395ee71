//! followd: a self-hosted, wire-compatible stand-in for Tencent Cloud Chat's Follow feature.
//!
//! The binary parses arguments and loads [`config::Config`]; everything else happens in [`run`], which
//! the integration tests call too, on port 0.

pub mod auth;
pub mod body;
pub mod config;
pub mod reply;
pub mod rest;

use anyhow::{bail, Context as _};
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use followd_graph::Store;
use followd_protocol::code;
use followd_store::sqlite::Durability;
use followd_store::{CommitHooks, SqliteStore};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::Apps;
use crate::config::Config;
use crate::reply::{envelope, ApiError, Family};

/// The largest request body accepted (`60002` above it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Current Unix time in seconds.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What every handler shares.
pub struct AppState {
    /// The hosted apps.
    pub apps: Apps,
    /// The storage backend.
    pub store: Arc<dyn Store>,
    /// Trusted proxies for `ClientIP`.
    pub proxies: Vec<ipnet::IpNet>,
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
    Router::new()
        .route("/v4/{service}/{command}", any(rest::handle))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
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
    let store = SqliteStore::open(&config.data_dir, durability, hooks)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    Ok(Arc::new(store))
}

/// Serves the APIs on `listener` until `shutdown` resolves, then finishes in-flight requests and
/// commits everything queued before returning.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let store = open_store(&config, CommitHooks::default())?;
    let state = Arc::new(AppState {
        apps: Apps::new(&config.apps),
        store: store.clone(),
        proxies: config.proxies()?,
        boot: rand::random(),
        seq: AtomicU64::new(1),
    });
    tracing::info!(addr = %listener.local_addr()?, apps = config.apps.len(), data_dir = %config.data_dir.display(), "followd listening");
    let served =
        axum::serve(listener, router(state).into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(shutdown).await;
    tokio::task::spawn_blocking(move || store.close()).await?;
    tracing::info!("followd stopped");
    served.context("serving HTTP")
}
