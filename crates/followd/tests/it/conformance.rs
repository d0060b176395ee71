//! Every answer the server gives validates against the generated OpenAPI document: successes and
//! refusals of every operation on both surfaces, the WebSocket's refusals, and answers given before a
//! request is read. (Schemathesis checks the same from outside in `.ci/schemathesis`.)

use crate::helpers::*;
use followd::docs;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Validates answers against the document's response schemas.
struct Checker {
    doc: Value,
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

impl Checker {
    fn new() -> Self {
        let checker = Checker { doc: serde_json::from_str(docs::json()).unwrap() };
        // The checker itself: an answer that is neither envelope is refused.
        let root = checker.root("/v4/follow/follow_add", "post", 200, "application/json");
        let validator = jsonschema::draft202012::new(&root).unwrap();
        assert!(
            !validator.is_valid(&json!({"ActionStatus": "FAIL", "ErrorCode": 30001, "ErrorInfo": "x", "RequestId": "r"})),
            "no ErrorDisplay"
        );
        assert!(
            !validator.is_valid(&json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": "", "RequestId": "r"})),
            "no ResultItem"
        );
        checker
    }

    fn root(&self, path: &str, method: &str, status: u16, media: &str) -> Value {
        let pointer = format!("#/paths/{}/{method}/responses/{status}/content/{}/schema", escape(path), escape(media));
        assert!(self.doc.pointer(&pointer[1..]).is_some(), "{method} {path}: HTTP {status} {media} is not documented");
        let mut root = self.doc.clone();
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        root["$ref"] = json!(pointer);
        root
    }

    /// Asserts that `answer` is valid as the `status` answer of `method path` in `media`.
    fn check(&self, method: &str, path: &str, status: u16, media: &str, answer: &Value) {
        let root = self.root(path, method, status, media);
        let validator = jsonschema::draft202012::new(&root).unwrap();
        let errors: Vec<String> = validator.iter_errors(answer).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{method} {path} answered {answer}\nwhich does not match the document: {errors:#?}");
    }
}

#[tokio::test]
async fn every_operations_answers_match_the_document() {
    let s = spawn().await;
    let checker = Checker::new();
    s.import(&["alice", "bob", "carol"]).await;
    let doc = checker.doc.clone();
    let admin_q = format!("sdkappid={APP_A}&identifier={ADMIN}&usersig={}", sig(KEY_A, APP_A, ADMIN));
    let alice_q = format!("sdkappid={APP_A}&identifier=alice&usersig={}", sig(KEY_A, APP_A, "alice"));
    // Webhooks on first, so that writes owe events and the delivery log has some to list.
    let set = doc["paths"]["/v4/callback_config/set_callback"]["post"]["requestBody"]["content"]["application/json"]["example"].clone();
    assert_ok(&s.post_raw(&format!("http://{}/v4/callback_config/set_callback?{admin_q}", s.addr), set.to_string()).await);
    let mut oks: BTreeMap<String, usize> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(op) = item.get("post") else { continue };
        let q = if path.starts_with("/v1/") { &alice_q } else { &admin_q };
        let url = |query: &str| format!("http://{}{path}?{query}", s.addr);
        let mut example = op["requestBody"]["content"]["application/json"]["example"].clone();
        if path.ends_with("/list_attempts") || path.ends_with("/replay_event") {
            // An event that exists: the newest in the log.
            let log = s.post_raw(&format!("http://{}/v4/callback_config/list_events?{admin_q}", s.addr), "{}").await;
            let id = log["Events"][0]["EventId"].as_i64().expect("follow_add owed an event");
            example = json!({"EventId": id});
        }
        let bodies = [
            example.to_string(),
            "{}".into(),
            "[1]".into(),
            "{\"From_Account\":".into(),
            json!({"To_Account": [5], "FollowItem": 1, "UserID": [], "Url": 3}).to_string(),
        ];
        let mut answers = Vec::new();
        for b in &bodies {
            answers.push(s.http.post(url(q)).body(b.clone()).send().await.unwrap());
        }
        answers.push(s.http.get(url(q)).send().await.unwrap());
        answers.push(s.http.post(url("sdkappid=1&identifier=x&usersig=y")).body("{}").send().await.unwrap());
        answers.push(
            s.http
                .post(url(&format!("sdkappid={APP_A}&identifier=bob&usersig={}", sig(KEY_A, APP_A, "bob"))))
                .body(example.to_string())
                .send()
                .await
                .unwrap(),
        );
        for r in answers {
            let status = r.status().as_u16();
            let media = r.headers()["content-type"].to_str().unwrap().to_owned();
            if media == "application/x-ndjson" {
                // The export's stream: the document describes it as text; it starts with the format's header.
                let text = r.text().await.unwrap();
                assert!(text.starts_with("{\"Version\":1,"), "{path}: {text}");
                checker.check("post", path, status, &media, &Value::String(text));
                *oks.entry(path.clone()).or_default() += 1;
                continue;
            }
            let v: Value = r.json().await.unwrap();
            checker.check("post", path, status, &media, &v);
            if v["ErrorCode"] == 0 {
                *oks.entry(path.clone()).or_default() += 1;
            }
        }
    }
    // Every operation succeeded at least once (with its example), so every success schema was tried.
    let posts = doc["paths"].as_object().unwrap().iter().filter(|(_, i)| i.get("post").is_some()).count();
    assert_eq!(
        oks.len(),
        posts,
        "operations that never succeeded: {:?}",
        doc["paths"].as_object().unwrap().keys().filter(|k| !oks.contains_key(*k)).collect::<Vec<_>>()
    );
    s.stop().await;
}

#[tokio::test]
async fn the_websockets_refusals_match_the_document() {
    let s = spawn().await;
    let checker = Checker::new();
    let path = "/v1/client/events";
    let r = s.http.get(format!("http://{}{path}?sdkappid={APP_A}&identifier=alice&usersig=nope", s.addr)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    checker.check("get", path, 401, "application/json", &r.json().await.unwrap());
    let r = s
        .http
        .get(format!("http://{}{path}?sdkappid={APP_A}&identifier=alice&usersig={}", s.addr, sig(KEY_A, APP_A, "alice")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "not a WebSocket handshake");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    s.stop().await;
}

/// Posts `body` over a connection of its own and returns the JSON answer. An HTTP client library
/// may report the refusal as an error: the answer can arrive before the request is fully sent.
async fn raw_post(addr: std::net::SocketAddr, url: &str, body: &str) -> Value {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let target = &url[url.find("/v").unwrap()..];
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("POST {target} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    let _ = c.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap()
}

/// A connection past `max_connections` is answered before its request is read, so the answer cannot
/// know its API: it must match every API's error envelope, a follow API's (with `ErrorDisplay`) too.
#[tokio::test]
async fn a_refused_connections_answer_matches_every_apis_error() {
    let s = spawn_with_top("max_connections = 1", "", "").await;
    let checker = Checker::new();
    let _held = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let url = s.url("follow/follow_add", APP_A, ADMIN, &sig(KEY_A, APP_A, ADMIN));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let answer = loop {
        // The held connection may not be accepted yet: retry until the cap is reached.
        let v = raw_post(s.addr, &url, "{}").await;
        if v["ErrorCode"] == 60007 || std::time::Instant::now() > deadline {
            break v;
        }
    };
    assert_fail(&answer, 60007);
    for path in [
        "/v4/follow/follow_add",
        "/v4/im_open_login_svc/account_import",
        "/v4/callback_config/get_callback",
        "/v1/client/follow/follow_get",
    ] {
        checker.check("post", path, 200, "application/json", &answer);
    }
    s.stop_quickly().await;
}
