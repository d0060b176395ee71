//! A storage fault under the running server: the database file truncated (the classic way to make a
//! memory-mapped page fault). It must be answered as an error while the process stays up; with the
//! file memory-mapped (`mmap_size` > 0) the process dies of SIGBUS instead.

use crate::binary::{config_file, start};
use crate::helpers::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_truncated_under_the_server_gives_errors_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "");
    let server = start(&config).await;
    let http = reqwest::Client::new();
    let users: Vec<String> = (0..400).map(|i| format!("user{i:04}")).collect();
    for chunk in users.chunks(100) {
        assert_ok(&server.call(&http, "im_open_login_svc/multiaccount_import", json!({"Accounts": chunk})).await);
    }
    for (i, u) in users.iter().enumerate() {
        let items: Vec<_> = (1..=20).map(|k| json!({"To_Account": users[(i + k * 7) % users.len()]})).collect();
        assert_ok(&server.call(&http, "follow/follow_add", json!({"From_Account": u, "FollowItem": items})).await);
    }
    server.stop().await;
    // Every page into the database file, and no WAL: after the restart every page is read from the file.
    let db_path = dir.path().join("data/followd.db");
    rusqlite::Connection::open(&db_path).unwrap().execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    assert!(!dir.path().join("data/followd.db-wal").exists());
    let mut server = start(&config).await;
    // A write puts the database's size in the WAL; the reads after it map the whole file (with a map).
    assert_ok(&server.call(&http, "follow/follow_add", json!({"From_Account": users[1], "FollowItem": [{"To_Account": users[2]}]})).await);
    for u in &users[..3] {
        assert_ok(&server.call(&http, "follow/follow_get", json!({"From_Account": u, "FollowType": 2, "StartCursor": ""})).await);
    }
    let db = std::fs::OpenOptions::new().write(true).open(&db_path).unwrap();
    db.set_len(8192).unwrap();
    drop(db);
    // With the file memory-mapped, the first read of a page past the new end kills the process (SIGBUS).
    let mut internal = 0;
    for u in users.iter().step_by(20) {
        let calls = [
            ("follow/follow_get", json!({"From_Account": u, "FollowType": 1, "StartCursor": "", "WantNum": 100})),
            ("follow/follow_check", json!({"From_Account": u, "To_Account": [users[0], users[1]]})),
            ("follow/follow_get_info", json!({"From_Account": u, "To_Account": [u]})),
            ("follow/follow_add", json!({"From_Account": u, "FollowItem": [{"To_Account": users[3]}]})),
            ("im_open_login_svc/account_import", json!({"UserID": format!("new{u}")})),
        ];
        for (api, body) in calls {
            let Ok(answer) = http.post(server.url(api)).body(body.to_string()).send().await else {
                let exit = tokio::time::timeout(std::time::Duration::from_secs(10), server.proc.wait()).await;
                panic!("{api}: no answer; the server process: {exit:?}");
            };
            assert_eq!(answer.status(), 200);
            let r: serde_json::Value = answer.json().await.unwrap();
            assert!(r["RequestId"].is_string() && r["ActionStatus"].is_string(), "{api}: {r}");
            if r["ErrorCode"] == 30006 || r["ErrorCode"] == 70500 {
                assert!(r["ErrorInfo"].as_str().unwrap().contains(r["RequestId"].as_str().unwrap()), "{r}");
                internal += 1;
            }
        }
    }
    assert!(internal > 0, "the truncated file was never read: the test proves nothing");
    assert!(server.alive(), "the process died");
    let (status, _) = server.get(&http, "/healthz").await;
    assert!(status == 200 || status == 503, "{status}");
}
