//! Deleting an account with many edges: the account disappears when the API answers, its edges are
//! removed in chunks by a background job that survives a crash, and the owed webhooks and the exact
//! counts are what a single transaction would have given.

use crate::crash;
use crate::helpers::*;
use crate::receiver::{Received, Receiver};
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

fn hook(url: &str, commands: &str) -> String {
    format!("[apps.webhook]\nurl = \"{url}\"\nallow_private_destinations = true\nretry_schedule_ms = [50, 50, 50, 50, 50]\ncommands = {commands}\n")
}

async fn call(http: &reqwest::Client, addr: &str, api: &str, body: Value) -> Value {
    crash::post(http, addr, api, body).await.unwrap()
}

/// A metric's value from `/metrics` (0 when absent).
async fn metric(http: &reqwest::Client, addr: &str, name: &str) -> f64 {
    let text = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')).map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Polls until no deletion job is left.
async fn wait_finished(http: &reqwest::Client, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(http, addr, "followd_account_deletions_in_progress").await > 0.0 {
        assert!(Instant::now() < deadline, "the deletion job did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

async fn import(http: &reqwest::Client, addr: &str, users: &[String]) {
    for chunk in users.chunks(100) {
        assert_ok(&call(http, addr, "im_open_login_svc/multiaccount_import", json!({ "Accounts": chunk })).await);
    }
}

/// Runs the follows `(from, targets)` 16 at a time; every target must be followed.
async fn follow_all(http: &reqwest::Client, addr: &str, follows: Vec<(String, Vec<String>)>) {
    for group in follows.chunks(16) {
        let calls = group.iter().map(|(from, to)| {
            let items: Vec<Value> = to.iter().map(|t| json!({ "To_Account": t })).collect();
            call(http, addr, "follow/follow_add", json!({"From_Account": from, "FollowItem": items}))
        });
        for r in join_all(calls).await {
            assert_ok(&r);
            assert!(r["ResultItem"].as_array().unwrap().iter().all(|i| i["ResultCode"] == 0), "{r}");
        }
    }
}

/// (followers, following, mutual) of one user.
async fn counts(http: &reqwest::Client, addr: &str, user: &str) -> (usize, usize, usize) {
    let r = call(http, addr, "follow/follow_get_info", json!({"From_Account": user, "To_Account": [user]})).await;
    assert_ok(&r);
    let i = &r["FollowInfo"][0];
    let n = |k: &str| i[k].as_u64().unwrap() as usize;
    (n("FollowerCount"), n("FollowingCount"), n("MutualFollowingCount"))
}

/// A whole list (1 followers, 2 following, 3 mutual), in pages of 7.
async fn list(http: &reqwest::Client, addr: &str, user: &str, kind: u8) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let body = json!({"From_Account": user, "FollowType": kind, "StartCursor": cursor, "WantNum": 7});
        let r = call(http, addr, "follow/follow_get", body).await;
        assert_ok(&r);
        out.extend(r["FollowItem"].as_array().unwrap().iter().map(|i| i["To_Account"].as_str().unwrap().to_owned()));
        cursor = r["NextCursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            return out;
        }
    }
}

/// Every user's three counts equal the lengths of its three lists.
async fn assert_counts_match_lists(http: &reqwest::Client, addr: &str, users: &[String]) {
    for u in users {
        let lists = (list(http, addr, u, 1).await.len(), list(http, addr, u, 2).await.len(), list(http, addr, u, 3).await.len());
        assert_eq!(counts(http, addr, u).await, lists, "{u}: counts vs lists (followers, following, mutual)");
    }
}

/// The removed edges the distinct delete events name: (From_Account, To_Account) → how many events.
fn deleted_edges(got: &[Received]) -> HashMap<(String, String), usize> {
    let mut seen = HashSet::new();
    let mut edges = HashMap::new();
    for r in got {
        let b = r.json();
        if b["CallbackCommand"] != "Follow.CallbackAfterFollowDelete" || !seen.insert(r.header("webhook-id").to_owned()) {
            continue;
        }
        let targets = b["To_Account"].as_array().unwrap();
        assert!((1..=20).contains(&targets.len()), "{b}");
        assert_eq!(r.param("OptPlatform").as_deref(), Some("RESTAPI"));
        assert_eq!(r.param("ClientIP").as_deref(), Some("127.0.0.1"));
        for t in targets {
            *edges.entry((b["From_Account"].as_str().unwrap().to_owned(), t.as_str().unwrap().to_owned())).or_insert(0) += 1;
        }
    }
    edges
}

#[tokio::test]
async fn a_large_deletion_hides_the_account_at_once_and_owes_every_event_once() {
    let rx = Receiver::start().await;
    // Five edges a transaction, as each owes an event.
    let top = format!("deletion_chunk_edges = {}", 5 * followd_graph::deletion::EVENT_WEIGHT);
    let s = spawn_with_top(&top, &hook(&rx.url("/cb"), "[\"Follow.CallbackAfterFollowDelete\"]"), "").await;
    let (http, addr) = (&s.http, &s.addr.to_string());
    let fans = names("fan", 60);
    let idols = names("idol", 30);
    let mut users: Vec<String> = fans.iter().chain(&idols).cloned().collect();
    users.extend(["star".to_owned(), "obs".to_owned()]);
    import(http, addr, &users).await;
    // star follows 30 idols and obs; 60 fans and obs follow star (mutual with obs): 92 edges, and
    // everyone also follows idol0000, which star follows too.
    let mut follows = vec![("star".to_owned(), idols[..20].to_vec()), ("star".to_owned(), idols[20..].to_vec())];
    follows.push(("star".to_owned(), vec!["obs".to_owned()]));
    for f in fans.iter().chain(["obs".to_owned()].iter()) {
        follows.push((f.clone(), vec!["star".to_owned(), idols[0].clone()]));
    }
    follow_all(http, addr, follows).await;
    assert_eq!(counts(http, addr, "star").await, (61, 31, 1));

    let r = call(http, addr, "im_open_login_svc/account_delete", json!({"DeleteItem": [{"UserID": "star"}]})).await;
    assert_ok(&r);
    assert_eq!(r["ResultItem"][0]["ResultCode"], 0);
    // Gone at once, whatever the job has done so far.
    let r = call(http, addr, "im_open_login_svc/account_check", json!({"CheckItem": [{"UserID": "star"}]})).await;
    assert_eq!(r["ResultItem"][0]["AccountStatus"], "NotImported");
    let r = call(http, addr, "im_open_login_svc/account_delete", json!({"DeleteItem": [{"UserID": "star"}]})).await;
    assert_eq!(r["ResultItem"][0]["ResultCode"], 70107);
    assert_fail(
        &call(http, addr, "follow/follow_add", json!({"From_Account": "star", "FollowItem": [{"To_Account": "obs"}]})).await,
        30003,
    );
    for api in ["follow/follow_delete", "follow/follow_check", "follow/follow_get_info"] {
        let r = call(http, addr, api, json!({"From_Account": "obs", "To_Account": ["star"]})).await;
        let items = if api == "follow/follow_get_info" { &r["FollowInfo"] } else { &r["ResultItem"] };
        assert_eq!(items[0]["ResultCode"], 30003, "{api}: {r}");
    }
    let r = call(http, addr, "follow/follow_add", json!({"From_Account": "obs", "FollowItem": [{"To_Account": "star"}]})).await;
    assert_eq!(r["ResultItem"][0]["ResultCode"], 30003);
    assert_eq!(counts(http, addr, "obs").await, (0, 1, 0));
    assert_eq!((list(http, addr, "obs", 1).await, list(http, addr, "obs", 3).await), (vec![], vec![]));
    assert_eq!(list(http, addr, "obs", 2).await, vec![idols[0].clone()]);
    assert_eq!(counts(http, addr, &fans[7]).await, (0, 1, 0));
    let fans_of_idol = list(http, addr, &idols[0], 1).await;
    assert_eq!(fans_of_idol.len(), 61);
    assert!(!fans_of_idol.contains(&"star".to_owned()));
    assert_eq!(counts(http, addr, &idols[0]).await, (61, 0, 0));
    assert_eq!(counts(http, addr, &idols[1]).await, (0, 0, 0));

    wait_finished(http, addr).await;
    // 5 edges in the API's transaction, then the other 87 five at a time.
    assert_eq!(metric(http, addr, "followd_account_deletion_edges_removed_total").await, 92.0);
    assert_eq!(metric(http, addr, "followd_account_deletion_chunks_total").await, 18.0);
    let mut owed: HashSet<(String, String)> =
        idols.iter().chain(["obs".to_owned()].iter()).map(|i| ("star".to_owned(), i.clone())).collect();
    owed.extend(fans.iter().chain(["obs".to_owned()].iter()).map(|f| (f.clone(), "star".to_owned())));
    let got = rx.wait_until(30, "every owed delete event", |g| deleted_edges(g).len() >= owed.len()).await;
    let edges = deleted_edges(&got);
    assert_eq!(edges.keys().cloned().collect::<HashSet<_>>(), owed);
    assert!(edges.values().all(|&n| n == 1), "an edge is in two events: {edges:?}");
    users.retain(|u| u != "star");
    assert_counts_match_lists(http, addr, &users).await;
    let left = s.query_i64("SELECT (SELECT count(*) FROM accounts WHERE user_id = 'star') + (SELECT count(*) FROM deletions)");
    assert_eq!(left, 0, "the account row and its job are gone");
    s.stop().await;
}

#[tokio::test]
async fn a_reimport_during_the_job_starts_empty_and_keeps_its_new_edges() {
    let rx = Receiver::start().await;
    let commands = "[\"Follow.CallbackAfterFollowAdd\", \"Follow.CallbackAfterFollowDelete\"]";
    let s = spawn_with_top("deletion_chunk_edges = 1", &hook(&rx.url("/cb"), commands), "").await;
    let (http, addr) = (&s.http, &s.addr.to_string());
    let fans = names("fan", 200);
    let idols = names("idol", 10);
    let mut users: Vec<String> = fans.iter().chain(&idols).cloned().collect();
    users.push("star".to_owned());
    import(http, addr, &users).await;
    let mut follows = vec![("star".to_owned(), idols.clone())];
    follows.extend(fans.iter().map(|f| (f.clone(), vec!["star".to_owned()])));
    follow_all(http, addr, follows).await;

    assert_ok(&call(http, addr, "im_open_login_svc/account_delete", json!({"DeleteItem": [{"UserID": "star"}]})).await);
    assert_ok(&call(http, addr, "im_open_login_svc/account_import", json!({"UserID": "star", "Nick": "again"})).await);
    let r = call(http, addr, "im_open_login_svc/account_check", json!({"CheckItem": [{"UserID": "star"}]})).await;
    assert_eq!(r["ResultItem"][0]["AccountStatus"], "Imported");
    assert_eq!(counts(http, addr, "star").await, (0, 0, 0));
    assert_eq!((list(http, addr, "star", 1).await, list(http, addr, "star", 2).await), (vec![], vec![]));
    // New edges while the old account's edges are still being removed: the newest follower's old
    // edge is the job's last.
    let (fan, idol) = (fans[fans.len() - 1].clone(), idols[idols.len() - 1].clone());
    follow_all(http, addr, vec![(fan.clone(), vec!["star".to_owned()]), ("star".to_owned(), vec![idol.clone()])]).await;
    assert_eq!(counts(http, addr, "star").await, (1, 1, 0));
    assert_eq!(counts(http, addr, &fan).await, (0, 1, 0));

    wait_finished(http, addr).await;
    assert_eq!(counts(http, addr, "star").await, (1, 1, 0));
    assert_eq!(list(http, addr, "star", 1).await, vec![fan.clone()]);
    assert_eq!(list(http, addr, "star", 2).await, vec![idol.clone()]);
    assert_eq!(list(http, addr, &idol, 1).await, vec!["star".to_owned()]);
    let r = call(http, addr, "follow/follow_check", json!({"From_Account": fan, "To_Account": ["star"]})).await;
    assert_eq!(r["ResultItem"][0]["FollowType"], 2);
    assert_counts_match_lists(http, addr, &users).await;
    // Each old edge owes one delete event; the new edges owe none.
    let mut owed: HashSet<(String, String)> = idols.iter().map(|i| ("star".to_owned(), i.clone())).collect();
    owed.extend(fans.iter().map(|f| (f.clone(), "star".to_owned())));
    let got = rx.wait_until(30, "every owed delete event", |g| deleted_edges(g).len() >= owed.len()).await;
    let edges = deleted_edges(&got);
    assert_eq!(edges.keys().cloned().collect::<HashSet<_>>(), owed);
    assert!(edges.values().all(|&n| n == 1), "{edges:?}");
    // A mirror that applies them in order ends with the new edges: each old edge's delete comes
    // before the add of the new edge between the same two UserIDs (and after the old edge's add).
    let adds = |g: &[Received]| g.iter().filter(|r| r.json()["FollowList"].is_array()).count();
    // star's follows (one event), one per fan, and the two new edges.
    let got = rx.wait_until(30, "the add events of the new edges", |g| adds(g) >= 1 + fans.len() + 2).await;
    for (from, to) in [(fan.as_str(), "star"), ("star", idol.as_str())] {
        let is = |r: &Received, add: bool| {
            let b = r.json();
            let target = if add { &b["FollowList"][0]["To_Account"] } else { &b["To_Account"][0] };
            b["From_Account"] == from && target == to && b["FollowList"].is_array() == add
        };
        let deleted = got.iter().position(|r| is(r, false)).unwrap();
        let added = got.iter().rposition(|r| is(r, true)).unwrap();
        assert!(deleted < added, "{from} -> {to}: the old edge's delete must come before the new edge's add");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_killed_midway_resumes_after_restart() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("followd.toml");
    let table = hook(&rx.url("/cb"), "[\"Follow.CallbackAfterFollowDelete\"]");
    // One edge a transaction: about a thousand transactions, so the kill lands in the middle.
    std::fs::write(&config, config_text_with_top("deletion_chunk_edges = 1", &table, "")).unwrap();
    let http = reqwest::Client::new();
    let mut child = crate::binary::start(&config).await;
    let fans = names("fan", 1000);
    let idols = names("idol", 40);
    let mut users: Vec<String> = fans.iter().chain(&idols).cloned().collect();
    users.push("star".to_owned());
    import(&http, &child.addr, &users).await;
    let mut follows = vec![("star".to_owned(), idols[..20].to_vec()), ("star".to_owned(), idols[20..].to_vec())];
    follows.extend(fans.iter().map(|f| (f.clone(), vec!["star".to_owned(), idols[0].clone()])));
    follow_all(&http, &child.addr, follows).await;

    assert_ok(&call(&http, &child.addr, "im_open_login_svc/account_delete", json!({"DeleteItem": [{"UserID": "star"}]})).await);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&http, &child.addr, "followd_account_deletion_chunks_total").await < 1.0 {
        assert!(Instant::now() < deadline, "the background job never ran");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.proc.start_kill().unwrap();
    child.proc.wait().await.unwrap();
    let unfinished: i64 = rusqlite::Connection::open(dir.path().join("data/followd.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM deletions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(unfinished, 1, "the kill should land while the job runs");

    let child = crate::binary::start(&config).await;
    let r = call(&http, &child.addr, "im_open_login_svc/account_check", json!({"CheckItem": [{"UserID": "star"}]})).await;
    assert_eq!(r["ResultItem"][0]["AccountStatus"], "NotImported");
    assert_eq!(counts(&http, &child.addr, &idols[0]).await, (1000, 0, 0));
    wait_finished(&http, &child.addr).await;
    assert!(metric(&http, &child.addr, "followd_account_deletion_edges_removed_total").await > 0.0, "the restarted server did the rest");
    let sample = [fans[0].clone(), fans[999].clone(), idols[0].clone(), idols[39].clone()];
    assert_counts_match_lists(&http, &child.addr, &sample).await;
    assert_eq!(counts(&http, &child.addr, &fans[5]).await, (0, 1, 0));
    assert_eq!(counts(&http, &child.addr, &idols[5]).await, (0, 0, 0));
    let mut owed: HashSet<(String, String)> = idols.iter().map(|i| ("star".to_owned(), i.clone())).collect();
    owed.extend(fans.iter().map(|f| (f.clone(), "star".to_owned())));
    // A chunk's events commit with its edges: the chunk cut short by the kill was redone whole, so
    // every edge is in exactly one event (a delivery cut short is repeated with the same webhook-id).
    let got = rx
        .wait_until(60, "every owed delete event", |g| {
            let e = deleted_edges(g);
            owed.iter().all(|x| e.contains_key(x))
        })
        .await;
    let edges = deleted_edges(&got);
    assert_eq!(edges.keys().cloned().collect::<HashSet<_>>(), owed);
    assert!(edges.values().all(|&n| n == 1), "an edge is in two events");
    drop(child);
}

#[test]
fn a_chunk_of_no_edges_is_refused_naming_the_key() {
    for bad in ["0", "1000001"] {
        let text = config_text_with_top(&format!("deletion_chunk_edges = {bad}"), "", "");
        let c = followd::config::Config::from_toml(&text, std::path::Path::new(".")).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("deletion_chunk_edges"), "{bad}");
    }
}
