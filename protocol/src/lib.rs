//! The Pusher Channels protocol (version 7) as plain types and functions.
//!
//! Everything here is pure: parsing and building frames, validating channel and
//! event names, generating socket ids, and computing or checking the HMAC
//! signatures that bind a subscription, a sign-in, a REST call or a webhook to an
//! app's secret. The broker and the chat-app share these so that both sides of
//! every signature are computed by one piece of code.
//!
//! The one exception is [`client`] (feature `client`), a small signed REST client
//! for triggering events, used by the chat-app instead of an external SDK.
#![forbid(unsafe_code)]

pub mod app;
pub mod channel;
pub mod error;
pub mod fallback;
pub mod frame;
pub mod history;
pub mod limits;
pub mod rest;
pub mod sign;
pub mod socket_id;
pub mod trigger;

#[cfg(feature = "client")]
pub mod client;

pub use app::{AppId, AppKey, AppSecret};
pub use channel::{ChannelKind, ChannelName, EventName};
pub use error::ErrorCode;
pub use limits::Limits;
pub use socket_id::SocketId;
