//! Storage backends for followd.
//!
//! [`sqlite::SqliteStore`] is the embedded default: SQLite in WAL mode, one writer thread that
//! group-commits every write job queued while the previous batch was committing, and a pool of reader
//! connections. A batch's edges, counters and webhook events commit together; a job is answered only
//! after its batch's commit.

pub mod sqlite;

pub use sqlite::{CommitHooks, SqliteStore};
