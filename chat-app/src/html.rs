//! Server-rendered pages. Every interpolated value goes through [`escape`];
//! messages themselves are never rendered here but by the page's script as text.

use actix_web::{http::StatusCode, HttpResponse};

use crate::config::Config;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Scripts and styles only from this origin, sockets only to the broker: an
/// injected `<script>` or inline handler would not run even if escaping failed.
pub fn content_security_policy(config: &Config) -> String {
    let ws = format!("{}:{}", bracket_v6(&config.ws_host), config.ws_port);
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' ws://{ws} wss://{ws}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

pub fn respond(status: StatusCode, config: &Config, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", content_security_policy(config)))
        .insert_header(("Cache-Control", "no-store"))
        .body(body)
}

fn layout(title: &str, body_class: &str, head_extra: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/static/chat.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
{head_extra}</head>
<body class="{body_class}">
{body}
</body>
</html>
"#,
        title = escape(title),
        body_class = escape(body_class),
    )
}

fn error_block(error: Option<&str>) -> String {
    match error {
        Some(e) => format!(
            r#"<p class="form-error" role="alert" id="form-error">{}</p>"#,
            escape(e)
        ),
        None => String::new(),
    }
}

/// The login and signup forms differ only in their words.
pub struct AuthForm<'a> {
    pub csrf_token: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
    pub notice: Option<&'a str>,
}

pub fn login_page(f: &AuthForm<'_>) -> String {
    auth_page(
        "Log in",
        "/login",
        "Log in",
        "current-password",
        f,
        r#"No account? <a href="/signup">Sign up</a>"#,
    )
}

pub fn signup_page(f: &AuthForm<'_>) -> String {
    auth_page(
        "Sign up",
        "/signup",
        "Create account",
        "new-password",
        f,
        r#"Have an account? <a href="/login">Log in</a>"#,
    )
}

fn auth_page(
    title: &str,
    action: &str,
    button: &str,
    pw_autocomplete: &str,
    f: &AuthForm<'_>,
    footer: &str,
) -> String {
    let notice = f
        .notice
        .map(|n| format!(r#"<p class="form-notice" role="status">{}</p>"#, escape(n)))
        .unwrap_or_default();
    let body = format!(
        r#"<main class="auth-card">
<h1>{title}</h1>
{notice}{error}
<form method="post" action="{action}" class="auth-form">
<input type="hidden" name="csrf_token" value="{token}">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required maxlength="32" value="{username}" autocapitalize="none" spellcheck="false">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="{pw_autocomplete}" required>
<button type="submit">{button}</button>
</form>
<p class="auth-footer">{footer}</p>
</main>"#,
        title = escape(title),
        error = error_block(f.error),
        token = escape(f.csrf_token),
        username = escape(f.username),
    );
    layout(title, "auth", "", &body)
}

pub fn logout_page(csrf_token: &str, username: &str) -> String {
    let body = format!(
        r#"<main class="auth-card">
<h1>Log out</h1>
<p>You are logged in as <strong>{user}</strong>.</p>
<form method="post" action="/logout" class="auth-form">
<input type="hidden" name="csrf_token" value="{token}">
<button type="submit">Log out</button>
</form>
<form method="post" action="/logout" class="auth-form">
<input type="hidden" name="csrf_token" value="{token}">
<input type="hidden" name="everywhere" value="1">
<button type="submit" id="logout-everywhere" class="secondary">Log out everywhere</button>
</form>
<p class="auth-footer"><a href="/">Back to the chat</a></p>
</main>"#,
        user = escape(username),
        token = escape(csrf_token),
    );
    layout("Log out", "auth", "", &body)
}

pub struct ChatPage<'a> {
    pub csrf_token: &'a str,
    pub username: &'a str,
    pub user_id: i32,
    pub config: &'a Config,
}

pub fn chat_page(p: &ChatPage<'_>) -> String {
    // Settings reach the script through escaped meta tags: no inline script, so the CSP can forbid them.
    let meta = |name: &str, value: &str| {
        format!(
            "<meta name=\"{}\" content=\"{}\">\n",
            escape(name),
            escape(value)
        )
    };
    let head = [
        meta("csrf-token", p.csrf_token),
        meta("chat-user", p.username),
        meta("chat-user-id", &p.user_id.to_string()),
        meta(
            "chat-max-chars",
            &crate::validate::MESSAGE_MAX_CHARS.to_string(),
        ),
        meta("pusher-key", p.config.app_key.as_str()),
        meta("pusher-ws-host", &p.config.ws_host),
        meta("pusher-ws-port", &p.config.ws_port.to_string()),
    ]
    .concat();
    let body = format!(
        r#"<div class="chat-shell">
<header class="topbar">
  <button id="sidebar-toggle" type="button" class="icon-button" aria-controls="sidebar" aria-expanded="false">Chats<span id="total-unread" class="unread" hidden></span></button>
  <h1>Chat</h1>
  <span class="me">Signed in as <strong id="me-name">{user}</strong></span>
  <span id="connection" class="connection" data-state="connecting">connecting…</span>
  <form method="post" action="/logout" class="logout-form">
    <input type="hidden" name="csrf_token" value="{token}">
    <button type="submit" class="link-button">Log out</button>
  </form>
</header>
<aside id="sidebar" class="sidebar" aria-label="Conversations">
  <form id="new-direct" class="side-form" autocomplete="off">
    <label for="direct-user">Message someone</label>
    <div class="row"><input id="direct-user" list="user-suggestions" maxlength="32" placeholder="username" autocapitalize="none" spellcheck="false"><button type="submit">Start</button></div>
  </form>
  <details class="side-form">
    <summary>New group</summary>
    <form id="new-group" autocomplete="off">
      <label for="group-title">Name</label>
      <input id="group-title" maxlength="80" required>
      <label for="group-members">Members (comma separated)</label>
      <input id="group-members" placeholder="bob, carol" autocapitalize="none" spellcheck="false">
      <button type="submit">Create group</button>
    </form>
  </details>
  <datalist id="user-suggestions"></datalist>
  <ul id="conversation-list" class="conversation-list"></ul>
  <section class="online" aria-label="Who is online">
    <h2>Online <span id="online-count" class="count">0</span></h2>
    <p id="online-stale" class="stale" hidden>Offline: reconnecting…</p>
    <ul id="online-list"></ul>
  </section>
</aside>
<main class="conversation">
  <header class="conversation-header">
    <h2 id="conversation-title">…</h2>
    <details id="members-box" class="members-box" hidden>
      <summary id="members-summary">Members</summary>
      <ul id="member-list"></ul>
      <form id="add-member" autocomplete="off" hidden>
        <input id="add-member-name" list="user-suggestions" maxlength="32" placeholder="username" autocapitalize="none" spellcheck="false" aria-label="Add a member">
        <button type="submit">Add</button>
      </form>
    </details>
  </header>
  <div id="notice" class="notice" role="status" hidden></div>
  <div id="messages-scroll" class="messages-scroll">
    <div id="older-sentinel" class="older-sentinel"></div>
    <button id="load-older" type="button" class="load-older" hidden>Load earlier messages</button>
    <ol id="messages" class="messages" aria-live="polite"></ol>
  </div>
  <div id="typing" class="typing" aria-live="polite"></div>
  <form id="composer" class="composer" autocomplete="off">
    <label for="message" class="visually-hidden">Message</label>
    <textarea id="message" name="message" rows="1" maxlength="{max}" placeholder="Type a message" required></textarea>
    <span id="counter" class="counter" aria-live="polite">0/{max}</span>
    <button id="send" type="submit">Send</button>
  </form>
</main>
</div>
<script src="/static/vendor/pusher.min.js"></script>
<script src="/static/chat.js"></script>"#,
        user = escape(p.username),
        token = escape(p.csrf_token),
        max = crate::validate::MESSAGE_MAX_CHARS,
    );
    layout("Chat", "chat", &head, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<img src=x onerror="alert('1')">&"#),
            "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;"
        );
    }
}
