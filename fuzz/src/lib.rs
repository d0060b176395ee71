//! What the fuzz targets share: the fixed app they authenticate against, the readable input format
//! of the HTTP-shaped targets, and the signature placeholders that let mutated inputs past the checks.
//!
//! A fuzzer cannot forge an HMAC, so an input that must be signed would die at the signature check
//! after its first mutation and never reach the parser behind it. The targets therefore let an input
//! ask for a correct signature: the text `@sign` (in a query's `Sign`, a `webhook-signature` header
//! or a ticket's `TLS.sig`) and `@usersig` (in a URL's `usersig`) are replaced by the value the
//! sender would compute for the rest of that input. Inputs with real signatures (the seeds) still
//! test the real thing; the placeholders keep the paths behind the checks reachable.
//!
//! The seeds (`fuzz/seeds/<target>/`) are plain text in the formats described on each function.

pub mod config;
pub mod usersig;

use followd::cmd::Caller;
use followd_protocol::api::Api;
use followd_protocol::{sign, UserId};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The SDKAppID of shared/spec/vectors.json, the app every target configures.
pub const APP: u64 = 1400000000;
/// The secret key of shared/spec/vectors.json.
pub const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
/// The app's admin.
pub const ADMIN: &str = "administrator";
/// "Now" for the URL targets: an hour into the admin UserSig of vectors.json (time 1700000000,
/// valid 86400 s), so the seeds' real tickets stay valid whenever the fuzzer runs.
pub const URL_NOW: u64 = 1_700_003_600;
/// The webhook token of vectors.json's `webhook_sign` example.
pub const TOKEN: &str = "xxxxyyyy";
/// Its `RequestTime`, which is also "now" for the webhook targets.
pub const HOOK_NOW: u64 = 1_669_872_112;
/// A Standard Webhooks signing secret.
pub const SIGNING_SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZg==";
/// The placeholder for a correct signature.
pub const SIGN_PLACEHOLDER: &str = "@sign";
/// The placeholder for a valid UserSig of the URL's own identifier.
pub const USERSIG_PLACEHOLDER: &str = "@usersig";

/// The config file of the URL targets: the app of vectors.json with its admin.
pub fn app_config() -> followd::config::Config {
    let text = followd::config::starter(APP, KEY);
    followd::config::Config::from_toml(&text, std::path::Path::new("/fuzz")).expect("the starter config parses")
}

/// Replaces `usersig=@usersig` with a UserSig for the query's own `identifier` (issued an hour
/// before [`URL_NOW`], valid for a day).
pub fn fill_usersig(query: &str) -> String {
    if !query.contains(USERSIG_PLACEHOLDER) {
        return query.to_owned();
    }
    let identifier = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "identifier").map(|(_, v)| v.into_owned());
    let ticket = followd_protocol::usersig::generate(KEY, APP, identifier.as_deref().unwrap_or(ADMIN), URL_NOW - 3600, 86_400, None);
    query.replace(USERSIG_PLACEHOLDER, &ticket)
}

/// A webhook request in the readable form of the `receiver` and `listen` seeds:
///
/// ```text
/// SdkAppid=1400000000&CallbackCommand=…&Sign=@sign&RequestTime=1669872112
/// webhook-id: evt_1
/// webhook-timestamp: 1669872112
/// webhook-signature: @sign
///
/// {"CallbackCommand": …}
/// ```
///
/// The first line is the query, the lines up to an empty line are headers (invalid ones are
/// dropped, as a server would refuse them), the rest is the body. `@sign` in the query's `Sign`
/// becomes [`TOKEN`]'s sign for its `RequestTime`; in `webhook-signature`, the signature of the id,
/// timestamp and body with [`SIGNING_SECRET`].
pub struct HookRequest {
    /// The raw query string.
    pub query: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl HookRequest {
    /// Splits an input into query, headers and body, and fills in the placeholders.
    pub fn parse(data: &[u8]) -> HookRequest {
        let (query, mut rest) = split_line(data);
        let mut headers = HeaderMap::new();
        loop {
            let (line, after) = split_line(rest);
            rest = after;
            if line.is_empty() {
                break;
            }
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.trim_ascii()), HeaderValue::from_bytes(value)) {
                    headers.append(n, v);
                }
            }
        }
        let body = rest.to_vec();
        let mut query = String::from_utf8_lossy(query).into_owned();
        if query.contains(SIGN_PLACEHOLDER) {
            let time = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "RequestTime").and_then(|(_, v)| v.parse().ok());
            query = query.replace(SIGN_PLACEHOLDER, &sign::tencent_sign(TOKEN, time.unwrap_or(HOOK_NOW)));
        }
        let asks = headers.get("webhook-signature").is_some_and(|v| v.as_bytes() == SIGN_PLACEHOLDER.as_bytes());
        if asks {
            let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
            let ts = header("webhook-timestamp").trim().parse().unwrap_or(HOOK_NOW);
            let sig = sign::standard_webhooks_signature(SIGNING_SECRET, header("webhook-id"), ts, &body);
            headers.insert("webhook-signature", HeaderValue::from_str(&sig).expect("base64 is a valid header value"));
        }
        HookRequest { query, headers, body }
    }
}

/// The bytes before the first `\n` (without a `\r` before it) and the bytes after it.
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (data[..i].strip_suffix(b"\r").unwrap_or(&data[..i]), &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A request body for one command, in the readable form of the `body` seeds:
///
/// ```text
/// follow/follow_get as alice
/// {"FollowType": 1, "StartCursor": "", "WantNum": 10}
/// ```
///
/// The first line names the API (`service/command`; an unknown one picks an API from the line's
/// length, so every input exercises one) and, after `as`, an end user calling through the client
/// API; without it the caller is an app admin. The rest is the body.
pub struct CommandRequest<'a> {
    /// The API.
    pub api: Api,
    /// Who calls.
    pub caller: Caller,
    /// The raw body.
    pub body: &'a [u8],
}

impl<'a> CommandRequest<'a> {
    /// Splits an input into API, caller and body.
    pub fn parse(data: &'a [u8]) -> CommandRequest<'a> {
        let (head, body) = split_line(data);
        let head = String::from_utf8_lossy(head);
        let mut words = head.split_whitespace();
        let path = words.next().unwrap_or("");
        let (service, command) = path.split_once('/').unwrap_or((path, ""));
        let api = Api::resolve(service, command).unwrap_or(Api::ALL[head.len() % Api::ALL.len()]);
        let caller = match (words.next(), words.next().map(UserId::parse)) {
            (Some("as"), Some(Ok(user))) => Caller::User(user),
            _ => Caller::Admin,
        };
        CommandRequest { api, caller, body }
    }
}
