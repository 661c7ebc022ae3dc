//! In a cluster, every node's events reach the consoles open on any node.
//!
//! This talks to the cluster's Redis itself (its own connections, its own
//! keys under the cluster's prefix), apart from the adapter:
//! - a node with a console open keeps `{prefix}:console:watching` alive (3 s expiry, renewed each second);
//! - while that key exists, every node relays the events its feed built (already within its own
//!   `events_per_second` budget) to the pub/sub channel `{prefix}:console:events`;
//! - a node with a console open hands the other nodes' events to its viewers, marked with their node id.
//!
//! With no console open anywhere this costs each node one `EXISTS` a second, and its hooks stay one load.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use protocol::AppKey;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::console_feed::{Feed, Message};
use crate::config::ClusterConfig;

/// How long a console's announcement lasts without renewal.
const WATCH_TTL_SECS: u64 = 3;

#[derive(Serialize, Deserialize)]
struct Relayed<'a> {
    node: &'a str,
    app: &'a str,
    #[serde(borrow)]
    event: &'a RawValue,
}

struct Keys {
    watching: String,
    events: String,
}

/// Starts relaying between this node's feed and the other nodes'.
pub fn start(feed: Arc<Feed>, cluster: &ClusterConfig, node: &str) {
    let client = match redis::Client::open(cluster.redis_url.as_str()) {
        Ok(c) => c,
        Err(e) => return tracing::warn!(error = %e, "console: cannot relay events between nodes"),
    };
    let keys = Arc::new(Keys {
        watching: format!("{}:console:watching", cluster.key_prefix),
        events: format!("{}:console:events", cluster.key_prefix),
    });
    let node: Arc<str> = node.into();
    actix_web::rt::spawn(announce_and_relay(client.clone(), feed.clone(), keys.clone(), node.clone()));
    actix_web::rt::spawn(receive(client, feed, keys, node));
}

/// Once a second: announce local viewers, and relay this node's events while anyone watches.
async fn announce_and_relay(client: redis::Client, feed: Arc<Feed>, keys: Arc<Keys>, node: Arc<str>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut conn = None;
    let mut relay: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tick.tick().await;
        if conn.is_none() {
            conn = client.get_multiplexed_async_connection().await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let watched: redis::RedisResult<bool> = async {
            if feed.viewers() > 0 {
                redis::cmd("SET").arg(&keys.watching).arg(&*node).arg("EX").arg(WATCH_TTL_SECS).query_async::<()>(c).await?;
            }
            redis::cmd("EXISTS").arg(&keys.watching).query_async(c).await
        }
        .await;
        let watched = match watched {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "console: redis unavailable");
                conn = None;
                false
            }
        };
        match (watched, &relay) {
            (true, None) => relay = Some(actix_web::rt::spawn(relay_events(client.clone(), feed.clone(), keys.clone(), node.clone()))),
            (false, Some(task)) => {
                // Dropping the task's receiver is what stops this node's hooks from building events.
                task.abort();
                relay = None;
            }
            _ => {}
        }
    }
}

/// Publishes this node's events (not relayed ones) for the other nodes.
async fn relay_events(client: redis::Client, feed: Arc<Feed>, keys: Arc<Keys>, node: Arc<str>) {
    let mut events = feed.relay();
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return };
    while let Some(message) = events.next().await {
        let Message::Event { app, json, relayed: false } = message else { continue };
        let Ok(event) = serde_json::from_str::<&RawValue>(&json) else { continue };
        let payload = serde_json::to_string(&Relayed { node: &node, app: app.as_str(), event }).expect("serializes");
        if let Err(e) = redis::cmd("PUBLISH").arg(&keys.events).arg(payload).query_async::<()>(&mut conn).await {
            tracing::debug!(error = %e, "console: could not relay an event");
            return;
        }
    }
}

/// Hands other nodes' events to this node's viewers, each marked with its node.
async fn receive(client: redis::Client, feed: Arc<Feed>, keys: Arc<Keys>, node: Arc<str>) {
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&keys.events).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        if let Ok(pubsub) = subscribed {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                if let Some((app, json)) = decode(msg.get_payload_bytes(), &node) {
                    feed.relayed(app, json);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Another node's event as the page shows it: the event's fields plus `node`. `None` for this node's own.
fn decode(payload: &[u8], own: &str) -> Option<(AppKey, String)> {
    let relayed: Relayed<'_> = serde_json::from_slice(payload).ok()?;
    if relayed.node == own {
        return None;
    }
    let fields = relayed.event.get().trim_start().strip_prefix('{')?;
    let json = format!("{{\"node\":{},{fields}", serde_json::to_string(relayed.node).ok()?);
    Some((AppKey::new(relayed.app).ok()?, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_events_carry_their_node_and_own_ones_are_ignored() {
        let event = RawValue::from_string(r#"{"time":1,"kind":"subscribed","channel":"a"}"#.into()).unwrap();
        let payload = serde_json::to_vec(&Relayed { node: "n2", app: "app-key", event: &event }).unwrap();
        let (app, json) = decode(&payload, "n1").unwrap();
        assert_eq!(app.as_str(), "app-key");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["node"], "n2");
        assert_eq!(v["kind"], "subscribed");
        assert!(decode(&payload, "n2").is_none());
        assert!(decode(b"garbage", "n1").is_none());
    }
}
