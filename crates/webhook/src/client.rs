//! One delivery attempt: the exact request Tencent would send, over a client that refuses private
//! destinations, follows no redirect and reads at most 64 KiB of the answer.

use followd_graph::outbox::{Outcome, StoredEvent};
use followd_protocol::{sign, webhook};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Whether an address may receive webhooks without `allow_private_destinations`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0xdb8)
                // Ranges that embed an IPv4 address (NAT64, 6to4, IPv4-compatible) could reach a
                // private one: refused outright.
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0x2002
                || s[..6] == [0; 6])
        }
    }
}

/// The SSRF guard's refusal, recognisable in a reqwest error's source chain.
#[derive(Debug, thiserror::Error)]
#[error("destination {0} is, or resolves only to, loopback, private, link-local or unspecified addresses")]
pub struct Refused(String);

/// A resolver that returns only public addresses, so the address checked is the address connected to.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(Box::new(Refused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Two pooled keep-alive clients: one guarded, one for apps that allow private destinations.
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
        Ok(Clients { guarded: base().dns_resolver(Arc::new(GuardedResolver)).build()?, open: base().build()? })
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
        if let (false, Err(e)) = (ep.allow_private, check_literal(&url)) {
            r.outcome = Outcome::Refused;
            r.error = Some(e);
            return r;
        }
        let id = webhook_id(ev.id);
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

/// Refuses a URL whose host is a non-public IP literal (a resolver is not asked for those).
fn check_literal(url: &reqwest::Url) -> Result<(), String> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(Refused(ip.to_string()).to_string())
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

/// The `webhook-id` of an event: stable across every retry.
pub fn webhook_id(event_id: i64) -> String {
    format!("evt_{event_id}")
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
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

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
