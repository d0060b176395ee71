//! The client API and live notifications, with real WebSocket clients.

use crate::helpers::*;
use crate::receiver::Receiver;
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Server {
    /// Calls the client API as `user` (with its own UserSig) from `platform`.
    pub async fn client(&self, user: &str, api: &str, body: Value, headers: &[(&str, &str)]) -> Value {
        let url =
            format!("http://{}/v1/client/follow/{api}?sdkappid={APP_A}&identifier={user}&usersig={}", self.addr, sig(KEY_A, APP_A, user));
        let mut req = self.http.post(url).body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn connect(&self, user: &str) -> Ws {
        let url = format!("ws://{}/v1/client/events?sdkappid={APP_A}&identifier={user}&usersig={}", self.addr, sig(KEY_A, APP_A, user));
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }
}

async fn next_msg(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a notification in time").unwrap().unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// The next `n` messages, in any order (the server does not order different lists' messages).
async fn msgs(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(next_msg(ws).await);
    }
    v.sort_by_key(|m| m["Event"].as_str().unwrap().to_owned());
    v
}

fn msg(event: &str, is_add: bool, users: Value) -> Value {
    json!({"Event": event, "IsAdd": is_add, "Users": users})
}

#[tokio::test]
async fn alice_and_bob_follow_mutually_and_unfollow_with_live_notifications() {
    let s = spawn().await;
    assert_ok(&s.call("im_open_login_svc/account_import", json!({"UserID": "alice", "Nick": "Alice"})).await);
    assert_ok(&s.call("im_open_login_svc/account_import", json!({"UserID": "bob", "Nick": "Bob"})).await);
    let mut alice = s.connect("alice").await;
    let mut alice_tablet = s.connect("alice").await;
    let mut bob = s.connect("bob").await;

    // Alice follows Bob: From_Account may be omitted on the client API.
    let r = s.client("alice", "follow_add", json!({"FollowItem": [{"To_Account": "bob"}]}), &[]).await;
    assert_eq!(codes(&r), vec![("bob".into(), 0)]);
    assert_eq!(next_msg(&mut alice).await, msg("FollowingListChanged", true, json!([{"UserID": "bob", "Nick": "Bob"}])));
    assert_eq!(next_msg(&mut alice_tablet).await, msg("FollowingListChanged", true, json!([{"UserID": "bob", "Nick": "Bob"}])));
    assert_eq!(next_msg(&mut bob).await, msg("FollowersListChanged", true, json!([{"UserID": "alice", "Nick": "Alice"}])));

    // Bob follows back: both lists change and both get a mutual-list addition.
    assert_ok(&s.client("bob", "follow_add", json!({"From_Account": "bob", "FollowItem": [{"To_Account": "alice"}]}), &[]).await);
    assert_eq!(
        msgs(&mut bob, 2).await,
        vec![
            msg("FollowingListChanged", true, json!([{"UserID": "alice", "Nick": "Alice"}])),
            msg("MutualListChanged", true, json!([{"UserID": "alice", "Nick": "Alice"}]))
        ]
    );
    assert_eq!(
        msgs(&mut alice, 2).await,
        vec![
            msg("FollowersListChanged", true, json!([{"UserID": "bob", "Nick": "Bob"}])),
            msg("MutualListChanged", true, json!([{"UserID": "bob", "Nick": "Bob"}]))
        ]
    );
    msgs(&mut alice_tablet, 2).await;

    // Alice unfollows: deletions carry only the UserID.
    assert_ok(&s.client("alice", "follow_delete", json!({"To_Account": ["bob"]}), &[]).await);
    assert_eq!(
        msgs(&mut alice, 2).await,
        vec![msg("FollowingListChanged", false, json!([{"UserID": "bob"}])), msg("MutualListChanged", false, json!([{"UserID": "bob"}]))]
    );
    assert_eq!(
        msgs(&mut bob, 2).await,
        vec![
            msg("FollowersListChanged", false, json!([{"UserID": "alice"}])),
            msg("MutualListChanged", false, json!([{"UserID": "alice"}]))
        ]
    );
    msgs(&mut alice_tablet, 2).await;

    // A change through the admin REST API notifies too, with one message for a whole batch.
    s.import(&["carol", "dave"]).await;
    assert_ok(&s.follow("carol", &["alice", "bob"]).await);
    assert_eq!(next_msg(&mut alice).await, msg("FollowersListChanged", true, json!([{"UserID": "carol"}])));
    assert_eq!(next_msg(&mut bob).await, msg("FollowersListChanged", true, json!([{"UserID": "carol"}])));
    // The other client API reads work for the caller.
    let r = s.client("alice", "follow_get", json!({"FollowType": 1, "StartCursor": "", "WantNum": 500}), &[]).await;
    assert_eq!(r["FollowItem"].as_array().unwrap().len(), 2);
    let r = s.client("alice", "follow_get_info", json!({"To_Account": ["alice"]}), &[]).await;
    assert_eq!(r["FollowInfo"][0]["FollowerCount"], 2);
    let r = s.client("alice", "follow_check", json!({"To_Account": ["bob", "carol"]}), &[]).await;
    assert_eq!(r["ResultItem"][0]["FollowType"], 1);
    s.stop().await;
}

#[tokio::test]
async fn users_cannot_act_for_others_and_bad_usersigs_are_refused() {
    let s = spawn().await;
    s.import(&["alice", "bob", "carol"]).await;
    let r = s.client("alice", "follow_add", json!({"From_Account": "bob", "FollowItem": [{"To_Account": "carol"}]}), &[]).await;
    assert_fail(&r, 30004);
    // An admin's UserSig on the client API is that user acting for itself, not an admin.
    let r = s.client(ADMIN, "follow_delete", json!({"From_Account": "bob", "To_Account": ["carol"]}), &[]).await;
    assert_fail(&r, 30004);
    assert_eq!(s.counts("carol").await, (0, 0, 0));
    let expired = followd_protocol::usersig::generate(KEY_A, APP_A, "alice", now() - 100, 10, None);
    let url = format!("http://{}/v1/client/follow/follow_add?sdkappid={APP_A}&identifier=alice&usersig={expired}", s.addr);
    let r: Value = s.http.post(&url).body(r#"{"FollowItem":[{"To_Account":"bob"}]}"#).send().await.unwrap().json().await.unwrap();
    assert_fail(&r, 70001);
    let forged = sig(KEY_A, APP_A, "bob");
    let url = format!("http://{}/v1/client/follow/follow_add?sdkappid={APP_A}&identifier=alice&usersig={forged}", s.addr);
    let r: Value = s.http.post(&url).body(r#"{"FollowItem":[{"To_Account":"bob"}]}"#).send().await.unwrap().json().await.unwrap();
    assert_fail(&r, 70013);
    // The WebSocket is refused too, with 401 and the envelope.
    let url = format!("ws://{}/v1/client/events?sdkappid={APP_A}&identifier=alice&usersig={expired}", s.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["ErrorCode"], 70001);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Client limits: 20 targets, pages of at most 500, an unknown client API.
    let targets: Vec<Value> = (0..21).map(|i| json!({"To_Account": format!("u{i}")})).collect();
    assert_fail(&s.client("alice", "follow_add", json!({"FollowItem": targets}), &[]).await, 30001);
    assert_fail(&s.client("alice", "follow_get", json!({"FollowType": 1, "WantNum": 501}), &[]).await, 30001);
    assert_ok(&s.client("alice", "follow_get", json!({"FollowType": 1, "WantNum": 500}), &[]).await);
    assert_fail(&s.client("alice", "account_import", json!({"UserID": "x"}), &[]).await, 60009);
    s.stop().await;
}

#[tokio::test]
async fn webhooks_carry_the_client_platform_and_address() {
    for (trusted, expected_ip) in [(true, "203.0.113.7"), (false, "127.0.0.1")] {
        let rx = Receiver::start().await;
        let top = if trusted { "trusted_proxies = [\"127.0.0.1/32\"]" } else { "" };
        let hook = format!("[apps.webhook]\nurl = \"{}\"\nallow_private_destinations = true\n", rx.url("/cb"));
        let s = spawn_with_top(top, &hook, "").await;
        s.import(&["alice", "bob"]).await;
        let xff = [("x-client-platform", "iOS"), ("x-forwarded-for", "203.0.113.7, 10.0.0.1")];
        assert_ok(&s.client("alice", "follow_add", json!({"FollowItem": [{"To_Account": "bob"}]}), &xff).await);
        assert_ok(&s.client("alice", "follow_delete", json!({"To_Account": ["bob"]}), &[("x-client-platform", "PlayStation")]).await);
        assert_ok(&s.follow("bob", &["alice"]).await);
        let got = rx.wait_for(3, 10).await;
        assert_eq!(got[0].param("OptPlatform").as_deref(), Some("iOS"));
        assert_eq!(got[0].param("ClientIP").as_deref(), Some(expected_ip), "trusted proxy: {trusted}");
        assert_eq!(got[1].param("OptPlatform").as_deref(), Some("Unknown"));
        assert_eq!(got[1].param("ClientIP").as_deref(), Some("127.0.0.1"));
        let admin = got.iter().find(|r| r.sender() == "bob").unwrap();
        assert_eq!(admin.param("OptPlatform").as_deref(), Some("RESTAPI"));
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_each_receive_exactly_their_own_notifications() {
    const N: usize = 1000;
    let s = spawn().await;
    let users: Vec<String> = (0..N).map(|i| format!("u{i:04}")).collect();
    for chunk in users.chunks(100) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        s.import(&refs).await;
    }
    let mut clients = Vec::new();
    for u in &users {
        clients.push(s.connect(u).await);
    }
    // Each user follows the next one: everyone gains one followee and one follower.
    let mut calls = Vec::new();
    for i in 0..N {
        let (from, to) = (users[i].clone(), users[(i + 1) % N].clone());
        let (http, url) = (s.http.clone(), s.url("follow/follow_add", APP_A, ADMIN, &sig(KEY_A, APP_A, ADMIN)));
        calls.push(tokio::spawn(async move {
            let body = json!({"From_Account": from, "FollowItem": [{"To_Account": to}]}).to_string();
            let r: Value = http.post(url).body(body).send().await.unwrap().json().await.unwrap();
            assert_eq!(r["ActionStatus"], "OK", "{r}");
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    let checks = clients.into_iter().enumerate().map(|(i, mut ws)| {
        let (next, prev) = (users[(i + 1) % N].clone(), users[(i + N - 1) % N].clone());
        tokio::spawn(async move {
            let got = msgs(&mut ws, 2).await;
            assert_eq!(
                got,
                vec![
                    msg("FollowersListChanged", true, json!([{"UserID": prev}])),
                    msg("FollowingListChanged", true, json!([{"UserID": next}]))
                ]
            );
            // Nothing else arrives for this user.
            assert!(tokio::time::timeout(Duration::from_millis(300), ws.next()).await.is_err(), "an extra message");
        })
    });
    for c in checks.collect::<Vec<_>>() {
        c.await.unwrap();
    }
    s.stop_quickly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_dropped_and_never_slows_the_others() {
    let s = spawn().await;
    // Twenty users with long nicks make each follow_add notification about 10 KiB.
    let idols: Vec<String> = (0..20).map(|i| format!("idol{i}")).collect();
    for u in &idols {
        assert_ok(&s.call("im_open_login_svc/account_import", json!({"UserID": u, "Nick": "n".repeat(500)})).await);
    }
    s.import(&["fan"]).await;
    let _slow = s.connect("fan").await; // never read
    let mut fast = s.connect("fan").await;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 2000 {
            next_msg(&mut fast).await;
            n += 1;
        }
        n
    });
    let refs: Vec<&str> = idols.iter().map(String::as_str).collect();
    for _ in 0..1000 {
        assert_ok(&s.follow("fan", &refs).await);
        assert_ok(&s.unfollow("fan", &refs).await);
    }
    // The other device of the same user got every notification (about 10 MiB) while the first one
    // stalled with full buffers and was dropped.
    assert_eq!(reader.await.unwrap(), 2000);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = s.http.get(format!("http://{}/metrics", s.addr)).send().await.unwrap().text().await.unwrap();
        if text.contains("followd_live_dropped_clients 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the stalled client was not dropped:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop_quickly().await;
}

#[tokio::test]
async fn one_user_holds_at_most_sixteen_live_connections() {
    let s = spawn().await;
    s.import(&["alice"]).await;
    let mut devices = Vec::new();
    for _ in 0..16 {
        devices.push(s.connect("alice").await);
    }
    let url = format!("ws://{}/v1/client/events?sdkappid={APP_A}&identifier=alice&usersig={}", s.addr, sig(KEY_A, APP_A, "alice"));
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 429);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["ErrorCode"], 60007);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Closing one device makes room again.
    let mut first = devices.remove(0);
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if tokio_tungstenite::connect_async(&url).await.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no room after a device left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop_quickly().await;
}
