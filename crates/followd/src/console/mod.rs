//! The web console at `/console`: server-rendered pages for an app's admins (issue 11).
//!
//! Why this shape: pages are rendered on the server with `maud` (compile-time templates that escape
//! every interpolated value, so a nickname or a receiver's answer is always inert text), charts are
//! SVG drawn on the server (no chart library, no script), and the one script (`live.js`, the live
//! view) is ours and embedded in the binary. Nothing is fetched from npm or a CDN at build or run
//! time, and the Content-Security-Policy allows only `'self'` scripts and styles.
//!
//! Every read and action goes through the same [`crate::cmd::Command`]s as the REST API, so the
//! console gets the same checks and works on whatever store is behind them.
//!
//! Security: a session is a random 128-bit token in an HttpOnly, SameSite=Strict cookie, mapped on
//! the server to (app, admin, expiry, CSRF token); the UserSig itself is never stored in the cookie.
//! A session ends with its UserSig, after [`MAX_SESSION_SECS`], or at sign-out. Every page checks
//! that the URL's SDKAppID is the session's, and every POST carries the session's CSRF token.

mod chart;
mod pages;
mod session;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use followd_protocol::api::{Api, ApiError};
use maud::{html, Markup, DOCTYPE};
use std::collections::HashMap;
use std::sync::Arc;

use crate::body::Body;
use crate::cmd::{Caller, Command, Ctx, Reply};
use crate::state::AppState;
pub use session::{Session, Sessions, MAX_SESSION_SECS};

/// The console's shared state: the server's, plus the sessions.
pub struct Console {
    /// The server's handles.
    pub st: Arc<AppState>,
    /// Signed-in admins.
    pub sessions: Sessions,
    /// Each app's account and edge totals, counted in the background at most every 10 s.
    totals: parking_lot::Mutex<HashMap<u64, Totals>>,
}

/// An app's last count of accounts and edges.
#[derive(Clone, Copy)]
struct Totals {
    at: std::time::Instant,
    value: Option<(u64, u64)>,
    counting: bool,
}

/// How old a count may get before the next overview starts a new one.
const TOTALS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

impl Console {
    /// The last count of `app`'s (accounts, edges) and its age; starts a new count in the background
    /// when there is none or it is older than 10 s (it scans the app's accounts).
    pub fn totals(self: &Arc<Self>, app: u64) -> Option<((u64, u64), std::time::Duration)> {
        let now = std::time::Instant::now();
        let mut map = self.totals.lock();
        let t = map.entry(app).or_insert(Totals { at: now, value: None, counting: false });
        if !t.counting && (t.value.is_none() || now.duration_since(t.at) > TOTALS_MAX_AGE) {
            t.counting = true;
            let c = self.clone();
            tokio::spawn(async move {
                let got = followd_graph::read(&*c.st.store, move |v| Ok(v.app_totals(app)?)).await.ok().flatten();
                let mut map = c.totals.lock();
                let t = map.entry(app).or_insert(Totals { at: std::time::Instant::now(), value: None, counting: false });
                t.counting = false;
                if got.is_some() {
                    *t = Totals { at: std::time::Instant::now(), value: got, counting: false };
                }
            });
        }
        t.value.map(|v| (v, now.duration_since(t.at)))
    }
}

/// The name of the session cookie.
pub const COOKIE: &str = "followd_console";
/// What every console page may load: only its own scripts, styles and images.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &[u8] = include_bytes!("style.css");
const LIVE_JS: &[u8] = include_bytes!("live.js");

/// The console's routes, under `/console`.
pub fn router(st: Arc<AppState>) -> Router {
    let console = Arc::new(Console { st, sessions: Sessions::default(), totals: Default::default() });
    Router::new()
        .route("/console", get(pages::root))
        .route("/console/login", get(pages::login_page).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route("/console/assets/{name}", get(asset))
        .route("/console/apps/{app}", get(pages::overview))
        .route("/console/apps/{app}/webhook", get(pages::webhook).post(pages::webhook_save))
        .route("/console/apps/{app}/webhook/token", post(pages::token_save))
        .route("/console/apps/{app}/webhook/test", post(pages::webhook_test))
        .route("/console/apps/{app}/webhook/secret", post(pages::secret_save))
        .route("/console/apps/{app}/events", get(pages::events))
        .route("/console/apps/{app}/events/{id}", get(pages::event))
        .route("/console/apps/{app}/events/{id}/replay", post(pages::replay_one))
        .route("/console/apps/{app}/replay-dead", post(pages::replay_dead))
        .route("/console/apps/{app}/users", get(pages::find_user))
        .route("/console/apps/{app}/users/{user}", get(pages::user))
        .route("/console/apps/{app}/users/{user}/follow", post(pages::follow_action))
        .route("/console/apps/{app}/live", get(pages::live))
        .route("/console/apps/{app}/live/stream", get(pages::live_stream))
        .route("/console/{*rest}", axum::routing::any(not_found))
        .layer(axum::middleware::from_fn(guard_all))
        .with_state(console)
}

/// `/console/…` that is no page: a 404 page (with the same headers as every page).
async fn not_found() -> Response {
    page(StatusCode::NOT_FOUND, layout("Not found", None, html! { p.error { "No such page." } a href="/console" { "The console" } }))
}

/// Around every console answer: a POST sent by another site is refused before any handler runs
/// (sign-in included, so another site cannot sign a browser in to its own app), and every answer —
/// error pages, 404s, 405s and extractor rejections included — carries the security headers.
async fn guard_all(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut r = if req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD && cross_site(req.headers()) {
        page(
            StatusCode::FORBIDDEN,
            layout(
                "Refused",
                None,
                html! { p.error { "This form was sent by another site; the console takes forms only from its own pages." } },
            ),
        )
    } else {
        next.run(req).await
    };
    let h = r.headers_mut();
    for (k, v) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    }
    r
}

/// Whether a request says it comes from another site: `Sec-Fetch-Site` (set by the browser, which
/// pages cannot forge) other than `same-origin` or `none` (typed or bookmarked); without it, an
/// `Origin` whose host is not the request's `Host`. Browsers send at least one of them with every
/// form POST; scripts and tests that send neither are not browsers carrying someone's cookie.
pub fn cross_site(h: &HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site") {
        return !matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    match h.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("?")) {
        None => false,
        Some(origin) => {
            let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
            let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest.trim_end_matches('/'));
            host.is_empty() || !origin_host.eq_ignore_ascii_case(host)
        }
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, ty) = match name.as_str() {
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "live.js" => (LIVE_JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    // Embedded in the binary: they change only with it.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// A page answer with the console's security headers.
pub fn page(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, markup.into_string()).into_response();
    secure(r.headers_mut());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

/// Adds the headers every console answer carries.
pub fn secure(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` with the
    // console's own forms, and the cross-site check below needs their real origin.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A redirect after a POST (303) or to the login page.
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure(r.headers_mut());
    r
}

/// The page frame: navigation for a signed-in admin, the title, the content.
pub fn layout(title: &str, s: Option<&Session>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · followd console" }
                link rel="stylesheet" href="/console/assets/style.css";
            }
            body {
                header.top {
                    span.brand { "followd" }
                    @if let Some(s) = s {
                        nav {
                            a href=(format!("/console/apps/{}", s.app)) { "Overview" }
                            a href=(format!("/console/apps/{}/events", s.app)) { "Events" }
                            a href=(format!("/console/apps/{}/webhook", s.app)) { "Webhook" }
                            a href=(format!("/console/apps/{}/users", s.app)) { "Users" }
                            a href=(format!("/console/apps/{}/live", s.app)) { "Live" }
                        }
                        span.who { (s.admin) " · app " (s.app) }
                        form.inline method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button.link type="submit" id="signout" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (content) }
            }
        }
    }
}

/// A form body as a map (first value wins).
pub fn form(bytes: &Bytes) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        m.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    m
}

/// A query string as a map (first value wins).
pub fn query(raw: &RawQuery) -> HashMap<String, String> {
    form(&Bytes::from(raw.0.clone().unwrap_or_default()))
}

/// Runs an API as the signed-in admin, through the same command code as the REST API.
pub async fn run(c: &Console, s: &Session, api: Api, body: serde_json::Value) -> Result<Reply, ApiError> {
    let app = c.st.apps.get(s.app).ok_or_else(|| ApiError::new(followd_protocol::code::UNKNOWN_SDKAPPID, "the app is gone"))?;
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let body = Body::parse(&bytes, api.family())?;
    let command = Command::parse(api, &Caller::Admin, &body)?;
    let request_id = c.st.next_request_id();
    let cx = Ctx {
        app,
        store: &*c.st.store,
        outbox: &*c.st.outbox,
        dispatcher: &c.st.dispatcher,
        deletions: &c.st.deletions,
        request_id: &request_id,
        client_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        platform: followd_protocol::OptPlatform::RestApi,
    };
    let started = std::time::Instant::now();
    let r = command.apply(&cx).await.map_err(|f| crate::pipeline::reply::refusal(f, api.family(), &request_id));
    c.st.metrics.request(api.name(), r.is_ok(), started.elapsed());
    r
}
