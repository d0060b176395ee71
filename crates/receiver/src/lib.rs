//! Receive Tencent Cloud Chat's Follow webhooks, from Tencent itself or from followd.
//!
//! An app backend that receives these webhooks has to check that they are for its app and really
//! come from the sender, parse them, answer fast, and cope with retries. This crate does each:
//!
//! - [`Verifier`] checks `SdkAppid`, the `Sign`/`RequestTime` pair (Tencent's webhook authentication,
//!   with a 60 s window by default) and, when a secret is given, the Standard Webhooks
//!   `webhook-signature` that followd adds; it returns a typed [`Webhook`] or a [`Rejection`].
//! - [`Event`] is the parsed body; a command this crate does not know is kept as raw JSON.
//! - [`answer`] builds the exact `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}` and FAIL bodies.
//! - [`Dedupe`] remembers `webhook-id`s for a while, so a retried delivery is handled once, and a
//!   delivery that arrives while an earlier one of the same event is still being handled is told to
//!   retry rather than acknowledged. It holds a bounded number of ids (a million by default), so
//!   memory stays bounded whatever the traffic.
//! - [`axum::webhook_router`] (feature `axum`, on by default) wires all of it into a router.
//!
//! A whole receiving backend:
//!
//! ```no_run
//! use followd_receiver::{axum::webhook_router, Event, Verifier};
//!
//! # async fn run() {
//! let verifier = Verifier::new(1400000000).token("xxxxyyyy");
//! let app = webhook_router(verifier, |hook| async move {
//!     if let Event::FollowAdd { from, to, .. } = &hook.event {
//!         println!("{from} followed {to:?}");
//!     }
//!     Ok(())
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

pub mod answer;
pub mod dedupe;
mod event;
mod verify;

#[cfg(feature = "axum")]
pub mod axum;

pub use dedupe::Dedupe;
pub use event::Event;
pub use verify::{Rejection, Verifier, Webhook};
