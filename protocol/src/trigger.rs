//! Turning the body of `POST /events` or `POST /batch_events` into validated triggers.
//!
//! Pure functions over bytes and [`Limits`], so the broker's REST handlers, the
//! property tests and the fuzz targets all run the same code. Each way a body can
//! be wrong is a [`BodyError`] variant; the broker maps them to HTTP statuses in
//! one place ([`BodyError::is_too_large`] tells 413 from 400).

use crate::{
    channel::InvalidName,
    rest::{BatchRequest, InfoRequest, TriggerRequest},
    ChannelKind, ChannelName, EventName, Limits, SocketId,
};

/// A trigger that passed validation: at least one channel, at most
/// `max_channels_per_trigger`, data within `max_event_data_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub name: EventName,
    pub data: String,
    pub channels: Vec<ChannelName>,
    /// The connection excluded from delivery (`socket_id`).
    pub except: Option<SocketId>,
    pub info: InfoRequest,
}

/// Why a trigger body was refused. The messages are the REST API's response bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("invalid JSON body: {0}")]
    Json(String),
    #[error("invalid event name {name:?}: {reason}")]
    EventName { name: String, reason: InvalidName },
    #[error("give either channel or channels, not both")]
    ChannelAndChannels,
    #[error("missing channel or channels")]
    NoChannel,
    #[error("channels must name at least one channel")]
    EmptyChannels,
    #[error("too many channels: {given} (at most {max})")]
    TooManyChannels { given: usize, max: usize },
    #[error("invalid channel name {name:?}: {reason}")]
    ChannelName { name: String, reason: InvalidName },
    #[error("an event on an encrypted channel must name exactly one channel")]
    EncryptedWithOthers,
    #[error("event data is {size} bytes, more than the limit of {max}")]
    DataTooLarge { size: usize, max: usize },
    #[error("invalid socket_id {0:?}")]
    SocketId(String),
    /// An unknown `info` attribute.
    #[error("{0}")]
    Info(String),
    #[error("info=cache is only available from GET /channels/{{name}}")]
    InfoCache,
    #[error("too many events in batch: {given} (at most {max})")]
    TooManyEvents { given: usize, max: usize },
    #[error("each batch event names one channel")]
    BatchItemChannels,
    /// One item of a batch was refused; the whole batch is.
    #[error("batch[{index}]: {error}")]
    BatchItem { index: usize, error: Box<BodyError> },
}

impl BodyError {
    /// Whether the refusal is about size (HTTP 413) rather than form (HTTP 400).
    pub fn is_too_large(&self) -> bool {
        match self {
            Self::DataTooLarge { .. } => true,
            Self::BatchItem { error, .. } => error.is_too_large(),
            _ => false,
        }
    }
}

/// Parses and validates the body of `POST /events`.
pub fn parse_trigger(body: &[u8], limits: &Limits) -> Result<Trigger, BodyError> {
    validate(parse_json(body)?, limits)
}

/// Parses and validates the body of `POST /batch_events`. All or nothing: one bad
/// item refuses the batch, so nothing is published from a batch that fails.
pub fn parse_batch(body: &[u8], limits: &Limits) -> Result<Vec<Trigger>, BodyError> {
    let batch: BatchRequest = parse_json(body)?;
    if batch.batch.len() > limits.max_batch_events {
        return Err(BodyError::TooManyEvents {
            given: batch.batch.len(),
            max: limits.max_batch_events,
        });
    }
    batch
        .batch
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let at = |error| BodyError::BatchItem {
                index,
                error: Box::new(error),
            };
            if item.channels.as_ref().is_some_and(|cs| cs.len() != 1) {
                return Err(at(BodyError::BatchItemChannels));
            }
            validate(item, limits).map_err(at)
        })
        .collect()
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))
}

/// Checks one trigger, cheapest and most basic problems first.
pub fn validate(req: TriggerRequest, limits: &Limits) -> Result<Trigger, BodyError> {
    let name =
        EventName::parse_with_max(&req.name, limits.max_event_name_len).map_err(|reason| {
            BodyError::EventName {
                name: req.name.clone(),
                reason,
            }
        })?;
    let raw: Vec<String> = match (req.channel, req.channels) {
        (Some(c), None) => vec![c],
        (None, Some(cs)) => cs,
        (Some(_), Some(_)) => return Err(BodyError::ChannelAndChannels),
        (None, None) => return Err(BodyError::NoChannel),
    };
    if raw.is_empty() {
        return Err(BodyError::EmptyChannels);
    }
    if raw.len() > limits.max_channels_per_trigger {
        return Err(BodyError::TooManyChannels {
            given: raw.len(),
            max: limits.max_channels_per_trigger,
        });
    }
    let channels = raw
        .iter()
        .map(|c| {
            ChannelName::parse_with_max(c, limits.max_channel_name_len).map_err(|reason| {
                BodyError::ChannelName {
                    name: c.clone(),
                    reason,
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if channels
        .iter()
        .any(|c| c.kind() == ChannelKind::PrivateEncrypted)
        && channels.len() > 1
    {
        return Err(BodyError::EncryptedWithOthers);
    }
    if req.data.len() > limits.max_event_data_bytes {
        return Err(BodyError::DataTooLarge {
            size: req.data.len(),
            max: limits.max_event_data_bytes,
        });
    }
    let except = match req.socket_id.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<SocketId>()
                .map_err(|_| BodyError::SocketId(s.to_owned()))?,
        ),
    };
    let info = InfoRequest::parse(req.info.as_deref()).map_err(BodyError::Info)?;
    if info.cache {
        return Err(BodyError::InfoCache);
    }
    Ok(Trigger {
        name,
        data: req.data,
        channels,
        except,
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(body: &str) -> Result<Trigger, BodyError> {
        parse_trigger(body.as_bytes(), &Limits::default())
    }

    #[test]
    fn accepts_a_single_channel_trigger() {
        let t = trigger(r#"{"name":"e","channel":"c","data":"x","socket_id":"1.2","info":"subscription_count"}"#).unwrap();
        assert_eq!(t.name.as_str(), "e");
        assert_eq!(t.channels, vec![ChannelName::parse("c").unwrap()]);
        assert_eq!(t.except, Some(SocketId::new(1, 2)));
        assert!(t.info.subscription_count && !t.info.user_count);
    }

    #[test]
    fn messages_name_the_problem() {
        let cases = [
            ("nope", "invalid JSON body: "),
            (
                r#"{"name":"","channel":"c","data":""}"#,
                "invalid event name \"\": name is empty",
            ),
            (
                r#"{"name":"e","channel":"c","channels":["c"],"data":""}"#,
                "give either channel or channels, not both",
            ),
            (r#"{"name":"e","data":""}"#, "missing channel or channels"),
            (
                r#"{"name":"e","channels":[],"data":""}"#,
                "channels must name at least one channel",
            ),
            (
                r#"{"name":"e","channel":"a b","data":""}"#,
                "invalid channel name \"a b\": ",
            ),
            (
                r#"{"name":"e","channels":["private-encrypted-a","b"],"data":""}"#,
                "an event on an encrypted channel",
            ),
            (
                r#"{"name":"e","channel":"c","data":"","socket_id":"x"}"#,
                "invalid socket_id \"x\"",
            ),
            (
                r#"{"name":"e","channel":"c","data":"","info":"bogus"}"#,
                "unknown info attribute \"bogus\"",
            ),
            (
                r#"{"name":"e","channel":"c","data":"","info":"cache"}"#,
                "info=cache is only available from GET /channels/{name}",
            ),
        ];
        for (body, start) in cases {
            let e = trigger(body).unwrap_err();
            assert!(e.to_string().starts_with(start), "{body}: {e}");
            assert!(!e.is_too_large());
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_event_data_bytes: 3,
            max_channels_per_trigger: 2,
            max_batch_events: 1,
            ..Limits::default()
        };
        let e = parse_trigger(br#"{"name":"e","channel":"c","data":"abcd"}"#, &limits).unwrap_err();
        assert_eq!(e, BodyError::DataTooLarge { size: 4, max: 3 });
        assert!(e.is_too_large());
        let e = parse_trigger(
            br#"{"name":"e","channels":["a","b","c"],"data":""}"#,
            &limits,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "too many channels: 3 (at most 2)");
        let two = br#"{"batch":[{"name":"e","channel":"a","data":""},{"name":"e","channel":"b","data":""}]}"#;
        assert_eq!(
            parse_batch(two, &limits).unwrap_err().to_string(),
            "too many events in batch: 2 (at most 1)"
        );
    }

    #[test]
    fn batch_items_are_numbered_and_keep_their_status() {
        let body = br#"{"batch":[{"name":"e","channel":"a","data":""},{"name":"e","channels":["a","b"],"data":""}]}"#;
        let e = parse_batch(body, &Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "batch[1]: each batch event names one channel"
        );
        let limits = Limits {
            max_event_data_bytes: 1,
            ..Limits::default()
        };
        let e = parse_batch(
            br#"{"batch":[{"name":"e","channel":"a","data":"xy"}]}"#,
            &limits,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "batch[0]: event data is 2 bytes, more than the limit of 1"
        );
        assert!(e.is_too_large());
        let ok = parse_batch(
            br#"{"batch":[{"name":"e","channels":["a"],"data":{"k":1}}]}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(ok[0].data, r#"{"k":1}"#);
    }
}
