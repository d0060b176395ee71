//! The webhook outbox as the delivery engine sees it: events written by graph changes, their
//! attempts, and the operations the admin API needs. Backends implement [`Outbox`].

use followd_protocol::{CallbackCommand, OptPlatform};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use uuid::Uuid;

use crate::{AppId, StoreResult};

/// A boxed future, for the object-safe [`Outbox`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventState {
    /// Waiting for delivery or for a retry.
    Pending = 0,
    /// Answered with HTTP 200 and a JSON body.
    Delivered = 1,
    /// Out of retries (or nowhere to send it); kept for replay.
    Dead = 2,
}

impl EventState {
    /// Parses the stored number.
    pub fn from_i64(n: i64) -> Option<Self> {
        match n {
            0 => Some(EventState::Pending),
            1 => Some(EventState::Delivered),
            2 => Some(EventState::Dead),
            _ => None,
        }
    }

    /// The name used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Delivered => "delivered",
            EventState::Dead => "dead",
        }
    }

    /// Parses the admin API's name.
    pub fn parse(s: &str) -> Option<Self> {
        [EventState::Pending, EventState::Delivered, EventState::Dead].into_iter().find(|e| e.as_str() == s)
    }
}

/// An event's `webhook-id`: what receivers dedupe on, so it is never reused by another event, not
/// after a restore from backup, a wiped `data_dir` or on another node.
///
/// A row id cannot promise that (a restored or new database hands the same ids out again), so every
/// event gets a UUIDv7 when it is written: 74 random bits make it unique everywhere, and its first
/// 48 bits (the commit time in ms) order it by time.
/// Events written before followd stored one were already sent as `evt_<EventId>` and keep that id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookId {
    /// A UUIDv7 made when the event was written; sent as `evt_` and its hyphenated lowercase text.
    Uuid(Uuid),
    /// `evt_<EventId>`: an event written before followd stored webhook ids (schema version 1).
    Legacy(i64),
}

impl WebhookId {
    /// What every `webhook-id` starts with.
    pub const PREFIX: &'static str = "evt_";

    /// Parses a `webhook-id` as this server sends it; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(Self::PREFIX)?;
        if rest.len() == 36 {
            return Uuid::try_parse(rest).ok().map(WebhookId::Uuid);
        }
        if rest.is_empty() || rest.len() > 19 || !rest.bytes().all(|b| b.is_ascii_digit()) || rest.starts_with('0') {
            return None;
        }
        rest.parse().ok().map(WebhookId::Legacy)
    }
}

impl fmt::Display for WebhookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookId::Uuid(u) => write!(f, "{}{}", Self::PREFIX, u.hyphenated()),
            WebhookId::Legacy(id) => write!(f, "{}{id}", Self::PREFIX),
        }
    }
}

/// How the admin API names one event: by its numeric `EventId` or by its `WebhookId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRef {
    /// The numeric id (local to this database; used for paging).
    Id(i64),
    /// The `webhook-id` the receiver saw.
    Webhook(WebhookId),
}

/// A committed event, ready to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The row id: local to this database, grows with commit order (orders one user's events).
    pub id: i64,
    /// The `webhook-id` header: globally unique, the same on every retry and replay.
    pub webhook_id: WebhookId,
    /// The app.
    pub app: AppId,
    /// Which webhook.
    pub command: CallbackCommand,
    /// `From_Account`: events of one user are delivered in id order.
    pub from: String,
    /// The exact JSON body.
    pub body: String,
    /// `ClientIP` of the query.
    pub client_ip: String,
    /// `OptPlatform` of the query.
    pub platform: OptPlatform,
    /// Commit time, ms.
    pub created_ms: i64,
    /// Attempts made since the event was (re)queued; picks the next retry delay.
    pub retries: u32,
    /// Earliest time of the next attempt, ms.
    pub next_at_ms: i64,
}

impl StoredEvent {
    /// The event a backend has just stored for `ev`: pending, first attempt due at once.
    pub fn committed(id: i64, webhook_id: Uuid, ev: crate::NewEvent, body: String, now_ms: i64) -> Self {
        StoredEvent {
            id,
            webhook_id: WebhookId::Uuid(webhook_id),
            app: ev.app,
            command: ev.command,
            from: ev.from.to_string(),
            body,
            client_ip: ev.origin.client_ip,
            platform: ev.origin.platform,
            created_ms: now_ms,
            retries: 0,
            next_at_ms: now_ms,
        }
    }
}

/// The outcome class of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// HTTP 200 with a JSON body.
    Ok,
    /// Another HTTP status.
    HttpStatus,
    /// HTTP 200 but the body is not JSON.
    NotJson,
    /// No complete answer within the timeout.
    Timeout,
    /// Could not connect (refused, DNS, TLS).
    Connect,
    /// The destination is not allowed (SSRF guard) or the app has no webhook for it.
    Refused,
}

impl Outcome {
    /// Every outcome, for metrics.
    pub const ALL: [Outcome; 6] =
        [Outcome::Ok, Outcome::HttpStatus, Outcome::NotJson, Outcome::Timeout, Outcome::Connect, Outcome::Refused];

    /// The stored and exported name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::HttpStatus => "http_status",
            Outcome::NotJson => "not_json",
            Outcome::Timeout => "timeout",
            Outcome::Connect => "connect",
            Outcome::Refused => "refused",
        }
    }
}

/// One attempt and the event's state after it, recorded together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The event.
    pub event_id: i64,
    /// When the attempt started, ms.
    pub at_ms: i64,
    /// How long it took, µs.
    pub duration_us: i64,
    /// The HTTP status, when one came back.
    pub status: Option<u16>,
    /// The outcome class.
    pub outcome: Outcome,
    /// What went wrong, for people.
    pub error: Option<String>,
    /// The first 1 KiB of the response body.
    pub response: Option<String>,
    /// The event's state after this attempt.
    pub state: EventState,
    /// Attempts since (re)queued, after this one.
    pub retries: u32,
    /// When the next attempt is due, ms (when still pending).
    pub next_at_ms: i64,
}

/// An event as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// The event.
    pub event: StoredEvent,
    /// Its state.
    pub state: EventState,
    /// All attempts ever made.
    pub attempts: u32,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Last change, ms.
    pub updated_ms: i64,
}

/// An attempt as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// The attempt's number for its event, from 1.
    pub id: i64,
    /// When, ms.
    pub at_ms: i64,
    /// How long, µs.
    pub duration_us: i64,
    /// HTTP status.
    pub status: Option<u16>,
    /// Outcome class.
    pub outcome: String,
    /// Error text.
    pub error: Option<String>,
    /// First 1 KiB of the response.
    pub response: Option<String>,
}

/// Which events the admin API lists.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this state.
    pub state: Option<EventState>,
    /// Only this `From_Account`.
    pub from: Option<String>,
    /// Only this command.
    pub command: Option<CallbackCommand>,
    /// Created at or after, ms.
    pub start_ms: Option<i64>,
    /// Created before, ms.
    pub end_ms: Option<i64>,
    /// Keyset cursor: only ids below this (newest first).
    pub before_id: Option<i64>,
    /// Only ids above this: bounds how much of the log a filter no index serves may scan (the
    /// console searches a long log a window at a time).
    pub after_id: Option<i64>,
    /// Page size.
    pub limit: usize,
}

/// Webhook settings changed through the admin API; they override the config file's. Its `Debug`
/// masks the token and the signing secret, so a logged value never shows them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WebhookOverride {
    /// `Some(url)` replaces the URL (`""` = no webhook); `None` keeps the file's.
    pub url: Option<String>,
    /// Replaces the command list.
    pub commands: Option<Vec<String>>,
    /// Replaces the token (`""` = none).
    pub token: Option<String>,
    /// Whether the token is used.
    pub token_enabled: Option<bool>,
    /// Replaces the Standard Webhooks signing secret (`""` = none), set from the console.
    pub signing_secret: Option<String>,
}

impl std::fmt::Debug for WebhookOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mask = |s: &Option<String>| s.as_ref().map(|s| if s.is_empty() { "" } else { "***" });
        f.debug_struct("WebhookOverride")
            .field("url", &self.url)
            .field("commands", &self.commands)
            .field("token", &mask(&self.token))
            .field("token_enabled", &self.token_enabled)
            .field("signing_secret", &mask(&self.signing_secret))
            .finish()
    }
}

/// Where [`Outbox::claim_handed`] passes the events it takes.
pub type Deliver = Box<dyn FnOnce(Vec<StoredEvent>) + Send>;

/// The outbox operations of a backend. Writes go through the backend's single writer.
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` pending events of `app` with an id above `after_id`, in id order.
    fn load_pending(&self, app: AppId, after_id: i64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StoredEvent>>>;
    /// Those of the events `ids` of `app` that are pending, in id order.
    fn load_events(&self, app: AppId, ids: Vec<i64>) -> BoxFuture<'_, StoreResult<Vec<StoredEvent>>>;
    /// Every app that has pending events, in order.
    fn pending_apps(&self) -> BoxFuture<'_, StoreResult<Vec<AppId>>>;
    /// How many events are pending.
    fn count_pending(&self) -> BoxFuture<'_, StoreResult<u64>>;
    /// Records attempts and the resulting event states in one transaction.
    fn record(&self, batch: Vec<AttemptRecord>) -> BoxFuture<'_, StoreResult<()>>;
    /// Lists an app's events, newest first.
    fn list_events(&self, app: AppId, filter: EventFilter) -> BoxFuture<'_, StoreResult<Vec<EventRow>>>;
    /// Lists an event's attempts, oldest first; `None` when the app has no such event.
    fn list_attempts(&self, app: AppId, event: EventRef) -> BoxFuture<'_, StoreResult<Option<Vec<AttemptRow>>>>;
    /// Puts delivered or dead events back to pending: one event, or every dead event created in a time
    /// range. Returns the requeued events.
    fn requeue(&self, app: AppId, which: Requeue) -> BoxFuture<'_, StoreResult<Vec<StoredEvent>>>;
    /// Whether [`Outbox::requeue`] hands the events to the node that owns their lane (a store shared
    /// by several nodes), whose dispatcher takes them with [`Outbox::claim_handed`]; when false the
    /// caller gives them to its own dispatcher.
    fn requeue_hands_off(&self) -> bool {
        false
    }
    /// Takes up to `limit` of `app`'s pending events that were handed to this node (written by
    /// another node for a lane this one owns, adopted from a dead node, or requeued), in id order,
    /// and passes them, maybe none, to `deliver` before the take is committed, so a later event of
    /// their lane that this node writes reaches its dispatcher after them. Returns how many there
    /// were. A store that is never shared hands nothing: by default there is nothing to take.
    fn claim_handed(&self, app: AppId, limit: usize, deliver: Deliver) -> BoxFuture<'_, StoreResult<usize>> {
        let _ = (app, limit);
        deliver(Vec::new());
        Box::pin(async { Ok(0) })
    }
    /// Deletes delivered events (and their attempts) older than `before_ms`; returns how many.
    fn purge_delivered(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>>;
    /// Stored webhook overrides of every app.
    fn load_overrides(&self) -> BoxFuture<'_, StoreResult<Vec<(AppId, WebhookOverride)>>>;
    /// Stores an app's override.
    fn save_override(&self, app: AppId, o: WebhookOverride) -> BoxFuture<'_, StoreResult<()>>;
}

/// What [`Outbox::requeue`] puts back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// One event (delivered or dead).
    One(EventRef),
    /// Every dead event created in `[start_ms, end_ms)`.
    DeadBetween(i64, i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_debug_without_their_secrets() {
        let o = WebhookOverride {
            token: Some("tok-secret".into()),
            signing_secret: Some("whsec_c2VjcmV0c2VjcmV0c2VjcmV0".into()),
            url: Some("http://x".into()),
            ..Default::default()
        };
        let shown = format!("{o:?}");
        assert!(!shown.contains("tok-secret") && !shown.contains("whsec_"), "{shown}");
        assert!(shown.contains("***") && shown.contains("http://x"), "{shown}");
    }

    #[test]
    fn webhook_ids_print_and_parse_back() {
        let u = Uuid::from_u128(0x0190_1234_5678_7abc_8def_0123_4567_89ab);
        let id = WebhookId::Uuid(u);
        assert_eq!(id.to_string(), "evt_01901234-5678-7abc-8def-0123456789ab");
        assert_eq!(WebhookId::parse(&id.to_string()), Some(id));
        assert_eq!(WebhookId::Legacy(42).to_string(), "evt_42");
        assert_eq!(WebhookId::parse("evt_42"), Some(WebhookId::Legacy(42)));
        assert_eq!(WebhookId::parse("evt_9223372036854775807"), Some(WebhookId::Legacy(i64::MAX)));
        for bad in [
            "",
            "evt_",
            "42",
            "EVT_42",
            "evt_-1",
            "evt_042",
            "evt_0",
            "evt_+1",
            "evt_9223372036854775808",
            "evt_01901234-5678-7abc-8def-0123456789a",
            "evt_01901234-5678-7abc-8def-0123456789ax",
            "evt_0190123456787abc8def0123456789ab",
            "evt_01901234-5678-7abc-8def-0123456789ab ",
            "msg_01901234-5678-7abc-8def-0123456789ab",
        ] {
            assert_eq!(WebhookId::parse(bad), None, "{bad:?}");
        }
    }
}
