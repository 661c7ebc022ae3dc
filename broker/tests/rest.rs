//! The REST routes and their signature check, against a whole broker in this process.

mod common;

use common::{start, Client, Ws, SECRET};
use protocol::client::ClientError;
use serde_json::{json, Value};

#[actix_rt::test]
async fn signatures_apps_and_bodies_are_checked() {
    let b = start("", "").await;
    let body = json!({"name": "e", "channel": "c", "data": "{}"}).to_string();
    let (ok, _) = b.signed("POST", "/apps/1/events", &[], &body, SECRET).await;
    assert_eq!(ok, 200);
    let (bad, why) = b
        .signed("POST", "/apps/1/events", &[], &body, "wrong-secret")
        .await;
    assert_eq!(bad, 401, "{why}");
    let (missing, _) = b.signed("POST", "/apps/9/events", &[], &body, SECRET).await;
    assert_eq!(missing, 404);
    let (malformed, _) = b.signed("POST", "/apps/1/events", &[], "{", SECRET).await;
    assert_eq!(malformed, 400);
    let too_many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let over = json!({"name": "e", "channels": too_many, "data": "{}"}).to_string();
    let (status, _) = b.signed("POST", "/apps/1/events", &[], &over, SECRET).await;
    assert_eq!(status, 400, "more channels than max_channels_per_trigger");
    b.stop().await;
}

#[actix_rt::test]
async fn channel_queries_answer_from_the_hub() {
    let b = start("", "").await;
    let mut a = Ws::connect(&b).await;
    a.subscribe("news").await;
    a.join("presence-lobby", "ann").await;
    let all = b.rest().channels(None, None).await.unwrap();
    let mut names: Vec<&String> = all.channels.keys().collect();
    names.sort();
    assert_eq!(names, ["news", "presence-lobby"]);
    let presence = b
        .rest()
        .channels(Some("presence-"), Some("user_count"))
        .await
        .unwrap();
    assert_eq!(presence.channels.len(), 1);
    let one = b
        .rest()
        .channel("news", Some("subscription_count"))
        .await
        .unwrap();
    let one: Value = serde_json::to_value(one).unwrap();
    assert_eq!(one["occupied"], true);
    assert_eq!(one["subscription_count"], 1);
    let users = b.rest().users("presence-lobby").await.unwrap();
    assert_eq!(
        serde_json::to_value(users).unwrap()["users"],
        json!([{"id": "ann"}])
    );
    match b.rest().users("news").await {
        Err(ClientError::Status { status: 400, .. }) => {}
        other => panic!("users of a non-presence channel: {other:?}"),
    }
    b.stop().await;
}

#[actix_rt::test]
async fn batches_are_all_or_nothing_and_terminate_closes_the_users_connections() {
    let b = start("", "").await;
    let mut a = Ws::connect(&b).await;
    a.subscribe("feed").await;
    let good = json!({"batch": [{"name": "one", "channel": "feed", "data": "1"}, {"name": "two", "channel": "feed", "data": "2"}]}).to_string();
    assert_eq!(
        b.signed("POST", "/apps/1/batch_events", &[], &good, SECRET)
            .await
            .0,
        200
    );
    a.expect("one").await;
    a.expect("two").await;
    let bad = json!({"batch": [{"name": "three", "channel": "feed", "data": "3"}, {"name": "four", "channel": "bad name!", "data": "4"}]}).to_string();
    assert_eq!(
        b.signed("POST", "/apps/1/batch_events", &[], &bad, SECRET)
            .await
            .0,
        400
    );
    a.quiet_for(200).await;

    // A signed-in user's connections are closed with 4009 by terminate_connections.
    let user_data = json!({"id": "u1"}).to_string();
    let auth = protocol::sign::sign_user(
        &protocol::AppKey::new(common::KEY).unwrap(),
        &protocol::AppSecret::new(SECRET).unwrap(),
        &a.socket_id,
        &user_data,
    );
    a.send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}))
        .await;
    a.expect("pusher:signin_success").await;
    assert_eq!(
        b.signed(
            "POST",
            "/apps/1/users/u1/terminate_connections",
            &[],
            "{}",
            SECRET
        )
        .await
        .0,
        200
    );
    assert_eq!(a.closed().await, common::Closed(Some(4009)));
    b.stop().await;
}
