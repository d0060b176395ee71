//! How many pending events the dispatcher holds in memory for each app, and which ones it must read
//! back from the outbox.
//!
//! Memory is bounded by `delivery_queue_in_memory` (T) events. One shared window let an app whose
//! endpoint is dead fill it with events waiting on their retries, after which every other app's new
//! events waited in the outbox behind them. So memory is split: with n apps, each app is guaranteed
//! T / 2n events (at least one), and the other half of T is a pool any app may borrow from while
//! it is free. A dead app can take the pool, never another app's guaranteed part; a single busy app
//! can use more than half of T. At most n·(T / 2n) + pool ≤ T events are held.
//!
//! Past its room, an app *spills*: its new events stay in the outbox only, and are read back in id
//! order (per app, so one app's backlog costs no other app a read) a page at a time whenever it has
//! room for a page. What keeps every event sent once and each app's events in commit order:
//! - `high` is the highest id taken from commits or read-backs. A commit's events arrive after the
//!   commit, so a read-back may have taken them already: those at or below `high` are skipped.
//! - While spilled, every new commit is left to the read-back (taking one would overtake older events
//!   still in the outbox), and `dropped_up_to` records how far the read-back must get: the app has
//!   caught up only when a page comes back short *and* reaches it.
//! - A read-back never goes below `high`, so an event that was sent but whose record is not yet
//!   written (still pending in the outbox) is never read again.
//! - Replayed (requeued) events have old ids. When they fit they are held, and those above `high`
//!   remembered by id (as handed events are, below). Those at or below `high` are never read back
//!   by the `id > high` reads, so when they do not fit they are remembered by id (8 bytes each, not
//!   the event) and loaded by id later. Those above `high` are left to the read-back; if one arrives
//!   while a read-back is under way, that read may have been made before the requeue and pass over
//!   it, so it is checked against the page when the page arrives.
//! - A read reserves its room before it starts, so events taken meanwhile by other apps cannot push
//!   the total past T.
//! - On a database shared by several nodes, some of this node's events are *handed* to it (written by
//!   another node for a lane this one owns, adopted from a dead node, or requeued): the ordinary
//!   reads skip them, and they are taken a page at a time, in id order, like any other read (taking
//!   turns with the read-back while the app is spilled). A lane's handed events follow its unhanded
//!   ones, so those at or below `high` are held at once; while the app is spilled, those above it
//!   are left to the read-back, which now finds them (no longer handed). Otherwise taking them
//!   leaves `high` alone (a commit of this node with a lower id may still be on its way), and the
//!   ones above it are remembered by id until `high` passes them, so a read-back does not take them
//!   again. A take that returns a short page ends the app's handed events, unless the node was told
//!   of more while it ran.

use followd_graph::outbox::StoredEvent;
use followd_graph::AppId;
use std::collections::{BTreeSet, HashMap};

/// A read from the outbox that a window asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Load {
    /// Up to `limit` pending events of the app with an id above `after`, in id order.
    After {
        /// Start after this id.
        after: i64,
        /// At most this many.
        limit: usize,
    },
    /// These replayed events, by id.
    Ids(Vec<i64>),
    /// Up to `limit` of the app's events handed to this node, in id order (taken from the outbox:
    /// no longer handed once read).
    Handed {
        /// At most this many.
        limit: usize,
        /// [`Window::handed_asked`] when the take started.
        asked: u64,
    },
}

#[derive(Debug, Default)]
struct Window {
    /// Events it may hold whatever other apps hold.
    guaranteed: usize,
    /// Events held, plus the room reserved for the read under way.
    held: usize,
    /// Room reserved for the read under way.
    reserved: usize,
    /// New commits wait in the outbox, behind events a read-back has not reached yet.
    spilled: bool,
    /// The highest id taken from a commit or a read-back.
    high: i64,
    /// The highest id a read-back must reach before the app has caught up.
    dropped_up_to: i64,
    /// A read is under way (`Some(true)`: an `After` read).
    loading: Option<bool>,
    /// Replays above `high` that came in while an `After` read was under way.
    racing: Vec<i64>,
    /// Replayed events at or below `high`, pending but not held: loaded by id.
    deferred: BTreeSet<i64>,
    /// In [`Windows::starved`].
    starved: bool,
    /// How many times this node was told that events may have been handed to it.
    handed_asked: u64,
    /// The last of those that a take answered with a short page (none left then).
    handed_done: u64,
    /// Handed events above `high` taken into memory: a read-back must not take them again.
    above: BTreeSet<i64>,
    /// While spilled, the next read takes handed events (reads of both kinds take turns).
    handed_turn: bool,
}

impl Window {
    fn excess(&self) -> usize {
        self.held.saturating_sub(self.guaranteed)
    }

    fn behind(&self) -> bool {
        self.spilled || !self.deferred.is_empty() || !self.racing.is_empty()
    }

    /// Events may wait in the outbox, handed to this node.
    fn wants_handed(&self) -> bool {
        self.handed_asked > self.handed_done
    }

    /// Forgets the handed events that `high` has passed (a read-back never reads them).
    fn raised(&mut self) {
        if self.above.first().is_some_and(|&first| first <= self.high) {
            self.above = self.above.split_off(&(self.high + 1));
        }
    }

    /// Events read at a time: half the guaranteed part (at least one).
    fn page(&self) -> usize {
        (self.guaranteed / 2).max(1)
    }
}

/// Every app's window and the shared pool.
#[derive(Debug)]
pub(crate) struct Windows {
    apps: HashMap<AppId, Window>,
    /// Events any app may hold beyond its guaranteed part.
    pool: usize,
    /// Of which held now.
    pool_used: usize,
    /// Apps that want to read but lack room; retried when the pool frees a page.
    starved: Vec<AppId>,
    /// The page of a known app: the pool wakes starved apps once it has this much free.
    wake_at: usize,
}

impl Windows {
    /// Splits `total` events between `apps` (every app that can have events; one that shows up later
    /// gets no guaranteed part, only the pool).
    pub fn new(total: usize, apps: &[AppId]) -> Windows {
        let guaranteed = (total / (2 * apps.len().max(1))).max(1);
        let pool = total.saturating_sub(guaranteed * apps.len());
        let apps = apps.iter().map(|&a| (a, Window { guaranteed, ..Window::default() })).collect();
        Windows { apps, pool, pool_used: 0, starved: Vec::new(), wake_at: (guaranteed / 2).max(1) }
    }

    fn window(&mut self, app: AppId) -> &mut Window {
        self.apps.entry(app).or_default()
    }

    /// Events `app` may take now.
    fn room(&self, w: &Window) -> usize {
        w.guaranteed.saturating_sub(w.held) + (self.pool - self.pool_used)
    }

    /// Sets what `app` holds, keeping the pool's count; returns whether pool room was freed.
    fn resize(&mut self, app: AppId, held: usize) -> bool {
        let w = self.apps.get_mut(&app).expect("windows are created before they are resized");
        let before = w.excess();
        w.held = held;
        let after = w.excess();
        self.pool_used = self.pool_used + after - before;
        debug_assert!(self.pool_used <= self.pool, "the pool is overdrawn");
        after < before
    }

    /// How many events to load for `app` at start-up.
    pub fn startup_limit(&mut self, app: AppId) -> usize {
        self.window(app).guaranteed.max(1)
    }

    /// Start-up: `app`'s first page from the outbox (asked with [`Windows::startup_limit`]) is held.
    pub fn started(&mut self, app: AppId, limit: usize, page: &[StoredEvent]) {
        let w = self.window(app);
        w.high = page.last().map_or(0, |e| e.id);
        w.spilled = page.len() >= limit;
        let held = w.held + page.len();
        self.resize(app, held);
    }

    /// A commit's events of `app`, in id order: keeps those to take into memory now (maybe none).
    /// Returns true when this commit made the app spill.
    pub fn commit(&mut self, app: AppId, events: &mut Vec<StoredEvent>) -> bool {
        let w = self.window(app);
        let high = w.high;
        events.retain(|e| e.id > high);
        let Some(last) = events.last().map(|e| e.id) else { return false };
        let w = &self.apps[&app];
        if w.spilled || events.len() > self.room(w) {
            let w = self.window(app);
            let newly = !w.spilled;
            w.spilled = true;
            w.dropped_up_to = w.dropped_up_to.max(last);
            events.clear();
            return newly;
        }
        let w = self.window(app);
        w.high = last;
        w.raised();
        let held = w.held + events.len();
        self.resize(app, held);
        false
    }

    /// Replayed events of `app`: keeps those to take into memory now; the others are loaded later.
    pub fn replay(&mut self, app: AppId, events: &mut Vec<StoredEvent>) {
        events.sort_by_key(|e| e.id);
        if events.is_empty() {
            return;
        }
        let w = self.window(app);
        // A handed event taken before is pending again: a read-back may take it this time.
        for e in events.iter() {
            w.above.remove(&e.id);
        }
        let w = &self.apps[&app];
        if !w.spilled && events.len() <= self.room(w) {
            let w = self.window(app);
            // Those above `high` are remembered, so a later read-back does not take them again;
            // `high` stays, as a commit of this node with a lower id may still be on its way (with
            // handed events, a replayed id above `high` is common).
            let high = w.high;
            w.above.extend(events.iter().map(|e| e.id).filter(|&id| id > high));
            let held = w.held + events.len();
            self.resize(app, held);
            return;
        }
        let w = self.window(app);
        let reading_after = w.loading == Some(true);
        for e in events.drain(..) {
            if e.id <= w.high {
                w.deferred.insert(e.id);
            } else {
                w.spilled = true;
                w.dropped_up_to = w.dropped_up_to.max(e.id);
                if reading_after {
                    w.racing.push(e.id);
                }
            }
        }
    }

    /// The read `app` should start now, if any; its room is reserved until [`Windows::loaded`].
    pub fn next_load(&mut self, app: AppId) -> Option<Load> {
        let w = self.window(app);
        if w.loading.is_some() || (!w.spilled && w.deferred.is_empty() && !w.wants_handed()) {
            return None;
        }
        let page = w.page();
        let w = &self.apps[&app];
        if self.room(w) < page {
            let w = self.window(app);
            if !w.starved {
                w.starved = true;
                self.starved.push(app);
            }
            return None;
        }
        let w = self.window(app);
        let load = if !w.deferred.is_empty() {
            let ids: Vec<i64> = std::iter::from_fn(|| w.deferred.pop_first()).take(page).collect();
            w.loading = Some(false);
            w.reserved = ids.len();
            Load::Ids(ids)
        } else if w.spilled && !(w.handed_turn && w.wants_handed()) {
            w.handed_turn = true;
            w.loading = Some(true);
            w.reserved = page;
            Load::After { after: w.high, limit: page }
        } else {
            w.handed_turn = false;
            w.loading = Some(false);
            w.reserved = page;
            Load::Handed { limit: page, asked: w.handed_asked }
        };
        let held = w.held + w.reserved;
        self.resize(app, held);
        Some(load)
    }

    /// The result of a read `app` asked for (`None`: it failed and may be asked again): the events
    /// to take into memory. A take of handed events passes them on before it commits: the app starts
    /// no other read until [`Windows::take_ended`], as a read-back made before that commit would still
    /// see them as handed, pass over them and move `high` past them.
    pub fn loaded(&mut self, app: AppId, load: Load, result: Option<Vec<StoredEvent>>) -> Vec<StoredEvent> {
        let w = self.window(app);
        w.loading = matches!((&load, &result), (Load::Handed { .. }, Some(_))).then_some(false);
        let held = w.held - std::mem::take(&mut w.reserved);
        let events = match (load, result) {
            (Load::Ids(ids), None) => {
                w.deferred.extend(ids);
                Vec::new()
            }
            // Replays that are no longer pending are not in the answer.
            (Load::Ids(_), Some(events)) => events,
            // `dropped_up_to` already covers the replays that raced it: the next read finds them.
            (Load::After { .. }, None) => {
                w.racing.clear();
                Vec::new()
            }
            (Load::After { limit, .. }, Some(mut events)) => {
                if let Some(last) = events.last() {
                    w.high = w.high.max(last.id);
                }
                // A replay this read passed over without returning it was requeued after the read.
                for r in std::mem::take(&mut w.racing) {
                    if r <= w.high && events.binary_search_by_key(&r, |e| e.id).is_err() {
                        w.deferred.insert(r);
                    }
                }
                if events.len() < limit && w.high >= w.dropped_up_to {
                    w.spilled = false;
                }
                if !w.above.is_empty() {
                    events.retain(|e| !w.above.contains(&e.id));
                    w.raised();
                }
                events
            }
            (Load::Handed { .. }, None) => Vec::new(),
            (Load::Handed { limit, asked }, Some(mut events)) => {
                if events.len() < limit {
                    w.handed_done = w.handed_done.max(asked);
                }
                let high = w.high;
                if w.spilled {
                    // Those above `high` are plain pending events of this node once the take commits
                    // (no read starts before), which the read-back reaches in id order, after the
                    // app's older events still in the outbox.
                    if let Some(last) = events.last().filter(|e| e.id > high) {
                        w.dropped_up_to = w.dropped_up_to.max(last.id);
                    }
                    // One taken before and requeued since must be read back this time.
                    for e in events.iter().filter(|e| e.id > high) {
                        w.above.remove(&e.id);
                    }
                    events.retain(|e| e.id <= high);
                } else {
                    w.above.extend(events.iter().map(|e| e.id).filter(|&id| id > high));
                }
                events
            }
        };
        self.resize(app, held + events.len());
        events
    }

    /// The take of handed events whose result [`Windows::loaded`] had has committed (or failed, and
    /// its events are still handed): `app` may read again.
    pub fn take_ended(&mut self, app: AppId) {
        self.window(app).loading = None;
    }

    /// One of `app`'s events left memory (delivered or dead). Returns the apps that were waiting for
    /// pool room and may now read (each one again asks [`Windows::next_load`]).
    pub fn released(&mut self, app: AppId) -> Vec<AppId> {
        let held = self.window(app).held - 1;
        let freed = self.resize(app, held);
        if !freed || self.starved.is_empty() || self.pool - self.pool_used < self.wake_at {
            return Vec::new();
        }
        let woken = std::mem::take(&mut self.starved);
        for a in &woken {
            self.window(*a).starved = false;
        }
        woken
    }

    /// Events may have been handed to this node: each app takes its own once it has room (in turn
    /// with its read-back while spilled). Returns the apps (each then asks [`Windows::next_load`]).
    pub fn handed(&mut self) -> Vec<AppId> {
        for w in self.apps.values_mut() {
            w.handed_asked += 1;
        }
        self.apps.keys().copied().collect()
    }

    /// Whether some pending events are only in the outbox (memory does not hold them all).
    pub fn behind(&self) -> bool {
        self.apps.values().any(|w| w.behind() || w.wants_handed())
    }

    /// Whether some pending events of `app` are only in the outbox.
    pub fn is_behind(&self, app: AppId) -> bool {
        self.apps.get(&app).is_some_and(Window::behind)
    }
}

/// Splits events by app, each app's in the order given (id order).
pub(crate) fn by_app(mut events: Vec<StoredEvent>) -> Vec<(AppId, Vec<StoredEvent>)> {
    let Some(first) = events.first().map(|e| e.app) else { return Vec::new() };
    if events.iter().all(|e| e.app == first) {
        return vec![(first, events)];
    }
    // A stable sort keeps each app's events in the order given.
    events.sort_by_key(|e| e.app);
    let mut out: Vec<(AppId, Vec<StoredEvent>)> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some((app, v)) if *app == e.app => v.push(e),
            _ => out.push((e.app, vec![e])),
        }
    }
    out
}

#[cfg(test)]
mod tests;
