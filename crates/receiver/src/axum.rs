//! An axum router that verifies, dedupes and answers, calling your handler once per event.

use ::axum::body::Bytes;
use ::axum::extract::{RawQuery, State};
use ::axum::http::{HeaderMap, StatusCode};
use ::axum::response::{IntoResponse, Response};
use ::axum::Router;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::dedupe::{Dedupe, Seen};
use crate::{answer, Verifier, Webhook};

/// How long [`webhook_router`] remembers webhook ids: longer than followd's default retry schedule.
///
/// ```
/// assert_eq!(followd_receiver::axum::DEDUPE_TTL.as_secs(), 86_400);
/// ```
pub const DEDUPE_TTL: Duration = Duration::from_secs(24 * 3600);

struct Inner<H> {
    verifier: Verifier,
    dedupe: Arc<Dedupe>,
    handler: H,
}

/// A router that accepts webhooks on any path with `POST`.
///
/// Each request is verified with `verifier` (a refusal is answered `401`/`400` with a FAIL body and
/// never reaches the handler); a `webhook-id` handled in the last 24 hours (and among the last
/// [`DEFAULT_CAPACITY`](crate::dedupe::DEFAULT_CAPACITY) ids seen) is answered OK without calling the
/// handler again, and one still being handled (the sender timed out and retried) is
/// answered `409` so the sender tries again later; otherwise `handler` runs and its `Ok` is answered
/// `200` with the OK body, its `Err(reason)` (or a panic) with `500` and a FAIL body, so the sender
/// retries.
///
/// ```no_run
/// use followd_receiver::{axum::webhook_router, Verifier};
/// # async fn run() {
/// let app = webhook_router(Verifier::new(1400000000), |hook| async move {
///     println!("{:?}", hook.event);
///     Ok(())
/// });
/// # let _: axum::Router = app;
/// # }
/// ```
pub fn webhook_router<H, F>(verifier: Verifier, handler: H) -> Router
where
    H: Fn(Webhook) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let inner = Arc::new(Inner { verifier, dedupe: Arc::new(Dedupe::new(DEDUPE_TTL)), handler });
    Router::new().fallback(::axum::routing::post(receive::<H, F>)).with_state(inner)
}

async fn receive<H, F>(State(inner): State<Arc<Inner<H>>>, RawQuery(query): RawQuery, headers: HeaderMap, body: Bytes) -> Response
where
    H: Fn(Webhook) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let hook = match inner.verifier.verify(query.as_deref().unwrap_or(""), &headers, &body) {
        Ok(h) => h,
        Err(r) => return json(StatusCode::from_u16(r.status()).unwrap_or(StatusCode::UNAUTHORIZED), r.answer()),
    };
    let mut claim = None;
    if let Some(id) = hook.webhook_id.clone() {
        match inner.dedupe.begin(&id) {
            Seen::Done => return json(StatusCode::OK, answer::OK.to_owned()),
            Seen::InProgress => return json(StatusCode::CONFLICT, answer::fail(1, "this event is being handled; retry later")),
            Seen::New => claim = Some(Claim { dedupe: inner.dedupe.clone(), id, done: false }),
        }
    }
    // The handler runs in a task of its own: if the sender gives up waiting and disconnects, the
    // handler still finishes (and a retry meanwhile is told 409) instead of being cancelled midway.
    let task = tokio::spawn(async move {
        let result = (inner.handler)(hook).await;
        if let (Ok(()), Some(c)) = (&result, claim.as_mut()) {
            c.dedupe.finish(&c.id);
            c.done = true;
        }
        result
    });
    match task.await {
        Ok(Ok(())) => json(StatusCode::OK, answer::OK.to_owned()),
        // Dropping the claim forgot the id, so the retry is handled.
        Ok(Err(reason)) => json(StatusCode::INTERNAL_SERVER_ERROR, answer::fail(1, &reason)),
        Err(_) => json(StatusCode::INTERNAL_SERVER_ERROR, answer::fail(1, "the handler panicked")),
    }
}

/// An id being handled; forgotten unless handling finishes.
struct Claim {
    dedupe: Arc<Dedupe>,
    id: String,
    done: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.done {
            self.dedupe.forget(&self.id);
        }
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}
