//! `allow_private_destinations = true` is for a receiver on one's own machine: link-local and cloud
//! metadata destinations stay refused, before any connection, and show up as `refused` in the log.

use crate::helpers::*;
use crate::receiver::Receiver;
use crate::webhooks::{events, hook, wait_state};
use serde_json::json;

#[tokio::test]
async fn metadata_and_link_local_destinations_are_refused_even_when_private_ones_are_allowed() {
    let rx = Receiver::start().await;
    let s = spawn_with(&hook(&rx.url("/cb"), ""), "").await;
    s.import(&["a", "b", "c", "d", "e"]).await;
    for (from, to, url) in [
        ("a", "b", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
        ("b", "c", "http://[fe80::1]/latest/meta-data/"),
        ("c", "d", "http://metadata.google.internal/computeMetadata/v1/instance/"),
        ("d", "e", "http://[::ffff:169.254.169.254]/latest/meta-data/"),
    ] {
        assert_ok(&s.call("callback_config/set_callback", json!({"Url": url})).await);
        assert_ok(&s.follow(from, &[to]).await);
        let id = events(&s, json!({"From_Account": from})).await[0]["EventId"].as_i64().unwrap();
        let e = wait_state(&s, id, "dead").await;
        let error = e["LastError"].as_str().unwrap();
        assert!(error.contains("metadata") && error.contains("even with allow_private_destinations"), "{url}: {e}");
        let a = s.call("callback_config/list_attempts", json!({"EventId": id})).await;
        assert_eq!(a["Attempts"].as_array().unwrap().len(), 1, "{url}: {a}");
        assert_eq!(a["Attempts"][0]["Outcome"], "refused", "{url}: {a}");
        assert!(a["Attempts"][0].get("HttpStatus").is_none(), "{url}: no connection, so no answer: {a}");
    }
    // The same app still reaches a receiver on loopback.
    assert_ok(&s.call("callback_config/set_callback", json!({"Url": rx.url("/cb")})).await);
    assert_ok(&s.follow("e", &["a"]).await);
    let got = rx.wait_for(1, 10).await;
    assert_eq!(got.len(), 1, "only the event sent after the URL changed: {got:?}");
    assert_eq!(got[0].sender(), "e");
    s.stop().await;
}
