//! The HTTP API's wire contract: which commands exist, the codes each family answers with, the
//! error a refused request carries, the envelope every answer is wrapped in, and the bodies of the
//! answers ([`reply`]).
//!
//! The server builds its answers from these types and, with the `openapi` feature, documents them
//! from the same types ([`schema`]), so the document cannot describe a field the server does not send.
//! Nothing here does I/O.

pub mod reply;
#[cfg(feature = "openapi")]
pub mod schema;

use serde::Serialize;

use crate::code;

/// Every command of `/v4/{service}/{command}` (the client API serves the five follow commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `follow/follow_add`.
    FollowAdd,
    /// `follow/follow_delete`.
    FollowDelete,
    /// `follow/follow_check`.
    FollowCheck,
    /// `follow/follow_get`.
    FollowGet,
    /// `follow/follow_get_info`.
    FollowGetInfo,
    /// `im_open_login_svc/account_import`.
    AccountImport,
    /// `im_open_login_svc/multiaccount_import`.
    MultiaccountImport,
    /// `im_open_login_svc/account_delete`.
    AccountDelete,
    /// `im_open_login_svc/account_check`.
    AccountCheck,
    /// `callback_config/set_callback`.
    SetCallback,
    /// `callback_config/get_callback`.
    GetCallback,
    /// `callback_config/set_callback_token`.
    SetCallbackToken,
    /// `callback_config/get_callback_token`.
    GetCallbackToken,
    /// `callback_config/list_events`.
    ListEvents,
    /// `callback_config/list_attempts`.
    ListAttempts,
    /// `callback_config/replay_event`.
    ReplayEvent,
    /// `callback_config/replay_dead`.
    ReplayDead,
}

impl Api {
    /// Every API, in the order of the documentation.
    pub const ALL: [Api; 17] = [
        Api::FollowAdd,
        Api::FollowDelete,
        Api::FollowCheck,
        Api::FollowGet,
        Api::FollowGetInfo,
        Api::AccountImport,
        Api::MultiaccountImport,
        Api::AccountDelete,
        Api::AccountCheck,
        Api::SetCallback,
        Api::GetCallback,
        Api::SetCallbackToken,
        Api::GetCallbackToken,
        Api::ListEvents,
        Api::ListAttempts,
        Api::ReplayEvent,
        Api::ReplayDead,
    ];

    /// Resolves `/v4/{service}/{command}`.
    pub fn resolve(service: &str, command: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.service() == service && a.name() == command)
    }

    /// Resolves `/v1/client/follow/{command}`: only the follow commands.
    pub fn resolve_client(command: &str) -> Option<Api> {
        Api::resolve("follow", command)
    }

    /// The position in [`Api::ALL`] (for tables indexed by API).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The service word of the URL.
    pub fn service(self) -> &'static str {
        match self.family() {
            Family::Follow => "follow",
            Family::Account => "im_open_login_svc",
            Family::Config => "callback_config",
        }
    }

    /// The command word (for URLs, logs, metrics and rate limits).
    pub fn name(self) -> &'static str {
        match self {
            Api::FollowAdd => "follow_add",
            Api::FollowDelete => "follow_delete",
            Api::FollowCheck => "follow_check",
            Api::FollowGet => "follow_get",
            Api::FollowGetInfo => "follow_get_info",
            Api::AccountImport => "account_import",
            Api::MultiaccountImport => "multiaccount_import",
            Api::AccountDelete => "account_delete",
            Api::AccountCheck => "account_check",
            Api::SetCallback => "set_callback",
            Api::GetCallback => "get_callback",
            Api::SetCallbackToken => "set_callback_token",
            Api::GetCallbackToken => "get_callback_token",
            Api::ListEvents => "list_events",
            Api::ListAttempts => "list_attempts",
            Api::ReplayEvent => "replay_event",
            Api::ReplayDead => "replay_dead",
        }
    }

    /// The name used in metrics for the client API's variant of a command.
    pub fn client_name(self) -> &'static str {
        match self {
            Api::FollowAdd => "client_follow_add",
            Api::FollowDelete => "client_follow_delete",
            Api::FollowCheck => "client_follow_check",
            Api::FollowGet => "client_follow_get",
            Api::FollowGetInfo => "client_follow_get_info",
            other => other.name(),
        }
    }

    /// The error family.
    pub fn family(self) -> Family {
        match self {
            Api::FollowAdd | Api::FollowDelete | Api::FollowCheck | Api::FollowGet | Api::FollowGetInfo => Family::Follow,
            Api::AccountImport | Api::MultiaccountImport | Api::AccountDelete | Api::AccountCheck => Family::Account,
            _ => Family::Config,
        }
    }

    /// Whether the client API (`/v1/client/follow/…`) serves this command too.
    pub fn on_client(self) -> bool {
        self.family() == Family::Follow
    }
}

/// Which family an API belongs to. Tencent numbers the same failure differently in each (an invalid
/// parameter is `30001`, `70402` or `100002`), and only follow answers carry `ErrorDisplay`; this is
/// where those numbers are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `/v4/follow/*` and the client API.
    Follow,
    /// `/v4/im_open_login_svc/*`.
    Account,
    /// `/v4/callback_config/*`, shaped like Tencent's `live_config` webhook APIs.
    Config,
}

impl Family {
    /// The code of an invalid parameter.
    pub fn invalid(self) -> u32 {
        match self {
            Family::Follow => code::FOLLOW_INVALID_PARAM,
            Family::Account => code::ACCOUNT_INVALID_PARAM,
            Family::Config => code::CONFIG_INVALID_PARAM,
        }
    }

    /// The code of an internal failure (retry).
    pub fn internal(self) -> u32 {
        match self {
            Family::Follow => code::FOLLOW_INTERNAL,
            Family::Account => code::ACCOUNT_INTERNAL,
            Family::Config => code::CONFIG_INTERNAL,
        }
    }

    /// The code of a request that ran out of time (retry).
    pub fn timeout(self) -> u32 {
        match self {
            Family::Follow => code::FOLLOW_TIMEOUT,
            Family::Account => code::ACCOUNT_TIMEOUT,
            Family::Config => code::CONFIG_INTERNAL,
        }
    }

    /// The code of a caller who may not call the API (not an admin, or acting for another user).
    pub fn not_admin(self) -> u32 {
        match self {
            Family::Follow => code::FOLLOW_NOT_ADMIN,
            Family::Account | Family::Config => code::NOT_ADMIN,
        }
    }

    /// Whether answers carry `ErrorDisplay` (always `""`), as Tencent's follow APIs do.
    pub fn has_error_display(self) -> bool {
        self == Family::Follow
    }
}

/// A refused request: the `ErrorCode` and `ErrorInfo` of a FAIL envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {info}")]
pub struct ApiError {
    /// The Tencent error code.
    pub code: u32,
    /// What went wrong, for the caller.
    pub info: String,
}

/// The longest `ErrorInfo`, in bytes: a message that quotes a long value from the request is cut
/// here (on a character boundary, ending in `…`), so a refusal never echoes a large input back.
pub const MAX_ERROR_INFO: usize = 512;

impl ApiError {
    /// A refusal with a code and message; a message over [`MAX_ERROR_INFO`] bytes is cut short.
    pub fn new(code: u32, info: impl Into<String>) -> Self {
        let mut info = info.into();
        if info.len() > MAX_ERROR_INFO {
            let mut end = MAX_ERROR_INFO - '…'.len_utf8();
            while !info.is_char_boundary(end) {
                end -= 1;
            }
            info.truncate(end);
            info.push('…');
        }
        ApiError { code, info }
    }
}

/// A value from the request, quoted for an error message: at most 64 characters of it, then `…`.
pub fn quoted(value: &str) -> String {
    const SHOWN: usize = 64;
    match value.char_indices().nth(SHOWN) {
        None => format!("{value:?}"),
        Some((end, _)) => format!("{:?}…", &value[..end]),
    }
}

/// `ActionStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActionStatus {
    /// The request was applied (per-item results may still hold codes).
    #[serde(rename = "OK")]
    Ok,
    /// The request was refused and nothing was applied.
    #[serde(rename = "FAIL")]
    Fail,
}

/// Every answer: the API's fields (on success) followed by the status fields, in one JSON object.
/// An error answer has the status fields only.
#[derive(Serialize)]
pub struct Envelope<'a, T: Serialize> {
    /// The API's fields, flattened into the envelope.
    #[serde(flatten)]
    pub data: Option<&'a T>,
    /// `ActionStatus`.
    #[serde(rename = "ActionStatus")]
    pub action_status: ActionStatus,
    /// `ErrorCode`: 0 on success.
    #[serde(rename = "ErrorCode")]
    pub error_code: u32,
    /// `ErrorInfo`: `""` on success.
    #[serde(rename = "ErrorInfo")]
    pub error_info: &'a str,
    /// `ErrorDisplay`: `""`, on follow APIs only.
    #[serde(rename = "ErrorDisplay", skip_serializing_if = "Option::is_none")]
    pub error_display: Option<&'static str>,
    /// `RequestId`: names the request in the server's log.
    #[serde(rename = "RequestId")]
    pub request_id: &'a str,
}

impl<'a, T: Serialize> Envelope<'a, T> {
    /// The envelope of `result`, answered by an API of `family`.
    pub fn new(family: Family, request_id: &'a str, result: &'a Result<T, ApiError>) -> Self {
        let error = result.as_ref().err();
        Envelope {
            data: result.as_ref().ok(),
            action_status: if error.is_none() { ActionStatus::Ok } else { ActionStatus::Fail },
            error_code: error.map_or(code::OK, |e| e.code),
            error_info: error.map_or("", |e| e.info.as_str()),
            error_display: family.has_error_display().then_some(""),
            request_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apis_resolve_and_index() {
        for (i, a) in Api::ALL.into_iter().enumerate() {
            assert_eq!(Api::resolve(a.service(), a.name()), Some(a));
            assert_eq!(a.index(), i);
        }
        assert_eq!(Api::resolve("follow", "account_import"), None);
        assert_eq!(Api::resolve_client("set_callback"), None);
        assert_eq!(Api::resolve_client("follow_get"), Some(Api::FollowGet));
    }

    #[test]
    fn envelopes_serialise_in_wire_order() {
        let ok: Result<reply::Replayed, ApiError> = Ok(reply::Replayed { replayed: 3 });
        let text = serde_json::to_string(&Envelope::new(Family::Config, "r1", &ok)).unwrap();
        assert_eq!(text, r#"{"Replayed":3,"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","RequestId":"r1"}"#);
        let fail: Result<reply::Replayed, ApiError> = Err(ApiError::new(30001, "no"));
        let text = serde_json::to_string(&Envelope::new(Family::Follow, "r2", &fail)).unwrap();
        assert_eq!(text, r#"{"ActionStatus":"FAIL","ErrorCode":30001,"ErrorInfo":"no","ErrorDisplay":"","RequestId":"r2"}"#);
    }

    #[test]
    fn long_messages_and_quoted_values_are_cut_short() {
        let e = ApiError::new(1, "é".repeat(400));
        assert!(e.info.len() <= MAX_ERROR_INFO && e.info.ends_with('…'), "{} bytes", e.info.len());
        assert_eq!(ApiError::new(1, "short").info, "short");
        assert_eq!(quoted("abc"), "\"abc\"");
        let long = quoted(&"x".repeat(1000));
        assert_eq!(long, format!("\"{}\"…", "x".repeat(64)));
    }
}
