//! The receiving side: the `followd-receiver` library against the real server and the vectors, and the
//! `followd listen` command.

use crate::helpers::*;
use crate::receiver::Receiver;
use followd_receiver::{axum::webhook_router, Event, Rejection, Verifier};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZg==";

async fn serve_router(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/imcallback")
}

fn hook_table(url: &str, extra: &str) -> String {
    format!("[apps.webhook]\nurl = \"{url}\"\nallow_private_destinations = true\nretry_schedule_ms = [30, 30, 30]\n{extra}\n")
}

#[tokio::test]
async fn the_library_accepts_exactly_what_the_server_sends_and_dedupes_retries() {
    let seen = Arc::new(Mutex::new(Vec::<Event>::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (s2, c2) = (seen.clone(), calls.clone());
    let verifier = Verifier::new(APP_A).token("tok").signing_secret(SECRET);
    let url = serve_router(webhook_router(verifier, move |hook| {
        let (seen, calls) = (s2.clone(), c2.clone());
        async move {
            assert_eq!(hook.opt_platform.as_deref(), Some("RESTAPI"));
            assert_eq!(hook.client_ip.as_deref(), Some("127.0.0.1"));
            assert!(hook.webhook_id.as_deref().unwrap().starts_with("evt_"));
            // The first delivery fails in the handler: answered 500, so followd retries.
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err("database busy".into());
            }
            seen.lock().push(hook.event);
            Ok(())
        }
    }))
    .await;
    let s = spawn_with(&hook_table(&url, &format!("token = \"tok\"\nsigning_secret = \"{SECRET}\"")), "").await;
    s.import(&["a", "b", "c"]).await;
    assert_ok(&s.follow("a", &["b", "c"]).await);
    assert_ok(&s.unfollow("a", &["c"]).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "events not handled: {:?}", seen.lock());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events = seen.lock().clone();
    assert!(matches!(&events[0], Event::FollowAdd { from, to, .. } if from == "a" && to == &["b", "c"]));
    assert!(matches!(&events[1], Event::FollowDelete { from, to, .. } if from == "a" && to == &["c"]));
    // A replay of a delivered event carries the same webhook-id: answered OK, not handled twice.
    // The delivery log is written just after the answer: wait until it says delivered.
    let id = loop {
        let r =
            s.call("callback_config/list_events", json!({"State": "delivered", "CallbackCommand": "Follow.CallbackAfterFollowAdd"})).await;
        if let Some(id) = r["Events"][0]["EventId"].as_i64() {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let before = calls.load(Ordering::SeqCst);
    assert_ok(&s.call("callback_config/replay_event", json!({"EventId": id})).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r =
            s.call("callback_config/list_events", json!({"State": "delivered", "CallbackCommand": "Follow.CallbackAfterFollowAdd"})).await;
        if r["Events"][0]["Attempts"].as_u64().unwrap_or(0) >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), before, "the duplicate never reached the handler");
    assert_eq!(seen.lock().len(), 2);
    s.stop().await;
}

fn vectors() -> Value {
    serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/spec/vectors.json")).unwrap())
        .unwrap()
}

#[test]
fn the_library_accepts_the_vectors_and_rejects_tampering() {
    let v = vectors();
    let sign = &v["webhook_sign"][0];
    let (token, time) = (sign["token"].as_str().unwrap(), sign["request_time"].as_u64().unwrap());
    let headers = http::HeaderMap::new();
    for case in v["webhooks"].as_array().unwrap() {
        let body = serde_json::to_vec(&case["body"]).unwrap();
        let query = format!("{}&Sign={}&RequestTime={time}", case["query"].as_str().unwrap(), sign["sign"].as_str().unwrap());
        let verifier = Verifier::new(1400000000).token(token);
        let hook = verifier.verify_at(&query, &headers, &body, time).unwrap();
        assert_eq!(hook.command, case["body"]["CallbackCommand"]);
        match hook.event {
            Event::FollowAdd { from, to, event_time } | Event::FollowDelete { from, to, event_time } => {
                assert_eq!(from, "UserID_001");
                assert_eq!(to, ["UserID_002", "UserID_003"]);
                assert_eq!(event_time, 1702018343678);
            }
            Event::Unknown { .. } => panic!("a Follow command"),
        }
        // Stale, wrong app, wrong key, tampered Sign.
        assert!(matches!(verifier.verify_at(&query, &headers, &body, time + 61), Err(Rejection::StaleRequestTime { .. })));
        assert!(matches!(verifier.verify_at(&query, &headers, &body, time - 61), Err(Rejection::StaleRequestTime { .. })));
        assert!(matches!(Verifier::new(1400000001).token(token).verify_at(&query, &headers, &body, time), Err(Rejection::WrongApp { .. })));
        assert_eq!(Verifier::new(1400000000).token("other").verify_at(&query, &headers, &body, time), Err(Rejection::BadSign));
        let tampered = query.replace("&Sign=1", "&Sign=2");
        assert_eq!(verifier.verify_at(&tampered, &headers, &body, time), Err(Rejection::BadSign));
        assert_eq!(verifier.verify_at(case["query"].as_str().unwrap(), &headers, &body, time), Err(Rejection::MissingSign));
    }
}

#[test]
fn standard_webhooks_signatures_catch_tampered_bodies_and_wrong_secrets() {
    let body = br#"{"CallbackCommand":"Follow.CallbackAfterFollowAdd","From_Account":"a","FollowList":[{"To_Account":"b"}],"EventTime":1}"#;
    let query = "SdkAppid=7&CallbackCommand=Follow.CallbackAfterFollowAdd&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI";
    let now = 1_800_000_000;
    let sig = followd_protocol::sign::standard_webhooks_signature(SECRET, "evt_1", now, body);
    let mut h = http::HeaderMap::new();
    h.insert("webhook-id", "evt_1".parse().unwrap());
    h.insert("webhook-timestamp", now.to_string().parse().unwrap());
    h.insert("webhook-signature", format!("v1,bm90IGl0 {sig}").parse().unwrap());
    let v = Verifier::new(7).signing_secret(SECRET);
    assert!(v.verify_at(query, &h, body, now).is_ok(), "any matching entry of the header is enough");
    let tampered = String::from_utf8_lossy(body).replace("\"b\"", "\"c\"");
    assert_eq!(v.verify_at(query, &h, tampered.as_bytes(), now), Err(Rejection::BadSignature));
    assert_eq!(Verifier::new(7).signing_secret("whsec_b3RoZXI=").verify_at(query, &h, body, now), Err(Rejection::BadSignature));
    assert!(matches!(v.verify_at(query, &h, body, now + 600), Err(Rejection::StaleTimestamp { .. })));
    assert_eq!(v.verify_at(query, &http::HeaderMap::new(), body, now), Err(Rejection::MissingSignature));
    // A body whose command disagrees with the query's, and a body that is not a webhook.
    let other = query.replace("AfterFollowAdd", "AfterFollowDelete");
    assert!(matches!(Verifier::new(7).verify_at(&other, &h, body, now), Err(Rejection::CommandMismatch { .. })));
    assert!(matches!(Verifier::new(7).verify_at(query, &h, b"{}", now), Err(Rejection::Malformed(_))));
}

struct Listen {
    child: tokio::process::Child,
    url: String,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
}

async fn listen(args: &[&str]) -> Listen {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"))
        .args(["listen", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), stderr.next_line()).await.unwrap().unwrap().unwrap();
    let addr = line.split("addr=").nth(1).expect("listening line").trim().to_owned();
    Listen { child, url: format!("http://{addr}/imcallback"), stdout, stderr }
}

async fn next(lines: &mut tokio::io::Lines<impl tokio::io::AsyncBufRead + Unpin>) -> String {
    tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.expect("a line in time").unwrap().expect("a line")
}

#[tokio::test]
async fn followd_listen_prints_accepted_webhooks_refuses_bad_ones_and_forwards() {
    let target = Receiver::start().await;
    let mut l = listen(&["--sdkappid", &APP_A.to_string(), "--token", "tok", "--forward", &target.url("/downstream")]).await;
    let s = spawn_with(&hook_table(&l.url, "token = \"tok\""), &hook_table(&l.url, "token = \"tok\"")).await;
    s.import(&["a", "b"]).await;
    assert_ok(&s.follow("a", &["b"]).await);
    let line: Value = serde_json::from_str(&next(&mut l.stdout).await).unwrap();
    assert_eq!(line["SdkAppid"], APP_A);
    assert_eq!(line["CallbackCommand"], "Follow.CallbackAfterFollowAdd");
    assert_eq!(line["OptPlatform"], "RESTAPI");
    assert_eq!(line["ClientIP"], "127.0.0.1");
    assert!(line["WebhookId"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(line["Body"]["FollowList"], json!([{"To_Account": "b"}]));
    let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["SdkAppid", "CallbackCommand", "OptPlatform", "ClientIP", "WebhookId", "Body"]);
    // Forwarded unchanged: same query, body and webhook-id.
    let fwd = target.wait_for(1, 10).await;
    assert_eq!(fwd[0].path, "/downstream");
    assert!(fwd[0].query.starts_with(&format!("SdkAppid={APP_A}&CallbackCommand=Follow.CallbackAfterFollowAdd")), "{}", fwd[0].query);
    assert_eq!(fwd[0].json()["FollowList"], line["Body"]["FollowList"]);
    assert_eq!(fwd[0].header("webhook-id"), line["WebhookId"]);
    // App B's webhooks come to the same listener: a wrong SdkAppid is refused with 401 and a reason.
    s.import_app(APP_B, KEY_B, &["x", "y"]).await;
    assert_ok(&s.call_app(APP_B, KEY_B, "follow/follow_add", json!({"From_Account": "x", "FollowItem": [{"To_Account": "y"}]})).await);
    let why = next(&mut l.stderr).await;
    let why = if why.starts_with("forwarded") { next(&mut l.stderr).await } else { why };
    assert!(why.contains("refused (401)") && why.contains("SdkAppid"), "{why}");
    // A stale or forged Sign is refused too.
    let http = reqwest::Client::new();
    let body = r#"{"CallbackCommand":"Follow.CallbackAfterFollowAdd","From_Account":"a","FollowList":[],"EventTime":1}"#;
    let stale = format!(
        "{}?SdkAppid={APP_A}&CallbackCommand=Follow.CallbackAfterFollowAdd&Sign={}&RequestTime=1000",
        l.url,
        followd_protocol::sign::tencent_sign("tok", 1000)
    );
    let r = http.post(&stale).body(body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["ActionStatus"], "FAIL");
    // App B's retries may still be refused meanwhile: read on until the stale Sign's line.
    loop {
        let line = next(&mut l.stderr).await;
        if line.contains("RequestTime") {
            assert!(line.contains("refused (401)"), "{line}");
            break;
        }
    }
    s.stop().await;
    l.child.kill().await.unwrap();
}
