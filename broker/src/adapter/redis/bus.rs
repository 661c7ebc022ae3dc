//! The connection to Redis, one instance or a Redis Cluster, behind one small type.
//!
//! - `redis://host:port/db` (or `rediss://`): one instance; pub/sub with SUBSCRIBE/PUBLISH.
//! - `redis+cluster://[user:password@]host:port,host:port,…`: a Redis Cluster, given by
//!   seed nodes; pub/sub with sharded SSUBSCRIBE/SPUBLISH, so a channel's traffic only
//!   touches the shard that owns its slot. Failover and resharding are followed by the
//!   client (it re-reads the slot map and re-subscribes).
//!
//! Both speak RESP3, so one multiplexed connection carries commands and pub/sub pushes;
//! pushes (messages, and a notice when a connection drops) go to the channel given to
//! [`Bus::connect`].

use std::time::Duration;

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisFuture, RedisResult, Value,
};
use tokio::sync::mpsc;

const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Where Redis is, parsed from `redis_url`.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Single(redis::ConnectionInfo),
    /// Seed nodes of a Redis Cluster, with the credentials every node shares.
    Cluster {
        seeds: Vec<String>,
        username: Option<String>,
        password: Option<String>,
    },
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
            let rest = rest.trim_end_matches('/');
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (Some(auth), hosts),
                None => (None, rest),
            };
            let (username, password) = match auth.map(|a| a.split_once(':').unwrap_or(("", a))) {
                Some((user, pass)) => (
                    (!user.is_empty()).then(|| user.to_owned()),
                    (!pass.is_empty()).then(|| pass.to_owned()),
                ),
                None => (None, None),
            };
            let seeds: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{h}"))
                .collect();
            if seeds.is_empty() {
                return Err("redis+cluster:// needs at least one host:port".into());
            }
            for seed in &seeds {
                seed.as_str()
                    .into_connection_info()
                    .map_err(|e| format!("{seed}: {e}"))?;
            }
            return Ok(Self::Cluster {
                seeds,
                username,
                password,
            });
        }
        let info = url.into_connection_info().map_err(|e| e.to_string())?;
        Ok(Self::Single(info))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// The publish command that reaches the subscribers [`Bus::subscribe`] makes.
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
}

/// A connection for commands and pub/sub; cheap to clone (clones share it).
#[derive(Clone)]
pub(crate) enum Bus {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Bus {
    /// Connects; pub/sub messages and disconnection notices go to `pushes`.
    pub async fn connect(
        target: &Target,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> RedisResult<Self> {
        match target {
            Target::Single(info) => {
                let redis_settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                let client = redis::Client::open(info.clone().set_redis_settings(redis_settings))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    // Generous: a slow answer under load must not flip the node into serving
                    // local clients only (their presence lists would then miss other nodes' members).
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(1)
                    .set_push_sender(pushes);
                Ok(Self::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            Target::Cluster {
                seeds,
                username,
                password,
            } => {
                let mut builder = ClusterClientBuilder::new(seeds.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(Duration::from_secs(2))
                    .response_timeout(Duration::from_secs(5))
                    .retries(2)
                    .push_sender(pushes);
                if let Some(u) = username {
                    builder = builder.username(u);
                }
                if let Some(p) = password {
                    builder = builder.password(p);
                }
                Ok(Self::Cluster(
                    builder.build()?.get_async_connection().await?,
                ))
            }
        }
    }

    /// Subscribes to each topic; one result per topic, in order.
    pub async fn subscribe(&self, topics: &[String]) -> Vec<RedisResult<()>> {
        match self {
            Self::Single(c) => {
                let r = c.clone().subscribe(topics).await;
                topics.iter().map(|_| r.clone()).collect()
            }
            // Each topic may live on another shard: one command each, all at once.
            Self::Cluster(c) => {
                futures_util::future::join_all(topics.iter().map(|t| {
                    let mut c = c.clone();
                    async move { c.ssubscribe(t).await }
                }))
                .await
            }
        }
    }

    pub async fn unsubscribe(&self, topics: &[String]) -> RedisResult<()> {
        match self {
            Self::Single(c) => c.clone().unsubscribe(topics).await,
            Self::Cluster(c) => {
                for r in futures_util::future::join_all(topics.iter().map(|t| {
                    let mut c = c.clone();
                    async move { c.sunsubscribe(t).await }
                }))
                .await
                {
                    r?;
                }
                Ok(())
            }
        }
    }
}

impl ConnectionLike for Bus {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A pub/sub message: its topic and payload, or `None` for anything else.
pub(crate) fn message(push: &PushInfo) -> Option<&[u8]> {
    if !matches!(
        push.kind,
        redis::PushKind::Message | redis::PushKind::SMessage
    ) {
        return None;
    }
    match push.data.get(1)? {
        Value::BulkString(bytes) => Some(bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_one_instance_or_a_cluster() {
        assert!(matches!(
            Target::parse("redis://127.0.0.1:6379/0"),
            Ok(Target::Single(_))
        ));
        match Target::parse("redis+cluster://user:pw@10.0.0.1:7000,10.0.0.2:7001/").unwrap() {
            Target::Cluster {
                seeds,
                username,
                password,
            } => {
                assert_eq!(seeds, ["redis://10.0.0.1:7000", "redis://10.0.0.2:7001"]);
                assert_eq!(username.as_deref(), Some("user"));
                assert_eq!(password.as_deref(), Some("pw"));
            }
            other => panic!("{other:?}"),
        }
        match Target::parse("redis+cluster://:secret@h:1").unwrap() {
            Target::Cluster {
                username, password, ..
            } => assert_eq!((username, password.as_deref()), (None, Some("secret"))),
            other => panic!("{other:?}"),
        }
        assert!(Target::parse("redis+cluster://").is_err());
        assert!(Target::parse("nonsense").is_err());
    }
}
