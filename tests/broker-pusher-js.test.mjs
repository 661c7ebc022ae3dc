// The broker driven by the stock pusher-js 8 (Node build) and node `pusher` SDK:
// subscriptions of every kind, presence, client events, sign-in.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';
import { startBroker } from './lib/broker.mjs';

let broker;
let sdk;
const clients = [];

before(async () => {
  broker = await startBroker({
    config: `
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
limits = { client_events_per_second = 3, max_presence_members = 3, max_presence_user_info_bytes = 200 }
`,
  });
  sdk = new PusherServer({ appId: '1', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: String(broker.port), useTLS: false });
});
after(async () => {
  for (const c of clients) c.disconnect();
  await broker?.stop();
});

/** A pusher-js client whose channel auth is signed by the node SDK as `user` (for presence). */
function client(user) {
  const p = new Pusher('app-key', {
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: broker.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => cb(null, sdk.authorizeChannel(socketId, channelName, user)),
    },
    userAuthentication: {
      customHandler: ({ socketId }, cb) => cb(null, sdk.authenticateUser(socketId, user ? { id: user.user_id, ...user.user_info } : { id: 'anon' })),
    },
  });
  clients.push(p);
  return p;
}

function once(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), ms);
    const fn = (data, meta) => {
      clearTimeout(t);
      emitter.unbind(event, fn);
      resolve({ data, meta });
    };
    emitter.bind(event, fn);
  });
}

/** Collects every event a channel receives. */
function record(channel) {
  const got = [];
  channel.bind_global((event, data) => got.push({ event, data }));
  return got;
}

async function subscribed(p, name) {
  const ch = p.subscribe(name);
  await once(ch, 'pusher:subscription_succeeded');
  return ch;
}

const until = async (pred, what, ms = 5000) => {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

test('public channel: subscribe, receive a REST-triggered event, unsubscribe', async () => {
  const p = client();
  const ch = await subscribed(p, 'news');
  const got = once(ch, 'headline');
  await sdk.trigger('news', 'headline', { title: 'hi', n: 1 });
  assert.deepEqual((await got).data, { title: 'hi', n: 1 });
  p.unsubscribe('news');
  // The unsubscribe reaches the broker asynchronously; poll the REST view.
  let occupied = true;
  for (let i = 0; occupied && i < 250; i++) {
    occupied = (await (await sdk.get({ path: '/channels/news' })).json()).occupied;
    if (occupied) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(occupied, false);
});

test('private channel: authorized subscription works, a bad signature is refused', async () => {
  const p = client();
  const ch = await subscribed(p, 'private-room');
  const got = once(ch, 'secret');
  await sdk.trigger('private-room', 'secret', 'text payload');
  assert.equal((await got).data, 'text payload');

  const forger = new Pusher('app-key', {
    cluster: 'mt1', wsHost: '127.0.0.1', wsPort: broker.port, forceTLS: false, enabledTransports: ['ws'],
    channelAuthorization: { customHandler: ({ socketId, channelName }, cb) => cb(null, { auth: new PusherServer({ appId: '1', key: 'app-key', secret: 'wrong' }).authorizeChannel(socketId, channelName).auth }) },
  });
  clients.push(forger);
  const bad = forger.subscribe('private-room');
  const err = await once(bad, 'pusher:subscription_error');
  assert.equal(err.data.status, 401);
  assert.equal(err.data.type, 'AuthError');
  assert.equal(bad.subscribed, false);
});

test('presence: member list, de-duplication by user_id, member_added and member_removed', async () => {
  const alice1 = client({ user_id: 'alice', user_info: { name: 'Alice' } });
  const chA = await subscribed(alice1, 'presence-lobby');
  assert.equal(chA.members.count, 1);
  assert.deepEqual(chA.members.me, { id: 'alice', info: { name: 'Alice' } });

  const added = [];
  const removed = [];
  chA.bind('pusher:member_added', (m) => added.push(m.id));
  chA.bind('pusher:member_removed', (m) => removed.push(m.id));

  const bob = client({ user_id: 'bob', user_info: { name: 'Bob' } });
  const chB = await subscribed(bob, 'presence-lobby');
  assert.equal(chB.members.count, 2);
  assert.deepEqual(chB.members.get('alice').info, { name: 'Alice' });
  await until(() => added.includes('bob'), 'member_added bob');

  // Alice's second connection: no new member, nobody is told.
  const alice2 = client({ user_id: 'alice', user_info: { name: 'Alice' } });
  const chA2 = await subscribed(alice2, 'presence-lobby');
  assert.equal(chA2.members.count, 2);
  const bobSaw = [];
  chB.bind('pusher:member_added', (m) => bobSaw.push(['added', m.id]));
  chB.bind('pusher:member_removed', (m) => bobSaw.push(['removed', m.id]));

  const users = await (await sdk.get({ path: '/channels/presence-lobby/users' })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['alice', 'bob']);

  // One of Alice's connections leaves: she is still present.
  alice1.disconnect();
  // Bob leaves: Alice's remaining connection hears it.
  const bobGone = once(chA2, 'pusher:member_removed');
  bob.disconnect();
  assert.equal((await bobGone).data.id, 'bob');
  assert.deepEqual(bobSaw, [], 'bob heard nothing about alice coming or half-going');
  const after = await (await sdk.get({ path: '/channels/presence-lobby', params: { info: 'user_count,subscription_count' } })).json();
  assert.deepEqual(after, { occupied: true, user_count: 1, subscription_count: 1 });
  alice2.disconnect();
});

test('presence: numeric user ids, missing channel_data, oversized user_info and the member limit', async () => {
  const n = client({ user_id: 42, user_info: {} });
  const ch = await subscribed(n, 'presence-nums');
  assert.equal(ch.members.count, 1);
  assert.ok(ch.members.get('42'), 'the numeric id is listed as a string');

  const big = client({ user_id: 'big', user_info: { bio: 'x'.repeat(500) } });
  const err = await once(big.subscribe('presence-nums'), 'pusher:subscription_error');
  assert.equal(err.data.status, 413);

  const noData = new Pusher('app-key', {
    cluster: 'mt1', wsHost: '127.0.0.1', wsPort: broker.port, forceTLS: false, enabledTransports: ['ws'],
    channelAuthorization: { customHandler: ({ socketId, channelName }, cb) => cb(null, { auth: sdk.authorizeChannel(socketId, channelName).auth }) },
  });
  clients.push(noData);
  // pusher-js refuses an auth without channel_data itself; the broker's own check is in broker-protocol.
  await once(noData.subscribe('presence-nums'), 'pusher:subscription_error');

  // max_presence_members = 3: the fourth distinct user is refused.
  for (const id of ['u1', 'u2']) await subscribed(client({ user_id: id, user_info: {} }), 'presence-nums');
  const fourth = client({ user_id: 'u3', user_info: {} });
  const err3 = await once(fourth.subscribe('presence-nums'), 'pusher:subscription_error');
  assert.equal(err3.data.status, 403);
});

test('client events: relayed to others, never echoed, user_id on presence', async () => {
  const a = client({ user_id: 'ann', user_info: {} });
  const b = client({ user_id: 'ben', user_info: {} });
  const [pa, pb] = await Promise.all([subscribed(a, 'private-chat'), subscribed(b, 'private-chat')]);
  const aGot = record(pa);
  const got = once(pb, 'client-typing');
  assert.equal(pa.trigger('client-typing', { who: 'ann' }), true);
  const ev = await got;
  assert.deepEqual(ev.data, { who: 'ann' });
  assert.equal(ev.meta?.user_id, undefined, 'no user_id on private channels');

  const [qa, qb] = await Promise.all([subscribed(a, 'presence-chat'), subscribed(b, 'presence-chat')]);
  const got2 = once(qb, 'client-wave');
  qa.trigger('client-wave', { hi: 1 });
  const ev2 = await got2;
  assert.equal(ev2.meta.user_id, 'ann');

  // Round trip back so we know A's own events would have arrived by now.
  const back = once(pa, 'client-reply');
  pb.trigger('client-reply', {});
  await back;
  assert.deepEqual(aGot.filter((e) => e.event === 'client-typing'), [], 'sender never gets its own event');
});

test('client events are refused on public channels, unsubscribed channels and over the rate limit', async () => {
  const a = client({ user_id: 'x', user_info: {} });
  const b = client({ user_id: 'y', user_info: {} });
  const errors = [];
  a.connection.bind('error', (e) => errors.push(e.data ?? e));
  await subscribed(a, 'public-one');
  const pb = await subscribed(b, 'public-one');
  const bGot = record(pb);
  // pusher-js itself refuses client events on public channels, so send the raw frame.
  a.send_event('client-nope', { x: 1 }, 'public-one');
  await until(() => errors.length >= 1, 'error for public channel');
  a.send_event('client-nope', { x: 1 }, 'private-not-joined');
  await until(() => errors.length >= 2, 'error for unsubscribed channel');

  const pa = await subscribed(a, 'private-rate');
  const pbr = await subscribed(b, 'private-rate');
  const received = record(pbr);
  for (let i = 0; i < 10; i++) pa.trigger('client-burst', { i });
  await until(() => errors.some((e) => e.code === 4301), '4301 rate limit error');
  // The connection stays open after a 4301.
  assert.equal(a.connection.state, 'connected');
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(received.length >= 1 && received.length < 10, `some but not all relayed: ${received.length}`);
  assert.deepEqual(bGot.filter((e) => e.event === 'client-nope'), []);
});

test('user sign-in: signin_success and events sent to the user', async () => {
  const p = client({ user_id: 'signed-user', user_info: { name: 'S' } });
  p.signin();
  await until(() => p.user.user_data?.id === 'signed-user', 'user data');
  const got = new Promise((resolve) => p.user.bind('direct', resolve));
  await sdk.sendToUser('signed-user', 'direct', { hello: 'you' });
  assert.deepEqual(await got, { hello: 'you' });
});
