//! In a cluster, every node's events reach the consoles open on any node.
//!
//! This talks to the cluster's Redis itself (its own connection of the adapter's
//! [`Bus`] type, so one instance or a Redis Cluster; its own keys under the cluster's
//! prefix), apart from the adapter:
//! - a node with a console open keeps `{prefix}:console:watching` alive (3 s expiry, renewed each second);
//! - while that key exists, every node relays the events its feed built (already within its own
//!   `events_per_second` budget) to the pub/sub channel `{prefix}:console:events`;
//! - a node with a console open hands the other nodes' events to its viewers, marked with their node id.
//!
//! With no console open anywhere this costs each node one `EXISTS` a second, and its hooks stay one load.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use protocol::AppKey;
use redis::PushKind;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::adapter::redis::{bus_message, Bus, Target};
use crate::config::ClusterConfig;
use crate::console_feed::{Feed, Message};

/// How long a console's announcement lasts without renewal.
const WATCH_TTL_SECS: u64 = 3;

#[derive(Serialize, Deserialize)]
struct Relayed<'a> {
    node: &'a str,
    app: &'a str,
    #[serde(borrow)]
    event: &'a RawValue,
}

struct Relay {
    target: Target,
    feed: Arc<Feed>,
    node: Arc<str>,
    watching: String,
    /// The pub/sub topic (sharded on a Redis Cluster, like the adapter's).
    events: String,
    /// Set when the connection dropped: subscribe again on the next tick.
    resubscribe: AtomicBool,
}

/// Starts relaying between this node's feed and the other nodes'.
pub fn start(feed: Arc<Feed>, cluster: &ClusterConfig, node: &str) {
    let target = match Target::parse(&cluster.redis_url) {
        Ok(t) => t,
        Err(e) => return tracing::warn!(error = %e, "console: cannot relay events between nodes"),
    };
    let relay = Arc::new(Relay {
        target,
        feed,
        node: node.into(),
        watching: format!("{}:console:watching", cluster.key_prefix),
        events: format!("{}:console:events", cluster.key_prefix),
        resubscribe: AtomicBool::new(true),
    });
    actix_web::rt::spawn(relay.run());
}

impl Relay {
    /// Connects (retrying), then once a second: announces local viewers, relays this
    /// node's events while anyone watches, and hands the others' events to local viewers.
    async fn run(self: Arc<Self>) {
        let (pushes, mut pushed) = mpsc::unbounded_channel();
        let bus = loop {
            match Bus::connect(&self.target, pushes.clone()).await {
                Ok(bus) => break bus,
                Err(e) => {
                    tracing::debug!(error = %e, "console: redis unavailable");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let receiver = self.clone();
        actix_web::rt::spawn(async move {
            while let Some(push) = pushed.recv().await {
                if push.kind == PushKind::Disconnection {
                    receiver.resubscribe.store(true, Ordering::Release);
                } else if let Some((app, json)) =
                    bus_message(&push).and_then(|p| decode(p, &receiver.node))
                {
                    receiver.feed.relayed(app, json);
                }
            }
        });
        self.announce_and_relay(bus).await;
    }

    async fn announce_and_relay(self: Arc<Self>, mut bus: Bus) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut relay: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tick.tick().await;
            if self.resubscribe.swap(false, Ordering::AcqRel) {
                if let Some(Err(e)) = bus
                    .subscribe(std::slice::from_ref(&self.events))
                    .await
                    .pop()
                {
                    tracing::debug!(error = %e, "console: cannot listen to the other nodes");
                    self.resubscribe.store(true, Ordering::Release);
                }
            }
            let watched: redis::RedisResult<bool> = async {
                if self.feed.viewers() > 0 {
                    redis::cmd("SET")
                        .arg(&self.watching)
                        .arg(&*self.node)
                        .arg("EX")
                        .arg(WATCH_TTL_SECS)
                        .query_async::<()>(&mut bus)
                        .await?;
                }
                redis::cmd("EXISTS")
                    .arg(&self.watching)
                    .query_async(&mut bus)
                    .await
            }
            .await;
            let watched = watched.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "console: redis unavailable");
                false
            });
            match (watched, &relay) {
                (true, None) => {
                    relay = Some(actix_web::rt::spawn(self.clone().relay_events(bus.clone())));
                }
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
    async fn relay_events(self: Arc<Self>, mut bus: Bus) {
        let mut events = self.feed.relay();
        while let Some(message) = events.next().await {
            let Message::Event {
                app,
                json,
                relayed: false,
            } = message
            else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<&RawValue>(&json) else {
                continue;
            };
            let payload = serde_json::to_string(&Relayed {
                node: &self.node,
                app: app.as_str(),
                event,
            })
            .expect("serializes");
            let published = redis::cmd(self.target.publish_command())
                .arg(&self.events)
                .arg(payload)
                .query_async::<()>(&mut bus)
                .await;
            if let Err(e) = published {
                tracing::debug!(error = %e, "console: could not relay an event");
                return;
            }
        }
    }
}

/// Another node's event as the page shows it: the event's fields plus `node`. `None` for this node's own.
fn decode(payload: &[u8], own: &str) -> Option<(AppKey, String)> {
    let relayed: Relayed<'_> = serde_json::from_slice(payload).ok()?;
    if relayed.node == own {
        return None;
    }
    let fields = relayed.event.get().trim_start().strip_prefix('{')?;
    let json = format!(
        "{{\"node\":{},{fields}",
        serde_json::to_string(relayed.node).ok()?
    );
    Some((AppKey::new(relayed.app).ok()?, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_events_carry_their_node_and_own_ones_are_ignored() {
        let event = RawValue::from_string(r#"{"time":1,"kind":"subscribed","channel":"a"}"#.into())
            .unwrap();
        let payload = serde_json::to_vec(&Relayed {
            node: "n2",
            app: "app-key",
            event: &event,
        })
        .unwrap();
        let (app, json) = decode(&payload, "n1").unwrap();
        assert_eq!(app.as_str(), "app-key");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["node"], "n2");
        assert_eq!(v["kind"], "subscribed");
        assert!(decode(&payload, "n2").is_none());
        assert!(decode(b"garbage", "n1").is_none());
    }
}
