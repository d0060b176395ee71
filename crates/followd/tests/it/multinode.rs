//! Several followd nodes on one PostgreSQL database (skipped, saying why, without
//! `FOLLOWD_TEST_DATABASE_URL`): two servers in this process, each with its own store, dispatcher
//! and lease, share one graph.

use crate::helpers::*;
use crate::receiver::Receiver;
use crate::webhooks::hook;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A follow/unfollow storm spread over `n` nodes: afterwards every counter equals its list on every
/// node, and every committed webhook event reached the receiver exactly once (no node sends another's
/// while all live) and, per From_Account, in commit order (a lane's event ids follow its commits).
async fn storm(name: &str, n: usize) {
    let Some(url) = crate::pg::url(name) else { return };
    let db = crate::pg::TestDb::create(&url);
    let rx = Receiver::start().await;
    let top = format!("database_url = \"{}\"", db.url);
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(spawn_with_top(&top, &hook(&rx.url("/cb"), ""), "").await);
    }
    let nodes = Arc::new(nodes);
    let users: Vec<String> = (0..16).map(|i| format!("u{i:02}")).collect();
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push("star");
    nodes[0].import(&all).await;

    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let (nodes, u, next) = (nodes.clone(), u.clone(), users[(i + 1) % users.len()].clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..6 {
                let node = &nodes[(i + round) % n];
                assert_ok(&node.follow(&u, &["star", &next]).await);
                if round % 3 == 2 {
                    assert_ok(&nodes[(i + round + 1) % n].unfollow(&u, &["star"]).await);
                }
                if i % 4 == round % 4 {
                    let r = node.call("follow/follow_add", json!({"From_Account": "star", "FollowItem": [{"To_Account": u}]})).await;
                    assert_ok(&r);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    for node in nodes.iter() {
        for u in &all {
            let (followers, following, mutual) = node.counts(u).await;
            assert_eq!(node.list(u, 1, 100).await.len() as i64, followers, "{u} followers");
            assert_eq!(node.list(u, 2, 100).await.len() as i64, following, "{u} following");
            assert_eq!(node.list(u, 3, 100).await.len() as i64, mutual, "{u} mutual");
        }
    }

    // Per From_Account, in id order (commit order within a lane).
    let committed: HashMap<String, Vec<String>> = db.with(|c| {
        let mut committed: HashMap<String, Vec<String>> = HashMap::new();
        for r in c.query("SELECT from_account, encode(webhook_id, 'hex') FROM events ORDER BY id", &[]).unwrap() {
            let h: String = r.get(1);
            let id = format!("evt_{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
            committed.entry(r.get(0)).or_default().push(id);
        }
        committed
    });
    let total: usize = committed.values().map(Vec::len).sum();
    assert!(total > users.len(), "the storm owed events");
    let got = rx
        .wait_until(60, "every committed event", |g| g.iter().map(|r| r.header("webhook-id")).collect::<HashSet<_>>().len() >= total)
        .await;
    let mut times: HashMap<String, usize> = HashMap::new();
    let mut delivered: HashMap<String, Vec<String>> = HashMap::new();
    for r in &got {
        *times.entry(r.header("webhook-id").to_owned()).or_default() += 1;
        delivered.entry(r.sender()).or_default().push(r.header("webhook-id").to_owned());
    }
    let twice: Vec<_> = times.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "sent more than once while every node lived: {twice:?}");
    assert_eq!(delivered, committed, "received exactly the committed events, each user's in commit order");
    for n in Arc::into_inner(nodes).unwrap() {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_keep_one_exact_graph_and_send_each_event_once_in_order() {
    storm("two_nodes_keep_one_exact_graph_and_send_each_event_once_in_order", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_one_exact_graph_and_send_each_event_once_in_order() {
    storm("three_nodes_keep_one_exact_graph_and_send_each_event_once_in_order", 3).await;
}

/// The target of a follow webhook: `add bob` or `delete bob`.
fn change_of(r: &crate::receiver::Received) -> String {
    let body = r.json();
    match r.param("CallbackCommand").as_deref() {
        Some("Follow.CallbackAfterFollowAdd") => format!("add {}", body["FollowList"][0]["To_Account"].as_str().unwrap()),
        _ => format!("delete {}", body["To_Account"][0].as_str().unwrap()),
    }
}

/// One user's follows and unfollows, sent to each node in turn, reach the receiver in commit order,
/// although each call is committed by the node that took it. Node 0's events (those about bob) fail
/// three attempts and node 1's (about carol) one: were each event sent by the node that committed it,
/// node 1 would deliver carol's events while bob's wait for their retries on node 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_writes_through_two_nodes_arrive_in_commit_order() {
    let Some(url) = crate::pg::url("one_users_writes_through_two_nodes_arrive_in_commit_order") else { return };
    let db = crate::pg::TestDb::create(&url);
    let rx = Receiver::start().await;
    let tried = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    let t = tried.clone();
    rx.rule(move |r| {
        let mut tried = t.lock().unwrap();
        let n = tried.entry(r.header("webhook-id").to_owned()).or_default();
        *n += 1;
        let failures = if change_of(r).ends_with("bob") { 3 } else { 1 };
        if *n <= failures {
            crate::receiver::Behavior::Status(500)
        } else {
            crate::receiver::Behavior::Ok
        }
    });
    let top = format!("database_url = \"{}\"", db.url);
    let nodes = [spawn_with_top(&top, &hook(&rx.url("/cb"), ""), "").await, spawn_with_top(&top, &hook(&rx.url("/cb"), ""), "").await];
    nodes[0].import(&["alice", "bob", "carol"]).await;
    let mut committed = Vec::new();
    for i in 0..16 {
        let to = if i % 2 == 0 { "bob" } else { "carol" };
        if i % 4 < 2 {
            assert_ok(&nodes[i % 2].follow("alice", &[to]).await);
            committed.push(format!("add {to}"));
        } else {
            assert_ok(&nodes[i % 2].unfollow("alice", &[to]).await);
            committed.push(format!("delete {to}"));
        }
    }
    // Bob's 8 events are tried 4 times, carol's 8 twice.
    let got = rx.wait_until(60, "every event delivered", |g| g.len() >= 8 * 4 + 8 * 2).await;
    let mut attempts: HashMap<String, usize> = HashMap::new();
    let mut delivered = Vec::new();
    for r in &got {
        let n = attempts.entry(r.header("webhook-id").to_owned()).or_default();
        *n += 1;
        let change = change_of(r);
        if *n == if change.ends_with("bob") { 4 } else { 2 } {
            delivered.push(change);
        }
    }
    assert_eq!(delivered, committed, "alice's events, as delivered");
    assert_eq!(attempts.len(), committed.len(), "one webhook per call");
    for n in nodes {
        n.stop().await;
    }
}

/// A TCP proxy to the test's PostgreSQL server that the test can cut (every open connection closed,
/// new ones refused by closing them at once) and restore, so a lost database is tested without
/// touching the machine's server.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    continue;
                }
                let (upstream, mut cut_rx) = (upstream.clone(), cut_rx.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|&c| c) => {}
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// `host:port` of a `postgres://` URL, and the URL with it replaced by `to`.
fn through(url: &str, to: std::net::SocketAddr) -> (String, String) {
    let rest = &url[url.find("://").unwrap() + 3..];
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap().to_owned();
    let host = if host.contains(':') { host } else { format!("{host}:5432") };
    let authority_end = url.find("://").unwrap() + 3 + url[url.find("://").unwrap() + 3..].find(['/', '?']).unwrap_or(url.len());
    let start = url[..authority_end].rfind('@').map_or(url.find("://").unwrap() + 3, |i| i + 1);
    (host, format!("{}{to}{}", &url[..start], &url[authority_end..]))
}

/// The database goes away under a running server: writes and reads are answered at once with an
/// internal error in Tencent's envelope, nothing half-done is applied, and once the database is
/// back the same server (no restart) serves again with every acknowledged write in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_answered_in_the_envelope_and_recovered_without_restart() {
    let Some(url) = crate::pg::url("a_lost_database_is_answered_in_the_envelope_and_recovered_without_restart") else { return };
    let db = crate::pg::TestDb::create(&url);
    let (upstream, _) = through(&db.url, "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(upstream).await;
    let (_, proxied) = through(&db.url, proxy.addr);
    let s = spawn_with_top(&format!("database_url = \"{proxied}\""), "", "").await;
    s.import(&["a", "b", "c", "d"]).await;
    assert_ok(&s.follow("a", &["b"]).await);

    proxy.set_cut(true);
    for _ in 0..3 {
        let r = s.follow("a", &["c"]).await;
        assert_fail(&r, followd_protocol::code::FOLLOW_INTERNAL as u64);
        assert!(r["ErrorInfo"].as_str().unwrap().contains("internal server error"), "{r}");
        let r = s.call("follow/follow_get_info", json!({"From_Account": "a", "To_Account": ["a"]})).await;
        assert_eq!(r["ActionStatus"], "FAIL", "{r}");
    }
    // A node that cannot tell the others it has a live client refuses the WebSocket (in the
    // envelope) rather than connect a client that would miss their changes.
    let ws = format!("ws://{}/v1/client/events?sdkappid={APP_A}&identifier=a&usersig={}", s.addr, sig(KEY_A, APP_A, "a"));
    match tokio_tungstenite::connect_async(ws).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 503);
            let body: serde_json::Value = serde_json::from_slice(r.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["ErrorCode"], followd_protocol::code::FOLLOW_INTERNAL, "{body}");
        }
        other => panic!("a WebSocket while the database is away: {:?}", other.map(|_| ())),
    }

    proxy.set_cut(false);
    // The writer and the readers reconnect on their next use: the first write and the first read
    // after the cut may still meet a connection that was cut, the next ones find a new one.
    let mut ok = false;
    let mut wrote = false;
    for _ in 0..20 {
        wrote = wrote || s.follow("a", &["d"]).await["ActionStatus"] == "OK";
        let read = s.call("follow/follow_get_info", json!({"From_Account": "a", "To_Account": ["a"]})).await;
        if wrote && read["ActionStatus"] == "OK" {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "the server did not recover once the database was back");
    let _live = s.connect("a").await;
    assert_eq!(s.list("a", 2, 10).await, vec!["d".to_owned(), "b".to_owned()], "the refused follow of c left nothing behind");
    assert_eq!(s.counts("a").await, (0, 2, 0));
    assert_eq!(s.counts("c").await, (0, 0, 0));
    s.stop().await;
}

#[test]
fn urls_are_rewritten_through_the_proxy() {
    let to: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(
        through("postgres://postgres@127.0.0.1:5432/x", to),
        ("127.0.0.1:5432".to_owned(), "postgres://postgres@127.0.0.1:9/x".to_owned())
    );
    assert_eq!(through("postgres://u:p@h/x?a=b", to), ("h:5432".to_owned(), "postgres://u:p@127.0.0.1:9/x?a=b".to_owned()));
}

/// The next text frame of a WebSocket, as JSON.
async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> serde_json::Value {
    use futures_util::StreamExt as _;
    loop {
        let m =
            tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await.expect("a notification in time").unwrap().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// A WebSocket client on node B hears a change committed on node A, and a webhook setting changed
/// through node A's admin API is what node B sends with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_notifications_and_webhook_settings_cross_nodes() {
    let Some(url) = crate::pg::url("live_notifications_and_webhook_settings_cross_nodes") else { return };
    let db = crate::pg::TestDb::create(&url);
    let (first, second) = (Receiver::start().await, Receiver::start().await);
    let top = format!("database_url = \"{}\"", db.url);
    let a = spawn_with_top(&top, &hook(&first.url("/one"), ""), "").await;
    let b = spawn_with_top(&top, &hook(&first.url("/one"), ""), "").await;
    a.import(&["alice", "bob", "o'k\\x"]).await;
    let mut bob_on_b = b.connect("bob").await;
    assert_ok(&a.follow("alice", &["bob"]).await);
    assert_eq!(next_text(&mut bob_on_b).await, json!({"Event": "FollowersListChanged", "IsAdd": true, "Users": [{"UserID": "alice"}]}));
    // The notification's text is written into the commit's SQL: a quote and a backslash come through.
    assert_ok(&a.follow("o'k\\x", &["bob"]).await);
    assert_eq!(next_text(&mut bob_on_b).await, json!({"Event": "FollowersListChanged", "IsAdd": true, "Users": [{"UserID": "o'k\\x"}]}));

    assert_ok(&a.call("callback_config/set_callback", json!({"Url": second.url("/two")})).await);
    // Node B applies the stored setting within a second; a write on B after that goes to /two.
    let mut moved = false;
    for _ in 0..40 {
        if b.call("callback_config/get_callback", json!({})).await["Response"]["Url"] == second.url("/two") {
            moved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(moved, "node B never applied the setting changed on node A");
    assert_ok(&b.unfollow("alice", &["bob"]).await);
    let got = second.wait_for(1, 10).await;
    assert_eq!(got[0].path, "/two");
    assert_eq!(got[0].json()["CallbackCommand"], "Follow.CallbackAfterFollowDelete");
    a.stop().await;
    b.stop().await;
}

/// Two `followd` processes on one database; the one whose webhooks are being delivered is killed
/// with SIGKILL. Once its lease runs out the other node adopts its pending events and delivers every
/// one of them, in commit order for the From_Account (the event in flight at the kill may arrive
/// twice: delivery is at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_webhooks_are_delivered_by_the_other_node() {
    let Some(url) = crate::pg::url("a_killed_nodes_webhooks_are_delivered_by_the_other_node") else { return };
    let db = crate::pg::TestDb::create(&url);
    let rx = Receiver::start().await;
    rx.rule(|_| crate::receiver::Behavior::Slow(150));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("followd.toml");
    std::fs::write(&config, config_text_with_top(&format!("database_url = \"{}\"", db.url), &hook(&rx.url("/cb"), ""), "")).unwrap();
    let mut doomed = crate::binary::start(&config).await;
    let survivor = crate::binary::start(&config).await;
    let http = reqwest::Client::new();
    let users: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push("a");
    assert_ok(&doomed.call(&http, "im_open_login_svc/multiaccount_import", json!({ "Accounts": all })).await);
    for u in &users {
        assert_ok(&doomed.call(&http, "follow/follow_add", json!({"From_Account": "a", "FollowItem": [{"To_Account": u}]})).await);
    }
    rx.wait_for(1, 10).await;
    doomed.proc.start_kill().unwrap();
    doomed.proc.wait().await.unwrap();

    let committed: Vec<String> = db.with(|c| {
        c.query("SELECT encode(webhook_id, 'hex') FROM events ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| {
                let h: String = r.get(0);
                format!("evt_{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
            })
            .collect()
    });
    assert_eq!(committed.len(), users.len());
    let got = rx
        .wait_until(60, "every event of the killed node", |g| {
            g.iter().map(|r| r.header("webhook-id")).collect::<HashSet<_>>().len() >= committed.len()
        })
        .await;
    let mut first_seen: Vec<String> = Vec::new();
    for r in &got {
        let id = r.header("webhook-id").to_owned();
        if !first_seen.contains(&id) {
            first_seen.push(id);
        }
    }
    assert_eq!(first_seen, committed, "every event delivered, first in commit order");
    assert!(survivor.logged("adopted the pending webhooks"), "the survivor did not adopt them");
}
