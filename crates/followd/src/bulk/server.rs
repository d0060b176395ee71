//! The admin bulk API's handlers (`/bulk/v1/*`). Each checks the URL parameters and the UserSig
//! exactly as the REST API does (an admin of the app), and answers refusals with the same envelope.
//!
//! These routes are outside the API's concurrency limit and request deadline: an export of a large
//! graph streams for longer than any request deadline, and an import batch waits for room in the
//! write queue instead of being refused, because its client has nothing better to do than wait.

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use followd_graph::bulk::{self, BulkFollow, BulkOptions, BulkOutcome, Rejected, SweepPosition};
use followd_graph::write::{NewAccount, WriteContext};
use followd_graph::{key_of_micros, micros_of_key, ExportRow, GraphError, Origin};
use followd_protocol::api::{ApiError, Family};
use followd_protocol::{code, OptPlatform, UserId};
use std::net::SocketAddr;
use std::sync::Arc;

use super::{format, ImportReply, ImportRequest, SweepReply, SweepRequest, WireRejected, MAX_BATCH};
use crate::apps::App;
use crate::clock::now_secs;
use crate::cmd::account::MAX_PROFILE_FIELD;
use crate::pipeline::auth::{self, UrlParams};
use crate::pipeline::reply::{envelope, from_graph, refuse};
use crate::state::AppState;

/// The envelope's family: the bulk API answers with the account API's codes.
const FAMILY: Family = Family::Account;
/// Bytes of NDJSON gathered before a chunk is sent.
const CHUNK: usize = 256 * 1024;
/// Chunks buffered between the reading thread and the socket: with [`CHUNK`], the export's memory.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Edges one sweep step looks at.
const SWEEP_STEP: usize = 20_000;

fn admin(st: &AppState, query: Option<&str>) -> Result<Arc<App>, ApiError> {
    auth::authenticate_admin(&st.apps, &UrlParams::parse(query), FAMILY, now_secs())
}

/// Refuses what is not a `POST`, as the REST API does (`60002`).
fn post_only(method: &Method) -> Result<(), ApiError> {
    if method == Method::POST {
        Ok(())
    } else {
        Err(ApiError::new(code::HTTP_PARSE, "only POST is allowed"))
    }
}

fn invalid(info: String) -> ApiError {
    ApiError::new(FAMILY.invalid(), info)
}

fn context(app: &App, peer: SocketAddr) -> WriteContext {
    WriteContext {
        app: app.sdkappid,
        limits: app.limits,
        subscriptions: app.subscriptions(),
        origin: Origin { client_ip: peer.ip().to_canonical().to_string(), platform: OptPlatform::RestApi },
    }
}

fn body_json<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(code::HTTP_PARSE, format!("cannot read the request body: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::new(code::JSON_PARSE, format!("the body is not a valid request: {e}")))
}

/// `POST /bulk/v1/export`: the app's graph as NDJSON, from one read snapshot.
pub async fn export(State(st): State<Arc<AppState>>, method: Method, RawQuery(query): RawQuery) -> Response {
    let request_id = st.next_request_id();
    let app = match post_only(&method).and_then(|()| admin(&st, query.as_deref())) {
        Ok(a) => a,
        Err(e) => return refuse(FAMILY, &request_id, e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let store = st.store.clone();
    let sdkappid = app.sdkappid;
    tokio::spawn(async move {
        let sender = tx.clone();
        let read = store.submit_read(Box::new(move |view| {
            let mut buf = Vec::with_capacity(CHUNK + 1024);
            format::header(&mut buf, sdkappid);
            let (mut accounts, mut follows, mut open) = (0u64, 0u64, true);
            let r = view.export(sdkappid, &mut |row| {
                match row {
                    ExportRow::Account { user, nick, face_url } => {
                        accounts += 1;
                        format::account(&mut buf, user, nick, face_url);
                    }
                    ExportRow::Follow { from, to, key } => {
                        follows += 1;
                        format::follow(&mut buf, from, to, micros_of_key(key));
                    }
                }
                if buf.len() >= CHUNK {
                    let chunk = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 1024));
                    // The client went away: stop reading.
                    open = sender.blocking_send(chunk.into()).is_ok();
                }
                open
            });
            match r {
                Ok(()) => format::end(&mut buf, accounts, follows),
                Err(e) => {
                    tracing::error!(error = %e, sdkappid, "export failed");
                    buf.extend_from_slice(b"{\"Error\":\"the export failed on the server; see its log\"}\n");
                }
            }
            if open {
                let _ = sender.blocking_send(buf.into());
            }
        }));
        if let Err(e) = read.await {
            tracing::error!(error = %e, sdkappid, "export failed");
            let _ = tx.send(Bytes::from_static(b"{\"Error\":\"the export failed on the server; see its log\"}\n")).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) });
    let mut r = Body::from_stream(stream).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    r.headers_mut().insert("x-request-id", HeaderValue::from_str(&request_id).unwrap_or(HeaderValue::from_static("-")));
    r
}

/// `POST /bulk/v1/import`: one batch in one transaction.
pub async fn import(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let st = &*st;
    json_call(st, &method, |id| async move { run_import(st, peer, query.as_deref(), body, &id).await }).await
}

/// The shape shared by the JSON bulk calls: a `POST`, answered in the envelope with a request id.
async fn json_call<T: serde::Serialize, F: std::future::Future<Output = Result<T, ApiError>>>(
    st: &AppState,
    method: &Method,
    run: impl FnOnce(String) -> F,
) -> Response {
    let request_id = st.next_request_id();
    let result = match post_only(method) {
        Ok(()) => run(request_id.clone()).await,
        Err(e) => Err(e),
    };
    envelope(FAMILY, &request_id, &result)
}

async fn run_import(
    st: &AppState,
    peer: SocketAddr,
    query: Option<&str>,
    body: Result<Bytes, BytesRejection>,
    request_id: &str,
) -> Result<ImportReply, ApiError> {
    let app = admin(st, query)?;
    let req: ImportRequest = body_json(body)?;
    if req.accounts.len() + req.follows.len() > MAX_BATCH {
        return Err(invalid(format!("a batch holds at most {MAX_BATCH} accounts and follows")));
    }
    let accounts = req
        .accounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let user = UserId::parse(&a.user_id).map_err(|e| invalid(format!("Accounts[{i}].UserID: {e}")))?;
            for (name, v) in [("Nick", &a.nick), ("FaceUrl", &a.face_url)] {
                if v.as_ref().is_some_and(|v| v.len() > MAX_PROFILE_FIELD) {
                    return Err(invalid(format!("Accounts[{i}].{name} is longer than {MAX_PROFILE_FIELD} bytes")));
                }
            }
            Ok(NewAccount { user, nick: a.nick.clone(), face_url: a.face_url.clone() })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let latest = crate::clock::now_millis() * 1000 + 60_000_000;
    let follows = req
        .follows
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let from = UserId::parse(&f.from).map_err(|e| invalid(format!("Follows[{i}].From_Account: {e}")))?;
            let to = UserId::parse(&f.to).map_err(|e| invalid(format!("Follows[{i}].To_Account: {e}")))?;
            let key = match f.time_us {
                Some(us) if !(0..=latest).contains(&us) => {
                    return Err(invalid(format!("Follows[{i}].FollowTimeUs is before 1970 or in the future")));
                }
                us => us.map(key_of_micros),
            };
            Ok(BulkFollow { from, to, key })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let cx = Arc::new(context(&app, peer));
    let opts = BulkOptions { webhooks: req.webhooks, replace_run: req.replace_run };
    // One transaction for the batch unless the store holds fewer pairs at once: then consecutive
    // parts, in order, each waiting for the one before (a failed part fails the request, and the
    // client sends the whole batch again: every part is idempotent).
    let per_job = st.store.max_pairs_per_job().max(1);
    let mut outcome = BulkOutcome::default();
    let mut accounts = Some(accounts);
    let mut follows = follows.into_iter();
    let mut offset = 0;
    loop {
        let part: Vec<BulkFollow> = follows.by_ref().take(per_job).collect();
        let (n, first) = (part.len(), accounts.take());
        if n == 0 && first.is_none() {
            break;
        }
        let cx = cx.clone();
        let accounts = first.unwrap_or_default();
        let done = followd_graph::write(&*st.store, move |tx| bulk::import(tx, &cx, &accounts, &part, opts))
            .await
            .map_err(|e| from_graph(e, FAMILY, request_id))?;
        outcome.accounts_created += done.accounts_created;
        outcome.accounts_existing += done.accounts_existing;
        outcome.follows_added += done.follows_added;
        outcome.follows_existing += done.follows_existing;
        outcome.rejected.extend(done.rejected.into_iter().map(|r| Rejected { index: r.index + offset, ..r }));
        offset += n;
    }
    Ok(ImportReply {
        accounts_created: outcome.accounts_created,
        accounts_existing: outcome.accounts_existing,
        follows_added: outcome.follows_added,
        follows_existing: outcome.follows_existing,
        rejected: outcome
            .rejected
            .into_iter()
            .map(|r| WireRejected { index: r.index, result_code: r.code, result_info: r.info.to_owned() })
            .collect(),
    })
}

/// The sweep's cursor: `s.SRC.DST` while edges remain to look at, `f` while the marks are dropped.
enum Phase {
    Sweep(Option<SweepPosition>),
    Forget,
}

fn parse_cursor(c: &str) -> Option<Phase> {
    if c.is_empty() {
        return Some(Phase::Sweep(None));
    }
    if c == "f" {
        return Some(Phase::Forget);
    }
    let mut parts = c.strip_prefix("s.")?.split('.');
    let (s, d) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then_some(Phase::Sweep(Some((s, d))))
}

/// `POST /bulk/v1/sweep`: one step of `replace`.
pub async fn sweep(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let st = &*st;
    json_call(st, &method, |id| async move { run_sweep(st, peer, query.as_deref(), body, &id).await }).await
}

async fn run_sweep(
    st: &AppState,
    peer: SocketAddr,
    query: Option<&str>,
    body: Result<Bytes, BytesRejection>,
    request_id: &str,
) -> Result<SweepReply, ApiError> {
    let app = admin(st, query)?;
    let req: SweepRequest = body_json(body)?;
    let phase = parse_cursor(&req.cursor).ok_or_else(|| invalid("Cursor is not a cursor this server returned".into()))?;
    let cx = context(&app, peer);
    let (run, webhooks, allow_empty) = (req.run, req.webhooks, req.allow_empty);
    // A removed edge locks its pair on some stores: a step removes at most what one job may lock.
    let step = SWEEP_STEP.min(st.store.max_pairs_per_job().max(1));
    let reply = match phase {
        Phase::Sweep(after) => {
            let step = followd_graph::write(&*st.store, move |tx| {
                if after.is_none() && !allow_empty && !tx.bulk_has_marks(run)? {
                    return Err(GraphError::Invalid(format!(
                        "run {run} marked no follow: import its file with ReplaceRun first, or set AllowEmpty to remove every follow"
                    )));
                }
                bulk::sweep(tx, &cx, run, after, step, webhooks)
            })
            .await
            .map_err(|e| from_graph(e, FAMILY, request_id))?;
            let next_cursor = step.next.map_or_else(|| "f".to_owned(), |(s, d)| format!("s.{s}.{d}"));
            SweepReply { removed: step.removed, next_cursor }
        }
        Phase::Forget => {
            let dropped = followd_graph::write(&*st.store, move |tx| Ok(tx.bulk_forget(run, SWEEP_STEP * 5)?))
                .await
                .map_err(|e| from_graph(e, FAMILY, request_id))?;
            SweepReply { removed: 0, next_cursor: if dropped == 0 { String::new() } else { "f".into() } }
        }
    };
    Ok(reply)
}
