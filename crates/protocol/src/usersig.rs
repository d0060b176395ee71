//! UserSig tickets (TLSSigAPIv2), generated and verified exactly as Tencent's reference code does
//! (protocol.md §5).
//!
//! A ticket is compact JSON, zlib-compressed, then base64 with `+/=` replaced by `*-_`. The bytes are
//! not canonical (implementations use different zlib levels), so verification always decodes and
//! re-computes the HMAC; it never compares ticket strings.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{Read, Write};

use crate::code;

type HmacSha256 = Hmac<Sha256>;

/// The default validity of a generated UserSig: 180 days, as in the reference libraries.
pub const DEFAULT_EXPIRE_SECS: u64 = 180 * 86_400;

/// The fields of a decoded ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// `TLS.identifier`.
    pub identifier: String,
    /// `TLS.sdkappid`.
    pub sdkappid: u64,
    /// `TLS.time`, Unix seconds.
    pub time: u64,
    /// `TLS.expire`, a duration in seconds.
    pub expire: u64,
    /// `TLS.userbuf`, decoded, when present.
    pub userbuf: Option<Vec<u8>>,
    /// `TLS.sig`, decoded HMAC bytes.
    pub sig: Vec<u8>,
}

impl Ticket {
    /// Unix second after which the ticket is expired (`now > time + expire`).
    pub fn expires_at(&self) -> u64 {
        self.time.saturating_add(self.expire)
    }
}

/// Why a UserSig was refused, in the order the checks run (decisions.md §3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserSigError {
    /// No UserSig at all.
    #[error("UserSig is empty")]
    Empty,
    /// Not base64, not zlib, not JSON, or a required field missing or of the wrong type.
    #[error("UserSig cannot be decoded: {0}")]
    Malformed(&'static str),
    /// `TLS.sdkappid` is not the request's sdkappid.
    #[error("UserSig was issued for SDKAppID {found}, not {expected}")]
    SdkAppIdMismatch {
        /// The request's sdkappid.
        expected: u64,
        /// The ticket's.
        found: u64,
    },
    /// `TLS.identifier` is not the request's identifier.
    #[error("UserSig was issued for another identifier")]
    IdentifierMismatch,
    /// `now > TLS.time + TLS.expire`.
    #[error("UserSig expired at Unix time {expired_at}")]
    Expired {
        /// When it expired.
        expired_at: u64,
    },
    /// The HMAC does not match this app's key.
    #[error("UserSig signature does not match the app's key")]
    SignatureMismatch,
}

impl UserSigError {
    /// The Tencent error code for this failure.
    pub fn code(&self) -> u32 {
        match self {
            UserSigError::Empty => code::USERSIG_EMPTY,
            UserSigError::Malformed(_) => code::USERSIG_INVALID,
            UserSigError::SdkAppIdMismatch { .. } => code::USERSIG_SDKAPPID,
            UserSigError::IdentifierMismatch => code::USERSIG_IDENTIFIER,
            UserSigError::Expired { .. } => code::USERSIG_EXPIRED,
            UserSigError::SignatureMismatch => code::USERSIG_MISMATCH,
        }
    }
}

fn string_to_sign(identifier: &str, sdkappid: u64, time: u64, expire: u64, userbuf_b64: Option<&str>) -> String {
    let mut s = format!("TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n");
    if let Some(b) = userbuf_b64 {
        s.push_str("TLS.userbuf:");
        s.push_str(b);
        s.push('\n');
    }
    s
}

fn mac(key: &str, identifier: &str, sdkappid: u64, time: u64, expire: u64, userbuf_b64: Option<&str>) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any length");
    m.update(string_to_sign(identifier, sdkappid, time, expire, userbuf_b64).as_bytes());
    m
}

/// `TLS.sig` for the given inputs: standard base64 of HMAC-SHA256(key, string to sign).
///
/// ```
/// use followd_protocol::usersig::hmac_sig;
/// let key = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
/// assert_eq!(hmac_sig(key, "0", 1400000000, 1569910200, 15552000, None),
///            "CpjuBdQs9ZwnuGAJR8onoOeI9fweX2vIMMY94iOJWJY=");
/// ```
pub fn hmac_sig(key: &str, identifier: &str, sdkappid: u64, time: u64, expire: u64, userbuf: Option<&[u8]>) -> String {
    let ub = userbuf.map(|b| STANDARD.encode(b));
    STANDARD.encode(mac(key, identifier, sdkappid, time, expire, ub.as_deref()).finalize().into_bytes())
}

/// Generates a UserSig: compact JSON in the reference key order, zlib level 6, URL-safe base64.
pub fn generate(key: &str, sdkappid: u64, identifier: &str, time: u64, expire: u64, userbuf: Option<&[u8]>) -> String {
    let sig = hmac_sig(key, identifier, sdkappid, time, expire, userbuf);
    let ident = serde_json::to_string(identifier).expect("a string serialises");
    let mut json =
        format!(r#"{{"TLS.ver":"2.0","TLS.identifier":{ident},"TLS.sdkappid":{sdkappid},"TLS.expire":{expire},"TLS.time":{time},"#);
    if let Some(ub) = userbuf {
        json.push_str(&format!(r#""TLS.userbuf":"{}","#, STANDARD.encode(ub)));
    }
    json.push_str(&format!(r#""TLS.sig":"{sig}"}}"#));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    z.write_all(json.as_bytes()).expect("writing to a Vec cannot fail");
    let compressed = z.finish().expect("writing to a Vec cannot fail");
    to_url_safe(&STANDARD.encode(compressed))
}

fn to_url_safe(b64: &str) -> String {
    b64.chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

/// The largest decompressed ticket accepted; real tickets are under 300 bytes.
const MAX_TICKET_JSON: u64 = 4096;

/// The JSON text inside a UserSig: URL-safe base64 reversed, then zlib-inflated.
pub fn ticket_json(usersig: &str) -> Result<Vec<u8>, UserSigError> {
    if usersig.is_empty() {
        return Err(UserSigError::Empty);
    }
    let b64: String = usersig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let raw = STANDARD.decode(b64.as_bytes()).map_err(|_| UserSigError::Malformed("not base64"))?;
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(&raw[..])
        .take(MAX_TICKET_JSON + 1)
        .read_to_end(&mut json)
        .map_err(|_| UserSigError::Malformed("not zlib data"))?;
    if json.len() as u64 > MAX_TICKET_JSON {
        return Err(UserSigError::Malformed("ticket too large"));
    }
    Ok(json)
}

/// Decodes a UserSig into its fields without checking anything but its form.
pub fn decode(usersig: &str) -> Result<Ticket, UserSigError> {
    let json = ticket_json(usersig)?;
    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|_| UserSigError::Malformed("not JSON"))?;
    let s = |k: &'static str| v.get(k).and_then(|x| x.as_str()).ok_or(UserSigError::Malformed(k));
    let n = |k: &'static str| v.get(k).and_then(|x| x.as_u64()).ok_or(UserSigError::Malformed(k));
    let userbuf = match v.get("TLS.userbuf") {
        None => None,
        Some(u) => Some(u.as_str().and_then(|u| STANDARD.decode(u).ok()).ok_or(UserSigError::Malformed("TLS.userbuf"))?),
    };
    Ok(Ticket {
        identifier: s("TLS.identifier")?.to_owned(),
        sdkappid: n("TLS.sdkappid")?,
        time: n("TLS.time")?,
        expire: n("TLS.expire")?,
        userbuf,
        sig: STANDARD.decode(s("TLS.sig")?).map_err(|_| UserSigError::Malformed("TLS.sig"))?,
    })
}

/// Verifies a UserSig for a request, in the order of decisions.md §3: form, sdkappid, identifier,
/// expiry, then the signature (compared in constant time). Returns the decoded ticket.
pub fn verify(usersig: &str, sdkappid: u64, identifier: &str, key: &str, now: u64) -> Result<Ticket, UserSigError> {
    let t = decode(usersig)?;
    if t.sdkappid != sdkappid {
        return Err(UserSigError::SdkAppIdMismatch { expected: sdkappid, found: t.sdkappid });
    }
    if t.identifier != identifier {
        return Err(UserSigError::IdentifierMismatch);
    }
    if now > t.expires_at() {
        return Err(UserSigError::Expired { expired_at: t.expires_at() });
    }
    let ub = t.userbuf.as_deref().map(|b| STANDARD.encode(b));
    mac(key, &t.identifier, t.sdkappid, t.time, t.expire, ub.as_deref())
        .verify_slice(&t.sig)
        .map_err(|_| UserSigError::SignatureMismatch)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

    #[test]
    fn generate_then_verify_and_every_refusal() {
        let sig = generate(KEY, 1400000000, "admin", 1000, 60, None);
        assert!(sig.starts_with("eJ"));
        let t = verify(&sig, 1400000000, "admin", KEY, 1060).unwrap();
        assert_eq!((t.time, t.expire), (1000, 60));
        assert_eq!(verify(&sig, 1400000000, "admin", KEY, 1061).unwrap_err().code(), 70001);
        assert_eq!(verify(&sig, 1400000001, "admin", KEY, 1000).unwrap_err().code(), 70014);
        assert_eq!(verify(&sig, 1400000000, "other", KEY, 1000).unwrap_err().code(), 70013);
        assert_eq!(verify(&sig, 1400000000, "admin", "another key", 1000).unwrap_err().code(), 70009);
        assert_eq!(verify("", 1400000000, "admin", KEY, 1000).unwrap_err().code(), 70002);
        assert_eq!(verify("not a ticket!", 1400000000, "admin", KEY, 1000).unwrap_err().code(), 70003);
        // A ticket from the future is accepted, as in every reference implementation.
        assert!(verify(&sig, 1400000000, "admin", KEY, 10).is_ok());
    }

    #[test]
    fn check_order_first_failure_wins() {
        // Expired, wrong identifier and wrong key all at once: the identifier check comes first.
        let sig = generate("other key", 1400000000, "admin", 1000, 60, None);
        assert_eq!(verify(&sig, 1400000000, "bob", KEY, 5000).unwrap_err().code(), 70013);
        assert_eq!(verify(&sig, 1400000000, "admin", KEY, 5000).unwrap_err().code(), 70001);
        assert_eq!(verify(&sig, 1400000000, "admin", KEY, 1000).unwrap_err().code(), 70009);
    }

    #[test]
    fn tampered_json_fails_signature() {
        // Re-encode the JSON of a valid ticket with a longer expiry but the old sig.
        let sig = generate(KEY, 1400000000, "admin", 1000, 60, None);
        let t = decode(&sig).unwrap();
        let json = format!(
            r#"{{"TLS.ver":"2.0","TLS.identifier":"admin","TLS.sdkappid":1400000000,"TLS.expire":999999,"TLS.time":1000,"TLS.sig":"{}"}}"#,
            STANDARD.encode(&t.sig)
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(json.as_bytes()).unwrap();
        let forged = to_url_safe(&STANDARD.encode(z.finish().unwrap()));
        assert_eq!(verify(&forged, 1400000000, "admin", KEY, 2000).unwrap_err().code(), 70009);
    }
}
