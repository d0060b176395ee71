//! The OpenAPI document at /openapi.json matches the routes the server really serves, both ways.

use crate::helpers::*;
use followd::reply::Family;
use followd::rest::Api;
use serde_json::Value;
use std::collections::BTreeSet;

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let s = spawn().await;
    let doc: Value = s.http.get(format!("http://{}/openapi.json", s.addr)).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    // What the code serves: the client follow commands, the events socket, the admin commands.
    let mut served = BTreeSet::new();
    for api in Api::ALL {
        match api.family() {
            Family::Follow => {
                served.insert(format!("/v1/client/follow/{}", api.name()));
            }
            Family::Config => {
                served.insert(format!("/v4/callback_config/{}", api.name()));
            }
            Family::Account => {}
        }
    }
    served.insert("/v1/client/events".to_owned());
    assert_eq!(documented, served, "the OpenAPI document and the routes differ");
    // Every documented operation is answered by the server (with its envelope, not 404 or 60009),
    // and every schema reference resolves.
    let text = doc.to_string();
    for r in text.split("\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(doc["components"]["schemas"].get(name).is_some(), "dangling $ref {name}");
    }
    let admin = sig(KEY_A, APP_A, ADMIN);
    for (path, item) in doc["paths"].as_object().unwrap() {
        if let Some(op) = item.get("post") {
            assert!(op["responses"]["200"].is_object(), "{path}");
            let url = format!("http://{}{path}?sdkappid={APP_A}&identifier={ADMIN}&usersig={admin}", s.addr);
            let r = s.http.post(url).body("{}").send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let v: Value = r.json().await.unwrap();
            assert!(v["ActionStatus"].is_string(), "{path}: {v}");
            assert_ne!(v["ErrorCode"], 60009, "{path} is documented but not served");
        } else {
            assert!(item.get("get").is_some(), "{path}");
        }
    }
    s.stop().await;
}
