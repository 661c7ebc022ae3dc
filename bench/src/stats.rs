//! Clocks, histograms and readings of another process from `/proc`.

use std::{
    sync::{Mutex, OnceLock},
    time::Instant,
};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's first call: the timestamp carried in payloads.
/// Sender and receiver are in this one process, so one monotonic clock serves both.
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Microseconds, 1 µs to one hour, 3 significant digits.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 1000.0).round() / 1000.0
}

/// `{count, p50, p90, p99, max, mean}` in milliseconds (nulls when empty).
pub fn pct_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0, "p50": null, "p90": null, "p99": null, "max": null, "mean": null});
    }
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
        "mean": (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
    })
}

/// Latencies recorded from many connection tasks: a few mutex-guarded shards,
/// chosen by connection index, so tasks rarely contend and nothing is allocated
/// per message.
pub struct Shards {
    shards: Vec<Mutex<Shard>>,
}

pub struct Shard {
    pub hist: Histogram<u64>,
    pub count: u64,
    pub last_ns: u64,
}

impl Shards {
    pub fn new(n: usize) -> Self {
        Self {
            shards: (0..n.max(1))
                .map(|_| {
                    Mutex::new(Shard {
                        hist: hist(),
                        count: 0,
                        last_ns: 0,
                    })
                })
                .collect(),
        }
    }

    /// Records one delivery sent at `sent_ns`, received at `now_ns`.
    pub fn record(&self, shard: usize, sent_ns: u64, now_ns: u64) {
        let mut s = self.shards[shard % self.shards.len()].lock().unwrap();
        s.hist
            .saturating_record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
        s.count += 1;
        s.last_ns = s.last_ns.max(now_ns);
    }

    pub fn count(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().unwrap().count).sum()
    }

    /// Merged histogram, total count and the latest receive time.
    pub fn merged(&self) -> (Histogram<u64>, u64, u64) {
        let mut h = hist();
        let (mut count, mut last) = (0, 0);
        for s in &self.shards {
            let s = s.lock().unwrap();
            h.add(&s.hist).expect("same bounds");
            count += s.count;
            last = last.max(s.last_ns);
        }
        (h, count, last)
    }
}

/// Finds `#T<digits>` in a frame: the send time stamped into every payload.
/// A plain substring search, so it works whatever the broker's field order or
/// string escaping, and allocates nothing.
pub fn extract_ts(text: &str) -> Option<u64> {
    let i = text.find("#T")?;
    let digits = &text.as_bytes()[i + 2..];
    let mut v: u64 = 0;
    let mut n = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add((b - b'0') as u64);
        n += 1;
    }
    (n > 0).then_some(v)
}

/// The number after the first `marker` in `text`.
pub fn number_after(text: &str, marker: &str) -> Option<usize> {
    let i = text.find(marker)?;
    let rest = &text[i + marker.len()..];
    let end = rest
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Resident set size of a process in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime of a process in seconds (`/proc/PID/stat`), or of this process for `None`.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses; the fields after it do not.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map_or(100.0, |t| t as f64);
    Some((utime + stime) as f64 / tck)
}

/// Raises the soft open-file limit to the hard limit; returns the limit now in force.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Rounds to 3 decimals for the JSON.
pub fn r3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_found_in_escaped_frames() {
        assert_eq!(
            extract_ts(r##"{"event":"e","data":"#T123#S4#xxxx"}"##),
            Some(123)
        );
        assert_eq!(extract_ts(r##"{"data":{"m":"#T9"}}"##), Some(9));
        assert_eq!(extract_ts(r#"{"event":"pusher:pong"}"#), None);
        assert_eq!(
            number_after(r#"{\"user_id\":\"bench-u-17\"}"#, "bench-u-"),
            Some(17)
        );
    }

    #[test]
    fn own_process_readings() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_seconds(Some(pid)).is_some());
        assert!(cpu_seconds(None).is_some());
    }
}
