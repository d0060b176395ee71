//! The follow graph's rules, written once for every storage backend.
//!
//! A backend supplies two small primitive interfaces: [`WriteTx`] (one step of a write transaction)
//! and [`ReadView`] (a consistent snapshot). The functions in [`write`] and [`read`] implement the
//! protocol's semantics on top of them: follow and unfollow with their limits, the three lists with
//! keyset cursors, the counters, account import and deletion, and which webhook events each change
//! owes. Because the events are emitted through the same [`WriteTx`] as the edges, they commit in the
//! same transaction (decisions.md §4). [`deletion`] explains why deleting an account is a job.

pub mod bulk;
pub mod cursor;
pub mod deletion;
pub mod outbox;
pub mod read;
pub mod write;

use followd_protocol::{CallbackCommand, OptPlatform, UserId};
use std::future::Future;
use std::pin::Pin;

pub use cursor::Cursor;

/// An app's SDKAppID.
pub type AppId = u64;
/// A UserID interned to an integer (unique across the store, so it names the app too).
pub type Uid = i64;
/// The ordering key of an edge: when the relation began, in ticks of [`TICK_MICROS`] µs since
/// [`EPOCH_SECS`]. Keys issued by one writer are strictly increasing, so two relations never share a
/// time and the "newest first" order is total. The unit keeps a key within SQLite's 6-byte integers
/// until 2042 (8 bytes after that, still correct) while allowing 250,000 keys a second without running
/// ahead of the clock.
pub type TimeKey = i64;

/// The epoch of [`TimeKey`]: 2025-01-01T00:00:00Z.
pub const EPOCH_SECS: u64 = 1_735_689_600;
/// Microseconds per [`TimeKey`] tick.
pub const TICK_MICROS: i64 = 4;

/// The [`TimeKey`] tick of a wall-clock time in µs since 1970.
pub fn key_of_micros(unix_micros: i64) -> TimeKey {
    (unix_micros - EPOCH_SECS as i64 * 1_000_000).div_euclid(TICK_MICROS)
}

/// Converts an ordering key to the protocol's `FollowTime` (Unix seconds).
pub fn follow_time_secs(key: TimeKey) -> u64 {
    (micros_of_key(key).div_euclid(1_000_000)).max(0) as u64
}

/// The wall-clock time of a [`TimeKey`], µs since 1970 (exact: the inverse of [`key_of_micros`] on
/// multiples of [`TICK_MICROS`]). Keys before [`EPOCH_SECS`] are negative: imported follows may be
/// older than the epoch.
pub fn micros_of_key(key: TimeKey) -> i64 {
    EPOCH_SECS as i64 * 1_000_000 + key * TICK_MICROS
}

/// A user's three counters, stored and kept exact by every write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Users who follow this one (in-degree).
    pub followers: i64,
    /// Users this one follows (out-degree).
    pub following: i64,
    /// Users who follow this one and are followed back.
    pub mutual: i64,
}

/// What a user's profile holds for `ProfileItem`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// `Tag_Profile_IM_Nick`, when set.
    pub nick: Option<String>,
    /// `Tag_Profile_IM_Image`, when set.
    pub face_url: Option<String>,
    /// How many times the profile changed.
    pub sequence: i64,
}

/// Which of a user's lists (`follow_get`'s `FollowType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// 1: fans.
    Followers,
    /// 2: follows.
    Following,
    /// 3: mutual follows.
    Mutual,
}

impl ListKind {
    /// Parses `follow_get`'s `FollowType`.
    pub fn from_wire(n: u64) -> Option<Self> {
        match n {
            1 => Some(ListKind::Followers),
            2 => Some(ListKind::Following),
            3 => Some(ListKind::Mutual),
            _ => None,
        }
    }
}

/// One entry of a list page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The other user.
    pub user: UserId,
    /// Its interned id (part of the cursor).
    pub uid: Uid,
    /// When the listed relation began.
    pub key: TimeKey,
    /// Its profile.
    pub profile: Profile,
}

/// Who caused a change, for the webhook's `ClientIP` and `OptPlatform`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The client's address.
    pub client_ip: String,
    /// The client's platform.
    pub platform: OptPlatform,
}

/// Which webhook commands an app subscribes to at the moment of a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subscriptions {
    /// `Follow.CallbackAfterFollowAdd` is owed.
    pub add: bool,
    /// `Follow.CallbackAfterFollowDelete` is owed.
    pub delete: bool,
}

impl StoreError {
    /// Wraps a backend's error.
    pub fn database(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Database(std::sync::Arc::new(e))
    }
}

impl Subscriptions {
    /// Whether `cmd` is subscribed.
    pub fn wants(self, cmd: CallbackCommand) -> bool {
        match cmd {
            CallbackCommand::FollowAdd => self.add,
            CallbackCommand::FollowDelete => self.delete,
        }
    }
}

/// A webhook event owed by a change, written in the change's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The app.
    pub app: AppId,
    /// Which webhook.
    pub command: CallbackCommand,
    /// `From_Account`.
    pub from: UserId,
    /// The targets whose edge changed (at most 20).
    pub targets: Vec<UserId>,
    /// Who caused it.
    pub origin: Origin,
}

/// One edge that a committed write added or removed (for live notifications).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeChange {
    /// The follower.
    pub from: UserId,
    /// The followee.
    pub to: UserId,
    /// Added (true) or removed.
    pub added: bool,
    /// Whether the pair became (on add) or stopped being (on removal) mutual.
    pub mutual: bool,
}

/// An account being deleted: tombstoned (no API sees it and its UserID may be imported again) while
/// its edges are removed chunk by chunk. It keeps what the webhooks of those edges need, as they were
/// when the deletion was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// The account.
    pub uid: Uid,
    /// Its app.
    pub app: AppId,
    /// Its UserID (for the webhooks' `From_Account`/`To_Account` and for logs).
    pub user: UserId,
    /// Who asked for the deletion: `ClientIP` and `OptPlatform` of every event it owes.
    pub origin: Origin,
    /// Whether `Follow.CallbackAfterFollowDelete` was subscribed when the deletion was asked for.
    pub notify: bool,
}

/// A failure of the storage layer. Domain outcomes are never errors of this kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database failed; the whole transaction was rolled back.
    #[error("database error: {0}")]
    Database(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// The store is shutting down and takes no more work.
    #[error("the store is shutting down")]
    Closed,
    /// The write queue is full: the request was refused at once, nothing was applied.
    #[error("the write queue is full")]
    Busy,
}

/// A request-level refusal: nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// A user named at request level (`From_Account`) was never imported.
    #[error("account {0} does not exist")]
    NoSuchAccount(UserId),
    /// A parameter is out of range (the message says which).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result of one step of a write or read.
pub type StoreResult<T> = Result<T, StoreError>;

/// The primitives of one write transaction. Implementations keep counters in a cache that they flush
/// before commit; all of it commits or rolls back together.
pub trait WriteTx {
    /// The interned id of `user` in `app`, if imported.
    fn lookup(&mut self, app: AppId, user: &UserId) -> StoreResult<Option<Uid>>;
    /// The UserID of an interned id.
    fn user_id(&mut self, uid: Uid) -> StoreResult<UserId>;
    /// Imports `user` or, when it exists, updates the given profile fields; true when newly created.
    fn upsert_account(&mut self, app: AppId, user: &UserId, nick: Option<&str>, face_url: Option<&str>) -> StoreResult<(Uid, bool)>;
    /// Removes an account row and its [`Deletion`] record, if any (its edges must already be gone).
    fn delete_account(&mut self, uid: Uid) -> StoreResult<()>;
    /// Marks an account deleted and records its deletion job: from now on no lookup finds it, its
    /// UserID may be imported again (as a new account), and [`WriteTx::deleting`] lists it until
    /// [`WriteTx::delete_account`] removes it.
    fn tombstone(&mut self, job: &Deletion) -> StoreResult<()>;
    /// The accounts of `app` that are tombstoned but not yet removed (usually none).
    fn deleting(&mut self, app: AppId) -> StoreResult<Vec<Uid>>;
    /// The deletion job of a tombstoned account; `None` once it is finished.
    fn deletion(&mut self, uid: Uid) -> StoreResult<Option<Deletion>>;
    /// The ordering key of edge `src → dst`, if it exists.
    fn edge(&mut self, src: Uid, dst: Uid) -> StoreResult<Option<TimeKey>>;
    /// What [`WriteTx::edge`] answers for each pair `(src, dst)`, in order, in one step: a store may
    /// read many at once (bulk import looks up every follow's reverse edge of a batch before the
    /// batch changes anything).
    fn edge_keys(&mut self, pairs: &[(Uid, Uid)]) -> StoreResult<Vec<Option<TimeKey>>> {
        pairs.iter().map(|&(src, dst)| self.edge(src, dst)).collect()
    }
    /// Adds edge `src → dst` (both orderings).
    fn insert_edge(&mut self, src: Uid, dst: Uid, key: TimeKey) -> StoreResult<()>;
    /// Adds edge `src → dst` unless it exists (then nothing changes); true when added. One step
    /// where [`WriteTx::edge`] then [`WriteTx::insert_edge`] would take two (bulk import).
    fn insert_edge_if_absent(&mut self, src: Uid, dst: Uid, key: TimeKey) -> StoreResult<bool>;
    /// Adds edges `(src, dst, key)` that the caller knows are absent, in one step; the store may
    /// reorder `rows` to write them in its key order (bulk import writes a batch's new edges at its
    /// end, sorted, instead of one by one in the file's order).
    fn insert_edges(&mut self, rows: &mut [(Uid, Uid, TimeKey)]) -> StoreResult<()> {
        rows.iter().try_for_each(|&(src, dst, key)| self.insert_edge(src, dst, key))
    }
    /// Creates an account without a profile for each of `users` of `app` (distinct, in order) that
    /// does not exist; returns how many it created. One step where [`WriteTx::upsert_account`] takes
    /// one per account (bulk import creates up to a hundred thousand a batch).
    fn create_accounts(&mut self, app: AppId, users: &[&UserId]) -> StoreResult<u64> {
        let mut created = 0;
        for u in users {
            created += u64::from(self.upsert_account(app, u, None, None)?.1);
        }
        Ok(created)
    }
    /// A hint that the ids of `users` of `app` (in any order, repeats allowed) are about to be looked
    /// up one by one: a store may read them all at once (bulk import names up to a hundred thousand
    /// accounts a batch).
    fn warm_ids(&mut self, _app: AppId, _users: &[&UserId]) -> StoreResult<()> {
        Ok(())
    }
    /// Removes edge `src → dst` (both orderings).
    fn delete_edge(&mut self, src: Uid, dst: Uid) -> StoreResult<()>;
    /// Records that `a` and `b` follow each other since `key` (both directions).
    fn insert_mutual(&mut self, a: Uid, b: Uid, key: TimeKey) -> StoreResult<()>;
    /// Removes the mutual record of `a` and `b` (both directions).
    fn delete_mutual(&mut self, a: Uid, b: Uid, key: TimeKey) -> StoreResult<()>;
    /// Up to `limit` edges out of `uid`: `(dst, key)`, in `dst` order (the edges' own key order, so
    /// reading the first ones costs the same however many there are).
    fn out_edges(&mut self, uid: Uid, limit: usize) -> StoreResult<Vec<(Uid, TimeKey)>>;
    /// Up to `limit` edges into `uid`: `(src, key)`, oldest first.
    fn in_edges(&mut self, uid: Uid, limit: usize) -> StoreResult<Vec<(Uid, TimeKey)>>;
    /// Current stored counters (including this transaction's changes; see
    /// [`deletion::effective_counts`]).
    fn counts(&mut self, uid: Uid) -> StoreResult<Counts>;
    /// Adds deltas to the counters.
    fn add_counts(&mut self, uid: Uid, delta: Counts) -> StoreResult<()>;
    /// A fresh ordering key: the current time, strictly greater than any key issued before.
    fn next_key(&mut self) -> TimeKey;
    /// Records a webhook event in this transaction.
    fn emit(&mut self, event: NewEvent) -> StoreResult<()>;
    /// Records an edge change for live notifications after commit.
    fn changed(&mut self, app: AppId, change: EdgeChange);
    /// Says which accounts and edges a follow or unfollow of `from` is about to touch, so that a
    /// backend whose primitives are round trips can read them (and take their locks) in a few
    /// statements. Changes nothing the rules see; the default does nothing.
    fn prefetch(&mut self, _app: AppId, _from: &UserId, _targets: &[UserId]) -> StoreResult<()> {
        Ok(())
    }
    /// [`WriteTx::prefetch`] for a follow (`follow_add`), which reads the follower's counters (and
    /// may lock them, see [`WriteTx::counts`]) as soon as it adds an edge: a backend may read them
    /// with the rest. Changes nothing the rules see; the default is [`WriteTx::prefetch`].
    fn prefetch_add(&mut self, app: AppId, from: &UserId, targets: &[UserId]) -> StoreResult<()> {
        self.prefetch(app, from, targets)
    }
    /// Marks edge `src → dst` as named by bulk-import run `run` (`replace` mode; see [`bulk`]).
    /// Marking twice is harmless.
    fn bulk_mark(&mut self, run: i64, src: Uid, dst: Uid) -> StoreResult<()>;
    /// Looks at up to `limit` edges of `app` whose two accounts are live, in `(src, dst)` order
    /// strictly after `after`, and returns those that run `run` did not mark, `(src, dst, key)`. The
    /// position is that of the last edge looked at, or `None` when fewer than `limit` were left
    /// (the end).
    #[allow(clippy::type_complexity)]
    fn bulk_unmarked(
        &mut self,
        app: AppId,
        run: i64,
        after: Option<(Uid, Uid)>,
        limit: usize,
    ) -> StoreResult<(Option<(Uid, Uid)>, Vec<(Uid, Uid, TimeKey)>)>;
    /// Whether run `run` marked any edge.
    fn bulk_has_marks(&mut self, run: i64) -> StoreResult<bool>;
    /// Drops up to `limit` marks of run `run`; returns how many were dropped (0: none left).
    fn bulk_forget(&mut self, run: i64, limit: usize) -> StoreResult<u64>;
}

/// One record of an app's export, borrowed from the store's row (see [`ReadView::export`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportRow<'a> {
    /// A live account with its profile.
    Account {
        /// The UserID.
        user: &'a str,
        /// `Nick`, when set.
        nick: Option<&'a str>,
        /// `FaceUrl`, when set.
        face_url: Option<&'a str>,
    },
    /// A follow between two live accounts, with its ordering key.
    Follow {
        /// `From_Account`.
        from: &'a str,
        /// `To_Account`.
        to: &'a str,
        /// When it began.
        key: TimeKey,
    },
}

/// The primitives of a consistent read snapshot.
pub trait ReadView {
    /// The interned id of `user` in `app`, if imported.
    fn lookup(&mut self, app: AppId, user: &UserId) -> StoreResult<Option<Uid>>;
    /// Whether edge `src → dst` exists.
    fn has_edge(&mut self, src: Uid, dst: Uid) -> StoreResult<bool>;
    /// Stored counters (which still include the edges of accounts being deleted: see
    /// [`deletion::effective_counts`]).
    fn counts(&mut self, uid: Uid) -> StoreResult<Counts>;
    /// The accounts of `app` that are tombstoned but not yet removed (usually none).
    fn deleting(&mut self, app: AppId) -> StoreResult<Vec<Uid>>;
    /// Every unfinished deletion job, of every app, oldest first.
    fn deletions(&mut self) -> StoreResult<Vec<Uid>>;
    /// A user's profile, if imported.
    fn profile(&mut self, app: AppId, user: &UserId) -> StoreResult<Option<Profile>>;
    /// Up to `limit` entries of a list, newest first, strictly after `after`, leaving out accounts
    /// being deleted.
    fn list(&mut self, uid: Uid, kind: ListKind, after: Option<Cursor>, limit: usize) -> StoreResult<Vec<ListEntry>>;
    /// The live accounts of `app` and the follow edges they hold, for the console's overview (a scan
    /// of the app's accounts: not for the request path). `None` where a backend does not count them.
    fn app_totals(&mut self, _app: AppId) -> StoreResult<Option<(u64, u64)>> {
        Ok(None)
    }
    /// Streams every live account of `app` and then every follow between live accounts of `app`,
    /// all from this snapshot, to `sink`, without holding them in memory; stops early when `sink`
    /// returns `false`.
    fn export(&mut self, app: AppId, sink: &mut dyn FnMut(ExportRow<'_>) -> bool) -> StoreResult<()>;
}

/// What a follow or unfollow job is about to read, said when it is queued ([`try_write_prefetched`]),
/// so that a backend whose reads are round trips can read those of a whole batch of jobs together
/// (PostgreSQL reads a batch's accounts, pairs and counters in two round trips instead of two per
/// job). A hint only: the rules still read through [`WriteTx`], and a job whose hint names too little
/// or too much is answered exactly as without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefetch {
    /// The app.
    pub app: AppId,
    /// `From_Account`.
    pub from: UserId,
    /// The targets, as the request names them.
    pub targets: Vec<UserId>,
    /// Whether the rules read `from`'s counters (a follow under a limit that counts them).
    pub counts: bool,
    /// Whether the job adds edges (a follow): a backend shared by several processes keeps the
    /// accounts it names from being deleted until it commits.
    pub adds: bool,
}

/// A unit of write work: runs inside the writer's transaction and returns what to do once the
/// transaction's outcome is known (`Ok` = committed). A backend may run it again in a new transaction
/// when the first one failed for a reason that a retry cures (a serialization failure or a deadlock
/// between nodes of one PostgreSQL database); only the completion of the run that committed answers.
pub type WriteJob = Box<dyn FnMut(&mut dyn WriteTx) -> Completion + Send>;
/// Called with the commit's outcome.
pub type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// A unit of read work on a snapshot.
pub type ReadJob = Box<dyn FnOnce(&mut dyn ReadView) + Send>;

/// A storage backend: it runs write jobs in durable, group-committed transactions and read jobs on
/// consistent snapshots. Chosen once at start-up.
pub trait Store: Send + Sync + 'static {
    /// Queues a write job, or refuses it at once with [`StoreError::Busy`] when the write queue is
    /// full (API requests: overload gets a fast answer). A job whose closure reports a store failure
    /// rolls back its whole batch.
    fn submit_write(&self, job: WriteJob) -> Result<(), StoreError>;
    /// [`Store::submit_write`] of a job that says what it will read; the default ignores the hint.
    fn submit_write_prefetched(&self, job: WriteJob, prefetch: Prefetch) -> Result<(), StoreError> {
        let _ = prefetch;
        self.submit_write(job)
    }
    /// Queues a write job, waiting for room in the queue: for the server's own work (the delivery
    /// log, background jobs), which must not fail because API traffic filled the queue.
    fn submit_write_waiting(&self, job: WriteJob) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(std::future::ready(self.submit_write(job)))
    }
    /// Runs a read job off the async runtime.
    fn submit_read(&self, job: ReadJob) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>;
    /// The most follows one write job should name when it can choose (bulk import splits its batches
    /// to fit): a backend that locks each pair it looks at (PostgreSQL's advisory locks live in a
    /// shared lock table of a few thousand entries) says how many it can hold at once.
    fn max_pairs_per_job(&self) -> usize {
        usize::MAX
    }
}

/// Runs `f` in a write transaction and resolves once it has committed (or failed), waiting for room
/// in the write queue: for the server's own work. API requests use [`try_write`].
pub async fn write<S, R, F>(store: &S, f: F) -> Result<R, GraphError>
where
    S: Store + ?Sized,
    R: Send + 'static,
    F: FnMut(&mut dyn WriteTx) -> Result<R, GraphError> + Send + 'static,
{
    let (job, rx) = write_job(f);
    store.submit_write_waiting(job).await?;
    rx.await.unwrap_or_else(|_| Err(unanswered()))
}

/// Like [`write`], but refuses at once with [`StoreError::Busy`] when the write queue is full, so an
/// overloaded server answers instead of queueing without bound.
pub async fn try_write<S, R, F>(store: &S, f: F) -> Result<R, GraphError>
where
    S: Store + ?Sized,
    R: Send + 'static,
    F: FnMut(&mut dyn WriteTx) -> Result<R, GraphError> + Send + 'static,
{
    try_write_prefetched(store, None, f).await
}

/// [`try_write`] of a job that says what it will read (see [`Prefetch`]).
pub async fn try_write_prefetched<S, R, F>(store: &S, prefetch: Option<Prefetch>, f: F) -> Result<R, GraphError>
where
    S: Store + ?Sized,
    R: Send + 'static,
    F: FnMut(&mut dyn WriteTx) -> Result<R, GraphError> + Send + 'static,
{
    let (job, rx) = write_job(f);
    match prefetch {
        Some(p) => store.submit_write_prefetched(job, p)?,
        None => store.submit_write(job)?,
    }
    rx.await.unwrap_or_else(|_| Err(unanswered()))
}

/// A queued job dropped without an answer: the writer died with it (a store that shuts down runs
/// every job it accepted).
fn unanswered() -> GraphError {
    GraphError::Store(StoreError::database(std::io::Error::other("the writer stopped before answering")))
}

type Answer<R> = tokio::sync::oneshot::Receiver<Result<R, GraphError>>;

/// Wraps graph rules into a job that answers through a channel. A caller that gave up (a request
/// past its deadline drops the receiver) before the writer reached its job gets nothing applied:
/// the job checks before running the rules.
fn write_job<R, F>(mut f: F) -> (WriteJob, Answer<R>)
where
    R: Send + 'static,
    F: FnMut(&mut dyn WriteTx) -> Result<R, GraphError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Shared by every run of the job: the completion that is called (the committed run's, or the
    // last failed one's) takes the sender; the completions of runs that were retried are dropped.
    let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
    let job: WriteJob = Box::new(move |wtx| {
        if tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_none_or(|t| t.is_closed()) {
            return Box::new(|_| {});
        }
        let outcome = f(wtx);
        let tx = tx.clone();
        Box::new(move |commit: Result<(), &StoreError>| {
            let r = match commit {
                Ok(()) => outcome,
                Err(e) => Err(GraphError::Store(e.clone())),
            };
            if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(r);
            }
        })
    });
    (job, rx)
}

/// Runs `f` on a read snapshot.
pub async fn read<S, R, F>(store: &S, f: F) -> Result<R, GraphError>
where
    S: Store + ?Sized,
    R: Send + 'static,
    F: FnOnce(&mut dyn ReadView) -> Result<R, GraphError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    store
        .submit_read(Box::new(move |view| {
            // A caller that gave up (past its deadline) no longer needs the answer.
            if !tx.is_closed() {
                let _ = tx.send(f(view));
            }
        }))
        .await?;
    rx.await.unwrap_or(Err(GraphError::Store(StoreError::Closed)))
}
