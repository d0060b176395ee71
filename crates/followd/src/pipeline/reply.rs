//! The response envelope and the one place where errors become Tencent error codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use followd_graph::{GraphError, StoreError};
use followd_protocol::code;
use serde::Serialize;

/// Which family an API belongs to; it decides the codes of generic failures and whether
/// `ErrorDisplay` is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `/v4/follow/*` and the client API.
    Follow,
    /// `/v4/im_open_login_svc/*`.
    Account,
    /// `/v4/callback_config/*`, shaped like Tencent's `live_config` webhook APIs.
    Config,
}

impl Family {
    /// The code for an invalid parameter.
    pub fn invalid(self) -> u32 {
        match self {
            Family::Follow => code::FOLLOW_INVALID_PARAM,
            Family::Account => code::ACCOUNT_INVALID_PARAM,
            Family::Config => code::CONFIG_INVALID_PARAM,
        }
    }
}

/// A refused request: a Tencent code and a message for `ErrorInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The Tencent error code.
    pub code: u32,
    /// What went wrong, for the caller.
    pub info: String,
}

impl ApiError {
    /// A refusal with a code and message.
    pub fn new(code: u32, info: impl Into<String>) -> Self {
        ApiError { code, info: info.into() }
    }

    /// Maps a graph or store failure; internal failures are logged under the request id.
    pub fn from_graph(e: GraphError, family: Family, request_id: &str) -> Self {
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
                let c = match family {
                    Family::Follow => code::FOLLOW_INTERNAL,
                    Family::Account => code::ACCOUNT_INTERNAL,
                    Family::Config => code::CONFIG_INTERNAL,
                };
                ApiError::new(c, format!("internal server error; retry (RequestId {request_id})"))
            }
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(flatten)]
    data: Option<T>,
    #[serde(rename = "ActionStatus")]
    action_status: &'static str,
    #[serde(rename = "ErrorCode")]
    error_code: u32,
    #[serde(rename = "ErrorInfo")]
    error_info: &'a str,
    #[serde(rename = "ErrorDisplay", skip_serializing_if = "Option::is_none")]
    error_display: Option<&'static str>,
    #[serde(rename = "RequestId")]
    request_id: &'a str,
}

/// An API answer: HTTP 200 with the documented JSON envelope.
pub fn envelope<T: Serialize>(family: Family, request_id: &str, result: Result<T, ApiError>) -> Response {
    let display = (family == Family::Follow).then_some("");
    let env = result.as_ref().err();
    let body = Envelope {
        data: result.as_ref().ok(),
        action_status: if env.is_none() { "OK" } else { "FAIL" },
        error_code: env.map_or(code::OK, |e| e.code),
        error_info: env.map_or("", |e| e.info.as_str()),
        error_display: display,
        request_id,
    };
    json_response(StatusCode::OK, serde_json::to_vec(&body).expect("responses serialise"))
}

/// A JSON response with the CORS headers Tencent's REST API sends.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}
