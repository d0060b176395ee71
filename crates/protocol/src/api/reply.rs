//! The bodies of successful answers, flattened into the [`super::Envelope`], and the messages of the
//! client API's WebSocket. Field names are the wire's; each struct's doc names the APIs that answer
//! with it.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::{CallbackCommand, OptPlatform, UserId};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// No fields besides the envelope: `account_import`, `set_callback`, `set_callback_token`.
#[derive(Debug, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Empty {}

/// `follow_add`, `follow_delete`: one result per distinct target, in request order.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ResultItems {
    /// The per-target results.
    #[serde(rename = "ResultItem")]
    pub result_item: Vec<ResultItem>,
}

/// One target's result.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ResultItem {
    /// The target.
    #[serde(rename = "To_Account")]
    pub to_account: UserId,
    /// 0, or why this target was not applied: `30001` (yourself), `30003` (not imported), `32100`
    /// (following limit), `32101` (follower limit), `32102`/`32103` (mutual limits).
    #[serde(rename = "ResultCode")]
    #[cfg_attr(feature = "openapi", schema(example = 0))]
    pub result_code: u32,
    /// `""`, or the reason.
    #[serde(rename = "ResultInfo")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub result_info: &'static str,
}

/// `follow_check`: one result per target, in request order.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CheckItems {
    /// The per-target results.
    #[serde(rename = "ResultItem")]
    pub result_item: Vec<CheckItem>,
}

/// One target's relation to `From_Account`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CheckItem {
    /// The target.
    #[serde(rename = "To_Account")]
    pub to_account: UserId,
    /// 0, or `30003` when the target was never imported.
    #[serde(rename = "ResultCode")]
    pub result_code: u32,
    /// `""`, or the reason.
    #[serde(rename = "ResultInfo")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub result_info: &'static str,
    /// 0 none, 1 only `To_Account` follows `From_Account`, 2 only `From_Account` follows
    /// `To_Account`, 3 mutual.
    #[serde(rename = "FollowType")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 3))]
    pub follow_type: u8,
}

/// `follow_get`: one page of a list, newest first.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FollowPage {
    /// The page's entries.
    #[serde(rename = "FollowItem")]
    pub follow_item: Vec<FollowEntry>,
    /// Pass it back as `StartCursor` for the next page; `""` after the last page.
    #[serde(rename = "NextCursor")]
    pub next_cursor: String,
}

/// One entry of a list.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FollowEntry {
    /// The listed user.
    #[serde(rename = "To_Account")]
    pub to_account: UserId,
    /// When the listed relation began (for mutual: the later of the two follows), Unix seconds.
    #[serde(rename = "FollowTime")]
    pub follow_time: u64,
    /// The listed user's nickname and avatar, when set.
    #[serde(rename = "ProfileItem")]
    pub profile_item: Vec<ProfileItem>,
    /// How many times the listed user's profile changed.
    pub profile_sequence: i64,
}

/// One profile field.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProfileItem {
    /// `Tag_Profile_IM_Nick` or `Tag_Profile_IM_Image`.
    #[serde(rename = "Tag")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "Tag_Profile_IM_Nick"))]
    pub tag: &'static str,
    /// The value.
    #[serde(rename = "Value")]
    pub value: String,
}

/// `follow_get_info`: one result per target, in request order.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FollowInfo {
    /// The per-target counts.
    #[serde(rename = "FollowInfo")]
    pub follow_info: Vec<InfoItem>,
}

/// One target's counts (zero when the target does not exist).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct InfoItem {
    /// The target.
    #[serde(rename = "To_Account")]
    pub to_account: UserId,
    /// 0, or `30003` when the target was never imported.
    #[serde(rename = "ResultCode")]
    pub result_code: u32,
    /// `""`, or the reason.
    #[serde(rename = "ResultInfo")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub result_info: &'static str,
    /// Followers.
    #[serde(rename = "FollowerCount")]
    pub follower_count: i64,
    /// Users followed.
    #[serde(rename = "FollowingCount")]
    pub following_count: i64,
    /// Mutual follows.
    #[serde(rename = "MutualFollowingCount")]
    pub mutual_following_count: i64,
}

/// `multiaccount_import`: the entries that are not valid UserIDs (the others were imported).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FailAccounts {
    /// The refused entries, as sent.
    #[serde(rename = "FailAccounts")]
    pub fail_accounts: Vec<String>,
}

/// `account_delete`, `account_check`: one result per account, in request order.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AccountItems {
    /// The per-account results.
    #[serde(rename = "ResultItem")]
    pub result_item: Vec<AccountItem>,
}

/// One account's result.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AccountItem {
    /// 0, or `70107` when `account_delete` names an account that does not exist.
    #[serde(rename = "ResultCode")]
    pub result_code: u32,
    /// `""`, or the reason.
    #[serde(rename = "ResultInfo")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub result_info: &'static str,
    /// The account.
    #[serde(rename = "UserID")]
    pub user_id: UserId,
    /// `account_check` only: `Imported` or `NotImported`.
    #[serde(rename = "AccountStatus", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "Imported"))]
    pub account_status: Option<&'static str>,
}

/// `get_callback`: the webhook settings in force, under `Response` as Tencent's get APIs answer.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CallbackResponse {
    /// The settings.
    #[serde(rename = "Response")]
    pub response: CallbackInfo,
}

/// The webhook URL and the commands sent to it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CallbackInfo {
    /// `""` when webhooks are off.
    #[serde(rename = "Url")]
    pub url: String,
    /// The webhooks sent.
    #[serde(rename = "CallbackCommandList")]
    pub commands: Vec<CallbackCommand>,
}

/// `get_callback_token`, under `Response`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenResponse {
    /// The token settings.
    #[serde(rename = "Response")]
    pub response: TokenInfo,
}

/// The token that signs webhooks (`Sign`, `RequestTime`).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenInfo {
    /// The token, `""` when none is set.
    #[serde(rename = "Token")]
    pub token: String,
    /// Whether webhooks are signed with it.
    #[serde(rename = "IsTokenEnable")]
    pub enabled: bool,
}

/// `list_events`: the delivery log, newest first.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventPage {
    /// The page's events.
    #[serde(rename = "Events")]
    pub events: Vec<EventItem>,
    /// Pass it back as `Cursor` for the next page; `""` after the last page.
    #[serde(rename = "NextCursor")]
    pub next_cursor: String,
}

/// One webhook event and its delivery state.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventItem {
    /// A number local to the database, for paging.
    #[serde(rename = "EventId")]
    pub event_id: i64,
    /// The `webhook-id` header: unique everywhere, the same on every attempt and replay.
    #[serde(rename = "WebhookId")]
    #[cfg_attr(feature = "openapi", schema(example = "evt_019a6f3c-58e2-7b41-9c1d-2f0e6a8b4d71"))]
    pub webhook_id: String,
    /// The webhook.
    #[serde(rename = "CallbackCommand")]
    pub command: CallbackCommand,
    /// The user whose change it reports.
    #[serde(rename = "From_Account")]
    pub from: String,
    /// `pending`, `delivered` or `dead`.
    #[serde(rename = "State")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "delivered"))]
    pub state: &'static str,
    /// Attempts made.
    #[serde(rename = "Attempts")]
    pub attempts: u32,
    /// When the event was written, Unix ms.
    #[serde(rename = "CreatedTime")]
    pub created: i64,
    /// When its state last changed, Unix ms.
    #[serde(rename = "UpdatedTime")]
    pub updated: i64,
    /// Pending events only: when the next attempt is due, Unix ms.
    #[serde(rename = "NextAttemptTime", skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<i64>,
    /// The last attempt's error, `""` if none.
    #[serde(rename = "LastError")]
    pub last_error: String,
    /// `ClientIP` of the webhook.
    #[serde(rename = "ClientIP")]
    pub client_ip: String,
    /// `OptPlatform` of the webhook.
    #[serde(rename = "OptPlatform")]
    pub platform: OptPlatform,
    /// The exact webhook body.
    #[serde(rename = "Body")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub body: Box<RawValue>,
}

/// `list_attempts`: every attempt of one event, oldest first.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AttemptPage {
    /// The attempts.
    #[serde(rename = "Attempts")]
    pub attempts: Vec<AttemptItem>,
}

/// One delivery attempt.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AttemptItem {
    /// The attempt's number.
    #[serde(rename = "Attempt")]
    pub attempt: i64,
    /// When it started, Unix ms.
    #[serde(rename = "Time")]
    pub time: i64,
    /// How long it took, µs.
    #[serde(rename = "DurationUs")]
    pub duration_us: i64,
    /// The receiver's HTTP status, when it answered.
    #[serde(rename = "HttpStatus", skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// `ok`, `http_status`, `not_json`, `timeout`, `connect` or `refused`.
    #[serde(rename = "Outcome")]
    pub outcome: String,
    /// The error, `""` if none.
    #[serde(rename = "Error")]
    pub error: String,
    /// The first 1 KiB of the receiver's answer.
    #[serde(rename = "Response")]
    pub response: String,
}

/// `replay_event`, `replay_dead`: how many events were queued again.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Replayed {
    /// Events queued again.
    #[serde(rename = "Replayed")]
    pub replayed: usize,
}

/// Which list of the recipient changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum LiveEvent {
    /// Users the recipient follows.
    FollowingListChanged,
    /// The recipient's followers.
    FollowersListChanged,
    /// The recipient's mutual follows.
    MutualListChanged,
}

/// A message of the `/v1/client/events` WebSocket: a list of the recipient changed.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LiveMessage<'a> {
    /// Which list.
    #[serde(rename = "Event")]
    pub event: LiveEvent,
    /// Added (true) or removed (false).
    #[serde(rename = "IsAdd")]
    pub is_add: bool,
    /// The users added to or removed from the list.
    #[serde(rename = "Users")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<LiveUser>))]
    pub users: &'a [LiveUser],
}

/// A user in a [`LiveMessage`].
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LiveUser {
    /// The user.
    #[serde(rename = "UserID")]
    pub user_id: String,
    /// Additions only: the user's nickname, when set.
    #[serde(rename = "Nick", skip_serializing_if = "Option::is_none")]
    pub nick: Option<String>,
}
