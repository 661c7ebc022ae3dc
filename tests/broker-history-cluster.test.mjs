// Channel history on a cluster (nodes sharing a private redis-server, and a Redis
// Cluster): a client cut off through a TCP proxy the test controls resumes on
// another node with every event it missed; a node restart loses nothing Redis
// kept; a Redis flush makes the resume fail with history_lost; kept keys expire.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import Pusher from 'pusher-js';
import { startBroker } from './lib/broker.mjs';
import { startProxy } from './lib/proxy.mjs';
import { startRedis, clusterConfig } from './lib/redis.mjs';
import { startRedisCluster } from './lib/redis-cluster.mjs';
import { sleep } from './lib/probe.mjs';
import { sdkFor, withTimeout, eventually } from './lib/clients.mjs';
import { enableRecovery } from '../clients/pusher-recovery/index.js';

const HISTORY = 'history = { channels = ["history-", "short-"], max_events = 1000, max_age_secs = 300 }';

let redis;
let config;
const closers = [];

before(async () => {
  redis = await startRedis();
  config = clusterConfig(redis.url, 'hist', HISTORY);
});
after(async () => {
  for (const c of closers.reverse()) await c();
  await redis?.stop();
});

async function node(cfg = config) {
  const n = await startBroker({ config: cfg });
  closers.push(() => n.stop());
  await eventually(async () => assert.equal((await fetch(`${n.url}/ready`)).status, 200), 'node ready', 10000);
  return n;
}

function recovering(port) {
  const pusher = new Pusher('app-key', { cluster: 'mt1', wsHost: '127.0.0.1', wsPort: port, forceTLS: false, enabledTransports: ['ws'] });
  closers.push(async () => pusher.disconnect());
  enableRecovery(pusher);
  return pusher;
}

function track(pusher, name) {
  const channel = pusher.subscribe(name);
  const seen = [];
  channel.bind_global((event, data) => {
    if (!event.startsWith('pusher:')) seen.push(data.n);
  });
  return { channel, seen };
}

const once = (emitter, event, ms = 30000) => withTimeout(new Promise((r) => emitter.bind(event, r)), event, ms);

test('cut off from one node for 10 s, resumed on another: the 100 events triggered meanwhile, in order, once, then live', async () => {
  const [a, b] = [await node(), await node()];
  const proxy = await startProxy(a.port);
  closers.push(() => proxy.close());
  const t = track(recovering(proxy.port), 'history-cross');
  await once(t.channel, 'pusher:recovery');
  const viaB = sdkFor(b);
  await viaB.trigger('history-cross', 'e', { n: 0 });
  await eventually(() => assert.deepEqual(t.seen, [0]), 'live across nodes');
  proxy.cut();
  const cutAt = Date.now();
  for (let i = 1; i <= 100; i++) await viaB.trigger('history-cross', 'e', { n: i });
  await sleep(Math.max(0, 10000 - (Date.now() - cutAt)));
  proxy.retarget(b.port);
  proxy.restore();
  const recovered = await once(t.channel, 'pusher:recovered');
  assert.equal(recovered.replayed, 100);
  await viaB.trigger('history-cross', 'e', { n: 101 });
  await eventually(() => assert.deepEqual(t.seen, Array.from({ length: 102 }, (_, i) => i)), 'all, once, in order', 10000);
});

test('a node restart loses nothing Redis kept; a Redis flush makes the resume fail with history_lost', async () => {
  const a = await node();
  const b = await node();
  const proxy = await startProxy(a.port);
  closers.push(() => proxy.close());
  const t = track(recovering(proxy.port), 'history-restart');
  await once(t.channel, 'pusher:recovery');
  const viaB = sdkFor(b);
  await viaB.trigger('history-restart', 'e', { n: 0 });
  await eventually(() => assert.deepEqual(t.seen, [0]), 'live');

  proxy.cut();
  await a.stop();
  for (let i = 1; i <= 5; i++) await viaB.trigger('history-restart', 'e', { n: i });
  const a2 = await node();
  proxy.retarget(a2.port);
  proxy.restore();
  await once(t.channel, 'pusher:recovered');
  await eventually(() => assert.deepEqual(t.seen, [0, 1, 2, 3, 4, 5]), 'replayed by the restarted node');

  proxy.cut();
  execFileSync('redis-cli', ['-p', String(redis.port), 'FLUSHALL']);
  await eventually(async () => {
    await viaB.trigger('history-restart', 'e', { n: 6 });
  }, 'a trigger after the flush', 10000);
  proxy.restore();
  const failed = await once(t.channel, 'pusher:recovery_failed');
  assert.equal(failed.reason, 'history_lost');
});

test('every kept key expires after max_age_secs', async () => {
  const short = clusterConfig(redis.url, 'hist-short', 'history = { channels = ["short-"], max_age_secs = 2 }');
  const n = await node(short);
  await sdkFor(n).trigger('short-lived', 'e', { n: 0 });
  const keys = ['hseq', 'hist', 'hepoch'].map((k) => `hist-short:{1:short-lived}:${k}`);
  const cli = (...args) => execFileSync('redis-cli', ['-p', String(redis.port), ...args], { encoding: 'utf8' }).trim();
  for (const k of keys) {
    const ttl = Number(cli('TTL', k));
    assert.ok(ttl > 0 && ttl <= 2, `${k} has ttl ${ttl}`);
  }
  await sleep(3000);
  assert.equal(cli('EXISTS', ...keys), '0');
});

test('on a Redis Cluster too: resumed on another node with what was missed', async () => {
  const rc = await startRedisCluster({ masters: 3, replicas: 0 });
  closers.push(() => rc.stop());
  const cfg = clusterConfig(rc.url, 'hist-rc', HISTORY);
  const [a, b] = [await node(cfg), await node(cfg)];
  const proxy = await startProxy(a.port);
  closers.push(() => proxy.close());
  const t = track(recovering(proxy.port), 'history-rc');
  await once(t.channel, 'pusher:recovery');
  const viaB = sdkFor(b);
  await viaB.trigger('history-rc', 'e', { n: 0 });
  await eventually(() => assert.deepEqual(t.seen, [0]), 'live');
  proxy.cut();
  for (let i = 1; i <= 20; i++) await viaB.trigger('history-rc', 'e', { n: i });
  proxy.retarget(b.port);
  proxy.restore();
  await once(t.channel, 'pusher:recovered');
  await eventually(() => assert.deepEqual(t.seen, Array.from({ length: 21 }, (_, i) => i)), 'all, in order');
});
