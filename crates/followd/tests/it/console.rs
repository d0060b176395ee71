//! The web console over plain HTTP: sign-in checked like the REST API, the session cookie, CSRF, one
//! app's admin refused another app's pages, user strings rendered inert, the security headers, and
//! `console = false`. The same pages in a real browser are in `console_browser`.

use crate::helpers::*;
use crate::receiver::Receiver;
use crate::webhooks::{hook, wait_state};
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

pub const XSS: &str = "<img src=x onerror=alert(1)>";

/// A client that does not follow redirects (the tests read them) and keeps no cookies.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Signs in through the form; returns the session cookie (`name=value`).
pub async fn sign_in(s: &Server, app: u64, key: &str, identifier: &str) -> reqwest::Response {
    let sig = followd_protocol::usersig::generate(key, app, identifier, now(), 3600, None);
    let form =
        format!("sdkappid={app}&identifier={identifier}&usersig={}", form_urlencoded::byte_serialize(sig.as_bytes()).collect::<String>());
    client()
        .post(format!("http://{}/console/login", s.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
}

pub async fn session(s: &Server, app: u64, key: &str) -> String {
    let r = sign_in(s, app, key, ADMIN).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let c = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    c.split(';').next().unwrap().to_owned()
}

async fn get(s: &Server, cookie: &str, path: &str) -> (StatusCode, String) {
    let r = client().get(format!("http://{}{path}", s.addr)).header(COOKIE, cookie).send().await.unwrap();
    let status = r.status();
    let csp = r.headers().get(CONTENT_SECURITY_POLICY).map(|v| v.to_str().unwrap().to_owned());
    if status == StatusCode::OK {
        let csp = csp.expect("every page has a CSP");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    }
    (status, r.text().await.unwrap())
}

async fn post(s: &Server, cookie: &str, path: &str, form: &str) -> (StatusCode, String) {
    let r = client()
        .post(format!("http://{}{path}", s.addr))
        .header(COOKIE, cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// The CSRF token of a page's forms.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    html[at..at + 32].to_owned()
}

#[tokio::test]
async fn sign_in_is_checked_like_the_rest_api_and_the_cookie_is_strict() {
    let s = spawn().await;
    let r = sign_in(&s, APP_A, KEY_A, ADMIN).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], format!("/console/apps/{APP_A}"));
    let set = r.headers()[SET_COOKIE].to_str().unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/console"), "{set}");
    let max_age: u64 = set.split("Max-Age=").nth(1).unwrap().parse().unwrap();
    assert!(max_age <= 3600, "the session ends with the UserSig: {set}");
    assert!(!set.contains(&sig(KEY_A, APP_A, ADMIN)[..20]), "the UserSig is not in the cookie");

    // A non-admin, a bad UserSig and an unknown app get the API's own code and message.
    for (app, key, who, api_app) in [(APP_A, KEY_A, "alice", APP_A), (APP_A, KEY_B, ADMIN, APP_A), (999, KEY_A, ADMIN, 999)] {
        let r = sign_in(&s, app, key, who).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let page = r.text().await.unwrap();
        let api = s
            .post_raw(
                &s.url("follow/follow_get_info", api_app, who, &followd_protocol::usersig::generate(key, app, who, now(), 3600, None)),
                "{}",
            )
            .await;
        let want = format!("ErrorCode {}: {}", api["ErrorCode"], api["ErrorInfo"].as_str().unwrap());
        assert!(page.contains(&want), "{want} not in {page}");
    }

    // Without a session every page sends to the login page.
    let (st, _) = get(&s, "followd_console=00000000000000000000000000000000", &format!("/console/apps/{APP_A}")).await;
    assert_eq!(st, StatusCode::SEE_OTHER);

    // Sign-out needs the CSRF token and ends the session.
    let cookie = session(&s, APP_A, KEY_A).await;
    let (st, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}")).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = post(&s, &cookie, "/console/logout", &format!("csrf={}", csrf_of(&html))).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert_eq!(get(&s, &cookie, &format!("/console/apps/{APP_A}")).await.0, StatusCode::SEE_OTHER);
    s.stop().await;
}

#[tokio::test]
async fn another_apps_pages_and_actions_are_refused_and_posts_need_the_csrf_token() {
    let s = spawn().await;
    s.import_app(APP_B, KEY_B, &["bob", "carol"]).await;
    let cookie = session(&s, APP_A, KEY_A).await;
    for path in ["", "/webhook", "/events", "/users/bob", "/live", "/live/stream", "/events/evt_1"] {
        let (st, html) = get(&s, &cookie, &format!("/console/apps/{APP_B}{path}")).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}");
        assert!(!html.contains("bob") || path == "/users/bob", "{path}");
    }
    let (_, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}/users/x")).await;
    let token = csrf_of(&html);
    let (st, _) =
        post(&s, &cookie, &format!("/console/apps/{APP_B}/users/bob/follow"), &format!("csrf={token}&target=carol&action=follow")).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    s.import(&["alice", "dave"]).await;
    // Without the token, or with another one, nothing is done.
    for form in ["target=dave&action=follow".to_string(), format!("csrf={}&target=dave&action=follow", "0".repeat(32))] {
        let (st, _) = post(&s, &cookie, &format!("/console/apps/{APP_A}/users/alice/follow"), &form).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
    }
    assert_eq!(s.counts("alice").await, (0, 0, 0));
    let (st, html) =
        post(&s, &cookie, &format!("/console/apps/{APP_A}/users/alice/follow"), &format!("csrf={token}&target=dave&action=follow")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("alice follows dave"), "{html}");
    assert_eq!(s.counts("alice").await, (0, 1, 0));
    let r = s.call_app(APP_B, KEY_B, "follow/follow_get_info", json!({"From_Account": "bob", "To_Account": ["bob"]})).await;
    assert_eq!(r["FollowInfo"][0]["FollowingCount"], 0, "app B untouched");
    s.stop().await;
}

#[tokio::test]
async fn user_strings_are_rendered_as_text() {
    let rx = Receiver::start().await;
    rx.rule(|_| crate::receiver::Behavior::Status(500));
    let s = spawn_with(&hook(&rx.url("/hook?x=1"), "retry = \"none\""), "").await;
    let r = s.call("im_open_login_svc/account_import", json!({"UserID": XSS, "Nick": XSS, "FaceUrl": format!("https://x/{XSS}")})).await;
    assert_ok(&r);
    s.import(&["alice"]).await;
    assert_ok(&s.follow(XSS, &["alice"]).await);
    wait_state(&s, 1, "dead").await;
    let cookie = session(&s, APP_A, KEY_A).await;
    for path in ["/users/alice".to_string(), "/events".to_string(), format!("/users/{}", "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")] {
        let (st, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}{path}")).await;
        assert_eq!(st, StatusCode::OK, "{path}");
        assert!(!html.contains("<img"), "{path}: {html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"), "{path}: {html}");
    }
    s.stop().await;
}

#[tokio::test]
async fn the_console_can_be_turned_off() {
    let s = spawn_with_top("console = false", "", "").await;
    let r = client().get(format!("http://{}/console/login", s.addr)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s.call("follow/follow_get_info", json!({"From_Account": "a", "To_Account": ["a"]})).await;
    assert_eq!(r["ActionStatus"], "FAIL", "the REST API still answers");
    s.stop().await;
}

#[tokio::test]
async fn overview_events_and_replay_through_the_forms() {
    let rx = Receiver::start().await;
    rx.rule(|_| crate::receiver::Behavior::Status(503));
    let s = spawn_with(&hook(&rx.url("/hook"), "retry = \"none\""), "").await;
    s.import(&["alice", "bob"]).await;
    assert_ok(&s.follow("alice", &["bob"]).await);
    let dead = wait_state(&s, 1, "dead").await;
    let wid = dead["WebhookId"].as_str().unwrap().to_owned();
    let cookie = session(&s, APP_A, KEY_A).await;
    let (st, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("id=\"dead\">1<"), "{html}");
    assert!(html.contains("http_status"), "the chart's legend counts the failed attempt: {html}");
    assert!(html.contains("id=\"breaker\">closed (1 failures in a row)<"), "{html}");
    // Accounts and edges are counted in the background: the first overview may not have them yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}")).await;
        if html.contains("id=\"accounts\">2<") {
            assert!(html.contains("id=\"edges\">1<"), "{html}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{html}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}/events?state=dead")).await;
    assert!(html.contains(&wid), "{html}");
    // A filter no index serves searches a window of the log and says which.
    let (_, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}/events?from=alice")).await;
    assert!(html.contains(&wid) && html.contains("Searched events 1 to 1 of the log."), "{html}");
    // A time range is searched as the id range it covers.
    for (range, found) in [("start=2000-01-01T00:00", true), ("end=2000-01-01T00:00", false), ("start=2999-01-01T00:00", false)] {
        let (_, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}/events?{range}")).await;
        assert_eq!(html.contains(&wid), found, "{range}: {html}");
        assert!(!html.contains("next-page"), "{range}: {html}");
    }
    let (_, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}/events?from=bob")).await;
    assert!(html.contains("No events."), "{html}");
    let (_, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}/events?command=bogus")).await;
    assert!(html.contains("ErrorCode 100002") || html.contains("is not a Follow webhook command"), "{html}");
    let (_, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}/events?state=delivered")).await;
    assert!(html.contains("No events."), "{html}");
    let (st, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}/events/{wid}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("HTTP 503") && html.contains("&quot;From_Account&quot;:&quot;alice&quot;"), "{html}");
    let token = csrf_of(&html);
    rx.rule(|_| crate::receiver::Behavior::Ok);
    // The first POST asks; nothing is replayed until confirmed.
    let (_, html) = post(&s, &cookie, &format!("/console/apps/{APP_A}/events/{wid}/replay"), &format!("csrf={token}")).await;
    assert!(html.contains("Yes, replay"), "{html}");
    assert_eq!(wait_state(&s, 1, "dead").await["State"], "dead");
    let (_, html) = post(&s, &cookie, &format!("/console/apps/{APP_A}/events/{wid}/replay"), &format!("csrf={token}&confirm=yes")).await;
    assert!(html.contains("Queued for delivery again"), "{html}");
    wait_state(&s, 1, "delivered").await;
    let (_, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}/events/{wid}")).await;
    assert!(html.contains("s-delivered") && html.contains("HTTP 503"), "both attempts are listed: {html}");
    // Unknown and malformed ids are a clean 404.
    for id in ["evt_019a6f3c-58e2-7b41-9c1d-2f0e6a8b4d71", "nope", "evt_99"] {
        assert_eq!(get(&s, &cookie, &format!("/console/apps/{APP_A}/events/{id}")).await.0, StatusCode::NOT_FOUND, "{id}");
    }
    // A bad time in a filter is an error message, not a failure.
    let (st, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}/events?start=yesterday")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("start: not a date and time"), "{html}");
    s.stop().await;
}

/// Signs in with extra request headers (a proxy's, a browser's).
async fn sign_in_with(s: &Server, headers: &[(&str, String)], cookie: Option<&str>) -> reqwest::Response {
    let sig = followd_protocol::usersig::generate(KEY_A, APP_A, ADMIN, now(), 3600, None);
    let form =
        format!("sdkappid={APP_A}&identifier={ADMIN}&usersig={}", form_urlencoded::byte_serialize(sig.as_bytes()).collect::<String>());
    let mut r =
        client().post(format!("http://{}/console/login", s.addr)).header("content-type", "application/x-www-form-urlencoded").body(form);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    if let Some(c) = cookie {
        r = r.header(COOKIE, c);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn another_sites_forms_are_refused_and_the_cookie_is_secure_over_https() {
    let s = spawn().await;
    let host = s.addr.to_string();
    // Another site's form: refused before sign-in (no cookie) and before any action.
    for h in [("sec-fetch-site", "cross-site".to_string()), ("origin", "http://evil.example".to_string())] {
        let r = sign_in_with(&s, std::slice::from_ref(&h), None).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{h:?}");
        assert!(r.headers().get(SET_COOKIE).is_none(), "{h:?}");
        assert!(r.headers().get(CONTENT_SECURITY_POLICY).is_some());
    }
    s.import(&["alice", "dave"]).await;
    let cookie = session(&s, APP_A, KEY_A).await;
    let (_, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}/users/alice")).await;
    let r = client()
        .post(format!("http://{}/console/apps/{APP_A}/users/alice/follow", s.addr))
        .header(COOKIE, &cookie)
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}&target=dave&action=follow", csrf_of(&html)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.counts("alice").await, (0, 0, 0));
    // The console's own pages (same origin) sign in; over HTTPS (a proxy says so) the cookie is Secure.
    let r = sign_in_with(&s, &[("origin", format!("http://{host}")), ("sec-fetch-site", "same-origin".into())], None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(!r.headers()[SET_COOKIE].to_str().unwrap().contains("Secure"));
    let r = sign_in_with(&s, &[("x-forwarded-proto", "https".into())], None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()[SET_COOKIE].to_str().unwrap().contains("; Secure"), "{:?}", r.headers()[SET_COOKIE]);
    // Signing in again from the same browser ends its previous session.
    let r = sign_in_with(&s, &[], Some(&cookie)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(get(&s, &cookie, &format!("/console/apps/{APP_A}")).await.0, StatusCode::SEE_OTHER);
    s.stop().await;
}

#[tokio::test]
async fn error_pages_carry_the_security_headers() {
    let s = spawn().await;
    let cookie = session(&s, APP_A, KEY_A).await;
    for (method, path, want) in [
        ("GET", "/console/assets/nope.js", StatusCode::NOT_FOUND),
        ("GET", "/console/nosuch", StatusCode::NOT_FOUND),
        ("GET", "/console/apps/1/events/a/b/c", StatusCode::NOT_FOUND),
        ("GET", "/console/logout", StatusCode::METHOD_NOT_ALLOWED),
        ("POST", &format!("/console/apps/{APP_A}/webhook/test"), StatusCode::FORBIDDEN),
    ] {
        let r = client().request(method.parse().unwrap(), format!("http://{}{path}", s.addr)).header(COOKIE, &cookie).send().await.unwrap();
        assert_eq!(r.status(), want, "{method} {path}");
        let csp = r.headers().get(CONTENT_SECURITY_POLICY).unwrap_or_else(|| panic!("{method} {path}: no CSP"));
        assert!(csp.to_str().unwrap().contains("script-src 'self'"));
        assert_eq!(r.headers()["x-frame-options"], "DENY", "{method} {path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn sign_out_ends_the_live_stream() {
    let s = spawn().await;
    let cookie = session(&s, APP_A, KEY_A).await;
    let mut r = client().get(format!("http://{}/console/apps/{APP_A}/live/stream", s.addr)).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut got = String::new();
    while !got.contains("event: ready") {
        got.push_str(&String::from_utf8_lossy(&r.chunk().await.unwrap().expect("the stream is open")));
    }
    let (_, html) = get(&s, &cookie, &format!("/console/apps/{APP_A}")).await;
    let (st, _) = post(&s, &cookie, "/console/logout", &format!("csrf={}", csrf_of(&html))).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    // The stream closes within a few polls (bounded so that a stream left open fails, not hangs).
    let ended = tokio::time::timeout(std::time::Duration::from_secs(60), async { while let Ok(Some(_)) = r.chunk().await {} }).await;
    assert!(ended.is_ok(), "the live stream outlived the session");
    s.stop().await;
}

/// The `<code>` text of the page's `dd id="secret"`.
fn shown_secret(html: &str) -> String {
    let at = html.find("id=\"secret\"").expect("the secret's row");
    let code = html[at..].find("<code>").unwrap() + at + 6;
    let end = html[code..].find("</code>").unwrap() + code;
    html[code..end].to_owned()
}

#[tokio::test]
async fn the_signing_secret_is_rotated_from_the_console_and_signs_the_next_webhook() {
    use followd_receiver::Verifier;
    const OLD: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let rx = Receiver::start().await;
    let s = spawn_with(&hook(&rx.url("/hook"), &format!("signing_secret = \"{OLD}\"")), "").await;
    s.import(&["alice", "bob", "carol"]).await;
    let cookie = session(&s, APP_A, KEY_A).await;
    let page = format!("/console/apps/{APP_A}/webhook");
    let (_, html) = get(&s, &cookie, &page).await;
    assert!(!html.contains(OLD) && shown_secret(&html).starts_with("whs"), "masked: {html}");
    let token = csrf_of(&html);
    // A malformed secret is refused and changes nothing; without the CSRF token nothing happens.
    let (_, html) = post(&s, &cookie, &format!("{page}/secret"), &format!("csrf={token}&action=set&secret=whsec_c2hvcnQ%3D")).await;
    assert!(html.contains("must be whsec_"), "{html}");
    assert_eq!(post(&s, &cookie, &format!("{page}/secret"), "action=generate").await.0, StatusCode::FORBIDDEN);
    assert_eq!(shown_secret(&get(&s, &cookie, &format!("{page}?reveal=1")).await.1), OLD);
    // Rotate: the answer masks the new secret; revealing shows it.
    let (st, html) = post(&s, &cookie, &format!("{page}/secret"), &format!("csrf={token}&action=generate")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("id=\"secret-saved\"") && html.contains("set here"), "{html}");
    let masked = shown_secret(&html);
    let (_, html) = get(&s, &cookie, &format!("{page}?reveal=1")).await;
    let new = shown_secret(&html);
    assert!(new.starts_with("whsec_") && new != OLD && new.len() > 40 && !masked.contains(&new[6..]), "{new} / {masked}");
    // The next webhook verifies with the new secret, not the old one.
    assert_ok(&s.follow("alice", &["bob"]).await);
    let got = rx.wait_for(1, 20).await;
    let r = &got[0];
    let ok = Verifier::new(APP_A).signing_secret(new.clone()).verify(&r.query, &r.headers, &r.body);
    assert!(ok.is_ok(), "{ok:?}");
    assert!(Verifier::new(APP_A).signing_secret(OLD).verify(&r.query, &r.headers, &r.body).is_err());
    // Setting one by hand works the same way.
    let mine = "whsec_YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=";
    let (_, html) = post(&s, &cookie, &format!("{page}/secret"), &format!("csrf={token}&action=set&secret={}", urlenc(mine))).await;
    assert!(html.contains("id=\"secret-saved\"") && !html.contains(mine), "{html}");
    assert_ok(&s.follow("alice", &["carol"]).await);
    let got = rx.wait_for(2, 20).await;
    let r = &got[1];
    assert!(Verifier::new(APP_A).signing_secret(mine).verify(&r.query, &r.headers, &r.body).is_ok());
    s.stop().await;
}

fn urlenc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `list_events`' `after_id` bounds the scan from below on the store the suite runs on (the
/// console's filtered search reads the log a window at a time through it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_events_after_id_bounds_the_scan_on_every_store() {
    use followd_graph::outbox::{EventFilter, Outbox};
    let rx = Receiver::start().await;
    let s = spawn_with(&hook(&rx.url("/hook"), ""), "").await;
    s.import(&["alice", "bob", "carol", "dave"]).await;
    for to in ["bob", "carol", "dave"] {
        assert_ok(&s.follow("alice", &[to]).await);
    }
    rx.wait_for(3, 20).await;
    let outbox: Box<dyn Outbox> = match &s.pg {
        Some(db) => {
            let url = db.url.clone();
            Box::new(crate::pg::blocking(move || followd_store::PgStore::open(&url, Default::default(), 16).unwrap()))
        }
        None => Box::new(
            followd_store::SqliteStore::open(&s.dir.path().join("data"), followd_store::sqlite::Durability::Process, Default::default())
                .unwrap(),
        ),
    };
    let filter = |after_id| EventFilter { after_id, limit: 100, ..Default::default() };
    let all: Vec<i64> = outbox.list_events(APP_A, filter(None)).await.unwrap().iter().map(|r| r.event.id).collect();
    assert_eq!(all.len(), 3, "{all:?}");
    let above: Vec<i64> = outbox.list_events(APP_A, filter(Some(all[2]))).await.unwrap().iter().map(|r| r.event.id).collect();
    assert_eq!(above, all[..2], "only the events above after_id, newest first");
    assert!(outbox.list_events(APP_A, filter(Some(all[0]))).await.unwrap().is_empty());
    drop(outbox);
    s.stop().await;
}
