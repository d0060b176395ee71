//! The dispatcher: one task that owns every queue and decides what to send when.
//!
//! Events arrive from the store right after their commit (and from the outbox at start-up, on
//! read-back and on replay). They queue per (app, From_Account); a key has at most one attempt in
//! flight, so one user's events reach the receiver in commit order while different users proceed in
//! parallel. Each app (endpoint) has its own ready queue, in-flight cap, circuit breaker and share of
//! the memory ([`crate::window`]), so a slow or dead endpoint only ever holds its own events. Attempts
//! run as their own tasks and report back; their records are written in batches by a recorder task,
//! in the order they happened. Retry and probe timers live in a [`DelayQueue`].

use followd_graph::outbox::{AttemptRecord, EventState, Outbox, Outcome, StoredEvent};
use followd_graph::AppId;
use rand::Rng as _;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::time::DelayQueue;

use crate::breaker::Breaker;
use crate::client::{AttemptResult, Clients};
use crate::metrics::Metrics;
use crate::window::{by_app, Load, Windows};
use crate::{Endpoint, Endpoints};

/// Most attempts in flight to one endpoint.
pub const MAX_IN_FLIGHT_PER_ENDPOINT: usize = 256;
/// Attempts in flight to an endpoint that has not answered yet. Every answer raises its limit by
/// one (up to [`MAX_IN_FLIGHT_PER_ENDPOINT`]); every timeout or connection failure halves it, so a
/// hanging endpoint holds a handful of connections, not hundreds.
pub const INITIAL_IN_FLIGHT: usize = 16;
/// Events held in memory by default, split between the apps ([`crate::window`]); beyond its share an
/// app's new events stay only in the outbox and are read back in id order as its queue drains (each
/// event costs a few hundred bytes in memory).
pub const DEFAULT_MEMORY_EVENTS: usize = 500_000;

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(12 * 3600);
/// The longest a timer waits: a retry scheduled later (`retry_schedule_ms` is not bounded) is tried
/// after a year. The timer wheel refuses delays past about two years.
pub const MAX_TIMER: Duration = Duration::from_secs(365 * 24 * 3600);
/// Jitter applied to every retry delay: ±20 %.
pub const JITTER: f64 = 0.2;

type Key = (AppId, Arc<str>);

/// What the dispatcher holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events not yet delivered or dead.
    pub pending: usize,
    /// Commit time of the oldest of them, ms.
    pub oldest_created_ms: Option<i64>,
    /// Attempts in flight.
    pub in_flight: usize,
    /// Some pending events wait only in the outbox (`pending` counts only memory).
    pub spilled: bool,
}

enum Msg {
    Enqueue(Vec<StoredEvent>),
    /// A read from the outbox that an app's window asked for (`None`: the read failed).
    Loaded(AppId, Load, Option<Vec<StoredEvent>>),
    /// A take of handed events, whose events came with `Loaded`, has committed or failed.
    TakeEnded(AppId),
    /// Events may have been handed to this node.
    Handed,
    Done(Box<Done>),
    Stats(oneshot::Sender<Stats>),
    Breaker(AppId, oneshot::Sender<Option<Breaker>>),
}

/// An attempt's report back to the dispatcher.
struct Done {
    key: Key,
    ev: StoredEvent,
    ep: Arc<Endpoint>,
    result: AttemptResult,
}

/// A handle to the running dispatcher.
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Dispatcher {
    /// Starts the dispatcher: loads pending events from the outbox, then takes committed events from
    /// `committed` until `shutdown` turns true. The returned task ends after in-flight attempts have
    /// finished (bounded by their timeouts) and their records are written.
    ///
    /// At most `memory_events` events are held in memory, split between the apps; past its share,
    /// an app's events stay in the outbox only and are read back, in id order, as its queue drains.
    pub async fn start(
        outbox: Arc<dyn Outbox>,
        endpoints: Arc<dyn Endpoints>,
        committed: mpsc::UnboundedReceiver<Vec<StoredEvent>>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
        memory_events: usize,
    ) -> anyhow_like::Result<(Dispatcher, tokio::task::JoinHandle<()>)> {
        // Every app that can owe events gets a share: the configured ones, and any other that still
        // has events pending from before (they die at once: nowhere to send them).
        let mut apps = endpoints.apps();
        apps.extend(outbox.pending_apps().await?);
        apps.sort_unstable();
        apps.dedup();
        let mut windows = Windows::new(memory_events.max(1), &apps);
        let mut pending = Vec::new();
        for &app in &apps {
            let limit = windows.startup_limit(app);
            let page = outbox.load_pending(app, 0, limit).await?;
            windows.started(app, limit, &page);
            pending.extend(page);
        }
        let clients = Clients::new().map_err(|e| anyhow_like::Error(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (rec_tx, rec_rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_loop(outbox.clone(), rec_rx));
        tracing::info!(pending = pending.len(), more_in_outbox = windows.behind(), "webhook dispatcher started");
        let actor = Actor {
            outbox,
            stopping: false,
            windows,
            endpoints,
            clients,
            metrics,
            me: tx.clone(),
            records: rec_tx,
            keys: HashMap::new(),
            apps: HashMap::new(),
            timers: DelayQueue::new(),
            in_flight: 0,
        };
        let handle = tokio::spawn(async move {
            actor.run(rx, committed, pending, shutdown).await;
            let _ = recorder.await;
        });
        Ok((Dispatcher { tx }, handle))
    }

    /// Queues events that were put back to pending (replay).
    pub fn enqueue(&self, events: Vec<StoredEvent>) {
        let _ = self.tx.send(Msg::Enqueue(events));
    }

    /// Says that events may have been handed to this node (another node wrote them for a lane this
    /// one owns, this node adopted a dead node's lanes, or an admin requeued them): each app takes
    /// its own from the outbox through its share of the memory, a page at a time, once it has room.
    pub fn handed(&self) {
        let _ = self.tx.send(Msg::Handed);
    }

    /// What the dispatcher holds right now.
    pub async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Stats(tx));
        rx.await.unwrap_or_default()
    }

    /// The circuit breaker of `app`'s endpoint; `None` before its first attempt.
    pub async fn breaker(&self, app: AppId) -> Option<Breaker> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Breaker(app, tx));
        rx.await.ok().flatten()
    }
}

/// A tiny error type so the crate does not need anyhow.
pub mod anyhow_like {
    /// A start-up failure.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct Error(pub String);
    /// Start-up result.
    pub type Result<T> = std::result::Result<T, Error>;
    impl From<followd_graph::StoreError> for Error {
        fn from(e: followd_graph::StoreError) -> Self {
            Error(e.to_string())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyState {
    /// In its app's ready queue.
    Ready,
    /// An attempt is out.
    InFlight,
    /// Waiting for a retry timer.
    Waiting,
}

struct KeyQueue {
    events: VecDeque<StoredEvent>,
    state: KeyState,
}

struct AppQueue {
    ready: VecDeque<Key>,
    in_flight: usize,
    /// The current in-flight limit (additive increase, multiplicative decrease).
    limit: usize,
    breaker: Breaker,
    /// The URL the breaker's state belongs to; a new URL starts closed.
    url: String,
    probe_timer: bool,
}

impl Default for AppQueue {
    fn default() -> Self {
        AppQueue {
            ready: VecDeque::new(),
            in_flight: 0,
            limit: INITIAL_IN_FLIGHT,
            breaker: Breaker::default(),
            url: String::new(),
            probe_timer: false,
        }
    }
}

enum Timer {
    Key(Key),
    Probe(AppId),
}

struct Actor {
    outbox: Arc<dyn Outbox>,
    windows: Windows,
    /// Shutting down: no new attempts, no read-backs.
    stopping: bool,
    endpoints: Arc<dyn Endpoints>,
    clients: Clients,
    metrics: Arc<Metrics>,
    me: mpsc::UnboundedSender<Msg>,
    records: mpsc::UnboundedSender<AttemptRecord>,
    keys: HashMap<Key, KeyQueue>,
    apps: HashMap<AppId, AppQueue>,
    timers: DelayQueue<Timer>,
    in_flight: usize,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut committed: mpsc::UnboundedReceiver<Vec<StoredEvent>>,
        pending: Vec<StoredEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        for (app, events) in by_app(pending) {
            self.enqueue(events);
            self.maybe_reload(app);
        }
        let mut stopping = *shutdown.borrow();
        let mut committed_open = true;
        loop {
            // Tests kill the delivery task here (`panic`) to see health report it; compiled out of release builds.
            fail::fail_point!("delivery-loop");
            if stopping && self.in_flight == 0 {
                break;
            }
            tokio::select! {
                biased;
                changed = shutdown.changed(), if !stopping => {
                    if changed.is_err() || *shutdown.borrow() {
                        stopping = true;
                        self.stopping = true;
                        tracing::info!(in_flight = self.in_flight, "webhook dispatcher stopping");
                    }
                }
                msg = rx.recv() => match msg {
                    Some(m) => {
                        if matches!(m, Msg::Loaded(..)) && committed_open {
                            // Commits sent before the load was (a take of handed events waits for
                            // this node's commits of their lanes) go first, whatever `select!` saw.
                            while let Ok(events) = committed.try_recv() {
                                self.committed(events);
                            }
                        }
                        self.handle(m)
                    }
                    None => break,
                },
                batch = committed.recv(), if committed_open => match batch {
                    Some(events) => self.committed(events),
                    None => committed_open = false,
                },
                Some(first) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)), if !self.timers.is_empty() => {
                    // Take every timer due now, then start what they allow, once per app.
                    let mut due = vec![first.into_inner()];
                    let mut cx = Context::from_waker(Waker::noop());
                    while let Poll::Ready(Some(t)) = self.timers.poll_expired(&mut cx) {
                        due.push(t.into_inner());
                    }
                    let mut due_apps = Vec::with_capacity(due.len());
                    for t in due {
                        match t {
                            Timer::Key(key) => {
                                due_apps.push(key.0);
                                self.make_ready(key);
                            }
                            Timer::Probe(app) => {
                                if let Some(a) = self.apps.get_mut(&app) {
                                    a.probe_timer = false;
                                }
                                due_apps.push(app);
                            }
                        }
                    }
                    due_apps.sort_unstable();
                    due_apps.dedup();
                    if !stopping {
                        for app in due_apps {
                            self.pump(app);
                        }
                    }
                }
            }
        }
        tracing::info!("webhook dispatcher stopped");
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Enqueue(events) => {
                for (app, mut events) in by_app(events) {
                    self.windows.replay(app, &mut events);
                    self.enqueue(events);
                    self.maybe_reload(app);
                }
            }
            Msg::Loaded(app, load, result) => {
                let was_behind = self.windows.is_behind(app);
                let events = self.windows.loaded(app, load, result);
                if was_behind && !self.windows.is_behind(app) {
                    tracing::info!(app, "webhook queue of this app back in memory");
                }
                self.enqueue(events);
                self.maybe_reload(app);
            }
            Msg::TakeEnded(app) => {
                self.windows.take_ended(app);
                self.maybe_reload(app);
            }
            Msg::Handed => {
                for app in self.windows.handed() {
                    self.maybe_reload(app);
                }
            }
            Msg::Stats(reply) => {
                let pending = self.keys.values().map(|k| k.events.len()).sum();
                let oldest = self.keys.values().filter_map(|k| k.events.front().map(|e| e.created_ms)).min();
                let _ = reply.send(Stats { pending, oldest_created_ms: oldest, in_flight: self.in_flight, spilled: self.windows.behind() });
            }
            Msg::Breaker(app, reply) => {
                let _ = reply.send(self.apps.get(&app).map(|a| a.breaker));
            }
            Msg::Done(done) => {
                let Done { key, ev, ep, result } = *done;
                self.in_flight -= 1;
                if let Some(a) = self.apps.get_mut(&key.0) {
                    a.in_flight -= 1;
                    a.limit = match result.outcome {
                        Outcome::Timeout | Outcome::Connect => (a.limit / 2).max(1),
                        Outcome::Refused => a.limit,
                        _ => (a.limit + 1).min(MAX_IN_FLIGHT_PER_ENDPOINT),
                    };
                    // A refusal by the SSRF guard says nothing about the receiver's health: it only gives
                    // the probe slot back, if it was the probe.
                    if a.url == ep.url {
                        if result.outcome == Outcome::Refused {
                            a.breaker.release_probe();
                        } else if a.breaker.record(result.outcome == Outcome::Ok, Instant::now()) {
                            tracing::warn!(app = key.0, endpoint = %redacted(&ep.url), "webhook endpoint failing; circuit breaker open");
                        }
                    }
                }
                self.metrics.attempt(key.0, result.outcome, result.duration.as_secs_f64());
                let app = key.0;
                self.finish(key, ev, &ep.schedule, result);
                if !self.stopping {
                    self.pump(app);
                }
            }
        }
    }

    /// Takes a commit's events into memory, or leaves them in the outbox when their app is past its
    /// share of the memory.
    fn committed(&mut self, events: Vec<StoredEvent>) {
        for (app, mut events) in by_app(events) {
            if self.windows.commit(app, &mut events) {
                tracing::warn!(app, "webhook queue of this app full in memory; its new events wait in the outbox");
            }
            self.enqueue(events);
            self.maybe_reload(app);
        }
    }

    /// Starts the read from the outbox that `app`'s window wants, if any.
    fn maybe_reload(&mut self, app: AppId) {
        if self.stopping {
            return;
        }
        let Some(load) = self.windows.next_load(app) else { return };
        let (outbox, me) = (self.outbox.clone(), self.me.clone());
        tokio::spawn(async move {
            let result = match &load {
                Load::After { after, limit } => outbox.load_pending(app, *after, *limit).await,
                Load::Ids(ids) => outbox.load_events(app, ids.clone()).await,
                &Load::Handed { limit, .. } => {
                    // The events reach the dispatcher before the take commits (see `claim_handed`).
                    let (sent, tx, l) = (Arc::new(AtomicBool::new(false)), me.clone(), load.clone());
                    let s = sent.clone();
                    let deliver = Box::new(move |events| {
                        s.store(true, Ordering::SeqCst);
                        let _ = tx.send(Msg::Loaded(app, l, Some(events)));
                    });
                    // Every take whose result was passed on ends with `TakeEnded`, once it committed
                    // (or failed to: its events stay handed and are taken again, sent twice at worst).
                    match outbox.claim_handed(app, limit, deliver).await {
                        Err(e) if !sent.load(Ordering::SeqCst) => Err(e),
                        taken => {
                            if !sent.load(Ordering::SeqCst) {
                                // A store that hands no events answers without passing any on.
                                let _ = me.send(Msg::Loaded(app, load.clone(), Some(Vec::new())));
                            } else if let Err(e) = taken {
                                tracing::error!(app, error = %e, "taking the webhooks handed to this node did not commit");
                            }
                            let _ = me.send(Msg::TakeEnded(app));
                            return;
                        }
                    }
                }
            };
            let events = match result {
                Ok(events) => Some(events),
                Err(e) => {
                    tracing::error!(app, error = %e, "cannot read pending events back from the outbox; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    None
                }
            };
            let _ = me.send(Msg::Loaded(app, load, events));
        });
    }

    /// Queues events (all taken into memory by their window) on their keys.
    fn enqueue(&mut self, events: Vec<StoredEvent>) {
        let now = now_ms();
        let mut touched = Vec::new();
        for ev in events {
            let key: Key = (ev.app, Arc::from(ev.from.as_str()));
            let due = ev.next_at_ms;
            let q = self.keys.entry(key.clone()).or_insert_with(|| KeyQueue { events: VecDeque::new(), state: KeyState::Waiting });
            let was_empty = q.events.is_empty();
            q.events.push_back(ev);
            if was_empty {
                if due > now {
                    q.state = KeyState::Waiting;
                    self.after(Duration::from_millis((due - now) as u64), Timer::Key(key.clone()));
                } else {
                    self.make_ready(key.clone());
                }
            }
            if touched.last() != Some(&key.0) {
                touched.push(key.0);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        if !self.stopping {
            for app in touched {
                self.pump(app);
            }
        }
    }

    /// Fires `t` after `d` (at most [`MAX_TIMER`]).
    fn after(&mut self, d: Duration, t: Timer) {
        self.timers.insert(t, d.min(MAX_TIMER));
    }

    fn make_ready(&mut self, key: Key) {
        if let Some(q) = self.keys.get_mut(&key) {
            q.state = KeyState::Ready;
            self.apps.entry(key.0).or_default().ready.push_back(key);
        }
    }

    /// Starts as many attempts for `app` as its endpoint, in-flight cap and breaker allow.
    fn pump(&mut self, app: AppId) {
        let endpoint = self.endpoints.endpoint(app);
        loop {
            let a = self.apps.entry(app).or_default();
            if a.ready.is_empty() {
                return;
            }
            let Some(ep) = endpoint.clone() else {
                // Nowhere to send: the events die (they can be replayed once a webhook is set).
                let key = a.ready.pop_front().expect("not empty");
                self.give_up(key, "the app has no webhook URL configured");
                continue;
            };
            if a.url != ep.url {
                a.url = ep.url.clone();
                a.breaker = Breaker::default();
                a.limit = INITIAL_IN_FLIGHT;
            }
            if a.in_flight >= a.limit {
                return;
            }
            let now = Instant::now();
            if !a.breaker.can_acquire(now) {
                if let (Some(at), false) = (a.breaker.reopens_at(), a.probe_timer) {
                    a.probe_timer = true;
                    self.timers.insert_at(Timer::Probe(app), at.into());
                }
                return;
            }
            let key = a.ready.pop_front().expect("not empty");
            let Some(ev) = self.keys.get(&key).and_then(|q| q.events.front().cloned()) else { continue };
            if !ep.subscriptions.wants(ev.command) {
                self.give_up(key, "the app no longer subscribes to this command");
                continue;
            }
            // Only now, with an attempt certain to start, take the slot (the probe, when half-open).
            let a = self.apps.get_mut(&app).expect("created above");
            a.breaker.try_acquire(now);
            a.in_flight += 1;
            self.keys.get_mut(&key).expect("looked up above").state = KeyState::InFlight;
            self.in_flight += 1;
            let (clients, me) = (self.clients.clone(), self.me.clone());
            tokio::spawn(async move {
                let result = clients.attempt(&ep, &ev).await;
                let _ = me.send(Msg::Done(Box::new(Done { key, ev, ep, result })));
            });
        }
    }

    /// Marks the head event of `key` dead without an attempt, and moves on to the next.
    fn give_up(&mut self, key: Key, why: &str) {
        let Some(q) = self.keys.get_mut(&key) else { return };
        let Some(ev) = q.events.front().cloned() else { return };
        let result = AttemptResult {
            outcome: Outcome::Refused,
            status: None,
            duration: Duration::ZERO,
            error: Some(why.to_owned()),
            response: None,
            retry_after: None,
            at_ms: now_ms(),
        };
        q.state = KeyState::InFlight;
        self.finish(key, ev, &[], result);
    }

    /// Applies an attempt's result: record it, then deliver the next event, retry later, or give up.
    fn finish(&mut self, key: Key, ev: StoredEvent, schedule: &[Duration], r: AttemptResult) {
        let retries = ev.retries + 1;
        let (state, delay) = if r.outcome == Outcome::Ok {
            (EventState::Delivered, None)
        } else if r.outcome == Outcome::Refused || ev.retries as usize >= schedule.len() {
            (EventState::Dead, None)
        } else {
            let delay = match r.retry_after {
                Some(ra) => ra.min(MAX_RETRY_AFTER),
                None => jitter(schedule[ev.retries as usize]),
            };
            (EventState::Pending, Some(delay))
        };
        let next_at_ms = r.at_ms + delay.map_or(0, |d| d.as_millis() as i64);
        let webhook_id = &ev.webhook_id;
        match state {
            EventState::Delivered => tracing::debug!(event = %webhook_id, app = ev.app, ms = r.duration.as_millis() as u64, "delivered"),
            EventState::Dead => {
                self.metrics.dead.inc();
                tracing::warn!(event = %webhook_id, app = ev.app, outcome = r.outcome.as_str(), error = r.error.as_deref().unwrap_or(""), "webhook event dead");
            }
            EventState::Pending => tracing::info!(
                event = %webhook_id, app = ev.app, outcome = r.outcome.as_str(), error = r.error.as_deref().unwrap_or(""),
                retry_in_ms = delay.map_or(0, |d| d.as_millis() as u64), "webhook attempt failed; will retry"
            ),
        }
        let _ = self.records.send(AttemptRecord {
            event_id: ev.id,
            at_ms: r.at_ms,
            duration_us: r.duration.as_micros() as i64,
            status: r.status,
            outcome: r.outcome,
            error: r.error,
            response: r.response,
            state,
            retries,
            next_at_ms,
        });
        let Some(q) = self.keys.get_mut(&key) else { return };
        match delay {
            Some(d) => {
                if let Some(head) = q.events.front_mut() {
                    head.retries = retries;
                    head.next_at_ms = next_at_ms;
                }
                q.state = KeyState::Waiting;
                self.after(d, Timer::Key(key));
            }
            None => {
                q.events.pop_front();
                let app = key.0;
                if q.events.is_empty() {
                    self.keys.remove(&key);
                } else {
                    self.make_ready(key);
                }
                for woken in self.windows.released(app) {
                    self.maybe_reload(woken);
                }
                self.maybe_reload(app);
            }
        }
    }
}

/// A URL for the log: scheme, host and path only (a query may hold a key).
pub fn redacted(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or("")
}

/// `d` ± 20 %.
fn jitter(d: Duration) -> Duration {
    let f = rand::rng().random_range(1.0 - JITTER..=1.0 + JITTER);
    d.mul_f64(f)
}

/// Writes attempt records in order, each write taking everything that queued up meanwhile.
async fn record_loop(outbox: Arc<dyn Outbox>, mut rx: mpsc::UnboundedReceiver<AttemptRecord>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
            if batch.len() >= 4096 {
                break;
            }
        }
        let n = batch.len();
        if let Err(e) = outbox.record(batch).await {
            tracing::error!(error = %e, records = n, "could not write the delivery log; the events stay pending and will be sent again after a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_20_percent() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(10)).as_secs_f64();
            assert!((8.0..=12.0).contains(&d), "{d}");
        }
    }
}
