//! Moving a graph in and out: the admin bulk API ([`server`]) and the commands that talk to it
//! ([`client`]: `followd export` and `followd import`; [`migrate`]: `followd migrate`).
//!
//! The bulk API is signed like the REST API (the URL parameters and an app admin's UserSig) and
//! serves three routes:
//! - `POST /bulk/v1/export` streams the app's graph as NDJSON ([`format`]) from one read snapshot,
//!   consistent while writes go on, in memory bounded by a few buffers;
//! - `POST /bulk/v1/import` applies one batch of accounts and follows ([`ImportRequest`]) in one
//!   transaction, idempotently, and says what it did ([`ImportReply`]); the client keeps the position
//!   in its file, so a re-run resumes;
//! - `POST /bulk/v1/sweep` is the last phase of `replace`: one step of removing the edges the
//!   import did not name ([`SweepRequest`]).

pub mod cli;
pub mod client;
pub mod format;
pub mod migrate;
pub mod progress;
pub mod server;

use serde::{Deserialize, Serialize};

/// The most follows (plus accounts) one import request may carry. Each request is one write
/// transaction, and a larger one rewrites fewer index pages per edge.
pub const MAX_BATCH: usize = 100_000;
/// The largest import request body, bytes (a full batch of the longest UserIDs fits).
pub const MAX_IMPORT_BODY: usize = 32 * 1024 * 1024;

/// An account of an import batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct WireAccount {
    /// The UserID.
    #[serde(rename = "UserID")]
    pub user_id: String,
    /// `Tag_Profile_IM_Nick`; left unchanged when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nick: Option<String>,
    /// `Tag_Profile_IM_Image`; left unchanged when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_url: Option<String>,
}

/// A follow of an import batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct WireFollow {
    /// The follower (created when missing).
    #[serde(rename = "From_Account")]
    pub from: String,
    /// The followee (created when missing).
    #[serde(rename = "To_Account")]
    pub to: String,
    /// When the follow began, µs since 1970 (kept at 4 µs precision); absent: now.
    #[serde(rename = "FollowTimeUs", default, skip_serializing_if = "Option::is_none")]
    pub time_us: Option<i64>,
}

/// `POST /bulk/v1/import`: one batch, applied in one transaction.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ImportRequest {
    /// Accounts to create, or whose given profile fields to set.
    #[serde(default)]
    pub accounts: Vec<WireAccount>,
    /// Follows to add, in order (an existing one is left as it is).
    #[serde(default)]
    pub follows: Vec<WireFollow>,
    /// Emit the webhooks the changes owe (default: none).
    #[serde(default)]
    pub webhooks: bool,
    /// `replace` mode: the run id under which the named edges are marked for [`SweepRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_run: Option<i64>,
}

/// A follow the batch did not apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct WireRejected {
    /// Its index in `Follows`.
    pub index: usize,
    /// `30001` (self-follow), `32100` (`max_following`), `32101`, `32102`, `32103`.
    pub result_code: u32,
    /// Why.
    pub result_info: String,
}

/// The answer to an import batch (inside the usual envelope).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ImportReply {
    /// Accounts created.
    pub accounts_created: u64,
    /// Accounts of `Accounts` that existed already.
    pub accounts_existing: u64,
    /// Follows added.
    pub follows_added: u64,
    /// Follows that existed already (unchanged).
    pub follows_existing: u64,
    /// Follows refused, not applied.
    pub rejected: Vec<WireRejected>,
}

/// `POST /bulk/v1/sweep`: one step of `replace` after every batch of the run was imported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SweepRequest {
    /// The run id the batches were imported under.
    pub run: i64,
    /// `""` to start, then the `NextCursor` of the previous step.
    #[serde(default)]
    pub cursor: String,
    /// Emit `Follow.CallbackAfterFollowDelete` for each removed edge (default: none).
    #[serde(default)]
    pub webhooks: bool,
    /// Sweep even though the run marked no follow (its file had none): removes every follow of the
    /// app. Without it such a sweep is refused, so a wrong `Run` cannot empty the graph.
    #[serde(default)]
    pub allow_empty: bool,
}

/// The answer to a sweep step.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SweepReply {
    /// Edges removed by this step.
    pub removed: u64,
    /// The cursor of the next step; `""` when the sweep is done (and the run's marks dropped).
    pub next_cursor: String,
}
