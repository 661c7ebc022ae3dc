//! The key schema: every Redis key and pub/sub topic the cluster uses, under one prefix.
//!
//! Everything about one channel (its topic, counts, members, held-back webhooks and
//! cache) shares the hash tag `{app:channel}`, so on a Redis Cluster it lives on one
//! shard and each Lua script touches one slot; different channels spread over the
//! shards. The few keys about nodes and indexes sit outside any channel's slot and are
//! only ever read or written one key per command.

/// Key names, all under the configured prefix (so several clusters can share one Redis).
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
}

/// The keys and topic of one channel (or of one watched user), all in one slot.
#[derive(Clone, Debug)]
pub(super) struct ChannelKeys {
    base: String,
}

impl ChannelKeys {
    fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.base)
    }
    /// The pub/sub topic of the channel: its broadcasts, member events, member lists
    /// for joiners and terminations. Only nodes with a local subscriber listen.
    pub fn topic(&self) -> String {
        self.key("topic")
    }
    /// Subscriptions in the whole cluster (an integer).
    pub fn count(&self) -> String {
        self.key("count")
    }
    /// Each node's share of the subscriptions (node -> count).
    pub fn shares(&self) -> String {
        self.key("shares")
    }
    /// A presence channel's members (user -> connections).
    pub fn members(&self) -> String {
        self.key("members")
    }
    /// A presence channel's user infos (user -> user_info JSON).
    pub fn infos(&self) -> String {
        self.key("infos")
    }
    /// Each node's share of each member's connections ([`member_field`] -> count).
    pub fn member_shares(&self) -> String {
        self.key("mshares")
    }
    /// Leaving webhooks held back for the debounce window ([`HeldBack`] -> due time in ms).
    pub fn held(&self) -> String {
        self.key("held")
    }
    pub fn cache(&self) -> String {
        self.key("cache")
    }
    /// The channel's history (see `history.rs`): the last position given out (an integer),
    pub fn history_seq(&self) -> String {
        self.key("hseq")
    }
    /// the kept events (a stream whose entry ids are `position-0`),
    pub fn history_stream(&self) -> String {
        self.key("hist")
    }
    /// and the epoch they belong to. All three expire after `max_age_secs` without a publish.
    pub fn history_epoch(&self) -> String {
        self.key("hepoch")
    }
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The keys of one channel. Channel names cannot hold `{` or `}`, so the tag is exactly `app:channel`.
    pub fn channel(&self, app: &str, channel: &str) -> ChannelKeys {
        ChannelKeys {
            base: format!("{}:{{{app}:{channel}}}", self.prefix),
        }
    }

    /// Where a user's watchers hear "online"/"offline": only its topic is used (and its
    /// `shares`, which stays empty). `#` cannot start a channel name, so these never meet a channel's keys.
    pub fn watch(&self, app: &str, user: &str) -> ChannelKeys {
        ChannelKeys {
            base: format!("{}:{{{app}:#watch:{user}}}", self.prefix),
        }
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
    /// The channels where `node` holds (or recently held) a share, as [`channel_ref`]s:
    /// where to look when it dies. Written before a share is, pruned by its reconcile.
    pub fn node_channels(&self, node: &str) -> String {
        format!("{}:node:{node}:channels", self.prefix)
    }
    /// An app's channels that may be occupied: a superset, each checked against its
    /// count when listed (added before it becomes occupied, removed after it is vacated).
    pub fn app_channels(&self, app: &str) -> String {
        format!("{}:app:{app}:channels", self.prefix)
    }
    /// Channels with held-back webhooks ([`channel_ref`] -> earliest due time in ms).
    pub fn held_index(&self) -> String {
        format!("{}:webhooks:held", self.prefix)
    }
}

/// An app and channel as one set member.
pub(super) fn channel_ref(app: &str, channel: &str) -> String {
    format!("{app}\n{channel}")
}

/// Splits a [`channel_ref`].
pub(super) fn split_channel_ref(s: &str) -> Option<(&str, &str)> {
    s.split_once('\n')
}

/// Field of a node's share of a member's connections.
pub(super) fn member_field(node: &str, user: &str) -> String {
    format!("{node}\n{user}")
}

/// The user of a [`member_field`] if it is `node`'s.
pub(super) fn member_field_user<'a>(field: &'a str, node: &str) -> Option<&'a str> {
    field.strip_prefix(node)?.strip_prefix('\n')
}

/// A leaving webhook waiting in its channel's `held` set, encoded as a member.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeldBack<'a> {
    Vacated,
    Removed { user: &'a str },
}

impl<'a> HeldBack<'a> {
    /// As the scripts write them (`'v'`, or `'r'` and the user id).
    #[cfg(test)]
    pub fn encode(&self) -> String {
        match self {
            Self::Vacated => "v".to_owned(),
            Self::Removed { user } => format!("r{user}"),
        }
    }

    pub fn decode(s: &'a str) -> Option<Self> {
        match s.as_bytes().first()? {
            b'v' if s.len() == 1 => Some(Self::Vacated),
            b'r' => Some(Self::Removed { user: &s[1..] }),
            _ => None,
        }
    }
}

/// The slot Redis Cluster puts a key in: what `{…}` holds, if anything, else the whole key.
#[cfg(test)]
fn hash_tag(key: &str) -> &str {
    match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_back_webhooks_round_trip() {
        for h in [
            HeldBack::Vacated,
            HeldBack::Removed {
                user: "u\nwith a newline",
            },
            HeldBack::Removed { user: "" },
        ] {
            assert_eq!(HeldBack::decode(&h.encode()), Some(h));
        }
        assert_eq!(HeldBack::decode("x"), None);
        assert_eq!(HeldBack::decode("vv"), None);
        assert_eq!(HeldBack::decode(""), None);
    }

    #[test]
    fn member_fields_belong_to_their_node() {
        assert_eq!(
            member_field_user(&member_field("n1", "u\nv"), "n1"),
            Some("u\nv")
        );
        assert_eq!(member_field_user(&member_field("n1", "u"), "n"), None);
        assert_eq!(member_field_user(&member_field("n1", "u"), "n2"), None);
    }

    #[test]
    fn channel_refs_split_back() {
        assert_eq!(
            split_channel_ref(&channel_ref("1", "presence-a")),
            Some(("1", "presence-a"))
        );
    }

    #[test]
    fn a_channels_keys_and_topic_share_one_slot() {
        let k = Keys::new("p");
        let c = k.channel("1", "presence-room");
        let all = [
            c.topic(),
            c.count(),
            c.shares(),
            c.members(),
            c.infos(),
            c.member_shares(),
            c.held(),
            c.cache(),
        ];
        for key in &all {
            assert!(key.starts_with("p:"), "{key}");
            assert_eq!(hash_tag(key), "1:presence-room", "{key}");
        }
        assert_ne!(
            hash_tag(&k.channel("1", "other").topic()),
            "1:presence-room"
        );
        assert_eq!(hash_tag(&k.watch("1", "alice").topic()), "1:#watch:alice");
        for key in [
            k.nodes(),
            k.alive("n"),
            k.node_channels("n"),
            k.app_channels("1"),
            k.held_index(),
        ] {
            assert!(key.starts_with("p:") && !key.contains('{'), "{key}");
        }
    }
}
