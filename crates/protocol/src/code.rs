//! Error codes, as numbered by Tencent Cloud Chat (protocol.md §3.6 and §4.4).
//!
//! Only the codes followd actually answers with are named here; each constant's doc says when.

/// Success.
pub const OK: u32 = 0;

/// Invalid request parameter of a follow API; `ErrorInfo` names the problem.
pub const FOLLOW_INVALID_PARAM: u32 = 30001;
/// A follow API named a user that was never imported.
pub const FOLLOW_ACCOUNT_NOT_FOUND: u32 = 30003;
/// A follow API called by someone who is not an app admin (or, on the client API, acting for another user).
pub const FOLLOW_NOT_ADMIN: u32 = 30004;
/// Internal server error; retry.
pub const FOLLOW_INTERNAL: u32 = 30006;
/// The server is shutting down or overloaded; retry later.
pub const FOLLOW_TIMEOUT: u32 = 30007;
/// `From_Account` already follows the configured maximum number of users.
pub const FOLLOWING_LIMIT: u32 = 32100;
/// `To_Account` has reached the follower limit (unlimited by default, so never sent by default).
pub const FOLLOWER_LIMIT: u32 = 32101;
/// `From_Account` has reached the configured mutual-follow limit.
pub const FROM_MUTUAL_LIMIT: u32 = 32102;
/// `To_Account` has reached the configured mutual-follow limit.
pub const TO_MUTUAL_LIMIT: u32 = 32103;

/// The HTTP request could not be used: wrong method, or a body over the size limit.
pub const HTTP_PARSE: u32 = 60002;
/// The body is empty or is not valid JSON.
pub const JSON_PARSE: u32 = 60003;
/// Too many calls (a configured rate limit).
pub const RATE_LIMITED: u32 = 60007;
/// Unknown service or command in the URL.
pub const BAD_URL: u32 = 60009;
/// A non-follow admin API called by someone who is not an app admin.
pub const NOT_ADMIN: u32 = 60010;
/// The `sdkappid` URL parameter is missing or not a number.
pub const MISSING_SDKAPPID: u32 = 60012;
/// A UserID field in the body is not a string.
pub const USERID_NOT_STRING: u32 = 60015;
/// Wrong `identifier` or `contenttype` in the URL.
pub const BAD_URL_PARAMS: u32 = 60025;

/// The UserSig has expired.
pub const USERSIG_EXPIRED: u32 = 70001;
/// The UserSig is empty or missing.
pub const USERSIG_EMPTY: u32 = 70002;
/// The UserSig cannot be decoded.
pub const USERSIG_INVALID: u32 = 70003;
/// The UserSig's signature does not match the app's key.
pub const USERSIG_MISMATCH: u32 = 70009;
/// The `identifier` URL parameter differs from the one inside the UserSig.
pub const USERSIG_IDENTIFIER: u32 = 70013;
/// The `sdkappid` URL parameter differs from the one inside the UserSig.
pub const USERSIG_SDKAPPID: u32 = 70014;
/// No app with this SDKAppID is configured.
pub const UNKNOWN_SDKAPPID: u32 = 70020;
/// The account does not exist (per-item result of `account_delete`).
pub const ACCOUNT_NOT_FOUND: u32 = 70107;
/// Invalid parameters of an account API.
pub const ACCOUNT_INVALID_PARAM: u32 = 70402;
/// Internal error of an account API.
pub const ACCOUNT_INTERNAL: u32 = 70500;
/// An account API did not finish in time ("internal server timeout"); retry.
pub const ACCOUNT_TIMEOUT: u32 = 70169;

/// Internal error of a webhook-configuration API (`live_config` numbering).
pub const CONFIG_INTERNAL: u32 = 100001;
/// Invalid parameter of a webhook-configuration API (`live_config` numbering).
pub const CONFIG_INVALID_PARAM: u32 = 100002;
