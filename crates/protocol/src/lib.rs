//! The wire contract of Tencent Cloud Chat's Follow feature, and nothing else.
//!
//! This crate knows the shapes and numbers that cross the wire: error codes, the response
//! envelope, UserIDs, the UserSig ticket format (TLSSigAPIv2), the webhook `Sign`, the
//! Standard Webhooks signature and the exact webhook request bodies. It does no I/O, so the
//! server, the benchmark and the receiver library all share one definition of each. The [`api`]
//! module holds the server's API contract: commands, error families, the envelope and the answer
//! bodies, documented as OpenAPI schemas with the `openapi` feature.

pub mod api;
pub mod code;
pub mod ids;
pub mod sign;
pub mod usersig;
pub mod webhook;

pub use ids::{CallbackCommand, InvalidUserId, OptPlatform, UserId};
pub use usersig::{Ticket, UserSigError};
