//! What every scenario gets: the target, the broker's pid, and the report it fills in.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Map, Value};
use tokio::{sync::watch, task::JoinHandle};

use crate::ws::{self, Target};

pub struct Ctx {
    pub target: Target,
    pub pid: Option<u32>,
    /// Connections opened in parallel.
    pub batch: usize,
    /// Time one connection gets to open and subscribe.
    pub conn_timeout: Duration,
    /// The soft open-file limit in force.
    pub nofile: u64,
    /// Filled in as the run goes, so a timed-out run still prints what it measured.
    pub report: Arc<Mutex<Map<String, Value>>>,
    /// A tag unique to this run, used in channel names.
    pub tag: String,
}

impl Ctx {
    pub fn set(&self, key: &str, v: impl Into<Value>) {
        self.report.lock().unwrap().insert(key.to_owned(), v.into());
    }

    pub fn note(&self, msg: impl Into<String>) {
        let msg = msg.into();
        eprintln!("pusher-bench: {msg}");
        let mut r = self.report.lock().unwrap();
        match r.get_mut("notes") {
            Some(Value::Array(a)) => a.push(msg.into()),
            _ => {
                r.insert("notes".into(), Value::Array(vec![msg.into()]));
            }
        }
    }

    pub fn phase(&self, p: &str) {
        self.set("phase", p);
    }

    /// Warns when `conns` sockets will not fit under the open-file limit.
    pub fn check_fds(&self, conns: usize) {
        let need = conns as u64 + 64;
        if need > self.nofile {
            self.note(format!(
                "{conns} connections need about {need} open files but this process may open {} (ulimit -n, soft raised to hard); expect connection failures",
                self.nofile
            ));
        }
    }

    pub fn rss(&self) -> Option<u64> {
        self.pid.and_then(crate::stats::rss_bytes)
    }

    pub fn cpu(&self) -> Option<f64> {
        self.pid.and_then(|p| crate::stats::cpu_seconds(Some(p)))
    }

    /// Ends a run that drove connections: records the broker's RSS while they are
    /// still open, then asks them all to close and waits (bounded) for them.
    pub async fn close_driven(&self, stop: &watch::Sender<bool>, tasks: Vec<JoinHandle<()>>) {
        if let Some(r) = self.rss() {
            self.set("broker_rss_bytes", r);
        }
        self.phase("closing");
        ws::stop_all(stop, tasks, Duration::from_secs(15)).await;
    }

    /// Ends a run that measures memory: closes every driven connection (bounded, noting
    /// those that did not finish), waits `settle` seconds and returns the broker's RSS.
    pub async fn close_and_settle(
        &self,
        stop: &watch::Sender<bool>,
        tasks: Vec<JoinHandle<()>>,
        settle: f64,
    ) -> Option<u64> {
        self.phase("closing");
        let unfinished = ws::stop_all(stop, tasks, Duration::from_secs(20)).await;
        if unfinished > 0 {
            self.note(format!(
                "{unfinished} connections did not finish closing within 20s"
            ));
        }
        tokio::time::sleep(Duration::from_secs_f64(settle)).await;
        self.rss()
    }
}
