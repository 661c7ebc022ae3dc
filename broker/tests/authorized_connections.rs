//! Authorized connections (per app, off by default): a connection that neither
//! signs in nor joins a channel that needs auth within the timeout is closed
//! with 4009, as the hosted service does.

mod common;

use common::{start, Client, Closed, Ws, KEY, SECRET};
use protocol::{sign, AppKey, AppSecret};
use serde_json::json;

#[actix_rt::test]
async fn unauthorized_connections_are_closed_after_the_timeout() {
    let b = start(
        "",
        "authorized_connections = true\nauthorized_connection_timeout_secs = 1",
    )
    .await;
    let mut public_only = Ws::connect(&b).await;
    let mut private = Ws::connect(&b).await;
    let mut presence = Ws::connect(&b).await;
    let mut signed_in = Ws::connect(&b).await;
    public_only.subscribe("news").await;
    private.subscribe_signed("private-room", None).await;
    presence.join("presence-room", "carol").await;
    let user_data = json!({"id": "dave"}).to_string();
    let auth = sign::sign_user(
        &AppKey::new(KEY).unwrap(),
        &AppSecret::new(SECRET).unwrap(),
        &signed_in.socket_id,
        &user_data,
    );
    signed_in
        .send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}))
        .await;
    signed_in.expect("pusher:signin_success").await;

    let err = public_only.expect("pusher:error").await;
    assert_eq!(err["data"]["code"], 4009);
    assert_eq!(public_only.closed().await, Closed(Some(4009)));
    // The others outlived the timeout (the public-only one was closed after it) and still answer.
    for ws in [&mut private, &mut presence, &mut signed_in] {
        ws.send(json!({"event": "pusher:ping", "data": {}})).await;
        ws.expect("pusher:pong").await;
    }
    b.stop().await;
}

#[actix_rt::test]
async fn a_failed_private_subscription_does_not_authorize() {
    let b = start(
        "",
        "authorized_connections = true\nauthorized_connection_timeout_secs = 1",
    )
    .await;
    let mut ws = Ws::connect(&b).await;
    ws.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-room", "auth": "app-key:00"}})).await;
    ws.expect("pusher:subscription_error").await;
    assert_eq!(ws.closed().await, Closed(Some(4009)));
    b.stop().await;
}

#[actix_rt::test]
async fn the_setting_is_off_by_default() {
    let b = start("", "").await;
    assert!(b
        .state
        .apps
        .all()
        .iter()
        .all(|a| a.authorize_within.is_none()));
    b.stop().await;
}
