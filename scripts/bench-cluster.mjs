// The driver behind scripts/bench-cluster: release broker nodes on a private Redis
// (one redis-server, then a 3-master Redis Cluster), pusher-bench fan-out with the
// subscribers and the triggers spread over the nodes, and one run showing what the
// nodes that hold none of the channels pay, and a subscribe storm over many channels on
// one cluster node. See scripts/bench-cluster for usage.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, freePort, waitForHttp } from '../tests/lib/broker.mjs';
import { startRedis } from '../tests/lib/redis.mjs';
import { startRedisCluster } from '../tests/lib/redis-cluster.mjs';

const { values: args } = parseArgs({
  options: { bench: { type: 'string' }, broker: { type: 'string' }, nodes: { type: 'string' }, backends: { type: 'string' }, only: { type: 'string' } },
});
const BENCH = args.bench ?? path.join(ROOT, 'target/release/pusher-bench');
const BROKER = args.broker ?? path.join(ROOT, 'target/release/broker');
const NODE_COUNTS = (args.nodes ?? '1,2,4').split(',').map(Number);
const BACKENDS = (args.backends ?? 'redis,redis-cluster').split(',');
const env = process.env;
const SUBS = env.SUBS ?? '2000';
const CHANNELS = env.CHANNELS ?? '20';
const RATE = env.RATE ?? '200';
const DURATION = env.DURATION ?? '10';
const STORM_CONNS = env.STORM_CONNS ?? '100';
const STORM_CHANNELS = env.STORM_CHANNELS ?? '50';
// Which scenarios run: fanout (with the foreign-traffic run) and/or storm.
const ONLY = new Set((args.only ?? 'fanout,storm').split(','));

const outDir = path.join(ROOT, 'target/bench');
fs.mkdirSync(outDir, { recursive: true });
const out = path.join(outDir, `cluster-${new Date().toISOString().replace(/[:.]/g, '-')}.jsonl`);

async function startNodes(n, redisUrl) {
  const nodes = [];
  for (let i = 0; i < n; i++) {
    const port = await freePort();
    const cluster = redisUrl ? { BROKER_REDIS_URL: redisUrl } : {};
    const child = spawn(BROKER, [], {
      env: { ...env, BROKER_HOST: '127.0.0.1', BROKER_PORT: String(port), ...cluster, RUST_LOG: 'warn' },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    nodes.push({ port, child, url: `http://127.0.0.1:${port}` });
  }
  for (const node of nodes) await waitForHttp(`${node.url}/ready`, { child: node.child, timeoutMs: 30000 });
  return nodes;
}

async function stopNodes(nodes) {
  await Promise.all(
    nodes.map(({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return null;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      return exited;
    }),
  );
}

/** One pusher-bench fanout run; resolves with its JSON report. */
function fanout(name, label, flags) {
  const argv = ['--url', flags.subs[0], '--label', label, '--name', name, 'fanout', '--subs', SUBS, '--channels', CHANNELS, '--rate', RATE, '--duration', DURATION, '--payload', '100',
    '--sub-urls', flags.subs.join(','), '--spread', flags.spread ?? 'subscribers', '--trigger-url', flags.triggers.join(','), '--node-pids', flags.pids.join(',')];
  const text = execFileSync(BENCH, argv, { encoding: 'utf8', maxBuffer: 1 << 24 });
  const report = JSON.parse(text.trim().split('\n').pop());
  fs.appendFileSync(out, `${JSON.stringify(report)}\n`);
  return report;
}

/** One pusher-bench subscribe-storm run on one node; resolves with its JSON report. */
function storm(name, label, node) {
  const argv = ['--url', node.url, '--label', label, '--name', name, '--pid', String(node.child.pid), 'subscribe-storm', '--conns', STORM_CONNS, '--channels-per-conn', STORM_CHANNELS];
  const text = execFileSync(BENCH, argv, { encoding: 'utf8', maxBuffer: 1 << 24 });
  const report = JSON.parse(text.trim().split('\n').pop());
  fs.appendFileSync(out, `${JSON.stringify(report)}\n`);
  return report;
}

const fmt = (v, d = 2) => (v == null ? '–' : Number(v).toFixed(d));
const rows = [];
const foreign = [];
const storms = [];

if (ONLY.has('storm')) {
  // The same storm on a node without a cluster: what the cluster adds per subscribe.
  const [node] = await startNodes(1, null);
  try {
    storms.push({ backend: 'none (one node)', r: storm('storm-single', 'single', node) });
  } finally {
    await stopNodes([node]);
  }
}

for (const backend of BACKENDS) {
  const redis = backend === 'redis' ? await startRedis() : await startRedisCluster({ replicas: 0 });
  try {
    if (ONLY.has('storm')) {
      // Every subscribe a first one on the node: a new topic to listen to, a count in Redis.
      const [node] = await startNodes(1, redis.url);
      try {
        storms.push({ backend, r: storm('storm', backend, node) });
      } finally {
        await stopNodes([node]);
      }
    }
    for (const n of ONLY.has('fanout') ? NODE_COUNTS : []) {
      const nodes = await startNodes(n, redis.url);
      try {
        const urls = nodes.map((x) => x.url);
        const r = fanout(`${n}-node${n > 1 ? 's' : ''}`, backend, { subs: urls, triggers: urls, pids: nodes.map((x) => x.child.pid) });
        rows.push({ backend, n, r });
        console.error(`${backend} ${n} node(s): ${r.deliveries_per_s}/s, lost ${r.lost_deliveries}, p99 ${r.latency_ms?.p99} ms`);
      } finally {
        await stopNodes(nodes);
      }
    }
    if (!ONLY.has('fanout')) continue;
    // Every subscriber and every trigger on node A: what do B..D pay per event?
    const nodes = await startNodes(4, redis.url);
    try {
      const a = nodes[0].url;
      const r = fanout('foreign-traffic', backend, { subs: [a], triggers: [a], pids: nodes.map((x) => x.child.pid) });
      foreign.push({ backend, r });
    } finally {
      await stopNodes(nodes);
    }
  } finally {
    await redis.stop();
  }
}

if (rows.length) {
  console.log(`\nFan-out over the nodes (${SUBS} subscribers on ${CHANNELS} channels, every channel on every node; ${RATE} triggers/s for ${DURATION} s, spread over the nodes):\n`);
  console.log('| Redis | nodes | delivered / expected | deliveries/s | latency p50 / p99 (ms) | trigger HTTP p99 (ms) | broker CPU µs per delivery, each node | all nodes |');
  console.log('|---|---:|---:|---:|---:|---:|---|---:|');
  for (const { backend, n, r } of rows) {
    const per = (r.nodes ?? []).map((x) => fmt(x.cpu_us_per_delivery));
    const total = (r.nodes ?? []).reduce((s, x) => s + (x.cpu_us_per_delivery ?? 0), 0);
    console.log(`| ${backend} | ${n} | ${r.received_deliveries} / ${r.expected_deliveries} | ${Math.round(r.deliveries_per_s)} | ${fmt(r.latency_ms?.p50)} / ${fmt(r.latency_ms?.p99)} | ${fmt(r.trigger_http_ms?.p99)} | ${per.join(' / ')} | ${fmt(total)} |`);
  }
}
if (foreign.length) {
  console.log('\nTraffic a node does not hold (4 nodes; every subscriber and every trigger on node A):\n');
  console.log('| Redis | delivered / expected | node A CPU µs per trigger | nodes B / C / D CPU µs per trigger | B–D ÷ A |');
  console.log('|---|---:|---:|---:|---:|');
  for (const { backend, r } of foreign) {
    const [a, ...others] = r.nodes.map((x) => x.cpu_us_per_trigger);
    const mean = others.reduce((s, x) => s + x, 0) / others.length;
    console.log(`| ${backend} | ${r.received_deliveries} / ${r.expected_deliveries} | ${fmt(a, 0)} | ${others.map((x) => fmt(x, 0)).join(' / ')} | ${fmt(mean / a, 3)} |`);
  }
}
if (storms.length) {
  console.log(`\nSubscribe storm on one node (${STORM_CONNS} connections, each subscribing to ${STORM_CHANNELS} channels of its own at once):\n`);
  console.log('| Redis | subscribed / asked | subscriptions/s | latency p50 / p99 / max (ms) | broker CPU µs per subscribe |');
  console.log('|---|---:|---:|---:|---:|');
  for (const { backend, r } of storms) {
    console.log(`| ${backend} | ${r.subscribed} / ${r.channels} | ${Math.round(r.subscriptions_per_s ?? 0)} | ${fmt(r.subscribe_ms?.p50)} / ${fmt(r.subscribe_ms?.p99)} / ${fmt(r.subscribe_ms?.max)} | ${fmt(r.broker_cpu_us_per_subscribe, 0)} |`);
  }
}
console.log(`\nRaw reports: ${path.relative(ROOT, out)}`);
