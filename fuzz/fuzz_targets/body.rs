//! Request bodies of every command: the JSON object (`Body::parse`) and each command's fields,
//! for an app admin (REST) or an end user (client API). Input: a first line naming the API and
//! caller (`follow/follow_get as alice`), then the body (see `followd_fuzz::CommandRequest`).
//!
//! Invariants: nothing panics; `Body::parse` accepts exactly the JSON objects, and refuses anything
//! else with `60003`; a refusal has a code and a short message; follow_get's page size is in range.
#![no_main]

use followd::body::Body;
use followd_fuzz::CommandRequest;
use followd_protocol::api::ApiError;
use followd_protocol::code;
use libfuzzer_sys::fuzz_target;

fn check_refusal(e: &ApiError) {
    assert_ne!(e.code, code::OK);
    assert!(!e.info.is_empty() && e.info.len() < 1024, "ErrorInfo of {} bytes", e.info.len());
}

fuzz_target!(|data: &[u8]| {
    let req = CommandRequest::parse(data);
    let is_object = serde_json::from_slice::<serde_json::Value>(req.body).is_ok_and(|v| v.is_object());
    let body = match Body::parse(req.body, req.api.family()) {
        Ok(body) => body,
        Err(e) => {
            assert!(!is_object, "a JSON object was refused: {e:?}");
            assert_eq!(e.code, code::JSON_PARSE);
            return check_refusal(&e);
        }
    };
    assert!(is_object, "Body::parse accepted something that is not a JSON object");
    if let Err(e) = followd::cmd::Command::parse(req.api, &req.caller, &body) {
        check_refusal(&e);
    }
});
