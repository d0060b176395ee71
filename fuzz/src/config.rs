//! Finding secrets of a config text in what followd says about it, for the `config` target.
//!
//! The target does not know which part of an arbitrary text a person meant as a secret, so it takes
//! the string values a TOML parser finds (those under `secret_key`, `token`, `signing_secret` and
//! `database_url` are the secrets) and looks for their pieces in the message. A piece can be in a
//! message for an innocent reason: it is also a key that the message names, or the fuzzer copied
//! the message's own words into a value (libFuzzer learns the bytes the check compares). So a piece
//! found in the message counts as a leak only if it is gone from the message when that one place of
//! the input is changed to other characters: the message showed the input, not its own words.

/// The keys whose values are secrets.
pub const SECRET_KEYS: [&str; 4] = ["secret_key", "token", "signing_secret", "database_url"];

/// Pieces shorter than this are not looked for: too many match ordinary words by chance.
const MIN_PIECE: usize = 6;

/// A string value of the text and the key it is under.
pub struct StringValue {
    /// The key (the last one of its path).
    pub key: String,
    /// The value, unescaped.
    pub value: String,
}

impl StringValue {
    /// Whether the value is one of the config's secrets.
    pub fn is_secret(&self) -> bool {
        SECRET_KEYS.contains(&self.key.as_str())
    }
}

/// Every string value of a TOML text (none when it is not TOML), at any depth, and the integers
/// under secret keys.
pub fn string_values(text: &str) -> Vec<StringValue> {
    fn walk(key: &str, v: &toml::Value, out: &mut Vec<StringValue>) {
        match v {
            toml::Value::String(s) => out.push(StringValue { key: key.to_owned(), value: s.clone() }),
            // A key written without quotes is a number, still a secret (and shown as digits).
            toml::Value::Integer(n) if SECRET_KEYS.contains(&key) => out.push(StringValue { key: key.to_owned(), value: n.to_string() }),
            toml::Value::Array(a) => a.iter().for_each(|v| walk(key, v, out)),
            toml::Value::Table(t) => t.iter().for_each(|(k, v)| walk(k, v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(t) = text.parse::<toml::Table>() {
        t.iter().for_each(|(k, v)| walk(k, v, &mut out));
    }
    out
}

/// Panics when a piece of `value` (cut at quotes, backslashes and control characters, which a
/// message may escape) is in `msg` because it is in `text`. `say` computes the message for a text.
pub fn assert_no_leak(text: &str, msg: &str, value: &str, say: impl Fn(&str) -> String) {
    for piece in value.split(|c: char| c == '"' || c == '\\' || c.is_control()) {
        // A piece not written as such in the text (escaped) or written more than once cannot be
        // changed in one place; those are skipped.
        if piece.len() < MIN_PIECE || !msg.contains(piece) || text.matches(piece).count() != 1 {
            continue;
        }
        let other: String = piece.chars().map(|c| if c == 'x' { 'y' } else { 'x' }).collect();
        let changed = say(&text.replacen(piece, &other, 1));
        assert!(changed.contains(piece), "the message shows a value of the input ({piece:?}): {msg}");
    }
}
