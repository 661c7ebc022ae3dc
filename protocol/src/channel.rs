//! Channel and event names, and what a channel's prefix makes it.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_CHANNEL_NAME_LEN, MAX_EVENT_NAME_LEN};

/// Prefix of the per-user channel a signed-in connection joins (`sendToUser`).
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// A validated channel name. Cheap to clone: the text is shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// What a channel's prefix makes it. Cache behaviour is orthogonal: see [`ChannelName::is_cache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// No prefix, or `cache-`: anyone may subscribe.
    Public,
    /// `private-`, `private-cache-`: a signature over `socket_id:channel` is required.
    Private,
    /// `private-encrypted-`, `private-encrypted-cache-`: like private; payloads are ciphertext.
    PrivateEncrypted,
    /// `presence-`, `presence-cache-`: signed, and the subscriber joins as a user.
    Presence,
    /// `#server-to-user-{id}`: only the connection signed in as that user.
    ServerToUser,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {0} characters")]
    TooLong(usize),
    #[error("name contains a character outside A-Z a-z 0-9 _ - = @ , . ;")]
    BadCharacter,
}

impl ChannelName {
    /// Parses with the protocol's default maximum length (164).
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        Self::parse_with_max(s, MAX_CHANNEL_NAME_LEN)
    }

    /// Parses with an app-specific maximum length.
    pub fn parse_with_max(s: &str, max_len: usize) -> Result<Self, InvalidName> {
        if s.is_empty() {
            return Err(InvalidName::Empty);
        }
        if s.len() > max_len {
            return Err(InvalidName::TooLong(max_len));
        }
        // `#` is reserved for the server-to-user namespace; the user id after it
        // follows the ordinary character rules.
        let rest = s.strip_prefix(SERVER_TO_USER_PREFIX).unwrap_or(s);
        if rest.is_empty() || !rest.bytes().all(allowed_byte) {
            return Err(InvalidName::BadCharacter);
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> ChannelKind {
        let s = self.as_str();
        if s.starts_with("private-encrypted-") {
            ChannelKind::PrivateEncrypted
        } else if s.starts_with("private-") {
            ChannelKind::Private
        } else if s.starts_with("presence-") {
            ChannelKind::Presence
        } else if s.starts_with(SERVER_TO_USER_PREFIX) {
            ChannelKind::ServerToUser
        } else {
            ChannelKind::Public
        }
    }

    /// Cache channels keep their last event and replay it to new subscribers.
    pub fn is_cache(&self) -> bool {
        let s = self.as_str();
        [
            "cache-",
            "private-cache-",
            "private-encrypted-cache-",
            "presence-cache-",
        ]
        .iter()
        .any(|p| s.starts_with(p))
    }

    /// The user id of a `#server-to-user-{id}` channel.
    pub fn server_to_user_id(&self) -> Option<&str> {
        self.as_str().strip_prefix(SERVER_TO_USER_PREFIX)
    }

    pub fn for_user(user_id: &str) -> Result<Self, InvalidName> {
        Self::parse_with_max(&format!("{SERVER_TO_USER_PREFIX}{user_id}"), usize::MAX)
    }
}

fn allowed_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

impl ChannelKind {
    /// Whether subscribing needs an `auth` signature.
    pub fn needs_auth(self) -> bool {
        matches!(
            self,
            Self::Private | Self::PrivateEncrypted | Self::Presence
        )
    }

    /// Client events are allowed on private and presence channels only; on
    /// encrypted channels they would travel as plaintext, so they are refused.
    pub fn allows_client_events(self) -> bool {
        matches!(self, Self::Private | Self::Presence)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelName({:?})", &*self.0)
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for ChannelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A validated event name: non-empty, at most 200 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventName(Arc<str>);

impl EventName {
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        Self::parse_with_max(s, MAX_EVENT_NAME_LEN)
    }

    pub fn parse_with_max(s: &str, max_len: usize) -> Result<Self, InvalidName> {
        if s.is_empty() {
            return Err(InvalidName::Empty);
        }
        if s.len() > max_len {
            return Err(InvalidName::TooLong(max_len));
        }
        if s.chars().any(char::is_control) {
            return Err(InvalidName::BadCharacter);
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Events clients may send to each other.
    pub fn is_client_event(&self) -> bool {
        self.0.starts_with("client-")
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_allowed_character() {
        assert!(ChannelName::parse("AZaz09_-=@,.;").is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(ChannelName::parse(""), Err(InvalidName::Empty));
        assert_eq!(ChannelName::parse("a b"), Err(InvalidName::BadCharacter));
        assert_eq!(ChannelName::parse("a#b"), Err(InvalidName::BadCharacter));
        assert_eq!(
            ChannelName::parse("#server-to-user-"),
            Err(InvalidName::BadCharacter)
        );
        assert_eq!(ChannelName::parse("é"), Err(InvalidName::BadCharacter));
        let long = "a".repeat(165);
        assert_eq!(ChannelName::parse(&long), Err(InvalidName::TooLong(164)));
        assert!(ChannelName::parse(&long[..164]).is_ok());
        assert!(ChannelName::parse_with_max("abcd", 3).is_err());
    }

    #[test]
    fn kinds_follow_prefixes() {
        let k = |s: &str| ChannelName::parse(s).unwrap().kind();
        assert_eq!(k("news"), ChannelKind::Public);
        assert_eq!(k("cache-news"), ChannelKind::Public);
        assert_eq!(k("private-a"), ChannelKind::Private);
        assert_eq!(k("private-cache-a"), ChannelKind::Private);
        assert_eq!(k("private-encrypted-a"), ChannelKind::PrivateEncrypted);
        assert_eq!(
            k("private-encrypted-cache-a"),
            ChannelKind::PrivateEncrypted
        );
        assert_eq!(k("presence-a"), ChannelKind::Presence);
        assert_eq!(k("presence-cache-a"), ChannelKind::Presence);
        assert_eq!(k("#server-to-user-42"), ChannelKind::ServerToUser);
        // A prefix without its dash is just a public name.
        assert_eq!(k("privatechat"), ChannelKind::Public);
    }

    #[test]
    fn cache_detection() {
        let c = |s: &str| ChannelName::parse(s).unwrap().is_cache();
        assert!(c("cache-x") && c("private-cache-x") && c("presence-cache-x"));
        assert!(c("private-encrypted-cache-x"));
        assert!(!c("x-cache") && !c("private-x") && !c("cachex"));
    }

    #[test]
    fn server_to_user() {
        let ch = ChannelName::for_user("42").unwrap();
        assert_eq!(ch.as_str(), "#server-to-user-42");
        assert_eq!(ch.server_to_user_id(), Some("42"));
        assert!(!ChannelKind::ServerToUser.allows_client_events());
    }

    #[test]
    fn event_names() {
        assert!(EventName::parse("client-typing").unwrap().is_client_event());
        assert!(!EventName::parse("an_event").unwrap().is_client_event());
        assert!(EventName::parse("").is_err());
        assert!(EventName::parse(&"e".repeat(201)).is_err());
        assert!(EventName::parse("a\nb").is_err());
    }
}
