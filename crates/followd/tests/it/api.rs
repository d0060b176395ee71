//! Each API's happy path, paging, mutual lists, counts, idempotence, isolation and account deletion.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn every_api_happy_path() {
    let s = spawn().await;
    let r = s.call("im_open_login_svc/account_import", json!({"UserID": "alice", "Nick": "Alice", "FaceUrl": "https://x/a.png"})).await;
    assert_ok(&r);
    assert!(r.get("ErrorDisplay").is_none(), "account APIs carry no ErrorDisplay: {r}");
    s.import(&["bob", "carol"]).await;

    let r = s.follow("alice", &["bob", "carol"]).await;
    assert_ok(&r);
    assert_eq!(r["ErrorDisplay"], "");
    assert_eq!(codes(&r), vec![("bob".into(), 0), ("carol".into(), 0)]);
    assert_eq!(r["ResultItem"][0]["ResultInfo"], "");

    let r = s.call("follow/follow_check", json!({"From_Account": "bob", "To_Account": ["alice", "carol"]})).await;
    assert_ok(&r);
    assert_eq!(r["ResultItem"][0]["FollowType"], 1, "alice follows bob, not back: {r}");
    assert_eq!(r["ResultItem"][1]["FollowType"], 0);
    let r = s.call("follow/follow_check", json!({"From_Account": "alice", "To_Account": ["bob"]})).await;
    assert_eq!(r["ResultItem"][0]["FollowType"], 2);

    let r = s.call("follow/follow_get", json!({"From_Account": "bob", "FollowType": 1, "StartCursor": "", "WantNum": 10})).await;
    assert_ok(&r);
    let item = &r["FollowItem"][0];
    assert_eq!(item["To_Account"], "alice");
    let t = item["FollowTime"].as_u64().unwrap();
    assert!(t.abs_diff(now()) < 60, "FollowTime is in seconds: {t}");
    assert_eq!(
        item["ProfileItem"],
        json!([{"Tag": "Tag_Profile_IM_Nick", "Value": "Alice"}, {"Tag": "Tag_Profile_IM_Image", "Value": "https://x/a.png"}])
    );
    assert_eq!(item["profile_sequence"], 0);
    assert_eq!(r["NextCursor"], "");

    let r = s.call("follow/follow_get_info", json!({"From_Account": "alice", "To_Account": ["alice", "bob", "carol"]})).await;
    assert_ok(&r);
    assert_eq!(r["FollowInfo"][0]["FollowingCount"], 2);
    assert_eq!(r["FollowInfo"][1]["FollowerCount"], 1);
    assert_eq!(r["FollowInfo"][2]["FollowerCount"], 1);

    let r = s.unfollow("alice", &["bob"]).await;
    assert_ok(&r);
    assert_eq!(codes(&r), vec![("bob".into(), 0)]);
    assert_eq!(s.counts("alice").await, (0, 1, 0));

    let r = s.call("im_open_login_svc/account_check", json!({"CheckItem": [{"UserID": "alice"}, {"UserID": "nobody"}]})).await;
    assert_ok(&r);
    assert_eq!(r["ResultItem"][0]["AccountStatus"], "Imported");
    assert_eq!(r["ResultItem"][1]["AccountStatus"], "NotImported");
    assert_eq!(r["ResultItem"][1]["UserID"], "nobody");

    // Re-importing updates the profile and bumps profile_sequence; edges stay.
    assert_ok(&s.call("im_open_login_svc/account_import", json!({"UserID": "alice", "Nick": "Alice 2"})).await);
    let r = s.call("follow/follow_get", json!({"From_Account": "carol", "FollowType": 1, "StartCursor": ""})).await;
    assert_eq!(r["FollowItem"][0]["profile_sequence"], 1);
    assert_eq!(r["FollowItem"][0]["ProfileItem"][0]["Value"], "Alice 2");

    let r = s.call("im_open_login_svc/account_delete", json!({"DeleteItem": [{"UserID": "carol"}]})).await;
    assert_ok(&r);
    assert_eq!(r["ResultItem"], json!([{"ResultCode": 0, "ResultInfo": "", "UserID": "carol"}]));
    s.stop().await;
}

#[tokio::test]
async fn paging_250_followers_newest_first_with_keyset_cursors() {
    let s = spawn().await;
    let fans: Vec<String> = (0..250).map(|i| format!("fan{i:03}")).collect();
    let mut all: Vec<&str> = fans.iter().map(String::as_str).collect();
    all.push("star");
    for chunk in all.chunks(100) {
        s.import(chunk).await;
    }
    for f in &fans {
        assert_ok(&s.follow(f, &["star"]).await);
    }
    for want in [100, 7, 1000] {
        let list = s.list("star", 1, want).await;
        let expected: Vec<String> = fans.iter().rev().cloned().collect();
        assert_eq!(list, expected, "WantNum {want}: newest first, each once");
    }
    // Default page size is 100 when WantNum is absent or 0.
    let r = s.call("follow/follow_get", json!({"From_Account": "star", "FollowType": 1, "StartCursor": "", "WantNum": 0})).await;
    assert_eq!(r["FollowItem"].as_array().unwrap().len(), 100);
    // A cursor stays valid while the list changes: deleting entries already seen does not skip others.
    let first = s.call("follow/follow_get", json!({"From_Account": "star", "FollowType": 1, "StartCursor": "", "WantNum": 100})).await;
    let cursor = first["NextCursor"].as_str().unwrap().to_owned();
    assert!(!cursor.is_empty());
    assert_ok(&s.unfollow("fan249", &["star"]).await);
    let second = s.call("follow/follow_get", json!({"From_Account": "star", "FollowType": 1, "StartCursor": cursor, "WantNum": 100})).await;
    assert_eq!(second["FollowItem"][0]["To_Account"], "fan149");
    s.stop().await;
}

#[tokio::test]
async fn mutual_lists_and_counts_after_every_kind_of_change() {
    let s = spawn().await;
    s.import(&["a", "b", "c", "d"]).await;
    assert_ok(&s.follow("a", &["b", "c", "d"]).await);
    assert_eq!(s.counts("a").await, (0, 3, 0));
    assert_ok(&s.follow("b", &["a"]).await);
    assert_ok(&s.follow("c", &["a"]).await);
    assert_eq!(s.counts("a").await, (2, 3, 2));
    assert_eq!(s.counts("b").await, (1, 1, 1));
    assert_eq!(s.list("a", 3, 100).await, vec!["c", "b"], "mutual, newest relation first");
    assert_eq!(s.list("b", 3, 100).await, vec!["a"]);
    assert_eq!(s.list("a", 2, 100).await, vec!["d", "c", "b"]);
    assert_eq!(s.list("a", 1, 100).await, vec!["c", "b"]);

    // Unfollow one side of a mutual pair.
    assert_ok(&s.unfollow("a", &["b"]).await);
    assert_eq!(s.counts("a").await, (2, 2, 1));
    assert_eq!(s.counts("b").await, (0, 1, 0));
    assert_eq!(s.list("a", 3, 100).await, vec!["c"]);
    assert!(s.list("b", 3, 100).await.is_empty());

    // Follow back again: mutual again, now the newest mutual relation.
    assert_ok(&s.follow("a", &["b"]).await);
    assert_eq!(s.list("a", 3, 100).await, vec!["b", "c"]);
    assert_eq!(s.counts("a").await, (2, 3, 2));

    // Deleting an account fixes every count on both sides.
    let r = s.call("im_open_login_svc/account_delete", json!({"DeleteItem": [{"UserID": "a"}]})).await;
    assert_ok(&r);
    for u in ["b", "c", "d"] {
        assert_eq!(s.counts(u).await, (0, 0, 0), "{u}");
        assert!(s.list(u, 1, 10).await.is_empty());
        assert!(s.list(u, 2, 10).await.is_empty());
        assert!(s.list(u, 3, 10).await.is_empty());
    }
    // Re-import after deletion starts clean.
    s.import(&["a"]).await;
    assert_eq!(s.counts("a").await, (0, 0, 0));
    assert!(s.list("a", 2, 10).await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn idempotent_repeats_and_duplicates_in_one_request() {
    let s = spawn().await;
    s.import(&["a", "b"]).await;
    assert_ok(&s.follow("a", &["b"]).await);
    let r = s.follow("a", &["b", "b"]).await;
    assert_eq!(codes(&r), vec![("b".into(), 0)], "one item per distinct target");
    assert_eq!(s.counts("b").await, (1, 0, 0));
    assert_ok(&s.unfollow("a", &["b"]).await);
    let r = s.unfollow("a", &["b"]).await;
    assert_ok(&r);
    assert_eq!(codes(&r), vec![("b".into(), 0)]);
    assert_eq!(s.counts("b").await, (0, 0, 0));
    // Importing an existing account again is not an error.
    s.import(&["a", "a"]).await;
    s.stop().await;
}

#[tokio::test]
async fn two_apps_are_isolated() {
    let s = spawn().await;
    s.import(&["alice", "bob"]).await;
    s.import_app(APP_B, KEY_B, &["alice", "bob"]).await;
    assert_ok(&s.follow("alice", &["bob"]).await);
    let r = s.call_app(APP_B, KEY_B, "follow/follow_get_info", json!({"From_Account": "bob", "To_Account": ["bob"]})).await;
    assert_eq!(r["FollowInfo"][0]["FollowerCount"], 0, "app B sees nothing of app A: {r}");
    let r = s.call_app(APP_B, KEY_B, "follow/follow_check", json!({"From_Account": "alice", "To_Account": ["bob"]})).await;
    assert_eq!(r["ResultItem"][0]["FollowType"], 0);
    // Deleting alice in A leaves B's alice alone.
    assert_ok(&s.call("im_open_login_svc/account_delete", json!({"DeleteItem": [{"UserID": "alice"}]})).await);
    let r = s.call_app(APP_B, KEY_B, "im_open_login_svc/account_check", json!({"CheckItem": [{"UserID": "alice"}]})).await;
    assert_eq!(r["ResultItem"][0]["AccountStatus"], "Imported");
    // A user imported only in B does not exist in A.
    s.import_app(APP_B, KEY_B, &["only_b"]).await;
    let r = s.follow("bob", &["only_b"]).await;
    assert_eq!(codes(&r), vec![("only_b".into(), 30003)]);
    // A's admin UserSig is refused by B, and A's key cannot sign for B.
    let a_sig = sig(KEY_A, APP_A, ADMIN);
    let r = s.post_raw(&s.url("follow/follow_get_info", APP_B, ADMIN, &a_sig), r#"{"From_Account":"bob","To_Account":["bob"]}"#).await;
    assert_fail(&r, 70014);
    let forged = sig(KEY_A, APP_B, ADMIN);
    let r = s.post_raw(&s.url("follow/follow_get_info", APP_B, ADMIN, &forged), r#"{"From_Account":"bob","To_Account":["bob"]}"#).await;
    assert_fail(&r, 70009);
    s.stop().await;
}

const HOOK: &str = "[apps.webhook]\nurl = \"http://127.0.0.1:9/hook\"\n";

#[tokio::test]
async fn account_deletion_removes_edges_both_ways_and_owes_grouped_delete_events() {
    let s = spawn_with(HOOK, "").await;
    let fans: Vec<String> = (0..25).map(|i| format!("fan{i:02}")).collect();
    let idols: Vec<String> = (0..25).map(|i| format!("idol{i:02}")).collect();
    let mut users: Vec<&str> = fans.iter().chain(&idols).map(String::as_str).collect();
    users.push("hub");
    s.import(&users[..50]).await;
    s.import(&users[50..]).await;
    for f in &fans {
        assert_ok(&s.follow(f, &["hub"]).await);
    }
    let idol_refs: Vec<&str> = idols.iter().map(String::as_str).collect();
    assert_ok(&s.follow("hub", &idol_refs[..20]).await);
    assert_ok(&s.follow("hub", &idol_refs[20..]).await);
    assert_ok(&s.follow("hub", &["fan00"]).await);
    assert_eq!(s.counts("hub").await, (25, 26, 1));
    let before = s.events().len();
    assert_eq!(before, 28, "one add event per follow_add call that changed something");

    let r = s.call("im_open_login_svc/account_delete", json!({"DeleteItem": [{"UserID": "hub"}, {"UserID": "ghost"}]})).await;
    assert_ok(&r);
    assert_eq!(r["ResultItem"][1], json!({"ResultCode": 70107, "ResultInfo": "account does not exist", "UserID": "ghost"}));
    // The edges past the API's own chunk are removed by the background job just after the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.events().len() < before + 27 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let events = s.events()[before..].to_vec();
    assert!(events.iter().all(|(c, _, b)| c == "Follow.CallbackAfterFollowDelete" && b["CallbackCommand"] == *c));
    // hub's own 26 follows: events From hub of 20 and 6 targets; each fan: one event listing hub.
    let hub: Vec<_> = events.iter().filter(|(_, from, _)| from == "hub").collect();
    assert_eq!(hub.len(), 2);
    assert_eq!(hub[0].2["To_Account"].as_array().unwrap().len(), 20);
    assert_eq!(hub[1].2["To_Account"].as_array().unwrap().len(), 6);
    for f in &fans {
        let e: Vec<_> = events.iter().filter(|(_, from, _)| from == f).collect();
        assert_eq!(e.len(), 1, "{f}");
        assert_eq!(e[0].2["To_Account"], json!(["hub"]));
    }
    assert_eq!(events.len(), 27);
    for u in ["fan00", "fan01", "idol00", "idol24"] {
        assert_eq!(s.counts(u).await, (0, 0, 0), "{u}");
    }
    s.stop().await;
}

#[tokio::test]
async fn events_list_only_changed_edges_and_honour_the_command_list() {
    let s = spawn_with("", "[apps.webhook]\nurl = \"http://127.0.0.1:9/hook\"\ncommands = [\"Follow.CallbackAfterFollowDelete\"]\n").await;
    // App A has no webhook: nothing is owed.
    s.import(&["a", "b"]).await;
    assert_ok(&s.follow("a", &["b"]).await);
    assert!(s.events().is_empty());
    // App B subscribes to deletes only.
    s.import_app(APP_B, KEY_B, &["a", "b", "c"]).await;
    let b = |api: &'static str, body: serde_json::Value| s.call_app(APP_B, KEY_B, api, body);
    assert_ok(&b("follow/follow_add", json!({"From_Account": "a", "FollowItem": [{"To_Account": "b"}]})).await);
    assert!(s.events().is_empty(), "add is not subscribed");
    assert_ok(&b("follow/follow_delete", json!({"From_Account": "a", "To_Account": ["c", "b", "nobody"]})).await);
    let ev = s.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].2["To_Account"], json!(["b"]), "only the edge that changed");
    assert_ok(&b("follow/follow_delete", json!({"From_Account": "a", "To_Account": ["b"]})).await);
    assert_eq!(s.events().len(), 1, "a no-op owes nothing");
    s.stop().await;
}
