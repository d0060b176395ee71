//! The crash test: the real `followd` binary is killed with SIGKILL during concurrent writes; after a
//! restart every acknowledged write is there and every count agrees with the edges.

use crate::binary::start;
use crate::helpers::*;
use rand::Rng as _;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USERS: usize = 120;
const WRITERS: usize = 6;

fn url(addr: &str, api: &str) -> String {
    format!("http://{addr}/v4/{api}?sdkappid={APP_A}&identifier={ADMIN}&usersig={}&contenttype=json", sig(KEY_A, APP_A, ADMIN))
}

pub async fn post(http: &reqwest::Client, addr: &str, api: &str, body: Value) -> Result<Value, reqwest::Error> {
    http.post(url(addr, api)).body(body.to_string()).send().await?.json().await
}

fn name(i: usize) -> String {
    format!("u{i:03}")
}

#[derive(Default)]
struct Model {
    /// Acknowledged state of each edge touched.
    acked: HashMap<(String, String), bool>,
    /// Edges of requests that got no answer: either state is allowed.
    uncertain: HashSet<(String, String)>,
    acks: usize,
}

async fn writer(http: reqwest::Client, addr: String, part: usize, model: Arc<Mutex<Model>>) {
    loop {
        let (from, targets, add) = {
            let mut rng = rand::rng();
            let from = name(rng.random_range(0..USERS / WRITERS) * WRITERS + part);
            let n = rng.random_range(1..=5);
            let targets: Vec<String> = (0..n).map(|_| name(rng.random_range(0..USERS))).collect();
            (from, targets, rng.random_bool(0.7))
        };
        let result = if add {
            let items: Vec<Value> = targets.iter().map(|t| json!({"To_Account": t})).collect();
            post(&http, &addr, "follow/follow_add", json!({"From_Account": from, "FollowItem": items})).await
        } else {
            post(&http, &addr, "follow/follow_delete", json!({"From_Account": from, "To_Account": targets})).await
        };
        let mut m = model.lock().unwrap();
        match result {
            Ok(r) if r["ActionStatus"] == "OK" => {
                for item in r["ResultItem"].as_array().unwrap() {
                    if item["ResultCode"] == 0 {
                        let key = (from.clone(), item["To_Account"].as_str().unwrap().to_owned());
                        m.uncertain.remove(&key);
                        m.acked.insert(key, add);
                    }
                }
                m.acks += 1;
            }
            Ok(r) => panic!("unexpected refusal {r}"),
            Err(_) => {
                // No answer: the server died with this request in flight.
                for t in targets {
                    m.uncertain.insert((from.clone(), t));
                }
                return;
            }
        }
    }
}

async fn all_pages(http: &reqwest::Client, addr: &str, user: &str, kind: u8) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r =
            post(http, addr, "follow/follow_get", json!({"From_Account": user, "FollowType": kind, "StartCursor": cursor, "WantNum": 37}))
                .await
                .unwrap();
        assert_ok(&r);
        out.extend(r["FollowItem"].as_array().unwrap().iter().map(|i| i["To_Account"].as_str().unwrap().to_owned()));
        cursor = r["NextCursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_writes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("followd.toml");
    std::fs::write(&config, config_text("", "")).unwrap();
    let http = reqwest::Client::new();

    let mut child = start(&config).await;
    let users: Vec<String> = (0..USERS).map(name).collect();
    for chunk in users.chunks(100) {
        assert_ok(&post(&http, &child.addr, "im_open_login_svc/multiaccount_import", json!({"Accounts": chunk})).await.unwrap());
    }
    let model = Arc::new(Mutex::new(Model::default()));
    let tasks: Vec<_> = (0..WRITERS).map(|p| tokio::spawn(writer(http.clone(), child.addr.clone(), p, model.clone()))).collect();
    // Let a good number of writes be acknowledged, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(20);
    while model.lock().unwrap().acks < 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.proc.start_kill().unwrap();
    child.proc.wait().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let model = Arc::try_unwrap(model).ok().unwrap().into_inner().unwrap();
    assert!(model.acks >= 400, "only {} writes were acknowledged before the deadline", model.acks);

    let child = start(&config).await;
    let mut following: HashMap<String, HashSet<String>> = HashMap::new();
    let mut followers: HashMap<String, HashSet<String>> = HashMap::new();
    for u in &users {
        let list = all_pages(&http, &child.addr, u, 2).await;
        let set: HashSet<String> = list.iter().cloned().collect();
        assert_eq!(set.len(), list.len(), "{u}'s following list repeats an entry");
        for v in &set {
            followers.entry(v.clone()).or_default().insert(u.clone());
        }
        following.insert(u.clone(), set);
    }
    let mut checked = 0;
    for ((from, to), state) in &model.acked {
        if model.uncertain.contains(&(from.clone(), to.clone())) {
            continue;
        }
        assert_eq!(following[from].contains(to), *state, "acknowledged edge {from} -> {to} should be {state}");
        checked += 1;
    }
    for (from, set) in &following {
        for to in set {
            let key = (from.clone(), to.clone());
            assert!(model.acked.contains_key(&key) || model.uncertain.contains(&key), "edge {from} -> {to} was never written");
        }
    }
    assert!(checked > 100, "too few edges to check: {checked}");
    for u in &users {
        let r = post(&http, &child.addr, "follow/follow_get_info", json!({"From_Account": u, "To_Account": [u]})).await.unwrap();
        let info = &r["FollowInfo"][0];
        let fans = followers.get(u).cloned().unwrap_or_default();
        let mutual: HashSet<String> = following[u].intersection(&fans).cloned().collect();
        assert_eq!(info["FollowingCount"], following[u].len(), "{u}");
        assert_eq!(info["FollowerCount"], fans.len(), "{u}");
        assert_eq!(info["MutualFollowingCount"], mutual.len(), "{u}");
        let listed: HashSet<String> = all_pages(&http, &child.addr, u, 3).await.into_iter().collect();
        assert_eq!(listed, mutual, "{u}'s mutual list");
        let listed: HashSet<String> = all_pages(&http, &child.addr, u, 1).await.into_iter().collect();
        assert_eq!(listed, fans, "{u}'s followers list");
    }
    drop(child);
}

/// Every acknowledged follow owes a webhook; after a SIGKILL mid-burst and a restart, all of them arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_write_burst_loses_no_acknowledged_webhook() {
    let rx = crate::receiver::Receiver::start().await;
    // A slow receiver keeps a backlog in the outbox when the server dies.
    rx.rule(|_| crate::receiver::Behavior::Slow(2));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("followd.toml");
    let table = format!(
        "[apps.webhook]\nurl = \"{}\"\nallow_private_destinations = true\nretry_schedule_ms = [50, 50, 50, 50, 50]\n",
        rx.url("/cb")
    );
    std::fs::write(&config, config_text(&table, "")).unwrap();
    let http = reqwest::Client::new();
    let mut child = start(&config).await;
    let users: Vec<String> = (0..USERS).map(name).collect();
    for chunk in users.chunks(100) {
        assert_ok(&post(&http, &child.addr, "im_open_login_svc/multiaccount_import", json!({"Accounts": chunk})).await.unwrap());
    }
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut tasks = Vec::new();
    for part in 0..WRITERS {
        let (http, addr, acked) = (http.clone(), child.addr.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            // Each writer follows new targets in order, so every acknowledged call changed an edge.
            for i in 0.. {
                let from = name(part);
                let to = name(WRITERS + i % (USERS - WRITERS));
                if i >= USERS - WRITERS {
                    return;
                }
                let body = json!({"From_Account": from, "FollowItem": [{"To_Account": to}]});
                match post(&http, &addr, "follow/follow_add", body).await {
                    Ok(r) if r["ActionStatus"] == "OK" => acked.lock().unwrap().push((from, to)),
                    _ => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 150 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.proc.start_kill().unwrap();
    child.proc.wait().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150, "only {} follows acknowledged", acked.len());
    let before_restart = rx.received().len();
    let _child = start(&config).await;
    let got = rx
        .wait_until(30, "a webhook for every acknowledged follow", |g| {
            let seen: HashSet<(String, String)> = g
                .iter()
                .map(|r| r.json())
                .map(|b| (b["From_Account"].as_str().unwrap().to_owned(), b["FollowList"][0]["To_Account"].as_str().unwrap().to_owned()))
                .collect();
            acked.iter().all(|a| seen.contains(a))
        })
        .await;
    assert!(got.len() > before_restart, "the restarted server delivered the backlog");
}
