//! The document and the parsers agree: for every command on every surface, the request schema that
//! the OpenAPI document shows is what [`Command::parse`] accepts.

use super::*;
use followd_protocol::api::Family;
use serde_json::{json, Map, Value};

fn parses(api: Api, caller: &Caller, v: &Value) -> bool {
    let body = Body::parse(v.to_string().as_bytes(), api.family()).expect("an object");
    Command::parse(api, caller, &body).is_ok()
}

/// Each surface's caller and spec of `api`.
fn views(api: Api) -> Vec<(Caller, Spec)> {
    let mut v = vec![(Caller::Admin, spec(api))];
    if api.on_client() {
        v.push((Caller::User(UserId::parse("alice").unwrap()), follow::client_spec(api)));
    }
    v
}

fn with(example: &Map<String, Value>, key: &str, value: Option<Value>) -> Value {
    let mut m = example.clone();
    match value {
        Some(v) => m.insert(key.to_owned(), v),
        None => m.remove(key),
    };
    Value::Object(m)
}

#[test]
fn schemas_and_parsers_agree() {
    for api in Api::ALL {
        for (caller, spec) in views(api) {
            let what = format!("{} ({caller:?})", api.name());
            let schema = serde_json::to_value(&spec.request_schemas[0].1).unwrap();
            let example: Value = serde_json::from_str(spec.example).unwrap();
            assert!(parses(api, &caller, &example), "{what}: the example {example} does not parse");
            let example = example.as_object().unwrap();
            let required: Vec<&str> =
                schema["required"].as_array().map(|r| r.iter().map(|k| k.as_str().unwrap()).collect()).unwrap_or_default();
            let something_required = !required.is_empty() || schema.get("oneOf").is_some();
            assert_eq!(parses(api, &caller, &json!({})), !something_required, "{what}: {{}} against required {required:?}");
            let Some(props) = schema["properties"].as_object() else { continue };
            for key in example.keys() {
                assert!(props.contains_key(key), "{what}: the example's {key} is not in the schema");
            }
            for (key, p) in props {
                if example.contains_key(key) {
                    let ok = parses(api, &caller, &with(example, key, None));
                    assert_eq!(ok, !required.contains(&key.as_str()), "{what}: without {key}");
                }
                let int = |k: &str| p[k].as_i64();
                if let Some(max) = int("maxItems") {
                    let first = example[key][0].clone();
                    let list = |n: i64| Some(Value::Array((0..n).map(|_| first.clone()).collect()));
                    assert!(parses(api, &caller, &with(example, key, list(max))), "{what}: {key} with {max} entries");
                    assert!(!parses(api, &caller, &with(example, key, list(max + 1))), "{what}: {key} with {} entries", max + 1);
                }
                if let Some(min) = int("minItems") {
                    let first = example[key][0].clone();
                    let list = Value::Array((0..min - 1).map(|_| first.clone()).collect());
                    assert!(!parses(api, &caller, &with(example, key, Some(list))), "{what}: {key} under {min} entries");
                }
                if let Some(max) = int("maximum") {
                    assert!(parses(api, &caller, &with(example, key, Some(json!(max)))), "{what}: {key} = {max}");
                    assert!(!parses(api, &caller, &with(example, key, Some(json!(max + 1)))), "{what}: {key} = {}", max + 1);
                }
                if let Some(min) = int("minimum") {
                    assert!(!parses(api, &caller, &with(example, key, Some(json!(min - 1)))), "{what}: {key} = {}", min - 1);
                }
                if let Some(max) = int("maxLength") {
                    let s = |n: i64| Some(json!("x".repeat(n as usize)));
                    assert!(parses(api, &caller, &with(example, key, s(max))), "{what}: {key} of {max} bytes");
                    assert!(!parses(api, &caller, &with(example, key, s(max + 1))), "{what}: {key} of {} bytes", max + 1);
                }
                if let Some(min) = int("minLength") {
                    assert!(
                        !parses(api, &caller, &with(example, key, Some(json!("x".repeat(min as usize - 1))))),
                        "{what}: {key} too short"
                    );
                }
            }
        }
    }
}

#[test]
fn an_event_is_named_one_way_only() {
    let both = json!({"EventId": 1, "WebhookId": "evt_1"});
    assert!(!parses(Api::ListAttempts, &Caller::Admin, &both));
    assert!(parses(Api::ListAttempts, &Caller::Admin, &json!({"WebhookId": "evt_1"})));
}

#[test]
fn a_user_acts_only_for_itself() {
    let alice = Caller::User(UserId::parse("alice").unwrap());
    let body = Body::parse(br#"{"From_Account":"bob","To_Account":["carol"]}"#, Family::Follow).unwrap();
    let e = Command::parse(Api::FollowCheck, &alice, &body).unwrap_err();
    assert_eq!(e.code, followd_protocol::code::FOLLOW_NOT_ADMIN);
    assert!(Command::parse(Api::FollowCheck, &Caller::Admin, &body).is_ok());
}

/// Found by the `body` fuzz target: a refusal quoted a 900-byte Url whole.
#[test]
fn refusals_do_not_echo_long_values() {
    let long = format!("http://128.et_cp0{}", "\u{7f}".repeat(900));
    let cases = [
        (Api::SetCallback, json!({ "Url": long })),
        (Api::SetCallback, json!({ "Url": "", "CallbackCommandList": ["y".repeat(900)] })),
        (Api::SetCallback, json!({ "Url": "", "CallbackCommandList": [{ "k": "z".repeat(900) }] })),
        (Api::ListEvents, json!({ "State": "s".repeat(900) })),
        (Api::ListEvents, json!({ "CallbackCommand": "c".repeat(900) })),
    ];
    for (api, v) in cases {
        let body = Body::parse(v.to_string().as_bytes(), api.family()).unwrap();
        let e = Command::parse(api, &Caller::Admin, &body).expect_err("refused");
        assert!(e.info.len() <= followd_protocol::api::MAX_ERROR_INFO, "{}: {} bytes: {}", api.name(), e.info.len(), e.info);
    }
}
