// The soak driver behind scripts/soak: runs connection churn, fan-out, presence
// churn and client events together against one broker for N rounds of about a
// minute, keeps a set of long-lived healthy subscribers on it the whole time,
// and prints one table row per round. See scripts/soak for usage.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startBroker, ROOT } from '../tests/lib/broker.mjs';
import { sdkFor } from '../tests/lib/clients.mjs';
import { rawClient, rssKiB, openFds, metric, quantile, sleep } from '../tests/lib/probe.mjs';

const { values: args } = parseArgs({ options: { minutes: { type: 'string' }, bench: { type: 'string' } } });
const MINUTES = Number(args.minutes ?? 30);
const ROUND_MS = 60_000;
/** Each load runs this long per round, leaving the rest of the minute for it to drain and for a quiet reading. */
const LOAD_S = 40;
const BENCH = args.bench ?? path.join(ROOT, 'target/release/pusher-bench');
const OUT_DIR = path.join(ROOT, 'target/soak');
const HEALTHY = 20;
const HEALTHY_INTERVAL_MS = 50;

fs.mkdirSync(OUT_DIR, { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const jsonl = path.join(OUT_DIR, `runs-${stamp}.jsonl`);
const tableFile = path.join(OUT_DIR, `table-${stamp}.md`);

const broker = await startBroker({ env: { RUST_LOG: 'warn' } });
const sdk = sdkFor(broker);
// Whatever ends this process, the broker it started goes with it.
process.on('exit', () => broker.child.kill('SIGKILL'));
/** Appends to a result file; a full disk must not end the run (the table is also on stdout). */
const append = (file, text) => {
  try {
    fs.appendFileSync(file, text);
  } catch (e) {
    console.error(`soak: cannot write ${file}: ${e.message}`);
  }
};
const log = (line) => {
  console.log(line);
  append(tableFile, `${line}\n`);
};

/** One pusher-bench run; resolves with its JSON report (or {error}). */
function bench(mode, flags, name) {
  const argv = [mode, ...flags, '--url', broker.url, '--pid', String(broker.pid), '--label', 'soak', '--name', name, '--threads', '1'];
  return new Promise((resolve) => {
    const child = spawn(BENCH, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => {
      let report;
      try {
        report = JSON.parse(out.trim().split('\n').pop());
      } catch {
        report = { error: `pusher-bench ${mode} exited ${code}: ${err.slice(-300)}` };
      }
      report.mode = mode;
      append(jsonl, `${JSON.stringify(report)}\n`);
      resolve(report);
    });
  });
}

// Long-lived healthy subscribers: every event to each of them is counted.
const healthy = [];
const received = new Map(); // seq -> deliveries
let latencies = [];
let healthyClosed = 0;
const channel = 'soak-healthy';
for (let i = 0; i < HEALTHY; i++) {
  const c = await rawClient(broker);
  const ok = await c.subscribe(channel);
  if (ok.event !== 'pusher_internal:subscription_succeeded') throw new Error(`healthy subscribe failed: ${JSON.stringify(ok)}`);
  c.ws.on('message', (d) => {
    const text = d.toString();
    if (!text.includes('"event":"tick"')) return;
    const { seq, t } = JSON.parse(JSON.parse(text).data);
    received.set(seq, (received.get(seq) ?? 0) + 1);
    latencies.push(performance.now() - t);
  });
  c.closed.then(() => healthyClosed++);
  healthy.push(c);
}
const triggeredAt = new Map(); // seq -> time the trigger returned
let triggerErrors = 0;
let running = true;
const triggerLoop = (async () => {
  for (let seq = 0; running; seq++) {
    const next = performance.now() + HEALTHY_INTERVAL_MS;
    try {
      await sdk.trigger(channel, 'tick', { seq, t: performance.now() });
      triggeredAt.set(seq, performance.now());
    } catch {
      triggerErrors++;
    }
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
  }
})();

/** Settles the healthy deliveries of events triggered before `until` (ms, performance.now()). */
function settleHealthy(until) {
  let expected = 0;
  let got = 0;
  for (const [seq, at] of triggeredAt) {
    if (at > until) continue;
    expected += HEALTHY;
    got += Math.min(HEALTHY, received.get(seq) ?? 0);
    triggeredAt.delete(seq);
    received.delete(seq);
  }
  return { expected, got };
}

/** The four loads of one round, together; resolves with their reports. */
async function loads(round) {
  const until = Date.now() + (LOAD_S + 5) * 1000;
  const churn = (async () => {
    const runs = [];
    while (Date.now() < until) runs.push(await bench('connect', ['--conns', '2000', '--channels', '20', '--idle', '1', '--settle', '0.5'], `churn-${round}`));
    return runs;
  })();
  const [churnRuns, fanout, presence, clientEvents] = await Promise.all([
    churn,
    bench('fanout', ['--subs', '500', '--channels', '5', '--rate', '50', '--duration', String(LOAD_S), '--payload', '200'], `fanout-${round}`),
    bench('presence', ['--users', '300', '--churn', '40', '--duration', String(LOAD_S), '--per-channel', '50'], `presence-${round}`),
    bench('client-events', ['--pairs', '100', '--rate', '200', '--duration', String(LOAD_S)], `client-events-${round}`),
  ]);
  return { churnRuns, fanout, presence, clientEvents };
}

const num = (v) => (typeof v === 'number' ? v : 0);
const mib = (kib) => (kib / 1024).toFixed(1);
const fmt = (ms) => (Number.isFinite(ms) ? ms.toFixed(ms < 10 ? 2 : 1) : '-');

log(`# soak: ${MINUTES} rounds of ~1 min against ${broker.url} (pid ${broker.pid}); raw runs in ${path.relative(ROOT, jsonl)}`);
log('');
log('| min | conns peak | RSS peak / quiet (MiB) | fds peak / quiet | healthy delivered / lost | healthy p99 (ms) | churn conns (failed) | fan-out delivered / lost, p99 (ms) | presence events / lost | client events / lost | errors |');
log('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');

const rows = [];
let totalLost = 0;
let totalErrors = 0;
for (let round = 1; round <= MINUTES; round++) {
  const start = Date.now();
  let peakConns = 0;
  let peakRss = 0;
  let peakFds = 0;
  const sampler = setInterval(async () => {
    peakRss = Math.max(peakRss, rssKiB(broker.pid));
    peakFds = Math.max(peakFds, openFds(broker.pid));
    peakConns = Math.max(peakConns, await metric(broker, 'broker_connections').catch(() => 0));
  }, 1000);
  const r = await loads(round);
  clearInterval(sampler);
  // Quiet: only the healthy subscribers remain.
  await sleep(3000);
  const quietRss = rssKiB(broker.pid);
  const quietFds = openFds(broker.pid);
  const quietConns = await metric(broker, 'broker_connections');
  const h = settleHealthy(performance.now() - 2000);
  const p99 = quantile(latencies, 0.99);
  latencies = [];

  const churnConns = r.churnRuns.reduce((s, x) => s + num(x.subscribed), 0);
  const churnFailed = r.churnRuns.reduce((s, x) => s + num(x.failed) + num(x.dropped_while_idle), 0);
  const f = r.fanout;
  const p = r.presence;
  const ce = r.clientEvents;
  const runErrors = [...r.churnRuns, f, p, ce].filter((x) => x.error).map((x) => `${x.mode}: ${x.error}`);
  const errors =
    runErrors.length +
    num(f.triggers_failed) +
    num(f.subscribers_dropped) +
    num(f.connect_failed) +
    num(p.connect_failed) +
    num(ce.connect_failed) +
    num(ce.sender_errors) +
    num(ce.dropped) +
    triggerErrors +
    healthyClosed;
  const lost = h.expected - h.got;
  totalLost += lost + num(f.lost_deliveries) + num(p.lost) + num(ce.lost_unexplained);
  totalErrors += errors;
  triggerErrors = 0;
  const row = { round, quietRss, quietFds, quietConns, lost, errors };
  rows.push(row);
  log(
    `| ${round} | ${peakConns} | ${mib(peakRss)} / ${mib(quietRss)} | ${peakFds} / ${quietFds} | ${h.got} / ${lost} | ${fmt(p99)} | ` +
      `${churnConns} (${churnFailed}) | ${num(f.received_deliveries)} / ${num(f.lost_deliveries)}, ${fmt(f.latency_ms?.p99)} | ` +
      `${num(p.added_received) + num(p.removed_received)} / ${num(p.lost)} | ${num(ce.received)} / ${num(ce.lost_unexplained)} | ${errors} |`,
  );
  for (const e of runErrors) log(`  - round ${round}: ${e}`);
  const left = ROUND_MS - (Date.now() - start);
  if (left > 0 && round < MINUTES) await sleep(left);
}

running = false;
await triggerLoop;
await sleep(2000);
const tail = settleHealthy(Infinity);
totalLost += tail.expected - tail.got;
for (const c of healthy) c.close();

// Verdict: after warm-up (round 1), quiet RSS and fds must come back to that level.
const warm = rows[0];
const last = rows[rows.length - 1];
const rssOk = last.quietRss <= warm.quietRss * 1.1 + 4096;
const fdsOk = last.quietFds <= warm.quietFds + 2;
log('');
log(
  `verdict: quiet RSS ${mib(warm.quietRss)} MiB after warm-up → ${mib(last.quietRss)} MiB at the end (${rssOk ? 'back' : 'GREW'}); ` +
    `quiet fds ${warm.quietFds} → ${last.quietFds} (${fdsOk ? 'back' : 'GREW'}); ` +
    `lost on healthy connections and in the bench runs: ${totalLost}; errors: ${totalErrors}`,
);
const pass = rssOk && fdsOk && totalLost === 0 && totalErrors === 0;
log(pass ? 'PASS' : 'FAIL');
await broker.stop();
process.exit(pass ? 0 : 1);
