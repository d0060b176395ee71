//! The exact webhook request: the query appended to the app's URL and the JSON body (protocol.md §1–2).

use crate::{CallbackCommand, OptPlatform};

/// The query parameters Chat appends, in the documented order:
/// `SdkAppid, CallbackCommand, contenttype, ClientIP, OptPlatform[, Sign, RequestTime]`.
///
/// `sign` is `(Sign, RequestTime)` when the app has a token.
pub fn query(sdkappid: u64, command: CallbackCommand, client_ip: &str, platform: OptPlatform, sign: Option<(&str, u64)>) -> String {
    let mut q = format!(
        "SdkAppid={sdkappid}&CallbackCommand={}&contenttype=json&ClientIP={}&OptPlatform={}",
        command.as_str(),
        encode_component(client_ip),
        platform.as_str()
    );
    if let Some((sign, time)) = sign {
        q.push_str(&format!("&Sign={sign}&RequestTime={time}"));
    }
    q
}

/// Appends the webhook query to a configured URL, keeping a query string it already has.
pub fn url_with_query(base: &str, query: &str) -> String {
    let (base, fragment) = match base.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (base, None),
    };
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let mut u = format!("{base}{sep}{query}");
    if let Some(f) = fragment {
        u.push('#');
        u.push_str(f);
    }
    u
}

/// Percent-encodes the few characters that can appear in an address (IPv6 scope ids, brackets).
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The body of `Follow.CallbackAfterFollowAdd`, byte for byte:
/// `{"CallbackCommand":…,"From_Account":…,"FollowList":[{"To_Account":…}],"EventTime":…}`.
pub fn follow_add_body<S: AsRef<str>>(from: &str, targets: &[S], event_time_ms: u64) -> String {
    let mut b = body_head(CallbackCommand::FollowAdd, from);
    b.push_str(",\"FollowList\":[");
    for (i, t) in targets.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        b.push_str("{\"To_Account\":");
        push_json_str(&mut b, t.as_ref());
        b.push('}');
    }
    b.push_str(&format!("],\"EventTime\":{event_time_ms}}}"));
    b
}

/// The body of `Follow.CallbackAfterFollowDelete`, byte for byte:
/// `{"CallbackCommand":…,"From_Account":…,"To_Account":["…"],"EventTime":…}`.
pub fn follow_delete_body<S: AsRef<str>>(from: &str, targets: &[S], event_time_ms: u64) -> String {
    let mut b = body_head(CallbackCommand::FollowDelete, from);
    b.push_str(",\"To_Account\":[");
    for (i, t) in targets.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        push_json_str(&mut b, t.as_ref());
    }
    b.push_str(&format!("],\"EventTime\":{event_time_ms}}}"));
    b
}

/// The body for either command.
pub fn body<S: AsRef<str>>(command: CallbackCommand, from: &str, targets: &[S], event_time_ms: u64) -> String {
    match command {
        CallbackCommand::FollowAdd => follow_add_body(from, targets, event_time_ms),
        CallbackCommand::FollowDelete => follow_delete_body(from, targets, event_time_ms),
    }
}

fn body_head(command: CallbackCommand, from: &str) -> String {
    let mut b = String::with_capacity(128);
    b.push_str("{\"CallbackCommand\":\"");
    b.push_str(command.as_str());
    b.push_str("\",\"From_Account\":");
    push_json_str(&mut b, from);
    b
}

fn push_json_str(b: &mut String, s: &str) {
    b.push_str(&serde_json::to_string(s).expect("a string serialises"));
}

/// The acknowledgement a receiver answers with: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`.
pub const RESPONSE_OK: &str = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_keeps_existing_query() {
        assert_eq!(url_with_query("http://h/cb", "a=1"), "http://h/cb?a=1");
        assert_eq!(url_with_query("http://h/cb?k=v", "a=1"), "http://h/cb?k=v&a=1");
        assert_eq!(url_with_query("http://h/cb?", "a=1"), "http://h/cb?a=1");
        assert_eq!(url_with_query("http://h/cb?k=v#frag", "a=1"), "http://h/cb?k=v&a=1#frag");
    }

    #[test]
    fn ipv6_client_ip_is_encoded() {
        let q = query(1, CallbackCommand::FollowAdd, "fe80::1%eth0", OptPlatform::Web, None);
        assert!(q.contains("ClientIP=fe80::1%25eth0&"), "{q}");
    }
}
