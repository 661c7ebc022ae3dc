//! Channel history and connection recovery: the settings, the client's request
//! (the `history` field of `pusher:subscribe` data), the decision what to replay,
//! the two extra frames, and the REST query. Pure: the broker's stores use these.
//!
//! The wire contract (see the README, "Channel history and connection recovery"):
//! a client opts in per subscription by adding `"history": {...}` to the data of
//! `pusher:subscribe` (the subscription's signature does not cover it). For such
//! a subscription on a kept channel the broker then sends, after
//! `pusher_internal:subscription_succeeded`, one `pusher_internal:recovery` frame,
//! then the replayed events, then live ones; every kept event is preceded by a
//! `pusher_internal:position` frame carrying its position. Subscriptions without
//! the field get exactly the frames they got before.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{ChannelName, SocketId};

/// Where an event sits in its channel's history: 1 for the first event kept
/// since the channel's epoch began, then +1 per kept event, without gaps.
pub type Position = u64;

/// Longest epoch a client may send back, in characters (epochs the broker makes are shorter).
pub const MAX_EPOCH_LEN: usize = 64;

/// `history = { ... }` in an `[[apps]]` entry (or the app store's `history` column).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Channel name prefixes whose events are kept; `"*"` keeps every channel.
    pub channels: Vec<String>,
    /// Events kept per channel (the oldest go first).
    pub max_events: usize,
    /// Seconds an event is kept; a channel nobody publishes to for this long forgets its history.
    pub max_age_secs: u64,
    /// Keep client events too (they are relayed, and replayed, like server events).
    pub client_events: bool,
    /// Bytes of kept frames per app on one node (the in-memory store); over it the
    /// oldest events of the least recently published channels are dropped.
    pub max_bytes: usize,
    /// Most events one REST history page returns.
    pub max_page: usize,
    /// Most previous socket ids a resuming client may name for exclusion.
    pub max_socket_ids: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            max_events: 1000,
            max_age_secs: 300,
            client_events: false,
            max_bytes: 64 << 20,
            max_page: 100,
            max_socket_ids: 8,
        }
    }
}

impl HistoryConfig {
    /// Whether the channel's events are kept.
    pub fn keeps(&self, channel: &ChannelName) -> bool {
        // A user's own channel carries sign-in plumbing, never app history.
        channel.kind() != crate::ChannelKind::ServerToUser
            && self
                .channels
                .iter()
                .any(|p| p == "*" || channel.as_str().starts_with(p.as_str()))
    }

    /// Checks the numbers make sense (at least one event, one second, one byte, one page).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_events == 0 || self.max_age_secs == 0 || self.max_bytes == 0 {
            return Err(
                "history: max_events, max_age_secs and max_bytes must be at least 1".into(),
            );
        }
        if self.max_page == 0 {
            return Err("history: max_page must be at least 1".into());
        }
        Ok(())
    }
}

/// What a subscriber asked for in the `history` field of `pusher:subscribe` data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryRequest {
    /// `{}`: no replay, positions from now on (a first subscription).
    Positions,
    /// `{"epoch": e, "position": n, "socket_ids": [...]}`: every event after `n`.
    /// Events excluded from (or sent by) `socket_ids`, the client's previous
    /// connections, are not replayed (advisory: a client can only hurt itself).
    Resume {
        epoch: String,
        position: Position,
        socket_ids: Vec<SocketId>,
    },
    /// `{"rewind": {"count": n}}` or `{"rewind": {"seconds": s}}`: recent events first.
    Rewind(Rewind),
}

/// How far back a new subscriber asks to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewind {
    Count(usize),
    Seconds(u64),
}

/// Why a `history` field was refused (the subscription is refused with 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("history must be an object with epoch and position, or rewind, or nothing: {0}")]
    Shape(String),
    #[error("history.epoch is empty or longer than {MAX_EPOCH_LEN} characters")]
    Epoch,
    #[error("history.socket_ids names more than {0} socket ids")]
    TooManySocketIds(usize),
    #[error("history.socket_ids holds an invalid socket id")]
    SocketId,
    #[error("history.rewind asks for more than {0} events")]
    RewindCount(usize),
    #[error("history.rewind asks for more than {0} seconds")]
    RewindSeconds(u64),
    #[error("history.rewind needs exactly one of count and seconds")]
    RewindShape,
    #[error("history.epoch and history.position go together")]
    ResumeShape,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    position: Option<Position>,
    #[serde(default)]
    socket_ids: Vec<String>,
    #[serde(default)]
    rewind: Option<RawRewind>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewind {
    #[serde(default)]
    count: Option<usize>,
    #[serde(default)]
    seconds: Option<u64>,
}

impl HistoryRequest {
    /// Reads the `history` field of `pusher:subscribe` data, bounded by the app's settings.
    pub fn parse(raw: &RawValue, config: &HistoryConfig) -> Result<Self, RequestError> {
        // serde would also read a struct from an array; only an object is the contract.
        if !raw.get().trim_start().starts_with('{') {
            return Err(RequestError::Shape("not an object".into()));
        }
        let r: RawRequest =
            serde_json::from_str(raw.get()).map_err(|e| RequestError::Shape(e.to_string()))?;
        if r.socket_ids.len() > config.max_socket_ids {
            return Err(RequestError::TooManySocketIds(config.max_socket_ids));
        }
        let socket_ids = r
            .socket_ids
            .iter()
            .map(|s| s.parse::<SocketId>().map_err(|_| RequestError::SocketId))
            .collect::<Result<Vec<_>, _>>()?;
        match (r.epoch, r.position, r.rewind) {
            (None, None, None) => Ok(Self::Positions),
            (Some(epoch), Some(position), None) => {
                if epoch.is_empty() || epoch.chars().count() > MAX_EPOCH_LEN {
                    return Err(RequestError::Epoch);
                }
                Ok(Self::Resume {
                    epoch,
                    position,
                    socket_ids,
                })
            }
            (None, None, Some(rw)) => match (rw.count, rw.seconds) {
                (Some(n), None) if n > config.max_events => {
                    Err(RequestError::RewindCount(config.max_events))
                }
                (Some(n), None) => Ok(Self::Rewind(Rewind::Count(n))),
                (None, Some(s)) if s > config.max_age_secs => {
                    Err(RequestError::RewindSeconds(config.max_age_secs))
                }
                (None, Some(s)) => Ok(Self::Rewind(Rewind::Seconds(s))),
                _ => Err(RequestError::RewindShape),
            },
            (_, _, Some(_)) | (Some(_), None, None) | (None, Some(_), None) => {
                Err(RequestError::ResumeShape)
            }
        }
    }

    /// Socket ids whose excluded or sent events are not replayed.
    pub fn excluded(&self) -> &[SocketId] {
        match self {
            Self::Resume { socket_ids, .. } => socket_ids,
            _ => &[],
        }
    }
}

/// What a channel's history holds right now, as far as continuity goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub epoch: String,
    /// Position of the oldest event still kept (`newest + 1` when none is).
    pub oldest: Position,
    /// Position of the newest event (0 before the first).
    pub newest: Position,
}

/// Why continuity could not be proven; the app should refetch its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// The app keeps no history for this channel.
    ChannelNotKept,
    /// The epoch differs: the node restarted, Redis lost its data, or the channel's
    /// history expired entirely (nothing published for `max_age_secs`).
    HistoryLost,
    /// Events after the client's position were already dropped (count, age or memory bound).
    WindowExceeded,
    /// The history could not be read (the cluster's Redis is unreachable).
    Unavailable,
}

impl FailReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChannelNotKept => "channel_not_kept",
            Self::HistoryLost => "history_lost",
            Self::WindowExceeded => "window_exceeded",
            Self::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which events to replay: those after `after` (up to the window's newest), or a failure.
/// `Rewind::Seconds` is decided by the store (it knows the events' ages); here it replays nothing.
pub fn plan(request: &HistoryRequest, window: &Window) -> Result<Position, FailReason> {
    match request {
        HistoryRequest::Positions | HistoryRequest::Rewind(Rewind::Seconds(_)) => Ok(window.newest),
        HistoryRequest::Rewind(Rewind::Count(n)) => Ok(window
            .newest
            .saturating_sub(*n as u64)
            .max(window.oldest.saturating_sub(1))),
        HistoryRequest::Resume {
            epoch, position, ..
        } => {
            // A position from the future was not given out in this epoch either.
            if *epoch != window.epoch || *position > window.newest {
                Err(FailReason::HistoryLost)
            } else if position.saturating_add(1) < window.oldest {
                Err(FailReason::WindowExceeded)
            } else {
                Ok(*position)
            }
        }
    }
}

/// `pusher_internal:recovery`'s data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Recovery<'a> {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailReason>,
    /// The channel's epoch, to send back when resuming (absent when the channel is not kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<&'a str>,
    /// The position the client has once the replay that follows is delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    pub replayed: usize,
}

/// The outcome a `pusher_internal:recovery` frame reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every event after the client's position follows (possibly none).
    Recovered,
    /// The requested recent events follow.
    Rewound,
    /// No replay was asked: positions from now on.
    Subscribed,
    /// Continuity cannot be proven (see `reason`); live events follow, with positions if kept.
    Failed,
}

/// `{"event":"pusher_internal:position","channel":c,"data":"{\"position\":n}"}`:
/// precedes each kept event sent to a subscription that asked for history.
pub fn position_frame(channel: &str, position: Position) -> String {
    crate::frame::channel_event(
        channel,
        "pusher_internal:position",
        &format!("{{\"position\":{position}}}"),
    )
}

/// `pusher_internal:recovery`: what the replay that follows is.
pub fn recovery_frame(channel: &str, recovery: &Recovery<'_>) -> String {
    let data = serde_json::to_string(recovery).expect("recovery serializes");
    crate::frame::channel_event(channel, "pusher_internal:recovery", &data)
}

/// Order of a REST history page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Newest first (the default: "what happened lately").
    #[default]
    NewestFirst,
    OldestFirst,
}

/// `GET /apps/{id}/channels/{channel}/history` query: `limit`, `direction`
/// (`newest_first`|`oldest_first`), `start` and `end` positions (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    pub limit: usize,
    pub direction: Direction,
    pub start: Option<Position>,
    pub end: Option<Position>,
}

/// A REST history query that cannot be answered (400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("limit must be a number from 1 to {0}")]
    Limit(usize),
    #[error("direction must be newest_first or oldest_first")]
    Direction,
    #[error("{0} must be a position (a non-negative integer)")]
    Position(&'static str),
    #[error("start is after end")]
    Range,
}

impl HistoryQuery {
    /// Reads the query's parameters (`param` looks one up); `limit` defaults to and is bounded by `max_page`.
    pub fn parse<'a>(
        param: impl Fn(&str) -> Option<&'a str>,
        max_page: usize,
    ) -> Result<Self, QueryError> {
        let limit = match param("limit") {
            None => max_page,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max_page).contains(n))
                .ok_or(QueryError::Limit(max_page))?,
        };
        let direction = match param("direction") {
            None | Some("newest_first") => Direction::NewestFirst,
            Some("oldest_first") => Direction::OldestFirst,
            Some(_) => return Err(QueryError::Direction),
        };
        let position = |name: &'static str| -> Result<Option<Position>, QueryError> {
            param(name)
                .map(|v| v.parse().map_err(|_| QueryError::Position(name)))
                .transpose()
        };
        let (start, end) = (position("start")?, position("end")?);
        if matches!((start, end), (Some(s), Some(e)) if s > e) {
            return Err(QueryError::Range);
        }
        Ok(Self {
            limit,
            direction,
            start,
            end,
        })
    }

    /// Whether `position` is inside `start..=end`.
    pub fn contains(&self, position: Position) -> bool {
        self.start.is_none_or(|s| position >= s) && self.end.is_none_or(|e| position <= e)
    }
}

/// One event of a REST history page.
#[derive(Clone, Debug, Serialize)]
pub struct PageEvent<'a> {
    pub position: Position,
    pub event: &'a str,
    /// The event's data as subscribers got it (a string for server events).
    pub data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<&'a str>,
    /// When the broker kept it, in milliseconds since the Unix epoch.
    pub published_at_ms: u64,
}

/// Answer to the REST history query.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryPage<'a> {
    pub epoch: &'a str,
    pub oldest: Position,
    pub newest: Position,
    pub direction: Direction,
    pub events: Vec<PageEvent<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn cfg() -> HistoryConfig {
        HistoryConfig {
            channels: vec!["*".into()],
            ..Default::default()
        }
    }

    #[test]
    fn requests_parse_and_are_bounded() {
        let c = cfg();
        assert_eq!(
            HistoryRequest::parse(&raw("{}"), &c),
            Ok(HistoryRequest::Positions)
        );
        assert_eq!(
            HistoryRequest::parse(
                &raw(r#"{"epoch":"e1","position":7,"socket_ids":["1.2"]}"#),
                &c
            ),
            Ok(HistoryRequest::Resume {
                epoch: "e1".into(),
                position: 7,
                socket_ids: vec!["1.2".parse().unwrap()]
            })
        );
        assert_eq!(
            HistoryRequest::parse(&raw(r#"{"rewind":{"count":5}}"#), &c),
            Ok(HistoryRequest::Rewind(Rewind::Count(5)))
        );
        assert_eq!(
            HistoryRequest::parse(&raw(r#"{"rewind":{"count":5000}}"#), &c),
            Err(RequestError::RewindCount(1000))
        );
        assert_eq!(
            HistoryRequest::parse(&raw(r#"{"rewind":{"seconds":301}}"#), &c),
            Err(RequestError::RewindSeconds(300))
        );
        assert_eq!(
            HistoryRequest::parse(&raw(r#"{"rewind":{}}"#), &c),
            Err(RequestError::RewindShape)
        );
        assert_eq!(
            HistoryRequest::parse(&raw(r#"{"epoch":"e"}"#), &c),
            Err(RequestError::ResumeShape)
        );
        assert_eq!(
            HistoryRequest::parse(&raw(r#"{"epoch":"","position":1}"#), &c),
            Err(RequestError::Epoch)
        );
        assert_eq!(
            HistoryRequest::parse(&raw(r#"{"socket_ids":["x"]}"#), &c),
            Err(RequestError::SocketId)
        );
        let many = format!(r#"{{"socket_ids":[{}]}}"#, ["\"1.1\""; 9].join(","));
        assert_eq!(
            HistoryRequest::parse(&raw(&many), &c),
            Err(RequestError::TooManySocketIds(8))
        );
        assert!(matches!(
            HistoryRequest::parse(&raw(r#"{"resume":1}"#), &c),
            Err(RequestError::Shape(_))
        ));
        assert!(matches!(
            HistoryRequest::parse(&raw("[]"), &c),
            Err(RequestError::Shape(_))
        ));
    }

    #[test]
    fn plans_follow_the_window() {
        let w = Window {
            epoch: "e".into(),
            oldest: 11,
            newest: 20,
        };
        let resume = |epoch: &str, position| HistoryRequest::Resume {
            epoch: epoch.into(),
            position,
            socket_ids: vec![],
        };
        assert_eq!(plan(&resume("e", 15), &w), Ok(15));
        assert_eq!(plan(&resume("e", 10), &w), Ok(10), "11 is still kept");
        assert_eq!(plan(&resume("e", 9), &w), Err(FailReason::WindowExceeded));
        assert_eq!(plan(&resume("e", 20), &w), Ok(20));
        assert_eq!(plan(&resume("e", 21), &w), Err(FailReason::HistoryLost));
        assert_eq!(plan(&resume("f", 15), &w), Err(FailReason::HistoryLost));
        assert_eq!(plan(&HistoryRequest::Rewind(Rewind::Count(3)), &w), Ok(17));
        assert_eq!(
            plan(&HistoryRequest::Rewind(Rewind::Count(300)), &w),
            Ok(10)
        );
        assert_eq!(plan(&HistoryRequest::Positions, &w), Ok(20));
    }

    #[test]
    fn frames() {
        assert_eq!(
            position_frame("c", 7),
            r#"{"event":"pusher_internal:position","channel":"c","data":"{\"position\":7}"}"#
        );
        let f = recovery_frame(
            "c",
            &Recovery {
                status: Status::Failed,
                reason: Some(FailReason::WindowExceeded),
                epoch: Some("e"),
                position: Some(9),
                replayed: 0,
            },
        );
        assert_eq!(
            f,
            r#"{"event":"pusher_internal:recovery","channel":"c","data":"{\"status\":\"failed\",\"reason\":\"window_exceeded\",\"epoch\":\"e\",\"position\":9,\"replayed\":0}"}"#
        );
    }

    #[test]
    fn queries() {
        let q = |pairs: &[(&str, &'static str)]| {
            let pairs = pairs.to_vec();
            HistoryQuery::parse(
                move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v),
                100,
            )
        };
        assert_eq!(q(&[]).unwrap().limit, 100);
        assert_eq!(q(&[("limit", "0")]), Err(QueryError::Limit(100)));
        assert_eq!(q(&[("limit", "101")]), Err(QueryError::Limit(100)));
        assert_eq!(q(&[("direction", "up")]), Err(QueryError::Direction));
        assert_eq!(q(&[("start", "-1")]), Err(QueryError::Position("start")));
        assert_eq!(q(&[("start", "5"), ("end", "4")]), Err(QueryError::Range));
        let ok = q(&[("direction", "oldest_first"), ("start", "3"), ("end", "5")]).unwrap();
        assert_eq!(ok.direction, Direction::OldestFirst);
        assert!(ok.contains(3) && ok.contains(5) && !ok.contains(6) && !ok.contains(2));
    }
}
