//! The console's settings: the admin token that turns it on, and its bounds.

use std::fmt;

use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::feed::FeedLimits;
use crate::config::ConfigError;

/// Shortest token accepted: long enough that guessing it over HTTP is hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

/// The console's admin token (`console_token`, `BROKER_CONSOLE_TOKEN`). Never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ConsoleToken(String);

impl ConsoleToken {
    pub fn new(token: String) -> Result<Self, ConfigError> {
        if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ConfigError(format!(
                "console_token must be at least {MIN_TOKEN_LEN} characters without spaces or control characters"
            )));
        }
        Ok(Self(token))
    }

    /// Compares in constant time (only the length can be told apart).
    pub fn matches(&self, offered: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(offered).into()
    }

    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ConsoleToken {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, ConfigError> {
        Self::new(s)
    }
}

impl fmt::Debug for ConsoleToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConsoleToken(<redacted>)")
    }
}

/// `[console]`: how much work an open console may cause.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Log events built per second over all apps; more are skipped and the page shows how many.
    pub events_per_second: u32,
    /// Events an open page may lag behind before it loses the oldest (it shows how many).
    pub buffer: usize,
    /// Consoles open at once; one more gets 429.
    pub max_viewers: usize,
    /// Seconds of graph history kept per app.
    pub history_secs: usize,
    /// Most channels one channel-list answer holds (the page says when there are more).
    pub max_channels_listed: usize,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self { events_per_second: 1000, buffer: 1024, max_viewers: 4, history_secs: 300, max_channels_listed: 500 }
    }
}

impl ConsoleSettings {
    /// Reads `BROKER_CONSOLE_TOKEN` into `token` and checks the bounds.
    pub fn apply_env(&self, token: &mut Option<ConsoleToken>, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("BROKER_CONSOLE_TOKEN") {
            *token = Some(ConsoleToken::new(v).map_err(|e| ConfigError(format!("BROKER_CONSOLE_TOKEN: {e}")))?);
        }
        let positive = [
            ("events_per_second", self.events_per_second as usize),
            ("buffer", self.buffer),
            ("max_viewers", self.max_viewers),
            ("history_secs", self.history_secs),
            ("max_channels_listed", self.max_channels_listed),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(ConfigError(format!("console.{name} must be at least 1"))),
            None => Ok(()),
        }
    }

    pub fn feed_limits(&self) -> FeedLimits {
        FeedLimits { events_per_second: self.events_per_second, buffer: self.buffer, max_viewers: self.max_viewers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_hidden_and_compared_exactly() {
        assert!(ConsoleToken::new("short".into()).is_err());
        assert!(ConsoleToken::new("has a space in it!!".into()).is_err());
        let t = ConsoleToken::new("0123456789abcdef".into()).unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeF"));
        assert!(!t.matches(b"0123456789abcdef0"));
        assert!(!t.matches(b""));
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn env_and_bounds() {
        let s = ConsoleSettings::default();
        let mut token = None;
        s.apply_env(&mut token, |k| (k == "BROKER_CONSOLE_TOKEN").then(|| "abcdefghijklmnopq".to_owned())).unwrap();
        assert!(token.unwrap().matches(b"abcdefghijklmnopq"));
        let e = s.apply_env(&mut None, |_| Some("x".into())).unwrap_err();
        assert!(e.0.contains("BROKER_CONSOLE_TOKEN"), "{e}");
        let zero = ConsoleSettings { buffer: 0, ..ConsoleSettings::default() };
        assert!(zero.apply_env(&mut None, |_| None).unwrap_err().0.contains("console.buffer"));
    }
}
