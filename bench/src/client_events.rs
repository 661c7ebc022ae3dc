//! `client-events`: N private channels, each with one sender and one receiver;
//! client events at a fixed overall rate spread round-robin over the senders.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::json;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    ctx::Ctx,
    fanout::Timed,
    stats::{extract_ts, now_ns, pct_json, r3, Shards},
    ws::{self, note_error, Auth, Handler, Health, SubSpec},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Sender/receiver pairs, one private channel each (at most 20000).
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Client events per second over all senders.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds of sending (at most 600).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// The broker's client-event limit per connection per second (Pusher's and our default: 10).
    #[arg(long, default_value_t = 10.0)]
    pub limit_per_conn: f64,
    /// Longest wait for outstanding events after the last send, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
}

pub fn default_timeout(a: &Args) -> f64 {
    60.0 + a.pairs as f64 / 50.0 + a.duration + a.drain + 30.0
}

/// A sender: counts the errors the broker answers with.
struct Sender {
    rate_limited: Arc<AtomicU64>,
    errors: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Handler for Sender {
    fn on_text(&mut self, text: &str) {
        if text.contains("pusher:error") {
            if text.contains("4301") {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
            } else {
                note_error(&mut self.errors.lock().unwrap(), text);
            }
        } else if extract_ts(text).is_some() {
            note_error(
                &mut self.errors.lock().unwrap(),
                "sender received its own client event (must be excluded)",
            );
        }
    }
}

pub async fn run(ctx: &Ctx, a: &Args) -> Result<(), String> {
    if a.pairs == 0
        || a.pairs > 20_000
        || !(a.rate > 0.0 && a.rate <= 100_000.0)
        || !(a.duration > 0.0 && a.duration <= 600.0)
    {
        return Err(
            "need 1 <= --pairs <= 20000, 0 < --rate <= 100000, 0 < --duration <= 600".into(),
        );
    }
    let per_sender = a.rate / a.pairs as f64;
    for (k, v) in [
        ("pairs", json!(a.pairs)),
        ("rate", json!(a.rate)),
        ("duration_s", json!(a.duration)),
        ("per_sender_rate", json!(r3(per_sender))),
    ] {
        ctx.set(k, v);
    }
    ctx.set("broker_limit_per_conn", a.limit_per_conn);
    ctx.note(format!(
        "brokers limit client events per connection (default {}/s), so the {}/s are spread over {} senders at {}/s each",
        a.limit_per_conn,
        a.rate,
        a.pairs,
        r3(per_sender)
    ));
    if per_sender > a.limit_per_conn {
        ctx.note(format!("{}/s per sender is over the {}/s limit: expect rate-limit errors (4301); use more --pairs", r3(per_sender), a.limit_per_conn));
    }
    ctx.check_fds(2 * a.pairs);

    ctx.phase("connecting");
    let n = a.pairs;
    let channels: Vec<String> = (0..n)
        .map(|c| format!("private-bench-{}-{c}", ctx.tag))
        .collect();
    // Receivers are 0..n, senders n..2n; pair i shares channel i.
    let done = ws::connect_many(&ctx.target, 2 * n, ctx.batch, ctx.conn_timeout, |i| {
        SubSpec {
            channel: channels[i % n].clone(),
            auth: Auth::Private,
        }
    })
    .await;
    ctx.set("subscribed", done.opened.len());
    ctx.set("connect_failed", done.failed);
    ctx.set("connect_errors", done.errors_json());
    ctx.set("subscribe_ms", pct_json(&done.hist));
    let mut have = vec![[false; 2]; n];
    for o in &done.opened {
        have[o.idx % n][o.idx / n] = true;
    }

    let shards = Arc::new(Shards::new(64));
    let rate_limited = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(BTreeMap::new()));
    let (stop, stop_rx) = watch::channel(false);
    let health = Arc::new(Health::default());
    let mut tasks = Vec::new();
    let mut senders: Vec<(usize, mpsc::Sender<String>)> = Vec::new();
    for o in done.opened {
        let pair = o.idx % n;
        if !(have[pair][0] && have[pair][1]) {
            continue;
        }
        if o.idx < n {
            tasks.push(ws::drive(
                o.ws,
                Timed {
                    shards: shards.clone(),
                    shard: pair,
                },
                stop_rx.clone(),
                None,
                health.clone(),
            ));
        } else {
            let (tx, rx) = mpsc::channel(256);
            senders.push((pair, tx));
            let h = Sender {
                rate_limited: rate_limited.clone(),
                errors: errors.clone(),
            };
            tasks.push(ws::drive(
                o.ws,
                h,
                stop_rx.clone(),
                Some(rx),
                health.clone(),
            ));
        }
    }
    ctx.set("active_pairs", senders.len());
    if senders.is_empty() {
        return Err("no complete sender/receiver pair could connect".into());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    ctx.phase("sending");
    let planned = (a.rate * a.duration).round() as u64;
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let start = Instant::now();
    let (mut sent, mut queue_full) = (0u64, 0u64);
    for k in 0..planned {
        tokio::time::sleep_until(start + period.mul_f64(k as f64)).await;
        let (pair, tx) = &senders[(k % senders.len() as u64) as usize];
        let msg = format!(
            r##"{{"event":"client-bench","channel":"{}","data":{{"m":"#T{}#S{k}#"}}}}"##,
            channels[*pair],
            now_ns()
        );
        match tx.try_send(msg) {
            Ok(()) => sent += 1,
            Err(_) => queue_full += 1,
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    ctx.set("sent", sent);
    ctx.set("send_rate_achieved", r3(sent as f64 / send_secs.max(1e-9)));
    if queue_full > 0 {
        ctx.note(format!(
            "{queue_full} events were not sent: a sender's socket could not keep up"
        ));
    }

    ctx.phase("draining");
    let drain_end = Instant::now() + Duration::from_secs_f64(a.drain);
    while Instant::now() < drain_end {
        let limited = rate_limited.load(Ordering::Relaxed);
        if shards.count() + limited >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (hist, received, _) = shards.merged();
    let limited = rate_limited.load(Ordering::Relaxed);
    ctx.set("received", received);
    ctx.set("lost", sent as i64 - received as i64);
    ctx.set("rate_limited", limited);
    ctx.set(
        "lost_unexplained",
        sent as i64 - received as i64 - limited as i64,
    );
    ctx.set(
        "loss_pct",
        if sent > 0 {
            r3(100.0 * (sent as f64 - received as f64) / sent as f64)
        } else {
            0.0
        },
    );
    ctx.set("latency_ms", pct_json(&hist));
    ctx.set("sender_errors", json!(*errors.lock().unwrap()));
    ctx.set("dropped", health.json());
    ctx.close_driven(&stop, tasks).await;
    Ok(())
}
