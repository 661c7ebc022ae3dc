//! Apps kept in PostgreSQL: added, changed and removed while the broker runs.
//! Uses the machine's PostgreSQL (127.0.0.1:5432, user postgres) with a database
//! of its own, dropped at the end.

mod common;

use std::time::Duration;

use broker::config::Config;
use common::{start_with, Client, Closed, Ws};
use tokio_postgres::NoTls;

const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

async fn client(conninfo: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    actix_rt::spawn(conn);
    client
}

#[actix_rt::test]
async fn apps_come_change_and_go_without_a_restart() {
    let db = format!("broker_store_{}_{}", std::process::id(), rand_suffix());
    let admin = client(ADMIN).await;
    admin
        .execute(&format!("CREATE DATABASE {db}"), &[])
        .await
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let config = Config::from_toml(&format!(
        "host = \"127.0.0.1\"\nport = 0\nworkers = 1\n[app_store]\ndatabase_url = \"{url}\"\nrefresh_secs = 1\n"
    ))
    .unwrap();
    let b = start_with(config).await;
    let ready = || async {
        awc::Client::default()
            .get(format!("{}/ready", b.url))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    wait_until(|| async { ready().await == 200 }).await;

    let store = client(&format!(
        "host=127.0.0.1 port=5432 user=postgres dbname={db}"
    ))
    .await;
    store
        .execute(
            "INSERT INTO broker_apps (id, key, secret) VALUES ('7', 'store-key', 'store-secret')",
            &[],
        )
        .await
        .unwrap();
    wait_until(|| async { b.state.apps.by_key("store-key").is_some() }).await;
    let mut ws = Ws::open(&b, "store-key").await;
    ws.expect("pusher:connection_established").await;

    // Authorized connections from the table.
    store.execute("UPDATE broker_apps SET authorized_connections = true, authorized_connection_timeout_secs = 7 WHERE id = '7'", &[]).await.unwrap();
    wait_until(|| async {
        b.state
            .apps
            .by_key("store-key")
            .is_some_and(|a| a.authorize_within == Some(Duration::from_secs(7)))
    })
    .await;

    store
        .execute("UPDATE broker_apps SET enabled = false WHERE id = '7'", &[])
        .await
        .unwrap();
    wait_until(|| async { b.state.apps.by_key("store-key").is_some_and(|a| !a.enabled) }).await;
    let mut refused = Ws::open(&b, "store-key").await;
    assert_eq!(refused.expect("pusher:error").await["data"]["code"], 4003);
    assert_eq!(refused.closed().await, Closed(Some(4003)));

    store
        .execute("DELETE FROM broker_apps WHERE id = '7'", &[])
        .await
        .unwrap();
    wait_until(|| async { b.state.apps.by_key("store-key").is_none() }).await;
    let mut gone = Ws::open(&b, "store-key").await;
    assert_eq!(gone.expect("pusher:error").await["data"]["code"], 4001);

    b.stop().await;
    drop(store);
    admin
        .execute(&format!("DROP DATABASE {db} WITH (FORCE)"), &[])
        .await
        .unwrap();
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

async fn wait_until<F, Fut>(f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition still false after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
