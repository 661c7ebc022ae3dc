// The WebSocket protocol at the frame level, with a raw `ws` client: handshake
// errors, ping/pong both ways, size limits, slow consumers, app isolation.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import PusherServer from 'pusher';
import { startBroker } from './lib/broker.mjs';

const CONFIG = `
activity_timeout = 1
pong_timeout = 1
send_queue = 8
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
limits = { max_ws_message_bytes = 4096 }
[[apps]]
id = "2"
key = "key-2"
secret = "secret-2"
[[apps]]
id = "3"
key = "off-key"
secret = "s3"
enabled = false
[[apps]]
id = "4"
key = "tiny-key"
secret = "s4"
limits = { max_connections = 1 }
`;

let broker;
before(async () => {
  broker = await startBroker({ config: CONFIG });
});
after(async () => broker?.stop());

/** A raw client that records every frame and the close. */
function rawClient(path = '/app/app-key?protocol=7&client=test&version=1', port = broker.port) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`);
  const frames = [];
  const waiters = [];
  let closed = null;
  ws.on('message', (m) => {
    const f = JSON.parse(m.toString());
    frames.push(f);
    for (const w of [...waiters]) w();
  });
  ws.on('close', (code, reason) => {
    closed = { code, reason: reason.toString() };
    for (const w of [...waiters]) w();
  });
  ws.on('error', () => {});
  const until = (pred, what, ms = 5000) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const v = pred();
        if (v) {
          waiters.splice(waiters.indexOf(check), 1);
          clearTimeout(t);
          resolve(v);
        }
      };
      const t = setTimeout(() => {
        waiters.splice(waiters.indexOf(check), 1);
        reject(new Error(`timed out waiting for ${what}; frames: ${JSON.stringify(frames)} closed: ${JSON.stringify(closed)}`));
      }, ms);
      waiters.push(check);
      check();
    });
  return {
    ws,
    frames,
    send: (obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)),
    until,
    event: (name, extra = () => true) => until(() => frames.find((f) => f.event === name && extra(f)), name),
    closed: (ms) => until(() => closed, 'close', ms),
    connected: async function () {
      const f = await this.event('pusher:connection_established');
      return JSON.parse(f.data);
    },
  };
}

test('connection_established carries a socket id and the activity timeout as a JSON string', async () => {
  const c = rawClient();
  const f = await c.event('pusher:connection_established');
  assert.equal(typeof f.data, 'string');
  const data = JSON.parse(f.data);
  assert.match(data.socket_id, /^\d+\.\d+$/);
  assert.equal(data.activity_timeout, 1);
  c.ws.close();
});

for (const [name, path, code] of [
  ['unknown app key', '/app/nope?protocol=7', 4001],
  ['disabled app', '/app/off-key?protocol=7', 4003],
  ['missing protocol version', '/app/app-key', 4008],
  ['non-numeric protocol version', '/app/app-key?protocol=abc', 4006],
  ['unsupported protocol version', '/app/app-key?protocol=99', 4007],
]) {
  test(`${name} -> pusher:error ${code} and close`, async () => {
    const c = rawClient(path);
    const err = await c.event('pusher:error');
    assert.equal(err.data.code, code);
    assert.ok(err.data.message.length > 0);
    const closed = await c.closed();
    assert.equal(closed.code, code);
  });
}

test('connection quota -> 4004 for the connection over it', async () => {
  const first = rawClient('/app/tiny-key?protocol=7');
  await first.connected();
  const second = rawClient('/app/tiny-key?protocol=7');
  const err = await second.event('pusher:error');
  assert.equal(err.data.code, 4004);
  assert.equal((await second.closed()).code, 4004);
  first.ws.close();
  await first.closed();
  // The slot is given back when the first connection ends.
  const third = rawClient('/app/tiny-key?protocol=7');
  await third.connected();
  third.ws.close();
});

test('client ping gets a pong', async () => {
  const c = rawClient();
  await c.connected();
  c.send({ event: 'pusher:ping', data: {} });
  await c.event('pusher:pong');
  c.ws.close();
});

test('a silent client is pinged, and closed with 4201 when it does not answer', async () => {
  const c = rawClient();
  await c.connected();
  await c.event('pusher:ping');
  const closed = await c.closed(5000);
  assert.equal(closed.code, 4201);
});

test('a client that answers pings stays connected', async () => {
  const c = rawClient();
  await c.connected();
  let pings = 0;
  c.ws.on('message', (m) => {
    if (JSON.parse(m.toString()).event === 'pusher:ping') {
      pings++;
      c.send({ event: 'pusher:pong', data: {} });
    }
  });
  await new Promise((r) => setTimeout(r, 3500));
  assert.ok(pings >= 2, `expected repeated pings, got ${pings}`);
  assert.equal(c.ws.readyState, WebSocket.OPEN);
  c.ws.close();
});

test('malformed and unknown frames get pusher:error and do not close the connection', async () => {
  const c = rawClient();
  await c.connected();
  c.send('not json');
  await c.event('pusher:error');
  c.send({ event: 'pusher:subscribe', data: { nochannel: 1 } });
  await c.until(() => c.frames.filter((f) => f.event === 'pusher:error').length >= 2, 'second error');
  c.send({ event: 'pusher:subscribe', data: { channel: 'bad channel!' } });
  c.send({ event: 'pusher:subscribe', data: { channel: 'ok-channel' } });
  await c.event('pusher_internal:subscription_succeeded', (f) => f.channel === 'ok-channel');
  assert.ok(c.frames.filter((f) => f.event === 'pusher:error').length >= 3);
  assert.ok(!c.frames.some((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === 'bad channel!'));
  c.ws.close();
});

test('subscribe data may be sent as a JSON string', async () => {
  const c = rawClient();
  await c.connected();
  c.send({ event: 'pusher:subscribe', data: JSON.stringify({ channel: 'stringy' }) });
  const ok = await c.event('pusher_internal:subscription_succeeded');
  assert.equal(ok.channel, 'stringy');
  c.ws.close();
});

test('a message over max_ws_message_bytes closes the connection with 1009', async () => {
  const c = rawClient();
  await c.connected();
  c.send({ event: 'client-x', channel: 'private-a', data: 'x'.repeat(5000) });
  const closed = await c.closed();
  assert.equal(closed.code, 1009);
});

test('private channel without a valid auth gets a channel-scoped subscription_error', async () => {
  const c = rawClient();
  const { socket_id } = await c.connected();
  c.send({ event: 'pusher:subscribe', data: { channel: 'private-x', auth: 'app-key:' + '0'.repeat(64) } });
  const e = await c.event('pusher:subscription_error');
  assert.equal(e.channel, 'private-x');
  assert.equal(e.data.status, 401);
  assert.equal(e.data.type, 'AuthError');
  c.send({ event: 'pusher:subscribe', data: { channel: 'private-y' } });
  await c.event('pusher:subscription_error', (f) => f.channel === 'private-y');
  // A signature for another socket is refused too.
  const sdk = new PusherServer({ appId: '1', key: 'app-key', secret: 'app-secret' });
  const other = sdk.authorizeChannel('1.1', 'private-z');
  c.send({ event: 'pusher:subscribe', data: { channel: 'private-z', auth: other.auth } });
  await c.event('pusher:subscription_error', (f) => f.channel === 'private-z');
  const good = sdk.authorizeChannel(socket_id, 'private-z');
  c.send({ event: 'pusher:subscribe', data: { channel: 'private-z', auth: good.auth } });
  await c.event('pusher_internal:subscription_succeeded', (f) => f.channel === 'private-z');
  c.ws.close();
});

test('presence subscription without channel_data, or with bad channel_data, is refused with 400', async () => {
  const c = rawClient();
  const { socket_id } = await c.connected();
  const sdk = new PusherServer({ appId: '1', key: 'app-key', secret: 'app-secret' });
  c.send({ event: 'pusher:subscribe', data: { channel: 'presence-a', auth: sdk.authorizeChannel(socket_id, 'presence-a').auth } });
  const e = await c.event('pusher:subscription_error', (f) => f.channel === 'presence-a');
  assert.equal(e.data.status, 400);
  const bad = '{"no_user_id":1}';
  const auth = sdk.authorizeChannel(socket_id, 'presence-b', { no_user_id: 1 }).auth;
  c.send({ event: 'pusher:subscribe', data: { channel: 'presence-b', auth, channel_data: bad } });
  const e2 = await c.event('pusher:subscription_error', (f) => f.channel === 'presence-b');
  assert.equal(e2.data.status, 400);
  c.ws.close();
});

test('a #server-to-user- channel cannot be subscribed to without signing in as that user', async () => {
  const c = rawClient();
  await c.connected();
  c.send({ event: 'pusher:subscribe', data: { channel: '#server-to-user-someone' } });
  const e = await c.event('pusher:subscription_error', (f) => f.channel === '#server-to-user-someone');
  assert.equal(e.data.status, 403);
  c.ws.close();
});

test('events never cross apps', async () => {
  const a = rawClient('/app/app-key?protocol=7');
  const b = rawClient('/app/key-2?protocol=7');
  await Promise.all([a.connected(), b.connected()]);
  a.send({ event: 'pusher:subscribe', data: { channel: 'shared' } });
  b.send({ event: 'pusher:subscribe', data: { channel: 'shared' } });
  await Promise.all([a.event('pusher_internal:subscription_succeeded'), b.event('pusher_internal:subscription_succeeded')]);
  const sdk2 = new PusherServer({ appId: '2', key: 'key-2', secret: 'secret-2', host: '127.0.0.1', port: String(broker.port), useTLS: false });
  const sdk1 = new PusherServer({ appId: '1', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: String(broker.port), useTLS: false });
  await sdk2.trigger('shared', 'for-two', {});
  await sdk1.trigger('shared', 'for-one', {});
  await b.event('for-two');
  await a.event('for-one');
  assert.ok(!a.frames.some((f) => f.event === 'for-two'));
  assert.ok(!b.frames.some((f) => f.event === 'for-one'));
  a.ws.close();
  b.ws.close();
});

test('a consumer that stops reading is disconnected instead of buffered without limit', async () => {
  // Default keep-alive timers here, so only the queue overflow can end the connection.
  const big = await startBroker({
    config: `send_queue = 8
[[apps]]
id = "5"
key = "big-key"
secret = "s5"
limits = { max_event_data_bytes = 200000, max_ws_message_bytes = 300000 }
`,
  });
  after(() => big.stop());
  const slow = rawClient('/app/big-key?protocol=7', big.port);
  await slow.connected();
  slow.send({ event: 'pusher:subscribe', data: { channel: 'firehose' } });
  await slow.event('pusher_internal:subscription_succeeded');
  // Stop reading: the kernel buffers fill, then the broker's queue (send_queue = 8).
  slow.ws._socket.pause();
  const sdk = new PusherServer({ appId: '5', key: 'big-key', secret: 's5', host: '127.0.0.1', port: String(big.port), useTLS: false });
  const data = 'y'.repeat(150000);
  let occupied = true;
  for (let i = 0; i < 1000 && occupied; i++) {
    await sdk.trigger('firehose', 'bulk', data);
    if (i % 20 === 19) {
      const res = await sdk.get({ path: '/channels/firehose' });
      occupied = (await res.json()).occupied;
    }
  }
  assert.equal(occupied, false, 'the slow subscriber should have been dropped');
  slow.ws._socket.resume();
  const closed = await slow.closed(10000);
  assert.notEqual(closed.code, 1000);
});
