//! The UserSig invariants shared by the `usersig` and `usersig_ticket` targets.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use followd_protocol::usersig::{self, Ticket, UserSigError};
use std::io::{Read as _, Write as _};

use crate::{KEY, SIGN_PLACEHOLDER};

/// The largest ticket JSON `usersig::decode` accepts (its `MAX_TICKET_JSON`).
const MAX_TICKET_JSON: usize = 4096;

/// Wraps ticket JSON into a UserSig as Tencent's libraries do (zlib, base64, `+/=` → `*-_`), after
/// replacing `"@sign"` with the HMAC of the JSON's own fields under [`KEY`]. The zlib level comes
/// from the input's length, so every level is exercised.
pub fn wrap(json: &[u8]) -> String {
    let json = fill_sig(json);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new((json.len() % 10) as u32));
    z.write_all(&json).expect("writing to a Vec cannot fail");
    let b64 = STANDARD.encode(z.finish().expect("writing to a Vec cannot fail"));
    b64.replace('+', "*").replace('/', "-").replace('=', "_")
}

fn fill_sig(json: &[u8]) -> Vec<u8> {
    let quoted = format!("\"{SIGN_PLACEHOLDER}\"");
    let Some(at) = json.windows(quoted.len()).position(|w| w == quoted.as_bytes()) else { return json.to_vec() };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else { return json.to_vec() };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str());
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64());
    let (Some(id), Some(app), Some(time), Some(expire)) = (s("TLS.identifier"), n("TLS.sdkappid"), n("TLS.time"), n("TLS.expire")) else {
        return json.to_vec();
    };
    let userbuf = match v.get("TLS.userbuf") {
        None => None,
        Some(u) => match u.as_str().and_then(|u| STANDARD.decode(u).ok()) {
            Some(b) => Some(b),
            None => return json.to_vec(),
        },
    };
    let sig = usersig::hmac_sig(KEY, id, app, time, expire, userbuf.as_deref());
    let mut out = json[..at].to_vec();
    out.extend_from_slice(format!("\"{sig}\"").as_bytes());
    out.extend_from_slice(&json[at + quoted.len()..]);
    out
}

/// The decompressed JSON of a UserSig, without `decode`'s size limit (to tell "too large" apart).
fn inflate(usersig: &str) -> Option<Vec<u8>> {
    let b64 = usersig.replace('*', "+").replace('-', "/").replace('_', "=");
    let raw = STANDARD.decode(b64).ok()?;
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(&raw[..]).take(1 << 20).read_to_end(&mut out).ok()?;
    Some(out)
}

/// Checks every UserSig invariant on one string.
pub fn check(s: &str) {
    let decoded = usersig::decode(s);
    // A server verifying for the vectors' app and admin: consistent with decode.
    let served = usersig::verify(s, crate::APP, crate::ADMIN, KEY, crate::URL_NOW);
    let t = match decoded {
        Err(e) => {
            assert!(matches!(e, UserSigError::Empty | UserSigError::Malformed(_)), "decode failed with {e:?}");
            assert_eq!(served.unwrap_err(), e, "verify must refuse what decode refuses, the same way");
            return;
        }
        Ok(t) => t,
    };
    if let Ok(v) = &served {
        assert_eq!(v, &t);
    }
    check_order(s, &t);
    let expected_sig = usersig::hmac_sig(KEY, &t.identifier, t.sdkappid, t.time, t.expire, t.userbuf.as_deref());
    match usersig::verify(s, t.sdkappid, &t.identifier, KEY, t.time) {
        Ok(v) => {
            assert_eq!(v, t);
            assert_eq!(STANDARD.encode(&t.sig), expected_sig, "accepted a ticket whose HMAC does not match");
        }
        Err(e) => {
            assert_eq!(e, UserSigError::SignatureMismatch);
            assert_ne!(STANDARD.encode(&t.sig), expected_sig, "refused a ticket whose HMAC matches");
        }
    }
    check_regenerated(&t);
}

/// sdkappid, then identifier, then expiry (decisions.md §3), each on a ticket that passes the earlier ones.
fn check_order(s: &str, t: &Ticket) {
    let other_app = t.sdkappid.wrapping_add(1);
    assert_eq!(
        usersig::verify(s, other_app, &format!("{}x", t.identifier), KEY, u64::MAX),
        Err(UserSigError::SdkAppIdMismatch { expected: other_app, found: t.sdkappid })
    );
    assert_eq!(usersig::verify(s, t.sdkappid, &format!("{}x", t.identifier), KEY, u64::MAX), Err(UserSigError::IdentifierMismatch));
    if let Some(late) = t.expires_at().checked_add(1) {
        assert_eq!(
            usersig::verify(s, t.sdkappid, &t.identifier, "not the key", late),
            Err(UserSigError::Expired { expired_at: t.expires_at() })
        );
    }
}

/// A UserSig generated from the ticket's fields verifies and carries the same fields, unless its
/// JSON is over the size `decode` accepts (only possible for an identifier or userbuf far beyond
/// what a UserID allows).
fn check_regenerated(t: &Ticket) {
    let g = usersig::generate(KEY, t.sdkappid, &t.identifier, t.time, t.expire, t.userbuf.as_deref());
    match usersig::verify(&g, t.sdkappid, &t.identifier, KEY, t.time) {
        Ok(back) => {
            let fields = |t: &Ticket| (t.identifier.clone(), t.sdkappid, t.time, t.expire, t.userbuf.clone());
            assert_eq!(fields(&back), fields(t));
        }
        Err(UserSigError::Malformed("ticket too large")) => {
            let len = inflate(&g).expect("a generated UserSig inflates").len();
            assert!(len > MAX_TICKET_JSON, "a generated ticket of {len} bytes refused as too large");
        }
        Err(e) => panic!("a generated UserSig does not verify: {e:?}"),
    }
}
