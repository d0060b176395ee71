//! Every error path of decisions.md §2–3, answered with HTTP 200 and the documented envelope.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn url_and_usersig_errors_in_check_order() {
    let s = spawn().await;
    let body = r#"{"From_Account":"a","To_Account":["a"]}"#;
    let api = "follow/follow_get_info";
    let good = sig(KEY_A, APP_A, ADMIN);
    let base = format!("http://{}/v4/{api}", s.addr);

    assert_fail(&s.post_raw(&format!("{base}?identifier={ADMIN}&usersig={good}"), body).await, 60012);
    assert_fail(&s.post_raw(&format!("{base}?sdkappid=abc&identifier={ADMIN}&usersig={good}"), body).await, 60012);
    assert_fail(&s.post_raw(&s.url(api, 999, ADMIN, &good), body).await, 70020);
    assert_fail(&s.post_raw(&format!("{base}?sdkappid={APP_A}&usersig={good}"), body).await, 60025);
    assert_fail(&s.post_raw(&format!("{base}?sdkappid={APP_A}&identifier={ADMIN}&usersig={good}&contenttype=xml"), body).await, 60025);
    assert_fail(&s.post_raw(&format!("{base}?sdkappid={APP_A}&identifier={ADMIN}"), body).await, 70002);
    assert_fail(&s.post_raw(&s.url(api, APP_A, ADMIN, "garbage"), body).await, 70003);
    assert_fail(&s.post_raw(&s.url(api, APP_A, ADMIN, &sig(KEY_A, APP_B, ADMIN)), body).await, 70014);
    assert_fail(&s.post_raw(&s.url(api, APP_A, ADMIN, &sig(KEY_A, APP_A, "admin2")), body).await, 70013);
    let expired = followd_protocol::usersig::generate(KEY_A, APP_A, ADMIN, now() - 100, 10, None);
    assert_fail(&s.post_raw(&s.url(api, APP_A, ADMIN, &expired), body).await, 70001);
    // Expired and signed with the wrong key: expiry is checked first.
    let expired_forged = followd_protocol::usersig::generate("wrong", APP_A, ADMIN, now() - 100, 10, None);
    assert_fail(&s.post_raw(&s.url(api, APP_A, ADMIN, &expired_forged), body).await, 70001);
    assert_fail(&s.post_raw(&s.url(api, APP_A, ADMIN, &sig("wrong", APP_A, ADMIN)), body).await, 70009);
    // A UserSig that verified once is cached, but a forged one with the same identifier is not accepted.
    s.import(&["a"]).await;
    assert_ok(&s.post_raw(&s.url(api, APP_A, ADMIN, &good), body).await);
    assert_fail(&s.post_raw(&s.url(api, APP_A, ADMIN, &sig("wrong", APP_A, ADMIN)), body).await, 70009);
    // The published vector ticket (identifier "0", issued 2019) is long expired.
    let vector = "eJyrVgrxCdYrSy1SslIy0jNQ0gHzM1NS80oy0zLBwjDB4pTsxIKCzBQlK0MTAyiAyKRWFGQWpQLFTU1NjeCiJZm5YDEzS0tDAyOYaHFmOtBM54KsUqeUwGLLqPK8UndHryCL-Lx8-1RPy7Ty1AijMk9f30hLk0x-r3CvSFulWgAPYy*9";
    assert_fail(&s.post_raw(&s.url(api, APP_A, "0", vector), body).await, 70001);
    s.stop().await;
}

#[tokio::test]
async fn non_admin_callers_are_refused() {
    let s = spawn().await;
    s.import(&["alice", "bob"]).await;
    let alice = sig(KEY_A, APP_A, "alice");
    let r = s
        .post_raw(&s.url("follow/follow_add", APP_A, "alice", &alice), r#"{"From_Account":"alice","FollowItem":[{"To_Account":"bob"}]}"#)
        .await;
    assert_fail(&r, 30004);
    assert_eq!(r["ErrorDisplay"], "");
    let r = s.post_raw(&s.url("im_open_login_svc/account_import", APP_A, "alice", &alice), r#"{"UserID":"carol"}"#).await;
    assert_fail(&r, 60010);
    assert_eq!(s.counts("bob").await, (0, 0, 0));
    // A second admin may call.
    assert_ok(
        &s.post_raw(
            &s.url("follow/follow_get_info", APP_A, "admin2", &sig(KEY_A, APP_A, "admin2")),
            r#"{"From_Account":"alice","To_Account":["bob"]}"#,
        )
        .await,
    );
    s.stop().await;
}

#[tokio::test]
async fn http_level_errors() {
    let s = spawn().await;
    let url = s.url("follow/follow_get_info", APP_A, ADMIN, &sig(KEY_A, APP_A, ADMIN));
    // GET is answered with the envelope, HTTP 200.
    let r = s.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_fail(&r.json().await.unwrap(), 60002);
    // Over 64 KiB.
    let big = format!(r#"{{"From_Account":"a","To_Account":["a"],"pad":"{}"}}"#, "x".repeat(70 * 1024));
    assert_fail(&s.post_raw(&url, big).await, 60002);
    // Empty, malformed, not an object.
    assert_fail(&s.post_raw(&url, "").await, 60003);
    assert_fail(&s.post_raw(&url, "{\"From_Account\":").await, 60003);
    assert_fail(&s.post_raw(&url, r#"{"From_Account":"a","WantNum":100,}"#).await, 60003);
    assert_fail(&s.post_raw(&url, "[1,2]").await, 60003);
    // Unknown service or command.
    let r = s.post_raw(&s.url("follow/follow_nope", APP_A, ADMIN, &sig(KEY_A, APP_A, ADMIN)), "{}").await;
    assert_fail(&r, 60009);
    let r = s.post_raw(&format!("http://{}/v4/too/many/parts", s.addr), "{}").await;
    assert_fail(&r, 60009);
    // A JSON Content-Type is fine too.
    s.import(&["a"]).await;
    let r = s
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"From_Account":"a","To_Account":["a"]}"#)
        .send()
        .await
        .unwrap();
    assert_ok(&r.json().await.unwrap());
    s.stop().await;
}

#[tokio::test]
async fn body_field_errors_apply_nothing() {
    let s = spawn().await;
    s.import(&["a", "b"]).await;
    let long = "x".repeat(33);
    let cases = [
        ("follow/follow_add", json!({"FollowItem": [{"To_Account": "b"}]}), 30001),
        ("follow/follow_add", json!({"From_Account": 5, "FollowItem": [{"To_Account": "b"}]}), 60015),
        ("follow/follow_add", json!({"From_Account": "a", "FollowItem": [{"To_Account": 7}]}), 60015),
        ("follow/follow_add", json!({"From_Account": "a", "FollowItem": "b"}), 30001),
        ("follow/follow_add", json!({"From_Account": "a", "FollowItem": []}), 30001),
        ("follow/follow_add", json!({"From_Account": "a", "FollowItem": [{"Nope": "b"}]}), 30001),
        ("follow/follow_add", json!({"From_Account": long, "FollowItem": [{"To_Account": "b"}]}), 30001),
        ("follow/follow_add", json!({"From_Account": "a", "FollowItem": [{"To_Account": "b"}, {"To_Account": long}]}), 30001),
        ("follow/follow_add", json!({"From_Account": "a", "FollowItem": [{"To_Account": "b\u{7}"}]}), 30001),
        ("follow/follow_add", json!({"From_Account": "nobody", "FollowItem": [{"To_Account": "b"}]}), 30003),
        ("follow/follow_delete", json!({"From_Account": "a", "To_Account": "b"}), 30001),
        ("follow/follow_delete", json!({"From_Account": "nobody", "To_Account": ["b"]}), 30003),
        ("follow/follow_check", json!({"From_Account": "nobody", "To_Account": ["b"]}), 30003),
        ("follow/follow_get", json!({"From_Account": "a", "FollowType": 4}), 30001),
        ("follow/follow_get", json!({"From_Account": "a"}), 30001),
        ("follow/follow_get", json!({"From_Account": "a", "FollowType": "1"}), 30001),
        ("follow/follow_get", json!({"From_Account": "a", "FollowType": 1, "WantNum": 1001}), 30001),
        ("follow/follow_get", json!({"From_Account": "a", "FollowType": 1, "WantNum": -1}), 30001),
        ("follow/follow_get", json!({"From_Account": "a", "FollowType": 1, "StartCursor": "bogus"}), 30001),
        ("follow/follow_get", json!({"From_Account": "a", "FollowType": 1, "StartCursor": 5}), 30001),
        ("follow/follow_get", json!({"From_Account": "nobody", "FollowType": 1}), 30003),
        ("follow/follow_get_info", json!({"From_Account": "nobody", "To_Account": ["a"]}), 30003),
        ("im_open_login_svc/account_import", json!({"UserID": long}), 70402),
        ("im_open_login_svc/account_import", json!({"UserID": 12}), 60015),
        ("im_open_login_svc/account_import", json!({"UserID": "c", "Nick": 3}), 70402),
        ("im_open_login_svc/account_import", json!({"Nick": "c"}), 70402),
        ("im_open_login_svc/multiaccount_import", json!({"Accounts": [1]}), 60015),
        ("im_open_login_svc/account_delete", json!({"DeleteItem": [{"UserID": ""}]}), 70402),
        ("im_open_login_svc/account_check", json!({"CheckItem": "a"}), 70402),
    ];
    for (api, body, code) in cases {
        let r = s.call(api, body.clone()).await;
        assert_fail(&r, code);
        assert!(r["ErrorInfo"].as_str().unwrap().len() > 5, "{api} {body}: {r}");
    }
    assert_eq!(s.counts("a").await, (0, 0, 0));
    assert_eq!(s.counts("b").await, (0, 0, 0));
    // Invalid UserIDs in multiaccount_import are reported, valid ones imported.
    let r = s.call("im_open_login_svc/multiaccount_import", json!({"Accounts": ["ok1", long, ""]})).await;
    assert_ok(&r);
    assert_eq!(r["FailAccounts"], json!([long, ""]));
    s.stop().await;
}

#[tokio::test]
async fn target_limits_21_and_101() {
    let s = spawn().await;
    let users: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    s.import(&refs[..100]).await;
    s.import(&refs[100..]).await;
    let r = s.follow("u0", &refs[1..22]).await;
    assert_fail(&r, 30001);
    assert!(r["ErrorInfo"].as_str().unwrap().contains("20"), "{r}");
    assert_eq!(s.counts("u0").await, (0, 0, 0), "nothing applied");
    assert_ok(&s.follow("u0", &refs[1..21]).await);
    assert_fail(&s.unfollow("u0", &refs[1..22]).await, 30001);
    assert_fail(&s.call("follow/follow_get_info", json!({"From_Account": "u0", "To_Account": &refs[..21]})).await, 30001);
    assert_ok(&s.call("follow/follow_get_info", json!({"From_Account": "u0", "To_Account": &refs[..20]})).await);
    let r = s.call("follow/follow_check", json!({"From_Account": "u0", "To_Account": &refs[..101]})).await;
    assert_fail(&r, 30001);
    assert!(r["ErrorInfo"].as_str().unwrap().contains("100"), "{r}");
    let r = s.call("follow/follow_check", json!({"From_Account": "u0", "To_Account": &refs[1..101]})).await;
    assert_ok(&r);
    assert_eq!(r["ResultItem"].as_array().unwrap().len(), 100);
    let many: Vec<String> = (0..101).map(|i| format!("m{i}")).collect();
    assert_fail(&s.call("im_open_login_svc/multiaccount_import", json!({"Accounts": many})).await, 70402);
    s.stop().await;
}

#[tokio::test]
async fn follow_limits_self_follow_and_unknown_targets() {
    let s = spawn().await;
    s.import_app(APP_B, KEY_B, &["a", "b", "c", "d"]).await;
    let b = |body: serde_json::Value| s.call_app(APP_B, KEY_B, "follow/follow_add", body);
    let r = b(json!({"From_Account": "a", "FollowItem": [{"To_Account": "a"}, {"To_Account": "b"}, {"To_Account": "ghost"}, {"To_Account": "c"}, {"To_Account": "d"}]})).await;
    assert_ok(&r);
    assert_eq!(codes(&r), vec![("a".into(), 30001), ("b".into(), 0), ("ghost".into(), 30003), ("c".into(), 0), ("d".into(), 32100)]);
    assert!(r["ResultItem"][0]["ResultInfo"].as_str().unwrap().contains("itself"));
    // max_mutual = 1: b follows a back (a's first mutual), then c following a back would be a's second.
    assert_eq!(codes(&b(json!({"From_Account": "b", "FollowItem": [{"To_Account": "a"}]})).await), vec![("a".to_string(), 0)]);
    assert_eq!(codes(&b(json!({"From_Account": "c", "FollowItem": [{"To_Account": "a"}]})).await), vec![("a".to_string(), 32103)]);
    // From's own mutual limit: d follows b (not mutual), b follows d would make b's second mutual.
    assert_eq!(codes(&b(json!({"From_Account": "d", "FollowItem": [{"To_Account": "b"}]})).await), vec![("b".to_string(), 0)]);
    assert_eq!(codes(&b(json!({"From_Account": "b", "FollowItem": [{"To_Account": "d"}]})).await), vec![("d".to_string(), 32102)]);
    s.stop().await;
}
