//! The key schema: every Redis key and pub/sub channel the cluster uses, under one prefix.

/// Key names, all under the configured prefix (so several clusters can share one Redis).
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }
    /// The pub/sub channel every node listens to.
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
    /// The pub/sub channel only `node` listens to (member lists for its joiners).
    pub fn inbox(&self, node: &str) -> String {
        format!("{}:node:{node}:inbox", self.prefix)
    }
    /// Set of node ids that have registered.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    pub fn alive(&self, node: &str) -> String {
        format!("{}:node:{node}:alive", self.prefix)
    }
    pub fn cleanup_lock(&self, node: &str) -> String {
        format!("{}:node:{node}:cleanup", self.prefix)
    }
    /// A node's share of every channel's subscriptions ([`sub_field`] -> count).
    pub fn node_subs(&self, node: &str) -> String {
        format!("{}:node:{node}:subs", self.prefix)
    }
    /// A node's share of every presence user's connections ([`member_field`] -> count).
    pub fn node_members(&self, node: &str) -> String {
        format!("{}:node:{node}:members", self.prefix)
    }
    /// An app's occupied channels (channel -> subscriptions).
    pub fn channels(&self, app: &str) -> String {
        format!("{}:app:{app}:channels", self.prefix)
    }
    /// A presence channel's members (user -> connections).
    pub fn members(&self, app: &str, channel: &str) -> String {
        format!("{}:app:{app}:members:{channel}", self.prefix)
    }
    /// A presence channel's user infos (user -> user_info JSON).
    pub fn infos(&self, app: &str, channel: &str) -> String {
        format!("{}:app:{app}:infos:{channel}", self.prefix)
    }
    pub fn cache(&self, app: &str, channel: &str) -> String {
        format!("{}:app:{app}:cache:{channel}", self.prefix)
    }
    /// Leaving webhooks held back for the debounce window ([`HeldBack`] -> due time in ms).
    pub fn held_back(&self) -> String {
        format!("{}:webhooks:held", self.prefix)
    }
}

/// Field of a node's subscription share.
pub(super) fn sub_field(app: &str, channel: &str) -> String {
    format!("{app}\n{channel}")
}

/// Field of a node's member share.
pub(super) fn member_field(app: &str, channel: &str, user: &str) -> String {
    format!("{app}\n{channel}\n{user}")
}

/// Splits a [`member_field`] into app, channel and user.
pub(super) fn split_member_field(field: &str) -> Option<(&str, &str, &str)> {
    let mut parts = field.splitn(3, '\n');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// A leaving webhook waiting in Redis for its window, encoded as a sorted-set member.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeldBack<'a> {
    Vacated { app: &'a str, channel: &'a str },
    Removed { app: &'a str, channel: &'a str, user: &'a str },
}

impl<'a> HeldBack<'a> {
    pub fn encode(&self) -> String {
        match self {
            Self::Vacated { app, channel } => format!("v\n{app}\n{channel}"),
            Self::Removed { app, channel, user } => format!("r\n{app}\n{channel}\n{user}"),
        }
    }

    pub fn decode(s: &'a str) -> Option<Self> {
        let (kind, rest) = s.split_once('\n')?;
        let (app, rest) = rest.split_once('\n')?;
        match kind {
            "v" => Some(Self::Vacated { app, channel: rest }),
            "r" => {
                let (channel, user) = rest.split_once('\n')?;
                Some(Self::Removed { app, channel, user })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_back_webhooks_round_trip() {
        for h in [
            HeldBack::Vacated { app: "1", channel: "presence-a" },
            HeldBack::Removed { app: "1", channel: "presence-a", user: "u\nwith a newline" },
        ] {
            assert_eq!(HeldBack::decode(&h.encode()), Some(h));
        }
        assert_eq!(HeldBack::decode("x\n1\nc"), None);
        assert_eq!(HeldBack::decode("r\n1\nno-user"), None);
    }

    #[test]
    fn member_fields_split_back() {
        assert_eq!(split_member_field(&member_field("1", "presence-a", "u\nv")), Some(("1", "presence-a", "u\nv")));
        assert_eq!(split_member_field("1\nonly"), None);
    }

    #[test]
    fn keys_share_the_prefix() {
        let k = Keys::new("p");
        for key in [k.events(), k.inbox("n"), k.nodes(), k.channels("1"), k.members("1", "c"), k.held_back()] {
            assert!(key.starts_with("p:"), "{key}");
        }
    }
}
