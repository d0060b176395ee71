//! The configuration contract (decisions.md §6): one TOML file, `FOLLOWD_*` environment overrides,
//! validated at load with messages that name the key.

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the REST, client and admin APIs.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Directory of the embedded storage; relative paths are taken from the config file's directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL, instead of the embedded store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// CIDRs whose `X-Forwarded-For` is believed for `ClientIP`.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `"process"` (default: a killed process loses nothing acknowledged) or `"fsync"` (also power loss).
    #[serde(default = "default_durability")]
    pub durability: String,
    /// Webhook events held in memory, shared fairly between apps; past its share an app's events wait
    /// in the outbox and are read back in order.
    #[serde(default = "default_memory_events")]
    pub delivery_queue_in_memory: usize,
    /// How long delivered events and their attempts are kept in the delivery log.
    #[serde(default = "default_retention_hours")]
    pub delivery_log_retention_hours: u64,
    /// Edges an account deletion removes per write transaction (an eighth of it when each edge owes
    /// a delete webhook): an account with fewer is deleted at once, a larger one by a background job
    /// in chunks of this size, between other writes.
    #[serde(default = "default_deletion_chunk_edges")]
    pub deletion_chunk_edges: usize,
    /// Open connections (WebSockets included) past which a new connection is answered `60007` and
    /// closed. Keep it below the process's file-descriptor limit (`ulimit -n`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// API requests served at once, past which a request is answered `60007` at once.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// How long an API request may take, from its headers to its answer, before it is answered with
    /// its family's timeout code (`30007`, `70169`, `100001`). Tencent's own limit is 3 s.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Write jobs waiting for the writer, past which an API write is answered `60007` at once.
    #[serde(default = "default_max_queued_writes")]
    pub max_queued_writes: usize,
    /// How long a client may take to send a request's headers, counted from the connection or the
    /// previous answer; past it the connection is closed (slow clients, idle keep-alive connections).
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// How often the server pings each WebSocket client of `/v1/client/events`.
    #[serde(default = "default_live_ping_interval_ms")]
    pub live_ping_interval_ms: u64,
    /// A WebSocket client that sends nothing (no pong, no frame) for this long is disconnected and
    /// its slot among the user's 16 freed.
    #[serde(default = "default_live_idle_timeout_ms")]
    pub live_idle_timeout_ms: u64,
    /// Serve the web console at `/console` on the `listen` address.
    #[serde(default = "default_console")]
    pub console: bool,
    /// The apps this server hosts.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// The file this configuration was read from (watched for webhook changes).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// One app (one SDKAppID).
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The SDKAppID.
    pub sdkappid: u64,
    /// The key UserSigs are signed with. Never logged.
    pub secret_key: String,
    /// UserIDs allowed to call the admin APIs.
    pub admins: Vec<String>,
    /// How many users one user may follow (`32100`); 0 means no limit.
    #[serde(default = "default_max_following")]
    pub max_following: u64,
    /// How many followers one user may have (`32101`); absent or 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_followers: Option<u64>,
    /// How many mutual follows one user may have (`32102`/`32103`); absent or 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mutual: Option<u64>,
    /// Client-API `follow_check` calls one user may make per `client_check_window_secs` (the SDK's 20 per 5 s); 0 = no limit.
    #[serde(default = "default_client_check_calls")]
    pub client_check_calls: u32,
    /// The window of `client_check_calls`.
    #[serde(default = "default_client_check_window")]
    pub client_check_window_secs: u64,
    /// Calls per second allowed to each REST API of this app; absent or 0 means off (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_second: Option<u32>,
    /// Calls per second one end user may make to the client API, WebSocket connections included, with
    /// a burst of the same size (`60007` above it); 0 = no limit.
    #[serde(default = "default_client_rate_limit")]
    pub client_rate_limit_per_second: u32,
    /// Where this app's webhooks go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
}

/// An app's webhook destination.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL; Chat's query parameters are appended to it.
    pub url: String,
    /// Which commands are sent.
    #[serde(default = "default_commands")]
    pub commands: Vec<String>,
    /// Adds `Sign` and `RequestTime` when set. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Adds a Standard Webhooks `webhook-signature` header when set. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// Per-attempt timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// `"backoff"` (default) or `"none"`.
    #[serde(default = "default_retry")]
    pub retry: String,
    /// Delays before each retry with `retry = "backoff"`, in ms (±20 % jitter is applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_schedule_ms: Option<Vec<u64>>,
    /// Allow loopback and private destinations (local development); link-local and cloud metadata
    /// destinations stay refused.
    #[serde(default)]
    pub allow_private_destinations: bool,
}

fn default_listen() -> String {
    "127.0.0.1:5080".into()
}
fn default_data_dir() -> PathBuf {
    "data".into()
}
fn default_durability() -> String {
    "process".into()
}
fn default_memory_events() -> usize {
    followd_webhook::dispatcher::DEFAULT_MEMORY_EVENTS
}
fn default_client_check_calls() -> u32 {
    20
}
/// Well above what one device's SDK sends (a page-through of a 5,000-user list is 10 calls, and
/// follow_check has its own limit of 20 per 5 s), and a small share of what one server serves.
fn default_client_rate_limit() -> u32 {
    50
}
fn default_client_check_window() -> u64 {
    5
}
fn default_retention_hours() -> u64 {
    168
}
fn default_deletion_chunk_edges() -> usize {
    DEFAULT_DELETION_CHUNK_EDGES
}
fn default_max_connections() -> usize {
    16_384
}
fn default_max_concurrent_requests() -> usize {
    1024
}
fn default_request_timeout_ms() -> u64 {
    3000
}
fn default_max_queued_writes() -> usize {
    followd_store::sqlite::DEFAULT_WRITE_QUEUE
}
fn default_header_read_timeout_ms() -> u64 {
    30_000
}
fn default_live_ping_interval_ms() -> u64 {
    20_000
}
fn default_live_idle_timeout_ms() -> u64 {
    60_000
}
fn default_console() -> bool {
    true
}
fn default_max_following() -> u64 {
    5000
}
fn default_commands() -> Vec<String> {
    followd_protocol::CallbackCommand::ALL.iter().map(|c| c.as_str().to_owned()).collect()
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_retry() -> String {
    "backoff".into()
}

/// The default of `deletion_chunk_edges`, chosen with `followd-bench delete` (README, "Performance").
pub const DEFAULT_DELETION_CHUNK_EDGES: usize = 400;

const REDACTED: &str = "<redacted>";

impl fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppConfig")
            .field("sdkappid", &self.sdkappid)
            .field("secret_key", &REDACTED)
            .field("admins", &self.admins)
            .field("max_following", &self.max_following)
            .field("webhook", &self.webhook)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("commands", &self.commands)
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("signing_secret", &self.signing_secret.as_ref().map(|_| REDACTED))
            .field("timeout_ms", &self.timeout_ms)
            .field("retry", &self.retry)
            .field("retry_schedule_ms", &self.retry_schedule_ms)
            .field("allow_private_destinations", &self.allow_private_destinations)
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| REDACTED))
            .field("trusted_proxies", &self.trusted_proxies)
            .field("durability", &self.durability)
            .field("max_connections", &self.max_connections)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("live_idle_timeout_ms", &self.live_idle_timeout_ms)
            .field("console", &self.console)
            .field("apps", &self.apps)
            .finish()
    }
}

/// Redacts the values a parser message quotes (values may be secrets): every double-quoted string
/// becomes `"…"` (a backslash inside escapes the next character, as `{:?}` writes a quote in a
/// value), and a backquoted number or boolean (serde's ``integer `5` ``) becomes `` `…` ``. The
/// backquoted key names stay.
fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut chars = msg.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push_str("\"…\"");
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '`' => {
                let name: String = chars.by_ref().take_while(|&c| c != '`').collect();
                let scalar = name.parse::<f64>().is_ok() || name == "true" || name == "false";
                out.push('`');
                out.push_str(if scalar { "…" } else { &name });
                out.push('`');
            }
            c => out.push(c),
        }
    }
    out
}

impl Config {
    /// Parses TOML text and validates it. `base` resolves a relative `data_dir`.
    pub fn from_toml(text: &str, base: &Path) -> anyhow::Result<Config> {
        // The parser's own message quotes the offending line, which may hold a key: say where instead.
        let mut c: Config = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| text[..s.start.min(text.len())].split('\n').count()).unwrap_or(0);
            anyhow::anyhow!("line {at}: {}", redact_quoted(e.message().trim()))
        })?;
        if c.data_dir.is_relative() {
            c.data_dir = base.join(&c.data_dir);
        }
        Ok(c)
    }

    /// Reads a file, applies `FOLLOWD_LISTEN`, `FOLLOWD_DATA_DIR` and `FOLLOWD_DATABASE_URL`, and validates.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut c = Config::from_toml(&text, base).with_context(|| format!("in {}", path.display()))?;
        c.apply_env(|k| std::env::var(k).ok());
        c.validate().with_context(|| format!("in {}", path.display()))?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// Applies the environment overrides of the top-level keys.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(v) = var("FOLLOWD_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = var("FOLLOWD_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("FOLLOWD_DATABASE_URL") {
            self.database_url = Some(v).filter(|v| !v.is_empty());
        }
    }

    /// The listen address.
    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen.parse().with_context(|| format!("listen: {:?} is not an address like 127.0.0.1:5080", self.listen))
    }

    /// The trusted proxy networks.
    pub fn proxies(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .with_context(|| format!("trusted_proxies: {s:?} is not a CIDR like 10.0.0.0/8"))
            })
            .collect()
    }

    /// Checks every key; the error names the key at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        self.proxies()?;
        if !matches!(self.durability.as_str(), "process" | "fsync") {
            bail!("durability: {:?} is not \"process\" or \"fsync\"", self.durability);
        }
        if !(1..=1_000_000).contains(&self.deletion_chunk_edges) {
            bail!("deletion_chunk_edges: {} is not between 1 and 1000000", self.deletion_chunk_edges);
        }
        self.validate_limits()?;
        if self.apps.is_empty() {
            bail!("apps: at least one [[apps]] entry is needed");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.apps.iter().enumerate() {
            let at = format!("apps[{i}] (sdkappid {})", a.sdkappid);
            if !seen.insert(a.sdkappid) {
                bail!("{at}.sdkappid: appears twice");
            }
            if a.secret_key.is_empty() {
                bail!("{at}.secret_key: must not be empty");
            }
            if a.client_check_window_secs == 0 {
                bail!("{at}.client_check_window_secs: must be at least 1");
            }
            if a.admins.is_empty() {
                bail!("{at}.admins: at least one admin UserID is needed");
            }
            for admin in &a.admins {
                followd_protocol::UserId::parse(admin).with_context(|| format!("{at}.admins: {admin:?}"))?;
            }
            if let Some(w) = &a.webhook {
                w.validate().with_context(|| format!("{at}.webhook"))?;
            }
        }
        Ok(())
    }
}

impl Config {
    /// Checks the overload and liveness keys.
    fn validate_limits(&self) -> anyhow::Result<()> {
        for (key, v) in [
            ("max_connections", self.max_connections),
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("max_queued_writes", self.max_queued_writes),
        ] {
            if !(1..=1_000_000).contains(&v) {
                bail!("{key}: must be between 1 and 1000000");
            }
        }
        for (key, ms) in [
            ("request_timeout_ms", self.request_timeout_ms),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("live_ping_interval_ms", self.live_ping_interval_ms),
            ("live_idle_timeout_ms", self.live_idle_timeout_ms),
        ] {
            if !(10..=86_400_000).contains(&ms) {
                bail!("{key}: must be between 10 ms and one day");
            }
        }
        if self.live_idle_timeout_ms <= self.live_ping_interval_ms {
            bail!("live_idle_timeout_ms: must be longer than live_ping_interval_ms, or healthy clients are cut off between pings");
        }
        Ok(())
    }
}

impl WebhookConfig {
    /// Checks the webhook keys.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            bail!("url: {:?} must start with http:// or https://", self.url);
        }
        for c in &self.commands {
            if followd_protocol::CallbackCommand::parse(c).is_none() {
                bail!("commands: {c:?} is not a Follow webhook command");
            }
        }
        if let Some(t) = &self.token {
            if t.is_empty() || t.len() > 128 {
                bail!("token: must be 1 to 128 characters");
            }
        }
        if self.timeout_ms == 0 {
            bail!("timeout_ms: must be above 0");
        }
        if !matches!(self.retry.as_str(), "backoff" | "none") {
            bail!("retry: {:?} is not \"backoff\" or \"none\"", self.retry);
        }
        if self.retry_schedule_ms.as_ref().is_some_and(|s| s.is_empty() || s.len() > 100) {
            bail!("retry_schedule_ms: give 1 to 100 delays (use retry = \"none\" for a single attempt)");
        }
        Ok(())
    }
}

impl WebhookConfig {
    /// The runtime endpoint this section describes, with the admin API's overrides applied.
    pub fn endpoint(file: Option<&WebhookConfig>, o: &followd_graph::outbox::WebhookOverride) -> Option<followd_webhook::Endpoint> {
        use std::time::Duration;
        let url = match &o.url {
            Some(u) => u.clone(),
            None => file?.url.clone(),
        };
        if url.is_empty() {
            return None;
        }
        let commands = o.commands.clone().or_else(|| file.map(|f| f.commands.clone())).unwrap_or_else(default_commands);
        let has = |c: followd_protocol::CallbackCommand| commands.iter().any(|x| x == c.as_str());
        let token = if o.token_enabled.unwrap_or(true) { o.token.clone().or_else(|| file.and_then(|f| f.token.clone())) } else { None };
        let schedule = match file {
            Some(f) if f.retry == "none" => Vec::new(),
            Some(WebhookConfig { retry_schedule_ms: Some(s), .. }) => s.iter().map(|&ms| Duration::from_millis(ms)).collect(),
            _ => followd_webhook::DEFAULT_SCHEDULE_MS.iter().map(|&ms| Duration::from_millis(ms)).collect(),
        };
        Some(followd_webhook::Endpoint {
            url,
            subscriptions: followd_graph::Subscriptions {
                add: has(followd_protocol::CallbackCommand::FollowAdd),
                delete: has(followd_protocol::CallbackCommand::FollowDelete),
            },
            token: token.filter(|t| !t.is_empty()),
            signing_secret: o.signing_secret.clone().or_else(|| file.and_then(|f| f.signing_secret.clone())).filter(|s| !s.is_empty()),
            timeout: Duration::from_millis(file.map_or(2000, |f| f.timeout_ms)),
            schedule,
            allow_private: file.is_some_and(|f| f.allow_private_destinations),
        })
    }
}

/// The starter config written on a first run: one app with a fresh random key.
pub fn starter(sdkappid: u64, secret_key: &str) -> String {
    format!(
        r#"# followd configuration. Reference: README.md, "Configuration".
listen = "127.0.0.1:5080"
data_dir = "data"
# database_url = "postgres://user@host/db"   # PostgreSQL instead of the embedded store
trusted_proxies = []

[[apps]]
sdkappid = {sdkappid}
secret_key = "{secret_key}"
admins = ["administrator"]
max_following = 5000

# Webhooks: uncomment to send them to `followd listen` on this machine (applied within a second).
# [apps.webhook]
# url = "http://127.0.0.1:9000/imcallback"
# allow_private_destinations = true
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starter_parses_and_validates() {
        let c = Config::from_toml(&starter(1400000000, &"ab".repeat(32)), Path::new("/x")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.data_dir, Path::new("/x/data"));
        assert_eq!(c.apps[0].max_following, 5000);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = "listen = \"nope\"\n[[apps]]\nsdkappid = 1\nsecret_key = \"k\"\nadmins = [\"a\"]\n";
        let c = Config::from_toml(bad, Path::new(".")).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("listen"));
        let unknown = "listn = \"x\"\n";
        assert!(Config::from_toml(unknown, Path::new(".")).unwrap_err().to_string().contains("listn"));
        let hook = "[[apps]]\nsdkappid = 1\nsecret_key = \"k\"\nadmins = [\"a\"]\n[apps.webhook]\nurl = \"ftp://x\"\n";
        let c = Config::from_toml(hook, Path::new(".")).unwrap();
        assert!(format!("{:#}", c.validate().unwrap_err()).contains("url"));
    }

    #[test]
    fn overload_and_liveness_keys_are_validated() {
        let app = "[[apps]]\nsdkappid = 1\nsecret_key = \"k\"\nadmins = [\"a\"]\n";
        for (top, key) in [
            ("live_ping_interval_ms = 5000\nlive_idle_timeout_ms = 5000", "live_idle_timeout_ms"),
            ("live_ping_interval_ms = 0", "live_ping_interval_ms"),
            ("max_concurrent_requests = 0", "max_concurrent_requests"),
            ("max_connections = 2000000", "max_connections"),
            ("request_timeout_ms = 1", "request_timeout_ms"),
        ] {
            let c = Config::from_toml(&format!("{top}\n{app}"), Path::new(".")).unwrap();
            let e = format!("{:#}", c.validate().unwrap_err());
            assert!(e.contains(key), "{top}: {e}");
        }
        let c = Config::from_toml(app, Path::new(".")).unwrap();
        assert_eq!((c.max_concurrent_requests, c.request_timeout_ms, c.live_idle_timeout_ms), (1024, 3000, 60_000));
    }

    #[test]
    fn parse_errors_do_not_quote_secrets() {
        let text = "[[apps]]\nsdkappid = 1\nsecret_key = \"hunter2hunter2\"\nadmins = [\"a\"]\nmax_following = \"hunter2hunter2x\"\n";
        let e = Config::from_toml(text, Path::new(".")).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    /// Found while fuzzing the config file: a quote escaped inside a value ended the redaction
    /// early and the rest of the value was shown; a key written without quotes was shown as a number.
    #[test]
    fn parse_errors_do_not_show_values_with_quotes_or_unquoted_keys() {
        let app = "[[apps]]\nsdkappid = 1\nadmins = [\"a\"]\n";
        let quoted = format!("{app}secret_key = \"k\"\nmax_following = \"hunter2\\\"hunter2hunter2\"\n");
        let e = format!("{:#}", Config::from_toml(&quoted, Path::new(".")).unwrap_err());
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line 5"), "{e}");
        let unquoted = format!("{app}secret_key = 5123456789012345\n");
        let e = format!("{:#}", Config::from_toml(&unquoted, Path::new(".")).unwrap_err());
        assert!(!e.contains("5123456789012345"), "{e}");
        let unknown = format!("{app}secret_key = \"k\"\nmax_folowing = 5\n");
        let e = format!("{:#}", Config::from_toml(&unknown, Path::new(".")).unwrap_err());
        assert!(e.contains("`max_folowing`") && e.contains("`max_following`"), "key names stay: {e}");
    }

    #[test]
    fn env_overrides_and_secrets_stay_out_of_debug() {
        let mut c = Config::from_toml(&starter(7, "topsecretkey"), Path::new(".")).unwrap();
        c.apply_env(|k| (k == "FOLLOWD_LISTEN").then(|| "0.0.0.0:1".to_string()));
        assert_eq!(c.listen, "0.0.0.0:1");
        assert!(!format!("{c:?}").contains("topsecretkey"));
    }
}
