//! Values that can only be built by parsing: [`UserId`], [`CallbackCommand`], [`OptPlatform`].

use std::fmt;

/// A Chat UserID: 1 to 32 bytes of printable ASCII (0x20 to 0x7e), per protocol.md §5.1.
///
/// Once parsed, nothing downstream re-validates it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

/// Why a string is not a valid [`UserId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserId {
    /// The string is empty.
    #[error("UserID is empty")]
    Empty,
    /// More than 32 bytes.
    #[error("UserID is {0} bytes long; the limit is 32")]
    TooLong(usize),
    /// A byte outside printable ASCII.
    #[error("UserID contains a character outside printable ASCII")]
    BadChar,
}

impl UserId {
    /// The longest UserID, in bytes.
    pub const MAX_LEN: usize = 32;

    /// Parses a UserID, refusing empty, over-long and non-printable ones.
    pub fn parse(s: &str) -> Result<Self, InvalidUserId> {
        if s.is_empty() {
            return Err(InvalidUserId::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(InvalidUserId::TooLong(s.len()));
        }
        if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(InvalidUserId::BadChar);
        }
        Ok(UserId(s.to_owned()))
    }

    /// The UserID as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The UserID as an owned string, without a copy.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Serialised as the plain string.
impl serde::Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The two Follow webhooks (protocol.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallbackCommand {
    /// `Follow.CallbackAfterFollowAdd`: body lists `FollowList: [{"To_Account": …}]`.
    FollowAdd,
    /// `Follow.CallbackAfterFollowDelete`: body lists `To_Account: ["…"]`.
    FollowDelete,
}

impl CallbackCommand {
    /// Every command, in a fixed order.
    pub const ALL: [CallbackCommand; 2] = [CallbackCommand::FollowAdd, CallbackCommand::FollowDelete];

    /// The exact wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackCommand::FollowAdd => "Follow.CallbackAfterFollowAdd",
            CallbackCommand::FollowDelete => "Follow.CallbackAfterFollowDelete",
        }
    }

    /// Parses the exact wire name; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Serialised as the wire name.
impl serde::Serialize for CallbackCommand {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for CallbackCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The platform of the client that caused an event (protocol.md §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptPlatform {
    /// The admin REST API.
    RestApi,
    /// Web SDK.
    Web,
    /// Android SDK.
    Android,
    /// iOS SDK.
    Ios,
    /// Windows SDK.
    Windows,
    /// macOS SDK.
    MacOs,
    /// iPad SDK.
    IPad,
    /// Anything else.
    Unknown,
}

impl OptPlatform {
    /// The exact wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            OptPlatform::RestApi => "RESTAPI",
            OptPlatform::Web => "Web",
            OptPlatform::Android => "Android",
            OptPlatform::Ios => "iOS",
            OptPlatform::Windows => "Windows",
            OptPlatform::MacOs => "macOS",
            OptPlatform::IPad => "iPad",
            OptPlatform::Unknown => "Unknown",
        }
    }

    /// Parses a wire value. `IOS` (the `State.StateChange` spelling) is accepted as iOS;
    /// anything unrecognised is [`OptPlatform::Unknown`].
    pub fn parse(s: &str) -> Self {
        match s {
            "RESTAPI" => OptPlatform::RestApi,
            "Web" => OptPlatform::Web,
            "Android" => OptPlatform::Android,
            "iOS" | "IOS" => OptPlatform::Ios,
            "Windows" => OptPlatform::Windows,
            "macOS" => OptPlatform::MacOs,
            "iPad" => OptPlatform::IPad,
            _ => OptPlatform::Unknown,
        }
    }
}

/// Serialised as the wire value.
impl serde::Serialize for OptPlatform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for OptPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "openapi")]
mod schemas {
    use super::{CallbackCommand, OptPlatform, UserId};
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;

    impl utoipa::PartialSchema for UserId {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("A UserID: 1 to 32 bytes of printable ASCII."))
                .min_length(Some(1))
                .max_length(Some(UserId::MAX_LEN))
                .pattern(Some("^[\\x20-\\x7e]+$"))
                .examples(["alice"])
                .into()
        }
    }
    impl utoipa::ToSchema for UserId {}

    impl utoipa::PartialSchema for CallbackCommand {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("A Follow webhook."))
                .enum_values(Some(CallbackCommand::ALL.map(CallbackCommand::as_str)))
                .into()
        }
    }
    impl utoipa::ToSchema for CallbackCommand {}

    impl utoipa::PartialSchema for OptPlatform {
        fn schema() -> RefOr<Schema> {
            let all = [
                OptPlatform::RestApi,
                OptPlatform::Web,
                OptPlatform::Android,
                OptPlatform::Ios,
                OptPlatform::Windows,
                OptPlatform::MacOs,
                OptPlatform::IPad,
                OptPlatform::Unknown,
            ];
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("The platform of the client that caused an event."))
                .enum_values(Some(all.map(OptPlatform::as_str)))
                .into()
        }
    }
    impl utoipa::ToSchema for OptPlatform {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_limits() {
        assert!(UserId::parse("a").is_ok());
        assert!(UserId::parse(&"x".repeat(32)).is_ok());
        assert_eq!(UserId::parse(&"x".repeat(33)), Err(InvalidUserId::TooLong(33)));
        assert_eq!(UserId::parse(""), Err(InvalidUserId::Empty));
        assert_eq!(UserId::parse("a\nb"), Err(InvalidUserId::BadChar));
        assert_eq!(UserId::parse("é"), Err(InvalidUserId::BadChar));
        assert!(UserId::parse("with space ~").is_ok());
    }

    #[test]
    fn commands_and_platforms_round_trip() {
        for c in CallbackCommand::ALL {
            assert_eq!(CallbackCommand::parse(c.as_str()), Some(c));
        }
        assert_eq!(CallbackCommand::parse("Follow.Nope"), None);
        assert_eq!(OptPlatform::parse("IOS"), OptPlatform::Ios);
        assert_eq!(OptPlatform::parse("Mac"), OptPlatform::Unknown);
        assert_eq!(OptPlatform::parse("macOS").as_str(), "macOS");
    }
}
