//! Cursors and event ids a client hands back: follow_get's `StartCursor` (`Cursor::decode`) and
//! the admin API's `WebhookId`. The same bytes are also read as a position (two big-endian i64s),
//! to check that every position survives `encode` and `decode`.
//!
//! Invariants: nothing panics; a cursor that decodes is the one encoding of its position
//! (`encode(decode(s)) == s`, so a client cannot make two strings for one page); every position
//! round-trips; a parsed `WebhookId` prints as a string that parses back to it.
#![no_main]

use followd_graph::outbox::WebhookId;
use followd_graph::Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 16 {
        let c = Cursor {
            key: i64::from_be_bytes(data[..8].try_into().expect("8 bytes")),
            uid: i64::from_be_bytes(data[8..16].try_into().expect("8 bytes")),
        };
        assert_eq!(Cursor::decode(&c.encode()), Ok(Some(c)));
    }
    let Ok(s) = std::str::from_utf8(data) else { return };
    match Cursor::decode(s) {
        Ok(Some(c)) => assert_eq!(c.encode(), s, "two strings decode to one cursor"),
        Ok(None) => assert!(s.is_empty()),
        Err(_) => assert!(!s.is_empty()),
    }
    if let Some(w) = WebhookId::parse(s) {
        assert_eq!(WebhookId::parse(&w.to_string()), Some(w));
    }
});
