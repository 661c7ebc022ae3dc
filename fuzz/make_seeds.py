#!/usr/bin/env python3
"""Writes the seed corpus in corpus/<target>/: realistic inputs, correctly signed
where a signature is involved (Pusher's published example key and secret, socket
id 1234.1234, REST timestamp 1353088179 -- the values in src/lib.rs).

Run from anywhere; it rewrites the seeds it owns (seed-*) and leaves files the
fuzzer or a regression added alone.
"""
import hashlib, hmac, json, os, urllib.parse

KEY, SECRET, SID, NOW = "278d425bdf160c739803", "7ad3773142a6692b25b8", "1234.1234", 1353088179
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def sig(message, secret=SECRET):
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def channel_auth(channel, data=None):
    return f"{KEY}:{sig(f'{SID}:{channel}' + (f':{data}' if data is not None else ''))}"


def user_auth(user_data):
    return f"{KEY}:{sig(f'{SID}::user::{user_data}')}"


def write(target, seeds):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for i, s in enumerate(seeds):
        with open(os.path.join(d, f"seed-{i:02}"), "wb") as fh:
            fh.write(s if isinstance(s, bytes) else s.encode())


def j(o):
    return json.dumps(o, separators=(",", ":"))


presence_data = j({"user_id": "42", "user_info": {"name": "Ada", "avatar": "https://x/a.png"}})
numeric_presence = j({"user_id": 7})
user_data = j({"id": "42", "user_info": {"name": "Ada"}, "watchlist": ["1", "2", 3]})

frames = [
    j({"event": "pusher:ping", "data": {}}),
    j({"event": "pusher:pong", "data": "{}"}),
    j({"event": "pusher:subscribe", "data": {"channel": "news"}}),
    j({"event": "pusher:subscribe", "data": j({"channel": "cache-scores"})}),
    j({"event": "pusher:subscribe", "data": {"auth": channel_auth("private-room-1"), "channel": "private-room-1"}}),
    j({"event": "pusher:subscribe", "data": j({"auth": channel_auth("private-room-1"), "channel": "private-room-1"})}),
    j({"event": "pusher:subscribe", "data": {"auth": channel_auth("private-encrypted-x"), "channel": "private-encrypted-x"}}),
    j({"event": "pusher:subscribe", "data": {"auth": channel_auth("presence-room", presence_data), "channel": "presence-room", "channel_data": presence_data}}),
    j({"event": "pusher:subscribe", "data": {"auth": channel_auth("presence-cache-r", numeric_presence), "channel": "presence-cache-r", "channel_data": json.loads(numeric_presence)}}),
    j({"event": "pusher:subscribe", "data": {"auth": KEY + ":00", "channel": "private-room-1"}}),
    j({"event": "pusher:subscribe", "data": {"channel": "#server-to-user-42"}}),
    j({"event": "pusher:subscribe", "data": {"channel": "bad name"}}),
    j({"event": "pusher:subscribe", "data": {"channel": "x" * 170}}),
    j({"event": "pusher:unsubscribe", "data": {"channel": "private-room-1"}}),
    j({"event": "pusher:unsubscribe", "data": j({"channel": "news"})}),
    j({"event": "pusher:signin", "data": {"auth": user_auth(user_data), "user_data": user_data}}),
    j({"event": "pusher:signin", "data": j({"auth": user_auth(j({"id": 5})), "user_data": j({"id": 5})})}),
    j({"event": "pusher:signin", "data": {"auth": "nokey", "user_data": {"id": ""}}}),
    j({"event": "client-typing", "channel": "private-room-1", "data": {"user": "Ada", "typing": True}}),
    j({"event": "client-msg", "channel": "presence-room", "data": "plain text"}),
    j({"event": "client-x", "channel": "presence-room", "data": [1, 2.5, None, {"a": [True]}]}),
    j({"event": "client-nochannel", "data": {}}),
    j({"event": "client-\u00e9v\u00e9nement", "channel": "private-\u00e9", "data": {"emoji": "\U0001F600"}}),
    j({"event": "pusher:unknown", "data": {}}),
    j({"event": "my-event", "channel": "news"}),
    '{"event":"pusher:subscribe","data":"{\\"channel\\":\\"a\\""}',
    '{"event":"pusher:subscribe"}',
    '{"data":{}}',
    '[{"event":"pusher:ping"}]',
    '{"event":null}',
    '{"event":"client-deep","channel":"private-a","data":' + "[" * 100 + "]" * 100 + "}",
    '{"event":"pusher:ping","event":"pusher:pong"}',
    "not json",
    "",
]

names = []
for n in ["news", "private-room-1", "private-encrypted-cache-x", "presence-cache-lobby", "cache-", "#server-to-user-42",
          "#server-to-user-", "#server-to-user-a#b", "AZaz09_-=@,.;", "a b", "caf\u00e9", "x" * 164, "x" * 165,
          "client-typing", "client-", "ev\nent", "e" * 200, "e" * 201, "123.456", "0001.2", "1.2.3", "99999999999999999999.1",
          "18446744073709551615.18446744073709551615", "18446744073709551616.1", "-1.2", "", "privatechat", "presence-", "\u0000"]:
    names.append(bytes([164]) + n.encode())
names += [bytes([3]) + b"abcd", bytes([0]) + b"a", bytes([255]) + b"private-" + b"y" * 200]

trigger = {"name": "new-message", "channel": "chat-1", "data": j({"text": "hi"})}
bodies = [
    j(trigger),
    j({"name": "e", "channels": ["a", "b", "presence-c"], "data": "x", "socket_id": SID, "info": "user_count,subscription_count"}),
    j({"name": "e", "channel": "c", "data": {"object": True}}),
    j({"name": "e", "channel": "c", "data": 42}),
    j({"name": "e", "channels": ["private-encrypted-a"], "data": "ciphertext"}),
    j({"name": "e", "channels": ["private-encrypted-a", "b"], "data": "x"}),
    j({"name": "e", "channel": "c", "channels": ["c"], "data": "x"}),
    j({"name": "e", "data": "x"}),
    j({"name": "e", "channels": [], "data": "x"}),
    j({"name": "e", "channels": [f"c{i}" for i in range(101)], "data": "x"}),
    j({"name": "e", "channel": "c", "data": "x" * 10241}),
    j({"name": "e", "channel": "c", "data": "x", "socket_id": "1.2.3"}),
    j({"name": "e", "channel": "c", "data": "x", "info": "cache"}),
    j({"name": "e", "channel": "c", "data": "x", "info": "bogus"}),
    j({"name": "", "channel": "c", "data": "x"}),
    j({"name": "e", "channel": "#server-to-user-1", "data": "x"}),
    j({"name": "e", "channel": "c"}),
    j({"batch": [trigger, {"name": "e2", "channel": "cache-c", "data": "y", "info": "subscription_count"}]}),
    j({"batch": [{"name": "e", "channels": ["a"], "data": "x"}]}),
    j({"batch": [{"name": "e", "channels": ["a", "b"], "data": "x"}]}),
    j({"batch": [trigger] * 11}),
    j({"batch": []}),
    j({"batch": [{"name": "e", "channel": "c", "data": "x" * 10241}]}),
    '{"batch":{}}',
    '{"name":"e","channel":"c","data":"\\ud800"}',
    '{"name":"e","channel":"c","data":"x"} trailing',
    "[]",
    "",
]


def rest(method, path, params, body=b""):
    all_ = dict(params)
    all_.update(auth_key=KEY, auth_timestamp=str(NOW), auth_version="1.0")
    if body:
        all_["body_md5"] = hashlib.md5(body).hexdigest()
    to_sign = "\n".join([method, path, "&".join(f"{k}={v}" for k, v in sorted((k.lower(), v) for k, v in all_.items()))])
    all_["auth_signature"] = sig(to_sign)
    return f"{method}\n{path}\n{urllib.parse.urlencode(all_)}\n".encode() + body


queries = [
    rest("POST", "/apps/3/events", {}, j({"name": "foo", "channels": ["project-3"], "data": j({"some": "data"})}).encode()),
    rest("POST", "/apps/1/batch_events", {}, j({"batch": [trigger]}).encode()),
    rest("GET", "/apps/1/channels", {"filter_by_prefix": "presence-", "info": "user_count"}),
    rest("GET", "/apps/1/channels/presence-room", {"info": "user_count,subscription_count"}),
    rest("GET", "/apps/1/channels/presence-room/users", {}),
    rest("GET", "/apps/1/channels/cache-x", {"info": "cache", "body_md5": hashlib.md5(b"").hexdigest()}),
    rest("POST", "/apps/1/users/42/terminate_connections", {}, b"{}"),
    rest("GET", "/apps/1/channels", {"Filter_By_Prefix": "a b&c=d", "z": "", "a": "\u00e9"}),
    b"POST\n/apps/1/events\nauth_key=278d425bdf160c739803&auth_timestamp=1&auth_version=1.0&auth_signature=00\n{}",
    b"GET\n/apps/1/channels\nauth_key=x&auth_key=278d425bdf160c739803\n",
    b"GET\n/apps/1/channels\n%zz=%\n",
    b"GET\n/\n\n",
    rest("POST", "/apps/1/events", {}, j({"name": "e", "channels": ["a", "b"], "data": "x", "socket_id": "1.2"}).encode()),
    rest("POST", "/apps/1/events", {"info": "subscription_count"}, j(trigger).encode()),
    rest("post", "/apps/1/events", {}, b"{}"),
    rest("GET", "/apps/app-1/channels", {"filter_by_prefix": "private-"}),
    rest("GET", "/apps/1/channels/%23server-to-user-1", {}),
    rest("GET", "/apps/1/channels", {"a": "1", "A": "2", "b": "=&="}),
    rest("POST", "/apps/1/batch_events", {}, j({"batch": [trigger] * 10}).encode()),
    rest("POST", "/apps/1/events", {}, "{\"name\":\"\u00e9\",\"channel\":\"c\",\"data\":\"\u00e9\"}".encode()),
    rest("GET", "/apps/1/channels", {}).replace(b"auth_version=1.0", b"auth_version=2.0"),
    rest("GET", "/apps/1/channels", {}).replace(str(NOW).encode(), str(NOW + 601).encode()),
    rest("GET", "/apps/1/channels", {}).replace(str(NOW).encode(), b"-1"),
    rest("GET", "/apps/1/channels", {}).replace(b"auth_key=", b"auth_key=x"),
    rest("POST", "/apps/1/events", {}, b"{}").replace(b"body_md5=", b"body_md5=0"),
    rest("GET", "/apps/1/channels", {}).replace(b"&auth_signature=", b"&AUTH_SIGNATURE=x&auth_signature="),
]

cd = presence_data
auths = [
    f"{SECRET}\n{SID}\nprivate-foobar\n\n{user_data}\n{channel_auth('private-foobar')}",
    f"{SECRET}\n{SID}\npresence-room\n{cd}\n{user_data}\n{channel_auth('presence-room', cd)}",
    f"{SECRET}\n{SID}\nprivate-a\n\n{j({'id': 1})}\n{user_auth(j({'id': 1}))}",
    f"{SECRET}\n{SID}\nprivate-a\n\n{j({'id': 1})}\n{user_auth(j({'id': 1})).upper()}",
    f"another-secret\n1.2\nprivate-b\n\n{{}}\n{KEY}:zz",
    f"s\n18446744073709551615.0\nprivate-\u00e9\n{{\"user_id\":\"\u00e9\"}}\n\u00e9\n{KEY}",
    f"{SECRET}\nnot-an-id\nx\n\n\n:",
    f"{SECRET}\n{SID}\nprivate-foobar\n\n\n{KEY}:{'0' * 64}",
    f"{SECRET}\n{SID}\nprivate-foobar\n\n\n{KEY}:{'0' * 63}",
    f"{SECRET}\n{SID}\nprivate-foobar\n\n\n{KEY}:{'0' * 66}",
    "\n\n\n\n\n",
    f"{SECRET}\n{SID}\nprivate-encrypted-x\n\n{j({'id': 'a', 'watchlist': ['b']})}\n{channel_auth('private-encrypted-x')}",
    f"{SECRET}\n{SID}\npresence-cache-x\n{numeric_presence}\n\n{channel_auth('presence-cache-x', numeric_presence)}",
    f"{SECRET}\n{SID}\nprivate-a\n\n\n{channel_auth('private-a')}:extra",
    f"{SECRET}\n{SID}\nprivate-a\n\n\n:{channel_auth('private-a')}",
    f"{SECRET}\n{SID}\nprivate-a\n\n\n{channel_auth('private-a')[:-2]}",
    f"{SECRET}\n{SID}\nprivate-a\n\n\n{channel_auth('private-a')} ",
    f"{SECRET}\n{SID}\nprivate-a\n\n\n{KEY.upper()}:{channel_auth('private-a').split(':')[1]}",
    f"{SECRET}\n0.0\n#server-to-user-1\n\n{j({'id': '1'})}\n",
    f"x\n{SID}\nprivate-a\n\n\n{KEY}:{sig(f'{SID}:private-a', 'x')}",
    f"{'s' * 200}\n{SID}\nprivate-a\n\n\n{KEY}:{sig(f'{SID}:private-a', 's' * 200)}",
    f"{SECRET}\n{SID}\nprivate-a:b\nc\n\n{channel_auth('private-a', 'b:c')}",
    f"{SECRET}\n{SID}\n\u00e9\n\u00e9\n\u00e9\n\u00e9:\u00e9",
    f"{SECRET}\n{SID}\nprivate-a\n\n\n{KEY}:{'g' * 64}",
]

user_datas = [
    presence_data, numeric_presence, user_data,
    j({"user_id": "a", "user_info": None}), j({"user_id": 1.5}), j({"user_id": -3}), j({"user_id": ""}), j({"user_id": None}),
    j({"user_id": "u", "user_info": "x" * 2000}), j({"user_id": "u", "user_info": [[[[{}]]]]}),
    j({"id": "1"}), j({"id": 18446744073709551615}), j({"id": "a b"}), j({"id": "#x"}), j({"id": "1", "watchlist": []}),
    j({"id": "1", "watchlist": [{"nested": 1}, None, True, 1e300]}), j({"id": "1", "watchlist": "not a list"}),
    j({"id": "\u00e9\U0001F600", "user_info": {"name": "\u0000"}}), '{"user_id":1e400}', '{"id":-0}',
    '{"user_id":"1","user_id":"2"}', '{"id":"1"}  ', '{"id":"1"', "null", '"{\\"id\\":\\"1\\"}"', "",
]

# fallback_send: the first byte picks the message limit (< 128: that many bytes; else the default).
ping = j({"event": "pusher:ping", "data": {}})
subscribe = j({"event": "pusher:subscribe", "data": {"channel": "private-a", "auth": channel_auth("private-a")}})
fallback_sends = [
    b"\xff[]", b"\xff" + j([ping]).encode(), b"\xff" + j([subscribe, ping]).encode(), b"\x05" + j(["ok", "far too long"]).encode(),
    b"\x0a" + j(['"' * 10]).encode(), b"\xff[1]", b"\xff{}", b"\xff[\"a\"", b"\xff" + j(["\u00e9\U0001F600"]).encode(),
    b'\xff["\\ud800"]', b"\xffxhr_streaming", b"\xffxhr_send", b"\xffxhr", b"\xff8c3f2a9d", b"\xff../../etc", b"\x00" + b" " * 100,
]

# history_request: first byte even = a pusher:subscribe frame with a history field; odd = a REST history query.
def hsub(history):
    return b"\x10" + j({"event": "pusher:subscribe", "data": {"channel": "history-a", "history": history}}).encode()
history_requests = [
    hsub({}), hsub({"epoch": "0123456789abcdef", "position": 7, "socket_ids": ["1.2", "3.4"]}),
    hsub({"rewind": {"count": 5}}), hsub({"rewind": {"seconds": 30}}), hsub({"rewind": {"count": 500}}),
    hsub({"epoch": "e"}), hsub({"epoch": "", "position": 1}), hsub([]), hsub({"socket_ids": ["x"] * 5}),
    hsub({"epoch": "e", "position": 18446744073709551615}),
    b"\x01limit=10&direction=oldest_first&start=1&end=5", b"\x01limit=0", b"\x01direction=sideways", b"\x01start=9&end=2",
    b"\x01start=-1", b"\x01limit=99999999999999999999999",
]
write("history_request", history_requests)

write("client_frame", frames)
write("names", names)
write("rest_body", bodies)
write("rest_query", queries)
write("auth_signatures", auths)
write("user_data", user_datas)
write("fallback_send", fallback_sends)
