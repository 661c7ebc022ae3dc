//! Publishing to the bus: one task sends everything queued meanwhile as one round trip
//! per topic, in order, and tells each sender whether every node holding the channel
//! heard its message (`lua/publish.lua`).

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
};

use redis::RedisResult;
use tokio::sync::{mpsc, oneshot};

use super::{bus::Bus, RedisAdapter};

/// Messages handled per round.
const BATCH: usize = 512;

/// A kept event's part of a publish: keys (position, stream, epoch) and arguments.
pub(super) struct KeptArgs {
    pub keys: [String; 3],
    pub args: Vec<Vec<u8>>,
}

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
    pub(super) async fn run_publisher(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>, bus: Bus) {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            // Per topic in arrival order (events of one channel stay in order); topics at once.
            let mut by_topic: HashMap<String, Vec<Outgoing>> = HashMap::new();
            for out in batch.drain(..) {
                by_topic.entry(out.topic.clone()).or_default().push(out);
            }
            let rounds = by_topic
                .into_values()
                .map(|group| self.publish_group(bus.clone(), group));
            futures_util::future::join_all(rounds).await;
        }
    }

    async fn publish_group(&self, mut bus: Bus, group: Vec<Outgoing>) {
        let mut result = self.try_publish(&mut bus, &group).await;
        if matches!(&result, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
        {
            // A restarted or newly promoted Redis has not seen the script yet.
            let _ = self
                .scripts
                .publish
                .prepare_invoke()
                .load_async(&mut bus)
                .await;
            result = self.try_publish(&mut bus, &group).await;
        }
        match result {
            Ok(answers) => {
                for (out, (heard, holders)) in group.into_iter().zip(answers) {
                    let ok = heard >= holders;
                    if !ok {
                        self.dropped_publishes.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = out.ack.send(ok);
                }
            }
            Err(e) => {
                self.dropped_publishes
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                self.degraded(&e);
                // Dropping the senders tells every waiter it was not published.
            }
        }
    }

    async fn try_publish(&self, bus: &mut Bus, group: &[Outgoing]) -> RedisResult<Vec<(i64, i64)>> {
        let mut pipe = redis::pipe();
        let command = self.publish_command();
        for out in group {
            let mut invocation = self.scripts.publish.key(&out.shares);
            invocation.arg(command).arg(&out.topic).arg(&out.payload);
            if let Some(kept) = &out.history {
                for k in &kept.keys {
                    invocation.key(k);
                }
                for a in &kept.args {
                    invocation.arg(a);
                }
            }
            pipe.invoke_script(&invocation);
        }
        // Kept events answer a third number (their position), which the sender does not need.
        let answers: Vec<Vec<i64>> = pipe.query_async(bus).await?;
        Ok(answers
            .into_iter()
            .map(|a| {
                (
                    a.first().copied().unwrap_or(0),
                    a.get(1).copied().unwrap_or(0),
                )
            })
            .collect())
    }
}
