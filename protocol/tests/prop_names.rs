//! Property tests of channel names, event names and socket ids (the fuzz target
//! `names` runs the same entry points under libFuzzer).

use proptest::prelude::*;
use protocol::{
    channel::InvalidName,
    limits::{MAX_CHANNEL_NAME_LEN, MAX_EVENT_NAME_LEN},
    ChannelKind, ChannelName, EventName, SocketId,
};

/// Text of the characters channel names allow, `min..=max` of them.
fn allowed(min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9_\\-=@,.;]{{{min},{max}}}")).unwrap()
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
    fn any_text_parses_or_gives_the_documented_error(s in "\\PC{0,200}|[a-z#\\-]{0,20}", max in 0usize..300) {
        match ChannelName::parse_with_max(&s, max) {
            Ok(name) => {
                prop_assert_eq!(name.as_str(), s.as_str());
                prop_assert!(!s.is_empty() && s.len() <= max);
            }
            Err(InvalidName::Empty) => prop_assert!(s.is_empty()),
            Err(InvalidName::TooLong(n)) => prop_assert!(n == max && s.len() > max),
            Err(InvalidName::BadCharacter) => {
                let rest = s.strip_prefix("#server-to-user-").unwrap_or(&s);
                prop_assert!(rest.is_empty() || rest.bytes().any(|b| !(b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b))));
            }
        }
    }

    #[test]
    fn a_valid_channel_name_parses_back_to_itself(s in allowed(1, MAX_CHANNEL_NAME_LEN)) {
        let name = ChannelName::parse(&s).unwrap();
        prop_assert_eq!(name.as_str(), s.as_str());
        prop_assert_eq!(name.to_string(), s.clone());
        prop_assert_eq!(ChannelName::parse(name.as_str()), Ok(name.clone()));
        let json = serde_json::to_string(&name).unwrap();
        prop_assert_eq!(serde_json::from_str::<ChannelName>(&json).unwrap(), name);
    }

    #[test]
    fn one_bad_character_anywhere_is_refused(
        s in allowed(0, 100),
        bad in "[^A-Za-z0-9_\\-=@,.;]",
        at in any::<prop::sample::Index>(),
    ) {
        let mut chars: Vec<char> = s.chars().collect();
        chars.insert(at.index(chars.len() + 1), bad.chars().next().unwrap());
        let s: String = chars.into_iter().collect();
        prop_assume!(!s.starts_with("#server-to-user-"));
        let expected = if s.len() > MAX_CHANNEL_NAME_LEN { InvalidName::TooLong(MAX_CHANNEL_NAME_LEN) } else { InvalidName::BadCharacter };
        prop_assert_eq!(ChannelName::parse(&s), Err(expected));
    }

    #[test]
    fn too_long_is_refused_whatever_the_characters(s in allowed(MAX_CHANNEL_NAME_LEN + 1, 300)) {
        prop_assert_eq!(ChannelName::parse(&s), Err(InvalidName::TooLong(MAX_CHANNEL_NAME_LEN)));
    }

    #[test]
    fn the_prefix_decides_the_kind(
        (prefix, kind, cache) in prop_oneof![
            Just(("", ChannelKind::Public, false)),
            Just(("cache-", ChannelKind::Public, true)),
            Just(("private-", ChannelKind::Private, false)),
            Just(("private-cache-", ChannelKind::Private, true)),
            Just(("private-encrypted-", ChannelKind::PrivateEncrypted, false)),
            Just(("private-encrypted-cache-", ChannelKind::PrivateEncrypted, true)),
            Just(("presence-", ChannelKind::Presence, false)),
            Just(("presence-cache-", ChannelKind::Presence, true)),
        ],
        rest in "[a-z0-9][A-Za-z0-9_=@,.;]{0,40}",
    ) {
        // `rest` never starts with a prefix itself (no `-`), so the kind is the prefix's.
        let name = ChannelName::parse(&format!("{prefix}{rest}")).unwrap();
        prop_assert_eq!(name.kind(), kind);
        prop_assert_eq!(name.is_cache(), cache);
        prop_assert_eq!(name.kind().needs_auth(), kind != ChannelKind::Public);
        prop_assert_eq!(name.server_to_user_id(), None);
    }

    #[test]
    fn a_user_channel_names_its_user(id in allowed(1, 200)) {
        let name = ChannelName::for_user(&id).unwrap();
        prop_assert_eq!(name.kind(), ChannelKind::ServerToUser);
        prop_assert_eq!(name.server_to_user_id(), Some(id.as_str()));
        prop_assert!(!name.kind().allows_client_events());
    }

    #[test]
    fn event_names_are_any_text_without_control_characters(s in "\\PC{1,200}") {
        prop_assume!(s.len() <= MAX_EVENT_NAME_LEN);
        let e = EventName::parse(&s).unwrap();
        prop_assert_eq!(e.as_str(), s.as_str());
        prop_assert_eq!(e.is_client_event(), s.starts_with("client-"));
    }

    #[test]
    fn event_names_with_a_control_character_are_refused(a in "\\PC{0,20}", c in "\\p{Cc}", b in "\\PC{0,20}") {
        prop_assert_eq!(EventName::parse(&format!("{a}{c}{b}")), Err(InvalidName::BadCharacter));
    }

    #[test]
    fn socket_ids_round_trip(node: u64, seq: u64) {
        let id = SocketId::new(node, seq);
        prop_assert_eq!(id.to_string().parse::<SocketId>(), Ok(id));
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<SocketId>(&json).unwrap(), id);
    }

    #[test]
    fn socket_id_parsing_never_panics(s in "\\PC{0,50}|[0-9.]{0,45}") {
        if let Ok(id) = s.parse::<SocketId>() {
            prop_assert!(s.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
            prop_assert_eq!(id.to_string().parse::<SocketId>(), Ok(id));
        }
    }
}
