//! The answers a receiver gives: exactly the bodies Tencent documents.

/// The success answer: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`.
///
/// ```
/// assert_eq!(followd_receiver::answer::OK, r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#);
/// ```
pub const OK: &str = followd_protocol::webhook::RESPONSE_OK;

/// A failure answer with a non-zero code and a reason.
///
/// ```
/// let body = followd_receiver::answer::fail(1, "wrong SdkAppid");
/// assert_eq!(body, r#"{"ActionStatus":"FAIL","ErrorCode":1,"ErrorInfo":"wrong SdkAppid"}"#);
/// ```
pub fn fail(code: u32, info: &str) -> String {
    format!(r#"{{"ActionStatus":"FAIL","ErrorCode":{code},"ErrorInfo":{}}}"#, serde_json::Value::from(info))
}
