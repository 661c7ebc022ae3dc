// The WebSocket connection after its handshake: the broker takes the socket over from
// the HTTP server (see broker/src/ws). These tests cover what that hand-over must keep:
// TLS (wss://, where only the connection's task writes), bytes a client sends right
// behind its handshake request, upgrade requests for other paths, plain GETs of the
// endpoint, and the order of many events written directly by publishers on both workers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import PusherJS from 'pusher-js';
import { startBroker } from './lib/broker.mjs';
import { connect, sdkFor, withTimeout, TIMEOUT_MS } from './lib/clients.mjs';
import { clientFrame, sleep } from './lib/probe.mjs';

let broker;
let tlsBroker;
let certDir;

before(async () => {
  broker = await startBroker({ env: { BROKER_WORKERS: '2' } });
  certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-tls-'));
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', path.join(certDir, 'key.pem'), '-out', path.join(certDir, 'cert.pem'),
  ], { stdio: 'ignore' });
  // The certificate is self-signed: this test process trusts whatever the broker shows.
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  tlsBroker = await startBroker({
    https: true,
    env: { BROKER_TLS_CERT: path.join(certDir, 'cert.pem'), BROKER_TLS_KEY: path.join(certDir, 'key.pem') },
  });
});

after(async () => {
  await broker?.stop();
  await tlsBroker?.stop();
  if (certDir) fs.rmSync(certDir, { recursive: true, force: true });
});

/** Opens a raw TCP connection, writes `bytes`, and collects what comes back until `until(text)` or the close. */
function exchange(port, bytes, until = () => false) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
      let got = Buffer.alloc(0);
      s.on('data', (d) => {
        got = Buffer.concat([got, d]);
        if (until(got.toString('latin1'))) {
          s.destroy();
          resolve(got.toString('latin1'));
        }
      });
      s.on('error', reject);
      s.on('close', () => resolve(got.toString('latin1')));
    }),
    'the broker to answer',
  );
}

const handshake = (p, extra = '') =>
  `GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;

test('a frame sent in the same write as the handshake request is read and answered', async () => {
  const ping = clientFrame(0x1, Buffer.from(JSON.stringify({ event: 'pusher:ping', data: {} })));
  const text = await exchange(
    broker.port,
    Buffer.concat([Buffer.from(handshake(`/app/${broker.key}?protocol=7&client=js&version=8.4.0`)), ping]),
    (t) => t.includes('pusher:pong'),
  );
  assert.match(text, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.ok(text.indexOf('pusher:connection_established') < text.indexOf('pusher:pong'), 'established, then pong');
});

test('an upgrade request for another path gets 404; a plain GET of the endpoint gets 400', async () => {
  const other = await exchange(broker.port, Buffer.from(handshake('/elsewhere')));
  assert.match(other, /^HTTP\/1\.1 404 /);
  const nested = await exchange(broker.port, Buffer.from(handshake(`/app/${broker.key}/more?protocol=7`)));
  assert.match(nested, /^HTTP\/1\.1 404 /);
  const plain = await fetch(`${broker.url}/app/${broker.key}?protocol=7`);
  assert.equal(plain.status, 400);
  // The HTTP side of the same port still works.
  assert.equal((await fetch(`${broker.url}/health`)).status, 200);
});

test('a refused handshake (unknown key) still gets 101, pusher:error 4001 and the close', async () => {
  const text = await exchange(broker.port, Buffer.from(handshake('/app/no-such-key?protocol=7')), () => false);
  assert.match(text, /^HTTP\/1\.1 101 /);
  assert.ok(text.includes('"code":4001'), text);
});

test('many events to many subscribers on both workers arrive complete and in order', async () => {
  const sdk = sdkFor(broker);
  const clients = [];
  for (let i = 0; i < 40; i++) clients.push(await connect(broker));
  const EVENTS = 300;
  const seen = clients.map(() => []);
  await Promise.all(
    clients.map(
      (c, i) =>
        new Promise((resolve) => {
          const ch = c.subscribe('order-test');
          ch.bind('n', (d) => seen[i].push(d.n));
          ch.bind('pusher:subscription_succeeded', resolve);
        }),
    ),
  );
  // Sequential triggers (each answered before the next is sent), with 4 KiB of data so
  // sockets fill now and then and the rest of a frame waits for the connection's task.
  const pad = 'p'.repeat(4096);
  for (let n = 0; n < EVENTS; n++) await sdk.trigger('order-test', 'n', { n, pad });
  await withTimeout(
    (async () => {
      while (seen.some((s) => s.length < EVENTS)) await new Promise((r) => setTimeout(r, 20));
    })(),
    'every event at every subscriber',
    TIMEOUT_MS * 2,
  );
  for (const s of seen) assert.deepEqual(s, [...Array(EVENTS).keys()]);
  for (const c of clients) c.disconnect();
});

test('wss://: pusher-js connects over TLS, subscribes and receives events', async () => {
  const client = new PusherJS(tlsBroker.key, {
    wsHost: '127.0.0.1',
    wssPort: tlsBroker.port,
    forceTLS: true,
    enabledTransports: ['ws'],
    cluster: 'mt1',
  });
  try {
    await withTimeout(new Promise((r) => client.connection.bind('connected', r)), 'pusher-js to connect over TLS');
    const got = [];
    await new Promise((r) => {
      const ch = client.subscribe('tls-test');
      ch.bind('e', (d) => got.push(d.n));
      ch.bind('pusher:subscription_succeeded', r);
    });
    const sdk = new (await import('pusher')).default({
      appId: tlsBroker.appId, key: tlsBroker.key, secret: tlsBroker.secret,
      host: '127.0.0.1', port: String(tlsBroker.port), useTLS: true, timeout: TIMEOUT_MS,
    });
    for (let n = 0; n < 50; n++) await sdk.trigger('tls-test', 'e', { n });
    await withTimeout(
      (async () => {
        while (got.length < 50) await new Promise((r) => setTimeout(r, 20));
      })(),
      'the events over TLS',
    );
    assert.deepEqual(got, [...Array(50).keys()]);
  } finally {
    client.disconnect();
  }
});

/** Whether the broker (listening on `port`) still holds an open TCP connection to our local `clientPort`. */
function brokerHolds(port, clientPort) {
  const hex = (n) => n.toString(16).toUpperCase().padStart(4, '0');
  return fs
    .readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .some((line) => {
      const [, local, remote] = line.trim().split(/\s+/);
      return local?.endsWith(`:${hex(port)}`) && remote?.endsWith(`:${hex(clientPort)}`);
    });
}

test('a cut client that never reads loses its socket close_timeout later', async (t) => {
  const b = await startBroker({ env: { BROKER_CLOSE_TIMEOUT: '1', BROKER_SEND_QUEUE: '16' } });
  t.after(() => b.stop());
  const s = net.connect(b.port, '127.0.0.1');
  // Once the broker closes, our writes fail with a reset: that is the point.
  s.on('error', () => {});
  await new Promise((r) => s.once('connect', r));
  const clientPort = s.localPort;
  s.write(handshake(`/app/${b.key}?protocol=7&client=js&version=8.4.0`));
  await new Promise((r) => s.once('data', r));
  // Stop reading for good and flood pings: each pong waits in a socket that never drains,
  // the queue fills, the broker cuts the client (4100) and its close frame cannot go out.
  s.pause();
  const flood = Buffer.concat(Array(2000).fill(clientFrame(0x9, Buffer.alloc(125, 'p'))));
  for (let i = 0; i < 40 && !s.destroyed; i++) {
    s.write(flood);
    await sleep(20);
  }
  assert.ok(brokerHolds(b.port, clientPort), 'the broker still holds the socket right after the cut');
  // Within close_timeout (1 s) it lets go, although the client has read nothing.
  const deadline = Date.now() + 5000;
  while (brokerHolds(b.port, clientPort) && Date.now() < deadline) await sleep(50);
  assert.ok(!brokerHolds(b.port, clientPort), 'the broker closed the socket');
  s.destroy();
});
