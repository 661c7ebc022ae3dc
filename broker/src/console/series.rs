//! The graphs' data: once a second, each app's open connections on this node
//! and the messages it published, kept for the last few minutes.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;

use protocol::AppKey;
use serde::Serialize;

use crate::{console_feed::Feed, state::State};

/// One second of one app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub time: u64,
    pub connections: u64,
    /// Messages published in that second; `None` when no console was open to count them.
    pub messages: Option<u64>,
}

/// Every app's recent samples, each history at most `keep` long.
#[derive(Debug)]
pub struct Series {
    keep: usize,
    apps: Mutex<HashMap<AppKey, VecDeque<Sample>>>,
}

impl Series {
    pub fn new(keep: usize) -> Self {
        Self {
            keep: keep.max(1),
            apps: Mutex::new(HashMap::new()),
        }
    }

    /// Adds one sample per app in `now`; apps not in it are forgotten.
    pub fn record(&self, now: impl IntoIterator<Item = (AppKey, Sample)>) {
        let mut apps = self.apps.lock();
        let mut next = HashMap::with_capacity(apps.len());
        for (key, sample) in now {
            let mut history = apps.remove(&key).unwrap_or_default();
            if history.len() == self.keep {
                history.pop_front();
            }
            history.push_back(sample);
            next.insert(key, history);
        }
        *apps = next;
    }

    /// An app's samples, oldest first.
    pub fn of(&self, app: &AppKey) -> Vec<Sample> {
        self.apps
            .lock()
            .get(app)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Samples every app once a second, and starts the feed's next second.
pub async fn run(state: Arc<State>, feed: Arc<Feed>, series: Arc<Series>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let messages = feed.tick();
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        series.record(state.apps.all().iter().map(|app| {
            let sample = Sample {
                time,
                connections: app.hub.connection_count() as u64,
                messages: messages
                    .as_ref()
                    .map(|m| m.get(&app.key).copied().unwrap_or(0)),
            };
            (app.key.clone(), sample)
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: u64) -> Sample {
        Sample {
            time,
            connections: time,
            messages: Some(time),
        }
    }

    #[test]
    fn history_is_bounded_and_gone_apps_are_forgotten() {
        let s = Series::new(3);
        let (a, b) = (AppKey::new("a").unwrap(), AppKey::new("b").unwrap());
        for t in 0..5 {
            s.record([(a.clone(), sample(t)), (b.clone(), sample(t))]);
        }
        assert_eq!(
            s.of(&a).iter().map(|x| x.time).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        s.record([(a.clone(), sample(5))]);
        assert!(s.of(&b).is_empty());
        assert_eq!(s.of(&a).len(), 3);
    }
}
