//! Runs the generator at tiny sizes against the real broker binary and checks
//! each run's JSON: the expected keys, no error and no loss. No timing assertions.
//!
//! The broker binary is not a dependency of this crate, so it is looked up next
//! to `pusher-bench` in the same target directory: build it first with
//! `cargo build --workspace --bins` (scripts/test does).

use std::{
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_pusher-bench");

struct Broker {
    child: Child,
    url: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn broker_path() -> PathBuf {
    let dir = PathBuf::from(BENCH)
        .parent()
        .expect("binary has a directory")
        .to_path_buf();
    let path = dir.join(format!("broker{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "the broker binary {} is missing: run `cargo build -p broker` (or `cargo build --workspace --bins`) before `cargo test -p pusher-bench`",
        path.display()
    );
    path
}

fn start_broker() -> Broker {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(broker_path())
        .env("BROKER_HOST", "127.0.0.1")
        .env("BROKER_PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .env_remove("BROKER_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start broker");
    let broker = Broker {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "broker did not listen on port {port} within 20s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}

fn bench(broker: &Broker, args: &[&str]) -> Value {
    let pid = broker.child.id().to_string();
    let out = Command::new(BENCH)
        .args(args)
        .args([
            "--url",
            &broker.url,
            "--pid",
            &pid,
            "--timeout",
            "60",
            "--label",
            "smoke",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run pusher-bench");
    let lines: Vec<String> = BufReader::new(&out.stdout[..])
        .lines()
        .map_while(Result::ok)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "pusher-bench {args:?} must print exactly one line, got {lines:?}"
    );
    let v: Value =
        serde_json::from_str(&lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lines[0]));
    assert!(out.status.success(), "pusher-bench {args:?} failed: {v}");
    assert_eq!(v["error"], Value::Null, "{v}");
    v
}

fn has(v: &Value, keys: &[&str]) {
    for k in keys {
        let mut cur = v;
        for part in k.split('.') {
            cur = &cur[part];
        }
        assert!(!cur.is_null(), "missing {k} in {v}");
    }
}

#[test]
fn generator_runs_every_scenario_against_the_broker() {
    let broker = start_broker();

    let v = bench(&broker, &["wait", "--secs", "20"]);
    assert_eq!(v["ready"], true);

    let v = bench(
        &broker,
        &[
            "connect",
            "--conns",
            "20",
            "--channels",
            "2",
            "--idle",
            "0.2",
            "--settle",
            "0.2",
        ],
    );
    has(
        &v,
        &[
            "mode",
            "connect_rate_per_s",
            "subscribe_ms.p50",
            "subscribe_ms.p90",
            "subscribe_ms.p99",
            "subscribe_ms.max",
        ],
    );
    has(
        &v,
        &[
            "broker_rss.before_bytes",
            "broker_rss.subscribed_bytes",
            "broker_rss.after_close_bytes",
            "broker_rss.per_conn_bytes",
        ],
    );
    assert_eq!(v["subscribed"], 20);
    assert_eq!(v["failed"], 0);

    let v = bench(
        &broker,
        &[
            "fanout",
            "--subs",
            "10",
            "--channels",
            "2",
            "--rate",
            "20",
            "--duration",
            "1",
            "--payload",
            "100",
        ],
    );
    has(
        &v,
        &[
            "deliveries_per_s",
            "expected_deliveries",
            "received_deliveries",
            "lost_deliveries",
            "latency_ms.p50",
            "latency_ms.p99",
        ],
    );
    has(
        &v,
        &[
            "latency_ms.p90",
            "latency_ms.max",
            "trigger_http_ms.p50",
            "trigger_http_ms.p99",
            "broker_cpu_s",
            "broker_cpu_us_per_delivery",
        ],
    );
    assert_eq!(v["triggers_ok"], 20, "{v}");
    assert_eq!(v["expected_deliveries"], 100, "{v}");
    assert_eq!(v["lost_deliveries"], 0, "{v}");
    assert_eq!(v["subscribers_dropped"]["count"], 0, "{v}");
    has(&v, &["broker_cpu_us_per_request", "batch_events"]);

    // Batches: 10 requests of 2 events over 3 channels of 3 subscribers each.
    let v = bench(
        &broker,
        &[
            "fanout",
            "--subs",
            "9",
            "--channels",
            "3",
            "--rate",
            "10",
            "--batch-events",
            "2",
            "--duration",
            "1",
        ],
    );
    assert_eq!(v["batch_events"], 2, "{v}");
    assert_eq!(v["triggers_ok"], 10, "{v}");
    assert_eq!(v["offered_deliveries_per_s"], 60.0, "{v}");
    assert_eq!(v["expected_deliveries"], 60, "{v}");
    assert_eq!(v["lost_deliveries"], 0, "{v}");

    let v = bench(
        &broker,
        &[
            "idle",
            "--conns",
            "10",
            "--channels",
            "2",
            "--idle",
            "0.3",
            "--hold",
            "0.2",
            "--settle",
            "0.2",
        ],
    );
    has(
        &v,
        &[
            "broker_rss.before_bytes",
            "broker_rss.tcp_bytes",
            "broker_rss.ws_bytes",
            "broker_rss.subscribed_bytes",
            "broker_rss.after_close_bytes",
            "broker_rss.per_conn_tcp_bytes",
            "broker_rss.upgrade_cost_bytes",
            "broker_rss.subscribe_cost_bytes",
            "broker_cpu.idle_ms_per_s",
            "broker_cpu.idle_us_per_conn_per_s",
            "upgrade_ms.p50",
        ],
    );
    assert_eq!(v["tcp_alive_at_reading"], 10, "{v}");
    assert_eq!(v["tcp_closed_by_broker"], 0, "{v}");
    assert_eq!(v["upgraded"], 10, "{v}");
    assert_eq!(v["upgraded_fresh"], 0, "{v}");
    assert_eq!(v["subscribed"], 10, "{v}");
    assert_eq!(v["dropped_while_idle"]["count"], 0, "{v}");

    let v = bench(
        &broker,
        &[
            "client-events",
            "--pairs",
            "2",
            "--rate",
            "10",
            "--duration",
            "1",
        ],
    );
    has(
        &v,
        &[
            "sent",
            "received",
            "lost",
            "rate_limited",
            "latency_ms.p50",
            "latency_ms.p99",
            "notes",
        ],
    );
    assert_eq!(v["sent"], 10, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["rate_limited"], 0, "{v}");

    let v = bench(
        &broker,
        &[
            "presence",
            "--users",
            "4",
            "--churn",
            "4",
            "--duration",
            "1",
        ],
    );
    has(
        &v,
        &[
            "joins_sent",
            "leaves_sent",
            "added_received",
            "removed_received",
            "member_added_ms.p50",
            "member_removed_ms.p50",
        ],
    );
    assert_eq!(v["joins_sent"], 2, "{v}");
    assert_eq!(v["leaves_sent"], 2, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["unmatched_events"], 0, "{v}");
}

#[test]
fn global_timeout_prints_partial_results() {
    let broker = start_broker();
    let pid = broker.child.id().to_string();
    let out = Command::new(BENCH)
        .args([
            "fanout",
            "--subs",
            "2",
            "--rate",
            "5",
            "--duration",
            "30",
            "--url",
            &broker.url,
            "--pid",
            &pid,
            "--timeout",
            "2",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("run pusher-bench");
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(v["error"].as_str().unwrap().contains("timeout"), "{v}");
    assert_eq!(v["subscribed"], 2, "{v}");
    assert_eq!(v["phase"], "triggering", "{v}");
}

#[test]
fn unreachable_broker_is_an_error_not_a_hang() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = Command::new(BENCH)
        .args(["connect", "--conns", "3", "--url", &url, "--timeout", "20"])
        .stderr(Stdio::null())
        .output()
        .expect("run pusher-bench");
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["failed"], 3, "{v}");
    assert!(v["error"].is_string(), "{v}");
}

#[test]
fn table_renders_side_by_side() {
    let lines = r#"{"mode":"fanout","run":"fanout-a","label":"ours","subscribed":10,"subs":10,"latency_ms":{"p50":1.5,"p90":2,"p99":3,"max":4},"error":null}
{"mode":"fanout","run":"fanout-a","label":"peer","subscribed":9,"subs":10,"latency_ms":{"p50":2.5,"p90":3,"p99":4,"max":5},"error":"boom"}"#;
    let mut child = Command::new(BENCH)
        .arg("table")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), lines.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("| run | metric | ours | peer |"), "{text}");
    assert!(text.contains("| 10 / 10 | 9 / 10 |"), "{text}");
    assert!(text.contains("1.50 / 2 / 3 / 4"), "{text}");
    assert!(text.contains("boom"), "{text}");
}
