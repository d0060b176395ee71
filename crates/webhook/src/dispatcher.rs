//! The dispatcher: one task that owns every queue and decides what to send when.
//!
//! Events arrive from the store right after their commit (and from the outbox at start-up and on
//! replay). They queue per (app, From_Account); a key has at most one attempt in flight, so one user's
//! events reach the receiver in commit order while different users proceed in parallel. Each app
//! (endpoint) has its own ready queue, in-flight cap and circuit breaker, so a slow or dead endpoint
//! only ever holds its own events. Attempts run as their own tasks and report back; their records are
//! written in batches by a recorder task, in the order they happened.

use followd_graph::outbox::{AttemptRecord, EventState, Outbox, Outcome, StoredEvent};
use followd_graph::AppId;
use rand::Rng as _;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

use crate::breaker::Breaker;
use crate::client::{webhook_id, AttemptResult, Clients};
use crate::metrics::Metrics;
use crate::{Endpoint, Endpoints};

/// Most attempts in flight to one endpoint.
pub const MAX_IN_FLIGHT_PER_ENDPOINT: usize = 256;
/// Attempts in flight to an endpoint that has not answered yet. Every answer raises its limit by
/// one (up to [`MAX_IN_FLIGHT_PER_ENDPOINT`]); every timeout or connection failure halves it, so a
/// hanging endpoint holds a handful of connections, not hundreds.
pub const INITIAL_IN_FLIGHT: usize = 16;
/// Events held in memory by default; beyond it new events stay only in the outbox and are read back
/// in id order as the queue drains (each costs a few hundred bytes in memory).
pub const DEFAULT_MEMORY_EVENTS: usize = 500_000;

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(12 * 3600);
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
    /// More pending events wait in the outbox than memory holds (`pending` counts only memory).
    pub spilled: bool,
}

enum Msg {
    Enqueue(Vec<StoredEvent>),
    /// A page read back from the outbox after a spill (`None`: the read failed).
    Loaded(Option<Vec<StoredEvent>>),
    Done(Box<Done>),
    Stats(oneshot::Sender<Stats>),
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
    /// At most `memory_events` events are held in memory; past that, events stay in the outbox only
    /// and are read back, in id order, once the queue has drained to half of it.
    pub async fn start(
        outbox: Arc<dyn Outbox>,
        endpoints: Arc<dyn Endpoints>,
        committed: mpsc::UnboundedReceiver<Vec<StoredEvent>>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
        memory_events: usize,
    ) -> anyhow_like::Result<(Dispatcher, tokio::task::JoinHandle<()>)> {
        let memory_events = memory_events.max(1);
        let pending = outbox.load_pending(0, memory_events).await?;
        let spilled = pending.len() >= memory_events;
        let clients = Clients::new().map_err(|e| anyhow_like::Error(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (rec_tx, rec_rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_loop(outbox.clone(), rec_rx));
        tracing::info!(pending = pending.len(), more_in_outbox = spilled, "webhook dispatcher started");
        let actor = Actor {
            outbox,
            stopping: false,
            window: Window {
                max: memory_events,
                held: 0,
                spilled,
                loaded_up_to: pending.last().map_or(0, |e| e.id),
                dropped_up_to: 0,
                loading: false,
            },
            endpoints,
            clients,
            metrics,
            me: tx.clone(),
            records: rec_tx,
            keys: HashMap::new(),
            apps: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
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

    /// What the dispatcher holds right now.
    pub async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Stats(tx));
        rx.await.unwrap_or_default()
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

/// The in-memory window over the outbox.
struct Window {
    /// Most events held.
    max: usize,
    /// Events held now.
    held: usize,
    /// Events past the window are in the outbox only.
    spilled: bool,
    /// The highest id taken into memory from commits or the outbox.
    loaded_up_to: i64,
    /// The highest id of a committed event left in the outbox while spilled.
    dropped_up_to: i64,
    /// A read-back is under way.
    loading: bool,
}

impl Window {
    /// Events read back at a time: half the window (at least one).
    fn page(&self) -> usize {
        (self.max / 2).max(1)
    }
}

struct Actor {
    outbox: Arc<dyn Outbox>,
    window: Window,
    /// Shutting down: no new attempts, no read-backs.
    stopping: bool,
    endpoints: Arc<dyn Endpoints>,
    clients: Clients,
    metrics: Arc<Metrics>,
    me: mpsc::UnboundedSender<Msg>,
    records: mpsc::UnboundedSender<AttemptRecord>,
    keys: HashMap<Key, KeyQueue>,
    apps: HashMap<AppId, AppQueue>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_seq: u64,
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
        let mut timer_payloads: HashMap<u64, Timer> = HashMap::new();
        self.enqueue(pending, &mut timer_payloads);
        let mut stopping = *shutdown.borrow();
        let mut committed_open = true;
        loop {
            // Tests kill the delivery task here (`panic`) to see health report it; compiled out of release builds.
            fail::fail_point!("delivery-loop");
            if stopping && self.in_flight == 0 {
                break;
            }
            let next_timer = self.timers.peek().map(|Reverse((t, _))| *t);
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
                    Some(m) => self.handle(m, stopping, &mut timer_payloads),
                    None => break,
                },
                batch = committed.recv(), if committed_open => match batch {
                    Some(events) => self.committed(events, &mut timer_payloads),
                    None => committed_open = false,
                },
                () = sleep_until(next_timer) => {
                    let now = Instant::now();
                    let mut due_apps = Vec::new();
                    while let Some(Reverse((t, seq))) = self.timers.peek().copied() {
                        if t > now {
                            break;
                        }
                        self.timers.pop();
                        match timer_payloads.remove(&seq) {
                            Some(Timer::Key(key)) => {
                                due_apps.push(key.0);
                                self.make_ready(key);
                            }
                            Some(Timer::Probe(app)) => {
                                if let Some(a) = self.apps.get_mut(&app) {
                                    a.probe_timer = false;
                                }
                                due_apps.push(app);
                            }
                            None => {}
                        }
                    }
                    // Only the apps whose timers fired have anything new to start.
                    due_apps.sort_unstable();
                    due_apps.dedup();
                    if !stopping {
                        for app in due_apps {
                            self.pump(app, &mut timer_payloads);
                        }
                    }
                }
            }
        }
        tracing::info!("webhook dispatcher stopped");
    }

    fn add_timer(&mut self, at: Instant, t: Timer, payloads: &mut HashMap<u64, Timer>) {
        self.timer_seq += 1;
        payloads.insert(self.timer_seq, t);
        self.timers.push(Reverse((at, self.timer_seq)));
    }

    fn handle(&mut self, msg: Msg, stopping: bool, timers: &mut HashMap<u64, Timer>) {
        match msg {
            Msg::Enqueue(mut events) => {
                // While spilled, a replayed event past the window is read back with the rest (taking
                // it now as well would send it twice).
                if self.window.spilled {
                    let upto = self.window.loaded_up_to;
                    events.retain(|e| e.id <= upto);
                }
                self.enqueue(events, timers);
                self.maybe_reload();
            }
            Msg::Loaded(None) => {
                self.window.loading = false;
                self.maybe_reload();
            }
            Msg::Loaded(Some(events)) => {
                let w = &mut self.window;
                w.loading = false;
                let last = events.last().map(|e| e.id);
                // Caught up when a page came back short and covered every event left behind.
                if events.len() < w.page() && last.unwrap_or(w.loaded_up_to).max(w.loaded_up_to) >= w.dropped_up_to {
                    w.spilled = false;
                    tracing::info!("webhook queue back in memory");
                }
                if let Some(last) = last {
                    w.loaded_up_to = w.loaded_up_to.max(last);
                }
                self.enqueue(events, timers);
                self.maybe_reload();
            }
            Msg::Stats(reply) => {
                let pending = self.keys.values().map(|k| k.events.len()).sum();
                let oldest = self.keys.values().filter_map(|k| k.events.front().map(|e| e.created_ms)).min();
                let _ = reply.send(Stats { pending, oldest_created_ms: oldest, in_flight: self.in_flight, spilled: self.window.spilled });
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
                self.metrics.attempt(result.outcome, result.duration.as_secs_f64());
                self.finish(key.clone(), ev, &ep.schedule, result, timers);
                if !stopping {
                    self.pump(key.0, timers);
                }
            }
        }
    }

    /// Takes a commit's events into memory, or leaves them in the outbox when the window is full.
    fn committed(&mut self, mut events: Vec<StoredEvent>, timers: &mut HashMap<u64, Timer>) {
        let w = &mut self.window;
        // A read-back may already have taken these (the store publishes them just after the commit).
        let upto = w.loaded_up_to;
        events.retain(|e| e.id > upto);
        let Some(last) = events.last().map(|e| e.id) else { return };
        if w.spilled || w.held + events.len() > w.max {
            if !w.spilled {
                tracing::warn!(held = w.held, "webhook queue full in memory; new events wait in the outbox");
            }
            w.spilled = true;
            w.dropped_up_to = w.dropped_up_to.max(last);
            self.maybe_reload();
            return;
        }
        w.loaded_up_to = last;
        self.enqueue(events, timers);
    }

    /// Reads the next page back from the outbox once the window has drained to half.
    fn maybe_reload(&mut self) {
        let w = &mut self.window;
        if self.stopping || !w.spilled || w.loading || w.held > w.max - w.page() {
            return;
        }
        w.loading = true;
        let (outbox, me, after, limit) = (self.outbox.clone(), self.me.clone(), w.loaded_up_to, w.page());
        tokio::spawn(async move {
            match outbox.load_pending(after, limit).await {
                Ok(events) => {
                    let _ = me.send(Msg::Loaded(Some(events)));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read pending events back from the outbox; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = me.send(Msg::Loaded(None));
                }
            }
        });
    }

    fn enqueue(&mut self, events: Vec<StoredEvent>, timers: &mut HashMap<u64, Timer>) {
        let now = now_ms();
        self.window.held += events.len();
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
                    self.add_timer(Instant::now() + Duration::from_millis((due - now) as u64), Timer::Key(key.clone()), timers);
                } else {
                    self.make_ready(key.clone());
                }
            }
            touched.push(key.0);
        }
        touched.sort_unstable();
        touched.dedup();
        if !self.stopping {
            for app in touched {
                self.pump(app, timers);
            }
        }
    }

    fn make_ready(&mut self, key: Key) {
        if let Some(q) = self.keys.get_mut(&key) {
            q.state = KeyState::Ready;
            self.apps.entry(key.0).or_default().ready.push_back(key);
        }
    }

    /// Starts as many attempts for `app` as its endpoint, in-flight cap and breaker allow.
    fn pump(&mut self, app: AppId, timers: &mut HashMap<u64, Timer>) {
        let endpoint = self.endpoints.endpoint(app);
        loop {
            let a = self.apps.entry(app).or_default();
            if a.ready.is_empty() {
                return;
            }
            let Some(ep) = endpoint.clone() else {
                // Nowhere to send: the events die (they can be replayed once a webhook is set).
                let key = a.ready.pop_front().expect("not empty");
                self.give_up(key, "the app has no webhook URL configured", timers);
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
                    self.add_timer(at, Timer::Probe(app), timers);
                }
                return;
            }
            let key = a.ready.pop_front().expect("not empty");
            let Some(ev) = self.keys.get(&key).and_then(|q| q.events.front().cloned()) else { continue };
            if !ep.subscriptions.wants(ev.command) {
                self.give_up(key, "the app no longer subscribes to this command", timers);
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
    fn give_up(&mut self, key: Key, why: &str, timers: &mut HashMap<u64, Timer>) {
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
        self.finish(key, ev, &[], result, timers);
    }

    /// Applies an attempt's result: record it, then deliver the next event, retry later, or give up.
    fn finish(&mut self, key: Key, ev: StoredEvent, schedule: &[Duration], r: AttemptResult, timers: &mut HashMap<u64, Timer>) {
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
        let webhook_id = webhook_id(ev.id);
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
                self.add_timer(Instant::now() + d, Timer::Key(key), timers);
            }
            None => {
                q.events.pop_front();
                if q.events.is_empty() {
                    self.keys.remove(&key);
                } else {
                    self.make_ready(key);
                }
                self.window.held -= 1;
                self.maybe_reload();
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

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
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
