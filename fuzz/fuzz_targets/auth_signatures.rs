//! Subscription, sign-in and webhook signatures: whatever is signed verifies,
//! a changed signature does not, and any `auth` text a client sends is checked
//! without panicking. Input, one field a line: secret, socket id, channel,
//! channel_data (an empty line for none), user_data, the client's `auth`. The
//! input's length and first byte choose which signature character is changed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{sign, AppSecret, SocketId};
use protocol_fuzz::{app, SOCKET_ID};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(6, '\n');
    let mut field = || lines.next().unwrap_or_default();
    let (secret, socket, channel, channel_data, user_data, client_auth) =
        (field(), field(), field(), field(), field(), field());
    let (key, fixed) = app();
    let secret = AppSecret::new(secret).unwrap_or(fixed);
    let socket: SocketId = socket.parse().unwrap_or(SOCKET_ID);
    let sid = socket.to_string();
    let channel_data = (!channel_data.is_empty()).then_some(channel_data);
    let (at, with) = (data.len(), data.first().copied().unwrap_or(0));

    let auth = sign::sign_channel(&key, &secret, &sid, channel, channel_data);
    let verify_channel =
        |auth: &str| sign::verify_channel(&key, &secret, socket, channel, channel_data, auth);
    assert_eq!(verify_channel(&auth), Ok(()));
    assert!(verify_channel(&tamper(&auth, at, with)).is_err());
    if verify_channel(client_auth).is_ok() {
        assert!(
            client_auth.eq_ignore_ascii_case(&auth),
            "{client_auth:?} verified in place of {auth:?}"
        );
    }

    let auth = sign::sign_user(&key, &secret, &sid, user_data);
    let verify_user = |auth: &str| sign::verify_user(&key, &secret, socket, user_data, auth);
    assert_eq!(verify_user(&auth), Ok(()));
    assert!(verify_user(&tamper(&auth, at, with)).is_err());
    if verify_user(client_auth).is_ok() {
        assert!(client_auth.eq_ignore_ascii_case(&auth));
    }

    let body = user_data.as_bytes();
    let signature = sign::sign_webhook(&secret, body);
    assert!(sign::verify_webhook(&secret, body, &signature));
    assert!(!sign::verify_webhook(
        &secret,
        body,
        &tamper(&signature, at, with)
    ));
    let _ = sign::verify_webhook(&secret, body, client_auth);
});

/// Changes one character of `auth` to a different one that is not the same hex
/// digit in the other case (`a` and `A` decode to the same byte, so both verify).
fn tamper(auth: &str, at: usize, with: u8) -> String {
    let mut bytes = auth.as_bytes().to_vec();
    let i = at % bytes.len();
    let mut new = with % 127 + 1;
    while new.eq_ignore_ascii_case(&bytes[i]) {
        new = new % 127 + 1;
    }
    bytes[i] = new;
    String::from_utf8(bytes).expect("ASCII in, ASCII out")
}
