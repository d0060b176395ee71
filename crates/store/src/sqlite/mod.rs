//! The embedded SQLite store.
//!
//! Schema (every UserID interned to an integer `accounts.id`):
//! - `accounts`: one row per imported user, with its profile and its three counters; `deleted` marks
//!   an account whose deletion job is still removing its edges (names are unique among the others);
//! - `deletions`: the unfinished deletion jobs, with what their webhooks need (see
//!   [`followd_graph::deletion`]);
//! - `edges(src, dst, t)` keyed by `(src, dst)`, plus the index `(dst, t, src)`: each edge is stored in
//!   both orders. The check is a point lookup and the followers list (unbounded: an account may have
//!   millions of fans) a keyset range scan at any depth. The following list reads the follower's own
//!   rows and orders them by time; it is bounded by `max_following` (5000 by default, Tencent's cap), and
//!   a third ordering `(src, t, dst)` would cost ~20 more bytes on every edge to save that sort;
//! - `mutual(a, t, b)`: both directions of every mutual pair, ordered by the later follow;
//! - `events`: the webhook outbox, written in the same transaction as the change that owes it (each
//!   event with its own UUIDv7 `webhook_id`), with `attempts` (the delivery log) and
//!   `webhook_overrides` (settings changed through the admin API); see [`outbox`].
//!
//! Durability: WAL with `synchronous = NORMAL` by default. A commit has reached the OS before the
//! writer answers, so killing the process loses nothing acknowledged; `synchronous = FULL`
//! (`Durability::Fsync`) also survives power loss, at the cost of an fsync per batch.

mod outbox;

use followd_graph::outbox::StoredEvent;
use followd_graph::{
    AppId, Completion, Counts, Cursor, Deletion, EdgeChange, ExportRow, ListEntry, ListKind, NewEvent, Origin, Profile, ReadJob, ReadView,
    Store, StoreError, StoreResult, TimeKey, Uid, WriteJob, WriteTx,
};
use followd_protocol::{webhook, OptPlatform, UserId};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot};

/// A map of the writer's own (per-transaction) work, hashed with foldhash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// A live account's id by name (the writer's lookups, one name or a batch's).
const ID_BY_NAME: &str = "SELECT id FROM accounts WHERE app = ?1 AND user_id = ?2 AND deleted = 0";
/// One edge (and the rows of a multi-row insert that do not fill a statement).
const INSERT_EDGE: &str = "INSERT INTO edges(src, dst, t) VALUES (?1, ?2, ?3)";
/// Rows of one multi-row `INSERT` of [`WriteTx::insert_edges`] (3 parameters each).
const EDGES_PER_INSERT: usize = 64;
static INSERT_EDGES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let values: Vec<String> = (0..EDGES_PER_INSERT).map(|i| format!("(?{}, ?{}, ?{})", 3 * i + 1, 3 * i + 2, 3 * i + 3)).collect();
    format!("INSERT INTO edges(src, dst, t) VALUES {}", values.join(", "))
});

/// The writer connection's page cache, KiB.
const WRITER_CACHE_KIB: u32 = 256 * 1024;
/// [`WriteTx::edge_keys`] reads a list whole when at least this many of its edges are asked for.
const MIN_LIST_SCAN: usize = 4;
/// The most write jobs one transaction takes.
const MAX_BATCH: usize = 2048;
/// The writer's UserID cache is dropped when it grows past this many entries.
const MAX_CACHED_IDS: usize = 200_000;
/// How many idle reader connections are kept.
const MAX_IDLE_READERS: usize = 16;
/// Write jobs queued for the writer by default, past which API writes are refused at once.
pub const DEFAULT_WRITE_QUEUE: usize = 2048;

/// The schema of version 1, frozen: later changes are [`MIGRATIONS`], so an existing database is
/// brought forward step by step and a new one goes through the same steps.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS accounts (
    id          INTEGER PRIMARY KEY,
    app         INTEGER NOT NULL,
    user_id     TEXT    NOT NULL,
    nick        TEXT,
    face_url    TEXT,
    profile_seq INTEGER NOT NULL DEFAULT 0,
    followers   INTEGER NOT NULL DEFAULT 0,
    following   INTEGER NOT NULL DEFAULT 0,
    mutual      INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS accounts_by_name ON accounts(app, user_id);
CREATE TABLE IF NOT EXISTS edges (
    src INTEGER NOT NULL,
    dst INTEGER NOT NULL,
    t   INTEGER NOT NULL,
    PRIMARY KEY (src, dst)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_in ON edges(dst, t);
CREATE TABLE IF NOT EXISTS mutual (
    a INTEGER NOT NULL,
    t INTEGER NOT NULL,
    b INTEGER NOT NULL,
    PRIMARY KEY (a, t, b)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    -- AUTOINCREMENT: an id (and so a webhook-id) is never reused, even after the newest is purged.
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    app          INTEGER NOT NULL,
    command      TEXT    NOT NULL,
    from_account TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    client_ip    TEXT    NOT NULL,
    platform     TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    state        INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    retries      INTEGER NOT NULL DEFAULT 0,
    next_at_ms   INTEGER NOT NULL DEFAULT 0,
    updated_ms   INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
-- Only events that are not delivered: a delivery removes its entry instead of moving it.
CREATE INDEX IF NOT EXISTS events_open ON events(state, created_ms) WHERE state != 1;
CREATE INDEX IF NOT EXISTS events_by_app ON events(app, id);
CREATE TABLE IF NOT EXISTS attempts (
    event_id    INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    status      INTEGER,
    outcome     TEXT    NOT NULL,
    error       TEXT,
    response    TEXT,
    PRIMARY KEY (event_id, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_overrides (
    app           INTEGER PRIMARY KEY,
    url           TEXT,
    commands      TEXT,
    token         TEXT,
    token_enabled INTEGER,
    updated_ms    INTEGER NOT NULL
);
PRAGMA user_version = 1;
"#;

/// Schema changes after version 1, in order: `MIGRATIONS[i]` takes a database from version `i + 1` to
/// `i + 2`. Each runs in one transaction together with its `PRAGMA user_version`, so a crash leaves the
/// database at one version or the next, never between.
const MIGRATIONS: &[&str] = &[
    // 1 → 2: a webhook id per event that no other event, database or node reuses (a UUIDv7 as 16 bytes;
    // events written before keep the `evt_<id>` they were sent with, as text), and indexes for
    // reading one app's pending events back in id order and for finding dead events to replay.
    "ALTER TABLE events ADD COLUMN webhook_id BLOB;
     UPDATE events SET webhook_id = 'evt_' || id;
     CREATE UNIQUE INDEX events_by_webhook_id ON events(webhook_id);
     DROP INDEX IF EXISTS events_open;
     CREATE INDEX events_pending ON events(app, id) WHERE state = 0;
     CREATE INDEX events_dead ON events(app, created_ms) WHERE state = 2;",
    // 2 → 3: account deletion as a job. A deleted account keeps its row (its edges still point to it)
    // until its job ends; its name is free at once, so the name index covers live accounts only.
    r#"
ALTER TABLE accounts ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
DROP INDEX accounts_by_name;
CREATE UNIQUE INDEX accounts_by_name ON accounts(app, user_id) WHERE deleted = 0;
CREATE TABLE deletions (
    account    INTEGER PRIMARY KEY,
    app        INTEGER NOT NULL,
    user_id    TEXT    NOT NULL,
    client_ip  TEXT    NOT NULL,
    platform   TEXT    NOT NULL,
    notify     INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
"#,
    // 3 → 4: the marks of a bulk import in `replace` mode: the edges its file named, per run, so the
    // sweep that removes the others needs no memory of its own (see `followd_graph::bulk`).
    "CREATE TABLE bulk_marks (
        run INTEGER NOT NULL,
        src INTEGER NOT NULL,
        dst INTEGER NOT NULL,
        PRIMARY KEY (run, src, dst)
    ) WITHOUT ROWID;",
    // The Standard Webhooks signing secret, changed from the console (NULL keeps the config file's).
    "ALTER TABLE webhook_overrides ADD COLUMN signing_secret TEXT;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// Creates the schema or brings an older one forward; refuses a database written by a newer followd.
fn migrate(conn: &Connection) -> StoreResult<()> {
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).map_err(db_err);
    if version(conn)? == 0 {
        conn.execute_batch(SCHEMA).map_err(db_err)?;
    }
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::database(std::io::Error::other(format!(
            "the database has schema version {found}, newer than this followd knows ({SCHEMA_VERSION}); run a newer followd"
        ))));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip((found - 1) as usize) {
        let to = i as i64 + 2;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {step}\nPRAGMA user_version = {to}; COMMIT;")).map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            db_err(e)
        })?;
        tracing::info!(version = to, "database schema migrated");
    }
    Ok(())
}

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = NORMAL`: survives a killed process (the default).
    #[default]
    Process,
    /// `synchronous = FULL`: also survives power loss.
    Fsync,
}

/// What the store tells the rest of the server after each commit.
#[derive(Clone)]
pub struct CommitHooks {
    /// Receives the webhook events of each commit, after the commit (the delivery engine's wake-up).
    pub events: Option<mpsc::UnboundedSender<Vec<StoredEvent>>>,
    /// Every committed edge change, per app (only collected while someone listens).
    pub changes: broadcast::Sender<Arc<Vec<(AppId, EdgeChange)>>>,
    /// How many live clients are connected: changes are collected only while this is above zero.
    pub live_clients: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for CommitHooks {
    fn default() -> Self {
        CommitHooks { events: None, changes: broadcast::channel(1024).0, live_clients: Arc::new(1.into()) }
    }
}

/// A job for the writer thread: runs in the batch's transaction, answers after the commit.
type Job = Box<dyn FnOnce(&mut SqliteWriteTx<'_>) -> Completion + Send>;

/// The embedded store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    /// Bounded: API writes are refused when it is full, the server's own writes wait for room.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// API writes refused because the queue was full.
    refused: std::sync::atomic::AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    readers: Arc<ReadPool>,
    hooks: CommitHooks,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::database(e)
}

/// The writer thread ended before the store was closed: it died (its panic is in the log).
fn writer_gone() -> StoreError {
    StoreError::database(std::io::Error::other("the writer thread has stopped"))
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Whether each background thread of the store is running (a thread that ended or panicked is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads {
    /// The writer, which commits every write.
    pub writer: bool,
    /// The checkpointer, which copies the WAL into the database file.
    pub checkpointer: bool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database `followd.db` in `dir` and starts the writer, with a
    /// write queue of [`DEFAULT_WRITE_QUEUE`] jobs.
    pub fn open(dir: &Path, durability: Durability, hooks: CommitHooks) -> StoreResult<Self> {
        Self::open_with(dir, durability, hooks, DEFAULT_WRITE_QUEUE)
    }

    /// [`SqliteStore::open`] with a write queue of `write_queue` jobs (at least 1).
    pub fn open_with(dir: &Path, durability: Durability, hooks: CommitHooks, write_queue: usize) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(StoreError::database)?;
        let path = dir.join("followd.db");
        let conn = Connection::open(&path).map_err(db_err)?;
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::Fsync => "FULL",
        };
        // The writer's page cache is large because it replaces the memory map (off: a mapped page
        // that fails to read kills the process with SIGBUS): a write touches pages all over the edge
        // indexes, and with a 16 MiB cache on a 2,000,000-edge graph every miss became a read(2),
        // which cut 20-target follow_add from 3.4 to 2.2 edges per echo request. SQLite fills the
        // cache only as pages are used, so a small database costs what it uses.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; \
             PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA mmap_size = 0; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;"
        ))
        .map_err(db_err)?;
        conn.busy_handler(Some(wait_briefly)).map_err(db_err)?;
        migrate(&conn)?;
        conn.set_prepared_statement_cache_capacity(64);
        let last_key: Option<i64> = conn.query_row("SELECT max(t) FROM edges", [], |r| r.get(0)).map_err(db_err)?;
        let deleting = load_deleting(&conn).map_err(db_err)?;
        let (tx, rx) = mpsc::channel(write_queue.max(1));
        let writer_hooks = hooks.clone();
        let writer = std::thread::Builder::new()
            .name("followd-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    ids: NameIds::default(),
                    names: HashMap::new(),
                    deleting,
                    last_key: last_key.unwrap_or(0),
                    hooks: writer_hooks,
                }
                .run(rx)
            })
            .map_err(StoreError::database)?;
        let checkpointer = start_checkpointer(&path)?;
        Ok(SqliteStore {
            jobs: Mutex::new(Some(tx)),
            refused: 0.into(),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
            readers: Arc::new(ReadPool { path, idle: Mutex::new(Vec::new()), running: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)) }),
            hooks,
        })
    }

    /// The hooks this store fires after each commit.
    pub fn hooks(&self) -> &CommitHooks {
        &self.hooks
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.readers.path
    }

    /// Whether the writer and the checkpointer threads are running. Both run until [`Self::close`],
    /// so a thread found finished before that has died (a panic; its message is in the log).
    pub fn threads(&self) -> Threads {
        let running = |h: Option<&std::thread::JoinHandle<()>>| h.is_some_and(|h| !h.is_finished());
        Threads { writer: running(self.writer.lock().as_ref()), checkpointer: running(self.checkpointer.lock().as_ref().map(|(_, t)| t)) }
    }

    /// Write jobs waiting for the writer, and API writes refused so far because the queue was full.
    pub fn write_queue(&self) -> (usize, u64) {
        let queued = self.jobs.lock().as_ref().map_or(0, |tx| tx.max_capacity() - tx.capacity());
        (queued, self.refused.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Stops taking writes, lets the writer commit everything queued, and waits for it.
    pub fn close(&self) {
        self.jobs.lock().take();
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
        if let Some((stop, t)) = self.checkpointer.lock().take() {
            drop(stop);
            let _ = t.join();
        }
    }

    /// Runs a closure on a reader connection (for tools and tests that need raw SQL).
    pub fn with_reader<R>(&self, f: impl FnOnce(&Connection) -> R) -> StoreResult<R> {
        let conn = self.readers.take()?;
        let r = f(&conn);
        self.readers.put(conn);
        Ok(r)
    }

    /// Queues a job, or refuses it at once when the queue is full.
    fn submit(&self, job: Job) -> StoreResult<()> {
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

    /// Queues a job, waiting for room in the queue.
    async fn submit_waiting(&self, job: Job) -> StoreResult<()> {
        let Some(tx) = self.jobs.lock().clone() else { return Err(StoreError::Closed) };
        tx.send(job).await.map_err(|_| writer_gone())
    }

    /// Runs raw SQL in the writer's next batch and resolves after its commit.
    async fn write_sql<R: Send + 'static>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static) -> StoreResult<R> {
        let (tx, rx) = oneshot::channel();
        self.submit_waiting(Box::new(move |wtx: &mut SqliteWriteTx<'_>| {
            // A caller that gave up (an admin request past its deadline) gets nothing applied.
            if tx.is_closed() {
                return Box::new(|_| {});
            }
            // A savepoint keeps a failing outbox write from rolling back the API writes batched with it.
            let r = match &wtx.failed {
                Some(e) => Err(e.clone()),
                None => match savepoint(wtx.conn, f) {
                    Ok(v) => Ok(v),
                    Err(Undo::Done(e)) if !wtx.conn.is_autocommit() => Err(e),
                    // SQLite rolled the transaction back itself, or the savepoint could not be undone.
                    Err(_) => {
                        wtx.failed = Some(rolled_back());
                        Err(rolled_back())
                    }
                },
            };
            Box::new(move |commit: Result<(), &StoreError>| {
                let _ = tx.send(commit.map_err(Clone::clone).and(r));
            })
        }))
        .await?;
        rx.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Runs raw SQL on a reader connection, off the async runtime.
    async fn read_sql<R: Send + 'static>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static) -> StoreResult<R> {
        self.readers.run(move |conn| f(conn).map_err(db_err)).await
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Store for SqliteStore {
    fn submit_write(&self, mut job: WriteJob) -> Result<(), StoreError> {
        self.submit(Box::new(move |tx: &mut SqliteWriteTx<'_>| job(tx)))
    }

    fn submit_write_waiting(&self, mut job: WriteJob) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(self.submit_waiting(Box::new(move |tx: &mut SqliteWriteTx<'_>| job(tx))))
    }

    fn submit_read(&self, job: ReadJob) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(self.readers.run(move |conn| {
            conn.execute_batch("BEGIN").map_err(db_err)?;
            let mut view = SqliteReadView { conn, failed: None };
            job(&mut view);
            let failed = view.failed.take();
            let _ = conn.execute_batch("COMMIT");
            failed.map_or(Ok(()), Err)
        }))
    }
}

/// How long a connection waits for a lock another connection holds before it answers `SQLITE_BUSY`.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The busy handler of every connection: waits up to [`BUSY_TIMEOUT`], retrying at most 1 ms apart.
///
/// SQLite's own (`busy_timeout`) sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and then 100 ms
/// between tries, so a lock held for 40 ms cost its waiter 53 ms, and one held for a few hundred ms
/// up to 100 ms more. The writer and the checkpointer contend for the write lock (a RESTART holds it
/// while it copies the last frames and waits for readers): with those sleeps the checkpointer took
/// the lock up to 800 ms late, with more frames to copy, and the writer then got it back up to 50 ms
/// after its release, while every API write waited with it. Here a waiter retries 50 µs after the
/// first failure, doubling up to 1 ms, so it gets the lock within about a millisecond of its release.
fn wait_briefly(tries: i32) -> bool {
    thread_local! {
        /// When the current wait of this thread's connection began.
        static SINCE: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    // SQLite counts `tries` from 0 for every new wait.
    let since = SINCE.with(|s| {
        if tries == 0 {
            s.set(Some(now));
        }
        s.get().unwrap_or(now)
    });
    if now.duration_since(since) >= BUSY_TIMEOUT {
        return false;
    }
    let pause = std::time::Duration::from_micros(50 << tries.clamp(0, 5)).min(std::time::Duration::from_millis(1));
    std::thread::sleep(pause);
    true
}

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// WAL frames (pages, 4 KiB) past which the checkpointer also restarts the WAL: about 48 MiB, below
/// `journal_size_limit` (64 MiB), so the file is reused in place. At 128 MiB the first commit after
/// each restart also truncated the file to the limit (dropping 70 MiB of cached pages) and took
/// 20–35 ms instead of 1, every 3 s at 1,000 events/s: that alone set the p99 of commit-to-receipt.
/// A restart holds the writer back only while it copies the frames written since the PASSIVE
/// checkpoint before it and waits for running reads (a few ms), about once a second at that rate.
const RESTART_FRAMES: i64 = 12_288;

/// Checkpoints the WAL from its own thread and connection, so the writer does not stall on the bulk
/// of the copy and its fsync (SQLite's automatic checkpoint would run inside a committing writer).
///
/// A PASSIVE checkpoint never waits for the writer, but while the writer keeps appending it never
/// catches up either, and SQLite only restarts a WAL that was checkpointed to its end: alone, it let
/// the WAL grow without bound (2.4 GB beside a 180 MB database under sustained load). So once the
/// WAL passes [`RESTART_FRAMES`] a RESTART checkpoint follows the PASSIVE one: it holds the writer
/// back only while it copies the few frames written since and syncs, and the next write starts the
/// WAL over (`journal_size_limit` then trims the file).
fn start_checkpointer(path: &Path) -> StoreResult<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let conn = Connection::open(path).map_err(db_err)?;
    conn.busy_handler(Some(wait_briefly)).map_err(db_err)?;
    // PASSIVE copies pages into the database file but syncs only when it reaches the end of the WAL,
    // which a busy writer never lets it do; syncing here after each copy keeps the RESTART's fsync
    // (the moment the writer waits) small.
    let db_file = std::fs::File::open(path).map_err(StoreError::database)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let checkpoint = move |mode: &str| -> rusqlite::Result<i64> {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(1))
    };
    let t = std::thread::Builder::new()
        .name("followd-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                fail::fail_point!("checkpoint");
                let result = checkpoint("PASSIVE").and_then(|frames| {
                    if let Err(e) = db_file.sync_data() {
                        tracing::warn!(error = %e, "cannot sync the database file");
                    }
                    if frames >= RESTART_FRAMES {
                        checkpoint("RESTART")
                    } else {
                        Ok(frames)
                    }
                });
                if let Err(e) = result {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        })
        .map_err(StoreError::database)?;
    Ok((stop, t))
}

/// Settings of each reader connection. No memory map (`mmap_size = 0`, for the writer too): with one,
/// an I/O error or a truncated file under a mapped page raises SIGBUS and kills the whole process;
/// with read(2) the same fault is an `SQLITE_IOERR` (or a corrupt-page error), answered as an
/// internal error while the server stays up. The page cache takes the map's place for hot pages.
const READER_PRAGMAS: &str = "PRAGMA cache_size = -16384; PRAGMA mmap_size = 0;";

/// Reads running at once, each on its own blocking thread and connection: more would not go faster
/// on a few cores, and under a flood of requests every extra one costs a thread and a connection's
/// memory. Reads past it wait, off the threads, within their request's deadline.
const MAX_READERS: usize = 32;

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    running: Arc<tokio::sync::Semaphore>,
}

impl ReadPool {
    /// Runs `f` on a reader connection on a blocking thread, at most [`MAX_READERS`] at once. The
    /// slot goes with the thread: a read whose caller gave up keeps it until it ends.
    async fn run<R: Send + 'static>(self: &Arc<Self>, f: impl FnOnce(&Connection) -> StoreResult<R> + Send + 'static) -> StoreResult<R> {
        let running = self.running.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _running = running;
            let conn = pool.take()?;
            let r = f(&conn);
            pool.put(conn);
            r
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    fn take(&self) -> StoreResult<Connection> {
        if let Some(c) = self.idle.lock().pop() {
            return Ok(c);
        }
        let c =
            Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(db_err)?;
        c.execute_batch(READER_PRAGMAS).map_err(db_err)?;
        c.busy_handler(Some(wait_briefly)).map_err(db_err)?;
        c.set_prepared_statement_cache_capacity(32);
        Ok(c)
    }

    fn put(&self, c: Connection) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(c);
        }
    }
}

/// The writer's cache of (app, UserID) → id, looked up by reference (a lookup copies no name).
#[derive(Default)]
struct NameIds {
    apps: HashMap<AppId, FastMap<UserId, Uid>>,
    len: usize,
}

impl NameIds {
    fn get(&self, app: AppId, user: &UserId) -> Option<Uid> {
        self.apps.get(&app)?.get(user).copied()
    }

    fn insert(&mut self, app: AppId, user: UserId, uid: Uid) {
        if self.apps.entry(app).or_default().insert(user, uid).is_none() {
            self.len += 1;
        }
    }

    /// Drops `user → uid`, unless the name already belongs to another (newer) account.
    fn forget(&mut self, app: AppId, user: &UserId, uid: Uid) {
        if let Some(m) = self.apps.get_mut(&app) {
            if m.get(user) == Some(&uid) {
                m.remove(user);
                self.len -= 1;
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        self.apps.clear();
        self.len = 0;
    }
}

/// The single writer: owns the write connection and the caches that only it may change.
struct Writer {
    conn: Connection,
    /// (app, UserID) → id; valid across batches because only this thread writes.
    ids: NameIds,
    /// id → (app, UserID): the reverse of `ids`, so a deletion evicts both in O(1). It also names
    /// accounts that are no longer in `ids` (tombstoned ones, whose jobs still emit their events).
    names: HashMap<Uid, (AppId, UserId)>,
    /// (app, id) of every unfinished deletion job, oldest first: a copy of `deletions` that every
    /// follow reads (for the limits), kept here because only this thread changes it.
    deleting: Vec<(AppId, Uid)>,
    last_key: TimeKey,
    hooks: CommitHooks,
}

/// The unfinished deletion jobs, oldest first.
fn load_deleting(conn: &Connection) -> rusqlite::Result<Vec<(AppId, Uid)>> {
    conn.prepare("SELECT app, account FROM deletions ORDER BY created_ms, account")?
        .query_map([], |r| Ok((r.get::<_, i64>(0)? as AppId, r.get(1)?)))?
        .collect()
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
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
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
        tracing::debug!("writer stopped");
    }

    fn run_batch(&mut self, batch: Vec<Job>) {
        // Tests make the writer slow (`sleep`) or kill it (`panic`) here; compiled out of release builds.
        fail::fail_point!("writer-batch");
        if self.ids.len().max(self.names.len()) > MAX_CACHED_IDS {
            self.ids.clear();
            self.names.clear();
        }
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let e = db_err(e);
            tracing::error!(error = %e, "cannot begin a write transaction");
            let mut tx = self.tx();
            tx.failed = Some(e.clone());
            let done: Vec<Completion> = batch.into_iter().map(|j| j(&mut tx)).collect();
            done.into_iter().for_each(|c| c(Err(&e)));
            return;
        }
        let listening = self.hooks.changes.receiver_count() > 0 && self.hooks.live_clients.load(std::sync::atomic::Ordering::Relaxed) > 0;
        let mut tx = self.tx();
        tx.collect_changes = listening;
        let done: Vec<Completion> = batch.into_iter().map(|j| j(&mut tx)).collect();
        // Some errors (disk full, I/O) make SQLite roll the whole transaction back by itself; then
        // nothing may be written in autocommit mode, the counters least of all.
        if tx.conn.is_autocommit() && tx.failed.is_none() {
            tx.failed = Some(rolled_back());
        }
        let outcome = tx.finish();
        let (events, changes) = (std::mem::take(&mut tx.events), std::mem::take(&mut tx.changes));
        let outcome = outcome.and_then(|()| self.conn.execute_batch("COMMIT").map_err(db_err));
        match outcome {
            Ok(()) => {
                done.into_iter().for_each(|c| c(Ok(())));
                if let (false, Some(hook)) = (events.is_empty(), &self.hooks.events) {
                    let _ = hook.send(events);
                }
                if !changes.is_empty() {
                    let _ = self.hooks.changes.send(Arc::new(changes));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write batch rolled back");
                let _ = self.conn.execute_batch("ROLLBACK");
                // Caches may hold rows of the rolled-back batch.
                self.ids.clear();
                self.names.clear();
                match load_deleting(&self.conn) {
                    Ok(d) => self.deleting = d,
                    Err(e) => tracing::error!(error = %db_err(e), "cannot reload the deletion jobs after a rollback"),
                }
                done.into_iter().for_each(|c| c(Err(&e)));
            }
        }
    }

    fn tx(&mut self) -> SqliteWriteTx<'_> {
        SqliteWriteTx {
            conn: &self.conn,
            ids: &mut self.ids,
            names: &mut self.names,
            deleting: &mut self.deleting,
            last_key: &mut self.last_key,
            counts: FastMap::default(),
            now_ms: (now_micros() / 1000) as u64,
            failed: None,
            events: Vec::new(),
            collect_changes: false,
            changes: Vec::new(),
        }
    }
}

/// One batch's transaction as the graph rules see it.
struct SqliteWriteTx<'w> {
    conn: &'w Connection,
    ids: &'w mut NameIds,
    names: &'w mut HashMap<Uid, (AppId, UserId)>,
    deleting: &'w mut Vec<(AppId, Uid)>,
    last_key: &'w mut TimeKey,
    /// id → (stored counts, once read; delta of this batch)
    counts: FastMap<Uid, (Option<Counts>, Counts)>,
    now_ms: u64,
    /// The first database failure; once set, every later step fails and the batch rolls back.
    failed: Option<StoreError>,
    /// Events written by this batch, handed to the delivery engine after commit.
    events: Vec<StoredEvent>,
    collect_changes: bool,
    changes: Vec<(AppId, EdgeChange)>,
}

impl SqliteWriteTx<'_> {
    fn guard<T>(&mut self, f: impl FnOnce(&mut Self) -> rusqlite::Result<T>) -> StoreResult<T> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        f(self).map_err(|e| {
            let e = db_err(e);
            self.failed = Some(e.clone());
            e
        })
    }

    /// Drops `key → uid` from the name cache, unless the name already belongs to a newer account.
    fn forget_name(&mut self, key: &(AppId, UserId), uid: Uid) {
        self.ids.forget(key.0, &key.1, uid);
    }

    /// Writes the counter deltas; called once before commit.
    fn finish(&mut self) -> StoreResult<()> {
        let counts = std::mem::take(&mut self.counts);
        self.guard(|tx| {
            let mut st = tx.conn.prepare_cached(
                "UPDATE accounts SET followers = followers + ?2, following = following + ?3, mutual = mutual + ?4 WHERE id = ?1",
            )?;
            // In id order: accounts created together share pages.
            let mut counts: Vec<(Uid, Counts)> = counts.into_iter().map(|(uid, (_, d))| (uid, d)).collect();
            counts.sort_unstable_by_key(|c| c.0);
            for (uid, d) in counts {
                if d != Counts::default() {
                    st.execute(params![uid, d.followers, d.following, d.mutual])?;
                }
            }
            Ok(())
        })
    }
}

impl WriteTx for SqliteWriteTx<'_> {
    fn lookup(&mut self, app: AppId, user: &UserId) -> StoreResult<Option<Uid>> {
        if let Some(id) = self.ids.get(app, user) {
            return Ok(Some(id));
        }
        let found = self.guard(|tx| {
            tx.conn.prepare_cached(ID_BY_NAME)?.query_row(params![app as i64, user.as_str()], |r| r.get::<_, i64>(0)).optional()
        })?;
        if let Some(id) = found {
            self.ids.insert(app, user.clone(), id);
            self.names.insert(id, (app, user.clone()));
        }
        Ok(found)
    }

    fn warm_ids(&mut self, app: AppId, users: &[&UserId]) -> StoreResult<()> {
        // Those not cached, once each and in name order, so the name index is read page after page.
        let mut missing: Vec<&UserId> = users.iter().copied().filter(|u| self.ids.get(app, u).is_none()).collect();
        missing.sort_unstable();
        missing.dedup();
        let found = self.guard(|tx| {
            let mut st = tx.conn.prepare_cached(ID_BY_NAME)?;
            let mut found = Vec::new();
            for u in missing {
                if let Some(id) = st.query_row(params![app as i64, u.as_str()], |r| r.get::<_, i64>(0)).optional()? {
                    found.push((u.clone(), id));
                }
            }
            Ok(found)
        })?;
        for (u, id) in found {
            self.names.insert(id, (app, u.clone()));
            self.ids.insert(app, u, id);
        }
        Ok(())
    }

    fn user_id(&mut self, uid: Uid) -> StoreResult<UserId> {
        if let Some((_, u)) = self.names.get(&uid) {
            return Ok(u.clone());
        }
        let (app, name): (i64, String) = self.guard(|tx| {
            tx.conn.prepare_cached("SELECT app, user_id FROM accounts WHERE id = ?1")?.query_row([uid], |r| Ok((r.get(0)?, r.get(1)?)))
        })?;
        let user = match UserId::parse(&name) {
            Ok(u) => u,
            Err(e) => {
                // Fail the whole batch: this job may already have changed edges and counters.
                let e = StoreError::database(e);
                self.failed = Some(e.clone());
                return Err(e);
            }
        };
        self.names.insert(uid, (app as AppId, user.clone()));
        Ok(user)
    }

    fn upsert_account(&mut self, app: AppId, user: &UserId, nick: Option<&str>, face_url: Option<&str>) -> StoreResult<(Uid, bool)> {
        let existing = self.guard(|tx| {
            tx.conn
                .prepare_cached("SELECT id, nick, face_url FROM accounts WHERE app = ?1 AND user_id = ?2 AND deleted = 0")?
                .query_row(params![app as i64, user.as_str()], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?))
                })
                .optional()
        })?;
        let (id, created) = match existing {
            None => {
                let id = self.guard(|tx| {
                    tx.conn
                        .prepare_cached("INSERT INTO accounts(app, user_id, nick, face_url) VALUES (?1, ?2, ?3, ?4)")?
                        .execute(params![app as i64, user.as_str(), nick, face_url])?;
                    Ok(tx.conn.last_insert_rowid())
                })?;
                (id, true)
            }
            Some((id, old_nick, old_face)) => {
                let nick_changed = nick.is_some() && nick != old_nick.as_deref();
                let face_changed = face_url.is_some() && face_url != old_face.as_deref();
                if nick_changed || face_changed {
                    self.guard(|tx| {
                        tx.conn
                            .prepare_cached(
                                "UPDATE accounts SET nick = coalesce(?2, nick), face_url = coalesce(?3, face_url), profile_seq = profile_seq + 1 WHERE id = ?1",
                            )?
                            .execute(params![id, nick, face_url])
                    })?;
                }
                (id, false)
            }
        };
        self.ids.insert(app, user.clone(), id);
        self.names.insert(id, (app, user.clone()));
        Ok((id, created))
    }

    fn delete_account(&mut self, uid: Uid) -> StoreResult<()> {
        self.guard(|tx| {
            tx.conn.prepare_cached("DELETE FROM accounts WHERE id = ?1")?.execute([uid])?;
            tx.conn.prepare_cached("DELETE FROM deletions WHERE account = ?1")?.execute([uid])
        })?;
        self.counts.remove(&uid);
        self.deleting.retain(|&(_, d)| d != uid);
        // Every cached id has its reverse entry, so this evicts the account without scanning the cache.
        if let Some(key) = self.names.remove(&uid) {
            self.forget_name(&key, uid);
        }
        Ok(())
    }

    fn tombstone(&mut self, job: &Deletion) -> StoreResult<()> {
        let now_ms = self.now_ms as i64;
        self.guard(|tx| {
            tx.conn.prepare_cached("UPDATE accounts SET deleted = 1 WHERE id = ?1")?.execute([job.uid])?;
            tx.conn
                .prepare_cached(
                    "INSERT INTO deletions(account, app, user_id, client_ip, platform, notify, created_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    job.uid,
                    job.app as i64,
                    job.user.as_str(),
                    job.origin.client_ip,
                    job.origin.platform.as_str(),
                    job.notify,
                    now_ms
                ])
        })?;
        self.deleting.push((job.app, job.uid));
        // The name now belongs to no one (a re-import makes a new account); the id keeps its name
        // for the events of the job.
        self.forget_name(&(job.app, job.user.clone()), job.uid);
        self.names.insert(job.uid, (job.app, job.user.clone()));
        Ok(())
    }

    fn deleting(&mut self, app: AppId) -> StoreResult<Vec<Uid>> {
        Ok(self.deleting.iter().filter(|&&(a, _)| a == app).map(|&(_, d)| d).collect())
    }

    fn deletion(&mut self, uid: Uid) -> StoreResult<Option<Deletion>> {
        let row = self.guard(|tx| {
            tx.conn
                .prepare_cached("SELECT app, user_id, client_ip, platform, notify FROM deletions WHERE account = ?1")?
                .query_row([uid], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get(4)?))
                })
                .optional()
        })?;
        let Some((app, user, client_ip, platform, notify)) = row else {
            return Ok(None);
        };
        let user = match UserId::parse(&user) {
            Ok(u) => u,
            Err(e) => {
                let e = StoreError::database(e);
                self.failed = Some(e.clone());
                return Err(e);
            }
        };
        let origin = Origin { client_ip, platform: OptPlatform::parse(&platform) };
        Ok(Some(Deletion { uid, app: app as AppId, user, origin, notify }))
    }

    fn edge(&mut self, src: Uid, dst: Uid) -> StoreResult<Option<TimeKey>> {
        self.guard(|tx| {
            tx.conn.prepare_cached("SELECT t FROM edges WHERE src = ?1 AND dst = ?2")?.query_row([src, dst], |r| r.get(0)).optional()
        })
    }

    fn edge_keys(&mut self, pairs: &[(Uid, Uid)]) -> StoreResult<Vec<Option<TimeKey>>> {
        // Pairs that share an account are read with one scan of its list (its out-list when they
        // share the source, its in-list when they share the target, whichever makes fewer
        // statements); a list much longer than what is asked of it is probed pair by pair instead.
        let mut by_src: FastMap<Uid, Vec<usize>> = FastMap::default();
        let mut by_dst: FastMap<Uid, Vec<usize>> = FastMap::default();
        for (i, &(src, dst)) in pairs.iter().enumerate() {
            by_src.entry(src).or_default().push(i);
            by_dst.entry(dst).or_default().push(i);
        }
        let out = by_src.len() <= by_dst.len();
        let mut groups: Vec<(Uid, Vec<usize>)> = if out { by_src } else { by_dst }.into_iter().collect();
        // In key order: neighbouring lists share pages.
        groups.sort_unstable_by_key(|g| g.0);
        let mut keys = vec![None; pairs.len()];
        self.guard(|tx| {
            let mut point = tx.conn.prepare_cached("SELECT t FROM edges WHERE src = ?1 AND dst = ?2")?;
            // No bound LIMIT (the scan stops by itself): a bound LIMIT made SQLite prepare the
            // statement again at every run, a sixth of a bulk batch's time.
            let mut scan = tx.conn.prepare_cached(if out {
                "SELECT dst, t FROM edges WHERE src = ?1"
            } else {
                "SELECT src, t FROM edges INDEXED BY edges_in WHERE dst = ?1"
            })?;
            let mut found: FastMap<Uid, TimeKey> = FastMap::default();
            for (uid, idx) in groups {
                if idx.len() >= MIN_LIST_SCAN {
                    let limit = idx.len() * 32 + 256;
                    found.clear();
                    let mut rows = scan.query([uid])?;
                    while let Some(r) = rows.next()? {
                        found.insert(r.get(0)?, r.get(1)?);
                        if found.len() >= limit {
                            break;
                        }
                    }
                    if found.len() < limit {
                        for &i in &idx {
                            let other = if out { pairs[i].1 } else { pairs[i].0 };
                            keys[i] = found.get(&other).copied();
                        }
                        continue;
                    }
                }
                for &i in &idx {
                    keys[i] = point.query_row([pairs[i].0, pairs[i].1], |r| r.get(0)).optional()?;
                }
            }
            Ok(())
        })?;
        Ok(keys)
    }

    fn insert_edge_if_absent(&mut self, src: Uid, dst: Uid, key: TimeKey) -> StoreResult<bool> {
        self.guard(|tx| {
            tx.conn.prepare_cached("INSERT OR IGNORE INTO edges(src, dst, t) VALUES (?1, ?2, ?3)")?.execute([src, dst, key]).map(|n| n == 1)
        })
    }

    fn insert_edge(&mut self, src: Uid, dst: Uid, key: TimeKey) -> StoreResult<()> {
        self.guard(|tx| tx.conn.prepare_cached(INSERT_EDGE)?.execute([src, dst, key]).map(drop))
    }

    fn insert_edges(&mut self, rows: &mut [(Uid, Uid, TimeKey)]) -> StoreResult<()> {
        // In key order, so the table's B-tree is written page after page, and many rows a statement.
        rows.sort_unstable();
        self.guard(|tx| {
            let mut many = tx.conn.prepare_cached(&INSERT_EDGES_SQL)?;
            let mut chunks = rows.chunks_exact(EDGES_PER_INSERT);
            let mut values: Vec<i64> = Vec::with_capacity(3 * EDGES_PER_INSERT);
            for chunk in &mut chunks {
                values.clear();
                values.extend(chunk.iter().flat_map(|&(s, d, t)| [s, d, t]));
                many.execute(rusqlite::params_from_iter(values.iter()))?;
            }
            let mut one = tx.conn.prepare_cached(INSERT_EDGE)?;
            for &(s, d, t) in chunks.remainder() {
                one.execute([s, d, t])?;
            }
            Ok(())
        })
    }

    fn delete_edge(&mut self, src: Uid, dst: Uid) -> StoreResult<()> {
        self.guard(|tx| tx.conn.prepare_cached("DELETE FROM edges WHERE src = ?1 AND dst = ?2")?.execute([src, dst]).map(drop))
    }

    fn insert_mutual(&mut self, a: Uid, b: Uid, key: TimeKey) -> StoreResult<()> {
        self.guard(|tx| {
            let mut st = tx.conn.prepare_cached("INSERT INTO mutual(a, t, b) VALUES (?1, ?2, ?3)")?;
            st.execute([a, key, b])?;
            st.execute([b, key, a]).map(drop)
        })
    }

    fn delete_mutual(&mut self, a: Uid, b: Uid, key: TimeKey) -> StoreResult<()> {
        self.guard(|tx| {
            let mut st = tx.conn.prepare_cached("DELETE FROM mutual WHERE a = ?1 AND t = ?2 AND b = ?3")?;
            st.execute([a, key, b])?;
            st.execute([b, key, a]).map(drop)
        })
    }

    fn out_edges(&mut self, uid: Uid, limit: usize) -> StoreResult<Vec<(Uid, TimeKey)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.guard(|tx| {
            tx.conn
                .prepare_cached("SELECT dst, t FROM edges WHERE src = ?1 ORDER BY dst LIMIT ?2")?
                .query_map([uid, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    fn in_edges(&mut self, uid: Uid, limit: usize) -> StoreResult<Vec<(Uid, TimeKey)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.guard(|tx| {
            tx.conn
                .prepare_cached("SELECT src, t FROM edges INDEXED BY edges_in WHERE dst = ?1 ORDER BY t LIMIT ?2")?
                .query_map([uid, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    fn counts(&mut self, uid: Uid) -> StoreResult<Counts> {
        let (base, d) = match self.counts.get(&uid) {
            Some(&(Some(base), d)) => (base, d),
            cached => {
                let d = cached.map_or_else(Counts::default, |&(_, d)| d);
                let base = self.guard(|tx| read_counts(tx.conn, uid))?;
                self.counts.insert(uid, (Some(base), d));
                (base, d)
            }
        };
        Ok(Counts { followers: base.followers + d.followers, following: base.following + d.following, mutual: base.mutual + d.mutual })
    }

    fn add_counts(&mut self, uid: Uid, delta: Counts) -> StoreResult<()> {
        // The stored counters are read only when a rule asks for them (the flush adds the deltas).
        let (_, d) = self.counts.entry(uid).or_insert((None, Counts::default()));
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
        let body = webhook::body(ev.command, ev.from.as_str(), &ev.targets, self.now_ms);
        let now_ms = self.now_ms as i64;
        // A UUIDv7: the commit time in ms, then 74 random bits from the thread's CSPRNG (no system
        // call per event on the writer's hot path).
        let uuid = uuid::Builder::from_unix_timestamp_millis(self.now_ms, &rand::random::<[u8; 10]>()).into_uuid();
        let id = self.guard(|tx| {
            tx.conn
                .prepare_cached(
                    "INSERT INTO events(app, command, from_account, body, client_ip, platform, created_ms, next_at_ms, updated_ms, webhook_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7, ?8)",
                )?
                .execute(params![
                    ev.app as i64,
                    ev.command.as_str(),
                    ev.from.as_str(),
                    body,
                    ev.origin.client_ip,
                    ev.origin.platform.as_str(),
                    now_ms,
                    uuid.as_bytes()
                ])?;
            Ok(tx.conn.last_insert_rowid())
        })?;
        self.events.push(StoredEvent::committed(id, uuid, ev, body, now_ms));
        Ok(())
    }

    fn changed(&mut self, app: AppId, change: EdgeChange) {
        if self.collect_changes {
            self.changes.push((app, change));
        }
    }

    fn bulk_mark(&mut self, run: i64, src: Uid, dst: Uid) -> StoreResult<()> {
        self.guard(|tx| {
            tx.conn
                .prepare_cached("INSERT OR IGNORE INTO bulk_marks(run, src, dst) VALUES (?1, ?2, ?3)")?
                .execute([run, src, dst])
                .map(drop)
        })
    }

    fn bulk_unmarked(
        &mut self,
        app: AppId,
        run: i64,
        after: Option<(Uid, Uid)>,
        limit: usize,
    ) -> StoreResult<(Option<(Uid, Uid)>, Vec<(Uid, Uid, TimeKey)>)> {
        let (s0, d0) = after.unwrap_or((i64::MIN, i64::MIN));
        let rows: Vec<(Uid, Uid, TimeKey, bool)> = self.guard(|tx| {
            tx.conn
                .prepare_cached(
                    "SELECT e.src, e.dst, e.t, EXISTS (SELECT 1 FROM bulk_marks m WHERE m.run = ?2 AND m.src = e.src AND m.dst = e.dst) \
                     FROM edges e JOIN accounts a ON a.id = e.src JOIN accounts b ON b.id = e.dst \
                     WHERE (e.src, e.dst) > (?3, ?4) AND a.app = ?1 AND a.deleted = 0 AND b.deleted = 0 \
                     ORDER BY e.src, e.dst LIMIT ?5",
                )?
                .query_map(params![app as i64, run, s0, d0, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })?;
        let next = if rows.len() >= limit { rows.last().map(|r| (r.0, r.1)) } else { None };
        Ok((next, rows.into_iter().filter(|r| !r.3).map(|r| (r.0, r.1, r.2)).collect()))
    }

    fn bulk_has_marks(&mut self, run: i64) -> StoreResult<bool> {
        self.guard(|tx| tx.conn.prepare_cached("SELECT 1 FROM bulk_marks WHERE run = ?1 LIMIT 1")?.exists([run]))
    }

    fn bulk_forget(&mut self, run: i64, limit: usize) -> StoreResult<u64> {
        self.guard(|tx| {
            tx.conn
                .prepare_cached(
                    "DELETE FROM bulk_marks WHERE (run, src, dst) IN (SELECT run, src, dst FROM bulk_marks WHERE run = ?1 LIMIT ?2)",
                )
                .and_then(|mut st| st.execute(params![run, limit as i64]))
                .map(|n| n as u64)
        })
    }
}

fn rolled_back() -> StoreError {
    StoreError::database(std::io::Error::other("SQLite rolled the transaction back after an error"))
}

/// How a failed savepoint ended.
enum Undo {
    /// Rolled back to the savepoint: the batch's other work stands.
    Done(StoreError),
    /// Could not be undone: the batch must fail.
    Failed,
}

fn savepoint<R>(conn: &Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R, Undo> {
    conn.execute_batch("SAVEPOINT outbox").map_err(|_| Undo::Failed)?;
    match f(conn) {
        Ok(r) => {
            conn.execute_batch("RELEASE outbox").map_err(|_| Undo::Failed)?;
            Ok(r)
        }
        Err(e) => match conn.execute_batch("ROLLBACK TO outbox; RELEASE outbox") {
            Ok(()) => Err(Undo::Done(db_err(e))),
            Err(_) => Err(Undo::Failed),
        },
    }
}

fn read_counts(conn: &Connection, uid: Uid) -> rusqlite::Result<Counts> {
    conn.prepare_cached("SELECT followers, following, mutual FROM accounts WHERE id = ?1")?
        .query_row([uid], |r| Ok(Counts { followers: r.get(0)?, following: r.get(1)?, mutual: r.get(2)? }))
}

struct SqliteReadView<'c> {
    conn: &'c Connection,
    failed: Option<StoreError>,
}

impl SqliteReadView<'_> {
    fn guard<T>(&mut self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        f(self.conn).map_err(|e| {
            let e = db_err(e);
            self.failed.get_or_insert(e.clone());
            e
        })
    }
}

/// The list queries: keyset pages, newest first, `(t, other)` strictly below the cursor.
/// Accounts being deleted are left out before the `LIMIT`, so a page is full whenever more entries follow.
const LIST_FOLLOWERS: &str = "SELECT e.src, e.t, a.user_id, a.nick, a.face_url, a.profile_seq FROM edges e INDEXED BY edges_in \
     JOIN accounts a ON a.id = e.src WHERE e.dst = ?1 AND (e.t, e.src) < (?2, ?3) AND a.deleted = 0 \
     ORDER BY e.t DESC, e.src DESC LIMIT ?4";
const LIST_FOLLOWING: &str = "SELECT e.dst, e.t, a.user_id, a.nick, a.face_url, a.profile_seq FROM edges e \
     JOIN accounts a ON a.id = e.dst WHERE e.src = ?1 AND (e.t, e.dst) < (?2, ?3) AND a.deleted = 0 \
     ORDER BY e.t DESC, e.dst DESC LIMIT ?4";
const LIST_MUTUAL: &str = "SELECT m.b, m.t, a.user_id, a.nick, a.face_url, a.profile_seq FROM mutual m \
     JOIN accounts a ON a.id = m.b WHERE m.a = ?1 AND (m.t, m.b) < (?2, ?3) AND a.deleted = 0 \
     ORDER BY m.t DESC, m.b DESC LIMIT ?4";

impl ReadView for SqliteReadView<'_> {
    fn lookup(&mut self, app: AppId, user: &UserId) -> StoreResult<Option<Uid>> {
        self.guard(|c| c.prepare_cached(ID_BY_NAME)?.query_row(params![app as i64, user.as_str()], |r| r.get(0)).optional())
    }

    fn profile(&mut self, app: AppId, user: &UserId) -> StoreResult<Option<Profile>> {
        self.guard(|c| {
            c.prepare_cached("SELECT nick, face_url, profile_seq FROM accounts WHERE app = ?1 AND user_id = ?2 AND deleted = 0")?
                .query_row(params![app as i64, user.as_str()], |r| {
                    Ok(Profile { nick: r.get(0)?, face_url: r.get(1)?, sequence: r.get(2)? })
                })
                .optional()
        })
    }

    fn has_edge(&mut self, src: Uid, dst: Uid) -> StoreResult<bool> {
        self.guard(|c| c.prepare_cached("SELECT 1 FROM edges WHERE src = ?1 AND dst = ?2")?.exists([src, dst]))
    }

    fn counts(&mut self, uid: Uid) -> StoreResult<Counts> {
        self.guard(|c| read_counts(c, uid))
    }

    fn deleting(&mut self, app: AppId) -> StoreResult<Vec<Uid>> {
        self.guard(|c| c.prepare_cached("SELECT account FROM deletions WHERE app = ?1")?.query_map([app as i64], |r| r.get(0))?.collect())
    }

    fn deletions(&mut self) -> StoreResult<Vec<Uid>> {
        self.guard(|c| {
            c.prepare_cached("SELECT account FROM deletions ORDER BY created_ms, account")?.query_map([], |r| r.get(0))?.collect()
        })
    }

    fn app_totals(&mut self, app: AppId) -> StoreResult<Option<(u64, u64)>> {
        self.guard(|c| {
            c.prepare_cached("SELECT count(*), coalesce(sum(following), 0) FROM accounts WHERE app = ?1 AND deleted = 0")?
                .query_row([app as i64], |r| Ok(Some((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))))
        })
    }

    fn list(&mut self, uid: Uid, kind: ListKind, after: Option<Cursor>, limit: usize) -> StoreResult<Vec<ListEntry>> {
        let sql = match kind {
            ListKind::Followers => LIST_FOLLOWERS,
            ListKind::Following => LIST_FOLLOWING,
            ListKind::Mutual => LIST_MUTUAL,
        };
        let (key, other) = after.map_or((i64::MAX, i64::MAX), |c| (c.key, c.uid));
        self.guard(|c| {
            let mut st = c.prepare_cached(sql)?;
            let rows = st.query_map(params![uid, key, other, limit as i64], |r| {
                let name: String = r.get(2)?;
                Ok(ListEntry {
                    uid: r.get(0)?,
                    key: r.get(1)?,
                    user: UserId::parse(&name)
                        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e)))?,
                    profile: Profile { nick: r.get(3)?, face_url: r.get(4)?, sequence: r.get(5)? },
                })
            })?;
            rows.collect()
        })
    }

    fn export(&mut self, app: AppId, sink: &mut dyn FnMut(ExportRow<'_>) -> bool) -> StoreResult<()> {
        self.guard(|c| {
            let mut st = c.prepare_cached("SELECT user_id, nick, face_url FROM accounts WHERE app = ?1 AND deleted = 0")?;
            let mut rows = st.query([app as i64])?;
            while let Some(r) = rows.next()? {
                let row = ExportRow::Account {
                    user: r.get_ref(0)?.as_str()?,
                    nick: r.get_ref(1)?.as_str_or_null()?,
                    face_url: r.get_ref(2)?.as_str_or_null()?,
                };
                if !sink(row) {
                    return Ok(());
                }
            }
            drop(rows);
            let mut st = c.prepare_cached(
                "SELECT a.user_id, b.user_id, e.t FROM accounts a JOIN edges e ON e.src = a.id JOIN accounts b ON b.id = e.dst \
                 WHERE a.app = ?1 AND a.deleted = 0 AND b.deleted = 0",
            )?;
            let mut rows = st.query([app as i64])?;
            while let Some(r) = rows.next()? {
                if !sink(ExportRow::Follow { from: r.get_ref(0)?.as_str()?, to: r.get_ref(1)?.as_str()?, key: r.get(2)? }) {
                    return Ok(());
                }
            }
            Ok(())
        })
    }
}
