//! The background task that finishes account deletions.
//!
//! `account_delete` tombstones an account and removes as many of its edges as fit in one chunk in
//! its own transaction; this task removes the rest, one chunk of `deletion_chunk_edges` edges per
//! write job, so the writer commits other requests between chunks instead of holding them all behind
//! one huge transaction (`followd_graph::deletion` says why and how the counts stay exact meanwhile).
//! The jobs live in the store, so at start-up the task finds the ones a crash or a restart
//! interrupted and finishes them.

use followd_graph::{deletion, GraphError, Store, StoreError, Uid};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

use crate::metrics::DeletionMetrics;

/// How long the task waits after a failed chunk before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The handle the API uses: the chunk size, and the wake-up of the background task.
pub struct Deletions {
    chunk: usize,
    wake: Arc<Notify>,
    metrics: DeletionMetrics,
}

impl Deletions {
    /// Starts the background task; it ends between two chunks once `stop` turns true.
    pub fn start(
        store: Arc<dyn Store>,
        chunk: usize,
        metrics: DeletionMetrics,
        stop: watch::Receiver<bool>,
    ) -> (Deletions, tokio::task::JoinHandle<()>) {
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(store, chunk, wake.clone(), metrics.clone(), stop));
        (Deletions { chunk, wake, metrics }, task)
    }

    /// Edges removed per transaction, the API's own included.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Records what an `account_delete` transaction did, and hands unfinished accounts to the task.
    pub fn deleted(&self, outcome: &deletion::Deleted) {
        self.metrics.edges_removed.inc_by(outcome.removed as u64);
        if outcome.unfinished > 0 {
            self.wake.notify_one();
        }
    }
}

async fn run(store: Arc<dyn Store>, chunk: usize, wake: Arc<Notify>, metrics: DeletionMetrics, mut stop: watch::Receiver<bool>) {
    let mut first = true;
    loop {
        let pending = match followd_graph::read(&*store, |v| Ok(v.deletions()?)).await {
            Ok(p) => p,
            Err(GraphError::Store(StoreError::Closed)) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the unfinished account deletions; retrying");
                if !pause(&mut stop, RETRY_AFTER).await {
                    return;
                }
                continue;
            }
        };
        if first && !pending.is_empty() {
            tracing::info!(accounts = pending.len(), "resuming unfinished account deletions");
        }
        first = false;
        if pending.is_empty() {
            tokio::select! {
                () = wake.notified() => continue,
                _ = stop.changed() => return,
            }
        }
        for uid in pending {
            if !finish(&*store, uid, chunk, &metrics, &mut stop).await {
                return;
            }
        }
    }
}

/// Removes one account's remaining edges chunk by chunk; false when the server is stopping.
async fn finish(store: &dyn Store, uid: Uid, chunk: usize, metrics: &DeletionMetrics, stop: &mut watch::Receiver<bool>) -> bool {
    let mut total = 0u64;
    loop {
        if *stop.borrow() {
            return false;
        }
        match followd_graph::write(store, move |tx| deletion::purge(tx, uid, chunk)).await {
            Ok(p) => {
                total += p.removed as u64;
                metrics.edges_removed.inc_by(p.removed as u64);
                metrics.chunks.inc();
                if p.done {
                    tracing::info!(account = uid, edges = total, "account deletion finished");
                    return true;
                }
            }
            Err(GraphError::Store(StoreError::Closed)) => return false,
            Err(e) => {
                tracing::error!(account = uid, error = %e, "an account deletion chunk failed; retrying");
                if !pause(stop, RETRY_AFTER).await {
                    return false;
                }
            }
        }
    }
}

/// Waits `d`; false when the server stops meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        _ = stop.changed() => false,
    }
}
