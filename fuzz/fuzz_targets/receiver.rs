//! The receiver library's `Verifier::verify(query, headers, body)`, with no secret, a token, a
//! Standard Webhooks secret, and both. Input: a webhook request in the readable form of
//! `followd_fuzz::HookRequest` (query line, header lines, empty line, body); `@sign` asks for the
//! correct `Sign` or `webhook-signature`, so mutated bodies still get past the signature checks.
//!
//! Invariants: nothing panics; a refusal answers 400 or 401 with a FAIL body that is JSON; anything
//! accepted re-serialises sanely: it is this app's, its command is its event's, and the webhook
//! rebuilt from its typed form (followd's own body and query builders) verifies to the same thing.
#![no_main]

use followd_fuzz::{HookRequest, APP, HOOK_NOW, SIGNING_SECRET, TOKEN};
use followd_protocol::webhook;
use followd_receiver::{Event, Verifier, Webhook};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static VERIFIERS: LazyLock<[Verifier; 4]> = LazyLock::new(|| {
    [
        Verifier::new(APP),
        Verifier::new(APP).token(TOKEN),
        Verifier::new(APP).signing_secret(SIGNING_SECRET),
        Verifier::new(APP).token(TOKEN).signing_secret(SIGNING_SECRET),
    ]
});

/// The body followd would send for this event; an unknown command's body as serde_json writes it.
fn rebuilt_body(event: &Event) -> Vec<u8> {
    match event {
        Event::FollowAdd { from, to, event_time } => webhook::follow_add_body(from, to, *event_time).into_bytes(),
        Event::FollowDelete { from, to, event_time } => webhook::follow_delete_body(from, to, *event_time).into_bytes(),
        Event::Unknown { body, .. } => serde_json::to_vec(body).expect("a Value serialises"),
    }
}

fn check_accepted(hook: &Webhook) {
    assert_eq!(hook.sdkappid, APP);
    assert_eq!(hook.command, hook.event.command());
    let body = rebuilt_body(&hook.event);
    assert_eq!(Event::parse(&body).as_ref(), Ok(&hook.event), "the event does not survive re-serialisation");
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("SdkAppid", &hook.sdkappid.to_string()).append_pair("CallbackCommand", &hook.command);
    if let Some(ip) = &hook.client_ip {
        query.append_pair("ClientIP", ip);
    }
    if let Some(p) = &hook.opt_platform {
        query.append_pair("OptPlatform", p);
    }
    let mut headers = http::HeaderMap::new();
    if let Some(id) = &hook.webhook_id {
        headers.insert("webhook-id", id.parse().expect("a header value read as text is a header value"));
    }
    let again = VERIFIERS[0].verify_at(&query.finish(), &headers, &body, HOOK_NOW);
    assert_eq!(again.as_ref(), Ok(hook), "the rebuilt webhook verifies differently");
}

fuzz_target!(|data: &[u8]| {
    let req = HookRequest::parse(data);
    for v in VERIFIERS.iter() {
        match v.verify_at(&req.query, &req.headers, &req.body, HOOK_NOW) {
            Ok(hook) => check_accepted(&hook),
            Err(r) => {
                assert!(matches!(r.status(), 400 | 401));
                let answer: serde_json::Value = serde_json::from_str(&r.answer()).expect("the FAIL answer is JSON");
                assert_eq!(answer["ActionStatus"], "FAIL");
            }
        }
    }
});
