//! `/v4/{service}/{command}`: the Tencent-compatible REST API (`follow`, `im_open_login_svc`) and
//! the webhook admin API (`callback_config`), for an app's admins (protocol.md §3–4).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use followd_protocol::api::{Api, Family};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::pipeline::{self, Incoming, Surface};
use crate::state::AppState;

/// The handler of every `/v4/{service}/{command}` request.
pub async fn handle(
    State(st): State<Arc<AppState>>,
    Path((service, command)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match Api::resolve(&service, &command) {
        Some(api) => pipeline::serve(&st, api, Surface::Rest, Incoming { peer, method, headers, query, body }).await,
        None => pipeline::unknown_api(&st, Family::Account, format!("unknown API v4/{service}/{command}"), true),
    }
}
