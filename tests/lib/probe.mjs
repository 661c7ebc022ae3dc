// Tools for the hostile-client and fault suites: a raw WebSocket client that
// shows exactly what the broker answers, a "healthy client" probe that keeps
// receiving a steady stream of events (counting loss and latency) while a test
// attacks the same broker, and readings of the broker process (RSS, open fds,
// metrics).
import fs from 'node:fs';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import { sdkFor, withTimeout, TIMEOUT_MS } from './clients.mjs';

/** Broker RSS in KiB (VmRSS of /proc/PID/status). */
export function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** Open file descriptors of the process (entries of /proc/PID/fd). */
export function openFds(pid) {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** One sample (no labels) from the broker's Prometheus text, e.g. `broker_subscriptions`. */
export async function metric(broker, name) {
  const text = await (await fetch(`${broker.url}/metrics`, { signal: AbortSignal.timeout(TIMEOUT_MS) })).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  if (!line) throw new Error(`metric ${name} not found`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The `q`-quantile (0..1) of numbers, nearest rank; NaN when empty. */
export function quantile(values, q) {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

/**
 * A WebSocket client with no Pusher library in between: `send` writes exactly
 * what it is given, `next(pred)` waits for the next decoded JSON message that
 * matches, `closed` resolves with {code, reason} when the connection ends.
 * The broker's `pusher:ping` is answered (unless `autoPong` is false).
 */
export async function rawClient(broker, { key = broker.key, query = 'protocol=7&client=hostile&version=1', autoPong = true } = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${broker.port}/app/${key}?${query}`, { maxPayload: 0 });
  const messages = [];
  const waiters = [];
  const settle = () => {
    for (const w of [...waiters]) {
      const i = messages.findIndex(w.pred);
      if (i >= 0) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(messages.splice(i, 1)[0]);
      }
    }
  };
  ws.on('message', (data, isBinary) => {
    let msg;
    try {
      msg = isBinary ? { binary: data } : JSON.parse(data.toString('utf8'));
    } catch {
      msg = { unparsed: data.toString('utf8') };
    }
    if (msg && typeof msg.data === 'string' && msg.data.startsWith('{')) {
      try {
        msg.data = JSON.parse(msg.data);
      } catch {}
    }
    // Answer the broker's keep-alive like pusher-js does, without keeping it in the backlog.
    if (autoPong && msg.event === 'pusher:ping') return ws.send('{"event":"pusher:pong","data":{}}');
    messages.push(msg);
    settle();
  });
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('error', () => {});
  const client = {
    ws,
    messages,
    closed,
    socketId: undefined,
    send: (text) => ws.send(text),
    /** The next message matching `pred` (event name or function), removed from the backlog. */
    next(pred, what = String(pred), ms = TIMEOUT_MS) {
      const p = typeof pred === 'function' ? pred : (m) => m.event === pred;
      return withTimeout(
        new Promise((resolve) => {
          waiters.push({ pred: p, resolve });
          settle();
        }),
        `${what} (backlog: ${JSON.stringify(messages.slice(-3)).slice(0, 300)})`,
        ms,
      );
    },
    async subscribe(channel, extra = {}) {
      ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel, ...extra } }));
      return client.next(
        (m) => (m.event === 'pusher_internal:subscription_succeeded' || m.event === 'pusher:subscription_error') && m.channel === channel,
        `answer to subscribe ${channel}`,
      );
    },
    /** pusher:ping → pusher:pong: proves the connection still works. */
    async roundTrip() {
      ws.send(JSON.stringify({ event: 'pusher:ping', data: {} }));
      await client.next('pusher:pong', 'pusher:pong');
    },
    close: () => ws.terminate(),
  };
  const established = await client.next('pusher:connection_established', 'connection_established');
  client.socketId = established.data.socket_id;
  return client;
}

/**
 * A healthy client: one raw WebSocket subscriber on its own channel, and a
 * trigger through the node SDK every `intervalMs` (one at a time) carrying a sequence number
 * and the send time. `stop()` ends the stream, waits for what is outstanding
 * and returns {sent, received, lost, outOfOrder, triggerErrors, closed, p50, p99, max}
 * (latencies in ms from trigger call to arrival).
 */
export async function startProbe(broker, { intervalMs = 20, sdk = sdkFor(broker) } = {}) {
  const channel = `probe-${crypto.randomBytes(4).toString('hex')}`;
  const client = await rawClient(broker);
  const answer = await client.subscribe(channel);
  if (answer.event !== 'pusher_internal:subscription_succeeded') throw new Error(`probe subscribe failed: ${JSON.stringify(answer)}`);
  const seen = new Set();
  const latencies = [];
  let lastSeq = -1;
  let outOfOrder = 0;
  let closedCode = null;
  client.closed.then(({ code }) => (closedCode = code));
  client.ws.on('message', (data) => {
    let m;
    try {
      m = JSON.parse(data.toString('utf8'));
    } catch {
      return;
    }
    if (m.event !== 'tick' || m.channel !== channel) return;
    const d = JSON.parse(m.data);
    latencies.push(performance.now() - d.t);
    if (d.seq <= lastSeq) outOfOrder++;
    lastSeq = d.seq;
    seen.add(d.seq);
  });
  const triggered = new Set();
  let triggerErrors = 0;
  let seq = 0;
  let running = true;
  // One trigger at a time, every `intervalMs` or as soon as the previous one returns:
  // concurrent requests may reach the broker in any order, sequential ones may not.
  const loop = (async () => {
    while (running) {
      const next = performance.now() + intervalMs;
      const mySeq = seq++;
      try {
        await sdk.trigger(channel, 'tick', { seq: mySeq, t: performance.now() });
        triggered.add(mySeq);
      } catch {
        triggerErrors++;
      }
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait);
    }
  })();
  return {
    channel,
    client,
    async stop() {
      if (!running) return undefined;
      running = false;
      await loop;
      const deadline = Date.now() + TIMEOUT_MS;
      const missing = () => [...triggered].filter((s) => !seen.has(s)).length;
      while (missing() > 0 && Date.now() < deadline && closedCode === null) await sleep(20);
      client.close();
      return {
        sent: triggered.size,
        received: seen.size,
        lost: missing(),
        outOfOrder,
        triggerErrors,
        closed: closedCode,
        p50: quantile(latencies, 0.5),
        p99: quantile(latencies, 0.99),
        max: quantile(latencies, 1),
      };
    },
  };
}

/**
 * A masked client-to-server WebSocket frame, built by hand so tests can send
 * what `ws` refuses to (bad opcodes sequences, lying lengths).
 * `length` overrides the length written in the header.
 */
export function clientFrame(opcode, payload = Buffer.alloc(0), { fin = true, length = payload.length } = {}) {
  const mask = crypto.randomBytes(4);
  let header;
  if (length < 126) {
    header = Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | length]);
  } else if (length < 65536) {
    header = Buffer.alloc(4);
    header[0] = (fin ? 0x80 : 0) | opcode;
    header[1] = 0x80 | 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = (fin ? 0x80 : 0) | opcode;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
  return Buffer.concat([header, mask, body]);
}

/**
 * A WebSocket connection opened by hand over TCP: resolves once the broker has
 * answered the upgrade with 101. `write(bytes)` sends raw bytes, `frames()`
 * decodes what the broker sent so far (server frames are unmasked), `ended`
 * resolves when the broker closes the TCP connection.
 */
export async function rawSocket(broker, { key = broker.key } = {}) {
  const net = await import('node:net');
  const socket = net.connect(broker.port, '127.0.0.1');
  let buf = Buffer.alloc(0);
  const ended = new Promise((resolve) => socket.on('close', resolve));
  socket.on('error', () => {});
  socket.on('data', (d) => (buf = Buffer.concat([buf, d])));
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.write(
    `GET /app/${key}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  const deadline = Date.now() + TIMEOUT_MS;
  while (buf.indexOf('\r\n\r\n') < 0) {
    if (Date.now() > deadline) throw new Error(`no upgrade answer: ${buf}`);
    await sleep(10);
  }
  const head = buf.subarray(0, buf.indexOf('\r\n\r\n')).toString();
  if (!head.startsWith('HTTP/1.1 101')) throw new Error(`upgrade refused: ${head}`);
  const bodyStart = buf.indexOf('\r\n\r\n') + 4;
  return {
    socket,
    ended,
    write: (bytes) => socket.write(bytes),
    frames: () => parseServerFrames(buf.subarray(bodyStart)),
  };
}

/** Decodes unmasked server frames: [{opcode, fin, payload, closeCode?}], stopping at a partial frame. */
export function parseServerFrames(buf) {
  const out = [];
  let i = 0;
  while (i + 2 <= buf.length) {
    const fin = (buf[i] & 0x80) !== 0;
    const opcode = buf[i] & 0x0f;
    let len = buf[i + 1] & 0x7f;
    let at = i + 2;
    if (len === 126) {
      if (at + 2 > buf.length) break;
      len = buf.readUInt16BE(at);
      at += 2;
    } else if (len === 127) {
      if (at + 8 > buf.length) break;
      len = Number(buf.readBigUInt64BE(at));
      at += 8;
    }
    if (at + len > buf.length) break;
    const payload = buf.subarray(at, at + len);
    const frame = { opcode, fin, payload };
    if (opcode === 8 && len >= 2) frame.closeCode = payload.readUInt16BE(0);
    if (opcode === 1) frame.text = payload.toString('utf8');
    out.push(frame);
    i = at + len;
  }
  return out;
}

/**
 * Whether process `pid` still holds a TCP socket whose peer is 127.0.0.1:`peerPort`
 * (from /proc/net/tcp and the process's fd links).
 */
export function holdsSocketTo(pid, peerPort) {
  const inodes = new Set();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      const remPort = parseInt(cols[2].split(':')[1], 16);
      if (remPort === peerPort) inodes.add(cols[9]);
    }
  }
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let link = '';
    try {
      link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m && inodes.has(m[1])) return true;
  }
  return false;
}
