//! `webhook-id` is never reused: not by a server started on a wiped data dir, not after a restore from
//! backup (receivers dedupe on it, ours for 24 h, and would drop a real event under a reused id).

use crate::helpers::*;
use crate::receiver::Receiver;
use crate::webhooks::hook;
use followd_graph::outbox::WebhookId;
use serde_json::json;
use std::path::Path;

/// A server whose data dir is `data` (outside the server's own temp dir, so it outlives the server).
async fn serve(data: &Path, rx: &Receiver) -> Server {
    let s = spawn_with_top(&format!("data_dir = {:?}", data.display().to_string()), &hook(&rx.url("/cb"), ""), "").await;
    s.import(&["a", "b", "c"]).await;
    s
}

/// Owes one event, waits for it, and returns its (webhook-id, EventId).
async fn owe(s: &Server, rx: &Receiver, from: &str, to: &str) -> (String, i64) {
    let before = rx.received().len();
    assert_ok(&s.follow(from, &[to]).await);
    let got = rx.wait_for(before + 1, 10).await;
    let id = got[before].header("webhook-id").to_owned();
    let listed = s.call("callback_config/list_events", json!({"Limit": 1})).await;
    assert_eq!(listed["Events"][0]["WebhookId"], id.as_str(), "list_events shows the id the receiver saw");
    (id, listed["Events"][0]["EventId"].as_i64().unwrap())
}

fn assert_uuid_v7(id: &str) {
    match WebhookId::parse(id) {
        Some(WebhookId::Uuid(u)) => assert_eq!(u.get_version_num(), 7, "{id}"),
        other => panic!("{id} is not evt_ and a UUID: {other:?}"),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

#[tokio::test]
async fn a_server_on_a_wiped_data_dir_does_not_reuse_a_webhook_id() {
    if crate::pg::sqlite_only("a_server_on_a_wiped_data_dir_does_not_reuse_a_webhook_id", "it wipes the embedded store's data_dir") {
        return;
    }
    let rx = Receiver::start().await;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let s = serve(&data, &rx).await;
    let (first, first_event) = owe(&s, &rx, "a", "b").await;
    s.stop().await;
    std::fs::remove_dir_all(&data).unwrap();
    let s = serve(&data, &rx).await;
    let (second, second_event) = owe(&s, &rx, "a", "b").await;
    s.stop().await;
    assert_eq!(first_event, second_event, "the fresh database numbers its events from the start again");
    assert_ne!(first, second, "but the webhook id is new");
    assert_uuid_v7(&first);
    assert_uuid_v7(&second);
}

#[tokio::test]
async fn a_server_restored_from_backup_does_not_reuse_a_webhook_id() {
    if crate::pg::sqlite_only("a_server_restored_from_backup_does_not_reuse_a_webhook_id", "it restores the embedded store's files") {
        return;
    }
    let rx = Receiver::start().await;
    let root = tempfile::tempdir().unwrap();
    let (data, backup) = (root.path().join("data"), root.path().join("backup"));
    let s = serve(&data, &rx).await;
    let mut seen = vec![owe(&s, &rx, "a", "b").await];
    s.stop().await;
    copy_dir(&data, &backup);
    let s = serve(&data, &rx).await;
    seen.push(owe(&s, &rx, "b", "c").await);
    seen.push(owe(&s, &rx, "c", "a").await);
    s.stop().await;
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    let s = serve(&data, &rx).await;
    let (id, event) = owe(&s, &rx, "a", "c").await;
    s.stop().await;
    assert_eq!(event, seen[1].1, "the restored database hands out the EventId of an event sent since the backup again");
    assert!(seen.iter().all(|(old, _)| *old != id), "{id} reuses one of {seen:?}");
}

#[tokio::test]
async fn events_are_found_and_replayed_by_webhook_id_and_bad_ids_are_refused() {
    let rx = Receiver::start().await;
    rx.rule(|_| crate::receiver::Behavior::Status(500));
    let s = spawn_with(&hook(&rx.url("/cb"), "retry = \"none\""), "").await;
    s.import(&["a", "b"]).await;
    assert_ok(&s.follow("a", &["b"]).await);
    let sent = rx.wait_for(1, 10).await[0].header("webhook-id").to_owned();
    let listed = &s.call("callback_config/list_events", json!({})).await["Events"][0];
    let event_id = listed["EventId"].as_i64().unwrap();
    crate::webhooks::wait_state(&s, event_id, "dead").await;
    let by_event = s.call("callback_config/list_attempts", json!({"EventId": event_id})).await;
    let by_webhook = s.call("callback_config/list_attempts", json!({"WebhookId": sent})).await;
    assert_ok(&by_webhook);
    assert_eq!(by_webhook["Attempts"], by_event["Attempts"]);
    assert_eq!(by_webhook["Attempts"].as_array().unwrap().len(), 1);

    rx.rule(|_| crate::receiver::Behavior::Ok);
    assert_eq!(s.call("callback_config/replay_event", json!({"WebhookId": sent})).await["Replayed"], 1);
    let got = rx.wait_for(2, 10).await;
    assert_eq!(got[1].header("webhook-id"), sent, "a replay keeps the webhook id");
    crate::webhooks::wait_state(&s, event_id, "delivered").await;

    let unknown = "evt_01890a5d-ac96-774b-bcce-b302099a8057";
    for bad in [
        json!({"WebhookId": "nope"}),
        json!({"WebhookId": ""}),
        json!({"WebhookId": unknown}),
        json!({"WebhookId": format!("evt_{event_id}")}),
        json!({"WebhookId": sent, "EventId": event_id}),
        json!({}),
    ] {
        assert_fail(&s.call("callback_config/list_attempts", bad.clone()).await, 100002);
        assert_fail(&s.call("callback_config/replay_event", bad).await, 100002);
    }
    let r = s.call("callback_config/list_attempts", json!({"WebhookId": 7})).await;
    assert_eq!(r["ActionStatus"], "FAIL", "{r}");
    // Another app does not see the event under its webhook id either.
    assert_fail(&s.call_app(APP_B, KEY_B, "callback_config/list_attempts", json!({"WebhookId": sent})).await, 100002);
    assert_fail(&s.call_app(APP_B, KEY_B, "callback_config/replay_event", json!({"WebhookId": sent})).await, 100002);
    s.stop().await;
}
