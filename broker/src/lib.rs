//! A Pusher Channels compatible broker.
//!
//! - [`config`]: settings from file and environment.
//! - [`apps`]: the tenants, by key and id; [`app_store`]: apps kept in PostgreSQL.
//! - [`core`]: node-local state (connections' queues, channels, presence).
//! - [`adapter`]: the seam between this node and a cluster.
//! - [`ws`]: the WebSocket protocol, one task per connection.
//! - [`http`]: the signed REST API.
//! - [`webhooks`]: batched, signed, bounded notifications to the app's server.
//! - [`console`]: the built-in debug console at `/console` (off unless a token is set);
//!   [`console_feed`]: the hooks that feed its live log.

pub mod adapter;
pub mod app_store;
pub mod apps;
pub mod config;
pub mod console;
pub mod console_feed;
pub mod core;
pub mod http;
pub mod metrics;
pub mod server;
pub mod state;
pub mod webhooks;
pub mod ws;
