//! Webhook delivery against a real recording receiver on loopback.

use crate::helpers::*;
use crate::receiver::{Behavior, Receiver};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An `[apps.webhook]` table pointing at `url`, with fast retries for tests.
pub(crate) fn hook(url: &str, extra: &str) -> String {
    let schedule = if extra.contains("retry_schedule_ms") { "" } else { "retry_schedule_ms = [30, 30, 30, 30, 30, 30]\n" };
    format!("[apps.webhook]\nurl = \"{url}\"\nallow_private_destinations = true\n{schedule}{extra}\n")
}

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/spec/vectors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub(crate) async fn events(s: &Server, filter: Value) -> Vec<Value> {
    let r = s.call("callback_config/list_events", filter).await;
    assert_ok(&r);
    r["Events"].as_array().unwrap().clone()
}

pub(crate) async fn wait_state(s: &Server, id: i64, state: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = events(s, json!({})).await;
        if let Some(e) = all.iter().find(|e| e["EventId"] == id) {
            if e["State"] == state {
                return e.clone();
            }
        }
        assert!(std::time::Instant::now() < deadline, "event {id} never became {state}: {all:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn both_webhooks_byte_for_byte_with_sign_and_signature() {
    let rx = Receiver::start().await;
    let secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZg==";
    let url = format!("{}?tenant=7", rx.url("/imcallback"));
    let s = spawn_with(&hook(&url, &format!("token = \"xxxxyyyy\"\nsigning_secret = \"{secret}\"")), "").await;
    s.import(&["UserID_001", "UserID_002", "UserID_003"]).await;
    assert_ok(&s.follow("UserID_001", &["UserID_002", "UserID_003"]).await);
    assert_ok(&s.unfollow("UserID_001", &["UserID_002", "UserID_003"]).await);
    let got = rx.wait_for(2, 10).await;
    let v = vectors();
    // Order per user: the add, then the delete.
    for (r, vector) in got.iter().zip([&v["webhooks"][1], &v["webhooks"][0]]) {
        assert_eq!(r.path, "/imcallback");
        let event_time = r.json()["EventTime"].as_u64().unwrap();
        assert!(event_time.abs_diff(now() * 1000) < 60_000, "EventTime is the commit time in ms: {event_time}");
        let mut expected = vector["body"].clone();
        expected["EventTime"] = json!(event_time);
        assert_eq!(std::str::from_utf8(&r.body).unwrap(), serde_json::to_string(&expected).unwrap(), "body byte for byte");
        // The configured query is kept; Chat's parameters follow in the documented order; then Sign.
        let request_time: u64 = r.param("RequestTime").unwrap().parse().unwrap();
        let sign = followd_protocol::sign::tencent_sign("xxxxyyyy", request_time);
        let expected_query = format!("tenant=7&{}&Sign={sign}&RequestTime={request_time}", vector["query"].as_str().unwrap());
        assert_eq!(r.query, expected_query);
        assert_eq!(r.header("content-type"), "application/json");
        assert!(r.header("user-agent").starts_with("followd/"));
        let id = r.header("webhook-id");
        let ts: u64 = r.header("webhook-timestamp").parse().unwrap();
        assert_eq!(r.header("webhook-signature"), followd_protocol::sign::standard_webhooks_signature(secret, id, ts, &r.body));
    }
    assert_ne!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    s.stop().await;
}

#[tokio::test]
async fn no_webhook_for_a_noop_or_an_unsubscribed_command() {
    let rx = Receiver::start().await;
    let s = spawn_with(&hook(&rx.url("/cb"), "commands = [\"Follow.CallbackAfterFollowDelete\"]"), "").await;
    s.import(&["a", "b"]).await;
    assert_ok(&s.follow("a", &["b"]).await); // not subscribed
    assert_ok(&s.follow("a", &["b"]).await); // no-op
    assert_ok(&s.unfollow("a", &["b"]).await); // owed
    assert_ok(&s.unfollow("a", &["b"]).await); // no-op
    assert_ok(&s.unfollow("a", &["nobody"]).await); // per-item error, nothing changed
    let got = rx.wait_for(1, 10).await;
    // Events of one user arrive in commit order, so anything owed before the delete would be here.
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].json()["CallbackCommand"], "Follow.CallbackAfterFollowDelete");
    assert_eq!(got[0].json()["To_Account"], json!(["b"]));
    assert_eq!(events(&s, json!({})).await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn ssrf_guard_refuses_private_destinations() {
    let rx = Receiver::start().await;
    for url in [rx.url("/cb"), format!("http://localhost:{}/cb", rx.addr.port())] {
        let table = format!("[apps.webhook]\nurl = \"{url}\"\n");
        let s = spawn_with(&table, "").await;
        s.import(&["a", "b"]).await;
        assert_ok(&s.follow("a", &["b"]).await);
        let id = events(&s, json!({})).await[0]["EventId"].as_i64().unwrap();
        let e = wait_state(&s, id, "dead").await;
        assert!(e["LastError"].as_str().unwrap().contains("private"), "{e}");
        let a = s.call("callback_config/list_attempts", json!({"EventId": id})).await;
        assert_eq!(a["Attempts"][0]["Outcome"], "refused", "{a}");
        s.stop().await;
    }
    assert!(rx.received().is_empty(), "nothing may reach a private address");
}

#[tokio::test]
async fn retries_after_500_timeout_and_non_json_keep_the_webhook_id() {
    let rx = Receiver::start().await;
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    rx.rule(move |_| match n2.fetch_add(1, Ordering::SeqCst) {
        0 => Behavior::Status(500),
        1 => Behavior::NotJson,
        2 => Behavior::Hang,
        _ => Behavior::Ok,
    });
    let s = spawn_with(&hook(&rx.url("/cb"), "timeout_ms = 300"), "").await;
    s.import(&["a", "b"]).await;
    assert_ok(&s.follow("a", &["b"]).await);
    let id = events(&s, json!({})).await[0]["EventId"].as_i64().unwrap();
    let e = wait_state(&s, id, "delivered").await;
    assert_eq!(e["Attempts"], 4);
    let got = rx.received();
    assert_eq!(got.len(), 4);
    assert!(
        got.iter().all(|r| r.header("webhook-id") == got[0].header("webhook-id") && r.body == got[0].body),
        "same id and body on every retry"
    );
    let a = s.call("callback_config/list_attempts", json!({"EventId": id})).await;
    let outcomes: Vec<&str> = a["Attempts"].as_array().unwrap().iter().map(|x| x["Outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["http_status", "not_json", "timeout", "ok"]);
    assert_eq!(a["Attempts"][0]["HttpStatus"], 500);
    assert_eq!(a["Attempts"][3]["Response"], followd_protocol::webhook::RESPONSE_OK);
    s.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured_and_retry_none_gives_one_attempt() {
    let rx = Receiver::start().await;
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    rx.rule(move |r| {
        if r.sender() == "once" {
            return Behavior::Status(500);
        }
        match n2.fetch_add(1, Ordering::SeqCst) {
            0 => Behavior::RetryAfter(429, 1),
            _ => Behavior::Ok,
        }
    });
    let s = spawn_with(&hook(&rx.url("/cb"), ""), &hook(&rx.url("/b"), "retry = \"none\"")).await;
    s.import(&["a", "b"]).await;
    assert_ok(&s.follow("a", &["b"]).await);
    let got = rx.wait_for(2, 10).await;
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(900), "Retry-After: 1 waited only {gap:?} (the schedule says 30 ms)");
    // App B: retry = "none" gives exactly one attempt, then the event is dead.
    s.import_app(APP_B, KEY_B, &["once", "b"]).await;
    assert_ok(&s.call_app(APP_B, KEY_B, "follow/follow_add", json!({"From_Account": "once", "FollowItem": [{"To_Account": "b"}]})).await);
    let r = s.call_app(APP_B, KEY_B, "callback_config/list_events", json!({})).await;
    let id = r["Events"][0]["EventId"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.call_app(APP_B, KEY_B, "callback_config/list_events", json!({"State": "dead"})).await;
        if r["Events"].as_array().unwrap().iter().any(|e| e["EventId"] == id) {
            assert_eq!(r["Events"][0]["Attempts"], 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rx.received().iter().filter(|r| r.path == "/b").count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn order_per_user_holds_while_retrying_and_other_users_do_not_wait() {
    let rx = Receiver::start().await;
    let fails = Arc::new(AtomicUsize::new(0));
    let f2 = fails.clone();
    // Alice's first event fails three times; everybody else is fine.
    rx.rule(move |r| {
        let v = r.json();
        let first_of_alice = v["From_Account"] == "alice" && v["FollowList"][0]["To_Account"] == "u1";
        if first_of_alice && f2.fetch_add(1, Ordering::SeqCst) < 3 {
            Behavior::Status(503)
        } else {
            Behavior::Ok
        }
    });
    let s = spawn_with(&hook(&rx.url("/cb"), "retry_schedule_ms = [200, 200, 200, 200]"), "").await;
    s.import(&["alice", "bob", "u1", "u2", "u3"]).await;
    for t in ["u1", "u2", "u3"] {
        assert_ok(&s.follow("alice", &[t]).await);
    }
    assert_ok(&s.unfollow("alice", &["u2"]).await);
    assert_ok(&s.follow("bob", &["u1"]).await);
    let got = rx
        .wait_until(15, "alice's four events", |g| {
            g.iter().filter(|r| r.sender() == "alice" && r.header("content-type") == "application/json").count() >= 7
        })
        .await;
    let alice: Vec<Value> = got.iter().filter(|r| r.sender() == "alice").map(|r| r.json()).collect();
    let summary: Vec<String> = alice
        .iter()
        .map(|b| match b.get("FollowList") {
            Some(l) => format!("+{}", l[0]["To_Account"].as_str().unwrap()),
            None => format!("-{}", b["To_Account"][0].as_str().unwrap()),
        })
        .collect();
    assert_eq!(summary, ["+u1", "+u1", "+u1", "+u1", "+u2", "+u3", "-u2"], "commit order per user, retries first");
    // Bob's event did not wait for alice's retries.
    let bob_at = got.iter().position(|r| r.sender() == "bob").unwrap();
    let alice_done = got.iter().rposition(|r| r.json()["FollowList"][0]["To_Account"] == "u1" && r.sender() == "alice").unwrap();
    assert!(bob_at < alice_done, "bob was delivered while alice's first event was still being retried");
    s.stop().await;
}

#[tokio::test]
async fn a_hanging_receiver_slows_neither_the_api_nor_other_apps() {
    let hanging = Receiver::start().await;
    hanging.rule(|_| Behavior::Hang);
    let healthy = Receiver::start().await;
    let s = spawn_with(&hook(&hanging.url("/cb"), "timeout_ms = 20000"), &hook(&healthy.url("/cb"), "")).await;
    let users: Vec<String> = (0..60).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    s.import(&refs).await;
    s.import_app(APP_B, KEY_B, &["x", "y"]).await;
    // Fifty-nine users' events are owed to a receiver that never answers; every API call still
    // answers at once, and the endpoint holds only its first attempts (16 until one answers).
    for u in &refs[1..] {
        assert_ok(&s.follow(u, &["u0"]).await);
    }
    hanging.wait_for(16, 10).await;
    assert_ok(&s.call_app(APP_B, KEY_B, "follow/follow_add", json!({"From_Account": "x", "FollowItem": [{"To_Account": "y"}]})).await);
    healthy.wait_for(1, 10).await;
    // None of the hanging attempts has finished: the API and app B went on regardless.
    let text = s.http.get(format!("http://{}/metrics", s.addr)).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("outcome=\"timeout\""), "{text}");
    assert!(text.contains("followd_webhook_pending_events 59"), "{text}");
    assert_eq!(hanging.received().len(), 16, "no more than the initial in-flight limit hangs");
    s.stop_quickly().await;
}

#[tokio::test]
async fn a_receiver_outage_and_recovery_lose_nothing() {
    let rx = Receiver::start().await;
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let d2 = down.clone();
    rx.rule(move |_| if d2.load(Ordering::SeqCst) { Behavior::Status(503) } else { Behavior::Ok });
    let s = spawn_with(
        &hook(&rx.url("/cb"), "retry_schedule_ms = [50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50]"),
        "",
    )
    .await;
    let users: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    s.import(&refs).await;
    for u in &refs[1..] {
        assert_ok(&s.follow(u, &["u0"]).await);
    }
    // Ten failures in a row open the circuit breaker, which then lets one probe through a second
    // later (and fails it, doubling the pause). Without it the 50 ms schedule would send each of the
    // 29 events again about twenty times a second.
    rx.wait_for(10, 10).await;
    // The first probe comes 1 s after the breaker opens, the second 2 s after that.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let during = rx.received().len();
    assert!((11..=33).contains(&during), "{during} requests in the first 2.2 s of the outage: expected the first attempts and one probe");
    assert!(events(&s, json!({"State": "dead"})).await.is_empty(), "an open breaker does not use up retries");
    down.store(false, Ordering::SeqCst);
    let got = rx
        .wait_until(20, "every event delivered after recovery", |g| {
            let ok: std::collections::HashSet<String> = g.iter().map(|r| r.sender()).collect();
            ok.len() == 29 && events_delivered(g) >= 29
        })
        .await;
    let _ = got;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let delivered = events(&s, json!({"State": "delivered"})).await.len();
        if delivered == 29 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{delivered} of 29 delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(events(&s, json!({"State": "dead"})).await.is_empty());
    s.stop().await;
}

/// Requests answered after the outage ended (the receiver saw them while up).
fn events_delivered(g: &[crate::receiver::Received]) -> usize {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, r) in g.iter().enumerate() {
        last.insert(r.header("webhook-id").to_owned(), i);
    }
    last.len()
}

#[tokio::test]
async fn account_deletion_fan_out_is_delivered() {
    let rx = Receiver::start().await;
    let s = spawn_with(&hook(&rx.url("/cb"), "commands = [\"Follow.CallbackAfterFollowDelete\"]"), "").await;
    let idols: Vec<String> = (0..25).map(|i| format!("idol{i}")).collect();
    let mut users: Vec<&str> = idols.iter().map(String::as_str).collect();
    users.extend(["hub", "fan"]);
    s.import(&users).await;
    assert_ok(&s.follow("hub", &users[..20]).await);
    assert_ok(&s.follow("hub", &users[20..25]).await);
    assert_ok(&s.follow("fan", &["hub"]).await);
    assert_ok(&s.call("im_open_login_svc/account_delete", json!({"DeleteItem": [{"UserID": "hub"}]})).await);
    let got = rx.wait_for(3, 10).await;
    let hub: Vec<Value> = got.iter().filter(|r| r.sender() == "hub").map(|r| r.json()).collect();
    assert_eq!(hub.len(), 2);
    assert_eq!(hub[0]["To_Account"].as_array().unwrap().len(), 20);
    assert_eq!(hub[1]["To_Account"].as_array().unwrap().len(), 5);
    let fan: Vec<Value> = got.iter().filter(|r| r.sender() == "fan").map(|r| r.json()).collect();
    assert_eq!(fan[0]["To_Account"], json!(["hub"]));
    assert!(got.iter().all(|r| r.param("OptPlatform").as_deref() == Some("RESTAPI")));
    s.stop().await;
}

#[tokio::test]
async fn replay_one_event_and_every_dead_event_in_a_range() {
    let rx = Receiver::start().await;
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let u2 = up.clone();
    rx.rule(move |_| if u2.load(Ordering::SeqCst) { Behavior::Ok } else { Behavior::Status(500) });
    let s = spawn_with(&hook(&rx.url("/cb"), "retry = \"none\""), "").await;
    s.import(&["a", "b", "c"]).await;
    let start = followd::now_millis();
    assert_ok(&s.follow("a", &["b"]).await);
    assert_ok(&s.follow("b", &["c"]).await);
    assert_ok(&s.follow("c", &["a"]).await);
    let all = events(&s, json!({})).await;
    let ids: Vec<i64> = all.iter().map(|e| e["EventId"].as_i64().unwrap()).collect();
    for id in &ids {
        wait_state(&s, *id, "dead").await;
    }
    up.store(true, Ordering::SeqCst);
    // One event.
    let r = s.call("callback_config/replay_event", json!({"EventId": ids[0]})).await;
    assert_ok(&r);
    assert_eq!(r["Replayed"], 1);
    wait_state(&s, ids[0], "delivered").await;
    // A delivered event can be replayed too; a pending or unknown one cannot.
    assert_fail(&s.call("callback_config/replay_event", json!({"EventId": 999999})).await, 100002);
    // Every dead event in the range.
    let r = s.call("callback_config/replay_dead", json!({"StartTime": start, "EndTime": followd::now_millis() + 1})).await;
    assert_eq!(r["Replayed"], 2, "{r}");
    for id in &ids[1..] {
        wait_state(&s, *id, "delivered").await;
    }
    let got = rx.received();
    assert_eq!(got.len(), 6, "three failed attempts and three replays");
    // Each replay carries the webhook-id of its event's failed attempt (the one with the same body).
    for replay in &got[3..] {
        let first = got[..3].iter().find(|r| r.body == replay.body).unwrap();
        assert_eq!(replay.header("webhook-id"), first.header("webhook-id"));
    }
    let distinct: std::collections::HashSet<&str> = got[..3].iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(distinct.len(), 3);
    assert_fail(&s.call("callback_config/replay_dead", json!({"StartTime": 5, "EndTime": 1})).await, 100002);
    s.stop().await;
}

#[tokio::test]
async fn admin_api_changes_apply_without_restart_and_persist() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let s = spawn_with(&hook(&first.url("/one"), ""), "").await;
    s.import(&["a", "b"]).await;
    let r = s.call("callback_config/get_callback", json!({})).await;
    assert_eq!(r["Response"]["Url"], first.url("/one"));
    assert_eq!(r["Response"]["CallbackCommandList"], json!(["Follow.CallbackAfterFollowAdd", "Follow.CallbackAfterFollowDelete"]));
    assert_ok(&s.follow("a", &["b"]).await);
    first.wait_for(1, 10).await;

    let r = s
        .call(
            "callback_config/set_callback",
            json!({"Url": second.url("/two"), "CallbackCommandList": ["Follow.CallbackAfterFollowDelete"]}),
        )
        .await;
    assert_ok(&r);
    assert_ok(&s.call("callback_config/set_callback_token", json!({"Token": "tok", "IsTokenEnable": true})).await);
    let r = s.call("callback_config/get_callback_token", json!({})).await;
    assert_eq!(r["Response"], json!({"IsTokenEnable": true, "Token": "tok"}));
    assert_ok(&s.follow("b", &["a"]).await); // no longer subscribed
    assert_ok(&s.unfollow("a", &["b"]).await);
    let got = second.wait_for(1, 10).await;
    assert_eq!(got[0].path, "/two");
    let t: u64 = got[0].param("RequestTime").unwrap().parse().unwrap();
    assert_eq!(got[0].param("Sign").unwrap(), followd_protocol::sign::tencent_sign("tok", t));
    assert_eq!(first.received().len(), 1);

    // Bad input is refused in the protocol's format and changes nothing.
    assert_fail(&s.call("callback_config/set_callback", json!({"Url": "ftp://x"})).await, 100002);
    assert_fail(&s.call("callback_config/set_callback", json!({"Url": second.url("/x"), "CallbackCommandList": ["Nope"]})).await, 100002);
    assert_fail(&s.call("callback_config/set_callback_token", json!({"Token": ""})).await, 100002);
    assert_fail(&s.call("callback_config/list_events", json!({"State": "lost"})).await, 100002);
    assert_fail(&s.call("callback_config/list_attempts", json!({"EventId": 424242})).await, 100002);
    let alice = sig(KEY_A, APP_A, "a");
    let r = s.post_raw(&s.url("callback_config/get_callback", APP_A, "a", &alice), "{}").await;
    assert_fail(&r, 60010);
    // App B cannot see app A's events.
    let r = s.call_app(APP_B, KEY_B, "callback_config/list_events", json!({})).await;
    assert_eq!(r["Events"], json!([]));
    let r = s.call("callback_config/get_callback", json!({})).await;
    assert_eq!(r["Response"]["Url"], second.url("/two"));

    // Turning webhooks off.
    assert_ok(&s.call("callback_config/set_callback", json!({"Url": ""})).await);
    assert_eq!(s.call("callback_config/get_callback", json!({})).await["Response"]["Url"], "");
    s.stop().await;
}

#[tokio::test]
async fn list_events_filters_and_pages() {
    let rx = Receiver::start().await;
    let s = spawn_with(&hook(&rx.url("/cb"), ""), "").await;
    s.import(&["a", "b", "c"]).await;
    for _ in 0..3 {
        assert_ok(&s.follow("a", &["b"]).await);
        assert_ok(&s.unfollow("a", &["b"]).await);
    }
    assert_ok(&s.follow("c", &["b"]).await);
    rx.wait_for(7, 10).await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = s.call("callback_config/list_events", json!({"Limit": 2, "Cursor": cursor, "From_Account": "a"})).await;
        assert_ok(&r);
        seen.extend(r["Events"].as_array().unwrap().iter().map(|e| e["EventId"].as_i64().unwrap()));
        cursor = r["NextCursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 6);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first");
    let adds = events(&s, json!({"CallbackCommand": "Follow.CallbackAfterFollowAdd"})).await;
    assert_eq!(adds.len(), 4);
    let e = &adds[0];
    assert_eq!(e["From_Account"], "c");
    assert_eq!(e["Body"]["FollowList"], json!([{"To_Account": "b"}]));
    assert_eq!(e["ClientIP"], "127.0.0.1");
    assert_eq!(e["OptPlatform"], "RESTAPI");
    // The listed WebhookId is the header the receiver saw, not derived from the EventId.
    let sent = rx.received().into_iter().find(|r| r.sender() == "c").unwrap();
    assert_eq!(e["WebhookId"], sent.header("webhook-id"));
    assert_ne!(e["WebhookId"], format!("evt_{}", e["EventId"]));
    s.stop().await;
}

#[tokio::test]
async fn config_file_change_takes_effect_without_restart() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("followd.toml");
    std::fs::write(&path, config_text(&hook(&first.url("/one"), ""), "")).unwrap();
    let s = spawn_from_file(&path, dir).await;
    s.import(&["a", "b"]).await;
    assert_ok(&s.follow("a", &["b"]).await);
    first.wait_for(1, 10).await;
    std::fs::write(&path, config_text(&hook(&second.url("/two"), ""), "")).unwrap();
    // Within a second or so, new events go to the new URL.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while second.received().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the new URL never got an event");
        i += 1;
        if i % 2 == 0 {
            assert_ok(&s.unfollow("a", &["b"]).await);
        } else {
            assert_ok(&s.follow("a", &["b"]).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn metrics_cover_queue_attempts_and_api() {
    let rx = Receiver::start().await;
    let s = spawn_with(&hook(&rx.url("/cb"), ""), "").await;
    s.import(&["a", "b"]).await;
    assert_ok(&s.follow("a", &["b"]).await);
    rx.wait_for(1, 10).await;
    let text = s.http.get(format!("http://{}/metrics", s.addr)).send().await.unwrap().text().await.unwrap();
    for needle in [
        "followd_webhook_pending_events",
        "followd_webhook_oldest_pending_age_seconds",
        "followd_webhook_attempts_total{outcome=\"ok\"}",
        "followd_webhook_attempt_duration_seconds_bucket",
        "followd_api_requests_total{command=\"follow_add\",result=\"ok\"}",
        "followd_api_request_duration_seconds_count{command=\"follow_add\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_backlog_larger_than_memory_waits_in_the_outbox_and_keeps_its_order() {
    if crate::pg::sqlite_only(
        "a_backlog_larger_than_memory_waits_in_the_outbox_and_keeps_its_order",
        "its backlog builds only while sequential API writes outpace a 5 ms receiver, which a networked store's writes do not",
    ) {
        return;
    }
    let rx = Receiver::start().await;
    rx.rule(|_| Behavior::Slow(5));
    let s = spawn_with_top("delivery_queue_in_memory = 4", &hook(&rx.url("/cb"), ""), "").await;
    let users: Vec<String> = (0..40).map(|i| format!("u{i:02}")).collect();
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push("a");
    s.import(&all).await;
    // Thirty events of one user, then one each of twenty others, far past the 4 held in memory.
    for u in &users[..30] {
        assert_ok(&s.follow("a", &[u]).await);
    }
    for u in &users[20..40] {
        assert_ok(&s.follow(u, &["a"]).await);
    }
    let text = s.http.get(format!("http://{}/metrics", s.addr)).send().await.unwrap().text().await.unwrap();
    let pending: u64 =
        text.lines().find(|l| l.starts_with("followd_webhook_pending_events ")).unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    assert!(pending > 4, "the gauge counts the outbox too: {pending}");
    let got = rx.wait_for(50, 30).await;
    let a: Vec<String> =
        got.iter().filter(|r| r.sender() == "a").map(|r| r.json()["FollowList"][0]["To_Account"].as_str().unwrap().to_owned()).collect();
    assert_eq!(a, users[..30].to_vec(), "one user's events in commit order");
    let mut others: Vec<String> = got.iter().filter(|r| r.sender() != "a").map(|r| r.sender()).collect();
    others.sort();
    assert_eq!(others, users[20..40].to_vec(), "every event once");
    s.stop().await;
}

#[tokio::test]
async fn a_retry_scheduled_centuries_ahead_does_not_stop_delivery() {
    let rx = Receiver::start().await;
    rx.rule(|r| if r.sender() == "a" { Behavior::Status(500) } else { Behavior::Ok });
    // retry_schedule_ms is not bounded: the timer of a's retry must not take the dispatcher down.
    let s = spawn_with(&hook(&rx.url("/cb"), "retry_schedule_ms = [100000000000000]"), "").await;
    s.import(&["a", "b"]).await;
    assert_ok(&s.follow("a", &["b"]).await);
    rx.wait_for(1, 10).await;
    assert_ok(&s.follow("b", &["a"]).await);
    rx.wait_until(10, "b's webhook after a's failure", |g| g.iter().any(|r| r.sender() == "b")).await;
    let a = events(&s, json!({"From_Account": "a"})).await;
    assert_eq!(a[0]["State"], "pending", "{a:?}");
    s.stop().await;
}
