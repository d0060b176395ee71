//! Health that tells the truth: a component killed by a failpoint in the real binary shows in
//! `/healthz`, `/readyz` and `/metrics`.

use crate::binary::{config_file, poll, start_with};
use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn a_healthy_server_is_ready_and_reports_every_component_up() {
    let s = spawn().await;
    let get = |path: &'static str| {
        let (http, addr) = (s.http.clone(), s.addr);
        async move {
            let r = http.get(format!("http://{addr}{path}")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok".to_owned()));
    assert_eq!(get("/readyz").await, (200, "ready".to_owned()));
    let (_, metrics) = get("/metrics").await;
    for c in followd::health::COMPONENTS {
        assert!(metrics.contains(&format!("followd_component_up{{component=\"{c}\"}} 1")), "{c}: {metrics}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_dies_shows_in_healthz_readyz_and_metrics() {
    for (failpoint, component) in
        [("writer-batch=panic", "writer"), ("checkpoint=panic", "checkpointer"), ("delivery-loop=panic", "delivery")]
    {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start_with(&config_file(&dir, ""), &[("FAILPOINTS", failpoint)]).await;
        assert!(server.logged("built with failpoints"), "the binary under test must have failpoints compiled in");
        let http = reqwest::Client::new();
        // A write gives the writer a batch to die in (the others die on their own).
        let r = server.call(&http, "im_open_login_svc/account_import", json!({"UserID": "alice"})).await;
        let body = poll(30, &format!("/healthz reporting the {component}"), || async {
            let (status, body) = server.get(&http, "/healthz").await;
            (status == 503).then_some(body)
        })
        .await;
        assert_eq!(body, format!("down: {component}\n"));
        let (status, body) = server.get(&http, "/readyz").await;
        assert_eq!((status, body), (503, format!("not ready: down: {component}\n")));
        let (_, metrics) = server.get(&http, "/metrics").await;
        for c in followd::health::COMPONENTS {
            let up = if c == component { 0 } else { 1 };
            assert!(metrics.contains(&format!("followd_component_up{{component=\"{c}\"}} {up}")), "{c}: {metrics}");
        }
        assert!(server.logged("a thread panicked") || server.logged("a component died"), "the death is logged with its cause");
        if component == "writer" {
            // Writes fail with an internal error and a RequestId instead of hanging.
            if r["ErrorCode"] != 70500 {
                let r = server.call(&http, "im_open_login_svc/account_import", json!({"UserID": "bob"})).await;
                assert_fail(&r, 70500);
            }
        } else {
            assert_ok(&r);
        }
        assert!(server.alive());
    }
}
