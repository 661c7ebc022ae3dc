//! What the fuzz targets share: the app they sign for, and the checks every
//! produced frame or message must pass.

use protocol::{AppKey, AppSecret, SocketId};

/// The key and secret of Pusher's published signing examples; the seeds in
/// `corpus/` are signed with them.
pub fn app() -> (AppKey, AppSecret) {
    (
        AppKey::new("278d425bdf160c739803").unwrap(),
        AppSecret::new("7ad3773142a6692b25b8").unwrap(),
    )
}

/// The socket id the seeds' subscription and sign-in signatures are made for.
pub const SOCKET_ID: SocketId = SocketId::new(1234, 1234);

/// The server clock the seeds' REST signatures are valid at (Pusher's example timestamp).
pub const NOW: u64 = 1_353_088_179;

/// Every frame the broker sends must be one JSON object.
pub fn assert_json_object(text: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => m,
        other => panic!("not a JSON object: {text:?} ({other:?})"),
    }
}
