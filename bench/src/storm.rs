//! `subscribe-storm`: N open connections each subscribe to K channels of their own at
//! once (N×K distinct channels, every one a first subscriber on the node), and the
//! rate and latency of those subscriptions. On a cluster node each such subscribe
//! starts listening to a new topic and counts the channel in Redis: this is the load
//! a node-wide lock on subscribe would serialise.

use std::{collections::HashMap, time::Instant};

use futures_util::SinkExt;
use hdrhistogram::Histogram;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    ctx::Ctx,
    stats::{self, pct_json, r3},
    ws::{self, Auth, SubSpec, Ws},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Connections, opened first (at most 10000).
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Channels each connection subscribes to at once (at most the broker's
    /// `max_channels_per_connection`, 100 by default).
    #[arg(long, default_value_t = 50)]
    pub channels_per_conn: usize,
}

pub fn default_timeout(a: &Args) -> f64 {
    60.0 + (a.conns * a.channels_per_conn) as f64 / 200.0
}

/// What one connection's storm gave: per-subscribe latencies (µs) and the first error.
struct Outcome {
    hist: Histogram<u64>,
    error: Option<String>,
}

pub async fn run(ctx: &Ctx, a: &Args) -> Result<(), String> {
    if a.conns == 0 || a.conns > 10_000 || a.channels_per_conn == 0 || a.channels_per_conn > 1000 {
        return Err("--conns must be 1..=10000 and --channels-per-conn 1..=1000".into());
    }
    ctx.set("conns", a.conns);
    ctx.set("channels_per_conn", a.channels_per_conn);
    ctx.set("channels", a.conns * a.channels_per_conn);
    ctx.check_fds(a.conns);

    ctx.phase("connecting");
    let target = &ctx.target;
    let spec = |_| SubSpec {
        channel: String::new(),
        auth: Auth::Public,
    };
    let done = ws::connect_many_with(a.conns, ctx.batch, ctx.conn_timeout, spec, |_, _| {
        ws::open(target)
    })
    .await;
    ctx.set("opened", done.opened.len());
    ctx.set("connect_errors", done.errors_json());

    ctx.phase("storm");
    let cpu_before = ctx.cpu();
    let started = Instant::now();
    let storms: Vec<_> = done
        .opened
        .into_iter()
        .map(|o| {
            let channels: Vec<String> = (0..a.channels_per_conn)
                .map(|k| format!("storm-{}-{}-{k}", ctx.tag, o.idx))
                .collect();
            tokio::spawn(storm(o.ws, channels, ctx.conn_timeout))
        })
        .collect();
    let mut hist = stats::hist();
    let mut errors = std::collections::BTreeMap::new();
    let mut sockets = Vec::new();
    for s in storms {
        match s.await {
            Ok((ws, outcome)) => {
                let _ = hist.add(&outcome.hist);
                if let Some(e) = outcome.error {
                    ws::note_error(&mut errors, &e);
                }
                sockets.push(ws);
            }
            Err(e) => ws::note_error(&mut errors, &format!("task: {e}")),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let subscribed = hist.len();
    let expected = (a.conns * a.channels_per_conn) as u64;
    ctx.set("subscribed", subscribed);
    ctx.set("storm_secs", r3(secs));
    ctx.set(
        "subscriptions_per_s",
        r3(subscribed as f64 / secs.max(1e-9)),
    );
    ctx.set("subscribe_ms", pct_json(&hist));
    ctx.set("storm_errors", serde_json::json!(errors));
    if let (Some(b), Some(e)) = (cpu_before, ctx.cpu()) {
        ctx.set(
            "broker_cpu_us_per_subscribe",
            Value::from(r3((e - b) * 1e6 / (subscribed.max(1) as f64))),
        );
    }

    ctx.phase("closing");
    for mut ws in sockets {
        let _ = ws.close(None).await;
    }
    if subscribed < expected {
        return Err(format!(
            "{subscribed} of {expected} subscriptions succeeded"
        ));
    }
    Ok(())
}

/// Sends every subscribe at once, then reads until each channel's
/// `subscription_succeeded` (or an error, or `within` passes).
async fn storm(mut ws: Ws, channels: Vec<String>, within: std::time::Duration) -> (Ws, Outcome) {
    let mut outcome = Outcome {
        hist: stats::hist(),
        error: None,
    };
    let sent_at = Instant::now();
    let mut waiting: HashMap<String, Instant> = HashMap::with_capacity(channels.len());
    for c in channels {
        let frame = serde_json::json!({ "event": "pusher:subscribe", "data": { "channel": c } });
        if let Err(e) = ws.feed(Message::text(frame.to_string())).await {
            outcome.error = Some(format!("send subscribe: {e}"));
            return (ws, outcome);
        }
        waiting.insert(c, sent_at);
    }
    if let Err(e) = ws.flush().await {
        outcome.error = Some(format!("send subscribe: {e}"));
        return (ws, outcome);
    }
    let deadline = tokio::time::Instant::now() + within;
    while !waiting.is_empty() {
        let text = match tokio::time::timeout_at(deadline, ws::next_text(&mut ws)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                outcome.error = Some(e);
                break;
            }
            Err(_) => {
                outcome.error = Some(format!(
                    "{} subscriptions unanswered after {within:?}",
                    waiting.len()
                ));
                break;
            }
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match v["event"].as_str() {
            Some("pusher_internal:subscription_succeeded") => {
                if let Some(at) = v["channel"].as_str().and_then(|c| waiting.remove(c)) {
                    outcome
                        .hist
                        .saturating_record((at.elapsed().as_micros() as u64).max(1));
                }
            }
            Some("pusher:error" | "pusher:subscription_error") => {
                outcome.error = Some(format!("refused: {}", v["data"]));
                break;
            }
            _ => {}
        }
    }
    (ws, outcome)
}
