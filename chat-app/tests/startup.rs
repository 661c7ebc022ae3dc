//! The chat-app binary started before its database: it stays up, logs what it
//! waits for, answers `/health` with 503 meanwhile, and becomes ready (200)
//! once PostgreSQL appears, without a restart. The database "appears" when a
//! TCP forwarder to this machine's PostgreSQL starts listening on the port the
//! chat was given, so nothing listens there before.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use common::{admin_url, unreachable_url, TestDb};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status of `GET path`, or `None` if nothing answers.
fn status_of(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = String::new();
    BufReader::new(s).read_line(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Accepts on `listener` and pipes each connection to `upstream`, both ways.
fn forward(listener: TcpListener, upstream: String) {
    thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    });
}

struct Chat {
    child: Child,
    logs: Arc<Mutex<String>>,
}

impl Chat {
    fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_chat(database_url: &str, port: u16) -> Chat {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-app"))
        .env("DATABASE_URL", database_url)
        .env("CHAT_HOST", "127.0.0.1")
        .env("CHAT_PORT", port.to_string())
        .env("PUSHER_URL", unreachable_url())
        .env("SESSION_KEY", "k".repeat(64))
        .env("RUST_LOG", "info")
        .env_remove("CHAT_DEMO_PASSWORD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat-app");
    let logs = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    Chat { child, logs }
}

fn eventually(what: &str, limit: Duration, chat: &mut Chat, mut ok: impl FnMut(&mut Chat) -> bool) {
    let deadline = Instant::now() + limit;
    while !ok(chat) {
        assert!(
            chat.running(),
            "chat-app exited while waiting for {what}:\n{}",
            chat.logs()
        );
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            chat.logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn starts_before_its_database_and_becomes_ready_when_it_appears() {
    let db = TestDb::create();
    let pg_port = free_port();
    let url_via_forwarder = format!("postgres://postgres@127.0.0.1:{pg_port}/{}", db.name);
    let http_port = free_port();
    let mut chat = start_chat(&url_via_forwarder, http_port);

    // Up, not ready, and saying what it waits for.
    eventually(
        "the first answer",
        Duration::from_secs(30),
        &mut chat,
        |_| status_of(http_port, "/health").is_some(),
    );
    assert_eq!(status_of(http_port, "/health"), Some(503));
    let target = format!("127.0.0.1:{pg_port}/{}", db.name);
    eventually(
        "the log to say what it waits for",
        Duration::from_secs(10),
        &mut chat,
        |c| {
            let logs = c.logs();
            logs.matches("waiting for the database").count() >= 2 && logs.contains(&target)
        },
    );
    assert!(chat.running());
    assert!(
        !chat.logs().contains("postgres@"),
        "the log names the database without its user or password"
    );

    // PostgreSQL appears: ready without a restart, migrated.
    let listener =
        TcpListener::bind(("127.0.0.1", pg_port)).expect("the database port is still free");
    let admin = admin_url();
    let upstream = admin
        .split_once('@')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("admin url has a host:port")
        .to_owned();
    forward(listener, upstream);
    eventually("ready", Duration::from_secs(30), &mut chat, |_| {
        status_of(http_port, "/health") == Some(200)
    });
    assert!(chat.logs().contains("database ready"), "{}", chat.logs());
    drop(chat);
}
