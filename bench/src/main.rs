//! `pusher-bench`: drives a Pusher Channels compatible broker over loopback and
//! prints one JSON object per run on stdout.
//!
//! Every run is bounded: connection counts are capped, durations too, each
//! connection gets a time limit to open and subscribe, and a global timeout ends
//! the run with partial results and `"error"` set.
#![forbid(unsafe_code)]

mod client_events;
mod connect;
mod ctx;
mod fallback;
mod fanout;
mod idle;
mod presence;
mod rest;
mod sink;
mod stats;
mod storm;
mod table;
mod ws;

use std::{
    io::Write,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};

use crate::{ctx::Ctx, ws::Target};

#[derive(Parser, Debug)]
#[command(
    name = "pusher-bench",
    version,
    about = "Load generator for Pusher Channels compatible brokers (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Broker base URL (http:// or ws://; no TLS).
    #[arg(long, global = true, default_value = "http://127.0.0.1:6001")]
    url: String,
    #[arg(long, global = true, default_value = "1")]
    app_id: String,
    #[arg(long, global = true, default_value = "app-key")]
    key: String,
    #[arg(long, global = true, default_value = "app-secret")]
    secret: String,
    /// The broker's process id: enables RSS (VmRSS) and CPU (utime+stime) readings.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Global timeout in seconds; the default is derived from the run's size.
    #[arg(long, global = true)]
    timeout: Option<f64>,
    /// Connections opened in parallel.
    #[arg(long, global = true, default_value_t = 200)]
    batch: usize,
    /// Seconds one connection may take to open and subscribe.
    #[arg(long, global = true, default_value_t = 15.0)]
    conn_timeout: f64,
    /// Runtime worker threads (the generator shares the machine with the broker).
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Name of the target in the JSON and in tables (e.g. "ours", "sockudo").
    #[arg(long, global = true)]
    label: Option<String>,
    /// Name of this run in the JSON and in tables.
    #[arg(long, global = true)]
    name: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Open N connections over C public channels; connect rate, time to subscribed, broker RSS per connection.
    Connect(connect::Args),
    /// N subscribers, signed REST triggers (or batches) at a fixed rate; deliveries/s, loss, end-to-end latency, broker CPU.
    Fanout(fanout::Args),
    /// N connections held at rest, stage by stage (TCP only, WebSocket, subscribed): broker RSS per connection at each, CPU while idle.
    Idle(idle::Args),
    /// Private-channel client events between sender/receiver pairs; latency and loss.
    ClientEvents(client_events::Args),
    /// Presence join/leave churn; member_added/member_removed latency at a watcher.
    Presence(presence::Args),
    /// Open N connections, then each subscribes to K channels of its own at once; subscriptions/s and latency.
    SubscribeStorm(storm::Args),
    /// Print a markdown table of JSON result lines (files, or stdin when none).
    Table { files: Vec<std::path::PathBuf> },
    /// Wait until the broker accepts a WebSocket connection (exit 1 if not within --secs).
    Wait {
        #[arg(long, default_value_t = 30.0)]
        secs: f64,
    },
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
    /// Serve a webhook receiver on 127.0.0.1:PORT that answers 200 to everything, until stopped.
    HookSink {
        #[arg(long)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    stats::now_ns();
    match &cli.cmd {
        Cmd::Table { files } => return table_cmd(files),
        Cmd::HookSink { port } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            return match rt.block_on(sink::run(*port)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pusher-bench hook-sink: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::FreePort => {
            return match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
                Ok(a) => {
                    println!("{}", a.port());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pusher-bench: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let c = &cli.common;
    let target = match Target::parse(&c.url, &c.app_id, &c.key, &c.secret) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pusher-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(c.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Cmd::Wait { secs } = cli.cmd {
        return rt.block_on(wait(&target, secs));
    }
    let nofile = stats::raise_nofile();
    let (mode, default_timeout) = match &cli.cmd {
        Cmd::Connect(a) => ("connect", connect::default_timeout(a)),
        Cmd::Fanout(a) => ("fanout", fanout::default_timeout(a)),
        Cmd::Idle(a) => ("idle", idle::default_timeout(a)),
        Cmd::ClientEvents(a) => ("client-events", client_events::default_timeout(a)),
        Cmd::Presence(a) => ("presence", presence::default_timeout(a)),
        Cmd::SubscribeStorm(a) => ("subscribe-storm", storm::default_timeout(a)),
        _ => unreachable!(),
    };
    let timeout = c.timeout.unwrap_or(default_timeout).clamp(1.0, 3600.0);
    let mut m = Map::new();
    m.insert("mode".into(), mode.into());
    m.insert(
        "run".into(),
        c.name.clone().unwrap_or_else(|| mode.to_owned()).into(),
    );
    m.insert(
        "label".into(),
        c.label.clone().map(Value::from).unwrap_or(Value::Null),
    );
    m.insert("url".into(), c.url.clone().into());
    m.insert("pid".into(), c.pid.into());
    m.insert("nofile_limit".into(), nofile.into());
    // Other work on the machine skews every number; record how busy it was.
    if let Some(l) = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
    {
        m.insert("host_loadavg_1m".into(), l.into());
    }
    let ctx = Ctx {
        target,
        pid: c.pid,
        batch: c.batch.max(1),
        conn_timeout: Duration::from_secs_f64(c.conn_timeout.max(0.1)),
        nofile,
        report: Arc::new(Mutex::new(m)),
        tag: format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() % 1_000_000)
                .unwrap_or(0)
        ),
    };
    if let Some(pid) = c.pid {
        if stats::rss_bytes(pid).is_none() {
            ctx.note(format!(
                "cannot read /proc/{pid}/status: no RSS or CPU readings"
            ));
        }
    }
    let started = std::time::Instant::now();
    let result = rt.block_on(async {
        let run = async {
            match &cli.cmd {
                Cmd::Connect(a) => connect::run(&ctx, a).await,
                Cmd::Fanout(a) => fanout::run(&ctx, a).await,
                Cmd::Idle(a) => idle::run(&ctx, a).await,
                Cmd::ClientEvents(a) => client_events::run(&ctx, a).await,
                Cmd::Presence(a) => presence::run(&ctx, a).await,
                Cmd::SubscribeStorm(a) => storm::run(&ctx, a).await,
                _ => unreachable!(),
            }
        };
        match tokio::time::timeout(Duration::from_secs_f64(timeout), run).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "global timeout after {timeout}s; results are partial"
            )),
        }
    });
    let mut report = ctx.report.lock().unwrap().clone();
    report.insert(
        "elapsed_s".into(),
        stats::r3(started.elapsed().as_secs_f64()).into(),
    );
    let failed = result.is_err();
    report.insert(
        "error".into(),
        result.err().map(Value::from).unwrap_or(Value::Null),
    );
    if !failed {
        report.remove("phase");
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", Value::Object(report));
    let _ = out.flush();
    // Connection tasks may still be winding down; do not wait for them.
    std::process::exit(if failed { 1 } else { 0 });
}

async fn wait(target: &Target, secs: f64) -> ExitCode {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), ws::open(target)).await {
            Ok(Ok(_)) => {
                println!("{}", json!({ "ready": true, "url": target.http_base }));
                return ExitCode::SUCCESS;
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "pusher-bench: {} not ready within {secs}s: {last}",
        target.http_base
    );
    ExitCode::FAILURE
}

fn table_cmd(files: &[std::path::PathBuf]) -> ExitCode {
    let mut text = String::new();
    if files.is_empty() {
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text);
    }
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(t) => text.push_str(&t),
            Err(e) => {
                eprintln!("pusher-bench: {}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        }
        text.push('\n');
    }
    print!("{}", table::render(&text));
    ExitCode::SUCCESS
}
