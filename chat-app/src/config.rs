//! Settings, read once from the environment at start.

use std::{
    env,
    net::IpAddr,
    path::{Path, PathBuf},
};

use actix_web::cookie::Key;
use protocol::{AppId, AppKey, AppSecret};
use rand::RngCore;

/// Everything the app needs to run; built by [`Config::from_env`] or by tests.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub host: String,
    pub port: u16,
    /// The broker's HTTP origin, for signed REST calls from this server.
    pub pusher_url: String,
    pub app_id: AppId,
    pub app_key: AppKey,
    pub app_secret: AppSecret,
    /// Where the *browser* opens its WebSocket; differs from `pusher_url` behind a proxy.
    pub ws_host: String,
    pub ws_port: u16,
    pub session_key: Key,
    pub cookie_secure: bool,
    pub web_dir: PathBuf,
    pub node_modules: PathBuf,
    /// The demo account, created on an empty database only when asked for
    /// (`CHAT_DEMO_PASSWORD` set): a fresh install has no known login.
    pub demo: Option<DemoLogin>,
    pub broker_timeout_secs: u64,
    /// A login lasts at most this long, however active.
    pub session_max_age_secs: u64,
    pub abuse: AbuseLimits,
    /// Most members of a group, creator included (`CHAT_GROUP_MAX_MEMBERS`).
    pub group_max_members: i64,
}

pub const DEFAULT_GROUP_MAX_MEMBERS: i64 = 50;

#[derive(Clone)]
pub struct DemoLogin {
    pub user: String,
    pub password: String,
}

/// Bounds on login and signup work. Attempt limits are GCRA buckets: per
/// account and for signups, `n` attempts, then one more a minute (so the
/// `n+1`-th within a minute is refused with 429 and `Retry-After`); per address
/// for logins, `n` at once refilling at `n` a minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbuseLimits {
    /// Login attempts per minute for one username (`CHAT_LOGIN_PER_ACCOUNT_PER_MIN`).
    pub login_per_account_per_min: u32,
    /// Login attempts per minute from one IP address (`CHAT_LOGIN_PER_IP_PER_MIN`).
    pub login_per_ip_per_min: u32,
    /// Signups per minute from one IP address (`CHAT_SIGNUP_PER_IP_PER_MIN`).
    pub signup_per_ip_per_min: u32,
    /// Password hashes computed at once (`CHAT_HASH_CONCURRENCY`); each takes ~19 MiB.
    pub hash_concurrency: usize,
    /// How long a login waits for a hashing slot before 503 (`CHAT_HASH_WAIT_SECS`).
    pub hash_wait_secs: u64,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        Self {
            login_per_account_per_min: 10,
            login_per_ip_per_min: 30,
            signup_per_ip_per_min: 10,
            hash_concurrency: std::thread::available_parallelism()
                .map(std::num::NonZero::get)
                .unwrap_or(2)
                .clamp(1, 8),
            hash_wait_secs: 10,
        }
    }
}

impl std::fmt::Debug for Config {
    // Hand-written so that secrets (session key, app secret, demo password) never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("pusher_url", &self.pusher_url)
            .field("app_id", &self.app_id)
            .field("app_key", &self.app_key)
            .field("ws_host", &self.ws_host)
            .field("ws_port", &self.ws_port)
            .field("cookie_secure", &self.cookie_secure)
            .field("web_dir", &self.web_dir)
            .field("node_modules", &self.node_modules)
            .field("demo_user", &self.demo.as_ref().map(|d| &d.user))
            .field("session_max_age_secs", &self.session_max_age_secs)
            .field("abuse", &self.abuse)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/chat";
pub const DEFAULT_PUSHER_URL: &str = "http://127.0.0.1:6001";
pub const DEFAULT_DEMO_USER: &str = "demo";
pub const DEFAULT_SESSION_MAX_AGE_SECS: u64 = 30 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_port(name: &str, default: u16) -> Result<u16, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("{name} must be a port number, got {v:?}"))),
    }
}

/// A positive integer setting.
fn parse_positive<T: std::str::FromStr + PartialOrd + Default>(
    name: &str,
    default: T,
) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<T>()
            .ok()
            .filter(|n| *n > T::default())
            .ok_or_else(|| ConfigError(format!("{name} must be a positive integer, got {v:?}"))),
    }
}

fn parse_bool(name: &str) -> Result<Option<bool>, ConfigError> {
    match var(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(Some(true)),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(Some(false)),
        Some(v) => Err(ConfigError(format!(
            "{name} must be true or false, got {v:?}"
        ))),
    }
}

/// Browsers send `Secure` cookies only over https, and this server speaks plain
/// http, so cookies are secure unless the app is only reachable on loopback
/// (local development and tests), where nothing travels over a network.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `host` and `port` of an `http://host:port` origin.
fn split_origin(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map(|p| p.parse().ok())
            .unwrap_or(Some(default_port))?;
        return Some((h.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
}

/// A directory given by `name`, else the first candidate that exists, else the last candidate.
fn locate_dir(name: &str, relative: &str) -> PathBuf {
    if let Some(v) = var(name) {
        return PathBuf::from(v);
    }
    let from_cwd = PathBuf::from(relative);
    if from_cwd.is_dir() {
        return from_cwd;
    }
    // Falls back to the source checkout, so `cargo run -p chat-app` and the
    // binary under target/ both work from any directory of the workspace.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A random key: sessions then end when the process restarts.
pub fn random_session_key() -> Key {
    let mut bytes = [0u8; 64];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Key::from(&bytes)
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let host = var("CHAT_HOST").unwrap_or_else(|| "127.0.0.1".into());
        let port = parse_port("CHAT_PORT", 8000)?;
        let pusher_url = var("PUSHER_URL").unwrap_or_else(|| DEFAULT_PUSHER_URL.into());
        let (broker_host, broker_port) = split_origin(&pusher_url).ok_or_else(|| {
            ConfigError(format!(
                "PUSHER_URL must look like http://host:port, got {pusher_url:?}"
            ))
        })?;
        let app_id = AppId::new(var("PUSHER_APP_ID").unwrap_or_else(|| "1".into()))
            .map_err(|e| ConfigError(format!("PUSHER_APP_ID: {e}")))?;
        let app_key = AppKey::new(var("PUSHER_APP_KEY").unwrap_or_else(|| "app-key".into()))
            .map_err(|e| ConfigError(format!("PUSHER_APP_KEY: {e}")))?;
        let app_secret =
            AppSecret::new(var("PUSHER_APP_SECRET").unwrap_or_else(|| "app-secret".into()))
                .map_err(|e| ConfigError(format!("PUSHER_APP_SECRET: {e}")))?;
        let ws_host = var("PUSHER_WS_HOST").unwrap_or(broker_host);
        let ws_port = parse_port("PUSHER_WS_PORT", broker_port)?;

        let session_key = match env::var("SESSION_KEY").ok().filter(|v| !v.is_empty()) {
            Some(v) if v.len() >= 64 => Key::derive_from(v.as_bytes()),
            Some(_) => return Err(ConfigError("SESSION_KEY must be at least 64 bytes".into())),
            None => {
                tracing::warn!("SESSION_KEY is not set: using a random key, so everyone is logged out when the app restarts");
                random_session_key()
            }
        };
        let cookie_secure =
            parse_bool("COOKIE_SECURE")?.unwrap_or_else(|| !is_loopback_host(&host));

        // No default password: the demo login exists only where someone asked for it.
        let demo = match (var("CHAT_DEMO_PASSWORD"), var("CHAT_DEMO_USER")) {
            (Some(password), user) => Some(DemoLogin {
                user: user
                    .unwrap_or_else(|| DEFAULT_DEMO_USER.into())
                    .trim()
                    .to_owned(),
                password,
            }),
            (None, Some(_)) => {
                tracing::warn!(
                    "CHAT_DEMO_USER is set without CHAT_DEMO_PASSWORD: no demo login is created"
                );
                None
            }
            (None, None) => None,
        };
        let broker_timeout_secs = parse_positive("PUSHER_TIMEOUT_SECS", 3)?;
        let d = AbuseLimits::default();
        let abuse = AbuseLimits {
            login_per_account_per_min: parse_positive(
                "CHAT_LOGIN_PER_ACCOUNT_PER_MIN",
                d.login_per_account_per_min,
            )?,
            login_per_ip_per_min: parse_positive(
                "CHAT_LOGIN_PER_IP_PER_MIN",
                d.login_per_ip_per_min,
            )?,
            signup_per_ip_per_min: parse_positive(
                "CHAT_SIGNUP_PER_IP_PER_MIN",
                d.signup_per_ip_per_min,
            )?,
            hash_concurrency: parse_positive("CHAT_HASH_CONCURRENCY", d.hash_concurrency)?,
            hash_wait_secs: parse_positive("CHAT_HASH_WAIT_SECS", d.hash_wait_secs)?,
        };

        Ok(Self {
            database_url: var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            host,
            port,
            pusher_url,
            app_id,
            app_key,
            app_secret,
            ws_host,
            ws_port,
            session_key,
            cookie_secure,
            web_dir: locate_dir("CHAT_WEB_DIR", "web"),
            node_modules: locate_dir("CHAT_NODE_MODULES", "node_modules"),
            demo,
            broker_timeout_secs,
            session_max_age_secs: parse_positive(
                "CHAT_SESSION_MAX_AGE_SECS",
                DEFAULT_SESSION_MAX_AGE_SECS,
            )?,
            abuse,
            group_max_members: parse_positive("CHAT_GROUP_MAX_MEMBERS", DEFAULT_GROUP_MAX_MEMBERS)?,
        })
    }

    /// Settings for tests and embedding: loopback, non-secure cookies, default app credentials.
    pub fn for_tests(database_url: &str, pusher_url: &str) -> Self {
        let (ws_host, ws_port) = split_origin(pusher_url).unwrap_or(("127.0.0.1".into(), 6001));
        Self {
            database_url: database_url.to_owned(),
            host: "127.0.0.1".into(),
            port: 0,
            pusher_url: pusher_url.to_owned(),
            app_id: AppId::new("1").expect("valid"),
            app_key: AppKey::new("app-key").expect("valid"),
            app_secret: AppSecret::new("app-secret").expect("valid"),
            ws_host,
            ws_port,
            session_key: random_session_key(),
            cookie_secure: false,
            web_dir: locate_dir("CHAT_WEB_DIR", "web"),
            node_modules: locate_dir("CHAT_NODE_MODULES", "node_modules"),
            demo: None,
            broker_timeout_secs: 2,
            session_max_age_secs: DEFAULT_SESSION_MAX_AGE_SECS,
            abuse: AbuseLimits::default(),
            group_max_members: DEFAULT_GROUP_MAX_MEMBERS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            split_origin("http://127.0.0.1:6001"),
            Some(("127.0.0.1".into(), 6001))
        );
        assert_eq!(
            split_origin("https://broker.example/"),
            Some(("broker.example".into(), 443))
        );
        assert_eq!(
            split_origin("http://[::1]:7000/x"),
            Some(("::1".into(), 7000))
        );
        assert_eq!(split_origin("nonsense"), None);
    }

    #[test]
    fn loopback() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("::1"));
        assert!(!is_loopback_host("0.0.0.0"));
        assert!(!is_loopback_host("chat.example"));
    }
}
