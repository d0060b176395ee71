//! One app's dead endpoint and backlog never hold up another app's webhooks (decisions.md §4,
//! "Isolated"), however small the memory window.

use crate::helpers::*;
use crate::receiver::{Behavior, Receiver};
use crate::webhooks::hook;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
/// A hangs, B answers 503, C answers 503 until it comes back, D is healthy.
const APPS: [u64; 4] = [1_400_000_100, 1_400_000_101, 1_400_000_102, 1_400_000_103];

fn config(hooks: &[String; 4]) -> String {
    let mut c = String::from("listen = \"127.0.0.1:0\"\ndelivery_queue_in_memory = 8\n");
    for (app, hook) in APPS.iter().zip(hooks) {
        c.push_str(&format!("\n[[apps]]\nsdkappid = {app}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\n{hook}\n"));
    }
    c
}

async fn follow(s: &Server, app: u64, from: &str, to: &str) {
    let r = s.call_app(app, KEY, "follow/follow_add", json!({"From_Account": from, "FollowItem": [{"To_Account": to}]})).await;
    assert_ok(&r);
    assert_eq!(r["ResultItem"][0]["ResultCode"], 0, "{r}");
}

async fn pending_gauge(s: &Server) -> u64 {
    let text = s.http.get(format!("http://{}/metrics", s.addr)).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix("followd_webhook_pending_events ")).unwrap().parse().unwrap()
}

#[tokio::test]
async fn three_dead_endpoints_with_backlogs_past_the_window_do_not_hold_up_a_fourth_app() {
    let hanging = Receiver::start().await;
    hanging.rule(|_| Behavior::Hang);
    let failing = Receiver::start().await;
    failing.rule(|_| Behavior::Status(503));
    let recovering = Receiver::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let answered_ok: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (d2, ok2) = (down.clone(), answered_ok.clone());
    recovering.rule(move |r| {
        if d2.load(Ordering::SeqCst) {
            Behavior::Status(503)
        } else {
            ok2.lock().push(r.json());
            Behavior::Ok
        }
    });
    let healthy = Receiver::start().await;
    // Retries far apart (or attempts that hang) keep the dead apps' events pending for the whole test.
    let quick_retries = format!("retry_schedule_ms = [{}]", ["100"; 40].join(", "));
    let s = spawn_config(&config(&[
        hook(&hanging.url("/a"), "timeout_ms = 30000\nretry_schedule_ms = [60000]"),
        hook(&failing.url("/b"), "retry_schedule_ms = [60000]"),
        hook(&recovering.url("/c"), &quick_retries),
        hook(&healthy.url("/d"), ""),
    ]))
    .await;
    let users: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    let targets: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    let accounts: Vec<&str> = users.iter().chain(&targets).map(String::as_str).chain(["x", "y0", "y1", "y2", "y3", "y4"]).collect();
    for app in APPS {
        s.import_app(app, KEY, &accounts).await;
    }
    // A backlog of 100 events (10 users × 10) for each dead app, far past the 8 events of memory.
    for t in &targets {
        for u in &users {
            for app in &APPS[..3] {
                follow(&s, *app, u, t).await;
            }
        }
    }
    assert_eq!(pending_gauge(&s).await, 300, "the gauge counts what waits in the outbox too");

    // The healthy app's new webhooks arrive while the three others are still down.
    for i in 0..5 {
        follow(&s, APPS[3], "x", &format!("y{i}")).await;
    }
    let got = healthy.wait_for(5, 30).await;
    let to: Vec<Value> = got.iter().map(|r| r.json()["FollowList"][0]["To_Account"].clone()).collect();
    assert_eq!(to, ["y0", "y1", "y2", "y3", "y4"], "in commit order, each once");
    assert!(answered_ok.lock().is_empty());
    assert!(!hanging.received().is_empty() && !failing.received().is_empty(), "the dead endpoints were tried");

    // The recovering app comes back: all its events arrive, in order per user, each once.
    down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(90);
    while answered_ok.lock().len() < 100 {
        assert!(Instant::now() < deadline, "only {} of 100 events arrived after the endpoint came back", answered_ok.lock().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ok = answered_ok.lock().clone();
    assert_eq!(ok.len(), 100, "no event twice");
    let mut per_user: HashMap<String, Vec<String>> = HashMap::new();
    for b in &ok {
        per_user
            .entry(b["From_Account"].as_str().unwrap().to_owned())
            .or_default()
            .push(b["FollowList"][0]["To_Account"].as_str().unwrap().to_owned());
    }
    assert_eq!(per_user.len(), 10);
    for (user, seen) in &per_user {
        assert_eq!(seen, &targets, "{user}'s events in commit order, each once");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.call_app(APPS[2], KEY, "callback_config/list_events", json!({"State": "delivered", "Limit": 1000})).await;
        if r["Events"].as_array().unwrap().len() == 100 {
            break;
        }
        assert!(Instant::now() < deadline, "the outbox never recorded all 100 as delivered: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other dead apps still hold their backlogs (once the healthy app's records are written).
    let deadline = Instant::now() + Duration::from_secs(20);
    while pending_gauge(&s).await != 200 {
        assert!(Instant::now() < deadline, "pending: {}", pending_gauge(&s).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop_quickly().await;
}
