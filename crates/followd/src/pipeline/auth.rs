//! Who is calling: the URL parameters, the app they name, and the UserSig that proves the identifier
//! (decisions.md §3, checked in that order, first failure wins); and where a request comes from
//! (`ClientIP`, `OptPlatform`, decisions.md §5).

use axum::http::HeaderMap;
use followd_protocol::api::{ApiError, Family};
use followd_protocol::{code, OptPlatform, UserId};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::apps::{App, Apps};

/// The URL parameters every API takes (names are case-sensitive).
#[derive(Debug, Default)]
pub struct UrlParams {
    /// `sdkappid`.
    pub sdkappid: Option<String>,
    /// `identifier`.
    pub identifier: Option<String>,
    /// `usersig`.
    pub usersig: Option<String>,
    /// `contenttype`.
    pub contenttype: Option<String>,
}

impl UrlParams {
    /// Parses a raw query string; unknown parameters (such as `random`) are ignored.
    pub fn parse(raw: Option<&str>) -> UrlParams {
        let mut p = UrlParams::default();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let slot = match &*k {
                "sdkappid" => &mut p.sdkappid,
                "identifier" => &mut p.identifier,
                "usersig" => &mut p.usersig,
                "contenttype" => &mut p.contenttype,
                _ => continue,
            };
            slot.get_or_insert_with(|| v.into_owned());
        }
        p
    }
}

/// Checks the URL parameters and the UserSig; returns the app and the verified identifier.
/// Whether the identifier may call the API is the caller's next check.
pub fn authenticate(apps: &Apps, p: &UrlParams, now: u64) -> Result<(Arc<App>, String), ApiError> {
    let appid = p
        .sdkappid
        .as_deref()
        .ok_or_else(|| ApiError::new(code::MISSING_SDKAPPID, "sdkappid is missing from the URL"))?
        .parse::<u64>()
        .map_err(|_| ApiError::new(code::MISSING_SDKAPPID, "sdkappid in the URL is not a number"))?;
    let app = apps.get(appid).ok_or_else(|| ApiError::new(code::UNKNOWN_SDKAPPID, format!("SDKAppID {appid} does not exist")))?;
    if let Some(ct) = &p.contenttype {
        if !ct.eq_ignore_ascii_case("json") {
            return Err(ApiError::new(code::BAD_URL_PARAMS, "contenttype must be json"));
        }
    }
    let identifier = p
        .identifier
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::new(code::BAD_URL_PARAMS, "identifier is missing from the URL"))?;
    apps.verify_usersig(app, identifier, p.usersig.as_deref().unwrap_or(""), now)?;
    Ok((app.clone(), identifier.to_owned()))
}

/// [`authenticate`] plus the admin check (`30004` for follow APIs, `60010` for others).
pub fn authenticate_admin(apps: &Apps, p: &UrlParams, family: Family, now: u64) -> Result<Arc<App>, ApiError> {
    let (app, identifier) = authenticate(apps, p, now)?;
    if !app.is_admin(&identifier) {
        return Err(ApiError::new(family.not_admin(), format!("{identifier} is not an app admin")));
    }
    Ok(app)
}

/// The end user an authenticated identifier names (the client API acts for it).
pub fn identifier_user(identifier: &str) -> Result<UserId, ApiError> {
    UserId::parse(identifier).map_err(|e| ApiError::new(code::BAD_URL_PARAMS, format!("identifier: {e}")))
}

/// The client's address: the peer, or the left-most `X-Forwarded-For` entry when the peer is a trusted
/// proxy (decisions.md §5).
pub fn client_ip(peer: SocketAddr, forwarded_for: Option<&str>, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if trusted.iter().any(|n| n.contains(&peer_ip)) {
        if let Some(ip) = forwarded_for.and_then(|h| h.split(',').next()).and_then(|s| s.trim().parse::<IpAddr>().ok()) {
            return ip;
        }
    }
    peer_ip
}

/// The platform a client declares in `X-Client-Platform`; anything unknown (or `RESTAPI`) is `Unknown`.
pub fn platform(headers: &HeaderMap) -> OptPlatform {
    match headers.get("x-client-platform").and_then(|v| v.to_str().ok()).map(OptPlatform::parse) {
        Some(OptPlatform::RestApi) | None => OptPlatform::Unknown,
        Some(p) => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use followd_protocol::usersig;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: SocketAddr = "10.1.2.3:999".parse().unwrap();
        let other: SocketAddr = "192.0.2.1:999".parse().unwrap();
        assert_eq!(client_ip(proxy, Some("203.0.113.9, 10.1.2.3"), &trusted).to_string(), "203.0.113.9");
        assert_eq!(client_ip(other, Some("203.0.113.9"), &trusted).to_string(), "192.0.2.1");
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted).to_string(), "10.1.2.3");
        assert_eq!(client_ip(proxy, None, &trusted).to_string(), "10.1.2.3");
    }

    #[test]
    fn a_cached_usersig_is_verified_again_once_expired() {
        let key = "k".repeat(32);
        let config = crate::config::Config::from_toml(&crate::config::starter(1, &key), std::path::Path::new(".")).unwrap();
        let apps = Apps::new(&config.apps);
        let sig = usersig::generate(&key, 1, "alice", 1000, 100, None);
        let params = |id: &str| UrlParams::parse(Some(&format!("sdkappid=1&identifier={id}&usersig={sig}")));
        assert_eq!(authenticate(&apps, &params("alice"), 1000).unwrap().1, "alice");
        assert_eq!(authenticate(&apps, &params("alice"), 1100).unwrap().1, "alice", "cached, still valid");
        assert_eq!(authenticate(&apps, &params("alice"), 1101).err().map(|e| e.code), Some(code::USERSIG_EXPIRED));
        assert_eq!(authenticate(&apps, &params("bob"), 1000).err().map(|e| e.code), Some(code::USERSIG_IDENTIFIER));
    }

    #[test]
    fn url_params_first_value_wins_and_case_matters() {
        let p = UrlParams::parse(Some("SDKAPPID=1&sdkappid=2&sdkappid=3&random=9"));
        assert_eq!(p.sdkappid.as_deref(), Some("2"));
    }
}
