//! Property tests of REST trigger bodies (the fuzz target `rest_body` runs the
//! same entry points).

use proptest::prelude::*;
use protocol::{
    rest::TriggerRequest,
    trigger::{parse_batch, parse_trigger, BodyError},
    ChannelName, Limits,
};
use serde_json::json;

fn channel() -> impl Strategy<Value = String> {
    // Encrypted channels are left out: they may not share a trigger (tested in the unit tests).
    "(private-|presence-|cache-)?[A-Za-z0-9_\\-=@,.;]{1,60}"
        .prop_filter("not encrypted", |c| !c.starts_with("private-encrypted-"))
}

/// A trigger every default limit accepts.
fn valid_trigger() -> impl Strategy<Value = TriggerRequest> {
    (
        "\\PC{1,50}",
        "\\PC{0,200}",
        prop::collection::vec(channel(), 1..5),
        any::<bool>(),
        proptest::option::of((any::<u32>(), any::<u32>()).prop_map(|(a, b)| format!("{a}.{b}"))),
        proptest::option::of(prop_oneof![
            Just("user_count"),
            Just("subscription_count"),
            Just("user_count,subscription_count")
        ]),
    )
        .prop_map(|(name, data, channels, single, socket_id, info)| {
            // A single channel may be given as `channel` or as a one-element `channels`.
            let (channel, channels) = if single {
                (Some(channels[0].clone()), None)
            } else {
                (None, Some(channels))
            };
            TriggerRequest {
                name,
                data,
                channel,
                channels,
                socket_id,
                info: info.map(str::to_owned),
            }
        })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_are_a_trigger_or_an_error(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_trigger(&body, &Limits::default());
        let _ = parse_batch(&body, &Limits::default());
    }

    #[test]
    fn any_text_is_a_trigger_or_an_error(body in "\\{\"(name|channel|channels|data|batch|socket_id|info)\":\\PC{0,60}\\}") {
        for result in [parse_trigger(body.as_bytes(), &Limits::default()).map(|t| vec![t]), parse_batch(body.as_bytes(), &Limits::default())] {
            if let Err(e) = result {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn a_valid_trigger_round_trips(req in valid_trigger()) {
        let body = serde_json::to_vec(&req).unwrap();
        let t = parse_trigger(&body, &Limits::default()).unwrap();
        prop_assert_eq!(t.name.as_str(), req.name.as_str());
        prop_assert_eq!(&t.data, &req.data);
        let names: Vec<String> = req.channel.clone().into_iter().chain(req.channels.clone().unwrap_or_default()).collect();
        prop_assert_eq!(t.channels, names.iter().map(|c| ChannelName::parse(c).unwrap()).collect::<Vec<_>>());
        prop_assert_eq!(t.except.map(|s| s.to_string()), req.socket_id.clone());
        prop_assert_eq!(t.info.any(), req.info.is_some());
    }

    #[test]
    fn json_data_is_re_encoded_as_text(k in "\\PC{0,10}", v in any::<i32>()) {
        let data = json!({ k.clone(): v });
        let body = json!({ "name": "e", "channel": "c", "data": data }).to_string();
        let t = parse_trigger(body.as_bytes(), &Limits::default()).unwrap();
        prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&t.data).unwrap(), data);
    }

    #[test]
    fn every_limit_is_enforced_with_its_error(
        req in valid_trigger(),
        max_data in 0usize..100, max_channels in 1usize..4, max_name in 1usize..30, max_channel_name in 1usize..30,
    ) {
        let limits = Limits {
            max_event_data_bytes: max_data,
            max_channels_per_trigger: max_channels,
            max_event_name_len: max_name,
            max_channel_name_len: max_channel_name,
            ..Limits::default()
        };
        let names: Vec<&String> = req.channel.iter().chain(req.channels.iter().flatten()).collect();
        let body = serde_json::to_vec(&req).unwrap();
        // The checks run in a fixed order; the first limit exceeded is the one reported.
        let expected = if req.name.len() > max_name {
            Some(BodyError::EventName { name: req.name.clone(), reason: protocol::channel::InvalidName::TooLong(max_name) })
        } else if names.len() > max_channels {
            Some(BodyError::TooManyChannels { given: names.len(), max: max_channels })
        } else if let Some(long) = names.iter().find(|c| c.len() > max_channel_name) {
            Some(BodyError::ChannelName { name: (*long).clone(), reason: protocol::channel::InvalidName::TooLong(max_channel_name) })
        } else if req.data.len() > max_data {
            Some(BodyError::DataTooLarge { size: req.data.len(), max: max_data })
        } else {
            None
        };
        match (parse_trigger(&body, &limits), expected) {
            (Ok(_), None) => {}
            (Err(e), Some(expected)) => {
                prop_assert_eq!(e.is_too_large(), matches!(expected, BodyError::DataTooLarge { .. }));
                prop_assert_eq!(e, expected);
            }
            (got, expected) => prop_assert!(false, "got {:?}, expected {:?}", got, expected),
        }
    }

    #[test]
    fn a_batch_is_all_or_nothing(items in prop::collection::vec(valid_trigger(), 0..12), bad_at in any::<prop::sample::Index>()) {
        let limits = Limits::default();
        // Batch items name exactly one channel.
        let mut items: Vec<TriggerRequest> = items
            .into_iter()
            .map(|mut t| {
                if let Some(cs) = &mut t.channels { cs.truncate(1) }
                t
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "batch": items })).unwrap();
        let result = parse_batch(&body, &limits);
        if items.len() > limits.max_batch_events {
            prop_assert_eq!(result.unwrap_err(), BodyError::TooManyEvents { given: items.len(), max: limits.max_batch_events });
            return Ok(());
        }
        prop_assert_eq!(result.unwrap().len(), items.len());
        if items.is_empty() {
            return Ok(());
        }
        let i = bad_at.index(items.len());
        items[i].name = String::new();
        let body = serde_json::to_vec(&json!({ "batch": items })).unwrap();
        match parse_batch(&body, &limits) {
            Err(BodyError::BatchItem { index, error }) => {
                prop_assert_eq!(index, i);
                let named_the_event = matches!(*error, BodyError::EventName { .. });
                prop_assert!(named_the_event, "{:?}", error);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
