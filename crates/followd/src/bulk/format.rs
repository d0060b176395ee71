//! The file formats of `followd export` and `followd import`.
//!
//! NDJSON, one JSON object a line (documented in the README, "Moving a graph"):
//!
//! ```text
//! {"Version":1,"Format":"followd-graph","SdkAppID":1400000000}
//! {"UserID":"alice","Nick":"Alice","FaceUrl":"https://example.com/a.png"}
//! {"From_Account":"alice","To_Account":"bob","FollowTime":1767225600,"FollowTimeUs":1767225600123456}
//! {"End":true,"Accounts":1,"Follows":1}
//! ```
//!
//! `FollowTime` is in seconds like the REST API's; `FollowTimeUs` carries the full precision the
//! server keeps (4 µs), so the order of a user's lists survives a round trip. The last line tells how
//! many records came before it: an export without it was cut short.
//!
//! Import also takes plain CSV lines `From_Account,To_Account[,FollowTime]` (seconds, optionally with
//! a fraction: `1767225600.25`), with an optional header line `From_Account,To_Account,...`.

use followd_protocol::UserId;
use serde::Deserialize;
use std::io::Write;

use super::{WireAccount, WireFollow};

/// The format's version (the `Version` of the first line).
pub const VERSION: u64 = followd_graph::bulk::FORMAT_VERSION;

/// Writes the first line of an export.
pub fn header(out: &mut Vec<u8>, sdkappid: u64) {
    let _ = writeln!(out, r#"{{"Version":{VERSION},"Format":"followd-graph","SdkAppID":{sdkappid}}}"#);
}

/// Writes a JSON string (escaped as needed).
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("a string serialises");
    }
}

/// Writes an account line.
pub fn account(out: &mut Vec<u8>, user: &str, nick: Option<&str>, face_url: Option<&str>) {
    out.extend_from_slice(br#"{"UserID":"#);
    string(out, user);
    if let Some(n) = nick {
        out.extend_from_slice(br#","Nick":"#);
        string(out, n);
    }
    if let Some(f) = face_url {
        out.extend_from_slice(br#","FaceUrl":"#);
        string(out, f);
    }
    out.extend_from_slice(b"}\n");
}

/// Writes a follow line; `us` is the follow time in µs since 1970.
pub fn follow(out: &mut Vec<u8>, from: &str, to: &str, us: i64) {
    out.extend_from_slice(br#"{"From_Account":"#);
    string(out, from);
    out.extend_from_slice(br#","To_Account":"#);
    string(out, to);
    let _ = write!(out, r#","FollowTime":{},"FollowTimeUs":{us}}}"#, us.div_euclid(1_000_000));
    out.push(b'\n');
}

/// Writes the last line.
pub fn end(out: &mut Vec<u8>, accounts: u64, follows: u64) {
    let _ = writeln!(out, r#"{{"End":true,"Accounts":{accounts},"Follows":{follows}}}"#);
}

/// One parsed line of an import file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The header (`Version`), or a CSV header row, or an empty line: nothing to import.
    Skip,
    /// An account with its profile.
    Account(WireAccount),
    /// A follow.
    Follow(WireFollow),
    /// The last line of an export, with its counts.
    End {
        /// Accounts the export had.
        accounts: u64,
        /// Follows the export had.
        follows: u64,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    #[serde(rename = "Version")]
    version: Option<u64>,
    #[serde(rename = "Format")]
    format: Option<String>,
    #[serde(rename = "SdkAppID")]
    _sdkappid: Option<u64>,
    #[serde(rename = "UserID")]
    user_id: Option<String>,
    #[serde(rename = "Nick")]
    nick: Option<String>,
    #[serde(rename = "FaceUrl")]
    face_url: Option<String>,
    #[serde(rename = "From_Account")]
    from: Option<String>,
    #[serde(rename = "To_Account")]
    to: Option<String>,
    #[serde(rename = "FollowTime")]
    follow_time: Option<i64>,
    #[serde(rename = "FollowTimeUs")]
    follow_time_us: Option<i64>,
    #[serde(rename = "End")]
    end: Option<bool>,
    #[serde(rename = "Accounts")]
    accounts: Option<u64>,
    #[serde(rename = "Follows")]
    follows: Option<u64>,
}

fn user(field: &str, v: &str) -> Result<String, String> {
    UserId::parse(v).map(|u| u.to_string()).map_err(|e| format!("{field}: {e}"))
}

/// Checks a follow time (µs since 1970): not before 1970, not in the future.
fn time(us: i64, now_us: i64) -> Result<i64, String> {
    if us < 0 {
        return Err("FollowTime is before 1970".into());
    }
    if us > now_us + 60_000_000 {
        return Err("FollowTime is in the future".into());
    }
    Ok(us)
}

/// Parses one line; `now_us` bounds follow times.
pub fn parse(line: &str, now_us: i64) -> Result<Line, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(Line::Skip);
    }
    if line.starts_with('{') {
        return parse_json(line, now_us);
    }
    parse_csv(line, now_us)
}

fn parse_json(line: &str, now_us: i64) -> Result<Line, String> {
    let j: JsonLine = serde_json::from_str(line).map_err(|e| format!("not a valid record: {e}"))?;
    if let Some(v) = j.version {
        if v != VERSION {
            return Err(format!("format version {v} is not supported (this followd reads version {VERSION})"));
        }
        if j.format.as_deref().is_some_and(|f| f != "followd-graph") {
            return Err("Format is not followd-graph".into());
        }
        return Ok(Line::Skip);
    }
    if j.end == Some(true) {
        return Ok(Line::End { accounts: j.accounts.unwrap_or(0), follows: j.follows.unwrap_or(0) });
    }
    if let Some(u) = j.user_id {
        if j.from.is_some() || j.to.is_some() {
            return Err("a line is either an account (UserID) or a follow (From_Account, To_Account), not both".into());
        }
        return Ok(Line::Account(WireAccount { user_id: user("UserID", &u)?, nick: j.nick, face_url: j.face_url }));
    }
    match (j.from, j.to) {
        (Some(f), Some(t)) => {
            let us = match (j.follow_time_us, j.follow_time) {
                (Some(us), _) => Some(time(us, now_us)?),
                (None, Some(s)) => Some(time(s.saturating_mul(1_000_000), now_us)?),
                (None, None) => None,
            };
            Ok(Line::Follow(WireFollow { from: user("From_Account", &f)?, to: user("To_Account", &t)?, time_us: us }))
        }
        (Some(_), None) => Err("To_Account is missing".into()),
        (None, Some(_)) => Err("From_Account is missing".into()),
        (None, None) => Err("the line is neither an account (UserID) nor a follow (From_Account, To_Account)".into()),
    }
}

fn parse_csv(line: &str, now_us: i64) -> Result<Line, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if fields.first() == Some(&"From_Account") {
        return Ok(Line::Skip);
    }
    if !(2..=3).contains(&fields.len()) {
        return Err(format!("expected From_Account,To_Account[,FollowTime], found {} fields", fields.len()));
    }
    let us = match fields.get(2).filter(|s| !s.is_empty()) {
        None => None,
        Some(t) => Some(time(csv_time(t).ok_or_else(|| format!("FollowTime {t:?} is not a number of seconds"))?, now_us)?),
    };
    Ok(Line::Follow(WireFollow { from: user("From_Account", fields[0])?, to: user("To_Account", fields[1])?, time_us: us }))
}

/// Seconds with an optional fraction of up to 6 digits, as µs.
fn csv_time(t: &str) -> Option<i64> {
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().ok()? };
    int.parse::<i64>().ok()?.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000;

    #[test]
    fn export_lines_parse_back() {
        let mut out = Vec::new();
        header(&mut out, 7);
        account(&mut out, "a\"b", Some("Ni\nck"), None);
        follow(&mut out, "a\"b", "c", 1_767_225_600_123_456);
        end(&mut out, 1, 1);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Line> = text.lines().map(|l| parse(l, NOW).unwrap()).collect();
        assert_eq!(lines[0], Line::Skip);
        assert_eq!(lines[1], Line::Account(WireAccount { user_id: "a\"b".into(), nick: Some("Ni\nck".into()), face_url: None }));
        assert_eq!(lines[2], Line::Follow(WireFollow { from: "a\"b".into(), to: "c".into(), time_us: Some(1_767_225_600_123_456) }));
        assert_eq!(lines[3], Line::End { accounts: 1, follows: 1 });
    }

    #[test]
    fn csv_and_bad_lines() {
        assert_eq!(parse("From_Account,To_Account,FollowTime", NOW), Ok(Line::Skip));
        assert_eq!(parse("a,b", NOW), Ok(Line::Follow(WireFollow { from: "a".into(), to: "b".into(), time_us: None })));
        assert_eq!(parse("a,b,12.5", NOW), Ok(Line::Follow(WireFollow { from: "a".into(), to: "b".into(), time_us: Some(12_500_000) })));
        assert!(parse("a", NOW).unwrap_err().contains("fields"));
        assert!(parse("a,b,x", NOW).unwrap_err().contains("FollowTime"));
        assert!(parse("a,,1", NOW).unwrap_err().contains("To_Account"));
        assert!(parse("a,b,99999999999", NOW).unwrap_err().contains("future"));
        assert!(parse(r#"{"From_Account":"a"}"#, NOW).unwrap_err().contains("To_Account is missing"));
        assert!(parse(r#"{"Version":2}"#, NOW).unwrap_err().contains("version 2"));
        assert!(parse(r#"{"From_Account":"a","To_Account":"b","Extra":1}"#, NOW).unwrap_err().contains("not a valid record"));
        assert!(parse("{not json", NOW).is_err());
    }
}
