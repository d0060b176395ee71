//! Moving a graph: `followd export` → `followd import` round trips, `replace`, re-runs, malformed
//! lines, limits, webhooks, resuming, and `followd migrate` from a second followd as the source.
//! Each drives the real server over HTTP through the same client functions the commands call.

use crate::helpers::*;
use crate::webhooks::hook;
use followd::bulk::client::{self, ImportArgs, ImportReport, Mode, Target};
use followd::bulk::migrate::{self, MigrateArgs};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::watch;

fn target(s: &Server, app: u64, key: &str) -> Target {
    Target::new(format!("http://{}", s.addr), app, key, ADMIN)
}

fn running() -> watch::Receiver<bool> {
    watch::channel(false).1
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn import(s: &Server, file: &Path, mode: Mode, webhooks: bool) -> ImportReport {
    let args = ImportArgs { mode, webhooks, ..ImportArgs::new(file) };
    client::import(&target(s, APP_A, KEY_A), &args, running()).await.unwrap()
}

async fn export(s: &Server, path: &Path) -> String {
    client::export(&target(s, APP_A, KEY_A), Some(path), true, running()).await.unwrap();
    std::fs::read_to_string(path).unwrap()
}

/// A whole list with times and profiles: (UserID, FollowTime, profile tags).
async fn list_full(s: &Server, user: &str, follow_type: u8) -> Vec<(String, u64, Value)> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = s
            .call("follow/follow_get", json!({"From_Account": user, "FollowType": follow_type, "StartCursor": cursor, "WantNum": 1000}))
            .await;
        assert_ok(&r);
        for i in r["FollowItem"].as_array().unwrap() {
            out.push((i["To_Account"].as_str().unwrap().to_owned(), i["FollowTime"].as_u64().unwrap(), i["ProfileItem"].clone()));
        }
        cursor = r["NextCursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            return out;
        }
    }
}

/// Every list and counter of every user: what a round trip must keep.
async fn snapshot(s: &Server, users: &[String]) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for u in users {
        let mut lists = Vec::new();
        for t in 1..=3 {
            lists.push(json!(list_full(s, u, t).await));
        }
        let counts = s.counts(u).await;
        m.insert(u.clone(), json!({"lists": lists, "counts": [counts.0, counts.1, counts.2]}));
    }
    m
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("u{i}")).collect()
}

#[tokio::test]
async fn export_then_import_reproduces_every_list() {
    let src = spawn().await;
    let users = names(40);
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    src.import(&refs).await;
    for (u, nick) in [("u1", "One"), ("u2", "Two \"quoted\" ✓")] {
        assert_ok(
            &src.call("im_open_login_svc/account_import", json!({"UserID": u, "Nick": nick, "FaceUrl": format!("https://x/{u}.png")}))
                .await,
        );
    }
    // Mutuals and several follows within one second (follow times tie at second precision).
    for u in &users[1..] {
        assert_ok(&src.follow(u, &["u0"]).await);
    }
    assert_ok(&src.follow("u0", &refs[1..20]).await);
    assert_ok(&src.follow("u3", &["u1", "u2", "u4", "u5"]).await);
    assert_ok(&src.follow("u1", &["u3"]).await);
    // A user with thousands of followers, loaded in bulk with their own times.
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("From_Account,To_Account,FollowTime\n");
    for i in 0..3000 {
        csv += &format!("fan{i},star,{}.{:06}\n", 1_700_000_000 + i / 7, (i % 7) * 8);
    }
    csv += "star,u0,1700000100\n";
    let r = import(&src, &write(dir.path(), "fans.csv", &csv), Mode::Merge, false).await;
    assert!(r.complete && r.failure.is_none(), "{r:?}");
    assert_eq!((r.follows_added, r.accounts_created), (3001, 3001));
    let mut everyone = users.clone();
    everyone.extend(["star".to_owned(), "fan0".to_owned(), "fan2999".to_owned()]);
    let before = snapshot(&src, &everyone).await;
    assert_eq!(before["star"]["counts"], json!([3000, 1, 0]));

    let text = export(&src, &dir.path().join("graph.ndjson")).await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("\"Version\":1"), "{}", lines[0]);
    assert_eq!(lines.last().unwrap(), &format!(r#"{{"End":true,"Accounts":{},"Follows":{}}}"#, 40 + 3001, 39 + 19 + 5 + 3001));

    let dst = spawn().await;
    let r = import(&dst, &dir.path().join("graph.ndjson"), Mode::Merge, false).await;
    assert!(r.complete, "{r:?}");
    assert_eq!(r.rejected, 0);
    assert_eq!(snapshot(&dst, &everyone).await, before, "every list, time, profile and counter survives the round trip");
    // And the order within one second, which FollowTime does not show: the exports are the same.
    let again = export(&dst, &dir.path().join("again.ndjson")).await;
    let sorted = |t: &str| {
        let mut v: Vec<String> = t.lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&again), sorted(&text));
    assert!(dst.events().is_empty(), "no webhooks without --webhooks");
    src.stop().await;
    dst.stop().await;
}

#[tokio::test]
async fn rerunning_an_import_changes_nothing() {
    let s = spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "g.csv", "a,b,1700000000\nb,a,1700000001\nc,a\n");
    let first = import(&s, &f, Mode::Merge, false).await;
    assert_eq!((first.accounts_created, first.follows_added), (3, 3));
    let before = export(&s, &dir.path().join("1.ndjson")).await;
    let second = import(&s, &f, Mode::Merge, false).await;
    assert_eq!((second.accounts_created, second.follows_added, second.follows_existing), (0, 0, 3));
    assert_eq!(export(&s, &dir.path().join("2.ndjson")).await, before);
    assert_eq!(s.counts("a").await, (2, 1, 1));
    s.stop().await;
}

#[tokio::test]
async fn a_follow_named_twice_in_one_file_is_added_once_with_its_first_time() {
    let s = spawn().await;
    let dir = tempfile::tempdir().unwrap();
    // Part of it stored already; the rest repeated within the one batch, in both directions.
    assert!(import(&s, &write(dir.path(), "0.csv", "a,c,1700000000\n"), Mode::Merge, false).await.complete);
    let f = write(dir.path(), "g.csv", "a,b,1700000010\na,c,1700000020\na,b,1700000030\nb,a,1700000040\nb,a,1700000050\nc,a\n");
    let r = import(&s, &f, Mode::Merge, false).await;
    assert!(r.complete && r.rejected == 0, "{r:?}");
    assert_eq!((r.follows_added, r.follows_existing), (3, 3));
    assert_eq!(s.counts("a").await, (2, 2, 2));
    assert_eq!(s.counts("b").await, (1, 1, 1));
    let following: Vec<(String, u64)> = list_full(&s, "a", 2).await.into_iter().map(|(u, t, _)| (u, t)).collect();
    assert_eq!(following, vec![("b".to_owned(), 1_700_000_010), ("c".to_owned(), 1_700_000_000)]);
    let mutual: Vec<(String, u64)> = list_full(&s, "b", 3).await.into_iter().map(|(u, t, _)| (u, t)).collect();
    assert_eq!(mutual, vec![("a".to_owned(), 1_700_000_040)], "the mutual relation began with the later of the two first follows");
    s.stop().await;
}

/// One batch of 20,000 follows: on PostgreSQL a transaction locks each pair it looks at, and the
/// server's lock table (6,400 entries by default) could not hold a batch of 50,000 ("out of shared
/// memory"), so the server splits batches to what the store can hold.
#[tokio::test]
async fn a_batch_larger_than_the_store_can_lock_at_once_is_applied_whole() {
    let s = spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..20_000 {
        text += &format!("fan{i},star,{}\n", 1_700_000_000 + i);
    }
    let f = write(dir.path(), "g.csv", &text);
    let r = import(&s, &f, Mode::Merge, false).await;
    assert!(r.complete && r.rejected == 0 && r.failure.is_none(), "{r:?}");
    assert_eq!((r.accounts_created, r.follows_added), (20_001, 20_000));
    assert_eq!(s.counts("star").await, (20_000, 0, 0));
    let first = list_full(&s, "star", 1).await;
    assert_eq!(first.len(), 20_000);
    assert_eq!((first[0].0.as_str(), first[0].1), ("fan19999", 1_700_019_999), "newest first");
    // And the sweep of replace, which removes in steps the store can lock.
    let r = import(&s, &write(dir.path(), "small.csv", "fan0,star,1700000000\n"), Mode::Replace, false).await;
    assert!(r.complete, "{r:?}");
    assert_eq!(r.removed, 19_999);
    assert_eq!(s.counts("star").await, (1, 0, 0));
    s.stop().await;
}

#[tokio::test]
async fn replace_removes_what_the_file_lacks() {
    let s = spawn().await;
    s.import(&["a", "b", "c", "d"]).await;
    assert_ok(&s.follow("a", &["b", "c"]).await);
    assert_ok(&s.follow("b", &["c", "a"]).await);
    assert_ok(&s.follow("d", &["a"]).await);
    let dir = tempfile::tempdir().unwrap();
    let r = import(&s, &write(dir.path(), "g.csv", "a,b\nc,a\n"), Mode::Replace, false).await;
    assert!(r.complete, "{r:?}");
    assert_eq!((r.follows_added, r.follows_existing, r.removed), (1, 1, 4));
    assert_eq!(s.list("a", 2, 100).await, vec!["b"]);
    assert_eq!(s.list("a", 1, 100).await, vec!["c"]);
    assert!(s.list("b", 2, 100).await.is_empty());
    assert!(s.list("d", 2, 100).await.is_empty());
    assert_eq!(s.counts("a").await, (1, 1, 0));
    assert_eq!(s.counts("b").await, (1, 0, 0));
    assert_eq!(s.counts("c").await, (0, 1, 0));
    assert_eq!(s.counts("d").await, (0, 0, 0));
    assert!(!dir.path().join("g.csv.followd-import").exists(), "a finished import leaves no checkpoint");
    // Replacing again with the same file is a no-op.
    let r = import(&s, &dir.path().join("g.csv"), Mode::Replace, false).await;
    assert_eq!((r.follows_added, r.follows_existing, r.removed), (0, 2, 0));
    // A replace that stops at a malformed line removes nothing and leaves no marks behind.
    let r = import(&s, &write(dir.path(), "bad.csv", "d,b\nnot a line\n"), Mode::Replace, false).await;
    assert!(r.failure.unwrap().starts_with("line 2"));
    assert_eq!(s.list("a", 2, 100).await, vec!["b"]);
    assert_eq!(s.list("d", 2, 100).await, vec!["b"], "what came before the bad line is applied");
    assert_eq!(s.query_i64("SELECT count(*) FROM bulk_marks"), 0, "no marks left behind");
    s.stop().await;
}

#[tokio::test]
async fn a_malformed_line_stops_with_its_number_after_applying_what_came_before() {
    let s = spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "g.csv", "a,b\nb,c\na,b,yesterday\nc,a\n");
    let r = import(&s, &f, Mode::Merge, false).await;
    assert!(!r.complete);
    let failure = r.failure.clone().unwrap();
    assert!(failure.starts_with("line 3:") && failure.contains("FollowTime"), "{failure}");
    assert_eq!(r.lines, 2);
    assert_eq!(r.follows_added, 2);
    assert!(r.summary().contains("line 3"), "{}", r.summary());
    assert_eq!(s.list("a", 2, 100).await, vec!["b"]);
    assert!(s.list("c", 2, 100).await.is_empty(), "nothing after the bad line");
    // JSON lines: an unknown field and a bad UserID are refused too, with their line.
    let f = write(dir.path(), "g.ndjson", "{\"From_Account\":\"a\",\"To_Account\":\"c\"}\n{\"From_Account\":\"a\",\"To_Account\":\"\"}\n");
    let r = import(&s, &f, Mode::Merge, false).await;
    assert!(r.failure.unwrap().starts_with("line 2: To_Account"));
    // A cut-short export is caught by its last line.
    let f = write(dir.path(), "cut.ndjson", "{\"UserID\":\"a\"}\n{\"End\":true,\"Accounts\":2,\"Follows\":0}\n");
    assert!(import(&s, &f, Mode::Merge, false).await.failure.unwrap().contains("line 2"));
    s.stop().await;
}

/// Mutual follows whose other half is already stored, comes earlier in the same batch, or belongs
/// to an account with a long list (the import reads reverse edges a batch at a time).
#[tokio::test]
async fn mutuals_are_found_whether_the_reverse_edge_is_stored_or_in_the_same_batch() {
    let s = spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = String::new();
    for i in 0..10 {
        first += &format!("a,b{i},{}\n", 1_700_000_000 + i);
    }
    for i in 0..1000 {
        first += &format!("fan{i},star,1700000000\n");
    }
    assert!(import(&s, &write(dir.path(), "1.csv", &first), Mode::Merge, false).await.complete);
    let mut second = String::from("p,q,1700000050\n");
    for i in 0..10 {
        second += &format!("b{i},a,1700000100\n");
    }
    second += "b10,a,1700000100\nq,p,1700000060\n";
    for i in 0..5 {
        second += &format!("star,fan{i},1700000200\n");
    }
    let r = import(&s, &write(dir.path(), "2.csv", &second), Mode::Merge, false).await;
    assert!(r.complete && r.rejected == 0, "{r:?}");
    assert_eq!(r.follows_added, 18);
    assert_eq!(s.counts("a").await, (11, 10, 10));
    let mutual = list_full(&s, "a", 3).await;
    let mut got: Vec<(String, u64)> = mutual.into_iter().map(|(u, t, _)| (u, t)).collect();
    got.sort();
    let want: Vec<(String, u64)> = (0..10).map(|i| (format!("b{i}"), 1_700_000_100)).collect();
    assert_eq!(got, want, "a mutual relation began with the later follow");
    assert_eq!(s.counts("star").await, (1000, 5, 5));
    assert_eq!(s.counts("fan0").await, (1, 1, 1));
    assert_eq!(s.counts("fan5").await, (0, 1, 0));
    assert_eq!(s.counts("p").await, (1, 1, 1));
    assert_eq!(list_full(&s, "q", 3).await.into_iter().map(|(u, t, _)| (u, t)).collect::<Vec<_>>(), vec![("p".to_owned(), 1_700_000_060)]);
    s.stop().await;
}

#[tokio::test]
async fn limits_are_respected_and_over_limit_edges_reported() {
    let s = spawn().await;
    let dir = tempfile::tempdir().unwrap();
    // App B: max_following = 2, max_mutual = 1.
    let f = write(dir.path(), "g.csv", "a,b\na,c\na,d\nx,x\nb,a\nc,a\n");
    let args = ImportArgs::new(&f);
    let r = client::import(&target(&s, APP_B, KEY_B), &args, running()).await.unwrap();
    assert!(r.complete);
    assert_eq!(r.follows_added, 3);
    let codes: Vec<(u64, u32)> = r.rejected_lines.iter().map(|l| (l.line, l.code)).collect();
    // c → a would make a's second mutual follow.
    assert_eq!(codes, vec![(3, 32100), (4, 30001), (6, 32103)]);
    let r = s.call_app(APP_B, KEY_B, "follow/follow_get_info", json!({"From_Account": "a", "To_Account": ["a"]})).await;
    assert_eq!(r["FollowInfo"][0]["FollowingCount"], 2);
    assert_eq!(r["FollowInfo"][0]["MutualFollowingCount"], 1);
    s.stop().await;
}

#[tokio::test]
async fn webhooks_only_with_the_flag_and_exactly_the_owed_ones() {
    let s = spawn_with(&hook("http://127.0.0.1:9/hook", ""), "").await;
    s.import(&["a", "z"]).await;
    assert_ok(&s.follow("a", &["z"]).await);
    let baseline = s.events().len();
    let dir = tempfile::tempdir().unwrap();
    let mut csv: String = (0..25).map(|i| format!("a,t{i}\n")).collect();
    csv += "a,z\n";
    let f = write(dir.path(), "g.csv", &csv);
    import(&s, &f, Mode::Merge, false).await;
    assert_eq!(s.events().len(), baseline, "no webhook without --webhooks");

    let s2 = spawn_with(&hook("http://127.0.0.1:9/hook", ""), "").await;
    s2.import(&["a", "z"]).await;
    assert_ok(&s2.follow("a", &["z"]).await);
    let r = import(&s2, &f, Mode::Merge, true).await;
    assert_eq!(r.follows_added, 25);
    let events: Vec<_> = s2.events().into_iter().skip(baseline).collect();
    let targets: Vec<Vec<String>> = events
        .iter()
        .map(|(cmd, from, body)| {
            assert_eq!((cmd.as_str(), from.as_str()), ("Follow.CallbackAfterFollowAdd", "a"));
            body["FollowList"].as_array().unwrap().iter().map(|t| t["To_Account"].as_str().unwrap().to_owned()).collect()
        })
        .collect();
    let expected: Vec<String> = (0..25).map(|i| format!("t{i}")).collect();
    assert_eq!(targets, vec![expected[..20].to_vec(), expected[20..].to_vec()], "the added edges only, 20 an event");
    // replace with --webhooks: one delete event for what it removed.
    let f = write(dir.path(), "r.csv", "a,z\n");
    let before = s2.events().len();
    let r = import(&s2, &f, Mode::Replace, true).await;
    assert_eq!(r.removed, 25);
    let deletes: Vec<_> = s2.events().into_iter().skip(before).collect();
    let removed: usize = deletes
        .iter()
        .map(|(cmd, _, body)| {
            assert_eq!(cmd, "Follow.CallbackAfterFollowDelete");
            body["To_Account"].as_array().unwrap().len()
        })
        .sum();
    assert_eq!(removed, 25);
    s.stop().await;
    s2.stop().await;
}

#[tokio::test]
async fn an_interrupted_import_resumes_where_it_stopped() {
    let s = spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let csv: String = (0..9).map(|i| format!("a{i},b{},{}\n", i % 3, 1_700_000_000 + i)).collect();
    let f = write(dir.path(), "g.csv", &csv);
    let (stop_tx, stop) = watch::channel(false);
    stop_tx.send(true).unwrap();
    let args = ImportArgs { batch: 2, ..ImportArgs::new(&f) };
    let r = client::import(&target(&s, APP_A, KEY_A), &args, stop).await.unwrap();
    assert!(r.interrupted && !r.complete);
    assert_eq!((r.lines, r.follows_added), (2, 2), "stopped after the batch in flight");
    assert!(dir.path().join("g.csv.followd-import").exists());
    let r = client::import(&target(&s, APP_A, KEY_A), &args, running()).await.unwrap();
    assert!(r.complete);
    assert_eq!((r.lines, r.follows_added, r.follows_existing), (9, 9, 0), "the report covers both runs");
    assert_eq!(s.counts("b0").await, (3, 0, 0));
    s.stop().await;
}

#[tokio::test]
async fn the_bulk_api_checks_the_caller_and_its_input() {
    let s = spawn().await;
    let url = |path: &str, id: &str, sig: &str| format!("http://{}{path}?sdkappid={APP_A}&identifier={id}&usersig={sig}", s.addr);
    let user = sig(KEY_A, APP_A, "alice");
    for path in ["/bulk/v1/export", "/bulk/v1/import", "/bulk/v1/sweep"] {
        assert_fail(&s.post_raw(&url(path, "alice", &user), "{}").await, 60010);
        assert_fail(&s.post_raw(&url(path, ADMIN, "garbage"), "{}").await, 70003);
        // Another app's key signs nothing here.
        assert_fail(&s.post_raw(&url(path, ADMIN, &sig(KEY_B, APP_A, ADMIN)), "{}").await, 70009);
    }
    let admin = sig(KEY_A, APP_A, ADMIN);
    let import_url = url("/bulk/v1/import", ADMIN, &admin);
    assert_fail(&s.post_raw(&import_url, "not json").await, 60003);
    assert_fail(&s.post_raw(&import_url, r#"{"Follows":[{"From_Account":"a","To_Account":""}]}"#).await, 70402);
    assert_fail(&s.post_raw(&import_url, r#"{"Follows":[{"From_Account":"a","To_Account":"b","FollowTimeUs":-1}]}"#).await, 70402);
    assert_fail(&s.post_raw(&url("/bulk/v1/sweep", ADMIN, &admin), r#"{"Run":1,"Cursor":"x"}"#).await, 70402);
    let r = s.call("follow/follow_get_info", json!({"From_Account": "a", "To_Account": ["a"]})).await;
    assert_fail(&r, 30003);
    // App B's export does not show app A's graph.
    s.import(&["a", "b"]).await;
    assert_ok(&s.follow("a", &["b"]).await);
    // A sweep of a run that marked nothing would empty the graph: refused unless asked for.
    let sweep = url("/bulk/v1/sweep", ADMIN, &admin);
    assert_fail(&s.post_raw(&sweep, r#"{"Run":5,"Cursor":""}"#).await, 70402);
    assert_eq!(s.list("a", 2, 100).await, vec!["b"]);
    // Not POST: the REST API's refusal.
    let r = s.http.get(&sweep).send().await.unwrap();
    assert_fail(&r.json().await.unwrap(), 60002);
    let dir = tempfile::tempdir().unwrap();
    client::export(&target(&s, APP_B, KEY_B), Some(&dir.path().join("b.ndjson")), true, running()).await.unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("b.ndjson")).unwrap().lines().count(), 2);
    // An import of a file without follows in replace mode does empty the app's graph.
    let empty = write(dir.path(), "empty.csv", "From_Account,To_Account\n");
    let r = import(&s, &empty, Mode::Replace, false).await;
    assert_eq!((r.complete, r.removed), (true, 1));
    assert!(s.list("a", 2, 100).await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn migrate_copies_every_following_list_and_resumes_after_an_interruption() {
    let from = spawn().await;
    let users = names(12);
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    from.import(&refs).await;
    assert_ok(&from.call("im_open_login_svc/account_import", json!({"UserID": "u5", "Nick": "Five"})).await);
    for (i, u) in users.iter().enumerate() {
        // Several follows per user within the same second, in an order unlike the UserIDs'.
        let targets: Vec<&str> = refs.iter().rev().filter(|t| **t != u).take(3 + i % 4).copied().collect();
        for t in targets {
            assert_ok(&from.follow(u, &[t]).await);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut accounts: String = users.iter().map(|u| format!("{u}\n")).collect();
    accounts += "ghost\n";
    let accounts = write(dir.path(), "accounts.txt", &accounts);
    let dst = spawn().await;
    let args = MigrateArgs {
        from: format!("http://{}", from.addr),
        from_sdkappid: APP_A,
        from_key: KEY_A.into(),
        from_admin: ADMIN.into(),
        accounts,
        rate: 1000,
        webhooks: false,
        checkpoint: None,
        stop_after: Some(5),
        quiet: true,
    };
    let r = migrate::migrate(&target(&dst, APP_A, KEY_A), &args, running()).await.unwrap();
    assert!(r.interrupted && r.lines == 5, "{r:?}");
    let r = migrate::migrate(&target(&dst, APP_A, KEY_A), &MigrateArgs { stop_after: None, ..args.clone() }, running()).await.unwrap();
    assert!(r.complete, "{r:?}");
    assert_eq!(r.accounts, 12);
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].user, "ghost");
    assert!(r.failures[0].reason.contains("30003"), "{:?}", r.failures);
    assert!(r.summary().contains("ghost"));
    for u in &users {
        assert_eq!(list_full(&dst, u, 2).await, list_full(&from, u, 2).await, "{u}'s following list, in order, with times");
        assert_eq!(dst.counts(u).await.1, from.counts(u).await.1);
    }
    // A second complete run changes nothing.
    let r = migrate::migrate(&target(&dst, APP_A, KEY_A), &MigrateArgs { stop_after: None, ..args }, running()).await.unwrap();
    assert_eq!(r.follows_added, 0);
    assert!(dst.events().is_empty());
    from.stop().await;
    dst.stop().await;
}

#[tokio::test]
async fn migrate_waits_out_a_busy_source() {
    // The source allows 15 calls a second per API; migrate asks for far more and gets 60007s.
    let from = spawn_with("rate_limit_per_second = 15", "").await;
    let users = names(30);
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    from.import(&refs).await;
    let dir = tempfile::tempdir().unwrap();
    // Loaded in bulk: the bulk API has no rate limit.
    let csv: String = users[1..].iter().map(|u| format!("{u},u0\n")).collect();
    assert_eq!(import(&from, &write(dir.path(), "g.csv", &csv), Mode::Merge, false).await.follows_added, 29);
    let accounts = write(dir.path(), "accounts.txt", &users.join("\n"));
    let dst = spawn().await;
    let args = MigrateArgs {
        from: format!("http://{}", from.addr),
        from_sdkappid: APP_A,
        from_key: KEY_A.into(),
        from_admin: ADMIN.into(),
        accounts,
        rate: 1000,
        webhooks: false,
        checkpoint: None,
        stop_after: None,
        quiet: true,
    };
    let r = migrate::migrate(&target(&dst, APP_A, KEY_A), &args, running()).await.unwrap();
    assert!(r.complete && r.failures.is_empty(), "{r:?}");
    assert!(r.calls > 30, "some calls were refused and retried: {}", r.calls);
    assert_eq!(r.follows_added, 29);
    assert_eq!(dst.counts("u0").await, (29, 0, 0));
    from.stop().await;
    dst.stop().await;
}

#[tokio::test]
async fn an_export_is_one_snapshot_while_writes_go_on() {
    let s = std::sync::Arc::new(spawn().await);
    let users = names(300);
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    for chunk in refs.chunks(100) {
        s.import(chunk).await;
    }
    // Each call adds two follows in one transaction: a snapshot holds both or neither.
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..300usize {
                let (a, b) = (format!("u{}", (i + 1) % 300), format!("u{}", (i + 2) % 300));
                assert_ok(&s.follow(&format!("u{i}"), &[&a, &b]).await);
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = Vec::new();
    for k in 0.. {
        let done = writer.is_finished();
        let text = export(&s, &dir.path().join(format!("{k}.ndjson"))).await;
        let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
        for l in text.lines().filter(|l| l.starts_with("{\"From_Account\"")) {
            let v: Value = serde_json::from_str(l).unwrap();
            *per_user.entry(v["From_Account"].as_str().unwrap().to_owned()).or_default() += 1;
        }
        assert!(per_user.values().all(|n| *n == 2), "a user with half a call's follows: {per_user:?}");
        sizes.push(per_user.len());
        if done {
            break;
        }
    }
    writer.await.unwrap();
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert_eq!(sizes.last(), Some(&300));
    assert!(sizes.iter().any(|&n| n > 0 && n < 300), "no export ran while the writes went on: {sizes:?}");
    std::sync::Arc::try_unwrap(s).ok().unwrap().stop().await;
}
