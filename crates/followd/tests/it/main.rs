//! One integration test binary (one link step on a two-core machine): the real server on port 0 in a
//! temp dir, driven over HTTP; the crash test drives the real binary; the model test drives the store.

mod api;
mod client;
mod crash;
mod deletion;
mod errors;
mod helpers;
mod isolation;
mod limits;
mod model;
mod openapi;
mod receiver;
mod receiving;
mod ssrf;
mod webhook_ids;
mod webhooks;
