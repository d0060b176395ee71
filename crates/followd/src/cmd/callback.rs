//! `/v4/callback_config/*`: the webhook admin API. Same URL parameters and admin check as the REST API;
//! bodies shaped like Tencent's `set_callback` / `set_callback_token` (protocol.md §1.6–1.7).

use followd_graph::outbox::{EventFilter, EventRef, EventRow, EventState, Requeue, WebhookId};
use followd_protocol::{code, CallbackCommand};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::body::Body;
use crate::reply::ApiError;
use crate::rest::Call;

/// Most events one `list_events` page returns.
pub const MAX_LIST: u64 = 1000;

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(code::CONFIG_INVALID_PARAM, m)
}

/// The event a call names: `{"EventId": n}` or `{"WebhookId": "evt_…"}`, exactly one of them.
fn event_ref(body: &Body) -> Result<EventRef, ApiError> {
    match (body.opt_i64("EventId")?, body.opt_str("WebhookId")?) {
        (Some(id), None) => Ok(EventRef::Id(id)),
        (None, Some(w)) => WebhookId::parse(w)
            .map(EventRef::Webhook)
            .ok_or_else(|| invalid("WebhookId is not a webhook-id this server sends (evt_ and a UUID, or evt_ and a number)")),
        (Some(_), Some(_)) => Err(invalid("give EventId or WebhookId, not both")),
        (None, None) => Err(invalid("EventId or WebhookId is required")),
    }
}

fn describe(e: EventRef) -> String {
    match e {
        EventRef::Id(id) => format!("event {id}"),
        EventRef::Webhook(w) => format!("event {w}"),
    }
}

impl Call<'_> {
    fn internal(&self, e: followd_graph::StoreError) -> ApiError {
        ApiError::from_graph(e.into(), self.family, self.request_id)
    }

    async fn save(&self, over: followd_graph::outbox::WebhookOverride) -> Result<(), ApiError> {
        self.st.outbox.save_override(self.app.sdkappid, over.clone()).await.map_err(|e| self.internal(e))?;
        self.app.set_webhook_override(over);
        tracing::info!(app = self.app.sdkappid, request_id = self.request_id, "webhook settings changed through the admin API");
        Ok(())
    }

    /// `set_callback`: `{"Url": "…", "CallbackCommandList": […]}`; an empty Url turns webhooks off.
    pub async fn set_callback(&self, body: &Body) -> Result<Empty, ApiError> {
        let url = body.opt_str("Url")?.ok_or_else(|| invalid("Url is required (\"\" turns webhooks off)"))?.to_owned();
        if !url.is_empty() {
            let ok = (url.starts_with("http://") || url.starts_with("https://")) && url::Url::parse(&url).is_ok_and(|u| u.host().is_some());
            if !ok {
                return Err(invalid(format!("Url {url:?} is not an http:// or https:// URL")));
            }
        }
        let commands = match body.opt_array("CallbackCommandList")? {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|c| match c.as_str().and_then(CallbackCommand::parse) {
                        Some(c) => Ok(c.as_str().to_owned()),
                        None => Err(invalid(format!("CallbackCommandList: {c} is not a Follow webhook command"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let _settings = self.app.settings.lock().await;
        let mut over = self.app.webhook_override();
        over.url = Some(url);
        if commands.is_some() {
            over.commands = commands;
        }
        self.save(over).await?;
        Ok(Empty {})
    }

    /// `get_callback`: the settings in force.
    pub async fn get_callback(&self) -> Result<Wrapped<CallbackInfo>, ApiError> {
        let ep = self.app.endpoint();
        let commands = ep
            .as_ref()
            .map(|e| CallbackCommand::ALL.into_iter().filter(|c| e.subscriptions.wants(*c)).map(|c| c.as_str().to_owned()).collect())
            .unwrap_or_default();
        Ok(Wrapped { response: CallbackInfo { url: ep.map(|e| e.url.clone()).unwrap_or_default(), commands } })
    }

    /// `set_callback_token`: `{"Token": "…", "IsTokenEnable": true}`.
    pub async fn set_callback_token(&self, body: &Body) -> Result<Empty, ApiError> {
        let token = body.opt_str("Token")?.ok_or_else(|| invalid("Token is required"))?.to_owned();
        if token.is_empty() || token.len() > 128 {
            return Err(invalid("Token must be 1 to 128 characters"));
        }
        let enabled = body.opt_bool("IsTokenEnable")?.unwrap_or(true);
        let _settings = self.app.settings.lock().await;
        let mut over = self.app.webhook_override();
        over.token = Some(token);
        over.token_enabled = Some(enabled);
        self.save(over).await?;
        Ok(Empty {})
    }

    /// `get_callback_token`.
    pub async fn get_callback_token(&self) -> Result<Wrapped<TokenInfo>, ApiError> {
        let over = self.app.webhook_override();
        let ep = self.app.endpoint();
        let token = over.token.clone().or_else(|| ep.as_ref().and_then(|e| e.token.clone())).unwrap_or_default();
        let enabled = ep.is_some_and(|e| e.token.is_some());
        Ok(Wrapped { response: TokenInfo { token, enabled } })
    }

    /// `list_events`: newest first, filtered, with a cursor.
    pub async fn list_events(&self, body: &Body) -> Result<EventPage, ApiError> {
        let limit = body.opt_u64("Limit")?.filter(|&n| n > 0).unwrap_or(100);
        if limit > MAX_LIST {
            return Err(invalid(format!("Limit {limit} is over {MAX_LIST}")));
        }
        let state = match body.opt_str("State")? {
            None => None,
            Some(s) => Some(EventState::parse(s).ok_or_else(|| invalid(format!("State {s:?} is not pending, delivered or dead")))?),
        };
        let command = match body.opt_str("CallbackCommand")? {
            None => None,
            Some(c) => {
                Some(CallbackCommand::parse(c).ok_or_else(|| invalid(format!("CallbackCommand {c:?} is not a Follow webhook command")))?)
            }
        };
        let before_id = match body.opt_str("Cursor")? {
            None | Some("") => None,
            Some(c) => Some(c.parse::<i64>().map_err(|_| invalid("Cursor is not a cursor this server returned"))?),
        };
        let filter = EventFilter {
            state,
            from: body.opt_str("From_Account")?.map(str::to_owned),
            command,
            start_ms: body.opt_i64("StartTime")?,
            end_ms: body.opt_i64("EndTime")?,
            before_id,
            limit: limit as usize,
        };
        let rows = self.st.outbox.list_events(self.app.sdkappid, filter).await.map_err(|e| self.internal(e))?;
        let next = if rows.len() as u64 == limit { rows.last().map(|r| r.event.id.to_string()).unwrap_or_default() } else { String::new() };
        Ok(EventPage { events: rows.into_iter().map(EventItem::from).collect(), next_cursor: next })
    }

    /// `list_attempts`: every attempt of one event (by `EventId` or `WebhookId`), oldest first.
    pub async fn list_attempts(&self, body: &Body) -> Result<AttemptPage, ApiError> {
        let event = event_ref(body)?;
        let rows = self.st.outbox.list_attempts(self.app.sdkappid, event).await.map_err(|e| self.internal(e))?;
        let rows = rows.ok_or_else(|| invalid(format!("{} does not exist", describe(event))))?;
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

    /// `replay_event` (`{"EventId": n}` or `{"WebhookId": "evt_…"}`) and `replay_dead`
    /// (`{"StartTime": ms, "EndTime": ms}`). A replayed event keeps its `webhook-id`.
    pub async fn replay(&self, body: &Body, one: bool) -> Result<Replayed, ApiError> {
        let which = if one {
            Requeue::One(event_ref(body)?)
        } else {
            let start = body.opt_i64("StartTime")?.ok_or_else(|| invalid("StartTime (ms) is required"))?;
            let end = body.opt_i64("EndTime")?.ok_or_else(|| invalid("EndTime (ms) is required"))?;
            if end <= start {
                return Err(invalid("EndTime must be after StartTime"));
            }
            Requeue::DeadBetween(start, end)
        };
        let events = self.st.outbox.requeue(self.app.sdkappid, which).await.map_err(|e| self.internal(e))?;
        if one && events.is_empty() {
            return Err(invalid("no such event, or it is still pending"));
        }
        let n = events.len();
        tracing::info!(app = self.app.sdkappid, request_id = self.request_id, events = n, "events replayed");
        self.st.dispatcher.enqueue(events);
        Ok(Replayed { replayed: n })
    }
}

/// No fields besides the envelope.
#[derive(Serialize)]
pub struct Empty {}

/// `{"Response": …}`, as Tencent's get APIs answer.
#[derive(Serialize)]
pub struct Wrapped<T: Serialize> {
    #[serde(rename = "Response")]
    response: T,
}

/// get_callback's answer.
#[derive(Serialize)]
pub struct CallbackInfo {
    #[serde(rename = "Url")]
    url: String,
    #[serde(rename = "CallbackCommandList")]
    commands: Vec<String>,
}

/// get_callback_token's answer.
#[derive(Serialize)]
pub struct TokenInfo {
    #[serde(rename = "Token")]
    token: String,
    #[serde(rename = "IsTokenEnable")]
    enabled: bool,
}

/// list_events' answer.
#[derive(Serialize)]
pub struct EventPage {
    #[serde(rename = "Events")]
    events: Vec<EventItem>,
    #[serde(rename = "NextCursor")]
    next_cursor: String,
}

#[derive(Serialize)]
struct EventItem {
    #[serde(rename = "EventId")]
    event_id: i64,
    #[serde(rename = "WebhookId")]
    webhook_id: String,
    #[serde(rename = "CallbackCommand")]
    command: &'static str,
    #[serde(rename = "From_Account")]
    from: String,
    #[serde(rename = "State")]
    state: &'static str,
    #[serde(rename = "Attempts")]
    attempts: u32,
    #[serde(rename = "CreatedTime")]
    created: i64,
    #[serde(rename = "UpdatedTime")]
    updated: i64,
    #[serde(rename = "NextAttemptTime", skip_serializing_if = "Option::is_none")]
    next_attempt: Option<i64>,
    #[serde(rename = "LastError")]
    last_error: String,
    #[serde(rename = "ClientIP")]
    client_ip: String,
    #[serde(rename = "OptPlatform")]
    platform: &'static str,
    #[serde(rename = "Body")]
    body: Box<RawValue>,
}

impl From<EventRow> for EventItem {
    fn from(r: EventRow) -> Self {
        let e = r.event;
        EventItem {
            event_id: e.id,
            webhook_id: e.webhook_id.to_string(),
            command: e.command.as_str(),
            from: e.from,
            state: r.state.as_str(),
            attempts: r.attempts,
            created: e.created_ms,
            updated: r.updated_ms,
            next_attempt: (r.state == EventState::Pending).then_some(e.next_at_ms),
            last_error: r.last_error.unwrap_or_default(),
            client_ip: e.client_ip,
            platform: e.platform.as_str(),
            body: RawValue::from_string(e.body).unwrap_or_else(|_| RawValue::from_string("null".into()).expect("valid")),
        }
    }
}

/// list_attempts' answer.
#[derive(Serialize)]
pub struct AttemptPage {
    #[serde(rename = "Attempts")]
    attempts: Vec<AttemptItem>,
}

#[derive(Serialize)]
struct AttemptItem {
    #[serde(rename = "Attempt")]
    attempt: i64,
    #[serde(rename = "Time")]
    time: i64,
    #[serde(rename = "DurationUs")]
    duration_us: i64,
    #[serde(rename = "HttpStatus", skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    #[serde(rename = "Outcome")]
    outcome: String,
    #[serde(rename = "Error")]
    error: String,
    #[serde(rename = "Response")]
    response: String,
}

/// replay's answer.
#[derive(Serialize)]
pub struct Replayed {
    #[serde(rename = "Replayed")]
    replayed: usize,
}
