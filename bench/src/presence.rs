//! `presence`: N members over presence channels, each watched by one extra
//! connection; members leave (unsubscribe) and rejoin (subscribe) on their open
//! connections at a fixed overall rate, and the watcher times each
//! `member_removed` / `member_added` from the moment the change was sent.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    ctx::Ctx,
    stats::{self, now_ns, number_after, pct_json, r3},
    ws::{self, Auth, Handler, Health, SubSpec},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Presence members (at most 20000).
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Joins plus leaves per second over all members.
    #[arg(long, default_value_t = 20.0)]
    pub churn: f64,
    /// Seconds of churn (at most 600).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Members per presence channel; the watcher is one more (brokers cap a channel at 100 by default).
    #[arg(long, default_value_t = 50)]
    pub per_channel: usize,
    /// Longest wait for outstanding member events after the last change, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
}

pub fn default_timeout(a: &Args) -> f64 {
    60.0 + a.users as f64 / 50.0 + a.duration + a.drain + 30.0
}

#[derive(Default)]
struct Counts {
    added: AtomicU64,
    removed: AtomicU64,
    unmatched: AtomicU64,
}

struct Shared {
    /// Send time (ns, 0 = none outstanding) of each member's last join / leave.
    pending_join: Vec<AtomicU64>,
    pending_leave: Vec<AtomicU64>,
    armed: AtomicBool,
    counts: Counts,
    added: Mutex<Histogram<u64>>,
    removed: Mutex<Histogram<u64>>,
}

struct Watcher(Arc<Shared>);

impl Handler for Watcher {
    fn on_text(&mut self, text: &str) {
        let s = &*self.0;
        let added = if text.contains("pusher_internal:member_added") {
            true
        } else if text.contains("pusher_internal:member_removed") {
            false
        } else {
            return;
        };
        if !s.armed.load(Ordering::Relaxed) {
            return;
        }
        let now = now_ns();
        let pending = if added {
            &s.pending_join
        } else {
            &s.pending_leave
        };
        let sent = number_after(text, "bench-u-")
            .and_then(|u| pending.get(u))
            .map(|p| p.swap(0, Ordering::AcqRel))
            .unwrap_or(0);
        if sent == 0 {
            s.counts.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let us = (now.saturating_sub(sent) / 1000).max(1);
        if added {
            s.counts.added.fetch_add(1, Ordering::Relaxed);
            s.added.lock().unwrap().saturating_record(us);
        } else {
            s.counts.removed.fetch_add(1, Ordering::Relaxed);
            s.removed.lock().unwrap().saturating_record(us);
        }
    }
}

pub async fn run(ctx: &Ctx, a: &Args) -> Result<(), String> {
    if a.users == 0
        || a.users > 20_000
        || a.per_channel == 0
        || !(a.churn > 0.0 && a.churn <= 10_000.0)
        || !(a.duration > 0.0 && a.duration <= 600.0)
    {
        return Err("need 1 <= --users <= 20000, --per-channel >= 1, 0 < --churn <= 10000, 0 < --duration <= 600".into());
    }
    let nch = a.users.div_ceil(a.per_channel);
    for (k, v) in [
        ("users", json!(a.users)),
        ("churn", json!(a.churn)),
        ("duration_s", json!(a.duration)),
        ("channels", json!(nch)),
    ] {
        ctx.set(k, v);
    }
    ctx.set(
        "churn_mode",
        "unsubscribe / resubscribe on open connections; one watcher per channel",
    );
    ctx.check_fds(a.users + nch);
    let channels: Vec<String> = (0..nch)
        .map(|c| format!("presence-bench-{}-{c}", ctx.tag))
        .collect();
    let shared = Arc::new(Shared {
        pending_join: (0..a.users).map(|_| AtomicU64::new(0)).collect(),
        pending_leave: (0..a.users).map(|_| AtomicU64::new(0)).collect(),
        armed: AtomicBool::new(false),
        counts: Counts::default(),
        added: Mutex::new(stats::hist()),
        removed: Mutex::new(stats::hist()),
    });
    let (stop, stop_rx) = watch::channel(false);
    let health = Arc::new(Health::default());
    let mut tasks = Vec::new();

    ctx.phase("connecting watchers");
    let watchers = ws::connect_many(&ctx.target, nch, ctx.batch, ctx.conn_timeout, |c| SubSpec {
        channel: channels[c].clone(),
        auth: Auth::Presence(
            json!({ "user_id": format!("bench-w-{c}"), "user_info": {} }).to_string(),
        ),
    })
    .await;
    if watchers.failed > 0 {
        ctx.set("connect_errors", watchers.errors_json());
        return Err(format!(
            "{} of {nch} watchers failed to subscribe",
            watchers.failed
        ));
    }
    for o in watchers.opened {
        tasks.push(ws::drive(
            o.ws,
            Watcher(shared.clone()),
            stop_rx.clone(),
            None,
            health.clone(),
        ));
    }

    ctx.phase("connecting members");
    let members = ws::connect_many(&ctx.target, a.users, ctx.batch, ctx.conn_timeout, |u| {
        SubSpec {
            channel: channels[u % nch].clone(),
            auth: Auth::Presence(
                json!({ "user_id": format!("bench-u-{u}"), "user_info": { "n": u } }).to_string(),
            ),
        }
    })
    .await;
    ctx.set("subscribed", members.opened.len());
    ctx.set("connect_failed", members.failed);
    ctx.set("connect_errors", members.errors_json());
    ctx.set("subscribe_ms", pct_json(&members.hist));
    // Each live member: (user index, channel, its signed subscribe frame, its outbox).
    let mut live = Vec::new();
    for o in members.opened {
        let frame = ws::subscribe_frame(&ctx.target, &o.socket_id, &o.spec);
        let (tx, rx) = mpsc::channel(64);
        live.push((o.idx, o.spec.channel.clone(), frame, tx));
        tasks.push(ws::drive(
            o.ws,
            ws::Ignore,
            stop_rx.clone(),
            Some(rx),
            health.clone(),
        ));
    }
    if live.is_empty() {
        return Err("no member could subscribe".into());
    }
    // Every other member leaves before timing starts, so the round-robin
    // churn alternates joins and leaves from the first change on.
    let unsubscribe = |channel: &str| {
        json!({ "event": "pusher:unsubscribe", "data": { "channel": channel } }).to_string()
    };
    let mut joined = vec![true; live.len()];
    for (i, (_, channel, _, tx)) in live.iter().enumerate() {
        if i % 2 == 0 && tx.try_send(unsubscribe(channel)).is_ok() {
            joined[i] = false;
        }
    }
    // Let the setup's member events reach the watchers before timing starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.armed.store(true, Ordering::Relaxed);

    ctx.phase("churning");
    let planned = (a.churn * a.duration).round() as u64;
    let period = Duration::from_secs_f64(1.0 / a.churn);
    let (mut joins, mut leaves, mut overlapped, mut not_sent) = (0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    for k in 0..planned {
        tokio::time::sleep_until(start + period.mul_f64(k as f64)).await;
        let i = (k % live.len() as u64) as usize;
        let (u, channel, frame, tx) = &live[i];
        let (msg, pending) = if joined[i] {
            (unsubscribe(channel), &shared.pending_leave[*u])
        } else {
            (frame.clone(), &shared.pending_join[*u])
        };
        if pending.swap(now_ns(), Ordering::AcqRel) != 0 {
            overlapped += 1;
        }
        if tx.try_send(msg).is_err() {
            pending.store(0, Ordering::Release);
            not_sent += 1;
            continue;
        }
        if joined[i] {
            leaves += 1;
        } else {
            joins += 1;
        }
        joined[i] = !joined[i];
    }
    let changes = joins + leaves;
    ctx.set("joins_sent", joins);
    ctx.set("leaves_sent", leaves);
    ctx.set(
        "churn_rate_achieved",
        r3(changes as f64 / start.elapsed().as_secs_f64().max(1e-9)),
    );
    if overlapped > 0 {
        ctx.note(format!("{overlapped} changes were sent before the previous change of the same member was seen; use more --users or less --churn"));
    }
    if not_sent > 0 {
        ctx.note(format!(
            "{not_sent} changes were not sent: a member's socket could not keep up"
        ));
    }

    ctx.phase("draining");
    let c = &shared.counts;
    let got = || c.added.load(Ordering::Relaxed) + c.removed.load(Ordering::Relaxed);
    let drain_end = Instant::now() + Duration::from_secs_f64(a.drain);
    while Instant::now() < drain_end && got() < changes {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (added, removed) = (
        c.added.load(Ordering::Relaxed),
        c.removed.load(Ordering::Relaxed),
    );
    ctx.set("added_received", added);
    ctx.set("removed_received", removed);
    ctx.set("lost", changes as i64 - (added + removed) as i64);
    ctx.set("unmatched_events", c.unmatched.load(Ordering::Relaxed));
    ctx.set("member_added_ms", pct_json(&shared.added.lock().unwrap()));
    ctx.set(
        "member_removed_ms",
        pct_json(&shared.removed.lock().unwrap()),
    );
    ctx.set("dropped", health.json());
    ctx.close_driven(&stop, tasks).await;
    Ok(())
}
