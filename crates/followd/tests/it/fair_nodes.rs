//! Webhook delivery across PostgreSQL nodes (skipped, saying why, without
//! `FOLLOWD_TEST_DATABASE_URL`): per-app fairness with a small memory window on two nodes, a killed
//! node's lanes adopted through the survivor's window, and an admin requeue given to the node that
//! owns the lane.

use crate::helpers::*;
use crate::receiver::{Behavior, Received, Receiver};
use crate::webhooks::hook;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
/// H hangs, F answers 500, R answers 503 until it comes back, D is healthy.
const APPS: [u64; 4] = [1_400_000_200, 1_400_000_201, 1_400_000_202, 1_400_000_203];
const WINDOW: usize = 8;

fn config(db: &str, hooks: &[String; 4]) -> String {
    let mut c = format!("listen = \"127.0.0.1:0\"\ndatabase_url = \"{db}\"\ndelivery_queue_in_memory = {WINDOW}\n");
    for (app, hook) in APPS.iter().zip(hooks) {
        c.push_str(&format!("\n[[apps]]\nsdkappid = {app}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\n{hook}\n"));
    }
    c
}

/// An admin call to `app` on a node started as a process.
async fn call(http: &reqwest::Client, node: &crate::binary::Binary, app: u64, api: &str, body: Value) -> Value {
    let url = format!(
        "http://{}/v4/{api}?sdkappid={app}&identifier={ADMIN}&usersig={}&random=7&contenttype=json",
        node.addr,
        sig(KEY, app, ADMIN)
    );
    let r = http.post(url).body(body.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn follow(http: &reqwest::Client, node: &crate::binary::Binary, app: u64, from: &str, to: &str) {
    let r = call(http, node, app, "follow/follow_add", json!({"From_Account": from, "FollowItem": [{"To_Account": to}]})).await;
    assert_ok(&r);
    assert_eq!(r["ResultItem"][0]["ResultCode"], 0, "{r}");
}

/// The `webhook-id` header of a stored event id (hex of the UUID).
fn webhook_id(hex: &str) -> String {
    format!("evt_{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// `app`'s events per From_Account, in id order (a lane's commit order).
fn lanes(db: &crate::pg::TestDb, app: u64) -> HashMap<String, Vec<String>> {
    db.with(move |c| {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for r in c.query("SELECT from_account, encode(webhook_id, 'hex') FROM events WHERE app = $1 ORDER BY id", &[&(app as i64)]).unwrap()
        {
            out.entry(r.get(0)).or_default().push(webhook_id(r.get(1)));
        }
        out
    })
}

/// The healthy app's new webhooks, one per node in turn, each arrive within `secs` of its call.
async fn healthy_is_prompt(http: &reqwest::Client, nodes: &[&crate::binary::Binary], rx: &Receiver, round: usize, secs: u64) {
    for (i, node) in nodes.iter().enumerate() {
        let before = rx.received().len();
        let from = format!("x{i}");
        let to = format!("y{round}");
        follow(http, node, APPS[3], &from, &to).await;
        let got = rx.wait_until(secs, &format!("the healthy app's webhook from {from} (round {round})"), |g| g.len() > before).await;
        let body = got[before].json();
        assert_eq!((body["From_Account"].as_str(), body["FollowList"][0]["To_Account"].as_str()), (Some(&*from), Some(&*to)));
    }
}

/// Three apps whose endpoints are down (one hangs, one answers 500, one 503 until it comes back),
/// each with a backlog far past the 8-event window spread over two nodes (every user's calls go to
/// both), never hold up a fourth app on either node; after the node owning half the backlogs is
/// killed, the survivor adopts its lanes through its window, the healthy app still gets its webhooks
/// at once, and the app that comes back gets every event once, each user's in commit order,
/// including events written on an adopted lane after the adoption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_apps_on_two_nodes_do_not_hold_up_a_healthy_app_before_or_after_adoption() {
    let Some(url) = crate::pg::url("down_apps_on_two_nodes_do_not_hold_up_a_healthy_app_before_or_after_adoption") else { return };
    let db = crate::pg::TestDb::create(&url);
    let hanging = Receiver::start().await;
    hanging.rule(|_| Behavior::Hang);
    let failing = Receiver::start().await;
    failing.rule(|_| Behavior::Status(500));
    let recovering = Receiver::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let answered_ok: Arc<Mutex<Vec<Received>>> = Arc::default();
    let (d, ok) = (down.clone(), answered_ok.clone());
    recovering.rule(move |r| {
        if d.load(Ordering::SeqCst) {
            Behavior::Status(503)
        } else {
            ok.lock().push(r.clone());
            Behavior::Ok
        }
    });
    let healthy = Receiver::start().await;
    // Retries far apart (or attempts that hang) keep the dead apps' events pending for the whole test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("followd.toml");
    let text = config(
        &db.url,
        &[
            hook(&hanging.url("/h"), "timeout_ms = 60000\nretry_schedule_ms = [600000]"),
            hook(&failing.url("/f"), "retry_schedule_ms = [600000]"),
            hook(&recovering.url("/r"), &format!("retry_schedule_ms = [{}]", ["2000"; 100].join(", "))),
            hook(&healthy.url("/d"), ""),
        ],
    );
    std::fs::write(&path, text).unwrap();
    let doomed = crate::binary::start(&path).await;
    let survivor = crate::binary::start(&path).await;
    let http = reqwest::Client::new();

    let users: Vec<String> = (0..6).map(|i| format!("u{i}")).collect();
    let targets: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    let accounts: Vec<&str> =
        users.iter().chain(&targets).map(String::as_str).chain(["x0", "x1", "y0", "y1", "y2", "y3", "y4", "y5"]).collect();
    for app in APPS {
        let r = call(&http, &doomed, app, "im_open_login_svc/multiaccount_import", json!({ "Accounts": accounts })).await;
        assert_ok(&r);
    }
    healthy_is_prompt(&http, &[&doomed, &survivor], &healthy, 0, 10).await;

    // 60 events per dead app: user i's first call goes to node i % 2 (which then owns the lane while
    // it has pending events), the next ones alternate, so both nodes write to every lane and half the
    // events are handed to the owner. The survivor writes last, so its window has taken ids above
    // every event of the doomed node.
    let nodes = [&doomed, &survivor];
    for (j, t) in targets[..10].iter().enumerate() {
        for (i, u) in users.iter().enumerate() {
            for app in &APPS[..3] {
                follow(&http, nodes[(i + j) % 2], *app, u, t).await;
            }
        }
    }
    for app in &APPS[..3] {
        follow(&http, &survivor, *app, "u1", &targets[10]).await;
    }
    healthy_is_prompt(&http, &[&doomed, &survivor], &healthy, 1, 10).await;
    assert!(!hanging.received().is_empty() && !failing.received().is_empty(), "the dead endpoints were tried");

    // The node owning the even users' lanes dies; the survivor adopts them once the lease runs out.
    let mut doomed = doomed;
    doomed.proc.start_kill().unwrap();
    doomed.proc.wait().await.unwrap();
    crate::binary::poll(60, "the survivor adopting the killed node's lanes", || async {
        survivor.logged("adopted the pending webhooks").then_some(())
    })
    .await;
    healthy_is_prompt(&http, &[&survivor], &healthy, 2, 10).await;
    // Of the adopted backlogs (the even users' lanes) of the three dead apps, the survivor has read no
    // more than its window: the rest waits in the outbox, handed to it, until those apps have room.
    let read: i64 = db.with(|c| {
        let apps: Vec<i64> = APPS[..3].iter().map(|&a| a as i64).collect();
        let lanes = vec!["u0", "u2", "u4"];
        c.query_one(
            "SELECT count(*) FROM events WHERE state = 0 AND NOT handed AND app = ANY($1) AND from_account = ANY($2)",
            &[&apps, &lanes],
        )
        .unwrap()
        .get(0)
    });
    assert!(read <= WINDOW as i64, "the survivor read {read} adopted events of the dead apps, past its window of {WINDOW}");
    // New events on adopted lanes (u0's, u2's, u4's), written after the adoption.
    for u in ["u0", "u2", "u4"] {
        follow(&http, &survivor, APPS[2], u, &targets[11]).await;
    }
    healthy_is_prompt(&http, &[&survivor], &healthy, 3, 10).await;

    // The recovering app comes back: every event arrives once, each user's in commit order.
    down.store(false, Ordering::SeqCst);
    let committed = lanes(&db, APPS[2]);
    let total: usize = committed.values().map(Vec::len).sum();
    assert_eq!(total, 6 * 10 + 1 + 3);
    let deadline = Instant::now() + Duration::from_secs(150);
    while answered_ok.lock().iter().map(|r| r.header("webhook-id").to_owned()).collect::<HashSet<_>>().len() < total {
        assert!(Instant::now() < deadline, "only {} of {total} events answered after the endpoint came back", answered_ok.lock().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = answered_ok.lock().clone();
    let mut per_user: HashMap<String, Vec<String>> = HashMap::new();
    for r in &delivered {
        per_user.entry(r.sender()).or_default().push(r.header("webhook-id").to_owned());
    }
    assert_eq!(per_user, committed, "each user's events answered once, in commit order");
    healthy_is_prompt(&http, &[&survivor], &healthy, 4, 10).await;

    // Nothing of the two dead apps was lost: all 2 × 61 events are still pending.
    let pending: i64 = db.with(|c| {
        c.query_one("SELECT count(*) FROM events WHERE state = 0 AND app = ANY($1)", &[&vec![APPS[0] as i64, APPS[1] as i64]])
            .unwrap()
            .get(0)
    });
    assert_eq!(pending, 2 * 61);
    survivor.stop().await;
}

/// The target of a follow webhook.
fn target(r: &Received) -> String {
    r.json()["FollowList"][0]["To_Account"].as_str().unwrap_or("").to_owned()
}

/// Alice's first three events die; her fourth is in flight on node A (the receiver answers it after
/// 5 s) when node B's admin API replays the dead ones; a fifth is written through node A at once (the
/// lane's newest pending event is then its fourth, not handed, but the replays are), and a sixth
/// through node B. Node A owns alice's lane, so it gets the replayed events: they reach the receiver
/// after the fourth was answered (one attempt of a lane at a time, as on one node), in id order, and
/// before the fifth and the sixth, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeue_through_another_node_goes_to_the_node_that_owns_the_lane() {
    let Some(url) = crate::pg::url("a_requeue_through_another_node_goes_to_the_node_that_owns_the_lane") else { return };
    let db = crate::pg::TestDb::create(&url);
    let rx = Receiver::start().await;
    let failing = Arc::new(AtomicBool::new(true));
    let answered: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let (f, a) = (failing.clone(), answered.clone());
    rx.rule(move |r| {
        let t = target(r);
        if f.load(Ordering::SeqCst) {
            return Behavior::Status(500);
        }
        let slow = t == "t3";
        a.lock().push((t, Instant::now() + if slow { Duration::from_secs(5) } else { Duration::ZERO }));
        if slow {
            Behavior::Slow(5000)
        } else {
            Behavior::Ok
        }
    });
    let top = format!("database_url = \"{}\"", db.url);
    let extra = hook(&rx.url("/cb"), "retry_schedule_ms = [10]\ntimeout_ms = 10000");
    let (a_node, b_node) = (spawn_with_top(&top, &extra, "").await, spawn_with_top(&top, &extra, "").await);
    a_node.import(&["alice", "t0", "t1", "t2", "t3", "t4", "t5"]).await;
    let start_ms = followd::now_secs() as i64 * 1000 - 1000;
    for t in ["t0", "t1", "t2"] {
        assert_ok(&a_node.follow("alice", &[t]).await);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = a_node.call("callback_config/list_events", json!({"State": "dead"})).await;
        if r["Events"].as_array().unwrap().len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the first three events never died: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    failing.store(false, Ordering::SeqCst);
    assert_ok(&a_node.follow("alice", &["t3"]).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.lock().is_empty() {
        assert!(Instant::now() < deadline, "the fourth event was never sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = b_node.call("callback_config/replay_dead", json!({"StartTime": start_ms, "EndTime": start_ms + 3_600_000})).await;
    assert_ok(&r);
    assert_eq!(r["Replayed"], 3, "{r}");
    assert_ok(&a_node.follow("alice", &["t4"]).await);
    assert_ok(&b_node.follow("alice", &["t5"]).await);

    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.lock().len() < 6 {
        assert!(Instant::now() < deadline, "answered so far: {:?}", answered.lock());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = answered.lock().clone();
    let order: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(order, ["t3", "t0", "t1", "t2", "t4", "t5"], "the lane's events as the receiver answered them");
    // Each was sent once its predecessor had been answered.
    for w in got.windows(2) {
        assert!(w[1].1 >= w[0].1, "{} was sent before {} was answered", w[1].0, w[0].0);
    }
    let (events, owners): (i64, i64) = db.with(|c| {
        let r = c.query_one("SELECT count(*), count(DISTINCT node) FROM events", &[]).unwrap();
        (r.get(0), r.get(1))
    });
    assert_eq!((events, owners), (6, 1), "alice's six events, all sent by the node that owns her lane");
    a_node.stop().await;
    b_node.stop().await;
}

/// A database of `test`'s own and a config file (in the returned directory) whose app sends its
/// webhooks to a new receiver; `None` without a PostgreSQL URL (the test skips).
async fn hooked(test: &str) -> Option<(crate::pg::TestDb, Receiver, tempfile::TempDir, std::path::PathBuf)> {
    let url = crate::pg::url(test)?;
    let db = crate::pg::TestDb::create(&url);
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("followd.toml");
    let top = format!("database_url = \"{}\"", db.url);
    std::fs::write(&path, config_text_with_top(&top, &hook(&rx.url("/cb"), ""), "")).unwrap();
    Some((db, rx, dir, path))
}

/// Node A commits alice's first event; before its writer passes the event on (held there 3 s by a
/// failpoint), node B writes her second, which it hands to A (A owns her lane) and tells A at once.
/// A's take of the handed event waits for its own commit to reach the dispatcher: the receiver gets
/// the first event, then the second (the second came first before the gate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_handed_to_a_node_does_not_overtake_the_nodes_own_commit_on_its_way() {
    let Some((db, rx, _dir, path)) = hooked("an_event_handed_to_a_node_does_not_overtake_the_nodes_own_commit_on_its_way").await else {
        return;
    };
    let (a_node, b_node) =
        (crate::binary::start_with(&path, &[("FAILPOINTS", "pg-committed=sleep(3000)")]).await, crate::binary::start(&path).await);
    let http = reqwest::Client::new();
    assert_ok(&b_node.call(&http, "im_open_login_svc/multiaccount_import", json!({"Accounts": ["alice", "t1", "t2"]})).await);

    let first = a_node.call(&http, "follow/follow_add", json!({"From_Account": "alice", "FollowItem": [{"To_Account": "t1"}]}));
    let first = tokio::time::timeout(Duration::from_millis(1000), first).await.expect("A answers once committed, before its hook");
    assert_eq!(first["ResultItem"][0]["ResultCode"], 0, "{first}");
    let second = b_node.call(&http, "follow/follow_add", json!({"From_Account": "alice", "FollowItem": [{"To_Account": "t2"}]})).await;
    assert_eq!(second["ResultItem"][0]["ResultCode"], 0, "{second}");
    // A's writer is still held after its COMMIT: its own event has not gone out yet.
    assert!(rx.received().is_empty(), "the first event went out before the failpoint let it");
    let handed: bool = db.with(|c| c.query_one("SELECT count(*) = 2 AND count(DISTINCT node) = 1 FROM events", &[]).unwrap().get(0));
    assert!(handed, "both events belong to node A");

    let got = rx.wait_for(2, 20).await;
    let order: Vec<String> = got.iter().map(target).collect();
    assert_eq!(order, ["t1", "t2"], "alice's events as the receiver got them");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 2, "each sent once");
    a_node.stop().await;
    b_node.stop().await;
}

/// A node whose connection breaks while `COMMIT` is under way (a failpoint cuts it once: after the
/// query reached the server, before, or with all but `COMMIT` sent and the connection left open)
/// learns what became of the transaction before it writes anything else: committed, the client is
/// answered success and the event goes out ahead of the user's next one; not committed, the follow
/// is run again. Either way one edge and one event each, every event sent once, in order.
async fn a_commit_whose_answer_is_lost(test: &str, cut: &str, resolved: &[&str]) {
    let Some((db, rx, _dir, path)) = hooked(test).await else { return };
    let failpoint = format!("pg-commit-lost=1*return({cut})");
    let node = crate::binary::start_with(&path, &[("FAILPOINTS", failpoint.as_str())]).await;
    let http = reqwest::Client::new();
    assert_ok(&node.call(&http, "im_open_login_svc/multiaccount_import", json!({"Accounts": ["alice", "t1", "t2"]})).await);

    for t in ["t1", "t2"] {
        let r = node.call(&http, "follow/follow_add", json!({"From_Account": "alice", "FollowItem": [{"To_Account": t}]})).await;
        assert_ok(&r);
        assert_eq!(r["ResultItem"][0]["ResultCode"], 0, "{r}");
    }
    assert!(node.logged("the connection broke during COMMIT"), "the failpoint did not fire");
    for line in resolved {
        assert!(node.logged(line), "not logged: {line}");
    }
    let got = rx.wait_for(2, 20).await;
    let order: Vec<String> = got.iter().map(target).collect();
    assert_eq!(order, ["t1", "t2"], "alice's events as the receiver got them");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 2, "each sent once");
    let (edges, events, pending): (i64, i64, i64) = db.with(|c| {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM edges), (SELECT count(*) FROM events), (SELECT count(*) FROM events WHERE state = 0)",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    });
    assert_eq!((edges, events, pending), (2, 2, 0), "one edge and one event a follow, none left pending");
    let r = node.call(&http, "follow/follow_get_info", json!({"From_Account": "alice", "To_Account": ["alice"]})).await;
    assert_eq!(r["FollowInfo"][0]["FollowingCount"], 2, "{r}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_after_it_reached_the_server_is_found_committed() {
    a_commit_whose_answer_is_lost("a_commit_whose_answer_is_lost_after_it_reached_the_server_is_found_committed", "after", &["did commit"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_before_it_reached_the_server_is_run_again() {
    a_commit_whose_answer_is_lost("a_commit_lost_before_it_reached_the_server_is_run_again", "before", &["did not commit"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_old_connection_stays_open_is_ended_and_run_again() {
    a_commit_whose_answer_is_lost(
        "a_commit_whose_old_connection_stays_open_is_ended_and_run_again",
        "open",
        &["ended the server process", "did not commit"],
    )
    .await;
}

/// A write that began while no node listened, and so did not collect its changes, is held (a
/// failpoint) past the 5 s a node waits for running writes when its first live client comes. The
/// client registers meanwhile; the write, finding a listener at its end, is run again and sends its
/// change: the client hears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_outlasts_a_new_listeners_wait_is_run_again_and_heard() {
    let Some(url) = crate::pg::url("a_write_that_outlasts_a_new_listeners_wait_is_run_again_and_heard") else { return };
    let db = crate::pg::TestDb::create(&url);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("followd.toml");
    // The caller waits for the held write (a caller past its deadline would have it dropped).
    let top = format!("database_url = \"{}\"\nrequest_timeout_ms = 30000", db.url);
    std::fs::write(&path, config_text_with_top(&top, "", "")).unwrap();
    let (a_node, b_node) =
        (crate::binary::start_with(&path, &[("FAILPOINTS", "pg-before-commit=1*sleep(7000)")]).await, crate::binary::start(&path).await);
    let http = reqwest::Client::new();
    assert_ok(&b_node.call(&http, "im_open_login_svc/multiaccount_import", json!({"Accounts": ["x", "y"]})).await);
    let follow = tokio::spawn({
        let (http, url) = (http.clone(), a_node.url("follow/follow_add"));
        async move {
            let r = http.post(url).body(json!({"From_Account": "x", "FollowItem": [{"To_Account": "y"}]}).to_string()).send().await;
            r.unwrap().json::<serde_json::Value>().await.unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ws = format!("ws://{}/v1/client/events?sdkappid={APP_A}&identifier=y&usersig={}", b_node.addr, sig(KEY_A, APP_A, "y"));
    let started = std::time::Instant::now();
    let (mut y, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(4), "the new listener waited for the running write: {:?}", started.elapsed());
    assert!(b_node.logged("transactions older than this node's request"), "the wait ran out while the write was held");
    let heard = loop {
        use futures_util::StreamExt as _;
        let m = tokio::time::timeout(Duration::from_secs(15), y.next()).await.expect("the change in time").unwrap().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            break serde_json::from_str::<serde_json::Value>(&t).unwrap();
        }
    };
    assert_eq!(heard, json!({"Event": "FollowersListChanged", "IsAdd": true, "Users": [{"UserID": "x"}]}));
    let answer = follow.await.unwrap();
    assert_eq!(answer["ResultItem"][0]["ResultCode"], 0, "{answer}");
    a_node.stop().await;
    b_node.stop().await;
    drop(db);
}
