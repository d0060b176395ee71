//! Live notifications for end users: the fan-out of protocol.md §3.8 over WebSockets.
//!
//! The store publishes every committed edge change; one task turns them into
//! `FollowingListChanged` / `FollowersListChanged` / `MutualListChanged` messages for the users
//! involved and hands each to that user's connections (several devices per user). Each connection
//! has a small bounded queue: a client that does not keep up is dropped, never waited for.

use followd_graph::{AppId, EdgeChange, Store};
use followd_protocol::api::reply::{LiveEvent, LiveMessage, LiveUser};
use followd_protocol::UserId;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Messages queued per connection before it counts as too slow and is dropped.
pub const QUEUE: usize = 64;
/// Connections one user may hold at once (devices).
pub const MAX_DEVICES: usize = 16;

struct Conn {
    id: u64,
    tx: mpsc::Sender<Arc<str>>,
}

/// The registry of connected clients.
#[derive(Default)]
pub struct Live {
    conns: RwLock<HashMap<AppId, HashMap<String, Vec<Conn>>>>,
    /// Shared with the store, which collects edge changes only while a client is connected.
    count: Arc<AtomicUsize>,
    next: AtomicU64,
    dropped: AtomicU64,
}

/// How the server finds out that a WebSocket client is gone.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// The server pings each client this often.
    pub ping_every: Duration,
    /// A client that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
}

const FOLLOWING: LiveEvent = LiveEvent::FollowingListChanged;
const FOLLOWERS: LiveEvent = LiveEvent::FollowersListChanged;
const MUTUAL: LiveEvent = LiveEvent::MutualListChanged;

impl Live {
    /// A registry whose connection count is `count` (the store's `CommitHooks::live_clients`).
    pub fn new(count: Arc<AtomicUsize>) -> Self {
        count.store(0, Ordering::Relaxed);
        Live { count, ..Live::default() }
    }

    /// Registers a connection of `user`; returns its id and the queue to read messages from, or
    /// `None` when the user already has [`MAX_DEVICES`] connections.
    pub fn register(&self, app: AppId, user: &str) -> Option<(u64, mpsc::Receiver<Arc<str>>)> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut conns = self.conns.write();
        let list = conns.entry(app).or_default().entry(user.to_owned()).or_default();
        if list.len() >= MAX_DEVICES {
            return None;
        }
        list.push(Conn { id, tx });
        self.count.fetch_add(1, Ordering::Relaxed);
        Some((id, rx))
    }

    /// Whether `user` may open another connection now.
    pub fn has_room(&self, app: AppId, user: &str) -> bool {
        self.conns.read().get(&app).and_then(|u| u.get(user)).is_none_or(|l| l.len() < MAX_DEVICES)
    }

    /// Removes a connection (idempotent).
    pub fn unregister(&self, app: AppId, user: &str, id: u64) {
        let mut conns = self.conns.write();
        let Some(users) = conns.get_mut(&app) else { return };
        if let Some(list) = users.get_mut(user) {
            let before = list.len();
            list.retain(|c| c.id != id);
            self.count.fetch_sub(before - list.len(), Ordering::Relaxed);
            if list.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Connected clients.
    pub fn connections(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Clients dropped for being too slow.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn connected(&self, app: AppId, user: &str) -> bool {
        self.connections() > 0 && self.conns.read().get(&app).is_some_and(|u| u.contains_key(user))
    }

    fn push(&self, app: AppId, user: &str, msg: Arc<str>) {
        let mut slow = Vec::new();
        if let Some(list) = self.conns.read().get(&app).and_then(|u| u.get(user)) {
            for c in list {
                if c.tx.try_send(msg.clone()).is_err() {
                    slow.push(c.id);
                }
            }
        }
        for id in slow {
            // Dropping the sender ends the connection's queue; its task closes the socket.
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::info!(app, user, "live client too slow; dropped");
            self.unregister(app, user, id);
        }
    }
}

/// (recipient, event, is_add) → other users, in order.
type Outbox = Vec<((String, LiveEvent, bool), Vec<String>)>;

fn add(out: &mut Outbox, recipient: &UserId, event: LiveEvent, is_add: bool, other: &UserId) {
    let key = (recipient.to_string(), event, is_add);
    match out.iter_mut().find(|(k, _)| *k == key) {
        Some((_, v)) => v.push(other.to_string()),
        None => out.push((key, vec![other.to_string()])),
    }
}

/// Turns committed edge changes into notifications until the store stops publishing.
pub async fn fan_out(live: Arc<Live>, store: Arc<dyn Store>, mut changes: broadcast::Receiver<Arc<Vec<(AppId, EdgeChange)>>>) {
    loop {
        let batch = match changes.recv().await {
            Ok(b) => b,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(batches = n, "live notifications fell behind; some were skipped");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if live.connections() == 0 {
            continue;
        }
        // Group per app, then per recipient: one message per (recipient, list, add/remove) and batch.
        let mut per_app: HashMap<AppId, Outbox> = HashMap::new();
        for (app, c) in batch.iter() {
            let out = per_app.entry(*app).or_default();
            let (from_on, to_on) = (live.connected(*app, c.from.as_str()), live.connected(*app, c.to.as_str()));
            if from_on {
                add(out, &c.from, FOLLOWING, c.added, &c.to);
                if c.mutual {
                    add(out, &c.from, MUTUAL, c.added, &c.to);
                }
            }
            if to_on {
                add(out, &c.to, FOLLOWERS, c.added, &c.from);
                if c.mutual {
                    add(out, &c.to, MUTUAL, c.added, &c.from);
                }
            }
        }
        for (app, out) in per_app {
            if out.is_empty() {
                continue;
            }
            // Additions carry the profile (the Nick); removals only the UserID, as the SDK does.
            let mut wanted: Vec<String> = out.iter().filter(|((_, _, is_add), _)| *is_add).flat_map(|(_, v)| v.iter().cloned()).collect();
            wanted.sort();
            wanted.dedup();
            let nicks = if wanted.is_empty() { HashMap::new() } else { nicks(&store, app, wanted).await };
            for ((recipient, event, is_add), users) in out {
                let users: Vec<LiveUser> = users
                    .into_iter()
                    .map(|u| LiveUser { nick: if is_add { nicks.get(&u).cloned().flatten() } else { None }, user_id: u })
                    .collect();
                let text = serde_json::to_string(&LiveMessage { event, is_add, users: &users }).expect("messages serialise");
                live.push(app, &recipient, Arc::from(text));
            }
        }
    }
}

async fn nicks(store: &Arc<dyn Store>, app: AppId, users: Vec<String>) -> HashMap<String, Option<String>> {
    let r = followd_graph::read(&**store, move |v| {
        let mut m = HashMap::new();
        for u in users {
            if let Ok(id) = UserId::parse(&u) {
                let nick = v.profile(app, &id)?.and_then(|p| p.nick);
                m.insert(u, nick);
            }
        }
        Ok(m)
    })
    .await;
    r.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read profiles for live notifications");
        HashMap::new()
    })
}
