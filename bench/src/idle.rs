//! `idle`: what connections cost a broker at rest, measured from outside it (its
//! VmRSS and utime+stime), one stage at a time, all N connections held at each
//! stage before the next begins:
//!
//! (a) TCP connected, nothing sent; (b) the same sockets upgraded to WebSocket,
//! `pusher:connection_established` received; (c) each subscribed to one of C
//! public channels; then all N idle for a while (the broker's CPU at rest), then
//! closed (how much memory comes back).
//!
//! The differences between the stages' per-connection figures are the cost of an
//! accepted connection, of the upgrade and session, and of a subscription.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value};
use tokio::{net::TcpStream, sync::watch};

use crate::{
    ctx::Ctx,
    stats::{pct_json, r3},
    ws::{self, note_error, Auth, Health, SubSpec},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Connections (at most 60000).
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Public channels the connections subscribe to (connection i to channel i mod C).
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// Seconds all connections sit idle and subscribed while the broker's CPU is read (at most 600).
    #[arg(long, default_value_t = 10.0)]
    pub idle: f64,
    /// Seconds to wait after each stage's last connection before reading the broker's RSS.
    /// Keep it short: a broker may close a connection that sends no request for a while.
    #[arg(long, default_value_t = 1.0)]
    pub hold: f64,
    /// Seconds to wait after closing all, before reading the broker's RSS again.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
}

pub fn default_timeout(a: &Args) -> f64 {
    60.0 + 3.0 * a.conns as f64 / 100.0 + 3.0 * a.hold + a.idle + a.settle + 20.0
}

/// One reading of the broker after a stage: its RSS and CPU, and how many connections it held.
#[derive(Clone, Copy)]
struct Reading {
    rss: Option<u64>,
    cpu: Option<f64>,
    held: usize,
}

fn read(ctx: &Ctx, held: usize) -> Reading {
    Reading {
        rss: ctx.rss(),
        cpu: ctx.cpu(),
        held,
    }
}

/// Whether the broker has closed a TCP connection we hold (or answered it): a
/// non-blocking peek, so nothing is consumed from a live socket. `None`: still open.
fn closed_by_peer(tcp: TcpStream) -> (Option<TcpStream>, Option<String>) {
    let Ok(std) = tcp.into_std() else {
        return (None, Some("could not check the socket".into()));
    };
    let mut buf = [0u8; 64];
    let why = match std.peek(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Ok(0) => Some("closed by the broker".to_owned()),
        Ok(n) => {
            let head = String::from_utf8_lossy(&buf[..n]);
            Some(format!(
                "the broker answered: {}",
                head.lines().next().unwrap_or_default()
            ))
        }
        Err(e) => Some(format!("socket error: {e}")),
    };
    match (why, TcpStream::from_std(std)) {
        (None, Ok(tcp)) => (Some(tcp), None),
        (None, Err(e)) => (None, Some(format!("could not re-register the socket: {e}"))),
        (why, _) => (None, why),
    }
}

/// `(reading - before) / held`, bytes per connection.
fn per_conn(before: Option<u64>, r: Reading) -> Option<f64> {
    let (b, s) = (before?, r.rss?);
    (r.held > 0).then(|| ((s as f64 - b as f64) / r.held as f64).round())
}

/// CPU µs per connection spent between two readings.
fn cpu_per_conn(from: Reading, to: Reading) -> Option<f64> {
    let (a, b) = (from.cpu?, to.cpu?);
    (to.held > 0).then(|| r3((b - a) * 1e6 / to.held as f64))
}

fn diff(a: Option<f64>, b: Option<f64>) -> Value {
    a.zip(b).map_or(Value::Null, |(a, b)| (a - b).into())
}

pub async fn run(ctx: &Ctx, a: &Args) -> Result<(), String> {
    if a.conns == 0
        || a.conns > 60_000
        || a.channels == 0
        || !(a.idle > 0.0 && a.idle <= 600.0)
        || !(0.0..=60.0).contains(&a.hold)
    {
        return Err(
            "need 1 <= --conns <= 60000, --channels >= 1, 0 < --idle <= 600, 0 <= --hold <= 60"
                .into(),
        );
    }
    ctx.set("conns", a.conns);
    ctx.set("channels", a.channels);
    ctx.set("idle_s", a.idle);
    ctx.set("hold_s", a.hold);
    ctx.check_fds(a.conns);
    let hold = Duration::from_secs_f64(a.hold);
    let target = &ctx.target;
    let before = read(ctx, 0);
    let no_spec = |_| SubSpec {
        channel: String::new(),
        auth: Auth::Public,
    };

    // (a) TCP only.
    ctx.phase("tcp");
    let done = ws::connect_many_with(
        a.conns,
        ctx.batch,
        ctx.conn_timeout,
        no_spec,
        |_, _| async move { Ok((ws::connect_tcp(target).await?, String::new())) },
    )
    .await;
    ctx.set("tcp_connected", done.opened.len());
    ctx.set("tcp_connect_secs", r3(done.elapsed.as_secs_f64()));
    ctx.set("tcp_connect_errors", done.errors_json());
    tokio::time::sleep(hold).await;
    let mut tcp_read = read(ctx, 0);
    let mut closed = BTreeMap::new();
    // Connection i's socket, if it connected and is still open.
    let slots: Vec<Mutex<Option<TcpStream>>> = (0..a.conns).map(|_| Mutex::new(None)).collect();
    for o in done.opened {
        let (tcp, why) = closed_by_peer(o.ws);
        if let Some(why) = why {
            note_error(&mut closed, &why);
        }
        *slots[o.idx].lock().unwrap() = tcp;
    }
    let alive = slots.iter().filter(|s| s.lock().unwrap().is_some()).count();
    tcp_read.held = alive;
    let tcp_closed = a.conns - done.failed as usize - alive;
    ctx.set("tcp_alive_at_reading", alive);
    ctx.set("tcp_closed_by_broker", tcp_closed);
    ctx.set("tcp_close_reasons", json!(closed));
    if tcp_closed > 0 {
        ctx.note(format!(
            "the broker closed {tcp_closed} of the TCP-only connections within {}s of the last connect; they are replaced by fresh connections for the next stages",
            a.hold
        ));
    }

    // (b) The same sockets upgraded; any the broker closed (or that failed) are opened afresh.
    ctx.phase("upgrading");
    let done = ws::connect_many_with(a.conns, ctx.batch, ctx.conn_timeout, no_spec, |i, _| {
        let tcp = slots[i].lock().unwrap().take();
        async move {
            match tcp {
                Some(tcp) => ws::upgrade(target, tcp).await,
                None => ws::open(target).await,
            }
        }
    })
    .await;
    let replaced = a.conns - alive;
    ctx.set("upgraded", done.opened.len());
    ctx.set("upgraded_fresh", replaced);
    ctx.set("upgrade_secs", r3(done.elapsed.as_secs_f64()));
    ctx.set("upgrade_ms", pct_json(&done.hist));
    ctx.set("upgrade_errors", done.errors_json());
    tokio::time::sleep(hold).await;
    let ws_read = read(ctx, done.opened.len());

    // (c) Each subscribed to one public channel.
    ctx.phase("subscribing");
    let channels: Vec<String> = (0..a.channels)
        .map(|c| format!("bench-{}-{c}", ctx.tag))
        .collect();
    let upgraded: Vec<Mutex<Option<(ws::Ws, String)>>> = done
        .opened
        .into_iter()
        .map(|o| Mutex::new(Some((o.ws, o.socket_id))))
        .collect();
    let spec = |i: usize| SubSpec {
        channel: channels[i % channels.len()].clone(),
        auth: Auth::Public,
    };
    let done = ws::connect_many_with(
        upgraded.len(),
        ctx.batch,
        ctx.conn_timeout,
        spec,
        |i, spec| {
            let conn = upgraded[i].lock().unwrap().take();
            async move {
                let (mut socket, sid) = conn.ok_or("connection already taken")?;
                let frame = ws::subscribe_frame(target, &sid, &spec);
                ws::subscribe(&mut socket, frame, &spec.channel).await?;
                Ok((socket, sid))
            }
        },
    )
    .await;
    let subscribed = done.opened.len();
    ctx.set("subscribed", subscribed);
    ctx.set("subscribe_secs", r3(done.elapsed.as_secs_f64()));
    ctx.set("subscribe_ms", pct_json(&done.hist));
    ctx.set("subscribe_errors", done.errors_json());
    let (stop, stop_rx) = watch::channel(false);
    let health = Arc::new(Health::default());
    let tasks: Vec<_> = done
        .opened
        .into_iter()
        .map(|o| ws::drive(o.ws, ws::Ignore, stop_rx.clone(), None, health.clone()))
        .collect();
    tokio::time::sleep(hold).await;
    let sub_read = read(ctx, subscribed);

    // At rest, subscribed.
    ctx.phase("idle");
    tokio::time::sleep(Duration::from_secs_f64(a.idle)).await;
    let idle_read = read(ctx, subscribed);
    ctx.set("dropped_while_idle", health.json());

    let after = ctx.close_and_settle(&stop, tasks, a.settle).await;

    if ctx.pid.is_some() {
        let b = before.rss;
        let (tcp, ws, sub) = (
            per_conn(b, tcp_read),
            per_conn(b, ws_read),
            per_conn(b, sub_read),
        );
        ctx.set(
            "broker_rss",
            json!({
                "before_bytes": b,
                "tcp_bytes": tcp_read.rss,
                "ws_bytes": ws_read.rss,
                "subscribed_bytes": sub_read.rss,
                "idle_end_bytes": idle_read.rss,
                "after_close_bytes": after,
                "per_conn_tcp_bytes": tcp,
                "per_conn_ws_bytes": ws,
                "per_conn_subscribed_bytes": sub,
                "accepted_cost_bytes": tcp,
                "upgrade_cost_bytes": diff(ws, tcp),
                "subscribe_cost_bytes": diff(sub, ws),
                "not_returned_bytes": match (b, after) { (Some(b), Some(a)) => Value::from(a as i64 - b as i64), _ => Value::Null },
            }),
        );
        let idle_cpu = idle_read.cpu.zip(sub_read.cpu).map(|(e, s)| e - s);
        let idle_secs = a.idle;
        ctx.set(
            "broker_cpu",
            json!({
                // Each stage's CPU includes the `--hold` seconds before its reading.
                "tcp_us_per_conn": cpu_per_conn(before, tcp_read),
                "upgrade_us_per_conn": cpu_per_conn(tcp_read, ws_read),
                "subscribe_us_per_conn": cpu_per_conn(ws_read, sub_read),
                "idle_cpu_s": idle_cpu.map(r3),
                "idle_ms_per_s": idle_cpu.map(|c| r3(c * 1e3 / idle_secs)),
                "idle_us_per_conn_per_s": idle_cpu
                    .filter(|_| subscribed > 0)
                    .map(|c| r3(c * 1e6 / idle_secs / subscribed as f64)),
            }),
        );
    }
    if subscribed < a.conns {
        return Err(format!(
            "{} of {} connections did not reach subscribed",
            a.conns - subscribed,
            a.conns
        ));
    }
    Ok(())
}
