// The cluster at scale (per-channel routing, Redis Cluster, failover, no silent
// loss): a node receives only the traffic of channels it holds; subscribing never
// races the bus; the same broker runs on a real 3-master Redis Cluster with
// replicas, survives a master's death, and a trigger answered 200 has reached
// every node's subscribers. Every Redis here is started by this file.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker } from './lib/broker.mjs';
import { connect, eventually, sdkFor, subscribe, withTimeout } from './lib/clients.mjs';
import { metric, rawClient, sleep } from './lib/probe.mjs';
import { assertExact, joinAll, leave, member } from './lib/presence.mjs';
import { clusterConfig, startRedis } from './lib/redis.mjs';
import { startRedisCluster } from './lib/redis-cluster.mjs';
import { hookReceiver } from './lib/servers.mjs';

/** One node's configuration: the default app, with room for large presence channels. */
const config = (redisUrl, extra = '') => clusterConfig(redisUrl, 'pusher', `limits = { max_presence_members = 10000 }\n${extra}`);

async function startNodes(n, cfg) {
  const nodes = await Promise.all(Array.from({ length: n }, () => startBroker({ config: cfg })));
  for (const node of nodes) await eventually(async () => assert.equal((await fetch(`${node.url}/ready`)).status, 200), 'node ready', 15000);
  return nodes;
}

const received = (n) => metric(n, 'broker_adapter_bus_received_total');
const topics = (n) => metric(n, 'broker_adapter_topics');

// Each test stops its nodes when it ends: a node left running would take part in
// the next test's cluster (clean-up of dead nodes is done by any node).
let redis;
let cluster;

before(async () => {
  [redis, cluster] = await Promise.all([startRedis(), startRedisCluster()]);
});
after(async () => {
  await Promise.all([redis?.stop(), cluster?.stop()]);
});

test('a node receives only the events of channels it has subscribers for', async (t) => {
  const [a, b, c] = await startNodes(3, config(redis.url));
  t.after(() => Promise.all([a, b, c].map((n) => n.stop())));
  const clients = await Promise.all(Array.from({ length: 5 }, () => connect(a)));
  const recs = await Promise.all(clients.map((cl) => subscribe(cl, 'interest-a')));
  assert.equal(await topics(a), 1, 'a listens to the one channel it holds');
  assert.equal(await topics(b), 0);
  assert.equal(await topics(c), 0);
  const before = await Promise.all([a, b, c].map(received));

  // Published by c, which holds nothing: only a hears it.
  const sdk = sdkFor(c);
  for (let i = 0; i < 100; i++) await sdk.trigger('interest-a', 'e', { i });
  await Promise.all(recs.map((r) => r.waitFor(100)));
  const [da, db, dc] = (await Promise.all([a, b, c].map(received))).map((v, i) => v - before[i]);
  assert.ok(da >= 100, `a received ${da} bus messages for 100 events`);
  assert.equal(db, 0, 'b holds no channel and received nothing');
  assert.equal(dc, 0, 'c published but holds no channel and received nothing');

  // The last local subscriber leaving ends a's interest.
  for (const cl of clients) cl.disconnect();
  await eventually(async () => assert.equal(await topics(a), 0), 'a stops listening once its subscribers left');
  const quiet = await received(a);
  await sdk.trigger('interest-a', 'nobody', {});
  await sleep(200);
  assert.equal(await received(a), quiet, 'an event for a channel nobody holds reaches no node');
});

test('no race: an event triggered elsewhere right after subscription_succeeded always arrives (200 subscribes, with resubscribes)', async (t) => {
  const [a, b] = await startNodes(2, config(redis.url));
  t.after(() => Promise.all([a, b].map((n) => n.stop())));
  const sdk = sdkFor(a);
  const client = await rawClient(b);
  try {
    for (let i = 0; i < 200; i++) {
      const channel = `race-${i}`;
      const answer = await client.subscribe(channel);
      assert.equal(answer.event, 'pusher_internal:subscription_succeeded', JSON.stringify(answer));
      if (i % 2 === 1) {
        // Leave and come back at once: the node's unsubscribe from the topic must not
        // overtake the new subscription's.
        client.send(JSON.stringify({ event: 'pusher:unsubscribe', data: { channel } }));
        assert.equal((await client.subscribe(channel)).event, 'pusher_internal:subscription_succeeded');
      }
      await sdk.trigger(channel, 'right-after', { i });
      const got = await client.next((m) => m.event === 'right-after' && m.channel === channel, `event on ${channel}`);
      assert.equal(got.data.i, i);
      client.send(JSON.stringify({ event: 'pusher:unsubscribe', data: { channel } }));
    }
  } finally {
    client.close();
  }
});

test('Redis Cluster: events, presence and counts across nodes, with channels spread over the shards', async (t) => {
  const [a, b, c] = await startNodes(3, config(cluster.url));
  t.after(() => Promise.all([a, b, c].map((n) => n.stop())));
  const names = Array.from({ length: 12 }, (_, i) => `shard-${i}`);
  const masters = new Set(await Promise.all(names.map((n) => cluster.masterOf(`{1:${n}}`))));
  assert.ok(masters.size >= 2, `the channels live on ${masters.size} shard(s)`);

  const onA = await connect(a);
  const onB = await connect(b);
  try {
    const recs = await Promise.all(names.flatMap((n) => [subscribe(onA, n), subscribe(onB, n)]));
    const sdk = sdkFor(c);
    await eventually(async () => {
      const { channels } = await (await sdk.get({ path: '/channels', params: { filter_by_prefix: 'shard-' } })).json();
      assert.deepEqual(Object.keys(channels).sort(), [...names].sort());
      for (const n of names) {
        const info = await (await sdk.get({ path: `/channels/${n}`, params: { info: 'subscription_count' } })).json();
        assert.equal(info.subscription_count, 2, n);
      }
    }, 'every channel listed and counted, on every shard');
    for (const n of names) await sdk.trigger(n, 'hello', { n });
    // A trigger excluding the subscriber on a still reaches the one on b.
    await sdk.trigger(names[0], 'except-a', {}, { socket_id: onA.connection.socket_id });
    await Promise.all(recs.map((r, i) => r.waitFor(i === 1 ? 2 : 1)));
    assert.deepEqual(recs[0].names(), ['hello']);
    assert.deepEqual(recs[1].names(), ['hello', 'except-a']);
  } finally {
    onA.disconnect();
    onB.disconnect();
  }

  // The presence exactness of the single-Redis suite, on the cluster.
  const members = await Promise.all(Array.from({ length: 150 }, (_, i) => member([a, b, c][i % 3], `rc-u${i}`)));
  try {
    await joinAll(members, 'presence-rc');
    await assertExact([a, b, c], members, 'presence-rc', members.map((m) => m.id), 'after the joins');
    const leaving = members.filter((_, i) => i % 2 === 1);
    const staying = members.filter((_, i) => i % 2 === 0);
    leave(leaving);
    await assertExact([a, b, c], staying, 'presence-rc', staying.map((m) => m.id), 'after half left');
  } finally {
    leave(members);
  }
});

test('Redis Cluster failover: a master dies while events flow; no 200 is lost, delivery and presence come back by themselves', async (t) => {
  const [a, b] = await startNodes(2, config(cluster.url));
  t.after(() => Promise.all([a, b].map((n) => n.stop())));
  const channel = 'presence-failover';
  const members = await Promise.all(Array.from({ length: 40 }, (_, i) => member([a, b][i % 2], `f${i}`)));
  await joinAll(members, channel);
  const everyone = [...members.map((m) => m.id), 'listener'];
  const listener = await rawClient(b);
  const signature = sdkFor(b).authorizeChannel(listener.socketId, channel, { user_id: 'listener', user_info: {} });
  await listener.subscribe(channel, { auth: signature.auth, channel_data: signature.channel_data });
  await assertExact([a, b], members, channel, everyone, 'before the failover');

  const got = new Set();
  listener.ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    if (m.event === 'tick') got.add(JSON.parse(m.data).i);
  });
  const answers = [];
  const ready = [];
  let stop = false;
  const sdk = sdkFor(a);
  const triggers = (async () => {
    for (let i = 0; !stop; i++) {
      const status = await sdk.trigger(channel, 'tick', { i }).then(
        (r) => r.status,
        (e) => e.status ?? 0,
      );
      answers.push({ i, status });
      await sleep(50);
    }
  })();
  const readiness = (async () => {
    while (!stop) {
      ready.push((await fetch(`${a.url}/ready`).catch(() => ({ status: 0 }))).status);
      await sleep(100);
    }
  })();

  await sleep(500);
  const victim = await cluster.masterOf(`{1:${channel}}`);
  await cluster.kill(victim);
  const killedAt = answers.length;
  await cluster.healed();
  // Delivery across nodes resumes by itself: ten answers in a row of 200 after the kill.
  await eventually(
    async () => {
      const since = answers.slice(killedAt);
      assert.ok(since.length >= 10 && since.slice(-10).every((x) => x.status === 200), JSON.stringify(since.slice(-10)));
    },
    'triggers answered 200 again after the failover',
    30000,
  );
  stop = true;
  await Promise.all([triggers, readiness]);
  await sleep(500);

  // No silent loss: every trigger answered 200 reached the subscriber on the other node.
  const ok = answers.filter((x) => x.status === 200).map((x) => x.i);
  const lost = ok.filter((i) => !got.has(i));
  assert.deepEqual(lost, [], `200 answered but not delivered; answers: ${JSON.stringify(answers.map((x) => x.status))}`);
  for (const x of answers) assert.ok([200, 503].includes(x.status), `trigger ${x.i} answered ${x.status}`);
  const failed = answers.filter((x) => x.status !== 200).length;
  console.log(`# failover: ${answers.length} triggers, ${failed} answered 503, /ready 503 in ${ready.filter((s) => s === 503).length} of ${ready.length} polls`);
  // /ready told the story: not ready while the shard had no master, ready again after.
  assert.ok(ready.includes(503), `/ready answers during the failover: ${JSON.stringify(ready)}`);
  assert.equal((await fetch(`${a.url}/ready`)).status, 200);
  // Presence reconciles: the same three members everywhere.
  await assertExact([a, b], members, channel, everyone, 'after the failover');
  listener.close();
  leave(members);
});

test('Redis Cluster: a broker node killed with SIGKILL leaves everywhere once, and its watchers hear "offline"', async (t) => {
  const hooks = await hookReceiver();
  t.after(() => hooks.close());
  const cfg = config(cluster.url, `webhooks = [{ url = "${hooks.url}", event_types = ["member_removed"] }]`).replace('batch_wait_ms = 10', 'batch_wait_ms = 10\ndebounce_ms = 200');
  const [a, doomed] = await startNodes(2, cfg);
  t.after(() => Promise.all([a, doomed].map((n) => n.stop())));
  const sdk = sdkFor(a);
  const watcher = await connect(a, { sdk, user: { user_id: 'watcher', user_info: {} } });
  const ch = (await subscribe(watcher, 'presence-doomed')).channel;
  // A signed-in connection on the live node, watching the victim.
  const looker = await rawClient(a);
  looker.send(JSON.stringify({ event: 'pusher:signin', data: sdk.authenticateUser(looker.socketId, { id: 'looker', watchlist: ['victim'] }) }));
  await looker.next('pusher:signin_success');
  const heard = (name) => looker.next((m) => m.event === 'pusher_internal:watchlist_events' && m.data.events.some((e) => e.name === name && e.user_ids.includes('victim')), `watchlist ${name}`, 15000);

  // The victim signs in and joins on the node that will die.
  const victim = await rawClient(doomed);
  victim.send(JSON.stringify({ event: 'pusher:signin', data: sdk.authenticateUser(victim.socketId, { id: 'victim' }) }));
  await victim.next('pusher:signin_success');
  const auth = sdk.authorizeChannel(victim.socketId, 'presence-doomed', { user_id: 'victim', user_info: {} });
  await victim.subscribe('presence-doomed', { auth: auth.auth, channel_data: auth.channel_data });
  await heard('online');
  await eventually(() => assert.ok(ch.members.get('victim')), 'victim present');

  const removed = new Promise((r) => ch.bind('pusher:member_removed', (m) => r(m.id)));
  doomed.child.kill('SIGKILL');
  assert.equal(await withTimeout(removed, 'member_removed after the node died', 15000), 'victim');
  await heard('offline');
  await eventually(() => assert.equal(hooks.of('presence-doomed').filter((e) => e.name === 'member_removed' && e.user_id === 'victim').length, 1), 'one member_removed webhook');
  await sleep(1000);
  assert.equal(hooks.of('presence-doomed').filter((e) => e.name === 'member_removed' && e.user_id === 'victim').length, 1, 'still one');
  const users = await (await sdk.get({ path: '/channels/presence-doomed/users' })).json();
  assert.deepEqual(users.users.map((u) => u.id), ['watcher']);
  watcher.disconnect();
  looker.close();
  victim.close();
});
