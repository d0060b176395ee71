//! The surfaces: thin HTTP adapters that resolve a URL to an API and hand the request to the
//! [`crate::pipeline`]. Each file is one surface:
//!
//! | route | file |
//! | --- | --- |
//! | `POST /v4/{service}/{command}` (REST API and webhook admin API) | [`rest`] |
//! | `POST /v1/client/follow/{command}` (client API) | [`client`] |
//! | `GET /v1/client/events` (client WebSocket) | [`events`] |
//! | `GET /openapi.json`, `GET /docs`, `GET /docs/style.css` | [`docs`] |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | [`probes`] |
//! | `/console/…` (the web console, unless `console = false`) | [`crate::console`] |
//! | `POST /bulk/v1/export`, `/bulk/v1/import`, `/bulk/v1/sweep` (admin bulk API) | [`crate::bulk::server`] |
//!
//! [`overload`] wraps the API routes (concurrency limit, deadline); everything else answers under
//! overload. A path that is none of these gets HTTP 404, or under `/v4/` the `60009` envelope.

pub mod client;
pub mod docs;
pub mod events;
pub mod overload;
pub mod probes;
pub mod rest;

use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use followd_protocol::api::{ApiError, Family};
use followd_protocol::code;
use std::sync::Arc;

use crate::pipeline::reply::refuse;
use crate::state::AppState;

/// The largest request body accepted (`60002` above it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

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
        .route("/v1/client/events", get(events::events))
        .route("/openapi.json", get(docs::openapi))
        .route("/docs", get(docs::page))
        .route("/docs/style.css", get(docs::style))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        // Outside the concurrency limit and deadline: an export streams for as long as it takes.
        .route("/bulk/v1/export", any(crate::bulk::server::export))
        .route("/bulk/v1/import", any(crate::bulk::server::import).layer(DefaultBodyLimit::max(crate::bulk::MAX_IMPORT_BODY)))
        .route("/bulk/v1/sweep", any(crate::bulk::server::sweep))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// [`router`] plus the web console's routes when `console` is on. The console adds routes only: no
/// layer of its own touches the API routes.
pub fn router_with_console(state: Arc<AppState>, console: bool) -> Router {
    let api = router(state.clone());
    if console {
        api.merge(crate::console::router(state))
    } else {
        api
    }
}

async fn fallback(uri: Uri) -> Response {
    if uri.path().starts_with("/v4/") {
        let e = ApiError::new(code::BAD_URL, format!("unknown API {}", uri.path()));
        return refuse(Family::Account, "-", e);
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}
