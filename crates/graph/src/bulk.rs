//! Bulk rules: importing a batch of accounts and follows at once (`followd import` and `followd
//! migrate`), and the sweep that makes an app's graph exactly an imported file's (`--mode replace`).
//!
//! A batch is applied in one write transaction with the same rules as `follow_add`, except that:
//! - an account an edge names and that does not exist is created (no profile);
//! - a follow keeps the time it is given ([`BulkFollow::key`]) instead of taking the current one;
//! - webhooks are owed only when the import asks for them ([`BulkOptions::webhooks`]), and then
//!   exactly those of the edges that changed, grouped by `From_Account` at most 20 targets an event;
//! - a follow that breaks a limit (`max_following`, `max_followers`, `max_mutual`) or names the same
//!   user twice is reported in [`BulkOutcome::rejected`] and not applied; the rest of the batch is.
//!
//! An edge that already exists is left as it is (its time included), so applying the same batch
//! twice changes nothing the second time.
//!
//! `replace` marks every edge the file names ([`WriteTx::bulk_mark`]) under a run id, then sweeps
//! the app's edges in key order and removes the unmarked ones ([`sweep`]), with the delete events
//! they owe when asked; the marks are then dropped ([`WriteTx::bulk_forget`]). Marks live in the
//! store, so a crashed replace resumes with its run id and a memory bounded whatever the graph's size.

use followd_protocol::{code, CallbackCommand, UserId};
use std::collections::HashMap;

use crate::deletion::{effective_counts, supersede};
use crate::write::{emit_targets, unlink, NewAccount, WriteContext};
use crate::{AppId, Counts, EdgeChange, GraphError, TimeKey, Uid, WriteTx};

/// The version of the NDJSON export format (the `Version` of its first line).
pub const FORMAT_VERSION: u64 = 1;

/// One follow to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkFollow {
    /// The follower.
    pub from: UserId,
    /// The followee.
    pub to: UserId,
    /// When the relation began; `None` takes the current time (as `follow_add` would).
    pub key: Option<TimeKey>,
}

/// How a batch is applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkOptions {
    /// Emit the webhooks the changes owe (if the app subscribes to them).
    pub webhooks: bool,
    /// `replace` mode: mark every edge named under this run id, for [`sweep`].
    pub replace_run: Option<i64>,
}

/// A follow of a batch that was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its index in the batch's follows.
    pub index: usize,
    /// The Tencent code of the refusal (`30001`, `32100`, `32101`, `32102`, `32103`).
    pub code: u32,
    /// Why.
    pub info: &'static str,
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// Accounts created (named by the batch's accounts or follows).
    pub accounts_created: u64,
    /// Accounts whose profile the batch changed or that already existed.
    pub accounts_existing: u64,
    /// Follows added.
    pub follows_added: u64,
    /// Follows that already existed (left unchanged).
    pub follows_existing: u64,
    /// Follows refused, in batch order.
    pub rejected: Vec<Rejected>,
}

fn over(limit: Option<i64>, current: i64) -> bool {
    limit.is_some_and(|l| current >= l)
}

/// The id of `user`, created (without a profile) when it does not exist yet.
fn account(tx: &mut dyn WriteTx, app: AppId, user: &UserId, outcome: &mut BulkOutcome) -> Result<Uid, GraphError> {
    if let Some(uid) = tx.lookup(app, user)? {
        return Ok(uid);
    }
    let (uid, created) = tx.upsert_account(app, user, None, None)?;
    if created {
        outcome.accounts_created += 1;
    }
    Ok(uid)
}

fn counts(tx: &mut dyn WriteTx, uid: Uid, deleting: &[Uid]) -> Result<Counts, GraphError> {
    let stored = tx.counts(uid)?;
    Ok(effective_counts(stored, uid, deleting, |s, d| Ok(tx.edge(s, d)?.is_some()))?)
}

/// Applies one batch: the accounts first (profiles set when given), then the follows in order.
pub fn import(
    tx: &mut dyn WriteTx,
    cx: &WriteContext,
    accounts: &[NewAccount],
    follows: &[BulkFollow],
    opts: BulkOptions,
) -> Result<BulkOutcome, GraphError> {
    let mut outcome = BulkOutcome::default();
    for a in accounts {
        let (_, created) = tx.upsert_account(cx.app, &a.user, a.nick.as_deref(), a.face_url.as_deref())?;
        if created {
            outcome.accounts_created += 1;
        } else {
            outcome.accounts_existing += 1;
        }
    }
    let deleting = tx.deleting(cx.app)?;
    let notify = opts.webhooks && cx.subscriptions.add;
    // The accounts first, in the follows' order (the ids and creations are those of a follow-by-follow
    // pass); then every reverse edge of the batch in one step, as it was before the batch. While no
    // account is being deleted nothing but this batch's own inserts changes an edge here, so the
    // reverse edge of a follow is the one read or the one the batch added before it.
    let named: Vec<&UserId> = follows.iter().flat_map(|f| [&f.from, &f.to]).collect();
    tx.warm_ids(cx.app, &named)?;
    // The accounts that do not exist yet, in order of first appearance, created in one step.
    let mut seen = std::collections::HashSet::new();
    let mut missing = Vec::new();
    for u in named {
        if seen.insert(u) && tx.lookup(cx.app, u)?.is_none() {
            missing.push(u);
        }
    }
    outcome.accounts_created += tx.create_accounts(cx.app, &missing)?;
    let mut uids = Vec::with_capacity(follows.len());
    for f in follows {
        let src = account(tx, cx.app, &f.from, &mut outcome)?;
        let dst = account(tx, cx.app, &f.to, &mut outcome)?;
        uids.push((src, dst));
    }
    // Likewise every follow's own edge: then the new edges are written together at the end, in the
    // store's key order (`insert_edges`), instead of one by one in the file's order.
    let (reverse, forward) = if deleting.is_empty() {
        let pairs: Vec<(Uid, Uid)> = uids.iter().map(|&(src, dst)| (dst, src)).collect();
        (Some(tx.edge_keys(&pairs)?), Some(tx.edge_keys(&uids)?))
    } else {
        (None, None)
    };
    let mut added_here: HashMap<(Uid, Uid), TimeKey> = HashMap::new();
    let mut new_edges: Vec<(Uid, Uid, TimeKey)> = Vec::new();
    // Targets added for the current run of follows from one user: one event per 20, as follow_add.
    let mut pending: Option<(UserId, Vec<UserId>)> = None;
    for (index, f) in follows.iter().enumerate() {
        let (src, dst) = uids[index];
        let reject = |code, info| Rejected { index, code, info };
        if src == dst {
            outcome.rejected.push(reject(code::FOLLOW_INVALID_PARAM, "a user cannot follow itself"));
            continue;
        }
        // The checks run in the order follow_add's do; they read the counters only for the limits
        // the app sets, and look for an existing edge only where a refusal depends on it (an
        // existing edge is never refused) or an account is being deleted.
        let lim = cx.limits;
        let from_counts = if lim.max_following.is_some() || lim.max_mutual.is_some() { Some(counts(tx, src, &deleting)?) } else { None };
        let to_counts = if lim.max_followers.is_some() || lim.max_mutual.is_some() { Some(counts(tx, dst, &deleting)?) } else { None };
        let mut refusal = None;
        if from_counts.is_some_and(|c| over(lim.max_following, c.following)) {
            refusal = Some((code::FOLLOWING_LIMIT, "From_Account follows the maximum number of users"));
        } else if to_counts.is_some_and(|c| over(lim.max_followers, c.followers)) {
            refusal = Some((code::FOLLOWER_LIMIT, "To_Account has the maximum number of followers"));
        }
        let back = match (&reverse, refusal) {
            (_, Some(_)) => None,
            (Some(read), None) => read[index].or_else(|| added_here.get(&(dst, src)).copied()),
            (None, None) => tx.edge(dst, src)?,
        };
        if back.is_some() && from_counts.is_some_and(|c| over(lim.max_mutual, c.mutual)) {
            refusal = Some((code::FROM_MUTUAL_LIMIT, "From_Account has the maximum number of mutual follows"));
        } else if back.is_some() && to_counts.is_some_and(|c| over(lim.max_mutual, c.mutual)) {
            refusal = Some((code::TO_MUTUAL_LIMIT, "To_Account has the maximum number of mutual follows"));
        }
        let exists = match &forward {
            Some(read) => read[index].is_some() || added_here.contains_key(&(src, dst)),
            None => tx.edge(src, dst)?.is_some(),
        };
        let key = match f.key {
            Some(k) => k,
            None => tx.next_key(),
        };
        if !exists {
            if let Some((code, info)) = refusal {
                outcome.rejected.push(reject(code, info));
                continue;
            }
            if forward.is_some() {
                new_edges.push((src, dst, key));
            } else {
                supersede(tx, cx.app, src, dst, &deleting)?;
                tx.insert_edge(src, dst, key)?;
            }
        }
        let added = !exists;
        if let Some(run) = opts.replace_run {
            tx.bulk_mark(run, src, dst)?;
        }
        if !added {
            outcome.follows_existing += 1;
            continue;
        }
        if reverse.is_some() {
            added_here.insert((src, dst), key);
        }
        if let Some(back_key) = back {
            // A mutual relation began with the later of its two follows.
            tx.insert_mutual(src, dst, key.max(back_key))?;
        }
        let m = i64::from(back.is_some());
        tx.add_counts(src, Counts { followers: 0, following: 1, mutual: m })?;
        tx.add_counts(dst, Counts { followers: 1, following: 0, mutual: m })?;
        tx.changed(cx.app, EdgeChange { from: f.from.clone(), to: f.to.clone(), added: true, mutual: back.is_some() });
        outcome.follows_added += 1;
        if notify {
            match &mut pending {
                Some((from, targets)) if *from == f.from => targets.push(f.to.clone()),
                _ => {
                    if let Some((from, targets)) = pending.take() {
                        emit_targets(tx, cx.app, CallbackCommand::FollowAdd, &cx.origin, &from, &targets)?;
                    }
                    pending = Some((f.from.clone(), vec![f.to.clone()]));
                }
            }
        }
    }
    if let Some((from, targets)) = pending {
        emit_targets(tx, cx.app, CallbackCommand::FollowAdd, &cx.origin, &from, &targets)?;
    }
    tx.insert_edges(&mut new_edges)?;
    Ok(outcome)
}

/// A position in the sweep of an app's edges: the last `(src, dst)` looked at.
pub type SweepPosition = (Uid, Uid);

/// What one step of [`sweep`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepStep {
    /// Edges removed by this step.
    pub removed: u64,
    /// Where the next step starts; `None` once every edge was looked at.
    pub next: Option<SweepPosition>,
}

/// One step of `replace`: looks at up to `limit` edges of the app after `after` and removes those
/// that run `run` did not mark, with their counters, mutual records and (when `webhooks` and the
/// app subscribes) the delete events they owe.
pub fn sweep(
    tx: &mut dyn WriteTx,
    cx: &WriteContext,
    run: i64,
    after: Option<SweepPosition>,
    limit: usize,
    webhooks: bool,
) -> Result<SweepStep, GraphError> {
    let (scanned, unmarked) = tx.bulk_unmarked(cx.app, run, after, limit)?;
    let notify = webhooks && cx.subscriptions.delete;
    let mut removed = 0;
    let mut pending: Option<(Uid, Vec<UserId>)> = None;
    for (src, dst, key) in unmarked {
        unlink(tx, cx.app, src, dst, key)?;
        removed += 1;
        if notify {
            let to = tx.user_id(dst)?;
            match &mut pending {
                Some((s, targets)) if *s == src => targets.push(to),
                _ => {
                    if let Some((s, targets)) = pending.take() {
                        let from = tx.user_id(s)?;
                        emit_targets(tx, cx.app, CallbackCommand::FollowDelete, &cx.origin, &from, &targets)?;
                    }
                    pending = Some((src, vec![to]));
                }
            }
        }
    }
    if let Some((s, targets)) = pending {
        let from = tx.user_id(s)?;
        emit_targets(tx, cx.app, CallbackCommand::FollowDelete, &cx.origin, &from, &targets)?;
    }
    Ok(SweepStep { removed, next: scanned })
}
