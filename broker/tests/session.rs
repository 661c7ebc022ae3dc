//! The WebSocket session's state machine, against a whole broker in this process.

mod common;

use common::{data, start, Client, Closed, Ws};
use protocol::rest::TriggerRequest;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn trigger(channel: &str, event: &str, except: Option<&str>) -> TriggerRequest {
    serde_json::from_value(
        json!({"name": event, "channel": channel, "data": "{\"n\":1}", "socket_id": except}),
    )
    .unwrap()
}

#[actix_rt::test]
async fn connects_pings_and_rejects_unknown_keys() {
    let b = start("", "").await;
    let mut ws = Ws::connect(&b).await;
    assert!(ws.socket_id.contains('.'), "socket id {}", ws.socket_id);
    ws.send(json!({"event": "pusher:ping", "data": {}})).await;
    ws.expect("pusher:pong").await;
    let mut stranger = Ws::open(&b, "nope").await;
    let err = stranger.next().await.unwrap();
    assert_eq!(err["event"], "pusher:error");
    assert_eq!(err["data"]["code"], 4001);
    assert_eq!(stranger.closed().await, Closed(Some(4001)));
    b.stop().await;
}

#[actix_rt::test]
async fn bad_input_gets_an_error_and_the_connection_stays() {
    let b = start("", "").await;
    let mut ws = Ws::connect(&b).await;
    ws.send_raw(WsMessage::Text("{not json".into())).await;
    assert_eq!(ws.expect("pusher:error").await["event"], "pusher:error");
    ws.send_raw(WsMessage::Binary(vec![1, 2, 3].into())).await;
    ws.expect("pusher:error").await;
    ws.send(json!({"event": "pusher:subscribe", "data": {"channel": "bad name!"}}))
        .await;
    ws.expect("pusher:error").await;
    ws.send(json!({"event": "pusher:ping", "data": {}})).await;
    ws.expect("pusher:pong").await;
    b.stop().await;
}

#[actix_rt::test]
async fn public_channels_deliver_triggers_with_socket_exclusion() {
    let b = start("", "").await;
    let mut a = Ws::connect(&b).await;
    let mut c = Ws::connect(&b).await;
    assert_eq!(
        a.subscribe("news").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    c.subscribe("news").await;
    b.rest()
        .trigger(&trigger("news", "story", Some(&a.socket_id)))
        .await
        .unwrap();
    let got = c.expect("story").await;
    assert_eq!(data(&got), json!({"n": 1}));
    a.quiet_for(200).await;
    a.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}))
        .await;
    c.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}))
        .await;
    common_eventually(|| async {
        b.rest()
            .channels(None, None)
            .await
            .unwrap()
            .channels
            .is_empty()
    })
    .await;
    b.stop().await;
}

#[actix_rt::test]
async fn private_channels_check_the_signature_and_relay_client_events() {
    let b = start("", "").await;
    let mut a = Ws::connect(&b).await;
    let mut c = Ws::connect(&b).await;
    a.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-room"}}))
        .await;
    let refused = a.expect("pusher:subscription_error").await;
    assert_eq!(refused["data"]["status"], 401);
    a.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-room", "auth": "app-key:00"}})).await;
    assert_eq!(
        a.expect("pusher:subscription_error").await["data"]["status"],
        401
    );
    assert_eq!(
        a.subscribe_signed("private-room", None).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    c.subscribe_signed("private-room", None).await;
    a.send(json!({"event": "client-typing", "channel": "private-room", "data": {"who": "a"}}))
        .await;
    assert_eq!(data(&c.expect("client-typing").await), json!({"who": "a"}));
    a.quiet_for(200).await; // never echoed
    c.subscribe("public").await;
    c.send(json!({"event": "client-x", "channel": "public", "data": {}}))
        .await;
    c.expect("pusher:error").await;
    b.stop().await;
}

#[actix_rt::test]
async fn presence_lists_come_before_member_events() {
    let b = start("", "").await;
    let mut a = Ws::connect(&b).await;
    let mut c = Ws::connect(&b).await;
    let list_a = a.join("presence-room", "alice").await;
    assert_eq!(data(&list_a)["presence"]["count"], 1);
    let list_c = c.join("presence-room", "carol").await;
    let p = data(&list_c)["presence"].clone();
    assert_eq!(p["count"], 2);
    assert_eq!(p["hash"]["alice"], json!({"name": "alice"}));
    let added = a.expect("pusher_internal:member_added").await;
    assert_eq!(data(&added)["user_id"], "carol");
    let users = b.rest().users("presence-room").await.unwrap();
    assert_eq!(users.users.len(), 2);
    drop(c);
    let removed = a.expect("pusher_internal:member_removed").await;
    assert_eq!(data(&removed)["user_id"], "carol");
    b.stop().await;
}

/// Polls `f` until it is true (at most the harness wait).
async fn common_eventually<F, Fut>(f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition still false after the wait"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
