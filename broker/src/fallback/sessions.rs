//! The HTTP-fallback sessions open on this node, by the id pusher-js chose
//! (`{key}/{server}/{session}` from the URL).
//!
//! A session is a connection without a socket: its queue waits here between
//! the client's requests, and each receive request (a poll, or a stream)
//! borrows the queue's receiving side while it is attached. A newer receive
//! request for the same session takes over from an older one (pusher-js
//! reopens its stream after 256 KiB). When no request has been attached for
//! `session_timeout_secs`, the session's [`Inbound`] ends, and the session
//! cleans up like a WebSocket whose client went away.
//!
//! A session belongs to the client that opened it ([`Owner`]), and holds a
//! place in its address's share of `max_sessions` for as long as it lives.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;

use dashmap::{mapref::entry::Entry, DashMap};
use futures_util::task::AtomicWaker;
use tokio::{
    sync::{mpsc, Notify, OwnedMutexGuard},
    time::Instant,
};

use super::owner::Owner;
use crate::{
    config::FallbackConfig,
    core::{
        ip_limit::{IpLimiter, IpSlot},
        Receiver,
    },
    session::{Inbound, InboundError, Incoming},
};

/// Messages from `xhr_send` requests waiting for the session task; a sender
/// waits (its request is held) when this many are queued.
const INBOUND_QUEUE: usize = 16;

/// How long a receive request waits for an older one to let go of the queue.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// Every fallback session on this node, and the bounds on their number.
pub struct Sessions {
    map: DashMap<String, Held>,
    count: AtomicUsize,
    /// Sessions per client address (`max_sessions_per_ip_percent`); `None` at 100 %.
    per_ip: Option<IpLimiter>,
    pub config: FallbackConfig,
    /// Wakes whoever waits for sessions to end (shutdown).
    emptied: Notify,
}

/// Why a new session was not made.
#[derive(Debug, PartialEq, Eq)]
pub enum NotMade {
    /// This node is at `max_sessions`.
    Full,
    /// A concurrent request made a session with this id first.
    Taken,
    /// The client's address holds its share of `max_sessions` (this many).
    AddressFull(usize),
}

/// A session in the map, with its address's place, freed when it is forgotten.
struct Held {
    session: Arc<FallbackSession>,
    _slot: Option<IpSlot>,
}

/// One session's shared part.
pub struct FallbackSession {
    /// The client that opened the session; only its requests are served.
    pub owner: Owner,
    inbound: mpsc::Sender<Result<Incoming, InboundError>>,
    receiver: Arc<tokio::sync::Mutex<Receiver>>,
    attach: Mutex<Attach>,
    /// Wakes the attached response body when a newer request takes over.
    holder: AtomicWaker,
    /// Set when the close lines were handed to the client.
    pub(super) close_delivered: Notify,
}

struct Attach {
    /// Bumped by each receive request; only the latest one may hold the queue.
    epoch: u64,
    attached: bool,
    /// When the last receive request ended.
    since: Instant,
}

/// The receiving side of a session's queue, held by one receive request.
pub struct Attached {
    pub session: Arc<FallbackSession>,
    pub receiver: OwnedMutexGuard<Receiver>,
    epoch: u64,
}

impl Sessions {
    pub fn new(config: FallbackConfig) -> Self {
        Self {
            map: DashMap::new(),
            count: AtomicUsize::new(0),
            per_ip: IpLimiter::new(config.max_sessions_per_ip().unwrap_or(0)),
            config,
            emptied: Notify::new(),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<FallbackSession>> {
        self.map.get(id).map(|h| h.session.clone())
    }

    /// Makes a session for `id`, opened by `owner` from `peer`, unless this node
    /// is at `max_sessions`, `peer`'s address holds its share of them, or `id` is
    /// taken. Returns the session and the [`Inbound`] its task reads.
    pub fn insert(
        &self,
        id: String,
        receiver: Receiver,
        owner: Owner,
        peer: Option<IpAddr>,
    ) -> Result<(Arc<FallbackSession>, SessionInbound), NotMade> {
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.config.max_sessions {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(NotMade::Full);
        }
        let slot = match (&self.per_ip, peer) {
            (Some(limiter), Some(ip)) => match limiter.try_acquire(ip) {
                Some(slot) => Some(slot),
                None => {
                    self.count.fetch_sub(1, Ordering::AcqRel);
                    return Err(NotMade::AddressFull(limiter.max()));
                }
            },
            _ => None,
        };
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let session = Arc::new(FallbackSession {
            owner,
            inbound: tx,
            receiver: Arc::new(tokio::sync::Mutex::new(receiver)),
            attach: Mutex::new(Attach {
                epoch: 0,
                attached: false,
                since: Instant::now(),
            }),
            holder: AtomicWaker::new(),
            close_delivered: Notify::new(),
        });
        match self.map.entry(id) {
            Entry::Occupied(_) => {
                self.count.fetch_sub(1, Ordering::AcqRel);
                Err(NotMade::Taken)
            }
            Entry::Vacant(v) => {
                v.insert(Held {
                    session: session.clone(),
                    _slot: slot,
                });
                let timeout = Duration::from_secs(self.config.session_timeout_secs);
                Ok((
                    session.clone(),
                    SessionInbound {
                        rx,
                        session,
                        timeout,
                    },
                ))
            }
        }
    }

    pub fn remove(&self, id: &str) {
        if self.map.remove(id).is_some() && self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.emptied.notify_waiters();
        }
    }

    /// Sessions open on this node.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves when no session is left.
    pub async fn until_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }
}

impl FallbackSession {
    /// Hands a client message to the session task; waits while its inbound queue is full.
    pub async fn deliver(&self, msg: Result<Incoming, InboundError>) {
        // The task may have ended (the session is closing); then there is no one to tell.
        let _ = self.inbound.send(msg).await;
    }

    /// Tells the session its client is alive, without waiting.
    pub fn heard(&self) {
        let _ = self.inbound.try_send(Ok(Incoming::Heard));
    }

    /// Takes the queue's receiving side for a new receive request, asking an
    /// older request that holds it to step aside. `None` if it did not in time.
    pub async fn attach(self: &Arc<Self>) -> Option<Attached> {
        let epoch = {
            let mut a = self.attach.lock();
            a.epoch += 1;
            a.attached = true;
            a.epoch
        };
        self.holder.wake();
        let receiver = tokio::time::timeout(TAKEOVER_WAIT, self.receiver.clone().lock_owned())
            .await
            .ok()?;
        Some(Attached {
            session: self.clone(),
            receiver,
            epoch,
        })
    }

    /// How long no receive request has been attached (zero while one is).
    fn detached_for(&self, now: Instant) -> Duration {
        let a = self.attach.lock();
        if a.attached {
            Duration::ZERO
        } else {
            now.saturating_duration_since(a.since)
        }
    }
}

impl Attached {
    /// False once a newer receive request wants the queue; `cx` is woken then.
    pub fn still_current(&self, cx: &std::task::Context<'_>) -> bool {
        self.session.holder.register(cx.waker());
        self.session.attach.lock().epoch == self.epoch
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut a = self.session.attach.lock();
        if a.epoch == self.epoch {
            a.attached = false;
            a.since = Instant::now();
        }
    }
}

/// What a fallback session's task reads: `xhr_send` messages, and the end
/// when the client has stopped polling or streaming for the timeout.
pub struct SessionInbound {
    rx: mpsc::Receiver<Result<Incoming, InboundError>>,
    session: Arc<FallbackSession>,
    timeout: Duration,
}

impl Inbound for SessionInbound {
    async fn next(&mut self) -> Option<Result<Incoming, InboundError>> {
        loop {
            // Sleep until the session could have expired, then look again.
            let wait = self
                .timeout
                .saturating_sub(self.session.detached_for(Instant::now()));
            if wait.is_zero() {
                return None;
            }
            if let Ok(msg) = tokio::time::timeout(wait, self.rx.recv()).await {
                return msg;
            }
        }
    }
}
