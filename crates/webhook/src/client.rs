//! One delivery attempt: the exact request Tencent would send, over a client whose resolver and
//! literal check apply the SSRF rules of [`crate::ssrf`], that follows no redirect and reads at most
//! 64 KiB of the answer.

use followd_graph::outbox::{Outcome, StoredEvent};
use followd_protocol::{sign, webhook};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ssrf::{check_url, GuardedResolver, Refused};
use crate::Endpoint;

/// The most response bytes read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The most response bytes kept in the delivery log.
pub const LOGGED_RESPONSE_BYTES: usize = 1024;
/// The `User-Agent` of every webhook.
pub const USER_AGENT: &str = concat!("followd/", env!("CARGO_PKG_VERSION"));

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    /// Outcome class.
    pub outcome: Outcome,
    /// HTTP status, when one came back.
    pub status: Option<u16>,
    /// Wall time of the attempt.
    pub duration: Duration,
    /// What went wrong.
    pub error: Option<String>,
    /// First 1 KiB of the response body.
    pub response: Option<String>,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
    /// When the attempt started, ms since 1970.
    pub at_ms: i64,
}

/// Two pooled keep-alive clients: one for public destinations only, one for apps that allow private
/// ones. Both resolve through a [`GuardedResolver`]: even the second never reaches link-local or
/// metadata addresses.
#[derive(Clone)]
pub struct Clients {
    guarded: reqwest::Client,
    open: reqwest::Client,
}

impl Clients {
    /// Builds both clients.
    pub fn new() -> Result<Self, reqwest::Error> {
        let base = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(USER_AGENT)
                .pool_max_idle_per_host(512)
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                // A proxy would resolve the destination itself, out of the SSRF guard's sight.
                .no_proxy()
        };
        Ok(Clients {
            guarded: base().dns_resolver(Arc::new(GuardedResolver { allow_private: false })).build()?,
            open: base().dns_resolver(Arc::new(GuardedResolver { allow_private: true })).build()?,
        })
    }

    /// Sends one attempt of `ev` to `ep`.
    pub async fn attempt(&self, ep: &Endpoint, ev: &StoredEvent) -> AttemptResult {
        let start = Instant::now();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut r = AttemptResult {
            outcome: Outcome::Ok,
            status: None,
            duration: Duration::ZERO,
            error: None,
            response: None,
            retry_after: None,
            at_ms: now.as_millis() as i64,
        };
        let secs = now.as_secs();
        let signature = ep.token.as_deref().map(|t| (sign::tencent_sign(t, secs), secs));
        let query = webhook::query(ev.app, ev.command, &ev.client_ip, ev.platform, signature.as_ref().map(|(s, t)| (s.as_str(), *t)));
        let url = match reqwest::Url::parse(&webhook::url_with_query(&ep.url, &query)) {
            Ok(u) => u,
            Err(e) => {
                r.outcome = Outcome::Refused;
                r.error = Some(format!("invalid webhook URL: {e}"));
                return r;
            }
        };
        if let Err(e) = check_url(&url, ep.allow_private) {
            r.outcome = Outcome::Refused;
            r.error = Some(e.to_string());
            return r;
        }
        let id = ev.webhook_id.to_string();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("webhook-id", HeaderValue::from_str(&id).expect("ascii"));
        headers.insert("webhook-timestamp", HeaderValue::from(secs));
        if let Some(secret) = &ep.signing_secret {
            let sig = sign::standard_webhooks_signature(secret, &id, secs, ev.body.as_bytes());
            headers.insert("webhook-signature", HeaderValue::from_str(&sig).expect("ascii"));
        }
        let client = if ep.allow_private { &self.open } else { &self.guarded };
        let send = async {
            let mut resp = client.post(url).headers(headers).body(ev.body.clone()).send().await?;
            let status = resp.status();
            let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
            let mut body = Vec::new();
            while body.len() < MAX_RESPONSE_BYTES {
                match resp.chunk().await? {
                    Some(c) => body.extend_from_slice(&c[..c.len().min(MAX_RESPONSE_BYTES - body.len())]),
                    None => break,
                }
            }
            Ok::<_, reqwest::Error>((status, retry_after, body))
        };
        match tokio::time::timeout(ep.timeout, send).await {
            Err(_) => {
                r.outcome = Outcome::Timeout;
                r.error = Some(format!("no complete answer within {} ms", ep.timeout.as_millis()));
            }
            Ok(Err(e)) => {
                // Without the URL: its query holds Sign, and the configured URL may hold a key.
                let e = e.without_url();
                let refused = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source()).any(|e| e.is::<Refused>());
                r.outcome = if refused { Outcome::Refused } else { Outcome::Connect };
                r.error = Some(error_chain(&e));
            }
            Ok(Ok((status, retry_after, body))) => {
                r.status = Some(status.as_u16());
                r.response = Some(String::from_utf8_lossy(&body[..body.len().min(LOGGED_RESPONSE_BYTES)]).into_owned());
                if status.as_u16() != 200 {
                    r.outcome = Outcome::HttpStatus;
                    r.error = Some(format!("HTTP {}", status.as_u16()));
                    if matches!(status.as_u16(), 429 | 503) {
                        r.retry_after = retry_after.map(Duration::from_secs);
                    }
                } else if !is_json(&body) {
                    r.outcome = Outcome::NotJson;
                    r.error = Some("HTTP 200 but the body is not JSON".into());
                }
            }
        }
        r.duration = start.elapsed();
        r
    }
}

/// Whether an answer is JSON. An answer longer than what is read counts as JSON when it starts like an
/// object or an array (its end was never read).
fn is_json(body: &[u8]) -> bool {
    if body.len() >= MAX_RESPONSE_BYTES {
        return matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'['));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_json_answers_count_as_json() {
        assert!(is_json(br#"{"ActionStatus":"OK"}"#));
        assert!(!is_json(b"<html>"));
        let mut long = b"  {\"a\":\"".to_vec();
        long.resize(MAX_RESPONSE_BYTES, b'x');
        assert!(is_json(&long));
        long[2] = b'<';
        assert!(!is_json(&long));
    }
}
