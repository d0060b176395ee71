//! Overload and deadlines for the API routes (`/v4/…` and `/v1/client/follow/…`).
//!
//! Past `max_concurrent_requests` in progress, a request is answered at once with `60007` ("server
//! busy, retry"), the code Tencent gives for an exceeded rate, which SDKs and scripts already retry.
//! A request that cannot finish within `request_timeout_ms` (3 s by default, Tencent's own REST
//! limit) is answered with its family's timeout code: `30007` for the follow APIs, `70169` for the
//! account APIs, `100001` (internal error, retry) for `callback_config`. Both answers are the usual
//! envelope with HTTP 200 (decisions.md §3).
//!
//! This wraps the handlers rather than living in them so that the deadline also covers reading the
//! body: a client that trickles its body would otherwise hold its connection and its slot forever.
//! The cost per request is one semaphore try and one timer.
//!
//! A write that timed out was not applied unless the writer was already committing it: the write
//! job checks that its caller is still waiting before running the rules (`followd_graph::try_write`).
//! Every write is idempotent, so retrying after a timeout is safe.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use followd_protocol::api::{Api, ApiError, Family};
use followd_protocol::code;
use std::sync::Arc;

use crate::metrics::Refusal;
use crate::pipeline::reply::refuse;
use crate::state::AppState;

/// The error family of an API path, for the codes of a refusal made before the handler runs.
pub fn family_of(path: &str) -> Family {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some("client"), _) => Family::Follow,
        (Some("v4"), Some(service), Some(command)) => Api::resolve(service, command).map_or(Family::Account, Api::family),
        _ => Family::Account,
    }
}

/// The middleware: a slot or `60007` at once, then the handler within the deadline or the timeout code.
pub async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let family = family_of(req.uri().path());
    let Some(_permit) = st.guard.enter() else {
        st.metrics.refused(Refusal::Requests);
        let e = ApiError::new(code::RATE_LIMITED, "server busy: too many requests in progress; retry");
        return refuse(family, &st.next_request_id(), e);
    };
    match tokio::time::timeout(st.guard.deadline(), next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            st.metrics.refused(Refusal::Timeout);
            let request_id = st.next_request_id();
            let ms = st.guard.deadline().as_millis();
            tracing::warn!(request_id, timeout_ms = ms as u64, "request timed out");
            let e = ApiError::new(
                family.timeout(),
                format!("the request did not finish within {ms} ms; a write was not applied unless it was already committing, and retrying is safe (RequestId {request_id})"),
            );
            refuse(family, &request_id, e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_of_paths() {
        assert_eq!(family_of("/v4/follow/follow_add"), Family::Follow);
        assert_eq!(family_of("/v1/client/follow/follow_get"), Family::Follow);
        assert_eq!(family_of("/v4/im_open_login_svc/account_import"), Family::Account);
        assert_eq!(family_of("/v4/callback_config/set_callback"), Family::Config);
        assert_eq!(family_of("/v4/nope/nope"), Family::Account);
        assert_eq!(Family::Account.timeout(), 70169);
    }
}
