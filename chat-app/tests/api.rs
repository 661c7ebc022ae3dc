//! Every route against a real PostgreSQL database (a fresh `chat_test_*` per test)
//! and a stand-in broker that verifies signatures and records triggers.

mod common;

use actix_web::{http::StatusCode, test};
use chat_app::{accounts, store};
use common::{Browser, Env, FakeBroker};
use diesel::RunQueryDsl;
use protocol::sign::verify_channel;
use serde_json::{json, Value};

const PW: &str = "password-123";

fn data_of(t: &protocol::rest::TriggerRequest) -> Value {
    serde_json::from_str(&t.data).expect("trigger data is JSON text")
}

#[actix_rt::test]
async fn anonymous_visitors_are_sent_to_login_and_apis_refuse_them() {
    let env = Env::new(&common::unreachable_url());
    let app = test::init_service(env.app()).await;
    let mut anon = Browser::default();

    let r = anon.get(&app, "/").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.location().as_deref(), Some("/login"));

    for uri in ["/conversations/", "/conversations"] {
        let r = anon.get(&app, uri).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(r.json()["error"], "login required");
    }
    for uri in [
        "/conversation",
        "/conversations/1/delivered",
        "/conversations/1/seen",
        "/pusher/auth",
    ] {
        // Even with a valid token for this (anonymous) session.
        anon.get(&app, "/login").await;
        let r = anon
            .post_form(
                &app,
                uri,
                &[
                    ("message", "hi"),
                    ("socket_id", "1.2"),
                    ("channel_name", "presence-chat"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    // The chat's live stream is private: nothing signs it for an anonymous page.
    for channel in ["private-a_channel", "private-typing", "presence-chat"] {
        let r = anon
            .post_form(
                &app,
                "/pusher/auth",
                &[("socket_id", "1.2"), ("channel_name", channel)],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{channel}");
        assert!(r.json().get("auth").is_none());
    }
    let r = anon.get(&app, "/logout").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location().as_deref(), Some("/login"));
}

#[actix_rt::test]
async fn pages_assets_health_and_headers() {
    let env = Env::new(&common::unreachable_url());
    let app = test::init_service(env.app()).await;
    let mut b = Browser::default();

    let r = b.get(&app, "/health").await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok"));

    let r = b.get(&app, "/login").await;
    assert_eq!(r.status, StatusCode::OK);
    let csp = r
        .header("content-security-policy")
        .expect("pages carry a CSP");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("ws://127.0.0.1:"),
        "{csp}"
    );
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    let cookie = b
        .set_cookie_headers
        .iter()
        .find(|c| c.starts_with("chat_session="))
        .expect("session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "tests run on plain http: {cookie}"
    );

    let r = b.get(&app, "/signup").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("action=\"/signup\""));

    let r = b.get(&app, "/static/chat.js").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("textContent"));
    assert_eq!(b.get(&app, "/static/chat.css").await.status, StatusCode::OK);
    let r = b.get(&app, "/static/vendor/pusher.min.js").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "pusher-js is served from node_modules (run npm ci)"
    );
    assert!(r.text().contains("Pusher"));
    // The recovery helper, built into the binary: the page imports it as an ES module.
    let r = b.get(&app, "/static/vendor/pusher-recovery.js").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("export function enableRecovery"));
    assert_eq!(
        r.headers.get("content-type").map(|v| v.to_str().unwrap()),
        Some("text/javascript; charset=utf-8"),
        "a module script needs a JavaScript MIME type"
    );

    for uri in [
        "/static/..%2FCargo.toml",
        "/static/.hidden",
        "/static/missing.js",
        "/nope",
    ] {
        assert_eq!(
            b.get(&app, uri).await.status,
            StatusCode::NOT_FOUND,
            "{uri}"
        );
    }
}

#[actix_rt::test]
async fn secure_cookies_when_configured() {
    let mut env = Env::new(&common::unreachable_url());
    env.with_config(|c| c.cookie_secure = true);
    let app = test::init_service(env.app()).await;
    let mut b = Browser::default();
    b.get(&app, "/login").await;
    let cookie = b
        .set_cookie_headers
        .iter()
        .find(|c| c.starts_with("chat_session="))
        .expect("session cookie");
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[actix_rt::test]
async fn login_logout_and_their_errors() {
    let env = Env::new(&common::unreachable_url());
    env.add_user("alice", PW);
    let app = test::init_service(env.app()).await;

    // Wrong password, unknown user, and missing fields: the form again, with a clear error.
    let mut b = Browser::default();
    b.get(&app, "/login").await;
    for (user, pw, status) in [
        ("alice", "wrong-password", StatusCode::UNAUTHORIZED),
        ("mallory", PW, StatusCode::UNAUTHORIZED),
        ("alice", "", StatusCode::BAD_REQUEST),
    ] {
        let token = b.csrf.clone().unwrap();
        let r = b
            .send(
                &app,
                test::TestRequest::post().uri("/login").set_form([
                    ("username", user),
                    ("password", pw),
                    ("csrf_token", &token),
                ]),
            )
            .await;
        assert_eq!(r.status, status, "{user}/{pw}");
        let page = r.text();
        assert!(page.contains("id=\"form-error\""), "{page}");
        if status == StatusCode::UNAUTHORIZED {
            assert!(page.contains("Invalid username or password."));
        }
        assert_eq!(
            b.get(&app, "/").await.status,
            StatusCode::FOUND,
            "still logged out"
        );
    }

    // A login form posted without its token is refused.
    let mut fresh = Browser::default();
    fresh.get(&app, "/login").await;
    let r = fresh
        .post_form_no_csrf(&app, "/login", &[("username", "alice"), ("password", PW)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(fresh.get(&app, "/").await.status, StatusCode::FOUND);

    // A good login; the chat page greets the user, and /login now sends them to the chat.
    let mut alice = Browser::login(&app, "alice", PW).await;
    let page = alice.get(&app, "/").await.text();
    assert!(page.contains("<strong id=\"me-name\">alice</strong>"));
    assert!(page.contains("name=\"pusher-key\" content=\"app-key\""));
    let r = alice.get(&app, "/login").await;
    assert_eq!(
        (r.status, r.location().as_deref()),
        (StatusCode::SEE_OTHER, Some("/"))
    );

    // Logout needs the token; the confirmation page offers it.
    let r = alice.post_form_no_csrf(&app, "/logout", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        alice.get(&app, "/").await.status,
        StatusCode::OK,
        "still logged in"
    );
    let r = alice.get(&app, "/logout").await;
    assert_eq!(r.status, StatusCode::OK);
    let token = alice.csrf.clone().unwrap();
    let r = alice
        .send(
            &app,
            test::TestRequest::post()
                .uri("/logout")
                .set_form([("csrf_token", token.as_str())]),
        )
        .await;
    assert_eq!(
        (r.status, r.location().as_deref()),
        (StatusCode::SEE_OTHER, Some("/login"))
    );
    assert_eq!(alice.get(&app, "/").await.status, StatusCode::FOUND);
}

#[actix_rt::test]
async fn a_token_from_before_login_is_useless_after_it() {
    let env = Env::new(&common::unreachable_url());
    env.add_user("alice", PW);
    let app = test::init_service(env.app()).await;
    let mut b = Browser::default();
    b.get(&app, "/login").await;
    let before = b.csrf.clone().unwrap();
    let r = b
        .send(
            &app,
            test::TestRequest::post().uri("/login").set_form([
                ("username", "alice"),
                ("password", PW),
                ("csrf_token", &before),
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = b
        .send(
            &app,
            test::TestRequest::post()
                .uri("/conversation")
                .insert_header(("X-CSRF-Token", before.clone()))
                .set_form([("message", "hi")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    b.get(&app, "/").await;
    assert_ne!(b.csrf.as_deref(), Some(before.as_str()));
    assert_eq!(
        b.post_form(&app, "/conversation", &[("message", "hi")])
            .await
            .status,
        StatusCode::OK
    );
}

#[actix_rt::test]
async fn signup_creates_unique_accounts() {
    let env = Env::new(&common::unreachable_url());
    env.add_user("taken", PW);
    let app = test::init_service(env.app()).await;
    let mut b = Browser::default();
    b.get(&app, "/signup").await;

    let r = b
        .post_form_no_csrf(&app, "/signup", &[("username", "newbie"), ("password", PW)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    for (user, pw, status, error) in [
        ("taken", PW, StatusCode::CONFLICT, "That username is taken."),
        ("bad name", PW, StatusCode::BAD_REQUEST, "Username must be"),
        ("<b>x</b>", PW, StatusCode::BAD_REQUEST, "Username must be"),
        (
            "newbie",
            "short",
            StatusCode::BAD_REQUEST,
            "Password must be at least 8 characters.",
        ),
    ] {
        let r = b
            .post_form(
                &app,
                "/signup",
                &[
                    ("username", user),
                    ("password", pw),
                    ("csrf_token", "ignored-header-wins"),
                ],
            )
            .await;
        assert_eq!(r.status, status, "{user}");
        let page = r.text();
        assert!(page.contains(error), "{page}");
        assert!(
            !page.contains("<b>x</b>"),
            "the rejected name is shown escaped"
        );
    }

    let r = b
        .post_form(&app, "/signup", &[("username", "newbie"), ("password", PW)])
        .await;
    assert_eq!(
        (r.status, r.location().as_deref()),
        (StatusCode::SEE_OTHER, Some("/"))
    );
    assert_eq!(
        b.get(&app, "/").await.status,
        StatusCode::OK,
        "signed up and logged in"
    );
    let stored = store::find_user_by_name(&mut env.conn(), "newbie")
        .unwrap()
        .unwrap();
    assert!(
        stored.password_hash.starts_with("$argon2id$"),
        "passwords are stored as argon2 hashes"
    );
    Browser::login(&app, "newbie", PW).await;
}

#[actix_rt::test]
async fn sending_stores_triggers_and_answers_the_message() {
    let broker = FakeBroker::start().await;
    let env = Env::new(&broker.url);
    env.add_user("alice", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;

    // Form-encoded, as the original page sent it.
    let r = alice
        .post_form(&app, "/conversation", &[("message", "hello there")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = r.json();
    assert_eq!(sent["name"], "alice");
    assert_eq!(sent["status"], "Sent");
    assert_eq!(sent["message"], "hello there");
    assert_eq!(sent["broadcast"], true);
    let id = sent["id"].as_i64().unwrap();
    let created = sent["created_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );

    let triggers = broker.recorded.all();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].name, "an_event");
    assert_eq!(triggers[0].channel.as_deref(), Some("private-a_channel"));
    assert_eq!(triggers[0].socket_id, None);
    let seed_shape = |v: &Value| json!({"name": v["name"], "status": v["status"], "message": v["message"], "id": v["id"], "created_at": v["created_at"]});
    // The original app's fields, as it sent them, plus receipts per recipient (nobody else yet).
    let data = data_of(&triggers[0]);
    assert_eq!(
        seed_shape(&data),
        json!({"name": "alice", "status": "Sent", "message": "hello there", "id": id, "created_at": created})
    );
    assert_eq!(
        (
            data["conversation_id"].as_i64(),
            data["recipients"].as_i64(),
            data["delivered"].as_i64()
        ),
        (Some(1), Some(0), Some(0))
    );

    // JSON works too, and the form field can carry the token instead of the header.
    let r = alice
        .post_json(&app, "/conversation", json!({"message": "second"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let token = alice.csrf.clone().unwrap();
    let r = alice
        .send(
            &app,
            test::TestRequest::post()
                .uri("/conversation")
                .set_form([("message", "third"), ("csrf_token", &token)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let list = alice.get(&app, "/conversations/").await.json();
    let texts: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["hello there", "second", "third"], "oldest first");
    assert_eq!(
        seed_shape(&list[0]),
        json!({"name": "alice", "status": "Sent", "message": "hello there", "id": id, "created_at": created})
    );
    assert_eq!(broker.recorded.all().len(), 3);
    broker.stop().await;
}

#[actix_rt::test]
async fn csrf_is_required_for_every_state_change() {
    let broker = FakeBroker::start().await;
    let env = Env::new(&broker.url);
    env.add_user("alice", PW);
    let bob_id = env.add_user("bob", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let bob_user = store::find_user(&mut env.conn(), bob_id).unwrap().unwrap();
    let id = store::messages::insert(&mut env.conn(), &bob_user, 1, "from bob")
        .unwrap()
        .0
        .id;
    broker.recorded.clear();

    let routes = [
        "/conversation".to_owned(),
        format!("/conversations/{id}/delivered"),
        format!("/conversations/{id}/seen"),
        "/pusher/auth".to_owned(),
        "/logout".to_owned(),
    ];
    let fields = [
        ("message", "sneaky"),
        ("socket_id", "1.2"),
        ("channel_name", "presence-chat"),
    ];
    for uri in &routes {
        let r = alice.post_form_no_csrf(&app, uri, &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri} without a token");
        assert_eq!(r.json()["error"], "missing or invalid CSRF token");
        let r = alice
            .send(
                &app,
                test::TestRequest::post()
                    .uri(uri)
                    .insert_header(("X-CSRF-Token", "0".repeat(64)))
                    .set_form(fields),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri} with a wrong token");
    }
    // Nothing happened.
    let list = alice.get(&app, "/conversations/").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["status"], "Sent");
    assert!(broker.recorded.all().is_empty());
    assert_eq!(
        alice.get(&app, "/").await.status,
        StatusCode::OK,
        "still logged in"
    );
    broker.stop().await;
}

#[actix_rt::test]
async fn invalid_messages_get_400_and_nothing_is_stored() {
    let broker = FakeBroker::start().await;
    let env = Env::new(&broker.url);
    env.add_user("alice", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;

    let too_long = "x".repeat(226);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "message is required"),
        (vec![("message", "")], "message must not be empty"),
        (vec![("message", "  \n\t ")], "message must not be empty"),
        (
            vec![("message", &too_long)],
            "message must be at most 225 characters (it has 226)",
        ),
        (
            vec![("message", "nul\u{0}byte")],
            "message must not contain control characters",
        ),
    ];
    for (fields, error) in cases {
        let r = alice.post_form(&app, "/conversation", &fields).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{fields:?}");
        assert_eq!(r.json()["error"], error);
    }
    let r = alice
        .post_json(&app, "/conversation", json!({"message": 42}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid JSON body"));
    let t = alice.csrf.clone().unwrap();
    let r = alice
        .send(
            &app,
            test::TestRequest::post()
                .uri("/conversation")
                .insert_header(("X-CSRF-Token", t.clone()))
                .insert_header(("Content-Type", "application/json"))
                .set_payload("{not json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = alice
        .send(
            &app,
            test::TestRequest::post()
                .uri("/conversation")
                .insert_header(("X-CSRF-Token", t.clone()))
                .insert_header(("Content-Type", "text/plain"))
                .set_payload("message=hi"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("unsupported content type"));
    let r = alice
        .send(
            &app,
            test::TestRequest::post()
                .uri("/conversation")
                .insert_header(("X-CSRF-Token", t))
                .set_form([("message", "x".repeat(20_000))]),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "oversized bodies are refused"
    );

    assert_eq!(alice.get(&app, "/conversations/").await.json(), json!([]));
    assert!(broker.recorded.all().is_empty());

    // The limit is 225 characters, not bytes; surrounding whitespace is trimmed.
    let max = "é".repeat(225);
    let r = alice
        .post_form(&app, "/conversation", &[("message", &format!("  {max}\n"))])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["message"], max.as_str());

    // Markup is data: stored and returned exactly as typed.
    let html = "<img src=x onerror=alert(1)>";
    let r = alice
        .post_form(&app, "/conversation", &[("message", html)])
        .await;
    assert_eq!(r.json()["message"], html);
    let list = alice.get(&app, "/conversations/").await.json();
    assert_eq!(list[1]["message"], html);
    broker.stop().await;
}

#[actix_rt::test]
async fn history_paging() {
    let env = Env::new(&common::unreachable_url());
    let uid = env.add_user("alice", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let user = store::find_user(&mut env.conn(), uid).unwrap().unwrap();
    let ids: Vec<i64> = (1..=5)
        .map(|i| {
            store::messages::insert(&mut env.conn(), &user, 1, &format!("m{i}"))
                .unwrap()
                .0
                .id
        })
        .collect();

    let page = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["message"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        page(alice.get(&app, "/conversations/").await.json()),
        ["m1", "m2", "m3", "m4", "m5"]
    );
    assert_eq!(
        page(alice.get(&app, "/conversations/?limit=2").await.json()),
        ["m4", "m5"]
    );
    assert_eq!(
        page(
            alice
                .get(&app, &format!("/conversations/?before={}&limit=2", ids[3]))
                .await
                .json()
        ),
        ["m2", "m3"]
    );
    assert_eq!(
        page(
            alice
                .get(&app, &format!("/conversations/?before={}", ids[0]))
                .await
                .json()
        ),
        Vec::<String>::new()
    );
    for q in ["before=abc", "before=-1", "limit=0", "limit=501", "limit=x"] {
        let r = alice.get(&app, &format!("/conversations/?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(r.json()["error"].is_string());
    }
}

#[actix_rt::test]
async fn delivered_follows_the_sender_rule_and_excludes_the_socket() {
    let broker = FakeBroker::start().await;
    let env = Env::new(&broker.url);
    env.add_user("alice", PW);
    env.add_user("bob", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let mut bob = Browser::login(&app, "bob", PW).await;

    let sent = alice
        .post_form(&app, "/conversation", &[("message", "hi bob")])
        .await
        .json();
    let id = sent["id"].as_i64().unwrap();
    let uri = format!("/conversations/{id}/delivered");
    broker.recorded.clear();

    // The sender cannot mark their own message.
    let r = alice
        .post_form(&app, &uri, &[("socket_id", "111.222")])
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::OK, "Awaiting Delivery")
    );
    assert_eq!(
        alice.get(&app, "/conversations/").await.json()[0]["status"],
        "Sent"
    );
    assert!(broker.recorded.all().is_empty());

    // The recipient can.
    let r = bob.post_form(&app, &uri, &[("socket_id", "123.456")]).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok"));
    assert_eq!(r.header("x-broadcast").as_deref(), Some("true"));
    let triggers = broker.recorded.all();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].name, "delivered_message");
    assert_eq!(triggers[0].channel.as_deref(), Some("private-a_channel"));
    assert_eq!(
        triggers[0].socket_id.as_deref(),
        Some("123.456"),
        "the acknowledging socket is excluded"
    );
    let data = data_of(&triggers[0]);
    assert_eq!(
        json!([
            data["name"],
            data["status"],
            data["message"],
            data["id"],
            data["created_at"],
            data["recipients"],
            data["delivered"],
            data["seen"]
        ]),
        json!([
            "alice",
            "Delivered",
            "hi bob",
            id,
            sent["created_at"],
            1,
            1,
            0
        ])
    );
    assert_eq!(
        alice.get(&app, "/conversations/").await.json()[0]["status"],
        "Delivered"
    );

    // Idempotent: again is fine, changes nothing and broadcasts nothing new.
    let r = bob
        .post_json(&app, &uri, json!({"socket_id": "123.456"}))
        .await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok"));
    assert_eq!(broker.recorded.all().len(), 1);

    // Errors.
    assert_eq!(
        bob.post_form(
            &app,
            "/conversations/999999/delivered",
            &[("socket_id", "1.2")]
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.post_form(
            &app,
            "/conversations/abc/delivered",
            &[("socket_id", "1.2")]
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let r = bob
        .post_form(&app, &uri, &[("socket_id", "not-a-socket")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "socket_id must look like 1234.5678");
    broker.stop().await;
}

#[actix_rt::test]
async fn seen_moves_forward_only_and_persists() {
    let broker = FakeBroker::start().await;
    let env = Env::new(&broker.url);
    env.add_user("alice", PW);
    env.add_user("bob", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let mut bob = Browser::login(&app, "bob", PW).await;
    let id = alice
        .post_form(&app, "/conversation", &[("message", "look")])
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    broker.recorded.clear();

    let r = alice
        .post_form(
            &app,
            &format!("/conversations/{id}/seen"),
            &[("socket_id", "1.1")],
        )
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::OK, "Awaiting Seen")
    );

    // Seen straight from Sent, without a socket to exclude.
    let r = bob
        .post_form(&app, &format!("/conversations/{id}/seen"), &[])
        .await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok"));
    let triggers = broker.recorded.all();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].name, "seen_message");
    assert_eq!(triggers[0].socket_id, None);
    assert_eq!(data_of(&triggers[0])["status"], "Seen");

    // A late "delivered" never downgrades.
    let r = bob
        .post_form(
            &app,
            &format!("/conversations/{id}/delivered"),
            &[("socket_id", "5.6")],
        )
        .await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok"));
    assert_eq!(broker.recorded.all().len(), 1);
    assert_eq!(
        bob.get(&app, "/conversations/").await.json()[0]["status"],
        "Seen"
    );
    assert_eq!(
        bob.post_form(&app, "/conversations/424242/seen", &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Statuses live in the database: a new app instance on it sees them.
    drop(app);
    let app = test::init_service(env.app()).await;
    env.add_user("carol", PW);
    let mut carol = Browser::login(&app, "carol", PW).await;
    assert_eq!(
        carol.get(&app, "/conversations/").await.json()[0]["status"],
        "Seen"
    );
    // Carol joined after the message, so she is not one of its recipients.
    let view = store::messages::views(&mut env.conn(), &[id])
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (view.status.as_str(), view.recipients, view.seen),
        ("Seen", 1, 1)
    );
    broker.stop().await;
}

#[actix_rt::test]
async fn an_unreachable_broker_does_not_lose_messages() {
    let env = Env::new(&common::unreachable_url());
    env.add_user("alice", PW);
    env.add_user("bob", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let mut bob = Browser::login(&app, "bob", PW).await;

    let r = alice
        .post_form(&app, "/conversation", &[("message", "anyone?")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let sent = r.json();
    assert_eq!(sent["broadcast"], false);
    assert_eq!(sent["status"], "Sent");

    let list = bob.get(&app, "/conversations/").await.json();
    assert_eq!(list[0]["message"], "anyone?");
    let r = bob
        .post_form(
            &app,
            &format!("/conversations/{}/delivered", sent["id"]),
            &[("socket_id", "1.2")],
        )
        .await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok"));
    assert_eq!(r.header("x-broadcast").as_deref(), Some("false"));
    assert_eq!(
        bob.get(&app, "/conversations/").await.json()[0]["status"],
        "Delivered"
    );
}

#[actix_rt::test]
async fn pusher_auth_signs_only_the_apps_channels() {
    let env = Env::new(&common::unreachable_url());
    let alice_id = env.add_user("alice", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let key = protocol::AppKey::new("app-key").unwrap();
    let secret = protocol::AppSecret::new("app-secret").unwrap();

    let r = alice
        .post_form(
            &app,
            "/pusher/auth",
            &[("socket_id", "123.456"), ("channel_name", "presence-chat")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    let channel_data = body["channel_data"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(channel_data).unwrap(),
        json!({"user_id": alice_id.to_string(), "user_info": {"name": "alice"}})
    );
    let sid = "123.456".parse().unwrap();
    verify_channel(
        &key,
        &secret,
        sid,
        "presence-chat",
        Some(channel_data),
        body["auth"].as_str().unwrap(),
    )
    .expect("valid presence signature");

    for channel in ["private-a_channel"] {
        let r = alice
            .post_form(
                &app,
                "/pusher/auth",
                &[("socket_id", "123.456"), ("channel_name", channel)],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let body = r.json();
        assert!(body.get("channel_data").is_none());
        verify_channel(
            &key,
            &secret,
            sid,
            channel,
            None,
            body["auth"].as_str().unwrap(),
        )
        .expect("valid private signature");
    }

    for channel in [
        "private-admin",
        "presence-other",
        "a_channel",
        "private-typing",
        "private-conversation-1-0",
        "private-conversation-99-0",
    ] {
        let r = alice
            .post_form(
                &app,
                "/pusher/auth",
                &[("socket_id", "123.456"), ("channel_name", channel)],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{channel}");
    }
    for (sid, ch) in [("bogus", "presence-chat"), ("1.2.3", "presence-chat")] {
        let r = alice
            .post_form(
                &app,
                "/pusher/auth",
                &[("socket_id", sid), ("channel_name", ch)],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{sid}");
    }
    let r = alice
        .post_form(&app, "/pusher/auth", &[("socket_id", "1.2")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "channel_name is required");
}

#[actix_rt::test]
async fn deleting_a_user_cascades_and_ends_their_session() {
    let env = Env::new(&common::unreachable_url());
    let uid = env.add_user("alice", PW);
    env.add_user("bob", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    let mut bob = Browser::login(&app, "bob", PW).await;
    alice
        .post_form(&app, "/conversation", &[("message", "bye")])
        .await;
    bob.post_form(&app, "/conversation", &[("message", "stay")])
        .await;

    diesel::sql_query(format!("DELETE FROM users WHERE id = {uid}"))
        .execute(&mut env.conn())
        .unwrap();
    let list = bob.get(&app, "/conversations/").await.json();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "alice's messages went with her"
    );
    assert_eq!(list[0]["message"], "stay");
    assert_eq!(alice.get(&app, "/").await.status, StatusCode::FOUND);
    assert_eq!(
        alice
            .post_form(&app, "/conversation", &[("message", "ghost")])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_rt::test]
async fn demo_user_is_created_once_on_an_empty_database() {
    let mut env = Env::new(&common::unreachable_url());
    let config = env.config.clone();
    assert_eq!(
        accounts::ensure_demo_user(&mut env.conn(), &config).unwrap(),
        None,
        "no demo login unless asked for"
    );
    env.with_config(|c| {
        c.demo = Some(chat_app::config::DemoLogin {
            user: "demo".into(),
            password: "demo-password".into(),
        });
    });
    let config = env.config.clone();
    assert_eq!(
        accounts::ensure_demo_user(&mut env.conn(), &config)
            .unwrap()
            .as_deref(),
        Some("demo")
    );
    assert_eq!(
        accounts::ensure_demo_user(&mut env.conn(), &config).unwrap(),
        None
    );
    let app = test::init_service(env.app()).await;
    Browser::login(&app, "demo", "demo-password").await;
}

#[actix_rt::test]
async fn create_user_command() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let env = Env::new(&common::unreachable_url());
    let run = |name: &str, password: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-app"))
            .args(["create-user", name])
            .env("DATABASE_URL", &env.db.url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("carol", "carol-password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("created user carol"));
    let out = run("carol", "carol-password");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("that username is taken"));
    let out = run("dave", "short");
    assert!(!out.status.success());

    let app = test::init_service(env.app()).await;
    Browser::login(&app, "carol", "carol-password").await;
}

#[actix_rt::test]
async fn a_cookie_captured_before_logout_is_dead_after_it() {
    let env = Env::new(&common::unreachable_url());
    env.add_user("alice", PW);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    // An attacker's copy of the cookie and token, taken while logged in.
    let mut thief = alice.clone();
    assert_eq!(
        thief.get(&app, "/conversations/").await.status,
        StatusCode::OK
    );

    let token = alice.csrf.clone().unwrap();
    let r = alice
        .send(
            &app,
            test::TestRequest::post()
                .uri("/logout")
                .set_form([("csrf_token", token.as_str())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    let r = thief.get(&app, "/conversations/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "API: {}", r.text());
    let mut thief2 = thief.clone();
    let r = thief2
        .post_form(&app, "/conversation", &[("message", "forged")])
        .await;
    assert!(
        matches!(r.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
        "{}",
        r.status
    );
    let r = thief.get(&app, "/").await;
    assert_eq!(
        (r.status, r.location().as_deref()),
        (StatusCode::FOUND, Some("/login")),
        "pages redirect"
    );
    let r = thief
        .post_form(
            &app,
            "/pusher/auth",
            &[("socket_id", "1.2"), ("channel_name", "private-a_channel")],
        )
        .await;
    assert!(
        matches!(r.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
        "{}",
        r.status
    );
    let rows: i64 = diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM sessions)",
    ))
    .get_result(&mut env.conn())
    .unwrap();
    assert_eq!(rows, 0, "the session row is gone");

    // Logging in again works as usual.
    Browser::login(&app, "alice", PW).await;
}

#[actix_rt::test]
async fn log_out_everywhere_ends_every_session_of_the_account_only() {
    let env = Env::new(&common::unreachable_url());
    env.add_user("alice", PW);
    env.add_user("bob", PW);
    let app = test::init_service(env.app()).await;
    let mut laptop = Browser::login(&app, "alice", PW).await;
    let mut phone = Browser::login(&app, "alice", PW).await;
    let mut bob = Browser::login(&app, "bob", PW).await;

    // A plain logout on the laptop leaves the phone logged in.
    let mut tablet = Browser::login(&app, "alice", PW).await;
    let t = tablet.csrf.clone().unwrap();
    tablet
        .send(
            &app,
            test::TestRequest::post()
                .uri("/logout")
                .set_form([("csrf_token", t.as_str())]),
        )
        .await;
    assert_eq!(phone.get(&app, "/").await.status, StatusCode::OK);

    let page = laptop.get(&app, "/logout").await.text();
    assert!(
        page.contains("name=\"everywhere\""),
        "the logout page offers it"
    );
    let t = laptop.csrf.clone().unwrap();
    let r = laptop
        .send(
            &app,
            test::TestRequest::post()
                .uri("/logout")
                .set_form([("csrf_token", t.as_str()), ("everywhere", "1")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        phone.get(&app, "/conversations/").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        laptop.get(&app, "/conversations/").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        bob.get(&app, "/conversations/").await.status,
        StatusCode::OK,
        "other accounts keep their sessions"
    );
}

#[actix_rt::test]
async fn sessions_expire_after_the_configured_age() {
    let mut env = Env::new(&common::unreachable_url());
    env.add_user("alice", PW);
    env.with_config(|c| c.session_max_age_secs = 1);
    let app = test::init_service(env.app()).await;
    let mut alice = Browser::login(&app, "alice", PW).await;
    // Age the row instead of sleeping.
    diesel::sql_query("UPDATE sessions SET created_at = now() - interval '2 seconds'")
        .execute(&mut env.conn())
        .unwrap();
    assert_eq!(
        alice.get(&app, "/conversations/").await.status,
        StatusCode::UNAUTHORIZED
    );
}

fn login_request(token: &str, user: &str, pw: &str, ip: &str) -> test::TestRequest {
    test::TestRequest::post()
        .uri("/login")
        .peer_addr(format!("{ip}:40000").parse().unwrap())
        .set_form([("username", user), ("password", pw), ("csrf_token", token)])
}

#[actix_rt::test]
async fn the_eleventh_failed_login_in_a_minute_gets_429_with_retry_after() {
    let env = Env::new(&common::unreachable_url());
    env.add_user("alice", PW);
    env.add_user("bob", PW);
    let app = test::init_service(env.app()).await;
    let mut b = Browser::default();
    b.get(&app, "/login").await;
    let token = b.csrf.clone().unwrap();
    for i in 1..=10 {
        // Spread over addresses so that only the per-account limit is in play.
        let r = b
            .send(
                &app,
                login_request(&token, "alice", "wrong-password", &format!("10.1.0.{i}")),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let r = b
        .send(
            &app,
            login_request(&token, "alice", "wrong-password", "10.1.0.11"),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r.text().contains("Too many attempts"), "{}", r.text());
    // Even the right password waits now: guessing cannot be hidden among successes.
    let r = b
        .send(&app, login_request(&token, "Alice", PW, "10.1.0.12"))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b.get(&app, "/").await.status, StatusCode::FOUND);
    // Another account is not affected.
    let r = b
        .send(&app, login_request(&token, "bob", PW, "10.1.0.13"))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[actix_rt::test]
async fn logins_and_signups_are_limited_per_address() {
    let mut env = Env::new(&common::unreachable_url());
    env.with_config(|c| {
        c.abuse.login_per_ip_per_min = 3;
        c.abuse.signup_per_ip_per_min = 2;
    });
    let app = test::init_service(env.app()).await;
    let mut b = Browser::default();
    b.get(&app, "/login").await;
    let token = b.csrf.clone().unwrap();
    for user in ["u1", "u2", "u3"] {
        assert_eq!(
            b.send(&app, login_request(&token, user, "whatever-pw", "10.2.0.1"))
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = b
        .send(&app, login_request(&token, "u4", "whatever-pw", "10.2.0.1"))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        b.send(&app, login_request(&token, "u4", "whatever-pw", "10.2.0.2"))
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "another address is fine"
    );

    let signup = |name: &str, b: &Browser| {
        test::TestRequest::post()
            .uri("/signup")
            .peer_addr("10.3.0.1:5000".parse().unwrap())
            .insert_header(("X-CSRF-Token", b.csrf.clone().unwrap()))
            .set_form([("username", name), ("password", PW)])
    };
    for name in ["new1", "new2"] {
        let mut fresh = Browser::default();
        fresh.get(&app, "/signup").await;
        let req = signup(name, &fresh);
        assert_eq!(
            fresh.send(&app, req).await.status,
            StatusCode::SEE_OTHER,
            "{name}"
        );
    }
    let mut fresh = Browser::default();
    fresh.get(&app, "/signup").await;
    let req = signup("new3", &fresh);
    let r = fresh.send(&app, req).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.header("retry-after").is_some());
    assert!(
        store::find_user_by_name(&mut env.conn(), "new3")
            .unwrap()
            .is_none(),
        "nothing was created"
    );
}
