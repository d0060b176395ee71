//! The account commands (`/v4/im_open_login_svc/*`): the accounts the follow graph is made of.
//! Deleting an account removes its edges both ways and owes a delete webhook for each
//! (decisions.md §2); a large one is finished by [`crate::deletion`]'s background job.

use followd_graph::deletion;
use followd_graph::read;
use followd_graph::write::{self, NewAccount, WriteContext};
use followd_protocol::api::reply::{AccountItem, AccountItems, Empty, FailAccounts};
use followd_protocol::api::{Api, ApiError};
use followd_protocol::{code, UserId};
use utoipa::ToSchema;

use super::{Ctx, Failure, Spec};
use crate::body::Body;

/// Most accounts of one account API call.
pub const MAX_ACCOUNTS: usize = 100;
/// Longest Nick or FaceUrl accepted, in bytes.
pub const MAX_PROFILE_FIELD: usize = 500;

/// `account_import`: imports one account (an existing one keeps its edges and gets the new profile).
#[derive(Debug, ToSchema)]
#[schema(as = AccountImportRequest)]
pub struct AccountImport {
    /// The account.
    #[schema(rename = "UserID")]
    pub user: UserId,
    /// Its nickname, at most 500 bytes (listed as `Tag_Profile_IM_Nick`).
    #[schema(rename = "Nick", max_length = 500)]
    pub nick: Option<String>,
    /// Its avatar URL, at most 500 bytes (listed as `Tag_Profile_IM_Image`).
    #[schema(rename = "FaceUrl", max_length = 500)]
    pub face_url: Option<String>,
}

fn profile_field(body: &Body, key: &str) -> Result<Option<String>, ApiError> {
    match body.opt_str(key)? {
        Some(s) if s.len() > MAX_PROFILE_FIELD => {
            Err(ApiError::new(code::ACCOUNT_INVALID_PARAM, format!("{key} is over {MAX_PROFILE_FIELD} bytes")))
        }
        s => Ok(s.map(str::to_owned)),
    }
}

impl AccountImport {
    /// Parses the body.
    pub fn parse(body: &Body) -> Result<Self, ApiError> {
        Ok(AccountImport { user: body.user("UserID")?, nick: profile_field(body, "Nick")?, face_url: profile_field(body, "FaceUrl")? })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<Empty, Failure> {
        let account = NewAccount { user: self.user, nick: self.nick, face_url: self.face_url };
        let app = cx.app.sdkappid;
        cx.write(move |tx| write::import_accounts(tx, app, std::slice::from_ref(&account))).await?;
        Ok(Empty {})
    }
}

/// `multiaccount_import`: imports accounts by UserID; entries that are not valid UserIDs are
/// listed in `FailAccounts` and the others imported.
#[derive(Debug, ToSchema)]
#[schema(as = MultiaccountImportRequest)]
pub struct MultiaccountImport {
    /// The UserIDs, 1 to 100.
    #[schema(rename = "Accounts", value_type = Vec<String>, min_items = 1, max_items = 100)]
    pub accounts: Vec<UserId>,
    /// The entries that are not valid UserIDs, as sent.
    #[schema(ignore)]
    pub invalid: Vec<String>,
}

impl MultiaccountImport {
    /// Parses the body.
    pub fn parse(body: &Body) -> Result<Self, ApiError> {
        let mut accounts = Vec::new();
        let mut invalid = Vec::new();
        for (i, v) in body.array("Accounts", MAX_ACCOUNTS)?.iter().enumerate() {
            let s = v.as_str().ok_or_else(|| ApiError::new(code::USERID_NOT_STRING, format!("Accounts[{i}] must be a string")))?;
            match UserId::parse(s) {
                Ok(user) => accounts.push(user),
                Err(_) => invalid.push(s.to_owned()),
            }
        }
        Ok(MultiaccountImport { accounts, invalid })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<FailAccounts, Failure> {
        let accounts: Vec<NewAccount> = self.accounts.into_iter().map(|user| NewAccount { user, nick: None, face_url: None }).collect();
        let app = cx.app.sdkappid;
        cx.write(move |tx| write::import_accounts(tx, app, &accounts)).await?;
        Ok(FailAccounts { fail_accounts: self.invalid })
    }
}

/// One account named by `account_delete` or `account_check`.
#[derive(Debug, ToSchema)]
pub struct AccountRef {
    /// The account.
    #[schema(rename = "UserID")]
    pub user: UserId,
}

fn account_refs(body: &Body, key: &str) -> Result<Vec<AccountRef>, ApiError> {
    Ok(body.object_users(key, "UserID", MAX_ACCOUNTS)?.into_iter().map(|user| AccountRef { user }).collect())
}

/// `account_delete`: the accounts are gone when it answers, with every edge both ways and every
/// count fixed; a large account's edges are then removed by the background job.
#[derive(Debug, ToSchema)]
#[schema(as = AccountDeleteRequest)]
pub struct AccountDelete {
    /// The accounts, 1 to 100.
    #[schema(rename = "DeleteItem", min_items = 1, max_items = 100)]
    pub items: Vec<AccountRef>,
}

impl AccountDelete {
    /// Parses the body.
    pub fn parse(body: &Body) -> Result<Self, ApiError> {
        Ok(AccountDelete { items: account_refs(body, "DeleteItem")? })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<AccountItems, Failure> {
        let wcx = WriteContext { app: cx.app.sdkappid, limits: cx.app.limits, subscriptions: cx.app.subscriptions(), origin: cx.origin() };
        let budget = cx.deletions.chunk();
        let users: Vec<UserId> = self.items.into_iter().map(|a| a.user).collect();
        let outcome = cx.write(move |tx| deletion::delete_accounts(tx, &wcx, &users, budget)).await?;
        cx.deletions.deleted(&outcome);
        Ok(AccountItems {
            result_item: outcome
                .results
                .into_iter()
                .map(|r| AccountItem { result_code: r.code, result_info: r.info, user_id: r.user, account_status: None })
                .collect(),
        })
    }
}

/// `account_check`: whether each account is imported.
#[derive(Debug, ToSchema)]
#[schema(as = AccountCheckRequest)]
pub struct AccountCheck {
    /// The accounts, 1 to 100.
    #[schema(rename = "CheckItem", min_items = 1, max_items = 100)]
    pub items: Vec<AccountRef>,
}

impl AccountCheck {
    /// Parses the body.
    pub fn parse(body: &Body) -> Result<Self, ApiError> {
        Ok(AccountCheck { items: account_refs(body, "CheckItem")? })
    }

    pub(super) async fn apply(self, cx: &Ctx<'_>) -> Result<AccountItems, Failure> {
        let app = cx.app.sdkappid;
        let users: Vec<UserId> = self.items.into_iter().map(|a| a.user).collect();
        let items = cx.read(move |v| read::account_check(v, app, &users)).await?;
        Ok(AccountItems {
            result_item: items
                .into_iter()
                .map(|(u, imported)| AccountItem {
                    result_code: code::OK,
                    result_info: "",
                    user_id: u,
                    account_status: Some(if imported { "Imported" } else { "NotImported" }),
                })
                .collect(),
        })
    }
}

const BODY_ERRORS: [(u32, &str); 2] = [
    (code::ACCOUNT_INVALID_PARAM, "a field is missing or invalid, or a list is over 100 entries; ErrorInfo names it"),
    (code::USERID_NOT_STRING, "a UserID field (or an Accounts entry) is not a string"),
];

/// The document's view of an account command.
pub fn spec(api: Api) -> Spec {
    use followd_protocol::api::reply as r;
    match api {
        Api::AccountImport => Spec::of::<AccountImport, r::Empty>(
            "Import one account, with an optional nickname and avatar (importing again updates the profile and keeps the edges).",
            r#"{"UserID":"dave","Nick":"Dave","FaceUrl":"https://example.com/d.png"}"#,
            &BODY_ERRORS,
        ),
        Api::MultiaccountImport => Spec::of::<MultiaccountImport, r::FailAccounts>(
            "Import up to 100 accounts by UserID; entries that are not valid UserIDs come back in FailAccounts.",
            r#"{"Accounts":["alice","bob","carol"]}"#,
            &BODY_ERRORS,
        ),
        Api::AccountDelete => Spec::of::<AccountDelete, r::AccountItems>(
            "Delete up to 100 accounts with all their edges (a delete webhook for each edge); an unknown account gets ResultCode 70107.",
            r#"{"DeleteItem":[{"UserID":"bob"}]}"#,
            &BODY_ERRORS,
        ),
        _ => Spec::of::<AccountCheck, r::AccountItems>(
            "Whether up to 100 accounts are imported (AccountStatus Imported or NotImported).",
            r#"{"CheckItem":[{"UserID":"bob"},{"UserID":"alice"}]}"#,
            &BODY_ERRORS,
        ),
    }
}
