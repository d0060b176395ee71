//! The URL parameters of every API (`sdkappid`, `identifier`, `usersig`, `contenttype`) and the
//! authentication of arbitrary query strings against a configured app (decisions.md §3); the same
//! text also as the `X-Forwarded-For` header that gives `ClientIP` behind a trusted proxy.
//! `usersig=@usersig` asks for a valid UserSig of the query's own identifier, so the accepting
//! path and the verified-UserSig cache are fuzzed too.
//!
//! Invariants: parsing keeps the first value of each parameter; authentication never panics; an
//! accepted call names the app and identifier of the URL, with a UserSig that verifies; the cache
//! never changes an answer: a registry that has seen every earlier input (its cache warm) answers
//! exactly as a fresh one, now and a day later, when every UserSig issued for the seeds has expired;
//! `ClientIP` is the proxy's address or the header's first entry.
#![no_main]

use followd::apps::Apps;
use followd::pipeline::auth::{client_ip, identifier_user, UrlParams};
use followd_fuzz::{app_config, fill_usersig, KEY, URL_NOW};
use followd_protocol::api::{ApiError, Family};
use followd_protocol::usersig;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static CONFIG: LazyLock<followd::config::Config> = LazyLock::new(app_config);
static WARM: LazyLock<Apps> = LazyLock::new(|| Apps::new(&CONFIG.apps));

type Outcome = Result<(u64, String), ApiError>;

fn authenticate(apps: &Apps, p: &UrlParams, now: u64) -> Outcome {
    followd::pipeline::auth::authenticate(apps, p, now).map(|(app, id)| (app.sdkappid, id))
}

fn admin(apps: &Apps, p: &UrlParams, now: u64) -> Result<u64, ApiError> {
    followd::pipeline::auth::authenticate_admin(apps, p, Family::Follow, now).map(|app| app.sdkappid)
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let query = fill_usersig(raw);
    let p = UrlParams::parse(Some(&query));
    let first = |name: &str| form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    assert_eq!(p.sdkappid, first("sdkappid"));
    assert_eq!(p.identifier, first("identifier"));
    assert_eq!(p.usersig, first("usersig"));
    assert_eq!(p.contenttype, first("contenttype"));

    let proxy: std::net::SocketAddr = "10.0.0.1:443".parse().expect("an address");
    let trusted = ["10.0.0.0/8".parse().expect("a network")];
    let ip = client_ip(proxy, Some(raw), &trusted);
    let forwarded = raw.split(',').next().map(str::trim).and_then(|s| s.parse().ok());
    assert_eq!(ip, forwarded.unwrap_or(proxy.ip()));

    let fresh = Apps::new(&CONFIG.apps);
    for now in [URL_NOW, URL_NOW + 86_400] {
        let outcome = authenticate(&WARM, &p, now);
        assert_eq!(outcome, authenticate(&fresh, &p, now), "the cache changed an answer");
        assert_eq!(admin(&WARM, &p, now), admin(&fresh, &p, now), "the cache changed an admin answer");
        match outcome {
            Ok((app, id)) => {
                // The number the URL gives: `sdkappid=01400000000` names app 1400000000, as any numeric
                // URL parameter would (found by this target).
                assert_eq!(p.sdkappid.as_deref().and_then(|s| s.parse::<u64>().ok()), Some(app));
                assert_eq!(Some(&id), p.identifier.as_ref());
                let sig = p.usersig.as_deref().unwrap_or("");
                assert!(usersig::verify(sig, app, &id, KEY, now).is_ok(), "accepted a UserSig that does not verify");
                if let Ok(user) = identifier_user(&id) {
                    assert_eq!(user.as_str(), id, "the client API acts for the identifier itself");
                }
            }
            Err(e) => {
                assert_ne!(e.code, 0);
                assert!(!e.info.is_empty());
                assert!(!e.info.contains(KEY), "an error quotes the app's key");
            }
        }
    }
});
