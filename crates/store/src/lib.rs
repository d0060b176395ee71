//! Storage backends for followd.
//!
//! [`sqlite::SqliteStore`] is the embedded default: SQLite in WAL mode, one writer thread that
//! group-commits every write job queued while the previous batch was committing, and a pool of reader
//! connections. A batch's edges, counters and webhook events commit together; a job is answered only
//! after its batch's commit.

//!
//! [`postgres::PgStore`] keeps the same shape on a PostgreSQL database that several followd nodes
//! share (`database_url`); [`Backend`] is whichever of the two a server opened.

pub mod postgres;
pub mod sqlite;

use followd_graph::outbox::Outbox;
use followd_graph::Store;
use std::sync::Arc;

pub use postgres::PgStore;
pub use sqlite::{CommitHooks, SqliteStore, Threads};

/// The storage backend a server runs on, chosen once at start-up.
#[derive(Clone)]
pub enum Backend {
    /// The embedded SQLite store (`data_dir`).
    Sqlite(Arc<SqliteStore>),
    /// A PostgreSQL database, possibly shared with other nodes (`database_url`).
    Postgres(Arc<PgStore>),
}

impl Backend {
    /// The graph store.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite(s) => s.clone(),
            Backend::Postgres(s) => s.clone(),
        }
    }

    /// The webhook outbox.
    pub fn outbox(&self) -> Arc<dyn Outbox> {
        match self {
            Backend::Sqlite(s) => s.clone(),
            Backend::Postgres(s) => s.clone(),
        }
    }

    /// Whether the backend's threads are running.
    pub fn threads(&self) -> Threads {
        match self {
            Backend::Sqlite(s) => s.threads(),
            Backend::Postgres(s) => s.threads(),
        }
    }

    /// Write jobs waiting for the writer, and API writes refused so far because the queue was full.
    pub fn write_queue(&self) -> (usize, u64) {
        match self {
            Backend::Sqlite(s) => s.write_queue(),
            Backend::Postgres(s) => s.write_queue(),
        }
    }

    /// Called before a live (WebSocket) client registers: on PostgreSQL, makes sure the other nodes
    /// send this node their edge changes ([`PgStore::prepare_live_client`]); the embedded store has
    /// no other nodes.
    pub async fn prepare_live_client(&self) -> followd_graph::StoreResult<()> {
        match self {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(s) => s.prepare_live_client().await,
        }
    }

    /// Commits everything queued and stops the writer.
    pub fn close(&self) {
        match self {
            Backend::Sqlite(s) => s.close(),
            Backend::Postgres(s) => s.close(),
        }
    }
}
