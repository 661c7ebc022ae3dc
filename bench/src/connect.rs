//! `connect`: open N connections over C public channels, subscribe each, and
//! measure the rate, the time to subscribed and the broker's memory per connection.

use std::{sync::Arc, time::Duration};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::{
    ctx::Ctx,
    stats::{pct_json, r3},
    ws::{self, Auth, Health, SubSpec},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Connections to open (at most 60000).
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Public channels the connections are spread over.
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// Seconds to stay idle once all are subscribed, before reading the broker's RSS.
    #[arg(long, default_value_t = 2.0)]
    pub idle: f64,
    /// Seconds to wait after closing all, before reading the broker's RSS again.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
}

pub fn default_timeout(a: &Args) -> f64 {
    60.0 + a.conns as f64 / 100.0 + a.idle + a.settle
}

pub async fn run(ctx: &Ctx, a: &Args) -> Result<(), String> {
    if a.conns == 0 || a.conns > 60_000 || a.channels == 0 {
        return Err("--conns must be 1..=60000 and --channels at least 1".into());
    }
    ctx.set("conns", a.conns);
    ctx.set("channels", a.channels);
    ctx.check_fds(a.conns);
    let rss_before = ctx.rss();

    ctx.phase("connecting");
    let channels: Vec<String> = (0..a.channels)
        .map(|c| format!("bench-{}-{c}", ctx.tag))
        .collect();
    let done = ws::connect_many(&ctx.target, a.conns, ctx.batch, ctx.conn_timeout, |i| {
        SubSpec {
            channel: channels[i % channels.len()].clone(),
            auth: Auth::Public,
        }
    })
    .await;
    let subscribed = done.opened.len();
    let secs = done.elapsed.as_secs_f64();
    ctx.set("subscribed", subscribed);
    ctx.set("failed", done.failed);
    ctx.set("connect_errors", done.errors_json());
    ctx.set("connect_secs", r3(secs));
    ctx.set("connect_rate_per_s", r3(subscribed as f64 / secs.max(1e-9)));
    ctx.set("subscribe_ms", pct_json(&done.hist));

    ctx.phase("idle");
    let (stop, stop_rx) = watch::channel(false);
    let health = Arc::new(Health::default());
    let tasks: Vec<_> = done
        .opened
        .into_iter()
        .map(|o| ws::drive(o.ws, ws::Ignore, stop_rx.clone(), None, health.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(a.idle)).await;
    let rss_subscribed = ctx.rss();

    let rss_after = ctx.close_and_settle(&stop, tasks, a.settle).await;
    ctx.set("dropped_while_idle", health.json());

    if ctx.pid.is_some() {
        let per_conn = match (rss_before, rss_subscribed) {
            (Some(b), Some(s)) if subscribed > 0 => {
                Some(((s as f64 - b as f64) / subscribed as f64).round())
            }
            _ => None,
        };
        ctx.set(
            "broker_rss",
            json!({
                "before_bytes": rss_before,
                "subscribed_bytes": rss_subscribed,
                "after_close_bytes": rss_after,
                "per_conn_bytes": per_conn,
                "not_returned_bytes": match (rss_before, rss_after) { (Some(b), Some(a)) => Value::from(a as i64 - b as i64), _ => Value::Null },
            }),
        );
    }
    if done.failed > 0 {
        return Err(format!(
            "{} of {} connections failed to open and subscribe",
            done.failed, a.conns
        ));
    }
    Ok(())
}
