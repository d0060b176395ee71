//! `/v1/client/events`: live notifications for end users over a WebSocket, with the user's own
//! UserSig in the URL (the messages are `followd_protocol::api::reply::LiveMessage`).
//!
//! A phone that loses its network leaves a half-open connection: nothing tells the server, and the
//! dead connection would keep one of its user's 16 slots for as long as the kernel keeps the socket
//! (hours). So the server pings every client every `live_ping_interval_ms`, and a client that sends
//! nothing at all (no pong, no frame) for `live_idle_timeout_ms` is disconnected and unregistered.
//! A dead client's slot is free at most `live_idle_timeout_ms` after the last frame it sent.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use followd_protocol::api::{ApiError, Family};
use followd_protocol::{code, UserId};
use futures_util::{SinkExt as _, StreamExt as _};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_secs;
use crate::live::Liveness;
use crate::pipeline::auth::{self, UrlParams};
use crate::pipeline::reply::refuse;
use crate::state::AppState;

/// How long a notification may take to write before the client counts as too slow.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A refusal of the WebSocket route: the envelope, with an HTTP status a WebSocket client can act on.
fn refuse_with(request_id: &str, status: StatusCode, e: ApiError) -> Response {
    let mut r = refuse(Family::Follow, request_id, e);
    *r.status_mut() = status;
    r
}

/// How long a WebSocket waits at most for its node to be sent the other nodes' changes (PostgreSQL).
const PREPARE_TIMEOUT: Duration = Duration::from_secs(15);

/// `GET /v1/client/events`: upgrades to a WebSocket that pushes the caller's notifications.
pub async fn events(
    State(st): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let request_id = st.next_request_id();
    let auth = auth::authenticate(&st.apps, &UrlParams::parse(query.as_deref()), now_secs())
        .and_then(|(app, id)| Ok((app, auth::identifier_user(&id)?)));
    let (app, me) = match auth {
        Ok(a) => a,
        Err(e) => return refuse_with(&request_id, StatusCode::UNAUTHORIZED, e),
    };
    // A connection counts as a call: a client stuck in a reconnect loop spends its own budget, not
    // the server's (each attempt costs a UserSig check and a registration).
    if let Err(e) = app.check_client_rate(&me, None, now_secs()) {
        return refuse_with(&request_id, StatusCode::TOO_MANY_REQUESTS, e);
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return (e.status(), e.body_text()).into_response(),
    };
    if !st.live.has_room(app.sdkappid, me.as_str()) {
        let e = ApiError::new(code::RATE_LIMITED, format!("{me} already has {} live connections", crate::live::MAX_DEVICES));
        return refuse_with(&request_id, StatusCode::TOO_MANY_REQUESTS, e);
    }
    // On PostgreSQL, the other nodes send this one their changes from now on (their writers skip
    // NOTIFY while no node has live clients). A node that cannot ask refuses rather than connect a
    // client that would miss them.
    match tokio::time::timeout(PREPARE_TIMEOUT, st.backend.prepare_live_client()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let e = crate::pipeline::reply::from_graph(e.into(), Family::Follow, &request_id);
            return refuse_with(&request_id, StatusCode::SERVICE_UNAVAILABLE, e);
        }
        Err(_) => {
            let e = ApiError::new(code::FOLLOW_TIMEOUT, format!("the database did not answer in time; retry (RequestId {request_id})"));
            return refuse_with(&request_id, StatusCode::SERVICE_UNAVAILABLE, e);
        }
    }
    let sdkappid = app.sdkappid;
    // Small buffers: a connected client should cost a few KiB, not tungstenite's 128 KiB default.
    ws.read_buffer_size(1024).write_buffer_size(0).max_message_size(64 * 1024).on_upgrade(move |socket| session(socket, st, sdkappid, me))
}

async fn session(socket: WebSocket, st: Arc<AppState>, app: u64, me: UserId) {
    // Checked before the upgrade; a race with another device connecting at the same moment ends here.
    let Some((id, mut queue)) = st.live.register(app, me.as_str()) else { return };
    let (mut sink, mut incoming) = socket.split();
    let Liveness { ping_every, idle_timeout } = st.liveness;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut stop = st.stop.clone();
    let close = loop {
        tokio::select! {
            msg = queue.recv() => match msg {
                Some(text) => match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(text.as_ref().into()))).await {
                    Ok(Ok(())) => {}
                    _ => break None,
                },
                // The registry dropped this connection: the client did not keep up.
                None => break Some((1008, "too slow")),
            },
            frame = incoming.next() => match frame {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                // Any frame, a pong included, shows the client is there.
                Some(Ok(_)) => idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout),
            },
            _ = ping.tick() => {
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Ping(Default::default()))).await, Ok(Ok(()))) {
                    break None;
                }
            }
            () = &mut idle => {
                tracing::debug!(app, user = %me, "live client silent past the idle timeout; disconnected");
                break Some((1001, "idle timeout"));
            }
            _ = stop.changed() => break Some((1001, "server shutting down")),
        }
    };
    // The slot is free before the goodbye, which a dead client will never read.
    st.live.unregister(app, me.as_str(), id);
    if let Some((code, reason)) = close {
        let frame = Message::Close(Some(axum::extract::ws::CloseFrame { code, reason: reason.into() }));
        let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(frame)).await;
    }
}
