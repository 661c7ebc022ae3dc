// How a webhook request goes out: header names as Pusher documents them (read off
// the wire, since HTTP libraries normalise their case), redirects never followed,
// and the optional refusal of private addresses.
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { freePort, startBroker } from './lib/broker.mjs';
import { connect, eventually, subscribe } from './lib/clients.mjs';
import { metric, sleep } from './lib/probe.mjs';
import { hookReceiver } from './lib/servers.mjs';

const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

function appConfig(url, webhooks = '') {
  return `
[webhooks]
batch_wait_ms = 10
backoff_ms = 50
max_backoff_ms = 100
${webhooks}
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
webhooks = [{ url = "${url}", event_types = ["channel_occupied"] }]
`;
}

/** Subscribes a pusher-js client to `channel`: the broker sends `channel_occupied`. */
async function occupy(broker, channel) {
  const client = await connect(broker);
  cleanup.push(() => client.disconnect());
  await subscribe(client, channel);
}

/**
 * A webhook endpoint on a bare TCP socket: it keeps each request's head as the
 * bytes arrived (header names in the case they were sent) and its body.
 */
async function rawReceiver() {
  const port = await freePort();
  const requests = [];
  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let buf = Buffer.alloc(0);
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const length = Number(/^content-length:\s*(\d+)/im.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        requests.push({ lines: head.split('\r\n'), body: buf.subarray(end + 4, end + 4 + length).toString('utf8') });
        buf = buf.subarray(end + 4 + length);
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
      }
    });
    socket.on('error', () => {});
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  const close = () => {
    // The broker keeps its connection for the next batch: end it, or close() waits for it.
    for (const s of sockets) s.destroy();
    return new Promise((r) => server.close(r));
  };
  return { url: `http://127.0.0.1:${port}/hooks`, requests, close };
}

test('webhook headers go out as X-Pusher-Key and X-Pusher-Signature, as the PHP SDK looks them up', async () => {
  const hooks = await rawReceiver();
  const broker = await startBroker({ config: appConfig(hooks.url) });
  cleanup.push(() => broker.stop(), () => hooks.close());
  await occupy(broker, 'raw-headers');
  await eventually(async () => assert.equal(hooks.requests.length, 1), 'the webhook request');
  const [{ lines, body }] = hooks.requests;
  assert.match(lines[0], /^POST \/hooks HTTP\/1\.1$/);
  const header = (name) => lines.find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2);
  assert.equal(header('X-Pusher-Key'), 'app-key', `raw head:\n${lines.join('\n')}`);
  const signature = crypto.createHmac('sha256', 'app-secret').update(body).digest('hex');
  assert.equal(header('X-Pusher-Signature'), signature, `raw head:\n${lines.join('\n')}`);
  assert.equal(header('Content-Type'), 'application/json');
  assert.equal(JSON.parse(body).events[0].name, 'channel_occupied');
});

test('a receiver answering 307 is not followed: the attempt failed, is retried and logged', async () => {
  const elsewhere = await hookReceiver();
  let redirected = 0;
  const port = await freePort();
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      redirected += 1;
      res.writeHead(307, { Location: elsewhere.url + 'stolen' });
      res.end();
    });
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  const broker = await startBroker({ config: appConfig(`http://127.0.0.1:${port}/hooks`, 'attempts = 3') });
  cleanup.push(() => broker.stop(), () => elsewhere.close(), () => new Promise((r) => (server.closeAllConnections(), server.close(r))));
  await occupy(broker, 'redirected');
  await eventually(async () => assert.equal(redirected, 3, 'three attempts, each answered 307'), 'the retries');
  await eventually(async () => assert.equal(await metric(broker, 'broker_webhook_failed_batches'), 1), 'the batch given up');
  await sleep(300);
  assert.equal(elsewhere.requests(), 0, 'the redirect target got nothing');
  assert.equal(redirected, 3, 'no attempt past the cap');
  assert.match(broker.logs(), /redirect/i);
});

test('deny_private_addresses refuses a loopback receiver, by address and by name; off by default it is used', async () => {
  const hooks = await hookReceiver();
  const port = new URL(hooks.url).port;
  const denied = await startBroker({ config: appConfig(hooks.url, 'deny_private_addresses = true') });
  const byName = await startBroker({ config: appConfig(`http://localhost:${port}/`, 'deny_private_addresses = true') });
  const allowed = await startBroker({ config: appConfig(hooks.url) });
  cleanup.push(() => denied.stop(), () => byName.stop(), () => allowed.stop(), () => hooks.close());
  await occupy(denied, 'denied');
  await occupy(byName, 'denied-by-name');
  await occupy(allowed, 'allowed');
  await eventually(async () => assert.deepEqual(hooks.of('allowed').map((e) => e.name), ['channel_occupied']), 'the default delivers');
  for (const broker of [denied, byName]) {
    await eventually(async () => assert.equal(await metric(broker, 'broker_webhook_dropped_events'), 1), 'the refused batch counted');
    assert.match(broker.logs(), /refused/);
  }
  assert.equal(hooks.of('denied').length + hooks.of('denied-by-name').length, 0, 'nothing reached the private address');
});
