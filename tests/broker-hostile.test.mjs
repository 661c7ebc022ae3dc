// Hostile clients against the real broker binary. Each case sends what a
// broken or malicious client would, asserts the documented answer, and checks
// that a healthy client on the same broker keeps receiving every event (none
// lost, in order) with a p99 latency under a generous ceiling derived from a
// baseline measured at the start (latency is reported, not tightly asserted).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { startBroker } from './lib/broker.mjs';
import { sdkFor, signedRequest, withTimeout, TIMEOUT_MS } from './lib/clients.mjs';
import { rawClient, rawSocket, startProbe, clientFrame, metric, rssKiB, openFds, holdsSocketTo, sleep } from './lib/probe.mjs';

/** The broker's per-connection queue for this suite: small, so a stalled reader is cut quickly. */
const SEND_QUEUE = 128;
/** Seconds a stalled peer's socket is kept after the broker gave up on it (README: `tcp_user_timeout`). */
const TCP_USER_TIMEOUT = 10;
/** README: `[apps.limits] max_ws_message_bytes` default. */
const MAX_MESSAGE = 32768;

let broker;
let sdk;
let baseline;
let ceilingMs;

before(async () => {
  broker = await startBroker({ env: { BROKER_SEND_QUEUE: String(SEND_QUEUE), BROKER_TCP_USER_TIMEOUT: String(TCP_USER_TIMEOUT) } });
  sdk = sdkFor(broker);
  // The healthy client's latency with nothing else going on.
  const probe = await startProbe(broker);
  await sleep(2000);
  baseline = await probe.stop();
  assert.equal(baseline.lost, 0, 'baseline lost events');
  // Generous on purpose: the suite shares 2 cores with other work and runs a debug build.
  ceilingMs = Math.max(1000, 20 * baseline.p99);
});

after(async () => {
  await broker?.stop();
});

/**
 * Runs `attack` while a healthy client receives a steady stream on the same
 * broker, then asserts that client lost nothing and kept a sane p99.
 */
async function whileHealthyClientWatches(t, attack) {
  const probe = await startProbe(broker);
  const started = Date.now();
  let result;
  let h;
  try {
    result = await attack();
    // Enough events for the probe to say something even when the attack is quick.
    if (Date.now() - started < 1500) await sleep(1500 - (Date.now() - started));
  } finally {
    h = await probe.stop();
  }
  t.diagnostic(
    `healthy client: ${h.received}/${h.sent} events, p50 ${h.p50.toFixed(1)} ms, p99 ${h.p99.toFixed(1)} ms, ` +
      `max ${h.max.toFixed(1)} ms (baseline p99 ${baseline.p99.toFixed(1)} ms, ceiling ${ceilingMs.toFixed(0)} ms)`,
  );
  assert.equal(h.closed, null, 'the healthy client was disconnected');
  assert.equal(h.triggerErrors, 0, 'triggers failed for the healthy client');
  assert.ok(h.sent >= 20, `too few probe events (${h.sent})`);
  assert.equal(h.lost, 0, 'the healthy client lost events');
  assert.equal(h.outOfOrder, 0, 'the healthy client got events out of order');
  assert.ok(h.p99 <= ceilingMs, `healthy p99 ${h.p99.toFixed(1)} ms is over the ceiling ${ceilingMs.toFixed(0)} ms`);
  return result;
}

/** Signs `channelData` exactly as given (the SDK would re-encode it): {auth, channel_data}. */
function presenceAuth(c, channel, channelData) {
  const sig = crypto.createHmac('sha256', broker.secret).update(`${c.socketId}:${channel}:${channelData}`).digest('hex');
  return { auth: `${broker.key}:${sig}`, channel_data: channelData };
}

const isError = (m) => m.event === 'pusher:error';
const nested = (depth) => '['.repeat(depth) + ']'.repeat(depth);

test('malformed JSON frames each get pusher:error and the connection stays usable', async (t) => {
  await whileHealthyClientWatches(t, async () => {
    const c = await rawClient(broker);
    const bad = [
      '{',
      'not json',
      '',
      '[]',
      '123',
      'null',
      '"a string"',
      '{"event":5}',
      '{"data":{}}',
      '{"event":"pusher:subscribe"}',
      '{"event":"pusher:subscribe","data":"{not json"}',
      '{"event":"pusher:subscribe","data":{"channel":7}}',
      '{"event":"pusher:subscribe","data":[]}',
      `{"event":"pusher:subscribe","data":{"channel":"${'a'.repeat(300)}"}}`,
      '{"event":"pusher:subscribe","data":{"channel":"bad name!"}}',
      '{"event":"pusher:unsubscribe","data":[1,2]}',
      '{"event":"pusher:signin","data":{"auth":1}}',
      '{"event":"client-x","data":{}}',
      '{"event":"pusher:subscribe","data":{"channel":"ok"}} trailing',
      '{"event":"pusher:nonsense","data":{}}',
      '{"event":"\\u0000\\ud800","data":{}}',
      '\u0000\u0001\u0002',
    ];
    for (const text of bad) {
      c.send(text);
      const answer = await c.next(() => true, `an answer to ${JSON.stringify(text).slice(0, 60)}`);
      assert.equal(answer.event, 'pusher:error', `answer to ${JSON.stringify(text).slice(0, 60)}: ${JSON.stringify(answer)}`);
      assert.equal(typeof answer.data.message, 'string');
    }
    await c.roundTrip();
    const ok = await c.subscribe('after-garbage');
    assert.equal(ok.event, 'pusher_internal:subscription_succeeded');
    c.close();
  });
});

test('deeply nested JSON is refused without crashing (frame, subscribe data, presence channel_data, REST body)', async (t) => {
  await whileHealthyClientWatches(t, async () => {
    const c = await rawClient(broker);
    // As deep as fits in one message (32 KiB): far past serde_json's recursion limit of 128.
    const deep = nested(16000);
    c.send(deep);
    assert.ok(isError(await c.next(() => true, 'answer to a nested array frame')));
    c.send(`{"event":"pusher:subscribe","data":${nested(16000)}}`);
    assert.ok(isError(await c.next(() => true, 'answer to nested subscribe data')));
    // Unknown fields are skipped however deep they nest (clients may send extra fields).
    c.send(`{"event":"pusher:subscribe","data":{"channel":"x","extra":${nested(16000)}}}`);
    assert.equal((await c.next(() => true, 'answer to a nested unknown field')).event, 'pusher_internal:subscription_succeeded');

    // Presence channel_data whose user_info nests deeply, correctly signed: refused with 400.
    const channel = 'presence-deep';
    const channelData = `{"user_id":"deep","user_info":${nested(5000)}}`;
    const answer = await c.subscribe(channel, presenceAuth(c, channel, channelData));
    assert.equal(answer.event, 'pusher:subscription_error', JSON.stringify(answer).slice(0, 300));
    assert.ok([400, 413].includes(answer.data.status), `status ${answer.data.status}`);

    // A client event whose data nests deeply is either relayed untouched or refused; never a crash.
    const priv = 'private-deep';
    assert.equal((await c.subscribe(priv, sdk.authorizeChannel(c.socketId, priv))).event, 'pusher_internal:subscription_succeeded');
    c.send(`{"event":"client-deep","channel":"${priv}","data":${nested(4000)}}`);
    await c.roundTrip();
    c.close();

    // REST: a nested value where a string or list belongs is a 400, not a crash.
    const post = (body) => signedRequest(broker, { method: 'POST', path: `/apps/${broker.appId}/events`, body });
    const deepRest = nested(20000);
    for (const body of [
      `{"name":"e","channel":"c","data":${deepRest}}`,
      `{"name":"e","channels":${deepRest},"data":"x"}`,
      `{"name":${deepRest},"channel":"c","data":"x"}`,
      deepRest,
    ]) {
      const res = await post(body);
      assert.equal(res.status, 400, `${body.slice(0, 40)}: ${res.body.slice(0, 200)}`);
    }
    // An unknown field is skipped however deep it nests, as on the WebSocket.
    assert.equal((await post(`{"name":"e","channel":"c","data":"x","extra":${nested(20000)}}`)).status, 200);
  });
  assert.equal(broker.child.exitCode, null, 'the broker is still running');
});

test('invalid UTF-8 in a text frame gets pusher:error; UTF-8 split across fragments is joined first', async (t) => {
  await whileHealthyClientWatches(t, async () => {
    const c = await rawClient(broker);
    c.ws.send(Buffer.concat([Buffer.from('{"event":"pusher:ping","data":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]), { binary: false });
    const err = await c.next(() => true, 'answer to invalid UTF-8');
    assert.equal(err.event, 'pusher:error');
    assert.match(err.data.message, /UTF-8/);
    // "é" is two bytes; cut between them, the fragments are each invalid but the message is fine.
    const whole = Buffer.from('{"event":"pusher:ping","data":{"word":"café"}}');
    const cut = whole.indexOf(0xc3) + 1;
    c.ws.send(whole.subarray(0, cut), { binary: false, fin: false });
    c.ws.send(whole.subarray(cut), { binary: false, fin: true });
    assert.equal((await c.next(() => true, 'answer to split UTF-8')).event, 'pusher:pong');
    c.close();
  });
});

test('binary frames get pusher:error and the connection stays usable', async (t) => {
  await whileHealthyClientWatches(t, async () => {
    const c = await rawClient(broker);
    for (let i = 0; i < 50; i++) c.ws.send(Buffer.from([0, 1, 2, 0xff, i]), { binary: true });
    for (let i = 0; i < 50; i++) {
      const m = await c.next(() => true, 'answer to a binary frame');
      assert.equal(m.event, 'pusher:error');
      assert.match(m.data.message, /binary/);
    }
    await c.roundTrip();
    c.close();
  });
});

test('fragmented messages: joined across control frames, many tiny fragments, over the limit in total → 1009', async (t) => {
  await whileHealthyClientWatches(t, async () => {
    const c = await rawClient(broker);
    const sub = Buffer.from(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'fragmented' } }));
    c.ws.send(sub.subarray(0, 10), { binary: false, fin: false });
    c.ws.ping('between fragments');
    c.ws.send(sub.subarray(10, 20), { fin: false });
    c.ws.send(sub.subarray(20), { fin: true });
    assert.equal((await c.next(() => true, 'answer to a fragmented subscribe')).event, 'pusher_internal:subscription_succeeded');

    // A thousand one-byte fragments (well under the size limit).
    const ping = Buffer.from(`{"event":"pusher:ping","data":{"pad":"${'p'.repeat(1000)}"}}`);
    for (let i = 0; i < ping.length; i++) c.ws.send(ping.subarray(i, i + 1), { binary: false, fin: i === ping.length - 1 });
    assert.equal((await c.next(() => true, 'answer to 1000+ fragments')).event, 'pusher:pong');

    // Fragments that are each small but add up past max_ws_message_bytes: closed with 1009.
    const chunk = Buffer.alloc(1000, 'x');
    for (let i = 0; i < 40; i++) c.ws.send(chunk, { binary: false, fin: false });
    const { code } = await c.closed;
    assert.equal(code, 1009);
  });
});

test('a continuation frame with no message started is a protocol error: the connection is closed', async (t) => {
  await whileHealthyClientWatches(t, async () => {
    const s = await rawSocket(broker);
    s.write(clientFrame(0x0, Buffer.from('orphan')));
    await Promise.race([s.ended, sleep(TIMEOUT_MS).then(() => assert.fail('not closed'))]);
    const close = s.frames().find((f) => f.opcode === 8);
    assert.ok(close, 'a close frame was sent');
    assert.equal(close.closeCode, 1002, 'protocol errors close with 1002 (RFC 6455 §7.4.1)');
  });
});

test('oversized frames are closed with 1009, including a header that claims a huge length', async (t) => {
  await whileHealthyClientWatches(t, async () => {
    const c = await rawClient(broker);
    c.send(`{"event":"pusher:ping","data":"${'x'.repeat(MAX_MESSAGE)}"}`);
    assert.equal((await c.closed).code, 1009);

    // A header announcing 1 TiB, then a stream of bytes: refused once more than the limit
    // has arrived (regression: the broker used to buffer it all, waiting for the frame's end).
    const rss0 = rssKiB(broker.pid);
    const sockets = [];
    for (let i = 0; i < 20; i++) sockets.push(await rawSocket(broker));
    for (const s of sockets) s.write(clientFrame(0x1, Buffer.alloc(0), { length: 2 ** 40 }));
    const chunk = Buffer.alloc(4096, 'y');
    for (let k = 0; k < 16; k++) for (const s of sockets) if (!s.socket.destroyed) s.write(chunk);
    for (const s of sockets) {
      await Promise.race([s.ended, sleep(TIMEOUT_MS).then(() => assert.fail('a frame claiming 1 TiB was not refused'))]);
      assert.equal(s.frames().find((f) => f.opcode === 8)?.closeCode, 1009);
    }
    const grownKiB = rssKiB(broker.pid) - rss0;
    t.diagnostic(`RSS change after 20 frames claiming 1 TiB: ${grownKiB} KiB`);
    assert.ok(grownKiB < 16 * 1024, `RSS grew by ${grownKiB} KiB`);
  });
});

test('slowloris: upgrade requests held open are answered 408 and closed by actix after 5 s, trickling or not', async (t) => {
  // actix-web's HttpServer::client_request_timeout (default 5 s, not changed by the broker) bounds
  // how long a request head may take from the connection's first poll; sending a header line every
  // 500 ms does not extend it. So open handshakes are bounded by (arrival rate × 5 s).
  const COUNT = 300;
  const fds0 = openFds(broker.pid);
  let peakFds = fds0;
  const results = await whileHealthyClientWatches(t, async () => {
    const opened = Date.now();
    const runs = [];
    for (let i = 0; i < COUNT; i++) {
      runs.push(
        new Promise((resolve) => {
          const s = net.connect(broker.port, '127.0.0.1');
          let answer = '';
          let trickle;
          s.on('connect', () => {
            s.write(`GET /app/${broker.key}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n`);
            if (i % 2 === 0) trickle = setInterval(() => s.write(`X-Slow-${Date.now()}: 1\r\n`), 500);
          });
          s.on('data', (d) => (answer += d));
          s.on('error', () => {});
          s.on('close', () => {
            clearInterval(trickle);
            resolve({ afterMs: Date.now() - opened, answer });
          });
          // The test's own guard: a socket the broker never closes fails the assertion below.
          setTimeout(() => s.destroy(), 20000);
        }),
      );
    }
    const sampler = setInterval(() => (peakFds = Math.max(peakFds, openFds(broker.pid))), 250);
    const r = await Promise.all(runs);
    clearInterval(sampler);
    return r;
  });
  const latest = Math.max(...results.map((r) => r.afterMs));
  const answered408 = results.filter((r) => r.answer.startsWith('HTTP/1.1 408')).length;
  t.diagnostic(`${COUNT} slow handshakes: broker fds ${fds0} → peak ${peakFds}; all closed after at most ${latest} ms, ${answered408} with 408`);
  assert.ok(peakFds >= fds0 + COUNT / 2, 'the slow connections were really open at the broker');
  assert.ok(latest < 15000, `a slow handshake stayed open ${latest} ms`);
  assert.equal(answered408, COUNT, 'every slow handshake got 408 Request Timeout');
  await sleep(200);
  assert.ok(openFds(broker.pid) <= fds0 + 2, `broker fds ${openFds(broker.pid)} vs ${fds0} before`);
});

test('a subscriber that stops reading during a fan-out is cut with 4100; the other subscribers get everything', async (t) => {
  const channel = 'fanout-stall';
  const payload = 'x'.repeat(8000);
  const stalled = await rawClient(broker);
  assert.equal((await stalled.subscribe(channel)).event, 'pusher_internal:subscription_succeeded');
  const other = await rawClient(broker);
  assert.equal((await other.subscribe(channel)).event, 'pusher_internal:subscription_succeeded');
  let otherGot = 0;
  other.ws.on('message', (d) => {
    if (d.toString().includes('"event":"big"')) otherGot++;
  });
  const cut0 = await metric(broker, 'broker_slow_consumers_closed_total');
  stalled.ws.pause(); // stop reading: the kernel buffers fill, then the broker's queue
  let sent = 0;
  await whileHealthyClientWatches(t, async () => {
    // 10 events of 8 KB per request; at most 50 MB in all, far more than socket buffers hold.
    for (let i = 0; i < 600; i++) {
      await sdk.triggerBatch(Array.from({ length: 10 }, () => ({ channel, name: 'big', data: payload })));
      sent += 10;
      if (i % 10 === 9 && (await metric(broker, 'broker_slow_consumers_closed_total')) > cut0) break;
    }
  });
  assert.equal(await metric(broker, 'broker_slow_consumers_closed_total'), cut0 + 1, 'exactly the stalled client was cut');
  const deadline = Date.now() + TIMEOUT_MS;
  while (otherGot < sent && Date.now() < deadline) await sleep(20);
  t.diagnostic(`${sent} events of 8 KB sent; the reading subscriber got ${otherGot}`);
  assert.equal(otherGot, sent, 'the subscriber that reads got every event');
  // The broker lets go of the stalled socket within tcp_user_timeout even though the client
  // still reads nothing (regression: it was kept for as long as the client answered the
  // kernel's zero-window probes, i.e. forever, outside every connection count).
  const peerPort = stalled.ws._socket.localPort;
  assert.ok(peerPort > 0);
  const released = Date.now();
  while (holdsSocketTo(broker.pid, peerPort) && Date.now() - released < TCP_USER_TIMEOUT * 1000 + 10000) await sleep(100);
  t.diagnostic(`the broker released the stalled socket ${Date.now() - released} ms after the cut`);
  assert.equal(holdsSocketTo(broker.pid, peerPort), false, 'the broker still holds the stalled socket');
  stalled.ws.resume();
  // What reached the client's buffers before the kernel gave up ends with the notice, if it got that far.
  const { code } = await stalled.closed;
  t.diagnostic(`the stalled client saw close code ${code}`);
  assert.ok([4100, 1006].includes(code), `close code ${code}`);
  other.close();
});

test(
  'a client flooding pings without reading is cut with 4100',
  async (t) => {
    await whileHealthyClientWatches(t, async () => {
      const c = await rawClient(broker);
      t.after(() => c.close());
      c.ws.pause();
      const rss0 = rssKiB(broker.pid);
      let peak = rss0;
      const pad = Buffer.alloc(125, 'p');
      let closed = false;
      c.closed.then(() => (closed = true));
      // WebSocket pings with the largest control payload; each is answered by a pong of the same size.
      for (let i = 0; i < 200000 && !closed; i++) {
        c.ws.ping(pad);
        if (i % 5000 === 4999) {
          c.ws.send(JSON.stringify({ event: 'pusher:ping', data: {} }));
          await sleep(5);
          peak = Math.max(peak, rssKiB(broker.pid));
        }
      }
      c.ws.resume();
      const { code } = await withTimeout(c.closed, 'the flooding client to be cut', 10000);
      t.diagnostic(`broker RSS ${rss0} → peak ${peak} KiB during the flood`);
      assert.equal(code, 4100);
    });
  },
);

test('10,000 subscribe/unsubscribe cycles leave no subscription behind and RSS flat', async (t) => {
  const CYCLES = 10000;
  await whileHealthyClientWatches(t, async () => {
    const c = await rawClient(broker);
    const subs0 = await metric(broker, 'broker_subscriptions');
    const rss0 = rssKiB(broker.pid);
    let succeeded = 0;
    c.ws.on('message', (d) => {
      if (d.toString().includes('subscription_succeeded')) succeeded++;
    });
    // Rounds small enough that a round's answers fit in this suite's send_queue, which bounds
    // replies too: a client pipelining more requests than it reads answers for is cut (4100).
    const CHUNK = SEND_QUEUE / 2;
    for (let start = 0; start < CYCLES; start += CHUNK) {
      for (let i = start; i < start + CHUNK; i++) {
        c.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: `cycle-${i}` } }));
        c.send(JSON.stringify({ event: 'pusher:unsubscribe', data: { channel: `cycle-${i}` } }));
      }
      const deadline = Date.now() + TIMEOUT_MS;
      while (succeeded < start + CHUNK && Date.now() < deadline) await sleep(5);
      assert.equal(succeeded, start + CHUNK, `every subscribe was answered (closed: ${JSON.stringify(await Promise.race([c.closed, sleep(10).then(() => 'no')]))})`);
    }
    await c.roundTrip(); // every unsubscribe before it has been handled
    assert.equal(await metric(broker, 'broker_subscriptions'), subs0, 'the subscriptions gauge is back');
    const res = await signedRequest(broker, { path: `/apps/${broker.appId}/channels`, params: { filter_by_prefix: 'cycle-' } });
    assert.deepEqual(JSON.parse(res.body), { channels: {} });
    await sleep(500);
    const grownKiB = rssKiB(broker.pid) - rss0;
    t.diagnostic(`RSS change over ${CYCLES} cycles: ${grownKiB} KiB`);
    assert.ok(grownKiB < 16 * 1024, `RSS grew by ${grownKiB} KiB`);
    c.close();
  });
});

test('presence user_info floods: limits answer 413/403, members come and go exactly once, nothing stays', async (t) => {
  const channel = 'presence-flood';
  const join = async (c, userId, infoBytes) => {
    const channelData = JSON.stringify({ user_id: userId, user_info: 'i'.repeat(infoBytes - 2) });
    return c.subscribe(channel, presenceAuth(c, channel, channelData));
  };
  await whileHealthyClientWatches(t, async () => {
    const rss0 = rssKiB(broker.pid);
    const watcher = await rawClient(broker);
    assert.equal((await join(watcher, 'watcher', 10)).event, 'pusher_internal:subscription_succeeded');
    let added = 0;
    let removed = 0;
    watcher.ws.on('message', (d) => {
      const s = d.toString();
      if (s.includes('pusher_internal:member_added')) added++;
      if (s.includes('pusher_internal:member_removed')) removed++;
    });

    // Too large a user_info: 413 (README: max_presence_user_info_bytes = 1024).
    const big = await rawClient(broker);
    const refused = await join(big, 'big', 2048);
    assert.equal(refused.event, 'pusher:subscription_error');
    assert.equal(refused.data.status, 413);

    // 99 more users with 1 KB each fill the channel to its 100 members...
    const members = [];
    for (let i = 0; i < 99; i++) {
      const c = await rawClient(broker);
      assert.equal((await join(c, `u${i}`, 1024)).event, 'pusher_internal:subscription_succeeded', `member ${i}`);
      members.push(c);
    }
    // ...and the 101st user is refused with 403.
    const full = await join(big, 'one-too-many', 100);
    assert.equal(full.event, 'pusher:subscription_error');
    assert.equal(full.data.status, 403);

    // One member leaves and rejoins 200 times with a full-size user_info.
    const churn = members.pop();
    for (let i = 0; i < 200; i++) {
      churn.send(JSON.stringify({ event: 'pusher:unsubscribe', data: { channel } }));
      assert.equal((await join(churn, 'u98', 1024)).event, 'pusher_internal:subscription_succeeded');
    }
    members.push(churn);
    for (const c of members) c.close();
    big.close();
    const deadline = Date.now() + TIMEOUT_MS;
    while ((added < 299 || removed < 299) && Date.now() < deadline) await sleep(20);
    assert.equal(added, 99 + 200, 'member_added once per join');
    assert.equal(removed, 200 + 99, 'member_removed once per leave');
    const users = await signedRequest(broker, { path: `/apps/${broker.appId}/channels/${channel}/users` });
    assert.deepEqual(JSON.parse(users.body), { users: [{ id: 'watcher' }] });
    watcher.close();
    await sleep(500);
    const grownKiB = rssKiB(broker.pid) - rss0;
    t.diagnostic(`RSS change after the presence flood: ${grownKiB} KiB`);
    assert.ok(grownKiB < 16 * 1024, `RSS grew by ${grownKiB} KiB`);
  });
});

test('REST requests replayed past the 600 s timestamp window get 401; inside it they are served', async (t) => {
  await whileHealthyClientWatches(t, async () => {
    const now = Math.floor(Date.now() / 1000);
    const req = (timestamp) =>
      signedRequest(broker, { method: 'POST', path: `/apps/${broker.appId}/events`, body: { name: 'e', channel: 'replay', data: '{}' }, timestamp });
    for (const stale of [now - 601, now + 601, now - 3600, 0]) {
      const res = await req(stale);
      assert.equal(res.status, 401, `timestamp ${stale - now} s from now: ${res.body}`);
      assert.match(res.body, /auth_timestamp/);
    }
    assert.equal((await req(now - 590)).status, 200, 'inside the window');
    // A stream of stale replays (10 at a time) costs the others nothing.
    for (let i = 0; i < 20; i++) {
      const burst = await Promise.all(Array.from({ length: 10 }, () => req(now - 700)));
      assert.ok(burst.every((r) => r.status === 401));
    }
  });
});
