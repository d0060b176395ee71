//! The web console in a real browser: headless Chromium driven through chromedriver's WebDriver
//! protocol (a few JSON-over-HTTP calls, spoken here with reqwest). Skips, saying why, when
//! `chromium` or `chromedriver` is not installed (`.ci/browser` installs both). Every page visited
//! is saved as a PNG under `target/console-screenshots/`.

use crate::console::XSS;
use crate::helpers::*;
use crate::receiver::{Behavior, Receiver};
use crate::webhooks::{hook, wait_state};
use base64::Engine as _;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(name)).find(|p| p.is_file())
}

struct Browser {
    http: reqwest::Client,
    base: String,
    child: std::process::Child,
    origin: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// A headless Chromium session, or `None` (with the reason printed) when there is no browser.
    async fn start(origin: &str) -> Option<Browser> {
        let (Some(chromium), Some(driver)) = (which("chromium"), which("chromedriver")) else {
            eprintln!("SKIPPED: the console's browser tests need `chromium` and `chromedriver` (run .ci/browser)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser { http, base, child, origin: origin.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.http.get(format!("{}/status", b.base)).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000", "--hide-scrollbars"]
        }}}});
        let r: Value = b.http.post(format!("{}/session", b.base)).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {r}")).to_owned();
        b.base = format!("{}/session/{id}", b.base);
        Some(b)
    }

    async fn try_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        match r["value"].get("error") {
            Some(e) => Err(format!("WebDriver {path}: {e} {}", r["value"]["message"])),
            None => Ok(r["value"].clone()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body).await.unwrap_or_else(|e| panic!("{e}"))
    }

    async fn goto(&self, path: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": format!("{}{path}", self.origin)}))).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self.call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("{css}: {v}")).to_owned()
    }

    async fn all_text(&self, css: &str) -> Vec<String> {
        let v = self.call(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        let mut out = Vec::new();
        for e in v.as_array().unwrap() {
            let id = e[ELEMENT].as_str().unwrap();
            out.push(self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None).await.as_str().unwrap().to_owned());
        }
        out
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None).await.as_str().unwrap().to_owned()
    }

    async fn type_in(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/clear"), Some(json!({}))).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({"text": text}))).await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None).await.as_str().unwrap().to_owned()
    }

    /// The page's text; "" while a navigation replaces the page.
    async fn body_text(&self) -> String {
        let Ok(v) = self.try_call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": "body"}))).await else {
            return String::new();
        };
        let id = v[ELEMENT].as_str().unwrap_or_default().to_owned();
        self.try_call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Waits (reloading with `reload`) until the page's text contains `want`.
    async fn wait_for_text(&self, want: &str, reload: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t = self.body_text().await;
            if t.contains(want) {
                return;
            }
            assert!(Instant::now() < deadline, "never saw {want:?} in {t}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            if reload {
                self.call(reqwest::Method::POST, "/refresh", Some(json!({}))).await;
            }
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    async fn sign_in(&self, app: u64, key: &str, identifier: &str, usersig: Option<&str>) {
        self.goto("/console/login").await;
        self.type_in("input[name=sdkappid]", &app.to_string()).await;
        self.type_in("input[name=identifier]", identifier).await;
        let sig = usersig.map(str::to_owned).unwrap_or_else(|| sig(key, app, identifier));
        self.type_in("input[name=usersig]", &sig).await;
        self.click("#signin").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sign_in_deliver_fail_fix_replay_and_settings() {
    let rx = Receiver::start().await;
    let s = spawn_with(&hook(&rx.url("/hook"), "retry = \"none\""), "").await;
    let Some(b) = Browser::start(&format!("http://{}", s.addr)).await else { return };
    s.import(&["alice", "bob", "carol", "dave"]).await;

    // Sign-in refused: a non-admin gets the API's own message.
    b.sign_in(APP_A, KEY_A, "alice", None).await;
    b.wait_for_text("ErrorCode 30004: alice is not an app admin", false).await;
    b.screenshot("login-refused").await;
    b.sign_in(APP_A, KEY_A, ADMIN, Some("garbage")).await;
    b.wait_for_text("ErrorCode 70003", false).await;

    // Signed in; an event is delivered.
    b.sign_in(APP_A, KEY_A, ADMIN, None).await;
    b.wait_for_text(&format!("App {APP_A}"), false).await;
    assert_ok(&s.follow("alice", &["bob"]).await);
    wait_state(&s, 1, "delivered").await;
    b.goto(&format!("/console/apps/{APP_A}/events")).await;
    assert!(b.all_text("#events tbody tr").await[0].contains("delivered"));

    // The receiver fails: the event goes dead and its page shows the attempt.
    rx.rule(|_| Behavior::Status(500));
    assert_ok(&s.follow("alice", &["carol"]).await);
    let dead = wait_state(&s, 2, "dead").await;
    let wid = dead["WebhookId"].as_str().unwrap();
    b.goto(&format!("/console/apps/{APP_A}/events?state=dead")).await;
    b.screenshot("events").await;
    b.click(&format!("a[href$='{wid}']")).await;
    b.wait_for_text("HTTP 500", false).await;
    assert_eq!(b.text("#state").await, "dead");
    // Fixed; replayed after a confirmation; delivered.
    rx.rule(|_| Behavior::Ok);
    b.click("#replay").await;
    b.wait_for_text("Replay this event?", false).await;
    b.click("#confirm").await;
    b.wait_for_text("Queued for delivery again", false).await;
    // A GET of the event's page (a reload of the answer to the POST would post it again).
    b.goto(&format!("/console/apps/{APP_A}/events/{wid}")).await;
    b.wait_for_text("delivered", true).await;
    assert_eq!(b.all_text("#attempts tbody tr").await.len(), 2);
    b.screenshot("event").await;

    // Change the URL and send a test event.
    let rx2 = Receiver::start().await;
    b.goto(&format!("/console/apps/{APP_A}/webhook")).await;
    b.type_in("#url", &rx2.url("/second")).await;
    b.click("#save-url").await;
    b.wait_for_text("Saved.", false).await;
    b.click("#send-test").await;
    b.wait_for_text("HTTP status", false).await;
    assert_eq!(b.text("#test-status").await, "200");
    let got = rx2.wait_for(1, 10).await;
    assert_eq!(got[0].json()["CallbackCommand"], "Follow.CallbackAfterFollowDelete");
    b.screenshot("webhook").await;

    // The live view shows an event committed after it opened.
    b.goto(&format!("/console/apps/{APP_A}/live")).await;
    b.wait_for_text("connected", false).await;
    assert_ok(&s.follow("dave", &["alice"]).await);
    b.wait_for_text("dave", false).await;
    b.screenshot("live").await;

    // The overview, with the attempts in its charts.
    // Accounts and edges are counted in the background, at most every 10 s: wait for a fresh count.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        b.goto(&format!("/console/apps/{APP_A}")).await;
        let page = b.source().await;
        if page.contains("id=\"edges\">3<") && page.contains("id=\"accounts\">4<") {
            break;
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(b.text("#breaker").await, "closed");
    b.screenshot("overview").await;

    // Another app's page, by editing the URL.
    b.goto(&format!("/console/apps/{APP_B}/events")).await;
    b.wait_for_text(&format!("cannot see app {APP_B}"), false).await;
    b.screenshot("another-app").await;

    // XSS strings are text: the browser shows them literally and runs nothing (an alert would make
    // every later WebDriver command fail).
    let r = s.call("im_open_login_svc/account_import", json!({"UserID": XSS, "Nick": XSS, "FaceUrl": format!("https://x/{XSS}")})).await;
    assert_ok(&r);
    assert_ok(&s.follow(XSS, &["bob"]).await);
    b.goto(&format!("/console/apps/{APP_A}/users/bob")).await;
    let rows = b.all_text("#people td.nick").await;
    assert!(rows.iter().any(|r| r == XSS), "{rows:?}");
    assert!(b.source().await.contains("&lt;img src=x"));
    b.screenshot("user-xss").await;

    // Sign-out ends the session.
    b.click("#signout").await;
    b.wait_for_text("Sign in", false).await;
    b.goto(&format!("/console/apps/{APP_A}")).await;
    b.wait_for_text("UserSig", false).await;
    b.screenshot("login").await;
    drop(b);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_pages_through_a_user_with_2500_followers() {
    let s = spawn().await;
    let Some(b) = Browser::start(&format!("http://{}", s.addr)).await else { return };
    let users: Vec<String> = (0..2500).map(|i| format!("fan{i:04}")).collect();
    s.import(&["star"]).await;
    for chunk in users.chunks(100) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        s.import(&refs).await;
    }
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for part in users.chunks(313) {
        let (s, part) = (s.clone(), part.to_vec());
        tasks.push(tokio::spawn(async move {
            for u in part {
                assert_ok(&s.follow(&u, &["star"]).await);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    b.sign_in(APP_A, KEY_A, ADMIN, None).await;
    b.wait_for_text("Overview", false).await;
    b.goto(&format!("/console/apps/{APP_A}/users")).await;
    b.type_in("#user", "star").await;
    b.click("#open-user").await;
    b.wait_for_text("User star", false).await;
    assert_eq!(b.text("#followers").await, "2500");
    b.screenshot("user").await;
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    loop {
        let ids = b.all_text("#people tbody tr td:first-child").await;
        assert!(!ids.is_empty() && ids.len() <= 100);
        for id in ids {
            assert!(seen.insert(id.clone()), "{id} twice");
        }
        pages += 1;
        if !b.source().await.contains("id=\"next-page\"") {
            break;
        }
        b.click("#next-page").await;
    }
    assert_eq!(seen.len(), 2500);
    assert_eq!(pages, 25);
    drop(b);
    std::sync::Arc::try_unwrap(s).ok().unwrap().stop().await;
}
