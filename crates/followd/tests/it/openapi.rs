//! The OpenAPI document: the committed copy is what the code generates, it documents exactly the
//! routes the server serves, and every answer the server gives validates against it.

use crate::helpers::*;
use followd::docs;
use followd::pipeline::Surface;
use followd_protocol::api::Api;
use serde_json::Value;
use std::collections::BTreeSet;

/// The document, as served.
async fn served(s: &Server) -> Value {
    let r = s.http.get(format!("http://{}/openapi.json", s.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Compared as JSON: the order of an example's keys follows serde_json's `preserve_order`, which
    // the tests' build turns on and `cargo run` does not.
    let generated: Value = serde_json::from_str(docs::json()).unwrap();
    assert!(
        committed == generated,
        "crates/followd/openapi.json differs from the document the code generates; regenerate it with\n    cargo run -p followd -- openapi > crates/followd/openapi.json"
    );
}

/// Every API on each surface that serves it, the WebSocket, and the fixed routes.
fn routes() -> BTreeSet<String> {
    let mut v = BTreeSet::new();
    for api in Api::ALL {
        v.insert(docs::path(api, Surface::Rest));
        if api.on_client() {
            v.insert(docs::path(api, Surface::Client));
        }
    }
    for fixed in [
        "/v1/client/events",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/style.css",
        "/bulk/v1/export",
        "/bulk/v1/import",
        "/bulk/v1/sweep",
    ] {
        v.insert(fixed.to_owned());
    }
    v
}

#[tokio::test]
async fn the_document_covers_every_route_and_nothing_else() {
    let s = spawn().await;
    let doc = served(&s).await;
    assert_eq!(doc, serde_json::from_str::<Value>(docs::json()).unwrap(), "/openapi.json serves the generated document");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(documented, routes(), "the document and the routes differ");
    // Every schema reference resolves.
    let text = doc.to_string();
    for r in text.split("\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(doc["components"]["schemas"].get(name).is_some(), "dangling $ref {name}");
    }
    // Every documented operation is served (not a 404, not 60009), with a documented status.
    let admin = sig(KEY_A, APP_A, ADMIN);
    let q = format!("sdkappid={APP_A}&identifier={ADMIN}&usersig={admin}");
    for (path, item) in doc["paths"].as_object().unwrap() {
        let (method, op) = item.as_object().unwrap().iter().next().unwrap();
        let url = format!("http://{}{path}?{q}", s.addr);
        let r = match method.as_str() {
            "post" => s.http.post(url).body("{}").send().await.unwrap(),
            "get" => s.http.get(url).send().await.unwrap(),
            m => panic!("{path}: {m}"),
        };
        let status = r.status().as_u16().to_string();
        assert!(op["responses"].get(&status).is_some(), "{path}: HTTP {status} is not documented");
        let media = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(op["responses"][&status]["content"].get(&media).is_some(), "{path}: {media} is not documented");
        if method == "post" {
            // The export streams NDJSON: its first line is the format's header.
            let text = r.text().await.unwrap();
            let v: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
            assert_ne!(v["ErrorCode"], 60009, "{path} is documented but not served");
        }
    }
    // And what is not documented is not served.
    let r = s.post_raw(&format!("http://{}/v1/client/follow/set_callback?{q}", s.addr), "{}").await;
    assert_fail(&r, 60009);
    let r = s.http.get(format!("http://{}/v2/anything", s.addr)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn the_reference_page_shows_every_operation_and_runs_no_script() {
    let s = spawn().await;
    let r = s.http.get(format!("http://{}/docs", s.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(!page.to_ascii_lowercase().contains("<script"), "no script");
    // Nothing is loaded from elsewhere: the only absolute URLs are examples inside the text.
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "a resource from elsewhere");
    for path in routes() {
        assert!(page.contains(&format!("<code>{path}</code>")), "{path} is not on the page");
    }
    // Every code of every operation is in its table, and every schema has its section.
    let doc: Value = serde_json::from_str(docs::json()).unwrap();
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(page.contains(&format!("id=\"schema-{name}\"")), "schema {name}");
    }
    assert!(page.contains("<td><code>70009</code></td>"));
    // The stylesheet is the only other thing the page loads, and it is served here.
    assert!(page.contains("<link rel=\"stylesheet\" href=\"/docs/style.css\">"));
    let css = s.http.get(format!("http://{}/docs/style.css", s.addr)).send().await.unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(!css.text().await.unwrap().contains("@import"));
    s.stop().await;
}
