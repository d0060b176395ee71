//! One integration test binary (one link step on a two-core machine): the real server on port 0 in a
//! temp dir, driven over HTTP; the crash test drives the real binary; the model test drives the store.

mod api;
mod binary;
mod bulk;
mod client;
mod conformance;
mod console;
mod console_browser;
mod crash;
mod deletion;
mod errors;
mod fair_nodes;
mod health;
mod helpers;
mod isolation;
mod layers;
mod limits;
mod liveness;
mod model;
mod multinode;
mod openapi;
mod overload;
mod pg;
mod pg_store;
mod receiver;
mod receiving;
mod ssrf;
mod storage;
mod webhook_ids;
mod webhooks;
