//! Identifiers and credentials of an app: the unit that isolates tenants.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The app id used in REST paths (`/apps/{id}/events`).
///
/// The official Python SDK accepts only numeric ids, so apps are usually
/// numbered, but any non-empty string of `[A-Za-z0-9_-]` is accepted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);

/// The public key clients connect with (`/app/{key}`) and that prefixes signatures.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppKey(String);

/// The shared secret. Its `Debug` never prints the value, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AppSecret(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidIdentifier(&'static str);

fn simple_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl AppId {
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidIdentifier> {
        let s = s.into();
        if simple_token(&s) {
            Ok(Self(s))
        } else {
            Err(InvalidIdentifier(
                "app id must be 1-128 characters of A-Z a-z 0-9 _ -",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AppKey {
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidIdentifier> {
        let s = s.into();
        if simple_token(&s) {
            Ok(Self(s))
        } else {
            Err(InvalidIdentifier(
                "app key must be 1-128 characters of A-Z a-z 0-9 _ -",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AppSecret {
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidIdentifier> {
        let s = s.into();
        if s.is_empty() {
            Err(InvalidIdentifier("app secret must not be empty"))
        } else {
            Ok(Self(s))
        }
    }
    /// The secret's bytes, for HMAC keys only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppSecret(<redacted>)")
    }
}

macro_rules! string_newtype_impls {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = InvalidIdentifier;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
string_newtype_impls!(AppId);
string_newtype_impls!(AppKey);

impl TryFrom<String> for AppSecret {
    type Error = InvalidIdentifier;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<AppId> for String {
    fn from(v: AppId) -> String {
        v.0
    }
}
impl From<AppKey> for String {
    fn from(v: AppKey) -> String {
        v.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_path_characters() {
        assert!(AppId::new("1").is_ok());
        assert!(AppId::new("my-app_2").is_ok());
        assert!(AppId::new("").is_err());
        assert!(AppId::new("a/b").is_err());
        assert!(AppKey::new("key with space").is_err());
    }

    #[test]
    fn secret_is_redacted_in_debug() {
        let s = AppSecret::new("hunter2").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
