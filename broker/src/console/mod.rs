//! The built-in debug console at `/console`: a page on the broker that shows,
//! per app, live connection and message graphs, the occupied channels and
//! presence members, a live log of what happens, and an event creator.
//!
//! It is off unless an admin token is configured (`console_token` or
//! `BROKER_CONSOLE_TOKEN`). Every data route answers 401 without the token,
//! offered as `Authorization: Bearer <token>`, or without a live login session,
//! whose id is the cookie the login form sets (HttpOnly, SameSite=Strict, scoped
//! to `/console`). Wrong tokens are throttled per client address (429). The
//! page's files are compiled into the binary; nothing is fetched from elsewhere.
//!
//! - [`sessions`]: the login sessions the cookie names.
//! - [`throttle`]: failed logins per client address.
//! - [`crate::console_feed`]: the live event log and the hooks the broker calls
//!   (a module of its own low in the layers, since transports and webhook senders call it).
//! - [`series`]: the graphs' once-a-second samples.
//! - the token and bounds are [`ConsoleToken`] and [`ConsoleSettings`] in [`crate::config`].
//! - [`cluster`]: every node's events for consoles on any node.

pub mod cluster;
pub mod series;
pub mod sessions;
pub mod throttle;

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{
    body::MessageBody,
    cookie::{Cookie, SameSite},
    dev::Payload,
    http::{header, StatusCode},
    web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError,
};
use bytes::Bytes;
use protocol::{AppKey, ChannelKind, ChannelName};
use serde::{Deserialize, Serialize};

use self::{
    series::{Sample, Series},
    sessions::{Ended, LoginSessions},
    throttle::LoginThrottle,
};
use crate::{
    apps::App,
    config::{Config, ConsoleSettings, ConsoleToken},
    console_feed::{Feed, Message, PageId, Viewer},
    http::{self, error::ApiError},
    state::State,
};

const COOKIE: &str = "broker_console";
/// How often an idle feed says it is still there. A page that closes its connection is noticed at
/// once (the server does not keep half-closed connections); this catches peers that vanished
/// without closing, and keeps proxies from timing the stream out.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

const INDEX_HTML: &str = include_str!("../../console/index.html");
const LOGIN_HTML: &str = include_str!("../../console/login.html");
const CONSOLE_JS: &str = include_str!("../../console/console.js");
const CONSOLE_CSS: &str = include_str!("../../console/console.css");

/// The console of a running broker.
pub struct Console {
    token: ConsoleToken,
    settings: ConsoleSettings,
    feed: Arc<Feed>,
    series: Arc<Series>,
    sessions: LoginSessions,
    throttle: LoginThrottle,
    /// Whether the broker serves TLS (the cookie is then marked Secure).
    tls: bool,
    /// Whether this node is part of a cluster (channel lists and members are then cluster-wide).
    cluster: bool,
}

/// Sets up the console if a token is configured: installs the feed, starts sampling the graphs
/// and, on a cluster node (`node` is its id), relaying events between nodes.
pub fn start(config: &Config, state: Arc<State>, node: Option<&str>) -> Option<web::Data<Console>> {
    let token = config.console_token.clone()?;
    // The state built the feed from the same config, so it is there whenever a token is.
    let feed = state.console.feed()?.clone();
    if let (Some(cluster), Some(node)) = (&config.cluster, node) {
        cluster::start(feed.clone(), cluster, node);
    }
    let series = Arc::new(Series::new(config.console.history_secs));
    actix_web::rt::spawn(series::run(state, feed.clone(), series.clone()));
    tracing::info!("debug console enabled at /console");
    let settings = &config.console;
    Some(web::Data::new(Console {
        token,
        settings: settings.clone(),
        feed,
        series,
        sessions: LoginSessions::new(
            Duration::from_secs(settings.session_secs),
            settings.max_sessions,
        ),
        throttle: LoginThrottle::new(settings.failed_logins_per_minute),
        tls: config.tls_cert.is_some(),
        cluster: config.cluster.is_some(),
    }))
}

/// Mounts `/console` when the console is enabled; without it the paths are simply not there (404).
/// Largest event-creator request (an event's data is bounded by the app's limits, far below this).
const MAX_CREATOR_BODY_BYTES: usize = 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig, console: Option<web::Data<Console>>) {
    let Some(console) = console else { return };
    cfg.service(
        web::scope("/console")
            .app_data(console)
            .app_data(web::PayloadConfig::new(MAX_CREATOR_BODY_BYTES))
            .route("", web::get().to(page))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route(
                "/assets/console.js",
                web::get().to(|| async { asset(CONSOLE_JS, "text/javascript; charset=utf-8") }),
            )
            .route(
                "/assets/console.css",
                web::get().to(|| async { asset(CONSOLE_CSS, "text/css; charset=utf-8") }),
            )
            .route("/api/apps", web::get().to(apps))
            .route("/api/apps/{app_id}/stats", web::get().to(stats))
            .route("/api/apps/{app_id}/channels", web::get().to(channels))
            .route(
                "/api/apps/{app_id}/channels/{channel}/members",
                web::get().to(members),
            )
            .route(
                "/api/apps/{app_id}/channels/{channel}/history",
                web::get().to(history),
            )
            .route("/api/apps/{app_id}/events", web::post().to(trigger))
            .route("/api/apps/{app_id}/feed", web::get().to(live_feed)),
    );
}

/// Why a console request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("the console needs its admin token (Authorization: Bearer, or log in at /console)")]
    Unauthorized,
    #[error("unknown app id {0:?}")]
    AppNotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("send the event as Content-Type: application/json")]
    NotJson,
    #[error("{0} consoles are already watching the live feed (console.max_viewers)")]
    TooManyViewers(usize),
    #[error("too many wrong console tokens from this address: retry in {} s (console.failed_logins_per_minute)", retry_secs(*.0))]
    TooManyFailures(Duration),
    #[error("{0}")]
    Trigger(#[from] ApiError),
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::AppNotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyViewers(_) | Self::TooManyFailures(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Trigger(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            Self::Unauthorized => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"broker console\""));
            }
            Self::TooManyFailures(wait) => {
                res.insert_header((header::RETRY_AFTER, retry_secs(*wait)));
            }
            _ => {}
        }
        res.insert_header((header::CACHE_CONTROL, "no-store"))
            .content_type("text/plain; charset=utf-8")
            .body(format!("{self}\n"))
    }
}

/// Whole seconds to wait, at least 1 (for `Retry-After`).
fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl Console {
    /// Admits a request that offers the token as a bearer header (throttled per
    /// address, see [`throttle`]) or the cookie of a live login session (then also
    /// returns what resolves when that session ends).
    fn admits(&self, req: &HttpRequest) -> Result<Option<Ended>, ConsoleError> {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(offered) = bearer {
            return self.check_token(req, offered).map(|()| None);
        }
        req.cookie(COOKIE)
            .and_then(|c| self.sessions.ended(c.value(), Instant::now()))
            .map(Some)
            .ok_or(ConsoleError::Unauthorized)
    }

    /// Compares an offered token, unless its address is out of failures; counts a wrong one.
    fn check_token(&self, req: &HttpRequest, offered: &str) -> Result<(), ConsoleError> {
        let peer = req.peer_addr().map(|a| a.ip());
        let now = Instant::now();
        self.throttle
            .check(peer, now)
            .map_err(ConsoleError::TooManyFailures)?;
        if self.token.matches(offered.as_bytes()) {
            Ok(())
        } else {
            self.throttle.failed(peer, now);
            Err(ConsoleError::Unauthorized)
        }
    }
}

/// Proof that a request carries the console token or a login session; a handler taking it
/// answers 401 (or 429) otherwise.
pub struct Admin {
    console: web::Data<Console>,
    /// The login session's end, when admitted by one (not for a bearer token).
    session: Option<Ended>,
}

impl FromRequest for Admin {
    type Error = ConsoleError;
    type Future = std::future::Ready<Result<Self, ConsoleError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let console = req.app_data::<web::Data<Console>>().cloned();
        std::future::ready(match console {
            Some(console) => console
                .admits(req)
                .map(|session| Admin { console, session }),
            None => Err(ConsoleError::Unauthorized),
        })
    }
}

fn html(status: StatusCode, body: impl MessageBody + 'static) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

/// The page's script and style: code only, no data, so served without the token.
fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// `GET /console`: the console, or (401) a form asking for the token.
async fn page(req: HttpRequest, console: web::Data<Console>) -> HttpResponse {
    match console.admits(&req) {
        Ok(_) => html(StatusCode::OK, INDEX_HTML),
        Err(ConsoleError::TooManyFailures(wait)) => throttled(wait),
        Err(_) => html(StatusCode::UNAUTHORIZED, LOGIN_HTML),
    }
}

/// The login form again (429) with how long to wait.
fn throttled(wait: Duration) -> HttpResponse {
    let secs = retry_secs(wait);
    let notice = format!(
        "<p class=\"error\" role=\"alert\">Too many wrong tokens from this address: try again in {secs} s.</p>"
    );
    let mut res = html(
        StatusCode::TOO_MANY_REQUESTS,
        LOGIN_HTML.replace("<!-- notice -->", &notice),
    );
    res.headers_mut().insert(header::RETRY_AFTER, secs.into());
    res
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /console/login`: a right token opens a session, sets its id as the cookie and
/// goes to the console; a wrong one counts against the client's address.
async fn login(
    req: HttpRequest,
    form: web::Form<LoginForm>,
    console: web::Data<Console>,
) -> HttpResponse {
    match console.check_token(&req, &form.token) {
        Ok(()) => {}
        Err(ConsoleError::TooManyFailures(wait)) => return throttled(wait),
        Err(_) => return html(StatusCode::UNAUTHORIZED, LOGIN_HTML),
    }
    let session = console.sessions.open(Instant::now());
    let max_age = actix_web::cookie::time::Duration::seconds(
        i64::try_from(console.sessions.lifetime().as_secs()).unwrap_or(i64::MAX),
    );
    let cookie = Cookie::build(COOKIE, session)
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(console.tls)
        .max_age(max_age)
        .finish();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console"))
        .cookie(cookie)
        .finish()
}

/// `POST /console/logout`: ends the cookie's session on the broker and clears the cookie.
async fn logout(req: HttpRequest, console: web::Data<Console>) -> HttpResponse {
    if let Some(c) = req.cookie(COOKIE) {
        console.sessions.close(c.value());
    }
    let mut cookie = Cookie::build(COOKIE, "").path("/console").finish();
    cookie.make_removal();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console"))
        .cookie(cookie)
        .finish()
}

fn app_by_id(state: &State, id: &str) -> Result<Arc<App>, ConsoleError> {
    state
        .apps
        .by_id(id)
        .ok_or_else(|| ConsoleError::AppNotFound(id.to_owned()))
}

#[derive(Serialize)]
struct AppSummary {
    id: String,
    key: String,
    enabled: bool,
}

/// `GET /console/api/apps`: ids and keys (never secrets).
async fn apps(_: Admin, state: web::Data<State>) -> HttpResponse {
    let mut list: Vec<AppSummary> = state
        .apps
        .all()
        .iter()
        .map(|a| AppSummary {
            id: a.id.as_str().to_owned(),
            key: a.key.as_str().to_owned(),
            enabled: a.enabled,
        })
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    HttpResponse::Ok().json(list)
}

#[derive(Serialize)]
struct Stats {
    /// Open connections of the app on this node.
    connections: usize,
    /// Once-a-second samples, oldest first.
    series: Vec<Sample>,
    /// Whether channel lists and members are cluster-wide.
    cluster: bool,
    viewers: usize,
    /// Log events skipped over `events_per_second` since the broker started.
    skipped: u64,
    events_per_second: u32,
}

/// `GET /console/api/apps/{app_id}/stats`: the graphs and the feed's state.
async fn stats(
    admin: Admin,
    state: web::Data<State>,
    app_id: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    let console = &admin.console;
    let app = app_by_id(&state, &app_id)?;
    Ok(HttpResponse::Ok().json(Stats {
        connections: app.hub.connection_count(),
        series: console.series.of(&app.key),
        cluster: console.cluster,
        viewers: console.feed.viewers(),
        skipped: console.feed.skipped(),
        events_per_second: console.settings.events_per_second,
    }))
}

#[derive(Deserialize)]
struct ChannelQuery {
    #[serde(default)]
    prefix: String,
}

#[derive(Serialize)]
struct ChannelRow {
    name: String,
    subscriptions: u64,
    /// Present users, for presence channels.
    users: Option<u64>,
}

#[derive(Serialize)]
struct ChannelList {
    channels: Vec<ChannelRow>,
    /// Occupied channels matching the prefix; more than `channels` holds when the list was cut.
    total: usize,
}

/// `GET /console/api/apps/{app_id}/channels?prefix=`: occupied channels by name, with counts (via the adapter).
async fn channels(
    admin: Admin,
    state: web::Data<State>,
    app_id: web::Path<String>,
    query: web::Query<ChannelQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let app = app_by_id(&state, &app_id)?;
    if query.prefix.len() > app.limits.max_channel_name_len {
        return Err(ConsoleError::BadRequest(format!(
            "prefix is longer than {} characters",
            app.limits.max_channel_name_len
        )));
    }
    let mut found = state.adapter.channels(&app, &query.prefix).await;
    found.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let total = found.len();
    let channels = found
        .into_iter()
        .take(admin.console.settings.max_channels_listed)
        .map(|(name, counts)| ChannelRow {
            users: (name.kind() == ChannelKind::Presence).then_some(counts.users),
            subscriptions: counts.subscriptions,
            name: name.to_string(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(ChannelList { channels, total }))
}

/// `GET /console/api/apps/{app_id}/channels/{channel}/members`: a presence channel's user ids (via the adapter).
async fn members(
    _: Admin,
    state: web::Data<State>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ConsoleError> {
    let (app_id, channel) = path.into_inner();
    let app = app_by_id(&state, &app_id)?;
    let name = ChannelName::parse_with_max(&channel, app.limits.max_channel_name_len)
        .map_err(|e| ConsoleError::BadRequest(format!("invalid channel name {channel:?}: {e}")))?;
    if name.kind() != ChannelKind::Presence {
        return Err(ConsoleError::BadRequest(format!(
            "{channel:?} is not a presence channel"
        )));
    }
    let mut users = state.adapter.users(&app, &name).await;
    users.sort_unstable();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "users": users })))
}

/// `GET /console/api/apps/{app_id}/channels/{channel}/history`: a kept channel's history
/// page, answered by the very function that serves the signed REST endpoint (same query).
async fn history(
    _: Admin,
    state: web::Data<State>,
    path: web::Path<(String, String)>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ConsoleError> {
    let (app_id, channel) = path.into_inner();
    let app = app_by_id(&state, &app_id)?;
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match crate::http::history_page(&state, &app, &channel, param).await {
        Ok(json) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(json)),
        Err(e) => Ok(e.error_response()),
    }
}

/// `POST /console/api/apps/{app_id}/events`: the event creator. The body is a REST trigger's
/// (`name`, `data`, `channels`, optional `socket_id`), and it is checked, limited and published by
/// the very function that serves a signed `POST /apps/{id}/events`; only the signature is replaced
/// by the console token.
async fn trigger(
    _: Admin,
    req: HttpRequest,
    state: web::Data<State>,
    app_id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ConsoleError> {
    // Only JSON: a cross-site form cannot send it without the browser asking first (CORS).
    if req.content_type() != "application/json" {
        return Err(ConsoleError::NotJson);
    }
    let app = app_by_id(&state, &app_id)?;
    let response = http::trigger_as(&state, &app, &body).await?;
    Ok(HttpResponse::Ok().json(response))
}

type Chunk = Result<Bytes, Infallible>;

#[derive(Deserialize)]
struct FeedQuery {
    page: Option<String>,
}

/// `GET /console/api/apps/{app_id}/feed`: the app's live events as server-sent events.
/// `data:` lines hold one event each; `event: dropped` says how many this page lost by falling behind.
/// `?page=` names the page: its next request (another app) takes over this one's place.
async fn live_feed(
    admin: Admin,
    state: web::Data<State>,
    app_id: web::Path<String>,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let app = app_by_id(&state, &app_id)?;
    let page = match query.page.as_deref() {
        Some(p) => Some(PageId::parse(p).map_err(|e| ConsoleError::BadRequest(e.to_string()))?),
        None => None,
    };
    let viewer = admin
        .console
        .feed
        .watch(page)
        .map_err(|_| ConsoleError::TooManyViewers(admin.console.settings.max_viewers))?;
    let hello = futures_util::stream::once(async {
        Ok::<_, Infallible>(Bytes::from_static(b": connected\n\n"))
    });
    let watching = Watching {
        viewer,
        key: app.key.clone(),
        session: admin.session,
    };
    let events = futures_util::stream::unfold(watching, |mut w| async move {
        let chunk = w.next_chunk().await?;
        Some((chunk, w))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(futures_util::StreamExt::chain(hello, events)))
}

/// One open feed: its place, its app, and the login session it ends with (none for a bearer token).
struct Watching {
    viewer: Viewer,
    key: AppKey,
    session: Option<Ended>,
}

impl Watching {
    /// The next piece of the stream; `None` ends it (place taken over, or session ended).
    async fn next_chunk(&mut self) -> Option<Chunk> {
        let session_ended = async {
            match &mut self.session {
                Some(ended) => ended.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(session_ended);
        loop {
            let next = tokio::select! {
                _ = &mut session_ended => return None,
                m = self.viewer.next() => m?,
                _ = tokio::time::sleep(KEEP_ALIVE) => return Some(Ok(Bytes::from_static(b": still here\n\n"))),
            };
            return Some(match next {
                Message::Event { app, json, .. } if app == self.key => {
                    Ok(Bytes::from(format!("data: {json}\n\n")))
                }
                Message::Event { .. } => continue,
                Message::Dropped(n) => Ok(Bytes::from(format!("event: dropped\ndata: {n}\n\n"))),
            });
        }
    }
}
