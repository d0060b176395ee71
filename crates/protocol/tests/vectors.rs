//! Known answers from ../shared/spec/vectors.json: every UserSig HMAC and ticket, the webhook Sign and
//! the exact webhook bodies and queries.

use followd_protocol::{sign, usersig, webhook, CallbackCommand, OptPlatform};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/spec/vectors.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).expect("vectors.json parses")
}

#[test]
fn usersig_hmac_vectors() {
    let v = vectors();
    let key = v["secret_key"].as_str().unwrap();
    let appid = v["sdkappid"].as_u64().unwrap();
    let cases = v["usersig_hmac"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for c in cases {
        let userbuf = c["userbuf_base64"].as_str().map(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b).unwrap()
        });
        let got = usersig::hmac_sig(
            key,
            c["identifier"].as_str().unwrap(),
            appid,
            c["time"].as_u64().unwrap(),
            c["expire"].as_u64().unwrap(),
            userbuf.as_deref(),
        );
        assert_eq!(got, c["sig"].as_str().unwrap(), "case {c}");
    }
}

#[test]
fn usersig_ticket_vectors_decode_verify_and_regenerate_the_same_json() {
    let v = vectors();
    let key = v["secret_key"].as_str().unwrap();
    let appid = v["sdkappid"].as_u64().unwrap();
    for c in v["usersig_tickets"].as_array().unwrap() {
        let sig = c["usersig"].as_str().unwrap();
        let json: Value = serde_json::from_str(c["json"].as_str().unwrap()).unwrap();
        let t = usersig::decode(sig).unwrap();
        assert_eq!(t.identifier, json["TLS.identifier"].as_str().unwrap());
        assert_eq!(t.time, json["TLS.time"].as_u64().unwrap());
        // Valid up to and including time + expire; expired one second later.
        let now = t.time + t.expire;
        let verified = usersig::verify(sig, appid, &t.identifier, key, now).unwrap();
        assert_eq!(verified, t);
        assert_eq!(usersig::verify(sig, appid, &t.identifier, key, now + 1).unwrap_err().code(), 70001);
        assert_eq!(usersig::verify(sig, appid, &t.identifier, "wrong", now).unwrap_err().code(), 70009);
        // The published ticket holds exactly the JSON shown; ours holds the same bytes. (The zlib stream
        // itself is not canonical: levels and deflate implementations differ, protocol.md §5.2.)
        assert_eq!(usersig::ticket_json(sig).unwrap(), c["json"].as_str().unwrap().as_bytes());
        let regenerated = usersig::generate(key, appid, &t.identifier, t.time, t.expire, t.userbuf.as_deref());
        assert_eq!(usersig::ticket_json(&regenerated).unwrap(), c["json"].as_str().unwrap().as_bytes());
        assert_eq!(usersig::decode(&regenerated).unwrap(), t);
    }
}

#[test]
fn webhook_sign_vectors() {
    let v = vectors();
    for c in v["webhook_sign"].as_array().unwrap() {
        assert_eq!(sign::tencent_sign(c["token"].as_str().unwrap(), c["request_time"].as_u64().unwrap()), c["sign"].as_str().unwrap());
    }
}

#[test]
fn webhook_body_and_query_vectors_byte_for_byte() {
    let v = vectors();
    let appid = v["sdkappid"].as_u64().unwrap();
    let cases = v["webhooks"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let body = &c["body"];
        let cmd = CallbackCommand::parse(body["CallbackCommand"].as_str().unwrap()).unwrap();
        let targets: Vec<String> = match cmd {
            CallbackCommand::FollowAdd => {
                body["FollowList"].as_array().unwrap().iter().map(|i| i["To_Account"].as_str().unwrap().to_owned()).collect()
            }
            CallbackCommand::FollowDelete => {
                body["To_Account"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect()
            }
        };
        let ours = webhook::body(cmd, body["From_Account"].as_str().unwrap(), &targets, body["EventTime"].as_u64().unwrap());
        // serde_json preserves the file's key order here, so this is the compact form of the vector.
        assert_eq!(ours, serde_json::to_string(body).unwrap());
        let q = webhook::query(appid, cmd, "127.0.0.1", OptPlatform::RestApi, None);
        assert_eq!(q, c["query"].as_str().unwrap());
    }
    let q = webhook::query(appid, CallbackCommand::FollowAdd, "127.0.0.1", OptPlatform::RestApi, Some(("abc", 1669872112)));
    assert!(q.ends_with("&OptPlatform=RESTAPI&Sign=abc&RequestTime=1669872112"));
    let ok: Value = serde_json::from_str(webhook::RESPONSE_OK).unwrap();
    assert_eq!(ok, v["webhook_response_ok"]);
}

#[test]
fn standard_webhooks_signature_is_hmac_of_id_timestamp_body() {
    use base64::Engine as _;
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(b"0123456789abcdef"));
    let s = sign::standard_webhooks_signature(&secret, "msg_1", 1700000000, b"{}");
    assert!(s.starts_with("v1,"));
    assert_ne!(s, sign::standard_webhooks_signature(&secret, "msg_1", 1700000000, b"{ }"));
    assert_ne!(s, sign::standard_webhooks_signature(&secret, "msg_2", 1700000000, b"{}"));
}
