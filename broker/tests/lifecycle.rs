//! What joining and leaving cause, decided in one place: member events, the
//! debounced lifecycle webhooks, watchlist notices, and shutdown's 4200.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{web, App, HttpResponse, HttpServer};
use common::{start, Client, Closed, Ws};
use serde_json::{json, Value};

/// A webhook receiver in this process: the names of the events it got, in order.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().route(
            "/",
            web::post().to(move |body: web::Json<Value>| {
                let sink = sink.clone();
                async move {
                    for e in body["events"].as_array().unwrap() {
                        sink.lock()
                            .unwrap()
                            .push(e["name"].as_str().unwrap().to_owned());
                    }
                    HttpResponse::Ok().finish()
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    (format!("http://127.0.0.1:{port}/"), got)
}

fn names(got: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    got.lock().unwrap().clone()
}

#[actix_rt::test]
async fn presence_webhooks_are_debounced_and_a_reload_sends_none() {
    let (url, got) = receiver().await;
    let b = start(
        "[webhooks]\nbatch_wait_ms = 5\ndebounce_ms = 400",
        &format!("webhooks = [{{ url = \"{url}\" }}]"),
    )
    .await;
    let mut a = Ws::connect(&b).await;
    a.join("presence-x", "ann").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(names(&got), ["channel_occupied", "member_added"]);
    // A reload: leave and come back within the window.
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = Ws::connect(&b).await;
    again.join("presence-x", "ann").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        names(&got),
        ["channel_occupied", "member_added"],
        "a reload sends nothing"
    );
    // A real leave: both after the window, member first.
    drop(again);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(names(&got).len(), 2, "nothing before the window");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        names(&got),
        [
            "channel_occupied",
            "member_added",
            "member_removed",
            "channel_vacated"
        ]
    );
    b.stop().await;
}

#[actix_rt::test]
async fn a_users_last_connection_leaving_tells_members_and_watchers() {
    let b = start("", "").await;
    let mut watcher = Ws::connect(&b).await;
    let user_data = json!({"id": "w", "watchlist": ["ann"]}).to_string();
    let key = protocol::AppKey::new(common::KEY).unwrap();
    let secret = protocol::AppSecret::new(common::SECRET).unwrap();
    let auth = protocol::sign::sign_user(&key, &secret, &watcher.socket_id, &user_data);
    watcher
        .send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}))
        .await;
    watcher.expect("pusher:signin_success").await;
    watcher.join("presence-y", "w").await;

    let mut ann1 = Ws::connect(&b).await;
    let mut ann2 = Ws::connect(&b).await;
    for ws in [&mut ann1, &mut ann2] {
        let ud = json!({"id": "ann"}).to_string();
        let auth = protocol::sign::sign_user(&key, &secret, &ws.socket_id, &ud);
        ws.send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": ud}}))
            .await;
        ws.expect("pusher:signin_success").await;
        ws.join("presence-y", "ann").await;
    }
    let online = watcher.expect("pusher_internal:watchlist_events").await;
    assert!(online.to_string().contains("online"));
    watcher.expect("pusher_internal:member_added").await;
    drop(ann1);
    watcher.quiet_for(300).await; // ann still has a connection
    drop(ann2);
    // Both, in either order: the user's channels are left one after the other.
    let (mut removed, mut offline) = (false, false);
    while !(removed && offline) {
        let m = watcher.next().await.expect("open");
        removed |= m["event"] == "pusher_internal:member_removed" && m.to_string().contains("ann");
        offline |=
            m["event"] == "pusher_internal:watchlist_events" && m.to_string().contains("offline");
    }
    b.stop().await;
}

#[actix_rt::test]
async fn shutdown_tells_every_client_to_reconnect() {
    let b = start("shutdown_timeout = 3", "").await;
    let mut a = Ws::connect(&b).await;
    let mut c = Ws::connect(&b).await;
    a.subscribe("x").await;
    let stopping = actix_rt::spawn(b.stop());
    for ws in [&mut a, &mut c] {
        let err = ws.expect("pusher:error").await;
        assert_eq!(err["data"]["code"], 4200);
        assert_eq!(ws.closed().await, Closed(Some(4200)));
    }
    stopping.await.unwrap();
}
