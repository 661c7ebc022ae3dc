//! `table`: JSON result lines to one markdown table, runs as row groups and
//! targets (labels) as columns, so two brokers compare side by side.

use serde_json::Value;

fn num(v: &Value) -> Option<String> {
    if let Some(i) = v.as_i64() {
        return Some(i.to_string());
    }
    let f = v.as_f64()?;
    let a = f.abs();
    Some(if f == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{f:.0}")
    } else if a >= 10.0 {
        format!("{f:.1}")
    } else if a >= 1.0 {
        format!("{f:.2}")
    } else {
        format!("{f:.3}")
    })
}

fn at<'a>(r: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(r, |v, k| &v[k])
}

/// Values at `paths` joined with " / ", or None when all are missing.
fn join(r: &Value, paths: &[&str]) -> Option<String> {
    let parts: Vec<String> = paths
        .iter()
        .map(|p| num(at(r, p)).unwrap_or_else(|| "–".into()))
        .collect();
    parts.iter().any(|p| p != "–").then(|| parts.join(" / "))
}

fn scaled(r: &Value, paths: &[&str], div: f64) -> Option<String> {
    let parts: Vec<String> = paths
        .iter()
        .map(|p| {
            at(r, p)
                .as_f64()
                .and_then(|v| num(&Value::from(v / div)))
                .unwrap_or_else(|| "–".into())
        })
        .collect();
    parts.iter().any(|p| p != "–").then(|| parts.join(" / "))
}

type Row = (&'static str, fn(&Value) -> Option<String>);

/// The broker's RSS at the start, with every connection subscribed, and after they closed.
const RSS_ROW: Row = ("broker RSS before / subscribed / after close (MiB)", |r| {
    scaled(
        r,
        &[
            "broker_rss.before_bytes",
            "broker_rss.subscribed_bytes",
            "broker_rss.after_close_bytes",
        ],
        1048576.0,
    )
});

fn rows(mode: &str) -> Vec<Row> {
    match mode {
        "connect" => vec![
            ("subscribed / asked", |r| join(r, &["subscribed", "conns"])),
            ("connect+subscribe rate (conns/s)", |r| {
                num(&r["connect_rate_per_s"])
            }),
            ("time to subscribed p50 / p90 / p99 / max (ms)", |r| {
                join(
                    r,
                    &[
                        "subscribe_ms.p50",
                        "subscribe_ms.p90",
                        "subscribe_ms.p99",
                        "subscribe_ms.max",
                    ],
                )
            }),
            ("broker RSS per conn (KiB)", |r| {
                scaled(r, &["broker_rss.per_conn_bytes"], 1024.0)
            }),
            RSS_ROW,
            ("conns dropped while idle", |r| {
                num(&r["dropped_while_idle"]["count"])
            }),
        ],
        "idle" => vec![
            ("held TCP-only / WebSocket / subscribed (asked)", |r| {
                Some(format!(
                    "{} ({})",
                    join(r, &["tcp_alive_at_reading", "upgraded", "subscribed"])?,
                    num(&r["conns"]).unwrap_or_default()
                ))
            }),
            ("TCP-only conns closed by broker before upgrade", |r| {
                num(&r["tcp_closed_by_broker"])
            }),
            (
                "broker RSS per conn: TCP-only / WebSocket / subscribed (KiB)",
                |r| {
                    scaled(
                        r,
                        &[
                            "broker_rss.per_conn_tcp_bytes",
                            "broker_rss.per_conn_ws_bytes",
                            "broker_rss.per_conn_subscribed_bytes",
                        ],
                        1024.0,
                    )
                },
            ),
            (
                "cost per conn: accepted / upgrade+session / subscription (KiB)",
                |r| {
                    scaled(
                        r,
                        &[
                            "broker_rss.accepted_cost_bytes",
                            "broker_rss.upgrade_cost_bytes",
                            "broker_rss.subscribe_cost_bytes",
                        ],
                        1024.0,
                    )
                },
            ),
            RSS_ROW,
            (
                "broker CPU µs per conn: accept / upgrade / subscribe",
                |r| {
                    join(
                        r,
                        &[
                            "broker_cpu.tcp_us_per_conn",
                            "broker_cpu.upgrade_us_per_conn",
                            "broker_cpu.subscribe_us_per_conn",
                        ],
                    )
                },
            ),
            ("broker CPU idle: ms per s / µs per conn per s", |r| {
                join(
                    r,
                    &[
                        "broker_cpu.idle_ms_per_s",
                        "broker_cpu.idle_us_per_conn_per_s",
                    ],
                )
            }),
            ("conns dropped while idle", |r| {
                num(&r["dropped_while_idle"]["count"])
            }),
        ],
        "subscribe-storm" => vec![
            ("subscribed / asked", |r| {
                join(r, &["subscribed", "channels"])
            }),
            ("subscriptions/s", |r| num(&r["subscriptions_per_s"])),
            ("subscribe latency p50 / p90 / p99 / max (ms)", |r| {
                join(
                    r,
                    &[
                        "subscribe_ms.p50",
                        "subscribe_ms.p90",
                        "subscribe_ms.p99",
                        "subscribe_ms.max",
                    ],
                )
            }),
            ("broker CPU µs per subscribe", |r| {
                num(&r["broker_cpu_us_per_subscribe"])
            }),
        ],
        "fanout" => vec![
            ("subscribers", |r| join(r, &["subscribed", "subs"])),
            ("trigger requests sent / planned (failed)", |r| {
                let batch = match r["batch_events"].as_u64() {
                    Some(n) if n > 1 => format!(", {n} events each"),
                    _ => String::new(),
                };
                Some(format!(
                    "{} ({}){batch}",
                    join(r, &["triggers_sent", "triggers_planned"])?,
                    num(&r["triggers_failed"]).unwrap_or_default()
                ))
            }),
            ("offered / delivered (deliveries/s)", |r| {
                join(r, &["offered_deliveries_per_s", "deliveries_per_s"])
            }),
            ("expected / received (loss %)", |r| {
                Some(format!(
                    "{} ({}%)",
                    join(r, &["expected_deliveries", "received_deliveries"])?,
                    num(&r["loss_pct"]).unwrap_or_default()
                ))
            }),
            ("latency p50 / p90 / p99 / max (ms)", |r| {
                join(
                    r,
                    &[
                        "latency_ms.p50",
                        "latency_ms.p90",
                        "latency_ms.p99",
                        "latency_ms.max",
                    ],
                )
            }),
            ("trigger HTTP p50 / p99 (ms)", |r| {
                join(r, &["trigger_http_ms.p50", "trigger_http_ms.p99"])
            }),
            ("broker CPU s / µs per delivery", |r| {
                join(r, &["broker_cpu_s", "broker_cpu_us_per_delivery"])
            }),
            ("broker CPU µs per trigger request", |r| {
                num(&r["broker_cpu_us_per_request"])
            }),
            ("generator CPU s", |r| num(&r["generator_cpu_s"])),
            ("subscribers dropped", |r| {
                num(&r["subscribers_dropped"]["count"])
            }),
        ],
        "client-events" => vec![
            ("pairs / per-sender rate (/s)", |r| {
                join(r, &["active_pairs", "per_sender_rate"])
            }),
            ("sent / received / rate-limited", |r| {
                join(r, &["sent", "received", "rate_limited"])
            }),
            ("loss %", |r| num(&r["loss_pct"])),
            ("latency p50 / p90 / p99 / max (ms)", |r| {
                join(
                    r,
                    &[
                        "latency_ms.p50",
                        "latency_ms.p90",
                        "latency_ms.p99",
                        "latency_ms.max",
                    ],
                )
            }),
        ],
        "presence" => vec![
            ("members / channels", |r| {
                join(r, &["subscribed", "channels"])
            }),
            ("changes sent (joins / leaves)", |r| {
                join(r, &["joins_sent", "leaves_sent"])
            }),
            ("events received (added / removed) / lost", |r| {
                join(r, &["added_received", "removed_received", "lost"])
            }),
            ("member_added p50 / p99 / max (ms)", |r| {
                join(
                    r,
                    &[
                        "member_added_ms.p50",
                        "member_added_ms.p99",
                        "member_added_ms.max",
                    ],
                )
            }),
            ("member_removed p50 / p99 / max (ms)", |r| {
                join(
                    r,
                    &[
                        "member_removed_ms.p50",
                        "member_removed_ms.p99",
                        "member_removed_ms.max",
                    ],
                )
            }),
        ],
        _ => vec![],
    }
}

pub fn render(text: &str) -> String {
    let records: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(serde_json::Value::is_object)
        .collect();
    let key = |r: &Value| -> (String, String) {
        let run = r["run"]
            .as_str()
            .or(r["mode"].as_str())
            .unwrap_or("?")
            .to_owned();
        let label = r["label"]
            .as_str()
            .or(r["url"].as_str())
            .unwrap_or("?")
            .to_owned();
        (run, label)
    };
    let mut runs: Vec<(String, String)> = Vec::new(); // (run, mode)
    let mut labels: Vec<String> = Vec::new();
    for r in &records {
        let (run, label) = key(r);
        if !runs.iter().any(|(x, _)| *x == run) {
            runs.push((run, r["mode"].as_str().unwrap_or("?").to_owned()));
        }
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    let mut out = format!(
        "| run | metric | {} |\n|---|---|{}\n",
        labels.join(" | "),
        "---:|".repeat(labels.len())
    );
    for (run, mode) in &runs {
        let find = |label: &str| {
            records
                .iter()
                .rev()
                .find(|r| key(r) == (run.clone(), label.to_owned()))
        };
        let mut rows = rows(mode);
        rows.push(("error", |r| {
            r["error"].as_str().map(|e| e.replace('|', "/"))
        }));
        let mut first = true;
        for (name, f) in rows {
            let cells: Vec<String> = labels
                .iter()
                .map(|l| find(l).and_then(f).unwrap_or_default())
                .collect();
            if name == "error" && cells.iter().all(String::is_empty) {
                continue;
            }
            let run_cell = if first {
                format!("**{run}**")
            } else {
                String::new()
            };
            first = false;
            out.push_str(&format!(
                "| {run_cell} | {name} | {} |\n",
                cells.join(" | ")
            ));
        }
    }
    out
}
