//! A Pusher Channels compatible broker.
//!
//! - [`config`]: settings from file and environment.
//! - [`apps`]: the tenants, by key and id; [`app_store`]: apps kept in PostgreSQL.
//! - [`core`]: node-local state (connections' queues, channels, presence).
//! - [`adapter`]: the seam between this node and a cluster.
//! - [`session`]: the Pusher protocol, one task per connection, whatever the transport.
//! - [`ws`]: the WebSocket transport; [`fallback`]: the HTTP-fallback transports (`xhr_streaming`, `xhr_polling`).
//! - [`http`]: the signed REST API.
//! - [`webhooks`]: batched, signed, bounded notifications to the app's server.
//! - [`console`]: the built-in debug console at `/console` (off unless a token is set);
//!   [`console_feed`]: the hooks that feed its live log.
//!
//! Only what the binary and the integration tests use is public: [`config`],
//! [`server`] (`Server::build`, `run_until`) and [`state`]; the rest is crate-private.
#![forbid(unsafe_code)]

pub(crate) mod adapter;
pub(crate) mod app_store;
pub(crate) mod apps;
pub mod config;
pub(crate) mod console;
pub(crate) mod console_feed;
pub(crate) mod core;
pub(crate) mod fallback;
pub(crate) mod http;
pub(crate) mod metrics;
pub mod server;
pub(crate) mod session;
pub mod state;
pub(crate) mod webhooks;
pub(crate) mod ws;
