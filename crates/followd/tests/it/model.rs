//! The property test: for any sequence of imports, follows, unfollows, deletions and steps of the
//! deletion jobs, the store's answers, counts, lists (in order) and owed webhook events equal those of
//! a plain in-memory model. Deletions use a chunk of two edges, so most of them span several chunks
//! and the other operations (re-imports included) run while they are unfinished.

use followd_graph::deletion;
use followd_graph::read::{self, Relation};
use followd_graph::write::{self, Limits, NewAccount, WriteContext};
use followd_graph::Store;
use followd_graph::{ListKind, Origin, Subscriptions, Uid};
use followd_protocol::{OptPlatform, UserId};
use followd_store::sqlite::Durability;
use followd_store::{CommitHooks, PgStore, SqliteStore};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const APP: u64 = 7;
const N: usize = 6;
/// The chunk budget of a deletion: two edges a transaction ([`CHUNK`]), as every deletion here owes
/// events.
const BUDGET: usize = 2 * deletion::EVENT_WEIGHT;
/// Edges a deletion removes per transaction.
const CHUNK: usize = 2;
/// Small limits, so that the limit checks meet accounts being deleted.
const LIMITS: Limits = Limits { max_following: Some(2), max_followers: None, max_mutual: Some(1) };

#[derive(Debug, Clone)]
pub enum Op {
    Import(Vec<usize>),
    Follow(usize, Vec<usize>),
    Unfollow(usize, Vec<usize>),
    Delete(Vec<usize>),
    /// One chunk of the n-th unfinished deletion (modulo their number).
    Purge(usize),
}

pub fn op() -> impl Strategy<Value = Op> {
    let users = || prop::collection::vec(0..N, 1..5);
    prop_oneof![
        1 => users().prop_map(Op::Import),
        4 => (0..N, users()).prop_map(|(a, t)| Op::Follow(a, t)),
        2 => (0..N, users()).prop_map(|(a, t)| Op::Unfollow(a, t)),
        1 => users().prop_map(Op::Delete),
        2 => (0..4usize).prop_map(Op::Purge),
    ]
}

fn uid(i: usize) -> UserId {
    UserId::parse(&format!("user{i}")).unwrap()
}

type Event = (String, String, Vec<String>);

/// The plain model. Accounts are the store's ids (a re-imported user is a new account); edges carry
/// the sequence number of the follow.
#[derive(Default)]
struct Model {
    /// Live user → its account.
    live: BTreeMap<usize, Uid>,
    /// Every account that still exists (live or being deleted) → its user.
    user_of: BTreeMap<Uid, usize>,
    /// Accounts being deleted, oldest first.
    deleting: Vec<Uid>,
    edges: BTreeMap<(Uid, Uid), u64>,
    seq: u64,
    events: Vec<Event>,
}

impl Model {
    fn name(&self, a: Uid) -> String {
        uid(self.user_of[&a]).to_string()
    }
    /// Edges as the API shows them: none with an account being deleted.
    fn visible(&self) -> impl Iterator<Item = (Uid, Uid, u64)> + '_ {
        self.edges.iter().map(|(&(s, d), &t)| (s, d, t)).filter(|(s, d, _)| !self.deleting.contains(s) && !self.deleting.contains(d))
    }
    fn following(&self, a: Uid) -> Vec<(u64, Uid)> {
        self.visible().filter(|e| e.0 == a).map(|(_, d, t)| (t, d)).collect()
    }
    fn followers(&self, a: Uid) -> Vec<(u64, Uid)> {
        self.visible().filter(|e| e.1 == a).map(|(s, _, t)| (t, s)).collect()
    }
    fn mutual(&self, a: Uid) -> Vec<(u64, Uid)> {
        self.following(a).into_iter().filter_map(|(t, b)| self.edges.get(&(b, a)).map(|&t2| (t.max(t2), b))).collect()
    }
    /// A list newest first, as the store must return it.
    fn list(&self, a: Uid, kind: ListKind) -> Vec<String> {
        let mut l = match kind {
            ListKind::Followers => self.followers(a),
            ListKind::Following => self.following(a),
            ListKind::Mutual => self.mutual(a),
        };
        l.sort_by_key(|e| std::cmp::Reverse(e.0));
        l.into_iter().map(|(_, u)| self.name(u)).collect()
    }
    fn event(&mut self, cmd: &str, from: Uid, targets: &[Uid]) {
        for chunk in targets.chunks(20) {
            let ev = (cmd.into(), self.name(from), chunk.iter().map(|t| self.name(*t)).collect());
            self.events.push(ev);
        }
    }
    /// The code `follow_add` gives `a → b` (both live), adding the edge when it is 0.
    fn follow(&mut self, a: Uid, b: Uid) -> u32 {
        if self.edges.contains_key(&(a, b)) {
            return 0;
        }
        let over = |limit: Option<i64>, n: usize| limit.is_some_and(|l| n as i64 >= l);
        if over(LIMITS.max_following, self.following(a).len()) {
            return 32100;
        }
        if self.edges.contains_key(&(b, a)) {
            if over(LIMITS.max_mutual, self.mutual(a).len()) {
                return 32102;
            }
            if over(LIMITS.max_mutual, self.mutual(b).len()) {
                return 32103;
            }
        }
        // An edge an old account of either user still holds with the other goes first, with its event.
        let old = |me: &Model, u: Uid| -> Vec<Uid> {
            let user = me.user_of[&u];
            std::iter::once(u).chain(me.deleting.iter().copied().filter(|d| me.user_of[d] == user)).collect()
        };
        for s in old(self, a) {
            for t in old(self, b) {
                if (s, t) != (a, b) && self.edges.remove(&(s, t)).is_some() {
                    self.event("Follow.CallbackAfterFollowDelete", s, &[t]);
                }
            }
        }
        self.seq += 1;
        self.edges.insert((a, b), self.seq);
        0
    }
    /// Removes up to `budget` edges of the account being deleted `d` as the store does (its follows by
    /// followee id, then its followers oldest first), appending them to `removed`; true when none is
    /// left, and then the account is gone.
    fn remove_edges(&mut self, d: Uid, budget: usize, removed: &mut Vec<(Uid, Uid)>) -> bool {
        let out: Vec<(Uid, Uid)> = self.edges.keys().filter(|e| e.0 == d).copied().collect();
        let mut inn: Vec<((Uid, Uid), u64)> = self.edges.iter().filter(|(e, _)| e.1 == d).map(|(e, t)| (*e, *t)).collect();
        inn.sort_by_key(|e| e.1);
        let all: Vec<(Uid, Uid)> = out.into_iter().chain(inn.into_iter().map(|e| e.0)).collect();
        for e in all.iter().take(budget) {
            self.edges.remove(e);
            removed.push(*e);
        }
        all.len() <= budget
    }
    /// The events of one transaction's removed edges: grouped by From_Account in the order met.
    fn removal_events(&mut self, removed: &[(Uid, Uid)]) {
        let mut groups: Vec<(Uid, Vec<Uid>)> = Vec::new();
        for &(s, d) in removed {
            match groups.iter_mut().find(|(f, _)| *f == s) {
                Some((_, v)) => v.push(d),
                None => groups.push((s, vec![d])),
            }
        }
        for (from, targets) in groups {
            self.event("Follow.CallbackAfterFollowDelete", from, &targets);
        }
    }
    fn finished(&mut self, d: Uid) {
        self.deleting.retain(|&x| x != d);
        self.user_of.remove(&d);
    }
}

fn distinct(v: &[usize]) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    v.iter().copied().filter(|x| seen.insert(*x)).collect()
}

fn cx() -> WriteContext {
    WriteContext {
        app: APP,
        limits: LIMITS,
        subscriptions: Subscriptions { add: true, delete: true },
        origin: Origin { client_ip: "127.0.0.1".into(), platform: OptPlatform::RestApi },
    }
}

async fn check(ts: &TestStore, m: &Model) {
    let store = ts.store();
    for a in 0..N {
        let user = uid(a);
        let u = user.clone();
        let info = followd_graph::read(store, move |v| read::follow_get_info(v, APP, &u, std::slice::from_ref(&u))).await;
        let Some(&me) = m.live.get(&a) else {
            assert!(info.is_err());
            continue;
        };
        let counts = info.unwrap()[0].1.unwrap();
        assert_eq!(counts.following as usize, m.following(me).len(), "{user} following");
        assert_eq!(counts.followers as usize, m.followers(me).len(), "{user} followers");
        assert_eq!(counts.mutual as usize, m.mutual(me).len(), "{user} mutual");
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
            assert_eq!(got, m.list(me, kind), "{user} {kind:?}");
        }
        let targets: Vec<UserId> = (0..N).map(uid).collect();
        let u = user.clone();
        let checks = followd_graph::read(store, move |v| read::follow_check(v, APP, &u, &targets)).await.unwrap();
        for (b, c) in checks.iter().enumerate() {
            let Some(&them) = m.live.get(&b) else {
                assert_eq!(c.code, 30003);
                continue;
            };
            let expect = match (m.edges.contains_key(&(me, them)), m.edges.contains_key(&(them, me))) {
                (false, false) => Relation::None,
                (false, true) => Relation::TheyFollowMe,
                (true, false) => Relation::IFollowThem,
                (true, true) => Relation::Mutual,
            };
            assert_eq!(c.relation, expect, "{a} vs {b}");
        }
    }
    let mut jobs = followd_graph::read(store, |v| Ok(v.deletions()?)).await.unwrap();
    jobs.sort();
    let mut expect = m.deleting.clone();
    expect.sort();
    assert_eq!(jobs, expect, "unfinished deletions");
}

fn stored_events(store: &TestStore) -> Vec<Event> {
    store
        .rows3("SELECT command, from_account, body FROM events ORDER BY id")
        .into_iter()
        .map(|(command, from, body)| {
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            let targets = match body.get("FollowList") {
                Some(l) => l.as_array().unwrap().iter().map(|i| i["To_Account"].as_str().unwrap().to_owned()).collect(),
                None => body["To_Account"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect(),
            };
            (command, from, targets)
        })
        .collect()
}

/// The live account of a user, as the store names it.
fn stored_uid(store: &TestStore, user: usize) -> Uid {
    let name = uid(user).to_string();
    store.one(&format!("SELECT id FROM accounts WHERE app = {APP} AND user_id = '{name}' AND deleted = {}", store.false_()))
}

/// The store under test, on either backend, with what the checks read from it directly.
#[allow(dead_code)] // the temp dir lives as long as the store in it
pub enum TestStore {
    Sqlite(SqliteStore, tempfile::TempDir),
    Pg(PgStore, crate::pg::TestDb),
}

impl TestStore {
    pub fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        TestStore::Sqlite(SqliteStore::open(dir.path(), Durability::Process, CommitHooks::default()).unwrap(), dir)
    }

    pub fn pg(admin: &str) -> TestStore {
        let db = crate::pg::TestDb::create(admin);
        TestStore::Pg(PgStore::open(&db.url, CommitHooks::default(), 2048).unwrap(), db)
    }

    pub fn store(&self) -> &dyn Store {
        match self {
            TestStore::Sqlite(s, _) => s,
            TestStore::Pg(s, _) => s,
        }
    }

    /// How the backend writes `false` in SQL.
    fn false_(&self) -> &'static str {
        match self {
            TestStore::Sqlite(..) => "0",
            TestStore::Pg(..) => "false",
        }
    }

    /// One integer.
    pub fn one(&self, sql: &str) -> i64 {
        let sql = sql.to_owned();
        match self {
            TestStore::Sqlite(s, _) => s.with_reader(|c| c.query_row(&sql, [], |r| r.get(0))).unwrap().unwrap(),
            TestStore::Pg(_, db) => db.with(move |c| c.query_one(sql.as_str(), &[]).unwrap().get(0)),
        }
    }

    /// Rows of three text columns.
    pub fn rows3(&self, sql: &str) -> Vec<(String, String, String)> {
        let sql = sql.to_owned();
        match self {
            TestStore::Sqlite(s, _) => s
                .with_reader(|c| {
                    c.prepare(&sql).unwrap().query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
                })
                .unwrap(),
            TestStore::Pg(_, db) => {
                db.with(move |c| c.query(sql.as_str(), &[]).unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
            }
        }
    }

    pub fn close(&self) {
        match self {
            TestStore::Sqlite(s, _) => s.close(),
            TestStore::Pg(s, _) => s.close(),
        }
    }
}

async fn apply(ts: &TestStore, m: &mut Model, op: Op) {
    let store = ts.store();
    match op {
        Op::Import(users) => {
            let accounts: Vec<NewAccount> = users.iter().map(|&u| NewAccount { user: uid(u), nick: None, face_url: None }).collect();
            followd_graph::write(store, move |tx| write::import_accounts(tx, APP, &accounts)).await.unwrap();
            for u in distinct(&users) {
                if !m.live.contains_key(&u) {
                    let a = stored_uid(ts, u);
                    assert!(!m.user_of.contains_key(&a), "a new account must not reuse the id of one that still exists");
                    m.live.insert(u, a);
                    m.user_of.insert(a, u);
                }
            }
        }
        Op::Follow(a, targets) | Op::Unfollow(a, targets) if !m.live.contains_key(&a) => {
            let t: Vec<UserId> = targets.iter().map(|&t| uid(t)).collect();
            let r = followd_graph::write(store, move |tx| write::follow_add(tx, &cx(), &uid(a), &t)).await;
            assert!(matches!(r, Err(followd_graph::GraphError::NoSuchAccount(_))));
        }
        Op::Follow(a, targets) => {
            let t: Vec<UserId> = targets.iter().map(|&t| uid(t)).collect();
            let got = followd_graph::write(store, move |tx| write::follow_add(tx, &cx(), &uid(a), &t)).await.unwrap();
            let me = m.live[&a];
            let mut changed = Vec::new();
            let expect: Vec<u32> = distinct(&targets)
                .into_iter()
                .map(|b| match m.live.get(&b).copied() {
                    None => 30003,
                    Some(_) if a == b => 30001,
                    Some(them) => {
                        let had = m.edges.contains_key(&(me, them));
                        let code = m.follow(me, them);
                        if code == 0 && !had {
                            changed.push(them);
                        }
                        code
                    }
                })
                .collect();
            assert_eq!(got.iter().map(|r| r.code).collect::<Vec<_>>(), expect);
            if !changed.is_empty() {
                m.event("Follow.CallbackAfterFollowAdd", me, &changed);
            }
        }
        Op::Unfollow(a, targets) => {
            let t: Vec<UserId> = targets.iter().map(|&t| uid(t)).collect();
            let got = followd_graph::write(store, move |tx| write::follow_delete(tx, &cx(), &uid(a), &t)).await.unwrap();
            let me = m.live[&a];
            let mut changed = Vec::new();
            let expect: Vec<u32> = distinct(&targets)
                .into_iter()
                .map(|b| {
                    let Some(&them) = m.live.get(&b) else {
                        return 30003;
                    };
                    if m.edges.remove(&(me, them)).is_some() {
                        changed.push(them);
                    }
                    0
                })
                .collect();
            assert_eq!(got.iter().map(|r| r.code).collect::<Vec<_>>(), expect);
            if !changed.is_empty() {
                m.event("Follow.CallbackAfterFollowDelete", me, &changed);
            }
        }
        Op::Delete(users) => {
            let t: Vec<UserId> = users.iter().map(|&u| uid(u)).collect();
            let got = followd_graph::write(store, move |tx| deletion::delete_accounts(tx, &cx(), &t, BUDGET)).await.unwrap();
            let mut expect = Vec::new();
            let mut tombstoned = Vec::new();
            for d in distinct(&users) {
                match m.live.remove(&d) {
                    None => expect.push(70107),
                    Some(a) => {
                        expect.push(0);
                        m.deleting.push(a);
                        tombstoned.push(a);
                    }
                }
            }
            // The API's own transaction removes up to one chunk, shared by the accounts in order.
            let mut removed = Vec::new();
            let mut finished = Vec::new();
            for &a in &tombstoned {
                let left = CHUNK.saturating_sub(removed.len());
                if m.remove_edges(a, left, &mut removed) {
                    finished.push(a);
                }
            }
            assert_eq!(got.results.iter().map(|r| r.code).collect::<Vec<_>>(), expect);
            assert_eq!((got.removed, got.unfinished), (removed.len(), tombstoned.len() - finished.len()));
            m.removal_events(&removed);
            finished.into_iter().for_each(|a| m.finished(a));
        }
        Op::Purge(_) if m.deleting.is_empty() => {}
        Op::Purge(n) => {
            let d = m.deleting[n % m.deleting.len()];
            let got = followd_graph::write(store, move |tx| deletion::purge(tx, d, BUDGET)).await.unwrap();
            let mut removed = Vec::new();
            let done = m.remove_edges(d, CHUNK, &mut removed);
            assert_eq!((got.removed, got.done), (removed.len(), done));
            m.removal_events(&removed);
            if done {
                m.finished(d);
            }
        }
    }
}

/// Applies `ops` to a fresh store and to the model, checking every answer after each, then finishes
/// every deletion and compares the events and what is left.
async fn run(ops: Vec<Op>) {
    run_on(&TestStore::sqlite(), ops).await
}

/// [`run`] on a given store.
pub async fn run_on(store: &TestStore, ops: Vec<Op>) {
    let mut m = Model::default();
    for op in ops {
        apply(store, &mut m, op).await;
        check(store, &m).await;
    }
    while !m.deleting.is_empty() {
        apply(store, &mut m, Op::Purge(0)).await;
    }
    check(store, &m).await;
    assert_eq!(stored_events(store), m.events);
    let count = |table: &str| -> usize { store.one(&format!("SELECT count(*) FROM {table}")) as usize };
    assert_eq!((count("accounts"), count("edges"), count("deletions")), (m.live.len(), m.edges.len(), 0));
    store.close();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_in_memory_model(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}

/// The cases random sequences rarely reach: a follow at the limit while a followed account is being
/// deleted (it no longer counts), and a re-import whose new edges outlive the old account's job.
#[tokio::test]
async fn a_deletion_spans_chunks_under_a_limit_and_a_re_import() {
    run(vec![
        Op::Import(vec![0, 1, 2, 3, 4]),
        Op::Follow(1, vec![0]),
        Op::Follow(0, vec![2, 3]),
        Op::Follow(4, vec![0]),
        Op::Follow(1, vec![2]),
        // 0 has four edges: the API's transaction removes its two follows, its followers remain.
        Op::Delete(vec![0]),
        // 1 follows 0 (being deleted) and 2: at the limit of 2 only if 0 still counted.
        Op::Follow(1, vec![3]),
        Op::Import(vec![0]),
        Op::Follow(0, vec![1]),
        Op::Follow(4, vec![0]),
        Op::Delete(vec![0]),
        Op::Import(vec![0]),
        Op::Follow(2, vec![0]),
        Op::Purge(0),
        Op::Follow(0, vec![2]),
        Op::Purge(1),
    ])
    .await;
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
