//! The body of `POST /events` and `POST /batch_events`, validated as the broker
//! does (`protocol::trigger`), under the default limits and under tight ones
//! chosen by the first bytes of the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{
    trigger::{parse_batch, parse_trigger, BodyError, Trigger},
    ChannelKind, Limits,
};

fuzz_target!(|data: &[u8]| {
    let tight = match data {
        [a, b, c, d, ..] => Limits {
            max_event_data_bytes: usize::from(*a) * 8,
            max_channels_per_trigger: usize::from(*b % 8),
            max_batch_events: usize::from(*c % 8),
            max_channel_name_len: usize::from(*d),
            max_event_name_len: usize::from(*d),
            ..Limits::default()
        },
        _ => Limits::default(),
    };
    for limits in [Limits::default(), tight] {
        match parse_trigger(data, &limits) {
            Ok(t) => check(&t, &limits),
            Err(e) => refusal(&e),
        }
        match parse_batch(data, &limits) {
            Ok(ts) => {
                assert!(ts.len() <= limits.max_batch_events);
                for t in &ts {
                    check(t, &limits);
                    assert_eq!(t.channels.len(), 1, "batch items name one channel");
                }
            }
            Err(e) => refusal(&e),
        }
    }
});

/// What a validated trigger promises the publisher.
fn check(t: &Trigger, limits: &Limits) {
    assert!(!t.channels.is_empty() && t.channels.len() <= limits.max_channels_per_trigger);
    assert!(t.data.len() <= limits.max_event_data_bytes);
    assert!(t.name.as_str().len() <= limits.max_event_name_len);
    assert!(t
        .channels
        .iter()
        .all(|c| c.as_str().len() <= limits.max_channel_name_len));
    if t.channels
        .iter()
        .any(|c| c.kind() == ChannelKind::PrivateEncrypted)
    {
        assert_eq!(t.channels.len(), 1);
    }
    assert!(!t.info.cache);
}

fn refusal(e: &BodyError) {
    let message = e.to_string();
    assert!(!message.is_empty());
    if let BodyError::BatchItem { error, .. } = e {
        assert!(!matches!(
            **error,
            BodyError::BatchItem { .. } | BodyError::Json(_) | BodyError::TooManyEvents { .. }
        ));
    }
}
