//! `/healthz`, `/readyz` and `/metrics`: outside the request limit, so they answer under overload.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use crate::clock::now_millis;
use crate::metrics::Scrape;
use crate::state::AppState;

/// `GET /healthz`: `ok`, or HTTP 503 naming each component that is down.
pub async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let down = st.health.down();
    if down.is_empty() {
        return "ok".into_response();
    }
    (StatusCode::SERVICE_UNAVAILABLE, format!("down: {}\n", down.join(", "))).into_response()
}

/// `GET /readyz`: `ready` once the store is open and delivery is running (every component up), and
/// until shutdown begins; HTTP 503 otherwise, with the reason.
pub async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let down = st.health.down();
    if st.health.stopping() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down\n").into_response();
    }
    if !down.is_empty() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: down: {}\n", down.join(", "))).into_response();
    }
    "ready".into_response()
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let stats = st.dispatcher.stats().await;
    // Past the in-memory window the outbox is the only complete count.
    let pending = if stats.spilled { st.outbox.count_pending().await.unwrap_or(stats.pending as u64) } else { stats.pending as u64 };
    let deletions = match followd_graph::read(&*st.store, |v| Ok(v.deletions()?.len())).await {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count the unfinished account deletions");
            None
        }
    };
    let (queued_writes, refused_writes) = st.health.write_queue();
    let text = st.metrics.encode(Scrape {
        pending,
        oldest_age_secs: stats.oldest_created_ms.map_or(0.0, |t| (now_millis() - t).max(0) as f64 / 1000.0),
        live_connections: st.live.connections(),
        live_dropped: st.live.dropped(),
        deletions_in_progress: deletions,
        components: st.health.components(),
        queued_writes,
        refused_writes,
    });
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}
