//! The answer: the envelope every API answer is wrapped in, and the one place where failures become
//! Tencent error codes.
//!
//! Refusals made while parsing already carry their code (the body's accessors pick it by family);
//! what arrives here unmapped is a failure of the graph or the store, which knows nothing of HTTP.
//! [`refusal`] maps it by the API's family and logs an internal failure's whole chain under the
//! request id, which the caller gets in `ErrorInfo` and `RequestId`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use followd_graph::{GraphError, StoreError};
use followd_protocol::api::{ApiError, Envelope, Family};
use followd_protocol::code;
use serde::Serialize;

use crate::cmd::Failure;

/// Maps a command's failure to the code and message the caller gets.
pub fn refusal(failure: Failure, family: Family, request_id: &str) -> ApiError {
    match failure {
        Failure::Refused(e) => e,
        Failure::Graph(e) => from_graph(e, family, request_id),
    }
}

/// Maps a graph or store failure; internal failures are logged under the request id.
pub fn from_graph(e: GraphError, family: Family, request_id: &str) -> ApiError {
    match e {
        GraphError::NoSuchAccount(u) => ApiError::new(code::FOLLOW_ACCOUNT_NOT_FOUND, format!("From_Account {u} does not exist")),
        GraphError::Invalid(m) => ApiError::new(family.invalid(), m),
        GraphError::Store(StoreError::Busy) => ApiError::new(
            code::RATE_LIMITED,
            format!("server busy: the write queue is full, nothing was applied; retry (RequestId {request_id})"),
        ),
        GraphError::Store(StoreError::Closed) => {
            ApiError::new(code::FOLLOW_TIMEOUT, format!("the server is shutting down; retry (RequestId {request_id})"))
        }
        GraphError::Store(e) => {
            tracing::error!(request_id, error = %e, source = ?std::error::Error::source(&e), "internal error");
            ApiError::new(family.internal(), format!("internal server error; retry (RequestId {request_id})"))
        }
    }
}

/// An API answer: HTTP 200 with the documented JSON envelope.
pub fn envelope<T: Serialize>(family: Family, request_id: &str, result: &Result<T, ApiError>) -> Response {
    let body = serde_json::to_vec(&Envelope::new(family, request_id, result)).expect("responses serialise");
    json_response(StatusCode::OK, body)
}

/// A refusal made before any command ran: HTTP 200 with the error envelope.
pub fn refuse(family: Family, request_id: &str, e: ApiError) -> Response {
    envelope::<()>(family, request_id, &Err(e))
}

/// A JSON response with the CORS headers Tencent's REST API sends.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}
