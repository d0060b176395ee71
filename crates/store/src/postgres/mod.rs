//! The PostgreSQL store: one database shared by any number of followd nodes.
//!
//! It keeps the embedded store's shape, so the graph rules and every decision run unchanged: each
//! node has one writer thread that group-commits the write jobs queued while its previous batch was
//! committing (one transaction, one round trip for `COMMIT`), and a pool of reader connections that
//! run each read job in a `REPEATABLE READ` snapshot. The driver is `postgres`, the blocking client of
//! `tokio-postgres`: the graph rules are sync closures ([`WriteTx`]), so the writer is a plain thread
//! and the reads run on blocking threads, like the embedded store's.
//!
//! What keeps several nodes exact (READ COMMITTED, explicit locks):
//! - counters are changed by `UPDATE … SET n = n + delta`, never written back from a read, so no
//!   update is lost; a write transaction reads a user's counters `FOR NO KEY UPDATE`, so a limit check
//!   (`max_following`, `max_followers`, `max_mutual`) and the insert it allows cannot race another
//!   node's;
//! - a follow holds the accounts it names `FOR KEY SHARE` until it commits and a deletion's tombstone
//!   takes `FOR UPDATE`, so a deletion on another node either sees the follow's new edge or makes the
//!   follow find the account gone (for follows queued with their [`Prefetch`], as the API's are);
//! - the first look at a pair (`edge`) takes a transaction advisory lock on the unordered pair, so
//!   two nodes adding `a → b` and `b → a` at once cannot both miss the mutual relation;
//! - a mutual row is keyed and deleted by its pair, never by a recomputed time key, so clock skew
//!   between nodes cannot leave it behind;
//! - "newest first" is ordered by `(t, other id)`, a total order whatever the nodes' clocks;
//! - no cache outlives a transaction (another node may delete or re-import an account at any time);
//! - a batch that fails with a serialization failure (`40001`) or a deadlock (`40P01`) is run again,
//!   up to [`MAX_TRIES`] times; its jobs are answered only by the run that committed;
//! - a lost connection fails the batch with a database error (answered in the API's envelope) and the
//!   writer and the readers reconnect on their next use: no restart is needed.

mod outbox;
pub mod schema;

use followd_graph::outbox::StoredEvent;
use followd_graph::{
    AppId, Completion, Counts, Cursor, Deletion, EdgeChange, ExportRow, ListEntry, ListKind, NewEvent, Origin, Prefetch, Profile, ReadJob,
    ReadView, Store, StoreError, StoreResult, TimeKey, Uid, WriteJob, WriteTx,
};
use followd_protocol::{webhook, OptPlatform, UserId};
use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::sqlite::{CommitHooks, Threads};

/// The three counters of the accounts `a` of a query: their `accounts` columns plus their unfolded
/// deltas `d` (group by `a.id`).
macro_rules! counters {
    () => {
        "(a.followers + coalesce(sum(d.followers), 0))::bigint, (a.following + coalesce(sum(d.following), 0))::bigint, \
         (a.mutual + coalesce(sum(d.mutual), 0))::bigint FROM accounts a LEFT JOIN count_deltas d ON d.uid = a.id"
    };
}

/// The edges of the pairs `(src, dst)` given as two arrays `$1` (src) and `$2` (dst): rows
/// `(src, dst, t)` of those that exist. Each pair is one probe of the primary key on both columns:
/// the subquery is lateral and fenced (`OFFSET 0`), so the planner can neither join the arrays to a
/// scan of the whole table (it hashed or sorted all of `edges` for a batch of 2,560 pairs: 170 ms
/// instead of 8) nor reach a pair through `edges_in` (`dst, t, src`), which walks every follower of
/// `dst` (3.5 ms a pair with an account of 100,000 followers, when an `OR` of both directions made
/// that index look cheaper). The text form ([`pair_edges_of`]) is for multi-statement queries.
const PAIR_EDGES: &str = "SELECT x.s, x.d, e.t FROM unnest($1::bigint[], $2::bigint[]) AS x(s, d) \
     CROSS JOIN LATERAL (SELECT t FROM edges WHERE src = x.s AND dst = x.d OFFSET 0) e";

/// [`PAIR_EDGES`] run through its prepared form, with its arrays written in (integers only).
fn pair_edges_of(src: impl Iterator<Item = i64>, dst: impl Iterator<Item = i64>) -> String {
    let (src, dst): (Vec<i64>, Vec<i64>) = (src.collect(), dst.collect());
    execute(&PAIR_EDGES_OF, &[&src, &dst])
}

/// A statement of the writer's multi-statement queries. Each is prepared (`PREPARE`) on the writer's
/// connection when it connects and run as `EXECUTE name('{…}', …)` with its integer arrays written
/// in ([`execute`]): one round trip for several statements, as before, but planned once per
/// connection instead of at every batch (planning was about as much of PostgreSQL's time for a
/// batch as running it: 0.58 ms against 0.69 for 32 one-target follows, `EXPLAIN (ANALYZE,
/// SUMMARY)`). PostgreSQL's default `plan_cache_mode` plans the first five runs for their arguments,
/// then keeps the generic plan (checked with `EXPLAIN EXECUTE`: planning 0.002-0.006 ms from the
/// sixth run on); the session is left at the default, so the writer's other statements keep plans
/// made for their own arguments where PostgreSQL finds them better.
struct Batched {
    name: &'static str,
    sql: &'static str,
    /// Its parameters, all `bigint[]`.
    args: usize,
}

/// Declares a [`Batched`] statement.
macro_rules! batched {
    ($(#[$doc:meta])* $id:ident, $name:literal, $args:literal, $sql:expr) => {
        $(#[$doc])*
        const $id: Batched = Batched { name: $name, sql: $sql, args: $args };
    };
}

batched!(PAIR_EDGES_OF, "followd_pair_edges", 2, PAIR_EDGES);
batched!(
    /// Transaction advisory locks on the keys `$1` (pass them in key order, so that two transactions
    /// locking overlapping sets wait for each other instead of deadlocking).
    LOCK_KEYS,
    "followd_lock_keys",
    1,
    "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k"
);
batched!(
    /// The accounts whose counters a limit reads, locked in id order.
    LOCK_ACCOUNTS,
    "followd_lock_accounts",
    1,
    "SELECT id FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE"
);
batched!(
    /// The counters of several users, each row led by the user's id.
    COUNTS_OF_IDS,
    "followd_counts_of",
    1,
    concat!("SELECT a.id, ", counters!(), " WHERE a.id = ANY($1::bigint[]) GROUP BY a.id")
);
batched!(
    /// The accounts a follow names, kept until it commits (a deletion's tombstone waits for it).
    KEEP_ACCOUNTS,
    "followd_keep_accounts",
    1,
    "SELECT id FROM accounts WHERE id = ANY($1::bigint[]) AND NOT deleted ORDER BY id FOR KEY SHARE"
);
batched!(
    /// The unfinished deletions of the apps `$1`.
    DELETIONS_OF,
    "followd_deletions_of",
    1,
    "SELECT app, account FROM deletions WHERE app = ANY($1::bigint[]) ORDER BY app, created_ms, account"
);
batched!(
    /// Each pair a probe of the primary key on both columns, as in [`PAIR_EDGES`].
    DELETE_EDGES,
    "followd_delete_edges",
    2,
    "DELETE FROM edges WHERE ctid = ANY(ARRAY(SELECT e.ctid FROM unnest($1::bigint[], $2::bigint[]) AS x(s, d) \
          CROSS JOIN LATERAL (SELECT ctid FROM edges WHERE src = x.s AND dst = x.d OFFSET 0) e))"
);
batched!(
    INSERT_EDGES,
    "followd_insert_edges",
    4,
    "INSERT INTO edges(app, src, dst, t) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])"
);
batched!(
    /// By the pair, not by the key: a key recomputed from two follow times taken on nodes with skewed
    /// clocks could name no row.
    DELETE_MUTUAL,
    "followd_delete_mutual",
    2,
    "DELETE FROM mutual WHERE ctid = ANY(ARRAY(SELECT m.ctid FROM unnest($1::bigint[], $2::bigint[]) AS x(a, b) \
          CROSS JOIN LATERAL (SELECT ctid FROM mutual WHERE a = x.a AND b = x.b OFFSET 0) m))"
);
batched!(
    INSERT_MUTUAL,
    "followd_insert_mutual",
    4,
    "INSERT INTO mutual(app, a, b, t) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])"
);
batched!(
    INSERT_MARKS,
    "followd_insert_marks",
    3,
    "INSERT INTO bulk_marks(run, src, dst) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) ON CONFLICT DO NOTHING"
);
batched!(
    /// Counter deltas, to be folded into `accounts` later ([`fold_counts`]).
    INSERT_DELTAS,
    "followd_insert_deltas",
    4,
    "INSERT INTO count_deltas(app, uid, followers, following, mutual) \
          SELECT a.app, x.uid, x.f, x.g, x.m FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) AS x(uid, f, g, m) \
          CROSS JOIN LATERAL (SELECT app FROM accounts WHERE id = x.uid OFFSET 0) a"
);
const BATCHED: [&Batched; 12] = [
    &PAIR_EDGES_OF,
    &LOCK_KEYS,
    &LOCK_ACCOUNTS,
    &COUNTS_OF_IDS,
    &KEEP_ACCOUNTS,
    &DELETIONS_OF,
    &DELETE_EDGES,
    &INSERT_EDGES,
    &DELETE_MUTUAL,
    &INSERT_MUTUAL,
    &INSERT_MARKS,
    &INSERT_DELTAS,
];

/// Prepares every [`Batched`] statement on the writer's connection (once per connection). A server
/// session that a session-mode pooler hands on without `DISCARD ALL` may hold them already, perhaps
/// from another version: those are replaced. (A transaction-mode pooler cannot carry SQL-level
/// prepared statements from one transaction to the next: not supported, as the README says.)
fn prepare_batched(c: &mut Conn) -> Result<(), postgres::Error> {
    let mut sql = String::new();
    for r in c.client.query("SELECT name FROM pg_prepared_statements WHERE name LIKE 'followd\\_%'", &[])? {
        let name: String = r.get(0);
        if BATCHED.iter().any(|b| b.name == name) {
            sql.push_str(&format!("DEALLOCATE {name}; "));
        }
    }
    for b in BATCHED {
        sql.push_str(&format!("PREPARE {}({}) AS {}; ", b.name, vec!["bigint[]"; b.args].join(", "), b.sql));
    }
    c.client.batch_execute(&sql)
}

/// Arrays of more elements than this, all together, are planned for (the statement's text with the
/// arrays written in) rather than run through the prepared generic plan.
const PLAN_ABOVE: usize = 128;

/// A failure of [`prepare_batched`], saying so.
fn prepare_failed(e: postgres::Error) -> StoreError {
    StoreError::database(std::io::Error::other(format!("preparing the writer's statements: {e}")))
}

/// A [`Batched`] statement with its arrays written in as literals (integers only, so nothing else
/// can be spliced into the query): `EXECUTE` of its prepared form for small arrays, where planning
/// is most of the cost; its own text for large ones, where a plan made for the arrays ran faster
/// (20-target follows and unfollows, `followd-bench`: 5-25% fewer edges/s with generic plans).
fn execute(b: &Batched, arrays: &[&[i64]]) -> String {
    assert_eq!(arrays.len(), b.args, "{} takes {} arrays", b.name, b.args);
    let lits: Vec<String> = arrays.iter().map(|a| format!("'{{{}}}'", int_list(a.iter().copied()))).collect();
    if arrays.iter().map(|a| a.len()).sum::<usize>() > PLAN_ABOVE {
        let mut sql = b.sql.to_owned();
        // From the last parameter down, so `$1` never matches the start of `$10`; the inserted text
        // has no `$`, so one replacement cannot make another's parameter.
        for (i, lit) in lits.iter().enumerate().rev() {
            sql = sql.replace(&format!("${}", i + 1), lit);
        }
        return sql;
    }
    format!("EXECUTE {}({})", b.name, lits.join(", "))
}

/// Adds the [`execute`] of a [`Batched`] statement to a multi-statement query.
fn statement(out: &mut String, b: &Batched, arrays: &[&[i64]]) {
    out.push_str(&execute(b, arrays));
    out.push_str("; ");
}

/// The statement that takes the transaction advisory locks `keys` ([`LOCK_KEYS`]).
fn lock_keys_sql(keys: &[i64]) -> String {
    execute(&LOCK_KEYS, &[keys])
}

/// Bytes as lowercase hexadecimal digits.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[(b >> 4) as usize] as char, DIGITS[(b & 15) as usize] as char]).collect()
}

/// Integers as the inside of an array literal: `1,2,3`.
fn int_list(v: impl Iterator<Item = i64>) -> String {
    v.map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// The most write jobs one transaction takes. Each follow of a job holds a pair's advisory lock (and
/// each event a lane's) to COMMIT, in a lock table of 6,400 entries by default for the whole server:
/// 128 jobs of 20 targets are about 2,700 locks, which leaves room for a second node.
const MAX_BATCH: usize = 128;
/// What [`Store::max_pairs_per_job`] answers: well within the default lock table (6,400 entries)
/// shared by every connection of the server.
const MAX_PAIRS_PER_JOB: usize = 1_000;
/// How many times a batch is run when it keeps failing with a serialization failure or a deadlock.
pub const MAX_TRIES: usize = 8;
/// Reads running at once, each on its own blocking thread and connection.
const MAX_READERS: usize = 16;
/// How long a node's claim on its webhook events outlives its last heartbeat: past it, another node
/// adopts them.
pub const LEASE_MS: i64 = 10_000;
/// How long a new connection may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How often a node renews its lease.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);

fn db(e: postgres::Error) -> StoreError {
    StoreError::database(e)
}

/// Whether running the transaction again may succeed: a serialization failure, a deadlock, or a full
/// lock table (`53200`, "out of shared memory": the advisory locks of every connection share it, so
/// a batch of many jobs, or several nodes' batches at once, can fill it; the writer then runs the
/// batch's jobs one by one, each holding fewer locks, and backs off).
fn retryable(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::OUT_OF_MEMORY
    })
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Whether `e` ended the connection rather than a statement: no answer from the server (an I/O
/// error, a closed socket), or a `FATAL` one (the server process was stopped, perhaps after its
/// `COMMIT` completed). A statement's own error leaves the connection open and the transaction
/// uncommitted.
fn connection_ended(e: &postgres::Error, client: &Client) -> bool {
    client.is_closed()
        || e.as_db_error()
            .is_none_or(|d| matches!(d.parsed_severity(), Some(postgres::error::Severity::Fatal | postgres::error::Severity::Panic)))
}

/// The rows of one statement of [`Conn::int_results`].
type IntRows = Vec<Vec<Option<i64>>>;

/// Begins a write transaction of node `node` (`READ COMMITTED` whatever the server's default: each
/// statement sees what committed before it started), reads its id and the server process's, then
/// whether another node wants edge changes ([`Subscription`]); [`BEGIN_STATEMENTS`] statements.
///
/// - The ids: if the connection breaks while `COMMIT` is under way, [`Writer::resolve`] waits until
///   no server process runs that transaction any more. The id is taken at once (every write batch
///   writes, or locks a row, which takes one anyway).
/// - The flags decide whether the batch collects its changes and sends them
///   ([`PgWriteTx::notify_sql`]). They are read by a statement of their own, after the id is
///   taken: see [`wait_out`].
fn begin_sql(node: i64) -> String {
    format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_current_xact_id()::text::bigint, pg_backend_pid(); \
         SELECT count(*) FROM nodes WHERE listening AND id <> {node}"
    )
}

/// The statements of [`begin_sql`].
const BEGIN_STATEMENTS: usize = 3;

/// What the answer to [`begin_sql`] says: the transaction id and server process id, and whether
/// another node wants this transaction's edge changes (yes when unreadable).
fn begun(results: &[IntRows]) -> (Option<(i64, i64)>, bool) {
    let ids = match results.get(1).and_then(|r| r.first()).map(|r| &r[..]) {
        Some(&[Some(xid), Some(pid)]) => Some((xid, pid)),
        _ => None,
    };
    let others = results.get(2).and_then(|r| r.first()).and_then(|r| r.first().copied().flatten()).is_none_or(|n| n > 0);
    (ids, others)
}

/// The statements that lock a user's row and then read its counters (see [`PgWriteTx::counts`]).
fn lock_and_count(uid: Uid) -> String {
    format!("SELECT 1 FROM accounts WHERE id = {uid} FOR NO KEY UPDATE; {}", COUNTS.replace("$1", &uid.to_string()))
}

/// Reads the counters of [`COUNTS`] from a row of [`Conn::int_results`] (none: no such account).
fn counts_of(rows: &IntRows) -> StoreResult<Counts> {
    match rows.first().map(|r| &r[..]) {
        None => Ok(Counts::default()),
        Some(&[Some(followers), Some(following), Some(mutual)]) => Ok(Counts { followers, following, mutual }),
        Some(_) => Err(StoreError::database(std::io::Error::other("unreadable counters"))),
    }
}

/// A connection with its prepared statements.
pub struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    fn connect(url: &str) -> StoreResult<Self> {
        let mut config: postgres::Config = url.parse().map_err(db)?;
        // A database host that does not answer at all fails the write or read in bounded time
        // (the request's own deadline answers first) instead of holding the writer forever.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let client = config.connect(NoTls).map_err(db)?;
        Ok(Conn { client, statements: HashMap::new() })
    }

    fn prepare(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn query(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<postgres::Row>, postgres::Error> {
        let st = self.prepare(sql)?;
        self.client.query(&st, params)
    }

    fn query_opt(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<postgres::Row>, postgres::Error> {
        let st = self.prepare(sql)?;
        self.client.query_opt(&st, params)
    }

    fn execute(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, postgres::Error> {
        let st = self.prepare(sql)?;
        self.client.execute(&st, params)
    }

    /// Runs `sql`, several statements, in one round trip (the simple query protocol) and returns the
    /// rows of each statement, values as integers. In `READ COMMITTED` each statement takes a
    /// snapshot of its own when it starts, so a statement that follows a lock sees what the lock
    /// waited for, as when they are sent one by one. Only for SQL whose values are integers written
    /// in by this module (nothing a client sent is ever spliced into it).
    fn int_results(&mut self, sql: &str) -> Result<Vec<IntRows>, postgres::Error> {
        let (mut done, mut current) = (Vec::new(), Vec::new());
        for m in self.client.simple_query(sql)? {
            match m {
                postgres::SimpleQueryMessage::Row(r) => {
                    current.push((0..r.len()).map(|i| r.get(i).and_then(|v| v.parse().ok())).collect());
                }
                postgres::SimpleQueryMessage::CommandComplete(_) => done.push(std::mem::take(&mut current)),
                _ => {}
            }
        }
        Ok(done)
    }

    /// Runs `sql`, several statements on integers written in by this module, in one round trip (the
    /// simple query protocol), and returns how many rows each statement affected or returned.
    fn affected(&mut self, sql: &str) -> Result<Vec<u64>, postgres::Error> {
        Ok(self
            .client
            .simple_query(sql)?
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::CommandComplete(n) => Some(n),
                _ => None,
            })
            .collect())
    }

    /// The raw client, for tools and tests.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PgStore {
    /// This node's id for this run: it owns the webhook events it writes.
    node: i64,
    /// Woken when another node (or this one) handed events to this node.
    handed: Arc<tokio::sync::Notify>,
    /// Held by the writer from just before it sends `COMMIT` until the commit's events are with the
    /// commit hook. A take of handed events passes through it before passing them on: another node
    /// hands an event to this one only after this node's latest event of its lane committed, and in
    /// the moment between that `COMMIT` and the hook the handed event would overtake it.
    pub(crate) commit_gate: Arc<Mutex<()>>,
    heartbeat: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    listener: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    jobs: Mutex<Option<mpsc::Sender<Queued>>>,
    /// Jobs whose reads the writer made together with another job's ([`PgStore::read_ahead`]).
    read_ahead: Arc<std::sync::atomic::AtomicU64>,
    refused: std::sync::atomic::AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Tells the writer that the store closes ([`Writer::resolve`] stops waiting for the database).
    stopping: Arc<std::sync::atomic::AtomicBool>,
    readers: Arc<ReadPool>,
    hooks: CommitHooks,
    /// Whether the other nodes send this one their edge changes.
    subscription: Arc<Subscription>,
    /// One client at a time turns it on ([`PgStore::prepare_live_client`]); the others wait here,
    /// not on a reader's connection.
    subscribing: tokio::sync::Mutex<()>,
}

impl PgStore {
    /// Connects to `url`, runs the migrations, and starts the writer with a write queue of
    /// `write_queue` jobs.
    pub fn open(url: &str, hooks: CommitHooks, write_queue: usize) -> StoreResult<Self> {
        // The blocking client runs a runtime of its own, which may not start inside another one's
        // task: connecting and migrating happen on a thread of their own.
        let u = url.to_owned();
        let node = rand::random_range(1..i64::MAX);
        let conn = std::thread::spawn(move || {
            let mut conn = Conn::connect(&u)?;
            schema::migrate(&mut conn.client)?;
            // The lease first. The events of nodes whose lease ran out are adopted by the adoption
            // loop (at once, then every heartbeat): it knows which apps this node serves.
            renew(&mut conn, node, false).map_err(db)?;
            prepare_batched(&mut conn).map_err(prepare_failed)?;
            Ok::<_, StoreError>(conn)
        })
        .join()
        .map_err(|_| StoreError::database(std::io::Error::other("the migration thread panicked")))??;
        let (tx, rx) = mpsc::channel(write_queue.max(1));
        let read_ahead = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let ahead = read_ahead.clone();
        let writer_hooks = hooks.clone();
        let url_w = url.to_owned();
        let commit_gate = Arc::new(Mutex::new(()));
        let gate = commit_gate.clone();
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = std::thread::Builder::new()
            .name("followd-pg-writer".into())
            .spawn({
                let stopping = stopping.clone();
                move || {
                    let w = Writer {
                        url: url_w,
                        conn: Some(conn),
                        last_key: 0,
                        hooks: writer_hooks,
                        node,
                        read_ahead: ahead,
                        gate,
                        stopping,
                        batches: 0,
                        marked: false,
                    };
                    w.run(rx)
                }
            })
            .map_err(StoreError::database)?;
        let subscription = Arc::new(Subscription::default());
        let heartbeat = start_heartbeat(url.to_owned(), node, subscription.clone(), hooks.live_clients.clone())?;
        let handed = Arc::new(tokio::sync::Notify::new());
        let listener = start_listener(url.to_owned(), node, hooks.clone(), handed.clone(), subscription.clone())?;
        Ok(PgStore {
            node,
            handed,
            commit_gate,
            heartbeat: Mutex::new(Some(heartbeat)),
            listener: Mutex::new(Some(listener)),
            jobs: Mutex::new(Some(tx)),
            read_ahead,
            refused: 0.into(),
            writer: Mutex::new(Some(writer)),
            stopping,
            subscription,
            subscribing: tokio::sync::Mutex::new(()),
            readers: Arc::new(ReadPool {
                url: url.to_owned(),
                idle: Mutex::new(Vec::new()),
                running: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
            }),
            hooks,
        })
    }

    /// How many jobs so far had their reads made together with at least one other job's (a batch
    /// of several jobs that said what they read): for tests and metrics.
    pub fn read_ahead(&self) -> u64 {
        self.read_ahead.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The hooks this store fires after each commit.
    pub fn hooks(&self) -> &CommitHooks {
        &self.hooks
    }

    /// Whether the writer thread is running. PostgreSQL checkpoints by itself, so there is no
    /// checkpointer to die: it is reported running.
    pub fn threads(&self) -> Threads {
        let writer = self.writer.lock().as_ref().is_some_and(|h| !h.is_finished());
        Threads { writer, checkpointer: true }
    }

    /// Write jobs waiting for the writer, and API writes refused so far because the queue was full.
    pub fn write_queue(&self) -> (usize, u64) {
        let queued = self.jobs.lock().as_ref().map_or(0, |tx| tx.max_capacity() - tx.capacity());
        (queued, self.refused.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Stops taking writes, lets the writer commit everything queued, and waits for it.
    pub fn close(&self) {
        self.jobs.lock().take();
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
        for thread in [&self.heartbeat, &self.listener] {
            if let Some((stop, t)) = thread.lock().take() {
                drop(stop);
                let _ = t.join();
            }
        }
        // Closing a connection runs its runtime: off any async task.
        let idle = std::mem::take(&mut *self.readers.idle.lock());
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }

    /// This node's id (its webhook events carry it).
    pub fn node(&self) -> i64 {
        self.node
    }

    /// Takes over the pending webhook events of nodes whose lease ran out (a node that died or lost
    /// the database for longer than [`LEASE_MS`]), whole (app, From_Account) lanes at a time, up to
    /// `lanes` of them. They are handed to this node, not read: its dispatcher takes them through each
    /// app's share of the memory ([`followd_graph::outbox::Outbox::claim_handed`]), however large the
    /// dead node's backlog. Only events of `apps` (those this node serves) are adopted: a node
    /// configured without an app has no endpoint for it, and would not take them. Returns how many
    /// events moved.
    pub async fn adopt_orphans(&self, lanes: i64, apps: &[AppId]) -> StoreResult<u64> {
        let node = self.node;
        let apps: Vec<i64> = apps.iter().map(|&a| a as i64).collect();
        self.readers.run(move |c| adopt(c, node, lanes, &apps)).await
    }

    /// Makes sure the other nodes send this node their edge changes before a live client registers
    /// (see [`Subscription`]): at once when they already do, else one write and a wait for the
    /// transactions running meanwhile ([`wait_out`]: a few ms, at most 5 s when an unrelated
    /// transaction stays open). The client must register within [`LISTEN_LINGER_MS`].
    pub async fn prepare_live_client(&self) -> StoreResult<()> {
        use std::sync::atomic::Ordering;
        // Just after start, or while its connection is re-made, the listener may take a moment.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !self.subscription.hearing.load(Ordering::Acquire) {
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::database(std::io::Error::other(
                    "this node is not listening for the other nodes' changes (its LISTEN connection is down)",
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let on = || {
            self.subscription.on.load(Ordering::Acquire)
                && self.subscription.change.try_lock().is_some_and(|_turn| {
                    let on = self.subscription.on.load(Ordering::Acquire);
                    if on {
                        self.subscription.wanted_ms.store(now_micros() / 1000, Ordering::Relaxed);
                    }
                    on
                })
        };
        if on() {
            return Ok(());
        }
        let _one = self.subscribing.lock().await;
        if on() {
            return Ok(());
        }
        let (node, sub) = (self.node, self.subscription.clone());
        self.readers.run(move |c| subscribe(c, node, &sub)).await
    }

    /// Woken (`NOTIFY`) when events were handed to this node: tell the dispatcher.
    pub fn handed_signal(&self) -> Arc<tokio::sync::Notify> {
        self.handed.clone()
    }

    /// Runs a closure on a pooled connection on a blocking thread (for tools and tests).
    pub async fn with_conn<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<R, postgres::Error> + Send + 'static,
    ) -> StoreResult<R> {
        self.readers.run(move |c| f(c).map_err(db)).await
    }

    /// Runs `f` in its own transaction on a pooled connection, retrying serialization failures.
    async fn write_sql<R: Send + 'static>(&self, f: impl Fn(&mut Conn) -> Result<R, postgres::Error> + Send + 'static) -> StoreResult<R> {
        self.readers
            .run(move |c| {
                let mut tries = 0;
                loop {
                    tries += 1;
                    c.client.batch_execute("BEGIN").map_err(db)?;
                    let r = f(c).and_then(|v| c.client.batch_execute("COMMIT").map(|()| v));
                    match r {
                        Ok(v) => return Ok(v),
                        Err(e) => {
                            let _ = c.client.batch_execute("ROLLBACK");
                            if !(retryable(&e) && tries < MAX_TRIES) {
                                return Err(db(e));
                            }
                        }
                    }
                }
            })
            .await
    }

    fn submit(&self, job: Queued) -> StoreResult<()> {
        let r = match &*self.jobs.lock() {
            Some(tx) => tx.try_send(job),
            None => return Err(StoreError::Closed),
        };
        r.map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                StoreError::Busy
            }
            mpsc::error::TrySendError::Closed(_) => writer_gone(),
        })
    }
}

/// The accounts named `$2` in app `$1` (one of them `$3`, the follower), and for each the advisory
/// lock key of its pair with the follower (`NULL` for the follower), computed as [`pair_key`] does
/// (the product wraps at 64 bits in `numeric`), with every such lock taken by the same statement, in
/// key order. One statement: the ids it locks are the ids it returns.
const PREFETCH_ACCOUNTS: &str =
    "WITH acc AS MATERIALIZED (SELECT id, user_id FROM accounts WHERE app = $1 AND user_id = ANY($2) AND NOT deleted), \
     p AS MATERIALIZED (SELECT d.id, ((CASE WHEN m.v >= 9223372036854775808 THEN m.v - 18446744073709551616 ELSE m.v END)::bigint \
             # greatest(s.id, d.id)) AS k \
         FROM acc s JOIN acc d ON d.id <> s.id \
         CROSS JOIN LATERAL (SELECT mod(mod(least(s.id, d.id)::numeric * -7046029254386353131, 18446744073709551616) \
             + 18446744073709551616, 18446744073709551616) AS v) m \
         WHERE s.user_id = $3), \
     l AS MATERIALIZED (SELECT count(pg_advisory_xact_lock(k)) AS n FROM (SELECT DISTINCT k FROM p ORDER BY k) x) \
     SELECT acc.id, acc.user_id, p.k FROM acc LEFT JOIN p ON p.id = acc.id CROSS JOIN l";

/// The advisory lock key of the unordered pair `{a, b}` (public for tests and tools).
pub fn pair_key(a: Uid, b: Uid) -> i64 {
    let (lo, hi) = (a.min(b), a.max(b));
    lo.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64) ^ hi
}

/// An app's live accounts and the edges they hold (their `following`, unfolded deltas included), as
/// the SQLite store counts them: for the console's overview, a scan of the app's accounts.
const APP_TOTALS: &str = "SELECT (SELECT count(*) FROM accounts WHERE app = $1 AND NOT deleted)::bigint, \
     ((SELECT coalesce(sum(following), 0) FROM accounts WHERE app = $1 AND NOT deleted) + \
      (SELECT coalesce(sum(d.following), 0) FROM count_deltas d JOIN accounts a ON a.id = d.uid WHERE d.app = $1 AND NOT a.deleted))::bigint";

/// A user's counters.
const COUNTS: &str = concat!("SELECT ", counters!(), " WHERE a.id = $1 GROUP BY a.id");

/// The advisory lock key of the counter fold (the bytes of "followd3").
const FOLD_LOCK: i64 = 0x666f_6c6c_6f77_6433;

/// How many users' deltas one fold transaction takes: the rows it locks are held for its few
/// milliseconds only, so a writer that needs one of them (a follower's row, locked to check its
/// `max_following`) waits that long at most. One statement over every delta held some 70,000 rows
/// for 2-4 s under load, stalling every batch that touched one of them.
const FOLD_CHUNK: i64 = 1_000;

/// Folds every counter delta into `accounts` (a pass over all of them, chunk by chunk); returns the
/// rows folded. See [`fold_some`].
pub fn fold_counts(c: &mut Conn) -> Result<u64, postgres::Error> {
    fold_some(c, &mut 0, std::time::Duration::MAX)
}

/// Folds counter deltas into `accounts`, on one node at a time, in transactions of [`FOLD_CHUNK`]
/// users taken in id order after `*cursor`, until the pass reaches the last user with deltas (then
/// `*cursor` goes back to 0) or `budget` has passed (then the next call goes on from `*cursor`).
/// Each transaction removes the deltas it sees and adds them to their accounts in one statement, so
/// a reader sees a user's counters before or after it, never between; deltas committed meanwhile
/// wait for the next fold. Returns the rows folded.
pub fn fold_some(c: &mut Conn, cursor: &mut i64, budget: std::time::Duration) -> Result<u64, postgres::Error> {
    let started = std::time::Instant::now();
    let mut folded = 0;
    loop {
        let mut tx = c.client.transaction()?;
        let leader: bool = tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])?.get(0);
        if !leader {
            return Ok(folded);
        }
        // A plan compiled by JIT cost 400-660 ms a fold, more than the fold itself.
        tx.batch_execute("SET LOCAL jit = off")?;
        // Only the accounts whose rows it can lock at once: the fold never waits for a writer (which
        // holds the row locks of the followers whose limits it checks, in its own order), so the two
        // cannot deadlock and make PostgreSQL abort the writer's batch; the deltas of a locked
        // account wait for the next pass. Deltas whose account is gone are dropped. The first column
        // is the chunk's last user (NULL: no user after the cursor has deltas).
        let row = tx.query_one(
            "WITH u AS (SELECT DISTINCT uid FROM count_deltas WHERE uid > $1 ORDER BY uid LIMIT $2), \
                  l AS (SELECT a.id FROM accounts a WHERE a.id IN (SELECT uid FROM u) FOR NO KEY UPDATE OF a SKIP LOCKED), \
                  d AS (DELETE FROM count_deltas c WHERE c.uid IN (SELECT id FROM l) \
                        OR (c.uid IN (SELECT uid FROM u) AND NOT EXISTS (SELECT 1 FROM accounts x WHERE x.id = c.uid)) \
                        RETURNING uid, followers, following, mutual), \
                  s AS (SELECT uid, sum(followers) AS f, sum(following) AS g, sum(mutual) AS m FROM d GROUP BY uid), \
                  n AS (UPDATE accounts a SET followers = a.followers + s.f, following = a.following + s.g, mutual = a.mutual + s.m \
                        FROM s WHERE a.id = s.uid RETURNING 1) \
             SELECT (SELECT max(uid) FROM u), (SELECT count(*) FROM d)::bigint, (SELECT count(*) FROM u)::bigint",
            &[&*cursor, &FOLD_CHUNK],
        )?;
        tx.commit()?;
        let (last, rows, users): (Option<i64>, i64, i64) = (row.get(0), row.get(1), row.get(2));
        folded += rows as u64;
        match last {
            Some(last) if users == FOLD_CHUNK => *cursor = last,
            _ => {
                *cursor = 0;
                return Ok(folded);
            }
        }
        if started.elapsed() >= budget {
            return Ok(folded);
        }
    }
}

/// The channel on which nodes tell each other about committed edge changes.
const CHANGES_CHANNEL: &str = "followd_changes";
/// The channel that tells a node (the payload is its id) that events were handed to it.
const HANDED_CHANNEL: &str = "followd_handed";
/// The largest payload put in one notification (PostgreSQL's limit is 8000 bytes).
const MAX_PAYLOAD: usize = 7_000;

/// Encodes edge changes as notification payloads: the sending node on the first line, then one line
/// per change, `app TAB from TAB to TAB added TAB mutual` (UserIDs are printable ASCII, so neither a
/// tab nor a newline can occur in them).
pub fn encode_changes(node: i64, changes: &[(AppId, EdgeChange)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = format!("{node}");
    for (app, c) in changes {
        let line = format!("\n{app}\t{}\t{}\t{}\t{}", c.from.as_str(), c.to.as_str(), u8::from(c.added), u8::from(c.mutual));
        if cur.len() + line.len() > MAX_PAYLOAD {
            out.push(std::mem::replace(&mut cur, format!("{node}")));
        }
        cur.push_str(&line);
    }
    out.push(cur);
    out
}

/// Decodes a payload of [`encode_changes`]: the sending node and its changes (`None` if malformed).
pub fn decode_changes(payload: &str) -> Option<(i64, Vec<(AppId, EdgeChange)>)> {
    let mut lines = payload.split('\n');
    let node = lines.next()?.parse().ok()?;
    let mut changes = Vec::new();
    for line in lines {
        let mut f = line.split('\t');
        let app = f.next()?.parse().ok()?;
        let from = UserId::parse(f.next()?).ok()?;
        let to = UserId::parse(f.next()?).ok()?;
        let added = f.next()? == "1";
        let mutual = f.next()? == "1";
        if f.next().is_some() {
            return None;
        }
        changes.push((app, EdgeChange { from, to, added, mutual }));
    }
    Some((node, changes))
}

/// Hears the other nodes' edge changes (`LISTEN`) and passes them to this node's live clients, on a
/// connection of its own that it opens again whenever it is lost.
fn start_listener(
    url: String,
    node: i64,
    hooks: CommitHooks,
    handed: Arc<tokio::sync::Notify>,
    sub: Arc<Subscription>,
) -> StoreResult<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let t = std::thread::Builder::new()
        .name("followd-pg-listen".into())
        .spawn(move || {
            let mut conn: Option<Conn> = None;
            loop {
                match stopped.try_recv() {
                    Err(std::sync::mpsc::TryRecvError::Empty) => {}
                    _ => return,
                }
                if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
                    conn = match Conn::connect(&url).and_then(|mut c| {
                        c.client.batch_execute(&format!("LISTEN {CHANGES_CHANNEL}; LISTEN {HANDED_CHANNEL}")).map_err(db)?;
                        Ok(c)
                    }) {
                        Ok(c) => {
                            sub.hearing.store(true, std::sync::atomic::Ordering::Release);
                            Some(c)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for other nodes' changes; retrying");
                            let _ = stopped.recv_timeout(std::time::Duration::from_secs(1));
                            continue;
                        }
                    };
                }
                let c = conn.as_mut().expect("connected above");
                let mut heard = Vec::new();
                let mut failed = false;
                {
                    let mut notifications = c.client.notifications();
                    let mut iter = notifications.timeout_iter(std::time::Duration::from_millis(250));
                    loop {
                        match postgres::fallible_iterator::FallibleIterator::next(&mut iter) {
                            Ok(Some(n)) => heard.push(n),
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "lost the connection that listens for other nodes' changes");
                                failed = true;
                                break;
                            }
                        }
                        if heard.len() >= 256 {
                            break;
                        }
                    }
                }
                if failed {
                    sub.hearing.store(false, std::sync::atomic::Ordering::Release);
                    conn = None;
                }
                let listening = hooks.changes.receiver_count() > 0 && hooks.live_clients.load(std::sync::atomic::Ordering::Relaxed) > 0;
                // Handed events: woken at once; the heartbeat's look is the safety net.
                if heard.iter().any(|n| n.channel() == HANDED_CHANNEL && n.payload().parse() == Ok(node)) {
                    handed.notify_one();
                }
                for n in heard.into_iter().filter(|n| n.channel() == CHANGES_CHANNEL) {
                    match decode_changes(n.payload()) {
                        Some((from, _)) if from == node => {}
                        Some((_, changes)) if listening && !changes.is_empty() => {
                            let _ = hooks.changes.send(Arc::new(changes));
                        }
                        Some(_) => {}
                        None => tracing::warn!(channel = n.channel(), "a malformed change notification was ignored"),
                    }
                }
            }
        })
        .map_err(StoreError::database)?;
    Ok((stop, t))
}

/// Renews this node's lease. A row that was lost (the node was away so long that the others forgot
/// it) is written again with its [`Subscription`] flag, and said (`true`): while it was gone no
/// writer sent this node changes. An existing row's flag is left alone (only [`subscribe`] and
/// [`unsubscribe_idle`] change it).
fn renew(c: &mut Conn, node: i64, listening: bool) -> Result<bool, postgres::Error> {
    let now = now_micros() / 1000;
    let row = c.query_opt(
        "INSERT INTO nodes(id, seen_ms, started_ms, listening) VALUES ($1, $2, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms, listening = nodes.listening OR excluded.listening \
         RETURNING (xmax = 0)",
        &[&node, &now, &listening],
    )?;
    Ok(row.is_some_and(|r| r.get(0)))
}

/// Whether the other nodes send this node their edge changes: its row's `nodes.listening`, which a
/// writer reads as it begins ([`begin_sql`]) and again as it ends ([`PgWriteTx::notify_sql`]). A
/// writer collects and sends none while no other node wants them, so a node without live clients costs the others no
/// `NOTIFY` (one lock for every notifying commit of the cluster, held through its WAL flush) and
/// reads none. It is turned on before the node's first live client registers
/// ([`PgStore::prepare_live_client`]), and off by the heartbeat once no client has been there or
/// wanted it for [`LISTEN_LINGER_MS`].
#[derive(Default)]
pub(crate) struct Subscription {
    /// Whether the flag is on and was waited out ([`wait_out`]): a client may register at once.
    on: std::sync::atomic::AtomicBool,
    /// Whether the database may hold the flag on (set before it is written, cleared once it is
    /// written off): the heartbeat turns it off even when turning it on failed half-way.
    stored: std::sync::atomic::AtomicBool,
    /// Whether this node's `LISTEN` connection is up: a client that registers while it is down
    /// would miss changes, so none does.
    hearing: std::sync::atomic::AtomicBool,
    /// Held while the flag changes, and by a client that finds it on until it has said it wants it
    /// ([`Subscription::wanted_ms`]): turning it off never slips between the two.
    change: Mutex<()>,
    /// When a live client was last there or about to register (ms since the epoch).
    wanted_ms: std::sync::atomic::AtomicI64,
}

/// How long a node keeps receiving the other nodes' changes after its last live client left: a
/// client that reconnects finds the flag on (no write, no wait).
pub const LISTEN_LINGER_MS: i64 = 60_000;

/// How long turning the flag on waits at most for the transactions that may have read it off.
const SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Turns `node`'s flag on, then waits out the transactions that may have read it off
/// ([`wait_out`]): every later transaction reads it on.
fn subscribe(c: &mut Conn, node: i64, sub: &Subscription) -> StoreResult<()> {
    // The heartbeat holds it for one statement; one that hangs on a dead connection does not
    // hold this reader forever.
    let Some(_turn) = sub.change.try_lock_for(std::time::Duration::from_secs(10)) else {
        return Err(StoreError::database(std::io::Error::other("the heartbeat did not let go of the live-client flag")));
    };
    sub.wanted_ms.store(now_micros() / 1000, std::sync::atomic::Ordering::Relaxed);
    if sub.on.load(std::sync::atomic::Ordering::Acquire) {
        return Ok(());
    }
    sub.stored.store(true, std::sync::atomic::Ordering::Release);
    let now = now_micros() / 1000;
    c.execute(
        "INSERT INTO nodes(id, seen_ms, started_ms, listening) VALUES ($1, $2, $2, true) ON CONFLICT (id) DO UPDATE SET listening = true",
        &[&node, &now],
    )
    .map_err(db)?;
    wait_out(c, SUBSCRIBE_WAIT)?;
    sub.on.store(true, std::sync::atomic::Ordering::Release);
    Ok(())
}

/// Waits until every transaction that holds an id and was running when this is called has ended,
/// at most `limit` (then says so and returns). It waits for every such transaction of the server,
/// in any database: a followd writer, one of another client, or one waiting for a lock.
///
/// A writer reads the flags after it took its id ([`begin_sql`]); one that read a flag off before
/// it turned on took its id before then. A fence id taken now, in a transaction of its own that
/// ends at once, is newer than that writer's, and a snapshot taken after the fence ended lists
/// every transaction below it still running (a snapshot lists the running ids below its `xmax`,
/// which is past every ended one: an id taken after the last ended one would be missing from a
/// snapshot without the fence). Past the limit, such a writer is still caught at its end
/// (`followd_no_listener`, [`PgWriteTx::notify_sql`]) unless it is already in its last round trip.
fn wait_out(c: &mut Conn, limit: std::time::Duration) -> StoreResult<()> {
    let fence: i64 = c.query_opt("SELECT pg_current_xact_id()::text::bigint", &[]).map_err(db)?.map_or(0, |r| r.get(0));
    let running: Vec<i64> = c
        .query("SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) x WHERE x::text::bigint < $1", &[&fence])
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    while !running.is_empty() {
        let left: i64 = c
            .query_opt("SELECT count(*) FROM unnest($1::bigint[]) x WHERE pg_xact_status(x::text::xid8) = 'in progress'", &[&running])
            .map_err(db)?
            .map_or(0, |r| r.get(0));
        if left == 0 {
            break;
        }
        if started.elapsed() >= limit {
            tracing::warn!(
                transactions = left,
                "live clients: transactions older than this node's request for the other nodes' changes are still running; \
                 connecting the client anyway (a followd write not yet in its last round trip is run again and sent)"
            );
            break;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// Turns `node`'s flag off when it may be on and no live client has been there or wanted it for
/// [`LISTEN_LINGER_MS`] (`clients`: those connected now); returns whether it did. The node forgets
/// it first: if the answer is lost, the next client asks again (and waits) rather than trust a
/// flag the database may no longer hold; a failed write is tried again at the next heartbeat.
fn unsubscribe_idle(c: &mut Conn, node: i64, sub: &Subscription, clients: usize, now_ms: i64) -> Result<bool, postgres::Error> {
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    if clients > 0 {
        sub.wanted_ms.store(now_ms, Relaxed);
        return Ok(false);
    }
    let idle = || sub.stored.load(Acquire) && now_ms - sub.wanted_ms.load(Relaxed) >= LISTEN_LINGER_MS;
    if !idle() {
        return Ok(false);
    }
    let _turn = sub.change.lock();
    if !idle() {
        return Ok(false);
    }
    sub.on.store(false, Release);
    c.execute("UPDATE nodes SET listening = false WHERE id = $1", &[&node])?;
    sub.stored.store(false, Release);
    Ok(true)
}

/// Lanes a node adopts at most at once (each takes a lock until the adoption commits).
pub const ADOPT_LANES: i64 = 1000;

/// The advisory lock key of adoption (the bytes of "followd4"): one node adopts at a time.
const ADOPT_LOCK: i64 = 0x666f_6c6c_6f77_6434;

/// Moves the pending events of nodes without a live lease to `node`, whole lanes at a time (at most
/// `lanes` of them), handed, and returns how many moved. The lanes' locks are held while they move,
/// so a writer that is adding an event to one of them either commits first (and its event moves too)
/// or finds the lane owned by `node` afterwards: a lane never ends up split between two nodes. As the
/// lanes' latest events are handed, later events of theirs are handed too, so none overtakes them.
fn adopt(c: &mut Conn, node: i64, lanes: i64, apps: &[i64]) -> StoreResult<u64> {
    let live_since = now_micros() / 1000 - LEASE_MS;
    c.client.batch_execute("BEGIN").map_err(db)?;
    let moved = match adopt_locked(c, node, live_since, lanes, apps) {
        Ok(moved) => moved,
        Err(e) => {
            let _ = c.client.batch_execute("ROLLBACK");
            return Err(db(e));
        }
    };
    c.client.batch_execute("COMMIT").map_err(db)?;
    if moved > 0 {
        tracing::info!(events = moved, "adopted the pending webhooks of a node whose lease ran out");
    }
    // Leases long gone are forgotten (their events were adopted above or by another node).
    // Their commit marks go with them (only then: this runs every heartbeat).
    if c.execute("DELETE FROM nodes WHERE seen_ms < $1", &[&(live_since - 100 * LEASE_MS)]).map_err(db)? > 0 {
        c.execute("DELETE FROM commit_marks m WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = m.node)", &[]).map_err(db)?;
    }
    Ok(moved)
}

fn adopt_locked(c: &mut Conn, node: i64, live_since: i64, lanes: i64, apps: &[i64]) -> Result<u64, postgres::Error> {
    let leader: bool = c.query_opt("SELECT pg_try_advisory_xact_lock($1)", &[&ADOPT_LOCK])?.is_some_and(|r| r.get(0));
    if !leader {
        return Ok(0);
    }
    let found = c.query(
        "SELECT DISTINCT app, from_account FROM events WHERE state = 0 AND node <> $1 \
         AND node NOT IN (SELECT id FROM nodes WHERE seen_ms >= $2) AND app = ANY($4) LIMIT $3",
        &[&node, &live_since, &lanes, &apps],
    )?;
    if found.is_empty() {
        return Ok(0);
    }
    let apps: Vec<i64> = found.iter().map(|r| r.get(0)).collect();
    let froms: Vec<String> = found.iter().map(|r| r.get(1)).collect();
    // In key order, as writers take at most one lane lock per event.
    c.execute(
        "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT hashtextextended(f, a) AS k \
         FROM unnest($1::bigint[], $2::text[]) AS x(a, f) ORDER BY k) s",
        &[&apps, &froms],
    )?;
    c.execute(
        "UPDATE events SET node = $1, handed = true WHERE state = 0 AND node <> $1 \
         AND node NOT IN (SELECT id FROM nodes WHERE seen_ms >= $2) \
         AND (app, from_account) IN (SELECT a, f FROM unnest($3::bigint[], $4::text[]) AS x(a, f))",
        &[&node, &live_since, &apps, &froms],
    )
}

/// Renews the lease every [`HEARTBEAT`] on a connection of its own, reconnecting as needed, and turns
/// the [`Subscription`] off once no live client (`clients`) wants it.
fn start_heartbeat(
    url: String,
    node: i64,
    sub: Arc<Subscription>,
    clients: Arc<std::sync::atomic::AtomicUsize>,
) -> StoreResult<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let t = std::thread::Builder::new()
        .name("followd-pg-lease".into())
        .spawn(move || {
            let mut conn: Option<Conn> = None;
            // Where the fold goes on from: a pass that does not end within its budget resumes at the
            // next heartbeat, so every user's deltas are folded in turn.
            let mut fold_cursor = 0;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
                    conn = Conn::connect(&url).map_err(|e| tracing::warn!(error = %e, "lease: cannot connect to PostgreSQL")).ok();
                }
                if let Some(c) = conn.as_mut() {
                    match renew(c, node, sub.on.load(std::sync::atomic::Ordering::Acquire)) {
                        Ok(true) => {
                            // The next client waits out the writes that found the row gone.
                            sub.on.store(false, std::sync::atomic::Ordering::Release);
                            tracing::warn!(
                                "this node's lease was forgotten by the other nodes (away too long): its live clients may have missed changes meanwhile"
                            )
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot renew this node's lease"),
                    }
                    let live = clients.load(std::sync::atomic::Ordering::Relaxed);
                    match unsubscribe_idle(c, node, &sub, live, now_micros() / 1000) {
                        Ok(true) => tracing::debug!("no live clients: the other nodes no longer send their changes"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot tell the other nodes that this one has no live clients"),
                    }
                    // The fold skips the rows a writer holds, so it does not deadlock with one. It
                    // may take up to a heartbeat: the lease (10 s) is renewed well before it ends.
                    if let Err(e) = fold_some(c, &mut fold_cursor, HEARTBEAT) {
                        tracing::debug!(error = %e, "counter fold skipped");
                    }
                }
            }
            // A node that stops cleanly gives its lease up at once: its pending events are adopted
            // by the next node that looks.
            let conn = conn.filter(|c| !c.client.is_closed()).or_else(|| Conn::connect(&url).ok());
            if let Some(mut c) = conn {
                let _ =
                    c.client.batch_execute(&format!("DELETE FROM nodes WHERE id = {node}; DELETE FROM commit_marks WHERE node = {node}"));
            }
        })
        .map_err(StoreError::database)?;
    Ok((stop, t))
}

fn writer_gone() -> StoreError {
    StoreError::database(std::io::Error::other("the writer thread has stopped"))
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Store for PgStore {
    fn submit_write(&self, job: WriteJob) -> Result<(), StoreError> {
        self.submit(Queued { job, prefetch: None })
    }

    fn submit_write_prefetched(&self, job: WriteJob, prefetch: Prefetch) -> Result<(), StoreError> {
        self.submit(Queued { job, prefetch: Some(prefetch) })
    }

    fn max_pairs_per_job(&self) -> usize {
        // Each pair (and each webhook lane) is a transaction advisory lock; PostgreSQL's lock table
        // holds `max_locks_per_transaction` (64 by default) times `max_connections` (100) entries
        // for the whole server, and a batch of 50,000 follows ran out of it ("out of shared memory").
        MAX_PAIRS_PER_JOB
    }

    fn submit_write_waiting(&self, job: WriteJob) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(async move {
            let Some(tx) = self.jobs.lock().clone() else { return Err(StoreError::Closed) };
            tx.send(Queued { job, prefetch: None }).await.map_err(|_| writer_gone())
        })
    }

    fn submit_read(&self, job: ReadJob) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(self.readers.run(move |conn| {
            conn.client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").map_err(db)?;
            let mut view = PgReadView { conn, failed: None };
            job(&mut view);
            let failed = view.failed.take();
            let _ = conn.client.batch_execute("COMMIT");
            failed.map_or(Ok(()), Err)
        }))
    }
}

struct ReadPool {
    url: String,
    idle: Mutex<Vec<Conn>>,
    running: Arc<tokio::sync::Semaphore>,
}

impl ReadPool {
    /// Runs `f` on a pooled connection on a blocking thread, at most [`MAX_READERS`] at once. A
    /// connection found closed after `f` (the server went away) is dropped; the next use connects anew.
    async fn run<R: Send + 'static>(self: &Arc<Self>, f: impl FnOnce(&mut Conn) -> StoreResult<R> + Send + 'static) -> StoreResult<R> {
        let running = self.running.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _running = running;
            let mut conn = match pool.idle.lock().pop() {
                Some(c) => c,
                None => Conn::connect(&pool.url)?,
            };
            let r = f(&mut conn);
            if conn.client.is_closed() {
                // The server went away or restarted: the idle connections were most likely cut at the
                // same moment, so they go too and each later read connects anew.
                let stale = std::mem::take(&mut *pool.idle.lock());
                drop(stale);
            } else {
                pool.idle.lock().push(conn);
            }
            r
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// The writer thread of one node.
struct Writer {
    node: i64,
    url: String,
    conn: Option<Conn>,
    last_key: TimeKey,
    hooks: CommitHooks,
    /// [`PgStore::read_ahead`].
    read_ahead: Arc<std::sync::atomic::AtomicU64>,
    /// [`PgStore::commit_gate`].
    gate: Arc<Mutex<()>>,
    /// Set when the store closes: [`Writer::resolve`] gives up.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Batches begun: each writes its number into `commit_marks` ([`Writer::resolve`]).
    batches: i64,
    /// Whether a batch of this writer committed (so its mark was written).
    marked: bool,
}

/// How a batch's `COMMIT` failed.
enum Unfinished<'g> {
    /// The server answered an error: the transaction is not committed.
    Failed(StoreError),
    /// The connection broke before the answer came: the transaction may have committed. The gate is
    /// held as for a commit, until the transaction's outcome is known. (`true`: a test left the
    /// connection open, its transaction still running.)
    Lost(Option<parking_lot::MutexGuard<'g, ()>>, StoreError, bool),
}

/// A queued write job, with what it said it will read.
struct Queued {
    job: WriteJob,
    prefetch: Option<Prefetch>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Vec::with_capacity(64);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
        tracing::debug!("PostgreSQL writer stopped");
    }

    /// Commits a batch. When it conflicts with another node (a deadlock or a serialization failure),
    /// its jobs are run again one transaction each, so that one job's conflict no longer holds back
    /// the others and each transaction holds few locks; a job that keeps conflicting is run again
    /// after a short random pause, up to [`MAX_TRIES`] times, before its failure is answered.
    fn run_batch(&mut self, mut batch: Vec<Queued>) {
        fail::fail_point!("writer-batch");
        let listening = self.hooks.changes.receiver_count() > 0 && self.hooks.live_clients.load(std::sync::atomic::Ordering::Relaxed) > 0;
        let single = batch.len() == 1;
        let gate = self.gate.clone();
        let mut tries = 0;
        loop {
            tries += 1;
            let (done, result) = self.try_batch(&mut batch, listening, &gate);
            match result {
                Ok((events, changes, passing)) => {
                    done.into_iter().for_each(|c| c(Ok(())));
                    // Tests widen the moment between COMMIT and the hook here (`sleep`).
                    fail::fail_point!("pg-committed");
                    if let (false, Some(hook)) = (events.is_empty(), &self.hooks.events) {
                        let _ = hook.send(events);
                    }
                    drop(passing);
                    if !changes.is_empty() {
                        let _ = self.hooks.changes.send(Arc::new(changes));
                    }
                    return;
                }
                Err((e, true)) if !single => {
                    tracing::debug!(error = %e, jobs = batch.len(), "write batch conflicted with another node; running its jobs one by one");
                    drop(done);
                    for job in batch {
                        self.run_batch(vec![job]);
                    }
                    return;
                }
                Err((e, true)) if tries < MAX_TRIES => {
                    tracing::debug!(error = %e, tries, "write conflicted with another node; running it again");
                    drop(done);
                    std::thread::sleep(std::time::Duration::from_micros(rand::random_range(0..2_000u64 << tries)));
                }
                Err((e, _)) => {
                    tracing::error!(error = %e, "write batch rolled back");
                    done.into_iter().for_each(|c| c(Err(&e)));
                    return;
                }
            }
        }
    }

    /// Runs the batch once: the completions of its jobs, and the commit's outcome (with whether a
    /// retry may cure a failure).
    /// On success the gate is held when the batch has events for this node's dispatcher (taken just
    /// before `COMMIT`, see [`PgWriteTx::commit`]); the caller lets go of it once they are with the
    /// hook.
    #[allow(clippy::type_complexity)]
    fn try_batch<'g>(
        &mut self,
        batch: &mut [Queued],
        listening: bool,
        gate: &'g Mutex<()>,
    ) -> (Vec<Completion>, Result<(Vec<StoredEvent>, Vec<(AppId, EdgeChange)>, Option<parking_lot::MutexGuard<'g, ()>>), (StoreError, bool)>)
    {
        if let Err(e) = self.connect() {
            tracing::error!(error = %e, "cannot connect to PostgreSQL or prepare the writer's statements");
            return (Vec::new(), Err((e, false)));
        }
        self.batches += 1;
        let conn = self.conn.as_mut().expect("connected above");
        let now_ms = (now_micros() / 1000) as u64;
        let mut tx = PgWriteTx {
            node: self.node,
            conn,
            last_key: &mut self.last_key,
            counts: HashMap::new(),
            locked_pairs: HashSet::new(),
            deleting: HashMap::new(),
            ids: HashMap::new(),
            accounts: HashMap::new(),
            edges: HashMap::new(),
            now_ms,
            failed: None,
            retry: false,
            events: Vec::new(),
            // Set once `BEGIN` tells whether another node wants them.
            collect_changes: true,
            changed: false,
            notify_others: true,
            changes: Vec::new(),
            wake: HashSet::new(),
            pending: Pending::default(),
            emitted: Vec::new(),
            absent: HashSet::new(),
            kept: HashSet::new(),
            xid: None,
            batch: self.batches,
        };
        let plans: Vec<&Prefetch> = batch.iter().filter_map(|q| q.prefetch.as_ref()).collect();
        if plans.is_empty() {
            match tx.conn.int_results(&begin_sql(tx.node)) {
                Ok(r) => (tx.xid, tx.notify_others) = begun(&r),
                Err(e) => {
                    let retry = retryable(&e);
                    let _ = tx.conn.client.batch_execute("ROLLBACK");
                    return (Vec::new(), Err((db(e), retry)));
                }
            }
        } else {
            // BEGIN is sent with the batch's reads. A failure is kept in `tx.failed`: it fails the
            // jobs' first step, as if each had read on its own, and the batch is rolled back (or run
            // again) as any other.
            if tx.prefetch_batch(&plans).is_ok() && plans.len() > 1 {
                self.read_ahead.fetch_add(plans.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        tx.collect_changes = listening || tx.notify_others;
        let done: Vec<Completion> = batch.iter_mut().map(|q| (q.job)(&mut tx)).collect();
        // Tests hold a batch here, between its jobs and its last round trip (`sleep`).
        fail::fail_point!("pg-before-commit");
        let outcome = tx.commit(gate);
        let (events, mut changes) = (std::mem::take(&mut tx.events), std::mem::take(&mut tx.changes));
        if !listening {
            changes.clear();
        }
        let passing = match outcome {
            Ok(passing) => passing,
            Err(Unfinished::Failed(e)) => {
                let retry = tx.retry;
                let _ = tx.conn.client.batch_execute("ROLLBACK");
                return (done, Err((e, retry)));
            }
            Err(Unfinished::Lost(passing, e, left_open)) => {
                let begun = tx.xid.expect("a commit is reported lost only for a transaction whose id was read");
                if left_open {
                    // A test's stand-in for a connection cut without either side closing it.
                    std::mem::forget(self.conn.take());
                }
                self.conn = None;
                tracing::warn!(error = %e, xid = begun.0, "the connection broke during COMMIT; asking PostgreSQL whether it committed");
                match self.resolve(begun) {
                    Some(true) => passing,
                    // Nothing of it is stored: run it again, as after a conflict.
                    Some(false) => return (done, Err((e, true))),
                    None => return (done, Err((e, false))),
                }
            }
        };
        self.marked = true;
        (done, Ok((events, changes, passing)))
    }

    /// Whether the batch begun last, transaction `xid` run by the server process `pid`, committed,
    /// asked on a new connection until PostgreSQL answers; `None` when that cannot be known (the
    /// store closes first, or the node's mark is gone). Once no server process runs the transaction
    /// any more (one still running it after a second, its client gone unnoticed, is ended with
    /// `pg_terminate_backend`, so that it aborts; again every 5 s, and at once when the store
    /// closes), the node's row in `commit_marks` tells: the batch's number is there only if it
    /// committed. (The transaction id alone cannot tell: after a crash that lost its records, the id
    /// is given out again.) Nothing else is written meanwhile (this thread is the node's only
    /// writer) and the commit gate stays held, so no later event of this node, its own or handed to
    /// it, reaches the dispatcher before the batch's.
    fn resolve(&mut self, (xid, pid): (i64, i64)) -> Option<bool> {
        let (node, batch) = (self.node, self.batches);
        // pg_stat_activity shows the 32-bit transaction id.
        let (pid, short_xid) = (pid as i32, (xid & 0xffff_ffff).to_string());
        let started = std::time::Instant::now();
        let mut terminated: Option<std::time::Instant> = None;
        let mut stopped: Option<std::time::Instant> = None;
        let mut said: Option<std::time::Instant> = None;
        let mut say = |what: &str, e: Option<&StoreError>| {
            if said.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(30)) {
                tracing::warn!(error = e.map(tracing::field::display), xid, waited_s = started.elapsed().as_secs(), "{what}");
                said = Some(std::time::Instant::now());
            }
        };
        loop {
            if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                stopped.get_or_insert_with(std::time::Instant::now);
            }
            let asked = self.connect().and_then(|c| {
                let running = "FROM pg_stat_activity WHERE pid = $1 AND backend_xid::text = $2";
                let still: bool =
                    c.client.query_one(&format!("SELECT EXISTS (SELECT 1 {running})"), &[&pid, &short_xid]).map_err(db)?.get(0);
                if still {
                    let due = match terminated {
                        None => stopped.is_some() || started.elapsed() > std::time::Duration::from_secs(1),
                        Some(t) => t.elapsed() > std::time::Duration::from_secs(5),
                    };
                    if due {
                        c.client.execute(&format!("SELECT pg_terminate_backend(pid) {running}"), &[&pid, &short_xid]).map_err(db)?;
                        tracing::warn!(xid, pid, "ended the server process still running the transaction whose COMMIT lost its answer");
                        terminated = Some(std::time::Instant::now());
                    }
                    return Ok(None);
                }
                let mark = c.client.query_opt("SELECT batch FROM commit_marks WHERE node = $1", &[&node]).map_err(db)?;
                Ok(Some(mark.map(|r| r.get::<_, i64>(0))))
            });
            match asked {
                Ok(Some(Some(b))) if b >= batch => {
                    tracing::info!(xid, "the transaction whose COMMIT lost its answer did commit");
                    return Some(true);
                }
                Ok(Some(None)) if self.marked => {
                    // Removed as a dead node's while this one could not reach the database.
                    tracing::error!(xid, "cannot tell whether a transaction whose COMMIT lost its answer committed: this node's commit mark is gone; its events, if any, are sent after the next start");
                    return None;
                }
                Ok(Some(_)) => {
                    tracing::info!(xid, "the transaction whose COMMIT lost its answer did not commit; running its jobs again");
                    return Some(false);
                }
                Ok(None) => {
                    say("the transaction whose COMMIT lost its answer is still running; waiting for it to end", None);
                    if stopped.is_some_and(|t| t.elapsed() > std::time::Duration::from_secs(10)) {
                        return None;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    say("cannot learn whether a transaction whose COMMIT lost its answer committed; asking again", Some(&e));
                    // Asked at least once: a store that closes gives up (the batch's events, if it
                    // committed, are sent after the next start).
                    if stopped.is_some() {
                        return None;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
    }

    /// The writer's connection, connected (and its statements prepared) if it is not.
    fn connect(&mut self) -> StoreResult<&mut Conn> {
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            self.conn = None;
            let mut c = Conn::connect(&self.url)?;
            prepare_batched(&mut c).map_err(prepare_failed)?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }
}

/// One batch's transaction as the graph rules see it.
struct PgWriteTx<'w> {
    node: i64,
    conn: &'w mut Conn,
    last_key: &'w mut TimeKey,
    /// id → (stored counts if read, delta of this batch); stored ones are read after locking the
    /// account's row, deltas are only added up (so a followee's row is not locked by a follow).
    counts: HashMap<Uid, (Option<Counts>, Counts)>,
    /// Unordered pairs whose advisory lock this transaction holds.
    locked_pairs: HashSet<(Uid, Uid)>,
    /// app → its unfinished deletion jobs, read once per transaction.
    deleting: HashMap<AppId, Vec<Uid>>,
    /// (app, UserID) → id of the accounts this transaction looked up: a cache for this transaction
    /// only (another node may delete or import accounts between two transactions).
    ids: HashMap<(AppId, UserId), Uid>,
    /// id → (app, UserID), likewise.
    accounts: HashMap<Uid, (AppId, UserId)>,
    /// Edges of pairs whose lock this transaction holds, as read or written by it (no other
    /// transaction can change them until it ends).
    edges: HashMap<(Uid, Uid), Option<TimeKey>>,
    now_ms: u64,
    failed: Option<StoreError>,
    /// Whether the failure is one a new run may cure.
    retry: bool,
    events: Vec<StoredEvent>,
    collect_changes: bool,
    changes: Vec<(AppId, EdgeChange)>,
    /// Nodes this transaction handed events to: told at commit.
    wake: HashSet<i64>,
    /// Rows written by the rules but not yet sent (see [`Pending`]).
    pending: Pending,
    /// The webhook events of this batch, in the order the rules emitted them, stored just before
    /// commit by [`PgWriteTx::flush_events`].
    emitted: Vec<(NewEvent, uuid::Uuid, String)>,
    /// Names [`WriteTx::warm_ids`] or the batch's read ([`PgWriteTx::prefetch_batch`]) found no
    /// account for in this transaction: [`WriteTx::lookup`]
    /// answers `None` for them without a round trip (creating one goes through `upsert_account`,
    /// whose insert finds an account another node made meanwhile).
    absent: HashSet<(AppId, UserId)>,
    /// Accounts this transaction holds at least `FOR KEY SHARE` (named by its follows or its bulk
    /// batches): a deletion's tombstone waits for it.
    kept: HashSet<Uid>,
    /// The transaction's id and its server process's, read with `BEGIN` ([`begin_sql`]).
    xid: Option<(i64, i64)>,
    /// Whether another node wanted edge changes when this transaction began ([`begin_sql`]).
    notify_others: bool,
    /// Whether the batch changed an edge (collected or not).
    changed: bool,
    /// The batch's number, written into `commit_marks` with its `COMMIT` ([`Writer::resolve`]).
    batch: i64,
}

/// What a transaction will do to one stored row (an edge) or one pair of rows (a mutual relation),
/// against the table as it was before this transaction touched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowOp {
    /// Not stored: to be inserted.
    Insert { app: i64, t: TimeKey },
    /// Stored: to be deleted.
    Delete,
    /// Stored: to be deleted and inserted again with another key.
    Replace { app: i64, t: TimeKey },
}

/// Writes that no statement of the transaction reads back until they are sent: the rules' edge and
/// mutual inserts and deletes and the bulk marks are kept here and sent as one multi-row statement
/// each ([`PgWriteTx::flush`]) before any statement that could see them (the edge lists, the bulk
/// sweep) and before `COMMIT`, instead of one round trip each. The pair locks are still taken where
/// the edge is first looked at, and [`PgWriteTx::edges`] answers `edge` for every pair written here,
/// so what the rules decide is unchanged; a statement that fails when sent (a unique violation, a
/// deadlock) fails the batch as it did when it was sent at once.
#[derive(Default)]
struct Pending {
    /// (src, dst) → the net change of that edge.
    edges: HashMap<(Uid, Uid), RowOp>,
    /// (lower id, higher id) → the net change of the pair's two mutual rows.
    mutual: HashMap<(Uid, Uid), RowOp>,
    /// (run, src, dst) of `bulk_mark`.
    marks: HashSet<(i64, Uid, Uid)>,
}

impl PgWriteTx<'_> {
    fn guard<T>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>) -> StoreResult<T> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        f(self.conn).map_err(|e| {
            self.retry = retryable(&e);
            let e = db(e);
            self.failed = Some(e.clone());
            e
        })
    }

    fn fail(&mut self, e: StoreError) -> StoreError {
        self.failed = Some(e.clone());
        e
    }

    /// The failure of an earlier step, if any: after it every step fails (the transaction is lost).
    fn check(&self) -> StoreResult<()> {
        self.failed.as_ref().map_or(Ok(()), |e| Err(e.clone()))
    }

    /// An edge that the rules remove is gone: removed by another node since this transaction read it
    /// in a list (a deletion job reads its edges before it holds their pairs' locks). The counters
    /// must not be decremented twice: the transaction is run again, and then the edge is no longer
    /// listed.
    fn edge_gone(&mut self) -> StoreError {
        self.retry = true;
        self.fail(StoreError::database(std::io::Error::other(
            "an edge was removed by another node during this transaction; running it again",
        )))
    }

    /// Sends the pending writes ([`Pending`]) in one round trip: at most one statement per table and
    /// kind, rows in key order. Deletes go before inserts, so an edge removed and added again in one
    /// batch is replaced.
    fn flush(&mut self) -> StoreResult<()> {
        self.check()?;
        let (sql, deletes) = self.pending_sql();
        if sql.is_empty() {
            return Ok(());
        }
        self.send(&sql, deletes)
    }

    /// Runs `sql` (statements on integers written in by this module); `deletes` is the number of
    /// edges its first statement must delete.
    fn send(&mut self, sql: &str, deletes: Option<u64>) -> StoreResult<()> {
        let affected = self.guard(|c| c.affected(sql))?;
        match deletes {
            Some(n) if affected.first() != Some(&n) => Err(self.edge_gone()),
            _ => Ok(()),
        }
    }

    /// The statements that send [`Pending`] (none when it is empty), and how many edges the first
    /// deletes when it deletes edges.
    fn pending_sql(&mut self) -> (String, Option<u64>) {
        let pending = std::mem::take(&mut self.pending);
        let mut sql = String::new();
        let mut edges: Vec<((Uid, Uid), RowOp)> = pending.edges.into_iter().collect();
        edges.sort_unstable_by_key(|e| e.0);
        let (mut del_src, mut del_dst) = (Vec::new(), Vec::new());
        let (mut app, mut src, mut dst, mut t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((s, d), op) in edges {
            if matches!(op, RowOp::Delete | RowOp::Replace { .. }) {
                del_src.push(s);
                del_dst.push(d);
            }
            if let RowOp::Insert { app: a, t: k } | RowOp::Replace { app: a, t: k } = op {
                app.push(a);
                src.push(s);
                dst.push(d);
                t.push(k);
            }
        }
        let deletes = (!del_src.is_empty()).then_some(del_src.len() as u64);
        if !del_src.is_empty() {
            // Each pair a probe of the primary key on both columns, as in PAIR_EDGES.
            statement(&mut sql, &DELETE_EDGES, &[&del_src, &del_dst]);
        }
        if !src.is_empty() {
            statement(&mut sql, &INSERT_EDGES, &[&app, &src, &dst, &t]);
        }
        let mut mutual: Vec<((Uid, Uid), RowOp)> = pending.mutual.into_iter().collect();
        mutual.sort_unstable_by_key(|m| m.0);
        let (mut del_a, mut del_b) = (Vec::new(), Vec::new());
        let (mut app, mut a, mut b, mut t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((lo, hi), op) in mutual {
            if matches!(op, RowOp::Delete | RowOp::Replace { .. }) {
                del_a.extend([lo, hi]);
                del_b.extend([hi, lo]);
            }
            if let RowOp::Insert { app: x, t: k } | RowOp::Replace { app: x, t: k } = op {
                app.extend([x, x]);
                a.extend([lo, hi]);
                b.extend([hi, lo]);
                t.extend([k, k]);
            }
        }
        if !del_a.is_empty() {
            // By the pair, not by the key: a key recomputed from two follow times taken on nodes with
            // skewed clocks could name no row.
            statement(&mut sql, &DELETE_MUTUAL, &[&del_a, &del_b]);
        }
        if !a.is_empty() {
            statement(&mut sql, &INSERT_MUTUAL, &[&app, &a, &b, &t]);
        }
        if !pending.marks.is_empty() {
            let mut marks: Vec<(i64, Uid, Uid)> = pending.marks.into_iter().collect();
            marks.sort_unstable();
            let run: Vec<i64> = marks.iter().map(|m| m.0).collect();
            let src: Vec<i64> = marks.iter().map(|m| m.1).collect();
            let dst: Vec<i64> = marks.iter().map(|m| m.2).collect();
            statement(&mut sql, &INSERT_MARKS, &[&run, &src, &dst]);
        }
        (sql, deletes)
    }

    /// Ends the batch: stores its webhook events and sends its notifications, then its kept-back
    /// rows ([`Pending`]) and its counter deltas as rows of `count_deltas` (folded into `accounts`
    /// later by [`fold_counts`]) with `COMMIT`, in one round trip; in two when the batch deletes
    /// edges, whose number is checked before `COMMIT`.
    ///
    /// When the batch has events for this node's dispatcher, `gate` ([`PgStore::commit_gate`]) is
    /// taken just before the last round trip and returned held: that statement waits for no lock
    /// (every lock of the batch is taken before it), so a take of handed events waiting at the gate
    /// never waits for a transaction that waits for it.
    ///
    /// When the connection breaks before `COMMIT` is answered, the outcome is unknown: that is
    /// [`Unfinished::Lost`] (with the gate), and the writer asks a new connection ([`Writer::resolve`]).
    fn commit<'g>(&mut self, gate: &'g Mutex<()>) -> Result<Option<parking_lot::MutexGuard<'g, ()>>, Unfinished<'g>> {
        self.check().map_err(Unfinished::Failed)?;
        self.flush_events().map_err(Unfinished::Failed)?;
        let (mut sql, deletes) = self.pending_sql();
        if deletes.is_some() {
            self.send(&sql, deletes).map_err(Unfinished::Failed)?;
            sql.clear();
        }
        let mut counts: Vec<(Uid, Counts)> =
            std::mem::take(&mut self.counts).into_iter().map(|(u, (_, d))| (u, d)).filter(|(_, d)| *d != Counts::default()).collect();
        if !counts.is_empty() {
            counts.sort_by_key(|&(u, _)| u);
            let uids: Vec<i64> = counts.iter().map(|c| c.0).collect();
            let followers: Vec<i64> = counts.iter().map(|c| c.1.followers).collect();
            let following: Vec<i64> = counts.iter().map(|c| c.1.following).collect();
            let mutual: Vec<i64> = counts.iter().map(|c| c.1.mutual).collect();
            statement(&mut sql, &INSERT_DELTAS, &[&uids, &followers, &following, &mutual]);
        }
        self.notify_sql(&mut sql);
        // The batch's mark, last (its row lock is held only for the COMMIT).
        sql.push_str(&format!(
            "INSERT INTO commit_marks(node, batch) VALUES ({}, {}) ON CONFLICT (node) DO UPDATE SET batch = excluded.batch; ",
            self.node, self.batch
        ));
        let passing = (!self.events.is_empty()).then(|| gate.lock());
        // Tests cut the connection of a batch with events here: `after` COMMIT reached the server (the
        // default), `before` it was sent, or `open`: all but COMMIT sent and the connection left open.
        let cut: Option<String> = (|| {
            fail::fail_point!("pg-commit-lost", passing.is_some() && self.xid.is_some(), |arg: Option<String>| Some(
                arg.unwrap_or_default()
            ));
            None
        })();
        let sent = match cut.as_deref() {
            Some("before") => Err(None),
            Some("open") => self.conn.affected(&sql).map_err(Some),
            _ => {
                sql.push_str("COMMIT");
                self.conn.affected(&sql).map_err(Some)
            }
        };
        let lost = |e| StoreError::database(std::io::Error::other(format!("the connection to PostgreSQL broke during COMMIT: {e}")));
        match (sent, cut) {
            (Ok(_), None) => Ok(passing),
            (Ok(_), Some(cut)) | (Err(None), Some(cut)) => Err(Unfinished::Lost(passing, lost("failpoint".to_owned()), cut == "open")),
            (Err(None), None) => unreachable!("only a failpoint sends nothing"),
            (Err(Some(e)), _) if self.xid.is_some() && connection_ended(&e, &self.conn.client) => {
                Err(Unfinished::Lost(passing, lost(e.to_string()), false))
            }
            (Err(Some(e)), _) => {
                self.retry = retryable(&e);
                let e = db(e);
                self.failed = Some(e.clone());
                Err(Unfinished::Failed(e))
            }
        }
    }

    /// Stores the batch's webhook events in two statements, whatever their number: the locks of their
    /// lanes (one per `(app, From_Account)`), in key order as adoption takes them, then the events
    /// themselves in emit order. A lane's lock serializes the writers of one lane on every node until
    /// they commit, so its events' ids follow their commit order and two nodes cannot both find the
    /// lane free; the lock is taken by a statement of its own, so the insert's snapshot sees every
    /// event committed by the transactions it waited for. Each event goes to the node owning its
    /// lane's pending events (this one if none), and is handed to it when that is another node or
    /// when the lane has handed events (any of them: requeued ones keep their old, lower ids). Events of one lane in one batch find the same owner
    /// (the first of them would have made this node the owner of a free lane, unhanded), so the lane
    /// is looked at once per statement.
    fn flush_events(&mut self) -> StoreResult<()> {
        self.check()?;
        if self.emitted.is_empty() {
            return Ok(());
        }
        let emitted = std::mem::take(&mut self.emitted);
        let (now_ms, node) = (self.now_ms as i64, self.node);
        let apps: Vec<i64> = emitted.iter().map(|e| e.0.app as i64).collect();
        let froms: Vec<&str> = emitted.iter().map(|e| e.0.from.as_str()).collect();
        self.guard(|c| {
            c.execute(
                "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT hashtextextended(f, a) AS k \
                 FROM unnest($1::bigint[], $2::text[]) AS x(a, f) ORDER BY k) s",
                &[&apps, &froms],
            )
        })?;
        let ids: Vec<&[u8]> = emitted.iter().map(|e| &e.1.as_bytes()[..]).collect();
        let commands: Vec<&str> = emitted.iter().map(|e| e.0.command.as_str()).collect();
        let bodies: Vec<&str> = emitted.iter().map(|e| e.2.as_str()).collect();
        let ips: Vec<&str> = emitted.iter().map(|e| e.0.origin.client_ip.as_str()).collect();
        let platforms: Vec<&str> = emitted.iter().map(|e| e.0.origin.platform.as_str()).collect();
        let rows = self.guard(|c| {
            c.query(
                "WITH x AS (SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
                            WITH ORDINALITY AS x(app, webhook_id, command, from_account, body, client_ip, platform, n)), \
                      lane AS (SELECT l.app, l.from_account, p.node, EXISTS (SELECT 1 FROM events h WHERE h.app = l.app \
                            AND h.from_account = l.from_account AND h.handed AND h.state = 0) AS handed \
                            FROM (SELECT DISTINCT app, from_account FROM x) l \
                            LEFT JOIN LATERAL (SELECT e.node FROM events e WHERE e.app = l.app AND e.from_account = l.from_account \
                            AND e.state = 0 ORDER BY e.id DESC LIMIT 1) p ON true) \
                 INSERT INTO events(app, webhook_id, command, from_account, body, client_ip, platform, created_ms, next_at_ms, updated_ms, node, handed) \
                 SELECT x.app, x.webhook_id, x.command, x.from_account, x.body, x.client_ip, x.platform, $8, $8, $8, \
                        COALESCE(lane.node, $9), COALESCE(lane.node <> $9 OR lane.handed, false) \
                 FROM x JOIN lane ON lane.app = x.app AND lane.from_account = x.from_account ORDER BY x.n \
                 RETURNING id, webhook_id, node, handed",
                &[&apps, &ids, &commands, &froms, &bodies, &ips, &platforms, &now_ms, &node],
            )
        })?;
        let mut stored: HashMap<Vec<u8>, (i64, i64, bool)> = HashMap::with_capacity(rows.len());
        for r in rows {
            stored.insert(r.get(1), (r.get(0), r.get(2), r.get(3)));
        }
        for (ev, uuid, body) in emitted {
            let Some(&(id, owner, handed)) = stored.get(&uuid.as_bytes()[..]) else {
                return Err(self.fail(StoreError::database(std::io::Error::other("an event was not stored"))));
            };
            if handed {
                // Its owner takes it when told (NOTIFY at commit) or at its next heartbeat.
                self.wake.insert(owner);
            } else {
                self.events.push(StoredEvent::committed(id, uuid, ev, body, now_ms));
            }
        }
        Ok(())
    }

    /// The statements that tell other nodes what this transaction did, for its last round trip
    /// (`NOTIFY` is delivered on commit only, in commit order): the nodes it handed events to, and
    /// its edge changes when another node wants them ([`Subscription`]).
    ///
    /// - When one did as the transaction began, its changes are sent, hex-encoded (nothing a client
    ///   sent is spliced into SQL as text), unless by now none does.
    /// - When none did, the changes were not collected: `followd_no_listener` fails the transaction
    ///   with a serialization failure if one does now, and the writer runs its jobs again (they
    ///   then send them). A node that turned its flag on after this check waits for this
    ///   transaction's end ([`wait_out`]) before its client registers.
    fn notify_sql(&self, sql: &mut String) {
        if !self.wake.is_empty() {
            let mut wake: Vec<i64> = self.wake.iter().copied().collect();
            wake.sort_unstable();
            sql.push_str(&format!(
                "SELECT count(pg_notify('{HANDED_CHANNEL}', n::text)) FROM unnest('{{{}}}'::bigint[]) AS n; ",
                int_list(wake.into_iter())
            ));
        }
        if !self.notify_others && self.changed {
            sql.push_str(&format!("SELECT followd_no_listener({}); ", self.node));
        } else if !self.changes.is_empty() {
            let payloads: Vec<String> = encode_changes(self.node, &self.changes).iter().map(|p| hex(p.as_bytes())).collect();
            sql.push_str(&format!(
                "SELECT count(pg_notify('{CHANGES_CHANNEL}', convert_from(decode(p, 'hex'), 'UTF8'))) FROM unnest('{{{}}}'::text[]) AS p \
                 WHERE EXISTS (SELECT 1 FROM nodes WHERE listening AND id <> {}); ",
                payloads.join(","),
                self.node
            ));
        }
    }

    /// Begins the batch's transaction and reads what its jobs said they will read ([`Prefetch`]), in
    /// two round trips whatever their number: (1) the ids of every account they name (before
    /// `BEGIN`: an id is read without a lock, so a statement of its own sees the same inside the
    /// transaction or before it); (2) `BEGIN` and, in the same multi-statement query, the
    /// advisory locks of every pair of a follower with one of its targets (the whole batch's in key
    /// order, so two nodes' batches wait for each other rather than deadlock), the row locks of the
    /// followers whose counters a limit reads (in id order), both directions of every pair and those
    /// counters (read after the locks, so they are current), and the unfinished deletions of the
    /// batch's apps. Each job's own `prefetch` then finds all of it known and sends nothing. What a
    /// job reads is what it would have read at its turn: the pairs and counters are locked until
    /// commit, the batch's earlier jobs change them only through this transaction (whose caches they
    /// update), and an id is only ever read, never locked, by a job's own lookup as well.
    fn prefetch_batch(&mut self, plans: &[&Prefetch]) -> StoreResult<()> {
        self.check()?;
        let mut names: Vec<(AppId, &UserId)> = plans
            .iter()
            .flat_map(|p| std::iter::once(&p.from).chain(&p.targets).map(move |u| (p.app, u)))
            .filter(|&(a, u)| {
                let key = (a, u.clone());
                !self.ids.contains_key(&key) && !self.absent.contains(&key)
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        if !names.is_empty() {
            let apps: Vec<i64> = names.iter().map(|n| n.0 as i64).collect();
            let texts: Vec<&str> = names.iter().map(|n| n.1.as_str()).collect();
            let rows = self.guard(|c| {
                c.query(
                    // One probe of `accounts_by_name` a name (the planner hashed all of `accounts`).
                    "SELECT a.app, a.id, a.user_id FROM unnest($1::bigint[], $2::text[]) AS x(app, name) CROSS JOIN LATERAL \
                     (SELECT app, id, user_id FROM accounts WHERE app = x.app AND user_id = x.name AND NOT deleted OFFSET 0) a",
                    &[&apps, &texts],
                )
            })?;
            for r in rows {
                let (app, id, name): (i64, Uid, &str) = (r.get(0), r.get(1), r.get(2));
                let user = parse_user(name).map_err(|e| self.fail(e))?;
                self.remember(app as AppId, &user, id);
            }
            for (a, u) in names {
                let key = (a, u.clone());
                if !self.ids.contains_key(&key) {
                    self.absent.insert(key);
                }
            }
        }
        let (mut keys, mut unknown, mut count_ids, mut kept) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut apps: Vec<i64> = Vec::new();
        for p in plans {
            if !self.deleting.contains_key(&p.app) {
                apps.push(p.app as i64);
            }
            let Some(&src) = self.ids.get(&(p.app, p.from.clone())) else { continue };
            if p.counts && self.counts.get(&src).is_none_or(|c| c.0.is_none()) {
                count_ids.push(src);
            }
            if p.adds {
                kept.push(src);
            }
            for t in &p.targets {
                let Some(&d) = self.ids.get(&(p.app, t.clone())) else { continue };
                if p.adds {
                    kept.push(d);
                }
                if d == src {
                    continue;
                }
                if self.locked_pairs.insert((src.min(d), src.max(d))) {
                    keys.push(pair_key(src, d));
                }
                unknown.extend([(src, d), (d, src)].into_iter().filter(|e| !self.edges.contains_key(e)));
            }
        }
        for v in [&mut keys, &mut count_ids, &mut apps, &mut kept] {
            v.sort_unstable();
            v.dedup();
        }
        unknown.sort_unstable();
        unknown.dedup();
        let mut sql = format!("{}; ", begin_sql(self.node));
        // The index of each statement's rows in the answer.
        let mut at = BEGIN_STATEMENTS;
        let mut next = |sql: &mut String, stmt: String| {
            sql.push_str(&stmt);
            sql.push_str("; ");
            at += 1;
            at - 1
        };
        if !keys.is_empty() {
            next(&mut sql, lock_keys_sql(&keys));
        }
        let counts_at = (!count_ids.is_empty()).then(|| {
            next(&mut sql, execute(&LOCK_ACCOUNTS, &[&count_ids]));
            next(&mut sql, execute(&COUNTS_OF_IDS, &[&count_ids]))
        });
        // The accounts a follow names stay until it commits: a deletion's tombstone (`FOR UPDATE`)
        // waits for it, and its pass over the account's edges then finds the new one. One deleted
        // since its id was read is not returned: the batch no longer knows it.
        let kept_at = (!kept.is_empty()).then(|| next(&mut sql, execute(&KEEP_ACCOUNTS, &[&kept])));
        let edges_at =
            (!unknown.is_empty()).then(|| next(&mut sql, pair_edges_of(unknown.iter().map(|e| e.0), unknown.iter().map(|e| e.1))));
        let deletions_at = (!apps.is_empty()).then(|| next(&mut sql, execute(&DELETIONS_OF, &[&apps])));
        let results = self.guard(|c| c.int_results(&sql))?;
        (self.xid, self.notify_others) = begun(&results);
        let rows = |i: Option<usize>| i.and_then(|i| results.get(i)).map_or(&[][..], |r| &r[..]);
        let unreadable = || StoreError::database(std::io::Error::other("unreadable prefetch"));
        let mut counted: HashMap<Uid, Counts> = HashMap::new();
        for r in rows(counts_at) {
            let &[Some(id), Some(followers), Some(following), Some(mutual)] = &r[..] else { return Err(self.fail(unreadable())) };
            counted.insert(id, Counts { followers, following, mutual });
        }
        for id in count_ids {
            self.counts.entry(id).or_default().0 = Some(counted.get(&id).copied().unwrap_or_default());
        }
        for r in rows(edges_at) {
            let &[Some(s), Some(d), Some(t)] = &r[..] else { return Err(self.fail(unreadable())) };
            self.edges.entry((s, d)).or_insert(Some(t));
        }
        for e in unknown {
            self.edges.entry(e).or_insert(None);
        }
        let live: HashSet<Uid> = rows(kept_at).iter().filter_map(|r| r.first().copied().flatten()).collect();
        self.kept.extend(live.iter().copied());
        for id in kept.into_iter().filter(|id| !live.contains(id)) {
            if let Some(key) = self.accounts.remove(&id) {
                if self.ids.get(&key) == Some(&id) {
                    self.ids.remove(&key);
                }
                self.absent.insert(key);
            }
        }
        let mut deleting: HashMap<AppId, Vec<Uid>> = apps.iter().map(|&a| (a as AppId, Vec::new())).collect();
        for r in rows(deletions_at) {
            let &[Some(app), Some(account)] = &r[..] else { return Err(self.fail(unreadable())) };
            deleting.entry(app as AppId).or_default().push(account);
        }
        self.deleting.extend(deleting);
        Ok(())
    }

    /// Whether a `prefetch` of `from` and `targets` would read nothing new: every account looked up
    /// (or known absent), every pair locked with both its directions known, and the follower's
    /// counters read if `counts` (the case of every job of a batch after [`Self::prefetch_batch`]).
    fn prefetched(&self, app: AppId, from: &UserId, targets: &[UserId], counts: bool) -> bool {
        let known = |u: &UserId| {
            let key = (app, u.clone());
            self.ids.get(&key).copied().map(Some).or_else(|| self.absent.contains(&key).then_some(None))
        };
        let Some(src) = known(from) else { return false };
        let Some(src) = src else { return targets.iter().all(|t| known(t).is_some()) };
        if counts && self.counts.get(&src).is_none_or(|c| c.0.is_none()) {
            return false;
        }
        targets.iter().all(|t| match known(t) {
            None => false,
            Some(None) => true,
            Some(Some(d)) => {
                d == src
                    || (self.locked_pairs.contains(&(src.min(d), src.max(d)))
                        && self.edges.contains_key(&(src, d))
                        && self.edges.contains_key(&(d, src)))
            }
        })
    }

    /// `prefetch` in two statements when no limit reads the follower's counters: (1) the accounts,
    /// and the locks of the pairs of `from` with each target found, taken by the same statement in
    /// key order (two nodes locking overlapping sets this way wait for each other instead of
    /// deadlocking); (2) both directions of every pair, read after the locks so that they are
    /// current. For a follow whose limits read the follower's counters (`counts`), (2) also takes
    /// the follower's row lock and then reads its counters, as [`WriteTx::counts`] does, each read a
    /// statement of its own after the lock it needs, sent in one round trip.
    fn prefetch_pairs(&mut self, app: AppId, from: &UserId, targets: &[UserId], counts: bool) -> StoreResult<()> {
        if self.prefetched(app, from, targets, counts) {
            return self.check();
        }
        let mut names: Vec<&str> = std::iter::once(from).chain(targets).map(UserId::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let a = app as i64;
        let rows = self.guard(|c| c.query(PREFETCH_ACCOUNTS, &[&a, &names, &from.as_str()]))?;
        let mut fresh_src = None;
        let mut sql_locked = Vec::new();
        for r in rows {
            let (id, name, key): (Uid, &str, Option<i64>) = (r.get(0), r.get(1), r.get(2));
            let user = parse_user(name).map_err(|e| self.fail(e))?;
            if user == *from {
                fresh_src = Some(id);
            }
            if let Some(k) = key {
                sql_locked.push((id, k));
            }
            // What this transaction looked up before stays as it saw it.
            if !self.ids.contains_key(&(app, user.clone())) {
                self.remember(app, &user, id);
            }
        }
        let Some(&src) = self.ids.get(&(app, from.clone())) else { return Ok(()) };
        // The pairs whose lock this call took first: their edges are read below.
        let mut newly: Vec<Uid> = Vec::new();
        if fresh_src == Some(src) {
            for (d, k) in sql_locked {
                if k != pair_key(src, d) {
                    // Never: the statement computes `pair_key`. Should it differ, the pair is locked
                    // below by its key, as every other step locks it.
                    debug_assert!(false, "the SQL pair key of ({src}, {d}) is {k}, not {}", pair_key(src, d));
                    tracing::error!(src, dst = d, "the SQL pair key differs from pair_key");
                    continue;
                }
                if self.locked_pairs.insert((src.min(d), src.max(d))) {
                    newly.push(d);
                }
            }
        }
        // Targets this transaction knew under other ids than the statement found (another node
        // deleted or imported them meanwhile): their pairs are locked by key.
        let mut dsts: Vec<Uid> = targets.iter().filter_map(|t| self.ids.get(&(app, t.clone())).copied()).filter(|&d| d != src).collect();
        dsts.sort_unstable();
        dsts.dedup();
        let mut keys = Vec::new();
        for d in dsts {
            if self.locked_pairs.insert((src.min(d), src.max(d))) {
                keys.push(pair_key(src, d));
                newly.push(d);
            }
        }
        keys.sort_unstable();
        keys.dedup();
        newly.sort_unstable();
        newly.dedup();
        let unknown: Vec<Uid> =
            newly.into_iter().filter(|&d| !self.edges.contains_key(&(src, d)) || !self.edges.contains_key(&(d, src))).collect();
        let read_counts = counts && self.counts.get(&src).is_none_or(|c| c.0.is_none());
        // Both directions of each pair.
        let (s, d): (Vec<Uid>, Vec<Uid>) = unknown.iter().flat_map(|&d| [(src, d), (d, src)]).unzip();
        let found: Vec<(Uid, Uid, TimeKey)> = if keys.is_empty() && !read_counts {
            if unknown.is_empty() {
                return Ok(());
            }
            // The usual case: one prepared statement.
            let rows = self.guard(|c| c.query(PAIR_EDGES, &[&s, &d]))?;
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
        } else {
            let sql = format!(
                "{}; {}; {}",
                lock_keys_sql(&keys),
                pair_edges_of(s.into_iter(), d.into_iter()),
                if read_counts { lock_and_count(src) } else { String::new() },
            );
            let results = self.guard(|c| c.int_results(&sql))?;
            if read_counts {
                let b = results.get(3).map_or(Ok(Counts::default()), counts_of).map_err(|e| self.fail(e))?;
                self.counts.entry(src).or_default().0 = Some(b);
            }
            let mut found = Vec::new();
            for r in results.get(1).map_or(&[][..], |r| &r[..]) {
                let &[Some(s), Some(d), Some(t)] = &r[..] else {
                    return Err(self.fail(StoreError::database(std::io::Error::other("unreadable edges"))));
                };
                found.push((s, d, t));
            }
            found
        };
        // A direction this transaction already knows stays as it knows it: it may have written it
        // (a pending row the table does not show yet).
        for (s, d, t) in found {
            self.edges.entry((s, d)).or_insert(Some(t));
        }
        for &d in &unknown {
            self.edges.entry((src, d)).or_insert(None);
            self.edges.entry((d, src)).or_insert(None);
        }
        Ok(())
    }

    fn app_of(&mut self, uid: Uid) -> StoreResult<i64> {
        if let Some((app, _)) = self.accounts.get(&uid) {
            return Ok(*app as i64);
        }
        self.guard(|c| Ok(c.query_opt("SELECT app FROM accounts WHERE id = $1", &[&uid])?.map_or(0, |r| r.get(0))))
    }

    /// Looks up the accounts of `app` named `names` that are not deleted and holds them `FOR KEY
    /// SHARE` until the transaction ends (a deletion's tombstone waits for it): remembered and kept.
    fn keep_by_name(&mut self, app: AppId, names: &[&str]) -> StoreResult<()> {
        let a = app as i64;
        let rows = self.guard(|c| {
            c.query(
                "SELECT id, user_id FROM accounts WHERE app = $1 AND user_id = ANY($2) AND NOT deleted ORDER BY id FOR KEY SHARE",
                &[&a, &names],
            )
        })?;
        for r in rows {
            let user = parse_user(r.get(1)).map_err(|e| self.fail(e))?;
            self.kept.insert(r.get(0));
            self.remember(app, &user, r.get(0));
        }
        Ok(())
    }

    fn remember(&mut self, app: AppId, user: &UserId, uid: Uid) {
        if !self.absent.is_empty() {
            self.absent.remove(&(app, user.clone()));
        }
        self.ids.insert((app, user.clone()), uid);
        self.accounts.insert(uid, (app, user.clone()));
    }
}

fn parse_user(name: &str) -> StoreResult<UserId> {
    UserId::parse(name).map_err(StoreError::database)
}

impl WriteTx for PgWriteTx<'_> {
    fn lookup(&mut self, app: AppId, user: &UserId) -> StoreResult<Option<Uid>> {
        let key = (app, user.clone());
        if let Some(&uid) = self.ids.get(&key) {
            return Ok(Some(uid));
        }
        if self.absent.contains(&key) {
            return Ok(None);
        }
        let a = app as i64;
        let found: Option<Uid> = self.guard(|c| {
            Ok(c.query_opt("SELECT id FROM accounts WHERE app = $1 AND user_id = $2 AND NOT deleted", &[&a, &user.as_str()])?
                .map(|r| r.get(0)))
        })?;
        if let Some(uid) = found {
            self.remember(app, user, uid);
        }
        Ok(found)
    }

    fn create_accounts(&mut self, app: AppId, users: &[&UserId]) -> StoreResult<u64> {
        if users.is_empty() {
            return Ok(0);
        }
        let (a, texts): (i64, Vec<&str>) = (app as i64, users.iter().map(|u| u.as_str()).collect());
        // One statement, ids in the given order; a name another node created meanwhile is skipped
        // here (waiting on the unique index for that node's transaction) and looked up below.
        let rows = self.guard(|c| {
            c.query(
                "INSERT INTO accounts(app, user_id) SELECT $1, u FROM unnest($2::text[]) WITH ORDINALITY AS x(u, n) ORDER BY n \
                 ON CONFLICT (app, user_id) WHERE NOT deleted DO NOTHING RETURNING id, user_id",
                &[&a, &texts],
            )
        })?;
        let created = rows.len() as u64;
        for r in rows {
            let user = parse_user(r.get(1)).map_err(|e| self.fail(e))?;
            // Made by this transaction: no other sees it before it commits.
            self.kept.insert(r.get(0));
            self.remember(app, &user, r.get(0));
        }
        // Those another node created are kept until this transaction ends, as `warm_ids` keeps those it
        // finds.
        let others: Vec<&str> = users.iter().filter(|u| !self.ids.contains_key(&(app, (**u).clone()))).map(|u| u.as_str()).collect();
        if !others.is_empty() {
            self.keep_by_name(app, &others)?;
        }
        Ok(created)
    }

    fn warm_ids(&mut self, app: AppId, users: &[&UserId]) -> StoreResult<()> {
        // Every name of a bulk batch in one statement (one round trip each, before). The accounts are
        // kept until the batch commits, as a follow keeps those it names: a deletion's tombstone
        // (`FOR UPDATE`) waits, and its pass then finds the batch's edges. One whose tombstone
        // committed first is not returned (a name free again: the batch makes a new account).
        // Those another job of the transaction looked up without holding them are taken by id.
        let mut known: Vec<Uid> =
            users.iter().filter_map(|u| self.ids.get(&(app, (*u).clone())).copied()).filter(|id| !self.kept.contains(id)).collect();
        known.sort_unstable();
        known.dedup();
        if !known.is_empty() {
            let held: HashSet<Uid> = self.guard(|c| c.query(KEEP_ACCOUNTS.sql, &[&known]))?.iter().map(|r| r.get(0)).collect();
            if known.iter().any(|id| !held.contains(id)) {
                // Deleted by another node since this transaction looked it up: run it again.
                self.retry = true;
                return Err(self.fail(StoreError::database(std::io::Error::other("an account the batch names was deleted meanwhile"))));
            }
            self.kept.extend(held);
        }
        let mut names: Vec<&UserId> = users.iter().copied().filter(|u| !self.ids.contains_key(&(app, (*u).clone()))).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return Ok(());
        }
        // Absent unless found (`remember` takes a found one out).
        for u in &names {
            self.absent.insert((app, (*u).clone()));
        }
        let texts: Vec<&str> = names.iter().map(|u| u.as_str()).collect();
        self.keep_by_name(app, &texts)
    }

    fn user_id(&mut self, uid: Uid) -> StoreResult<UserId> {
        if let Some((_, user)) = self.accounts.get(&uid) {
            return Ok(user.clone());
        }
        let name: Option<String> =
            self.guard(|c| Ok(c.query_opt("SELECT user_id FROM accounts WHERE id = $1", &[&uid])?.map(|r| r.get(0))))?;
        let Some(name) = name else {
            // Removed by another node's deletion job since this transaction saw it: run it again.
            self.retry = true;
            return Err(self.fail(StoreError::database(std::io::Error::other(format!("account {uid} is gone")))));
        };
        parse_user(&name).map_err(|e| self.fail(e))
    }

    fn upsert_account(&mut self, app: AppId, user: &UserId, nick: Option<&str>, face_url: Option<&str>) -> StoreResult<(Uid, bool)> {
        let app_id = app;
        let app = app as i64;
        // Inserting first makes a concurrent import of the same name on another node wait for this
        // transaction on the unique index, instead of both creating it.
        let created: Option<Uid> = self.guard(|c| {
            Ok(c.query_opt(
                "INSERT INTO accounts(app, user_id, nick, face_url) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (app, user_id) WHERE NOT deleted DO NOTHING RETURNING id",
                &[&app, &user.as_str(), &nick, &face_url],
            )?
            .map(|r| r.get(0)))
        })?;
        if let Some(id) = created {
            // Made by this transaction: no other sees it before it commits.
            self.kept.insert(id);
            self.remember(app_id, user, id);
            return Ok((id, true));
        }
        let id: Uid = self.guard(|c| {
            let row = c.query_opt(
                "SELECT id, nick, face_url FROM accounts WHERE app = $1 AND user_id = $2 AND NOT deleted FOR NO KEY UPDATE",
                &[&app, &user.as_str()],
            )?;
            let Some(row) = row else { return Ok(None) };
            let (id, old_nick, old_face): (i64, Option<String>, Option<String>) = (row.get(0), row.get(1), row.get(2));
            let nick_changed = nick.is_some() && nick != old_nick.as_deref();
            let face_changed = face_url.is_some() && face_url != old_face.as_deref();
            if nick_changed || face_changed {
                c.execute(
                    "UPDATE accounts SET nick = coalesce($2, nick), face_url = coalesce($3, face_url), profile_seq = profile_seq + 1 WHERE id = $1",
                    &[&id, &nick, &face_url],
                )?;
            }
            Ok(Some(id))
        })?
        .ok_or_else(|| StoreError::database(std::io::Error::other("the account was deleted while it was imported")))
        .map_err(|e| self.fail(e))?;
        // Held FOR NO KEY UPDATE (a tombstone waits for it too), found not deleted.
        self.kept.insert(id);
        self.remember(app_id, user, id);
        Ok((id, false))
    }

    fn delete_account(&mut self, uid: Uid) -> StoreResult<()> {
        self.guard(|c| {
            c.execute("DELETE FROM accounts WHERE id = $1", &[&uid])?;
            c.execute("DELETE FROM count_deltas WHERE uid = $1", &[&uid])?;
            c.execute("DELETE FROM deletions WHERE account = $1", &[&uid])
        })?;
        self.counts.remove(&uid);
        if let Some(key) = self.accounts.remove(&uid) {
            if self.ids.get(&key) == Some(&uid) {
                self.ids.remove(&key);
            }
        }
        for d in self.deleting.values_mut() {
            d.retain(|&x| x != uid);
        }
        Ok(())
    }

    fn tombstone(&mut self, job: &Deletion) -> StoreResult<()> {
        let now_ms = self.now_ms as i64;
        let app = job.app as i64;
        self.guard(|c| {
            // `FOR UPDATE` first (an UPDATE of a column that is no key takes a weaker lock): it waits
            // for the follows of other nodes that hold the account (`FOR KEY SHARE`) to commit, so
            // the deletion's pass over its edges finds theirs.
            c.execute(
                "WITH l AS (SELECT id FROM accounts WHERE id = $1 FOR UPDATE) UPDATE accounts SET deleted = true WHERE id IN (SELECT id FROM l)",
                &[&job.uid],
            )?;
            c.execute(
                "INSERT INTO deletions(account, app, user_id, client_ip, platform, notify, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&job.uid, &app, &job.user.as_str(), &job.origin.client_ip, &job.origin.platform.as_str(), &job.notify, &now_ms],
            )
        })?;
        if let Some(d) = self.deleting.get_mut(&job.app) {
            d.push(job.uid);
        }
        // The name belongs to no one now (a re-import makes a new account); the id keeps its name
        // for the events of the job.
        let key = (job.app, job.user.clone());
        if self.ids.get(&key) == Some(&job.uid) {
            self.ids.remove(&key);
        }
        self.accounts.insert(job.uid, key);
        Ok(())
    }

    fn deleting(&mut self, app: AppId) -> StoreResult<Vec<Uid>> {
        if let Some(d) = self.deleting.get(&app) {
            return Ok(d.clone());
        }
        let a = app as i64;
        let d: Vec<Uid> = self.guard(|c| {
            Ok(c.query("SELECT account FROM deletions WHERE app = $1 ORDER BY created_ms, account", &[&a])?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })?;
        self.deleting.insert(app, d.clone());
        Ok(d)
    }

    fn deletion(&mut self, uid: Uid) -> StoreResult<Option<Deletion>> {
        let row =
            self.guard(|c| c.query_opt("SELECT app, user_id, client_ip, platform, notify FROM deletions WHERE account = $1", &[&uid]))?;
        let Some(row) = row else { return Ok(None) };
        let user = parse_user(row.get(1)).map_err(|e| self.fail(e))?;
        let origin = Origin { client_ip: row.get(2), platform: OptPlatform::parse(row.get(3)) };
        Ok(Some(Deletion { uid, app: row.get::<_, i64>(0) as AppId, user, origin, notify: row.get(4) }))
    }

    fn edge(&mut self, src: Uid, dst: Uid) -> StoreResult<Option<TimeKey>> {
        if let Some(&known) = self.edges.get(&(src, dst)) {
            return Ok(known);
        }
        let pair = (src.min(dst), src.max(dst));
        if self.locked_pairs.insert(pair) {
            // One lock per unordered pair: the check of both directions and the writes that follow
            // are atomic against another node's transaction on the same pair.
            let key = pair_key(src, dst);
            self.guard(|c| c.execute("SELECT pg_advisory_xact_lock($1)", &[&key]))?;
        }
        let t: Option<TimeKey> =
            self.guard(|c| Ok(c.query_opt("SELECT t FROM edges WHERE src = $1 AND dst = $2", &[&src, &dst])?.map(|r| r.get(0))))?;
        self.edges.insert((src, dst), t);
        Ok(t)
    }

    fn prefetch(&mut self, app: AppId, from: &UserId, targets: &[UserId]) -> StoreResult<()> {
        self.prefetch_pairs(app, from, targets, false)
    }

    fn prefetch_add(&mut self, app: AppId, from: &UserId, targets: &[UserId]) -> StoreResult<()> {
        self.prefetch_pairs(app, from, targets, true)
    }

    fn edge_keys(&mut self, pairs: &[(Uid, Uid)]) -> StoreResult<Vec<Option<TimeKey>>> {
        // The pairs this transaction has not looked at: their locks in key order (as `prefetch`),
        // then both directions of each, read after the locks, in a statement of its own sent in the
        // same round trip; `edge` then answers them all.
        let mut unknown: Vec<(Uid, Uid)> =
            pairs.iter().filter(|p| !self.edges.contains_key(p)).map(|&(s, d)| (s.min(d), s.max(d))).collect();
        unknown.sort_unstable();
        unknown.dedup();
        if !unknown.is_empty() {
            let mut keys: Vec<i64> = unknown.iter().filter(|&&p| self.locked_pairs.insert(p)).map(|&(a, b)| pair_key(a, b)).collect();
            keys.sort_unstable();
            keys.dedup();
            let src: Vec<Uid> = unknown.iter().flat_map(|&(a, b)| [a, b]).collect();
            let dst: Vec<Uid> = unknown.iter().flat_map(|&(a, b)| [b, a]).collect();
            let sql = format!("{}; {}", lock_keys_sql(&keys), pair_edges_of(src.iter().copied(), dst.iter().copied()));
            let results = self.guard(|c| c.int_results(&sql))?;
            for r in results.get(1).map_or(&[][..], |r| &r[..]) {
                let &[Some(s), Some(d), Some(t)] = &r[..] else {
                    return Err(self.fail(StoreError::database(std::io::Error::other("unreadable edges"))));
                };
                self.edges.entry((s, d)).or_insert(Some(t));
            }
            for (s, d) in src.into_iter().zip(dst) {
                self.edges.entry((s, d)).or_insert(None);
            }
        }
        pairs.iter().map(|&(s, d)| self.edge(s, d)).collect()
    }

    fn insert_edge(&mut self, src: Uid, dst: Uid, key: TimeKey) -> StoreResult<()> {
        let app = self.app_of(src)?;
        self.check()?;
        let op = match self.pending.edges.get(&(src, dst)) {
            None => RowOp::Insert { app, t: key },
            Some(RowOp::Delete) => RowOp::Replace { app, t: key },
            Some(_) => {
                // Added twice by this transaction (the rules never do): sent at once, it fails on
                // the key as it always did.
                self.flush()?;
                self.guard(|c| c.execute("INSERT INTO edges(app, src, dst, t) VALUES ($1, $2, $3, $4)", &[&app, &src, &dst, &key]))?;
                self.edges.insert((src, dst), Some(key));
                return Ok(());
            }
        };
        self.pending.edges.insert((src, dst), op);
        self.edges.insert((src, dst), Some(key));
        Ok(())
    }

    fn insert_edge_if_absent(&mut self, src: Uid, dst: Uid, key: TimeKey) -> StoreResult<bool> {
        // Through `edge`, which takes the pair's lock: the mutual check of the other direction and
        // the counters stay exact against another node's follow of the same pair.
        if self.edge(src, dst)?.is_some() {
            return Ok(false);
        }
        self.insert_edge(src, dst, key)?;
        Ok(true)
    }

    fn delete_edge(&mut self, src: Uid, dst: Uid) -> StoreResult<()> {
        self.check()?;
        // The rules remove only an edge they saw, but a deletion job saw it in a list read before
        // it held the pair's lock: the flush checks that every removed edge was still stored.
        match self.pending.edges.get(&(src, dst)).copied() {
            None => {
                self.pending.edges.insert((src, dst), RowOp::Delete);
            }
            Some(RowOp::Insert { .. }) => {
                self.pending.edges.remove(&(src, dst));
            }
            Some(RowOp::Replace { .. }) => {
                self.pending.edges.insert((src, dst), RowOp::Delete);
            }
            // Removed twice: the second `DELETE` would have found nothing.
            Some(RowOp::Delete) => return Err(self.edge_gone()),
        }
        self.edges.insert((src, dst), None);
        Ok(())
    }

    fn insert_mutual(&mut self, a: Uid, b: Uid, key: TimeKey) -> StoreResult<()> {
        let app = self.app_of(a)?;
        self.check()?;
        let pair = (a.min(b), a.max(b));
        let op = match self.pending.mutual.get(&pair) {
            None => RowOp::Insert { app, t: key },
            Some(RowOp::Delete) => RowOp::Replace { app, t: key },
            Some(_) => {
                // Recorded twice by this transaction (the rules never do): fails on the key.
                self.flush()?;
                return self.guard(|c| {
                    c.execute("INSERT INTO mutual(app, a, b, t) VALUES ($1, $2, $3, $4), ($1, $3, $2, $4)", &[&app, &a, &b, &key]).map(drop)
                });
            }
        };
        self.pending.mutual.insert(pair, op);
        Ok(())
    }

    fn delete_mutual(&mut self, a: Uid, b: Uid, _key: TimeKey) -> StoreResult<()> {
        // By the pair, not by the key (see `flush`).
        self.check()?;
        let pair = (a.min(b), a.max(b));
        match self.pending.mutual.get(&pair).copied() {
            Some(RowOp::Insert { .. }) => {
                self.pending.mutual.remove(&pair);
            }
            _ => {
                self.pending.mutual.insert(pair, RowOp::Delete);
            }
        }
        Ok(())
    }

    fn out_edges(&mut self, uid: Uid, limit: usize) -> StoreResult<Vec<(Uid, TimeKey)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.flush()?;
        self.guard(|c| {
            Ok(c.query("SELECT dst, t FROM edges WHERE src = $1 ORDER BY dst LIMIT $2", &[&uid, &limit])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn in_edges(&mut self, uid: Uid, limit: usize) -> StoreResult<Vec<(Uid, TimeKey)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.flush()?;
        self.guard(|c| {
            Ok(c.query("SELECT src, t FROM edges WHERE dst = $1 ORDER BY t, src LIMIT $2", &[&uid, &limit])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn counts(&mut self, uid: Uid) -> StoreResult<Counts> {
        let (base, d) = self.counts.get(&uid).copied().unwrap_or_default();
        let base = match base {
            Some(b) => b,
            None => {
                // Lock first, then read in a statement of its own: its fresh snapshot sees every
                // delta committed by the transactions this lock waited for. A limit checked on these
                // counters holds until this transaction commits. Both in one round trip.
                let sql = lock_and_count(uid);
                let results = self.guard(|c| c.int_results(&sql))?;
                let b = results.get(1).map_or(Ok(Counts::default()), counts_of).map_err(|e| self.fail(e))?;
                self.counts.insert(uid, (Some(b), d));
                b
            }
        };
        Ok(Counts { followers: base.followers + d.followers, following: base.following + d.following, mutual: base.mutual + d.mutual })
    }

    fn add_counts(&mut self, uid: Uid, delta: Counts) -> StoreResult<()> {
        let (_, d) = self.counts.entry(uid).or_default();
        d.followers += delta.followers;
        d.following += delta.following;
        d.mutual += delta.mutual;
        Ok(())
    }

    fn next_key(&mut self) -> TimeKey {
        *self.last_key = followd_graph::key_of_micros(now_micros()).max(*self.last_key + 1);
        *self.last_key
    }

    fn emit(&mut self, ev: NewEvent) -> StoreResult<()> {
        self.check()?;
        let body = webhook::body(ev.command, ev.from.as_str(), &ev.targets, self.now_ms);
        let uuid = uuid::Builder::from_unix_timestamp_millis(self.now_ms, &rand::random::<[u8; 10]>()).into_uuid();
        // Stored with the batch's other events just before commit (`flush_events`).
        self.emitted.push((ev, uuid, body));
        Ok(())
    }

    fn changed(&mut self, app: AppId, change: EdgeChange) {
        self.changed = true;
        if self.collect_changes {
            self.changes.push((app, change));
        }
    }

    fn bulk_mark(&mut self, run: i64, src: Uid, dst: Uid) -> StoreResult<()> {
        self.check()?;
        self.pending.marks.insert((run, src, dst));
        Ok(())
    }

    fn bulk_unmarked(
        &mut self,
        app: AppId,
        run: i64,
        after: Option<(Uid, Uid)>,
        limit: usize,
    ) -> StoreResult<(Option<(Uid, Uid)>, Vec<(Uid, Uid, TimeKey)>)> {
        let (s0, d0) = after.unwrap_or((i64::MIN, i64::MIN));
        let (app, lim) = (app as i64, limit as i64);
        self.flush()?;
        let rows = self.guard(|c| {
            c.query(
                "SELECT e.src, e.dst, e.t, EXISTS (SELECT 1 FROM bulk_marks m WHERE m.run = $2 AND m.src = e.src AND m.dst = e.dst) \
                 FROM edges e JOIN accounts a ON a.id = e.src JOIN accounts b ON b.id = e.dst \
                 WHERE (e.src, e.dst) > ($3, $4) AND e.app = $1 AND NOT a.deleted AND NOT b.deleted \
                 ORDER BY e.src, e.dst LIMIT $5",
                &[&app, &run, &s0, &d0, &lim],
            )
        })?;
        let rows: Vec<(Uid, Uid, TimeKey, bool)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
        let next = if rows.len() >= limit { rows.last().map(|r| (r.0, r.1)) } else { None };
        Ok((next, rows.into_iter().filter(|r| !r.3).map(|r| (r.0, r.1, r.2)).collect()))
    }

    fn bulk_has_marks(&mut self, run: i64) -> StoreResult<bool> {
        self.flush()?;
        self.guard(|c| Ok(c.query_opt("SELECT 1 FROM bulk_marks WHERE run = $1 LIMIT 1", &[&run])?.is_some()))
    }

    fn bulk_forget(&mut self, run: i64, limit: usize) -> StoreResult<u64> {
        let lim = limit as i64;
        self.flush()?;
        self.guard(|c| {
            c.execute(
                "DELETE FROM bulk_marks WHERE (run, src, dst) IN (SELECT run, src, dst FROM bulk_marks WHERE run = $1 LIMIT $2)",
                &[&run, &lim],
            )
        })
    }
}

struct PgReadView<'c> {
    conn: &'c mut Conn,
    failed: Option<StoreError>,
}

impl PgReadView<'_> {
    fn guard<T>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>) -> StoreResult<T> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        f(self.conn).map_err(|e| {
            let e = db(e);
            self.failed = Some(e.clone());
            e
        })
    }
}

/// The list queries: keyset pages, newest first, `(t, other)` strictly below the cursor, leaving out
/// accounts being deleted before the `LIMIT`.
const LIST_FOLLOWERS: &str = "SELECT e.src, e.t, a.user_id, a.nick, a.face_url, a.profile_seq FROM edges e \
     JOIN accounts a ON a.id = e.src WHERE e.dst = $1 AND (e.t, e.src) < ($2, $3) AND NOT a.deleted \
     ORDER BY e.t DESC, e.src DESC LIMIT $4";
const LIST_FOLLOWING: &str = "SELECT e.dst, e.t, a.user_id, a.nick, a.face_url, a.profile_seq FROM edges e \
     JOIN accounts a ON a.id = e.dst WHERE e.src = $1 AND (e.t, e.dst) < ($2, $3) AND NOT a.deleted \
     ORDER BY e.t DESC, e.dst DESC LIMIT $4";
const LIST_MUTUAL: &str = "SELECT m.b, m.t, a.user_id, a.nick, a.face_url, a.profile_seq FROM mutual m \
     JOIN accounts a ON a.id = m.b WHERE m.a = $1 AND (m.t, m.b) < ($2, $3) AND NOT a.deleted \
     ORDER BY m.t DESC, m.b DESC LIMIT $4";

impl ReadView for PgReadView<'_> {
    fn export(&mut self, app: AppId, sink: &mut dyn FnMut(ExportRow<'_>) -> bool) -> StoreResult<()> {
        use postgres::fallible_iterator::FallibleIterator as _;
        let app = app as i64;
        // Rows are streamed from this read's snapshot, never held all at once.
        self.guard(|c| {
            let params: [&(dyn ToSql + Sync); 1] = [&app];
            let mut rows = c.client.query_raw("SELECT user_id, nick, face_url FROM accounts WHERE app = $1 AND NOT deleted", params)?;
            while let Some(r) = rows.next()? {
                if !sink(ExportRow::Account { user: r.get(0), nick: r.get(1), face_url: r.get(2) }) {
                    return Ok(());
                }
            }
            drop(rows);
            let mut rows = c.client.query_raw(
                "SELECT a.user_id, b.user_id, e.t FROM accounts a JOIN edges e ON e.src = a.id JOIN accounts b ON b.id = e.dst \
                 WHERE a.app = $1 AND NOT a.deleted AND NOT b.deleted",
                params,
            )?;
            while let Some(r) = rows.next()? {
                if !sink(ExportRow::Follow { from: r.get(0), to: r.get(1), key: r.get(2) }) {
                    return Ok(());
                }
            }
            Ok(())
        })
    }

    fn lookup(&mut self, app: AppId, user: &UserId) -> StoreResult<Option<Uid>> {
        let app = app as i64;
        self.guard(|c| {
            Ok(c.query_opt("SELECT id FROM accounts WHERE app = $1 AND user_id = $2 AND NOT deleted", &[&app, &user.as_str()])?
                .map(|r| r.get(0)))
        })
    }

    fn has_edge(&mut self, src: Uid, dst: Uid) -> StoreResult<bool> {
        self.guard(|c| Ok(c.query_opt("SELECT 1 FROM edges WHERE src = $1 AND dst = $2", &[&src, &dst])?.is_some()))
    }

    fn counts(&mut self, uid: Uid) -> StoreResult<Counts> {
        self.guard(|c| {
            let row = c.query_opt(COUNTS, &[&uid])?;
            Ok(row.map_or(Counts::default(), |r| Counts { followers: r.get(0), following: r.get(1), mutual: r.get(2) }))
        })
    }

    fn deleting(&mut self, app: AppId) -> StoreResult<Vec<Uid>> {
        let app = app as i64;
        self.guard(|c| Ok(c.query("SELECT account FROM deletions WHERE app = $1", &[&app])?.iter().map(|r| r.get(0)).collect()))
    }

    fn deletions(&mut self) -> StoreResult<Vec<Uid>> {
        self.guard(|c| Ok(c.query("SELECT account FROM deletions ORDER BY created_ms, account", &[])?.iter().map(|r| r.get(0)).collect()))
    }

    fn app_totals(&mut self, app: AppId) -> StoreResult<Option<(u64, u64)>> {
        let app = app as i64;
        self.guard(|c| {
            let r = c.query_opt(APP_TOTALS, &[&app])?;
            Ok(r.map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)))
        })
    }

    fn profile(&mut self, app: AppId, user: &UserId) -> StoreResult<Option<Profile>> {
        let app = app as i64;
        self.guard(|c| {
            Ok(c.query_opt(
                "SELECT nick, face_url, profile_seq FROM accounts WHERE app = $1 AND user_id = $2 AND NOT deleted",
                &[&app, &user.as_str()],
            )?
            .map(|r| Profile { nick: r.get(0), face_url: r.get(1), sequence: r.get(2) }))
        })
    }

    fn list(&mut self, uid: Uid, kind: ListKind, after: Option<Cursor>, limit: usize) -> StoreResult<Vec<ListEntry>> {
        let sql = match kind {
            ListKind::Followers => LIST_FOLLOWERS,
            ListKind::Following => LIST_FOLLOWING,
            ListKind::Mutual => LIST_MUTUAL,
        };
        let (key, other) = after.map_or((i64::MAX, i64::MAX), |c| (c.key, c.uid));
        let limit = limit as i64;
        let rows = self.guard(|c| c.query(sql, &[&uid, &key, &other, &limit]))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let user = match parse_user(r.get(2)) {
                Ok(u) => u,
                Err(e) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            };
            out.push(ListEntry {
                uid: r.get(0),
                key: r.get(1),
                user,
                profile: Profile { nick: r.get(3), face_url: r.get(4), sequence: r.get(5) },
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server of `FOLLOWD_TEST_DATABASE_URL` (`.ci/postgres` sets it); `None`, saying so, without.
    fn test_url() -> Option<String> {
        let url = std::env::var("FOLLOWD_TEST_DATABASE_URL").ok();
        if url.is_none() {
            eprintln!("skipped: FOLLOWD_TEST_DATABASE_URL is not set");
        }
        url
    }

    /// Against the server of `FOLLOWD_TEST_DATABASE_URL` (`.ci/postgres` runs it; skipped without).
    #[test]
    fn a_cut_connection_counts_as_ended_and_a_statements_error_does_not() {
        let Some(url) = test_url() else { return };
        let mut a = Conn::connect(&url).unwrap();
        let e = a.client.simple_query("BEGIN; SELECT 1/0; COMMIT").unwrap_err();
        assert!(!connection_ended(&e, &a.client), "a statement's error: {e}");
        a.client.batch_execute("ROLLBACK").unwrap();
        let pid: i32 = a.client.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let mut b = Conn::connect(&url).unwrap();
        b.client.execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let e = a.client.simple_query("BEGIN; SELECT 1; COMMIT").unwrap_err();
        assert!(connection_ended(&e, &a.client), "a server process ended: {e}");
    }

    /// The flag's life on a `nodes` table of the test's own (a temporary table, which hides any
    /// other for this session and goes with it).
    #[test]
    fn the_change_flag_turns_off_only_after_the_linger_and_a_lost_row_keeps_it() {
        let Some(url) = test_url() else { return };
        let mut c = Conn::connect(&url).unwrap();
        c.client
            .batch_execute(
                "CREATE TEMPORARY TABLE nodes (id bigint PRIMARY KEY, seen_ms bigint NOT NULL, started_ms bigint NOT NULL, \
                 listening boolean NOT NULL DEFAULT true)",
            )
            .unwrap();
        let flag = |c: &mut Conn| -> Option<bool> {
            c.client.query_opt("SELECT listening FROM nodes WHERE id = 7", &[]).unwrap().map(|r| r.get(0))
        };
        assert!(renew(&mut c, 7, false).unwrap(), "a new row");
        assert_eq!(flag(&mut c), Some(false));
        let sub = Subscription::default();
        subscribe(&mut c, 7, &sub).unwrap();
        assert_eq!(flag(&mut c), Some(true));
        assert!(sub.on.load(std::sync::atomic::Ordering::Acquire));
        // The heartbeat's renewal leaves it on; a row that was lost comes back with it.
        assert!(!renew(&mut c, 7, false).unwrap(), "the row was there");
        assert_eq!(flag(&mut c), Some(true));
        c.client.batch_execute("DELETE FROM nodes").unwrap();
        assert!(renew(&mut c, 7, true).unwrap(), "the row was lost");
        assert_eq!(flag(&mut c), Some(true));

        let t = sub.wanted_ms.load(std::sync::atomic::Ordering::Relaxed) + 10 * LISTEN_LINGER_MS;
        assert!(!unsubscribe_idle(&mut c, 7, &sub, 1, t).unwrap(), "a client is connected");
        assert!(!unsubscribe_idle(&mut c, 7, &sub, 0, t + LISTEN_LINGER_MS - 1).unwrap(), "the last client left less than the linger ago");
        assert_eq!(flag(&mut c), Some(true));
        assert!(unsubscribe_idle(&mut c, 7, &sub, 0, t + LISTEN_LINGER_MS).unwrap());
        assert_eq!(flag(&mut c), Some(false));
        assert!(!sub.on.load(std::sync::atomic::Ordering::Acquire));
        assert!(!unsubscribe_idle(&mut c, 7, &sub, 0, t + 2 * LISTEN_LINGER_MS).unwrap(), "already off");
        subscribe(&mut c, 7, &sub).unwrap();
        assert_eq!(flag(&mut c), Some(true), "asked again");
    }

    /// A writer that took its id after the last transaction to end (so past every snapshot's
    /// `xmax`, and in no snapshot's list of running ids) and read a flag off is still waited out.
    #[test]
    fn waiting_out_covers_a_transaction_newer_than_every_ended_one() {
        let Some(url) = test_url() else { return };
        let (mut flag, mut writer) = (Conn::connect(&url).unwrap(), Conn::connect(&url).unwrap());
        flag.client.batch_execute("BEGIN; SELECT pg_current_xact_id()").unwrap();
        writer.client.batch_execute("BEGIN; SELECT pg_current_xact_id()").unwrap();
        flag.client.batch_execute("COMMIT").unwrap();
        let mut c = Conn::connect(&url).unwrap();
        let limit = std::time::Duration::from_secs(60);
        let started = std::time::Instant::now();
        let waiter = std::thread::spawn(move || wait_out(&mut c, limit).map(|()| std::time::Instant::now()));
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(!waiter.is_finished(), "the writer is still running");
        let ended = std::time::Instant::now();
        writer.client.batch_execute("COMMIT").unwrap();
        let done = waiter.join().unwrap().unwrap();
        assert!(done >= ended && done - started < limit, "returned when the writer ended, not at the limit");
        assert_eq!(hex(b"\x00\x7fo'k\\"), "007f6f276b5c");
    }

    #[test]
    fn batched_statements_run_prepared_when_small_and_planned_when_large() {
        let small = execute(&INSERT_EDGES, &[&[7], &[1], &[2], &[3]]);
        assert_eq!(small, "EXECUTE followd_insert_edges('{7}', '{1}', '{2}', '{3}')");
        let big: Vec<i64> = (0..PLAN_ABOVE as i64).collect();
        let large = execute(&DELETE_EDGES, &[&big, &big]);
        assert!(large.starts_with("DELETE FROM edges WHERE ctid = ANY(ARRAY(SELECT e.ctid FROM unnest('{0,1,2,"), "{large}");
        assert!(!large.contains('$'), "{large}");
        // Every statement prepares (the names are distinct) and takes the arrays it says.
        let names: HashSet<&str> = BATCHED.iter().map(|b| b.name).collect();
        assert_eq!(names.len(), BATCHED.len());
        for b in BATCHED {
            assert!(b.sql.contains(&format!("${}", b.args)) && !b.sql.contains(&format!("${}", b.args + 1)), "{}", b.name);
        }
    }

    #[test]
    fn change_notifications_split_under_the_payload_limit_and_decode_back() {
        let long = "x".repeat(28);
        let changes: Vec<(AppId, EdgeChange)> = (0..400)
            .map(|i| {
                let from = UserId::parse(&format!("{long}{i}")).unwrap();
                let to = UserId::parse(&format!("to {i}\\")).unwrap();
                (1_400_000_000 + (i % 3) as AppId, EdgeChange { from, to, added: i % 2 == 0, mutual: i % 5 == 0 })
            })
            .collect();
        let payloads = encode_changes(-7, &changes);
        assert!(payloads.len() > 1, "{} bytes in one payload", payloads[0].len());
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() <= MAX_PAYLOAD);
            let (node, c) = decode_changes(p).unwrap();
            assert_eq!(node, -7);
            back.extend(c);
        }
        assert_eq!(back, changes);
        for bad in ["", "x", "1\n5\ta\tb\t1", "1\n5\ta\tb\t1\t0\t9", "1\nq\ta\tb\t1\t0"] {
            assert_eq!(decode_changes(bad), None, "{bad:?}");
        }
    }
}
