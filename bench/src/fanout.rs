//! `fanout`: N subscribers over C public channels; signed REST triggers (or
//! `batch_events` requests) at a fixed rate, round-robin over the channels, each
//! event stamped with its send time.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::json;
use tokio::{
    sync::{watch, Semaphore},
    time::Instant,
};

use crate::{
    ctx::Ctx,
    fallback,
    rest::Rest,
    stats::{self, extract_ts, now_ns, pct_json, r3, Shards},
    ws::{self, note_error, Auth, Handler, Health, SubSpec},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Subscribers (at most 60000).
    #[arg(long, default_value_t = 100)]
    pub subs: usize,
    /// Public channels the subscribers are spread over; triggers go round-robin over them.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Trigger requests per second (each one channel, or `--batch-events` channels).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Events per trigger request, 1..=10 (at most `--channels`): above 1, each request is
    /// one `POST /apps/{id}/batch_events` with that many events, to as many consecutive
    /// channels of the round-robin.
    #[arg(long, default_value_t = 1)]
    pub batch_events: usize,
    /// Seconds of triggering (at most 600).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Bytes of event data per trigger (the send timestamp is inside; at most 10240 by default broker limits).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Trigger requests in flight at once at most.
    #[arg(long, default_value_t = 32)]
    pub inflight: usize,
    /// Longest wait for outstanding deliveries after the last trigger, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Send the REST triggers to these brokers instead of `--url` (other nodes of a
    /// cluster: measures cross-node fan-out), round-robin; comma-separated. Same app
    /// credentials.
    #[arg(long, alias = "trigger-urls", value_delimiter = ',')]
    pub trigger_url: Vec<String>,
    /// Connect the subscribers to these brokers instead of `--url` (the nodes of a
    /// cluster); comma-separated. How they are spread: `--spread`.
    #[arg(long, value_delimiter = ',')]
    pub sub_urls: Vec<String>,
    /// With `--sub-urls`: `subscribers` puts every channel's subscribers on every node
    /// (each node holds every channel), `channels` puts each channel's subscribers on
    /// one node (channel c on node c mod nodes).
    #[arg(long, value_enum, default_value_t = Spread::Subscribers)]
    pub spread: Spread,
    /// Broker process ids of every node (comma-separated): each node's CPU is reported
    /// per delivery and per trigger, so a node's cost for channels it does not hold shows.
    #[arg(long, value_delimiter = ',')]
    pub node_pids: Vec<u32>,
    /// How the subscribers connect: `ws`, or `xhr_streaming` (pusher-js's HTTP fallback).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
    /// Subscribe with channel history on: channels are named `history-bench-…` (start
    /// the broker with `BROKER_APP_HISTORY_CHANNELS=history-bench-`, so the events are
    /// kept) and each subscription asks for positions (`"history": {}`), so every
    /// delivery also carries its `pusher_internal:position` frame. WebSocket only.
    #[arg(long)]
    pub history: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    Subscribers,
    Channels,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ws,
    #[value(name = "xhr_streaming")]
    XhrStreaming,
}

pub fn default_timeout(a: &Args) -> f64 {
    60.0 + a.subs as f64 / 100.0 + a.duration + a.drain + 30.0
}

/// A subscriber: times every stamped event it receives.
pub struct Timed {
    pub shards: Arc<Shards>,
    pub shard: usize,
}

impl Handler for Timed {
    fn on_text(&mut self, text: &str) {
        if let Some(sent) = extract_ts(text) {
            self.shards.record(self.shard, sent, now_ns());
        }
    }
}

/// A `pusher:subscribe` frame with `"history": {}` added to its data (positions, no replay).
fn with_history(frame: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(frame).expect("our own frame");
    v["data"]["history"] = json!({});
    v.to_string()
}

/// `#T<ns>#S<seq>#` padded with `x` to `len` bytes.
pub fn stamped(seq: u64, len: usize) -> String {
    let mut s = String::with_capacity(len.max(48));
    s.push_str("#T");
    s.push_str(&now_ns().to_string());
    s.push_str("#S");
    s.push_str(&seq.to_string());
    s.push('#');
    while s.len() < len {
        s.push('x');
    }
    s
}

/// The channels of trigger request `k` with `n` events each: the next `n` of the
/// round-robin over `channels`, which carries on from one request to the next.
fn request_channels(k: u64, n: usize, channels: usize) -> Vec<usize> {
    let n = n as u64;
    (k * n..(k + 1) * n)
        .map(|e| (e % channels as u64) as usize)
        .collect()
}

/// Records how the subscribers connected; returns how many each channel has.
fn report_connected<C>(ctx: &Ctx, a: &Args, done: &ws::Connected<C>) -> Vec<u64> {
    let mut per_channel = vec![0u64; a.channels];
    for o in &done.opened {
        per_channel[o.idx % a.channels] += 1;
    }
    let subscribed = done.opened.len();
    ctx.set("subscribed", subscribed);
    ctx.set("connect_failed", done.failed);
    ctx.set("connect_errors", done.errors_json());
    ctx.set("subscribe_ms", pct_json(&done.hist));
    if done.failed > 0 {
        ctx.note(format!(
            "{} subscribers failed to connect; expected deliveries count only the {} that did",
            done.failed, subscribed
        ));
    }
    ctx.set(
        "offered_deliveries_per_s",
        r3(a.rate * a.batch_events as f64 * subscribed as f64 / a.channels as f64),
    );
    per_channel
}

pub async fn run(ctx: &Ctx, a: &Args) -> Result<(), String> {
    if a.subs == 0
        || a.subs > 60_000
        || a.channels == 0
        || !(a.rate > 0.0 && a.rate <= 100_000.0)
        || !(a.duration > 0.0 && a.duration <= 600.0)
    {
        return Err("need 1 <= --subs <= 60000, --channels >= 1, 0 < --rate <= 100000, 0 < --duration <= 600".into());
    }
    if !(1..=10).contains(&a.batch_events) || a.batch_events > a.channels {
        return Err(
            "need 1 <= --batch-events <= 10 and at most --channels (one event per channel)".into(),
        );
    }
    for (k, v) in [
        ("subs", json!(a.subs)),
        ("channels", json!(a.channels)),
        ("rate", json!(a.rate)),
        ("batch_events", json!(a.batch_events)),
        ("duration_s", json!(a.duration)),
        ("payload_bytes", json!(a.payload)),
    ] {
        ctx.set(k, v);
    }
    ctx.check_fds(a.subs);
    let other = |url: &str| -> Result<ws::Target, String> {
        let t = ws::Target::parse(url, &ctx.target.app_id, ctx.target.key.as_str(), "unused")?;
        Ok(ws::Target {
            secret: ctx.target.secret.clone(),
            ..t
        })
    };
    if !a.trigger_url.is_empty() {
        ctx.set("trigger_urls", json!(a.trigger_url));
    }
    let trigger_targets = if a.trigger_url.is_empty() {
        vec![ctx.target.clone()]
    } else {
        a.trigger_url
            .iter()
            .map(|u| other(u))
            .collect::<Result<_, _>>()?
    };
    let rests = Arc::new(
        trigger_targets
            .iter()
            .map(Rest::new)
            .collect::<Result<Vec<_>, _>>()?,
    );
    if !a.sub_urls.is_empty() {
        ctx.set("sub_urls", json!(a.sub_urls));
        ctx.set(
            "spread",
            clap::ValueEnum::to_possible_value(&a.spread)
                .expect("no skipped variants")
                .get_name(),
        );
    }
    let sub_targets: Vec<ws::Target> = if a.sub_urls.is_empty() {
        vec![ctx.target.clone()]
    } else {
        a.sub_urls
            .iter()
            .map(|u| other(u))
            .collect::<Result<_, _>>()?
    };
    // Which node subscriber i connects to.
    let node_of = |i: usize| match a.spread {
        Spread::Subscribers => (i / a.channels) % sub_targets.len(),
        Spread::Channels => (i % a.channels) % sub_targets.len(),
    };

    ctx.phase("connecting");
    ctx.set(
        "transport",
        clap::ValueEnum::to_possible_value(&a.transport)
            .expect("no skipped variants")
            .get_name(),
    );
    let channels: Arc<Vec<String>> = Arc::new(
        (0..a.channels)
            .map(|c| {
                let kept = if a.history { "history-" } else { "" };
                format!("{kept}bench-{}-{c}", ctx.tag)
            })
            .collect(),
    );
    let spec = |i: usize| SubSpec {
        channel: channels[i % channels.len()].clone(),
        auth: Auth::Public,
    };
    let shards = Arc::new(Shards::new(64));
    let (stop, stop_rx) = watch::channel(false);
    let health = Arc::new(Health::default());
    let timed = |idx| Timed {
        shards: shards.clone(),
        shard: idx,
    };
    let history = a.history;
    if history && a.transport != Transport::Ws {
        return Err("--history runs over WebSocket only".into());
    }
    ctx.set("history", history);
    let (per_channel, tasks): (_, Vec<_>) = match a.transport {
        Transport::Ws => {
            let (sub_targets, node_of) = (&sub_targets, &node_of);
            let done = ws::connect_many_with(
                a.subs,
                ctx.batch,
                ctx.conn_timeout,
                spec,
                |i, spec| async move {
                    let t = &sub_targets[node_of(i)];
                    let (mut socket, sid) = ws::open(t).await?;
                    let mut frame = ws::subscribe_frame(t, &sid, &spec);
                    if history {
                        frame = with_history(&frame);
                    }
                    ws::subscribe(&mut socket, frame, &spec.channel).await?;
                    Ok((socket, sid))
                },
            )
            .await;
            let per_channel = report_connected(ctx, a, &done);
            (
                per_channel,
                done.opened
                    .into_iter()
                    .map(|o| ws::drive(o.ws, timed(o.idx), stop_rx.clone(), None, health.clone()))
                    .collect(),
            )
        }
        Transport::XhrStreaming => {
            let http = fallback::client()?;
            let (http, target) = (&http, &ctx.target);
            let done = ws::connect_many_with(
                a.subs,
                ctx.batch,
                ctx.conn_timeout,
                spec,
                |i, spec| async move { fallback::open_subscribed(http, target, i, &spec).await },
            )
            .await;
            let per_channel = report_connected(ctx, a, &done);
            (
                per_channel,
                done.opened
                    .into_iter()
                    .map(|o| fallback::drive(o.ws, timed(o.idx), stop_rx.clone(), health.clone()))
                    .collect(),
            )
        }
    };
    // Let the subscribers' tasks settle before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    ctx.phase("triggering");
    let cpu0 = ctx.cpu();
    let nodes_cpu0: Vec<Option<f64>> = a
        .node_pids
        .iter()
        .map(|p| stats::cpu_seconds(Some(*p)))
        .collect();
    let self_cpu0 = stats::cpu_seconds(None);
    let per_channel = Arc::new(per_channel);
    let expected = Arc::new(AtomicU64::new(0));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let http = Arc::new(Mutex::new(stats::hist()));
    let errors = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let sem = Arc::new(Semaphore::new(a.inflight.max(1)));
    let planned = (a.rate * a.duration).round() as u64;
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let start = Instant::now();
    let window_end = start + Duration::from_secs_f64(a.duration);
    let first_send = now_ns();
    let mut sent = 0u64;
    let mut max_lag = Duration::ZERO;
    for k in 0..planned {
        let at = start + period.mul_f64(k as f64);
        tokio::time::sleep_until(at).await;
        let Ok(permit) = tokio::time::timeout_at(window_end, sem.clone().acquire_owned()).await
        else {
            break;
        };
        let now = Instant::now();
        if now >= window_end + period {
            break;
        }
        max_lag = max_lag.max(now - at);
        sent += 1;
        let n = a.batch_events as u64;
        let cs = request_channels(k, a.batch_events, a.channels);
        let (rests, channels, per_channel, expected, ok, failed, http, errors) = (
            rests.clone(),
            channels.clone(),
            per_channel.clone(),
            expected.clone(),
            ok.clone(),
            failed.clone(),
            http.clone(),
            errors.clone(),
        );
        let payload = a.payload;
        tokio::spawn(async move {
            let rest = &rests[(k % rests.len() as u64) as usize];
            let items: Vec<(&str, String)> = cs
                .iter()
                .zip(k * n..)
                .map(|(&c, seq)| (channels[c].as_str(), stamped(seq, payload)))
                .collect();
            let t0 = std::time::Instant::now();
            let r = match &items[..] {
                [(channel, data)] => rest.trigger(channel, "bench", data).await,
                _ => rest.batch("bench", &items).await,
            };
            http.lock()
                .unwrap()
                .saturating_record((t0.elapsed().as_micros() as u64).max(1));
            match r {
                Ok(()) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    let n: u64 = cs.iter().map(|&c| per_channel[c]).sum();
                    expected.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    note_error(&mut errors.lock().unwrap(), &e);
                }
            }
            drop(permit);
        });
    }
    let send_secs = start.elapsed().as_secs_f64();
    // Wait for the requests still in flight.
    let _ = tokio::time::timeout(
        Duration::from_secs(15),
        sem.acquire_many(a.inflight.max(1) as u32),
    )
    .await;
    ctx.set("triggers_planned", planned);
    ctx.set("triggers_sent", sent);
    ctx.set("triggers_ok", ok.load(Ordering::Relaxed));
    ctx.set("triggers_failed", failed.load(Ordering::Relaxed));
    ctx.set("trigger_errors", json!(*errors.lock().unwrap()));
    ctx.set(
        "trigger_rate_achieved",
        r3(sent as f64 / send_secs.max(1e-9)),
    );
    ctx.set(
        "trigger_schedule_lag_max_ms",
        r3(max_lag.as_secs_f64() * 1000.0),
    );
    ctx.set("trigger_http_ms", pct_json(&http.lock().unwrap()));
    if sent < planned {
        ctx.note(format!(
            "only {sent} of {planned} triggers were sent within {}s: the broker answered too slowly for {} in flight",
            a.duration, a.inflight
        ));
    }

    ctx.phase("draining");
    let expected = expected.load(Ordering::Relaxed);
    let drain_end = Instant::now() + Duration::from_secs_f64(a.drain);
    let (mut last_count, mut last_change) = (shards.count(), Instant::now());
    while Instant::now() < drain_end {
        let n = shards.count();
        if n >= expected {
            break;
        }
        if n != last_count {
            (last_count, last_change) = (n, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu1 = ctx.cpu();
    let nodes_cpu1: Vec<Option<f64>> = a
        .node_pids
        .iter()
        .map(|p| stats::cpu_seconds(Some(*p)))
        .collect();
    let self_cpu1 = stats::cpu_seconds(None);
    let (hist, received, last_ns) = shards.merged();
    let span = (last_ns.saturating_sub(first_send)) as f64 / 1e9;
    ctx.set("expected_deliveries", expected);
    ctx.set("received_deliveries", received);
    ctx.set("lost_deliveries", expected as i64 - received as i64);
    ctx.set(
        "loss_pct",
        if expected > 0 {
            r3(100.0 * (expected as f64 - received as f64) / expected as f64)
        } else {
            0.0
        },
    );
    ctx.set(
        "deliveries_per_s",
        if span > 0.0 {
            r3(received as f64 / span)
        } else {
            0.0
        },
    );
    ctx.set("latency_ms", pct_json(&hist));
    ctx.set("subscribers_dropped", health.json());
    let requests_ok = ok.load(Ordering::Relaxed);
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        ctx.set("broker_cpu_s", r3(c1 - c0));
        // Microseconds of broker CPU per one of `n` things (0 when there were none).
        let per = |n: u64| {
            if n > 0 {
                r3((c1 - c0) * 1e6 / n as f64)
            } else {
                0.0
            }
        };
        ctx.set("broker_cpu_us_per_delivery", per(received));
        // Per HTTP request (a batch counts once): with few subscribers, the cost of the
        // REST path itself.
        ctx.set("broker_cpu_us_per_request", per(requests_ok));
    }
    if let (Some(c0), Some(c1)) = (self_cpu0, self_cpu1) {
        ctx.set("generator_cpu_s", r3(c1 - c0));
    }
    if !a.node_pids.is_empty() {
        let triggers = requests_ok.max(1) as f64;
        let nodes: Vec<_> = a
            .node_pids
            .iter()
            .zip(nodes_cpu0.iter().zip(&nodes_cpu1))
            .map(|(pid, (c0, c1))| {
                let cpu = c0.zip(*c1).map(|(c0, c1)| c1 - c0);
                json!({
                    "pid": pid,
                    "cpu_s": cpu.map(r3),
                    "cpu_us_per_delivery": cpu.filter(|_| received > 0).map(|c| r3(c * 1e6 / received as f64)),
                    "cpu_us_per_trigger": cpu.map(|c| r3(c * 1e6 / triggers)),
                })
            })
            .collect();
        ctx.set("nodes", json!(nodes));
    }
    ctx.close_driven(&stop, tasks).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_carry_the_round_robin_on() {
        assert_eq!(request_channels(0, 1, 3), [0]);
        assert_eq!(request_channels(4, 1, 3), [1]);
        assert_eq!(request_channels(0, 4, 10), [0, 1, 2, 3]);
        assert_eq!(request_channels(2, 4, 10), [8, 9, 0, 1]);
        assert_eq!(request_channels(1, 10, 10), (0..10).collect::<Vec<_>>());
    }
}
