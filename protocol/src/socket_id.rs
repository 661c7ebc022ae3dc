//! Socket ids: `{a}.{b}`, two unsigned integers, unique per connection.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Identifies one connection. Clients echo it back in auth requests and in
/// `socket_id` on triggers, which is how a sender excludes itself from delivery.
///
/// Stored as two integers rather than text: it is compared on every delivery
/// of an excluding trigger and kept once per connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    pub node: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid socket_id: expected two unsigned integers joined by a dot")]
pub struct InvalidSocketId;

impl SocketId {
    pub const fn new(node: u64, seq: u64) -> Self {
        Self { node, seq }
    }
}

impl FromStr for SocketId {
    type Err = InvalidSocketId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.split_once('.').ok_or(InvalidSocketId)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return Err(InvalidSocketId);
        }
        Ok(Self {
            node: a.parse().map_err(|_| InvalidSocketId)?,
            seq: b.parse().map_err(|_| InvalidSocketId)?,
        })
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.seq)
    }
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocketId({self})")
    }
}

impl Serialize for SocketId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SocketId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hands out socket ids for one broker process: a random node part, so that
/// ids from several nodes of a cluster do not collide, and a counter.
#[derive(Debug)]
pub struct SocketIdGenerator {
    node: u64,
    next: std::sync::atomic::AtomicU64,
}

impl SocketIdGenerator {
    pub fn new() -> Self {
        // Kept below 2^53 so JavaScript clients can hold either part as a number.
        let node = rand::random::<u64>() % 1_000_000_000;
        let start = rand::random::<u64>() % 1_000_000_000;
        Self {
            node,
            next: start.into(),
        }
    }

    pub fn next(&self) -> SocketId {
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        SocketId::new(self.node, seq)
    }
}

impl Default for SocketIdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let id: SocketId = "123.456".parse().unwrap();
        assert_eq!(id, SocketId::new(123, 456));
        assert_eq!(id.to_string(), "123.456");
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            "",
            "123",
            "123.",
            ".456",
            "12a.3",
            "1.2.3",
            "-1.2",
            " 1.2",
            "1.2 ",
            "99999999999999999999999.1",
        ] {
            assert!(bad.parse::<SocketId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn generator_is_unique() {
        let g = SocketIdGenerator::new();
        let a = g.next();
        let b = g.next();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<SocketId>().unwrap(), a);
    }
}
