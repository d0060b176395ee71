//! Read rules: check, lists and counts, on one consistent snapshot.

use followd_protocol::{code, UserId};

use crate::deletion::effective_counts;
use crate::write::distinct;
use crate::{AppId, Counts, Cursor, GraphError, ListEntry, ListKind, ReadView};

/// `follow_check`'s relation, REST numbering (decisions.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// 0: neither follows the other.
    None = 0,
    /// 1: only `To_Account` follows `From_Account`.
    TheyFollowMe = 1,
    /// 2: only `From_Account` follows `To_Account`.
    IFollowThem = 2,
    /// 3: mutual.
    Mutual = 3,
}

/// One `follow_check` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The user checked.
    pub user: UserId,
    /// `0`, or `30003` when the user does not exist.
    pub code: u32,
    /// The relation (None when the user does not exist).
    pub relation: Relation,
}

fn require(view: &mut dyn ReadView, app: AppId, user: &UserId) -> Result<i64, GraphError> {
    view.lookup(app, user)?.ok_or_else(|| GraphError::NoSuchAccount(user.clone()))
}

/// `follow_check`.
pub fn follow_check(view: &mut dyn ReadView, app: AppId, from: &UserId, targets: &[UserId]) -> Result<Vec<CheckResult>, GraphError> {
    let src = require(view, app, from)?;
    let mut out = Vec::with_capacity(targets.len());
    for user in distinct(targets) {
        let Some(dst) = view.lookup(app, &user)? else {
            out.push(CheckResult { user, code: code::FOLLOW_ACCOUNT_NOT_FOUND, relation: Relation::None });
            continue;
        };
        let relation = match (view.has_edge(src, dst)?, view.has_edge(dst, src)?) {
            (false, false) => Relation::None,
            (false, true) => Relation::TheyFollowMe,
            (true, false) => Relation::IFollowThem,
            (true, true) => Relation::Mutual,
        };
        out.push(CheckResult { user, code: code::OK, relation });
    }
    Ok(out)
}

/// One page of `follow_get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The entries, newest first.
    pub entries: Vec<ListEntry>,
    /// The cursor of the next page; `None` at the end.
    pub next: Option<Cursor>,
}

/// `follow_get`: one page of `kind` after `after`, at most `want` entries.
pub fn follow_get(
    view: &mut dyn ReadView,
    app: AppId,
    from: &UserId,
    kind: ListKind,
    after: Option<Cursor>,
    want: usize,
) -> Result<Page, GraphError> {
    let uid = require(view, app, from)?;
    // One extra row tells whether another page exists, so the last page ends with "" at once.
    let mut entries = view.list(uid, kind, after, want + 1)?;
    let next = if entries.len() > want {
        entries.truncate(want);
        entries.last().map(|e| Cursor { key: e.key, uid: e.uid })
    } else {
        None
    };
    Ok(Page { entries, next })
}

/// `follow_get_info`: the counters of each target, without the edges of accounts being deleted;
/// `Err(30003)`-style items for unknown users.
pub fn follow_get_info(
    view: &mut dyn ReadView,
    app: AppId,
    from: &UserId,
    targets: &[UserId],
) -> Result<Vec<(UserId, Option<Counts>)>, GraphError> {
    require(view, app, from)?;
    let deleting = view.deleting(app)?;
    let mut out = Vec::with_capacity(targets.len());
    for user in distinct(targets) {
        let counts = match view.lookup(app, &user)? {
            Some(uid) => {
                let stored = view.counts(uid)?;
                Some(effective_counts(stored, uid, &deleting, |s, d| view.has_edge(s, d))?)
            }
            None => None,
        };
        out.push((user, counts));
    }
    Ok(out)
}

/// `account_check`: whether each account is imported.
pub fn account_check(view: &mut dyn ReadView, app: AppId, users: &[UserId]) -> Result<Vec<(UserId, bool)>, GraphError> {
    distinct(users).into_iter().map(|u| Ok((u.clone(), view.lookup(app, &u)?.is_some()))).collect()
}
