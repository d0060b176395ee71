//! The windows against a model of the outbox and of the dispatcher around them: named cases for the
//! races the design handles, then many random interleavings checked for the guarantees (no event
//! taken twice, none left behind, each app's events in commit order, memory bounded).

use super::*;
use followd_graph::outbox::WebhookId;
use followd_protocol::{CallbackCommand, OptPlatform};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

fn ev(app: AppId, id: i64) -> StoredEvent {
    StoredEvent {
        id,
        webhook_id: WebhookId::Legacy(id),
        app,
        command: CallbackCommand::FollowAdd,
        from: String::new(),
        body: String::new(),
        client_ip: String::new(),
        platform: OptPlatform::RestApi,
        created_ms: 0,
        retries: 0,
        next_at_ms: 0,
    }
}

fn evs(app: AppId, ids: &[i64]) -> Vec<StoredEvent> {
    ids.iter().map(|&i| ev(app, i)).collect()
}

fn ids(events: &[StoredEvent]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

#[test]
fn memory_is_split_into_guaranteed_parts_and_a_pool() {
    // 4 apps, 8 events: 1 guaranteed each, 4 in the pool.
    let mut w = Windows::new(8, &[1, 2, 3, 4]);
    let mut taken = Vec::new();
    for id in 1..=10 {
        let mut batch = evs(1, &[id]);
        w.commit(1, &mut batch);
        taken.extend(ids(&batch));
    }
    assert_eq!(taken, [1, 2, 3, 4, 5], "app 1: its own event and the pool");
    assert!(w.behind());
    for app in 2..=4 {
        let mut batch = evs(app, &[100 + app as i64]);
        w.commit(app, &mut batch);
        assert_eq!(batch.len(), 1, "app {app} still has its guaranteed room");
    }
    let mut batch = evs(2, &[200]);
    w.commit(2, &mut batch);
    assert!(batch.is_empty(), "past it, app 2 waits in the outbox");
}

#[test]
fn a_read_back_that_took_a_commit_skips_it_when_the_commit_is_published() {
    // One app, 8 events: 4 guaranteed, 4 in the pool, pages of 2.
    let mut w = Windows::new(8, &[1]);
    let mut b = evs(1, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(w.commit(1, &mut b), "a commit larger than the room spills");
    assert!(b.is_empty());
    let load = w.next_load(1).expect("nothing held: read at once");
    assert_eq!(load, Load::After { after: 0, limit: 2 });
    // Commit 10 is published while the read is under way: it waits for the read-back too.
    let mut b = evs(1, &[10]);
    w.commit(1, &mut b);
    assert!(b.is_empty());
    let got = w.loaded(1, load, Some(evs(1, &[1, 2])));
    assert_eq!(ids(&got), [1, 2]);
    for page in [[3, 4], [5, 6], [7, 8], [9, 10]] {
        w.released(1);
        w.released(1);
        let load = w.next_load(1).unwrap();
        let got = w.loaded(1, load, Some(evs(1, &page)));
        assert_eq!(ids(&got), page);
        assert!(w.behind(), "a full page: there may be more");
    }
    // 11 is committed and this read sees it before its publication.
    w.released(1);
    let load = w.next_load(1).unwrap();
    let got = w.loaded(1, load, Some(evs(1, &[11])));
    assert_eq!(ids(&got), [11]);
    assert!(!w.behind(), "a short page that reached every dropped id: caught up");
    let mut b = evs(1, &[11]);
    w.commit(1, &mut b);
    assert!(b.is_empty(), "11 was taken by the read-back");
    let mut b = evs(1, &[12]);
    w.commit(1, &mut b);
    assert_eq!(ids(&b), [12]);
}

#[test]
fn a_replay_passed_over_by_a_read_under_way_is_loaded_by_id() {
    let mut w = Windows::new(8, &[1]);
    let mut b = evs(1, &[10, 11, 12, 13, 14, 15, 16, 17, 18]);
    w.commit(1, &mut b);
    let load = w.next_load(1).unwrap();
    assert_eq!(load, Load::After { after: 0, limit: 2 });
    // Event 5 (an old one, dead in an earlier run) is replayed while the read is under way; the read
    // was made before the requeue and returns 10, 11.
    let mut r = evs(1, &[5]);
    w.replay(1, &mut r);
    assert!(r.is_empty());
    let got = w.loaded(1, load, Some(evs(1, &[10, 11])));
    assert_eq!(ids(&got), [10, 11]);
    assert_eq!(w.next_load(1), Some(Load::Ids(vec![5])), "5 is below the read position now: loaded by id");
}

#[test]
fn a_replay_above_everything_taken_since_a_restart_is_not_read_again() {
    // After a restart nothing is pending: nothing taken yet. Event 5, dead in the earlier run, is
    // replayed and fits.
    let mut w = Windows::new(8, &[1]);
    w.started(1, 4, &[]);
    let mut r = evs(1, &[5]);
    w.replay(1, &mut r);
    assert_eq!(ids(&r), [5]);
    // Then the app spills: the read-back passes over 5, which is held.
    let mut b = evs(1, &[10, 11, 12, 13, 14, 15, 16, 17]);
    w.commit(1, &mut b);
    let load = w.next_load(1).expect("spilled");
    assert_eq!(load, Load::After { after: 0, limit: 2 });
    assert_eq!(ids(&w.loaded(1, load, Some(evs(1, &[5, 10])))), [10]);
    assert_eq!(w.next_load(1), Some(Load::After { after: 10, limit: 2 }));
}

#[test]
fn a_replay_above_a_short_read_under_way_keeps_the_app_behind() {
    let mut w = Windows::new(8, &[1]);
    w.started(1, 4, &evs(1, &[1, 2, 3, 4]));
    let load = w.next_load(1).expect("a full first page: there may be more");
    assert_eq!(load, Load::After { after: 4, limit: 2 });
    // Event 9 (dead in an earlier run) is requeued after the read was made; the read finds only 6.
    let mut r = evs(1, &[9]);
    w.replay(1, &mut r);
    assert!(r.is_empty());
    let got = w.loaded(1, load, Some(evs(1, &[6])));
    assert_eq!(ids(&got), [6]);
    assert!(w.behind(), "9 is still to be read");
    assert_eq!(w.next_load(1), Some(Load::After { after: 6, limit: 2 }));
}

#[test]
fn replays_that_do_not_fit_are_kept_as_ids_not_events() {
    // One event in all: nothing to borrow.
    let mut w = Windows::new(1, &[1]);
    let mut b = evs(1, &[20]);
    w.commit(1, &mut b);
    let mut r = evs(1, &[3, 4, 5]);
    w.replay(1, &mut r);
    assert!(r.is_empty());
    assert!(w.behind());
    assert_eq!(w.next_load(1), None, "no room for a page yet");
    w.released(1);
    assert_eq!(w.next_load(1), Some(Load::Ids(vec![3])));
    let got = w.loaded(1, Load::Ids(vec![3]), None);
    assert!(got.is_empty(), "a failed read puts the ids back");
    assert_eq!(w.next_load(1), Some(Load::Ids(vec![3])));
}

#[test]
fn a_window_of_one_never_asks_for_nothing() {
    let mut w = Windows::new(1, &[1, 2]);
    let mut b = evs(1, &[1, 2]);
    w.commit(1, &mut b);
    assert_eq!(w.next_load(1), Some(Load::After { after: 0, limit: 1 }));
    assert_eq!(w.next_load(1), None, "one read at a time");
}

#[test]
fn a_commit_is_split_by_app_keeping_each_apps_order() {
    let mixed = vec![ev(2, 1), ev(1, 2), ev(2, 3), ev(3, 4), ev(1, 5)];
    let split: Vec<(AppId, Vec<i64>)> = by_app(mixed).into_iter().map(|(a, e)| (a, ids(&e))).collect();
    assert_eq!(split, [(1, vec![2, 5]), (2, vec![1, 3]), (3, vec![4])]);
    assert_eq!(by_app(evs(4, &[7, 8])).len(), 1);
    assert!(by_app(Vec::new()).is_empty());
}

/// What reaches the dispatcher besides commits.
enum Sent {
    /// Requeued events.
    Replay(Vec<i64>),
    /// The result of a read (`None`: it failed).
    Read(Load, Option<Vec<i64>>),
    /// A take of handed events committed.
    TakeEnded,
}

/// The outbox, the two channels into the dispatcher and its memory, driven in random order.
struct Sim {
    rng: StdRng,
    /// How often each step is taken: commit, publish, deliver, read, finish, record, requeue, restart.
    weights: [u32; 8],
    total: usize,
    w: Windows,
    apps: Vec<AppId>,
    bound: usize,
    /// id → (app, pending, times requeued)
    db: BTreeMap<i64, (AppId, bool, u32)>,
    next_id: i64,
    /// Commits published after their commit: (app, id) in commit order.
    commits: VecDeque<Vec<(AppId, i64)>>,
    /// Replays, read results and the ends of takes, in the order they were sent.
    msgs: VecDeque<(AppId, Sent)>,
    /// Takes of handed events whose result was sent and that have not committed yet: their events
    /// are still handed in the outbox.
    takes: Vec<(AppId, Vec<i64>)>,
    /// Reads started, not yet made: (app, load).
    reads: Vec<(AppId, Load)>,
    /// Reads made, their results not yet sent (a replay may be sent in between).
    made: Vec<(AppId, Load, Option<Vec<i64>>)>,
    held: BTreeMap<i64, AppId>,
    /// Finished in memory, not yet recorded in the outbox (still pending there).
    unrecorded: Vec<i64>,
    /// id → the requeue count it was last taken at.
    taken: BTreeMap<i64, u32>,
    /// Per app, the last id taken that was not a replay.
    order: BTreeMap<AppId, i64>,
    /// Pending events handed to this node (written by another), not taken yet.
    handed: BTreeSet<i64>,
}

impl Sim {
    fn new(seed: u64, total: usize, napps: u64) -> Sim {
        let apps: Vec<AppId> = (1..=napps).collect();
        let mut rng = StdRng::seed_from_u64(seed);
        // Each run has its own mix, so that some lag publications, some reads, some records.
        let weights = [
            rng.random_range(5..40),
            rng.random_range(2..30),
            rng.random_range(2..30),
            rng.random_range(2..30),
            rng.random_range(5..30),
            rng.random_range(1..20),
            rng.random_range(1..10),
            rng.random_range(0..6),
        ];
        Sim {
            rng,
            weights,
            total,
            w: Windows::new(total, &apps),
            bound: total.max(apps.len()),
            apps,
            db: BTreeMap::new(),
            next_id: 1,
            commits: VecDeque::new(),
            msgs: VecDeque::new(),
            takes: Vec::new(),
            reads: Vec::new(),
            made: Vec::new(),
            held: BTreeMap::new(),
            unrecorded: Vec::new(),
            taken: BTreeMap::new(),
            order: BTreeMap::new(),
            handed: BTreeSet::new(),
        }
    }

    fn take(&mut self, app: AppId, events: Vec<StoredEvent>, replayed: bool) {
        for e in events {
            let (owner, pending, epoch) = self.db[&e.id];
            assert_eq!(owner, app);
            assert!(pending, "event {} taken but not pending", e.id);
            assert!(!self.held.contains_key(&e.id), "event {} taken while held", e.id);
            assert!(!self.unrecorded.contains(&e.id), "event {} taken again before its record was written", e.id);
            assert_ne!(self.taken.insert(e.id, epoch), Some(epoch), "event {} taken twice", e.id);
            if !replayed {
                let last = self.order.entry(app).or_default();
                assert!(e.id > *last, "app {app}: event {} taken after {}", e.id, last);
                *last = e.id;
            }
            self.held.insert(e.id, app);
        }
        let in_memory: usize = self.w.apps.values().map(|w| w.held).sum();
        assert!(in_memory <= self.bound, "{in_memory} events held or reserved, over {}", self.bound);
    }

    fn maybe_load(&mut self, app: AppId) {
        if let Some(load) = self.w.next_load(app) {
            self.reads.push((app, load));
        }
    }

    fn step(&mut self) {
        let mut pick = self.rng.random_range(0..self.weights.iter().sum::<u32>());
        let op = self.weights.iter().position(|&w| {
            let hit = pick < w;
            pick = pick.saturating_sub(w);
            hit
        });
        match op.unwrap() {
            0 => {
                // A commit: events of one or two apps, a few of them written by another node and
                // handed to this one (told at once, as by NOTIFY).
                let mut batch = Vec::new();
                let mut handed = false;
                for _ in 0..self.rng.random_range(1..4) {
                    let app = self.apps[self.rng.random_range(0..self.apps.len())];
                    self.db.insert(self.next_id, (app, true, 0));
                    if self.rng.random_range(0..4) == 0 {
                        self.handed.insert(self.next_id);
                        handed = true;
                    } else {
                        batch.push((app, self.next_id));
                    }
                    self.next_id += 1;
                }
                if !batch.is_empty() {
                    self.commits.push_back(batch);
                }
                if handed {
                    self.tell_handed();
                }
            }
            1 => self.publish(),
            2 => self.deliver(),
            3 => self.read(),
            4 => self.finish(),
            5 => self.record(),
            6 => self.requeue(),
            _ => self.restart(),
        }
    }

    /// A stop and a start: what was published, read or held is gone (the records of finished events
    /// are written on the way out); the new dispatcher loads each app's first page.
    fn restart(&mut self) {
        // A take that had not committed is rolled back: its events are still handed.
        self.takes.clear();
        self.record();
        self.commits.clear();
        self.msgs.clear();
        self.reads.clear();
        self.made.clear();
        self.held.clear();
        self.taken.clear();
        self.order.clear();
        self.w = Windows::new(self.total, &self.apps);
        for app in self.apps.clone() {
            let limit = self.w.startup_limit(app);
            let page: Vec<StoredEvent> = self
                .db
                .iter()
                .filter(|(i, (a, p, _))| *a == app && *p && !self.handed.contains(i))
                .map(|(i, _)| ev(app, *i))
                .take(limit)
                .collect();
            self.w.started(app, limit, &page);
            self.take(app, page, false);
        }
        for app in self.apps.clone() {
            self.maybe_load(app);
        }
        // The first heartbeat tells the new dispatcher of the handed events.
        self.tell_handed();
    }

    fn tell_handed(&mut self) {
        for app in self.w.handed() {
            self.maybe_load(app);
        }
    }

    fn publish(&mut self) {
        let Some(batch) = self.commits.pop_front() else { return };
        for app in self.apps.clone() {
            let mut mine: Vec<StoredEvent> = batch.iter().filter(|(a, _)| *a == app).map(|&(a, i)| ev(a, i)).collect();
            if mine.is_empty() {
                continue;
            }
            self.w.commit(app, &mut mine);
            self.take(app, mine, false);
            self.maybe_load(app);
        }
    }

    fn deliver(&mut self) {
        let Some((app, sent)) = self.msgs.pop_front() else { return };
        match sent {
            Sent::Replay(ids) => {
                let mut replayed: Vec<StoredEvent> = ids.iter().map(|&i| ev(app, i)).collect();
                self.w.replay(app, &mut replayed);
                self.take(app, replayed, true);
            }
            Sent::Read(load, result) => {
                let by_id = matches!(load, Load::Ids(_) | Load::Handed { .. });
                let events = result.map(|r| r.iter().map(|&i| ev(app, i)).collect());
                let got = self.w.loaded(app, load, events);
                self.take(app, got, by_id);
            }
            Sent::TakeEnded => self.w.take_ended(app),
        }
        self.maybe_load(app);
    }

    /// Makes one read that was started (it sees the outbox as it is now), sends the result of one,
    /// or commits a take of handed events (whose result was sent when it was made).
    fn read(&mut self) {
        if !self.takes.is_empty() && self.rng.random_bool(0.3) {
            let (app, taken) = self.takes.swap_remove(self.rng.random_range(0..self.takes.len()));
            for i in &taken {
                self.handed.remove(i);
            }
            self.msgs.push_back((app, Sent::TakeEnded));
            return;
        }
        if !self.made.is_empty() && (self.reads.is_empty() || self.rng.random_bool(0.5)) {
            let made = self.made.swap_remove(self.rng.random_range(0..self.made.len()));
            self.msgs.push_back((made.0, Sent::Read(made.1, made.2)));
            return;
        }
        if self.reads.is_empty() {
            return;
        }
        let (app, load) = self.reads.swap_remove(self.rng.random_range(0..self.reads.len()));
        let result: Option<Vec<i64>> = (self.rng.random_range(0..20) != 0).then(|| match &load {
            Load::After { after, limit } => self
                .db
                .range(after + 1..)
                .filter(|(i, (a, pending, _))| *a == app && *pending && !self.handed.contains(i))
                .map(|(i, _)| *i)
                .take(*limit)
                .collect(),
            Load::Ids(ids) => ids.iter().copied().filter(|i| self.db[i].1).collect(),
            // Its result is sent before the take commits; until then they are still handed, and
            // another take skips them (SKIP LOCKED).
            Load::Handed { limit, .. } => {
                let locked: BTreeSet<i64> = self.takes.iter().flat_map(|t| t.1.iter().copied()).collect();
                self.handed.iter().copied().filter(|i| self.db[i].0 == app && !locked.contains(i)).take(*limit).collect()
            }
        });
        if let (Load::Handed { .. }, Some(taken)) = (&load, &result) {
            self.takes.push((app, taken.clone()));
            self.msgs.push_back((app, Sent::Read(load, result)));
            return;
        }
        self.made.push((app, load, result));
    }

    fn finish(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.held.len());
        let (&id, &app) = self.held.iter().nth(i).unwrap();
        self.held.remove(&id);
        self.unrecorded.push(id);
        let woken = self.w.released(app);
        self.maybe_load(app);
        for a in woken {
            self.maybe_load(a);
        }
    }

    /// Writes the records of finished events, except those a take that has not committed holds (their
    /// rows are locked until it ends). A recorded event is no longer pending, so no longer handed.
    fn record(&mut self) {
        let locked: BTreeSet<i64> = self.takes.iter().flat_map(|t| t.1.iter().copied()).collect();
        let (blocked, ready): (Vec<i64>, Vec<i64>) = self.unrecorded.drain(..).partition(|i| locked.contains(i));
        for id in ready {
            self.db.get_mut(&id).unwrap().1 = false;
            self.handed.remove(&id);
        }
        self.unrecorded = blocked;
    }

    /// Replays a few recorded events of one app (replay_event or replay_dead).
    fn requeue(&mut self) {
        let app = self.apps[self.rng.random_range(0..self.apps.len())];
        let done: Vec<i64> = self.db.iter().filter(|(_, (a, p, _))| *a == app && !*p).map(|(i, _)| *i).collect();
        if done.is_empty() {
            return;
        }
        let n = self.rng.random_range(1..=done.len().min(4));
        let start = self.rng.random_range(0..=done.len() - n);
        let chosen = done[start..start + n].to_vec();
        for id in &chosen {
            let row = self.db.get_mut(id).unwrap();
            row.1 = true;
            row.2 += 1;
        }
        self.msgs.push_back((app, Sent::Replay(chosen)));
    }

    /// Lets everything settle: every pending event must end up taken and finished.
    fn drain(&mut self) {
        for _ in 0..100_000 {
            if self.commits.is_empty()
                && self.msgs.is_empty()
                && self.takes.is_empty()
                && self.reads.is_empty()
                && self.made.is_empty()
                && self.held.is_empty()
                && self.handed.is_empty()
            {
                self.record();
                let pending: Vec<i64> = self.db.iter().filter(|(_, r)| r.1).map(|(i, _)| *i).collect();
                assert!(pending.is_empty(), "never delivered: {pending:?} {:#?} handed {:?}", self.w, self.handed);
                assert!(!self.w.behind());
                return;
            }
            match self.rng.random_range(0..5) {
                0 => self.publish(),
                1 => self.deliver(),
                2 => self.read(),
                3 => self.finish(),
                _ => self.record(),
            }
        }
        panic!(
            "stuck: {} held, {} reads, {} messages, windows {:#?}",
            self.held.len(),
            self.reads.len() + self.made.len(),
            self.msgs.len(),
            self.w
        );
    }
}

#[test]
fn random_interleavings_keep_every_guarantee() {
    for seed in 0..1000 {
        let total = [1, 2, 3, 5, 8, 20, 40, 100][seed as usize % 8];
        let napps = 1 + seed % 4;
        eprintln!("seed {seed}");
        let mut sim = Sim::new(seed, total, napps);
        for _ in 0..400 {
            sim.step();
        }
        sim.drain();
    }
}
