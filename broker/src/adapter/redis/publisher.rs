//! Publishing to the bus: one task sends everything queued meanwhile as one round trip
//! per topic, in order, and tells each sender whether every node holding the channel
//! heard its message ([`Transport::publish`], `lua/publish.lua` on Redis).

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
};

use tokio::sync::{mpsc, oneshot};

use super::{
    transport::{KeptArgs, Message, Transport},
    RedisAdapter,
};

/// Messages handled per round.
const BATCH: usize = 512;

/// One message for a topic.
pub(super) struct Outgoing {
    pub topic: String,
    /// The channel's `shares` key (same slot as the topic).
    pub shares: String,
    pub payload: Vec<u8>,
    /// For a kept event: the history keys and arguments `lua/publish.lua` takes
    /// (then `payload` is the header line, and the script adds the frame and position).
    pub history: Option<KeptArgs>,
    /// Told `true` once every node holding the channel heard it.
    pub ack: oneshot::Sender<bool>,
}

impl RedisAdapter {
    pub(super) async fn run_publisher(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Outgoing>,
        bus: Arc<dyn Transport>,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            // Per topic in arrival order (events of one channel stay in order); topics at once.
            let mut by_topic: HashMap<String, Vec<Outgoing>> = HashMap::new();
            for out in batch.drain(..) {
                by_topic.entry(out.topic.clone()).or_default().push(out);
            }
            let rounds = by_topic
                .into_values()
                .map(|group| self.publish_group(bus.as_ref(), group));
            futures_util::future::join_all(rounds).await;
        }
    }

    async fn publish_group(&self, bus: &dyn Transport, group: Vec<Outgoing>) {
        let (topic, shares) = (group[0].topic.clone(), group[0].shares.clone());
        let (messages, acks): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|out| {
                let message = Message {
                    payload: out.payload,
                    history: out.history,
                };
                (message, out.ack)
            })
            .unzip();
        match bus.publish(&shares, &topic, &messages).await {
            Ok(answers) => {
                for (ack, heard) in acks.into_iter().zip(answers) {
                    let ok = heard.by_all();
                    if !ok {
                        self.dropped_publishes.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = ack.send(ok);
                }
            }
            Err(e) => {
                self.dropped_publishes
                    .fetch_add(acks.len() as u64, Ordering::Relaxed);
                self.degraded(&e);
                // Dropping the senders tells every waiter it was not published.
            }
        }
    }
}
