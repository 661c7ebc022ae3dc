//! Who may use an HTTP-fallback session: the client that opened it, as far as
//! each request shows it.
//!
//! pusher-js's web build sends every request of a session as a plain XHR
//! (`src/core/http/http_request.ts`, `src/runtimes/web/http/http_xhr_request.ts`):
//! no header of its own but `Content-Type`, no credentials (so a cookie the
//! broker set would not come back cross-origin), and a URL whose only secret,
//! the session id, is written into proxy and access logs. What a browser keeps
//! the same from one request of a session to the next is its `Origin`, its
//! `User-Agent` and the address it connects from, so a session is bound to
//! those three. The address is what someone who read the URL in a log cannot
//! copy; the two headers keep another program or browser behind the same
//! address (a NAT, a shared proxy) out, short of one that forges them.
//!
//! The address is the TCP peer's, counted as `core::ip_limit` counts it (IPv6
//! by its /64, so a browser's rotating privacy address keeps its session).

use std::net::IpAddr;

use actix_web::{
    http::header::{self, HeaderValue},
    HttpRequest,
};

use crate::core::ip_limit;

/// What identifies a session's client on each of its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    origin: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    /// `None` when sessions are not bound to an address (`bind_to_address = false`).
    address: Option<IpAddr>,
}

impl Owner {
    /// The client of `req`; its address counts only when `bind_to_address`.
    pub fn of(req: &HttpRequest, bind_to_address: bool) -> Self {
        Self::new(
            req.headers().get(header::ORIGIN).cloned(),
            req.headers().get(header::USER_AGENT).cloned(),
            req.peer_addr()
                .filter(|_| bind_to_address)
                .map(|peer| ip_limit::counted_as(peer.ip())),
        )
    }

    fn new(
        origin: Option<HeaderValue>,
        user_agent: Option<HeaderValue>,
        address: Option<IpAddr>,
    ) -> Self {
        Self {
            origin,
            user_agent,
            address,
        }
    }

    /// The `Origin` the session was opened from.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_ref().and_then(|o| o.to_str().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(origin: &str, ua: &str, ip: &str) -> Owner {
        Owner::new(
            Some(HeaderValue::from_str(origin).unwrap()),
            Some(HeaderValue::from_str(ua).unwrap()),
            Some(ip_limit::counted_as(ip.parse().unwrap())),
        )
    }

    #[test]
    fn a_request_belongs_to_a_session_when_all_three_match() {
        let opener = owner("https://a.example", "Browser/1", "192.0.2.1");
        assert_eq!(opener, owner("https://a.example", "Browser/1", "192.0.2.1"));
        assert_ne!(
            opener,
            owner("https://a.example", "Browser/1", "192.0.2.2"),
            "another address"
        );
        assert_ne!(
            opener,
            owner("https://a.example", "Browser/2", "192.0.2.1"),
            "another browser"
        );
        assert_ne!(
            opener,
            owner("https://b.example", "Browser/1", "192.0.2.1"),
            "another page"
        );
        // A browser's IPv6 privacy address changes within its /64.
        assert_eq!(
            owner("https://a.example", "Browser/1", "2001:db8:1:2::10"),
            owner("https://a.example", "Browser/1", "2001:db8:1:2:abcd::7")
        );
        assert_eq!(opener.origin(), Some("https://a.example"));
    }
}
