// Several broker processes sharing Redis behave like one broker: delivery,
// exclusion, presence, REST answers, users, cache and webhooks across nodes; a
// killed node is cleaned up; a Redis restart is survived.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import { freePort, startBroker } from './lib/broker.mjs';
import { connect, eventually, sdkFor, subscribe, withTimeout } from './lib/clients.mjs';
import { clusterConfig } from './lib/redis.mjs';
import { dropKeys, hookReceiver } from './lib/servers.mjs';

const SHARED_REDIS = process.env.TEST_REDIS_URL || 'redis://127.0.0.1:6379';
const prefix = `test-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;

let hooks;
let nodes = [];
const clients = [];
const track = (c) => (clients.push(c), c);

before(async () => {
  hooks = await hookReceiver();
  const config = clusterConfig(SHARED_REDIS, prefix, `webhooks = [{ url = "${hooks.url}", event_types = ["channel_occupied", "channel_vacated", "member_added", "member_removed"] }]`);
  nodes = await Promise.all([startBroker({ config }), startBroker({ config }), startBroker({ config })]);
  for (const n of nodes) await eventually(async () => assert.equal((await fetch(`${n.url}/ready`)).status, 200), 'node ready');
});
after(async () => {
  for (const c of clients) c.disconnect();
  await Promise.all(nodes.map((n) => n.stop()));
  hooks?.close();
  dropKeys(SHARED_REDIS, prefix);
});

test('an event triggered on one node reaches subscribers on every node, with socket_id exclusion', async () => {
  const [a, b, c] = nodes;
  const onA = track(await connect(a));
  const onB = track(await connect(b));
  const [recA, recB] = await Promise.all([subscribe(onA, 'cross'), subscribe(onB, 'cross')]);
  await eventually(async () => assert.equal((await (await sdkFor(c).get({ path: '/channels/cross', params: { info: 'subscription_count' } })).json()).subscription_count, 2), 'counted');
  await sdkFor(c).trigger('cross', 'hello', { from: 'c' });
  await Promise.all([recA.waitFor(1), recB.waitFor(1)]);
  // Exclude the subscriber on A from a trigger sent to B.
  await sdkFor(b).trigger('cross', 'second', {}, { socket_id: onA.connection.socket_id });
  await sdkFor(b).trigger('cross', 'third', {});
  await recA.waitFor(2);
  await recB.waitFor(3);
  assert.deepEqual(recA.names(), ['hello', 'third']);
  assert.deepEqual(recB.names(), ['hello', 'second', 'third']);
});

test('client events cross nodes and are not echoed', async () => {
  const [a, b] = nodes;
  const sdk = sdkFor(a);
  const onA = track(await connect(a, { sdk }));
  const onB = track(await connect(b, { sdk }));
  const [recA, recB] = await Promise.all([subscribe(onA, 'private-x'), subscribe(onB, 'private-x')]);
  await eventually(async () => assert.equal((await (await sdk.get({ path: '/channels/private-x', params: { info: 'subscription_count' } })).json()).subscription_count, 2), 'counted');
  recA.channel.trigger('client-ping', { n: 1 });
  await recB.waitFor(1);
  recB.channel.trigger('client-pong', { n: 2 });
  await recA.waitFor(1);
  assert.deepEqual(recA.names(), ['client-pong']);
  assert.deepEqual(recB.names(), ['client-ping']);
});

test('presence is cluster-wide: one member list, de-duplicated, joins and leaves announced once', async () => {
  const [a, b, c] = nodes;
  const sdk = sdkFor(a);
  const alice = { user_id: 'alice', user_info: { n: 'A' } };
  const bob = { user_id: 'bob', user_info: { n: 'B' } };
  const aliceA = track(await connect(a, { sdk, user: alice }));
  const chAlice = (await subscribe(aliceA, 'presence-room')).channel;
  const added = [];
  const removed = [];
  chAlice.bind('pusher:member_added', (m) => added.push(m.id));
  chAlice.bind('pusher:member_removed', (m) => removed.push(m.id));

  const bobB = track(await connect(b, { sdk, user: bob }));
  const chBob = (await subscribe(bobB, 'presence-room')).channel;
  assert.deepEqual(Object.keys(chBob.members.members).sort(), ['alice', 'bob'], 'bob on B sees alice from A');
  await eventually(() => assert.deepEqual(added, ['bob']), 'alice hears bob');

  const alice2 = track(await connect(c, { sdk, user: alice }));
  const chAlice2 = (await subscribe(alice2, 'presence-room')).channel;
  assert.equal(chAlice2.members.count, 2);
  for (const n of nodes) {
    const users = await (await sdkFor(n).get({ path: '/channels/presence-room/users' })).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), ['alice', 'bob']);
    const info = await (await sdkFor(n).get({ path: '/channels/presence-room', params: { info: 'user_count,subscription_count' } })).json();
    assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 3 });
  }
  const list = await (await sdkFor(b).get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
  assert.deepEqual(list.channels['presence-room'], { user_count: 2 });

  const bobHeard = [];
  chBob.bind('pusher:member_added', (m) => bobHeard.push(m.id));
  aliceA.disconnect();
  const gone = new Promise((r) => chBob.bind('pusher:member_removed', (m) => r(m.id)));
  alice2.disconnect();
  assert.equal(await withTimeout(gone, 'alice left'), 'alice');
  assert.deepEqual(bobHeard, [], 'alice joining on a second node was not announced');
  await eventually(() => {
    const mine = hooks.events.filter((e) => e.channel === 'presence-room');
    assert.deepEqual(mine.filter((e) => e.name === 'member_added').map((e) => e.user_id).sort(), ['alice', 'bob']);
    assert.deepEqual(mine.filter((e) => e.name === 'member_removed').map((e) => e.user_id), ['alice']);
    assert.equal(mine.filter((e) => e.name === 'channel_occupied').length, 1);
  }, 'webhooks once per transition');
  bobB.disconnect();
  await eventually(() => assert.equal(hooks.events.filter((e) => e.channel === 'presence-room' && e.name === 'channel_vacated').length, 1), 'vacated once');
});

test('sendToUser and terminate_connections reach the user on every node; cache channels are shared', async () => {
  const [a, b] = nodes;
  const sockets = [];
  for (const n of [a, b]) {
    const ws = new WebSocket(`ws://127.0.0.1:${n.port}/app/app-key?protocol=7`);
    const frames = [];
    ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
    const closed = new Promise((r) => ws.on('close', (code) => r(code)));
    await eventually(() => assert.ok(frames[0]), 'connected');
    const auth = sdkFor(n).authenticateUser(JSON.parse(frames[0].data).socket_id, { id: 'multi' });
    ws.send(JSON.stringify({ event: 'pusher:signin', data: auth }));
    await eventually(() => assert.ok(frames.some((f) => f.event === 'pusher:signin_success')), 'signed in');
    sockets.push({ ws, frames, closed });
  }
  await eventually(async () => assert.equal((await (await sdkFor(a).get({ path: '/channels/%23server-to-user-multi', params: { info: 'subscription_count' } })).json()).subscription_count, 2), 'both joined');
  await sdkFor(b).sendToUser('multi', 'note', { x: 1 });
  for (const s of sockets) await eventually(() => assert.ok(s.frames.some((f) => f.event === 'note')), 'note on each node');
  await sdkFor(b).terminateUserConnections('multi');
  assert.deepEqual(await withTimeout(Promise.all(sockets.map((s) => s.closed)), 'terminated'), [4009, 4009]);

  await sdkFor(a).trigger('cache-score', 'score', { home: 2 });
  const late = track(await connect(b));
  const ch = late.subscribe('cache-score');
  assert.deepEqual(await withTimeout(new Promise((r) => ch.bind('score', r)), 'cached event from the other node'), { home: 2 });
});

test('a killed node is detected: its presence members are removed with member_removed, watchers hear "offline"', async () => {
  const config = clusterConfig(SHARED_REDIS, prefix);
  const doomed = await startBroker({ config });
  const sdk = sdkFor(nodes[0]);
  const watcher = track(await connect(nodes[0], { sdk, user: { user_id: 'watcher', user_info: {} } }));
  const ch = (await subscribe(watcher, 'presence-fragile')).channel;
  // A signed-in connection on a live node watching the victim.
  const frames = [];
  const raw = new WebSocket(`ws://127.0.0.1:${nodes[1].port}/app/app-key?protocol=7`);
  raw.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await eventually(() => assert.ok(frames[0]), 'watching socket connected');
  const signin = sdk.authenticateUser(JSON.parse(frames[0].data).socket_id, { id: 'looker', watchlist: ['victim'] });
  raw.send(JSON.stringify({ event: 'pusher:signin', data: signin }));
  await eventually(() => assert.ok(frames.some((f) => f.event === 'pusher:signin_success')), 'watcher signed in');
  const watch = (name) => frames.filter((f) => f.event === 'pusher_internal:watchlist_events').flatMap((f) => JSON.parse(f.data).events).filter((e) => e.name === name);

  const victimClient = track(await connect(doomed, { sdk, user: { user_id: 'victim', user_info: {} } }));
  await subscribe(victimClient, 'presence-fragile');
  await eventually(() => assert.ok(ch.members.get('victim')), 'victim present');
  // The victim also signs in (on the doomed node), which makes it "online".
  const victimFrames = [];
  const victimRaw = new WebSocket(`ws://127.0.0.1:${doomed.port}/app/app-key?protocol=7`);
  victimRaw.on('message', (m) => victimFrames.push(JSON.parse(m.toString())));
  victimRaw.on('error', () => {});
  await eventually(() => assert.ok(victimFrames[0]), 'victim socket connected');
  victimRaw.send(JSON.stringify({ event: 'pusher:signin', data: sdk.authenticateUser(JSON.parse(victimFrames[0].data).socket_id, { id: 'victim' }) }));
  await eventually(() => assert.deepEqual(watch('online').flatMap((e) => e.user_ids), ['victim']), 'online');

  const removed = new Promise((r) => ch.bind('pusher:member_removed', (m) => r(m.id)));
  doomed.child.kill('SIGKILL');
  assert.equal(await withTimeout(removed, 'member_removed after the node died', 15000), 'victim');
  const users = await (await sdk.get({ path: '/channels/presence-fragile/users' })).json();
  assert.deepEqual(users.users.map((u) => u.id), ['watcher']);
  await eventually(() => assert.deepEqual(watch('offline').flatMap((e) => e.user_ids), ['victim']), 'offline after the node died', 5000);
  raw.close();
});

test('Redis going away: local clients keep working, /ready reports it, and the cluster heals when it returns', async (t) => {
  const port = await freePort();
  const startRedis = () => spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  let redis = startRedis();
  t.after(() => redis.kill('SIGKILL'));
  const url = `redis://127.0.0.1:${port}`;
  await eventually(() => execFileSync('redis-cli', ['-p', String(port), 'PING']), 'private redis up');
  const config = clusterConfig(url, 'fault');
  const [x, y] = await Promise.all([startBroker({ config }), startBroker({ config })]);
  t.after(() => Promise.all([x.stop(), y.stop()]));
  for (const n of [x, y]) await eventually(async () => assert.equal((await fetch(`${n.url}/ready`)).status, 200), 'ready');

  const sdk = sdkFor(x);
  const onX = track(await connect(x, { sdk, user: { user_id: 'xu', user_info: {} } }));
  const onY = track(await connect(y, { sdk, user: { user_id: 'yu', user_info: {} } }));
  const recX = await subscribe(onX, 'presence-durable');
  const recY = await subscribe(onY, 'presence-durable');
  await sdk.trigger('presence-durable', 'before', {});
  await Promise.all([recX.waitFor(1), recY.waitFor(1)]);

  redis.kill('SIGKILL');
  await eventually(async () => assert.equal((await fetch(`${x.url}/ready`)).status, 503), 'x not ready');
  // Local delivery goes on without Redis, but the caller learns that the other node
  // may not have it: 503, not 200.
  await assert.rejects(sdkFor(x).trigger('presence-durable', 'during', {}), (e) => e.status === 503);
  await recX.waitFor(2);
  assert.equal((await fetch(`${x.url}/health`)).status, 200);
  // The copy for the other node could not be published, and the metrics say so.
  await eventually(async () => {
    const text = await (await fetch(`${x.url}/metrics`)).text();
    assert.match(text, /broker_adapter_up 0/);
    assert.ok(Number(text.match(/broker_adapter_dropped_messages (\d+)/)[1]) >= 1, text);
  }, 'dropped cluster messages counted');

  redis = startRedis();
  for (const n of [x, y]) await eventually(async () => assert.equal((await fetch(`${n.url}/ready`)).status, 200), 'ready again', 15000);
  // The new Redis is empty; each node wrote its own clients back.
  await eventually(async () => {
    const users = await (await sdkFor(y).get({ path: '/channels/presence-durable/users' })).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), ['xu', 'yu']);
  }, 'presence resynchronised', 10000);
  await sdkFor(y).trigger('presence-durable', 'after', {});
  await recX.waitFor(3);
  assert.deepEqual(recX.names(), ['before', 'during', 'after']);
});
