//! Parsing request bodies at the edge: every field is checked once, with an error that names it.
//!
//! The pipeline turns the bytes into a [`Body`] (a JSON object, `60003` otherwise); each command
//! ([`crate::cmd`]) reads its fields through the typed accessors here, which give every API the same
//! codes for the same mistake: a UserID that is not a string is `60015`, any other wrong field the
//! family's invalid-parameter code (`30001`, `70402`, `100002`).

use followd_protocol::api::{ApiError, Family};
use followd_protocol::{code, UserId};
use serde_json::{Map, Value};

/// A request body: a JSON object.
pub struct Body {
    map: Map<String, Value>,
    family: Family,
}

impl Body {
    /// Parses the raw bytes: empty or malformed → `60003`, not an object → `60003`.
    pub fn parse(bytes: &[u8], family: Family) -> Result<Body, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(code::JSON_PARSE, "request body is empty; send a JSON object such as {}"));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Body { map, family }),
            Ok(_) => Err(ApiError::new(code::JSON_PARSE, "request body must be a JSON object")),
            Err(e) => Err(ApiError::new(code::JSON_PARSE, format!("request body is not valid JSON: {e}"))),
        }
    }

    /// The family whose codes this body's errors use.
    pub fn family(&self) -> Family {
        self.family
    }

    /// An invalid-parameter error of this body's family.
    pub fn invalid(&self, info: String) -> ApiError {
        ApiError::new(self.family.invalid(), info)
    }

    fn user_value(&self, v: &Value, what: &str) -> Result<UserId, ApiError> {
        let s = v.as_str().ok_or_else(|| ApiError::new(code::USERID_NOT_STRING, format!("{what} must be a string")))?;
        UserId::parse(s).map_err(|e| self.invalid(format!("{what}: {e}")))
    }

    /// A required UserID field.
    pub fn user(&self, key: &str) -> Result<UserId, ApiError> {
        let v = self.map.get(key).ok_or_else(|| self.invalid(format!("{key} is required")))?;
        self.user_value(v, key)
    }

    /// An optional UserID field.
    pub fn opt_user(&self, key: &str) -> Result<Option<UserId>, ApiError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.user_value(v, key).map(Some),
        }
    }

    /// A required, non-empty array of at most `max` entries.
    pub fn array(&self, key: &str, max: usize) -> Result<&Vec<Value>, ApiError> {
        let v = self.map.get(key).ok_or_else(|| self.invalid(format!("{key} is required")))?;
        let a = v.as_array().ok_or_else(|| self.invalid(format!("{key} must be an array")))?;
        if a.is_empty() {
            return Err(self.invalid(format!("{key} must not be empty")));
        }
        if a.len() > max {
            return Err(self.invalid(format!("{key} has {} entries; the limit is {max}", a.len())));
        }
        Ok(a)
    }

    /// A required array of UserID strings.
    pub fn users(&self, key: &str, max: usize) -> Result<Vec<UserId>, ApiError> {
        self.array(key, max)?.iter().enumerate().map(|(i, v)| self.user_value(v, &format!("{key}[{i}]"))).collect()
    }

    /// A required array of objects, each holding a UserID under `field` (`FollowItem[].To_Account`).
    pub fn object_users(&self, key: &str, field: &str, max: usize) -> Result<Vec<UserId>, ApiError> {
        self.array(key, max)?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let v = item.get(field).ok_or_else(|| self.invalid(format!("{key}[{i}].{field} is required")))?;
                self.user_value(v, &format!("{key}[{i}].{field}"))
            })
            .collect()
    }

    /// An optional non-negative integer.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| self.invalid(format!("{key} must be a non-negative integer"))),
        }
    }

    /// An optional integer.
    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| self.invalid(format!("{key} must be an integer"))),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.invalid(format!("{key} must be true or false"))),
        }
    }

    /// An optional array.
    pub fn opt_array(&self, key: &str) -> Result<Option<&Vec<Value>>, ApiError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_array().map(Some).ok_or_else(|| self.invalid(format!("{key} must be an array"))),
        }
    }

    /// An optional string.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.invalid(format!("{key} must be a string"))),
        }
    }
}
