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
    let mut s = TcpStream::connect(("127.0.0.1", b.port)).await.unwrap();
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
