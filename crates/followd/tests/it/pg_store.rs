//! The store-level conformance suite on PostgreSQL: the model-based property test, migrations under
//! nodes that start at once, and several nodes (stores) writing one graph at once. Each test makes a
//! database of its own and skips, saying why, without `FOLLOWD_TEST_DATABASE_URL`.

use crate::model::{op, run_on, Op, TestStore};
use followd_graph::write::{self, Limits, NewAccount, WriteContext};
use followd_graph::{read, ListKind, Origin, Subscriptions};
use followd_protocol::{OptPlatform, UserId};
use followd_store::postgres::schema::SCHEMA_VERSION;
use followd_store::{CommitHooks, PgStore};
use proptest::prelude::*;
use std::sync::Arc;

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn pg_store_matches_the_in_memory_model(ops in prop::collection::vec(op(), 1..40)) {
        let Some(url) = crate::pg::url("pg_store_matches_the_in_memory_model") else { return Ok(()) };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let store = TestStore::pg(&url);
        rt.block_on(run_on(&store, ops));
        drop(rt);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_deletion_spans_chunks_under_a_limit_and_a_re_import() {
    let Some(url) = crate::pg::url("pg_deletion_spans_chunks_under_a_limit_and_a_re_import") else { return };
    let store = TestStore::pg(&url);
    run_on(
        &store,
        vec![
            Op::Import(vec![0, 1, 2, 3, 4]),
            Op::Follow(1, vec![0]),
            Op::Follow(0, vec![2, 3]),
            Op::Follow(4, vec![0]),
            Op::Follow(1, vec![2]),
            Op::Delete(vec![0]),
            Op::Follow(1, vec![3]),
            Op::Import(vec![0]),
            Op::Follow(0, vec![1]),
            Op::Delete(vec![0]),
            Op::Purge(0),
            Op::Follow(2, vec![1]),
            Op::Unfollow(1, vec![2]),
        ],
    )
    .await;
}

#[test]
fn nodes_that_start_at_once_migrate_once_and_a_newer_schema_is_refused() {
    let Some(url) = crate::pg::url("nodes_that_start_at_once_migrate_once_and_a_newer_schema_is_refused") else { return };
    let db = crate::pg::TestDb::create(&url);
    let nodes: Vec<_> = (0..4)
        .map(|_| {
            let u = db.url.clone();
            std::thread::spawn(move || PgStore::open(&u, CommitHooks::default(), 16).map(|s| s.close()))
        })
        .collect();
    for n in nodes {
        n.join().unwrap().unwrap();
    }
    let version: i64 = db.with(|c| c.query_one("SELECT version FROM followd_schema", &[]).unwrap().get(0));
    assert_eq!(version, SCHEMA_VERSION);
    // Opening again changes nothing; a schema from a newer followd is refused with a clear reason.
    PgStore::open(&db.url, CommitHooks::default(), 16).unwrap().close();
    db.with(|c| c.execute("UPDATE followd_schema SET version = version + 1", &[]).unwrap());
    let err = PgStore::open(&db.url, CommitHooks::default(), 16).err().expect("a newer schema must be refused").to_string();
    assert!(err.contains("newer than this followd knows"), "{err}");
}

fn user(i: usize) -> UserId {
    UserId::parse(&format!("u{i}")).unwrap()
}

const APP: u64 = 9;

fn cx(max_following: Option<i64>) -> WriteContext {
    WriteContext {
        app: APP,
        limits: Limits { max_following, max_followers: None, max_mutual: None },
        subscriptions: Subscriptions { add: true, delete: true },
        origin: Origin { client_ip: "127.0.0.1".into(), platform: OptPlatform::RestApi },
    }
}

/// Three stores on one database stand for three nodes: they follow and unfollow one celebrity (and
/// each other, making and breaking mutual pairs) at once, and one user races to its limit on every
/// node. Afterwards every counter equals its list, on every node, and the limit held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_counts_exact_and_limits_race_free() {
    let Some(url) = crate::pg::url("three_nodes_keep_counts_exact_and_limits_race_free") else { return };
    let db = crate::pg::TestDb::create(&url);
    let nodes: Vec<Arc<PgStore>> = (0..3).map(|_| Arc::new(PgStore::open(&db.url, CommitHooks::default(), 4096).unwrap())).collect();
    const USERS: usize = 60;
    let accounts: Vec<NewAccount> = (0..USERS).map(|i| NewAccount { user: user(i), nick: None, face_url: None }).collect();
    followd_graph::write(&*nodes[0], move |tx| write::import_accounts(tx, APP, &accounts)).await.unwrap();

    let mut tasks = Vec::new();
    for round in 0..4 {
        for i in 1..USERS {
            let node = nodes[(i + round) % 3].clone();
            tasks.push(tokio::spawn(async move {
                // Everyone follows the celebrity u0 and a neighbour; the celebrity follows some back;
                // odd rounds undo part of it.
                let targets = vec![user(0), user(i % (USERS - 1) + 1)];
                followd_graph::write(&*node, move |tx| write::follow_add(tx, &cx(None), &user(i), &targets)).await.unwrap();
                if round % 2 == 1 && i % 3 == 0 {
                    let t = vec![user(0)];
                    followd_graph::write(&*node, move |tx| write::follow_delete(tx, &cx(None), &user(i), &t)).await.unwrap();
                }
                if i % 4 == 0 {
                    let t = vec![user(i)];
                    followd_graph::write(&*node, move |tx| write::follow_add(tx, &cx(None), &user(0), &t)).await.unwrap();
                }
            }));
        }
    }
    // u1 tries to pass a limit of 5 from every node at once.
    for k in 0..30 {
        let node = nodes[k % 3].clone();
        tasks.push(tokio::spawn(async move {
            let t = vec![user(2 + k)];
            followd_graph::write(&*node, move |tx| write::follow_add(tx, &cx(Some(5)), &user(1), &t)).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Counters are checked against the lists with deltas waiting, then again once they are folded.
    for fold in [false, true] {
        if fold {
            // A node's heartbeat may be folding at the same moment (then this one skips): fold
            // until none is left.
            let mut left: i64 = -1;
            for _ in 0..50 {
                nodes[0].with_conn(followd_store::postgres::fold_counts).await.unwrap();
                left = db.with(|c| c.query_one("SELECT count(*) FROM count_deltas", &[]).unwrap().get(0));
                if left == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            assert_eq!(left, 0, "the fold left deltas behind");
        }
        for node in &nodes {
            for i in 0..USERS {
                let counts =
                    followd_graph::read(&**node, move |v| read::follow_get_info(v, APP, &user(i), &[user(i)])).await.unwrap()[0].1.unwrap();
                for (kind, want) in
                    [(ListKind::Followers, counts.followers), (ListKind::Following, counts.following), (ListKind::Mutual, counts.mutual)]
                {
                    let page = followd_graph::read(&**node, move |v| read::follow_get(v, APP, &user(i), kind, None, 1000)).await.unwrap();
                    assert_eq!(page.entries.len() as i64, want, "u{i} {kind:?} (folded: {fold})");
                }
            }
        }
    }
    let following_1: i64 = db
        .with(|c| c.query_one("SELECT count(*) FROM edges e JOIN accounts a ON a.id = e.src WHERE a.user_id = 'u1'", &[]).unwrap().get(0));
    assert!(following_1 <= 5 + 2, "u1 follows {following_1}: the limit of 5 (plus its two unlimited follows) raced");
    let mutual_rows: i64 = db.with(|c| c.query_one("SELECT count(*) FROM mutual m WHERE NOT EXISTS (SELECT 1 FROM edges WHERE src = m.a AND dst = m.b) OR NOT EXISTS (SELECT 1 FROM edges WHERE src = m.b AND dst = m.a)", &[]).unwrap().get(0));
    assert_eq!(mutual_rows, 0, "mutual rows without both edges");
    for n in nodes {
        tokio::task::spawn_blocking(move || n.close()).await.unwrap();
    }
}

/// A node's pending webhooks belong to it: another node's dispatcher does not load them while the
/// node lives, and adopts them, once, when its lease is gone (here: a node that stopped, which gives
/// its lease up at once; a killed node's lease runs out after `LEASE_MS`). Adopted events are handed
/// to the adopter, not read: it takes them a page at a time, in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_pending_webhooks_are_adopted_once() {
    use followd_graph::outbox::Outbox;
    let Some(url) = crate::pg::url("a_dead_nodes_pending_webhooks_are_adopted_once") else { return };
    let db = crate::pg::TestDb::create(&url);
    let a = Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap());
    let b = Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap());
    let c = Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap());
    let accounts: Vec<NewAccount> = (0..4).map(|i| NewAccount { user: user(i), nick: None, face_url: None }).collect();
    followd_graph::write(&*a, move |tx| write::import_accounts(tx, APP, &accounts)).await.unwrap();
    for i in 1..4 {
        let t = vec![user(i)];
        followd_graph::write(&*a, move |tx| write::follow_add(tx, &cx(None), &user(0), &t)).await.unwrap();
    }
    let on_a = a.load_pending(APP, 0, 100).await.unwrap();
    assert_eq!(on_a.len(), 3);
    assert!(b.load_pending(APP, 0, 100).await.unwrap().is_empty(), "another live node's events are not loaded");
    assert_eq!(b.adopt_orphans(100, &[APP]).await.unwrap(), 0, "a live node's events are not adopted");
    assert_eq!(b.pending_apps().await.unwrap(), Vec::<u64>::new());

    tokio::task::spawn_blocking({
        let a = a.clone();
        move || a.close()
    })
    .await
    .unwrap();
    assert_eq!(b.adopt_orphans(100, &[APP + 1]).await.unwrap(), 0, "events of an app the node does not serve are left");
    let (by_b, by_c) = tokio::join!(b.adopt_orphans(100, &[APP]), c.adopt_orphans(100, &[APP]));
    let (by_b, by_c) = (by_b.unwrap(), by_c.unwrap());
    assert!(by_b == 0 || by_c == 0, "one node adopts at a time: {by_b} and {by_c}");
    assert_eq!(by_b + by_c, 3, "each event adopted by exactly one node");
    let owner = if by_b == 0 { &c } else { &b };
    assert!(owner.load_pending(APP, 0, 100).await.unwrap().is_empty(), "handed events are not read back");
    assert_eq!(owner.pending_apps().await.unwrap(), vec![APP]);
    let taken = Arc::new(parking_lot::Mutex::new(Vec::new()));
    for (limit, want) in [(2, 2), (2, 1), (2, 0)] {
        let t = taken.clone();
        let n = owner.claim_handed(APP, limit, Box::new(move |events| t.lock().extend(events.into_iter().map(|e| e.id)))).await.unwrap();
        assert_eq!(n, want);
    }
    assert_eq!(*taken.lock(), on_a.iter().map(|e| e.id).collect::<Vec<_>>(), "taken once each, in id order");
    assert_eq!(owner.load_pending(APP, 0, 100).await.unwrap().len(), 3, "taken events are the adopter's own");
    for s in [b, c] {
        tokio::task::spawn_blocking(move || s.close()).await.unwrap();
    }
}

/// Two nodes run the same account's deletion job at once (each node's deletion task finds every
/// unfinished job): every edge is removed once, with one delete event, and no counter is
/// decremented twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_finishing_one_deletion_remove_each_edge_once() {
    use followd_graph::deletion;
    let Some(url) = crate::pg::url("two_nodes_finishing_one_deletion_remove_each_edge_once") else { return };
    let db = crate::pg::TestDb::create(&url);
    let nodes: Vec<Arc<PgStore>> = (0..2).map(|_| Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap())).collect();
    const FANS: usize = 40;
    let accounts: Vec<NewAccount> = (0..=FANS).map(|i| NewAccount { user: user(i), nick: None, face_url: None }).collect();
    followd_graph::write(&*nodes[0], move |tx| write::import_accounts(tx, APP, &accounts)).await.unwrap();
    for i in 1..=FANS {
        let t = vec![user(0)];
        followd_graph::write(&*nodes[i % 2], move |tx| write::follow_add(tx, &cx(None), &user(i), &t)).await.unwrap();
        if i % 3 == 0 {
            let t = vec![user(i)];
            followd_graph::write(&*nodes[0], move |tx| write::follow_add(tx, &cx(None), &user(0), &t)).await.unwrap();
        }
    }
    let budget = 3 * deletion::EVENT_WEIGHT;
    let star = vec![user(0)];
    let first = followd_graph::write(&*nodes[0], move |tx| deletion::delete_accounts(tx, &cx(None), &star, budget)).await.unwrap();
    assert_eq!(first.unfinished, 1);
    let uid: i64 = db.with(|c| c.query_one("SELECT account FROM deletions", &[]).unwrap().get(0));
    let mut tasks = Vec::new();
    for node in &nodes {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let p = followd_graph::write(&*node, move |tx| deletion::purge(tx, uid, budget)).await.unwrap();
                if p.done {
                    return;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in 1..=FANS {
        let counts =
            followd_graph::read(&*nodes[1], move |v| read::follow_get_info(v, APP, &user(i), &[user(i)])).await.unwrap()[0].1.unwrap();
        assert_eq!((counts.followers, counts.following, counts.mutual), (0, 0, 0), "u{i}");
    }
    let edges: i64 = db.with(|c| c.query_one("SELECT count(*) FROM edges", &[]).unwrap().get(0));
    assert_eq!(edges, 0);
    // Every removed edge is in exactly one delete event.
    let bodies: Vec<String> = db.with(|c| {
        c.query("SELECT body FROM events WHERE command = 'Follow.CallbackAfterFollowDelete'", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    let mut seen = std::collections::HashMap::new();
    for b in bodies {
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        let from = v["From_Account"].as_str().unwrap().to_owned();
        for t in v["To_Account"].as_array().unwrap() {
            *seen.entry((from.clone(), t.as_str().unwrap().to_owned())).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), FANS + FANS / 3, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "an edge in two delete events: {seen:?}");
    for n in nodes {
        tokio::task::spawn_blocking(move || n.close()).await.unwrap();
    }
}

/// The counters, edges and mutual rows of `u0..users` as the database holds them:
/// `(user, followers, following, mutual)` (deltas included) and the edge and mutual rows by name.
#[allow(clippy::type_complexity)]
fn stored_graph(db: &crate::pg::TestDb) -> (Vec<(String, i64, i64, i64)>, Vec<(String, String, i64)>, Vec<(String, String, i64)>) {
    db.with(|c| {
        let counts = c
            .query(
                "SELECT a.user_id, (a.followers + coalesce(sum(d.followers), 0))::bigint, (a.following + coalesce(sum(d.following), 0))::bigint, \
                 (a.mutual + coalesce(sum(d.mutual), 0))::bigint FROM accounts a LEFT JOIN count_deltas d ON d.uid = a.id \
                 WHERE NOT a.deleted GROUP BY a.id ORDER BY a.user_id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let mut pairs = |table: &str, x: &str, y: &str| -> Vec<(String, String, i64)> {
            c.query(
                &format!(
                    "SELECT s.user_id, d.user_id, e.t FROM {table} e JOIN accounts s ON s.id = e.{x} JOIN accounts d ON d.id = e.{y} \
                     ORDER BY 1, 2"
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
        };
        let edges = pairs("edges", "src", "dst");
        let mutual = pairs("mutual", "a", "b");
        (counts, edges, mutual)
    })
}

/// The writer keeps a batch's edge, mutual and mark rows back and sends them as one statement each:
/// a later step of the same transaction that reads them from the table (an account's deletion lists
/// its edges; the bulk sweep lists edges and marks) must still find them, and an edge removed and
/// added again in one transaction (so its mutual rows too) must end with the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_transaction_keeps_back_are_seen_by_its_own_later_reads() {
    use followd_graph::deletion;
    let Some(url) = crate::pg::url("rows_a_transaction_keeps_back_are_seen_by_its_own_later_reads") else { return };
    let db = crate::pg::TestDb::create(&url);
    let store = Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap());
    let accounts: Vec<NewAccount> = (0..6).map(|i| NewAccount { user: user(i), nick: None, face_url: None }).collect();
    followd_graph::write(&*store, move |tx| write::import_accounts(tx, APP, &accounts)).await.unwrap();
    // Committed before: u4 and u5 follow each other.
    followd_graph::write(&*store, |tx| {
        write::follow_add(tx, &cx(None), &user(4), &[user(5)])?;
        write::follow_add(tx, &cx(None), &user(5), &[user(4)])
    })
    .await
    .unwrap();
    let (_, before, _) = stored_graph(&db);
    let old_key = before.iter().find(|e| e.0 == "u4" && e.1 == "u5").unwrap().2;

    // One transaction: follows of u0 (one of them mutual), then u0's deletion with room to finish at
    // once, which removes them only if it sees them; u4 unfollows u5 and follows it again.
    let deleted = followd_graph::write(&*store, |tx| {
        write::follow_add(tx, &cx(None), &user(1), &[user(0)])?;
        write::follow_add(tx, &cx(None), &user(2), &[user(0), user(3)])?;
        write::follow_add(tx, &cx(None), &user(0), &[user(1), user(3)])?;
        let d = deletion::delete_accounts(tx, &cx(None), &[user(0)], 1000)?;
        write::follow_delete(tx, &cx(None), &user(4), &[user(5)])?;
        write::follow_add(tx, &cx(None), &user(4), &[user(5)])?;
        Ok(d)
    })
    .await
    .unwrap();
    assert_eq!((deleted.removed, deleted.unfinished), (4, 0), "{deleted:?}");
    let (counts, edges, mutual) = stored_graph(&db);
    let names = |v: &[(String, String, i64)]| v.iter().map(|e| (e.0.clone(), e.1.clone())).collect::<Vec<_>>();
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(names(&edges), vec![pair("u2", "u3"), pair("u4", "u5"), pair("u5", "u4")]);
    assert_eq!(names(&mutual), vec![pair("u4", "u5"), pair("u5", "u4")]);
    let new_key = edges.iter().find(|e| e.0 == "u4" && e.1 == "u5").unwrap().2;
    assert!(new_key > old_key, "the edge removed and added again keeps its old key {old_key}");
    assert!(mutual.iter().all(|m| m.2 == new_key), "the mutual rows do not carry the new key {new_key}: {mutual:?}");
    let c = |u: &str| counts.iter().find(|c| c.0 == u).map(|c| (c.1, c.2, c.3)).unwrap();
    assert_eq!([c("u1"), c("u2"), c("u3"), c("u4"), c("u5")], [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 1), (1, 1, 1)]);
    assert!(counts.iter().all(|c| c.0 != "u0"), "u0 was not removed: {counts:?}");

    // The bulk sweep in the transaction that marks: the marked edge is not listed as unmarked, the
    // new unmarked one is.
    let unmarked = followd_graph::write(&*store, |tx| {
        write::follow_add(tx, &cx(None), &user(3), &[user(2)])?;
        let (u4, u5) = (tx.lookup(APP, &user(4))?.unwrap(), tx.lookup(APP, &user(5))?.unwrap());
        tx.bulk_mark(77, u4, u5)?;
        let marked = tx.bulk_has_marks(77)?;
        let (_, rows) = tx.bulk_unmarked(APP, 77, None, 100)?;
        let mut names = Vec::new();
        for (s, d, _) in rows {
            names.push((tx.user_id(s)?.to_string(), tx.user_id(d)?.to_string()));
        }
        tx.bulk_forget(77, 100)?;
        Ok((marked, names))
    })
    .await
    .unwrap();
    assert!(unmarked.0, "the mark made in this transaction is not seen");
    assert_eq!(unmarked.1, vec![pair("u2", "u3"), pair("u3", "u2"), pair("u5", "u4")]);
    tokio::task::spawn_blocking(move || store.close()).await.unwrap();
}

/// A row kept back fails only when the batch's rows are sent: then the batch fails as a failed
/// statement always failed it (a database error answered, nothing of the transaction applied, no
/// retry of an error a retry cannot cure), and the writer goes on with the next batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_back_row_that_fails_when_sent_fails_its_batch_cleanly() {
    use followd_graph::{GraphError, StoreError};
    let Some(url) = crate::pg::url("a_kept_back_row_that_fails_when_sent_fails_its_batch_cleanly") else { return };
    let db = crate::pg::TestDb::create(&url);
    let store = Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap());
    let accounts: Vec<NewAccount> = (0..4).map(|i| NewAccount { user: user(i), nick: None, face_url: None }).collect();
    followd_graph::write(&*store, move |tx| write::import_accounts(tx, APP, &accounts)).await.unwrap();
    followd_graph::write(&*store, |tx| write::follow_add(tx, &cx(None), &user(1), &[user(0)])).await.unwrap();
    let before = stored_graph(&db);

    // A good follow, then an insert of an edge the table already holds (the rules never make one:
    // it stands for a row that another writer stored first).
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = runs.clone();
    let err = followd_graph::write(&*store, move |tx| {
        r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = write::follow_add(tx, &cx(None), &user(2), &[user(3), user(0)])?;
        let (u1, u0) = (tx.lookup(APP, &user(1))?.unwrap(), tx.lookup(APP, &user(0))?.unwrap());
        let key = tx.next_key();
        tx.insert_edge(u1, u0, key)?;
        Ok(out)
    })
    .await
    .expect_err("a duplicate edge must fail its transaction");
    let GraphError::Store(StoreError::Database(e)) = &err else { panic!("not a database error: {err:?}") };
    let code = e.downcast_ref::<postgres::Error>().and_then(|e| e.code()).cloned();
    assert_eq!(code, Some(postgres::error::SqlState::UNIQUE_VIOLATION), "{err:?}");
    assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 1, "a unique violation is not retried");
    assert_eq!(stored_graph(&db), before, "something of the failed transaction was applied");
    let events: i64 = db.with(|c| c.query_one("SELECT count(*) FROM events", &[]).unwrap().get(0));
    let first_events = events;

    // The writer goes on: the same follow alone commits, with its event.
    followd_graph::write(&*store, |tx| write::follow_add(tx, &cx(None), &user(2), &[user(3), user(0)])).await.unwrap();
    let (_, edges, _) = stored_graph(&db);
    assert_eq!(edges.len(), 3, "{edges:?}");
    let events: i64 = db.with(|c| c.query_one("SELECT count(*) FROM events", &[]).unwrap().get(0));
    assert_eq!(events, first_events + 1);
    tokio::task::spawn_blocking(move || store.close()).await.unwrap();
}

/// A job queued for [`a_batch_read_ahead_answers_as_its_jobs_one_by_one`], answering as text.
type Queued = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;

fn users(ids: &[usize]) -> Vec<UserId> {
    ids.iter().map(|&i| user(i)).collect()
}

/// A follow (`add`) or unfollow that says what it will read, as the API's are queued.
fn prefetched(store: &Arc<dyn followd_graph::Store>, add: bool, from: usize, to: &[usize], limit: Option<i64>) -> Queued {
    let (store, from, to, c) = (store.clone(), user(from), users(to), cx(limit));
    Box::pin(async move {
        let p = write::prefetch(&c, &from, &to, add);
        let r = followd_graph::try_write_prefetched(&*store, Some(p), move |tx| {
            if add {
                write::follow_add(tx, &c, &from, &to)
            } else {
                write::follow_delete(tx, &c, &from, &to)
            }
        })
        .await;
        format!("{r:?}")
    })
}

fn queued<R: std::fmt::Debug + Send + 'static>(
    store: &Arc<dyn followd_graph::Store>,
    f: impl FnMut(&mut dyn followd_graph::WriteTx) -> Result<R, followd_graph::GraphError> + Send + 'static,
) -> Queued {
    let store = store.clone();
    Box::pin(async move { format!("{:?}", followd_graph::write(&*store, f).await) })
}

/// Runs the jobs of [`a_batch_read_ahead_answers_as_its_jobs_one_by_one`] on `store`: their answers,
/// then every account's counters and follows.
async fn read_ahead_jobs(store: Arc<dyn followd_graph::Store>) -> Vec<String> {
    use followd_graph::deletion;
    let import = |ids: Vec<usize>| {
        let accounts: Vec<NewAccount> = ids.into_iter().map(|i| NewAccount { user: user(i), nick: None, face_url: None }).collect();
        move |tx: &mut dyn followd_graph::WriteTx| write::import_accounts(tx, APP, &accounts)
    };
    // Before the batch: u7 is being deleted (one edge of its three removed), so the batch's limits
    // count u0's follow of it as gone.
    followd_graph::write(&*store, import(vec![0, 1, 2, 3, 4, 5, 7])).await.unwrap();
    followd_graph::write(&*store, |tx| {
        write::follow_add(tx, &cx(None), &user(0), &[user(7)])?;
        write::follow_add(tx, &cx(None), &user(7), &[user(1), user(2)])
    })
    .await
    .unwrap();
    let d = followd_graph::write(&*store, |tx| deletion::delete_accounts(tx, &cx(None), &[user(7)], 1)).await.unwrap();
    assert_eq!(d.unfinished, 1, "{d:?}");

    // The batch: a first job holds the writer while the others queue behind it, in this order.
    let jobs: Vec<Queued> = vec![
        queued(&store, |_| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(())
        }),
        // u6 does not exist when the batch starts; the fourth job imports it.
        prefetched(&store, true, 0, &[1, 2, 6], Some(3)),
        queued(&store, import(vec![6])),
        prefetched(&store, true, 0, &[6, 3], Some(3)),
        prefetched(&store, true, 1, &[0], Some(3)),
        // u2 is found when the batch starts; the next job deletes it.
        queued(&store, |tx| deletion::delete_accounts(tx, &cx(None), &[user(2)], 1000)),
        prefetched(&store, true, 3, &[2, 1], Some(3)),
        prefetched(&store, false, 0, &[1], None),
        prefetched(&store, true, 0, &[1, 3, 3], Some(3)),
        prefetched(&store, true, 4, &[4, 5, 5, 9], Some(3)),
        prefetched(&store, true, 9, &[0], Some(3)),
        prefetched(&store, false, 5, &[0, 9], None),
        prefetched(&store, false, 2, &[0], None),
        prefetched(&store, true, 5, &[4, 0, 1, 3], Some(3)),
    ];
    let mut out = futures_util::future::join_all(jobs).await;
    let after = followd_graph::write(&*store, |tx| {
        let mut all = Vec::new();
        for i in 0..10 {
            let Some(u) = tx.lookup(APP, &user(i))? else { continue };
            let mut follows = Vec::new();
            for (d, _) in tx.out_edges(u, 100)? {
                follows.push(tx.user_id(d)?.to_string());
            }
            follows.sort();
            all.push(format!("u{i}: {:?} {follows:?}", tx.counts(u)?));
        }
        Ok(all)
    })
    .await
    .unwrap();
    out.extend(after);
    out
}

/// Follows and unfollows that say what they will read are queued at once, so that PostgreSQL's writer
/// runs them as one batch whose reads (accounts, pair locks, edges, counters, deletions) are made
/// together before its first job runs, between jobs that change what later ones read: an import of
/// a target the batch found absent, the deletion of one it found, a limit reached by earlier jobs (and
/// an edge of an account being deleted that it does not count), a pair unfollowed and followed again,
/// a follower that does not exist. Every answer, and the graph after them, equal the embedded
/// store's for the same jobs, which it runs one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_read_ahead_answers_as_its_jobs_one_by_one() {
    use followd_store::sqlite::Durability;
    use followd_store::SqliteStore;
    let Some(url) = crate::pg::url("a_batch_read_ahead_answers_as_its_jobs_one_by_one") else { return };
    let db = crate::pg::TestDb::create(&url);
    let pg = Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap());
    let on_pg = read_ahead_jobs(pg.clone()).await;
    // The eleven follows and unfollows of the batch (a job's turn may split it, never below ten).
    assert!(pg.read_ahead() >= 10, "only {} jobs were read ahead with others", pg.read_ahead());
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open(dir.path(), Durability::Process, CommitHooks::default()).unwrap());
    let on_sqlite = read_ahead_jobs(sqlite.clone()).await;
    for (i, (p, s)) in on_pg.iter().zip(&on_sqlite).enumerate() {
        assert_eq!(p, s, "answer {i} differs (PostgreSQL, then SQLite)");
    }
    assert_eq!(on_pg.len(), on_sqlite.len());
    tokio::task::spawn_blocking(move || {
        pg.close();
        sqlite.close();
    })
    .await
    .unwrap();
}

/// The counter fold works through the deltas a chunk of users at a time, resuming where its time
/// budget stopped it, and skips a user whose row a writer holds (its deltas wait for a later pass):
/// 2,500 users with two deltas each are folded exactly, the held one only once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_fold_goes_chunk_by_chunk_and_skips_held_rows() {
    use followd_store::postgres::{fold_counts, fold_some};
    let Some(url) = crate::pg::url("the_counter_fold_goes_chunk_by_chunk_and_skips_held_rows") else { return };
    let db = crate::pg::TestDb::create(&url);
    let store = Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap());
    let accounts: Vec<NewAccount> = (0..2500).map(|i| NewAccount { user: user(i), nick: None, face_url: None }).collect();
    followd_graph::write(&*store, move |tx| write::import_accounts(tx, APP, &accounts)).await.unwrap();
    let held: i64 = db.with(|c| {
        for _ in 0..2 {
            c.execute("INSERT INTO count_deltas(app, uid, followers, following, mutual) SELECT app, id, 1, 2, 3 FROM accounts", &[])
                .unwrap();
        }
        c.query_one("SELECT id FROM accounts WHERE user_id = 'u7'", &[]).unwrap().get(0)
    });
    // A writer holds u7's row (as a follow under a limit does) until told to finish.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = std::sync::mpsc::channel::<()>();
    let holder_url = db.url.clone();
    let holder = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&holder_url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", &[&held]).unwrap();
        locked.send(()).unwrap();
        released.recv().unwrap();
        tx.rollback().unwrap();
    });
    is_locked.recv().unwrap();
    // No time budget: each call folds one chunk (or nothing, when the heartbeat's fold holds the
    // turn), then says where the next one starts.
    // The cursor lives between calls, as in the heartbeat thread; it goes back to 0 after a pass.
    let (mut cursor, mut calls, mut wrapped) = (0i64, 0, 0);
    loop {
        let (rows, next) = store
            .with_conn(move |c| {
                let mut cursor = cursor;
                let rows = fold_some(c, &mut cursor, std::time::Duration::ZERO)?;
                Ok((rows, cursor))
            })
            .await
            .unwrap();
        assert!(rows <= 2 * 1000, "one call without budget folded {rows} rows, more than one chunk");
        assert!(next == 0 || next > cursor, "the cursor went from {cursor} back to {next} without ending a pass");
        wrapped += usize::from(next == 0 && cursor != 0);
        cursor = next;
        calls += 1;
        let left: i64 = db.with(|c| c.query_one("SELECT count(DISTINCT uid) FROM count_deltas", &[]).unwrap().get(0));
        if (left <= 1 && wrapped > 0) || calls > 200 {
            break;
        }
    }
    assert!(calls >= 3, "2,500 users were folded in {calls} calls of at most 1,000");
    let (left, held_left): (i64, i64) = db.with(move |c| {
        let r = c.query_one("SELECT count(*), count(*) FILTER (WHERE uid = $1) FROM count_deltas", &[&held]).unwrap();
        (r.get(0), r.get(1))
    });
    assert_eq!((left, held_left), (2, 2), "everything but the held row's deltas is folded");
    release.send(()).unwrap();
    holder.join().unwrap();
    for _ in 0..50 {
        store.with_conn(fold_counts).await.unwrap();
        if db.with(|c| c.query_one("SELECT count(*) FROM count_deltas", &[]).unwrap().get::<_, i64>(0)) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (n, wrong): (i64, i64) = db.with(|c| {
        let r = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE (followers, following, mutual) <> (2, 4, 6)) FROM accounts a \
                 WHERE NOT EXISTS (SELECT 1 FROM count_deltas d WHERE d.uid = a.id)",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    });
    assert_eq!((n, wrong), (2500, 0), "every account folded once, exactly");
    tokio::task::spawn_blocking(move || store.close()).await.unwrap();
}

/// Two nodes (stores `a` and `b`) on a database of two accounts, u0 and u1, while a connection of the
/// test holds the advisory lock of the pair (u0, u1): a write of that pair on either node waits.
struct DeletionRace {
    db: crate::pg::TestDb,
    a: Arc<dyn followd_graph::Store>,
    b: Arc<dyn followd_graph::Store>,
    u0: i64,
    release: std::sync::mpsc::Sender<()>,
    holder: std::thread::JoinHandle<()>,
}

impl DeletionRace {
    async fn start(url: &str) -> DeletionRace {
        let db = crate::pg::TestDb::create(url);
        let a: Arc<dyn followd_graph::Store> = Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap());
        let b: Arc<dyn followd_graph::Store> = Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap());
        let accounts: Vec<NewAccount> = (0..2).map(|i| NewAccount { user: user(i), nick: None, face_url: None }).collect();
        followd_graph::write(&*a, move |tx| write::import_accounts(tx, APP, &accounts)).await.unwrap();
        let (u0, u1): (i64, i64) = db.with(|c| {
            let id = |c: &mut postgres::Client, u: &str| c.query_one("SELECT id FROM accounts WHERE user_id = $1", &[&u]).unwrap().get(0);
            (id(c, "u0"), id(c, "u1"))
        });
        let key = followd_store::postgres::pair_key(u0, u1);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (locked, is_locked) = std::sync::mpsc::channel::<()>();
        let holder_url = db.url.clone();
        let holder = std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&holder_url, postgres::NoTls).unwrap();
            c.execute("SELECT pg_advisory_lock($1)", &[&key]).unwrap();
            locked.send(()).unwrap();
            released.recv().unwrap();
            c.execute("SELECT pg_advisory_unlock($1)", &[&key]).unwrap();
        });
        is_locked.recv().unwrap();
        DeletionRace { db, a, b, u0, release, holder }
    }

    /// Whether, within 10 s, some session waits for a lock whose type matches `what` (SQL).
    async fn waited(&self, what: &'static str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let n: i64 = self.db.with(move |c| {
                c.query_one(&format!("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype {what}"), &[]).unwrap().get(0)
            });
            if n > 0 {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Lets go of the pair's lock.
    fn release(&mut self) {
        let _ = self.release.send(());
    }

    /// Deletes u1 entirely through node `a`.
    async fn delete_u1(a: Arc<dyn followd_graph::Store>) -> followd_graph::deletion::Deleted {
        followd_graph::write(&*a, |tx| followd_graph::deletion::delete_accounts(tx, &cx(None), &[user(1)], 1000)).await.unwrap()
    }

    /// Asserts that no edge is left and that u0's `following` is 0.
    async fn ends_clean(self, what: &str) {
        let u0 = self.u0;
        let (edges, following): (i64, i64) = self.db.with(move |c| {
            let e = c.query_one("SELECT count(*) FROM edges", &[]).unwrap().get(0);
            let f = c
                .query_one("SELECT (a.following + coalesce((SELECT sum(following) FROM count_deltas WHERE uid = a.id), 0))::bigint FROM accounts a WHERE id = $1", &[&u0])
                .unwrap()
                .get::<_, i64>(0);
            (e, f)
        });
        assert_eq!((edges, following), (0, 0), "an edge or a count was left for the deleted account ({what})");
        self.holder.join().unwrap();
        let (a, b) = (self.a, self.b);
        tokio::task::spawn_blocking(move || {
            drop(a);
            drop(b);
        })
        .await
        .unwrap();
    }
}

/// Node B's follow has read its accounts' ids and waits (for a pair lock held elsewhere) while node
/// A deletes the target entirely; when it goes on, it finds the target gone (30003) and adds no edge
/// to an account that no longer exists (which would stay behind, invisible, with the follower's
/// `following` one too high).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_of_an_account_deleted_meanwhile_on_another_node_leaves_no_edge() {
    let Some(url) = crate::pg::url("a_follow_of_an_account_deleted_meanwhile_on_another_node_leaves_no_edge") else { return };
    let mut race = DeletionRace::start(&url).await;
    let follow = tokio::spawn(prefetched(&race.b, true, 0, &[1], None));
    assert!(race.waited("= 'advisory'").await, "node B's follow never waited for the pair lock");
    let d = DeletionRace::delete_u1(race.a.clone()).await;
    assert_eq!((d.removed, d.unfinished), (0, 0), "{d:?}");
    race.release();
    let answer = follow.await.unwrap();
    assert!(answer.contains("code: 30003"), "the follow of a deleted account answered {answer}");
    race.ends_clean(&format!("deletion: {d:?}")).await;
}

/// The same race with a bulk import: node B's import batch has read its accounts and waits for a pair
/// lock while node A deletes the followee. The deletion waits for the batch (which keeps the accounts
/// it names), and its pass then removes the batch's edge: no edge to the deleted account stays, and
/// the follower's `following` is back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_import_naming_an_account_deleted_meanwhile_on_another_node_leaves_no_edge() {
    bulk_import_against_a_deletion("a_bulk_import_naming_an_account_deleted_meanwhile_on_another_node_leaves_no_edge", false).await;
}

/// The same when the transaction had already looked the followee up without holding it (another job
/// of the writer's batch): the import holds it by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_import_holds_an_account_its_transaction_looked_up_before() {
    bulk_import_against_a_deletion("a_bulk_import_holds_an_account_its_transaction_looked_up_before", true).await;
}

async fn bulk_import_against_a_deletion(name: &str, looked_up: bool) {
    use followd_graph::bulk::{self, BulkFollow, BulkOptions};
    let Some(url) = crate::pg::url(name) else { return };
    let mut race = DeletionRace::start(&url).await;
    let import = tokio::spawn({
        let b = race.b.clone();
        async move {
            let follows = vec![BulkFollow { from: user(0), to: user(1), key: None }];
            let opts = BulkOptions { webhooks: false, replace_run: None };
            followd_graph::write(&*b, move |tx| {
                if looked_up {
                    // Cached by the transaction without a lock, as another job of the batch would.
                    tx.lookup(APP, &user(1))?;
                }
                bulk::import(tx, &cx(None), &[], &follows, opts)
            })
            .await
        }
    });
    assert!(race.waited("= 'advisory'").await, "node B's import never waited for the pair lock");
    let deletion = tokio::spawn(DeletionRace::delete_u1(race.a.clone()));
    // The deletion waits for the import's transaction (before the fix it went through at once).
    assert!(race.waited("<> 'advisory'").await, "the deletion never waited for the import's batch");
    assert!(!deletion.is_finished(), "the deletion ended while the import's batch was open");
    race.release();
    let imported = import.await.unwrap().unwrap();
    assert!(imported.rejected.is_empty(), "{imported:?}");
    let d = deletion.await.unwrap();
    assert_eq!(d.unfinished, 0, "{d:?}");
    race.ends_clean(&format!("deletion: {d:?}")).await;
}

/// A node without live clients is sent no edge changes (its writers skip `NOTIFY`): a follow on
/// node A reaches no listener while node B has none. Once B asks (as it does before its first
/// WebSocket client registers), A's next follow is sent. B's ask waits for a transaction that was
/// running when it turned its flag on (such a writer may have read it off), and only for that: a
/// second ask, with the flag on, returns at once whatever is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_sent_changes_only_once_it_asks_and_its_ask_outwaits_running_writes() {
    let Some(url) = crate::pg::url("a_node_is_sent_changes_only_once_it_asks_and_its_ask_outwaits_running_writes") else { return };
    let db = crate::pg::TestDb::create(&url);
    let a = Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap());
    let b = Arc::new(PgStore::open(&db.url, CommitHooks::default(), 64).unwrap());
    let accounts: Vec<NewAccount> = (0..4).map(|i| NewAccount { user: user(i), nick: None, face_url: None }).collect();
    followd_graph::write(&*a, move |tx| write::import_accounts(tx, APP, &accounts)).await.unwrap();
    let listening =
        |node: i64| db.with(move |c| c.query_one("SELECT listening FROM nodes WHERE id = $1", &[&node]).unwrap().get::<_, bool>(0));

    // A listener of its own counts what is sent on the change channel.
    let heard = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let listener = {
        let (u, heard) = (db.url.clone(), heard.clone());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&u, postgres::NoTls).unwrap();
            c.batch_execute("LISTEN followd_changes").unwrap();
            ready_tx.send(()).unwrap();
            while stop_rx.try_recv().is_err() {
                let mut n = c.notifications();
                let mut it = n.timeout_iter(std::time::Duration::from_millis(50));
                while let Ok(Some(_)) = postgres::fallible_iterator::FallibleIterator::next(&mut it) {
                    heard.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
    };
    ready_rx.recv().unwrap();
    let follow = |from: usize, to: usize| {
        let (a, t) = (a.clone(), vec![user(to)]);
        async move { followd_graph::write(&*a, move |tx| write::follow_add(tx, &cx(None), &user(from), &t)).await.unwrap() }
    };
    follow(0, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(heard.load(std::sync::atomic::Ordering::SeqCst), 0, "no node has live clients: no change is sent");
    assert!(!listening(b.node()));

    // A transaction that holds an id, as a writer's does from BEGIN on, stays open across B's ask.
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
    let hold = |held_tx: std::sync::mpsc::Sender<()>, end_rx: std::sync::mpsc::Receiver<()>| {
        let u = db.url.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&u, postgres::NoTls).unwrap();
            let mut tx = c.transaction().unwrap();
            tx.query_one("SELECT pg_current_xact_id()::text", &[]).unwrap();
            held_tx.send(()).unwrap();
            end_rx.recv().unwrap();
            tx.commit().unwrap();
        })
    };
    let holder = hold(held_tx, end_rx);
    held_rx.recv().unwrap();
    let ask = tokio::spawn({
        let b = b.clone();
        async move { b.prepare_live_client().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(listening(b.node()), "the flag is on before the wait");
    assert!(!ask.is_finished(), "the ask waits for a transaction that was running when the flag turned on");
    end_tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), ask).await.expect("the ask ends once that transaction has").unwrap().unwrap();
    holder.join().unwrap();

    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
    let holder = hold(held_tx, end_rx);
    held_rx.recv().unwrap();
    tokio::time::timeout(std::time::Duration::from_millis(300), b.prepare_live_client())
        .await
        .expect("with the flag on, an ask does not wait")
        .unwrap();
    end_tx.send(()).unwrap();
    holder.join().unwrap();

    follow(2, 1).await;
    let mut waited = 0;
    while heard.load(std::sync::atomic::Ordering::SeqCst) == 0 && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    assert!(heard.load(std::sync::atomic::Ordering::SeqCst) > 0, "B asked: A's change is sent");
    assert!(!listening(a.node()), "a node that did not ask is not marked");
    stop_tx.send(()).unwrap();
    listener.join().unwrap();
    for s in [a, b] {
        tokio::task::spawn_blocking(move || s.close()).await.unwrap();
    }
}
