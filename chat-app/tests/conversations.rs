//! Conversations with members, receipts per recipient, notices to users, and
//! who may do what: every rule checked at the route, on real PostgreSQL.

mod common;

use actix_web::{http::StatusCode, test};
use chat_app::store;
use common::{Browser, Env, FakeBroker};
use diesel::{sql_types::Text, QueryableByName, RunQueryDsl};
use protocol::rest::TriggerRequest;
use serde_json::{json, Value};

const PW: &str = "password-123";

fn data_of(t: &TriggerRequest) -> Value {
    serde_json::from_str(&t.data).expect("trigger data is JSON text")
}

fn on_channel<'a>(all: &'a [TriggerRequest], channel: &str) -> Vec<&'a TriggerRequest> {
    all.iter()
        .filter(|t| t.channel.as_deref() == Some(channel))
        .collect()
}

/// Triggers to users (`sendToUser`): `(event, sorted user channels, data)`.
fn user_notices(all: &[TriggerRequest]) -> Vec<(String, Vec<String>, Value)> {
    all.iter()
        .filter_map(|t| {
            let mut chans = t.channels.clone()?;
            assert!(
                chans.iter().all(|c| c.starts_with("#server-to-user-")),
                "{chans:?}"
            );
            chans.sort();
            Some((t.name.clone(), chans, data_of(t)))
        })
        .collect()
}

fn user_channel(id: i32) -> String {
    format!("#server-to-user-{id}")
}

struct Ids {
    alice: i32,
    bob: i32,
    carol: i32,
}

fn three_users(env: &Env) -> Ids {
    Ids {
        alice: env.add_user("alice", PW),
        bob: env.add_user("bob", PW),
        carol: env.add_user("carol", PW),
    }
}

/// Alice, bob and carol logged in, and alice's group "G" of the three: its id and channel.
async fn group_of_three<S, B>(app: &S) -> (Browser, Browser, Browser, i64, String)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let mut alice = Browser::login(app, "alice", PW).await;
    let bob = Browser::login(app, "bob", PW).await;
    let carol = Browser::login(app, "carol", PW).await;
    let g = alice
        .post_json(
            app,
            "/api/conversations",
            json!({"kind": "group", "title": "G", "usernames": ["bob", "carol"]}),
        )
        .await
        .json();
    let (gid, channel) = (
        g["id"].as_i64().unwrap(),
        g["channel"].as_str().unwrap().to_owned(),
    );
    (alice, bob, carol, gid, channel)
}

#[actix_rt::test]
async fn direct_and_group_conversations_with_their_rules() {
    let broker = FakeBroker::start().await;
    let mut env = Env::new(&broker.url);
    env.with_config(|c| c.group_max_members = 4);
    let ids = three_users(&env);
    env.add_user("dave", PW);
    env.add_user("erin", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let mut bob = Browser::login(&app, "bob", PW).await;
    let mut carol = Browser::login(&app, "carol", PW).await;

    // Everyone starts in the default conversation.
    let list = alice.get(&app, "/api/conversations").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        (
            list[0]["id"].as_i64(),
            list[0]["kind"].as_str(),
            list[0]["channel"].as_str()
        ),
        (Some(1), Some("everyone"), Some("private-a_channel"))
    );
    assert_eq!(list[0]["member_count"], 5);

    // A direct conversation, once per pair, whoever starts it.
    let r = alice
        .post_json(
            &app,
            "/api/conversations",
            json!({"kind": "direct", "username": "bob"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let direct = r.json();
    let did = direct["id"].as_i64().unwrap();
    assert_eq!(
        (
            direct["kind"].as_str(),
            direct["title"].as_str(),
            direct["member_count"].as_i64()
        ),
        (Some("direct"), Some("bob"), Some(2))
    );
    assert_eq!(direct["channel"], format!("private-conversation-{did}-0"));
    let again = bob
        .post_json(
            &app,
            "/api/conversations",
            json!({"kind": "direct", "username": "alice"}),
        )
        .await
        .json();
    assert_eq!(
        (again["id"].as_i64(), again["title"].as_str()),
        (Some(did), Some("alice"))
    );
    let notices = user_notices(&broker.recorded.all());
    assert_eq!(
        notices,
        vec![(
            "conversation_added".to_owned(),
            vec![user_channel(ids.bob)],
            json!({"conversation_id": did})
        )],
        "bob is told once"
    );

    // A group of three.
    let r = alice.post_json(&app, "/api/conversations", json!({"kind": "group", "title": " Trip <b>plans</b> ", "usernames": ["bob", "carol", "bob", "alice"]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let group = r.json();
    let gid = group["id"].as_i64().unwrap();
    assert_eq!(
        (
            group["title"].as_str(),
            group["member_count"].as_i64(),
            group["created_by"].as_i64()
        ),
        (Some("Trip <b>plans</b>"), Some(3), Some(ids.alice as i64))
    );
    let shown = carol
        .get(&app, &format!("/api/conversations/{gid}"))
        .await
        .json();
    let names: Vec<&str> = shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);

    // Carol sees the group and the default one, not alice and bob's direct conversation.
    let theirs: Vec<i64> = carol
        .get(&app, "/api/conversations")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(theirs.len(), 2);
    assert!(theirs.contains(&gid) && theirs.contains(&1) && !theirs.contains(&did));

    // Errors, each with a clear message.
    for (body, error) in [
        (
            json!({"kind": "direct", "username": "alice"}),
            "a direct conversation needs another person",
        ),
        (
            json!({"kind": "direct", "username": "nobody"}),
            "no user by that name",
        ),
        (
            json!({"kind": "group", "title": "", "usernames": ["bob"]}),
            "a group's name must be 1 to 80 characters, without control characters",
        ),
        (
            json!({"kind": "group", "title": "x".repeat(81), "usernames": ["bob"]}),
            "a group's name must be 1 to 80 characters, without control characters",
        ),
        (
            json!({"kind": "group", "title": "solo", "usernames": []}),
            "a group has 2 to 4 members, you included (this one would have 1)",
        ),
        (
            json!({"kind": "group", "title": "big", "usernames": ["bob", "carol", "dave", "erin"]}),
            "a group has 2 to 4 members, you included (this one would have 5)",
        ),
        (
            json!({"kind": "group", "title": "ghosts", "usernames": ["bob", "zed", "yan"]}),
            "no such users: yan, zed",
        ),
        (json!({"kind": "channel"}), "kind must be direct or group"),
    ] {
        let r = alice
            .post_json(&app, "/api/conversations", body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json()["error"], error, "{body}");
    }

    // The creator adds up to the limit, and no further.
    let r = alice
        .post_json(
            &app,
            &format!("/api/conversations/{gid}/members"),
            json!({"username": "dave"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, json!({"added": true}))
    );
    let r = alice
        .post_json(
            &app,
            &format!("/api/conversations/{gid}/members"),
            json!({"username": "dave"}),
        )
        .await;
    assert_eq!(
        r.json(),
        json!({"added": false}),
        "adding twice changes nothing"
    );
    let r = alice
        .post_json(
            &app,
            &format!("/api/conversations/{gid}/members"),
            json!({"username": "erin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "a group has at most 4 members");
    assert_eq!(
        store::conversations::count_members(&mut env.conn(), gid).unwrap(),
        4
    );

    // Newest activity first.
    bob.post_json(
        &app,
        &format!("/api/conversations/{did}/messages"),
        json!({"message": "hi"}),
    )
    .await;
    let order: Vec<i64> = alice
        .get(&app, "/api/conversations")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(order[0], did);
    broker.stop().await;
}

#[actix_rt::test]
async fn a_member_of_one_conversation_cannot_touch_another() {
    let broker = FakeBroker::start().await;
    let env = Env::new(&broker.url);
    three_users(&env);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let mut bob = Browser::login(&app, "bob", PW).await;
    let mut carol = Browser::login(&app, "carol", PW).await;

    // A: alice and bob. B: carol's group with bob, created by carol.
    let a = alice
        .post_json(
            &app,
            "/api/conversations",
            json!({"kind": "direct", "username": "bob"}),
        )
        .await
        .json();
    let (aid, a_channel) = (
        a["id"].as_i64().unwrap(),
        a["channel"].as_str().unwrap().to_owned(),
    );
    let b = carol
        .post_json(
            &app,
            "/api/conversations",
            json!({"kind": "group", "title": "B", "usernames": ["bob"]}),
        )
        .await
        .json();
    let bid = b["id"].as_i64().unwrap();
    let mid = alice
        .post_json(
            &app,
            &format!("/api/conversations/{aid}/messages"),
            json!({"message": "secret"}),
        )
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    broker.recorded.clear();

    // Carol, a member of B (and of the default conversation), against A.
    for uri in [
        format!("/api/conversations/{aid}"),
        format!("/api/conversations/{aid}/messages"),
        format!("/conversations/?conversation_id={aid}"),
        format!("/api/messages/{mid}/receipts"),
    ] {
        let r = carol.get(&app, &uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "read {uri}");
        assert!(!r.text().contains("secret"));
    }
    let r = carol
        .post_json(
            &app,
            &format!("/api/conversations/{aid}/messages"),
            json!({"message": "intrude"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "post");
    let r = carol
        .post_json(
            &app,
            "/conversation",
            json!({"message": "intrude", "conversation_id": aid}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "post through the original route"
    );
    let r = carol
        .post_form(
            &app,
            "/conversation",
            &[
                ("message", "intrude"),
                ("conversation_id", &aid.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "post as a form");
    for status in ["Delivered", "Seen"] {
        let r = carol
            .post_json(
                &app,
                &format!("/api/conversations/{aid}/receipts"),
                json!({"status": status, "ids": [mid]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "mark {status}");
    }
    for route in ["delivered", "seen"] {
        let r = carol
            .post_form(
                &app,
                &format!("/conversations/{mid}/{route}"),
                &[("socket_id", "1.2")],
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "mark through /conversations/{{id}}/{route}"
        );
    }
    // Even marking from her own conversation B, naming A's message.
    let r = carol
        .post_json(
            &app,
            &format!("/api/conversations/{bid}/receipts"),
            json!({"status": "Seen", "ids": [mid]}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["changed"].clone()),
        (StatusCode::OK, json!([]))
    );
    let r = carol
        .post_form(
            &app,
            "/pusher/auth",
            &[("socket_id", "1.2"), ("channel_name", &a_channel)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "subscribe");
    assert!(r.json().get("auth").is_none());
    let r = carol
        .post_json(
            &app,
            &format!("/api/conversations/{aid}/members"),
            json!({"username": "carol"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "join by adding herself");

    // Bob is in B but did not create it: he cannot manage its members.
    let r = bob
        .post_json(
            &app,
            &format!("/api/conversations/{bid}/members"),
            json!({"username": "alice"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.json()["error"],
        "only the group's creator can add or remove members"
    );
    let carol_id = store::find_user_by_name(&mut env.conn(), "carol")
        .unwrap()
        .unwrap()
        .id;
    assert_eq!(
        bob.delete(
            &app,
            &format!("/api/conversations/{bid}/members/{carol_id}")
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    // Direct conversations and the default one have no members to manage.
    let r = alice
        .post_json(
            &app,
            &format!("/api/conversations/{aid}/members"),
            json!({"username": "carol"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        alice
            .post_json(
                &app,
                "/api/conversations/1/members",
                json!({"username": "carol"})
            )
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // Nothing was stored or published by any of it, and the message is unmarked.
    assert!(
        broker.recorded.all().is_empty(),
        "{:?}",
        broker.recorded.all()
    );
    let page = alice
        .get(&app, &format!("/api/conversations/{aid}/messages"))
        .await
        .json();
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(
        (page[0]["delivered"].as_i64(), page[0]["seen"].as_i64()),
        (Some(0), Some(0))
    );

    // Bad ids are 404s too, not errors.
    for uri in [
        "/api/conversations/abc/messages",
        "/api/conversations/0/messages",
        "/api/conversations/-1",
        "/api/messages/x/receipts",
    ] {
        assert_eq!(
            alice.get(&app, uri).await.status,
            StatusCode::NOT_FOUND,
            "{uri}"
        );
    }

    // CSRF on every new state-changing route.
    for (uri, body) in [
        (
            "/api/conversations".to_owned(),
            json!({"kind": "direct", "username": "carol"}),
        ),
        (
            format!("/api/conversations/{aid}/messages"),
            json!({"message": "x"}),
        ),
        (
            format!("/api/conversations/{aid}/receipts"),
            json!({"status": "Seen", "ids": [mid]}),
        ),
        (
            format!("/api/conversations/{bid}/members"),
            json!({"username": "alice"}),
        ),
        ("/pusher/user-auth".to_owned(), json!({"socket_id": "1.2"})),
    ] {
        let r = bob
            .send(&app, test::TestRequest::post().uri(&uri).set_json(body))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri} without a token");
    }
    let r = carol
        .send(
            &app,
            test::TestRequest::delete()
                .uri(&format!("/api/conversations/{bid}/members/{carol_id}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "DELETE without a token");

    // And logged out, every route answers 401.
    let mut anon = Browser::default();
    anon.get(&app, "/login").await;
    for uri in [
        "/api/conversations",
        &format!("/api/conversations/{aid}"),
        &format!("/api/conversations/{aid}/messages"),
        "/api/users?q=a",
        &format!("/api/messages/{mid}/receipts"),
    ] {
        assert_eq!(
            anon.get(&app, uri).await.status,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
    }
    for uri in [
        "/api/conversations".to_owned(),
        format!("/api/conversations/{aid}/messages"),
        format!("/api/conversations/{aid}/receipts"),
        format!("/api/conversations/{bid}/members"),
        "/pusher/user-auth".to_owned(),
    ] {
        assert_eq!(
            anon.post_json(&app, &uri, json!({})).await.status,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
    }
    assert_eq!(
        anon.delete(
            &app,
            &format!("/api/conversations/{bid}/members/{carol_id}")
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    broker.stop().await;
}

#[actix_rt::test]
async fn a_removed_member_is_cut_off_by_a_new_channel() {
    let broker = FakeBroker::start().await;
    let env = Env::new(&broker.url);
    let ids = three_users(&env);
    let app = test::init_service(env.app()).await;
    let (mut alice, mut bob, mut carol, gid, old) = group_of_three(&app).await;
    for who in [&mut bob, &mut carol] {
        assert_eq!(
            who.post_form(
                &app,
                "/pusher/auth",
                &[("socket_id", "1.2"), ("channel_name", &old)]
            )
            .await
            .status,
            StatusCode::OK
        );
    }
    broker.recorded.clear();

    let r = alice
        .delete(
            &app,
            &format!("/api/conversations/{gid}/members/{}", ids.carol),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let new = format!("private-conversation-{gid}-1");
    assert_eq!(r.json(), json!({"removed": true, "channel": new}));

    // Carol may subscribe to neither name; bob only to the new one.
    for ch in [&old, &new] {
        assert_eq!(
            carol
                .post_form(
                    &app,
                    "/pusher/auth",
                    &[("socket_id", "1.2"), ("channel_name", ch)]
                )
                .await
                .status,
            StatusCode::FORBIDDEN,
            "{ch}"
        );
    }
    assert_eq!(
        bob.post_form(
            &app,
            "/pusher/auth",
            &[("socket_id", "1.2"), ("channel_name", &old)]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        bob.post_form(
            &app,
            "/pusher/auth",
            &[("socket_id", "1.2"), ("channel_name", &new)]
        )
        .await
        .status,
        StatusCode::OK
    );

    // Those who stay are told the new channel; carol is told she is out.
    let notices = user_notices(&broker.recorded.all());
    assert_eq!(
        notices,
        vec![
            (
                "members_changed".to_owned(),
                vec![user_channel(ids.alice), user_channel(ids.bob)],
                json!({"conversation_id": gid, "channel": new})
            ),
            (
                "conversation_removed".to_owned(),
                vec![user_channel(ids.carol)],
                json!({"conversation_id": gid})
            ),
        ]
    );
    broker.recorded.clear();

    // What is said next goes on the new channel only, and no notice reaches carol.
    alice
        .post_json(
            &app,
            &format!("/api/conversations/{gid}/messages"),
            json!({"message": "after"}),
        )
        .await;
    let all = broker.recorded.all();
    assert_eq!(on_channel(&all, &new).len(), 1);
    assert!(on_channel(&all, &old).is_empty());
    assert_eq!(
        user_notices(&all)
            .into_iter()
            .map(|n| n.1)
            .collect::<Vec<_>>(),
        vec![vec![user_channel(ids.bob)]]
    );
    assert_eq!(
        carol
            .get(&app, &format!("/api/conversations/{gid}/messages"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Errors: below two members, not a member, the creator themself.
    let r = alice
        .delete(
            &app,
            &format!("/api/conversations/{gid}/members/{}", ids.bob),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("a group has at least 2 members")
        )
    );
    assert_eq!(
        store::conversations::count_members(&mut env.conn(), gid).unwrap(),
        2,
        "nothing changed"
    );
    assert_eq!(
        alice
            .delete(
                &app,
                &format!("/api/conversations/{gid}/members/{}", ids.carol)
            )
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        alice
            .delete(
                &app,
                &format!("/api/conversations/{gid}/members/{}", ids.alice)
            )
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // Added back, carol reads again, but messages from while she was out are not hers to mark.
    alice
        .post_json(
            &app,
            &format!("/api/conversations/{gid}/members"),
            json!({"username": "carol"}),
        )
        .await;
    let page = carol
        .get(&app, &format!("/api/conversations/{gid}/messages"))
        .await
        .json();
    let after = page
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["message"] == "after")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = carol
        .post_json(
            &app,
            &format!("/api/conversations/{gid}/receipts"),
            json!({"status": "Seen", "ids": [after]}),
        )
        .await;
    assert_eq!(r.json()["changed"], json!([]));
    broker.stop().await;
}

#[actix_rt::test]
async fn receipts_are_kept_per_recipient_and_batched() {
    let broker = FakeBroker::start().await;
    let env = Env::new(&broker.url);
    let ids = three_users(&env);
    let app = test::init_service(env.app()).await;
    let (mut alice, mut bob, mut carol, gid, channel) = group_of_three(&app).await;
    broker.recorded.clear();

    // Three messages while bob and carol are away: each published once on the
    // group's channel, and each announced to the two of them (sendToUser).
    let mut mids = Vec::new();
    for text in ["one", "two", "three"] {
        let r = alice
            .post_json(
                &app,
                &format!("/api/conversations/{gid}/messages"),
                json!({"message": text}),
            )
            .await
            .json();
        assert_eq!(
            (
                r["status"].as_str(),
                r["recipients"].as_i64(),
                r["delivered"].as_i64()
            ),
            (Some("Sent"), Some(2), Some(0))
        );
        mids.push(r["id"].as_i64().unwrap());
    }
    let all = broker.recorded.all();
    assert_eq!(
        on_channel(&all, &channel)
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["an_event"; 3]
    );
    let notices = user_notices(&all);
    assert_eq!(notices.len(), 3);
    for ((event, to, data), (mid, text)) in
        notices.iter().zip(mids.iter().zip(["one", "two", "three"]))
    {
        assert_eq!(
            (event.as_str(), to),
            (
                "new_message",
                &vec![user_channel(ids.bob), user_channel(ids.carol)]
            )
        );
        assert_eq!(
            (
                data["conversation_id"].as_i64(),
                data["id"].as_i64(),
                data["name"].as_str(),
                data["message"].as_str()
            ),
            (Some(gid), Some(*mid), Some("alice"), Some(text))
        );
    }

    // Unread counts, before anyone looked.
    let unread = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == gid)
            .unwrap()["unread"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(unread(bob.get(&app, "/api/conversations").await.json()), 3);
    assert_eq!(
        unread(alice.get(&app, "/api/conversations").await.json()),
        0,
        "my own messages are not unread"
    );
    // The preview says how far I acknowledged the last message, so that a page
    // showing it can report it Delivered; my own last message has no such field.
    let preview = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == gid)
            .unwrap()["last_message"]
            .clone()
    };
    let bobs = preview(bob.get(&app, "/api/conversations").await.json());
    assert_eq!(
        (bobs["id"].as_i64(), bobs["my_status"].as_str()),
        (Some(mids[2]), Some("Sent"))
    );
    let alices = preview(alice.get(&app, "/api/conversations").await.json());
    assert_eq!(alices["id"].as_i64(), Some(mids[2]));
    assert!(alices.get("my_status").is_none(), "{alices}");
    broker.recorded.clear();

    // Bob comes back: one request marks all three delivered; the sender hears one event.
    let r = bob
        .post_json(
            &app,
            &format!("/api/conversations/{gid}/receipts"),
            json!({"status": "Delivered", "ids": mids, "socket_id": "7.8"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({"changed": mids, "broadcast": true}));
    let all = broker.recorded.all();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (
            all[0].name.as_str(),
            all[0].channel.as_deref(),
            all[0].socket_id.as_deref()
        ),
        ("receipts", Some(channel.as_str()), Some("7.8"))
    );
    let updates = data_of(&all[0]);
    assert_eq!(updates["conversation_id"], gid);
    assert_eq!(
        updates["updates"],
        json!(mids
            .iter()
            .map(
                |id| json!({"id": id, "status": "Sent", "recipients": 2, "delivered": 1, "seen": 0})
            )
            .collect::<Vec<_>>())
    );
    // Again: nothing changes, nothing is published.
    broker.recorded.clear();
    let r = bob
        .post_json(
            &app,
            &format!("/api/conversations/{gid}/receipts"),
            json!({"status": "Delivered", "ids": mids}),
        )
        .await;
    assert_eq!(r.json()["changed"], json!([]));
    assert!(broker.recorded.all().is_empty());

    // Carol sees the first; bob sees all three.
    carol
        .post_json(
            &app,
            &format!("/api/conversations/{gid}/receipts"),
            json!({"status": "Seen", "ids": [mids[0]]}),
        )
        .await;
    bob.post_json(
        &app,
        &format!("/api/conversations/{gid}/receipts"),
        json!({"status": "Seen", "ids": mids}),
    )
    .await;
    let page = alice
        .get(&app, &format!("/api/conversations/{gid}/messages"))
        .await
        .json();
    let counts: Vec<_> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["status"].as_str().unwrap().to_owned(),
                m["delivered"].as_i64().unwrap(),
                m["seen"].as_i64().unwrap(),
            )
        })
        .collect();
    // One: both have seen it. Two and three: bob has, carol not even received (so still Sent as a whole).
    assert_eq!(
        counts,
        [
            ("Seen".to_owned(), 2, 2),
            ("Sent".to_owned(), 1, 1),
            ("Sent".to_owned(), 1, 1)
        ]
    );
    assert!(
        page[0].get("my_status").is_none(),
        "the sender has no receipt of their own"
    );

    // Each reader sees their own receipts; the names are listed per recipient.
    let mine: Vec<_> = carol
        .get(&app, &format!("/api/conversations/{gid}/messages"))
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["my_status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(mine, ["Seen", "Sent", "Sent"]);
    let names = alice
        .get(&app, &format!("/api/messages/{}/receipts", mids[1]))
        .await
        .json();
    assert_eq!(names.as_array().unwrap().len(), 2);
    assert_eq!(
        (names[0]["name"].as_str(), names[0]["seen_at"].is_string()),
        (Some("bob"), true)
    );
    assert_eq!(
        (
            names[1]["name"].as_str(),
            names[1]["delivered_at"].is_null()
        ),
        (Some("carol"), true)
    );

    // Unread now counts what came after the newest message each has seen.
    assert_eq!(unread(bob.get(&app, "/api/conversations").await.json()), 0);
    assert_eq!(
        unread(carol.get(&app, "/api/conversations").await.json()),
        2
    );
    assert_eq!(
        preview(bob.get(&app, "/api/conversations").await.json())["my_status"],
        "Seen"
    );
    assert_eq!(
        preview(carol.get(&app, "/api/conversations").await.json())["my_status"],
        "Sent"
    );

    // The sender's own receipts change nothing; bad requests are refused.
    let r = alice
        .post_json(
            &app,
            &format!("/api/conversations/{gid}/receipts"),
            json!({"status": "Seen", "ids": mids}),
        )
        .await;
    assert_eq!(r.json()["changed"], json!([]));
    let too_many: Vec<i64> = (1..=201).collect();
    for (body, error) in [
        (
            json!({"status": "Sent", "ids": [1]}),
            "status must be Delivered or Seen",
        ),
        (json!({"ids": [1]}), "status must be Delivered or Seen"),
        (
            json!({"status": "Seen", "ids": []}),
            "ids must list 1 to 200 message ids",
        ),
        (
            json!({"status": "Seen", "ids": too_many}),
            "ids must list 1 to 200 message ids",
        ),
        (
            json!({"status": "Seen", "ids": [1], "socket_id": "nope"}),
            "socket_id must look like 1234.5678",
        ),
    ] {
        let r = bob
            .post_json(
                &app,
                &format!("/api/conversations/{gid}/receipts"),
                body.clone(),
            )
            .await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(error)),
            "{body}"
        );
    }
    broker.stop().await;
}

#[actix_rt::test]
async fn signin_is_signed_for_the_logged_in_user() {
    let env = Env::new(&common::unreachable_url());
    let id = env.add_user("alice", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let r = alice
        .post_form(&app, "/pusher/user-auth", &[("socket_id", "123.456")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    let user_data = body["user_data"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(user_data).unwrap(),
        json!({"id": id.to_string(), "user_info": {"name": "alice"}})
    );
    let key = protocol::AppKey::new("app-key").unwrap();
    let secret = protocol::AppSecret::new("app-secret").unwrap();
    protocol::sign::verify_user(
        &key,
        &secret,
        "123.456".parse().unwrap(),
        user_data,
        body["auth"].as_str().unwrap(),
    )
    .expect("valid sign-in signature");
    let r = alice
        .post_form(&app, "/pusher/user-auth", &[("socket_id", "bogus")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[actix_rt::test]
async fn user_search_finds_others_by_prefix() {
    let env = Env::new(&common::unreachable_url());
    for name in ["alice", "alfred", "Alma", "bob"] {
        env.add_user(name, PW);
    }
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let names = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(alice.get(&app, "/api/users?q=al").await.json()),
        ["alfred", "Alma"],
        "not me; any case"
    );
    assert_eq!(
        names(alice.get(&app, "/api/users?q=%25").await.json()),
        Vec::<String>::new(),
        "wildcards are literal"
    );
    assert_eq!(
        alice
            .get(&app, &format!("/api/users?q={}", "a".repeat(40)))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[actix_rt::test]
async fn scroll_back_pages_by_cursor_on_an_index_in_a_long_conversation() {
    let env = Env::new(&common::unreachable_url());
    let uid = env.add_user("alice", PW);
    env.add_user("bob", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let mut bob = Browser::login(&app, "bob", PW).await;
    let long = alice
        .post_json(
            &app,
            "/api/conversations",
            json!({"kind": "direct", "username": "bob"}),
        )
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let short = alice
        .post_json(
            &app,
            "/api/conversations",
            json!({"kind": "group", "title": "short", "usernames": ["bob"]}),
        )
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let mut conn = env.conn();
    diesel::sql_query(format!("INSERT INTO messages (sender_id, conversation_id, message) SELECT {uid}, {long}, 'm' || g FROM generate_series(1, 100000) g")).execute(&mut conn).unwrap();
    diesel::sql_query(format!("INSERT INTO messages (sender_id, conversation_id, message) SELECT {uid}, {short}, 's' || g FROM generate_series(1, 10) g")).execute(&mut conn).unwrap();
    diesel::sql_query("ANALYZE").execute(&mut conn).unwrap();

    // The newest page, then each older page from the oldest id seen: no gaps, no repeats.
    let texts = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["message"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let first = bob
        .get(
            &app,
            &format!("/api/conversations/{long}/messages?limit=50"),
        )
        .await
        .json();
    assert_eq!(texts(&first).first().map(String::as_str), Some("m99951"));
    assert_eq!(texts(&first).last().map(String::as_str), Some("m100000"));
    let cursor = first[0]["id"].as_i64().unwrap();
    let second = bob
        .get(
            &app,
            &format!("/api/conversations/{long}/messages?limit=50&before={cursor}"),
        )
        .await
        .json();
    assert_eq!(
        (texts(&second)[0].as_str(), texts(&second)[49].as_str()),
        ("m99901", "m99950")
    );
    assert_eq!(
        texts(
            &bob.get(
                &app,
                &format!("/api/conversations/{short}/messages?limit=50")
            )
            .await
            .json()
        )
        .len(),
        10
    );

    // How it is found: an index walked backwards from the cursor and stopped by
    // the limit, never a scan or a sort of the conversation; a short conversation
    // among many messages is found by the (conversation_id, id) index. (A plan,
    // not a timing: timings are for benchmarks.)
    for (cid, before) in [(long, i64::MAX), (long, cursor), (short, i64::MAX)] {
        let plan: Vec<PlanLine> =
            diesel::sql_query(format!("EXPLAIN {}", store::messages::PAGE_SQL))
                .bind::<diesel::sql_types::Integer, _>(uid)
                .bind::<diesel::sql_types::BigInt, _>(cid)
                .bind::<diesel::sql_types::BigInt, _>(before)
                .bind::<diesel::sql_types::BigInt, _>(50i64)
                .load(&mut conn)
                .unwrap();
        let plan: Vec<String> = plan.into_iter().map(|p| p.line).collect();
        let text = plan.join("\n");
        assert!(plan[0].starts_with("Limit"), "{text}");
        assert!(
            text.contains("Index Scan Backward using messages_"),
            "{text}"
        );
        if cid == short {
            assert!(text.contains("messages_conversation_idx"), "{text}");
        }
        assert!(!text.contains("Seq Scan on messages"), "{text}");
        assert!(
            !text.contains("Sort"),
            "rows come in index order, not sorted afterwards:\n{text}"
        );
    }
}
