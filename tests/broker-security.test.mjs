// Secure defaults and resource bounds (issue 12), against the real broker binary:
// the published default secret is served on loopback only, every per-connection
// resource has a bound with a documented answer at it, the operations endpoints
// are protected, and an oversized REST body gets a 413 the SDKs can read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import WebSocket from 'ws';

import { BROKER_BIN, freePort, startBroker } from './lib/broker.mjs';
import { expectRequestError, sdkFor, withTimeout } from './lib/clients.mjs';

/** Runs the broker with `env` (no BROKER_HOST unless given) and resolves with its exit code and output, or null if it kept running. */
function runBroker(env, { waitMs = 5000 } = {}) {
  return new Promise((resolve) => {
    const clean = { ...process.env };
    for (const k of Object.keys(clean)) if (k.startsWith('BROKER_')) delete clean[k];
    const child = spawn(BROKER_BIN, [], { env: { ...clean, RUST_LOG: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve({ code: null, output });
    }, waitMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** Local addresses (as "a.b.c.d") of IPv4 sockets listening on `port`, from /proc/net/tcp. */
function listeningAddresses(port) {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  return fs
    .readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length > 3 && f[3] === '0A' && f[1].endsWith(`:${hexPort}`))
    .map((f) => {
      const hex = f[1].split(':')[0];
      return [3, 2, 1, 0].map((i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16)).join('.');
    });
}

/** A raw protocol-7 connection collecting every frame; `next(pred)` waits for a matching one. */
function rawClient(port, key = 'app-key') {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/app/${key}?protocol=7`);
  const frames = [];
  const waiters = [];
  let closeCode = null;
  const closed = new Promise((r) => ws.on('close', (code) => r((closeCode = code))));
  ws.on('error', () => {});
  ws.on('message', (m) => {
    const f = JSON.parse(m.toString());
    if (typeof f.data === 'string') {
      try {
        f.data = JSON.parse(f.data);
      } catch {}
    }
    frames.push(f);
    for (const w of [...waiters]) if (w.pred(f)) waiters.splice(waiters.indexOf(w), 1) && w.resolve(f);
  });
  const next = (pred, what) => {
    const found = frames.find(pred);
    if (found) return Promise.resolve(found);
    return withTimeout(new Promise((resolve) => waiters.push({ pred, resolve })), what);
  };
  const send = (event, data) => ws.send(JSON.stringify({ event, data }));
  return { ws, frames, next, send, closed, closeCode: () => closeCode };
}

async function connected(port, key) {
  const c = rawClient(port, key);
  await c.next((f) => f.event === 'pusher:connection_established', 'connection_established');
  return c;
}

const answerFor = (channel) => (f) =>
  f.channel === channel && (f.event === 'pusher_internal:subscription_succeeded' || f.event === 'pusher:subscription_error');

async function subscribeRaw(c, channel) {
  c.send('pusher:subscribe', { channel });
  const f = await c.next(answerFor(channel), `an answer for ${channel}`);
  c.frames.splice(c.frames.indexOf(f), 1);
  return f;
}

function rssKiB(pid) {
  return Number(fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
}

// ---------------------------------------------------------------- secure defaults

test('the published default secret is refused on a non-loopback address, naming the settings to change', async () => {
  for (const env of [{ BROKER_HOST: '0.0.0.0' }, { BROKER_HOST: '::' }, { BROKER_HOST: '0.0.0.0', BROKER_APP_KEY: 'other-key' }]) {
    const { code, output } = await runBroker({ ...env, BROKER_PORT: String(await freePort()) });
    assert.equal(code, 2, `${JSON.stringify(env)}: the broker must exit with a configuration error, got ${code}:\n${output}`);
    for (const setting of ['[[apps]]', 'BROKER_APP_ID', 'BROKER_APP_KEY', 'BROKER_APP_SECRET', 'host', 'BROKER_HOST']) {
      assert.ok(output.includes(setting), `the message names ${setting}:\n${output}`);
    }
    assert.match(output, /app-secret/, 'the message says which secret is the problem');
  }
});

test('with no host configured the default app is served on 127.0.0.1 only', async (t) => {
  if (!fs.existsSync('/proc/net/tcp')) return t.skip('needs /proc/net/tcp');
  const port = await freePort();
  const clean = { ...process.env };
  for (const k of Object.keys(clean)) if (k.startsWith('BROKER_')) delete clean[k];
  const child = spawn(BROKER_BIN, [], { env: { ...clean, BROKER_PORT: String(port), RUST_LOG: 'warn' }, stdio: 'ignore' });
  try {
    let addrs = [];
    for (let i = 0; i < 200 && addrs.length === 0; i++) {
      assert.equal(child.exitCode, null, 'the broker started');
      await new Promise((r) => setTimeout(r, 50));
      addrs = listeningAddresses(port);
    }
    assert.deepEqual([...new Set(addrs)], ['127.0.0.1'], `listening on ${addrs}`);
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);
  } finally {
    child.kill('SIGKILL');
  }
});

// ---------------------------------------------------------------- per-connection bounds

test('max_channels_per_connection: the bound+1-th subscribe gets a subscription_error 429, the connection stays usable', async () => {
  const broker = await startBroker();
  try {
    const c = await connected(broker.port);
    for (let i = 0; i < 100; i++) {
      const f = await subscribeRaw(c, `ch-${i}`);
      assert.equal(f.event, 'pusher_internal:subscription_succeeded', `channel ${i}: ${JSON.stringify(f)}`);
    }
    const refused = await subscribeRaw(c, 'ch-100');
    assert.equal(refused.event, 'pusher:subscription_error');
    assert.equal(refused.data.status, 429);
    assert.equal(refused.data.type, 'LimitReached');
    assert.match(refused.data.error, /100 channels/);
    const metrics = await (await fetch(`${broker.url}/metrics`)).text();
    assert.match(metrics, /^broker_subscriptions_refused_channel_limit_total 1$/m, 'operators see the bound reached');
    // Subscribing again to a channel already held is not a new channel.
    assert.equal((await subscribeRaw(c, 'ch-5')).event, 'pusher_internal:subscription_succeeded');
    // Unsubscribing frees a place.
    c.send('pusher:unsubscribe', { channel: 'ch-0' });
    assert.equal((await subscribeRaw(c, 'ch-100')).event, 'pusher_internal:subscription_succeeded');
    // The channel taken after the refusal delivers events like any other.
    const sdk = sdkFor(broker);
    await sdk.trigger('ch-100', 'after-limit', 'ok');
    const ev = await c.next((f) => f.event === 'after-limit', 'the event on the channel subscribed after unsubscribing');
    assert.equal(ev.channel, 'ch-100');
    c.ws.close();
  } finally {
    await broker.stop();
  }
});

test('max_channels_per_connection is set per app in [apps.limits]', async () => {
  const broker = await startBroker({
    config: `[[apps]]\nid = "1"\nkey = "app-key"\nsecret = "app-secret"\nlimits = { max_channels_per_connection = 2 }\n`,
  });
  try {
    const c = await connected(broker.port);
    assert.equal((await subscribeRaw(c, 'a')).event, 'pusher_internal:subscription_succeeded');
    assert.equal((await subscribeRaw(c, 'b')).event, 'pusher_internal:subscription_succeeded');
    const refused = await subscribeRaw(c, 'private-c');
    assert.equal(refused.event, 'pusher:subscription_error');
    assert.equal(refused.data.status, 429, 'the limit is checked before the signature');
    c.ws.close();
  } finally {
    await broker.stop();
  }
});

test('error replies quote at most the start of a long bad channel name', async () => {
  const broker = await startBroker();
  try {
    const c = await connected(broker.port);
    const long = 'bad name '.repeat(3000);
    c.send('pusher:subscribe', { channel: long });
    const err = await c.next((f) => f.event === 'pusher:error', 'pusher:error for the bad name');
    assert.ok(err.data.message.length <= 256, `message of ${err.data.message.length} characters`);
    assert.match(err.data.message, /invalid channel name/);
    c.send(`x-${'e'.repeat(20000)}`, {});
    const unknown = await c.next((f) => f.event === 'pusher:error' && /unsupported/.test(f.data.message), 'unsupported event error');
    assert.ok(unknown.data.message.length <= 256);
    c.ws.close();
  } finally {
    await broker.stop();
  }
});

test('a client that floods pings and never reads is cut as a slow consumer and the broker memory stays bounded', async (t) => {
  const broker = await startBroker();
  const slowClosed = async () => Number((await (await fetch(`${broker.url}/metrics`)).text()).match(/^broker_slow_consumers_closed_total (\d+)/m)[1]);
  try {
    const c = await connected(broker.port);
    // Stop reading: the broker's answers fill the socket buffers, then its send queue.
    c.ws._socket.pause();
    const before = rssKiB(broker.pid);
    const ping = JSON.stringify({ event: 'pusher:ping', data: {} });
    let sent = 0;
    // 300,000 pings grew the broker by 21 MB when replies bypassed the queue bound.
    // Send in batches while the broker keeps reading them; stop once it cut the connection.
    while (sent < 300000 && c.closeCode() === null && c.ws.readyState === WebSocket.OPEN) {
      for (let i = 0; i < 10000; i++) c.ws.send(ping);
      sent += 10000;
      const deadline = Date.now() + 3000;
      while (c.ws.bufferedAmount > 64 * 1024 && Date.now() < deadline && c.closeCode() === null) await new Promise((r) => setTimeout(r, 10));
      if ((await slowClosed()) > 0) break;
    }
    const grownKiB = rssKiB(broker.pid) - before;
    t.diagnostic(`${sent} pings sent; broker RSS grew by ${grownKiB} KiB`);
    assert.ok(grownKiB < 8 * 1024, `broker RSS grew by ${grownKiB} KiB during the flood of ${sent} pings`);
    assert.equal(await slowClosed(), 1, `the connection was cut as a slow consumer (after ${sent} pings)`);
    c.ws._socket.resume();
    const code = await withTimeout(c.closed, 'the connection to close', 20000);
    // 4100 when the close frame gets through; 1006 when the broker's close resets the socket first
    // (the client's own unread pings are still in flight, so the kernel answers with a reset).
    assert.ok([4100, 1006].includes(code), `closed with ${code}`);
    const pongs = c.frames.filter((f) => f.event === 'pusher:pong').length;
    assert.ok(pongs < sent, `not every ping was answered (${pongs} of ${sent})`);
    // The broker is fine afterwards.
    const other = await connected(broker.port);
    other.ws.close();
  } finally {
    await broker.stop();
  }
});

test('max_connections_per_ip: the address over the bound is refused with 4101 until one closes', async () => {
  const broker = await startBroker({ env: { BROKER_MAX_CONNECTIONS_PER_IP: '2' } });
  try {
    const a = await connected(broker.port);
    const b = await connected(broker.port);
    const refused = rawClient(broker.port);
    const err = await refused.next((f) => f.event === 'pusher:error', 'the refusal');
    assert.equal(err.data.code, 4101);
    assert.equal(await withTimeout(refused.closed, 'the refused connection to close'), 4101);
    assert.match(await (await fetch(`${broker.url}/metrics`)).text(), /^broker_connections_refused_per_ip_total 1$/m);
    a.ws.close();
    await a.closed;
    // The place is freed when the connection's session ends.
    let c;
    for (let i = 0; i < 50 && !c; i++) {
      const attempt = rawClient(broker.port);
      const first = await attempt.next((f) => f.event === 'pusher:connection_established' || f.event === 'pusher:error', 'first frame');
      if (first.event === 'pusher:connection_established') c = attempt;
      else await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(c, 'a new connection fits after one closed');
    b.ws.close();
    c.ws.close();
  } finally {
    await broker.stop();
  }
});

// ---------------------------------------------------------------- operations endpoints

test('ops_token: /metrics and /ready need the bearer token, from loopback too; /health stays public', async () => {
  const token = 'ops-token-0123456789';
  const broker = await startBroker({ env: { BROKER_OPS_TOKEN: token } });
  try {
    for (const p of ['/metrics', '/ready']) {
      const none = await fetch(`${broker.url}${p}`);
      assert.equal(none.status, 401, `${p} without a token`);
      assert.doesNotMatch(await none.text(), /broker_|ready/, 'no data in the refusal');
      assert.equal((await fetch(`${broker.url}${p}`, { headers: { authorization: `Bearer ${token}x` } })).status, 401, `${p} wrong token`);
      assert.equal((await fetch(`${broker.url}${p}`, { headers: { authorization: `Bearer ${token}` } })).status, 200, `${p} right token`);
    }
    const m = await fetch(`${broker.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    assert.match(await m.text(), /broker_connections/);
    assert.equal((await fetch(`${broker.url}/health`)).status, 200);
    assert.doesNotMatch(broker.logs(), new RegExp(token), 'the token is never logged');
  } finally {
    await broker.stop();
  }
});

test('metrics_addr: /metrics and /ready move to their own listener; the public port keeps /health only', async () => {
  const opsPort = await freePort();
  const broker = await startBroker({ env: { BROKER_METRICS_ADDR: `127.0.0.1:${opsPort}` } });
  try {
    assert.equal((await fetch(`${broker.url}/metrics`)).status, 404);
    assert.equal((await fetch(`${broker.url}/ready`)).status, 404);
    assert.equal((await fetch(`${broker.url}/health`)).status, 200);
    const ops = `http://127.0.0.1:${opsPort}`;
    const m = await fetch(`${ops}/metrics`);
    assert.equal(m.status, 200);
    assert.match(await m.text(), /broker_connections/);
    assert.equal((await fetch(`${ops}/ready`)).status, 200);
    assert.equal((await fetch(`${ops}/health`)).status, 200);
    assert.equal((await fetch(`${ops}/apps/1/channels`)).status, 404, 'the ops listener serves no API');
  } finally {
    await broker.stop();
  }
});

test('metrics_addr with ops_token: the ops listener wants the token too', async () => {
  const opsPort = await freePort();
  const token = 'another-token-abcdef';
  const broker = await startBroker({ env: { BROKER_METRICS_ADDR: `127.0.0.1:${opsPort}`, BROKER_OPS_TOKEN: token } });
  try {
    const ops = `http://127.0.0.1:${opsPort}`;
    assert.equal((await fetch(`${ops}/metrics`)).status, 401);
    assert.equal((await fetch(`${ops}/metrics`, { headers: { authorization: `Bearer ${token}` } })).status, 200);
    assert.equal((await fetch(`${ops}/health`)).status, 200);
  } finally {
    await broker.stop();
  }
});

// ---------------------------------------------------------------- oversized REST bodies

test('a 2 MiB REST body gets a 413 the node SDK can read, and the broker keeps serving', async () => {
  const broker = await startBroker();
  try {
    const sdk = sdkFor(broker);
    const err = await expectRequestError(sdk.trigger('big', 'e', 'x'.repeat(2 * 1024 * 1024)));
    assert.equal(err.status, 413, `${err.message} ${err.error ?? ''}`);
    assert.match(err.body, /larger than the limit of 1048576 bytes/);
    const batch = await expectRequestError(sdk.triggerBatch([{ channel: 'big', name: 'e', data: 'y'.repeat(2 * 1024 * 1024) }]));
    assert.equal(batch.status, 413);
    assert.equal((await sdk.trigger('big', 'e', 'small')).status, 200);
  } finally {
    await broker.stop();
  }
});

test('max_rest_body_bytes is configurable', async () => {
  const broker = await startBroker({ env: { BROKER_MAX_REST_BODY_BYTES: '4096' } });
  try {
    const sdk = sdkFor(broker);
    const err = await expectRequestError(sdk.trigger('c', 'e', 'x'.repeat(5000)));
    assert.equal(err.status, 413);
    assert.match(err.body, /4096 bytes/);
    assert.equal((await sdk.trigger('c', 'e', 'x'.repeat(3000))).status, 200);
  } finally {
    await broker.stop();
  }
});
