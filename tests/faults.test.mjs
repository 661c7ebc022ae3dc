// Faults under load: PostgreSQL restarted under the chat and under the broker's
// app store, a broker node stopped with SIGTERM and one killed with SIGKILL in
// a cluster behind a balancer, a webhook receiver that goes away. Every dependency here is our own: a PostgreSQL
// made with initdb in a temporary directory and a redis-server, each on a free
// port (tests/lib/services.mjs), so they can be stopped without touching the
// machine's services.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import PusherJS from 'pusher-js';
import { startBroker, freePort, waitForHttp, ROOT } from './lib/broker.mjs';
import { connect, eventually, sdkFor, subscribe, withTimeout } from './lib/clients.mjs';
import { rawClient, startProbe, metric, sleep } from './lib/probe.mjs';
import { startPostgres, balancer } from './lib/services.mjs';
import { startRedis } from './lib/redis.mjs';
import { hookReceiver } from './lib/servers.mjs';

const CHAT_BIN = process.env.CHAT_BIN || path.join(ROOT, 'target/debug/chat-app');
const LONG = 20000;

/** A logged-in chat user over plain HTTP: a cookie jar and the page's CSRF token. */
async function chatSession(baseUrl, username, password) {
  const jar = new Map();
  const keep = (res) => {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      jar.set(pair.slice(0, i), pair.slice(i + 1));
    }
  };
  const cookie = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const get = async (p) => {
    const res = await fetch(`${baseUrl}${p}`, { headers: { cookie: cookie() }, redirect: 'manual', signal: AbortSignal.timeout(LONG) });
    keep(res);
    return res;
  };
  const tokenOf = (html) => /name="csrf_token" value="([^"]+)"|name="csrf-token" content="([^"]+)"/.exec(html)?.slice(1).find(Boolean);
  const loginPage = await get('/login');
  const form = new URLSearchParams({ username, password, csrf_token: tokenOf(await loginPage.text()) });
  const res = await fetch(`${baseUrl}/login`, {
    method: 'POST',
    headers: { cookie: cookie(), 'content-type': 'application/x-www-form-urlencoded' },
    body: form,
    redirect: 'manual',
    signal: AbortSignal.timeout(LONG),
  });
  keep(res);
  assert.equal(res.status, 303, `login: ${res.status}`);
  const token = tokenOf(await (await get('/')).text());
  assert.ok(token, 'the chat page has a CSRF token');
  return {
    get,
    post: (p, body) =>
      fetch(`${baseUrl}${p}`, {
        method: 'POST',
        headers: { cookie: cookie(), 'x-csrf-token': token, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(LONG),
      }),
  };
}

test('PostgreSQL restarted under the chat: no acknowledged message lost, /health tells the truth, recovery without restart', async (t) => {
  assert.ok(fs.existsSync(CHAT_BIN), `${CHAT_BIN} is missing: run cargo build --workspace`);
  const pg = await startPostgres();
  t.after(() => pg.destroy());
  pg.psql('CREATE DATABASE chat');
  const broker = await startBroker();
  t.after(() => broker.stop());
  const env = { ...process.env, DATABASE_URL: pg.url('chat'), PUSHER_URL: broker.url, RUST_LOG: 'warn' };
  const password = 'fault-password-1';
  const made = spawnSync(CHAT_BIN, ['create-user', 'alice'], { input: `${password}\n`, env, encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  const port = await freePort();
  const chatUrl = `http://127.0.0.1:${port}`;
  const chat = spawn(CHAT_BIN, [], {
    env: { ...env, CHAT_HOST: '127.0.0.1', CHAT_PORT: String(port), SESSION_KEY: crypto.randomBytes(48).toString('hex'), CHAT_DEMO_USER: '' },
    stdio: 'ignore',
  });
  t.after(() => chat.kill('SIGKILL'));
  await waitForHttp(`${chatUrl}/health`, { child: chat });
  const alice = await chatSession(chatUrl, 'alice', password);

  // The chat's everyone-conversation channel (private: authorized here with the shared app secret).
  const listener = await connect(broker, { sdk: sdkFor(broker) });
  t.after(() => listener.disconnect());
  const rec = await subscribe(listener, 'private-a_channel');

  const acked = [];
  let refused = 0;
  const send = async (text) => {
    try {
      const res = await alice.post('/conversation', { message: text });
      if (res.ok) acked.push(await res.json());
      else refused++;
      return res.status;
    } catch {
      refused++;
      return 0;
    }
  };
  let down = false;
  const healthWhileDown = [];
  const healthLoop = (async () => {
    while (!chat.killed && chat.exitCode === null && !t.signal?.aborted) {
      const wasDown = down;
      const status = await fetch(`${chatUrl}/health`, { signal: AbortSignal.timeout(LONG) }).then((r) => r.status, () => 0);
      if (wasDown && down) healthWhileDown.push(status);
      if (healthLoop.stop) return;
      await sleep(100);
    }
  })();

  for (let i = 0; i < 10; i++) assert.equal(await send(`before ${i}`), 200);

  // A crash-like stop (immediate: no clean shutdown, recovery on start), with posts in flight.
  const during = Array.from({ length: 5 }, (_, i) => sleep(i * 100).then(() => send(`during ${i}`)));
  pg.stop('immediate');
  down = true;
  await eventually(() => assert.ok(healthWhileDown.includes(503), `health while down: ${healthWhileDown}`), '/health to answer 503', LONG);
  await Promise.all(during);
  down = false;
  pg.start();

  // The same process recovers: posts succeed again once its pool reconnects.
  await eventually(async () => assert.equal(await send('after restart'), 200), 'a post to succeed after the restart', LONG);
  for (let i = 0; i < 10; i++) assert.equal(await send(`after ${i}`), 200);
  healthLoop.stop = true;
  await healthLoop;
  assert.equal((await fetch(`${chatUrl}/health`)).status, 200);

  const stored = await (await alice.get('/conversations/?limit=500')).json();
  const storedIds = new Map(stored.map((m) => [m.id, m.message]));
  for (const m of acked) assert.equal(storedIds.get(m.id), m.message, `acknowledged message ${m.id} (${m.message}) is stored`);
  // Every acknowledged message was also broadcast (the broker stayed up).
  await rec.waitFor(acked.length);
  const broadcastIds = new Set(rec.events.map((e) => e.data.id));
  for (const m of acked) assert.ok(broadcastIds.has(m.id), `message ${m.id} was broadcast`);
  t.diagnostic(`${acked.length} messages acknowledged and kept, ${refused} refused while PostgreSQL was down; /health while down: ${[...new Set(healthWhileDown)]}`);
});

test('PostgreSQL restarted under the app store: /ready 503 while down, apps keep working, recovery', async (t) => {
  const pg = await startPostgres();
  t.after(() => pg.destroy());
  pg.psql('CREATE DATABASE apps');
  const broker = await startBroker({ config: `[app_store]\ndatabase_url = "${pg.url('apps')}"\nrefresh_secs = 1\n` });
  t.after(() => broker.stop());
  const ready = async () => (await fetch(`${broker.url}/ready`, { signal: AbortSignal.timeout(LONG) })).status;
  await eventually(async () => assert.equal(await ready(), 200), 'ready after the first load', LONG);
  pg.psql(`INSERT INTO broker_apps (id, key, secret) VALUES ('7', 'store-key', 'store-secret')`, 'apps');
  const app = { ...broker, appId: '7', key: 'store-key', secret: 'store-secret' };
  const sdk = sdkFor(broker, app);
  await eventually(async () => assert.equal((await sdk.trigger('warm', 'e', {})).status, 200), 'the stored app to load', LONG);

  const probe = await startProbe(app, { sdk });
  t.after(() => probe.stop());
  pg.stop('immediate');
  await eventually(async () => assert.equal(await ready(), 503), '/ready to answer 503 while the store is down', LONG);
  assert.match(await (await fetch(`${broker.url}/ready`)).text(), /app store/);
  // The apps already loaded keep working: new connections, subscriptions, REST.
  const c = await rawClient(app);
  assert.equal((await c.subscribe('while-down')).event, 'pusher_internal:subscription_succeeded');
  assert.equal((await sdk.trigger('while-down', 'e', {})).status, 200);
  c.close();
  await sleep(1500);
  pg.start();
  await eventually(async () => assert.equal(await ready(), 200), '/ready back to 200', LONG);
  // Reading resumed: an app added after the restart becomes usable.
  pg.psql(`INSERT INTO broker_apps (id, key, secret) VALUES ('8', 'late-key', 'late-secret')`, 'apps');
  const late = sdkFor(broker, { appId: '8', key: 'late-key', secret: 'late-secret' });
  await eventually(async () => assert.equal((await late.trigger('late', 'e', {})).status, 200), 'an app added after the restart', LONG);
  const h = await probe.stop();
  t.diagnostic(`stored app's client during the outage: ${h.received}/${h.sent} events, p99 ${h.p99.toFixed(1)} ms`);
  assert.equal(h.closed, null);
  assert.equal(h.triggerErrors, 0);
  assert.equal(h.lost, 0);
});

function clusterConfig(redisUrl, prefix) {
  return `shutdown_timeout = 5
[cluster]
redis_url = "${redisUrl}"
key_prefix = "${prefix}"
heartbeat_secs = 1
node_timeout_secs = 3
`;
}

/** pusher-js through the balancer; records pusher:error codes and every `connected`. */
function viaBalancer(lb, broker, user) {
  const sdk = sdkFor(broker);
  const client = new PusherJS(broker.key, {
    wsHost: '127.0.0.1',
    wsPort: lb.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    channelAuthorization: { customHandler: ({ socketId, channelName }, cb) => cb(null, sdk.authorizeChannel(socketId, channelName, user)) },
  });
  const info = { client, errors: [], connects: 0 };
  client.connection.bind('error', (e) => info.errors.push(e?.data?.code ?? e?.error?.data?.code));
  client.connection.bind('connected', () => info.connects++);
  return info;
}

test('SIGTERM under load: every client gets 4200, pusher-js reconnects through the balancer to the other node', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const config = clusterConfig(redis.url, `sigterm-${process.pid}`);
  const [a, b] = await Promise.all([startBroker({ config }), startBroker({ config })]);
  t.after(() => Promise.all([a.stop(), b.stop()]));
  const lb = await balancer([a.port, b.port]);
  t.after(() => lb.close());

  // Raw clients straight on A show the exact notice and close code.
  const raw = await Promise.all(Array.from({ length: 10 }, () => rawClient(a)));
  // pusher-js clients through the balancer, alternating between A and B.
  const clients = [];
  for (let i = 0; i < 20; i++) {
    const c = viaBalancer(lb, a);
    clients.push(c);
    await withTimeout(new Promise((r) => c.client.connection.bind('connected', r)), 'pusher-js connected');
  }
  t.after(() => clients.forEach((c) => c.client.disconnect()));
  const recs = await Promise.all(clients.map((c) => subscribe(c.client, 'load')));
  const onA = (await metric(a, 'broker_connections')) - raw.length;
  assert.ok(onA > 0 && onA < 20, `the balancer spread the clients (${onA} of 20 on A)`);

  // Load: a stream of events to B while A shuts down.
  const sdkB = sdkFor(b);
  let running = true;
  let sent = 0;
  const load = (async () => {
    while (running) {
      await sdkB.trigger('load', 'tick', { n: sent++ });
      await sleep(10);
    }
  })();
  await sleep(500);
  await a.stop();
  assert.equal(a.child.signalCode, null, 'A exited by itself, not killed');
  assert.equal(a.child.exitCode, 0);
  for (const r of raw) {
    const { code } = await withTimeout(r.closed, 'raw client close');
    assert.equal(code, 4200);
    assert.ok(r.messages.some((m) => m.event === 'pusher:error' && m.data.code === 4200), 'pusher:error 4200 before the close');
  }
  const told = clients.filter((c) => c.errors.includes(4200));
  assert.equal(told.length, onA, 'every pusher-js client on A was told 4200');
  // They reconnect (to B, the only node left) and get events again.
  await eventually(() => assert.ok(told.every((c) => c.connects >= 2 && c.client.connection.state === 'connected'), JSON.stringify(told.map((c) => [c.connects, c.client.connection.state, c.errors]))), 'reconnected', LONG);
  running = false;
  await load;
  const marker = `after-${crypto.randomBytes(3).toString('hex')}`;
  await eventually(async () => {
    await sdkB.trigger('load', marker, {});
    for (const r of recs) assert.ok(r.names().includes(marker), 'an event after the restart reached every client');
  }, 'every client to receive events on B', LONG);
  t.diagnostic(`${onA} pusher-js clients moved from A to B; ${sent} events sent to B during the shutdown`);
});

test('SIGKILL of a cluster node and a restart: clients reconnect, presence is clean within node_timeout', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const config = clusterConfig(redis.url, `sigkill-${process.pid}`);
  let a = await startBroker({ config });
  const b = await startBroker({ config });
  t.after(() => Promise.all([a.stop(), b.stop()]));
  const lb = await balancer([a.port, b.port]);
  t.after(() => lb.close());
  const channel = 'presence-room';
  const users = async (node) => {
    const res = await sdkFor(node).get({ path: `/channels/${channel}/users` });
    return (await res.json()).users.map((u) => u.id).sort();
  };

  const watcher = await connect(b, { sdk: sdkFor(b), user: { user_id: 'watcher', user_info: {} } });
  t.after(() => watcher.disconnect());
  await subscribe(watcher, channel);
  const removed = [];
  watcher.channel(channel).bind('pusher:member_removed', (m) => removed.push(m.id));
  // Members through the balancer (pusher-js rejoins after a reconnect)...
  const members = [];
  for (let i = 0; i < 6; i++) {
    const m = viaBalancer(lb, b, { user_id: `m${i}`, user_info: { i } });
    members.push(m);
    await subscribe(m.client, channel);
  }
  t.after(() => members.forEach((m) => m.client.disconnect()));
  // ...and members on A that never come back.
  const ghosts = [];
  for (let i = 0; i < 3; i++) {
    const g = await rawClient(a);
    const data = JSON.stringify({ user_id: `ghost${i}`, user_info: {} });
    const auth = sdkFor(a).authorizeChannel(g.socketId, channel, JSON.parse(data));
    assert.equal((await g.subscribe(channel, auth)).event, 'pusher_internal:subscription_succeeded');
    ghosts.push(g);
  }
  const everyone = ['watcher', ...members.map((_, i) => `m${i}`)].sort();
  await eventually(async () => assert.deepEqual(await users(b), [...everyone, 'ghost0', 'ghost1', 'ghost2'].sort()), 'all members listed');

  const killedAt = Date.now();
  a.child.kill('SIGKILL');
  // node_timeout_secs = 3 plus a heartbeat; the wait allows for a loaded machine.
  await eventually(async () => assert.deepEqual((await users(b)).filter((u) => u.startsWith('ghost')), []), 'the dead node\'s members to go', LONG);
  const cleanAfter = Date.now() - killedAt;
  await eventually(() => assert.deepEqual([...new Set(removed.filter((id) => id.startsWith('ghost')))].sort(), ['ghost0', 'ghost1', 'ghost2']), 'member_removed for the dead node\'s users');
  // The members that were on A come back through the balancer (pusher-js's own retry timing).
  await eventually(() => assert.ok(members.every((m) => m.client.connection.state === 'connected')), 'members reconnected', LONG);
  await eventually(async () => assert.deepEqual(await users(b), everyone), 'exactly the live members listed', LONG);
  t.diagnostic(`dead node's members gone on B ${cleanAfter} ms after the SIGKILL (node_timeout 3 s); all live members listed after ${Date.now() - killedAt} ms`);

  // A comes back (on a new port; the balancer is told, as a real one would be by its health checks).
  const deadPort = a.port;
  a = await startBroker({ config });
  lb.backends.splice(0, 1, a.port);
  await eventually(async () => assert.equal((await fetch(`${a.url}/ready`)).status, 200), 'A ready again', LONG);
  assert.notEqual(a.port, deadPort);
  const late = await connect(a, { sdk: sdkFor(a), user: { user_id: 'late', user_info: {} } });
  t.after(() => late.disconnect());
  const lateRec = await subscribe(late, channel);
  const seen = Object.keys(lateRec.channel.members.members).sort();
  assert.deepEqual(seen, [...everyone, 'late'].sort(), 'the restarted node sees the same clean member list');
  assert.deepEqual(await users(b), [...everyone, 'late'].sort());
});

test('webhook receiver down: retried with back-off within retry_for_secs, then given up and counted; the queue stays bounded', async (t) => {
  // The short form: seconds instead of the default 5 minutes (retry_for_secs = 300).
  const RETRY_FOR_SECS = 4;
  const QUEUE = 50;
  let up = false;
  const hooks = await hookReceiver({ status: () => (up ? 200 : 503) });
  t.after(() => hooks.close());
  const broker = await startBroker({
    config: `[webhooks]
queue = ${QUEUE}
batch_max = 10
batch_wait_ms = 10
retry_for_secs = ${RETRY_FOR_SECS}
backoff_ms = 100
max_backoff_ms = 1000
debounce_ms = 0
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
webhooks = [{ url = "${hooks.url}", event_types = ["channel_occupied", "channel_vacated"] }]
`,
  });
  t.after(() => broker.stop());
  const dropped = () => metric(broker, 'broker_webhook_dropped_events');
  const depth = () => metric(broker, 'broker_webhook_queue_depth');
  const c = await rawClient(broker);
  t.after(() => c.close());
  /** n channels occupied then vacated: 2n webhook events. */
  const churn = async (prefix, n) => {
    for (let i = 0; i < n; i++) {
      await c.subscribe(`${prefix}-${i}`);
      c.send(JSON.stringify({ event: 'pusher:unsubscribe', data: { channel: `${prefix}-${i}` } }));
    }
    await c.roundTrip();
  };
  const deliveredFor = (prefix) => hooks.events.filter((e) => e.channel.startsWith(`${prefix}-`)).length;

  // An outage shorter than retry_for_secs: retries deliver everything.
  await churn('short', 5);
  await sleep(1500);
  up = true;
  await eventually(() => assert.equal(deliveredFor('short'), 10), 'the short outage\'s events', LONG);
  assert.equal(await dropped(), 0);

  // An outage longer than retry_for_secs, with more events than the queue holds.
  up = false;
  let maxDepth = 0;
  const sampler = setInterval(async () => (maxDepth = Math.max(maxDepth, await depth().catch(() => 0))), 100);
  await churn('long', 100);
  await sleep((RETRY_FOR_SECS + 2) * 1000);
  clearInterval(sampler);
  up = true;
  // Every event is either delivered or counted as dropped: none vanishes, none is sent twice.
  await eventually(async () => assert.equal(deliveredFor('long') + (await dropped()), 200), 'delivered + dropped = generated', LONG);
  const lost = await dropped();
  t.diagnostic(`long outage: ${deliveredFor('long')} of 200 events delivered after it, ${lost} dropped; queue depth peaked at ${maxDepth} (queue = ${QUEUE})`);
  assert.ok(lost > 0, 'the overflow and the given-up batches were counted');
  assert.ok(maxDepth <= QUEUE, `queue depth ${maxDepth} over ${QUEUE}`);
  const names = hooks.events.filter((e) => e.channel.startsWith('long-')).map((e) => `${e.name}:${e.channel}`);
  assert.equal(new Set(names).size, names.length, 'no event delivered twice');

  // Back to normal once it returns.
  await churn('after', 3);
  await eventually(() => assert.equal(deliveredFor('after'), 6), 'events after the outage', LONG);
});
