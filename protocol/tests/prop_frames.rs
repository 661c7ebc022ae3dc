//! Property tests of client frames and of the `channel_data` / `user_data` they
//! carry (the fuzz targets `client_frame` and `user_data` run the same entry points).

use proptest::prelude::*;
use protocol::frame::{self, ChannelData, ClientFrame, FrameError, UserData};
use serde_json::{json, Value};

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Quarters: exact in binary and in short decimals, so they survive a JSON round trip.
        (-4000i32..4000).prop_map(|n| Value::from(f64::from(n) / 4.0)),
        "\\PC{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A user id as clients send it: a non-empty string or a number.
fn user_id() -> impl Strategy<Value = (Value, String)> {
    prop_oneof![
        "\\PC{1,30}".prop_map(|s| (Value::from(s.clone()), s)),
        any::<u64>().prop_map(|n| (Value::from(n), n.to_string())),
        any::<i64>().prop_map(|n| (Value::from(n), n.to_string())),
    ]
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
    fn any_text_is_a_frame_or_an_error(s in "\\PC{0,200}") {
        let _ = ClientFrame::parse(&s);
    }

    #[test]
    fn any_json_is_a_frame_or_an_error(v in any_json()) {
        let _ = ClientFrame::parse(&v.to_string());
    }

    #[test]
    fn text_that_is_not_an_object_with_an_event_is_malformed(v in any_json()) {
        prop_assume!(!v.get("event").is_some_and(Value::is_string));
        prop_assert!(matches!(ClientFrame::parse(&v.to_string()), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn subscribe_round_trips_in_object_and_string_form(
        channel in "\\PC{0,40}",
        auth in proptest::option::of("\\PC{0,80}"),
        channel_data in proptest::option::of("\\PC{0,80}"),
    ) {
        let mut data = json!({ "channel": channel });
        if let Some(a) = &auth { data["auth"] = json!(a); }
        if let Some(d) = &channel_data { data["channel_data"] = json!(d); }
        for data in [data.clone(), Value::from(data.to_string())] {
            let text = json!({ "event": "pusher:subscribe", "data": data }).to_string();
            let ClientFrame::Subscribe(s) = ClientFrame::parse(&text).unwrap() else { panic!("{text}") };
            prop_assert_eq!(&s.channel, &channel);
            prop_assert_eq!(&s.auth, &auth);
            prop_assert_eq!(&s.channel_data, &channel_data);
        }
    }

    #[test]
    fn channel_data_as_an_object_is_kept_as_its_json_text(info in any_json(), (id, _) in user_id()) {
        let cd = json!({ "user_id": id, "user_info": info });
        let text = json!({ "event": "pusher:subscribe", "data": { "channel": "presence-a", "channel_data": cd } }).to_string();
        let ClientFrame::Subscribe(s) = ClientFrame::parse(&text).unwrap() else { panic!() };
        prop_assert_eq!(serde_json::from_str::<Value>(s.channel_data.as_deref().unwrap()).unwrap(), cd);
    }

    #[test]
    fn signin_keeps_user_data_verbatim(auth in "\\PC{0,80}", user_data in "\\PC{0,80}") {
        let text = json!({ "event": "pusher:signin", "data": { "auth": auth, "user_data": user_data } }).to_string();
        let ClientFrame::Signin(s) = ClientFrame::parse(&text).unwrap() else { panic!() };
        prop_assert_eq!(s.auth, auth);
        prop_assert_eq!(s.user_data, user_data);
    }

    #[test]
    fn client_events_carry_their_data_untouched(
        name in "client-\\PC{0,30}",
        channel in "\\PC{0,40}",
        data in any_json(),
        user in proptest::option::of("\\PC{1,10}"),
    ) {
        let text = json!({ "event": name, "channel": channel, "data": data }).to_string();
        let ClientFrame::ClientEvent { event, channel: c, data: raw } = ClientFrame::parse(&text).unwrap() else { panic!() };
        prop_assert_eq!(&event, &name);
        prop_assert_eq!(&c, &channel);
        let out: Value = serde_json::from_str(&frame::client_event(&c, &event, &raw, user.as_deref())).unwrap();
        prop_assert_eq!(&out["data"], &data);
        prop_assert_eq!(&out["event"], &json!(name));
        let user = user.map(Value::from);
        prop_assert_eq!(out.get("user_id"), user.as_ref());
    }

    #[test]
    fn a_client_event_without_a_channel_is_refused(name in "client-\\PC{0,30}", data in any_json()) {
        let text = json!({ "event": name, "data": data }).to_string();
        prop_assert_eq!(ClientFrame::parse(&text).unwrap_err(), FrameError::MissingChannel);
    }

    #[test]
    fn other_event_names_are_unknown(name in "\\PC{0,30}") {
        prop_assume!(!name.starts_with("client-") && !name.starts_with("pusher:"));
        let text = json!({ "event": name, "data": {} }).to_string();
        let ClientFrame::Unknown { event } = ClientFrame::parse(&text).unwrap() else { panic!() };
        prop_assert_eq!(event, name);
    }

    #[test]
    fn pusher_events_with_bad_data_name_the_event(
        event in prop_oneof![Just("pusher:subscribe"), Just("pusher:unsubscribe"), Just("pusher:signin")],
        data in any_json().prop_filter("not an object", |d| !d.is_object()),
        as_string: bool,
    ) {
        // Anything but an object, given as itself or as a string holding it.
        let data = if as_string { Value::from(data.to_string()) } else { data };
        let text = json!({ "event": event, "data": data }).to_string();
        match ClientFrame::parse(&text) {
            Err(FrameError::BadData { event: e, .. }) => prop_assert_eq!(e, event),
            other => prop_assert!(false, "{text}: {other:?}"),
        }
    }

    #[test]
    fn channel_data_user_ids_are_strings_or_numbers((id, expected) in user_id(), info in proptest::option::of(any_json())) {
        let mut v = json!({ "user_id": id });
        if let Some(i) = &info { v["user_info"] = i.clone(); }
        let cd: ChannelData = serde_json::from_str(&v.to_string()).unwrap();
        prop_assert_eq!(cd.user_id, expected);
        // `user_info` is kept as the client's JSON, to be relayed as is (null becomes None).
        let kept = cd.user_info.map(|r| serde_json::from_str::<Value>(r.get()).unwrap());
        prop_assert_eq!(kept.unwrap_or(Value::Null), info.unwrap_or(Value::Null));
    }

    #[test]
    fn user_data_needs_an_id_that_is_a_non_empty_string_or_a_number(id in any_json()) {
        let parsed = serde_json::from_str::<UserData>(&json!({ "id": id }).to_string());
        let valid = id.is_number() || id.as_str().is_some_and(|s| !s.is_empty());
        prop_assert_eq!(parsed.is_ok(), valid, "{}", id);
        let parsed = serde_json::from_str::<ChannelData>(&json!({ "user_id": id }).to_string());
        prop_assert_eq!(parsed.is_ok(), valid);
    }

    #[test]
    fn watchlists_keep_every_entry(ids in prop::collection::vec(any_json(), 0..10)) {
        let u: UserData = serde_json::from_str(&json!({ "id": "1", "watchlist": ids }).to_string()).unwrap();
        prop_assert_eq!(u.watchlist.unwrap(), ids);
    }

    #[test]
    fn any_text_as_channel_data_or_user_data_never_panics(s in "\\PC{0,100}") {
        let _ = serde_json::from_str::<ChannelData>(&s);
        let _ = serde_json::from_str::<UserData>(&s);
    }
}
