//! The opaque keyset cursor of `follow_get`: the position `(key, uid)` of the last entry returned.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::{TimeKey, Uid};

/// A position in a list, newest first: entries strictly older than it come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The ordering key of the last entry returned.
    pub key: TimeKey,
    /// Its interned id (the tie-break).
    pub uid: Uid,
}

const VERSION: u8 = 1;

/// A `StartCursor` this server did not issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("StartCursor is not a cursor this server returned")]
pub struct BadCursor;

impl Cursor {
    /// Encodes the cursor as an opaque URL-safe string.
    pub fn encode(self) -> String {
        let mut b = Vec::with_capacity(17);
        b.push(VERSION);
        b.extend_from_slice(&self.key.to_be_bytes());
        b.extend_from_slice(&self.uid.to_be_bytes());
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Decodes a cursor made by [`Cursor::encode`]; `""` is the start (`None`).
    pub fn decode(s: &str) -> Result<Option<Cursor>, BadCursor> {
        if s.is_empty() {
            return Ok(None);
        }
        let b = URL_SAFE_NO_PAD.decode(s).map_err(|_| BadCursor)?;
        if b.len() != 17 || b[0] != VERSION {
            return Err(BadCursor);
        }
        let key = i64::from_be_bytes(b[1..9].try_into().map_err(|_| BadCursor)?);
        let uid = i64::from_be_bytes(b[9..17].try_into().map_err(|_| BadCursor)?);
        Ok(Some(Cursor { key, uid }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let c = Cursor { key: 1_700_000_000_123_456, uid: 42 };
        assert_eq!(Cursor::decode(&c.encode()), Ok(Some(c)));
        assert_eq!(Cursor::decode(""), Ok(None));
        assert!(Cursor::decode("nope").is_err());
        assert!(Cursor::decode("!!!").is_err());
    }
}
