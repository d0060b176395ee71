//! Account deletion as a job, so that deleting an account with a million followers stalls no one.
//!
//! Removing every edge of a large account in one transaction held the single writer for seconds
//! (100,000 followers took 0.7 s), and every other write waited behind it. So a deletion has two
//! steps:
//!
//! 1. [`delete_accounts`] (the `account_delete` API) tombstones each account in the API's own
//!    transaction: from that commit on no API finds it (`30003`, `NotImported`, `70107`), and its
//!    UserID may be imported again as a new, empty account. The same transaction then removes up to a
//!    budget of edges, so an account with fewer edges than that is gone completely and atomically,
//!    exactly as before.
//! 2. The rest is removed by [`purge`], one bounded chunk per write transaction, which a background
//!    task repeats until the account row itself is gone; other writes commit between the chunks. The
//!    job is recorded in the store ([`Deletion`]), so it resumes after a crash or a restart.
//!
//! While a job runs, the remaining edges are still stored and still counted in the other users'
//! stored counters. Reads and the limit checks correct for them with [`effective_counts`]: the accounts
//! being deleted are few (usually none), so the correction costs two point lookups per such account,
//! and stored counters stay the only source of counts (decisions.md §2: never computed by scanning).
//! Lists leave deleted accounts out in the store's list queries, before their `LIMIT`.
//!
//! Every removed edge still owes its `Follow.CallbackAfterFollowDelete` (decisions.md §2), written in
//! the transaction that removes the edge, with the `ClientIP`/`OptPlatform` of the deletion request and
//! the subscription as it was then. The account's own follows come first, in chunks of at most 20
//! targets (`From_Account` = the deleted account), then one event per follower (`To_Account` = the
//! deleted account); within one transaction the events are grouped by `From_Account`. A large
//! deletion's events carry the commit times of their chunks, so they arrive over the job's duration.
//! A UserID re-imported during its old account's job is a new account; when it follows or is followed
//! by someone the old account still has an edge with, that old edge goes first ([`supersede`]), so its
//! delete event never follows the new edge's add event.

use followd_protocol::{code, CallbackCommand, UserId};
use std::collections::HashMap;

use crate::write::{distinct, emit_targets, unlink, ItemResult, WriteContext};
use crate::{AppId, Counts, Deletion, GraphError, Origin, StoreResult, Uid, WriteTx};

/// How many edges' worth of work removing an edge costs when it also owes a webhook event: writing
/// the event (its JSON body and outbox row) and delivering it take about seven times the removal
/// itself (`followd-bench delete` removes about 190,000 edges a second without events and 25,000
/// with them). Chunk budgets count edges without events, so a chunk holds the writer about as long
/// whether the app subscribes to `Follow.CallbackAfterFollowDelete` or not.
pub const EVENT_WEIGHT: usize = 8;

/// The edges one transaction removes for a budget of `budget` edges without events
/// (`deletion_chunk_edges`), when each edge owes an event (`notify`) or not.
pub fn chunk_edges(budget: usize, notify: bool) -> usize {
    if notify {
        budget.div_ceil(EVENT_WEIGHT)
    } else {
        budget
    }
}

/// What [`delete_accounts`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// One result per distinct account, in request order (`70107` for an unknown one).
    pub results: Vec<ItemResult>,
    /// Edges removed in this transaction.
    pub removed: usize,
    /// Accounts tombstoned whose remaining edges are left to [`purge`].
    pub unfinished: usize,
}

/// `account_delete`: tombstones each account, then removes up to [`chunk_edges`]`(budget)` of their
/// edges (shared by all the accounts of the call, in request order) and every account left with
/// none. An unknown account gets `70107`. The remaining edges are [`purge`]'s.
pub fn delete_accounts(tx: &mut dyn WriteTx, cx: &WriteContext, users: &[UserId], budget: usize) -> Result<Deleted, GraphError> {
    let budget = chunk_edges(budget, cx.subscriptions.delete);
    let mut results = Vec::with_capacity(users.len());
    let mut tombstoned = Vec::new();
    for user in distinct(users) {
        let Some(uid) = tx.lookup(cx.app, &user)? else {
            results.push(ItemResult::err(&user, code::ACCOUNT_NOT_FOUND, "account does not exist"));
            continue;
        };
        let job = Deletion { uid, app: cx.app, user: user.clone(), origin: cx.origin.clone(), notify: cx.subscriptions.delete };
        tx.tombstone(&job)?;
        tombstoned.push(uid);
        results.push(ItemResult::ok(&user));
    }
    let mut removed = Vec::new();
    let mut finished = Vec::new();
    for &uid in &tombstoned {
        let left = budget.saturating_sub(removed.len());
        if remove_edges(tx, cx.app, uid, left, &mut removed)? {
            finished.push(uid);
        }
    }
    // The events name the accounts, so they are written before the rows go.
    if cx.subscriptions.delete {
        emit_grouped(tx, cx.app, &cx.origin, &removed)?;
    }
    for &uid in &finished {
        tx.delete_account(uid)?;
    }
    Ok(Deleted { results, removed: removed.len(), unfinished: tombstoned.len() - finished.len() })
}

/// What one [`purge`] chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Edges removed.
    pub removed: usize,
    /// The account is gone, edges, row and job record.
    pub done: bool,
}

/// Removes up to [`chunk_edges`]`(budget)` edges of the account being deleted, `uid`, with their
/// counters, mutual records and owed events, and the account itself once it has none left. Each chunk reads only the
/// rows it removes, so a job costs the same per edge from its first chunk to its last. A finished or
/// unknown job is done at once.
pub fn purge(tx: &mut dyn WriteTx, uid: Uid, budget: usize) -> Result<Purged, GraphError> {
    let Some(job) = tx.deletion(uid)? else {
        return Ok(Purged { removed: 0, done: true });
    };
    let mut removed = Vec::new();
    let done = remove_edges(tx, job.app, uid, chunk_edges(budget, job.notify), &mut removed)?;
    if job.notify {
        emit_grouped(tx, job.app, &job.origin, &removed)?;
    }
    if done {
        tx.delete_account(uid)?;
    }
    Ok(Purged { removed: removed.len(), done })
}

/// Called before `src` follows `dst`: removes the edge between the same two UserIDs that an account
/// being deleted still holds (the old account of a re-imported UserID), with the delete event its job
/// owes. An app that mirrors the graph by UserID must see that delete before this follow's add; left
/// to the job, it could come after and undo the new edge in the mirror. Costs nothing while no
/// account of the app is being deleted.
pub(crate) fn supersede(tx: &mut dyn WriteTx, app: AppId, src: Uid, dst: Uid, deleting: &[Uid]) -> Result<(), GraphError> {
    if deleting.is_empty() {
        return Ok(());
    }
    let (from, to) = (tx.user_id(src)?, tx.user_id(dst)?);
    let (mut sources, mut targets) = (vec![src], vec![dst]);
    for &d in deleting {
        let name = tx.user_id(d)?;
        if name == from {
            sources.push(d);
        }
        if name == to {
            targets.push(d);
        }
    }
    for &s in &sources {
        for &t in &targets {
            if (s, t) == (src, dst) {
                continue;
            }
            let Some(key) = tx.edge(s, t)? else { continue };
            unlink(tx, app, s, t, key)?;
            let owner = if s != src { s } else { t };
            if let Some(job) = tx.deletion(owner)?.filter(|j| j.notify) {
                emit_targets(tx, app, CallbackCommand::FollowDelete, &job.origin, &from, std::slice::from_ref(&to))?;
            }
        }
    }
    Ok(())
}

/// Removes up to `budget` edges of `uid`, its own follows first, then its followers, appending each
/// `(src, dst)` to `removed`; true when none is left.
fn remove_edges(tx: &mut dyn WriteTx, app: AppId, uid: Uid, budget: usize, removed: &mut Vec<(Uid, Uid)>) -> Result<bool, GraphError> {
    // One row past the budget tells whether any is left, so an account of exactly `budget` edges is
    // finished in this chunk.
    let out = tx.out_edges(uid, budget.saturating_add(1))?;
    for &(dst, key) in out.iter().take(budget) {
        unlink(tx, app, uid, dst, key)?;
        removed.push((uid, dst));
    }
    if out.len() > budget {
        return Ok(false);
    }
    let left = budget - out.len();
    let inn = tx.in_edges(uid, left.saturating_add(1))?;
    for &(src, key) in inn.iter().take(left) {
        unlink(tx, app, src, uid, key)?;
        removed.push((src, uid));
    }
    Ok(inn.len() <= left)
}

/// Emits the delete events of `removed`, grouped by `From_Account` in the order first met, at most
/// 20 targets an event.
fn emit_grouped(tx: &mut dyn WriteTx, app: AppId, origin: &Origin, removed: &[(Uid, Uid)]) -> Result<(), GraphError> {
    let mut groups: Vec<(Uid, Vec<UserId>)> = Vec::new();
    let mut index: HashMap<Uid, usize> = HashMap::new();
    for &(src, dst) in removed {
        let i = *index.entry(src).or_insert_with(|| {
            groups.push((src, Vec::new()));
            groups.len() - 1
        });
        let to = tx.user_id(dst)?;
        groups[i].1.push(to);
    }
    for (src, targets) in groups {
        let from = tx.user_id(src)?;
        emit_targets(tx, app, CallbackCommand::FollowDelete, origin, &from, &targets)?;
    }
    Ok(())
}

/// The counters of `uid` as every API must show them: its stored counters without the edges it still
/// has with the accounts being deleted (`deleting`, from [`WriteTx::deleting`] or
/// [`crate::ReadView::deleting`]), as if those were already gone. `edge(src, dst)` tells whether an
/// edge exists. The counters of an account being deleted are never shown, so it is not corrected
/// against itself.
pub fn effective_counts(
    stored: Counts,
    uid: Uid,
    deleting: &[Uid],
    mut edge: impl FnMut(Uid, Uid) -> StoreResult<bool>,
) -> StoreResult<Counts> {
    let mut c = stored;
    for &d in deleting.iter().filter(|&&d| d != uid) {
        let (follows, followed) = (edge(uid, d)?, edge(d, uid)?);
        c.following -= i64::from(follows);
        c.followers -= i64::from(followed);
        c.mutual -= i64::from(follows && followed);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_chunk_of_edges_that_owe_events_is_smaller() {
        assert_eq!(chunk_edges(400, false), 400);
        assert_eq!(chunk_edges(400, true), 400 / EVENT_WEIGHT);
        assert_eq!(chunk_edges(1, true), 1, "a chunk always makes progress");
    }

    #[test]
    fn effective_counts_leave_out_every_edge_with_an_account_being_deleted() {
        // 1 follows 2 and 3; 2 follows 1 (mutual); 4 follows 1. Accounts 2 and 4 are being deleted.
        let edges: HashSet<(Uid, Uid)> = [(1, 2), (1, 3), (2, 1), (4, 1)].into();
        let stored = Counts { followers: 2, following: 2, mutual: 1 };
        let got = effective_counts(stored, 1, &[2, 4], |s, d| Ok(edges.contains(&(s, d)))).unwrap();
        assert_eq!(got, Counts { followers: 0, following: 1, mutual: 0 });
        // Nothing being deleted: the stored counters as they are, without a lookup.
        let got = effective_counts(stored, 1, &[], |_, _| panic!("no lookup")).unwrap();
        assert_eq!(got, stored);
        // An account being deleted is not corrected against itself.
        let own = Counts { followers: 1, following: 1, mutual: 1 };
        assert_eq!(effective_counts(own, 2, &[2], |s, d| Ok(edges.contains(&(s, d)))).unwrap(), own);
    }
}
