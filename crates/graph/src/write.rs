//! Write rules: follow, unfollow, import (account deletion is in [`crate::deletion`]). Each function
//! checks every request-level condition before it writes anything, so a refused request changes
//! nothing.

use followd_protocol::{code, CallbackCommand, UserId};

use crate::deletion::{effective_counts, supersede};
use crate::{AppId, Counts, EdgeChange, GraphError, NewEvent, Origin, Prefetch, Subscriptions, TimeKey, Uid, WriteTx};

/// The most targets one webhook event lists (the REST limit of one call).
pub const MAX_EVENT_TARGETS: usize = 20;

/// Per-app limits on the graph (decisions.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How many users one user may follow (`32100`).
    pub max_following: Option<i64>,
    /// How many followers one user may have (`32101`); unlimited by default.
    pub max_followers: Option<i64>,
    /// How many mutual follows one user may have (`32102`/`32103`); unlimited by default.
    pub max_mutual: Option<i64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_following: Some(5000), max_followers: None, max_mutual: None }
    }
}

/// Everything a write needs to know about its app and caller.
#[derive(Debug, Clone)]
pub struct WriteContext {
    /// The app.
    pub app: AppId,
    /// Its limits.
    pub limits: Limits,
    /// Which webhooks it wants right now.
    pub subscriptions: Subscriptions,
    /// Who is calling.
    pub origin: Origin,
}

/// The outcome for one target of a batch call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemResult {
    /// The target.
    pub user: UserId,
    /// `0` or a Tencent error code.
    pub code: u32,
    /// Empty on success.
    pub info: &'static str,
}

impl ItemResult {
    pub(crate) fn ok(user: &UserId) -> Self {
        ItemResult { user: user.clone(), code: code::OK, info: "" }
    }
    pub(crate) fn err(user: &UserId, code: u32, info: &'static str) -> Self {
        ItemResult { user: user.clone(), code, info }
    }
}

/// Removes repeated targets, keeping the first occurrence's position.
pub fn distinct(targets: &[UserId]) -> Vec<UserId> {
    let mut seen = std::collections::HashSet::with_capacity(targets.len());
    targets.iter().filter(|t| seen.insert(*t)).cloned().collect()
}

fn require(tx: &mut dyn WriteTx, app: AppId, user: &UserId) -> Result<Uid, GraphError> {
    tx.lookup(app, user)?.ok_or_else(|| GraphError::NoSuchAccount(user.clone()))
}

fn delta(followers: i64, following: i64, mutual: i64) -> Counts {
    Counts { followers, following, mutual }
}

fn over(limit: Option<i64>, current: i64) -> bool {
    limit.is_some_and(|l| current >= l)
}

/// Whether [`follow_add`] reads the follower's counters. They are read (and, on PostgreSQL, its row
/// locked) only when a limit looks at them, as the followee's: without one nothing can race, the
/// counters being changed by deltas only.
fn from_limited(limits: &Limits) -> bool {
    limits.max_following.is_some() || limits.max_mutual.is_some()
}

/// What [`follow_add`] (`add`) or [`follow_delete`] of `from` and `targets` will read.
pub fn prefetch(cx: &WriteContext, from: &UserId, targets: &[UserId], add: bool) -> Prefetch {
    Prefetch { app: cx.app, from: from.clone(), targets: targets.to_vec(), counts: add && from_limited(&cx.limits), adds: add }
}

/// `follow_add`: `from` follows each target. One result per distinct target, in request order.
pub fn follow_add(tx: &mut dyn WriteTx, cx: &WriteContext, from: &UserId, targets: &[UserId]) -> Result<Vec<ItemResult>, GraphError> {
    let from_limited = from_limited(&cx.limits);
    if from_limited {
        tx.prefetch_add(cx.app, from, targets)?;
    } else {
        tx.prefetch(cx.app, from, targets)?;
    }
    let src = require(tx, cx.app, from)?;
    // The limits count edges as if those of accounts being deleted were already gone.
    let deleting = tx.deleting(cx.app)?;
    let mut results = Vec::with_capacity(targets.len());
    let mut added = Vec::new();
    for target in distinct(targets) {
        let Some(dst) = tx.lookup(cx.app, &target)? else {
            results.push(ItemResult::err(&target, code::FOLLOW_ACCOUNT_NOT_FOUND, "To_Account does not exist"));
            continue;
        };
        if dst == src {
            results.push(ItemResult::err(&target, code::FOLLOW_INVALID_PARAM, "a user cannot follow itself"));
            continue;
        }
        if tx.edge(src, dst)?.is_some() {
            results.push(ItemResult::ok(&target));
            continue;
        }
        // The followee's counters are read only when a limit looks at them: a backend may lock
        // what it reads for a limit (PostgreSQL does), and a celebrity's row must not become the
        // lock every follower of it waits for when no limit needs it.
        let from_counts = if from_limited { counts(tx, src, &deleting)? } else { Counts::default() };
        let to_counts = if cx.limits.max_followers.is_some() || cx.limits.max_mutual.is_some() {
            counts(tx, dst, &deleting)?
        } else {
            Counts::default()
        };
        if over(cx.limits.max_following, from_counts.following) {
            results.push(ItemResult::err(&target, code::FOLLOWING_LIMIT, "From_Account follows the maximum number of users"));
            continue;
        }
        if over(cx.limits.max_followers, to_counts.followers) {
            results.push(ItemResult::err(&target, code::FOLLOWER_LIMIT, "To_Account has the maximum number of followers"));
            continue;
        }
        let back = tx.edge(dst, src)?;
        if back.is_some() {
            if over(cx.limits.max_mutual, from_counts.mutual) {
                results.push(ItemResult::err(&target, code::FROM_MUTUAL_LIMIT, "From_Account has the maximum number of mutual follows"));
                continue;
            }
            if over(cx.limits.max_mutual, to_counts.mutual) {
                results.push(ItemResult::err(&target, code::TO_MUTUAL_LIMIT, "To_Account has the maximum number of mutual follows"));
                continue;
            }
        }
        supersede(tx, cx.app, src, dst, &deleting)?;
        let key = tx.next_key();
        tx.insert_edge(src, dst, key)?;
        let m = i64::from(back.is_some());
        if back.is_some() {
            tx.insert_mutual(src, dst, key)?;
        }
        tx.add_counts(src, delta(0, 1, m))?;
        tx.add_counts(dst, delta(1, 0, m))?;
        tx.changed(cx.app, EdgeChange { from: from.clone(), to: target.clone(), added: true, mutual: back.is_some() });
        added.push(target.clone());
        results.push(ItemResult::ok(&target));
    }
    emit_chunks(tx, cx, CallbackCommand::FollowAdd, from, added)?;
    Ok(results)
}

/// A user's counters as the limits see them.
fn counts(tx: &mut dyn WriteTx, uid: Uid, deleting: &[Uid]) -> Result<Counts, GraphError> {
    let stored = tx.counts(uid)?;
    Ok(effective_counts(stored, uid, deleting, |s, d| Ok(tx.edge(s, d)?.is_some()))?)
}

/// Removes edge `src → dst` with its mutual record and counters; `false` when there was none.
fn remove_edge(tx: &mut dyn WriteTx, app: AppId, src: Uid, dst: Uid) -> Result<bool, GraphError> {
    let Some(key) = tx.edge(src, dst)? else {
        return Ok(false);
    };
    unlink(tx, app, src, dst, key)?;
    Ok(true)
}

/// Removes the existing edge `src → dst` (ordering key `key`) with its mutual record and counters,
/// and records the change for live notifications.
pub(crate) fn unlink(tx: &mut dyn WriteTx, app: AppId, src: Uid, dst: Uid, key: TimeKey) -> Result<(), GraphError> {
    let back = tx.edge(dst, src)?;
    tx.delete_edge(src, dst)?;
    let m = i64::from(back.is_some());
    if let Some(back_key) = back {
        tx.delete_mutual(src, dst, key.max(back_key))?;
    }
    tx.add_counts(src, delta(0, -1, -m))?;
    tx.add_counts(dst, delta(-1, 0, -m))?;
    let (from, to) = (tx.user_id(src)?, tx.user_id(dst)?);
    tx.changed(app, EdgeChange { from, to, added: false, mutual: back.is_some() });
    Ok(())
}

/// `follow_delete`: `from` unfollows each target. Unfollowing someone not followed succeeds and
/// changes nothing.
pub fn follow_delete(tx: &mut dyn WriteTx, cx: &WriteContext, from: &UserId, targets: &[UserId]) -> Result<Vec<ItemResult>, GraphError> {
    tx.prefetch(cx.app, from, targets)?;
    let src = require(tx, cx.app, from)?;
    let mut results = Vec::with_capacity(targets.len());
    let mut removed = Vec::new();
    for target in distinct(targets) {
        let Some(dst) = tx.lookup(cx.app, &target)? else {
            results.push(ItemResult::err(&target, code::FOLLOW_ACCOUNT_NOT_FOUND, "To_Account does not exist"));
            continue;
        };
        if remove_edge(tx, cx.app, src, dst)? {
            removed.push(target.clone());
        }
        results.push(ItemResult::ok(&target));
    }
    emit_chunks(tx, cx, CallbackCommand::FollowDelete, from, removed)?;
    Ok(results)
}

fn emit_chunks(
    tx: &mut dyn WriteTx,
    cx: &WriteContext,
    command: CallbackCommand,
    from: &UserId,
    targets: Vec<UserId>,
) -> Result<(), GraphError> {
    if !cx.subscriptions.wants(command) {
        return Ok(());
    }
    emit_targets(tx, cx.app, command, &cx.origin, from, &targets)
}

/// Emits the events of `from`'s changed edges to `targets`, at most [`MAX_EVENT_TARGETS`] an event.
pub(crate) fn emit_targets(
    tx: &mut dyn WriteTx,
    app: AppId,
    command: CallbackCommand,
    origin: &Origin,
    from: &UserId,
    targets: &[UserId],
) -> Result<(), GraphError> {
    for chunk in targets.chunks(MAX_EVENT_TARGETS) {
        tx.emit(NewEvent { app, command, from: from.clone(), targets: chunk.to_vec(), origin: origin.clone() })?;
    }
    Ok(())
}

/// An account to import, with optional profile fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// The UserID.
    pub user: UserId,
    /// `Nick`.
    pub nick: Option<String>,
    /// `FaceUrl`.
    pub face_url: Option<String>,
}

/// `account_import` / `multiaccount_import`: imports each account; an existing one keeps its edges and
/// gets the new profile fields. Returns whether each was newly created.
pub fn import_accounts(tx: &mut dyn WriteTx, app: AppId, accounts: &[NewAccount]) -> Result<Vec<bool>, GraphError> {
    accounts.iter().map(|a| Ok(tx.upsert_account(app, &a.user, a.nick.as_deref(), a.face_url.as_deref())?.1)).collect()
}
