//! The webhook commands (`/v4/callback_config/*`): the app's webhook settings, shaped like Tencent's
//! `set_callback` / `set_callback_token` (protocol.md §1.6–1.7), and the delivery log with replay.

use followd_graph::outbox::{EventFilter, EventRef, EventRow, EventState, Requeue, WebhookId, WebhookOverride};
use followd_protocol::api::reply::{
    AttemptItem, AttemptPage, CallbackInfo, CallbackResponse, Empty, EventItem, EventPage, Replayed, TokenInfo, TokenResponse,
};
use followd_protocol::api::{quoted, Api, ApiError};
use followd_protocol::{code, CallbackCommand};
use serde_json::value::RawValue;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use super::{Ctx, Failure, Spec};
use crate::body::Body;

/// Most events one `list_events` page returns.
pub const MAX_LIST: u64 = 1000;
/// `list_events`' page size when Limit is absent or 0.
pub const DEFAULT_LIST: u64 = 100;

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(code::CONFIG_INVALID_PARAM, m)
}

/// Stores new settings, then applies them.
async fn save(cx: &Ctx<'_>, over: WebhookOverride) -> Result<(), Failure> {
    cx.outbox.save_override(cx.app.sdkappid, over.clone()).await?;
    cx.app.set_webhook_override(over);
    tracing::info!(app = cx.app.sdkappid, request_id = cx.request_id, "webhook settings changed through the admin API");
    Ok(())
}

/// `set_callback`: where the webhooks go and which are sent.
#[derive(Debug, ToSchema)]
#[schema(as = SetCallbackRequest)]
pub struct SetCallback {
    /// An `http://` or `https://` URL; `""` turns webhooks off.
    #[schema(rename = "Url", example = "http://127.0.0.1:9000/imcallback")]
    pub url: String,
    /// The webhooks to send; absent keeps the current list.
    #[schema(rename = "CallbackCommandList", value_type = Option<Vec<CallbackCommand>>)]
    pub commands: Option<Vec<String>>,
}

impl SetCallback {
    /// Parses the body.
    pub fn parse(body: &Body) -> Result<Self, ApiError> {
        let url = body.opt_str("Url")?.ok_or_else(|| invalid("Url is required (\"\" turns webhooks off)"))?.to_owned();
        if !url.is_empty() {
            let ok = (url.starts_with("http://") || url.starts_with("https://")) && url::Url::parse(&url).is_ok_and(|u| u.host().is_some());
            if !ok {
                return Err(invalid(format!("Url {} is not an http:// or https:// URL", quoted(&url))));
            }
        }
        let commands = match body.opt_array("CallbackCommandList")? {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|c| match c.as_str().and_then(CallbackCommand::parse) {
                        Some(c) => Ok(c.as_str().to_owned()),
                        None => Err(invalid(format!(
                            "CallbackCommandList: {} is not a Follow webhook command",
                            c.as_str().map_or_else(|| c.to_string().chars().take(64).collect(), quoted)
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(SetCallback { url, commands })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<Empty, Failure> {
        let _settings = cx.app.settings.lock().await;
        let mut over = cx.app.webhook_override();
        over.url = Some(self.url);
        if self.commands.is_some() {
            over.commands = self.commands;
        }
        save(cx, over).await?;
        Ok(Empty {})
    }
}

/// `get_callback`: no parameters.
#[derive(Debug, ToSchema)]
#[schema(as = GetCallbackRequest)]
pub struct GetCallback {}

impl GetCallback {
    pub(super) fn apply(self, cx: &Ctx<'_>) -> CallbackResponse {
        let ep = cx.app.endpoint();
        let commands =
            ep.as_ref().map(|e| CallbackCommand::ALL.into_iter().filter(|c| e.subscriptions.wants(*c)).collect()).unwrap_or_default();
        CallbackResponse { response: CallbackInfo { url: ep.map(|e| e.url.clone()).unwrap_or_default(), commands } }
    }
}

/// `set_callback_token`: the token that signs webhooks (`Sign`, `RequestTime`).
#[derive(Debug, ToSchema)]
#[schema(as = SetCallbackTokenRequest)]
pub struct SetCallbackToken {
    /// 1 to 128 characters.
    #[schema(rename = "Token", min_length = 1, max_length = 128, example = "xxxxyyyy")]
    pub token: String,
    /// Whether webhooks are signed with it; true when absent.
    #[schema(rename = "IsTokenEnable", value_type = Option<bool>)]
    pub enabled: bool,
}

impl SetCallbackToken {
    /// Parses the body.
    pub fn parse(body: &Body) -> Result<Self, ApiError> {
        let token = body.opt_str("Token")?.ok_or_else(|| invalid("Token is required"))?.to_owned();
        if token.is_empty() || token.len() > 128 {
            return Err(invalid("Token must be 1 to 128 characters"));
        }
        Ok(SetCallbackToken { token, enabled: body.opt_bool("IsTokenEnable")?.unwrap_or(true) })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<Empty, Failure> {
        let _settings = cx.app.settings.lock().await;
        let mut over = cx.app.webhook_override();
        over.token = Some(self.token);
        over.token_enabled = Some(self.enabled);
        save(cx, over).await?;
        Ok(Empty {})
    }
}

/// `get_callback_token`: no parameters.
#[derive(Debug, ToSchema)]
#[schema(as = GetCallbackTokenRequest)]
pub struct GetCallbackToken {}

impl GetCallbackToken {
    pub(super) fn apply(self, cx: &Ctx<'_>) -> TokenResponse {
        let over = cx.app.webhook_override();
        let ep = cx.app.endpoint();
        let token = over.token.clone().or_else(|| ep.as_ref().and_then(|e| e.token.clone())).unwrap_or_default();
        let enabled = ep.is_some_and(|e| e.token.is_some());
        TokenResponse { response: TokenInfo { token, enabled } }
    }
}

/// `list_events`: the delivery log, newest first, filtered, a page at a time.
#[derive(Debug, ToSchema)]
#[schema(as = ListEventsRequest)]
pub struct ListEvents {
    /// Only events in this state: `pending`, `delivered` or `dead`.
    #[schema(rename = "State", value_type = Option<String>, example = "dead")]
    pub state: Option<EventState>,
    /// Only events about this user.
    #[schema(rename = "From_Account", value_type = Option<String>)]
    pub from: Option<String>,
    /// Only this webhook.
    #[schema(rename = "CallbackCommand", value_type = Option<CallbackCommand>)]
    pub command: Option<CallbackCommand>,
    /// Only events created at or after, Unix ms.
    #[schema(rename = "StartTime", value_type = Option<i64>)]
    pub start_ms: Option<i64>,
    /// Only events created before, Unix ms.
    #[schema(rename = "EndTime", value_type = Option<i64>)]
    pub end_ms: Option<i64>,
    /// The previous page's `NextCursor`; `""` or absent for the first page.
    #[schema(rename = "Cursor", value_type = Option<String>)]
    pub before_id: Option<i64>,
    /// Page size, 1 to 1000; 100 when absent or 0.
    #[schema(rename = "Limit", value_type = Option<u64>, maximum = 1000)]
    pub limit: u64,
}

impl ListEvents {
    /// Parses the body.
    pub fn parse(body: &Body) -> Result<Self, ApiError> {
        let limit = body.opt_u64("Limit")?.filter(|&n| n > 0).unwrap_or(DEFAULT_LIST);
        if limit > MAX_LIST {
            return Err(invalid(format!("Limit {limit} is over {MAX_LIST}")));
        }
        let state = match body.opt_str("State")? {
            None => None,
            Some(s) => Some(EventState::parse(s).ok_or_else(|| invalid(format!("State {} is not pending, delivered or dead", quoted(s))))?),
        };
        let command = match body.opt_str("CallbackCommand")? {
            None => None,
            Some(c) => Some(
                CallbackCommand::parse(c)
                    .ok_or_else(|| invalid(format!("CallbackCommand {} is not a Follow webhook command", quoted(c))))?,
            ),
        };
        let before_id = match body.opt_str("Cursor")? {
            None | Some("") => None,
            Some(c) => Some(c.parse::<i64>().map_err(|_| invalid("Cursor is not a cursor this server returned"))?),
        };
        Ok(ListEvents {
            state,
            from: body.opt_str("From_Account")?.map(str::to_owned),
            command,
            start_ms: body.opt_i64("StartTime")?,
            end_ms: body.opt_i64("EndTime")?,
            before_id,
            limit,
        })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<EventPage, Failure> {
        let limit = self.limit;
        let filter = EventFilter {
            state: self.state,
            from: self.from,
            command: self.command,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            before_id: self.before_id,
            after_id: None,
            limit: limit as usize,
        };
        let rows = cx.outbox.list_events(cx.app.sdkappid, filter).await?;
        let next = if rows.len() as u64 == limit { rows.last().map(|r| r.event.id.to_string()).unwrap_or_default() } else { String::new() };
        Ok(EventPage { events: rows.into_iter().map(event_item).collect(), next_cursor: next })
    }
}

/// An event as `list_events` answers it (the console renders the same).
pub fn event_item(r: EventRow) -> EventItem {
    let e = r.event;
    EventItem {
        event_id: e.id,
        webhook_id: e.webhook_id.to_string(),
        command: e.command,
        from: e.from,
        state: r.state.as_str(),
        attempts: r.attempts,
        created: e.created_ms,
        updated: r.updated_ms,
        next_attempt: (r.state == EventState::Pending).then_some(e.next_at_ms),
        last_error: r.last_error.unwrap_or_default(),
        client_ip: e.client_ip,
        platform: e.platform,
        body: RawValue::from_string(e.body).unwrap_or_else(|_| RawValue::from_string("null".into()).expect("valid")),
    }
}

/// The event `list_attempts` and `replay_event` name: `{"EventId": n}` or `{"WebhookId": "evt_…"}`,
/// exactly one of them.
#[derive(Debug)]
pub struct EventSelector {
    /// The event.
    pub event: EventRef,
}

impl EventSelector {
    /// Parses the body.
    pub fn parse(body: &Body) -> Result<Self, ApiError> {
        let event = match (body.opt_i64("EventId")?, body.opt_str("WebhookId")?) {
            (Some(id), None) => EventRef::Id(id),
            (None, Some(w)) => WebhookId::parse(w)
                .map(EventRef::Webhook)
                .ok_or_else(|| invalid("WebhookId is not a webhook-id this server sends (evt_ and a UUID, or evt_ and a number)"))?,
            (Some(_), Some(_)) => return Err(invalid("give EventId or WebhookId, not both")),
            (None, None) => return Err(invalid("EventId or WebhookId is required")),
        };
        Ok(EventSelector { event })
    }

    fn describe(&self) -> String {
        match self.event {
            EventRef::Id(id) => format!("event {id}"),
            EventRef::Webhook(w) => format!("event {w}"),
        }
    }

    /// `list_attempts`: every attempt of the event, oldest first.
    pub(super) async fn list_attempts(self, cx: &Ctx<'_>) -> Result<AttemptPage, Failure> {
        let rows = cx.outbox.list_attempts(cx.app.sdkappid, self.event).await?;
        let rows = rows.ok_or_else(|| invalid(format!("{} does not exist", self.describe())))?;
        Ok(AttemptPage {
            attempts: rows
                .into_iter()
                .map(|a| AttemptItem {
                    attempt: a.id,
                    time: a.at_ms,
                    duration_us: a.duration_us,
                    http_status: a.status,
                    outcome: a.outcome,
                    error: a.error.unwrap_or_default(),
                    response: a.response.unwrap_or_default(),
                })
                .collect(),
        })
    }

    /// `replay_event`: queues a delivered or dead event again; it keeps its `webhook-id`.
    pub(super) async fn replay(self, cx: &Ctx<'_>) -> Result<Replayed, Failure> {
        let replayed = requeue(cx, Requeue::One(self.event)).await?;
        if replayed.replayed == 0 {
            return Err(invalid("no such event, or it is still pending").into());
        }
        Ok(replayed)
    }
}

impl utoipa::PartialSchema for EventSelector {
    fn schema() -> RefOr<Schema> {
        let by = |key: &str, ty: Type, what: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(key, ObjectBuilder::new().schema_type(ty).description(Some(what)))
                .required(key)
        };
        OneOfBuilder::new()
            .description(Some("The event: by EventId or by WebhookId, exactly one of them."))
            .item(by("EventId", Type::Integer, "The event's number (list_events' EventId)."))
            .item(by("WebhookId", Type::String, "The event's webhook-id header (evt_…)."))
            .into()
    }
}

impl ToSchema for EventSelector {
    fn name() -> std::borrow::Cow<'static, str> {
        "EventSelector".into()
    }
}

/// `replay_dead`: queues again every dead event created in a time range.
#[derive(Debug, ToSchema)]
#[schema(as = ReplayDeadRequest)]
pub struct ReplayDead {
    /// Created at or after, Unix ms.
    #[schema(rename = "StartTime")]
    pub start_ms: i64,
    /// Created before, Unix ms; after StartTime.
    #[schema(rename = "EndTime")]
    pub end_ms: i64,
}

impl ReplayDead {
    /// Parses the body.
    pub fn parse(body: &Body) -> Result<Self, ApiError> {
        let start_ms = body.opt_i64("StartTime")?.ok_or_else(|| invalid("StartTime (ms) is required"))?;
        let end_ms = body.opt_i64("EndTime")?.ok_or_else(|| invalid("EndTime (ms) is required"))?;
        if end_ms <= start_ms {
            return Err(invalid("EndTime must be after StartTime"));
        }
        Ok(ReplayDead { start_ms, end_ms })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<Replayed, Failure> {
        requeue(cx, Requeue::DeadBetween(self.start_ms, self.end_ms)).await
    }
}

async fn requeue(cx: &Ctx<'_>, which: Requeue) -> Result<Replayed, Failure> {
    let events = cx.outbox.requeue(cx.app.sdkappid, which).await?;
    let n = events.len();
    if n > 0 {
        tracing::info!(app = cx.app.sdkappid, request_id = cx.request_id, events = n, "events replayed");
        // On a shared database they were handed to the node owning their lane, which was told.
        if !cx.outbox.requeue_hands_off() {
            cx.dispatcher.enqueue(events);
        }
    }
    Ok(Replayed { replayed: n })
}

const BODY_ERRORS: [(u32, &str); 1] = [(code::CONFIG_INVALID_PARAM, "a field is missing or invalid; ErrorInfo names it")];
const NO_BODY_ERRORS: [(u32, &str); 0] = [];

/// The document's view of a webhook command.
pub fn spec(api: Api) -> Spec {
    use followd_protocol::api::reply as r;
    match api {
        Api::SetCallback => Spec::of::<SetCallback, r::Empty>(
            "Set the webhook URL and the webhooks sent to it; applies to the next write and the next attempt, stored, overriding the config file.",
            r#"{"Url":"http://127.0.0.1:9000/imcallback","CallbackCommandList":["Follow.CallbackAfterFollowAdd","Follow.CallbackAfterFollowDelete"]}"#,
            &BODY_ERRORS,
        ),
        Api::GetCallback => Spec::of::<GetCallback, r::CallbackResponse>("The webhook settings in force.", "{}", &NO_BODY_ERRORS),
        Api::SetCallbackToken => Spec::of::<SetCallbackToken, r::Empty>(
            "Set the token that signs webhooks (Sign = hex SHA-256 of token + RequestTime).",
            r#"{"Token":"xxxxyyyy","IsTokenEnable":true}"#,
            &BODY_ERRORS,
        ),
        Api::GetCallbackToken => Spec::of::<GetCallbackToken, r::TokenResponse>("The token settings in force.", "{}", &NO_BODY_ERRORS),
        Api::ListEvents => Spec::of::<ListEvents, r::EventPage>(
            "The delivery log: events newest first, filtered by state, user, webhook and time; pass NextCursor back as Cursor.",
            r#"{"State":"dead","Limit":50}"#,
            &BODY_ERRORS,
        ),
        Api::ListAttempts => Spec::of::<EventSelector, r::AttemptPage>(
            "Every delivery attempt of one event, oldest first.",
            r#"{"EventId":42}"#,
            &BODY_ERRORS,
        ),
        Api::ReplayEvent => Spec::of::<EventSelector, r::Replayed>(
            "Send a delivered or dead event again; it keeps its webhook-id, so receivers dedupe it.",
            r#"{"WebhookId":"evt_019a6f3c-58e2-7b41-9c1d-2f0e6a8b4d71"}"#,
            &BODY_ERRORS,
        ),
        _ => Spec::of::<ReplayDead, r::Replayed>(
            "Send again every dead event created in [StartTime, EndTime).",
            r#"{"StartTime":1700000000000,"EndTime":1800000000000}"#,
            &BODY_ERRORS,
        ),
    }
}
