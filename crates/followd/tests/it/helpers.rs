//! `spawn()` gives each test a fresh server: its own temp data dir, port 0, two apps.

use followd::config::Config;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tempfile::TempDir;

/// App A: the key and SDKAppID of vectors.json.
pub const APP_A: u64 = 1400000000;
pub const KEY_A: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
/// App B: another app on the same server, with small limits.
pub const APP_B: u64 = 1400000001;
pub const KEY_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
pub const ADMIN: &str = "administrator";

pub fn now() -> u64 {
    followd::now_secs()
}

pub fn sig(key: &str, app: u64, identifier: &str) -> String {
    followd_protocol::usersig::generate(key, app, identifier, now(), 3600, None)
}

/// The two-app config every test server starts from; the extras are appended to each app's table.
pub fn config_text(extra_a: &str, extra_b: &str) -> String {
    config_text_with_top("", extra_a, extra_b)
}

/// [`config_text`] with top-level keys first.
pub fn config_text_with_top(top: &str, extra_a: &str, extra_b: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
{top}
[[apps]]
sdkappid = {APP_A}
secret_key = "{KEY_A}"
admins = ["{ADMIN}", "admin2"]
{extra_a}

[[apps]]
sdkappid = {APP_B}
secret_key = "{KEY_B}"
admins = ["{ADMIN}"]
max_following = 2
max_mutual = 1
rate_limit_per_second = 1000000
{extra_b}
"#
    )
}

pub struct Server {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The server's own PostgreSQL database, when the suite runs on PostgreSQL (dropped last).
    pub pg: Option<crate::pg::TestDb>,
}

pub async fn spawn() -> Server {
    spawn_with("", "").await
}

pub async fn spawn_with(extra_a: &str, extra_b: &str) -> Server {
    spawn_with_top("", extra_a, extra_b).await
}

pub async fn spawn_with_top(top: &str, extra_a: &str, extra_b: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&config_text_with_top(top, extra_a, extra_b), dir.path()).unwrap();
    start(config, dir).await
}

/// Starts from config text of the test's own (for more apps than [`config_text`] has).
pub async fn spawn_config(text: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(text, dir.path()).unwrap();
    start(config, dir).await
}

/// Starts from a config file, which the server then watches for changes.
pub async fn spawn_from_file(path: &std::path::Path, dir: TempDir) -> Server {
    start(Config::load(path).unwrap(), dir).await
}

async fn start(mut config: Config, dir: TempDir) -> Server {
    let pg = match (crate::pg::api_on_pg(), std::env::var("FOLLOWD_TEST_DATABASE_URL")) {
        (true, Ok(admin)) if config.database_url.is_none() => Some(crate::pg::TestDb::create(&admin)),
        _ => None,
    };
    if let Some(db) = &pg {
        config.database_url = Some(db.url.clone());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(followd::run(config, listener, async move {
        let _ = stopped.await;
    }));
    Server { addr, dir, http: reqwest::Client::new(), stop: Some(stop), task: Some(task), pg }
}

impl Server {
    pub fn url(&self, api: &str, app: u64, identifier: &str, usersig: &str) -> String {
        format!("http://{}/v4/{api}?sdkappid={app}&identifier={identifier}&usersig={usersig}&random=42&contenttype=json", self.addr)
    }

    /// Posts raw bytes (no Content-Type header) and parses the JSON answer; asserts HTTP 200.
    pub async fn post_raw(&self, url: &str, body: impl Into<reqwest::Body>) -> Value {
        let r = self.http.post(url).body(body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Calls an API as app A's admin.
    pub async fn call(&self, api: &str, body: Value) -> Value {
        self.call_app(APP_A, KEY_A, api, body).await
    }

    /// Calls an API as the admin of `app`.
    pub async fn call_app(&self, app: u64, key: &str, api: &str, body: Value) -> Value {
        let url = self.url(api, app, ADMIN, &sig(key, app, ADMIN));
        self.post_raw(&url, body.to_string()).await
    }

    pub async fn import(&self, users: &[&str]) {
        self.import_app(APP_A, KEY_A, users).await
    }

    pub async fn import_app(&self, app: u64, key: &str, users: &[&str]) {
        let r = self.call_app(app, key, "im_open_login_svc/multiaccount_import", json!({ "Accounts": users })).await;
        assert_ok(&r);
        assert_eq!(r["FailAccounts"], json!([]));
    }

    pub async fn follow(&self, from: &str, to: &[&str]) -> Value {
        let items: Vec<Value> = to.iter().map(|t| json!({ "To_Account": t })).collect();
        self.call("follow/follow_add", json!({"From_Account": from, "FollowItem": items})).await
    }

    pub async fn unfollow(&self, from: &str, to: &[&str]) -> Value {
        self.call("follow/follow_delete", json!({"From_Account": from, "To_Account": to})).await
    }

    /// (followers, following, mutual) of one user in app A.
    pub async fn counts(&self, user: &str) -> (i64, i64, i64) {
        let r = self.call("follow/follow_get_info", json!({"From_Account": user, "To_Account": [user]})).await;
        assert_ok(&r);
        let i = &r["FollowInfo"][0];
        (i["FollowerCount"].as_i64().unwrap(), i["FollowingCount"].as_i64().unwrap(), i["MutualFollowingCount"].as_i64().unwrap())
    }

    /// A whole list, page by page; returns UserIDs in order.
    pub async fn list(&self, user: &str, follow_type: u8, want: u64) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let r = self
                .call("follow/follow_get", json!({"From_Account": user, "FollowType": follow_type, "StartCursor": cursor, "WantNum": want}))
                .await;
            assert_ok(&r);
            let items = r["FollowItem"].as_array().unwrap();
            assert!(items.len() as u64 <= want);
            out.extend(items.iter().map(|i| i["To_Account"].as_str().unwrap().to_owned()));
            cursor = r["NextCursor"].as_str().unwrap().to_owned();
            if cursor.is_empty() {
                return out;
            }
            assert!(!items.is_empty(), "a page with a next cursor must not be empty");
        }
    }

    /// Rows of the webhook outbox: (command, from, body).
    pub fn events(&self) -> Vec<(String, String, Value)> {
        if let Some(pg) = &self.pg {
            return pg.with(|c| {
                c.query("SELECT command, from_account, body FROM events ORDER BY id", &[])
                    .unwrap()
                    .iter()
                    .map(|r| (r.get(0), r.get(1), serde_json::from_str(r.get::<_, &str>(2)).unwrap()))
                    .collect()
            });
        }
        let db = rusqlite::Connection::open(self.dir.path().join("data/followd.db")).unwrap();
        let mut st = db.prepare("SELECT command, from_account, body FROM events ORDER BY id").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, serde_json::from_str(&r.get::<_, String>(2)?).unwrap())))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// One integer from the server's database, whichever backend it runs on.
    pub fn query_i64(&self, sql: &str) -> i64 {
        if let Some(pg) = &self.pg {
            let sql = sql.to_owned();
            return pg.with(move |c| c.query_one(sql.as_str(), &[]).unwrap().get(0));
        }
        rusqlite::Connection::open(self.dir.path().join("data/followd.db")).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Ends the server without waiting for in-flight webhook attempts.
    pub async fn stop_quickly(mut self) {
        let task = self.task.take().unwrap();
        task.abort();
        let _ = task.await;
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

pub fn assert_ok(r: &Value) {
    assert_eq!(r["ActionStatus"], "OK", "{r}");
    assert_eq!(r["ErrorCode"], 0, "{r}");
    assert!(r["RequestId"].is_string(), "{r}");
}

pub fn assert_fail(r: &Value, code: u64) {
    assert_eq!(r["ActionStatus"], "FAIL", "{r}");
    assert_eq!(r["ErrorCode"], code, "{r}");
    assert!(!r["ErrorInfo"].as_str().unwrap().is_empty(), "{r}");
}

/// The per-item codes of a batch answer, in order.
pub fn codes(r: &Value) -> Vec<(String, u64)> {
    r["ResultItem"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["To_Account"].as_str().unwrap().to_owned(), i["ResultCode"].as_u64().unwrap()))
        .collect()
}
