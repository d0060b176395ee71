//! Console sessions, kept on the server: the cookie holds only a random token.

use axum::http::header::{self, HeaderMap};
use parking_lot::Mutex;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;

use super::COOKIE;

/// The longest a session lives, even with a longer UserSig.
pub const MAX_SESSION_SECS: u64 = 12 * 3600;
/// The most sessions kept; past it the oldest is dropped.
pub const MAX_SESSIONS: usize = 10_000;

/// A signed-in admin.
#[derive(Debug, Clone)]
pub struct Session {
    /// The app signed in to.
    pub app: u64,
    /// The admin identifier.
    pub admin: String,
    /// When it ends, Unix s.
    pub expires: u64,
    /// The token every POST must carry.
    pub csrf: String,
    /// The SHA-256 of the cookie's token: the key of the session on the server.
    pub id: [u8; 32],
}

/// Every live session, by the SHA-256 of its token. The server keeps no token: a lookup hashes the
/// cookie's value first, so neither the map's probing nor its key comparisons depend on how much of
/// a guessed token is right, and a memory dump holds no usable cookie.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn token() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    /// Starts a session; returns its cookie token.
    pub fn create(&self, app: u64, admin: String, expires: u64, now: u64) -> (String, Session) {
        let mut map = self.map.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(k) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                map.remove(&k);
            }
        }
        let t = token();
        let s = Session { app, admin, expires, csrf: token(), id: digest(&t) };
        map.insert(s.id, s.clone());
        (t, s)
    }

    /// The session a request's cookie names, if still valid.
    pub fn get(&self, headers: &HeaderMap, now: u64) -> Option<Session> {
        let t = digest(&cookie(headers)?);
        let mut map = self.map.lock();
        match map.get(&t) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                map.remove(&t);
                None
            }
            None => None,
        }
    }

    /// Ends the session a request's cookie names.
    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(t) = cookie(headers) {
            self.map.lock().remove(&digest(&t));
        }
    }

    /// Whether the session `id` is still signed in and unexpired (a long-lived stream asks this
    /// before each update, so sign-out ends it).
    pub fn alive(&self, id: &[u8; 32], now: u64) -> bool {
        self.map.lock().get(id).is_some_and(|s| s.expires > now)
    }
}

/// The session token in a request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value of a new session; `Secure` when the browser reached followd over HTTPS.
pub fn set_cookie(token: &str, max_age: u64, secure: bool) -> String {
    let flag = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{flag}")
}

/// The `Set-Cookie` value that clears the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    let flag = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{flag}")
}

/// Whether the browser reached followd over HTTPS. followd itself speaks plain HTTP, so HTTPS means
/// a TLS-terminating proxy in front, which says so in `X-Forwarded-Proto: https` or
/// `Forwarded: proto=https`. Trusting the header is safe here: it can only add `Secure` to the
/// cookie of the request that carries it.
pub fn over_https(headers: &HeaderMap) -> bool {
    let xfp = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")));
    let fwd = headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').next().unwrap_or("").split(';').any(|kv| {
            kv.trim()
                .split_once('=')
                .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("proto") && v.trim_matches('"').eq_ignore_ascii_case("https"))
        })
    });
    xfp || fwd
}

/// Compares two tokens in constant time.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sessions_expire_and_cookies_are_strict() {
        let s = Sessions::default();
        let (t, sess) = s.create(7, "admin".into(), 100, 50);
        assert_eq!(t.len(), 32);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("a=b; {COOKIE}={t}")).unwrap());
        assert_eq!(s.get(&h, 99).map(|x| x.csrf), Some(sess.csrf.clone()));
        assert!(s.get(&h, 100).is_none(), "expired with the UserSig");
        assert!(s.get(&h, 50).is_none(), "an expired session is forgotten");
        let c = set_cookie(&t, 10, false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        assert!(set_cookie(&t, 10, true).ends_with("; Secure") && clear_cookie(true).ends_with("; Secure"));
        assert!(!s.map.lock().keys().any(|k| k.as_slice() == t.as_bytes() || hex::encode(k) == t), "no token is kept");
        let mut p = HeaderMap::new();
        assert!(!over_https(&p));
        p.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_https(&p));
        p.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        p.insert(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4;proto=https"));
        assert!(over_https(&p));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
        h.insert(header::COOKIE, HeaderValue::from_static("followd_console=not-a-token"));
        assert!(cookie(&h).is_none());
    }
}
