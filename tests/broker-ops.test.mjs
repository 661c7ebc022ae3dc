// Operations: /health, /ready, /metrics, graceful shutdown (4200 + webhook
// flush + exit), TLS, and clear configuration errors.
import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { BROKER_BIN, freePort, startBroker } from './lib/broker.mjs';
import { eventually, sdkFor, withTimeout } from './lib/clients.mjs';

function rawConnect(url, opts) {
  const ws = new WebSocket(url, opts);
  const frames = [];
  ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
  const closed = new Promise((r) => ws.on('close', (code) => r(code)));
  ws.on('error', () => {});
  return { ws, frames, closed };
}

test('health, ready and metrics', async (t) => {
  const broker = await startBroker();
  t.after(() => broker.stop());
  assert.equal(await (await fetch(`${broker.url}/health`)).text(), 'ok');
  const ready = await fetch(`${broker.url}/ready`);
  assert.equal(ready.status, 200);

  const c = rawConnect(`ws://127.0.0.1:${broker.port}/app/app-key?protocol=7`);
  await eventually(() => assert.ok(c.frames.length > 0), 'connected');
  c.ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'm' } }));
  await eventually(() => assert.ok(c.frames.some((f) => f.event === 'pusher_internal:subscription_succeeded')), 'subscribed');
  const sdk = sdkFor(broker);
  await sdk.trigger('m', 'e', 'x'.repeat(100));
  await eventually(() => assert.ok(c.frames.some((f) => f.event === 'e')), 'event');
  await sdk.get({ path: '/channels/nope!' }).catch(() => {});

  const text = await (await fetch(`${broker.url}/metrics`)).text();
  const value = (name) => {
    const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'));
    assert.ok(line, `${name} in metrics:\n${text}`);
    return Number(line.split(' ').pop());
  };
  assert.equal(value('broker_connections'), 1);
  assert.equal(value('broker_subscriptions'), 1);
  assert.ok(value('broker_ws_messages_in_total') >= 1);
  assert.ok(value('broker_ws_messages_out_total') >= 3, 'established, succeeded and the event');
  assert.ok(value('broker_ws_bytes_out_total') > 100);
  assert.equal(value('broker_adapter_up'), 1);
  assert.match(text, /broker_rest_requests_total\{route="\/apps\/\{app_id\}\/events",status="200"\} 1/);
  assert.match(text, /broker_rest_requests_total\{route="\/apps\/\{app_id\}\/channels\/\{channel_name\}",status="400"\} 1/);
  assert.ok(!text.includes('app-secret'), 'secrets never appear');
  c.ws.close();
});

test('SIGTERM: clients are told to reconnect (4200), pending webhooks are flushed, the process exits', async () => {
  const received = [];
  const hookPort = await freePort();
  const hookServer = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      received.push(...JSON.parse(body).events);
      res.end('ok');
    });
  });
  await new Promise((r) => hookServer.listen(hookPort, '127.0.0.1', r));
  const broker = await startBroker({
    config: `shutdown_timeout = 5
[webhooks]
batch_wait_ms = 2000
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
webhooks = [{ url = "http://127.0.0.1:${hookPort}/" , event_types = ["channel_vacated"] }]
`,
  });
  const clients = [0, 1, 2].map(() => rawConnect(`ws://127.0.0.1:${broker.port}/app/app-key?protocol=7`));
  for (const [i, c] of clients.entries()) {
    await eventually(() => assert.ok(c.frames.length > 0), 'connected');
    c.ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: `room-${i}` } }));
  }
  await eventually(async () => {
    const r = await fetch(`${broker.url}/metrics`);
    assert.match(await r.text(), /broker_subscriptions 3/);
  }, 'subscribed');
  const exited = new Promise((r) => broker.child.once('exit', (code, signal) => r({ code, signal })));
  broker.child.kill('SIGTERM');
  const codes = await withTimeout(Promise.all(clients.map((c) => c.closed)), 'clients closed');
  assert.deepEqual(codes, [4200, 4200, 4200]);
  for (const c of clients) assert.ok(c.frames.some((f) => f.event === 'pusher:error' && f.data.code === 4200));
  const exit = await withTimeout(exited, 'broker exit', 10000);
  assert.equal(exit.code, 0, broker.logs());
  // The vacated events happened during shutdown and were still delivered, before the 2 s batch window.
  assert.deepEqual(received.map((e) => e.channel).sort(), ['room-0', 'room-1', 'room-2']);
  hookServer.closeAllConnections();
  hookServer.close();
});

test('TLS: wss:// and https:// from a certificate and key', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  const port = await freePort();
  const { spawn } = await import('node:child_process');
  const child = spawn(BROKER_BIN, [], { env: { ...process.env, BROKER_HOST: '127.0.0.1', BROKER_PORT: String(port), BROKER_TLS_CERT: cert, BROKER_TLS_KEY: key }, stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  const get = (p) =>
    new Promise((resolve, reject) => {
      https.get({ host: '127.0.0.1', port, path: p, ca: fs.readFileSync(cert) }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      }).on('error', reject);
    });
  const health = await eventually(() => get('/health'), 'https health');
  assert.deepEqual(health, { status: 200, body: 'ok' });
  const c = rawConnect(`wss://127.0.0.1:${port}/app/app-key?protocol=7`, { ca: fs.readFileSync(cert) });
  await eventually(() => assert.equal(c.frames[0]?.event, 'pusher:connection_established'), 'wss connect');
  c.ws.close();
  // Plain HTTP is not served on a TLS port.
  await assert.rejects(fetch(`http://127.0.0.1:${port}/health`));
});

test('configuration errors stop the broker with a message naming the setting', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-'));
  const file = path.join(dir, 'bad.toml');
  fs.writeFileSync(file, '[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\nlimits = { max_event_bytes = 5 }\n');
  const bad = spawnSync(BROKER_BIN, [], { env: { ...process.env, BROKER_CONFIG: file }, encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /max_event_bytes/);
  const env = spawnSync(BROKER_BIN, [], { env: { ...process.env, BROKER_PORT: 'sixty' }, encoding: 'utf8' });
  assert.equal(env.status, 2);
  assert.match(env.stderr, /BROKER_PORT/);
  const tls = spawnSync(BROKER_BIN, [], { env: { ...process.env, BROKER_TLS_CERT: '/nonexistent.pem', BROKER_TLS_KEY: '/nonexistent.key' }, encoding: 'utf8' });
  assert.equal(tls.status, 2);
  assert.match(tls.stderr, /nonexistent\.pem/);
});
