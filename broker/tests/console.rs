//! The debug console over HTTP: its live feed's viewer places, its feed being
//! each server's own, its login sessions and the throttling of token guesses.

mod common;

use std::time::{Duration, Instant};

use common::{start, TestBroker, APP_ID, WAIT};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const TOKEN: &str = "console-test-token-0123456789";

async fn console_broker(console: &str) -> TestBroker {
    start(
        &format!("console_token = \"{TOKEN}\"\n[console]\n{console}"),
        "",
    )
    .await
}

/// Sends a raw HTTP/1.1 request and reads up to the end of the response head:
/// (status, head, the open connection). The connection is left open so that a
/// streaming answer (the feed) keeps going until it is dropped.
async fn raw(b: &TestBroker, request: &str) -> (u16, String, TcpStream) {
    raw_from(b, "127.0.0.1", request).await
}

/// [`raw`] from another loopback address (any 127.x.y.z is this machine), as another client.
async fn raw_from(b: &TestBroker, from: &str, request: &str) -> (u16, String, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let mut s = socket
        .connect(([127, 0, 0, 1], b.port).into())
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut byte))
            .await
            .expect("a response head")
            .unwrap();
        assert_eq!(n, 1, "connection closed before the head ended");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head, s)
}

/// Opens the live feed of the test app with the bearer token; `query` is e.g. `?page=p1`.
async fn open_feed(b: &TestBroker, query: &str) -> (u16, TcpStream) {
    let (status, _, mut s) = raw(
        b,
        &format!(
            "GET /console/api/apps/{APP_ID}/feed{query} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        ),
    )
    .await;
    if status == 200 {
        // Read what was sent so far, as a browser does: a socket closed with unread
        // data is reset (which any server notices), one closed after reading sends FIN.
        let mut hello = [0u8; 64];
        let n = tokio::time::timeout(WAIT, s.read(&mut hello))
            .await
            .expect("the feed's first line")
            .unwrap();
        assert!(String::from_utf8_lossy(&hello[..n]).contains(": connected"));
    }
    (status, s)
}

/// The stats' viewer count.
async fn viewers(b: &TestBroker) -> u64 {
    let mut res = awc::Client::default()
        .get(format!("{}/console/api/apps/{APP_ID}/stats", b.url))
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let stats: Value = res.json().await.unwrap();
    stats["viewers"].as_u64().unwrap()
}

/// Waits up to `within` for the viewer count to become `n`.
async fn viewers_become(b: &TestBroker, n: u64, within: Duration) -> bool {
    let until = Instant::now() + within;
    loop {
        if viewers(b).await == n {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[actix_rt::test]
async fn a_closed_feed_frees_its_place_at_once() {
    let b = console_broker("max_viewers = 1").await;
    for round in 0..3 {
        let (status, feed) = open_feed(&b, "").await;
        assert_eq!(status, 200, "round {round}");
        assert_eq!(viewers(&b).await, 1);
        // The page goes away (reload, closed tab): the browser closes the connection.
        drop(feed);
        assert!(
            viewers_become(&b, 0, Duration::from_millis(1000)).await,
            "round {round}: the place is still held after the connection closed"
        );
    }
    b.stop().await;
}

#[actix_rt::test]
async fn a_page_switching_apps_keeps_its_one_place() {
    let b = console_broker("max_viewers = 1").await;
    let (status, mut first) = open_feed(&b, "?page=page-1").await;
    assert_eq!(status, 200);
    // The page opens the feed again (another app) before its first request is seen closed.
    let (status, _second) = open_feed(&b, "?page=page-1").await;
    assert_eq!(status, 200, "the page's own place is taken over");
    assert_eq!(viewers(&b).await, 1);
    // The earlier answer ends: its chunked body closes with the last chunk.
    let mut rest = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = tokio::time::timeout(WAIT, first.read(&mut buf))
            .await
            .expect("the replaced feed ends")
            .unwrap();
        rest.extend_from_slice(&buf[..n]);
        if n == 0 || rest.ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    let (status, _) = open_feed(&b, "?page=page-2").await;
    assert_eq!(status, 429, "another page still needs a place of its own");
    let (status, _) = open_feed(&b, "?page=no%2Fslashes").await;
    assert_eq!(status, 400);
    b.stop().await;
}

#[actix_rt::test]
async fn each_server_has_its_own_feed_and_bounds() {
    let one = console_broker("max_viewers = 1").await;
    let two = console_broker("max_viewers = 2").await;
    let (status, _a) = open_feed(&one, "").await;
    assert_eq!(status, 200);
    let (s1, _b1) = open_feed(&two, "").await;
    let (s2, _b2) = open_feed(&two, "").await;
    assert_eq!(
        (s1, s2),
        (200, 200),
        "the second server's max_viewers = 2 applies to it"
    );
    assert_eq!(
        viewers(&one).await,
        1,
        "viewers of one server are not the other's"
    );
    assert_eq!(viewers(&two).await, 2);
    one.stop().await;
    two.stop().await;
}

/// `POST /console/login` with `token` from `from`: (status, head).
async fn login_from(b: &TestBroker, from: &str, token: &str) -> (u16, String) {
    let body = format!("token={token}");
    let (status, head, _) = raw_from(
        b,
        from,
        &format!(
            "POST /console/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    (status, head)
}

/// Logs in and returns the `Set-Cookie` header's value.
async fn log_in(b: &TestBroker) -> String {
    let (status, head) = login_from(b, "127.0.0.1", TOKEN).await;
    assert_eq!(status, 303, "{head}");
    header(&head, "set-cookie").expect("a cookie")
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// The `name=value` part of a `Set-Cookie`.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

/// Status of `GET path` with `headers` (each ending in CRLF) from 127.0.0.1.
async fn get(b: &TestBroker, path: &str, headers: &str) -> (u16, String) {
    let (status, head, _) = raw(
        b,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"),
    )
    .await;
    (status, head)
}

#[actix_rt::test]
async fn the_login_cookie_is_a_random_session_id_not_the_token() {
    let b = console_broker("").await;
    let first = log_in(&b).await;
    let second = log_in(&b).await;
    let pair = cookie_pair(&first);
    let (name, id) = pair.split_once('=').unwrap();
    assert_eq!(name, "broker_console");
    assert!(
        !first.contains(TOKEN),
        "the cookie holds the token: {first}"
    );
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(pair, cookie_pair(&second), "each login its own session");
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(first.contains(attribute), "{attribute} missing: {first}");
    }
    assert!(!first.contains("Secure"), "no Secure flag over plain HTTP");
    let (status, _) = get(&b, "/console/api/apps", &format!("Cookie: {pair}\r\n")).await;
    assert_eq!(status, 200);
    // The token itself is no longer a cookie the console takes.
    let (status, _) = get(
        &b,
        "/console/api/apps",
        &format!("Cookie: broker_console={TOKEN}\r\n"),
    )
    .await;
    assert_eq!(status, 401);
    b.stop().await;
}

#[actix_rt::test]
async fn logout_ends_the_session_on_the_broker() {
    let b = console_broker("").await;
    let cookie = log_in(&b).await;
    let pair = cookie_pair(&cookie);
    let (status, _) = get(&b, "/console/api/apps", &format!("Cookie: {pair}\r\n")).await;
    assert_eq!(status, 200);
    let (status, head, _) = raw(
        &b,
        &format!("POST /console/logout HTTP/1.1\r\nHost: t\r\nCookie: {pair}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 303);
    assert!(header(&head, "set-cookie").unwrap().contains("Max-Age=0"));
    // A copy of the old cookie (another tab, a stolen one) is refused.
    for path in ["/console/api/apps", "/console"] {
        let (status, _) = get(&b, path, &format!("Cookie: {pair}\r\n")).await;
        assert_eq!(status, 401, "{path} after logout");
    }
    b.stop().await;
}

#[actix_rt::test]
async fn sessions_expire_and_are_bounded() {
    let b = console_broker("session_secs = 1\nmax_sessions = 2").await;
    let first = log_in(&b).await;
    assert!(first.contains("Max-Age=1"), "{first}");
    let second = log_in(&b).await;
    let third = log_in(&b).await;
    let status_of = |c: String| {
        let b = &b;
        async move {
            get(
                b,
                "/console/api/apps",
                &format!("Cookie: {}\r\n", cookie_pair(&c)),
            )
            .await
            .0
        }
    };
    assert_eq!(
        status_of(first).await,
        401,
        "the oldest of 3 > max_sessions ended"
    );
    assert_eq!(status_of(second.clone()).await, 200);
    assert_eq!(status_of(third.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status_of(second).await, 401, "expired after session_secs");
    assert_eq!(status_of(third).await, 401);
    b.stop().await;
}

#[actix_rt::test]
async fn wrong_tokens_are_throttled_per_address_with_retry_after() {
    let b = console_broker("failed_logins_per_minute = 3").await;
    let wrong = "wrong-token-0123456789abcdef";
    for i in 0..3 {
        let (status, _) = login_from(&b, "127.0.0.1", wrong).await;
        assert_eq!(status, 401, "attempt {i}");
    }
    let (status, head) = login_from(&b, "127.0.0.1", wrong).await;
    assert_eq!(status, 429, "{head}");
    let retry: u64 = header(&head, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    // While throttled, even the right token is refused: a right guess must not show.
    let (status, _) = login_from(&b, "127.0.0.1", TOKEN).await;
    assert_eq!(status, 429);
    let (status, head) = get(
        &b,
        "/console/api/apps",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(status, 429, "bearer guesses share the budget");
    assert!(header(&head, "retry-after").is_some());
    // Another address is not affected.
    let (status, _) = login_from(&b, "127.0.0.2", TOKEN).await;
    assert_eq!(status, 303);
    b.stop().await;
}

#[actix_rt::test]
async fn wrong_bearer_tokens_count_as_failures_ten_a_minute_by_default() {
    let b = console_broker("").await;
    for _ in 0..10 {
        let (status, _) = get(
            &b,
            "/console/api/apps",
            "Authorization: Bearer wrong-0123456789abc\r\n",
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, _) = login_from(&b, "127.0.0.1", TOKEN).await;
    assert_eq!(status, 429);
    b.stop().await;
}

#[actix_rt::test]
async fn a_feed_opened_with_a_session_ends_at_logout() {
    let b = console_broker("").await;
    let cookie = log_in(&b).await;
    let pair = cookie_pair(&cookie).to_owned();
    let (status, _, mut feed) = raw(
        &b,
        &format!(
            "GET /console/api/apps/{APP_ID}/feed HTTP/1.1\r\nHost: t\r\nCookie: {pair}\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = raw(
        &b,
        &format!("POST /console/logout HTTP/1.1\r\nHost: t\r\nCookie: {pair}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 303);
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let n = feed.read(&mut buf).await.unwrap_or(0);
            seen.extend_from_slice(&buf[..n]);
            if n == 0 || seen.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the feed outlived its session: {:?}",
        String::from_utf8_lossy(&seen)
    );
    assert_eq!(viewers(&b).await, 0);
    b.stop().await;
}
