//! Presence `channel_data` and sign-in `user_data`: the JSON a client's own
//! server signs, which the broker then reads for the user id, the member's
//! `user_info` and the watchlist.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{
    frame::{self, ChannelData, ClientFrame, UserData},
    ChannelName,
};
use protocol_fuzz::assert_json_object;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(d) = serde_json::from_str::<ChannelData>(text) {
        assert!(!d.user_id.is_empty());
        let info = d
            .user_info
            .unwrap_or_else(|| RawValue::from_string("null".into()).unwrap());
        let added = assert_json_object(&frame::member_added("presence-a", &d.user_id, &info));
        let inner: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(added["data"].as_str().expect("data is a string"))
                .expect("data is JSON");
        assert_eq!(inner["user_id"], d.user_id.as_str());
        assert_json_object(&frame::presence_subscription_succeeded(
            "presence-a",
            &[(&d.user_id, &info)],
        ));
    }

    if let Ok(u) = serde_json::from_str::<UserData>(text) {
        assert!(!u.id.is_empty());
        let ok = assert_json_object(&frame::signin_success(text));
        assert_eq!(ok["event"], "pusher:signin_success");
        if let Ok(c) = ChannelName::for_user(&u.id) {
            assert_eq!(c.server_to_user_id(), Some(u.id.as_str()));
        }
        let ids = u.watchlist_ids();
        assert_eq!(ids.len(), u.watchlist.as_ref().map_or(0, Vec::len));
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_json_object(&frame::watchlist_event("online", &refs));
    }

    // The same text as it arrives inside a subscribe and a sign-in frame, in
    // string form: it must come out unchanged, since the signature covers it.
    let quoted = serde_json::to_string(text).unwrap();
    let subscribe = format!(
        r#"{{"event":"pusher:subscribe","data":{{"channel":"presence-a","auth":"k:s","channel_data":{quoted}}}}}"#
    );
    match ClientFrame::parse(&subscribe) {
        Ok(ClientFrame::Subscribe(s)) => assert_eq!(s.channel_data.as_deref(), Some(text)),
        other => panic!("{other:?}"),
    }
    let signin =
        format!(r#"{{"event":"pusher:signin","data":{{"auth":"k:s","user_data":{quoted}}}}}"#);
    match ClientFrame::parse(&signin) {
        Ok(ClientFrame::Signin(s)) => assert_eq!(s.user_data, text),
        other => panic!("{other:?}"),
    }
});
