//! The console's pages and actions. Each handler checks the session and its app first.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use followd_graph::outbox::{Outcome, StoredEvent, WebhookId};
use followd_protocol::api::reply::{EventItem, FollowEntry};
use followd_protocol::api::{Api, ApiError, Family};
use followd_protocol::{usersig, CallbackCommand, OptPlatform};
use followd_webhook::breaker::Breaker;
use maud::{html, Markup};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use super::session::{clear_cookie, over_https, same, set_cookie};
use super::{chart, form, layout, page, query, redirect, run, secure, Console, Session, MAX_SESSION_SECS};
use crate::clock::{now_millis, now_secs};
use crate::cmd::Reply;
use crate::pipeline::auth::{self, UrlParams};

type C = State<Arc<Console>>;

/// The signed-in session of `app`, or the answer to give instead: the login page without a session,
/// a refusal for another app's URL.
fn guard(c: &Console, headers: &HeaderMap, app: &str) -> Result<Session, Box<Response>> {
    let Some(s) = c.sessions.get(headers, now_secs()) else { return Err(Box::new(redirect("/console/login"))) };
    if app.parse::<u64>().ok() != Some(s.app) {
        let body = html! {
            p.error { "This session is signed in to app " (s.app) "; it cannot see app " (app) "." }
            p { a href=(format!("/console/apps/{}", s.app)) { "Back to app " (s.app) } }
        };
        return Err(Box::new(page(StatusCode::FORBIDDEN, layout("Another app", Some(&s), body))));
    }
    Ok(s)
}

/// The session of `app` whose POST carries its CSRF token; the form's fields.
fn guard_post(c: &Console, headers: &HeaderMap, app: &str, body: &Bytes) -> Result<(Session, HashMap<String, String>), Box<Response>> {
    let s = guard(c, headers, app)?;
    let f = form(body);
    if !f.get("csrf").is_some_and(|t| same(t, &s.csrf)) {
        return Err(Box::new(page(
            StatusCode::FORBIDDEN,
            layout("Refused", Some(&s), html! { p.error { "The form's CSRF token is missing or stale; reload the page and try again." } }),
        )));
    }
    Ok((s, f))
}

fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

fn api_error(e: &ApiError) -> Markup {
    html! { p.error { "ErrorCode " (e.code) ": " (e.info) } }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix ms.
pub fn fmt_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM[:SS]` (a `datetime-local` field, taken as UTC) or Unix ms.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next().flatten().unwrap_or(0));
    if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..60).contains(&sec) {
        return None;
    }
    Some((days_from_civil(y, m as u32, day as u32) * 86_400 + h * 3600 + mi * 60 + sec) * 1000)
}

/// The `datetime-local` value of Unix ms.
fn local_value(ms: i64) -> String {
    fmt_ms(ms).replace(' ', "T")
}

fn ago(ms: i64) -> String {
    let s = ((now_millis() - ms) / 1000).max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

// ---------------------------------------------------------------- sign-in

/// `GET /console`: the signed-in app's overview, or the login page.
pub async fn root(State(c): C, headers: HeaderMap) -> Response {
    match c.sessions.get(&headers, now_secs()) {
        Some(s) => redirect(&format!("/console/apps/{}", s.app)),
        None => redirect("/console/login"),
    }
}

fn login_form(error: Option<&ApiError>, sdkappid: &str, identifier: &str) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            p.muted { "An admin identifier of the app and its UserSig, as on the REST API." }
            @if let Some(e) = error { (api_error(e)) }
            form.card.login method="post" action="/console/login" {
                label { "SDKAppID" input type="text" name="sdkappid" inputmode="numeric" autocomplete="username" required value=(sdkappid); }
                label { "Admin identifier" input type="text" name="identifier" required value=(identifier); }
                label { "UserSig" input type="password" name="usersig" autocomplete="current-password" required; }
                button type="submit" id="signin" { "Sign in" }
            }
        },
    )
}

/// `GET /console/login`.
pub async fn login_page() -> Response {
    page(StatusCode::OK, login_form(None, "", ""))
}

/// `POST /console/login`: checks the fields exactly as the REST API checks its URL parameters.
pub async fn login(State(c): C, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let params = UrlParams {
        sdkappid: f.get("sdkappid").cloned(),
        identifier: f.get("identifier").cloned(),
        usersig: f.get("usersig").cloned(),
        contenttype: None,
    };
    let now = now_secs();
    let checked = auth::authenticate_admin(&c.st.apps, &params, Family::Follow, now);
    let (sdkappid, identifier) = (params.sdkappid.unwrap_or_default(), params.identifier.unwrap_or_default());
    let app = match checked {
        Ok(app) => app,
        Err(e) => return page(StatusCode::UNAUTHORIZED, login_form(Some(&e), &sdkappid, &identifier)),
    };
    let sig_expires = params.usersig.as_deref().and_then(|s| usersig::decode(s).ok()).map_or(now, |t| t.expires_at());
    let expires = sig_expires.min(now + MAX_SESSION_SECS);
    // A browser signing in again leaves its previous session, which ends here.
    c.sessions.remove(&headers);
    let (token, _) = c.sessions.create(app.sdkappid, identifier.clone(), expires, now);
    tracing::info!(app = app.sdkappid, admin = %identifier, "console sign-in");
    let mut r = redirect(&format!("/console/apps/{}", app.sdkappid));
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&token, expires.saturating_sub(now), over_https(&headers))) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /console/logout`.
pub async fn logout(State(c): C, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(s) = c.sessions.get(&headers, now_secs()) {
        if form(&body).get("csrf").is_some_and(|t| same(t, &s.csrf)) {
            c.sessions.remove(&headers);
        }
    }
    let mut r = redirect("/console/login");
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear_cookie(over_https(&headers))).expect("ascii"));
    r
}

// ---------------------------------------------------------------- overview

/// Up to 1000 of an app's events in `state` (`1000` reads as "1000+").
async fn count_state(c: &Console, s: &Session, state: &str) -> Result<usize, ApiError> {
    match run(c, s, Api::ListEvents, serde_json::json!({"State": state, "Limit": 1000})).await? {
        Reply::Events(p) => Ok(p.events.len()),
        _ => Ok(0),
    }
}

fn capped(n: usize) -> String {
    if n >= 1000 {
        "1000+".into()
    } else {
        n.to_string()
    }
}

/// `GET /console/apps/{app}`.
pub async fn overview(State(c): C, headers: HeaderMap, Path(app): Path<String>) -> Response {
    let s = match guard(&c, &headers, &app) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let pending = count_state(&c, &s, "pending").await;
    let dead = count_state(&c, &s, "dead").await;
    let oldest = c.st.outbox.load_pending(s.app, 0, 1).await.ok().and_then(|v| v.first().map(|e| e.created_ms));
    let snap = c.st.metrics.webhook.recent.snapshot(s.app, now_secs());
    let ep = c.st.apps.get(s.app).and_then(|a| a.endpoint());
    let breaker = match c.st.dispatcher.breaker(s.app).await {
        None | Some(Breaker::Closed { failures: 0 }) => "closed".to_string(),
        Some(Breaker::Closed { failures }) => format!("closed ({failures} failures in a row)"),
        Some(Breaker::Open { until, .. }) => {
            format!("open: next probe in {:.0} s", until.saturating_duration_since(std::time::Instant::now()).as_secs_f64().ceil())
        }
        Some(Breaker::HalfOpen { .. }) => "half-open: probing".to_string(),
    };
    let totals = c.totals(s.app);
    let body = html! {
        section.stats {
            @match totals {
                Some(((accounts, edges), age)) => {
                    div.stat { span.label { "Accounts" } span.value id="accounts" { (accounts) } }
                    div.stat { span.label { "Follow edges" } span.value id="edges" { (edges) } span.muted { "counted " (age.as_secs()) " s ago" } }
                }
                None => {
                    div.stat { span.label { "Accounts" } span.value.small id="accounts" { "counting… (reload)" } }
                    div.stat { span.label { "Follow edges" } span.value.small { "counting… (reload)" } }
                }
            }
            div.stat { span.label { "Pending events" } span.value id="pending" { (pending.as_ref().map_or("?".into(), |n| capped(*n))) } }
            div.stat { span.label { "Dead events" } span.value id="dead" { (dead.as_ref().map_or("?".into(), |n| capped(*n))) } }
            div.stat { span.label { "Oldest pending" } span.value id="oldest" { (oldest.map_or("none".into(), ago)) } }
            div.stat { span.label { "Circuit breaker" } span.value.small id="breaker" { (breaker) } }
            div.stat { span.label { "Webhook" } span.value.small { (ep.as_ref().map_or("off".to_string(), |e| followd_webhook::dispatcher::redacted(&e.url).to_string())) } }
        }
        @if let Err(e) = &pending { (api_error(e)) }
        section.card {
            h2 { "Deliveries per second, last hour (by outcome)" }
            (chart::deliveries(&snap))
        }
        section.card {
            h2 { "Delivery latency per minute, last hour" }
            (chart::latency(&snap.per_min))
        }
        p.muted { "Charts: attempts made by this server since it started, kept in memory for an hour. " a href=(format!("/console/apps/{}/events?state=dead", s.app)) { "See dead events" } "." }
    };
    page(StatusCode::OK, layout(&format!("App {}", s.app), Some(&s), body))
}

// ---------------------------------------------------------------- webhook

fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n <= 4 {
        "••••".into()
    } else {
        format!("{}••••••", secret.chars().take(3).collect::<String>())
    }
}

struct TestResult {
    status: Option<u16>,
    outcome: Outcome,
    duration: Duration,
    error: Option<String>,
    response: Option<String>,
}

async fn webhook_page(c: &Console, s: &Session, reveal: bool, note: Option<Markup>, test: Option<TestResult>) -> Response {
    let (cb, tok) =
        (run(c, s, Api::GetCallback, serde_json::json!({})).await, run(c, s, Api::GetCallbackToken, serde_json::json!({})).await);
    let (url, commands) = match cb {
        Ok(Reply::Callback(r)) => (r.response.url, r.response.commands),
        _ => (String::new(), vec![]),
    };
    let (token, enabled) = match tok {
        Ok(Reply::Token(r)) => (r.response.token, r.response.enabled),
        _ => (String::new(), false),
    };
    let secret = c.st.apps.get(s.app).and_then(|a| a.endpoint()).and_then(|e| e.signing_secret.clone());
    let from_console = c.st.apps.get(s.app).is_some_and(|a| a.webhook_override().signing_secret.is_some());
    let shown = |v: &str| if reveal { v.to_owned() } else { mask(v) };
    let body = html! {
        @if let Some(n) = note { (n) }
        section.card {
            h2 { "Destination" }
            form method="post" action=(format!("/console/apps/{}/webhook", s.app)) {
                (csrf(s))
                label { "URL (empty turns webhooks off)" input type="url" name="url" id="url" value=(url) size="60"; }
                fieldset {
                    legend { "Webhooks sent" }
                    @for cmd in CallbackCommand::ALL {
                        label.check { input type="checkbox" name=(format!("cmd.{}", cmd.as_str())) checked[commands.contains(&cmd)]; (cmd.as_str()) }
                    }
                }
                button type="submit" id="save-url" { "Save" }
            }
        }
        section.card {
            h2 { "Signing" }
            dl {
                dt { "Token (" code { "Sign" } ", " code { "RequestTime" } ")" }
                dd id="token" { @if token.is_empty() { em { "none" } } @else { code { (shown(&token)) } " " (if enabled { "(in use)" } else { "(not in use)" }) } }
                dt { "Standard Webhooks signing secret" }
                dd id="secret" {
                    @match &secret { Some(v) => code { (shown(v)) }, None => em { "none" } } " "
                    span.muted { @if from_console { "(set here; overrides the config file)" } @else { "(from the config file: " code { "apps.webhook.signing_secret" } ")" } }
                }
            }
            @if !reveal { p { a id="reveal" href=(format!("/console/apps/{}/webhook?reveal=1", s.app)) { "Reveal secrets" } } }
            form.filters method="post" action=(format!("/console/apps/{}/webhook/token", s.app)) {
                (csrf(s))
                label { "New token" input type="password" name="token" autocomplete="off"; }
                label.check { input type="checkbox" name="enabled" checked; "Sign webhooks with it" }
                button type="submit" { "Set token" }
            }
            form.filters method="post" action=(format!("/console/apps/{}/webhook/secret", s.app)) {
                (csrf(s))
                label { "New signing secret (" code { "whsec_" } " + base64 of 24 to 64 bytes)" input type="password" name="secret" autocomplete="off"; }
                button type="submit" name="action" value="set" id="set-secret" { "Set secret" }
                button type="submit" name="action" value="generate" id="rotate-secret" { "Generate a new secret" }
                @if from_console { button type="submit" name="action" value="file" id="file-secret" { "Use the config file's" } }
            }
        }
        section.card {
            h2 { "Send a test event" }
            p.muted { "Posts a sample " code { "Follow.CallbackAfterFollowDelete" } " to the URL above, signed as real events are. Nothing is stored." }
            form method="post" action=(format!("/console/apps/{}/webhook/test", s.app)) {
                (csrf(s))
                button type="submit" id="send-test" { "Send a test event" }
            }
            @if let Some(t) = &test {
                dl.result id="test-result" {
                    dt { "Outcome" } dd { span class=(format!("badge o-{}", t.outcome.as_str())) { (t.outcome.as_str()) } }
                    dt { "HTTP status" } dd id="test-status" { (t.status.map_or("none".into(), |s| s.to_string())) }
                    dt { "Time" } dd { (format!("{:.1} ms", t.duration.as_secs_f64() * 1000.0)) }
                    @if let Some(e) = &t.error { dt { "Error" } dd { (e) } }
                    dt { "Answer" } dd { pre id="test-answer" { (t.response.clone().unwrap_or_default()) } }
                }
            }
        }
    };
    page(StatusCode::OK, layout("Webhook", Some(s), body))
}

/// `GET /console/apps/{app}/webhook[?reveal=1]`.
pub async fn webhook(State(c): C, headers: HeaderMap, Path(app): Path<String>, raw: RawQuery) -> Response {
    let s = match guard(&c, &headers, &app) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let reveal = query(&raw).get("reveal").is_some_and(|v| v == "1");
    if reveal {
        tracing::info!(app = s.app, admin = %s.admin, "console: webhook secrets revealed");
    }
    webhook_page(&c, &s, reveal, None, None).await
}

/// `POST /console/apps/{app}/webhook`: `set_callback`.
pub async fn webhook_save(State(c): C, headers: HeaderMap, Path(app): Path<String>, body: Bytes) -> Response {
    let (s, f) = match guard_post(&c, &headers, &app, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let commands: Vec<&str> = CallbackCommand::ALL.iter().map(|c| c.as_str()).filter(|c| f.contains_key(&format!("cmd.{c}"))).collect();
    let req = serde_json::json!({"Url": f.get("url").map(|u| u.trim()).unwrap_or(""), "CallbackCommandList": commands});
    let note = match run(&c, &s, Api::SetCallback, req).await {
        Ok(_) => html! { p.ok id="saved" { "Saved." } },
        Err(e) => api_error(&e),
    };
    webhook_page(&c, &s, false, Some(note), None).await
}

/// `POST /console/apps/{app}/webhook/token`: `set_callback_token`.
pub async fn token_save(State(c): C, headers: HeaderMap, Path(app): Path<String>, body: Bytes) -> Response {
    let (s, f) = match guard_post(&c, &headers, &app, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let req = serde_json::json!({"Token": f.get("token").cloned().unwrap_or_default(), "IsTokenEnable": f.contains_key("enabled")});
    let note = match run(&c, &s, Api::SetCallbackToken, req).await {
        Ok(_) => html! { p.ok { "Token saved." } },
        Err(e) => api_error(&e),
    };
    webhook_page(&c, &s, false, Some(note), None).await
}

/// Whether `s` is a Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 bytes.
pub fn valid_secret(s: &str) -> bool {
    use base64::Engine as _;
    s.strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|k| (24..=64).contains(&k.len()))
}

/// A fresh secret: `whsec_` and the base64 of 32 random bytes.
fn fresh_secret() -> String {
    use base64::Engine as _;
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()))
}

/// `POST /console/apps/{app}/webhook/secret`: sets (`action=set`, `secret`), generates
/// (`action=generate`) or drops (`action=file`: the config file's applies again) the Standard Webhooks
/// signing secret. It is stored in the app's webhook override, so it outlives a restart and reaches
/// the other nodes, and applies to the next attempt. The secret is never logged or echoed.
pub async fn secret_save(State(c): C, headers: HeaderMap, Path(app): Path<String>, body: Bytes) -> Response {
    let (s, f) = match guard_post(&c, &headers, &app, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(a) = c.st.apps.get(s.app) else { return redirect("/console/login") };
    let new = match f.get("action").map(String::as_str) {
        Some("generate") => Some(fresh_secret()),
        Some("file") => None,
        _ => match f.get("secret").map(|v| v.trim()) {
            Some(v) if valid_secret(v) => Some(v.to_owned()),
            _ => {
                let e = ApiError::new(
                    followd_protocol::code::CONFIG_INVALID_PARAM,
                    "the signing secret must be whsec_ followed by the base64 of 24 to 64 bytes",
                );
                return webhook_page(&c, &s, false, Some(api_error(&e)), None).await;
            }
        },
    };
    let mut over = a.webhook_override();
    over.signing_secret = new;
    if let Err(e) = c.st.outbox.save_override(s.app, over.clone()).await {
        let e = crate::pipeline::reply::refusal(crate::cmd::Failure::from(e), Family::Config, &c.st.next_request_id());
        return webhook_page(&c, &s, false, Some(api_error(&e)), None).await;
    }
    a.set_webhook_override(over);
    tracing::info!(app = s.app, admin = %s.admin, "console: webhook signing secret changed");
    webhook_page(&c, &s, false, Some(html! { p.ok id="secret-saved" { "Signing secret changed; the next attempt uses it." } }), None).await
}

/// `POST /console/apps/{app}/webhook/test`: one attempt of a sample event, through the same client
/// (SSRF guard, timeout, signatures) as real deliveries.
pub async fn webhook_test(State(c): C, headers: HeaderMap, Path(app): Path<String>, body: Bytes) -> Response {
    let (s, _) = match guard_post(&c, &headers, &app, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(ep) = c.st.apps.get(s.app).and_then(|a| a.endpoint()) else {
        return webhook_page(&c, &s, false, Some(html! { p.error { "No webhook URL is set." } }), None).await;
    };
    let now = now_millis();
    let ev = StoredEvent {
        id: 0,
        webhook_id: WebhookId::Uuid(uuid_v7(now)),
        app: s.app,
        command: CallbackCommand::FollowDelete,
        from: "console_test_from".into(),
        body: followd_protocol::webhook::body(CallbackCommand::FollowDelete, "console_test_from", &["console_test_to"], now as u64),
        client_ip: "127.0.0.1".into(),
        platform: OptPlatform::RestApi,
        created_ms: now,
        retries: 0,
        next_at_ms: now,
    };
    let result = match followd_webhook::client::Clients::new() {
        Ok(clients) => {
            let r = clients.attempt(&ep, &ev).await;
            TestResult { status: r.status, outcome: r.outcome, duration: r.duration, error: r.error, response: r.response }
        }
        Err(e) => {
            TestResult { status: None, outcome: Outcome::Connect, duration: Duration::ZERO, error: Some(e.to_string()), response: None }
        }
    };
    webhook_page(&c, &s, false, None, Some(result)).await
}

fn uuid_v7(ms: i64) -> uuid::Uuid {
    uuid::Builder::from_unix_timestamp_millis(ms as u64, &rand::random::<[u8; 10]>()).into_uuid()
}

// ---------------------------------------------------------------- events

fn state_badge(state: &str) -> Markup {
    html! { span class=(format!("badge s-{state}")) { (state) } }
}

/// `GET /console/apps/{app}/events`: the log, newest first, filtered, keyset-paged.
pub async fn events(State(c): C, headers: HeaderMap, Path(app): Path<String>, raw: RawQuery) -> Response {
    let s = match guard(&c, &headers, &app) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let q = query(&raw);
    let get = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut req = serde_json::Map::new();
    req.insert("Limit".into(), 50.into());
    if let Some(v) = get("state") {
        req.insert("State".into(), v.into());
    }
    if let Some(v) = get("from") {
        req.insert("From_Account".into(), v.into());
    }
    if let Some(v) = get("command") {
        req.insert("CallbackCommand".into(), v.into());
    }
    let mut bad = None;
    for (k, key) in [("start", "StartTime"), ("end", "EndTime")] {
        if let Some(v) = get(k) {
            match parse_time(v) {
                Some(ms) => {
                    req.insert(key.into(), ms.into());
                }
                None => bad = Some(ApiError::new(followd_protocol::code::CONFIG_INVALID_PARAM, format!("{k}: not a date and time"))),
            }
        }
    }
    if let Some(v) = get("cursor") {
        req.insert("Cursor".into(), v.into());
    }
    let scanned = ["from", "command", "start", "end"].iter().any(|k| get(k).is_some());
    let mut searched = None;
    let (rows, next) = match bad {
        Some(e) => (Err(e), String::new()),
        // No index serves these filters: search the log a window at a time, so a page costs the
        // same however long the log is.
        None if scanned => match windowed(&c, &s, serde_json::Value::Object(req)).await {
            Ok((rows, next, window)) => {
                searched = window;
                (Ok(rows), next)
            }
            Err(e) => (Err(e), String::new()),
        },
        None => match run(&c, &s, Api::ListEvents, serde_json::Value::Object(req)).await {
            Ok(Reply::Events(p)) => (Ok(p.events), p.next_cursor),
            Ok(_) => (Ok(vec![]), String::new()),
            Err(e) => (Err(e), String::new()),
        },
    };
    let keep: Vec<(&str, String)> =
        ["state", "from", "command", "start", "end"].iter().filter_map(|k| get(k).map(|v| (*k, v.to_owned()))).collect();
    let next_url = (!next.is_empty()).then(|| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &keep {
            ser.append_pair(k, v);
        }
        ser.append_pair("cursor", &next);
        format!("/console/apps/{}/events?{}", s.app, ser.finish())
    });
    let sel = |k: &str, v: &str| get(k) == Some(v);
    let body = html! {
        form.filters method="get" action=(format!("/console/apps/{}/events", s.app)) {
            label { "State" select name="state" {
                option value="" { "any" }
                @for st in ["pending", "delivered", "dead"] { option value=(st) selected[sel("state", st)] { (st) } }
            } }
            label { "From_Account" input type="text" name="from" value=(get("from").unwrap_or("")); }
            label { "Webhook" select name="command" {
                option value="" { "any" }
                @for cmd in CallbackCommand::ALL { option value=(cmd.as_str()) selected[sel("command", cmd.as_str())] { (cmd.as_str()) } }
            } }
            label { "From (UTC)" input type="datetime-local" name="start" value=(get("start").and_then(parse_time).map(local_value).unwrap_or_default()); }
            label { "To (UTC)" input type="datetime-local" name="end" value=(get("end").and_then(parse_time).map(local_value).unwrap_or_default()); }
            button type="submit" id="filter" { "Filter" }
        }
        @match &rows {
            Err(e) => (api_error(e)),
            Ok(rows) if rows.is_empty() => p.muted id="no-events" { "No events." },
            Ok(rows) => table.events id="events" {
                thead { tr { th { "Created (UTC)" } th { "WebhookId" } th { "Webhook" } th { "From_Account" } th { "State" } th { "Attempts" } th { "Last error" } } }
                tbody { @for e in rows { (event_row(s.app, e)) } }
            },
        }
        @if let Some((lo, hi)) = searched { p.muted id="searched" { "Searched events " (lo) " to " (hi) " of the log." } }
        @if let Some(u) = next_url { p { a.button id="next-page" href=(u) { (if searched.is_some() { "Search older events →" } else { "Older events →" }) } } }
        section.card {
            h2 { "Replay dead events in a range" }
            form.filters method="post" action=(format!("/console/apps/{}/replay-dead", s.app)) {
                (csrf(&s))
                label { "From (UTC)" input type="datetime-local" name="start" required value=(get("start").and_then(parse_time).map(local_value).unwrap_or_default()); }
                label { "To (UTC)" input type="datetime-local" name="end" required value=(get("end").and_then(parse_time).map(local_value).unwrap_or_else(|| local_value(now_millis() + 60_000))); }
                button type="submit" id="replay-dead" { "Replay dead events…" }
            }
        }
    };
    page(StatusCode::OK, layout("Events", Some(&s), body))
}

/// Event ids one filtered page searches at most.
pub const WINDOW: i64 = 100_000;

/// A page of a filter no index serves: the matches among the `WINDOW` events below the cursor (the
/// request is parsed and checked by `list_events`' own parser). Returns the rows, the next cursor,
/// and the ids searched when the window ran out before the page filled.
async fn windowed(c: &Console, s: &Session, req: serde_json::Value) -> Result<(Vec<EventItem>, String, Option<(i64, i64)>), ApiError> {
    use crate::cmd::callback::{event_item, ListEvents};
    let body = crate::body::Body::parse(req.to_string().as_bytes(), Family::Config)?;
    let q = ListEvents::parse(&body)?;
    let Some(newest) = list(c, s, serde_json::json!({"Limit": 1})).await?.first().map(|e| e.event_id) else {
        return Ok((vec![], String::new(), None));
    };
    // A time range is an id range: the search starts at its end and stops at its start.
    let end = match q.end_ms {
        Some(ms) => first_id(c, s, newest, |created| created >= ms).await?,
        None => newest + 1,
    };
    let floor = match q.start_ms {
        Some(ms) => first_id(c, s, newest, |created| created >= ms).await? - 1,
        None => 0,
    };
    let top = q.before_id.map_or(end, |id| id.min(end));
    let low = (top - WINDOW).max(floor).max(0);
    let filter = followd_graph::outbox::EventFilter {
        state: q.state,
        from: q.from,
        command: q.command,
        start_ms: q.start_ms,
        end_ms: q.end_ms,
        before_id: Some(top),
        after_id: Some(low),
        limit: q.limit as usize,
    };
    let rows =
        c.st.outbox
            .list_events(s.app, filter)
            .await
            .map_err(|e| crate::pipeline::reply::refusal(crate::cmd::Failure::from(e), Family::Config, &c.st.next_request_id()))?;
    // Both stores bound the scan by `after_id`; the filter keeps a page right on any other backend.
    let rows: Vec<EventItem> = rows.into_iter().filter(|r| r.event.id > low).map(event_item).collect();
    if rows.len() as u64 == q.limit {
        let next = rows.last().map(|r| r.event_id.to_string()).unwrap_or_default();
        return Ok((rows, next, None));
    }
    let next = if low > floor.max(0) { (low + 1).to_string() } else { String::new() };
    Ok((rows, next, (top > low + 1).then_some((low + 1, top - 1))))
}

fn event_row(app: u64, e: &EventItem) -> Markup {
    html! {
        tr {
            td { (fmt_ms(e.created)) }
            td { a href=(format!("/console/apps/{app}/events/{}", e.webhook_id)) { code { (e.webhook_id) } } }
            td { (e.command.as_str().trim_start_matches("Follow.")) }
            td { a href=(format!("/console/apps/{app}/users/{}", urlencode(e.from.as_str()))) { (e.from.as_str()) } }
            td { (state_badge(e.state)) }
            td.num { (e.attempts) }
            td.err { (e.last_error) }
        }
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// One page of the log through `list_events`.
async fn list(c: &Console, s: &Session, req: serde_json::Value) -> Result<Vec<EventItem>, ApiError> {
    match run(c, s, Api::ListEvents, req).await? {
        Reply::Events(p) => Ok(p.events),
        _ => Ok(vec![]),
    }
}

/// The id of the app's first event whose creation time satisfies `pred` (monotone: false, then
/// true), or `newest + 1` when none does. Ids grow with commit time, so a binary search over ids
/// finds it, each probe one indexed row through `list_events`.
async fn first_id(c: &Console, s: &Session, newest: i64, pred: impl Fn(i64) -> bool) -> Result<i64, ApiError> {
    let (mut lo, mut hi) = (1i64, newest + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let below = list(c, s, serde_json::json!({"Cursor": (mid + 1).to_string(), "Limit": 1})).await?;
        match below.first() {
            Some(e) if pred(e.created) => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(lo)
}

/// Finds an event by its WebhookId. A legacy `evt_<EventId>` is the event id itself. A UUIDv7
/// carries its commit time, and ids grow with commit time, so a binary search over ids (each probe
/// one indexed row) finds where that millisecond ends; the event is just below. If clocks went
/// backwards and it is not there, the millisecond's events are searched by time.
async fn find_event(c: &Console, s: &Session, id: &str) -> Result<Option<EventItem>, ApiError> {
    let Some(wid) = WebhookId::parse(id) else { return Ok(None) };
    let ms = match wid {
        WebhookId::Legacy(n) => {
            let rows = list(c, s, serde_json::json!({"Cursor": (n + 1).to_string(), "Limit": 1})).await?;
            return Ok(rows.into_iter().find(|e| e.webhook_id == id));
        }
        WebhookId::Uuid(u) => {
            u.get_timestamp().map(|t| t.to_unix()).map_or(0, |(secs, nanos)| secs as i64 * 1000 + nanos as i64 / 1_000_000)
        }
    };
    let Some(newest) = list(c, s, serde_json::json!({"Limit": 1})).await?.into_iter().next() else { return Ok(None) };
    let lo = first_id(c, s, newest.event_id, |created| created > ms).await?;
    let near = list(c, s, serde_json::json!({"Cursor": (lo + 1).to_string(), "Limit": 200})).await?;
    if let Some(e) = near.into_iter().find(|e| e.webhook_id == id) {
        return Ok(Some(e));
    }
    let mut req = serde_json::json!({"StartTime": ms, "EndTime": ms + 1, "Limit": 1000});
    for _ in 0..20 {
        let page = match run(c, s, Api::ListEvents, req.clone()).await? {
            Reply::Events(p) => p,
            _ => return Ok(None),
        };
        if let Some(found) = page.events.into_iter().find(|e| e.webhook_id == id) {
            return Ok(Some(found));
        }
        if page.next_cursor.is_empty() {
            return Ok(None);
        }
        req["Cursor"] = page.next_cursor.into();
    }
    Ok(None)
}

/// `GET /console/apps/{app}/events/{WebhookId}`.
pub async fn event(State(c): C, headers: HeaderMap, Path((app, id)): Path<(String, String)>) -> Response {
    let s = match guard(&c, &headers, &app) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    event_page(&c, &s, &id, None).await
}

async fn event_page(c: &Console, s: &Session, id: &str, note: Option<Markup>) -> Response {
    let e = match find_event(c, s, id).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return page(
                StatusCode::NOT_FOUND,
                layout("No such event", Some(s), html! { p.error { "App " (s.app) " has no event " code { (id) } "." } }),
            )
        }
        Err(e) => return page(StatusCode::OK, layout("Event", Some(s), api_error(&e))),
    };
    let attempts = match run(c, s, Api::ListAttempts, serde_json::json!({"WebhookId": id})).await {
        Ok(Reply::Attempts(a)) => Ok(a.attempts),
        Ok(_) => Ok(vec![]),
        Err(e) => Err(e),
    };
    let ep = c.st.apps.get(s.app).and_then(|a| a.endpoint());
    let has_token = ep.as_ref().is_some_and(|e| e.token.is_some());
    let mut q = followd_protocol::webhook::query(s.app, e.command, &e.client_ip, e.platform, None);
    if has_token {
        q.push_str("&Sign=…&RequestTime=…");
    }
    let pretty = serde_json::from_str::<serde_json::Value>(e.body.get())
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_default();
    let body = html! {
        @if let Some(n) = note { (n) }
        section.card {
            dl.grid {
                dt { "WebhookId" } dd { code id="webhook-id" { (e.webhook_id) } }
                dt { "EventId" } dd { (e.event_id) }
                dt { "State" } dd id="state" { (state_badge(e.state)) }
                dt { "Webhook" } dd { (e.command.as_str()) }
                dt { "From_Account" } dd { a href=(format!("/console/apps/{}/users/{}", s.app, urlencode(e.from.as_str()))) { (e.from.as_str()) } }
                dt { "Created" } dd { (fmt_ms(e.created)) " UTC" }
                @if let Some(n) = e.next_attempt { dt { "Next attempt" } dd { (fmt_ms(n)) " UTC" } }
            }
            @if e.state != "pending" {
                form method="post" action=(format!("/console/apps/{}/events/{}/replay", s.app, e.webhook_id)) {
                    (csrf(s))
                    button type="submit" id="replay" { "Replay…" }
                }
            }
        }
        section.card {
            h2 { "Request" }
            p { "POST " code.wrap { (ep.as_ref().map_or("(no webhook URL set)".to_string(), |e| followd_webhook::dispatcher::redacted(&e.url).to_string())) "?" (q) } }
            h3 { "Headers" }
            pre { "Content-Type: application/json\nUser-Agent: " (followd_webhook::client::USER_AGENT) "\nwebhook-id: " (e.webhook_id) "\nwebhook-timestamp: (time of each attempt)" @if ep.as_ref().is_some_and(|e| e.signing_secret.is_some()) { "\nwebhook-signature: v1,… (per attempt)" } }
            h3 { "Body (exact bytes)" }
            pre id="body" { (e.body.get()) }
            @if pretty != e.body.get() { details { summary { "Formatted" } pre { (pretty) } } }
        }
        section.card {
            h2 { "Attempts" }
            @match &attempts {
                Err(e) => (api_error(e)),
                Ok(a) if a.is_empty() => p.muted id="no-attempts" { "No attempt yet." },
                Ok(a) => table id="attempts" {
                    thead { tr { th { "#" } th { "Time (UTC)" } th { "Outcome" } th { "HTTP" } th { "Duration" } th { "Error" } th { "Answer (excerpt)" } } }
                    tbody { @for t in a { tr {
                        td.num { (t.attempt) }
                        td { (fmt_ms(t.time)) }
                        td { span class=(format!("badge o-{}", t.outcome)) { (t.outcome) } }
                        td.num { (t.http_status.map_or("–".into(), |s| s.to_string())) }
                        td.num { (format!("{:.1} ms", t.duration_us as f64 / 1000.0)) }
                        td.err { (t.error) }
                        td { code.excerpt { (t.response.chars().take(200).collect::<String>()) } }
                    } } }
                },
            }
        }
    };
    page(StatusCode::OK, layout("Event", Some(s), body))
}

/// `POST /console/apps/{app}/events/{WebhookId}/replay`: asks first, replays with `confirm=yes`.
pub async fn replay_one(State(c): C, headers: HeaderMap, Path((app, id)): Path<(String, String)>, body: Bytes) -> Response {
    let (s, f) = match guard_post(&c, &headers, &app, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if f.get("confirm").map(String::as_str) != Some("yes") {
        let body = html! {
            p { "Send event " code { (id) } " to the webhook URL again? It keeps its webhook-id, so a receiver that already has it can drop it." }
            form method="post" action=(format!("/console/apps/{}/events/{}/replay", s.app, id)) {
                (csrf(&s))
                input type="hidden" name="confirm" value="yes";
                button type="submit" id="confirm" { "Yes, replay" }
                " " a href=(format!("/console/apps/{}/events/{}", s.app, id)) { "Cancel" }
            }
        };
        return page(StatusCode::OK, layout("Replay this event?", Some(&s), body));
    }
    let note = match run(&c, &s, Api::ReplayEvent, serde_json::json!({"WebhookId": id})).await {
        Ok(_) => html! { p.ok id="replayed" { "Queued for delivery again." } },
        Err(e) => api_error(&e),
    };
    event_page(&c, &s, &id, Some(note)).await
}

/// `POST /console/apps/{app}/replay-dead`: asks first (with how many), replays with `confirm=yes`.
pub async fn replay_dead(State(c): C, headers: HeaderMap, Path(app): Path<String>, body: Bytes) -> Response {
    let (s, f) = match guard_post(&c, &headers, &app, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (start, end) = (f.get("start").and_then(|v| parse_time(v)), f.get("end").and_then(|v| parse_time(v)));
    let (Some(start), Some(end)) = (start, end) else {
        let e = ApiError::new(followd_protocol::code::CONFIG_INVALID_PARAM, "give both ends of the range as dates and times");
        return page(StatusCode::OK, layout("Replay dead events", Some(&s), api_error(&e)));
    };
    if f.get("confirm").map(String::as_str) != Some("yes") {
        let n = match run(&c, &s, Api::ListEvents, serde_json::json!({"State": "dead", "StartTime": start, "EndTime": end, "Limit": 1000}))
            .await
        {
            Ok(Reply::Events(p)) => capped(p.events.len()),
            _ => "?".into(),
        };
        let body = html! {
            p { "Send again the " strong id="dead-count" { (n) } " dead events created from " (fmt_ms(start)) " to " (fmt_ms(end)) " UTC?" }
            form method="post" action=(format!("/console/apps/{}/replay-dead", s.app)) {
                (csrf(&s))
                input type="hidden" name="start" value=(start);
                input type="hidden" name="end" value=(end);
                input type="hidden" name="confirm" value="yes";
                button type="submit" id="confirm" { "Yes, replay them" }
                " " a href=(format!("/console/apps/{}/events?state=dead", s.app)) { "Cancel" }
            }
        };
        return page(StatusCode::OK, layout("Replay dead events?", Some(&s), body));
    }
    let body = match run(&c, &s, Api::ReplayDead, serde_json::json!({"StartTime": start, "EndTime": end})).await {
        Ok(Reply::Replayed(r)) => {
            html! { p.ok id="replayed" { (r.replayed) " events queued for delivery again." } a href=(format!("/console/apps/{}/events", s.app)) { "Back to the events" } }
        }
        Ok(_) => html! {},
        Err(e) => api_error(&e),
    };
    page(StatusCode::OK, layout("Replay dead events", Some(&s), body))
}

// ---------------------------------------------------------------- users

/// `GET /console/apps/{app}/users[?user=ID]`: a search box, or a redirect to the user's page.
pub async fn find_user(State(c): C, headers: HeaderMap, Path(app): Path<String>, raw: RawQuery) -> Response {
    let s = match guard(&c, &headers, &app) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Some(u) = query(&raw).get("user").map(|u| u.trim()).filter(|u| !u.is_empty()) {
        return redirect(&format!("/console/apps/{}/users/{}", s.app, urlencode(u)));
    }
    let body = html! {
        form.filters method="get" action=(format!("/console/apps/{}/users", s.app)) {
            label { "UserID" input type="text" name="user" id="user" required; }
            button type="submit" id="open-user" { "Open" }
        }
    };
    page(StatusCode::OK, layout("Users", Some(&s), body))
}

const LISTS: [(&str, u8, &str); 3] = [("followers", 1, "Followers"), ("following", 2, "Following"), ("mutual", 3, "Mutual")];

/// `GET /console/apps/{app}/users/{UserID}[?list=followers|following|mutual&cursor=…]`.
pub async fn user(State(c): C, headers: HeaderMap, Path((app, user)): Path<(String, String)>, raw: RawQuery) -> Response {
    let s = match guard(&c, &headers, &app) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let q = query(&raw);
    user_page(&c, &s, &user, &q, None).await
}

async fn user_page(c: &Console, s: &Session, user: &str, q: &HashMap<String, String>, note: Option<Markup>) -> Response {
    let (list, kind, _) = LISTS.iter().copied().find(|(k, _, _)| q.get("list").map(String::as_str) == Some(*k)).unwrap_or(LISTS[0]);
    let cursor = q.get("cursor").cloned().unwrap_or_default();
    let info = run(c, s, Api::FollowGetInfo, serde_json::json!({"From_Account": user, "To_Account": [user]})).await;
    let item = match &info {
        Ok(Reply::Info(i)) => i.follow_info.first(),
        _ => None,
    };
    let listed =
        run(c, s, Api::FollowGet, serde_json::json!({"From_Account": user, "FollowType": kind, "StartCursor": cursor, "WantNum": 100}))
            .await;
    let base = format!("/console/apps/{}/users/{}", s.app, urlencode(user));
    let body = html! {
        @if let Some(n) = note { (n) }
        @match (&info, item) {
            (Err(e), _) => (api_error(e)),
            (_, Some(i)) if i.result_code != 0 => p.error { "ErrorCode " (i.result_code) ": " (i.result_info) },
            (_, Some(i)) => section.stats {
                div.stat { span.label { "Followers" } span.value id="followers" { (i.follower_count) } }
                div.stat { span.label { "Following" } span.value id="following" { (i.following_count) } }
                div.stat { span.label { "Mutual" } span.value id="mutual" { (i.mutual_following_count) } }
            },
            _ => {},
        }
        nav.tabs {
            @for (k, _, label) in LISTS {
                a class=(if k == list { "tab active" } else { "tab" }) href=(format!("{base}?list={k}")) { (label) }
            }
        }
        @match &listed {
            Err(e) => (api_error(e)),
            Ok(Reply::Page(p)) => {
                @if p.follow_item.is_empty() { p.muted id="empty-list" { "Nobody." } }
                @else {
                    table id="people" {
                        thead { tr { th { "UserID" } th { "Nickname" } th { "Face URL" } th { "Since (UTC)" } } }
                        tbody { @for e in &p.follow_item { (person(s.app, e)) } }
                    }
                }
                @if !p.next_cursor.is_empty() {
                    p { a.button id="next-page" href=(format!("{base}?list={list}&cursor={}", urlencode(&p.next_cursor))) { "Next page →" } }
                }
            },
            Ok(_) => {},
        }
        section.card {
            h2 { "Act as " (user) }
            form.filters method="post" action=(format!("{base}/follow")) {
                (csrf(s))
                label { "Other UserID" input type="text" name="target" id="target" required; }
                button type="submit" name="action" value="follow" id="do-follow" { "Follow" }
                button type="submit" name="action" value="unfollow" id="do-unfollow" { "Unfollow" }
            }
        }
    };
    page(StatusCode::OK, layout(&format!("User {user}"), Some(s), body))
}

fn person(app: u64, e: &FollowEntry) -> Markup {
    let tag = |t: &str| e.profile_item.iter().find(|p| p.tag == t).map(|p| p.value.clone()).unwrap_or_default();
    html! {
        tr {
            td { a href=(format!("/console/apps/{app}/users/{}", urlencode(e.to_account.as_str()))) { (e.to_account.as_str()) } }
            td.nick { (tag("Tag_Profile_IM_Nick")) }
            td.face { code { (tag("Tag_Profile_IM_Image")) } }
            td { (fmt_ms(e.follow_time as i64 * 1000)) }
        }
    }
}

/// `POST /console/apps/{app}/users/{UserID}/follow`: `follow_add` / `follow_delete` as the admin.
pub async fn follow_action(State(c): C, headers: HeaderMap, Path((app, user)): Path<(String, String)>, body: Bytes) -> Response {
    let (s, f) = match guard_post(&c, &headers, &app, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let target = f.get("target").map(|t| t.trim().to_owned()).unwrap_or_default();
    let unfollow = f.get("action").map(String::as_str) == Some("unfollow");
    let (api, req) = if unfollow {
        (Api::FollowDelete, serde_json::json!({"From_Account": user, "To_Account": [target]}))
    } else {
        (Api::FollowAdd, serde_json::json!({"From_Account": user, "FollowItem": [{"To_Account": target}]}))
    };
    let note = match run(&c, &s, api, req).await {
        Ok(Reply::Items(r)) => match r.result_item.first() {
            Some(i) if i.result_code == 0 => {
                html! { p.ok id="acted" { (user) (if unfollow { " unfollowed " } else { " follows " }) (target) "." } }
            }
            Some(i) => html! { p.error { "ErrorCode " (i.result_code) ": " (i.result_info) } },
            None => html! {},
        },
        Ok(_) => html! {},
        Err(e) => api_error(&e),
    };
    user_page(&c, &s, &user, &HashMap::new(), Some(note)).await
}

// ---------------------------------------------------------------- live

/// `GET /console/apps/{app}/live`: events as they are committed and delivered (`live.js` reads the
/// stream below and adds rows as text).
pub async fn live(State(c): C, headers: HeaderMap, Path(app): Path<String>) -> Response {
    let s = match guard(&c, &headers, &app) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let body = html! {
        p.muted { "New events and state changes, newest on top. " span id="live-status" { "connecting…" } }
        table.events id="live" data-stream=(format!("/console/apps/{}/live/stream", s.app)) data-app=(s.app) {
            thead { tr { th { "Updated (UTC)" } th { "WebhookId" } th { "Webhook" } th { "From_Account" } th { "State" } th { "Attempts" } th { "Last error" } } }
            tbody {}
        }
        script src="/console/assets/live.js" {}
    };
    page(StatusCode::OK, layout("Live", Some(&s), body))
}

/// `GET /console/apps/{app}/live/stream`: server-sent events, one JSON object per new or changed
/// event, read from the log each second through `list_events`.
pub async fn live_stream(State(c): C, headers: HeaderMap, Path(app): Path<String>) -> Response {
    let s = match guard(&c, &headers, &app) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let stream = watch_log(c.clone(), s);
    let mut r = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    secure(r.headers_mut());
    r
}

/// Polls the log for `s`'s app until the browser goes away, the session ends or the server stops.
fn watch_log(c: Arc<Console>, s: Session) -> impl futures_util::Stream<Item = Result<SseEvent, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(64);
    let mut stop = c.st.stop.clone();
    tokio::spawn(async move {
        // What was last sent of each event (by id): its state and attempts.
        let mut seen: HashMap<i64, (String, u32)> = HashMap::new();
        let mut first = true;
        loop {
            // Signed out, expired, or signed in again elsewhere with this cookie: the stream ends.
            if !c.sessions.alive(&s.id, now_secs()) || *stop.borrow() {
                return;
            }
            if let Ok(Reply::Events(p)) = run(&c, &s, Api::ListEvents, serde_json::json!({"Limit": 100})).await {
                for e in p.events.iter().rev() {
                    let now = (e.state.to_string(), e.attempts);
                    if seen.get(&e.event_id) == Some(&now) {
                        continue;
                    }
                    seen.insert(e.event_id, now);
                    let msg = serde_json::json!({
                        "WebhookId": e.webhook_id, "Command": e.command.as_str(), "From_Account": e.from.as_str(),
                        "State": e.state, "Attempts": e.attempts, "LastError": e.last_error, "Updated": fmt_ms(e.updated),
                        "Url": format!("/console/apps/{}/events/{}", s.app, e.webhook_id),
                    });
                    if !first && tx.send(SseEvent::default().data(msg.to_string())).await.is_err() {
                        return;
                    }
                }
                if seen.len() > 10_000 {
                    seen.clear();
                }
                if first {
                    first = false;
                    if tx.send(SseEvent::default().event("ready").data("{}")).await.is_err() {
                        return;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = tx.closed() => return,
                _ = stop.changed() => return,
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) })
}
