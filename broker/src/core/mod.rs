//! Node-local state, independent of any transport: who is connected, which
//! channels exist, who subscribes to them and who is present on them.
//!
//! The WebSocket and HTTP layers talk to this through [`crate::adapter::Adapter`],
//! which decides whether an operation stays on this node or goes to the cluster.

pub mod channel;
pub mod connection;
pub mod history;
pub mod hub;
pub mod ip_limit;
pub mod rate;
pub mod tracking;

pub use channel::ChannelCounts;
pub use connection::{ConnHandle, Framing, Message, Outgoing, Receiver};
pub use hub::Hub;
