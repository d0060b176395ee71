//! Console sessions, kept on the server: the cookie holds only a random token.

use axum::http::header::{self, HeaderMap};
use parking_lot::Mutex;
use rand::RngCore as _;
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
}

/// Every live session, by token.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
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
            if let Some(k) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone()) {
                map.remove(&k);
            }
        }
        let s = Session { app, admin, expires, csrf: token() };
        let t = token();
        map.insert(t.clone(), s.clone());
        (t, s)
    }

    /// The session a request's cookie names, if still valid.
    pub fn get(&self, headers: &HeaderMap, now: u64) -> Option<Session> {
        let t = cookie(headers)?;
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
            self.map.lock().remove(&t);
        }
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

/// The `Set-Cookie` value of a new session.
pub fn set_cookie(token: &str, max_age: u64) -> String {
    format!("{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

/// The `Set-Cookie` value that clears the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
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
        let c = set_cookie(&t, 10);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
        h.insert(header::COOKIE, HeaderValue::from_static("followd_console=not-a-token"));
        assert!(cookie(&h).is_none());
    }
}
