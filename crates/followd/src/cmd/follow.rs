//! The follow commands: `/v4/follow/*` for app admins, and the same five on the client API, where
//! an end user acts only for itself (protocol.md §3, decisions.md §2).

use followd_graph::read::{self, Relation};
use followd_graph::write::{self, WriteContext};
use followd_graph::{follow_time_secs, Counts, Cursor, ListKind};
use followd_protocol::api::reply::{
    CheckItem, CheckItems, FollowEntry, FollowInfo, FollowPage, InfoItem, ProfileItem, ResultItem, ResultItems,
};
use followd_protocol::api::{Api, ApiError};
use followd_protocol::{code, UserId};
use utoipa::ToSchema;

use super::{Caller, Ctx, Failure, Spec};
use crate::body::Body;

/// Most targets of follow_add, follow_delete and follow_get_info.
pub const MAX_WRITE_TARGETS: usize = 20;
/// Most targets of follow_check.
pub const MAX_CHECK_TARGETS: usize = 100;
/// Most entries of one follow_get page.
pub const MAX_WANT_NUM: u64 = 1000;
/// Most entries of one follow_get page on the client API (the SDK's limit).
pub const MAX_CLIENT_WANT_NUM: u64 = 500;
/// follow_get's page size when WantNum is absent or 0.
pub const DEFAULT_WANT_NUM: u64 = 100;

/// `From_Account` of the body, as the caller may use it: an admin names anyone; an end user may
/// omit it and may not name another user (`30004`).
fn acting_account(caller: &Caller, body: &Body) -> Result<UserId, ApiError> {
    match caller {
        Caller::Admin => body.user("From_Account"),
        Caller::User(me) => match body.opt_user("From_Account")? {
            None => Ok(me.clone()),
            Some(u) if &u == me => Ok(u),
            Some(u) => Err(ApiError::new(code::FOLLOW_NOT_ADMIN, format!("{me} cannot act for {u}"))),
        },
    }
}

/// `follow_add`: `From_Account` follows each target.
#[derive(Debug, ToSchema)]
#[schema(as = FollowAddRequest)]
pub struct FollowAdd {
    /// The follower. On the client API it may be omitted and must be the caller.
    #[schema(rename = "From_Account")]
    pub from: UserId,
    /// The users to follow, 1 to 20; a target named twice is handled once.
    #[schema(rename = "FollowItem", min_items = 1, max_items = 20)]
    pub items: Vec<FollowTarget>,
}

/// One target of `follow_add`.
#[derive(Debug, ToSchema)]
pub struct FollowTarget {
    /// The user to follow.
    #[schema(rename = "To_Account")]
    pub to: UserId,
}

impl FollowAdd {
    /// Parses the body.
    pub fn parse(caller: &Caller, body: &Body) -> Result<Self, ApiError> {
        let from = acting_account(caller, body)?;
        let items = body.object_users("FollowItem", "To_Account", MAX_WRITE_TARGETS)?.into_iter().map(|to| FollowTarget { to }).collect();
        Ok(FollowAdd { from, items })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<ResultItems, Failure> {
        let wcx = write_context(cx);
        let (from, targets): (UserId, Vec<UserId>) = (self.from, self.items.into_iter().map(|t| t.to).collect());
        let prefetch = write::prefetch(&wcx, &from, &targets, true);
        let items = cx.write_prefetched(prefetch, move |tx| write::follow_add(tx, &wcx, &from, &targets)).await?;
        Ok(result_items(items))
    }
}

/// `follow_delete`: `From_Account` unfollows each target.
#[derive(Debug, ToSchema)]
#[schema(as = FollowDeleteRequest)]
pub struct FollowDelete {
    /// The follower. On the client API it may be omitted and must be the caller.
    #[schema(rename = "From_Account")]
    pub from: UserId,
    /// The users to unfollow, 1 to 20; a target named twice is handled once.
    #[schema(rename = "To_Account", min_items = 1, max_items = 20)]
    pub targets: Vec<UserId>,
}

impl FollowDelete {
    /// Parses the body.
    pub fn parse(caller: &Caller, body: &Body) -> Result<Self, ApiError> {
        Ok(FollowDelete { from: acting_account(caller, body)?, targets: body.users("To_Account", MAX_WRITE_TARGETS)? })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<ResultItems, Failure> {
        let wcx = write_context(cx);
        let prefetch = write::prefetch(&wcx, &self.from, &self.targets, false);
        let items = cx.write_prefetched(prefetch, move |tx| write::follow_delete(tx, &wcx, &self.from, &self.targets)).await?;
        Ok(result_items(items))
    }
}

fn write_context(cx: &Ctx<'_>) -> WriteContext {
    WriteContext { app: cx.app.sdkappid, limits: cx.app.limits, subscriptions: cx.app.subscriptions(), origin: cx.origin() }
}

fn result_items(items: Vec<write::ItemResult>) -> ResultItems {
    ResultItems {
        result_item: items.into_iter().map(|r| ResultItem { to_account: r.user, result_code: r.code, result_info: r.info }).collect(),
    }
}

/// `follow_check`: how `From_Account` and each target relate.
#[derive(Debug, ToSchema)]
#[schema(as = FollowCheckRequest)]
pub struct FollowCheck {
    /// Whose relations. On the client API it may be omitted and must be the caller.
    #[schema(rename = "From_Account")]
    pub from: UserId,
    /// The users to check, 1 to 100.
    #[schema(rename = "To_Account", min_items = 1, max_items = 100)]
    pub targets: Vec<UserId>,
}

const _: () = assert!(Relation::Mutual as u8 == 3);

impl FollowCheck {
    /// Parses the body.
    pub fn parse(caller: &Caller, body: &Body) -> Result<Self, ApiError> {
        Ok(FollowCheck { from: acting_account(caller, body)?, targets: body.users("To_Account", MAX_CHECK_TARGETS)? })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<CheckItems, Failure> {
        let app = cx.app.sdkappid;
        let items = cx.read(move |v| read::follow_check(v, app, &self.from, &self.targets)).await?;
        Ok(CheckItems {
            result_item: items
                .into_iter()
                .map(|c| CheckItem {
                    to_account: c.user,
                    result_code: c.code,
                    result_info: if c.code == 0 { "" } else { "To_Account does not exist" },
                    follow_type: c.relation as u8,
                })
                .collect(),
        })
    }
}

/// `follow_get`: one page of a list, newest first.
#[derive(Debug, ToSchema)]
#[schema(as = FollowGetRequest)]
pub struct FollowGet {
    /// Whose list. On the client API it may be omitted and must be the caller.
    #[schema(rename = "From_Account")]
    pub from: UserId,
    /// Which list: 1 followers (fans), 2 following, 3 mutual.
    #[schema(rename = "FollowType", value_type = u8, minimum = 1, maximum = 3)]
    pub kind: ListKind,
    /// `""` (or absent) for the first page, then the previous page's `NextCursor`.
    #[schema(rename = "StartCursor", value_type = Option<String>)]
    pub cursor: Option<Cursor>,
    /// Page size: 1 to 1000 (500 on the client API); 100 when absent or 0.
    #[schema(rename = "WantNum", value_type = Option<u64>, maximum = 1000)]
    pub want: usize,
}

impl FollowGet {
    /// Parses the body; pages are at most 1000 entries for an admin and 500 for an end user.
    pub fn parse(caller: &Caller, body: &Body) -> Result<Self, ApiError> {
        let from = acting_account(caller, body)?;
        let max_want = if matches!(caller, Caller::Admin) { MAX_WANT_NUM } else { MAX_CLIENT_WANT_NUM };
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
        Ok(FollowGet { from, kind, cursor, want: want as usize })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<FollowPage, Failure> {
        let app = cx.app.sdkappid;
        let FollowGet { from, kind, cursor, want } = self;
        let page = cx.read(move |v| read::follow_get(v, app, &from, kind, cursor, want)).await?;
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
                        to_account: e.user,
                        follow_time: follow_time_secs(e.key),
                        profile_item: profile,
                        profile_sequence: e.profile.sequence,
                    }
                })
                .collect(),
            next_cursor: page.next.map(Cursor::encode).unwrap_or_default(),
        })
    }
}

/// `follow_get_info`: each target's follower, following and mutual counts.
#[derive(Debug, ToSchema)]
#[schema(as = FollowGetInfoRequest)]
pub struct FollowGetInfo {
    /// Who asks. On the client API it may be omitted and must be the caller.
    #[schema(rename = "From_Account")]
    pub from: UserId,
    /// The users whose counts to get, 1 to 20.
    #[schema(rename = "To_Account", min_items = 1, max_items = 20)]
    pub targets: Vec<UserId>,
}

impl FollowGetInfo {
    /// Parses the body.
    pub fn parse(caller: &Caller, body: &Body) -> Result<Self, ApiError> {
        Ok(FollowGetInfo { from: acting_account(caller, body)?, targets: body.users("To_Account", MAX_WRITE_TARGETS)? })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<FollowInfo, Failure> {
        let app = cx.app.sdkappid;
        let items = cx.read(move |v| read::follow_get_info(v, app, &self.from, &self.targets)).await?;
        Ok(FollowInfo {
            follow_info: items
                .into_iter()
                .map(|(u, c)| {
                    let found = c.is_some();
                    let c = c.unwrap_or(Counts::default());
                    InfoItem {
                        to_account: u,
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
}

/// Codes every follow command answers with for its body (besides the pipeline's).
const BODY_ERRORS: [(u32, &str); 4] = [
    (code::FOLLOW_INVALID_PARAM, "a field is missing or invalid, or a list is over its limit; ErrorInfo names it"),
    (code::USERID_NOT_STRING, "a UserID field is not a string"),
    (code::FOLLOW_ACCOUNT_NOT_FOUND, "From_Account was never imported; nothing was applied"),
    (code::FOLLOW_NOT_ADMIN, "client API: From_Account names another user"),
];

/// The client API's view of a follow command: the same body, but `From_Account` may be omitted (it
/// must be the caller) and a `follow_get` page is at most 500 entries.
pub fn client_spec(api: Api) -> Spec {
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::RefOr;
    let mut spec = spec(api);
    spec.request = format!("Client{}", spec.request);
    let (name, schema) = &mut spec.request_schemas[0];
    *name = spec.request.clone();
    if let RefOr::T(Schema::Object(o)) = schema {
        o.required.retain(|r| r != "From_Account");
        if let Some(RefOr::T(Schema::Object(want))) = o.properties.get_mut("WantNum") {
            want.maximum = Some(MAX_CLIENT_WANT_NUM.into());
            want.description = Some(format!("Page size: 1 to {MAX_CLIENT_WANT_NUM}; {DEFAULT_WANT_NUM} when absent or 0."));
        }
    }
    spec
}

/// The document's view of a follow command.
pub fn spec(api: Api) -> Spec {
    use followd_protocol::api::reply as r;
    match api {
        Api::FollowAdd => Spec::of::<FollowAdd, r::ResultItems>(
            "Follow users (at most 20 a call); each target gets its own ResultCode (0, 30001 yourself, 30003 not imported, 32100 following limit, 32101 follower limit, 32102/32103 mutual limits).",
            r#"{"From_Account":"alice","FollowItem":[{"To_Account":"bob"},{"To_Account":"carol"}]}"#,
            &BODY_ERRORS,
        ),
        Api::FollowDelete => Spec::of::<FollowDelete, r::ResultItems>(
            "Unfollow users (at most 20 a call); unfollowing someone not followed is ResultCode 0 and changes nothing.",
            r#"{"From_Account":"alice","To_Account":["bob"]}"#,
            &BODY_ERRORS,
        ),
        Api::FollowCheck => Spec::of::<FollowCheck, r::CheckItems>(
            "Check relations (at most 100 users): FollowType 0 none, 1 only they follow From_Account, 2 only From_Account follows them, 3 mutual.",
            r#"{"From_Account":"alice","To_Account":["bob","carol"]}"#,
            &BODY_ERRORS,
        ),
        Api::FollowGet => Spec::of::<FollowGet, r::FollowPage>(
            "List followers, following or mutual follows, newest first, a page at a time (pass NextCursor back as StartCursor until it is \"\").",
            r#"{"From_Account":"alice","FollowType":2,"StartCursor":"","WantNum":100}"#,
            &BODY_ERRORS,
        ),
        _ => Spec::of::<FollowGetInfo, r::FollowInfo>(
            "Follower, following and mutual counts of users (at most 20); exact after every acknowledged write.",
            r#"{"From_Account":"alice","To_Account":["alice","bob"]}"#,
            &BODY_ERRORS,
        ),
    }
}
