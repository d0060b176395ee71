//! Checking that a webhook is for this app and comes from the sender.

use followd_protocol::sign;
use http::HeaderMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

use crate::event::Event;

/// What a receiver checks, built once and shared.
///
/// ```
/// use followd_receiver::Verifier;
/// use std::time::Duration;
/// let v = Verifier::new(1400000000).token("xxxxyyyy").window(Duration::from_secs(60));
/// assert_eq!(v.sdkappid(), 1400000000);
/// ```
#[derive(Clone)]
pub struct Verifier {
    sdkappid: u64,
    token: Option<String>,
    secret: Option<String>,
    window: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("sdkappid", &self.sdkappid)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("window", &self.window)
            .finish()
    }
}

/// A verified webhook.
///
/// ```
/// use followd_receiver::Verifier;
/// let body = br#"{"CallbackCommand":"Follow.CallbackAfterFollowDelete","From_Account":"a","To_Account":["b"],"EventTime":1}"#;
/// let q = "SdkAppid=9&CallbackCommand=Follow.CallbackAfterFollowDelete&ClientIP=10.0.0.1&OptPlatform=iOS";
/// let mut headers = http::HeaderMap::new();
/// headers.insert("webhook-id", "evt_7".parse().unwrap());
/// let hook = Verifier::new(9).verify(q, &headers, body).unwrap();
/// assert_eq!((hook.sdkappid, hook.opt_platform.as_deref(), hook.webhook_id.as_deref()), (9, Some("iOS"), Some("evt_7")));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// `SdkAppid` (equal to the verifier's).
    pub sdkappid: u64,
    /// `CallbackCommand`.
    pub command: String,
    /// `ClientIP`, when sent.
    pub client_ip: Option<String>,
    /// `OptPlatform`, when sent.
    pub opt_platform: Option<String>,
    /// The `webhook-id` header (followd sends it; Tencent does not): the key to dedupe on.
    pub webhook_id: Option<String>,
    /// The parsed body.
    pub event: Event,
}

/// Why a webhook was refused. [`Rejection::status`] and [`Rejection::answer`] give the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `SdkAppid` is missing or is another app's.
    #[error("SdkAppid {found:?} is not this app's ({expected})")]
    WrongApp {
        /// This app.
        expected: u64,
        /// What the query said.
        found: Option<String>,
    },
    /// A token is configured but `Sign` or `RequestTime` is missing.
    #[error("Sign and RequestTime are required")]
    MissingSign,
    /// `RequestTime` is outside the window.
    #[error("RequestTime {request_time} is more than {window_secs} s away from now ({now})")]
    StaleRequestTime {
        /// The query's `RequestTime`.
        request_time: u64,
        /// The receiver's clock.
        now: u64,
        /// The window.
        window_secs: u64,
    },
    /// `Sign` does not match the token.
    #[error("Sign does not match the token")]
    BadSign,
    /// A signing secret is configured but a Standard Webhooks header is missing.
    #[error("webhook-id, webhook-timestamp and webhook-signature are required")]
    MissingSignature,
    /// `webhook-timestamp` is outside the window.
    #[error("webhook-timestamp {timestamp} is more than {window_secs} s away from now ({now})")]
    StaleTimestamp {
        /// The header's timestamp.
        timestamp: u64,
        /// The receiver's clock.
        now: u64,
        /// The window.
        window_secs: u64,
    },
    /// No `webhook-signature` entry matches the secret.
    #[error("webhook-signature does not match the secret")]
    BadSignature,
    /// The query's `CallbackCommand` is not the body's.
    #[error("CallbackCommand in the query ({query}) is not the body's ({body})")]
    CommandMismatch {
        /// The query's.
        query: String,
        /// The body's.
        body: String,
    },
    /// The body is not a webhook body.
    #[error("{0}")]
    Malformed(String),
}

impl Rejection {
    /// The HTTP status to answer with: 401 for authentication failures, 400 for a malformed request.
    ///
    /// ```
    /// use followd_receiver::Rejection;
    /// assert_eq!(Rejection::BadSign.status(), 401);
    /// assert_eq!(Rejection::Malformed("x".into()).status(), 400);
    /// ```
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Malformed(_) | Rejection::CommandMismatch { .. } => 400,
            _ => 401,
        }
    }

    /// The FAIL body to answer with.
    ///
    /// ```
    /// use followd_receiver::Rejection;
    /// assert_eq!(Rejection::BadSign.answer(), r#"{"ActionStatus":"FAIL","ErrorCode":1,"ErrorInfo":"Sign does not match the token"}"#);
    /// ```
    pub fn answer(&self) -> String {
        crate::answer::fail(1, &self.to_string())
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Verifier {
    /// A verifier for one app, with no token and no signing secret (checks `SdkAppid` only).
    ///
    /// ```
    /// assert_eq!(followd_receiver::Verifier::new(1400000000).sdkappid(), 1400000000);
    /// ```
    pub fn new(sdkappid: u64) -> Self {
        Verifier { sdkappid, token: None, secret: None, window: Duration::from_secs(60) }
    }

    /// Requires `Sign` and `RequestTime` made with this token (the console's webhook authentication).
    ///
    /// ```
    /// use followd_receiver::{Rejection, Verifier};
    /// let body = br#"{"CallbackCommand":"Follow.CallbackAfterFollowAdd","From_Account":"a","FollowList":[],"EventTime":1}"#;
    /// let unsigned = "SdkAppid=1&CallbackCommand=Follow.CallbackAfterFollowAdd";
    /// let v = Verifier::new(1).token("secret-token");
    /// assert_eq!(v.verify(unsigned, &http::HeaderMap::new(), body), Err(Rejection::MissingSign));
    /// ```
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Requires a Standard Webhooks signature made with this secret (`whsec_…` or raw).
    ///
    /// ```
    /// use followd_receiver::{Rejection, Verifier};
    /// let body = br#"{"CallbackCommand":"Follow.CallbackAfterFollowAdd","From_Account":"a","FollowList":[],"EventTime":1}"#;
    /// let q = "SdkAppid=1&CallbackCommand=Follow.CallbackAfterFollowAdd";
    /// let v = Verifier::new(1).signing_secret("whsec_MDEyMzQ1Njc4OWFiY2RlZg==");
    /// assert_eq!(v.verify(q, &http::HeaderMap::new(), body), Err(Rejection::MissingSignature));
    /// ```
    pub fn signing_secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// How far `RequestTime` and `webhook-timestamp` may be from the receiver's clock (60 s by default).
    ///
    /// ```
    /// use followd_receiver::Verifier;
    /// let q = "SdkAppid=1&CallbackCommand=Follow.CallbackAfterFollowAdd&Sign=17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061&RequestTime=1669872112";
    /// let body = br#"{"CallbackCommand":"Follow.CallbackAfterFollowAdd","From_Account":"a","FollowList":[],"EventTime":1}"#;
    /// let v = Verifier::new(1).token("xxxxyyyy").window(std::time::Duration::from_secs(300));
    /// assert!(v.verify_at(q, &http::HeaderMap::new(), body, 1669872112 + 299).is_ok());
    /// ```
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The app this verifier accepts.
    ///
    /// ```
    /// assert_eq!(followd_receiver::Verifier::new(5).sdkappid(), 5);
    /// ```
    pub fn sdkappid(&self) -> u64 {
        self.sdkappid
    }

    /// Verifies a request (its raw query string, headers and body) against the current time.
    ///
    /// ```
    /// use followd_receiver::{Event, Verifier};
    /// let body = br#"{"CallbackCommand":"Follow.CallbackAfterFollowAdd","From_Account":"a","FollowList":[{"To_Account":"b"}],"EventTime":1}"#;
    /// let query = "SdkAppid=1400000000&CallbackCommand=Follow.CallbackAfterFollowAdd&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI";
    /// let hook = Verifier::new(1400000000).verify(query, &http::HeaderMap::new(), body).unwrap();
    /// assert_eq!(hook.client_ip.as_deref(), Some("127.0.0.1"));
    /// assert!(matches!(hook.event, Event::FollowAdd { .. }));
    /// assert!(Verifier::new(1).verify(query, &http::HeaderMap::new(), body).is_err());
    /// ```
    pub fn verify(&self, query: &str, headers: &HeaderMap, body: &[u8]) -> Result<Webhook, Rejection> {
        self.verify_at(query, headers, body, now_secs())
    }

    /// [`Verifier::verify`] at a given Unix time (for tests and replays of recorded requests).
    ///
    /// ```
    /// use followd_receiver::{Rejection, Verifier};
    /// // The published example: Token xxxxyyyy, RequestTime 1669872112.
    /// let q = "SdkAppid=1&CallbackCommand=Follow.CallbackAfterFollowAdd&Sign=17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061&RequestTime=1669872112";
    /// let body = br#"{"CallbackCommand":"Follow.CallbackAfterFollowAdd","From_Account":"a","FollowList":[],"EventTime":1}"#;
    /// let v = Verifier::new(1).token("xxxxyyyy");
    /// assert!(v.verify_at(q, &http::HeaderMap::new(), body, 1669872112 + 60).is_ok());
    /// assert!(matches!(v.verify_at(q, &http::HeaderMap::new(), body, 1669872112 + 61), Err(Rejection::StaleRequestTime { .. })));
    /// ```
    pub fn verify_at(&self, query: &str, headers: &HeaderMap, body: &[u8], now: u64) -> Result<Webhook, Rejection> {
        let mut sdkappid = None;
        let (mut command, mut client_ip, mut platform, mut sign_param, mut request_time) = (None, None, None, None, None);
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*k {
                "SdkAppid" => &mut sdkappid,
                "CallbackCommand" => &mut command,
                "ClientIP" => &mut client_ip,
                "OptPlatform" => &mut platform,
                "Sign" => &mut sign_param,
                "RequestTime" => &mut request_time,
                _ => continue,
            };
            // Parameters appended by the sender come after the configured URL's own; the last wins.
            *slot = Some(v.into_owned());
        }
        if sdkappid.as_deref().and_then(|s| s.parse::<u64>().ok()) != Some(self.sdkappid) {
            return Err(Rejection::WrongApp { expected: self.sdkappid, found: sdkappid });
        }
        let window = self.window.as_secs();
        if let Some(token) = &self.token {
            let (Some(s), Some(t)) = (sign_param.as_deref(), request_time.as_deref()) else { return Err(Rejection::MissingSign) };
            let t: u64 = t.parse().map_err(|_| Rejection::MissingSign)?;
            if t.abs_diff(now) > window {
                return Err(Rejection::StaleRequestTime { request_time: t, now, window_secs: window });
            }
            if !ct_eq(&sign::tencent_sign(token, t), &s.to_ascii_lowercase()) {
                return Err(Rejection::BadSign);
            }
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let webhook_id = header("webhook-id").map(str::to_owned);
        if let Some(secret) = &self.secret {
            let (Some(id), Some(ts), Some(sigs)) = (webhook_id.as_deref(), header("webhook-timestamp"), header("webhook-signature")) else {
                return Err(Rejection::MissingSignature);
            };
            let ts: u64 = ts.trim().parse().map_err(|_| Rejection::MissingSignature)?;
            if ts.abs_diff(now) > window {
                return Err(Rejection::StaleTimestamp { timestamp: ts, now, window_secs: window });
            }
            let expected = sign::standard_webhooks_signature(secret, id, ts, body);
            if !sigs.split_whitespace().any(|candidate| ct_eq(candidate, &expected)) {
                return Err(Rejection::BadSignature);
            }
        }
        let event = Event::parse(body).map_err(|e| Rejection::Malformed(e.to_string()))?;
        let command = command.unwrap_or_else(|| event.command().to_owned());
        if command != event.command() {
            return Err(Rejection::CommandMismatch { query: command, body: event.command().to_owned() });
        }
        Ok(Webhook { sdkappid: self.sdkappid, command, client_ip, opt_platform: platform, webhook_id, event })
    }
}
