// Channel history and connection recovery with the stock pusher-js (Node build)
// and the project's helper (clients/pusher-recovery): a client cut off through a
// TCP proxy the test controls gets every event it missed, in order, once; a
// resume that cannot be proven continuous fails with a reason; subscriptions
// without the helper see exactly the frames they saw before; REST history pages.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import { startBroker } from './lib/broker.mjs';
import { startProxy } from './lib/proxy.mjs';
import { rawClient, sleep } from './lib/probe.mjs';
import { sdkFor, withTimeout, eventually } from './lib/clients.mjs';
import { enableRecovery } from '../clients/pusher-recovery/index.js';

const CONSOLE_TOKEN = 'history-console-token-0123456789';
const CONFIG = `
console_token = "${CONSOLE_TOKEN}"
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
limits = { client_events_per_second = 1000 }
history = { channels = ["history-", "private-history-"], max_events = 1000, max_age_secs = 300, client_events = true }

[[apps]]
id = "2"
key = "small-key"
secret = "small-secret"
history = { channels = ["*"], max_events = 5 }
`;

let broker;
let sdk;
const closers = [];

before(async () => {
  broker = await startBroker({ config: CONFIG });
  sdk = sdkFor(broker);
});
after(async () => {
  for (const c of closers.reverse()) await c();
  await broker?.stop();
});

/** A pusher-js client through `port`, with the helper on; auth signed by `server` (the node SDK). */
async function recovering(port, { key = 'app-key', server = sdk, options = {} } = {}) {
  const pusher = new Pusher(key, {
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => cb(null, server.authorizeChannel(socketId, channelName)),
    },
  });
  closers.push(async () => pusher.disconnect());
  const recovery = enableRecovery(pusher, options);
  return { pusher, recovery };
}

/** Subscribes and records every app-visible event and every recovery notice of the channel. */
function track(pusher, name) {
  const channel = pusher.subscribe(name);
  const events = [];
  const notices = [];
  channel.bind_global((event, data) => {
    if (!event.startsWith('pusher:')) events.push({ event, data });
  });
  channel.bind('pusher:recovery', (d) => notices.push(d));
  return { channel, events, notices };
}

function once(emitter, event, ms = 10000) {
  return withTimeout(new Promise((resolve) => emitter.bind(event, resolve)), event, ms);
}

/** The `n` of every recorded event, in order. */
const seqs = (events) => events.map((e) => e.data.n);

test('a client cut off for 10 s gets the 100 events it missed (REST and client events), in order, once, then live ones', async () => {
  const proxy = await startProxy(broker.port);
  closers.push(() => proxy.close());
  const { pusher } = await recovering(proxy.port);
  const room = 'private-history-room';
  const t = track(pusher, room);
  await once(t.channel, 'pusher:recovery');
  assert.equal(t.notices[0].status, 'subscribed');

  // Another client (no helper, straight to the broker) sends client events.
  const other = new Pusher('app-key', {
    cluster: 'mt1', wsHost: '127.0.0.1', wsPort: broker.port, forceTLS: false, enabledTransports: ['ws'],
    channelAuthorization: { customHandler: ({ socketId, channelName }, cb) => cb(null, sdk.authorizeChannel(socketId, channelName)) },
  });
  closers.push(async () => other.disconnect());
  const otherRoom = other.subscribe(room);
  await once(otherRoom, 'pusher:subscription_succeeded');

  let n = 0;
  const send = async () => {
    const i = n++;
    if (i % 2 === 0) await sdk.trigger(room, 'rest-event', { n: i });
    else assert.ok(otherRoom.trigger('client-event', { n: i }));
  };
  for (let i = 0; i < 3; i++) {
    await send();
    await eventually(() => assert.equal(t.events.length, i + 1), 'a live event before the cut', 5000);
  }

  proxy.cut();
  const cutAt = Date.now();
  for (let i = 0; i < 100; i++) {
    await send();
    await sleep(50);
  }
  await sleep(Math.max(0, 10000 - (Date.now() - cutAt)));
  assert.equal(t.events.length, 3, 'nothing arrived while cut off');
  proxy.restore();

  const recovered = await once(t.channel, 'pusher:recovered', 30000);
  assert.equal(recovered.status, 'recovered');
  assert.equal(recovered.replayed, 100);
  await eventually(() => assert.equal(t.events.length, 103), 'the replay', 10000);
  for (let i = 0; i < 3; i++) await send();
  await eventually(() => assert.equal(t.events.length, 106), 'the live events after the replay', 10000);
  // Each event once (REST and client events race each other to the broker, so
  // the order to expect is the broker's: its positions, read back over REST).
  assert.deepEqual([...seqs(t.events)].sort((a, b) => a - b), Array.from({ length: 106 }, (_, i) => i));
  const kept = [];
  for (const start of [1, 101]) {
    const page = await (await sdk.get({ path: `/channels/${room}/history`, params: { direction: 'oldest_first', start } })).json();
    kept.push(...page.events.map((e) => ({ event: e.event, n: (typeof e.data === 'string' ? JSON.parse(e.data) : e.data).n })));
  }
  assert.deepEqual(t.events.map((e) => ({ event: e.event, n: e.data.n })), kept, 'in the broker\'s order');
  for (const e of t.events) assert.equal(e.event, e.data.n % 2 === 0 ? 'rest-event' : 'client-event');
});

test('a client does not get back its own client events or the events it was excluded from', async () => {
  const proxy = await startProxy(broker.port);
  closers.push(() => proxy.close());
  const { pusher } = await recovering(proxy.port);
  const room = 'private-history-own';
  const t = track(pusher, room);
  await once(t.channel, 'pusher:recovery');
  const mySocket = pusher.connection.socket_id;
  // Sent just before the cut: the broker keeps them, excluded from this socket.
  assert.ok(t.channel.trigger('client-mine', { n: -1 }));
  await sdk.trigger(room, 'excluded', { n: -2 }, { socket_id: mySocket });
  await sdk.trigger(room, 'for-me', { n: 0 });
  await eventually(() => assert.deepEqual(seqs(t.events), [0]), 'the live event');
  proxy.cut();
  await sdk.trigger(room, 'excluded', { n: -3 }, { socket_id: mySocket });
  await sdk.trigger(room, 'for-me', { n: 1 });
  await sleep(300);
  proxy.restore();
  await once(t.channel, 'pusher:recovered', 30000);
  await sdk.trigger(room, 'for-me', { n: 2 });
  await eventually(() => assert.deepEqual(seqs(t.events), [0, 1, 2]), 'only what was meant for it');
});

test('a resume past the window fails with window_exceeded, then live events flow', async () => {
  const small = sdkFor(broker, { appId: '2', key: 'small-key', secret: 'small-secret' });
  const proxy = await startProxy(broker.port);
  closers.push(() => proxy.close());
  const { pusher } = await recovering(proxy.port, { key: 'small-key', server: small });
  const t = track(pusher, 'small-window');
  await once(t.channel, 'pusher:recovery');
  await small.trigger('small-window', 'e', { n: 0 });
  await eventually(() => assert.deepEqual(seqs(t.events), [0]), 'live event');
  proxy.cut();
  for (let i = 1; i <= 20; i++) await small.trigger('small-window', 'e', { n: i });
  proxy.restore();
  const failed = await once(t.channel, 'pusher:recovery_failed', 30000);
  assert.equal(failed.reason, 'window_exceeded');
  assert.equal(failed.position, 21);
  await small.trigger('small-window', 'e', { n: 21 });
  await eventually(() => assert.deepEqual(seqs(t.events), [0, 21]), 'no gap is filled silently; live continues');
});

test('a resume after the broker restarted fails with history_lost', async () => {
  const own = await startBroker({ config: CONFIG });
  closers.push(() => own.stop());
  const ownSdk = sdkFor(own);
  const proxy = await startProxy(own.port);
  closers.push(() => proxy.close());
  const { pusher } = await recovering(proxy.port, { server: ownSdk });
  const t = track(pusher, 'history-restart');
  await once(t.channel, 'pusher:recovery');
  await ownSdk.trigger('history-restart', 'e', { n: 0 });
  await eventually(() => assert.deepEqual(seqs(t.events), [0]), 'live event');
  proxy.cut();
  await own.stop();
  const again = await startBroker({ config: CONFIG });
  closers.push(() => again.stop());
  proxy.retarget(again.port);
  proxy.restore();
  const failed = await once(t.channel, 'pusher:recovery_failed', 30000);
  assert.equal(failed.reason, 'history_lost');
  const againSdk = sdkFor(again);
  await againSdk.trigger('history-restart', 'e', { n: 1 });
  await eventually(() => assert.deepEqual(seqs(t.events), [0, 1]), 'live after the failure');
});

test('rewind: a new subscriber asks for the last events before live ones', async () => {
  for (let i = 0; i < 5; i++) await sdk.trigger('history-rewind', 'e', { n: i });
  const { pusher } = await recovering(broker.port, { options: { rewind: { count: 3 } } });
  const t = track(pusher, 'history-rewind');
  const notice = await once(t.channel, 'pusher:recovery');
  assert.equal(notice.status, 'rewound');
  assert.equal(notice.replayed, 3);
  await sdk.trigger('history-rewind', 'e', { n: 5 });
  await eventually(() => assert.deepEqual(seqs(t.events), [2, 3, 4, 5]), 'rewound then live');
});

test('a channel the app does not keep says so once, and is not asked again', async () => {
  const { pusher, recovery } = await recovering(broker.port);
  const t = track(pusher, 'not-kept');
  const failed = await once(t.channel, 'pusher:recovery_failed');
  assert.equal(failed.reason, 'channel_not_kept');
  assert.equal(recovery.state('not-kept'), null);
});

test('subscriptions without the helper get byte-identical frames on kept channels', async () => {
  const raw = await rawClient(broker);
  closers.push(async () => raw.ws.close());
  const texts = [];
  raw.ws.on('message', (d) => texts.push(d.toString('utf8')));
  raw.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'history-plain' } }));
  await raw.next((m) => m.event === 'pusher_internal:subscription_succeeded');
  await sdk.trigger('history-plain', 'e', 'one');
  await sdk.trigger('history-plain', 'e', { two: 2 });
  await raw.next((m) => m.data && m.data.two === 2);
  assert.deepEqual(texts.slice(-3), [
    '{"event":"pusher_internal:subscription_succeeded","channel":"history-plain","data":"{}"}',
    '{"event":"e","channel":"history-plain","data":"one"}',
    '{"event":"e","channel":"history-plain","data":"{\\"two\\":2}"}',
  ]);
});

test('the wire contract: recovery notice, position frames before each kept event, bad requests refused', async () => {
  const raw = await rawClient(broker);
  closers.push(async () => raw.ws.close());
  await sdk.trigger('history-wire', 'e', 'before');
  raw.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'history-wire', history: { rewind: { count: 1 } } } }));
  await raw.next((m) => m.event === 'pusher_internal:subscription_succeeded');
  const notice = await raw.next((m) => m.event === 'pusher_internal:recovery');
  assert.equal(notice.data.status, 'rewound');
  assert.equal(notice.data.replayed, 1);
  assert.match(notice.data.epoch, /^[0-9a-f]{16}$/);
  const position = await raw.next(() => true);
  assert.deepEqual(position, { event: 'pusher_internal:position', channel: 'history-wire', data: { position: notice.data.position } });
  assert.equal((await raw.next(() => true)).data, 'before');
  await sdk.trigger('history-wire', 'e', 'after');
  assert.deepEqual((await raw.next(() => true)).data, { position: notice.data.position + 1 });
  assert.equal((await raw.next(() => true)).data, 'after');

  raw.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'history-bad', history: { rewind: { count: 100000 } } } }));
  const refused = await raw.next((m) => m.event === 'pusher:subscription_error');
  assert.equal(refused.data.type, 'HistoryError');
  assert.equal(refused.data.status, 400);
});

test('REST: a channel history page, from the node SDK, bounded and ordered', async () => {
  for (let i = 0; i < 4; i++) await sdk.trigger('history-rest', 'e', { n: i });
  const res = await sdk.get({ path: '/channels/history-rest/history', params: { limit: 2 } });
  assert.equal(res.status, 200);
  const page = await res.json();
  assert.deepEqual(page.events.map((e) => e.position), [4, 3]);
  assert.deepEqual(JSON.parse(page.events[0].data), { n: 3 });
  assert.equal(page.newest, 4);
  const oldest = await (await sdk.get({ path: '/channels/history-rest/history', params: { direction: 'oldest_first', start: 2, end: 3 } })).json();
  assert.deepEqual(oldest.events.map((e) => e.position), [2, 3]);
  await assert.rejects(sdk.get({ path: '/channels/history-rest/history', params: { limit: 1000 } }), (e) => e.status === 400);
  await assert.rejects(sdk.get({ path: '/channels/not-kept/history' }), (e) => e.status === 404);
});

test('the debug console shows a kept channel\'s history (same answer as REST)', async () => {
  await sdk.trigger('history-console', 'shown', { n: 1 });
  const url = `${broker.url}/console/api/apps/1/channels/history-console/history`;
  assert.equal((await fetch(url)).status, 401);
  const res = await fetch(url, { headers: { authorization: `Bearer ${CONSOLE_TOKEN}` } });
  assert.equal(res.status, 200);
  const page = await res.json();
  assert.deepEqual(page.events.map((e) => [e.position, e.event]), [[1, 'shown']]);
  const notKept = await fetch(`${broker.url}/console/api/apps/1/channels/elsewhere/history`, { headers: { authorization: `Bearer ${CONSOLE_TOKEN}` } });
  assert.equal(notKept.status, 404);
});

test('laravel-echo with the helper on its pusher instance recovers too', async () => {
  const proxy = await startProxy(broker.port);
  closers.push(() => proxy.close());
  const client = new Pusher('app-key', { cluster: 'mt1', wsHost: '127.0.0.1', wsPort: proxy.port, forceTLS: false, enabledTransports: ['ws'] });
  const echo = new Echo({ broadcaster: 'pusher', client });
  closers.push(async () => echo.disconnect());
  enableRecovery(echo.connector.pusher);
  const got = [];
  echo.channel('history-echo').listen('.Shipped', (d) => got.push(d.n));
  const recovered = new Promise((r) => echo.connector.pusher.channel('history-echo').bind('pusher:recovered', r));
  await eventually(async () => assert.equal((await (await sdk.get({ path: '/channels/history-echo' })).json()).occupied, true), 'echo subscribed');
  await sdk.trigger('history-echo', 'Shipped', { n: 0 });
  await eventually(() => assert.deepEqual(got, [0]), 'live');
  proxy.cut();
  for (let i = 1; i <= 5; i++) await sdk.trigger('history-echo', 'Shipped', { n: i });
  proxy.restore();
  await withTimeout(recovered, 'echo recovery', 30000);
  await eventually(() => assert.deepEqual(got, [0, 1, 2, 3, 4, 5]), 'echo got the missed events');
});
