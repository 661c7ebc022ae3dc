//! A WebSocket text message from a client, through every pure step the broker's
//! session takes with it (`broker/src/ws/session.rs`): UTF-8 check, frame parse,
//! channel and event name checks, subscription and sign-in signatures,
//! `channel_data` / `user_data` parsing, and the frames sent back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{
    frame::{self, ChannelData, ClientFrame, UserData},
    sign, ChannelKind, ChannelName, EventName, Limits,
};
use protocol_fuzz::{app, assert_json_object, SOCKET_ID};

fuzz_target!(|data: &[u8]| {
    // The session answers non-UTF-8 text with an error before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientFrame::parse(text) {
        Ok(f) => {
            // Only a JSON object with a string `event` is a frame. (Read as raw values:
            // `serde_json::Value` refuses lone surrogate escapes, which relayed data may hold.)
            let fields: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
                serde_json::from_str(text).expect("a parsed frame is a JSON object");
            assert!(
                fields
                    .get("event")
                    .is_some_and(|e| e.get().starts_with('"')),
                "{text}"
            );
            handle(f)
        }
        Err(e) => {
            assert_json_object(&frame::error(None, &e.to_string()));
        }
    }
});

fn handle(f: ClientFrame) {
    let limits = Limits::default();
    let (key, secret) = app();
    match f {
        ClientFrame::Ping | ClientFrame::Pong => {}
        ClientFrame::Unsubscribe { channel } => {
            let _ = ChannelName::parse(&channel);
        }
        ClientFrame::Unknown { event } => {
            assert!(!event.starts_with("client-"));
            assert_json_object(&frame::error(None, &format!("unsupported event {event:?}")));
        }
        ClientFrame::Subscribe(s) => {
            let name = match ChannelName::parse_with_max(&s.channel, limits.max_channel_name_len) {
                Ok(n) => n,
                Err(e) => {
                    assert_json_object(&frame::error(
                        None,
                        &format!("invalid channel name {:?}: {e}", s.channel),
                    ));
                    return;
                }
            };
            assert_eq!(name.as_str(), s.channel);
            if let Some(auth) = s.auth.as_deref() {
                let checked = sign::verify_channel(
                    &key,
                    &secret,
                    SOCKET_ID,
                    name.as_str(),
                    s.channel_data.as_deref(),
                    auth,
                );
                if let Err(e) = checked {
                    assert_json_object(&frame::subscription_error(
                        name.as_str(),
                        "AuthError",
                        &e.to_string(),
                        401,
                    ));
                }
            }
            if name.kind() == ChannelKind::Presence {
                if let Some(Ok(d)) = s
                    .channel_data
                    .as_deref()
                    .map(serde_json::from_str::<ChannelData>)
                {
                    assert!(!d.user_id.is_empty());
                    let info = d.user_info.unwrap_or_else(|| {
                        serde_json::value::RawValue::from_string("null".into()).unwrap()
                    });
                    assert_json_object(&frame::member_added(name.as_str(), &d.user_id, &info));
                    assert_json_object(&frame::presence_subscription_succeeded(
                        name.as_str(),
                        &[(&d.user_id, &info)],
                    ));
                }
            }
            assert_json_object(&frame::subscription_succeeded(name.as_str()));
        }
        ClientFrame::Signin(s) => {
            if let Ok(user) = serde_json::from_str::<UserData>(&s.user_data) {
                assert!(!user.id.is_empty());
                let _ = sign::verify_user(&key, &secret, SOCKET_ID, &s.user_data, &s.auth);
                if let Ok(c) = ChannelName::for_user(&user.id) {
                    assert_eq!(c.server_to_user_id(), Some(user.id.as_str()));
                }
                assert_json_object(&frame::signin_success(&s.user_data));
            }
        }
        ClientFrame::ClientEvent {
            event,
            channel,
            data,
        } => {
            assert!(event.starts_with("client-"));
            let Ok(name) = ChannelName::parse_with_max(&channel, limits.max_channel_name_len)
            else {
                return;
            };
            let Ok(event) = EventName::parse_with_max(&event, limits.max_event_name_len) else {
                return;
            };
            assert!(event.is_client_event());
            // The relayed frame carries the client's data untouched.
            #[derive(serde::Deserialize)]
            struct Relayed<'a> {
                #[serde(borrow)]
                data: &'a serde_json::value::RawValue,
            }
            let out = frame::client_event(name.as_str(), event.as_str(), &data, Some("u"));
            let relayed: Relayed<'_> = serde_json::from_str(&out).expect("relayed frame is JSON");
            assert_eq!(relayed.data.get(), data.get());
        }
    }
}
