//! Broker settings (every one of them lives here): a TOML file (path from `--config` or `BROKER_CONFIG`) with
//! environment overrides, and defaults that work out of the box.
//!
//! Without any configured app the broker serves one default app (id `1`, key
//! `app-key`, secret `app-secret`), so `cargo run -p broker` is enough to try it.

use std::{fmt, path::PathBuf, time::Duration};

use protocol::{AppId, AppKey, AppSecret, Limits};
use serde::Deserialize;

use subtle::ConstantTimeEq;

/// Everything the broker reads at start.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub host: String,
    pub port: u16,
    /// Seconds of silence after which the broker pings a client; also sent to
    /// clients in `connection_established` so they ping the broker.
    pub activity_timeout: u64,
    /// Seconds to wait for any message after a ping before closing with 4201.
    pub pong_timeout: u64,
    /// Frames one connection may have queued before it is disconnected (4100) as too slow.
    pub send_queue: usize,
    /// Seconds data sent to a client may stay unacknowledged (a client that stopped
    /// reading keeps a zero window) before the kernel drops the connection
    /// (`TCP_USER_TIMEOUT`); 0 leaves the kernel default (about 15 minutes of
    /// retransmits, and never while the peer answers zero-window probes).
    pub tcp_user_timeout: u64,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Seconds a shutdown may take: clients are told to reconnect (4200), webhooks flushed.
    pub shutdown_timeout: u64,
    /// PEM certificate chain; with `tls_key`, serves `wss://` and `https://` instead of plain.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How webhooks are batched, retried and bounded (all apps).
    pub webhooks: WebhookSettings,
    /// Apps kept in PostgreSQL, added and changed without a restart.
    pub app_store: Option<AppStoreConfig>,
    /// Run as one node of a cluster sharing this Redis.
    pub cluster: Option<ClusterConfig>,
    /// Turns on the debug console at `/console`, for whoever presents this token.
    pub console_token: Option<ConsoleToken>,
    /// `[console]`: the console's bounds.
    pub console: ConsoleSettings,
    pub apps: Vec<AppConfig>,
}

/// One tenant. Events, channels and connections never cross apps.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub id: AppId,
    pub key: AppKey,
    pub secret: AppSecret,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub limits: Limits,
    /// REST requests per second for the app (token bucket); 0 means no limit. Over it: 429.
    #[serde(default)]
    pub rest_requests_per_second: u32,
    /// Origins (`https://example.com`) allowed to open WebSockets; empty allows any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Send `pusher_internal:subscription_count` to subscribers (and the webhook) when counts change.
    #[serde(default)]
    pub subscription_count: bool,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

fn yes() -> bool {
    true
}

/// Where the app store lives and how often it is re-read.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppStoreConfig {
    /// `postgres://user@host:port/db`; the table `broker_apps` is created if missing.
    pub database_url: String,
    /// Seconds between reloads: how long a change may take to apply.
    #[serde(default = "five")]
    pub refresh_secs: u64,
}

fn five() -> u64 {
    5
}

/// How to reach Redis and how the cluster keeps time.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db`.
    pub redis_url: String,
    /// Prefix of every key and channel, so several clusters can share one Redis.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Seconds between a node's heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Seconds without a heartbeat after which a node is considered dead.
    #[serde(default = "default_node_timeout")]
    pub node_timeout_secs: u64,
}

fn default_prefix() -> String {
    "pusher".into()
}
fn default_heartbeat() -> u64 {
    2
}
fn default_node_timeout() -> u64 {
    6
}

/// Where one app's webhooks go, and which events it wants.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Event names to send (`channel_occupied`, `member_added`, ...); empty means all.
    #[serde(default)]
    pub event_types: Vec<String>,
}

/// Tuning shared by every app's webhook sender.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Events waiting per app before new ones are dropped.
    pub queue: usize,
    /// Most events in one request.
    pub batch_max: usize,
    /// How long to wait for more events to fill a batch, in milliseconds.
    pub batch_wait_ms: u64,
    /// Attempts per batch before it is given up; 0 means no cap (only `retry_for_secs`).
    pub attempts: u32,
    /// Seconds a failing batch is retried before it is given up.
    pub retry_for_secs: u64,
    /// First retry delay in milliseconds; doubles each attempt up to `max_backoff_ms`.
    pub backoff_ms: u64,
    /// Longest delay between two attempts, in milliseconds.
    pub max_backoff_ms: u64,
    /// Per-request timeout in milliseconds.
    pub timeout_ms: u64,
    /// How long `member_removed` and `channel_vacated` wait, in milliseconds, for the
    /// user or channel to come back (then neither webhook is sent); 0 sends at once.
    pub debounce_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            queue: 10_000,
            batch_max: 100,
            batch_wait_ms: 50,
            attempts: 0,
            retry_for_secs: 300,
            backoff_ms: 500,
            max_backoff_ms: 30_000,
            timeout_ms: 5_000,
            debounce_ms: 3_000,
        }
    }
}

impl WebhookSettings {
    /// The debounce window.
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }
}

// The debug console's settings: `console_token` and `[console]`.

/// Shortest console token accepted: long enough that guessing it over HTTP is hopeless.
pub const MIN_CONSOLE_TOKEN_LEN: usize = 16;

/// The console's admin token (`console_token`, `BROKER_CONSOLE_TOKEN`). Never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ConsoleToken(String);

impl ConsoleToken {
    pub fn new(token: String) -> Result<Self, ConfigError> {
        if token.len() < MIN_CONSOLE_TOKEN_LEN || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ConfigError(format!(
                "console_token must be at least {MIN_CONSOLE_TOKEN_LEN} characters without spaces or control characters"
            )));
        }
        Ok(Self(token))
    }

    /// Compares in constant time (only the length can be told apart).
    pub fn matches(&self, offered: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(offered).into()
    }

    /// The token itself, for the console's login cookie only.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ConsoleToken {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, ConfigError> {
        Self::new(s)
    }
}

impl fmt::Debug for ConsoleToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConsoleToken(<redacted>)")
    }
}

/// `[console]`: how much work an open console may cause.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Log events built per second over all apps; more are skipped and the page shows how many.
    pub events_per_second: u32,
    /// Events an open page may lag behind before it loses the oldest (it shows how many).
    pub buffer: usize,
    /// Consoles open at once; one more gets 429.
    pub max_viewers: usize,
    /// Seconds of graph history kept per app.
    pub history_secs: usize,
    /// Most channels one channel-list answer holds (the page says when there are more).
    pub max_channels_listed: usize,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self { events_per_second: 1000, buffer: 1024, max_viewers: 4, history_secs: 300, max_channels_listed: 500 }
    }
}

impl ConsoleSettings {
    /// Reads `BROKER_CONSOLE_TOKEN` into `token` and checks the bounds.
    pub fn apply_env(&self, token: &mut Option<ConsoleToken>, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("BROKER_CONSOLE_TOKEN") {
            *token = Some(ConsoleToken::new(v).map_err(|e| ConfigError(format!("BROKER_CONSOLE_TOKEN: {e}")))?);
        }
        let positive = [
            ("events_per_second", self.events_per_second as usize),
            ("buffer", self.buffer),
            ("max_viewers", self.max_viewers),
            ("history_secs", self.history_secs),
            ("max_channels_listed", self.max_channels_listed),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(ConfigError(format!("console.{name} must be at least 1"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod console_settings_tests {
    use super::*;

    #[test]
    fn tokens_are_long_hidden_and_compared_exactly() {
        assert!(ConsoleToken::new("short".into()).is_err());
        assert!(ConsoleToken::new("has a space in it!!".into()).is_err());
        let t = ConsoleToken::new("0123456789abcdef".into()).unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeF"));
        assert!(!t.matches(b"0123456789abcdef0"));
        assert!(!t.matches(b""));
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn env_and_bounds() {
        let s = ConsoleSettings::default();
        let mut token = None;
        s.apply_env(&mut token, |k| (k == "BROKER_CONSOLE_TOKEN").then(|| "abcdefghijklmnopq".to_owned())).unwrap();
        assert!(token.unwrap().matches(b"abcdefghijklmnopq"));
        let e = s.apply_env(&mut None, |_| Some("x".into())).unwrap_err();
        assert!(e.0.contains("BROKER_CONSOLE_TOKEN"), "{e}");
        let zero = ConsoleSettings { buffer: 0, ..ConsoleSettings::default() };
        assert!(zero.apply_env(&mut None, |_| None).unwrap_err().0.contains("console.buffer"));
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 6001,
            activity_timeout: 120,
            pong_timeout: 30,
            send_queue: 1024,
            tcp_user_timeout: 30,
            workers: 0,
            shutdown_timeout: 10,
            tls_cert: None,
            tls_key: None,
            webhooks: WebhookSettings::default(),
            app_store: None,
            cluster: None,
            console_token: None,
            console: ConsoleSettings::default(),
            apps: Vec::new(),
        }
    }
}

impl AppConfig {
    pub fn default_app() -> Self {
        Self {
            id: AppId::new("1").expect("valid"),
            key: AppKey::new("app-key").expect("valid"),
            secret: AppSecret::new("app-secret").expect("valid"),
            enabled: true,
            limits: Limits::default(),
            rest_requests_per_second: 0,
            allowed_origins: Vec::new(),
            subscription_count: false,
            webhooks: Vec::new(),
        }
    }
}

/// A setting that could not be used; the message names it.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the file named by `--config PATH` or `BROKER_CONFIG`, then applies the environment.
    pub fn load(args: &[String]) -> Result<Self, ConfigError> {
        let path = match args.iter().position(|a| a == "--config") {
            Some(i) => Some(PathBuf::from(
                args.get(i + 1).ok_or_else(|| ConfigError("--config needs a file path".into()))?,
            )),
            None => std::env::var_os("BROKER_CONFIG").map(PathBuf::from),
        };
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", p.display())))?;
                Self::from_toml(&text).map_err(|e| ConfigError(format!("{}: {}", p.display(), e.0)))?
            }
            None => Self::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// Environment overrides. `BROKER_APP_ID`/`KEY`/`SECRET` replace the default
    /// app's credentials (or the first configured app's).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError(format!("{name}={v:?} is not a valid number")))
        }
        if let Some(v) = get("BROKER_HOST") {
            self.host = v;
        }
        if let Some(v) = get("BROKER_PORT") {
            self.port = num("BROKER_PORT", v)?;
        }
        if let Some(v) = get("BROKER_ACTIVITY_TIMEOUT") {
            self.activity_timeout = num("BROKER_ACTIVITY_TIMEOUT", v)?;
        }
        if let Some(v) = get("BROKER_PONG_TIMEOUT") {
            self.pong_timeout = num("BROKER_PONG_TIMEOUT", v)?;
        }
        if let Some(v) = get("BROKER_SEND_QUEUE") {
            self.send_queue = num("BROKER_SEND_QUEUE", v)?;
        }
        if let Some(v) = get("BROKER_TCP_USER_TIMEOUT") {
            self.tcp_user_timeout = num("BROKER_TCP_USER_TIMEOUT", v)?;
        }
        if let Some(v) = get("BROKER_WORKERS") {
            self.workers = num("BROKER_WORKERS", v)?;
        }
        if let Some(v) = get("BROKER_SHUTDOWN_TIMEOUT") {
            self.shutdown_timeout = num("BROKER_SHUTDOWN_TIMEOUT", v)?;
        }
        if let Some(v) = get("BROKER_TLS_CERT") {
            self.tls_cert = Some(v.into());
        }
        if let Some(v) = get("BROKER_TLS_KEY") {
            self.tls_key = Some(v.into());
        }
        let (id, key, secret) = (get("BROKER_APP_ID"), get("BROKER_APP_KEY"), get("BROKER_APP_SECRET"));
        if id.is_some() || key.is_some() || secret.is_some() {
            if self.apps.is_empty() {
                self.apps.push(AppConfig::default_app());
            }
            let app = &mut self.apps[0];
            let bad = |name: &str, e: protocol::app::InvalidIdentifier| ConfigError(format!("{name}: {e}"));
            if let Some(v) = id {
                app.id = AppId::new(v).map_err(|e| bad("BROKER_APP_ID", e))?;
            }
            if let Some(v) = key {
                app.key = AppKey::new(v).map_err(|e| bad("BROKER_APP_KEY", e))?;
            }
            if let Some(v) = secret {
                app.secret = AppSecret::new(v).map_err(|e| bad("BROKER_APP_SECRET", e))?;
            }
        }
        if let Some(url) = get("BROKER_REDIS_URL") {
            let mut cluster: ClusterConfig = toml::from_str(&format!("redis_url = {url:?}")).expect("only the URL is required");
            if let Some(old) = self.cluster.take() {
                cluster = ClusterConfig { redis_url: cluster.redis_url, ..old };
            }
            self.cluster = Some(cluster);
        }
        if let Some(prefix) = get("BROKER_REDIS_PREFIX") {
            match &mut self.cluster {
                Some(c) => c.key_prefix = prefix,
                None => return Err(ConfigError("BROKER_REDIS_PREFIX needs BROKER_REDIS_URL".into())),
            }
        }
        if let Some(url) = get("BROKER_APP_STORE_URL") {
            self.app_store = Some(AppStoreConfig { database_url: url, refresh_secs: five() });
        }
        if let Some(v) = get("BROKER_APP_STORE_REFRESH_SECS") {
            let secs = num("BROKER_APP_STORE_REFRESH_SECS", v)?;
            match &mut self.app_store {
                Some(store) => store.refresh_secs = secs,
                None => return Err(ConfigError("BROKER_APP_STORE_REFRESH_SECS needs BROKER_APP_STORE_URL".into())),
            }
        }
        self.console.apply_env(&mut self.console_token, &get)?;
        // The built-in app is there to try the broker out; an app store replaces it.
        if self.apps.is_empty() && self.app_store.is_none() {
            self.apps.push(AppConfig::default_app());
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.activity_timeout == 0 {
            return Err(ConfigError("activity_timeout must be at least 1 second".into()));
        }
        if self.pong_timeout == 0 {
            return Err(ConfigError("pong_timeout must be at least 1 second".into()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError("tls_cert and tls_key must be set together".into()));
        }
        if self.app_store.as_ref().is_some_and(|s| s.refresh_secs == 0) {
            return Err(ConfigError("app_store.refresh_secs must be at least 1".into()));
        }
        if let Some(c) = &self.cluster {
            if c.heartbeat_secs == 0 || c.node_timeout_secs <= c.heartbeat_secs {
                return Err(ConfigError("cluster: node_timeout_secs must be larger than heartbeat_secs (both at least 1)".into()));
            }
        }
        if self.send_queue == 0 {
            return Err(ConfigError("send_queue must be at least 1".into()));
        }
        for (i, a) in self.apps.iter().enumerate() {
            for b in &self.apps[..i] {
                if a.id == b.id {
                    return Err(ConfigError(format!("apps: id {:?} is used twice", a.id.as_str())));
                }
                if a.key == b.key {
                    return Err(ConfigError(format!("apps: key {:?} is used twice", a.key.as_str())));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn defaults_give_the_default_app() {
        let mut c = Config::default();
        c.apply_env(env(&[])).unwrap();
        assert_eq!(c.port, 6001);
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.apps[0].key.as_str(), "app-key");
    }

    #[test]
    fn file_and_env() {
        let mut c = Config::from_toml(
            r#"
            port = 7000
            [[apps]]
            id = "9"
            key = "k9"
            secret = "s9"
            limits = { client_events_per_second = 3 }
            "#,
        )
        .unwrap();
        c.apply_env(env(&[("BROKER_PORT", "7100"), ("BROKER_APP_SECRET", "s10")])).unwrap();
        assert_eq!(c.port, 7100);
        assert_eq!(c.apps[0].limits.client_events_per_second, 3);
        assert_eq!(c.apps[0].secret, AppSecret::new("s10").unwrap());
    }

    #[test]
    fn bad_settings_name_the_key() {
        let e = Config::from_toml("prot = 1").unwrap_err();
        assert!(e.0.contains("prot"), "{e}");
        let e = Config::from_toml("[[apps]]\nid='1'\nkey='k'\nsecret='s'\nlimits={nope=1}").unwrap_err();
        assert!(e.0.contains("nope"), "{e}");
        let e = Config::default().apply_env(env(&[("BROKER_PORT", "x")])).unwrap_err();
        assert!(e.0.contains("BROKER_PORT"), "{e}");
        let c = Config::from_toml("[[apps]]\nid='1'\nkey='k'\nsecret='s'\n[[apps]]\nid='1'\nkey='k2'\nsecret='s'").unwrap();
        assert!(c.validate().unwrap_err().0.contains("used twice"));
    }
}
