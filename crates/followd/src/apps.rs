//! The hosted apps as the request path sees them: each app's key, admins, graph limits, rate
//! limiters and webhook settings (the config file's, overridden through the admin API), and the
//! cache of verified UserSigs. Which URL parameters name the app and in what order they are checked
//! is the pipeline's business ([`crate::pipeline::auth`]); this module only answers questions about
//! an app.

use followd_graph::write::Limits;
use followd_graph::Subscriptions;
use followd_protocol::api::{Api, ApiError};
use followd_protocol::{usersig, UserId};
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{AppConfig, WebhookConfig};
use followd_graph::outbox::WebhookOverride;
use followd_webhook::{Endpoint, Endpoints};

pub mod rate;

/// One hosted app, as the request path sees it.
pub struct App {
    /// The SDKAppID.
    pub sdkappid: u64,
    key: String,
    admins: HashSet<String>,
    /// Graph limits.
    pub limits: Limits,
    hook: RwLock<Hook>,
    /// `rate_limit_per_second`: the admin REST API, per API.
    rest_rate: Option<rate::PerApi>,
    /// `client_rate_limit_per_second`: the client API, per end user.
    client_rate: Option<rate::PerUser>,
    /// `client_check_calls` per `client_check_window_secs`: the client API's follow_check, per end user.
    client_checks: Option<rate::PerUser>,
    /// Serialises the admin API's read-modify-write of the webhook settings.
    pub settings: tokio::sync::Mutex<()>,
}

impl App {
    /// Builds the runtime view of an app's configuration.
    pub fn new(c: &AppConfig) -> App {
        let nonzero = |v: Option<u64>| v.filter(|&n| n > 0).map(|n| n as i64);
        App {
            sdkappid: c.sdkappid,
            key: c.secret_key.clone(),
            admins: c.admins.iter().cloned().collect(),
            limits: Limits {
                max_following: nonzero(Some(c.max_following)),
                max_followers: nonzero(c.max_followers),
                max_mutual: nonzero(c.max_mutual),
            },
            hook: RwLock::new(Hook::new(c.webhook.clone(), WebhookOverride::default())),
            rest_rate: rate::PerApi::new(c.rate_limit_per_second),
            client_rate: rate::PerUser::per_second(c.client_rate_limit_per_second, "client API"),
            client_checks: rate::PerUser::per_window(c.client_check_calls, Duration::from_secs(c.client_check_window_secs), "follow_check"),
            settings: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether `identifier` is one of the app's admins.
    pub fn is_admin(&self, identifier: &str) -> bool {
        self.admins.contains(identifier)
    }

    /// Generates a UserSig for `identifier` with this app's key.
    pub fn usersig(&self, identifier: &str, expire: u64, now: u64) -> String {
        usersig::generate(&self.key, self.sdkappid, identifier, now, expire, None)
    }

    /// Which webhooks the app wants right now.
    pub fn subscriptions(&self) -> Subscriptions {
        self.hook.read().effective.as_ref().map(|e| e.subscriptions).unwrap_or_default()
    }

    /// The webhook endpoint in force.
    pub fn endpoint(&self) -> Option<Arc<Endpoint>> {
        self.hook.read().effective.clone()
    }

    /// The admin API's current overrides.
    pub fn webhook_override(&self) -> WebhookOverride {
        self.hook.read().over.clone()
    }

    /// Applies new overrides (already stored); takes effect for the next write and the next attempt.
    pub fn set_webhook_override(&self, over: WebhookOverride) {
        let mut h = self.hook.write();
        *h = Hook::new(h.file.clone(), over);
    }

    /// Applies a new `[apps.webhook]` section from a reloaded config file.
    pub fn set_webhook_file(&self, file: Option<WebhookConfig>) {
        let mut h = self.hook.write();
        *h = Hook::new(file, h.over.clone());
    }

    /// Counts one call of the admin REST API to `api`; `60007` when over `rate_limit_per_second`.
    pub fn check_rest_rate(&self, api: Api) -> Result<(), ApiError> {
        self.rest_rate.as_ref().map_or(Ok(()), |r| r.check(api))
    }

    /// Counts one call of end user `user` to the client API (a WebSocket connection included) at Unix
    /// second `now`, and for `follow_check` also against the SDK's limit of that API; `60007` when over.
    pub fn check_client_rate(&self, user: &UserId, api: Option<Api>, now: u64) -> Result<(), ApiError> {
        if let Some(r) = &self.client_rate {
            r.check(user, now)?;
        }
        match &self.client_checks {
            Some(r) if api == Some(Api::FollowCheck) => r.check(user, now),
            _ => Ok(()),
        }
    }
}

/// An app's webhook settings: the config file's, the admin API's overrides, and the result.
struct Hook {
    file: Option<WebhookConfig>,
    over: WebhookOverride,
    effective: Option<Arc<Endpoint>>,
}

impl Hook {
    fn new(file: Option<WebhookConfig>, over: WebhookOverride) -> Hook {
        let effective = WebhookConfig::endpoint(file.as_ref(), &over).map(Arc::new);
        Hook { file, over, effective }
    }
}

impl Endpoints for Apps {
    fn endpoint(&self, app: u64) -> Option<Arc<Endpoint>> {
        self.apps.get(&app).and_then(|a| a.endpoint())
    }

    fn apps(&self) -> Vec<u64> {
        self.apps.keys().copied().collect()
    }
}

/// How many verified UserSigs [`Apps`] remembers. An entry costs its UserSig and identifier (a few
/// hundred bytes) plus the cache's bookkeeping, so the cache holds about 4 MB at most; a UserSig that
/// was pushed out is only verified again on its next use.
const MAX_CACHED_SIGS: usize = 10_000;

/// A verified UserSig, as the cache stores it.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SigKey {
    app: u64,
    identifier: String,
    sig: String,
}

/// The same key borrowed from the request, so a lookup allocates nothing. Its derived `Hash` feeds
/// the hasher exactly what [`SigKey`]'s does (`str` and `String` hash alike), as lookups require.
#[derive(Hash)]
struct SigRef<'a> {
    app: u64,
    identifier: &'a str,
    sig: &'a str,
}

impl quick_cache::Equivalent<SigKey> for SigRef<'_> {
    fn equivalent(&self, k: &SigKey) -> bool {
        self.app == k.app && self.identifier == k.identifier && self.sig == k.sig
    }
}

/// Every hosted app, by SDKAppID.
pub struct Apps {
    apps: HashMap<u64, Arc<App>>,
    /// Verified UserSigs and when each expires (Unix seconds). Looked up on every request, so it must be
    /// cheap: a hit takes one shard's read lock and hashes a borrowed key with foldhash (about 50 ns,
    /// where the `Mutex<HashMap>` it replaces took about 100 ns to hash with SipHash and allocate an
    /// owned key, and serialised every request). A ticket's validity depends only on itself, the app's
    /// fixed key and the clock, and the expiry is checked on every hit, so the cache never changes an
    /// answer.
    verified: quick_cache::sync::Cache<SigKey, u64>,
}

impl Apps {
    /// Builds the registry from the configuration.
    pub fn new(configs: &[AppConfig]) -> Apps {
        Apps {
            apps: configs.iter().map(|c| (c.sdkappid, Arc::new(App::new(c)))).collect(),
            verified: quick_cache::sync::Cache::new(MAX_CACHED_SIGS),
        }
    }

    /// An app by SDKAppID.
    pub fn get(&self, sdkappid: u64) -> Option<&Arc<App>> {
        self.apps.get(&sdkappid)
    }

    /// Every app.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<App>> {
        self.apps.values()
    }

    /// Checks `sig` for `identifier` of `app` at Unix second `now`: from the cache when it was verified
    /// before and has not expired, else decoded and verified (`70002`…`70014`, decisions.md §3).
    pub fn verify_usersig(&self, app: &App, identifier: &str, sig: &str, now: u64) -> Result<(), ApiError> {
        let seen = SigRef { app: app.sdkappid, identifier, sig };
        if self.verified.get(&seen).is_some_and(|exp| now <= exp) {
            return Ok(());
        }
        let ticket = usersig::verify(sig, app.sdkappid, identifier, &app.key, now).map_err(|e| ApiError::new(e.code(), e.to_string()))?;
        self.verified.insert(SigKey { app: app.sdkappid, identifier: identifier.to_owned(), sig: sig.to_owned() }, ticket.expires_at());
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    #[test]
    fn client_limits_default_to_fifty_a_second_and_the_sdks_follow_check_limit() {
        let config = crate::config::Config::from_toml(&crate::config::starter(1, "k"), std::path::Path::new(".")).unwrap();
        let a = &config.apps[0];
        assert_eq!((a.client_rate_limit_per_second, a.client_check_calls, a.client_check_window_secs), (50, 20, 5));
        assert_eq!(a.rate_limit_per_second, None, "the REST API's limit is off unless set (decisions.md §3)");
    }
}
