//! The property test: for any sequence of imports, follows, unfollows and deletions, the store's
//! answers, counts, lists (in order) and owed webhook events equal those of a plain in-memory model.

use followd_graph::read::{self, Relation};
use followd_graph::write::{self, Limits, NewAccount, WriteContext};
use followd_graph::{ListKind, Origin, Subscriptions};
use followd_protocol::{OptPlatform, UserId};
use followd_store::sqlite::Durability;
use followd_store::{CommitHooks, SqliteStore};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const APP: u64 = 7;
const N: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    Import(Vec<usize>),
    Follow(usize, Vec<usize>),
    Unfollow(usize, Vec<usize>),
    Delete(Vec<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    let users = || prop::collection::vec(0..N, 1..5);
    prop_oneof![
        1 => users().prop_map(Op::Import),
        4 => (0..N, users()).prop_map(|(a, t)| Op::Follow(a, t)),
        2 => (0..N, users()).prop_map(|(a, t)| Op::Unfollow(a, t)),
        1 => users().prop_map(Op::Delete),
    ]
}

fn uid(i: usize) -> UserId {
    UserId::parse(&format!("user{i}")).unwrap()
}

/// The plain model: imported users, and edges with the sequence number of the follow.
#[derive(Default)]
struct Model {
    users: BTreeSet<usize>,
    edges: BTreeMap<(usize, usize), u64>,
    seq: u64,
    events: Vec<(String, String, Vec<String>)>,
}

impl Model {
    fn following(&self, a: usize) -> Vec<(u64, usize)> {
        self.edges.iter().filter(|((s, _), _)| *s == a).map(|((_, d), &t)| (t, *d)).collect()
    }
    fn followers(&self, a: usize) -> Vec<(u64, usize)> {
        self.edges.iter().filter(|((_, d), _)| *d == a).map(|((s, _), &t)| (t, *s)).collect()
    }
    fn mutual(&self, a: usize) -> Vec<(u64, usize)> {
        self.following(a).into_iter().filter_map(|(t, b)| self.edges.get(&(b, a)).map(|&t2| (t.max(t2), b))).collect()
    }
    /// A list newest first, as the store must return it.
    fn list(&self, a: usize, kind: ListKind) -> Vec<String> {
        let mut l = match kind {
            ListKind::Followers => self.followers(a),
            ListKind::Following => self.following(a),
            ListKind::Mutual => self.mutual(a),
        };
        l.sort_by_key(|e| std::cmp::Reverse(e.0));
        l.into_iter().map(|(_, u)| uid(u).to_string()).collect()
    }
    fn event(&mut self, cmd: &str, from: usize, targets: Vec<usize>) {
        for chunk in targets.chunks(20) {
            self.events.push((cmd.into(), uid(from).to_string(), chunk.iter().map(|t| uid(*t).to_string()).collect()));
        }
    }
}

fn distinct(v: &[usize]) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    v.iter().copied().filter(|x| seen.insert(*x)).collect()
}

fn cx() -> WriteContext {
    WriteContext {
        app: APP,
        limits: Limits::default(),
        subscriptions: Subscriptions { add: true, delete: true },
        origin: Origin { client_ip: "127.0.0.1".into(), platform: OptPlatform::RestApi },
    }
}

async fn check(store: &SqliteStore, m: &Model) {
    for a in 0..N {
        let user = uid(a);
        let exists = m.users.contains(&a);
        let u = user.clone();
        let info = followd_graph::read(store, move |v| read::follow_get_info(v, APP, &u, std::slice::from_ref(&u))).await;
        if !exists {
            assert!(info.is_err());
            continue;
        }
        let counts = info.unwrap()[0].1.unwrap();
        assert_eq!(counts.following as usize, m.following(a).len(), "{user} following");
        assert_eq!(counts.followers as usize, m.followers(a).len(), "{user} followers");
        assert_eq!(counts.mutual as usize, m.mutual(a).len(), "{user} mutual");
        for kind in [ListKind::Followers, ListKind::Following, ListKind::Mutual] {
            // Page size 2 exercises the cursors.
            let mut got = Vec::new();
            let mut cursor = None;
            loop {
                let u = user.clone();
                let page = followd_graph::read(store, move |v| read::follow_get(v, APP, &u, kind, cursor, 2)).await.unwrap();
                got.extend(page.entries.iter().map(|e| e.user.to_string()));
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(got, m.list(a, kind), "{user} {kind:?}");
        }
        let targets: Vec<UserId> = (0..N).map(uid).collect();
        let u = user.clone();
        let checks = followd_graph::read(store, move |v| read::follow_check(v, APP, &u, &targets)).await.unwrap();
        for (b, c) in checks.iter().enumerate() {
            if !m.users.contains(&b) {
                assert_eq!(c.code, 30003);
                continue;
            }
            let expect = match (m.edges.contains_key(&(a, b)), m.edges.contains_key(&(b, a))) {
                (false, false) => Relation::None,
                (false, true) => Relation::TheyFollowMe,
                (true, false) => Relation::IFollowThem,
                (true, true) => Relation::Mutual,
            };
            assert_eq!(c.relation, expect, "{a} vs {b}");
        }
    }
}

fn stored_events(store: &SqliteStore) -> Vec<(String, String, Vec<String>)> {
    store
        .with_reader(|c| {
            let mut st = c.prepare("SELECT command, from_account, body FROM events ORDER BY id").unwrap();
            st.query_map([], |r| {
                let body: serde_json::Value = serde_json::from_str(&r.get::<_, String>(2)?).unwrap();
                let targets = match body.get("FollowList") {
                    Some(l) => l.as_array().unwrap().iter().map(|i| i["To_Account"].as_str().unwrap().to_owned()).collect(),
                    None => body["To_Account"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect(),
                };
                Ok((r.get(0)?, r.get(1)?, targets))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        })
        .unwrap()
}

async fn apply(store: &SqliteStore, m: &mut Model, op: Op) {
    match op {
        Op::Import(users) => {
            let accounts: Vec<NewAccount> = users.iter().map(|&u| NewAccount { user: uid(u), nick: None, face_url: None }).collect();
            followd_graph::write(store, move |tx| write::import_accounts(tx, APP, &accounts)).await.unwrap();
            m.users.extend(users);
        }
        Op::Follow(a, targets) | Op::Unfollow(a, targets) if !m.users.contains(&a) => {
            let t: Vec<UserId> = targets.iter().map(|&t| uid(t)).collect();
            let r = followd_graph::write(store, move |tx| write::follow_add(tx, &cx(), &uid(a), &t)).await;
            assert!(matches!(r, Err(followd_graph::GraphError::NoSuchAccount(_))));
        }
        Op::Follow(a, targets) => {
            let t: Vec<UserId> = targets.iter().map(|&t| uid(t)).collect();
            let got = followd_graph::write(store, move |tx| write::follow_add(tx, &cx(), &uid(a), &t)).await.unwrap();
            let mut changed = Vec::new();
            let expect: Vec<u32> = distinct(&targets)
                .into_iter()
                .map(|b| {
                    if !m.users.contains(&b) {
                        30003
                    } else if a == b {
                        30001
                    } else {
                        if !m.edges.contains_key(&(a, b)) {
                            m.seq += 1;
                            m.edges.insert((a, b), m.seq);
                            changed.push(b);
                        }
                        0
                    }
                })
                .collect();
            assert_eq!(got.iter().map(|r| r.code).collect::<Vec<_>>(), expect);
            if !changed.is_empty() {
                m.event("Follow.CallbackAfterFollowAdd", a, changed);
            }
        }
        Op::Unfollow(a, targets) => {
            let t: Vec<UserId> = targets.iter().map(|&t| uid(t)).collect();
            let got = followd_graph::write(store, move |tx| write::follow_delete(tx, &cx(), &uid(a), &t)).await.unwrap();
            let mut changed = Vec::new();
            let expect: Vec<u32> = distinct(&targets)
                .into_iter()
                .map(|b| {
                    if !m.users.contains(&b) {
                        return 30003;
                    }
                    if m.edges.remove(&(a, b)).is_some() {
                        changed.push(b);
                    }
                    0
                })
                .collect();
            assert_eq!(got.iter().map(|r| r.code).collect::<Vec<_>>(), expect);
            if !changed.is_empty() {
                m.event("Follow.CallbackAfterFollowDelete", a, changed);
            }
        }
        Op::Delete(users) => {
            let t: Vec<UserId> = users.iter().map(|&u| uid(u)).collect();
            let got = followd_graph::write(store, move |tx| write::delete_accounts(tx, &cx(), &t)).await.unwrap();
            let mut expect = Vec::new();
            // From -> removed targets, in the order the store meets them: a deleted user's own edges,
            // oldest first, then the edges into it, oldest first.
            let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
            for d in distinct(&users) {
                if !m.users.remove(&d) {
                    expect.push(70107);
                    continue;
                }
                expect.push(0);
                let mut out: Vec<((usize, usize), u64)> = m.edges.iter().filter(|((s, _), _)| *s == d).map(|(k, v)| (*k, *v)).collect();
                let mut inn: Vec<((usize, usize), u64)> = m.edges.iter().filter(|((_, t), _)| *t == d).map(|(k, v)| (*k, *v)).collect();
                out.sort_by_key(|e| e.1);
                inn.sort_by_key(|e| e.1);
                let removed: Vec<(usize, usize)> = out.into_iter().chain(inn).map(|e| e.0).collect();
                for e in removed {
                    m.edges.remove(&e);
                    match groups.iter_mut().find(|(f, _)| *f == e.0) {
                        Some((_, v)) => v.push(e.1),
                        None => groups.push((e.0, vec![e.1])),
                    }
                }
            }
            assert_eq!(got.iter().map(|r| r.code).collect::<Vec<_>>(), expect);
            for (from, targets) in groups {
                m.event("Follow.CallbackAfterFollowDelete", from, targets);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_in_memory_model(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(dir.path(), Durability::Process, CommitHooks::default()).unwrap();
            let mut m = Model::default();
            for op in ops {
                apply(&store, &mut m, op).await;
                check(&store, &m).await;
            }
            assert_eq!(stored_events(&store), m.events);
            store.close();
        });
    }
}

#[tokio::test]
async fn concurrent_writers_are_group_committed_and_all_answered() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(dir.path(), Durability::Process, CommitHooks::default()).unwrap());
    let users: Vec<NewAccount> = (0..200).map(|i| NewAccount { user: uid(i), nick: None, face_url: None }).collect();
    followd_graph::write(&*store, move |tx| write::import_accounts(tx, APP, &users)).await.unwrap();
    let mut tasks = Vec::new();
    for a in 0..200usize {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let targets = vec![uid((a + 1) % 200), uid((a + 2) % 200)];
            followd_graph::write(&*store, move |tx| write::follow_add(tx, &cx(), &uid(a), &targets)).await.unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().iter().all(|r| r.code == 0));
    }
    let n: i64 = store.with_reader(|c| c.query_row("SELECT count(*) FROM edges", [], |r| r.get(0)).unwrap()).unwrap();
    assert_eq!(n, 400);
    let sum: i64 =
        store.with_reader(|c| c.query_row("SELECT sum(following) + sum(followers) FROM accounts", [], |r| r.get(0)).unwrap()).unwrap();
    assert_eq!(sum, 800);
    store.close();
}
