//! Channel names, event names and socket ids: everything a client or a REST
//! caller names a thing with. The first byte chooses a maximum length, so the
//! per-app limits are exercised as well as the protocol's defaults.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{
    channel::{InvalidName, SERVER_TO_USER_PREFIX},
    ChannelKind, ChannelName, EventName, SocketId,
};

fuzz_target!(|data: &[u8]| {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(max);
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };

    for (parsed, limit) in [
        (
            ChannelName::parse(s),
            protocol::limits::MAX_CHANNEL_NAME_LEN,
        ),
        (ChannelName::parse_with_max(s, max), max),
    ] {
        match parsed {
            Ok(name) => {
                assert_eq!(name.as_str(), s);
                assert!(!s.is_empty() && s.len() <= limit);
                assert_eq!(
                    ChannelName::parse_with_max(name.as_str(), s.len()).as_ref(),
                    Ok(&name)
                );
                let to_user = name.server_to_user_id();
                assert_eq!(to_user.is_some(), name.kind() == ChannelKind::ServerToUser);
                if let Some(id) = to_user {
                    assert_eq!(ChannelName::for_user(id).as_ref(), Ok(&name));
                }
                if name.kind() != ChannelKind::ServerToUser {
                    assert!(!s.contains('#'));
                }
            }
            Err(InvalidName::Empty) => assert!(s.is_empty()),
            Err(InvalidName::TooLong(n)) => assert!(n == limit && s.len() > limit),
            Err(InvalidName::BadCharacter) => assert!(!s.is_empty() && s.len() <= limit),
        }
    }
    if let Ok(c) = ChannelName::for_user(s) {
        assert_eq!(c.as_str().strip_prefix(SERVER_TO_USER_PREFIX), Some(s));
    }

    for (parsed, limit) in [
        (EventName::parse(s), protocol::limits::MAX_EVENT_NAME_LEN),
        (EventName::parse_with_max(s, max), max),
    ] {
        match parsed {
            Ok(e) => {
                assert_eq!(e.as_str(), s);
                assert!(!s.is_empty() && s.len() <= limit && !s.chars().any(char::is_control));
                assert_eq!(e.is_client_event(), s.starts_with("client-"));
            }
            Err(InvalidName::Empty) => assert!(s.is_empty()),
            Err(InvalidName::TooLong(n)) => assert!(n == limit && s.len() > limit),
            Err(InvalidName::BadCharacter) => assert!(s.chars().any(char::is_control)),
        }
    }

    if let Ok(id) = s.parse::<SocketId>() {
        // Canonical ids round-trip; leading zeros are accepted and normalised.
        let shown = id.to_string();
        assert_eq!(shown.parse::<SocketId>(), Ok(id));
        assert!(shown.len() <= s.len());
    }
});
