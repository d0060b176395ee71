//! The client API for end users: `/v1/client/follow/*` with the user's own UserSig, and live
//! notifications on `/v1/client/events` (a WebSocket).
//!
//! A phone that loses its network leaves a half-open connection: nothing tells the server, and the
//! dead connection would keep one of its user's 16 slots for as long as the kernel keeps the socket
//! (hours). So the server pings every client every `live_ping_interval_ms`, and a client that sends
//! nothing at all (no pong, no frame) for `live_idle_timeout_ms` is disconnected and unregistered.
//! A dead client's slot is free at most `live_idle_timeout_ms` after the last frame it sent.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use followd_protocol::{code, OptPlatform, UserId};
use futures_util::{SinkExt as _, StreamExt as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::UrlParams;
use crate::reply::{envelope, ApiError, Family};
use crate::rest::{serve, Api, Incoming, Surface};
use crate::{now_secs, AppState};

/// How long a notification may take to write before the client counts as too slow.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// How the server finds out that a WebSocket client is gone.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// The server pings each client this often.
    pub ping_every: Duration,
    /// A client that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
}

/// The platform a client declares in `X-Client-Platform`; anything unknown (or `RESTAPI`) is `Unknown`.
pub fn platform(headers: &HeaderMap) -> OptPlatform {
    match headers.get("x-client-platform").and_then(|v| v.to_str().ok()).map(OptPlatform::parse) {
        Some(OptPlatform::RestApi) | None => OptPlatform::Unknown,
        Some(p) => p,
    }
}

/// A refusal of the WebSocket route: the envelope, with an HTTP status a WebSocket client can act on.
fn refuse(request_id: &str, status: StatusCode, e: ApiError) -> Response {
    let mut r = envelope::<()>(Family::Follow, request_id, Err(e));
    *r.status_mut() = status;
    r
}

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
    let request_id = st.next_request_id();
    let started = std::time::Instant::now();
    let Some(api) = Api::resolve("follow", &command) else {
        let e = ApiError::new(code::BAD_URL, format!("unknown client API {command}"));
        return envelope::<()>(Family::Follow, &request_id, Err(e));
    };
    let result = serve(&st, api, Surface::Client, Incoming { peer, method, headers, query, body }, &request_id).await;
    st.metrics.request(api.client_name(), result.is_ok(), started.elapsed());
    envelope(Family::Follow, &request_id, result)
}

/// `GET /v1/client/events`: upgrades to a WebSocket that pushes the caller's notifications.
pub async fn events(
    State(st): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let request_id = st.next_request_id();
    let auth = st
        .apps
        .authenticate(&UrlParams::parse(query.as_deref()), now_secs())
        .and_then(|(app, id)| Ok((app, crate::auth::identifier_user(&id)?)));
    let (app, me) = match auth {
        Ok(a) => a,
        Err(e) => return refuse(&request_id, StatusCode::UNAUTHORIZED, e),
    };
    // A connection counts as a call: a client stuck in a reconnect loop spends its own budget, not
    // the server's (each attempt costs a UserSig check and a registration).
    if let Err(e) = app.check_client_rate(&me, None, now_secs()) {
        return refuse(&request_id, StatusCode::TOO_MANY_REQUESTS, e);
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return (e.status(), e.body_text()).into_response(),
    };
    if !st.live.has_room(app.sdkappid, me.as_str()) {
        let e = ApiError::new(code::RATE_LIMITED, format!("{me} already has {} live connections", crate::live::MAX_DEVICES));
        return refuse(&request_id, StatusCode::TOO_MANY_REQUESTS, e);
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
