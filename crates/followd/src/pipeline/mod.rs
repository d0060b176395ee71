//! The request pipeline every API surface shares: from a request as it arrived to the answer.
//!
//! 1. the method (`POST` only) and the body's bytes (`60002`);
//! 2. the URL parameters and the UserSig ([`auth`]), then who may call: an app admin on the REST
//!    API, any user of the app (acting only for itself) on the client API; the rate limits;
//! 3. the body as a JSON object ([`Body`], `60003`);
//! 4. the command, parsed ([`Command::parse`]) and applied ([`Command::apply`]);
//! 5. the answer: the envelope ([`reply::envelope`]) with the failure mapped to a code in one place
//!    ([`reply::refusal`]), the request counted in the metrics.
//!
//! The surfaces (`crate::surface`) only resolve their URL to an [`Api`] and hand the request here.

pub mod auth;
pub mod reply;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use followd_protocol::api::{Api, ApiError, Family};
use followd_protocol::{code, OptPlatform};
use std::net::SocketAddr;
use std::time::Instant;

use crate::body::Body;
use crate::clock::now_secs;
use crate::cmd::{Caller, Command, Ctx, Reply};
use crate::state::AppState;
use auth::UrlParams;

/// An API request as it arrived, before anything is checked.
pub struct Incoming {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The HTTP method.
    pub method: Method,
    /// The headers.
    pub headers: HeaderMap,
    /// The raw query string.
    pub query: Option<String>,
    /// The body, or why it could not be read.
    pub body: Result<Bytes, BytesRejection>,
}

/// Where a request came in, which decides who may call and what the webhooks say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The admin REST API (`/v4/…`): an app admin's UserSig; `OptPlatform=RESTAPI`.
    Rest,
    /// The client API (`/v1/client/…`): an end user's own UserSig, acting only for itself;
    /// `OptPlatform` from `X-Client-Platform`.
    Client,
}

impl Surface {
    /// The name of `api` in the metrics of this surface.
    pub fn metric_name(self, api: Api) -> &'static str {
        match self {
            Surface::Rest => api.name(),
            Surface::Client => api.client_name(),
        }
    }
}

/// Serves one request to `api` on `surface`: checks, runs, answers, counts.
pub async fn serve(st: &AppState, api: Api, surface: Surface, req: Incoming) -> Response {
    let request_id = st.next_request_id();
    let started = Instant::now();
    let result = run(st, api, surface, req, &request_id).await;
    if let Err(e) = &result {
        tracing::debug!(request_id, api = api.name(), code = e.code, info = %e.info, "refused");
    }
    st.metrics.request(surface.metric_name(api), result.is_ok(), started.elapsed());
    reply::envelope(api.family(), &request_id, &result)
}

/// Answers a request whose URL names no API (`60009`); `metric` counts it as `unknown`.
pub fn unknown_api(st: &AppState, family: Family, info: String, metric: bool) -> Response {
    let request_id = st.next_request_id();
    if metric {
        st.metrics.request("unknown", false, std::time::Duration::ZERO);
    }
    reply::refuse(family, &request_id, ApiError::new(code::BAD_URL, info))
}

async fn run(st: &AppState, api: Api, surface: Surface, req: Incoming, request_id: &str) -> Result<Reply, ApiError> {
    if req.method != Method::POST {
        return Err(ApiError::new(code::HTTP_PARSE, "only POST is allowed"));
    }
    let bytes = req.body.map_err(|e| ApiError::new(code::HTTP_PARSE, format!("cannot read the request body: {e}")))?;
    let now = now_secs();
    let params = UrlParams::parse(req.query.as_deref());
    let (app, caller, platform) = match surface {
        Surface::Rest => {
            let app = auth::authenticate_admin(&st.apps, &params, api.family(), now)?;
            app.check_rest_rate(api)?;
            (app, Caller::Admin, OptPlatform::RestApi)
        }
        Surface::Client => {
            let (app, identifier) = auth::authenticate(&st.apps, &params, now)?;
            let me = auth::identifier_user(&identifier)?;
            // A budget per user, apart from the admin REST API's: one user cannot use up anyone else's.
            app.check_client_rate(&me, Some(api), now)?;
            (app, Caller::User(me), auth::platform(&req.headers))
        }
    };
    let body = Body::parse(&bytes, api.family())?;
    let command = Command::parse(api, &caller, &body)?;
    let xff = req.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let cx = Ctx {
        app: &app,
        store: &*st.store,
        outbox: &*st.outbox,
        dispatcher: &st.dispatcher,
        deletions: &st.deletions,
        request_id,
        client_ip: auth::client_ip(req.peer, xff, &st.proxies),
        platform,
    };
    command.apply(&cx).await.map_err(|f| reply::refusal(f, api.family(), request_id))
}

/// The codes every API of `family` may answer on `surface`, whatever its body: the URL, the
/// UserSig, the caller, the body's shape, the limits. [`crate::cmd::spec`] lists each command's own.
pub fn common_errors(family: Family, surface: Surface) -> Vec<(u32, &'static str)> {
    let mut v = vec![
        (code::HTTP_PARSE, "not POST, or the body could not be read (over 64 KiB)"),
        (code::JSON_PARSE, "the body is empty, not JSON, or not a JSON object"),
        (code::MISSING_SDKAPPID, "sdkappid is missing or not a number"),
        (code::UNKNOWN_SDKAPPID, "no app with this sdkappid"),
        (code::BAD_URL_PARAMS, "identifier missing (client API: not a valid UserID), or contenttype not json"),
        (code::USERSIG_EMPTY, "usersig is missing"),
        (code::USERSIG_INVALID, "usersig cannot be decoded"),
        (code::USERSIG_SDKAPPID, "the UserSig was made for another sdkappid"),
        (code::USERSIG_IDENTIFIER, "the UserSig was made for another identifier"),
        (code::USERSIG_EXPIRED, "the UserSig has expired"),
        (code::USERSIG_MISMATCH, "the UserSig's signature does not match the app's key"),
    ];
    if surface == Surface::Rest {
        v.push((family.not_admin(), "identifier is not an app admin"));
    }
    v.push((
        code::RATE_LIMITED,
        match surface {
            Surface::Rest => "server busy (too many requests or connections, write queue full) or over rate_limit_per_second; retry",
            Surface::Client => "server busy, or over the user's own budget (client_rate_limit_per_second; follow_check: client_check_calls per window); retry",
        },
    ));
    let late = "not finished within request_timeout_ms (a write was not applied unless it was committing); retry";
    let internal = "internal error, logged under the RequestId; retry";
    let closing = "the server is shutting down; retry";
    match family {
        Family::Follow => v.extend([
            (family.timeout(), "not finished within request_timeout_ms, or the server is shutting down; retry"),
            (family.internal(), internal),
        ]),
        Family::Account => v.extend([(family.timeout(), late), (code::FOLLOW_TIMEOUT, closing), (family.internal(), internal)]),
        Family::Config => v.extend([
            (family.internal(), "internal error (logged under the RequestId), or not finished within request_timeout_ms; retry"),
            (code::FOLLOW_TIMEOUT, closing),
        ]),
    }
    v
}
