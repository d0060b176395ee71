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
/// its lease up at once; a killed node's lease runs out after `LEASE_MS`).
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
    assert!(b.adopt_orphans(100).await.unwrap().is_empty(), "a live node's events are not adopted");
    assert_eq!(b.pending_apps().await.unwrap(), Vec::<u64>::new());

    tokio::task::spawn_blocking({
        let a = a.clone();
        move || a.close()
    })
    .await
    .unwrap();
    let (by_b, by_c) = tokio::join!(b.adopt_orphans(100), c.adopt_orphans(100));
    let (by_b, by_c) = (by_b.unwrap(), by_c.unwrap());
    let mut adopted: Vec<i64> = by_b.iter().chain(&by_c).map(|e| e.id).collect();
    adopted.sort();
    assert_eq!(adopted, on_a.iter().map(|e| e.id).collect::<Vec<_>>(), "each event adopted by exactly one node");
    let owner = if by_b.is_empty() { &c } else { &b };
    assert_eq!(owner.load_pending(APP, 0, 100).await.unwrap().len(), by_b.len() + by_c.len());
    assert_eq!(owner.pending_apps().await.unwrap(), vec![APP]);
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
