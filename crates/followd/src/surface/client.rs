//! `/v1/client/follow/{command}`: the five follow commands for end users, each with their own
//! UserSig, acting only for themselves. The live notifications are [`super::events`].

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

/// `POST /v1/client/follow/{command}`.
pub async fn follow(
    State(st): State<Arc<AppState>>,
    Path(command): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match Api::resolve_client(&command) {
        Some(api) => pipeline::serve(&st, api, Surface::Client, Incoming { peer, method, headers, query, body }).await,
        None => pipeline::unknown_api(&st, Family::Follow, format!("unknown client API {command}"), false),
    }
}
