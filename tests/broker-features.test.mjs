// Issue 5 features with the stock clients: encrypted channels, cache channels,
// user sign-in (sendToUser, terminate_connections, watchlist), subscription
// counts, webhooks, quotas and origins, and laravel-echo.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import WebSocket from 'ws';
import PusherJS from 'pusher-js';
import Echo from 'laravel-echo';
import { freePort, startBroker } from './lib/broker.mjs';
import { connect, eventually, expectRequestError, sdkFor, subscribe, withTimeout } from './lib/clients.mjs';

const MASTER_KEY = Buffer.alloc(32, 7).toString('base64');

/** A local HTTP receiver for webhooks. `fail` answers 500 to the first n requests. */
async function webhookReceiver() {
  const port = await freePort();
  const received = [];
  let failFirst = 0;
  let requests = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      requests++;
      if (failFirst > 0) {
        failFirst--;
        res.writeHead(500).end('try later');
        return;
      }
      received.push({ headers: req.headers, rawBody: body });
      res.writeHead(200).end('ok');
    });
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    received,
    requests: () => requests,
    failNext: (n) => (failFirst = n),
    events: () => received.flatMap((r) => JSON.parse(r.rawBody).events),
    close: () => new Promise((r) => {
      server.close(r);
      server.closeAllConnections();
    }),
  };
}

let hooks;
let broker;
let sdk;
let echoSdk;
const clients = [];
const track = (c) => (clients.push(c), c);

before(async () => {
  hooks = await webhookReceiver();
  broker = await startBroker({
    config: `
[webhooks]
batch_wait_ms = 20
backoff_ms = 100
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
subscription_count = true
webhooks = [{ url = "${hooks.url}" }]
[[apps]]
id = "2"
key = "limited-key"
secret = "limited-secret"
rest_requests_per_second = 2
allowed_origins = ["https://good.example"]
[[apps]]
id = "3"
key = "echo-key"
secret = "echo-secret"
`,
  });
  sdk = sdkFor(broker);
  echoSdk = sdkFor(broker, { appId: '3', key: 'echo-key', secret: 'echo-secret' });
});
after(async () => {
  for (const c of clients) c.disconnect();
  await broker?.stop();
  await hooks?.close();
});

test('private-encrypted: the SDK encrypts, the broker relays ciphertext untouched, pusher-js decrypts', async () => {
  const enc = sdkFor(broker);
  const encSdk = new (enc.constructor)({ appId: '1', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: String(broker.port), useTLS: false, encryptionMasterKeyBase64: MASTER_KEY });
  const p = track(await connect(broker, { sdk: encSdk }));
  const rec = await subscribe(p, 'private-encrypted-vault');
  // A plain subscriber with the raw protocol sees only ciphertext.
  const raw = new WebSocket(`ws://127.0.0.1:${broker.port}/app/app-key?protocol=7`);
  const frames = [];
  raw.on('message', (m) => frames.push(JSON.parse(m.toString())));
  const established = await withTimeout(new Promise((r) => raw.once('message', (m) => r(JSON.parse(JSON.parse(m.toString()).data)))), 'raw connect');
  raw.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'private-encrypted-vault', auth: encSdk.authorizeChannel(established.socket_id, 'private-encrypted-vault').auth } }));
  await eventually(() => assert.ok(frames.some((f) => f.event === 'pusher_internal:subscription_succeeded')), 'raw subscribed');

  await encSdk.trigger('private-encrypted-vault', 'secret', { plan: 'tuesday' });
  const [ev] = await rec.waitFor(1);
  assert.deepEqual(ev.data, { plan: 'tuesday' });
  const seen = await eventually(() => {
    const f = frames.find((x) => x.event === 'secret');
    assert.ok(f);
    return f;
  }, 'raw ciphertext');
  const payload = JSON.parse(seen.data);
  assert.ok(payload.nonce && payload.ciphertext, 'nonce and ciphertext relayed');
  assert.ok(!seen.data.includes('tuesday'), 'the broker never sees plaintext');

  // Client events are refused on encrypted channels.
  raw.send(JSON.stringify({ event: 'client-x', channel: 'private-encrypted-vault', data: {} }));
  await eventually(() => assert.ok(frames.some((f) => f.event === 'pusher:error')), 'client event refused');
  raw.close();
});

test('cache channels replay the last event to new subscribers, or send pusher:cache_miss', async () => {
  const p = track(await connect(broker, { sdk }));
  const miss = p.subscribe('cache-empty');
  await withTimeout(new Promise((r) => miss.bind('pusher:cache_miss', r)), 'cache_miss');

  await sdk.trigger('cache-weather', 'forecast', { sky: 'grey' });
  await sdk.trigger('cache-weather', 'forecast', { sky: 'blue' });
  const ch = p.subscribe('cache-weather');
  const got = await withTimeout(new Promise((r) => ch.bind('forecast', r)), 'cached event');
  assert.deepEqual(got, { sky: 'blue' }, 'only the last event is kept');

  const info = await (await sdk.get({ path: '/channels/cache-weather', params: { info: 'cache' } })).json();
  assert.equal(info.cache.event, 'forecast');
  assert.deepEqual(JSON.parse(info.cache.data), { sky: 'blue' });
  assert.ok(info.cache.ttl > 1700 && info.cache.ttl <= 1800, `ttl ${info.cache.ttl}`);
  const none = await (await sdk.get({ path: '/channels/cache-nothing', params: { info: 'cache' } })).json();
  assert.deepEqual(none, { occupied: false, cache: null });
  const notCache = await expectRequestError(() => sdk.get({ path: '/channels/plain', params: { info: 'cache' } }));
  assert.equal(notCache.status, 400);

  // Client events are relayed on private cache channels but never cached.
  const sender = track(await connect(broker, { sdk }));
  const senderCh = await subscribe(sender, 'private-cache-chat');
  senderCh.channel.trigger('client-said', { x: 1 });
  const late = track(await connect(broker, { sdk }));
  const lateCh = late.subscribe('private-cache-chat');
  await withTimeout(new Promise((r) => lateCh.bind('pusher:cache_miss', r)), 'cache_miss after a client event');
  await eventually(() => assert.ok(hooks.events().some((e) => e.name === 'cache_miss' && e.channel === 'cache-empty')), 'cache_miss webhook');
});

/** A raw protocol client signed in as `userId`; resolves once signin_success arrived. */
async function rawSignedIn(b, sdk, userId) {
  const ws = new WebSocket(`ws://127.0.0.1:${b.port}/app/app-key?protocol=7`);
  const frames = [];
  ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
  const closed = new Promise((r) => ws.on('close', (code) => r(code)));
  await eventually(() => assert.ok(frames[0]), 'connected');
  const auth = sdk.authenticateUser(JSON.parse(frames[0].data).socket_id, { id: userId });
  ws.send(JSON.stringify({ event: 'pusher:signin', data: auth }));
  await eventually(() => assert.ok(frames.some((f) => f.event === 'pusher:signin_success')), 'signin_success');
  return { ws, frames, closed };
}

test('sign-in: sendToUser reaches every connection of the user', async () => {
  const user = { user_id: 'u-42', user_info: {} };
  const mk = () =>
    track(
      new PusherJS('app-key', {
        cluster: 'mt1', wsHost: '127.0.0.1', wsPort: broker.port, forceTLS: false, enabledTransports: ['ws'],
        userAuthentication: { customHandler: ({ socketId }, cb) => cb(null, sdk.authenticateUser(socketId, { id: user.user_id, name: 'N' })) },
      }),
    );
  const a = mk();
  const b = mk();
  a.signin();
  b.signin();
  const got = [withTimeout(new Promise((r) => a.user.bind('note', r)), 'a note'), withTimeout(new Promise((r) => b.user.bind('note', r)), 'b note')];
  await eventually(() => assert.ok(a.user.user_data && b.user.user_data), 'both signed in');
  await eventually(async () => {
    const res = await sdk.get({ path: '/channels/%23server-to-user-u-42', params: { info: 'subscription_count' } });
    assert.equal((await res.json()).subscription_count, 2);
  }, 'two connections joined the user channel');
  await sdk.sendToUser('u-42', 'note', { n: 1 });
  assert.deepEqual(await Promise.all(got), [{ n: 1 }, { n: 1 }]);
  // pusher-js subscribes to its own user channel after signing in; that succeeds.
  await eventually(() => assert.equal(a.user.serverToUserChannel?.subscribed, true), 'user channel subscribed');
  a.disconnect();
  b.disconnect();
});

test('terminate_connections closes every connection of the user with 4009, and only those', async () => {
  // Raw clients: pusher-js (Node) keeps a 30 s close timer alive after a server-side 4009.
  const c1 = await rawSignedIn(broker, sdk, 'doomed');
  const c2 = await rawSignedIn(broker, sdk, 'doomed');
  const other = await rawSignedIn(broker, sdk, 'safe');
  await sdk.terminateUserConnections('doomed');
  assert.deepEqual(await withTimeout(Promise.all([c1.closed, c2.closed]), 'both closed'), [4009, 4009]);
  assert.ok(c1.frames.some((f) => f.event === 'pusher:error' && f.data.code === 4009));
  assert.equal(other.ws.readyState, WebSocket.OPEN);
  other.ws.close();
});

test('sign-in refuses a bad signature', async () => {
  const p = track(
    new PusherJS('app-key', {
      cluster: 'mt1', wsHost: '127.0.0.1', wsPort: broker.port, forceTLS: false, enabledTransports: ['ws'],
      userAuthentication: { customHandler: ({ socketId }, cb) => cb(null, { ...sdk.authenticateUser(socketId, { id: 'x' }), user_data: JSON.stringify({ id: 'admin' }) }) },
    }),
  );
  const errors = [];
  p.connection.bind('error', (e) => errors.push(e));
  p.signin();
  await eventually(() => assert.ok(errors.some((e) => e.data?.code === 4009)), 'signin refused with 4009');
  assert.equal(p.user.user_data, null);
});

test('watchlist: online and offline events for watched users', async () => {
  const raw = new WebSocket(`ws://127.0.0.1:${broker.port}/app/app-key?protocol=7`);
  const frames = [];
  raw.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await eventually(() => assert.ok(frames[0]), 'connected');
  const socketId = JSON.parse(frames[0].data).socket_id;
  const userData = JSON.stringify({ id: 'watcher', watchlist: ['friend'] });
  const auth = sdk.authenticateUser(socketId, { id: 'watcher', watchlist: ['friend'] });
  raw.send(JSON.stringify({ event: 'pusher:signin', data: { auth: auth.auth, user_data: auth.user_data } }));
  await eventually(() => assert.ok(frames.some((f) => f.event === 'pusher:signin_success')), 'signed in');
  assert.ok(userData);

  const friend = track(
    new PusherJS('app-key', {
      cluster: 'mt1', wsHost: '127.0.0.1', wsPort: broker.port, forceTLS: false, enabledTransports: ['ws'],
      userAuthentication: { customHandler: ({ socketId: s }, cb) => cb(null, sdk.authenticateUser(s, { id: 'friend' })) },
    }),
  );
  friend.signin();
  const watch = (name) => frames.filter((f) => f.event === 'pusher_internal:watchlist_events').map((f) => JSON.parse(f.data).events).flat().filter((e) => e.name === name);
  await eventually(() => assert.deepEqual(watch('online').map((e) => e.user_ids).flat(), ['friend']), 'online event');
  friend.disconnect();
  await eventually(() => assert.deepEqual(watch('offline').map((e) => e.user_ids).flat(), ['friend']), 'offline event');
  raw.close();

  // More than 100 watched users is refused.
  const greedy = new WebSocket(`ws://127.0.0.1:${broker.port}/app/app-key?protocol=7`);
  const seen = [];
  greedy.on('message', (m) => seen.push(JSON.parse(m.toString())));
  await eventually(() => assert.ok(seen[0]), 'connected');
  const many = Array.from({ length: 101 }, (_, i) => `u${i}`);
  const auth2 = sdk.authenticateUser(JSON.parse(seen[0].data).socket_id, { id: 'greedy', watchlist: many });
  greedy.send(JSON.stringify({ event: 'pusher:signin', data: auth2 }));
  await eventually(() => assert.ok(seen.some((f) => f.event === 'pusher:error' && /watchlist/.test(f.data.message))), 'watchlist limit');
  assert.ok(!seen.some((f) => f.event === 'pusher:signin_success'));
  greedy.close();
});

test('subscription_count is sent to subscribers when the app enables it', async () => {
  const a = track(await connect(broker, { sdk }));
  const b = track(await connect(broker, { sdk }));
  const chA = a.subscribe('counted');
  const counts = [];
  chA.bind('pusher:subscription_count', (d) => counts.push(d.subscription_count));
  await eventually(() => assert.deepEqual(counts, [1]), 'count 1');
  b.subscribe('counted');
  await eventually(() => assert.deepEqual(counts, [1, 2]), 'count 2');
  assert.equal(chA.subscriptionCount, 2);
  b.unsubscribe('counted');
  await eventually(() => assert.deepEqual(counts, [1, 2, 1]), 'count back to 1');
});

test('webhooks: signed, batched, each transition once, retried after failures', async () => {
  hooks.failNext(2);
  const before = hooks.received.length;
  const alice = track(await connect(broker, { sdk, user: { user_id: 'alice', user_info: {} } }));
  const alice2 = track(await connect(broker, { sdk, user: { user_id: 'alice', user_info: {} } }));
  const bob = track(await connect(broker, { sdk, user: { user_id: 'bob', user_info: {} } }));
  await subscribe(alice, 'presence-hooks');
  await subscribe(alice2, 'presence-hooks');
  const bobCh = await subscribe(bob, 'presence-hooks');
  bobCh.channel.trigger('client-hello', { hi: 1 });
  await new Promise((r) => setTimeout(r, 50));
  alice.unsubscribe('presence-hooks');
  alice2.unsubscribe('presence-hooks');
  bob.unsubscribe('presence-hooks');

  const forChannel = () => hooks.events().filter((e) => e.channel === 'presence-hooks');
  await eventually(() => assert.ok(forChannel().some((e) => e.name === 'channel_vacated')), 'vacated webhook', 10000);
  const names = forChannel().map((e) => e.name + (e.user_id ? `:${e.user_id}` : ''));
  assert.deepEqual(names.filter((n) => n === 'channel_occupied'), ['channel_occupied'], 'occupied once');
  assert.deepEqual(names.filter((n) => n === 'channel_vacated'), ['channel_vacated'], 'vacated once');
  assert.deepEqual(names.filter((n) => n.startsWith('member_added')).sort(), ['member_added:alice', 'member_added:bob']);
  assert.deepEqual(names.filter((n) => n.startsWith('member_removed')).sort(), ['member_removed:alice', 'member_removed:bob']);
  const client = forChannel().find((e) => e.name === 'client_event');
  assert.equal(client.event, 'client-hello');
  assert.deepEqual(JSON.parse(client.data), { hi: 1 });
  assert.equal(client.user_id, 'bob');
  assert.match(client.socket_id, /^\d+\.\d+$/);
  assert.ok(hooks.requests() >= hooks.received.length - before + 2, 'the failed attempts were retried');

  for (const r of hooks.received) {
    assert.equal(r.headers['x-pusher-key'], 'app-key');
    const wh = sdk.webhook({ headers: r.headers, rawBody: r.rawBody });
    assert.equal(wh.isValid(), true, 'signature verifies with the SDK');
    assert.ok(typeof wh.getTime() === 'object');
  }
});

test('REST rate limit answers 429; allowed origins refuse others with 4009', async () => {
  const limited = sdkFor(broker, { appId: '2', key: 'limited-key', secret: 'limited-secret' });
  let limitedStatus = null;
  for (let i = 0; i < 10 && limitedStatus === null; i++) {
    const err = await expectRequestError(() => limited.trigger('c', 'e', {})).catch(() => null);
    if (err) limitedStatus = err.status;
  }
  assert.equal(limitedStatus, 429);

  const refused = new WebSocket(`ws://127.0.0.1:${broker.port}/app/limited-key?protocol=7`, { origin: 'https://evil.example' });
  const code = await withTimeout(new Promise((r) => refused.on('close', r)), 'refused close');
  assert.equal(code, 4009);
  const ok = new WebSocket(`ws://127.0.0.1:${broker.port}/app/limited-key?protocol=7`, { origin: 'https://good.example' });
  const first = await withTimeout(new Promise((r) => ok.once('message', (m) => r(JSON.parse(m.toString())))), 'allowed connect');
  assert.equal(first.event, 'pusher:connection_established');
  ok.close();
});

test('laravel-echo: public, private, presence here/joining/leaving and whisper', async () => {
  const mkEcho = (user) => {
    const client = track(
      new PusherJS('echo-key', {
        cluster: 'mt1', wsHost: '127.0.0.1', wsPort: broker.port, forceTLS: false, enabledTransports: ['ws'],
        channelAuthorization: { customHandler: ({ socketId, channelName }, cb) => cb(null, echoSdk.authorizeChannel(socketId, channelName, channelName.startsWith('presence-') ? user : undefined)) },
      }),
    );
    return new Echo({ broadcaster: 'pusher', client });
  };
  const a = mkEcho({ user_id: 'ann', user_info: { name: 'Ann' } });
  const b = mkEcho({ user_id: 'ben', user_info: { name: 'Ben' } });

  // Public: Echo namespaces event names with App\\Events unless prefixed with '.'.
  const pub = withTimeout(new Promise((r) => a.channel('orders').listen('.OrderShipped', r)), 'public event');
  await eventually(async () => assert.equal((await (await echoSdk.get({ path: '/channels/orders' })).json()).occupied, true), 'echo subscribed');
  await echoSdk.trigger('orders', 'OrderShipped', { id: 7 });
  assert.deepEqual(await pub, { id: 7 });

  // Private (Echo adds the private- prefix).
  const priv = withTimeout(new Promise((r) => a.private('user.1').listen('.Secret', r)), 'private event');
  await eventually(async () => assert.equal((await (await echoSdk.get({ path: '/channels/private-user.1' })).json()).occupied, true), 'private subscribed');
  await echoSdk.trigger('private-user.1', 'Secret', { s: 1 });
  assert.deepEqual(await priv, { s: 1 });

  // Presence: here, joining, leaving; whisper between members.
  const here = withTimeout(new Promise((r) => a.join('room.1').here(r)), 'here');
  assert.deepEqual((await here).map((m) => m.name), ['Ann']);
  const joining = withTimeout(new Promise((r) => a.join('room.1').joining(r)), 'joining');
  const whisper = withTimeout(new Promise((r) => a.join('room.1').listenForWhisper('typing', r)), 'whisper');
  const bHere = withTimeout(new Promise((r) => b.join('room.1').here(r)), 'b here');
  assert.deepEqual((await bHere).map((m) => m.name).sort(), ['Ann', 'Ben']);
  assert.deepEqual(await joining, { name: 'Ben' });
  b.join('room.1').whisper('typing', { who: 'Ben' });
  assert.deepEqual(await whisper, { who: 'Ben' });
  const leaving = withTimeout(new Promise((r) => a.join('room.1').leaving(r)), 'leaving');
  b.leave('room.1');
  assert.deepEqual(await leaving, { name: 'Ben' });
});
