//! Rate limits over real sockets: the admin REST API's per app and API, the client API's per end user.

use crate::helpers::*;
use serde_json::{json, Value};
use std::future::Future;

/// Calls `call` until it answers `60007` (at most 50 times: with a budget of one call a second, only a
/// server slower than a second a call could avoid it) and returns that answer.
async fn until_refused<F: Future<Output = Value>>(mut call: impl FnMut() -> F) -> Value {
    for _ in 0..50 {
        let r = call().await;
        if r["ErrorCode"] == 60007 {
            return r;
        }
        assert_ok(&r);
    }
    panic!("never refused");
}

#[tokio::test]
async fn one_user_exhausting_the_client_budget_leaves_other_users_served() {
    let s = spawn_with("client_rate_limit_per_second = 1", "").await;
    s.import(&["alice", "bob"]).await;
    let info = |u: &str| json!({"To_Account": [u]});
    let r = until_refused(|| s.client("alice", "follow_get_info", info("alice"), &[])).await;
    assert_fail(&r, 60007);
    let why = r["ErrorInfo"].as_str().unwrap();
    assert!(why.starts_with("alice: client API: more than 1 calls per second; retry in "), "{why}");
    // Another user of the same app, at once: a budget of their own.
    assert_ok(&s.client("bob", "follow_get_info", info("bob"), &[]).await);
    // The app's own backend is not held back by its users either.
    assert_ok(&s.call("follow/follow_get_info", json!({"From_Account": "alice", "To_Account": ["alice"]})).await);
    s.stop().await;
}

#[tokio::test]
async fn a_reconnect_loop_spends_the_users_own_budget() {
    let s = spawn_with("client_rate_limit_per_second = 1", "").await;
    s.import(&["alice", "bob"]).await;
    let url = format!("ws://{}/v1/client/events?sdkappid={APP_A}&identifier=alice&usersig={}", s.addr, sig(KEY_A, APP_A, "alice"));
    let mut open = Vec::new();
    let refusal = loop {
        assert!(open.len() < 10, "ten connections in a row were accepted");
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => break resp,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(refusal.status(), 429);
    let body: Value = serde_json::from_slice(refusal.body().as_deref().unwrap()).unwrap();
    assert_fail(&body, 60007);
    assert!(body["ErrorInfo"].as_str().unwrap().contains("client API: more than 1 calls per second"), "{body}");
    // Other users connect as usual.
    drop(s.connect("bob").await);
    s.stop().await;
}

#[tokio::test]
async fn the_rest_api_is_limited_per_app_and_api() {
    let s = spawn_with("rate_limit_per_second = 1", "").await;
    s.import(&["a"]).await;
    let body = json!({"From_Account": "a", "To_Account": ["a"]});
    let r = until_refused(|| s.call("follow/follow_check", body.clone())).await;
    assert_fail(&r, 60007);
    let why = r["ErrorInfo"].as_str().unwrap();
    assert!(why.starts_with("follow_check: more than 1 calls per second; retry in "), "{why}");
    // Each API has its own budget, and so does each app.
    assert_ok(&s.call("follow/follow_get_info", body.clone()).await);
    s.import_app(APP_B, KEY_B, &["a"]).await;
    assert_ok(&s.call_app(APP_B, KEY_B, "follow/follow_check", body).await);
    // End users are held to their own budgets, not the admin API's.
    assert_ok(&s.client("a", "follow_check", json!({"To_Account": ["a"]}), &[]).await);
    s.stop().await;
}

#[tokio::test]
async fn follow_check_is_limited_per_user() {
    // 20 calls per 600 s: the budget does not refill while the test runs, however slow the machine.
    let s = spawn_with("client_check_window_secs = 600", "").await;
    s.import(&["alice", "bob"]).await;
    let mut answers = Vec::new();
    for _ in 0..25 {
        answers.push(s.client("alice", "follow_check", json!({"To_Account": ["bob"]}), &[]).await);
    }
    let codes: Vec<u64> = answers.iter().map(|r| r["ErrorCode"].as_u64().unwrap()).collect();
    assert_eq!(codes, [[0; 20].as_slice(), &[60007; 5]].concat(), "{codes:?}");
    let why = answers[20]["ErrorInfo"].as_str().unwrap();
    assert!(why.starts_with("alice: follow_check: more than 20 calls in 600 s; retry in "), "{why}");
    // Another user has a budget of their own; alice's other APIs are not held to follow_check's limit.
    assert_ok(&s.client("bob", "follow_check", json!({"To_Account": ["alice"]}), &[]).await);
    assert_ok(&s.client("alice", "follow_get_info", json!({"To_Account": ["alice"]}), &[]).await);
    s.stop().await;
}
