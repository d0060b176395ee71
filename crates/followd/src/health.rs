//! Whether the parts that do the work are running, told honestly (answered at `/healthz` and
//! `/readyz` by [`crate::surface::probes`]).
//!
//! The server is more than its HTTP handlers: one writer thread commits every write, a checkpointer
//! thread keeps the WAL from growing without bound, the delivery task sends the webhooks and the live
//! fan-out task feeds the WebSockets. If one of them dies (a panic), the API may still answer reads
//! while writes fail or webhooks silently stop, so health is read from the components themselves: a
//! thread whose handle is finished, or a task whose watcher saw it end, is down.

use followd_store::Backend;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The components whose death `/healthz` reports, in the order listed.
pub const COMPONENTS: [&str; 4] = ["writer", "checkpointer", "delivery", "live"];

/// What health is read from.
pub struct Health {
    store: Backend,
    delivery: Arc<AtomicBool>,
    live: Arc<AtomicBool>,
    stopping: AtomicBool,
}

impl Health {
    /// Health of `store`'s threads and of the two tasks whose flags [`watch`] clears.
    pub fn new(store: Backend, delivery: Arc<AtomicBool>, live: Arc<AtomicBool>) -> Self {
        Health { store, delivery, live, stopping: AtomicBool::new(false) }
    }

    /// Each component of [`COMPONENTS`] and whether it is running.
    pub fn components(&self) -> [(&'static str, bool); 4] {
        let threads = self.store.threads();
        let [w, c, d, l] = COMPONENTS;
        [(w, threads.writer), (c, threads.checkpointer), (d, self.delivery.load(Ordering::Relaxed)), (l, self.live.load(Ordering::Relaxed))]
    }

    /// Write jobs waiting for the writer, and API writes refused because the queue was full.
    pub fn write_queue(&self) -> (usize, u64) {
        self.store.write_queue()
    }

    /// Marks the server as shutting down: it stops being ready.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// The components that are down.
    pub fn down(&self) -> Vec<&'static str> {
        self.components().into_iter().filter(|(_, up)| !up).map(|(name, _)| name).collect()
    }
}

/// Spawns `task` and clears the returned flag when it ends, whether it returned or panicked; an end
/// before `stop` is set is logged as a death, with the panic's message.
pub fn watch(
    name: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    watch_handle(name, tokio::spawn(task), stop)
}

/// [`watch`] for a task that is already running.
pub fn watch_handle(
    name: &'static str,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let up = Arc::new(AtomicBool::new(true));
    let flag = up.clone();
    let watcher = tokio::spawn(async move {
        let ended = task.await;
        flag.store(false, Ordering::Relaxed);
        if *stop.borrow() {
            return;
        }
        match ended {
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let msg = p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(String::as_str)).unwrap_or("?");
                tracing::error!(component = name, panic = msg, "a component died; /healthz now reports it");
            }
            _ => tracing::error!(component = name, "a component ended unexpectedly; /healthz now reports it"),
        }
    });
    (up, watcher)
}
