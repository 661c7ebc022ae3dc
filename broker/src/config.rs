//! Broker settings (every one of them lives here): a TOML file (path from `--config` or `BROKER_CONFIG`) with
//! environment overrides, and defaults that work out of the box.
//!
//! Without any configured app the broker serves one default app (id `1`, key
//! `app-key`, secret `app-secret`), so `cargo run -p broker` is enough to try it.
//! That secret is published in the README, so the broker serves it on loopback
//! only: the default `host` is then `127.0.0.1`, and a non-loopback `host` with
//! the published secret stops the broker at start (see [`Config::validate`]).

use std::{
    fmt,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    path::PathBuf,
    time::Duration,
};

use protocol::{history::HistoryConfig, AppId, AppKey, AppSecret, Limits};
use serde::Deserialize;

use subtle::ConstantTimeEq;

/// Everything the broker reads at start.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Unset: `127.0.0.1` while an app uses the published
    /// default secret, `0.0.0.0` otherwise (see [`Config::listen_host`]).
    pub host: Option<String>,
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
    /// Seconds a closing WebSocket connection gets to take its last frames and close
    /// its side (its unread input is drained meanwhile); then the socket is closed.
    pub close_timeout: u64,
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
    /// pusher-js's HTTP fallback transports (`xhr_streaming`, `xhr_polling`).
    pub http_fallback: FallbackConfig,
    /// Turns on the debug console at `/console`, for whoever presents this token.
    pub console_token: Option<ConsoleToken>,
    /// `[console]`: the console's bounds.
    pub console: ConsoleSettings,
    /// Concurrent WebSocket connections from one client address (IPv6: one /64); 0 means no limit.
    /// The address is the TCP peer's: `X-Forwarded-For` is never trusted.
    pub max_connections_per_ip: usize,
    /// Largest REST request body, in bytes. Over it: 413, after reading (and
    /// discarding) up to [`REST_BODY_DRAIN_FACTOR`] times as much so the client can read the answer.
    pub max_rest_body_bytes: usize,
    /// A second listener (`127.0.0.1:9601`) serving `/metrics`, `/ready` and `/health`;
    /// when set, `/metrics` and `/ready` are not served on the public port.
    pub metrics_addr: Option<SocketAddr>,
    /// Bearer token `/metrics` and `/ready` require (from every peer, loopback included) when set.
    pub ops_token: Option<OpsToken>,
    pub apps: Vec<AppConfig>,
}

/// Environment keys that set the first app's `history` (`..._CHANNELS` is comma-separated prefixes).
const HISTORY_ENV: [&str; 6] = [
    "BROKER_APP_HISTORY_CHANNELS",
    "BROKER_APP_HISTORY_MAX_EVENTS",
    "BROKER_APP_HISTORY_MAX_AGE_SECS",
    "BROKER_APP_HISTORY_MAX_BYTES",
    "BROKER_APP_HISTORY_MAX_PAGE",
    "BROKER_APP_HISTORY_CLIENT_EVENTS",
];

/// How many times `max_rest_body_bytes` an oversized REST body is read (and
/// discarded) before the 413 is sent; past that the connection is closed unread.
pub const REST_BODY_DRAIN_FACTOR: usize = 8;

/// The secret of the built-in default app. It is published in the README, so
/// it is a secret to nobody: it is only served on loopback.
pub const PUBLISHED_SECRET: &str = "app-secret";

/// The bearer token for the operations endpoints. Never printed.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct OpsToken(String);

impl OpsToken {
    /// Shortest token accepted: short tokens can be guessed.
    pub const MIN_LEN: usize = 16;

    pub fn new(token: String) -> Result<Self, ConfigError> {
        if token.len() < Self::MIN_LEN {
            return Err(ConfigError(format!(
                "ops_token must be at least {} characters",
                Self::MIN_LEN
            )));
        }
        Ok(Self(token))
    }

    /// Compares in constant time, so the answer's timing does not reveal how much of a guess was right.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == presented.len() && bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl TryFrom<String> for OpsToken {
    type Error = ConfigError;

    fn try_from(token: String) -> Result<Self, ConfigError> {
        Self::new(token)
    }
}

impl fmt::Debug for OpsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpsToken(<redacted>)")
    }
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
    /// Authorized connections, as the hosted service offers them: a connection that neither
    /// signs in nor subscribes to a private-, private-encrypted- or presence- channel within
    /// `authorized_connection_timeout_secs` is closed with 4009.
    #[serde(default)]
    pub authorized_connections: bool,
    #[serde(default = "thirty")]
    pub authorized_connection_timeout_secs: u64,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Channel history and connection recovery; off (`None`) by default.
    #[serde(default)]
    pub history: Option<HistoryConfig>,
}

fn yes() -> bool {
    true
}

fn thirty() -> u64 {
    30
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
    /// `redis://host:port/db` for one Redis, or `redis+cluster://host:port,host:port,…`
    /// (seed nodes) for a Redis Cluster.
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
    /// Events waiting to be published to Redis; past this a REST trigger answers 503
    /// and the event counts in `broker_adapter_dropped_messages`.
    #[serde(default = "default_publish_queue")]
    pub publish_queue: usize,
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
fn default_publish_queue() -> usize {
    65_536
}

/// The HTTP fallback transports, served under `{path}/app/{key}/{session}/…`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// Serve them at all.
    pub enabled: bool,
    /// pusher-js's `httpPath` (its default is `/pusher`).
    pub path: String,
    /// Most HTTP-fallback sessions open at once on this node; more are refused with 4100.
    pub max_sessions: usize,
    /// The share of `max_sessions`, in percent, one client address (IPv6: one /64) may
    /// hold; more are refused with 4101. 100 leaves only `max_sessions`.
    pub max_sessions_per_ip_percent: u8,
    /// Refuse a session's requests from another address than the one that opened it
    /// (its `Origin` and `User-Agent` must match in any case).
    pub bind_to_address: bool,
    /// Seconds a session lives without a poll or stream attached before it ends
    /// (its subscriptions are dropped, presence members removed).
    pub session_timeout_secs: u64,
    /// Seconds between heartbeats (`h`) on an idle stream, and how long a poll is held.
    pub heartbeat_secs: u64,
    /// This node's own host name, sent in each session's open frame: pusher-js then
    /// sends the session's later requests there (what a load balancer without
    /// per-session routing needs).
    pub hostname: Option<String>,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/pusher".into(),
            max_sessions: 10_000,
            max_sessions_per_ip_percent: 10,
            bind_to_address: true,
            session_timeout_secs: 15,
            heartbeat_secs: 25,
            hostname: None,
        }
    }
}

impl FallbackConfig {
    /// Sessions one client address may hold: `max_sessions_per_ip_percent` of
    /// `max_sessions`, rounded up; `None` at 100 % (`max_sessions` is the bound).
    pub fn max_sessions_per_ip(&self) -> Option<usize> {
        let percent = usize::from(self.max_sessions_per_ip_percent);
        (percent < 100).then(|| self.max_sessions.saturating_mul(percent).div_ceil(100))
    }
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
    /// Refuse webhook URLs whose host is or resolves to a loopback, private or
    /// link-local address (for app stores edited by tenants); the request then goes
    /// to the checked address, so a second DNS answer cannot move it.
    pub deny_private_addresses: bool,
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
            deny_private_addresses: false,
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
        if token.len() < MIN_CONSOLE_TOKEN_LEN
            || token.chars().any(|c| c.is_control() || c.is_whitespace())
        {
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
    /// Seconds a login lasts; then the cookie gets 401 and the page asks for the token again.
    pub session_secs: u64,
    /// Login sessions live at once; one more login ends the oldest.
    pub max_sessions: usize,
    /// Wrong tokens one client address may offer per minute (in a burst, then one every
    /// 60/n s); past that it gets 429 with `Retry-After`.
    pub failed_logins_per_minute: u32,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            events_per_second: 1000,
            buffer: 1024,
            max_viewers: 4,
            history_secs: 300,
            max_channels_listed: 500,
            session_secs: 8 * 3600,
            max_sessions: 64,
            failed_logins_per_minute: 10,
        }
    }
}

impl ConsoleSettings {
    /// Reads `BROKER_CONSOLE_TOKEN` into `token` and checks the bounds.
    pub fn apply_env(
        &self,
        token: &mut Option<ConsoleToken>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = get("BROKER_CONSOLE_TOKEN") {
            *token = Some(
                ConsoleToken::new(v)
                    .map_err(|e| ConfigError(format!("BROKER_CONSOLE_TOKEN: {e}")))?,
            );
        }
        let positive = [
            ("events_per_second", self.events_per_second as usize),
            ("buffer", self.buffer),
            ("max_viewers", self.max_viewers),
            ("history_secs", self.history_secs),
            ("max_channels_listed", self.max_channels_listed),
            ("session_secs", self.session_secs as usize),
            ("max_sessions", self.max_sessions),
            (
                "failed_logins_per_minute",
                self.failed_logins_per_minute as usize,
            ),
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
        s.apply_env(&mut token, |k| {
            (k == "BROKER_CONSOLE_TOKEN").then(|| "abcdefghijklmnopq".to_owned())
        })
        .unwrap();
        assert!(token.unwrap().matches(b"abcdefghijklmnopq"));
        let e = s.apply_env(&mut None, |_| Some("x".into())).unwrap_err();
        assert!(e.0.contains("BROKER_CONSOLE_TOKEN"), "{e}");
        let zero = ConsoleSettings {
            buffer: 0,
            ..ConsoleSettings::default()
        };
        assert!(zero
            .apply_env(&mut None, |_| None)
            .unwrap_err()
            .0
            .contains("console.buffer"));
        let no_logins = ConsoleSettings {
            failed_logins_per_minute: 0,
            ..ConsoleSettings::default()
        };
        assert!(no_logins
            .apply_env(&mut None, |_| None)
            .unwrap_err()
            .0
            .contains("console.failed_logins_per_minute"));
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: None,
            port: 6001,
            activity_timeout: 120,
            pong_timeout: 30,
            send_queue: 1024,
            tcp_user_timeout: 30,
            close_timeout: 2,
            workers: 0,
            shutdown_timeout: 10,
            tls_cert: None,
            tls_key: None,
            webhooks: WebhookSettings::default(),
            app_store: None,
            cluster: None,
            http_fallback: FallbackConfig::default(),
            console_token: None,
            console: ConsoleSettings::default(),
            max_connections_per_ip: 0,
            max_rest_body_bytes: 1024 * 1024,
            metrics_addr: None,
            ops_token: None,
            apps: Vec::new(),
        }
    }
}

impl AppConfig {
    /// Whether the app's secret is [`PUBLISHED_SECRET`], which everyone can read.
    pub fn has_published_secret(&self) -> bool {
        self.secret.expose() == PUBLISHED_SECRET.as_bytes()
    }

    pub fn default_app() -> Self {
        Self {
            id: AppId::new("1").expect("valid"),
            key: AppKey::new("app-key").expect("valid"),
            secret: AppSecret::new(PUBLISHED_SECRET).expect("valid"),
            enabled: true,
            limits: Limits::default(),
            rest_requests_per_second: 0,
            allowed_origins: Vec::new(),
            subscription_count: false,
            authorized_connections: false,
            authorized_connection_timeout_secs: thirty(),
            webhooks: Vec::new(),
            history: None,
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
            Some(i) => {
                Some(PathBuf::from(args.get(i + 1).ok_or_else(|| {
                    ConfigError("--config needs a file path".into())
                })?))
            }
            None => std::env::var_os("BROKER_CONFIG").map(PathBuf::from),
        };
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", p.display()))
                })?;
                Self::from_toml(&text)
                    .map_err(|e| ConfigError(format!("{}: {}", p.display(), e.0)))?
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
            v.trim()
                .parse()
                .map_err(|_| ConfigError(format!("{name}={v:?} is not a valid number")))
        }
        // A mistyped switch (`ture`) must stop the start, not quietly mean "off".
        fn flag(name: &str, v: String) -> Result<bool, ConfigError> {
            match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError(format!(
                    "{name}={v:?} is not a switch (true/false, yes/no, on/off, 1/0)"
                ))),
            }
        }
        if let Some(v) = get("BROKER_HOST") {
            self.host = Some(v);
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
        if let Some(v) = get("BROKER_CLOSE_TIMEOUT") {
            self.close_timeout = num("BROKER_CLOSE_TIMEOUT", v)?;
        }
        if let Some(v) = get("BROKER_WORKERS") {
            self.workers = num("BROKER_WORKERS", v)?;
        }
        if let Some(v) = get("BROKER_SHUTDOWN_TIMEOUT") {
            self.shutdown_timeout = num("BROKER_SHUTDOWN_TIMEOUT", v)?;
        }
        if let Some(v) = get("BROKER_HTTP_FALLBACK") {
            self.http_fallback.enabled = flag("BROKER_HTTP_FALLBACK", v)?;
        }
        if let Some(v) = get("BROKER_HTTP_FALLBACK_MAX_SESSIONS") {
            self.http_fallback.max_sessions = num("BROKER_HTTP_FALLBACK_MAX_SESSIONS", v)?;
        }
        if let Some(v) = get("BROKER_HTTP_FALLBACK_MAX_SESSIONS_PER_IP_PERCENT") {
            self.http_fallback.max_sessions_per_ip_percent =
                num("BROKER_HTTP_FALLBACK_MAX_SESSIONS_PER_IP_PERCENT", v)?;
        }
        if let Some(v) = get("BROKER_HTTP_FALLBACK_BIND_TO_ADDRESS") {
            self.http_fallback.bind_to_address = matches!(v.trim(), "1" | "true" | "yes" | "on");
        }
        if let Some(v) = get("BROKER_HTTP_FALLBACK_HOSTNAME") {
            self.http_fallback.hostname = Some(v);
        }
        if let Some(v) = get("BROKER_MAX_CONNECTIONS_PER_IP") {
            self.max_connections_per_ip = num("BROKER_MAX_CONNECTIONS_PER_IP", v)?;
        }
        if let Some(v) = get("BROKER_MAX_REST_BODY_BYTES") {
            self.max_rest_body_bytes = num("BROKER_MAX_REST_BODY_BYTES", v)?;
        }
        if let Some(v) = get("BROKER_METRICS_ADDR") {
            let addr = v.trim().parse().map_err(|_| {
                ConfigError(format!(
                    "BROKER_METRICS_ADDR={v:?} is not an address like 127.0.0.1:9601"
                ))
            })?;
            self.metrics_addr = Some(addr);
        }
        if let Some(v) = get("BROKER_OPS_TOKEN") {
            self.ops_token =
                Some(OpsToken::new(v).map_err(|e| ConfigError(format!("BROKER_OPS_TOKEN: {e}")))?);
        }
        if let Some(v) = get("BROKER_TLS_CERT") {
            self.tls_cert = Some(v.into());
        }
        if let Some(v) = get("BROKER_TLS_KEY") {
            self.tls_key = Some(v.into());
        }
        let (id, key, secret) = (
            get("BROKER_APP_ID"),
            get("BROKER_APP_KEY"),
            get("BROKER_APP_SECRET"),
        );
        let (authorized, authorized_timeout) = (
            get("BROKER_APP_AUTHORIZED_CONNECTIONS"),
            get("BROKER_APP_AUTHORIZED_CONNECTION_TIMEOUT"),
        );
        let history: Vec<(&str, String)> = HISTORY_ENV
            .iter()
            .filter_map(|k| get(k).map(|v| (*k, v)))
            .collect();
        if id.is_some()
            || key.is_some()
            || secret.is_some()
            || authorized.is_some()
            || authorized_timeout.is_some()
            || !history.is_empty()
        {
            if self.apps.is_empty() {
                self.apps.push(AppConfig::default_app());
            }
            let app = &mut self.apps[0];
            let bad = |name: &str, e: protocol::app::InvalidIdentifier| {
                ConfigError(format!("{name}: {e}"))
            };
            if let Some(v) = id {
                app.id = AppId::new(v).map_err(|e| bad("BROKER_APP_ID", e))?;
            }
            if let Some(v) = key {
                app.key = AppKey::new(v).map_err(|e| bad("BROKER_APP_KEY", e))?;
            }
            if let Some(v) = secret {
                app.secret = AppSecret::new(v).map_err(|e| bad("BROKER_APP_SECRET", e))?;
            }
            if let Some(v) = authorized {
                app.authorized_connections = flag("BROKER_APP_AUTHORIZED_CONNECTIONS", v)?;
            }
            if let Some(v) = authorized_timeout {
                app.authorized_connection_timeout_secs =
                    num("BROKER_APP_AUTHORIZED_CONNECTION_TIMEOUT", v)?;
            }
            if !history.is_empty() {
                let h = app.history.get_or_insert_with(HistoryConfig::default);
                for (k, v) in history {
                    match k {
                        "BROKER_APP_HISTORY_CHANNELS" => {
                            h.channels = v
                                .split(',')
                                .map(str::trim)
                                .filter(|p| !p.is_empty())
                                .map(str::to_owned)
                                .collect();
                        }
                        "BROKER_APP_HISTORY_MAX_EVENTS" => h.max_events = num(k, v)?,
                        "BROKER_APP_HISTORY_MAX_AGE_SECS" => h.max_age_secs = num(k, v)?,
                        "BROKER_APP_HISTORY_MAX_BYTES" => h.max_bytes = num(k, v)?,
                        "BROKER_APP_HISTORY_MAX_PAGE" => h.max_page = num(k, v)?,
                        _ => h.client_events = matches!(v.trim(), "1" | "true" | "yes" | "on"),
                    }
                }
            }
        }
        if let Some(url) = get("BROKER_REDIS_URL") {
            let mut cluster: ClusterConfig =
                toml::from_str(&format!("redis_url = {url:?}")).expect("only the URL is required");
            if let Some(old) = self.cluster.take() {
                cluster = ClusterConfig {
                    redis_url: cluster.redis_url,
                    ..old
                };
            }
            self.cluster = Some(cluster);
        }
        if let Some(prefix) = get("BROKER_REDIS_PREFIX") {
            match &mut self.cluster {
                Some(c) => c.key_prefix = prefix,
                None => {
                    return Err(ConfigError(
                        "BROKER_REDIS_PREFIX needs BROKER_REDIS_URL".into(),
                    ))
                }
            }
        }
        if let Some(url) = get("BROKER_APP_STORE_URL") {
            self.app_store = Some(AppStoreConfig {
                database_url: url,
                refresh_secs: five(),
            });
        }
        if let Some(v) = get("BROKER_APP_STORE_REFRESH_SECS") {
            let secs = num("BROKER_APP_STORE_REFRESH_SECS", v)?;
            match &mut self.app_store {
                Some(store) => store.refresh_secs = secs,
                None => {
                    return Err(ConfigError(
                        "BROKER_APP_STORE_REFRESH_SECS needs BROKER_APP_STORE_URL".into(),
                    ))
                }
            }
        }
        self.console.apply_env(&mut self.console_token, &get)?;
        // The built-in app is there to try the broker out; an app store replaces it.
        if self.apps.is_empty() && self.app_store.is_none() {
            self.apps.push(AppConfig::default_app());
        }
        Ok(())
    }

    /// Whether some app is served with the published default secret.
    pub fn uses_published_secret(&self) -> bool {
        self.apps.iter().any(AppConfig::has_published_secret)
    }

    /// The address to listen on: `host`, or its default (loopback while the
    /// published secret is served, every interface otherwise).
    pub fn listen_host(&self) -> &str {
        match &self.host {
            Some(h) => h,
            None if self.uses_published_secret() => "127.0.0.1",
            None => "0.0.0.0",
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.uses_published_secret() && !is_loopback(self.listen_host(), self.port) {
            return Err(ConfigError(format!(
                "refusing to serve the published default secret {PUBLISHED_SECRET:?} on {}, which is not a loopback address: \
                 anyone who can reach the port could sign REST calls and private subscriptions. \
                 Give every app its own secret ([[apps]] secret in the config file, or BROKER_APP_ID, BROKER_APP_KEY and \
                 BROKER_APP_SECRET), or listen on loopback only (host = \"127.0.0.1\" / BROKER_HOST=127.0.0.1)",
                self.listen_host()
            )));
        }
        for app in &self.apps {
            if let Some(h) = &app.history {
                h.validate()
                    .map_err(|e| ConfigError(format!("app {}: {e}", app.id.as_str())))?;
            }
        }
        if self.max_rest_body_bytes == 0 {
            return Err(ConfigError("max_rest_body_bytes must be at least 1".into()));
        }
        if self.activity_timeout == 0 {
            return Err(ConfigError(
                "activity_timeout must be at least 1 second".into(),
            ));
        }
        if self.pong_timeout == 0 {
            return Err(ConfigError("pong_timeout must be at least 1 second".into()));
        }
        if self.close_timeout == 0 {
            return Err(ConfigError(
                "close_timeout must be at least 1 second".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError(
                "tls_cert and tls_key must be set together".into(),
            ));
        }
        if self.app_store.as_ref().is_some_and(|s| s.refresh_secs == 0) {
            return Err(ConfigError(
                "app_store.refresh_secs must be at least 1".into(),
            ));
        }
        if let Some(c) = &self.cluster {
            if c.heartbeat_secs == 0 || c.node_timeout_secs <= c.heartbeat_secs {
                return Err(ConfigError("cluster: node_timeout_secs must be larger than heartbeat_secs (both at least 1)".into()));
            }
            if c.publish_queue == 0 {
                return Err(ConfigError(
                    "cluster.publish_queue must be at least 1".into(),
                ));
            }
            // Braces would change which Redis Cluster slot a channel's keys hash to.
            if c.key_prefix.contains(['{', '}']) {
                return Err(ConfigError(
                    "cluster.key_prefix must not contain '{' or '}'".into(),
                ));
            }
        }
        let fb = &self.http_fallback;
        if fb.session_timeout_secs == 0 || fb.heartbeat_secs == 0 {
            return Err(ConfigError(
                "http_fallback: session_timeout_secs and heartbeat_secs must be at least 1".into(),
            ));
        }
        if !(1..=100).contains(&fb.max_sessions_per_ip_percent) {
            return Err(ConfigError(
                "http_fallback.max_sessions_per_ip_percent must be from 1 to 100".into(),
            ));
        }
        if !fb.path.is_empty() && (!fb.path.starts_with('/') || fb.path.ends_with('/')) {
            return Err(ConfigError("http_fallback.path must start with '/' and not end with one (pusher-js's httpPath)".into()));
        }
        if self.send_queue == 0 {
            return Err(ConfigError("send_queue must be at least 1".into()));
        }
        for (i, a) in self.apps.iter().enumerate() {
            if a.authorized_connection_timeout_secs == 0 {
                return Err(ConfigError(format!(
                    "apps: {:?}: authorized_connection_timeout_secs must be at least 1",
                    a.id.as_str()
                )));
            }
            for b in &self.apps[..i] {
                if a.id == b.id {
                    return Err(ConfigError(format!(
                        "apps: id {:?} is used twice",
                        a.id.as_str()
                    )));
                }
                if a.key == b.key {
                    return Err(ConfigError(format!(
                        "apps: key {:?} is used twice",
                        a.key.as_str()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Whether every address `host` resolves to is a loopback address. An address
/// that does not resolve is not known to be loopback.
pub fn is_loopback(host: &str, port: u16) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(ip) = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
    {
        return ip.to_canonical().is_loopback();
    }
    match (host, port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().to_canonical().is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
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
        c.apply_env(env(&[
            ("BROKER_PORT", "7100"),
            ("BROKER_APP_SECRET", "s10"),
        ]))
        .unwrap();
        assert_eq!(c.port, 7100);
        assert_eq!(c.apps[0].limits.client_events_per_second, 3);
        assert_eq!(c.apps[0].secret, AppSecret::new("s10").unwrap());
        assert!(!c.apps[0].authorized_connections, "off by default");
        c.apply_env(env(&[
            ("BROKER_APP_AUTHORIZED_CONNECTIONS", "true"),
            ("BROKER_APP_AUTHORIZED_CONNECTION_TIMEOUT", "45"),
        ]))
        .unwrap();
        assert!(c.apps[0].authorized_connections);
        assert_eq!(c.apps[0].authorized_connection_timeout_secs, 45);
        c.apply_env(env(&[
            ("BROKER_HTTP_FALLBACK", "false"),
            ("BROKER_HTTP_FALLBACK_MAX_SESSIONS", "7"),
        ]))
        .unwrap();
        assert!(!c.http_fallback.enabled);
        assert_eq!(c.http_fallback.max_sessions, 7);
        assert_eq!(
            c.http_fallback.max_sessions_per_ip(),
            Some(1),
            "10 % of 7, rounded up"
        );
        assert!(c.http_fallback.bind_to_address, "on by default");
        c.apply_env(env(&[
            ("BROKER_HTTP_FALLBACK_MAX_SESSIONS_PER_IP_PERCENT", "100"),
            ("BROKER_HTTP_FALLBACK_BIND_TO_ADDRESS", "false"),
        ]))
        .unwrap();
        assert_eq!(c.http_fallback.max_sessions_per_ip(), None);
        assert!(!c.http_fallback.bind_to_address);
        assert_eq!(FallbackConfig::default().max_sessions_per_ip(), Some(1000));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let e = Config::from_toml("prot = 1").unwrap_err();
        assert!(e.0.contains("prot"), "{e}");
        let e = Config::from_toml("[[apps]]\nid='1'\nkey='k'\nsecret='s'\nlimits={nope=1}")
            .unwrap_err();
        assert!(e.0.contains("nope"), "{e}");
        let e = Config::default()
            .apply_env(env(&[("BROKER_PORT", "x")]))
            .unwrap_err();
        assert!(e.0.contains("BROKER_PORT"), "{e}");
        let c = Config::from_toml(
            "[[apps]]\nid='1'\nkey='k'\nsecret='s'\n[[apps]]\nid='1'\nkey='k2'\nsecret='s'",
        )
        .unwrap();
        assert!(c.validate().unwrap_err().0.contains("used twice"));
        let e = Config::from_toml("ops_token = 'short'").unwrap_err();
        assert!(e.0.contains("ops_token"), "{e}");
        let e = Config::default()
            .apply_env(env(&[("BROKER_METRICS_ADDR", "nowhere")]))
            .unwrap_err();
        assert!(e.0.contains("BROKER_METRICS_ADDR"), "{e}");
        // A brace in the prefix would move a channel's keys to other Redis Cluster slots.
        let c =
            Config::from_toml("[cluster]\nredis_url = 'redis://127.0.0.1'\nkey_prefix = 'a{b}'")
                .unwrap();
        assert!(c.validate().unwrap_err().0.contains("key_prefix"));
        let c = Config::from_toml("[cluster]\nredis_url = 'redis://127.0.0.1'\npublish_queue = 0")
            .unwrap();
        assert!(c.validate().unwrap_err().0.contains("publish_queue"));
        let c = Config::from_toml("[cluster]\nredis_url = 'redis://127.0.0.1'").unwrap();
        assert_eq!(c.cluster.unwrap().publish_queue, 65_536);
        for bad in ["0", "101"] {
            let c = Config::from_toml(&format!(
                "[http_fallback]\nmax_sessions_per_ip_percent = {bad}"
            ))
            .unwrap();
            assert!(c
                .validate()
                .unwrap_err()
                .0
                .contains("max_sessions_per_ip_percent"));
        }
    }

    #[test]
    fn close_timeout_is_read_and_must_be_positive() {
        let mut c = Config::default();
        assert_eq!(c.close_timeout, 2);
        c.apply_env(env(&[("BROKER_CLOSE_TIMEOUT", "5")])).unwrap();
        assert_eq!(c.close_timeout, 5);
        c.close_timeout = 0;
        let e = c.validate().unwrap_err();
        assert!(e.0.contains("close_timeout"), "{e}");
        let toml = Config::from_toml("close_timeout = 7\n").unwrap();
        assert_eq!(toml.close_timeout, 7);
    }

    #[test]
    fn a_mistyped_switch_is_an_error_not_off() {
        for name in ["BROKER_HTTP_FALLBACK", "BROKER_APP_AUTHORIZED_CONNECTIONS"] {
            let e = Config::default()
                .apply_env(env(&[(name, "ture")]))
                .unwrap_err();
            assert!(e.0.contains(name) && e.0.contains("ture"), "{e}");
        }
        let mut c = Config::default();
        c.apply_env(env(&[("BROKER_HTTP_FALLBACK", "Off")]))
            .unwrap();
        assert!(!c.http_fallback.enabled);
        c.apply_env(env(&[("BROKER_HTTP_FALLBACK", " YES ")]))
            .unwrap();
        assert!(c.http_fallback.enabled);
        c.apply_env(env(&[("BROKER_APP_AUTHORIZED_CONNECTIONS", "1")]))
            .unwrap();
        assert!(c.apps[0].authorized_connections);
    }

    #[test]
    fn the_published_secret_is_served_on_loopback_only() {
        let mut c = Config::default();
        c.apply_env(env(&[])).unwrap();
        assert_eq!(
            c.listen_host(),
            "127.0.0.1",
            "the default app gets a loopback default host"
        );
        c.validate().unwrap();

        for host in ["0.0.0.0", "::", "192.0.2.1"] {
            let mut c = Config::default();
            c.apply_env(env(&[("BROKER_HOST", host)])).unwrap();
            let e = c.validate().unwrap_err();
            for setting in ["[[apps]]", "BROKER_APP_SECRET", "BROKER_HOST"] {
                assert!(
                    e.0.contains(setting),
                    "{host}: the error names {setting}: {e}"
                );
            }
        }
        // A new id and key keep the published secret: still refused.
        let mut c = Config::default();
        c.apply_env(env(&[("BROKER_HOST", "0.0.0.0"), ("BROKER_APP_KEY", "k")]))
            .unwrap();
        assert!(c.validate().is_err());
        // So is a configured app that copies the README's example secret.
        let mut c =
            Config::from_toml("host = '0.0.0.0'\n[[apps]]\nid='2'\nkey='k'\nsecret='app-secret'")
                .unwrap();
        c.apply_env(env(&[])).unwrap();
        assert!(c.validate().is_err());

        for host in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"] {
            let mut c = Config::default();
            c.apply_env(env(&[("BROKER_HOST", host)])).unwrap();
            c.validate().unwrap_or_else(|e| panic!("{host}: {e}"));
        }
    }

    #[test]
    fn an_own_secret_may_be_served_anywhere() {
        let mut c = Config::default();
        c.apply_env(env(&[("BROKER_APP_SECRET", "a-long-random-secret")]))
            .unwrap();
        assert_eq!(
            c.listen_host(),
            "0.0.0.0",
            "without the published secret the default host is every interface"
        );
        c.validate().unwrap();
        let mut c = Config::default();
        c.apply_env(env(&[("BROKER_APP_STORE_URL", "postgres://db/apps")]))
            .unwrap();
        assert!(c.apps.is_empty());
        assert_eq!(c.listen_host(), "0.0.0.0");
        c.validate().unwrap();
    }

    #[test]
    fn ops_token_compares_whole_tokens_and_is_never_printed() {
        let t = OpsToken::new("0123456789abcdef".into()).unwrap();
        assert!(t.matches("0123456789abcdef"));
        assert!(!t.matches("0123456789abcdeX"));
        assert!(!t.matches("0123456789abcdef0"));
        assert!(!t.matches(""));
        assert!(!format!("{t:?}").contains("0123"));
    }
}
