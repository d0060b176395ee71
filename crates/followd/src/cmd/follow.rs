//! `/v4/{service}/{command}`: the admin REST API, exactly as protocol.md §3, §4 and §4b describe it.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use followd_graph::deletion;
use followd_graph::read::{self, Relation};
use followd_graph::write::{self, NewAccount, WriteContext};
use followd_graph::{follow_time_secs, Counts, Cursor, ListKind, Origin};
use followd_protocol::{code, OptPlatform, UserId};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::admin;
use crate::auth::{client_ip, App, UrlParams};
use crate::body::Body;
use crate::reply::{envelope, ApiError, Family};
use crate::{now_secs, AppState};

/// Most targets of follow_add, follow_delete and follow_get_info.
pub const MAX_WRITE_TARGETS: usize = 20;
/// Most targets of follow_check.
pub const MAX_CHECK_TARGETS: usize = 100;
/// Most entries of one follow_get page.
pub const MAX_WANT_NUM: u64 = 1000;
/// follow_get's page size when WantNum is absent or 0.
pub const DEFAULT_WANT_NUM: u64 = 100;
/// Most accounts of one account API call.
pub const MAX_ACCOUNTS: usize = 100;
/// Longest Nick or FaceUrl accepted, in bytes.
pub const MAX_PROFILE_FIELD: usize = 500;

/// The APIs this route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    FollowAdd,
    FollowDelete,
    FollowCheck,
    FollowGet,
    FollowGetInfo,
    AccountImport,
    MultiaccountImport,
    AccountDelete,
    AccountCheck,
    SetCallback,
    GetCallback,
    SetCallbackToken,
    GetCallbackToken,
    ListEvents,
    ListAttempts,
    ReplayEvent,
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

    /// The service word of the URL.
    pub fn service(self) -> &'static str {
        match self.family() {
            Family::Follow => "follow",
            Family::Account => "im_open_login_svc",
            Family::Config => "callback_config",
        }
    }

    /// The command word (for logs, metrics and rate limits).
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
}

/// The handler of every `/v4/{service}/{command}` request.
pub async fn handle(
    State(st): State<Arc<AppState>>,
    Path((service, command)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = st.next_request_id();
    let started = std::time::Instant::now();
    let Some(api) = Api::resolve(&service, &command) else {
        let e = ApiError::new(code::BAD_URL, format!("unknown API v4/{service}/{command}"));
        st.metrics.request("unknown", false, started.elapsed());
        return envelope::<()>(Family::Account, &request_id, Err(e));
    };
    let result = serve(&st, api, Surface::Rest, Incoming { peer, method, headers, query, body }, &request_id).await;
    st.metrics.request(api.name(), result.is_ok(), started.elapsed());
    envelope(api.family(), &request_id, result)
}

/// An API request as it arrived, before anything is checked.
pub struct Incoming {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The HTTP method.
    pub method: Method,
    /// The headers.
    pub headers: HeaderMap,
    /// The raw query string.
    pub query: Option<String>,
    /// The body, or why it could not be read.
    pub body: Result<Bytes, BytesRejection>,
}

/// Where a request came in, which decides who may call and what the webhooks say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The admin REST API: an app admin's UserSig; `OptPlatform=RESTAPI`.
    Rest,
    /// The client API: an end user's own UserSig, acting only for itself; `OptPlatform` from
    /// `X-Client-Platform`.
    Client,
}

/// Checks a request (method, body, UserSig, caller, rate limits, body shape) and runs the API.
pub async fn serve(st: &AppState, api: Api, surface: Surface, req: Incoming, request_id: &str) -> Result<Reply, ApiError> {
    if req.method != Method::POST {
        return Err(ApiError::new(code::HTTP_PARSE, "only POST is allowed"));
    }
    let body = req.body.map_err(|e| ApiError::new(code::HTTP_PARSE, format!("cannot read the request body: {e}")))?;
    let now = now_secs();
    let params = UrlParams::parse(req.query.as_deref());
    let (app, caller, platform) = match surface {
        Surface::Rest => {
            let app = st.apps.authenticate_admin(&params, api.family(), now)?;
            app.check_rest_rate(api)?;
            (app, Caller::Admin, OptPlatform::RestApi)
        }
        Surface::Client => {
            let (app, identifier) = st.apps.authenticate(&params, now)?;
            let me = crate::auth::identifier_user(&identifier)?;
            // A budget per user, apart from the admin REST API's: one user cannot use up anyone else's.
            app.check_client_rate(&me, Some(api), now)?;
            (app, Caller::User(me), crate::client::platform(&req.headers))
        }
    };
    let body = Body::parse(&body, api.family())?;
    let xff = req.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let origin = Origin { client_ip: client_ip(req.peer, xff, &st.proxies).to_string(), platform };
    let call = Call { st, app: &app, request_id, family: api.family(), caller };
    let result = call.dispatch(api, &body, origin).await;
    if let Err(e) = &result {
        tracing::debug!(request_id, api = api.name(), code = e.code, info = %e.info, "refused");
    }
    result
}

/// One authenticated call.
pub struct Call<'a> {
    /// Server state.
    pub st: &'a AppState,
    /// The app.
    pub app: &'a Arc<App>,
    /// For logs and the envelope.
    pub request_id: &'a str,
    /// Error family.
    pub family: Family,
    /// Who is calling.
    pub caller: Caller,
}

/// Who is calling, which decides whose `From_Account` may be used.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An app admin on the REST API: any `From_Account`.
    Admin,
    /// An end user on the client API: only itself; `From_Account` may be omitted.
    User(UserId),
}

/// Most entries of one follow_get page on the client API (the SDK's limit).
pub const MAX_CLIENT_WANT_NUM: u64 = 500;

impl Call<'_> {
    /// `From_Account` of the body, as the caller may use it (`30004` when a user acts for another).
    fn acting_account(&self, body: &Body) -> Result<UserId, ApiError> {
        match &self.caller {
            Caller::Admin => body.user("From_Account"),
            Caller::User(me) => match body.opt_user("From_Account")? {
                None => Ok(me.clone()),
                Some(u) if &u == me => Ok(u),
                Some(u) => Err(ApiError::new(code::FOLLOW_NOT_ADMIN, format!("{me} cannot act for {u}"))),
            },
        }
    }

    /// Runs one API for this caller.
    pub(crate) async fn dispatch(&self, api: Api, body: &Body, origin: Origin) -> Result<Reply, ApiError> {
        let v = match api {
            Api::FollowAdd => {
                let from = self.acting_account(body)?;
                let targets = body.object_users("FollowItem", "To_Account", MAX_WRITE_TARGETS)?;
                Reply::Items(self.follow_add(from, targets, origin).await?)
            }
            Api::FollowDelete => {
                let from = self.acting_account(body)?;
                let targets = body.users("To_Account", MAX_WRITE_TARGETS)?;
                Reply::Items(self.follow_delete(from, targets, origin).await?)
            }
            Api::FollowCheck => {
                let from = self.acting_account(body)?;
                let targets = body.users("To_Account", MAX_CHECK_TARGETS)?;
                Reply::Check(self.follow_check(from, targets).await?)
            }
            Api::FollowGet => {
                let from = self.acting_account(body)?;
                let max = if matches!(self.caller, Caller::Admin) { MAX_WANT_NUM } else { MAX_CLIENT_WANT_NUM };
                let (kind, cursor, want) = parse_follow_get(body, max)?;
                Reply::Page(self.follow_get(from, kind, cursor, want).await?)
            }
            Api::FollowGetInfo => {
                let from = self.acting_account(body)?;
                let targets = body.users("To_Account", MAX_WRITE_TARGETS)?;
                Reply::Info(self.follow_get_info(from, targets).await?)
            }
            Api::AccountImport => Reply::Empty(self.account_import(body).await?),
            Api::MultiaccountImport => Reply::Fail(self.multiaccount_import(body).await?),
            Api::AccountDelete => {
                let users = body.object_users("DeleteItem", "UserID", MAX_ACCOUNTS)?;
                Reply::Accounts(self.account_delete(users, origin).await?)
            }
            Api::AccountCheck => {
                let users = body.object_users("CheckItem", "UserID", MAX_ACCOUNTS)?;
                Reply::Accounts(self.account_check(users).await?)
            }
            Api::SetCallback => Reply::Set(self.set_callback(body).await?),
            Api::GetCallback => Reply::Callback(self.get_callback().await?),
            Api::SetCallbackToken => Reply::Set(self.set_callback_token(body).await?),
            Api::GetCallbackToken => Reply::Token(self.get_callback_token().await?),
            Api::ListEvents => Reply::Events(self.list_events(body).await?),
            Api::ListAttempts => Reply::Attempts(self.list_attempts(body).await?),
            Api::ReplayEvent => Reply::Replayed(self.replay(body, true).await?),
            Api::ReplayDead => Reply::Replayed(self.replay(body, false).await?),
        };
        Ok(v)
    }

    fn graph_err(&self, e: followd_graph::GraphError) -> ApiError {
        ApiError::from_graph(e, self.family, self.request_id)
    }

    /// Runs graph rules in a write transaction; failures become this API's error codes. A full write
    /// queue refuses at once (`60007`): an API request must not wait for room.
    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn followd_graph::WriteTx) -> Result<R, followd_graph::GraphError> + Send + 'static,
    ) -> Result<R, ApiError> {
        followd_graph::try_write(&*self.st.store, f).await.map_err(|e| self.graph_err(e))
    }

    /// Runs graph rules on a read snapshot; failures become this API's error codes.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn followd_graph::ReadView) -> Result<R, followd_graph::GraphError> + Send + 'static,
    ) -> Result<R, ApiError> {
        followd_graph::read(&*self.st.store, f).await.map_err(|e| self.graph_err(e))
    }

    fn write_context(&self, origin: Origin) -> WriteContext {
        WriteContext { app: self.app.sdkappid, limits: self.app.limits, subscriptions: self.app.subscriptions(), origin }
    }

    /// follow_add.
    pub async fn follow_add(&self, from: UserId, targets: Vec<UserId>, origin: Origin) -> Result<ResultItems, ApiError> {
        let cx = self.write_context(origin);
        let items = self.write(move |tx| write::follow_add(tx, &cx, &from, &targets)).await?;
        Ok(ResultItems::from(items))
    }

    /// follow_delete.
    pub async fn follow_delete(&self, from: UserId, targets: Vec<UserId>, origin: Origin) -> Result<ResultItems, ApiError> {
        let cx = self.write_context(origin);
        let items = self.write(move |tx| write::follow_delete(tx, &cx, &from, &targets)).await?;
        Ok(ResultItems::from(items))
    }

    /// follow_check.
    pub async fn follow_check(&self, from: UserId, targets: Vec<UserId>) -> Result<CheckItems, ApiError> {
        let app = self.app.sdkappid;
        let items = self.read(move |v| read::follow_check(v, app, &from, &targets)).await?;
        Ok(CheckItems {
            result_item: items
                .into_iter()
                .map(|c| CheckItem {
                    to_account: c.user.to_string(),
                    result_code: c.code,
                    result_info: if c.code == 0 { "" } else { "To_Account does not exist" },
                    follow_type: c.relation as u8,
                })
                .collect(),
        })
    }

    /// follow_get.
    pub async fn follow_get(&self, from: UserId, kind: ListKind, cursor: Option<Cursor>, want: usize) -> Result<FollowPage, ApiError> {
        let app = self.app.sdkappid;
        let page = self.read(move |v| read::follow_get(v, app, &from, kind, cursor, want)).await?;
        Ok(FollowPage {
            follow_item: page
                .entries
                .into_iter()
                .map(|e| {
                    let mut profile = Vec::new();
                    if let Some(n) = e.profile.nick {
                        profile.push(ProfileItem { tag: "Tag_Profile_IM_Nick", value: n });
                    }
                    if let Some(f) = e.profile.face_url {
                        profile.push(ProfileItem { tag: "Tag_Profile_IM_Image", value: f });
                    }
                    FollowEntry {
                        to_account: e.user.to_string(),
                        follow_time: follow_time_secs(e.key),
                        profile_item: profile,
                        profile_sequence: e.profile.sequence,
                    }
                })
                .collect(),
            next_cursor: page.next.map(Cursor::encode).unwrap_or_default(),
        })
    }

    /// follow_get_info.
    pub async fn follow_get_info(&self, from: UserId, targets: Vec<UserId>) -> Result<FollowInfo, ApiError> {
        let app = self.app.sdkappid;
        let items = self.read(move |v| read::follow_get_info(v, app, &from, &targets)).await?;
        Ok(FollowInfo {
            follow_info: items
                .into_iter()
                .map(|(u, c)| {
                    let found = c.is_some();
                    let c = c.unwrap_or(Counts::default());
                    InfoItem {
                        to_account: u.to_string(),
                        result_code: if found { code::OK } else { code::FOLLOW_ACCOUNT_NOT_FOUND },
                        result_info: if found { "" } else { "To_Account does not exist" },
                        follower_count: c.followers,
                        following_count: c.following,
                        mutual_following_count: c.mutual,
                    }
                })
                .collect(),
        })
    }

    async fn account_import(&self, body: &Body) -> Result<Empty, ApiError> {
        let account =
            NewAccount { user: body.user("UserID")?, nick: profile_field(body, "Nick")?, face_url: profile_field(body, "FaceUrl")? };
        let app = self.app.sdkappid;
        self.write(move |tx| write::import_accounts(tx, app, &[account])).await?;
        Ok(Empty {})
    }

    async fn multiaccount_import(&self, body: &Body) -> Result<FailAccounts, ApiError> {
        let mut accounts = Vec::new();
        let mut fail = Vec::new();
        for (i, v) in body.array("Accounts", MAX_ACCOUNTS)?.iter().enumerate() {
            let s = v.as_str().ok_or_else(|| ApiError::new(code::USERID_NOT_STRING, format!("Accounts[{i}] must be a string")))?;
            match UserId::parse(s) {
                Ok(user) => accounts.push(NewAccount { user, nick: None, face_url: None }),
                Err(_) => fail.push(s.to_owned()),
            }
        }
        let app = self.app.sdkappid;
        self.write(move |tx| write::import_accounts(tx, app, &accounts)).await?;
        Ok(FailAccounts { fail_accounts: fail })
    }

    /// account_delete: the accounts are gone when it answers; a large one's edges are then removed
    /// by the background job ([`crate::deletion`]).
    async fn account_delete(&self, users: Vec<UserId>, origin: Origin) -> Result<AccountItems, ApiError> {
        let cx = self.write_context(origin);
        let budget = self.st.deletions.chunk();
        let outcome = self.write(move |tx| deletion::delete_accounts(tx, &cx, &users, budget)).await?;
        self.st.deletions.deleted(&outcome);
        Ok(AccountItems {
            result_item: outcome
                .results
                .into_iter()
                .map(|r| AccountItem { result_code: r.code, result_info: r.info, user_id: r.user.to_string(), account_status: None })
                .collect(),
        })
    }

    async fn account_check(&self, users: Vec<UserId>) -> Result<AccountItems, ApiError> {
        let app = self.app.sdkappid;
        let items = self.read(move |v| read::account_check(v, app, &users)).await?;
        Ok(AccountItems {
            result_item: items
                .into_iter()
                .map(|(u, imported)| AccountItem {
                    result_code: code::OK,
                    result_info: "",
                    user_id: u.to_string(),
                    account_status: Some(if imported { "Imported" } else { "NotImported" }),
                })
                .collect(),
        })
    }
}

/// Parses follow_get's body (all but `From_Account`); `max_want` is 1000 for REST and 500 for the
/// client API.
pub fn parse_follow_get(body: &Body, max_want: u64) -> Result<(ListKind, Option<Cursor>, usize), ApiError> {
    let invalid = |m: String| ApiError::new(code::FOLLOW_INVALID_PARAM, m);
    let kind = body.opt_u64("FollowType")?.ok_or_else(|| invalid("FollowType is required (1 fans, 2 following, 3 mutual)".into()))?;
    let kind =
        ListKind::from_wire(kind).ok_or_else(|| invalid(format!("FollowType {kind} is not 1 (fans), 2 (following) or 3 (mutual)")))?;
    let cursor = Cursor::decode(body.opt_str("StartCursor")?.unwrap_or("")).map_err(|e| invalid(e.to_string()))?;
    let want = match body.opt_u64("WantNum")? {
        None | Some(0) => DEFAULT_WANT_NUM,
        Some(n) if n > max_want => return Err(invalid(format!("WantNum {n} is over the limit of {max_want}"))),
        Some(n) => n,
    };
    Ok((kind, cursor, want as usize))
}

fn profile_field(body: &Body, key: &str) -> Result<Option<String>, ApiError> {
    match body.opt_str(key)? {
        Some(s) if s.len() > MAX_PROFILE_FIELD => {
            Err(ApiError::new(code::ACCOUNT_INVALID_PARAM, format!("{key} is over {MAX_PROFILE_FIELD} bytes")))
        }
        s => Ok(s.map(str::to_owned)),
    }
}

/// Any API's answer fields (serialised in declaration order, flattened into the envelope).
#[derive(Serialize)]
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
    /// account_import.
    Empty(Empty),
    /// multiaccount_import.
    Fail(FailAccounts),
    /// account_delete, account_check.
    Accounts(AccountItems),
    /// set_callback, set_callback_token.
    Set(admin::Empty),
    /// get_callback.
    Callback(admin::Wrapped<admin::CallbackInfo>),
    /// get_callback_token.
    Token(admin::Wrapped<admin::TokenInfo>),
    /// list_events.
    Events(admin::EventPage),
    /// list_attempts.
    Attempts(admin::AttemptPage),
    /// replay_event, replay_dead.
    Replayed(admin::Replayed),
}

/// `{}`: no fields besides the envelope.
#[derive(Serialize)]
pub struct Empty {}

/// `ResultItem` of follow_add and follow_delete.
#[derive(Serialize)]
pub struct ResultItems {
    #[serde(rename = "ResultItem")]
    result_item: Vec<ResultItem>,
}

#[derive(Serialize)]
struct ResultItem {
    #[serde(rename = "To_Account")]
    to_account: String,
    #[serde(rename = "ResultCode")]
    result_code: u32,
    #[serde(rename = "ResultInfo")]
    result_info: &'static str,
}

impl From<Vec<write::ItemResult>> for ResultItems {
    fn from(items: Vec<write::ItemResult>) -> Self {
        ResultItems {
            result_item: items
                .into_iter()
                .map(|r| ResultItem { to_account: r.user.to_string(), result_code: r.code, result_info: r.info })
                .collect(),
        }
    }
}

/// follow_check's answer.
#[derive(Serialize)]
pub struct CheckItems {
    #[serde(rename = "ResultItem")]
    result_item: Vec<CheckItem>,
}

#[derive(Serialize)]
struct CheckItem {
    #[serde(rename = "To_Account")]
    to_account: String,
    #[serde(rename = "ResultCode")]
    result_code: u32,
    #[serde(rename = "ResultInfo")]
    result_info: &'static str,
    #[serde(rename = "FollowType")]
    follow_type: u8,
}

const _: () = assert!(Relation::Mutual as u8 == 3);

/// follow_get's answer.
#[derive(Serialize)]
pub struct FollowPage {
    #[serde(rename = "FollowItem")]
    follow_item: Vec<FollowEntry>,
    #[serde(rename = "NextCursor")]
    next_cursor: String,
}

#[derive(Serialize)]
struct FollowEntry {
    #[serde(rename = "To_Account")]
    to_account: String,
    #[serde(rename = "FollowTime")]
    follow_time: u64,
    #[serde(rename = "ProfileItem")]
    profile_item: Vec<ProfileItem>,
    profile_sequence: i64,
}

#[derive(Serialize)]
struct ProfileItem {
    #[serde(rename = "Tag")]
    tag: &'static str,
    #[serde(rename = "Value")]
    value: String,
}

/// follow_get_info's answer.
#[derive(Serialize)]
pub struct FollowInfo {
    #[serde(rename = "FollowInfo")]
    follow_info: Vec<InfoItem>,
}

#[derive(Serialize)]
struct InfoItem {
    #[serde(rename = "To_Account")]
    to_account: String,
    #[serde(rename = "ResultCode")]
    result_code: u32,
    #[serde(rename = "ResultInfo")]
    result_info: &'static str,
    #[serde(rename = "FollowerCount")]
    follower_count: i64,
    #[serde(rename = "FollowingCount")]
    following_count: i64,
    #[serde(rename = "MutualFollowingCount")]
    mutual_following_count: i64,
}

/// multiaccount_import's answer.
#[derive(Serialize)]
pub struct FailAccounts {
    #[serde(rename = "FailAccounts")]
    fail_accounts: Vec<String>,
}

/// account_delete's and account_check's answer.
#[derive(Serialize)]
pub struct AccountItems {
    #[serde(rename = "ResultItem")]
    result_item: Vec<AccountItem>,
}

#[derive(Serialize)]
struct AccountItem {
    #[serde(rename = "ResultCode")]
    result_code: u32,
    #[serde(rename = "ResultInfo")]
    result_info: &'static str,
    #[serde(rename = "UserID")]
    user_id: String,
    #[serde(rename = "AccountStatus", skip_serializing_if = "Option::is_none")]
    account_status: Option<&'static str>,
}
