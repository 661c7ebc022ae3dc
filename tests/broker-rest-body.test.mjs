// Oversized REST bodies (README: max_rest_body_bytes): a body up to 8x the limit is
// read and dropped so that stock HTTP clients read the 413 instead of a broken pipe;
// a larger one (announced, or chunked without end) is answered 413 and its
// connection cut after at most 8x the limit has been read.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import nodeFetch from 'node-fetch';
import { startBroker } from './lib/broker.mjs';
import { expectRequestError, sdkFor } from './lib/clients.mjs';

const LIMIT = 1024 * 1024;
// What the kernels' socket buffers on loopback may hold beyond what the broker read
// (tcp_rmem's maximum here is 32 MiB; the broker's reads grow the window).
const BUFFERS = 40 * 1024 * 1024;

let broker;
before(async () => {
  broker = await startBroker();
});
after(() => broker.stop());

const tooBig = 'x'.repeat(LIMIT + 100_000);

test('a body just over the limit gets a 413 every time: fetch (undici), node-fetch and the node SDK, 30 times each', async () => {
  const sdk = sdkFor(broker);
  const url = `${broker.url}/apps/${broker.appId}/events?auth_key=${broker.key}`;
  const seen = { undici: [], nodeFetch: [], sdk: [] };
  const record = (list) => [(r) => list.push(r.status), (e) => list.push(e.status ?? e.cause?.code ?? e.code ?? e.message)];
  for (let i = 0; i < 30; i++) {
    const init = { method: 'POST', body: tooBig, headers: { 'content-type': 'application/json' } };
    await fetch(url, init).then(...record(seen.undici));
    await nodeFetch(url, init).then(...record(seen.nodeFetch));
    await expectRequestError(sdk.trigger('big', 'e', tooBig)).then(...record(seen.sdk));
  }
  for (const [client, statuses] of Object.entries(seen)) {
    assert.deepEqual(statuses, Array(30).fill(413), `${client}: ${statuses.filter((s) => s !== 413).join(', ')}`);
  }
  assert.equal((await sdk.trigger('big', 'e', 'small')).status, 200, 'the broker keeps serving');
});

/**
 * Writes `head`, then body bytes as fast as the socket takes them (`chunked` frames
 * them), until the broker closes the connection or `forMs` passes. Resolves with
 * the bytes written, the answer's first line and how long the connection lasted.
 */
function flood(head, { chunked = false, forMs = 8000 } = {}) {
  return new Promise((resolve) => {
    const socket = net.connect(broker.port, '127.0.0.1');
    const started = Date.now();
    const piece = Buffer.alloc(64 * 1024, 'x');
    const frame = chunked ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece;
    let written = 0;
    let answer = '';
    let stopped = false;
    const pump = () => {
      while (!stopped && socket.writable) {
        if (Date.now() - started > forMs) {
          stopped = true;
          socket.destroy();
          return;
        }
        written += piece.length;
        if (!socket.write(frame)) return;
      }
    };
    socket.on('connect', () => {
      socket.write(head);
      pump();
    });
    socket.on('drain', pump);
    socket.on('data', (d) => (answer += d.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      stopped = true;
      resolve({ written, status: answer.split('\r\n')[0], ms: Date.now() - started });
    });
  });
}

const post = (framing) =>
  `POST /apps/${broker.appId}/events?auth_key=${broker.key} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n${framing}\r\n\r\n`;

test('a body announced as 100 GiB gets a 413 and its connection is cut after at most 8x the limit', async () => {
  const r = await flood(post(`Content-Length: ${100 * 2 ** 30}`));
  assert.equal(r.status, 'HTTP/1.1 413 Payload Too Large');
  assert.ok(r.ms < 5000, `cut after ${r.ms} ms`);
  assert.ok(r.written <= 8 * LIMIT + BUFFERS, `${(r.written / 2 ** 20).toFixed(1)} MiB went in before the cut`);
});

test('a chunked body without end is drained up to 8x the limit, answered 413 and cut', async () => {
  const r = await flood(post('Transfer-Encoding: chunked'), { chunked: true });
  assert.equal(r.status, 'HTTP/1.1 413 Payload Too Large');
  assert.ok(r.ms < 5000, `cut after ${r.ms} ms (the client gave up at 8000 ms)`);
  assert.ok(r.written >= 8 * LIMIT, 'up to 8x the limit is read so that clients see the 413');
  assert.ok(r.written <= 8 * LIMIT + BUFFERS, `${(r.written / 2 ** 20).toFixed(1)} MiB went in before the cut`);
});

test('after a drained 413 the connection carries the next request', async () => {
  const body = Buffer.alloc(2 * LIMIT, 'x');
  const socket = net.connect(broker.port, '127.0.0.1');
  let answer = '';
  socket.on('data', (d) => (answer += d.toString('latin1')));
  await new Promise((r) => socket.on('connect', r));
  socket.write(post(`Content-Length: ${body.length}`));
  socket.write(body);
  socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  const deadline = Date.now() + 5000;
  while (!/HTTP\/1\.1 200/.test(answer) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  socket.destroy();
  assert.match(answer, /^HTTP\/1\.1 413 /);
  assert.match(answer, /HTTP\/1\.1 200 OK/, 'the same connection answered the next request');
});
