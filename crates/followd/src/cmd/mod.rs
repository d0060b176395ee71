//! The commands: what each API does, one file per family, each command's parsing and application
//! side by side (the shape of mini-redis's `cmd/`).
//!
//! A command is a struct that only [`Command::parse`] builds, from a [`Body`] that the pipeline has
//! already read and authenticated; after parsing nothing re-validates. [`Command::apply`] runs it
//! against the store and returns the answer's body ([`Reply`]) or a [`Failure`], which the pipeline
//! turns into Tencent's codes. Parsing needs no store, so a fuzzer or a test can drive it alone.
//!
//! The same structs derive `utoipa::ToSchema`: they are the request bodies of the OpenAPI document,
//! and [`spec`] says what the document tells about each command (summary, example, error codes).
//! A test checks that the schemas and the parsers agree (every required field is required, every
//! example parses, every limit holds).
//!
//! | family | file | APIs |
//! | --- | --- | --- |
//! | follow | [`follow`] | `follow_add`, `follow_delete`, `follow_check`, `follow_get`, `follow_get_info` |
//! | account | [`account`] | `account_import`, `multiaccount_import`, `account_delete`, `account_check` |
//! | webhook settings and log | [`callback`] | `set_callback`, `get_callback`, `set_callback_token`, `get_callback_token`, `list_events`, `list_attempts`, `replay_event`, `replay_dead` |

pub mod account;
pub mod callback;
pub mod follow;

use followd_graph::outbox::Outbox;
use followd_graph::{GraphError, Origin, ReadView, Store, StoreError, WriteTx};
use followd_protocol::api::reply::*;
use followd_protocol::api::{Api, ApiError};
use followd_protocol::{OptPlatform, UserId};
use followd_webhook::Dispatcher;
use serde::Serialize;
use std::net::IpAddr;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::apps::App;
use crate::body::Body;
use crate::deletion::Deletions;

/// Who is calling, which decides whose `From_Account` may be used.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An app admin on the REST API: any `From_Account`.
    Admin,
    /// An end user on the client API: only itself; `From_Account` may be omitted.
    User(UserId),
}

/// A parsed command, ready to apply.
#[derive(Debug)]
pub enum Command {
    /// `follow_add`.
    FollowAdd(follow::FollowAdd),
    /// `follow_delete`.
    FollowDelete(follow::FollowDelete),
    /// `follow_check`.
    FollowCheck(follow::FollowCheck),
    /// `follow_get`.
    FollowGet(follow::FollowGet),
    /// `follow_get_info`.
    FollowGetInfo(follow::FollowGetInfo),
    /// `account_import`.
    AccountImport(account::AccountImport),
    /// `multiaccount_import`.
    MultiaccountImport(account::MultiaccountImport),
    /// `account_delete`.
    AccountDelete(account::AccountDelete),
    /// `account_check`.
    AccountCheck(account::AccountCheck),
    /// `set_callback`.
    SetCallback(callback::SetCallback),
    /// `get_callback`.
    GetCallback(callback::GetCallback),
    /// `set_callback_token`.
    SetCallbackToken(callback::SetCallbackToken),
    /// `get_callback_token`.
    GetCallbackToken(callback::GetCallbackToken),
    /// `list_events`.
    ListEvents(callback::ListEvents),
    /// `list_attempts`.
    ListAttempts(callback::EventSelector),
    /// `replay_event`.
    ReplayEvent(callback::EventSelector),
    /// `replay_dead`.
    ReplayDead(callback::ReplayDead),
}

impl Command {
    /// Parses `api`'s body for `caller`. Needs no store: every refusal here applies nothing.
    pub fn parse(api: Api, caller: &Caller, body: &Body) -> Result<Command, ApiError> {
        use follow::*;
        Ok(match api {
            Api::FollowAdd => Command::FollowAdd(FollowAdd::parse(caller, body)?),
            Api::FollowDelete => Command::FollowDelete(FollowDelete::parse(caller, body)?),
            Api::FollowCheck => Command::FollowCheck(FollowCheck::parse(caller, body)?),
            Api::FollowGet => Command::FollowGet(FollowGet::parse(caller, body)?),
            Api::FollowGetInfo => Command::FollowGetInfo(FollowGetInfo::parse(caller, body)?),
            Api::AccountImport => Command::AccountImport(account::AccountImport::parse(body)?),
            Api::MultiaccountImport => Command::MultiaccountImport(account::MultiaccountImport::parse(body)?),
            Api::AccountDelete => Command::AccountDelete(account::AccountDelete::parse(body)?),
            Api::AccountCheck => Command::AccountCheck(account::AccountCheck::parse(body)?),
            Api::SetCallback => Command::SetCallback(callback::SetCallback::parse(body)?),
            Api::GetCallback => Command::GetCallback(callback::GetCallback {}),
            Api::SetCallbackToken => Command::SetCallbackToken(callback::SetCallbackToken::parse(body)?),
            Api::GetCallbackToken => Command::GetCallbackToken(callback::GetCallbackToken {}),
            Api::ListEvents => Command::ListEvents(callback::ListEvents::parse(body)?),
            Api::ListAttempts => Command::ListAttempts(callback::EventSelector::parse(body)?),
            Api::ReplayEvent => Command::ReplayEvent(callback::EventSelector::parse(body)?),
            Api::ReplayDead => Command::ReplayDead(callback::ReplayDead::parse(body)?),
        })
    }

    /// Runs the command.
    pub async fn apply(self, cx: &Ctx<'_>) -> Result<Reply, Failure> {
        Ok(match self {
            Command::FollowAdd(c) => Reply::Items(c.apply(cx).await?),
            Command::FollowDelete(c) => Reply::Items(c.apply(cx).await?),
            Command::FollowCheck(c) => Reply::Check(c.apply(cx).await?),
            Command::FollowGet(c) => Reply::Page(c.apply(cx).await?),
            Command::FollowGetInfo(c) => Reply::Info(c.apply(cx).await?),
            Command::AccountImport(c) => Reply::Empty(c.apply(cx).await?),
            Command::MultiaccountImport(c) => Reply::Fail(c.apply(cx).await?),
            Command::AccountDelete(c) => Reply::Accounts(c.apply(cx).await?),
            Command::AccountCheck(c) => Reply::Accounts(c.apply(cx).await?),
            Command::SetCallback(c) => Reply::Empty(c.apply(cx).await?),
            Command::GetCallback(c) => Reply::Callback(c.apply(cx)),
            Command::SetCallbackToken(c) => Reply::Empty(c.apply(cx).await?),
            Command::GetCallbackToken(c) => Reply::Token(c.apply(cx)),
            Command::ListEvents(c) => Reply::Events(c.apply(cx).await?),
            Command::ListAttempts(c) => Reply::Attempts(c.list_attempts(cx).await?),
            Command::ReplayEvent(c) => Reply::Replayed(c.replay(cx).await?),
            Command::ReplayDead(c) => Reply::Replayed(c.apply(cx).await?),
        })
    }
}

/// What a command runs against: the app, the store, and the request's origin.
pub struct Ctx<'a> {
    /// The caller's app.
    pub app: &'a App,
    /// The graph store.
    pub store: &'a dyn Store,
    /// The webhook outbox of the same backend.
    pub outbox: &'a dyn Outbox,
    /// The delivery engine (replays enqueue into it).
    pub dispatcher: &'a Dispatcher,
    /// Account deletion jobs.
    pub deletions: &'a Deletions,
    /// For the log lines a command writes.
    pub request_id: &'a str,
    /// `ClientIP` of the webhooks a write owes.
    pub client_ip: IpAddr,
    /// `OptPlatform` of the webhooks a write owes.
    pub platform: OptPlatform,
}

impl Ctx<'_> {
    /// Where a write's webhooks say it came from (made only by the commands that write).
    pub fn origin(&self) -> Origin {
        Origin { client_ip: self.client_ip.to_string(), platform: self.platform }
    }

    /// Runs graph rules in a write transaction. A full write queue refuses at once (`60007`): an API
    /// request must not wait for room.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnMut(&mut dyn WriteTx) -> Result<R, GraphError> + Send + 'static,
    ) -> Result<R, GraphError> {
        followd_graph::try_write(self.store, f).await
    }

    /// [`Ctx::write`] of a follow or unfollow that says what it will read (see
    /// [`followd_graph::Prefetch`]).
    pub async fn write_prefetched<R: Send + 'static>(
        &self,
        prefetch: followd_graph::Prefetch,
        f: impl FnMut(&mut dyn WriteTx) -> Result<R, GraphError> + Send + 'static,
    ) -> Result<R, GraphError> {
        followd_graph::try_write_prefetched(self.store, Some(prefetch), f).await
    }

    /// Runs graph rules on a read snapshot.
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn ReadView) -> Result<R, GraphError> + Send + 'static,
    ) -> Result<R, GraphError> {
        followd_graph::read(self.store, f).await
    }
}

/// Why a command did not succeed: refused with a code already chosen, or a graph or store failure
/// that the pipeline maps to the family's code ([`crate::pipeline::reply::refusal`]).
#[derive(Debug)]
pub enum Failure {
    /// A refusal with its code.
    Refused(ApiError),
    /// A failure of the rules or the store.
    Graph(GraphError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Refused(e)
    }
}

impl From<GraphError> for Failure {
    fn from(e: GraphError) -> Self {
        Failure::Graph(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Graph(e.into())
    }
}

/// Any API's answer fields (flattened into the envelope).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// follow_add, follow_delete.
    Items(ResultItems),
    /// follow_check.
    Check(CheckItems),
    /// follow_get.
    Page(FollowPage),
    /// follow_get_info.
    Info(FollowInfo),
    /// account_import, set_callback, set_callback_token.
    Empty(Empty),
    /// multiaccount_import.
    Fail(FailAccounts),
    /// account_delete, account_check.
    Accounts(AccountItems),
    /// get_callback.
    Callback(CallbackResponse),
    /// get_callback_token.
    Token(TokenResponse),
    /// list_events.
    Events(EventPage),
    /// list_attempts.
    Attempts(AttemptPage),
    /// replay_event, replay_dead.
    Replayed(Replayed),
}

/// What the API document says about one command, kept beside its code.
pub struct Spec {
    /// One line.
    pub summary: &'static str,
    /// A request body that parses (it is the document's example, and a test parses it).
    pub example: &'static str,
    /// The codes this command answers with besides the pipeline's (authentication, body, limits).
    pub errors: &'static [(u32, &'static str)],
    /// The request body's component name.
    pub request: String,
    /// The request body's schema and the schemas it refers to.
    pub request_schemas: Vec<(String, RefOr<Schema>)>,
    /// The success body's component name (see `followd_protocol::api::schema::reply_components`).
    pub reply: String,
}

impl Spec {
    /// A command whose body is `Req` and whose answer is `Rep`.
    pub fn of<Req: ToSchema, Rep: ToSchema>(summary: &'static str, example: &'static str, errors: &'static [(u32, &'static str)]) -> Spec {
        let mut request_schemas = vec![(Req::name().into_owned(), Req::schema())];
        Req::schemas(&mut request_schemas);
        Spec { summary, example, errors, request: Req::name().into_owned(), request_schemas, reply: Rep::name().into_owned() }
    }
}

/// The document's view of `api`.
pub fn spec(api: Api) -> Spec {
    match api.family() {
        followd_protocol::api::Family::Follow => follow::spec(api),
        followd_protocol::api::Family::Account => account::spec(api),
        followd_protocol::api::Family::Config => callback::spec(api),
    }
}

#[cfg(test)]
mod tests;
