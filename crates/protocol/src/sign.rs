//! Webhook authentication: Tencent's `Sign` and the Standard Webhooks signature (decisions.md §4).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Tencent's webhook `Sign`: lowercase hex of SHA-256 over the token immediately followed by the
/// decimal `RequestTime`. Not an HMAC.
///
/// ```
/// assert_eq!(followd_protocol::sign::tencent_sign("xxxxyyyy", 1669872112),
///            "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061");
/// ```
pub fn tencent_sign(token: &str, request_time: u64) -> String {
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.update(request_time.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// The key bytes of a Standard Webhooks secret: the base64 after a `whsec_` prefix, or, when the
/// secret is not of that form, its raw bytes.
pub fn standard_webhooks_key(secret: &str) -> Vec<u8> {
    secret.strip_prefix("whsec_").and_then(|b| STANDARD.decode(b).ok()).unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The `webhook-signature` header value: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`.
pub fn standard_webhooks_signature(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(&standard_webhooks_key(secret)).expect("HMAC takes a key of any length");
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
}
