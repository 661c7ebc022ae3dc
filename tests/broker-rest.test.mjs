// The broker's signed REST API, driven by the official node `pusher` SDK, with
// pusher-js (Node build) subscribers checking what is actually delivered.
// Requests the SDK refuses to send are signed by hand (lib/clients.mjs).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { startBroker } from './lib/broker.mjs';
import { clientPool, eventually, expectRequestError, md5, sdkFor, signedRequest, subscribe } from './lib/clients.mjs';

const CONFIG = `
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
limits = { max_event_data_bytes = 10240, max_channels_per_trigger = 100, max_batch_events = 10 }

[[apps]]
id = "2"
key = "key-2"
secret = "secret-2"
`;
const APP2 = { appId: '2', key: 'key-2', secret: 'secret-2' };

let broker;
let sdk;
const clients = clientPool();

before(async () => {
  broker = await startBroker({ config: CONFIG });
  sdk = sdkFor(broker);
});

after(async () => {
  clients.closeAll();
  await broker?.stop();
});

/** A pusher-js client on app 1 (or `key`'s app), disconnected by `after()`. */
const client = (opts = {}) => clients.open(broker, { sdk, ...opts });
const disconnect = (c) => clients.close(c);

const socketId = (c) => c.connection.socket_id;
const user = (id) => ({ user_id: id, user_info: { name: `user ${id}` } });

/** GET through the SDK, parsed as JSON. */
async function getJson(path, params, via = sdk) {
  const res = await via.get({ path, params });
  assert.equal(res.status, 200);
  return res.json();
}

/** Channels listed for a prefix, as the broker answers them. */
const listChannels = (params) => getJson('/channels', params).then((r) => r.channels);

const appPath = (path) => `/apps/${broker.appId}${path}`;

/** A hand-signed POST /events with a body the SDK would refuse to send. */
const rawTrigger = (body) => signedRequest(broker, { method: 'POST', path: appPath('/events'), body });

function assertStatus(res, status, what) {
  assert.equal(res.status, status, `${what}: expected ${status}, got ${res.status}: ${res.body}`);
}

function assertExplained(res, pattern) {
  assert.ok(res.body.trim().length > 0, 'error body should explain the problem');
  assert.match(res.body, pattern);
}

// ---------------------------------------------------------------- delivery

test('trigger to one channel: an object arrives intact, and a plain string stays a string', async () => {
  const c = await client();
  const rec = await subscribe(c, 'rest-one');
  const data = { text: 'héllo "quoted" ✓ \\ / \n', n: 42, f: 1.5, nested: { list: [1, 'two', null, true, { deep: [] }] }, empty: '' };

  const res = await sdk.trigger('rest-one', 'my-event', data);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});
  await sdk.trigger('rest-one', 'my-string', 'just some text');

  await rec.waitFor(2);
  assert.deepEqual(rec.events, [
    { event: 'my-event', data },
    { event: 'my-string', data: 'just some text' },
  ]);
});

test('trigger to several channels reaches every subscriber of each, once per channel', async () => {
  const a = await client();
  const b = await client();
  const recAa = await subscribe(a, 'multi-a');
  const recAb = await subscribe(a, 'multi-b');
  const recBc = await subscribe(b, 'multi-c');
  const recBa = await subscribe(b, 'multi-a');

  await sdk.trigger(['multi-a', 'multi-b', 'multi-c'], 'fan-out', { n: 1 });
  await sdk.trigger(['multi-a', 'multi-b', 'multi-c'], 'marker', { n: 2 });

  for (const rec of [recAa, recAb, recBc, recBa]) {
    await rec.waitFor(2);
    assert.deepEqual(rec.events, [
      { event: 'fan-out', data: { n: 1 } },
      { event: 'marker', data: { n: 2 } },
    ], `events on ${rec.channel.name}`);
  }
});

test('socket_id excludes exactly that connection', async () => {
  const sender = await client();
  const other = await client();
  const recSender = await subscribe(sender, 'excl');
  const recOther = await subscribe(other, 'excl');

  await sdk.trigger('excl', 'excluded', { from: 'sender' }, { socket_id: socketId(sender) });
  await sdk.trigger('excl', 'for-all', { n: 2 });

  await recOther.waitFor(2);
  assert.deepEqual(recOther.names(), ['excluded', 'for-all']);
  // The excluded connection gets the later event, so the first one would have come before it.
  await recSender.waitFor(1);
  assert.deepEqual(recSender.events, [{ event: 'for-all', data: { n: 2 } }]);
});

test('info on trigger returns subscription_count and user_count', async () => {
  // Presence: u1 on two connections, u2 on one.
  for (const id of ['u1', 'u1', 'u2']) await subscribe(await client({ user: user(id) }), 'presence-info');
  const p1 = await client();
  const p2 = await client();
  await subscribe(p1, 'info-pub');
  await subscribe(p2, 'info-pub');

  let res = await sdk.trigger('presence-info', 'e', {}, { info: 'subscription_count,user_count' });
  assert.deepEqual(await res.json(), { channels: { 'presence-info': { subscription_count: 3, user_count: 2 } } });

  res = await sdk.trigger('presence-info', 'e', {}, { info: 'user_count' });
  assert.deepEqual(await res.json(), { channels: { 'presence-info': { user_count: 2 } } });

  res = await sdk.trigger(['info-pub', 'info-nobody'], 'e', {}, { info: 'subscription_count' });
  assert.deepEqual(await res.json(), { channels: { 'info-pub': { subscription_count: 2 }, 'info-nobody': { subscription_count: 0 } } });

  // user_count only makes sense for presence channels; the public one reports subscriptions only.
  res = await sdk.trigger(['info-pub', 'presence-info'], 'e', {}, { info: 'user_count,subscription_count' });
  assert.deepEqual(await res.json(), {
    channels: { 'info-pub': { subscription_count: 2 }, 'presence-info': { subscription_count: 3, user_count: 2 } },
  });
});

test('batch: every event reaches its subscribers in order, honouring socket_id', async () => {
  const a = await client();
  const b = await client();
  const recA1 = await subscribe(a, 'batch-1');
  const recB1 = await subscribe(b, 'batch-1');
  const recB2 = await subscribe(b, 'batch-2');

  const res = await sdk.triggerBatch([
    { channel: 'batch-1', name: 'first', data: { i: 1 } },
    { channel: 'batch-2', name: 'second', data: 'two' },
    { channel: 'batch-1', name: 'third', data: { i: 3 }, socket_id: socketId(a) },
    { channel: 'batch-1', name: 'fourth', data: { i: 4 } },
  ]);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});

  await recB1.waitFor(3);
  assert.deepEqual(recB1.events, [
    { event: 'first', data: { i: 1 } },
    { event: 'third', data: { i: 3 } },
    { event: 'fourth', data: { i: 4 } },
  ]);
  await recB2.waitFor(1);
  assert.deepEqual(recB2.events, [{ event: 'second', data: 'two' }]);
  await recA1.waitFor(2);
  assert.deepEqual(recA1.names(), ['first', 'fourth']);
});

test('batch with info returns one {batch: [...]} entry per event', async () => {
  await subscribe(await client(), 'batch-info');
  await subscribe(await client({ user: user('bu1') }), 'presence-batch-info');
  await subscribe(await client({ user: user('bu1') }), 'presence-batch-info');

  const res = await sdk.triggerBatch([
    { channel: 'batch-info', name: 'e', data: {}, info: 'subscription_count' },
    { channel: 'presence-batch-info', name: 'e', data: {}, info: 'user_count,subscription_count' },
    { channel: 'batch-info', name: 'e', data: {} },
  ]);
  assert.deepEqual(await res.json(), {
    batch: [{ subscription_count: 1 }, { user_count: 1, subscription_count: 2 }, {}],
  });
});

test('a batch with one invalid event is refused whole: nothing is delivered', async () => {
  const rec = await subscribe(await client(), 'batch-atomic');
  const err = await expectRequestError(
    sdk.triggerBatch([
      { channel: 'batch-atomic', name: 'valid', data: {} },
      { channel: 'batch-atomic', name: 'x'.repeat(201), data: {} },
    ]),
  );
  assert.equal(err.status, 400, err.body);
  await sdk.trigger('batch-atomic', 'after', {});
  await rec.waitFor(1);
  assert.deepEqual(rec.names(), ['after']);
});

// ---------------------------------------------------------------- GET /channels

test('GET /channels lists occupied channels, filters by prefix, and drops channels as they empty', async () => {
  const a = await client({ user: user('lister') });
  const b = await client();
  await subscribe(a, 'lst-a');
  await subscribe(b, 'lst-b');
  await subscribe(a, 'other-lst');
  await subscribe(a, 'presence-lst-p');
  await sdk.trigger('lst-nobody', 'e', {}); // triggered to, never subscribed: not listed

  const all = await listChannels({});
  for (const name of ['lst-a', 'lst-b', 'other-lst', 'presence-lst-p']) assert.deepEqual(all[name], {}, `${name} in ${JSON.stringify(all)}`);
  assert.equal(all['lst-nobody'], undefined);

  assert.deepEqual(await listChannels({ filter_by_prefix: 'lst-' }), { 'lst-a': {}, 'lst-b': {} });

  a.unsubscribe('lst-a');
  await eventually(async () => assert.deepEqual(await listChannels({ filter_by_prefix: 'lst-' }), { 'lst-b': {} }), 'lst-a to disappear after unsubscribe');
  disconnect(b);
  await eventually(async () => assert.deepEqual(await listChannels({ filter_by_prefix: 'lst-' }), {}), 'lst-b to disappear after disconnect');
  // A presence channel goes the same way once its last member disconnects.
  assert.deepEqual(await listChannels({ filter_by_prefix: 'presence-lst-', info: 'user_count' }), { 'presence-lst-p': { user_count: 1 } });
  disconnect(a);
  await eventually(
    async () => assert.deepEqual(await listChannels({ filter_by_prefix: 'presence-lst-', info: 'user_count' }), {}),
    'presence-lst-p to disappear after disconnect',
  );
  assert.equal((await listChannels({}))['other-lst'], undefined);
});

test('GET /channels?info=user_count counts distinct presence users, and needs a presence- prefix', async () => {
  await subscribe(await client({ user: user('a') }), 'presence-cnt-1');
  await subscribe(await client({ user: user('a') }), 'presence-cnt-1');
  await subscribe(await client({ user: user('b') }), 'presence-cnt-1');
  await subscribe(await client({ user: user('c') }), 'presence-cnt-2');
  await subscribe(await client(), 'cnt-public');

  assert.deepEqual(await listChannels({ filter_by_prefix: 'presence-cnt-', info: 'user_count' }), {
    'presence-cnt-1': { user_count: 2 },
    'presence-cnt-2': { user_count: 1 },
  });

  for (const params of [{ info: 'user_count' }, { info: 'user_count', filter_by_prefix: 'cnt-' }]) {
    const err = await expectRequestError(sdk.get({ path: '/channels', params }));
    assert.equal(err.status, 400, `${JSON.stringify(params)}: ${err.body}`);
    assertExplained(err, /user_count|presence/i);
  }
});

// ---------------------------------------------------------------- GET /channels/{name}

test('GET /channels/{name}: occupied and subscription_count', async () => {
  assert.deepEqual(await getJson('/channels/show-empty', {}), { occupied: false });
  assert.deepEqual(await getJson('/channels/show-empty', { info: 'subscription_count' }), { occupied: false, subscription_count: 0 });

  await subscribe(await client(), 'show-pub');
  assert.deepEqual(await getJson('/channels/show-pub', {}), { occupied: true });
  await subscribe(await client(), 'show-pub');
  assert.deepEqual(await getJson('/channels/show-pub', { info: 'subscription_count' }), { occupied: true, subscription_count: 2 });
});

test('GET /channels/{name}: user_count on presence; 400 on a non-presence channel', async () => {
  await subscribe(await client({ user: user('x') }), 'presence-show');
  await subscribe(await client({ user: user('x') }), 'presence-show');
  await subscribe(await client({ user: user('y') }), 'presence-show');
  await subscribe(await client(), 'show-pub-2');

  assert.deepEqual(await getJson('/channels/presence-show', { info: 'user_count,subscription_count' }), {
    occupied: true,
    user_count: 2,
    subscription_count: 3,
  });
  assert.deepEqual(await getJson('/channels/presence-show', { info: 'user_count' }), { occupied: true, user_count: 2 });

  const err = await expectRequestError(sdk.get({ path: '/channels/show-pub-2', params: { info: 'user_count' } }));
  assert.equal(err.status, 400, err.body);
  assertExplained(err, /user_count|presence/i);
});

test('GET /channels/{name} and /users with an invalid channel name -> 400', async () => {
  for (const path of ['/channels/bad%20channel', `/channels/${'c'.repeat(165)}`, '/channels/presence-bad%20channel/users']) {
    const res = await signedRequest(broker, { path: appPath(path) });
    assertStatus(res, 400, `invalid channel name in ${path}`);
    assertExplained(res, /channel/i);
  }
  assertStatus(await signedRequest(broker, { path: appPath(`/channels/${'c'.repeat(164)}`) }), 200, '164-char name');
});

// ---------------------------------------------------------------- GET /channels/{name}/users

test('GET /channels/{presence}/users lists each user once; 400 on a non-presence channel', async () => {
  const alice = await client({ user: user('alice') });
  await subscribe(alice, 'presence-users');
  const bob1 = await client({ user: user('bob') });
  await subscribe(bob1, 'presence-users');
  await subscribe(await client({ user: user('bob') }), 'presence-users');
  await subscribe(await client(), 'users-pub');

  const { users } = await getJson('/channels/presence-users/users', {});
  assert.deepEqual(users.map((u) => u.id).sort(), ['alice', 'bob']);
  for (const u of users) assert.deepEqual(Object.keys(u), ['id']);

  // One of bob's two connections leaving keeps bob listed.
  disconnect(bob1);
  await eventually(
    async () => assert.equal((await getJson('/channels/presence-users', { info: 'subscription_count' })).subscription_count, 2),
    'bob1 to leave',
  );
  assert.deepEqual((await getJson('/channels/presence-users/users', {})).users.map((u) => u.id).sort(), ['alice', 'bob']);

  // Alice had one connection: when it goes, so does she.
  disconnect(alice);
  await eventually(
    async () => assert.deepEqual((await getJson('/channels/presence-users/users', {})).users, [{ id: 'bob' }]),
    'alice to leave the member list',
  );

  assert.deepEqual(await getJson('/channels/presence-users-empty/users', {}), { users: [] });

  const err = await expectRequestError(sdk.get({ path: '/channels/users-pub/users' }));
  assert.equal(err.status, 400, err.body);
  assertExplained(err, /presence/i);
});

// ---------------------------------------------------------------- authentication

test('the hand-made signer is accepted (control for the negative tests below)', async () => {
  assertStatus(await rawTrigger({ name: 'e', channel: 'ctl', data: '{}' }), 200, 'hand-signed POST');
  assertStatus(await signedRequest(broker, { path: appPath('/channels') }), 200, 'hand-signed GET');
  // The Python SDK sends the empty body's MD5 on GETs.
  assertStatus(await signedRequest(broker, { path: appPath('/channels'), bodyMd5: md5('') }), 200, 'GET with empty-body md5');
  // Query values are percent-encoded on the wire (the comma here) but signed unescaped.
  const res = await signedRequest(broker, { path: appPath('/channels/presence-ctl'), params: { info: 'user_count,subscription_count' } });
  assertStatus(res, 200, 'GET with an encoded comma in a query value');
  assert.deepEqual(JSON.parse(res.body), { occupied: false, user_count: 0, subscription_count: 0 });
  const enc = await signedRequest(broker, { path: appPath('/channels'), params: { filter_by_prefix: 'presence-ctl@', info: 'user_count' } });
  assertStatus(enc, 200, 'GET with an encoded @ in a query value');
  assert.deepEqual(JSON.parse(enc.body), { channels: {} });
});

test('data given as a JSON value rather than a string is delivered as its JSON text', async () => {
  const rec = await subscribe(await client(), 'raw-data');
  assertStatus(await rawTrigger({ name: 'obj', channel: 'raw-data', data: { a: [1, 'b'] } }), 200, 'object data');
  await rec.waitFor(1);
  assert.deepEqual(rec.events, [{ event: 'obj', data: { a: [1, 'b'] } }]);
});

test('wrong secret -> 401 with an explanation, on POST and GET', async () => {
  const bad = sdkFor(broker, { secret: 'not-the-secret' });
  let err = await expectRequestError(bad.trigger('auth-chan', 'e', {}));
  assert.equal(err.status, 401, err.body);
  assertExplained(err, /signature/i);
  err = await expectRequestError(bad.get({ path: '/channels' }));
  assert.equal(err.status, 401, err.body);
  assertExplained(err, /signature/i);
});

test('wrong key -> 401', async () => {
  const err = await expectRequestError(sdkFor(broker, { key: 'not-the-key' }).trigger('auth-chan', 'e', {}));
  assert.equal(err.status, 401, err.body);
  assertExplained(err, /key/i);
});

test('an auth_timestamp 700 s old (or ahead) -> 401', async () => {
  const now = Math.floor(Date.now() / 1000);
  for (const timestamp of [now - 700, now + 700]) {
    const res = await signedRequest(broker, { method: 'POST', path: appPath('/events'), body: { name: 'e', channel: 'c', data: '{}' }, timestamp });
    assertStatus(res, 401, `timestamp ${timestamp - now} s`);
    assertExplained(res, /timestamp/i);
  }
});

test('body_md5 of a different body -> 401', async () => {
  const body = { name: 'e', channel: 'md5-chan', data: '{"a":1}' };
  const other = JSON.stringify({ ...body, data: '{"a":2}' });
  const res = await signedRequest(broker, { method: 'POST', path: appPath('/events'), body, bodyMd5: md5(other) });
  assertStatus(res, 401, 'md5 mismatch');
  assertExplained(res, /md5/i);
});

test('missing body_md5 on a POST with a body -> 401', async () => {
  const res = await signedRequest(broker, { method: 'POST', path: appPath('/events'), body: { name: 'e', channel: 'c', data: '{}' }, bodyMd5: null });
  assertStatus(res, 401, 'no body_md5');
  assertExplained(res, /md5/i);
});

test('a query parameter not covered by the signature -> 401', async () => {
  const res = await signedRequest(broker, { path: appPath('/channels'), unsigned: { filter_by_prefix: 'x' } });
  assertStatus(res, 401, 'unsigned parameter');
  assertExplained(res, /signature/i);
});

test('unknown app id -> 404', async () => {
  const err = await expectRequestError(sdkFor(broker, { appId: '999' }).trigger('c', 'e', {}));
  assert.equal(err.status, 404, err.body);
  const e2 = await expectRequestError(sdkFor(broker, { appId: '999' }).get({ path: '/channels' }));
  assert.equal(e2.status, 404, e2.body);
});

// ---------------------------------------------------------------- limits and validation

test('event data: 10240 bytes accepted and delivered, 10241 -> 413 (counted in bytes)', async () => {
  const rec = await subscribe(await client(), 'size');
  const max = 'x'.repeat(10240);
  assert.equal((await sdk.trigger('size', 'big', max)).status, 200);

  let err = await expectRequestError(sdk.trigger('size', 'too-big', 'x'.repeat(10241)));
  assert.equal(err.status, 413, err.body);
  assertExplained(err, /data|bytes|large/i);
  // 5121 two-byte characters: 10242 bytes, though only 5121 characters.
  err = await expectRequestError(sdk.trigger('size', 'too-big', 'é'.repeat(5121)));
  assert.equal(err.status, 413, err.body);
  assert.equal((await sdk.trigger('size', 'multibyte', 'é'.repeat(5120))).status, 200);
  // The same limit applies to each event of a batch.
  err = await expectRequestError(sdk.triggerBatch([{ channel: 'size', name: 'too-big', data: 'x'.repeat(10241) }]));
  assert.equal(err.status, 413, err.body);

  await rec.waitFor(2);
  assert.deepEqual(rec.events, [
    { event: 'big', data: max },
    { event: 'multibyte', data: 'é'.repeat(5120) },
  ]);
});

test('100 channels in one trigger accepted, 101 -> 400', async () => {
  const names = (n) => Array.from({ length: n }, (_, i) => `many-${i}`);
  assert.equal((await sdk.trigger(names(100), 'e', {})).status, 200);
  const res = await rawTrigger({ name: 'e', channels: names(101), data: '{}' });
  assertStatus(res, 400, '101 channels');
  assertExplained(res, /channel/i);
});

test('10 batch events accepted, 11 -> 400', async () => {
  const batch = (n) => Array.from({ length: n }, (_, i) => ({ channel: 'batch-many', name: `e${i}`, data: {} }));
  assert.equal((await sdk.triggerBatch(batch(10))).status, 200);
  const err = await expectRequestError(sdk.triggerBatch(batch(11)));
  assert.equal(err.status, 400, err.body);
  assertExplained(err, /batch/i);
});

test('invalid channel names -> 400 (bad characters; over 164 characters)', async () => {
  const res = await rawTrigger({ name: 'e', channel: 'bad channel!', data: '{}' });
  assertStatus(res, 400, 'bad channel!');
  assertExplained(res, /channel/i);
  assertStatus(await rawTrigger({ name: 'e', channels: ['ok', 'bad channel!'], data: '{}' }), 400, 'bad channel! in channels');
  assertStatus(await rawTrigger({ name: 'e', channel: '', data: '{}' }), 400, 'empty channel');
  assertStatus(await rawTrigger({ name: 'e', channels: [], data: '{}' }), 400, 'no channels');
  assertStatus(await rawTrigger({ name: 'e', data: '{}' }), 400, 'neither channel nor channels');
  assertStatus(await rawTrigger({ name: 'e', channel: 'a', channels: ['b'], data: '{}' }), 400, 'both channel and channels');

  assert.equal((await sdk.trigger('c'.repeat(164), 'e', {})).status, 200);
  const err = await expectRequestError(sdk.trigger('c'.repeat(165), 'e', {}));
  assert.equal(err.status, 400, err.body);
  assertExplained(err, /channel/i);
});

test('event name over 200 characters -> 400 (200 accepted)', async () => {
  assert.equal((await sdk.trigger('ev-name', 'e'.repeat(200), {})).status, 200);
  const res = await rawTrigger({ name: 'e'.repeat(201), channel: 'ev-name', data: '{}' });
  assertStatus(res, 400, '201-char event name');
  assertExplained(res, /event/i);
});

test('malformed socket_id -> 400', async () => {
  assertStatus(await rawTrigger({ name: 'e', channel: 'sock', data: '{}', socket_id: '123.456' }), 200, 'valid socket_id');
  for (const socket_id of ['abc', '1.2.3', '1.', '.1', '-1.2']) {
    const res = await rawTrigger({ name: 'e', channel: 'sock', data: '{}', socket_id });
    assertStatus(res, 400, `socket_id ${socket_id}`);
    assertExplained(res, /socket/i);
  }
});

test('malformed JSON body -> 400', async () => {
  for (const path of ['/events', '/batch_events']) {
    const res = await signedRequest(broker, { method: 'POST', path: appPath(path), body: '{"name": "e", "channel": ' });
    assertStatus(res, 400, `${path} malformed JSON`);
    assertExplained(res, /json/i);
  }
});

test('an encrypted channel together with another channel -> 400 (alone it is accepted)', async () => {
  assertStatus(await rawTrigger({ name: 'e', channel: 'private-encrypted-x', data: '{"nonce":"n","ciphertext":"c"}' }), 200, 'encrypted alone');
  const res = await rawTrigger({ name: 'e', channels: ['private-encrypted-x', 'plain'], data: '{}' });
  assertStatus(res, 400, 'encrypted + plain');
  assertExplained(res, /encrypted/i);
});

// ---------------------------------------------------------------- tenancy

test("apps are isolated: app 2's trigger never reaches app 1's subscriber of the same channel", async () => {
  const sdk2 = sdkFor(broker, APP2);
  const one = await client();
  const two = await client({ key: APP2.key, sdk: sdk2 });
  const rec1 = await subscribe(one, 'shared');
  const rec2 = await subscribe(two, 'shared');

  await sdk2.trigger('shared', 'from-app-2', { app: 2 });
  await sdk.trigger('shared', 'from-app-1', { app: 1 });
  await sdk2.trigger('shared', 'from-app-2-again', { app: 2 });

  await rec2.waitFor(2);
  assert.deepEqual(rec2.names(), ['from-app-2', 'from-app-2-again']);
  await rec1.waitFor(1);
  assert.deepEqual(rec1.events, [{ event: 'from-app-1', data: { app: 1 } }]);

  // Each app's channel listing counts only its own subscribers.
  assert.deepEqual(await getJson('/channels/shared', { info: 'subscription_count' }, sdk2), { occupied: true, subscription_count: 1 });
  assert.deepEqual(await getJson('/channels/shared', { info: 'subscription_count' }), { occupied: true, subscription_count: 1 });

  // App 2's credentials do not work on app 1's path.
  const err = await expectRequestError(sdkFor(broker, { ...APP2, appId: '1' }).trigger('shared', 'e', {}));
  assert.equal(err.status, 401, err.body);
});
