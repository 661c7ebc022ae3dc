//! Builds the HTTP server that serves both the WebSocket and REST endpoints,
//! and runs the shutdown sequence.

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_http::HttpService;
use actix_service::{map_config, IntoServiceFactory};
use actix_web::{
    dev::{AppConfig, ServerHandle},
    web, App, HttpServer,
};

use crate::{
    adapter::{redis::RedisAdapter, Adapter, LocalAdapter},
    app_store,
    config::{is_loopback, Config, ConfigError, OpsToken},
    console, fallback,
    http::{
        self,
        ops::{self, OpsAccess},
    },
    state::State,
    webhooks, ws,
};

/// Loads the TLS certificate and key named in the config, if any.
pub fn tls_config(config: &Config) -> Result<Option<rustls::ServerConfig>, ConfigError> {
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError(format!("tls_cert {}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!(
            "tls_cert {}: no certificate found",
            cert_path.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| ConfigError(format!("tls_key {}: {e}", key_path.display())))?
        .ok_or_else(|| {
            ConfigError(format!(
                "tls_key {}: no private key found",
                key_path.display()
            ))
        })?;
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ConfigError(format!("tls: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ConfigError(format!("tls_cert/tls_key: {e}")))?;
    Ok(Some(tls))
}

/// A broker bound to its port, with its background tasks running; it serves
/// once [`Server::run_until`] is awaited.
pub struct Server {
    state: web::Data<State>,
    /// HTTP-fallback sessions, whose close lines shutdown waits to deliver.
    sessions: web::Data<fallback::Sessions>,
    http: actix_web::dev::Server,
    addrs: Vec<SocketAddr>,
    senders: Arc<parking_lot::Mutex<Vec<actix_web::rt::task::JoinHandle<()>>>>,
    shutdown_timeout: Duration,
    /// The `metrics_addr` listener, when configured.
    ops: Option<ServerHandle>,
}

impl Server {
    /// Builds the shared state, starts the adapter, webhook senders, app store and
    /// sweeper tasks, and binds the listener (port 0 picks a free port: see
    /// [`Server::local_addrs`]). Must run inside an actix system.
    pub async fn build(config: Config, tls: Option<rustls::ServerConfig>) -> std::io::Result<Self> {
        let redis = match &config.cluster {
            Some(cluster) => Some(Arc::new(
                RedisAdapter::new(cluster.clone(), config.webhooks.debounce())
                    .map_err(std::io::Error::other)?,
            )),
            None => None,
        };
        let adapter: Arc<dyn Adapter> = match &redis {
            Some(r) => r.clone(),
            None => Arc::new(LocalAdapter),
        };
        let (state, webhook_receivers) = State::new(&config, adapter);
        let state = web::Data::new(state);
        if let Some(redis) = &redis {
            tracing::info!(
                node = redis.node_id(),
                "cluster mode: sharing state through redis"
            );
            redis.start(state.apps.clone());
        }
        let senders: Vec<_> = webhook_receivers
            .into_iter()
            .map(|r| {
                actix_web::rt::spawn(webhooks::run_sender(
                    r,
                    config.webhooks.clone(),
                    state.webhook_flush_signal(),
                    state.console.clone(),
                ))
            })
            .collect();
        let senders = Arc::new(parking_lot::Mutex::new(senders));
        if let Some(store) = config.app_store.clone() {
            let on_loopback = is_loopback(config.listen_host(), config.port);
            actix_web::rt::spawn(app_store::run(
                state.clone().into_inner(),
                store,
                config.webhooks.clone(),
                senders.clone(),
                on_loopback,
            ));
        }
        let sweeper = state.clone().into_inner();
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let now = Instant::now();
                for app in sweeper.apps.all() {
                    app.hub.cache_sweep(now);
                    if let Some(h) = &app.history {
                        app.hub.history.sweep(h, now);
                    }
                }
            }
        });

        let console = console::start(
            &config,
            state.clone().into_inner(),
            redis.as_ref().map(|r| r.node_id()),
        );
        let ops_console = console.clone();
        let app_state = state.clone();
        let sessions = web::Data::new(fallback::Sessions::new(config.http_fallback.clone()));
        let app_sessions = config.http_fallback.enabled.then(|| sessions.clone());
        // On the public port /ready and /metrics need the token, or a loopback peer;
        // with a metrics_addr they are served there only.
        let public_ops = match (&config.metrics_addr, &config.ops_token) {
            (Some(_), _) => None,
            (None, Some(token)) => Some(OpsAccess::Token(token.clone())),
            (None, None) => Some(OpsAccess::LoopbackOnly),
        };
        let app_factory = move || {
            let mut app = App::new()
                .app_data(app_state.clone())
                .route("/app/{key}", web::get().to(ws::not_upgraded));
            if let Some(sessions) = &app_sessions {
                app = app.configure(|cfg| fallback::routes(cfg, sessions.clone()));
            }
            app.configure(http::routes)
                .configure(|c| console::routes(c, console.clone()))
                .configure(|cfg| {
                    if let Some(access) = public_ops.clone() {
                        ops::guarded_routes(cfg, access);
                    }
                })
        };
        // What actix-web's HttpServer does, plus the WebSocket upgrade hand-over (see `ws`).
        // Both listeners below also refuse half-closed requests: a client that closes its side
        // is gone (no browser or SDK half-closes a request and then waits for the answer).
        // Without it a streaming answer (the console's feed, an HTTP-fallback poll or stream)
        // outlives its page until a write to it fails: a closed page's fallback session would
        // stay attached (its socket in CLOSE-WAIT) until the next heartbeat, and end that much
        // later than `session_timeout_secs` after the page closed. `AppConfig::default()`: its
        // host and scheme only feed `ConnectionInfo` and URL generation, which the broker does
        // not use.
        let mut server = actix_server::Server::build()
            .disable_signals()
            .shutdown_timeout(1)
            .backlog(LISTEN_BACKLOG as u32);
        if config.workers > 0 {
            server = server.workers(config.workers);
        }
        let mut addrs = Vec::new();
        for listener in listeners(&config)? {
            let addr = listener.local_addr()?;
            addrs.push(addr);
            let (app, ws_state, tls) =
                (app_factory.clone(), state.clone().into_inner(), tls.clone());
            let name = format!("broker-{addr}");
            server = match tls {
                Some(tls) => server.listen(name, listener, move || {
                    HttpService::build()
                        .h1_allow_half_closed(false)
                        .client_disconnect_timeout(Duration::from_secs(1))
                        .local_addr(addr)
                        .upgrade(ws::upgrade(ws_state.clone(), ws::Tls))
                        .finish(map_config(app().into_factory(), |_| AppConfig::default()))
                        .rustls_0_23(tls.clone())
                })?,
                None => server.listen(name, listener, move || {
                    HttpService::build()
                        .h1_allow_half_closed(false)
                        .client_disconnect_timeout(Duration::from_secs(1))
                        .local_addr(addr)
                        .upgrade(ws::upgrade(ws_state.clone(), |io| io))
                        .finish(map_config(app().into_factory(), |_| AppConfig::default()))
                        .tcp()
                })?,
            };
        }
        let scheme = if config.tls_cert.is_some() {
            "https/wss"
        } else {
            "http/ws"
        };
        tracing::info!(addrs = ?addrs, scheme, apps = state.apps.all().len(), "broker listening");
        let ops = match config.metrics_addr {
            Some(addr) => Some(ops_listener(
                addr,
                state.clone(),
                config.ops_token.clone(),
                ops_console,
            )?),
            None => None,
        };
        Ok(Self {
            state,
            sessions,
            http: server.run(),
            addrs,
            senders,
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout),
            ops,
        })
    }

    /// The addresses the listener is bound to.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The state every worker shares (for tests and embedding).
    pub fn state(&self) -> Arc<State> {
        self.state.clone().into_inner()
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: stop
    /// accepting, report not-ready, tell every client to reconnect (4200), wait
    /// for their clean-up, flush webhooks, all within `shutdown_timeout`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + 'static,
    ) -> std::io::Result<()> {
        let Self {
            state,
            sessions,
            http,
            senders,
            shutdown_timeout,
            ops,
            ..
        } = self;
        let handle = http.handle();
        actix_web::rt::spawn(async move {
            shutdown.await;
            let until = tokio::time::Instant::now() + shutdown_timeout;
            tracing::info!(
                open_connections = state.connection_count(),
                "shutting down: telling clients to reconnect"
            );
            handle.pause().await;
            state.begin_shutdown();
            while state.connection_count() > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A polling client gets its 4200 with its next poll.
            let _ = tokio::time::timeout_at(until, sessions.until_empty()).await;
            state.flush_webhooks();
            let senders = std::mem::take(&mut *senders.lock());
            for sender in senders {
                if tokio::time::timeout_at(until, sender).await.is_err() {
                    tracing::warn!("webhooks not flushed before the shutdown deadline");
                    break;
                }
            }
            tracing::info!(remaining_connections = state.connection_count(), "stopped");
            if let Some(ops) = ops {
                ops.stop(false).await;
            }
            handle.stop(false).await;
        });
        http.await
    }
}

/// The `metrics_addr` listener: `/health`, `/ready` and `/metrics` only, on one
/// worker, plain HTTP. It keeps answering (`/ready`: 503) while the public port
/// drains during a shutdown.
/// The `metrics_addr` listener: `/health`, `/ready`, `/metrics`, and the debug
/// console when it is on (so operators can keep it off the public port).
fn ops_listener(
    addr: SocketAddr,
    state: web::Data<State>,
    token: Option<OpsToken>,
    console: Option<web::Data<console::Console>>,
) -> std::io::Result<ServerHandle> {
    let access = match token {
        Some(t) => OpsAccess::Token(t),
        None => OpsAccess::Open,
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(ops::health_route)
            .configure(|cfg| ops::guarded_routes(cfg, access.clone()))
            .configure(|c| console::routes(c, console.clone()))
    })
    .h1_allow_half_closed(false)
    .disable_signals()
    .workers(1)
    .shutdown_timeout(1)
    .bind(addr)?
    .run();
    tracing::info!(%addr, "operations endpoints listening");
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(handle)
}

/// Binds and runs the broker until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(config: Config, tls: Option<rustls::ServerConfig>) -> std::io::Result<()> {
    Server::build(config, tls)
        .await?
        .run_until(wait_for_signal())
        .await
}

/// Backlog of each listening socket (what actix's own `bind` uses).
const LISTEN_BACKLOG: i32 = 1024;

/// The listening sockets for `host:port`, made here rather than by actix so that
/// accepted connections inherit `TCP_USER_TIMEOUT`: a client that stops reading
/// leaves its socket (and the kernel buffers behind it) only that long after the
/// broker cut it, instead of for as long as it keeps answering zero-window probes.
fn listeners(config: &Config) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for addr in (config.listen_host(), config.port).to_socket_addrs()? {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if config.tcp_user_timeout > 0 {
            socket.set_tcp_user_timeout(Some(Duration::from_secs(config.tcp_user_timeout)))?;
        }
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        out.push(socket.into());
    }
    Ok(out)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
