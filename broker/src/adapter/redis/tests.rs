//! The cluster's rules on an in-memory transport (`memory`): several nodes, each with
//! its own apps and hubs, sharing one store, as broker processes share one Redis.

use std::{sync::Arc, time::Duration};

use protocol::{ChannelName, SocketId};
use serde_json::value::RawValue;

use super::{
    keys::Keys,
    memory::{MemoryBus, MemoryStore},
    transport::Transport,
    RedisAdapter,
};
use crate::{
    adapter::{Adapter, NotPublished},
    apps::{App, AppRegistry},
    config::{AppConfig, ClusterConfig, WebhookConfig},
    core::{
        connection::{queue, tests::queued, Receiver},
        hub::ChannelFull,
        ChannelCounts, ConnHandle,
    },
    webhooks::{WebhookEvent, WebhookReceiver, WebhookSettings},
};

const PREFIX: &str = "t";
const DEBOUNCE_MS: u64 = 5_000;

/// One broker node on the shared store.
struct Node {
    adapter: Arc<RedisAdapter>,
    apps: Arc<AppRegistry>,
    bus: Arc<MemoryBus>,
    webhooks: WebhookReceiver,
    number: u64,
}

impl Node {
    /// A node with app "1" (webhooks on, at most 3 presence members), registered and healthy.
    async fn start(store: &Arc<MemoryStore>, number: u64) -> Self {
        let mut app = AppConfig::default_app();
        app.webhooks = vec![WebhookConfig {
            url: "http://127.0.0.1:9/".into(),
            event_types: Vec::new(),
        }];
        app.limits.max_presence_members = 3;
        let (apps, mut receivers) = AppRegistry::new(&[app], &WebhookSettings::default(), false);
        let apps = Arc::new(apps);
        let config = ClusterConfig {
            redis_url: "redis://127.0.0.1:1/".into(),
            key_prefix: PREFIX.into(),
            heartbeat_secs: 1,
            node_timeout_secs: 3,
            publish_queue: 1024,
        };
        let adapter =
            Arc::new(RedisAdapter::new(config, Duration::from_millis(DEBOUNCE_MS)).unwrap());
        let (bus, pushed) = store.connect();
        adapter.attach(apps.clone(), bus.clone(), pushed);
        adapter.heartbeat(&apps, bus.as_ref(), true).await.unwrap();
        assert!(adapter.healthy(), "registered and reconciled");
        Self {
            adapter,
            apps,
            bus,
            webhooks: receivers.pop().unwrap(),
            number,
        }
    }

    fn app(&self) -> Arc<App> {
        self.apps.by_id("1").unwrap()
    }

    fn conn(&self, n: u64) -> (ConnHandle, Receiver) {
        queue(SocketId::new(self.number, n), 64)
    }

    fn webhooks(&mut self) -> Vec<WebhookEvent> {
        self.webhooks.queued()
    }

    async fn counts(&self, channel: &ChannelName) -> ChannelCounts {
        self.adapter.channel_counts(&self.app(), channel).await
    }

    async fn heartbeat(&self) {
        self.adapter
            .heartbeat(&self.apps, self.bus.as_ref(), false)
            .await
            .unwrap();
    }

    async fn claim_due(&self) {
        self.adapter
            .claim_due(&self.apps, self.bus.as_ref())
            .await
            .unwrap();
    }
}

fn ch(name: &str) -> ChannelName {
    ChannelName::parse(name).unwrap()
}

fn info(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

/// Lets the nodes' tasks (interest, publisher, receiver) run.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

fn occupied(channel: &str) -> WebhookEvent {
    WebhookEvent::ChannelOccupied {
        channel: channel.into(),
    }
}

fn vacated(channel: &str) -> WebhookEvent {
    WebhookEvent::ChannelVacated {
        channel: channel.into(),
    }
}

fn member_added(channel: &str, user: &str) -> WebhookEvent {
    WebhookEvent::MemberAdded {
        channel: channel.into(),
        user_id: user.into(),
    }
}

fn member_removed(channel: &str, user: &str) -> WebhookEvent {
    WebhookEvent::MemberRemoved {
        channel: channel.into(),
        user_id: user.into(),
    }
}

/// The frames among `frames` for `event` that mention `user`.
fn count_of(frames: &[String], event: &str, user: &str) -> usize {
    frames
        .iter()
        .filter(|f| f.contains(event) && f.contains(user))
        .count()
}

#[actix_rt::test]
async fn occupied_and_vacated_are_decided_once_for_the_cluster() {
    let store = MemoryStore::new();
    let mut a = Node::start(&store, 1).await;
    let mut b = Node::start(&store, 2).await;
    let news = ch("news");
    let (a1, _ra) = a.conn(1);
    let (b1, _rb) = b.conn(1);

    let sub = a.adapter.subscribe(&a.app(), &news, &a1).await.unwrap();
    assert!(sub.occupied);
    assert_eq!(sub.subscriptions, 1);
    let sub = b.adapter.subscribe(&b.app(), &news, &b1).await.unwrap();
    assert!(!sub.occupied, "occupied once, on the first node");
    assert_eq!(sub.subscriptions, 2);
    assert!(b.adapter.subscribe(&b.app(), &news, &b1).await.is_none());
    let two = ChannelCounts {
        subscriptions: 2,
        users: 0,
    };
    assert_eq!(a.adapter.channel_counts(&a.app(), &news).await, two);
    assert_eq!(
        b.adapter.channels(&b.app(), "ne").await,
        [(news.clone(), two)]
    );
    assert!(b.adapter.channels(&b.app(), "private-").await.is_empty());
    assert_eq!(a.webhooks(), [occupied("news")]);
    assert!(b.webhooks().is_empty());

    let left = a.adapter.unsubscribe(&a.app(), &news, a1.id).await.unwrap();
    assert!(!left.vacated);
    assert_eq!(left.subscriptions, 1);
    let left = b.adapter.unsubscribe(&b.app(), &news, b1.id).await.unwrap();
    assert!(left.vacated, "vacated once, by the last node");
    assert!(a
        .adapter
        .unsubscribe(&a.app(), &news, a1.id)
        .await
        .is_none());
    assert!(a.adapter.channels(&a.app(), "").await.is_empty());
    let keys = Keys::new(PREFIX).channel("1", "news");
    assert_eq!(store.int(&keys.count()), None);
    assert!(store.hash(&keys.shares()).is_empty());

    // channel_vacated waits in the store for the window, then one node sends it.
    assert!(a.webhooks().is_empty() && b.webhooks().is_empty());
    a.claim_due().await;
    assert!(a.webhooks().is_empty(), "not due yet");
    store.advance_ms(DEBOUNCE_MS as i64);
    b.claim_due().await;
    a.claim_due().await;
    assert_eq!(b.webhooks(), [vacated("news")]);
    assert!(a.webhooks().is_empty(), "claimed by exactly one node");
    assert!(store.sorted(&Keys::new(PREFIX).held_index()).is_empty());
}

#[actix_rt::test]
async fn coming_back_within_the_window_on_another_node_sends_neither_webhook() {
    let store = MemoryStore::new();
    let mut a = Node::start(&store, 1).await;
    let mut b = Node::start(&store, 2).await;
    let (news, room) = (ch("news"), ch("presence-room"));
    let (a1, _ra) = a.conn(1);
    a.adapter.subscribe(&a.app(), &news, &a1).await.unwrap();
    a.adapter
        .join(&a.app(), &room, &a1, "u1", info("null"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a.webhooks(),
        [
            occupied("news"),
            occupied("presence-room"),
            member_added("presence-room", "u1")
        ]
    );
    a.adapter.unsubscribe(&a.app(), &news, a1.id).await.unwrap();
    a.adapter.unsubscribe(&a.app(), &room, a1.id).await.unwrap();

    // A reload that lands on the other node.
    let (b1, _rb) = b.conn(1);
    let sub = b.adapter.subscribe(&b.app(), &news, &b1).await.unwrap();
    assert!(sub.occupied);
    let joined = b
        .adapter
        .join(&b.app(), &room, &b1, "u1", info("null"))
        .await
        .unwrap()
        .unwrap();
    assert!(joined.first);
    store.advance_ms(DEBOUNCE_MS as i64);
    a.claim_due().await;
    b.claim_due().await;
    assert!(a.webhooks().is_empty(), "{:?}", a.webhooks());
    assert!(b.webhooks().is_empty(), "{:?}", b.webhooks());
}

#[actix_rt::test]
async fn a_broadcast_reaches_the_other_nodes_and_says_when_one_missed_it() {
    let store = MemoryStore::new();
    let a = Node::start(&store, 1).await;
    let b = Node::start(&store, 2).await;
    let c = Node::start(&store, 3).await;
    let news = ch("news");
    let (a1, mut ra) = a.conn(1);
    let (b1, mut rb) = b.conn(1);
    a.adapter.subscribe(&a.app(), &news, &a1).await.unwrap();
    b.adapter.subscribe(&b.app(), &news, &b1).await.unwrap();

    let published = a.adapter.broadcast(&a.app(), &news, "frame-1".into(), None);
    assert_eq!(published.acknowledged().await, Ok(()));
    settle().await;
    assert_eq!(queued(&mut ra), ["frame-1"], "once: a node ignores its own");
    assert_eq!(queued(&mut rb), ["frame-1"]);
    assert_eq!(c.adapter.bus_stats().received, 0, "c holds no channel");
    assert_eq!(b.adapter.bus_stats().topics, 1);

    // The sender's subscriber is skipped everywhere when it is the one excluded.
    b.adapter
        .broadcast(&b.app(), &news, "frame-2".into(), Some(a1.id))
        .acknowledged()
        .await
        .unwrap();
    settle().await;
    assert!(queued(&mut ra).is_empty());
    assert_eq!(queued(&mut rb), ["frame-2"]);

    // A node holding a share of the channel but not listening (it lost its connection).
    let (ghost, _pushes) = store.connect();
    let keys = Keys::new(PREFIX).channel("1", "news");
    ghost.adjust(&keys, "ghost", 1, None).await.unwrap();
    let published = a.adapter.broadcast(&a.app(), &news, "frame-3".into(), None);
    assert_eq!(published.acknowledged().await, Err(NotPublished));
    assert_eq!(a.adapter.dropped_messages(), 1);
    settle().await;
    assert_eq!(queued(&mut rb), ["frame-3"], "those listening still got it");
}

#[actix_rt::test]
async fn presence_lists_members_across_nodes_and_announces_first_and_last_connections() {
    let store = MemoryStore::new();
    let mut a = Node::start(&store, 1).await;
    let mut b = Node::start(&store, 2).await;
    let room = ch("presence-room");
    let (a1, mut ra1) = a.conn(1);
    let (b1, mut rb1) = b.conn(1);
    let (b2, mut rb2) = b.conn(2);

    let joined = a
        .adapter
        .join(&a.app(), &room, &a1, "u1", info(r#"{"name":"One"}"#))
        .await
        .unwrap()
        .unwrap();
    assert!(joined.first && joined.subscribed.occupied);
    let list = queued(&mut ra1);
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].contains("subscription_succeeded") && list[0].contains("One"));

    let joined = b
        .adapter
        .join(&b.app(), &room, &b1, "u2", info("null"))
        .await
        .unwrap()
        .unwrap();
    assert!(joined.first && !joined.subscribed.occupied);
    let list = queued(&mut rb1);
    assert_eq!(list.len(), 1, "the list and nothing before it: {list:?}");
    assert!(list[0].contains("u1") && list[0].contains("u2"));
    settle().await;
    let heard = queued(&mut ra1);
    assert_eq!(count_of(&heard, "member_added", "u2"), 1, "{heard:?}");

    // u1's second connection, on the other node: not first, nobody is told.
    let joined = b
        .adapter
        .join(&b.app(), &room, &b2, "u1", info(r#"{"name":"One"}"#))
        .await
        .unwrap()
        .unwrap();
    assert!(!joined.first);
    settle().await;
    assert!(queued(&mut ra1).is_empty());
    assert!(queued(&mut rb1).is_empty());
    assert!(queued(&mut rb2)[0].contains("subscription_succeeded"));
    let mut users = a.adapter.users(&a.app(), &room).await;
    users.sort();
    assert_eq!(users, ["u1", "u2"]);
    assert_eq!(
        b.adapter.channel_counts(&b.app(), &room).await,
        ChannelCounts {
            subscriptions: 3,
            users: 2
        }
    );

    // At most 3 members in the whole cluster.
    let (a2, _ra2) = a.conn(2);
    let (b3, _rb3) = b.conn(3);
    assert!(a
        .adapter
        .join(&a.app(), &room, &a2, "u3", info("null"))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        b.adapter
            .join(&b.app(), &room, &b3, "u4", info("null"))
            .await
            .unwrap_err(),
        ChannelFull
    );
    assert!(
        b.adapter
            .join(&b.app(), &room, &b3, "u1", info("null"))
            .await
            .unwrap()
            .is_some(),
        "a member's further connection is not a new member"
    );
    settle().await;
    queued(&mut ra1);
    queued(&mut rb1);

    // u1 leaves on a, then on b: announced on their last connection (b3) only.
    let left = a.adapter.unsubscribe(&a.app(), &room, a1.id).await.unwrap();
    assert_eq!(left.user_left, None);
    let left = b.adapter.unsubscribe(&b.app(), &room, b2.id).await.unwrap();
    assert_eq!(left.user_left, None);
    let left = b.adapter.unsubscribe(&b.app(), &room, b3.id).await.unwrap();
    assert_eq!(left.user_left.as_deref(), Some("u1"));
    settle().await;
    let heard = queued(&mut rb1);
    assert_eq!(count_of(&heard, "member_removed", "u1"), 1, "{heard:?}");

    assert_eq!(
        a.webhooks(),
        [
            occupied("presence-room"),
            member_added("presence-room", "u1"),
            member_added("presence-room", "u3")
        ]
    );
    assert_eq!(b.webhooks(), [member_added("presence-room", "u2")]);
    store.advance_ms(DEBOUNCE_MS as i64);
    a.claim_due().await;
    assert_eq!(a.webhooks(), [member_removed("presence-room", "u1")]);
}

#[actix_rt::test]
async fn a_dead_nodes_share_is_removed_by_one_other_node() {
    let store = MemoryStore::new();
    let mut a = Node::start(&store, 1).await;
    let b = Node::start(&store, 2).await;
    let c = Node::start(&store, 3).await;
    let (news, room) = (ch("news"), ch("presence-room"));
    let (a1, mut ra1) = a.conn(1);
    let (b1, _rb1) = b.conn(1);
    a.adapter.subscribe(&a.app(), &news, &a1).await.unwrap();
    b.adapter.subscribe(&b.app(), &news, &b1).await.unwrap();
    a.adapter
        .join(&a.app(), &room, &a1, "u1", info("null"))
        .await
        .unwrap()
        .unwrap();
    b.adapter
        .join(&b.app(), &room, &b1, "u2", info("null"))
        .await
        .unwrap()
        .unwrap();
    settle().await;
    queued(&mut ra1);
    a.webhooks();

    // b stops heartbeating: its `alive` key expires.
    let keys = Keys::new(PREFIX);
    store.delete(&keys.alive(b.adapter.node_id()));
    a.heartbeat().await;
    c.heartbeat().await;
    assert_eq!(
        a.adapter.channel_counts(&a.app(), &news).await,
        ChannelCounts {
            subscriptions: 1,
            users: 0
        }
    );
    assert_eq!(c.adapter.users(&c.app(), &room).await, ["u1"]);
    settle().await;
    let heard = queued(&mut ra1);
    assert_eq!(
        count_of(&heard, "member_removed", "u2"),
        1,
        "announced once: {heard:?}"
    );
    assert!(!store.set(&keys.nodes()).contains(b.adapter.node_id()));
    assert!(store
        .set(&keys.node_channels(b.adapter.node_id()))
        .is_empty());
    store.advance_ms(DEBOUNCE_MS as i64);
    a.claim_due().await;
    assert_eq!(a.webhooks(), [member_removed("presence-room", "u2")]);
}

#[actix_rt::test]
async fn a_node_serves_locally_while_the_store_is_down_and_writes_back_when_it_returns() {
    let store = MemoryStore::new();
    let a = Node::start(&store, 1).await;
    let b = Node::start(&store, 2).await;
    let (news, other, room) = (ch("news"), ch("other"), ch("presence-room"));
    let (a1, _ra1) = a.conn(1);
    let (a2, mut ra2) = a.conn(2);
    a.adapter.subscribe(&a.app(), &news, &a1).await.unwrap();

    store.set_down(true);
    settle().await;
    assert!(!a.adapter.healthy());
    // Served from the local hub meanwhile.
    assert!(a.adapter.subscribe(&a.app(), &other, &a2).await.is_some());
    let joined = a
        .adapter
        .join(&a.app(), &room, &a2, "u1", info("null"))
        .await
        .unwrap()
        .unwrap();
    assert!(joined.first);
    assert!(queued(&mut ra2)
        .iter()
        .any(|f| f.contains("subscription_succeeded")));
    assert!(a
        .adapter
        .unsubscribe(&a.app(), &news, a1.id)
        .await
        .is_some());
    assert_eq!(
        a.adapter
            .channel_counts(&a.app(), &other)
            .await
            .subscriptions,
        1,
        "answered locally"
    );
    let broadcast = a.adapter.broadcast(&a.app(), &other, "x".into(), None);
    assert_eq!(broadcast.acknowledged().await, Err(NotPublished));

    store.set_down(false);
    a.heartbeat().await;
    b.heartbeat().await;
    assert!(a.adapter.healthy() && b.adapter.healthy());
    assert_eq!(b.counts(&news).await.subscriptions, 0);
    assert_eq!(b.counts(&other).await.subscriptions, 1);
    assert_eq!(
        b.counts(&room).await,
        ChannelCounts {
            subscriptions: 1,
            users: 1
        }
    );
    assert_eq!(b.adapter.users(&b.app(), &room).await, ["u1"]);

    // Listening again: b's broadcast reaches a's subscriber.
    let (b1, _rb1) = b.conn(1);
    b.adapter.subscribe(&b.app(), &other, &b1).await.unwrap();
    b.adapter
        .broadcast(&b.app(), &other, "after".into(), None)
        .acknowledged()
        .await
        .unwrap();
    settle().await;
    assert!(queued(&mut ra2).iter().any(|f| f == "after"));
}

#[actix_rt::test]
async fn a_node_declared_dead_writes_its_state_back_at_once() {
    let store = MemoryStore::new();
    let a = Node::start(&store, 1).await;
    let b = Node::start(&store, 2).await;
    let news = ch("news");
    let (a1, _ra1) = a.conn(1);
    a.adapter.subscribe(&a.app(), &news, &a1).await.unwrap();

    // a stalled: b cleaned up after it.
    let keys = Keys::new(PREFIX);
    store.delete(&keys.alive(a.adapter.node_id()));
    b.heartbeat().await;
    assert_eq!(
        b.adapter
            .channel_counts(&b.app(), &news)
            .await
            .subscriptions,
        0
    );
    // a's next heartbeat finds itself gone from the node set and writes its share back.
    a.heartbeat().await;
    a.heartbeat().await;
    assert_eq!(
        b.adapter
            .channel_counts(&b.app(), &news)
            .await
            .subscriptions,
        1
    );
    assert!(store.set(&keys.nodes()).contains(a.adapter.node_id()));
}
