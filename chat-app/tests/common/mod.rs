//! Test support: a throwaway database, a recording stand-in for the broker, and
//! a cookie-keeping client for the in-process app.

#![allow(dead_code)]

use std::{
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use actix_http::Request;
use actix_web::{
    body::MessageBody,
    dev::{Service, ServiceResponse},
    http::{header::HeaderMap, StatusCode},
    test, web, App, HttpRequest, HttpResponse, HttpServer,
};
use chat_app::{db, Config, DbPool};
use diesel::{Connection, PgConnection, RunQueryDsl};
use protocol::{rest::TriggerRequest, sign::RestRequest, AppKey, AppSecret};
use rand::Rng;

/// The maintenance database used to create and drop test databases.
pub fn admin_url() -> String {
    std::env::var("CHAT_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database named `chat_test_<random>` that is dropped when this value is,
/// including when the test panics.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn create() -> Self {
        let name = format!(
            "chat_test_{}_{:08x}",
            std::process::id(),
            rand::thread_rng().gen::<u32>()
        );
        let admin = admin_url();
        let mut conn = PgConnection::establish(&admin)
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin}: {e}"));
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .expect("create test database");
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .expect("admin url has a database part");
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match PgConnection::establish(&admin_url()) {
            // FORCE ends the pool's connections, which may still be open.
            Ok(mut conn) => {
                if let Err(e) = diesel::sql_query(format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
                .execute(&mut conn)
                {
                    eprintln!("could not drop test database {}: {e}", self.name);
                }
            }
            Err(e) => eprintln!("could not drop test database {}: {e}", self.name),
        }
    }
}

/// What the stand-in broker received: the decoded body of every signed `POST /apps/1/events`.
#[derive(Clone, Default)]
pub struct Recorded(Arc<Mutex<Vec<TriggerRequest>>>);

impl Recorded {
    pub fn all(&self) -> Vec<TriggerRequest> {
        self.0.lock().unwrap().clone()
    }
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// A tiny HTTP server that checks REST signatures exactly as the broker does and records triggers.
pub struct FakeBroker {
    pub url: String,
    pub recorded: Recorded,
    handle: actix_web::dev::ServerHandle,
}

async fn record(req: HttpRequest, body: web::Bytes, recorded: web::Data<Recorded>) -> HttpResponse {
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(actix_web::web::Query::into_inner)
        .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let verified = RestRequest {
        method: req.method().as_str(),
        path: req.path(),
        query: &query,
        body: &body,
    }
    .verify(
        &AppKey::new("app-key").unwrap(),
        &AppSecret::new("app-secret").unwrap(),
        now,
    );
    if let Err(e) = verified {
        return HttpResponse::Unauthorized().body(e.to_string());
    }
    if req.path() != "/apps/1/events" {
        return HttpResponse::NotFound().finish();
    }
    match serde_json::from_slice::<TriggerRequest>(&body) {
        Ok(t) => {
            recorded.0.lock().unwrap().push(t);
            HttpResponse::Ok().body("{}")
        }
        Err(e) => HttpResponse::BadRequest().body(e.to_string()),
    }
}

impl FakeBroker {
    pub async fn start() -> Self {
        let recorded = Recorded::default();
        let data = web::Data::new(recorded.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(record))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Self {
            url: format!("http://{addr}"),
            recorded,
            handle,
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// An http origin where nothing listens.
pub fn unreachable_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// A migrated test database and the settings to run the app on it.
pub struct Env {
    pub db: TestDb,
    pub pool: DbPool,
    pub config: Arc<Config>,
}

impl Env {
    pub fn new(pusher_url: &str) -> Self {
        let db = TestDb::create();
        let pool = db::connect_and_migrate(&db.url, 4).expect("migrate test database");
        let config = Arc::new(Config::for_tests(&db.url, pusher_url));
        Self { db, pool, config }
    }

    pub fn with_config(&mut self, f: impl FnOnce(&mut Config)) {
        let mut c = (*self.config).clone();
        f(&mut c);
        self.config = Arc::new(c);
    }

    pub fn app(
        &self,
    ) -> App<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        let throttle = std::sync::Arc::new(chat_app::throttle::Throttle::new(&self.config.abuse));
        chat_app::build_app(
            self.config.clone(),
            chat_app::Database::ready(self.pool.clone()),
            throttle,
        )
    }

    pub fn add_user(&self, name: &str, password: &str) -> i32 {
        let mut conn = self.pool.get().unwrap();
        chat_app::accounts::create(&mut conn, name, password)
            .unwrap()
            .id
    }

    pub fn conn(
        &self,
    ) -> diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<PgConnection>> {
        self.pool.get().unwrap()
    }
}

/// A response with its body read.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
    pub fn location(&self) -> Option<String> {
        self.header("location")
    }
}

/// One browser: keeps the session cookie between requests, and the CSRF token the pages hand out.
#[derive(Default, Clone)]
pub struct Browser {
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    pub set_cookie_headers: Vec<String>,
}

/// The value of `attr="..."` right after `marker` in an HTML page.
pub fn attr_after(html: &str, marker: &str, attr: &str) -> Option<String> {
    let start = html.find(marker)? + marker.len();
    let rest = &html[start..];
    let a = rest.find(&format!("{attr}=\""))? + attr.len() + 2;
    let end = rest[a..].find('"')?;
    Some(rest[a..a + end].to_owned())
}

impl Browser {
    pub async fn send<S, B>(&mut self, app: &S, mut req: test::TestRequest) -> Resp
    where
        S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        if let Some(c) = &self.cookie {
            req = req.insert_header(("Cookie", c.clone()));
        }
        let resp = test::call_service(app, req.to_request()).await;
        for c in resp.response().cookies() {
            if c.name() == chat_app::SESSION_COOKIE {
                let removed = c.value().is_empty()
                    || c.max_age()
                        .map(actix_web::cookie::time::SignedDuration::is_zero)
                        .unwrap_or(false);
                self.cookie = if removed {
                    None
                } else {
                    Some(format!("{}={}", c.name(), c.value()))
                };
            }
        }
        self.set_cookie_headers = resp
            .headers()
            .get_all("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = test::read_body(resp).await.to_vec();
        let r = Resp {
            status,
            headers,
            body,
        };
        let html = r.text();
        if let Some(t) = attr_after(&html, "name=\"csrf_token\"", "value")
            .or_else(|| attr_after(&html, "name=\"csrf-token\"", "content"))
        {
            self.csrf = Some(t);
        }
        r
    }

    pub async fn get<S, B>(&mut self, app: &S, uri: &str) -> Resp
    where
        S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        self.send(app, test::TestRequest::get().uri(uri)).await
    }

    /// A form POST carrying the CSRF token as a header, as the page's script does.
    pub async fn post_form<S, B>(&mut self, app: &S, uri: &str, fields: &[(&str, &str)]) -> Resp
    where
        S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let mut req = test::TestRequest::post().uri(uri).set_form(fields);
        if let Some(t) = &self.csrf {
            req = req.insert_header(("X-CSRF-Token", t.clone()));
        }
        self.send(app, req).await
    }

    /// A POST with no CSRF token at all.
    pub async fn post_form_no_csrf<S, B>(
        &mut self,
        app: &S,
        uri: &str,
        fields: &[(&str, &str)],
    ) -> Resp
    where
        S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        self.send(app, test::TestRequest::post().uri(uri).set_form(fields))
            .await
    }

    pub async fn post_json<S, B>(&mut self, app: &S, uri: &str, body: serde_json::Value) -> Resp
    where
        S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let mut req = test::TestRequest::post().uri(uri).set_json(body);
        if let Some(t) = &self.csrf {
            req = req.insert_header(("X-CSRF-Token", t.clone()));
        }
        self.send(app, req).await
    }

    /// A DELETE with the CSRF header, as the page's script sends it.
    pub async fn delete<S, B>(&mut self, app: &S, uri: &str) -> Resp
    where
        S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let mut req = test::TestRequest::delete().uri(uri);
        if let Some(t) = &self.csrf {
            req = req.insert_header(("X-CSRF-Token", t.clone()));
        }
        self.send(app, req).await
    }

    /// Logs in through the form, as a person would, and loads the chat page.
    pub async fn login<S, B>(app: &S, username: &str, password: &str) -> Browser
    where
        S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let mut b = Browser::default();
        assert_eq!(b.get(app, "/login").await.status, StatusCode::OK);
        let token = b.csrf.clone().expect("login form has a token");
        let r = b
            .send(
                app,
                test::TestRequest::post().uri("/login").set_form([
                    ("username", username),
                    ("password", password),
                    ("csrf_token", &token),
                ]),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::SEE_OTHER,
            "login failed: {}",
            r.text()
        );
        let page = b.get(app, "/").await;
        assert_eq!(page.status, StatusCode::OK);
        b
    }
}
