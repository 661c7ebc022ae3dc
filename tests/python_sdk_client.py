"""Drives the official Python `pusher` SDK against the broker for tests/python-sdk.test.mjs.

Connection settings come from the environment: PUSHER_HOST, PUSHER_PORT,
PUSHER_APP_ID, PUSHER_KEY, PUSHER_SECRET.

argv[1] is a JSON list of calls, run in order; each is an object with "op" and
the call's arguments, and may override "app_id", "key" or "secret":

    {"op": "trigger", "channels": [...], "event": "e", "data": ..., "socket_id": "1.2"}
    {"op": "trigger_batch", "batch": [{"channel": ..., "name": ..., "data": ...}]}
    {"op": "oversized_batch", "bytes": 2097152}   (one event of that much data, past the SDK's own checks)
    {"op": "channel_info", "channel": "c", "attributes": ["subscription_count"]}
    {"op": "channels_info", "prefix_filter": "presence-", "attributes": ["user_count"]}
    {"op": "users_info", "channel": "presence-c"}
    {"op": "history", "channel": "c", "params": {"limit": "2"}}   (the SDK's signed Request, GET)

Prints one JSON list to stdout: {"ok": result} or {"error": class name,
"message": text} per call, in order. Exits non-zero only on a bad argument.
"""

import json
import os
import sys

import pusher
from pusher.errors import PusherError
from pusher.http import GET, Request


def client(op):
    return pusher.Pusher(
        app_id=op.get("app_id", os.environ["PUSHER_APP_ID"]),
        key=op.get("key", os.environ["PUSHER_KEY"]),
        secret=op.get("secret", os.environ["PUSHER_SECRET"]),
        host=os.environ.get("PUSHER_HOST", "127.0.0.1"),
        port=int(os.environ["PUSHER_PORT"]),
        ssl=False,
        timeout=5,
    )


def run(op):
    c = client(op)
    kind = op["op"]
    if kind == "trigger":
        return c.trigger(op["channels"], op["event"], op["data"], socket_id=op.get("socket_id"))
    if kind == "trigger_batch":
        return c.trigger_batch(op["batch"])
    if kind == "oversized_batch":
        # already_encoded skips the SDK's size check, so the body reaches the broker's limit.
        batch = [{"channel": "py-big", "name": "e", "data": "x" * op["bytes"]}]
        return c.trigger_batch(batch, already_encoded=True)
    if kind == "channel_info":
        return c.channel_info(op["channel"], attributes=op.get("attributes", []))
    if kind == "channels_info":
        return c.channels_info(prefix_filter=op.get("prefix_filter"), attributes=op.get("attributes", []))
    if kind == "users_info":
        return c.users_info(op["channel"])
    if kind == "history":
        # The SDK has no public generic GET: its own signed Request, sent by its backend.
        pc = c._pusher_client
        path = "/apps/%s/channels/%s/history" % (pc.app_id, op["channel"])
        return pc.http.send_request(Request(pc, GET, path, op.get("params", {})))
    raise SystemExit("unknown op %r" % kind)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: python_sdk_client.py '<json list of calls>'")
    results = []
    for op in json.loads(sys.argv[1]):
        try:
            results.append({"ok": run(op)})
        except PusherError as e:
            results.append({"error": type(e).__name__, "message": str(e)})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
