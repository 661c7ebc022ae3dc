//! Interest: which bus topics this node listens to.
//!
//! A node subscribes to a channel's topic while it has a local subscriber (or a join
//! on its way), so it only receives the traffic of channels it holds. Every local
//! subscription takes a reference; the first one sends SUBSCRIBE and waits until Redis
//! confirms it, the last one's release sends UNSUBSCRIBE. The caller subscribes
//! *before* it is counted in Redis and before `subscription_succeeded` is sent, so an
//! event published after that reaches this node; it releases only *after* its share is
//! taken out of Redis, so a publish never expects this node while it is not listening.
//!
//! SUBSCRIBE and UNSUBSCRIBE for one topic must reach Redis in the order they were
//! decided (an UNSUBSCRIBE overtaking a later SUBSCRIBE would leave a subscriber deaf),
//! so one task sends them all, in order, from a queue filled while the topic's entry is
//! locked. The map is sharded: a subscribe storm over many channels does not queue
//! behind one node-wide lock, while the decisions about one topic (always in one shard)
//! stay in order.

use std::{collections::HashMap, sync::Arc};

use dashmap::{mapref::entry::Entry, DashMap};
use tokio::sync::{mpsc, oneshot};

use super::transport::Transport;

#[derive(Debug)]
pub(super) enum Command {
    Subscribe(String),
    Unsubscribe(String),
}

#[derive(Debug)]
enum State {
    /// SUBSCRIBE sent; these wait for its answer.
    Pending(Vec<oneshot::Sender<bool>>),
    Live,
    /// SUBSCRIBE failed (Redis unreachable): sent again by [`Interest::resubscribe_all`].
    Failed,
}

#[derive(Debug)]
struct Topic {
    refs: usize,
    state: State,
}

/// A reference on a topic, and whether the node listens to it yet.
pub(super) enum Hold {
    Ready(bool),
    Waiting(oneshot::Receiver<bool>),
}

impl Hold {
    /// `true` once the node listens to the topic; `false` if Redis could not be asked.
    pub async fn wait(self) -> bool {
        match self {
            Self::Ready(ok) => ok,
            Self::Waiting(rx) => rx.await.unwrap_or(false),
        }
    }
}

/// The topics this node listens to, reference-counted.
pub(super) struct Interest {
    topics: DashMap<String, Topic>,
    queue: mpsc::UnboundedSender<Command>,
}

impl Interest {
    /// The interest and the receiving end of its command queue, for [`Interest::run`].
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (queue, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Self {
                topics: DashMap::new(),
                queue,
            }),
            rx,
        )
    }

    /// Takes a reference on `topic` now; the returned [`Hold`] resolves once this node
    /// listens to it (`true`), or `false` if Redis could not be asked. The reference is
    /// held either way, until [`Interest::release`].
    pub fn hold(&self, topic: &str) -> Hold {
        // The entry stays locked until the command is queued: per-topic order.
        match self.topics.entry(topic.to_owned()) {
            Entry::Occupied(mut t) => {
                let t = t.get_mut();
                t.refs += 1;
                match &mut t.state {
                    State::Live => Hold::Ready(true),
                    State::Failed => Hold::Ready(false),
                    State::Pending(waiters) => {
                        let (tx, rx) = oneshot::channel();
                        waiters.push(tx);
                        Hold::Waiting(rx)
                    }
                }
            }
            Entry::Vacant(slot) => {
                let (tx, rx) = oneshot::channel();
                let _ = self.queue.send(Command::Subscribe(topic.to_owned()));
                slot.insert(Topic {
                    refs: 1,
                    state: State::Pending(vec![tx]),
                });
                Hold::Waiting(rx)
            }
        }
    }

    /// Drops a reference; the last one stops listening.
    pub fn release(&self, topic: &str) {
        let Entry::Occupied(mut t) = self.topics.entry(topic.to_owned()) else {
            return;
        };
        t.get_mut().refs -= 1;
        if t.get().refs == 0 {
            let _ = self.queue.send(Command::Unsubscribe(topic.to_owned()));
            t.remove();
        }
    }

    /// Topics listened to (or being subscribed).
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// After the connection was lost: marks every topic as needing SUBSCRIBE again and
    /// sends it; resolves `true` once Redis confirmed them all.
    pub async fn resubscribe_all(&self) -> bool {
        let waits: Vec<_> = self
            .topics
            .iter_mut()
            .map(|mut t| {
                let (tx, rx) = oneshot::channel();
                let _ = self.queue.send(Command::Subscribe(t.key().clone()));
                match &mut t.state {
                    State::Pending(waiters) => waiters.push(tx),
                    state => *state = State::Pending(vec![tx]),
                }
                rx
            })
            .collect();
        futures_util::future::join_all(waits)
            .await
            .into_iter()
            .all(|w| w.unwrap_or(false))
    }

    /// Answers the waiters of `topic` if it is still wanted.
    fn settle(&self, topic: &str, ok: bool) {
        let Some(mut t) = self.topics.get_mut(topic) else {
            return;
        };
        if let State::Pending(waiters) =
            std::mem::replace(&mut t.state, if ok { State::Live } else { State::Failed })
        {
            for w in waiters {
                let _ = w.send(ok);
            }
        }
    }

    /// Sends the queued commands to Redis in order, for the life of the process. What is
    /// queued meanwhile goes as one batch: per topic only its last command matters.
    pub async fn run(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Command>,
        bus: Arc<dyn Transport>,
    ) {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 1024).await > 0 {
            let mut last: HashMap<String, bool> = HashMap::new();
            for command in batch.drain(..) {
                match command {
                    Command::Subscribe(t) => last.insert(t, true),
                    Command::Unsubscribe(t) => last.insert(t, false),
                };
            }
            let (subscribe, unsubscribe): (Vec<_>, Vec<_>) =
                last.into_iter().partition(|(_, sub)| *sub);
            let unsubscribe: Vec<String> = unsubscribe.into_iter().map(|(t, _)| t).collect();
            let subscribe: Vec<String> = subscribe.into_iter().map(|(t, _)| t).collect();
            if !unsubscribe.is_empty() {
                // Failing to stop listening costs only traffic, and a lost connection forgets it anyway.
                let _ = bus.unsubscribe(&unsubscribe).await;
            }
            if !subscribe.is_empty() {
                let results = bus.subscribe(&subscribe).await;
                for (topic, ok) in subscribe.iter().zip(results) {
                    if let Err(e) = &ok {
                        tracing::debug!(error = %e, topic, "subscribe failed");
                    }
                    self.settle(topic, ok.is_ok());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn references_decide_subscribe_and_unsubscribe() {
        let (interest, mut rx) = Interest::new();
        let first = interest.hold("t");
        assert!(matches!(rx.try_recv(), Ok(Command::Subscribe(t)) if t == "t"));
        let second = interest.hold("t");
        assert!(rx.try_recv().is_err(), "the second reference sends nothing");
        interest.settle("t", true);
        assert!(first.wait().await && second.wait().await);
        assert!(
            matches!(interest.hold("t"), Hold::Ready(true)),
            "live: answered at once"
        );
        interest.release("t");
        interest.release("t");
        assert!(rx.try_recv().is_err());
        interest.release("t");
        assert!(matches!(rx.try_recv(), Ok(Command::Unsubscribe(t)) if t == "t"));
        assert_eq!(interest.len(), 0);
    }

    #[test]
    fn each_topics_commands_are_queued_in_the_order_they_were_decided() {
        // Threads holding and releasing the same few topics at once: for each topic the
        // queue must alternate SUBSCRIBE, UNSUBSCRIBE, ... (an UNSUBSCRIBE queued after
        // a later SUBSCRIBE would leave a held topic unheard).
        let (interest, mut rx) = Interest::new();
        let topics = ["a", "b", "c"];
        std::thread::scope(|s| {
            for t in 0..4 {
                let interest = &interest;
                s.spawn(move || {
                    for i in 0..2_000 {
                        let topic = topics[(i + t) % topics.len()];
                        drop(interest.hold(topic));
                        interest.release(topic);
                    }
                });
            }
        });
        assert_eq!(interest.len(), 0);
        let mut last: HashMap<String, bool> = HashMap::new();
        while let Ok(command) = rx.try_recv() {
            let (topic, subscribe) = match command {
                Command::Subscribe(t) => (t, true),
                Command::Unsubscribe(t) => (t, false),
            };
            let before = last.insert(topic.clone(), subscribe).unwrap_or(false);
            assert_ne!(before, subscribe, "{topic}: two in a row");
        }
        assert!(last.values().all(|subscribed| !subscribed), "all released");
    }

    #[tokio::test]
    async fn a_failed_subscribe_is_retried_by_resubscribe_all() {
        let (interest, mut rx) = Interest::new();
        let first = interest.hold("t");
        rx.try_recv().unwrap();
        interest.settle("t", false);
        assert!(!first.wait().await);
        let i = interest.clone();
        let again = tokio::spawn(async move { i.resubscribe_all().await });
        tokio::task::yield_now().await;
        assert!(matches!(rx.recv().await, Some(Command::Subscribe(t)) if t == "t"));
        interest.settle("t", true);
        assert!(again.await.unwrap());
    }
}
