//! `followd listen`'s handling of a webhook: verification (no secret, or a token and a signing
//! secret), the JSON line it prints (`followd::listen::line`), and the URL it forwards to. Input: a
//! webhook request as in the `receiver` target.
//!
//! Invariants: nothing panics; an accepted webhook always gets its line (never the "not JSON"
//! fallback), and the line is JSON holding the body unchanged and the verified fields; the forward
//! URL built from any query still points at the configured host, port and path.
#![no_main]

use followd_fuzz::{HookRequest, APP, HOOK_NOW, SIGNING_SECRET, TOKEN};
use followd_receiver::Verifier;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::LazyLock;

static VERIFIERS: LazyLock<[Verifier; 2]> =
    LazyLock::new(|| [Verifier::new(APP), Verifier::new(APP).token(TOKEN).signing_secret(SIGNING_SECRET)]);

const FORWARD: &str = "http://127.0.0.1:9000/imcallback?app=1#f";

fuzz_target!(|data: &[u8]| {
    let req = HookRequest::parse(data);
    for v in VERIFIERS.iter() {
        let Ok(hook) = v.verify_at(&req.query, &req.headers, &req.body, HOOK_NOW) else { continue };
        let line = followd::listen::line(&hook, &req.body).expect("a verified body is printed");
        assert!(!line.contains('\n'), "a line holds one webhook");
        let parsed: Value = serde_json::from_str(&line).expect("the line is JSON");
        let body: Value = serde_json::from_slice(&req.body).expect("a verified body is JSON");
        assert_eq!(parsed["Body"], body);
        assert_eq!(parsed["SdkAppid"], APP);
        assert_eq!(parsed["CallbackCommand"], hook.command.as_str());
        assert_eq!(parsed["WebhookId"].as_str(), hook.webhook_id.as_deref());
    }
    let forward = followd_protocol::webhook::url_with_query(FORWARD, &req.query);
    let url = url::Url::parse(&forward).expect("the forward URL parses");
    assert_eq!((url.host_str(), url.port(), url.path()), (Some("127.0.0.1"), Some(9000), "/imcallback"));
    assert!(url.query().is_some_and(|q| q.starts_with("app=1")), "the configured query comes first: {url}");
});
